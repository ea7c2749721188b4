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

"""A cpio 'newc' (070701) archive writer, as the kernel's initramfs reads it.

Each entry is a 110-byte header of thirteen 8-digit hex fields (magic
070701, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
rdevmajor, rdevminor, namesize, check), the NUL-terminated name padded
to 4 bytes, then the data padded to 4 bytes; TRAILER!!! closes it.
Every entry written here has one link (nlink 1), so the kernel never
treats two of them as hard links of each other.

filter_archives() copies archives entry by entry, byte for byte, leaving
some names out and adding entries before the last trailer: the result is
one archive set that GNU cpio, lsinitramfs and the kernel all read the
same way.
"""

MODE_DIR = 0o040755
MODE_FILE = 0o100644
MAX_FIELD = 0xFFFFFFFF
MAX_NAME = 4096
HEADER = 110
TRAILER = 'TRAILER!!!'
_CHUNK = 1024 * 1024


class Damaged(Exception):
    """The input is not a well-formed newc/crc archive; str() says why."""


def _pad(length):
    return b'\0' * ((4 - length % 4) % 4)


def _header(ino, mode, size, name):
    encoded = name.encode('utf-8') + b'\0'
    if size > MAX_FIELD or len(encoded) > MAX_FIELD:
        raise ValueError('%s does not fit a newc header' % name)
    fields = (ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(encoded), 0)
    header = b'070701' + b''.join(b'%08X' % f for f in fields)
    return header + encoded + _pad(len(header) + len(encoded))


def newc_entries(entries, first_ino=1):
    """The bytes of newc entries, with no trailer.

    entries: (name, mode, data) with data None for a directory; names
    are relative ('usr/lib/...'), parents before their children.
    """
    out = bytearray()
    ino = first_ino
    for name, mode, data in entries:
        body = b'' if data is None else bytes(data)
        out += _header(ino, mode, len(body), name)
        out += body + _pad(len(body))
        ino += 1
    return bytes(out)


def newc_archive(entries, first_ino=1):
    """The bytes of a newc archive of entries, closed by TRAILER!!!."""
    return newc_entries(entries, first_ino) + _header(0, 0, 0, TRAILER)


def _read(src, count, what):
    data = src.read(count)
    if len(data) != count:
        raise Damaged('archive ends inside %s' % what)
    return data


def _copy(src, dst, count, what):
    while count:
        data = src.read(min(count, _CHUNK))
        if not data:
            raise Damaged('archive ends inside %s' % what)
        if dst is not None:
            dst.write(data)
        count -= len(data)


def filter_archives(src, dst, drop, extra):
    """Copy the archives of src (an unpacked initramfs) to dst.

    Entries whose names are in drop are left out (refused if hard-linked:
    their data may belong to another name); the bytes extra
    (newc_entries) go in front of the last TRAILER!!!. Zero padding
    between archives is kept. Returns the names left out.
    """
    held = b''      # the last trailer seen, until more archives follow
    dropped = []
    while True:
        head = src.read(4)
        while head and head == b'\0' * len(head):
            if held:
                held += head    # padding after a trailer stays after it
            else:
                dst.write(head)
            head = src.read(4)
        if not head:
            break
        header = head + _read(src, HEADER - len(head), 'a header')
        if header[:6] not in (b'070701', b'070702'):
            raise Damaged('not a newc/crc header')
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16)
                      for i in range(13)]
        except ValueError:
            raise Damaged('a header field is not hex')
        mode, nlink = fields[1], fields[4]
        size, namesize = fields[6], fields[11]
        if not 1 <= namesize <= MAX_NAME:
            raise Damaged('a name of %d bytes' % namesize)
        name_bytes = _read(src, namesize + len(_pad(HEADER + namesize)),
                           'a name')
        name = name_bytes[:namesize].rstrip(b'\0').decode(
            'utf-8', 'replace')
        record = header + name_bytes
        length = size + len(_pad(size))
        if name == TRAILER:
            dst.write(held)
            held = record
            _copy(src, None, length, name)
            continue
        dst.write(held)
        held = b''
        if name.lstrip('./') in drop:
            if nlink > 1 and mode & 0o170000 == 0o100000:
                raise Damaged('%s is a hard link' % name)
            dropped.append(name.lstrip('./'))
            _copy(src, None, length, name)
            continue
        dst.write(record)
        _copy(src, dst, length, name)
    if not held:
        raise Damaged('no trailer')
    dst.write(extra)
    dst.write(held)
    return dropped
