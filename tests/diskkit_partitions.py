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

"""Small disks made by real tools, read back by independent ones.

Partition tables come from sfdisk/fdisk (util-linux), filesystems from
mke2fs, mkfs.vfat, mkntfs, mkfs.xfs, mkfs.btrfs, mkswap and pvcreate. The
readers the tests compare with are sfdisk --json, sleuthkit's mmls and
fsstat, and blkid -p (libblkid). Files are sparse and at most 64 MiB.
"""

import json
import os
import shutil
import subprocess

import pytest

from tests import ovakit

MiB = 1 << 20
SECTOR = 512

# Debian package of each tool, for the skip reason.
_PACKAGES = {
    'sfdisk': 'fdisk', 'fdisk': 'fdisk', 'blkid': 'util-linux',
    'mmls': 'sleuthkit', 'fsstat': 'sleuthkit',
    'mke2fs': 'e2fsprogs', 'mkfs.ext4': 'e2fsprogs',
    'mkfs.vfat': 'dosfstools', 'mkntfs': 'ntfs-3g', 'mkfs.xfs': 'xfsprogs',
    'mkfs.btrfs': 'btrfs-progs', 'mkswap': 'util-linux',
    'pvcreate': 'lvm2', 'losetup': 'mount', 'qemu-img': 'qemu-utils',
}

# mkfs.xfs refuses filesystems under 300 MB unless it runs under xfstests;
# these variables are how xfstests lets it make small test filesystems.
_XFS_SMALL = {'TEST_DIR': '1', 'TEST_DEV': '1', 'QA_CHECK_FS': '1'}

MKFS = {
    'ext2': ['mke2fs', '-q', '-F', '-t', 'ext2'],
    'ext3': ['mke2fs', '-q', '-F', '-t', 'ext3'],
    'ext4': ['mkfs.ext4', '-q', '-F'],
    'ext4-nojournal': ['mkfs.ext4', '-q', '-F', '-O', '^has_journal'],
    'vfat': ['mkfs.vfat'],
    'vfat32': ['mkfs.vfat', '-F', '32'],
    'ntfs': ['mkntfs', '-F', '-Q', '-q'],
    'xfs': ['mkfs.xfs', '-q', '-f'],
    'btrfs': ['mkfs.btrfs', '-q', '-f', '-M'],
    'swap': ['mkswap', '-q'],
}
# What read_layout should call each one, and its minimum size here.
EXPECTED = {
    'ext2': 'ext2', 'ext3': 'ext3', 'ext4': 'ext4', 'ext4-nojournal': 'ext4',
    'vfat': 'vfat', 'vfat32': 'vfat', 'ntfs': 'ntfs', 'xfs': 'xfs',
    'btrfs': 'btrfs', 'swap': 'swap', 'lvm2': 'lvm2',
}
MIN_SIZE = {'vfat32': 36 * MiB, 'xfs': 20 * MiB, 'btrfs': 24 * MiB}

# blkid TYPE values for the names read_layout uses.
BLKID_NAMES = {'LVM2_member': 'lvm2'}


