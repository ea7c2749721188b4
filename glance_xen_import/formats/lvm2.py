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

"""Where an LVM2 logical volume's bytes lie on its physical volume.

pyvslvm reads a logical volume's bytes but does not say where its extents
are, and an in-place edit needs disk offsets. This reads the on-disk
structures LVM2 writes (lvm2 lib/label/label.h and
lib/format_text/layout.h, the struct names below are theirs) and the text
metadata they point to:

* label_header: b'LABELONE' in one of the first four 512-byte sectors,
  its own sector number (u64), a CRC of the rest of the sector (u32), the
  offset of the pv_header from the label (u32) and b'LVM2 001'.
* pv_header: the PV's 32-character id, its size, then two lists of
  disk_locn {offset u64, size u64}, each ended by a zero entry: data areas,
  then metadata areas.
* mda_header (512 bytes at a metadata area's start): CRC of the rest,
  magic b' LVM2 x[5A%r0N*>', version 1, the area's start and size, then
  raw_locn {offset u64, size u64, checksum u32, flags u32} entries; the
  first one not flagged ignored holds the current metadata text, at
  ``offset`` from the area's start, wrapping past the area's end to just
  after the header (the area is a ring).
* The text: ``vgname { extent_size = N  physical_volumes { pv0 { id =
  "..." pe_start = N pe_count = N } }  logical_volumes { lv { segment1 {
  start_extent = N extent_count = N type = "striped" stripe_count = 1
  stripes = ["pv0", N] } } } }``; sizes in 512-byte sectors, extents in
  units of extent_size. A linear segment is a striped one of one stripe.

LVM's CRC is CRC-32 (reflected, polynomial 0xEDB88320) started at
0xF597A6CF with no final inversion.

Everything read is untrusted: every offset, size and count is checked
against the volume before use, the text is bounded in size, nesting and
items, and every refusal is an InvalidVolumeGroup with a one-line reason.
"""

import re
import zlib

from glance_xen_import import exception

SECTOR = 512
LABEL_SCAN_SECTORS = 4
LABEL_ID = b'LABELONE'
LABEL_TYPE = b'LVM2 001'
MDA_MAGIC = b' LVM2 x[5A%r0N*>'
MDA_HEADER_SIZE = 512
INITIAL_CRC = 0xF597A6CF
RAW_LOCN_IGNORED = 0x1

# LVM writes a metadata area of 1 MiB by default; a VG's text is a few KiB.
MAX_METADATA_TEXT = 4 << 20
MAX_AREAS = 8
MAX_DEPTH = 16
MAX_ITEMS = 1 << 16
MAX_SEGMENTS = 1024
_ID_LENGTH = 32


class InvalidVolumeGroup(exception.GuestError):
    """The LVM2 label, headers or metadata text cannot be used."""


