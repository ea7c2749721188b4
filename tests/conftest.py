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

"""Shared pytest setup: hypothesis profiles and the input corpus."""

import os

import hypothesis
import pytest

from tests import ovakit

# 'ci' (set by tox): enough examples to matter, reproducible, no deadline
# (timing must never fail a test). 'dev': quicker local runs.
_QUIET = [hypothesis.HealthCheck.too_slow,
          hypothesis.HealthCheck.data_too_large,
          hypothesis.HealthCheck.function_scoped_fixture]
hypothesis.settings.register_profile(
    'ci', max_examples=200, deadline=None, derandomize=True, database=None,
    print_blob=True, suppress_health_check=_QUIET)
hypothesis.settings.register_profile(
    'dev', max_examples=50, deadline=None, suppress_health_check=_QUIET)
hypothesis.settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'dev'))


@pytest.fixture(scope='session')
def corpus(tmp_path_factory):
    """RAW disks and VHDs built once per run (see ovakit.Corpus)."""
    ovakit.require_tools('qemu-img', 'qemu-io', 'sfdisk', 'mkfs.ext4')
    return ovakit.Corpus(str(tmp_path_factory.mktemp('corpus')))


@pytest.fixture
def ova(corpus, tmp_path):
    """tmp_path/vm.ova: the corpus' GPT disk as a one-disk XenCenter OVA."""
    path = str(tmp_path / 'vm.ova')
    ovakit.make_ova(path, [ovakit.OvaDisk(corpus.vhd('caml', 'gpt16'))],
                    name='vm')
    return path
