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

"""Offline repair of an initramfs that holds no KVM storage driver.

A host-only initramfs built on Xen (dracut's default, initramfs-tools'
MODULES=dep or list) may hold xen-blkfront and nothing a KVM disk bus
needs. The repair, with no guest code run:

1. takes the bus's drivers and everything they depend on (the root's
   modules.dep) from the guest's own /lib/modules/<version>, as they are
   (compressed .ko.xz/.ko.zst included);
2. regenerates the module indexes (modules.dep, modules.alias and their
   .bin) for the initramfs's modules plus the new ones with the host's
   ``depmod -b`` on a private scratch tree;
3. makes them load at boot: udev loads them by modalias from the new
   indexes, and they are also named in conf/modules (initramfs-tools) or
   rd.driver.pre in etc/cmdline.d (dracut);
4. writes the image back at its exact size, in its own blocks: any
   early-microcode archive in front kept byte for byte, the main archive
   rewritten with the added files in it (the indexes and loader
   configuration it had are replaced, every other entry is copied byte
   for byte) and recompressed with the strongest compressor the kernel
   unpacks (CONFIG_RD_* in /boot/config-<version>), then zeros, which
   the kernel skips.

Where any step cannot be done safely (no room, kernel config unknown, a
path in the initramfs that is a link, a module outside the module tree),
nothing is written and GuestError gives the reason.
"""

import bz2
import io
import lzma
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import zlib

from glance_xen_import import exception
from glance_xen_import.formats import cpio
from glance_xen_import.inspect import filesystem
from glance_xen_import.inspect import initramfs
from glance_xen_import.inspect import kvmstorage

# What an initramfs may be to be repaired (it is held in memory twice).
MAX_INITRD_BYTES = 512 * 1024 * 1024
MAX_MODULE_BYTES = 32 * 1024 * 1024
MAX_ADDED_MODULES = 128
MAX_SMALL_FILE = 1024 * 1024
MAX_PATH_DEPTH = 16
DEPMOD_TIMEOUT = 600
EDIT = 'initramfs-drivers'

# (hw_disk_bus, hw_scsi_model) -> kvmstorage.BUSES name.
BUS_NAMES = {('scsi', 'virtio-scsi'): 'virtio-scsi',
             ('virtio', None): 'virtio-blk',
             ('ide', None): 'ide', ('sata', None): 'sata'}
# What depmod writes; each one the initramfs gets afresh.
DEPMOD_FILES = ('modules.dep', 'modules.dep.bin', 'modules.alias',
                'modules.alias.bin', 'modules.softdep', 'modules.symbols',
                'modules.symbols.bin', 'modules.builtin.bin',
                'modules.builtin.alias.bin', 'modules.devname',
                'modules.weakdep')
# depmod's inputs besides the modules, taken from the root if absent.
DEPMOD_INPUTS = ('modules.order', 'modules.builtin',
                 'modules.builtin.modinfo')
MODULE_SUFFIXES = ('.ko', '.ko.xz', '.ko.zst')
DRACUT_CMDLINE = 'etc/cmdline.d/90-glance-xen-import.conf'
TOOLS_MODULES = 'conf/modules'

_SAFE_COMPONENT = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.+,=-]{0,254}$')
# What an early-microcode archive holds ('' is its '.' entry).
_EARLY = re.compile(r'^(?:|early_cpio|kernel(?:/x86(?:/microcode'
                    r'(?:/[^/]+)?)?)?)$')
_CONFIG_RD = re.compile(r'^(CONFIG_RD_[A-Z0-9]+)=y\s*$', re.M)
_CHUNK = 1024 * 1024
_XZ_DICT = 8 * 1024 * 1024   # what initramfs-tools' xz (-6) uses


def bus_name(disk_bus, scsi_model):
    """The kvmstorage bus for a hw_disk_bus (+ model), or None."""
    return BUS_NAMES.get((disk_bus, scsi_model if disk_bus == 'scsi'
                          else None))


