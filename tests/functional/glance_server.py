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

"""A throw-away glance-api on 127.0.0.1 for the functional tests and demo.

Glance 33 only runs under a WSGI server, so this writes a configuration
directory (sqlite database, file store(s), the ``xen_ova`` import plugin
and paste filter, a test-only trusted-token auth filter), migrates the
database with glance-manage and serves ``glance.wsgi.api:application``
with gunicorn. The listening socket is bound here and handed to gunicorn
(``fd://``), so the port is known before start and nothing races for it.

The server is driven with the real ``glance`` command of
python-glanceclient; ``api()`` is a small REST helper for polling.
"""

import configparser
import ctypes
import ctypes.util
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.functional import taskhistory

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BIN_DIR = os.path.dirname(sys.executable)

TOKEN = 'tester:testproject:admin'
PR_SET_PDEATHSIG = 1
STORES = ('fast', 'cheap')

# Glance's own paste file, installed with the glance wheel.
SHIPPED_PASTE_INI = os.path.join(sys.prefix, 'etc', 'glance',
                                 'glance-api-paste.ini')
FILTER_FACTORY = 'glance_xen_import.middleware:filter_factory'
FAKEAUTH_FACTORY = 'tests.functional.fakeauth:FakeAuth.factory'


def paste_ini(shipped=SHIPPED_PASTE_INI):
    """Glance's paste file edited as the admin guide says, plus fake auth.

    ``xen_ova`` goes right after ``context`` in the keystone pipelines;
    the test-only ``fakeauth`` flavor is the keystone pipeline with
    ``authtoken`` replaced by the trusted-token filter.
    """
    paste = configparser.RawConfigParser()
    paste.optionxform = str
    if not paste.read(shipped):
        raise GlanceError('glance paste file not found: %s' % shipped)
    api = 'composite:api'
    for flavor, pipeline in paste.items(api):
        filters = pipeline.split()
        if 'context' in filters and 'xen_ova' not in filters:
            filters.insert(filters.index('context') + 1, 'xen_ova')
            paste.set(api, flavor, ' '.join(filters))
    paste.set(api, 'fakeauth', ' '.join(
        'fakeauth' if name == 'authtoken' else name
        for name in paste.get(api, 'keystone').split()))
    paste['composite:glance-api-fakeauth'] = dict(
        paste['composite:glance-api-keystone'])
    paste['filter:xen_ova'] = {'paste.filter_factory': FILTER_FACTORY}
    paste['filter:fakeauth'] = {'paste.filter_factory': FAKEAUTH_FACTORY}
    text = io.StringIO()
    paste.write(text)
    return text.getvalue()


class GlanceError(Exception):
    pass


class CommandFailed(GlanceError):

    def __init__(self, argv, result):
        self.result = result
        super(CommandFailed, self).__init__(
            '%s exited %d\nstdout: %s\nstderr: %s' % (
                ' '.join(argv), result.returncode, result.stdout,
                result.stderr))


def image_id(output):
    """The id row of the image table the ``glance`` CLI prints."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) == 2 and cells[0] == 'id':
            return cells[1]
    raise GlanceError('no image id in glance output:\n%s' % output)


def table_value(output, name):
    """A property's value from the CLI's table, its wrapped lines joined."""
    value, inside = [], False
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) != 2:
            continue
        if cells[0]:
            inside = cells[0] == name
        if inside:
            value.append(cells[1])
    if not value:
        raise GlanceError('no %s in glance output:\n%s' % (name, output))
    return ''.join(value)


def _ephemeral_low(path='/proc/sys/net/ipv4/ip_local_port_range'):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _listening_socket(port=0):
    """A listening socket on 127.0.0.1:port, or on a free port if 0.

    A free port is taken below the kernel's ephemeral range: a node killed
    with ``release_port`` binds its port again on restart, and no client
    connection made meanwhile can have been given that port as its own.
    """
    if port:
        return _bind(port)
    low = _ephemeral_low()
    first = 20000 if low > 20200 else 1024
    for candidate in random.Random().sample(range(first, low), 200):
        try:
            return _bind(candidate)
        except OSError:
            continue
    raise GlanceError('no free port below %d on 127.0.0.1' % low)


def _bind(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(('127.0.0.1', port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def die_with_parent():
    """In the child: get SIGTERM when the test process dies (Linux).

    A killed pytest cannot run its fixture teardown; without this the
    server would live on.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError, TypeError):
        pass


