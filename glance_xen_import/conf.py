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

"""Options of the ``[xen_ova]`` group.

glance-api reads them from glance-image-import.conf or glance-api.conf; the
CLI reads them from ``--config-file``. ``oslo-config-generator --namespace
glance_xen_import`` prints them.
"""

from oslo_config import cfg

from glance_xen_import import options as plain

GROUP = 'xen_ova'

xen_ova_opts = [
    cfg.StrOpt('manifest_policy',
               default=plain.MANIFEST_VERIFY,
               choices=[
                   (plain.MANIFEST_VERIFY,
                    'Verify the digests of the .mf manifest when the OVA '
                    'carries one; accept an OVA without a manifest.'),
                   (plain.MANIFEST_REQUIRE,
                    'Refuse an OVA that carries no manifest.'),
                   (plain.MANIFEST_IGNORE,
                    'Do not check the manifest at all.'),
               ],
               help='How the SHA1/SHA256 manifest of an OVA is used. Digests '
                    'are computed while the package streams through, so '
                    'verification costs no extra read.'),
    cfg.IntOpt('max_virtual_size',
               default=plain.DEFAULT_MAX_VIRTUAL_SIZE,
               min=1,
               help='Largest virtual disk size, in bytes, that is accepted. '
                    'The VHD format itself ends at 2040 GiB.'),
    cfg.StrOpt('default_disk_bus',
               default='scsi',
               choices=['scsi', 'virtio', 'sata', 'ide'],
               help='hw_disk_bus for guests whose drivers do not decide it: '
                    'Linux and unrecognised guests.'),
    cfg.StrOpt('default_scsi_model',
               default='virtio-scsi',
               help='hw_scsi_model set together with hw_disk_bus=scsi.'),
    cfg.StrOpt('windows_fixup',
               default=plain.FIXUP_AUTO,
               choices=[
                   (plain.FIXUP_AUTO,
                    'Neutralise Citrix/XenServer PV drivers in the guest '
                    'registry when that can be done safely.'),
                   (plain.FIXUP_REPORT,
                    'Only report what would stop the guest booting; never '
                    'change the disk.'),
               ],
               help='What to do with a Windows guest that still has Xen PV '
                    'drivers enabled.'),
    cfg.StrOpt('linux_fixup',
               default=plain.FIXUP_AUTO,
               choices=[
                   (plain.FIXUP_AUTO,
                    'Rewrite Xen device names (/dev/xvd*) and Xen consoles '
                    'in the guest\'s configuration, and neutralise '
                    'MAC-bound network names, when that can be done safely '
                    'in place.'),
                   (plain.FIXUP_REPORT,
                    'Only report what would stop the guest booting; never '
                    'change the disk.'),
               ],
               help='What to do with a Linux guest whose configuration '
                    'still names Xen devices.'),
    cfg.StrOpt('extra_disks',
               default=plain.EXTRA_DISKS_REPORT,
               choices=[
                   (plain.EXTRA_DISKS_REPORT,
                    'Import the boot disk and list every disk in the '
                    'xen_import_vm_disks image property.'),
                   (plain.EXTRA_DISKS_REFUSE,
                    'Refuse packages that hold more than one disk.'),
               ],
               help='What to do with a package that holds several disks '
                    'when the image does not choose one with its '
                    'xen_import_disk property. A Glance image holds one '
                    'disk; a chosen disk is always imported.'),
    cfg.IntOpt('progress_interval',
               default=5,
               min=0,
               help='Seconds between progress reports (bytes, percent, '
                    'MB/s) while an OVA converts: a line in the log and the '
                    'message of the import task, which users see with '
                    'GET /v2/images/{id}/tasks. Each report also keeps the '
                    'task fresh, so the import lock of a long conversion '
                    'never expires. 0 reports after every read of the '
                    'input (4 MiB), each a database write: for debugging '
                    'and tests, not for production.'),
    cfg.IntOpt('readahead_mib',
               default=256,
               min=0,
               help='After converting, read the RAW into the page cache '
                    'from a thread of the plugin, at most this many MiB '
                    'ahead of Glance\'s upload to the stores, so that the '
                    'kernel zeroes the sparse RAW\'s holes on another core '
                    'instead of in the thread where Glance hashes the data. '
                    'It only reads, and needs /proc/self/fdinfo (Linux). '
                    'This much page cache stays ahead of the upload while '
                    'it runs. 0 turns it off.'),
]


def register_opts(conf):
    conf.register_opts(xen_ova_opts, group=GROUP)


def pipeline_options(conf):
    """Build the Glance-free option set the pipeline takes."""
    group = conf[GROUP]
    return plain.Options(
        manifest_policy=group.manifest_policy,
        max_virtual_size=group.max_virtual_size,
        default_disk_bus=group.default_disk_bus,
        default_scsi_model=group.default_scsi_model,
        windows_fixup=group.windows_fixup,
        linux_fixup=group.linux_fixup,
        extra_disks=group.extra_disks,
    )


def list_opts():
    return [(GROUP, xen_ova_opts)]
