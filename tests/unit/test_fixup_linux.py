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

"""The Linux fixup as the CLI runs it, on disks made by mkfs and sfdisk.

Results are read back with e2fsprogs (debugfs, e2fsck) and xfsprogs
(xfs_db, xfs_repair); the expected file contents are written out by hand
in tests/linuxkit.py.
"""

import errno
import os
import subprocess

import pytest

from glance_xen_import.fixup import fscheck
from glance_xen_import import pipeline
from tests import linuxkit
from tests import ovakit

pytestmark = pytest.mark.skipif(
    bool(ovakit.missing_tools('qemu-img', 'mkfs.ext4', 'debugfs', 'e2fsck',
                              'sfdisk')),
    reason='needs qemu-img, e2fsprogs and sfdisk')


_convert = ovakit.cli_convert


def _guest(tmp_path, files=None, fstype='ext4', image=None):
    raw = linuxkit.disk(tmp_path, files or linuxkit.XEN_FILES, fstype,
                        image=image)
    return raw, linuxkit.ova(tmp_path, raw)


def _changed_outside(raw, out, allowed):
    return [o for o in linuxkit.differing_ranges(raw, out)
            if not any(lo <= o < hi for lo, hi in allowed)]


@pytest.mark.parametrize('fstype', ['ext4', 'ext3', 'ext2'])
def test_ext_guest_fixed_for_scsi(tmp_path, fstype):
    raw, ova = _guest(tmp_path, fstype=fstype)
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    props = report['properties']
    assert props['hw_disk_bus'] == 'scsi'
    assert 'xvd-device-names' not in props.get('xen_import_fixup_reasons',
                                               '')
    assert 'xen_import_findings' not in props
    assert set(props['xen_import_fixups_applied'].split(',')) == {
        'device-names:sd', 'console:tty0', 'mac-binding'}
    allowed = []
    for path, expected in linuxkit.FIXED_FOR_SCSI.items():
        assert linuxkit.debugfs_cat(out, path).decode() == expected, path
        allowed += linuxkit.ext_file_bytes(raw, path)
    assert linuxkit.e2fsck_clean(out)
    # Only the data blocks of the edited files changed.
    assert linuxkit.differing_ranges(raw, out)
    assert _changed_outside(raw, out, allowed) == []


def test_virtio_bus_gets_vd_names(tmp_path):
    raw, ova = _guest(tmp_path)
    out = str(tmp_path / 'out.raw')
    props = _convert(ova, out, '--default-disk-bus', 'virtio')['properties']
    assert props['hw_disk_bus'] == 'virtio'
    assert 'device-names:vd' in props['xen_import_fixups_applied']
    assert linuxkit.debugfs_cat(out, '/etc/fstab').decode() == (
        '# <file system> <mount point> <type> <options>\n'
        '/dev/vda1 / ext4 errors=remount-ro 0 1 \n'
        '/dev/vdb1\t/srv\text4\tdefaults,nofail\t0\t2 \n')


def test_report_mode_is_byte_identical(tmp_path):
    raw, ova = _guest(tmp_path)
    out = str(tmp_path / 'out.raw')
    props = _convert(ova, out, '--linux-fixup', 'report')['properties']
    assert linuxkit.differing_ranges(raw, out) == []
    assert props['xen_import_fixup_required'] == 'true'
    assert 'xvd-device-names' in props['xen_import_fixup_reasons']
    # hvc0 is the command line's last console: a reason, not a finding.
    assert 'xen-console' in props['xen_import_fixup_reasons']
    assert props['xen_import_findings'] == 'mac-bound-network'
    assert 'xen_import_fixups_applied' not in props


@pytest.mark.parametrize('cmdline, reason', [
    ('console=hvc0', True), ('console=hvc0 console=ttyS0', False)])
