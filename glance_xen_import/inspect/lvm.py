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

from glance_xen_import.inspect import volume

MAX_LOGICAL_VOLUMES = 64
_ERRORS = (OSError, ValueError)


class PhysicalVolume:
    """An opened PV; keep it until the volumes read from it are done."""

    def __init__(self, handle, volumes):
        self._handle = handle
        self.volumes = volumes

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


def open_physical_volume(fileobj, location, notes):
    """A PhysicalVolume with [(location, file object)] per readable LV."""
    handle = pyvslvm.handle()
    try:
        fileobj.seek(0)
        handle.open_file_object(fileobj)
        handle.open_physical_volume_files_as_file_objects([fileobj])
        group = handle.get_volume_group()
        count = min(group.get_number_of_logical_volumes(),
                    MAX_LOGICAL_VOLUMES)
        group_name = group.get_name()
    except _ERRORS as exc:
        notes.append('LVM on %s not readable: %s' %
                     (location, str(exc).split('. ')[0]))
        return None
    volumes = []
    for index in range(count):
        try:
            logical = group.get_logical_volume(index)
            name = '%s/%s/%s' % (location, group_name, logical.get_name())
            size = logical.get_size()
        except _ERRORS as exc:
            notes.append('logical volume %d on %s not readable: %s' %
                         (index, location, str(exc).split('. ')[0]))
            continue
        volumes.append((name, volume.EntryReader(logical, size)))
    return PhysicalVolume(handle, volumes)
