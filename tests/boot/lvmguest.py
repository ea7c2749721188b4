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

"""A RHEL/CentOS-shaped disk: /boot on XFS, / on XFS in an LVM2 volume.

Neither loop devices nor device-mapper are used on this machine: sfdisk
writes the MBR into the file here, then a helper VM boots the guest's
own kernel and generic dracut initramfs, with the guest's tree (plus
the builder script below) as a read-only ext4 root and the target disk
as its second virtio disk. Inside it, LVM2's and xfsprogs' own tools
(the guest's, from Debian) make the physical volume, the volume group,
one linear logical volume and both file systems, and tar copies the
tree in. GRUB's core.img then goes into the gap before the first
partition from here, as for the ext4 guests.
"""

import os
import re
import struct
import uuid

from tests.boot import qemu
from tests import ovakit

MiB = ovakit.MiB
SECTOR = ovakit.SECTOR
DISK_SIZE = 2048 * MiB
BOOT_START = 1 * MiB
BOOT_SIZE = 320 * MiB        # mkfs.xfs refuses less than 300 MB
VG = 'gxivg'
LV = 'root'
ROOT_MAPPER = '/dev/mapper/%s-%s' % (VG, LV)
BUILD_OK = 'GXI-BUILD-OK'
BUILD_FAILED = 'GXI-BUILD-FAILED'
BUILD_TIMEOUT = 900
BUILD_END = re.compile(r'(%s|%s)[^\r\n]*' % (BUILD_OK, BUILD_FAILED))
BUILDER = 'gxi-build'

# PID 1 of the helper VM. The initramfs has mounted /dev (devtmpfs, with
# vdb1 and vdb2 in it); LVM runs without udev, so it makes its own nodes.
BUILD_SCRIPT = '''#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
fail() {
    echo "%(failed)s: $1" > /dev/ttyS0
    poweroff -f
}
# systemd's switch-root moves /proc, /sys, /dev and /run along.
mountpoint -q /proc || mount -t proc proc /proc || fail proc
mountpoint -q /sys || mount -t sysfs sys /sys || fail sys
mountpoint -q /run || mount -t tmpfs run /run || fail run
mkdir -p /run/lock /run/lvm
modprobe dm_mod || fail dm_mod
modprobe xfs || fail xfs
CONF='activation{udev_sync=0 udev_rules=0} backup{backup=0 archive=0}'
CONF="$CONF devices{obtain_device_list_from_udev=0 use_devicesfile=0}"
mkfs.xfs -q -f -L boot -m uuid=%(boot_uuid)s /dev/vdb1 || fail mkfs-boot
pvcreate -q --config "$CONF" /dev/vdb2 || fail pvcreate
vgcreate -q --config "$CONF" %(vg)s /dev/vdb2 || fail vgcreate
lvcreate -q --config "$CONF" -y -Zn -n %(lv)s -l 100%%FREE %(vg)s \\
    || fail lvcreate
mkfs.xfs -q -f -L root -m uuid=%(root_uuid)s %(mapper)s || fail mkfs-root
mount %(mapper)s /mnt || fail mount-root
mkdir -p /mnt/boot && mount /dev/vdb1 /mnt/boot || fail mount-boot
tar -C / --one-file-system --exclude=./%(builder)s --exclude=./lost+found \\
    -cf - . | tar -C /mnt -xpf - || fail copy
umount /mnt/boot && umount /mnt || fail umount
vgchange -q --config "$CONF" -an %(vg)s || fail vgchange
sync
echo "%(ok)s" > /dev/ttyS0
poweroff -f
'''


def uuids(name):
    """Fixed UUIDs of the /boot and / XFS file systems of guest ``name``."""
    return (str(uuid.uuid5(uuid.NAMESPACE_URL, 'gxi-boot/%s/boot' % name)),
            str(uuid.uuid5(uuid.NAMESPACE_URL, 'gxi-boot/%s/root' % name)))


def partition(path, label_id):
    """The empty disk with /boot at 1 MiB and an LVM partition after it."""
    with open(path, 'wb') as f:
        f.truncate(DISK_SIZE)
    ovakit.run('sfdisk', '--no-reread', '--no-tell-kernel', '-q', path,
               input=('label: dos\nlabel-id: 0x%08x\n'
                      'start=%d, size=%d, type=83, bootable\n'
                      'start=%d, type=8e\n'
                      % (label_id, BOOT_START // SECTOR, BOOT_SIZE // SECTOR,
                         (BOOT_START + BOOT_SIZE) // SECTOR)).encode())


def build(root, path, version, name, workdir, initrd):
    """Make ``path`` from the guest tree ``root`` in a helper VM.

    The VM boots the tree's kernel with ``initrd`` (a generic one, with
    virtio_blk). ``root`` is left with the builder script added; the
    caller removes the tree.
    """
    boot_uuid, root_uuid = uuids(name)
    label_id = struct.unpack('<I', uuid.UUID(boot_uuid).bytes[:4])[0]
    partition(path, label_id)
    script = os.path.join(root, BUILDER)
    with open(script, 'w') as f:
        f.write(BUILD_SCRIPT % {
            'failed': BUILD_FAILED, 'ok': BUILD_OK, 'boot_uuid': boot_uuid,
            'root_uuid': root_uuid, 'vg': VG, 'lv': LV,
            'mapper': ROOT_MAPPER, 'builder': BUILDER})
    os.chmod(script, 0o755)
    builder_disk = os.path.join(workdir, 'builder.ext4')
    ovakit.run('mkfs.ext4', '-F', '-q', '-d', root, builder_disk,
               str(1536 * MiB // 1024) + 'k')
    kernel = os.path.join(root, 'boot', 'vmlinuz-' + version)
    log = os.path.join(workdir, 'builder.serial.log')
    # Nested KVM can be far slower than TCG: the boot tests' probe picks.
    accel = qemu.pick_accelerator(qemu.probe_accelerators(kernel, workdir))
    argv = qemu.common_args(log) + [
        '-machine', 'pc,accel=%s' % accel,
        '-kernel', kernel, '-initrd', initrd,
        '-append', 'root=/dev/vda ro rootfstype=ext4 init=/%s '
                   'console=ttyS0 panic=-1 rd.lvm=0 rd.md=0 rd.luks=0'
                   % BUILDER,
        '-drive', 'file=%s,format=raw,if=none,id=builder' % builder_disk,
        '-device', 'virtio-blk-pci,drive=builder',
        '-drive', 'file=%s,format=raw,if=none,id=target' % path,
        '-device', 'virtio-blk-pci,drive=target']
    try:
        result = qemu.run_qemu(argv, log, BUILD_TIMEOUT, marker=BUILD_END,
                               failure=BUILD_END)
    finally:
        os.unlink(builder_disk)
    if result.marker != BUILD_OK:
        raise RuntimeError('the LVM helper VM did not build %s: %s'
                           % (name, result.describe()))
    return boot_uuid
