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

"""ova.xml to facts, on documents written by tests/xvakit in xapi's style."""

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import xapixml
from glance_xen_import.formats import xva
from tests import xvakit

MiB = xvakit.MiB
GiB = 1024 * MiB


class FakeDisk(xvakit.Disk):
    """A disk of a given size whose data is never read (ova.xml only)."""

    def __init__(self, name, size, **kwargs):
        super().__init__(raw='unused', name=name, size=size, **kwargs)


def descriptor(vm=None, disks=None, **kwargs):
    disks = disks if disks is not None else [FakeDisk('root', 10 * GiB)]
    data = xvakit.ova_xml(vm or xvakit.Vm(), disks, xvakit.Ids(95),
                          **kwargs)
    return xva.parse_descriptor(data), disks


def test_hvm_bios_vm_with_two_disks_and_an_empty_cd():
    vm = xvakit.Vm(name='web & db <1>', vcpus=4, memory=6 * GiB)
    desc, disks = descriptor(vm, [
        FakeDisk('root', 20 * GiB + 1536),
        FakeDisk('data', 100 * GiB, bootable=False)])
    assert (desc.name, desc.domain_type, desc.is_pv, desc.firmware,
            desc.secureboot, desc.vcpus, desc.memory_bytes,
            desc.is_template, desc.viridian) == (
        'web & db <1>', 'hvm', False, 'bios', False, 4, 6 * GiB, False,
        False)
    assert [(d.ref, d.position, d.userdevice, d.device, d.name, d.capacity,
             d.bootable, d.mode, d.vdi_type) for d in desc.disks] == [
        ('Ref:99', 0, 0, 'xvda', 'root', 20 * GiB + 1536, True, 'RW',
         'user'),
        ('Ref:102', 1, 1, 'xvdb', 'data', 100 * GiB, False, 'RW', 'user')]
    # The empty CD's VDI is the shared id of NULL references: not a disk.
    assert desc.streams == [('Ref:102', 100 * GiB),
                            ('Ref:99', 20 * GiB + 1536)]
    assert desc.version == {'product_brand': 'XCP-ng',
                            'product_version': '8.4.0', 'xapi_major': 25,
                            'xapi_minor': 27, 'export_vsn': 2}
    assert desc.platform['device-model'] == 'qemu-upstream-compat'


def test_uefi_secure_boot_windows_hints():
    vm = xvakit.Vm(firmware='uefi', platform={
        'secureboot': 'true', 'viridian': 'true', 'device_id': '0002',
        'vendor-secret': 'not a platform flag we keep'})
    desc, _disks = descriptor(vm)
    assert (desc.firmware, desc.secureboot, desc.viridian) == (
        'uefi', True, True)
    assert desc.platform['device-model'] == 'qemu-upstream-uefi'
    assert desc.platform['device_id'] == '0002'
    assert 'vendor-secret' not in desc.platform


@pytest.mark.parametrize('domain_type,policy,expected', [
    (None, '', 'pv'),                   # before jura: derived
    ('unspecified', '', 'pv'),
    ('unspecified', 'BIOS order', 'hvm'),
    ('pv_in_pvh', '', 'pv_in_pvh'),
    ('pvh', '', 'pvh'),
])
def test_domain_type(domain_type, policy, expected):
    vm = xvakit.Vm(domain_type=domain_type, hvm_boot_policy=policy,
                   pv_bootloader='pygrub' if not policy else '')
    desc, _disks = descriptor(vm)
    assert desc.domain_type == expected
    assert desc.is_pv == (expected in ('pv', 'pv_in_pvh'))


def test_iso_cd_is_not_a_disk_nor_streamed():
    desc, _disks = descriptor(cd='iso')
    assert [d.name for d in desc.disks] == ['root']
    assert [ref for ref, _size in desc.streams] == ['Ref:99']


def test_disks_in_userdevice_order_not_id_order():
    desc, _disks = descriptor(disks=[
        FakeDisk('data', GiB, userdevice=2),
        FakeDisk('root', 2 * GiB, userdevice=0)])
    assert [(d.name, d.position, d.userdevice) for d in desc.disks] == [
        ('root', 0, 0), ('data', 1, 2)]


