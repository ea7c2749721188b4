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

"""XVAs from tests/xvakit read to RAW, checked against independent readers.

The disks are made by sfdisk + mkfs.ext4 -d and by qemu-io patterns; the
RAW written is compared byte for byte with them, with Debian's xva-img
(SHA-1 XVAs, after ``tar xf``), and the kit's .xxhash members with
``xxhsum -H1``.
"""

import os
import shutil
import subprocess
import tarfile
import tracemalloc

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import compression
from glance_xen_import.formats import package
from tests import ovakit
from tests.unit import xva_helpers
from tests import xvakit

MiB = xvakit.MiB
ROOT_SIZE = 16 * MiB + 1536         # a short last chunk of 1536 bytes
DATA_SIZE = 8 * MiB


@pytest.fixture(scope='module')
def raws(tmp_path_factory):
    ovakit.require_tools('qemu-img', 'qemu-io', 'sfdisk', 'mkfs.ext4')
    root = tmp_path_factory.mktemp('xva-disks')
    boot = ovakit.make_raw_disk(str(root / 'root.raw'), ROOT_SIZE,
                                table='gpt', seed=3)
    data = xvakit.qemu_pattern_raw(str(root / 'data.raw'), DATA_SIZE, [
        (0, 4096, 0xab), (3 * MiB - 512, 1024, 0x11),
        (5 * MiB + 3584, 70000, 0x5c), (DATA_SIZE - 512, 512, 0xee)])
    return boot.path, data


def two_disks(raws):
    return [xvakit.Disk(raws[0], 'root'), xvakit.Disk(raws[1], 'data')]


def tar_names(path):
    with tarfile.open(path) as tar:
        return [(m.name, m.size, m.mode) for m in tar]


def assert_same_as(paths, disks):
    for disk in disks:
        assert ovakit.first_difference(paths[disk.ref], disk.raw) is None


def test_sha1_two_disks_match_input_and_xva_img(tmp_path, raws):
    ovakit.require_tools('xva-img', 'tar')
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws), checksum='sha1',
                            keepalive_before={0: [3, 9]})
    # xapi's ids: VM Ref:95, VIF, network, VBD, VDI Ref:99, SR, VBD, VDI
    # Ref:102; streamed in string order, so Ref:102 first.
    assert [d.ref for d in disks] == ['Ref:99', 'Ref:102']
    names = tar_names(xva)
    assert names[0] == ('ova.xml', names[0][1], 0o400)
    assert names[1][0] == 'Ref:102/00000000'
    assert ('Ref:99/00000003', 0, 0o400) in names      # a keepalive
    pkg, paths, _read = xva_helpers.convert(xva, str(tmp_path))
    assert pkg.kind == package.XVA
    result = pkg.result
    assert result.checksum == 'sha1'
    assert [(d.ref, i.source_tag, i.current_size)
            for d, i in result.converted] == [
        ('Ref:99', 'xva:sha1', ROOT_SIZE), ('Ref:102', 'xva:sha1',
                                            DATA_SIZE)]
    assert result.skipped == []
    assert_same_as(paths, disks)
    for disk in disks:
        theirs = xvakit.xva_img_extract(xva, disk.ref,
                                        str(tmp_path / ('x' + disk.name)))
        assert ovakit.first_difference(paths[disk.ref], theirs) is None


def test_xxhash_members_agree_with_xxhsum(tmp_path, raws):
    ovakit.require_tools('xxhsum', 'tar')
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws), checksum='xxhash')
    unpacked = tmp_path / 'unpacked'
    unpacked.mkdir()
    ovakit.run('tar', '-xf', xva, '-C', str(unpacked))
    chunks = sorted(str(p.relative_to(unpacked))
                    for p in unpacked.glob('Ref:*/*')
                    if not p.name.endswith('.xxhash'))
    assert len(chunks) > 4
    out = ovakit.run('xxhsum', '-H1', *chunks, cwd=str(unpacked)).decode()
    theirs = {line.split()[1]: line.split()[0].upper()
              for line in out.splitlines()}
    for name in chunks:
        with open(unpacked / (name + '.xxhash')) as f:
            assert f.read() == theirs[name]
    pkg, paths, _read = xva_helpers.convert(xva, str(tmp_path))
    assert pkg.result.checksum == 'xxhash'
    assert_same_as(paths, disks)


@pytest.mark.parametrize('kind', ['gzip', 'zstd'])
def test_whole_stream_compression(tmp_path, raws, kind):
    ovakit.require_tools(kind)
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws), compress=kind,
                            keepalive_before={1: [2]})
    with open(xva, 'rb') as f:
        assert compression.sniff(f)[0] == kind
    pkg, paths, _read = xva_helpers.convert(xva, str(tmp_path))
    assert [i.source_tag for _d, i in pkg.result.converted] == [
        'xva:xxhash', 'xva:xxhash']
    assert_same_as(paths, disks)


