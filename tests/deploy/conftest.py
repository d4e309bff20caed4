"""Fixtures of the deploy tests. `reg`: a registry holding the deploy env's three runs as legal v1-v3 and one
version, 'gone', whose stored files were deleted behind its back (test_registry.py has its own, empty, `reg`)."""

from __future__ import annotations

import shutil

import pytest

from tunesmith.deploy.registry import Registry


@pytest.fixture(scope="module")
def reg(deploy_env, tmp_path_factory):
    env = deploy_env
    r = Registry(tmp_path_factory.mktemp("gone-registry") / "registry.db")
    for run in env.runs:
        r.add(run, "legal")
    r.add(env.runs[0], "gone")
    shutil.rmtree(r.versions("gone")[0].store)  # a version whose stored files were deleted behind its back
    return r
