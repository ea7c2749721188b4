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

"""The offline initramfs repair, on guests made by real tools.

Modules are gcc-built ELF objects indexed by the host's depmod
(tests/modkit.py); images are GNU cpio + gzip/xz/zstd; disks mkfs.ext4 -d
and sfdisk. The repaired image is read back by initramfs-tools'
unmkinitramfs and lsinitramfs, its indexes by modprobe, the disk by
debugfs and e2fsck: none of them is the code under test.
"""

import os
import subprocess

import pytest

from tests import linuxkit
from tests import modkit
from tests import ovakit

pytestmark = pytest.mark.skipif(
    bool(modkit.missing_tools() or ovakit.missing_tools(
        'qemu-img', 'mkfs.ext4', 'debugfs', 'e2fsck', 'sfdisk')),
    reason='needs gcc, kmod, cpio, compressors, initramfs-tools-core, '
           'qemu-img, e2fsprogs and sfdisk')

KVER = modkit.KVER
INITRD = '/boot/initrd.img-' + KVER
MODDIR = '/usr/lib/modules/' + KVER
CONFIG = ('CONFIG_RD_GZIP=y\nCONFIG_RD_BZIP2=y\nCONFIG_RD_LZMA=y\n'
          'CONFIG_RD_XZ=y\nCONFIG_RD_LZO=y\nCONFIG_RD_LZ4=y\n'
          'CONFIG_RD_ZSTD=y\n')
GRUB_CFG = ('set default="0"\n'
            'menuentry "Debian GNU/Linux" {\n'
            '\tlinux /boot/vmlinuz-%s root=/dev/sda1 ro console=ttyS0\n'
            '\tinitrd /boot/initrd.img-%s\n'
            '}\n' % (KVER, KVER))
# What the bus needs beyond xen-blkfront, from modkit's modules.dep.
ADDED = {'virtio_scsi', 'virtio_pci', 'sd_mod', 'scsi_mod', 'scsi_common',
         'virtio', 'virtio_ring', 'virtio_pci_legacy_dev',
         'virtio_pci_modern_dev'}


def _tree_files(top, prefix):
    files = {}
    for directory, _, names in os.walk(top):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, 'rb') as f:
                files[prefix + os.path.relpath(path, top)] = f.read()
    return files


def make_initrd(work, generator='initramfs-tools', early=False,
                compressor=('gzip', '-n', '-c'), filler=2 << 20):
    work = str(work)
    tree = modkit.initramfs_tree(os.path.join(work, 'initrd'), generator,
                                 ['xen_blkfront'], filler=filler)
    body = subprocess.run(compressor, input=modkit.cpio_of(tree),
                          check=True, stdout=subprocess.PIPE).stdout
    prefix = modkit.microcode(work) if early else b''
    return prefix + body, len(prefix)


def guest_files(work, initrd, config=CONFIG):
    base = os.path.join(str(work), 'guestroot', 'usr')
    modkit.module_tree(os.path.join(str(work), 'guestbuild'), base,
                       list(modkit.MODULES))
    files = _tree_files(os.path.join(base, 'lib', 'modules', KVER),
                        MODDIR + '/')
    files.update({
        '/lib': ('link', 'usr/lib'),
        '/etc/os-release': 'ID=debian\nVERSION_ID="12"\n',
        '/etc/fstab': '/dev/sda1 / ext4 errors=remount-ro 0 1\n',
        '/boot/grub/grub.cfg': GRUB_CFG,
        '/boot/vmlinuz-' + KVER: b'\0' * 64,
        INITRD: initrd,
    })
    if config is not None:
        files['/boot/config-' + KVER] = config
    return files


def convert(tmp_path, files, *options):
    raw = linuxkit.disk(tmp_path, files, size=48 * linuxkit.MiB)
    ova = linuxkit.ova(tmp_path, raw)
    out = str(tmp_path / 'out.raw')
    return raw, out, ovakit.cli_convert(ova, out, *options)


def unpacked(tmp_path, out, report):
    image = tmp_path / 'repaired.img'
    image.write_bytes(linuxkit.debugfs_cat(out, INITRD))
    repair = report['linux_fixup']['initramfs']
    return image, modkit.unpack(str(image), str(tmp_path / 'unpacked'),
                                repair['kept_prefix_bytes'],
                                repair['tool_readable'])


def reasons(report):
    # linuxkit's disks carry no boot code: no-boot-code is always there.
    return report['properties']['xen_import_fixup_reasons'].split(',')


def not_edited(report):
    return report['linux_fixup']['not_edited']


def assert_untouched(raw, out, report):
    props = report['properties']
    assert props['xen_import_fixup_required'] == 'true'
    assert 'initramfs-lacks-kvm-storage' in props['xen_import_fixup_reasons']
    assert 'xen_import_fixups_applied' not in props
    assert linuxkit.differing_ranges(raw, out) == []


