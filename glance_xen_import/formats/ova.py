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

"""OVA package (DSP0243 "OVF package" in tar form), read in one pass.

Member order, as DSP0243 and XenCenter's exporter write it: the ``.ovf``
descriptor first, then the optional ``.mf`` manifest and ``.cert``
signature, then the files References lists. A manifest may also come last;
members are hashed as they stream by, so a late manifest is checked too.
Which digests to take of the members before the manifest is read ahead
from the tar headers when the OVA is a regular file; on a stream, both
algorithms a late manifest may use are taken. The disks the caller selects
(by default the boot disk) are handed to a converter while they stream;
the others are read past and reported.
"""

import dataclasses
import os
import stat

from glance_xen_import import exception
from glance_xen_import.formats import compression
from glance_xen_import.formats import manifest
from glance_xen_import.formats import ovf
from glance_xen_import.formats import tarstream
from glance_xen_import.formats import vhd
from glance_xen_import import options

# Digests computed for members that stream by before the manifest does.
_LATE_MANIFEST_ALGORITHMS = ('sha1', 'sha256')
# Bytes the read-ahead may read (it skips member data unread): tar headers,
# pax records and the manifest of any sensible package fit in this.
MAX_READ_AHEAD = 4 << 20
# Members the descriptor does not reference (notes, a second descriptor)
# are read past and never used; together they may hold this many bytes.
# Reading past costs decompressing them when the whole OVA is compressed.
MAX_UNREFERENCED_BYTES = 1 << 20
# A .cert holds one X.509 certificate and a signature of the manifest.
MAX_CERT_SIZE = 1 << 20


@dataclasses.dataclass
class PackageResult:
    descriptor: object
    converted: list              # (ovf.DiskRef, converter's result) pairs
    skipped_disks: list          # the ovf.DiskRef not converted
    manifest: str                # 'verified', 'absent' or 'ignored'
    signed: bool                 # a .cert member was present (not checked)

    @property
    def disk(self):
        return self.converted[0][0]

    @property
    def disk_result(self):
        return self.converted[0][1]


def _chunk_name(href, index):
    # DSP0243 7.1: chunks are named <href>.000000000, <href>.000000001, ...
    return '%s.%09d' % (href, index)


def _is_chunk_of(name, href):
    suffix = name[len(href):]
    return (name.startswith(href) and len(suffix) == 10 and suffix[0] == '.'
            and suffix[1:].isdigit())


def _out_of_order(name, expected):
    return exception.InvalidPackage(
        'chunk %s is out of order: %s was expected, and chunks must follow '
        'each other in sequence' % (name, expected))


class _ChunkReader(object):
    """The concatenation of the chunk members of one file.

    :param wrap: called on each chunk member; returns the reader to use.
    """

    def __init__(self, first, members, disk, wrap):
        self._members = members
        self._disk = disk
        self._wrap = wrap
        self._index = 0
        self._current = self._enter(first)

    def _enter(self, member):
        if member.size > self._disk.chunk_size:
            raise exception.InvalidPackage(
                'chunk %s is %d bytes, more than the chunkSize of %d'
                % (member.name, member.size, self._disk.chunk_size))
        self._size = member.size
        return self._wrap(member)

    def read(self, size):
        while self._current is not None:
            data = self._current.read(size)
            if data:
                return data
            self._index += 1
            following = next(self._members, None)
            if following is None or following.name != _chunk_name(
                    self._disk.href, self._index):
                if following is not None:
                    if _is_chunk_of(following.name, self._disk.href):
                        raise _out_of_order(following.name, _chunk_name(
                            self._disk.href, self._index))
                    self._members.push_back(following)
                self._current = None
                break
            if self._size != self._disk.chunk_size:
                raise exception.InvalidPackage(
                    'chunk %s is followed by another but is not the '
                    'chunkSize of %d bytes' % (
                        _chunk_name(self._disk.href, self._index - 1),
                        self._disk.chunk_size))
            self._current = self._enter(following)
        return b''


