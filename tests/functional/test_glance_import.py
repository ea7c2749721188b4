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

"""Imports through a real glance-api 33 with the xen_ova plugin enabled.

Every image is created and imported with the ``glance`` CLI (or plain REST
where the CLI cannot express the request), then downloaded and compared
byte for byte with qemu-img's own conversion of the same VHD.
"""

import concurrent.futures
import filecmp
import hashlib
import json
import lzma
import os
import re
import shutil

import pytest

from glance_xen_import import exception
from glance_xen_import import options
from glance_xen_import import pipeline
from tests.functional import glance_server
from tests import ovakit


def create_via_import(server, source, *args):
    """``glance image-create-via-import``; returns the new image id."""
    argv = ['image-create-via-import', '--name', os.path.basename(source)]
    if '--uri' not in args:
        argv += ['--file', source]
    result = server.glance(*(argv + list(args)))
    return glance_server.image_id(result.stdout)


def expected_report(ova, tmp_path):
    """What the plugin must publish: the pipeline run on the same OVA."""
    dest = str(tmp_path / ('report-%s.raw' % os.path.basename(ova)))
    report = pipeline.convert(ova, dest)
    os.remove(dest)
    return report


def expected_refusal(ova, tmp_path):
    dest = str(tmp_path / ('refused-%s.raw' % os.path.basename(ova)))
    with pytest.raises(exception.XenImportError) as info:
        pipeline.convert(ova, dest)
    assert not os.path.exists(dest)
    return str(info.value)


def assert_imported(server, image_id, disk, tmp_path, stores=None):
    image, task = server.wait_for_import(image_id)
    assert task['status'] == 'success', (task, server.logs())
    assert image['status'] == 'active'
    assert image['container_format'] == 'bare'
    assert image['disk_format'] == 'raw'
    assert image['size'] == disk.size
    assert image['virtual_size'] == disk.size
    if stores:
        assert sorted(image['stores'].split(',')) == sorted(stores)

    for key, value in expected_report(disk.ova, tmp_path).properties.items():
        assert image.get(key) == value, key

    out = str(tmp_path / ('%s.download' % image_id))
    server.glance('image-download', '--file', out, image_id)
    assert filecmp.cmp(out, disk.expected, shallow=False)
    os.remove(out)
    assert server.staged_files(image_id) == []
    return image


# -- discovery -------------------------------------------------------------

def test_import_info_lists_xen_ova(glance):
    output = glance.glance('import-info').stdout
    methods = json.loads(glance_server.table_value(output, 'import-methods'))
    assert methods['value'] == ['glance-direct', 'web-download',
                                'copy-image', 'xen-ova']


# -- single store ----------------------------------------------------------

@pytest.mark.parametrize('kind', ['dynamic', 'tap', 'fixed'])
def test_glance_direct_ova(glance, disks, tmp_path, kind):
    disk = disks[kind]
    image_id = create_via_import(glance, disk.ova, '--container-format',
                                 'ova', '--disk-format', 'vhd')
    assert_imported(glance, image_id, disk, tmp_path)


@pytest.mark.parametrize('method', ['glance-direct', 'xen-ova'])
def test_stage_then_import_fixed_vhd(glance, disks, tmp_path, method):
    disk = disks['fixed']
    created = glance.glance('image-create', '--name', 'staged-' + method,
                            '--container-format', 'ova',
                            '--disk-format', 'vhd')
    image_id = glance_server.image_id(created.stdout)
    glance.glance('image-stage', '--file', disk.ova, image_id)
    assert glance.image(image_id)['status'] == 'uploading'
    glance.glance('image-import', '--import-method', method, image_id)
    assert_imported(glance, image_id, disk, tmp_path)


def test_xen_ova_method_converts_whatever_the_container(
        glance, disks, tmp_path):
    # bare/raw describe the result; the xen-ova method alone makes the
    # plugin act.
    disk = disks['dynamic']
    image_id = create_via_import(glance, disk.ova, '--import-method',
                                 'xen-ova', '--container-format', 'bare',
                                 '--disk-format', 'raw')
    assert_imported(glance, image_id, disk, tmp_path)
    task = glance.tasks(image_id)[0]
    status, _, detail = glance.api('GET', '/v2/tasks/%s' % task['id'])
    assert status == 200
    assert detail['input']['import_req']['method'] == {
        'name': 'glance-direct', 'xen_ova': True}


