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

"""The offline Linux fixup: Xen device names, consoles and MAC bindings.

For each file system of the guest that holds configuration (the root, and
a separate /boot), in this order:

1. plan: read each known configuration file (regular files only, at most
   MAX_FILE_BYTES) and compute its same-length rewrite (linuxconf);
2. check the file system with its own tools before anything is written
   (fscheck), and for XFS compare their block map with ours;
3. write the changed bytes in place (inplace), then read them back with
   the independent tool and check the file system again;
4. on any doubt, put every original byte of that file system back.

Nothing is mounted and no guest code runs.
"""

import logging

from glance_xen_import import exception
from glance_xen_import.fixup import fscheck
from glance_xen_import.fixup import initrd
from glance_xen_import.fixup import inplace
from glance_xen_import.fixup import linuxconf
from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import lvm
from glance_xen_import.inspect import volume

LOG = logging.getLogger(__name__)

# Configuration files are small; a bigger one is not edited.
MAX_FILE_BYTES = 1 << 20
MAX_DIRECTORY_FILES = 256

_WRITERS = {'ext': inplace.ExtFile, 'xfs': inplace.XfsFile}


class LinuxFixupResult(object):
    """What the Linux fixup changed, and what it could not change."""

    def __init__(self, prefix=b'sd'):
        self.files = []        # 'location:/path:edit', for the report
        self.not_edited = []   # 'location:/path: reason'
        self.changed_bytes = 0
        self._prefix = prefix.decode()
        # initrd.Repair.report of the initramfs repair, once written.
        self.initramfs = None

    @property
    def applied(self):
        """Short action names for xen_import_fixups_applied."""
        names = {'device-names': 'device-names:%s' % self._prefix,
                 'console': 'console:tty0', 'mac-binding': 'mac-binding',
                 initrd.EDIT: initrd.EDIT}
        done = {entry.rsplit(':', 1)[1] for entry in self.files}
        return [names[edit] for edit in sorted(done)]

    # Files left alone are not a reason of their own: inspection still
    # sees what they name (xvd-device-names), and says so.
    skipped = None

    def to_dict(self):
        return {'applied': self.applied, 'files': list(self.files),
                'not_edited': list(self.not_edited),
                'changed_bytes': self.changed_bytes,
                'initramfs': self.initramfs}


def needs_linux_fixup(guest):
    """True for a Linux guest that names Xen things or lacks KVM drivers.

    That is: its configuration names Xen devices, consoles or MACs, or
    its default initramfs holds no KVM storage driver.
    """
    linux = getattr(guest, 'linux', None)
    if linux is None:
        return False
    return bool(linux.xvd_references or linux.xen_console
                or getattr(linux, 'mac_bindings', None)
                or initrd.needs_repair(guest))


def _kind(guest, location):
    for info in guest.volumes:
        if info.location == location:
            return info.kind
    return None


def _candidates(image_path, start, size, location, files, directories):
    """[(path, edits)] of the files to look at on one file system."""
    found = list(files)
    with volume.ImageFile(image_path) as image:
        fs = filesystem.open_filesystem(image.slice(start, size), location)
        if fs is None:
            return found
        try:
            for directory, pattern, edits in directories:
                names = fs.listdir(directory, limit=MAX_DIRECTORY_FILES)
                for name in sorted(names):
                    if pattern.search(name):
                        found.append(('%s/%s' % (directory, name), edits))
        finally:
            fs.close()
    return found


