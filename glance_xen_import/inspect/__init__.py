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

"""Read-only guest inspection of a converted RAW disk.

Every filesystem is read in-process (libyal readers over a bounded view
of the partition): no root, no mounts, no loop devices, nothing written.
"""

import os

from glance_xen_import import exception
from glance_xen_import.inspect import disk
from glance_xen_import.inspect import facts
from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import linux
from glance_xen_import.inspect import lvm
from glance_xen_import.inspect import steps
from glance_xen_import.inspect import volume

GuestFacts = facts.GuestFacts

# Partitions looked at (MBR with logical partitions, or GPT's 128).
MAX_PARTITIONS = 128
MAX_EFI_LOADERS = 64
# Directory levels under \\EFI searched for loaders.
EFI_DEPTH = 3


def _targets(image, layout):
    partitions = tuple(layout.partitions)
    if not partitions:
        return [('disk', 0, image.size, None)]
    targets = []
    for partition in partitions[:MAX_PARTITIONS]:
        targets.append(('partition %d' % partition.number, partition.start,
                        partition.size, partition))
    return targets


class _Volumes:
    """The filesystems found on the disk, closed together."""

    def __init__(self):
        self.filesystems = []
        self.esp = []
        self.damaged = []        # facts.VolumeInfo of volumes not opened
        self._physical_volumes = []

    def open(self, image, layout, notes, incomplete):
        for location, start, size, partition in _targets(image, layout):
            if start < 0 or size <= 0 or start >= image.size:
                notes.append('%s lies outside the image' % location)
                incomplete.append('%s outside the image' % location)
                continue
            view = image.slice(start, size)
            if lvm.is_physical_volume(view):
                physical = lvm.open_physical_volume(view, location, notes)
                if physical is None:
                    incomplete.append('%s LVM unreadable' % location)
                    continue
                self._physical_volumes.append(physical)
                incomplete.extend('%s unreadable' % name
                                  for name in physical.unreadable)
                for name, fileobj in physical.volumes:
                    self._add(fileobj, name, incomplete)
                continue
            fs = self._add(view, location, incomplete)
            if fs is not None and getattr(partition, 'is_esp', False):
                self.esp.append(fs)

    def _add(self, fileobj, location, incomplete):
        damaged = []
        fs = filesystem.open_filesystem(fileobj, location, damaged)
        if fs is not None:
            self.filesystems.append(fs)
        elif damaged:
            self.damaged.append(facts.VolumeInfo(location, damaged[0],
                                                 readable=False))
            incomplete.append('%s %s volume unreadable'
                              % (location, damaged[0]))
        return fs

    def close(self):
        for fs in self.filesystems:
            fs.close()
        for physical in self._physical_volumes:
            physical.close()


def _efi_files(fs, directory, depth, found):
    for name in sorted(fs.listdir(directory)):
        path = directory + '/' + name
        if len(found) >= MAX_EFI_LOADERS:
            return
        if fs.is_dir(path):
            if depth > 1:
                _efi_files(fs, path, depth - 1, found)
        elif name.lower().endswith('.efi'):
            found.append('%s:%s' % (fs.location, path))


def _efi_loaders(esps):
    """Boot loaders on the ESPs.

    \\EFI\\<vendor>\\*.efi, and one level more for Windows'
    \\EFI\\Microsoft\\Boot\\bootmgfw.efi.
    """
    loaders = []
    for fs in esps:
        if fs.kind == 'fat':
            _efi_files(fs, '/EFI', EFI_DEPTH, loaders)
    return loaders


