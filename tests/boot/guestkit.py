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

"""Bootable Debian 12 guests shaped like Xen exports, for boot tests.

The root file system comes from mmdebstrap (Debian's packages, nothing
written here) and is cached as a tarball keyed by the recipe's hash, so a
machine builds it once. Disks are made without loop devices: mkfs.ext4 -d
fills the partition from a directory, sfdisk writes the MBR, and GRUB's
own grub-mkimage makes core.img, which goes into the gap before the
partition as grub-bios-setup would put it.

Every guest runs ``gxi-boot-marker.service`` once ``/`` is mounted: it
prints ``GXI-BOOT-OK root=<device> rw`` on the first serial port when the
root file system is the device fstab names and is writable, else
``GXI-BOOT-BAD ...``, then powers off.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import uuid

from tests.boot import lvmguest
from tests.boot import qemu
from tests import ovakit

MiB = ovakit.MiB
SECTOR = ovakit.SECTOR
DISK_SIZE = 1024 * MiB
PART_OFFSET = 1 * MiB
GRUB_DIR = '/usr/lib/grub/i386-pc'
SOURCES = '/etc/apt/sources.list.d/debian.sources'
MARKER_OK = qemu.MARKER_OK
MARKER_BAD = qemu.MARKER_BAD
MARKER_MOUNT = 'GXI-BOOT-MOUNT'
XEN_MAC = '00:16:3e:5a:17:c2'
TOOLS = ('mmdebstrap', 'mkfs.ext4', 'sfdisk', 'grub-mkimage', 'qemu-img',
         'cpio')

BASE_PACKAGES = ('linux-image-cloud-amd64', 'systemd-sysv', 'udev', 'kmod',
                 'grub-pc', 'e2fsprogs', 'util-linux')

# grub-pc's postinst asks which disks to install to; there are none.
ESSENTIAL_HOOK = ('echo "grub-pc grub-pc/install_devices_empty boolean '
                  'true" | chroot "$1" debconf-set-selections')

# What a hostonly initramfs built on Xen holds: only the PV block driver
# (MODULES=dep cannot be modelled in a chroot). Built beside the default
# one; the xen-initramfs variant swaps it in.
XENONLY_HOOK = (
    'chroot "$1" sh -ec \''
    'cp -a /etc/initramfs-tools /etc/initramfs-tools.xenonly; '
    'sed -i "s/^MODULES=.*/MODULES=list/" '
    '/etc/initramfs-tools.xenonly/initramfs.conf; '
    'echo xen-blkfront >> /etc/initramfs-tools.xenonly/modules; '
    'for v in $(ls /lib/modules); do '
    'mkinitramfs -d /etc/initramfs-tools.xenonly '
    '-o /boot/initrd.img-$v.xenonly $v; done\'')

# The same with dracut, as a RHEL/CentOS guest on Xen has it: storage
# drivers exactly xen-blkfront (what host-only mode finds on a Xen guest;
# real host-only detection would look at this build machine's disks), the
# qemu module (virtio, ata) left out. The default initrd.img-<v> that
# dracut's kernel hook made while installing is generic.
DRACUT_XENONLY_HOOK = (
    'chroot "$1" sh -ec \''
    'for v in $(ls /lib/modules); do '
    'dracut --force --no-hostonly-cmdline --omit "qemu qemu-net" '
    '--drivers xen-blkfront --filesystems "ext4 xfs" '
    '/boot/initrd.img-$v.xenonly $v; done\'')


@dataclasses.dataclass(frozen=True)
class Flavour:
    """One cached root file system: what builds the initramfs, and how."""

    name: str
    packages: tuple
    xenonly_hook: str


FLAVOURS = {f.name: f for f in (
    # Debian-shaped: initramfs-tools.
    Flavour('initramfs-tools', BASE_PACKAGES + ('initramfs-tools',),
            XENONLY_HOOK),
    # RHEL/CentOS-shaped: dracut, with LVM2 and XFS for the LVM guest.
    Flavour('dracut', BASE_PACKAGES + ('dracut', 'lvm2', 'xfsprogs'),
            DRACUT_XENONLY_HOOK),
)}

MARKER_SCRIPT = '''#!/bin/sh
# Boot test marker: is / the device fstab names, mounted read-write?
src=$(findmnt -n -o SOURCE /)
opts=$(findmnt -n -o OPTIONS /)
want=$(findmnt -n --fstab --evaluate -o SOURCE /)
case ",$opts," in *,rw,*) mode=rw ;; *) mode=ro ;; esac
if mountpoint -q /boot; then
    echo "%(mount)s /boot=$(findmnt -n -o SOURCE /boot)" > /dev/ttyS0
fi
if [ "$mode" = rw ] && [ -n "$want" ] &&
        [ "$(readlink -f "$src")" = "$(readlink -f "$want")" ]; then
    echo "%(ok)s root=$src rw" > /dev/ttyS0
else
    echo "%(bad)s root=$src $mode fstab=$want" > /dev/ttyS0
fi
systemctl --no-block poweroff
''' % {'ok': MARKER_OK, 'bad': MARKER_BAD, 'mount': MARKER_MOUNT}

MARKER_UNIT = '''[Unit]
Description=Boot test marker on ttyS0
After=local-fs.target systemd-remount-fs.service
Requires=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/gxi-boot-marker

[Install]
WantedBy=multi-user.target
'''

GRUB_CFG = '''# Shaped like grub-mkconfig's output (it cannot run in a chroot).
set default="0"
set timeout=0
insmod part_msdos
insmod %(fs)s
search --no-floppy --fs-uuid --set=root %(uuid)s
menuentry '%(title)s' --class gnu-linux --class gnu --class os {
\tinsmod gzio
\tinsmod part_msdos
\tinsmod %(fs)s
\tsearch --no-floppy --fs-uuid --set=root %(uuid)s
\techo\t'Loading Linux %(version)s ...'
\tlinux\t%(boot)s/vmlinuz-%(version)s root=%(root)s ro %(cmdline)s
\techo\t'Loading initial ramdisk ...'
\tinitrd\t%(boot)s/initrd.img-%(version)s
}
'''

PERSISTENT_NET = (
    '# This file was automatically generated by the '
    '/lib/udev/write_net_rules\n'
    '# PCI device 0x5853:0x0001 (xen-netfront)\n'
    'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
    'ATTR{address}=="%s", ATTR{dev_id}=="0x0", ATTR{type}=="1", '
    'KERNEL=="eth*", NAME="eth0"\n' % XEN_MAC)

INTERFACES = ('auto lo\niface lo inet loopback\n\n'
              'allow-hotplug eth0\niface eth0 inet dhcp\n')


@dataclasses.dataclass(frozen=True)
class Variant:
    """How one guest differs from the base rootfs."""

    name: str
    xen_names: bool = False        # /dev/xvda1 in fstab and grub.cfg
    cmdline: str = 'console=ttyS0'
    xen_only_initramfs: bool = False
    xen_network: bool = False      # eth0 bound to a Xen MAC
    flavour: str = 'initramfs-tools'
    # An uncompressed early-microcode archive in front of the initramfs,
    # as dracut and initramfs-tools put it there.
    early_microcode: bool = False
    # 'ext4': one ext4 partition; 'lvm-xfs': /boot on XFS, / on XFS in
    # LVM2 (tests/boot/lvmguest.py).
    layout: str = 'ext4'


# The kernel's console goes to the last console= named; ttyS0 last keeps
# initramfs-tools' messages (ALERT!, the shell prompt) in the serial log.
VARIANTS = {v.name: v for v in (
    Variant('xen-names', xen_names=True, xen_network=True,
            cmdline='console=hvc0 console=ttyS0'),
    Variant('xen-initramfs', xen_only_initramfs=True),
    Variant('hvc0-only', cmdline='console=hvc0'),
    Variant('clean'),
    Variant('dracut-xen', xen_only_initramfs=True, flavour='dracut'),
    Variant('dracut-microcode', xen_only_initramfs=True, flavour='dracut',
            early_microcode=True),
    # A RHEL guest as it leaves Xen: /dev/xvda1 for /boot in the fstab on
    # the LVM root, console=hvc0 in grub.cfg and /etc/default/grub, and
    # dracut's initramfs on XFS /boot with only xen-blkfront for storage.
    Variant('lvm-xfs', flavour='dracut', layout='lvm-xfs',
            xen_only_initramfs=True, cmdline='console=hvc0 console=ttyS0'),
)}


# --------------------------------------------------------------------------
# The cached root file system

def cache_dir():
    path = os.environ.get('GXI_BOOT_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'glance-xen-import', 'boot')
    os.makedirs(path, exist_ok=True)
    return path


def mirror_lines(path=SOURCES):
    """One-line apt sources from a deb822 file (what apt here uses)."""
    with open(path) as f:
        stanzas = f.read().split('\n\n')
    lines = []
    for stanza in stanzas:
        fields = {}
        for line in stanza.splitlines():
            m = re.match(r'^([A-Za-z-]+):\s*(.*)$', line)
            if m:
                fields[m.group(1).lower()] = m.group(2).split()
        if 'deb' not in fields.get('types', ()):
            continue
        for uri in fields.get('uris', ()):
            for suite in fields.get('suites', ()):
                lines.append('deb %s %s %s' % (
                    uri, suite, ' '.join(fields.get('components', []))))
    if not lines:
        raise RuntimeError('no deb sources in %s' % path)
    return lines


def recipe(flavour='initramfs-tools'):
    f = FLAVOURS[flavour]
    return {
        'suite': 'bookworm', 'variant': 'minbase', 'mode': 'root',
        'packages': sorted(f.packages), 'mirrors': mirror_lines(),
        'hooks': [ESSENTIAL_HOOK, f.xenonly_hook],
    }


def recipe_key(flavour='initramfs-tools'):
    blob = json.dumps(recipe(flavour), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path):
    with open(path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def rootfs_tarball(log=None, flavour='initramfs-tools'):
    """The cached rootfs tarball; built with mmdebstrap when missing."""
    r = recipe(flavour)
    key = recipe_key(flavour)
    out = os.path.join(cache_dir(), 'rootfs-%s.tar' % key)
    with _locked(out + '.lock'):
        if os.path.exists(out):
            return out
        part = out + '.part'
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        argv = ['mmdebstrap', '--mode=' + r['mode'],
                '--variant=' + r['variant'], '--format=tar',
                '--include=' + ','.join(r['packages']),
                '--essential-hook=' + r['hooks'][0],
                '--customize-hook=' + r['hooks'][1],
                r['suite'], part] + r['mirrors']
        try:
            if log is None:
                ovakit.run(*argv)      # its error carries the output
            else:
                subprocess.run(argv, check=True, stdout=log,
                               stderr=subprocess.STDOUT)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        os.rename(part, out)
        with open(out + '.json', 'w') as f:
            json.dump(r, f, indent=1, sort_keys=True)
    return out


def kernel_version(root):
    versions = sorted(os.listdir(os.path.join(root, 'lib', 'modules')))
    if len(versions) != 1:
        raise RuntimeError('expected one kernel, found %s' % versions)
    return versions[0]


def extract_kernel(tarball, dest_dir):
    """Copy the guest's vmlinuz out of the tarball (for a probe boot)."""
    with tarfile.open(tarball) as tar:
        for info in tar:
            if re.fullmatch(r'\./boot/vmlinuz-.*', info.name) and (
                    info.isfile()):
                path = os.path.join(dest_dir, os.path.basename(info.name))
                with tar.extractfile(info) as src, open(path, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
                return path
    raise RuntimeError('no kernel in %s' % tarball)


# --------------------------------------------------------------------------
# One variant's root tree

def _write(root, relpath, text, mode=0o644):
    path = os.path.join(root, relpath.lstrip('/'))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)


