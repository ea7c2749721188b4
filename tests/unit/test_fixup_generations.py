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

"""Guests of every Xen driver generation, detected and fixed on the disk.

The guests come from tests/winkit.py (hivex hives and INFs put on an
mkntfs volume with ntfscp). After the fixup, sleuthkit's icat takes the
SYSTEM hive out, hivexget reads it, ntfsfix -n checks the volume, and no
byte outside the hive's clusters may have changed.
"""

import dataclasses
import re
import shutil

import pytest

from glance_xen_import import fixup
from glance_xen_import import policy
from tests import ovakit
from tests.unit import test_fixup_disk as disk
from tests import winkit

GENERATIONS = {g.name: g for g in winkit.GENERATIONS}
CLASSES = (winkit.SYSTEM_CLASS, winkit.HDC_CLASS, winkit.DISK_CLASS,
           winkit.SCSI_CLASS, winkit.NET_CLASS)


def _filters_left(tmp_path, path, partition, gen):
    left = []
    for class_guid in CLASSES:
        listed = disk._hivexget(tmp_path, path, partition,
                                winkit.CS + 'Control\\Class\\' + class_guid,
                                missing=True) or ''
        left += disk._filters(listed)
    return left


@pytest.mark.parametrize('name', sorted(GENERATIONS))
def test_generation_detected_fixed_and_verified(tmp_path, name):
    ovakit.require_tools('ifind', 'icat', 'istat', 'fsstat', 'hivexget',
                         'ntfsfix')
    gen = GENERATIONS[name]
    path, layout = winkit.build(tmp_path, gen)
    original = str(tmp_path / 'original.raw')
    shutil.copyfile(path, original)
    guest = disk._inspect(path, layout)
    win = guest.windows

    # Detection: every enabled service (boot-start ones included), the
    # generation with its version, the PV devices.
    assert win.enabled_xen_services == gen.enabled
    properties = policy.decide(guest, layout, None, None, None)
    assert properties['xen_import_xen_tools'] == gen.expected
    assert properties['xen_import_xen_drivers'].split(',') == gen.enabled
    assert properties['xen_import_fixup_required'] == 'true'
    assert sorted(h.lower() for h in win.xen_hardware_ids) == sorted(
        e.lower().rsplit('\\', 1)[0] for e in gen.enum)
    assert [u.key.lower() for u in win.xen_unplug] == [
        k.lower() for k, _v in gen.unplug]

    result = fixup.apply_windows_fixup(path, layout, guest)

    assert result.skipped is None
    for service in gen.enabled:
        assert 'disabled:%s' % service in result.applied
    partition = disk._windows_partition(layout, guest)
    for service in gen.services:
        start = disk._hivexget(tmp_path, path, partition,
                               winkit.CS + 'Services\\' + service, 'Start')
        assert start.strip() == '4', service
    written = [e for _c, _v, entries in gen.filters for e in entries]
    kept = [e for e in written if e.lower() in ('partmgr', 'atapi')]
    assert sorted(_filters_left(tmp_path, path, partition, gen)) == sorted(
        kept)
    for key, values in gen.unplug:
        listing = disk._hivexget(tmp_path, path, partition,
                                 winkit.CS + 'Services\\' + key)
        for value in values:
            line = next(text for text in listing.splitlines()
                        if text.startswith('"%s"=' % value))
            # A DWORD 0, or an empty list (just its terminating NULs).
            assert line.split('=', 1)[1] in ('dword:00000000',
                                             'hex(7):00,00'), line

    disk.assert_only_hive_changed(original, path, partition, tmp_path)

    again = disk._inspect(path, layout)
    assert again.windows.enabled_xen_services == []
    assert again.windows.xen_filters == []
    assert again.windows.xen_unplug == []
    assert not fixup.needs_windows_fixup(again)
    decided = policy.decide(again, layout, None, None, None)
    assert decided['xen_import_fixup_required'] == 'false'
    assert 'xen_import_xen_drivers' not in decided
    # The generation is still reported: the tools are installed, only
    # their drivers are off.
    assert decided['xen_import_xen_tools'] == gen.expected


_convert = ovakit.cli_convert


def test_legacy_guest_through_the_cli(tmp_path):
    """Report mode leaves the image byte-identical; auto mode fixes it."""
    ovakit.require_tools('qemu-img')
    gen = GENERATIONS['citrix-legacy']
    raw, _layout = winkit.build(tmp_path, gen)
    vhd = str(tmp_path / 'legacy.vhd')
    ovakit.xen_vhd(raw, vhd, creator='caml')
    ova = str(tmp_path / 'legacy.ova')
    ovakit.make_ova(ova, [ovakit.OvaDisk(vhd)])

    dest = str(tmp_path / 'report.raw')
    report = _convert(ova, dest, '--windows-fixup', 'report')
    props = report['properties']
    assert ovakit.first_difference(raw, dest) is None
    assert 'xen_import_fixups_applied' not in props
    assert 'xenevtchn' in props['xen_import_xen_drivers'].split(',')
    assert props['xen_import_xen_tools'] == gen.expected
    assert props['xen_import_static_ip'] == (
        '5a1e6c3b:10.20.30.40/24,gw=10.20.30.1,'
        'dns=10.20.30.2+10.20.30.3+2001:db8::53')
    assert 'static-ip' in props['xen_import_findings'].split(',')
    windows = report['guest']['windows']
    assert windows['xen_nopvboot'] is False
    [nic] = windows['static_interfaces']
    assert nic['xen_nic'] is True and nic['component_id'] == 'xen\\vif'
    assert [t['generation'] for t in windows['xen_tools']] == [
        'citrix-legacy-5.x-6.0']

    fixed = _convert(ova, str(tmp_path / 'fixed.raw'))['properties']
    applied = fixed['xen_import_fixups_applied'].split(',')
    assert {'disabled:xenevtchn', 'disabled:xenvbd', 'disabled:scsifilt',
            'filter-removed:scsifilt', 'unplug-cleared:xenfilt'} <= set(
                applied)
    assert fixed['xen_import_fixup_required'] == 'false'
    assert re.fullmatch(r'[a-z0-9.:,-]+', fixed['xen_import_xen_tools'])


def test_service_that_cannot_be_disabled_keeps_the_image_flagged(tmp_path):
    # xenevtchn's Start is 8 bytes of REG_BINARY: Windows reads its low
    # DWORD (0, boot-start), the in-place editor only writes 4-byte
    # values. Everything else is fixed; xenevtchn is reported.
    gen = dataclasses.replace(GENERATIONS['citrix-legacy'], extra=[
        [winkit.CS + 'Services\\xenevtchn',
         {'Start': ['binary', '0000000000000000'], 'Type': ['dword', 1]}]])
    path, layout = winkit.build(tmp_path, gen)
    guest = disk._inspect(path, layout)
    assert 'xenevtchn' in guest.windows.enabled_xen_services
    result = fixup.apply_windows_fixup(path, layout, guest)
    assert 'disabled:xenvbd' in result.applied
    assert 'disabled:xenevtchn' not in result.applied
    again = disk._inspect(path, layout)
    decided = policy.decide(again, layout, None, None, None)
    assert decided['xen_import_fixup_required'] == 'true'
    assert 'xen-pv-drivers' in decided['xen_import_fixup_reasons']
    assert decided['xen_import_xen_drivers'] == 'xenevtchn'
    assert decided['hw_disk_bus'] == 'ide'
