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

"""Property: the tar, OVF and manifest readers never fail uncleanly.

Inputs are real archives and the real XenCenter OVF with bytes flipped,
removed or inserted and fields set to hostile values. Every input must give
a result that keeps the readers' promises, or an XenImportError with a
one-line reason; any other exception escaping is a bug.
"""

import io
import random
import re
import tarfile

import hypothesis
from hypothesis import strategies as st
import pytest

from glance_xen_import import exception
from glance_xen_import.formats import manifest
from glance_xen_import.formats import ovf
from glance_xen_import.formats import tarstream
from tests import ovakit


def clean(message):
    assert message and '\n' not in message


def plain_name(name):
    parts = name.split('/')
    return (name and not name.startswith('/') and '..' not in parts
            and '\\' not in name and '\x00' not in name)


# -- tar ----------------------------------------------------------------------

def _archive(mode):
    members = {
        'Web server.ovf': ovakit.ovf_descriptor([]),
        'Web server.mf': b'SHA256(a)= ' + b'0' * 64 + b'\r\n',
        'disk.vhd': random.Random(1).randbytes(20000),
        'tail.bin': b'\x07' * 513,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode,
                      format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), members


PLAIN_TAR, TAR_MEMBERS = _archive('w')
GZ_TAR, _ = _archive('w:gz')
HEADERS = [0] + [m.offset for m in tarfile.open(
    fileobj=io.BytesIO(PLAIN_TAR)).getmembers()]


def read_tar(data, chunk):
    try:
        out = {}
        for member in tarstream.iter_members(io.BytesIO(data)):
            assert plain_name(member.name)
            assert member.name not in out
            got = b''
            while True:
                piece = member.read(chunk)
                if not piece:
                    break
                assert len(piece) <= chunk
                got += piece
            assert len(got) == member.size
            out[member.name] = got
        return out
    except exception.XenImportError as exc:
        clean(str(exc))
        return None


def test_tar_bases_read():
    assert read_tar(PLAIN_TAR, 4096) == TAR_MEMBERS
    assert read_tar(GZ_TAR, 4096) == TAR_MEMBERS


def _edits(size, hot):
    position = st.one_of(
        st.sampled_from(hot).flatmap(
            lambda h: st.integers(h, min(h + 511, size - 1))),
        st.integers(0, size - 1))
    return st.lists(st.tuples(position, st.integers(1, 255)), min_size=1,
                    max_size=8)


def _apply(data, edits, cut):
    buf = bytearray(data)
    for offset, xor in edits:
        buf[offset] ^= xor
    return bytes(buf[:cut]) if cut is not None else bytes(buf)


@hypothesis.given(edits=_edits(len(PLAIN_TAR), HEADERS),
                  cut=st.one_of(st.none(), st.integers(0, len(PLAIN_TAR))),
                  chunk=st.integers(1, 70000))
def test_mutated_tar(edits, cut, chunk):
    read_tar(_apply(PLAIN_TAR, edits, cut), chunk)


@hypothesis.given(edits=_edits(len(GZ_TAR), [0]),
                  cut=st.one_of(st.none(), st.integers(0, len(GZ_TAR))),
                  chunk=st.integers(1, 70000))
def test_mutated_gzip_tar(edits, cut, chunk):
    read_tar(_apply(GZ_TAR, edits, cut), chunk)


@hypothesis.given(header=st.binary(min_size=512, max_size=512),
                  rest=st.binary(max_size=2048))
def test_random_header(header, rest):
    read_tar(header + rest, 512)


@hypothesis.given(name=st.text(min_size=1, max_size=120),
                  kind=st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE,
                                        tarfile.SYMTYPE, tarfile.LNKTYPE,
                                        tarfile.DIRTYPE, tarfile.CHRTYPE,
                                        tarfile.CONTTYPE, b'V', b'x', b'g']),
                  fmt=st.sampled_from([tarfile.GNU_FORMAT,
                                       tarfile.PAX_FORMAT]))
def test_hostile_member_names(name, kind, fmt):
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode='w', format=fmt) as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = 3 if kind in (tarfile.REGTYPE,
                                      tarfile.AREGTYPE) else 0
            info.linkname = '/etc/passwd'
            tar.addfile(info, io.BytesIO(b'abc'))
    except (ValueError, UnicodeError, tarfile.TarError):
        hypothesis.reject()
    read_tar(buf.getvalue(), 100)


# -- OVF ----------------------------------------------------------------------