def require(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip('%s is not installed (Debian package %s)'
                        % (tool, _PACKAGES.get(tool, tool)))


def run(*args, stdin=None, env=None):
    full_env = dict(os.environ, LC_ALL='C', LVM_SUPPRESS_FD_WARNINGS='1')
    full_env.update(env or {})
    result = subprocess.run(args, input=stdin, env=full_env,
                            capture_output=True, text=True)
    if result.returncode:
        raise subprocess.CalledProcessError(
            result.returncode, args, result.stdout,
            '%s failed: %s' % (args[0], result.stderr.strip()))
    return result


def blank(path, size):
    with open(path, 'wb') as f:
        f.truncate(size)
    return str(path)


def sfdisk(path, script):
    require('sfdisk')
    run('sfdisk', '-q', '--no-reread', '--no-tell-kernel', str(path),
        stdin=script)


def sfdisk_json(path):
    require('sfdisk')
    return json.loads(run('sfdisk', '--json', str(path)).stdout)[
        'partitiontable']


def sfdisk_verify(path):
    """What sfdisk --verify says about a table (it exits 0 either way)."""
    require('sfdisk')
    result = subprocess.run(['sfdisk', '--verify', str(path)],
                            capture_output=True, text=True,
                            env=dict(os.environ, LC_ALL='C'))
    return (result.stdout + result.stderr).strip()


def mmls(path):
    """Partitions as sleuthkit sees them: [(start_sector, sectors)]."""
    require('mmls')
    found = []
    for line in run('mmls', str(path)).stdout.splitlines():
        fields = line.split()
        # Rows look like "002:  000:001   0000018432   ...": a slot
        # address (not Meta, not unallocated -------) names a partition.
        if len(fields) >= 5 and fields[0].endswith(':') \
                and fields[1][0].isdigit():
            found.append((int(fields[2]), int(fields[4])))
    return found


def blkid_type(path, offset=0, size=None):
    """Filesystem TYPE libblkid probes at offset, or None."""
    require('blkid')
    args = ['blkid', '-p', '-o', 'value', '-s', 'TYPE', '-O', str(offset)]
    if size is not None:
        args += ['-S', str(size)]
    result = subprocess.run(args + [str(path)], capture_output=True,
                            text=True)
    name = result.stdout.strip() or None
    return BLKID_NAMES.get(name, name)


def fsstat_type(path, offset):
    """sleuthkit's 'File System Type' at a byte offset, lowercase."""
    require('fsstat')
    out = run('fsstat', '-o', str(offset // SECTOR), str(path)).stdout
    for line in out.splitlines():
        if line.startswith('File System Type:'):
            return line.split(':', 1)[1].strip().lower()
    return None


def make_filesystem(kind, path, size):
    if kind == 'lvm2':
        return make_lvm_pv(path, size)
    tool = MKFS[kind][0]
    require(tool)
    blank(path, size)
    run(*MKFS[kind], str(path), env=_XFS_SMALL if kind == 'xfs' else None)
    return str(path)


def make_lvm_pv(path, size):
    """pvcreate only takes block devices: attach the file to a loop device.

    That needs root and a usable /dev/loop-control; the test skips when
    either is missing.
    """
    require('pvcreate', 'losetup')
    if os.geteuid() != 0:
        pytest.skip('pvcreate needs a loop device, which needs root')
    blank(path, size)
    try:
        loop = run('losetup', '--find', '--show', str(path)).stdout.strip()
    except subprocess.CalledProcessError as exc:
        pytest.skip('no loop device for pvcreate: %s' % exc.stderr.strip())
    try:
        run('pvcreate', '-q', '--devicesfile', '', loop)
    finally:
        run('losetup', '--detach', loop)
    return str(path)


def splice(source, disk, offset):
    """Copy the file source into disk at offset, leaving holes as holes."""
    with open(source, 'rb') as src, open(disk, 'r+b') as dst:
        position = offset
        while True:
            chunk = src.read(MiB)
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                dst.seek(position)
                dst.write(chunk)
            position += len(chunk)


def put_filesystem(disk, kind, offset, size, workdir):
    """Make a filesystem the size of a partition and copy it in place."""
    scratch = os.path.join(str(workdir), 'scratch-%s-%d.fs' % (kind, offset))
    make_filesystem(kind, scratch, size)
    splice(scratch, disk, offset)
    os.unlink(scratch)


def patch(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def read_at(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


def flip(path, offset):
    patch(path, offset, bytes([read_at(path, offset, 1)[0] ^ 0xFF]))


def qemu_convert_as_xapi_export(raw, out):
    """RAW -> fixed VHD -> RAW with qemu-img, the VHD labelled as XAPI's.

    XAPI writes creator 'caml' with the spec's CHS geometry; qemu-img (up to
    9.2) sizes such a disk from CHS, so the RAW it writes back loses the
    tail: the known truncating conversion.
    """
    require('qemu-img')
    vhd = ovakit.qemu_vhd(str(raw), str(out) + '.vhd', 'fixed')
    ovakit.set_creator(vhd, 'caml')
    run('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', vhd, str(out))
    os.unlink(vhd)
    return str(out)