class _Volume(object):
    """The planned edits on one file system, applied all or none."""

    def __init__(self, image_path, location, start, size, kind, result):
        self.image_path = image_path
        self.location = location
        self.start = start
        self.size = size
        self.kind = kind
        self.result = result
        self.edits = []   # (MappedFile, new bytes, changed offsets, names)
        self.reports = {}  # id(MappedFile) -> report, for a repaired initrd

    def plan(self, files, directories, prefix):
        writer = _WRITERS[self.kind]
        for path, edits in _candidates(self.image_path, self.start,
                                       self.size, self.location, files,
                                       directories):
            try:
                mapped = writer(self.image_path, self.start, self.size,
                                path, max_size=MAX_FILE_BYTES)
            except inplace.NotPlainFile:
                # Links are edited through their targets' own entries,
                # never followed: they may point anywhere in the volume.
                continue
            except exception.GuestError as exc:
                self._not_edited(path, exc)
                continue
            new, names = linuxconf.rewrite(bytes(mapped.data), edits, prefix)
            if new != mapped.data:
                changed = {i for i, (a, b) in enumerate(zip(mapped.data, new))
                           if a != b}
                self.edits.append((mapped, new, changed, names))

    def _not_edited(self, path, reason):
        self.result.not_edited.append('%s:%s: %s' % (self.location, path,
                                                     reason))

    def _checker(self, scratch_dir):
        if self.kind == 'ext':
            return fscheck.ExtChecker(self.image_path, self.start, self.size)
        return fscheck.XfsChecker(self.image_path, self.start, self.size,
                                  scratch_dir)

    def apply(self, scratch_dir):
        if not self.edits:
            return
        try:
            checker = self._checker(scratch_dir)
        except (exception.GuestError, OSError) as exc:
            # No room for XFS's scratch copy is a reason, not a failure.
            return self._refuse(exc)
        written = []
        try:
            checker.check('before')
            if self.kind == 'xfs':
                self._compare_maps(checker)
            for mapped, new, changed, _ in self.edits:
                written.append((mapped, changed))
                mapped.write_back(new, changed)
            self._verify(checker)
        except (exception.GuestError, OSError) as exc:
            for mapped, changed in written:
                mapped.write_back(mapped.data, changed)
            return self._refuse(exc)
        finally:
            checker.close()
        for mapped, new, changed, names in self.edits:
            for name in names:
                self.result.files.append('%s:%s:%s' % (
                    self.location, mapped.path, name))
            self.result.changed_bytes += len(changed)
            if id(mapped) in self.reports:
                self.result.initramfs = self.reports[id(mapped)]

    def _refuse(self, reason):
        LOG.warning('Linux fixup not applied on %s: %s', self.location,
                    reason)
        for mapped, _, _, _ in self.edits:
            self._not_edited(mapped.path, reason)

    def _compare_maps(self, checker):
        for mapped, _, _, _ in self.edits:
            theirs = checker.disk_map(mapped.path)
            ours = [(disk - self.start, length)
                    for _, disk, length in mapped.extents]
            if _blocks(theirs) != _blocks(ours):
                raise exception.GuestError(
                    'xfs_db maps %s to other blocks than libfsxfs does'
                    % mapped.path)

    def _verify(self, checker):
        with volume.ImageFile(self.image_path) as image:
            for mapped, new, _, _ in self.edits:
                for disk, offset, length in mapped.disk_ranges(0,
                                                               mapped.size):
                    if image.pread(length, disk) != new[offset:
                                                        offset + length]:
                        raise exception.GuestError(
                            '%s reads back other bytes than written'
                            % mapped.path)
        if self.kind == 'ext':
            for mapped, new, _, _ in self.edits:
                if checker.read(mapped.path, mapped.size) != new:
                    raise exception.GuestError(
                        'debugfs reads other bytes from %s than written'
                        % mapped.path)
        else:
            checker.apply([(disk - self.start, new[offset:offset + length])
                           for mapped, new, _, _ in self.edits
                           for disk, offset, length in mapped.disk_ranges(
                               0, mapped.size)])
        checker.check('after')


def _blocks(extents):
    """Merge adjacent (offset, length) runs, so maps compare by coverage."""
    merged = []
    for offset, length in sorted(extents):
        if merged and merged[-1][0] + merged[-1][1] == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((offset, length))
    return merged


