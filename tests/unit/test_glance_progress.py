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

"""Progress in the Glance task's message: rate, wording, failures.

The task repository is a fake with Glance's interface (get, save); the
functional tests watch the message move in a real glance-api.
"""

import functools
import logging

import pytest

from glance_xen_import.glance import progress
from glance_xen_import import progress_text
from tests.unit import test_glance_plugin as plugin_tests

GiB = 1024 ** 3
TASK_ID = plugin_tests.TASK_ID
IMAGE_ID = plugin_tests.IMAGE_ID


class FakeTask(object):

    def __init__(self, status='processing', message=''):
        self.task_id = TASK_ID
        self.status = status
        self.message = message


class FakeTaskRepo(object):
    """Glance's TaskRepo as a plugin uses it; records every save."""

    def __init__(self, status='processing', get_error=None,
                 save_error=None):
        self.task = FakeTask(status)
        self.get_error = get_error
        self.save_error = save_error
        self.saved = []

    def get(self, task_id):
        assert task_id == TASK_ID
        if self.get_error:
            raise self.get_error
        return self.task

    def save(self, task):
        if self.save_error:
            raise self.save_error
        self.saved.append(task.message)


class Clock(object):

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


def tracker(repo, interval=5, clock=None):
    message = progress.TaskMessage(repo, TASK_ID, IMAGE_ID)
    return progress.ConversionProgress(message, interval,
                                       clock=clock or Clock())


def test_message_is_written_at_most_every_interval():
    repo = FakeTaskRepo()
    clock = Clock()
    report = tracker(repo, interval=5, clock=clock)
    total = 40 * GiB
    # One call a second for 12 s, reading 100 MB (10**8 bytes) a second.
    for second in range(1, 13):
        clock.now = 1000.0 + second
        report(second * 10 ** 8, total)
    # 5 s: 5e8 bytes = 0.465 GiB, 1.25 %; 10 s: 0.931 GiB, 2.5 %.
    assert repo.saved == [
        'xen-ova: converting, 0.5 of 40.0 GiB read (1%), 100 MB/s',
        'xen-ova: converting, 0.9 of 40.0 GiB read (2%), 100 MB/s',
    ]


def test_calls_closer_than_the_interval_write_nothing():
    repo = FakeTaskRepo()
    clock = Clock()
    report = tracker(repo, interval=5, clock=clock)
    for tick in range(1, 50):
        clock.now = 1000.0 + tick * 0.1
        report(tick, 100)
    assert repo.saved == []


def test_interval_zero_writes_after_every_read():
    # [xen_ova] progress_interval = 0: every call, even with no time gone.
    repo = FakeTaskRepo()
    report = tracker(repo, interval=0, clock=Clock())
    for done in (1, 2, 3):
        report(done * 1024 ** 2, 4 * 1024 ** 2)
    assert repo.saved == [
        'xen-ova: converting, %d.0 of 4.0 MiB read (%d%%), 0 MB/s'
        % (done, done * 25) for done in (1, 2, 3)]


def test_unknown_total_gives_bytes_and_rate():
    repo = FakeTaskRepo()
    clock = Clock()
    report = tracker(repo, interval=1, clock=clock)
    clock.now += 2
    report(3 * 1024 ** 2, None)
    assert repo.saved == ['xen-ova: converting, 3.0 MiB read, 2 MB/s']


def test_units_follow_the_total():
    assert progress_text.describe(512 * 1024 ** 3, 1024 ** 4, 10) == (
        'converting, 0.5 of 1.0 TiB read (50%), 54976 MB/s')
    assert progress_text.describe(100, 1000, 0) == (
        'converting, 100.0 of 1000.0 B read (10%), 0 MB/s')


def test_steps_are_written_at_once():
    repo = FakeTaskRepo()
    report = tracker(repo, interval=5)
    report.step('inspect')
    report.step('fix-windows')
    report.step('reinspect')
    report.step('fix-linux')
    assert repo.saved == [
        'xen-ova: inspecting the guest',
        'xen-ova: fixing the Windows guest for KVM',
        'xen-ova: inspecting the fixed guest',
        'xen-ova: fixing the Linux guest for KVM',
    ]


@pytest.mark.parametrize('repo', [
    FakeTaskRepo(get_error=RuntimeError('database is locked')),
    FakeTaskRepo(save_error=RuntimeError('database is locked')),
], ids=['get', 'save'])
def test_a_failed_save_is_logged_not_raised(repo, caplog):
    caplog.set_level(logging.WARNING, logger=progress.__name__)
    message = progress.TaskMessage(repo, TASK_ID, IMAGE_ID)
    assert message.write('inspecting the guest') is False
    assert message.saved == 0
    assert [r.getMessage() for r in caplog.records] == [
        'xen-ova import of image %s: could not update task %s: database '
        'is locked' % (IMAGE_ID, TASK_ID)]


@pytest.mark.parametrize('status', ['failure', 'success', 'pending'])
def test_a_task_no_longer_processing_keeps_its_message(status):
    repo = FakeTaskRepo(status=status)
    repo.task.message = 'Expired lock preempted'
    message = progress.TaskMessage(repo, TASK_ID, IMAGE_ID)
    assert message.write('inspecting the guest') is False
    assert repo.saved == []
    assert repo.task.message == 'Expired lock preempted'


def test_without_a_task_repo_nothing_is_written():
    message = progress.TaskMessage(None, TASK_ID, IMAGE_ID)
    assert message.write('inspecting the guest') is False


def test_progress_reaches_log_and_task_during_conversion(
        monkeypatch, staging, caplog):
    fake = plugin_tests.FakePipeline(progress_steps=[(1, 9), (9, 9)])
    plugin_tests.use_pipeline(monkeypatch, fake)
    # Each reading of the clock is 20 s after the previous one.
    ticks = iter(range(0, 1000, 20))
    monkeypatch.setattr(progress, 'ConversionProgress', functools.partial(
        progress.ConversionProgress, clock=lambda: float(next(ticks))))
    caplog.set_level(logging.INFO, logger=progress.__name__)
    repo = FakeTaskRepo()
    wrapper = plugin_tests.FakeWrapper(plugin_tests.FakeImage())
    plugin_tests.run(wrapper, staging, task_repo=repo)
    assert repo.saved == [
        'xen-ova: converting the OVA',
        'xen-ova: converting, 1.0 of 9.0 B read (11%), 0 MB/s',
        'xen-ova: converting, 9.0 of 9.0 B read (100%), 0 MB/s',
        'xen-ova: inspecting the guest',
        'xen-ova: converted, 1.0 KiB of data in a 4.0 KiB RAW; uploading '
        'it to the store',
    ]
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        'xen-ova import of image %s: %s' % (IMAGE_ID, text[len('xen-ova: '):])
        for text in repo.saved[1:4]]
    assert wrapper.image.disk_format == 'raw'


def test_a_broken_task_repo_does_not_fail_the_import(monkeypatch, staging):
    fake = plugin_tests.FakePipeline(progress_steps=[(1, 9), (9, 9)])
    plugin_tests.use_pipeline(monkeypatch, fake)
    repo = FakeTaskRepo(save_error=RuntimeError('database is gone'))
    wrapper = plugin_tests.FakeWrapper(plugin_tests.FakeImage())
    seen = plugin_tests.run(wrapper, staging, task_repo=repo)
    assert seen == ['file://' + plugin_tests.raw_path(staging)]
    assert wrapper.image.status == 'importing'
    assert wrapper.image.disk_format == 'raw'


staging = plugin_tests.staging
glance_exception = plugin_tests.glance_exception