@pytest.mark.parametrize('early', [False, True])
def test_initramfs_tools_image_gets_the_bus_drivers(tmp_path, early):
    initrd, prefix = make_initrd(tmp_path, early=early)
    files = guest_files(tmp_path, initrd)
    raw, out, report = convert(tmp_path, files)
    props = report['properties']
    assert props['hw_disk_bus'] == 'scsi'
    assert reasons(report) == ['no-boot-code']
    assert props['xen_import_fixups_applied'] == 'initramfs-drivers'
    assert not_edited(report) == []

    image, main = unpacked(tmp_path, out, report)
    data = image.read_bytes()
    assert len(data) == len(initrd)
    assert data[:prefix] == initrd[:prefix]      # microcode kept as it was
    if early:
        assert os.path.exists(os.path.join(
            str(tmp_path / 'unpacked'), 'early', 'kernel', 'x86',
            'microcode', 'GenuineIntel.bin'))
    # modprobe reads the new binary indexes: the bus's driver and its
    # dependencies, by name and by the device's modalias.
    depends = modkit.show_depends(main, 'virtio_scsi')
    assert 'kernel/drivers/scsi/virtio_scsi.ko.zst' in depends
    assert 'kernel/drivers/scsi/scsi_mod.ko' in depends
    assert modkit.resolve_alias(main, 'virtio:d00000008v00001AF4') == [
        'virtio_scsi']
    assert modkit.resolve_alias(
        main, 'pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00') == [
        'virtio_pci']
    assert modkit.resolve_alias(main, 'xen:vbd') == ['xen_blkfront']
    # The modules are the guest's own files, byte for byte.
    for name in ADDED:
        path = modkit.MODULES[name][0]
        with open(os.path.join(main, 'usr/lib/modules', KVER, path),
                  'rb') as f:
            assert f.read() == files['%s/%s' % (MODDIR, path)], name
    with open(os.path.join(main, 'conf', 'modules')) as f:
        assert f.read() == 'xen-blkfront\nvirtio_scsi\nvirtio_pci\nsd_mod\n'
    with open(os.path.join(main, 'usr', 'filler.txt'), 'rb') as f:
        assert len(f.read()) == 2 << 20
    listed = [n for n in modkit.run('lsinitramfs', str(image)).decode(
    ).split() if n != '.']
    assert len(listed) == len(set(listed))       # nothing listed twice
    assert os.path.islink(os.path.join(main, 'lib'))

    repair = report['linux_fixup']['initramfs']
    assert repair['tool_readable'] is True
    assert set(repair['added_modules']) == ADDED
    # xz when its padding rule allows the slack, else bzip2.
    assert repair['compression'].startswith('none+gzip -> ' if early else
                                            'gzip -> ')
    assert repair['kept_prefix_bytes'] == prefix
    assert linuxkit.e2fsck_clean(out)
    allowed = linuxkit.ext_file_bytes(raw, INITRD)
    assert [o for o in linuxkit.differing_ranges(raw, out)
            if not any(lo <= o < hi for lo, hi in allowed)] == []


def test_dracut_image_names_the_drivers_in_cmdline_d(tmp_path):
    initrd, _ = make_initrd(tmp_path, generator='dracut',
                            compressor=('zstd', '-q', '-1', '-c'))
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd))
    assert reasons(report) == ['no-boot-code']
    _, main = unpacked(tmp_path, out, report)
    with open(os.path.join(main, 'etc', 'cmdline.d',
                           '90-glance-xen-import.conf')) as f:
        assert f.read() == 'rd.driver.pre=virtio_scsi,virtio_pci,sd_mod\n'
    assert modkit.resolve_alias(main, 'virtio:d00000008v00001AF4') == [
        'virtio_scsi']


def test_rhel_bls_entry_with_tuned_initrd_is_repaired(tmp_path):
    # RHEL 8/9 entries load "initrd /initramfs-<v>.img $tuned_initrd";
    # with tuned_initrd unset in grubenv GRUB loads the one file.
    initrd, _ = make_initrd(tmp_path, generator='dracut')
    files = guest_files(tmp_path, initrd)
    del files['/boot/grub/grub.cfg']
    files['/boot/loader/entries/0123-%s.conf' % KVER] = (
        'title Rocky Linux (%s) 9.3\nversion %s\nlinux /boot/vmlinuz-%s\n'
        'initrd %s $tuned_initrd\noptions root=/dev/sda1 ro $tuned_params\n'
        % (KVER, KVER, KVER, INITRD))
    raw, out, report = convert(tmp_path, files)
    assert reasons(report) == ['no-boot-code']
    assert report['properties']['xen_import_fixups_applied'] == (
        'initramfs-drivers')


def test_virtio_blk_bus_gets_virtio_blk(tmp_path):
    initrd, _ = make_initrd(tmp_path)
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd),
                               '--default-disk-bus', 'virtio')
    assert report['properties']['hw_disk_bus'] == 'virtio'
    assert reasons(report) == ['no-boot-code']
    _, main = unpacked(tmp_path, out, report)
    assert 'virtio_blk.ko' in modkit.show_depends(main, 'virtio_blk')
    assert not os.path.exists(os.path.join(
        main, 'usr/lib/modules', KVER, 'kernel/drivers/scsi/sd_mod.ko'))


