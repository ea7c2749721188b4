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


"""OVF manifest (``.mf``): one ``ALGO(name)= hexdigest`` line per file.

DSP0243 names SHA1 and SHA256; XenCenter writes SHA256 (older exports
SHA1), with CRLF line ends. Names are matched against tar member names.
"""

import queue
import re
import threading

from glance_xen_import import exception
from glance_xen_import.formats import names

MAX_MANIFEST_SIZE = 1 << 20
ALGORITHMS = {'SHA1': 'sha1', 'SHA256': 'sha256', 'SHA512': 'sha512'}
# Hex digits of each digest (FIPS 180-4 digest sizes).
HEX_DIGITS = {'sha1': 40, 'sha256': 64, 'sha512': 128}
_LINE = re.compile(r'^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9A-Fa-f]+)$')


def parse(data):
    """Return {member name: (algorithm, lowercase hex digest)}."""
    if len(data) > MAX_MANIFEST_SIZE:
        raise exception.InvalidPackage(
            'manifest is %d bytes, more than the %d accepted'
            % (len(data), MAX_MANIFEST_SIZE))
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise exception.InvalidPackage('manifest is not UTF-8 text')
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise exception.InvalidPackage(
                'manifest line %d is not "SHA256(name)= digest"' % number)
        algorithm = ALGORITHMS[match.group(1)]
        digest = match.group(3).lower()
        if len(digest) != HEX_DIGITS[algorithm]:
            raise exception.InvalidPackage(
                'manifest line %d: a %s digest has %d hex digits, not %d'
                % (number, match.group(1), len(digest),
                   HEX_DIGITS[algorithm]))
        try:
            name = names.member_name(match.group(2))
        except ValueError as exc:
            raise exception.InvalidPackage(
                'manifest line %d names %s' % (number, exc))
        if name in entries:
            raise exception.InvalidPackage(
                'manifest lists %r twice' % name)
        entries[name] = (algorithm, digest)
    if not entries:
        raise exception.InvalidPackage('manifest lists no file')
    return entries


class DigestWorker(object):
    """The one helper thread that digests every member of a package.

    hashlib lets go of the GIL for large buffers, so digesting overlaps
    with decoding and writing instead of adding to them. One thread serves
    the whole stream however many members it has; the queue between the
    two is bounded, and so is the memory.
    """

    # Chunks waiting to be hashed; each is at most one read of the caller.
    QUEUE_DEPTH = 4

    def __init__(self):
        self._queue = queue.Queue(self.QUEUE_DEPTH)
        self._thread = None

    def _run(self):
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                hashes, data = item
                for digest in hashes:
                    digest.update(data)
            finally:
                self._queue.task_done()

    def submit(self, hashes, data):
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name='manifest-digest', daemon=True)
            self._thread.start()
        self._queue.put((hashes, data))

    def wait(self):
        """Return once everything submitted so far is digested."""
        if self._thread is not None:
            self._queue.join()

    def close(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class HashingReader(object):
    """Pass reads through while computing the digests a manifest may ask.

    :param worker: the DigestWorker to hash on; by default one of its own.
    """

    def __init__(self, stream, algorithms=('sha1', 'sha256'), worker=None):
        self._stream = stream
        self.algorithms = tuple(algorithms)
        # Imported when a digest is due: loading OpenSSL costs a package
        # without a manifest (and every start-up) milliseconds.
        import hashlib
        self._hashes = {a: hashlib.new(a) for a in algorithms}
        self._digests = tuple(self._hashes.values())
        self._own_worker = worker is None
        self._worker = DigestWorker() if worker is None else worker
        self._finished = False

    def read(self, size=-1):
        data = self._stream.read(size)
        if data:
            if self._finished:
                raise exception.XenImportError(
                    'internal error: data read after its digest was taken')
            self._worker.submit(self._digests, data)
        return data

    def close(self):
        """Wait for the digests of what was read; they are final then."""
        if not self._finished:
            if self._own_worker:
                self._worker.close()
            else:
                self._worker.wait()
        self._finished = True

    def hexdigest(self, algorithm):
        self.close()
        return self._hashes[algorithm].hexdigest()
