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

"""Progress in the task while glance-api converts; thin-provisioned stores.

* A web-download of a 2 GiB disk (every 2 MiB block allocated, a gzipped
  disk member, so the OVA is a few MB and the conversion takes seconds)
  watched through ``GET /v2/images/{id}/tasks`` and ``glance
  image-tasks``: the message moves with growing byte counts and each save
  moves the task's ``updated_at``, the time Glance's import lock expiry
  reads.
  Glance's web-download fetches the whole file into the staging area
  before any import plugin runs, so a slow web server would only make
  that (silent, Glance's own) phase longer; what makes the conversion
  long here is the size of the disk.
* ``filesystem_thin_provisioning``: the stored RAW keeps its holes with
  the option and is fully allocated without it.
"""

import datetime
import filecmp
import os
import re
import time

import pytest

from tests.functional import conftest
from tests.functional import glance_server
from tests.functional.test_glance_import import create_via_import
from tests import ovakit

MiB = ovakit.MiB
GiB = 1024 * MiB
WATCH_LIMIT = 600   # seconds; a guard against hanging, not an assertion
PROGRESS = re.compile(r'^xen-ova: converting, ([\d.]+) of ([\d.]+) (\w+) '
                      r'read \((\d+)%\), \d+ MB/s$')
# The order the messages of one import come in.
PHASES = [
    re.compile(r'^xen-ova: converting the OVA$'),
    PROGRESS,
    re.compile(r'^xen-ova: (inspecting|fixing) '),
    re.compile(r'^xen-ova: converted, '),
    re.compile(r'^Copied \d+ MiB$'),
]


def phase(message):
    for rank, pattern in enumerate(PHASES):
        if pattern.match(message):
            return rank
    return None


@pytest.fixture(scope='module')
def big_disk(workdir, disks):
    root = os.path.join(workdir, 'progress')
    os.makedirs(root)
    return conftest.SlowDisk(root, size=2 * GiB, name='progress')


@pytest.fixture(scope='module')
def glance_thin(workdir, web_root):
    """Thin-provisioned file stores; progress every second.

    Multi-store, because Glance advertises API v2.12, which ``glance
    image-tasks`` asks for, only with ``enabled_backends``.
    """
    server = conftest._server(
        workdir, 'thin', multistore=True, web_download_port=web_root.port,
        xen_ova_options={'progress_interval': 1},
        store_options={'filesystem_thin_provisioning': 'True'})
    try:
        yield server
    finally:
        server.stop()


def isotime(text):
    # The image's tasks list gives microseconds; the tasks API whole
    # seconds and a Z.
    return datetime.datetime.fromisoformat(text.rstrip('Z'))


def watch_messages(server, image_id):
    """Poll the image's tasks until the import ends.

    :returns: the distinct messages in the order seen, each with the task's
        updated_at, and the message ``glance image-tasks`` printed while
        the conversion ran.
    """
    seen, cli_message = [], None
    deadline = time.monotonic() + WATCH_LIMIT
    while time.monotonic() < deadline:
        tasks = server.tasks(image_id)
        task = tasks[0] if tasks else None
        if task and task.get('message') and (
                not seen or seen[-1][0] != task['message']):
            seen.append((task['message'], isotime(task['updated_at'])))
            if cli_message is None and PROGRESS.match(task['message']):
                # The real client shows the same field.
                output = server.glance('image-tasks', image_id).stdout
                cli_message = first_row(output)['Message']
        if task and task['status'] in ('success', 'failure'):
            return seen, cli_message
        time.sleep(0.1)
    raise glance_server.GlanceError('import of %s did not end; seen %r\n%s'
                                    % (image_id, seen, server.logs()))


def first_row(output):
    """The first data row of a table the ``glance`` CLI prints."""
    rows = [[cell.strip() for cell in line.strip().strip('|').split('|')]
            for line in output.splitlines() if line.startswith('|')]
    return dict(zip(rows[0], rows[1]))


def allocated(path):
    return os.stat(path).st_blocks * 512


def stored_file(server, image_id):
    """The file of image_id in the (default) file store."""
    dirs = server.store_dirs()
    return os.path.join(dirs.get('file') or dirs[glance_server.STORES[0]],
                        image_id)


def test_task_message_moves_during_a_web_download_import(
        glance_thin, big_disk, web_root):
    server = glance_thin
    uri = web_root.publish(big_disk.ova, 'progress.ova')
    image_id = create_via_import(server, big_disk.ova, '--import-method',
                                 'web-download', '--uri', uri,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd')
    seen, cli_message = watch_messages(server, image_id)
    messages = [message for message, _ in seen]
    print('task messages seen:', messages)

    # Known kinds only, in the order of the import.
    ranks = [phase(message) for message in messages]
    assert None not in ranks, messages
    assert ranks == sorted(ranks), messages

    progress = [PROGRESS.match(m) for m in messages if PROGRESS.match(m)]
    assert len(progress) >= 2, messages
    done = [float(m.group(1)) for m in progress]
    assert done == sorted(done) and done[0] < done[-1], messages
    # The bytes read are the OVA's (a gzipped disk member): a few MiB.
    ova_size = os.path.getsize(big_disk.ova)
    assert {(m.group(2), m.group(3)) for m in progress} == {
        ('%.1f' % (ova_size / MiB), 'MiB')}, messages
    assert PROGRESS.match(cli_message) or phase(cli_message), cli_message

    # Every save moved updated_at, which Glance's import lock expiry reads.
    ours = [when for message, when in seen if message.startswith('xen-ova')]
    assert all(a < b for a, b in zip(ours, ours[1:])), seen

    image, task = server.wait_for_import(image_id)
    assert task['status'] == 'success', (task, server.logs())
    assert image['status'] == 'active'
    assert image['size'] == big_disk.size == 2 * GiB
    stored = stored_file(server, image_id)
    assert filecmp.cmp(stored, big_disk.expected, shallow=False)
    # Thin provisioning left the 2 GiB mostly holes.
    assert allocated(stored) < big_disk.size // 8, allocated(stored)


def test_thin_provisioning_keeps_the_raw_sparse_in_the_store(
        glance, glance_thin, disks):
    disk = disks['dynamic']
    plain = create_via_import(glance, disk.ova, '--container-format', 'ova',
                              '--disk-format', 'vhd')
    thin = create_via_import(glance_thin, disk.ova, '--container-format',
                             'ova', '--disk-format', 'vhd')
    for server, image_id in ((glance, plain), (glance_thin, thin)):
        image, task = server.wait_for_import(image_id)
        assert task['status'] == 'success', (task, server.logs())
        assert filecmp.cmp(stored_file(server, image_id), disk.expected,
                           shallow=False)
    # qemu-img's RAW of the same VHD says how much of it is data.
    assert allocated(disk.expected) < disk.size // 4
    assert allocated(stored_file(glance, plain)) >= disk.size
    assert allocated(stored_file(glance_thin, thin)) < disk.size // 4
