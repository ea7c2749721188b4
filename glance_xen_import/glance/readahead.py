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

"""Read the RAW into the page cache just ahead of Glance's upload.

After the plugin hands the RAW back, Glance's ``_ImportToStore`` reads it
in one thread that also hashes it (md5 and sha512) and writes it to the
store. The RAW is sparse: its holes are not in the page cache, so each of
Glance's reads of a hole makes the kernel allocate and zero the pages
there, in Glance's thread, between two hashes. Profiled in glance-api
this was about a third of the upload of a mostly empty disk, and
``posix_fadvise(WILLNEED)`` does not help: the kernel reads ahead only
blocks that exist.

:class:`Readahead` reads the RAW from a thread of its own, on another
core, staying at most ``lead`` bytes ahead of the position of Glance's
file descriptor (``/proc/self/fdinfo``), so the page cache it fills is
bounded whatever the size of the disk. It stops at the end of the file,
when Glance closes the file, or when Glance has not opened it within
``wait_open`` seconds. It only reads: whatever happens to it, Glance's
upload reads the same bytes without it.
"""

import os
import threading
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

CHUNK = 1024 * 1024
DEFAULT_LEAD = 256 * CHUNK
FD_DIR = '/proc/self/fd'
FDINFO_DIR = '/proc/self/fdinfo'
# How long to sleep when there is nothing to do yet: at Glance's pace
# (under 1 GB/s, bound by its hashing) the reader moves a few MiB by then.
IDLE = 0.01


def supported():
    """Whether this system shows other descriptors' positions."""
    return os.path.isdir(FD_DIR) and os.path.isdir(FDINFO_DIR)


def reader_fd(path, exclude):
    """A descriptor of this process open on ``path``, other than ours."""
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return None
    for name in names:
        if not name.isdigit() or int(name) == exclude:
            continue
        try:
            if os.readlink(os.path.join(FD_DIR, name)) == path:
                return int(name)
        except OSError:
            continue
    return None


def fd_position(fd, path):
    """The file position of ``fd`` if it is still open on ``path``."""
    try:
        if os.readlink(os.path.join(FD_DIR, str(fd))) != path:
            return None
        with open(os.path.join(FDINFO_DIR, str(fd))) as f:
            for line in f:
                if line.startswith('pos:'):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Readahead(object):
    """Keep the next ``lead`` bytes of ``path`` ahead of its reader cached.

    :param path: the file Glance is about to read
    :param lead: how far ahead of the reader to read, in bytes
    :param wait_open: seconds to wait for the reader to open the file
        (Glance's next task opens it at once)
    :param chunk: bytes per read
    """

    def __init__(self, path, lead=DEFAULT_LEAD, wait_open=30.0,
                 chunk=CHUNK):
        self.path = os.path.realpath(path)
        self.lead = lead
        self.wait_open = wait_open
        self.chunk = chunk
        self.done = 0          # bytes read so far
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name='xen-ova-readahead', daemon=True)

    def start(self):
        """Start following the reader; a no-op where /proc cannot tell."""
        if supported():
            self._thread.start()
        return self

    def stop(self, timeout=None):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self):
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            LOG.debug('xen-ova readahead of %s not started: %s',
                      self.path, exc)
            return
        try:
            # No kernel readahead on top of ours: the lead stays the bound.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            self._follow(fd, os.fstat(fd).st_size)
        except OSError as exc:
            LOG.debug('xen-ova readahead of %s stopped: %s', self.path, exc)
        finally:
            os.close(fd)

    def _wait_for_reader(self, own_fd):
        deadline = time.monotonic() + self.wait_open
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not os.path.exists(self.path):    # the import was reverted
                return None
            fd = reader_fd(self.path, own_fd)
            if fd is not None:
                return fd
            self._stop.wait(IDLE)
        return None

    def _follow(self, fd, size):
        reader = self._wait_for_reader(fd)
        if reader is None:
            return
        buf = bytearray(self.chunk)
        while self.done < size and not self._stop.is_set():
            position = fd_position(reader, self.path)
            if position is None:    # Glance is done with the file
                return
            if self.done - position >= self.lead:
                self._stop.wait(IDLE)
                continue
            if self.done < position:
                self.done = position
            count = os.preadv(fd, [buf], self.done)
            if count <= 0:
                return
            self.done += count
