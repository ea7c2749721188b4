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

"""Windows guests whose SYSTEM hive lies or cannot be read, end to end.

The guest is win2016-xen (tools/fixtures/make_guests.py); its SYSTEM hive
is taken out with sleuthkit's icat, damaged by hivex (tests/hivekit.py)
and put back with ntfs-3g's ntfscp, or its data run is pointed past the
volume in its MFT record (which sleuthkit's istat then refuses). Nothing may
change on a disk the fixup refuses, and the import must say the guest
still needs fixing, boot it on IDE, exit 0 and print no traceback.
"""

import json
import lzma
import os
import re
import struct
import subprocess
import sys

import pytest

from glance_xen_import import fixup
from glance_xen_import.fixup import inplace
from glance_xen_import.formats import partitions
from glance_xen_import import inspect as guest_inspect
from glance_xen_import import policy
from tests import hivekit
from tests import ovakit
from tests.unit import test_fixup_disk

GUESTS = os.path.join(os.path.dirname(__file__), os.pardir, 'fixtures',
                      'guests')
SECTOR = 512
HIVE_PATH = '/Windows/System32/config/SYSTEM'
PACKAGE = test_fixup_disk.HVM_PACKAGE


def _guest(tmp_path):
    ovakit.require_tools('icat', 'ifind', 'istat', 'fsstat', 'ntfscp')
    path = tmp_path / 'win2016-xen.raw'
    with lzma.open(os.path.join(GUESTS, 'win2016-xen.raw.xz')) as src:
        path.write_bytes(src.read())
    with open(path, 'rb') as image:
        layout = partitions.read_layout(image, os.path.getsize(path))
    return str(path), layout, layout.partitions[0]