def needs_repair(guest):
    """True when the default entry's initramfs boots on no KVM bus."""
    linux = getattr(guest, 'linux', None)
    return bool(linux is not None and linux.kvm_buses == []
                and linux.initramfs is not None
                and linux.initramfs.complete)


def safe_relative(path):
    """path split into components if every one is a plain name, else None."""
    parts = path.split('/')
    if not 0 < len(parts) <= MAX_PATH_DEPTH:
        return None
    if not all(_SAFE_COMPONENT.match(p) for p in parts):
        return None
    return parts


# --------------------------------------------------------------------------
# Compressors the kernel can unpack, best first

def _xz():
    return lzma.LZMACompressor(
        format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
        filters=[{'id': lzma.FILTER_LZMA2, 'dict_size': _XZ_DICT,
                  'preset': 9 | lzma.PRESET_EXTREME}])


def _zstd():
    import zstandard
    return zstandard.ZstdCompressor(level=19).compressobj()


COMPRESSORS = (
    ('xz', 'CONFIG_RD_XZ', _xz),
    ('zstd', 'CONFIG_RD_ZSTD', _zstd),
    ('bzip2', 'CONFIG_RD_BZIP2', lambda: bz2.BZ2Compressor(9)),
    ('gzip', 'CONFIG_RD_GZIP', lambda: zlib.compressobj(9, wbits=31)),
)


class _TooBig(Exception):
    pass


def _compress(make, parts, limit):
    """parts (file objects) compressed as one stream, at most limit bytes."""
    obj = make()
    out = bytearray()
    for part in parts:
        part.seek(0)
        while True:
            data = part.read(_CHUNK)
            if not data:
                break
            out += obj.compress(data)
            if len(out) > limit:
                raise _TooBig()
    out += obj.flush()
    if len(out) > limit:
        raise _TooBig()
    return bytes(out)


def kernel_decompressors(config_text):
    """The CONFIG_RD_* options a kernel config sets to y."""
    return set(_CONFIG_RD.findall(config_text))


# --------------------------------------------------------------------------
# Reading the image: what it holds, where the modules are

class _Sink(object):
    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                           os.O_NOFOLLOW, 0o644)

    def write(self, data):
        os.write(self._fd, data)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Memory(io.BytesIO):
    def __init__(self, limit, name):
        super().__init__()
        self._limit = limit
        self._name = name

    def write(self, data):
        if self.tell() + len(data) > self._limit:
            raise initramfs.Stop('%s is bigger than %d bytes'
                                 % (self._name, self._limit))
        return super().write(data)


class _Collector(object):
    """Names and types of every entry; module trees written to scratch.

    Files below (usr/)lib/modules/<version>/ are written under a private
    directory, each path component checked against a plain-name pattern
    and opened with O_EXCL|O_NOFOLLOW, so no name can lead elsewhere.
    """

    def __init__(self, version, scratch):
        self.version = version
        self.scratch = scratch
        self.kinds = {}        # name -> 'dir', 'link', 'file' or 'other'
        self.segment_early = {}   # segment index -> only microcode in it
        self.small = {}        # name -> _Memory
        self._open = None
        self.trees = {}        # archive module dir -> scratch dir

    def __call__(self, segment, name, mode, size):
        self._close()
        kind = {0o040000: 'dir', 0o120000: 'link',
                0o100000: 'file'}.get(mode & 0o170000, 'other')
        self.kinds[name] = kind
        early = self.segment_early.get(segment, True)
        self.segment_early[segment] = early and bool(_EARLY.match(name))
        if kind != 'file':
            return None
        if name == TOOLS_MODULES:
            self.small[name] = _Memory(MAX_SMALL_FILE, name)
            return self.small[name]
        for prefix in ('lib/modules/', 'usr/lib/modules/'):
            base = prefix + self.version
            if name.startswith(base + '/'):
                return self._module_file(base, name[len(base) + 1:])
        return None

    def _module_file(self, base, relative):
        parts = safe_relative(relative)
        if parts is None:
            raise initramfs.Stop('module tree entry %r is not a plain name'
                                 % relative)
        top = self.trees.get(base)
        if top is None:
            top = tempfile.mkdtemp(prefix='tree-', dir=self.scratch)
            self.trees[base] = top
        directory = top
        for part in parts[:-1]:
            directory = os.path.join(directory, part)
            if not os.path.isdir(directory):
                os.mkdir(directory)
        path = os.path.join(directory, parts[-1])
        if os.path.lexists(path):
            os.unlink(path)    # a later entry replaces an earlier one
        self._open = _Sink(path)
        return self._open

    def _close(self):
        if self._open is not None:
            self._open.close()
            self._open = None

    def finish(self):
        self._close()


