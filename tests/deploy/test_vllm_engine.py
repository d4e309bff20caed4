"""The vLLM engine behind tunesmith's front, against a fake vLLM child (fake_vllm.py): readiness, lazy
adapter loading, alias changes at the next request, a crash and its restart, no orphan after stop."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import openai
import pytest

from tests.deploy.live import Running
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server
from tunesmith.deploy.serve.vllm_child import ChildStartError
from tunesmith.deploy.serve.vllm_engine import VllmEngine, VllmOptions, find_command

KEY = "front-key"
CHAT = [{"role": "user", "content": "What is a lease?"}]
FAKE = [sys.executable, str(Path(__file__).with_name("fake_vllm.py"))]


def _records(path: Path, kind: str) -> list[dict]:
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def _until(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def stack(deploy_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-fake")
    reg = Registry(root / "registry.db")
    v1, v2, v3 = (reg.add(r, "legal").id for r in deploy_env.runs)
    reg.set_alias("legal@prod", v1)
    record = root / "fake.jsonl"
    os.environ.update(FAKE_VLLM_RECORD=str(record), FAKE_VLLM_DELAY="1.5")
    settings = ServeSettings(registry=reg.path, api_key=KEY, max_tokens_cap=64, default_max_tokens=16, seed=0)
    options = VllmOptions(command=FAKE, log_path=root / "vllm.log", max_restarts=1)
    started = time.monotonic()
    srv = Server(settings, make_engine=partial(VllmEngine, options=options))
    startup_s = time.monotonic() - started
    running = Running(create_app(settings, srv))
    client = openai.OpenAI(base_url=running.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    yield {"reg": reg, "ids": (v1, v2, v3), "srv": srv, "url": running.url, "client": client, "record": record,
           "startup_s": startup_s}
    running.stop()
    srv.engine.stop()
    os.environ.pop("FAKE_VLLM_DELAY")


def test_start_waits_for_readiness_and_enables_runtime_lora(stack):
    assert stack["startup_s"] >= 1.5  # the fake listens only after its delay; start() waited for /health
    start = _records(stack["record"], "start")[0]
    argv = start["argv"]
    assert "--enable-lora" in argv and argv[argv.index("--max-lora-rank") + 1] == "8"  # rank 4 -> vLLM's least
    assert argv[argv.index("--dtype") + 1] == "float32"  # no GPU here: vLLM would downcast to bf16
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "--lora-modules" not in argv
    assert start["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert start["env"]["VLLM_CPU_KVCACHE_SPACE"] and start["env"]["VLLM_API_KEY"]
    r = httpx.get(stack["url"] + "/health")
    assert r.status_code == 200 and r.json()["engine"]["state"] == "ready"
    assert r.json()["status"] == "ok" and r.json()["engine"]["pid"] == start["pid"]


def test_child_is_reachable_only_with_its_own_key(stack):
    child = stack["srv"].engine.child
    assert httpx.post(child.url + "/v1/completions", json={}).status_code == 401
    r = stack["client"].with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        r.models.list()


def test_adapter_loads_on_first_request_and_answers_under_its_version(stack):
    v1 = stack["ids"][0]
    client, record = stack["client"], stack["record"]
    assert stack["srv"].engine.loaded_adapters() == []  # nothing loaded until asked for
    r = client.chat.completions.create(model="legal@prod", messages=CHAT, max_tokens=12)
    assert r.model == v1 and r.choices[0].finish_reason == "stop"
    loads = _records(record, "load")
    assert [ld["lora_name"] for ld in loads] == [v1]
    assert loads[0]["lora_path"] == str(stack["reg"].version(v1).adapter_dir)
    body = _records(record, "completion")[-1]["body"]
    assert body["model"] == v1 and body["ignore_eos"] is True
    assert body["stop_token_ids"] == stack["srv"].chat_format(stack["reg"].version(v1))[1]
    assert isinstance(body["prompt"], list) and body["temperature"] == 0 and body["max_tokens"] == 12
    client.chat.completions.create(model="legal@prod", messages=CHAT, max_tokens=12)
    assert len(_records(record, "load")) == 1  # loaded once
    assert stack["srv"].engine.loaded_adapters() == [v1]


def test_alias_change_and_rollback_route_at_the_next_request(stack):
    v1, v2, _ = stack["ids"]
    reg, client = stack["reg"], stack["client"]

    def answer() -> tuple[str, str]:
        r = client.chat.completions.with_raw_response.create(model="legal@prod", messages=CHAT, max_tokens=8)
        return r.headers["X-Tunesmith-Version"], r.parse().choices[0].message.content

    before = answer()
    reg.set_alias("legal@prod", v2)
    after = answer()
    assert after[0] == v2 and after[1] != before[1]  # another adapter's answer, same running child
    assert _records(stack["record"], "completion")[-1]["body"]["model"] == v2
    reg.rollback("legal@prod")
    assert answer() == before
    assert len(_records(stack["record"], "start")) == 1  # no restart


def test_stream_matches_plain_and_base_goes_to_the_base_model(stack):
    v1, client = stack["ids"][0], stack["client"]
    plain = client.chat.completions.create(model=v1, messages=CHAT, max_tokens=12).choices[0].message.content
    chunks = list(client.chat.completions.create(model=v1, messages=CHAT, max_tokens=12, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    r = client.completions.create(model="base", prompt="The quick", max_tokens=3)
    assert r.choices[0].finish_reason == "length"  # 3 of the fake's 6 tokens: no stop token reached
    assert _records(stack["record"], "completion")[-1]["body"]["model"] == "base"


def test_version_vllm_cannot_load_is_refused_by_name(stack, deploy_env):
    reg = stack["reg"]
    vid = reg.add(deploy_env.runs[0], "embed").id
    cfg_path = reg.version(vid).adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "modules_to_save": ["embed_tokens"]}))
    with pytest.raises(openai.BadRequestError) as e:
        stack["client"].chat.completions.create(model=vid, messages=CHAT, max_tokens=4)
    assert vid in str(e.value) and "embedding" in str(e.value)
    assert vid not in [ld["lora_name"] for ld in _records(stack["record"], "load")]


def test_version_over_the_running_max_lora_rank_is_refused_by_name(stack, deploy_env, tmp_path):
    from tests.helpers import make_run

    vid = stack["reg"].add(make_run(tmp_path, deploy_env.base, "wide", seed=7, rank=16), "wide").id
    with pytest.raises(openai.BadRequestError) as e:
        stack["client"].chat.completions.create(model=vid, messages=CHAT, max_tokens=4)
    assert f"version {vid} has LoRA rank 16, over the running vLLM's --max-lora-rank 8" in str(e.value)


def test_crash_is_reported_then_the_child_restarts(stack):
    engine, client, v1 = stack["srv"].engine, stack["client"], stack["ids"][0]
    pid = engine.child.proc.pid
    os.killpg(pid, signal.SIGKILL)  # as an out-of-memory kill would
    _until(lambda: httpx.get(stack["url"] + "/health").status_code == 503, 10)
    health = httpx.get(stack["url"] + "/health").json()
    assert health["status"] == "dead" and "was killed by SIGKILL" in health["error"] and "restarting" in health["error"]
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="legal@prod", messages=CHAT, max_tokens=4)
    assert e.value.status_code == 503 and "vLLM" in str(e.value) and str(pid) in str(e.value)
    _until(lambda: httpx.get(stack["url"] + "/health").status_code == 200, 60)
    assert engine.child.restarts == 1 and engine.child.proc.pid != pid and engine.loaded_adapters() == []
    r = client.chat.completions.create(model="legal@prod", messages=CHAT, max_tokens=4)
    assert r.model == v1
    assert [ld["pid"] for ld in _records(stack["record"], "load")][-1] == engine.child.proc.pid  # loaded again


def test_stop_leaves_no_child(deploy_env, tmp_path, monkeypatch):
    reg = Registry(tmp_path / "r.db")
    reg.add(deploy_env.runs[0], "legal")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(tmp_path / "fake.jsonl"))
    engine = VllmEngine(str(deploy_env.base), str(deploy_env.base), ServeSettings(registry=reg.path),
                        VllmOptions(command=FAKE, log_path=tmp_path / "vllm.log"))
    pid = engine.child.proc.pid
    assert not _gone(pid)
    engine.stop()
    assert _gone(pid) and engine.health()["engine"]["state"] == "stopped"


def test_a_child_that_cannot_start_is_reported_with_its_log(deploy_env, tmp_path, monkeypatch):
    reg = Registry(tmp_path / "r.db")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(tmp_path / "fake.jsonl"))
    monkeypatch.setenv("FAKE_VLLM_EXIT", "3")
    with pytest.raises(ChildStartError, match="exited with code 3 while starting(.|\n)*refusing to start"):
        VllmEngine(str(deploy_env.base), str(deploy_env.base), ServeSettings(registry=reg.path),
                   VllmOptions(command=FAKE, log_path=tmp_path / "vllm.log"))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_serve_command_fronts_the_child_and_stopping_it_stops_vllm(deploy_env, tmp_path, stop):
    import shlex
    import subprocess

    from tunesmith.deploy.serve.vllm_child import free_port

    reg = Registry(tmp_path / "r.db")
    v1 = reg.add(deploy_env.runs[0], "legal").id
    reg.set_alias("legal@prod", v1)
    port, record = free_port(), tmp_path / "fake.jsonl"
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "FAKE_VLLM_RECORD": str(record), "TUNESMITH_VLLM_COMMAND": shlex.join(FAKE),
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", "from tunesmith.cli import app; app()", "serve", "--engine", "vllm",
                             "--port", str(port), "--api-key", KEY, "--registry", str(reg.path)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return httpx.get(url + "/health").status_code == 200
            except httpx.TransportError:
                return False

        _until(up, 120)
        r = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                       json={"model": "legal@prod", "messages": CHAT, "max_tokens": 4}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == v1
        child = _records(record, "start")[0]["pid"]
        assert not _gone(child)
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=60)
    said = proc.stderr.read()
    assert "vLLM ready in" in said
    assert said.rstrip().endswith("stopped")  # shut down through serve's own stop, not only the child's
    if stop == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, said  # what a killed process reports, to a supervisor
    # the start-up parity check ran the adapter here against the child, whose made-up answers it caught
    assert f"warning: start-up parity, {v1}: 0/3 answers identical to the adapter's (f32)" in said
    _until(lambda: _gone(child), 10)


def test_a_child_that_cannot_generate_fails_the_start(deploy_env, tmp_path, monkeypatch):
    reg = Registry(tmp_path / "r.db")
    record = tmp_path / "fake.jsonl"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.setenv("FAKE_VLLM_CANNOT_RUN", "1")
    with pytest.raises(ChildStartError, match="could not generate a token"):
        VllmEngine(str(deploy_env.base), str(deploy_env.base), ServeSettings(registry=reg.path),
                   VllmOptions(command=FAKE, log_path=tmp_path / "vllm.log"))
    _until(lambda: _gone(_records(record, "start")[0]["pid"]), 10)


def test_serve_without_vllm_says_how_to_get_it(deploy_env, tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from tunesmith.cli import app

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this Python")
    monkeypatch.delenv("TUNESMITH_VLLM_COMMAND", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))  # no .venv-vllm beside it
    reg = Registry(tmp_path / "r.db")
    reg.add(deploy_env.runs[0], "legal")
    res = CliRunner().invoke(app, ["serve", "--engine", "vllm", "--registry", str(reg.path)])
    assert res.exit_code == 2 and "--with-vllm" in res.output and "--vllm-command" in res.output


def test_vllm_is_found_in_the_venv_install_sh_makes_beside_this_one(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this Python: it would be found first")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))
    python = tmp_path / ".venv-vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    assert find_command() is None  # a venv without vLLM in it is not vLLM
    package = tmp_path / ".venv-vllm" / "lib" / "python3.11" / "site-packages" / "vllm"
    package.mkdir(parents=True)
    (package / "__init__.py").touch()
    assert find_command() == [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    assert find_command("/opt/v/bin/python -m vllm.entrypoints.openai.api_server --seed 1")[-2:] == ["--seed", "1"]