def test_web_download_ova(glance, disks, web_root, tmp_path):
    disk = disks['dynamic']
    uri = web_root.publish(disk.ova, 'web-download.ova')
    image_id = create_via_import(glance, disk.ova, '--import-method',
                                 'web-download', '--uri', uri,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd')
    assert_imported(glance, image_id, disk, tmp_path)


def test_xen_ova_method_with_uri_becomes_web_download(glance, disks,
                                                      web_root, tmp_path):
    # glanceclient only sends a uri with web-download, so this is REST.
    disk = disks['fixed']
    uri = web_root.publish(disk.ova, 'xen-ova-uri.ova')
    status, _, image = glance.api('POST', '/v2/images', {
        'name': 'xen-ova-uri', 'container_format': 'ova',
        'disk_format': 'vhd'})
    assert status == 201
    status, _, body = glance.api(
        'POST', '/v2/images/%s/import' % image['id'],
        {'method': {'name': 'xen-ova', 'uri': uri}})
    assert status == 202, body
    assert_imported(glance, image['id'], disk, tmp_path)
    task = glance.tasks(image['id'])[0]
    _, _, detail = glance.api('GET', '/v2/tasks/%s' % task['id'])
    assert detail['input']['import_req']['method'] == {
        'name': 'web-download', 'uri': uri, 'xen_ova': True}


def test_plain_raw_image_is_untouched(glance, tmp_path):
    data = tmp_path / 'plain.raw'
    data.write_bytes(os.urandom(3 * 1024 * 1024 + 512))
    image_id = create_via_import(glance, str(data), '--container-format',
                                 'bare', '--disk-format', 'raw',
                                 '--property', 'note=plain')
    image, task = glance.wait_for_import(image_id)
    assert task['status'] == 'success', task
    assert (image['status'], image['container_format'],
            image['disk_format']) == ('active', 'bare', 'raw')
    out = str(tmp_path / 'plain.download')
    glance.glance('image-download', '--file', out, image_id)
    assert filecmp.cmp(out, str(data), shallow=False)
    # Only what the user set: no property comes from the plugin.
    report_keys = {'hw_disk_bus', 'hw_scsi_model', 'os_type'}
    assert not report_keys & set(image)
    assert image['note'] == 'plain'
    assert glance.staged_files(image_id) == []


def test_concurrent_imports(glance, disks, tmp_path):
    jobs = [disks['dynamic'], disks['tap'], disks['fixed'],
            disks['dynamic']]
    # Staged one after the other: the harness's sqlite database does not
    # take concurrent writers well. The imports, and so the conversions in
    # Glance's task pool, are started together.
    ids = []
    for number, disk in enumerate(jobs):
        created = glance.glance('image-create', '--name', 'parallel-%d'
                                % number, '--container-format', 'ova',
                                '--disk-format', 'vhd')
        ids.append(glance_server.image_id(created.stdout))
        glance.glance('image-stage', '--file', disk.ova, ids[-1])
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda image_id: glance.glance(
            'image-import', '--import-method', 'glance-direct', image_id),
            ids))
    for image_id, disk in zip(ids, jobs):
        assert_imported(glance, image_id, disk, tmp_path)


# -- refusals --------------------------------------------------------------

def _differencing(tmp_path, disks):
    vhd = ovakit.make_differencing(disks['dynamic'].vhd,
                                   str(tmp_path / 'child.vhd'),
                                   '/var/run/sr-mount/parent.vhd')
    return ovakit.make_ova(str(tmp_path / 'differencing.ova'),
                           [ovakit.OvaDisk(vhd)]).path


def _xxe(tmp_path, disks):
    disk = ovakit.OvaDisk(disks['fixed'].vhd)
    doctype = ('<!DOCTYPE ovf:Envelope [<!ENTITY xxe SYSTEM '
               '"file:///etc/passwd">]>')
    ovf = ovakit.ovf_descriptor([disk], os_description='XXE',
                                doctype=doctype)
    ovf = ovf.replace(b'>XXE<', b'>&xxe;<')
    return ovakit.make_ova(str(tmp_path / 'xxe.ova'), [disk], ovf=ovf).path


def _traversal(tmp_path, disks):
    disk = ovakit.OvaDisk(disks['fixed'].vhd, href='../disk0.vhd')
    return ovakit.make_ova(str(tmp_path / 'traversal.ova'), [disk]).path


