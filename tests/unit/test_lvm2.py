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

"""formats.lvm2 on physical volumes LVM itself wrote.

Where an LV lies is what LVM's pvs/lvs report (tests/lvmkit.py); damaged
volumes are LVM's own bytes with one field changed, checksums resealed
where the test is about what lies behind them.
"""

import struct

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import lvm2
from glance_xen_import.inspect import lvm
from glance_xen_import.inspect import volume
from tests import lvmkit

MiB = 1 << 20


def _group(disk, pv=0):
    start, size = disk.partitions[pv]
    with volume.ImageFile(disk.path) as image:
        part = image.slice(start, size)
        return lvm2.read_volume_group(part.pread, part.size)


def _relative(disk, lv, pv=0):
    (start, length), = disk.lv_runs(lv)
    return start - disk.partitions[pv][0], length


def test_linear_volumes_lie_where_lvm_says(tmp_path):
    disk = lvmkit.make_disk(tmp_path, [12], '\n'.join([
        lvmkit.linear('root', (0, 2, 3)),
        # Two adjacent segments: one run.
        lvmkit.linear('home', (0, 5, 2), (0, 7, 1)),
        lvmkit.linear('swap', (0, 0, 2))]))
    group = _group(disk)
    assert group.name == disk.group
    assert group.extent_bytes == disk.extent_bytes == MiB
    for lv in ('root', 'home', 'swap'):
        assert group.linear_extent(lv) == _relative(disk, lv), lv


def test_larger_extents_and_pe_start(tmp_path):
    disk = lvmkit.make_disk(tmp_path, [40], lvmkit.linear('root', (0, 3, 2)),
                            extent_mib=4)
    assert disk.extent_bytes == 4 * MiB
    assert _group(disk).linear_extent('root') == _relative(disk, 'root')


def test_volume_disk_extent_agrees_with_pyvslvm(tmp_path):
    disk = lvmkit.make_disk(tmp_path, [12], lvmkit.linear('root', (0, 4, 3)))
    offset = disk.lv_offset('root')
    with open(disk.path, 'r+b') as f:     # bytes pyvslvm must find there
        f.seek(offset)
        f.write(b'first' * 1000)
        f.seek(offset + 3 * MiB - 5000)
        f.write(b'last!' * 1000)
    start, size = disk.partitions[0]
    with volume.ImageFile(disk.path) as image:
        assert lvm.volume_disk_extent(image, start, size, disk.group,
                                      'root') == (offset, 3 * MiB)
        with pytest.raises(exception.GuestError) as exc:
            lvm.volume_disk_extent(image, start, size, 'other', 'root')
    assert str(exc.value) == ('the physical volume belongs to %s, not other'
                              % disk.group)


