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

"""Neutralise Xen PV drivers of every family in an offline SYSTEM hive.

The registry changes of XCP-ng's XenBootFix and XenServer's
PVDriversRemoval, for every driver family and generation in
inspect/xentools.py, applied to every control set Select points to:

- Start=4 (disabled) for every Xen PV service, boot-start ones included
  (the removal tools use 3, as they run on Xen and uninstall next);
- every Xen driver (XENFILT, SCSIFILT, GPLPV's XenPci and XenHide, Red
  Hat's rhelfltr...) taken out of every device class's Upper/LowerFilters
  (a filter whose service is disabled stops the boot: 0x7B);
- the unplug requests (Services\\XEN\\ForceUnplug and XEN\\Unplug, the
  legacy xenfilt\\Unplug DISKS/NICS) made to ask for nothing, so the
  emulated disks and NICs are not unplugged;
- on NT 6.2 and later, StartOverride cleared for the storage drivers, so
  the drivers KVM's disks need are not demoted (also done for a guest
  with no Xen drivers left, when a storage driver is demoted).

The legacy event channel driver (xenevtchn) goes PV whenever it loads
unless its key holds NOPVBoot; PVDriversRemoval adds that value because it
leaves the driver demand-start. Here the driver is disabled, so it never
loads and NOPVBoot is not needed (adding a value would grow the hive).

Every edit keeps the hive's size (see regf.py).
"""

import io
import struct

import pyregf

from glance_xen_import import exception
from glance_xen_import.fixup import hivecheck
from glance_xen_import.fixup import regf
from glance_xen_import.inspect import drivers
from glance_xen_import.inspect import xentools

# Any Xen service named as a class filter goes: it is disabled below.
FILTERS = xentools.ALL_SERVICES
FILTER_VALUES = ('UpperFilters', 'LowerFilters')
SELECT_VALUES = ('Current', 'Default', 'LastKnownGood')
STORAGE_SERVICES = drivers.STORAGE_SERVICES


def control_sets(hive):
    """Names of the control sets Select points to, e.g. ControlSet001."""
    select = hive.path('Select')
    if select is None:
        raise exception.GuestError('SYSTEM hive has no Select key')
    names = []
    for value_name in SELECT_VALUES:
        value = hive.value(select, value_name)
        if value is None or value.type != regf.REG_DWORD or value.size != 4:
            continue
        number = struct.unpack('<I', hive.value_data(value))[0]
        name = 'ControlSet%03d' % number
        if number and name not in names and hive.path(name) is not None:
            names.append(name)
    if not names:
        raise exception.GuestError('SYSTEM hive Select names no control set')
    return names


def _disable_services(hive, control_set, actions):
    services = hive.path(control_set, 'Services')
    if services is None:
        return
    for key in hive.subkeys(services):
        name = hive.key_name(key)
        if name.lower() not in drivers.ALL_XEN_SERVICES:
            continue
        start = hive.value(key, 'Start')
        if (start is None or start.size != 4
                or start.type not in (regf.REG_DWORD, regf.REG_BINARY)):
            continue
        if struct.unpack('<I', hive.value_data(start))[0] != 4:
            hive.set_dword(start, 4, (control_set, 'Services', name))
            actions.add('disabled:%s' % name.lower())


def _remove_filters(hive, control_set, actions):
    classes = hive.path(control_set, 'Control', 'Class')
    if classes is None:
        return
    for key in hive.subkeys(classes):
        path = (control_set, 'Control', 'Class', hive.key_name(key))
        for value_name in FILTER_VALUES:
            value = hive.value(key, value_name)
            # Filter lists are REG_MULTI_SZ; a hand-made REG_SZ list of
            # one name works for Windows too.
            if value is None or value.type not in (regf.REG_MULTI_SZ,
                                                   regf.REG_SZ):
                continue
            entries = regf.multi_sz(hive.value_data(value))
            if value.type == regf.REG_SZ:
                # Windows reads a REG_SZ as its first string only.
                entries = entries[:1]
            kept = [e for e in entries if e.lower() not in FILTERS]
            if kept == entries:
                continue
            if kept:
                hive.shrink_data(value, regf.encode_multi_sz(kept), path)
            else:
                hive.delete_value(key, value, path)
            for entry in entries:
                if entry.lower() in FILTERS:
                    actions.add('filter-removed:%s' % entry.lower())


def _unplug_action(service, subkey):
    if subkey.lower() == 'forceunplug':
        return 'forceunplug-cleared'
    return 'unplug-cleared:%s' % service.lower()


