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

"""End to end through a real glance-api: the seed's way, ours, direct RAW.

Run by ``tox -e bench`` after tools/bench.py (arguments in
``$GXI_BENCH_GLANCE_ARGS``), or alone: ``python tools/bench_glance.py``
in an environment with glance (the functional requirements). It builds
the same kind of disk as tools/bench.py (default 1 GiB, GPT, ext4 and
scattered random runs, a dynamic VHD in an OVA with a SHA256 manifest),
starts glance-api with tests/functional/glance_server.py and times, with
the real ``glance`` CLI, until the image is ``active``:

(a) the seed's way: ``tar xf`` the OVA, ``qemu-img convert -f vpc -O
    raw``, then ``glance image-create --file RAW`` (one upload of the
    whole RAW, zeros included);
(b) ours: ``glance image-create-via-import --import-method xen-ova --file
    OVA``: the OVA is staged, converted in glance-api, then copied to the
    store;
(c) a direct upload of an already converted RAW (the lower bound of (a)).

glance-api runs with settings an operator would choose for large images,
the same for every variant (doc/source/admin/configuration.rst): the file
store configured through ``enabled_backends``, which lets the staging
area (``os_glance_staging_store``) be tuned too, and
``filesystem_store_chunk_size`` of 1 MiB in the store and the staging
area instead of glance_store's 64 KiB.

Each runs on loopback, straight to glance-api, then through a
rate-limiting TCP proxy on loopback (default 1 Gbit/s) in front of it,
which also counts the bytes each sends to the server. Then (b) and (c)
again with ``filesystem_thin_provisioning = True``, to show what keeping
the RAW's holes saves in the store, and the three on loopback with
Glance's defaults (one store, 64 KiB chunks), to show what the settings
save. All three must give the same image bytes (Glance's os_hash_value),
or nothing is timed.

Times are wall-clock seconds on a shared machine: read them with the load
average printed next to them. A missed target prints MISS; the exit
status is non-zero only on errors.
"""

import argparse
import contextlib
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)
import bench  # noqa: E402
from tests.functional import glance_server  # noqa: E402

MiB = bench.MiB
GiB = bench.GiB
MB = bench.MB
GBIT = 1000 ** 3 // 8          # bytes per second of a 1 Gbit/s link
CHUNK = 64 * 1024
REQUIRED_TOOLS = ('qemu-img', 'qemu-io', 'tar', 'sfdisk', 'mkfs.ext4')
THIN = {'filesystem_thin_provisioning': 'True'}
# glance_store reads, hashes and writes in chunks of this size; its 64 KiB
# default costs a Python round (and a sleep(0)) per 64 KiB. Set in the
# store and in the staging area alike.
STORE_CHUNK = MiB
TUNED = {'filesystem_store_chunk_size': str(STORE_CHUNK)}


class ThrottledProxy(object):
    """A TCP proxy on 127.0.0.1 that paces client-to-server bytes.

    All connections share one link of ``rate`` bytes/s (None: no limit),
    as one network path would; server-to-client bytes (small answers) are
    not paced. ``sent`` counts the client-to-server bytes.
    """

    def __init__(self, target_port, rate=None):
        self.target = ('127.0.0.1', target_port)
        self.rate = rate
        self.sent = 0
        self._lock = threading.Lock()
        self._free_at = 0.0
        self._listener = socket.socket()
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(64)
        self.url = 'http://127.0.0.1:%d' % self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, server, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    def _pace(self, nbytes):
        if self.rate is None:
            return
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + nbytes / self.rate
            due = self._free_at
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if upstream:
                    self._pace(len(data))
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            src.close()

    def close(self):
        self._closed = True
        self._listener.close()


@contextlib.contextmanager
def clients_through(server, url):
    """The server's CLI and REST helpers talk to ``url`` meanwhile."""
    real = server.url
    server.url = url
    try:
        yield
    finally:
        server.url = real


