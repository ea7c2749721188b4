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

"""The xen_ova plugin's flow run by taskflow without Glance.

The pipeline is replaced by a fake here so that every branch of the tasks
(pass-through, success, refusal, failure after publishing) is exercised;
tests/functional runs the real pipeline inside a real glance-api.
"""

import copy
import os
import sys
import types

from oslo_config import cfg
import pytest
from taskflow import engines
from taskflow.patterns import linear_flow as lf
from taskflow import retry
from taskflow import task

from glance_xen_import import exception
from glance_xen_import.glance import plugin
from glance_xen_import.glance import tasks

IMAGE_ID = '6a2c9e84-4c0e-4b55-9b0e-2d7a1f1b6b11'
TASK_ID = 'task-1'
RESERVED = 'os_glance'


class FakeImage(object):

    def __init__(self, **kwargs):
        self.image_id = IMAGE_ID
        self.status = 'importing'
        self.disk_format = 'vhd'
        self.container_format = 'ova'
        self.size = 1000
        self.virtual_size = None
        self.extra_properties = {'os_glance_import_task': TASK_ID}
        self.__dict__.update(kwargs)


class FakeActions(object):
    """The part of Glance's _ImportActions the plugin may use."""

    def __init__(self, image):
        self._image = image

    image_disk_format = property(lambda self: self._image.disk_format)
    image_container_format = property(
        lambda self: self._image.container_format)
    image_size = property(lambda self: self._image.size)
    image_status = property(lambda self: self._image.status)

    @property
    def image_extra_properties(self):
        return dict(self._image.extra_properties)

    def set_image_attribute(self, **attrs):
        for name, value in attrs.items():
            if name not in ('status', 'disk_format', 'container_format',
                            'virtual_size', 'size'):
                raise AttributeError('Setting %s is not allowed' % name)
            setattr(self._image, name, value)

    def set_image_extra_properties(self, properties):
        for key, value in properties.items():
            if not key.startswith(RESERVED):
                self._image.extra_properties[key] = value

    def pop_extra_property(self, name):
        self._image.extra_properties.pop(name, None)

    def _stores(self, key, stores, subtract):
        names = {s for s in stores if s}
        existing = set(filter(None, self._image.extra_properties.get(
            key, '').split(',')))
        merged = existing - names if subtract else existing | names
        self._image.extra_properties[key] = ','.join(sorted(merged))

    def remove_importing_stores(self, stores):
        self._stores('os_glance_importing_to_stores', stores, True)

    def add_failed_stores(self, stores):
        self._stores('os_glance_failed_import', stores, False)


class FakeWrapper(object):
    """Like ImportActionWrapper: changes are saved only on a clean exit."""

    def __init__(self, image):
        self.image = image
        self.image_id = image.image_id
        self.saves = 0
        self._working = None

    def __enter__(self):
        if self.image.extra_properties.get('os_glance_import_task') != (
                TASK_ID):
            raise RuntimeError('lock lost')
        self._working = copy.deepcopy(self.image)
        return FakeActions(self._working)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.image = self._working
            self.saves += 1


class UploadException(Exception):
    pass


@pytest.fixture(autouse=True)
def glance_exception(monkeypatch):
    """glance.common.exception, faked when Glance is not installed."""
    try:
        from glance.common import exception as real
        return real.UploadException
    except ImportError:
        pass
    module = types.ModuleType('glance.common.exception')
    module.UploadException = UploadException
    common = types.ModuleType('glance.common')
    common.exception = module
    top = types.ModuleType('glance')
    top.common = common
    monkeypatch.setitem(sys.modules, 'glance', top)
    monkeypatch.setitem(sys.modules, 'glance.common', common)
    monkeypatch.setitem(sys.modules, 'glance.common.exception', module)
    return UploadException


class FakeReport(object):
    source = 'vhd-dynamic:caml'
    virtual_size = 4096
    allocated_bytes = 1024
    properties = {'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
                  'os_type': 'linux'}


