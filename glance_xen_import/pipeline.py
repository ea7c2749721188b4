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

"""The one place that strings the steps together.

    OVA or XVA stream -> package reader -> VHD decoder or XVA chunks
               -> sparse RAW (one per chosen disk)
               -> partition check -> guest inspection
               -> [Windows fixup -> inspection again] -> properties
               -> [Linux fixup for the chosen bus -> inspection again]

The Glance plugin and the CLI both call :func:`convert`.
"""

import contextlib
import os

from glance_xen_import import exception
from glance_xen_import.formats import ova
from glance_xen_import.formats import ovf
from glance_xen_import.formats import package as package_mod
from glance_xen_import.formats import partitions
from glance_xen_import.formats import raw
from glance_xen_import.formats import vhd
from glance_xen_import import inspect as guest_inspect
from glance_xen_import import options as options_mod
from glance_xen_import import policy
from glance_xen_import import progress_text
from glance_xen_import import report as report_mod
from glance_xen_import import sanitize
from glance_xen_import import selection

# Read size on the input; large enough that per-call overhead vanishes.
READ_SIZE = 4 << 20


def _no_step(name):
    pass


class _ProgressReader(object):
    """Count what is read from the input and tell ``progress`` about it."""

    def __init__(self, stream, total, progress):
        self._stream = stream
        self._total = total
        self._progress = progress
        self.done = 0

    def read(self, size):
        data = self._stream.read(size)
        self.done += len(data)
        if self._progress is not None and data:
            self._progress(self.done, self._total)
        return data


@contextlib.contextmanager
def _open_source(source):
    if isinstance(source, (str, bytes, os.PathLike)):
        try:
            stream = open(source, 'rb')
        except OSError as exc:
            raise exception.XenImportError(
                'cannot open %s: %s' % (source, exc.strerror))
        with stream:
            yield stream, os.fstat(stream.fileno()).st_size
    else:
        total = None
        try:
            info = os.fstat(source.fileno())
            if info.st_mode & 0o170000 == 0o100000:   # a regular file
                total = info.st_size - source.tell()
        except (AttributeError, OSError, ValueError):
            pass
        yield source, total