class Result(object):

    def __init__(self, label):
        self.label = label
        self.seconds = []
        self.cpu = []            # CPU seconds of every process involved
        self.converting = []     # (b): the conversion in glance-api
        self.first = []          # seconds to the end of the first phase
        self.sent = None
        self.hash = None
        self.stored = None       # (size, allocated) of the store's file
        self.load = None

    @property
    def median(self):
        return statistics.median(self.seconds)

    @property
    def cpu_median(self):
        return statistics.median(self.cpu)

    @property
    def phases(self):
        """Median (first phase, the rest) in seconds."""
        first = statistics.median(self.first)
        return first, self.median - first


def local_cpu():
    """CPU seconds of this process (the proxy) and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def conversion_seconds(server, image_id):
    """The plugin's own timing of the conversion, from glance-api's log."""
    pattern = re.compile(r'xen-ova import of image %s: converted .*, read '
                         r'\d+ bytes in ([\d.]+) s' % re.escape(image_id))
    with open(server.log_file, errors='replace') as f:
        for line in f:
            found = pattern.search(line)
            if found:
                return float(found.group(1))
    return None


def server_cpu(server):
    """CPU seconds glance-api's processes (one process group) have used."""
    ticks = os.sysconf('SC_CLK_TCK')
    total = 0
    for pid in glance_server.live_members(server.process.pid):
        fields = glance_server.proc_stat_fields(pid)
        if fields:
            # utime, stime, cutime, cstime: fields 14-17 of proc(5).
            total += sum(int(v) for v in fields[11:15])
    return total / ticks


def store_file(server, image_id):
    """The image's file in the server's default store."""
    name = glance_server.STORES[0] if server.multistore else 'file'
    return os.path.join(server.store_dirs()[name], image_id)


def wait_active(server, image_id):
    image = server.image(image_id)
    if image['status'] != 'active':
        image, task = server.wait_for_import(image_id, timeout=3600)
        if image['status'] != 'active':
            raise bench.BenchError('image %s ended %s: %s\n%s' % (
                image_id, image['status'], task.get('message'),
                server.logs()))
    return image


# Each variant marks the end of its first phase: (a) the local conversion,
# (b) the upload to the staging area (and the import call), (c) nothing.

def seed_way(server, ova, vhd_name, scratch, marks):
    """tar xf + qemu-img convert + glance image-create --file RAW."""
    extract = os.path.join(scratch, 'extract')
    os.mkdir(extract)
    subprocess.run(['tar', 'xf', ova], cwd=extract, check=True)
    raw = os.path.join(scratch, 'seed.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw',
                    os.path.join(extract, vhd_name), raw], check=True)
    shutil.rmtree(extract)
    marks.append(time.perf_counter())
    out = server.glance('image-create', '--name', 'seed', '--disk-format',
                        'raw', '--container-format', 'bare', '--file', raw,
                        timeout=3600).stdout
    os.unlink(raw)
    return glance_server.image_id(out)


def ours(server, ova, marks):
    out = server.glance('image-create-via-import', '--name', 'ours',
                        '--import-method', 'xen-ova', '--disk-format',
                        'raw', '--container-format', 'bare', '--file', ova,
                        timeout=3600).stdout
    marks.append(time.perf_counter())
    return glance_server.image_id(out)


def direct(server, raw, marks):
    marks.append(time.perf_counter())
    out = server.glance('image-create', '--name', 'direct', '--disk-format',
                        'raw', '--container-format', 'bare', '--file', raw,
                        timeout=3600).stdout
    return glance_server.image_id(out)


def timed(result, server, proxy, run):
    """One run of a variant, through ``proxy`` if any; records it."""
    url = proxy.url if proxy else server.url
    if proxy:
        proxy.sent = 0
    with clients_through(server, url):
        cpu = local_cpu() + server_cpu(server)
        start = time.perf_counter()
        marks = []
        image_id = run(marks)
        image = wait_active(server, image_id)
        result.seconds.append(time.perf_counter() - start)
        result.first.append(marks[0] - start)
        result.cpu.append(local_cpu() + server_cpu(server) - cpu)
    if proxy:
        result.sent = proxy.sent
    result.load = os.getloadavg()[0]
    if result.hash not in (None, image['os_hash_value']):
        raise bench.BenchError('%s gave different bytes from one run to '
                               'the next' % result.label)
    result.hash = image['os_hash_value']
    info = os.stat(store_file(server, image_id))
    result.stored = (info.st_size, info.st_blocks * 512)
    converting = conversion_seconds(server, image_id)
    if converting is not None:
        result.converting.append(converting)
    server.glance('image-delete', image_id)


