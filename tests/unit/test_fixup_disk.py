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

"""The Windows fixup on whole disks, verified with tools nobody here wrote.

The guests come from tools/fixtures/make_guests.py (mkntfs, wimlib, hivex,
sfdisk). After the fixup, sleuthkit's icat pulls the SYSTEM hive out of the
RAW, hivexget reads it, ntfsfix -n checks the NTFS volume, and istat's
cluster list shows that no byte outside the hive's clusters changed.
"""

import lzma
import os
import re
import shutil
import subprocess

import pytest

from glance_xen_import import fixup
from glance_xen_import.formats import partitions
from glance_xen_import import inspect as guest_inspect
from glance_xen_import import report
from tests import ovakit

GUESTS = os.path.join(os.path.dirname(__file__), os.pardir, 'fixtures',
                      'guests')
SECTOR = 512
HIVE_PATH = '/Windows/System32/config/SYSTEM'
CLASSES = ('{4d36e97d-e325-11ce-bfc1-08002be10318}',     # System
           '{4d36e96a-e325-11ce-bfc1-08002be10318}',     # HDC
           '{4d36e967-e325-11ce-bfc1-08002be10318}')     # DiskDrive
HVM_PACKAGE = report.PackageInfo(name='vm', virtual_system_type='hvm-3.0',
                                 os_id=None, os_description=None,
                                 manifest='absent', signed=False)


def _guest(tmp_path, name):
    path = tmp_path / (name + '.raw')
    with lzma.open(os.path.join(GUESTS, name + '.raw.xz')) as src:
        path.write_bytes(src.read())
    with open(path, 'rb') as image:
        layout = partitions.read_layout(image, os.path.getsize(path))
    return str(path), layout


def _inspect(path, layout):
    return guest_inspect.inspect_guest(path, layout, HVM_PACKAGE)


def _windows_partition(layout, guest):
    number = int(guest.windows.location.split()[-1])
    return next(p for p in layout.partitions if p.number == number)


