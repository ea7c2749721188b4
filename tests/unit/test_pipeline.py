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

"""pipeline.convert on whole OVAs built like XenCenter's exports."""

import io
import json
import os
import shutil
import threading

import pytest

from glance_xen_import import exception
from glance_xen_import import options
from glance_xen_import import pipeline
from tests import ovakit

MiB = ovakit.MiB


def build(corpus, tmp_path, kind='caml', raw='gpt16', disks=None, **kw):
    """An OVA of the corpus VHD ``kind``; returns (ova path, RawDisk)."""
    if disks is None:
        disks = [ovakit.OvaDisk(corpus.vhd(kind, raw))]
    path = str(tmp_path / 'pkg.ova')
    ovakit.make_ova(path, disks, **kw)
    return path, corpus.raw(raw)


def manifest_to_end(members):
    """Member order with the manifest (second) moved to the end."""
    return [members[0]] + members[2:] + [members[1]]


def convert_ok(source, tmp_path, expected_raw, **kw):
    dest = str(tmp_path / 'out.raw')
    report = pipeline.convert(source, dest, **kw)
    assert ovakit.first_difference(dest, expected_raw.path) is None
    assert report.virtual_size == expected_raw.size
    json.dumps(report.to_dict())
    return report, dest


def refused(source, tmp_path, error=exception.XenImportError, **kw):
    dest = str(tmp_path / 'refused.raw')
    with pytest.raises(error) as caught:
        pipeline.convert(source, dest, **kw)
    message = str(caught.value)
    assert message and '\n' not in message
    assert not os.path.exists(dest)
    return message


# -- conversions ------------------------------------------------------------

@pytest.mark.parametrize('kind,source', [
    ('caml', 'vhd-dynamic:caml'), ('tap', 'vhd-dynamic:tap'),
    ('dutl', 'vhd-dynamic:dutl'), ('qem2-dynamic', 'vhd-dynamic:qem2'),
    ('reverse', 'vhd-dynamic:qem2'), ('qem2-fixed', 'vhd-fixed:qem2'),
    ('caml-fixed', 'vhd-fixed:caml'),
])
def test_converts_each_producer(corpus, tmp_path, kind, source):
    path, raw = build(corpus, tmp_path, kind, name='Web server')
    report, dest = convert_ok(path, tmp_path, raw)
    assert report.source == source
    assert report.manifest == 'verified'
    assert report.package.name == 'Web server'
    assert report.package.virtual_system_type == 'hvm-3.0-unknown'
    assert report.disk.capacity == raw.size
    assert report.other_disks == []
    assert isinstance(report.properties, dict)
    assert all(isinstance(k, str) and isinstance(v, str)
               for k, v in report.properties.items())
    assert ovakit.zero_pages_in_data(dest) == []
    assert report.allocated_bytes == ovakit.nonzero_pages(raw.path) * 4096


def test_xencenter_sized_disk_keeps_its_tail(corpus, tmp_path):
    # 1 GiB + 3 MiB, creator caml: what qemu-img 7.2 cuts by 304 KiB.
    path, raw = build(corpus, tmp_path, 'caml', raw='mbr1g3m')
    dest = str(tmp_path / 'out.raw')
    report = pipeline.convert(path, dest)
    assert report.virtual_size == raw.size == os.path.getsize(dest)
    assert ovakit.sparse_first_difference(dest, raw.path) is None
    with open(dest, 'rb') as f:
        f.seek(raw.tail_offset)
        assert f.read() == ovakit.TAIL_MARKER


def test_gzipped_ova(corpus, tmp_path):
    path, raw = build(corpus, tmp_path, gzip_whole=True)
    with open(path, 'rb') as f:
        assert f.read(2) == b'\x1f\x8b'
    convert_ok(path, tmp_path, raw)


@pytest.mark.parametrize('compression', ['Gzip', 'bzip2'])
@pytest.mark.parametrize('kind', ['caml', 'qem2-fixed', 'reverse'])
def test_compressed_member(corpus, tmp_path, kind, compression):
    disk = ovakit.OvaDisk(corpus.vhd(kind, 'gpt16'), compression=compression)
    path, raw = build(corpus, tmp_path, disks=[disk])
    report, _dest = convert_ok(path, tmp_path, raw)
    assert report.disk.compression == compression.lower()


