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

"""The bounded file objects the filesystem readers see."""

import os

import pytest

from glance_xen_import.inspect import volume


@pytest.fixture
def image(tmp_path):
    path = tmp_path / 'image.raw'
    path.write_bytes(bytes(range(256)) * 16)    # 4096 bytes
    with volume.ImageFile(str(path)) as opened:
        yield opened


def test_slice_reads_only_its_bytes(image):
    part = image.slice(100, 50)
    assert part.get_size() == 50
    assert part.read(10) == bytes(range(100, 110))
    assert part.tell() == 10
    assert part.read() == bytes(range(110, 150))
    assert part.read(1) == b''


def test_slice_seek(image):
    part = image.slice(1000, 100)
    assert part.seek(-10, os.SEEK_END) == 90
    assert part.read() == (bytes(range(256)) * 16)[1090:1100]
    assert part.seek(5) == 5
    assert part.seek(5, os.SEEK_CUR) == 10
    assert part.read(2) == (bytes(range(256)) * 16)[1010:1012]
    # Past the end is allowed and reads nothing, like a file.
    part.seek(500)
    assert part.read(10) == b''
    with pytest.raises(OSError):
        part.seek(-1)
    with pytest.raises(ValueError):
        part.seek(0, 7)


def test_slice_is_clamped_to_the_image(image):
    # A partition table claiming more than the image holds.
    part = image.slice(4000, 1 << 40)
    assert part.get_size() == 96
    assert len(part.read()) == 96
    assert image.slice(5000, 10).get_size() == 0
    with pytest.raises(ValueError):
        image.slice(-1, 10)


def test_slice_of_a_slice(image):
    outer = image.slice(1024, 1024)
    inner = volume.Slice(outer, 512, 4096)
    assert inner.get_size() == 512
    assert inner.read(4) == (bytes(range(256)) * 16)[1536:1540]
    assert inner.pread(4, 508) == (bytes(range(256)) * 16)[2044:2048]
    assert inner.pread(4, 512) == b''
    assert inner.pread(4, -1) == b''


def test_readinto(image):
    part = image.slice(0, 8)
    buffer = bytearray(16)
    assert part.readinto(buffer) == 8
    assert bytes(buffer[:8]) == bytes(range(8))


class _Entry:
    def __init__(self, data):
        self.data = data
        self.calls = []

    def read_buffer_at_offset(self, length, offset):
        self.calls.append((length, offset))
        return self.data[offset:offset + length]


def test_entry_reader_reads_through_the_entry():
    entry = _Entry(b'abcdefghij')
    reader = volume.EntryReader(entry, 10)
    reader.seek(3)
    assert reader.read(4) == b'defg'
    assert reader.read(100) == b'hij'
    assert reader.read(1) == b''
    # Never asks the entry for bytes past its size.
    assert all(offset + length <= 10 for length, offset in entry.calls)
