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

"""What an initramfs holds, read as a stream and never unpacked.

An initramfs is what the kernel's init/initramfs.c accepts: cpio 'newc'
or 'crc' archives (070701/070702), each padded to 4 bytes and closed by
TRAILER!!!, one after another, with zero bytes between them; each segment
plain or compressed (gzip, bzip2, lzma, xz, lz4 legacy frames, zstd). An
uncompressed early-microcode archive often comes first (dracut,
initramfs-tools). Only names are looked at, plus the data of the few
small files needed (modules.builtin); everything is bounded, and a
damaged or oversized image gives an incomplete result with the reason.
"""

import bz2
import dataclasses
import lzma
import posixpath
import re
import struct
import zlib

import lz4.block

# Bounds for untrusted input. A large distribution initramfs (firmware
# included) unpacks to a few hundred MiB and some thousands of entries.
MAX_UNPACKED = 1024 * 1024 * 1024
MAX_ENTRIES = 200000
MAX_NAME = 4096
MAX_SMALL_FILE = 4 * 1024 * 1024
MAX_SEGMENTS = 64
MAX_MODULES = 20000

_CHUNK = 64 * 1024
# What a damaged stream makes the decompressors raise (zstd adds its own).
_CODEC_ERRORS = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError,
                 RuntimeError)
# python-zstandard's decompressobj has no output bound, and zstd turns 4
# bytes (an RLE block) into 128 KiB: 256-byte slices keep one call's
# output under 8 MiB.
_ZSTD_SLICE = 256
_LZ4_LEGACY_MAGIC = 0x184C2102
_LZ4_LEGACY_BLOCK = 8 * 1024 * 1024
_HEADER = 110
_TRAILER = 'TRAILER!!!'

_MODULE = re.compile(r'^(?:usr/)?lib/modules/([^/]+)/.*?([^/]+)\.ko'
                     r'(?:\.(?:xz|zst|gz))?$')
_BUILTIN = re.compile(r'^(?:usr/)?lib/modules/([^/]+)/modules\.builtin$')
_DRACUT = ('usr/lib/dracut/', 'lib/dracut/')
_DRACUT_FILES = ('dracut-state.sh', 'usr/bin/dracut-cmdline',
                 'usr/sbin/dracut-cmdline', 'bin/dracut-cmdline')
_INITRAMFS_TOOLS = ('conf/initramfs.conf', 'scripts/init-top')


class Stop(Exception):
    """The image cannot be read further; str() says why."""


@dataclasses.dataclass
class Contents:
    """Names found in an initramfs (complete is False if it stopped)."""
    modules: set[str] = dataclasses.field(default_factory=set)
    builtin: set[str] = dataclasses.field(default_factory=set)
    kernel_versions: set[str] = dataclasses.field(default_factory=set)
    generator: str | None = None
    compressions: list[str] = dataclasses.field(default_factory=list)
    # (codec, start, end) of each segment: its byte range in the file.
    segments: list[tuple] = dataclasses.field(default_factory=list)
    entries: int = 0
    unpacked: int = 0
    complete: bool = False
    reason: str | None = None


def module_name(filename):
    """The kernel's name for a module file: no suffix, '-' as '_'."""
    base = posixpath.basename(filename)
    base = re.sub(r'\.ko(?:\.(?:xz|zst|gz))?$', '', base)
    return base.replace('-', '_')


def parse_builtin(text):
    """Module names in a modules.builtin (one .ko path a line)."""
    return {module_name(line.strip()) for line in text.splitlines()
            if line.strip().endswith('.ko')}