def _file_bound(disk, max_disk_size):
    """Most bytes the package file of ``disk`` can hold.

    ovf:size cannot serve: XenCenter writes the SR's physical utilisation
    there, not the file's length. The capacity bounds the VHD instead; gzip
    and bzip2 grow incompressible data by well under 1%.
    """
    declared = max_disk_size if disk.capacity is None else min(
        disk.capacity, max_disk_size)
    bound = vhd.file_size_bound(declared)
    if disk.compression:
        bound += bound // 100 + (1 << 20)
    return declared, bound


class _SizeBudget(object):
    """Refuse members larger than the descriptor lets them be.

    Every byte of a member is read, if only to skip it, and in a compressed
    OVA every byte read is decompressed: the tar header's size is checked
    against the descriptor before any of its data is.
    """

    def __init__(self, disks, max_disk_size):
        self._bounds = {d.href: _file_bound(d, max_disk_size) for d in disks}
        self._used = {}
        self._unreferenced = 0

    def _owner(self, name):
        if name in self._bounds:
            return name
        if len(name) > 10 and _is_chunk_of(name, name[:-10]):
            if name[:-10] in self._bounds:
                return name[:-10]
        return None

    def admit(self, member):
        href = self._owner(member.name)
        if href is None:
            self._unreferenced += member.size
            if self._unreferenced > MAX_UNREFERENCED_BYTES:
                raise exception.InvalidPackage(
                    'member %s is not referenced by the OVF descriptor and '
                    'such members may hold %d bytes in all; it is %d bytes'
                    % (member.name, MAX_UNREFERENCED_BYTES, member.size))
            return
        declared, bound = self._bounds[href]
        used = self._used.get(href, 0) + member.size
        if used > bound:
            raise exception.InvalidPackage(
                'file %s holds more than %d bytes, the most the VHD of a '
                'disk of %d bytes can take' % (href, bound, declared))
        self._used[href] = used


class _Digests(object):
    """Digests of the members, checked against the manifest.

    :param ahead: what a read-ahead learnt of the manifest: {member name:
        algorithm}, {} when the package has none, None when not known.
        It only chooses the digests taken before the manifest arrives; the
        manifest read in the main pass is what they are checked against.
    """

    def __init__(self, policy, ahead=None):
        self.policy = policy
        self.entries = None
        self.signed = False
        self._ahead = ahead
        self._pending = []        # (name, HashingReader or None)
        self._worker = manifest.DigestWorker()

    def wrap(self, member):
        if self.policy == options.MANIFEST_IGNORE:
            return member
        if self.entries is None:
            algorithms = self._late_algorithms(member.name)
        elif member.name in self.entries:
            algorithms = (self.entries[member.name][0],)
        else:
            raise exception.InvalidPackage(
                'member %s is not listed in the manifest' % member.name)
        reader = None
        if algorithms:
            reader = manifest.HashingReader(member, algorithms, self._worker)
        self._pending.append((member.name, reader))
        return reader or member

    def _late_algorithms(self, name):
        """The digests to take of a member that precedes the manifest."""
        if self._ahead is None:
            return _LATE_MANIFEST_ALGORITHMS
        algorithm = self._ahead.get(name)
        return (algorithm,) if algorithm in _LATE_MANIFEST_ALGORITHMS else ()

    def take_manifest(self, member):
        if self.entries is not None:
            raise exception.InvalidPackage('package has two manifests')
        if member.size > manifest.MAX_MANIFEST_SIZE:
            raise exception.InvalidPackage(
                'manifest %s is %d bytes, more than the %d accepted'
                % (member.name, member.size, manifest.MAX_MANIFEST_SIZE))
        entries = manifest.parse(member.read())
        if self.policy != options.MANIFEST_IGNORE:
            self.entries = entries

    def check_member(self, name, reader):
        if name not in self.entries:
            raise exception.InvalidPackage(
                'member %s is not listed in the manifest' % name)
        algorithm, expected = self.entries[name]
        if reader is None or algorithm not in reader.algorithms:
            if algorithm not in _LATE_MANIFEST_ALGORITHMS:
                raise exception.InvalidPackage(
                    'manifest uses %s for %s, which came before the '
                    'manifest; only SHA1 and SHA256 can be checked then'
                    % (algorithm.upper(), name))
            raise exception.InvalidPackage(
                'package changed while it was read: its manifest asks for '
                'the %s digest of %s, which the manifest read ahead did not'
                % (algorithm.upper(), name))
        actual = reader.hexdigest(algorithm)
        if actual != expected:
            raise exception.ManifestMismatch(
                'manifest %s digest of %s does not match: the package is '
                'damaged or altered' % (algorithm.upper(), name))

    def close(self):
        """Stop the digest thread."""
        self._worker.close()

    def check_read(self):
        """Check the members read so far, once the manifest is known."""
        if self.entries is None:
            return
        for name, reader in self._pending:
            self.check_member(name, reader)
        self._pending = []

    def finish(self, names):
        if self.policy == options.MANIFEST_IGNORE:
            return 'ignored'
        if self.entries is None:
            if self.policy == options.MANIFEST_REQUIRE:
                raise exception.InvalidPackage(
                    'package has no manifest, and one is required')
            return 'absent'
        self.check_read()
        missing = sorted(set(self.entries) - set(names))
        if missing:
            raise exception.InvalidPackage(
                'manifest lists %s, which the package does not contain'
                % missing[0])
        return 'verified'