def _module_dir(kinds, version):
    """The initramfs's real module directory for version, or None."""
    for base in ('usr/lib/modules/' + version, 'lib/modules/' + version):
        parts = base.split('/')
        if all(kinds.get('/'.join(parts[:i + 1])) == 'dir'
               for i in range(len(parts))):
            return base
    return None


# --------------------------------------------------------------------------
# The guest's root: modules.dep, module files, kernel config

def _parse_dep_paths(text):
    """({module: path in the tree}, {module: [modules it needs]})."""
    paths, deps = {}, {}
    for line in text.splitlines():
        path, sep, needs = line.partition(':')
        if not sep:
            continue
        name = initramfs.module_name(path.strip())
        paths[name] = path.strip()
        deps[name] = [initramfs.module_name(n) for n in needs.split()]
    return paths, deps


def _closure(names, deps):
    needed = list(names)
    for name in needed:
        for dep in deps.get(name, ()):
            if dep not in needed:
                needed.append(dep)
                if len(needed) > MAX_ADDED_MODULES:
                    raise exception.GuestError(
                        'more than %d modules needed' % MAX_ADDED_MODULES)
    return needed


def _root_module_base(root, version):
    for directory in kvmstorage.MODULE_DIRS:
        path = '%s/%s' % (directory, version)
        if root.is_dir(path):
            return root.realpath(path)
    raise exception.GuestError('the root has no module directory for %s'
                               % version)


def _read_module(root, base, relative):
    """A module's bytes from the root, refused if it leads out of base."""
    if safe_relative(relative) is None or not relative.endswith(
            MODULE_SUFFIXES):
        raise exception.GuestError('modules.dep names %r, not a module path'
                                   % relative)
    real = root.realpath('%s/%s' % (base, relative))
    if real is None:
        raise exception.GuestError('%s/%s is missing on the root'
                                   % (base, relative))
    if not real.startswith(base + '/'):
        raise exception.GuestError('%s/%s leads out of %s (to %s)'
                                   % (base, relative, base, real))
    try:
        data = root.read(real, MAX_MODULE_BYTES)
    except filesystem.FileTooLarge as exc:
        raise exception.GuestError(str(exc))
    if data is None:
        raise exception.GuestError('%s is not a readable file' % real)
    return data


def _kernel_config(boot_fs, initrd_path, root, version):
    candidates = [(boot_fs, posixpath.join(posixpath.dirname(initrd_path),
                                           'config-' + version)),
                  (root, '/boot/config-' + version)]
    for fs, path in candidates:
        try:
            data = fs.read(path, 4 * MAX_SMALL_FILE)
        except filesystem.FileTooLarge:
            data = None
        if data is not None:
            return data.decode('utf-8', 'replace')
    raise exception.GuestError(
        'no config-%s beside the initramfs: which compressors the kernel '
        'unpacks is unknown' % version)


# --------------------------------------------------------------------------
# depmod on the scratch tree

