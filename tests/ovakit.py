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

"""Make converter test inputs: RAW disks, VHDs, OVF descriptors and OVAs.

Inputs come from tools nobody on the project wrote (sfdisk, mkfs.ext4 -d,
qemu-img, qemu-io, Python's tarfile/gzip/hashlib). Where a XenServer producer
cannot be run here, this module edits their output in documented ways: it
rewrites the VHD footer creator (XAPI's ``caml``, blktap's ``tap``, DiscUtils'
``dutl``), moves the BAT, adds a blktap batmap or reorders blocks. Every VHD
it writes can be read back with libvhdi (``pyvhdi_equal``) to show the edit
kept the disk's content.

Nothing here imports the product: the kit is shared by the unit tests, the
functional tests and the benchmark. Sizes are in bytes throughout.
"""

import bz2
import collections
import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import uuid

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SECTOR = 512
VHD_BLOCK = 2 * MiB

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'fixtures')
SAMPLE_OVF = os.path.join(FIXTURES, 'xenadmin-sample_app.ovf')

NS = {
    'ovf': 'http://schemas.dmtf.org/ovf/envelope/1',
    'xenovf': 'http://schemas.citrix.com/ovf/envelope/1',
    'rasd': ('http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
             'CIM_ResourceAllocationSettingData'),
    'vssd': ('http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
             'CIM_VirtualSystemSettingData'),
}
VHD_FORMAT_URI = ('http://www.microsoft.com/technet/virtualserver/'
                  'downloads/vhdspec.mspx')


# --------------------------------------------------------------------------
# External tools

def missing_tools(*names):
    """Return the names in ``names`` that are not on PATH."""
    return [name for name in names if shutil.which(name) is None]


def require_tools(*names):
    """In a test: skip it, saying why, when a tool is not installed."""
    missing = missing_tools(*names)
    if missing:
        import pytest
        pytest.skip('needs %s (installed by .ci/run APT_PACKAGES)'
                    % ', '.join(missing))


def cli_convert(ova, dest, *extra):
    """``glance-xen-import convert OVA DEST --json``; the report it prints."""
    proc = subprocess.run(
        [sys.executable, '-m', 'glance_xen_import.cmd.main', 'convert', ova,
         dest, '--json'] + list(extra), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    return json.loads(proc.stdout)


def run(*args, **kwargs):
    """Run a command, raising with its stderr if it fails."""
    proc = subprocess.run([str(a) for a in args], capture_output=True,
                          **kwargs)
    if proc.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (
            ' '.join(str(a) for a in args), proc.returncode,
            proc.stderr.decode(errors='replace').strip()))
    return proc.stdout


# --------------------------------------------------------------------------
# RAW disks with real content

RawDisk = collections.namedtuple(
    'RawDisk', 'path size table part_offset part_size tail_offset')

TAIL_MARKER = b'GXI-TAIL' * 512   # 4 KiB that must survive at the disk end


