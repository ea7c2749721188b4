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

"""The disks of a VM, and which of them an image holds.

A Glance image holds one disk. A package (OVA or XVA) holds every disk of
a VM, in the VM's order: the boot disk first, then the others by their
place on the guest's bus. Without a choice the boot disk is converted;
``xen_import_disk`` (CLI ``--disk``) names another by its position in that
order, by the file or VDI reference that holds it, or by its name.
"""

import dataclasses

from glance_xen_import import exception
from glance_xen_import import sanitize

# The image property that chooses a disk, read at import time.
PROPERTY = 'xen_import_disk'


@dataclasses.dataclass(frozen=True)
class VmDisk:
    position: int        # 0 is the boot disk
    key: str             # OVA: the file's href; XVA: the VDI's Ref:N
    name: str            # XVA: the VDI's name; OVA: the OVF disk id
    capacity: object     # bytes, or None when the package does not say
    bootable: bool
    record: object = dataclasses.field(compare=False, repr=False)

    @property
    def role(self):
        return 'boot' if self.position == 0 else 'data'

    def to_dict(self):
        return {'position': self.position, 'key': self.key,
                'name': self.name, 'capacity': self.capacity,
                'role': self.role,
                'select': '%s=%d' % (PROPERTY, self.position)}


def vm_disks(records, key, name, capacity, bootable):
    """VmDisk for each record, in the order the package gives them.

    The package readers put the boot disk first; the accessors read the
    format's own disk record.
    """
    return [VmDisk(position=i, key=key(r), name=name(r) or '',
                   capacity=capacity(r), bootable=bool(bootable(r)),
                   record=r)
            for i, r in enumerate(records)]


def _listing(disks):
    return ', '.join('%d (%s%s)' % (d.position, sanitize.text(d.key, 80),
                                    ', "%s"' % sanitize.text(d.name, 80)
                                    if d.name and d.name != d.key else '')
                     for d in disks)


def choose(disks, selector):
    """The disk ``selector`` names; the boot disk when it is empty.

    A selector of decimal digits is a position; otherwise it must equal
    one disk's key, or else the name of exactly one disk.
    """
    if selector is None or not str(selector).strip():
        return disks[0]
    selector = str(selector).strip()
    if selector.isdigit():
        position = int(selector)
        if position < len(disks):
            return disks[position]
        raise exception.DiskNotFound(
            '%s=%s: the VM has %d disk(s), at positions 0 to %d: %s'
            % (PROPERTY, sanitize.text(selector, 40), len(disks),
               len(disks) - 1, _listing(disks)))
    for disk in disks:
        if disk.key == selector:
            return disk
    named = [d for d in disks if d.name == selector]
    if len(named) == 1:
        return named[0]
    if named:
        raise exception.DiskNotFound(
            '%s=%s: %d disks have that name; choose by position: %s'
            % (PROPERTY, sanitize.text(selector, 80), len(named),
               _listing(disks)))
    raise exception.DiskNotFound(
        '%s=%s names no disk of the VM; its disks are %s'
        % (PROPERTY, sanitize.text(selector, 80), _listing(disks)))


def property_value(disks):
    """``xen_import_vm_disks``: position:role:key:capacity for each disk."""
    return sanitize.joined(
        '%d:%s:%s:%s' % (d.position, d.role, sanitize.list_item(d.key),
                         d.capacity if d.capacity is not None else '?')
        for d in disks)
