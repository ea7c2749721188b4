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

"""Linux release files, device names, consoles and kernels."""

import pytest

from glance_xen_import.inspect import facts
from glance_xen_import.inspect import linux


def test_parse_os_release():
    values = linux.parse_os_release(
        '# comment\nNAME="Red Hat Enterprise Linux"\nID=rhel\n'
        "VERSION_ID='8.10'\nPRETTY_NAME=\"Red Hat \\\"RHEL\\\" 8\"\n"
        'BROKEN="unterminated\n\nnot a pair\n')
    assert values['NAME'] == 'Red Hat Enterprise Linux'
    assert values['ID'] == 'rhel'
    assert values['VERSION_ID'] == '8.10'
    assert values['PRETTY_NAME'] == 'Red Hat "RHEL" 8'
    assert values['BROKEN'] == 'unterminated'


@pytest.mark.parametrize('values, expected', [
    ({'ID': 'debian', 'VERSION_ID': '12'}, ('debian', '12')),
    ({'ID': 'opensuse-leap', 'VERSION_ID': '15.5'}, ('opensuse', '15.5')),
    ({'ID': 'sles', 'VERSION_ID': '15.4'}, ('sles', '15.4')),
    ({'ID': 'Ubuntu', 'VERSION_ID': '22.04'}, ('ubuntu', '22.04')),
    ({'ID': 'arch'}, ('arch', None)),
    ({'ID': '$(rm -rf /)', 'VERSION_ID': '1'}, (None, None)),
    ({}, (None, None)),
])
def test_distro_from_os_release(values, expected):
    assert linux.distro_from_os_release(values) == expected


@pytest.mark.parametrize('path, text, expected', [
    ('/etc/redhat-release', 'CentOS release 6.10 (Final)\n',
     ('centos', '6.10')),
    ('/etc/centos-release', 'CentOS Linux release 7.9.2009 (Core)\n',
     ('centos', '7.9')),
    ('/etc/redhat-release',
     'Red Hat Enterprise Linux Server release 5.11 (Tikanga)\n',
     ('rhel', '5.11')),
    ('/etc/redhat-release', 'Fedora release 20 (Heisenbug)\n',
     ('fedora', '20')),
    ('/etc/redhat-release', 'Oracle Linux Server release 6.10\n',
     ('ol', '6.10')),
    ('/etc/redhat-release', 'Scientific Linux release 6.4 (Carbon)\n',
     ('scientificlinux', '6.4')),
    ('/etc/redhat-release', 'Something Else release 3\n', (None, '3')),
    ('/etc/SuSE-release',
     'SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\n'
     'PATCHLEVEL = 4\n', ('sles', '11.4')),
    ('/etc/SuSE-release',
     'SUSE Linux Enterprise Server 10 (x86_64)\nVERSION = 10\n'
     'PATCHLEVEL = 0\n', ('sles', '10')),
    ('/etc/SuSE-release', 'openSUSE 13.1 (x86_64)\nVERSION = 13.1\n',
     ('opensuse', '13.1')),
    ('/etc/SuSE-release',
     'SUSE Linux Enterprise Desktop 11 (x86_64)\nVERSION = 11\n',
     ('sled', '11')),
    ('/etc/lsb-release', 'DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=12.04\n',
     ('ubuntu', '12.04')),
    ('/etc/debian_version', '6.0.10\n', ('debian', '6.0.10')),
    ('/etc/debian_version', 'bookworm/sid\n', ('debian', None)),
    ('/etc/redhat-release', '', (None, None)),
])
def test_distro_from_release_text(path, text, expected):
    assert linux.distro_from_release_text(path, text) == expected


@pytest.mark.parametrize('version, pv_only', [
    ('2.6.18-419.el5xen', True),          # CentOS/RHEL 5 kernel-xen
    ('2.6.16.60-0.21-xen', True),         # SLES 10 kernel-xen
    ('3.0.101-63-xen', True),             # SLES 11 kernel-xen
    ('2.6.18-6-xen-686', True),           # Debian etch linux-image-xen
    ('2.6.18-419.el5', False),
    ('6.1.0-13-amd64', False),
    ('5.14.0-362.8.1.el9_3.x86_64', False),
    ('4.4.0-1-xenial-fake', False),
])
def test_pv_only_kernel_names(version, pv_only):
    assert bool(linux._PV_ONLY_NAME.search(version)) is pv_only


def test_pv_only_kernel_config():
    assert linux._PV_ONLY_CONFIG.search(b'A=1\nCONFIG_X86_XEN=y\n')
    assert linux._PV_ONLY_CONFIG.search(b'CONFIG_X86_64_XEN=y\n')
    # pvops kernels run on Xen and on KVM alike.
    assert not linux._PV_ONLY_CONFIG.search(
        b'CONFIG_XEN=y\nCONFIG_XEN_PVHVM=y\n# CONFIG_X86_XEN is not set\n')


def test_scan_lines_skips_comments():
    found = facts.LinuxFacts(location='p')
    linux._scan_lines(
        '# /dev/xvda1 / ext4\n'
        '   # console=hvc0\n'
        'UUID=1 / ext4 defaults 0 1\n'
        '/dev/xvdb1 none swap sw 0 0\n'
        'kernel /vmlinuz ro root=/dev/xvda1 console=xvc0\n'
        'kernel /vmlinuz console=hvc0x\n'
        'kernel /vmlinuz console=ttyS0 console=hvc0\n', 'p:/f', found)
    assert found.xvd_references == [
        'p:/f:4: /dev/xvdb1 none swap sw 0 0',
        'p:/f:5: kernel /vmlinuz ro root=/dev/xvda1 console=xvc0']
    assert found.xen_console == [
        'p:/f:5: kernel /vmlinuz ro root=/dev/xvda1 console=xvc0',
        'p:/f:7: kernel /vmlinuz console=ttyS0 console=hvc0']


def test_references_are_bounded():
    found = facts.LinuxFacts(location='p')
    linux._scan_lines('/dev/xvda1 / ext4\n' * 1000, 'p:/f', found)
    assert len(found.xvd_references) == linux.MAX_REFERENCES
