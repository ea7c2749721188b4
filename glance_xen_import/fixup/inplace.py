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

"""Rewrite bytes of one file inside a partition of a RAW image.

The file keeps its size, so only its data blocks change: no inode, MFT
record, bitmap, journal or log is written. Where the file's bytes sit on
the disk comes from its extents (read with libyal: libfsntfs, libfsext,
libfsxfs); before anything is written that map is proved by reading the
image at the mapped offsets and comparing with the file's content. Files
whose bytes do not sit one-to-one in blocks (resident, inline, sparse,
compressed, unwritten extents) are refused.
"""

import os
import stat
import struct

import pyfsext
import pyfsntfs
import pyfsxfs

from glance_xen_import import exception
from glance_xen_import.inspect import volume

# A SYSTEM hive of a busy server reaches a few hundred MiB at most.
MAX_FILE_SIZE = 1 << 30


class NotPlainFile(exception.GuestError):
    """The path names no file, or something other than a regular file."""


def partition_extent(layout, location):
    """(start, size) of an inspection location; size None for 'disk'.

    None for locations that are not a partition of the disk (a logical
    volume, for one).
    """
    if location == 'disk':
        return 0, None
    if location.startswith('partition '):
        number = location.split(' ', 1)[1]
        for partition in layout.partitions:
            if str(partition.number) == number:
                return partition.start, partition.size
    return None


class MappedFile(object):
    """A file of a partition, read whole and mapped to disk offsets."""

    # The libyal module that opens the partition's file system.
    reader = None
    kind = None

    def __init__(self, image_path, partition_start, partition_size, path,
                 max_size=MAX_FILE_SIZE):
        self.image_path = image_path
        self.partition_start = partition_start
        self.partition_size = partition_size
        self.path = path
        with volume.ImageFile(image_path) as image:
            view = image.slice(partition_start, partition_size)
            fs = self.reader.volume()
            try:
                fs.open_file_object(view)
                entry = fs.get_file_entry_by_path(path)
                if entry is None:
                    raise NotPlainFile('%s not found' % path)
                self._check_entry(entry)
                self.size = entry.get_size()
                if self.size > max_size:
                    raise exception.GuestError(
                        '%s is %d bytes, more than the %d handled'
                        % (path, self.size, max_size))
                self.extents = self._extents(entry, partition_start,
                                             partition_size)
                self.data = entry.read_buffer_at_offset(self.size, 0)
            except OSError as exc:
                raise exception.GuestError('cannot read %s: %s'
                                           % (path, exc))
            finally:
                fs.close()
            if len(self.data) != self.size:
                raise exception.GuestError('%s reads short' % path)
            self._check_map(image)

    def _check_entry(self, entry):
        """Refuse entries that are not plain files."""

    def _extents(self, entry, partition_start, partition_size):
        """[(file offset, disk offset, length)] covering the whole file."""
        count = entry.get_number_of_extents()
        if count == 0:
            raise exception.GuestError(
                '%s has no data extents (resident or inline); it is not '
                'patched in place' % self.path)
        extents = []
        for index in range(count):
            offset, length, flags = entry.get_extent(index)
            if flags:
                raise exception.GuestError(
                    '%s is sparse, compressed or unwritten; it is not '
                    'patched in place' % self.path)
            offset = self._partition_offset(offset)
            if (offset < 0 or length <= 0
                    or offset + length > partition_size):
                raise exception.GuestError(
                    '%s has an extent outside its file system' % self.path)
            extents.append((offset, length))
        return self._file_extents(extents, partition_start)

    def _partition_offset(self, offset):
        """The byte offset in the partition of an extent the reader gave."""
        return offset

    def _file_extents(self, extents, partition_start):
        mapped = []
        position = 0
        for offset, length in extents:
            mapped.append((position, partition_start + offset, length))
            position += length
        if position < self.size:
            raise exception.GuestError(
                '%s extents cover %d of its %d bytes'
                % (self.path, position, self.size))
        claimed = sorted((disk, disk + length)
                         for _, disk, length in mapped)
        for (_, end), (start, _) in zip(claimed, claimed[1:]):
            if start < end:
                raise exception.GuestError(
                    '%s claims the same disk block twice' % self.path)
        return mapped

    def _check_map(self, image):
        """The bytes at the mapped offsets must be the file's bytes."""
        for disk_offset, file_offset, length in self.disk_ranges(
                0, self.size):
            if image.pread(length, disk_offset) != bytes(
                    self.data[file_offset:file_offset + length]):
                raise exception.GuestError(
                    '%s does not lie where its extents say; it is not '
                    'patched in place' % self.path)

    def disk_ranges(self, start, end):
        """Split file bytes [start, end) into (disk offset, file offset, n)."""
        for file_offset, disk_offset, length in self.extents:
            lo = max(start, file_offset)
            hi = min(end, file_offset + length)
            if lo < hi:
                yield disk_offset + lo - file_offset, lo, hi - lo

    def write_back(self, new_data, changed):
        """Write the bytes of ``new_data`` at the ``changed`` offsets."""
        if len(new_data) != self.size:
            raise exception.GuestError('%s would change size' % self.path)
        fd = os.open(self.image_path, os.O_WRONLY)
        try:
            for start, end in _runs(changed):
                for disk_offset, file_offset, length in self.disk_ranges(
                        start, end):
                    os.pwrite(fd, bytes(new_data[file_offset:
                                                 file_offset + length]),
                              disk_offset)
            os.fsync(fd)
        finally:
            os.close(fd)


