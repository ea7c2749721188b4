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

"""The taskflow tasks of the ``xen_ova`` import plugin.

Glance runs them between staging (which provides ``file_path``, the
``file://`` URI of the staged data) and the upload to the stores, which
reads the ``file_path`` our last task returns. The three tasks share the
work so that each revert undoes exactly what its task did:

``CaptureImage``   decides whether the import is ours and remembers the
                   image's formats and properties; its revert puts the
                   image back to ``queued`` and the stores to failed.
``ConvertOva``     streams the staged OVA into ``<image_id>.xenova.raw``
                   beside it; its revert removes that file and the staged
                   data, which cannot be imported any more.
``PublishRaw``     records formats, sizes and properties on the image and
                   swaps the staged OVA for the RAW, which it starts
                   reading ahead of Glance's upload (``readahead``); its
                   revert restores the formats and properties it
                   replaced.

Glance itself is imported lazily so the package is usable without it.
So is the converter: when Glance cannot load a plugin it logs and goes on
without it, which would store OVAs unconverted; a converter that cannot
be imported must instead fail the import with a message that says so.
"""

import dataclasses
import os

from oslo_config import cfg
from oslo_log import log as logging
from taskflow import task

from glance_xen_import import exception
from glance_xen_import.glance import middleware
from glance_xen_import.glance import progress as progress_mod
from glance_xen_import.glance import readahead
from glance_xen_import.glance import staging
from glance_xen_import import progress_text
from glance_xen_import import sanitize
from glance_xen_import import selection

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

# The glance_store backend Glance stages import data in when it runs with
# several stores (enabled_backends); files there are removed through it.
STAGING_STORE = 'os_glance_staging_store'

OVA_CONTAINER = 'ova'
# Glance's own bookkeeping properties; never snapshot or restore them.
RESERVED_PREFIX = 'os_glance'


def upload_error(message):
    """The exception whose text Glance copies into the task message."""
    from glance.common import exception as glance_exception
    return glance_exception.UploadException(message)


def load_pipeline():
    from glance_xen_import import pipeline
    return pipeline


def path_of(file_uri):
    # Same convention as Glance's own plugins.
    return file_uri.split('file://')[-1]


def wants_conversion(import_req, container_format):
    method = (import_req or {}).get('method') or {}
    return (bool(method.get(middleware.MARKER))
            or container_format == OVA_CONTAINER)


def _user_properties(properties):
    return {key: value for key, value in properties.items()
            if not key.startswith(RESERVED_PREFIX)}


class CaptureImage(task.Task):
    """Decide whether to act and remember what the image looked like."""

    default_provides = 'xen_ova_original'

    def __init__(self, task_id, task_type, action_wrapper, import_req,
                 stores):
        self.action_wrapper = action_wrapper
        self.import_req = import_req
        self.stores = stores
        super(CaptureImage, self).__init__(
            name='%s-XenOvaCapture-%s' % (task_type, task_id))

    def execute(self):
        with self.action_wrapper as action:
            if not wants_conversion(self.import_req,
                                    action.image_container_format):
                LOG.debug('Image %s is not a xen-ova import; passing it '
                          'through', self.action_wrapper.image_id)
                return None
            return {
                'disk_format': action.image_disk_format,
                'container_format': action.image_container_format,
                'size': action.image_size,
                'properties': _user_properties(
                    action.image_extra_properties),
            }

    def revert(self, result, **kwargs):
        if not isinstance(result, dict):
            return
        # Like image_conversion: nothing reached the stores, so the image
        # goes back to queued and every requested store counts as failed.
        with self.action_wrapper as action:
            action.set_image_attribute(status='queued')
            if self.stores:
                action.remove_importing_stores(self.stores)
                action.add_failed_stores(self.stores)


