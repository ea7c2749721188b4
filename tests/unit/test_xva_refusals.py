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

"""Bad XVAs: each is refused with its reason, nothing is left behind.

Each input is a good XVA from tests/xvakit with one member list edit. The
disks: Ref:99 "root", 4 MiB + 1536 bytes, chunks 0 1 3 4 (4 is the short
last one); Ref:102 "data", 3 MiB, chunks 0 and 2. xapi streams Ref:102
first (string order of the ids).
"""

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import compression
from glance_xen_import.formats import tarstream
from glance_xen_import.formats import xva
from tests import ovakit
from tests.unit import xva_helpers
from tests import xvakit

MiB = xvakit.MiB
ROOT_SIZE = 4 * MiB + 1536


@pytest.fixture(scope='module')
def raws(tmp_path_factory):
    ovakit.require_tools('qemu-img', 'qemu-io')
    root = tmp_path_factory.mktemp('xva-bad')
    boot = xvakit.qemu_pattern_raw(str(root / 'root.raw'), ROOT_SIZE, [
        (0, 4096, 0x01), (MiB + 10, 100, 0x02), (3 * MiB, 512, 0x03),
        (ROOT_SIZE - 512, 512, 0x04)])
    data = xvakit.qemu_pattern_raw(str(root / 'data.raw'), 3 * MiB, [
        (512, 512, 0x05), (3 * MiB - 4096, 4096, 0x06)])
    return boot, data


def make(tmp_path, raws, edit=None, checksum='xxhash', **kwargs):
    path = str(tmp_path / 'vm.xva')
    disks = [xvakit.Disk(raws[0], 'root'), xvakit.Disk(raws[1], 'data')]
    xvakit.make_xva(path, disks, checksum=checksum, edit=edit, **kwargs)
    assert [d.ref for d in disks] == ['Ref:99', 'Ref:102']
    return path


def at(members, name):
    return [n for n, _d in members].index(name)


def pair(name, data, checksum='xxhash'):
    if checksum == 'sha1':
        return [(name, data), (name + '.checksum',
                               xvakit.sha1_text(data).encode())]
    return [(name, data), (name + '.xxhash', xvakit.xxh64_text(data).encode())]


def rewrite(name, change):
    """An edit giving chunk ``name`` new data and its right checksum."""
    def edit(members):
        i = at(members, name)
        members[i:i + 2] = pair(name, change(members[i][1]))
        return members
    return edit


def test_the_base_package_is_good(tmp_path, raws):
    xva_path = make(tmp_path, raws)
    pkg, paths, _read = xva_helpers.convert(xva_path, str(tmp_path))
    assert ovakit.first_difference(paths['Ref:99'], raws[0]) is None
    assert [(d.ref, i.chunks) for d, i in pkg.result.converted] == [
        ('Ref:99', 4), ('Ref:102', 2)]


def refused(tmp_path, raws, match, edit, **kwargs):
    path = make(tmp_path, raws, edit, **kwargs)
    return xva_helpers.refused(tmp_path, path, match)


