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

"""policy.decide: every row of its tables, then the fixture guests."""

import types

import pytest

from glance_xen_import import inspect
from glance_xen_import.inspect import bootbus
from glance_xen_import.inspect import facts
from glance_xen_import import options
from glance_xen_import import policy
from tests.unit import test_inspect_guests as guests

MBR = types.SimpleNamespace(scheme='mbr', partitions=(), filesystem=None,
                            disk_signature=1, disk_guid=None)
GPT = types.SimpleNamespace(scheme='gpt', partitions=(), filesystem=None,
                            disk_signature=0, disk_guid='00000000-0000-4000-'
                            '8000-000000000000')
PACKAGE = types.SimpleNamespace(virtual_system_type='hvm-3.0-unknown',
                                os_id=None, os_description=None)


def buses(*ready):
    """Readiness of every (bus, machine), ready for those named."""
    return [bootbus.Readiness(bus, machine, ready=(bus, machine) in ready)
            for bus, machine in bootbus.PREFERENCE]


# What a Windows install binds by itself: its IDE controller on pc.
INBOX = (('ide', 'pc'),)


def windows_guest(version=(6, 1), ready=INBOX, **win):
    facts_ = facts.WindowsFacts(location='partition 1',
                                systemroot='/Windows',
                                major_version=version[0],
                                minor_version=version[1],
                                boot_buses=buses(*ready), **win)
    return facts.GuestFacts(os_type='windows', distro='windows',
                            version=facts_.version, windows=facts_,
                            boot_code=True)


def virtio(name, ready=False, start=None, staged=False):
    service = None if start is None else facts.ServiceState(name, start, 1)
    return facts.VirtioDriver(name=name, service=service, staged=staged,
                              boot_ready=ready)


def linux_guest(distro='debian', version='12', **linux):
    return facts.GuestFacts(
        os_type='linux', distro=distro, version=version, boot_code=True,
        linux=facts.LinuxFacts(location='partition 1', **linux))


def decide(guest, layout=MBR, opts=None, source='vhd-dynamic:caml'):
    props = policy.decide(guest, layout, PACKAGE, source,
                          opts or options.Options())
    assert all(isinstance(k, str) and isinstance(v, str)
               for k, v in props.items())
    return props


# -- disk bus -----------------------------------------------------------------

def test_windows_with_boot_ready_vioscsi_uses_virtio_scsi():
    guest = windows_guest(ready=INBOX + (('virtio-scsi', 'pc'),))
    props = decide(guest)
    assert props['hw_disk_bus'] == 'scsi'
    assert props['hw_scsi_model'] == 'virtio-scsi'
    assert props['hw_machine_type'] == 'pc'


def test_virtio_bound_only_to_the_modern_id_needs_q35():
    # On pc the controller shows the transitional ID, which nothing binds.
    guest = windows_guest(ready=INBOX + (('virtio-blk', 'q35'),))
    props = decide(guest)
    assert props['hw_disk_bus'] == 'virtio'
    assert props['hw_machine_type'] == 'q35'


@pytest.mark.parametrize('xen', [
    {'xen_services': [facts.ServiceState('xenvbd', 0, 1)]},
    {'xen_filters': [facts.ClassFilter(
        '{4d36e97d-e325-11ce-bfc1-08002be10318}', 'UpperFilters',
        'XENFILT')]},
])
def test_active_xen_drivers_keep_virtio_out_of_the_first_boot(xen):
    # The fixup was not allowed (report mode) or not possible.
    guest = windows_guest(ready=INBOX + (('virtio-scsi', 'pc'),), **xen)
    props = decide(guest)
    assert props['hw_disk_bus'] == 'ide'
    assert props['hw_machine_type'] == 'pc'
    assert 'hw_scsi_model' not in props


def test_vioscsi_wins_over_viostor():
    guest = windows_guest(ready=INBOX + (('virtio-scsi', 'pc'),
                                         ('virtio-blk', 'pc')))
    assert decide(guest)['hw_disk_bus'] == 'scsi'


def test_windows_with_boot_ready_viostor_only_uses_virtio_blk():
    guest = windows_guest(ready=INBOX + (('virtio-blk', 'pc'),
                                         ('virtio-blk', 'q35')))
    props = decide(guest)
    assert props['hw_disk_bus'] == 'virtio'
    assert 'hw_scsi_model' not in props
    # Both machine types would do: pc, Nova's default.
    assert props['hw_machine_type'] == 'pc'


