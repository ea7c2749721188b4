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

import errno
import os

from glance_xen_import import exception

# Holes are made at this granularity: the page size of the filesystems the
# output lands on, and the unit qemu-img uses for the same purpose.
PAGE = 4096
# Compared against in place (memcmp). bytes(n) is calloc'd: its pages all
# map the kernel's one zero page, which costs no memory and stays cached.
_ZEROS = memoryview(bytes(4 << 20))
# Bytes of each page looked at before the page is compared whole: data
# seldom has all of them zero, so most pages are told apart by these alone,
# and for all the pages of a piece at once. They lie in the first and the
# last cache line of the page: each further line would cost a cache miss
# per page.
_SAMPLES = (0, 3, PAGE - 4, PAGE - 1)
# translate() table: 0 stays 0, any other byte becomes 1.
_NONZERO_IS_ONE = b'\x00' + b'\x01' * 255


def _is_zero(data, start, end):
    """True when data[start:end] is all zero (compared in place)."""
    while end - start > len(_ZEROS):
        if not data.startswith(_ZEROS, start):
            return False
        start += len(_ZEROS)
    return data.startswith(_ZEROS[:end - start], start)


def _page_flags(data, first, count):
    """One byte per page from ``first``: 1 if a sampled byte is not zero.

    A page flagged 0 may still hold data elsewhere: it is only a
    candidate hole, to be confirmed.
    """
    end = first + count * PAGE
    bits = 0
    for sample in _SAMPLES:
        # Every PAGE-th byte: one per page, gathered in C.
        bits |= int.from_bytes(data[first + sample:end:PAGE], 'little')
    return bits.to_bytes(count, 'little').translate(_NONZERO_IS_ONE)


def _page_runs(data, first, count):
    """Yield (start, end) of the non-zero runs among ``count`` whole pages."""
    flags = _page_flags(data, first, count)
    page = 0
    while page < count:
        flag = flags[page]
        following = flags.find(b'\x00' if flag else b'\x01', page)
        if following < 0:
            following = count
        start, end = first + page * PAGE, first + following * PAGE
        if flag:
            yield start, end
        elif not _is_zero(data, start, end):
            # Candidates that are not all zero: page by page.
            for at in range(start, end, PAGE):
                if not _is_zero(data, at, at + PAGE):
                    yield at, at + PAGE
        page = following


def _pieces(data, offset):
    """Yield (start, end, whole_pages) covering ``data`` in order.

    Pages are aligned to the file, not to ``data``: ``data`` lands at
    ``offset``, so it may begin and end with a partial page.
    """
    length = len(data)
    head = min(-offset % PAGE, length)
    count = (length - head) // PAGE
    tail = head + count * PAGE
    if head:
        yield 0, head, False
    if count:
        yield head, tail, True
    if tail < length:
        yield tail, length, False


def _nonzero_runs(data, offset):
    """Yield (start, end) of the runs of non-zero pages in ``data``."""
    run_start = run_end = None
    for start, end, whole_pages in _pieces(data, offset):
        if whole_pages:
            runs = _page_runs(data, start, (end - start) // PAGE)
        elif _is_zero(data, start, end):
            runs = ()
        else:
            runs = ((start, end),)
        for run in runs:
            if run[0] == run_end:       # continues the run before it
                run_end = run[1]
                continue
            if run_end is not None:
                yield run_start, run_end
            run_start, run_end = run
    if run_end is not None:
        yield run_start, run_end


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0)


def partial_prefix(dest_path):
    """``.DEST.partial-``: the hidden name a RAW has until it is complete."""
    head, tail = os.path.split(dest_path)
    return os.path.join(head, '.%s.partial-' % tail)


def publish(path, dest_path):
    """Give the finished file at ``path`` the name ``dest_path``.

    The name appears only now, complete, and never replaces a file that
    took it meanwhile: link(2) refuses an existing name, where rename(2)
    would overwrite it.
    """
    try:
        os.link(path, dest_path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise exception.XenImportError(
                'cannot create %s: %s' % (dest_path, exc.strerror))
        # A filesystem without hard links: check, then rename.
        if os.path.lexists(dest_path):
            raise exception.XenImportError(
                'cannot create %s: %s' % (dest_path,
                                          os.strerror(errno.EEXIST)))
        os.rename(path, dest_path)
        return
    os.unlink(path)


class SparseWriter(object):
    """Write a RAW disk image at ``path``, which must not exist yet.

    :param prefix: when given, ``path`` is ignored and the file is created
        as ``prefix`` and a random suffix (O_EXCL, retried on a clash).
    """

    def __init__(self, path, prefix=None):
        self.data_bytes = 0
        for _attempt in range(100):
            self.path = path if prefix is None else (
                prefix + os.urandom(4).hex())
            try:
                self._fd = os.open(self.path, _CREATE, 0o600)
                return
            except FileExistsError:
                if prefix is None:
                    raise exception.XenImportError(
                        'cannot create %s: %s' % (self.path,
                                                  os.strerror(errno.EEXIST)))
            except OSError as exc:
                raise exception.XenImportError(
                    'cannot create %s: %s' % (self.path, exc.strerror))
        raise exception.XenImportError(
            'cannot create a file named %s*: every name tried exists'
            % prefix)

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