def _layout_files(root, variant, fs_uuid, version):
    """fstab, grub.cfg and /etc/default/grub for the variant's layout."""
    if variant.layout == 'lvm-xfs':
        # RHEL's shape: / in LVM, /boot its own XFS partition, named as
        # the guest saw it on Xen.
        fstab = ('%s / xfs defaults 0 0\n/dev/xvda1 /boot xfs defaults 0 0\n'
                 % lvmguest.ROOT_MAPPER)
        device, boot_dir, fs = lvmguest.ROOT_MAPPER, '', 'xfs'
        cmdline = 'rd.lvm.lv=%s/%s %s' % (lvmguest.VG, lvmguest.LV,
                                          variant.cmdline)
    else:
        device = '/dev/xvda1' if variant.xen_names else 'UUID=%s' % fs_uuid
        fstab = '%s / ext4 errors=remount-ro 0 1\n' % device
        boot_dir, fs, cmdline = '/boot', 'ext2', variant.cmdline
    _write(root, '/etc/fstab',
           '# <file system> <mount point> <type> <options> <dump> <pass>\n'
           + fstab)
    _write(root, '/etc/default/grub',
           'GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX="%s"\n'
           % cmdline)
    grub = os.path.join(root, 'boot', 'grub')
    shutil.copytree(GRUB_DIR, os.path.join(grub, 'i386-pc'),
                    ignore=shutil.ignore_patterns('*.img', '*.image'))
    _write(root, '/boot/grub/grub.cfg', GRUB_CFG % {
        'uuid': fs_uuid, 'version': version, 'cmdline': cmdline,
        'root': device, 'boot': boot_dir, 'fs': fs,
        'title': 'Debian GNU/Linux (%s)' % variant.flavour})