@pytest.fixture(scope='module')
def ovf_base(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ovf') / 'd.vhd')
    with open(path, 'wb') as f:
        f.write(b'\0' * 512)
    disks = [ovakit.OvaDisk(path, capacity=8 << 20, chunk_size=1 << 20),
             ovakit.OvaDisk(path + '2', capacity=1 << 20, boot=False,
                            address=1, file_size=1, disk_id='d2',
                            href='two.vhd')]
    return ovakit.ovf_descriptor(disks, collection=True)


def check_descriptor(data):
    try:
        d = ovf.parse(data)
    except exception.XenImportError as exc:
        clean(str(exc))
        return None
    assert d.disks
    hrefs = [x.href for x in d.disks]
    assert len(set(hrefs)) == len(hrefs)
    for disk in d.disks:
        assert plain_name(disk.href) and ':' not in disk.href
        assert disk.capacity is None or (isinstance(disk.capacity, int)
                                         and disk.capacity >= 0)
        assert disk.chunk_size is None or disk.chunk_size >= 1
        assert disk.compression in (None, 'gzip', 'bzip2')
        assert isinstance(disk.boot, bool)
    return d


TOKENS = [b'<', b'>', b'&', b'"', b"'", b'<!DOCTYPE x [<!ENTITY a "b">]>',
          b'&a;', b'<![CDATA[', b']]>', b'ovf:', b'xmlns:ovf="x"', b'\x00',
          b'\xff', b'\xfe\xff', b'<?xml version="1.0"?>', b'/>', b'</',
          b'ovf:href="../x"', b'ovf:capacity="-1"', b'\xc3\x28']


@hypothesis.given(data=st.data())
def test_mutated_ovf(ovf_base, data):
    buf = bytearray(ovf_base)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(['flip', 'delete', 'insert']))
        at = data.draw(st.integers(0, len(buf)))
        if op == 'flip' and at < len(buf):
            buf[at] ^= data.draw(st.integers(1, 255))
        elif op == 'delete':
            del buf[at:at + data.draw(st.integers(1, 200))]
        else:
            buf[at:at] = data.draw(st.sampled_from(TOKENS))
    check_descriptor(bytes(buf))


ATTRS = {
    'href': rb'ovf:href="[^"]*"',
    'capacity': rb'ovf:capacity="[^"]*"',
    'chunk': rb'ovf:chunkSize="[^"]*"',
    'address': rb'<rasd:AddressOnParent>[^<]*<',
    'type': rb'<rasd:ResourceType>19<',
}


@hypothesis.given(field=st.sampled_from(sorted(ATTRS)),
                  value=st.one_of(st.text(max_size=40),
                                  st.sampled_from(['../x.vhd', '/x', 'a:b',
                                                   'x\\y', '99999999999999'
                                                   '99999999999', '-1', '',
                                                   '0', '17', '$cap'])))
def test_hostile_field_values(ovf_base, field, value):
    escaped = (value.replace('&', '&amp;').replace('<', '&lt;')
               .replace('"', '&quot;').encode('utf-8', 'surrogatepass'))
    pattern = ATTRS[field]
    prefix = pattern.split(b'[^')[0].replace(b'\\', b'')
    closing = b'"' if prefix.endswith(b'"') else b'<'
    try:
        data = re.sub(pattern, lambda m: prefix + escaped + closing,
                      ovf_base, count=1)
    except UnicodeError:
        hypothesis.reject()
    check_descriptor(data)


# -- manifest -----------------------------------------------------------------

LINE = st.one_of(
    st.builds(lambda alg, name, hexd: '%s(%s)= %s' % (alg, name, hexd),
              st.sampled_from(['SHA1', 'SHA256', 'SHA512', 'MD5', 'sha1']),
              st.text(max_size=30),
              st.text(alphabet='0123456789abcdefABCDEF', max_size=130)),
    st.text(max_size=80))


@hypothesis.given(lines=st.lists(LINE, max_size=6),
                  newline=st.sampled_from(['\r\n', '\n', '\r']))
def test_manifest_lines(lines, newline):
    data = newline.join(lines).encode('utf-8', 'surrogatepass')
    try:
        entries = manifest.parse(data)
    except exception.XenImportError as exc:
        clean(str(exc))
        return
    assert entries
    for name, (algorithm, digest) in entries.items():
        assert plain_name(name)
        assert algorithm in ('sha1', 'sha256', 'sha512')
        assert re.fullmatch('[0-9a-f]+', digest)
        assert len(digest) == {'sha1': 40, 'sha256': 64,
                               'sha512': 128}[algorithm]


@hypothesis.given(data=st.binary(max_size=600))
def test_manifest_bytes(data):
    try:
        manifest.parse(data)
    except exception.XenImportError as exc:
        clean(str(exc))
