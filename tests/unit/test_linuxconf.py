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

"""Same-length rewrites of configuration text (fixup.linuxconf)."""

import hypothesis
from hypothesis import strategies as st
import pytest

from glance_xen_import.fixup import linuxconf

ALL = (linuxconf.DEVICE_NAMES, linuxconf.CONSOLE, linuxconf.UDEV_NET,
       linuxconf.IFCFG, linuxconf.NM_KEYFILE)


@pytest.mark.parametrize('before, after, done', [
    # fstab: the spare space goes to the end of the line.
    (b'/dev/xvda1 / ext4 defaults 0 1\n',
     b'/dev/sda1 / ext4 defaults 0 1 \n', ['device-names']),
    # Several names on one line, and a whole-disk name.
    (b'/dev/xvdb /dev/xvdc2\n', b'/dev/sdb /dev/sdc2  \n',
     ['device-names']),
    # A GRUB line continued with a backslash keeps it last.
    (b'linux /vmlinuz root=/dev/xvda1 console=hvc0 \\\n',
     b'linux /vmlinuz root=/dev/sda1 console=tty0  \\\n',
     ['console', 'device-names']),
    # CRLF line ends stay where they were.
    (b'root=/dev/xvda1\r\n', b'root=/dev/sda1 \r\n', ['device-names']),
    # Quoted values: the quote moves left, the space follows it.
    (b'GRUB_CMDLINE_LINUX="resume=/dev/xvda2"\n',
     b'GRUB_CMDLINE_LINUX="resume=/dev/sda2" \n', ['device-names']),
    # No newline at the end of the file.
    (b'/dev/xvda1 /', b'/dev/sda1 / ', ['device-names']),
    # Comments are left alone.
    (b'# /dev/xvda1 was the root\n', b'# /dev/xvda1 was the root\n', []),
    (b'  #console=hvc0\n', b'  #console=hvc0\n', []),
    # xvc0 too; console names without a number are not Xen's to change.
    (b'console=xvc0 console=hvc\n', b'console=tty0 console=hvc\n',
     ['console']),
    # MAC bindings are commented out.
    (b'HWADDR=00:16:3e:00:00:01\n', b'#WADDR=00:16:3e:00:00:01\n',
     ['mac-binding']),
    (b'  MACADDR=00:16:3e:00:00:01\n', b'  #ACADDR=00:16:3e:00:00:01\n',
     ['mac-binding']),
    (b'mac-address=00:16:3E:00:00:01\n', b'#ac-address=00:16:3E:00:00:01\n',
     ['mac-binding']),
    (b'SUBSYSTEM=="net", ATTR{address}=="00:16:3e:00:00:01", NAME="eth0"\n',
     b'#UBSYSTEM=="net", ATTR{address}=="00:16:3e:00:00:01", NAME="eth0"\n',
     ['mac-binding']),
])
def test_rewrite(before, after, done):
    assert linuxconf.rewrite(before, ALL, b'sd') == (after, done)


def test_only_the_edits_allowed_for_the_file():
    text = b'/dev/xvda1 / ext4 defaults 0 1 console=hvc0\n'
    new, done = linuxconf.rewrite(text, (linuxconf.DEVICE_NAMES,), b'vd')
    assert new == b'/dev/vda1 / ext4 defaults 0 1 console=hvc0 \n'
    assert done == ['device-names']
    assert linuxconf.rewrite(text, (), b'vd') == (text, [])


@pytest.mark.parametrize('bus, prefix', [
    ('scsi', b'sd'), ('ide', b'sd'), ('sata', b'sd'), ('virtio', b'vd')])
def test_disk_prefix(bus, prefix):
    assert linuxconf.disk_prefix(bus) == prefix


@hypothesis.given(st.lists(st.sampled_from([
    b'/dev/xvda1', b'/dev/xvdb', b'console=hvc0', b'console=xvc1', b' ',
    b'\t', b'"', b'\\', b'\r', b'\n', b'#', b'HWADDR=', b'x', b'=',
    b'ATTR{address}==', b'mac-address=']), max_size=40))
def test_length_never_changes(parts):
    text = b''.join(parts)
    new, _ = linuxconf.rewrite(text, ALL, b'sd')
    assert len(new) == len(text)
    assert linuxconf.XVD.search(new) is None or b'#' in text
