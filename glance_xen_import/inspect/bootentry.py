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

"""The guest's default boot entry: kernel, initrd and command line.

Read in the order GRUB (or pygrub, on Xen) would: GRUB 2's grub.cfg
(with the BLS entries its blscfg command adds, RHEL 8 and later), a
legacy GRUB menu.lst/grub.conf, BLS entries alone, and last the
/vmlinuz and /initrd.img links Debian keeps. A boot directory is a
(filesystem, prefix) pair: ('', a separate /boot) or ('/boot', the
root's).
"""

import functools
import re
import shlex

from glance_xen_import.inspect import facts
from glance_xen_import.inspect import filesystem

MAX_CONFIG_BYTES = 1024 * 1024
MAX_GRUBENV_BYTES = 64 * 1024
MAX_ENTRIES = 256
MAX_DEPTH = 8

GRUB2_CONFIGS = ('/grub2/grub.cfg', '/grub/grub.cfg')
LEGACY_CONFIGS = ('/grub/menu.lst', '/grub/grub.conf')
BLS_DIR = '/loader/entries'
LINKS = (('/vmlinuz', '/initrd.img'), ('/boot/vmlinuz', '/boot/initrd.img'))

_KERNEL_VERSION = re.compile(r'(?:vmlinuz|vmlinux|kernel|image)-(.+)$')
_VARIABLE = re.compile(r'\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))')
_DEVICE = re.compile(r'^\([^)]*\)')


def kernel_version(path):
    """The version in a kernel file name (vmlinuz-6.1.0-13-amd64)."""
    match = _KERNEL_VERSION.search(path.rsplit('/', 1)[-1]) if path else None
    return match.group(1) if match else None


def _read(fs, path, limit=MAX_CONFIG_BYTES):
    try:
        data = fs.read(path, limit)
    except filesystem.FileTooLarge:
        return None
    return None if data is None else data.decode('utf-8', 'replace')


def _strip_device(path):
    # GRUB paths may name a device: (hd0,msdos1)/vmlinuz, ($root)/...
    return _DEVICE.sub('', path) if path else path


def read_grubenv(text):
    """Variables of a GRUB environment block (name=value lines)."""
    env = {}
    for line in (text or '').splitlines():
        if line.startswith('#') or '=' not in line:
            continue
        key, value = line.split('=', 1)
        env[key.strip()] = value
    return env


def _expand(text, env):
    return _VARIABLE.sub(
        lambda m: env.get(m.group(1) or m.group(2), ''), text).strip()


def _words(line):
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def _entry(title, ident=None):
    return {'title': title, 'id': ident, 'kernel': None, 'initrds': [],
            'cmdline': None, 'children': None}


# -- version order (rpm's vercmp, which GRUB's blscfg uses) -------------------

def _segments(version):
    return re.findall(r'\d+|[A-Za-z]+', version or '')


def vercmp(a, b):
    """-1, 0 or 1 as rpm compares versions a and b."""
    for x, y in zip(_segments(a), _segments(b)):
        if x.isdigit() != y.isdigit():
            return 1 if x.isdigit() else -1
        if x.isdigit():
            x, y = int(x), int(y)
        if x != y:
            return 1 if x > y else -1
    return (len(_segments(a)) > len(_segments(b))) - (
        len(_segments(a)) < len(_segments(b)))


# -- BLS ----------------------------------------------------------------------

def parse_bls(text, ident, env):
    entry = _entry(None, ident)
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        key, _, value = line.partition(' ')
        value = value.strip()
        if key == 'initrd':
            # GRUB's blscfg expands variables here: RHEL 8/9 entries end
            # in $tuned_initrd, empty unless tuned set it in grubenv.
            entry['initrds'].extend(_expand(value, env).split())
        else:
            values.setdefault(key, value)
    entry['title'] = values.get('title') or ident
    entry['kernel'] = values.get('linux')
    if 'options' in values:
        entry['cmdline'] = _expand(values['options'], env)
    entry['version'] = values.get('version')
    return entry


