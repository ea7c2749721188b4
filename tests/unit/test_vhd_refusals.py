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

"""Every VHD refusal rule, each with one crafted input.

Inputs are qemu-made VHDs (tests/ovakit.py corpus) with one field changed
and, unless the rule is about checksums, the checksums made valid again, so
that only the rule under test can refuse them. The reason must be one line
and name the problem.
"""

import os
import re
import shutil
import struct
import sys
import tracemalloc

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import vhd
from tests import ovakit

MiB = ovakit.MiB
SECTOR = 512


class _OpenWatch(object):
    """Audit hook recording every file open whose path contains a word."""

    words = ()
    seen = []
    installed = False

    @classmethod
    def hook(cls, event, args):
        if cls.words and event in ('open', 'os.open') and args:
            path = str(args[0])
            if any(w in path for w in cls.words):
                cls.seen.append(path)

    @classmethod
    def watch(cls, *words):
        if not cls.installed:
            sys.addaudithook(cls.hook)
            cls.installed = True
        cls.words = words
        cls.seen = []

    @classmethod
    def stop(cls):
        cls.words = ()
        return cls.seen


def decode(path, member_size='file', **kwargs):
    """Decode ``path`` into a recording sink; return (info, writes)."""
    if member_size == 'file':
        member_size = os.path.getsize(path)
    writes = []

    class Sink(object):
        def write_at(self, offset, data):
            writes.append((offset, len(data)))

    with open(path, 'rb') as f:
        info = vhd.decode(ovakit.SequentialReader(f), Sink(),
                          member_size=member_size, **kwargs)
    return info, writes


def refused(path, reason, error=exception.InvalidDisk, member_size='file',
            **kwargs):
    """Assert ``path`` is refused with ``error``; return the message."""
    with pytest.raises(error) as caught:
        decode(path, member_size=member_size, **kwargs)
    message = str(caught.value)
    assert message and '\n' not in message
    assert re.search(reason, message, re.I), message
    return message


def working_copy(corpus, tmp_path, kind='qem2-dynamic', raw='gpt16'):
    path = str(tmp_path / ('%s.vhd' % kind))
    shutil.copy(corpus.vhd(kind, raw), path)
    return path


def header_offset(path):
    with open(path, 'rb') as f:
        copy = bytearray(f.read(SECTOR))
    return ovakit.get_field(copy, ovakit.FOOTER_FIELDS, 'data_offset')


def edit_header(path, seal=True, **fields):
    offset = header_offset(path)
    with open(path, 'r+b') as f:
        f.seek(offset)
        buf = bytearray(f.read(1024))
        for name, value in fields.items():
            ovakit.set_field(buf, ovakit.HEADER_FIELDS, name, value)
        if seal:
            ovakit.seal_header(buf)
        f.seek(offset)
        f.write(buf)


def read_header(path):
    offset = header_offset(path)
    with open(path, 'rb') as f:
        f.seek(offset)
        buf = bytearray(f.read(1024))
    return {name: ovakit.get_field(buf, ovakit.HEADER_FIELDS, name)
            for name in ovakit.HEADER_FIELDS}


def bat(path):
    h = read_header(path)
    with open(path, 'rb') as f:
        f.seek(h['table_offset'])
        return list(struct.unpack('>%dI' % h['max_table_entries'],
                                  f.read(4 * h['max_table_entries'])))


def set_bat(path, index, value):
    with open(path, 'r+b') as f:
        f.seek(read_header(path)['table_offset'] + 4 * index)
        f.write(struct.pack('>I', value))


def used(path):
    return [(i, e) for i, e in enumerate(bat(path)) if e != 0xFFFFFFFF]


def flip(path, offset):
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))


# -- footer -------------------------------------------------------------------

def test_bad_cookie_everywhere(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, cookie=b'conectiy')
    refused(path, 'cookie|footer')


def test_bad_cookie_in_trailing_footer(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, where='tail', cookie=b'Conectix')
    refused(path, 'cookie|footer')


def test_bad_cookie_fixed(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'qem2-fixed')
    ovakit.edit_footer(path, cookie=b'conectiy')
    refused(path, 'cookie|footer')


@pytest.mark.parametrize('where', ['both', 'tail', 'copy'])
def test_footer_checksum(corpus, tmp_path, where):
    path = working_copy(corpus, tmp_path)
    # A reserved byte changed without updating the checksum.
    ovakit.edit_footer(path, where=where, seal=False, saved_state=0)
    size = os.path.getsize(path)
    if where in ('both', 'copy'):
        flip(path, 300)
    if where in ('both', 'tail'):
        flip(path, size - SECTOR + 300)
    refused(path, 'checksum|differ')


def test_footer_checksum_fixed(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'caml-fixed')
    flip(path, os.path.getsize(path) - SECTOR + 300)
    refused(path, 'checksum')


def test_footer_copy_differs_from_footer(corpus, tmp_path):
    # Both valid, but they describe different disks.
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, where='tail', uuid=b'\x11' * 16)
    refused(path, 'differ|match|copy')


