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

import webob.dec

DEFAULTS = ('user', 'project', 'admin')


class FakeAuth(object):

    def __init__(self, app):
        self.app = app

    @classmethod
    def factory(cls, global_conf, **local_conf):
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
