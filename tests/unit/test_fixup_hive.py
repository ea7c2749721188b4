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

"""The in-place SYSTEM hive edits, checked with hivex and libregf.

The hives are made by hivex (tests/fixtures/hives/make.sh); the edited
hive is read back by hivexget (Debian's libhivex-bin) and by libregf, two
readers that share no code with the editor.
"""

import io
import os
import shutil
import struct
import subprocess
import xml.etree.ElementTree as etree

import hypothesis
from hypothesis import strategies
import pyregf
import pytest

from glance_xen_import import exception
from glance_xen_import.fixup import regf
from glance_xen_import.fixup import windows

HIVES = os.path.join(os.path.dirname(__file__), os.pardir, 'fixtures',
                     'hives')
SYSTEM_CLASS = r'{4d36e97d-e325-11ce-bfc1-08002be10318}'
HDC_CLASS = r'{4d36e96a-e325-11ce-bfc1-08002be10318}'


def _hive_bytes(name):
    with open(os.path.join(HIVES, name), 'rb') as f:
        return f.read()


def _edited(name, nt_version=(6, 1)):
    original = _hive_bytes(name)
    hive = regf.Hive(original)
    actions = windows.neutralise(hive, nt_version)
    return original, hive, actions


def _hivexget(tmp_path, data, key, value=None):
    if shutil.which('hivexget') is None:
        pytest.skip('hivexget (Debian libhivex-bin) is not installed')
    path = tmp_path / 'hive'
    path.write_bytes(bytes(data))
    command = ['hivexget', str(path), key] + ([value] if value else [])
    return subprocess.run(command, check=True, capture_output=True,
                          text=True).stdout


def _regf_key(data, path):
    hive_file = pyregf.file()
    hive_file.open_file_object(io.BytesIO(bytes(data)))
    return hive_file, hive_file.get_root_key().get_sub_key_by_path(path)


def test_control_sets_follow_select():
    hive = regf.Hive(_hive_bytes('xen-system.hive'))
    # Current=Default=1 and LastKnownGood=2; ControlSet003 is not used.
    assert windows.control_sets(hive) == ['ControlSet001', 'ControlSet002']


def test_neutralise_reports_each_kind_of_change():
    _original, _hive, actions = _edited('xen-system.hive', (6, 2))
    assert actions == [
        'disabled:xenbus', 'disabled:xenfilt', 'disabled:xenvbd',
        'filter-removed:scsifilt', 'filter-removed:xenfilt',
        'forceunplug-cleared', 'startoverride-cleared:storahci']


@pytest.mark.parametrize('control_set,service,expected', [
    ('ControlSet001', 'xenbus', '4'),
    ('ControlSet001', 'xenfilt', '4'),
    ('ControlSet001', 'xenvbd', '4'),
    ('ControlSet001', 'xennet', '4'),
    ('ControlSet002', 'xenbus', '4'),
    # Not a Xen service, and a control set Select does not name.
    ('ControlSet001', 'Disk', '0'),
    ('ControlSet003', 'xenbus', '0'),
])
def test_services_disabled_as_hivex_reads_them(tmp_path, control_set,
                                               service, expected):
    _original, hive, _actions = _edited('xen-system.hive')
    out = _hivexget(tmp_path, hive.data,
                    '%s\\Services\\%s' % (control_set, service), 'Start')
    assert out.strip() == expected


def test_filters_removed_and_others_kept(tmp_path):
    _original, hive, _actions = _edited('xen-system.hive')
    out = _hivexget(tmp_path, hive.data,
                    'ControlSet001\\Control\\Class\\' + SYSTEM_CLASS,
                    'UpperFilters')
    assert out.split() == ['PartMgr']
    hive_file, key = _regf_key(hive.data,
                               'ControlSet001\\Control\\Class\\' + HDC_CLASS)
    try:
        # A list left empty is deleted, as XenBootFix does.
        assert key.get_value_by_name('UpperFilters') is None
        assert key.get_value_by_name('LowerFilters') is None
        assert key.get_value_by_name('Class').get_data_as_string() == 'hdc'
    finally:
        hive_file.close()


def test_force_unplug_asks_for_nothing(tmp_path):
    _original, hive, _actions = _edited('xen-system.hive')
    out = _hivexget(tmp_path, hive.data,
                    'ControlSet001\\Services\\XEN\\ForceUnplug')
    assert '"DISKS"=dword:00000000' in out
    assert '"NICS"=dword:00000000' in out


