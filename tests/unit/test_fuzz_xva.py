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

"""Property: the XVA reader never fails uncleanly.

ova.xml documents from tests/xvakit get hostile values at random places;
whole XVAs get bytes flipped, removed or inserted. Every input gives a
result that keeps the reader's promises, or an XenImportError with a
one-line reason and no output left; any other exception is a bug.
"""

import copy
import os
import shutil

import hypothesis
from hypothesis import strategies as st
import pytest

from glance_xen_import import exception
from glance_xen_import.formats import xva
from tests import ovakit
from tests.unit import xva_helpers
from tests import xvakit

MiB = xvakit.MiB
MAX_DISK = 4 << 40

HOSTILE = st.one_of(
    st.text(max_size=30), st.integers(-2 ** 70, 2 ** 70), st.booleans(),
    st.floats(allow_nan=True), st.just(''), st.just('OpaqueRef:NULL'),
    st.sampled_from(['Ref:95', 'Ref:98', 'Ref:99', 'Ref:100', 'Ref:101',
                     'CD', 'cd', 'iso', 'suspend', 'uefi', '-1', '1e9',
                     '18446744073709551616', 'Ref:99/x', '']),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))


def _base_value():
    disks = [xvakit.Disk('unused', 'root', size=10 * MiB),
             xvakit.Disk('unused', 'data', size=3 * MiB)]
    return xvakit.ova_value(xvakit.Vm(firmware='uefi'), disks,
                            xvakit.Ids(95), cd='iso')


BASE = _base_value()


def _paths(value, prefix=()):
    """Every place in ``value``: a path of keys and indexes."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


PATHS = [p for p in _paths(BASE) if p]


def _set(value, path, new):
    for key in path[:-1]:
        value = value[key]
    value[path[-1]] = new


def check_descriptor(desc):
    assert desc.disks
    assert [d.position for d in desc.disks] == list(range(len(desc.disks)))
    assert [d.userdevice for d in desc.disks] == sorted(
        d.userdevice for d in desc.disks)
    refs = dict(desc.streams)
    for disk in desc.disks:
        assert refs[disk.ref] == disk.capacity <= MAX_DISK
        assert '/' not in disk.ref
    assert [r for r, _s in desc.streams] == sorted(refs)
    assert desc.domain_type in xva.DOMAIN_TYPES
    assert desc.firmware in xva.FIRMWARES
    assert all(isinstance(v, str) for v in desc.platform.values())


@hypothesis.given(st.lists(st.tuples(st.sampled_from(PATHS), HOSTILE),
                           min_size=1, max_size=4))
def test_hostile_values_in_ova_xml(edits):
    value = copy.deepcopy(BASE)
    for path, new in edits:
        try:
            _set(value, path, new)
        except (KeyError, IndexError, TypeError):
            pass        # an earlier edit replaced a parent
    data = xvakit.xmlrpc(value).encode()
    try:
        desc = xva.parse_descriptor(data, max_disk_size=MAX_DISK)
    except exception.XenImportError as exc:
        assert str(exc) and '\n' not in str(exc)
        return
    check_descriptor(desc)


@pytest.fixture(scope='module')
def small_xva(tmp_path_factory):
    ovakit.require_tools('qemu-img', 'qemu-io')
    root = tmp_path_factory.mktemp('fuzz-xva')
    one = xvakit.qemu_pattern_raw(str(root / 'one.raw'), MiB + 512, [
        (0, 512, 0x21), (MiB, 512, 0x22)])
    two = xvakit.qemu_pattern_raw(str(root / 'two.raw'), 2 * MiB, [
        (MiB + 4096, 512, 0x23)])
    path = str(root / 'vm.xva')
    xvakit.make_xva(path, [xvakit.Disk(one, 'one'), xvakit.Disk(two, 'two')],
                    keepalive_before={1: [1]})
    with open(path, 'rb') as f:
        return f.read()


MUTATION = st.tuples(
    st.sampled_from(['flip', 'delete', 'insert', 'cut']),
    st.one_of(st.integers(0, 64 * 1024), st.integers(0, 4 * MiB)),
    st.binary(min_size=1, max_size=16))


@hypothesis.given(st.lists(MUTATION, min_size=1, max_size=3))
def test_damaged_xva_bytes(small_xva, tmp_path_factory, mutations):
    data = bytearray(small_xva)
    for kind, at, blob in mutations:
        at %= len(data) + 1
        if kind == 'flip':
            data[at:at + len(blob)] = bytes(
                a ^ b for a, b in zip(data[at:at + len(blob)], blob))
        elif kind == 'delete':
            del data[at:at + len(blob)]
        elif kind == 'insert':
            data[at:at] = blob
        else:
            del data[at:]
    work = tmp_path_factory.mktemp('case')
    path = str(work / 'case.xva')
    with open(path, 'wb') as f:
        f.write(data)
    out = work / 'out'
    out.mkdir()
    try:
        pkg, paths, _read = xva_helpers.convert(path, str(out))
    except exception.XenImportError as exc:
        assert str(exc) and '\n' not in str(exc)
        assert os.listdir(out) == []
    else:
        for disk, info in pkg.result.converted:
            assert os.path.getsize(paths[disk.ref]) == info.current_size
    shutil.rmtree(work)