def test_volume_in_separate_runs_read_in_order(tmp_path):
    disk = lvmkit.make_disk(tmp_path, [12], lvmkit.linear(
        'data', (0, 6, 2), (0, 1, 1), (0, 3, 2)))
    runs = disk.lv_runs('data')
    assert len(runs) == 3
    content = bytes(range(256)) * (5 * MiB // 256)
    with open(disk.path, 'r+b') as f:
        at = 0
        for start, length in runs:
            f.seek(start)
            f.write(content[at:at + length])
            at += length
    start, size = disk.partitions[0]
    with volume.ImageFile(disk.path) as image:
        part = image.slice(start, size)
        group = lvm2.read_volume_group(part.pread, part.size)
        reader = volume.Runs(part, group.linear_runs('data'))
        assert reader.size == len(content)
        assert reader.read() == content
        assert reader.pread(MiB + 10, 2 * MiB - 5) == content[
            2 * MiB - 5:3 * MiB + 5]
        assert reader.pread(100, 5 * MiB - 50) == content[-50:]
        physical = lvm.open_physical_volume(part, 'partition 1', [])
        try:
            (name, lv), = physical.volumes
            assert name == 'partition 1/%s/data' % disk.group
            lv.seek(0)
            assert lv.read() == content
        finally:
            physical.close()


@pytest.mark.parametrize('lvs, reason', [
    (lvmkit.linear('data', (0, 4, 1), (0, 1, 1)),
     'logical volume data lies in 2 separate runs of extents'),
    (lvmkit.linear('data', (0, 0, 1), (1, 0, 1)),
     'logical volume data lies partly on another physical volume'),
    ('data {\nid = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"\n'
     'status = ["READ", "WRITE", "VISIBLE"]\nflags = []\n'
     'segment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 2\n'
     'type = "striped"\nstripe_count = 2\nstripe_size = 128\n'
     'stripes = ["pv0", 0, "pv1", 0]\n}\n}',
     'logical volume data is not linear (a striped segment of 2 stripes)'),
])
def test_volumes_not_in_one_run_refused(tmp_path, lvs, reason):
    disk = lvmkit.make_disk(tmp_path, [8, 8], lvs)
    with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
        _group(disk).linear_extent('data')
    assert str(exc.value) == reason


def test_snapshotted_origin_refused(tmp_path):
    snapshot = ('snapshot0 {\nid = "ssssss-0000-1111-2222-3333-4444-555555"'
                '\nstatus = ["READ", "WRITE"]\nflags = []\n'
                'segment_count = 1\nsegment1 {\nstart_extent = 0\n'
                'extent_count = 2\ntype = "snapshot"\nchunk_size = 8\n'
                'origin = "root"\ncow_store = "cow"\n}\n}')
    disk = lvmkit.make_disk(tmp_path, [12], '\n'.join([
        lvmkit.linear('root', (0, 0, 2)), lvmkit.linear('cow', (0, 2, 1)),
        snapshot]))
    with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
        _group(disk).linear_extent('root')
    assert str(exc.value) == 'logical volume root has a snapshot of it'


def test_volume_neither_reader_opens_is_listed_unreadable(tmp_path):
    # pyvslvm refuses the two-segment volume; the metadata reader refuses
    # it for its snapshot. Inspection must say so, not skip it silently.
    snapshot = ('snapshot0 {\nid = "ssssss-0000-1111-2222-3333-4444-555555"'
                '\nstatus = ["READ", "WRITE"]\nflags = []\n'
                'segment_count = 1\nsegment1 {\nstart_extent = 0\n'
                'extent_count = 4\ntype = "snapshot"\nchunk_size = 8\n'
                'origin = "data"\ncow_store = "cow"\n}\n}')
    disk = lvmkit.make_disk(tmp_path, [12], '\n'.join([
        lvmkit.linear('data', (0, 0, 2), (0, 4, 2)),
        lvmkit.linear('cow', (0, 7, 1)), snapshot]))
    start, size = disk.partitions[0]
    notes = []
    with volume.ImageFile(disk.path) as image:
        physical = lvm.open_physical_volume(image.slice(start, size),
                                            'partition 1', notes)
        physical.close()
    name = 'partition 1/%s/data' % disk.group
    assert physical.unreadable == [name]
    assert '%s not readable: logical volume data has a snapshot of it' % (
        name) in notes
    assert name not in [n for n, _ in physical.volumes]


# --- metadata LVM's tools would need device-mapper to build: the text of
# a real volume group, edited -----------------------------------------------

def _tree(tmp_path):
    disk = lvmkit.make_disk(tmp_path, [8], lvmkit.linear('root', (0, 0, 2)))
    start, size = disk.partitions[0]
    with volume.ImageFile(disk.path) as image:
        part = image.slice(start, size)
        pv_id = lvm2._read_label(part.pread)[1]
        (area, length), = lvm2._pv_areas(part.pread, 512, part.size)
        text = lvm2._metadata_text(part.pread, area, length)
    return text.decode(), pv_id, size


@pytest.mark.parametrize('segment, reason', [
    ('type = "raid1"\ndevice_count = 2\nregion_size = 1024\n'
     'raids = ["root_rmeta_0", "root_rimage_0"]',
     'logical volume root is not linear (a raid1 segment of 0 stripes)'),
    ('type = "thin"\nthin_pool = "pool"\ntransaction_id = 1\ndevice_id = 1',
     'logical volume root is not linear (a thin segment of 0 stripes)'),
])
def test_other_segment_types_refused(tmp_path, segment, reason):
    text, pv_id, size = _tree(tmp_path)
    head, tail = text.split('type = "striped"', 1)
    tail = tail.split('\n', 3)[3]     # drop stripe_count, stripes lines
    edited = head + segment + '\n' + tail
    group = lvm2._volume_group(lvm2.parse_metadata(edited.encode()), pv_id,
                               size)
    with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
        group.linear_extent('root')
    assert str(exc.value) == reason


def test_thin_volume_of_an_origin_refused(tmp_path):
    text, pv_id, size = _tree(tmp_path)
    thin = ('snap {\nsegment_count = 1\nsegment1 {\nstart_extent = 0\n'
            'extent_count = 2\ntype = "thin"\nthin_pool = "pool"\n'
            'external_origin = "root"\n}\n}\n')
    edited = text.replace('logical_volumes {', 'logical_volumes {' + thin)
    group = lvm2._volume_group(lvm2.parse_metadata(edited.encode()), pv_id,
                               size)
    with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
        group.linear_extent('root')
    assert str(exc.value) == 'logical volume root has a thin of it'


def test_extents_past_the_partition_refused(tmp_path):
    text, pv_id, size = _tree(tmp_path)
    with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
        lvm2._volume_group(lvm2.parse_metadata(text.encode()), pv_id,
                           size - MiB)
    assert str(exc.value) == ("the physical volume's extents end past its "
                              "partition")


@pytest.mark.parametrize('text, reason', [
    (b'a { ' * 20 + b'}' * 20, 'the metadata text nests too deep'),
    (b'x = 1\nx = 2\n', 'the metadata text names x twice'),
    (b'x = [' + b'1, ' * 70000 + b'1]', 'the metadata text has too many '
     'items'),
    (b'x = 1 $', 'the metadata text has an unexpected character at byte 6'),
    (b'x = [1 2]', "the metadata text expects ',', not 2"),
    (b'x = {', "the metadata text has '{' where a value belongs"),
    (b'a { x = 1', 'the metadata text has None where a name belongs'),
])
def test_hostile_text_refused(text, reason):
    with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
        lvm2.parse_metadata(text)
    assert str(exc.value) == reason


# --- damaged on-disk structures ------------------------------------------

class _Damaged:
    """A PV's bytes (its first MiB, where LVM keeps its structures)."""

    def __init__(self, tmp_path):
        self.disk = lvmkit.make_disk(tmp_path, [8],
                                     lvmkit.linear('root', (0, 0, 2)))
        self.start, self.size = self.disk.partitions[0]
        with open(self.disk.path, 'rb') as f:
            f.seek(self.start)
            self.data = bytearray(f.read(MiB))
        self.label = 512      # pvcreate puts the label in sector 1
        assert self.data[self.label:self.label + 8] == b'LABELONE'
        self.mda = 4096       # and the first metadata area at 4 KiB
        assert self.data[self.mda + 4:self.mda + 20] == lvm2.MDA_MAGIC

    def pread(self, length, offset):
        return bytes(self.data[offset:offset + length])

    def seal_label(self):
        at = self.label
        self.data[at + 16:at + 20] = struct.pack(
            '<I', lvm2.crc(bytes(self.data[at + 20:at + 512])))

    def seal_mda(self):
        at = self.mda
        self.data[at:at + 4] = struct.pack(
            '<I', lvm2.crc(bytes(self.data[at + 4:at + 512])))

    def raw_locn(self):
        return struct.unpack_from('<QQII', self.data, self.mda + 40)

    def set_raw_locn(self, offset, size, checksum, flags=0):
        struct.pack_into('<QQII', self.data, self.mda + 40, offset, size,
                         checksum, flags)
        self.seal_mda()

    def read(self, size=None):
        return lvm2.read_volume_group(self.pread, size or self.size)

    def refusal(self, size=None):
        with pytest.raises(lvm2.InvalidVolumeGroup) as exc:
            self.read(size)
        return str(exc.value)


def test_undamaged_copy_reads(tmp_path):
    pv = _Damaged(tmp_path)
    assert pv.read().linear_extent('root') == _relative(pv.disk, 'root')


# One bit flipped inside a checksummed structure: (where, offset, reason).
@pytest.mark.parametrize('where, offset, reason', [
    ('label', 40, 'the LVM2 label checksum is wrong'),
    ('mda', 100, 'the metadata area header checksum is wrong'),
])
def test_checksums_checked(tmp_path, where, offset, reason):
    pv = _Damaged(tmp_path)
    pv.data[getattr(pv, where) + offset] ^= 1
    assert pv.refusal() == reason


def test_no_label(tmp_path):
    pv = _Damaged(tmp_path)
    pv.data[pv.label:pv.label + 8] = b'LABELTWO'
    assert pv.refusal() == 'no LVM2 label in the first four sectors'


def test_label_pointing_outside_its_sector(tmp_path):
    pv = _Damaged(tmp_path)
    struct.pack_into('<I', pv.data, pv.label + 20, 500)
    pv.seal_label()
    assert pv.refusal() == ('the LVM2 label points its header outside its '
                            'sector')


def test_metadata_area_outside_the_volume(tmp_path):
    pv = _Damaged(tmp_path)
    # pv_header: id (32), size (8), data areas to a zero entry, then the
    # metadata areas: move the first past the volume's end.
    at = pv.label + 32 + 32 + 8
    while struct.unpack_from('<Q', pv.data, at)[0]:
        at += 16
    at += 16
    assert struct.unpack_from('<Q', pv.data, at)[0] == pv.mda
    struct.pack_into('<Q', pv.data, at, pv.size)
    pv.seal_label()
    assert pv.refusal() == 'a metadata area lies outside the physical volume'


def test_metadata_text_checksum_checked(tmp_path):
    pv = _Damaged(tmp_path)
    offset, size, checksum, flags = pv.raw_locn()
    pv.data[pv.mda + offset + 10] ^= 1
    assert pv.refusal() == 'the metadata text checksum is wrong'


@pytest.mark.parametrize('change', ['huge', 'before-header', 'past-area'])
def test_metadata_text_location_checked(tmp_path, change):
    pv = _Damaged(tmp_path)
    offset, size, checksum, flags = pv.raw_locn()
    if change == 'huge':
        size = 1 << 40
    elif change == 'before-header':
        offset = 100
    else:
        offset = 1 << 40
    pv.set_raw_locn(offset, size, checksum)
    assert pv.refusal() == ('the metadata text lies outside its area or is '
                            'too large')


def test_ignored_metadata_is_not_read(tmp_path):
    pv = _Damaged(tmp_path)
    pv.set_raw_locn(*pv.raw_locn()[:3], flags=lvm2.RAW_LOCN_IGNORED)
    assert pv.refusal() == 'the metadata area holds no metadata'


def test_text_wrapping_round_the_ring(tmp_path):
    # LVM's metadata area is a ring: text that reaches its end continues
    # just after the 512-byte header. Move the text there, split.
    pv = _Damaged(tmp_path)
    offset, size, checksum, flags = pv.raw_locn()
    text = pv.pread(size, pv.mda + offset)
    area_size = struct.unpack_from('<Q', pv.data, pv.mda + 32)[0]
    split = size // 2
    new_offset = area_size - split
    assert pv.mda + area_size <= len(pv.data)
    pv.data[pv.mda + new_offset:pv.mda + area_size] = text[:split]
    pv.data[pv.mda + 512:pv.mda + 512 + size - split] = text[split:]
    pv.set_raw_locn(new_offset, size, checksum)
    assert pv.read().linear_extent('root') == _relative(pv.disk, 'root')
    # And LVM itself reads the same ring.
    with open(pv.disk.path, 'r+b') as f:
        f.seek(pv.start)
        f.write(pv.data)
    assert lvmkit.lvm_groups(pv.disk) == [pv.disk.group]
