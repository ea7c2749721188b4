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

"""XVA: the VM export of xapi (``xe vm-export``, XenCenter, Xen Orchestra).

An XVA is a tar: ``ova.xml`` first (the VM's database records as one
XML-RPC value), then each streamed VDI as ``Ref:N/NNNNNNNN`` chunks of
1 MiB, each followed by its checksum member. This module turns ova.xml into
facts (:func:`parse_descriptor`) and reads the whole package in one pass
(:func:`read_members`); :mod:`xvachunks` checks the chunks.

Which VDIs are streamed, and in which order, follows xapi's importer
(``import.ml`` ``non_cdrom_vdis``, ``stream_vdi.ml`` ``recv_all_vdi``):
the VDIs of VBDs that are not CDs and whose SR is not an ISO library, plus
suspend VDIs, in the plain string order of their ids.
"""

import dataclasses

from glance_xen_import import exception
from glance_xen_import.formats import names
from glance_xen_import.formats import xapixml
from glance_xen_import.formats import xvachunks
from glance_xen_import import options

# Exports before XenServer 4.1 carry no checksum member after each chunk.
MIN_EXPORT_VSN = 2
PLATFORM_KEYS = ('acpi', 'apic', 'nx', 'pae', 'viridian', 'timeoffset',
                 'device-model', 'vga', 'videoram', 'hpet', 'secureboot',
                 'cores-per-socket', 'device_id')
DOMAIN_TYPES = ('hvm', 'pv', 'pvh', 'pv_in_pvh')
FIRMWARES = ('bios', 'uefi')
# Bounds on numbers that only describe the VM: far above what Xen runs.
MAX_VCPUS = 4096
MAX_MEMORY = 1 << 46
MAX_USERDEVICE = 1024
MAX_VERSION_NUMBER = 1 << 32
# Longest id, platform value or device name kept; xapi's are short.
MAX_ID = 200
MAX_SHORT_TEXT = 255


@dataclasses.dataclass
class XvaDisk:
    ref: str            # the VDI's id in ova.xml: its chunks' directory
    position: int       # index in XvaDescriptor.disks
    userdevice: int     # the VBD's slot on the guest's bus
    device: str         # 'xvda', ... or '' when ova.xml has none
    name: str           # VDI name_label
    description: str    # VDI name_description
    capacity: int       # VDI virtual_size, bytes
    bootable: bool
    mode: str           # 'RW' or 'RO'
    vdi_type: str       # 'user', 'system', ...


@dataclasses.dataclass
class XvaDescriptor:
    name: str
    description: str
    domain_type: str    # one of DOMAIN_TYPES
    is_pv: bool         # 'pv' or 'pv_in_pvh': the guest boots a PV kernel
    firmware: str       # 'bios' or 'uefi'
    secureboot: bool
    vcpus: int          # VCPUs_max; None when ova.xml does not say
    memory_bytes: int   # memory_static_max; None when ova.xml does not say
    platform: dict      # the PLATFORM_KEYS ova.xml sets, values as text
    viridian: bool
    is_template: bool
    version: dict       # product_brand, product_version, xapi_major,
    #                     xapi_minor, export_vsn
    disks: list         # XvaDisk of the VM, in userdevice order
    # (id, virtual_size) of every VDI the archive carries, in its order;
    # a superset of the disks (a suspend image, a snapshot's disks).
    streams: list


def _refuse(reason):
    return exception.InvalidPackage('ova.xml: %s' % reason)


def _text(record, key, what, limit=None):
    value = record.get(key, '')
    if value is None:
        return ''
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)      # a writer that tags its ints (<i4>)
    if not isinstance(value, str):
        raise _refuse('%s %s is not text' % (what, key))
    if limit is not None and len(value) > limit:
        return ''
    return value


def _number(value, what, maximum, default=None):
    """A non-negative int, given as an int or as decimal text (xapi's way)."""
    if value is None or value == '':
        if default is not None:
            return default
        raise _refuse('%s is missing' % what)
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or not text.isascii() or len(text) > 20:
            raise _refuse('%s is %r, not a non-negative whole number'
                          % (what, value[:24]))
        value = int(text)
    elif not isinstance(value, int) or isinstance(value, bool):
        raise _refuse('%s is not a whole number' % what)
    if value < 0:
        raise _refuse('%s is negative' % what)
    if value > maximum:
        raise _refuse('%s is %d, more than the %d accepted'
                      % (what, value, maximum))
    return value