def test_template_and_old_empty_values():
    vm = xvakit.Vm(is_template=True, description='')
    data = xvakit.ova_xml(vm, [FakeDisk('root', GiB)], xvakit.Ids(1),
                          empty='<value/>')
    assert b'<value/>' in data
    desc = xva.parse_descriptor(data)
    assert desc.is_template and desc.description == ''


def test_xen_orchestra_descriptor():
    data = xvakit.ova_xml(xvakit.Vm(), [FakeDisk('a', MiB),
                                        FakeDisk('b', 2 * MiB)],
                          xvakit.Ids(0, 'Ref:%03d'), cd=None, xo=True)
    desc = xva.parse_descriptor(data)
    assert [(d.ref, d.userdevice) for d in desc.disks] == [
        ('Ref:002', 1), ('Ref:004', 2)]
    assert desc.version['xapi_major'] == 1


def refuse(match, vm=None, disks=None, data=None, **kwargs):
    max_disk_size = kwargs.pop('max_disk_size', 2 << 40)
    if data is None:
        data = xvakit.ova_xml(vm or xvakit.Vm(),
                              disks or [FakeDisk('root', GiB)],
                              xvakit.Ids(95), **kwargs)
    with pytest.raises(exception.InvalidPackage, match=match) as info:
        xva.parse_descriptor(data, max_disk_size=max_disk_size)
    assert '\n' not in str(info.value)


def test_export_vsn_1_refused():
    refuse('^XVA export_vsn 1 predates XenServer 4.1: its chunks carry no '
           'checksums; export it again from a newer host$', export_vsn=1)


def test_firmware_other_than_bios_or_uefi_refused():
    refuse("^ova.xml: VM firmware 'coreboot' is neither bios nor uefi$",
           vm=xvakit.Vm(firmware='coreboot'))


def test_unknown_domain_type_refused():
    refuse("^ova.xml: VM domain_type 'hvm2' is not one of hvm, pv, pvh, "
           "pv_in_pvh$", vm=xvakit.Vm(domain_type='hvm2'))


def test_no_disk_refused():
    data = xvakit.ova_xml(xvakit.Vm(), [], xvakit.Ids(95))
    refuse('^XVA holds no disk: its VM has no VBD with a disk image$',
           data=data)


def test_disk_larger_than_accepted_refused():
    data = xvakit.ova_xml(xvakit.Vm(), [FakeDisk('root', 3 << 40)],
                          xvakit.Ids(95))
    refuse(r'^XVA disk Ref:99 is 3298534883328 bytes, more than the '
           r'2199023255552 accepted$', data=data)


@pytest.mark.parametrize('value,reason', [
    ('-1', "is '-1', not a non-negative whole number"),
    ('12x', "is '12x', not a non-negative whole number"),
    ('99999999999999999999999', 'is .*, not a non-negative whole number'),
])
def test_bad_numbers_refused(value, reason):
    vm = xvakit.Vm()
    vm.vcpus = value
    refuse('^ova.xml: VM VCPUs_max %s$' % reason, vm=vm)


def test_too_many_vcpus_refused():
    refuse('^ova.xml: VM VCPUs_max is 100000, more than the 4096 accepted$',
           vm=xvakit.Vm(vcpus=100000))


def test_two_vms_refused():
    extra = [{'class': 'VM', 'id': 'Ref:900', 'snapshot': {
        'name_label': 'other', 'is_a_snapshot': False}}]
    refuse('^ova.xml: it describes 2 VMs, and an XVA holds one$',
           extra_objects=extra)


def test_snapshot_vm_is_not_the_vm():
    extra = [{'class': 'VM', 'id': 'Ref:900', 'snapshot': {
        'name_label': 'nightly', 'is_a_snapshot': True}}]
    data = xvakit.ova_xml(xvakit.Vm(), [FakeDisk('root', GiB)],
                          xvakit.Ids(95), extra_objects=extra)
    assert xva.parse_descriptor(data).name == 'Debian 12 web'