def bls_entries(fs, prefix, env):
    """BLS entries under prefix, in blscfg's order (newest first)."""
    directory = prefix + BLS_DIR
    names = sorted(n for n in fs.listdir(directory) if n.endswith('.conf'))
    entries = []
    for name in names[:MAX_ENTRIES]:
        text = _read(fs, directory + '/' + name)
        if text is not None:
            entries.append(parse_bls(text, name[:-len('.conf')], env))

    def key(entry):
        return entry.get('version') or kernel_version(entry['kernel']) or ''
    # Newest version first; for equal versions, the larger id first.
    entries.sort(key=functools.cmp_to_key(
        lambda a, b: -vercmp(key(a), key(b)) or
        -((a['id'] > b['id']) - (a['id'] < b['id']))))
    return entries


# -- GRUB 2 -------------------------------------------------------------------

def _option(words, flag):
    for index, word in enumerate(words[:-1]):
        if word == flag or word.startswith('$menuentry_id_option'):
            return words[index + 1]
    for word in words:
        if word.startswith(flag + '='):
            return word.split('=', 1)[1]
    return None


def parse_grub2(text, env, bls):
    """(menu items, default specs) of a grub.cfg; bls() lists BLS ones."""
    top = []
    stack = [top]
    current = None
    defaults = []
    count = 0
    for line in text.splitlines():
        words = _words(line)
        if not words:
            continue
        command = words[0]
        if command in ('menuentry', 'submenu') and len(words) > 1:
            count += 1
            if count > MAX_ENTRIES or len(stack) > MAX_DEPTH:
                break
            item = _entry(words[1], _option(words[2:], '--id'))
            stack[-1].append(item)
            if command == 'submenu':
                item['children'] = []
                stack.append(item['children'])
                current = None
            else:
                current = item
            continue
        if command == '}':
            if current is not None:
                current = None
            elif len(stack) > 1:
                stack.pop()
            continue
        if current is not None:
            if command in ('linux', 'linux16', 'linuxefi') and len(words) > 1:
                current['kernel'] = _strip_device(words[1])
                current['cmdline'] = _expand(' '.join(words[2:]), env)
            elif command in ('initrd', 'initrd16', 'initrdefi'):
                current['initrds'] = [_strip_device(w) for w in words[1:]]
            continue
        if command == 'set' and len(words) > 1 and len(stack) == 1:
            name, _, value = words[1].partition('=')
            if name == 'default' and 'next_entry' not in value:
                defaults.append(_expand(value, env))
            elif name and name not in env:
                env[name] = _expand(value, env)
        elif command == 'blscfg' and len(stack) == 1:
            top.extend(bls(env)[:MAX_ENTRIES])
    return top, defaults


def choose(items, spec):
    """The entry spec names (index, title or id; '>' for submenus)."""
    parts = spec.split('>') if spec else ['0']
    level = items
    chosen = None
    for part in parts[:MAX_DEPTH]:
        chosen = None
        if part.strip().isdigit() and int(part) < len(level):
            chosen = level[int(part)]
        else:
            for item in level:
                if part in (item['title'], item['id']):
                    chosen = item
                    break
        if chosen is None:
            break
        level = chosen['children'] or []
    if chosen is None:
        chosen = items[0] if items else None
    while chosen is not None and chosen['children'] is not None:
        chosen = chosen['children'][0] if chosen['children'] else None
    return chosen


# -- legacy GRUB --------------------------------------------------------------

