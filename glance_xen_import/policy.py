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

"""Guest facts -> Glance image properties.

The disk bus follows what the guest can boot from, as virt-v2v decides
it for its OpenStack output: a boot-ready virtio-scsi driver, else a
boot-ready virtio-blk driver, else IDE (on the i440fx 'pc' machine, as
q35 has no IDE bus). A Linux guest gets the best bus its default boot
entry's initramfs and kernel have drivers for (virtio-scsi, virtio-blk,
IDE, SATA); one that has none, whose initramfs could not be read, or
whose drivers nobody could tell, and guests nobody recognised, get the
operator's default. The xen_import_* properties say whether the guest
still carries something that stops it booting or working on KVM.
"""

from glance_xen_import.inspect import linux as linux_inspect
from glance_xen_import import options as options_mod
from glance_xen_import import sanitize

# Driver service types that are kernel code (SERVICE_KERNEL_DRIVER,
# SERVICE_FILE_SYSTEM_DRIVER); user-mode agents do not stop a boot.
_KERNEL_DRIVER_TYPES = (1, 2)
# Glance keeps property values of up to 255 characters.
MAX_PROPERTY_LENGTH = 255


def _windows(guest):
    return guest.windows if guest is not None else None


def _linux(guest):
    return guest.linux if guest is not None else None


def _xen_drivers_active(guest, opts):
    # Xen PV drivers still enabled (the fixup was not allowed or not
    # possible): boot on emulated IDE, as the guest did on Xen before its
    # PV drivers took over, and keep virtio out of the first boot.
    win = _windows(guest)
    return win is not None and bool(_enabled_xen_drivers(win)
                                    or win.xen_filters)


def _windows_unverified(guest, opts):
    # Inspection gave up part way on a Windows guest, or on a disk whose
    # only sign of an OS is an NTFS volume it could not read: what it
    # missed may be Xen drivers, so boot as if they were there.
    if guest is None or not guest.incomplete:
        return False
    if guest.os_type == 'windows':
        return True
    return guest.os_type is None and any(v.kind == 'ntfs'
                                         for v in guest.volumes)


def _windows_ready_on(bus):
    # Windows' own rules (inspect/bootbus.py) let it start from this bus
    # on some machine type.
    def test(guest, opts):
        win = _windows(guest)
        return win is not None and win.ready_bus((bus,)) is not None
    return test


def _is_windows(guest, opts):
    return guest is not None and guest.os_type == 'windows'


def _anything(guest, opts):
    return True


def _linux_boots_from(bus):
    def test(guest, opts):
        linux = _linux(guest)
        return bool(linux and not linux.initramfs_unreadable and
                    linux.kvm_buses and linux.kvm_buses[0] == bus)
    return test


# The disk bus table: the first row whose test holds decides
# (hw_disk_bus, hw_scsi_model). A callable value reads the options.
DISK_BUS_TABLE = (
    (_xen_drivers_active, ('ide', None)),
    (_windows_unverified, ('ide', None)),
    (_windows_ready_on('virtio-scsi'), ('scsi', 'virtio-scsi')),
    (_windows_ready_on('virtio-blk'), ('virtio', None)),
    (_windows_ready_on('sata'), ('sata', None)),
    # IDE when it is ready; otherwise windows-no-boot-bus says so.
    (_is_windows, ('ide', None)),
    (_linux_boots_from('virtio-scsi'), ('scsi', 'virtio-scsi')),
    (_linux_boots_from('virtio-blk'), ('virtio', None)),
    (_linux_boots_from('ide'), ('ide', None)),
    (_linux_boots_from('sata'), ('sata', None)),
    (_anything, (lambda opts: opts.default_disk_bus,
                 lambda opts: opts.default_scsi_model)),
)


def _enabled_xen_drivers(win):
    return [s for s in win.xen_services if s.enabled and
            (s.type is None or s.type in _KERNEL_DRIVER_TYPES)]


def firmware_type(guest, layout):
    """The firmware the VM used on Xen, when its package records it.

    Otherwise uefi for a GPT disk whose ESP holds an EFI boot loader.
    """
    vm_firmware = getattr(guest, 'vm_firmware', None)
    if vm_firmware in ('bios', 'uefi'):
        return vm_firmware
    if getattr(layout, 'scheme', None) != 'gpt' or guest is None:
        return 'bios'
    return 'uefi' if guest.efi_loaders else 'bios'


