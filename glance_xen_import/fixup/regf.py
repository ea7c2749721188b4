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

"""In-place editing of a Windows registry hive (regf) held in memory.

Only edits that never grow a cell are offered: changing a DWORD, shrinking
a value's data, and deleting a value. Before any of them the whole hive
is checked (see Hive), and each cell an edit writes to or frees must be
an allocated cell of the expected kind that nothing else references.
The hive therefore keeps its size and its layout, which lets the caller
write the changed bytes back over the hive file's own clusters without
touching the filesystem around it.

Layout, as documented in "Windows registry file format specification"
(Maxim Suhanov) and libyal's libregf notes:

  base block (4096 bytes): "regf", primary and secondary sequence numbers,
      root cell offset at 36, hive bins size at 40, XOR-32 checksum at 508
  hive bins from byte 4096, each "hbin" holding cells; a cell is an int32
      size (negative when allocated) followed by its data. Cell offsets are
      relative to the first hive bin.
  nk  key: subkey count at 20, subkey list at 28, value count at 36,
      value list at 40, name length at 72, name at 76
  vk  value: name length at 2, data size at 4 (bit 31: data stored inline
      in the offset field), data offset at 8, type at 12, flags at 16,
      name at 20
  lf/lh/li/ri  subkey lists; a value list is a cell of uint32 offsets.
"""

import dataclasses
import struct

from glance_xen_import import exception

BASE_BLOCK_SIZE = 4096
HBIN_START = 4096
NO_OFFSET = 0xFFFFFFFF
INLINE_FLAG = 0x80000000
KEY_COMP_NAME = 0x0020
VALUE_COMP_NAME = 0x0001
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
# Deepest ri -> li nesting and most entries followed in one list.
MAX_LIST_ENTRIES = 1 << 20

# Hive bins are whole multiples of 4 KiB; cells start after a bin's
# 32-byte header.
HBIN_ALIGNMENT = 4096
HBIN_HEADER_SIZE = 32
# Values over this many bytes are held in "db" big data records.
BIG_DATA_THRESHOLD = 16344
# The cell map: what the bin scan found at each 8-byte slot.
FREE = 1
ALLOCATED = 2
# The role map: what referenced the cell at each slot (SHARED: more than
# once).
NK, VK, SUBKEY_LIST, VALUE_LIST, DATA, SK, CLASS_NAME, BIG_DATA, \
    SEGMENT_LIST = range(1, 10)
ROLE_MASK = 0x0F
SHARED = 0x80
ROLE_NAMES = {0: 'unused cell', NK: 'key', VK: 'value', SUBKEY_LIST:
              'subkey list', VALUE_LIST: 'value list', DATA: 'value data',
              SK: 'security record', CLASS_NAME: 'class name',
              BIG_DATA: 'big data record', SEGMENT_LIST: 'big data list'}


def base_block_checksum(block):
    """XOR-32 of the first 508 bytes, with the two reserved results."""
    value = 0
    for (word,) in struct.iter_unpack('<I', block[:508]):
        value ^= word
    if value == 0xFFFFFFFF:
        return 0xFFFFFFFE
    return value or 1


@dataclasses.dataclass
class Value:
    name: str
    type: int
    size: int
    inline: bool
    vk: int            # cell offset of the vk record
    data_offset: int   # cell offset of the data (not for inline data)


