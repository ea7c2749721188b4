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

"""The RAW's readahead follows a reader it did not open.

The reader is a plain descriptor of this process, as Glance's is in
glance-api; which pages are cached is asked of the kernel (mincore(2)),
not of the code under test.
"""

import ctypes
import ctypes.util
import mmap
import os
import time

import pytest

from glance_xen_import.glance import readahead

MiB = 1024 * 1024
SIZE = 16 * MiB
LEAD = 4 * MiB

pytestmark = pytest.mark.skipif(not readahead.supported(),
                                reason='needs /proc/self/fdinfo')


def cached_pages(path):
    """Per page of ``path``: whether it is in the page cache (mincore)."""
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                             ctypes.c_char_p]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
        return [bool(b & 1) for b in vec.raw]
    finally:
        libc.munmap(addr, size)


def cached_bytes(path):
    return sum(cached_pages(path)) * mmap.PAGESIZE


def wait_until(predicate, what, limit=300.0):
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, 'still waiting for ' + what
        time.sleep(0.01)


def holes_are_cached_when_read(directory):
    """Whether reading a hole leaves a page in the cache (not on tmpfs)."""
    probe = os.path.join(directory, 'probe')
    with open(probe, 'wb') as f:
        f.truncate(mmap.PAGESIZE)
    with open(probe, 'rb') as f:
        f.read()
    try:
        return cached_bytes(probe) > 0
    finally:
        os.remove(probe)


@pytest.fixture
def sparse(tmp_path):
    """A file of SIZE bytes, all hole: none of it is cached yet."""
    path = str(tmp_path / 'image.xenova.raw')
    with open(path, 'wb') as f:
        f.truncate(SIZE)
    assert cached_bytes(path) == 0
    return path


def test_reads_up_to_lead_ahead_of_the_reader(sparse):
    if not holes_are_cached_when_read(os.path.dirname(sparse)):
        pytest.skip('this file system does not cache holes that are read')
    reader = os.open(sparse, os.O_RDONLY)
    ahead = readahead.Readahead(sparse, lead=LEAD, chunk=MiB).start()
    try:
        wait_until(lambda: ahead.done == LEAD, 'the first lead')
        # It waits for the reader instead of reading further.
        time.sleep(0.2)
        assert ahead.done == LEAD
        pages = cached_pages(sparse)
        per_mib = MiB // mmap.PAGESIZE
        assert all(pages[:4 * per_mib])
        assert not any(pages[4 * per_mib:])

        os.lseek(reader, 10 * MiB, os.SEEK_SET)
        wait_until(lambda: ahead.done == 14 * MiB, 'the reader at 10 MiB')
        pages = cached_pages(sparse)
        assert all(pages[10 * per_mib:14 * per_mib])
        assert not any(pages[14 * per_mib:])
    finally:
        os.close(reader)
        ahead.stop(30)


def test_reads_to_the_end_and_stops(sparse):
    reader = os.open(sparse, os.O_RDONLY)
    try:
        os.lseek(reader, SIZE - MiB, os.SEEK_SET)
        ahead = readahead.Readahead(sparse, lead=LEAD, chunk=MiB).start()
        wait_until(lambda: not ahead._thread.is_alive(), 'the end')
        assert ahead.done == SIZE
    finally:
        os.close(reader)


def test_stops_when_the_reader_closes_the_file(sparse):
    reader = os.open(sparse, os.O_RDONLY)
    ahead = readahead.Readahead(sparse, lead=LEAD, chunk=MiB).start()
    wait_until(lambda: ahead.done == LEAD, 'the first lead')
    os.close(reader)
    wait_until(lambda: not ahead._thread.is_alive(), 'the thread to end')
    assert ahead.done == LEAD


def test_gives_up_when_nobody_opens_the_file(sparse):
    ahead = readahead.Readahead(sparse, wait_open=0.2).start()
    wait_until(lambda: not ahead._thread.is_alive(), 'the thread to end')
    assert ahead.done == 0
    assert cached_bytes(sparse) == 0


def test_gives_up_when_the_file_is_removed(sparse):
    ahead = readahead.Readahead(sparse, wait_open=600).start()
    os.remove(sparse)
    wait_until(lambda: not ahead._thread.is_alive(), 'the thread to end')
    assert ahead.done == 0


def test_missing_file_starts_nothing(tmp_path):
    ahead = readahead.Readahead(str(tmp_path / 'gone')).start()
    wait_until(lambda: not ahead._thread.is_alive(), 'the thread to end')
    assert ahead.done == 0