def test_footer_copy_differs_in_size(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    size = ovakit.footer_info(path)['current_size']
    ovakit.edit_footer(path, where='tail', current_size=size - 2 * MiB)
    refused(path, 'differ|match|copy')


def test_footer_version(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, version=0x00020000)
    refused(path, 'version', error=exception.InvalidDisk)


@pytest.mark.parametrize('disk_type', [0, 1, 5, 6, 0x100])
def test_unknown_disk_type(corpus, tmp_path, disk_type):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, disk_type=disk_type)
    refused(path, 'type')


def test_fixed_footer_size_mismatch(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'qem2-fixed')
    size = ovakit.footer_info(path)['current_size']
    ovakit.edit_footer(path, current_size=size - SECTOR)
    refused(path, 'size')


def test_fixed_file_claims_dynamic(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'qem2-fixed')
    ovakit.edit_footer(path, disk_type=ovakit.DISK_DYNAMIC, data_offset=512)
    refused(path, 'type|fixed|copy')


@pytest.mark.parametrize('current_size', [0, 16 * MiB + 100])
def test_current_size_not_whole_sectors(corpus, tmp_path, current_size):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, current_size=current_size)
    refused(path, 'size')


def test_current_size_over_maximum(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'caml')
    size = ovakit.footer_info(path)['current_size']
    refused(path, 'size|maximum', error=exception.InvalidDisk,
            max_virtual_size=size - SECTOR)
    _info, writes = (None, [])
    with pytest.raises(exception.InvalidDisk):
        _info, writes = decode(path, max_virtual_size=size - SECTOR)
    assert writes == []


def test_fixed_current_size_over_maximum(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'qem2-fixed')
    size = ovakit.footer_info(path)['current_size']
    for member_size in ('file', None):
        refused(path, 'size|maximum', member_size=member_size,
                max_virtual_size=size - 4096)


@pytest.mark.parametrize('data_offset', [0, 100, 2 ** 40, 2 ** 64 - 1])
def test_header_offset_out_of_place(corpus, tmp_path, data_offset):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, data_offset=data_offset)
    refused(path, 'offset|header|outside|truncated')


# -- dynamic header -----------------------------------------------------------

