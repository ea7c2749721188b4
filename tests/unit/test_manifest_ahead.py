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

"""Issue 13: the manifest read ahead from a regular file's tar headers.

On a regular file the converter learns before the main pass whether the
package has a manifest and which algorithm it uses, and takes only those
digests; a stream cannot be read ahead and keeps taking both SHA1 and
SHA256 of what comes before a late manifest. Either way the manifest read
in the main pass is the one the digests are checked against.
"""

import contextlib
import io
import os
import tarfile
import threading

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import manifest
from glance_xen_import.formats import ova
from glance_xen_import import options
from glance_xen_import import pipeline
from tests import ovakit

MiB = ovakit.MiB


def manifest_to_end(members):
    """Member order with the manifest (second) moved to the end."""
    return [members[0]] + members[2:] + [members[1]]


def build(corpus, tmp_path, **kw):
    """An OVA of the corpus' caml VHD; returns (OvaInfo, disk href)."""
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    info = ovakit.make_ova(str(tmp_path / 'pkg.ova'), [disk], **kw)
    return info, disk.href


@contextlib.contextmanager
def piped(path):
    """A pipe that a thread fills with the file at ``path``."""
    read_fd, write_fd = os.pipe()

    def feed():
        try:
            with open(path, 'rb') as f, os.fdopen(write_fd, 'wb', 0) as w:
                for chunk in iter(lambda: f.read(65536), b''):
                    w.write(chunk)
        except BrokenPipeError:     # the reader stopped early
            pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    pipe = io.FileIO(read_fd, 'rb')
    try:
        yield pipe
    finally:
        pipe.close()
        feeder.join()


@contextlib.contextmanager
def source(path, how):
    if how == 'file':
        yield path
    else:
        with piped(path) as pipe:
            yield pipe


def convert(src, tmp_path, **kw):
    dest = str(tmp_path / 'out.raw')
    report = pipeline.convert(src, dest, **kw)
    os.unlink(dest)
    return report


def refused(src, tmp_path, error, **kw):
    dest = str(tmp_path / 'refused.raw')
    with pytest.raises(error) as caught:
        pipeline.convert(src, dest, **kw)
    assert not os.path.exists(dest)
    return str(caught.value)


# -- what the read-ahead learns ---------------------------------------------

@pytest.mark.parametrize('algorithm', ['sha1', 'sha256', 'sha512'])
@pytest.mark.parametrize('order', [None, manifest_to_end])
def test_read_ahead_learns_the_manifest(corpus, tmp_path, algorithm, order):
    info, href = build(corpus, tmp_path, manifest_algorithm=algorithm,
                       order=order)
    with open(info.path, 'rb') as f:
        learnt = ova.read_manifest_ahead(f)
        assert f.tell() == 0, 'the read-ahead moved the file position'
    assert learnt == {info.ovf_name: algorithm, href: algorithm}


def test_read_ahead_no_manifest(corpus, tmp_path):
    info, _href = build(corpus, tmp_path, manifest_algorithm=None)
    with open(info.path, 'rb') as f:
        assert ova.read_manifest_ahead(f) == {}


def test_read_ahead_starts_at_the_file_position(corpus, tmp_path):
    # An OVA further into a file (a file object handed over mid-way).
    info, href = build(corpus, tmp_path, order=manifest_to_end)
    embedded = str(tmp_path / 'embedded')
    with open(embedded, 'wb') as out, open(info.path, 'rb') as f:
        out.write(b'not the OVA' * 100)
        out.write(f.read())
    with open(embedded, 'rb') as f:
        f.seek(1100)
        assert ova.read_manifest_ahead(f) == {info.ovf_name: 'sha256',
                                              href: 'sha256'}
        assert f.tell() == 1100


def test_read_ahead_cannot_tell_a_pipe(corpus, tmp_path):
    info, _href = build(corpus, tmp_path)
    with piped(info.path) as pipe:
        assert ova.read_manifest_ahead(pipe) is None
        # Nothing was taken from the pipe: the whole OVA is still there.
        data = b''.join(iter(lambda: pipe.read(1 << 20), b''))
    with open(info.path, 'rb') as f:
        assert data == f.read()


def test_read_ahead_cannot_tell_without_a_file(corpus, tmp_path):
    info, _href = build(corpus, tmp_path)
    with open(info.path, 'rb') as f:
        assert ova.read_manifest_ahead(ovakit.SequentialReader(f)) is None


