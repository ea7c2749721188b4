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

"""A loopback stand-in for a XenServer host's ``/export`` handler.

It answers ``GET /export?session_id=S&uuid=U[&use_compression=gzip|zstd]``
as xapi does: the XVA as it is produced, with chunked transfer encoding
and no Content-Length, compressed on the fly by piping it through the
``gzip`` or ``zstd`` command (xapi pipes through /bin/gzip and
/usr/bin/zstd). A wrong session gets 401, an unknown VM 404.
"""

import http.server
import shutil
import subprocess
import threading
import urllib.parse

_COMPRESSORS = {'true': ['gzip', '-c'], 'gzip': ['gzip', '-c'],
                'zstd': ['zstd', '-q', '-c']}


class _ExportHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        host = self.server.host
        if url.path != '/export':
            return self._refuse(404)
        if query.get('session_id') != host.session_id:
            return self._refuse(401)
        path = host.vms.get(query.get('uuid'))
        if path is None:
            return self._refuse(404)
        compressor = _COMPRESSORS.get(query.get('use_compression', 'false'))
        host.requests.append(dict(query))
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        with open(path, 'rb') as source:
            if compressor is None:
                self._send_chunks(source)
                return
            proc = subprocess.Popen(compressor, stdin=source,
                                    stdout=subprocess.PIPE)
            try:
                self._send_chunks(proc.stdout)
            finally:
                proc.stdout.close()
                proc.wait()

    def _send_chunks(self, stream):
        while True:
            data = stream.read(256 << 10)
            if not data:
                break
            self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
        self.wfile.write(b'0\r\n\r\n')
        self.wfile.flush()

    def _refuse(self, status):
        self.send_response(status)
        self.send_header('Content-Length', '0')
        self.end_headers()


class XapiHost(object):
    """Serve XVA files as a XenServer host's export URL on 127.0.0.1."""

    def __init__(self, session_id='OpaqueRef:test-session'):
        self.session_id = session_id
        self.vms = {}           # VM uuid -> XVA file
        self.requests = []      # the query of each export served
        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                       _ExportHandler)
        self._server.host = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def add_vm(self, uuid, xva_path):
        self.vms[uuid] = xva_path

    def export_url(self, uuid, compression=None, session_id=None):
        query = {'session_id': session_id or self.session_id, 'uuid': uuid}
        if compression:
            query['use_compression'] = compression
        return 'http://127.0.0.1:%d/export?%s' % (
            self.port, urllib.parse.urlencode(query))


def have_compressors():
    return all(shutil.which(c[0]) for c in _COMPRESSORS.values())
