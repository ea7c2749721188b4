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

"""Reading files inside NTFS, FAT, ext and XFS volumes of a RAW image.

Volumes come from the fixture disks (made by mkntfs/wimlib, mkfs.vfat,
mkfs.ext4, mkfs.xfs) or are made here with mkfs.ext4 -d; what is read is
compared with sleuthkit, debugfs or the bytes that went in.
"""

import os
import shutil
import subprocess

import pytest

from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import volume
from tests.unit import test_inspect_guests as guests

SECTOR = 512


@pytest.fixture(scope='module')
def disks(tmp_path_factory):
    directory = tmp_path_factory.mktemp('guests')
    return lambda name: guests.unpack(name, directory)


def open_partition(path, start_sector, sectors, location='p'):
    image = volume.ImageFile(path)
    fs = filesystem.open_filesystem(
        image.slice(start_sector * SECTOR, sectors * SECTOR), location)
    return image, fs


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip('%s is not installed (independent reader)' % tool)


def test_ntfs_is_case_insensitive_and_matches_icat(disks, tmp_path):
    path = disks('win2008r2-xen')
    image, fs = open_partition(path, 6144, 10240)
    try:
        assert fs.kind == 'ntfs' and fs.case_insensitive
        data = fs.read('/WINDOWS/system32/CONFIG/software', 1 << 20)
        assert data[:4] == b'regf'
        assert fs.read('/Windows/System32/config/SOFTWARE', 1 << 20) == data
        assert fs.find('/Windows/System32/config', 'software') == 'SOFTWARE'
        assert fs.is_dir('/windows/inf')
        assert not fs.is_file('/windows/inf')
        assert fs.lookup('/Windows/nothing') is None
        assert fs.lookup('/Windows/../Windows') is None
        assert sorted(fs.listdir('/Windows/inf')) == [
            'oem1.inf', 'oem2.inf', 'oem3.inf', 'oem7.inf']
    finally:
        fs.close()
        image.close()
    extracted = guests._icat(path, 6144, 'Windows/System32/config/SOFTWARE',
                             tmp_path)
    with open(extracted, 'rb') as f:
        assert f.read() == data


def test_reads_are_bounded(disks):
    image, fs = open_partition(disks('win2008r2-xen'), 6144, 10240)
    try:
        size = fs.size('/Windows/System32/config/SYSTEM')
        assert size > 4096
        with pytest.raises(filesystem.FileTooLarge) as raised:
            fs.read('/Windows/System32/config/SYSTEM', 4096)
        assert raised.value.size == size
        with pytest.raises(filesystem.FileTooLarge):
            fs.open('/Windows/System32/config/SYSTEM', 4096)
        head = fs.read('/Windows/System32/config/SYSTEM', 0, length=8)
        assert head[:4] == b'regf' and len(head) == 8
        assert fs.size('/Windows') is None
        assert fs.read('/Windows', 1 << 20) is None
    finally:
        fs.close()
        image.close()


def test_fat_listing_matches_sleuthkit(disks):
    path = disks('rocky9-uefi')
    image, fs = open_partition(path, 2048, 4096)
    try:
        assert fs.kind == 'fat'
        assert fs.listdir('/') == ['EFI']
        assert fs.is_file('/efi/boot/bootx64.efi')
        ours = sorted('%s/%s' % (d, n) for d in ('EFI/BOOT', 'EFI/rocky')
                      for n in fs.listdir('/' + d))
    finally:
        fs.close()
        image.close()
    _need('fls')
    listing = subprocess.run(['fls', '-r', '-p', '-o', '2048', path],
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout
    theirs = sorted(line.split('\t')[1] for line in listing.splitlines()
                    if line.startswith('r/r') and
                    line.split('\t')[1].startswith('EFI/'))
    assert ours == theirs


def test_xfs_reads_what_mkfs_put_there(disks):
    image, fs = open_partition(disks('rocky9-uefi'), 6144, 32768)
    try:
        assert fs.kind == 'xfs'
        text = fs.read('/etc/os-release', 1 << 20).decode()
        assert 'VERSION_ID="9.3"' in text
        assert fs.listdir('/boot/loader/entries') == [
            '0123-5.14.0-362.8.1.el9_3.x86_64.conf']
    finally:
        fs.close()
        image.close()


def test_ext_follows_symlinks_like_the_guest_would(disks):
    path = disks('debian12')
    image, fs = open_partition(path, 2048, 12288)
    try:
        assert fs.kind == 'ext'
        via_link = fs.read('/etc/os-release', 1 << 20)
        assert via_link == fs.read('/usr/lib/os-release', 1 << 20)
        assert fs.read('/etc/../usr/lib/os-release', 1 << 20) == via_link
        assert fs.lookup('/etc/os-release/x') is None
        assert fs.lookup('/Etc/os-release') is None    # case-sensitive
        listed = sorted(fs.listdir('/etc'))
    finally:
        fs.close()
        image.close()
    _need('debugfs')
    target = '%s?offset=%d' % (path, 2048 * SECTOR)
    text = subprocess.run(['debugfs', '-R', 'cat /usr/lib/os-release',
                           target], check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout
    assert text == via_link
    # ls -p: /inode/mode/uid/gid/name/size/ per entry.
    lines = subprocess.run(['debugfs', '-R', 'ls -p /etc', target],
                           check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True).stdout
    names = sorted(line.split('/')[5] for line in lines.splitlines()
                   if line.startswith('/'))
    assert listed == [n for n in names if n not in ('.', '..')]


@pytest.fixture
def linked_ext(tmp_path):
    """An ext4 volume, made here, with awkward symbolic links."""
    if shutil.which('mkfs.ext4') is None:
        pytest.skip('mkfs.ext4 is not installed')
    tree = tmp_path / 'tree'
    (tree / 'etc').mkdir(parents=True)
    (tree / 'usr' / 'lib').mkdir(parents=True)
    (tree / 'usr' / 'lib' / 'os-release').write_text('ID=test\n')
    os.symlink('/usr/lib/os-release', tree / 'etc' / 'absolute')
    os.symlink('../usr/lib', tree / 'etc' / 'libdir')
    os.symlink('loop-b', tree / 'etc' / 'loop-a')
    os.symlink('loop-a', tree / 'etc' / 'loop-b')
    os.symlink('/nowhere/at/all', tree / 'etc' / 'dangling')
    image = tmp_path / 'ext.img'
    subprocess.run(['mkfs.ext4', '-q', '-F', '-d', str(tree), str(image),
                    '2M'], check=True)
    opened = volume.ImageFile(str(image))
    fs = filesystem.open_filesystem(opened.slice(0, opened.size), 'test')
    yield fs
    fs.close()
    opened.close()


def test_symlink_edge_cases(linked_ext):
    fs = linked_ext
    assert fs.read('/etc/absolute', 100) == b'ID=test\n'
    assert fs.read('/etc/libdir/os-release', 100) == b'ID=test\n'
    assert fs.listdir('/etc/libdir') == ['os-release']
    assert fs.lookup('/etc/loop-a') is None
    assert fs.lookup('/etc/dangling') is None


def test_unknown_volume_is_none(tmp_path):
    path = tmp_path / 'zeros'
    path.write_bytes(b'\0' * 65536)
    with volume.ImageFile(str(path)) as image:
        assert filesystem.open_filesystem(image.slice(0, image.size),
                                          'p') is None
