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

"""OVF descriptor parsing: the real XenCenter sample and its variants."""

import os
import re
import sys
import xml.etree.ElementTree as etree

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import ovf
from tests import ovakit

GiB = ovakit.GiB


def sample():
    with open(ovakit.SAMPLE_OVF, 'rb') as f:
        return f.read()


@pytest.fixture
def vhd_file(tmp_path):
    """A stand-in file for OvaDisk: only its name and size are used."""
    path = str(tmp_path / 'disk.vhd')
    with open(path, 'wb') as f:
        f.write(b'\0' * 4096)
    return path


def disk(path, **kwargs):
    kwargs.setdefault('capacity', 10 * GiB)
    return ovakit.OvaDisk(path, **kwargs)


def refused(data, reason=''):
    with pytest.raises(exception.InvalidPackage) as caught:
        ovf.parse(data)
    message = str(caught.value)
    assert message and '\n' not in message
    assert re.search(reason, message, re.I), message
    return message


def test_real_xencenter_sample():
    d = ovf.parse(sample())
    assert d.name == 'Web server'
    assert d.virtual_system_type == 'xen-3.0-unknown'
    assert d.os_id == 0
    assert d.os_description == 'XenOVF Created Export'
    assert len(d.disks) == 1
    ref = d.disks[0]
    assert ref.disk_id == '64891892-169e-470b-9779-368ee4ad2c15'
    assert ref.href == '5936bc8c-20ae-4052-9083-b8e5b96dc683.vhd'
    assert ref.capacity == 10485760
    assert ref.format_uri == ovakit.VHD_FORMAT_URI
    assert ref.compression is None
    assert ref.chunk_size is None
    assert ref.boot is True
    assert ref.address_on_parent == 0


def test_sample_encoding_declaration_lies():
    # What makes a stock parser fail on XenCenter output: utf-16 declared,
    # UTF-8 bytes.
    data = sample()
    assert b'encoding="utf-16"' in data[:60]
    with pytest.raises(etree.ParseError):
        etree.fromstring(data)
    assert ovf.parse(data).name == 'Web server'


@pytest.mark.parametrize('encoding', ['utf-16', 'utf-16-le-bom',
                                      'utf-16-be-bom', 'utf-8-sig'])
def test_real_unicode_encodings(encoding):
    text = sample().decode('utf-8')
    if encoding == 'utf-16-le-bom':
        data = b'\xff\xfe' + text.encode('utf-16-le')
    elif encoding == 'utf-16-be-bom':
        data = b'\xfe\xff' + text.encode('utf-16-be')
    else:
        data = text.encode(encoding)
    assert ovf.parse(data) == ovf.parse(sample())


def test_generated_from_sample_matches(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file)], name='db-01',
                                 system_type='hvm-3.0-x86_64',
                                 os_description='Debian 12')
    d = ovf.parse(data)
    assert d.name == 'db-01'
    assert d.virtual_system_type == 'hvm-3.0-x86_64'
    assert d.os_description == 'Debian 12'
    assert d.disks[0].capacity == 10 * GiB
    assert d.disks[0].href.endswith('.vhd')


@pytest.mark.parametrize('vm_count', [1, 3])
def test_virtual_system_collection(vhd_file, vm_count):
    data = ovakit.ovf_descriptor([disk(vhd_file)], name='app',
                                 collection=True, vm_count=vm_count)
    assert b'VirtualSystemCollection' in data
    d = ovf.parse(data)
    assert d.name == 'app'
    assert [x.capacity for x in d.disks] == [10 * GiB]


@pytest.mark.parametrize('resource_type', [17, 19])
def test_disk_resource_types(vhd_file, tmp_path, resource_type):
    other = str(tmp_path / 'data.vhd')
    with open(other, 'wb') as f:
        f.write(b'\0')
    disks = [disk(other, boot=False, address=1, capacity=GiB,
                  resource_type=resource_type),
             disk(vhd_file, boot=False, address=0,
                  resource_type=resource_type)]
    d = ovf.parse(ovakit.ovf_descriptor(disks))
    # Neither says isBootable: the lowest AddressOnParent comes first.
    assert [x.address_on_parent for x in d.disks] == [0, 1]
    assert [x.capacity for x in d.disks] == [10 * GiB, GiB]


