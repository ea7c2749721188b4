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

"""initramfs.read over images made by GNU cpio and the real compressors.

Expected module lists come from `cpio -it` over the same bytes (and
lsinitramfs from initramfs-tools-core when installed), not from the
reader under test.
"""

import io
import os
import re
import shutil
import subprocess

import pytest

from glance_xen_import.inspect import initramfs

KVER = '6.1.0-13-amd64'
MODULES = ('kernel/drivers/scsi/virtio_scsi.ko',
           'kernel/drivers/scsi/sd_mod.ko.xz',
           'kernel/drivers/virtio/virtio_pci.ko.zst',
           'kernel/drivers/block/xen-blkfront.ko.gz',
           'kernel/drivers/ata/ata_piix.ko')
COMPRESSORS = {
    'gzip': ['gzip', '-n', '-c'],
    'xz': ['xz', '-c', '--check=crc32'],
    'lzma': ['xz', '-c', '--format=lzma'],
    'zstd': ['zstd', '-q', '-c'],
    'lz4': ['lz4', '-l', '-q', '-c'],
    'bzip2': ['bzip2', '-c'],
}


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip('%s is not installed' % tool)


def make_tree(root, modules=MODULES, kver=KVER, generator='initramfs-tools',
              builtin=('kernel/fs/ext4/ext4.ko',)):
    base = os.path.join(root, 'usr/lib/modules', kver)
    for module in modules:
        path = os.path.join(base, module)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(b'\x7fELF' + module.encode())
    with open(os.path.join(base, 'modules.builtin'), 'w') as f:
        f.write(''.join(b + '\n' for b in builtin))
    if generator == 'initramfs-tools':
        os.makedirs(os.path.join(root, 'conf'))
        os.makedirs(os.path.join(root, 'scripts/init-top'))
        with open(os.path.join(root, 'conf/initramfs.conf'), 'w') as f:
            f.write('MODULES=most\n')
    elif generator == 'dracut':
        os.makedirs(os.path.join(root, 'usr/lib/dracut'))
        with open(os.path.join(root, 'usr/lib/dracut/build-parameter.txt'),
                  'w') as f:
            f.write('--kver %s\n' % kver)
    os.symlink('usr/lib', os.path.join(root, 'lib'))
    return root


def cpio(tree, fmt='newc'):
    _need('cpio')
    names = subprocess.run(['find', '.'], cwd=tree, check=True,
                           stdout=subprocess.PIPE).stdout
    return subprocess.run(['cpio', '-o', '-H', fmt, '--quiet'], cwd=tree,
                          input=names, check=True,
                          stdout=subprocess.PIPE).stdout


