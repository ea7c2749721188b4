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

"""Driver names, INF packages and Windows virtio readiness rules."""

import codecs

import pytest

from glance_xen_import.inspect import drivers
from glance_xen_import.inspect import facts
from glance_xen_import.inspect import inf
from glance_xen_import.inspect import windows
from tests import linuxkit
from tests.unit import test_inspect_registry as reg

make_guests = linuxkit.make_guests

XENBUS_INF = (
    '; xenbus.inf\r\n[Version]\r\nSignature="$Windows NT$"\r\n'
    'Class=System ; the system class\r\n'
    'ClassGUID={4d36e97d-e325-11ce-bfc1-08002be10318}\r\n'
    'Provider=%Vendor%\r\nCatalogFile.NTamd64=xenbus.cat\r\n\r\n'
    '[Strings]\r\nVendor="XCP-ng; with a semicolon"\r\n')


@pytest.mark.parametrize('encode', [
    lambda text: codecs.BOM_UTF16_LE + text.encode('utf-16-le'),
    lambda text: codecs.BOM_UTF16_BE + text.encode('utf-16-be'),
    lambda text: codecs.BOM_UTF8 + text.encode('utf-8'),
    lambda text: text.encode('cp1252'),
])
def test_inf_version_info(encode):
    assert inf.version_info(encode(XENBUS_INF)) == (
        'XCP-ng; with a semicolon', 'System', 'xenbus.cat')


def test_inf_without_version_section():
    assert inf.version_info(b'[Strings]\r\nA="b"\r\n') == (None, None, None)
    # A token with no string stays as written.
    assert inf.version_info(b'[Version]\nProvider=%Nobody%\n')[0] == (
        '%Nobody%')
    # Not UTF-8: read as the ANSI code page.
    assert inf.version_info(b'[Version]\nProvider=Caf\xe9\n')[0] == 'Caf\xe9'


def test_inf_driver_version():
    # The xevtchn.inf of the legacy Citrix drivers (OpenXT/xc-windows).
    text = (b'[Version]\r\nClass=System\r\nProvider=%OpenXT%\r\n'
            b'CatalogFile=xevtchn.cat\r\nDriverVer= 03/01/2008,4.2.0.0001\r\n')
    assert inf.version_details(text)[2:] == (
        'xevtchn.cat', '03/01/2008,4.2.0.0001')


@pytest.mark.parametrize('name, expected', [
    ('PCI#VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00', 'viostor'),
    ('pci#ven_1af4&dev_1042&subsys_11001af4&rev_01', 'viostor'),
    ('VEN_1AF4&DEV_1004', 'vioscsi'),
    ('VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01', 'vioscsi'),
    ('PCI#VEN_1AF4&DEV_1000', 'netkvm'),
    ('PCI#VEN_1AF4&DEV_1002', None),          # balloon
    ('PCI#VEN_8086&DEV_7010', None),
])
def test_virtio_pci_ids(name, expected):
    assert drivers.virtio_driver_for_pci_id(name) == expected


@pytest.mark.parametrize('provider, catalog, expected', [
    ('Red Hat, Inc.', 'viostor.cat', 'viostor'),
    ('Red Hat, Inc.', 'NetKVM.cat', 'netkvm'),
    (None, 'xenvbd.cat', 'xen'),
    ('Citrix Systems, Inc.', 'whatever.cat', 'xen'),
    ('XCP-ng', None, 'xen'),
    ('Vates', 'xeniface.cat', 'xen'),
    ('Microsoft', 'ntprint.cat', None),
    (None, None, None),
])
def test_package_family(provider, catalog, expected):
    assert drivers.package_family(provider, catalog) == expected


def _system_hive(tmp_path, keys):
    return reg.open_bytes(reg.build_hive(tmp_path, keys, name='SYSTEM'))


def _virtio(tmp_path, keys, version, drivers_keys=None):
    hive = _system_hive(tmp_path, [['Select', {'Current': ['dword', 1]}]] +
                        keys)
    drivers_hive = None
    if drivers_keys is not None:
        drivers_hive = reg.open_bytes(reg.build_hive(
            tmp_path, drivers_keys, name='DRIVERS'))
    win = facts.WindowsFacts(location='p', systemroot='/Windows',
                             major_version=version[0] if version else None,
                             minor_version=version[1] if version else None)
    notes = []
    windows._read_system(hive, drivers_hive, win, notes)
    return win, notes


BOOT_VIOSTOR = ['ControlSet001\\Services\\viostor',
                {'Start': ['dword', 0], 'Type': ['dword', 1]}]
CDD_VIOSTOR = ['ControlSet001\\Control\\CriticalDeviceDatabase\\'
               'pci#ven_1af4&dev_1001&subsys_00021af4&rev_00',
               {'Service': ['sz', 'viostor']}]
# The whole DriverDatabase chain Windows 8+ follows: DeviceIds -> INF ->
# active package -> descriptor -> configuration -> Service.
DDB_VIOSTOR = make_guests.driver_database(
    'oem3.inf', 'viostor.inf_amd64_0123456789abcdef',
    {'VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00':
     ('rhelscsi_inst', 'viostor')})


