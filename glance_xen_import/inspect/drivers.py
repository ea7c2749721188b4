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

"""Names of the Windows drivers that matter when leaving Xen for KVM."""

import re

from glance_xen_import.inspect import xentools

# Every Xen PV service of every family and generation (xentools.py names
# the sources of each list).
ALL_XEN_SERVICES = xentools.ALL_SERVICES

# Device setup classes whose Upper/LowerFilters the Xen installers write
# (System and HDC); the storage classes are checked too, as XenBootFix's
# authors advise, since a filter whose service is gone stops the boot.
FILTERED_CLASSES = {
    '{4d36e97d-e325-11ce-bfc1-08002be10318}': 'System',
    '{4d36e96a-e325-11ce-bfc1-08002be10318}': 'HDC',
    '{4d36e967-e325-11ce-bfc1-08002be10318}': 'DiskDrive',
    '{4d36e97b-e325-11ce-bfc1-08002be10318}': 'SCSIAdapter',
}

# Installed-products (Uninstall) names and INF providers of Xen tools.
XEN_PRODUCT_PATTERN = xentools.PRODUCT_PATTERN
XEN_PROVIDER_PATTERN = xentools.PROVIDER_PATTERN

# virtio PCI device ids (vendor 1af4): legacy (transitional) and modern,
# as in virtio-win's INFs and virt-v2v's inject_virtio_win.
VIRTIO_DEVICE_IDS = {
    'viostor': ('1001', '1042'),
    'vioscsi': ('1004', '1048'),
    'netkvm': ('1000', '1041'),
}
VIRTIO_STORAGE = ('vioscsi', 'viostor')
# Storage drivers whose StartOverride XenBootFix deletes, plus the IDE
# channel driver and virtio's: Windows 8+ demotes any of them that no
# device used at the last boot, which on Xen is all of them.
STORAGE_SERVICES = ('stornvme', 'storahci', 'pciide', 'intelide', 'atapi',
                    'viostor', 'vioscsi')
VIRTIO_NETWORK = 'netkvm'
VIRTIO_CATALOGS = {name + '.cat': name for name in VIRTIO_DEVICE_IDS}


def virtio_driver_for_pci_id(device_id):
    """viostor/vioscsi/netkvm for a 'PCI#VEN_1AF4&DEV_1001...' name."""
    match = re.search(r'ven_1af4&dev_([0-9a-f]{4})', device_id.lower())
    if not match:
        return None
    for name, ids in VIRTIO_DEVICE_IDS.items():
        if match.group(1) in ids:
            return name
    return None


def package_family(provider, catalog):
    """'xen', a virtio driver name, or None for an INF's [Version]."""
    catalog = (catalog or '').lower()
    if catalog in VIRTIO_CATALOGS:
        return VIRTIO_CATALOGS[catalog]
    stem = catalog.rsplit('.', 1)[0]
    if stem in ALL_XEN_SERVICES:
        return 'xen'
    if provider and XEN_PROVIDER_PATTERN.search(provider):
        return 'xen'
    return None
