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

"""OVF descriptor (DMTF DSP0243 1.x and 2.x) as XenCenter writes it.

Parsed with defusedxml, which refuses DTDs, entity declarations and external
references. Elements and attributes are matched by namespace URI, never by
prefix. XenCenter quirks handled here: an ``encoding="utf-16"`` declaration
over UTF-8 bytes, disks as rasd ResourceType 19 (storage extent) as well as
17 (disk drive), a VirtualSystem directly under the Envelope as well as
inside a VirtualSystemCollection, and ``ovf:compression="Gzip"``.
"""

import dataclasses
import re
import xml.etree.ElementTree as etree

import defusedxml
import defusedxml.ElementTree as safe_etree

from glance_xen_import import exception
from glance_xen_import.formats import names

OVF_NAMESPACES = ('http://schemas.dmtf.org/ovf/envelope/1',
                  'http://schemas.dmtf.org/ovf/envelope/2')
RASD = ('http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
        'CIM_ResourceAllocationSettingData')
SASD = ('http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
        'CIM_StorageAllocationSettingData')
VSSD = ('http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
        'CIM_VirtualSystemSettingData')
XENOVF = 'http://schemas.citrix.com/ovf/envelope/1'

# CIM ResourceType values of a disk (DSP1041): 17 disk drive, 19 storage
# extent (what XenCenter writes), 31 logical disk.
DISK_RESOURCE_TYPES = ('17', '19', '31')
# Real descriptors are a few KiB (tens for multi-VM appliances); the parsed
# tree takes about ten times the text, so this bounds memory as well.
MAX_DESCRIPTOR_SIZE = 1 << 20
# DSP0243 nests at most a dozen levels (Envelope, collections, systems,
# sections, Items, their properties); walking deeper trees recursively
# would exhaust the Python stack, so they are refused while parsing.
MAX_DEPTH = 64
COMPRESSIONS = ('gzip', 'bzip2')

# DSP0004 programmatic units: "byte", "byte * 2^30", "byte * 10^9".
_UNITS = re.compile(r'^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$', re.I)
_HOST_RESOURCE = re.compile(r'^(?:ovf:)?/(?:disk|file)/(.+)$')


@dataclasses.dataclass(frozen=True)
class DiskRef:
    """A disk of the package and the file that holds it."""

    disk_id: str
    href: str
    capacity: int
    format_uri: str
    compression: str
    chunk_size: int
    file_size: int
    boot: bool
    address_on_parent: int

    @property
    def is_vhd(self):
        """True unless the format URI names something other than VHD."""
        uri = (self.format_uri or '').lower()
        if not uri:
            return True
        return ('vhd' in uri or 'virtualserver' in uri
                or 'linkid=137171' in uri)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Descriptor:
    name: str
    virtual_system_type: str
    os_id: int
    os_description: str
    disks: tuple
    vcpus: int = None            # rasd ResourceType 3, when given
    memory_bytes: int = None     # rasd ResourceType 4, when given
    platform: tuple = ()         # XenCenter's platform flags, (key, value)
    firmware: str = None         # 'uefi' or 'bios' from HVM_boot_params


def _decode(data):
    """Return the descriptor as text, whatever its declaration says."""
    if data[:2] in (b'\xff\xfe', b'\xfe\xff'):
        try:
            return data.decode('utf-16')
        except UnicodeDecodeError:
            pass
    elif data[:3] == b'\xef\xbb\xbf':
        data = data[3:]
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        raise exception.InvalidPackage(
            'OVF descriptor is neither UTF-8 nor UTF-16 text')


class _DepthLimitedBuilder(etree.TreeBuilder):
    """A TreeBuilder that refuses elements nested deeper than MAX_DEPTH."""

    def __init__(self):
        super(_DepthLimitedBuilder, self).__init__()
        self._depth = 0

    def start(self, tag, attrs):
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise exception.InvalidPackage(
                'OVF descriptor nests elements more than %d deep' % MAX_DEPTH)
        return super(_DepthLimitedBuilder, self).start(tag, attrs)

    def end(self, tag):
        self._depth -= 1
        return super(_DepthLimitedBuilder, self).end(tag)


