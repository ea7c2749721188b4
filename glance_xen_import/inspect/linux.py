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

"""Linux: distribution, and what ties the guest to Xen PV.

What breaks a Xen PV Linux guest on KVM and can be seen read-only:
/dev/xvd* names in fstab, crypttab and boot loader configs, console=hvc0
(or xvc0) on the kernel command line, and kernels that can only run as
Xen PV guests (CentOS 5 kernel-xen, SLES kernel-xen: CONFIG_X86_XEN).
"""

import re
import shlex

from glance_xen_import.inspect import bootentry
from glance_xen_import.inspect import facts
from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import kvmstorage

# Config files are small; anything bigger is not a config file.
MAX_TEXT_BYTES = 1024 * 1024
MAX_REFERENCES = 50
MAX_KERNELS = 64
MAX_LINE = 200

OS_RELEASE_FILES = ('/etc/os-release', '/usr/lib/os-release')
# Older distributions (CentOS/RHEL 5 and 6, SLES 11) have no os-release.
LEGACY_RELEASE_FILES = ('/etc/centos-release', '/etc/redhat-release',
                        '/etc/SuSE-release', '/etc/lsb-release',
                        '/etc/debian_version')
# Files that name block devices, relative to the root filesystem.
ROOT_DEVICE_FILES = ('/etc/fstab', '/etc/crypttab', '/etc/default/grub',
                     '/etc/grub.conf', '/etc/initramfs-tools/conf.d/resume',
                     '/etc/kernel/cmdline')
# Boot loader configs relative to /boot (the root's, or a separate one).
BOOT_CONFIGS = ('grub/grub.cfg', 'grub2/grub.cfg', 'grub2/grubenv',
                'grub/menu.lst',
                'grub/grub.conf', 'extlinux/extlinux.conf',
                'extlinux.conf', 'syslinux/syslinux.cfg')
BLS_ENTRIES = 'loader/entries'

# libosinfo-style short names for os-release IDs that differ from them.
_DISTRO_IDS = {
    'opensuse-leap': 'opensuse', 'opensuse-tumbleweed': 'opensuse',
    'opensuse-microos': 'opensuse', 'sles_sap': 'sles', 'redhat': 'rhel',
    'scientific': 'scientificlinux', 'ol': 'ol', 'amzn': 'amzn',
}
_SAFE_TOKEN = re.compile(r'^[a-z0-9][a-z0-9._-]{0,31}$')
_RELEASE_LINE = re.compile(r'^(.*?)\s+release\s+(\d+(?:\.\d+)?)',
                           re.IGNORECASE)
_RELEASE_NAMES = (
    ('centos', 'centos'), ('red hat', 'rhel'), ('fedora', 'fedora'),
    ('scientific', 'scientificlinux'), ('oracle', 'ol'),
    ('almalinux', 'almalinux'), ('rocky', 'rocky'),
)
_XVD = re.compile(r'/dev/xvd[a-z]+\d*')
_XEN_CONSOLE = re.compile(r'\bconsole=(?:hvc|xvc)\d*\b')
_CONSOLE = re.compile(r'(?:^|[\s"\'])console=([^\s,"\']*)')


def xen_console_last(cmdline):
    """True when the last console= of a command line is a Xen console.

    The kernel makes the last console= /dev/console. Booted on KVM with
    hvc0 or xvc0 there, init finds no console to open ("unable to open an
    initial console") and a Debian 12 guest stops before mounting its
    root, as the boot tests show; with a console KVM has named last, the
    Xen one is only a console that stays silent.
    """
    names = _CONSOLE.findall(cmdline or '')
    return bool(names) and re.match(r'^(?:hvc|xvc)\d*$',
                                    names[-1]) is not None


