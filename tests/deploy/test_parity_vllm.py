"""export verify with a real vLLM child on the tiny model: its greedy answers are token-identical to the adapter's.
Skips as tests/deploy/test_vllm_real.py does when no vLLM can be started (TUNESMITH_VLLM_COMMAND unset and no vLLM
in this Python)."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.deploy.test_vllm_real import _vllm_command
from tests.helpers import deploy_cli, make_run
from tunesmith.demo.tiny import build_tiny_model
from tunesmith.deploy.registry import Registry

pytestmark = pytest.mark.slow


def test_vllm_answers_like_the_adapter(tmp_path):
    command = _vllm_command()
    # vLLM's CPU attention kernels need heads at least 32 wide (deploy_env's tiny model has 16)
    base = build_tiny_model(tmp_path / "base", hidden_size=128, num_heads=4, num_kv_heads=2)
    reg = Registry(tmp_path / "registry.db")
    v = reg.add(make_run(tmp_path / "runs", base, "legal-1", seed=1, rules=True), "legal")
    reg.set_alias("legal@prod", v.id)
    res = deploy_cli("export", "verify", "legal@prod", "--runtimes", "vllm", "--n", "8", "--max-tokens", "16",
                     "--vllm-command", shlex.join(command), "--registry", str(reg.path), "--json")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["runtimes"]
    assert row["runtime"] == "vllm" and row["weight_type"] == "f32"
    assert (row["identical"], row["same_stop"], row["prompts"]) == (8, 8, 8)
    assert row["compliance"] == row["adapter_compliance"] is not None