def _parse_xml(data):
    text = _decode(data)
    # The declaration may name an encoding the bytes are not in (XenCenter
    # writes utf-16 over UTF-8); the text is decoded already, so drop it.
    text = re.sub(r'^\s*<\?xml[^>]*\?>', '', text, count=1)
    parser = safe_etree.DefusedXMLParser(target=_DepthLimitedBuilder(),
                                         forbid_dtd=True,
                                         forbid_entities=True,
                                         forbid_external=True)
    try:
        parser.feed(text)
        return parser.close()
    except defusedxml.DefusedXmlException as exc:
        raise exception.InvalidPackage(
            'OVF descriptor refused: it contains a %s'
            % type(exc).__name__.replace('Forbidden', '').upper())
    except etree.ParseError as exc:
        raise exception.InvalidPackage(
            'OVF descriptor is not well-formed XML: %s' % exc)


def _ns(tag):
    return tag[1:].split('}', 1)[0] if tag.startswith('{') else ''


def _local(tag):
    return tag.rsplit('}', 1)[-1]


def _children(elem, name, namespaces=OVF_NAMESPACES):
    return [c for c in elem
            if _local(c.tag) == name and _ns(c.tag) in namespaces]


def _attr(elem, name, namespaces=OVF_NAMESPACES):
    for ns in namespaces:
        value = elem.get('{%s}%s' % (ns, name))
        if value is not None:
            return value
    return None


def _text(elem, name, namespaces):
    for child in _children(elem, name, namespaces):
        return (child.text or '').strip()
    return None


_DIGITS = re.compile(r'^[0-9]{1,20}$')


def _number(value, what, minimum=0):
    if value is None:
        return None
    value = value.strip()
    # str.isdigit() also takes other scripts' digits and superscripts.
    if not _DIGITS.match(value) or int(value) < minimum:
        raise exception.InvalidPackage(
            'OVF %s %r is not a valid number' % (what, value[:40]))
    return int(value)


def _small_int(value):
    """An optional small index such as AddressOnParent or an OS id."""
    if value and re.match(r'^[0-9]{1,5}$', value.strip()):
        return int(value)
    return None


def _capacity(disk):
    raw = _attr(disk, 'capacity')
    if raw is None or raw.strip().startswith('$'):
        # Absent, or a ${property} reference: nothing to cross-check.
        return None
    value = _number(raw, 'disk capacity')
    units = _attr(disk, 'capacityAllocationUnits')
    if units:
        match = _UNITS.match(units)
        if not match:
            raise exception.InvalidPackage(
                'OVF capacity unit %r is not understood' % units[:40])
        if match.group(1):
            base, power = int(match.group(1)), int(match.group(2))
            if base not in (2, 10) or power > 60:
                raise exception.InvalidPackage(
                    'OVF capacity unit %r is not understood' % units[:40])
            value *= base ** power
    return value


def check_href(href):
    """Return the package member an href names, or refuse it."""
    if not href:
        raise exception.InvalidPackage('OVF file reference has no href')
    if ':' in href:
        raise exception.InvalidPackage(
            'OVF href %r is a URL, not a file of the package' % href[:80])
    try:
        name = names.member_name(href)
    except ValueError as exc:
        raise exception.InvalidPackage(
            'OVF href %r is %s, not a file of the package' % (href[:80], exc))
    # An OVA keeps its files side by side (DSP0243 5.3): a name with a
    # directory in it is a path, whatever it resolves to.
    if '/' in name or '/' in href:
        raise exception.InvalidPackage(
            'OVF href %r is a path, not a file of the package' % href[:80])
    return name