def test_windows_without_boot_ready_virtio_uses_ide_on_pc():
    props = decide(windows_guest())
    assert props['hw_disk_bus'] == 'ide'
    assert props['hw_machine_type'] == 'pc'
    assert 'hw_scsi_model' not in props
    assert props['xen_import_fixup_required'] == 'false'


def test_sata_when_ide_is_demoted():
    # intelide/atapi demoted by StartOverride, storahci boot-start.
    props = decide(windows_guest((10, 0), ready=(('sata', 'pc'),
                                                 ('sata', 'q35'))))
    assert props['hw_disk_bus'] == 'sata'
    assert props['hw_machine_type'] == 'pc'
    assert props['xen_import_fixup_required'] == 'false'


def test_windows_with_no_ready_bus_is_flagged():
    props = decide(windows_guest(ready=()))
    assert props['xen_import_fixup_required'] == 'true'
    assert props['xen_import_fixup_reasons'] == 'windows-no-boot-bus'
    assert props['hw_disk_bus'] == 'ide'


def test_windows_ignores_the_configured_default():
    opts = options.Options(default_disk_bus='virtio')
    assert decide(windows_guest(), opts=opts)['hw_disk_bus'] == 'ide'


def test_linux_gets_the_configured_default():
    props = decide(linux_guest())
    assert props['hw_disk_bus'] == 'scsi'
    assert props['hw_scsi_model'] == 'virtio-scsi'
    assert 'hw_machine_type' not in props


@pytest.mark.parametrize('bus, model, expected', [
    ('virtio', 'virtio-scsi', {'hw_disk_bus': 'virtio'}),
    ('scsi', 'lsilogic', {'hw_disk_bus': 'scsi',
                          'hw_scsi_model': 'lsilogic'}),
    ('ide', 'virtio-scsi', {'hw_disk_bus': 'ide', 'hw_machine_type': 'pc'}),
    ('sata', 'virtio-scsi', {'hw_disk_bus': 'sata'}),
])
def test_configured_default_bus(bus, model, expected):
    opts = options.Options(default_disk_bus=bus, default_scsi_model=model)
    props = decide(linux_guest(), opts=opts)
    got = {k: v for k, v in props.items()
           if k in ('hw_disk_bus', 'hw_scsi_model', 'hw_machine_type')}
    assert got == expected


def test_unknown_guest_gets_the_default_and_no_os_properties():
    for guest in (facts.GuestFacts(), None):
        props = decide(guest)
        assert props['hw_disk_bus'] == 'scsi'
        assert props['hw_scsi_model'] == 'virtio-scsi'
        assert not {'os_type', 'os_distro', 'os_version'} & set(props)
        assert props['hw_vif_model'] == 'e1000'
        assert props['xen_import_fixup_required'] == 'false'


def test_options_default_when_none_given():
    props = policy.decide(linux_guest(), MBR, PACKAGE, '', None)
    assert props['hw_disk_bus'] == options.Options().default_disk_bus


# -- os_* ---------------------------------------------------------------------

def test_os_properties():
    props = decide(windows_guest(version=(10, 0)))
    assert (props['os_type'], props['os_distro'], props['os_version']) == (
        'windows', 'windows', '10.0')
    props = decide(linux_guest('centos', '6.10'))
    assert (props['os_type'], props['os_distro'], props['os_version']) == (
        'linux', 'centos', '6.10')
    props = decide(linux_guest(None, None))
    assert props['os_type'] == 'linux'
    assert 'os_distro' not in props and 'os_version' not in props


# -- network ------------------------------------------------------------------

@pytest.mark.parametrize('netkvm, expected', [
    (virtio('netkvm', start=3), 'virtio'),
    (virtio('netkvm', staged=True), 'virtio'),
    (virtio('netkvm', start=4), 'e1000'),
    (None, 'e1000'),
])
def test_windows_nic(netkvm, expected):
    guest = windows_guest(virtio={'netkvm': netkvm} if netkvm else {})
    assert decide(guest)['hw_vif_model'] == expected


def test_linux_nic_is_virtio():
    assert decide(linux_guest())['hw_vif_model'] == 'virtio'


# -- firmware -----------------------------------------------------------------