def customise(root, variant, fs_uuid):
    """Turn the extracted base rootfs into ``variant``; return its kernel.

    ``fs_uuid`` is the UUID of the file system holding /boot.
    """
    version = kernel_version(root)
    _write(root, '/etc/hostname', 'gxi-%s\n' % variant.name)
    _write(root, '/usr/local/sbin/gxi-boot-marker', MARKER_SCRIPT, 0o755)
    _write(root, '/etc/systemd/system/gxi-boot-marker.service', MARKER_UNIT)
    wants = os.path.join(root, 'etc/systemd/system/multi-user.target.wants')
    os.makedirs(wants, exist_ok=True)
    os.symlink('/etc/systemd/system/gxi-boot-marker.service',
               os.path.join(wants, 'gxi-boot-marker.service'))
    if variant.xen_network:
        _write(root, '/etc/udev/rules.d/70-persistent-net.rules',
               PERSISTENT_NET)
        _write(root, '/etc/network/interfaces', INTERFACES)
    initrd = os.path.join(root, 'boot', 'initrd.img-' + version)
    conf = os.path.join(root, 'etc', 'initramfs-tools')
    tools_conf = variant.flavour == 'initramfs-tools'
    if variant.xen_only_initramfs:
        os.replace(initrd + '.xenonly', initrd)
        if tools_conf:
            shutil.rmtree(conf)
            os.rename(conf + '.xenonly', conf)
    else:
        os.unlink(initrd + '.xenonly')
        if tools_conf:
            shutil.rmtree(conf + '.xenonly')
    if variant.early_microcode:
        prepend_early_microcode(initrd)
    _layout_files(root, variant, fs_uuid, version)
    return version