def run_variants(server, disk, scratch, proxy, runs, which):
    """Interleaved runs of the variants in ``which`` ('a', 'b', 'c')."""
    labels = {'a': '(a) tar + qemu-img + image-create',
              'b': '(b) ours: --import-method xen-ova',
              'c': '(c) image-create of a ready RAW'}
    plans = {'a': lambda marks: seed_way(server, disk.ova, disk.vhd_name,
                                         scratch, marks),
             'b': lambda marks: ours(server, disk.ova, marks),
             'c': lambda marks: direct(server, disk.converted, marks)}
    results = [Result(labels[key]) for key in which]
    for _ in range(runs):
        for key, result in zip(which, results):
            timed(result, server, proxy, plans[key])
    hashes = {result.hash for result in results}
    if len(hashes) != 1:
        raise bench.BenchError('the variants stored different bytes: %s'
                               % ', '.join(r.label for r in results))
    return results


class Disk(object):
    """The OVA of tools/bench.py's mixed disk and qemu-img's RAW of it."""

    def __init__(self, workdir, size, seed):
        plan = bench.plan_disk(size, seed, 0.2, 0.05, 0.0)
        built = bench.build_disk(workdir, 'e2e', plan, seed,
                                 plan.fs_bytes * 3 // 8)
        source, vhd = built.raw, built.vhd
        self.ova = built.ovas[bench.MANIFEST_FIRST]
        self.size = size
        self.vhd_name = os.path.basename(vhd)
        self.allocated = bench.vhd_allocated_bytes(vhd)
        self.converted = os.path.join(workdir, 'converted.raw')
        subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', vhd,
                        self.converted], check=True)
        bench.require_same('qemu-img', self.converted, source)
        os.unlink(source)
        os.unlink(vhd)


def print_table(title, results):
    print()
    print(title)
    print('  %-36s %7s %-15s %7s %10s %10s %10s %5s' % (
        'variant', 'median', ' (runs)', 'CPU', 'sent', 'stored',
        'allocated', 'load'))
    for r in results:
        print('  %-36s %6.1fs %-15s %6.1fs %10s %10s %10s %5.2f' % (
            r.label, r.median,
            '(%s)' % ' '.join('%.1f' % s for s in r.seconds), r.cpu_median,
            '-' if r.sent is None else bench.human(r.sent),
            bench.human(r.stored[0]),
            bench.human(r.stored[1]), r.load))


def model(loop, sent):
    """Seconds each variant would take on a link of ``speed`` bytes/s.

    From the loopback phases: (a) converts locally, then uploads the RAW,
    which Glance hashes and writes as it arrives, so the upload takes the
    longer of the transfer and its loopback time; (b) uploads the OVA to
    the staging area, and only then converts and copies to the store;
    (c) is (a)'s upload alone. ``sent``: bytes each sends.
    """
    (prep_a, up_a), (stage_b, rest_b), (_, up_c) = [r.phases for r in loop]
    sent_a, sent_b, sent_c = sent
    return [
        lambda speed: prep_a + max(sent_a / speed, up_a),
        lambda speed: max(sent_b / speed, stage_b) + rest_b,
        lambda speed: max(sent_c / speed, up_c),
    ]


def crossover(times, low=1e6, high=1e11):
    """The link speed (bytes/s) below which (b) beats (a), or None.

    Scans speeds from ``high`` down; 0 if (b) wins at every speed tried,
    None if it never does.
    """
    seed, ours_ = times[0], times[1]
    speed = high
    if ours_(speed) <= seed(speed):
        return 0
    while speed > low:
        speed /= 1.02
        if ours_(speed) <= seed(speed):
            return speed
    return None


