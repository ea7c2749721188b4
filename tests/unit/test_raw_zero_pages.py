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

"""Issue 13: zero pages found by sampling a few bytes, then confirmed.

The writer looks at a few bytes of every page at once and compares only
the candidate holes whole. Whatever it samples, a page with one non-zero
byte anywhere must be written: the expected runs here come from a plain
page-by-page reference, and the file's holes from lseek(SEEK_DATA).
"""

import random

import pytest

from glance_xen_import.formats import raw
from tests import ovakit

PAGE = 4096


def reference_runs(data, offset):
    """Runs of non-zero file pages, page by page, the obvious way."""
    runs = []
    start = 0
    while start < len(data):
        end = min(len(data), start + PAGE - (offset + start) % PAGE)
        if data[start:end].count(0) != end - start:
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
        start = end
    return runs


def runs(data, offset):
    return list(raw._nonzero_runs(data, offset))


# A piece of three file pages landing on a page boundary, and one landing
# 1000 bytes into a page (partial first and last pages).
LAYOUTS = [(0, 3 * PAGE), (5 * PAGE + 1000, 3 * PAGE)]


@pytest.mark.parametrize('offset,length', LAYOUTS)
@pytest.mark.parametrize('value', [0x01, 0x80, 0xFF])
def test_one_nonzero_byte_anywhere(offset, length, value):
    # Every byte position of the piece: sampled and unsampled bytes, the
    # first and last of every page, of the partial pages too.
    for position in range(length):
        data = bytearray(length)
        data[position] = value
        data = bytes(data)
        expected = reference_runs(data, offset)
        assert len(expected) == 1
        assert runs(data, offset) == expected, position


@pytest.mark.parametrize('offset,length', LAYOUTS)
def test_all_zero_pieces_write_nothing(offset, length):
    assert runs(bytes(length), offset) == []


@pytest.mark.parametrize('length', [1, 100, PAGE - 1, PAGE, PAGE + 1])
def test_pieces_within_one_page(length):
    for offset in (0, 1, PAGE - 1, 7 * PAGE + 123):
        data = bytearray(length)
        data[-1] = 9
        assert runs(bytes(data), offset) == reference_runs(data, offset)


def random_piece(rng):
    """Data pages, zero pages and pages with a few stray bytes."""
    pages = []
    for _ in range(rng.randint(1, 300)):
        kind = rng.random()
        if kind < 0.3:
            pages.append(rng.randbytes(PAGE))
        elif kind < 0.8:
            pages.append(bytes(PAGE))
        else:
            page = bytearray(PAGE)
            for _ in range(rng.randint(1, 3)):
                page[rng.randrange(PAGE)] = rng.randint(1, 255)
            pages.append(bytes(page))
    data = b''.join(pages)
    cut = rng.randrange(min(PAGE, len(data)))
    return data[cut:len(data) - rng.randrange(min(PAGE, len(data) - cut))]


@pytest.mark.parametrize('seed', range(20))
def test_random_pieces_match_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(10):
        data = random_piece(rng)
        offset = rng.choice([0, PAGE, rng.randrange(1 << 30)])
        assert runs(data, offset) == reference_runs(data, offset)


def test_longer_than_the_zero_buffer():
    # Pieces longer than the buffer compared against are compared in parts.
    length = 2 * len(raw._ZEROS) + 3 * PAGE
    data = bytearray(length)
    data[-1] = 1
    assert runs(bytes(data), 0) == [(length - PAGE, length)]
    assert runs(bytes(length), 0) == []


@pytest.mark.parametrize('position', [0, 3, 4, 2047, PAGE - 4, PAGE - 1])
def test_written_file_has_data_only_where_bytes_are(tmp_path, position):
    # The filesystem's view: one byte in page 2 of 4 means one data page.
    path = str(tmp_path / 'one.raw')
    data = bytearray(4 * PAGE)
    data[2 * PAGE + position] = 0x42
    with raw.SparseWriter(path) as writer:
        writer.write_at(8 * PAGE, bytes(data))
        writer.finish(16 * PAGE)
    assert ovakit.data_extents(path) == [(10 * PAGE, 11 * PAGE)]
    with open(path, 'rb') as f:
        f.seek(10 * PAGE + position)
        assert f.read(1) == b'\x42'
