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

"""Registry hives: value decoding, dirty hives, hives built by hivex."""

import json
import os
import shutil
import struct
import subprocess

import pytest

from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import registry
from glance_xen_import.inspect import volume

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MAKE_HIVES = os.path.join(REPO, 'tools', 'fixtures', 'make_hives.py')
EMPTY_HIVE = os.path.join(REPO, 'tests', 'fixtures', 'guests',
                          'hivex-minimal.hive')
DEBIAN_PYTHON = '/usr/bin/python3'


class _BytesEntry:
    def __init__(self, data):
        self.data = data

    def read_buffer_at_offset(self, length, offset):
        return self.data[offset:offset + length]


class FilesOnly:
    """A stand-in for a Filesystem holding {path: bytes}."""

    location = 'test'

    def __init__(self, files):
        self.files = files

    def open(self, path, limit):
        data = self.files.get(path)
        if data is None:
            return None
        if len(data) > limit:
            raise filesystem.FileTooLarge(path, len(data), limit)
        return volume.EntryReader(_BytesEntry(data), len(data))


def hivex_available():
    if not os.path.exists(DEBIAN_PYTHON):
        return False
    return subprocess.run([DEBIAN_PYTHON, '-c', 'import hivex'],
                          stderr=subprocess.DEVNULL).returncode == 0


def build_hive(tmp_path, keys, dirty=False, name='hive'):
    """Bytes of a hive made by hivex (python3-hivex) from keys."""
    if not hivex_available():
        pytest.skip('python3-hivex (Debian) is not installed')
    out = tmp_path / name
    spec = tmp_path / (name + '.json')
    spec.write_text(json.dumps([{'base': EMPTY_HIVE, 'out': str(out),
                                 'dirty': dirty, 'keys': keys}]))
    subprocess.run([DEBIAN_PYTHON, MAKE_HIVES, str(spec)], check=True)
    return out.read_bytes()


def open_bytes(data, notes=None):
    return registry.open_hive(FilesOnly({'/h': data}), '/h',
                              notes if notes is not None else [])


# -- decoding -----------------------------------------------------------------

@pytest.mark.parametrize('raw, expected', [
    ((registry.REG_DWORD, struct.pack('<I', 4)), 4),
    ((registry.REG_DWORD_BIG_ENDIAN, struct.pack('>I', 3)), 3),
    ((registry.REG_BINARY, b'\x00\x00\x00\x00'), 0),
    ((registry.REG_QWORD, struct.pack('<Q', 2)), 2),
    ((registry.REG_DWORD, b'\x01\x00'), None),
    ((registry.REG_SZ, '1\0'.encode('utf-16-le')), None),
    (None, None),
])
def test_decode_dword(raw, expected):
    assert registry.decode_dword(raw) == expected


def test_decode_strings():
    sz = (registry.REG_SZ, 'viostor\0junk'.encode('utf-16-le'))
    assert registry.decode_string(sz) == 'viostor'
    odd = (registry.REG_EXPAND_SZ, 'abc'.encode('utf-16-le') + b'\x00')
    assert registry.decode_string(odd) == 'abc'
    multi = (registry.REG_MULTI_SZ, 'XENFILT\0\0PartMgr\0\0'.encode(
        'utf-16-le'))
    assert registry.decode_multi_string(multi) == ['XENFILT', 'PartMgr']
    # Filters written as a plain string still count.
    assert registry.decode_multi_string(
        (registry.REG_SZ, 'xenfilt\0'.encode('utf-16-le'))) == ['xenfilt']
    assert registry.decode_multi_string(None) == []
    assert registry.decode_string(
        (registry.REG_DWORD, b'\x01\x00\x00\x00')) is None


# -- hives --------------------------------------------------------------------

def test_minimal_hive_is_clean_and_empty():
    with open(EMPTY_HIVE, 'rb') as f:
        hive = open_bytes(f.read())
    assert hive is not None and not hive.dirty
    assert hive.subkey_names(hive.root()) == []
    assert hive.key('Select') is None
    assert hive.dword(hive.key('Select'), 'Current') is None


def test_dirty_base_block(tmp_path):
    with open(EMPTY_HIVE, 'rb') as f:
        data = bytearray(f.read())
    struct.pack_into('<I', data, 4, struct.unpack_from('<I', data, 8)[0] + 1)
    checksum = 0
    for (word,) in struct.iter_unpack('<I', bytes(data[:508])):
        checksum ^= word
    struct.pack_into('<I', data, 508, checksum)
    hive = open_bytes(bytes(data))
    assert hive.dirty
    assert hive.primary_sequence == hive.secondary_sequence + 1


def test_not_a_hive_or_too_big():
    notes = []
    assert open_bytes(b'MZ' + b'\0' * 4094, notes) is None
    assert 'not a registry hive' in notes[0]
    notes = []
    fs = FilesOnly({'/big': b'regf' + b'\0' * 8000})
    assert registry.open_hive(fs, '/big', notes, limit=4096) is None
    assert 'hive not read' in notes[0]
    assert registry.open_hive(fs, '/missing', []) is None


def test_hivex_built_values_read_back(tmp_path):
    data = build_hive(tmp_path, [
        ['ControlSet001\\Services\\xenbus',
         {'Start': ['dword', 0], 'Type': ['dword', 1],
          'ImagePath': ['expand_sz', 'system32\\drivers\\xenbus.sys']}],
        ['ControlSet001\\Control\\Class\\{4d36e97d-e325-11ce-bfc1-'
         '08002be10318}', {'UpperFilters': ['multi_sz', ['XENFILT', 'a']]}],
    ])
    hive = open_bytes(data)
    assert not hive.dirty
    # Names are matched case-insensitively, as Windows does.
    services = hive.key('controlset001\\SERVICES')
    assert hive.subkey_names(services) == ['xenbus']
    xenbus = hive.key('XenBus', services)
    assert hive.dword(xenbus, 'start') == 0
    assert hive.string(xenbus, 'ImagePath') == (
        'system32\\drivers\\xenbus.sys')
    assert sorted(hive.value_names(xenbus)) == ['ImagePath', 'Start', 'Type']
    system_class = hive.key('ControlSet001\\Control\\Class\\'
                            '{4D36E97D-E325-11CE-BFC1-08002BE10318}')
    assert hive.strings(system_class, 'UpperFilters') == ['XENFILT', 'a']
    assert hive.raw(xenbus, 'missing') is None
    if shutil.which('hivexget'):
        path = tmp_path / 'copy'
        path.write_bytes(data)
        out = subprocess.run(['hivexget', str(path),
                              'ControlSet001\\Services\\xenbus', 'Start'],
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        assert int(out) == hive.dword(xenbus, 'Start')


def test_builder_makes_dirty_hives(tmp_path):
    data = build_hive(tmp_path, [['Select', {'Current': ['dword', 1]}]],
                      dirty=True)
    hive = open_bytes(data)
    assert hive.dirty
    # Still readable: only the log replay state is unknown.
    assert hive.dword(hive.key('Select'), 'Current') == 1