def check_free_space(directory, needed):
    """Refuse early when ``needed`` bytes will not fit in ``directory``."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise exception.InsufficientSpace(
            'the RAW image needs up to %d bytes but only %d are free in %s'
            % (needed, free, directory))


def _check_extra_disks(disks, opts):
    # An explicit choice drops nothing silently, so it is always allowed.
    if (len(disks) > 1 and not opts.disk
            and opts.extra_disks == options_mod.EXTRA_DISKS_REFUSE):
        raise exception.InvalidPackage(
            'package holds %d disks and only single-disk packages are '
            'accepted' % len(disks))


def _vm_disks(descriptor):
    """The package's disks in the VM's order, boot disk first."""
    if isinstance(descriptor, ovf.Descriptor):
        # The OVF reader put XenCenter's bootable disk first.
        return selection.vm_disks(
            descriptor.disks, key=lambda d: d.href, name=lambda d: d.disk_id,
            capacity=lambda d: d.capacity, bootable=lambda d: d.boot)
    # An xva.XvaDescriptor.
    disks = list(descriptor.disks)    # by userdevice
    if descriptor.is_pv:
        # pygrub boots from the VBD marked bootable; an HVM BIOS from
        # the first disk on the bus.
        disks.sort(key=lambda d: (not d.bootable, d.userdevice))
    return selection.vm_disks(
        disks, key=lambda d: d.ref, name=lambda d: d.name,
        capacity=lambda d: d.capacity, bootable=lambda d: d.bootable)


def _vhd_converter(targets, opts, directory):
    """Return the convert_disk callback the OVA reader calls."""

    def convert_disk(reader, size, disk):
        def on_metadata(info, upper_bound):
            # Checked before any data is written: a fixed VHD's length gives
            # its size too, and a refusal now costs no output.
            if disk.capacity is not None and disk.capacity != (
                    info.current_size):
                raise exception.InvalidPackage(
                    'OVF gives disk %s a capacity of %d bytes but its VHD '
                    'holds %d bytes' % (disk.href, disk.capacity,
                                        info.current_size))
            check_free_space(directory, upper_bound)

        info = vhd.decode(reader, targets.writer(disk.href),
                          member_size=size,
                          max_virtual_size=opts.max_virtual_size,
                          on_metadata=on_metadata, capacity=disk.capacity)
        if disk.capacity is not None and disk.capacity != info.current_size:
            raise exception.InvalidPackage(
                'OVF gives disk %s a capacity of %d bytes but its VHD holds '
                '%d bytes' % (disk.href, disk.capacity, info.current_size))
        return info

    return convert_disk


class _Targets(object):
    """The RAW files being written, one for each chosen disk.

    :param place: ``place(vm_disks)`` gives ``[(VmDisk, dest_path,
        partial_prefix)]`` once the package has said which disks it holds.
    """

    def __init__(self, place, opts):
        self._place = place
        self._opts = opts
        self.disks = None
        self.chosen = []          # (VmDisk, dest_path, SparseWriter)

    def select(self, vm_disks):
        """Choose and open the outputs; returns the chosen records."""
        _check_extra_disks(vm_disks, self._opts)
        self.disks = vm_disks
        for disk, dest_path, prefix in self._place(vm_disks):
            writer = raw.SparseWriter(
                dest_path, prefix=prefix or raw.partial_prefix(dest_path))
            self.chosen.append((disk, dest_path, writer))
        return [disk.record for disk, _dest, _writer in self.chosen]

    def writer(self, key):
        for disk, _dest, writer in self.chosen:
            if disk.key == key:
                return writer
        raise AssertionError('disk %s was not chosen' % key)

    def open_xva_disk(self, disk, directory, input_size):
        """xva.read_members' open_sink: the disk's writer, space checked.

        Chunks are raw disk data: the VDI's size bounds what is written,
        and so does the input's size when it is a file. From a stream of
        unknown length a full disk ends the import at its first failed
        write instead, with the same one-line reason.
        """
        if input_size is not None:
            check_free_space(directory, min(disk.capacity, input_size))
        return self.writer(disk.ref)

    def abort(self):
        for _disk, _dest, writer in self.chosen:
            writer.abort()


def _read(source, targets, opts, directory, progress):
    with _open_source(source) as (stream, total):
        ahead = None
        if opts.manifest_policy != options_mod.MANIFEST_IGNORE:
            # Before the main pass reads anything: it starts from the
            # file's current position.
            ahead = ova.read_manifest_ahead(stream)
        reader = _ProgressReader(stream, total, progress)
        return package_mod.read_package(
            reader, _vhd_converter(targets, opts, directory),
            select=lambda d: targets.select(_vm_disks(d)),
            open_sink=lambda d: targets.open_xva_disk(d, directory, total),
            manifest_policy=opts.manifest_policy,
            max_disk_size=opts.max_virtual_size, manifest_ahead=ahead)


def _convert(source, place, opts, progress, directory, on_step):
    """Convert the disks ``place`` chooses; [(dest_path, Report)]."""
    opts = opts or options_mod.Options()
    on_step = on_step or _no_step
    targets = _Targets(place, opts)
    try:
        package = _read(source, targets, opts, directory, progress)
        package_info = report_mod.PackageInfo.from_package(package)
        # Both readers return the descriptor's own disk records.
        results = {id(record): info
                   for record, info in package.result.converted}
        done = []
        for disk, dest_path, writer in targets.chosen:
            info = results[id(disk.record)]
            writer.finish(info.current_size)
            report = _analyse(writer.path, package_info, disk,
                              targets.disks, info, writer.data_bytes, opts,
                              on_step)
            report.properties = sanitize.properties(report.properties)
            done.append((dest_path, writer, report))
        for dest_path, writer, _report in done:
            raw.publish(writer.path, dest_path)
        return [(dest_path, report) for dest_path, _w, report in done]
    except BaseException:
        targets.abort()
        raise


def convert(source, dest_path, opts=None, progress=None,
            partial_prefix=None, on_step=None):
    """Convert one disk of the package ``source`` into a RAW at ``dest_path``.

    The disk is the one ``opts.disk`` names (selection.choose), by default
    the boot disk. The RAW is written, inspected and fixed under a
    temporary name in the same directory and given ``dest_path`` only once
    all of that succeeded, so no process death ever leaves a partial image
    under the final name.

    :param source: a path, or a binary file object read front to back once.
    :param dest_path: where the RAW goes; must not exist.
    :param opts: an options.Options.
    :param progress: optional ``progress(done_bytes, total_bytes_or_None)``.
    :param partial_prefix: the temporary name, less a random suffix; by
        default ``.DEST.partial-`` beside DEST (raw.partial_prefix).
    :param on_step: optional ``on_step(name)``, told when each step after
        the conversion starts (progress_text.STEP_*).
    :returns: a report.Report; its untrusted strings are sanitised in
        ``properties`` (sanitize.properties).
    :raises: exception.XenImportError with a one-line reason.
    """
    opts = opts or options_mod.Options()
    if os.path.lexists(dest_path):
        raise exception.XenImportError(
            'cannot create %s: it exists already' % dest_path)

    def place(disks):
        return [(selection.choose(disks, opts.disk), dest_path,
                 partial_prefix)]

    directory = os.path.dirname(os.path.abspath(dest_path))
    return _convert(source, place, opts, progress, directory,
                    on_step)[0][1]


def disk_file_name(disk):
    """The name convert_all gives a disk's RAW: ``disk-<position>.raw``."""
    return 'disk-%d.raw' % disk.position


