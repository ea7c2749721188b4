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

"""Make text taken from an OVA safe to show: one helper for every output.

Names, hrefs, descriptions and guest strings come from the package and
reach stderr, reports, logs and Glance properties. There a newline forges
a line, U+202E reverses what follows on a terminal, and a 200k-character
name floods a log. :func:`text` escapes every character that is not
plainly printable and caps the length; :func:`list_item` also
percent-encodes the separators of the comma-and-colon lists we write into
properties.
"""

import unicodedata

# Long enough for any real href, name or reason; short enough for one line.
MAX_TEXT = 200
MAX_LINE = 1000
# Glance keeps property values in a 255-character column.
MAX_PROPERTY = 255
_ELLIPSIS = '...'

# Unicode general categories that are never shown as themselves: controls
# (C0, C1, DEL), format characters (bidi overrides and isolates, zero-width
# joiners), line and paragraph separators, surrogates and unassigned.
_HIDDEN_CATEGORIES = ('Cc', 'Cf', 'Cs', 'Co', 'Cn', 'Zl', 'Zp')


def _escape_char(char):
    code = ord(char)
    if code < 0x100:
        return '\\x%02x' % code
    if code < 0x10000:
        return '\\u%04x' % code
    return '\\U%08x' % code


def _is_hidden(char):
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def _render(value, limit, encode):
    """Join ``encode(char)`` for each char, cut at a whole piece.

    A cut text ends in ``...`` and is at most ``limit`` characters long;
    no escape sequence is ever cut in half. Escaping can make a character
    ten times longer, so no more input is looked at than can survive.
    """
    value = value if isinstance(value, str) else str(value)
    pieces = [encode(char) for char in value[:limit + 1]]
    if sum(map(len, pieces)) <= limit and len(value) <= limit:
        return ''.join(pieces)
    out = []
    room = limit - len(_ELLIPSIS)
    for piece in pieces:
        if len(piece) > room:
            break
        out.append(piece)
        room -= len(piece)
    return ''.join(out) + _ELLIPSIS


def _escape(char):
    if char == '\\':
        return '\\\\'
    return _escape_char(char) if _is_hidden(char) else char


def text(value, limit=MAX_TEXT):
    """``value`` with hidden characters and backslashes escaped, capped."""
    return _render(value, limit, _escape)


def line(value):
    """A whole message (an error reason) on one line of at most 1000."""
    return text(value, MAX_LINE)


# Characters percent-encoded inside list items: the separators we use, the
# escape characters (ours and text's) and whitespace.
_LIST_SPECIAL = frozenset(',:%;=\\')


def _percent(char):
    if char in _LIST_SPECIAL or char.isspace() or _is_hidden(char):
        return ''.join('%%%02X' % b
                       for b in char.encode('utf-8', 'surrogatepass'))
    return char


def list_item(value, limit=MAX_TEXT):
    """Percent-encode ``value`` (RFC 3986 style, UTF-8) for a property list.

    ``,`` ``:`` ``;`` ``=`` ``%`` ``\\``, whitespace and hidden characters
    become ``%XX``; everything else is kept, so ordinary names stay
    readable and ``urllib.parse.unquote`` gives the original back.
    """
    return _render(value, limit, _percent)


def joined(items, limit=MAX_PROPERTY, separator=','):
    """Join already-encoded items, dropping whole items past ``limit``.

    When items are dropped the list ends in a ``...`` item, which no
    encoded item can be mistaken for only if items carry a separator of
    their own (``href:capacity`` does).
    """
    out = []
    length = 0
    for item in items:
        extra = len(item) + (len(separator) if out else 0)
        if length + extra > limit - len(separator + _ELLIPSIS):
            return separator.join(out + [_ELLIPSIS])
        out.append(item)
        length += extra
    return separator.join(out)


# A string of a JSON report: JSON escapes every hidden character itself.
MAX_JSON_TEXT = 4096


def structure(value, limit=MAX_JSON_TEXT):
    """Strings in nested dicts and lists cut to ``limit`` characters."""
    if isinstance(value, str):
        return value if len(value) <= limit else (
            value[:limit - len(_ELLIPSIS)] + _ELLIPSIS)
    if isinstance(value, dict):
        return {structure(k, limit): structure(v, limit)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [structure(v, limit) for v in value]
    return value


def property_value(value):
    """A Glance property value: escaped and capped at 255 characters."""
    return text(value, MAX_PROPERTY)


def properties(values):
    """Every value of a property dict made safe with property_value."""
    return {key: property_value(value) for key, value in values.items()}
