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

"""The disk data of an XVA: checksummed 1 MiB chunks, read in one pass.

Each VDI is a run of members ``<id>/NNNNNNNN`` (``%08d`` of the chunk
number), each followed at once by ``<id>/NNNNNNNN.checksum`` (SHA-1, hex)
or ``.xxhash`` (XXH64 seed 0, 16 hex digits). All-zero chunks are left
out. Where the data goes is not number x 1 MiB: as xapi's importer
(``stream_vdi.ml`` ``recv_all_vdi``) does, a running position advances by
the chunks a number gap skips, then by each chunk's own length, because
xapi's exporter writes zero-length "keepalive" chunks that take a number
but no data. A VDI ends when the position reaches its size; nothing marks
it. Every chunk is verified before a byte of it is written.
"""

import dataclasses
import hashlib

import xxhash

from glance_xen_import import exception
from glance_xen_import.formats import names

CHUNK = 1 << 20
_KINDS = {
    # extension: (name in source tags, digest length in hex, digest)
    '.checksum': ('sha1', 40, lambda data: hashlib.sha1(data).hexdigest()),
    '.xxhash': ('xxhash', 16, lambda data: xxhash.xxh64(data).hexdigest()),
}
_HEX = frozenset('0123456789abcdefABCDEF')


@dataclasses.dataclass
class XvaDiskInfo:
    current_size: int   # bytes: the VDI's virtual_size
    chunks: int         # chunk members read, keepalives included
    bytes_present: int  # bytes the chunks carried
    source_tag: str     # 'xva:sha1', 'xva:xxhash', 'xva:sha1+xxhash'