class FakePipeline(object):
    """Stands in for pipeline.convert; writes a RAW or raises."""

    def __init__(self, error=None, partial=False, progress_steps=()):
        self.error = error
        self.partial = partial
        self.progress_steps = progress_steps
        self.calls = []

    def __call__(self, source, dest_path, opts=None, progress=None,
                 partial_prefix=None, on_step=None):
        self.calls.append((source, dest_path, opts))
        self.partial_prefix = partial_prefix
        assert not os.path.exists(dest_path)
        for done, total in self.progress_steps:
            progress(done, total)
        if on_step is not None:
            on_step('inspect')
        if self.error is not None:
            if self.partial:
                # A crash that leaves output behind (the pipeline removes
                # it itself on refusals; a revert must cope with both).
                with open(dest_path, 'wb') as f:
                    f.write(b'partial')
            raise self.error
        with open(dest_path, 'wb') as f:
            f.truncate(FakeReport.virtual_size)
            f.write(b'\xeb\x63')
        return FakeReport()


class Staging(task.Task):
    """What Glance's _VerifyStaging does: provide the staged file URI."""

    default_provides = 'file_path'

    def __init__(self, uri):
        self.uri = uri
        super(Staging, self).__init__(name='staging')

    def execute(self):
        return self.uri


class Consumer(task.Task):
    """Stands for _ImportToStore: records the file_path it is given."""

    def __init__(self, seen, fail=False):
        self.seen = seen
        self.fail = fail
        super(Consumer, self).__init__(name='consumer')

    def execute(self, file_path):
        self.seen.append(file_path)
        if self.fail:
            raise RuntimeError('store full')


def use_pipeline(monkeypatch, convert):
    monkeypatch.setattr(tasks, 'load_pipeline',
                        lambda: types.SimpleNamespace(convert=convert))


@pytest.fixture
def staging(tmp_path):
    path = tmp_path / IMAGE_ID
    path.write_bytes(b'ova bytes')
    return path


def run(wrapper, staged, import_req=None, stores=(None,), fail_after=False,
        task_repo=None):
    flow = lf.Flow('api_image_import', retry=retry.AlwaysRevert())
    seen = []
    flow.add(Staging('file://%s' % staged))
    flow.add(plugin.get_flow(
        task_id=TASK_ID, task_type='api_image_import',
        action_wrapper=wrapper, backend=list(stores), task_repo=task_repo,
        import_req=import_req or {'method': {'name': 'glance-direct'}}))
    flow.add(Consumer(seen, fail=fail_after))
    engines.run(flow, engine='serial')
    return seen


def raw_path(staging):
    return str(staging.parent / (IMAGE_ID + '.xenova.raw'))


def test_entry_point_names_the_plugin():
    from importlib import metadata
    points = [ep for ep in metadata.entry_points(
        group='glance.image_import.plugins') if ep.name == 'xen_ova']
    if not points:
        pytest.skip('package not installed (entry points unavailable)')
    assert points[0].load() is plugin.get_flow


def test_options_registered_at_load():
    assert plugin.CONF.xen_ova.progress_interval == 5


def test_plain_image_passes_through(monkeypatch, staging):
    fake = FakePipeline()
    use_pipeline(monkeypatch, fake)
    wrapper = FakeWrapper(FakeImage(container_format='bare',
                                    disk_format='qcow2'))
    before = copy.deepcopy(wrapper.image.__dict__)
    seen = run(wrapper, staging)
    assert seen == ['file://%s' % staging]
    assert fake.calls == []
    assert wrapper.image.__dict__ == before
    assert staging.read_bytes() == b'ova bytes'


def test_ova_container_is_converted(monkeypatch, staging):
    fake = FakePipeline()
    use_pipeline(monkeypatch, fake)
    wrapper = FakeWrapper(FakeImage())
    seen = run(wrapper, staging)
    dest = raw_path(staging)
    assert seen == ['file://' + dest]
    assert [call[:2] for call in fake.calls] == [(str(staging), dest)]
    image = wrapper.image
    assert (image.disk_format, image.container_format) == ('raw', 'bare')
    assert image.size == os.path.getsize(dest) == FakeReport.virtual_size
    assert image.virtual_size == FakeReport.virtual_size
    for key, value in FakeReport.properties.items():
        assert image.extra_properties[key] == value
    # The staged OVA is gone; only the RAW stays for the stores.
    assert not staging.exists()
    assert image.status == 'importing'