def test_firmware():
    guest = windows_guest()
    guest.efi_loaders = ['partition 1:/EFI/Boot/bootx64.efi']
    assert decide(guest, GPT)['hw_firmware_type'] == 'uefi'
    # An MBR disk boots by BIOS whatever a FAT partition holds.
    assert decide(guest, MBR)['hw_firmware_type'] == 'bios'
    guest.efi_loaders = []
    assert decide(guest, GPT)['hw_firmware_type'] == 'bios'


# -- fixup reasons ------------------------------------------------------------

def _reasons(props):
    if props['xen_import_fixup_required'] == 'false':
        assert 'xen_import_fixup_reasons' not in props
        return []
    assert props['xen_import_fixup_required'] == 'true'
    return props['xen_import_fixup_reasons'].split(',')


def test_clean_guests_need_no_fixup():
    assert _reasons(decide(windows_guest())) == []
    assert _reasons(decide(linux_guest())) == []


def test_enabled_xen_drivers():
    guest = windows_guest(xen_services=[
        facts.ServiceState('xenbus', 0, 1), facts.ServiceState('XenVbd', 0, 1),
        facts.ServiceState('xennet', 4, 1)])
    props = decide(guest)
    assert _reasons(props) == ['xen-pv-drivers']
    assert props['xen_import_xen_drivers'] == 'xenbus,xenvbd'


def test_user_mode_xen_agent_is_listed_but_does_not_need_a_fixup():
    guest = windows_guest(xen_services=[
        facts.ServiceState('xenagent', 2, 0x10)])
    props = decide(guest)
    assert _reasons(props) == []
    assert props['xen_import_xen_drivers'] == 'xenagent'


def test_disabled_xen_drivers_are_not_listed():
    guest = windows_guest(xen_services=[facts.ServiceState('xenbus', 4, 1)])
    props = decide(guest)
    assert 'xen_import_xen_drivers' not in props
    assert _reasons(props) == []


@pytest.mark.parametrize('field, value, code', [
    ('xen_filters', [facts.ClassFilter('{4d36e97d-e325-11ce-bfc1-'
                                       '08002be10318}', 'UpperFilters',
                                       'XENFILT')], 'xen-class-filters'),
    ('dirty_hives', ['SYSTEM'], 'dirty-hive'),
    ('hibernated', True, 'hibernated'),
    ('bcd', [facts.BcdStore('p1:/Boot/BCD', [facts.BcdDevice(
        '{x}', '21000001', 'partition', 'mbr', '1048576', '0badf00d',
        checked=True, matches=False)])], 'bcd-mismatch'),
])
def test_windows_reasons(field, value, code):
    assert _reasons(decide(windows_guest(**{field: value}))) == [code]


def test_bcd_with_unchecked_or_matching_devices_is_fine():
    stores = [facts.BcdStore('p1:/Boot/BCD', [
        facts.BcdDevice('{x}', '11000001', 'boot'),
        facts.BcdDevice('{x}', '21000001', 'partition', 'mbr', '1048576',
                        '0000abcd', checked=True, matches=True)])]
    assert _reasons(decide(windows_guest(bcd=stores))) == []


@pytest.mark.parametrize('field, value, code', [
    ('xvd_references', ['p1:/etc/fstab:1: /dev/xvda1 / ext4'],
     'xvd-device-names'),
    ('kernels', [facts.Kernel('vmlinuz-2.6.18-419.el5xen', True, 'name')],
     'pv-only-kernel'),
])
def test_linux_reasons(field, value, code):
    assert _reasons(decide(linux_guest(**{field: value}))) == [code]


@pytest.mark.parametrize('field, value, code', [
    ('xen_console', ['p1:/boot/grub/menu.lst:3: kernel ... console=hvc0 '
                     'console=ttyS0'], 'xen-console'),
    ('mac_bindings', ['p1:/etc/sysconfig/network-scripts/ifcfg-eth0:2'],
     'mac-bound-network'),
])
def test_linux_findings_are_not_fixup_reasons(field, value, code):
    properties = decide(linux_guest(**{field: value}))
    assert properties['xen_import_fixup_required'] == 'false'
    assert properties['xen_import_findings'] == code


