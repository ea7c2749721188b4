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

"""VHD -> RAW conversion checked against independent readers.

Each VHD is made by qemu-img/qemu-io from a RAW disk with a real partition
table and ext4 filesystem (tests/ovakit.py). The decoder's output must equal
the source RAW byte for byte, what libvhdi (pyvhdi) reads from the VHD, and
what qemu-img reads when it sizes the disk by current_size.
"""

import os
import shutil
import struct

import pytest

from glance_xen_import.formats import raw as raw_format
from glance_xen_import.formats import vhd
from tests import ovakit

MiB = ovakit.MiB

# Kinds whose current_size is exactly the RAW's size (force_size / Xen).
EXACT_KINDS = ('qem2-dynamic', 'qem2-fixed', 'reverse', 'caml', 'tap',
               'dutl', 'caml-fixed', 'tap-fixed', 'dutl-fixed')
ALL_KINDS = ('qemu-dynamic', 'qemu-fixed') + EXACT_KINDS
CREATORS = {'qemu': 'qemu', 'qem2': 'qem2', 'reverse': 'qem2',
            'caml': 'caml', 'tap': 'tap', 'dutl': 'dutl'}


def decode_file(vhd_path, out_path, with_size=True, max_chunk=None,
                **kwargs):
    """Decode ``vhd_path`` through a read-only stream into ``out_path``."""
    sink = ovakit.FileSink(out_path)
    info = None
    try:
        with open(vhd_path, 'rb') as f:
            stream = ovakit.SequentialReader(f, max_chunk=max_chunk)
            size = os.path.getsize(vhd_path) if with_size else None
            info = vhd.decode(stream, sink, member_size=size, **kwargs)
            assert stream.read(1) == b''   # nothing left behind
    finally:
        sink.close(info.current_size if info else None)
    return info, sink


def assert_converts_like_libvhdi(path, src, tmp_path):
    """libvhdi reads ``src`` from the VHD, and so does our decoder."""
    assert ovakit.pyvhdi_first_difference(path, src.path) is None
    out = str(tmp_path / 'out.raw')
    decode_file(path, out)
    assert ovakit.first_difference(out, src.path) is None


def bat_of(path):
    """The allocated BAT entries of a dynamic VHD, by ovakit's reader."""
    disk = ovakit.DynamicVhd.load(path)
    with open(path, 'rb') as f:
        data = f.read()
    table = ovakit.get_field(disk.header, ovakit.HEADER_FIELDS,
                             'table_offset')
    entries = struct.unpack_from('>%dI' % disk.max_table_entries, data,
                                 table)
    return [(i, e) for i, e in enumerate(entries) if e != 0xFFFFFFFF]


@pytest.mark.parametrize('raw_name', ['gpt16', 'mbr19'])
@pytest.mark.parametrize('kind', ALL_KINDS)
def test_output_matches_libvhdi(corpus, tmp_path, kind, raw_name):
    path = corpus.vhd(kind, raw_name)
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(path, out)
    footer = ovakit.footer_info(path)
    assert info.current_size == footer['current_size']
    assert os.path.getsize(out) == footer['current_size']
    assert ovakit.pyvhdi_first_difference(path, out) is None
    assert info.disk_type == ('fixed' if kind.endswith('fixed')
                              else 'dynamic')
    assert info.creator == CREATORS[kind.split('-')[0]]


@pytest.mark.parametrize('raw_name', ['gpt16', 'mbr19'])
@pytest.mark.parametrize('kind', EXACT_KINDS)
def test_output_equals_source_raw(corpus, tmp_path, kind, raw_name):
    out = str(tmp_path / 'out.raw')
    decode_file(corpus.vhd(kind, raw_name), out)
    assert ovakit.first_difference(out, corpus.raw(raw_name).path) is None


