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

"""BCD device elements and their comparison with the disk."""

import struct
import uuid

import pytest

from glance_xen_import.inspect import bcd
from tests.unit import test_inspect_registry as reg

PART_GUID = '1581cea0-12ee-4f7d-8967-a2b73024aae2'
DISK_GUID = 'addc0d43-17a9-4e26-a16c-dc71e67393f7'


def partition_blob(style, partition, disk):
    """A partition device packet body (offset 0x20 of an element)."""
    body = bytearray(0x38)
    if style == 'mbr':
        struct.pack_into('<Q', body, 0, partition)
        struct.pack_into('<I', body, 0x14, 1)
        struct.pack_into('<I', body, 0x18, disk)
    else:
        body[0:16] = uuid.UUID(partition).bytes_le
        body[0x18:0x28] = uuid.UUID(disk).bytes_le
    return bytes(body)


def element(kind, flags, body, options=b'\0' * 16):
    return options + struct.pack('<IIII', kind, flags, 0x10 + len(body),
                                 0) + body


def test_partition_elements():
    mbr = element(6, 0, partition_blob('mbr', 1048576, 0x5CA1AB1E))
    assert bcd.decode_device(mbr) == ('partition', 'mbr', '1048576',
                                      '5ca1ab1e')
    gpt = element(6, 0, partition_blob('gpt', PART_GUID, DISK_GUID))
    assert bcd.decode_device(gpt) == ('partition', 'gpt', PART_GUID,
                                      DISK_GUID)
    # The GUIDs are stored in Windows' mixed-endian order.
    assert gpt[0x20:0x24] == bytes.fromhex('a0ce8115')


def test_wrapped_devices():
    inner = struct.pack('<IIII', 6, 0, 0x48, 0) + partition_blob(
        'gpt', PART_GUID, DISK_GUID)
    file_device = element(0, 0, b'\0' * 16 + inner + 'x'.encode(
        'utf-16-le'))
    assert bcd.decode_device(file_device) == ('file', 'gpt', PART_GUID,
                                              DISK_GUID)
    ramdisk_prefix = struct.pack('<I', 3) + b'\0' * 32
    ramdisk = element(0, 1, ramdisk_prefix + inner)
    assert bcd.decode_device(ramdisk) == ('ramdisk', 'gpt', PART_GUID,
                                          DISK_GUID)
    boot_inside = element(0, 0, b'\0' * 16 + struct.pack('<IIII', 5, 0, 0x10,
                                                         0))
    assert bcd.decode_device(boot_inside) == ('file', None, None, None)


@pytest.mark.parametrize('data, expected', [
    (element(5, 0, b''), ('boot', None, None, None)),
    (element(8, 0, b'\0' * 64), ('locate', None, None, None)),
    (element(42, 0, b'\0' * 64), ('unknown', None, None, None)),
    (b'\0' * 8, ('unknown', None, None, None)),
    (None, ('unknown', None, None, None)),
    # Cut short inside the partition data.
    (element(6, 0, b'\0' * 8), ('partition', None, None, None)),
    # A partition style that is neither MBR nor GPT.
    (element(6, 0, b'\0' * 0x14 + struct.pack('<I', 2) + b'\0' * 0x20),
     ('partition', None, None, None)),
])
def test_other_and_damaged_elements(data, expected):
    assert bcd.decode_device(data) == expected


def mbr_identity(signature=0x5CA1AB1E, starts=(1048576,)):
    return bcd.DiskIdentity('mbr', signature, None, starts, [])


def gpt_identity(disk=DISK_GUID, guids=(PART_GUID,)):
    return bcd.DiskIdentity('gpt', 0, disk, [1048576], guids)


@pytest.mark.parametrize('identity, style, partition, disk, expected', [
    (mbr_identity(), 'mbr', '1048576', '5ca1ab1e', True),
    (mbr_identity(), 'mbr', '1048576', '0badf00d', False),
    (mbr_identity(), 'mbr', '2097152', '5ca1ab1e', False),
    (mbr_identity(signature=None), 'mbr', '1048576', '5ca1ab1e', False),
    (gpt_identity(), 'gpt', PART_GUID, DISK_GUID, True),
    (gpt_identity(disk=str(uuid.uuid4())), 'gpt', PART_GUID, DISK_GUID,
     False),
    (gpt_identity(guids=()), 'gpt', PART_GUID, DISK_GUID, False),
    # A BCD written for the other partitioning style.
    (gpt_identity(), 'mbr', '1048576', '00000000', False),
    (mbr_identity(), 'gpt', PART_GUID, DISK_GUID, False),
])
def test_matching(identity, style, partition, disk, expected):
    assert bcd._matches(style, partition, disk, identity) is expected


def test_identity_normalises_guids():
    identity = bcd.DiskIdentity('gpt', None, '{' + DISK_GUID.upper() + '}',
                                [], [PART_GUID.upper(), 'not-a-guid'])
    assert identity.disk_guid == DISK_GUID
    assert identity.guids == {PART_GUID}


LOADER = '{6a1b2c3d-0000-4000-8000-00000000c0de}'
STALE = '{6a1b2c3d-0000-4000-8000-0000000057a1}'


def store_keys(default):
    good = element(6, 0, partition_blob('mbr', 1048576, 0x5CA1AB1E)).hex()
    bad = element(6, 0, partition_blob('mbr', 1048576, 0x0BADF00D)).hex()
    keys = [
        ['Objects\\%s\\Description' % LOADER,
         {'Type': ['dword', 0x10200003]}],
        ['Objects\\%s\\Elements\\21000001' % LOADER,
         {'Element': ['binary', good]}],
        ['Objects\\%s\\Description' % STALE,
         {'Type': ['dword', 0x10200003]}],
        ['Objects\\%s\\Elements\\21000001' % STALE,
         {'Element': ['binary', bad]}],
    ]
    if default:
        keys += [
            ['Objects\\%s\\Description' % bcd.BOOTMGR,
             {'Type': ['dword', 0x10100002]}],
            ['Objects\\%s\\Elements\\23000003' % bcd.BOOTMGR,
             {'Element': ['sz', LOADER]}],
        ]
    return keys


def test_only_the_default_loader_is_checked(tmp_path):
    # A stale loader entry for another disk does not stop the boot.
    hive = reg.open_bytes(reg.build_hive(tmp_path, store_keys(True)))
    store = bcd.read_store(hive, 'test:/Boot/BCD', mbr_identity())
    assert [(d.object_id, d.matches) for d in store.devices] == [
        (LOADER, True)]
    assert not store.mismatch


def test_without_a_boot_manager_every_loader_is_checked(tmp_path):
    hive = reg.open_bytes(reg.build_hive(tmp_path, store_keys(False)))
    store = bcd.read_store(hive, 'test:/Boot/BCD', mbr_identity())
    assert sorted((d.object_id, d.matches) for d in store.devices) == [
        (STALE, False), (LOADER, True)]
    assert store.mismatch


def test_store_without_objects(tmp_path):
    hive = reg.open_bytes(reg.build_hive(tmp_path, [
        ['Description', {'KeyName': ['sz', 'BCD00000000']}]]))
    store = bcd.read_store(hive, 'x', mbr_identity())
    assert store.devices == [] and not store.mismatch