def _chunks_in(size):
    return -(-size // CHUNK)


def member_bound(size):
    """Most members a VDI of ``size`` bytes takes.

    Chunks and keepalives, each with its checksum: xapi sends a keepalive
    only after scanning a chunk, so there are no more than chunks.
    """
    return 4 * _chunks_in(size)


def kind_name(kinds):
    """'sha1', 'xxhash', 'sha1+xxhash', or 'none' for no chunk at all."""
    return '+'.join(sorted(kinds)) or 'none'


def _split(name):
    """(directory, number or None, extension) of a member name."""
    prefix, slash, rest = name.partition('/')
    if not slash or '/' in rest:
        return prefix if slash else None, None, ''
    base, dot, ext = rest.partition('.')
    number = None
    if base.isascii() and base.isdigit() and len(base) <= 20 and (
            base == '%08d' % int(base)):
        number = int(base)
    return prefix, number, dot + ext


class ChunkStream(object):
    """The chunk members of every VDI, in the order ova.xml gives.

    :param members: tarstream.Members, positioned after ova.xml.
    :param streams: (id, virtual_size) of each VDI, in archive order.
    """

    def __init__(self, members, streams):
        self._members = members
        self._sizes = dict(streams)
        self._done = set()
        self._previous = None
        self._kinds = set()
        # xapi measures number gaps in units of the archive's first chunk.
        self._first_length = None

    def checksum_kind(self):
        return kind_name(self._kinds)

    def read_vdi(self, ref, size, sink):
        """Read VDI ``ref`` of ``size`` bytes; write it to ``sink`` if any."""
        position = 0
        last = -1
        chunks = bytes_present = keepalives = 0
        kinds = set()
        while position < size:
            member = next(self._members, None)
            if member is None:
                raise exception.InvalidPackage(
                    'XVA is truncated: disk %s ends at byte %d of its %d'
                    % (ref, position, size))
            prefix, number, ext = _split(member.name)
            if prefix != ref or number is None or ext:
                raise self._stray(member, ref, position, size, chunks)
            if number <= last:
                raise exception.InvalidPackage(
                    'chunk %s %s: chunks come in increasing order, and '
                    '%08d came before' % (
                        member.name, 'appears twice' if number == last
                        else 'is out of order', last))
            if member.size > CHUNK:
                raise exception.InvalidPackage(
                    'chunk %s is %d bytes; XVA chunks are 1 MiB at most'
                    % (member.name, member.size))
            if self._first_length is None:
                self._first_length = member.size
            start = position + self._gap(member.name, number - last - 1)
            end = start + member.size
            if end > size:
                raise exception.InvalidPackage(
                    'chunk %s ends at byte %d, past the end of disk %s (%d '
                    'bytes)' % (member.name, end, ref, size))
            if member.size == 0:
                keepalives += 1
                if keepalives > _chunks_in(size):
                    raise exception.InvalidPackage(
                        'disk %s has more empty keepalive chunks than it '
                        'has chunks of data' % ref)
            elif member.size != CHUNK and end != size:
                raise exception.InvalidPackage(
                    'chunk %s is %d bytes: only the last chunk of a disk '
                    'is shorter than 1 MiB' % (member.name, member.size))
            data = member.read()
            kinds.add(self._verify(member.name, data))
            if sink is not None and data:
                sink.write_at(start, data)
            position = end
            last = number
            chunks += 1
            bytes_present += len(data)
        self._done.add(ref)
        self._previous = ref
        self._kinds |= kinds
        return XvaDiskInfo(current_size=size, chunks=chunks,
                           bytes_present=bytes_present,
                           source_tag='xva:' + kind_name(kinds))

    def _gap(self, name, missing):
        """Bytes the ``missing`` chunks left out before ``name`` stand for."""
        if not missing:
            return 0
        if self._first_length != CHUNK:
            # xapi would count the gap in units of that short first chunk,
            # where its exporter meant 1 MiB: no reading is right for both.
            raise exception.InvalidPackage(
                'chunk %s follows left-out chunks, but the first chunk of '
                'the XVA is %d bytes, not 1 MiB: the size of the gap is '
                'ambiguous' % (name, self._first_length))
        return missing * CHUNK

    def _verify(self, name, data):
        """Check the checksum member after chunk ``name``; return its kind."""
        member = next(self._members, None)
        if member is None:
            raise exception.InvalidPackage(
                'XVA is truncated: chunk %s has no checksum member after it'
                % name)
        ext = member.name[len(name):]
        if not member.name.startswith(name + '.'):
            raise exception.InvalidPackage(
                'chunk %s is followed by %s, not by its checksum member '
                '(.checksum or .xxhash)' % (name, names.shown(member.name)))
        if ext not in _KINDS:
            raise exception.InvalidPackage(
                'checksum member %s is of an unknown kind: xapi writes '
                '.checksum (SHA-1) or .xxhash (XXH64)'
                % names.shown(member.name))
        kind, length, digest = _KINDS[ext]
        if member.size != length:
            raise exception.InvalidPackage(
                'checksum member %s is %d bytes; a %s checksum is %d hex '
                'digits' % (member.name, member.size, kind, length))
        text = member.read().decode('latin-1')
        if not _HEX.issuperset(text):
            raise exception.InvalidPackage(
                'checksum member %s is not hexadecimal' % member.name)
        if text.lower() != digest(data):
            raise exception.ChecksumMismatch(
                'chunk %s fails its %s checksum: the XVA is damaged or '
                'altered' % (name, kind))
        return kind

    def _stray(self, member, ref, position, size, chunks):
        """The refusal for ``member``, found where a chunk of ``ref`` was."""
        prefix, number, ext = _split(member.name)
        name = names.shown(member.name)
        if prefix == ref:
            if number is not None and ext:
                return exception.InvalidPackage(
                    'checksum member %s has no chunk before it'
                    % name)
            return exception.InvalidPackage(
                'member %s is not a chunk of disk %s (%s/NNNNNNNN)'
                % (name, ref, ref))
        if chunks == 0 and position == 0:
            return self._misplaced(member, prefix, ref)
        return exception.InvalidPackage(
            'disk %s stops at byte %d of its %d: member %s comes next'
            % (ref, position, size, name))

    def _misplaced(self, member, prefix, expected):
        """The refusal for ``member`` where a VDI's data starts or ends."""
        name = names.shown(member.name)
        if prefix is not None and prefix == self._previous:
            return exception.InvalidPackage(
                'chunk %s lies past the end of disk %s (%d bytes)'
                % (name, prefix, self._sizes[prefix]))
        if prefix in self._done:
            return exception.InvalidPackage(
                'disk %s is streamed twice: member %s comes after its end'
                % (prefix, name))
        if prefix in self._sizes:
            return exception.InvalidPackage(
                'disk %s comes where disk %s was expected: an XVA streams '
                'disks in the string order of their ids'
                % (prefix, expected))
        if expected is None:
            return exception.InvalidPackage(
                'member %s follows the last disk, where an XVA ends'
                % name)
        return exception.InvalidPackage(
            'member %s belongs to no disk of ova.xml' % name)

    def expect_end(self):
        """Refuse any member after the last VDI."""
        member = next(self._members, None)
        if member is not None:
            raise self._misplaced(member, _split(member.name)[0], None)