def test_start_override_only_from_nt_6_2(tmp_path):
    path = 'ControlSet001\\Services\\storahci\\StartOverride'
    for version, remaining in (((6, 1), 1), ((10, 0), 0)):
        _original, hive, _actions = _edited('xen-system.hive', version)
        hive_file, key = _regf_key(hive.data, path)
        try:
            assert key.number_of_values == remaining
        finally:
            hive_file.close()


def test_hive_keeps_size_and_base_block():
    original, hive, _actions = _edited('xen-system.hive', (10, 0))
    assert len(hive.data) == len(original)
    assert hive.data[:regf.BASE_BLOCK_SIZE] == original[
        :regf.BASE_BLOCK_SIZE]
    changed = [i for i in range(len(original)) if hive.data[i] !=
               original[i]]
    assert changed and set(changed) <= hive.changed
    windows.verify(hive.data, windows.control_sets(hive))


def test_verify_refuses_a_storage_override_left_behind():
    # The fixture's storage drivers carry StartOverride values; a hive
    # claimed cleared that still has them is refused.
    _original, hive, _actions = _edited('xen-system.hive', (10, 0))
    sets = windows.control_sets(hive)
    windows.verify(hive.data, sets, overrides_cleared=True)
    # NT 6.1 edits leave StartOverride alone (Windows 7 has none).
    _original, hive, _actions = _edited('xen-system.hive', (6, 1))
    windows.verify(hive.data, sets)
    with pytest.raises(exception.GuestError,
                       match=r'still has a StartOverride$'):
        windows.verify(hive.data, sets, overrides_cleared=True)


def test_hive_reads_back_whole_with_hivexml(tmp_path):
    if shutil.which('hivexml') is None:
        pytest.skip('hivexml (Debian libhivex-bin) is not installed')
    _original, hive, _actions = _edited('xen-system.hive', (10, 0))
    path = tmp_path / 'hive'
    path.write_bytes(bytes(hive.data))
    xml = subprocess.run(['hivexml', str(path)], check=True,
                         capture_output=True).stdout
    filters = [s.text for value in etree.fromstring(xml).iter('value')
               if value.get('key') in windows.FILTER_VALUES
               for s in value.iter('string') if s.text]
    # ControlSet003 is not named by Select and keeps nothing filtered
    # either; PartMgr of ControlSet001 stays.
    assert filters == ['PartMgr']


def test_clean_guest_is_left_byte_identical():
    original, hive, actions = _edited('clean-system.hive', (10, 0))
    assert actions == []
    assert bytes(hive.data) == original
    assert not hive.changed


def test_dirty_hive_is_refused():
    with pytest.raises(exception.GuestError, match='dirty'):
        regf.Hive(_hive_bytes('dirty-system.hive'))


def test_checksum_matches_hivex():
    data = _hive_bytes('xen-system.hive')
    assert regf.base_block_checksum(data) == struct.unpack_from(
        '<I', data, 508)[0]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(strategies.lists(
    strategies.tuples(strategies.integers(4096, 12287),
                      strategies.integers(0, 255)),
    min_size=1, max_size=8))
def test_damaged_hive_fails_cleanly(flips):
    data = bytearray(_hive_bytes('xen-system.hive'))
    for offset, value in flips:
        data[offset] = value
    try:
        hive = regf.Hive(data)
        windows.neutralise(hive, (10, 0))
    except exception.GuestError:
        pass


def test_start_as_binary_and_filters_as_string_are_handled(tmp_path):
    _original, hive, actions = _edited('odd-types-system.hive')
    assert actions == ['disabled:xenvbd', 'filter-removed:xenfilt']
    start = _hivexget(tmp_path, hive.data, 'ControlSet001\\Services\\xenvbd')
    assert '"Start"=hex(3):04,00,00,00' in start
    system = _hivexget(tmp_path, hive.data,
                       'ControlSet001\\Control\\Class\\' + SYSTEM_CLASS)
    assert 'UpperFilters' not in system
    hdc = _hivexget(tmp_path, hive.data,
                    'ControlSet001\\Control\\Class\\' + HDC_CLASS,
                    'UpperFilters')
    assert hdc.strip() == 'PartMgr'
    windows.verify(hive.data, windows.control_sets(hive))
