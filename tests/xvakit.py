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

"""Make XVAs (xapi's VM export) as xapi and Xen Orchestra write them.

Written from the format notes (shared/research/xva-format.md), not from
the reader: V7 tar headers by hand (no ustar magic, mode 0400 or 0, mtime
0), ``ova.xml`` as xapi's one-line XML-RPC (untagged strings and ints,
``<boolean>``, one id counter for every object, the shared id of NULL
references), each VDI's non-zero 1 MiB chunks in number order with the
first and last always present, each followed by ``.checksum`` (SHA-1) or
``.xxhash`` (XXH64, 16 upper-case hex digits), optional keepalive entries
(a zero-length chunk taking a number, as xapi writes after 5 s of zeros),
whole-stream gzip or zstd by the command-line tools. The XO variant:
ustar headers (tar-stream), ids ``Ref:000``..., userdevice from 1, the
last chunk padded to 1 MiB and virtual_size rounded up, ``.xxhash`` only.

Disk contents come from ovakit (sfdisk, mkfs.ext4 -d) and from qemu-io
patterns (:func:`qemu_pattern_raw`). Nothing here imports the product.
"""

import dataclasses
import hashlib
import os
import subprocess
import tarfile
import tempfile
import xml.sax.saxutils

import xxhash

from tests import ovakit

MiB = ovakit.MiB
CHUNK = MiB
BLOCK = 512
NULL = 'OpaqueRef:NULL'


# --------------------------------------------------------------------------
# Disks

def qemu_pattern_raw(path, size, writes):
    """A sparse RAW of ``size`` with qemu-io ``write -P`` patterns.

    :param writes: (offset, length, byte) triples.
    """
    ovakit.run('qemu-img', 'create', '-q', '-f', 'raw', path, str(size))
    commands = []
    for offset, length, byte in writes:
        commands += ['-c', 'write -P 0x%02x %d %d' % (byte, offset, length)]
    if commands:
        ovakit.run('qemu-io', '-f', 'raw', *commands, path)
    return path


@dataclasses.dataclass
class Disk:
    """One disk of the VM: a RAW file and how ova.xml describes it."""

    raw: str
    name: str = 'disk'
    userdevice: int = None        # default: its place (XO: from 1)
    bootable: bool = None         # default: the first disk
    ref: str = None               # default: from the id counter
    size: int = None              # virtual_size; default the file's
    vdi_type: str = 'user'

    def __post_init__(self):
        if self.size is None:
            self.size = os.path.getsize(self.raw)


def _data_ranges(path):
    """(start, end) where the RAW holds data, by SEEK_DATA/SEEK_HOLE."""
    return ovakit.data_extents(path)


