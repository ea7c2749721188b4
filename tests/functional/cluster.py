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

"""The production shape: PostgreSQL and two glance-api nodes.

* ``PostgresServer``: Debian's PostgreSQL 15 binaries (``initdb``,
  ``postgres``) on 127.0.0.1, a free port and a throw-away data directory.
  PostgreSQL refuses to run as root, so under root it runs as the
  ``postgres`` user the Debian package creates.
* ``Cluster``: two ``glance_server.GlanceServer`` nodes sharing that
  database and one file store directory, each with its own staging
  directory and its own URL as ``worker_self_reference_url``, as Glance's
  distributed import expects.

Glance proxies an import (and a delete) to the node that staged the image
with the caller's token through keystoneauth, which needs an identity
endpoint in ``[keystone_authtoken]`` even though a token-only request
never calls it; the test-only trusted-token filter stands in for
keystonemiddleware on both nodes.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from tests.functional import glance_server

PG_BIN = '/usr/lib/postgresql/15/bin'
PG_USER = 'postgres'
DB_NAME = 'glance'
DB_ROLE = 'glance'
# Never contacted (the proxy only sends the caller's token to the other
# node), but Glance refuses to proxy without one.
IDENTITY_URL = 'http://127.0.0.1:5000/v3'


def postgres_missing():
    """Why PostgreSQL cannot run here, or None."""
    for tool in ('initdb', 'postgres', 'pg_isready'):
        if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
            return 'no %s in %s (Debian package postgresql-15)' % (
                tool, PG_BIN)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return 'running as root and there is no %s user' % PG_USER
    return None


def _free_port():
    # Below the ephemeral range, where no client connection takes it.
    with glance_server._listening_socket() as sock:
        return sock.getsockname()[1]


class PostgresServer(object):
    """A private PostgreSQL server; ``url`` is its SQLAlchemy URL."""

    def __init__(self):
        self.datadir = None
        self.process = None
        self.port = None
        self.log_file = None
        self._account = None

    @property
    def url(self):
        return 'postgresql+psycopg2://%s@127.0.0.1:%d/%s' % (
            DB_ROLE, self.port, DB_NAME)

    def _as_account(self):
        """preexec_fn: drop root for PostgreSQL, then die with the test."""
        if self._account is not None:
            os.setgroups([])
            os.setgid(self._account.pw_gid)
            os.setuid(self._account.pw_uid)
        # After setuid: a credential change clears the death signal.
        glance_server.die_with_parent()

    def _run(self, *argv):
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, preexec_fn=self._as_account)
        if result.returncode != 0:
            raise glance_server.CommandFailed(argv, result)
        return result

    def start(self, timeout=180):
        if os.geteuid() == 0:
            self._account = pwd.getpwnam(PG_USER)
        # Not under pytest's tmp_path: it is private to root.
        top = tempfile.mkdtemp(prefix='xenova-pg-')
        self.datadir = os.path.join(top, 'data')
        self.log_file = os.path.join(top, 'postgres.log')
        if self._account is not None:
            os.chown(top, self._account.pw_uid, self._account.pw_gid)
        try:
            self._run(os.path.join(PG_BIN, 'initdb'), '-D', self.datadir,
                      '-U', DB_ROLE, '--auth=trust', '--encoding=UTF8',
                      '--no-locale', '--no-sync')
            self._start(timeout)
            self._run(os.path.join(PG_BIN, 'createdb'), '-h', '127.0.0.1',
                      '-p', str(self.port), '-U', DB_ROLE, DB_NAME)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout):
        # The port is free when chosen; another process could take it
        # before PostgreSQL binds, so a failed start is tried again.
        for attempt in range(3):
            self.port = _free_port()
            log = open(self.log_file, 'ab')
            try:
                self.process = subprocess.Popen(
                    [os.path.join(PG_BIN, 'postgres'), '-D', self.datadir,
                     '-p', str(self.port), '-h', '127.0.0.1',
                     '-k', self.datadir,
                     # A test database: durability is not under test.
                     '-c', 'fsync=off', '-c', 'synchronous_commit=off',
                     '-c', 'full_page_writes=off',
                     # Four gunicorn workers with oslo.db pools.
                     '-c', 'max_connections=300',
                     '-c', 'shared_buffers=32MB'],
                    stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=self._as_account)
            finally:
                log.close()
            if self._wait_ready(timeout):
                return
        raise glance_server.GlanceError(
            'PostgreSQL did not start:\n%s' % glance_server._tail(
                self.log_file))

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            ready = subprocess.run(
                [os.path.join(PG_BIN, 'pg_isready'), '-q', '-h',
                 '127.0.0.1', '-p', str(self.port)],
                stdin=subprocess.DEVNULL, capture_output=True)
            if ready.returncode == 0:
                return True
            time.sleep(0.2)
        raise glance_server.GlanceError(
            'PostgreSQL did not answer in %ds:\n%s' % (
                timeout, glance_server._tail(self.log_file)))

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            # SIGINT: PostgreSQL's fast shutdown, which ends sessions.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if self.datadir:
            shutil.rmtree(os.path.dirname(self.datadir), ignore_errors=True)
            self.datadir = None


class Cluster(object):
    """PostgreSQL and glance-api nodes ``a`` and ``b``, two workers each.

    :param workdir: an empty directory owned by the caller
    :param options: more ``glance_server.GlanceServer`` keyword arguments
        for both nodes
    """

    NODES = ('a', 'b')

    def __init__(self, workdir, workers=2, **options):
        self.workdir = os.path.abspath(workdir)
        self.store_dir = os.path.join(self.workdir, 'images')
        self.database = PostgresServer()
        self.workers = workers
        self.options = options
        self.nodes = {}

    def start(self):
        try:
            self.database.start()
            for name in self.NODES:
                node = glance_server.GlanceServer(
                    os.path.join(self.workdir, 'node-' + name),
                    workers=self.workers,
                    db_connection=self.database.url,
                    store_dir=self.store_dir,
                    sections={'keystone_authtoken': {
                        'auth_type': 'password',
                        'auth_url': IDENTITY_URL,
                        'www_authenticate_uri': IDENTITY_URL}},
                    **self.options)
                self.nodes[name] = node
                # One at a time: each start migrates the shared database
                # (the second finds nothing to do).
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def a(self):
        return self.nodes['a']

    @property
    def b(self):
        return self.nodes['b']

    def stop(self):
        for node in self.nodes.values():
            node.stop()
        self.database.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
