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

"""Import a sample XenServer OVA into a throw-away local Glance.

Run with ``tox -e demo``. Steps, each printed as it runs:

1. make a small guest disk (MBR + ext4, sfdisk and mkfs.ext4), a dynamic
   VHD of it with qemu-img laid out as XAPI exports it (footer creator
   ``caml``) and a XenCenter-style OVA around it;
2. start glance-api 33 on 127.0.0.1 (sqlite, file store, the ``xen_ova``
   plugin and paste filter; the same harness as the functional tests);
3. ``glance import-info`` and ``glance image-create-via-import
   --import-method xen-ova``;
4. wait for the import task, ``glance image-show``, download the image and
   compare it with qemu-img's own conversion of the VHD;
5. stop the server. Exit status 0 only if every step worked.
"""

import argparse
import filecmp
import os
import shutil
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from tests.functional import glance_server  # noqa: E402
from tests import ovakit  # noqa: E402

MiB = ovakit.MiB
TOOLS = ('qemu-img', 'sfdisk', 'mkfs.ext4')


def step(text):
    print('\n==> %s' % text, flush=True)


def show(result):
    sys.stdout.write(result.stdout)
    if result.stderr.strip():
        sys.stdout.write(result.stderr)
    sys.stdout.flush()


def build_sample(workdir, size):
    ova, raw, vhd = ovakit.simple_ova(workdir, raw_size=size, creator='caml',
                                      table='mbr', name='xen-demo-vm')
    expected = ovakit.qemu_to_raw(vhd, os.path.join(workdir, 'expected.raw'),
                                  size_calc='current_size')
    print('guest disk  %s (%d bytes, MBR + ext4)' % (raw.path, raw.size))
    print('VHD         %s (creator %r)' % (
        vhd, ovakit.footer_info(vhd)['creator']))
    print('OVA         %s: %s' % (ova.path, ', '.join(ova.members)))
    return ova.path, expected


def run(workdir, size):
    step('Building a sample Xen OVA')
    ova, expected = build_sample(workdir, size)

    step('Starting glance-api on 127.0.0.1')
    server = glance_server.GlanceServer(os.path.join(workdir, 'glance'))
    server.start()
    try:
        print('listening on %s, configuration in %s'
              % (server.url, server.etc))
        step('glance import-info')
        show(server.glance('import-info'))

        step('glance image-create-via-import --import-method xen-ova')
        result = server.glance(
            'image-create-via-import', '--import-method', 'xen-ova',
            '--container-format', 'ova', '--disk-format', 'vhd',
            '--name', 'xen-demo-vm', '--file', ova)
        show(result)
        image_id = glance_server.image_id(result.stdout)

        step('Waiting for import task of image %s' % image_id)
        image, task = server.wait_for_import(image_id)
        print('task %s: %s %s' % (task['id'], task['status'],
                                  task.get('message') or ''))

        step('glance image-show %s' % image_id)
        show(server.glance('image-show', image_id))

        problems = []
        if task['status'] != 'success':
            problems.append('import task ended %s' % task['status'])
        if image['status'] != 'active':
            problems.append('image is %s, not active' % image['status'])
        if (image['container_format'], image['disk_format']) != (
                'bare', 'raw'):
            problems.append('image is %s/%s, not bare/raw' % (
                image['container_format'], image['disk_format']))
        if not problems:
            step('Downloading the image and comparing it with qemu-img')
            out = os.path.join(workdir, 'downloaded.raw')
            server.glance('image-download', '--file', out, image_id)
            if filecmp.cmp(out, expected, shallow=False):
                print('identical to qemu-img convert -f vpc -O raw '
                      '(%d bytes)' % os.path.getsize(out))
            else:
                problems.append('downloaded image differs from the RAW '
                                'qemu-img makes of the VHD')
        if problems:
            print('\nglance-api log tail:\n%s' % server.logs())
        return problems
    finally:
        step('Stopping glance-api')
        server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-mib', type=int, default=32,
                        help='size of the sample guest disk (default 32)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the work directory (printed at the end)')
    args = parser.parse_args(argv)

    missing = ovakit.missing_tools(*TOOLS)
    if missing:
        print('demo needs: %s' % ', '.join(missing), file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix='xen-ova-demo-')
    try:
        problems = run(workdir, args.size_mib * MiB)
    except (glance_server.GlanceError, OSError, RuntimeError) as exc:
        problems = [str(exc)]
    finally:
        if args.keep:
            print('\nwork directory kept: %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        print('\nDEMO FAILED:\n  %s' % '\n  '.join(problems), file=sys.stderr)
        return 1
    print('\nDemo succeeded: the OVA is an active bare/raw image.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
