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

"""Bounded, read-only file objects over part of a RAW image.

The libyal readers (pyfsntfs, pyfsext, ...) take any object with read,
seek, tell and get_size, so a filesystem inside a partition is opened by
handing them a view that starts at the partition and ends with it.
"""

import io
import os


class ImageFile:
    """A RAW image opened read-only, shared by all of its slices."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def pread(self, length, offset):
        if length <= 0 or offset >= self.size:
            return b''
        return os.pread(self._fd, min(length, self.size - offset), offset)

    def slice(self, offset, size):
        return Slice(self, offset, size)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PositionalReader(io.RawIOBase):
    """read/seek/tell/get_size on top of a subclass's pread and size."""

    size = 0

    def __init__(self):
        super().__init__()
        self._pos = 0

    def pread(self, length, offset):
        raise NotImplementedError

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            size = self.size - self._pos
        data = self.pread(size, self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset, whence=os.SEEK_SET):
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._pos + offset
        elif whence == os.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError('bad whence %r' % whence)
        if position < 0:
            raise OSError('seek before the start')
        self._pos = position
        return position

    def tell(self):
        return self._pos

    def get_size(self):
        return self.size


class Slice(_PositionalReader):
    """Bytes [offset, offset + size) of a backing object, clamped to it.

    The backing object has pread(length, offset) and size; that is an
    ImageFile, or another Slice, so a logical volume inside a partition is
    a slice of a slice.
    """

    def __init__(self, backing, offset, size):
        super().__init__()
        if offset < 0 or size < 0:
            raise ValueError('negative slice bounds')
        # A partition table may claim more than the image holds; what is
        # not there reads as absent rather than as somebody else's bytes.
        available = max(0, backing.size - offset)
        self._backing = backing
        self._offset = offset
        self.size = min(size, available)

    def pread(self, length, offset):
        if length <= 0 or offset < 0 or offset >= self.size:
            return b''
        length = min(length, self.size - offset)
        return self._backing.pread(length, self._offset + offset)


class Runs(_PositionalReader):
    """Runs [(offset, length)] of a backing object, read one after another.

    A linear logical volume whose extents lie in more than one piece.
    """

    def __init__(self, backing, runs):
        super().__init__()
        self._backing = backing
        self._runs = list(runs)
        self.size = sum(length for _, length in self._runs)

    def pread(self, length, offset):
        if length <= 0 or offset < 0:
            return b''
        pieces = []
        at = 0                      # where the current run starts here
        for start, run in self._runs:
            if length <= 0:
                break
            if offset < at + run:
                skip = offset - at
                count = min(run - skip, length)
                piece = self._backing.pread(count, start + skip)
                pieces.append(piece)
                if len(piece) < count:
                    break
                offset += count
                length -= count
            at += run
        return b''.join(pieces)


class EntryReader(_PositionalReader):
    """A file object over a file inside a filesystem (a libyal entry).

    Hands a file (a registry hive) to another libyal reader without
    reading it into memory.
    """

    def __init__(self, entry, size):
        super().__init__()
        self._entry = entry
        self.size = size

    def pread(self, length, offset):
        if length <= 0 or offset < 0 or offset >= self.size:
            return b''
        length = min(length, self.size - offset)
        return self._entry.read_buffer_at_offset(length, offset)
