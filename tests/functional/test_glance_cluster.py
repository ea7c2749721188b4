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

"""Two glance-api nodes on PostgreSQL: distributed import, load, a crash.

Glance's distributed import stages data on the node that receives it,
records that node's ``worker_self_reference_url`` on the image and
proxies a glance-direct import sent to another node back to it. So the
plugin must convert on the staging node, from that node's staging
directory, whichever node the user talks to. Every import below is
checked byte for byte against qemu-img's reading of the VHD, and both
staging directories are checked to be empty afterwards.

The load test writes what it measured (wall time, the workers' peak
memory growth, conversions per worker) to ``cluster-figures.json`` in
the tox environment's directory and prints it (``pytest -s``).
"""

import concurrent.futures
import filecmp
import json
import os
import sys
import time

import pytest

from tests.functional import cluster as cluster_mod
from tests.functional import conftest
from tests.functional import gate
from tests.functional import glance_server
from tests.functional.test_glance_import import assert_imported
from tests.functional.test_glance_import import create_via_import
from tests.functional.test_glance_resilience import wait_for
from tests.functional import workerstats

FIGURES = os.path.join(sys.prefix, 'cluster-figures.json')
LOAD_IMPORTS = 16


@pytest.fixture(scope='module')
def cluster(workdir, web_root):
    missing = cluster_mod.postgres_missing()
    if missing:
        pytest.skip(missing)
    conftest._require_environment()
    nodes = cluster_mod.Cluster(os.path.join(workdir, 'cluster'),
                                web_download_port=web_root.port)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


def record(name, figures):
    """Add one test's measurements to the figures file and print them."""
    try:
        with open(FIGURES) as f:
            found = json.load(f)
    except (OSError, ValueError):
        found = {}
    found[name] = figures
    with open(FIGURES, 'w') as f:
        json.dump(found, f, indent=2, sort_keys=True)
    text = json.dumps(figures, indent=2, sort_keys=True)
    print('\n%s: %s' % (name, text))


def log_lines(node, needle):
    with open(node.log_file, errors='replace') as f:
        return [line for line in f if needle in line]


def assert_converted_on(cluster, node, image_id):
    """The RAW was made on ``node``: its log and its staging directory.

    Glance logs the data it uploads to the store; for a converted image
    that is the plugin's RAW, in ``node``'s own staging directory.
    """
    raw = 'file://%s/%s.xenova.raw' % (node.staging_dir, image_id)
    assert log_lines(node, 'Got image data uri %s to be imported' % raw), (
        node.url, node.logs())
    converting = '%s: converting the OVA' % image_id
    assert log_lines(node, converting)
    for other in cluster.nodes.values():
        if other is not node:
            assert not log_lines(other, converting), other.url
            assert not log_lines(other, '%s.xenova.raw' % image_id)


def assert_no_leftovers(cluster, image_id):
    for node in cluster.nodes.values():
        assert node.staged_files(image_id) == [], node.url


def stage(node, disk, name):
    created = node.glance('image-create', '--name', name,
                          '--container-format', 'ova',
                          '--disk-format', 'vhd')
    image_id = glance_server.image_id(created.stdout)
    node.glance('image-stage', '--file', disk.ova, image_id)
    return image_id


def proxied_imports(node, stage_node):
    return len(log_lines(node, 'Proxying POST request to host %s '
                               % stage_node.url))


# -- distributed import ----------------------------------------------------

@pytest.mark.parametrize('method', ['xen-ova', 'glance-direct'])
@pytest.mark.parametrize('stage_on,import_via,kind', [
    ('a', 'b', 'dynamic'), ('b', 'a', 'tap')])
def test_staged_on_one_node_imported_through_the_other(
        cluster, disks, tmp_path, method, stage_on, import_via, kind):
    stager, importer = cluster.nodes[stage_on], cluster.nodes[import_via]
    disk = disks[kind]
    image_id = stage(stager, disk, '%s-%s-%s' % (method, stage_on, kind))
    assert importer.image(image_id)['status'] == 'uploading'
    proxied = proxied_imports(importer, stager)
    importer.glance('image-import', '--import-method', method, image_id)
    assert_imported(importer, image_id, disk, tmp_path)
    assert proxied_imports(importer, stager) == proxied + 1
    # The staging node created the task from the forwarded request, which
    # carries the filter's marker when the user asked for xen-ova.
    task = importer.tasks(image_id)[0]
    _, _, detail = stager.api('GET', '/v2/tasks/%s' % task['id'])
    expected = {'name': 'glance-direct'}
    if method == 'xen-ova':
        expected['xen_ova'] = True
    assert detail['input']['import_req']['method'] == expected
    assert_converted_on(cluster, stager, image_id)
    assert_no_leftovers(cluster, image_id)