def _flag(value, what):
    if value is None or value == '':
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ('true', 'false'):
        return value.lower() == 'true'
    raise _refuse('%s is not a boolean' % what)


def _mapping(record, key, what):
    value = record.get(key, {})
    if value is None or value == '':
        return {}
    if not isinstance(value, dict):
        raise _refuse('%s %s is not a map' % (what, key))
    return value


def _objects(top):
    """{id: (class, snapshot)} of the objects array."""
    if not isinstance(top, dict):
        raise _refuse('the top-level value is not a struct')
    objects = top.get('objects')
    if not isinstance(objects, list):
        raise _refuse('it has no objects array')
    table = {}
    for obj in objects:
        if not isinstance(obj, dict) or not isinstance(
                obj.get('class'), str) or not isinstance(
                obj.get('id'), str) or not isinstance(
                obj.get('snapshot'), dict):
            raise _refuse('an object lacks its class, id or snapshot')
        if obj['id'] in table:
            raise _refuse('two objects have the id %r' % obj['id'][:80])
        table[obj['id']] = (obj['class'], obj['snapshot'])
    return table


def _of_class(table, cls):
    return [(oid, snap) for oid, (c, snap) in table.items() if c == cls]


def _resolve(table, ref, cls):
    """The snapshot of object ``ref`` if it is of class ``cls``, or None.

    References that name no object (OpaqueRef:NULL, and the shared id xapi
    gives every NULL reference) are normal in ova.xml.
    """
    found = table.get(ref) if isinstance(ref, str) else None
    if found is None or found[0] != cls:
        return None
    return found[1]


def _pick_vm(table):
    vms = _of_class(table, 'VM')
    if len(vms) > 1:
        # Snapshots travel with their VM; the VM is the one that is not
        # a snapshot.
        vms = [(oid, snap) for oid, snap in vms
               if not _flag(snap.get('is_a_snapshot'), 'VM is_a_snapshot')]
    if len(vms) != 1:
        raise _refuse('it describes %d VMs, and an XVA holds one'
                      % len(vms))
    return vms[0]


def _version(top):
    block = top.get('version')
    if not isinstance(block, dict):
        raise _refuse('it has no version block')
    version = {
        'product_brand': _text(block, 'product_brand', 'version',
                               MAX_SHORT_TEXT),
        'product_version': _text(block, 'product_version', 'version',
                                 MAX_SHORT_TEXT),
        'xapi_major': _number(block.get('xapi_major'), 'version xapi_major',
                              MAX_VERSION_NUMBER, default=0),
        'xapi_minor': _number(block.get('xapi_minor'), 'version xapi_minor',
                              MAX_VERSION_NUMBER, default=0),
        'export_vsn': _number(block.get('export_vsn'), 'version export_vsn',
                              MAX_VERSION_NUMBER, default=0),
    }
    if version['export_vsn'] < MIN_EXPORT_VSN:
        raise exception.InvalidPackage(
            'XVA export_vsn %d predates XenServer 4.1: its chunks carry no '
            'checksums; export it again from a newer host'
            % version['export_vsn'])
    return version


def _domain_type(vm):
    domain_type = _text(vm, 'domain_type', 'VM').lower()
    if domain_type in ('', 'unspecified'):
        # xapi_vm_helpers.derive_domain_type: no HVM boot policy means PV.
        policy = _text(vm, 'HVM_boot_policy', 'VM')
        return 'pv' if policy == '' else 'hvm'
    if domain_type not in DOMAIN_TYPES:
        raise _refuse('VM domain_type %r is not one of %s'
                      % (domain_type[:40], ', '.join(DOMAIN_TYPES)))
    return domain_type


def _firmware(vm):
    params = _mapping(vm, 'HVM_boot_params', 'VM')
    firmware = params.get('firmware', 'bios')
    if firmware not in FIRMWARES:
        raise _refuse('VM firmware %r is neither bios nor uefi'
                      % str(firmware)[:40])
    return firmware


def _platform(vm):
    platform = _mapping(vm, 'platform', 'VM')
    return {key: platform[key] for key in PLATFORM_KEYS
            if isinstance(platform.get(key), str)
            and len(platform[key]) <= MAX_SHORT_TEXT}