# What dracut (--early-microcode) and initramfs-tools put in the early
# archive; the content stands in for vendor microcode: the guest kernel
# has no microcode loader (no CONFIG_MICROCODE_*), and under a hypervisor
# Linux loads none anyway. What matters is the layout: an uncompressed
# newc archive in front of the compressed main one.
EARLY_FILES = ('kernel/x86/microcode/GenuineIntel.bin',
               'kernel/x86/microcode/AuthenticAMD.bin')


def prepend_early_microcode(initrd):
    """Put GNU cpio's newc archive of early microcode before ``initrd``."""
    with tempfile.TemporaryDirectory() as tree:
        names = ['early_cpio', 'kernel', 'kernel/x86',
                 'kernel/x86/microcode']
        os.makedirs(os.path.join(tree, 'kernel', 'x86', 'microcode'))
        _write(tree, 'early_cpio', '1\n')
        for name in EARLY_FILES:
            with open(os.path.join(tree, name), 'wb') as f:
                f.write(b'gxi early microcode stand-in\n' * 512)
            names.append(name)
        early = subprocess.run(
            ['cpio', '-o', '-H', 'newc', '--quiet', '-R', '0:0'],
            cwd=tree, input='\n'.join(names).encode() + b'\n',
            capture_output=True, check=True).stdout
    with open(initrd, 'rb') as f:
        main = f.read()
    with open(initrd, 'wb') as f:
        f.write(early + main)