def _virtual_systems(envelope):
    """VirtualSystems at the top or (nested) in VirtualSystemCollections."""
    found = []
    queue = list(envelope)
    while queue:
        elem = queue.pop(0)
        if _ns(elem.tag) not in OVF_NAMESPACES:
            continue
        if _local(elem.tag) == 'VirtualSystem':
            found.append(elem)
        elif _local(elem.tag) == 'VirtualSystemCollection':
            queue.extend(elem)
    return found


def _disk_addresses(system):
    """Map disk or file id -> AddressOnParent for a system's disk Items."""
    addresses = {}
    rasd = (RASD, SASD)
    for section in _children(system, 'VirtualHardwareSection'):
        for item in section:
            if _local(item.tag) not in ('Item', 'StorageItem'):
                continue
            if _text(item, 'ResourceType', rasd) not in DISK_RESOURCE_TYPES:
                continue
            match = _HOST_RESOURCE.match(_text(item, 'HostResource', rasd)
                                         or '')
            if match:
                addresses[match.group(1)] = _small_int(
                    _text(item, 'AddressOnParent', rasd))
    return addresses


def _sizing(system):
    """(vCPUs, memory bytes) from a system's Items; None when not given.

    Only informative, so a value that cannot be read is left out rather
    than refused.
    """
    vcpus = memory = None
    rasd = (RASD,)
    for section in _children(system, 'VirtualHardwareSection'):
        for item in section:
            if _local(item.tag) != 'Item':
                continue
            kind = _text(item, 'ResourceType', rasd)
            quantity = _text(item, 'VirtualQuantity', rasd) or ''
            if not re.match(r'^[0-9]{1,12}$', quantity.strip()):
                continue
            if kind == '3' and vcpus is None:
                vcpus = int(quantity)
            elif kind == '4' and memory is None:
                units = (_text(item, 'AllocationUnits', rasd)
                         or 'byte * 2^20').strip()
                match = _UNITS.match(units)
                if match and not match.group(1):
                    memory = int(quantity)
                elif match and int(match.group(1)) in (
                        2, 10) and int(match.group(2)) <= 60:
                    memory = int(quantity) * (
                        int(match.group(1)) ** int(match.group(2)))
                elif units.lower() in ('megabytes', 'mb'):
                    memory = int(quantity) << 20
    return vcpus, memory


# XenCenter keeps the VM's XenAPI maps in xenovf
# VirtualSystemOtherConfigurationData as "key=value;key=value;".
_MAX_XEN_MAP = 4096
_MAX_XEN_MAP_ITEMS = 64


def _xen_map(system, name):
    for section in _children(system, 'VirtualHardwareSection'):
        for data in section:
            if (_local(data.tag) != 'VirtualSystemOtherConfigurationData'
                    or _ns(data.tag) != XENOVF or data.get('Name') != name):
                continue
            value = _text(data, 'Value', (XENOVF,)) or ''
            pairs = []
            for item in value[:_MAX_XEN_MAP].split(';'):
                key, sep, val = item.partition('=')
                if sep and key.strip():
                    pairs.append((key.strip(), val.strip()))
            return tuple(pairs[:_MAX_XEN_MAP_ITEMS])
    return ()


def _firmware(system):
    value = dict(_xen_map(system, 'HVM_boot_params')).get('firmware')
    return value.lower() if value and value.lower() in ('bios', 'uefi') else (
        None)


def _refuse_encryption(envelope):
    for elem in envelope.iter():
        if _local(elem.tag) in ('SecuritySection', 'EncryptedData'):
            raise exception.InvalidPackage(
                'OVF package is encrypted (%s); export it unencrypted'
                % _local(elem.tag))


