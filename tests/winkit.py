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

"""Windows guests carrying each generation of Xen PV drivers.

The disk is the committed win2008r2-xen guest (mkntfs, sfdisk); its
SYSTEM and SOFTWARE hives are replaced by hives hivex builds from the
specs below (tools/fixtures/make_hives.py) and its driver INFs are added,
both with ntfs-3g's ntfscp, as the registry of a guest of that generation
would hold them. The names come from the sources inspect/xentools.py
cites; the expected values of the tests are the ones written here.
"""

import dataclasses
import lzma
import os
import subprocess

from glance_xen_import.formats import partitions
from tests import hivekit
from tests import linuxkit
from tests import ovakit

make_guests = linuxkit.make_guests
GUESTS = os.path.join(os.path.dirname(__file__), 'fixtures', 'guests')
BASE_GUEST = 'win2008r2-xen'
WINDOWS_PARTITION = 1          # index in layout.partitions
SECTOR = 512
CS = 'ControlSet001\\'
SYSTEM_CLASS = make_guests.SYSTEM_CLASS
HDC_CLASS = make_guests.HDC_CLASS
DISK_CLASS = make_guests.DISK_CLASS
SCSI_CLASS = '{4d36e97b-e325-11ce-bfc1-08002be10318}'
NET_CLASS = '{4d36e972-e325-11ce-bfc1-08002be10318}'
NIC_GUID = '{5A1E6C3B-0D2F-4E8A-9B7C-1F2E3D4C5B6A}'
KERNEL, AGENT = 1, 0x10


@dataclasses.dataclass
class Generation:
    name: str
    expected: str                  # xen_import_xen_tools
    services: dict                 # name -> (Start, Type)
    filters: list                  # (class, value, [entries])
    unplug: list = dataclasses.field(default_factory=list)  # (key, values)
    products: list = dataclasses.field(default_factory=list)
    msi: list = dataclasses.field(default_factory=list)   # (name, Version)
    infs: dict = dataclasses.field(default_factory=dict)
    enum: list = dataclasses.field(default_factory=list)
    nt: tuple = (6, 1)
    static_ip: bool = False
    # Keys set last, replacing all the values of a key set before.
    extra: list = dataclasses.field(default_factory=list)

    @property
    def enabled(self):
        return sorted(n.lower() for n, (start, _t) in self.services.items()
                      if start != 4)


def _inf(provider, class_name, catalog, driver_ver):
    return ('[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=%s\r\n'
            'Provider=%%P%%\r\nCatalogFile=%s\r\nDriverVer=%s\r\n\r\n'
            '[Strings]\r\nP="%s"\r\n'
            % (class_name, catalog, driver_ver, provider)).encode()


