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

"""One read-only interface over NTFS, FAT, ext2/3/4 and XFS volumes.

Paths are always written with '/' here. NTFS and FAT look names up
case-insensitively (as Windows does); ext and XFS are case-sensitive and
follow symbolic links inside the volume, so /etc/os-release ->
../usr/lib/os-release resolves the way it would on the running guest.
"""

import stat

import pyfsext
import pyfsfat
import pyfsntfs
import pyfsxfs

from glance_xen_import.inspect import volume

# Longest chain of symbolic links followed (Linux's own limit is 40).
MAX_SYMLINK_HOPS = 40
# Names returned by one directory listing, whatever the directory holds.
MAX_DIR_ENTRIES = 65536
# Longest symbolic link target taken seriously.
MAX_LINK_TARGET = 4096

# libyal readers report damaged or unexpected structures as OSError.
_READ_ERRORS = (OSError, ValueError, UnicodeError)

_FILE_ATTRIBUTE_DIRECTORY = 0x10
_FILE_ATTRIBUTE_REPARSE_POINT = 0x400


class FileTooLarge(Exception):
    """A file is bigger than the caller's bound; it was not read."""

    def __init__(self, path, size, limit):
        super().__init__('%s is %d bytes, more than the %d read' %
                         (path, size, limit))
        self.path = path
        self.size = size


class Filesystem:
    """A mounted-in-process volume: look up, list and read files."""

    kind = None
    case_insensitive = False

    def __init__(self, handle, location):
        self._handle = handle
        self.location = location

    # -- per-library hooks -------------------------------------------------

    def _entry_by_path(self, path):
        raise NotImplementedError

    def _is_dir(self, entry):
        raise NotImplementedError

    def _link_target(self, entry):
        return None

    # -- public interface --------------------------------------------------

    def lookup(self, path):
        """The entry at path (links followed), or None."""
        try:
            return self._resolve(path)[0]
        except _READ_ERRORS:
            return None

    def realpath(self, path):
        """path with its links followed ('/a/b'), or None if missing."""
        try:
            entry, components = self._resolve(path)
        except _READ_ERRORS:
            return None
        return None if entry is None else '/' + '/'.join(components)

    def exists(self, path):
        return self.lookup(path) is not None

    def is_dir(self, path):
        entry = self.lookup(path)
        return entry is not None and self._safe_is_dir(entry)

    def is_file(self, path):
        entry = self.lookup(path)
        return entry is not None and not self._safe_is_dir(entry)

    def size(self, path):
        entry = self.lookup(path)
        if entry is None or self._safe_is_dir(entry):
            return None
        try:
            return entry.get_size()
        except _READ_ERRORS:
            return None

    def listdir(self, path, limit=MAX_DIR_ENTRIES):
        """Names in a directory (at most limit of them); [] if none."""
        entry = self.lookup(path)
        if entry is None or not self._safe_is_dir(entry):
            return []
        names = []
        try:
            count = entry.get_number_of_sub_file_entries()
            for index in range(min(count, limit)):
                name = entry.get_sub_file_entry(index).get_name()
                if name and name not in ('.', '..'):
                    names.append(name)
        except _READ_ERRORS:
            pass
        return names

    def read(self, path, limit, length=None):
        """The file's bytes, or None if it is missing or not a file.

        Raises FileTooLarge rather than reading more than limit bytes,
        unless length asks for just the first bytes of the file.
        """
        entry = self.lookup(path)
        if entry is None or self._safe_is_dir(entry):
            return None
        try:
            size = entry.get_size()
            if length is not None:
                size = min(size, length)
            elif size > limit:
                raise FileTooLarge(path, size, limit)
            if size == 0:
                return b''
            return entry.read_buffer_at_offset(size, 0)
        except _READ_ERRORS:
            return None

    def open(self, path, limit):
        """A seekable file object over the file (for another reader)."""
        entry = self.lookup(path)
        if entry is None or self._safe_is_dir(entry):
            return None
        try:
            size = entry.get_size()
        except _READ_ERRORS:
            return None
        if size > limit:
            raise FileTooLarge(path, size, limit)
        return volume.EntryReader(entry, size)

    def find(self, directory, name):
        """The real name of directory/name matched case-insensitively."""
        wanted = name.lower()
        for candidate in self.listdir(directory):
            if candidate.lower() == wanted:
                return candidate
        return None

    def close(self):
        try:
            self._handle.close()
        except _READ_ERRORS:
            pass

    # -- helpers -----------------------------------------------------------

    def _safe_is_dir(self, entry):
        try:
            return self._is_dir(entry)
        except _READ_ERRORS:
            return False

    def _root(self):
        return self._handle.get_root_directory()

    def _resolve(self, path):
        pending = [p for p in path.split('/') if p not in ('', '.')]
        resolved = []
        entry = self._root()
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == '..':
                if resolved:
                    resolved.pop()
                entry = self._entry_at(resolved)
                continue
            candidate = resolved + [name]
            entry = self._entry_at(candidate)
            if entry is None:
                return None, None
            target = self._link_target(entry)
            if target is None:
                resolved = candidate
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS or not target:
                return None, None
            if target.startswith('/'):
                resolved = []
            pending = [p for p in target.split('/')
                       if p not in ('', '.')] + pending
            entry = self._entry_at(resolved)
        return entry, resolved

    def _entry_at(self, components):
        if not components:
            return self._root()
        return self._entry_by_path('/' + '/'.join(components))


