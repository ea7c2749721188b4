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

"""Run one inspection step so that its failure is recorded, not raised.

A damaged guest must not fail the import, and must not pass for a guest
with nothing to fix either: the step that gave up is named in the facts'
``incomplete`` list, which policy turns into fixup_required=true.
"""

import logging

LOG = logging.getLogger(__name__)


def attempt(incomplete, notes, what, function, *args):
    """function(*args), or None with ``what`` recorded as unreadable."""
    try:
        return function(*args)
    except Exception as exc:
        # One line for the operator; the traceback only at debug level.
        LOG.warning('guest inspection: %s could not be read: %s', what, exc)
        LOG.debug('guest inspection: %s failed', what, exc_info=True)
        notes.append('%s could not be read: %s' % (what, exc))
        incomplete.append('%s unreadable' % what)
        return None
