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

"""OVF manifest parsing (the .mf member)."""

import hashlib
import os

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import manifest
from tests import ovakit

SHA1 = hashlib.sha1(b'a').hexdigest()
SHA256 = hashlib.sha256(b'b').hexdigest()


def test_real_sha1_manifest():
    with open(os.path.join(ovakit.FIXTURES, 'ganeti.mf'), 'rb') as f:
        entries = manifest.parse(f.read())
    assert entries == {
        'ganeti.ovf': ('sha1', 'd298200d9044c54b0fde13efaa90e564badc5961'),
        'new_disk.vmdk': ('sha1',
                          '711c48f14c934228b8e117d036c913cdb9d63305'),
    }


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
@pytest.mark.parametrize('newline', ['\r\n', '\n'])
def test_xencenter_lines(algorithm, newline):
    entries = [('Web server.ovf', b'ovf bytes'),
               ('5936bc8c-20ae-4052-9083-b8e5b96dc683.vhd', b'disk')]
    data = ovakit.manifest(entries, algorithm, newline)
    assert manifest.parse(data) == {
        name: (algorithm, hashlib.new(algorithm, body).hexdigest())
        for name, body in entries}


def test_names_with_spaces_and_parentheses():
    # XenCenter test data: "CA-89555 file names with parenthesis".
    data = ('SHA1(Database server (copy).ovf)= %s\r\n'
            'SHA256(my disk (1).vhd)= %s\r\n' % (SHA1, SHA256)).encode()
    assert manifest.parse(data) == {
        'Database server (copy).ovf': ('sha1', SHA1),
        'my disk (1).vhd': ('sha256', SHA256)}


def test_uppercase_digest_and_blank_lines():
    data = ('\r\nSHA256(a.vhd)= %s\r\n\r\n' % SHA256.upper()).encode()
    assert manifest.parse(data) == {'a.vhd': ('sha256', SHA256)}


@pytest.mark.parametrize('line', [
    'SHA256(a.vhd) %s' % SHA256,              # no '='
    'MD5(a.vhd)= d41d8cd98f00b204e9800998ecf8427e',
    'SHA256(a.vhd)= %s' % SHA256[:-1],         # short digest
    'SHA1(a.vhd)= %s' % SHA256,                # SHA256 length under SHA1
    'SHA256(a.vhd)= %szz' % SHA256[:-2],       # not hex
    'SHA256()= %s' % SHA256,                   # no name
    'SHA256(../a.vhd)= %s' % SHA256,
    'SHA256(/etc/a.vhd)= %s' % SHA256,
    'just some text',
])
def test_bad_lines_refused(line):
    with pytest.raises(exception.InvalidPackage) as caught:
        manifest.parse((line + '\r\n').encode())
    assert '\n' not in str(caught.value)


def test_duplicate_entry_refused():
    data = ('SHA1(a.vhd)= %s\nSHA1(a.vhd)= %s\n' % (SHA1, SHA1)).encode()
    with pytest.raises(exception.InvalidPackage):
        manifest.parse(data)


@pytest.mark.parametrize('data', [b'', b'\r\n\r\n', b'\xff\xfe\x00S'])
def test_empty_or_not_text_refused(data):
    with pytest.raises(exception.InvalidPackage):
        manifest.parse(data)


def test_size_limit():
    line = ('SHA1(%%08d.vhd)= %s\n' % SHA1)
    data = ''.join(line % i for i in range(30000)).encode()
    assert len(data) > 1 << 20
    with pytest.raises(exception.InvalidPackage):
        manifest.parse(data)
