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


"""Names of files inside a package.

A tar member name and an OVF href must both be plain relative names: they
are only ever compared with each other, never used as paths.
"""

import posixpath


def member_name(raw):
    """Return ``raw`` normalised, or raise ValueError saying what it is."""
    if not raw or '\x00' in raw:
        raise ValueError('an empty name')
    if raw.startswith('/'):
        raise ValueError('an absolute path')
    if '\\' in raw:
        raise ValueError('a Windows path')
    parts = [p for p in raw.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise ValueError('a path into a parent directory')
    if not parts:
        raise ValueError('a directory')
    return posixpath.join(*parts)


def shown(name, limit=200):
    """``name`` as a refusal quotes it: as is when plain, else its repr.

    A member name may hold a newline or be 4 KiB long; a reason is one
    short line.
    """
    if name.isprintable() and len(name) <= limit:
        return name
    return repr(name[:limit])
