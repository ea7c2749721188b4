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

"""Which KVM disk controllers Windows can start from, by its own rules.

Windows reads its boot disk only through a driver that is bound to the
disk's controller before Plug and Play runs:

- NT 6.1 and older: Control\\CriticalDeviceDatabase has a key named after
  one of the controller's hardware or compatible IDs (``PCI#VEN_...``);
  the first ID, in the order the PCI bus reports them, that has a key
  decides, and its ``Service`` value names the driver.
- NT 6.2 and later: DriverDatabase\\DeviceIds\\PCI\\<id> names an INF;
  DriverInfFiles\\<inf> its active driver package;
  DriverPackages\\<package>\\Descriptors\\PCI\\<id> the configuration; and
  ...\\Configurations\\<configuration> the ``Service``. The database is in
  SYSTEM on Windows 8/8.1 and in the DRIVERS hive from Windows 10 on.

The driver's service must then be boot-start (``Start`` 0) with no
non-zero ``StartOverride`` (Windows 8 and later demote a boot driver that
no device used at the last boot), and its file must exist. IDE needs the
same of its channel driver, atapi.

The IDs are those of the controller QEMU gives each bus on each machine
type, as Nova's libvirt driver asks for it: a virtio device is
transitional (1AF4:1001) on ``pc`` and modern-only (1AF4:1042) behind
q35's PCIe root ports; ``sata`` is ICH9's AHCI on either; q35 has no IDE.
"""

import dataclasses
import re

# (bus, machine type) in the order an import prefers them.
PREFERENCE = (
    ('virtio-scsi', 'pc'), ('virtio-scsi', 'q35'),
    ('virtio-blk', 'pc'), ('virtio-blk', 'q35'),
    ('sata', 'pc'), ('sata', 'q35'),
    ('ide', 'pc'),
)
# Drivers the controller's own driver hands the disks to.
CHANNEL_SERVICES = {'ide': ('atapi',)}
SERVICE_BOOT_START = 0
# INFs one device ID names in the DriverDatabase (a real one names a few).
MAX_INFS_PER_ID = 64
_SYSTEMROOT_PREFIX = re.compile(r'^(?:\\systemroot\\|%systemroot%\\)',
                                re.IGNORECASE)
_SAFE_FILE = re.compile(r'^[A-Za-z0-9_.\\ -]{1,240}$')


@dataclasses.dataclass(frozen=True)
class PciFunction:
    """What a PCI function reports: IDs as Windows' PCI bus driver forms them.

    ``subsystem`` is the subsystem ID then its vendor (SUBSYS_s(4)n(4));
    ``class_code`` is base class, subclass, programming interface.
    """

    vendor: str
    device: str
    subsystem: str
    revision: str
    class_code: str

    def ids(self):
        """Hardware IDs, then compatible IDs, most specific first.

        Without the ``PCI\\`` prefix, upper-case, as DeviceIds\\PCI names
        them (the CriticalDeviceDatabase adds ``PCI#``).
        """
        ven = 'VEN_' + self.vendor
        dev = '%s&DEV_%s' % (ven, self.device)
        cc, cc4 = 'CC_' + self.class_code, 'CC_' + self.class_code[:4]
        ordered = [
            '%s&SUBSYS_%s&REV_%s' % (dev, self.subsystem, self.revision),
            '%s&SUBSYS_%s' % (dev, self.subsystem),
            '%s&REV_%s' % (dev, self.revision), dev,
            '%s&%s' % (dev, cc), '%s&%s' % (dev, cc4),
            # Compatible IDs (the first two repeat hardware IDs).
            '%s&%s' % (ven, cc), '%s&%s' % (ven, cc4), ven, cc, cc4,
        ]
        return [i.upper() for i in ordered]


# What QEMU's devices report (hw/virtio/virtio-pci.c: a transitional
# device has the legacy ID, its virtio type as subsystem, revision 0; a
# modern one 0x1040 + type, QEMU's default subsystem 1AF4:1100,
# revision 1; hw/ide/piix.c; hw/ide/ich.c).
CONTROLLERS = {
    ('virtio-scsi', 'pc'): PciFunction('1AF4', '1004', '00081AF4', '00',
                                       '010000'),
    ('virtio-scsi', 'q35'): PciFunction('1AF4', '1048', '11001AF4', '01',
                                        '010000'),
    ('virtio-blk', 'pc'): PciFunction('1AF4', '1001', '00021AF4', '00',
                                      '010000'),
    ('virtio-blk', 'q35'): PciFunction('1AF4', '1042', '11001AF4', '01',
                                       '010000'),
    ('sata', 'pc'): PciFunction('8086', '2922', '11001AF4', '02', '010601'),
    ('sata', 'q35'): PciFunction('8086', '2922', '11001AF4', '02', '010601'),
    ('ide', 'pc'): PciFunction('8086', '7010', '11001AF4', '00', '010180'),
}