def print_why_miss(disk, loop):
    """Why (b) is slower than (a).

    The causes were found by profiling glance-api (py-spy); the figures
    are this run's.
    """
    stage, rest = loop[1].phases
    converting = (' with the %.1fs conversion'
                  % statistics.median(loop[1].converting)
                  if loop[1].converting else '')
    print('  why: Glance\'s import is two passes in series, (a) is one. '
          'Glance stages the whole OVA (%s; %.1fs with the CLI\'s calls) '
          'before any plugin runs, then one thread hashes (md5 + sha512) '
          'and writes every byte of the %s RAW, zeros included (%.1fs%s); '
          '(a)\'s upload hashes the same bytes while its client runs on '
          'the other core. The plugin can skip neither pass: see '
          'doc/source/admin/configuration.rst.'
          % (bench.human(os.path.getsize(disk.ova)), stage,
             bench.human(disk.size), rest, converting))


def print_summary(disk, loop, link, thin, rate, defaults):
    seed, ours_ = loop[0], loop[1]
    print()
    print('targets')
    ok = ours_.median <= seed.median
    print('  %-58s %10s   %s' % (
        '(b) no slower than (a) on loopback (%.1fs)' % seed.median,
        '%.1fs' % ours_.median, 'PASS' if ok else 'MISS'))
    if not ok:
        print_why_miss(disk, loop)
    print('  (for context: CPU seconds of all processes, (a) %.1fs, '
          '(b) %.1fs, (c) %.1fs; they depend less on the other load)'
          % (seed.cpu_median, ours_.cpu_median, loop[2].cpu_median))
    if ours_.converting:
        print('  of (b), the conversion in glance-api took %.1fs (median, '
              'the plugin\'s log); the rest is staging the OVA and '
              'Glance\'s copy of the RAW to the store'
              % statistics.median(ours_.converting))
    print()
    print('crossover')
    times = model(loop, [r.sent for r in link])
    for plain, slow, predict in zip(loop, link, times):
        first, rest = plain.phases
        print('  %-36s phases on loopback %.1fs + %.1fs; at %.0f Mbit/s '
              'the model gives %.1fs, measured %.1fs' % (
                  plain.label, first, rest, rate * 8 / 1e6,
                  predict(rate), slow.median))
    speed = crossover(times)
    if speed == 0:
        print('  model: (b) is faster than (a) at any link speed')
    elif speed is None:
        print('  model: (b) is slower than (a) at any link speed')
    else:
        print('  model: (b) beats (a) on links slower than about %.0f '
              'Mbit/s (%.0f MB/s)' % (speed * 8 / 1e6, speed / MB))
    print('  (a) sends the whole RAW, %s (the virtual size, zeros '
          'included); (b) the OVA, %s (the VHD\'s allocated blocks, %s, '
          'and metadata). On a link-bound path (b) wins once (virtual - '
          'allocated) / link speed exceeds its extra work in glance-api, '
          'so the sparser the disk, the faster the link at which it wins.'
          % (bench.human(link[0].sent), bench.human(link[1].sent),
             bench.human(disk.allocated)))
    if thin:
        print()
        print('thin provisioning (filesystem_thin_provisioning = True)')
        for plain, lean in zip(loop[1:], thin):
            print('  %-36s store allocation %s -> %s, time %.1fs -> %.1fs, '
                  'CPU %.1fs -> %.1fs'
                  % (plain.label, bench.human(plain.stored[1]),
                     bench.human(lean.stored[1]), plain.median,
                     lean.median, plain.cpu_median, lean.cpu_median))
    if defaults:
        print()
        print('Glance\'s defaults -> the settings (enabled_backends, %s '
              'chunks in the store and the staging area)'
              % bench.human(STORE_CHUNK))
        for tuned, plain in zip(loop, defaults):
            print('  %-36s time %.1fs -> %.1fs, CPU %.1fs -> %.1fs'
                  % (tuned.label, plain.median, tuned.median,
                     plain.cpu_median, tuned.cpu_median))
        print('  (b) against (a) with the defaults: %.1fs against %.1fs'
              % (defaults[1].median, defaults[0].median))


