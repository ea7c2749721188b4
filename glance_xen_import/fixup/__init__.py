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

"""Guest edits that make an imported Xen guest boot on KVM.

Each edit is decided from inspection facts, made in place on the RAW image,
read back and verified; when it cannot be made safely, nothing is changed
and the reason is returned instead.
"""

import dataclasses
import logging
import os
import typing

from glance_xen_import import exception
from glance_xen_import.fixup import inplace
from glance_xen_import.fixup import windows

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class FixupResult:
    """What a fixup did (``applied``) or why it did nothing (``skipped``)."""

    applied: typing.List[str] = dataclasses.field(default_factory=list)
    skipped: typing.Optional[str] = None
    changed_bytes: int = 0

    def to_dict(self):
        return dataclasses.asdict(self)


def _unsafe_reason(guest, win):
    if guest.incomplete:
        # What inspection could not read might be what makes the edit
        # unsafe (a hibernated volume, a damaged hive).
        return 'inspection-incomplete'
    if win.dirty_hives:
        return 'dirty-hive'
    if win.hibernated:
        return 'hibernated'
    return None


def needs_windows_fixup(guest):
    """True for Windows with Xen PV drivers active or storage demoted.

    Demoted: a storage driver's StartOverride on NT 6.2 and later.
    """
    win = getattr(guest, 'windows', None)
    if win is None:
        return False
    # ForceUnplug is read by xenbus/xenfilt: with them disabled and out of
    # the filter lists it asks nothing of anybody, so alone it needs no fix.
    if win.enabled_xen_services or win.xen_filters:
        return True
    return bool(win.demoted_storage and win.major_version is not None
                and (win.major_version, win.minor_version or 0) >= (6, 2))


def _edit_hive(data, nt_version):
    """windows.fix_hive, with any failure of ours turned into a refusal."""
    try:
        return windows.fix_hive(data, nt_version)
    except exception.GuestError:
        raise
    except Exception as exc:
        # Nothing is written yet: a hive we cannot make sense of is left
        # as it is, whatever went wrong.
        LOG.debug('SYSTEM hive edit failed', exc_info=True)
        raise exception.GuestError('the SYSTEM hive could not be edited '
                                   '(%s)' % type(exc).__name__)


def _write_confirmed(hive_file, hive):
    """Write the edited bytes and read them back; restore on any doubt."""
    try:
        hive_file.write_back(hive.data, hive.changed)
        reread = inplace.NtfsFile(hive_file.image_path,
                                  hive_file.partition_start,
                                  hive_file.partition_size, hive_file.path)
        if reread.data != bytes(hive.data):
            raise exception.GuestError(
                'the SYSTEM hive read back from the disk differs from what '
                'was written')
    except (exception.GuestError, OSError) as exc:
        # A fixup that cannot be confirmed must leave the disk as it was.
        hive_file.write_back(hive_file.data, hive.changed)
        raise exception.GuestError(str(exc))


def apply_windows_fixup(image_path, layout, guest):
    """Neutralise the Xen PV drivers of a Windows guest in ``image_path``.

    :returns: a FixupResult; nothing on the disk changes when it says
        ``skipped``.
    """
    if not needs_windows_fixup(guest):
        return FixupResult()
    win = guest.windows
    reason = _unsafe_reason(guest, win)
    if reason:
        return FixupResult(skipped=reason)
    where = inplace.partition_extent(layout, win.location)
    if where is None:
        return FixupResult(skipped='windows-volume-not-found')
    start, size = where
    if size is None:
        size = os.stat(image_path).st_size
    path = (win.systemroot.strip('/') + '/System32/config/SYSTEM')
    nt_version = None
    if win.major_version is not None:
        nt_version = (win.major_version, win.minor_version or 0)
    try:
        hive_file = inplace.NtfsFile(image_path, start, size,
                                     '\\' + path.replace('/', '\\'))
        hive, actions = _edit_hive(hive_file.data, nt_version)
        if not actions:
            return FixupResult()
        _write_confirmed(hive_file, hive)
    except exception.GuestError as exc:
        LOG.warning('Windows fixup not applied: %s', exc)
        return FixupResult(skipped='hive-not-editable')
    LOG.info('Windows fixup applied to %s: %s', hive_file.path,
             ', '.join(actions))
    return FixupResult(applied=actions, changed_bytes=len(hive.changed))
