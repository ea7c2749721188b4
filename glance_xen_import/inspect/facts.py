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

"""What inspection found in a guest, as plain data.

Facts only: deciding what they mean for the image (properties, whether a
fixup is needed) is policy.py's job, so a fixup can change the disk, run
inspection again and hand the new facts to the same policy.
"""

import dataclasses
import typing


@dataclasses.dataclass
class ServiceState:
    """A Windows service key (SYSTEM\\ControlSetNNN\\Services\\<name>)."""
    name: str
    start: typing.Optional[int] = None
    type: typing.Optional[int] = None

    @property
    def enabled(self):
        # 4 is SERVICE_DISABLED; a key without Start does not load.
        return self.start is not None and self.start != 4


@dataclasses.dataclass
class ClassFilter:
    """A Xen driver named in a device class's Upper/LowerFilters."""
    class_guid: str
    value: str
    driver: str


@dataclasses.dataclass
class DriverPackage:
    """A published third-party driver (\\Windows\\inf\\oemN.inf)."""
    inf: str
    provider: typing.Optional[str] = None
    class_name: typing.Optional[str] = None
    catalog: typing.Optional[str] = None
    family: typing.Optional[str] = None
    driver_ver: typing.Optional[str] = None


@dataclasses.dataclass
class UnplugRequest:
    """Values asking QEMU to unplug the emulated disks or NICs."""
    key: str             # e.g. 'XEN\\ForceUnplug', under Services
    values: typing.List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StaticInterface:
    """A TCP/IP interface configured by hand (EnableDHCP=0)."""
    guid: str
    addresses: typing.List[str] = dataclasses.field(default_factory=list)
    gateways: typing.List[str] = dataclasses.field(default_factory=list)
    dns: typing.List[str] = dataclasses.field(default_factory=list)
    ipv6_dns: typing.List[str] = dataclasses.field(default_factory=list)
    # The NIC's driver (Class\{4d36e972...}\NNNN ComponentId) and
    # whether it is a Xen PV NIC.
    component_id: typing.Optional[str] = None
    xen_nic: bool = False
    # Entries that were not IP addresses (dropped, counted).
    invalid: int = 0


@dataclasses.dataclass
class VirtioDriver:
    """What the registry and driver store say about one virtio driver."""
    name: str
    service: typing.Optional[ServiceState] = None
    start_override: typing.Optional[int] = None
    device_ids: typing.List[str] = dataclasses.field(default_factory=list)
    staged: bool = False
    boot_ready: bool = False


@dataclasses.dataclass
class BcdDevice:
    """One device element of a BCD object, compared with the disk."""
    object_id: str
    element: str
    device_type: str
    style: typing.Optional[str] = None
    partition: typing.Optional[str] = None
    disk: typing.Optional[str] = None
    checked: bool = False
    matches: typing.Optional[bool] = None


@dataclasses.dataclass
class BcdStore:
    location: str
    devices: typing.List[BcdDevice] = dataclasses.field(default_factory=list)
    dirty: bool = False

    @property
    def mismatch(self):
        return any(d.checked and d.matches is False for d in self.devices)


@dataclasses.dataclass
class WindowsFacts:
    location: str
    systemroot: str
    product_name: typing.Optional[str] = None
    current_version: typing.Optional[str] = None
    major_version: typing.Optional[int] = None
    minor_version: typing.Optional[int] = None
    build: typing.Optional[str] = None
    installation_type: typing.Optional[str] = None
    edition: typing.Optional[str] = None
    architecture: typing.Optional[str] = None
    control_set: typing.Optional[str] = None
    xen_services: typing.List[ServiceState] = dataclasses.field(
        default_factory=list)
    xen_filters: typing.List[ClassFilter] = dataclasses.field(
        default_factory=list)
    xen_force_unplug: bool = False
    xen_products: typing.List[str] = dataclasses.field(default_factory=list)
    xen_product_versions: typing.Dict[str, str] = dataclasses.field(
        default_factory=dict)
    # Unplug requests still asking for something, the legacy event
    # channel driver's NOPVBoot (None: no such driver), PV devices seen
    # under Enum, and the generations of Xen tools (xentools.classify).
    xen_unplug: typing.List[UnplugRequest] = dataclasses.field(
        default_factory=list)
    xen_nopvboot: typing.Optional[bool] = None
    xen_hardware_ids: typing.List[str] = dataclasses.field(
        default_factory=list)
    xen_tools: typing.List[dict] = dataclasses.field(default_factory=list)
    static_interfaces: typing.List[StaticInterface] = dataclasses.field(
        default_factory=list)
    driver_packages: typing.List[DriverPackage] = dataclasses.field(
        default_factory=list)
    virtio: typing.Dict[str, VirtioDriver] = dataclasses.field(
        default_factory=dict)
    dirty_hives: typing.List[str] = dataclasses.field(default_factory=list)
    hibernated: bool = False
    hiberfile_signature: typing.Optional[str] = None
    bcd: typing.List[BcdStore] = dataclasses.field(default_factory=list)

    @property
    def version(self):
        if self.major_version is None:
            return None
        return '%d.%d' % (self.major_version, self.minor_version or 0)

    @property
    def enabled_xen_services(self):
        return sorted({s.name.lower() for s in self.xen_services
                       if s.enabled})

    @property
    def bcd_mismatch(self):
        return any(store.mismatch for store in self.bcd)

    def virtio_boot_ready(self, name):
        driver = self.virtio.get(name)
        return driver is not None and driver.boot_ready

    def virtio_available(self, name):
        driver = self.virtio.get(name)
        if driver is None:
            return False
        return driver.staged or (driver.service is not None and
                                 driver.service.enabled)


