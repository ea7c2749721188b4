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

"""The Linux fixup on a root file system inside an LVM logical volume.

The volume group is LVM's own (tests/lvmkit.py), the file system is
mkfs's with the guest's files; where the volume lies is what LVM's lvs
reports, and the results are read there with debugfs/e2fsck and
xfs_db/xfs_repair. The expected file contents are written out by hand.
"""

import lzma
import os
import re
import shutil
import subprocess
import uuid

import pytest

from tests import linuxkit
from tests import lvmkit
from tests import ovakit

pytestmark = pytest.mark.skipif(
    bool(ovakit.missing_tools('qemu-img', 'mkfs.ext4', 'debugfs', 'e2fsck',
                              'sfdisk')),
    reason='needs qemu-img, e2fsprogs and sfdisk')

MiB = 1 << 20
ROOT_MIB = 24


def _files(group):
    files = dict(linuxkit.XEN_FILES)
    root = '/dev/mapper/%s-root' % group
    files['/etc/fstab'] = (
        '%s / ext4 errors=remount-ro 0 1\n'
        '/dev/xvda1 /boot ext2 defaults 0 2\n' % root)
    files['/etc/default/grub'] = ('GRUB_CMDLINE_LINUX="rd.lvm.lv=%s/root '
                                  'console=hvc0"\n' % group)
    files['/boot/grub/grub.cfg'] = (
        'menuentry "Debian GNU/Linux" {\n'
        '\tlinux /boot/vmlinuz-%s root=%s ro console=hvc0\n}\n'
        % (linuxkit.KERNEL, root))
    return files


def _fixed(group):
    # xvda1 -> sda1 is a byte shorter; the fixup pads the line with a space.
    root = '/dev/mapper/%s-root' % group
    return {
        '/etc/fstab': '%s / ext4 errors=remount-ro 0 1\n'
                      '/dev/sda1 /boot ext2 defaults 0 2 \n' % root,
        '/etc/default/grub': 'GRUB_CMDLINE_LINUX="rd.lvm.lv=%s/root '
                             'console=tty0"\n' % group,
        '/boot/grub/grub.cfg':
            'menuentry "Debian GNU/Linux" {\n'
            '\tlinux /boot/vmlinuz-%s root=%s ro console=tty0\n}\n'
            % (linuxkit.KERNEL, root),
    }


