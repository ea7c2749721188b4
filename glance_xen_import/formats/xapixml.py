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

"""Parse the XML-RPC value xapi writes as an XVA's ``ova.xml``.

The file is one bare ``<value>``. xapi (ocaml-rpc) writes strings, enums,
references and ints as untagged ``<value>text</value>``, booleans as
``<boolean>0|1</boolean>``, floats as ``<double>``, dates as
``<dateTime.iso8601>``, and ``<struct>``/``<array><data>`` around them; an
empty value is ``<value></value>`` or ``<value/>``. The tagged forms other
writers use (``<string>``, ``<int>``, ``<i4>``, ``<i8>``, ``<nil/>``) are
read too.

The XML is parsed by defusedxml (no DTD, no entities, no external
references) into plain dicts, lists and scalars through a parser target,
so no element tree is held: memory follows the values, not the markup.
Size, element count and nesting are bounded.
"""

import xml.etree.ElementTree as ElementTree

import defusedxml
from defusedxml import ElementTree as safe_tree

from glance_xen_import import exception

# A vm-export ova.xml is tens of KiB; one with hundreds of objects a few
# MiB.
MAX_SIZE = 16 * 1024 * 1024
MAX_ELEMENTS = 1 << 20
# The deepest xapi nesting is value/struct/member/value/array/data/value/
# struct/member/value/struct/member/value/string: 14.
MAX_DEPTH = 64
# Text of an <int> or <double>: enough for any 64-bit value.
_MAX_NUMBER = 40

_SCALARS = ('string', 'int', 'i4', 'i8', 'boolean', 'double',
            'dateTime.iso8601', 'nil')
_CHILDREN = {
    None: ('value',),
    'value': _SCALARS + ('struct', 'array'),
    'struct': ('member',),
    'member': ('name', 'value'),
    'array': ('data',),
    'data': ('value',),
}


def _refuse(reason):
    return exception.InvalidPackage('ova.xml is not valid XML-RPC: %s'
                                    % reason)


class _Frame(object):
    __slots__ = ('tag', 'text', 'value', 'has_value', 'name', 'items')

    def __init__(self, tag):
        self.tag = tag
        self.text = []
        self.value = None
        self.has_value = False
        self.name = None
        self.items = {} if tag == 'struct' else []


def _number(text, kind, convert):
    text = text.strip()
    if not text or len(text) > _MAX_NUMBER:
        raise _refuse('<%s> holds %r, not a number' % (kind, text[:20]))
    try:
        return convert(text)
    except ValueError:
        raise _refuse('<%s> holds %r, not a number' % (kind, text[:20]))


def _boolean(text):
    value = {'0': False, '1': True, 'false': False, 'true': True}.get(
        text.strip().lower())
    if value is None:
        raise _refuse('<boolean> holds %r, not 0 or 1' % text[:20])
    return value


def _int(text):
    return _number(text, 'int', int)


def _double(text):
    return _number(text, 'double', float)


_CONVERT = {
    'string': str, 'dateTime.iso8601': str, 'int': _int, 'i4': _int,
    'i8': _int, 'double': _double, 'boolean': _boolean,
    'nil': lambda text: None,
}


class _Builder(object):
    """Parser target: turns start/data/end events into Python values."""

    def __init__(self):
        self._stack = []
        self._elements = 0
        self.result = None
        self.done = False

    def start(self, tag, attrib):
        parent = self._stack[-1].tag if self._stack else None
        if self.done:
            raise _refuse('more than one top-level value')
        if tag not in _CHILDREN.get(parent, ()):
            raise _refuse('<%s> cannot appear %s' % (
                tag[:40], 'inside <%s>' % parent if parent else
                'at the top, which must be <value>'))
        if parent == 'value' and self._stack[-1].has_value:
            raise _refuse('a <value> holds two values')
        self._elements += 1
        if self._elements > MAX_ELEMENTS:
            raise _refuse('more than %d elements' % MAX_ELEMENTS)
        if len(self._stack) >= MAX_DEPTH:
            raise _refuse('values nested deeper than %d' % MAX_DEPTH)
        self._stack.append(_Frame(tag))

    def data(self, text):
        if self._stack:
            self._stack[-1].text.append(text)
        elif text.strip():
            raise _refuse('text outside the top-level value')

    def end(self, tag):
        frame = self._stack.pop()
        value = self._finish(frame)
        if not self._stack:
            self.result = value
            self.done = True
            return
        parent = self._stack[-1]
        if parent.tag == 'struct':
            name, value = value
            if name in parent.items:
                raise _refuse('a struct has member %r twice' % name[:80])
            parent.items[name] = value
        elif parent.tag == 'data':
            parent.items.append(value)
        elif parent.tag == 'member' and frame.tag == 'name':
            if parent.name is not None:
                raise _refuse('a struct member has two names')
            parent.name = value
        else:
            if parent.has_value:
                raise _refuse('<%s> holds two values' % parent.tag)
            parent.value = value
            parent.has_value = True

    def _finish(self, frame):
        text = ''.join(frame.text)
        if frame.tag in _CONVERT:
            return _CONVERT[frame.tag](text)
        if frame.tag == 'name':
            return text
        if frame.tag == 'value' and not frame.has_value:
            return text        # xapi's untagged string (or int)
        if text.strip():
            raise _refuse('<%s> holds text %r' % (frame.tag, text[:20]))
        if frame.tag == 'member':
            if frame.name is None or not frame.has_value:
                raise _refuse('a struct member lacks its name or value')
            return frame.name, frame.value
        if frame.tag in ('struct', 'data'):
            return frame.items
        if frame.tag == 'array':
            return frame.value if frame.has_value else []
        return frame.value     # a <value> around a typed value

    def close(self):
        return self.result


_DEFUSED = {
    defusedxml.DTDForbidden: 'has a document type declaration',
    defusedxml.EntitiesForbidden: 'declares entities',
    defusedxml.ExternalReferenceForbidden: 'refers to an external resource',
}


def parse(data):
    """Return the Python value of the XML-RPC document ``data`` (bytes)."""
    if len(data) > MAX_SIZE:
        raise exception.InvalidPackage(
            'ova.xml is %d bytes, more than the %d accepted'
            % (len(data), MAX_SIZE))
    builder = _Builder()
    parser = safe_tree.DefusedXMLParser(
        target=builder, forbid_dtd=True, forbid_entities=True,
        forbid_external=True)
    try:
        parser.feed(data)
        parser.close()
    except defusedxml.DefusedXmlException as exc:
        raise exception.InvalidPackage(
            'ova.xml is refused: it %s, which XML-RPC never needs'
            % _DEFUSED.get(type(exc), 'uses an unsafe XML feature'))
    except ElementTree.ParseError as exc:
        raise _refuse('%s' % exc)
    if not builder.done:
        raise _refuse('it holds no value')
    return builder.result