@pytest.mark.parametrize('kind', ['qemu-dynamic', 'qemu-fixed'])
def test_qemu_rounded_size_is_source_plus_zeros(corpus, tmp_path, kind):
    # qemu-img without force_size rounds the size up to a CHS multiple.
    src = corpus.raw('mbr19')
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(corpus.vhd(kind, 'mbr19'), out)
    assert info.current_size > src.size
    with open(out, 'rb') as f, open(src.path, 'rb') as s:
        assert f.read(src.size) == s.read()
        assert f.read().count(0) == info.current_size - src.size


@pytest.mark.parametrize('kind', ['qemu-dynamic', 'qemu-fixed',
                                  'qem2-dynamic', 'qem2-fixed', 'reverse',
                                  'tap', 'tap-fixed'])
def test_output_matches_qemu_img(corpus, tmp_path, kind):
    # Creators qemu-img 7.2 sizes from current_size (or whose CHS equals
    # it): qemu's own reading must agree byte for byte.
    path = corpus.vhd(kind, 'mbr19')
    out = str(tmp_path / 'out.raw')
    decode_file(path, out)
    expected = ovakit.qemu_to_raw(path, str(tmp_path / 'qemu.raw'))
    assert ovakit.first_difference(out, expected) is None


@pytest.mark.parametrize('kind', ['caml', 'dutl', 'caml-fixed',
                                  'dutl-fixed'])
def test_matches_qemu_img_forced_to_current_size(corpus, tmp_path, kind):
    path = corpus.vhd(kind, 'mbr19')
    out = str(tmp_path / 'out.raw')
    decode_file(path, out)
    expected = ovakit.qemu_to_raw(path, str(tmp_path / 'qemu.raw'),
                                  size_calc='current_size')
    assert ovakit.first_difference(out, expected) is None


@pytest.mark.parametrize('kind', ['caml', 'dutl', 'tap'])
def test_xen_creator_non_chs_size_keeps_the_tail(corpus, tmp_path, kind):
    # XenCenter disk of 1 GiB + 3 MiB: 304 KiB past its CHS size. The
    # output must have current_size bytes with the last 4 KiB intact.
    src = corpus.raw('mbr1g3m')
    path = corpus.vhd(kind, 'mbr1g3m')
    assert ovakit.chs_bytes(src.size) < src.size
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(path, out)
    assert info.current_size == src.size == os.path.getsize(out)
    assert ovakit.sparse_first_difference(out, src.path) is None
    with open(out, 'rb') as f:
        f.seek(src.tail_offset)
        assert f.read() == ovakit.TAIL_MARKER
    assert ovakit.pyvhdi_size(path) == src.size


@pytest.mark.parametrize('kind', ['caml', 'dutl'])
def test_qemu_img_7_cuts_xen_disks(corpus, tmp_path, kind):
    """Why the converter exists: qemu-img (< 10.0) sizes these by CHS."""
    ovakit.require_tools('qemu-img')
    src = corpus.raw('mbr1g3m')
    qemu_size = ovakit.qemu_virtual_size(corpus.vhd(kind, 'mbr1g3m'))
    if qemu_size == src.size:
        pytest.skip('this qemu-img (>= 10.0) sizes %s by current_size'
                    % kind)
    assert qemu_size == ovakit.chs_bytes(src.size)
    assert qemu_size < src.tail_offset + len(ovakit.TAIL_MARKER)


def test_out_of_order_blocks_reverse(corpus, tmp_path):
    path = corpus.vhd('reverse', 'gpt16')
    entries = bat_of(path)
    assert [e for _, e in entries] != sorted(e for _, e in entries)
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(path, out)
    assert info.out_of_order is True
    assert info.allocated_blocks == len(entries)
    assert ovakit.first_difference(out, corpus.raw('gpt16').path) is None