def compress(data, codec):
    _need(COMPRESSORS[codec][0])
    return subprocess.run(COMPRESSORS[codec], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


def microcode(tmp_path):
    tree = tmp_path / 'early'
    (tree / 'kernel/x86/microcode').mkdir(parents=True)
    (tree / 'kernel/x86/microcode/GenuineIntel.bin').write_bytes(
        os.urandom(3000))
    return cpio(str(tree))


def cpio_names(image, tmp_path):
    """Names cpio -it lists in every segment (uncompressing by tool)."""
    path = tmp_path / 'listed.img'
    path.write_bytes(image)
    _need('lsinitramfs')
    out = subprocess.run(['lsinitramfs', str(path)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.split()


def cpio_list(data):
    """Names GNU cpio -it lists in one uncompressed archive."""
    return subprocess.run(['cpio', '-it', '--quiet'], input=data,
                          check=True, stdout=subprocess.PIPE
                          ).stdout.decode().split()


def modules_of(names):
    found = set()
    for name in names:
        match = re.match(r'^(?:usr/)?lib/modules/[^/]+/.*/([^/]+)\.ko'
                         r'(\.(xz|zst|gz))?$', name)
        if match:
            found.add(match.group(1).replace('-', '_'))
    return found


def read(data, **limits):
    return initramfs.read(io.BytesIO(data), **limits)


# -- formats ------------------------------------------------------------------

@pytest.mark.parametrize('codec', sorted(COMPRESSORS))
def test_microcode_prefix_then_compressed_main(codec, tmp_path):
    main = cpio(make_tree(str(tmp_path / 'main')))
    image = microcode(tmp_path) + compress(main, codec)
    got = read(image)
    assert got.complete, got.reason
    assert got.compressions == ['none', codec]
    assert got.generator == 'initramfs-tools'
    expected = modules_of(cpio_names(image, tmp_path))
    assert expected == {'virtio_scsi', 'sd_mod', 'virtio_pci',
                        'xen_blkfront', 'ata_piix'}
    assert got.modules == expected
    assert got.builtin == {'ext4'}
    assert got.kernel_versions == {KVER}


def test_crc_format_and_dracut_marker(tmp_path):
    main = cpio(make_tree(str(tmp_path / 'main'), generator='dracut'), 'crc')
    assert main[:6] == b'070702'
    got = read(main)
    assert got.complete, got.reason
    assert got.generator == 'dracut'
    assert got.compressions == ['none']
    listed = cpio_list(main)
    assert got.modules == modules_of(listed)
    assert got.entries == len(listed)


def test_zero_padding_between_segments_and_several_compressed(tmp_path):
    first = cpio(make_tree(str(tmp_path / 'a'), modules=MODULES[:2]))
    second = cpio(make_tree(str(tmp_path / 'b'), modules=MODULES[2:],
                            kver='6.1.0-14-amd64', generator=None))
    early = microcode(tmp_path)
    # Pad the plain archive to 512 bytes as dracut's --early-microcode does.
    image = (early + b'\0' * (-len(early) % 512) + compress(first, 'gzip') +
             b'\0' * 7 + compress(second, 'zstd'))
    got = read(image)
    assert got.complete, got.reason
    assert got.compressions == ['none', 'gzip', 'zstd']
    # lsinitramfs does not follow odd zero padding; list each segment.
    assert got.modules == modules_of(cpio_list(first) + cpio_list(second))
    assert got.modules == {'virtio_scsi', 'sd_mod', 'virtio_pci',
                           'xen_blkfront', 'ata_piix'}
    assert got.kernel_versions == {KVER, '6.1.0-14-amd64'}


def test_two_archives_inside_one_compressed_segment(tmp_path):
    first = cpio(make_tree(str(tmp_path / 'a'), modules=MODULES[:1]))
    second = cpio(make_tree(str(tmp_path / 'b'), modules=MODULES[4:],
                            generator=None))
    got = read(compress(first + second, 'xz'))
    assert got.complete, got.reason
    assert got.modules == {'virtio_scsi', 'ata_piix'}


# -- refusals -----------------------------------------------------------------

def test_truncated_compressed_archive(tmp_path):
    image = compress(cpio(make_tree(str(tmp_path / 't'))), 'gzip')
    got = read(image[:len(image) // 2])
    assert not got.complete
    assert got.reason.startswith('gzip stream truncated at offset')


def test_truncated_plain_archive(tmp_path):
    image = cpio(make_tree(str(tmp_path / 't')))
    got = read(image[:200])
    assert not got.complete
    assert got.reason == 'archive ends inside a name' or (
        got.reason.startswith('archive ends inside'))


def test_bad_magic():
    got = read(b'MZ\x90\x00' + b'x' * 100)
    assert not got.complete
    assert got.reason == 'unknown data at offset 0'


def test_damaged_header_field(tmp_path):
    image = bytearray(cpio(make_tree(str(tmp_path / 't'))))
    image[20:22] = b'zz'
    got = read(bytes(image))
    assert got.reason == 'cpio header with a non-hex field at offset 0'


def test_huge_name_size(tmp_path):
    header = b'070701' + b'00000000' * 11 + b'FFFFFFFF' + b'00000000'
    got = read(header + b'a' * 64)
    assert not got.complete
    assert got.reason == 'cpio name of 4294967295 bytes at offset 0'


def test_too_many_entries(tmp_path):
    got = read(cpio(make_tree(str(tmp_path / 't'))), entries=5)
    assert not got.complete
    assert got.reason == 'more than 5 entries'
    assert got.entries == 6


def test_decompression_bomb_stops_at_the_cap(tmp_path):
    # 64 MiB of zeros in one file: a few KiB of xz/zstd.
    tree = tmp_path / 'bomb'
    tree.mkdir()
    with open(tree / 'zeros', 'wb') as f:
        f.truncate(64 * 1024 * 1024)
    data = cpio(str(tree))
    for codec in ('xz', 'zstd', 'gzip'):
        packed = compress(data, codec)
        assert len(packed) < 1024 * 1024
        got = read(packed, unpacked=8 * 1024 * 1024)
        assert not got.complete
        assert got.reason == 'more than 8388608 bytes unpacked'
        # Past the cap by at most one call's output: 64 KiB asked of
        # zlib/lzma, 8 MiB for a 256-byte zstd slice of RLE blocks.
        overshoot = got.unpacked - 8 * 1024 * 1024
        assert 0 < overshoot <= (8 * 1024 * 1024 if codec == 'zstd' else
                                 64 * 1024)


def test_empty_image():
    got = read(b'\0' * 4096)
    assert not got.complete
    assert got.reason == 'empty image'


def test_unaligned_plain_archive(tmp_path):
    got = read(b'\0\0' + cpio(make_tree(str(tmp_path / 't'))))
    assert got.reason == 'cpio archive at unaligned offset 2'


# -- a real Debian initramfs --------------------------------------------------

def test_module_name_normalisation():
    assert initramfs.module_name('a/b/xen-blkfront.ko.xz') == 'xen_blkfront'
    assert initramfs.parse_builtin(
        'kernel/drivers/ata/libata.ko\nkernel/fs/ext4/ext4.ko\n') == {
            'libata', 'ext4'}
