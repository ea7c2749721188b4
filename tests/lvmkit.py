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

"""MBR disks whose partitions are LVM2 physical volumes, made by LVM itself.

pvcreate and vgcreate write the labels, headers and metadata; the logical
volumes are placed with vgcfgrestore (lvcreate would need device-mapper).
Where each volume's extents lie is then asked of LVM (pvs, lvs
--segments), not of the code under test. Each disk gets its own volume
group name and every command sees only its own loop devices, so tests can
run side by side; LVM keeps no backups or hints of them.
"""

import contextlib
import os
import re
import subprocess
import uuid

import pytest

from tests import linuxkit
from tests import ovakit

MiB = 1 << 20
SECTOR = 512
FIRST_SECTOR = 2048


def _run(*argv):
    return subprocess.run(argv, check=True, capture_output=True,
                          text=True).stdout


def require_lvm():
    missing = ovakit.missing_tools('pvcreate', 'vgcreate', 'vgcfgrestore',
                                   'losetup', 'sfdisk')
    if missing:
        pytest.skip('needs lvm2, losetup and sfdisk: %s missing'
                    % ', '.join(missing))
    if os.geteuid() != 0:
        pytest.skip('LVM on a loop device needs root')


def _config(loops):
    accept = ','.join('"a|^%s$|"' % loop for loop in loops)
    devices = '[%s,"r|.*|"]' % accept
    return ('devices{filter=%s global_filter=%s use_devicesfile=0 '
            'hints="none" obtain_device_list_from_udev=0} '
            'activation{udev_sync=0 udev_rules=0} '
            'backup{backup=0 archive=0}' % (devices, devices))


class LvmDisk:
    """The disk file, its PV partitions, and LVM's own account of them."""

    def __init__(self, path, group, partitions, pe_start, extent_bytes,
                 segments):
        self.path = path
        self.group = group
        self.partitions = partitions    # [(start byte, size)] per PV
        self.pe_start = pe_start        # [bytes from the partition start]
        self.extent_bytes = extent_bytes
        self.segments = segments        # {lv: [(pv index, first pe, n)]}

    def lv_runs(self, lv):
        """The disk byte ranges of an LV, as LVM reports them, merged."""
        runs = []
        for pv, first, count in self.segments[lv]:
            start = (self.partitions[pv][0] + self.pe_start[pv]
                     + first * self.extent_bytes)
            length = count * self.extent_bytes
            if runs and sum(runs[-1]) == start:
                runs[-1] = (runs[-1][0], runs[-1][1] + length)
            else:
                runs.append((start, length))
        return runs

    def lv_offset(self, lv):
        runs = self.lv_runs(lv)
        assert len(runs) == 1, runs
        return runs[0][0]

    def place(self, lv, image):
        """Copy a file system image into the LV's (single) run."""
        with open(image, 'rb') as src, open(self.path, 'r+b') as dst:
            dst.seek(self.lv_offset(lv))
            dst.write(src.read())


def make_disk(work, pv_mib, logical_volumes, extent_mib=1, group=None):
    """A disk of len(pv_mib) PV partitions in one new VG.

    ``logical_volumes`` is the text of the VG's logical_volumes section
    body (LVM's own metadata syntax, PVs named pv0, pv1, ...), with
    ``{vg}`` standing for the group's name.
    """
    require_lvm()
    work = str(work)
    group = group or 'gxi' + uuid.uuid4().hex[:12]
    partitions = []
    at = FIRST_SECTOR * SECTOR
    table = 'label: dos\n'
    for mib in pv_mib:
        partitions.append((at, mib * MiB))
        table += 'start=%d, size=%d, type=8e\n' % (at // SECTOR,
                                                   mib * MiB // SECTOR)
        at += mib * MiB
    path = os.path.join(work, 'lvm.raw')
    linuxkit.make_guests.make_disk(path, at + MiB, table, [],
                                   boot_code=False)
    with _attached(path, partitions) as loops:
        config = _config(loops)
        for loop in loops:
            _run('pvcreate', '-q', '--config', config, loop)
        _run('vgcreate', '-q', '--config', config, '-s', '%dM' % extent_mib,
             group, *loops)
        backup = os.path.join(work, 'vg.backup')
        _run('vgcfgbackup', '-q', '--config', config, '-f', backup, group)
        with open(backup) as f:
            text = f.read()
        end = text.rstrip().rfind('}')
        text = (text[:end] + '\nlogical_volumes {\n'
                + logical_volumes.replace('{vg}', group) + '\n}\n}\n')
        text = re.sub(r'seqno = (\d+)',
                      lambda m: 'seqno = %d' % (int(m.group(1)) + 1), text,
                      count=1)
        with open(backup, 'w') as f:
            f.write(text)
        _run('vgcfgrestore', '-q', '--config', config, '-f', backup, group)
    return read_disk(path, group, partitions)


def read_disk(path, group, partitions):
    """An LvmDisk for a disk some other tool made, as LVM reports it."""
    with _attached(path, partitions) as loops:
        config = _config(loops)
        pe_start = []
        for loop in loops:
            pe_start.append(int(_run(
                'pvs', '--config', config, '--noheadings', '--units', 'b',
                '--nosuffix', '-o', 'pe_start', loop).strip()))
        extent_bytes = int(_run(
            'vgs', '--config', config, '--noheadings', '--units', 'b',
            '--nosuffix', '-o', 'vg_extent_size', group).strip())
        segments = {}
        report = _run('lvs', '--config', config, '--noheadings', '-a',
                      '--separator', ';', '-o', 'lv_name,seg_pe_ranges',
                      '--segments', group)
        for line in report.splitlines():
            name, ranges = line.strip().split(';')
            name = name.strip('[]')
            for item in ranges.split():
                match = re.fullmatch(r'(/dev/loop\d+):(\d+)-(\d+)', item)
                if match:
                    first, last = int(match.group(2)), int(match.group(3))
                    segments.setdefault(name, []).append(
                        (loops.index(match.group(1)), first,
                         last - first + 1))
    return LvmDisk(path, group, partitions, pe_start, extent_bytes, segments)


def lvm_groups(disk):
    """The volume groups LVM itself reads on the disk's PV partitions."""
    with _attached(disk.path, disk.partitions) as loops:
        return sorted(_run('vgs', '--config', _config(loops), '--noheadings',
                           '-o', 'vg_name').split())


@contextlib.contextmanager
def _attached(path, partitions):
    loops = []
    try:
        for start, size in partitions:
            loops.append(_run('losetup', '--find', '--show', '--offset',
                              str(start), '--sizelimit', str(size),
                              path).strip())
        yield loops
    finally:
        for loop in loops:
            subprocess.run(['losetup', '--detach', loop],
                           capture_output=True)


def linear(name, *segments):
    """An LV section: segments are (pv index, first pe, extent count)."""
    body = ['%s {' % name,
            'id = "%s"' % _lvm_id(name),
            'status = ["READ", "WRITE", "VISIBLE"]',
            'flags = []',
            'segment_count = %d' % len(segments)]
    at = 0
    for number, (pv, first, count) in enumerate(segments, 1):
        body += ['segment%d {' % number, 'start_extent = %d' % at,
                 'extent_count = %d' % count, 'type = "striped"',
                 'stripe_count = 1', 'stripes = ["pv%d", %d]' % (pv, first),
                 '}']
        at += count
    return '\n'.join(body + ['}'])


def _lvm_id(name):
    raw = uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:32]
    parts = [raw[0:6], raw[6:10], raw[10:14], raw[14:18], raw[18:22],
             raw[22:26], raw[26:32]]
    return '-'.join(parts)
