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

"""Issue 13: the block allocation table scanned in bulk.

Runs of unused entries are compared whole; the allocated blocks found must
be exactly those an entry-by-entry reading of the big-endian table gives,
whatever the table holds. End to end, a large sparse VHD made by qemu-img
converts to what qemu-img converts it to.
"""

import array
import random
import struct
import sys

import pytest

from glance_xen_import.formats import vhd
from tests import ovakit
from tests.unit.test_vhd_decode import decode_file

UNUSED = 0xFFFFFFFF
MiB = ovakit.MiB
GiB = 1024 * MiB


def reference(table, n_blocks):
    """Allocated block numbers, one big-endian entry at a time."""
    entries = struct.unpack('>%dI' % (len(table) // 4), table)
    return [i for i in range(n_blocks) if entries[i] != UNUSED]


def as_decoded(table):
    """The table as the decoder holds it: host-order 32-bit entries."""
    bat = array.array('I')
    bat.frombytes(table)
    if sys.byteorder == 'little':
        bat.byteswap()
    return bat


# Entries that hold 0xFF bytes without being unused: they sit next to runs
# of unused entries, where a byte-wise search could misalign.
TRICKY = [0xFFFFFF00, 0x00FFFFFF, 0xFFFF0000, 0x0000FFFF, 0xFFFFFFFE,
          0x7FFFFFFF, 0, 1]


def random_table(rng, n_entries):
    entries = []
    while len(entries) < n_entries:
        run = rng.choice([1, 2, 3, 255, 256, 257, 511, 512, 1000])
        if rng.random() < 0.6:
            entries += [UNUSED] * run
        else:
            entries += [rng.choice(TRICKY) if rng.random() < 0.3
                        else rng.randrange(UNUSED) for _ in range(run)]
    return struct.pack('>%dI' % n_entries, *entries[:n_entries])


@pytest.mark.parametrize('seed', range(40))
def test_random_tables_match_the_reference(seed):
    rng = random.Random(seed)
    n_entries = rng.choice([1, 255, 256, 257, 1024, 5000, 65536])
    table = random_table(rng, n_entries)
    # The disk may need fewer blocks than the table has entries.
    n_blocks = rng.choice([n_entries, rng.randint(1, n_entries)])
    expected = reference(table, n_blocks)
    assert list(vhd.allocated_blocks(as_decoded(table), n_blocks)) == expected
    # An unused entry is all ones in either byte order.
    raw_order = array.array('I')
    raw_order.frombytes(table)
    assert list(vhd.allocated_blocks(raw_order, n_blocks)) == expected


@pytest.mark.parametrize('where', [0, 255, 256, 511, 512, 65535])
def test_one_allocated_entry_anywhere(where):
    entries = [UNUSED] * 65536
    entries[where] = 0xFFFFFF00
    table = struct.pack('>65536I', *entries)
    assert list(vhd.allocated_blocks(as_decoded(table), 65536)) == [where]


def test_empty_and_full_tables():
    empty = struct.pack('>1000I', *[UNUSED] * 1000)
    full = struct.pack('>1000I', *range(1000))
    assert list(vhd.allocated_blocks(as_decoded(empty), 1000)) == []
    assert list(vhd.allocated_blocks(as_decoded(full), 1000)) == list(
        range(1000))


def test_large_sparse_disk_like_qemu_img(tmp_path):
    # 64 GiB in 2 MiB blocks: 32768 entries. Data in the blocks on either
    # side of the 256-entry runs the scan compares at once, and the last.
    ovakit.require_tools('qemu-img', 'qemu-io')
    size = 64 * GiB
    path = str(tmp_path / 'sparse.vhd')
    ovakit.run('qemu-img', 'create', '-q', '-f', 'vpc', '-o',
               'subformat=dynamic,force_size=on', path, str(size))
    blocks = [0, 255, 256, 257, 511, 4096, 32767]
    commands = []
    for n, block in enumerate(blocks):
        commands += ['-c', 'write -q -P %d %d 4k' % (n + 1, block * 2 * MiB
                                                     + 1 * MiB)]
    ovakit.run('qemu-io', '-f', 'vpc', *commands, path)
    out = str(tmp_path / 'out.raw')
    info, sink = decode_file(path, out)
    assert info.allocated_blocks == len(blocks)
    assert sorted(offset for offset, _n in sink.writes) == [
        block * 2 * MiB for block in blocks]
    reference_raw = str(tmp_path / 'qemu.raw')
    ovakit.run('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', path,
               reference_raw)
    assert ovakit.sparse_first_difference(out, reference_raw) is None