def test_boot_flag_decides(vhd_file, tmp_path):
    other = str(tmp_path / 'data.vhd')
    with open(other, 'wb') as f:
        f.write(b'\0')
    disks = [disk(other, boot=False, address=0, capacity=GiB),
             disk(vhd_file, boot=True, address=1)]
    d = ovf.parse(ovakit.ovf_descriptor(disks))
    assert d.disks[0].boot is True
    assert d.disks[0].capacity == 10 * GiB
    assert [x.boot for x in d.disks] == [True, False]


@pytest.mark.parametrize('units,scale', [('byte * 2^30', GiB),
                                         ('byte * 2^20', 2 ** 20),
                                         ('byte', 1),
                                         ('byte*2^30', GiB)])
def test_capacity_units(vhd_file, units, scale):
    data = ovakit.ovf_descriptor([disk(vhd_file, capacity=20 * GiB,
                                       capacity_units=units)])
    assert ('ovf:capacity="%d"' % (20 * GiB // scale)).encode() in data
    assert ovf.parse(data).disks[0].capacity == 20 * GiB


@pytest.mark.parametrize('units', ['kilobyte', 'byte * 3^7', 'bits',
                                   'byte * 2^'])
def test_capacity_units_unknown(vhd_file, units):
    data = ovakit.ovf_descriptor([disk(vhd_file)])
    data = data.replace(b'ovf:capacity=',
                        b'ovf:capacityAllocationUnits="%s" ovf:capacity='
                        % units.encode())
    refused(data, 'unit')


@pytest.mark.parametrize('capacity', ['-1', '12abc', '1e9', '0x100', ''])
def test_capacity_not_a_number(vhd_file, capacity):
    data = ovakit.ovf_descriptor([disk(vhd_file)])
    data = re.sub(rb'ovf:capacity="\d+"',
                  b'ovf:capacity="%s"' % capacity.encode(), data)
    refused(data, 'capacity|number')


@pytest.mark.parametrize('prefixes', [
    {'ovf': 'o', 'rasd': 'r', 'vssd': 'v', 'xenovf': 'x'},
    {'ovf': 'envelope'},
    {'ovf': ''},                      # OVF as the default namespace
])
def test_namespaces_matched_by_uri(vhd_file, prefixes):
    plain = ovakit.ovf_descriptor([disk(vhd_file, address=0)])
    renamed = ovakit.ovf_descriptor([disk(vhd_file, address=0)],
                                    prefixes=prefixes)
    assert b'<ovf:' not in renamed
    assert ovf.parse(renamed) == ovf.parse(plain)


def test_prefix_ovf_bound_to_another_uri_is_not_ovf(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file)])
    data = data.replace(b'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"',
                        b'xmlns:ovf="http://example.com/not-ovf"')
    refused(data)


def test_rasd_prefix_bound_elsewhere_loses_addresses(vhd_file, tmp_path):
    # Disk Items whose rasd elements are in another namespace are not
    # disk Items: the AddressOnParent must not be taken from them.
    data = ovakit.ovf_descriptor([disk(vhd_file, address=3, boot=True)])
    data = data.replace(ovakit.NS['rasd'].encode(), b'http://example.com/r')
    d = ovf.parse(data)
    assert d.disks[0].address_on_parent is None


# -- hostile XML ------------------------------------------------------------

def test_dtd_refused(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file)],
                                 doctype='<!DOCTYPE Envelope>')
    refused(data, 'DTD|doctype')


def test_billion_laughs_refused():
    lol = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + ''.join('<!ENTITY lol%d "%s">' % (i + 1, ('&lol%s;' % (
               i if i else '')) * 10) for i in range(9))
           + ']><ovf:Envelope xmlns:ovf="%s">&lol9;</ovf:Envelope>'
           % ovakit.NS['ovf'])
    refused(lol.encode())