@pytest.mark.parametrize('kind', ['qem2-dynamic', 'caml', 'dutl'])
def test_ascending_blocks_are_in_order(corpus, tmp_path, kind):
    path = corpus.vhd(kind, 'gpt16')
    entries = bat_of(path)
    assert [e for _, e in entries] == sorted(e for _, e in entries)
    info, _sink = decode_file(path, str(tmp_path / 'out.raw'))
    assert info.out_of_order is False
    assert info.allocated_blocks == len(entries)
    assert info.block_size == 2 * MiB


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_shuffled_blocks_with_gaps(corpus, tmp_path, seed):
    # blktap SR files: write order, 4 KiB-aligned data with gap sectors.
    src = corpus.raw('gpt16')
    disk = ovakit.DynamicVhd.load(corpus.vhd('qem2-dynamic', 'gpt16'))
    path = str(tmp_path / 'shuffled.vhd')
    disk.write(path, order='shuffle', seed=seed, align_data=True,
               batmap=True)
    ovakit.set_creator(path, 'tap')
    assert ovakit.pyvhdi_first_difference(path, src.path) is None
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(path, out)
    entries = [e for _, e in bat_of(path)]
    assert info.out_of_order is (entries != sorted(entries))
    assert ovakit.first_difference(out, src.path) is None


def test_bat_larger_than_needed(corpus, tmp_path):
    # vhd-util create -S preallocates a BAT for a larger size.
    src = corpus.raw('gpt16')
    disk = ovakit.DynamicVhd.load(corpus.vhd('qem2-dynamic', 'gpt16'))
    path = str(tmp_path / 'big-bat.vhd')
    disk.write(path, max_table_entries=disk.max_table_entries * 64 + 3)
    assert_converts_like_libvhdi(path, src, tmp_path)


def test_header_and_bat_further_apart(corpus, tmp_path):
    # The spec only requires data_offset and table_offset to be honoured:
    # header at 1024 and BAT at 4096 leave unused sectors between.
    src = corpus.raw('gpt16')
    disk = ovakit.DynamicVhd.load(corpus.vhd('qem2-dynamic', 'gpt16'))
    ovakit.set_field(disk.footer, ovakit.FOOTER_FIELDS, 'data_offset', 1024)
    path = str(tmp_path / 'spread.vhd')
    disk.write(path, table_offset=4096, gap_after_bat=8192)
    assert_converts_like_libvhdi(path, src, tmp_path)


def test_tap_without_batmap(corpus, tmp_path):
    # Older blktap files (v1.1) may have no batmap: the first block can
    # start right after the BAT.
    src = corpus.raw('gpt16')
    disk = ovakit.DynamicVhd.load(corpus.vhd('qem2-dynamic', 'gpt16'))
    path = str(tmp_path / 'tap11.vhd')
    disk.write(path)
    ovakit.set_creator(path, 'tap')
    ovakit.edit_footer(path, creator_version=0x00010001)
    assert_converts_like_libvhdi(path, src, tmp_path)


@pytest.mark.parametrize('kind', ['qem2-dynamic', 'reverse', 'tap',
                                  'qem2-fixed', 'caml-fixed'])
def test_without_member_size(corpus, tmp_path, kind):
    # A compressed or chunked member has no size known in advance.
    path = corpus.vhd(kind, 'gpt16')
    out = str(tmp_path / 'out.raw')
    decode_file(path, out, with_size=False)
    assert ovakit.first_difference(out, corpus.raw('gpt16').path) is None


@pytest.mark.parametrize('kind', ['qem2-dynamic', 'reverse', 'qem2-fixed'])
def test_short_reads(corpus, tmp_path, kind):
    # A pipe hands out fewer bytes than asked; 1000 is not sector aligned.
    path = corpus.vhd(kind, 'gpt16')
    out = str(tmp_path / 'out.raw')
    decode_file(path, out, max_chunk=1000)
    assert ovakit.first_difference(out, corpus.raw('gpt16').path) is None


