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

"""A glance-api with two gunicorn workers, killed and under load.

* SIGKILL in the middle of a conversion, then a restart on the same
  configuration, database and staging area: what Glance then does with
  the image, its import lock and the staged files, and that the recovery
  documented in doc/source/admin/troubleshooting.rst works and leaves
  nothing in the staging area.
* Eight imports at once, split between the ``xen-ova`` method and
  ``glance-direct`` of ``ova`` containers.
"""

import concurrent.futures
import filecmp
import os
import time

import pytest

from tests.functional import conftest
from tests.functional import gate
from tests.functional import glance_server
from tests.functional.test_glance_import import assert_imported
from tests.functional.test_glance_import import create_via_import

WATCH_LIMIT = 600   # seconds; a guard against hanging, not an assertion


@pytest.fixture(scope='module')
def glance_two(workdir):
    """Single store, two gunicorn workers; the tests may kill it."""
    server = conftest._server(workdir, 'two-workers', workers=2)
    try:
        yield server
    finally:
        server.stop()


def staging_listing(server):
    return sorted(os.listdir(server.staging_dir))


def wait_for(predicate, what):
    deadline = time.monotonic() + WATCH_LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            raise glance_server.GlanceError('gave up waiting for %s' % what)
        time.sleep(0.1)


def refused(server, *args):
    result = server.glance(*args, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_killed_mid_conversion_then_documented_recovery(
        glance_two, slow_disk, tmp_path):
    server = glance_two
    # The expected RAW is qemu-img's, and it is the disk the VHD came from.
    assert filecmp.cmp(slow_disk.expected, slow_disk.raw, shallow=False)

    created = server.glance('image-create', '--name', 'killed',
                            '--container-format', 'ova',
                            '--disk-format', 'vhd')
    image_id = glance_server.image_id(created.stdout)
    server.glance('image-stage', '--file', slow_disk.ova, image_id)
    # The worker holds the conversion once its partial RAW holds data, so
    # the kill comes mid-conversion however fast this machine converts.
    gate.hold(server, image_id)
    server.glance('image-import', '--import-method', 'glance-direct',
                  image_id)
    partial = gate.wait_held(server, image_id)
    server.kill()
    assert os.path.exists(partial)
    left = staging_listing(server)
    assert left == sorted([image_id, os.path.basename(partial)])

    server.restart()

    # What Glance does after the restart: nothing resumes the task and
    # nothing releases the image.
    image = server.image(image_id)
    tasks = server.tasks(image_id)
    assert image['status'] == 'importing'
    assert [t['status'] for t in tasks] == ['processing']
    assert image['os_glance_import_task'] == tasks[0]['id']
    # Its start-up cleaner keeps the files of an image that exists.
    assert staging_listing(server) == left
    # glanceclient refuses to import an image that is not 'uploading'...
    err = refused(server, 'image-import', '--import-method', 'glance-direct',
                  image_id)
    assert "only be applied to an image in status 'uploading'" in err, err
    # ...and Glance refuses every method on the status alone, before it
    # looks at the lock (so the lock's 60-minute expiry would not help).
    for method, reason in (
            ({'name': 'glance-direct'}, 'Image needs to be staged before'),
            ({'name': 'xen-ova'}, 'Image needs to be staged before'),
            ({'name': 'web-download', 'uri': 'http://127.0.0.1:9/x.ova'},
             "Image needs to be in 'queued' state")):
        status, _, body = server.api(
            'POST', '/v2/images/%s/import' % image_id, {'method': method})
        assert status == 409 and reason in str(body), (method, status, body)
    err = refused(server, 'image-stage', '--file', slow_disk.ova, image_id)
    assert '409' in err or 'Conflict' in err, err
    assert server.image(image_id)['status'] == 'importing'

    # The documented recovery: delete the image, import the OVA again as
    # a new image. The delete takes Glance's staged OVA and, through the
    # xen_ova paste filter, the partial RAW.
    server.glance('image-delete', image_id)
    assert staging_listing(server) == []
    # Without the filter in the pipeline the partial RAW would stay until
    # Glance's start-up cleaner, which removes the files of deleted images.
    kept = os.path.join(server.staging_dir, os.path.basename(partial))
    with open(kept, 'wb') as f:
        f.write(b'as a filter-less glance-api would have left it')
    server.kill()
    server.restart()
    # The cleaner runs in a thread of each starting worker.
    wait_for(lambda: staging_listing(server) == [],
             'the start-up cleaner to empty %s' % server.staging_dir)
    # The id cannot be reused: Glance keeps the deleted row.
    err = refused(server, 'image-create', '--id', image_id,
                  '--container-format', 'ova', '--disk-format', 'vhd')
    assert '409' in err or 'Conflict' in err, err

    new_id = create_via_import(server, slow_disk.ova, '--container-format',
                               'ova', '--disk-format', 'vhd')
    image, task = server.wait_for_import(new_id)
    assert task['status'] == 'success', (task, server.logs())
    assert (image['status'], image['container_format'],
            image['disk_format']) == ('active', 'bare', 'raw')
    assert image['size'] == image['virtual_size'] == slow_disk.size
    out = str(tmp_path / 'recovered.raw')
    server.glance('image-download', '--file', out, new_id)
    assert filecmp.cmp(out, slow_disk.expected, shallow=False)
    os.remove(out)
    assert staging_listing(server) == []


def test_eight_imports_at_once_through_two_workers(glance_two, disks,
                                                   tmp_path):
    server = glance_two
    kinds = ['dynamic', 'tap', 'fixed', 'dynamic']
    jobs = [(disks[kind], method) for kind in kinds
            for method in ('xen-ova', 'glance-direct')]

    def run(job):
        disk, method = job
        # Each: create, stage and import, all eight at the same time.
        return create_via_import(server, disk.ova, '--import-method', method,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd')

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        ids = list(pool.map(run, jobs))
    assert len(set(ids)) == len(jobs)
    for image_id, (disk, method) in zip(ids, jobs):
        assert_imported(server, image_id, disk, tmp_path)
    assert staging_listing(server) == []