def parse_legacy(text):
    """(entries, default index) of a menu.lst / grub.conf."""
    entries = []
    default = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = re.split(r'[\s=]+', line, 1)
        command, rest = parts[0], parts[1].strip() if len(parts) > 1 else ''
        if command == 'default' and not entries:
            default = int(rest) if rest.isdigit() else 0
        elif command == 'title':
            if len(entries) >= MAX_ENTRIES:
                break
            entries.append(_entry(rest))
        elif entries and command == 'kernel':
            words = rest.split(None, 1)
            if words:
                entries[-1]['kernel'] = _strip_device(words[0])
                entries[-1]['cmdline'] = words[1] if len(words) > 1 else ''
        elif entries and command == 'initrd':
            entries[-1]['initrds'] = [_strip_device(w) for w in rest.split()]
    return entries, default


# -- putting it together ------------------------------------------------------

def _make(fs, path, kind, entry):
    if entry is None:
        return None
    version = entry.get('version') or kernel_version(entry['kernel'])
    return facts.BootEntry(
        source='%s:%s' % (fs.location, path), kind=kind,
        title=entry['title'], kernel=entry['kernel'],
        initrds=list(entry['initrds']), cmdline=entry['cmdline'],
        version=version)


def _grubenv(fs, config_dir):
    return read_grubenv(_read(fs, config_dir + '/grubenv',
                              MAX_GRUBENV_BYTES))


def _from_grub2(fs, prefix):
    for name in GRUB2_CONFIGS:
        path = prefix + name
        text = _read(fs, path)
        if text is None or not re.search(r'^\s*(menuentry|blscfg)\b', text,
                                         re.MULTILINE):
            continue
        env = _grubenv(fs, path.rsplit('/', 1)[0])
        items, defaults = parse_grub2(
            text, dict(env), lambda env: bls_entries(fs, prefix, env))
        spec = defaults[-1] if defaults else '0'
        return _make(fs, path, 'grub2', choose(items, spec))
    return None


def _from_legacy(fs, prefix):
    for name in LEGACY_CONFIGS:
        path = prefix + name
        text = _read(fs, path)
        if text is None:
            continue
        entries, default = parse_legacy(text)
        if entries:
            entry = entries[default] if default < len(entries) else (
                entries[0])
            return _make(fs, path, 'grub-legacy', entry)
    return None


def _from_bls(fs, prefix):
    env = {}
    for name in GRUB2_CONFIGS:
        env = _grubenv(fs, prefix + name.rsplit('/', 1)[0])
        if env:
            break
    entries = bls_entries(fs, prefix, env)
    if not entries:
        return None
    chosen = choose(entries, env.get('saved_entry', '0'))
    return _make(fs, prefix + BLS_DIR + '/%s.conf' % chosen['id'], 'bls',
                 chosen)


def _from_links(fs, prefix):
    for kernel, initrd in LINKS:
        real = fs.realpath(kernel)
        if real is None or not fs.is_file(real):
            continue
        entry = _entry(None)
        entry['kernel'] = real
        initrd_real = fs.realpath(initrd)
        if initrd_real is not None:
            entry['initrds'] = [initrd_real]
        return _make(fs, kernel, 'symlink', entry)
    return None


def find(boot_dirs):
    """facts.BootEntry of the default entry, or None.

    boot_dirs: (filesystem, prefix) pairs, a separate /boot first.
    """
    for reader in (_from_grub2, _from_legacy, _from_bls, _from_links):
        for fs, prefix in boot_dirs:
            entry = reader(fs, prefix)
            if entry is not None:
                return entry
    return None


def locate(boot_dirs, path):
    """(filesystem, path) where a path from a boot entry lives, or None.

    A config on a separate /boot names /vmlinuz-*; on the root, it
    names /boot/vmlinuz-*; BLS entries may use either.
    """
    if not path:
        return None
    path = '/' + path.lstrip('/')
    for fs, prefix in boot_dirs:
        candidates = [path]
        if prefix and not path.startswith(prefix + '/'):
            candidates.insert(0, prefix + path)
        if not prefix and path.startswith('/boot/'):
            candidates.append(path[len('/boot'):])
        for candidate in candidates:
            if fs.is_file(candidate):
                return fs, candidate
    return None
