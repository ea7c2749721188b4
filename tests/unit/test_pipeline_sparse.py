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

"""The sparse RAW writer the pipeline writes through.

Holes are checked with lseek(SEEK_DATA/SEEK_HOLE) and st_blocks, which the
filesystem reports, not the writer.
"""

import os
import random

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import raw
from tests import ovakit

PAGE = 4096


def pattern(n, seed=0):
    return random.Random(seed).randbytes(n).replace(b'\0', b'\1')


def expected_image(size, writes):
    image = bytearray(size)
    for offset, data in writes:
        image[offset:offset + len(data)] = data
    return bytes(image)


def write_image(path, size, writes):
    with raw.SparseWriter(path) as writer:
        for offset, data in writes:
            writer.write_at(offset, data)
        writer.finish(size)
    return writer


def check(path, size, writes):
    with open(path, 'rb') as f:
        assert f.read() == expected_image(size, writes)
    assert ovakit.zero_pages_in_data(path) == []


def test_zero_pages_become_holes(tmp_path):
    path = str(tmp_path / 'a.raw')
    data = pattern(PAGE) + bytes(3 * PAGE) + pattern(PAGE, 1)
    writes = [(0, data), (8 * PAGE, bytes(PAGE)), (20 * PAGE, pattern(10))]
    writer = write_image(path, 64 * PAGE, writes)
    check(path, 64 * PAGE, writes)
    assert writer.data_bytes == 2 * PAGE + 10
    assert ovakit.data_extents(path)[0] == (0, PAGE)


def test_unaligned_writes_keep_absolute_zero_pages_as_holes(tmp_path):
    # Data arriving at offsets that are not page aligned (a fixed VHD read
    # in odd chunks) must still leave every all-zero page a hole.
    path = str(tmp_path / 'b.raw')
    writes = [(PAGE - 512, pattern(512) + bytes(2 * PAGE) + pattern(700)),
              (10 * PAGE + 100, bytes(3 * PAGE)),
              (15 * PAGE + 3, pattern(5))]
    write_image(path, 20 * PAGE, writes)
    check(path, 20 * PAGE, writes)
    assert ovakit.allocated_bytes(path) <= 3 * PAGE


def test_all_zero_write_allocates_nothing(tmp_path):
    path = str(tmp_path / 'z.raw')
    writer = write_image(path, 1 << 30, [(0, bytes(4 << 20))])
    assert os.path.getsize(path) == 1 << 30
    assert writer.data_bytes == 0
    assert ovakit.allocated_bytes(path) == 0


def test_length_is_virtual_size(tmp_path):
    path = str(tmp_path / 'c.raw')
    write_image(path, 12345 * 512, [(512, pattern(512))])
    assert os.path.getsize(path) == 12345 * 512


def test_random_writes_match(tmp_path):
    rnd = random.Random(5)
    size = 256 * PAGE
    writes = []
    for i in range(40):
        offset = rnd.randrange(0, size - 3 * PAGE)
        kind = rnd.choice(['zero', 'data', 'mixed'])
        n = rnd.randrange(1, 3 * PAGE)
        if kind == 'zero':
            data = bytes(n)
        elif kind == 'data':
            data = pattern(n, i)
        else:
            data = bytes(n // 2) + pattern(n - n // 2, i)
        writes.append((offset, data))
    # Writes do not overlap in a VHD; keep them apart here too.
    writes.sort()
    kept, end = [], 0
    for offset, data in writes:
        if offset >= end:
            kept.append((offset, data))
            end = offset + len(data)
    path = str(tmp_path / 'r.raw')
    write_image(path, size, kept)
    check(path, size, kept)


def test_existing_path_refused_and_untouched(tmp_path):
    path = str(tmp_path / 'exists.raw')
    with open(path, 'wb') as f:
        f.write(b'keep me')
    with pytest.raises(exception.XenImportError):
        raw.SparseWriter(path)
    with open(path, 'rb') as f:
        assert f.read() == b'keep me'


def test_abort_removes(tmp_path):
    path = str(tmp_path / 'gone.raw')
    writer = raw.SparseWriter(path)
    writer.write_at(0, pattern(PAGE))
    writer.abort()
    assert not os.path.exists(path)


def test_exception_in_context_removes(tmp_path):
    path = str(tmp_path / 'gone.raw')
    with pytest.raises(RuntimeError):
        with raw.SparseWriter(path) as writer:
            writer.write_at(0, pattern(PAGE))
            raise RuntimeError('boom')
    assert not os.path.exists(path)


def test_file_is_private(tmp_path):
    path = str(tmp_path / 'mode.raw')
    write_image(path, PAGE, [])
    assert os.stat(path).st_mode & 0o077 == 0
