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

"""The glance-xen-import command, run as a separate process."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import ovakit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def cli(*args, stdin=None):
    """Run the CLI module; return (exit status, stdout, stderr) as text."""
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run(
        [sys.executable, '-m', 'glance_xen_import.cmd.main'] + list(args),
        stdin=stdin, capture_output=True, env=env, cwd=REPO)
    return (proc.returncode, proc.stdout.decode(),
            proc.stderr.decode(errors='replace'))


def assert_refused(status, out, err):
    assert status != 0
    assert 'Traceback' not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].strip()


def test_convert_json(corpus, tmp_path, ova):
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', ova, dest, '--json')
    assert status == 0, err
    report = json.loads(out)
    assert report['virtual_size'] == corpus.raw('gpt16').size
    assert isinstance(report['virtual_size'], int)
    assert isinstance(report['properties'], dict)
    assert report['properties']
    assert ovakit.first_difference(dest, corpus.raw('gpt16').path) is None


def test_convert_text(corpus, tmp_path, ova):
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', ova, dest)
    assert status == 0, err
    assert str(corpus.raw('gpt16').size) in out
    assert os.path.getsize(dest) == corpus.raw('gpt16').size


def test_convert_from_stdin(corpus, tmp_path, ova):
    dest = str(tmp_path / 'out.raw')
    with open(ova, 'rb') as f:
        status, out, err = cli('convert', '-', dest, '--json', stdin=f)
    assert status == 0, err
    assert json.loads(out)['virtual_size'] == corpus.raw('gpt16').size
    assert ovakit.first_difference(dest, corpus.raw('gpt16').path) is None


def test_inspect_json_leaves_nothing(corpus, tmp_path, ova):
    work = tmp_path / 'work'
    work.mkdir()
    status, out, err = cli('inspect', ova, '--json', '--workdir', str(work))
    assert status == 0, err
    report = json.loads(out)
    assert report['virtual_size'] == corpus.raw('gpt16').size
    assert isinstance(report['properties'], dict)
    assert os.listdir(str(work)) == []


def test_json_matches_between_convert_and_inspect(corpus, tmp_path, ova):
    _s, converted, _e = cli('convert', ova, str(tmp_path / 'o.raw'),
                            '--json')
    _s, inspected, _e = cli('inspect', ova, '--json')
    assert json.loads(converted)['properties'] == json.loads(
        inspected)['properties']


def test_refused_manifest_mismatch(corpus, tmp_path):
    disk = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    path = str(tmp_path / 'bad.ova')
    ovakit.make_ova(path, [disk], manifest_entries=[
        ('Web server.ovf', '0' * 64), (disk.href, '0' * 64)])
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', path, dest, '--json')
    assert_refused(status, out, err)
    assert status == 1
    assert 'manifest' in err.lower()
    assert not os.path.exists(dest)


def test_refused_not_a_tar(tmp_path):
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', os.path.join(
        ovakit.FIXTURES, 'glance-testserver-not-tar.ova'), dest)
    assert_refused(status, out, err)
    assert not os.path.exists(dest)


def test_refused_differencing(corpus, tmp_path):
    child = str(tmp_path / 'child.vhd')
    ovakit.make_differencing(corpus.vhd('caml', 'gpt16'), child,
                             '/srv/sr/parent.vhd')
    path = str(tmp_path / 'diff.ova')
    ovakit.make_ova(path, [ovakit.OvaDisk(child)])
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', path, dest)
    assert_refused(status, out, err)
    assert 'differencing' in err
    assert not os.path.exists(dest)


def test_refused_stdin_garbage(tmp_path):
    dest = str(tmp_path / 'out.raw')
    with open(os.path.join(ovakit.FIXTURES, 'dfvfs-ext2.vhd'), 'rb') as f:
        status, out, err = cli('convert', '-', dest, stdin=f)
    assert_refused(status, out, err)
    assert not os.path.exists(dest)


def test_refused_inspect(tmp_path):
    status, out, err = cli('inspect', os.path.join(
        ovakit.FIXTURES, 'ganeti-ova.ova'), '--json')
    assert_refused(status, out, err)
    assert out == ''


def test_existing_destination(tmp_path, ova):
    dest = str(tmp_path / 'exists.raw')
    with open(dest, 'wb') as f:
        f.write(b'precious')
    status, out, err = cli('convert', ova, dest)
    assert_refused(status, out, err)
    with open(dest, 'rb') as f:
        assert f.read() == b'precious'


def test_missing_source(tmp_path):
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', str(tmp_path / 'nope.ova'), dest)
    assert_refused(status, out, err)
    assert not os.path.exists(dest)


def test_max_virtual_size_option(corpus, tmp_path, ova):
    dest = str(tmp_path / 'out.raw')
    status, out, err = cli('convert', ova, dest, '--max-virtual-size',
                           str(corpus.raw('gpt16').size - 512))
    assert_refused(status, out, err)
    assert not os.path.exists(dest)


def test_usage_errors():
    status, _out, err = cli()
    assert status == 2
    assert 'Traceback' not in err
    status, _out, err = cli('convert', 'only-source')
    assert status == 2
    assert 'Traceback' not in err


def test_installed_console_script(tmp_path, ova):
    script = shutil.which('glance-xen-import')
    if script is None:
        pytest.skip('glance-xen-import is not installed (pip install -e .)')
    proc = subprocess.run([script, 'convert', ova, str(tmp_path / 'o.raw'),
                           '--json'], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout)['virtual_size'], int)


def test_hostile_href_stays_on_one_line(corpus, tmp_path):
    """Newlines, bidi overrides and 200k characters from an href."""
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    path = str(tmp_path / 'vm.ova')
    descriptor = ovakit.ovf_descriptor([boot]).replace(
        boot.href.encode(),
        b'fake&#10;properties:&#10;  os_type=evil&#x202e;' + b'y' * 200000)
    ovakit.make_ova(path, [boot], ovf=descriptor, manifest_algorithm=None)
    status, out, err = cli('convert', path, str(tmp_path / 'o.raw'))
    assert_refused(status, out, err)
    assert '\u202e' not in err and 'os_type=evil' not in err.splitlines()
    assert len(err) < 1200
    assert os.listdir(tmp_path) == ['vm.ova']


def test_hostile_extra_href_in_text_report(corpus, tmp_path):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    extra = ovakit.OvaDisk(path='x', capacity=1 << 24, file_size=1,
                           href='PLACEHOLDER.vhd', boot=False, address=1)
    descriptor = ovakit.ovf_descriptor([boot, extra]).replace(
        b'PLACEHOLDER.vhd', b'd,e&#10;  os_type=evil&#x202e;.vhd')
    path = str(tmp_path / 'vm.ova')
    ovakit.make_ova(path, [boot], ovf=descriptor)
    status, out, err = cli('convert', path, str(tmp_path / 'o.raw'))
    assert status == 0, err
    lines = out.splitlines()
    assert '  os_type=evil' not in lines
    assert '\u202e' not in out
    assert ('disk 1:       d,e\\x0a  os_type=evil\\u202e.vhd (16777216 '
            'bytes, data), --disk 1') in lines


@pytest.fixture
def two_disk_ova(corpus, tmp_path):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    data = ovakit.OvaDisk(corpus.vhd('caml', 'mbr8'), boot=False, address=1)
    path = str(tmp_path / 'vm.ova')
    ovakit.make_ova(path, [boot, data])
    return path, [(boot, corpus.raw('gpt16')), (data, corpus.raw('mbr8'))]


def test_convert_chosen_disk(tmp_path, two_disk_ova):
    path, disks = two_disk_ova
    dest = str(tmp_path / 'data.raw')
    status, out, err = cli('convert', path, dest, '--disk', disks[1][0].href)
    assert status == 0, err
    assert ovakit.first_difference(dest, disks[1][1].path) is None
    lines = out.splitlines()
    assert 'disk 1:       %s (%d bytes, data), converted' % (
        disks[1][0].href, disks[1][1].size) in lines
    assert 'disk 0:       %s (%d bytes, boot), --disk 0' % (
        disks[0][0].href, disks[0][1].size) in lines


def test_convert_all_disks_json(tmp_path, two_disk_ova):
    path, disks = two_disk_ova
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    status, out, err = cli('convert', path, '--all-disks', str(out_dir),
                           '--json')
    assert status == 0, err
    reports = json.loads(out)['disks']
    assert [r['path'] for r in reports] == [
        str(out_dir / 'disk-0.raw'), str(out_dir / 'disk-1.raw')]
    for report, (disk, raw) in zip(reports, disks):
        assert report['disk']['href'] == disk.href
        assert ovakit.first_difference(report['path'], raw.path) is None


@pytest.mark.parametrize('args,reason', [
    ([], 'convert needs either DEST or --all-disks DIR'),
    (['DEST', '--all-disks', 'DIR'],
     'convert needs either DEST or --all-disks DIR'),
    (['--all-disks', 'DIR', '--disk', '1'],
     '--disk and --all-disks exclude each other'),
])
def test_convert_destination_usage(tmp_path, two_disk_ova, args, reason):
    path, _disks = two_disk_ova
    args = [a.replace('DIR', str(tmp_path)).replace(
        'DEST', str(tmp_path / 'x.raw')) for a in args]
    status, out, err = cli('convert', path, *args)
    assert status == 2
    assert err == 'glance-xen-import: error: %s\n' % reason
    assert sorted(os.listdir(tmp_path)) == ['vm.ova']


def test_unknown_disk_named_in_one_line(tmp_path, two_disk_ova):
    path, disks = two_disk_ova
    status, out, err = cli('convert', path, str(tmp_path / 'x.raw'),
                           '--disk', '5')
    assert_refused(status, out, err)
    assert ('xen_import_disk=5: the VM has 2 disk(s), at positions 0 to 1: '
            '0 (%s' % disks[0][0].href) in err
    assert sorted(os.listdir(tmp_path)) == ['vm.ova']