def _inspection_incomplete(guest, layout):
    # Fail closed: what could not be read cannot be said to need nothing.
    return bool(guest is not None and guest.incomplete)


def _windows_no_boot_bus(guest, layout):
    # Fail closed: no controller KVM offers is bound to a boot-start
    # driver Windows can load (or SYSTEM said nothing about it).
    win = _windows(guest)
    return bool(win and not guest.incomplete and win.ready_bus() is None)


# hw_disk_bus (+ hw_scsi_model) -> the bus name of inspect/bootbus.py.
_BOOTBUS_NAMES = {('scsi', 'virtio-scsi'): 'virtio-scsi',
                  ('virtio', None): 'virtio-blk', ('sata', None): 'sata',
                  ('ide', None): 'ide'}


def machine_type(guest, bus, model):
    """hw_machine_type: where Windows' IDs are bound; pc for IDE.

    None leaves the cloud's default (Linux, or no ready Windows bus).
    """
    win = _windows(guest)
    name = _BOOTBUS_NAMES.get((bus, model if bus == 'scsi' else None))
    if win is not None and name is not None:
        ready = win.ready_bus((name,))
        if ready is not None:
            return ready.machine
    return 'pc' if bus == 'ide' else None


def _xen_pv_drivers(guest, layout):
    win = _windows(guest)
    return bool(win and _enabled_xen_drivers(win))


def _xen_class_filters(guest, layout):
    win = _windows(guest)
    return bool(win and win.xen_filters)


def _bcd_mismatch(guest, layout):
    win = _windows(guest)
    return bool(win and win.bcd_mismatch)


def _dirty_hive(guest, layout):
    win = _windows(guest)
    return bool(win and win.dirty_hives)


def _hibernated(guest, layout):
    win = _windows(guest)
    return bool(win and win.hibernated)


def _xvd_device_names(guest, layout):
    linux = _linux(guest)
    return bool(linux and linux.xvd_references)


def _xen_console(guest, layout):
    linux = _linux(guest)
    return bool(linux and linux.xen_console)


def _xen_console_blocks(guest, layout):
    # The default entry's command line decides when it is known; else any
    # boot loader line that ends with a Xen console.
    linux = _linux(guest)
    if not linux or not linux.xen_console:
        return False
    entry = linux.boot_entry
    if entry is not None and entry.cmdline is not None:
        return linux_inspect.xen_console_last(entry.cmdline)
    return any(linux_inspect.xen_console_last(line.split(': ', 1)[-1])
               for line in linux.xen_console)


def _xen_console_silent(guest, layout):
    return _xen_console(guest, layout) and not _xen_console_blocks(
        guest, layout)


def _pv_only_kernel(guest, layout):
    linux = _linux(guest)
    return bool(linux and linux.pv_only_kernel)


def _initramfs_unreadable(guest, layout):
    # Fail closed: an initramfs nobody could read may lack every driver.
    linux = _linux(guest)
    return bool(linux and linux.initramfs_unreadable)


def _initramfs_lacks_kvm_storage(guest, layout):
    linux = _linux(guest)
    return bool(linux and not linux.initramfs_unreadable and
                linux.kvm_buses == [])


def _xen_pv_guest(guest, layout):
    return bool(guest is not None and guest.pv_guest)


def _no_boot_code(guest, layout):
    # A BIOS boot needs code in the MBR; Xen PV guests (pygrub) never
    # had any. Only said of a disk with an operating system on it.
    if guest is None or not guest.os_type or guest.boot_code is not False:
        return False
    return firmware_type(guest, layout) == 'bios'


# Why a guest needs fixing before it boots (or works) on KVM: the short
# code reported in xen_import_fixup_reasons, and its test.
FIXUP_REASONS = (
    ('inspection-incomplete', _inspection_incomplete),
    ('xen-pv-drivers', _xen_pv_drivers),
    ('windows-no-boot-bus', _windows_no_boot_bus),
    ('xen-class-filters', _xen_class_filters),
    ('bcd-mismatch', _bcd_mismatch),
    ('dirty-hive', _dirty_hive),
    ('hibernated', _hibernated),
    ('xvd-device-names', _xvd_device_names),
    ('xen-console', _xen_console_blocks),
    ('pv-only-kernel', _pv_only_kernel),
    ('initramfs-unreadable', _initramfs_unreadable),
    ('initramfs-lacks-kvm-storage', _initramfs_lacks_kvm_storage),
    ('xen-pv-guest', _xen_pv_guest),
    ('no-boot-code', _no_boot_code),
)