def test_external_entity_not_read(tmp_path):
    secret = tmp_path / 'gxi-secret.txt'
    secret.write_text('top secret')
    xxe = ('<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file://%s">'
           ']><ovf:Envelope xmlns:ovf="%s"><ovf:References><ovf:File '
           'ovf:id="f" ovf:href="&x;"/></ovf:References></ovf:Envelope>'
           % (secret, ovakit.NS['ovf']))
    opened = []

    def hook(event, args):
        if event == 'open' and args and 'gxi-secret' in str(args[0]):
            opened.append(args[0])

    sys.addaudithook(hook)
    message = refused(xxe.encode())
    assert 'top secret' not in message
    assert opened == []


def test_entity_declaration_without_doctype_keyword_use(vhd_file):
    data = ovakit.ovf_descriptor(
        [disk(vhd_file)], doctype='<!DOCTYPE ovf:Envelope [<!ENTITY n "x">]>')
    refused(data)


@pytest.mark.parametrize('data', [
    b'', b'not xml', b'<ovf:Envelope', b'\xff\xfe\x00<',
    b'<?xml version="1.0"?><a><b></a>',
    b'\x89PNG\r\n\x1a\n' + b'\x00' * 64,
], ids=['empty', 'text', 'unclosed', 'bad-utf16', 'mismatched', 'binary'])
def test_not_xml(data):
    refused(data)


def test_root_not_envelope():
    refused(('<ovf:References xmlns:ovf="%s"/>' % ovakit.NS['ovf']).encode(),
            'Envelope')


def test_encrypted_package_refused(vhd_file):
    data = ovakit.ovf_descriptor(
        [disk(vhd_file)],
        extra_envelope='<ovf:SecuritySection><xenc:EncryptedData/>'
                       '</ovf:SecuritySection>')
    refused(data, 'encrypt')


# -- references ---------------------------------------------------------

@pytest.mark.parametrize('href', [
    'dir/disk.vhd', '../disk.vhd', '/etc/passwd', 'http://example.com/d.vhd',
    'file:///etc/passwd', 'C:\\disks\\d.vhd', 'https://h/x.vhd', '',
    'disk.vhd/..', 'a/./../../b.vhd',
])
def test_href_must_be_a_package_file(vhd_file, href):
    d = disk(vhd_file, href='placeholder.vhd')
    data = ovakit.ovf_descriptor([d]).replace(
        b'ovf:href="placeholder.vhd"',
        b'ovf:href="%s"' % href.encode())
    refused(data, 'href|name|path|url|file')


def test_no_disk(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file)])
    data = re.sub(rb'<ovf:Disk [^>]*/>', b'', data)
    refused(data, 'disk')


def test_no_references(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file)])
    data = re.sub(rb'<ovf:References>.*?</ovf:References>', b'', data)
    refused(data, 'file|reference')


def test_disk_names_unknown_file(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file)])
    data = re.sub(rb'ovf:fileRef="[^"]*"', b'ovf:fileRef="nope"', data)
    refused(data, 'nope|file')


def test_two_disks_one_file(vhd_file, tmp_path):
    other = str(tmp_path / 'other.vhd')
    with open(other, 'wb') as f:
        f.write(b'\0')
    d1 = disk(vhd_file, href='same.vhd')
    d2 = disk(other, href='same.vhd', boot=False, address=1)
    refused(ovakit.ovf_descriptor([d1, d2]))


@pytest.mark.parametrize('value,expected', [('Gzip', 'gzip'),
                                            ('gzip', 'gzip'),
                                            ('bzip2', 'bzip2'),
                                            ('identity', None)])
def test_compression(vhd_file, value, expected):
    data = ovakit.ovf_descriptor([disk(vhd_file, compression=value,
                                       href='d.vhd.gz')])
    assert ovf.parse(data).disks[0].compression == expected


@pytest.mark.parametrize('value', ['lzma', 'zstd', 'deflate'])
def test_unknown_compression_refused(vhd_file, value):
    data = ovakit.ovf_descriptor([disk(vhd_file, compression=value,
                                       href='d.vhd.x')])
    refused(data, 'compression')


def test_chunk_size(vhd_file):
    data = ovakit.ovf_descriptor([disk(vhd_file, chunk_size=1 << 20)])
    assert ovf.parse(data).disks[0].chunk_size == 1 << 20