def _depmod(tree_root, version):
    depmod = shutil.which('depmod') or next(
        (p for p in ('/usr/sbin/depmod', '/sbin/depmod')
         if os.path.exists(p)), None)
    if depmod is None:
        raise exception.GuestError('depmod (kmod) is not installed')
    # kmod 32 and later may look in usr/lib/modules.
    os.makedirs(os.path.join(tree_root, 'usr', 'lib'))
    os.symlink('../../lib/modules',
               os.path.join(tree_root, 'usr', 'lib', 'modules'))
    try:
        done = subprocess.run(
            [depmod, '-b', tree_root, version], stdin=subprocess.DEVNULL,
            capture_output=True, timeout=DEPMOD_TIMEOUT,
            env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL': 'C'})
    except subprocess.TimeoutExpired:
        raise exception.GuestError('depmod took too long')
    if done.returncode:
        raise exception.GuestError('depmod failed: %s' % (
            done.stderr.decode('utf-8', 'replace').strip().splitlines()
            or ['exit %d' % done.returncode])[-1])


# --------------------------------------------------------------------------
# The repair

class Repair(object):
    """A planned repair: the new bytes of one initramfs and what they add."""

    def __init__(self, location, path, new, report):
        self.location = location
        self.path = path
        self.new = new
        self.report = report


def plan(data, initrd_path, location, root, boot_fs, guest, disk_bus,
         scsi_model, scratch_dir):
    """A Repair for the initramfs bytes ``data``, or GuestError(reason).

    root and boot_fs are the guest's file systems (filesystem.Filesystem)
    holding / and the initramfs; nothing is written here.
    """
    linux = guest.linux
    entry = linux.boot_entry
    bus = bus_name(disk_bus, scsi_model)
    if bus is None:
        raise exception.GuestError('no Linux driver set is known for bus %s'
                                   % '/'.join(filter(None, (disk_bus,
                                                            scsi_model))))
    version = entry.version if entry is not None else None
    if not version and len(linux.initramfs.kernel_versions) == 1:
        version = linux.initramfs.kernel_versions[0]
    if not version or safe_relative(version) is None:
        raise exception.GuestError('the kernel version is unknown')
    config = kernel_decompressors(
        _kernel_config(boot_fs, initrd_path, root, version))
    dep_text = kvmstorage.kernel_modules_file(root, version, 'modules.dep')
    if dep_text is None:
        raise exception.GuestError('the root has no modules.dep for %s'
                                   % version)
    paths, deps = _parse_dep_paths(dep_text)
    builtin = initramfs.parse_builtin(kvmstorage.kernel_modules_file(
        root, version, 'modules.builtin') or '')
    scratch = tempfile.mkdtemp(prefix='initrd-', dir=scratch_dir)
    try:
        return _plan(data, initrd_path, location, root, linux, bus, version,
                     config, paths, deps, builtin, scratch)
    except (OSError, initramfs.Stop) as exc:
        raise exception.GuestError('initramfs not repaired: %s' % exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _plan(data, initrd_path, location, root, linux, bus, version, config,
          paths, deps, builtin, scratch):
    collector = _Collector(version, scratch)
    try:
        contents = initramfs.read(io.BytesIO(data), visit=collector)
    finally:
        collector.finish()
    if not contents.complete:
        raise exception.GuestError('the initramfs does not read: %s'
                                   % contents.reason)
    generator = contents.generator
    if generator not in ('dracut', 'initramfs-tools'):
        raise exception.GuestError('not made by dracut or initramfs-tools: '
                                   'nothing would load the drivers')
    base = _module_dir(collector.kinds, version)
    if base is None or base not in collector.trees:
        raise exception.GuestError('the initramfs has no module directory '
                                   'for %s' % version)
    builtin |= contents.builtin
    present = contents.modules | builtin
    drivers, added = _choose(bus, present, deps, paths, version)
    tree = collector.trees[base]
    root_base = _root_module_base(root, version)
    new_files = []
    for name in added:
        relative = paths[name]
        module = _read_module(root, root_base, relative)
        target = os.path.join(tree, *relative.split('/'))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'wb') as f:
            f.write(module)
        new_files.append((relative, module))
    for name in DEPMOD_INPUTS:
        if not os.path.exists(os.path.join(tree, name)):
            text = kvmstorage.kernel_modules_file(root, version, name)
            if text is not None:
                with open(os.path.join(tree, name), 'w') as f:
                    f.write(text)
    indexes = _indexes(tree, version, [paths[n] for n in added])
    entries = _entries(collector, base, new_files, indexes, generator,
                       drivers, builtin)
    new, compression, readable = _compose(data, contents, collector,
                                          entries, config, scratch)
    _verify(new, contents, added, builtin, deps, bus)
    report = {
        'path': '%s:%s' % (location, initrd_path), 'generator': generator,
        'bus': bus, 'added_modules': added,
        'loaded_at_boot': drivers,
        'files': [name for name, _, body in entries if body is not None],
        'compression': '%s -> %s' % (
            '+'.join(c for c, _, _ in contents.segments), compression),
        'kept_prefix_bytes': _prefix_end(contents, collector),
        'original_kept': False,
        # False when only the kernel, not unmkinitramfs, reads the result.
        'tool_readable': readable,
    }
    return Repair(location, initrd_path, new, report)


def _choose(bus, present, deps, paths, version):
    """(drivers to load, modules to add) for the cheapest driver set."""
    best = None
    for drivers in dict(kvmstorage.BUSES)[bus]:
        unknown = [d for d in drivers if d not in present and d not in paths]
        if unknown:
            continue
        needed = _closure([d for d in drivers if d not in present], deps)
        added = [n for n in needed if n not in present]
        if best is None or len(added) < len(best[1]):
            best = ([d for d in drivers], added)
    if best is None:
        raise exception.GuestError('the root has no %s driver modules for %s'
                                   % (bus, version))
    missing = [n for n in best[1] if n not in paths]
    if missing:
        raise exception.GuestError('modules.dep for %s lists no %s'
                                   % (version, ', '.join(missing)))
    return best


def _indexes(tree, version, added_paths):
    """{file name: bytes} of the indexes depmod made for tree."""
    tree_root = os.path.dirname(tree)
    staged = os.path.join(tree_root, 'root', 'lib', 'modules')
    os.makedirs(staged)
    os.rename(tree, os.path.join(staged, version))
    tree = os.path.join(staged, version)
    _depmod(os.path.join(tree_root, 'root'), version)
    indexes = {}
    for name in DEPMOD_FILES:
        path = os.path.join(tree, name)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, 'rb') as f:
                indexes[name] = f.read(MAX_SMALL_FILE * 64)
    listed = {line.split(':', 1)[0] for line in indexes.get(
        'modules.dep', b'').decode('utf-8', 'replace').splitlines()}
    for path in added_paths:
        if path not in listed:
            raise exception.GuestError('depmod did not index %s' % path)
    if 'modules.dep.bin' not in indexes or 'modules.alias.bin' not in indexes:
        raise exception.GuestError('depmod wrote no binary indexes')
    return indexes