def _files(envelope):
    files = {}
    for refs in _children(envelope, 'References'):
        for item in _children(refs, 'File'):
            file_id = _attr(item, 'id')
            if not file_id or file_id in files:
                raise exception.InvalidPackage(
                    'OVF File has a missing or repeated id %r' % file_id)
            compression = (_attr(item, 'compression') or '').lower()
            if compression in ('', 'identity'):
                compression = None
            elif compression not in COMPRESSIONS:
                raise exception.InvalidPackage(
                    'OVF file compression %r is not gzip or bzip2'
                    % compression[:40])
            files[file_id] = dict(
                href=check_href(_attr(item, 'href')),
                compression=compression,
                chunk_size=_number(_attr(item, 'chunkSize'), 'chunkSize', 1),
                file_size=_number(_attr(item, 'size'), 'file size'))
    return files


def _disks(envelope, files, addresses):
    disks = []
    for section in _children(envelope, 'DiskSection'):
        for disk in _children(section, 'Disk'):
            disk_id = _attr(disk, 'diskId')
            file_ref = _attr(disk, 'fileRef')
            if file_ref is None:
                # A blank disk created at import: there is nothing to
                # convert, and an image cannot carry it.
                continue
            if file_ref not in files:
                raise exception.InvalidPackage(
                    'OVF disk %r refers to file %r, which References does '
                    'not list' % (disk_id, file_ref))
            bootable = disk.get('{%s}isBootable' % XENOVF) or ''
            address = addresses.get(disk_id, addresses.get(file_ref))
            disks.append(DiskRef(
                disk_id=disk_id, capacity=_capacity(disk),
                format_uri=_attr(disk, 'format'),
                boot=bootable.strip().lower() == 'true',
                address_on_parent=address, **files[file_ref]))
    return disks


def _boot_first(disks):
    """Order disks boot disk first.

    The boot disk is the one XenCenter marks xenovf:isBootable, else the
    one with the lowest AddressOnParent, else the first listed.
    """
    def rank(pair):
        position, disk = pair
        address = disk.address_on_parent
        return (not disk.boot, address is None, address or 0, position)

    return tuple(d for _, d in sorted(enumerate(disks), key=rank))


def parse(data):
    """Parse descriptor bytes into a :class:`Descriptor`."""
    if len(data) > MAX_DESCRIPTOR_SIZE:
        raise exception.InvalidPackage(
            'OVF descriptor is %d bytes, more than the %d accepted'
            % (len(data), MAX_DESCRIPTOR_SIZE))
    envelope = _parse_xml(data)
    if (_local(envelope.tag) != 'Envelope'
            or _ns(envelope.tag) not in OVF_NAMESPACES):
        raise exception.InvalidPackage(
            'OVF descriptor root is not an OVF Envelope')
    _refuse_encryption(envelope)

    systems = _virtual_systems(envelope)
    addresses = {}
    for system in reversed(systems):
        addresses.update(_disk_addresses(system))
    disks = _disks(envelope, _files(envelope), addresses)
    if not disks:
        raise exception.InvalidPackage(
            'OVF descriptor describes no disk with a file to import')
    if len({d.href for d in disks}) != len(disks):
        raise exception.InvalidPackage(
            'OVF descriptor places two disks in one file')

    name = vs_type = os_id = os_description = None
    vcpus = memory = firmware = None
    platform = ()
    if systems:
        first = systems[0]
        vcpus, memory = _sizing(first)
        platform = _xen_map(first, 'platform')
        firmware = _firmware(first)
        name = _text(first, 'Name', OVF_NAMESPACES)
        for hardware in _children(first, 'VirtualHardwareSection'):
            for system in _children(hardware, 'System'):
                vs_type = vs_type or _text(system, 'VirtualSystemType',
                                           (VSSD,))
        for os_section in _children(first, 'OperatingSystemSection'):
            os_id = _small_int(_attr(os_section, 'id'))
            os_description = _text(os_section, 'Description',
                                   OVF_NAMESPACES)
    return Descriptor(name=name or envelope.get('{%s}Name' % XENOVF),
                      virtual_system_type=vs_type, os_id=os_id,
                      os_description=os_description,
                      disks=_boot_first(disks), vcpus=vcpus,
                      memory_bytes=memory, platform=platform,
                      firmware=firmware)
