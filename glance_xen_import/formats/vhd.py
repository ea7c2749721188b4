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

"""VHD (Microsoft Virtual Hard Disk Image Format Specification v1.0) to RAW.

Layouts, as the specification draws them:

  fixed:    | disk data (current_size bytes) | footer (512) |
  dynamic:  | footer copy (512) | dynamic header (1024) | BAT | ... blocks ...
            | footer (512) |

All integers are big-endian. A block is a sector bitmap padded to 512 bytes
followed by block_size bytes of data; the BAT maps block numbers to the sector
where the block's bitmap starts, in any file order. The decoder reads the
metadata, then visits the blocks in file order and writes each one at its
virtual offset, so one forward pass is enough whatever order they are in.

Differencing disks (type 4) are refused before their parent locators are
looked at: those carry host paths and URLs that must never be opened.
"""

import array
import dataclasses
import struct
import sys

from glance_xen_import import exception
from glance_xen_import.formats import bytestream

SECTOR = 512
FOOTER_SIZE = 512
HEADER_SIZE = 1024
FOOTER_COOKIE = b'conectix'
HEADER_COOKIE = b'cxsparse'
BATMAP_COOKIE = b'tdbatmap'
UNUSED = 0xFFFFFFFF

TYPE_FIXED = 2
TYPE_DYNAMIC = 3
TYPE_DIFFERENCING = 4

HEADER_VERSION = 0x00010000
# Hidden flag blktap keeps in the first reserved byte of the footer; it may
# legitimately differ between the footer copy and the footer.
_BLKTAP_HIDDEN = 85

MIN_BLOCK_SIZE = SECTOR
MAX_BLOCK_SIZE = 256 << 20
# A BAT of 2 Mi entries (8 MiB) maps 4 TiB in the usual 2 MiB blocks, twice
# the format's own 2040 GiB limit; a larger one only costs memory.
MAX_BAT_ENTRIES = 1 << 21
# Data is handed to the sink in pieces of at most this many bytes.
CHUNK = 4 << 20
# Room a dynamic VHD may hold besides its headers, BAT and blocks: blktap's
# batmap and writers' alignment padding take well under this.
LAYOUT_SLACK = 8 << 20

_FOOTER = struct.Struct('>8sIIQI4sI4sQQHBBII16sB')
_HEADER = struct.Struct('>8sQQIII')
_BATMAP = struct.Struct('>8sQIIIB B')


def _checksum(buf, field_offset):
    """One's complement of the byte sum, the checksum field taken as zero."""
    total = sum(buf) - sum(buf[field_offset:field_offset + 4])
    return ~total & 0xFFFFFFFF


def _creator_name(raw):
    return raw.decode('ascii', 'replace').strip('\x00 ') or '?'


@dataclasses.dataclass(frozen=True)
class Footer:
    features: int
    version: int
    data_offset: int
    creator: str
    creator_version: int
    original_size: int
    current_size: int
    disk_type: int
    raw: bytes

    @classmethod
    def parse(cls, buf, where):
        """Decode and check a 512-byte footer (or footer copy)."""
        (cookie, features, version, data_offset, _timestamp, creator,
         creator_version, _host_os, original_size, current_size, _cyl,
         _heads, _spt, disk_type, checksum, _uuid,
         _saved) = _FOOTER.unpack_from(buf)
        if cookie != FOOTER_COOKIE:
            raise exception.InvalidDisk(
                'VHD %s has no "conectix" cookie' % where)
        if _checksum(buf, 64) != checksum:
            raise exception.InvalidDisk(
                'VHD %s checksum is wrong (stored 0x%08x, computed 0x%08x)'
                % (where, checksum, _checksum(buf, 64)))
        if version >> 16 != 1:
            raise exception.UnsupportedDisk(
                'VHD %s has format version 0x%08x; only 1.x is known'
                % (where, version))
        return cls(features, version, data_offset, _creator_name(creator),
                   creator_version, original_size, current_size, disk_type,
                   bytes(buf))

    def same_disk(self, other):
        """True when two footers describe the same disk."""
        mine = bytearray(self.raw)
        theirs = bytearray(other.raw)
        for buf in (mine, theirs):
            buf[_BLKTAP_HIDDEN] = 0
            buf[64:68] = bytes(4)
        return mine == theirs


