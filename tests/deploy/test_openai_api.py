"""The server's OpenAI-compatible API at its edges: default max_tokens under a low cap and near the context end,
empty stop strings, huge seeds, usage chunks, features it lacks, a version whose files are gone."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.helpers import version_id as _vid
from tunesmith.deploy.server import Server, ServeSettings, create_app


KEY = "k3y"
CHAT = [{"role": "user", "content": "What is a lease?"}]


@pytest.fixture(scope="module")
def api(reg):
    # a cap (8) below the default new-token limit (16): requests naming no max_tokens must still work
    settings = ServeSettings(registry=reg.path, api_key=KEY, max_tokens_cap=8, default_max_tokens=16, seed=0)
    srv = Server(settings)
    with TestClient(create_app(settings, srv)) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client
    srv.engine.stop()


def test_default_max_tokens_is_capped_not_refused(api, reg):
    r = api.post("/v1/chat/completions", json={"model": _vid(reg, "legal"), "messages": CHAT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] <= 8
    if body["choices"][0]["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 8
    r = api.post("/v1/chat/completions", json={"model": _vid(reg, "legal"), "messages": CHAT, "max_tokens": 9})
    assert r.status_code == 400 and r.json()["error"]["code"] == "max_tokens_too_large"


def test_empty_stop_strings_are_ignored(api, reg):
    ask = {"model": _vid(reg, "legal", 2), "messages": CHAT, "max_tokens": 6}
    plain = api.post("/v1/chat/completions", json=ask).json()
    stopped = api.post("/v1/chat/completions", json={**ask, "stop": ["", ""]}).json()
    assert stopped["choices"][0]["message"] == plain["choices"][0]["message"]
    assert stopped["usage"] == plain["usage"] and stopped["choices"][0]["finish_reason"] == \
        plain["choices"][0]["finish_reason"]


def test_out_of_range_seed_and_empty_prompt_are_400_not_500(api, reg):
    r = api.post("/v1/chat/completions", json={"model": "base", "messages": CHAT, "max_tokens": 2,
                                               "temperature": 1, "seed": 2**70})
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    r = api.post("/v1/completions", json={"model": "base", "prompt": "", "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "prompt: empty", "type": "invalid_request_error", "param": "prompt", "code": "invalid_request"}


def test_missing_adapter_files_answer_503_naming_the_model(api, reg):
    r = api.post("/v1/chat/completions", json={"model": _vid(reg, "gone"), "messages": CHAT, "max_tokens": 2})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "model_unavailable" and _vid(reg, "gone") in err["message"]
    assert str(reg.path.parent) not in err["message"]  # server paths stay on the server


@pytest.mark.parametrize("endpoint, payload", [
    ("/v1/chat/completions", {"messages": CHAT}),
    ("/v1/completions", {"prompt": "What is a lease?"}),
])
def test_stream_include_usage_ends_with_a_usage_chunk(api, reg, endpoint, payload):
    ask = {"model": _vid(reg, "legal", 3), "max_tokens": 5, **payload}
    plain = api.post(endpoint, json=ask).json()
    with api.stream("POST", endpoint, json={**ask, "stream": True, "stream_options": {"include_usage": True}}) as r:
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    usage_chunk = json.loads(lines[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert json.loads(lines[-3])["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    with api.stream("POST", endpoint, json={**ask, "stream": True}) as r:  # not asked: no usage chunk
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert all("usage" not in json.loads(ln) for ln in lines[:-1])


@pytest.mark.parametrize("field, value", [
    ("logprobs", True), ("echo", True), ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("response_format", {"type": "json_object"}), ("best_of", 2),
])
def test_features_the_server_lacks_are_refused_not_ignored(api, reg, field, value):
    ask = {"model": _vid(reg, "legal"), "messages": CHAT, "max_tokens": 2}
    r = api.post("/v1/chat/completions", json={**ask, field: value})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == field and r.json()["error"]["code"] == "unsupported_parameter"
    # the same fields at their "off" values, as SDKs send them, are fine
    off = {"logprobs": False, "echo": False, "tools": [], "response_format": {"type": "text"}, "best_of": 1}[field]
    assert api.post("/v1/chat/completions", json={**ask, field: off}).status_code == 200


def test_retrieve_one_model(api, reg):
    alias_free = _vid(reg, "legal")
    r = api.get(f"/v1/models/{alias_free}")
    assert r.status_code == 200 and r.json() == {"id": alias_free, "object": "model", "created": 0,
                                                  "owned_by": "tunesmith"}
    r = api.get("/v1/models/nope@prod")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert api.get("/v1/models/base", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_default_max_tokens_shrinks_to_the_context_left(api, reg):
    """No max_tokens and a prompt near the context (2048): answered within what is left, not refused."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reg.version(_vid(reg, "legal")).base_model)
    prompt = " the" * 2045  # one token each with the tiny tokenizer
    n = len(tok(prompt)["input_ids"])
    assert n == 2045
    r = api.post("/v1/completions", json={"model": _vid(reg, "legal"), "prompt": prompt})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == n and r.json()["usage"]["completion_tokens"] <= 2048 - n
    r = api.post("/v1/completions", json={"model": _vid(reg, "legal"), "prompt": prompt, "max_tokens": 8})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