# Lines that tie a NIC's name or configuration to its (Xen) MAC address:
# udev persistent-net rules, ifcfg HWADDR/MACADDR, NetworkManager keyfiles.
UDEV_MAC = re.compile(rb'ATTRS?\{address\}\s*==', re.IGNORECASE)
IFCFG_MAC = re.compile(rb'^\s*(?:HWADDR|MACADDR)\s*=')
KEYFILE_MAC = re.compile(rb'^\s*(?:cloned-)?mac-address\s*=')
MAC_BINDING_FILES = (
    ('/etc/udev/rules.d/70-persistent-net.rules', UDEV_MAC),
)
MAC_BINDING_DIRECTORIES = (
    ('/etc/sysconfig/network-scripts', re.compile(r'^ifcfg-[\w.:@-]+$'),
     IFCFG_MAC),
    ('/etc/sysconfig/network', re.compile(r'^ifcfg-[\w.:@-]+$'), IFCFG_MAC),
    ('/etc/NetworkManager/system-connections', re.compile(r'^[\w .@-]+$'),
     KEYFILE_MAC),
)
MAX_NETWORK_FILES = 256
_KERNEL = re.compile(r'^(?:vmlinuz|vmlinux|kernel)-(.+)$')
_PV_ONLY_NAME = re.compile(r'(?:xen|xenu)$|[-.]xen(?:[-.]|$)', re.IGNORECASE)
_PV_ONLY_CONFIG = re.compile(rb'^CONFIG_X86(?:_64)?_XEN=y', re.MULTILINE)


def looks_like_root(fs):
    """True if fs is the root filesystem of a Linux (or other Unix)."""
    if fs.kind not in ('ext', 'xfs') or not fs.is_dir('/etc'):
        return False
    names = OS_RELEASE_FILES + LEGACY_RELEASE_FILES + ('/etc/fstab',)
    return any(fs.is_file(name) for name in names)


def looks_like_boot(fs):
    """True if fs looks like a separate /boot (kernels or grub at top)."""
    if fs.kind not in ('ext', 'xfs', 'fat'):
        return False
    if fs.is_dir('/grub') or fs.is_dir('/grub2'):
        return True
    return any(_KERNEL.match(name) for name in fs.listdir('/'))


def _read_text(fs, path, linux):
    try:
        data = fs.read(path, MAX_TEXT_BYTES)
    except filesystem.FileTooLarge:
        return None
    if data is None:
        return None
    linux.files_read.append('%s:%s' % (fs.location, path))
    return data.decode('utf-8', errors='replace')


