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

"""The Windows Boot Configuration Data store, checked against the disk.

The BCD is a registry hive: Objects\\{guid}\\Elements\\<type>\\Element.
Device elements name a partition by (MBR disk signature, partition byte
offset) or (GPT disk GUID, partition GUID); bootmgr and winload find the
Windows volume by those, so a disk whose signature or GUIDs changed on
the way stops before the kernel loads.

Device element layout (ReactOS bcd.h/bl.h, pybcd's bcddevice.py, real
stores in virt-v2v's test data):
  0x00 16 bytes  options GUID
  0x10 u32 type (6 partition, 5 boot, 0 file or ramdisk, 8 locate/vhd)
  0x14 u32 flags (for type 0: 0 file, else ramdisk)   0x18 u32 length
  0x20 the type's data. A partition is:
       +0x00 16 bytes  MBR: u64 byte offset | GPT: partition GUID
       +0x14 u32       partition style: 0 GPT, 1 MBR
       +0x18 16 bytes  MBR: u32 disk signature | GPT: disk GUID
  A file device wraps a partition or boot device packet at 0x30, a
  ramdisk one at 0x44.
"""

import struct
import uuid

from glance_xen_import.inspect import facts

BOOTMGR = '{9dea862c-5cdd-4e70-acc1-f32b344d4795}'
DEFAULT_OBJECT = '23000003'
OS_LOADER_TYPE = 0x10200003
DEVICE_ELEMENTS = ('11000001', '21000001')
# Objects looked at in one store.
MAX_OBJECTS = 4096

_DEVICE_PARTITION = 6
_DEVICE_BOOT = 5
_DEVICE_FILE = 0
_DEVICE_LOCATE = 8
_STYLE_GPT = 0
_STYLE_MBR = 1


class DiskIdentity:
    """What the disk says: scheme, ids, partition offsets and GUIDs."""

    def __init__(self, scheme, disk_signature, disk_guid, starts, guids):
        self.scheme = scheme
        self.disk_signature = disk_signature
        self.disk_guid = normalise_guid(disk_guid)
        self.starts = frozenset(starts)
        self.guids = frozenset(g for g in map(normalise_guid, guids) if g)


def normalise_guid(value):
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value).strip('{}')))
    except ValueError:
        return None


def _guid_le(data):
    return str(uuid.UUID(bytes_le=bytes(data[:16])))


def _u32(data, offset):
    return struct.unpack_from('<I', data, offset)[0]


def decode_device(data):
    """(device_type, style, partition, disk) of a device element."""
    if data is None or len(data) < 0x20:
        return 'unknown', None, None, None
    kind = _u32(data, 0x10)
    flags = _u32(data, 0x14)
    if kind == _DEVICE_PARTITION:
        return ('partition',) + _decode_partition(data, 0x20)
    if kind == _DEVICE_BOOT:
        return 'boot', None, None, None
    if kind == _DEVICE_LOCATE:
        return 'locate', None, None, None
    if kind == _DEVICE_FILE:
        label = 'file' if flags == 0 else 'ramdisk'
        inner = 0x30 if flags == 0 else 0x44
        if len(data) < inner + 0x10:
            return label, None, None, None
        inner_kind = _u32(data, inner)
        if inner_kind == _DEVICE_PARTITION:
            return (label,) + _decode_partition(data, inner + 0x10)
        return label, None, None, None
    return 'unknown', None, None, None


def _decode_partition(data, offset):
    if len(data) < offset + 0x28:
        return None, None, None
    style = _u32(data, offset + 0x14)
    if style == _STYLE_MBR:
        start = struct.unpack_from('<Q', data, offset)[0]
        signature = _u32(data, offset + 0x18)
        return 'mbr', str(start), '%08x' % signature
    if style == _STYLE_GPT:
        return ('gpt', _guid_le(data[offset:offset + 16]),
                _guid_le(data[offset + 0x18:offset + 0x28]))
    return None, None, None


def _matches(style, partition, disk, identity):
    if style == 'mbr':
        if identity.scheme != 'mbr' or identity.disk_signature is None:
            return False
        return (int(disk, 16) == identity.disk_signature and
                int(partition) in identity.starts)
    if style == 'gpt':
        if identity.scheme != 'gpt' or identity.disk_guid is None:
            return False
        return disk == identity.disk_guid and partition in identity.guids
    return None


def _objects_to_check(hive, objects):
    """The boot manager, its default loader, or else every OS loader."""
    names = {name.lower(): name for name in hive.subkey_names(objects)}
    wanted = []
    if BOOTMGR in names:
        wanted.append(names[BOOTMGR])
        bootmgr = hive.key(names[BOOTMGR], objects)
        default = hive.string(
            hive.key('Elements\\' + DEFAULT_OBJECT, bootmgr), 'Element')
        if default and default.lower() in names:
            wanted.append(names[default.lower()])
            return wanted
    for lower, name in sorted(names.items())[:MAX_OBJECTS]:
        kind = hive.dword(hive.key(name + '\\Description', objects), 'Type')
        if kind == OS_LOADER_TYPE:
            wanted.append(name)
    return wanted


def read_store(hive, location, identity):
    """A facts.BcdStore for an opened BCD hive."""
    store = facts.BcdStore(location=location, dirty=hive.dirty)
    objects = hive.key('Objects')
    if objects is None:
        return store
    for name in _objects_to_check(hive, objects):
        for element in DEVICE_ELEMENTS:
            raw = hive.raw(hive.key(name + '\\Elements\\' + element, objects),
                           'Element')
            if raw is None:
                continue
            kind, style, partition, disk = decode_device(raw[1])
            device = facts.BcdDevice(object_id=name.lower(), element=element,
                                     device_type=kind, style=style,
                                     partition=partition, disk=disk)
            if style is not None:
                device.checked = True
                device.matches = _matches(style, partition, disk, identity)
            store.devices.append(device)
    return store