def test_console_reason_or_finding(tmp_path, cmdline, reason):
    files = dict(linuxkit.XEN_FILES)
    files['/etc/fstab'] = 'UUID=5e6f / ext4 defaults 0 1\n'
    files['/boot/grub/grub.cfg'] = (
        'menuentry "Debian" {\n\tlinux /boot/vmlinuz root=UUID=5e6f ro '
        '%s\n}\n' % cmdline)
    files['/etc/default/grub'] = 'GRUB_CMDLINE_LINUX=""\n'
    del files['/etc/udev/rules.d/70-persistent-net.rules']
    del files['/etc/sysconfig/network-scripts/ifcfg-eth0']
    raw, ova = _guest(tmp_path, files)
    props = _convert(ova, str(tmp_path / 'r.raw'),
                     '--linux-fixup', 'report')['properties']
    assert ('xen-console' in props.get('xen_import_findings', '')
            ) is not reason
    assert ('xen-console' in props.get('xen_import_fixup_reasons', '')
            ) is reason
    # The fixup makes it tty0 either way; nothing Xen is left to report.
    fixed = _convert(ova, str(tmp_path / 'f.raw'))['properties']
    assert 'console:tty0' in fixed['xen_import_fixups_applied']
    assert 'xen-console' not in fixed.get('xen_import_findings', '')
    assert 'xen-console' not in fixed.get('xen_import_fixup_reasons', '')


def test_clean_guest_comes_out_identical(tmp_path):
    files = {'/etc/os-release': 'ID=debian\nVERSION_ID="12"\n',
             '/etc/fstab': 'UUID=5e6f / ext4 defaults 0 1\n',
             '/boot/grub/grub.cfg': 'menuentry "D" {\n\tlinux /boot/vmlinuz'
                                    ' root=UUID=5e6f ro console=ttyS0\n}\n'}
    raw, ova = _guest(tmp_path, files)
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    assert report['linux_fixup'] is None
    assert linuxkit.differing_ranges(raw, out) == []
    assert 'xen_import_findings' not in report['properties']


# At 60 MiB mkfs.xfs makes two allocation groups of 7680 blocks, not a
# power of two, and puts /etc (so /etc/fstab) in the second: its file
# system block numbers are then not linear offsets.
@pytest.mark.parametrize('size, fstab_ag', [(24 * linuxkit.MiB, None),
                                            (60 * linuxkit.MiB, 1)])
def test_xfs_guest_fixed(tmp_path, size, fstab_ag):
    if ovakit.missing_tools('mkfs.xfs', 'xfs_db', 'xfs_repair'):
        pytest.skip('needs xfsprogs')
    files = dict(linuxkit.XEN_FILES)
    files['/etc/fstab'] = '/dev/xvda1 / xfs defaults 0 0\n'
    image = linuxkit.volume(str(tmp_path), files, 'xfs', size)
    if fstab_ag is not None:
        assert linuxkit.xfs_file_ag(image, '/etc/fstab') == fstab_ag
    raw, ova = _guest(tmp_path, files, fstype='xfs', image=image)
    out = str(tmp_path / 'out.raw')
    props = _convert(ova, out)['properties']
    assert 'device-names:sd' in props['xen_import_fixups_applied']
    part = linuxkit.extract_partition(out, str(tmp_path / 'p.xfs'))
    assert subprocess.run(['xfs_repair', '-n', '-o', 'force_geometry', '-f',
                           part],
                          capture_output=True).returncode == 0
    # Read the edited file's blocks where xfs_db says they are.
    at, block_size = linuxkit.xfs_file_start(part, '/etc/fstab')
    with open(part, 'rb') as f:
        f.seek(at)
        head = f.read(len('/dev/sda1 / xfs defaults 0 0 \n'))
    assert head == b'/dev/sda1 / xfs defaults 0 0 \n'
    start = at + linuxkit.PARTITION_START * linuxkit.SECTOR
    assert all(start <= o < start + block_size or _edited_block(out, o)
               for o in linuxkit.differing_ranges(raw, out))


def _edited_block(out, offset):
    # The other edited files: every changed byte must sit in a 4 KiB block
    # that now holds text the fixup writes.
    with open(out, 'rb') as f:
        f.seek(offset & ~4095)
        block = f.read(4096)
    return any(text in block for text in (b'/dev/sda1', b'console=tty0',
                                          b'#WADDR', b'#UBSYSTEM'))


def test_fstab_symlink_is_not_followed(tmp_path):
    files = dict(linuxkit.XEN_FILES)
    files['/etc/fstab'] = ('link', '/etc/shadow-copy')
    files['/etc/shadow-copy'] = '/dev/xvda1 root:secret\n'
    raw, ova = _guest(tmp_path, files)
    out = str(tmp_path / 'out.raw')
    props = _convert(ova, out)['properties']
    assert linuxkit.debugfs_cat(out, '/etc/shadow-copy') == (
        b'/dev/xvda1 root:secret\n')
    # Still named through the link: the guest is not reported as fixed.
    assert 'xvd-device-names' in props['xen_import_fixup_reasons']
    assert props['xen_import_fixup_required'] == 'true'