def test_read_ahead_does_not_decompress(corpus, tmp_path):
    info, _href = build(corpus, tmp_path, gzip_whole=True)
    with open(info.path, 'rb') as f:
        assert ova.read_manifest_ahead(f) is None


class CountingPread(object):
    """os.pread, counting the bytes read and the furthest offset asked."""

    def __init__(self):
        self.bytes = 0
        self.furthest = 0
        self._real = os.pread

    def __call__(self, fd, size, offset):
        data = self._real(fd, size, offset)
        self.bytes += len(data)
        self.furthest = max(self.furthest, offset + size)
        return data


def test_read_ahead_truncated_ova(corpus, tmp_path, monkeypatch):
    # Cut inside the disk member: its header promises bytes that are not
    # there, and the manifest after it is gone.
    info, _href = build(corpus, tmp_path, order=manifest_to_end)
    with open(info.path, 'r+b') as f:
        f.truncate(3 * MiB)
    pread = CountingPread()
    monkeypatch.setattr(ova.os, 'pread', pread)
    with open(info.path, 'rb') as f:
        assert ova.read_manifest_ahead(f) is None
    assert pread.furthest <= 3 * MiB


def claim_size(tar_bytes, offset, size):
    """Give the tar header at ``offset`` a GNU base-256 size field."""
    data = bytearray(tar_bytes)
    data[offset + 124:offset + 136] = b'\x80' + size.to_bytes(11, 'big')
    data[offset + 148:offset + 156] = b' ' * 8
    data[offset + 148:offset + 156] = b'%06o\0 ' % sum(
        data[offset:offset + 512])
    return bytes(data)


def test_read_ahead_never_takes_a_size_beyond_the_file(
        tmp_path, monkeypatch):
    # A member whose header claims 1 TiB, in a file of a few KiB, then a
    # manifest: the read-ahead must not believe the member is there.
    path = str(tmp_path / 'liar.ova')
    ovakit.write_tar(path, [ovakit.Member('vm.ovf', data=b'<x/>'),
                            ovakit.Member('disk.vhd', data=b'v' * 1024),
                            ovakit.Member('vm.mf', data=b'SHA1(vm.ovf)= '
                                          + b'0' * 40 + b'\n')])
    with open(path, 'rb') as f:
        data = f.read()
    # vm.ovf takes a header and a block: disk.vhd's header is at 1024.
    assert data[1024:1032] == b'disk.vhd'
    data = claim_size(data, 1024, 1 << 40)
    with open(path, 'wb') as f:
        f.write(data)
    pread = CountingPread()
    monkeypatch.setattr(ova.os, 'pread', pread)
    with open(path, 'rb') as f:
        assert ova.read_manifest_ahead(f) is None
    assert pread.furthest <= len(data)


def test_read_ahead_reads_a_bounded_amount(tmp_path, monkeypatch):
    # Members behind large pax headers: walking them all would read more
    # than the read-ahead allows itself, so it gives up.
    path = str(tmp_path / 'pax.ova')
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
        for i in range(100):
            member = tarfile.TarInfo('note%03d.txt' % i)
            member.size = 1
            member.pax_headers = {'comment': 'x' * 60000}
            tar.addfile(member, io.BytesIO(b'n'))
    assert os.path.getsize(path) > ova.MAX_READ_AHEAD
    pread = CountingPread()
    monkeypatch.setattr(ova.os, 'pread', pread)
    with open(path, 'rb') as f:
        assert ova.read_manifest_ahead(f) is None
    assert pread.bytes <= ova.MAX_READ_AHEAD


# -- which digests are taken ------------------------------------------------

@pytest.fixture
def digests_taken(monkeypatch):
    """{member name: algorithms} of the digests the converter takes."""
    taken = {}
    real = manifest.HashingReader

    def recording(stream, algorithms, worker=None):
        taken[stream.name] = tuple(sorted(algorithms))
        return real(stream, algorithms, worker)

    monkeypatch.setattr(manifest, 'HashingReader', recording)
    return taken


BOTH = ('sha1', 'sha256')


@pytest.mark.parametrize('layout,how,expected,state', [
    ('last', 'file', ('sha256',), 'verified'),
    ('last', 'pipe', BOTH, 'verified'),
    ('none', 'file', None, 'absent'),
    ('none', 'pipe', BOTH, 'absent')])
