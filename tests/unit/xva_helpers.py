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

"""Read an XVA with the formats layer into RAW files, for the XVA tests."""

import os

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import package
from glance_xen_import.formats import raw
from tests import ovakit


class Stream(ovakit.SequentialReader):
    """A read-only stream over a file that counts what it hands out."""

    def __init__(self, path):
        self._file = open(path, 'rb')
        super().__init__(self._file)

    def close(self):
        self._file.close()


def convert(xva, out_dir, select=None, **kwargs):
    """Read ``xva``; write the selected disks to ``out_dir/<ref>.raw``.

    Returns (package.Package, {ref: path}, bytes read from the input).
    """
    paths = {}

    def open_sink(disk):
        path = os.path.join(out_dir, disk.ref.replace(':', '_') + '.raw')
        paths[disk.ref] = path
        return raw.SparseWriter(path)

    writers = {}

    def tracked(disk):
        writers[disk.ref] = open_sink(disk)
        return writers[disk.ref]

    stream = Stream(xva)
    try:
        pkg = package.read_package(
            stream, convert_disk=None,
            select=select or (lambda descriptor: descriptor.disks),
            open_sink=tracked, **kwargs)
    finally:
        stream.close()
    for disk, info in pkg.result.converted:
        writers[disk.ref].finish(info.current_size)
    return pkg, paths, stream.bytes_read


def refused(tmp_path, xva, match, **kwargs):
    """Reading ``xva`` is refused with ``match``; nothing is left behind."""
    out_dir = tmp_path / 'out'
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(exception.XenImportError, match=match) as info:
        convert(str(xva), str(out_dir), **kwargs)
    assert os.listdir(out_dir) == [], 'output left behind'
    assert '\n' not in str(info.value)
    return info.value
