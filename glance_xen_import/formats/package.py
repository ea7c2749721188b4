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

"""Read a Xen VM package, OVA or XVA, told apart by its content.

Both are tar archives (whole-stream compressed or not). Their first
member says which: an OVA starts with its ``.ovf`` descriptor (DSP0243),
an XVA with ``ova.xml`` (xapi's importer accepts nothing else first). The
file's name plays no part.
"""

import dataclasses

from glance_xen_import import exception
from glance_xen_import.formats import names
from glance_xen_import.formats import ova
from glance_xen_import.formats import tarstream
from glance_xen_import import options

OVA = 'ova'
XVA = 'xva'


@dataclasses.dataclass
class Package:
    kind: str           # OVA or XVA
    result: object      # ova.PackageResult or xva.XvaPackageResult


def kind_of(first):
    """OVA or XVA from the first tar member, or refuse."""
    if first.name == 'ova.xml':
        return XVA
    if first.name.lower().endswith('.ovf'):
        return OVA
    raise exception.InvalidPackage(
        'the package starts with %s: an OVA starts with its .ovf '
        'descriptor, an XVA with ova.xml' % names.shown(first.name))


def read_package(stream, convert_disk, select, open_sink,
                 manifest_policy=options.MANIFEST_VERIFY, on_descriptor=None,
                 max_disk_size=options.DEFAULT_MAX_VIRTUAL_SIZE,
                 manifest_ahead=None):
    """Read the OVA or XVA from ``stream`` in one pass.

    :param convert_disk: for an OVA, as ova.read_package takes it.
    :param select: ``select(descriptor)`` gives the disks to convert, as
        ova.read_package and xva.read_members take it; None (OVA only)
        for the boot disk.
    :param open_sink: for an XVA, as xva.read_members takes it.
    :param manifest_policy: for an OVA: one of options.MANIFEST_*.
    :param on_descriptor: called with the ovf.Descriptor or the
        xva.XvaDescriptor before any disk data is read.
    :param max_disk_size: the largest disk accepted.
    :param manifest_ahead: for an OVA, as ova.read_package takes it.
    :returns: a :class:`Package`.
    """
    members = tarstream.Members(stream)
    first = next(members, None)
    if first is None:
        raise exception.InvalidPackage('the tar archive is empty')
    kind = kind_of(first)
    if kind == XVA:
        # Imported only for an XVA: an OVA's conversion (and the
        # command-line start-up) does not pay for the XVA reader.
        from glance_xen_import.formats import xva
        result = xva.read_members(first, members, select, open_sink,
                                  on_descriptor=on_descriptor,
                                  max_disk_size=max_disk_size)
    else:
        members.push_back(first)
        result = ova.read_members(members, convert_disk, manifest_policy,
                                  on_descriptor=on_descriptor,
                                  max_disk_size=max_disk_size,
                                  select=select,
                                  manifest_ahead=manifest_ahead)
    return Package(kind=kind, result=result)
