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

"""Check the partition table of a converted RAW disk and name its filesystems.

References, cited in the comments as [UEFI 5.x]: UEFI Specification 2.10,
chapter 5 "GUID Partition Table (GPT) Disk Layout" - 5.2.1 legacy MBR
(tables 5-1, 5-2), 5.2.3 protective MBR (table 5-4), 5.3.2 GPT header
(table 5-5), 5.3.3 partition entry array (tables 5-6, 5-7). The extended
boot record (EBR) chain is not in that spec; it is read the way Linux
(block/partitions/msdos.c) and util-linux fdisk read and write it.

The disk is untrusted: every offset, size and count is checked before it is
used, only the sectors needed are read, and every refusal is an
InvalidPartitionTable whose text is a one-line reason.

Decisions:

* Sectors are 512 bytes. A Xen VHD has 512-byte sectors and KVM attaches the
  RAW with 512-byte logical sectors, so a GPT written for 4096-byte sectors
  (header at byte 4096) would show the guest no partitions: it is refused
  with that reason rather than read.
* GPT needs a protective MBR (a 0xEE entry starting at LBA 1), as Linux
  (is_pmbr_valid) and EDK2 firmware require; other entries of a hybrid MBR
  are ignored. A GPT header behind an MBR without a 0xEE entry is a stale
  leftover: the MBR is what guests use, so the MBR is what is read.
* The primary GPT must be valid on its own and the backup must be at the
  last LBA and agree with it. A guest could boot from the backup alone, but
  a converter's output with a broken primary or a missing backup is a failed
  conversion (the backup is what a short, CHS-truncated conversion loses).
* A 0x55AA sector whose bytes are an NTFS or FAT boot sector is a whole-disk
  filesystem, not an MBR (libblkid's MBR prober makes the same call).
* A disk must show some content. It is refused as "did not convert properly"
  when its table lists no partitions, or when no partition shows content. A
  partition shows content when it holds a filesystem named by
  detect_filesystem, another known signature (LUKS, BitLocker, exFAT, Linux
  md RAID 1.1/1.2, JFS, ReiserFS, UFS), or when its type is one whose
  contents are not probed here (BIOS boot, Windows LDM and Storage Spaces,
  Linux RAID and dm-crypt, ZFS, BSD and Solaris slices) and its first 64 KiB
  are not all zero. Not counted: an extended partition (its logical
  partitions are judged instead), Microsoft Reserved (normally blank) and
  swap or LVM types whose signature is missing (theirs are probed, so blank
  ones are blank). A disk whose only data is a filesystem unknown here (for
  example f2fs) is therefore refused; the reason says so.
"""

import dataclasses
import struct
import uuid
import zlib

from glance_xen_import import exception

SECTOR = 512
_NOT_CONVERTED = 'the image most likely did not convert properly'
NO_CONTENT_REASON = ('no partition table and no filesystem found: '
                     + _NOT_CONVERTED)

# [UEFI 5.2.1] table 5-1: disk signature at 440, four 16-byte records at
# 446, 0xAA55 (bytes 55 AA) at 510.
_MBR_DISK_SIGNATURE = 440
_MBR_RECORDS = 446
_MBR_RECORD = struct.Struct('<B3sB3sII')
_BOOT_SIGNATURE = b'\x55\xaa'
_ACTIVE = 0x80
_PROTECTIVE = 0xEE
_EXTENDED = frozenset((0x05, 0x0F, 0x85))
_ESP_MBR_TYPE = 0xEF
MAX_LOGICAL = 128

