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

"""Read-only access to Windows registry hives (regf), through pyregf.

Values are decoded here from their raw bytes rather than trusting the
stored type: drivers' INFs and tools write DWORDs as REG_BINARY and
filter lists as REG_SZ often enough to matter.
"""

import struct

import pyregf

from glance_xen_import.inspect import filesystem

# SYSTEM and SOFTWARE hives of long-lived servers reach a few hundred MiB;
# Windows itself refuses hives of 2 GiB and more. The hive is not read
# into memory: pyregf reads the cells it needs through the filesystem.
HIVE_MAX_BYTES = 1024 * 1024 * 1024
# Subkeys and values looked at under one key (Services holds about a
# thousand subkeys).
MAX_SUBKEYS = 100000
MAX_VALUES = 100000

REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_DWORD_BIG_ENDIAN = 5
REG_MULTI_SZ = 7
REG_QWORD = 11

_ERRORS = (OSError, ValueError, UnicodeError, struct.error)
# key()'s default base: the root key (None as a base is a missing key).
_ROOT = object()


class Hive:
    """One opened hive file."""

    def __init__(self, handle, name, sequence):
        self._handle = handle
        self.name = name
        self.primary_sequence, self.secondary_sequence = sequence
        # Reads that failed (damaged cells, data past the end of the
        # file or of the volume): what was asked for is unknown, not
        # absent, and the caller must not take the answer for "none".
        self.read_errors = 0

    def _failed(self):
        self.read_errors += 1

    @property
    def dirty(self):
        # Windows bumps the first number before it writes and the second
        # after: they differ when the log holds changes not yet applied.
        return self.primary_sequence != self.secondary_sequence

    def root(self):
        try:
            return self._handle.get_root_key()
        except _ERRORS:
            self._failed()
            return None

    def key(self, path, base=_ROOT):
        """The key at a backslash path (case-insensitive), or None."""
        start = self.root() if base is _ROOT else base
        if start is None:
            return None
        path = path.strip('\\')
        if not path:
            return start
        try:
            return start.get_sub_key_by_path(path)
        except _ERRORS:
            self._failed()
            return None

    def subkeys(self, key):
        if key is None:
            return []
        keys = []
        try:
            count = min(key.get_number_of_sub_keys(), MAX_SUBKEYS)
            for index in range(count):
                keys.append(key.get_sub_key(index))
        except _ERRORS:
            self._failed()
        return keys

    def subkey_names(self, key):
        names = (self.name_of(sub) for sub in self.subkeys(key))
        return [name for name in names if name]

    def name_of(self, key):
        """A key's name, '' when it cannot be read."""
        try:
            return key.get_name() or ''
        except _ERRORS:
            self._failed()
            return ''

    def value_names(self, key):
        if key is None:
            return []
        names = []
        try:
            count = min(key.get_number_of_values(), MAX_VALUES)
            for index in range(count):
                names.append(key.get_value(index).get_name() or '')
        except _ERRORS:
            self._failed()
        return names

    def raw(self, key, name):
        """(type, bytes) of a value, or None when absent or unreadable."""
        if key is None:
            return None
        try:
            value = key.get_value_by_name(name)
            if value is None:
                return None
            return value.get_type(), value.get_data() or b''
        except _ERRORS:
            self._failed()
            return None

    def dword(self, key, name):
        return decode_dword(self.raw(key, name))

    def string(self, key, name):
        return decode_string(self.raw(key, name))

    def strings(self, key, name):
        return decode_multi_string(self.raw(key, name))

    def close(self):
        try:
            self._handle.close()
        except _ERRORS:
            pass


def decode_dword(raw):
    if raw is None:
        return None
    kind, data = raw
    if len(data) < 4:
        return None
    if kind == REG_DWORD_BIG_ENDIAN:
        return struct.unpack('>I', data[:4])[0]
    if kind in (REG_DWORD, REG_BINARY, REG_QWORD):
        return struct.unpack('<I', data[:4])[0]
    return None


def _utf16(data):
    data = data[:len(data) - len(data) % 2]
    return data.decode('utf-16-le', errors='replace')


def decode_string(raw):
    if raw is None:
        return None
    kind, data = raw
    if kind not in (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ, REG_BINARY):
        return None
    return _utf16(data).split('\x00', 1)[0]


def decode_multi_string(raw):
    if raw is None:
        return []
    kind, data = raw
    if kind not in (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ, REG_BINARY):
        return []
    return [item for item in _utf16(data).split('\x00') if item]


def open_hive(fs, path, notes, limit=HIVE_MAX_BYTES):
    """Open the hive at path on fs; None (and a note) if that fails."""
    try:
        fileobj = fs.open(path, limit)
    except filesystem.FileTooLarge as exc:
        notes.append('hive not read: %s' % exc)
        return None
    if fileobj is None:
        return None
    try:
        header = fileobj.pread(512, 0)
    except _ERRORS as exc:
        notes.append('%s on %s could not be read: %s' %
                     (path, fs.location, str(exc).split('. ')[0]))
        return None
    if len(header) < 512 or header[:4] != b'regf':
        notes.append('%s on %s is not a registry hive' % (path, fs.location))
        return None
    sequence = struct.unpack('<II', header[4:12])
    handle = pyregf.file()
    try:
        handle.open_file_object(fileobj)
    except _ERRORS as exc:
        notes.append('%s on %s could not be opened: %s' %
                     (path, fs.location, str(exc).split('. ')[0]))
        return None
    return Hive(handle, path, sequence)
