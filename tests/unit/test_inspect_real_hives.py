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

"""Boot-bus rules on real Windows SYSTEM hives (tests/fixtures/hives/real).

The inputs each expectation rests on (Start, StartOverride, database
entries) are first read with hivexsh; the expected buses are then what
Windows' rules make of them, written here by hand. No DRIVERS hive or
file system comes with these hives: the DriverDatabase is the one in
SYSTEM, and driver files are not checked.
"""

import lzma
import os
import shutil
import subprocess

import pytest

from glance_xen_import.inspect import facts
from glance_xen_import.inspect import windows
from tests.unit import test_inspect_bootbus as bootbus_tests
from tests.unit import test_inspect_registry as reg

REAL = os.path.join(os.path.dirname(__file__), os.pardir, 'fixtures',
                    'hives', 'real')

pytestmark = pytest.mark.skipif(shutil.which('hivexsh') is None,
                                reason='needs hivexsh (libhivex-bin)')


@pytest.fixture(scope='module')
def hive_path(tmp_path_factory):
    directory = tmp_path_factory.mktemp('real-hives')

    def unpack(name):
        path = directory / name
        if not path.exists():
            with lzma.open(os.path.join(REAL, name + '.xz')) as src:
                path.write_bytes(src.read())
        return str(path)
    return unpack


def hivexsh(path, key, value=None):
    """What hivexsh prints for lsval at key ('' when the key is absent)."""
    script = 'cd %s\nlsval%s\n' % (key, ' ' + value if value else '')
    done = subprocess.run(['hivexsh', path], input=script,
                          capture_output=True, text=True)
    return '' if 'not found' in done.stderr else done.stdout.strip()


def judged(path, version):
    hive = reg.open_bytes(open(path, 'rb').read())
    win = facts.WindowsFacts(location='p', systemroot='/Windows',
                             major_version=version[0],
                             minor_version=version[1])
    windows._read_system(hive, None, win, [], None)
    return win


ready = bootbus_tests.ready


def disk_bus(win):
    props = bootbus_tests.decide(win)
    return (props['hw_disk_bus'], props.get('hw_machine_type'),
            props.get('xen_import_fixup_reasons'))


CS = 'ControlSet001\\'
SERVICES = CS + 'Services\\'
CDD = CS + 'Control\\CriticalDeviceDatabase\\'


def test_nt61_hive_boots_from_ide_only(hive_path):
    path = hive_path('SYSTEM')
    # hivexsh: no DriverDatabase; PIIX3 in the CDD -> intelide, boot
    # start with no override; msahci demand-start.
    assert hivexsh(path, 'DriverDatabase') == ''
    assert hivexsh(path, CDD + 'pci#ven_8086&dev_7010',
                   'Service') == 'intelide'
    assert hivexsh(path, SERVICES + 'intelide', 'Start') == '0'
    assert hivexsh(path, SERVICES + 'intelide\\StartOverride') == ''
    assert hivexsh(path, SERVICES + 'msahci', 'Start') == '3'
    win = judged(path, (6, 1))
    assert ready(win) == {('ide', 'pc')}
    sata = [r for r in win.boot_buses if r.bus == 'sata']
    assert sata[0].reason == 'msahci Start is 3, not 0 (boot)'
    assert disk_bus(win) == ('ide', 'pc', None)


def test_demoted_ide_with_storahci_boots_from_sata(hive_path):
    # The Windows 10 case: intelide/atapi demoted, storahci boot.
    path = hive_path('SYSTEM_2')
    assert hivexsh(path, SERVICES + 'intelide\\StartOverride') == (
        '"0"=dword:00000003')
    assert hivexsh(path, SERVICES + 'atapi\\StartOverride') == (
        '"0"=dword:00000003')
    assert hivexsh(path, SERVICES + 'storahci', 'Start') == '0'
    assert hivexsh(path, SERVICES + 'storahci\\StartOverride') == ''
    assert hivexsh(path, 'DriverDatabase\\DeviceIds\\PCI\\CC_010601') == (
        '"mshdc.inf"=hex(3):01,ff,00,00')
    win = judged(path, (10, 0))
    assert ready(win) == {('sata', 'pc'), ('sata', 'q35')}
    assert disk_bus(win) == ('sata', 'pc', None)
    # hivexsh shows StartOverride\0 = 3 on these four, none on storahci.
    assert win.demoted_storage == ['atapi', 'intelide', 'pciide',
                                   'stornvme']


def test_everything_demoted_is_flagged(hive_path):
    path = hive_path('SYSTEM_B')
    for name in ('intelide', 'atapi', 'storahci', 'pciide', 'stornvme'):
        assert hivexsh(path, SERVICES + name + '\\StartOverride') == (
            '"0"=dword:00000003'), name
    win = judged(path, (10, 0))
    assert ready(win) == set()
    assert disk_bus(win) == ('ide', 'pc', 'windows-no-boot-bus')
    # What the automatic fixup clears (hivexsh shows each at 3), after
    # which IDE and SATA are ready.
    assert win.demoted_storage == ['atapi', 'intelide', 'pciide',
                                   'storahci', 'stornvme']


def test_windows_10_1709_prefers_sata_over_ide(hive_path):
    path = hive_path('SYSTEM_WIN_10_1709')
    assert hivexsh(path, 'DriverDatabase\\DeviceIds\\PCI\\VEN_8086&DEV_7010'
                   ) == '"mshdc.inf"=hex(3):01,ff,00,00'
    for name in ('intelide', 'atapi', 'storahci'):
        assert hivexsh(path, SERVICES + name, 'Start') == '0', name
        assert hivexsh(path, SERVICES + name + '\\StartOverride') == '', name
    win = judged(path, (10, 0))
    assert ready(win) == {('sata', 'pc'), ('sata', 'q35'), ('ide', 'pc')}
    assert disk_bus(win) == ('sata', 'pc', None)
    # No virtio driver is installed: nothing binds QEMU's virtio IDs.
    assert not any(r.ready for r in win.boot_buses
                   if r.bus.startswith('virtio'))