@pytest.mark.parametrize('value', ['0', '-5', 'big', '1.5'])
def test_bad_chunk_size(vhd_file, value):
    data = ovakit.ovf_descriptor([disk(vhd_file, chunk_size=7)])
    data = data.replace(b'ovf:chunkSize="7"',
                        b'ovf:chunkSize="%s"' % value.encode())
    refused(data, 'chunk')


def test_descriptor_size_limit():
    data = sample() + b' ' * (17 << 20)
    refused(data, 'bytes|size|large')


def test_glance_sample_disk_is_vmdk():
    # The descriptor inside ganeti's OVA names a VMDK disk: parsed, but
    # the disk is not VHD.
    import tarfile
    path = os.path.join(ovakit.FIXTURES, 'ganeti-ova.ova')
    with tarfile.open(path) as tar:
        data = tar.extractfile('ganeti.ovf').read()
    d = ovf.parse(data)
    assert d.disks and not d.disks[0].is_vhd


@pytest.mark.parametrize('old,new', [
    (b'ovf:capacity="10485760"', 'ovf:capacity="\u00b2"'),
    (b'ovf:capacity="10485760"', 'ovf:capacity="\u0663"'),
    (b'<rasd:AddressOnParent>0<', '<rasd:AddressOnParent>\u00b2<'),
    (b'ovf:id="0"', 'ovf:id="\u00b2"'),
], ids=['capacity-superscript', 'capacity-arabic-indic', 'address', 'os-id'])
def test_non_ascii_digits(old, new):
    # str.isdigit() is true for these; int() rejects or reinterprets them.
    # Found by test_fuzz_package.
    data = sample().replace(old, new.encode())
    try:
        d = ovf.parse(data)
    except exception.InvalidPackage:
        return
    assert d.disks[0].capacity in (None, 10485760)
    assert d.disks[0].address_on_parent in (None, 0)


def test_oversized_descriptor_refused_before_parsing():
    # The parsed tree costs about ten times the text: the size is bounded.
    data = sample().replace(
        b'</ovf:Envelope>',
        b'<ovf:Info>x</ovf:Info>' * (ovf.MAX_DESCRIPTOR_SIZE // 20)
        + b'</ovf:Envelope>')
    assert len(data) > ovf.MAX_DESCRIPTOR_SIZE
    refused(data, 'more than the %d accepted' % ovf.MAX_DESCRIPTOR_SIZE)


def test_sample_sizing_and_platform():
    # The sample's own Info line says "64 MB RAM; 1 CPU(s)".
    d = ovf.parse(sample())
    assert d.vcpus == 1
    assert d.memory_bytes == 64 << 20
    assert dict(d.platform) == {'nx': 'false', 'pae': 'true', 'acpi': 'true',
                                'viridian': 'true', 'apic': 'true'}
    assert d.firmware is None


@pytest.mark.parametrize('params,firmware', [
    ('order=dc;firmware=uefi;', 'uefi'), ('firmware=bios', 'bios'),
    ('order=cd', None), ('firmware=coreboot', None)])
def test_firmware_from_hvm_boot_params(params, firmware):
    text = sample().decode('utf-8').replace(
        '</ovf:VirtualHardwareSection>',
        '<xenovf:VirtualSystemOtherConfigurationData Name="HVM_boot_params">'
        '<xenovf:Info>XenServer Specific Information</xenovf:Info>'
        '<xenovf:Value>%s</xenovf:Value>'
        '</xenovf:VirtualSystemOtherConfigurationData>'
        '</ovf:VirtualHardwareSection>' % params)
    assert ovf.parse(text.encode('utf-8')).firmware == firmware


@pytest.mark.parametrize('memory_item,expected', [
    ('<rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>', 64 << 30),
    ('<rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>', 64 << 20),
    ('<rasd:AllocationUnits>furlongs</rasd:AllocationUnits>', None),
])
def test_memory_units(memory_item, expected):
    text = sample().decode('utf-8').replace(
        '<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>',
        memory_item)
    assert ovf.parse(text.encode('utf-8')).memory_bytes == expected
