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

"""Same-length rewrites of Linux configuration text for a move to KVM.

Every edit keeps the file's length, so the file can be patched in place
without touching its inode (see fixup.inplace):

* ``/dev/xvdX[N]`` becomes ``/dev/sdX[N]`` (SCSI, IDE, SATA) or
  ``/dev/vdX[N]`` (virtio-blk): one character shorter, so the line gets one
  space more at its end (before a trailing backslash or CR). Whitespace at
  the end of a line means nothing in fstab, crypttab, GRUB or shell files.
* ``console=hvc0`` / ``console=xvc0`` becomes ``console=tty0``.
* A line binding a NIC to its Xen MAC address (a udev persistent-net rule,
  ``HWADDR=``/``MACADDR=`` in ifcfg files, ``mac-address=`` in
  NetworkManager keyfiles) is commented out: its first character becomes
  ``#``, so the first NIC on KVM keeps the name, and with it the
  configuration, it had on Xen.

Lines that are comments already are left alone.
"""

import re

from glance_xen_import.inspect import linux as linux_inspect

XVD = re.compile(rb'/dev/xvd([a-z]{1,3})(\d*)')
XEN_CONSOLE = re.compile(rb'\bconsole=(?:hvc|xvc)(\d)')
_UDEV_MAC = linux_inspect.UDEV_MAC
_IFCFG_MAC = linux_inspect.IFCFG_MAC
_KEYFILE_MAC = linux_inspect.KEYFILE_MAC

# What each kind of file may have rewritten.
DEVICE_NAMES = 'device-names'
CONSOLE = 'console'
UDEV_NET = 'udev-net'
IFCFG = 'ifcfg'
NM_KEYFILE = 'nm-keyfile'


def disk_prefix(bus):
    """The kernel's name prefix for disks on a Glance hw_disk_bus."""
    return b'vd' if bus == 'virtio' else b'sd'


def _split_end(line):
    """(body, end) where end is the newline, CR and trailing backslash."""
    body = line
    end = b''
    for suffix in (b'\n', b'\r', b'\\'):
        if body.endswith(suffix):
            body, end = body[:-1], suffix + end
    return body, end


def _rename_devices(body, prefix):
    count = 0

    def rename(match):
        nonlocal count
        count += 1
        return b'/dev/' + prefix + match.group(1) + match.group(2)

    renamed = XVD.sub(rename, body)
    return renamed + b' ' * count, count


def _comment_out(body):
    stripped = body.lstrip()
    at = len(body) - len(stripped)
    return body[:at] + b'#' + body[at + 1:]


def rewrite(data, edits, prefix):
    """(new bytes, [edit names]) for the file content ``data``.

    ``edits`` names the rewrites allowed in this file (the constants
    above); ``prefix`` is disk_prefix() of the bus the guest will boot on.
    The result always has the length of ``data``.
    """
    lines = data.splitlines(keepends=True)
    done = []
    for index, line in enumerate(lines):
        body, end = _split_end(line)
        if body.lstrip().startswith(b'#'):
            continue
        new = body
        if DEVICE_NAMES in edits and XVD.search(new):
            new, _ = _rename_devices(new, prefix)
            done.append(DEVICE_NAMES)
        if CONSOLE in edits and XEN_CONSOLE.search(new):
            new = XEN_CONSOLE.sub(rb'console=tty\1', new)
            done.append(CONSOLE)
        if ((UDEV_NET in edits and _UDEV_MAC.search(new))
                or (IFCFG in edits and _IFCFG_MAC.match(new))
                or (NM_KEYFILE in edits and _KEYFILE_MAC.match(new))):
            new = _comment_out(new)
            done.append('mac-binding')
        lines[index] = new + end
    result = b''.join(lines)
    assert len(result) == len(data)
    return result, sorted(set(done))


# (path, edits) relative to the root file system. Files that are links
# (e.g. /etc/grub.conf -> ../boot/grub/grub.conf) are reached through
# their targets' own entries.
ROOT_FILES = (
    ('/etc/fstab', (DEVICE_NAMES,)),
    ('/etc/crypttab', (DEVICE_NAMES,)),
    ('/etc/default/grub', (DEVICE_NAMES, CONSOLE)),
    ('/etc/initramfs-tools/conf.d/resume', (DEVICE_NAMES,)),
    ('/etc/udev/rules.d/70-persistent-net.rules', (UDEV_NET,)),
    ('/etc/kernel/cmdline', (DEVICE_NAMES, CONSOLE)),
)
# Directories of the root whose files of a given pattern are edited.
ROOT_DIRECTORIES = tuple(
    (directory, names, (edit,))
    for (directory, names, _), edit in zip(
        linux_inspect.MAC_BINDING_DIRECTORIES, (IFCFG, IFCFG, NM_KEYFILE)))
# Relative to /boot (the root's, or a separate boot file system).
BOOT_FILES = (
    ('grub/grub.cfg', (DEVICE_NAMES, CONSOLE)),
    ('grub2/grub.cfg', (DEVICE_NAMES, CONSOLE)),
    ('grub2/grubenv', (DEVICE_NAMES, CONSOLE)),
    ('grub/menu.lst', (DEVICE_NAMES, CONSOLE)),
    ('grub/grub.conf', (DEVICE_NAMES, CONSOLE)),
    ('extlinux/extlinux.conf', (DEVICE_NAMES, CONSOLE)),
    ('extlinux.conf', (DEVICE_NAMES, CONSOLE)),
    ('syslinux/syslinux.cfg', (DEVICE_NAMES, CONSOLE)),
)
BOOT_DIRECTORIES = (
    ('loader/entries', re.compile(r'^[\w.@+-]+\.conf$'),
     (DEVICE_NAMES, CONSOLE)),
)