def _clear_unplug(hive, control_set, actions):
    for service, subkey in xentools.UNPLUG_KEYS:
        path = (control_set, 'Services', service, subkey)
        key = hive.path(*path)
        if key is None:
            continue
        action = _unplug_action(service, subkey)
        for value in hive.values(key):
            if value.type == regf.REG_DWORD and value.size == 4:
                if hive.value_data(value) != bytes(4):
                    hive.set_dword(value, 0, path)
                    actions.add(action)
            elif value.type in (regf.REG_MULTI_SZ, regf.REG_SZ,
                                regf.REG_EXPAND_SZ, regf.REG_BINARY):
                if regf.multi_sz(hive.value_data(value)):
                    empty = (b'' if value.type == regf.REG_BINARY
                             else regf.encode_multi_sz([]))
                    hive.shrink_data(value, empty, path)
                    actions.add(action)


def _clear_start_overrides(hive, control_set, actions):
    services = hive.path(control_set, 'Services')
    if services is None:
        return
    for name in STORAGE_SERVICES:
        key = hive.path(name, 'StartOverride', base=services)
        if key is None:
            continue
        path = (control_set, 'Services', name, 'StartOverride')
        for value in hive.values(key):
            hive.delete_value(key, value, path)
            actions.add('startoverride-cleared:%s' % name)


def neutralise(hive, nt_version=None):
    """Apply the edits to ``hive`` (a regf.Hive); return what was done.

    :param nt_version: (major, minor) of Windows, or None when unknown; the
        StartOverride step is for NT 6.2 and later only.
    """
    actions = set()
    for control_set in control_sets(hive):
        _disable_services(hive, control_set, actions)
        _remove_filters(hive, control_set, actions)
        _clear_unplug(hive, control_set, actions)
        if _clears_overrides(nt_version):
            _clear_start_overrides(hive, control_set, actions)
    return sorted(actions)


def fix_hive(data, nt_version=None):
    """Neutralise the SYSTEM hive in ``data``; return (regf.Hive, actions).

    The edited bytes are in the returned hive's ``data``. Raises
    GuestError, with nothing to write, unless the edited hive passes the
    checks of :func:`check`.
    """
    hive = regf.Hive(data)
    actions = neutralise(hive, nt_version)
    if actions:
        check(data, hive, _clears_overrides(nt_version))
    return hive, actions


def _clears_overrides(nt_version):
    return nt_version is not None and tuple(nt_version) >= (6, 2)


def check(original, hive, overrides_cleared=False):
    """Re-read an edited hive from its bytes alone before it is written.

    Our own structure walk again from scratch (bins, cell chains, every
    reference landing on a live cell), then libregf's walk compared with
    the original (nothing but the intended edits differ), then the Xen
    drivers and filters as libregf reads them.
    """
    edited = bytes(hive.data)
    regf.Hive(edited)
    hivecheck.compare(original, edited, hive.expected)
    verify(edited, control_sets(hive), overrides_cleared)


def verify(data, sets, overrides_cleared=False):
    """Re-read the edited hive with libregf and check every edit held."""
    hive_file = pyregf.file()
    try:
        hive_file.open_file_object(io.BytesIO(bytes(data)))
        root = hive_file.get_root_key()
        for control_set in sets:
            base = root.get_sub_key_by_path(control_set)
            services = base.get_sub_key_by_name('Services')
            for key in (services.sub_keys if services is not None else []):
                if key.name.lower() in drivers.ALL_XEN_SERVICES:
                    start = key.get_value_by_name('Start')
                    data = start.get_data() if start is not None else None
                    if data and len(data) == 4 and struct.unpack(
                            '<I', data)[0] != 4:
                        raise exception.GuestError(
                            'after the fixup %s\\%s is still enabled'
                            % (control_set, key.name))
            if overrides_cleared:
                _verify_no_overrides(services, control_set)
            classes = base.get_sub_key_by_path('Control\\Class')
            for key in (classes.sub_keys if classes is not None else []):
                for value_name in FILTER_VALUES:
                    value = key.get_value_by_name(value_name)
                    if value is None or value.type not in (
                            regf.REG_MULTI_SZ, regf.REG_SZ):
                        continue
                    left = [s for s in regf.multi_sz(value.get_data() or b'')
                            if s.lower() in FILTERS]
                    if left:
                        raise exception.GuestError(
                            'after the fixup class %s still lists %s'
                            % (key.name, left[0]))
    except OSError as exc:
        raise exception.GuestError(
            'the edited SYSTEM hive does not read back: %s' % exc)
    finally:
        hive_file.close()


def _verify_no_overrides(services, control_set):
    for key in (services.sub_keys if services is not None else []):
        if key.name.lower() not in STORAGE_SERVICES:
            continue
        override = key.get_sub_key_by_name('StartOverride')
        if override is not None and override.number_of_values:
            raise exception.GuestError(
                'after the fixup %s\\%s still has a StartOverride'
                % (control_set, key.name))