@pytest.mark.parametrize('line, blocks', [
    ('kernel /vmlinuz ro console=hvc0', True),
    ('kernel /vmlinuz ro console=tty0 console=xvc0', True),
    ('kernel /vmlinuz ro console=hvc0 console=ttyS0,115200n8', False),
    ('GRUB_CMDLINE_LINUX="console=hvc0"', True),
    ('GRUB_CMDLINE_LINUX="console=hvc0 console=tty0"', False),
])
def test_xen_console_last_stops_a_boot(line, blocks):
    # The kernel makes the last console= /dev/console: on KVM a Xen one
    # there leaves init without a console (a Debian 12 guest stops before
    # mounting its root in the boot tests).
    properties = decide(linux_guest(xen_console=['p1:/x:1: ' + line]))
    assert properties['xen_import_fixup_required'] == str(blocks).lower()
    assert ('xen-console' in properties.get('xen_import_fixup_reasons', '')
            ) is blocks
    assert ('xen-console' in properties.get('xen_import_findings', '')
            ) is not blocks


def test_default_entry_decides_the_console():
    entry = facts.BootEntry(source='/boot/grub/grub.cfg', kind='grub2',
                            cmdline='root=UUID=1 ro console=hvc0 '
                                    'console=ttyS0')
    guest = linux_guest(xen_console=['p1:/etc/default/grub:1: '
                                     'GRUB_CMDLINE_LINUX="console=hvc0"'])
    guest.linux.boot_entry = entry
    properties = decide(guest)
    assert properties['xen_import_fixup_required'] == 'false'
    assert properties['xen_import_findings'] == 'xen-console'


def test_one_normal_kernel_is_enough():
    kernels = [facts.Kernel('vmlinuz-2.6.18-419.el5xen', True, 'name'),
               facts.Kernel('vmlinuz-2.6.18-419.el5', False)]
    assert _reasons(decide(linux_guest(kernels=kernels))) == []


def test_pv_guest_from_the_ovf():
    guest = linux_guest()
    guest.pv_guest = True
    assert _reasons(decide(guest)) == ['xen-pv-guest']


def test_missing_boot_code():
    guest = linux_guest()
    guest.boot_code = False
    assert _reasons(decide(guest, MBR)) == ['no-boot-code']
    # UEFI does not use the MBR's code.
    guest.efi_loaders = ['partition 1:/EFI/BOOT/BOOTX64.EFI']
    assert _reasons(decide(guest, GPT)) == []
    # A data disk (no OS) is not flagged; nor is an unknown answer.
    assert _reasons(decide(facts.GuestFacts(boot_code=False), MBR)) == []
    guest = linux_guest()
    guest.boot_code = None
    assert _reasons(decide(guest, MBR)) == []


def test_reasons_keep_table_order():
    guest = windows_guest(
        hibernated=True, dirty_hives=['SOFTWARE'],
        xen_services=[facts.ServiceState('xenfilt', 0, 1)])
    guest.pv_guest = True
    assert _reasons(decide(guest)) == [
        'xen-pv-drivers', 'dirty-hive', 'hibernated', 'xen-pv-guest']


def test_source_is_passed_through():
    assert decide(linux_guest())['xen_import_source'] == 'vhd-dynamic:caml'
    assert 'xen_import_source' not in decide(linux_guest(), source='')


# -- the fixture guests, end to end -------------------------------------------