def test_options_come_from_the_conf(monkeypatch, staging):
    fake = FakePipeline()
    use_pipeline(monkeypatch, fake)
    plugin.CONF.set_override('manifest_policy', 'require', group='xen_ova')
    try:
        run(FakeWrapper(FakeImage()), staging)
    finally:
        plugin.CONF.clear_override('manifest_policy', group='xen_ova')
    assert fake.calls[0][2].manifest_policy == 'require'


def test_glance_image_size_cap_bounds_the_virtual_size(
        monkeypatch, staging):
    fake = FakePipeline()
    use_pipeline(monkeypatch, fake)
    default = plugin.CONF.xen_ova.max_virtual_size
    registered = 'image_size_cap' in plugin.CONF
    if not registered:
        plugin.CONF.register_opt(cfg.IntOpt('image_size_cap'))
    try:
        plugin.CONF.set_override('image_size_cap', 5 * 1024 ** 3)
        run(FakeWrapper(FakeImage()), staging)
        plugin.CONF.set_override('image_size_cap', default * 2)
        run(FakeWrapper(FakeImage()), staging)
    finally:
        plugin.CONF.clear_override('image_size_cap')
        if not registered:
            plugin.CONF.unregister_opt(cfg.IntOpt('image_size_cap'))
    assert [call[2].max_virtual_size for call in fake.calls] == [
        5 * 1024 ** 3, default]


def test_marker_converts_any_container(monkeypatch, staging):
    fake = FakePipeline()
    use_pipeline(monkeypatch, fake)
    wrapper = FakeWrapper(FakeImage(container_format='bare',
                                    disk_format='raw'))
    seen = run(wrapper, staging, import_req={
        'method': {'name': 'glance-direct', 'xen_ova': True}})
    assert seen == ['file://' + raw_path(staging)]
    assert len(fake.calls) == 1


def test_leftover_raw_of_an_earlier_attempt_is_replaced(monkeypatch,
                                                        staging):
    use_pipeline(monkeypatch, FakePipeline())
    with open(raw_path(staging), 'wb') as f:
        f.write(b'old')
    run(FakeWrapper(FakeImage()), staging)
    with open(raw_path(staging), 'rb') as f:
        assert f.read(2) == b'\xeb\x63'


def test_partials_of_a_killed_attempt_are_removed(monkeypatch, staging):
    """A SIGKILLed worker leaves <id>.xenova.raw.partial-*; never for good."""
    fake = FakePipeline()
    use_pipeline(monkeypatch, fake)
    stale = [raw_path(staging) + '.partial-%s' % s for s in ('1a2b', '[x]')]
    other = os.path.join(os.path.dirname(raw_path(staging)),
                         'another-image.xenova.raw.partial-1a2b')
    for path in stale + [other]:
        with open(path, 'wb') as f:
            f.write(b'partial')
    run(FakeWrapper(FakeImage()), staging)
    assert not any(os.path.exists(p) for p in stale)
    assert os.path.exists(other)
    # Under the image id, so Glance's staging cleaner covers it too.
    assert fake.partial_prefix == raw_path(staging) + '.partial-'


@pytest.mark.parametrize('partial', [False, True])
def test_refusal_restores_image_and_cleans_up(monkeypatch, staging,
                                              glance_exception, partial):
    fake = FakePipeline(error=exception.ManifestMismatch(
        'disk0.vhd: SHA256 digest differs from the manifest'),
        partial=partial)
    use_pipeline(monkeypatch, fake)
    wrapper = FakeWrapper(FakeImage(extra_properties={
        'os_glance_import_task': TASK_ID,
        'os_glance_importing_to_stores': 'fast,cheap',
        'hw_disk_bus': 'ide'}))
    with pytest.raises(glance_exception) as info:
        run(wrapper, staging, stores=('fast', 'cheap'))
    assert str(info.value) == (
        'xen-ova: disk0.vhd: SHA256 digest differs from the manifest')
    image = wrapper.image
    assert image.status == 'queued'
    assert (image.disk_format, image.container_format) == ('vhd', 'ova')
    assert image.extra_properties['hw_disk_bus'] == 'ide'
    assert 'hw_scsi_model' not in image.extra_properties
    assert image.extra_properties['os_glance_importing_to_stores'] == ''
    assert image.extra_properties['os_glance_failed_import'] == 'cheap,fast'
    assert os.listdir(staging.parent) == []