def test_fixed_511_byte_footer(corpus, tmp_path):
    # Spec: before Virtual PC 2004 the footer was 511 bytes long.
    path = str(tmp_path / 'short-footer.vhd')
    shutil.copy(corpus.vhd('qem2-fixed', 'gpt16'), path)
    with open(path, 'r+b') as f:
        f.seek(-1, os.SEEK_END)
        assert f.read() == b'\0'
        f.truncate(os.path.getsize(path) - 1)
    for with_size in (True, False):
        out = str(tmp_path / ('out%d.raw' % with_size))
        decode_file(path, out, with_size=with_size)
        assert ovakit.first_difference(out, corpus.raw('gpt16').path) is None


def test_hidden_byte_may_differ(corpus, tmp_path):
    # blktap keeps its 'hidden' flag in footer byte 85; it may differ
    # between the copy and the footer (research notes 1.6.4).
    path = str(tmp_path / 'hidden.vhd')
    shutil.copy(corpus.vhd('tap', 'gpt16'), path)
    ovakit.edit_footer(path, where='copy', hidden=1)
    out = str(tmp_path / 'out.raw')
    decode_file(path, out)
    assert ovakit.first_difference(out, corpus.raw('gpt16').path) is None


def test_metadata_callback_comes_before_data(corpus, tmp_path):
    path = corpus.vhd('reverse', 'gpt16')
    events = []

    class Sink(object):
        def write_at(self, offset, data):
            events.append(('write', offset, len(data)))

    def on_metadata(info, upper_bound):
        events.append(('meta', info.current_size, upper_bound))

    with open(path, 'rb') as f:
        info = vhd.decode(ovakit.SequentialReader(f), Sink(),
                          member_size=os.path.getsize(path),
                          on_metadata=on_metadata)
    metas = [e for e in events if e[0] == 'meta']
    assert len(metas) == 1 and events[0][0] == 'meta'
    _, size, bound = metas[0]
    assert size == info.current_size
    written = sum(n for kind, _, n in events if kind == 'write')
    assert written <= bound <= info.current_size
    assert bound <= info.allocated_blocks * 2 * MiB


def test_fixed_metadata_bound(corpus, tmp_path):
    path = corpus.vhd('qem2-fixed', 'gpt16')
    seen = []
    with open(path, 'rb') as f:
        vhd.decode(ovakit.SequentialReader(f), ovakit.FileSink(
            str(tmp_path / 'o')), member_size=os.path.getsize(path),
            on_metadata=lambda info, bound: seen.append(bound))
    assert seen == [corpus.raw('gpt16').size]


@pytest.mark.parametrize('kind', ['qem2-dynamic', 'reverse', 'qem2-fixed',
                                  'caml'])
def test_sparse_writer_output(corpus, tmp_path, kind):
    """Through SparseWriter: same bytes, and every zero page is a hole."""
    src = corpus.raw('gpt16')
    path = corpus.vhd(kind, 'gpt16')
    out = str(tmp_path / 'out.raw')
    with raw_format.SparseWriter(out) as writer:
        with open(path, 'rb') as f:
            info = vhd.decode(ovakit.SequentialReader(f), writer,
                              member_size=os.path.getsize(path))
        writer.finish(info.current_size)
    assert ovakit.first_difference(out, src.path) is None
    assert ovakit.zero_pages_in_data(out) == []
    pages = ovakit.nonzero_pages(src.path)
    assert writer.data_bytes == pages * 4096
    assert ovakit.allocated_bytes(out) <= pages * 4096 + 64 * 1024


def test_max_virtual_size_boundary(corpus, tmp_path):
    path = corpus.vhd('caml', 'gpt16')
    size = corpus.raw('gpt16').size
    info, _sink = decode_file(path, str(tmp_path / 'out.raw'),
                              max_virtual_size=size)
    assert info.current_size == size


