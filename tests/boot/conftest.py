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

"""Session fixtures for boot tests: guests, the accelerator, a boot pool.

Guests are built once per machine (guestkit caches them). Every planned
conversion + boot is queued when the first test asks for one and runs two
at a time; tests then wait for the result they need. Timings are printed
at the end of the run.
"""

import importlib.util
import platform
import sys
import time

import pytest

from tests.boot import guestkit
from tests.boot import qemu
from tests.boot import runs
from tests.functional import glance_server
from tests import ovakit


def pytest_terminal_summary(terminalreporter):
    if runs.TIMINGS:
        terminalreporter.section('boot timings')
        for what, seconds in runs.TIMINGS:
            shown = 'not reached' if seconds is None else '%.1f s' % seconds
            terminalreporter.write_line('%-50s %s' % (what, shown))


def require_boot_platform():
    if sys.platform != 'linux' or platform.machine() != 'x86_64':
        pytest.skip('boot tests build and boot x86_64 Debian guests: they '
                    'need Linux on x86_64 (this is %s/%s)'
                    % (sys.platform, platform.machine()))
    missing = ovakit.missing_tools(qemu.QEMU, *guestkit.TOOLS)
    if missing:
        pytest.fail('boot tests need %s (installed by .ci/run)'
                    % ', '.join(missing), pytrace=False)


@pytest.fixture(scope='session')
def guests():
    require_boot_platform()
    start = time.monotonic()
    built = guestkit.cached_guests()
    runs.record('guests (build or cache hit)', time.monotonic() - start)
    return built


@pytest.fixture(scope='session')
def boot_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('boot'))


@pytest.fixture(scope='session')
def accel(guests, boot_dir):
    """The accelerator that boots fastest here, by a side-by-side probe."""
    tarball = guestkit.rootfs_tarball()
    kernel = guestkit.extract_kernel(tarball, boot_dir)
    results = qemu.probe_accelerators(kernel, boot_dir)
    for name, seconds in sorted(results.items()):
        runs.record('probe: %s kernel to no-root panic' % name, seconds)
    chosen = qemu.pick_accelerator(results)
    runs.record('accelerator chosen: %s' % chosen, 0.0)
    return chosen


@pytest.fixture(scope='session')
def boots(guests, boot_dir, accel):
    pool = runs.BootPool(guests, boot_dir, accel)
    try:
        yield pool
    finally:
        pool.close()


# --------------------------------------------------------------------------
# A real glance-api (tests/functional's harness)

@pytest.fixture(scope='session')
def glance(tmp_path_factory):
    require_boot_platform()
    if importlib.util.find_spec('glance') is None:
        pytest.fail('glance is not installed: run with "tox -e boot"',
                    pytrace=False)
    server = glance_server.GlanceServer(
        str(tmp_path_factory.mktemp('glance')))
    server.start()
    try:
        yield server
    finally:
        server.stop()