class NtfsFile(MappedFile):
    """A file of an NTFS partition."""

    reader = pyfsntfs
    kind = 'ntfs'


class _UnixFile(MappedFile):
    """A regular file of an ext or XFS partition, links not followed."""

    def _check_entry(self, entry):
        mode = entry.get_file_mode()
        if not stat.S_ISREG(mode):
            # A symbolic link may point anywhere in the volume: only the
            # file at the path named is ever edited.
            raise NotPlainFile('%s is not a regular file' % self.path)


class ExtFile(_UnixFile):
    """A regular file of an ext2/3/4 partition."""

    reader = pyfsext
    kind = 'ext'


class XfsFile(_UnixFile):
    """A regular file of an XFS partition."""

    reader = pyfsxfs
    kind = 'xfs'

    def _extents(self, entry, partition_start, partition_size):
        with open(self.image_path, 'rb') as f:
            superblock = os.pread(f.fileno(), XFS_SUPERBLOCK_BYTES,
                                  partition_start)
        self._geometry = xfs_geometry(superblock, partition_size)
        return super()._extents(entry, partition_start, partition_size)

    def _partition_offset(self, offset):
        # libfsxfs gives an extent's offset as its file system block
        # number times the block size. That number is the allocation
        # group's number shifted by agblklog, then the block in the group:
        # linear only where a group's block count is a power of two.
        blocksize, agblocks, agblklog, agcount = self._geometry
        if offset < 0 or offset % blocksize:
            raise exception.GuestError('%s has an extent off its block '
                                       'size' % self.path)
        fsblock = offset // blocksize
        agno, agbno = fsblock >> agblklog, fsblock & ((1 << agblklog) - 1)
        if agno >= agcount or agbno >= agblocks:
            raise exception.GuestError(
                '%s has an extent outside its file system' % self.path)
        return (agno * agblocks + agbno) * blocksize


XFS_SUPERBLOCK_BYTES = 128


def xfs_geometry(superblock, partition_size):
    """(blocksize, agblocks, agblklog, agcount) of an XFS superblock.

    Checked against each other and against the partition's size.
    """
    if (len(superblock) < XFS_SUPERBLOCK_BYTES
            or superblock[:4] != b'XFSB'):
        raise exception.GuestError('no XFS superblock')
    blocksize = struct.unpack_from('>I', superblock, 4)[0]
    agblocks, agcount = struct.unpack_from('>II', superblock, 84)
    agblklog = superblock[124]
    if (blocksize < 512 or blocksize > 65536
            or blocksize & (blocksize - 1)):
        raise exception.GuestError('XFS block size %d is not one XFS '
                                   'makes' % blocksize)
    # agblklog is log2 of agblocks rounded up (xfs_highbit32 + 1).
    if (agblocks < 1 or agcount < 1 or agblklog > 31
            or (1 << agblklog) < agblocks
            or (agblklog and (1 << (agblklog - 1)) >= agblocks)):
        raise exception.GuestError(
            'XFS allocation groups do not add up (agblocks %d, agblklog '
            '%d, agcount %d)' % (agblocks, agblklog, agcount))
    if (agcount - 1) * agblocks * blocksize >= partition_size:
        raise exception.GuestError('XFS allocation groups lie beyond the '
                                   'partition')
    return blocksize, agblocks, agblklog, agcount


def _runs(offsets):
    """Coalesce a set of byte offsets into sorted [start, end) runs."""
    if isinstance(offsets, range) and offsets.step == 1:
        if len(offsets):
            yield offsets.start, offsets.stop
        return
    run_start = previous = None
    for offset in sorted(offsets):
        if run_start is None:
            run_start = previous = offset
        elif offset == previous + 1:
            previous = offset
        else:
            yield run_start, previous + 1
            run_start = previous = offset
    if run_start is not None:
        yield run_start, previous + 1