def _vdi_id(ref):
    # The id names the chunks' directory: a plain, short name.
    if not ref or len(ref) > MAX_ID or '/' in ref or not ref.isprintable():
        raise _refuse('VDI id %r cannot name a directory of the archive'
                      % ref[:MAX_ID])
    return ref


def _streamed(table, max_disk_size):
    """{VDI id: virtual_size} for every VDI the archive carries."""
    streamed = {}

    def add(ref, vdi):
        size = _number(vdi.get('virtual_size'),
                       'VDI %s virtual_size' % ref[:MAX_ID], 1 << 64)
        if size > max_disk_size:
            raise exception.InvalidPackage(
                'XVA disk %s is %d bytes, more than the %d accepted'
                % (ref[:MAX_ID], size, max_disk_size))
        streamed[_vdi_id(ref)] = size

    for _vbd_id, vbd in _of_class(table, 'VBD'):
        ref, vdi = _disk_vdi(table, vbd)
        if vdi is not None:
            add(ref, vdi)
    for ref, vdi in _of_class(table, 'VDI'):
        if _text(vdi, 'type', 'VDI').lower() == 'suspend':
            add(ref, vdi)
    return streamed


def _disk_vdi(table, vbd):
    """(id, VDI snapshot) behind a VBD whose VDI is streamed, or (_, None)."""
    if _text(vbd, 'type', 'VBD').lower() == 'cd' or _flag(
            vbd.get('empty'), 'VBD empty'):
        return None, None
    ref = vbd.get('VDI')
    vdi = _resolve(table, ref, 'VDI')
    if vdi is None:
        return None, None
    sr = _resolve(table, vdi.get('SR'), 'SR')
    if sr is not None and _text(sr, 'content_type', 'SR').lower() == 'iso':
        return None, None
    return ref, vdi


def _disks(table, vm_id, streamed, single_vm):
    """The XvaDisk of the VM's VBDs, each VDI once, in userdevice order."""
    found = {}
    for _vbd_id, vbd in _of_class(table, 'VBD'):
        if not single_vm and vbd.get('VM') != vm_id:
            continue
        ref, vdi = _disk_vdi(table, vbd)
        if vdi is None or ref in found:
            continue
        userdevice = _number(vbd.get('userdevice'),
                             'VBD userdevice of disk %s' % ref,
                             MAX_USERDEVICE)
        found[ref] = XvaDisk(
            ref=ref, position=0, userdevice=userdevice,
            device=_text(vbd, 'device', 'VBD', 32),
            name=_text(vdi, 'name_label', 'VDI'),
            description=_text(vdi, 'name_description', 'VDI'),
            capacity=streamed[ref],
            bootable=_flag(vbd.get('bootable'), 'VBD bootable'),
            mode=_text(vbd, 'mode', 'VBD', 16),
            vdi_type=_text(vdi, 'type', 'VDI', 32))
    disks = sorted(found.values(), key=lambda d: (d.userdevice, d.ref))
    for position, disk in enumerate(disks):
        disk.position = position
    return disks


def parse_descriptor(data, max_disk_size=options.DEFAULT_MAX_VIRTUAL_SIZE):
    """Return the :class:`XvaDescriptor` of ova.xml ``data`` (bytes)."""
    top = xapixml.parse(data)
    table = _objects(top)
    version = _version(top)
    vm_id, vm = _pick_vm(table)
    streamed = _streamed(table, max_disk_size)
    disks = _disks(table, vm_id, streamed,
                   single_vm=len(_of_class(table, 'VM')) == 1)
    if not disks:
        raise exception.InvalidPackage(
            'XVA holds no disk: its VM has no VBD with a disk image')
    platform = _platform(vm)
    domain_type = _domain_type(vm)
    vcpus = vm.get('VCPUs_max')
    memory = vm.get('memory_static_max')
    return XvaDescriptor(
        name=_text(vm, 'name_label', 'VM'),
        description=_text(vm, 'name_description', 'VM'),
        domain_type=domain_type,
        is_pv=domain_type in ('pv', 'pv_in_pvh'),
        firmware=_firmware(vm),
        secureboot=platform.get('secureboot') == 'true',
        vcpus=None if vcpus in (None, '') else _number(
            vcpus, 'VM VCPUs_max', MAX_VCPUS),
        memory_bytes=None if memory in (None, '') else _number(
            memory, 'VM memory_static_max', MAX_MEMORY),
        platform=platform,
        viridian=platform.get('viridian') == 'true',
        is_template=_flag(vm.get('is_a_template'), 'VM is_a_template'),
        version=version,
        disks=disks,
        streams=sorted(streamed.items()))


