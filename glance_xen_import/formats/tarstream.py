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

"""Read a tar archive (POSIX.1-2001 pax, ustar, GNU) front to back.

Members are handed out as readers over the archive stream; nothing is ever
written to disk by name. Only regular files are accepted: links, devices,
FIFOs and sparse members are refused, and so are names that could mean a
path outside a directory, because an OVA has no use for any of them.

Each 512-byte header is decoded by the standard library
(``tarfile.TarInfo.frombuf``, which checks the header checksum); what it
is allowed to mean is decided here.
"""

import dataclasses
import tarfile

from glance_xen_import import exception
from glance_xen_import.formats import bytestream
from glance_xen_import.formats import compression
from glance_xen_import.formats import names

BLOCK = 512
# Bounds on metadata members: pax headers and GNU long names are read into
# memory, so they must be small.
MAX_PAX_SIZE = 64 * 1024
MAX_NAME_SIZE = 4096
MAX_MEMBERS = 4096

_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_KIND = {
    tarfile.LNKTYPE: 'a hard link', tarfile.SYMTYPE: 'a symbolic link',
    tarfile.CHRTYPE: 'a character device', tarfile.BLKTYPE: 'a block device',
    tarfile.FIFOTYPE: 'a FIFO', tarfile.GNUTYPE_SPARSE: 'a GNU sparse file',
}


@dataclasses.dataclass
class Member(object):
    """One regular file of the archive, readable once, in order."""

    name: str
    size: int
    _cursor: object = dataclasses.field(repr=False, default=None)
    _left: int = dataclasses.field(repr=False, default=0)

    def read(self, size=-1):
        if size < 0 or size > self._left:
            size = self._left
        if not size:
            return b''
        data = self._cursor.read_exact(size, 'member %s' % self.name)
        self._left -= len(data)
        return data

    @property
    def remaining(self):
        return self._left


def _clean_name(raw):
    """Return the member name, or refuse one that is not a plain name."""
    try:
        return names.member_name(raw)
    except ValueError as exc:
        raise exception.InvalidPackage(
            'tar member name %r is %s' % (raw[:80], exc))


def _parse_pax(data):
    """Decode pax records ``"%d %s=%s\\n"`` (POSIX.1-2001, pax format)."""
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b' ', pos, pos + 20)
        if space < 0 or not data[pos:space].isdigit():
            if not data[pos:].strip(b'\x00'):
                break
            raise exception.InvalidPackage('tar pax header is malformed')
        length = int(data[pos:space])
        record = data[space + 1:pos + length]
        if length <= space - pos or pos + length > len(data) or (
                not record.endswith(b'\n') or b'=' not in record):
            raise exception.InvalidPackage('tar pax header is malformed')
        key, value = record[:-1].split(b'=', 1)
        records[key.decode('utf-8', 'replace')] = value
        pos += length
    return records


def _read_meta(cursor, info, limit, what):
    if info.size > limit:
        raise exception.InvalidPackage(
            'tar %s is %d bytes, more than the %d accepted'
            % (what, info.size, limit))
    data = cursor.read_exact(info.size, 'tar %s' % what)
    cursor.read_exact(-info.size % BLOCK, 'tar padding')
    return data


def _pax_size(value):
    if not value.isdigit() or len(value) > 20:
        raise exception.InvalidPackage('tar pax size %r is not a number'
                                       % value[:24])
    return int(value)


@dataclasses.dataclass
class Limits(object):
    """Bounds :func:`iter_members` applies, read again for every member.

    A package reader may change them once its descriptor says how many
    members the package may hold: an XVA holds two per MiB of disk.
    """

    max_members: int = MAX_MEMBERS
    # Names are remembered to refuse one that appears twice. A reader that
    # requires its members in a strict order refuses repeats itself and
    # turns this off, so a package of a million members costs no memory.
    unique_names: bool = True