@pytest.mark.parametrize('checksum', ['xxhash', 'sha1'])
def test_checksum_mismatch(tmp_path, raws, checksum):
    def flip(members):
        i = at(members, 'Ref:99/00000001')
        data = bytearray(members[i][1])
        data[MiB // 2] ^= 0x40
        members[i] = (members[i][0], bytes(data))
        return members

    error = refused(tmp_path, raws, '^chunk Ref:99/00000001 fails its %s '
                    'checksum: the XVA is damaged or altered$' % checksum,
                    flip, checksum=checksum)
    assert isinstance(error, exception.ChecksumMismatch)


def test_lower_case_xxhash_is_accepted(tmp_path, raws):
    def lower(members):
        return [(n, d.lower() if n.endswith('.xxhash') else d)
                for n, d in members]

    path = make(tmp_path, raws, lower)
    _pkg, paths, _read = xva_helpers.convert(path, str(tmp_path))
    assert ovakit.first_difference(paths['Ref:102'], raws[1]) is None


def test_chunk_out_of_order(tmp_path, raws):
    def swap(members):
        i, j = at(members, 'Ref:99/00000001'), at(members, 'Ref:99/00000003')
        members[i:i + 2], members[j:j + 2] = (members[j:j + 2],
                                              members[i:i + 2])
        return members

    refused(tmp_path, raws, '^chunk Ref:99/00000001 is out of order: chunks '
            'come in increasing order, and 00000003 came before$', swap)


def test_chunk_repeated(tmp_path, raws):
    def repeat(members):
        i = at(members, 'Ref:99/00000001')
        return members[:i + 2] + members[i:]

    refused(tmp_path, raws, '^chunk Ref:99/00000001 appears twice: chunks '
            'come in increasing order, and 00000001 came before$', repeat)


def test_chunk_past_the_disk_size(tmp_path, raws):
    def renumber_last(members):
        i = at(members, 'Ref:99/00000004')
        members[i:i + 2] = pair('Ref:99/00000005', members[i][1])
        return members

    refused(tmp_path, raws, '^chunk Ref:99/00000005 ends at byte 5244416, '
            r'past the end of disk Ref:99 \(4195840 bytes\)$', renumber_last)


def test_data_beyond_the_declared_size_in_the_last_chunk(tmp_path, raws):
    refused(tmp_path, raws, '^chunk Ref:99/00000004 ends at byte 4196352, '
            r'past the end of disk Ref:99 \(4195840 bytes\)$',
            rewrite('Ref:99/00000004', lambda data: data + bytes(512)))


def test_chunk_after_the_end_of_the_last_disk(tmp_path, raws):
    def extra(members):
        return members + pair('Ref:99/00000005', bytes(MiB))

    refused(tmp_path, raws, '^chunk Ref:99/00000005 lies past the end of '
            r'disk Ref:99 \(4195840 bytes\)$', extra)


def test_chunk_after_the_end_of_a_disk(tmp_path, raws):
    def extra(members):
        i = at(members, 'Ref:99/00000000')
        return members[:i] + pair('Ref:102/00000003', bytes(MiB)) + (
            members[i:])

    refused(tmp_path, raws, '^chunk Ref:102/00000003 lies past the end of '
            r'disk Ref:102 \(3145728 bytes\)$', extra)


def test_missing_checksum_member(tmp_path, raws):
    def drop(members):
        del members[at(members, 'Ref:99/00000001.xxhash')]
        return members

    refused(tmp_path, raws, '^chunk Ref:99/00000001 is followed by '
            r'Ref:99/00000003, not by its checksum member \(.checksum or '
            r'.xxhash\)$', drop)


def test_checksum_member_of_unknown_kind(tmp_path, raws):
    def rename(members):
        i = at(members, 'Ref:99/00000001.xxhash')
        members[i] = ('Ref:99/00000001.md5', members[i][1])
        return members

    refused(tmp_path, raws, '^checksum member Ref:99/00000001.md5 is of an '
            r'unknown kind: xapi writes .checksum \(SHA-1\) or .xxhash '
            r'\(XXH64\)$', rename)


@pytest.mark.parametrize('text,reason', [
    (b'0123456789ABCDEF0',
     'is 17 bytes; a xxhash checksum is 16 hex digits'),
    (b'0123456789ABCDEG', 'is not hexadecimal'),
])
def test_malformed_checksum_member(tmp_path, raws, text, reason):
    def bad(members):
        i = at(members, 'Ref:99/00000001.xxhash')
        members[i] = (members[i][0], text)
        return members

    refused(tmp_path, raws, '^checksum member Ref:99/00000001.xxhash %s$'
            % reason, bad)


def test_checksum_member_without_its_chunk(tmp_path, raws):
    def orphan(members):
        i = at(members, 'Ref:99/00000003')
        members.insert(i, ('Ref:99/00000002.xxhash', b'0' * 16))
        return members

    refused(tmp_path, raws, '^checksum member Ref:99/00000002.xxhash has no '
            'chunk before it$', orphan)


@pytest.mark.parametrize('name', ['Ref:99/garbage', 'Ref:99/2',
                                  'Ref:99/000000002'])
def test_not_a_chunk_name(tmp_path, raws, name):
    def rename(members):
        i = at(members, 'Ref:99/00000003')
        members[i] = (name, members[i][1])
        return members

    refused(tmp_path, raws, '^member %s is not a chunk of disk Ref:99 '
            r'\(Ref:99/NNNNNNNN\)$' % name, rename)


def test_ova_xml_not_first(tmp_path, raws):
    def move(members):
        return members[1:3] + members[:1] + members[3:]

    refused(tmp_path, raws, '^the package starts with Ref:102/00000000: an '
            r'OVA starts with its \.ovf descriptor, an XVA with ova.xml$',
            move)


def test_xva_reader_wants_ova_xml_first():
    first = tarstream.Member('Ref:1/00000000', 0)
    with pytest.raises(exception.InvalidPackage,
                       match='^the first member of an XVA must be ova.xml, '
                             'not Ref:1/00000000$'):
        xva.read_members(first, iter(()), None, None)


def test_ova_xml_oversized(tmp_path, raws):
    def huge(members):
        members[0] = ('ova.xml', xvakit.Zeros(16 * MiB + 1))
        return members

    refused(tmp_path, raws, '^ova.xml is 16777217 bytes, more than the '
            '16777216 accepted$', huge)


def test_unknown_ref_prefix(tmp_path, raws):
    def stranger(members):
        return members[:1] + pair('Ref:7/00000000', bytes(MiB)) + members[1:]

    refused(tmp_path, raws, '^member Ref:7/00000000 belongs to no disk of '
            'ova.xml$', stranger)


def test_disk_streamed_twice(tmp_path, raws):
    def again(members):
        return members + pair('Ref:102/00000000', bytes(MiB))

    refused(tmp_path, raws, '^disk Ref:102 is streamed twice: member '
            'Ref:102/00000000 comes after its end$', again)


def test_disks_out_of_string_order(tmp_path, raws):
    def numeric_order(members):
        first = at(members, 'Ref:99/00000000')
        return members[:1] + members[first:] + members[1:first]

    refused(tmp_path, raws, '^disk Ref:99 comes where disk Ref:102 was '
            'expected: an XVA streams disks in the string order of their '
            'ids$', numeric_order)


def test_member_after_the_disks(tmp_path, raws):
    def note(members):
        return members + [('notes.txt', b'hello')]

    refused(tmp_path, raws, '^member notes.txt follows the last disk, where '
            'an XVA ends$', note)


def test_disk_data_ends_early(tmp_path, raws):
    def cut(members):
        i = at(members, 'Ref:102/00000002')
        return members[:i] + members[i + 2:]

    refused(tmp_path, raws, '^disk Ref:102 stops at byte 1048576 of its '
            '3145728: member Ref:99/00000000 comes next$', cut)


def test_archive_ends_inside_a_disk(tmp_path, raws):
    def cut(members):
        return members[:-2]

    refused(tmp_path, raws, '^XVA is truncated: disk Ref:99 ends at byte '
            '4194304 of its 4195840$', cut)


def test_archive_ends_after_a_chunk(tmp_path, raws):
    refused(tmp_path, raws, '^XVA is truncated: chunk Ref:99/00000004 has '
            'no checksum member after it$', lambda members: members[:-1])


@pytest.mark.parametrize('kind', [None, 'gzip', 'zstd'])
def test_truncated_file(tmp_path, raws, kind):
    path = make(tmp_path, raws, compress=kind)
    with open(path, 'rb') as f:
        data = f.read()
    cut = str(tmp_path / 'cut.xva')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) * 2 // 3])
    xva_helpers.refused(tmp_path, cut, '(is truncated|ends before its end '
                        'marker)')


