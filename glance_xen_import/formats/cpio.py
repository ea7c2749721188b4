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
"""

MODE_DIR = 0o040755
MODE_FILE = 0o100644
MAX_FIELD = 0xFFFFFFFF
TRAILER = 'TRAILER!!!'


def _pad(length):
    return b'\0' * ((4 - length % 4) % 4)


def _header(ino, mode, size, name):
    encoded = name.encode('utf-8') + b'\0'
    if size > MAX_FIELD or len(encoded) > MAX_FIELD:
        raise ValueError('%s does not fit a newc header' % name)
    fields = (ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(encoded), 0)
    header = b'070701' + b''.join(b'%08X' % f for f in fields)
    return header + encoded + _pad(len(header) + len(encoded))


def newc_archive(entries, first_ino=1):
    """The bytes of a newc archive of entries, closed by TRAILER!!!.

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
    out += _header(0, 0, 0, TRAILER)
    return bytes(out)