def test_xen_orchestra_variant(tmp_path, raws):
    """ustar headers, Ref:000 ids, userdevice from 1, last chunk padded."""
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws), xo=True, cd=None)
    assert [d.ref for d in disks] == ['Ref:002', 'Ref:004']
    with tarfile.open(xva) as tar:
        members = tar.getmembers()
    assert all(m.name == 'ova.xml' or m.name.endswith('.xxhash')
               or m.size == MiB for m in members)
    pkg, paths, _read = xva_helpers.convert(xva, str(tmp_path))
    desc = pkg.result.descriptor
    assert [(d.ref, d.userdevice, d.capacity) for d in desc.disks] == [
        ('Ref:002', 1, 17 * MiB), ('Ref:004', 2, DATA_SIZE)]
    # virtual_size rounded up to 1 MiB: the input, then zeros.
    padded = str(tmp_path / 'root-padded.raw')
    shutil.copyfile(raws[0], padded)
    os.truncate(padded, 17 * MiB)
    assert ovakit.first_difference(paths['Ref:002'], padded) is None
    assert ovakit.first_difference(paths['Ref:004'], raws[1]) is None


def test_old_tar_mode_and_export_time(tmp_path, raws):
    """ocaml-tar before 2.0 wrote mode 0; xapi 24.13 stamps ova.xml."""
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws), mode=0,
                            ova_mtime=1754000000)
    assert {mode for _n, _s, mode in tar_names(xva)} == {0}
    _pkg, paths, _read = xva_helpers.convert(xva, str(tmp_path))
    assert_same_as(paths, disks)


def test_selected_disk_only(tmp_path, raws):
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws))

    def data_only(descriptor):
        return [d for d in descriptor.disks if d.name == 'data']

    pkg, paths, _read = xva_helpers.convert(xva, str(tmp_path),
                                            select=data_only)
    assert [d.ref for d, _i in pkg.result.converted] == ['Ref:102']
    assert [d.ref for d in pkg.result.skipped] == ['Ref:99']
    assert sorted(os.listdir(tmp_path)) == ['Ref_102.raw', 'vm.xva']
    assert ovakit.first_difference(paths['Ref:102'], disks[1].raw) is None


def test_skipped_disk_is_still_verified(tmp_path, raws):
    xva = str(tmp_path / 'vm.xva')

    def corrupt_root(members):
        name, data = members[-2]            # Ref:99's last chunk
        assert name.startswith('Ref:99/')
        members[-2] = (name, data[:-1] + b'\x01')
        return members

    xvakit.make_xva(xva, two_disks(raws), edit=corrupt_root)
    xva_helpers.refused(
        tmp_path, xva, r'chunk Ref:99/00000016 fails its xxhash checksum',
        select=lambda d: [x for x in d.disks if x.name == 'data'])


def test_xva_named_ova_and_ova_named_xva(tmp_path, raws, corpus):
    xva = str(tmp_path / 'really-an-xva.ova')
    xvakit.make_xva(xva, two_disks(raws))
    pkg, _paths, _read = xva_helpers.convert(xva, str(tmp_path))
    assert pkg.kind == package.XVA
    ova = str(tmp_path / 'really-an-ova.xva')
    ovakit.make_ova(ova, [ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))])
    seen = []

    def convert_disk(reader, size, disk):
        while reader.read(MiB):
            pass
        seen.append(disk.href)
        return 'converted'

    with open(ova, 'rb') as f:
        pkg = package.read_package(f, convert_disk, select=None,
                                   open_sink=None)
    assert pkg.kind == package.OVA
    assert pkg.result.disk_result == 'converted'
    assert seen == [pkg.result.disk.href]


def test_neither_kind_is_refused(tmp_path):
    path = str(tmp_path / 'notes.xva')
    xvakit.write_xva_file(path, [('README', b'hello')])
    with pytest.raises(exception.InvalidPackage,
                       match='^the package starts with README: an OVA '
                             r'starts with its \.ovf descriptor, an XVA '
                             'with ova.xml$'):
        with open(path, 'rb') as f:
            package.read_package(f, None, None, None)


def test_huge_sparse_disk_costs_what_is_present(tmp_path):
    """A 1 TiB VDI with three chunks: read once, small memory and output."""
    ovakit.require_tools('qemu-img', 'qemu-io')
    small = xvakit.qemu_pattern_raw(str(tmp_path / 'few.raw'), 4 * MiB, [
        (0, 512, 0x33), (2 * MiB, 4096, 0x44)])
    disk = xvakit.Disk(small, 'huge', size=1 << 40)
    xva = str(tmp_path / 'huge.xva')
    xvakit.make_xva(xva, [disk], cd=None)
    out = tmp_path / 'out'
    out.mkdir()
    tracemalloc.start()
    try:
        pkg, paths, read = xva_helpers.convert(xva, str(out))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    info = pkg.result.converted[0][1]
    assert (info.chunks, info.bytes_present) == (3, 3 * MiB)
    # Read once, to the first end-of-archive block.
    assert read == os.path.getsize(xva) - 512
    assert peak < 16 * MiB
    path = paths[disk.ref]
    assert os.path.getsize(path) == 1 << 40
    assert ovakit.allocated_bytes(path) <= 64 * 1024
    with open(path, 'rb') as f:
        assert f.read(512) == b'\x33' * 512
        f.seek(2 * MiB)
        assert f.read(4096) == b'\x44' * 4096
        f.seek((1 << 40) - MiB)
        assert f.read(MiB) == bytes(MiB)