class _Budget:
    """Counts the bytes produced so far against MAX_UNPACKED."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0

    def take(self, count):
        self.used += count
        if self.used > self.limit:
            raise Stop('more than %d bytes unpacked' % self.limit)


class _Raw:
    """The image file, read forward, with bytes pushed back."""

    def __init__(self, fileobj):
        self._file = fileobj
        self._pending = b''
        self.offset = 0   # of the next byte handed out

    def read(self, count):
        if self._pending:
            data, self._pending = (self._pending[:count],
                                   self._pending[count:])
        else:
            data = self._file.read(count)
        self.offset += len(data)
        return data

    def unread(self, data):
        if data:
            self._pending = data + self._pending
            self.offset -= len(data)

    def peek(self, count):
        data = b''
        while len(data) < count:
            more = self.read(count - len(data))
            if not more:
                break
            data += more
        self.unread(data)
        return data

    def skip_zeros(self):
        """Skip zero padding; False at the end of the file."""
        while True:
            data = self.read(_CHUNK)
            if not data:
                return False
            stripped = data.lstrip(b'\0')
            if stripped:
                self.unread(stripped)
                return True


class _Decompressed:
    """One compressed segment of the image, read forward, bounded."""

    def __init__(self, raw, codec, budget):
        self._raw = raw
        self._codec = codec
        self._budget = budget
        self._out = b''
        self._done = False
        self.offset = 0
        self._lz4_started = False
        self._errors = _CODEC_ERRORS
        if codec == 'gzip':
            self._obj = zlib.decompressobj(wbits=31)
        elif codec in ('xz', 'lzma'):
            self._obj = lzma.LZMADecompressor(
                format=lzma.FORMAT_XZ if codec == 'xz' else
                lzma.FORMAT_ALONE)
        elif codec == 'bzip2':
            self._obj = bz2.BZ2Decompressor()
        elif codec == 'zstd':
            # Imported when needed: it costs every start-up milliseconds.
            import zstandard
            self._errors = _CODEC_ERRORS + (zstandard.ZstdError,)
            self._obj = zstandard.ZstdDecompressor().decompressobj()
        else:
            self._obj = None

    def read(self, count):
        while len(self._out) < count and not self._done:
            self._fill()
        data, self._out = self._out[:count], self._out[count:]
        self.offset += len(data)
        return data

    def unread(self, data):
        self._out = data + self._out
        self.offset -= len(data)

    def at_end(self):
        """True once the segment is used up (no more data in it)."""
        while not self._out and not self._done:
            self._fill()
        return not self._out

    def _emit(self, data):
        self._budget.take(len(data))
        self._out += data

    def _fill(self):
        try:
            if self._codec == 'lz4':
                self._fill_lz4()
            elif self._codec == 'zstd':
                self._fill_zstd()
            elif self._codec == 'gzip':
                self._fill_zlib()
            else:
                self._fill_lzma_bz2()
        except self._errors as exc:
            raise Stop('%s data damaged at offset %d: %s' % (
                self._codec, self._raw.offset, exc))

    def _input(self, count=_CHUNK):
        data = self._raw.read(count)
        if not data:
            raise Stop('%s stream truncated at offset %d' % (
                self._codec, self._raw.offset))
        return data

    def _fill_zlib(self):
        obj = self._obj
        data = obj.unconsumed_tail or self._input()
        self._emit(obj.decompress(data, _CHUNK))
        if obj.eof:
            self._raw.unread(obj.unused_data)
            self._done = True

    def _fill_lzma_bz2(self):
        obj = self._obj
        data = b'' if not obj.needs_input else self._input()
        self._emit(obj.decompress(data, _CHUNK))
        if obj.eof:
            self._raw.unread(obj.unused_data)
            self._done = True

    def _fill_zstd(self):
        obj = self._obj
        self._emit(obj.decompress(self._input(_ZSTD_SLICE)))
        if obj.eof:
            self._raw.unread(obj.unused_data)
            self._done = True

    def _fill_lz4(self):
        # Legacy frames: the magic, then blocks of <LE32 size><data>
        # each unpacking to at most 8 MiB; no end mark. Like the kernel,
        # stop at what cannot be a block size (or the next magic's
        # padding), leaving it for the next segment.
        if not self._lz4_started:
            self._raw.read(4)
            self._lz4_started = True
        head = self._raw.peek(4)
        if len(head) < 4:
            self._done = True
            return
        size = struct.unpack('<I', head)[0]
        if size == _LZ4_LEGACY_MAGIC:
            self._raw.read(4)
            return
        bound = _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16
        if size == 0 or size > bound:
            self._done = True
            return
        self._raw.read(4)
        block = self._raw.read(size)
        if len(block) < size:
            raise Stop('lz4 stream truncated at offset %d' % self._raw.offset)
        self._emit(lz4.block.decompress(block,
                                        uncompressed_size=_LZ4_LEGACY_BLOCK))


def _codec(head):
    """The compression a segment starting with head uses, or None."""
    if head[:2] in (b'\x1f\x8b', b'\x1f\x9e'):
        return 'gzip'
    if head[:6] == b'\xfd7zXZ\x00':
        return 'xz'
    if head[:3] == b'BZh':
        return 'bzip2'
    if head[:4] == b'\x28\xb5\x2f\xfd':
        return 'zstd'
    if head[:4] == struct.pack('<I', _LZ4_LEGACY_MAGIC):
        return 'lz4'
    if head[:3] == b'\x5d\x00\x00':
        return 'lzma'
    return None


def _read_exact(stream, count, what):
    data = b''
    while len(data) < count:
        more = stream.read(min(count - len(data), _CHUNK))
        if not more:
            raise Stop('archive ends inside %s' % what)
        data += more
    return data


def _skip(stream, count, what):
    while count > 0:
        data = stream.read(min(count, _CHUNK))
        if not data:
            raise Stop('archive ends inside %s' % what)
        count -= len(data)


def _copy(stream, count, what, sink):
    while count > 0:
        data = stream.read(min(count, _CHUNK))
        if not data:
            raise Stop('archive ends inside %s' % what)
        sink.write(data)
        count -= len(data)


def _pad(offset):
    return (4 - offset % 4) % 4


class _Reader:

    def __init__(self, limits, visit=None):
        self.limits = limits
        self.contents = Contents()
        self.budget = _Budget(limits['unpacked'])
        self.visit = visit

    def archive(self, stream):
        """One cpio archive from stream, up to and with TRAILER!!!."""
        while True:
            start = stream.offset
            header = _read_exact(stream, _HEADER, 'a header')
            if header[:6] not in (b'070701', b'070702'):
                raise Stop('not a newc/crc cpio header at offset %d' % start)
            try:
                fields = [int(header[6 + 8 * i:14 + 8 * i], 16)
                          for i in range(13)]
            except ValueError:
                raise Stop('cpio header with a non-hex field at offset %d' %
                           start)
            mode, size, namesize = fields[1], fields[6], fields[11]
            if namesize < 1 or namesize > self.limits['name']:
                raise Stop('cpio name of %d bytes at offset %d' %
                           (namesize, start))
            raw_name = _read_exact(stream, namesize, 'a name')
            _skip(stream, _pad(stream.offset), 'padding')
            name = raw_name.rstrip(b'\0').decode('utf-8', 'replace')
            if name == _TRAILER:
                return
            self.contents.entries += 1
            if self.contents.entries > self.limits['entries']:
                raise Stop('more than %d entries' % self.limits['entries'])
            name = name.lstrip('./').lstrip('/')
            sink = self.visit and self.visit(
                len(self.contents.segments), name, mode, size)
            self.entry(stream, name, mode, size, sink)
            _skip(stream, _pad(stream.offset), 'padding')

    def entry(self, stream, name, mode, size, sink=None):
        contents = self.contents
        is_file = (mode & 0o170000) == 0o100000
        module = _MODULE.match(name)
        if module and is_file and len(contents.modules) < MAX_MODULES:
            contents.modules.add(module_name(module.group(2)))
            contents.kernel_versions.add(module.group(1))
        if contents.generator is None:
            if name.startswith(_DRACUT) or name in _DRACUT_FILES:
                contents.generator = 'dracut'
            elif name in _INITRAMFS_TOOLS:
                contents.generator = 'initramfs-tools'
        builtin = _BUILTIN.match(name)
        if builtin and is_file and size <= self.limits['small_file']:
            data = _read_exact(stream, size, name)
            contents.builtin |= parse_builtin(data.decode('utf-8', 'replace'))
            contents.kernel_versions.add(builtin.group(1))
            if sink is not None:
                sink.write(data)
            return
        if sink is not None:
            _copy(stream, size, name, sink)
        else:
            _skip(stream, size, name)

    def segments(self, raw):
        count = 0
        while raw.skip_zeros():
            count += 1
            if count > MAX_SEGMENTS:
                raise Stop('more than %d segments' % MAX_SEGMENTS)
            head = raw.peek(6)
            start = raw.offset
            if head[:5] == b'07070':
                if raw.offset % 4:
                    raise Stop('cpio archive at unaligned offset %d' %
                               raw.offset)
                self.contents.compressions.append('none')
                self.archive(_Counted(raw, self.budget))
                self.contents.segments.append(('none', start, raw.offset))
                continue
            codec = _codec(head)
            if codec is None:
                raise Stop('unknown data at offset %d' % raw.offset)
            self.contents.compressions.append(codec)
            self.compressed(_Decompressed(raw, codec, self.budget))
            self.contents.segments.append((codec, start, raw.offset))

    def compressed(self, stream):
        # Several archives may follow one another inside one segment.
        while True:
            while not stream.at_end():
                data = stream.read(_CHUNK)
                stripped = data.lstrip(b'\0')
                if stripped:
                    stream.unread(stripped)
                    break
            if stream.at_end():
                return
            self.archive(stream)


class _Counted:
    """The raw file as a cpio stream, its bytes counted in the budget."""

    def __init__(self, raw, budget):
        self._raw = raw
        self._budget = budget

    @property
    def offset(self):
        return self._raw.offset

    def read(self, count):
        data = self._raw.read(count)
        self._budget.take(len(data))
        return data


def read(fileobj, unpacked=MAX_UNPACKED, entries=MAX_ENTRIES, name=MAX_NAME,
         small_file=MAX_SMALL_FILE, visit=None):
    """Contents of the initramfs in fileobj (read from where it is).

    Never raises for a bad image: Contents.complete is False and
    Contents.reason says where and why reading stopped. visit, if given,
    is called as visit(segment index, name, mode, size) for each entry
    and may return a file-like sink that then receives the entry's data.
    """
    reader = _Reader({'unpacked': unpacked, 'entries': entries,
                      'name': name, 'small_file': small_file}, visit)
    try:
        reader.segments(_Raw(fileobj))
        if not reader.contents.compressions:
            raise Stop('empty image')
        reader.contents.complete = True
    except Stop as exc:
        reader.contents.reason = str(exc)
    except OSError as exc:
        reader.contents.reason = 'read error: %s' % exc
    reader.contents.unpacked = reader.budget.used
    return reader.contents


def unpack(fileobj, segments, sink, unpacked=MAX_UNPACKED):
    """Write the cpio stream of segments (from read()) into sink.

    Compressed segments are decompressed, plain ones copied; each is
    padded to 4 bytes so the archives stay aligned as the kernel wants.
    Raises Stop if the data is damaged or unpacks to more than unpacked.
    """
    budget = _Budget(unpacked)
    written = 0
    for codec, start, end in segments:
        fileobj.seek(start)
        raw = _Raw(fileobj)
        if codec == 'none':
            stream = _Counted(raw, budget)
            remaining = end - start
            while remaining > 0:
                data = stream.read(min(remaining, _CHUNK))
                if not data:
                    raise Stop('plain segment truncated at offset %d' %
                               raw.offset)
                sink.write(data)
                written += len(data)
                remaining -= len(data)
        else:
            stream = _Decompressed(raw, codec, budget)
            while not stream.at_end():
                data = stream.read(_CHUNK)
                sink.write(data)
                written += len(data)
        pad = _pad(written)
        sink.write(b'\0' * pad)
        written += pad
    return written
