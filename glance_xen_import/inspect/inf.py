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

"""Just enough of the Windows INF format to name a driver package.

Only [Version] (Provider, Class, CatalogFile, DriverVer) and [Strings]
(to resolve %tokens%) are read. INF files are UTF-16 with a BOM, UTF-8, or
an ANSI code page; section and key names are case-insensitive.
"""

import codecs
import re

_TOKEN = re.compile(r'^%([^%]+)%$')


def decode(data):
    if data.startswith(codecs.BOM_UTF16_LE):
        return data[2:].decode('utf-16-le', errors='replace')
    if data.startswith(codecs.BOM_UTF16_BE):
        return data[2:].decode('utf-16-be', errors='replace')
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode('utf-8', errors='replace')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return data.decode('cp1252', errors='replace')


def _strip_comment(line):
    # ';' starts a comment unless it is inside double quotes.
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ';' and not quoted:
            return line[:index]
    return line


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def sections(text, wanted):
    """{section: {key: value}} for the wanted lowercase section names."""
    found = {}
    current = None
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith('[') and ']' in line:
            name = line[1:line.index(']')].strip().lower()
            current = found.setdefault(name, {}) if name in wanted else None
            continue
        if current is None or '=' not in line:
            continue
        key, value = line.split('=', 1)
        current.setdefault(key.strip().lower(), _unquote(value))
    return found


def version_info(data):
    """(provider, class, catalog) from an INF's bytes; None if absent."""
    return version_details(data)[:3]


def version_details(data):
    """(provider, class, catalog, DriverVer) from an INF's bytes."""
    text = decode(data)
    found = sections(text, ('version', 'strings'))
    version = found.get('version', {})
    strings = found.get('strings', {})

    def resolve(value):
        if value is None:
            return None
        match = _TOKEN.match(value.strip())
        if match:
            return strings.get(match.group(1).lower(), value)
        return value

    catalog = version.get('catalogfile')
    if catalog is None:
        # CatalogFile.NTamd64 and friends, when no plain one is given.
        for key in sorted(version):
            if key.startswith('catalogfile.'):
                catalog = version[key]
                break
    return (resolve(version.get('provider')), resolve(version.get('class')),
            resolve(catalog), resolve(version.get('driverver')))