def apply_linux_fixup(image_path, layout, guest, bus, scratch_dir,
                      scsi_model=None):
    """Make a Linux guest boot on ``bus`` (hw_disk_bus).

    Its Xen names are rewritten, and its initramfs is given the drivers
    of that bus (with scsi_model) if it holds no KVM storage driver.

    :returns: a LinuxFixupResult. Files it could not edit safely are
        listed in ``not_edited`` and left byte for byte as they were.
    """
    prefix = linuxconf.disk_prefix(bus)
    result = LinuxFixupResult(prefix)
    if not needs_linux_fixup(guest):
        return result
    linux = guest.linux
    targets = [(linux.location, linuxconf.ROOT_FILES,
                linuxconf.ROOT_DIRECTORIES)]
    boot_files = [(name, edits) for name, edits in linuxconf.BOOT_FILES]
    boot_dirs = list(linuxconf.BOOT_DIRECTORIES)
    boot_location = getattr(linux, 'boot_location', None)
    if boot_location:
        targets.append((boot_location, [('/' + name, edits)
                                        for name, edits in boot_files],
                        [('/' + d, p, e) for d, p, e in boot_dirs]))
    else:
        targets[0] = (linux.location,
                      list(linuxconf.ROOT_FILES) + [
                          ('/boot/' + name, edits)
                          for name, edits in boot_files],
                      list(linuxconf.ROOT_DIRECTORIES) + [
                          ('/boot/' + d, p, e) for d, p, e in boot_dirs])
    volumes = {}
    for location, files, directories in targets:
        kind = _kind(guest, location)
        if kind not in _WRITERS:
            result.not_edited.append(
                '%s: a %s file system is not edited in place'
                % (location, kind))
            continue
        try:
            start, size = _location_extent(image_path, layout, location)
        except exception.GuestError as exc:
            result.not_edited.append('%s: not edited in place: %s'
                                     % (location, exc))
            continue
        target = _Volume(image_path, location, start, size, kind, result)
        target.plan(files, directories, prefix)
        volumes[location] = target
    if initrd.needs_repair(guest):
        _plan_initrd(image_path, layout, guest, (bus, scsi_model),
                     scratch_dir, volumes, result)
    for target in volumes.values():
        target.apply(scratch_dir)
    if result.files:
        LOG.info('Linux fixup applied: %s', ', '.join(result.files))
    return result


def _plan_initrd(image_path, layout, guest, bus, scratch_dir, volumes,
                 result):
    """Add the initramfs repair to the edits of the volume holding it."""
    linux = guest.linux
    where = linux.initramfs.path
    location, _, path = where.partition(':')
    entry = linux.boot_entry
    count = len(entry.initrds) if entry is not None else 0
    if count != 1 or ',' in where:
        result.not_edited.append(
            '%s: initramfs not repaired: the default entry loads %d initrd '
            'files; only a single one is repaired' % (where, count))
        return
    kind = _kind(guest, location)
    try:
        if kind not in _WRITERS:
            raise exception.GuestError('a %s file system is not edited in '
                                       'place' % kind)
        start, size = _location_extent(image_path, layout, location)
        mapped = _WRITERS[kind](image_path, start, size, path,
                                max_size=initrd.MAX_INITRD_BYTES)
        repair = _repair(image_path, layout, guest, location, (start, size),
                         mapped, bus, scratch_dir)
    except exception.GuestError as exc:
        LOG.warning('initramfs %s not repaired: %s', where, exc)
        result.not_edited.append('%s: initramfs not repaired: %s'
                                 % (where, exc))
        return
    target = volumes.get(location)
    if target is None:
        target = _Volume(image_path, location, start, size, kind, result)
        volumes[location] = target
    kept = repair.report['kept_prefix_bytes']
    target.edits.append((mapped, repair.new, range(kept, mapped.size),
                         [initrd.EDIT]))
    target.reports[id(mapped)] = repair.report


def _repair(image_path, layout, guest, location, extent, mapped, bus,
            scratch_dir):
    linux = guest.linux
    root_extent = (extent if location == linux.location else
                   _location_extent(image_path, layout, linux.location))
    with volume.ImageFile(image_path) as image:
        opened = []
        try:
            for where, (start, size) in ((linux.location, root_extent),
                                         (location, extent)):
                fs = filesystem.open_filesystem(image.slice(start, size),
                                                where)
                if fs is None:
                    raise exception.GuestError('%s does not open' % where)
                opened.append(fs)
            return initrd.plan(bytes(mapped.data), mapped.path, location,
                               opened[0], opened[1], guest, bus[0], bus[1],
                               scratch_dir)
        finally:
            for fs in opened:
                fs.close()


def _location_extent(image_path, layout, location):
    """(disk offset, size) of the file system at an inspection location.

    A partition or the whole disk, or a linear logical volume that lies in
    one run of a physical volume on one of those (LVM's metadata says
    where, pyvslvm must agree).
    """
    where = inplace.partition_extent(layout, location)
    if where is not None:
        start, size = where
        return start, layout_size(image_path) if size is None else size
    parts = lvm.split_location(location)
    container = parts and inplace.partition_extent(layout, parts[0])
    if not container:
        raise exception.GuestError('%s is neither a partition nor a '
                                   'logical volume on one' % location)
    start, size = container
    with volume.ImageFile(image_path) as image:
        if size is None:
            size = image.size
        return lvm.volume_disk_extent(image, start, size, parts[1],
                                      parts[2])


def layout_size(image_path):
    with volume.ImageFile(image_path) as image:
        return image.size
