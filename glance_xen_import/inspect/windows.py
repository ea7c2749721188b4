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

"""Windows: version, Xen PV drivers, virtio readiness, boot state.

Read from the offline SOFTWARE, SYSTEM and (Windows 10+) DRIVERS hives,
\\Windows\\inf\\oem*.inf, the driver store, hiberfil.sys and the BCD.
"""

import re

from glance_xen_import.inspect import bcd
from glance_xen_import.inspect import bootbus
from glance_xen_import.inspect import drivers
from glance_xen_import.inspect import facts
from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import inf
from glance_xen_import.inspect import registry
from glance_xen_import.inspect import staticip
from glance_xen_import.inspect import steps
from glance_xen_import.inspect import xentools

SYSTEMROOT_NAMES = ('windows', 'winnt')
# Published INFs examined and the size of each (they are a few KiB).
MAX_OEM_INFS = 4096
MAX_INF_BYTES = 1024 * 1024
# BCD stores are a few dozen KiB.
MAX_BCD_BYTES = 16 * 1024 * 1024
# ntfs-3g reads this much of hiberfil.sys to decide; so do we.
HIBERFILE_HEADER = 4096

_OEM_INF = re.compile(r'^oem\d+\.inf$', re.IGNORECASE)
_CURRENT_VERSION = 'Microsoft\\Windows NT\\CurrentVersion'
_UNINSTALL_KEYS = (
    'Microsoft\\Windows\\CurrentVersion\\Uninstall',
    'Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall',
)
_MSI_PRODUCTS = 'Classes\\Installer\\Products'
_ARCHITECTURES = {'amd64': 'x86_64', 'x86': 'i686', 'arm64': 'aarch64'}
# On NT 6.1 and older a boot-start storage driver is bound to its device
# through the CriticalDeviceDatabase; from 6.2 through the DriverDatabase.
_LAST_CDD_VERSION = (6, 1)


def find_systemroot(fs):
    """'/Windows' (as spelt on disk) if fs holds an installed Windows."""
    for name in fs.listdir('/'):
        if name.lower() not in SYSTEMROOT_NAMES:
            continue
        if fs.is_file('/%s/System32/config/SYSTEM' % name):
            return '/' + name
    return None


def inspect(fs, systemroot, volumes, identity, notes, incomplete):
    """facts.WindowsFacts for the Windows installed at systemroot on fs.

    What could not be read is appended to ``incomplete`` (e.g. 'SYSTEM
    hive unreadable'); the facts then say nothing about it.
    """
    win = facts.WindowsFacts(location=fs.location, systemroot=systemroot)
    steps.attempt(incomplete, notes, 'registry', _read_hives, fs,
                  systemroot, win, notes, incomplete)
    steps.attempt(incomplete, notes, 'driver packages',
                  _read_driver_packages, fs, systemroot, win)
    steps.attempt(incomplete, notes, 'hiberfil.sys', _read_hiberfile, fs,
                  win, incomplete)
    win.bcd = steps.attempt(incomplete, notes, 'BCD', _read_bcd_stores,
                            volumes, identity, notes, incomplete) or []
    win.xen_tools = xentools.classify(
        [(name, win.xen_product_versions.get(name))
         for name in win.xen_products],
        [(p.provider, p.catalog, p.driver_ver) for p in win.driver_packages
         if p.family == 'xen'],
        [s.name for s in win.xen_services])
    return win


def _open_hive(fs, path, notes, incomplete, required):
    name = path.rsplit('/', 1)[-1]
    hive = registry.open_hive(fs, path, notes)
    if hive is None and (required or fs.exists(path)):
        incomplete.append('%s hive unreadable' % name)
    return hive


