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

"""A Xen Linux guest imported through a real glance-api, then booted.

The image is created with the ``glance`` CLI and the ``xen-ova`` import
method, downloaded back, and booted with the properties Glance's API
returns for it -- what Nova would do.
"""

import os

import pytest

from tests.boot import runs
from tests.functional import glance_server

PROPERTY_PREFIXES = ('hw_', 'os_', 'xen_import_')


# xen-names: Xen device names and consoles edited; xen-initramfs and
# dracut-xen: an initramfs (initramfs-tools, dracut) with only
# xen-blkfront, repaired.
@pytest.mark.parametrize('name', ['xen-names', 'xen-initramfs',
                                  'dracut-xen'])
def test_xen_guest_imported_through_glance_boots(name, glance, guests,
                                                 boot_dir, accel, boots):
    # ``boots`` is asked for so the queued CLI boots run meanwhile.
    created = glance.glance(
        'image-create-via-import', '--name', name,
        '--file', guests[name].ova, '--import-method', 'xen-ova',
        '--container-format', 'bare', '--disk-format', 'raw', timeout=600)
    image_id = glance_server.image_id(created.stdout)
    image, task = glance.wait_for_import(image_id, timeout=600)
    assert task['status'] == 'success', (task, glance.logs())
    assert image['status'] == 'active'
    properties = {k: v for k, v in image.items()
                  if k.startswith(PROPERTY_PREFIXES)}

    assert properties['xen_import_fixup_required'] == 'false', properties
    stored = os.path.join(boot_dir, 'glance-%s.raw' % name)
    glance.glance('image-download', '--file', stored, image_id, timeout=600)
    assert os.path.getsize(stored) == image['size']
    result = runs.boot_and_record(
        stored, properties,
        os.path.join(boot_dir, 'glance-%s.serial.log' % name),
        accel, '%s (glance)' % name)
    runs.assert_booted_on_named_bus(properties, result)