@dataclasses.dataclass
class Kernel:
    name: str
    pv_only: bool = False
    evidence: typing.Optional[str] = None


@dataclasses.dataclass
class BootEntry:
    """The entry the guest's boot loader starts by default.

    Paths are as the config writes them (relative to the file system
    the boot loader reads: the root's or a separate /boot).
    """
    source: str
    kind: str   # grub2, bls, grub-legacy or symlink
    title: typing.Optional[str] = None
    kernel: typing.Optional[str] = None
    initrds: typing.List[str] = dataclasses.field(default_factory=list)
    cmdline: typing.Optional[str] = None
    version: typing.Optional[str] = None


@dataclasses.dataclass
class Initramfs:
    """An initramfs, summarised; complete False if it was not read."""
    path: str
    generator: typing.Optional[str] = None
    compressions: typing.List[str] = dataclasses.field(default_factory=list)
    modules: int = 0
    kernel_versions: typing.List[str] = dataclasses.field(
        default_factory=list)
    complete: bool = False
    reason: typing.Optional[str] = None
    # KVM storage buses it can boot from; the drivers each one lacks.
    buses: typing.List[str] = dataclasses.field(default_factory=list)
    missing: typing.Dict[str, typing.List[str]] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass
class LinuxFacts:
    location: str
    release_file: typing.Optional[str] = None
    os_release: typing.Dict[str, str] = dataclasses.field(
        default_factory=dict)
    release_text: typing.Optional[str] = None
    files_read: typing.List[str] = dataclasses.field(default_factory=list)
    xvd_references: typing.List[str] = dataclasses.field(
        default_factory=list)
    xen_console: typing.List[str] = dataclasses.field(default_factory=list)
    # 'location:path:line' of lines binding a NIC to its Xen MAC address.
    mac_bindings: typing.List[str] = dataclasses.field(default_factory=list)
    kernels: typing.List[Kernel] = dataclasses.field(default_factory=list)
    boot_location: typing.Optional[str] = None
    boot_entry: typing.Optional[BootEntry] = None
    initramfs: typing.Optional[Initramfs] = None
    # KVM storage buses (virtio-scsi, virtio-blk, ide, sata) the default
    # entry boots from, best first; None when nobody could tell.
    kvm_buses: typing.Optional[typing.List[str]] = None
    # Drivers the best bus lacks (its primary drivers and dependencies).
    missing_drivers: typing.List[str] = dataclasses.field(
        default_factory=list)
    # A dracut rescue image (generic) that holds what the default lacks.
    rescue_initramfs: typing.Optional[Initramfs] = None

    @property
    def pv_only_kernel(self):
        return bool(self.kernels) and all(k.pv_only for k in self.kernels)

    @property
    def initramfs_unreadable(self):
        return self.initramfs is not None and not self.initramfs.complete


@dataclasses.dataclass
class VolumeInfo:
    location: str
    kind: str
    # False for a volume whose signature was found but that did not open.
    readable: bool = True


@dataclasses.dataclass
class GuestFacts:
    os_type: typing.Optional[str] = None
    distro: typing.Optional[str] = None
    version: typing.Optional[str] = None
    product_name: typing.Optional[str] = None
    architecture: typing.Optional[str] = None
    windows: typing.Optional[WindowsFacts] = None
    linux: typing.Optional[LinuxFacts] = None
    volumes: typing.List[VolumeInfo] = dataclasses.field(default_factory=list)
    efi_loaders: typing.List[str] = dataclasses.field(default_factory=list)
    boot_code: typing.Optional[bool] = None
    pv_guest: bool = False
    # The firmware the VM booted with on Xen when its package says so (an
    # XVA's HVM_boot_params): 'bios' or 'uefi'; None for OVA.
    vm_firmware: typing.Optional[str] = None
    notes: typing.List[str] = dataclasses.field(default_factory=list)
    # What inspection could not read, in short fixed words ('SYSTEM hive
    # unreadable'): the facts above may then be missing what matters.
    incomplete: typing.List[str] = dataclasses.field(default_factory=list)

    def to_dict(self):
        """JSON-serialisable form for the CLI and task reports."""
        data = dataclasses.asdict(self)
        if self.windows is not None:
            data['windows']['version'] = self.windows.version
            data['windows']['bcd_mismatch'] = self.windows.bcd_mismatch
            data['windows']['enabled_xen_services'] = (
                self.windows.enabled_xen_services)
        if self.linux is not None:
            data['linux']['pv_only_kernel'] = self.linux.pv_only_kernel
        return data
