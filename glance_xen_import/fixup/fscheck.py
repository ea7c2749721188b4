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

"""Independent checks of a Linux file system before and after an edit.

The in-place writer maps files with libyal; these checks ask the file
systems' own maintained tools instead, read-only:

* ext2/3/4: ``e2fsck -fn`` must find nothing to fix (no shared blocks, no
  journal waiting for recovery, which could replay old blocks over an
  edit) before and after, and ``debugfs cat`` must read back the new
  content. e2fsprogs reads the partition inside the image through its
  ``?offset=`` I/O option, so nothing is copied.
* XFS: the tools take no offset, so the partition is copied sparsely to a
  scratch file (cost in proportion to its allocated bytes). ``xfs_repair
  -n`` must find nothing to fix, ``xfs_db`` must map each file to the
  same disk blocks as the writer did, and on reflink file systems a file
  is edited only where its allocation group shares no block at all.
"""

import os
import re
import shutil
import subprocess
import tempfile

from glance_xen_import import exception

# A check of a large, busy file system takes minutes, not hours.
CHECK_TIMEOUT = 3600
_COPY_CHUNK = 8 << 20


def _run(argv, what):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=CHECK_TIMEOUT)
    except FileNotFoundError:
        raise exception.GuestError('%s is not installed' % argv[0])
    except subprocess.TimeoutExpired:
        raise exception.GuestError('%s took too long' % what)
    return done


class ExtChecker(object):
    """e2fsprogs over an ext partition at ``start`` inside ``image_path``."""

    def __init__(self, image_path, start, size):
        self._device = '%s?offset=%d' % (image_path, start)

    def check(self, when):
        # e2fsck -n skips a journal that waits for recovery and still
        # passes; replaying it at mount could write old blocks over an
        # edit, so such a file system is not edited at all.
        header = _run(['dumpe2fs', '-h', self._device], 'dumpe2fs')
        features = re.search(rb'^Filesystem features:(.*)$', header.stdout,
                             re.MULTILINE)
        if header.returncode != 0 or features is None:
            raise exception.GuestError('dumpe2fs cannot read the superblock')
        if b'needs_recovery' in features.group(1).split():
            raise exception.GuestError(
                'the ext journal needs recovery; the guest was not shut '
                'down cleanly')
        done = _run(['e2fsck', '-fn', self._device], 'e2fsck')
        if done.returncode != 0:
            raise exception.GuestError(
                'e2fsck -fn finds the file system unclean %s the edit '
                '(exit %d)' % (when, done.returncode))

    def read(self, path, expected_size):
        if not re.match(r'^/[\w./+-]+$', path):
            raise exception.GuestError('%s is not a path debugfs reads '
                                       'safely' % path)
        done = _run(['debugfs', '-R', 'cat "%s"' % path, self._device],
                    'debugfs')
        if done.returncode != 0:
            raise exception.GuestError('debugfs cannot read %s' % path)
        return done.stdout[:expected_size + 1]

    def close(self):
        pass


class XfsChecker(object):
    """xfsprogs over a sparse scratch copy of an XFS partition."""

    def __init__(self, image_path, start, size, scratch_dir):
        self._start = start
        self._dir = tempfile.mkdtemp(prefix='.xen-import-xfs-',
                                     dir=scratch_dir)
        self._copy = os.path.join(self._dir, 'partition.xfs')
        try:
            _sparse_copy(image_path, start, size, self._copy)
            self._reflink = b'REFLINK' in self._db('version').upper()
            geometry = self._db('sb 0', 'p blocksize agblocks')
            values = dict(re.findall(rb'(\w+) = (\d+)', geometry))
            self._blocksize = int(values[b'blocksize'])
            self._agblocks = int(values[b'agblocks'])
        except (KeyError, ValueError):
            self.close()
            raise exception.GuestError('xfs_db cannot read the superblock')
        except BaseException:
            self.close()
            raise

    def _db(self, *commands):
        argv = ['xfs_db', '-r', '-f']
        for command in commands:
            argv += ['-c', command]
        done = _run(argv + [self._copy], 'xfs_db')
        if done.returncode != 0:
            raise exception.GuestError('xfs_db fails on the file system')
        return done.stdout

    def check(self, when):
        # force_geometry: trust a one-AG superblock rather than give up.
        done = _run(['xfs_repair', '-n', '-o', 'force_geometry', '-f',
                     self._copy], 'xfs_repair')
        if done.returncode != 0:
            raise exception.GuestError(
                'xfs_repair -n finds the file system unclean %s the edit '
                '(exit %d)' % (when, done.returncode))

    def disk_map(self, path):
        """[(partition offset, length)] of the file, as xfs_db sees it."""
        if not re.match(r'^/[\w./+-]+$', path):
            raise exception.GuestError('%s is not a path xfs_db reads '
                                       'safely' % path)
        out = self._db('path %s' % path, 'bmap')
        extents = []
        for match in re.finditer(
                rb'startblock \d+ \((\d+)/(\d+)\) count (\d+) flag (\d+)',
                out):
            agno, agbno, count, flag = (int(g) for g in match.groups())
            if flag:
                raise exception.GuestError('%s has unwritten extents' % path)
            if self._reflink:
                self._check_unshared(agno, path)
            block = agno * self._agblocks + agbno
            extents.append((block * self._blocksize,
                            count * self._blocksize))
        return extents

    def _check_unshared(self, agno, path):
        # With reflink a block may belong to several files. Edit only where
        # the allocation group's reference count tree is one empty leaf:
        # then no block of that group is shared.
        out = self._db('agf %d' % agno, 'addr refcntroot', 'p')
        values = dict(re.findall(rb'^(level|numrecs) = (\d+)$', out,
                                 re.MULTILINE))
        if values.get(b'level') != b'0' or values.get(b'numrecs') != b'0':
            raise exception.GuestError(
                '%s lies in an XFS allocation group with shared (reflinked) '
                'blocks' % path)

    def apply(self, writes):
        """Mirror (partition offset, bytes) writes into the scratch copy."""
        fd = os.open(self._copy, os.O_WRONLY)
        try:
            for offset, data in writes:
                os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def close(self):
        shutil.rmtree(self._dir, ignore_errors=True)


def _sparse_copy(image_path, start, size, dest):
    """Copy image bytes [start, start + size) to dest, holes kept."""
    with open(image_path, 'rb') as src, open(dest, 'wb') as out:
        out.truncate(size)
        fd = src.fileno()
        position = start
        end = start + size
        while position < end:
            try:
                data_at = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            if data_at >= end:
                break
            hole_at = min(os.lseek(fd, data_at, os.SEEK_HOLE), end)
            offset = data_at
            while offset < hole_at:
                chunk = os.pread(fd, min(_COPY_CHUNK, hole_at - offset),
                                 offset)
                if not chunk:
                    break
                os.pwrite(out.fileno(), chunk, offset - start)
                offset += len(chunk)
            position = hole_at
