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

"""Check an edited hive against the original with an independent reader.

libregf (pyregf, a runtime dependency and no code of ours) walks both
hives side by side from the root key, the way Windows loads them: every
key and every value's data must read, both hives must hold the same keys
and the same values, and the only differences allowed are the edits the
editor says it made (regf.Hive.expected), each present as intended.
"""

import io

import pyregf

from glance_xen_import import exception

# libyal readers report damaged or unexpected structures as OSError.
_READ_ERRORS = (OSError, ValueError, UnicodeError, TypeError)


def _open(data):
    handle = pyregf.file()
    handle.open_file_object(io.BytesIO(bytes(data)))
    return handle


def _values(key, path):
    found = {}
    for index in range(key.get_number_of_values()):
        value = key.get_value(index)
        name = (value.get_name() or '').lower()
        if name in found:
            raise exception.GuestError(
                'registry key %s holds two values called %r'
                % ('\\'.join(path), name))
        found[name] = (value.get_type(), value.get_data() or b'')
    return found


def _subkeys(key, path):
    found = {}
    for index in range(key.get_number_of_sub_keys()):
        sub = key.get_sub_key(index)
        name = (sub.get_name() or '').lower()
        if name in found:
            raise exception.GuestError(
                'registry key %s holds two subkeys called %r'
                % ('\\'.join(path), name))
        found[name] = sub
    return found


def _compare_values(path, before, after, expected):
    for name in set(before) | set(after):
        wanted = expected.get((path, name), before.get(name))
        if (path, name) in expected and name not in before:
            raise exception.GuestError('edited value %s\\%s was not there'
                                       % ('\\'.join(path), name))
        if after.get(name) != wanted:
            raise exception.GuestError(
                'after the edit value %s\\%s does not read back as intended'
                % ('\\'.join(path), name))


def compare(original, edited, expected):
    """Raise GuestError unless ``edited`` is ``original`` plus ``expected``.

    :param expected: {(lower-cased key path tuple, lower-cased value
        name): (type, data) or None for a deleted value}.
    """
    handles = []
    try:
        handles = [_open(original), _open(edited)]
        pending = [((), handles[0].get_root_key(),
                    handles[1].get_root_key())]
        seen = set()
        while pending:
            path, before, after = pending.pop()
            seen.update(k for k in expected if k[0] == path)
            _compare_values(path, _values(before, path),
                            _values(after, path), expected)
            old, new = _subkeys(before, path), _subkeys(after, path)
            if set(old) != set(new):
                raise exception.GuestError(
                    'after the edit key %s has other subkeys'
                    % ('\\'.join(path) or 'the root'))
            for name in sorted(old):
                pending.append((path + (name,), old[name], new[name]))
    except _READ_ERRORS as exc:
        raise exception.GuestError(
            'libregf cannot walk the hive: %s' % str(exc).split('. ')[0])
    finally:
        for handle in handles:
            handle.close()
    if set(expected) - seen:
        raise exception.GuestError('an edited key is not reachable from '
                                   'the root key')
