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
a value's data, and deleting a value. The hive therefore keeps its size and
its layout, which lets the caller write the changed bytes back over the
hive file's own clusters without touching the filesystem around it.

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
    """A hive in a bytearray; every edit is recorded in :attr:`changed`."""

    def __init__(self, data):
        self.data = bytearray(data)
        self.changed = set()     # absolute byte offsets that were written
        self._check_base_block()

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
        self._end = HBIN_START + bins

    def _cell(self, offset, signature=None, minimum=4):
        """Return (absolute data start, capacity) of an allocated cell."""
        if offset == NO_OFFSET or offset % 8:
            raise exception.GuestError(
                'registry cell offset 0x%x is not valid' % offset)
        start = HBIN_START + offset
        if start + 4 > self._end:
            raise exception.GuestError(
                'registry cell 0x%x lies outside the hive' % offset)
        size = struct.unpack_from('<i', self.data, start)[0]
        if size >= 0:
            raise exception.GuestError(
                'registry cell 0x%x is free, not allocated' % offset)
        capacity = -size - 4
        if capacity < minimum or start + 4 + capacity > self._end:
            raise exception.GuestError(
                'registry cell 0x%x has an impossible size' % offset)
        body = start + 4
        if signature and self.data[body:body + 2] != signature:
            raise exception.GuestError(
                'registry cell 0x%x is not a %s record'
                % (offset, signature.decode()))
        return body, capacity

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

    def subkeys(self, key):
        """Cell offsets of the subkeys of ``key``."""
        body, _capacity = self._cell(key, b'nk', 76)
        count = self._u32(body + 20)
        if not count:
            return []
        found = []
        self._walk_list(self._u32(body + 28), found, depth=0)
        if len(found) != count:
            raise exception.GuestError(
                'registry key lists %d subkeys but its list holds %d'
                % (count, len(found)))
        return found

    def _walk_list(self, offset, found, depth):
        body, capacity = self._cell(offset, None, 4)
        kind = bytes(self.data[body:body + 2])
        count = self._u16(body + 2)
        step = {b'lf': 8, b'lh': 8, b'li': 4, b'ri': 4}.get(kind)
        if step is None or 4 + count * step > capacity or depth > 1:
            raise exception.GuestError('registry subkey list is malformed')
        for index in range(count):
            entry = self._u32(body + 4 + index * step)
            if kind == b'ri':
                self._walk_list(entry, found, depth + 1)
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
        body, capacity = self._cell(value.data_offset)
        if value.size > capacity:
            # Big data ("db") records hold values over 16 KiB; nothing
            # edited here is that large.
            raise exception.GuestError(
                'registry value %r is stored as big data' % value.name)
        return bytes(self.data[body:body + value.size])

    # -- edits -----------------------------------------------------------

    def set_dword(self, value, number):
        """Store a little-endian 32-bit number in a 4-byte value.

        REG_BINARY of four bytes is taken too: installers write Start that
        way often enough, and Windows reads it as the same number.
        """
        if value.type not in (REG_DWORD, REG_BINARY) or value.size != 4:
            raise exception.GuestError(
                'registry value %r is not a DWORD' % value.name)
        raw = struct.pack('<I', number)
        vk_body, _capacity = self._cell(value.vk, b'vk', 20)
        if value.inline:
            self._write(vk_body + 8, raw)
        else:
            body, _capacity = self._cell(value.data_offset, None, 4)
            self._write(body, raw)

    def shrink_data(self, value, raw):
        """Replace a value's data with ``raw``, no longer than it was."""
        if len(raw) > value.size:
            raise exception.GuestError(
                'registry value %r cannot grow in place' % value.name)
        vk_body, _capacity = self._cell(value.vk, b'vk', 20)
        if value.inline:
            self._write(vk_body + 8, raw.ljust(4, b'\x00'))
            self._write(vk_body + 4, struct.pack('<I',
                                                 len(raw) | INLINE_FLAG))
            return
        body, capacity = self._cell(value.data_offset)
        if value.size > capacity:
            raise exception.GuestError(
                'registry value %r is stored as big data' % value.name)
        self._write(body, raw + bytes(value.size - len(raw)))
        self._write(vk_body + 4, struct.pack('<I', len(raw)))

    def delete_value(self, key, value):
        """Take ``value`` out of ``key``'s list and free its cells."""
        key_body, list_body, count = self._value_list(key)
        offsets = [self._u32(list_body + 4 * i) for i in range(count)]
        if value.vk not in offsets:
            raise exception.GuestError(
                'registry value %r is not in its key' % value.name)
        offsets.remove(value.vk)
        packed = b''.join(struct.pack('<I', o) for o in offsets)
        self._write(list_body, packed + bytes(4))
        self._write(key_body + 36, struct.pack('<I', len(offsets)))
        if not offsets:
            list_cell = self._u32(key_body + 40)
            self._write(key_body + 40, struct.pack('<I', NO_OFFSET))
            self._free(list_cell)
        if not value.inline and value.size:
            self._free(value.data_offset)
        self._free(value.vk)

    def _free(self, offset):
        start = HBIN_START + offset
        size = struct.unpack_from('<i', self.data, start)[0]
        if size < 0:
            self._write(start, struct.pack('<i', -size))


def multi_sz(raw):
    """Decode REG_MULTI_SZ data into its strings."""
    text = raw.decode('utf-16-le', 'replace')
    return [s for s in text.split('\x00') if s]


def encode_multi_sz(strings):
    return ''.join(s + '\x00' for s in strings).encode('utf-16-le') + (
        b'\x00\x00')
