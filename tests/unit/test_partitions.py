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

"""formats.partitions against disks made by sfdisk/fdisk and mkfs tools.

Every positive result is compared with an independent reader (sfdisk --json,
mmls, blkid -p, fsstat). Negative cases start from a real disk and damage it
the way a broken conversion or a hostile image would.
"""

import io
import json
import os
import struct
import zlib

import hypothesis
from hypothesis import strategies as st
import pytest

from glance_xen_import import exception
from glance_xen_import.formats import partitions
from tests import diskkit_partitions as kit

MiB = kit.MiB
SECTOR = kit.SECTOR
NOT_CONVERTED = 'the image most likely did not convert properly'
GPT_SIZE = 64 * MiB
MBR_SIZE = 64 * MiB
DISK_SIGNATURE = 0x1234ABCD
DISK_GUID = '3f2504e0-4f89-41d3-9a0c-0305e82c3301'
BIOS_BOOT = '21686148-6449-6e6f-744e-656564454649'
ESP = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b'


def layout_of(path, disk_size=None):
    size = os.path.getsize(path) if disk_size is None else disk_size
    with open(path, 'rb') as image:
        return partitions.read_layout(image, size)


def refusal(path, disk_size=None):
    with pytest.raises(exception.InvalidPartitionTable) as caught:
        layout_of(path, disk_size)
    reason = str(caught.value)
    assert '\n' not in reason
    return reason


def sfdisk_parts(path):
    table = kit.sfdisk_json(path)
    return table, table['partitions']


def number_of(node):
    digits = ''
    for char in reversed(node):
        if not char.isdigit():
            break
        digits = char + digits
    return int(digits)


# --- disks ------------------------------------------------------------------

MBR_SCRIPT = """label: dos
label-id: 0x1234abcd
p1 : start=2048, size=16384, type=83, bootable
p2 : size=16384, type=ef
p3 : type=5
p5 : size=16384, type=82
p6 : type=83
"""
MBR_FILESYSTEMS = {1: 'ext4', 2: 'vfat', 5: 'swap', 6: 'xfs'}

GPT_SCRIPT = """label: gpt
label-id: 3F2504E0-4F89-41D3-9A0C-0305E82C3301
size=8MiB, type=U, name="EFI System"
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, \
attrs=LegacyBIOSBootable, name=bios
size=16MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Basic data"
size=8MiB, type=L, name=root
size=24MiB, type=L, name=data
type=S, name=swap
"""
GPT_FILESYSTEMS = {1: 'vfat', 3: 'ntfs', 4: 'ext3', 5: 'btrfs', 6: 'swap'}


def build(path, size, script, filesystems):
    """Partition with sfdisk, then mkfs each partition where sfdisk put it."""
    kit.blank(path, size)
    kit.sfdisk(path, script)
    for entry in kit.sfdisk_json(path)['partitions']:
        kind = filesystems.get(number_of(entry['node']))
        if kind:
            kit.put_filesystem(path, kind, entry['start'] * SECTOR,
                               entry['size'] * SECTOR, os.path.dirname(path))
    return path


@pytest.fixture
def mbr_disk(tmp_path):
    return build(str(tmp_path / 'mbr.raw'), MBR_SIZE, MBR_SCRIPT,
                 MBR_FILESYSTEMS)


@pytest.fixture
def gpt_disk(tmp_path):
    return build(str(tmp_path / 'gpt.raw'), GPT_SIZE, GPT_SCRIPT,
                 GPT_FILESYSTEMS)


@pytest.fixture
def blank_mbr(tmp_path):
    """Primary, extended and two logical partitions, nothing in them."""
    path = kit.blank(tmp_path / 'blank-mbr.raw', 16 * MiB)
    kit.sfdisk(path, 'label: dos\np1 : start=2048, size=4096, type=83\n'
                     'p2 : type=5\np5 : size=4096, type=83\n'
                     'p6 : size=4096, type=83\n')
    return path


# --- MBR --------------------------------------------------------------------