GENERATIONS = [
    Generation(
        name='citrix-legacy',
        expected='citrix-legacy-5.x-6.0:6.0.2.59',
        services={'xenevtchn': (0, KERNEL), 'xenutil': (3, KERNEL),
                  'xenvbd': (0, KERNEL), 'scsifilt': (0, KERNEL),
                  'xennet6': (3, KERNEL), 'xensvc': (2, AGENT)},
        filters=[(DISK_CLASS, 'LowerFilters', ['scsifilt']),
                 (DISK_CLASS, 'UpperFilters', ['PartMgr'])],
        unplug=[('xenfilt\\Unplug',
                 {'DISKS': ['multi_sz', ['xenvbd']],
                  'NICS': ['multi_sz', ['xenvif', 'xennet']]})],
        products=[('Citrix XenTools', None)],
        infs={'oem4.inf': _inf('Citrix Systems, Inc.', 'System',
                               'xevtchn.cat', '03/01/2011,6.0.2.59')},
        enum=['Root\\XENEVTCHN\\0000',
              'PCI\\VEN_5853&DEV_0001&SUBSYS_00015853&REV_01\\3&267a616a'],
        static_ip=True),
    Generation(
        name='xenserver-6.1',
        expected='xenserver-6.1-7.x:7.0.0.125',
        services={'xenbus': (0, KERNEL), 'xenfilt': (0, KERNEL),
                  'xenvbd': (0, KERNEL), 'xenvif': (3, KERNEL),
                  'xennet': (3, KERNEL), 'xeniface': (3, KERNEL),
                  'xenlite': (2, AGENT)},
        filters=[(SYSTEM_CLASS, 'UpperFilters', ['XENFILT']),
                 (HDC_CLASS, 'UpperFilters', ['XENFILT'])],
        unplug=[('xenfilt\\Unplug',
                 {'DISKS': ['multi_sz', ['xenvbd']]})],
        products=[('Citrix XenServer Windows Management Agent', '7.0.0.125'),
                  ('Citrix Xen Windows x64 PV Drivers', '7.0.0.62')],
        enum=['PCI\\VEN_5853&DEV_0002&SUBSYS_00025853&REV_02\\3&1f0d',
              'XENBUS\\VEN_XS0002&DEV_VBD&REV_00000001\\51712']),
    Generation(
        name='vm-tools-9',
        expected='vm-tools-9.x:9.3.3',
        services={'xenbus': (0, KERNEL), 'xenfilt': (0, KERNEL),
                  'xendisk': (0, KERNEL), 'xenvbd': (0, KERNEL),
                  'xenvif': (3, KERNEL), 'xennet': (3, KERNEL),
                  'xeniface': (3, KERNEL), 'xenvkbd': (3, KERNEL),
                  'xenhid': (3, KERNEL), 'xencons': (3, KERNEL),
                  'xenagent': (2, AGENT), 'xenbus_monitor': (2, AGENT)},
        filters=[(HDC_CLASS, 'UpperFilters', ['XENFILT']),
                 (SYSTEM_CLASS, 'UpperFilters', ['XENFILT'])],
        unplug=[('XEN\\ForceUnplug', {'DISKS': ['dword', 1],
                                      'NICS': ['dword', 1]})],
        # Registered with Windows Installer only (hidden from Programs
        # and Features): Version is 9 << 24 | 3 << 16 | 3.
        msi=[('XenServer VM Tools', (9 << 24) | (3 << 16) | 3)],
        infs={'oem5.inf': _inf('XenServer', 'System', 'xenbus.cat',
                               '05/02/2024,9.1.11.115')},
        nt=(10, 0)),
    Generation(
        name='xcp-ng',
        expected='xcp-ng-8.x:8.2.2.200',
        services={'xenbus': (0, KERNEL), 'xenfilt': (0, KERNEL),
                  'xenvbd': (0, KERNEL), 'xendisk': (0, KERNEL),
                  'xenvif': (3, KERNEL), 'xennet': (3, KERNEL),
                  'xeniface': (3, KERNEL), 'XenSvc': (2, AGENT)},
        filters=[(SYSTEM_CLASS, 'UpperFilters', ['XENFILT']),
                 (HDC_CLASS, 'LowerFilters', ['atapi', 'XENFILT'])],
        unplug=[('XEN\\ForceUnplug', {'DISKS': ['dword', 1]}),
                ('XEN\\Unplug', {'NICS': ['dword', 1]})],
        products=[('XCP-ng Windows Management Agent', '8.2.2.200')],
        infs={'oem6.inf': _inf('XCP-ng', 'System', 'xenbus.cat',
                               '01/10/2023,9.0.9065.0')},
        nt=(10, 0)),
    Generation(
        name='gplpv',
        expected='gplpv:1.0.1092.9',
        services={'XenPCI': (0, KERNEL), 'XenVbd': (0, KERNEL),
                  'XenNet': (3, KERNEL), 'XenStub': (3, KERNEL),
                  'XenCache': (0, 2), 'ShutdownMon': (2, AGENT)},
        filters=[(HDC_CLASS, 'UpperFilters', ['XenPci']),
                 (SCSI_CLASS, 'UpperFilters', ['XenPci']),
                 (NET_CLASS, 'UpperFilters', ['XenPci']),
                 (SYSTEM_CLASS, 'UpperFilters', ['XenHide'])],
        infs={'oem8.inf': _inf('Xen GPL PV Driver Developers', 'System',
                               'xenpci.cat', '11/20/2012,1.0.1092.9')},
        enum=['XEN\\VBD\\768']),
    Generation(
        name='redhat-xenpv',
        expected='redhat-xenpv:1.3.10',
        services={'rhelscsi': (0, KERNEL), 'rhelnet': (3, KERNEL),
                  'rhelfltr': (0, KERNEL), 'rhelsvc': (2, AGENT)},
        filters=[(DISK_CLASS, 'UpperFilters', ['PartMgr', 'rhelfltr'])],
        products=[('Red Hat Paravirtualized Xen Drivers for Windows(R)',
                   '1.3.10')]),
]