def start_server(workdir, name, store_options=None, defaults=False):
    """glance-api with TUNED settings (plus ``store_options``).

    ``defaults``: Glance's defaults instead, one store and 64 KiB chunks.
    """
    path = os.path.join(workdir, name)
    progress = {'progress_interval': 5}
    if defaults:
        server = glance_server.GlanceServer(path, xen_ova_options=progress)
    else:
        server = glance_server.GlanceServer(
            path, multistore=True, xen_ova_options=progress,
            store_options=dict(TUNED, **(store_options or {})),
            staging_options=TUNED)
    server.start()
    return server


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Time image creation through a real glance-api.')
    parser.add_argument('--size', type=bench.parse_size, default=GiB,
                        help='virtual size of the disk (default 1G)')
    parser.add_argument('--runs', type=int, default=1,
                        help='interleaved runs per variant (default 1)')
    parser.add_argument('--link-mbit', type=float, default=1000,
                        help='throttled link speed in Mbit/s '
                             '(default 1000)')
    parser.add_argument('--skip-thin', action='store_true',
                        help='skip the thin-provisioned store')
    parser.add_argument('--skip-defaults', action='store_true',
                        help='skip the run with Glance\'s default settings')
    parser.add_argument('--seed', type=int, default=20261125)
    parser.add_argument('--workdir',
                        help='directory for the temporary work directory')
    args = parser.parse_args(argv)
    if args.runs < 1 or args.link_mbit <= 0:
        parser.error('--runs and --link-mbit must be positive')
    return args


def main(argv=None):
    if argv is None:
        argv = (sys.argv[1:]
                or shlex.split(os.environ.get('GXI_BENCH_GLANCE_ARGS', '')))
    args = parse_args(argv)
    try:
        import glance  # noqa: F401
    except ImportError:
        print('bench_glance: glance is not installed; run it with '
              '"tox -e bench"', file=sys.stderr)
        return 1
    if bench.tools_missing('bench_glance', REQUIRED_TOOLS):
        return 1
    rate = args.link_mbit * 1e6 / 8
    workdir = tempfile.mkdtemp(prefix='gxi-bench-glance-', dir=args.workdir)
    servers, proxies = [], []
    try:
        print('end to end through glance-api 33 (gunicorn, sqlite, file '
              'stores through enabled_backends, filesystem_store_chunk_size '
              '%s in the store and the staging area), work directory %s; '
              'load average at start %.2f (2 shared cores: wall times are '
              'noisy)' % (bench.human(STORE_CHUNK), workdir,
                          os.getloadavg()[0]), flush=True)
        disk = Disk(workdir, args.size, args.seed)
        print('disk: %s virtual, %s in allocated VHD blocks, OVA %s'
              % (bench.human(disk.size), bench.human(disk.allocated),
                 bench.human(os.path.getsize(disk.ova))), flush=True)
        scratch = os.path.join(workdir, 'scratch')
        os.mkdir(scratch)
        server = start_server(workdir, 'plain')
        servers.append(server)
        port = int(server.url.rsplit(':', 1)[1])
        link = ThrottledProxy(port, rate)
        proxies.append(link)
        loop = run_variants(server, disk, scratch, None, args.runs, 'abc')
        print_table('loopback (bytes sent: see the throttled run)', loop)
        linked = run_variants(server, disk, scratch, link, args.runs, 'abc')
        print_table('link throttled to %.0f Mbit/s' % args.link_mbit, linked)
        thin = None
        if not args.skip_thin:
            lean = start_server(workdir, 'thin', THIN)
            servers.append(lean)
            thin = run_variants(lean, disk, scratch, None, args.runs, 'bc')
            print_table('loopback, thin-provisioned store', thin)
        defaults = None
        if not args.skip_defaults:
            plain = start_server(workdir, 'defaults', defaults=True)
            servers.append(plain)
            defaults = run_variants(plain, disk, scratch, None, args.runs,
                                    'abc')
            print_table('loopback, Glance\'s defaults (one store, 64 KiB '
                        'chunks)', defaults)
        print_summary(disk, loop, linked, thin, rate, defaults)
        print('load average at the end %.2f' % os.getloadavg()[0])
    except (bench.BenchError, glance_server.GlanceError,
            subprocess.CalledProcessError, RuntimeError) as exc:
        print('bench_glance: error: %s' % exc, file=sys.stderr)
        return 1
    finally:
        for proxy in proxies:
            proxy.close()
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
