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

"""Every disk of a VM: choosing one, or converting them all in one pass.

The expected bytes of each disk are qemu-img's (the corpus RAW each VHD
was made from), never the converter's own output.
"""

import json
import os

import pytest

from glance_xen_import import exception
from glance_xen_import import options
from glance_xen_import import pipeline
from tests import ovakit


@pytest.fixture
def three_disks(corpus, tmp_path):
    """A VM whose boot disk is listed second and stored in the middle."""
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'), boot=True, address=0)
    data1 = ovakit.OvaDisk(corpus.vhd('caml', 'mbr8'), boot=False,
                           address=1)
    data2 = ovakit.OvaDisk(corpus.vhd('qem2-fixed', 'mbr8'), boot=False,
                           address=2)
    path = str(tmp_path / 'vm.ova')
    ovakit.make_ova(path, [data1, boot, data2])
    expected = [(boot, corpus.raw('gpt16')), (data1, corpus.raw('mbr8')),
                (data2, corpus.raw('mbr8'))]
    return path, expected


def _convert(path, tmp_path, selector):
    dest = str(tmp_path / ('chosen-%s.raw' % selector))
    report = pipeline.convert(path, dest, options.Options(disk=selector))
    json.dumps(report.to_dict())
    return report, dest


def test_boot_disk_by_default_lists_the_others(three_disks, tmp_path):
    path, expected = three_disks
    report, dest = _convert(path, tmp_path, None)
    boot, raw = expected[0]
    assert ovakit.first_difference(dest, raw.path) is None
    assert report.disk.href == boot.href
    assert report.disk_position == 0
    props = report.properties
    assert props['xen_import_disk_position'] == '0'
    # position:role:href:capacity, in the VM's order (boot disk first).
    assert props['xen_import_vm_disks'] == ','.join(
        '%d:%s:%s:%d' % (i, 'boot' if i == 0 else 'data', d.href, d.capacity)
        for i, (d, _raw) in enumerate(expected))
    listed = report.to_dict()['vm_disks']
    assert [d['select'] for d in listed] == [
        'xen_import_disk=0', 'xen_import_disk=1', 'xen_import_disk=2']


@pytest.mark.parametrize('how', ['position', 'href', 'disk_id'])
def test_each_data_disk_can_be_chosen(three_disks, tmp_path, how):
    path, expected = three_disks
    for position, (disk, raw) in enumerate(expected[1:], start=1):
        selector = {'position': str(position), 'href': disk.href,
                    'disk_id': disk.disk_id}[how]
        report, dest = _convert(path, tmp_path, selector)
        assert ovakit.first_difference(dest, raw.path) is None
        assert report.virtual_size == raw.size
        assert report.disk.href == disk.href
        assert report.properties['xen_import_disk_position'] == str(
            position)
        assert disk.href not in report.properties['xen_import_skipped_disks']
        # A data disk holds no operating system: nothing to fix.
        assert report.properties['xen_import_fixup_required'] == 'false'


def test_all_disks_in_one_pass(three_disks, tmp_path):
    path, expected = three_disks
    out = tmp_path / 'all'
    out.mkdir()
    results = pipeline.convert_all(path, str(out))
    assert [os.path.basename(p) for p, _r in results] == [
        'disk-0.raw', 'disk-1.raw', 'disk-2.raw']
    for (dest, report), (disk, raw) in zip(results, expected):
        assert ovakit.first_difference(dest, raw.path) is None
        assert report.disk.href == disk.href
    assert sorted(os.listdir(out)) == ['disk-0.raw', 'disk-1.raw',
                                       'disk-2.raw']


def test_all_disks_leave_nothing_when_one_fails(corpus, tmp_path):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    # The OVF says 1 MiB more than the VHD holds: refused at its metadata.
    data = ovakit.OvaDisk(corpus.vhd('caml', 'mbr8'), boot=False, address=1,
                          capacity=corpus.raw('mbr8').size + (1 << 20))
    path = str(tmp_path / 'vm.ova')
    ovakit.make_ova(path, [boot, data])
    out = tmp_path / 'all'
    out.mkdir()
    with pytest.raises(exception.InvalidPackage) as caught:
        pipeline.convert_all(path, str(out))
    assert 'gives disk %s a capacity of' % data.href in str(caught.value)
    assert os.listdir(out) == []


@pytest.mark.parametrize('selector,reason', [
    ('3', 'xen_import_disk=3: the VM has 3 disk(s), at positions 0 to 2'),
    ('nope.vhd', 'xen_import_disk=nope.vhd names no disk of the VM; its '
                 'disks are 0 ('),
])
def test_unknown_disk_refused_with_the_list(three_disks, tmp_path, selector,
                                            reason):
    path, expected = three_disks
    dest = str(tmp_path / 'x.raw')
    with pytest.raises(exception.DiskNotFound) as caught:
        pipeline.convert(path, dest, options.Options(disk=selector))
    message = str(caught.value)
    assert message.startswith(reason)
    assert expected[2][0].href in message
    assert os.listdir(tmp_path) == ['vm.ova']


def test_refuse_policy_allows_an_explicit_choice(three_disks, tmp_path):
    path, expected = three_disks
    refuse = options.Options(extra_disks=options.EXTRA_DISKS_REFUSE)
    with pytest.raises(exception.InvalidPackage) as caught:
        pipeline.convert(path, str(tmp_path / 'a.raw'), refuse)
    assert str(caught.value) == ('package holds 3 disks and only '
                                 'single-disk packages are accepted')
    chosen = options.Options(extra_disks=options.EXTRA_DISKS_REFUSE,
                             disk='2')
    dest = str(tmp_path / 'b.raw')
    pipeline.convert(path, dest, chosen)
    assert ovakit.first_difference(dest, expected[2][1].path) is None


def test_vm_sizing_and_firmware_from_the_descriptor(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'mbr8'))
    # XenCenter keeps HVM_boot_params beside the platform flags.
    descriptor = ovakit.ovf_descriptor([disk]).replace(
        b'</ovf:VirtualHardwareSection>',
        b'<xenovf:VirtualSystemOtherConfigurationData Name="HVM_boot_params">'
        b'<xenovf:Value>order=dc;firmware=uefi</xenovf:Value>'
        b'</xenovf:VirtualSystemOtherConfigurationData>'
        b'</ovf:VirtualHardwareSection>')
    path = str(tmp_path / 'uefi.ova')
    ovakit.make_ova(path, [disk], ovf=descriptor)
    report = pipeline.convert(path, str(tmp_path / 'uefi.raw'))
    props = report.properties
    # The descriptor's Info line says "64 MB RAM; 1 CPU(s)".
    assert b'64 MB RAM; 1 CPU(s)' in descriptor
    assert props['xen_import_vm_vcpus'] == '1'
    assert props['xen_import_vm_memory_mb'] == '64'
    assert props['xen_import_vm_platform'] == (
        'acpi=true,apic=true,nx=false,pae=true,viridian=true')
    # An MBR disk alone would say bios: the VM's record decides.
    assert report.layout.scheme == 'mbr'
    assert props['hw_firmware_type'] == 'uefi'