def _read_hives(fs, systemroot, win, notes, incomplete):
    config = systemroot + '/System32/config/'
    hives = []
    try:
        # DRIVERS only exists from Windows 8 on.
        software, system, drivers_hive = hives = [
            _open_hive(fs, config + name, notes, incomplete, required)
            for name, required in (('SOFTWARE', True), ('SYSTEM', True),
                                   ('DRIVERS', False))]
        opened = [h for h in hives if h]
        win.dirty_hives = sorted(h.name.rsplit('/', 1)[-1]
                                 for h in opened if h.dirty)
        if software is not None:
            _read_software(software, win)
        else:
            notes.append('no readable SOFTWARE hive under %s' % systemroot)
        if system is not None:
            _read_system(system, drivers_hive, win, notes,
                         lambda path: fs.is_file(systemroot + '/' + path))
        else:
            notes.append('no readable SYSTEM hive under %s' % systemroot)
        for hive in opened:
            if hive.read_errors:
                incomplete.append('%s hive unreadable'
                                  % hive.name.rsplit('/', 1)[-1])
    finally:
        for hive in hives:
            if hive is not None:
                hive.close()


# -- SOFTWARE --------------------------------------------------------------

def _read_software(hive, win):
    current = hive.key(_CURRENT_VERSION)
    win.product_name = hive.string(current, 'ProductName')
    win.current_version = hive.string(current, 'CurrentVersion')
    win.build = hive.string(current, 'CurrentBuildNumber')
    win.installation_type = hive.string(current, 'InstallationType')
    win.edition = hive.string(current, 'EditionID')
    major = hive.dword(current, 'CurrentMajorVersionNumber')
    minor = hive.dword(current, 'CurrentMinorVersionNumber')
    if major is None and win.current_version:
        # Before Windows 10 the version is only the "6.1" string (and
        # Windows 10 still writes "6.3" there for old programs).
        match = re.match(r'^\s*(\d+)\.(\d+)', win.current_version)
        if match:
            major, minor = int(match.group(1)), int(match.group(2))
    win.major_version = major
    win.minor_version = minor if major is not None else None
    for path in _UNINSTALL_KEYS:
        uninstall = hive.key(path)
        for entry in hive.subkeys(uninstall):
            # The legacy tools' NSIS key ("Citrix XenTools") may have no
            # DisplayName: its name says it then.
            _add_product(win, hive.string(entry, 'DisplayName')
                         or hive.name_of(entry),
                         hive.string(entry, 'DisplayVersion'))
    # Windows Installer's own registration, which an MSI hidden from
    # Programs and Features (as the PV drivers' MSIs are) still has.
    for entry in hive.subkeys(hive.key(_MSI_PRODUCTS)):
        _add_product(win, hive.string(entry, 'ProductName'),
                     _msi_version(hive.dword(entry, 'Version')))


def _add_product(win, name, version):
    if not name or not drivers.XEN_PRODUCT_PATTERN.search(name):
        return
    if name not in win.xen_products:
        win.xen_products.append(name)
        if version:
            win.xen_product_versions[name] = version


def _msi_version(number):
    # Installer\Products Version: major << 24 | minor << 16 | build.
    if number is None:
        return None
    return '%d.%d.%d' % (number >> 24, (number >> 16) & 0xFF,
                         number & 0xFFFF)


# -- SYSTEM ----------------------------------------------------------------

def _control_set(hive, notes):
    select = hive.key('Select')
    number = hive.dword(select, 'Current')
    if number is not None and 0 < number < 1000:
        name = 'ControlSet%03d' % number
        if hive.key(name) is not None:
            return name
    notes.append('SYSTEM\\Select\\Current does not name a control set; '
                 'using ControlSet001')
    return 'ControlSet001' if hive.key('ControlSet001') is not None else None


def _service(hive, services, name):
    key = hive.key(name, services)
    if key is None:
        return None
    return facts.ServiceState(name=hive.name_of(key) or name,
                              start=hive.dword(key, 'Start'),
                              type=hive.dword(key, 'Type'))


