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

"""Paste filter that offers ``xen-ova`` as an image import method.

Glance 33 accepts only its four built-in names in
``enabled_import_methods``, so ``xen-ova`` cannot be a real import method.
This filter makes it look like one to clients:

* ``GET /v2/info/import`` lists ``xen-ova`` after the built-in methods;
* ``POST /v2/images/{id}/import`` with ``{"method": {"name": "xen-ova"}}``
  is rewritten to ``glance-direct`` (or to ``web-download`` when the method
  carries a ``uri``) with ``"xen_ova": true`` added to the method, which
  makes the ``xen_ova`` import plugin convert the data whatever its
  container format;
* a successful ``DELETE /v2/images/{id}`` also removes the plugin's RAW
  and partial RAWs of that image from this node's staging area. Glance
  itself removes only the staged data (``<id>``) then, and the rest at its
  next start-up; an import cut short by a killed glance-api leaves a
  partial RAW as large as the data converted so far.

Every other request passes through untouched; in particular no request
body other than an import's is read, so image uploads stream as before.
"""

import json
import re

from oslo_config import cfg
from oslo_log import log as logging
import webob
import webob.exc

from glance_xen_import.glance import staging

LOG = logging.getLogger(__name__)

METHOD_NAME = 'xen-ova'
# The key added to import_req['method']; Glance keeps unknown keys there
# and hands the whole request to the import plugins.
MARKER = 'xen_ova'
PLUGIN_NAME = 'xen_ova'

# An import request is a small JSON document; anything bigger is not ours
# and is left for Glance to judge without being read here.
MAX_IMPORT_BODY = 64 * 1024

_V2 = r'/v2(?:\.\d+)?'
_INFO_IMPORT = re.compile(r'^%s/info/import/?$' % _V2)
_IMAGE_IMPORT = re.compile(r'^%s/images/[^/]+/import/?$' % _V2)
_IMAGE = re.compile(r'^%s/images/(?P<image_id>[^/]+)/?$' % _V2)


def _conf_value(group, name):
    """Return a Glance option, or None when it is not registered here."""
    try:
        if group is None:
            return getattr(cfg.CONF, name)
        return getattr(getattr(cfg.CONF, group), name)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
        return None


def _plugin_enabled():
    plugins = _conf_value('image_import_opts', 'image_import_plugins')
    # Not registered (e.g. the filter runs outside glance-api): assume yes.
    return plugins is None or PLUGIN_NAME in plugins


def _method_enabled(name):
    methods = _conf_value(None, 'enabled_import_methods')
    return methods is None or name in methods


class XenOvaImportFilter(object):
    """WSGI filter that maps the ``xen-ova`` method onto Glance's own."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        method = environ.get('REQUEST_METHOD')
        path = environ.get('PATH_INFO', '')
        if method == 'GET' and _INFO_IMPORT.match(path):
            handler = self._import_info
        elif method == 'POST' and _IMAGE_IMPORT.match(path):
            handler = self._image_import
        elif method == 'DELETE' and _IMAGE.match(path):
            image_id = _IMAGE.match(path).group('image_id')
            return self._image_delete(image_id, environ, start_response)
        else:
            return self.app(environ, start_response)
        if not _plugin_enabled():
            return self.app(environ, start_response)
        return handler(webob.Request(environ))(environ, start_response)

    def _image_delete(self, image_id, environ, start_response):
        resp = webob.Request(environ).get_response(self.app)
        if resp.status_int == 204:
            staging_dir = staging.glance_staging_dir()
            if staging_dir:
                staging.remove_plugin_files(staging_dir, image_id,
                                            'the image was deleted')
        return resp(environ, start_response)

    def _import_info(self, req):
        resp = req.get_response(self.app)
        if (resp.status_int != 200 or resp.content_encoding
                or resp.content_type != 'application/json'):
            return resp
        try:
            doc = json.loads(resp.body)
            methods = doc['import-methods']['value']
        except (ValueError, KeyError, TypeError):
            return resp
        if not isinstance(methods, list) or METHOD_NAME in methods:
            return resp
        if 'glance-direct' in methods or 'web-download' in methods:
            methods.append(METHOD_NAME)
            resp.body = json.dumps(doc).encode('utf-8')
        return resp

    def _image_import(self, req):
        length = req.content_length
        if length is None or length > MAX_IMPORT_BODY:
            return self.app
        # Reading through webob keeps the body available downstream.
        try:
            body = json.loads(req.body)
        except ValueError:
            return self.app
        method = body.get('method') if isinstance(body, dict) else None
        if not isinstance(method, dict) or method.get('name') != METHOD_NAME:
            return self.app

        target = 'web-download' if method.get('uri') else 'glance-direct'
        if not _method_enabled(target):
            return webob.exc.HTTPBadRequest(
                explanation="Import method '%s' needs '%s' enabled at this "
                            "site." % (METHOD_NAME, target))
        method['name'] = target
        method[MARKER] = True
        req.body = json.dumps(body).encode('utf-8')
        LOG.debug('Import request %s rewritten from %s to %s',
                  req.path_info, METHOD_NAME, target)
        return self.app


def filter_factory(global_conf, **local_conf):
    """Paste entry point: ``paste.filter_factory = ...:filter_factory``."""
    def _filter(app):
        return XenOvaImportFilter(app)
    return _filter
