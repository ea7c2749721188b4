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

"""Small Linux guest disks for the Linux fixup tests, made by real tools.

The file systems come from mkfs.ext2/3/4 -d and mkfs.xfs -p (through
tools/fixtures/make_guests.py, which the committed fixtures use too), the
MBR from sfdisk; nothing is mounted.
"""

import importlib.util
import os
import re
import subprocess

from tests import ovakit

_MAKE_GUESTS = os.path.join(os.path.dirname(__file__), os.pardir, 'tools',
                            'fixtures', 'make_guests.py')
_spec = importlib.util.spec_from_file_location('make_guests', _MAKE_GUESTS)
make_guests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_guests)

MiB = 1024 * 1024
SECTOR = 512
PARTITION_START = 2048      # sectors: 1 MiB
KERNEL = '6.1.0-27-cloud-amd64'

XEN_FILES = {
    '/etc/os-release': 'ID=debian\nVERSION_ID="12"\n'
                       'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
    '/etc/fstab': '# <file system> <mount point> <type> <options>\n'
                  '/dev/xvda1 / ext4 errors=remount-ro 0 1\n'
                  '/dev/xvdb1\t/srv\text4\tdefaults,nofail\t0\t2\n',
    '/etc/default/grub': 'GRUB_DEFAULT=0\n'
                         'GRUB_CMDLINE_LINUX="root=/dev/xvda1 '
                         'console=hvc0"\n',
    '/etc/udev/rules.d/70-persistent-net.rules':
        '# This file was automatically generated.\n'
        'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
        'ATTR{address}=="00:16:3e:5a:01:02", ATTR{type}=="1", '
        'KERNEL=="eth*", NAME="eth0"\n',
    '/etc/sysconfig/network-scripts/ifcfg-eth0':
        'DEVICE=eth0\nHWADDR=00:16:3e:5a:01:02\nBOOTPROTO=dhcp\n',
    '/boot/grub/grub.cfg':
        'set default="0"\n'
        'menuentry "Debian GNU/Linux" {\n'
        '\tlinux /boot/vmlinuz-%s root=/dev/xvda1 ro console=hvc0 \\\n'
        '\t\tquiet\n'
        '\tinitrd /boot/initrd.img-%s\n'
        '}\n' % (KERNEL, KERNEL),
    '/boot/vmlinuz-' + KERNEL: b'\x00' * 64,
}

# What the files above must read after a fixup for a SCSI disk, written
# out by hand rather than derived by the code under test.
FIXED_FOR_SCSI = {
    '/etc/fstab': '# <file system> <mount point> <type> <options>\n'
                  '/dev/sda1 / ext4 errors=remount-ro 0 1 \n'
                  '/dev/sdb1\t/srv\text4\tdefaults,nofail\t0\t2 \n',
    '/etc/default/grub': 'GRUB_DEFAULT=0\n'
                         'GRUB_CMDLINE_LINUX="root=/dev/sda1 '
                         'console=tty0" \n',
    '/etc/udev/rules.d/70-persistent-net.rules':
        '# This file was automatically generated.\n'
        '#UBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
        'ATTR{address}=="00:16:3e:5a:01:02", ATTR{type}=="1", '
        'KERNEL=="eth*", NAME="eth0"\n',
    '/etc/sysconfig/network-scripts/ifcfg-eth0':
        'DEVICE=eth0\n#WADDR=00:16:3e:5a:01:02\nBOOTPROTO=dhcp\n',
    '/boot/grub/grub.cfg':
        'set default="0"\n'
        'menuentry "Debian GNU/Linux" {\n'
        '\tlinux /boot/vmlinuz-%s root=/dev/sda1 ro console=tty0  \\\n'
        '\t\tquiet\n'
        '\tinitrd /boot/initrd.img-%s\n'
        '}\n' % (KERNEL, KERNEL),
}


def volume(work, files, fstype='ext4', size=24 * MiB):
    """A file system image holding files (make_guests' tree format)."""
    work = str(work)
    if fstype == 'xfs':
        return make_guests.xfs_volume(work, 'root', max(size, 16 * MiB),
                                      files, 'root')
    return make_guests.ext_volume(work, 'root', size, files, 'root',
                                  fstype=fstype)


