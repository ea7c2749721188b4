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

"""The xen-ova paste filter, driven with webob requests."""

import io
import json

import pytest
import webob

from glance_xen_import.glance import middleware
from glance_xen_import import middleware as public_middleware

INFO = {'import-methods': {'description': 'Import methods available.',
                           'type': 'array',
                           'value': ['glance-direct', 'web-download',
                                     'copy-image']}}


class Recorder(object):
    """A downstream app that remembers the request it got."""

    def __init__(self, body=None, status=200,
                 content_type='application/json', read=True):
        self.read = read
        self.body = body
        self.status = status
        self.content_type = content_type
        self.environ = None
        self.request_body = None

    def __call__(self, environ, start_response):
        self.environ = environ
        req = webob.Request(environ)
        if self.read and req.content_length:
            self.request_body = req.body
        resp = webob.Response(status=self.status,
                              content_type=self.content_type)
        if self.body is not None:
            resp.body = (self.body if isinstance(self.body, bytes)
                         else json.dumps(self.body).encode())
        return resp(environ, start_response)


class UnreadableInput(io.RawIOBase):
    """wsgi.input that fails the test if anything reads it."""

    def readable(self):
        return True

    def readinto(self, buf):
        raise AssertionError('the filter read a body it must not touch')


@pytest.fixture
def glance_conf(monkeypatch):
    """Glance options as the filter sees them (default: plugin enabled)."""
    values = {
        ('image_import_opts', 'image_import_plugins'): ['xen_ova'],
        (None, 'enabled_import_methods'): ['glance-direct', 'web-download',
                                           'copy-image'],
    }
    monkeypatch.setattr(middleware, '_conf_value',
                        lambda group, name: values.get((group, name)))
    return values


def _filter(app):
    return public_middleware.filter_factory({})(app)


def _import(body, path='/v2/images/abc/import', app=None):
    app = app or Recorder(body={})
    req = webob.Request.blank(path, method='POST',
                              content_type='application/json',
                              body=json.dumps(body).encode())
    resp = req.get_response(_filter(app))
    return resp, app


def test_public_name_is_the_glance_filter():
    assert public_middleware.filter_factory is middleware.filter_factory
    assert isinstance(_filter(Recorder()), middleware.XenOvaImportFilter)


@pytest.mark.parametrize('path', ['/v2/info/import', '/v2/info/import/',
                                  '/v2.16/info/import'])
def test_import_info_lists_xen_ova(glance_conf, path):
    resp = webob.Request.blank(path).get_response(_filter(Recorder(INFO)))
    assert resp.status_int == 200
    doc = json.loads(resp.body)
    assert doc['import-methods']['value'] == [
        'glance-direct', 'web-download', 'copy-image', 'xen-ova']
    assert doc['import-methods']['description'] == (
        INFO['import-methods']['description'])
    assert resp.content_length == len(resp.body)


def test_import_info_not_duplicated(glance_conf):
    info = json.loads(json.dumps(INFO))
    info['import-methods']['value'].append('xen-ova')
    resp = webob.Request.blank('/v2/info/import').get_response(
        _filter(Recorder(info)))
    assert json.loads(resp.body)['import-methods']['value'].count(
        'xen-ova') == 1


def test_import_info_needs_a_method_that_stages(glance_conf):
    info = json.loads(json.dumps(INFO))
    info['import-methods']['value'] = ['copy-image']
    resp = webob.Request.blank('/v2/info/import').get_response(
        _filter(Recorder(info)))
    assert json.loads(resp.body)['import-methods']['value'] == ['copy-image']


@pytest.mark.parametrize('app', [
    Recorder({'error': 'x'}, status=500),
    Recorder(b'not json'),
    Recorder(b'<html/>', content_type='text/html'),
    Recorder({'something': 'else'}),
])
def test_import_info_other_answers_untouched(glance_conf, app):
    resp = webob.Request.blank('/v2/info/import').get_response(_filter(app))
    expected = (app.body if isinstance(app.body, bytes)
                else json.dumps(app.body).encode())
    assert resp.body == expected
    assert resp.status_int == app.status


def test_import_info_untouched_when_plugin_disabled(glance_conf):
    glance_conf[('image_import_opts', 'image_import_plugins')] = [
        'image_conversion']
    resp = webob.Request.blank('/v2/info/import').get_response(
        _filter(Recorder(INFO)))
    assert 'xen-ova' not in json.loads(resp.body)['import-methods']['value']


def test_xen_ova_import_becomes_glance_direct(glance_conf):
    body = {'method': {'name': 'xen-ova'}, 'stores': ['fast', 'cheap'],
            'all_stores_must_succeed': False}
    resp, app = _import(body)
    assert resp.status_int == 200
    sent = json.loads(app.request_body)
    assert sent == {'method': {'name': 'glance-direct', 'xen_ova': True},
                    'stores': ['fast', 'cheap'],
                    'all_stores_must_succeed': False}
    assert int(app.environ['CONTENT_LENGTH']) == len(app.request_body)


def test_xen_ova_import_with_uri_becomes_web_download(glance_conf):
    uri = 'http://example.test/vm.ova'
    resp, app = _import({'method': {'name': 'xen-ova', 'uri': uri}},
                        path='/v2.15/images/abc/import')
    assert json.loads(app.request_body) == {
        'method': {'name': 'web-download', 'uri': uri, 'xen_ova': True}}


