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

"""Boot a RAW image in QEMU with the devices its Glance properties mean.

The mapping is the one Nova's libvirt driver makes for x86 guests:
``hw_disk_bus`` (+ ``hw_scsi_model``) picks the disk controller,
``hw_machine_type`` the machine, ``hw_firmware_type=uefi`` OVMF. The disk
is opened with ``snapshot=on``, so a boot never changes the image. Output
is the first serial port, written to a log file that is watched for the
guest's marker (see guestkit) or for the signs of a failed boot.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from tests.functional import glance_server

QEMU = 'qemu-system-x86_64'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
MEMORY = '512'
# Signs that the guest will not get to its marker; QEMU is killed a few
# seconds after one appears, so the log shows what followed.
FAILURE = re.compile(r'\(initramfs\)|Dropping to a shell|Kernel panic|'
                     r'Entering emergency mode')
# What the guest's marker service prints (tests/boot/guestkit.py).
MARKER_OK = 'GXI-BOOT-OK'
MARKER_BAD = 'GXI-BOOT-BAD'
MARKER = re.compile(r'(%s|%s)[^\r\n]*' % (MARKER_OK, MARKER_BAD))
DISK = 'file=%s,format=raw,if=none,id=disk0,snapshot=on'


class Unsupported(Exception):
    """These properties name hardware the harness cannot give here."""


def disk_devices(properties):
    """The -device arguments for the disk, from hw_disk_bus/scsi_model."""
    bus = properties.get('hw_disk_bus', 'virtio')
    if bus == 'virtio':
        return ['-device', 'virtio-blk-pci,drive=disk0,bootindex=1']
    if bus == 'scsi':
        model = properties.get('hw_scsi_model', 'lsisas1068')
        controller = {'virtio-scsi': 'virtio-scsi-pci',
                      'lsisas1068': 'lsi53c895a'}.get(model)
        if controller is None:
            raise Unsupported('hw_scsi_model=%s' % model)
        return ['-device', '%s,id=scsi0' % controller,
                '-device', 'scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1']
    if bus == 'ide':
        return ['-device', 'ide-hd,drive=disk0,bus=ide.0,bootindex=1']
    if bus == 'sata':
        return ['-device', 'ahci,id=ahci0',
                '-device', 'ide-hd,drive=disk0,bus=ahci0.0,bootindex=1']
    raise Unsupported('hw_disk_bus=%s' % bus)


def firmware_args(properties, workdir):
    if properties.get('hw_firmware_type', 'bios') != 'uefi':
        return []
    if not (os.path.exists(OVMF_CODE) and os.path.exists(OVMF_VARS)):
        raise Unsupported('hw_firmware_type=uefi needs OVMF (package ovmf)')
    variables = os.path.join(workdir, 'OVMF_VARS.fd')
    shutil.copyfile(OVMF_VARS, variables)
    return ['-drive', 'if=pflash,format=raw,readonly=on,file=' + OVMF_CODE,
            '-drive', 'if=pflash,format=raw,file=' + variables]


def machine_args(properties, accel):
    machine = properties.get('hw_machine_type', 'pc')
    if not re.fullmatch(r'[a-z0-9.-]+', machine):
        raise Unsupported('hw_machine_type=%s' % machine)
    return ['-machine', '%s,accel=%s' % (machine, accel)]


def common_args(log):
    return [QEMU, '-m', MEMORY, '-nodefaults', '-nographic',
            '-monitor', 'none', '-nic', 'none', '-no-reboot',
            '-serial', 'file:' + log]


def qemu_argv(raw, properties, log, accel, workdir):
    return (common_args(log) + machine_args(properties, accel)
            + firmware_args(properties, workdir)
            + ['-drive', DISK % raw] + disk_devices(properties))


@dataclasses.dataclass
class BootResult:
    outcome: str          # 'marker', 'failure', 'timeout' or 'exited'
    marker: str           # the marker line, or None
    seconds: float
    log_path: str
    argv: list

    @property
    def booted(self):
        return bool(self.marker and self.marker.startswith(
            MARKER_OK) and self.marker.endswith(' rw'))

    def log(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', errors='replace')

    def tail(self, lines=40):
        return '\n'.join(self.log().splitlines()[-lines:])

    def describe(self):
        return '%s after %.0f s (%s), log %s:\n%s' % (
            self.outcome, self.seconds, ' '.join(self.argv[-6:]),
            self.log_path, self.tail())


def _read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', errors='replace')
    except FileNotFoundError:
        return ''


def run_qemu(argv, log, timeout, grace=5.0, poll=0.5, marker=MARKER,
             failure=FAILURE):
    """Run QEMU until the marker, a failure sign (+grace) or the timeout.

    QEMU is always stopped by its PID before returning.
    """
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=glance_server.die_with_parent)
    outcome, deadline = 'timeout', start + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                outcome = 'exited'
                break
            text = _read(log)
            if marker.search(text):
                # The guest powers off right after its marker.
                outcome, deadline = 'marker', min(deadline,
                                                  time.monotonic() + grace)
                break
            if failure.search(text) and outcome != 'failure':
                outcome = 'failure'
                deadline = min(deadline, time.monotonic() + grace)
            time.sleep(poll)
        if outcome == 'marker':
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stderr = proc.stderr.read().decode(errors='replace')
        proc.stderr.close()
    seconds = time.monotonic() - start
    text = _read(log)
    found = marker.search(text)
    if outcome == 'exited' and found:
        outcome = 'marker'
    if outcome == 'exited' and proc.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (
            QEMU, proc.returncode, stderr.strip()))
    return BootResult(outcome, found.group(0).strip() if found else None,
                      seconds, log, argv)


# A guest that boots reaches its marker in 20-100 s under TCG here, and
# one that cannot find its root prints a failure sign about 30 s later;
# the timeout only ends a guest that hangs, so it is far from both, even
# with the second core busy and two guests booting at once.
BOOT_TIMEOUT = 900


def boot(raw, properties, log, accel, timeout=BOOT_TIMEOUT):
    """Boot ``raw`` as Nova would with these image properties."""
    with tempfile.TemporaryDirectory() as workdir:
        argv = qemu_argv(raw, properties, log, accel, workdir)
        return run_qemu(argv, log, timeout)


# --------------------------------------------------------------------------
# Which accelerator: nested KVM can be far slower than TCG

def kvm_usable():
    try:
        fd = os.open('/dev/kvm', os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


PROBE_END = re.compile(r'Kernel panic|VFS: Unable to mount root')
PROBE_MARGIN = 10.0


def _probe_one(accel, kernel, workdir, timeout, results, first_done):
    log = os.path.join(workdir, 'probe-%s.log' % accel)
    argv = common_args(log) + [
        '-machine', 'pc,accel=%s' % accel, '-kernel', kernel,
        '-append', 'console=ttyS0 panic=-1']
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=glance_server.die_with_parent)
    try:
        while time.monotonic() - start < timeout:
            if PROBE_END.search(_read(log)) or proc.poll() is not None:
                break
            if first_done.is_set():
                # The others get PROBE_MARGIN more seconds to catch up.
                timeout = min(timeout, time.monotonic() - start
                              + PROBE_MARGIN)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    done = PROBE_END.search(_read(log)) is not None
    results[accel] = time.monotonic() - start if done else None
    if done:
        first_done.set()


def probe_accelerators(kernel, workdir, timeout=60):
    """Boot ``kernel`` with no root under each accelerator, side by side.

    Returns {accel: seconds to the kernel's "no root" panic, or None if it
    did not get there within ``timeout``, or within PROBE_MARGIN seconds
    after the first one did}.
    """
    accels = ['tcg'] + (['kvm'] if kvm_usable() else [])
    results = {}
    first_done = threading.Event()
    threads = [threading.Thread(target=_probe_one,
                                args=(a, kernel, workdir, timeout, results,
                                      first_done))
               for a in accels]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pick_accelerator(results):
    """The fastest accelerator that reached the panic (TCG if none did)."""
    forced = os.environ.get('GXI_BOOT_ACCEL')
    if forced:
        return forced
    done = {a: s for a, s in results.items() if s is not None}
    return min(done, key=done.get) if done else 'tcg'
