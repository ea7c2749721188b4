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

"""XVAs through the whole pipeline and the CLI: disks, guest, properties.

The XVAs come from tests/xvakit (written from the format notes, not from
the reader); the disks inside them from mkfs.ext4 -d, sfdisk and qemu-io.
Every RAW is compared with the disk the XVA was made from.
"""

import json
import os
import subprocess
import sys

import pytest

from glance_xen_import import exception
from glance_xen_import import options
from glance_xen_import import pipeline
from tests import linuxkit
from tests import ovakit
from tests import xvakit

MiB = xvakit.MiB


@pytest.fixture(scope='module')
def guest(tmp_path_factory):
    """A Linux guest that still names /dev/xvda1, and a data disk."""
    ovakit.require_tools('qemu-img', 'qemu-io', 'sfdisk', 'mkfs.ext4')
    work = tmp_path_factory.mktemp('xva-guest')
    root = linuxkit.disk(work, linuxkit.XEN_FILES)
    data = xvakit.qemu_pattern_raw(str(work / 'data.raw'), 6 * MiB + 512, [
        (0, 4096, 0x5a), (4 * MiB + 100, 5000, 0xc3)])
    return root, data


def _xva(tmp_path, guest, name='vm.xva', **kwargs):
    disks = [xvakit.Disk(guest[0], 'root disk'),
             xvakit.Disk(guest[1], 'data disk')]
    path = str(tmp_path / name)
    xvakit.make_xva(path, disks, **kwargs)
    return path, disks


@pytest.mark.parametrize('checksum', ['xxhash', 'sha1'])
def test_boot_disk_converted_and_fixed(tmp_path, guest, checksum):
    path, disks = _xva(tmp_path, guest, checksum=checksum,
                       vm=xvakit.Vm(vcpus=4, memory=3 * 1024 ** 3,
                                    platform={'viridian': 'false',
                                              'nx': 'true'}))
    out = str(tmp_path / 'root.raw')
    report = pipeline.convert(path, out)
    props = report.properties
    assert report.virtual_size == os.path.getsize(guest[0])
    assert props['xen_import_source'] == 'xva:%s' % checksum
    assert props['os_type'] == 'linux'
    assert props['hw_disk_bus'] == 'scsi'
    assert props['hw_firmware_type'] == 'bios'
    # The Linux fixup ran on the XVA's disk exactly as on an OVA's.
    assert set(props['xen_import_fixups_applied'].split(',')) == {
        'device-names:sd', 'console:tty0', 'mac-binding'}
    for file_path, expected in linuxkit.FIXED_FOR_SCSI.items():
        assert linuxkit.debugfs_cat(out, file_path).decode() == expected
    assert props['xen_import_vm_vcpus'] == '4'
    assert props['xen_import_vm_memory_mb'] == '3072'
    platform = props['xen_import_vm_platform'].split(',')
    assert {'nx=true', 'viridian=false'} <= set(platform)
    assert platform == sorted(platform)
    # Items are percent-encoded: Ref:99 is Ref%3A99.
    assert props['xen_import_vm_disks'] == (
        '0:boot:%s:%d,1:data:%s:%d' % (
            disks[0].ref.replace(':', '%3A'), disks[0].size,
            disks[1].ref.replace(':', '%3A'), disks[1].size))
    assert report.package.kind == 'xva'
    json.dumps(report.to_dict())


def test_report_mode_is_byte_identical(tmp_path, guest):
    path, _disks = _xva(tmp_path, guest)
    out = str(tmp_path / 'root.raw')
    report = pipeline.convert(path, out, options.Options(
        linux_fixup=options.FIXUP_REPORT))
    assert ovakit.first_difference(out, guest[0]) is None
    assert 'xvd-device-names' in report.properties[
        'xen_import_fixup_reasons']


def test_sha1_disks_match_xva_img(tmp_path, guest):
    ovakit.require_tools('xva-img', 'tar')
    path, disks = _xva(tmp_path, guest, checksum='sha1')
    out = tmp_path / 'all'
    out.mkdir()
    results = pipeline.convert_all(path, str(out), options.Options(
        linux_fixup=options.FIXUP_REPORT))
    for (dest, _report), disk in zip(results, disks):
        theirs = xvakit.xva_img_extract(path, disk.ref,
                                        str(tmp_path / 'xva-img.raw'))
        assert ovakit.first_difference(dest, theirs) is None
        assert ovakit.first_difference(dest, disk.raw) is None
        os.remove(theirs)


@pytest.mark.parametrize('how', ['position', 'ref', 'name'])
def test_data_disk_chosen(tmp_path, guest, how):
    path, disks = _xva(tmp_path, guest)
    selector = {'position': '1', 'ref': disks[1].ref,
                'name': 'data disk'}[how]
    out = str(tmp_path / 'data.raw')
    report = pipeline.convert(path, out, options.Options(disk=selector))
    assert ovakit.first_difference(out, guest[1]) is None
    assert report.properties['xen_import_disk_position'] == '1'
    assert report.properties['xen_import_fixup_required'] == 'false'
    assert 'os_type' not in report.properties


@pytest.mark.parametrize('vm,firmware,pv', [
    (xvakit.Vm(firmware='uefi'), 'uefi', False),
    (xvakit.Vm(domain_type=None, hvm_boot_policy='', pv_bootloader='pygrub',
               firmware=None), 'bios', True),
])
def test_vm_record_decides_firmware_and_pv(tmp_path, guest, vm, firmware,
                                           pv):
    path, _disks = _xva(tmp_path, guest, vm=vm)
    report = pipeline.convert(path, str(tmp_path / 'r.raw'))
    props = report.properties
    assert props['hw_firmware_type'] == firmware
    assert report.guest.pv_guest is pv
    reasons = props.get('xen_import_fixup_reasons', '').split(',')
    assert ('xen-pv-guest' in reasons) is pv
    if pv:
        assert props['xen_import_fixup_required'] == 'true'


@pytest.mark.parametrize('compress', ['gzip', 'zstd'])
def test_compressed_xva_from_stdin_through_the_cli(tmp_path, guest,
                                                   compress):
    # Named .ova on purpose: the content decides.
    path, disks = _xva(tmp_path, guest, name='export.ova', compress=compress,
                       keepalive_before={0: [3]})
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    with open(path, 'rb') as stdin:
        proc = subprocess.run(
            [sys.executable, '-m', 'glance_xen_import.cmd.main', 'convert',
             '-', '--all-disks', str(out_dir), '--json',
             '--linux-fixup', 'report'],
            stdin=stdin, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)['disks']
    assert [r['disk']['ref'] for r in reports] == [d.ref for d in disks]
    for report, disk in zip(reports, disks):
        assert ovakit.first_difference(report['path'], disk.raw) is None
        assert report['source'] == 'xva:xxhash'


def _corrupt_last_data_chunk(members):
    out = list(members)
    for index in range(len(out) - 1, 0, -1):
        name, data = out[index]
        if not name.endswith(('.xxhash', '.checksum')) and data:
            out[index] = (name, bytes([data[0] ^ 1]) + bytes(data[1:]))
            return out
    raise AssertionError('no data chunk')


def test_refusal_leaves_nothing(tmp_path, guest):
    path, _disks = _xva(tmp_path, guest, edit=_corrupt_last_data_chunk)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    with pytest.raises(exception.InvalidPackage) as caught:
        pipeline.convert_all(path, str(out_dir))
    assert 'checksum' in str(caught.value)
    assert '\n' not in str(caught.value)
    assert os.listdir(out_dir) == []
