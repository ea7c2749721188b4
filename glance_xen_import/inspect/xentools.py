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

"""Every family and generation of Xen PV drivers for Windows, as data.

One row per family: the services it installs (all disabled offline), the
class filters it writes, the registry keys through which it asks QEMU to
unplug the emulated disks and NICs, its PV hardware ids, and the names its
installers leave under Uninstall and in INF [Version] sections. The
generation table then tells a 6.0-era guest from a 9.x one.

Sources (read November 2026; names only, no code taken):

- citrix-legacy: XenServer 5.x-6.0.2 tools, whose drivers live on in
  OpenXT/xc-windows (xenevtchn/xevtchn.inf: boot-start "xenevtchn" on
  root\\xenevtchn; xenvbd/xenvbd.inf: boot-start xenvbd and scsifilt, the
  latter added to the DiskDrive class LowerFilters; net/xennet.inf: xennet
  and xennet6; xenutil/xenutl.c: NOPVBoot under Services\\xenevtchn) and
  xenserver/win-installer src/PVDriversRemoval/PVDriversPurge.cs (services
  xenevtchn, xenutil, xenlite, xennet6; xenfilt\\Unplug DISKS/NICS;
  "Citrix XenTools" Uninstall key) and src/xenprep/XenPrepSupport.cs
  (spells the event channel service "xevtchn").
- citrix (6.1 and later, the xenbus/xenvif generation): PVDriversPurge.cs
  (XENBUS, xenfilt, xeniface, xennet, xenvbd, xenvif; pvHwIds; the MSI
  names of src/branding/branding.py) and xcp-ng/win-pv-drivers
  XenBootFix/XenBootFix.cpp (the 15 services it disables, XEN\\ForceUnplug,
  xenfilt/scsifilt) and XenDriverUtils/XenCleanup.cs (XEN\\Unplug and
  XEN\\ForceUnplug).
- gplpv: James Harper's GPLPV drivers (spurious/win-pvdrivers-mirror:
  xenpci.inx with XenPci and the older XenHide class UpperFilters, XenPCI
  Parameters hide_devices/qemu_hide_flags, xenvbd.inx, xennet.inx,
  xenstub.inx, xencache.inx, xenusb.inx, xenscsi.inx, installer.wxs).
- redhat-xenpv: libguestfs/virt-v2v convert/convert_windows.ml (rhelscsi
  Start=4, "Red Hat Paravirtualized Xen Drivers for Windows(R)") and the
  AWS PV upgrade documentation and scripts (rhelnet, rhelscsi, rhelfltr,
  rhelsvc).
"""

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class DriverFamily:
    name: str
    # Kernel drivers and agents; every one gets Start=4.
    services: tuple
    # Names written into a device class's Upper/LowerFilters.
    filters: tuple = ()
    # (service key, subkey) under Services holding unplug requests.
    unplug_keys: tuple = ()
    # Enum paths (bus\\device prefix, lower case) of its PV devices.
    hardware_ids: tuple = ()


FAMILIES = (
    DriverFamily(
        name='citrix-legacy',
        services=('xenevtchn', 'xevtchn', 'xenutil', 'xenlite', 'xenvbd',
                  'scsifilt', 'xennet', 'xennet6', 'xensvc'),
        filters=('scsifilt',),
        unplug_keys=(('xenfilt', 'Unplug'),),
        hardware_ids=('root\\xenevtchn', 'pci\\ven_5853&dev_0001',
                      'pci\\ven_fffd&dev_0101', 'xen\\vif')),
    DriverFamily(
        name='citrix',
        services=('xenagent', 'xenbus', 'xenbus_monitor', 'xencons',
                  'xencons_monitor', 'xendisk', 'xenfilt', 'xenhid',
                  'xeniface', 'xeninstall', 'xenlite', 'xennet', 'xensvc',
                  'xenvbd', 'xenvif', 'xenvkbd', 'scsifilt'),
        filters=('xenfilt', 'scsifilt'),
        unplug_keys=(('XEN', 'ForceUnplug'), ('XEN', 'Unplug'),
                     ('xenfilt', 'Unplug')),
        hardware_ids=('pci\\ven_5853&dev_0001', 'pci\\ven_5853&dev_0002',
                      'pci\\ven_5853&dev_c000', 'xenbus\\', 'xenvif\\')),
    DriverFamily(
        name='gplpv',
        services=('xenpci', 'xenhide', 'xenvbd', 'xenvbdfilter', 'xennet',
                  'xenscsi', 'xenstub', 'xencache', 'xenusb',
                  'shutdownmon'),
        filters=('xenpci', 'xenhide', 'xenvbdfilter'),
        hardware_ids=('pci\\ven_5853&dev_0001', 'xen\\')),
    DriverFamily(
        name='redhat-xenpv',
        services=('rhelscsi', 'rhelnet', 'rhelfltr', 'rhelsvc'),
        filters=('rhelfltr',),
        hardware_ids=('pci\\ven_5853&dev_0001',)),
)