class _NotCheap(Exception):
    """The read-ahead would read more than MAX_READ_AHEAD."""


class _FileAhead(object):
    """A regular file read at a position of its own, for the read-ahead.

    pread leaves the file position of the main pass alone. Skips move
    only this position and stop at the end of the file, so a header's size
    is never taken beyond it; reads stop at MAX_READ_AHEAD in all.
    """

    def __init__(self, fd, start, end):
        self._fd = fd
        self._pos = start
        self._end = end
        self._budget = MAX_READ_AHEAD

    def read(self, size):
        size = min(size, self._end - self._pos)
        if size > self._budget:
            raise _NotCheap()
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        self._budget -= len(data)
        return data

    def skip(self, size):
        size = min(size, self._end - self._pos)
        self._pos += size
        return size


def read_manifest_ahead(source_file):
    """Learn from a regular file what its manifest asks for.

    Call it before the main pass reads anything: the tar headers are read
    from the file's current position to the end (with pread: the position
    stays), member data skipped unread, and the manifest parsed if there is
    one. The result only chooses digests; a manifest that changed since is
    refused in the main pass.
    Returns {member name: algorithm}, {} when the package has no manifest,
    or None when that cannot be told cheaply: not a regular file,
    compressed, or not a well-formed tar (the main pass says why).
    """
    try:
        fd = source_file.fileno()
        info = os.fstat(fd)
        start = source_file.tell()
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if compression.sniff(_FileAhead(fd, start, info.st_size))[0]:
        return None
    try:
        for count, member in enumerate(tarstream.iter_members(
                _FileAhead(fd, start, info.st_size))):
            if count == 0 and not member.name.lower().endswith('.ovf'):
                return None    # not an OVA (an XVA has no manifest)
            if member.name.lower().endswith('.mf'):
                if member.size > manifest.MAX_MANIFEST_SIZE:
                    return None
                entries = manifest.parse(member.read())
                return {name: algorithm
                        for name, (algorithm, _) in entries.items()}
    except (exception.XenImportError, _NotCheap):
        return None
    return {}


def _read_descriptor(members, digests):
    first = next(members, None)
    if first is None:
        raise exception.InvalidPackage('the tar archive is empty')
    if not first.name.lower().endswith('.ovf'):
        raise exception.InvalidPackage(
            'the first member of an OVA must be the .ovf descriptor, not %s'
            % first.name)
    if first.size > ovf.MAX_DESCRIPTOR_SIZE:
        raise exception.InvalidPackage(
            'OVF descriptor is %d bytes, more than the %d accepted'
            % (first.size, ovf.MAX_DESCRIPTOR_SIZE))
    return first.name, ovf.parse(digests.wrap(first).read())


