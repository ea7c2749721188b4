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

"""Disk-level facts inspection needs beyond the partition layout."""

import struct
import uuid

from glance_xen_import.inspect import bcd

SECTOR = 512
# The MBR's boot code area: bytes 0-439 (0x1B8 holds the disk signature).
BOOT_CODE_BYTES = 440
_GPT_SIGNATURE = b'EFI PART'
_MAX_GPT_ENTRIES = 1024
_MAX_GPT_ENTRY_SIZE = 4096


def boot_code_present(image):
    """True if sector 0 holds any x86 boot code (not all zero)."""
    sector = image.pread(BOOT_CODE_BYTES, 0)
    if len(sector) < BOOT_CODE_BYTES:
        return False
    return any(sector)


def gpt_partition_guids(image):
    """{start byte offset: unique partition GUID} from the primary GPT.

    The layout object may not carry partition GUIDs; the BCD check needs
    them, so they are read here with the same bounds a GPT reader needs.
    """
    header = image.pread(92, SECTOR)
    if len(header) < 92 or header[:8] != _GPT_SIGNATURE:
        return {}
    entries_lba, count, entry_size = struct.unpack_from('<QII', header, 72)
    if (count == 0 or count > _MAX_GPT_ENTRIES or entry_size < 128 or
            entry_size > _MAX_GPT_ENTRY_SIZE or entry_size % 8):
        return {}
    table = image.pread(count * entry_size, entries_lba * SECTOR)
    guids = {}
    for index in range(len(table) // entry_size):
        entry = table[index * entry_size:(index + 1) * entry_size]
        if not any(entry[:16]):
            continue
        first_lba = struct.unpack_from('<Q', entry, 32)[0]
        guids[first_lba * SECTOR] = str(uuid.UUID(bytes_le=entry[16:32]))
    return guids


def _partition_guid(partition):
    for name in ('unique_guid', 'partition_guid', 'guid', 'uuid'):
        value = getattr(partition, name, None)
        if value:
            return value
    return None


def identity(image, layout):
    """A bcd.DiskIdentity for the disk described by layout."""
    partitions = tuple(layout.partitions)
    starts = [p.start for p in partitions]
    guids = [_partition_guid(p) for p in partitions]
    if layout.scheme == 'gpt' and not all(guids):
        on_disk = gpt_partition_guids(image)
        guids = [on_disk.get(p.start) for p in partitions]
    return bcd.DiskIdentity(layout.scheme,
                            getattr(layout, 'disk_signature', None),
                            getattr(layout, 'disk_guid', None),
                            starts, [g for g in guids if g])