def disk(work, files, fstype='ext4', size=24 * MiB, image=None):
    """An MBR disk with one bootable partition at 1 MiB holding files."""
    work = str(work)
    image = image or volume(work, files, fstype, size)
    path = os.path.join(work, 'disk.raw')
    sectors = os.path.getsize(image) // SECTOR
    make_guests.make_disk(
        path, (PARTITION_START + sectors) * SECTOR + MiB,
        'label: dos\nstart=%d, size=%d, type=83, bootable\n'
        % (PARTITION_START, sectors), [(PARTITION_START, image)],
        boot_code=False)
    return path


def ova(work, raw):
    vhd = os.path.join(str(work), 'disk.vhd')
    ovakit.xen_vhd(raw, vhd, creator='caml')
    path = os.path.join(str(work), 'guest.ova')
    ovakit.make_ova(path, [ovakit.OvaDisk(vhd)])
    return path


def partition_device(raw):
    """The partition inside raw, as e2fsprogs' offset I/O option names it."""
    return '%s?offset=%d' % (raw, PARTITION_START * SECTOR)


def debugfs_cat(raw, path):
    return subprocess.run(['debugfs', '-R', 'cat "%s"' % path,
                           partition_device(raw)], check=True,
                          capture_output=True).stdout


def debugfs(raw, request, write=False):
    argv = ['debugfs'] + (['-w'] if write else [])
    argv += ['-R', request, partition_device(raw)]
    return subprocess.run(argv, check=True, capture_output=True,
                          text=True).stdout


def e2fsck_clean(raw):
    return subprocess.run(['e2fsck', '-fn', partition_device(raw)],
                          capture_output=True).returncode == 0


def ext_file_bytes(raw, path):
    """Disk byte ranges of a file, from debugfs's block list."""
    out = debugfs(raw, 'blocks "%s"' % path)
    block_size = int(re.search(r'Block size:\s+(\d+)',
                               debugfs(raw, 'stats -h')).group(1))
    start = PARTITION_START * SECTOR
    return [(start + int(b) * block_size, start + (int(b) + 1) * block_size)
            for b in out.split()]


def extract_partition(raw, dest):
    """The partition as a file of its own (for tools with no offset)."""
    size = os.path.getsize(raw) - PARTITION_START * SECTOR - MiB
    with open(raw, 'rb') as src, open(dest, 'wb') as out:
        src.seek(PARTITION_START * SECTOR)
        out.write(src.read(size))
    return dest


def xfs_file_start(part, path):
    """(byte offset, block size) of a file's first block in an XFS image.

    From xfs_db's block map, not from the code under test.
    """
    bmap = subprocess.run(['xfs_db', '-r', '-f', '-c', 'path %s' % path,
                           '-c', 'bmap', '-c', 'sb 0', '-c',
                           'p blocksize agblocks', part],
                          capture_output=True, text=True, check=True).stdout
    agno, agbno = (int(x) for x in re.search(r'\((\d+)/(\d+)\)',
                                             bmap).groups())
    block_size = int(re.search(r'blocksize = (\d+)', bmap).group(1))
    agblocks = int(re.search(r'agblocks = (\d+)', bmap).group(1))
    return (agno * agblocks + agbno) * block_size, block_size


def xfs_file_ag(part, path):
    """The allocation group of a file's first block, from xfs_db."""
    bmap = subprocess.run(['xfs_db', '-r', '-f', '-c', 'path %s' % path,
                           '-c', 'bmap', part],
                          capture_output=True, text=True, check=True).stdout
    return int(re.search(r'\((\d+)/\d+\)', bmap).group(1))


def differing_ranges(a, b, chunk=MiB):
    """Offsets where files a and b differ, as a sorted list."""
    found = []
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        offset = 0
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x and not y:
                return found
            if x != y:
                found.extend(offset + i for i, (p, q) in
                             enumerate(zip(x, y)) if p != q)
                if len(x) != len(y):
                    found.append(offset + min(len(x), len(y)))
            offset += chunk
