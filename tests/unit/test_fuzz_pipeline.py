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

"""Property: a damaged OVA is converted or refused, and never left behind.

The whole pipeline runs (package, VHD, partition check, guest inspection)
on a real OVA whose bytes are flipped or cut, and on OVAs whose VHD was
mutated (checksums made valid again) before packing. Success must leave a
RAW of exactly the reported size; refusal an XenImportError and no RAW.
"""

import io
import os
import shutil
import tarfile
import tempfile

import hypothesis
from hypothesis import strategies as st
import pytest

from glance_xen_import import exception
from glance_xen_import import options
from glance_xen_import import pipeline
from tests import ovakit

MiB = ovakit.MiB
POLICIES = [options.MANIFEST_VERIFY, options.MANIFEST_IGNORE]


@pytest.fixture(scope='module')
def package(tmp_path_factory):
    ovakit.require_tools('qemu-img', 'sfdisk', 'mkfs.ext4')
    root = str(tmp_path_factory.mktemp('fuzz-ova'))
    raw = ovakit.make_raw_disk(os.path.join(root, 'd.raw'), 8 * MiB,
                               table='mbr', seed=9)
    vhd = ovakit.xen_vhd(raw.path, os.path.join(root, 'd.vhd'), 'caml')
    disk = ovakit.OvaDisk(vhd, href='disk.vhd')
    ova = ovakit.make_ova(os.path.join(root, 'p.ova'), [disk])
    with open(ova.path, 'rb') as f, open(vhd, 'rb') as v:
        return {'ova': f.read(), 'vhd': v.read(), 'disk': disk,
                'ovf': ova.ovf, 'raw': raw}


def run_pipeline(source, policy):
    workdir = tempfile.mkdtemp()
    dest = os.path.join(workdir, 'out.raw')
    try:
        try:
            report = pipeline.convert(
                source, dest, opts=options.Options(manifest_policy=policy))
        except exception.XenImportError as exc:
            message = str(exc)
            assert message and '\n' not in message
            assert not os.path.exists(dest)
            return None
        assert os.path.getsize(dest) == report.virtual_size
        return report
    finally:
        shutil.rmtree(workdir)


def test_base_package_converts(package):
    for policy in POLICIES:
        assert run_pipeline(io.BytesIO(package['ova']), policy)


def _hot_offsets(ova):
    """Starts of the tar headers, the OVF, the manifest, the VHD metadata."""
    with tarfile.open(fileobj=io.BytesIO(ova)) as tar:
        members = tar.getmembers()
    hot = []
    for m in members:
        hot += [m.offset, m.offset_data]
        if m.name.endswith('.vhd'):
            hot += [m.offset_data + 512, m.offset_data + 1536,
                    m.offset_data + m.size - 512]
    return hot


@hypothesis.settings(max_examples=100)
@hypothesis.given(data=st.data(), policy=st.sampled_from(POLICIES))
def test_damaged_ova_bytes(package, data, policy):
    ova = bytearray(package['ova'])
    hot = _hot_offsets(package['ova'])
    position = st.one_of(
        st.sampled_from(hot).flatmap(
            lambda h: st.integers(h, min(h + 1023, len(ova) - 1))),
        st.integers(0, len(ova) - 1))
    for offset, xor in data.draw(st.lists(
            st.tuples(position, st.integers(1, 255)), min_size=1,
            max_size=4)):
        ova[offset] ^= xor
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(ova))))
    if cut is not None:
        del ova[cut:]
    run_pipeline(io.BytesIO(bytes(ova)), policy)


@hypothesis.settings(max_examples=100)
@hypothesis.given(data=st.data(), policy=st.sampled_from(POLICIES))
def test_mutated_vhd_in_package(package, data, policy):
    mutation = data.draw(ovakit.vhd_mutations(package['vhd']))
    vhd = ovakit.apply_vhd_mutation(package['vhd'], **mutation)
    members = [ovakit.Member('p.ovf', data=package['ovf']),
               ovakit.Member('disk.vhd', data=vhd)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.size = len(m.data)
            tar.addfile(info, io.BytesIO(m.data))
    buf.seek(0)
    run_pipeline(buf, policy)


@hypothesis.settings(max_examples=100)
@hypothesis.given(data=st.data())
def test_damaged_guest_disk(package, data):
    # The VHD stays valid; the disk inside it does not: partition table,
    # ext4 superblock and metadata damaged. Reaches the partition check
    # and the guest inspection.
    vhd = bytearray(package['vhd'])
    disk = ovakit.DynamicVhd.load_bytes(bytes(vhd))
    first = disk.bat[0] * 512 + disk.bitmap_size   # block 0's data
    part = package['raw'].part_offset
    position = st.one_of(st.integers(first, first + 511),
                         st.integers(first + part, first + part + 4095),
                         st.integers(first + part, first + part + 262143))
    for offset, xor in data.draw(st.lists(
            st.tuples(position, st.integers(1, 255)), min_size=1,
            max_size=6)):
        vhd[offset] ^= xor
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name, body in (('p.ovf', package['ovf']),
                           ('disk.vhd', bytes(vhd))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    buf.seek(0)
    run_pipeline(buf, options.MANIFEST_IGNORE)
