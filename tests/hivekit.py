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

"""Hives made (and damaged) by hivex, and read back whole by hivexml.

hivex runs in Debian's /usr/bin/python3 (python3-hivex is not on PyPI),
through tools/fixtures/make_hives.py; hivexml (libhivex-bin) is the
independent reader of the results.
"""

import copy
import json
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_HIVES = os.path.join(REPO, 'tools', 'fixtures', 'make_hives.py')
HIVES = os.path.join(REPO, 'tests', 'fixtures', 'hives')
DEBIAN_PYTHON = '/usr/bin/python3'
STORAHCI_OVERRIDE = 'ControlSet001\\Services\\storahci\\StartOverride'
STORNVME_OVERRIDE = 'ControlSet001\\Services\\stornvme\\StartOverride'


def require_hivex():
    if shutil.which('hivexml') is None or subprocess.run(
            [DEBIAN_PYTHON, '-c', 'import hivex'],
            capture_output=True).returncode:
        pytest.skip('python3-hivex and libhivex-bin are installed by '
                    '.ci/run')


def xen_spec():
    """The Xen SYSTEM hive of fixup-hives.json, with more StartOverride.

    Two storage drivers' StartOverride values are held in data cells
    (8-byte REG_BINARY) rather than inline, so that their data offsets
    can be damaged.
    """
    with open(os.path.join(HIVES, 'fixup-hives.json')) as f:
        spec = copy.deepcopy(json.load(f)[0])
    spec['base'] = os.path.join(REPO, 'tests', 'fixtures', 'guests',
                                'hivex-minimal.hive')
    spec['keys'] += [
        [STORAHCI_OVERRIDE, {'0': ['binary', '0300000000000000'],
                             '1': ['binary', '0300000001000000']}],
        [STORNVME_OVERRIDE, {'0': ['binary', '0300000000000000']}],
        # Set twice: hivex frees the first values, leaving free cells.
        ['ControlSet003\\Services\\Disk', {'Old': ['sz', 'x' * 40]}],
        ['ControlSet003\\Services\\Disk', {'Start': ['dword', 0]}],
    ]
    return spec


def make_hive(tmp_path, spec=None, patches=(), base=None):
    """The bytes of a hive built by hivex from spec, then damaged."""
    require_hivex()
    spec = copy.deepcopy(spec or xen_spec())
    if base:
        spec['base'] = base
    out = tmp_path / ('hive-%d' % len(os.listdir(tmp_path)))
    spec['out'] = str(out)
    spec['patches'] = list(patches)
    spec_path = tmp_path / 'spec.json'
    spec_path.write_text(json.dumps([spec]))
    subprocess.run([DEBIAN_PYTHON, MAKE_HIVES, str(spec_path)], check=True)
    return out.read_bytes()


# Run by Debian's python3: every key and value hivex reaches from the root,
# as JSON {path: {value name: [type, data hex]}}, names lower-cased.
_WALK = """
import hivex, json, sys
h = hivex.Hivex(sys.argv[1])
tree = {}
pending = [((), h.root())]
while pending:
    path, node = pending.pop()
    values = {}
    for value in h.node_values(node):
        kind, data = h.value_value(value)
        values[h.value_key(value).lower()] = [kind, data.hex()]
    tree['\\\\'.join(path)] = values
    for child in h.node_children(node):
        pending.append((path + (h.node_name(child).lower(),), child))
json.dump(tree, sys.stdout)
"""


def hivex_tree(tmp_path, data):
    """{key path tuple: {value name: (type, data)}} as hivex reads them.

    Paths and names are lower-cased, as Windows compares them. Raises
    CalledProcessError when hivex cannot walk the whole hive.
    """
    path = tmp_path / 'hivex-input'
    path.write_bytes(bytes(data))
    out = subprocess.run([DEBIAN_PYTHON, '-c', _WALK, str(path)],
                         check=True, capture_output=True).stdout
    return {tuple(p.split('\\')) if p else (): {
        name: (kind, bytes.fromhex(raw)) for name, (kind, raw) in
        values.items()} for p, values in json.loads(out).items()}