def _sleuth(tool, path, partition, *args):
    return subprocess.run([tool, '-o', str(partition.start // SECTOR), path]
                          + list(args), check=True,
                          capture_output=True).stdout


def _hive_inode(path, partition):
    return int(_sleuth('ifind', path, partition, '-n', HIVE_PATH))


def _replace_hive(tmp_path, path, partition, patches):
    """Damage the guest's own SYSTEM hive with hivex, copy it back in."""
    original = tmp_path / 'SYSTEM.original'
    original.write_bytes(_sleuth('icat', path, partition,
                                 str(_hive_inode(path, partition))))
    spec = {'keys': [[hivekit.STORAHCI_OVERRIDE,
                      {'0': ['binary', '0300000000000000']}]]}
    damaged = tmp_path / 'SYSTEM.damaged'
    damaged.write_bytes(hivekit.make_hive(tmp_path, spec, patches,
                                          base=str(original)))
    volume = tmp_path / 'partition.ntfs'
    with open(path, 'rb') as src:
        src.seek(partition.start)
        volume.write_bytes(src.read(partition.size))
    subprocess.run(['ntfscp', '-f', '-q', str(volume), str(damaged),
                    HIVE_PATH], check=True, capture_output=True)
    with open(path, 'r+b') as dst:
        dst.seek(partition.start)
        dst.write(volume.read_bytes())


def _run_past_the_volume(path, partition):
    """Point the SYSTEM file's first data run beyond the volume's end."""
    fsstat = _sleuth('fsstat', path, partition).decode()
    cluster = int(re.search(r'Cluster Size: (\d+)', fsstat).group(1))
    mft = int(re.search(r'First Cluster of MFT: (\d+)', fsstat).group(1))
    entry_size = int(re.search(r'Size of MFT Entries: (\d+)',
                               fsstat).group(1))
    clusters = int(re.search(r'Total Cluster Range: \d+ - (\d+)',
                             fsstat).group(1)) + 1
    inode = _hive_inode(path, partition)
    record_at = partition.start + mft * cluster + inode * entry_size
    with open(path, 'r+b') as disk:
        disk.seek(record_at)
        record = bytearray(disk.read(entry_size))
        assert record[:4] == b'FILE'
        # Attributes (type, length, non-resident flag at 8, mapping pairs
        # offset at 32), as the NTFS documentation of ntfs-3g lays out.
        attr = struct.unpack_from('<H', record, 20)[0]
        while struct.unpack_from('<I', record, attr)[0] != 0x80:
            attr += struct.unpack_from('<I', record, attr + 4)[0]
        assert record[attr + 8] == 1
        run = attr + struct.unpack_from('<H', record, attr + 32)[0]
        length_bytes, offset_bytes = record[run] & 0xF, record[run] >> 4
        at = run + 1 + length_bytes
        # Keep clear of the update sequence words at each sector's end.
        assert all(i % SECTOR < SECTOR - 2
                   for i in range(at, at + offset_bytes))
        record[at:at + offset_bytes] = (clusters + 100).to_bytes(
            offset_bytes, 'little', signed=True)
        disk.seek(record_at)
        disk.write(record)
    # sleuthkit now sees the run past the file system's end.
    istat = subprocess.run(['istat', '-o', str(partition.start // SECTOR),
                            path, str(inode)], capture_output=True,
                           text=True)
    assert istat.returncode == 1
    assert 'Run offset and length is larger than file system' in (
        istat.stderr)


def _digest(path):
    with open(path, 'rb') as f:
        return f.read()


def test_start_override_pointing_at_a_key_leaves_the_disk_alone(tmp_path):
    path, layout, partition = _guest(tmp_path)
    _replace_hive(tmp_path, path, partition, [
        {'op': 'data_offset', 'value': [hivekit.STORAHCI_OVERRIDE, '0'],
         'to': {'key': 'ControlSet001\\Services\\xenbus'}}])
    guest = guest_inspect.inspect_guest(path, layout, PACKAGE)
    assert guest.incomplete == []
    assert fixup.needs_windows_fixup(guest)
    before = _digest(path)

    result = fixup.apply_windows_fixup(path, layout, guest)

    assert result.skipped == 'hive-not-editable'
    assert result.applied == []
    assert _digest(path) == before
    # hivex still reads the hive on the disk whole.
    hive = tmp_path / 'SYSTEM.after'
    hive.write_bytes(_sleuth('icat', path, partition,
                             str(_hive_inode(path, partition))))
    tree = hivekit.hivex_tree(tmp_path, hive.read_bytes())
    assert ('controlset001', 'services', 'xenbus') in tree


def test_start_override_in_a_data_cell_is_fixed_on_disk(tmp_path):
    path, layout, partition = _guest(tmp_path)
    _replace_hive(tmp_path, path, partition, [])
    guest = guest_inspect.inspect_guest(path, layout, PACKAGE)
    before = tmp_path / 'SYSTEM.before'
    before.write_bytes(_sleuth('icat', path, partition,
                               str(_hive_inode(path, partition))))

    result = fixup.apply_windows_fixup(path, layout, guest)

    assert 'startoverride-cleared:storahci' in result.applied
    after = _sleuth('icat', path, partition,
                    str(_hive_inode(path, partition)))
    old = hivekit.hivex_tree(tmp_path, before.read_bytes())
    new = hivekit.hivex_tree(tmp_path, after)
    assert set(old) == set(new)
    assert new[('controlset001', 'services', 'storahci',
                'startoverride')] == {}
    assert not fixup.needs_windows_fixup(
        guest_inspect.inspect_guest(path, layout, PACKAGE))


def test_data_run_past_the_volume_fails_closed(tmp_path):
    path, layout, partition = _guest(tmp_path)
    _run_past_the_volume(path, partition)
    guest = guest_inspect.inspect_guest(path, layout, PACKAGE)
    assert guest.os_type == 'windows'
    assert 'SYSTEM hive unreadable' in guest.incomplete
    props = policy.decide(guest, layout, PACKAGE, None, None)
    assert props['xen_import_fixup_required'] == 'true'
    assert props['xen_import_fixup_reasons'].split(',')[0] == (
        'inspection-incomplete')
    assert 'SYSTEM hive unreadable' in props[
        'xen_import_inspection_errors'].split(',')
    assert (props['hw_disk_bus'], props['hw_machine_type']) == ('ide', 'pc')
    # The editor would not write through that run either.
    with pytest.raises(Exception,
                       match='has an extent outside its file system'):
        inplace.NtfsFile(path, partition.start, partition.size,
                         HIVE_PATH.replace('/', '\\'))


_DAMAGE = {
    'run-past-the-volume': None,
    'hbin-size-past-the-end': [{'op': 'hbin_size', 'bin': 0,
                                'size': 0x1000000}],
    'cell-size-past-the-end': [
        {'op': 'data_cell_size', 'value': [hivekit.STORAHCI_OVERRIDE, '0'],
         'size': -0x7FFFFFF8}],
}


@pytest.mark.parametrize('damage', sorted(_DAMAGE))
def test_cli_fails_closed_on_a_damaged_hive(tmp_path, damage):
    ovakit.require_tools('qemu-img')
    path, _layout, partition = _guest(tmp_path)
    if _DAMAGE[damage] is None:
        _run_past_the_volume(path, partition)
    else:
        _replace_hive(tmp_path, path, partition, _DAMAGE[damage])
    vhd = str(tmp_path / 'guest.vhd')
    ovakit.xen_vhd(path, vhd, creator='caml')
    ova = str(tmp_path / 'guest.ova')
    ovakit.make_ova(ova, [ovakit.OvaDisk(vhd)])
    dest = str(tmp_path / 'out.raw')

    proc = subprocess.run(
        [sys.executable, '-m', 'glance_xen_import.cmd.main', 'convert', ova,
         dest, '--json'], capture_output=True, text=True, cwd=hivekit.REPO)

    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    props = json.loads(proc.stdout)['properties']
    assert props['os_type'] == 'windows'
    assert props['xen_import_fixup_required'] == 'true'
    reasons = props['xen_import_fixup_reasons'].split(',')
    # Either inspection could not read the hive, or it could and the
    # editor refused it: never "nothing to fix".
    if 'inspection-incomplete' in reasons:
        assert 'SYSTEM hive unreadable' in props[
            'xen_import_inspection_errors']
    else:
        assert 'hive-not-editable' in reasons
        assert 'xen-pv-drivers' in reasons
    assert props['hw_disk_bus'] == 'ide'
    assert props['hw_machine_type'] == 'pc'
    assert 'xen_import_fixups_applied' not in props
    assert ovakit.first_difference(path, dest) is None