@pytest.mark.parametrize('node_name', ['a', 'b'])
def test_web_download_converts_on_the_receiving_node(
        cluster, disks, web_root, tmp_path, node_name):
    node = cluster.nodes[node_name]
    disk = disks['fixed']
    uri = web_root.publish(disk.ova, 'cluster-%s.ova' % node_name)
    image_id = create_via_import(node, disk.ova, '--import-method',
                                 'web-download', '--uri', uri,
                                 '--container-format', 'ova',
                                 '--disk-format', 'vhd')
    other = cluster.b if node is cluster.a else cluster.a
    # Read back through the other node: one database, one store.
    assert_imported(other, image_id, disk, tmp_path)
    assert_converted_on(cluster, node, image_id)
    assert_no_leftovers(cluster, image_id)


# -- load ------------------------------------------------------------------

def _load_jobs(disks, slow_disk):
    """16 imports: four disk kinds, both nodes, both methods.

    Each is staged on either node and imported through the same or the
    other one. Two are the 1 GiB disk, whose conversions last long enough
    for others to run beside them.
    """
    kinds = ['dynamic', 'tap', 'fixed']
    jobs = []
    for number in range(LOAD_IMPORTS):
        stage_on = 'ab'[number % 2]
        import_via = 'ab'[(number // 2) % 2]
        method = ('xen-ova', 'glance-direct')[(number // 4) % 2]
        disk = disks[kinds[number % 3]]
        if number in (6, 9):   # one through each node, both forwarded
            disk = slow_disk
        jobs.append((disk, stage_on, import_via, method))
    return jobs


def _worker_figures(cluster, window, image_ids):
    figures = {}
    growth = window.growth()
    for name, node in sorted(cluster.nodes.items()):
        spans = workerstats.conversions(node.log_file)
        for pid in node.worker_pids():
            mine = [span for span in spans.get(pid, [])
                    if span[2] in image_ids]
            figures['%s/%d' % (name, pid)] = {
                'rss_before_mib': round(window.start[pid] / workerstats.MiB,
                                        1),
                'peak_growth_mib': round(growth[pid] / workerstats.MiB, 1),
                'conversions': len(mine),
                'most_at_once': workerstats.most_at_once(mine),
            }
    return figures


def _run_at_once(cluster, jobs):
    """Stage and import every job at the same time; the image ids."""
    def run(job):
        disk, stage_on, import_via, method = job
        image_id = stage(cluster.nodes[stage_on], disk,
                         'load-%s%s-%s' % (stage_on, import_via, method))
        cluster.nodes[import_via].glance('image-import', '--import-method',
                                         method, image_id)
        return image_id

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        ids = list(pool.map(run, jobs))
    for image_id in ids:
        cluster.a.wait_for_import(image_id, timeout=600)
    return ids


def _warm_up(cluster, disks):
    """Have every worker convert once.

    So the measured growth is the conversions', not the first loading of
    the converter's modules; returns the workers that stayed cold.
    """
    def cold_workers():
        return sorted((name, pid) for name, node in cluster.nodes.items()
                      for pid in node.worker_pids()
                      if pid not in workerstats.conversions(node.log_file))

    # The kernel hands each connection to one worker: a few rounds of two
    # imports per cold worker reach them all in practice.
    for _ in range(4):
        cold = cold_workers()
        if not cold:
            break
        _run_at_once(cluster, [(disks['fixed'], name, name, 'xen-ova')
                               for name, _ in cold for _ in range(2)])
    return ['%s/%d' % worker for worker in cold_workers()]


def test_sixteen_imports_at_once_over_two_nodes(cluster, disks, slow_disk,
                                                tmp_path):
    jobs = _load_jobs(disks, slow_disk)
    pids = cluster.a.worker_pids() + cluster.b.worker_pids()
    assert len(pids) == 4
    cold = _warm_up(cluster, disks)
    window = workerstats.Window(pids)

    clock = time.monotonic()
    ids = _run_at_once(cluster, jobs)
    wall = time.monotonic() - clock
    workers = _worker_figures(cluster, window, set(ids))

    assert len(set(ids)) == LOAD_IMPORTS
    for image_id, (disk, stage_on, _, _) in zip(ids, jobs):
        assert_imported(cluster.nodes[stage_on], image_id, disk, tmp_path)
        assert_converted_on(cluster, cluster.nodes[stage_on], image_id)
    for node in cluster.nodes.values():
        assert os.listdir(node.staging_dir) == [], node.url
    assert sum(w['conversions'] for w in workers.values()) == LOAD_IMPORTS

    record('sixteen_imports', {
        'imports': LOAD_IMPORTS,
        'disks_mib': sorted({disk.size // workerstats.MiB
                             for disk, _, _, _ in jobs}),
        'wall_seconds_create_to_all_active': round(wall, 1),
        'workers': workers,
        'workers_never_warmed_up': cold,
        'largest_worker_peak_growth_mib': max(
            w['peak_growth_mib'] for w in workers.values()),
    })


# -- a node killed ---------------------------------------------------------

def test_node_killed_mid_conversion(cluster, disks, slow_disk, tmp_path):
    a, b = cluster.a, cluster.b
    killed = stage(a, slow_disk, 'killed-on-a')
    waiting = stage(a, disks['fixed'], 'staged-on-a')
    survivor = stage(b, slow_disk, 'converting-on-b')
    window = workerstats.Window(b.worker_pids())

    # Both conversions are held once their partial RAWs hold data, so the
    # kill comes mid-conversion on a and b's import is still running,
    # however fast this machine converts.
    gate.hold(a, killed)
    gate.hold(b, survivor)
    b.glance('image-import', '--import-method', 'xen-ova', killed)
    b.glance('image-import', '--import-method', 'glance-direct', survivor)
    partial = gate.wait_held(a, killed)
    gate.wait_held(b, survivor)
    assert b.image(survivor)['status'] == 'importing'
    a.kill(release_port=True)
    try:
        _while_a_is_down(cluster, disks, slow_disk, tmp_path, killed,
                         waiting, survivor, partial)
    finally:
        a.restart()
    survivor_growth = window.growth()

    # Glance's start-up cleaner (a thread in each worker) removes the
    # deleted image's files and keeps those of the image that exists.
    wait_for(lambda: os.listdir(a.staging_dir) == [waiting],
             'the start-up cleaner to leave only %s in %s' % (
                 waiting, a.staging_dir))

    # The image staged before the crash imports as if nothing happened.
    assert b.image(waiting)['status'] == 'uploading'
    b.glance('image-import', '--import-method', 'xen-ova', waiting)
    assert_imported(b, waiting, disks['fixed'], tmp_path)
    assert_converted_on(cluster, a, waiting)

    # The killed image's OVA, as a new image, staged on the restarted
    # node and imported through the other.
    again = stage(a, slow_disk, 'killed-again')
    b.glance('image-import', '--import-method', 'xen-ova', again)
    image, task = b.wait_for_import(again, timeout=600)
    assert task['status'] == 'success', (task, a.logs())
    assert image['status'] == 'active'
    assert image['size'] == image['virtual_size'] == slow_disk.size
    out = str(tmp_path / 'again.raw')
    b.glance('image-download', '--file', out, again)
    assert filecmp.cmp(out, slow_disk.expected, shallow=False)
    os.remove(out)
    assert_converted_on(cluster, a, again)
    for node in cluster.nodes.values():
        assert os.listdir(node.staging_dir) == [], node.url

    record('node_killed', {
        'disk_mib': slow_disk.size // workerstats.MiB,
        'surviving_node_worker_peak_growth_mib': {
            str(pid): round(grown / workerstats.MiB, 1)
            for pid, grown in survivor_growth.items()},
    })


def refused_while_down(node, *args):
    """A request the live node cannot hand to the dead staging node.

    Glance 33 catches requests' connection errors around the proxied call,
    but keystoneauth raises its own ConnectFailure, so the caller gets a
    500 and nothing is done (not the 504 Glance means to answer, nor, for
    a delete, its local fallback).
    """
    result = node.glance(*args, check=False)
    assert result.returncode != 0, result.stdout
    assert 'HTTP 500' in result.stderr, result.stderr
    with open(node.log_file, errors='replace') as f:
        assert 'ConnectFailure' in f.read()


def _while_a_is_down(cluster, disks, slow_disk, tmp_path, killed, waiting,
                     survivor, partial):
    a, b = cluster.a, cluster.b
    # Nothing fails or resumes the import whose node died.
    assert b.image(killed)['status'] == 'importing'
    assert [t['status'] for t in b.tasks(killed)] == ['processing']
    # Glance checks the status before the import lock: no import method
    # can take the image over, whatever the lock's age.
    for method, reason in (
            ({'name': 'glance-direct'}, 'Image needs to be staged before'),
            ({'name': 'xen-ova'}, 'Image needs to be staged before'),
            ({'name': 'web-download', 'uri': 'http://127.0.0.1:9/x.ova'},
             "Image needs to be in 'queued' state")):
        status, _, body = b.api('POST', '/v2/images/%s/import' % killed,
                                {'method': method})
        assert status == 409 and reason in str(body), (method, status, body)
    # Glance forgets the staging node when an import starts, so the live
    # node deletes the stuck image itself; the dead node's files stay.
    b.glance('image-delete', killed)
    status, _, _ = b.api('GET', '/v2/images/%s' % killed)
    assert status == 404
    assert a.staged_files(killed) == sorted(
        [killed, os.path.basename(partial)])
    # An image staged on the dead node and not yet importing still names
    # it: it can be neither imported nor deleted until the node is back.
    refused_while_down(b, 'image-import', '--import-method', 'xen-ova',
                       waiting)
    refused_while_down(b, 'image-delete', waiting)
    assert b.image(waiting)['status'] == 'uploading'

    # The live node's own conversion goes on and is right.
    gate.release(b, survivor)
    image, task = b.wait_for_import(survivor, timeout=600)
    assert task['status'] == 'success', (task, b.logs())
    assert image['status'] == 'active'
    out = str(tmp_path / 'survivor.raw')
    b.glance('image-download', '--file', out, survivor)
    assert filecmp.cmp(out, slow_disk.expected, shallow=False)
    os.remove(out)
    assert_converted_on(cluster, b, survivor)
    # And it imports new images alone.
    alone = create_via_import(b, disks['dynamic'].ova, '--container-format',
                              'ova', '--disk-format', 'vhd')
    assert_imported(b, alone, disks['dynamic'], tmp_path)
    assert os.listdir(b.staging_dir) == []
