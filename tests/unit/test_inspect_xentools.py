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

"""Xen tools generations, and static IP settings read from hivex hives."""

import io

import pyregf
import pytest

from glance_xen_import.inspect import facts
from glance_xen_import.inspect import registry
from glance_xen_import.inspect import staticip
from glance_xen_import.inspect import xentools
from glance_xen_import import policy
from tests import hivekit
from tests import winkit

INTERFACES = 'ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\'


@pytest.mark.parametrize('products,packages,services,expected', [
    # The legacy NSIS key has no DisplayName; the event channel INF
    # dates it.
    ([('Citrix XenTools', None)],
     [('Citrix Systems, Inc.', 'xevtchn.cat', '03/01/2011,6.0.2.59')],
     ['xenevtchn'], ['citrix-legacy-5.x-6.0:6.0.2.59']),
    # Only the boot-start driver is left: still the legacy generation.
    ([], [], ['XEVTCHN'], ['citrix-legacy-5.x-6.0']),
    ([('Citrix XenServer Tools Installer', '6.5.0.1108')], [], [],
     ['xenserver-6.1-7.x:6.5.0.1108']),
    ([('Citrix VM Tools for Windows', '8.2.1')], [], [],
     ['vm-tools-8.x:8.2.1']),
    ([('XCP-ng Windows Guest Tools', None)], [], [], ['xcp-ng']),
    ([], [('Xen GPL PV Driver Developers', 'xenpci.cat',
           '11/20/2012,1.0.1092.9')], [], ['gplpv:1.0.1092.9']),
    ([('Red Hat Paravirtualized Xen Drivers for Windows(R)', '1.3.10')],
     [], ['rhelscsi'], ['redhat-xenpv:1.3.10']),
    # Two generations on one guest (an upgrade that left the old one).
    ([('XenServer VM Tools', '9.4.0')], [], ['xenevtchn'],
     ['vm-tools-9.x:9.4.0', 'citrix-legacy-5.x-6.0']),
    ([('7-Zip 19.00', '19.00')], [], ['xenbus'], []),
])
def test_classify(products, packages, services, expected):
    found = xentools.classify(products, packages, services)
    assert [t['generation'] + (':' + t['version'] if t['version'] else '')
            for t in found] == expected


def test_version_string():
    assert xentools.version_string('03/01/2008,4.2.0.0001') == '4.2.0.0001'
    assert xentools.version_string('v9.3 (build 12)') == '9.3'
    assert xentools.version_string('beta') is None


def _system(tmp_path, keys):
    data = hivekit.make_hive(tmp_path, {'keys': keys},
                             base=winkit.make_guests.EMPTY_HIVE)
    handle = pyregf.file()
    handle.open_file_object(io.BytesIO(data))
    return registry.Hive(handle, 'SYSTEM', (1, 1))


def _read(hive):
    services = hive.key('ControlSet001\\Services')
    control = hive.key('ControlSet001\\Control')
    return staticip.read(hive, services, control)


def test_static_interfaces_sanitised(tmp_path):
    hive = _system(tmp_path, [
        [INTERFACES + '{ABCDEF01-2222-3333-4444-555555555555}',
         {'EnableDHCP': ['dword', 0],
          # A forged entry between two real ones: dropped, and the masks
          # stay paired with their addresses.
          'IPAddress': ['multi_sz', ['10.1.2.3', '1.2.3.4;rm -rf\u202e',
                                     '172.16.0.9']],
          'SubnetMask': ['multi_sz', ['255.255.255.0', '255.0.0.0',
                                      '255.255.0.0']],
          'DefaultGateway': ['multi_sz', ['10.1.2.1', 'gateway']],
          'NameServer': ['sz', '10.1.2.53 10.1.2.54,,x']}],
        # Not configured (0.0.0.0) and DHCP interfaces are not reported.
        [INTERFACES + '{11111111-2222-3333-4444-555555555555}',
         {'EnableDHCP': ['dword', 0],
          'IPAddress': ['multi_sz', ['0.0.0.0']]}],
        [INTERFACES + '{22222222-2222-3333-4444-555555555555}',
         {'EnableDHCP': ['dword', 1],
          'IPAddress': ['multi_sz', ['192.168.0.2']]}],
    ])
    try:
        [nic] = _read(hive)
    finally:
        hive.close()
    assert nic.addresses == ['10.1.2.3/24', '172.16.0.9/16']
    assert nic.gateways == ['10.1.2.1']
    assert nic.dns == ['10.1.2.53', '10.1.2.54']
    assert nic.invalid == 3
    assert nic.component_id is None and not nic.xen_nic
    assert staticip.describe(nic) == (
        'abcdef01:10.1.2.3/24+172.16.0.9/16,gw=10.1.2.1,'
        'dns=10.1.2.53+10.1.2.54')


def test_static_ip_property_stays_under_glance_limit():
    win = facts.WindowsFacts(location='disk', systemroot='/Windows')
    win.static_interfaces = [
        facts.StaticInterface(guid='{%08x-0000-0000-0000-000000000000}' % i,
                              addresses=['10.0.%d.10/24' % i],
                              gateways=['10.0.%d.1' % i])
        for i in range(20)]
    guest = facts.GuestFacts(os_type='windows', windows=win)
    value = policy.decide(guest, None, None, None, None)[
        'xen_import_static_ip']
    items = value.split(';')
    assert len(value) <= 255
    # Whole interfaces are dropped and the cut is marked.
    assert items[-1] == '...'
    assert items[0] == '00000000:10.0.0.10/24,gw=10.0.0.1'
    assert all(item.count(':') == 1 for item in items[:-1])
