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

"""inspect_guest on the guest disks built by tools/fixtures/make_guests.py.

The disks were made by sfdisk, mkntfs/wimlib, mkfs.*, LVM and hivex; the
expected values below are what the builder put there, and where a reader
we did not write is installed (sleuthkit, hivex, debugfs, sfdisk) the
tests also read the disk with it and compare.
"""

import json
import lzma
import os
import re
import shutil
import subprocess
import types

import pytest

from glance_xen_import import exception
from glance_xen_import import inspect

GUESTS_DIR = os.path.join(os.path.dirname(__file__), os.pardir, 'fixtures',
                          'guests')
ESP_TYPES = ('EF', 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B')
SECTOR = 512


def layout_json(name):
    with open(os.path.join(GUESTS_DIR, name + '.layout.json')) as f:
        return json.load(f)


def layout(name):
    """A DiskLayout-shaped object from the builder's sfdisk --json."""
    data = layout_json(name)
    if data['sfdisk'] is None:
        return types.SimpleNamespace(
            scheme='none', partitions=(), filesystem=data['filesystem'],
            disk_signature=None, disk_guid=None)
    table = data['sfdisk']['partitiontable']
    gpt = table['label'] == 'gpt'
    partitions = []
    for entry in table['partitions']:
        number = int(re.search(r'(\d+)$', entry['node']).group(1))
        partitions.append(types.SimpleNamespace(
            number=number, start=entry['start'] * SECTOR,
            size=entry['size'] * SECTOR, type_id=entry['type'],
            name=entry.get('name'), bootable=entry.get('bootable', False),
            filesystem=data['filesystems'].get(str(number)),
            is_esp=entry['type'].upper() in ESP_TYPES))
    return types.SimpleNamespace(
        scheme='gpt' if gpt else 'mbr', partitions=tuple(partitions),
        filesystem=None,
        disk_signature=None if gpt else int(table['id'], 16),
        disk_guid=table['id'].lower() if gpt else None)


def unpack(name, directory):
    path = os.path.join(str(directory), name + '.raw')
    if not os.path.exists(path):
        with lzma.open(os.path.join(GUESTS_DIR, name + '.raw.xz')) as src:
            with open(path, 'wb') as dst:
                shutil.copyfileobj(src, dst)
    return path


def package(system_type='hvm-3.0-unknown'):
    return types.SimpleNamespace(virtual_system_type=system_type,
                                 os_id=None, os_description=None)


PV_PACKAGE = 'xen-3.0-unknown'


@pytest.fixture(scope='module')
def disks(tmp_path_factory):
    directory = tmp_path_factory.mktemp('guests')

    def get(name):
        return unpack(name, directory)
    return get


@pytest.fixture(scope='module')
def inspected(disks):
    cache = {}

    def get(name, system_type='hvm-3.0-unknown'):
        key = (name, system_type)
        if key not in cache:
            cache[key] = inspect.inspect_guest(disks(name), layout(name),
                                               package(system_type))
        return cache[key]
    return get


def _tool(name):
    if shutil.which(name) is None:
        pytest.skip('%s is not installed (independent reader)' % name)


def _icat(image, sector, path, tmp_path):
    """Extract a file with sleuthkit (by its fls path) into tmp_path."""
    _tool('fls')
    _tool('icat')
    listing = subprocess.run(
        ['fls', '-r', '-p', '-o', str(sector), image], check=True,
        stdout=subprocess.PIPE, text=True).stdout
    for line in listing.splitlines():
        meta, _, name = line.partition('\t')
        if name.lower() == path.lower():
            inode = meta.split()[-1].rstrip(':')
            out = tmp_path / os.path.basename(path)
            with open(out, 'wb') as f:
                subprocess.run(['icat', '-o', str(sector), image, inode],
                               check=True, stdout=f)
            return str(out)
    raise AssertionError('%s not found by fls' % path)


def _hivexget(hive, key, value):
    _tool('hivexget')
    return subprocess.run(['hivexget', hive, key, value], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()


# -- the fixtures themselves --------------------------------------------------

ALL_GUESTS = ('win2008r2-xen', 'win7-vioscsi', 'win2019-uefi',
              'win2008-unclean', 'centos6-xen', 'debian12', 'rocky9-uefi',
              'ubuntu-pv-whole', 'data-only')


@pytest.mark.parametrize('name', ALL_GUESTS)
def test_fixture_is_small_and_layout_matches_sfdisk(name, disks):
    compressed = os.path.join(GUESTS_DIR, name + '.raw.xz')
    assert os.path.getsize(compressed) < 300 * 1024
    data = layout_json(name)
    image = disks(name)
    assert os.path.getsize(image) == data['size']
    if data['sfdisk'] is None:
        return
    _tool('sfdisk')
    now = json.loads(subprocess.run(['sfdisk', '--json', image], check=True,
                                    stdout=subprocess.PIPE).stdout)
    for key in ('label', 'id'):
        assert now['partitiontable'][key] == data['sfdisk'][
            'partitiontable'][key]
    assert [(p['start'], p['size']) for p in now['partitiontable'][
        'partitions']] == [(p['start'], p['size']) for p in data['sfdisk'][
            'partitiontable']['partitions']]


# -- Windows ------------------------------------------------------------------

def test_windows_with_xen_drivers(inspected):
    guest = inspected('win2008r2-xen')
    assert guest.os_type == 'windows'
    assert guest.distro == 'windows'
    assert guest.version == '6.1'
    assert guest.product_name == 'Windows Server 2008 R2 Standard'
    assert guest.architecture == 'x86_64'
    win = guest.windows
    assert win.location == 'partition 2'
    assert win.build == '7601'
    assert win.installation_type == 'Server'
    # Select\Current is 2: ControlSet001 (Xen off, vioscsi ready) is stale.
    assert win.control_set == 'ControlSet002'
    assert win.enabled_xen_services == [
        'xenagent', 'xenbus', 'xenfilt', 'xeniface', 'xennet', 'xenvbd',
        'xenvif']
    assert [(f.class_guid, f.value, f.driver) for f in win.xen_filters] == [
        ('{4d36e97d-e325-11ce-bfc1-08002be10318}', 'UpperFilters',
         'XENFILT')]
    assert win.xen_force_unplug
    assert win.xen_products == ['Citrix XenServer Windows Management Agent',
                                'Citrix Xen Windows x64 PV Drivers']
    assert [(p.inf, p.family, p.catalog, p.provider)
            for p in win.driver_packages] == [
        ('oem2.inf', 'xen', 'xenbus.cat', 'Citrix Systems, Inc.'),
        ('oem3.inf', 'xen', 'xenvbd.cat', 'Citrix Systems, Inc.'),
        ('oem7.inf', 'viostor', 'viostor.cat', 'Red Hat, Inc.')]
    assert win.virtio['viostor'].staged
    assert win.virtio['viostor'].service.start == 3
    assert not win.virtio_boot_ready('viostor')
    assert not win.virtio_boot_ready('vioscsi')
    assert not win.virtio_available('netkvm')
    assert not win.dirty_hives and not win.hibernated
    assert len(win.bcd) == 1
    assert win.bcd[0].location == 'partition 1:/Boot/BCD'
    assert not win.bcd_mismatch
    checked = [d for d in win.bcd[0].devices if d.checked]
    assert [(d.element, d.partition, d.disk) for d in checked] == [
        ('11000001', str(2048 * SECTOR), '5ca1ab1e'),
        ('11000001', str(6144 * SECTOR), '5ca1ab1e'),
        ('21000001', str(6144 * SECTOR), '5ca1ab1e')]
    assert all(d.matches for d in checked)
    assert guest.boot_code is True
    assert json.loads(json.dumps(guest.to_dict()))['windows'][
        'enabled_xen_services'] == win.enabled_xen_services


def test_windows_facts_agree_with_sleuthkit_and_hivex(inspected, disks,
                                                      tmp_path):
    image = disks('win2008r2-xen')
    win = inspected('win2008r2-xen').windows
    system = _icat(image, 6144, 'Windows/System32/config/SYSTEM', tmp_path)
    current = int(_hivexget(system, 'Select', 'Current'))
    assert win.control_set == 'ControlSet%03d' % current
    for state in win.xen_services:
        assert int(_hivexget(system, '%s\\Services\\%s' % (
            win.control_set, state.name), 'Start')) == state.start
    filters = _hivexget(
        system, win.control_set + '\\Control\\Class\\'
        '{4d36e97d-e325-11ce-bfc1-08002be10318}', 'UpperFilters')
    assert [f.driver for f in win.xen_filters] == filters.split()
    software = _icat(image, 6144, 'Windows/System32/config/SOFTWARE',
                     tmp_path)
    assert _hivexget(software, 'Microsoft\\Windows NT\\CurrentVersion',
                     'CurrentVersion') == win.current_version


def test_windows_vioscsi_boot_ready(inspected):
    guest = inspected('win7-vioscsi')
    win = guest.windows
    assert guest.version == '6.1' and guest.architecture == 'i686'
    assert win.installation_type == 'Client'
    assert win.virtio_boot_ready('vioscsi')
    assert win.virtio['vioscsi'].device_ids == [
        'PCI#VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00']
    # viostor is boot-start but no critical device entry binds it (NT 6.1).
    assert win.virtio['viostor'].service.start == 0
    assert not win.virtio_boot_ready('viostor')
    assert win.virtio_available('netkvm')
    # Xen drivers installed but disabled, no filters: nothing enabled.
    assert {s.name for s in win.xen_services} == {'xenbus', 'xenfilt'}
    assert win.enabled_xen_services == []
    assert not win.xen_filters and not win.xen_force_unplug
    assert win.bcd[0].location == 'partition 1:/Boot/BCD'
    assert not win.bcd_mismatch


def test_windows_uefi_viostor_from_driver_database(inspected):
    guest = inspected('win2019-uefi')
    win = guest.windows
    assert guest.version == '10.0'
    assert win.current_version == '6.3' and win.build == '17763'
    assert win.location == 'partition 3'
    assert win.virtio_boot_ready('viostor')
    assert win.virtio['viostor'].device_ids == [
        'VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00',
        'VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01']
    # vioscsi is bound, but Windows demoted it (StartOverride 0 = 3).
    assert win.virtio['vioscsi'].start_override == 3
    assert not win.virtio_boot_ready('vioscsi')
    # netkvm is only in the driver store: enough for a PnP NIC.
    assert win.virtio['netkvm'].service is None
    assert win.virtio_available('netkvm')
    assert guest.efi_loaders == [
        'partition 1:/EFI/Boot/bootx64.efi',
        'partition 1:/EFI/Microsoft/Boot/bootmgfw.efi']
    store, = win.bcd
    assert store.location == 'partition 1:/EFI/Microsoft/Boot/BCD'
    checked = [d for d in store.devices if d.checked]
    assert {(d.style, d.partition, d.disk) for d in checked} == {
        ('gpt', 'e5e5e5e5-0000-4000-8000-000000000001',
         '5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b'),
        ('gpt', 'e5e5e5e5-0000-4000-8000-000000000003',
         '5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b')}
    assert all(d.matches for d in checked)


def test_esp_loaders_agree_with_sleuthkit(inspected, disks):
    _tool('fls')
    image = disks('win2019-uefi')
    listing = subprocess.run(['fls', '-r', '-p', '-o', '2048', image],
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout
    efi = sorted('partition 1:/' + line.split('\t')[1]
                 for line in listing.splitlines()
                 if line.lower().endswith('.efi') and
                 line.split('\t')[1].startswith('EFI/'))
    assert inspected('win2019-uefi').efi_loaders == efi


def test_windows_unclean_shutdown_and_foreign_bcd(inspected):
    win = inspected('win2008-unclean').windows
    assert win.version == '6.0'
    assert win.dirty_hives == ['SYSTEM']
    assert win.hibernated and win.hiberfile_signature == 'HIBR'
    assert win.bcd_mismatch
    assert {d.disk for d in win.bcd[0].devices if d.checked} == {'0badf00d'}
    assert not win.virtio_boot_ready('viostor')
    assert not win.virtio_boot_ready('vioscsi')


def test_dirty_hive_agrees_with_raw_header(inspected, disks, tmp_path):
    image = disks('win2008-unclean')
    system = _icat(image, 2048, 'Windows/System32/config/SYSTEM', tmp_path)
    with open(system, 'rb') as f:
        header = f.read(12)
    assert header[:4] == b'regf'
    assert header[4:8] != header[8:12]
    software = _icat(image, 2048, 'Windows/System32/config/SOFTWARE',
                     tmp_path)
    with open(software, 'rb') as f:
        header = f.read(12)
    assert header[4:8] == header[8:12]


def test_bcd_mismatch_when_disk_signature_changes(disks):
    # The same disk, but the layout says the signature is what the BCD
    # has: then it matches. Proves the comparison reads the layout.
    name = 'win2008-unclean'
    changed = layout(name)
    changed.disk_signature = 0x0BADF00D
    guest = inspect.inspect_guest(disks(name), changed, package())
    assert not guest.windows.bcd_mismatch


# -- Linux --------------------------------------------------------------------

def test_centos6_pv_guest_on_lvm(inspected):
    guest = inspected('centos6-xen', PV_PACKAGE)
    assert guest.os_type == 'linux'
    assert (guest.distro, guest.version) == ('centos', '6.10')
    assert guest.pv_guest
    linux = guest.linux
    assert linux.location == 'partition 2/VolGroup/lv_root'
    assert linux.release_file == '/etc/centos-release'
    assert linux.boot_location == 'partition 1'
    assert [r.split(': ', 1)[1] for r in linux.xvd_references] == [
        '/dev/xvda1 /boot ext2 defaults 1 2',
        '/dev/xvdb1 swap swap defaults 0 0']
    assert len(linux.xen_console) == 1
    assert 'console=hvc0' in linux.xen_console[0]
    assert [(k.name, k.pv_only) for k in linux.kernels] == [
        ('vmlinuz-2.6.18-419.el5xen', True)]
    assert linux.pv_only_kernel
    assert guest.boot_code is False


def test_centos6_root_agrees_with_debugfs(inspected, disks):
    _tool('debugfs')
    image = disks('centos6-xen')
    # LVM's own text metadata says where the extents start.
    with open(image, 'rb') as f:
        f.seek(8192 * SECTOR)
        metadata = f.read(1024 * 1024)
    pe_start = int(re.search(rb'pe_start = (\d+)', metadata).group(1))
    offset = 8192 * SECTOR + pe_start * SECTOR
    text = subprocess.run(
        ['debugfs', '-R', 'cat /etc/centos-release',
         '%s?offset=%d' % (image, offset)], check=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True).stdout
    assert inspected('centos6-xen').linux.release_text == text.strip()


def test_debian_needs_nothing(inspected, disks):
    guest = inspected('debian12')
    assert (guest.distro, guest.version) == ('debian', '12')
    linux = guest.linux
    # /etc/os-release is a link to ../usr/lib/os-release.
    assert linux.release_file == '/etc/os-release'
    assert linux.os_release['PRETTY_NAME'] == (
        'Debian GNU/Linux 12 (bookworm)')
    # The commented console=hvc0 in /etc/default/grub does not count.
    assert linux.xvd_references == [] and linux.xen_console == []
    assert [(k.name, k.pv_only) for k in linux.kernels] == [
        ('vmlinuz-6.1.0-13-amd64', False)]
    assert guest.boot_code is True
    _tool('debugfs')
    text = subprocess.run(
        ['debugfs', '-R', 'cat /usr/lib/os-release',
         '%s?offset=%d' % (disks('debian12'), 2048 * SECTOR)], check=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    assert 'VERSION_ID="%s"' % guest.version in text


def test_debian_initramfs_has_kvm_storage(inspected, disks, tmp_path):
    linux = inspected('debian12').linux
    entry = linux.boot_entry
    assert (entry.kind, entry.source, entry.kernel, entry.initrds) == (
        'grub2', 'partition 1:/boot/grub/grub.cfg',
        '/boot/vmlinuz-6.1.0-13-amd64', ['/boot/initrd.img-6.1.0-13-amd64'])
    summary = linux.initramfs
    assert summary.complete and summary.compressions == ['gzip']
    assert summary.generator == 'initramfs-tools'
    assert linux.kvm_buses == ['virtio-scsi', 'virtio-blk', 'ide']
    # The same image, taken out by debugfs and listed by lsinitramfs.
    _tool('debugfs')
    _tool('lsinitramfs')
    out = tmp_path / 'initrd.img'
    subprocess.run(
        ['debugfs', '-R', 'dump /boot/initrd.img-6.1.0-13-amd64 %s' % out,
         '%s?offset=%d' % (disks('debian12'), 2048 * SECTOR)], check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = subprocess.run(['lsinitramfs', str(out)], check=True,
                           stdout=subprocess.PIPE, text=True).stdout.split()
    modules = [n for n in names if n.endswith('.ko')]
    assert summary.modules == len(modules) == 13


def test_rocky_on_xfs_with_uefi(inspected, disks, tmp_path):
    guest = inspected('rocky9-uefi')
    assert (guest.distro, guest.version) == ('rocky', '9.3')
    assert guest.linux.location == 'partition 2'
    assert guest.efi_loaders == ['partition 1:/EFI/BOOT/BOOTX64.EFI',
                                 'partition 1:/EFI/rocky/shimx64.efi']
    assert [k.name for k in guest.linux.kernels] == [
        'vmlinuz-5.14.0-362.8.1.el9_3.x86_64']
    assert not guest.linux.xvd_references
    _tool('xfs_db')
    part = tmp_path / 'root.xfs'
    with open(disks('rocky9-uefi'), 'rb') as src, open(part, 'wb') as dst:
        src.seek(6144 * SECTOR)
        dst.write(src.read(32768 * SECTOR))
    listing = subprocess.run(
        ['xfs_db', '-r', '-c', 'path /etc', '-c', 'ls', str(part)],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    assert 'os-release' in listing


def test_partitionless_pv_guest(inspected):
    guest = inspected('ubuntu-pv-whole', PV_PACKAGE)
    assert (guest.distro, guest.version) == ('ubuntu', '14.04')
    assert guest.linux.location == 'disk'
    assert len(guest.linux.xvd_references) == 2
    assert guest.linux.xen_console
    assert not guest.linux.pv_only_kernel
    assert guest.boot_code is False


def test_no_operating_system(inspected):
    guest = inspected('data-only')
    assert guest.os_type is None and guest.windows is None
    assert guest.linux is None
    assert [(v.location, v.kind) for v in guest.volumes] == [
        ('partition 1', 'fat')]
    assert guest.notes == ['no operating system found on 1 readable '
                           'volume(s)']
    assert json.dumps(guest.to_dict())


# -- the contract -------------------------------------------------------------

def test_unreadable_disk_is_not_an_error(tmp_path):
    image = tmp_path / 'zeros.raw'
    image.write_bytes(b'\0' * 1024 * 1024)
    guest = inspect.inspect_guest(str(image), layout('ubuntu-pv-whole'),
                                  package())
    assert guest.os_type is None
    assert guest.notes


def test_garbage_partition_is_not_an_error(tmp_path, disks):
    # The Windows layout over a disk of noise: nothing readable, no raise.
    image = tmp_path / 'noise.raw'
    size = os.path.getsize(disks('win2008r2-xen'))
    image.write_bytes(os.urandom(size))
    guest = inspect.inspect_guest(str(image), layout('win2008r2-xen'),
                                  package())
    assert guest.os_type is None


def test_partition_beyond_the_image_is_noted(tmp_path, disks):
    broken = layout('debian12')
    part = broken.partitions[0]
    part.start = 10 ** 12
    guest = inspect.inspect_guest(disks('debian12'), broken, package())
    assert guest.os_type is None
    assert 'partition 1 lies outside the image' in guest.notes


def test_truncated_image_still_reads_what_is_there(tmp_path, disks):
    # A filesystem cut short by a truncated disk: never an exception.
    image = tmp_path / 'short.raw'
    with open(disks('win2008r2-xen'), 'rb') as f:
        image.write_bytes(f.read(7 * 1024 * 1024))
    guest = inspect.inspect_guest(str(image), layout('win2008r2-xen'),
                                  package())
    assert isinstance(guest.to_dict(), dict)


def test_misuse_raises_guest_error(tmp_path, disks):
    with pytest.raises(exception.GuestError):
        inspect.inspect_guest(disks('debian12'), None, package())
    with pytest.raises(exception.GuestError):
        inspect.inspect_guest(str(tmp_path / 'missing.raw'),
                              layout('debian12'), package())


def test_reinspection_gives_equal_facts(disks):
    # A fixup re-runs inspection on the changed disk; on an unchanged
    # one the facts must be the same.
    first = inspect.inspect_guest(disks('win2008r2-xen'),
                                  layout('win2008r2-xen'), package())
    second = inspect.inspect_guest(disks('win2008r2-xen'),
                                   layout('win2008r2-xen'), package())
    assert first.to_dict() == second.to_dict()


def test_with_the_partitions_module_when_present(disks):
    # The layout the pipeline will pass: the real partition reader's.
    from glance_xen_import.formats import partitions
    for name in ALL_GUESTS:
        with open(disks(name), 'rb') as image:
            real = partitions.read_layout(image,
                                          os.path.getsize(disks(name)))
        guest = inspect.inspect_guest(disks(name), real, package())
        expected = inspect.inspect_guest(disks(name), layout(name),
                                         package())
        assert guest.to_dict() == expected.to_dict()