@pytest.mark.parametrize('module', ['gzip', 'bz2'])
def test_multistream_compressed_member(corpus, tmp_path, module):
    # pigz/pbzip2 and `cat a.gz b.gz` write several streams in a row; the
    # RFC 1952 reader takes them as one.
    import bz2
    import gzip
    compress = {'gzip': gzip.compress, 'bz2': bz2.compress}[module]
    vhd = corpus.vhd('caml', 'gpt16')
    with open(vhd, 'rb') as f:
        body = f.read()
    packed = str(tmp_path / 'packed')
    with open(packed, 'wb') as f:
        for start in range(0, len(body), 3 * MiB):
            f.write(compress(body[start:start + 3 * MiB]))
    disk = ovakit.OvaDisk(vhd, compression={'gzip': 'Gzip',
                                            'bz2': 'bzip2'}[module],
                          capacity=corpus.raw('gpt16').size)
    members = [ovakit.Member(disk.href, path=packed)]
    path, raw = build(corpus, tmp_path, disks=[disk],
                      order=lambda ms: ms[:1] + members,
                      manifest_algorithm=None)
    convert_ok(path, tmp_path, raw)


def test_compressed_member_corrupt(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'), compression='Gzip')
    path, _raw = build(corpus, tmp_path, disks=[disk],
                       manifest_algorithm=None)
    with ovakit.tarfile.open(path) as tar:
        member = tar.getmember(disk.href)
    with open(path, 'r+b') as f:
        f.seek(member.offset_data + member.size // 2)
        f.write(b'\xde\xad\xbe\xef' * 8)
    refused(path, tmp_path)


@pytest.mark.parametrize('kind', ['caml', 'qem2-fixed'])
@pytest.mark.parametrize('compression', [None, 'Gzip'])
def test_chunked_members(corpus, tmp_path, kind, compression):
    disk = ovakit.OvaDisk(corpus.vhd(kind, 'gpt16'), chunk_size=1 * MiB,
                          compression=compression)
    path, raw = build(corpus, tmp_path, disks=[disk])
    names = ovakit.make_ova(str(tmp_path / 'names.ova'), [disk]).members
    assert '%s.000000001' % disk.href in names
    convert_ok(path, tmp_path, raw)


def test_chunk_missing_refused(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'), chunk_size=1 * MiB)

    def drop_second_chunk(members):
        return [m for m in members if not m.name.endswith('.000000001')]

    path, _raw = build(corpus, tmp_path, disks=[disk],
                       manifest_algorithm=None, order=drop_second_chunk)
    message = refused(path, tmp_path, exception.InvalidPackage)
    assert '.000000001 was expected' in message


def _swap_second_and_third_chunks(members):
    i = next(n for n, m in enumerate(members)
             if m.name.endswith('.000000001'))
    members[i], members[i + 1] = members[i + 1], members[i]
    return members


def _second_chunk_first(members):
    i = next(n for n, m in enumerate(members)
             if m.name.endswith('.000000001'))
    return [members[0], members[i]] + members[1:i] + members[i + 1:]


@pytest.mark.parametrize('order', [_swap_second_and_third_chunks,
                                   _second_chunk_first])
def test_chunks_out_of_order_refused(corpus, tmp_path, order):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'), chunk_size=1 * MiB)
    path, _raw = build(corpus, tmp_path, disks=[disk], order=order)
    message = refused(path, tmp_path, exception.InvalidPackage)
    assert 'out of order' in message


def test_extra_disks_refused_by_policy(corpus, tmp_path):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    other = ovakit.OvaDisk(corpus.vhd('caml', 'mbr8'), boot=False, address=1)
    path, _raw = build(corpus, tmp_path, disks=[boot, other])
    refused(path, tmp_path, exception.InvalidPackage,
            opts=options.Options(extra_disks=options.EXTRA_DISKS_REFUSE))


@pytest.mark.parametrize('order', ['reverse', 'shuffle', 'manifest-last'])
def test_members_in_any_order_after_the_ovf(corpus, tmp_path, order):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    other = ovakit.OvaDisk(corpus.vhd('caml', 'mbr8'), boot=False, address=1)
    if order == 'manifest-last':
        order = manifest_to_end
    path, raw = build(corpus, tmp_path, disks=[boot, other], order=order,
                      seed=4)
    report, _dest = convert_ok(path, tmp_path, raw)
    assert report.manifest == 'verified'


def test_collection_and_resource_type_17(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'), resource_type=17)
    path, raw = build(corpus, tmp_path, disks=[disk], collection=True,
                      vm_count=2)
    convert_ok(path, tmp_path, raw)


def test_capacity_in_gib_units(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'),
                          capacity_units='byte * 2^20')
    path, raw = build(corpus, tmp_path, disks=[disk])
    convert_ok(path, tmp_path, raw)


def test_file_size_is_not_checked(corpus, tmp_path):
    # XenCenter writes the SR's physical_utilisation as ovf:size.
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'), file_size=123)
    path, raw = build(corpus, tmp_path, disks=[disk])
    convert_ok(path, tmp_path, raw)


# -- manifest ---------------------------------------------------------------

def test_sha1_manifest(corpus, tmp_path):
    path, raw = build(corpus, tmp_path, manifest_algorithm='sha1')
    report, _dest = convert_ok(path, tmp_path, raw)
    assert report.manifest == 'verified'


def test_no_manifest(corpus, tmp_path):
    path, raw = build(corpus, tmp_path, manifest_algorithm=None)
    report, _dest = convert_ok(path, tmp_path, raw)
    assert report.manifest == 'absent'


def test_no_manifest_when_required(corpus, tmp_path):
    path, _raw = build(corpus, tmp_path, manifest_algorithm=None)
    refused(path, tmp_path, exception.InvalidPackage,
            opts=options.Options(manifest_policy=options.MANIFEST_REQUIRE))


def tamper_disk(corpus, tmp_path, kind='caml'):
    """A copy of a VHD with one data byte changed (still a valid VHD)."""
    path = str(tmp_path / 'tampered.vhd')
    shutil.copy(corpus.vhd(kind, 'gpt16'), path)
    with open(path, 'r+b') as f:
        f.seek(1 * MiB + 4096)
        byte = f.read(1)
        f.seek(1 * MiB + 4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    return path


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
@pytest.mark.parametrize('manifest_last', [False, True])
def test_manifest_mismatch(corpus, tmp_path, algorithm, manifest_last):
    good = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    digest = ovakit.file_digest(good.path, algorithm)
    bad = ovakit.OvaDisk(tamper_disk(corpus, tmp_path), href=good.href)
    ovf = ovakit.ovf_descriptor([good])
    entries = [('pkg.ovf', ovakit.hashlib.new(algorithm, ovf).hexdigest()),
               (good.href, digest)]
    path, _raw = build(corpus, tmp_path, disks=[bad], ovf=ovf,
                       ovf_name='pkg.ovf', manifest_algorithm=algorithm,
                       manifest_entries=entries,
                       order=manifest_to_end if manifest_last else None)
    message = refused(path, tmp_path, exception.ManifestMismatch)
    assert good.href in message


def test_manifest_mismatch_ignored_by_policy(corpus, tmp_path):
    good = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    entries = [('pkg.ovf', '0' * 64), (good.href, '1' * 64)]
    path, raw = build(corpus, tmp_path, disks=[good], ovf_name='pkg.ovf',
                      manifest_entries=entries)
    refused(path, tmp_path, exception.ManifestMismatch)
    report, _dest = convert_ok(
        path, tmp_path, raw,
        opts=options.Options(manifest_policy=options.MANIFEST_IGNORE))
    assert report.manifest == 'ignored'


def test_ovf_digest_mismatch(corpus, tmp_path):
    good = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    entries = [('pkg.ovf', '0' * 64),
               (good.href, ovakit.file_digest(good.path, 'sha256'))]
    path, _raw = build(corpus, tmp_path, disks=[good], ovf_name='pkg.ovf',
                       manifest_entries=entries)
    assert 'pkg.ovf' in refused(path, tmp_path, exception.ManifestMismatch)


def test_member_missing_from_manifest(corpus, tmp_path):
    good = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    ovf = ovakit.ovf_descriptor([good])
    entries = [('pkg.ovf', ovakit.hashlib.sha256(ovf).hexdigest())]
    path, _raw = build(corpus, tmp_path, disks=[good], ovf=ovf,
                       ovf_name='pkg.ovf', manifest_entries=entries)
    refused(path, tmp_path, exception.InvalidPackage)


def test_manifest_lists_absent_member(corpus, tmp_path):
    good = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    ovf = ovakit.ovf_descriptor([good])
    entries = [('pkg.ovf', ovakit.hashlib.sha256(ovf).hexdigest()),
               (good.href, ovakit.file_digest(good.path, 'sha256')),
               ('ghost.vhd', '2' * 64)]
    path, _raw = build(corpus, tmp_path, disks=[good], ovf=ovf,
                       ovf_name='pkg.ovf', manifest_entries=entries)
    refused(path, tmp_path, exception.InvalidPackage)


# -- refusals at package level ----------------------------------------------

def test_capacity_differs_from_current_size(corpus, tmp_path):
    for kind in ('caml', 'caml-fixed'):
        disk = ovakit.OvaDisk(corpus.vhd(kind, 'gpt16'),
                              capacity=16 * MiB + 2 * MiB)
        path, _raw = build(corpus, tmp_path, disks=[disk])
        assert 'capacity' in refused(path, tmp_path,
                                     exception.XenImportError)


def test_first_member_not_ovf(corpus, tmp_path):
    def manifest_first(members):
        return [members[1], members[0]] + members[2:]

    path, _raw = build(corpus, tmp_path, order=manifest_first)
    refused(path, tmp_path, exception.InvalidPackage)


def test_no_ovf_at_all(corpus, tmp_path):
    path, _raw = build(corpus, tmp_path, manifest_algorithm=None,
                       order=lambda members: members[1:])
    refused(path, tmp_path, exception.InvalidPackage)


def test_disk_member_missing(corpus, tmp_path):
    path, _raw = build(corpus, tmp_path, manifest_algorithm=None,
                       order=lambda members: members[:1])
    refused(path, tmp_path, exception.InvalidPackage)


@pytest.mark.parametrize('kind', ['symlink', 'hardlink', 'chr', 'fifo'])
def test_special_member_after_ovf(corpus, tmp_path, kind):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    path, _raw = build(corpus, tmp_path, disks=[disk],
                       manifest_algorithm=None,
                       extra_members=[ovakit.special_member('x.vhd', kind)])
    refused(path, tmp_path, exception.InvalidPackage)


def test_symlink_named_like_the_disk(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    link = ovakit.special_member(disk.href, 'symlink', '/etc/passwd')
    path, _raw = build(corpus, tmp_path, disks=[disk],
                       manifest_algorithm=None,
                       order=lambda members: members[:1] + [link])
    refused(path, tmp_path, exception.InvalidPackage)


def test_duplicate_disk_member(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    path, _raw = build(corpus, tmp_path, disks=[disk],
                       manifest_algorithm=None,
                       order=lambda members: members + members[1:])
    refused(path, tmp_path, exception.InvalidPackage)


def test_not_a_tar(tmp_path):
    refused(os.path.join(ovakit.FIXTURES, 'glance-testserver-not-tar.ova'),
            tmp_path, exception.InvalidPackage)


def test_vmdk_package_refused(tmp_path):
    refused(os.path.join(ovakit.FIXTURES, 'ganeti-ova.ova'), tmp_path,
            exception.XenImportError)


def test_differencing_disk_refused(corpus, tmp_path):
    child = str(tmp_path / 'child.vhd')
    ovakit.make_differencing(corpus.vhd('caml', 'gpt16'), child,
                             str(tmp_path / 'parent.vhd'))
    path, _raw = build(corpus, tmp_path, disks=[ovakit.OvaDisk(child)])
    refused(path, tmp_path, exception.UnsupportedDisk)


def test_max_virtual_size(corpus, tmp_path):
    path, raw = build(corpus, tmp_path)
    refused(path, tmp_path, exception.InvalidDisk,
            opts=options.Options(max_virtual_size=raw.size - 512))


def test_truncated_ova(corpus, tmp_path):
    path, _raw = build(corpus, tmp_path)
    with ovakit.tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
        data_end = last.offset_data + last.size
    for cut in (1024, data_end // 2, data_end - 600, data_end):
        short = str(tmp_path / ('short%d.ova' % cut))
        with open(path, 'rb') as f, open(short, 'wb') as out:
            out.write(f.read(cut))
        refused(short, tmp_path)


def test_data_after_disk_in_member(corpus, tmp_path):
    # A VHD member with extra bytes after the footer.
    vhd = str(tmp_path / 'padded.vhd')
    shutil.copy(corpus.vhd('caml', 'gpt16'), vhd)
    with open(vhd, 'ab') as f:
        f.write(b'\0' * 4096)
    disk = ovakit.OvaDisk(vhd, capacity=corpus.raw('gpt16').size)
    path, _raw = build(corpus, tmp_path, disks=[disk])
    refused(path, tmp_path, exception.InvalidDisk)


def test_insufficient_space(corpus, tmp_path, monkeypatch):
    path, _raw = build(corpus, tmp_path, order=manifest_to_end)
    real = os.statvfs

    class Small(object):
        def __init__(self, stats):
            self.f_bavail = 16
            self.f_frsize = 4096
            self.f_bsize = 4096
            self.f_blocks = stats.f_blocks
            self.f_bfree = 16

    monkeypatch.setattr(os, 'statvfs', lambda p: Small(real(p)))
    done = []
    message = refused(path, tmp_path, exception.InsufficientSpace,
                      progress=lambda d, t: done.append(d))
    assert str(tmp_path) in message
    # Refused once the VHD metadata is read, before its data.
    with ovakit.tarfile.open(path) as tar:
        disk = [m for m in tar.getmembers() if m.name.endswith('.vhd')][0]
    assert max(done) < disk.offset_data + 64 * 1024


@pytest.mark.parametrize('error', [KeyboardInterrupt, RuntimeError])
def test_interrupted_conversion_leaves_nothing(corpus, tmp_path, error):
    path, _raw = build(corpus, tmp_path)
    dest = str(tmp_path / 'out.raw')

    def progress(done, total):
        if done > 2 * MiB:
            raise error('stop')

    with pytest.raises(error):
        pipeline.convert(path, dest, progress=progress)
    assert not os.path.exists(dest)


# -- destination and source handling ------------------------------------------

def test_existing_destination_untouched(corpus, tmp_path):
    path, _raw = build(corpus, tmp_path)
    dest = str(tmp_path / 'exists.raw')
    with open(dest, 'wb') as f:
        f.write(b'precious')
    with pytest.raises(exception.XenImportError):
        pipeline.convert(path, dest)
    with open(dest, 'rb') as f:
        assert f.read() == b'precious'


def test_missing_source(tmp_path):
    refused(str(tmp_path / 'nope.ova'), tmp_path)


def test_directory_as_source(tmp_path):
    refused(str(tmp_path), tmp_path)


def test_signature_member_noted(corpus, tmp_path):
    # XenCenter: .ovf, .mf, then .cert (covering the manifest), then disks.
    def with_cert(members):
        cert = ovakit.Member('Web server.cert', data=b'SHA256(Web server.mf)'
                             b'= 00\r\n-----BEGIN CERTIFICATE-----\r\n')
        return members[:2] + [cert] + members[2:]

    path, raw = build(corpus, tmp_path, order=with_cert)
    report, _dest = convert_ok(path, tmp_path, raw)
    assert report.package.signed is True
    assert report.manifest == 'verified'


def test_destination_directory_missing(corpus, tmp_path):
    path, _raw = build(corpus, tmp_path)
    with pytest.raises(exception.XenImportError):
        pipeline.convert(path, str(tmp_path / 'no' / 'such' / 'dir.raw'))


def test_read_only_stream_source(corpus, tmp_path):
    path, raw = build(corpus, tmp_path, gzip_whole=True)
    with open(path, 'rb') as f:
        convert_ok(ovakit.SequentialReader(f, max_chunk=3000), tmp_path, raw)


def test_pipe_source(corpus, tmp_path):
    # An unbuffered pipe: reads return whatever the writer has sent.
    path, raw = build(corpus, tmp_path)
    read_fd, write_fd = os.pipe()

    def feed():
        with open(path, 'rb') as f, os.fdopen(write_fd, 'wb', 0) as w:
            for chunk in iter(lambda: f.read(7777), b''):
                w.write(chunk)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with io.FileIO(read_fd, 'rb') as pipe:
            convert_ok(pipe, tmp_path, raw)
    finally:
        feeder.join()


def test_progress(corpus, tmp_path):
    path, raw = build(corpus, tmp_path)
    calls = []
    convert_ok(path, tmp_path, raw,
               progress=lambda done, total: calls.append((done, total)))
    size = os.path.getsize(path)
    assert calls
    assert all(total == size for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones)
    assert dones[-1] <= size
    assert dones[-1] >= size - 10240   # all but the tar end blocks


def test_progress_unknown_total(corpus, tmp_path):
    path, raw = build(corpus, tmp_path)
    calls = []
    with open(path, 'rb') as f:
        convert_ok(ovakit.SequentialReader(f), tmp_path, raw,
                   progress=lambda done, total: calls.append(total))
    assert calls and set(calls) == {None}
