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

"""Windows' boot-bus rules on hives hivex builds, judged by hand.

Each case is a SYSTEM (and DRIVERS) hive shaped as Windows and the
virtio-win or inbox INFs leave it; the expected buses are written here
from Windows' rules (CriticalDeviceDatabase up to NT 6.1, the
DriverDatabase chain from 6.2; Start 0, no StartOverride, the driver's
file present) and from the IDs QEMU's controllers report.
"""

import pytest

from glance_xen_import.inspect import bootbus
from glance_xen_import.inspect import facts
from glance_xen_import.inspect import windows
from glance_xen_import import options
from glance_xen_import import policy
from tests import linuxkit
from tests.unit import test_inspect_registry as reg

make_guests = linuxkit.make_guests
CS = 'ControlSet001\\'
CDD = CS + 'Control\\CriticalDeviceDatabase\\'
SELECT = ['Select', {'Current': ['dword', 1]}]
ALL_FILES = ('atapi', 'intelide', 'pciide', 'storahci', 'msahci',
             'viostor', 'vioscsi')


def _inspect(tmp_path, version, keys, drivers_keys=None,
             files=ALL_FILES):
    system = reg.open_bytes(reg.build_hive(tmp_path, [SELECT] + keys,
                                           name='SYSTEM'))
    drivers_hive = None
    if drivers_keys is not None:
        drivers_hive = reg.open_bytes(reg.build_hive(
            tmp_path, drivers_keys, name='DRIVERS'))
    win = facts.WindowsFacts(location='p', systemroot='/Windows',
                             major_version=version[0],
                             minor_version=version[1])
    present = {'System32/drivers/%s.sys' % name for name in files}
    windows._read_system(system, drivers_hive, win, [],
                         lambda path: path in present)
    return win


def ready(win):
    return {(r.bus, r.machine) for r in win.boot_buses if r.ready}


def decide(win):
    guest = facts.GuestFacts(os_type='windows', distro='windows',
                             version=win.version, windows=win,
                             boot_code=True)
    return policy.decide(guest, None, None, None, options.Options())


def boot(names):
    return make_guests.boot_services(CS, names)


def demoted(name):
    return [CS + 'Services\\%s\\StartOverride' % name, {'0': ['dword', 3]}]


IDE_CDD = make_guests.critical_devices(CS, make_guests.IDE_BINDINGS)
IDE_DDB = make_guests.driver_database('mshdc.inf', make_guests.IDE_PACKAGE,
                                      make_guests.IDE_BINDINGS)
AHCI_DDB = make_guests.driver_database(
    'storahci.inf', 'storahci.inf_amd64_1b2c3d4e5f607182',
    {'CC_010601': ('MSAHCI.NTamd64', 'storahci')})
VIOSTOR_LEGACY = 'VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00'
VIOSTOR_MODERN = 'VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01'


def test_qemu_ids_in_windows_order():
    # Microsoft's "Identifiers for PCI Devices": hardware IDs, then the
    # compatible ones, for virtio-blk as QEMU's pc machine shows it.
    assert bootbus.CONTROLLERS[('virtio-blk', 'pc')].ids() == [
        'VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00',
        'VEN_1AF4&DEV_1001&SUBSYS_00021AF4',
        'VEN_1AF4&DEV_1001&REV_00', 'VEN_1AF4&DEV_1001',
        'VEN_1AF4&DEV_1001&CC_010000', 'VEN_1AF4&DEV_1001&CC_0100',
        'VEN_1AF4&CC_010000', 'VEN_1AF4&CC_0100', 'VEN_1AF4',
        'CC_010000', 'CC_0100']


def test_viostor_bound_only_to_the_legacy_id_is_pc_only(tmp_path):
    # NT 6.1: the CDD binds 1AF4:1001; on q35 the disk is 1AF4:1042.
    win = _inspect(tmp_path, (6, 1), boot(('viostor',) +
                                          make_guests.IDE_SERVICES)
                   + IDE_CDD + [[CDD + 'pci#' + VIOSTOR_LEGACY.lower(),
                                 {'Service': ['sz', 'viostor']}]])
    assert ready(win) == {('virtio-blk', 'pc'), ('ide', 'pc')}
    props = decide(win)
    assert (props['hw_disk_bus'], props['hw_machine_type']) == (
        'virtio', 'pc')


def test_viostor_bound_only_to_the_modern_id_asks_for_q35(tmp_path):
    win = _inspect(tmp_path, (10, 0), boot(('viostor',)),
                   drivers_keys=make_guests.driver_database(
                       'oem3.inf', 'viostor.inf_amd64_00112233',
                       {VIOSTOR_MODERN: ('rhelscsi_inst', 'viostor')}))
    assert ready(win) == {('virtio-blk', 'q35')}
    props = decide(win)
    assert (props['hw_disk_bus'], props['hw_machine_type']) == (
        'virtio', 'q35')
    assert props['xen_import_fixup_required'] == 'false'


