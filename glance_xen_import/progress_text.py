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

"""Words and figures for conversion progress, shared by CLI and plugin.

Kept free of the converter and of oslo so that either front end can
import it cheaply.
"""

MB = 1000 * 1000
KiB = 1024

# The steps after the data is converted, as pipeline.convert tells its
# on_step callback.
STEP_INSPECT = 'inspect'
STEP_FIX_WINDOWS = 'fix-windows'
STEP_FIX_LINUX = 'fix-linux'
STEP_REINSPECT = 'reinspect'

STEP_TEXT = {
    STEP_INSPECT: 'inspecting the guest',
    STEP_FIX_WINDOWS: 'fixing the Windows guest for KVM',
    STEP_FIX_LINUX: 'fixing the Linux guest for KVM',
    STEP_REINSPECT: 'inspecting the fixed guest',
}


def unit_for(size):
    """The binary unit (name, bytes) that suits ``size``."""
    for name, factor in (('TiB', KiB ** 4), ('GiB', KiB ** 3),
                         ('MiB', KiB ** 2), ('KiB', KiB)):
        if size >= factor:
            return name, factor
    return 'B', 1


def human(size):
    name, factor = unit_for(size)
    if factor == 1:
        return '%d B' % size
    return '%.1f %s' % (size / factor, name)


def rate(done, seconds):
    """MB/s (decimal, as link speeds are quoted)."""
    return done / seconds / MB if seconds > 0 else 0.0


def describe(done, total, seconds):
    """The progress line: bytes read, percent when known, and the rate."""
    if total:
        # One unit for both figures, so successive lines compare.
        name, factor = unit_for(total)
        return 'converting, %.1f of %.1f %s read (%d%%), %.0f MB/s' % (
            done / factor, total / factor, name, done * 100 // total,
            rate(done, seconds))
    return 'converting, %s read, %.0f MB/s' % (human(done),
                                               rate(done, seconds))