def _entries(collector, base, new_files, indexes, generator, drivers,
             builtin):
    """[(name, mode, data)] of the archive appended to the initramfs."""
    kinds = collector.kinds
    entries = []
    made = set()

    def place(path, body):
        parts = path.split('/')
        for i in range(1, len(parts)):
            parent = '/'.join(parts[:i])
            kind = kinds.get(parent)
            if kind is None and parent not in made:
                entries.append((parent, cpio.MODE_DIR, None))
                made.add(parent)
            elif kind not in (None, 'dir'):
                raise exception.GuestError('%s is a %s in the initramfs, '
                                           'not a directory' % (parent, kind))
        if kinds.get(path) not in (None, 'file'):
            raise exception.GuestError('%s is a %s in the initramfs, not a '
                                       'file' % (path, kinds[path]))
        entries.append((path, cpio.MODE_FILE, body))

    for relative, body in new_files:
        place('%s/%s' % (base, relative), body)
    for name in DEPMOD_FILES:
        if name in indexes:
            place('%s/%s' % (base, name), indexes[name])
    load = [d for d in drivers if d not in builtin]
    if generator == 'initramfs-tools':
        old = collector.small.get(TOOLS_MODULES)
        text = old.getvalue().decode('utf-8', 'replace') if old else ''
        if text and not text.endswith('\n'):
            text += '\n'
        place(TOOLS_MODULES, (text + ''.join(d + '\n' for d in load))
              .encode())
    else:
        place(DRACUT_CMDLINE, ('rd.driver.pre=%s\n' % ','.join(load))
              .encode())
    return entries


