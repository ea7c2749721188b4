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

"""What a conversion found and decided, for the CLI and the plugin."""

import dataclasses

from glance_xen_import import sanitize


# Platform flags worth passing on: they say what the guest was used to.
PLATFORM_HINTS = ('viridian', 'nx', 'pae', 'acpi', 'apic', 'hpet',
                  'secureboot', 'cores-per-socket', 'device_id',
                  'timeoffset')


def vm_sizing(vcpus, memory_bytes, platform):
    """The VM facts of a package: vCPUs, memory and platform flags."""
    flags = {k: v for k, v in dict(platform or ()).items()
             if k in PLATFORM_HINTS}
    return {'vcpus': vcpus, 'memory_bytes': memory_bytes,
            'platform': dict(sorted(flags.items()))}


@dataclasses.dataclass(frozen=True)
class PackageInfo:
    """Facts about the package taken from the OVF descriptor."""

    name: str
    virtual_system_type: str
    os_id: int
    os_description: str
    manifest: str        # 'verified', 'absent' or 'ignored'
    signed: bool         # a .cert member was present; it is not checked
    kind: str = 'ova'    # 'ova' or 'xva'
    pv: bool = None      # XVA: the VM record's domain type is PV
    firmware: str = None  # 'bios' or 'uefi' when the VM's record says
    vm: dict = None      # vcpus, memory_bytes, platform (vm_sizing)

    @classmethod
    def from_package(cls, package):
        """From a formats.package.Package, OVA or XVA."""
        result = package.result
        descriptor = result.descriptor
        vm = vm_sizing(descriptor.vcpus, descriptor.memory_bytes,
                       descriptor.platform)
        if package.kind == 'xva':
            # Every chunk was checked against its checksum member.
            return cls(name=descriptor.name, virtual_system_type=None,
                       os_id=None, os_description=descriptor.description,
                       manifest='verified' if result.checksum != 'none'
                       else 'absent', signed=False, kind='xva',
                       pv=descriptor.is_pv, firmware=descriptor.firmware,
                       vm=vm)
        return cls(name=descriptor.name,
                   virtual_system_type=descriptor.virtual_system_type,
                   os_id=descriptor.os_id,
                   os_description=descriptor.os_description,
                   manifest=result.manifest, signed=result.signed,
                   firmware=descriptor.firmware, vm=vm)

    @property
    def is_pv_guest(self):
        if self.pv is not None:
            return self.pv
        # XenCenter writes "{hvm|xen}-3.0-{arch}": xen-* is paravirtual.
        return (self.virtual_system_type or '').lower().startswith('xen-')


@dataclasses.dataclass
class Report:
    virtual_size: int
    allocated_bytes: int
    source: str
    package: PackageInfo
    disk: object               # the package's record of the disk
    other_disks: list          # the records of the VM's other disks
    vhd: object                # formats.vhd.VhdInfo
    layout: object             # formats.partitions.DiskLayout
    guest: object = None       # inspect facts
    fixup: object = None       # fixup.FixupResult when a fixup ran
    linux_fixup: object = None  # fixup.linux.LinuxFixupResult when it ran
    properties: dict = dataclasses.field(default_factory=dict)
    vm_disks: list = dataclasses.field(default_factory=list)  # VmDisk
    disk_position: int = 0     # this image's disk among vm_disks

    @property
    def manifest(self):
        return self.package.manifest

    def to_dict(self):
        def plain(value):
            if value is None:
                return None
            if hasattr(value, 'to_dict'):
                return value.to_dict()
            return dataclasses.asdict(value)

        # Strings from the package can be long; JSON escapes the rest.
        return sanitize.structure({
            'virtual_size': self.virtual_size,
            'allocated_bytes': self.allocated_bytes,
            'source': self.source,
            'package': plain(self.package),
            'disk': plain(self.disk),
            'other_disks': [plain(d) for d in self.other_disks],
            'vm_disks': [d.to_dict() for d in self.vm_disks],
            'disk_position': self.disk_position,
            'vhd': plain(self.vhd),
            'layout': plain(self.layout),
            'guest': plain(self.guest),
            'fixup': plain(self.fixup),
            'linux_fixup': plain(self.linux_fixup),
            'properties': dict(self.properties),
        })