def _mac_bindings(guest, layout):
    linux = _linux(guest)
    return bool(linux and linux.mac_bindings)


def _static_ip(guest, layout):
    win = _windows(guest)
    return bool(win and win.static_interfaces)


# What is worth knowing but does not stop a boot: a Xen console that is
# not the last console= (the kernel just logs there in vain), and NIC names or
# configuration bound to the Xen MAC (the guest boots; its first NIC may
# come up under another name). Reported in xen_import_findings.
FINDINGS = (
    ('xen-console', _xen_console_silent),
    ('mac-bound-network', _mac_bindings),
    ('static-ip', _static_ip),
)


def findings(guest, layout):
    return [code for code, test in FINDINGS if test(guest, layout)]


def fixup_reasons(guest, layout):
    return [code for code, test in FIXUP_REASONS if test(guest, layout)]


def _disk_bus(guest, opts):
    for test, (bus, model) in DISK_BUS_TABLE:
        if test(guest, opts):
            bus = bus(opts) if callable(bus) else bus
            model = model(opts) if callable(model) else model
            return bus, model
    raise AssertionError('the disk bus table has a catch-all row')


def _vif_model(guest):
    if guest is None or guest.os_type is None:
        return 'e1000'
    if guest.os_type == 'windows':
        return 'virtio' if guest.windows.virtio_available('netkvm') else (
            'e1000')
    return 'virtio'


def _windows_identity(win):
    """xen_import_xen_tools and xen_import_static_ip, when there is one.

    Both are cut at Glance's 255 characters by dropping whole items (the
    value then ends in '...'); the report keeps every item.
    """
    found = {}
    if win.xen_tools:
        found['xen_import_xen_tools'] = sanitize.joined(
            sanitize.list_item(t['generation']) +
            (':' + sanitize.list_item(t['version']) if t['version'] else '')
            for t in win.xen_tools)
    if win.static_interfaces:
        from glance_xen_import.inspect import staticip   # Windows only
        found['xen_import_static_ip'] = sanitize.joined(
            (staticip.describe(i) for i in win.static_interfaces),
            separator=';')
    return found


def decide(guest, layout, package, source, opts):
    """The Glance image properties (all values strings) for a guest.

    guest is inspect.GuestFacts (or None when inspection did not run),
    layout the formats.partitions.DiskLayout, package the OVF package
    info, source the pipeline's description of the input (kept as
    xen_import_source), opts an options.Options.
    """
    opts = opts if opts is not None else options_mod.Options()
    properties = {}
    if guest is not None and guest.os_type:
        properties['os_type'] = guest.os_type
        if guest.distro:
            properties['os_distro'] = guest.distro
        if guest.version:
            properties['os_version'] = guest.version
    bus, model = _disk_bus(guest, opts)
    properties['hw_disk_bus'] = bus
    if bus == 'scsi' and model:
        properties['hw_scsi_model'] = model
    machine = machine_type(guest, bus, model)
    if machine:
        properties['hw_machine_type'] = machine
    properties['hw_vif_model'] = _vif_model(guest)
    properties['hw_firmware_type'] = firmware_type(guest, layout)
    reasons = fixup_reasons(guest, layout)
    properties['xen_import_fixup_required'] = 'true' if reasons else 'false'
    if reasons:
        properties['xen_import_fixup_reasons'] = ','.join(reasons)
    found = findings(guest, layout)
    if found:
        properties['xen_import_findings'] = ','.join(found)
    win = _windows(guest)
    if win is not None and win.enabled_xen_services:
        properties['xen_import_xen_drivers'] = ','.join(
            win.enabled_xen_services)
    if win is not None:
        properties.update(_windows_identity(win))
    linux = _linux(guest)
    if _initramfs_lacks_kvm_storage(guest, layout):
        properties['xen_import_missing_drivers'] = ','.join(
            linux.missing_drivers)
        if linux.rescue_initramfs is not None:
            properties['xen_import_rescue_initramfs'] = (
                linux.rescue_initramfs.path)
    if guest is not None and guest.incomplete:
        properties['xen_import_inspection_errors'] = ','.join(
            guest.incomplete)[:MAX_PROPERTY_LENGTH]
    if source:
        properties['xen_import_source'] = source
    return properties
