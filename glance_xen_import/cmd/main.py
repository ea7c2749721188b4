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

"""``glance-xen-import``: convert or inspect a Xen OVA or XVA before upload.

    glance-xen-import convert SOURCE DEST [--disk N|KEY|NAME] [--json] ...
    glance-xen-import convert SOURCE --all-disks DIR [--json] ...
    glance-xen-import inspect SOURCE [--disk N|KEY|NAME] [--json]

SOURCE may be ``-`` for standard input. On success the exit status is 0;
on a refused input it is 1, with one line on stderr and no DEST left.
SIGTERM, SIGHUP and SIGINT stop the run the same way, with status 128 plus
the signal number; the RAW only ever gets the name DEST once complete, so
even SIGKILL leaves nothing there (at most a ``.DEST.partial-*`` file).
"""

import argparse
import json
import os
import signal
import sys
import time

from glance_xen_import import exception
from glance_xen_import import options
from glance_xen_import import pipeline
from glance_xen_import import progress_text
from glance_xen_import import sanitize

PROG = 'glance-xen-import'
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived; unwinding removes partial output."""

    def __init__(self, signum):
        super(Stopped, self).__init__(signum)
        self.signum = signum


def _on_stop_signal(signum, frame):
    # The first signal unwinds and cleans up; more must not cut that short.
    for other in _STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


class ProgressBar(object):
    """A progress display on a terminal, at most 10 updates/s.

    Each update rewrites the bar's line (carriage return, then erase to its
    end); the steps after the conversion follow on lines of their own, and
    the bar is left showing the last figures it was given.
    """

    WIDTH = 30
    ERASE_TO_END = '\x1b[K'

    def __init__(self, out, clock=time.monotonic):
        self._out = out
        self._clock = clock
        self._start = clock()
        self._last = None
        self._latest = None     # (done, total, time) of the last update
        self._shown = None      # the update the bar shows
        self._drawn = False

    def __call__(self, done, total):
        now = self._clock()
        self._latest = (done, total, now)
        if self._last is not None and now - self._last < 0.1 and (
                done != total):
            return
        self._last = now
        self._draw_bar()

    def step(self, name):
        """A step after the conversion (pipeline's on_step)."""
        self._finish_line()
        self._draw(progress_text.STEP_TEXT.get(name, name) + '...')

    def close(self):
        """End the last line, if anything was drawn."""
        self._finish_line()

    def _finish_line(self):
        if self._latest != self._shown:
            self._draw_bar()
        if self._drawn:
            self._out.write('\n')
            self._out.flush()
            self._drawn = False

    def _draw_bar(self):
        done, total, now = self._shown = self._latest
        rate = progress_text.rate(done, now - self._start)
        if total:
            filled = min(self.WIDTH, self.WIDTH * done // total)
            line = '[%s%s] %3d%% %s / %s  %.0f MB/s' % (
                '#' * filled, '.' * (self.WIDTH - filled),
                100 * done // total, progress_text.human(done),
                progress_text.human(total), rate)
        else:
            line = '%s  %.0f MB/s' % (progress_text.human(done), rate)
        self._draw(line)

    def _draw(self, line):
        self._out.write('\r' + line + self.ERASE_TO_END)
        self._out.flush()
        self._drawn = True


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description='Convert Xen/XenServer OVA and XVA exports '
        'into RAW images ready for a KVM cloud, and report the Glance image '
        'properties that make them boot.')
    commands = parser.add_subparsers(dest='command', required=True)

    def common(sub):
        sub.add_argument('source', metavar='SOURCE',
                         help='OVA or XVA file (plain, or compressed with '
                              'gzip, bzip2, xz or zstd; told apart by '
                              'content), or - for standard input')
        sub.add_argument('--json', action='store_true',
                         help='print the report as one JSON object')
        sub.add_argument('--manifest-policy',
                         choices=[options.MANIFEST_VERIFY,
                                  options.MANIFEST_REQUIRE,
                                  options.MANIFEST_IGNORE],
                         default=options.MANIFEST_VERIFY,
                         help='how to use the .mf manifest '
                              '(default: %(default)s)')
        sub.add_argument('--max-virtual-size', type=int,
                         default=options.DEFAULT_MAX_VIRTUAL_SIZE,
                         help='refuse disks larger than this many bytes')
        sub.add_argument('--default-disk-bus',
                         choices=['scsi', 'virtio', 'sata', 'ide'],
                         default='scsi',
                         help='hw_disk_bus for guests whose drivers do not '
                              'decide it (default: %(default)s)')
        sub.add_argument('--extra-disks',
                         choices=[options.EXTRA_DISKS_REPORT,
                                  options.EXTRA_DISKS_REFUSE],
                         default=options.EXTRA_DISKS_REPORT,
                         help='what to do with packages holding several '
                              'disks (default: %(default)s)')
        sub.add_argument('--windows-fixup',
                         choices=[options.FIXUP_AUTO, options.FIXUP_REPORT],
                         default=options.FIXUP_AUTO,
                         help='neutralise Xen PV drivers in Windows guests '
                              '(auto) or only report them (report)')
        sub.add_argument('--linux-fixup',
                         choices=[options.FIXUP_AUTO, options.FIXUP_REPORT],
                         default=options.FIXUP_AUTO,
                         help='rewrite Xen device names, consoles and '
                              'MAC-bound network names in Linux guests '
                              '(auto) or only report them (report)')
        sub.add_argument('--disk', default=None, metavar='N|KEY|NAME',
                         help='the disk of the VM to convert: its position '
                              '(0 is the boot disk), the file or VDI that '
                              'holds it, or its name (default: the boot '
                              'disk)')

    convert = commands.add_parser('convert', help='write the RAW image')
    common(convert)
    convert.add_argument('dest', metavar='DEST', nargs='?',
                         help='RAW image to create; must not exist')
    convert.add_argument('--all-disks', metavar='DIR', default=None,
                         help='write every disk of the VM, in one pass, '
                              'as DIR/disk-<position>.raw instead of DEST')
    inspect = commands.add_parser(
        'inspect', help='analyse only; the RAW is written to a scratch '
        'directory and removed')
    common(inspect)
    inspect.add_argument('--workdir', default=None,
                         help='scratch directory (default: $TMPDIR)')
    return parser


def _options(args):
    return options.Options(
        manifest_policy=args.manifest_policy,
        max_virtual_size=args.max_virtual_size,
        default_disk_bus=args.default_disk_bus,
        windows_fixup=args.windows_fixup,
        linux_fixup=args.linux_fixup,
        extra_disks=args.extra_disks,
        disk=args.disk)


def _run(args, dest):
    progress = None
    if not args.json and sys.stderr.isatty():
        progress = ProgressBar(sys.stderr)
    source = sys.stdin.buffer if args.source == '-' else args.source
    try:
        on_step = progress and progress.step
        if getattr(args, 'all_disks', None):
            return pipeline.convert_all(source, dest, _options(args),
                                        progress, on_step=on_step)
        return [(dest, pipeline.convert(source, dest, _options(args),
                                        progress, on_step=on_step))]
    finally:
        if progress is not None:
            progress.close()


def _print_reports(results, args):
    if args.json:
        if getattr(args, 'all_disks', None):
            out = {'disks': [dict(r.to_dict(), path=p) for p, r in results]}
        else:
            out = results[0][1].to_dict()
        json.dump(out, sys.stdout, sort_keys=True)
        sys.stdout.write('\n')
        return
    for dest, report in results:
        if len(results) > 1:
            print('== disk %d: %s' % (report.disk_position, dest))
        _print_report(report)


def _print_report(report):
    show = sanitize.text
    print('source:        %s' % show(report.source))
    print('virtual size:  %d bytes' % report.virtual_size)
    print('data written:  %d bytes' % report.allocated_bytes)
    print('manifest:      %s' % report.manifest)
    layout = report.layout
    print('partitions:    %s, %d partition(s)%s' % (
        layout.scheme, len(layout.partitions),
        ', whole-disk %s' % show(layout.filesystem)
        if layout.filesystem else ''))
    for disk in report.vm_disks:
        print('disk %d:%s %s (%s bytes, %s)%s' % (
            disk.position, ' ' * (7 - len(str(disk.position))),
            show(disk.key, 80),
            disk.capacity if disk.capacity is not None else '?', disk.role,
            ', converted' if disk.position == report.disk_position
            else ', --disk %d' % disk.position))
    print('properties:')
    for key, value in sorted(report.properties.items()):
        print('  %s=%s' % (show(key), show(value, sanitize.MAX_PROPERTY)))


def main(argv=None):
    args = _parser().parse_args(argv)
    scratch = None
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)
    try:
        if args.command == 'convert':
            dest = _convert_destination(args)
        else:
            scratch = _make_scratch(args.workdir)
            dest = os.path.join(scratch, 'disk.raw')
        results = _run(args, dest)
        _print_reports(results, args)
        return 0
    except exception.XenImportError as exc:
        _fail(str(exc), EXIT_REFUSED)
    except Stopped as stop:
        _fail('stopped by %s; partial output removed'
              % signal.Signals(stop.signum).name, 128 + stop.signum)
    except Exception as exc:
        _fail('internal error: %s: %s' % (type(exc).__name__, exc),
              EXIT_INTERNAL)
    finally:
        if scratch is not None:
            _remove_scratch(scratch)


# 'inspect' alone needs a scratch directory: tempfile and shutil are
# imported there, so that 'convert' does not pay for them at start-up.
def _make_scratch(workdir):
    import tempfile
    return tempfile.mkdtemp(prefix='xen-import-', dir=workdir)


def _remove_scratch(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def _convert_destination(args):
    if (args.dest is None) == (args.all_disks is None):
        _fail('convert needs either DEST or --all-disks DIR', EXIT_USAGE)
    if args.all_disks is not None:
        if args.disk is not None:
            _fail('--disk and --all-disks exclude each other', EXIT_USAGE)
        if not os.path.isdir(args.all_disks):
            _fail('%s is not a directory' % args.all_disks, EXIT_USAGE)
        return args.all_disks
    if os.path.lexists(args.dest):
        _fail('%s already exists; refusing to overwrite it' % args.dest,
              EXIT_USAGE)
    return args.dest


def _fail(reason, status):
    reason = sanitize.line(reason)
    sys.stderr.write('%s: error: %s\n' % (PROG, reason))
    sys.exit(status)


if __name__ == '__main__':
    sys.exit(main())