@dataclasses.dataclass
class Readiness:
    """Whether Windows can start from ``bus`` on ``machine``, and why."""

    bus: str
    machine: str
    ready: bool = False
    device_id: str | None = None     # the ID whose binding decided
    service: str | None = None
    reason: str = ''

    def to_dict(self):
        return dataclasses.asdict(self)


class Services(object):
    """Start, StartOverride and driver file of services, from one hive."""

    def __init__(self, hive, services_key, file_exists):
        self._hive = hive
        self._services = services_key
        self._file_exists = file_exists

    def problem(self, name):
        """Why service ``name`` does not load at boot; '' when it does."""
        hive = self._hive
        key = hive.key(name, self._services)
        if key is None:
            return 'no service %s' % name
        start = hive.dword(key, 'Start')
        if start != SERVICE_BOOT_START:
            return '%s Start is %s, not 0 (boot)' % (name, start)
        override = hive.key('StartOverride', key)
        for value in hive.value_names(override):
            number = hive.dword(override, value)
            if number:
                return '%s StartOverride\\%s is %d' % (name, value, number)
        image = hive.string(key, 'ImagePath') or (
            'System32\\drivers\\%s.sys' % name)
        relative = _SYSTEMROOT_PREFIX.sub('', image.strip())
        if (not _SAFE_FILE.match(relative) or '..' in relative
                or relative.startswith('\\')):
            return '%s ImagePath %r is not under the system root' % (
                name, image)
        if self._file_exists is not None and not self._file_exists(
                relative.replace('\\', '/')):
            return '%s has no file %s' % (name, relative)
        return ''


def critical_device_binding(hive, control, ids):
    """(id, service) of the first ID with a CriticalDeviceDatabase key."""
    database = hive.key('CriticalDeviceDatabase', control)
    if database is None:
        return None, None
    for device_id in ids:
        key = hive.key('PCI#' + device_id, database)
        if key is not None:
            return device_id, (hive.string(key, 'Service') or None)
    return None, None


def driver_database_binding(hive, ids):
    """(id, service) through the DriverDatabase chain, or (id, None)."""
    database = hive.key('DriverDatabase')
    if database is None:
        return None, None
    pci = hive.key('DeviceIds\\PCI', database)
    for device_id in ids:
        key = hive.key(device_id, pci)
        if key is None:
            continue
        names = hive.value_names(key)[:MAX_INFS_PER_ID]
        for inf in sorted(names, key=str.lower):
            service = _package_service(hive, database, inf, device_id)
            if service:
                return device_id, service
        return device_id, None
    return None, None


def _package_service(hive, database, inf, device_id):
    if not inf or '\\' in inf:
        return None
    files = hive.key('DriverInfFiles\\' + inf, database)
    package = hive.string(files, 'Active')
    if not package:
        listed = hive.strings(files, '')
        package = listed[0] if listed else None
    if not package or '\\' in package:
        return None
    base = hive.key('DriverPackages\\' + package, database)
    configuration = hive.string(
        hive.key('Descriptors\\PCI\\' + device_id, base), 'Configuration')
    if not configuration or '\\' in configuration:
        return None
    return hive.string(hive.key('Configurations\\' + configuration, base),
                       'Service')


def evaluate(system, drivers_hive, control, services, use_cdd):
    """[Readiness] for every (bus, machine) of PREFERENCE, in its order.

    ``services`` is a Services over SYSTEM's control set; ``use_cdd``
    picks the CriticalDeviceDatabase (NT 6.1 and older) over the
    DriverDatabase (from SYSTEM, else the DRIVERS hive).
    """
    found = []
    for bus, machine in PREFERENCE:
        ids = CONTROLLERS[(bus, machine)].ids()
        result = Readiness(bus, machine)
        if use_cdd:
            device_id, service = critical_device_binding(system, control,
                                                         ids)
            where = 'CriticalDeviceDatabase'
        else:
            device_id, service = None, None
            for hive in (system, drivers_hive):
                # From Windows 10 SYSTEM\DriverDatabase is only a link
                # to the DRIVERS hive: the one with DeviceIds counts.
                if hive is not None and (
                        hive.key('DriverDatabase\\DeviceIds') is not None):
                    device_id, service = driver_database_binding(hive, ids)
                    break
            where = 'DriverDatabase'
        result.device_id, result.service = device_id, service
        if device_id is None:
            result.reason = 'no %s entry for %s' % (where, ids[0])
        elif not service:
            result.reason = '%s entry %s leads to no service' % (
                where, device_id)
        else:
            problems = [services.problem(name) for name in
                        (service,) + CHANNEL_SERVICES.get(bus, ())]
            problems = [p for p in problems if p]
            result.ready = not problems
            result.reason = '; '.join(problems) or 'bound through %s %s' % (
                where, device_id)
        found.append(result)
    return found
