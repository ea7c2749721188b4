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

"""Which KVM disk buses a Linux guest's default boot entry can boot from.

The root file system is found by the kernel through the drivers that are
built into it or in its initramfs. A hostonly initramfs made on Xen
(dracut, initramfs-tools MODULES=dep/list) may hold xen-blkfront and no
KVM storage driver at all. A bus counts when its drivers and what they
depend on (the root's modules.dep for that kernel: virtio_pci needs
virtio_pci_modern_dev from 5.12 on, for one) are all there.
"""

import posixpath
import re

from glance_xen_import.inspect import bootentry
from glance_xen_import.inspect import facts
from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import initramfs

MAX_INITRAMFS_FILE = 1024 * 1024 * 1024
MAX_MODULES_FILE = 8 * 1024 * 1024
MAX_INITRDS = 8
MAX_DEPENDENCIES = 64
MODULE_DIRS = ('/lib/modules', '/usr/lib/modules')

# Best first; each bus lists alternative driver sets (any one will do).
BUSES = (
    ('virtio-scsi', (('virtio_scsi', 'virtio_pci', 'sd_mod'),)),
    ('virtio-blk', (('virtio_blk', 'virtio_pci'),)),
    # i440fx's PIIX IDE: libata's driver, or the old IDE stack of 2.6.
    ('ide', (('ata_piix', 'sd_mod'), ('piix', 'ide_disk'),
             ('piix', 'ide_gd_mod'))),
    ('sata', (('ahci', 'sd_mod'),)),
)
_RESCUE = re.compile(r'^initramfs-0-rescue-.+\.img$')


def parse_modules_dep(text):
    """{module: [modules it needs]} from a modules.dep."""
    deps = {}
    for line in text.splitlines():
        module, sep, needs = line.partition(':')
        if sep:
            deps[initramfs.module_name(module.strip())] = [
                initramfs.module_name(n) for n in needs.split()]
    return deps


def _closure(names, deps):
    needed = list(names)
    for name in needed:
        for dep in deps.get(name, ()):
            if dep not in needed and len(needed) < MAX_DEPENDENCIES:
                needed.append(dep)
    return needed


def evaluate(present, deps):
    """(buses bootable, {bus: drivers missing}) given the drivers present."""
    buses, missing = [], {}
    for bus, alternatives in BUSES:
        lacks = [[n for n in _closure(drivers, deps) if n not in present]
                 for drivers in alternatives]
        best = min(lacks, key=len)
        if best:
            missing[bus] = best
        else:
            buses.append(bus)
    return buses, missing


def _read_text(fs, path):
    try:
        data = fs.read(path, MAX_MODULES_FILE)
    except filesystem.FileTooLarge:
        return None
    return None if data is None else data.decode('utf-8', 'replace')


def kernel_modules_file(root, version, name):
    """The text of /lib/modules/<version>/<name> on the root, or None."""
    if not version or '/' in version or version in ('.', '..'):
        return None
    for directory in MODULE_DIRS:
        text = _read_text(root, '%s/%s/%s' % (directory, version, name))
        if text is not None:
            return text
    return None


def read_initramfs(fs, path):
    """initramfs.Contents of the file at path on fs (incomplete if not)."""
    try:
        fileobj = fs.open(path, MAX_INITRAMFS_FILE)
    except filesystem.FileTooLarge as exc:
        return initramfs.Contents(reason=str(exc))
    if fileobj is None:
        return initramfs.Contents(reason='cannot open the file')
    return initramfs.read(fileobj)


def _summary(where, contents):
    return facts.Initramfs(
        path=where, generator=contents.generator,
        compressions=list(contents.compressions),
        modules=len(contents.modules),
        kernel_versions=sorted(contents.kernel_versions),
        complete=contents.complete, reason=contents.reason)


def _read_all(boot_dirs, paths):
    """(summary, Contents) over the initrd files an entry loads."""
    merged = initramfs.Contents(complete=True)
    names = []
    for path in paths[:MAX_INITRDS]:
        found = bootentry.locate(boot_dirs, path)
        if found is None:
            names.append(path)
            merged.complete = False
            merged.reason = merged.reason or '%s: no such file' % path
            continue
        fs, real = found
        names.append('%s:%s' % (fs.location, real))
        contents = read_initramfs(fs, real)
        merged.modules |= contents.modules
        merged.builtin |= contents.builtin
        merged.kernel_versions |= contents.kernel_versions
        merged.generator = merged.generator or contents.generator
        merged.compressions += contents.compressions
        if not contents.complete:
            merged.complete = False
            merged.reason = merged.reason or '%s: %s' % (real,
                                                         contents.reason)
    return _summary(','.join(names), merged), merged


def _rescue(boot_dirs, initrd, builtin, deps):
    """Summary of a dracut rescue image beside initrd that has drivers."""
    found = bootentry.locate(boot_dirs, initrd)
    if found is None:
        return None
    fs, real = found
    directory = posixpath.dirname(real)
    for name in sorted(fs.listdir(directory)):
        if not _RESCUE.match(name):
            continue
        path = posixpath.join(directory, name)
        contents = read_initramfs(fs, path)
        if not contents.complete:
            continue
        summary = _summary('%s:%s' % (fs.location, path), contents)
        summary.buses, summary.missing = evaluate(
            contents.modules | contents.builtin | builtin, deps)
        if summary.buses:
            return summary
    return None


def examine(root, boot_dirs, entry, linux):
    """Fill linux's initramfs, kvm_buses and missing_drivers for entry."""
    if entry is None or not entry.kernel:
        return
    if entry.initrds:
        summary, contents = _read_all(boot_dirs, entry.initrds)
        linux.initramfs = summary
        if not contents.complete:
            return
    else:
        contents = initramfs.Contents(complete=True)
    version = entry.version
    if not version and len(contents.kernel_versions) == 1:
        version = next(iter(contents.kernel_versions))
    builtin_text = kernel_modules_file(root, version, 'modules.builtin')
    if builtin_text is None and not entry.initrds:
        # No initramfs and nothing says what the kernel has built in.
        return
    builtin = initramfs.parse_builtin(builtin_text or '') | contents.builtin
    deps = parse_modules_dep(
        kernel_modules_file(root, version, 'modules.dep') or '')
    buses, missing = evaluate(contents.modules | builtin, deps)
    linux.kvm_buses = buses
    if linux.initramfs is not None:
        linux.initramfs.buses, linux.initramfs.missing = buses, missing
    if buses:
        return
    linux.missing_drivers = missing[BUSES[0][0]]
    if entry.initrds:
        linux.rescue_initramfs = _rescue(boot_dirs, entry.initrds[0],
                                         builtin, deps)