def test_xen_ova_import_refused_when_target_disabled(glance_conf):
    glance_conf[(None, 'enabled_import_methods')] = ['web-download']
    resp, app = _import({'method': {'name': 'xen-ova'}})
    assert resp.status_int == 400
    assert "needs 'glance-direct'" in resp.text
    assert app.environ is None


@pytest.mark.parametrize('raw', [
    json.dumps({'method': {'name': 'glance-direct'}}).encode(),
    json.dumps({'method': {'name': 'web-download',
                           'uri': 'http://x/y'}}).encode(),
    json.dumps({'method': 'xen-ova'}).encode(),
    json.dumps(['xen-ova']).encode(),
    b'{"method": {"name": "xen-ova"',   # truncated JSON
    b'\xff\xfe not json',
])
def test_other_import_bodies_pass_byte_for_byte(glance_conf, raw):
    app = Recorder(body={})
    req = webob.Request.blank('/v2/images/abc/import', method='POST',
                              content_type='application/json', body=raw)
    resp = req.get_response(_filter(app))
    assert resp.status_int == 200
    assert app.request_body == raw


def test_plugin_disabled_leaves_xen_ova_to_glance(glance_conf):
    glance_conf[('image_import_opts', 'image_import_plugins')] = []
    resp, app = _import({'method': {'name': 'xen-ova'}})
    assert json.loads(app.request_body) == {'method': {'name': 'xen-ova'}}


@pytest.mark.parametrize('method, path, length', [
    ('PUT', '/v2/images/abc/stage', '1048576'),
    ('PUT', '/v2/images/abc/file', '1048576'),
    ('POST', '/v2/images', '100'),
    ('PATCH', '/v2/images/abc', '100'),
    ('GET', '/v2/images/abc/import', None),
    ('POST', '/v2/images/abc/import/extra', '10'),
    # An import request without a length (chunked) or too big to be one.
    ('POST', '/v2/images/abc/import', None),
    ('POST', '/v2/images/abc/import',
     str(middleware.MAX_IMPORT_BODY + 1)),
])
def test_other_requests_are_not_read(glance_conf, method, path, length):
    app = Recorder(body={}, read=False)
    sentinel = UnreadableInput()
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': path,
               'SCRIPT_NAME': '', 'SERVER_NAME': 'glance',
               'SERVER_PORT': '9292', 'wsgi.url_scheme': 'http',
               'wsgi.input': sentinel}
    if length is not None:
        environ['CONTENT_LENGTH'] = length
    else:
        environ['HTTP_TRANSFER_ENCODING'] = 'chunked'
    statuses = []
    _filter(app)(environ, lambda status, headers: statuses.append(status))
    assert statuses == ['200 OK']
    assert app.environ['wsgi.input'] is sentinel


# -- DELETE /v2/images/{id}: the plugin's staging leftovers go too --------

IMAGE_ID = '0f5a53e4-9a6e-4f3b-a1ce-46a3b1f0c2d7'


@pytest.fixture
def staging_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(middleware.staging, 'glance_staging_dir',
                        lambda: str(tmp_path))
    names = [IMAGE_ID,                              # Glance's own
             IMAGE_ID + '.xenova.raw',
             IMAGE_ID + '.xenova.raw.partial-1a2b3c4d',
             IMAGE_ID + '.xenova.raw.partial-[x]',
             'a7d6c1e2-0d8c-4a55-8f0e-5d3c2b1a0f99.xenova.raw']
    for name in names:
        (tmp_path / name).write_bytes(b'leftover')
    return tmp_path


def _delete(app, image_id=IMAGE_ID):
    req = webob.Request.blank('/v2/images/%s' % image_id, method='DELETE')
    return req.get_response(_filter(app))


def test_deleted_image_loses_its_raw_and_partials(glance_conf, staging_dir):
    resp = _delete(Recorder(status=204, body=None))
    assert resp.status_int == 204
    # Glance's staged data is Glance's to remove; another image's RAW stays.
    assert sorted(p.name for p in staging_dir.iterdir()) == [
        IMAGE_ID, 'a7d6c1e2-0d8c-4a55-8f0e-5d3c2b1a0f99.xenova.raw']


@pytest.mark.parametrize('status', [403, 404, 409, 500])
def test_refused_delete_keeps_the_files(glance_conf, staging_dir, status):
    before = sorted(p.name for p in staging_dir.iterdir())
    resp = _delete(Recorder(status=status, body={'error': 'no'}))
    assert resp.status_int == status
    assert sorted(p.name for p in staging_dir.iterdir()) == before


@pytest.mark.parametrize('image_id', ['..', '*', IMAGE_ID + '*',
                                      'not-a-uuid'])
def test_delete_of_a_non_uuid_path_removes_nothing(glance_conf, staging_dir,
                                                   image_id):
    before = sorted(p.name for p in staging_dir.iterdir())
    assert _delete(Recorder(status=204), image_id).status_int == 204
    assert sorted(p.name for p in staging_dir.iterdir()) == before


def test_delete_outside_glance_passes_through(glance_conf, monkeypatch):
    monkeypatch.setattr(middleware.staging, 'glance_staging_dir',
                        lambda: None)
    app = Recorder(status=204)
    assert _delete(app).status_int == 204
    assert app.environ['PATH_INFO'] == '/v2/images/%s' % IMAGE_ID