def test_oversized_chunk(tmp_path, raws):
    refused(tmp_path, raws, '^chunk Ref:99/00000001 is 1048577 bytes; XVA '
            'chunks are 1 MiB at most$',
            rewrite('Ref:99/00000001', lambda data: data + b'\x01'))


def test_short_chunk_that_is_not_the_last(tmp_path, raws):
    refused(tmp_path, raws, '^chunk Ref:99/00000001 is 1000 bytes: only the '
            'last chunk of a disk is shorter than 1 MiB$',
            rewrite('Ref:99/00000001', lambda data: data[:1000]))


def test_keepalive_flood(tmp_path, raws):
    def flood(members):
        i = at(members, 'Ref:102/00000000') + 2
        keepalives = []
        for number in range(1, 5):
            keepalives += pair('Ref:102/%08d' % number, b'')
        return members[:i] + keepalives + members[i:]

    refused(tmp_path, raws, '^disk Ref:102 has more empty keepalive chunks '
            'than it has chunks of data$', flood)


def test_gap_after_a_short_first_chunk_is_ambiguous(tmp_path, raws):
    """xapi counts gaps in units of the archive's first chunk."""
    small = xvakit.qemu_pattern_raw(str(tmp_path / 'small.raw'), 512 * 1024,
                                    [(0, 512, 0x07)])
    path = str(tmp_path / 'vm.xva')
    xvakit.make_xva(path, [xvakit.Disk(small, 'tiny', ref='Ref:1'),
                           xvakit.Disk(raws[1], 'data', ref='Ref:2')])
    xva_helpers.refused(
        tmp_path, path, '^chunk Ref:2/00000002 follows left-out chunks, but '
        'the first chunk of the XVA is 524288 bytes, not 1 MiB: the size of '
        'the gap is ambiguous$')


