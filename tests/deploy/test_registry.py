"""Registry: version numbering, lineage, aliases, splits, rollback, removal, concurrency, CLI, vLLM command."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tunesmith.deploy.cli import registry_app, serve
from tunesmith.deploy.registry import Registry, RegistryError
from tunesmith.deploy.vllm import vllm_command

DAY = datetime(2026, 11, 22, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def env(deploy_env):
    return deploy_env


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "reg" / "registry.db")


def test_add_numbers_versions_and_records_lineage(env, reg):
    v1 = reg.add(env.runs[0], "legal", today=DAY)
    v2 = reg.add(env.runs[1], "legal", today=DAY)
    other = reg.add(env.runs[0], "tickets", today=DAY)
    assert [v1.id, v2.id, other.id] == ["legal-v1-20261122", "legal-v2-20261122", "tickets-v1-20261122"]
    lin = v2.lineage
    assert lin["run_name"] == "legal-2"
    assert lin["base_model"] == str(env.base)
    assert lin["data_sha256"] == {"train": "a" * 64, "test": "c" * 64}
    assert lin["eval"]["metrics"] == {"compliance": 0.9}
    assert lin["gate"] == {"passed": True, "reason": "tuned beats base"}
    assert lin["final_train_loss"] == 0.75 and lin["lora_rank"] == 4
    assert reg.versions("legal") == [reg.version(v1.id), reg.version(v2.id)]
    # the third run carries a rules file, which is copied into the lineage
    v3 = reg.add(env.runs[2], "legal", today=DAY)
    assert "please" in v3.rules_yaml


def test_store_survives_deleting_the_run(env, reg, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(env.runs[0], run)
    v = reg.add(run, "legal")
    shutil.rmtree(run)
    assert (v.adapter_dir / "adapter_model.safetensors").is_file()
    assert v.adapter_dir.parent == reg.path.with_name("registry-store")
    assert not any(p.name.startswith(".incoming") for p in v.adapter_dir.parent.iterdir())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: (r / "run.json").write_text(json.dumps({**json.loads((r / "run.json").read_text()),
                                                           "status": "running"})), "status is 'running'"),
        (lambda r: (r / "adapter" / "adapter_model.safetensors").unlink(), "safetensors only"),
        (lambda r: (r / "run.json").write_text("{not json"), r"not valid JSON \(line 1"),
        (lambda r: (r / "run.json").unlink(), "not a run directory"),
        (lambda r: (r / "run.json").write_text(json.dumps({**json.loads((r / "run.json").read_text()),
                                                           "train_seconds": "fast"})), r"run.json: train_seconds: "),
        (lambda r: (r / "run.json").write_text(json.dumps({**json.loads((r / "run.json").read_text()),
                                                           "schema_version": 2})), "schema_version 2 is newer"),
    ],
)
def test_add_refuses_unusable_runs(env, reg, tmp_path, mutate, message):
    run = tmp_path / "bad"
    shutil.copytree(env.runs[0], run)
    mutate(run)
    with pytest.raises(RegistryError, match=message):
        reg.add(run, "legal")
    assert reg.versions() == []


@pytest.mark.parametrize("text, message", [("{not json", r"results.json: not valid JSON \(line 1"),
                                           ('{"task": "chat", "systems": {"tuned": 0.9}}', "results.json: systems.tuned: ")])
def test_an_unreadable_evaluation_is_recorded_naming_the_file(env, reg, tmp_path, text, message):
    run = tmp_path / "run"
    shutil.copytree(env.runs[0], run)
    (run / "eval" / "results.json").write_text(text)
    lineage = reg.add(run, "legal").lineage
    assert re.search(message, lineage["eval"]["error"]) and lineage["gate"] is None


def test_alias_split_rollback_and_remove(env, reg):
    v1, v2, v3 = (reg.add(r, "legal", today=DAY).id for r in env.runs)
    reg.set_alias("legal@prod", v1)
    reg.set_alias("legal@prod", v2, split={v3: 0.1})
    assert reg.alias("legal@prod").targets == [(v2, 0.9), (v3, 0.1)]
    with pytest.raises(RegistryError, match="still served by alias legal@prod"):
        reg.remove(v3)
    reg.set_alias("legal@prod", v3)
    # rollback walks back through the chain of replaced targets; the history keeps every step
    assert reg.rollback("legal@prod").targets == [(v2, 0.9), (v3, 0.1)]
    assert reg.rollback("legal@prod").targets == [(v1, 1.0)]
    with pytest.raises(RegistryError, match="no earlier target"):
        reg.rollback("legal@prod")
    hist = reg.alias("legal@prod").history
    assert [h["action"] for h in hist] == ["set", "set", "set", "rollback", "rollback"]
    reg.remove(v3)
    assert reg.find_version(v3) is None and reg.versions("legal")[-1].id == v2


@pytest.mark.parametrize(
    "alias, target, split, message",
    [
        ("legal", "V1", None, "expected NAME@LABEL"),
        ("legal@prod", "legal-v9-20261122", None, "no version 'legal-v9-20261122'"),
        ("legal@prod", "V1", {"V2": 1.0}, "split weights"),
        ("legal@prod", "V1", {"V1": 0.2}, "both the main target and a split"),
    ],
)
def test_alias_refuses_bad_targets(env, reg, alias, target, split, message):
    ids = {"V1": reg.add(env.runs[0], "legal", today=DAY).id, "V2": reg.add(env.runs[1], "legal", today=DAY).id}
    target = ids.get(target, target)
    split = {ids.get(k, k): w for k, w in (split or {}).items()}
    with pytest.raises(RegistryError, match=message):
        reg.set_alias(alias, target, split)


def test_rollback_refuses_a_removed_version(env, reg):
    v1, v2 = (reg.add(r, "legal").id for r in env.runs[:2])
    reg.set_alias("legal@prod", v1)
    reg.set_alias("legal@prod", v2)
    reg.remove(v1)
    with pytest.raises(RegistryError, match=f"version {v1} was removed"):
        reg.rollback("legal@prod")


_ADDER = """
import sys
from tunesmith.deploy.registry import Registry
reg = Registry(sys.argv[1])
for _ in range(4):
    reg.add(sys.argv[2], "legal")
