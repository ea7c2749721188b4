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

"""Sparse RAW output.

Data is written at its virtual offset with ``os.pwrite``, so blocks may arrive
in any order. Pages that are all zero are not written at all and stay holes;
the file is finally truncated to the virtual size, which leaves every range
that was never written as a hole too.
"""

import os

from glance_xen_import import exception

# Holes are made at this granularity: the page size of the filesystems the
# output lands on, and the unit qemu-img uses for the same purpose.
PAGE = 4096
_ZERO_PAGE = bytes(PAGE)


def _nonzero_runs(data, offset):
    """Yield (start, end) of the runs of non-zero pages in ``data``.

    Pages are aligned to the file, not to ``data``: ``data`` lands at
    ``offset``, so its first page may be a partial one. ``startswith``
    compares in place (memcmp), so no page is copied.
    """
    length = len(data)
    if data == _zeros(length):
        return
    is_zero = data.startswith
    run_start = None
    start = 0
    while start < length:
        end = min(start + PAGE - (offset + start) % PAGE, length)
        size = end - start
        if not is_zero(_ZERO_PAGE if size == PAGE else _zeros(size), start):
            if run_start is None:
                run_start = start
        elif run_start is not None:
            yield run_start, start
            run_start = None
        start = end
    if run_start is not None:
        yield run_start, length


def _zeros(length, _cache={}):
    # One zero buffer per length seen: the decoder uses a handful of sizes.
    if length not in _cache:
        if len(_cache) > 16:
            _cache.clear()
        _cache[length] = bytes(length)
    return _cache[length]


class SparseWriter(object):
    """Write a RAW disk image at ``path``, which must not exist yet."""

    def __init__(self, path):
        self.path = path
        self.data_bytes = 0
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                               | getattr(os, 'O_CLOEXEC', 0), 0o600)
        except OSError as exc:
            raise exception.XenImportError(
                'cannot create %s: %s' % (path, exc.strerror))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False

    def write_at(self, offset, data):
        """Write ``data`` at ``offset``, skipping its all-zero pages."""
        if not isinstance(data, bytes):
            data = bytes(data)
        view = memoryview(data)
        for start, end in _nonzero_runs(data, offset):
            self._pwrite_all(view[start:end], offset + start)
            self.data_bytes += end - start

    def _pwrite_all(self, view, offset):
        while view:
            try:
                written = os.pwrite(self._fd, view, offset)
            except OSError as exc:
                raise exception.XenImportError(
                    'cannot write %s: %s' % (self.path, exc.strerror))
            view = view[written:]
            offset += written

    def finish(self, virtual_size):
        """Give the file its final length.

        No fsync: like cp and qemu-img convert, the data is left to the
        page cache; Glance reads it straight back to upload it.
        """
        try:
            os.ftruncate(self._fd, virtual_size)
        except OSError as exc:
            raise exception.XenImportError(
                'cannot finish %s: %s' % (self.path, exc.strerror))
        finally:
            self._close()

    def abort(self):
        """Close and remove the partial output."""
        self._close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
