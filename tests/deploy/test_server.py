"""The OpenAI-compatible server, exercised with the real `openai` client over loopback."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import typer
from typer.testing import CliRunner

from tests.deploy.live import Running
from tunesmith.deploy.cli import flywheel_app
from tunesmith.deploy.flywheel import export_records
from tunesmith.deploy.merge import encode_chat, greedy, load_adapted
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server

KEY = "test-key"
CHAT = [{"role": "user", "content": "What is a lease?"}]


@pytest.fixture(scope="module")
def stack(deploy_env, tmp_path_factory):
    env = deploy_env
    root = tmp_path_factory.mktemp("serve")
    reg = Registry(root / "registry.db")
    v1, v2, v3 = (reg.add(r, "legal").id for r in env.runs)
    reg.set_alias("legal@prod", v1)
    settings = ServeSettings(registry=reg.path, api_key=KEY, max_tokens_cap=64, default_max_tokens=16,
                             max_body_bytes=20_000, queue_size=256, seed=0)
    srv = Server(settings)
    running = Running(create_app(settings, srv))
    yield {"env": env, "reg": reg, "ids": (v1, v2, v3), "srv": srv, "url": running.url, "settings": settings}
    running.stop()
    srv.engine.stop()


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack["url"] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _expected(stack, vid: str, messages, max_new_tokens: int) -> str:
    model, tok = load_adapted(stack["reg"].version(vid))
    return tok.decode(greedy(model, tok, encode_chat(tok, messages), max_new_tokens), skip_special_tokens=True)


def test_models_lists_base_versions_and_aliases(stack, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["base", *stack["ids"], "legal@prod"]


def test_two_versions_served_from_one_base(stack, client):
    v1, v2, _ = stack["ids"]
    answers = {}
    for vid in (v1, v2):
        r = client.chat.completions.create(model=vid, messages=CHAT, max_tokens=12)
        assert r.model == vid
        assert r.choices[0].message.content == _expected(stack, vid, CHAT, 12)
        answers[vid] = r.choices[0].message.content
    base = client.chat.completions.create(model="base", messages=CHAT, max_tokens=12).choices[0].message.content
    assert len({answers[v1], answers[v2], base}) == 3
    engine = stack["srv"].engine
    assert set(engine.loaded) >= {v1, v2}  # both adapters live in one PeftModel over one base
    assert engine.model.base_model.model is engine.base_model


def test_streaming_matches_plain(stack, client):
    v1 = stack["ids"][0]
    plain = client.chat.completions.create(model=v1, messages=CHAT, max_tokens=16).choices[0].message.content
    chunks = list(client.chat.completions.create(model=v1, messages=CHAT, max_tokens=16, stream=True))
    assert len(chunks) >= 3 and all(c.model == v1 for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = client.completions.create(model=v1, prompt="The quick brown", max_tokens=8, stream=True)
    assert "".join(c.choices[0].text for c in text) == \
        client.completions.create(model=v1, prompt="The quick brown", max_tokens=8).choices[0].text


def test_alias_split_and_rollback_on_next_request(stack, client):
    reg, (v1, v2, v3) = stack["reg"], stack["ids"]
    raw = client.chat.completions.with_raw_response
    resp = raw.create(model="legal@prod", messages=CHAT, max_tokens=2)
    assert resp.headers["x-tunesmith-version"] == v1 == resp.parse().model
    reg.set_alias("legal@prod", v2, split={v3: 0.5})
    seen = []
    for _ in range(24):
        r = raw.create(model="legal@prod", messages=CHAT, max_tokens=1)
        assert r.headers["x-tunesmith-version"] == r.parse().model
        seen.append(r.parse().model)
    assert set(seen) == {v2, v3}
    reg.rollback("legal@prod")
    assert client.chat.completions.create(model="legal@prod", messages=CHAT, max_tokens=1).model == v1


def test_rules_guard_reject_report_and_flywheel(stack, client, tmp_path):
    reg, (v1, _, v3) = stack["reg"], stack["ids"]
    reg.set_alias("legal@strict", v3, guard="reject")  # v3's run carries rules: answer must contain "please"
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="legal@strict", messages=CHAT, max_tokens=4)
    assert e.value.body["code"] == "rules_violation"
    reg.set_alias("legal@strict", v3, guard="report")
    r = client.chat.completions.create(model="legal@strict", messages=CHAT, max_tokens=4)
    assert r.model_extra["tunesmith"]["rules"] == {"polite": False}
    reg.set_alias("legal@strict", v3, guard="retry")
    r = client.chat.completions.create(model="legal@strict", messages=CHAT, max_tokens=4)
    assert r.model_extra["tunesmith"]["retries"] == stack["settings"].retries
    ok = client.chat.completions.create(model=v1, messages=[{"role": "user", "content": "Is a verbal contract binding?"}],
                                        max_tokens=4)
    fb = httpx.post(stack["url"] + "/v1/feedback", headers={"Authorization": f"Bearer {KEY}"},
                    json={"id": ok.id, "flag": True, "correction": "Often yes, please ask."})
    assert fb.status_code == 200
    missing = httpx.post(stack["url"] + "/v1/feedback", headers={"Authorization": f"Bearer {KEY}"},
                         json={"id": "chatcmpl-nope"})
    assert missing.status_code == 404
    out = tmp_path / "next.jsonl"
    app = typer.Typer()
    app.add_typer(flywheel_app, name="flywheel")
    res = CliRunner().invoke(app, ["flywheel", "export", "--failed", "-o", str(out), "--log", str(stack["srv"].log.path),
                                   "--json"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.stdout)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {rec["meta"]["request_id"]: rec for rec in records}
    assert by_id[ok.id]["messages"][-1] == {"role": "assistant", "content": "Often yes, please ask."}
    assert by_id[r.id]["meta"]["failed_rules"] == ["polite"]
    # the rejected, reported and retried answers of v3 plus the corrected one
    assert counts["records"] == 4 and counts["corrected"] == 1 and counts["needs_correction"] == 3
    every = tmp_path / "all.jsonl"
    export_records(stack["srv"].log.path, every, version=v1)
    everything = [json.loads(line) for line in every.read_text().splitlines()]  # without --failed: all traffic
    assert ok.id in {rec["meta"]["request_id"] for rec in everything}
    assert {rec["meta"]["version"] for rec in everything} == {v1}


@pytest.mark.parametrize(
    "headers, body, status, code",
    [
        ({"Authorization": "Bearer wrong"}, {"model": "base", "messages": CHAT}, 401, "invalid_api_key"),
        ({}, {"model": "base", "messages": CHAT}, 401, "invalid_api_key"),
        (None, {"model": "legal@nope", "messages": CHAT}, 404, "model_not_found"),
        (None, {"model": "../etc/passwd", "messages": CHAT}, 404, "model_not_found"),
        (None, {"model": "/tmp/x", "messages": CHAT}, 404, "model_not_found"),
        (None, "{not json", 400, "invalid_json"),
        (None, "[" * 5_000 + "]" * 5_000, 400, "invalid_json"),  # deeper than the JSON decoder's recursion limit
        (None, '{"model": "base", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400,
         "invalid_json"),
        (None, {"model": "base"}, 400, "invalid_request"),
        (None, {"model": "base", "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request"),
        (None, {"model": "base", "messages": CHAT, "max_tokens": 65}, 400, "max_tokens_too_large"),
        (None, {"model": "base", "messages": CHAT, "n": 2}, 400, "invalid_request"),
        (None, {"model": "base", "messages": [{"role": "user", "content": "x" * 30_000}]}, 413, "body_too_large"),
        (None, {"model": "base", "messages": [{"role": "user", "content": "x " * 5_000}]}, 400,
         "context_length_exceeded"),
    ],
)
def test_bad_requests_get_openai_errors(stack, headers, body, status, code):
    h = {"Authorization": f"Bearer {KEY}"} if headers is None else headers
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(stack["url"] + "/v1/chat/completions", headers={**h, "Content-Type": "application/json"},
                   content=content)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_unknown_routes_answer_in_the_openai_error_shape(stack):
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.get(stack["url"] + "/v1/nope", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(stack["url"] + "/v1/chat/completions", headers=h)
    assert r.status_code == 405 and r.json()["error"]["code"] == "bad_request" and "POST" in r.headers["allow"]


def test_version_of_another_base_is_unknown(stack, tmp_path):
    reg = stack["reg"]
    moved = reg.version(stack["ids"][0])
    # the same adapter registered as if trained on a different base: never loaded onto this one
    with reg._write() as db:
        db.execute("UPDATE versions SET base_model = ? WHERE id = ?", (str(tmp_path), moved.id))
    try:
        r = httpx.post(stack["url"] + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                       json={"model": moved.id, "prompt": "hi"})
        assert r.status_code == 404 and "another base model" in r.json()["error"]["message"]
    finally:
        with reg._write() as db:
            db.execute("UPDATE versions SET base_model = ? WHERE id = ?", (moved.base_model, moved.id))


def test_concurrency_no_5xx_and_identical_greedy_answers(stack):
    v1, v2, _ = stack["ids"]
    client = openai.OpenAI(base_url=stack["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)
    prompts = ["What is a lease?", "Is a verbal contract binding?", "What is 2 + 2?", "Explain billing."]

    def worker(i: int):
        out = []
        for j in range(4):
            model = (v1, v2, "base")[(i + j) % 3]
            msgs = [{"role": "user", "content": prompts[(i * 4 + j) % 4]}]
            try:
                r = client.chat.completions.create(model=model, messages=msgs, max_tokens=6)
                out.append((200, model, msgs[0]["content"], r.choices[0].message.content))
            except openai.APIStatusError as e:
                out.append((e.status_code, model, msgs[0]["content"], None))
        return out

    t0 = time.time()
    with ThreadPoolExecutor(32) as pool:
        results = [x for chunk in pool.map(worker, range(32)) for x in chunk]
    assert len(results) == 128 and all(status == 200 for status, *_ in results), \
        sorted({s for s, *_ in results})
    # batching must not change answers: every (model, prompt) pair got one and the same greedy text
    answers: dict[tuple[str, str], set[str]] = {}
    for _, model, prompt, text in results:
        answers.setdefault((model, prompt), set()).add(text)
    assert all(len(texts) == 1 for texts in answers.values()), answers
    assert time.time() - t0 < 60


def test_full_queue_answers_429_not_5xx(stack):
    settings = stack["settings"].model_copy(update={"queue_size": 2})
    srv = stack["srv"]
    old = srv.engine.settings
    srv.engine.settings = settings
    app = create_app(settings, srv)
    running = Running(app)
    try:
        barrier = threading.Barrier(12)

        def one(_):
            barrier.wait()
            return httpx.post(running.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                              json={"model": stack["ids"][0], "messages": CHAT, "max_tokens": 48}, timeout=60)

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(one, range(12)))
        statuses = [r.status_code for r in responses]
        assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
        busy = next(r for r in responses if r.status_code == 429).json()["error"]
        assert busy["type"] == "rate_limit_error" and busy["code"] == "queue_full"
    finally:
        srv.engine.settings = old
        running.stop()
