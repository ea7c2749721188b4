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

"""TEST ONLY: trusts a ``user:project:role`` token instead of Keystone.

Glance's unauthenticated pipeline cannot import (the context has no
project), so the local test server puts this filter in front of Glance's
``ContextMiddleware``. Never use it in a real deployment.
"""

import urllib.parse

from keystoneauth1 import loading
from oslo_config import cfg
import webob.dec

DEFAULTS = ('user', 'project', 'admin')
AUTHTOKEN_GROUP = 'keystone_authtoken'


def register_authtoken_options(conf=cfg.CONF):
    """Register ``[keystone_authtoken]`` as keystonemiddleware would.

    Glance reads ``auth_url`` there to proxy a distributed import to the
    node that staged the image. keystonemiddleware's ``authtoken``
    registers its options when imported and those of its ``auth_type``
    plugin (``password``: ``auth_url``...) when it starts; without it in
    the pipeline nobody would.
    """
    from keystonemiddleware import auth_token  # noqa: F401 (registers)
    plugin = conf[AUTHTOKEN_GROUP].auth_type
    if plugin:
        conf.register_opts(loading.get_auth_plugin_conf_options(plugin),
                           group=AUTHTOKEN_GROUP)


class FakeAuth(object):

    def __init__(self, app):
        self.app = app

    @classmethod
    def factory(cls, global_conf, **local_conf):
        register_authtoken_options()
        return cls

    @webob.dec.wsgify
    def __call__(self, req):
        # python-glanceclient URL-quotes the token it is given.
        token = urllib.parse.unquote(req.headers.get('X-Auth-Token', ''))
        parts = (token.split(':') + ['', '', ''])[:3]
        user, project, role = [part or default
                               for part, default in zip(parts, DEFAULTS)]
        req.headers.update({
            'X-User-Id': user,
            'X-Project-Id': project,
            'X-Tenant-Id': project,
            'X-Roles': role,
            'X-Identity-Status': 'Confirmed',
        })
        return req.get_response(self.app)