XvaDiskInfo = xvachunks.XvaDiskInfo


@dataclasses.dataclass
class XvaPackageResult:
    descriptor: XvaDescriptor
    converted: list     # (XvaDisk, XvaDiskInfo) of the selected disks
    skipped: list       # XvaDisk not selected: read and verified only
    checksum: str       # 'sha1', 'xxhash', 'sha1+xxhash' ('none': no chunk)


def member_bound(descriptor):
    """Most tar members the package may hold, headers of pax included."""
    members = 1 + sum(xvachunks.member_bound(size)
                      for _ref, size in descriptor.streams)
    # Every member may come with a pax or GNU long-name header.
    return 2 * members + 16


def _read_descriptor(first, max_disk_size):
    if first.name != 'ova.xml':
        raise exception.InvalidPackage(
            'the first member of an XVA must be ova.xml, not %s'
            % names.shown(first.name))
    if first.size > xapixml.MAX_SIZE:
        raise exception.InvalidPackage(
            'ova.xml is %d bytes, more than the %d accepted'
            % (first.size, xapixml.MAX_SIZE))
    return parse_descriptor(first.read(), max_disk_size)


def _selection(descriptor, chosen):
    """{id: XvaDisk of the descriptor} of the disks ``select`` chose."""
    refs = {disk.ref: disk for disk in descriptor.disks}
    selected = {}
    for disk in chosen:
        ref = getattr(disk, 'ref', None)
        if ref not in refs:
            raise exception.XenImportError(
                'disk %r is not one of the disks of the XVA' % (disk,))
        selected[ref] = refs[ref]
    return selected


def read_members(first, members, select, open_sink, on_descriptor=None,
                 max_disk_size=options.DEFAULT_MAX_VIRTUAL_SIZE):
    """Read an XVA whose first tar member ``first`` has been taken.

    :param first: the first tarstream.Member; must be ova.xml.
    :param members: the tarstream.Members the rest comes from.
    :param select: ``select(descriptor)`` returns the XvaDisk to write
        (matched by ``ref``). The others are read past, every chunk still
        verified.
    :param open_sink: ``open_sink(disk)`` returns the sink a selected
        disk is written to, an object with ``write_at(offset, data)``; it
        is called once per selected disk, before its first chunk. Zero
        runs are holes: the caller gives the sink its final size
        (XvaDiskInfo.current_size). On a refusal the sinks opened so far
        are aborted (their ``abort()``, when they have one).
    :param on_descriptor: called with the XvaDescriptor before any disk
        data is read; may refuse the package by raising.
    :param max_disk_size: the largest VDI accepted.
    :returns: an XvaPackageResult.
    """
    descriptor = _read_descriptor(first, max_disk_size)
    # The reader below requires strictly increasing names, so repeats are
    # refused there; the member count follows the disks' sizes.
    members.limits.max_members = member_bound(descriptor)
    members.limits.unique_names = False
    if on_descriptor is not None:
        on_descriptor(descriptor)
    selected = _selection(descriptor, select(descriptor))
    sinks = []
    try:
        return _read_disks(descriptor, members, selected, open_sink, sinks)
    except BaseException:
        for sink in sinks:
            abort = getattr(sink, 'abort', None)
            if abort is not None:
                abort()
        raise


def _read_disks(descriptor, members, selected, open_sink, sinks):
    stream = xvachunks.ChunkStream(members, descriptor.streams)
    infos = {}
    for ref, size in descriptor.streams:
        sink = None
        if ref in selected:
            sink = open_sink(selected[ref])
            sinks.append(sink)
        infos[ref] = stream.read_vdi(ref, size, sink)
    stream.expect_end()
    converted = [(disk, infos[disk.ref]) for disk in descriptor.disks
                 if disk.ref in selected]
    skipped = [disk for disk in descriptor.disks if disk.ref not in selected]
    return XvaPackageResult(descriptor=descriptor, converted=converted,
                            skipped=skipped, checksum=stream.checksum_kind())
