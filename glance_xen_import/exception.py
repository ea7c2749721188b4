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

"""Errors that carry a one-line reason meant for the operator."""


class XenImportError(Exception):
    """Base class: str(exc) is a complete one-line reason."""


class InvalidPackage(XenImportError):
    """The OVA/OVF package (tar, descriptor, manifest) is not acceptable."""


class ManifestMismatch(InvalidPackage):
    """A member's digest differs from the one in the manifest."""


class InvalidDisk(XenImportError):
    """The disk image inside the package is malformed or truncated."""


class UnsupportedDisk(InvalidDisk):
    """The disk image is well formed but of a kind we refuse to convert."""


class InvalidPartitionTable(InvalidDisk):
    """The converted disk has no sane partition table or filesystem."""


class InsufficientSpace(XenImportError):
    """The output would not fit in the free space where it is written."""


class GuestError(XenImportError):
    """The guest inside the disk could not be inspected or fixed."""


class ChecksumMismatch(InvalidPackage):
    """A block's checksum inside the package differs from its data."""


class DiskNotFound(XenImportError):
    """The disk the import asked for is not one of the VM's disks."""
