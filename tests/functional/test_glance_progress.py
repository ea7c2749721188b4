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

* A web-download of a 1 GiB disk (every 2 MiB block allocated, a gzipped
  disk member of a few dozen MiB) on a glance-api whose plugin reports
  after every read of the input (``progress_interval = 0``). Every
  message the import task was saved with comes from Glance's own
  database (tests/functional/taskhistory.py), not from polling, so what
  is checked does not depend on how fast this machine converts: the
  messages come in the import's order, the byte counts grow, and each
  save moves the task's ``updated_at``, the time Glance's import lock
  expiry reads. ``glance image-tasks`` shows the task's message.
  Glance's web-download fetches the whole file into the staging area
  before any import plugin runs, so the plugin's messages all come after
  it.
* ``filesystem_thin_provisioning``: the stored RAW keeps its holes with
  the option and is fully allocated without it.
"""

import datetime
import filecmp
import os
import re

import pytest

from tests.functional import conftest
from tests.functional import glance_server
from tests.functional.test_glance_import import create_via_import
from tests import ovakit

MiB = ovakit.MiB
GiB = 1024 * MiB
# The converter reads its input in bounded pieces (at most the VHD
# reader's 4 MiB chunk; 1 MiB through a gzip member): an OVA more than
# three times as large takes more than three reads, each reported.
LARGEST_READ = 4 * MiB
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
    # 64 KiB of random data in each of ~500 blocks: a ~32 MiB OVA.
    return conftest.SlowDisk(root, size=1 * GiB, name='progress',
                             random_bytes=64 * 1024)


@pytest.fixture(scope='module')
def glance_thin(workdir, web_root):
    """Thin-provisioned file stores; progress after every read.

    Multi-store, because Glance advertises API v2.12, which ``glance
    image-tasks`` asks for, only with ``enabled_backends``.
    """
    server = conftest._server(
        workdir, 'thin', multistore=True, web_download_port=web_root.port,
        xen_ova_options={'progress_interval': 0},
        store_options={'filesystem_thin_provisioning': 'True'})
    try:
        yield server
    finally:
        server.stop()


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
    ova_size = os.path.getsize(big_disk.ova)
    assert ova_size > 3 * LARGEST_READ, ova_size
    uri = web_root.publish(big_disk.ova, 'progress.ova')
    image_id = create_via_import(server, big_disk.ova, '--import-method',
                                 'web-download', '--uri', uri,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd')
    image, task = server.wait_for_import(image_id)
    assert task['status'] == 'success', (task, server.logs())
    seen = server.task_messages(task['id'])
    messages = [message for message, _ in seen]
    print('task messages saved:', messages)

    # Known kinds only, in the order of the import, each of the plugin's
    # there (Glance's own 'Copied' comes on a 60 s timer or at the end).
    ranks = [phase(message) for message in messages]
    assert None not in ranks, messages
    assert ranks == sorted(ranks), messages
    assert set(range(len(PHASES) - 1)) <= set(ranks), messages

    progress = [PROGRESS.match(m) for m in messages if PROGRESS.match(m)]
    assert len(progress) >= 3, messages
    done = [float(m.group(1)) for m in progress]
    assert done == sorted(done) and done[0] < done[-1], messages
    # The bytes read are the OVA's (a gzipped disk member), in MiB.
    assert {(m.group(2), m.group(3)) for m in progress} == {
        ('%.1f' % (ova_size / MiB), 'MiB')}, messages
    # The real client shows the task's message.
    output = server.glance('image-tasks', image_id).stdout
    assert first_row(output)['Message'] == task['message'] == messages[-1]

    # Every save moved updated_at, which Glance's import lock expiry reads.
    ours = [datetime.datetime.fromisoformat(when)
            for message, when in seen if message.startswith('xen-ova')]
    assert all(a <= b for a, b in zip(ours, ours[1:])), seen
    assert ours[0] < ours[-1], seen

    assert image['status'] == 'active'
    assert image['size'] == big_disk.size == 1 * GiB
    stored = stored_file(server, image_id)
    assert filecmp.cmp(stored, big_disk.expected, shallow=False)
    # Thin provisioning left the disk's holes holes.
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
