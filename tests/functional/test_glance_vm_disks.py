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

"""Each disk of a two-disk VM becomes its own image through a real Glance.

The disk is chosen with the image property ``xen_import_disk`` set at
image-create; the bytes are compared with qemu-img's reading of each VHD.
"""

import filecmp
import os

import pytest

from tests.functional import glance_server
from tests import ovakit


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