def test_header_cookie(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    edit_header(path, cookie=b'cxsparsf')
    refused(path, 'cookie|cxsparse')


def test_header_checksum(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    edit_header(path, seal=False, parent_timestamp=12345)
    refused(path, 'checksum')


@pytest.mark.parametrize('version', [0, 0x00010001, 0x00020000])
def test_header_version(corpus, tmp_path, version):
    path = working_copy(corpus, tmp_path)
    edit_header(path, version=version)
    refused(path, 'version')


@pytest.mark.parametrize('block_size', [3 * MiB, 2 * MiB + 512, 256, 0,
                                        1 << 31])
def test_block_size(corpus, tmp_path, block_size):
    path = working_copy(corpus, tmp_path)
    edit_header(path, block_size=block_size)
    refused(path, 'block size')


def test_block_size_too_big_but_consistent(corpus, tmp_path):
    # 1 GiB blocks, power of two, one BAT entry is enough for 16 MiB.
    path = working_copy(corpus, tmp_path)
    edit_header(path, block_size=1 << 30)
    refused(path, 'block size|outside|truncated')


def test_max_table_entries_too_small(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    mte = read_header(path)['max_table_entries']
    assert mte == 8
    edit_header(path, max_table_entries=mte - 1)
    refused(path, 'entries|table')


def test_max_table_entries_huge_costs_no_memory(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    edit_header(path, max_table_entries=0xFFFFFFFF)
    tracemalloc.start()
    try:
        for member_size in ('file', None):
            refused(path, 'entries|table|outside|truncated',
                    member_size=member_size)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB


@pytest.mark.parametrize('table_offset', [0, 512, 1024, 1537])
def test_table_offset_inside_metadata(corpus, tmp_path, table_offset):
    path = working_copy(corpus, tmp_path)
    edit_header(path, table_offset=table_offset)
    refused(path, 'table|offset|before')


def test_bat_outside_member(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    size = os.path.getsize(path)
    edit_header(path, table_offset=size + 10 * SECTOR)
    refused(path, 'outside|truncated|table')
    refused(path, 'outside|truncated|table', member_size=None)


def test_bat_reaches_past_footer(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    size = os.path.getsize(path)
    edit_header(path, table_offset=size - SECTOR)
    refused(path, 'outside|truncated|table|footer')


# -- BAT entries --------------------------------------------------------------

def test_bat_entry_outside_member(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    index, _entry = used(path)[0]
    set_bat(path, index, os.path.getsize(path) // SECTOR + 10)
    refused(path, 'outside|beyond|truncated')
    refused(path, 'outside|beyond|truncated', member_size=None)


def test_bat_entry_overlaps_footer(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    index, _entry = used(path)[0]
    # Block span is 512 + 2 MiB: this one would end after the footer.
    set_bat(path, index, (os.path.getsize(path) - 2 * MiB) // SECTOR)
    refused(path, 'outside|beyond|truncated|overlap|footer')


def test_bat_entry_inside_metadata(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    index, _entry = used(path)[0]
    set_bat(path, index, 1)        # the dynamic header
    refused(path, 'outside|before|metadata|data area|already')


@pytest.mark.parametrize('shift', [0, 1, 4096])
def test_overlapping_bat_entries(corpus, tmp_path, shift):
    path = working_copy(corpus, tmp_path)
    (first, entry), (second, _e) = used(path)[:2]
    set_bat(path, second, entry + shift)
    refused(path, 'overlap|twice|same|before|already')


def test_overlapping_out_of_order_entries(corpus, tmp_path):
    path = working_copy(corpus, tmp_path, 'reverse')
    entries = used(path)
    assert len(entries) >= 3
    # The last block in file order now starts inside the first one.
    (a, first_sector) = min(entries, key=lambda e: e[1])
    (b, _s) = max(entries, key=lambda e: e[1])
    set_bat(path, b, first_sector + 8)
    refused(path, 'overlap|before|already')


# -- truncation and trailing bytes --------------------------------------------

@pytest.mark.parametrize('cut', [1, SECTOR, SECTOR + 1, 1 * MiB])
@pytest.mark.parametrize('kind', ['qem2-dynamic', 'reverse', 'qem2-fixed'])
def test_truncated(corpus, tmp_path, kind, cut):
    path = working_copy(corpus, tmp_path, kind)
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(size - cut)
    if kind == 'qem2-fixed' and cut == 1:
        # One byte short, a fixed VHD ends in a legal 511-byte footer.
        for member_size in ('file', None):
            info, _writes = decode(path, member_size=member_size)
            assert info.current_size == size - SECTOR
        refused(path, 'truncat|remain', member_size=size)
        return
    for member_size in ('file', None, size):
        refused(path, 'truncat|footer|cookie|outside|size|remain',
                member_size=member_size)


def test_truncated_to_metadata(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    with open(path, 'r+b') as f:
        f.truncate(1000)
    for member_size in ('file', None):
        refused(path, 'truncat|short|footer|remain', member_size=member_size)


@pytest.mark.parametrize('kind', ['qem2-dynamic', 'qem2-fixed'])
def test_bytes_after_footer(corpus, tmp_path, kind):
    path = working_copy(corpus, tmp_path, kind)
    with open(path, 'ab') as f:
        f.write(b'\0' * SECTOR)
    refused(path, 'footer|after|cookie|size|differ')


@pytest.mark.parametrize('kind', ['qem2-dynamic', 'qem2-fixed'])
def test_stream_longer_than_member_size(corpus, tmp_path, kind):
    path = working_copy(corpus, tmp_path, kind)
    refused(path, 'after|footer|differ|cookie|size|outside',
            member_size=os.path.getsize(path) - SECTOR)


def test_member_size_larger_than_stream(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    refused(path, 'truncat|remain|footer',
            member_size=os.path.getsize(path) + 4096)


# -- kinds refused on purpose -------------------------------------------------

@pytest.mark.parametrize('member_size', ['file', None])
def test_differencing_refused_without_opening_parent(
        corpus, tmp_path, member_size):
    parent = str(tmp_path / 'gxi-parent-disk.vhd')
    shutil.copy(corpus.vhd('qem2-dynamic', 'gpt16'), parent)
    child = str(tmp_path / 'child.vhd')
    ovakit.make_differencing(corpus.vhd('qem2-dynamic', 'gpt16'), child,
                             parent)
    _OpenWatch.watch('gxi-parent-disk')
    try:
        refused(child, 'differencing|parent|type 4',
                error=exception.UnsupportedDisk, member_size=member_size)
    finally:
        opened = _OpenWatch.stop()
    assert opened == []


def test_differencing_in_trailing_footer_only(corpus, tmp_path):
    path = working_copy(corpus, tmp_path)
    ovakit.edit_footer(path, where='tail', disk_type=4)
    refused(path, 'differ|type|copy')


def test_blktap_encrypted_batmap(corpus, tmp_path):
    disk = ovakit.DynamicVhd.load(corpus.vhd('qem2-dynamic', 'gpt16'))
    path = str(tmp_path / 'crypt.vhd')
    disk.write(path, batmap=True, batmap_encrypted=True, align_data=True)
    ovakit.set_creator(path, 'tap')
    _info, writes = None, []
    with pytest.raises(exception.UnsupportedDisk) as caught:
        _info, writes = decode(path)
    assert re.search('encrypt', str(caught.value), re.I)
    assert writes == []


def test_refusals_before_data_write_nothing(corpus, tmp_path):
    # Metadata problems are found before any data reaches the sink.
    path = working_copy(corpus, tmp_path)
    index, _entry = used(path)[-1]
    set_bat(path, index, os.path.getsize(path) // SECTOR + 10)
    writes = []

    class Sink(object):
        def write_at(self, offset, data):
            writes.append(offset)

    with open(path, 'rb') as f:
        with pytest.raises(exception.InvalidDisk):
            vhd.decode(ovakit.SequentialReader(f), Sink(),
                       member_size=os.path.getsize(path))
    assert writes == []