def test_another_subsystem_does_not_bind_the_device(tmp_path):
    # A key for 1AF4:1001 of some other board is not QEMU's device.
    win = _inspect(tmp_path, (6, 1), boot(('viostor',)) + [
        [CDD + 'pci#ven_1af4&dev_1001&subsys_12345678&rev_00',
         {'Service': ['sz', 'viostor']}]])
    assert ready(win) == set()
    assert decide(win)['xen_import_fixup_reasons'] == 'windows-no-boot-bus'


def test_demoted_ide_with_boot_start_storahci_boots_from_sata(tmp_path):
    # Windows 10 without Xen drivers: intelide and atapi carry
    # StartOverride\0 = 3; storahci is boot-start.
    win = _inspect(tmp_path, (10, 0),
                   boot(make_guests.IDE_SERVICES + ('storahci',))
                   + [demoted('intelide'), demoted('atapi')],
                   drivers_keys=IDE_DDB + AHCI_DDB)
    assert ready(win) == {('sata', 'pc'), ('sata', 'q35')}
    ide, = [r for r in win.boot_buses if r.bus == 'ide']
    assert ide.reason == 'intelide StartOverride\\0 is 3; atapi ' \
        'StartOverride\\0 is 3'
    props = decide(win)
    assert (props['hw_disk_bus'], props['hw_machine_type']) == ('sata', 'pc')


def test_xp_critical_devices_without_piix3(tmp_path):
    # Windows XP's database lists PIIX4's IDE (8086:7111), not PIIX3's.
    piix4 = [[CDD + 'pci#ven_8086&dev_7111', {'Service': ['sz', 'intelide']}]]
    win = _inspect(tmp_path, (5, 1), boot(make_guests.IDE_SERVICES) + piix4)
    assert ready(win) == set()
    # With the class-code entry (pciide for any IDE controller) it binds.
    cc = [[CDD + 'pci#cc_0101', {'Service': ['sz', 'pciide']}]]
    win = _inspect(tmp_path, (5, 1),
                   boot(make_guests.IDE_SERVICES) + piix4 + cc)
    assert ready(win) == {('ide', 'pc')}
    ide, = [r for r in win.boot_buses if r.bus == 'ide']
    assert (ide.device_id, ide.service) == ('CC_0101', 'pciide')


def test_the_most_specific_id_decides(tmp_path):
    # PIIX3's own entry names intelide (demand-start here): it wins over
    # the class-code entry, whatever pciide's state.
    keys = (boot(('atapi', 'pciide')) + IDE_CDD
            + [[CS + 'Services\\intelide',
                make_guests.service(3, ImagePath=[
                    'expand_sz', 'System32\\drivers\\intelide.sys'])]])
    win = _inspect(tmp_path, (6, 1), keys)
    ide, = [r for r in win.boot_buses if r.bus == 'ide']
    assert not ide.ready
    assert ide.reason == 'intelide Start is 3, not 0 (boot)'


def test_missing_driver_file_is_not_ready(tmp_path):
    win = _inspect(tmp_path, (6, 1), boot(make_guests.IDE_SERVICES)
                   + IDE_CDD, files=('atapi', 'pciide'))
    ide, = [r for r in win.boot_buses if r.bus == 'ide']
    assert not ide.ready
    assert ide.reason == 'intelide has no file System32\\drivers\\intelide.sys'


def test_ide_needs_its_channel_driver(tmp_path):
    win = _inspect(tmp_path, (6, 1), boot(('intelide', 'pciide')) + IDE_CDD)
    ide, = [r for r in win.boot_buses if r.bus == 'ide']
    assert (ide.ready, ide.reason) == (False, 'no service atapi')


def test_image_path_outside_the_system_root_is_not_trusted(tmp_path):
    keys = boot(('atapi', 'pciide')) + IDE_CDD + [
        [CS + 'Services\\intelide', make_guests.service(
            0, ImagePath=['expand_sz', '\\??\\C:\\elsewhere\\intelide.sys'])]]
    win = _inspect(tmp_path, (6, 1), keys)
    ide, = [r for r in win.boot_buses if r.bus == 'ide']
    assert not ide.ready
    assert 'is not under the system root' in ide.reason


def test_system_link_key_defers_to_the_drivers_hive(tmp_path):
    # Windows 10's SYSTEM\DriverDatabase is only a link to DRIVERS.
    link = ['DriverDatabase', {'SymbolicLinkValue': [
        'link', '\\REGISTRY\\MACHINE\\DRIVERS\\DriverDatabase']}]
    win = _inspect(tmp_path, (10, 0), boot(make_guests.IDE_SERVICES) + [link],
                   drivers_keys=IDE_DDB)
    assert ready(win) == {('ide', 'pc')}


@pytest.mark.parametrize('version', [(6, 1), (10, 0)])
def test_nothing_bound_is_flagged_and_never_fixed(tmp_path, version):
    win = _inspect(tmp_path, version, boot(make_guests.IDE_SERVICES),
                   drivers_keys=[] if version >= (6, 2) else None)
    assert ready(win) == set()
    props = decide(win)
    assert props['xen_import_fixup_required'] == 'true'
    assert 'windows-no-boot-bus' in props['xen_import_fixup_reasons']
