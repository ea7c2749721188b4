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

"""Inspection that gives up says so, in GuestFacts.incomplete.

The guests are those of tools/fixtures/make_guests.py; the damage is
done with the disks' own tools (a zeroed NTFS boot sector region read by
nothing else), or by a step made to fail.
"""

import logging

from glance_xen_import import fixup
from glance_xen_import import inspect
from glance_xen_import.inspect import windows
from glance_xen_import import report
from tests.unit.test_fixup_disk import _guest

PACKAGE = report.PackageInfo(name='vm', virtual_system_type='hvm-3.0',
                             os_id=None, os_description=None,
                             manifest='absent', signed=False)


def test_clean_guest_is_complete(tmp_path):
    path, layout = _guest(tmp_path, 'win2016-xen')
    assert inspect.inspect_guest(path, layout, PACKAGE).incomplete == []


def test_failing_step_is_recorded_without_traceback(
        tmp_path, monkeypatch, caplog):
    path, layout = _guest(tmp_path, 'win2016-xen')

    def broken(*args):
        raise RuntimeError('reader fell over')

    monkeypatch.setattr(windows, '_read_driver_packages', broken)
    with caplog.at_level(logging.WARNING):
        guest = inspect.inspect_guest(path, layout, PACKAGE)
    # The other steps still ran: the Xen drivers are known.
    assert guest.os_type == 'windows'
    assert guest.windows.enabled_xen_services
    assert guest.incomplete == ['driver packages unreadable']
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        'guest inspection: driver packages could not be read: reader fell '
        'over']
    assert all(r.exc_info is None for r in warnings)
    # And the fixup does not write to a guest it has not fully read.
    before = open(path, 'rb').read()
    result = fixup.apply_windows_fixup(path, layout, guest)
    assert result.skipped == 'inspection-incomplete'
    assert open(path, 'rb').read() == before


def test_unreadable_ntfs_volume_is_named(tmp_path):
    path, layout = _guest(tmp_path, 'win2016-xen')
    start = layout.partitions[0].start
    with open(path, 'r+b') as disk:
        # Keep the boot sector's "NTFS" signature, lose the MFT.
        disk.seek(start + 4 * 4096)
        disk.write(bytes(64 * 1024))
    guest = inspect.inspect_guest(path, layout, PACKAGE)
    assert guest.os_type is None
    assert guest.incomplete == ['partition 1 ntfs volume unreadable']
    assert [(v.location, v.kind, v.readable) for v in guest.volumes] == [
        ('partition 1', 'ntfs', False)]
