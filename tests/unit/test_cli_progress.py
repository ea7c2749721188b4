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

"""The CLI's progress bar: on a terminal's stderr only, never with --json.

The CLI runs as a separate process with its standard error on a
pseudo-terminal (the ``pty`` module), as a user's shell would give it.
"""

import io
import json
import os
import pty
import re
import subprocess
import sys

from glance_xen_import.cmd import main
from tests import ovakit
from tests.unit.test_cli import cli
from tests.unit.test_cli import REPO

MiB = ovakit.MiB


def cli_on_terminal(*args):
    """Run the CLI with stderr on a pty; return (status, stdout, terminal)."""
    master, slave = pty.openpty()
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    try:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'glance_xen_import.cmd.main'] + list(args),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
            env=env, cwd=REPO)
    finally:
        os.close(slave)
    terminal = b''
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:     # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
    out = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(), out.decode(), terminal.decode(errors='replace')


def test_bar_on_a_terminal(corpus, tmp_path, ova):
    dest = str(tmp_path / 'out.raw')
    status, out, terminal = cli_on_terminal('convert', ova, dest)
    assert status == 0, terminal
    # The bar counts the OVA's bytes; the converter stops at the end of
    # the tar archive, before the padding of its last 10 KiB record.
    size = os.path.getsize(ova)
    bars = re.findall(r'\r\[([#.]{30})\] +(\d+)% ([\d.]+) MiB / ([\d.]+) '
                      r'MiB +\d+ MB/s\x1b\[K', terminal)
    assert bars, repr(terminal)
    filled, percent, done, total = bars[-1]
    assert float(total) == round(size / MiB, 1)
    assert float(done) >= round((size - 10240) / MiB, 1)
    assert int(percent) >= 99 and filled.count('#') >= 29
    # Then the steps, each on its own line.
    assert '\rinspecting the guest...' in terminal
    assert terminal.endswith('\r\n')
    # The report is on stdout as usual.
    assert str(corpus.raw('gpt16').size) in out
    assert ovakit.first_difference(dest, corpus.raw('gpt16').path) is None


def test_no_bar_with_json(corpus, tmp_path, ova):
    dest = str(tmp_path / 'out.raw')
    status, out, terminal = cli_on_terminal('convert', ova, dest, '--json')
    assert status == 0, terminal
    assert terminal == ''
    assert json.loads(out)['virtual_size'] == corpus.raw('gpt16').size


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path, ova):
    status, out, err = cli('convert', ova, str(tmp_path / 'out.raw'))
    assert status == 0, err
    assert err == ''


def test_refusal_on_a_terminal_is_one_line(tmp_path):
    bad = tmp_path / 'bad.ova'
    bad.write_bytes(b'not a tar' * 1000)
    status, out, terminal = cli_on_terminal('convert', str(bad),
                                            str(tmp_path / 'out.raw'))
    assert status == 1
    # Whatever the bar drew is ended before the reason.
    lines = [line for line in terminal.split('\r\n') if line]
    assert lines[-1].startswith('glance-xen-import: error: ')
    assert not os.path.exists(tmp_path / 'out.raw')


class Clock(object):

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_bar_is_redrawn_at_most_ten_times_a_second():
    out, clock = io.StringIO(), Clock()
    bar = main.ProgressBar(out, clock=clock)
    for step in range(1, 101):      # 100 updates over one second
        clock.now = step / 100.0
        bar(step * MiB, 200 * MiB)
    assert 9 <= out.getvalue().count('\r') <= 11
    bar.close()
    # The last figures are shown before the line ends, though they came
    # sooner than 0.1 s after the previous drawing.
    assert out.getvalue().endswith(
        '\r[###############...............]  50%% 100.0 MiB / 200.0 MiB'
        '  %.0f MB/s\x1b[K\n' % (100 * MiB / 10 ** 6))


def test_unknown_total_shows_bytes_and_rate():
    out, clock = io.StringIO(), Clock()
    bar = main.ProgressBar(out, clock=clock)
    clock.now = 2.0
    bar(3 * MiB, None)
    assert out.getvalue() == '\r3.0 MiB  2 MB/s\x1b[K'


def test_nothing_drawn_nothing_closed():
    out = io.StringIO()
    main.ProgressBar(out).close()
    assert out.getvalue() == ''