# --------------------------------------------------------------------------
# The disk: MBR, GRUB in the gap, ext4 at 1 MiB

def _install_grub(disk_fd, fs_uuid, workdir, fs='ext2', prefix='/boot/grub'):
    load_cfg = os.path.join(workdir, 'load.cfg')
    with open(load_cfg, 'w') as f:
        f.write("search.fs_uuid %s root\nset prefix=($root)'%s'\n"
                % (fs_uuid, prefix))
    core = os.path.join(workdir, 'core.img')
    ovakit.run('grub-mkimage', '-O', 'i386-pc', '-d', GRUB_DIR,
               '-c', load_cfg, '-p', '(hd0,msdos1)' + prefix, '-o', core,
               'biosdisk', 'part_msdos', fs, 'search_fs_uuid')
    with open(core, 'rb') as f:
        core_img = f.read()
    if SECTOR + len(core_img) > PART_OFFSET:
        raise RuntimeError('core.img does not fit before the partition')
    with open(os.path.join(GRUB_DIR, 'boot.img'), 'rb') as f:
        boot = bytearray(f.read(0x1B8))
    # As grub-bios-setup does: boot from the BIOS drive whatever it is.
    boot[0x66:0x68] = b'\x90\x90'
    os.pwrite(disk_fd, bytes(boot), 0)
    os.pwrite(disk_fd, core_img, SECTOR)


def build_lvm_disk(variant, path, tarball, workdir):
    """The lvm-xfs layout, made in a helper VM (tests/boot/lvmguest.py)."""
    boot_uuid, _ = lvmguest.uuids(variant.name)
    root = os.path.join(workdir, 'root')
    os.makedirs(root)
    ovakit.run('tar', '-C', root, '--numeric-owner', '-xpf', tarball)
    # The helper VM boots from the generic initramfs, whatever the
    # variant leaves in the guest.
    generic = os.path.join(workdir, 'builder-initrd')
    shutil.copyfile(os.path.join(root, 'boot', 'initrd.img-'
                                 + kernel_version(root)), generic)
    version = customise(root, variant, boot_uuid)
    try:
        lvmguest.build(root, path, version, variant.name, workdir, generic)
    finally:
        shutil.rmtree(root)
    fd = os.open(path, os.O_WRONLY)
    try:
        _install_grub(fd, boot_uuid, workdir, fs='xfs', prefix='/grub')
    finally:
        os.close(fd)
    return {'variant': variant.name, 'fs_uuid': boot_uuid,
            'kernel': version, 'path': path}


