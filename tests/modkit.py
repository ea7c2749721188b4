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

"""Kernel module trees and initramfs images made by real tools.

Each module is an ELF relocatable object compiled by gcc, shaped as kmod
reads a .ko: a .modinfo section (name, alias, license), the symbols it
exports in __ksymtab_strings and the ones it needs left undefined. The
host's depmod computes modules.dep from those symbols, as it would for a
kernel build; GNU cpio and the real compressors make the initramfs.
"""

import os
import shutil
import subprocess

KVER = '6.1.0-99-cloud-amd64'
TOOLS = ('gcc', 'depmod', 'modprobe', 'cpio', 'gzip', 'xz', 'zstd',
         'lsinitramfs', 'unmkinitramfs')

# name: (path in the tree, exports, imports, aliases), shaped like
# Debian's 6.1 cloud kernel (its virtio_pci needs two helper modules).
MODULES = {
    'virtio_ring': ('kernel/drivers/virtio/virtio_ring.ko',
                    ['virtqueue_add'], [], []),
    'virtio': ('kernel/drivers/virtio/virtio.ko',
               ['register_virtio_driver'], ['virtqueue_add'], []),
    'virtio_pci_modern_dev': (
        'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
        ['vp_modern_probe'], [], []),
    'virtio_pci_legacy_dev': (
        'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
        ['vp_legacy_probe'], [], []),
    'virtio_pci': ('kernel/drivers/virtio/virtio_pci.ko.xz', [],
                   ['vp_modern_probe', 'vp_legacy_probe',
                    'register_virtio_driver'],
                   ['pci:v00001AF4d*sv*sd*bc*sc*i*']),
    'scsi_common': ('kernel/drivers/scsi/scsi_common.ko',
                    ['scsi_device_type'], [], []),
    'scsi_mod': ('kernel/drivers/scsi/scsi_mod.ko', ['scsi_add_host'],
                 ['scsi_device_type'], []),
    'virtio_scsi': ('kernel/drivers/scsi/virtio_scsi.ko.zst', [],
                    ['register_virtio_driver', 'scsi_add_host'],
                    ['virtio:d00000008v*']),
    'sd_mod': ('kernel/drivers/scsi/sd_mod.ko', [], ['scsi_add_host'],
               ['scsi:t-0x00*']),
    'virtio_blk': ('kernel/drivers/block/virtio_blk.ko', [],
                   ['register_virtio_driver'], ['virtio:d00000002v*']),
    'xen_blkfront': ('kernel/drivers/block/xen-blkfront.ko', [], [],
                     ['xen:vbd']),
}


def missing_tools():
    return [t for t in TOOLS if shutil.which(t) is None and not any(
        os.path.exists(os.path.join(d, t)) for d in ('/sbin', '/usr/sbin'))]


def _tool(name):
    return shutil.which(name) or next(
        os.path.join(d, name) for d in ('/usr/sbin', '/sbin')
        if os.path.exists(os.path.join(d, name)))


def run(*argv, **kwargs):
    return subprocess.run([_tool(argv[0])] + list(argv[1:]), check=True,
                          capture_output=True, **kwargs).stdout


def _source(name, exports, imports, aliases):
    modinfo = ''.join('%s\\0' % f for f in (
        ['license=GPL', 'name=' + name,
         'vermagic=%s SMP mod_unload modversions ' % KVER] +
        ['alias=' + a for a in aliases]))
    lines = ['const char gxi_modinfo[] __attribute__((section(".modinfo"),'
             ' used, aligned(1))) = "%s";' % modinfo]
    for symbol in exports:
        lines.append('int %s(void) { return 0; }' % symbol)
        lines.append('const char gxi_ks_%s[] __attribute__((section('
                     '"__ksymtab_strings"), used, aligned(1))) = "%s";'
                     % (symbol, symbol))
    for symbol in imports:
        lines.append('extern int %s(void);' % symbol)
    calls = ' + '.join('%s()' % s for s in imports) or '0'
    lines.append('int init_module(void) { return %s; }' % calls)
    return '\n'.join(lines) + '\n'


def build_module(work, name, dest):
    """Compile module ``name`` to dest (.ko, .ko.xz or .ko.zst)."""
    path, exports, imports, aliases = MODULES[name]
    src = os.path.join(work, name + '.c')
    with open(src, 'w') as f:
        f.write(_source(name, exports, imports, aliases))
    obj = os.path.join(work, name + '.o')
    run('gcc', '-c', '-O0', '-fno-pic', '-fno-asynchronous-unwind-tables',
        '-o', obj, src)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if dest.endswith('.xz'):
        data = run('xz', '-c', '--check=crc32', obj)
    elif dest.endswith('.zst'):
        data = run('zstd', '-q', '-c', obj)
    else:
        with open(obj, 'rb') as f:
            data = f.read()
    with open(dest, 'wb') as f:
        f.write(data)


