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

"""Public VHD samples (tests/fixtures/README.rst) through the decoder."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import vhd
from tests import ovakit


def fixture(name):
    return os.path.join(ovakit.FIXTURES, name)


def decode_to(path, out, member_size='file'):
    if member_size == 'file':
        member_size = os.path.getsize(path)
    sink = ovakit.FileSink(out)
    info = None
    try:
        with open(path, 'rb') as f:
            info = vhd.decode(ovakit.SequentialReader(f), sink,
                              member_size=member_size)
    finally:
        sink.close(info.current_size if info else None)
    return info


@pytest.mark.parametrize('member_size', ['file', None])
def test_dfvfs_ext2_matches_libvhdi(tmp_path, member_size):
    path = fixture('dfvfs-ext2.vhd')
    out = str(tmp_path / 'ext2.raw')
    info = decode_to(path, out, member_size)
    assert info.disk_type == 'dynamic'
    assert info.creator == 'qemu'
    assert info.current_size == 4212736 == os.path.getsize(out)
    assert info.allocated_blocks == 1
    assert ovakit.pyvhdi_first_difference(path, out) is None


def test_dfvfs_ext2_matches_qemu_img(tmp_path):
    ovakit.require_tools('qemu-img')
    path = fixture('dfvfs-ext2.vhd')
    out = str(tmp_path / 'ext2.raw')
    decode_to(path, out)
    expected = ovakit.qemu_to_raw(path, str(tmp_path / 'qemu.raw'))
    assert ovakit.first_difference(out, expected) is None


def test_dfvfs_ext2_filesystem_is_consistent(tmp_path):
    # An independent reader of the result: e2fsck, read-only.
    ovakit.require_tools('e2fsck')
    out = str(tmp_path / 'ext2.raw')
    decode_to(fixture('dfvfs-ext2.vhd'), out)
    proc = subprocess.run(['e2fsck', '-fn', out], capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dfvfs_image_bad_checksums_refused(tmp_path):
    """image.vhd has a wrong checksum in both footer and copy: refused.

    The spec: use the footer copy if the footer's checksum fails; if the
    copy's fails too, the file is corrupt.
    """
    path = fixture('dfvfs-image.vhd')
    with open(path, 'rb') as f:
        data = f.read()
    for buf in (bytearray(data[:512]), bytearray(data[-512:])):
        stored = ovakit.get_field(buf, ovakit.FOOTER_FIELDS, 'checksum')
        assert ovakit.vhd_checksum(buf, 64) != stored
    for member_size in ('file', None):
        with pytest.raises(exception.InvalidDisk) as caught:
            decode_to(path, str(tmp_path / ('o%s.raw' % member_size)),
                      member_size)
        assert 'checksum' in str(caught.value)


def test_dfvfs_image_with_fixed_checksums_converts(tmp_path):
    # The same file with its checksums repaired is a good disk: the refusal
    # above is for the checksum alone.
    path = str(tmp_path / 'image.vhd')
    shutil.copy(fixture('dfvfs-image.vhd'), path)
    os.chmod(path, 0o644)
    ovakit.edit_footer(path)
    out = str(tmp_path / 'image.raw')
    info = decode_to(path, out)
    assert info.current_size == 104448
    assert ovakit.pyvhdi_first_difference(path, out) is None


@pytest.mark.parametrize('name,parent,reason', [
    # Its footer checksum is wrong too, which is found first.
    ('dfvfs-image-differential.vhd', 'image.vhd', 'checksum|differencing'),
    ('dfvfs-fat-differential.vhd', 'fat-parent.vhd', 'differencing'),
])
def test_dfvfs_differencing_refused(tmp_path, name, parent, reason):
    path = fixture(name)
    opened = []

    def hook(event, args):
        if event == 'open' and args and parent in str(args[0]):
            opened.append(args[0])

    sys.addaudithook(hook)
    with pytest.raises(exception.InvalidDisk) as caught:
        decode_to(path, str(tmp_path / 'o.raw'))
    assert re.search(reason, str(caught.value))
    assert opened == []


def test_dfvfs_fat_differential_with_checksums_still_refused(tmp_path):
    # Valid checksums do not make a type-4 disk acceptable.
    path = fixture('dfvfs-fat-differential.vhd')
    with pytest.raises(exception.UnsupportedDisk):
        decode_to(path, str(tmp_path / 'o.raw'), member_size=None)


def test_libvhdi_footer_alone_refused(tmp_path):
    # A 512-byte Virtual PC differencing footer and nothing else.
    path = fixture('libvhdi_file_footer.1')
    for member_size in ('file', None):
        with pytest.raises(exception.InvalidDisk):
            decode_to(path, str(tmp_path / ('o%s.raw' % member_size)),
                      member_size)