def test_large_sparse_virtual_size(tmp_path):
    # A VHD may declare far more than it stores: 64 GiB with 2 blocks.
    ovakit.require_tools('qemu-img', 'qemu-io')
    path = str(tmp_path / 'big.vhd')
    ovakit.run('qemu-img', 'create', '-q', '-f', 'vpc', '-o',
               'subformat=dynamic,force_size=on', path, '64G')
    ovakit.run('qemu-io', '-f', 'vpc', '-c', 'write -q -P 0x5a 0 4k',
               '-c', 'write -q -P 0xa5 %d 4k' % (64 * 1024 ** 3 - 4096),
               path)
    out = str(tmp_path / 'out.raw')
    with raw_format.SparseWriter(out) as writer:
        with open(path, 'rb') as f:
            info = vhd.decode(ovakit.SequentialReader(f), writer,
                              member_size=os.path.getsize(path))
        writer.finish(info.current_size)
    assert os.path.getsize(out) == 64 * 1024 ** 3
    assert writer.data_bytes == 8192
    with open(out, 'rb') as f:
        assert f.read(4096) == b'\x5a' * 4096
        f.seek(-4096, os.SEEK_END)
        assert f.read() == b'\xa5' * 4096
    assert ovakit.allocated_bytes(out) <= 64 * 1024


def test_empty_dynamic_disk(tmp_path):
    ovakit.require_tools('qemu-img')
    path = str(tmp_path / 'empty.vhd')
    ovakit.run('qemu-img', 'create', '-q', '-f', 'vpc', '-o',
               'subformat=dynamic,force_size=on', path, '10M')
    out = str(tmp_path / 'out.raw')
    info, sink = decode_file(path, out)
    assert info.allocated_blocks == 0
    assert sum(n for _, n in sink.writes) == 0
    assert os.path.getsize(out) == 10 * MiB
    assert ovakit.pyvhdi_first_difference(path, out) is None


@pytest.mark.parametrize('subformat', ['dynamic', 'fixed'])
def test_size_not_page_aligned(tmp_path, subformat):
    # 8 MiB + 1.5 KiB: the last block and the last page are partial, and
    # the very last sector holds data.
    ovakit.require_tools('qemu-img')
    size = 8 * MiB + 1536
    src = ovakit.make_pattern_raw(str(tmp_path / 'src.raw'), size,
                                  [(0, 4096), (size - 512, 512)])
    path = ovakit.qemu_vhd(src, str(tmp_path / 'odd.vhd'), subformat)
    out = str(tmp_path / 'out.raw')
    decode_file(path, out)
    assert ovakit.first_difference(out, src) is None


def test_bytes_past_current_size_in_last_block_are_dropped(corpus,
                                                           tmp_path):
    # 19 MiB in 2 MiB blocks: block 9 covers 18-20 MiB, the disk ends at
    # 19 MiB. Whatever the block holds past that is not part of the disk.
    src = corpus.raw('gpt19')
    disk = ovakit.DynamicVhd.load(corpus.vhd('caml', 'gpt19'))
    block = bytearray(disk.blocks[9])
    beyond = disk.bitmap_size + 1 * MiB
    block[beyond:] = b'\xee' * (len(block) - beyond)
    disk.blocks[9] = bytes(block)
    path = str(tmp_path / 'junk-tail.vhd')
    disk.write(path, table_offset=2048)
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(path, out)
    assert info.current_size == src.size == 19 * MiB
    assert ovakit.first_difference(out, src.path) is None
    assert ovakit.pyvhdi_first_difference(path, out) is None


@pytest.mark.parametrize('block_size', [4096, 64 * 1024, 512 * 1024,
                                        16 * MiB])
def test_other_block_sizes(corpus, tmp_path, block_size):
    # The spec allows any power of two sectors; Virtual PC used 512 KiB.
    src = corpus.raw('gpt19')
    disk = ovakit.DynamicVhd.load(corpus.vhd('caml', 'gpt19'))
    path = str(tmp_path / 'blocks.vhd')
    disk.reblock(block_size).write(path, order='shuffle', seed=block_size)
    assert ovakit.pyvhdi_first_difference(path, src.path) is None
    out = str(tmp_path / 'out.raw')
    info, _sink = decode_file(path, out)
    assert info.block_size == block_size
    assert ovakit.first_difference(out, src.path) is None