def test_huge_fstab_is_left_alone_with_a_reason(tmp_path):
    files = dict(linuxkit.XEN_FILES)
    files['/etc/fstab'] = ('/dev/xvda1 / ext4 defaults 0 1\n'
                           + '#' * 80 + '\n') * 14000
    raw, ova = _guest(tmp_path, files)
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    props = report['properties']
    assert linuxkit.debugfs_cat(out, '/etc/fstab') == (
        files['/etc/fstab'].encode())
    assert any('/etc/fstab' in n and 'more than the 1048576 handled' in n
               for n in report['linux_fixup']['not_edited'])
    assert 'linux-config-not-editable' in props['xen_import_findings']
    assert props['xen_import_fixup_required'] == 'true'


def _damaged(tmp_path, request):
    raw, _ = _guest(tmp_path)
    linuxkit.debugfs(raw, request, write=True)
    return raw, linuxkit.ova(tmp_path, raw)


def test_shared_blocks_refused_by_e2fsck(tmp_path):
    raw, _ = _guest(tmp_path)
    block = linuxkit.debugfs(raw, 'blocks /etc/fstab').split()[0]
    # Point another file's extent at fstab's block: a cross-linked block.
    ino = linuxkit.debugfs(raw, 'stat /etc/os-release')
    assert 'EXTENTS' in ino
    # i_block[3..5] is the first extent; [5] its start block (low half).
    linuxkit.debugfs(raw, 'sif /etc/os-release block[5] %s' % block,
                     write=True)
    ova = linuxkit.ova(tmp_path, raw)
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    assert linuxkit.differing_ranges(raw, out) == []
    assert any('e2fsck -fn finds the file system unclean before' in n
               for n in report['linux_fixup']['not_edited'])
    assert report['properties']['xen_import_fixup_required'] == 'true'


def test_journal_needing_recovery_refused(tmp_path):
    raw, ova = _damaged(tmp_path, 'feature needs_recovery')
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    assert linuxkit.differing_ranges(raw, out) == []
    assert report['linux_fixup']['files'] == []
    assert any('the ext journal needs recovery' in n
               for n in report['linux_fixup']['not_edited'])


def test_sparse_file_refused(tmp_path):
    image = linuxkit.volume(tmp_path, linuxkit.XEN_FILES)
    # Give fstab a hole: a block past its end, the size set beyond it.
    subprocess.run(['debugfs', '-w', '-R', 'sif /etc/fstab size 20000',
                    image], check=True, capture_output=True)
    raw, ova = _guest(tmp_path, image=image)
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    assert linuxkit.debugfs_cat(out, '/etc/fstab')[:10] == b'# <file sy'
    assert any(n.startswith('partition 1:/etc/fstab:')
               for n in report['linux_fixup']['not_edited'])


def test_extent_past_the_file_system_refused(tmp_path):
    raw, _ = _guest(tmp_path)
    # fstab's first extent now starts far beyond the end of the volume.
    linuxkit.debugfs(raw, 'sif /etc/fstab block[5] 4000000', write=True)
    ova = linuxkit.ova(tmp_path, raw)
    out = str(tmp_path / 'out.raw')
    report = _convert(ova, out)
    assert report['linux_fixup'] is None or not any(
        f.startswith('partition 1:/etc/fstab:')
        for f in report['linux_fixup']['files'])
    # Nothing was written through the broken map, or anywhere else.
    assert linuxkit.differing_ranges(raw, out) == []
    assert report['properties']['xen_import_fixup_required'] == 'true'


def test_no_room_for_the_xfs_scratch_copy_is_a_reason(tmp_path, monkeypatch):
    if ovakit.missing_tools('mkfs.xfs', 'xfs_db', 'xfs_repair'):
        pytest.skip('needs xfsprogs')

    def full(*args):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(fscheck, '_sparse_copy', full)
    files = dict(linuxkit.XEN_FILES)
    files['/etc/fstab'] = '/dev/xvda1 / xfs defaults 0 0\n'
    raw, ova = _guest(tmp_path, files, fstype='xfs')
    out = str(tmp_path / 'out.raw')
    report = pipeline.convert(ova, out)
    assert linuxkit.differing_ranges(raw, out) == []
    assert report.linux_fixup.files == []
    assert any('No space left on device' in n
               for n in report.linux_fixup.not_edited)
    assert report.properties['xen_import_fixup_required'] == 'true'
    assert not [n for n in os.listdir(tmp_path)
                if n.startswith('.xen-import-xfs-')]
