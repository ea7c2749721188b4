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

"""TEST ONLY gunicorn settings for the local glance-api.

The test server keeps Glance's database in sqlite. oslo.db starts every
sqlite transaction with a deferred ``BEGIN``, so two transactions that
read and then write at the same time deadlock and one fails at once with
"database is locked" (Glance retries some of its writes, not all). A
database server would let both proceed. Starting every transaction with
``BEGIN IMMEDIATE`` and waiting up to a minute for the lock serialises
them instead, so concurrent imports behave as they would on MySQL.
Loaded with ``gunicorn -c python:tests.functional.gunicorn_conf`` before
the worker imports Glance; nothing here touches the code under test,
except that a worker started with ``GXI_TEST_GATE_DIR`` lets a test hold
an import at a known point (tests/functional/gate.py).
"""

import os

from sqlalchemy import engine
from sqlalchemy import event

BUSY_TIMEOUT_MS = 60000

# gunicorn >= 25 opens a control socket under ~/.gunicorn by default; the
# test servers need none, and several run at once (older gunicorn ignores
# the unknown setting).
control_socket_disable = True


@event.listens_for(engine.Engine, 'connect')
def _wait_for_locks(dbapi_connection, connection_record):
    if type(dbapi_connection).__module__.startswith('sqlite3'):
        dbapi_connection.execute('PRAGMA busy_timeout = %d'
                                 % BUSY_TIMEOUT_MS)


@event.listens_for(engine.Engine, 'begin')
def _begin_immediate(connection):
    # Runs before oslo.db's own listener, which then sees the transaction
    # open (the same marker it sets) and emits no BEGIN of its own.
    if (connection.dialect.name == 'sqlite'
            and 'in_transaction' not in connection.info):
        connection.exec_driver_sql('BEGIN IMMEDIATE')
        connection.info['in_transaction'] = True


def post_worker_init(worker):
    gate_dir = os.environ.get('GXI_TEST_GATE_DIR')
    if gate_dir:
        from tests.functional import gate
        gate.install(gate_dir)
