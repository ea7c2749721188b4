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

"""The Windows fixup as the CLI runs it, from a XenCenter-style OVA."""

import lzma
import os

import pytest

from glance_xen_import import options
from glance_xen_import import pipeline
from tests import ovakit

GUESTS = os.path.join(os.path.dirname(__file__), os.pardir, 'fixtures',
                      'guests')


def _ova(tmp_path, guest):
    raw = tmp_path / (guest + '.raw')
    with lzma.open(os.path.join(GUESTS, guest + '.raw.xz')) as src:
        raw.write_bytes(src.read())
    vhd = str(tmp_path / (guest + '.vhd'))
    ovakit.xen_vhd(str(raw), vhd, creator='caml')
    ova = str(tmp_path / (guest + '.ova'))
    ovakit.make_ova(ova, [ovakit.OvaDisk(vhd)])
    return str(raw), ova


_convert = ovakit.cli_convert


@pytest.fixture
def xen_windows(tmp_path):
    ovakit.require_tools('qemu-img')
    return _ova(tmp_path, 'win2008r2-xen')


def test_auto_fixup_neutralises_and_decides_again(tmp_path, xen_windows):
    raw, ova = xen_windows
    dest = str(tmp_path / 'out.raw')
    report = _convert(ova, dest)
    props = report['properties']
    applied = props['xen_import_fixups_applied'].split(',')
    assert 'filter-removed:xenfilt' in applied
    assert 'disabled:xenbus' in applied and 'disabled:xenvbd' in applied
    # Decided from the fixed registry: nothing Xen is left enabled.
    assert props['xen_import_fixup_required'] == 'false'
    assert 'xen_import_xen_drivers' not in props
    assert report['guest']['windows']['enabled_xen_services'] == []
    # The image's bytes are the fixed disk: some bytes differ from the
    # source, and only a handful (the hive's Start values and filters).
    changed = ovakit.first_difference(raw, dest)
    assert changed is not None
    assert report['fixup']['changed_bytes'] < 256


def test_report_mode_changes_nothing(tmp_path, xen_windows):
    raw, ova = xen_windows
    dest = str(tmp_path / 'out.raw')
    report = _convert(ova, dest, '--windows-fixup', 'report')
    props = report['properties']
    assert 'xen_import_fixups_applied' not in props
    assert props['xen_import_fixup_required'] == 'true'
    assert 'xen-pv-drivers' in props['xen_import_fixup_reasons']
    # With the drivers still active the first boot must avoid virtio.
    assert props['hw_disk_bus'] == 'ide'
    assert props['hw_machine_type'] == 'pc'
    assert ovakit.first_difference(raw, dest) is None


def test_disk_bus_is_decided_again_from_the_fixed_registry(tmp_path):
    # Server 2016 with vioscsi installed but demoted by StartOverride:
    # only once the fixup has cleared it is vioscsi boot-ready.
    ovakit.require_tools('qemu-img')
    _raw, ova = _ova(tmp_path, 'win2016-xen')
    reported = _convert(ova, str(tmp_path / 'report.raw'),
                        '--windows-fixup', 'report')['properties']
    assert reported['hw_disk_bus'] == 'ide'
    fixed = _convert(ova, str(tmp_path / 'fixed.raw'))['properties']
    assert 'startoverride-cleared:vioscsi' in fixed[
        'xen_import_fixups_applied']
    assert fixed['hw_disk_bus'] == 'scsi'
    assert fixed['hw_scsi_model'] == 'virtio-scsi'
    assert fixed['xen_import_fixup_required'] == 'false'
    # "XenServer VM Tools" is installed (no DisplayVersion): still there.
    assert fixed['xen_import_xen_tools'] == 'vm-tools'


def test_demoted_virtio_driver_is_made_boot_ready_without_xen(tmp_path):
    # Server 2019 with no Xen drivers: vioscsi installed and bound in the
    # DriverDatabase, but demoted (StartOverride\0 = 3). Report mode
    # leaves the disk alone and takes viostor, which is ready; auto
    # clears the override, and vioscsi is then ready too.
    ovakit.require_tools('qemu-img')
    raw, ova = _ova(tmp_path, 'win2019-uefi')
    dest = str(tmp_path / 'report.raw')
    reported = _convert(ova, dest, '--windows-fixup', 'report')
    assert reported['properties']['hw_disk_bus'] == 'virtio'
    assert ovakit.first_difference(raw, dest) is None
    fixed = _convert(ova, str(tmp_path / 'fixed.raw'))
    props = fixed['properties']
    assert props['xen_import_fixups_applied'] == (
        'startoverride-cleared:vioscsi')
    assert (props['hw_disk_bus'], props['hw_scsi_model'],
            props['hw_machine_type']) == ('scsi', 'virtio-scsi', 'pc')
    assert props['xen_import_fixup_required'] == 'false'
    assert fixed['guest']['windows']['demoted_storage'] == []


def test_guest_without_xen_drivers_converts_byte_identical(tmp_path):
    ovakit.require_tools('qemu-img')
    raw, ova = _ova(tmp_path, 'win7-vioscsi')
    dest = str(tmp_path / 'out.raw')
    report = _convert(ova, dest)
    assert 'xen_import_fixups_applied' not in report['properties']
    assert report['fixup'] is None
    assert report['properties']['hw_disk_bus'] == 'scsi'
    assert ovakit.first_difference(raw, dest) is None


@pytest.mark.parametrize('mode, steps', [
    ('auto', ['inspect', 'fix-windows', 'reinspect']),
    ('report', ['inspect']),
])
def test_steps_are_told_as_they_start(tmp_path, xen_windows, mode, steps):
    _raw, ova = xen_windows
    seen = []
    pipeline.convert(ova, str(tmp_path / 'out.raw'),
                     options.Options(windows_fixup=mode),
                     on_step=seen.append)
    assert seen == steps
