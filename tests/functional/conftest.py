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

"""Session fixtures: test OVAs, a loopback HTTP server and glance-apis.

One glance-api per configuration (single store, multi-store, a small
image_size_cap) serves the whole session and is always stopped at its end.
"""

import functools
import http.server
import importlib.util
import os
import random
import shutil
import threading

import pytest

from tests.functional import glance_server
from tests.functional import xapi_server
from tests import ovakit

MiB = ovakit.MiB
TOOLS = ('qemu-img', 'sfdisk', 'mkfs.ext4')
# image_size_cap of the glance_faulty server: above the fixed disk (20 MiB)
# and every OVA, below the dynamic disks (24 MiB).
CAP = 22 * MiB
# Big enough that converting it takes seconds, small enough to upload:
# every 2 MiB VHD block is allocated but holds 4 KiB of data, and the
# disk member is gzipped, so the OVA is a few MB and the RAW is sparse.
SLOW_DISK_SIZE = 1024 * MiB


def _require_environment():
    if importlib.util.find_spec('glance') is None:
        pytest.skip('glance is not installed: run these tests with '
                    '"tox -e functional"')
    missing = ovakit.missing_tools(*TOOLS)
    if missing:
        pytest.skip('missing tools to build test disks: %s'
                    % ', '.join(missing))
    if not os.path.exists(os.path.join(glance_server.BIN_DIR, 'glance')):
        pytest.skip('python-glanceclient is not installed')


class Disk(object):
    """A tool-made guest disk as RAW, Xen-style VHD, OVA and expected RAW.

    The expected RAW is qemu-img's reading of the VHD with its size taken
    from the footer's current_size, as XenServer means it.
    """

    def __init__(self, workdir, name, creator, subformat='dynamic',
                 size=24 * MiB, table='mbr', seed=0):
        self.name = name
        base = os.path.join(workdir, name)
        self.raw = ovakit.make_raw_disk(base + '.src.raw', size, table=table,
                                        seed=seed).path
        self.vhd = ovakit.xen_vhd(self.raw, base + '.vhd', creator=creator,
                                  subformat=subformat)
        self.expected = ovakit.qemu_to_raw(self.vhd, base + '.expected.raw',
                                           size_calc='current_size')
        self.size = os.path.getsize(self.expected)
        self.ova = ovakit.make_ova(base + '.ova', [ovakit.OvaDisk(self.vhd)],
                                   name=name).path


class SlowDisk(object):
    """A tool-made OVA whose conversion reads and hashes 1 GiB.

    Every 2 MiB block from 16 MiB on holds ``random_bytes`` of random data,
    so every block is allocated and the gzipped OVA is a little larger
    than the random data in all.
    """

    def __init__(self, root, size=SLOW_DISK_SIZE, name='slow',
                 random_bytes=4096):
        base = os.path.join(root, name)
        self.raw = ovakit.make_raw_disk(base + '.src.raw', size,
                                        table='mbr', seed=11).path
        rnd = random.Random(11)
        with open(self.raw, 'r+b') as f:
            for offset in range(16 * MiB, size - 4 * MiB, 2 * MiB):
                f.seek(offset + 64 * 1024)
                f.write(rnd.randbytes(random_bytes))
        self.vhd = ovakit.xen_vhd(self.raw, base + '.vhd', creator='caml')
        self.expected = ovakit.qemu_to_raw(self.vhd, base + '.expected.raw',
                                           size_calc='current_size')
        self.size = os.path.getsize(self.expected)
        self.ova = ovakit.make_ova(
            base + '.ova', [ovakit.OvaDisk(self.vhd, compression='Gzip')],
            name=name).path
        # Only the OVA is needed from here on.
        os.remove(self.vhd)


@pytest.fixture(scope='session')
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('xenova'))


@pytest.fixture(scope='session')
def disks(workdir):
    _require_environment()
    root = os.path.join(workdir, 'disks')
    os.makedirs(root)
    return {
        # XAPI export: BAT at 2 KiB, blocks ascending, MBR guest.
        'dynamic': Disk(root, 'xapi-guest', 'caml', seed=1),
        # blktap SR file: batmap, shuffled blocks, GPT guest.
        'tap': Disk(root, 'tap-guest', 'tap', table='gpt', seed=2),
        'fixed': Disk(root, 'fixed-guest', 'caml', subformat='fixed',
                      size=20 * MiB, seed=3),
    }


@pytest.fixture(scope='session')
def slow_disk(workdir, disks):
    """Shared by the tests that kill a glance-api mid-conversion."""
    root = os.path.join(workdir, 'slow')
    os.makedirs(root)
    return SlowDisk(root)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture(scope='session')
def web_root(workdir):
    """A loopback HTTP server serving files copied into ``.path``."""
    root = os.path.join(workdir, 'web')
    os.makedirs(root)
    handler = functools.partial(_QuietHandler, directory=root)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    class Web(object):
        path = root
        port = server.server_address[1]

        def publish(self, src, name):
            shutil.copy(src, os.path.join(root, name))
            return 'http://127.0.0.1:%d/%s' % (self.port, name)

    try:
        yield Web()
    finally:
        server.shutdown()
        server.server_close()


def _server(workdir, name, **kwargs):
    _require_environment()
    server = glance_server.GlanceServer(os.path.join(workdir, name),
                                        **kwargs)
    server.start()
    return server


@pytest.fixture(scope='session')
def xapi_host():
    """A loopback XenServer host serving XVAs at its /export URL."""
    host = xapi_server.XapiHost().start()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope='session')
def glance(workdir, web_root, xapi_host):
    """Single store (``[glance_store]`` file store, node_staging_uri)."""
    server = _server(workdir, 'single',
                     web_download_port=[web_root.port, xapi_host.port],
                     xen_ova_options={'progress_interval': 1})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='session')
def glance_multi(workdir, web_root):
    """Multi-store: ``enabled_backends = fast:file,cheap:file``."""
    server = _server(workdir, 'multi', multistore=True,
                     web_download_port=web_root.port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='session')
def glance_faulty(workdir):
    """A server for failures: image_size_cap between the disks' sizes.

    Tests may also break its store.
    """
    server = _server(workdir, 'faulty',
                     default_options={'image_size_cap': CAP})
    try:
        yield server
    finally:
        server.stop()