class _WindowsFilesystem(Filesystem):
    """NTFS and FAT: backslash paths, case-insensitive, no links."""

    case_insensitive = True

    def _resolve(self, path):
        components = [p for p in path.split('/') if p not in ('', '.')]
        if '..' in components:
            return None, None
        return self._entry_at(components), components

    def _entry_by_path(self, path):
        return self._handle.get_file_entry_by_path(path.replace('/', '\\'))

    def _is_dir(self, entry):
        raise NotImplementedError


class NtfsFilesystem(_WindowsFilesystem):
    kind = 'ntfs'

    def _is_dir(self, entry):
        return bool(entry.has_directory_entries_index())


class FatFilesystem(_WindowsFilesystem):
    kind = 'fat'

    def _is_dir(self, entry):
        flags = entry.get_file_attribute_flags()
        # The root directory has no directory entry, hence no attributes.
        if flags is None:
            return entry.get_name() is None
        return bool(flags & _FILE_ATTRIBUTE_DIRECTORY)


class _UnixFilesystem(Filesystem):

    def _entry_by_path(self, path):
        return self._handle.get_file_entry_by_path(path)

    def _is_dir(self, entry):
        return stat.S_ISDIR(entry.get_file_mode())

    def _link_target(self, entry):
        if not stat.S_ISLNK(entry.get_file_mode()):
            return None
        target = entry.get_symbolic_link_target()
        if target is None or len(target) > MAX_LINK_TARGET:
            return ''
        return target


class ExtFilesystem(_UnixFilesystem):
    kind = 'ext'


class XfsFilesystem(_UnixFilesystem):
    kind = 'xfs'


# Probe order matters: an NTFS boot sector also looks enough like FAT to a
# loose check, so NTFS is asked first.
_READERS = (
    (pyfsntfs, NtfsFilesystem),
    (pyfsfat, FatFilesystem),
    (pyfsext, ExtFilesystem),
    (pyfsxfs, XfsFilesystem),
)


def open_filesystem(fileobj, location, damaged=None):
    """A Filesystem for the volume in fileobj, or None if none is known.

    Raises nothing for an unknown or damaged volume: that is None, and
    the kind of a volume whose signature matched but which did not open
    is appended to the list ``damaged``.
    """
    for module, cls in _READERS:
        try:
            fileobj.seek(0)
            if not module.check_volume_signature_file_object(fileobj):
                continue
        except _READ_ERRORS:
            continue
        try:
            fileobj.seek(0)
            handle = module.volume()
            handle.open_file_object(fileobj)
        except _READ_ERRORS:
            if damaged is not None:
                damaged.append(cls.kind)
            continue
        return cls(handle, location)
    return None