def _candidate_chunks(disk, pad_last):
    """Chunk numbers that may hold non-zero bytes, and 0 and the last."""
    count = -(-disk.size // CHUNK)
    numbers = {0, count - 1} if count else set()
    for start, end in _data_ranges(disk.raw):
        end = min(end, disk.size)
        numbers.update(range(start // CHUNK, -(-end // CHUNK)))
    return sorted(n for n in numbers if n < count)


def chunk_payloads(disk, pad_last=False):
    """Yield (offset chunk number, bytes) of the chunks an exporter writes.

    All-zero chunks are left out, except the first and the last, which
    xapi always writes.
    """
    count = -(-disk.size // CHUNK)
    with open(disk.raw, 'rb') as f:
        for number in _candidate_chunks(disk, pad_last):
            f.seek(number * CHUNK)
            length = min(CHUNK, disk.size - number * CHUNK)
            data = f.read(length)
            data += bytes(length - len(data))   # past the file: zeros
            if pad_last and len(data) < CHUNK:
                data += bytes(CHUNK - len(data))
            if number in (0, count - 1) or data.count(0) != len(data):
                yield number, data


def xxh64_text(data):
    """What xapi writes in a .xxhash member: ``%016LX`` of XXH64 seed 0."""
    return '%016X' % xxhash.xxh64_intdigest(data)


def sha1_text(data):
    return hashlib.sha1(data).hexdigest()


def vdi_members(disk, checksum='xxhash', keepalive_before=(),
                pad_last=False):
    """Yield (name, bytes) of a VDI's members, as xapi streams them.

    :param keepalive_before: chunk offsets (in MiB) before which a
        zero-length keepalive chunk takes a number, so numbers stop being
        offset / 1 MiB from there on.
    """
    ext, digest = {'xxhash': ('.xxhash', xxh64_text),
                   'sha1': ('.checksum', sha1_text)}[checksum]
    keepalive_before = set(keepalive_before)
    shift = 0
    for index, data in chunk_payloads(disk, pad_last):
        while keepalive_before and min(keepalive_before) <= index:
            # xapi: a keepalive takes the current number; the same offset
            # then goes on under the next one.
            at = min(keepalive_before)
            keepalive_before.discard(at)
            name = '%s/%08d' % (disk.ref, at + shift)
            yield name, b''
            yield name + ext, digest(b'').encode()
            shift += 1
        name = '%s/%08d' % (disk.ref, index + shift)
        yield name, data
        yield name + ext, digest(data).encode()


# --------------------------------------------------------------------------
# Tar

def v7_header(name, size, mode=0o400, mtime=0):
    """A tar header as ocaml-tar writes at its V7 level: no ustar magic."""
    raw = name.encode()
    if len(raw) > 99:
        raise ValueError('V7 names are 99 bytes at most')
    header = bytearray(BLOCK)
    header[0:len(raw)] = raw
    header[100:108] = b'%07o\0' % mode
    header[108:116] = b'%07o\0' % 0
    header[116:124] = b'%07o\0' % 0
    header[124:136] = b'%011o\0' % size
    header[136:148] = b'%011o\0' % mtime
    header[156:157] = b'\0'                     # typeflag: NUL
    header[148:156] = b' ' * 8
    header[148:156] = b'%07o\0' % sum(header)
    return bytes(header)


class TarWriter(object):
    """Write members one by one; ``style`` 'v7' (xapi) or 'ustar' (XO)."""

    def __init__(self, fileobj, style='v7', mode=0o400):
        self._f = fileobj
        self._style = style
        self._mode = mode

    def add(self, name, data, mtime=0):
        if self._style == 'v7':
            header = v7_header(name, len(data), self._mode, mtime)
        else:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = mtime
            header = info.tobuf(tarfile.USTAR_FORMAT)
        self._f.write(header)
        self._f.write(data)
        self._f.write(bytes(-len(data) % BLOCK))

    def add_header_only(self, name, size, mtime=0):
        """A header whose data the caller writes (for truncated inputs)."""
        self._f.write(v7_header(name, size, self._mode, mtime))

    def close(self):
        self._f.write(bytes(2 * BLOCK))


# --------------------------------------------------------------------------
# ova.xml: XML-RPC as ocaml-rpc writes it

class Date(str):
    """A dateTime.iso8601 value."""


def xmlrpc(value, empty='<value></value>'):
    """xapi's encoding of ``value``: strings and ints untagged."""
    if isinstance(value, bool):
        return '<value><boolean>%d</boolean></value>' % value
    if isinstance(value, Date):
        return '<value><dateTime.iso8601>%s</dateTime.iso8601></value>' % (
            value)
    if isinstance(value, float):
        return '<value><double>%r</double></value>' % value
    if isinstance(value, dict):
        return '<value><struct>%s</struct></value>' % ''.join(
            '<member><name>%s</name>%s</member>' % (k, xmlrpc(v, empty))
            for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return '<value><array><data>%s</data></array></value>' % ''.join(
            xmlrpc(v, empty) for v in value)
    text = xml.sax.saxutils.escape(str(value), {'"': '&quot;'})
    return '<value>%s</value>' % text if text else empty


class Ids(object):
    """xapi's export id table: one counter, one id per object reference."""

    def __init__(self, base, fmt='Ref:%d'):
        self._next = base
        self._fmt = fmt
        self._table = {}

    def __call__(self, key):
        if key not in self._table:
            self._table[key] = self._fmt % self._next
            self._next += 1
        return self._table[key]


@dataclasses.dataclass
class Vm:
    """What ova.xml says about the VM."""

    name: str = 'Debian 12 web'
    description: str = 'exported by xvakit'
    firmware: str = 'bios'           # HVM_boot_params firmware; None: unset
    domain_type: str = 'hvm'         # None: field absent (before jura)
    hvm_boot_policy: str = 'BIOS order'
    vcpus: int = 2
    memory: int = 2 * 1024 ** 3
    platform: dict = None
    is_template: bool = False
    pv_bootloader: str = ''


def _vm_record(vm, ids, vbd_ids, null):
    platform = {'timeoffset': '0', 'device-model': 'qemu-upstream-compat',
                'nx': 'true', 'acpi': '1', 'apic': 'true', 'pae': 'true',
                'viridian': 'false', 'hpet': 'true', 'videoram': '8',
                'vga': 'std', 'cores-per-socket': '1', 'secureboot': 'false'}
    if vm.firmware == 'uefi':
        platform['device-model'] = 'qemu-upstream-uefi'
    platform.update(vm.platform or {})
    boot_params = {'order': 'cd'}
    if vm.firmware is not None:
        boot_params['firmware'] = vm.firmware
    record = {
        'uuid': '7b2c8f4e-6a43-4f09-9b7e-%012x' % len(vbd_ids),
        'allowed_operations': [], 'current_operations': {},
        'name_label': vm.name, 'name_description': vm.description,
        'power_state': 'Halted', 'user_version': 1,
        'is_a_template': vm.is_template, 'is_default_template': False,
        'suspend_VDI': NULL, 'resident_on': null, 'scheduled_to_be_'
        'resident_on': NULL, 'affinity': null,
        'memory_overhead': 20971520, 'memory_target': 0,
        'memory_static_max': vm.memory, 'memory_dynamic_max': vm.memory,
        'memory_dynamic_min': vm.memory, 'memory_static_min': 1 << 27,
        'VCPUs_params': {}, 'VCPUs_max': vm.vcpus,
        'VCPUs_at_startup': vm.vcpus,
        'actions_after_shutdown': 'destroy', 'actions_after_reboot':
        'restart', 'actions_after_crash': 'restart',
        'consoles': [], 'VIFs': [], 'VBDs': vbd_ids, 'VUSBs': [],
        'crash_dumps': [], 'VTPMs': [],
        'PV_bootloader': vm.pv_bootloader, 'PV_kernel': '',
        'PV_ramdisk': '', 'PV_args': '', 'PV_bootloader_args': '',
        'PV_legacy_args': '', 'HVM_boot_policy': vm.hvm_boot_policy,
        'HVM_boot_params': boot_params, 'HVM_shadow_multiplier': 1.0,
        'platform': platform, 'PCI_bus': '',
        'other_config': {'base_template_name': 'Debian Bookworm 12',
                         'mac_seed': 'c0ffee00-0000-4000-8000-000000000001',
                         'install-methods': 'cdrom,nfs,http,ftp',
                         'linux_template': 'true'},
        'domid': '-1', 'domarch': '', 'last_boot_CPU_flags': {},
        'is_control_domain': False, 'metrics': NULL,
        'guest_metrics': null, 'last_booted_record': '',
        'recommendations': '', 'xenstore_data': {},
        'ha_always_run': False, 'ha_restart_priority': '',
        'is_a_snapshot': False, 'snapshot_of': NULL, 'snapshots': [],
        'snapshot_time': Date('19700101T00:00:00Z'),
        'transportable_snapshot_id': '', 'blobs': {}, 'tags': [],
        'blocked_operations': {}, 'snapshot_info': {},
        'snapshot_metadata': '', 'parent': NULL, 'children': [],
        'bios_strings': {}, 'protection_policy': NULL,
        'is_snapshot_from_vmpp': False, 'snapshot_schedule': NULL,
        'is_vmss_snapshot': False, 'appliance': NULL, 'start_delay': 0,
        'shutdown_delay': 0, 'order': 0, 'VGPUs': [], 'attached_PCIs': [],
        'suspend_SR': NULL, 'version': 0, 'generation_id': '',
        'hardware_platform_version': 0, 'has_vendor_device': False,
        'requires_reboot': False, 'reference_label': '', 'NVRAM': {},
        'pending_guidances': [],
    }
    if vm.domain_type is not None:
        record['domain_type'] = vm.domain_type
    return record


def _vbd_record(vm_id, vdi_id, userdevice, bootable, kind='Disk',
                empty=False):
    return {
        'uuid': 'b0d00000-0000-4000-8000-%012d' % userdevice,
        'allowed_operations': [], 'current_operations': {}, 'VM': vm_id,
        'VDI': vdi_id, 'device': '' if kind == 'CD' else 'xvd%s' % 'abcdefgh'[
            userdevice % 8], 'userdevice': str(userdevice),
        'bootable': bootable, 'mode': 'RO' if kind == 'CD' else 'RW',
        'type': kind, 'unpluggable': kind == 'CD', 'storage_lock': False,
        'empty': empty, 'other_config': {}, 'currently_attached': False,
        'status_code': 0, 'status_detail': '', 'runtime_properties': {},
        'qos_algorithm_type': '', 'qos_algorithm_params': {},
        'qos_supported_algorithms': [], 'metrics': NULL,
    }


def _vdi_record(name, size, sr_id, vbd_id, vdi_type='user'):
    return {
        'uuid': 'd1500000-0000-4000-8000-%012d' % (size % 10 ** 12),
        'name_label': name, 'name_description': 'disk of xvakit',
        'allowed_operations': [], 'current_operations': {}, 'SR': sr_id,
        'VBDs': [vbd_id], 'crash_dumps': [], 'virtual_size': size,
        'physical_utilisation': size, 'type': vdi_type, 'sharable': False,
        'read_only': False, 'other_config': {}, 'storage_lock': False,
        'location': 'd1500000-0000', 'managed': True, 'missing': False,
        'parent': NULL, 'xenstore_data': {}, 'sm_config':
        {'vdi_type': 'vhd'}, 'is_a_snapshot': False, 'snapshot_of': NULL,
        'snapshots': [], 'snapshot_time': Date('19700101T00:00:00Z'),
        'tags': [], 'allow_caching': False, 'on_boot': 'persist',
        'metadata_of_pool': NULL, 'metadata_latest': False,
        'is_tools_iso': False, 'cbt_enabled': False,
    }


def _sr_record(name, content_type, sr_type):
    return {
        'uuid': '5a000000-0000-4000-8000-%012d' % len(name),
        'name_label': name, 'name_description': '',
        'allowed_operations': [], 'current_operations': {}, 'VDIs': [],
        'PBDs': [], 'virtual_allocation': 0, 'physical_utilisation': 0,
        'physical_size': 0, 'type': sr_type, 'content_type': content_type,
        'shared': False, 'other_config': {}, 'tags': [], 'sm_config': {},
        'blobs': {}, 'local_cache_enabled': False, 'introduced_by': NULL,
        'clustered': False, 'is_tools_sr': False,
    }


def version_block(export_vsn=2, xo=False):
    if xo:
        return {'hostname': 'localhost', 'date': '2022-01-01',
                'product_version': '8.2.1', 'product_brand': 'XCP-ng',
                'build_number': 'release/yangtze/master/58',
                'xapi_major': 1, 'xapi_minor': 20, 'export_vsn': export_vsn}
    return {'hostname': 'localhost', 'date': '2026-08-01',
            'product_version': '8.4.0', 'product_brand': 'XCP-ng',
            'build_number': 'release/nile/master/8', 'xapi_major': 25,
            'xapi_minor': 27, 'export_vsn': export_vsn}


def ova_xml(vm, disks, ids, empty='<value></value>', **kwargs):
    """The ova.xml of ``vm`` with ``disks``: ova_value as XML-RPC."""
    return xmlrpc(ova_value(vm, disks, ids, **kwargs), empty).encode()


def ova_value(vm, disks, ids, cd='empty', xo=False, export_vsn=2,
              extra_objects=(), suspend=None):
    """The ova.xml value of ``vm`` with ``disks`` (refs assigned here).

    :param cd: 'empty' (an empty CD drive), 'iso' (a CD with an ISO VDI in
        an ISO library SR, which is not streamed) or None.
    :param suspend: a Disk holding the memory image of a suspended VM
        (vm-export preserve_power_state=true): a VDI of type suspend on no
        VBD, which xapi streams too.
    """
    vm_id = ids('vm')
    vbds, vdis, srs = [], [], []
    vm_vbd_ids = []
    extra = []
    if xo:
        sr_id = ids('sr')           # XO: VM, SR, then VDI and VBD pairs
    else:
        # xapi: the VM, each VIF and its network, then each VBD with its
        # VDI and the VDI's SR.
        vif_id, net_id = ids('vif'), ids('network')
        extra = [{'class': 'VIF', 'id': vif_id, 'snapshot': {
            'device': '0', 'network': net_id, 'VM': vm_id,
            'MAC': '6a:1e:0c:55:90:01', 'MTU': 1500, 'metrics': NULL}},
            {'class': 'network', 'id': net_id, 'snapshot': {
                'name_label': 'Pool-wide network associated with eth0',
                'bridge': 'xenbr0', 'VIFs': [vif_id], 'MTU': 1500}}]
        sr_id = None
    for position, disk in enumerate(disks):
        if xo:
            vdi_id = disk.ref or ids(('vdi', position))
            vbd_id = ids(('vbd', position))
        else:
            vbd_id = ids(('vbd', position))
            vdi_id = disk.ref or ids(('vdi', position))
            sr_id = sr_id or ids('sr')
        disk.ref = vdi_id
        userdevice = disk.userdevice
        if userdevice is None:
            userdevice = position + 1 if xo else position
        bootable = position == 0 if disk.bootable is None else disk.bootable
        vbds.append((vbd_id, _vbd_record(vm_id, vdi_id, userdevice,
                                         bootable)))
        vdis.append((vdi_id, _vdi_record(disk.name, disk.size, sr_id,
                                         vbd_id, disk.vdi_type)))
        vm_vbd_ids.append(vbd_id)
    if suspend is not None:
        suspend.ref = suspend.ref or ids('suspend')
        sr_id = sr_id or ids('sr')
        record = _vdi_record(suspend.name, suspend.size, sr_id, NULL,
                             'suspend')
        record['VBDs'] = []
        vdis.append((suspend.ref, record))
    if sr_id is not None:
        srs.append((sr_id, _sr_record('Local storage', 'user', 'lvm')))
    if cd == 'empty':
        vbd_id = ids('cd')
        # The VDI of an empty drive is NULL, exported as the shared id
        # that names no object.
        vbds.append((vbd_id, _vbd_record(vm_id, ids(NULL), 3, False, 'CD',
                                         empty=True)))
        vm_vbd_ids.append(vbd_id)
    elif cd == 'iso':
        vbd_id = ids('cd')
        iso_id = ids('iso-vdi')
        iso_sr = ids('iso-sr')
        vbds.append((vbd_id, _vbd_record(vm_id, iso_id, 3, False, 'CD')))
        vdis.append((iso_id, _vdi_record('debian-12.iso', 600 * MiB,
                                         iso_sr, vbd_id)))
        srs.append((iso_sr, _sr_record('ISO library', 'iso', 'iso')))
        vm_vbd_ids.append(vbd_id)
    null = ids(NULL)
    record = _vm_record(vm, ids, vm_vbd_ids, null)
    objects = [{'class': 'VM', 'id': vm_id, 'snapshot': record}]
    if xo:
        objects += [{'class': 'SR', 'id': i, 'snapshot': s} for i, s in srs]
        for (vdi_id, vdi), (vbd_id, vbd) in zip(vdis, vbds):
            objects += [{'class': 'VDI', 'id': vdi_id, 'snapshot': vdi},
                        {'class': 'VBD', 'id': vbd_id, 'snapshot': vbd}]
    else:
        # make_all's class order: VM, VBD, VIF, network, VDI, SR.
        objects += [{'class': 'VBD', 'id': i, 'snapshot': s}
                    for i, s in vbds]
        objects += extra
        objects += [{'class': 'VDI', 'id': i, 'snapshot': s}
                    for i, s in vdis]
        objects += [{'class': 'SR', 'id': i, 'snapshot': s} for i, s in srs]
    objects += list(extra_objects)
    return {'version': version_block(export_vsn, xo), 'objects': objects}


# --------------------------------------------------------------------------
# Whole packages

def streamed_order(disks):
    """The disks in xapi's stream order: plain string order of the ids."""
    return sorted(disks, key=lambda d: d.ref)


class Zeros(object):
    """Member data of ``size`` zero bytes, written without holding them."""

    def __init__(self, size):
        self.size = size


def write_members(f, entries, style='v7', mode=0o400, ova_mtime=0):
    """Write (name, bytes or Zeros) entries as a tar into file ``f``."""
    writer = TarWriter(f, style, mode)
    for name, data in entries:
        if isinstance(data, Zeros):
            writer.add_header_only(name, data.size)
            left = data.size
            while left:
                f.write(bytes(min(left, CHUNK)))
                left -= min(left, CHUNK)
            f.write(bytes(-data.size % BLOCK))
        else:
            writer.add(name, data, ova_mtime if name == 'ova.xml' else 0)
    writer.close()


COMPRESSORS = {'gzip': ['gzip', '-c'], 'zstd': ['zstd', '-q', '-c']}


def write_xva_file(path, entries, compress=None, **kwargs):
    """Write ``entries`` as an XVA at ``path``.

    With ``compress``, the whole stream goes through the real gzip or
    zstd tool, as xapi's use_compression does.
    """
    with open(path, 'wb') as out:
        if compress is None:
            write_members(out, entries, **kwargs)
            return path
        proc = subprocess.Popen(COMPRESSORS[compress],
                                stdin=subprocess.PIPE, stdout=out)
        try:
            write_members(proc.stdin, entries, **kwargs)
        finally:
            proc.stdin.close()
            if proc.wait() != 0:
                raise RuntimeError('%s failed' % compress)
    return path


def make_xva(path, disks, vm=None, checksum='xxhash', keepalive_before=(),
             compress=None, xo=False, id_base=95, mode=0o400, cd='empty',
             export_vsn=2, ova_mtime=0, edit=None, suspend=None):
    """Write an XVA of ``vm`` with ``disks`` at ``path``; return the disks.

    :param keepalive_before: {disk index: chunk offsets} for keepalives.
    :param compress: None, 'gzip' or 'zstd' (the whole stream, by the
        command-line tool, as xapi's use_compression does).
    :param edit: when given, called with the list of (name, data) members
        (ova.xml first); returns the list to write instead.
    :param suspend: a Disk streamed as the suspended VM's memory image.
    """
    vm = vm or Vm()
    if xo:
        checksum = 'xxhash'
        ids = Ids(0, 'Ref:%03d')
        for disk in disks:
            disk.size = -(-disk.size // CHUNK) * CHUNK
    else:
        ids = Ids(id_base)
    entries = [('ova.xml', ova_xml(vm, disks, ids, cd=cd, xo=xo,
                                   export_vsn=export_vsn, suspend=suspend))]
    streamed = disks + ([suspend] if suspend is not None else [])
    for disk in streamed_order(streamed):
        entries.append(vdi_members(
            disk, checksum,
            dict(keepalive_before).get(streamed.index(disk), ()),
            pad_last=xo))

    def flat():
        for entry in entries:
            if isinstance(entry, tuple):
                yield entry
            else:
                yield from entry

    members = flat() if edit is None else edit(list(flat()))
    write_xva_file(path, members, compress, style='ustar' if xo else 'v7',
                   mode=mode, ova_mtime=ova_mtime)
    return disks


def xva_img_extract(xva, ref, out_raw):
    """Reassemble VDI ``ref`` with Debian's xva-img (SHA-1 XVAs only).

    xva-img wants the tar unpacked first: ``tar xf`` into a scratch
    directory, then ``xva-img -p disk-export <dir>/<ref> <raw>``.
    """
    with tempfile.TemporaryDirectory() as scratch:
        ovakit.run('tar', '-xf', xva, '-C', scratch)
        ovakit.run('xva-img', '-s', 'disk-export',
                   os.path.join(scratch, ref), out_raw)
    return out_raw