def _bad_manifest(tmp_path, disks):
    disk = ovakit.OvaDisk(disks['fixed'].vhd)
    ovf = ovakit.ovf_descriptor([disk])
    wrong = ovakit.file_digest(disks['dynamic'].vhd, 'sha256')
    entries = [('vm.ovf', hashlib.sha256(ovf).hexdigest()),
               (disk.href, wrong)]
    return ovakit.make_ova(str(tmp_path / 'bad-manifest.ova'), [disk],
                           ovf=ovf, ovf_name='vm.ovf',
                           manifest_entries=entries).path


def _not_a_tar(tmp_path, disks):
    return os.path.join(ovakit.FIXTURES, 'glance-testserver-not-tar.ova')


BAD_OVAS = {
    # name: (builder, words of which the reason must contain one)
    'differencing-vhd': (_differencing, ('differencing',)),
    'xxe-ovf': (_xxe, ('entit', 'dtd', 'doctype')),
    'path-traversal': (_traversal, ('..', 'path', 'member name')),
    'manifest-mismatch': (_bad_manifest, ('manifest', 'digest')),
    'not-a-tar': (_not_a_tar, ('tar', 'ova')),
}


def assert_refused(server, image_id, reason, original):
    image, task = server.wait_for_import(image_id)
    assert task['status'] == 'failure', task
    assert task['message'] == 'xen-ova: %s' % reason
    assert image['status'] == 'queued'
    for key, value in original.items():
        assert image.get(key) == value, key
    assert server.staged_files(image_id) == []
    return image


@pytest.mark.parametrize('case', sorted(BAD_OVAS))
def test_bad_ova_is_refused(glance, disks, tmp_path, case):
    builder, words = BAD_OVAS[case]
    ova = builder(tmp_path, disks)
    reason = expected_refusal(ova, tmp_path)
    assert any(word in reason.lower() for word in words), reason
    image_id = create_via_import(glance, ova, '--container-format', 'ova',
                                 '--disk-format', 'vhd', '--property',
                                 'hw_disk_bus=ide')
    image = assert_refused(glance, image_id, reason, {
        'container_format': 'ova', 'disk_format': 'vhd',
        'hw_disk_bus': 'ide'})
    assert 'hw_scsi_model' not in image


# -- multi-store -----------------------------------------------------------

def test_multi_store_glance_direct_to_two_stores(glance_multi, disks,
                                                 tmp_path):
    disk = disks['dynamic']
    image_id = create_via_import(glance_multi, disk.ova,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd',
                                 '--stores', 'fast,cheap')
    assert_imported(glance_multi, image_id, disk, tmp_path,
                    stores=['fast', 'cheap'])


def test_multi_store_xen_ova_method_default_store(glance_multi, disks,
                                                  tmp_path):
    disk = disks['fixed']
    image_id = create_via_import(glance_multi, disk.ova, '--import-method',
                                 'xen-ova', '--container-format', 'ova',
                                 '--disk-format', 'vhd')
    assert_imported(glance_multi, image_id, disk, tmp_path, stores=['fast'])


