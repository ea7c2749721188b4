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

"""Decompressing readers, chosen by magic number, never by file name.

XenCenter gzips whole OVAs (``.ova.gz``) and may compress single OVF
members with gzip or bzip2; xapi compresses a whole XVA with gzip or zstd.
A reader hands out at most what was asked for, so a small compressed input
can never make us hold a large output.
"""

import bz2
import lzma
import zlib

from glance_xen_import import exception

GZIP_MAGIC = b'\x1f\x8b'
BZIP2_MAGIC = b'BZh'
XZ_MAGIC = b'\xfd7zXZ\x00'
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
# The decoder's memory is its window, which the frame header chooses. This
# is zstd's own default limit (windowLog 27); `zstd` at any level short of
# --ultra/--long uses 8 MiB at most.
ZSTD_MAX_WINDOW = 1 << 27

_INPUT_CHUNK = 1 << 20


class _ZlibEngine(object):
    """zlib keeps the input it could not use yet in unconsumed_tail."""

    def __init__(self):
        self._obj = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self.leftover = b''

    def decompress(self, data, size):
        out = self._obj.decompress(data, size)
        # At the end of a member the rest is in unused_data (and, for zlib,
        # repeated in unconsumed_tail).
        self.leftover = b'' if self._obj.eof else self._obj.unconsumed_tail
        return out

    @property
    def needs_input(self):
        return not self.leftover

    @property
    def eof(self):
        return self._obj.eof

    @property
    def unused_data(self):
        return self._obj.unused_data


class _BufferedEngine(object):
    """bz2 and lzma keep unused input inside the decompressor."""

    leftover = b''

    def __init__(self, factory):
        self._obj = factory()

    def decompress(self, data, size):
        return self._obj.decompress(data, size)

    def __getattr__(self, name):
        return getattr(self._obj, name)


_FORMATS = {
    'gzip': (GZIP_MAGIC, _ZlibEngine),
    'bzip2': (BZIP2_MAGIC, lambda: _BufferedEngine(bz2.BZ2Decompressor)),
    'xz': (XZ_MAGIC, lambda: _BufferedEngine(
        lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ))),
}

# zstd streams are decoded by python-zstandard's stream reader, whose
# read(n) returns at most n bytes; it needs no engine.
_WHOLE_STREAM = {'zstd': ZSTD_MAGIC}

_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


class Decompressor(object):
    """Read the decompressed bytes of ``stream``.

    Several compressed members in a row are read as one (RFC 1952 2.2 for
    gzip; pbzip2 writes bzip2 the same way); zero padding after the last
    member, as tar blocking leaves it, is ignored.
    """

    def __init__(self, kind, stream, first=b''):
        self.kind = kind
        self._stream = stream
        self._pending = first
        self._engine = None
        self._done = False
        self._zstd = None
        if kind in _WHOLE_STREAM:
            # Imported here: most packages are not zstd, and the import
            # costs a command-line run several milliseconds.
            import zstandard
            self._zstd_error = zstandard.ZstdError
            # Several frames in a row are read as one. The stream reader
            # does not say whether its input ended inside a frame: the
            # frame walker does.
            self._frames = _ZstdFrames(_Prefixed(first, stream))
            self._zstd = zstandard.ZstdDecompressor(
                max_window_size=ZSTD_MAX_WINDOW).stream_reader(
                    self._frames, read_size=_INPUT_CHUNK,
                    read_across_frames=True, closefd=False)
        else:
            self._magic, self._factory = _FORMATS[kind]

    def _start_member(self):
        while len(self._pending) < len(self._magic):
            more = self._stream.read(_INPUT_CHUNK)
            if not more:
                break
            self._pending += more
        if self._pending.startswith(self._magic):
            self._engine = self._factory()
            return True
        if self._pending.strip(b'\x00') or self._stream.read(1).strip(b'\0'):
            raise exception.InvalidPackage(
                '%s data is followed by bytes that are not %s'
                % (self.kind, self.kind))
        self._done = True
        return False

    def read(self, size):
        if self._zstd is not None:
            try:
                data = self._zstd.read(size)
            except _ERRORS + (self._zstd_error,) as exc:
                raise exception.InvalidPackage(
                    '%s data is corrupt: %s' % (self.kind, exc))
            if size and not data and not self._frames.complete:
                raise exception.InvalidPackage(
                    '%s data ends before its end marker' % self.kind)
            return data
        while not self._done:
            if self._engine is None and not self._start_member():
                break
            if self._engine.needs_input and not self._pending:
                self._pending = self._stream.read(_INPUT_CHUNK)
                if not self._pending:
                    raise exception.InvalidPackage(
                        '%s data ends before its end marker' % self.kind)
            data, self._pending = self._pending, b''
            try:
                out = self._engine.decompress(data, size)
            except _ERRORS as exc:
                raise exception.InvalidPackage(
                    '%s data is corrupt: %s' % (self.kind, exc))
            self._pending = self._engine.leftover
            if self._engine.eof:
                self._pending = self._engine.unused_data + self._pending
                self._engine = None
            if out:
                return out
        return b''