class Hive(object):
    """A hive in a bytearray; every edit is recorded in :attr:`changed`.

    Opening the hive checks all of it the way hivex does before it trusts
    an offset: the hive bins tile the data area, the cells of each bin
    chain up to its end, and every cell referenced from the root key down
    is an allocated cell of the expected kind. The walk also notes which
    cells are referenced more than once, so an edit never writes to or
    frees a cell that something else still uses.
    """

    def __init__(self, data):
        self.data = bytearray(data)
        self.changed = set()     # absolute byte offsets that were written
        # (lower-cased key path, lower-cased value name) -> the (type,
        # data) the value must read back as, or None once deleted.
        self.expected = {}
        self._check_base_block()
        self._scan_bins()
        self._walk_references()

    # -- structure -------------------------------------------------------

    def _check_base_block(self):
        if len(self.data) < BASE_BLOCK_SIZE or self.data[:4] != b'regf':
            raise exception.GuestError('registry hive has no regf header')
        primary, secondary = struct.unpack_from('<II', self.data, 4)
        if primary != secondary:
            raise exception.GuestError(
                'registry hive is dirty (sequence numbers %d and %d): it '
                'needs its transaction logs replayed by Windows'
                % (primary, secondary))
        stored = struct.unpack_from('<I', self.data, 508)[0]
        if base_block_checksum(self.data) != stored:
            raise exception.GuestError(
                'registry hive base block checksum is wrong')
        self.root = struct.unpack_from('<I', self.data, 36)[0]
        bins = struct.unpack_from('<I', self.data, 40)[0]
        if HBIN_START + bins > len(self.data):
            raise exception.GuestError(
                'registry hive says it holds %d bytes of bins but the file '
                'has %d' % (bins, len(self.data) - HBIN_START))
        if not bins or bins % HBIN_ALIGNMENT:
            raise exception.GuestError(
                'registry hive bins size %d is not a whole number of '
                'hive bins' % bins)
        self._end = HBIN_START + bins

    def _scan_bins(self):
        """Follow the hive bins and the cell chain inside each of them."""
        data = self.data
        self._cells = bytearray((self._end - HBIN_START) // 8)
        position = HBIN_START
        while position < self._end:
            relative = position - HBIN_START
            if data[position:position + 4] != b'hbin':
                raise exception.GuestError(
                    'registry hive bin at 0x%x has no hbin signature'
                    % relative)
            offset, size = struct.unpack_from('<II', data, position + 4)
            if (offset != relative or size < HBIN_ALIGNMENT
                    or size % HBIN_ALIGNMENT or position + size > self._end):
                raise exception.GuestError(
                    'registry hive bin at 0x%x has an impossible offset or '
                    'size' % relative)
            end = position + size
            cell = position + HBIN_HEADER_SIZE
            while cell < end:
                raw = struct.unpack_from('<i', data, cell)[0]
                length = abs(raw)
                if length < 8 or length % 8 or cell + length > end:
                    raise exception.GuestError(
                        'registry cell 0x%x crosses the end of its hive bin'
                        % (cell - HBIN_START))
                self._cells[(cell - HBIN_START) // 8] = (
                    ALLOCATED if raw < 0 else FREE)
                cell += length
            position = end

    def _walk_references(self):
        """Mark every cell reachable from the root key with its role."""
        self._roles = bytearray(len(self._cells))
        self._mark(self.root, NK, b'nk', 76)
        pending = [self.root]
        while pending:
            key = pending.pop()
            body, _capacity = self._cell(key, b'nk', 76)
            self.key_name(key)
            for child in self.subkeys(key, mark=True):
                if self._mark(child, NK, b'nk', 76):
                    pending.append(child)
            security = self._u32(body + 44)
            if security != NO_OFFSET:
                self._mark(security, SK, b'sk', 20)
            class_length = self._u16(body + 74)
            if class_length:
                self._mark(self._u32(body + 48), CLASS_NAME, None,
                           class_length)
            _key_body, list_body, count = self._value_list(key)
            if count:
                self._mark(self._u32(body + 40), VALUE_LIST, None, 4 * count)
            for index in range(count):
                vk = self._u32(list_body + 4 * index)
                if self._mark(vk, VK, b'vk', 20):
                    self._mark_data(self._value(vk))

    def _mark_data(self, value):
        if value.inline or not value.size:
            return
        body, capacity = self._cell(value.data_offset)
        if value.size <= capacity:
            self._mark(value.data_offset, DATA, None, value.size)
            return
        if (value.size <= BIG_DATA_THRESHOLD
                or self.data[body:body + 2] != b'db'):
            raise exception.GuestError(
                'registry value %r overruns its data cell' % value.name)
        self._mark(value.data_offset, BIG_DATA, b'db', 8)
        count = self._u16(body + 2)
        segments = self._u32(body + 4)
        self._mark(segments, SEGMENT_LIST, None, 4 * count)
        list_body, _capacity = self._cell(segments)
        for index in range(count):
            self._mark(self._u32(list_body + 4 * index), DATA, None, 4)

    def _mark(self, offset, role, signature, minimum):
        """Record one reference to a cell; True the first time it is seen.

        A cell seen again is marked shared, which no edit accepts.
        """
        self._cell(offset, signature, minimum)
        slot = offset // 8
        if self._roles[slot]:
            self._roles[slot] |= SHARED
            if self._roles[slot] & ROLE_MASK != role:
                raise exception.GuestError(
                    'registry cell 0x%x is used both as %s and as %s'
                    % (offset, ROLE_NAMES[self._roles[slot] & ROLE_MASK],
                       ROLE_NAMES[role]))
            return False
        self._roles[slot] = role
        return True

    def _cell(self, offset, signature=None, minimum=4):
        """Return (absolute data start, capacity) of an allocated cell."""
        if offset == NO_OFFSET or offset % 8:
            raise exception.GuestError(
                'registry cell offset 0x%x is not valid' % offset)
        start = HBIN_START + offset
        if start + 4 > self._end:
            raise exception.GuestError(
                'registry cell 0x%x lies outside the hive' % offset)
        state = self._cells[offset // 8]
        if state == FREE:
            raise exception.GuestError(
                'registry cell 0x%x is free, not allocated' % offset)
        if state != ALLOCATED:
            raise exception.GuestError(
                'registry offset 0x%x is not the start of a cell' % offset)
        capacity = -struct.unpack_from('<i', self.data, start)[0] - 4
        if capacity < minimum:
            raise exception.GuestError(
                'registry cell 0x%x is too small for what it holds' % offset)
        body = start + 4
        if signature and self.data[body:body + 2] != signature:
            raise exception.GuestError(
                'registry cell 0x%x is not a %s record'
                % (offset, signature.decode()))
        return body, capacity

    def _owned(self, offset, role, signature=None, minimum=4):
        """Like _cell, for a cell an edit writes to or frees.

        The cell must have been reached by the reference walk in exactly
        one place, and as ``role``.
        """
        found = self._cell(offset, signature, minimum)
        mark = self._roles[offset // 8]
        if mark != role:
            raise exception.GuestError(
                'registry cell 0x%x is %s, not a %s of its own; it is not '
                'edited' % (offset, _describe(mark), ROLE_NAMES[role]))
        return found

    def _u16(self, at):
        return struct.unpack_from('<H', self.data, at)[0]

    def _u32(self, at):
        return struct.unpack_from('<I', self.data, at)[0]

    def _write(self, at, raw):
        self.data[at:at + len(raw)] = raw
        self.changed.update(range(at, at + len(raw)))

    def _name(self, at, length, compressed):
        raw = bytes(self.data[at:at + length])
        if compressed:
            return raw.decode('latin-1')
        return raw.decode('utf-16-le', 'replace')

    # -- keys ------------------------------------------------------------

    def key_name(self, key):
        body, capacity = self._cell(key, b'nk', 76)
        length = self._u16(body + 72)
        if 76 + length > capacity:
            raise exception.GuestError('registry key name overruns its cell')
        return self._name(body + 76, length,
                          self._u16(body + 2) & KEY_COMP_NAME)

    def subkeys(self, key, mark=False):
        """Cell offsets of the subkeys of ``key``."""
        body, _capacity = self._cell(key, b'nk', 76)
        count = self._u32(body + 20)
        if not count:
            return []
        found = []
        self._walk_list(self._u32(body + 28), found, 0, mark)
        if len(found) != count:
            raise exception.GuestError(
                'registry key lists %d subkeys but its list holds %d'
                % (count, len(found)))
        return found

    def _walk_list(self, offset, found, depth, mark):
        if mark:
            self._mark(offset, SUBKEY_LIST, None, 4)
        body, capacity = self._cell(offset, None, 4)
        kind = bytes(self.data[body:body + 2])
        count = self._u16(body + 2)
        step = {b'lf': 8, b'lh': 8, b'li': 4, b'ri': 4}.get(kind)
        if step is None or 4 + count * step > capacity or depth > 1:
            raise exception.GuestError('registry subkey list is malformed')
        for index in range(count):
            entry = self._u32(body + 4 + index * step)
            if kind == b'ri':
                self._walk_list(entry, found, depth + 1, mark)
            else:
                found.append(entry)
            if len(found) > MAX_LIST_ENTRIES:
                raise exception.GuestError('registry subkey list is too long')

    def subkey(self, key, name):
        """The subkey of ``key`` called ``name`` (case-insensitive)."""
        wanted = name.lower()
        for child in self.subkeys(key):
            if self.key_name(child).lower() == wanted:
                return child
        return None

    def path(self, *names, base=None):
        key = self.root if base is None else base
        for name in names:
            key = self.subkey(key, name)
            if key is None:
                return None
        return key

    # -- values ----------------------------------------------------------

    def _value_list(self, key):
        body, _capacity = self._cell(key, b'nk', 76)
        count = self._u32(body + 36)
        if not count:
            return body, None, 0
        list_body, list_capacity = self._cell(self._u32(body + 40))
        if count * 4 > list_capacity:
            raise exception.GuestError('registry value list is malformed')
        return body, list_body, count

    def values(self, key):
        _key_body, list_body, count = self._value_list(key)
        result = []
        for index in range(count):
            result.append(self._value(self._u32(list_body + 4 * index)))
        return result

    def _value(self, vk):
        body, capacity = self._cell(vk, b'vk', 20)
        length = self._u16(body + 2)
        if 20 + length > capacity:
            raise exception.GuestError('registry value name overruns its '
                                       'cell')
        raw_size = self._u32(body + 4)
        inline = bool(raw_size & INLINE_FLAG)
        size = raw_size & ~INLINE_FLAG
        if inline and size > 4:
            raise exception.GuestError('registry inline value is too long')
        return Value(name=self._name(body + 20, length,
                                     self._u16(body + 16) & VALUE_COMP_NAME),
                     type=self._u32(body + 12), size=size, inline=inline,
                     vk=vk, data_offset=self._u32(body + 8))

    def value(self, key, name):
        wanted = name.lower()
        for value in self.values(key):
            if value.name.lower() == wanted:
                return value
        return None

    def value_data(self, value):
        vk_body, _capacity = self._cell(value.vk, b'vk', 20)
        if value.inline:
            return bytes(self.data[vk_body + 8:vk_body + 8 + value.size])
        if not value.size:
            return b''
        body, capacity = self._cell(value.data_offset)
        if value.size > capacity:
            # Big data ("db") records hold values over 16 KiB; nothing
            # edited here is that large.
            raise exception.GuestError(
                'registry value %r is stored as big data' % value.name)
        return bytes(self.data[body:body + value.size])

    # -- edits -----------------------------------------------------------

    def _expect(self, path, value, raw):
        where = (tuple(n.lower() for n in path), value.name.lower())
        self.expected[where] = None if raw is None else (value.type, raw)

    def _data_cell(self, value):
        """The data cell an edit of ``value`` may write to."""
        self._owned(value.vk, VK, b'vk', 20)
        body, capacity = self._owned(value.data_offset, DATA)
        if value.size > capacity:
            raise exception.GuestError(
                'registry value %r is stored as big data' % value.name)
        return body

    def set_dword(self, value, number, path):
        """Store a little-endian 32-bit number in a 4-byte value.

        REG_BINARY of four bytes is taken too: installers write Start that
        way often enough, and Windows reads it as the same number.
        ``path`` names the value's key, for the read-back check.
        """
        if value.type not in (REG_DWORD, REG_BINARY) or value.size != 4:
            raise exception.GuestError(
                'registry value %r is not a DWORD' % value.name)
        raw = struct.pack('<I', number)
        if value.inline:
            vk_body, _capacity = self._owned(value.vk, VK, b'vk', 20)
            self._write(vk_body + 8, raw)
        else:
            self._write(self._data_cell(value), raw)
        self._expect(path, value, raw)

    def shrink_data(self, value, raw, path):
        """Replace a value's data with ``raw``, no longer than it was."""
        if len(raw) > value.size:
            raise exception.GuestError(
                'registry value %r cannot grow in place' % value.name)
        vk_body, _capacity = self._owned(value.vk, VK, b'vk', 20)
        if value.inline:
            self._write(vk_body + 8, raw.ljust(4, b'\x00'))
            self._write(vk_body + 4, struct.pack('<I',
                                                 len(raw) | INLINE_FLAG))
        else:
            self._write(self._data_cell(value),
                        raw + bytes(value.size - len(raw)))
            self._write(vk_body + 4, struct.pack('<I', len(raw)))
        self._expect(path, value, raw)

    def delete_value(self, key, value, path):
        """Take ``value`` out of ``key``'s list and free its cells.

        Every cell freed is checked first: allocated, of its kind, and
        referenced from nowhere but this value.
        """
        key_body, list_body, count = self._value_list(key)
        list_cell = self._u32(key_body + 40)
        self._owned(list_cell, VALUE_LIST, None, 4 * count)
        offsets = [self._u32(list_body + 4 * i) for i in range(count)]
        if value.vk not in offsets:
            raise exception.GuestError(
                'registry value %r is not in its key' % value.name)
        self._owned(value.vk, VK, b'vk', 20)
        has_data = not value.inline and value.size
        if has_data:
            self._data_cell(value)
        offsets.remove(value.vk)
        packed = b''.join(struct.pack('<I', o) for o in offsets)
        self._write(list_body, packed + bytes(4))
        self._write(key_body + 36, struct.pack('<I', len(offsets)))
        if not offsets:
            self._write(key_body + 40, struct.pack('<I', NO_OFFSET))
            self._free(list_cell)
        if has_data:
            self._free(value.data_offset)
        self._free(value.vk)
        self._expect(path, value, None)

    def _free(self, offset):
        """Mark an allocated cell free (its owner was checked by _owned)."""
        start = HBIN_START + offset
        size = struct.unpack_from('<i', self.data, start)[0]
        if size >= 0 or not self._roles[offset // 8]:
            raise exception.GuestError(
                'registry cell 0x%x is not a live cell; it is not freed'
                % offset)
        self._write(start, struct.pack('<i', -size))
        self._cells[offset // 8] = FREE
        self._roles[offset // 8] = 0


def _describe(mark):
    if not mark:
        return 'not referenced'
    name = ROLE_NAMES[mark & ROLE_MASK]
    return 'a shared ' + name if mark & SHARED else 'a ' + name


def multi_sz(raw):
    """Decode REG_MULTI_SZ data into its strings."""
    text = raw.decode('utf-16-le', 'replace')
    return [s for s in text.split('\x00') if s]


def encode_multi_sz(strings):
    return ''.join(s + '\x00' for s in strings).encode('utf-16-le') + (
        b'\x00\x00')