def test_report_mode_leaves_the_image_alone(tmp_path):
    initrd, _ = make_initrd(tmp_path)
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd),
                               '--linux-fixup', 'report')
    assert_untouched(raw, out, report)


def test_no_room_is_a_reason(tmp_path):
    # Already xz -9e: recompressing cannot make room for the modules.
    initrd, _ = make_initrd(tmp_path, compressor=(
        'xz', '-9e', '--check=crc32', '-c'))
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd))
    assert_untouched(raw, out, report)
    assert not_edited(report) == [
        'partition 1:%s: initramfs not repaired: the repaired initramfs '
        'does not fit in its %d bytes (tried xz, bzip2, gzip, zstd)'
        % (INITRD, len(initrd))]


def test_unknown_kernel_config_is_a_reason(tmp_path):
    initrd, _ = make_initrd(tmp_path)
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd,
                                                     config=None))
    assert_untouched(raw, out, report)
    assert not_edited(report) == [
        'partition 1:%s: initramfs not repaired: no config-%s beside the '
        'initramfs: which compressors the kernel unpacks is unknown'
        % (INITRD, KVER)]


def test_kernel_with_only_lz4_is_a_reason(tmp_path):
    initrd, _ = make_initrd(tmp_path)
    raw, out, report = convert(tmp_path, guest_files(
        tmp_path, initrd, config='CONFIG_RD_LZ4=y\n# CONFIG_RD_XZ is not '
        'set\n'))
    assert_untouched(raw, out, report)
    assert not_edited(report)[0].endswith(
        'the kernel config enables none of xz, zstd, bzip2, gzip for '
        'initramfs')


def test_module_linking_out_of_the_tree_is_refused(tmp_path):
    initrd, _ = make_initrd(tmp_path)
    files = guest_files(tmp_path, initrd)
    files['/etc/secret'] = 'not a module\n'
    files[MODDIR + '/kernel/drivers/scsi/virtio_scsi.ko.zst'] = (
        'link', '../../../../../../../etc/secret')
    raw, out, report = convert(tmp_path, files)
    assert_untouched(raw, out, report)
    assert not_edited(report) == [
        'partition 1:%s: initramfs not repaired: %s/kernel/drivers/scsi/'
        'virtio_scsi.ko.zst leads out of %s (to /etc/secret)'
        % (INITRD, MODDIR, MODDIR)]


def test_a_link_where_a_directory_goes_is_refused(tmp_path):
    # dracut's etc/cmdline.d would be written through a link: refused.
    work = tmp_path / 'linked'
    tree = modkit.initramfs_tree(str(work), 'dracut', ['xen_blkfront'],
                                 filler=1 << 20)
    os.rmdir(os.path.join(tree, 'etc', 'cmdline.d'))
    os.symlink('/run/elsewhere', os.path.join(tree, 'etc', 'cmdline.d'))
    initrd = subprocess.run(['gzip', '-n', '-c'], input=modkit.cpio_of(tree),
                            check=True, stdout=subprocess.PIPE).stdout
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd))
    assert_untouched(raw, out, report)
    assert not_edited(report) == [
        'partition 1:%s: initramfs not repaired: etc/cmdline.d is a link '
        'in the initramfs, not a directory' % INITRD]


@pytest.mark.parametrize('damage', ['truncated', 'lying-size', 'bomb'])
def test_hostile_images_are_flagged_and_left_alone(tmp_path, damage):
    initrd, _ = make_initrd(tmp_path, filler=256 << 10)
    if damage == 'truncated':
        initrd = initrd[:len(initrd) * 2 // 3]
    elif damage == 'lying-size':
        # A cpio entry that claims more data than the archive holds.
        tree = modkit.initramfs_tree(str(tmp_path / 'lie'),
                                     'initramfs-tools', ['xen_blkfront'])
        archive = bytearray(modkit.cpio_of(tree))
        at = archive.index(b'conf/modules\0') - 110
        archive[at + 54:at + 62] = b'7FFFFFFF'     # c_filesize
        initrd = subprocess.run(['gzip', '-n', '-c'], input=bytes(archive),
                                check=True, stdout=subprocess.PIPE).stdout
    else:
        # More than 1 GiB of zeros in one entry: a few dozen KiB packed.
        bomb = tmp_path / 'bomb'
        tree = modkit.initramfs_tree(str(bomb), 'initramfs-tools',
                                     ['xen_blkfront'])
        with open(os.path.join(tree, 'zeros'), 'wb') as f:
            f.truncate((1 << 30) + (1 << 20))
        # Piped by the shell: the gigabyte never sits in this process.
        initrd = subprocess.run(
            'find . | cpio -o -H newc --quiet | zstd -q -1 -T0 -c',
            shell=True, cwd=tree, check=True, stdout=subprocess.PIPE).stdout
        os.unlink(os.path.join(tree, 'zeros'))
    raw, out, report = convert(tmp_path, guest_files(tmp_path, initrd))
    props = report['properties']
    assert props['xen_import_fixup_required'] == 'true'
    assert 'initramfs-unreadable' in props['xen_import_fixup_reasons']
    assert 'xen_import_fixups_applied' not in props
    assert linuxkit.differing_ranges(raw, out) == []