def test_disk_larger_than_accepted(tmp_path, raws):
    path = make(tmp_path, raws)
    xva_helpers.refused(tmp_path, path, '^XVA disk Ref:99 is 4195840 bytes, '
                        'more than the 4194304 accepted$',
                        max_disk_size=4 * MiB)


def test_compressed_bomb_chunk_is_refused_from_its_header(
        tmp_path, raws, monkeypatch):
    """1 GiB of zeros in one chunk member of a zstd XVA: never inflated."""
    ovakit.require_tools('zstd')
    inflated = []
    real_read = compression.Decompressor.read

    def read(self, size):
        data = real_read(self, size)
        inflated.append(len(data))
        return data

    monkeypatch.setattr(compression.Decompressor, 'read', read)

    def bomb(members):
        i = at(members, 'Ref:99/00000001')
        members[i] = (members[i][0], xvakit.Zeros(1 << 30))
        return members

    path = make(tmp_path, raws, bomb, compress='zstd')
    xva_helpers.refused(tmp_path, path, '^chunk Ref:99/00000001 is '
                        '1073741824 bytes; XVA chunks are 1 MiB at most$')
    # ova.xml, Ref:102 and Ref:99's first chunk, and that header.
    assert sum(inflated) < 5 * MiB


def test_on_descriptor_refuses_before_any_disk_data(tmp_path, raws):
    path = make(tmp_path, raws)
    seen = []

    def no_two_disk_vms(descriptor):
        seen.append(len(descriptor.disks))
        raise exception.InvalidPackage('two disks: refused by the caller')

    xva_helpers.refused(tmp_path, path, '^two disks: refused by the caller$',
                        on_descriptor=no_two_disk_vms)
    assert seen == [2]


def test_absent_first_chunk_reads_as_zeros(tmp_path, raws):
    """xapi's importer starts its running position at chunk -1."""
    def drop_first(members):
        i = at(members, 'Ref:102/00000000')
        return members[:i] + members[i + 2:]

    path = make(tmp_path, raws, drop_first)
    _pkg, paths, _read = xva_helpers.convert(path, str(tmp_path))
    with open(raws[1], 'rb') as f:
        expected = bytes(MiB) + f.read()[MiB:]
    with open(paths['Ref:102'], 'rb') as f:
        assert f.read() == expected


def test_thousands_of_keepalives_are_members_enough(tmp_path):
    """Past tarstream's default of 4096 members: the disk's size decides."""
    ovakit.require_tools('qemu-img', 'qemu-io')
    small = xvakit.qemu_pattern_raw(str(tmp_path / 'small.raw'), 2 * MiB, [
        (MiB, 512, 0x09)])
    disk = xvakit.Disk(small, 'slow SR', size=3000 * MiB)
    path = str(tmp_path / 'vm.xva')
    xvakit.make_xva(path, [disk], cd=None,
                    keepalive_before={0: range(2, 2999)})
    pkg, paths, _read = xva_helpers.convert(path, str(tmp_path))
    info = pkg.result.converted[0][1]
    assert info.chunks == 3 + 2997
    with open(paths[disk.ref], 'rb') as f:
        f.seek(MiB)
        assert f.read(512) == b'\x09' * 512
        f.seek(3000 * MiB - 4096)
        assert f.read() == bytes(4096)


def test_a_name_with_a_newline_is_quoted(tmp_path, raws):
    def forged(members):
        return members[:1] + [('Ref:7\nforged line', b'')] + members[1:]

    refused(tmp_path, raws, r"^member 'Ref:7\\nforged line' belongs to no "
            'disk of ova.xml$', forged)