def test_tar_lists_what_the_kit_meant(tmp_path, raws):
    """GNU tar reads the kit's hand-made V7 headers (an independent check)."""
    xva = str(tmp_path / 'vm.xva')
    xvakit.make_xva(xva, two_disks(raws))
    listing = subprocess.run(['tar', '-tvf', xva], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert listing[0].split()[:3] == ['-r--------', '0/0',
                                      str(tar_names(xva)[0][1])]
    assert all(' 1970-01-01 00:00 ' in line for line in listing)


def _drain(data):
    kind, reader = compression.sniff(ovakit.SequentialReader(data))
    assert kind == 'zstd'
    out = []
    while True:
        piece = reader.read(MiB)
        if not piece:
            return b''.join(out)
        out.append(piece)


def test_zstd_frames_in_a_row_and_cut_anywhere():
    """zstd frames in a row read as one stream; cut anywhere, refused.

    The frames come from the zstd tool, with a skippable frame (RFC 8878
    3.1.2) between two of them.
    """
    ovakit.require_tools('zstd')
    parts = [os.urandom(200000), b'xva' * 300000, b'']
    frames = [ovakit.run('zstd', '-q', '-c', *extra, input=part)
              for part, extra in zip(parts, ([], ['-19'], ['--no-check']))]
    skippable = b'\x5a\x2a\x4d\x18' + (7).to_bytes(4, 'little') + b'padding'
    stream = frames[0] + skippable + frames[1] + frames[2]
    assert _drain(stream) == b''.join(parts)
    ends = {len(frames[0]), len(frames[0]) + len(skippable),
            len(stream) - len(frames[2])}
    for cut in range(4, len(stream), 211):
        if cut in ends:
            continue
        with pytest.raises(exception.InvalidPackage,
                           match='^zstd data ends before its end marker$'):
            _drain(stream[:cut])


def test_suspended_vm_memory_image_is_read_past(tmp_path, raws):
    """preserve_power_state: xapi streams the suspend VDI with the disks."""
    ovakit.require_tools('qemu-img', 'qemu-io')
    memory = xvakit.qemu_pattern_raw(str(tmp_path / 'memory.raw'), 3 * MiB,
                                     [(MiB, 8192, 0x77)])
    suspend = xvakit.Disk(memory, 'Suspend image')
    xva = str(tmp_path / 'vm.xva')
    disks = xvakit.make_xva(xva, two_disks(raws), suspend=suspend)
    assert suspend.ref == 'Ref:103'
    names = [name for name, _s, _m in tar_names(xva)]
    assert 'Ref:103/00000001' in names
    out = tmp_path / 'out'
    out.mkdir()
    pkg, paths, _read = xva_helpers.convert(xva, str(out))
    descriptor = pkg.result.descriptor
    assert [d.ref for d in descriptor.disks] == ['Ref:99', 'Ref:102']
    assert sorted(os.listdir(out)) == ['Ref_102.raw', 'Ref_99.raw']
    assert_same_as(paths, disks)

    def damage_memory(members):
        i = [n for n, _d in members].index('Ref:103/00000001')
        members[i] = (members[i][0], bytes(MiB))
        return members

    damaged = str(tmp_path / 'damaged.xva')
    xvakit.make_xva(damaged, two_disks(raws), edit=damage_memory,
                    suspend=xvakit.Disk(memory, 'Suspend image'))
    again = tmp_path / 'again'
    again.mkdir()
    xva_helpers.refused(again, damaged, '^chunk Ref:103/00000001 fails its '
                        'xxhash checksum')


def test_zstd_compressed_ova_converts_too(tmp_path):
    """Whole-stream zstd is told by its magic for an OVA as for an XVA."""
    ovakit.require_tools('zstd', 'qemu-img', 'sfdisk', 'mkfs.ext4')
    from glance_xen_import import pipeline
    ova, raw_disk, _vhd = ovakit.simple_ova(str(tmp_path))
    zst = str(tmp_path / 'vm.ova.zst')
    ovakit.run('zstd', '-q', ova.path, '-o', zst)
    dest = str(tmp_path / 'converted.raw')
    pipeline.convert(zst, dest)
    assert ovakit.first_difference(dest, raw_disk.path) is None
