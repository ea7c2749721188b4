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

"""What glance-api workers used: peak memory and conversions, measured.

The plugin converts inside the gunicorn worker that runs the import task
(in one of Glance's task threads), so a conversion's memory is the growth
of that worker's resident set. Linux keeps each process's peak resident
set (``VmHWM``) and resets it to the current one on ``clear_refs`` value
5, so a window's peak growth is ``VmHWM`` at its end minus ``VmRSS`` at
its start. It covers everything the worker did meanwhile: staging, the
conversion, the upload to the store and Glance's own work.

Which worker converted what, and how many conversions overlapped, comes
from the plugin's own log lines, which carry the worker's process id.
"""

import re

MiB = 1024 * 1024

_STATUS = re.compile(r'^(VmRSS|VmHWM):\s+(\d+) kB$', re.M)
# oslo.log: "<date> <time> <pid> <LEVEL> <logger> [...] <message>"
_CONVERSION = re.compile(
    r'^(?P<date>\S+ \S+) (?P<pid>\d+) \w+ glance_xen_import\.glance\.tasks '
    r'\[[^]]*\] xen-ova import of image (?P<image>[0-9a-f-]{36})'
    r'(?P<how>:| refused| failed)(?P<what>.*)$')


def memory(pid):
    """``{'rss': bytes, 'peak': bytes}`` of a live process."""
    with open('/proc/%d/status' % pid) as f:
        found = dict(_STATUS.findall(f.read()))
    return {'rss': int(found['VmRSS']) * 1024,
            'peak': int(found['VmHWM']) * 1024}


def reset_peak(pid):
    """Start a new peak window: VmHWM becomes the current VmRSS."""
    with open('/proc/%d/clear_refs' % pid, 'w') as f:
        f.write('5')


class Window(object):
    """Peak resident-set growth of some processes from now on."""

    def __init__(self, pids):
        self.start = {}
        for pid in pids:
            reset_peak(pid)
            self.start[pid] = memory(pid)['rss']

    def growth(self):
        """``{pid: bytes}``: each process's peak minus its start."""
        return {pid: memory(pid)['peak'] - rss
                for pid, rss in self.start.items()}


def conversions(log_file):
    """``{pid: [(start, end, image_id)]}`` from the plugin's log lines.

    A conversion starts at "converting the OVA" and ends at "RAW ready",
    a refusal or a failure; one still running has no end (None).
    """
    starts, spans = {}, {}
    with open(log_file, errors='replace') as f:
        for line in f:
            match = _CONVERSION.match(line)
            if not match:
                continue
            pid, image = int(match.group('pid')), match.group('image')
            what = match.group('what')
            ended = match.group('how') != ':' or 'RAW ready' in what
            if 'converting the OVA' in what:
                starts[(pid, image)] = match.group('date')
            elif ended and (pid, image) in starts:
                spans.setdefault(pid, []).append(
                    (starts.pop((pid, image)), match.group('date'), image))
    for (pid, image), start in starts.items():
        spans.setdefault(pid, []).append((start, None, image))
    return spans


def most_at_once(spans):
    """How many of the (start, end) spans overlapped at most."""
    events = []
    for start, end, _ in spans:
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    running = peak = 0
    # Ends sort before starts at the same timestamp: they did not overlap.
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak
