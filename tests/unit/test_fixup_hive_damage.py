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

"""The hive editor on hives whose cell offsets lie.

Hives come from hivex (tests/hivekit.py, tools/fixtures/make_hives.py),
damaged there at cells hivex itself locates; the results are read back
whole by hivexml. Either the edit is refused with its reason, or hivex
reads every key and value of the result and finds exactly the intended
changes.
"""

import struct
import subprocess

import hypothesis
from hypothesis import strategies
import pytest

from glance_xen_import import exception
from glance_xen_import.fixup import regf
from glance_xen_import.fixup import windows
from tests import hivekit

WINDOWS_10 = (10, 0)
OVERRIDE_0 = [hivekit.STORAHCI_OVERRIDE, '0']
OVERRIDE_1 = [hivekit.STORAHCI_OVERRIDE, '1']


def assert_hivex_sees_only_the_edits(tmp_path, original, hive):
    """hivex walks the whole edited hive; it differs only as intended."""
    before = hivekit.hivex_tree(tmp_path, original)
    after = hivekit.hivex_tree(tmp_path, hive.data)
    assert set(before) == set(after)
    assert hive.expected
    for path, values in before.items():
        for name in set(values) | set(after[path]):
            intended = hive.expected.get((path, name), 'unchanged')
            if intended == 'unchanged':
                assert after[path].get(name) == values.get(name)
            else:
                assert after[path].get(name) == intended


def test_start_override_in_data_cells_is_cleared(tmp_path):
    original = hivekit.make_hive(tmp_path)
    hive, actions = windows.fix_hive(original, WINDOWS_10)
    assert 'startoverride-cleared:storahci' in actions
    assert 'startoverride-cleared:stornvme' in actions
    assert_hivex_sees_only_the_edits(tmp_path, original, hive)
    tree = hivekit.hivex_tree(tmp_path, hive.data)
    assert tree[('controlset001', 'services', 'storahci',
                 'startoverride')] == {}
    assert tree[('controlset001', 'services', 'xenbus')]['start'] == (
        regf.REG_DWORD, struct.pack('<I', 4))


@pytest.mark.parametrize('patches,reason', [
    ([{'op': 'data_offset', 'value': OVERRIDE_0,
       'to': {'offset': 0x7FFFFFF8}}],
     r'registry cell 0x7ffffff8 lies outside the hive'),
    ([{'op': 'data_offset', 'value': OVERRIDE_0,
       'to': {'key': 'ControlSet001\\Services\\xenbus'}}],
     r'registry cell 0x[0-9a-f]+ is used both as (key and as value data|'
     r'value data and as key)'),
    ([{'op': 'data_offset', 'value': OVERRIDE_0, 'to': {'free': True}}],
     r'registry cell 0x[0-9a-f]+ is free, not allocated'),
    ([{'op': 'data_offset', 'value': OVERRIDE_0, 'to': {'bin_end': True}}],
     r'registry offset 0xff8 is not the start of a cell'),
    ([{'op': 'data_cell_size', 'value': OVERRIDE_0, 'size': -0x2000}],
     r'registry cell 0x[0-9a-f]+ crosses the end of its hive bin'),
    ([{'op': 'data_cell_size', 'value': OVERRIDE_0, 'size': -0x7FFFFFF8}],
     r'registry cell 0x[0-9a-f]+ crosses the end of its hive bin'),
    ([{'op': 'hbin_size', 'bin': 0, 'size': 0x100000}],
     r'registry hive bin at 0x0 has an impossible offset or size'),
    ([{'op': 'hbin_size', 'bin': 1, 'size': 0x3000}],
     r'registry hive bin at 0x1000 has an impossible offset or size'),
], ids=['outside', 'live-key', 'free-cell', 'mid-cell', 'crossing-bin',
        'past-the-end', 'first-bin-size', 'last-bin-size'])
def test_lying_offsets_are_refused(tmp_path, patches, reason):
    damaged = hivekit.make_hive(tmp_path, patches=patches)
    with pytest.raises(exception.GuestError, match=reason):
        windows.fix_hive(damaged, WINDOWS_10)


def test_data_cell_shared_by_two_values_is_not_freed(tmp_path):
    damaged = hivekit.make_hive(tmp_path, patches=[
        {'op': 'data_offset', 'value': OVERRIDE_0,
         'to': {'data': OVERRIDE_1}}])
    hive = regf.Hive(damaged)
    # The hive itself is consistent: hivex and the editor both read it.
    hivekit.hivex_tree(tmp_path, damaged)
    with pytest.raises(exception.GuestError,
                       match=r'registry cell 0x[0-9a-f]+ is a shared value '
                             r'data, not a value data of its own'):
        windows.neutralise(hive, WINDOWS_10)
    with pytest.raises(exception.GuestError, match='shared value data'):
        windows.fix_hive(damaged, WINDOWS_10)


def test_data_cell_shared_with_another_key_is_not_freed(tmp_path):
    # StartOverride of stornvme pointing at storahci's data: the same
    # refusal, across keys.
    damaged = hivekit.make_hive(tmp_path, patches=[
        {'op': 'data_offset', 'value': [hivekit.STORNVME_OVERRIDE, '0'],
         'to': {'data': OVERRIDE_0}}])
    with pytest.raises(exception.GuestError, match='shared value data'):
        windows.fix_hive(damaged, WINDOWS_10)


def test_a_check_that_finds_a_live_cell_freed_refuses(tmp_path):
    # The read-back check on its own: free the root key's cell behind the
    # editor's back; the fresh walk of the edited bytes must notice.
    original = hivekit.make_hive(tmp_path)
    hive, _actions = windows.fix_hive(original, WINDOWS_10)
    root = regf.HBIN_START + hive.root
    size = struct.unpack_from('<i', hive.data, root)[0]
    hive.data[root:root + 4] = struct.pack('<i', -size)
    with pytest.raises(exception.GuestError, match='is free, not allocated'):
        windows.check(original, hive)


def test_a_check_that_finds_an_unintended_change_refuses(tmp_path):
    original = hivekit.make_hive(tmp_path)
    hive, _actions = windows.fix_hive(original, WINDOWS_10)
    del hive.expected[('controlset001', 'services', 'xenbus'), 'start']
    with pytest.raises(exception.GuestError,
                       match=r'value controlset001\\services\\xenbus\\start '
                             r'does not read back as intended'):
        windows.check(original, hive)


# -- mutation fuzz ------------------------------------------------------------

_INTERESTING_WORDS = [0, 1, 4, 8, 0x20, 0x1000, 0xFF8, 0x7FFFFFF8,
                      0x80000000, 0x80000004, 0xFFFFFFF8, 0xFFFFFFFF]


_FUZZ_HIVE = []


@pytest.fixture(scope='module')
def fuzz_hive(tmp_path_factory):
    # Held outside the test's arguments so that hypothesis does not print
    # the whole hive with each example.
    _FUZZ_HIVE[:] = [hivekit.make_hive(tmp_path_factory.mktemp('fuzz'))]


@pytest.mark.usefixtures('fuzz_hive')
@hypothesis.settings(max_examples=120, deadline=None)
@hypothesis.given(strategies.data())
def test_mutated_hive_is_fixed_right_or_left_alone(tmp_path_factory, data):
    mutated = bytearray(_FUZZ_HIVE[0])
    # Mutations land in the hive bins (the base block has a checksum and
    # is refused whole): byte flips, and 32-bit words a cell offset or
    # size field could hold, 4-aligned like those fields.
    for _ in range(data.draw(strategies.integers(1, 6))):
        if data.draw(strategies.booleans()):
            offset = data.draw(strategies.integers(4096, len(mutated) - 1))
            mutated[offset] = data.draw(strategies.integers(0, 255))
        else:
            offset = data.draw(strategies.integers(
                1024, len(mutated) // 4 - 1)) * 4
            word = data.draw(strategies.sampled_from(_INTERESTING_WORDS))
            struct.pack_into('<I', mutated, offset, word)
    mutated = bytes(mutated)
    try:
        hive, actions = windows.fix_hive(mutated, WINDOWS_10)
    except exception.GuestError:
        return
    if not actions:
        assert bytes(hive.data) == mutated
        return
    tmp_path = tmp_path_factory.mktemp('mutant')
    try:
        assert_hivex_sees_only_the_edits(tmp_path, mutated, hive)
    except subprocess.CalledProcessError as exc:
        pytest.fail('hivex cannot read the edited hive: %s' % exc.stderr)