def read_package(stream, convert_disk, manifest_policy, on_descriptor=None,
                 max_disk_size=options.DEFAULT_MAX_VIRTUAL_SIZE,
                 select=None, manifest_ahead=None):
    """Read an OVA from ``stream`` and convert the disks asked for.

    :param convert_disk: called as ``convert_disk(reader, size, disk)``
        for each selected disk, in package order, with a reader over the
        disk's (decompressed) bytes, their length when known in advance,
        and its ovf.DiskRef; returns a result kept in
        :attr:`PackageResult.converted`.
    :param manifest_policy: one of the options.MANIFEST_* values.
    :param on_descriptor: called with the ovf.Descriptor before any disk
        data is read; may refuse the package by raising.
    :param max_disk_size: the largest disk accepted; bounds the files of
        disks whose capacity the descriptor does not give.
    :param select: ``select(descriptor)`` gives the ovf.DiskRef to
        convert; by default the boot disk alone.
    :param manifest_ahead: what :func:`read_manifest_ahead` learnt of the
        source, when it was called; then only the digests the manifest asks
        for are taken of the members that precede it.
    """
    return read_members(tarstream.Members(stream), convert_disk,
                        manifest_policy, on_descriptor, max_disk_size,
                        select, manifest_ahead)


def read_members(members, convert_disk, manifest_policy, on_descriptor=None,
                 max_disk_size=options.DEFAULT_MAX_VIRTUAL_SIZE,
                 select=None, manifest_ahead=None):
    """Like :func:`read_package`, from a tarstream.Members not yet read.

    For a reader that looked at the first member to tell the kind of
    package and pushed it back.
    """
    digests = _Digests(manifest_policy, manifest_ahead)
    try:
        return _read_members(members, digests, on_descriptor,
                             convert_disk, max_disk_size, select)
    finally:
        digests.close()


def _first_member_name(disk):
    return _chunk_name(disk.href, 0) if disk.chunk_size else disk.href


def _selected(descriptor, select):
    wanted = [descriptor.disks[0]] if select is None else list(
        select(descriptor))
    for disk in wanted:
        if not disk.is_vhd:
            raise exception.UnsupportedDisk(
                'disk %s is in format %s; only VHD is converted'
                % (disk.href, disk.format_uri))
    return {_first_member_name(d): d for d in wanted}


def _read_members(members, digests, on_descriptor, convert_disk,
                  max_disk_size, select):
    ovf_name, descriptor = _read_descriptor(members, digests)
    if on_descriptor is not None:
        on_descriptor(descriptor)
    pending = _selected(descriptor, select)
    names = [ovf_name]
    budget = _SizeBudget(descriptor.disks, max_disk_size)

    def wrap(member):
        budget.admit(member)
        names.append(member.name)
        return digests.wrap(member)

    results = {}
    for member in members:
        lower = member.name.lower()
        if lower.endswith('.mf'):
            names.append(member.name)
            digests.take_manifest(member)
        elif lower.endswith('.cert'):
            # The signature covers the manifest; noted, not checked.
            if member.size > MAX_CERT_SIZE:
                raise exception.InvalidPackage(
                    'certificate %s is %d bytes, more than the %d accepted'
                    % (member.name, member.size, MAX_CERT_SIZE))
            names.append(member.name)
            digests.signed = True
        elif member.name in pending:
            disk = pending.pop(member.name)
            results[disk.href] = _convert(member, members, disk, wrap,
                                          convert_disk)
        else:
            for disk in pending.values():
                if disk.chunk_size and _is_chunk_of(member.name, disk.href):
                    raise _out_of_order(member.name,
                                        _first_member_name(disk))
            reader = wrap(member)
            if digests.policy != options.MANIFEST_IGNORE:
                while reader.read(1 << 20):
                    pass
        digests.check_read()
    if pending:
        raise exception.InvalidPackage(
            'package has no member %s, which holds disk %s'
            % next(iter((n, d.href) for n, d in pending.items())))
    state = digests.finish(names)
    return PackageResult(
        descriptor=descriptor,
        converted=[(d, results[d.href]) for d in descriptor.disks
                   if d.href in results],
        skipped_disks=[d for d in descriptor.disks if d.href not in results],
        manifest=state, signed=digests.signed)


def _convert(member, members, disk, wrap, convert_disk):
    if disk.chunk_size:
        reader = _ChunkReader(member, members, disk, wrap)
        size = None
    else:
        reader = wrap(member)
        size = member.size
    if disk.compression:
        reader = compression.open_member(disk.compression, reader)
        size = None
    result = convert_disk(reader, size, disk)
    # The decoder stops at the end of the disk: anything after it is data
    # that has no place in the package.
    if reader.read(1):
        raise exception.InvalidPackage(
            'member %s has data after the end of its disk' % disk.href)
    return result