def _read_system(hive, drivers_hive, win, notes, file_exists=None):
    """Facts from SYSTEM (and DRIVERS).

    ``file_exists(path)`` says whether a file under the system root exists
    (path relative to it, '/'-separated); None checks no files.
    """
    control_set = _control_set(hive, notes)
    win.control_set = control_set
    if control_set is None:
        return
    root = hive.key(control_set)
    services = hive.key('Services', root)
    control = hive.key('Control', root)
    arch = hive.string(hive.key('Session Manager\\Environment', control),
                       'PROCESSOR_ARCHITECTURE')
    if arch:
        win.architecture = _ARCHITECTURES.get(arch.lower(), arch)
    for name in sorted(drivers.ALL_XEN_SERVICES):
        state = _service(hive, services, name)
        if state is not None:
            win.xen_services.append(state)
    win.xen_force_unplug = hive.key('XEN\\ForceUnplug', services) is not None
    _read_xen_traps(hive, services, win)
    win.xen_hardware_ids = _xen_hardware_ids(hive, root)
    win.static_interfaces = staticip.read(hive, services, control)
    classes = hive.key('Class', control)
    for class_key in hive.subkeys(classes):
        class_guid = hive.name_of(class_key).lower()
        for value in ('UpperFilters', 'LowerFilters'):
            for entry in hive.strings(class_key, value):
                if entry.strip().lower() in drivers.ALL_XEN_SERVICES:
                    win.xen_filters.append(facts.ClassFilter(
                        class_guid=class_guid, value=value,
                        driver=entry.strip()))
    _read_virtio(hive, drivers_hive, services, control, win, notes,
                 file_exists)


def _read_xen_traps(hive, services, win):
    """Unplug requests still asking for something; legacy NOPVBoot."""
    for service, subkey in xentools.UNPLUG_KEYS:
        key = hive.key(service + '\\' + subkey, services)
        asking = [name for name in hive.value_names(key)
                  if _asks(hive.raw(key, name))]
        if asking:
            win.xen_unplug.append(facts.UnplugRequest(
                key='%s\\%s' % (service, subkey), values=sorted(asking)))
    for name in xentools.LEGACY_EVTCHN:
        key = hive.key(name, services)
        if key is not None:
            win.xen_nopvboot = any(
                v.lower() == xentools.NOPVBOOT.lower()
                for v in hive.value_names(key))


def _asks(raw):
    # A DWORD other than 0 or a list naming a driver asks for an unplug.
    if raw is None:
        return False
    number = registry.decode_dword(raw)
    if raw[0] in (registry.REG_DWORD, registry.REG_DWORD_BIG_ENDIAN):
        return bool(number)
    return bool(registry.decode_multi_string(raw)) or (
        raw[0] == registry.REG_BINARY and any(raw[1]))


def _xen_hardware_ids(hive, root):
    """Enum paths of the Xen PV devices the guest has seen."""
    found = []
    enum = hive.key('Enum', root)
    for bus in hive.subkeys(enum):
        bus_name = hive.name_of(bus)
        if not any(p.startswith(bus_name.lower() + '\\')
                   for p in xentools.HARDWARE_ID_PREFIXES):
            continue
        for device in hive.subkey_names(bus):
            path = '%s\\%s' % (bus_name, device)
            if path.lower().startswith(xentools.HARDWARE_ID_PREFIXES):
                found.append(path)
    return sorted(found)


def _driver_database_ids(hives):
    """virtio driver -> PCI ids in DriverDatabase\\DeviceIds\\PCI.

    Windows 8/8.1 keep the DriverDatabase in SYSTEM; Windows 10 moved it
    to the DRIVERS hive (SYSTEM\\DriverDatabase is then only a link).
    """
    found = {}
    present = False
    for hive in hives:
        if hive is None:
            continue
        database = hive.key('DriverDatabase')
        if database is None:
            continue
        present = True
        for name in hive.subkey_names(hive.key('DeviceIds\\PCI', database)):
            driver = drivers.virtio_driver_for_pci_id(name)
            if driver:
                found.setdefault(driver, []).append(name)
    return present, found


def _critical_device_ids(hive, control):
    found = {}
    database = hive.key('CriticalDeviceDatabase', control)
    for key in hive.subkeys(database):
        name = hive.name_of(key)
        driver = drivers.virtio_driver_for_pci_id(name)
        service = (hive.string(key, 'Service') or '').lower()
        if driver and service == driver:
            found.setdefault(driver, []).append(name)
    return found


def _start_override(hive, services, name):
    key = hive.key(name + '\\StartOverride', services)
    values = [hive.dword(key, value) for value in hive.value_names(key)]
    values = [v for v in values if v is not None]
    # Windows 8+ demotes a boot driver no device used at the last boot.
    return max(values) if values else None


# The bus each virtio storage driver serves (inspect/bootbus.py).
_VIRTIO_BUS = {'vioscsi': 'virtio-scsi', 'viostor': 'virtio-blk'}