# [UEFI 5.3.2] table 5-5.
_GPT_SIGNATURE = b'EFI PART'
_GPT_HEADER = struct.Struct('<8sIII4xQQQQ16sQIII')
_GPT_CRC_FIELD = 16
_GPT_HEADER_MIN = 92
_GPT_HEADER_MAX = SECTOR
# [UEFI 5.3.2] SizeOfPartitionEntry is 128 * 2**n; 4096 and 1024 entries
# (4 MiB of array) are sane bounds far above what any tool writes (128 x 128).
_GPT_ENTRY_MIN = 128
MAX_GPT_ENTRY_SIZE = 4096
MAX_GPT_ENTRIES = 1024
# [UEFI 5.3.3] table 5-6.
_GPT_ENTRY = struct.Struct('<16s16sQQQ72s')
_LEGACY_BIOS_BOOTABLE = 1 << 2
_ESP_GUID = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b'
_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Partition:
    number: int             # 1-based; MBR 1-4 primary, 5+ logical; GPT index+1
    start: int              # bytes from the start of the disk
    size: int               # bytes
    type_id: str            # MBR '0x83'; GPT type GUID, lowercase
    name: str               # GPT partition name, '' for MBR
    bootable: bool          # MBR 0x80 flag; GPT legacy BIOS bootable (bit 2)
    filesystem: str | None  # see detect_filesystem
    is_esp: bool            # EFI system partition (GPT type or MBR 0xef)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DiskLayout:
    scheme: str                  # 'gpt', 'mbr' or 'none' (whole-disk fs)
    partitions: tuple            # of Partition, in table order
    filesystem: str | None       # whole-disk filesystem when scheme 'none'
    disk_signature: int | None   # MBR bytes 440-443, MBR or protective MBR
    disk_guid: str | None        # GPT disk GUID, lowercase

    def to_dict(self):
        return {
            'scheme': self.scheme,
            'partitions': [p.to_dict() for p in self.partitions],
            'filesystem': self.filesystem,
            'disk_signature': self.disk_signature,
            'disk_guid': self.disk_guid,
        }


def _refuse(reason):
    return exception.InvalidPartitionTable(reason)


def _read(image, offset, length):
    """Read length bytes; bytes past the end of the file read as zeros."""
    image.seek(offset)
    parts = []
    remaining = length
    while remaining > 0:
        data = image.read(remaining)
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    parts.append(bytes(remaining))
    return b''.join(parts)


def _u16(buf, offset):
    return int.from_bytes(buf[offset:offset + 2], 'little')


def _u32(buf, offset):
    return int.from_bytes(buf[offset:offset + 4], 'little')


def _is_power_of_two(value):
    return value > 0 and value & (value - 1) == 0