class _ZstdFrames(object):
    """Pass a zstd stream through, following its frames (RFC 8878 3.1).

    Only headers are decoded; block contents are skipped by their sizes,
    so this costs a few steps per 128 KiB block. :attr:`complete` is true
    between frames. Bytes that are no frame (padding, damage) stop the
    walk; the decoder refuses them itself.
    """

    def __init__(self, stream):
        self._stream = stream
        self._buf = b''
        self._skip = 0
        self._want, self._handle = 4, self._on_magic
        self._checksum = False
        self._lost = False

    @property
    def complete(self):
        return self._lost or (self._handle == self._on_magic
                              and not self._buf and not self._skip)

    def read(self, size):
        data = self._stream.read(size)
        pos = 0
        while pos < len(data) and not self._lost:
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            step = self._want - len(self._buf)
            self._buf += data[pos:pos + step]
            pos += step
            if len(self._buf) == self._want:
                header, self._buf = self._buf, b''
                self._handle(header)
        return data

    def _next(self, want, handle, skip=0):
        self._want, self._handle, self._skip = want, handle, skip

    def _on_magic(self, magic):
        if magic == ZSTD_MAGIC:
            self._next(1, self._on_descriptor)
        elif magic[0] & 0xf0 == 0x50 and magic[1:] == b'\x2a\x4d\x18':
            self._next(4, self._on_skippable)      # a skippable frame
        else:
            self._lost = True

    def _on_skippable(self, size):
        self._next(4, self._on_magic, int.from_bytes(size, 'little'))

    def _on_descriptor(self, header):
        flags = header[0]
        single = flags >> 5 & 1
        self._checksum = bool(flags & 4)
        rest = ((0 if single else 1) + (0, 1, 2, 4)[flags & 3]
                + ((single, 2, 4, 8)[flags >> 6]))
        self._next(3, self._on_block, rest)

    def _on_block(self, header):
        value = int.from_bytes(header, 'little')
        kind, size = value >> 1 & 3, value >> 3
        if kind == 3:
            self._lost = True
            return
        content = 1 if kind == 1 else size       # an RLE block: one byte
        if not value & 1:
            self._next(3, self._on_block, content)
        else:
            self._next(4, self._on_magic,
                       content + (4 if self._checksum else 0))


class _Prefixed(object):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, prefix, stream):
        self._prefix = prefix
        self._stream = stream
        if hasattr(stream, 'skip'):
            # A stream that can pass over bytes unread still can.
            self.skip = self._skip

    def _skip(self, size):
        taken = min(size, len(self._prefix))
        self._prefix = self._prefix[taken:]
        return taken + self._stream.skip(size - taken)

    def read(self, size):
        if self._prefix:
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._stream.read(size)


def sniff(stream):
    """Return (kind, reader); kind is None, gzip, bzip2, xz or zstd."""
    head = b''
    while len(head) < len(XZ_MAGIC):
        data = stream.read(len(XZ_MAGIC) - len(head))
        if not data:
            break
        head += data
    magics = dict(_WHOLE_STREAM)
    magics.update((kind, magic) for kind, (magic, _f) in _FORMATS.items())
    for kind, magic in magics.items():
        if head.startswith(magic):
            return kind, Decompressor(kind, stream, head)
    return None, _Prefixed(head, stream)


def open_member(kind, stream):
    """Decompress an OVF member declared with ovf:compression=``kind``."""
    return Decompressor(kind, stream)