def test_mbr_matches_sfdisk_and_mmls(mbr_disk):
    layout = layout_of(mbr_disk)
    table, expected = sfdisk_parts(mbr_disk)
    assert layout.scheme == 'mbr'
    assert table['label'] == 'dos'
    assert layout.disk_signature == int(table['id'], 16) == DISK_SIGNATURE
    assert layout.disk_guid is None and layout.filesystem is None
    assert [p.number for p in layout.partitions] == [
        number_of(e['node']) for e in expected] == [1, 2, 3, 5, 6]
    for part, entry in zip(layout.partitions, expected):
        assert part.start == entry['start'] * SECTOR
        assert part.size == entry['size'] * SECTOR
        assert part.type_id == '0x%02x' % int(entry['type'], 16)
        assert part.bootable == entry.get('bootable', False)
        assert part.is_esp == (entry['type'] == 'ef')
        assert part.name == ''
    # mmls lists primaries and logicals, not the extended container.
    assert kit.mmls(mbr_disk) == [
        (p.start // SECTOR, p.size // SECTOR) for p in layout.partitions
        if p.type_id != '0x05']


def test_mbr_filesystems_match_blkid_and_fsstat(mbr_disk):
    layout = layout_of(mbr_disk)
    found = {p.number: p.filesystem for p in layout.partitions}
    assert found == {1: 'ext4', 2: 'vfat', 3: None, 5: 'swap', 6: 'xfs'}
    for part in layout.partitions:
        if part.filesystem:
            assert kit.blkid_type(mbr_disk, part.start,
                                  part.size) == part.filesystem
    assert kit.fsstat_type(mbr_disk, layout.partitions[0].start) == 'ext4'
    assert kit.fsstat_type(mbr_disk,
                           layout.partitions[1].start).startswith('fat')


def test_many_logical_partitions_match_sfdisk(tmp_path):
    # 56 logical partitions (sfdisk's own limit is partition 60) and an ext2
    # primary so the disk shows content.
    path = kit.blank(tmp_path / 'many.raw', 16 * MiB)
    lines = ['label: dos', 'p1 : start=2048, size=14336, type=5',
             'p2 : start=16384, type=83']
    start = 2050
    for number in range(5, 61):
        lines.append('p%d : start=%d, size=8, type=83' % (number, start))
        start += 10
    kit.sfdisk(path, '\n'.join(lines) + '\n')
    expected = kit.sfdisk_json(path)['partitions']
    second = [e for e in expected if number_of(e['node']) == 2][0]
    kit.put_filesystem(path, 'ext2', second['start'] * SECTOR,
                       second['size'] * SECTOR, tmp_path)
    layout = layout_of(path)
    assert sorted((p.number, p.start, p.size) for p in layout.partitions) == \
        sorted((number_of(e['node']), e['start'] * SECTOR,
                e['size'] * SECTOR) for e in expected)
    assert len(layout.partitions) == 58


def test_mbr_with_blank_partitions_is_refused(blank_mbr):
    reason = refusal(blank_mbr)
    assert reason.startswith('none of the 4 partitions') and \
        reason.endswith(NOT_CONVERTED)


def test_empty_mbr_is_refused(tmp_path):
    path = kit.blank(tmp_path / 'empty.raw', 4 * MiB)
    kit.sfdisk(path, 'label: dos\n')
    assert kit.sfdisk_json(path)['label'] == 'dos'
    assert refusal(path) == 'the MBR lists no partitions: ' + NOT_CONVERTED


def test_mbr_partition_past_the_end_is_refused(tmp_path):
    # An MBR disk converted short: the table still describes 64 MiB.
    path = build(str(tmp_path / 'short.raw'), 64 * MiB,
                 'label: dos\np1 : start=2048, type=83\n', {1: 'ext2'})
    end = kit.sfdisk_json(path)['partitions'][0]
    end = (end['start'] + end['size']) * SECTOR
    os.truncate(path, 32 * MiB)
    assert refusal(path) == (
        'partition 1 ends at byte %d, past the end of the disk (%d bytes)'
        % (end, 32 * MiB))


def test_overlapping_mbr_partitions_are_refused(mbr_disk):
    # Move partition 2's start into partition 1: sfdisk --verify agrees.
    first_lba = struct.unpack_from('<I', kit.read_at(mbr_disk, 446 + 8, 4))[0]
    kit.patch(mbr_disk, 446 + 16 + 8, struct.pack('<I', first_lba + 100))
    assert 'Partition 1: overlaps partition 2' in kit.sfdisk_verify(mbr_disk)
    reason = refusal(mbr_disk)
    assert 'partition 1' in reason and 'overlaps partition 2' in reason


def test_mbr_bad_boot_flag_is_refused(blank_mbr):
    kit.patch(blank_mbr, 446 + 16, b'\x7f')
    assert refusal(blank_mbr) == ('MBR entry 2 has boot indicator 0x7f '
                                  '(0x00 or 0x80 expected)')


def test_two_extended_partitions_are_refused(blank_mbr):
    kit.patch(blank_mbr, 446 + 4, b'\x0f')
    assert refusal(blank_mbr) == ('the MBR has 2 extended partitions (at '
                                  'most one allowed)')


def ebr_lbas(path):
    """(extended start, [EBR LBAs]) following sfdisk's chain."""
    ext = [e for e in kit.sfdisk_json(path)['partitions']
           if e['type'] in ('5', 'f', '85')][0]
    lbas = [ext['start']]
    while True:
        link = kit.read_at(path, lbas[-1] * SECTOR + 446 + 16, 16)
        relative = struct.unpack_from('<I', link, 8)[0]
        if link[4] == 0:
            return ext['start'], lbas
        lbas.append(ext['start'] + relative)


def test_ebr_loop_is_refused(blank_mbr):
    first, lbas = ebr_lbas(blank_mbr)
    assert len(lbas) == 2
    # The second EBR links back to the first (relative start 0).
    kit.patch(blank_mbr, lbas[1] * SECTOR + 446 + 16,
              struct.pack('<B3sB3sII', 0, b'', 0x05, b'', 0, 1))
    assert refusal(blank_mbr) == ('the extended partition chain loops back '
                                  'to the EBR at LBA %d' % first)


def test_ebr_link_outside_the_extended_partition_is_refused(blank_mbr):
    first, lbas = ebr_lbas(blank_mbr)
    kit.patch(blank_mbr, lbas[0] * SECTOR + 446 + 16 + 8,
              struct.pack('<I', 1 << 20))
    assert 'outside its extended partition' in refusal(blank_mbr)


def test_ebr_without_signature_is_refused(blank_mbr):
    _first, lbas = ebr_lbas(blank_mbr)
    kit.patch(blank_mbr, lbas[1] * SECTOR + 510, b'\0\0')
    assert refusal(blank_mbr) == ('the EBR at LBA %d has no 0x55AA '
                                  'signature' % lbas[1])


def test_logical_partition_past_its_extended_is_refused(blank_mbr):
    _first, lbas = ebr_lbas(blank_mbr)
    kit.patch(blank_mbr, lbas[1] * SECTOR + 446 + 12,
              struct.pack('<I', 1 << 20))
    assert 'extends past its extended partition' in refusal(blank_mbr)


def test_ebr_chain_longer_than_the_cap_is_refused(blank_mbr):
    # sfdisk stops at partition 60, so the over-long chain is written here
    # in the same shape sfdisk uses: each EBR holds a 1-sector logical
    # partition right behind it and links to the next EBR.
    first, lbas = ebr_lbas(blank_mbr)
    base = first + 16
    count = partitions.MAX_LOGICAL + 1
    kit.patch(blank_mbr, lbas[0] * SECTOR + 446 + 16,
              struct.pack('<B3sB3sII', 0, b'', 0x05, b'', base - first, 2))
    for index in range(count):
        lba = base + 2 * index
        link = (struct.pack('<B3sB3sII', 0, b'', 0x05, b'',
                            lba + 2 - first, 2)
                if index < count - 1 else bytes(16))
        kit.patch(blank_mbr, lba * SECTOR + 446,
                  struct.pack('<B3sB3sII', 0, b'', 0x83, b'', 1, 1) + link
                  + bytes(32) + b'\x55\xaa')
    assert refusal(blank_mbr) == ('the extended partition chain has more '
                                  'than %d logical partitions'
                                  % partitions.MAX_LOGICAL)


# --- GPT --------------------------------------------------------------------

def test_gpt_matches_sfdisk_and_mmls(gpt_disk):
    layout = layout_of(gpt_disk)
    table, expected = sfdisk_parts(gpt_disk)
    assert layout.scheme == 'gpt' and table['label'] == 'gpt'
    assert layout.disk_guid == table['id'].lower() == DISK_GUID
    assert layout.disk_signature == struct.unpack(
        '<I', kit.read_at(gpt_disk, 440, 4))[0]
    assert [p.number for p in layout.partitions] == [
        number_of(e['node']) for e in expected] == [1, 2, 3, 4, 5, 6]
    for part, entry in zip(layout.partitions, expected):
        assert part.start == entry['start'] * SECTOR
        assert part.size == entry['size'] * SECTOR
        assert part.type_id == entry['type'].lower()
        assert part.name == entry.get('name', '')
        assert part.bootable == ('LegacyBIOSBootable' in entry.get('attrs',
                                                                   ''))
        assert part.is_esp == (part.type_id == ESP)
    assert [p.is_esp for p in layout.partitions] == [True] + [False] * 5
    assert layout.partitions[1].bootable
    assert kit.mmls(gpt_disk) == [(p.start // SECTOR, p.size // SECTOR)
                                  for p in layout.partitions]


def test_gpt_filesystems_match_blkid_and_fsstat(gpt_disk):
    layout = layout_of(gpt_disk)
    assert {p.number: p.filesystem for p in layout.partitions} == {
        1: 'vfat', 2: None, 3: 'ntfs', 4: 'ext3', 5: 'btrfs', 6: 'swap'}
    for part in layout.partitions:
        assert kit.blkid_type(gpt_disk, part.start,
                              part.size) == part.filesystem
    assert kit.fsstat_type(gpt_disk, layout.partitions[2].start) == 'ntfs'
    assert kit.fsstat_type(gpt_disk, layout.partitions[3].start) == 'ext3'


def test_gpt_fat32_esp(tmp_path):
    path = build(str(tmp_path / 'esp.raw'), 48 * MiB,
                 'label: gpt\nsize=40MiB, type=U\n', {1: 'vfat32'})
    (part,) = layout_of(path).partitions
    assert part.is_esp and part.filesystem == 'vfat'
    assert kit.fsstat_type(path, part.start) == 'fat32'


def test_layout_to_dict_is_json(gpt_disk):
    layout = layout_of(gpt_disk)
    data = json.loads(json.dumps(layout.to_dict()))
    assert data['scheme'] == 'gpt' and data['disk_guid'] == DISK_GUID
    assert [p['number'] for p in data['partitions']] == [1, 2, 3, 4, 5, 6]
    assert data['partitions'][0] == dataclass_dict(layout.partitions[0])


def dataclass_dict(part):
    return {'number': part.number, 'start': part.start, 'size': part.size,
            'type_id': part.type_id, 'name': part.name,
            'bootable': part.bootable, 'filesystem': part.filesystem,
            'is_esp': part.is_esp}


def gpt_header(path, lba):
    raw = kit.read_at(path, lba * SECTOR, 92)
    fields = struct.unpack('<8sIII4xQQQQ16sQIII', raw)
    return dict(zip(('sig', 'rev', 'size', 'crc', 'my', 'alt', 'first',
                     'last', 'guid', 'entries', 'count', 'entry_size',
                     'entries_crc'), fields))


def refresh_gpt_crcs(path):
    """Make both GPT copies' CRCs right again after deliberate damage.

    Then the check under test is the one that fires, not a CRC check.
    """
    last = os.path.getsize(path) // SECTOR - 1
    for lba in (1, last):
        head = gpt_header(path, lba)
        array = kit.read_at(path, head['entries'] * SECTOR,
                            head['count'] * head['entry_size'])
        kit.patch(path, lba * SECTOR + 88,
                  struct.pack('<I', zlib.crc32(array)))
        header = bytearray(kit.read_at(path, lba * SECTOR, head['size']))
        header[16:20] = bytes(4)
        kit.patch(path, lba * SECTOR + 16,
                  struct.pack('<I', zlib.crc32(header)))


def test_gpt_header_damage_is_refused(gpt_disk):
    kit.flip(gpt_disk, SECTOR + 56)     # a disk GUID byte
    assert refusal(gpt_disk) == 'the primary GPT header CRC32 is wrong'


def test_gpt_entry_damage_is_refused(gpt_disk):
    entries = gpt_header(gpt_disk, 1)['entries'] * SECTOR
    kit.flip(gpt_disk, entries + 128 + 40)   # partition 2's last LBA
    assert refusal(gpt_disk) == ('the primary GPT partition entry array '
                                 'CRC32 is wrong')


def test_gpt_backup_header_damage_is_refused(gpt_disk):
    kit.flip(gpt_disk, GPT_SIZE - SECTOR + 56)
    assert refusal(gpt_disk) == 'the backup GPT header CRC32 is wrong'


def test_gpt_backup_entry_damage_is_refused(gpt_disk):
    entries = gpt_header(gpt_disk, GPT_SIZE // SECTOR - 1)['entries']
    kit.flip(gpt_disk, entries * SECTOR + 60)
    assert refusal(gpt_disk) == ('the backup GPT partition entry array '
                                 'CRC32 is wrong')


@pytest.mark.parametrize('cut', [MiB, 32 * 1024, SECTOR])
def test_gpt_disk_cut_short_is_refused(gpt_disk, cut):
    # The known qemu-img CHS truncation loses 32 KiB to 2 MiB at the end.
    os.truncate(gpt_disk, GPT_SIZE - cut)
    last = (GPT_SIZE - cut) // SECTOR - 1
    assert refusal(gpt_disk) == (
        'the backup GPT header belongs at LBA %d but the disk ends at LBA '
        '%d: the end of the disk is missing (a truncated conversion)'
        % (GPT_SIZE // SECTOR - 1, last))


def test_gpt_disk_from_truncating_qemu_conversion_is_refused(
        gpt_disk, tmp_path):
    out = kit.qemu_convert_as_xapi_export(gpt_disk, tmp_path / 'out.raw')
    size = os.path.getsize(out)
    assert size < GPT_SIZE      # qemu-img really did cut the disk short
    assert refusal(out) == (
        'the backup GPT header belongs at LBA %d but the disk ends at LBA '
        '%d: the end of the disk is missing (a truncated conversion)'
        % (GPT_SIZE // SECTOR - 1, size // SECTOR - 1))


def test_mbr_disk_from_truncating_qemu_conversion_is_refused(tmp_path):
    path = build(str(tmp_path / 'mbr.raw'), 64 * MiB,
                 'label: dos\np1 : start=2048, type=83\n', {1: 'ext4'})
    assert layout_of(path).partitions[0].filesystem == 'ext4'
    out = kit.qemu_convert_as_xapi_export(path, tmp_path / 'out.raw')
    size = os.path.getsize(out)
    assert size < 64 * MiB
    assert refusal(out) == ('partition 1 ends at byte %d, past the end of '
                            'the disk (%d bytes)' % (64 * MiB, size))


def test_gpt_disk_grown_is_refused(gpt_disk):
    os.truncate(gpt_disk, GPT_SIZE + MiB)
    assert refusal(gpt_disk) == (
        'the backup GPT header is at LBA %d, not at the last LBA %d of the '
        'disk' % (GPT_SIZE // SECTOR - 1, (GPT_SIZE + MiB) // SECTOR - 1))


def test_gpt_backup_not_matching_is_refused(gpt_disk):
    last = GPT_SIZE // SECTOR - 1
    # Backup claims the wrong first usable LBA but is otherwise intact.
    first = gpt_header(gpt_disk, last)['first']
    kit.patch(gpt_disk, last * SECTOR + 40, struct.pack('<Q', first + 1))
    refresh_gpt_crcs(gpt_disk)
    assert refusal(gpt_disk) == ('the backup GPT header at LBA %d differs '
                                 'from the primary in first_usable' % last)


def test_gpt_backup_with_primary_fields_is_refused(gpt_disk):
    # A copy of the primary header at the end: my/alternate LBA not swapped.
    last = GPT_SIZE // SECTOR - 1
    kit.patch(gpt_disk, last * SECTOR, kit.read_at(gpt_disk, SECTOR, SECTOR))
    assert refusal(gpt_disk) == ('the backup GPT header at LBA %d says it '
                                 'is at LBA 1' % last)


def patch_entry(path, index, first=None, last=None):
    last_lba = os.path.getsize(path) // SECTOR - 1
    for lba in (1, last_lba):
        at = gpt_header(path, lba)['entries'] * SECTOR + 128 * index
        if first is not None:
            kit.patch(path, at + 32, struct.pack('<Q', first))
        if last is not None:
            kit.patch(path, at + 40, struct.pack('<Q', last))
    refresh_gpt_crcs(path)


def test_overlapping_gpt_partitions_are_refused(gpt_disk):
    starts = [e['start'] for e in kit.sfdisk_json(gpt_disk)['partitions']]
    patch_entry(gpt_disk, 3, first=starts[2] + 8)
    # sfdisk notices too (its message numbers the partitions differently).
    assert 'overlaps' in kit.sfdisk_verify(gpt_disk)
    reason = refusal(gpt_disk)
    assert 'GPT partition 3' in reason and 'overlaps GPT partition 4' \
        in reason


def test_gpt_partition_outside_usable_range_is_refused(gpt_disk):
    header = gpt_header(gpt_disk, 1)
    start = kit.sfdisk_json(gpt_disk)['partitions'][5]['start']
    patch_entry(gpt_disk, 5, last=header['last'] + 1)
    assert refusal(gpt_disk) == (
        'GPT partition 6 (LBA %d-%d) is outside the usable LBAs %d-%d'
        % (start, header['last'] + 1, header['first'], header['last']))


def test_gpt_entry_count_bound_is_checked_before_reading(gpt_disk):
    for lba in (1, GPT_SIZE // SECTOR - 1):
        kit.patch(gpt_disk, lba * SECTOR + 80, struct.pack('<I', 1 << 30))
    refresh_header_crc(gpt_disk, 1)
    assert refusal(gpt_disk) == ('the primary GPT has %d partition entries '
                                 '(at most %d accepted)'
                                 % (1 << 30, partitions.MAX_GPT_ENTRIES))


def refresh_header_crc(path, lba):
    head = gpt_header(path, lba)
    header = bytearray(kit.read_at(path, lba * SECTOR, head['size']))
    header[16:20] = bytes(4)
    kit.patch(path, lba * SECTOR + 16, struct.pack('<I', zlib.crc32(header)))


@pytest.mark.parametrize('size,message', [
    (91, 'the primary GPT header size is 91 (92-512 expected)'),
    (513, 'the primary GPT header size is 513 (92-512 expected)'),
])
def test_gpt_header_size_bounds(gpt_disk, size, message):
    kit.patch(gpt_disk, SECTOR + 12, struct.pack('<I', size))
    assert refusal(gpt_disk) == message


@pytest.mark.parametrize('entry_size', [0, 100, 192, 8192])
def test_gpt_entry_size_bounds(gpt_disk, entry_size):
    kit.patch(gpt_disk, SECTOR + 84, struct.pack('<I', entry_size))
    refresh_header_crc(gpt_disk, 1)
    assert refusal(gpt_disk).startswith(
        'the primary GPT partition entry size is %d' % entry_size)


def test_gpt_my_lba_must_be_one(gpt_disk):
    kit.patch(gpt_disk, SECTOR + 24, struct.pack('<Q', 2))
    refresh_header_crc(gpt_disk, 1)
    assert refusal(gpt_disk) == ('the primary GPT header says it is at LBA '
                                 '2, not 1')


def test_gpt_usable_range_outside_disk_is_refused(gpt_disk):
    kit.patch(gpt_disk, SECTOR + 48, struct.pack('<Q', GPT_SIZE // SECTOR))
    refresh_header_crc(gpt_disk, 1)
    assert 'are outside the disk' in refusal(gpt_disk)


def test_gpt_without_protective_mbr_is_refused(gpt_disk):
    kit.patch(gpt_disk, 0, bytes(SECTOR))
    assert refusal(gpt_disk) == ('there is a GPT header at LBA 1 but no '
                                 'protective MBR, so guests will not see '
                                 'the partitions')


def test_gpt_for_4096_byte_sectors_is_refused(tmp_path):
    kit.require('fdisk')
    path = kit.blank(tmp_path / '4kn.raw', 16 * MiB)
    # fdisk's interactive commands: new GPT, one default partition, write.
    kit.run('fdisk', '-b', '4096', path, stdin='g\nn\n\n\n\nw\n')
    assert kit.read_at(path, 4096, 8) == b'EFI PART'
    assert refusal(path) == ('the GPT was written for 4096-byte sectors; '
                             'the disk is used with 512-byte sectors and '
                             'would show no partitions')


def test_empty_gpt_is_refused(tmp_path):
    path = kit.blank(tmp_path / 'empty-gpt.raw', 4 * MiB)
    kit.sfdisk(path, 'label: gpt\n')
    assert kit.sfdisk_json(path)['label'] == 'gpt'
    assert refusal(path) == ('the GPT partition table lists no partitions: '
                             + NOT_CONVERTED)


def test_gpt_with_blank_partitions_is_refused(tmp_path):
    # ESP, BIOS boot and Microsoft reserved, all left blank.
    path = kit.blank(tmp_path / 'blank-gpt.raw', 16 * MiB)
    kit.sfdisk(path, 'label: gpt\nsize=4MiB, type=U\n'
                     'size=1MiB, type=21686148-6449-6E6F-744E-656564454649\n'
                     'size=4MiB, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\n')
    reason = refusal(path)
    assert reason.startswith('none of the 3 partitions') and \
        reason.endswith(NOT_CONVERTED)


def test_gpt_bios_boot_with_data_shows_content(tmp_path):
    # A BIOS boot partition holding bytes (GRUB's core.img in real life)
    # counts as content; its type says it holds no filesystem.
    path = kit.blank(tmp_path / 'bios.raw', 8 * MiB)
    kit.sfdisk(path, 'label: gpt\n'
                     'size=1MiB, type=21686148-6449-6E6F-744E-656564454649\n')
    start = kit.sfdisk_json(path)['partitions'][0]['start'] * SECTOR
    kit.patch(path, start + 4096, b'GRUB core image stand-in')
    (part,) = layout_of(path).partitions
    assert part.type_id == BIOS_BOOT and part.filesystem is None


# --- whole disks and single filesystems -------------------------------------

def test_all_zero_disk_is_refused(tmp_path):
    path = kit.blank(tmp_path / 'zero.raw', 8 * MiB)
    assert refusal(path) == partitions.NO_CONTENT_REASON == (
        'no partition table and no filesystem found: ' + NOT_CONVERTED)


def test_disk_smaller_than_a_sector_is_refused():
    with pytest.raises(exception.InvalidPartitionTable):
        partitions.read_layout(io.BytesIO(b''), 0)


@pytest.mark.parametrize('kind', ['ext4', 'ntfs', 'vfat', 'xfs', 'swap',
                                  'ext2'])
def test_whole_disk_filesystem_is_accepted(tmp_path, kind):
    size = kit.MIN_SIZE.get(kind, 16 * MiB)
    path = kit.make_filesystem(kind, tmp_path / ('%s.raw' % kind), size)
    layout = layout_of(path)
    assert layout == partitions.DiskLayout(
        scheme='none', partitions=(), filesystem=kit.EXPECTED[kind],
        disk_signature=None, disk_guid=None)
    assert kit.blkid_type(path) == layout.filesystem


def test_whole_disk_ntfs_boot_sector_is_not_an_mbr(tmp_path):
    path = kit.make_filesystem('ntfs', tmp_path / 'ntfs.raw', 16 * MiB)
    # The NTFS boot sector ends in 55 AA like an MBR would.
    assert kit.read_at(path, 510, 2) == b'\x55\xaa'
    assert layout_of(path).scheme == 'none'
    assert kit.fsstat_type(path, 0) == 'ntfs'


class RecordingImage:
    """A file wrapper that remembers every byte range read."""

    def __init__(self, raw):
        self.raw = raw
        self.ranges = []
        self.position = 0

    def seek(self, offset, whence=0):
        self.position = self.raw.seek(offset, whence)
        return self.position

    def read(self, size=-1):
        data = self.raw.read(size)
        self.ranges.append((self.position, self.position + len(data)))
        self.position += len(data)
        return data


@pytest.mark.parametrize('kind', sorted(kit.EXPECTED))
def test_detect_filesystem_matches_blkid_inside_bounds(tmp_path, kind):
    size = kit.MIN_SIZE.get(kind, 8 * MiB)
    offset = 3 * MiB
    path = kit.blank(tmp_path / 'disk.raw', offset + size + 2 * MiB)
    kit.put_filesystem(path, kind, offset, size, tmp_path)
    # Bytes just outside the range must not be read: fill them with ones.
    kit.patch(path, offset - MiB, b'\xff' * MiB)
    kit.patch(path, offset + size, b'\xff' * MiB)
    with open(path, 'rb') as raw:
        image = RecordingImage(raw)
        found = partitions.detect_filesystem(image, offset, size)
    assert found == kit.EXPECTED[kind]
    assert kit.blkid_type(path, offset, size) == found
    assert image.ranges and all(offset <= lo and hi <= offset + size
                                for lo, hi in image.ranges)


def test_detect_filesystem_never_reads_past_a_short_range(tmp_path):
    # btrfs keeps its superblock at 64 KiB: a 64 KiB range cannot hold it.
    path = kit.make_filesystem('btrfs', tmp_path / 'b.raw',
                               kit.MIN_SIZE['btrfs'])
    with open(path, 'rb') as raw:
        image = RecordingImage(raw)
        assert partitions.detect_filesystem(image, 0, 65536) is None
        assert all(hi <= 65536 for _lo, hi in image.ranges)
        assert partitions.detect_filesystem(raw, 0, 0) is None


def test_lvm_physical_volume_in_mbr_partition(tmp_path):
    path = build(str(tmp_path / 'lvm.raw'), 24 * MiB,
                 'label: dos\np1 : start=2048, type=8e\n', {1: 'lvm2'})
    (part,) = layout_of(path).partitions
    assert part.type_id == '0x8e' and part.filesystem == 'lvm2'
    assert kit.blkid_type(path, part.start, part.size) == 'lvm2'


# --- untrusted input --------------------------------------------------------

def read_or_refuse(data, disk_size):
    try:
        layout = partitions.read_layout(io.BytesIO(data), disk_size)
    except exception.InvalidPartitionTable as exc:
        assert str(exc) and '\n' not in str(exc)
        return None
    assert isinstance(layout, partitions.DiskLayout)
    json.dumps(layout.to_dict())
    for part in layout.partitions:
        assert 0 < part.start and part.start + part.size <= disk_size
    return layout


@hypothesis.settings(deadline=None)
@hypothesis.given(head=st.binary(min_size=0, max_size=65536),
                  disk_size=st.integers(min_value=0, max_value=4 * MiB))
def test_random_first_64k(head, disk_size):
    read_or_refuse(head, disk_size)


@hypothesis.settings(deadline=None)
@hypothesis.given(tail=st.binary(min_size=8, max_size=4096),
                  boot=st.sampled_from([b'\x00', b'\x80']),
                  kind=st.sampled_from([0xEE, 0x05, 0x83, 0x0F, 0xEF]))
def test_random_tables_behind_a_signature(tail, boot, kind):
    # Random bytes where the records are, with a valid signature: the MBR,
    # GPT and EBR paths all get to run on nonsense.
    data = bytearray(2 * MiB)
    data[446:446 + len(tail[:64])] = tail[:64]
    data[446] = boot[0]
    data[450] = kind
    data[510:512] = b'\x55\xaa'
    data[512:512 + len(tail)] = tail
    if kind == 0xEE:
        data[454:458] = struct.pack('<I', 1)
        data[512:520] = b'EFI PART'
    read_or_refuse(bytes(data), len(data))


@pytest.fixture(scope='module')
def small_disks(tmp_path_factory):
    """Real 4 MiB GPT and MBR disks with ext2 inside, as bytes."""
    kit.require('sfdisk', 'mke2fs')
    work = tmp_path_factory.mktemp('small')
    gpt = build(str(work / 'gpt.raw'), 4 * MiB,
                'label: gpt\nsize=1MiB, type=L\ntype=S\n', {1: 'ext2'})
    mbr = build(str(work / 'mbr.raw'), 4 * MiB,
                'label: dos\np1 : start=2048, size=2048, type=83\n'
                'p2 : type=5\np5 : size=1024, type=83\n',
                {1: 'ext2', 5: 'ext2'})
    disks = {}
    for name, path in (('gpt', gpt), ('mbr', mbr)):
        with open(path, 'rb') as f:
            disks[name] = f.read()
        assert read_or_refuse(disks[name], len(disks[name])) is not None
    return disks


@hypothesis.settings(deadline=None,
                     suppress_health_check=[
                         hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(
    which=st.sampled_from(['gpt', 'mbr']),
    edits=st.lists(st.tuples(st.integers(min_value=0, max_value=65535),
                             st.integers(min_value=0, max_value=255),
                             st.booleans()),
                   min_size=1, max_size=12),
    fix_crcs=st.booleans())
def test_mutated_real_headers(small_disks, which, edits, fix_crcs):
    data = bytearray(small_disks[which])
    for offset, value, at_end in edits:
        if at_end:
            offset = len(data) - 1 - offset
        data[offset] = value
    if fix_crcs and which == 'gpt':
        fix_gpt_crcs(data)
    read_or_refuse(bytes(data), len(data))


def fix_gpt_crcs(data):
    """Recompute both GPT CRCs over mutated bytes, when the fields allow."""
    last = len(data) // SECTOR - 1
    for lba in (1, last):
        base = lba * SECTOR
        size, = struct.unpack_from('<I', data, base + 12)
        entries, count, entry_size = struct.unpack_from('<QII', data,
                                                        base + 72)
        if count * entry_size <= 1 << 20 and \
                entries * SECTOR + count * entry_size <= len(data):
            array = bytes(data[entries * SECTOR:
                               entries * SECTOR + count * entry_size])
            struct.pack_into('<I', data, base + 88, zlib.crc32(array))
        if 92 <= size <= SECTOR:
            header = bytearray(data[base:base + size])
            header[16:20] = bytes(4)
            struct.pack_into('<I', data, base + 16, zlib.crc32(header))