def _fill_tree(root, seed, data_bytes):
    """Write files of random and of zero content under ``root``."""
    rnd = random.Random(seed)
    os.makedirs(os.path.join(root, 'etc'), exist_ok=True)
    with open(os.path.join(root, 'etc', 'hostname'), 'w') as f:
        f.write('ovakit-%d\n' % seed)
    sizes = [7 * KiB, 300 * KiB, data_bytes // 2, data_bytes // 4]
    for i, size in enumerate(sizes):
        with open(os.path.join(root, 'data%d.bin' % i), 'wb') as f:
            f.write(rnd.randbytes(size))
    # A sparse file: mkfs.ext4 -d keeps the hole unallocated.
    with open(os.path.join(root, 'sparse.bin'), 'wb') as f:
        f.truncate(512 * KiB)
        f.seek(256 * KiB)
        f.write(b'middle')


def make_fs_image(path, size, seed=0, data_bytes=1 * MiB):
    """Make an ext4 filesystem image of ``size`` bytes with test files."""
    with tempfile.TemporaryDirectory() as root:
        _fill_tree(root, seed, data_bytes)
        run('mkfs.ext4', '-F', '-q', '-d', root, '-L', 'ovakit',
            '-U', str(uuid.UUID(int=seed + 1)), path, str(size // KiB) + 'k')
    return path


def copy_sparse(src, dst_fd, offset, chunk=64 * KiB):
    """Copy file ``src`` into ``dst_fd`` at ``offset``; skip zero chunks."""
    for pos, data in _nonzero_data(src, chunk):
        os.pwrite(dst_fd, data, offset + pos)


def make_raw_disk(path, size=16 * MiB, table='gpt', fs_size=None, seed=0,
                  tail_marker=True, data_bytes=1 * MiB):
    """Make a sparse RAW disk: partition table, ext4 partition, zeros.

    The partition starts at 1 MiB and holds an ext4 filesystem made with
    ``mkfs.ext4 -d``; the space after it stays zero (holes), so a VHD made
    from the disk has both allocated and unallocated blocks. With
    ``tail_marker`` the last 4 KiB carry ``TAIL_MARKER`` (for an MBR disk; a
    GPT disk has its backup header there anyway, and the marker goes just
    before it): a reader that cuts the end of the disk loses it.
    """
    if size % SECTOR:
        raise ValueError('size must be a multiple of 512')
    part_offset = 1 * MiB
    if fs_size is None:
        fs_size = min(6 * MiB, size - 2 * MiB - 64 * KiB)
    fs_size -= fs_size % (4 * KiB)
    with open(path, 'wb') as f:
        f.truncate(size)
    if table == 'gpt':
        script = ('label: gpt\nfirst-lba: 34\n'
                  'start=2048, size=%d, type=L, name="root"\n'
                  % (fs_size // SECTOR))
    elif table == 'mbr':
        script = ('label: dos\nlabel-id: 0x%08x\n'
                  'start=2048, size=%d, type=83, bootable\n'
                  % (0x1000 + seed, fs_size // SECTOR))
    else:
        raise ValueError(table)
    run('sfdisk', '--no-reread', '--no-tell-kernel', '-q', path,
        input=script.encode())
    with tempfile.TemporaryDirectory() as tmp:
        fs = make_fs_image(os.path.join(tmp, 'fs.img'), fs_size, seed,
                           data_bytes)
        fd = os.open(path, os.O_WRONLY)
        try:
            copy_sparse(fs, fd, part_offset)
            tail_offset = None
            if tail_marker:
                # GPT keeps its backup header in the last 33 sectors.
                reserve = 33 * SECTOR if table == 'gpt' else 0
                tail_offset = (size - reserve - len(TAIL_MARKER)) & ~511
                os.pwrite(fd, TAIL_MARKER, tail_offset)
        finally:
            os.close(fd)
    return RawDisk(path, size, table, part_offset, fs_size, tail_offset)


def make_pattern_raw(path, size, extents, seed=0):
    """Make a sparse RAW of ``size`` with random bytes at (offset, length)."""
    rnd = random.Random(seed)
    with open(path, 'wb') as f:
        f.truncate(size)
        for offset, length in extents:
            f.seek(offset)
            f.write(rnd.randbytes(length))
    return path


# --------------------------------------------------------------------------
# VHD structures (big-endian, VHD spec v1.0)

FOOTER_FIELDS = {
    'cookie': (0, '8s'), 'features': (8, '>I'), 'version': (12, '>I'),
    'data_offset': (16, '>Q'), 'timestamp': (24, '>I'),
    'creator': (28, '4s'), 'creator_version': (32, '>I'),
    'creator_os': (36, '>I'), 'original_size': (40, '>Q'),
    'current_size': (48, '>Q'), 'cylinders': (56, '>H'), 'heads': (58, 'B'),
    'sectors': (59, 'B'), 'disk_type': (60, '>I'), 'checksum': (64, '>I'),
    'uuid': (68, '16s'), 'saved_state': (84, 'B'), 'hidden': (85, 'B'),
}
HEADER_FIELDS = {
    'cookie': (0, '8s'), 'data_offset': (8, '>Q'),
    'table_offset': (16, '>Q'), 'version': (24, '>I'),
    'max_table_entries': (28, '>I'), 'block_size': (32, '>I'),
    'checksum': (36, '>I'), 'parent_uuid': (40, '16s'),
    'parent_timestamp': (56, '>I'), 'parent_name': (64, '512s'),
}
LOCATOR_OFFSET = 576   # eight 24-byte parent locator entries in the header

DISK_FIXED = 2
DISK_DYNAMIC = 3
DISK_DIFFERENCING = 4

# Footer identities of XenServer-family producers (research notes, 1.1/3).
XEN_CREATORS = {
    'caml': dict(creator=b'caml', creator_version=0x00000001, creator_os=0,
                 timestamp=0),
    'tap': dict(creator=b'tap\0', creator_version=0x00010003, creator_os=0),
    'dutl': dict(creator=b'dutl', creator_version=0x00060001,
                 creator_os=0x5769326B),
}


def get_field(buf, fields, name):
    offset, fmt = fields[name]
    return struct.unpack_from(fmt, buf, offset)[0]


def set_field(buf, fields, name, value):
    offset, fmt = fields[name]
    struct.pack_into(fmt, buf, offset, value)


def vhd_checksum(buf, field_offset):
    """One's complement of the byte sum, the checksum field counted as 0."""
    total = sum(buf) - sum(buf[field_offset:field_offset + 4])
    return ~total & 0xFFFFFFFF


def seal_footer(buf):
    set_field(buf, FOOTER_FIELDS, 'checksum', vhd_checksum(buf, 64))
    return buf


def seal_header(buf):
    set_field(buf, HEADER_FIELDS, 'checksum', vhd_checksum(buf, 36))
    return buf


def chs_geometry(current_size):
    """CHS geometry for ``current_size`` (VHD spec appendix algorithm)."""
    total = current_size // SECTOR
    total = min(total, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def chs_bytes(current_size):
    c, h, s = chs_geometry(current_size)
    return c * h * s * SECTOR


def read_footer(path):
    """Return the trailing 512-byte footer of ``path`` as a bytearray."""
    with open(path, 'rb') as f:
        f.seek(-SECTOR, os.SEEK_END)
        return bytearray(f.read(SECTOR))


def footer_info(path):
    """Return the footer fields of ``path`` as a dict."""
    buf = read_footer(path)
    return {name: get_field(buf, FOOTER_FIELDS, name)
            for name in FOOTER_FIELDS}


def edit_footer(path, where='both', seal=True, **fields):
    """Set footer fields in place; ``where`` is 'both', 'tail' or 'copy'.

    The copy at offset 0 exists for dynamic and differencing disks only.
    """
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        places = []
        if where in ('both', 'tail'):
            places.append(size - SECTOR)
        f.seek(0)
        if where in ('both', 'copy') and f.read(8) == b'conectix':
            places.append(0)
        for offset in places:
            f.seek(offset)
            buf = bytearray(f.read(SECTOR))
            for name, value in fields.items():
                set_field(buf, FOOTER_FIELDS, name, value)
            if seal:
                seal_footer(buf)
            f.seek(offset)
            f.write(buf)


def set_creator(path, creator='caml', geometry=True):
    """Make a VHD look like it came from a XenServer-family producer.

    ``creator`` is a key of ``XEN_CREATORS``. The CHS geometry is recomputed
    from current_size with the spec's algorithm, as those producers do, so a
    size that is not a CHS multiple keeps a geometry that is short of it.
    """
    fields = dict(XEN_CREATORS[creator])
    if geometry:
        current = footer_info(path)['current_size']
        fields['cylinders'], fields['heads'], fields['sectors'] = (
            chs_geometry(current))
    edit_footer(path, **fields)


# --------------------------------------------------------------------------
# VHDs made by qemu

def qemu_vhd(raw, vhd, subformat='dynamic', force_size=True):
    """``qemu-img convert -O vpc`` (force_size=on: creator qem2, exact size).

    Without force_size qemu rounds the size up to a CHS multiple and writes
    creator ``qemu``.
    """
    opts = 'subformat=%s' % subformat
    if force_size:
        opts += ',force_size=on'
    run('qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'vpc', '-o', opts,
        raw, vhd)
    return vhd


def _nonzero_data(path, chunk):
    """Yield (offset, bytes) of the chunks of ``path`` that are not zero."""
    with open(path, 'rb') as f:
        offset = 0
        while True:
            data = f.read(chunk)
            if not data:
                return
            if data.count(0) != len(data):
                yield offset, data
            offset += len(data)


def nonzero_chunks(path, chunk=1 * MiB):
    """Yield (offset, length) of the chunks of ``path`` that are not zero."""
    for offset, data in _nonzero_data(path, chunk):
        yield offset, len(data)


def qemu_vhd_reverse(raw, vhd, chunk=1 * MiB):
    """Write ``raw`` into a new dynamic VHD with qemu-io, last chunk first.

    qemu appends a block when it is first written, so the file holds the
    blocks in descending virtual order, as a XenServer SR file may.
    """
    size = os.path.getsize(raw)
    run('qemu-img', 'create', '-q', '-f', 'vpc', '-o',
        'subformat=dynamic,force_size=on', vhd, str(size))
    chunks = list(nonzero_chunks(raw, chunk))
    with tempfile.TemporaryDirectory() as tmp, open(raw, 'rb') as f:
        commands = []
        for i, (offset, length) in enumerate(reversed(chunks)):
            name = os.path.join(tmp, 'c%d' % i)
            f.seek(offset)
            with open(name, 'wb') as out:
                out.write(f.read(length))
            commands += ['-c', 'write -q -s %s %d %d' % (name, offset, length)]
        if commands:
            run('qemu-io', '-f', 'vpc', *commands, vhd)
    return vhd


def qemu_to_raw(vhd, raw, size_calc=None):
    """``qemu-img convert -f vpc -O raw`` (optionally forcing the size)."""
    if size_calc:
        run('qemu-img', 'convert', '-q', '--image-opts',
            'driver=vpc,force_size_calc=%s,file.filename=%s'
            % (size_calc, vhd), '-O', 'raw', raw)
    else:
        run('qemu-img', 'convert', '-q', '-f', 'vpc', '-O', 'raw', vhd, raw)
    return raw


def qemu_virtual_size(vhd):
    """The virtual size qemu-img gives a VHD (by its creator rules)."""
    out = run('qemu-img', 'info', '--output=json', '-f', 'vpc', vhd)
    return json.loads(out)['virtual-size']


# --------------------------------------------------------------------------
# Dynamic VHD relayout: the same disk with another producer's layout

@dataclasses.dataclass
class DynamicVhd:
    """A dynamic VHD held in memory: footer, header and its data blocks."""

    footer: bytearray
    header: bytearray
    blocks: dict          # virtual block index -> bitmap + data bytes

    @property
    def block_size(self):
        return get_field(self.header, HEADER_FIELDS, 'block_size')

    @property
    def max_table_entries(self):
        return get_field(self.header, HEADER_FIELDS, 'max_table_entries')

    @property
    def bitmap_size(self):
        return _bitmap_size(self.block_size)

    @classmethod
    def load(cls, path):
        with open(path, 'rb') as f:
            return cls.load_bytes(f.read())

    @classmethod
    def load_bytes(cls, data):
        footer = bytearray(data[-SECTOR:])
        data_offset = get_field(footer, FOOTER_FIELDS, 'data_offset')
        header = bytearray(data[data_offset:data_offset + 1024])
        table = get_field(header, HEADER_FIELDS, 'table_offset')
        mte = get_field(header, HEADER_FIELDS, 'max_table_entries')
        bsize = get_field(header, HEADER_FIELDS, 'block_size')
        span = _bitmap_size(bsize) + bsize
        bat = struct.unpack_from('>%dI' % mte, data, table)
        blocks = {}
        for index, entry in enumerate(bat):
            if entry != 0xFFFFFFFF:
                start = entry * SECTOR
                blocks[index] = data[start:start + span]
        disk = cls(footer, header, blocks)
        disk.bat = list(bat)
        return disk

    def reblock(self, block_size):
        """The same disk in blocks of ``block_size`` (a power of two).

        All-zero blocks are left unallocated; bitmaps are all ones, as qemu
        and XAPI write them.
        """
        old = self.block_size
        size = get_field(self.footer, FOOTER_FIELDS, 'current_size')
        mte = -(-size // block_size)
        bitmap = b'\xff' * _bitmap_size(block_size)
        blocks = {}
        for index in range(mte):
            start = index * block_size
            piece = bytearray(block_size)
            pos = start
            while pos < start + block_size:
                src = self.blocks.get(pos // old)
                within = pos % old
                n = min(old - within, start + block_size - pos)
                if src is not None:
                    body = src[self.bitmap_size:]
                    piece[pos - start:pos - start + n] = body[within:
                                                              within + n]
                pos += n
            if piece.count(0) != len(piece):
                blocks[index] = bitmap + bytes(piece)
        header = bytearray(self.header)
        set_field(header, HEADER_FIELDS, 'block_size', block_size)
        set_field(header, HEADER_FIELDS, 'max_table_entries', mte)
        return DynamicVhd(bytearray(self.footer), header, blocks)

    def write(self, path, order='ascending', table_offset=1536,
              max_table_entries=None, batmap=False, batmap_encrypted=False,
              align_data=False, gap_after_bat=0, seed=0):
        """Write the disk with the given layout; return the BAT written.

        order: 'ascending', 'descending', 'shuffle' or a list of block
        indexes (file order). table_offset 2048 is XAPI's (``caml``) layout;
        batmap adds blktap's ``tdbatmap`` header and map after the BAT;
        align_data puts each block's data on a 4 KiB boundary as tapdisk
        does; gap_after_bat leaves zero bytes after the BAT (room for parent
        locators). max_table_entries may exceed what the size needs, as
        ``vhd-util create -S`` does.
        """
        header = bytearray(self.header)
        mte = max_table_entries or self.max_table_entries
        set_field(header, HEADER_FIELDS, 'max_table_entries', mte)
        set_field(header, HEADER_FIELDS, 'table_offset', table_offset)
        indexes = sorted(self.blocks)
        if order == 'ascending':
            pass
        elif order == 'descending':
            indexes.reverse()
        elif order == 'shuffle':
            random.Random(seed).shuffle(indexes)
        else:
            indexes = list(order)
        bat_bytes = _round_up(4 * mte, SECTOR)
        pos = table_offset + bat_bytes
        batmap_at = None
        if batmap:
            batmap_at = pos
            map_bytes = _round_up((mte + 7) // 8, SECTOR)
            pos += SECTOR + map_bytes
        self.gap_offset = pos
        pos += _round_up(gap_after_bat, SECTOR)
        bat = [0xFFFFFFFF] * mte
        placed = []
        for index in indexes:
            if align_data:
                pos = _round_up(pos + self.bitmap_size, 4 * KiB) - (
                    self.bitmap_size)
            bat[index] = pos // SECTOR
            placed.append((pos, self.blocks[index]))
            pos += len(self.blocks[index])
        seal_header(header)
        footer = bytearray(self.footer)
        seal_footer(footer)
        with open(path, 'wb') as f:
            f.write(footer)
            f.seek(get_field(footer, FOOTER_FIELDS, 'data_offset'))
            f.write(header)
            f.seek(table_offset)
            f.write(struct.pack('>%dI' % mte, *bat))
            if batmap:
                f.seek(batmap_at)
                f.write(_batmap(mte, self.blocks, batmap_at + SECTOR,
                                batmap_encrypted))
            for offset, block in placed:
                f.seek(offset)
                f.write(block)
            f.seek(pos)
            f.write(footer)
        return bat


def _round_up(value, unit):
    return (value + unit - 1) // unit * unit


def _bitmap_size(block_size):
    return _round_up(block_size // SECTOR // 8, SECTOR)


def _batmap(mte, blocks, map_offset, encrypted):
    """blktap's batmap header (512 B) and map; bit i = block i is full."""
    bits = bytearray(_round_up((mte + 7) // 8, SECTOR))
    for index in blocks:
        bits[index // 8] |= 0x80 >> (index % 8)
    used = bits[:(mte + 7) // 8]
    hdr = bytearray(SECTOR)
    struct.pack_into('>8sQII', hdr, 0, b'tdbatmap', map_offset,
                     len(bits) // SECTOR, 0x00010002)
    struct.pack_into('>I', hdr, 24, ~sum(used) & 0xFFFFFFFF)
    if encrypted:
        # struct vhd_keyhash at 29: cookie 1 = the data is encrypted.
        hdr[29] = 1
        hdr[30:62] = b'N' * 32
        hdr[62:94] = hashlib.sha256(b'N' * 32 + b'key').digest()
    return bytes(hdr) + bytes(bits)


def xen_vhd(raw, vhd, creator='caml', subformat='dynamic', order=None):
    """A VHD of ``raw`` as a XenServer-family producer would lay it out.

    qemu-img makes it with force_size=on (exact current_size), then:
    'caml' (XAPI export): BAT at 2048, blocks ascending;
    'tap' (blktap SR file): batmap after the BAT, 4 KiB-aligned data,
    blocks in ``order`` (default 'shuffle');
    'dutl' (DiscUtils, old XenCenter): qemu's layout, ascending.
    In every case the footer gets the producer's creator and the spec CHS.
    """
    if subformat == 'fixed':
        qemu_vhd(raw, vhd, 'fixed', force_size=True)
    else:
        tmp = vhd + '.qemu'
        qemu_vhd(raw, tmp, 'dynamic', force_size=True)
        disk = DynamicVhd.load(tmp)
        os.unlink(tmp)
        if creator == 'caml':
            disk.write(vhd, order=order or 'ascending', table_offset=2048)
        elif creator == 'tap':
            disk.write(vhd, order=order or 'shuffle', batmap=True,
                       align_data=True)
        else:
            disk.write(vhd, order=order or 'ascending')
    set_creator(vhd, creator)
    return vhd


def make_differencing(src_vhd, dst_vhd, parent_path):
    """Turn a dynamic VHD into a differencing one naming ``parent_path``.

    Parent locators: W2ku (absolute, UTF-16LE), W2ru (relative) and MacX
    (file:// URL, UTF-8), placed after the BAT. A reader must refuse the disk
    without opening any of them.
    """
    disk = DynamicVhd.load(src_vhd)
    set_field(disk.footer, FOOTER_FIELDS, 'disk_type', DISK_DIFFERENCING)
    name = os.path.basename(parent_path)
    set_field(disk.header, HEADER_FIELDS, 'parent_uuid', uuid.uuid4().bytes)
    set_field(disk.header, HEADER_FIELDS, 'parent_name',
              name.encode('utf-16-be'))
    payloads = [
        (b'W2ku', parent_path.encode('utf-16-le')),
        (b'W2ru', ('.\\' + name).encode('utf-16-le')),
        (b'MacX', ('file://' + parent_path).encode()),
    ]
    # First pass finds where the gap after the BAT lands.
    disk.write(dst_vhd, gap_after_bat=len(payloads) * SECTOR)
    gap = disk.gap_offset
    for i, (code, data) in enumerate(payloads):
        struct.pack_into('>4sIIIQ', disk.header,
                         LOCATOR_OFFSET + 24 * i, code, SECTOR, len(data), 0,
                         gap + i * SECTOR)
    disk.write(dst_vhd, gap_after_bat=len(payloads) * SECTOR)
    with open(dst_vhd, 'r+b') as f:
        for i, (code, data) in enumerate(payloads):
            f.seek(gap + i * SECTOR)
            f.write(data)
    return dst_vhd


# --------------------------------------------------------------------------
# Independent readers and output checks

def _pyvhdi():
    """libvhdi's Python binding; in a test, skip when it is missing."""
    try:
        import pyvhdi
    except ImportError:
        import sys
        if 'pytest' in sys.modules:
            import pytest
            pytest.skip('needs libvhdi-python (test-requirements.txt)')
        raise
    return pyvhdi


def pyvhdi_size(vhd):
    f = _pyvhdi().file()
    f.open(vhd)
    try:
        return f.media_size
    finally:
        f.close()


def pyvhdi_first_difference(vhd, raw, chunk=1 * MiB):
    """Compare ``raw`` with libvhdi's reading of ``vhd``.

    Returns None when the lengths and every byte agree, else a string
    naming the first difference.
    """
    f = _pyvhdi().file()
    f.open(vhd)
    try:
        size = f.media_size
        raw_size = os.path.getsize(raw)
        if raw_size != size:
            return 'length %d, libvhdi says %d' % (raw_size, size)
        with open(raw, 'rb') as r:
            offset = 0
            while offset < size:
                want = f.read_buffer_at_offset(min(chunk, size - offset),
                                               offset)
                got = r.read(len(want))
                if got != want:
                    at = next(i for i in range(len(want))
                              if got[i:i + 1] != want[i:i + 1])
                    return 'byte %d differs' % (offset + at)
                offset += len(want)
    finally:
        f.close()
    return None


def first_difference(a, b, chunk=1 * MiB):
    """None if files ``a`` and ``b`` are equal, else where they differ."""
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    if sa != sb:
        return 'length %d != %d' % (sa, sb)
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        offset = 0
        while True:
            da, db = fa.read(chunk), fb.read(chunk)
            if not da:
                return None
            if da != db:
                at = next(i for i in range(len(da)) if da[i] != db[i])
                return 'byte %d differs' % (offset + at)
            offset += len(da)


def data_extents(path):
    """(start, end) of the ranges lseek(SEEK_DATA/SEEK_HOLE) says hold data."""
    extents = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return extents


def zero_pages_in_data(path, page=4 * KiB):
    """Offsets of all-zero pages that are stored as data, not as holes."""
    found = []
    with open(path, 'rb') as f:
        for start, end in data_extents(path):
            f.seek(start)
            pos = start
            while pos < end:
                data = f.read(min(page, end - pos))
                if len(data) == page and data.count(0) == page:
                    found.append(pos)
                pos += len(data)
    return found


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


def sparse_first_difference(a, b, chunk=1 * MiB):
    """Like first_difference, but reads only where either file has data.

    Ranges that are holes in both files are zero in both, so a 1 GiB
    sparse disk compares in the time its data takes.
    """
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    if sa != sb:
        return 'length %d != %d' % (sa, sb)
    ranges = sorted(data_extents(a) + data_extents(b))
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        done = 0
        for start, end in ranges:
            start = max(start, done)
            while start < end:
                n = min(chunk, end - start)
                fa.seek(start)
                fb.seek(start)
                da, db = fa.read(n), fb.read(n)
                if da != db:
                    at = next(i for i in range(len(da)) if da[i] != db[i])
                    return 'byte %d differs' % (start + at)
                start += n
            done = max(done, end)
    return None


def nonzero_pages(path, page=4 * KiB):
    """How many ``page``-sized pages of ``path`` hold a non-zero byte."""
    count = 0
    with open(path, 'rb') as f:
        for start, end in data_extents(path):
            f.seek(start)
            pos = start
            while pos < end:
                data = f.read(min(page, end - pos))
                if data.count(0) != len(data):
                    count += 1
                pos += len(data)
    return count


class FileSink(object):
    """A decoder sink writing with plain os.pwrite (no hole logic).

    Records every (offset, length) written, so tests can check what a
    decoder wrote and when.
    """

    def __init__(self, path):
        self.path = path
        self.writes = []
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write_at(self, offset, data):
        data = bytes(data)
        self.writes.append((offset, len(data)))
        os.pwrite(self._fd, data, offset)

    def close(self, size=None):
        if size is not None:
            os.ftruncate(self._fd, size)
        os.close(self._fd)


# --------------------------------------------------------------------------
# Streams

class SequentialReader(object):
    """A file object with ``read`` only: no seek, tell or fileno."""

    def __init__(self, data_or_file, max_chunk=None):
        if isinstance(data_or_file, (bytes, bytearray)):
            data_or_file = io.BytesIO(bytes(data_or_file))
        self._f = data_or_file
        self._max_chunk = max_chunk
        self.bytes_read = 0

    def read(self, n=-1):
        if self._max_chunk and (n is None or n < 0 or n > self._max_chunk):
            n = self._max_chunk
        data = self._f.read(n)
        self.bytes_read += len(data)
        return data

    def readable(self):
        return True


# --------------------------------------------------------------------------
# OVF descriptors, based on the real XenCenter sample

@dataclasses.dataclass
class OvaDisk:
    """One disk of an OVA: the VHD file and how the OVF describes it."""

    path: str
    capacity: int = None          # bytes; default: the VHD's current_size
    boot: bool = True
    address: int = 0              # rasd:AddressOnParent
    href: str = None              # default '<uuid>.vhd' (+ '.gz')
    disk_id: str = None
    compression: str = None       # e.g. 'Gzip': the member is gzipped
    chunk_size: int = None        # ovf:chunkSize: split into href.%09d
    resource_type: int = 19
    capacity_units: str = None    # e.g. 'byte * 2^20'
    format_uri: str = VHD_FORMAT_URI
    file_size: int = None         # ovf:size; XenCenter puts the SR usage

    def __post_init__(self):
        if self.disk_id is None:
            self.disk_id = str(uuid.uuid5(uuid.NAMESPACE_URL, self.path))
        if self.href is None:
            self.href = str(uuid.uuid5(uuid.NAMESPACE_DNS, self.path))
            self.href += {None: '.vhd', 'bzip2': '.vhd.bz2'}.get(
                self.compression and self.compression.lower(), '.vhd.gz')
        if self.capacity is None:
            self.capacity = footer_info(self.path)['current_size']
        if self.file_size is None:
            self.file_size = os.path.getsize(self.path)


def _sample_text():
    with open(SAMPLE_OVF, 'rb') as f:
        return f.read().decode('utf-8')


def _capacity_attrs(disk):
    if disk.capacity_units:
        scale = _unit_scale(disk.capacity_units)
        if disk.capacity % scale:
            raise ValueError('capacity not a multiple of the unit')
        return 'ovf:capacity="%d" ovf:capacityAllocationUnits="%s"' % (
            disk.capacity // scale, disk.capacity_units)
    return 'ovf:capacity="%d"' % disk.capacity


def _unit_scale(units):
    m = re.fullmatch(r'byte\s*\*\s*(\d+)\^(\d+)', units.strip())
    return int(m.group(1)) ** int(m.group(2)) if m else 1


def _disk_item(disk):
    return (
        '<ovf:Item>'
        '<rasd:AddressOnParent>%(addr)d</rasd:AddressOnParent>'
        '<rasd:AllocationUnits>Disk</rasd:AllocationUnits>'
        '<rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>'
        '<rasd:Caption>Hard Disk Image</rasd:Caption>'
        '<rasd:Connection>%(id)s,device=%(addr)d</rasd:Connection>'
        '<rasd:ConsumerVisibility>3</rasd:ConsumerVisibility>'
        '<rasd:Description>Hard Disk Image</rasd:Description>'
        '<rasd:ElementName>Hard Disk Image</rasd:ElementName>'
        '<rasd:HostResource>ovf:/disk/%(id)s</rasd:HostResource>'
        '<rasd:InstanceID>%(id)s</rasd:InstanceID>'
        '<rasd:Limit>1</rasd:Limit>'
        '<rasd:MappingBehavior>0</rasd:MappingBehavior>'
        '<rasd:ResourceSubType>Virtual Hard Disk Image</rasd:ResourceSubType>'
        '<rasd:ResourceType>%(rt)d</rasd:ResourceType>'
        '<rasd:VirtualQuantity>1</rasd:VirtualQuantity>'
        '<rasd:Weight>100</rasd:Weight>'
        '</ovf:Item>' % dict(addr=disk.address, id=disk.disk_id,
                             rt=disk.resource_type))


def _file_element(disk):
    extra = ''
    if disk.compression:
        extra += ' ovf:compression="%s"' % disk.compression
    if disk.chunk_size:
        extra += ' ovf:chunkSize="%d"' % disk.chunk_size
    return '<ovf:File ovf:id="%s" ovf:href="%s" ovf:size="%d"%s />' % (
        disk.disk_id, disk.href, disk.file_size, extra)


def _disk_element(disk):
    return ('<ovf:Disk xenovf:isBootable="%s" ovf:diskId="%s" '
            'ovf:fileRef="%s" %s ovf:format="%s" />' % (
                'true' if disk.boot else 'false', disk.disk_id, disk.disk_id,
                _capacity_attrs(disk), disk.format_uri))


def _replace_once(pattern, repl, text):
    new, count = re.subn(pattern, lambda m: repl, text, count=1,
                         flags=re.S)
    if count != 1:
        raise ValueError('sample OVF has no %s' % pattern)
    return new


def ovf_descriptor(disks, name='Web server', collection=False, vm_count=1,
                   system_type='hvm-3.0-unknown', os_id='0',
                   os_description='XenOVF Created Export', prefixes=None,
                   declaration='<?xml version="1.0" encoding="utf-16"?>',
                   extra_envelope='', doctype=''):
    """Build a XenCenter OVF (bytes) from the real sample descriptor.

    The sample's References, DiskSection and disk Item are replaced by
    ``disks``; name, VirtualSystemType and the OS section are set. With
    ``collection`` the VirtualSystem(s) sit in a VirtualSystemCollection as
    current XenCenter writes them; ``vm_count`` > 1 adds VMs with no disk.
    ``prefixes`` maps 'ovf', 'rasd', 'vssd', 'xenovf' to other prefixes
    (or '' for 'ovf' to make it the default namespace). The bytes are UTF-8
    under XenCenter's ``encoding="utf-16"`` declaration.
    """
    text = _sample_text().replace('\r\n', '\n').strip()
    text = re.sub(r'^<\?xml[^>]*\?>', '', text)
    text = _replace_once(r'<ovf:References>.*?</ovf:References>',
                         '<ovf:References>%s</ovf:References>'
                         % ''.join(_file_element(d) for d in disks), text)
    text = _replace_once(
        r'<ovf:DiskSection>.*?</ovf:DiskSection>',
        '<ovf:DiskSection><ovf:Info>Available Disks</ovf:Info>%s'
        '</ovf:DiskSection>' % ''.join(_disk_element(d) for d in disks),
        text)
    text = _replace_once(
        r'<ovf:Item>(?:(?!</ovf:Item>).)*<rasd:ResourceType>19'
        r'</rasd:ResourceType>.*?</ovf:Item>',
        ''.join(_disk_item(d) for d in disks), text)
    text = text.replace('Web server', _xml_escape(name))
    text = _replace_once(
        r'<vssd:VirtualSystemType>.*?</vssd:VirtualSystemType>',
        '<vssd:VirtualSystemType>%s</vssd:VirtualSystemType>' % system_type,
        text)
    text = _replace_once(
        r'<ovf:OperatingSystemSection ovf:id="0">.*?'
        r'</ovf:OperatingSystemSection>',
        '<ovf:OperatingSystemSection ovf:id="%s"><ovf:Info>Guest Operating '
        'System</ovf:Info><ovf:Description>%s</ovf:Description>'
        '</ovf:OperatingSystemSection>' % (os_id,
                                           _xml_escape(os_description)),
        text)
    if collection or vm_count > 1:
        m = re.search(r'<ovf:VirtualSystem .*</ovf:VirtualSystem>', text,
                      re.S)
        vs = m.group(0)
        others = ''.join(_diskless_vm(vs, i) for i in range(1, vm_count))
        wrapped = ('<ovf:VirtualSystemCollection ovf:id="%s"><ovf:Info>'
                   'OVF/OVA Packages</ovf:Info>%s%s'
                   '</ovf:VirtualSystemCollection>'
                   % (uuid.uuid4(), vs, others))
        text = text[:m.start()] + wrapped + text[m.end():]
    if extra_envelope:
        text = text.replace('</ovf:Envelope>',
                            extra_envelope + '</ovf:Envelope>')
    if prefixes:
        text = rename_prefixes(text, prefixes)
    return (declaration + doctype + text).encode('utf-8')


def _diskless_vm(vs, i):
    vs = re.sub(r'<ovf:Item>(?:(?!</ovf:Item>).)*<rasd:HostResource>'
                r'.*?</ovf:Item>', '', vs, flags=re.S)
    vs = re.sub(r'ovf:id="[0-9a-f-]+"', 'ovf:id="%s"' % uuid.uuid4(), vs,
                count=1)
    return vs.replace('<ovf:Name>', '<ovf:Name>other-%d ' % i, 1)


def _xml_escape(text):
    return (text.replace('&', '&amp;').replace('<', '&lt;')
            .replace('>', '&gt;').replace('"', '&quot;'))


def rename_prefixes(text, prefixes):
    """Rename namespace prefixes (tags, attributes, xmlns); same URIs.

    'ovf:/disk/...' in HostResource is a URI, not a prefix, and is kept.
    """
    for old, new in prefixes.items():
        if new == '':
            # Default namespace: elements lose the prefix, attributes keep
            # a prefix bound to the same URI (unprefixed attributes have no
            # namespace in XML).
            text = re.sub(r'(</?)%s:' % old, r'\1', text)
            text = text.replace('xmlns:%s=' % old,
                                'xmlns="%s" xmlns:%sa=' % (NS[old], old))
            text = re.sub(r'(\s)%s:(\w+=)' % old, r'\1%sa:\2' % old, text)
        else:
            text = re.sub(r'(</?)%s:' % old, r'\1%s:' % new, text)
            text = re.sub(r'(\s)%s:(\w+=)' % old, r'\1%s:\2' % new, text)
            text = text.replace('xmlns:%s=' % old, 'xmlns:%s=' % new)
    return text


# --------------------------------------------------------------------------
# Manifests and OVAs

def manifest(entries, algorithm='sha256', newline='\r\n'):
    """``SHA256(name)= hex`` lines for (name, bytes) entries."""
    lines = []
    for name, data in entries:
        digest = hashlib.new(algorithm, data).hexdigest()
        lines.append('%s(%s)= %s' % (algorithm.upper(), name, digest))
    return (newline.join(lines) + newline).encode()


def file_digest(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(MiB), b''):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass
class Member:
    """A member to put in the tar: bytes, or a file slice, or a TarInfo."""

    name: str
    data: bytes = None
    path: str = None
    offset: int = 0
    size: int = None
    info: tarfile.TarInfo = None   # used as is (links, devices, ...)

    def length(self):
        if self.data is not None:
            return len(self.data)
        if self.path is not None:
            return self.size if self.size is not None else (
                os.path.getsize(self.path) - self.offset)
        return 0

    def digest(self, algorithm):
        h = hashlib.new(algorithm)
        if self.data is not None:
            h.update(self.data)
        elif self.path is not None:
            with open(self.path, 'rb') as f:
                f.seek(self.offset)
                left = self.length()
                while left:
                    chunk = f.read(min(MiB, left))
                    h.update(chunk)
                    left -= len(chunk)
        return h.hexdigest()


OvaInfo = collections.namedtuple('OvaInfo', 'path ovf_name ovf members')


def disk_members(disk, workdir):
    """The tar members holding ``disk`` (gzipped and/or chunked)."""
    path = disk.path
    if disk.compression:
        # 'Gzip' (XenCenter), 'gzip' (DSP0243) or 'bzip2'.
        opener = bz2.open if disk.compression.lower() == 'bzip2' else (
            gzip.open)
        path = os.path.join(workdir, os.path.basename(disk.href))
        with open(disk.path, 'rb') as src, opener(path, 'wb') as dst:
            shutil.copyfileobj(src, dst, MiB)
    size = os.path.getsize(path)
    if not disk.chunk_size:
        return [Member(disk.href, path=path)]
    return [Member('%s.%09d' % (disk.href, i), path=path, offset=off,
                   size=min(disk.chunk_size, size - off))
            for i, off in enumerate(range(0, max(size, 1), disk.chunk_size))]


def write_tar(path, members, gzip_whole=False,
              tar_format=tarfile.USTAR_FORMAT):
    """Write ``members`` in order into a tar (gzipped with gzip_whole)."""
    mode = 'w:gz' if gzip_whole else 'w'
    with tarfile.open(path, mode, format=tar_format) as tar:
        for m in members:
            if m.info is not None:
                data = io.BytesIO(m.data) if m.data is not None else None
                tar.addfile(m.info, data)
                continue
            info = tarfile.TarInfo(m.name)
            info.size = m.length()
            info.mode = 0o644
            info.mtime = 1700000000
            if m.data is not None:
                tar.addfile(info, io.BytesIO(m.data))
            else:
                with open(m.path, 'rb') as f:
                    f.seek(m.offset)
                    tar.addfile(info, f)
    return path


def make_ova(path, disks, name='Web server', manifest_algorithm='sha256',
             gzip_whole=False, order=None, ovf=None, ovf_name=None,
             extra_members=(), manifest_entries=None, seed=0, **ovf_kwargs):
    """Build an OVA at ``path`` holding ``disks`` (a list of OvaDisk).

    Members: OVF first, then the manifest (``manifest_algorithm`` 'sha256'
    or 'sha1', CRLF lines; None for no manifest), then the disk members.
    ``order`` rearranges the members after the OVF: 'reverse', 'shuffle',
    or a callable taking and returning the member list (it may also move
    the OVF). ``ovf`` replaces the generated descriptor; ``extra_members``
    (Member objects) are added after the disks. ``manifest_entries``
    replaces the (name, digest) pairs listed. Returns OvaInfo.
    """
    ovf_name = ovf_name or '%s.ovf' % name
    if ovf is None:
        ovf = ovf_descriptor(disks, name=name, **ovf_kwargs)
    workdir = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    try:
        payload = []
        for disk in disks:
            payload.extend(disk_members(disk, workdir))
        payload.extend(extra_members)
        members = [Member(ovf_name, data=ovf)]
        if manifest_algorithm:
            if manifest_entries is None:
                manifest_entries = [(ovf_name,
                                     hashlib.new(manifest_algorithm,
                                                 ovf).hexdigest())]
                manifest_entries += [(m.name, m.digest(manifest_algorithm))
                                     for m in payload if m.info is None]
            lines = ''.join('%s(%s)= %s\r\n' % (manifest_algorithm.upper(),
                                                n, d)
                            for n, d in manifest_entries)
            mf_name = ovf_name[:-4] + '.mf'
            members.append(Member(mf_name, data=lines.encode()))
        if order == 'reverse':
            payload.reverse()
        elif order == 'shuffle':
            random.Random(seed).shuffle(payload)
        members += payload
        if callable(order):
            members = order(members)
        write_tar(path, members, gzip_whole=gzip_whole)
        return OvaInfo(path, ovf_name, ovf, [m.name for m in members])
    finally:
        shutil.rmtree(workdir)


def special_member(name, kind, target='etc/passwd'):
    """A Member with a non-regular TarInfo.

    kind: 'symlink', 'hardlink', 'chr', 'blk', 'fifo' or 'dir'.
    """
    info = tarfile.TarInfo(name)
    info.type = {
        'symlink': tarfile.SYMTYPE, 'hardlink': tarfile.LNKTYPE,
        'chr': tarfile.CHRTYPE, 'blk': tarfile.BLKTYPE,
        'fifo': tarfile.FIFOTYPE, 'dir': tarfile.DIRTYPE,
    }[kind]
    if kind in ('symlink', 'hardlink'):
        info.linkname = target
    if kind in ('chr', 'blk'):
        info.devmajor, info.devminor = 1, 3
    return Member(name, info=info)


def gnu_base256_size(tar_bytes, member_index=0):
    """Re-encode one member's size field in GNU base-256; return the tar.

    SharpZipLib (XenCenter's tar writer) uses base-256 for sizes over
    8 GiB; the same encoding is legal for small sizes.
    """
    data = bytearray(tar_bytes)
    offset = 0
    for _ in range(member_index):
        size = int(data[offset + 124:offset + 136].split(b'\0')[0] or b'0', 8)
        offset += 512 + _round_up(size, 512)
    size = int(data[offset + 124:offset + 136].split(b'\0')[0] or b'0', 8)
    data[offset + 124:offset + 136] = b'\x80' + size.to_bytes(11, 'big')
    data[offset + 148:offset + 156] = b' ' * 8
    chksum = sum(data[offset:offset + 512])
    data[offset + 148:offset + 156] = b'%06o\0 ' % chksum
    return bytes(data)


def simple_ova(workdir, raw_size=16 * MiB, creator='caml', table='gpt',
               name='vm', seed=0, **ova_kwargs):
    """One call: RAW disk -> XenServer-style VHD -> OVA in ``workdir``.

    Returns (OvaInfo, RawDisk, vhd_path).
    """
    raw = make_raw_disk(os.path.join(workdir, '%s.raw' % name), raw_size,
                        table=table, seed=seed)
    vhd = os.path.join(workdir, '%s.vhd' % name)
    if creator in XEN_CREATORS:
        xen_vhd(raw.path, vhd, creator)
    else:
        qemu_vhd(raw.path, vhd, 'dynamic', force_size=True)
    ova = make_ova(os.path.join(workdir, '%s.ova' % name),
                   [OvaDisk(vhd)], name=name, **ova_kwargs)
    return ova, raw, vhd


class Corpus(object):
    """Inputs built once into ``root`` and shared; never edit them in place.

    ``raw(name)`` gives a RawDisk from RAW_SPECS; ``vhd(kind, raw=name)``
    gives the path of a VHD of that disk, ``kind`` being one of VHD_KINDS.
    """

    RAW_SPECS = {
        'gpt16': dict(size=16 * MiB, table='gpt', seed=1),
        'mbr8': dict(size=8 * MiB, table='mbr', seed=2),
        # 19 MiB is not a CHS multiple: the spec geometry is 8 KiB short.
        'gpt19': dict(size=19 * MiB, table='gpt', seed=3),
        'mbr19': dict(size=19 * MiB, table='mbr', seed=4),
        # XenCenter-sized: 1 GiB + 3 MiB, 304 KiB beyond its CHS size.
        'mbr1g3m': dict(size=1 * GiB + 3 * MiB, table='mbr', seed=5),
    }
    VHD_KINDS = ('qemu-dynamic', 'qemu-fixed', 'qem2-dynamic', 'qem2-fixed',
                 'reverse', 'caml', 'tap', 'dutl', 'caml-fixed',
                 'tap-fixed', 'dutl-fixed')

    def __init__(self, root):
        self.root = root
        self._raws = {}

    def raw(self, name='gpt16'):
        if name not in self._raws:
            path = os.path.join(self.root, name + '.raw')
            self._raws[name] = make_raw_disk(path, **self.RAW_SPECS[name])
        return self._raws[name]

    def vhd(self, kind, raw='gpt16'):
        path = os.path.join(self.root, '%s.%s.vhd' % (raw, kind))
        if os.path.exists(path):
            return path
        src = self.raw(raw).path
        if kind in ('qemu-dynamic', 'qemu-fixed'):
            qemu_vhd(src, path, kind[5:], force_size=False)
        elif kind in ('qem2-dynamic', 'qem2-fixed'):
            qemu_vhd(src, path, kind[5:], force_size=True)
        elif kind == 'reverse':
            qemu_vhd_reverse(src, path)
        elif kind.endswith('-fixed'):
            xen_vhd(src, path, kind[:-6], subformat='fixed')
        else:
            xen_vhd(src, path, kind)
        return path


# --------------------------------------------------------------------------
# Mutations for property-based tests

INTERESTING_U32 = (0, 1, 2, 3, 4, 0x1FF, 0x200, 0x201, 0x1000, 0x200000,
                   0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING_U64 = INTERESTING_U32 + (2 ** 32, 2 ** 40, 2 ** 41, 2 ** 63,
                                     2 ** 64 - 512, 2 ** 64 - 1)


def vhd_field_offsets(data):
    """(offset, width) of the fields a VHD reader trusts, for mutation.

    Footer copy, dynamic header (at 512, where qemu puts it), trailing
    footer and the first BAT entries.
    """
    size = len(data)
    fields = []
    footer = [(16, 8), (12, 4), (48, 8), (40, 8), (60, 4), (28, 4)]
    for base in (0, size - SECTOR):
        fields += [(base + off, width) for off, width in footer]
    fields += [(512 + off, width) for off, width in
               [(16, 8), (24, 4), (28, 4), (32, 4), (8, 8)]]
    table = struct.unpack_from('>Q', data, 512 + 16)[0] if size > 1536 else 0
    if 0 < table < size - 64:
        fields += [(table + 4 * i, 4) for i in range(16)]
    return [(off, width) for off, width in fields if 0 <= off < size]


def apply_vhd_mutation(data, ops, reseal, cut=None, extra=b''):
    """Apply mutation ``ops`` to VHD bytes; optionally fix the checksums.

    ops: ('xor', offset, byte) or ('set', offset, width, value). With
    ``reseal`` the footer copy, the trailing footer and the header at the
    copy's data_offset get valid checksums again, so the mutation reaches
    the checks behind them. ``cut`` truncates, ``extra`` is appended.
    """
    buf = bytearray(data)
    for op in ops:
        if op[0] == 'xor':
            _, offset, byte = op
            if offset < len(buf):
                buf[offset] ^= byte
        else:
            _, offset, width, value = op
            if offset + width <= len(buf):
                buf[offset:offset + width] = (value % (1 << (8 * width))
                                              ).to_bytes(width, 'big')
    if reseal and len(buf) >= 2 * SECTOR:
        for base in (0, len(buf) - SECTOR):
            footer = buf[base:base + SECTOR]
            seal_footer(footer)
            buf[base:base + SECTOR] = footer
        offset = struct.unpack_from('>Q', buf, 16)[0]
        if offset + 1024 <= len(buf) - SECTOR:
            header = buf[offset:offset + 1024]
            seal_header(header)
            buf[offset:offset + 1024] = header
    if cut is not None:
        del buf[cut:]
    return bytes(buf) + extra


def vhd_mutations(data):
    """A hypothesis strategy of apply_vhd_mutation arguments for ``data``.

    Offsets are biased towards the metadata a reader must distrust.
    """
    from hypothesis import strategies as st

    size = len(data)
    fields = vhd_field_offsets(data)
    anywhere = st.one_of(st.integers(0, min(size, 4096) - 1),
                         st.integers(max(0, size - SECTOR), size - 1),
                         st.integers(0, size - 1))
    xor = st.tuples(st.just('xor'), anywhere, st.integers(1, 255))

    def field_op(field):
        offset, width = field
        pool = INTERESTING_U64 if width == 8 else INTERESTING_U32
        value = st.one_of(st.sampled_from(pool),
                          st.integers(0, (1 << (8 * width)) - 1))
        return st.tuples(st.just('set'), st.just(offset), st.just(width),
                         value)

    setter = st.sampled_from(fields).flatmap(field_op)
    return st.fixed_dictionaries({
        'ops': st.lists(st.one_of(xor, setter), min_size=1, max_size=6),
        'reseal': st.booleans(),
        'cut': st.one_of(st.none(), st.integers(0, size),
                         st.integers(max(0, size - 4096), size)),
        'extra': st.one_of(st.just(b''), st.binary(max_size=1024)),
    })


# --- Compression bombs: real gzip/bzip2 streams of zeros, built small ---

BOMB_UNIT = 64 * MiB
COMPRESSORS = {'gzip': ['gzip', '-9', '-c'], 'bzip2': ['bzip2', '-9', '-c']}


def compress(data, kind):
    """``data`` compressed by the real gzip or bzip2 tool."""
    return subprocess.run(COMPRESSORS[kind], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


def compressed_zeros_unit(kind, _cache={}):
    """One gzip/bzip2 member holding BOMB_UNIT zeros, made by the tool.

    The zeros are piped from /dev/zero, so no test holds them in memory.
    """
    if kind not in _cache:
        with open('/dev/zero', 'rb') as zero:
            head = subprocess.Popen(['head', '-c', str(BOMB_UNIT)],
                                    stdin=zero, stdout=subprocess.PIPE)
            out = subprocess.run(COMPRESSORS[kind], stdin=head.stdout,
                                 stdout=subprocess.PIPE, check=True).stdout
            head.stdout.close()
            head.wait()
        _cache[kind] = out
    return _cache[kind]


def write_zero_bomb(out, kind, size):
    """Append a stream of ``size`` zeros (a multiple of BOMB_UNIT) to ``out``.

    Both formats allow members one after the other (RFC 1952 2.2; bzip2
    streams concatenate the same way), so repeating one member makes a
    real stream of any length from a few KiB of memory.
    """
    assert size % BOMB_UNIT == 0
    unit = compressed_zeros_unit(kind)
    for _ in range(size // BOMB_UNIT):
        out.write(unit)


def tar_header(name, size):
    """The 512-byte (or longer, GNU) tar header of a regular file."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 1700000000
    return info.tobuf(tarfile.GNU_FORMAT)


def tar_member_ends(tar_path):
    """Byte offsets at which each member of a plain tar ends (padded)."""
    ends = []
    with tarfile.open(tar_path, 'r:') as tar:
        for info in tar:
            ends.append(info.offset_data + _round_up(info.size, 512))
    return ends


def splice_zero_member(tar_path, out_path, after, name, size, kind='gzip'):
    """Compress the tar at ``tar_path`` whole, with one member inserted.

    The member ``name`` of ``size`` zero bytes goes after the first
    ``after`` members; the result is a whole-stream gzip (or bzip2) OVA
    like XenCenter's ``.ova.gz`` whose zeros cost only their compressed
    size.
    """
    with open(tar_path, 'rb') as f:
        data = f.read()
    cut = tar_member_ends(tar_path)[after - 1]
    with open(out_path, 'wb') as out:
        out.write(compress(data[:cut] + tar_header(name, size), kind))
        write_zero_bomb(out, kind, size)
        out.write(compress(data[cut:], kind))
    return out_path