def test_suspend_vdi_is_streamed_but_not_a_disk():
    extra = [{'class': 'VDI', 'id': 'Ref:900', 'snapshot': {
        'name_label': 'suspend image', 'type': 'suspend',
        'virtual_size': '4096', 'SR': 'Ref:100'}}]
    data = xvakit.ova_xml(xvakit.Vm(), [FakeDisk('root', GiB)],
                          xvakit.Ids(95), extra_objects=extra)
    desc = xva.parse_descriptor(data)
    assert [d.ref for d in desc.disks] == ['Ref:99']
    assert desc.streams == [('Ref:900', 4096), ('Ref:99', GiB)]


# --- the XML-RPC layer ---

def xml_refused(data, match):
    with pytest.raises(exception.InvalidPackage, match=match) as info:
        xapixml.parse(data)
    assert '\n' not in str(info.value)


def test_entities_and_dtd_refused():
    laughs = (b'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa">'
              b'<!ENTITY b "&a;&a;&a;&a;">]><value>&b;</value>')
    xml_refused(laughs, '^ova.xml is refused: it has a document type '
                        'declaration, which XML-RPC never needs$')
    external = (b'<!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<value>&x;</value>')
    xml_refused(external, '^ova.xml is refused: it has a document type')


def test_deep_nesting_refused():
    deep = (b'<value><array><data>' * 40 + b'<value/>'
            + b'</data></array></value>' * 40)
    xml_refused(deep, '^ova.xml is not valid XML-RPC: values nested deeper '
                      'than 64$')


def test_oversized_refused():
    xml_refused(b'<value>' + b' ' * xapixml.MAX_SIZE + b'</value>',
                r'^ova.xml is \d+ bytes, more than the 16777216 accepted$')


def test_duplicate_member_refused():
    xml_refused(b'<value><struct><member><name>virtual_size</name><value>1'
                b'</value></member><member><name>virtual_size</name><value>'
                b'9</value></member></struct></value>',
                "^ova.xml is not valid XML-RPC: a struct has member "
                "'virtual_size' twice$")


def test_tagged_forms_are_read():
    value = xapixml.parse(
        b'<value><struct>\n <member><name>s</name><value><string>x</string>'
        b'</value></member><member><name>i</name><value><i4>-3</i4></value>'
        b'</member><member><name>b</name><value><boolean>0</boolean>'
        b'</value></member><member><name>d</name><value><dateTime.iso8601>'
        b'19700101T00:00:00Z</dateTime.iso8601></value></member><member>'
        b'<name>f</name><value><double>1.5</double></value></member>'
        b'<member><name>n</name><value><nil/></value></member><member>'
        b'<name>a</name><value><array><data></data></array></value>'
        b'</member></struct></value>')
    assert value == {'s': 'x', 'i': -3, 'b': False,
                     'd': '19700101T00:00:00Z', 'f': 1.5, 'n': None,
                     'a': []}


def test_unresolvable_and_opaque_references_are_tolerated():
    """A Disk VBD whose VDI names no object, and one with an OpaqueRef."""
    extra = [
        {'class': 'VBD', 'id': 'Ref:901', 'snapshot': {
            'VM': 'Ref:95', 'VDI': 'Ref:4242', 'type': 'Disk',
            'userdevice': '5', 'empty': False}},
        {'class': 'VBD', 'id': 'Ref:902', 'snapshot': {
            'VM': 'Ref:95', 'VDI': 'OpaqueRef:5e1f0c2a', 'type': 'Disk',
            'userdevice': '6', 'empty': False}},
        {'class': 'VDI', 'id': 'Ref:903', 'snapshot': {
            'name_label': 'orphan', 'type': 'user', 'virtual_size': '1',
            'SR': 'OpaqueRef:NULL'}},
    ]
    data = xvakit.ova_xml(xvakit.Vm(), [FakeDisk('root', GiB)],
                          xvakit.Ids(95), extra_objects=extra)
    desc = xva.parse_descriptor(data)
    assert [d.ref for d in desc.disks] == ['Ref:99']
    assert [ref for ref, _size in desc.streams] == ['Ref:99']