def _guest(tmp_path, fstype, segments):
    group = 'gxi' + uuid.uuid4().hex[:12]
    image = linuxkit.volume(tmp_path, _files(group), fstype,
                            size=ROOT_MIB * MiB)
    extents = -(-os.path.getsize(image) // MiB)
    disk = lvmkit.make_disk(tmp_path, [extents + 8],
                            lvmkit.linear('root', *segments(extents)),
                            group=group)
    return disk, image


def _debugfs(raw, offset, request):
    return subprocess.run(['debugfs', '-R', request,
                           '%s?offset=%d' % (raw, offset)], check=True,
                          capture_output=True, text=True).stdout


def test_ext4_root_in_a_linear_volume_fixed(tmp_path):
    # Two adjacent segments, as lvextend leaves them: still one run.
    disk, image = _guest(tmp_path, 'ext4', lambda n: [(0, 2, 4),
                                                      (0, 6, n - 4)])
    disk.place('root', image)
    ova = linuxkit.ova(tmp_path, disk.path)
    out = str(tmp_path / 'out.raw')
    report = ovakit.cli_convert(ova, out)
    props = report['properties']
    assert props['hw_disk_bus'] == 'scsi'
    assert set(props['xen_import_fixups_applied'].split(',')) == {
        'device-names:sd', 'console:tty0', 'mac-binding'}
    assert 'linux-config-not-editable' not in props.get(
        'xen_import_findings', '')
    assert report['linux_fixup']['not_edited'] == []
    offset = disk.lv_offset('root')
    for path, expected in _fixed(disk.group).items():
        assert _debugfs(out, offset, 'cat "%s"' % path) == expected, path
    assert subprocess.run(['e2fsck', '-fn', '%s?offset=%d' % (out, offset)],
                          capture_output=True).returncode == 0
    # Only the edited files' data blocks changed, all inside the volume.
    block = int(re.search(r'Block size:\s+(\d+)',
                          _debugfs(out, offset, 'stats -h')).group(1))
    allowed = []
    for path in list(_fixed(disk.group)) + [
            '/etc/udev/rules.d/70-persistent-net.rules',
            '/etc/sysconfig/network-scripts/ifcfg-eth0']:
        for number in _debugfs(out, offset, 'blocks "%s"' % path).split():
            start = offset + int(number) * block
            allowed.append((start, start + block))
    changed = linuxkit.differing_ranges(disk.path, out)
    assert changed
    assert [o for o in changed
            if not any(lo <= o < hi for lo, hi in allowed)] == []


def test_xfs_root_in_a_linear_volume_fixed(tmp_path):
    if ovakit.missing_tools('mkfs.xfs', 'xfs_db', 'xfs_repair'):
        pytest.skip('needs xfsprogs')
    disk, image = _guest(tmp_path, 'xfs', lambda n: [(0, 3, n)])
    disk.place('root', image)
    out = str(tmp_path / 'out.raw')
    props = ovakit.cli_convert(linuxkit.ova(tmp_path, disk.path),
                               out)['properties']
    assert 'device-names:sd' in props['xen_import_fixups_applied']
    (start, length), = disk.lv_runs('root')
    part = str(tmp_path / 'lv.xfs')
    with open(out, 'rb') as src, open(part, 'wb') as dst:
        src.seek(start)
        dst.write(src.read(length))
    assert subprocess.run(['xfs_repair', '-n', '-o', 'force_geometry', '-f',
                           part], capture_output=True).returncode == 0
    at, _ = linuxkit.xfs_file_start(part, '/etc/fstab')
    expected = _fixed(disk.group)['/etc/fstab'].encode()
    with open(part, 'rb') as f:
        f.seek(at)
        assert f.read(len(expected)) == expected


def test_volume_in_two_runs_left_alone_with_the_reason(tmp_path):
    # The second segment before the first on the disk: lvs sees one
    # volume, but no single byte range of the disk holds it.
    disk, image = _guest(tmp_path, 'ext4', lambda n: [(0, 4, n - 4),
                                                      (0, 0, 4)])
    runs = disk.lv_runs('root')
    assert len(runs) == 2
    with open(image, 'rb') as src, open(disk.path, 'r+b') as dst:
        for start, length in runs:
            dst.seek(start)
            dst.write(src.read(length))
    out = str(tmp_path / 'out.raw')
    report = ovakit.cli_convert(linuxkit.ova(tmp_path, disk.path), out)
    assert report['linux_fixup']['not_edited'] == [
        'partition 1/%s/root: not edited in place: logical volume root lies '
        'in 2 separate runs of extents' % disk.group]
    # pyvslvm cannot open it; read through LVM's runs, the guest is found.
    assert report['guest']['product_name'] == 'Debian GNU/Linux 12 (bookworm)'
    props = report['properties']
    assert 'linux-config-not-editable' in props['xen_import_findings']
    assert 'xvd-device-names' in props['xen_import_fixup_reasons']
    assert linuxkit.differing_ranges(disk.path, out) == []


CENTOS6_FIXED_FSTAB = (
    '# /etc/fstab\n'
    '# /dev/xvdc1 /old ext3 defaults 0 0\n'
    '/dev/mapper/VolGroup-lv_root / ext4 defaults 1 1\n'
    '/dev/sda1 /boot ext2 defaults 1 2 \n'
    '/dev/sdb1 swap swap defaults 0 0 \n'
    'proc /proc proc defaults 0 0\n')


def test_centos6_fstab_on_the_lvm_root_fixed(tmp_path):
    # The committed fixture (tools/fixtures/make_guests.py): /boot on
    # partition 1, the root in VolGroup/lv_root on partition 2, fstab
    # naming xvda1 and xvdb1.
    raw = str(tmp_path / 'centos6.raw')
    with lzma.open(os.path.join(ovakit.FIXTURES, 'guests',
                                'centos6-xen.raw.xz')) as src, \
            open(raw, 'wb') as dst:
        shutil.copyfileobj(src, dst)
    disk = lvmkit.read_disk(raw, 'VolGroup', [(8192 * 512, 12288 * 512)])
    out = str(tmp_path / 'out.raw')
    report = ovakit.cli_convert(linuxkit.ova(tmp_path, raw), out)
    assert report['linux_fixup']['not_edited'] == []
    assert 'device-names:sd' in report['properties'][
        'xen_import_fixups_applied']
    offset = disk.lv_offset('lv_root')
    assert _debugfs(out, offset, 'cat /etc/fstab') == CENTOS6_FIXED_FSTAB
    assert subprocess.run(['e2fsck', '-fn', '%s?offset=%d' % (out, offset)],
                          capture_output=True).returncode == 0
