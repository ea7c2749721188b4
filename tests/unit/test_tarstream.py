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

"""The streaming tar reader, on archives written by Python's tarfile."""

import io
import os
import random
import tarfile

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import tarstream
from tests import ovakit

CONTENT = {
    'Web server.ovf': b'<ovf/>' * 100,
    'Web server.mf': b'SHA256(x)= 00\r\n',
    'disk.vhd': random.Random(7).randbytes(300 * 1024 + 17),
    'empty': b'',
    'exact.bin': b'\x01' * 1024,
}


def make_tar(members=CONTENT, mode='w', fmt=tarfile.USTAR_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def with_members(*extra, first=None):
    """A tar with CONTENT, then ``extra`` ovakit Members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT) as t:
        for name, data in CONTENT.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for m in extra:
            if m.info is not None:
                t.addfile(m.info)
            else:
                info = tarfile.TarInfo(m.name)
                info.size = len(m.data)
                t.addfile(info, io.BytesIO(m.data))
    return buf.getvalue()


def read_all(data, chunk=None, max_chunk=None):
    """{name: bytes} read through iter_members from a read-only stream."""
    out = {}
    stream = ovakit.SequentialReader(data, max_chunk=max_chunk)
    for member in tarstream.iter_members(stream):
        parts = []
        while True:
            piece = member.read(chunk) if chunk else member.read()
            if not piece:
                break
            if chunk:
                assert len(piece) <= chunk
            parts.append(piece)
        out[member.name] = b''.join(parts)
        assert member.size == len(out[member.name])
    return out


@pytest.mark.parametrize('fmt', [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_formats(fmt):
    assert read_all(make_tar(fmt=fmt)) == CONTENT


@pytest.mark.parametrize('mode', ['w:gz', 'w:bz2', 'w:xz'])
def test_whole_archive_compressed(mode):
    # XenCenter's "compress" option gzips the whole OVA (.ova.gz).
    assert read_all(make_tar(mode=mode)) == CONTENT


@pytest.mark.parametrize('chunk,max_chunk', [(1, None), (511, None),
                                             (4096, 1000), (None, 7)])
def test_read_sizes(chunk, max_chunk):
    assert read_all(make_tar(), chunk, max_chunk) == CONTENT


def test_unread_members_are_skipped():
    stream = ovakit.SequentialReader(make_tar())
    names = []
    for member in tarstream.iter_members(stream):
        names.append(member.name)
        if member.name == 'disk.vhd':
            assert member.read(10) == CONTENT['disk.vhd'][:10]
    assert names == list(CONTENT)


def test_long_names():
    long = 'd' * 150 + '.vhd'
    members = {'a.ovf': b'x', long: b'data'}
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        assert read_all(make_tar(members, fmt=fmt)) == members


def test_pax_global_header_is_not_a_member():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT,
                      pax_headers={'comment': 'made by a test'}) as tar:
        for name, data in CONTENT.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert read_all(buf.getvalue()) == CONTENT


def test_gnu_base256_size():
    # SharpZipLib, XenCenter's tar writer, writes sizes over 8 GiB in GNU
    # base-256; the encoding is legal for any size.
    data = ovakit.gnu_base256_size(make_tar(), member_index=2)
    assert tarfile.open(fileobj=io.BytesIO(data)).getnames() == list(CONTENT)
    assert read_all(data) == CONTENT


def test_real_gzipped_ova():
    # ganeti's ova.ova: a real gzip-compressed OVA, read back by Python's
    # tarfile as the independent reader.
    path = os.path.join(ovakit.FIXTURES, 'ganeti-ova.ova')
    with open(path, 'rb') as f:
        members = read_all(f.read())
    with tarfile.open(path) as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar}
    assert sorted(members) == ['ganeti.ovf', 'new_disk.vmdk']
    assert members == expected


def test_directory_entries_are_not_members():
    data = with_members(ovakit.special_member('subdir', 'dir'))
    assert read_all(data) == CONTENT


@pytest.mark.parametrize('kind', ['symlink', 'hardlink', 'chr', 'blk',
                                  'fifo'])
def test_special_members_refused(kind):
    data = with_members(ovakit.special_member('disk2.vhd', kind))
    with pytest.raises(exception.InvalidPackage) as caught:
        read_all(data)
    assert '\n' not in str(caught.value)


def test_gnu_sparse_member_refused():
    info = tarfile.TarInfo('sparse.vhd')
    info.type = tarfile.GNUTYPE_SPARSE
    data = with_members(ovakit.Member('sparse.vhd', info=info))
    with pytest.raises(exception.InvalidPackage):
        read_all(data)


@pytest.mark.parametrize('options', [
    ['--format=gnu'],
    ['--format=pax', '--sparse-version=0.1'],
    ['--format=pax', '--sparse-version=1.0'],
])
def test_gnu_tar_sparse_members_refused(tmp_path, options):
    # GNU tar's pax sparse formats look like regular files with a block map
    # inside the data; each must be refused, not read as the disk.
    ovakit.require_tools('tar')
    (tmp_path / 'vm.ovf').write_bytes(b'<ovf/>')
    with open(tmp_path / 'disk.vhd', 'wb') as f:
        f.truncate(4 << 20)
        f.seek(1 << 20)
        f.write(b'data')
    archive = tmp_path / 'vm.ova'
    ovakit.run('tar', '-c', '--sparse', *options, '-f', str(archive),
               '-C', str(tmp_path), 'vm.ovf', 'disk.vhd')
    with pytest.raises(exception.InvalidPackage,
                       match="'disk.vhd' is a GNU sparse file"):
        read_all(archive.read_bytes())


@pytest.mark.parametrize('name', ['/etc/disk.vhd', '../disk.vhd',
                                  'a/../../disk.vhd', 'a/b/../../../x',
                                  '..', 'C:\\disk.vhd'])
def test_unsafe_names_refused(name):
    data = with_members(ovakit.Member(name, data=b'x'))
    with pytest.raises(exception.InvalidPackage) as caught:
        read_all(data)
    assert '\n' not in str(caught.value)


def test_pax_path_is_checked_too():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo('harmless.vhd')
        info.size = 1
        info.pax_headers = {'path': '../../escape.vhd'}
        t.addfile(info, io.BytesIO(b'x'))
    with pytest.raises(exception.InvalidPackage):
        read_all(buf.getvalue())


@pytest.mark.parametrize('second', ['disk.vhd', './disk.vhd',
                                    'x/../disk.vhd'])
def test_duplicate_names_refused(second):
    data = with_members(ovakit.Member(second, data=b'other'))
    with pytest.raises(exception.InvalidPackage) as caught:
        read_all(data)
    assert 'disk.vhd' in str(caught.value)


@pytest.mark.parametrize('data', [
    b'',
    b'not a tar at all',
    b'\x00' * 100,
    random.Random(3).randbytes(4096),
    b'\x1f\x8b\x08\x00' + b'\x00' * 600,     # gzip magic, corrupt body
    b'BZh9' + b'\x00' * 600,
], ids=['empty', 'text', 'short-zeros', 'random', 'bad-gzip', 'bad-bzip2'])
def test_not_a_tar(data):
    with pytest.raises(exception.InvalidPackage) as caught:
        read_all(data)
    assert '\n' not in str(caught.value)


def test_png_named_ova():
    path = os.path.join(ovakit.FIXTURES, 'glance-testserver-not-tar.ova')
    with open(path, 'rb') as f:
        with pytest.raises(exception.InvalidPackage):
            read_all(f.read())


@pytest.mark.parametrize('cut', [100, 512, 513, 2000, 6000, 50000])
def test_truncated(cut):
    data = make_tar()
    with pytest.raises(exception.InvalidPackage) as caught:
        read_all(data[:cut])
    assert '\n' not in str(caught.value)


def test_truncated_gzip():
    data = make_tar(mode='w:gz')
    with pytest.raises(exception.InvalidPackage):
        read_all(data[:len(data) // 2])


def test_damaged_header_checksum():
    data = bytearray(make_tar())
    # Second header: after the first member's 512-byte header and data.
    second = 512 + -(-len(CONTENT['Web server.ovf']) // 512) * 512
    data[second + 10] ^= 0x20
    with pytest.raises(exception.InvalidPackage):
        read_all(bytes(data))


def test_missing_end_of_archive_marker():
    data = make_tar()
    # The members end where the two zero blocks begin.
    end = data.rstrip(b'\0')
    end += b'\0' * (-len(end) % 512)
    with pytest.raises(exception.InvalidPackage):
        read_all(end)


def test_members_push_back_and_limits_read_live():
    members = tarstream.Members(ovakit.SequentialReader(make_tar()))
    first = next(members)
    members.push_back(first)
    assert next(members) is first
    members.limits.max_members = 3
    assert next(members).name == 'Web server.mf'
    assert next(members).name == 'disk.vhd'
    with pytest.raises(exception.InvalidPackage,
                       match='^tar archive has more than 3 members$'):
        next(members)


def test_repeated_names_allowed_when_the_reader_orders_them():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for data in (b'1', b'2'):
            info = tarfile.TarInfo('a')
            info.size = 1
            tar.addfile(info, io.BytesIO(data))
    members = tarstream.Members(ovakit.SequentialReader(buf.getvalue()))
    members.limits.unique_names = False
    assert [m.read() for m in members] == [b'1', b'2']
