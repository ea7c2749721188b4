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

"""Static TCP/IP configuration of a Windows guest, from its SYSTEM hive.

Windows keeps each adapter's IPv4 settings under
Services\\Tcpip\\Parameters\\Interfaces\\{GUID} (EnableDHCP, IPAddress and
SubnetMask as parallel REG_MULTI_SZ lists, DefaultGateway, NameServer as
one comma- or space-separated string) and its IPv6 DNS servers under
Services\\Tcpip6\\Parameters\\Interfaces\\{GUID}\\NameServer. The GUID is the
adapter's NetCfgInstanceId in the Net class key, which names the driver
(ComponentId). Static IPv6 addresses live in the binary NSI store and are
not read. Every entry must parse as an IP address, or it is dropped.
"""

import ipaddress
import re

from glance_xen_import.inspect import facts
from glance_xen_import.inspect import xentools

NET_CLASS = '{4d36e972-e325-11ce-bfc1-08002be10318}'
# Interfaces and entries looked at; a server has a handful.
MAX_INTERFACES = 256
MAX_ENTRIES = 64

_SPLIT = re.compile(r'[,\s]+')


def _addresses(values, invalid, version=None):
    found = []
    for value in values[:MAX_ENTRIES]:
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            invalid.append(value)
            continue
        if version is not None and address.version != version:
            invalid.append(value)
            continue
        if not address.is_unspecified:
            found.append(str(address))
    return found


def _with_prefixes(ips, masks, invalid):
    """'10.0.0.5/24' for each address in IPAddress.

    IPAddress and SubnetMask are parallel lists: they are paired before
    anything is dropped.
    """
    found = []
    for index, raw in enumerate(ips[:MAX_ENTRIES]):
        address = _addresses([raw], invalid, 4)
        if not address:
            continue
        prefix = _prefix(masks[index]) if index < len(masks) else None
        found.append(address[0] if prefix is None
                     else '%s/%d' % (address[0], prefix))
    return found


def _prefix(mask):
    try:
        return ipaddress.IPv4Network('0.0.0.0/' + mask.strip()).prefixlen
    except ValueError:
        return None


def _nic_drivers(hive, control):
    """{lower-case NetCfgInstanceId: ComponentId} from the Net class."""
    drivers = {}
    net = hive.key('Class\\' + NET_CLASS, control)
    for key in hive.subkeys(net)[:MAX_INTERFACES * 4]:
        guid = hive.string(key, 'NetCfgInstanceId')
        component = hive.string(key, 'ComponentId') or hive.string(
            key, 'MatchingDeviceId')
        if guid and component:
            drivers[guid.strip().lower()] = component.strip()
    return drivers


def _is_xen_nic(component):
    component = (component or '').lower()
    return component.startswith(('xen\\', 'xenvif\\', 'xenbus\\')) or (
        component.split('\\')[0] in xentools.ALL_SERVICES)


def read(hive, services, control):
    """[facts.StaticInterface] for interfaces with EnableDHCP=0."""
    found = []
    interfaces = hive.key('Tcpip\\Parameters\\Interfaces', services)
    ipv6 = hive.key('Tcpip6\\Parameters\\Interfaces', services)
    drivers = None
    for key in hive.subkeys(interfaces)[:MAX_INTERFACES]:
        if hive.dword(key, 'EnableDHCP') != 0:
            continue
        invalid = []
        addresses = _with_prefixes(hive.strings(key, 'IPAddress'),
                                   hive.strings(key, 'SubnetMask'), invalid)
        if not addresses:
            continue
        guid = hive.name_of(key)
        if drivers is None:
            drivers = _nic_drivers(hive, control)
        nameservers = _SPLIT.split(hive.string(key, 'NameServer') or '')
        v6 = hive.key(guid, ipv6) if ipv6 is not None else None
        v6_servers = _SPLIT.split(hive.string(v6, 'NameServer') or '')
        component = drivers.get(guid.lower())
        found.append(facts.StaticInterface(
            guid=guid, addresses=addresses,
            gateways=_addresses(hive.strings(key, 'DefaultGateway'),
                                invalid, 4),
            dns=_addresses([n for n in nameservers if n], invalid, 4),
            ipv6_dns=_addresses([n for n in v6_servers if n], invalid, 6),
            component_id=component, xen_nic=_is_xen_nic(component),
            invalid=len(invalid)))
    return found


def _short_guid(guid):
    # The key name comes from the guest: keep its hex digits only.
    return re.sub(r'[^0-9a-f]', '', guid.lower())[:8] or 'unnamed'


def describe(interface):
    """'1a2b3c4d:10.0.0.5/24,gw=10.0.0.1,dns=10.0.0.2+10.0.0.3'."""
    parts = ['+'.join(interface.addresses)]
    if interface.gateways:
        parts.append('gw=' + '+'.join(interface.gateways))
    dns = interface.dns + interface.ipv6_dns
    if dns:
        parts.append('dns=' + '+'.join(dns))
    return '%s:%s' % (_short_guid(interface.guid), ','.join(parts))
