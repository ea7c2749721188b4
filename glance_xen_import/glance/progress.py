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

"""Conversion progress in the log and in the Glance task's message.

Users follow an import with ``GET /v2/images/{id}/tasks`` (``glance
image-tasks``); Glance itself only writes there during the upload to the
stores. While the plugin converts, :class:`TaskMessage` writes a line
such as ``xen-ova: converting, 12.3 of 40.0 GiB read (31%), 410 MB/s``
into the task the way Glance's ``_ImportToStore`` does (get the task from
the task repository, set ``message``, save). Every save also refreshes
the task's ``updated_at``, which is what Glance looks at before it lets
another request take the image's import lock (``_enforce_import_lock``
in glance/api/v2/images.py expires a lock whose task was not updated for
60 minutes), so a long conversion keeps its lock.
"""

import time

from oslo_log import log as logging

from glance_xen_import import progress_text

LOG = logging.getLogger(__name__)

PREFIX = 'xen-ova: '


class TaskMessage(object):
    """Write lines into a Glance task's ``message``; never raise.

    :param task_repo: the task repository Glance hands its plugins, or
        None outside Glance (then nothing is written)
    """

    def __init__(self, task_repo, task_id, image_id):
        self.task_repo = task_repo
        self.task_id = task_id
        self.image_id = image_id
        self.saved = 0

    def write(self, text):
        if self.task_repo is None:
            return False
        try:
            task = self.task_repo.get(self.task_id)
            if task.status != 'processing':
                # Failed or finished by someone else (an expired lock taken
                # over): leave their message alone.
                return False
            task.message = PREFIX + text
            self.task_repo.save(task)
        except Exception as exc:
            # Progress is a courtesy: the import goes on without it.
            LOG.warning('xen-ova import of image %s: could not update task '
                        '%s: %s', self.image_id, self.task_id, exc)
            return False
        self.saved += 1
        return True


class ConversionProgress(object):
    """The pipeline's progress and step callbacks for one import.

    Byte progress is logged and written to the task at most once every
    ``interval`` seconds; each step (there are at most four) is written
    when it starts.
    """

    def __init__(self, message, interval, clock=time.monotonic):
        self.message = message
        self.image_id = message.image_id
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last = self.started
        self.done = 0
        self.total = None

    def __call__(self, done, total):
        self.done, self.total = done, total
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        text = progress_text.describe(done, total, now - self.started)
        LOG.info('xen-ova import of image %s: %s', self.image_id, text)
        self.message.write(text)

    def step(self, name):
        text = progress_text.STEP_TEXT.get(name, name)
        LOG.info('xen-ova import of image %s: %s', self.image_id, text)
        self.message.write(text)

    def summary(self):
        elapsed = self.clock() - self.started
        return 'read %d bytes in %.1f s, %.1f MB/s' % (
            self.done, elapsed, progress_text.rate(self.done, elapsed))
