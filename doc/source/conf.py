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

"""Sphinx configuration for the glance-xen-import guide."""

import importlib.util

project = 'glance-xen-import'
copyright = 'glance-xen-import developers'
author = 'glance-xen-import developers'

extensions = [
    # ``.. show-options:: glance_xen_import`` renders the [xen_ova] group
    # from the oslo.config.opts entry point.
    'oslo_config.sphinxext',
]

# openstackdocstheme when it is installed (doc/requirements.txt), the
# stock alabaster theme otherwise; both build with -W.
if importlib.util.find_spec('openstackdocstheme') is not None:
    extensions.append('openstackdocstheme')
    html_theme = 'openstackdocs'
    openstackdocs_repo_name = 'x/glance-xen-import'
    openstackdocs_use_storyboard = False
    openstackdocs_bug_project = 'glance-xen-import'
    openstackdocs_bug_tag = ''
    openstackdocs_auto_name = False
    openstackdocs_pdf_link = False
else:
    html_theme = 'alabaster'

master_doc = 'index'
source_suffix = '.rst'
pygments_style = 'native'
language = 'en'
html_static_path = []

# The console lexer gives up on shell comments with an apostrophe (as in
# the included _glance_config_snippets.rst.txt) and retries in relaxed
# mode; that retry is not a problem worth failing -W for.
suppress_warnings = ['misc.highlighting_failure']
