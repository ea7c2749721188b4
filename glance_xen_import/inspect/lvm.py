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

"""Logical volumes of an LVM2 physical volume, through pyvslvm.

CentOS/RHEL put the root filesystem on LVM by default (VolGroup/lv_root
on 6, centos/root on 7). Only volumes whose extents all lie on this one
physical volume can be read; a volume group spanning disks that are not
here yields the volumes that are whole.
"""

import pyvslvm

from glance_xen_import import exception
from glance_xen_import.formats import lvm2
from glance_xen_import.inspect import volume

MAX_LOGICAL_VOLUMES = 64
_ERRORS = (OSError, ValueError)


class PhysicalVolume:
    """An opened PV; keep it until the volumes read from it are done."""

    def __init__(self, handle, volumes, unreadable):
        self._handle = handle
        self.volumes = volumes          # [(location, file object)]
        self.unreadable = unreadable    # locations of LVs not read

    def close(self):
        try:
            self._handle.close()
        except _ERRORS:
            pass


def is_physical_volume(fileobj):
    try:
        fileobj.seek(0)
        return bool(pyvslvm.check_volume_signature_file_object(fileobj))
    except _ERRORS:
        return False


def _open_group(handle, fileobj):
    """The volume group of the one PV in fileobj, opened with pyvslvm."""
    fileobj.seek(0)
    handle.open_file_object(fileobj)
    handle.open_physical_volume_files_as_file_objects([fileobj])
    return handle.get_volume_group()


def open_physical_volume(fileobj, location, notes):
    """A PhysicalVolume with [(location, file object)] per readable LV.

    pyvslvm reads the volumes; a linear volume it cannot open (libvslvm
    refuses one of several segments on the same PV) is read through the
    runs LVM's metadata gives it (formats.lvm2).
    """
    handle = pyvslvm.handle()
    try:
        group = _open_group(handle, fileobj)
        count = min(group.get_number_of_logical_volumes(),
                    MAX_LOGICAL_VOLUMES)
        group_name = group.get_name()
    except _ERRORS as exc:
        notes.append('LVM on %s not readable: %s' %
                     (location, str(exc).split('. ')[0]))
        return None
    volumes = []
    read = set()
    failed = []
    for index in range(count):
        try:
            logical = group.get_logical_volume(index)
            lv_name = logical.get_name()
            size = logical.get_size()
        except _ERRORS as exc:
            failed.append('logical volume %d on %s not readable by pyvslvm: '
                          '%s' % (index, location, str(exc).split('. ')[0]))
            continue
        read.add(lv_name)
        volumes.append(('%s/%s/%s' % (location, group_name, lv_name),
                        volume.EntryReader(logical, size)))
    unreadable = []
    if failed:
        notes.extend(failed)
        found, unreadable = _volumes_from_metadata(fileobj, location, read,
                                                   notes)
        volumes.extend(found)
        if not found and not unreadable:
            unreadable = ['%s logical volume' % location]
    return PhysicalVolume(handle, volumes, unreadable)


def _volumes_from_metadata(fileobj, location, read, notes):
    try:
        group = lvm2.read_volume_group(fileobj.pread, fileobj.size)
    except lvm2.InvalidVolumeGroup as exc:
        notes.append('LVM metadata on %s not readable: %s' % (location, exc))
        return [], ['%s logical volume' % location]
    found = []
    unreadable = []
    for lv_name in group.visible_volumes()[:MAX_LOGICAL_VOLUMES]:
        if lv_name in read:
            continue
        name = '%s/%s/%s' % (location, group.name, lv_name)
        try:
            runs = group.linear_runs(lv_name)
        except lvm2.InvalidVolumeGroup as exc:
            notes.append('%s not readable: %s' % (name, exc))
            unreadable.append(name)
            continue
        notes.append('%s read through its LVM metadata: %d run(s) of '
                     'extents' % (name, len(runs)))
        found.append((name, volume.Runs(fileobj, runs)))
    return found, unreadable


# Bytes compared between pyvslvm's reading of a volume and the disk range
# the metadata gives it, at the start and end of the volume, before that
# range is trusted for an edit.
_AGREE_BYTES = 1 << 20


def split_location(location):
    """Split a logical volume's inspection location into its parts.

    ('partition 2', 'VolGroup', 'lv_root'), or None for any other location.
    """
    parts = location.rsplit('/', 2)
    if len(parts) != 3 or not all(parts):
        return None
    return tuple(parts)


def volume_disk_extent(image, container_start, container_size, group_name,
                       lv_name):
    """(disk offset, size) of a linear LV lying in one run of its PV.

    ``image`` is an ImageFile; the PV fills [container_start, +size). The
    range comes from LVM's own metadata (formats.lvm2) and is trusted
    only where pyvslvm reads the same bytes there.

    :raises GuestError: with the reason it cannot be given.
    """
    pv = image.slice(container_start, container_size)
    group = lvm2.read_volume_group(pv.pread, pv.size)
    if group.name != group_name:
        raise exception.GuestError('the physical volume belongs to %s, '
                                   'not %s' % (group.name, group_name))
    offset, size = group.linear_extent(lv_name)
    _agrees_with_pyvslvm(pv, group_name, lv_name, offset, size)
    return container_start + offset, size


def _agrees_with_pyvslvm(pv, group_name, lv_name, offset, size):
    handle = pyvslvm.handle()
    try:
        group = _open_group(handle, pv)
        if group.get_name() != group_name:
            raise exception.GuestError('pyvslvm reads another volume group')
        for index in range(min(group.get_number_of_logical_volumes(),
                               MAX_LOGICAL_VOLUMES)):
            logical = group.get_logical_volume(index)
            if logical.get_name() == lv_name:
                break
        else:
            raise exception.GuestError('pyvslvm finds no logical volume %s'
                                       % lv_name)
        if logical.get_size() != size:
            raise exception.GuestError(
                'pyvslvm and the metadata disagree on the size of %s'
                % lv_name)
        length = min(size, _AGREE_BYTES)
        for at in sorted({0, size - length}):
            if (logical.read_buffer_at_offset(length, at)
                    != pv.pread(length, offset + at)):
                raise exception.GuestError(
                    'pyvslvm reads other bytes from %s than lie where its '
                    'metadata says' % lv_name)
    except _ERRORS as exc:
        raise exception.GuestError('pyvslvm cannot read %s: %s'
                                   % (lv_name, str(exc).split('. ')[0]))
    finally:
        try:
            handle.close()
        except _ERRORS:
            pass
