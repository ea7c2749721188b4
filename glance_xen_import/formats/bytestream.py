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

"""A forward-only cursor over a byte stream.

Every format reader here sees its input through this class: it can only
read ahead or skip ahead, which is what keeps the whole conversion to one
sequential pass over the input.
"""

from glance_xen_import import exception

# Bytes asked of the underlying stream at a time when skipping.
_SKIP_CHUNK = 1 << 20


class Cursor(object):
    """Sequential reader that knows its position.

    :param stream: object with ``read(n)`` returning at most n bytes, and
        b'' only at the end.
    :param what: how to name the stream in refusals ("VHD", "tar stream").
    :param error: exception class raised when the stream ends early.
    """

    def __init__(self, stream, what, error=exception.InvalidDisk):
        self._stream = stream
        self.what = what
        self.error = error
        self.pos = 0
        self._pushed = b''
        self._limit = None
        self._limit_reason = None

    def set_limit(self, limit, reason):
        """Refuse with ``reason`` as soon as a byte past ``limit`` is read.

        At most one byte past the limit is ever asked of the stream, so a
        decompressor underneath never expands more than that.
        """
        self._limit = limit
        self._limit_reason = reason
        if self.pos > limit:
            raise self.error(reason)

    def read(self, size):
        """Read up to ``size`` bytes; fewer only at the end of the stream."""
        parts = []
        if self._limit is not None:
            size = min(size, max(self._limit + 1 - self.pos, 0))
        wanted = size
        if self._pushed:
            parts.append(self._pushed[:wanted])
            self._pushed = self._pushed[wanted:]
            wanted -= len(parts[0])
        while wanted > 0:
            data = self._stream.read(wanted)
            if not data:
                break
            parts.append(data)
            wanted -= len(data)
        data = parts[0] if len(parts) == 1 else b''.join(parts)
        self.pos += len(data)
        if self._limit is not None and self.pos > self._limit:
            raise self.error(self._limit_reason)
        return data

    def peek(self, size):
        """Return up to ``size`` bytes without consuming them."""
        data = self.read(size)
        self._pushed = data + self._pushed
        self.pos -= len(data)
        return data

    def read_exact(self, size, field):
        """Read exactly ``size`` bytes of ``field`` or refuse."""
        start = self.pos
        data = self.read(size)
        if len(data) != size:
            raise self.error('%s is truncated: %s at byte %d needs %d bytes, '
                             'only %d remain' % (self.what, field, start, size,
                                                 len(data)))
        return data

    def skip_to(self, offset, field):
        """Discard input up to ``offset``, which must not lie behind us.

        A stream with a ``skip(n)`` method (which passes over at most n
        bytes without reading them and says how many) is not read at all.
        """
        if offset < self.pos:
            raise self.error('%s: %s at byte %d lies before byte %d, which '
                             'was already read' % (self.what, field, offset,
                                                   self.pos))
        skip = getattr(self._stream, 'skip', None)
        if skip is not None and not self._pushed:
            self._skip_over(skip, offset, field)
        while self.pos < offset:
            self.read_exact(min(_SKIP_CHUNK, offset - self.pos), field)

    def _skip_over(self, skip, offset, field):
        start = self.pos
        end = offset if self._limit is None else min(offset, self._limit + 1)
        self.pos += skip(end - start)
        if self._limit is not None and self.pos > self._limit:
            raise self.error(self._limit_reason)
        if self.pos < offset:
            raise self.error('%s is truncated: %s at byte %d needs %d bytes, '
                             'only %d remain' % (self.what, field, start,
                                                 offset - start,
                                                 self.pos - start))
