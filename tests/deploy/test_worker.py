"""The generation worker outlives whatever one request does: time out, hang up mid-stream, fail."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.deploy.live import Running
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.engine import Generation, GenerationError, Job, Outcome
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = [{"role": "user", "content": "What is a lease?"}]


@pytest.fixture(scope="module")
def served(deploy_env, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("worker") / "registry.db")
    vid = reg.add(deploy_env.runs[0], "legal").id
    settings = ServeSettings(registry=reg.path, api_key=KEY, timeout_s=1, max_tokens_cap=64, queue_size=32, seed=0)
    srv = Server(settings)
    running = Running(create_app(settings, srv))
    yield srv, running.url, vid
    running.stop()
    srv.engine.stop()


def _ask(url: str, model: str, **extra) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": model, "messages": CHAT, "max_tokens": 1, **extra})


def _idle(url: str) -> dict:
    """/health once the worker has nothing queued or running (it may still be finishing an abandoned job)."""
    deadline = time.time() + 20
    while (h := httpx.get(url + "/health", headers=AUTH).json())["queue_depth"]:
        assert time.time() < deadline, h
        time.sleep(0.05)
    return h


def _wrap_forward(monkeypatch, engine, wrapper) -> None:
    """Every forward pass of the served model goes through wrapper(real_forward, **inputs) (adapters too: peft
    calls the base model's forward)."""
    real = engine.base_model.forward
    monkeypatch.setattr(engine.base_model, "forward", lambda **inputs: wrapper(real, **inputs))


def _hold_generation(monkeypatch, engine) -> threading.Event:
    """The next forward pass waits (bounded) until the returned event is set, then runs as usual."""
    release, calls = threading.Event(), []

    def slow(real, **inputs):
        if not calls:
            calls.append(1)
            release.wait(timeout=20)
        return real(**inputs)

    _wrap_forward(monkeypatch, engine, slow)
    return release


def test_a_request_that_outlives_the_timeout_leaves_the_worker_alive(served, monkeypatch):
    srv, url, vid = served
    release = _hold_generation(monkeypatch, srv.engine)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(_ask, url, vid, max_tokens=64)  # held inside generate past the 1 s timeout
        time.sleep(0.3)
        queued = pool.submit(_ask, url, vid)  # times out while still queued behind it
        assert running.result().status_code == 503 and running.result().json()["error"]["code"] == "timeout"
        assert queued.result().status_code == 503
    release.set()  # the held generation now finishes for a request that is gone
    health = _idle(url)
    assert health["status"] == "ok" and health["worker_alive"] and health["loaded_adapters"] == [vid]
    r = _ask(url, vid)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 1


def test_a_client_that_hangs_up_mid_stream_leaves_the_worker_alive(served):
    _, url, vid = served
    with httpx.stream("POST", url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": vid, "messages": CHAT, "max_tokens": 64, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the first chunk arrived; closing the stream now drops the connection
    _idle(url)
    r = _ask(url, vid)
    assert r.status_code == 200, r.text


def test_a_stream_nobody_reads_stops_decoding(served, monkeypatch):
    engine = served[0].engine
    passes = []

    def counted(real, **inputs):
        passes.append(1)
        return real(**inputs)

    async def read_one_then_leave() -> None:
        prompt = engine.tok("What is a lease?")["input_ids"]
        # an end token that never comes: only the limit or the hang-up can end it
        events = engine.submit(Job(None, prompt, 400, 0.0, 1.0, None, [], stream=True, stop_ids=[-1])).events(20)
        assert isinstance(await anext(events), list)
        await events.aclose()  # what a hung-up client's response does

    _wrap_forward(monkeypatch, engine, counted)
    asyncio.run(read_one_then_leave())
    _idle(served[1])
    assert 1 <= len(passes) < 400  # dropped at the step after it was abandoned


def test_a_failing_generation_fails_only_its_request(served, monkeypatch):
    srv, url, vid = served
    calls = []

    def fails_once(real, **inputs):
        if not calls:
            calls.append(1)
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real(**inputs)

    _wrap_forward(monkeypatch, srv.engine, fails_once)
    r = _ask(url, vid)
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "generation_failed" and "RuntimeError: CUDA error: device-side assert" in err["message"]
    assert _ask(url, vid).status_code == 200


def test_a_stream_that_fails_before_its_first_token_is_a_5xx_and_after_it_an_error_event(served, monkeypatch):
    srv, url, vid = served
    lease = srv.engine.tok("lease")["input_ids"][0]
    calls = []

    def fails(real, **inputs):
        calls.append(1)
        if len(calls) in (1, 3):  # the first stream's prefill; the second stream's step after its first token
            raise RuntimeError("out of memory")
        out = real(**inputs)
        if len(calls) == 2:
            out.logits[:, -1, lease] = 1e4  # its first token is a visible word
        return out

    _wrap_forward(monkeypatch, srv.engine, fails)
    ask = {"model": vid, "messages": CHAT, "max_tokens": 8, "stream": True}
    r = httpx.post(url + "/v1/chat/completions", headers=AUTH, json=ask, timeout=30)
    assert r.status_code == 500 and r.json()["error"]["code"] == "generation_failed"
    with httpx.stream("POST", url + "/v1/chat/completions", headers=AUTH, json=ask, timeout=30) as r:
        assert r.status_code == 200
        events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: ")]
    assert events[0]["choices"][0]["delta"]["content"] == srv.engine.tok.decode([lease])
    assert events[-1]["error"]["code"] == "generation_failed" and "out of memory" in events[-1]["error"]["message"]
    assert _ask(url, vid).status_code == 200


def test_an_adapter_that_fails_to_load_is_named_without_server_paths(served, deploy_env, tmp_path):
    srv, url, vid = served
    before = _ask(url, vid, max_tokens=8).json()["choices"][0]["message"]["content"]
    run = shutil.copytree(deploy_env.runs[1], tmp_path / "broken-run")
    broken = srv.registry.add(run, "broken").id
    (srv.registry.version(broken).adapter_dir / "adapter_model.safetensors").write_bytes(b"not safetensors")
    r = _ask(url, broken)
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "generation_failed" and f"loading the adapter of {broken} failed" in err["message"]
    assert str(tmp_path) not in err["message"]
    assert broken not in srv.engine.loaded_adapters()
    after = _ask(url, vid, max_tokens=8)  # the half-loaded adapter left nothing behind that changes answers
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == before


def test_one_bad_job_in_a_batch_fails_alone(served, monkeypatch):
    """Rows that joined together fail together in their forward pass; each is then decoded alone, so only the bad
    one fails and the others, and the row already running, still get their answers."""
    engine = served[0].engine
    prompt = engine.tok("What is a lease?")["input_ids"]
    poison = max(prompt) + 1  # a token only the bad job's prompt holds
    sizes = []
    entered, release = threading.Event(), threading.Event()

    def poisoned(real, **inputs):
        entered.set()
        release.wait(timeout=20)  # the first pass holds the worker while the rest queue up and join together
        ids = inputs["input_ids"]
        sizes.append(ids.shape[0])
        if (ids == poison).any():
            raise ValueError("poisoned")
        return real(**inputs)

    async def answer(gen: Generation) -> Outcome | str:
        try:
            return [e async for e in gen.events(20)][-1]
        except GenerationError as e:
            return str(e)

    async def scenario() -> list:
        never = [-1]  # end tokens that never come: every answer runs to its limit
        plug = engine.submit(Job(None, prompt, 4, 0.0, 1.0, None, [], stop_ids=never))
        assert await asyncio.to_thread(entered.wait, 20)
        burst = [engine.submit(Job(None, [*prompt, poison] if i == 0 else prompt, 2, 0.0, 1.0, None, [],
                                   stop_ids=never)) for i in range(6)]
        release.set()
        return await asyncio.gather(*map(answer, [plug, *burst]))

    _wrap_forward(monkeypatch, engine, poisoned)
    plug, bad, *good = asyncio.run(scenario())
    assert len(plug.ids) == 4 and bad == "ValueError: poisoned" and all(len(o.ids) == 2 for o in good)
    assert sizes[:4] == [1, 1, 6, 1]  # prefill, a step, the six joining in one pass, then each alone


def test_a_request_joins_a_running_batch_and_leaves_it_first(served, monkeypatch):
    """Continuous batching: a short request that arrives while a long one decodes is answered long before it."""
    engine = served[0].engine
    prompt = engine.tok("What is a lease?")["input_ids"]
    widths, order = [], []

    def seen(real, **inputs):
        widths.append(inputs["input_ids"].shape[0])
        return real(**inputs)

    async def finish(name: str, gen: Generation) -> None:
        [e async for e in gen.events(20)]
        order.append(name)

    async def scenario() -> None:
        long = engine.submit(Job(None, prompt, 40, 0.0, 1.0, None, [], stop_ids=[-1]))
        waiting = asyncio.ensure_future(finish("long", long))
        while len(widths) < 5:  # the long one is a few steps in
            await asyncio.sleep(0.01)
        short = engine.submit(Job(None, prompt, 3, 0.0, 1.0, None, [], stop_ids=[-1]))
        await asyncio.gather(waiting, finish("short", short))

    _wrap_forward(monkeypatch, engine, seen)
    asyncio.run(scenario())
    assert order == ["short", "long"]
    assert 2 in widths and widths[-1] == 1  # they shared steps; the long one finished alone
    assert len(widths) <= 40 + 2  # one pass per step, plus the short one's prefill


def test_a_dead_worker_is_not_hidden(deploy_env, tmp_path):
    reg = Registry(tmp_path / "registry.db")
    vid = reg.add(deploy_env.runs[0], "legal").id
    settings = ServeSettings(registry=reg.path)
    srv = Server(settings)
    app = create_app(settings, srv)
    from fastapi.testclient import TestClient

    def broken():
        raise SystemExit("a bug in the worker loop")  # outside any one job's try block

    srv.engine._admit = broken
    srv.engine.jobs.put(("wake", "up"))
    srv.engine._thread.join(timeout=10)
    with TestClient(app) as client:
        h = client.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "dead" and not h.json()["worker_alive"]
        assert h.json()["error"] == "SystemExit: a bug in the worker loop"
        r = client.get("/v1/models")
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_dead"
        r = client.post("/v1/chat/completions", json={"model": vid, "messages": CHAT, "max_tokens": 1})
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_dead"  # at once, not after a timeout


def test_health_names_loaded_adapters_only_to_key_holders(served):
    _, url, _ = served
    assert "loaded_adapters" in httpx.get(url + "/health", headers=AUTH).json()
    anonymous = httpx.get(url + "/health")
    assert anonymous.status_code == 200 and anonymous.json()["worker_alive"]
    assert "loaded_adapters" not in anonymous.json()


def test_64_clients_get_answers_or_429_and_the_worker_lives(served, monkeypatch):
    srv, _, vid = served
    settings = srv.settings.model_copy(update={"timeout_s": 120})  # a loaded CI box must not turn into 503s
    running = Running(create_app(settings, srv))
    release = _hold_generation(monkeypatch, srv.engine)  # the worker holds its first batch while all 64 arrive
    try:
        with ThreadPoolExecutor(64) as pool:
            futures = [pool.submit(_ask, running.url, (vid, "base")[i % 2], max_tokens=4) for i in range(64)]
            deadline = time.time() + 60
            while sum(f.done() for f in futures) < 64 - settings.queue_size:  # the ones beyond the queue
                assert time.time() < deadline
                time.sleep(0.05)
            release.set()
            statuses = [f.result().status_code for f in futures]
        assert statuses.count(429) == 64 - settings.queue_size and statuses.count(200) == settings.queue_size
        assert _idle(running.url)["worker_alive"]
    finally:
        release.set()
        running.stop()


def test_serve_timeout_option_reaches_the_serving_layer(deploy_env, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from tunesmith.cli import app

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: served.append(a))
    res = CliRunner().invoke(app, ["serve", "--base", str(deploy_env.base), "--registry", str(tmp_path / "r.db"),
                                   "--timeout", "7.5"])
    assert res.exit_code == 0, res.output
    try:
        assert served[0].state.serving.settings.timeout_s == 7.5
    finally:
        served[0].state.server.engine.stop()
