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

"""Property: any mutation of a real VHD decodes or is cleanly refused.

Mutations flip bytes and set the trusted fields (offsets, sizes, counts,
BAT entries) to boundary values, with checksums optionally made valid
again so the checks behind them are reached. The only acceptable outcomes
are a VhdInfo with every write inside the disk, or an XenImportError with a
one-line reason.
"""

import io
import os

import hypothesis
import pytest

from glance_xen_import import exception
from glance_xen_import.formats import vhd
from tests import ovakit

MiB = ovakit.MiB


class _BoundedSink(object):
    def __init__(self):
        self.writes = []

    def write_at(self, offset, data):
        self.writes.append((offset, len(data)))


def _base(tmp_path_factory, kind):
    """A small VHD: data in block 0, in the last block, and the tail."""
    ovakit.require_tools('qemu-img', 'qemu-io')
    root = str(tmp_path_factory.mktemp('fuzz-vhd'))
    raw = ovakit.make_pattern_raw(
        os.path.join(root, 'src.raw'), 3 * MiB + 4096,
        [(0, 64 * 1024), (2 * MiB + 8192, 4096), (3 * MiB, 4096)])
    path = os.path.join(root, 'base.vhd')
    if kind == 'reverse':
        ovakit.qemu_vhd_reverse(raw, path, chunk=64 * 1024)
    elif kind == 'tap':
        ovakit.xen_vhd(raw, path, 'tap')
    else:
        ovakit.qemu_vhd(raw, path, kind, force_size=True)
    with open(path, 'rb') as f:
        return f.read()


@pytest.fixture(scope='module', params=['dynamic', 'reverse', 'tap',
                                        'fixed'])
def base(request, tmp_path_factory):
    return _base(tmp_path_factory, request.param)


def check_decode(data, with_size, max_virtual_size=1 << 40):
    sink = _BoundedSink()
    try:
        info = vhd.decode(io.BytesIO(data), sink,
                          member_size=len(data) if with_size else None,
                          max_virtual_size=max_virtual_size)
    except exception.XenImportError as exc:
        message = str(exc)
        assert message and '\n' not in message
        return None
    assert 0 < info.current_size <= max_virtual_size
    for offset, length in sink.writes:
        assert 0 <= offset and offset + length <= info.current_size
    return info


def test_base_inputs_decode(base):
    # The unmutated inputs are good: the properties below start from
    # success, not from an input that is refused anyway.
    assert check_decode(base, True) is not None
    assert check_decode(base, False) is not None


@hypothesis.given(data=hypothesis.strategies.data(),
                  with_size=hypothesis.strategies.booleans())
def test_mutated_vhd(base, data, with_size):
    mutation = data.draw(ovakit.vhd_mutations(base))
    mutated = ovakit.apply_vhd_mutation(base, **mutation)
    check_decode(mutated, with_size)


@hypothesis.given(cut=hypothesis.strategies.integers(0, 4 * MiB))
def test_truncated_vhd(base, cut):
    check_decode(base[:cut], True)
    check_decode(base[:cut], False)


@hypothesis.given(data=hypothesis.strategies.binary(min_size=0,
                                                    max_size=4096),
                  with_size=hypothesis.strategies.booleans())
def test_random_bytes(data, with_size):
    check_decode(data, with_size)
