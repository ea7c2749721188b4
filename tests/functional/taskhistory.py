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

"""Every message a task was saved with, as Glance's database saw it.

A task holds one message at a time, so a test that polls the API sees
only those that lasted longer than its poll interval: whether it sees two
depends on the machine's speed. Instead, an sqlite trigger (installed in
the test server's database before glance-api starts) copies each change
of ``task_info.message`` into a table of its own, with the task's
``updated_at`` of the same save. Glance's ``task_update`` writes
``tasks`` before ``task_info`` in one transaction, so the ``updated_at``
read there is that of the save itself. Nothing of the plugin is involved:
the record is what Glance stored.
"""

import sqlite3

TABLE = 'gxi_task_messages'
_SCHEMA = '''
CREATE TABLE IF NOT EXISTS %(table)s (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id VARCHAR(36) NOT NULL,
    message TEXT,
    updated_at DATETIME);
CREATE TRIGGER IF NOT EXISTS %(table)s_on_update
AFTER UPDATE OF message ON task_info
WHEN NEW.message IS NOT OLD.message
BEGIN
    INSERT INTO %(table)s (task_id, message, updated_at)
    VALUES (NEW.task_id, NEW.message,
            (SELECT updated_at FROM tasks WHERE id = NEW.task_id));
END;
''' % {'table': TABLE}
BUSY_TIMEOUT = 60


def install(database):
    """Add the table and trigger to the sqlite file ``database``."""
    with sqlite3.connect(database, timeout=BUSY_TIMEOUT) as db:
        db.executescript(_SCHEMA)
    db.close()


def messages(database, task_id):
    """[(message, updated_at)] of ``task_id``, in the order saved."""
    db = sqlite3.connect(database, timeout=BUSY_TIMEOUT)
    try:
        return db.execute(
            'SELECT message, updated_at FROM %s WHERE task_id = ? '
            'ORDER BY seq' % TABLE, (task_id,)).fetchall()
    finally:
        db.close()