class ConvertOva(task.Task):
    """Stream the staged OVA into a sparse RAW file next to it."""

    default_provides = 'xen_ova_result'

    def __init__(self, task_id, task_type, action_wrapper, opts,
                 progress_interval, task_repo=None):
        self.task_id = task_id
        self.action_wrapper = action_wrapper
        self.opts = opts
        self.progress_interval = progress_interval
        self.task_repo = task_repo
        self.src_uri = None
        self.src_path = None
        self.dest_path = None
        super(ConvertOva, self).__init__(
            name='%s-XenOvaConvert-%s' % (task_type, task_id))

    def execute(self, file_path, xen_ova_original):
        if xen_ova_original is None:
            return None
        image_id = self.action_wrapper.image_id
        self.src_uri = file_path
        self.src_path = path_of(file_path)
        # <image_id>.<anything> is what Glance's staging cleaner removes
        # once the image is deleted, so a crash leaves nothing for good.
        staging_dir = os.path.dirname(self.src_path)
        self.dest_path = staging.raw_path(staging_dir, image_id)
        # Leftovers of an attempt a crash or a kill interrupted.
        staging.remove_plugin_files(staging_dir, image_id,
                                    'left by an interrupted attempt')

        try:
            pipeline = load_pipeline()
        except ImportError as exc:
            LOG.error('xen-ova import of image %s: the converter cannot be '
                      'loaded: %s', image_id, exc)
            raise upload_error('xen-ova: the converter is not installed '
                               'correctly on this Glance node (%s)' % exc)
        # The image's own xen_import_disk, set at image-create, says which
        # of the VM's disks this image is to hold.
        opts = dataclasses.replace(
            self.opts, disk=xen_ova_original['properties'].get(
                selection.PROPERTY) or None)
        message = progress_mod.TaskMessage(self.task_repo, self.task_id,
                                           image_id)
        progress = progress_mod.ConversionProgress(message,
                                                   self.progress_interval)
        LOG.info('xen-ova import of image %s: converting the OVA',
                 image_id)
        message.write('converting the OVA')
        try:
            report = pipeline.convert(
                self.src_path, self.dest_path, opts=opts,
                progress=progress, on_step=progress.step,
                partial_prefix=staging.partial_prefix(staging_dir, image_id))
        except exception.XenImportError as exc:
            reason = sanitize.line(exc)
            LOG.warning('xen-ova import of image %s refused: %s',
                        image_id, reason)
            raise upload_error('xen-ova: %s' % reason)
        except OSError as exc:
            LOG.error('xen-ova import of image %s failed: %s', image_id, exc)
            raise upload_error('xen-ova: conversion failed: %s'
                               % (exc.strerror or exc))
        size = os.stat(self.dest_path).st_size
        LOG.info('xen-ova import of image %s: converted %s, %s; virtual '
                 'size %d bytes, %d bytes of data', image_id,
                 sanitize.text(report.source),
                 progress.summary(), report.virtual_size,
                 report.allocated_bytes)
        message.write('converted, %s of data in a %s RAW; uploading it to '
                      'the store' % (
                          progress_text.human(report.allocated_bytes),
                          progress_text.human(report.virtual_size)))
        return {
            'path': self.dest_path,
            'size': size,
            'virtual_size': report.virtual_size,
            'properties': dict(report.properties),
        }

    def revert(self, result, **kwargs):
        if self.dest_path:
            staging.remove(self.dest_path)
        if self.src_uri:
            # The image goes back to queued: its staged data cannot be
            # imported again and would only fill the staging area.
            remove_staged(self.src_uri)


class PublishRaw(task.Task):
    """Describe the RAW on the image and hand its path to the stores."""

    default_provides = 'file_path'

    def __init__(self, task_id, task_type, action_wrapper,
                 readahead_bytes=readahead.DEFAULT_LEAD):
        self.action_wrapper = action_wrapper
        self.readahead_bytes = readahead_bytes
        self.original = None
        self.added = ()
        super(PublishRaw, self).__init__(
            name='%s-XenOvaPublish-%s' % (task_type, task_id))

    def execute(self, file_path, xen_ova_original, xen_ova_result):
        if xen_ova_result is None:
            return file_path
        self.original = xen_ova_original
        properties = xen_ova_result['properties']
        self.added = sorted(properties)
        with self.action_wrapper as action:
            action.set_image_attribute(
                disk_format='raw', container_format='bare',
                size=xen_ova_result['size'],
                virtual_size=xen_ova_result['virtual_size'])
            action.set_image_extra_properties(properties)
        remove_staged(file_path)
        # Glance's upload reads the RAW next, in the thread that hashes it.
        if self.readahead_bytes:
            readahead.Readahead(xen_ova_result['path'],
                                lead=self.readahead_bytes).start()
        LOG.info('xen-ova import of image %s: RAW ready, properties %s',
                 self.action_wrapper.image_id,
                 ', '.join('%s=%s' % kv for kv in sorted(properties.items())))
        return 'file://' + xen_ova_result['path']

    def revert(self, result, **kwargs):
        if self.original is None:
            return
        original_properties = self.original['properties']
        with self.action_wrapper as action:
            for key in self.added:
                if key not in original_properties:
                    action.pop_extra_property(key)
            action.set_image_extra_properties(
                {key: value for key, value in original_properties.items()
                 if key in self.added})
            action.set_image_attribute(
                disk_format=self.original['disk_format'],
                container_format=self.original['container_format'],
                size=self.original['size'])


def remove_staged(file_uri):
    """Remove staged import data the way Glance's own import flow does.

    With several stores Glance stages into the glance_store backend
    os_glance_staging_store and deletes through it (api_image_import's
    _DeleteFromFS); with one store the staging area is a plain directory.
    """
    if getattr(CONF, 'enabled_backends', None):
        import glance_store
        try:
            glance_store.delete(file_uri, STAGING_STORE)
        except glance_store.exceptions.NotFound:
            pass
        return
    staging.remove(path_of(file_uri))