def test_digests_taken_before_the_manifest(corpus, tmp_path, digests_taken,
                                           layout, how, expected, state):
    if layout == 'last':
        info, href = build(corpus, tmp_path, order=manifest_to_end)
    else:
        info, href = build(corpus, tmp_path, manifest_algorithm=None)
    with source(info.path, how) as src:
        assert convert(src, tmp_path).manifest == state
    if expected is None:
        assert digests_taken == {}
    else:
        assert digests_taken == {info.ovf_name: expected, href: expected}


def test_manifest_first_digests(corpus, tmp_path, digests_taken):
    # XenCenter's order: the manifest precedes the disk, on any source.
    info, href = build(corpus, tmp_path, manifest_algorithm='sha1')
    with piped(info.path) as pipe:
        assert convert(pipe, tmp_path).manifest == 'verified'
    assert digests_taken[href] == ('sha1',)


# -- the main pass decides ----------------------------------------------------

def tampered_package(corpus, tmp_path, algorithm):
    """A manifest last that lists the true digest of a disk since changed."""
    good = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    bad_path = str(tmp_path / 'tampered.vhd')
    with open(good.path, 'rb') as f:
        data = bytearray(f.read())
    data[1 * MiB + 4096] ^= 0xFF          # a data byte of block 0
    with open(bad_path, 'wb') as f:
        f.write(data)
    ovf = ovakit.ovf_descriptor([good])
    entries = [('pkg.ovf', ovakit.hashlib.new(algorithm, ovf).hexdigest()),
               (good.href, ovakit.file_digest(good.path, algorithm))]
    bad = ovakit.OvaDisk(bad_path, href=good.href)
    info = ovakit.make_ova(str(tmp_path / 'pkg.ova'), [bad], ovf=ovf,
                           ovf_name='pkg.ovf', manifest_algorithm=algorithm,
                           manifest_entries=entries, order=manifest_to_end)
    return info.path, good.href


@pytest.mark.parametrize('how', ['file', 'pipe'])
@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_late_manifest_mismatch(corpus, tmp_path, how, algorithm):
    path, href = tampered_package(corpus, tmp_path, algorithm)
    with source(path, how) as src:
        message = refused(src, tmp_path, exception.ManifestMismatch)
    assert message == ('manifest %s digest of %s does not match: the '
                       'package is damaged or altered'
                       % (algorithm.upper(), href))


@pytest.mark.parametrize('how', ['file', 'pipe'])
def test_late_sha512_refused_alike(corpus, tmp_path, how):
    # The read-ahead could have taken SHA512, but a file must get the same
    # verdict as a stream of the same bytes.
    info, _href = build(corpus, tmp_path, manifest_algorithm='sha512',
                        order=manifest_to_end)
    with source(info.path, how) as src:
        message = refused(src, tmp_path, exception.InvalidPackage)
    assert message == ('manifest uses SHA512 for %s, which came before the '
                       'manifest; only SHA1 and SHA256 can be checked then'
                       % info.ovf_name)


@pytest.mark.parametrize('learnt', [{}, 'sha1-instead'])
def test_package_changed_after_the_read_ahead(corpus, tmp_path,
                                              monkeypatch, learnt):
    # What a file rewritten between the read-ahead and the main pass looks
    # like: the manifest the main pass reads is not the one read ahead.
    info, href = build(corpus, tmp_path, order=manifest_to_end)
    if learnt != {}:
        learnt = {info.ovf_name: 'sha1', href: 'sha1'}
    monkeypatch.setattr(ova, 'read_manifest_ahead', lambda f: learnt)
    message = refused(info.path, tmp_path, exception.InvalidPackage)
    assert message == ('package changed while it was read: its manifest '
                       'asks for the SHA256 digest of %s, which the manifest '
                       'read ahead did not' % info.ovf_name)


def test_ignore_policy_reads_nothing_ahead(corpus, tmp_path, monkeypatch):
    info, _href = build(corpus, tmp_path, order=manifest_to_end)

    def must_not_run(f):
        raise AssertionError('read ahead under manifest_policy=ignore')

    monkeypatch.setattr(ova, 'read_manifest_ahead', must_not_run)
    report = convert(info.path, tmp_path, opts=options.Options(
        manifest_policy=options.MANIFEST_IGNORE))
    assert report.manifest == 'ignored'