def convert_all(source, dest_dir, opts=None, progress=None, on_step=None):
    """Convert every disk of the package in one pass.

    Each disk becomes ``dest_dir/disk-<position>.raw`` (disk_file_name),
    published only when every disk converted; returns
    ``[(dest_path, Report)]`` in the VM's disk order.
    """
    opts = opts or options_mod.Options()

    def place(disks):
        out = []
        for disk in disks:
            dest_path = os.path.join(dest_dir, disk_file_name(disk))
            if os.path.lexists(dest_path):
                raise exception.XenImportError(
                    'cannot create %s: it exists already' % dest_path)
            out.append((disk, dest_path, None))
        return out

    return _convert(source, place, opts, progress, dest_dir, on_step)


def _fix_windows(dest_path, layout, guest, package_info, opts, on_step):
    """Apply the Windows fixup when allowed; return (guest, result)."""
    if (opts.windows_fixup != options_mod.FIXUP_AUTO
            or getattr(guest, 'windows', None) is None):
        return guest, None
    # Imported for Windows guests only: it costs every other run time.
    from glance_xen_import import fixup
    if not fixup.needs_windows_fixup(guest):
        return guest, None
    on_step(progress_text.STEP_FIX_WINDOWS)
    result = fixup.apply_windows_fixup(dest_path, layout, guest)
    if result.applied:
        on_step(progress_text.STEP_REINSPECT)
        # Decide the properties from the registry as it is now.
        guest = guest_inspect.inspect_guest(dest_path, layout, package_info)
    return guest, result


def _fix_linux(dest_path, layout, guest, package_info, bus, opts,
               on_step):
    """Apply the Linux fixup when allowed; return (guest, result).

    bus is (hw_disk_bus, hw_scsi_model) as the policy chose them.
    """
    if (opts.linux_fixup != options_mod.FIXUP_AUTO
            or getattr(guest, 'linux', None) is None):
        return guest, None
    # Imported for Linux guests only, as the Windows fixup is.
    from glance_xen_import.fixup import linux as linux_fixup
    if not linux_fixup.needs_linux_fixup(guest):
        return guest, None
    on_step(progress_text.STEP_FIX_LINUX)
    result = linux_fixup.apply_linux_fixup(
        dest_path, layout, guest, bus[0],
        os.path.dirname(os.path.abspath(dest_path)), scsi_model=bus[1])
    if result.applied:
        on_step(progress_text.STEP_REINSPECT)
        guest = guest_inspect.inspect_guest(dest_path, layout, package_info)
    return guest, result