def parse_os_release(text):
    """KEY=value pairs of an os-release file (shell-style quoting)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#') or '=' not in line:
            continue
        key, value = line.split('=', 1)
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip('"\'')]
        values[key.strip()] = ' '.join(words)
    return values


def distro_from_os_release(values):
    ident = values.get('ID', '').strip().lower()
    ident = _DISTRO_IDS.get(ident, ident)
    if not _SAFE_TOKEN.match(ident):
        return None, None
    version = values.get('VERSION_ID', '').strip() or None
    return ident, version


def distro_from_release_text(path, text):
    """(distro, version) from a pre-os-release release file."""
    first = text.strip().splitlines()[0] if text.strip() else ''
    lower = first.lower()
    if path.endswith('debian_version'):
        version = first.strip()
        return 'debian', version if re.match(r'^\d', version) else None
    if path.endswith('lsb-release'):
        values = parse_os_release(text)
        ident = values.get('DISTRIB_ID', '').lower() or None
        if ident and not _SAFE_TOKEN.match(ident):
            ident = None
        return ident, values.get('DISTRIB_RELEASE') or None
    if path.endswith('SuSE-release'):
        values = {k.strip().upper(): v.strip() for k, v in
                  (line.split('=', 1) for line in text.splitlines()
                   if '=' in line)}
        version = values.get('VERSION')
        if version and values.get('PATCHLEVEL', '0') not in ('', '0'):
            version = '%s.%s' % (version, values['PATCHLEVEL'])
        if 'opensuse' in lower:
            return 'opensuse', version
        if 'desktop' in lower:
            return 'sled', version
        return 'sles', version
    match = _RELEASE_LINE.match(first)
    version = match.group(2) if match else None
    for needle, distro in _RELEASE_NAMES:
        if needle in lower:
            return distro, version
    return None, version


def _scan_lines(text, where, linux):
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith('#'):
            continue
        shown = '%s:%d: %s' % (where, number, stripped[:MAX_LINE])
        if (_XVD.search(stripped) and
                len(linux.xvd_references) < MAX_REFERENCES):
            linux.xvd_references.append(shown)
        if (_XEN_CONSOLE.search(stripped) and
                len(linux.xen_console) < MAX_REFERENCES):
            linux.xen_console.append(shown)


def _scan_file(fs, path, linux, seen):
    text = _read_text(fs, path, linux)
    if text is None or text in seen:
        # /etc/grub.conf and menu.lst are usually links to grub.conf.
        return
    seen.add(text)
    _scan_lines(text, '%s:%s' % (fs.location, path), linux)


def _scan_boot(fs, prefix, linux, seen):
    """Boot loader configs and kernels in the /boot at prefix on fs."""
    for name in BOOT_CONFIGS:
        _scan_file(fs, prefix + '/' + name, linux, seen)
    entries = prefix + '/' + BLS_ENTRIES
    for name in sorted(fs.listdir(entries))[:MAX_KERNELS]:
        if name.endswith('.conf'):
            _scan_file(fs, entries + '/' + name, linux, seen)
    names = fs.listdir(prefix or '/')
    for name in sorted(names):
        match = _KERNEL.match(name)
        if not match or len(linux.kernels) >= MAX_KERNELS:
            continue
        version = match.group(1)
        kernel = facts.Kernel(name=name)
        if _PV_ONLY_NAME.search(version):
            kernel.pv_only, kernel.evidence = True, 'name'
        else:
            try:
                config = fs.read('%s/config-%s' % (prefix, version),
                                 MAX_TEXT_BYTES)
            except filesystem.FileTooLarge:
                config = None
            if config and _PV_ONLY_CONFIG.search(config):
                kernel.pv_only = True
                kernel.evidence = 'config-%s' % version
        linux.kernels.append(kernel)


def _scan_esp(fs, linux, seen):
    for vendor in fs.listdir('/EFI'):
        name = fs.find('/EFI/' + vendor, 'grub.cfg')
        if name:
            _scan_file(fs, '/EFI/%s/%s' % (vendor, name), linux, seen)


def _mac_lines(fs, path, pattern, linux):
    try:
        data = fs.read(path, MAX_TEXT_BYTES)
    except filesystem.FileTooLarge:
        return
    for number, line in enumerate((data or b'').splitlines(), 1):
        if line.lstrip().startswith(b'#') or not pattern.search(line):
            continue
        if len(linux.mac_bindings) < MAX_REFERENCES:
            linux.mac_bindings.append('%s:%s:%d' % (fs.location, path,
                                                    number))


def scan_mac_bindings(root, linux):
    """Record lines binding a NIC to its MAC address (see MAC_BINDING_*)."""
    for path, pattern in MAC_BINDING_FILES:
        _mac_lines(root, path, pattern, linux)
    for directory, names, pattern in MAC_BINDING_DIRECTORIES:
        for name in sorted(root.listdir(directory,
                                        limit=MAX_NETWORK_FILES)):
            if names.match(name):
                _mac_lines(root, '%s/%s' % (directory, name), pattern, linux)


def inspect(root, volumes):
    """(facts.LinuxFacts, distro, version) for the root filesystem."""
    linux = facts.LinuxFacts(location=root.location)
    distro = version = None
    for path in OS_RELEASE_FILES:
        text = _read_text(root, path, linux)
        if text is not None:
            linux.release_file = path
            linux.os_release = {
                k: v for k, v in parse_os_release(text).items()
                if k in ('ID', 'ID_LIKE', 'NAME', 'VERSION_ID',
                         'PRETTY_NAME')}
            distro, version = distro_from_os_release(linux.os_release)
            break
    if linux.release_file is None:
        for path in LEGACY_RELEASE_FILES:
            text = _read_text(root, path, linux)
            if text is not None:
                linux.release_file = path
                linux.release_text = text.strip()[:MAX_LINE]
                distro, version = distro_from_release_text(path, text)
                break
    scan_mac_bindings(root, linux)
    seen = set()
    for path in ROOT_DEVICE_FILES:
        _scan_file(root, path, linux, seen)
    _scan_boot(root, '/boot', linux, seen)
    boot_dirs = [(root, '/boot')]
    for fs in volumes:
        if fs is root:
            continue
        if fs.kind == 'fat':
            _scan_esp(fs, linux, seen)
        elif looks_like_boot(fs):
            linux.boot_location = fs.location
            _scan_boot(fs, '', linux, seen)
            boot_dirs.insert(0, (fs, ''))
    linux.boot_entry = bootentry.find(boot_dirs)
    kvmstorage.examine(root, boot_dirs, linux.boot_entry, linux)
    return linux, distro, version