def module_tree(work, base, names, kver=KVER):
    """base/lib/modules/kver with names built and depmod's indexes."""
    os.makedirs(work, exist_ok=True)
    moddir = os.path.join(base, 'lib', 'modules', kver)
    for name in names:
        build_module(work, name, os.path.join(moddir, MODULES[name][0]))
    with open(os.path.join(moddir, 'modules.builtin'), 'w') as f:
        f.write('kernel/fs/ext4/ext4.ko\n')
    run('depmod', '-b', base, kver)
    return moddir


def initramfs_tree(work, generator, names, kver=KVER, filler=0):
    """An unpacked initramfs (merged /usr, lib -> usr/lib) of generator.

    filler: bytes of compressible text, standing for the rest of a real
    image (busybox, udev, libraries).
    """
    tree = os.path.join(work, 'tree')
    usr = os.path.join(tree, 'usr')
    os.makedirs(usr)
    module_tree(os.path.join(work, 'build'), usr, names, kver)
    os.symlink('usr/lib', os.path.join(tree, 'lib'))
    if generator == 'initramfs-tools':
        os.makedirs(os.path.join(tree, 'conf'))
        os.makedirs(os.path.join(tree, 'scripts', 'init-top'))
        with open(os.path.join(tree, 'conf', 'initramfs.conf'), 'w') as f:
            f.write('MODULES=list\n')
        with open(os.path.join(tree, 'conf', 'modules'), 'w') as f:
            f.write('xen-blkfront\n')
    else:
        os.makedirs(os.path.join(tree, 'usr', 'lib', 'dracut'))
        with open(os.path.join(tree, 'usr', 'lib', 'dracut',
                               'build-parameter.txt'), 'w') as f:
            f.write('--kver %s --hostonly\n' % kver)
        os.makedirs(os.path.join(tree, 'etc', 'cmdline.d'))
    if filler:
        words = [b'%05d-initramfs-filler' % i for i in range(4096)]
        data = bytearray()
        i = 0
        while len(data) < filler:
            data += words[(i * 2654435761) % 4096] + b' '
            i += 1
        with open(os.path.join(tree, 'usr', 'filler.txt'), 'wb') as f:
            f.write(bytes(data[:filler]))
    return tree


def cpio_of(tree):
    names = subprocess.run(['find', '.'], cwd=tree, check=True,
                           stdout=subprocess.PIPE).stdout
    return subprocess.run(['cpio', '-o', '-H', 'newc', '--quiet'], cwd=tree,
                          input=names, check=True,
                          stdout=subprocess.PIPE).stdout


def microcode(work):
    """An early-microcode archive as dracut and initramfs-tools put first."""
    tree = os.path.join(work, 'early')
    os.makedirs(os.path.join(tree, 'kernel', 'x86', 'microcode'))
    with open(os.path.join(tree, 'kernel', 'x86', 'microcode',
                           'GenuineIntel.bin'), 'wb') as f:
        f.write(os.urandom(3000))
    return cpio_of(tree)


def unpack(image_path, dest, main_start=0, tool_readable=True):
    """The image's main archive unpacked by initramfs-tools' tools.

    unmkinitramfs where xz/gzip/bzip2 accept the zeros after the stream;
    else, as the kernel reads it, the stream at main_start through
    ``xz --single-stream`` or ``zstd`` (which reports the zeros after the
    frame as an error once it has written the frame out) into GNU cpio.
    """
    if tool_readable:
        run('unmkinitramfs', image_path, dest)
        main = os.path.join(dest, 'main')
        return main if os.path.isdir(main) else dest
    with open(image_path, 'rb') as f:
        f.seek(main_start)
        stream = f.read()
    if stream.startswith(b'\xfd7zXZ'):
        argv = ['xz', '-dc', '--single-stream']
    else:
        argv = ['zstd', '-dc']
    data = subprocess.run(argv, input=stream, capture_output=True).stdout
    os.makedirs(dest)
    subprocess.run(['cpio', '-idm', '--quiet'], cwd=dest, input=data,
                   check=True)
    return dest


def show_depends(root, module, kver=KVER):
    """modprobe's reading of the binary indexes under root."""
    return run('modprobe', '-d', root, '-S', kver, '--show-depends',
               module).decode()


def resolve_alias(root, alias, kver=KVER):
    return run('modprobe', '-d', root, '-S', kver, '-R', alias
               ).decode().split()
