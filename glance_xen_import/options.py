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

"""The pipeline's options as a plain value, free of oslo.config."""

import dataclasses

MANIFEST_VERIFY = 'verify_if_present'
MANIFEST_REQUIRE = 'require'
MANIFEST_IGNORE = 'ignore'

FIXUP_AUTO = 'auto'
FIXUP_REPORT = 'report'

EXTRA_DISKS_REPORT = 'report'
EXTRA_DISKS_REFUSE = 'refuse'

# 2 TiB: the VHD format's own limit is 2040 GiB.
DEFAULT_MAX_VIRTUAL_SIZE = 2 * 1024 ** 4


@dataclasses.dataclass(frozen=True)
class Options:
    manifest_policy: str = MANIFEST_VERIFY
    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE
    default_disk_bus: str = 'scsi'
    default_scsi_model: str = 'virtio-scsi'
    windows_fixup: str = FIXUP_AUTO
    linux_fixup: str = FIXUP_AUTO
    extra_disks: str = EXTRA_DISKS_REPORT
    # Which disk of the VM to convert (selection.choose); None: the boot
    # disk.
    disk: str = None
