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

"""Hold one import inside a test glance-api until the test lets it go.

A test that kills a node "mid-conversion" must not depend on how fast this
machine converts: a conversion that ends between the test seeing it and
the kill turns the test into a coin toss. So the test asks the worker to
hold the import of one image, waits until the worker says it holds it,
and only then kills the node (or lets the import go on).

Test side (files in the server's gate directory, ``GlanceServer.gate_dir``)::

    hold(server, image_id)         # before the import starts
    partial = wait_held(server, image_id)
    ...                            # kill the node, or:
    release(server, image_id)

Worker side (``install``, from tests/functional/gunicorn_conf.py): the
plugin's progress callbacks are wrapped. An import whose image has a
``<id>.hold`` file stops at the first callback at which its partial RAW
holds data, and at the guest inspection at the latest (the RAW is then
written but not yet published); it writes ``<id>.held`` with the
partial's path and waits for ``<id>.go``. Nothing else changes: every
byte still goes through the code under test.
"""

import glob
import os
import time

ENV = 'GXI_TEST_GATE_DIR'
# Guards against a test that never releases; not expectations.
HOLD_LIMIT = 1800
WAIT_LIMIT = 900


def _path(gate_dir, image_id, kind):
    return os.path.join(gate_dir, '%s.%s' % (image_id, kind))


def _write(path, text):
    temp = path + '.tmp'
    with open(temp, 'w') as f:
        f.write(text)
    os.rename(temp, path)


# -- the test's side -------------------------------------------------------

def hold(server, image_id):
    """Ask ``server``'s workers to hold the import of ``image_id``."""
    from glance_xen_import.glance import staging
    pattern = glob.escape(staging.partial_prefix(server.staging_dir,
                                                 image_id)) + '*'
    _write(_path(server.gate_dir, image_id, 'hold'), pattern)


def wait_held(server, image_id, limit=WAIT_LIMIT):
    """Wait until a worker holds the import; the partial RAW's path."""
    held = _path(server.gate_dir, image_id, 'held')
    deadline = time.monotonic() + limit
    while not os.path.exists(held):
        if time.monotonic() > deadline:
            raise AssertionError('the import of %s was not held within %d s'
                                 '\n%s' % (image_id, limit, server.logs()))
        time.sleep(0.05)
    with open(held) as f:
        return f.read()


def release(server, image_id):
    _write(_path(server.gate_dir, image_id, 'go'), '')


# -- the worker's side -----------------------------------------------------

def _partial_with_data(pattern):
    for path in glob.glob(pattern):
        try:
            if os.stat(path).st_blocks > 0:
                return path
        except FileNotFoundError:
            pass
    return None


def _maybe_hold(gate_dir, image_id, at_inspection):
    try:
        with open(_path(gate_dir, image_id, 'hold')) as f:
            pattern = f.read()
    except FileNotFoundError:
        return
    held = _path(gate_dir, image_id, 'held')
    if os.path.exists(held):
        return
    partial = _partial_with_data(pattern)
    if partial is None and at_inspection:
        # An all-zero disk: the RAW exists, written, with no data blocks.
        partial = (glob.glob(pattern) or [''])[0]
    if partial is None:
        return
    _write(held, partial)
    go = _path(gate_dir, image_id, 'go')
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)


def install(gate_dir):
    """Wrap the plugin's progress callbacks in this worker process."""
    from glance_xen_import.glance import progress
    from glance_xen_import import progress_text

    klass = progress.ConversionProgress
    on_bytes, on_step = klass.__call__, klass.step

    def __call__(self, done, total):
        _maybe_hold(gate_dir, self.image_id, False)
        return on_bytes(self, done, total)

    def step(self, name):
        _maybe_hold(gate_dir, self.image_id,
                    name == progress_text.STEP_INSPECT)
        return on_step(self, name)

    klass.__call__, klass.step = __call__, step