"""


def test_concurrent_adds_from_processes_get_distinct_numbers(env, reg):
    procs = [subprocess.Popen([sys.executable, "-c", _ADDER, str(reg.path), str(env.runs[0])]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    numbers = sorted(v.number for v in reg.versions("legal"))
    assert numbers == list(range(1, 13))
    assert len({v.store for v in reg.versions()}) == 12


def _cli():
    app = typer.Typer()
    app.add_typer(registry_app, name="registry")
    app.command("serve")(serve)
    return app


def test_cli_round_trip_json(env, tmp_path):
    db = str(tmp_path / "r.db")
    runner = CliRunner()

    def run(*args):
        res = runner.invoke(_cli(), [*args, "--registry", db, "--json"])
        return res.exit_code, (json.loads(res.stdout) if res.exit_code == 0 else res.output)

    code, v1 = run("registry", "add", str(env.runs[0]), "--name", "legal")
    assert code == 0 and v1["id"].startswith("legal-v1-")
    code, v2 = run("registry", "add", str(env.runs[1]), "--name", "legal")
    code, a = run("registry", "alias", "legal@prod", v1["id"], "--split", f"{v2['id']}=0.25", "--guard", "report")
    assert code == 0 and a["targets"] == [{"version": v1["id"], "weight": 0.75}, {"version": v2["id"], "weight": 0.25}]
    assert a["guard"] == "report"
    code, listing = run("registry", "list")
    assert [v["id"] for v in listing["versions"]] == [v1["id"], v2["id"]] and listing["aliases"][0]["alias"] == "legal@prod"
    code, shown = run("registry", "show", v2["id"])
    assert shown["lineage"]["run_name"] == "legal-2"
    code, msg = run("registry", "remove", v1["id"])
    assert code == 2 and "still served by alias legal@prod" in msg
    code, msg = run("registry", "alias", "legal@prod", v1["id"], "--split", "oops")
    assert code == 2 and "VERSION=FRACTION" in msg
    code, msg = run("registry", "add", str(tmp_path), "--name", "legal")
    assert code == 2 and "no run.json" in msg and "Traceback" not in msg


def test_removed_version_numbers_are_never_reused(deploy_env, tmp_path):
    """Reusing legal-v3's id for a new adapter would make a rollback silently serve the wrong model."""
    from datetime import datetime

    from tunesmith.deploy.registry import RegistryError

    env = deploy_env
    r = Registry(tmp_path / "r.db")
    day = datetime(2026, 11, 22)
    v1, v2, v3 = (r.add(run, "legal", today=day).id for run in env.runs)
    r.set_alias("legal@prod", v3)
    r.set_alias("legal@prod", v2)
    r.remove(v3)
    again = r.add(env.runs[0], "legal", today=day)
    assert again.id == "legal-v4-20261122" and again.number == 4
    with pytest.raises(RegistryError, match="version legal-v3-20261122 was removed"):
        r.rollback("legal@prod")
    assert r.alias("legal@prod").targets == [(v2, 1.0)]


def test_vllm_command_parses_with_shlex(env, tmp_path):
    reg = Registry(tmp_path / "r.db")
    v1, v2 = (reg.add(r, "legal", today=DAY).id for r in env.runs[:2])
    reg.set_alias("legal@prod", v1, split={v2: 0.1})
    res = CliRunner().invoke(_cli(), ["serve", "--engine", "vllm", "--print", "--port", "9000",
                                      "--registry", str(reg.path)])
    assert res.exit_code == 0, res.output
    argv = shlex.split(res.stdout.strip())
    assert argv[:3] == ["vllm", "serve", str(Path(env.base).resolve())]
    assert argv[argv.index("--max-lora-rank") + 1] == "8"  # rank 4 rounds up to vLLM's smallest allowed rank
    assert argv[argv.index("--port") + 1] == "9000" and "--enable-lora" in argv
    modules = dict(m.split("=", 1) for m in argv[argv.index("--lora-modules") + 1:])
    store = reg.path.with_name("r-store")
    assert modules == {"legal@prod": str(store / v1), v1: str(store / v1), v2: str(store / v2)}
    assert "splits traffic" in res.stderr
    assert argv[argv.index("--max-loras") + 1] == "3" and "--api-key" not in argv
    res = CliRunner().invoke(_cli(), ["serve", "--engine", "vllm", "--print", "--api-key", "s3cret",
                                      "--registry", str(reg.path)])
    keyed = shlex.split(res.stdout.strip())
    assert keyed[keyed.index("--api-key") + 1] == "s3cret"
    assert vllm_command(reg)[0] == argv[:argv.index("--host") + 2] + ["--port", "8000"] + argv[argv.index("--port") + 2:]
