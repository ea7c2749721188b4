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

"""Time XVA -> RAW against ``tar xf`` + Debian's ``xva-img``.

Run by ``tox -e bench`` after tools/bench.py, or alone:
``python tools/bench_xva.py [--size 1G] [--runs 5]``. In a temporary work
directory it builds, with tools/bench.py's disk plan (sfdisk, mkfs.ext4 -d,
seeded random runs) a RAW disk (default 1 GiB) of which about half the
1 MiB chunks hold data, and an XVA of it with tests/xvakit.py (xapi's
layout, SHA-1 ``.checksum`` members, which xva-img 1.4.2 reads).

It checks once that both variants write the source RAW byte for byte,
then runs each in a fresh process, interleaved, ``--runs`` times:

(a) this project's formats layer: formats.package.read_package with
    raw.SparseWriter (every chunk verified, zero pages left as holes);
(b) ``tar xf XVA`` then ``xva-img -s disk-export DIR/Ref:N RAW`` (which
    also verifies each chunk's SHA-1, and writes sparse).

Reported: median wall time, median CPU time (user + system of the process
and its children), peak RSS as GNU time reports it, and the ratios. The
page cache is warm and nothing is synced; the machine may be shared, so
compare the ratios, not the absolute figures.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)
import bench  # noqa: E402
from tests import ovakit  # noqa: E402
from tests import xvakit  # noqa: E402

MiB = bench.MiB
GiB = bench.GiB
REQUIRED_TOOLS = ('tar', 'sh', 'sfdisk', 'mkfs.ext4', 'xva-img')


def convert(xva, out_dir):
    """Variant (a), run in its own process: XVA -> one RAW per disk."""
    from glance_xen_import.formats import package
    from glance_xen_import.formats import raw

    writers = {}

    def open_sink(disk):
        writers[disk.ref] = raw.SparseWriter(
            os.path.join(out_dir, disk.ref.replace(':', '_') + '.raw'))
        return writers[disk.ref]

    with open(xva, 'rb') as stream:
        pkg = package.read_package(stream, None, lambda d: d.disks,
                                   open_sink)
    for disk, info in pkg.result.converted:
        writers[disk.ref].finish(info.current_size)
    print(json.dumps({disk.ref: {'path': writers[disk.ref].path,
                                 'chunks': info.chunks,
                                 'bytes_present': info.bytes_present}
                      for disk, info in pkg.result.converted}))
    return 0


def measure(argv, workdir):
    """bench.measure, plus the CPU seconds the command and children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = bench.measure(argv, workdir)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime
                                               + before.ru_stime)
    return run, cpu


def read_through(path):
    """Read a file once so every variant starts with it in the page cache."""
    with open(path, 'rb') as f:
        while f.read(8 * MiB):
            pass


def build(args, workdir):
    plan = bench.plan_disk(args.size, args.seed, data_fraction=0.5,
                           zero_fraction=0.0, empty_zones=0.0)
    source = os.path.join(workdir, 'source.raw')
    bench.write_raw(source, plan, args.seed, 4 * MiB)
    xva = os.path.join(workdir, 'vm.xva')
    disk = xvakit.Disk(source, 'root')
    xvakit.make_xva(xva, [disk], checksum='sha1', cd=None)
    return source, xva, disk.ref


def variants(xva, ref, out_dir, extract_dir):
    ours = os.path.join(out_dir, ref.replace(':', '_') + '.raw')
    theirs = os.path.join(out_dir, 'xva-img.raw')
    return [
        ('glance-xen-import formats', [sys.executable, __file__,
                                       '--convert', xva, out_dir], ours),
        ('tar xf + xva-img', ['sh', '-c', 'tar -xf "$1" -C "$2" && '
                              'xva-img -s disk-export "$2/$3" "$4"', 'sh',
                              xva, extract_dir, ref, theirs], theirs),
    ]


def reset(out_dir, extract_dir):
    for path in (out_dir, extract_dir):
        shutil.rmtree(path, ignore_errors=True)
        os.mkdir(path)


def run(args, workdir):
    started = time.perf_counter()
    source, xva, ref = build(args, workdir)
    present = sum(1 for _ in xvakit.chunk_payloads(xvakit.Disk(source)))
    print('input: %s disk, %d of %d chunks of 1 MiB present; XVA %s '
          '(built in %.0f s)' % (
              bench.human(args.size), present, -(-args.size // MiB),
              bench.human(os.path.getsize(xva)),
              time.perf_counter() - started))
    out_dir = os.path.join(workdir, 'out')
    extract_dir = os.path.join(workdir, 'extract')
    commands = variants(xva, ref, out_dir, extract_dir)
    read_through(xva)
    for label, argv, output in commands:
        reset(out_dir, extract_dir)
        measure(argv, workdir)
        difference = ovakit.sparse_first_difference(output, source)
        if difference:
            raise bench.BenchError('%s: output differs from the source '
                                   'RAW: %s' % (label, difference))
    print('both outputs are the source RAW, byte for byte')
    results = {label: [] for label, _a, _o in commands}
    for _ in range(args.runs):           # interleaved
        for label, argv, _output in commands:
            reset(out_dir, extract_dir)
            results[label].append(measure(argv, workdir))
    reset(out_dir, extract_dir)
    return results


def report(results, size):
    rows = {}
    for label, runs in results.items():
        wall = statistics.median(r.seconds for r, _cpu in runs)
        cpu = statistics.median(cpu for _r, cpu in runs)
        rss = max(r.maxrss for r, _cpu in runs)
        rows[label] = (wall, cpu, rss)
        print('%-28s median %6.2f s (%7.1f MB/s of disk)  CPU %6.2f s  '
              'peak RSS %s' % (label, wall, bench.rate(size, wall), cpu,
                               bench.human(rss)))
    (ours, theirs) = rows.values()
    print('ratio ours / tar + xva-img: wall %.2f, CPU %.2f, RSS %.2f' % (
        ours[0] / theirs[0], ours[1] / theirs[1], ours[2] / theirs[2]))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Time XVA -> RAW against tar + xva-img.')
    parser.add_argument('--size', type=bench.parse_size, default=GiB,
                        help='virtual size of the disk (default 1G)')
    parser.add_argument('--runs', type=int, default=5,
                        help='timed runs per variant (default 5)')
    parser.add_argument('--seed', type=int, default=20261130)
    parser.add_argument('--workdir', help='where the work directory goes')
    parser.add_argument('--keep', action='store_true',
                        help='keep the work directory')
    parser.add_argument('--convert', nargs=2, metavar=('XVA', 'DIR'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    if args.size < 256 * MiB or args.size % bench.SECTOR:
        parser.error('--size must be at least 256 MiB, in 512-byte sectors')
    return args


def bench_in(args, workdir):
    print('XVA -> RAW, work directory %s' % workdir)
    try:
        report(run(args, workdir), args.size)
    except (bench.BenchError, RuntimeError) as exc:
        print('bench_xva: error: %s' % exc, file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.convert:
        return convert(*args.convert)
    if bench.tools_missing('bench_xva', REQUIRED_TOOLS):
        return 1
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    if args.keep:
        return bench_in(args, tempfile.mkdtemp(prefix='gxi-bench-xva-',
                                               dir=args.workdir))
    with tempfile.TemporaryDirectory(prefix='gxi-bench-xva-',
                                     dir=args.workdir) as workdir:
        return bench_in(args, workdir)


if __name__ == '__main__':
    sys.exit(main())