def test_multi_store_web_download(glance_multi, disks, web_root, tmp_path):
    disk = disks['fixed']
    uri = web_root.publish(disk.ova, 'multi-web.ova')
    image_id = create_via_import(glance_multi, disk.ova, '--import-method',
                                 'web-download', '--uri', uri,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd', '--stores', 'cheap')
    assert_imported(glance_multi, image_id, disk, tmp_path, stores=['cheap'])


def test_multi_store_refusal_marks_stores_failed(glance_multi, disks,
                                                 tmp_path):
    ova = _bad_manifest(tmp_path, disks)
    reason = expected_refusal(ova, tmp_path)
    image_id = create_via_import(glance_multi, ova, '--container-format',
                                 'ova', '--disk-format', 'vhd',
                                 '--stores', 'fast,cheap')
    image = assert_refused(glance_multi, image_id, reason, {
        'container_format': 'ova', 'disk_format': 'vhd'})
    assert sorted(image['os_glance_failed_import'].split(',')) == [
        'cheap', 'fast']
    assert not image.get('os_glance_importing_to_stores')


# -- failure after the conversion ------------------------------------------

def test_disk_over_image_size_cap_is_refused_early(glance_faulty, disks,
                                                   tmp_path):
    disk = disks['dynamic']
    cap = glance_faulty.default_options['image_size_cap']
    assert os.path.getsize(disk.ova) < cap < disk.size
    dest = str(tmp_path / 'capped.raw')
    with pytest.raises(exception.XenImportError) as info:
        pipeline.convert(disk.ova, dest,
                         opts=options.Options(max_virtual_size=cap))
    reason = str(info.value)
    assert str(cap) in reason
    image_id = create_via_import(glance_faulty, disk.ova,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd')
    assert_refused(glance_faulty, image_id, reason, {
        'container_format': 'ova', 'disk_format': 'vhd'})


def test_store_failure_after_conversion_restores_the_image(
        glance_faulty, disks, tmp_path):
    disk = disks['fixed']
    assert disk.size < glance_faulty.default_options['image_size_cap']
    # Writing into the store now fails (a file where its directory was),
    # after the plugin has published the RAW.
    store = glance_faulty.store_dirs()['file']
    shutil.rmtree(store)
    with open(store, 'w') as f:
        f.write('not a directory')

    report = expected_report(disk.ova, tmp_path)
    assert report.properties, 'the pipeline reports no property to undo'
    # One property the report sets, given another value by the user.
    key = sorted(report.properties)[0]
    image_id = create_via_import(glance_faulty, disk.ova,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd',
                                 '--property', '%s=user-value' % key,
                                 '--property', 'note=kept')
    image, task = glance_faulty.wait_for_import(image_id)
    assert task['status'] == 'failure', task
    with open(glance_faulty.log_file) as f:
        assert '%s: RAW ready' % image_id in f.read()
    assert image['status'] == 'queued'
    assert (image['container_format'], image['disk_format']) == ('ova', 'vhd')
    assert image[key] == 'user-value'
    assert image['note'] == 'kept'
    for other in set(report.properties) - {key}:
        assert other not in image, other
    assert glance_faulty.staged_files(image_id) == []


def test_conversion_is_logged(glance, disks, tmp_path):
    disk = disks['fixed']
    image_id = create_via_import(glance, disk.ova, '--container-format',
                                 'ova', '--disk-format', 'vhd')
    glance.wait_for_import(image_id)
    with open(glance.log_file) as f:
        lines = [line for line in f if image_id in line]
    text = ''.join(lines)
    assert 'xen-ova import of image %s: converting' % image_id in text
    # The summary line: bytes read, rate and the result.
    assert re.search(r'converted vhd-fixed:caml, read \d+ bytes in [\d.]+ s, '
                     r'[\d.]+ MB/s; virtual size %d bytes' % disk.size,
                     text), text
    assert 'RAW ready' in text


def test_expected_raw_is_the_source_disk(disks):
    # The expected RAW comes from qemu-img alone; it must equal the disk
    # the VHD was made from, or the comparisons above prove nothing.
    for disk in disks.values():
        assert filecmp.cmp(disk.raw, disk.expected, shallow=False)


# -- Windows guest with Xen PV drivers -------------------------------------

def test_windows_guest_is_fixed_inside_the_import(glance, tmp_path):
    # A Server 2016 guest with Citrix PV drivers enabled and vioscsi
    # demoted (tests/fixtures/guests): the stored image must be the
    # neutralised disk, and the properties must come from it.
    source = str(tmp_path / 'win2016-xen.raw')
    with lzma.open(os.path.join(ovakit.FIXTURES, 'guests',
                                'win2016-xen.raw.xz')) as src, \
            open(source, 'wb') as out:
        shutil.copyfileobj(src, out)
    vhd = ovakit.xen_vhd(source, str(tmp_path / 'win.vhd'), creator='caml')
    ova = ovakit.make_ova(str(tmp_path / 'win.ova'),
                          [ovakit.OvaDisk(vhd)]).path
    expected = expected_report(ova, tmp_path).properties
    assert 'xen_import_fixups_applied' in expected

    image_id = create_via_import(glance, ova, '--import-method', 'xen-ova',
                                 '--container-format', 'bare',
                                 '--disk-format', 'raw')
    image, task = glance.wait_for_import(image_id)
    assert task['status'] == 'success', (task, glance.logs())
    assert image['status'] == 'active'
    for key, value in expected.items():
        assert image.get(key) == value, key
    assert image['hw_disk_bus'] == 'scsi'
    assert image['xen_import_fixup_required'] == 'false'

    stored = str(tmp_path / 'stored.raw')
    glance.glance('image-download', '--file', stored, image_id)
    fixed = str(tmp_path / 'fixed.raw')
    pipeline.convert(ova, fixed)
    assert filecmp.cmp(stored, fixed, shallow=False)
    assert not filecmp.cmp(stored, source, shallow=False)
    assert glance.staged_files(image_id) == []