EXPECTED = {
    'win2008r2-xen': {
        'os_type': 'windows', 'os_distro': 'windows', 'os_version': '6.1',
        'hw_disk_bus': 'ide', 'hw_machine_type': 'pc',
        'hw_vif_model': 'e1000', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'true',
        'xen_import_fixup_reasons': 'xen-pv-drivers,xen-class-filters',
        'xen_import_xen_drivers':
            'xenagent,xenbus,xenfilt,xeniface,xennet,xenvbd,xenvif',
        # Its Uninstall entries: the Management Agent and PV Drivers MSIs.
        'xen_import_xen_tools': 'xenserver-6.1-7.x'},
    'win7-vioscsi': {
        'os_type': 'windows', 'os_distro': 'windows', 'os_version': '6.1',
        # vioscsi bound in the CDD to its transitional ID: pc.
        'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
        'hw_machine_type': 'pc',
        'hw_vif_model': 'virtio', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'false'},
    'win2019-uefi': {
        'os_type': 'windows', 'os_distro': 'windows', 'os_version': '10.0',
        # viostor bound to both IDs (vioscsi demoted): pc, the default.
        'hw_disk_bus': 'virtio', 'hw_machine_type': 'pc',
        'hw_vif_model': 'virtio',
        'hw_firmware_type': 'uefi', 'xen_import_fixup_required': 'false'},
    'win2008-unclean': {
        'os_type': 'windows', 'os_distro': 'windows', 'os_version': '6.0',
        'hw_disk_bus': 'ide', 'hw_machine_type': 'pc',
        'hw_vif_model': 'e1000', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'true',
        'xen_import_fixup_reasons': 'bcd-mismatch,dirty-hive,hibernated'},
    'centos6-xen': {
        'os_type': 'linux', 'os_distro': 'centos', 'os_version': '6.10',
        'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
        'hw_vif_model': 'virtio', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'true',
        # Its initrd is a 2-byte gzip stub: read, it fails closed.
        'xen_import_fixup_reasons': 'xvd-device-names,xen-console,'
                                    'pv-only-kernel,initramfs-unreadable,'
                                    'xen-pv-guest,no-boot-code'},
    'debian12': {
        'os_type': 'linux', 'os_distro': 'debian', 'os_version': '12',
        'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
        'hw_vif_model': 'virtio', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'false'},
    'rocky9-uefi': {
        'os_type': 'linux', 'os_distro': 'rocky', 'os_version': '9.3',
        'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
        'hw_vif_model': 'virtio', 'hw_firmware_type': 'uefi',
        'xen_import_fixup_required': 'false'},
    'ubuntu-pv-whole': {
        'os_type': 'linux', 'os_distro': 'ubuntu', 'os_version': '14.04',
        'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
        'hw_vif_model': 'virtio', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'true',
        # menu.lst names an initrd that is not on the disk.
        'xen_import_fixup_reasons': 'xvd-device-names,xen-console,'
                                    'initramfs-unreadable,xen-pv-guest,'
                                    'no-boot-code'},
    'data-only': {
        'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi',
        'hw_vif_model': 'e1000', 'hw_firmware_type': 'bios',
        'xen_import_fixup_required': 'false'},
}
PV = ('centos6-xen', 'ubuntu-pv-whole')


@pytest.fixture(scope='module')
def disks(tmp_path_factory):
    directory = tmp_path_factory.mktemp('guests')
    return lambda name: guests.unpack(name, directory)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_fixture_guest_properties(name, disks):
    system_type = 'xen-3.0-unknown' if name in PV else 'hvm-3.0-unknown'
    package = guests.package(system_type)
    layout = guests.layout(name)
    guest = inspect.inspect_guest(disks(name), layout, package)
    props = policy.decide(guest, layout, package, 'vhd-dynamic:caml',
                          options.Options())
    expected = dict(EXPECTED[name], xen_import_source='vhd-dynamic:caml')
    assert props == expected


# -- inspection that gave up ------------------------------------------------

def test_windows_with_an_unreadable_hive_fails_closed():
    guest = windows_guest((10, 0), ready=INBOX + (('virtio-scsi', 'pc'),))
    guest.incomplete.append('SYSTEM hive unreadable')
    props = decide(guest)
    assert props['xen_import_fixup_required'] == 'true'
    assert props['xen_import_fixup_reasons'] == 'inspection-incomplete'
    assert props['xen_import_inspection_errors'] == (
        'SYSTEM hive unreadable')
    # Even with virtio-scsi seemingly ready: what was not read may be Xen.
    assert props['hw_disk_bus'] == 'ide'
    assert props['hw_machine_type'] == 'pc'
    assert 'hw_scsi_model' not in props


@pytest.mark.parametrize('kind,bus', [
    ('ntfs', 'ide'),
    # Not a sign of Windows: the operator's default bus.
    ('ext', options.Options().default_disk_bus),
])
def test_unknown_guest_with_an_unreadable_volume(kind, bus):
    guest = facts.GuestFacts(volumes=[facts.VolumeInfo(
        'partition 1', kind, readable=False)])
    guest.incomplete.append('partition 1 %s volume unreadable' % kind)
    props = decide(guest)
    assert props['xen_import_fixup_required'] == 'true'
    assert props['xen_import_fixup_reasons'] == 'inspection-incomplete'
    assert props['xen_import_inspection_errors'] == (
        'partition 1 %s volume unreadable' % kind)
    assert props['hw_disk_bus'] == bus
    assert ('hw_machine_type' in props) == (bus == 'ide')


def test_complete_inspection_has_no_inspection_errors():
    props = decide(windows_guest((10, 0)))
    assert 'xen_import_inspection_errors' not in props
    assert 'inspection-incomplete' not in props.get(
        'xen_import_fixup_reasons', '')