def _inspect_windows(guest, volumes, image, layout):
    for fs in volumes.filesystems:
        if fs.kind != 'ntfs':
            continue
        # Imported for NTFS volumes only: the registry and driver tables
        # cost a Linux guest's import (and every CLI start) milliseconds.
        from glance_xen_import.inspect import windows
        systemroot = windows.find_systemroot(fs)
        if systemroot is None:
            continue
        guest.os_type = 'windows'
        guest.distro = 'windows'
        guest.windows = facts.WindowsFacts(location=fs.location,
                                           systemroot=systemroot)
        identity = steps.attempt(guest.incomplete, guest.notes,
                                 'disk identity', disk.identity, image,
                                 layout)
        win = windows.inspect(fs, systemroot, volumes.filesystems, identity,
                              guest.notes, guest.incomplete)
        guest.windows = win
        guest.version = win.version
        guest.product_name = win.product_name
        guest.architecture = win.architecture
        return True
    return False


def _inspect_linux(guest, volumes):
    roots = [fs for fs in volumes.filesystems if linux.looks_like_root(fs)]
    if not roots:
        return False
    # Prefer a root that says what it is over, e.g., a chroot's leftovers.
    roots.sort(key=lambda fs: not any(
        fs.is_file(p) for p in linux.OS_RELEASE_FILES +
        linux.LEGACY_RELEASE_FILES))
    if len(roots) > 1:
        guest.notes.append('several root filesystems (%s); used %s' % (
            ', '.join(fs.location for fs in roots), roots[0].location))
    facts_, distro, version = linux.inspect(roots[0], volumes.filesystems)
    guest.os_type = 'linux'
    guest.linux = facts_
    guest.distro = distro
    guest.version = version
    pretty = facts_.os_release.get('PRETTY_NAME') or facts_.release_text
    guest.product_name = pretty.splitlines()[0] if pretty else None
    return True


def inspect_guest(image_path, layout, package):
    """facts.GuestFacts for the RAW disk at image_path.

    layout is a formats.partitions.DiskLayout of that disk; package has
    virtual_system_type (the OVF's VirtualSystemType, 'xen-*' for a PV
    guest) and may have ``pv`` and ``firmware`` (from the VM's record). An
    unreadable or unknown guest is not an error: its facts have os_type
    None and a note saying why; whatever could not be read is also named
    in ``incomplete``. GuestError means the call itself
    was wrong.
    """
    if layout is None or not hasattr(layout, 'partitions') or not hasattr(
            layout, 'scheme'):
        raise exception.GuestError('guest inspection needs the disk layout')
    if not os.path.isfile(image_path):
        raise exception.GuestError('no disk image at %s' % image_path)
    guest = facts.GuestFacts()
    system_type = getattr(package, 'virtual_system_type', None) or ''
    guest.pv_guest = system_type.strip().lower().startswith('xen')
    if getattr(package, 'pv', None) is not None:   # an XVA's domain type
        guest.pv_guest = package.pv
    guest.vm_firmware = getattr(package, 'firmware', None)
    with volume.ImageFile(image_path) as image:
        guest.boot_code = disk.boot_code_present(image)
        volumes = _Volumes()
        try:
            _inspect_volumes(guest, volumes, image, layout)
        finally:
            volumes.close()
    return guest


def _inspect_volumes(guest, volumes, image, layout):
    # A damaged guest must not fail the import: each step that fails is
    # recorded (steps.attempt) and the others carry on.
    steps.attempt(guest.incomplete, guest.notes, 'volumes', volumes.open,
                  image, layout, guest.notes, guest.incomplete)
    guest.volumes = [facts.VolumeInfo(fs.location, fs.kind)
                     for fs in volumes.filesystems] + volumes.damaged
    guest.efi_loaders = steps.attempt(
        guest.incomplete, guest.notes, 'EFI loaders', _efi_loaders,
        volumes.esp) or []
    steps.attempt(guest.incomplete, guest.notes, 'Windows',
                  _inspect_windows, guest, volumes, image, layout)
    if guest.os_type is None:
        steps.attempt(guest.incomplete, guest.notes, 'Linux',
                      _inspect_linux, guest, volumes)
    if guest.os_type is None:
        guest.notes.append(
            'no operating system found on %d readable volume(s)' %
            len(volumes.filesystems))
