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

"""Every disk of a VM, and XVAs, through a real Glance.

The disk is chosen with the image property ``xen_import_disk`` set at
image-create; the bytes are compared with qemu-img's reading of each VHD,
or with the disk an XVA was made from. XVAs are imported from a file and
straight from a loopback stand-in for a XenServer host's /export URL.
"""

import filecmp
import os

import pytest

from tests.functional import glance_server
from tests import ovakit
from tests import xvakit


@pytest.fixture(scope='session')
def two_disk_vm(workdir, disks):
    """An OVA of the 'dynamic' disk (boot) and the 'fixed' one (data)."""
    boot = ovakit.OvaDisk(disks['dynamic'].vhd, boot=True, address=0)
    data = ovakit.OvaDisk(disks['fixed'].vhd, boot=False, address=1)
    path = os.path.join(workdir, 'two-disk-vm.ova')
    ovakit.make_ova(path, [data, boot], name='two disks')
    return path, [(boot, disks['dynamic']), (data, disks['fixed'])]


def _import(server, path, *properties):
    argv = ['image-create-via-import', '--name', 'vm-disk',
            '--container-format', 'ova', '--disk-format', 'vhd',
            '--file', path]
    for prop in properties:
        argv += ['--property', prop]
    return glance_server.image_id(server.glance(*argv).stdout)


def _downloaded_equals(server, image_id, expected, tmp_path):
    out = str(tmp_path / ('%s.download' % image_id))
    server.glance('image-download', '--file', out, image_id)
    try:
        return filecmp.cmp(out, expected, shallow=False)
    finally:
        os.remove(out)


@pytest.mark.parametrize('selector,position', [
    (None, 0), ('1', 1), ('HREF1', 1), ('HREF0', 0)])
def test_each_disk_becomes_its_own_image(glance, two_disk_vm, tmp_path,
                                         selector, position):
    path, vm = two_disk_vm
    props = []
    if selector is not None:
        if selector.startswith('HREF'):
            selector = vm[int(selector[4:])][0].href
        props = ['xen_import_disk=%s' % selector]
    image_id = _import(glance, path, *props)
    image, task = glance.wait_for_import(image_id)
    assert task['status'] == 'success', (task, glance.logs())
    ref, disk = vm[position]
    assert image['status'] == 'active'
    assert image['size'] == disk.size
    assert _downloaded_equals(glance, image_id, disk.expected, tmp_path)
    assert image['xen_import_disk_position'] == str(position)
    assert image['xen_import_vm_disks'] == '0:boot:%s:%d,1:data:%s:%d' % (
        vm[0][0].href, vm[0][1].size, vm[1][0].href, vm[1][1].size)
    if selector is not None:
        assert image['xen_import_disk'] == selector
    assert glance.staged_files(image_id) == []


def test_unknown_disk_is_refused_with_the_list(glance, two_disk_vm):
    path, vm = two_disk_vm
    image_id = _import(glance, path, 'xen_import_disk=7')
    image, task = glance.wait_for_import(image_id)
    assert task['status'] == 'failure'
    assert image['status'] == 'queued'
    assert ('xen-ova: xen_import_disk=7: the VM has 2 disk(s), at positions '
            '0 to 1: 0 (%s' % vm[0][0].href) in task['message']
    assert glance.staged_files(image_id) == []


# -- XVA -------------------------------------------------------------------

@pytest.fixture(scope='session')
def xva_vm(workdir, disks, xapi_host):
    """A two-disk UEFI VM as xapi exports it, served at its /export URL."""
    vm_disks = [xvakit.Disk(disks['tap'].expected, 'system'),
                xvakit.Disk(disks['fixed'].expected, 'data')]
    path = os.path.join(workdir, 'vm.xva')
    xvakit.make_xva(path, vm_disks, vm=xvakit.Vm(firmware='uefi'),
                    keepalive_before={0: [2]})
    uuid = '5f0c3e55-1b7e-4bb8-9a5b-2c0e5b7d3a11'
    xapi_host.add_vm(uuid, path)
    return path, uuid, vm_disks


def _assert_xva_image(server, image_id, vm_disk, position, tmp_path):
    image, task = server.wait_for_import(image_id)
    assert task['status'] == 'success', (task, server.logs())
    assert image['status'] == 'active'
    assert (image['disk_format'], image['container_format']) == ('raw',
                                                                 'bare')
    assert image['size'] == vm_disk.size
    assert _downloaded_equals(server, image_id, vm_disk.raw, tmp_path)
    assert image['xen_import_source'] == 'xva:xxhash'
    assert image['hw_firmware_type'] == 'uefi'
    assert image['xen_import_disk_position'] == str(position)
    assert server.staged_files(image_id) == []
    return image


@pytest.mark.parametrize('method', ['xen-ova', 'glance-direct'])
def test_xva_file_imports(glance, xva_vm, tmp_path, method):
    path, _uuid, vm_disks = xva_vm
    image_id = glance_server.image_id(glance.glance(
        'image-create-via-import', '--name', 'xva-' + method,
        '--import-method', method, '--container-format', 'ova',
        '--disk-format', 'raw', '--file', path).stdout)
    _assert_xva_image(glance, image_id, vm_disks[0], 0, tmp_path)


@pytest.mark.parametrize('method,compression', [
    ('web-download', None), ('xen-ova', 'zstd'), ('web-download', 'gzip')])
def test_xva_straight_from_the_xapi_export_url(glance, xapi_host, xva_vm,
                                               tmp_path, method,
                                               compression):
    _path, uuid, vm_disks = xva_vm
    served = len(xapi_host.requests)
    uri = xapi_host.export_url(uuid, compression)
    if method == 'web-download':
        image_id = glance_server.image_id(glance.glance(
            'image-create-via-import', '--name', 'xapi-export',
            '--import-method', method, '--container-format', 'ova',
            '--disk-format', 'raw', '--property', 'xen_import_disk=data',
            '--uri', uri).stdout)
    else:
        # glanceclient only sends a uri with web-download, so this is REST.
        status, _, image = glance.api('POST', '/v2/images', {
            'name': 'xapi-export', 'container_format': 'ova',
            'disk_format': 'raw', 'xen_import_disk': 'data'})
        assert status == 201
        image_id = image['id']
        status, _, body = glance.api(
            'POST', '/v2/images/%s/import' % image_id,
            {'method': {'name': method, 'uri': uri}})
        assert status == 202, body
    _assert_xva_image(glance, image_id, vm_disks[1], 1, tmp_path)
    # Glance fetched the export itself, once, with the session given.
    assert xapi_host.requests[served:] == [dict(
        session_id=xapi_host.session_id, uuid=uuid,
        **({'use_compression': compression} if compression else {}))]


def test_xapi_export_refused_by_the_host_fails_the_import(glance, xapi_host,
                                                          xva_vm):
    _path, uuid, _vm_disks = xva_vm
    image_id = glance_server.image_id(glance.glance(
        'image-create-via-import', '--name', 'xapi-bad-session',
        '--import-method', 'web-download', '--container-format', 'ova',
        '--disk-format', 'raw',
        '--uri', xapi_host.export_url(uuid, session_id='OpaqueRef:old'))
        .stdout)
    image, task = glance.wait_for_import(image_id)
    assert task['status'] == 'failure'
    assert image['status'] == 'queued'
    assert glance.staged_files(image_id) == []
