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

"""Linux guests from Xen, converted by the CLI, booted in QEMU.

Each guest (tests/boot/guestkit.py) is converted with ``glance-xen-import
convert --json`` and booted with the devices its reported properties mean.
A boot counts only when the guest's own marker says ``/`` is the device
its fstab names, mounted read-write.
"""

import re

import pytest

from tests.boot import lvmguest
from tests.boot import runs
from tests import ovakit


def assert_booted(run):
    runs.assert_booted_on_named_bus(run.conversion.properties, run.boot)


def assert_dropped_to_shell(run, device):
    log = run.boot.log()
    assert run.boot.marker is None, run.boot.describe()
    assert re.search(r'ALERT!\s+%s does not exist\.\s+Dropping to a shell'
                     % re.escape(device), log), run.boot.describe()


def assert_unchanged(run, guest):
    assert ovakit.sparse_first_difference(run.conversion.raw,
                                          guest.raw) is None


def reasons(properties):
    return properties.get('xen_import_fixup_reasons', '').split(',')


def assert_flagged_and_unchanged(run, guest, reason):
    """Report mode: the reason is given and the disk is byte-identical."""
    properties = run.conversion.properties
    assert properties['xen_import_fixup_required'] == 'true'
    assert reason in reasons(properties)
    assert_unchanged(run, guest)
    return properties


def assert_initramfs_repaired(run, generator):
    properties = run.conversion.properties
    assert properties['xen_import_fixup_required'] == 'false'
    assert 'initramfs-drivers' in properties[
        'xen_import_fixups_applied'].split(',')
    repair = run.conversion.report['linux_fixup']['initramfs']
    assert repair['generator'] == generator
    bus = (properties['hw_disk_bus'], properties.get('hw_scsi_model'))
    assert runs.BUS_DRIVER[bus] in repair['added_modules']
    return repair


# -- xen-names: /dev/xvda1 in fstab and grub.cfg, hvc0, Xen MAC rules ------

def test_xen_names_fixed_by_default_boots(boots):
    run = boots.result('xen-names', 'auto')
    assert_booted(run)


def test_xen_names_report_mode_leaves_the_disk_alone(boots, guests):
    run = boots.result('xen-names', 'report')
    assert_flagged_and_unchanged(run, guests['xen-names'], 'xvd-device-names')


def test_xen_names_unfixed_stops_in_the_initramfs(boots):
    # What the fixup is for, and proof the harness sees a failed boot.
    run = boots.result('xen-names', 'report')
    assert_dropped_to_shell(run, '/dev/xvda1')


def test_xen_names_from_a_compressed_xva_boots(boots):
    # The same guest exported by xapi (xe vm-export compress=zstd): the
    # boot disk comes out of the XVA, is fixed and boots.
    run = boots.result('xen-names', 'xva')
    properties = run.conversion.properties
    assert properties['xen_import_source'] == 'xva:xxhash'
    assert properties['xen_import_disk_position'] == '0'
    assert 'device-names:sd' in properties['xen_import_fixups_applied']
    assert_booted(run)


# -- xen-initramfs: an initramfs holding only xen-blkfront ---------------

# initramfs-tools MODULES=list, or dracut (what its host-only mode builds
# on Xen), with xen-blkfront as the only storage driver: the import adds
# the named bus's drivers from the guest's own module tree, loaded by udev
# and conf/modules or rd.driver.pre, and the guest mounts its root there.
@pytest.mark.parametrize('name, generator', [
    ('xen-initramfs', 'initramfs-tools'), ('dracut-xen', 'dracut')])
def test_xen_only_initramfs_is_repaired_by_default_and_boots(boots, name,
                                                             generator):
    run = boots.result(name, 'auto')
    assert_initramfs_repaired(run, generator)
    assert_booted(run)


def test_xen_only_initramfs_in_report_mode_is_flagged(boots, guests):
    run = boots.result('xen-initramfs', 'report')
    properties = assert_flagged_and_unchanged(
        run, guests['xen-initramfs'], 'initramfs-lacks-kvm-storage')
    missing = [d.replace('-', '_') for d in
               properties['xen_import_missing_drivers'].split(',')]
    bus = (properties['hw_disk_bus'], properties.get('hw_scsi_model'))
    assert runs.BUS_DRIVER[bus] in missing


def test_xen_only_initramfs_unrepaired_does_not_boot(boots, guests):
    # The flag is honest, and the harness sees this failure.
    run = boots.result('xen-initramfs', 'report')
    assert_dropped_to_shell(run, 'UUID=%s' % guests['xen-initramfs'].fs_uuid)


# -- guests that need nothing ---------------------------------------------

def test_clean_guest_is_unchanged_and_boots(boots, guests):
    run = boots.result('clean', 'auto')
    assert run.conversion.properties['xen_import_fixup_required'] == 'false'
    assert_unchanged(run, guests['clean'])
    assert_booted(run)


def test_hvc0_as_the_only_console_is_fixed_and_boots(boots):
    # With console=hvc0 alone, init on KVM finds no console and a Debian 12
    # guest never mounts its root: the fixup makes it tty0.
    run = boots.result('hvc0-only', 'auto')
    properties = run.conversion.properties
    assert properties['xen_import_fixup_required'] == 'false'
    assert 'console:tty0' in properties['xen_import_fixups_applied']
    assert_booted(run)


# -- RHEL/CentOS-shaped: dracut, LVM, XFS ----------------------------------

def test_dracut_xen_only_initramfs_in_report_mode_is_flagged(boots, guests):
    run = boots.result('dracut-xen', 'report')
    assert_flagged_and_unchanged(run, guests['dracut-xen'],
                                 'initramfs-lacks-kvm-storage')


def test_dracut_initramfs_with_early_microcode_is_repaired_and_boots(boots):
    # An uncompressed early-microcode archive (GNU cpio's) in front of
    # dracut's: kept byte for byte in front of the rewritten main one.
    run = boots.result('dracut-microcode', 'auto')
    repair = assert_initramfs_repaired(run, 'dracut')
    assert repair['kept_prefix_bytes'] > 0
    assert repair['compression'].startswith('none+')
    assert_booted(run)


def test_lvm_xfs_guest_from_xen_is_fixed_and_boots(boots):
    # / in an LVM2 logical volume (XFS), /boot on XFS named /dev/xvda1 in
    # the fstab inside the volume, console=hvc0, a xen-blkfront-only
    # dracut initramfs on /boot: edited and repaired in both file
    # systems, then the guest mounts both from the named bus.
    run = boots.result('lvm-xfs', 'auto')
    properties = run.conversion.properties
    assert_initramfs_repaired(run, 'dracut')
    applied = properties['xen_import_fixups_applied'].split(',')
    assert 'console:tty0' in applied, applied
    assert any(a.startswith('device-names:') for a in applied), applied
    files = run.conversion.report['linux_fixup']['files']
    assert any(f.startswith('partition 2/%s/%s:/etc/fstab:'
                            % (lvmguest.VG, lvmguest.LV)) for f in files)
    runs.assert_lvm_booted_on_named_bus(properties, run.boot)


def test_lvm_xfs_guest_in_report_mode_is_flagged(boots, guests):
    run = boots.result('lvm-xfs', 'report')
    properties = assert_flagged_and_unchanged(run, guests['lvm-xfs'],
                                              'xvd-device-names')
    assert 'initramfs-lacks-kvm-storage' in reasons(properties)