def iter_members(stream, limits=None):
    """Yield :class:`Member` for each file of the tar read from ``stream``.

    The stream may be gzip, bzip2, xz or zstd compressed as a whole; this
    is detected from its first bytes. Each member must be read (or left)
    before the next one is asked for; what is left unread is skipped.

    :param limits: a :class:`Limits`; the defaults when None.
    """
    if limits is None:
        limits = Limits()
    kind, stream = compression.sniff(stream)
    del kind
    cursor = bytestream.Cursor(stream, 'tar stream',
                               error=exception.InvalidPackage)
    seen = set()
    pending_name = None
    pending_size = None
    member = None
    count = 0
    while True:
        if member is not None:
            # Skip what the consumer did not read, and the padding.
            padding = -member.size % BLOCK
            cursor.skip_to(cursor.pos + member.remaining + padding,
                           'end of member %s' % member.name)
            member = None
        header = cursor.read(BLOCK)
        if not header and count == 0:
            raise exception.InvalidPackage('the file is empty, not a tar '
                                           'archive')
        if len(header) < BLOCK:
            raise exception.InvalidPackage(
                'tar archive is truncated: it has no end-of-archive marker')
        if header == bytes(BLOCK):
            return
        try:
            info = tarfile.TarInfo.frombuf(header, 'utf-8', 'strict')
        except (tarfile.HeaderError, UnicodeDecodeError, ValueError):
            if count == 0:
                raise exception.InvalidPackage('the file is not a tar '
                                               'archive')
            raise exception.InvalidPackage(
                'tar header at byte %d is damaged' % (cursor.pos - BLOCK))
        if info.size < 0:
            raise exception.InvalidPackage('tar member has a negative size')
        count += 1
        if count > limits.max_members:
            raise exception.InvalidPackage(
                'tar archive has more than %d members' % limits.max_members)

        if info.type == tarfile.XHDTYPE:
            records = _parse_pax(_read_meta(cursor, info, MAX_PAX_SIZE,
                                            'pax header'))
            if any(key.startswith('GNU.sparse.') for key in records):
                # GNU tar's pax sparse formats keep a map inside the data,
                # which would be read as the file's bytes.
                raise exception.InvalidPackage(
                    'tar member %r is a GNU sparse file; an OVA holds only '
                    'regular files' % records.get(
                        'GNU.sparse.name', records.get('path', b'?'))
                    .decode('utf-8', 'replace'))
            if 'path' in records:
                pending_name = records['path'].decode('utf-8', 'replace')
            if 'size' in records:
                pending_size = _pax_size(records['size'])
            continue
        if info.type == tarfile.XGLTYPE:
            _read_meta(cursor, info, MAX_PAX_SIZE, 'global pax header')
            continue
        if info.type == tarfile.GNUTYPE_LONGNAME:
            raw = _read_meta(cursor, info, MAX_NAME_SIZE, 'long name')
            pending_name = raw.split(b'\x00', 1)[0].decode('utf-8',
                                                           'replace')
            continue
        if info.type == tarfile.GNUTYPE_LONGLINK:
            _read_meta(cursor, info, MAX_NAME_SIZE, 'long link name')
            continue

        name = pending_name if pending_name is not None else info.name
        size = pending_size if pending_size is not None else info.size
        pending_name = pending_size = None
        if info.type == tarfile.DIRTYPE:
            # Directories hold no data (GNU dumpdir lists, at most, names);
            # skipping a large one could mean decompressing it.
            if size > MAX_PAX_SIZE:
                raise exception.InvalidPackage(
                    'tar directory entry %r carries %d bytes of data, more '
                    'than the %d accepted' % (name[:80], size, MAX_PAX_SIZE))
            cursor.skip_to(cursor.pos + size + (-size % BLOCK),
                           'directory %s' % name)
            continue
        if info.type not in _REGULAR:
            raise exception.InvalidPackage(
                'tar member %r is %s; an OVA holds only regular files'
                % (name, _KIND.get(info.type, 'of type %r' % info.type)))
        name = _clean_name(name)
        if limits.unique_names:
            if name in seen:
                raise exception.InvalidPackage(
                    'tar member %r appears twice' % name)
            seen.add(name)
        member = Member(name, size, cursor, size)
        yield member


class Members(object):
    """The members of the tar read from ``stream``, with one of look-ahead.

    A reader that looked at a member and found it belongs to the next step
    hands it back with :meth:`push_back`; the next ``next()`` returns it.
    """

    def __init__(self, stream):
        self.limits = Limits()
        self._iter = iter_members(stream, self.limits)
        self._next = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._next is not None:
            member, self._next = self._next, None
            return member
        return next(self._iter)

    def push_back(self, member):
        self._next = member