def _system_spec(gen):
    keys = [['Select', {'Current': ['dword', 1], 'Default': ['dword', 1],
                        'LastKnownGood': ['dword', 1]}],
            [CS + 'Control\\Session Manager\\Environment',
             {'PROCESSOR_ARCHITECTURE': ['sz', 'AMD64']}],
            [CS + 'Services\\Disk', make_guests.service(0)]]
    # The inbox IDE bindings every install has (the base disk holds the
    # drivers' files), in the database this NT version binds with.
    keys += make_guests.boot_services(CS, make_guests.IDE_SERVICES)
    if gen.nt >= (6, 2):
        keys += make_guests.driver_database(
            'mshdc.inf', make_guests.IDE_PACKAGE, make_guests.IDE_BINDINGS)
    else:
        keys += make_guests.critical_devices(CS, make_guests.IDE_BINDINGS)
    for name, (start, kind) in gen.services.items():
        keys.append([CS + 'Services\\' + name,
                     make_guests.service(start, kind=kind)])
    classes = {}
    for class_guid, value, entries in gen.filters:
        classes.setdefault(class_guid, {})[value] = ['multi_sz', entries]
    for class_guid, values in classes.items():
        keys.append([CS + 'Control\\Class\\' + class_guid, values])
    for key, values in gen.unplug:
        keys.append([CS + 'Services\\' + key, values])
    for path in gen.enum:
        keys.append([CS + 'Enum\\' + path, {'Service': ['sz', 'x']}])
    if gen.static_ip:
        keys += [
            [CS + 'Services\\Tcpip\\Parameters\\Interfaces\\' + NIC_GUID,
             {'EnableDHCP': ['dword', 0],
              'IPAddress': ['multi_sz', ['10.20.30.40']],
              'SubnetMask': ['multi_sz', ['255.255.255.0']],
              'DefaultGateway': ['multi_sz', ['10.20.30.1']],
              'NameServer': ['sz', '10.20.30.2,10.20.30.3']}],
            # A DHCP interface: not reported.
            [CS + 'Services\\Tcpip\\Parameters\\Interfaces\\'
             '{00000000-1111-2222-3333-444444444444}',
             {'EnableDHCP': ['dword', 1],
              'IPAddress': ['multi_sz', ['192.168.1.9']]}],
            [CS + 'Services\\Tcpip6\\Parameters\\Interfaces\\' + NIC_GUID,
             {'NameServer': ['sz', '2001:db8::53']}],
            [CS + 'Control\\Class\\' + NET_CLASS + '\\0007',
             {'NetCfgInstanceId': ['sz', NIC_GUID],
              'ComponentId': ['sz', 'xen\\vif']}]]
    return {'out': 'SYSTEM', 'keys': keys + gen.extra}


def _software_spec(gen):
    if gen.nt >= (10, 0):
        spec = make_guests.software_hive(
            'Windows Server 2019 Standard', '6.3', '17763', 'Server',
            'ServerStandard', major=gen.nt)
    else:
        spec = make_guests.software_hive(
            'Windows Server 2008 R2 Standard', '6.1', '7601', 'Server',
            'ServerStandard')
    uninstall = 'Microsoft\\Windows\\CurrentVersion\\Uninstall\\'
    for index, (name, version) in enumerate(gen.products):
        values = {}
        if name != 'Citrix XenTools':
            values['DisplayName'] = ['sz', name]
            key = '{5%07d-1111-2222-3333-444444444444}' % index
        else:
            # The legacy NSIS installer's key, named but without a
            # DisplayName.
            key = name
            values['Install_Dir'] = ['sz', 'C:\\Program Files\\Citrix']
        if version:
            values['DisplayVersion'] = ['sz', version]
        spec['keys'].append([uninstall + key, values])
    for index, (name, version) in enumerate(gen.msi):
        spec['keys'].append(['Classes\\Installer\\Products\\'
                             '%032X' % (index + 0xABC),
                             {'ProductName': ['sz', name],
                              'Version': ['dword', version]}])
    return spec


def _ntfscp(volume, source, target):
    subprocess.run(['ntfscp', '-f', '-q', str(volume), str(source), target],
                   check=True, capture_output=True)


def build(tmp_path, gen):
    """(RAW path, layout) of the base guest turned into ``gen``."""
    hivekit.require_hivex()
    ovakit.require_tools('ntfscp')
    work = tmp_path / ('build-' + gen.name)
    work.mkdir()
    made = make_guests.hives(str(work), [_system_spec(gen),
                                         _software_spec(gen)])
    path = tmp_path / (gen.name + '.raw')
    with lzma.open(os.path.join(GUESTS, BASE_GUEST + '.raw.xz')) as src:
        path.write_bytes(src.read())
    with open(path, 'rb') as image:
        layout = partitions.read_layout(image, os.path.getsize(path))
    partition = layout.partitions[WINDOWS_PARTITION]
    volume = work / 'windows.ntfs'
    with open(path, 'rb') as src:
        src.seek(partition.start)
        volume.write_bytes(src.read(partition.size))
    files = {'/Windows/System32/config/' + name: data
             for name, data in made.items()}
    files.update({'/Windows/inf/' + n: d for n, d in gen.infs.items()})
    for index, (target, data) in enumerate(sorted(files.items())):
        source = work / ('file-%d' % index)
        source.write_bytes(data)
        _ntfscp(volume, source, target)
    with open(path, 'r+b') as dst:
        dst.seek(partition.start)
        dst.write(volume.read_bytes())
    return str(path), layout