def _fixup_properties(properties, result):
    if result is None:
        return
    if result.applied:
        applied = [a for a in properties.get(
            'xen_import_fixups_applied', '').split(',') if a]
        properties['xen_import_fixups_applied'] = ','.join(
            applied + list(result.applied))
    if result.skipped:
        reasons = [r for r in properties.get(
            'xen_import_fixup_reasons', '').split(',') if r]
        if result.skipped not in reasons:
            reasons.append(result.skipped)
        properties['xen_import_fixup_reasons'] = ','.join(reasons)
        properties['xen_import_fixup_required'] = 'true'


def _vm_properties(package_info):
    """The VM's sizing as its package gives it, to help choose a flavor."""
    vm = package_info.vm or {}
    properties = {}
    if vm.get('vcpus'):
        properties['xen_import_vm_vcpus'] = str(vm['vcpus'])
    if vm.get('memory_bytes'):
        properties['xen_import_vm_memory_mb'] = str(
            vm['memory_bytes'] >> 20)
    if vm.get('platform'):
        properties['xen_import_vm_platform'] = sanitize.joined(
            '%s=%s' % (sanitize.list_item(k), sanitize.list_item(v))
            for k, v in vm['platform'].items())
    return properties


def _read_layout(dest_path, size, disk):
    with open(dest_path, 'rb') as image:
        try:
            return partitions.read_layout(image, size)
        except exception.InvalidPartitionTable as exc:
            # A data disk may hold a whole-disk LVM volume, a database's
            # raw storage or nothing yet; a damaged table is still refused.
            if (disk.role == 'data'
                    and str(exc) == partitions.NO_CONTENT_REASON):
                return partitions.unrecognised_layout()
            raise


def _analyse(dest_path, package_info, disk, vm_disks, info, allocated,
             opts, on_step):
    on_step(progress_text.STEP_INSPECT)
    layout = _read_layout(dest_path, info.current_size, disk)
    guest = guest_inspect.inspect_guest(dest_path, layout, package_info)
    guest, fixed = _fix_windows(dest_path, layout, guest, package_info, opts,
                                on_step)
    properties = policy.decide(guest, layout, package_info, info.source_tag,
                               opts)
    guest, linux_fixed = _fix_linux(dest_path, layout, guest, package_info,
                                    (properties['hw_disk_bus'],
                                     properties.get('hw_scsi_model')),
                                    opts, on_step)
    if linux_fixed is not None:
        properties = policy.decide(guest, layout, package_info,
                                   info.source_tag, opts)
    _fixup_properties(properties, fixed)
    _fixup_properties(properties, linux_fixed)
    if linux_fixed is not None and linux_fixed.not_edited:
        found = [f for f in properties.get('xen_import_findings',
                                           '').split(',') if f]
        properties['xen_import_findings'] = ','.join(
            found + ['linux-config-not-editable'])
    properties.update(_vm_properties(package_info))
    others = [d for d in vm_disks if d.position != disk.position]
    if others:
        # href:capacity items; hrefs percent-encoded (sanitize.list_item).
        properties['xen_import_skipped_disks'] = sanitize.joined(
            '%s:%s' % (sanitize.list_item(d.key),
                       d.capacity if d.capacity is not None else '?')
            for d in others)
        properties['xen_import_vm_disks'] = selection.property_value(
            vm_disks)
        properties['xen_import_disk_position'] = str(disk.position)
    return report_mod.Report(
        virtual_size=info.current_size, allocated_bytes=allocated,
        source=info.source_tag, package=package_info, disk=disk.record,
        other_disks=[d.record for d in others], vhd=info, layout=layout,
        guest=guest, fixup=fixed, linux_fixup=linux_fixed,
        properties=properties, vm_disks=list(vm_disks),
        disk_position=disk.position)