def test_nt61_needs_a_critical_device_entry(tmp_path):
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR], (6, 1))
    assert not win.virtio_boot_ready('viostor')
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR, CDD_VIOSTOR], (6, 1))
    assert win.virtio_boot_ready('viostor')


def test_cdd_entry_for_another_service_does_not_count(tmp_path):
    wrong = [CDD_VIOSTOR[0], {'Service': ['sz', 'vioscsi']}]
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR, wrong], (6, 1))
    assert not win.virtio_boot_ready('viostor')


def test_demand_start_is_not_boot_ready(tmp_path):
    demand = [BOOT_VIOSTOR[0], {'Start': ['dword', 3]}]
    win, _ = _virtio(tmp_path, [demand, CDD_VIOSTOR], (6, 1))
    assert not win.virtio_boot_ready('viostor')
    assert win.virtio_available('viostor')


def test_nt62_uses_the_driver_database(tmp_path):
    # The CDD no longer binds drivers from Windows 8 on.
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR, CDD_VIOSTOR], (6, 2),
                     drivers_keys=[['DriverDatabase\\DeviceIds\\PCI',
                                    {}]])
    assert not win.virtio_boot_ready('viostor')
    # Windows 8/8.1 keep the database in SYSTEM itself.
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR] + DDB_VIOSTOR, (6, 3))
    assert win.virtio_boot_ready('viostor')
    # Windows 10+ in the DRIVERS hive.
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR], (10, 0),
                     drivers_keys=DDB_VIOSTOR)
    assert win.virtio_boot_ready('viostor')
    assert win.virtio['viostor'].device_ids == [
        'VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00']


def test_driver_database_entry_without_its_chain_is_not_enough(tmp_path):
    # DeviceIds names an INF, but no package says which service it binds.
    device_id = ['DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1001',
                 {'viostor.inf': ['binary', '01ff0000']}]
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR], (10, 0),
                     drivers_keys=[device_id])
    assert not win.virtio_boot_ready('viostor')
    blk = [r for r in win.boot_buses if r.bus == 'virtio-blk']
    assert blk[0].reason == ('DriverDatabase entry VEN_1AF4&DEV_1001 leads '
                             'to no service')


def test_start_override_demotes(tmp_path):
    override = ['ControlSet001\\Services\\viostor\\StartOverride',
                {'0': ['dword', 3]}]
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR, override] + DDB_VIOSTOR,
                     (10, 0))
    assert win.virtio['viostor'].start_override == 3
    assert not win.virtio_boot_ready('viostor')


def test_unknown_version_without_any_database(tmp_path):
    # No SOFTWARE hive and no DriverDatabase: judged by the CDD.
    win, _ = _virtio(tmp_path, [BOOT_VIOSTOR, CDD_VIOSTOR], None)
    assert win.virtio_boot_ready('viostor')


def test_win8_without_driver_database_is_not_boot_ready(tmp_path):
    # Nothing shows the driver bound to a controller: not assumed.
    win, notes = _virtio(tmp_path, [BOOT_VIOSTOR], (6, 2))
    assert not win.virtio_boot_ready('viostor')
    assert any('no DriverDatabase' in note for note in notes)


def test_netkvm_is_never_a_boot_driver(tmp_path):
    netkvm = ['ControlSet001\\Services\\netkvm', {'Start': ['dword', 0]}]
    cdd = ['ControlSet001\\Control\\CriticalDeviceDatabase\\'
           'pci#ven_1af4&dev_1000', {'Service': ['sz', 'netkvm']}]
    win, _ = _virtio(tmp_path, [netkvm, cdd], (6, 1))
    assert not win.virtio_boot_ready('netkvm')
    assert win.virtio_available('netkvm')


def test_missing_select_falls_back_to_controlset001(tmp_path):
    hive = _system_hive(tmp_path, [BOOT_VIOSTOR])
    win = facts.WindowsFacts(location='p', systemroot='/Windows')
    notes = []
    windows._read_system(hive, None, win, notes)
    assert win.control_set == 'ControlSet001'
    assert any('Select' in note for note in notes)


def test_xen_filters_in_any_class_and_both_lists(tmp_path):
    hive = _system_hive(tmp_path, [
        ['Select', {'Current': ['dword', 1]}],
        ['ControlSet001\\Control\\Class\\{4d36e96a-e325-11ce-bfc1-'
         '08002be10318}', {'LowerFilters': ['multi_sz', ['scsifilt']],
                           'UpperFilters': ['multi_sz', ['xenpci']]}],
        ['ControlSet001\\Control\\Class\\{4d36e967-e325-11ce-bfc1-'
         '08002be10318}', {'UpperFilters': ['multi_sz', ['PartMgr']]}],
    ])
    win = facts.WindowsFacts(location='p', systemroot='/Windows')
    windows._read_system(hive, None, win, [])
    assert sorted((f.value, f.driver) for f in win.xen_filters) == [
        ('LowerFilters', 'scsifilt'), ('UpperFilters', 'xenpci')]
