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

"""Issue 9: bounds from the package, one digest thread, depth, sanitising.

Bombs are real gzip/bzip2 streams of zeros (ovakit.write_zero_bomb); what
was decompressed and written is counted by wrappers around the real
decompressor and writer, and compared with the bound the package declares.
"""

import os
import threading
import urllib.parse

import pytest

from glance_xen_import import exception
from glance_xen_import.formats import compression
from glance_xen_import.formats import ovf as ovf_format
from glance_xen_import.formats import raw
from glance_xen_import import pipeline
from glance_xen_import import sanitize
from tests import ovakit

MiB = ovakit.MiB
GiB = 1024 * MiB


class Counter(object):
    decompressed = 0
    written_end = 0


@pytest.fixture
def counted(monkeypatch):
    """Count decompressed bytes and the furthest byte written."""
    counter = Counter()
    real_read = compression.Decompressor.read
    real_write = raw.SparseWriter.write_at

    def read(self, size):
        data = real_read(self, size)
        counter.decompressed += len(data)
        return data

    def write_at(self, offset, data):
        counter.written_end = max(counter.written_end, offset + len(data))
        return real_write(self, offset, data)

    monkeypatch.setattr(compression.Decompressor, 'read', read)
    monkeypatch.setattr(raw.SparseWriter, 'write_at', write_at)
    return counter


def refused(tmp_path, source, match):
    """Convert into an empty directory: refused, and nothing left there."""
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    with pytest.raises(exception.XenImportError, match=match):
        pipeline.convert(source, str(out_dir / 'vm.raw'))
    assert os.listdir(out_dir) == [], 'output left behind'


def one_disk_ova(tmp_path, disk, member_path):
    """An OVA of a descriptor for disk and its member's bytes."""
    ova = str(tmp_path / 'vm.ova')
    ovakit.write_tar(ova, [
        ovakit.Member('vm.ovf', data=ovakit.ovf_descriptor([disk])),
        ovakit.Member(disk.href, path=member_path)])
    return ova


def fake_disk(href, capacity, compression=None, boot=True, address=0):
    # The path only seeds the disk id; no file is read for it.
    return ovakit.OvaDisk(path=href, capacity=capacity, file_size=1,
                          href=href, compression=compression, boot=boot,
                          address=address)


@pytest.mark.parametrize('kind', ['gzip', 'bzip2'])
def test_compressed_member_bomb_stops_at_capacity(tmp_path, counted, kind):
    """1 GiB of zeros in a member whose OVF capacity is 16 MiB."""
    disk = fake_disk('bomb.vhd.x', 16 * MiB, compression=kind)
    bomb = str(tmp_path / 'bomb')
    with open(bomb, 'wb') as out:
        ovakit.write_zero_bomb(out, kind, 1 * GiB)
    ova = one_disk_ova(tmp_path, disk, bomb)
    refused(tmp_path, ova,
            'fixed VHD holds more than the 16777216 bytes of data its '
            'declared size allows')
    # The declared data and its footer, and the one byte that proves more.
    assert counted.decompressed <= 16 * MiB + 512 + 1
    assert counted.written_end <= 16 * MiB


@pytest.mark.parametrize('kind', ['gzip', 'bzip2'])
def test_unreferenced_member_in_compressed_ova(tmp_path, counted, corpus,
                                               kind):
    """8 GiB of zeros the descriptor does not reference, in an .ova.gz."""
    plain = str(tmp_path / 'plain.ova')
    ovakit.make_ova(plain, [ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))],
                    name='vm', manifest_algorithm=None)
    ova = ovakit.splice_zero_member(plain, str(tmp_path / 'vm.ova.gz'),
                                    after=1, name='notes.bin',
                                    size=8 * GiB, kind=kind)
    assert os.path.getsize(ova) < 16 * MiB
    refused(tmp_path, ova,
            'member notes.bin is not referenced by the OVF descriptor and '
            'such members may hold 1048576 bytes in all; it is 8589934592 '
            'bytes')
    # The descriptor and a header were decompressed, none of the zeros.
    assert counted.decompressed < 2 * MiB


def test_small_unreferenced_member_is_skipped(tmp_path, corpus):
    ova = str(tmp_path / 'vm.ova')
    ovakit.make_ova(ova, [ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))],
                    name='vm', extra_members=[
                        ovakit.Member('README.txt', data=b'x' * 4096)])
    report = pipeline.convert(ova, str(tmp_path / 'vm.raw'))
    assert report.manifest == 'verified'


def test_extra_disk_member_larger_than_its_capacity(tmp_path, counted,
                                                    corpus):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    extra = fake_disk('data.vhd', 16 * MiB, boot=False, address=1)
    plain = str(tmp_path / 'plain.ova')
    ovakit.make_ova(plain, [boot], manifest_algorithm=None,
                    ovf=ovakit.ovf_descriptor([boot, extra]))
    ova = ovakit.splice_zero_member(plain, str(tmp_path / 'vm.ova.gz'),
                                    after=2, name='data.vhd', size=8 * GiB)
    # A 16 MiB disk in 512-byte blocks behind 512-byte bitmaps, with the
    # largest BAT (2 Mi entries of 4 bytes), header, footer and its copy.
    bound = 2 * 16 * MiB + 8 * MiB + 1024 + 2 * 512
    refused(tmp_path, ova,
            'file data.vhd holds more than %d bytes, the most the VHD of '
            'a disk of 16777216 bytes can take' % bound)
    assert counted.decompressed < 2 * MiB + os.path.getsize(boot.path)


def test_dynamic_vhd_with_a_gap_before_its_footer(tmp_path, counted, corpus):
    """Zeros between the last block and the footer, gzipped in the member."""
    vhd = corpus.vhd('caml', 'gpt16')
    with open(vhd, 'rb') as f:
        data = f.read()
    member = str(tmp_path / 'disk.vhd.gz')
    with open(member, 'wb') as out:
        out.write(ovakit.compress(data[:-512], 'gzip'))
        ovakit.write_zero_bomb(out, 'gzip', 1 * GiB)
        out.write(ovakit.compress(data[-512:], 'gzip'))
    disk = fake_disk('disk.vhd.gz', ovakit.footer_info(vhd)['current_size'],
                     compression='gzip')
    ova = one_disk_ova(tmp_path, disk, member)
    refused(tmp_path, ova,
            r'dynamic VHD runs past \d+ bytes, the most its \d+ allocated '
            r'blocks and its metadata take')
    # The metadata bound: the file, one spare block span and 8 MiB slack.
    assert counted.decompressed <= len(data) + 2 * MiB + 512 + 8 * MiB + 1


def test_deep_descriptor_refused():
    text = (b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
            + b'<a>' * 1000 + b'</a>' * 1000 + b'</Envelope>')
    with pytest.raises(exception.InvalidPackage,
                       match='^OVF descriptor nests elements more than 64 '
                             'deep$'):
        ovf_format.parse(text)


@pytest.mark.parametrize('manifest_last', [False, True])
def test_thousands_of_members_use_one_digest_thread(tmp_path, corpus,
                                                    monkeypatch,
                                                    manifest_last):
    started = []
    real_start = threading.Thread.start

    def start(self):
        started.append((self.name, threading.active_count()))
        return real_start(self)

    monkeypatch.setattr(threading.Thread, 'start', start)
    ova = str(tmp_path / 'vm.ova')
    order = (lambda ms: ms[:1] + ms[2:] + ms[1:2]) if manifest_last else None
    ovakit.make_ova(ova, [ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))],
                    name='vm', order=order, extra_members=[
                        ovakit.Member('n%04d.txt' % i, data=b'%d' % i)
                        for i in range(4000)])
    baseline = threading.active_count()
    report = pipeline.convert(ova, str(tmp_path / 'vm.raw'))
    assert report.manifest == 'verified'
    digest_threads = [s for s in started if s[0] == 'manifest-digest']
    assert len(digest_threads) == 1
    assert max(count for _, count in started) <= baseline + 1


def test_sanitize_text():
    assert sanitize.text('a\nb\u202ec\\d\x85') == 'a\\x0ab\\u202ec\\\\d\\x85'
    long = sanitize.text('\u202e' * 1000)
    assert len(long) <= sanitize.MAX_TEXT and long.endswith('...')
    # No escape is cut in half.
    assert long[:-3].replace('\\u202e', '') == ''


def test_sanitize_list_item_round_trips():
    for href in ['a,b:c%d e\tf\u202eg\\h.vhd', 'plain-name.vhd', 'ü.vhd']:
        item = sanitize.list_item(href)
        assert not set(item) & set(',: \t\u202e')
        # Decoded by the standard library, not by us.
        assert urllib.parse.unquote(item) == href


def _hostile_ova(tmp_path, corpus, href_xml):
    boot = ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))
    extra = fake_disk('PLACEHOLDER.vhd', 16 * MiB, boot=False, address=1)
    descriptor = ovakit.ovf_descriptor([boot, extra]).replace(
        b'PLACEHOLDER.vhd', href_xml.encode())
    ova = str(tmp_path / 'vm.ova')
    ovakit.make_ova(ova, [boot], ovf=descriptor)
    return ova


def test_hostile_extra_disk_href_in_property(tmp_path, corpus):
    # ':' is refused in any href (a URL), so it cannot be tried here.
    href = 'a,b\nfake 50%,x=1\u202e.vhd'
    ova = _hostile_ova(tmp_path, corpus,
                       'a,b&#10;fake 50%,x=1&#x202e;.vhd')
    report = pipeline.convert(ova, str(tmp_path / 'vm.raw'))
    value = report.properties['xen_import_skipped_disks']
    items = value.split(',')
    assert len(items) == 1
    encoded, capacity = items[0].split(':')
    assert urllib.parse.unquote(encoded) == href
    assert capacity == str(16 * MiB)


def test_long_href_is_capped_everywhere(tmp_path, corpus):
    ova = _hostile_ova(tmp_path, corpus, 'x' * 200000 + '.vhd')
    report = pipeline.convert(ova, str(tmp_path / 'vm.raw'))
    for value in report.properties.values():
        assert len(value) <= sanitize.MAX_PROPERTY
    # One item still: the href cut to 200 characters, marked by '...'.
    assert report.properties['xen_import_skipped_disks'] == (
        'x' * 197 + '...:%d' % (16 * MiB))
    disk = report.to_dict()['other_disks'][0]
    assert len(disk['href']) <= sanitize.MAX_JSON_TEXT