def _hive_inode(path, partition):
    out = subprocess.run(
        ['ifind', '-o', str(partition.start // SECTOR), '-n', HIVE_PATH,
         path], check=True, capture_output=True, text=True).stdout
    return out.strip()


def _hive_clusters(path, partition):
    """Byte ranges of the SYSTEM hive's clusters, as istat lists them."""
    offset = str(partition.start // SECTOR)
    fsstat = subprocess.run(['fsstat', '-o', offset, path], check=True,
                            capture_output=True, text=True).stdout
    cluster = int(re.search(r'Cluster Size: (\d+)', fsstat).group(1))
    istat = subprocess.run(['istat', '-o', offset, path,
                            _hive_inode(path, partition)], check=True,
                           capture_output=True, text=True).stdout
    runs = istat.split('Type: $DATA')[1].split('\n', 1)[1]
    numbers = [int(n) for n in re.findall(r'\b\d+\b', runs)]
    return [(partition.start + n * cluster,
             partition.start + (n + 1) * cluster) for n in numbers]


def _hivexget(tmp_path, path, partition, key, value=None, missing=False):
    """hivexget's output; with missing=True, None for an absent key."""
    hive = tmp_path / 'SYSTEM.extracted'
    with open(hive, 'wb') as out:
        subprocess.run(['icat', '-o', str(partition.start // SECTOR), path,
                        _hive_inode(path, partition)], check=True,
                       stdout=out)
    command = ['hivexget', str(hive), key] + ([value] if value else [])
    proc = subprocess.run(command, check=not missing, capture_output=True,
                          text=True)
    return None if proc.returncode else proc.stdout


def _filters(listing):
    """Entries of Upper/LowerFilters in hivexget's .reg-style listing."""
    found = []
    for line in listing.splitlines():
        if line.startswith(('"UpperFilters"=', '"LowerFilters"=')):
            raw = bytes(int(b, 16) for b in line.split(':', 1)[1].split(','))
            found += [s for s in raw.decode('utf-16-le').split('\x00') if s]
    return found


def _changed_offsets(before, after):
    with open(before, 'rb') as a, open(after, 'rb') as b:
        old, new = a.read(), b.read()
    assert len(old) == len(new)
    return [i for i in range(len(old)) if old[i] != new[i]]


def assert_only_hive_changed(original, path, partition, tmp_path):
    """Nothing but the hive's own clusters changed, and NTFS is consistent.

    The clusters come from sleuthkit (_hive_clusters); ntfsfix -n checks
    the volume.
    """
    clusters = _hive_clusters(path, partition)
    changed = _changed_offsets(original, path)
    assert changed
    assert all(any(lo <= i < hi for lo, hi in clusters) for i in changed)
    volume = tmp_path / 'partition.ntfs'
    with open(path, 'rb') as src, open(volume, 'wb') as out:
        src.seek(partition.start)
        out.write(src.read(partition.size))
    subprocess.run(['ntfsfix', '-n', str(volume)], check=True,
                   capture_output=True)


@pytest.mark.parametrize('name', ['win2008r2-xen', 'win2016-xen'])
def test_xen_guest_is_neutralised(tmp_path, name):
    ovakit.require_tools('ifind', 'icat', 'istat', 'fsstat', 'hivexget',
                         'ntfsfix')
    path, layout = _guest(tmp_path, name)
    original = str(tmp_path / 'original.raw')
    shutil.copyfile(path, original)
    guest = _inspect(path, layout)
    assert fixup.needs_windows_fixup(guest)
    assert guest.windows.enabled_xen_services

    result = fixup.apply_windows_fixup(path, layout, guest)

    assert result.skipped is None
    assert 'filter-removed:xenfilt' in result.applied
    assert 'forceunplug-cleared' in result.applied
    for service in guest.windows.enabled_xen_services:
        assert 'disabled:%s' % service in result.applied
    partition = _windows_partition(layout, guest)
    control_set = guest.windows.control_set
    for service in guest.windows.enabled_xen_services:
        start = _hivexget(tmp_path, path, partition,
                          '%s\\Services\\%s' % (control_set, service),
                          'Start')
        assert start.strip() == '4', service
    for class_guid in CLASSES:
        listed = _hivexget(tmp_path, path, partition,
                           control_set + '\\Control\\Class\\' +
                           class_guid, missing=True) or ''
        assert 'XENFILT' not in _filters(listed), class_guid
        assert 'scsifilt' not in _filters(listed), class_guid
    if guest.windows.major_version >= 10:
        # NT 6.2+: the storage drivers' StartOverride is emptied.
        for service in ('vioscsi', 'storahci'):
            override = _hivexget(tmp_path, path, partition,
                                 '%s\\Services\\%s\\StartOverride'
                                 % (control_set, service))
            assert override.strip() == '', service
    unplug = _hivexget(tmp_path, path, partition,
                       control_set + '\\Services\\XEN\\ForceUnplug')
    assert re.findall(r'dword:([0-9a-f]+)', unplug)
    assert set(re.findall(r'dword:([0-9a-f]+)', unplug)) == {'00000000'}

    assert_only_hive_changed(original, path, partition, tmp_path)

    # Inspection of the fixed disk finds nothing left to fix.
    again = _inspect(path, layout)
    assert again.windows.enabled_xen_services == []
    assert again.windows.xen_filters == []
    assert not fixup.needs_windows_fixup(again)


# win2019-uefi has a demoted vioscsi, which the fixup does clear
# (tests/unit/test_pipeline_fixup.py).
@pytest.mark.parametrize('name', ['win7-vioscsi'])
def test_guest_without_xen_drivers_stays_byte_identical(tmp_path, name):
    path, layout = _guest(tmp_path, name)
    original = str(tmp_path / 'original.raw')
    shutil.copyfile(path, original)
    guest = _inspect(path, layout)
    assert not fixup.needs_windows_fixup(guest)
    result = fixup.apply_windows_fixup(path, layout, guest)
    assert result.applied == [] and result.skipped is None
    assert _changed_offsets(original, path) == []


@pytest.mark.parametrize('flag,reason', [
    ('hibernated', 'hibernated'),
    ('dirty_hives', 'dirty-hive'),
])
def test_unsafe_guest_is_left_alone(tmp_path, flag, reason):
    path, layout = _guest(tmp_path, 'win2008r2-xen')
    original = str(tmp_path / 'original.raw')
    shutil.copyfile(path, original)
    guest = _inspect(path, layout)
    setattr(guest.windows, flag, True if flag == 'hibernated'
            else ['SYSTEM'])
    result = fixup.apply_windows_fixup(path, layout, guest)
    assert result.skipped == reason
    assert result.applied == []
    assert _changed_offsets(original, path) == []