def crc(data, value=INITIAL_CRC):
    """LVM's calc_crc: zlib's CRC-32 without its two inversions."""
    return zlib.crc32(data, value ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _u32(buf, offset):
    return int.from_bytes(buf[offset:offset + 4], 'little')


def _u64(buf, offset):
    return int.from_bytes(buf[offset:offset + 8], 'little')


class Segment:
    """One segment of a logical volume, in extents."""

    def __init__(self, start_extent, extent_count, kind, stripes):
        self.start_extent = start_extent
        self.extent_count = extent_count
        self.kind = kind
        self.stripes = stripes    # [(pv name, first physical extent)]


class LogicalVolume:
    def __init__(self, name, status, segments):
        self.name = name
        self.status = status
        self.segments = segments


class PhysicalVolumeRecord:
    def __init__(self, name, pv_id, pe_start, pe_count):
        self.name = name
        self.pv_id = pv_id
        self.pe_start = pe_start      # bytes from the PV's start
        self.pe_count = pe_count


class VolumeGroup:
    """The metadata of the VG this PV belongs to, and which PV this is."""

    def __init__(self, name, extent_bytes, physical_volumes,
                 logical_volumes, this_pv):
        self.name = name
        self.extent_bytes = extent_bytes
        self.physical_volumes = physical_volumes   # {name: record}
        self.logical_volumes = logical_volumes     # {name: LogicalVolume}
        self.this_pv = this_pv                     # a record's name

    def linear_runs(self, lv_name):
        """[(offset on this PV, size)] of a linear LV, in the LV's order.

        Adjacent extents are merged, so an LV in one piece is one run.

        :raises InvalidVolumeGroup: with the reason the volume is not a
            plain linear one on this PV (striped, mirrored, thin, cached
            or snapshotted; partly on another PV).
        """
        lv = self.logical_volumes.get(lv_name)
        if lv is None:
            raise InvalidVolumeGroup('no logical volume %s in the metadata'
                                     % lv_name)
        for other in self.logical_volumes.values():
            for segment in other.segments:
                if segment.kind in ('snapshot', 'thin') and any(
                        name == lv_name for name, _ in segment.stripes):
                    raise InvalidVolumeGroup(
                        'logical volume %s has a %s of it'
                        % (lv_name, segment.kind))
        if not lv.segments:
            raise InvalidVolumeGroup('logical volume %s has no segments'
                                     % lv_name)
        here = self.physical_volumes[self.this_pv]
        runs = []
        expected = 0
        for segment in sorted(lv.segments, key=lambda s: s.start_extent):
            if segment.kind != 'striped' or len(segment.stripes) != 1:
                raise InvalidVolumeGroup(
                    'logical volume %s is not linear (a %s segment of %d '
                    'stripes)' % (lv_name, segment.kind,
                                  len(segment.stripes)))
            if segment.start_extent != expected:
                raise InvalidVolumeGroup(
                    'logical volume %s has a gap or overlap at extent %d'
                    % (lv_name, expected))
            pv_name, first = segment.stripes[0]
            if pv_name != self.this_pv:
                raise InvalidVolumeGroup(
                    'logical volume %s lies partly on another physical '
                    'volume' % lv_name)
            if first + segment.extent_count > here.pe_count:
                raise InvalidVolumeGroup(
                    'logical volume %s has extents past its physical '
                    'volume' % lv_name)
            start = here.pe_start + first * self.extent_bytes
            length = segment.extent_count * self.extent_bytes
            if runs and runs[-1][0] + runs[-1][1] == start:
                runs[-1] = (runs[-1][0], runs[-1][1] + length)
            else:
                runs.append((start, length))
            expected += segment.extent_count
        return runs

    def linear_extent(self, lv_name):
        """(offset on this PV, size) of a linear LV lying in one run.

        :raises InvalidVolumeGroup: as linear_runs does, and for an LV in
            separate runs of extents.
        """
        runs = self.linear_runs(lv_name)
        if len(runs) != 1:
            raise InvalidVolumeGroup(
                'logical volume %s lies in %d separate runs of extents'
                % (lv_name, len(runs)))
        return runs[0]

    def visible_volumes(self):
        """Names of the LVs a guest sees (not LVM's hidden sub-volumes)."""
        return sorted(name for name, lv in self.logical_volumes.items()
                      if 'VISIBLE' in lv.status)


def read_volume_group(pread, size):
    """The VolumeGroup of the physical volume read by ``pread``.

    ``pread(length, offset)`` returns bytes of the physical volume.

    ``size`` is the size of the PV's container (its partition or disk).
    """
    header_offset, pv_id = _read_label(pread)
    areas = _pv_areas(pread, header_offset, size)
    if not areas:
        raise InvalidVolumeGroup('the physical volume has no metadata area')
    reasons = []
    for start, length in areas:
        try:
            text = _metadata_text(pread, start, length)
        except InvalidVolumeGroup as exc:
            reasons.append(str(exc))
            continue
        return _volume_group(parse_metadata(text), pv_id, size)
    raise InvalidVolumeGroup(reasons[0])


def _read_label(pread):
    for number in range(LABEL_SCAN_SECTORS):
        sector = pread(SECTOR, number * SECTOR)
        if len(sector) != SECTOR or sector[0:8] != LABEL_ID:
            continue
        if _u64(sector, 8) != number or sector[24:32] != LABEL_TYPE:
            raise InvalidVolumeGroup('the LVM2 label in sector %d is not '
                                     'an LVM2 001 label' % number)
        if crc(sector[20:]) != _u32(sector, 16):
            raise InvalidVolumeGroup('the LVM2 label checksum is wrong')
        offset = _u32(sector, 20)
        # The pv_header (id, size, one terminator each list) must fit.
        if offset < 32 or offset + _ID_LENGTH + 8 + 32 > SECTOR:
            raise InvalidVolumeGroup('the LVM2 label points its header '
                                     'outside its sector')
        pv_id = sector[offset:offset + _ID_LENGTH]
        if not re.fullmatch(rb'[0-9A-Za-z]{32}', pv_id):
            raise InvalidVolumeGroup('the physical volume id is not '
                                     'LVM\'s 32 characters')
        return number * SECTOR + offset, pv_id.decode('ascii')
    raise InvalidVolumeGroup('no LVM2 label in the first four sectors')


def _pv_areas(pread, header_offset, size):
    """The metadata areas [(start, size)] named by the pv_header."""
    sector_start = header_offset - header_offset % SECTOR
    sector = pread(SECTOR, sector_start)
    position = header_offset % SECTOR + _ID_LENGTH + 8
    lists = []
    for _ in range(2):          # data areas, then metadata areas
        entries = []
        while True:
            if position + 16 > SECTOR or len(entries) > MAX_AREAS:
                raise InvalidVolumeGroup('the physical volume header\'s '
                                         'area lists do not end')
            offset = _u64(sector, position)
            length = _u64(sector, position + 8)
            position += 16
            if offset == 0:
                break
            entries.append((offset, length))
        lists.append(entries)
    areas = []
    for offset, length in lists[1]:
        if (length < MDA_HEADER_SIZE * 2 or offset % SECTOR
                or offset + length > size):
            raise InvalidVolumeGroup('a metadata area lies outside the '
                                     'physical volume')
        areas.append((offset, length))
    return areas


def _metadata_text(pread, start, length):
    header = pread(MDA_HEADER_SIZE, start)
    if len(header) != MDA_HEADER_SIZE or header[4:20] != MDA_MAGIC:
        raise InvalidVolumeGroup('no LVM2 metadata area header at byte %d'
                                 % start)
    if crc(header[4:]) != _u32(header, 0):
        raise InvalidVolumeGroup('the metadata area header checksum is '
                                 'wrong')
    if _u32(header, 20) != 1:
        raise InvalidVolumeGroup('metadata area version %d is not 1'
                                 % _u32(header, 20))
    if _u64(header, 24) != start or _u64(header, 32) != length:
        raise InvalidVolumeGroup('the metadata area header disagrees with '
                                 'the physical volume header')
    position = 40
    while position + 24 <= MDA_HEADER_SIZE:
        offset = _u64(header, position)
        text_size = _u64(header, position + 8)
        checksum = _u32(header, position + 16)
        flags = _u32(header, position + 20)
        position += 24
        if offset == 0:
            break
        if flags & RAW_LOCN_IGNORED:
            continue
        ring = length - MDA_HEADER_SIZE
        if (offset < MDA_HEADER_SIZE or offset >= length
                or text_size == 0 or text_size > min(ring,
                                                     MAX_METADATA_TEXT)):
            raise InvalidVolumeGroup('the metadata text lies outside its '
                                     'area or is too large')
        first = min(text_size, length - offset)
        text = pread(first, start + offset)
        if first < text_size:   # the ring wraps to just after the header
            text += pread(text_size - first, start + MDA_HEADER_SIZE)
        if len(text) != text_size:
            raise InvalidVolumeGroup('the metadata text is truncated')
        if crc(text) != checksum:
            raise InvalidVolumeGroup('the metadata text checksum is wrong')
        return text
    raise InvalidVolumeGroup('the metadata area holds no metadata')


# --- the text format (lvm2 lib/config/config.c) ----------------------------

_TOKEN = re.compile(rb'''
    (?P<space>[ \t\r\n]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
  | (?P<name>[A-Za-z_.+][A-Za-z0-9_.+-]*)
  | (?P<punct>[{}\[\]=,])
''', re.VERBOSE)


def _tokens(text):
    text = text.rstrip(b'\0')
    position = 0
    count = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidVolumeGroup('the metadata text has an unexpected '
                                     'character at byte %d' % position)
        position = match.end()
        kind = match.lastgroup
        if kind == 'space':
            continue
        count += 1
        if count > MAX_ITEMS:
            raise InvalidVolumeGroup('the metadata text has too many items')
        value = match.group()
        if kind == 'string':
            value = re.sub(rb'\\(.)', rb'\1', value[1:-1]).decode(
                'utf-8', 'replace')
        elif kind == 'number':
            value = float(value) if b'.' in value else int(value)
        else:
            value = value.decode('ascii')
        yield kind, value


class _Parser:
    def __init__(self, text):
        self._tokens = _tokens(text)
        self._next = next(self._tokens, (None, None))

    def _take(self):
        token = self._next
        self._next = next(self._tokens, (None, None))
        return token

    def _expect(self, value):
        kind, got = self._take()
        if kind != 'punct' or got != value:
            raise InvalidVolumeGroup('the metadata text expects %r, not %r'
                                     % (value, got))

    def section(self, depth, closing):
        if depth > MAX_DEPTH:
            raise InvalidVolumeGroup('the metadata text nests too deep')
        items = {}
        while True:
            kind, value = self._take()
            if kind is None and closing is None:
                return items
            if kind == 'punct' and value == closing:
                return items
            if kind != 'name':
                raise InvalidVolumeGroup('the metadata text has %r where a '
                                         'name belongs' % (value,))
            if value in items:
                raise InvalidVolumeGroup('the metadata text names %s twice'
                                         % value)
            kind2, punct = self._take()
            if kind2 == 'punct' and punct == '{':
                items[value] = self.section(depth + 1, '}')
            elif kind2 == 'punct' and punct == '=':
                items[value] = self.value()
            else:
                raise InvalidVolumeGroup('the metadata text has %r after %s'
                                         % (punct, value))

    def value(self):
        kind, value = self._take()
        if kind in ('string', 'number'):
            return value
        if kind == 'punct' and value == '[':
            values = []
            while True:
                if self._next == ('punct', ']'):
                    self._take()
                    return values
                if values:
                    self._expect(',')
                kind, item = self._take()
                if kind not in ('string', 'number'):
                    raise InvalidVolumeGroup('the metadata text has %r in '
                                             'a list' % (item,))
                values.append(item)
        raise InvalidVolumeGroup('the metadata text has %r where a value '
                                 'belongs' % (value,))


def parse_metadata(text):
    """The metadata text as nested dicts (sections) of values and lists."""
    return _Parser(text).section(0, None)


def _int(section, key, where, minimum=0):
    value = section.get(key)
    if not isinstance(value, int) or value < minimum or value >= 1 << 63:
        raise InvalidVolumeGroup('%s has no valid %s' % (where, key))
    return value


def _volume_group(tree, pv_id, size):
    groups = [(k, v) for k, v in tree.items() if isinstance(v, dict)]
    if len(groups) != 1:
        raise InvalidVolumeGroup('the metadata text holds %d volume groups, '
                                 'not one' % len(groups))
    name, group = groups[0]
    extent_bytes = _int(group, 'extent_size', 'the volume group', 1) * SECTOR
    pvs = {}
    this_pv = None
    for pv_name, pv in (group.get('physical_volumes') or {}).items():
        if not isinstance(pv, dict):
            raise InvalidVolumeGroup('physical volume %s is not a section'
                                     % pv_name)
        where = 'physical volume %s' % pv_name
        record = PhysicalVolumeRecord(
            pv_name, str(pv.get('id', '')).replace('-', ''),
            _int(pv, 'pe_start', where) * SECTOR,
            _int(pv, 'pe_count', where))
        pvs[pv_name] = record
        if record.pv_id == pv_id:
            this_pv = pv_name
    if this_pv is None:
        raise InvalidVolumeGroup('the metadata does not list this physical '
                                 'volume')
    here = pvs[this_pv]
    if here.pe_start + here.pe_count * extent_bytes > size:
        raise InvalidVolumeGroup('the physical volume\'s extents end past '
                                 'its partition')
    lvs = {}
    for lv_name, lv in (group.get('logical_volumes') or {}).items():
        if not isinstance(lv, dict):
            raise InvalidVolumeGroup('logical volume %s is not a section'
                                     % lv_name)
        lvs[lv_name] = _logical_volume(lv_name, lv)
    return VolumeGroup(name, extent_bytes, pvs, lvs, this_pv)


def _logical_volume(name, lv):
    where = 'logical volume %s' % name
    count = _int(lv, 'segment_count', where, 1)
    if count > MAX_SEGMENTS:
        raise InvalidVolumeGroup('%s has too many segments' % where)
    segments = []
    for number in range(1, count + 1):
        seg = lv.get('segment%d' % number)
        if not isinstance(seg, dict):
            raise InvalidVolumeGroup('%s lacks segment%d' % (where, number))
        seg_where = '%s segment%d' % (where, number)
        kind = seg.get('type')
        if not isinstance(kind, str):
            raise InvalidVolumeGroup('%s has no type' % seg_where)
        stripes = []
        if kind == 'striped':
            listed = seg.get('stripes')
            stripe_count = _int(seg, 'stripe_count', seg_where, 1)
            if (not isinstance(listed, list)
                    or len(listed) != 2 * stripe_count):
                raise InvalidVolumeGroup('%s lists its stripes wrongly'
                                         % seg_where)
            for pv_name, first in zip(listed[0::2], listed[1::2]):
                if (not isinstance(pv_name, str) or not isinstance(first, int)
                        or first < 0):
                    raise InvalidVolumeGroup('%s lists its stripes wrongly'
                                             % seg_where)
                stripes.append((pv_name, first))
        elif kind in ('snapshot', 'thin'):
            # What the segment shares blocks with: writing there directly
            # would change the snapshot or thin volume behind LVM's back.
            for key in ('origin', 'external_origin'):
                if isinstance(seg.get(key), str):
                    stripes.append((seg[key], 0))
        segments.append(Segment(
            _int(seg, 'start_extent', seg_where),
            _int(seg, 'extent_count', seg_where, 1), kind, stripes))
    status = lv.get('status')
    return LogicalVolume(name, status if isinstance(status, list) else [],
                         segments)
