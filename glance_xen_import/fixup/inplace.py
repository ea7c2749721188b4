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

"""Rewrite bytes of one file inside an NTFS partition of a RAW image.

The file keeps its size, so only its data clusters change: no MFT record,
no bitmap, no log file, nothing else of the volume is written. The file's
clusters are found from its data runs (read with libfsntfs); files that are
resident, sparse or compressed are refused, since their bytes do not sit
one-to-one in clusters.
"""

import os

import pyfsntfs

from glance_xen_import import exception
from glance_xen_import.inspect import volume

# A SYSTEM hive of a busy server reaches a few hundred MiB at most.
MAX_FILE_SIZE = 1 << 30


class NtfsFile(object):
    """A file of an NTFS partition, read whole and mapped to disk offsets."""

    def __init__(self, image_path, partition_start, partition_size, path):
        self.image_path = image_path
        self.partition_start = partition_start
        self.partition_size = partition_size
        self.path = path
        with volume.ImageFile(image_path) as image:
            view = image.slice(partition_start, partition_size)
            ntfs = pyfsntfs.volume()
            try:
                ntfs.open_file_object(view)
                entry = ntfs.get_file_entry_by_path(path)
                if entry is None:
                    raise exception.GuestError('%s not found' % path)
                self.size = entry.get_size()
                if self.size > MAX_FILE_SIZE:
                    raise exception.GuestError(
                        '%s is %d bytes, more than the %d handled'
                        % (path, self.size, MAX_FILE_SIZE))
                self.extents = self._extents(entry)
                self.data = entry.read_buffer_at_offset(self.size, 0)
            except OSError as exc:
                raise exception.GuestError('cannot read %s: %s'
                                           % (path, exc))
            finally:
                ntfs.close()
        if len(self.data) != self.size:
            raise exception.GuestError('%s reads short' % path)

    def _extents(self, entry):
        """[(file offset, disk offset, length)] covering the whole file.

        Every run must lie inside the partition: a write through a run
        that points past it would land in whatever follows on the disk.
        """
        count = entry.get_number_of_extents()
        if count == 0:
            raise exception.GuestError(
                '%s is resident in its MFT record; it is not patched in '
                'place' % self.path)
        extents = []
        position = 0
        for index in range(count):
            offset, length, flags = entry.get_extent(index)
            if flags:
                raise exception.GuestError(
                    '%s is sparse or compressed; it is not patched in place'
                    % self.path)
            if (offset < 0 or length <= 0
                    or offset + length > self.partition_size):
                raise exception.GuestError(
                    '%s has a data run outside its volume' % self.path)
            extents.append((position, self.partition_start + offset,
                            length))
            position += length
        if position < self.size:
            raise exception.GuestError(
                '%s data runs cover %d of its %d bytes'
                % (self.path, position, self.size))
        return extents

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


def _runs(offsets):
    """Coalesce a set of byte offsets into sorted [start, end) runs."""
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