def _tail(path, lines=60):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def proc_stat_fields(pid):
    """The fields of /proc/PID/stat after ``pid (comm)``, or None if gone.

    Field 3 of proc(5), the state, is index 0; comm may hold spaces.
    """
    try:
        with open('/proc/%s/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(')') + 2:].split()


def live_members(group):
    """Processes of a process group that still run (zombies excluded)."""
    live = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        fields = proc_stat_fields(pid)
        # state ppid pgrp ...
        if fields and int(fields[2]) == group and fields[0] not in 'ZX':
            live.append(int(pid))
    return live


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


class GlanceServer(object):
    """One glance-api configuration, started once, stopped always.

    :param workdir: an empty directory owned by the caller
    :param multistore: configure ``enabled_backends`` (stores ``fast`` and
        ``cheap``) instead of the single ``[glance_store]`` file store
    :param web_download_port: loopback port(s) web-download may fetch from
    :param xen_ova_options: extra ``[xen_ova]`` options
    :param default_options: extra ``[DEFAULT]`` options of glance-api.conf
    :param workers: gunicorn worker processes (each runs its own imports)
    :param db_connection: a ``[database] connection`` URL instead of the
        node's own sqlite file (several nodes may share it)
    :param store_dir: the single file store's directory (several nodes
        may share it); default ``<workdir>/images``
    :param sections: extra ``{section: {option: value}}`` of
        glance-api.conf
    :param store_options: extra options of the store section(s), e.g.
        ``filesystem_thin_provisioning``
    :param staging_options: extra options of the staging store's section
        (``os_glance_staging_store``; with ``multistore`` only, Glance
        builds the single-store staging area from defaults)
    """

    def __init__(self, workdir, multistore=False, web_download_port=None,
                 xen_ova_options=None, default_options=None,
                 workers_threads=8, workers=1, db_connection=None,
                 store_dir=None, sections=None, store_options=None,
                 staging_options=None):
        self.workdir = os.path.abspath(workdir)
        self.multistore = multistore
        self.web_download_port = web_download_port
        self.xen_ova_options = dict(xen_ova_options or {})
        self.default_options = dict(default_options or {})
        self.threads = workers_threads
        self.workers = workers
        self.db_connection = db_connection or 'sqlite:///%s' % os.path.join(
            self.workdir, 'glance.sqlite')
        self.store_dir = store_dir or os.path.join(self.workdir, 'images')
        self.sections = dict(sections or {})
        self.store_options = dict(store_options or {})
        self.staging_options = dict(staging_options or {})
        self.etc = os.path.join(self.workdir, 'etc')
        self.staging_dir = os.path.join(self.workdir, 'staging')
        self.log_file = os.path.join(self.workdir, 'glance-api.log')
        # Where a test asks a worker to hold an import (gate.py).
        self.gate_dir = os.path.join(self.workdir, 'gate')
        self.gunicorn_log = os.path.join(self.workdir, 'gunicorn.log')
        self.sock = None
        self.process = None
        self.url = None

    # -- configuration -------------------------------------------------

    def store_dirs(self):
        if self.multistore:
            return {name: os.path.join(self.workdir, 'stores', name)
                    for name in STORES}
        return {'file': self.store_dir}

    def _api_conf(self):
        stores = self.store_dirs()
        lines = [
            '[DEFAULT]',
            'debug = false',
            'log_file = %s' % self.log_file,
            'enabled_import_methods = '
            '[glance-direct,web-download,copy-image]',
            'worker_self_reference_url = %s' % self.url,
        ]
        lines += ['%s = %s' % kv
                  for kv in sorted(self.default_options.items())]
        if self.multistore:
            lines.append('enabled_backends = %s' % ','.join(
                '%s:file' % name for name in STORES))
        else:
            lines.append('node_staging_uri = file://%s' % self.staging_dir)
        lines += [
            '',
            '[database]',
            'connection = %s' % self.db_connection,
            '',
            '[paste_deploy]',
            'flavor = fakeauth',
            '',
            '[oslo_concurrency]',
            'lock_path = %s' % os.path.join(self.workdir, 'locks'),
            '',
            '[wsgi]',
            'python_interpreter = %s' % sys.executable,
            '',
            '[glance_store]',
        ]
        if self.multistore:
            lines.append('default_backend = %s' % STORES[0])
            for name, path in stores.items():
                lines += ['', '[%s]' % name,
                          'filesystem_store_datadir = %s' % path]
                lines += self._store_option_lines()
            for reserved, path, options in (
                    ('os_glance_staging_store', self.staging_dir,
                     self.staging_options),
                    ('os_glance_tasks_store',
                     os.path.join(self.workdir, 'tasks'), {})):
                lines += ['', '[%s]' % reserved,
                          'filesystem_store_datadir = %s' % path]
                lines += ['%s = %s' % kv for kv in sorted(options.items())]
        else:
            lines += ['stores = file,http', 'default_store = file',
                      'filesystem_store_datadir = %s' % stores['file']]
            lines += self._store_option_lines()
        for section, options in sorted(self.sections.items()):
            lines += ['', '[%s]' % section]
            lines += ['%s = %s' % kv for kv in sorted(options.items())]
        return '\n'.join(lines) + '\n'

    def _store_option_lines(self):
        return ['%s = %s' % kv for kv in sorted(self.store_options.items())]

    def _import_conf(self):
        lines = ['[image_import_opts]', 'image_import_plugins = [xen_ova]']
        if self.web_download_port:
            lines += ['', '[import_filtering_opts]',
                      'allowed_hosts = [127.0.0.1]',
                      'allowed_ports = [%s]' % ','.join(
                          str(p) for p in _as_list(self.web_download_port))]
        if self.xen_ova_options:
            lines += ['', '[xen_ova]']
            lines += ['%s = %s' % kv
                      for kv in sorted(self.xen_ova_options.items())]
        return '\n'.join(lines) + '\n'

    def _write_config(self):
        for path in [self.etc, self.staging_dir,
                     os.path.join(self.workdir, 'locks'),
                     os.path.join(self.workdir, 'tasks')]:
            os.makedirs(path, exist_ok=True)
        for path in self.store_dirs().values():
            os.makedirs(path, exist_ok=True)
        files = {
            'glance-api.conf': self._api_conf(),
            'glance-image-import.conf': self._import_conf(),
            'glance-api-paste.ini': paste_ini(),
        }
        for name, text in files.items():
            with open(os.path.join(self.etc, name), 'w') as f:
                f.write(text)

    def _env(self):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith('OS_')}
        env['OS_GLANCE_CONFIG_DIR'] = self.etc
        env['GXI_TEST_GATE_DIR'] = self.gate_dir
        # The paste file names tests.functional.fakeauth.
        env['PYTHONPATH'] = os.pathsep.join(
            [REPO_ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p])
        return env

    @property
    def sqlite_path(self):
        """The database file, or None if the database is not sqlite."""
        prefix = 'sqlite:///'
        if self.db_connection.startswith(prefix):
            return self.db_connection[len(prefix):]
        return None

    def task_messages(self, task_id):
        """[(message, updated_at)] of every save of the task (sqlite)."""
        return taskhistory.messages(self.sqlite_path, task_id)

    # -- life cycle ----------------------------------------------------

    def start(self, timeout=300):
        self.sock = _listening_socket()
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]
        return self.restart(timeout)

    def _start(self, timeout):
        self._write_config()
        os.makedirs(self.gate_dir, exist_ok=True)
        self._run([sys.executable, '-c',
                   'import sys; from glance.cmd import manage; '
                   'sys.exit(manage.main())',
                   '--config-file', os.path.join(self.etc, 'glance-api.conf'),
                   'db_sync'], timeout=300)
        if self.sqlite_path:
            taskhistory.install(self.sqlite_path)
        fd = self.sock.fileno()
        argv = [sys.executable, '-m', 'gunicorn',
                '--bind', 'fd://%d' % fd,
                '--workers', str(self.workers),
                '--threads', str(self.threads),
                '--timeout', '600', '--graceful-timeout', '10',
                '--error-logfile', self.gunicorn_log,
                '--chdir', REPO_ROOT,
                '--config', 'python:tests.functional.gunicorn_conf',
                'glance.wsgi.api:application']
        log = open(self.gunicorn_log + '.out', 'ab')
        try:
            self.process = subprocess.Popen(
                argv, env=self._env(), pass_fds=(fd,),
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent)
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise GlanceError('glance-api exited with %s\n%s\n%s' % (
                    self.process.returncode, _tail(self.gunicorn_log),
                    _tail(self.log_file)))
            try:
                status, _, _ = self.api('GET', '/v2/info/import', timeout=5)
                if status == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise GlanceError('glance-api did not answer in %ds\n%s\n%s'
                                  % (timeout, _tail(self.gunicorn_log),
                                     _tail(self.log_file)))
            time.sleep(0.3)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        self.process = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def kill(self, release_port=False):
        """SIGKILL gunicorn and its workers at once, as a crash would.

        The listening socket stays open here, so ``restart`` serves the
        same URL: Glance records it on staged images
        (``worker_self_reference_url``) and forwards to it. With
        ``release_port`` it is closed, so connections are refused as by a
        dead host, and ``restart`` binds the same port again.
        """
        group = self.process.pid
        os.killpg(group, signal.SIGKILL)
        self.process.wait(30)
        self.process = None
        # The workers die with the master but are reaped by init: wait
        # until none is left to write a byte.
        deadline = time.monotonic() + 120
        while live_members(group):
            if time.monotonic() > deadline:
                raise GlanceError('glance-api workers outlived SIGKILL')
            time.sleep(0.05)
        if release_port:
            self.sock.close()
            self.sock = None

    def worker_pids(self):
        """The gunicorn workers' process ids (the master excluded)."""
        group = self.process.pid
        return sorted(pid for pid in live_members(group) if pid != group)

    def restart(self, timeout=300):
        """(Re)start on this configuration, database, staging and socket."""
        if self.sock is None:
            self.sock = _listening_socket(int(self.url.rsplit(':', 1)[1]))
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def logs(self):
        return 'glance-api.log:\n%s\ngunicorn:\n%s' % (
            _tail(self.log_file), _tail(self.gunicorn_log))

    # -- clients -------------------------------------------------------

    def _run(self, argv, timeout=300, check=True, **kwargs):
        result = subprocess.run(argv, env=self._env(), capture_output=True,
                                text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise CommandFailed(argv, result)
        return result

    def glance(self, *args, check=True, timeout=300):
        """Run the real ``glance`` CLI against this server.

        Its stdin is a pseudo-terminal: glanceclient treats any other open
        stdin as image data and then refuses ``--file``.
        """
        argv = [os.path.join(BIN_DIR, 'glance'),
                '--os-image-url', self.url, '--os-auth-token', TOKEN]
        argv += list(args)
        try:
            master, slave = os.openpty()
        except OSError:
            # No pseudo-terminals here: a closed stdin works as well.
            return self._run(argv, timeout=timeout, check=check,
                             preexec_fn=lambda: os.close(0))
        try:
            result = subprocess.run(argv, env=self._env(), stdin=slave,
                                    capture_output=True, text=True,
                                    timeout=timeout)
        finally:
            os.close(slave)
            os.close(master)
        if check and result.returncode != 0:
            raise CommandFailed(argv, result)
        return result

    def api(self, method, path, body=None, timeout=60):
        """Plain REST call; returns (status, headers, decoded JSON or raw)."""
        data = None
        headers = {'X-Auth-Token': TOKEN}
        if body is not None:
            data = json.dumps(body).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        req = urllib.request.Request(self.url + path, data=data,
                                     headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, hdrs, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, hdrs, raw = err.code, err.headers, err.read()
        if hdrs.get_content_type() == 'application/json' and raw:
            return status, hdrs, json.loads(raw)
        return status, hdrs, raw

    def image(self, image_id):
        status, _, doc = self.api('GET', '/v2/images/%s' % image_id)
        if status != 200:
            raise GlanceError('GET image %s: %s %r' % (image_id, status, doc))
        return doc

    def tasks(self, image_id):
        status, _, doc = self.api('GET', '/v2/images/%s/tasks' % image_id)
        if status != 200:
            raise GlanceError('GET tasks %s: %s %r' % (image_id, status, doc))
        return doc['tasks']

    def wait_for_import(self, image_id, timeout=900):
        """Wait until the import task ended; return (image, last task)."""
        deadline = time.monotonic() + timeout
        while True:
            image = self.image(image_id)
            tasks = self.tasks(image_id)
            done = [t for t in tasks if t['status'] in ('success', 'failure')]
            if (tasks and len(done) == len(tasks)
                    and 'os_glance_import_task' not in image
                    and image['status'] != 'importing'):
                latest = max(tasks, key=lambda t: t['created_at'])
                return image, latest
            if time.monotonic() > deadline:
                raise GlanceError('import of %s still running after %ds: '
                                  'image %r tasks %r\n%s' % (
                                      image_id, timeout, image, tasks,
                                      self.logs()))
            time.sleep(0.3)

    def staged_files(self, image_id):
        """Files the import of image_id left in the staging directory."""
        return sorted(name for name in os.listdir(self.staging_dir)
                      if name.split('.', 1)[0] == image_id)

    def remove(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
