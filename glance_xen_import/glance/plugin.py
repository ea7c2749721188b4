# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The ``xen_ova`` Glance image import plugin.

Enabled in glance-image-import.conf with::

    [image_import_opts]
    image_import_plugins = [xen_ova]

Glance loads ``get_flow`` through the ``glance.image_import.plugins`` entry
point for every glance-direct, web-download and glance-download import.
The flow converts the data when the image's container format is ``ova`` or
the import arrived as ``xen-ova`` (see ``middleware``); any other image
passes through unchanged.
"""

import dataclasses

from oslo_config import cfg
from taskflow.patterns import linear_flow as lf

from glance_xen_import import conf
from glance_xen_import.glance import tasks

CONF = cfg.CONF

# Glance parses its configuration files before it loads plugins; options
# registered afterwards still read their values from those files.
conf.register_opts(CONF)


def pipeline_options():
    """The ``[xen_ova]`` options, bounded by Glance's image_size_cap.

    The RAW is the image Glance stores, so a disk whose virtual size is
    over the cap is refused as soon as the VHD metadata is read, with a
    reason, instead of after the conversion with Glance's generic error.
    """
    opts = conf.pipeline_options(CONF)
    try:
        cap = CONF.image_size_cap
    except cfg.NoSuchOptError:   # outside glance-api
        cap = None
    if cap and cap < opts.max_virtual_size:
        opts = dataclasses.replace(opts, max_virtual_size=cap)
    return opts


def get_flow(**kwargs):
    """Return the plugin's linear flow.

    :param task_id: ID of the Glance import task
    :param task_type: type of the task (``api_image_import``)
    :param action_wrapper: Glance's ``ImportActionWrapper`` for the image
    :param import_req: the body of the import request
    :param backend: list of the stores the image goes to
    :param task_repo: Glance's task repository, where the conversion
        writes its progress into the task's message
    """
    task_id = kwargs.get('task_id')
    task_type = kwargs.get('task_type')
    action_wrapper = kwargs.get('action_wrapper')
    import_req = kwargs.get('import_req')
    stores = kwargs.get('backend', [None])
    task_repo = kwargs.get('task_repo')

    opts = pipeline_options()
    interval = CONF[conf.GROUP].progress_interval
    readahead_bytes = CONF[conf.GROUP].readahead_mib * 1024 * 1024
    return lf.Flow(task_type).add(
        tasks.CaptureImage(task_id, task_type, action_wrapper, import_req,
                           stores),
        tasks.ConvertOva(task_id, task_type, action_wrapper, opts, interval,
                         task_repo),
        tasks.PublishRaw(task_id, task_type, action_wrapper,
                         readahead_bytes),
    )