def build_disk(variant, path, tarball, workdir):
    """Write ``variant``'s bootable RAW disk at ``path``; return facts."""
    if variant.layout == 'lvm-xfs':
        return build_lvm_disk(variant, path, tarball, workdir)
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, 'gxi-boot/' + variant.name))
    root = os.path.join(workdir, 'root')
    os.makedirs(root)
    ovakit.run('tar', '-C', root, '--numeric-owner', '-xpf', tarball)
    version = customise(root, variant, fs_uuid)
    part_size = DISK_SIZE - PART_OFFSET
    part = os.path.join(workdir, 'part.img')
    ovakit.run('mkfs.ext4', '-F', '-q', '-d', root, '-U', fs_uuid,
               '-L', 'gxi-root', part, str(part_size // 1024) + 'k')
    shutil.rmtree(root)
    with open(path, 'wb') as f:
        f.truncate(DISK_SIZE)
    label_id = struct.unpack('<I', uuid.UUID(fs_uuid).bytes[:4])[0]
    ovakit.run('sfdisk', '--no-reread', '--no-tell-kernel', '-q', path,
               input=('label: dos\nlabel-id: 0x%08x\n'
                      'start=%d, type=83, bootable\n'
                      % (label_id, PART_OFFSET // SECTOR)).encode())
    ovakit.run('dd', 'if=' + part, 'of=' + path, 'bs=1M',
               'seek=%d' % (PART_OFFSET // MiB), 'conv=notrunc,sparse',
               'status=none')
    os.unlink(part)
    fd = os.open(path, os.O_WRONLY)
    try:
        _install_grub(fd, fs_uuid, workdir)
    finally:
        os.close(fd)
    return {'variant': variant.name, 'fs_uuid': fs_uuid,
            'kernel': version, 'path': path}


@dataclasses.dataclass
class Guest:
    """A built guest: its RAW disk and the XenCenter-style OVA holding it."""

    name: str
    raw: str
    ova: str
    fs_uuid: str
    kernel: str


def build_guest(variant, out_dir, tarball):
    """RAW -> XAPI-style VHD (qemu-img + ovakit) -> XenCenter-style OVA."""
    base = os.path.join(out_dir, variant.name)
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        facts = build_disk(variant, base + '.raw', tarball, work)
        vhd = ovakit.xen_vhd(base + '.raw', os.path.join(work, 'disk.vhd'),
                             creator='caml')
        ova = ovakit.make_ova(base + '.ova', [ovakit.OvaDisk(vhd)],
                              name=variant.name).path
    return Guest(variant.name, base + '.raw', ova, facts['fs_uuid'],
                 facts['kernel'])


def guests_key():
    """Changes with the recipes and with the code that shapes the disks."""
    digest = hashlib.sha256(' '.join(recipe_key(f) for f in FLAVOURS)
                            .encode())
    for module in (__file__, lvmguest.__file__, ovakit.__file__):
        with open(module, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _prune(prefix, keep):
    top = cache_dir()
    for name in os.listdir(top):
        if name.startswith(prefix) and not name.startswith(keep):
            path = os.path.join(top, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def cached_guests(log=None):
    """Every variant, built once per machine (per recipe and kit code)."""
    key = guests_key()
    out = os.path.join(cache_dir(), 'guests-' + key)
    with _locked(os.path.join(cache_dir(), 'guests.lock')):
        index = os.path.join(out, 'guests.json')
        if not os.path.exists(index):
            tarballs = {f: rootfs_tarball(log, f) for f in FLAVOURS}
            _prune('rootfs-', tuple('rootfs-' + recipe_key(f)
                                    for f in FLAVOURS))
            _prune('guests-', 'guests-' + key)
            part = out + '.part'
            shutil.rmtree(part, ignore_errors=True)
            os.makedirs(part)
            built = [build_guest(v, part, tarballs[v.flavour])
                     for v in VARIANTS.values()]
            with open(os.path.join(part, 'guests.json'), 'w') as f:
                json.dump([dataclasses.asdict(g) for g in built], f)
            os.rename(part, out)
    with open(index) as f:
        guests = [Guest(**g) for g in json.load(f)]
    for g in guests:
        # Built in the .part directory, which has been renamed since.
        g.raw = os.path.join(out, os.path.basename(g.raw))
        g.ova = os.path.join(out, os.path.basename(g.ova))
    return {g.name: g for g in guests}