ALL_SERVICES = frozenset(s for f in FAMILIES for s in f.services)
UNPLUG_KEYS = tuple(dict.fromkeys(k for f in FAMILIES
                                  for k in f.unplug_keys))
HARDWARE_ID_PREFIXES = tuple(dict.fromkeys(h for f in FAMILIES
                                           for h in f.hardware_ids))
# The legacy event channel driver goes PV whenever it loads unless its
# service key holds NOPVBoot (any type, any data): xc-windows xenutl.c.
LEGACY_EVTCHN = ('xenevtchn', 'xevtchn')
NOPVBOOT = 'NOPVBoot'


@dataclasses.dataclass(frozen=True)
class Generation:
    """How one generation of Xen tools shows itself in the registry.

    ``name`` may hold ``{major}``: it is filled from the version found and
    dropped (with its dash) when there is none.
    """
    name: str
    # Uninstall DisplayName (or key name) patterns.
    products: tuple = ()
    # INF [Version] Provider patterns of its driver packages.
    providers: tuple = ()
    # INF catalogs only this generation's packages carry.
    catalogs: tuple = ()
    # Services only this generation installs.
    services: tuple = ()


# Checked in order: the first whose evidence is present names the
# generation (an XCP-ng guest also carries Citrix-named drivers).
GENERATIONS = (
    Generation(name='xcp-ng-{major}.x',
               products=(r'xcp-ng',), providers=(r'xcp-ng', r'vates')),
    Generation(name='vm-tools-{major}.x',
               products=(r'\bvm tools\b',)),
    Generation(name='xenserver-6.1-7.x',
               products=(r'^citrix xenserver windows management agent',
                         r'^citrix xen windows x(64|86) pv drivers',
                         r'^citrix xenserver tools installer',
                         r'^citrix xenserver vss provider',
                         r'^citrix xenserver windows guest agent')),
    Generation(name='citrix-legacy-5.x-6.0',
               products=(r'^citrix xentools$',
                         r'^citrix tools for virtual machines',
                         r'^xensource'),
               catalogs=('xevtchn.cat',), services=LEGACY_EVTCHN),
    Generation(name='gplpv',
               products=(r'gplpv', r'^ejb pv drivers'),
               providers=(r'xen gpl pv driver developers',
                          r'james harper'),
               catalogs=('xenpci.cat',), services=('xenpci',)),
    Generation(name='redhat-xenpv',
               products=(r'red hat paravirtualized xen drivers',),
               services=('rhelscsi', 'rhelnet')),
)

# Anything under Uninstall that looks like Xen guest tools, to report.
PRODUCT_PATTERN = re.compile(
    r'xen|xcp-ng|citrix hypervisor|citrix vm tools|gplpv|ejb pv drivers',
    re.IGNORECASE)
PROVIDER_PATTERN = re.compile(
    r'citrix|xenserver|xcp-ng|xen project|vates|xen gpl pv|james harper',
    re.IGNORECASE)

_VERSION = re.compile(r'(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?')


def version_string(raw):
    """'9.3.1.12' from a DisplayVersion or DriverVer; None if none.

    DriverVer is 'mm/dd/yyyy,w.x.y.z': the version follows the comma.
    """
    raw = (raw or '').split(',', 1)[-1]
    match = _VERSION.search(raw)
    if not match:
        return None
    return '.'.join(p for p in match.groups() if p is not None)


def _label(generation, version):
    if '{major}' not in generation.name:
        return generation.name
    if version:
        return generation.name.format(major=version.split('.')[0])
    return generation.name.replace('-{major}.x', '')


def _matches(patterns, text):
    return bool(text) and any(re.search(p, text, re.IGNORECASE)
                              for p in patterns)


def classify(products, packages, services):
    """The Xen tools generations a guest carries, best evidence first.

    :param products: [(DisplayName or key name, DisplayVersion or None)]
    :param packages: [(INF provider, catalog, DriverVer)] of Xen packages
    :param services: names (any case) of the Xen services present
    :returns: [{'generation', 'version', 'evidence'}], one per generation
    """
    present = {s.lower() for s in services}
    found = []
    for generation in GENERATIONS:
        evidence = version = None
        for name, display_version in products:
            if _matches(generation.products, name):
                evidence = 'product:' + name
                version = version_string(display_version)
                break
        for provider, catalog, driver_ver in packages:
            if _matches(generation.providers, provider) or (
                    (catalog or '').lower() in generation.catalogs):
                evidence = evidence or 'inf:' + (catalog or provider)
                version = version or version_string(driver_ver)
                break
        service = next((s for s in generation.services if s in present),
                       None)
        if evidence is None and service:
            evidence = 'service:' + service
        if evidence is None:
            continue
        found.append({'generation': _label(generation, version),
                      'version': version, 'evidence': evidence})
    return found
