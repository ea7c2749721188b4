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

"""The plugin's files in Glance's staging area, and their removal.

The RAW of image ``<id>`` is written as ``<id>.xenova.raw.partial-XXXXXXXX``
beside the staged OVA and renamed ``<id>.xenova.raw`` when complete. The
``<id>.`` prefix keeps both in reach of Glance's own staging cleaner
(``housekeeping.StagingStoreCleaner``), which removes them at glance-api
start-up once the image is deleted; the next import of the image, and
the deletion of the image through the ``xen_ova`` paste filter, remove
them without waiting for a restart.
"""

import glob
import os

from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import uuidutils

LOG = logging.getLogger(__name__)

RAW_SUFFIX = '.xenova.raw'
PARTIAL_INFIX = '.partial-'


def raw_path(staging_dir, image_id):
    return os.path.join(staging_dir, image_id + RAW_SUFFIX)


def partial_prefix(staging_dir, image_id):
    return raw_path(staging_dir, image_id) + PARTIAL_INFIX


def plugin_files(staging_dir, image_id):
    """The RAW and partial RAWs of ``image_id`` present in ``staging_dir``.

    Nothing for an id that is not a UUID: it comes from a request path.
    """
    if not uuidutils.is_uuid_like(image_id):
        return []
    raw = raw_path(staging_dir, image_id)
    found = glob.glob(glob.escape(partial_prefix(staging_dir, image_id))
                      + '*')
    if os.path.lexists(raw):
        found.append(raw)
    return sorted(found)


def remove_plugin_files(staging_dir, image_id, why):
    """Remove the plugin's files of ``image_id``; return how many went."""
    removed = 0
    for path in plugin_files(staging_dir, image_id):
        LOG.info('xen-ova: removing %s from the staging area: %s', path, why)
        if remove(path):
            removed += 1
    return removed


def remove(path):
    """Remove one file; True if it is gone, a warning if it stays."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        LOG.warning('Could not remove %s: %s', path, exc)
        return False
    return True


def glance_staging_dir():
    """The local staging directory of this glance-api, or None.

    Glance computes it the same way for its start-up cleaner; it is None
    outside glance-api or when staging is not a local file store.
    """
    try:
        from glance.common import exception as glance_exception
        from glance import housekeeping
    except ImportError:
        return None
    try:
        return housekeeping.staging_store_path()
    except (glance_exception.GlanceException, cfg.Error, AttributeError,
            TypeError):
        return None