def _prefix_end(contents, collector):
    """Bytes before the first segment that is not early microcode."""
    for index, (codec, start, _) in enumerate(contents.segments):
        if codec != 'none' or not collector.segment_early.get(index, False):
            return start
    return len(contents.segments) and contents.segments[-1][2]


def _tool_readable(name, slack):
    """Whether xz/gzip/bzip2's own tools accept slack zeros after a stream.

    The kernel skips any zeros; xz only takes padding in 4-byte units,
    gzip and bzip2 ignore it, zstd refuses it.
    """
    if name == 'xz':
        return slack % 4 == 0
    return name in ('gzip', 'bzip2')


def _candidates(config, room):
    """(name, compressor, tool-readable wanted) in the order to try.

    First the results initramfs-tools' unmkinitramfs can list as well,
    then, if none fits, what only the kernel reads.
    """
    usable = [(name, make) for name, option, make in COMPRESSORS
              if option in config]
    for name, make in usable:
        if name != 'zstd':
            yield name, make, True
    for name, make in usable:
        if name in ('xz', 'zstd'):
            yield name, make, False


def _compose(data, contents, collector, entries, config, scratch):
    """(new bytes at len(data) exactly, compressor, tool-readable)."""
    prefix = _prefix_end(contents, collector)
    body_segments = [s for s in contents.segments if s[1] >= prefix]
    if not body_segments:
        raise exception.GuestError('the initramfs holds only early '
                                   'microcode')
    drop = {name for name, _, body in entries if body is not None}
    with tempfile.TemporaryFile(dir=scratch) as body, \
            tempfile.TemporaryFile(dir=scratch) as rewritten:
        # unpack() pads each segment to 4 bytes, keeping every archive
        # aligned as the kernel requires.
        initramfs.unpack(io.BytesIO(data), body_segments, body)
        body.seek(0)
        try:
            cpio.filter_archives(body, rewritten, drop,
                                 cpio.newc_entries(entries))
        except cpio.Damaged as exc:
            raise exception.GuestError('the main archive: %s' % exc)
        room = len(data) - prefix
        tried = []
        packed_by = {}      # each compressor runs once: None when too big
        for name, make, readable in _candidates(config, room):
            if name not in tried:
                tried.append(name)
            if readable and name == 'xz' and room % 4:
                # An xz stream is whole 4-byte units: the slack's length
                # is room % 4 whatever it compresses to.
                continue
            if name not in packed_by:
                try:
                    packed_by[name] = _compress(make, [rewritten], room)
                except _TooBig:
                    packed_by[name] = None
            packed = packed_by[name]
            if packed is None:
                continue
            if readable and not _tool_readable(name, room - len(packed)):
                continue
            new = data[:prefix] + packed + b'\0' * (room - len(packed))
            return new, name, readable
    if not tried:
        raise exception.GuestError('the kernel config enables none of '
                                   'xz, zstd, bzip2, gzip for initramfs')
    raise exception.GuestError(
        'the repaired initramfs does not fit in its %d bytes (tried %s)'
        % (len(data), ', '.join(tried)))


def _verify(new, contents, added, builtin, deps, bus):
    """The new image must read whole, hold the added modules, boot bus."""
    again = initramfs.read(io.BytesIO(new))
    if not again.complete:
        raise exception.GuestError('the repaired initramfs does not read: '
                                   '%s' % again.reason)
    lacking = [n for n in added if n not in again.modules]
    if lacking:
        raise exception.GuestError('the repaired initramfs lacks %s'
                                   % ', '.join(lacking))
    buses, _ = kvmstorage.evaluate(again.modules | builtin, deps)
    if bus not in buses:
        raise exception.GuestError('the repaired initramfs still cannot '
                                   'boot from %s' % bus)
