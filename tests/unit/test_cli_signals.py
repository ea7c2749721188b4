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

"""Stop signals sent to a real glance-xen-import mid-conversion.

The OVA arrives on a pipe and its last bytes are held back, so the process
is mid-conversion (blocked reading the footer) when the signal arrives; we
wait for that state by watching its partial output, not by sleeping.
"""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.unit import test_cli

HELD_BACK = 64 * 1024


def _partial_with_data(pattern, proc):
    """Wait until a file matching ``pattern`` holds written data."""
    deadline = time.monotonic() + 120   # a hung child, not a slow one
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        for path in glob.glob(pattern):
            try:
                if os.stat(path).st_blocks > 0:
                    return path
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    raise AssertionError('no partial output with data appeared')


def _start(args, ova):
    env = dict(os.environ)
    env['PYTHONPATH'] = test_cli.REPO + os.pathsep + env.get('PYTHONPATH',
                                                             '')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'glance_xen_import.cmd.main'] + args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, cwd=test_cli.REPO)
    with open(ova, 'rb') as f:
        data = f.read()
    proc.stdin.write(data[:-HELD_BACK])
    proc.stdin.flush()
    return proc


def _finish(proc):
    # communicate() closes stdin: a process that ignored the signal would
    # then see a truncated OVA and fail with another status and message.
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def _convert_started(tmp_path, ova):
    """A convert into an empty out/, caught once its partial holds data."""
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    dest = str(out_dir / 'vm.raw')
    proc = _start(['convert', '-', dest], ova)
    partial = _partial_with_data(str(out_dir / '.vm.raw.partial-*'), proc)
    return out_dir, dest, proc, partial


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGHUP,
                                    signal.SIGINT])
def test_convert_stopped_removes_partial(tmp_path, ova, signum):
    out_dir, dest, proc, partial = _convert_started(tmp_path, ova)
    assert not os.path.exists(dest)
    proc.send_signal(signum)
    status, out, err = _finish(proc)
    assert status == 128 + signum
    assert err == ('glance-xen-import: error: stopped by %s; partial '
                   'output removed\n' % signal.Signals(signum).name)
    assert not os.path.exists(partial)
    assert os.listdir(out_dir) == []


def test_convert_killed_leaves_nothing_under_dest(tmp_path, ova):
    out_dir, dest, proc, partial = _convert_started(tmp_path, ova)
    proc.kill()
    status, _out, _err = _finish(proc)
    assert status == -signal.SIGKILL
    assert os.listdir(out_dir) == [os.path.basename(partial)]


def test_inspect_stopped_removes_scratch(tmp_path, ova):
    work = tmp_path / 'work'
    work.mkdir()
    proc = _start(['inspect', '-', '--workdir', str(work)], ova)
    _partial_with_data(str(work / 'xen-import-*' / '.disk.raw.partial-*'),
                       proc)
    proc.send_signal(signal.SIGTERM)
    status, _out, err = _finish(proc)
    assert status == 128 + signal.SIGTERM
    assert 'stopped by SIGTERM' in err
    assert os.listdir(work) == []


def test_convert_completes_when_not_stopped(tmp_path, ova):
    """The same held-back feed, finished: DEST appears, no partial stays."""
    out_dir, _dest, proc, _partial = _convert_started(tmp_path, ova)
    with open(ova, 'rb') as f:
        proc.stdin.write(f.read()[-HELD_BACK:])
    status, _out, err = _finish(proc)
    assert status == 0, err
    assert os.listdir(out_dir) == ['vm.raw']
