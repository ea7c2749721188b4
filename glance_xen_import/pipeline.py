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

    OVA stream -> package reader -> VHD decoder -> sparse RAW
               -> partition check -> guest inspection
               -> [Windows fixup -> inspection again] -> properties
               -> [Linux fixup for the chosen bus -> inspection again]

The Glance plugin and the CLI both call :func:`convert`.
"""

import contextlib
import os

from glance_xen_import import exception
from glance_xen_import.formats import ova
from glance_xen_import.formats import partitions
from glance_xen_import.formats import raw
from glance_xen_import.formats import vhd
from glance_xen_import import inspect as guest_inspect
from glance_xen_import import options as options_mod
from glance_xen_import import policy
from glance_xen_import import report as report_mod
from glance_xen_import import sanitize

# Read size on the input; large enough that per-call overhead vanishes.
READ_SIZE = 4 << 20


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


def _check_extra_disks(descriptor, opts):
    if (len(descriptor.disks) > 1
            and opts.extra_disks == options_mod.EXTRA_DISKS_REFUSE):
        raise exception.InvalidPackage(
            'package holds %d disks and only single-disk packages are '
            'accepted' % len(descriptor.disks))


def _converter(writer, opts, directory):
    """Return the convert_disk callback the package reader calls."""

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

        info = vhd.decode(reader, writer, member_size=size,
                          max_virtual_size=opts.max_virtual_size,
                          on_metadata=on_metadata, capacity=disk.capacity)
        if disk.capacity is not None and disk.capacity != info.current_size:
            raise exception.InvalidPackage(
                'OVF gives disk %s a capacity of %d bytes but its VHD holds '
                '%d bytes' % (disk.href, disk.capacity, info.current_size))
        return info

    return convert_disk


def convert(source, dest_path, opts=None, progress=None,
            partial_prefix=None):
    """Convert the OVA ``source`` into a RAW image at ``dest_path``.

    The RAW is written, inspected and fixed under a temporary name in the
    same directory and given ``dest_path`` only once all of that
    succeeded, so no process death ever leaves a partial image under the
    final name.

    :param source: a path, or a binary file object read front to back once.
    :param dest_path: where the RAW goes; must not exist.
    :param opts: an options.Options.
    :param progress: optional ``progress(done_bytes, total_bytes_or_None)``.
    :param partial_prefix: the temporary name, less a random suffix; by
        default ``.DEST.partial-`` beside DEST (raw.partial_prefix).
    :returns: a report.Report; its untrusted strings are sanitised in
        ``properties`` (sanitize.properties).
    :raises: exception.XenImportError with a one-line reason.
    """
    opts = opts or options_mod.Options()
    directory = os.path.dirname(os.path.abspath(dest_path))
    if os.path.lexists(dest_path):
        raise exception.XenImportError(
            'cannot create %s: it exists already' % dest_path)
    writer = raw.SparseWriter(
        dest_path, prefix=partial_prefix or raw.partial_prefix(dest_path))
    try:
        with _open_source(source) as (stream, total):
            ahead = None
            if opts.manifest_policy != options_mod.MANIFEST_IGNORE:
                ahead = ova.read_manifest_ahead(stream)
            reader = _ProgressReader(stream, total, progress)
            package = ova.read_package(
                reader, _converter(writer, opts, directory),
                opts.manifest_policy,
                on_descriptor=lambda d: _check_extra_disks(d, opts),
                max_disk_size=opts.max_virtual_size, manifest_ahead=ahead)
        info = package.disk_result
        writer.finish(info.current_size)
        report = _analyse(writer.path, package, info, writer.data_bytes,
                          opts)
        report.properties = sanitize.properties(report.properties)
        raw.publish(writer.path, dest_path)
        return report
    except BaseException:
        writer.abort()
        raise


def _fix_windows(dest_path, layout, guest, package_info, opts):
    """Apply the Windows fixup when allowed; return (guest, result)."""
    if (opts.windows_fixup != options_mod.FIXUP_AUTO
            or getattr(guest, 'windows', None) is None):
        return guest, None
    # Imported for Windows guests only: it costs every other run time.
    from glance_xen_import import fixup
    if not fixup.needs_windows_fixup(guest):
        return guest, None
    result = fixup.apply_windows_fixup(dest_path, layout, guest)
    if result.applied:
        # Decide the properties from the registry as it is now.
        guest = guest_inspect.inspect_guest(dest_path, layout, package_info)
    return guest, result


def _fix_linux(dest_path, layout, guest, package_info, bus, opts):
    """Apply the Linux fixup when allowed; return (guest, result)."""
    if (opts.linux_fixup != options_mod.FIXUP_AUTO
            or getattr(guest, 'linux', None) is None):
        return guest, None
    # Imported for Linux guests only, as the Windows fixup is.
    from glance_xen_import.fixup import linux as linux_fixup
    if not linux_fixup.needs_linux_fixup(guest):
        return guest, None
    result = linux_fixup.apply_linux_fixup(
        dest_path, layout, guest, bus,
        os.path.dirname(os.path.abspath(dest_path)))
    if result.applied:
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


def _analyse(dest_path, package, info, allocated, opts):
    with open(dest_path, 'rb') as image:
        layout = partitions.read_layout(image, info.current_size)
    package_info = report_mod.PackageInfo.from_package(package)
    guest = guest_inspect.inspect_guest(dest_path, layout, package_info)
    guest, fixed = _fix_windows(dest_path, layout, guest, package_info, opts)
    properties = policy.decide(guest, layout, package_info, info.source_tag,
                               opts)
    guest, linux_fixed = _fix_linux(dest_path, layout, guest, package_info,
                                    properties['hw_disk_bus'], opts)
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
    if package.skipped_disks:
        # href:capacity items; hrefs percent-encoded (sanitize.list_item).
        properties['xen_import_skipped_disks'] = sanitize.joined(
            '%s:%s' % (sanitize.list_item(d.href),
                       d.capacity if d.capacity is not None else '?')
            for d in package.skipped_disks)
    return report_mod.Report(
        virtual_size=info.current_size, allocated_bytes=allocated,
        source=info.source_tag, package=package_info, disk=package.disk,
        other_disks=list(package.skipped_disks), vhd=info, layout=layout,
        guest=guest, fixup=fixed, linux_fixup=linux_fixed,
        properties=properties)