def test_os_error_becomes_a_task_message(monkeypatch, staging,
                                         glance_exception):
    error = OSError(28, 'No space left on device')
    use_pipeline(monkeypatch, FakePipeline(error=error))
    wrapper = FakeWrapper(FakeImage())
    with pytest.raises(glance_exception) as info:
        run(wrapper, staging)
    assert str(info.value) == (
        'xen-ova: conversion failed: No space left on device')
    assert wrapper.image.status == 'queued'
    assert os.listdir(staging.parent) == []


def test_failure_after_publishing_undoes_it(monkeypatch, staging):
    use_pipeline(monkeypatch, FakePipeline())
    wrapper = FakeWrapper(FakeImage(size=77, extra_properties={
        'os_glance_import_task': TASK_ID, 'hw_disk_bus': 'ide',
        'note': 'kept'}))
    with pytest.raises(RuntimeError, match='store full'):
        run(wrapper, staging, fail_after=True)
    image = wrapper.image
    assert image.status == 'queued'
    assert (image.disk_format, image.container_format) == ('vhd', 'ova')
    assert image.size == 77
    props = image.extra_properties
    assert props['hw_disk_bus'] == 'ide'
    assert props['note'] == 'kept'
    assert 'hw_scsi_model' not in props and 'os_type' not in props
    assert props['os_glance_import_task'] == TASK_ID
    assert os.listdir(staging.parent) == []


def test_pass_through_failure_is_not_ours(monkeypatch, staging):
    use_pipeline(monkeypatch, FakePipeline())
    wrapper = FakeWrapper(FakeImage(container_format='bare',
                                    disk_format='raw'))
    before = copy.deepcopy(wrapper.image.__dict__)
    with pytest.raises(RuntimeError):
        run(wrapper, staging, fail_after=True)
    # Glance's own tasks handle their failures; we changed nothing.
    assert wrapper.image.__dict__ == before
    assert staging.exists()


def test_converter_that_cannot_load_fails_the_import(monkeypatch, staging,
                                                     glance_exception):
    def broken():
        raise ImportError("No module named 'pyfsext'")
    monkeypatch.setattr(tasks, 'load_pipeline', broken)
    wrapper = FakeWrapper(FakeImage())
    with pytest.raises(glance_exception) as info:
        run(wrapper, staging)
    assert str(info.value) == (
        "xen-ova: the converter is not installed correctly on this Glance "
        "node (No module named 'pyfsext')")
    assert wrapper.image.status == 'queued'
    assert wrapper.image.container_format == 'ova'


class RecordedReadahead(object):
    started = []

    def __init__(self, path, lead):
        self.path = path
        self.lead = lead

    def start(self):
        self.started.append((self.path, self.lead))
        return self


def test_published_raw_is_read_ahead_of_the_upload(monkeypatch, staging):
    use_pipeline(monkeypatch, FakePipeline())
    monkeypatch.setattr(RecordedReadahead, 'started', [])
    monkeypatch.setattr(tasks.readahead, 'Readahead', RecordedReadahead)
    run(FakeWrapper(FakeImage()), staging)
    # The option's documented default: 256 MiB.
    assert RecordedReadahead.started == [(raw_path(staging), 256 << 20)]


@pytest.mark.parametrize('mib, started', [
    (0, []),
    (16, [16 << 20]),
])
def test_readahead_follows_its_option(monkeypatch, staging, mib, started):
    use_pipeline(monkeypatch, FakePipeline())
    monkeypatch.setattr(RecordedReadahead, 'started', [])
    monkeypatch.setattr(tasks.readahead, 'Readahead', RecordedReadahead)
    plugin.CONF.set_override('readahead_mib', mib, group='xen_ova')
    try:
        run(FakeWrapper(FakeImage()), staging)
    finally:
        plugin.CONF.clear_override('readahead_mib', group='xen_ova')
    assert [lead for _path, lead in RecordedReadahead.started] == started


def test_passed_through_data_is_not_read_ahead(monkeypatch, staging):
    use_pipeline(monkeypatch, FakePipeline())
    monkeypatch.setattr(RecordedReadahead, 'started', [])
    monkeypatch.setattr(tasks.readahead, 'Readahead', RecordedReadahead)
    run(FakeWrapper(FakeImage(container_format='bare')), staging)
    assert RecordedReadahead.started == []