def _read_virtio(hive, drivers_hive, services, control, win, notes,
                 file_exists):
    has_database, database_ids = _driver_database_ids((hive, drivers_hive))
    cdd_ids = _critical_device_ids(hive, control)
    version = (win.major_version, win.minor_version or 0)
    if win.major_version is not None:
        use_cdd = version <= _LAST_CDD_VERSION
    else:
        use_cdd = not has_database
    if not use_cdd and not has_database:
        notes.append('no DriverDatabase in SYSTEM or DRIVERS: no storage '
                     'driver can be shown bound to a controller')
    win.boot_buses = bootbus.evaluate(
        hive, drivers_hive, control,
        bootbus.Services(hive, services, file_exists), use_cdd)
    win.demoted_storage = sorted(
        name for name in drivers.STORAGE_SERVICES
        if _start_override(hive, services, name))
    for name in drivers.VIRTIO_DEVICE_IDS:
        driver = facts.VirtioDriver(name=name)
        driver.service = _service(hive, services, name)
        driver.start_override = _start_override(hive, services, name)
        ids = cdd_ids.get(name, []) if use_cdd else database_ids.get(name, [])
        driver.device_ids = sorted(ids)
        # Boot-ready: Windows' rules let it start from the bus the driver
        # serves on some machine type.
        driver.boot_ready = any(
            r.ready and (r.service or '').lower() == name
            for r in win.boot_buses if r.bus == _VIRTIO_BUS.get(name))
        win.virtio[name] = driver


# -- files -----------------------------------------------------------------

def _read_driver_packages(fs, systemroot, win):
    inf_dir = systemroot + '/inf'
    names = [n for n in fs.listdir(inf_dir) if _OEM_INF.match(n)]
    for name in sorted(names, key=lambda n: int(n[3:-4]))[:MAX_OEM_INFS]:
        try:
            data = fs.read(inf_dir + '/' + name, MAX_INF_BYTES)
        except filesystem.FileTooLarge:
            continue
        if not data:
            continue
        provider, class_name, catalog, driver_ver = inf.version_details(
            data)
        family = drivers.package_family(provider, catalog)
        if family is None:
            continue
        win.driver_packages.append(facts.DriverPackage(
            inf=name, provider=provider, class_name=class_name,
            catalog=catalog, family=family, driver_ver=driver_ver))
        if family in win.virtio:
            win.virtio[family].staged = True
    repository = systemroot + '/System32/DriverStore/FileRepository'
    for entry in fs.listdir(repository):
        stem = entry.lower().split('.inf_', 1)[0]
        if stem in win.virtio and '.inf_' in entry.lower():
            win.virtio[stem].staged = True


def _read_hiberfile(fs, win, incomplete):
    name = fs.find('/', 'hiberfil.sys')
    if name is None:
        return
    header = fs.read('/' + name, 0, length=HIBERFILE_HEADER)
    if header is None:
        # Whether Windows is hibernated, which forbids any write, is
        # then unknown.
        incomplete.append('hiberfil.sys unreadable')
        return
    if not header:
        return
    signature = header[:4]
    win.hiberfile_signature = signature.decode('latin-1')
    # ntfs-3g refuses a volume whose hiberfil.sys starts 'hibr' or 'HIBR'
    # (Windows 8+ fast startup writes the upper-case one); after a resume
    # Windows leaves 'wake' or zeros, which are safe.
    win.hibernated = signature.lower() == b'hibr'


def _read_bcd_stores(volumes, identity, notes, incomplete):
    stores = []
    for fs in volumes:
        if fs.kind == 'ntfs':
            path = '/Boot/BCD'
        elif fs.kind == 'fat':
            path = '/EFI/Microsoft/Boot/BCD'
        else:
            continue
        if not fs.is_file(path):
            continue
        hive = registry.open_hive(fs, path, notes, limit=MAX_BCD_BYTES)
        if hive is None:
            incomplete.append('BCD on %s unreadable' % fs.location)
            continue
        try:
            stores.append(bcd.read_store(
                hive, '%s:%s' % (fs.location, path), identity))
        finally:
            hive.close()
        if hive.read_errors:
            incomplete.append('BCD on %s unreadable' % fs.location)
    return stores