class _Window:
    """A byte range of the disk: probes can never read outside it."""

    def __init__(self, image, offset, size):
        self.image = image
        self.offset = offset
        self.size = size

    def read(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            return None
        return _read(self.image, self.offset + offset, length)

    def startswith(self, offset, magic):
        return self.read(offset, len(magic)) == magic


# --- filesystems -----------------------------------------------------------

def _ntfs_boot_sector(sector):
    # NTFS boot sector: OEM id at 3, then a BPB whose FAT-only fields are 0.
    if sector[3:11] != b'NTFS    ':
        return False
    if _u16(sector, 11) not in (256, 512, 1024, 2048, 4096):
        return False
    per_cluster = sector[13]
    # Values above 0x80 encode 2**-n sectors (clusters beyond 64 KiB).
    if not (_is_power_of_two(per_cluster) or per_cluster >= 0xF4):
        return False
    return _u16(sector, 14) == 0 and sector[16] == 0


def _fat_boot_sector(sector):
    # FAT BPB (Microsoft FAT32 File System Specification, section 3).
    if sector[0] not in (0xEB, 0xE9):
        return False
    if _u16(sector, 11) not in (512, 1024, 2048, 4096):
        return False
    if not _is_power_of_two(sector[13]) or sector[13] > 128:
        return False
    if _u16(sector, 14) == 0 or sector[16] == 0:
        return False
    if sector[21] != 0xF0 and sector[21] < 0xF8:
        return False
    if _u16(sector, 19) == 0 and _u32(sector, 32) == 0:
        return False
    if _u16(sector, 22) == 0:
        # FAT32: the 16-bit FAT size is 0 and the 32-bit one at 36 is used.
        return sector[82:90] == b'FAT32   ' and _u32(sector, 36) != 0
    return sector[54:62] in (b'FAT12   ', b'FAT16   ', b'FAT     ')


def _boot_sector_filesystem(sector):
    if _ntfs_boot_sector(sector):
        return 'ntfs'
    if _fat_boot_sector(sector):
        return 'vfat'
    return None


def _probe_boot_sector(window):
    sector = window.read(0, SECTOR)
    return None if sector is None else _boot_sector_filesystem(sector)


def _probe_xfs(window):
    # XFS superblock at 0, big-endian: sb_blocksize at 4, sb_sectsize at 102.
    sb = window.read(0, SECTOR)
    if sb is None or sb[0:4] != b'XFSB':
        return None
    block = int.from_bytes(sb[4:8], 'big')
    sect = int.from_bytes(sb[102:104], 'big')
    if (_is_power_of_two(block) and 512 <= block <= 65536
            and _is_power_of_two(sect) and 512 <= sect <= 32768):
        return 'xfs'
    return None


# ext2/3/4 superblock at 1024: magic 0xEF53 at 56, s_log_block_size at 24,
# feature words compat/incompat/ro_compat at 92/96/100. The ext3 feature
# sets (as libblkid uses them) decide the name.
_EXT_MAGIC = 0xEF53
_EXT_COMPAT_HAS_JOURNAL = 0x4
_EXT_INCOMPAT_JOURNAL_DEV = 0x8
_EXT3_INCOMPAT = 0x2 | 0x4 | 0x10       # filetype, recover, meta_bg
_EXT3_RO_COMPAT = 0x1 | 0x2 | 0x4       # sparse_super, large_file, btree


def _probe_ext(window):
    sb = window.read(1024, 104)
    if sb is None or _u16(sb, 56) != _EXT_MAGIC or _u32(sb, 24) > 6:
        return None
    compat, incompat, ro_compat = struct.unpack_from('<III', sb, 92)
    if incompat & _EXT_INCOMPAT_JOURNAL_DEV:
        return None     # an external journal, not a filesystem
    if incompat & ~_EXT3_INCOMPAT or ro_compat & ~_EXT3_RO_COMPAT:
        return 'ext4'
    if compat & _EXT_COMPAT_HAS_JOURNAL:
        return 'ext3'
    return 'ext2'


def _probe_btrfs(window):
    # btrfs primary superblock at 64 KiB, magic at its offset 64.
    return 'btrfs' if window.startswith(65536 + 64, b'_BHRfS_M') else None


def _probe_lvm2(window):
    # LVM2 label: 'LABELONE' in one of the first four sectors, its own
    # sector number at 8 (LE u64) and the type 'LVM2 001' at 24.
    for number in range(4):
        sector = window.read(number * SECTOR, 32)
        if (sector is not None and sector[0:8] == b'LABELONE'
                and int.from_bytes(sector[8:16], 'little') == number
                and sector[24:32] == b'LVM2 001'):
            return 'lvm2'
    return None


_SWAP_MAGICS = (b'SWAPSPACE2', b'SWAP-SPACE', b'S1SUSPEND', b'S2SUSPEND',
                b'ULSUSPEND', b'LINHIB0001')


def _probe_swap(window):
    # Linux swap: magic in the last 10 bytes of the first page. x86 pages
    # are 4 KiB; larger ones cover swap made on other architectures.
    for page in (4096, 8192, 16384, 65536):
        tail = window.read(page - 10, 10)
        if tail is not None and tail.startswith(_SWAP_MAGICS):
            return 'swap'
    return None


_FILESYSTEM_PROBES = (_probe_boot_sector, _probe_xfs, _probe_ext,
                      _probe_btrfs, _probe_lvm2, _probe_swap)

# Signatures of content this module does not name but that shows a partition
# was converted with its data: (offset, magic).
_OTHER_SIGNATURES = (
    (0, b'LUKS\xba\xbe'),                           # LUKS1/LUKS2 header
    (3, b'-FVE-FS-'),                               # BitLocker
    (3, b'EXFAT   '),                               # exFAT
    (0, b'\xfc\x4e\x2b\xa9\x01\x00\x00\x00'),       # md RAID 1.1
    (4096, b'\xfc\x4e\x2b\xa9\x01\x00\x00\x00'),    # md RAID 1.2
    (32768, b'JFS1'),                               # JFS
    (65536 + 52, b'ReIsErFs'),                      # ReiserFS 3.5
    (65536 + 52, b'ReIsEr2Fs'),                     # ReiserFS 3.6
    (65536 + 52, b'ReIsEr3Fs'),                     # ReiserFS, relocated jnl
    (8192 + 1372, b'\x54\x19\x01\x00'),             # UFS1, little-endian
    (8192 + 1372, b'\x00\x01\x19\x54'),             # UFS1, big-endian
    (65536 + 1372, b'\x19\x01\x54\x19'),            # UFS2, little-endian
    (65536 + 1372, b'\x19\x54\x01\x19'),            # UFS2, big-endian
)


def detect_filesystem(image, offset, size):
    """Name the filesystem in bytes [offset, offset + size) of the disk.

    Returns 'ntfs', 'vfat', 'ext2', 'ext3', 'ext4', 'xfs', 'lvm2', 'swap',
    'btrfs' or None. Never reads outside the range.
    """
    if offset < 0 or size <= 0:
        return None
    window = _Window(image, offset, size)
    for probe in _FILESYSTEM_PROBES:
        name = probe(window)
        if name:
            return name
    return None


def _other_signature(image, offset, size):
    window = _Window(image, offset, size)
    return any(window.startswith(at, magic)
               for at, magic in _OTHER_SIGNATURES)


def _not_blank(image, offset, size):
    data = _Window(image, offset, size).read(0, min(size, 65536))
    return bool(data and data.count(0) != len(data))


# --- content rule ----------------------------------------------------------

# Types whose contents are not probed here; they count as content when their
# first 64 KiB are not blank (see the module docstring).
_UNPROBED_GPT_TYPES = frozenset((
    '21686148-6449-6e6f-744e-656564454649',   # BIOS boot
    '5808c8aa-7e8f-42e0-85d2-e1e90434cfb3',   # Windows LDM metadata
    'af9b60a0-1431-4f62-bc68-3311714a69ad',   # Windows LDM data
    'e75caf8f-f680-4cee-afa3-b001e56efc2d',   # Windows Storage Spaces
    'a19d880f-05fc-4d3b-a006-743f0f84911e',   # Linux RAID
    'ca7d7ccb-63ed-4c53-861c-1742536059cc',   # Linux LUKS
    '7ffec5c9-2d00-49b7-8941-3ea10a5586b7',   # Linux dm-crypt
    '6a898cc3-1dd2-11b2-99a6-080020736631',   # Solaris /usr, ZFS on Linux
    '83bd6b9d-7f41-11dc-be0b-001560b84f0f',   # FreeBSD boot
    '516e7cb5-6ecf-11d6-8ff8-00022d09712b',   # FreeBSD swap
    '516e7cb6-6ecf-11d6-8ff8-00022d09712b',   # FreeBSD UFS
    '516e7cba-6ecf-11d6-8ff8-00022d09712b',   # FreeBSD ZFS
))
_UNPROBED_MBR_TYPES = frozenset((
    0x42,   # Windows LDM (dynamic disk)
    0xA5,   # FreeBSD slice
    0xA6,   # OpenBSD slice
    0xA9,   # NetBSD slice
    0xBF,   # Solaris
    0xDA,   # non-filesystem data
    0xE8,   # LUKS
    0xFD,   # Linux RAID autodetect
))


def _shows_content(image, partition, type_code):
    if partition.filesystem:
        return True
    if type_code in _EXTENDED:
        return False
    if _other_signature(image, partition.start, partition.size):
        return True
    unprobed = (type_code in _UNPROBED_MBR_TYPES
                or type_code in _UNPROBED_GPT_TYPES)
    return unprobed and _not_blank(image, partition.start, partition.size)


def _require_content(image, partitions, type_codes, scheme):
    if not partitions:
        raise _refuse('the %s partition table lists no partitions: %s'
                      % (scheme, _NOT_CONVERTED))
    if not any(_shows_content(image, p, code)
               for p, code in zip(partitions, type_codes)):
        raise _refuse('none of the %d partitions holds a filesystem or other '
                      'content this check recognises: %s'
                      % (len(partitions), _NOT_CONVERTED))


def _check_overlaps(areas):
    """areas: (start, end, label) in bytes, end exclusive."""
    ordered = sorted(areas)
    for before, after in zip(ordered, ordered[1:]):
        if after[0] < before[1]:
            raise _refuse('%s (bytes %d-%d) overlaps %s (bytes %d-%d)'
                          % (before[2], before[0], before[1] - 1,
                             after[2], after[0], after[1] - 1))


# --- MBR -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Record:
    slot: int
    boot: int
    type: int
    start: int      # LBA
    sectors: int

    @property
    def used(self):
        # Type 0 or a zero length is an unused slot.
        return self.type != 0 and self.sectors != 0


def _records(sector):
    # [UEFI 5.2.1] table 5-2: BootIndicator, StartingCHS, OSType,
    # EndingCHS, StartingLBA, SizeInLBA.
    result = []
    for slot in range(4):
        boot, _chs, os_type, _chs_end, start, sectors = (
            _MBR_RECORD.unpack_from(sector, _MBR_RECORDS + 16 * slot))
        result.append(_Record(slot, boot, os_type, start, sectors))
    return result


def _bad_boot_flag(records, where):
    for record in records:
        if record.boot not in (0, _ACTIVE):
            return ('%s entry %d has boot indicator 0x%02x (0x00 or 0x80 '
                    'expected)' % (where, record.slot + 1, record.boot))
    return None


def _mbr_partition(image, number, record, start_lba):
    start = start_lba * SECTOR
    size = record.sectors * SECTOR
    is_container = record.type in _EXTENDED
    return Partition(
        number=number, start=start, size=size,
        type_id='0x%02x' % record.type, name='',
        bootable=record.boot == _ACTIVE,
        filesystem=(None if is_container
                    else detect_filesystem(image, start, size)),
        is_esp=record.type == _ESP_MBR_TYPE)


def _read_mbr(image, disk_size, sector0, records):
    used = [r for r in records if r.used]
    extended = [r for r in used if r.type in _EXTENDED]
    if len(extended) > 1:
        raise _refuse('the MBR has %d extended partitions (at most one '
                      'allowed)' % len(extended))
    primaries = []
    for record in used:
        number = record.slot + 1
        if record.start == 0:
            raise _refuse('partition %d starts at LBA 0, over the MBR itself'
                          % number)
        end = (record.start + record.sectors) * SECTOR
        if end > disk_size:
            raise _refuse('partition %d ends at byte %d, past the end of the '
                          'disk (%d bytes)' % (number, end, disk_size))
        primaries.append(_mbr_partition(image, number, record, record.start))
    _check_overlaps([(p.start, p.start + p.size, 'partition %d' % p.number)
                     for p in primaries])
    codes = [r.type for r in used]
    logicals = []
    if extended:
        logicals = _logical_partitions(image, extended[0])
        codes += [code for _p, code in logicals]
        logicals = [p for p, _code in logicals]
    partitions = tuple(primaries + logicals)
    _require_content(image, partitions, codes, 'MBR')
    return DiskLayout(scheme='mbr', partitions=partitions, filesystem=None,
                      disk_signature=_u32(sector0, _MBR_DISK_SIGNATURE),
                      disk_guid=None)


def _logical_partitions(image, container):
    """Walk the EBR chain of the extended partition.

    Each EBR is an MBR-shaped sector: entry 1 is a logical partition whose
    start is relative to this EBR, entry 2 links to the next EBR with a start
    relative to the extended partition, entries 3-4 are unused.
    """
    first, limit = container.start, container.start + container.sectors
    ebr_lba = first
    seen = set()
    found = []
    areas = []
    number = 5
    while True:
        if ebr_lba in seen:
            raise _refuse('the extended partition chain loops back to the '
                          'EBR at LBA %d' % ebr_lba)
        if len(seen) >= MAX_LOGICAL:
            raise _refuse('the extended partition chain has more than %d '
                          'logical partitions' % MAX_LOGICAL)
        seen.add(ebr_lba)
        where = 'the EBR at LBA %d' % ebr_lba
        ebr = _read(image, ebr_lba * SECTOR, SECTOR)
        if ebr[510:512] != _BOOT_SIGNATURE:
            raise _refuse('%s has no 0x55AA signature' % where)
        records = _records(ebr)
        problem = _bad_boot_flag(records, where)
        if problem:
            raise _refuse(problem)
        data, link = records[0], records[1]
        if records[2].used or records[3].used:
            raise _refuse('%s uses entries 3-4, which must be empty' % where)
        areas.append((ebr_lba * SECTOR, (ebr_lba + 1) * SECTOR, where))
        if data.used:
            if data.type in _EXTENDED:
                raise _refuse('%s entry 1 is an extended partition' % where)
            start = ebr_lba + data.start
            if start + data.sectors > limit:
                raise _refuse(
                    'logical partition %d (bytes %d-%d) extends past its '
                    'extended partition (bytes %d-%d)'
                    % (number, start * SECTOR,
                       (start + data.sectors) * SECTOR - 1,
                       first * SECTOR, limit * SECTOR - 1))
            partition = _mbr_partition(image, number, data, start)
            found.append((partition, data.type))
            areas.append((partition.start, partition.start + partition.size,
                          'logical partition %d' % number))
            number += 1
        if not link.used:
            break
        if link.type not in _EXTENDED:
            raise _refuse('%s entry 2 has type 0x%02x; only a link to the '
                          'next EBR may be there' % (where, link.type))
        next_lba = first + link.start
        if not first <= next_lba < limit:
            raise _refuse('%s links to LBA %d, outside its extended '
                          'partition (LBA %d-%d)'
                          % (where, next_lba, first, limit - 1))
        ebr_lba = next_lba
    _check_overlaps(areas)
    return found


# --- GPT -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _GptHeader:
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: str
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int

    @property
    def entries_sectors(self):
        return -(-self.entry_count * self.entry_size // SECTOR)


def _guid(raw):
    # [UEFI appendix A] GUIDs are stored with the first three fields
    # little-endian.
    return str(uuid.UUID(bytes_le=bytes(raw)))


def _gpt_header(sector, which):
    # [UEFI 5.3.2] validity: signature, HeaderSize, HeaderCRC32 computed
    # over HeaderSize bytes with the CRC field as zero.
    if sector[0:8] != _GPT_SIGNATURE:
        raise _refuse('the %s GPT header has no "EFI PART" signature' % which)
    (_sig, _revision, header_size, header_crc, my_lba, alternate_lba,
     first_usable, last_usable, disk_guid, entries_lba, entry_count,
     entry_size, entries_crc) = _GPT_HEADER.unpack_from(sector)
    if not _GPT_HEADER_MIN <= header_size <= _GPT_HEADER_MAX:
        raise _refuse('the %s GPT header size is %d (%d-%d expected)'
                      % (which, header_size, _GPT_HEADER_MIN,
                         _GPT_HEADER_MAX))
    blanked = (sector[:_GPT_CRC_FIELD] + bytes(4)
               + sector[_GPT_CRC_FIELD + 4:header_size])
    if zlib.crc32(blanked) != header_crc:
        raise _refuse('the %s GPT header CRC32 is wrong' % which)
    if (entry_size < _GPT_ENTRY_MIN or entry_size > MAX_GPT_ENTRY_SIZE
            or not _is_power_of_two(entry_size)):
        raise _refuse('the %s GPT partition entry size is %d (128 * 2**n, at '
                      'most %d expected)'
                      % (which, entry_size, MAX_GPT_ENTRY_SIZE))
    if entry_count > MAX_GPT_ENTRIES:
        raise _refuse('the %s GPT has %d partition entries (at most %d '
                      'accepted)' % (which, entry_count, MAX_GPT_ENTRIES))
    return _GptHeader(my_lba, alternate_lba, first_usable, last_usable,
                      _guid(disk_guid), entries_lba, entry_count, entry_size,
                      entries_crc)


def _gpt_entries(image, header, which):
    """CRC-check the entry array; return the used entries as (index, raw)."""
    total = header.entry_count * header.entry_size
    base = header.entries_lba * SECTOR
    crc = 0
    used = []
    done = 0
    while done < total:
        # _CHUNK is a multiple of every allowed entry size.
        chunk = _read(image, base + done, min(_CHUNK, total - done))
        crc = zlib.crc32(chunk, crc)
        for at in range(0, len(chunk), header.entry_size):
            # [UEFI 5.3.3] an entry whose type GUID is zero is unused.
            if any(chunk[at:at + 16]):
                used.append(((done + at) // header.entry_size,
                             chunk[at:at + _GPT_ENTRY.size]))
        done += len(chunk)
    if crc != header.entries_crc:
        raise _refuse('the %s GPT partition entry array CRC32 is wrong'
                      % which)
    return used


def _check_primary(header, last_lba):
    if header.my_lba != 1:
        raise _refuse('the primary GPT header says it is at LBA %d, not 1'
                      % header.my_lba)
    if header.alternate_lba > last_lba:
        # The known short conversion: the end of the disk, with the backup
        # GPT, was cut off.
        raise _refuse('the backup GPT header belongs at LBA %d but the disk '
                      'ends at LBA %d: the end of the disk is missing (a '
                      'truncated conversion)'
                      % (header.alternate_lba, last_lba))
    if header.alternate_lba != last_lba:
        raise _refuse('the backup GPT header is at LBA %d, not at the last '
                      'LBA %d of the disk' % (header.alternate_lba, last_lba))
    if not 1 <= header.first_usable <= header.last_usable < last_lba:
        raise _refuse('the GPT usable LBAs %d-%d are outside the disk (LBA '
                      '0-%d)' % (header.first_usable, header.last_usable,
                                 last_lba))
    array_end = header.entries_lba + header.entries_sectors
    if header.entries_lba < 2 or array_end > header.first_usable:
        raise _refuse('the primary GPT partition entries (LBA %d-%d) are not '
                      'between the header and the first usable LBA %d'
                      % (header.entries_lba, array_end - 1,
                         header.first_usable))


def _check_backup(backup, primary, last_lba):
    mismatch = None
    if backup.my_lba != last_lba:
        mismatch = 'says it is at LBA %d' % backup.my_lba
    elif backup.alternate_lba != primary.my_lba:
        mismatch = 'points to a primary at LBA %d' % backup.alternate_lba
    else:
        for field in ('disk_guid', 'first_usable', 'last_usable',
                      'entry_count', 'entry_size', 'entries_crc'):
            if getattr(backup, field) != getattr(primary, field):
                mismatch = 'differs from the primary in %s' % field
                break
    if mismatch:
        raise _refuse('the backup GPT header at LBA %d %s'
                      % (last_lba, mismatch))
    array_end = backup.entries_lba + backup.entries_sectors
    if backup.entries_lba <= primary.last_usable or array_end > last_lba:
        raise _refuse('the backup GPT partition entries (LBA %d-%d) are not '
                      'between the last usable LBA %d and the backup header'
                      % (backup.entries_lba, array_end - 1,
                         primary.last_usable))


def _gpt_partition(image, index, raw, header):
    (type_guid, _unique, first, last, attributes,
     name) = _GPT_ENTRY.unpack(raw)
    number = index + 1
    if not header.first_usable <= first <= last <= header.last_usable:
        raise _refuse('GPT partition %d (LBA %d-%d) is outside the usable '
                      'LBAs %d-%d' % (number, first, last,
                                      header.first_usable,
                                      header.last_usable))
    start = first * SECTOR
    size = (last - first + 1) * SECTOR
    type_id = _guid(type_guid)
    text = name.decode('utf-16-le', 'replace')
    return Partition(
        number=number, start=start, size=size, type_id=type_id,
        name=text.split('\x00', 1)[0],
        bootable=bool(attributes & _LEGACY_BIOS_BOOTABLE),
        filesystem=detect_filesystem(image, start, size),
        is_esp=type_id == _ESP_GUID)


def _read_gpt(image, disk_size, sector0, protective):
    # [UEFI 5.2.3] the protective MBR entry starts at LBA 1.
    if protective.start != 1:
        raise _refuse('the protective MBR entry starts at LBA %d, not 1'
                      % protective.start)
    last_lba = disk_size // SECTOR - 1
    if last_lba < 2:
        raise _refuse('the disk (%d bytes) is too small to hold a GPT'
                      % disk_size)
    sector = _read(image, SECTOR, SECTOR)
    if sector[0:8] != _GPT_SIGNATURE:
        if _read(image, 4096, 8) == _GPT_SIGNATURE:
            raise _refuse('the GPT was written for 4096-byte sectors; the '
                          'disk is used with 512-byte sectors and would show '
                          'no partitions')
        raise _refuse('the MBR is a protective MBR but there is no GPT '
                      'header at LBA 1')
    primary = _gpt_header(sector, 'primary')
    _check_primary(primary, last_lba)
    entries = _gpt_entries(image, primary, 'primary')
    backup = _gpt_header(_read(image, last_lba * SECTOR, SECTOR), 'backup')
    _check_backup(backup, primary, last_lba)
    _gpt_entries(image, backup, 'backup')
    partitions = tuple(_gpt_partition(image, index, raw, primary)
                       for index, raw in entries)
    _check_overlaps([(p.start, p.start + p.size,
                      'GPT partition %d' % p.number) for p in partitions])
    _require_content(image, partitions, [p.type_id for p in partitions],
                     'GPT')
    return DiskLayout(scheme='gpt', partitions=partitions, filesystem=None,
                      disk_signature=_u32(sector0, _MBR_DISK_SIGNATURE),
                      disk_guid=primary.disk_guid)


# --- entry point -----------------------------------------------------------

def read_layout(image, disk_size):
    """Verify the partition table of a RAW disk and name its filesystems.

    image: binary file object with seek()/read(); disk_size: virtual size in
    bytes. Returns a DiskLayout or raises InvalidPartitionTable.
    """
    if disk_size < SECTOR:
        raise _refuse('the disk is %d bytes, less than one sector: %s'
                      % (disk_size, _NOT_CONVERTED))
    sector0 = _read(image, 0, SECTOR)
    boot_filesystem = _boot_sector_filesystem(sector0)
    if boot_filesystem:
        # An NTFS/FAT boot sector also ends in 0x55AA: not an MBR.
        return _whole_disk(boot_filesystem)
    problem = None
    if sector0[510:512] == _BOOT_SIGNATURE:
        records = _records(sector0)
        problem = _bad_boot_flag(records, 'MBR')
        protective = [r for r in records if r.type == _PROTECTIVE]
        if protective and not problem:
            return _read_gpt(image, disk_size, sector0, protective[0])
        if not problem and any(r.used for r in records):
            return _read_mbr(image, disk_size, sector0, records)
        problem = problem or ('the MBR lists no partitions: '
                              + _NOT_CONVERTED)
    filesystem = detect_filesystem(image, 0, disk_size)
    if filesystem:
        return _whole_disk(filesystem)
    if problem:
        raise _refuse(problem)
    if _read(image, SECTOR, 8) == _GPT_SIGNATURE:
        raise _refuse('there is a GPT header at LBA 1 but no protective MBR, '
                      'so guests will not see the partitions')
    raise _refuse(NO_CONTENT_REASON)


def _whole_disk(filesystem):
    return DiskLayout(scheme='none', partitions=(), filesystem=filesystem,
                      disk_signature=None, disk_guid=None)


def unrecognised_layout():
    """The layout of a disk with neither partition table nor filesystem."""
    return _whole_disk(None)