@dataclasses.dataclass(frozen=True)
class DynamicHeader:
    table_offset: int
    max_table_entries: int
    block_size: int

    @classmethod
    def parse(cls, buf):
        (cookie, _data_offset, table_offset, version, max_table_entries,
         block_size) = _HEADER.unpack_from(buf)
        stored = struct.unpack_from('>I', buf, 36)[0]
        if cookie != HEADER_COOKIE:
            raise exception.InvalidDisk(
                'VHD dynamic header has no "cxsparse" cookie')
        if _checksum(buf, 36) != stored:
            raise exception.InvalidDisk(
                'VHD dynamic header checksum is wrong (stored 0x%08x, '
                'computed 0x%08x)' % (stored, _checksum(buf, 36)))
        if version != HEADER_VERSION:
            raise exception.UnsupportedDisk(
                'VHD dynamic header version 0x%08x is not 0x%08x'
                % (version, HEADER_VERSION))
        if (block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE
                or block_size & (block_size - 1)):
            raise exception.InvalidDisk(
                'VHD block size %d is not a power of two between %d and %d'
                % (block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE))
        return cls(table_offset, max_table_entries, block_size)

    @property
    def bitmap_size(self):
        """Sector bitmap before each block: one bit a sector, sector padded."""
        bits = self.block_size // SECTOR
        return -(-bits // 8 // SECTOR) * SECTOR

    @property
    def table_size(self):
        """Bytes the BAT occupies: the spec pads it to a sector boundary."""
        return -(-self.max_table_entries * 4 // SECTOR) * SECTOR


@dataclasses.dataclass
class VhdInfo:
    """What was learnt about a VHD; filled in as decoding goes."""

    disk_type: str
    creator: str
    creator_version: int
    current_size: int
    block_size: int = None
    allocated_blocks: int = 0
    out_of_order: bool = False

    @property
    def source_tag(self):
        return 'vhd-%s:%s' % (self.disk_type, self.creator)

    def to_dict(self):
        return dataclasses.asdict(self)


def _check_current_size(footer, max_virtual_size, where):
    size = footer.current_size
    if size == 0 or size % SECTOR:
        raise exception.InvalidDisk(
            'VHD %s gives a current size of %d bytes, not a positive whole '
            'number of 512-byte sectors' % (where, size))
    if size > max_virtual_size:
        raise exception.UnsupportedDisk(
            'VHD virtual size %d bytes exceeds the allowed maximum of %d '
            'bytes' % (size, max_virtual_size))


def file_size_bound(capacity):
    """Most bytes a VHD of a disk of ``capacity`` bytes can hold.

    The worst case is a fully allocated dynamic disk of 512-byte blocks,
    each behind a 512-byte sector bitmap (twice the data), with the
    largest BAT accepted, the header, footer copy and footer.
    """
    return (2 * capacity + 2 * FOOTER_SIZE + HEADER_SIZE
            + 4 * MAX_BAT_ENTRIES)


def _declared_bounds(cursor, member_size, capacity, max_virtual_size):
    """Bound the stream by the disk size the package declares.

    Decompressed or chunked data has no length of its own: without these
    bounds a small input could expand into any number of bytes before the
    VHD's own metadata is even reached.
    """
    declared = max_virtual_size if capacity is None else min(
        capacity, max_virtual_size)
    limit = file_size_bound(declared)
    reason = ('VHD runs past %d bytes, the most a disk of %d bytes can '
              'take' % (limit, declared))
    if member_size is not None and member_size > limit:
        raise exception.InvalidDisk('VHD of %d bytes is larger than %d, the '
                                    'most a disk of %d bytes can take'
                                    % (member_size, limit, declared))
    cursor.set_limit(limit, reason)
    return declared


def decode(stream, sink, member_size=None,
           max_virtual_size=2040 * 1024 ** 3, on_metadata=None,
           capacity=None):
    """Convert the VHD read from ``stream`` into RAW written to ``sink``.

    :param stream: object with ``read(n)``; read once, front to back.
    :param sink: object with ``write_at(offset, data)``.
    :param member_size: length of the VHD in bytes when known in advance
        (an uncompressed tar member); lets bounds be checked before any data
        is read. Without it they are checked as the data arrives.
    :param max_virtual_size: refuse disks larger than this many bytes.
    :param on_metadata: called once as ``on_metadata(info, upper_bound)``
        before any data is written, with the most bytes the RAW can take up.
    :param capacity: the disk size the package declares (the OVF
        capacity), when it does. It bounds the bytes read before the VHD
        metadata is known, and the data of a fixed VHD of unknown length.
    :returns: a :class:`VhdInfo`.
    :raises: exception.InvalidDisk or exception.UnsupportedDisk.
    """
    cursor = bytestream.Cursor(stream, 'VHD')
    if member_size is not None and member_size < FOOTER_SIZE + SECTOR - 1:
        raise exception.InvalidDisk(
            'VHD of %d bytes is too short to hold a footer' % member_size)
    declared = _declared_bounds(cursor, member_size, capacity,
                                max_virtual_size)
    head = cursor.read_exact(SECTOR, 'first sector')
    if head[:8] == FOOTER_COOKIE:
        copy = Footer.parse(head, 'footer copy')
        if copy.disk_type == TYPE_DIFFERENCING:
            raise exception.UnsupportedDisk(
                'VHD is a differencing disk (type 4) that needs its parent '
                'image; merge the snapshot chain before export')
        if copy.disk_type == TYPE_DYNAMIC:
            return _decode_dynamic(cursor, copy, sink, member_size,
                                   max_virtual_size, on_metadata)
        if copy.disk_type != TYPE_FIXED:
            raise exception.UnsupportedDisk(
                'VHD disk type %d is not fixed (2) or dynamic (3)'
                % copy.disk_type)
        # A fixed disk has no copy at the start: this sector is disk data
        # that happens to look like a footer, and is converted as such.
    return _decode_fixed(cursor, head, sink, member_size, max_virtual_size,
                         on_metadata, declared)


def _split_tail(tail, total):
    """Split the last bytes of a file of ``total`` bytes into (data, footer).

    Virtual PC before 2004 wrote 511-byte footers (spec, "Hard Disk
    Footer Format"); such a file's length is 511 modulo 512.
    """
    if total % SECTOR == SECTOR - 1:
        return tail[:-(SECTOR - 1)], tail[-(SECTOR - 1):] + b'\x00'
    return tail[:-FOOTER_SIZE], tail[-FOOTER_SIZE:]


def _decode_fixed(cursor, head, sink, member_size, max_virtual_size,
                  on_metadata, declared):
    if member_size is not None:
        data_size = member_size - FOOTER_SIZE
        if member_size % SECTOR == SECTOR - 1:
            data_size = member_size - (SECTOR - 1)
        if data_size > max_virtual_size:
            raise exception.UnsupportedDisk(
                'VHD virtual size %d bytes exceeds the allowed maximum of %d '
                'bytes' % (data_size, max_virtual_size))
        if on_metadata is not None:
            on_metadata(VhdInfo('fixed', '?', 0, data_size), data_size)
        return _copy_fixed_known(cursor, head, sink, data_size,
                                 member_size, max_virtual_size)
    # A fixed VHD is its data and a footer: the declared size bounds it.
    cursor.set_limit(declared + FOOTER_SIZE,
                     'fixed VHD holds more than the %d bytes of data its '
                     'declared size allows' % declared)
    if on_metadata is not None:
        on_metadata(VhdInfo('fixed', '?', 0, declared), declared)
    return _copy_fixed_unknown(cursor, head, sink, max_virtual_size)


def _copy_fixed_known(cursor, head, sink, data_size, member_size,
                      max_virtual_size):
    pending = head
    offset = 0
    while offset < data_size:
        want = min(CHUNK, data_size - offset)
        if len(pending) < want:
            pending += cursor.read_exact(want - len(pending), 'disk data')
        sink.write_at(offset, pending if want == len(pending)
                      else pending[:want])
        offset += want
        # Only a disk smaller than a sector leaves footer bytes here.
        pending = pending[want:]
    tail = pending + cursor.read_exact(member_size - data_size - len(pending),
                                       'footer')
    if cursor.read(1):
        raise exception.InvalidDisk('VHD has bytes after its footer')
    return _finish_fixed(tail, member_size, max_virtual_size)


def _copy_fixed_unknown(cursor, head, sink, max_virtual_size):
    # The footer is only recognisable once the stream has ended, so the
    # last 512 bytes read are always held back.
    held = head
    offset = 0
    while True:
        data = cursor.read(CHUNK)
        if not data:
            break
        held += data
        ready = len(held) - FOOTER_SIZE
        if ready > 0:
            if offset + ready > max_virtual_size + SECTOR:
                raise exception.UnsupportedDisk(
                    'VHD virtual size exceeds the allowed maximum of %d '
                    'bytes' % max_virtual_size)
            sink.write_at(offset, memoryview(held)[:ready])
            offset += ready
            held = held[ready:]
    total = offset + len(held)
    data, _footer = _split_tail(held, total)
    if data:
        sink.write_at(offset, data)
    return _finish_fixed(held, total, max_virtual_size)


def _finish_fixed(tail, total, max_virtual_size):
    """Check the footer that ends a fixed VHD of ``total`` bytes."""
    if len(tail) < SECTOR - 1:
        raise exception.InvalidDisk('VHD is truncated: no footer at its end')
    _data, raw = _split_tail(tail, total)
    if len(raw) != FOOTER_SIZE:
        raise exception.InvalidDisk('VHD is truncated: no footer at its end')
    data_size = total - (SECTOR - 1 if total % SECTOR == SECTOR - 1
                         else FOOTER_SIZE)
    footer = Footer.parse(raw, 'footer')
    if footer.disk_type != TYPE_FIXED:
        raise exception.InvalidDisk(
            'VHD has no footer copy at its start, so it must be a fixed '
            'disk, but its footer says type %d' % footer.disk_type)
    _check_current_size(footer, max_virtual_size, 'footer')
    if footer.current_size != data_size:
        raise exception.InvalidDisk(
            'fixed VHD holds %d bytes of data but its footer gives a current '
            'size of %d bytes' % (data_size, footer.current_size))
    return VhdInfo('fixed', footer.creator, footer.creator_version,
                   footer.current_size, allocated_blocks=0)


def _read_bat(cursor, header, member_size):
    table_end = header.table_offset + header.table_size
    if member_size is not None and table_end > member_size - FOOTER_SIZE:
        raise exception.InvalidDisk(
            'VHD block allocation table (bytes %d-%d) lies outside the file '
            'of %d bytes' % (header.table_offset, table_end, member_size))
    cursor.skip_to(header.table_offset, 'block allocation table')
    raw = cursor.read_exact(header.table_size, 'block allocation table')
    bat = array.array('I')
    bat.frombytes(raw[:header.max_table_entries * 4])
    if sys.byteorder == 'little':
        bat.byteswap()
    return bat, table_end


def _check_batmap(cursor, creator):
    """Refuse blktap images whose batmap marks their data as encrypted."""
    # blktap keeps a batmap header in the sector right after the BAT
    # (vhd_batmap_header_offset); only 'tap' images have one.
    if creator != 'tap':
        return
    sector = cursor.peek(SECTOR)
    if sector[:8] == BATMAP_COOKIE and sector[29:30] == b'\x01':
        # struct vhd_keyhash follows the marker: cookie 1 means the data
        # is encrypted (tapdisk block-crypto).
        raise exception.UnsupportedDisk(
            'blktap VHD is encrypted (its batmap carries a key hash); '
            'export it decrypted')


# Unused BAT entries are compared this many at a time (one memcmp): most of
# a large disk's table is unused, and Python need not look at each entry.
_SCAN_ENTRIES = 256
_UNUSED_RUN = b'\xff' * (4 * _SCAN_ENTRIES)


def allocated_blocks(bat, n_blocks):
    """Numbers of the allocated blocks among the first ``n_blocks``, ascending.

    :param bat: the BAT as an array('I') (either byte order: an unused
        entry is all ones in both).
    """
    raw = bat.tobytes()
    found = array.array('I')
    for start in range(0, n_blocks, _SCAN_ENTRIES):
        end = min(start + _SCAN_ENTRIES, n_blocks)
        if end - start == _SCAN_ENTRIES and raw.startswith(_UNUSED_RUN,
                                                           4 * start):
            continue
        found.extend(i for i in range(start, end) if bat[i] != UNUSED)
    return found


def _block_order(bat, n_blocks, span_sectors, first_sector, last_sector):
    """Block numbers in file order, refusing overlaps.

    Most images store blocks in ascending order, which costs nothing to
    confirm. Otherwise every block start falls into its own bucket of one
    block span (two starts in one bucket would overlap), which sorts them in
    linear time and memory bounded by the BAT size.
    """
    blocks = allocated_blocks(bat, n_blocks)
    allocated = len(blocks)
    if not allocated:
        return 0, False, iter(blocks)
    sectors = array.array('I', (bat[i] for i in blocks))
    low, high = min(sectors), max(sectors)
    if low < first_sector or (last_sector is not None
                              and high + span_sectors > last_sector):
        for i, sector in zip(blocks, sectors):
            if sector < first_sector or (
                    last_sector is not None
                    and sector + span_sectors > last_sector):
                raise exception.InvalidDisk(
                    'VHD block %d at sector %d lies outside the data area '
                    '(sectors %d-%s)' % (i, sector, first_sector,
                                         last_sector if last_sector is not None
                                         else 'end'))
    if all(b >= a + span_sectors for a, b in zip(sectors, sectors[1:])):
        return allocated, False, iter(blocks)
    n_buckets = (high - low) // span_sectors + 1
    if n_buckets > 2 * MAX_BAT_ENTRIES:
        raise exception.UnsupportedDisk(
            'VHD blocks are spread over %d block spans, far more than the '
            '%d blocks the disk has' % (n_buckets, allocated))
    buckets = array.array('I', bytes(4 * n_buckets))
    for i, sector in zip(blocks, sectors):
        slot = (sector - low) // span_sectors
        if buckets[slot]:
            other = buckets[slot] - 1
            raise exception.InvalidDisk(
                'VHD blocks %d and %d overlap in the file (sectors %d and %d)'
                % (min(i, other), max(i, other), bat[other], sector))
        buckets[slot] = i + 1
    order = array.array('I', (b - 1 for b in buckets if b))
    del buckets
    for a, b in zip(order, order[1:]):
        if bat[b] < bat[a] + span_sectors:
            raise exception.InvalidDisk(
                'VHD blocks %d and %d overlap in the file (sectors %d and %d)'
                % (a, b, bat[a], bat[b]))
    return allocated, True, iter(order)


def _limit_dynamic(cursor, member_size, table_end, allocated, span):
    """Bound the file by what its metadata says it holds.

    After the BAT come the allocated blocks and the footer; a gap of more
    than LAYOUT_SLACK plus one block span is data no block points at.
    """
    limit = table_end + (allocated + 1) * span + LAYOUT_SLACK + FOOTER_SIZE
    reason = ('dynamic VHD runs past %d bytes, the most its %d allocated '
              'blocks and its metadata take' % (limit, allocated))
    if member_size is not None and member_size > limit:
        raise exception.InvalidDisk(
            'dynamic VHD of %d bytes is larger than %d, the most its %d '
            'allocated blocks and its metadata take' % (
                member_size, limit, allocated))
    cursor.set_limit(limit, reason)


def _decode_dynamic(cursor, copy, sink, member_size, max_virtual_size,
                    on_metadata):
    _check_current_size(copy, max_virtual_size, 'footer copy')
    if copy.data_offset < FOOTER_SIZE or copy.data_offset % SECTOR:
        raise exception.InvalidDisk(
            'VHD dynamic header offset %d is not a sector after the footer '
            'copy' % copy.data_offset)
    if (member_size is not None
            and copy.data_offset + HEADER_SIZE > member_size - FOOTER_SIZE):
        raise exception.InvalidDisk(
            'VHD dynamic header offset %d lies outside the file of %d bytes'
            % (copy.data_offset, member_size))
    cursor.skip_to(copy.data_offset, 'dynamic header')
    header = DynamicHeader.parse(
        cursor.read_exact(HEADER_SIZE, 'dynamic header'))
    size = copy.current_size
    n_blocks = -(-size // header.block_size)
    if header.max_table_entries < n_blocks:
        raise exception.InvalidDisk(
            'VHD block allocation table has %d entries but %d blocks of %d '
            'bytes are needed for %d bytes' % (
                header.max_table_entries, n_blocks, header.block_size, size))
    if header.max_table_entries > MAX_BAT_ENTRIES:
        raise exception.UnsupportedDisk(
            'VHD block allocation table has %d entries, more than the %d '
            'accepted' % (header.max_table_entries, MAX_BAT_ENTRIES))
    if header.table_offset % SECTOR or (
            header.table_offset < copy.data_offset + HEADER_SIZE):
        raise exception.InvalidDisk(
            'VHD block allocation table offset %d does not follow the '
            'dynamic header' % header.table_offset)
    bat, table_end = _read_bat(cursor, header, member_size)

    span = header.bitmap_size + header.block_size
    last_sector = None
    if member_size is not None:
        last_sector = (member_size - FOOTER_SIZE) // SECTOR
    allocated, out_of_order, order = _block_order(
        bat, n_blocks, span // SECTOR, table_end // SECTOR, last_sector)
    _limit_dynamic(cursor, member_size, table_end, allocated, span)
    _check_batmap(cursor, copy.creator)
    info = VhdInfo('dynamic', copy.creator, copy.creator_version, size,
                   header.block_size, allocated, out_of_order)
    if on_metadata is not None:
        on_metadata(info, min(size, allocated * header.block_size))

    for block in order:
        start = bat[block] * SECTOR
        cursor.skip_to(start, 'block %d' % block)
        # The sector bitmap is not consulted: the spec requires sectors it
        # marks as unused to hold zeros in a dynamic disk, so copying the
        # whole block gives the same bytes, as qemu does.
        cursor.read_exact(header.bitmap_size, 'bitmap of block %d' % block)
        virtual = block * header.block_size
        remaining = min(header.block_size, size - virtual)
        skip_after = header.block_size - remaining
        while remaining:
            data = cursor.read_exact(min(CHUNK, remaining),
                                     'data of block %d' % block)
            sink.write_at(virtual, data)
            virtual += len(data)
            remaining -= len(data)
        if skip_after:
            cursor.read_exact(skip_after, 'data of block %d' % block)

    _finish_dynamic(cursor, copy, member_size)
    return info


def _finish_dynamic(cursor, copy, member_size):
    if member_size is not None:
        cursor.skip_to(member_size - FOOTER_SIZE, 'footer')
        tail = cursor.read_exact(FOOTER_SIZE, 'footer')
        if cursor.read(1):
            raise exception.InvalidDisk('VHD has bytes after its footer')
    else:
        tail = b''
        while True:
            data = cursor.read(CHUNK)
            if not data:
                break
            tail = (tail + data)[-FOOTER_SIZE:]
        if len(tail) < FOOTER_SIZE:
            raise exception.InvalidDisk(
                'VHD is truncated: no footer after the last block')
    footer = Footer.parse(tail, 'footer')
    if not copy.same_disk(footer):
        raise exception.InvalidDisk(
            'VHD footer at the end differs from the footer copy at the start')
