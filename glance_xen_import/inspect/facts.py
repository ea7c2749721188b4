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


@dataclasses.dataclass
class ServiceState:
    """A Windows service key (SYSTEM\\ControlSetNNN\\Services\\<name>)."""
    name: str
    start: int | None = None
    type: int | None = None

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
    provider: str | None = None
    class_name: str | None = None
    catalog: str | None = None
    family: str | None = None
    driver_ver: str | None = None


@dataclasses.dataclass
class UnplugRequest:
    """Values asking QEMU to unplug the emulated disks or NICs."""
    key: str             # e.g. 'XEN\\ForceUnplug', under Services
    values: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StaticInterface:
    """A TCP/IP interface configured by hand (EnableDHCP=0)."""
    guid: str
    addresses: list[str] = dataclasses.field(default_factory=list)
    gateways: list[str] = dataclasses.field(default_factory=list)
    dns: list[str] = dataclasses.field(default_factory=list)
    ipv6_dns: list[str] = dataclasses.field(default_factory=list)
    # The NIC's driver (Class\{4d36e972...}\NNNN ComponentId) and
    # whether it is a Xen PV NIC.
    component_id: str | None = None
    xen_nic: bool = False
    # Entries that were not IP addresses (dropped, counted).
    invalid: int = 0


@dataclasses.dataclass
class VirtioDriver:
    """What the registry and driver store say about one virtio driver."""
    name: str
    service: ServiceState | None = None
    start_override: int | None = None
    device_ids: list[str] = dataclasses.field(default_factory=list)
    staged: bool = False
    boot_ready: bool = False


@dataclasses.dataclass
class BcdDevice:
    """One device element of a BCD object, compared with the disk."""
    object_id: str
    element: str
    device_type: str
    style: str | None = None
    partition: str | None = None
    disk: str | None = None
    checked: bool = False
    matches: bool | None = None


@dataclasses.dataclass
class BcdStore:
    location: str
    devices: list[BcdDevice] = dataclasses.field(default_factory=list)
    dirty: bool = False

    @property
    def mismatch(self):
        return any(d.checked and d.matches is False for d in self.devices)


@dataclasses.dataclass
class WindowsFacts:
    location: str
    systemroot: str
    product_name: str | None = None
    current_version: str | None = None
    major_version: int | None = None
    minor_version: int | None = None
    build: str | None = None
    installation_type: str | None = None
    edition: str | None = None
    architecture: str | None = None
    control_set: str | None = None
    xen_services: list[ServiceState] = dataclasses.field(
        default_factory=list)
    xen_filters: list[ClassFilter] = dataclasses.field(
        default_factory=list)
    xen_force_unplug: bool = False
    xen_products: list[str] = dataclasses.field(default_factory=list)
    xen_product_versions: dict[str, str] = dataclasses.field(
        default_factory=dict)
    # Unplug requests still asking for something, the legacy event
    # channel driver's NOPVBoot (None: no such driver), PV devices seen
    # under Enum, and the generations of Xen tools (xentools.classify).
    xen_unplug: list[UnplugRequest] = dataclasses.field(
        default_factory=list)
    xen_nopvboot: bool | None = None
    xen_hardware_ids: list[str] = dataclasses.field(
        default_factory=list)
    xen_tools: list[dict] = dataclasses.field(default_factory=list)
    static_interfaces: list[StaticInterface] = dataclasses.field(
        default_factory=list)
    driver_packages: list[DriverPackage] = dataclasses.field(
        default_factory=list)
    virtio: dict[str, VirtioDriver] = dataclasses.field(
        default_factory=dict)
    # inspect/bootbus.Readiness for each (bus, machine type), preferred
    # first: whether Windows' own rules let it start from that controller.
    boot_buses: list = dataclasses.field(default_factory=list)
    # Storage drivers with a non-zero StartOverride (Windows 8+).
    demoted_storage: list[str] = dataclasses.field(default_factory=list)
    dirty_hives: list[str] = dataclasses.field(default_factory=list)
    hibernated: bool = False
    hiberfile_signature: str | None = None
    bcd: list[BcdStore] = dataclasses.field(default_factory=list)

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

    def ready_bus(self, buses=None):
        """The first boot-ready Readiness (of ``buses`` if given), or None."""
        for readiness in self.boot_buses:
            if readiness.ready and (buses is None or readiness.bus in buses):
                return readiness
        return None

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
    evidence: str | None = None


@dataclasses.dataclass
class BootEntry:
    """The entry the guest's boot loader starts by default.

    Paths are as the config writes them (relative to the file system
    the boot loader reads: the root's or a separate /boot).
    """
    source: str
    kind: str   # grub2, bls, grub-legacy or symlink
    title: str | None = None
    kernel: str | None = None
    initrds: list[str] = dataclasses.field(default_factory=list)
    cmdline: str | None = None
    version: str | None = None


@dataclasses.dataclass
class Initramfs:
    """An initramfs, summarised; complete False if it was not read."""
    path: str
    generator: str | None = None
    compressions: list[str] = dataclasses.field(default_factory=list)
    modules: int = 0
    kernel_versions: list[str] = dataclasses.field(
        default_factory=list)
    complete: bool = False
    reason: str | None = None
    # KVM storage buses it can boot from; the drivers each one lacks.
    buses: list[str] = dataclasses.field(default_factory=list)
    missing: dict[str, list[str]] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass
class LinuxFacts:
    location: str
    release_file: str | None = None
    os_release: dict[str, str] = dataclasses.field(
        default_factory=dict)
    release_text: str | None = None
    files_read: list[str] = dataclasses.field(default_factory=list)
    xvd_references: list[str] = dataclasses.field(
        default_factory=list)
    xen_console: list[str] = dataclasses.field(default_factory=list)
    # 'location:path:line' of lines binding a NIC to its Xen MAC address.
    mac_bindings: list[str] = dataclasses.field(default_factory=list)
    kernels: list[Kernel] = dataclasses.field(default_factory=list)
    boot_location: str | None = None
    boot_entry: BootEntry | None = None
    initramfs: Initramfs | None = None
    # KVM storage buses (virtio-scsi, virtio-blk, ide, sata) the default
    # entry boots from, best first; None when nobody could tell.
    kvm_buses: list[str] | None = None
    # Drivers the best bus lacks (its primary drivers and dependencies).
    missing_drivers: list[str] = dataclasses.field(
        default_factory=list)
    # A dracut rescue image (generic) that holds what the default lacks.
    rescue_initramfs: Initramfs | None = None

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
    os_type: str | None = None
    distro: str | None = None
    version: str | None = None
    product_name: str | None = None
    architecture: str | None = None
    windows: WindowsFacts | None = None
    linux: LinuxFacts | None = None
    volumes: list[VolumeInfo] = dataclasses.field(default_factory=list)
    efi_loaders: list[str] = dataclasses.field(default_factory=list)
    boot_code: bool | None = None
    pv_guest: bool = False
    # The firmware the VM booted with on Xen when its package says so (an
    # XVA's HVM_boot_params): 'bios' or 'uefi'; None for OVA.
    vm_firmware: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # What inspection could not read, in short fixed words ('SYSTEM hive
    # unreadable'): the facts above may then be missing what matters.
    incomplete: list[str] = dataclasses.field(default_factory=list)

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
