"""The serving layer called as a library: no HTTP, no sockets; one completion path for plain and streamed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from tunesmith.deploy.merge import encode_chat, greedy, load_adapted
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.serve.engine import Generation, Job, Outcome
from tunesmith.deploy.serve.protocol import ApiError, ChatRequest, CompletionRequest
from tunesmith.deploy.serve.serving import Completion, Serving
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server
from tunesmith.models import load_tokenizer

CHAT = [{"role": "user", "content": "What is a lease?"}]


@pytest.fixture(scope="module")
def lib(deploy_env, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("serving") / "registry.db")
    ids = [reg.add(r, "legal").id for r in deploy_env.runs]
    settings = ServeSettings(registry=reg.path, max_tokens_cap=32, seed=0)
    srv = Server(settings)
    yield Serving(srv, settings), reg, ids
    srv.engine.stop()


def _collect(serving: Serving, req, stream: bool) -> tuple[list[str], Completion]:
    async def go():
        items = [x async for x in serving.run(serving.prepare(req), stream=stream)]
        return items[:-1], items[-1]

    return asyncio.run(go())


def _pieces(serving: Serving, *args, **kw) -> list[str]:
    async def go():
        return [p async for p in serving.chat(*args, **kw)]

    return asyncio.run(go())


def test_plain_and_streamed_answers_are_one_path(lib):
    serving, reg, (v1, _, _) = lib
    req = ChatRequest.model_validate({"model": v1, "messages": CHAT, "max_tokens": 12})
    pieces, plain = _collect(serving, req, stream=False)
    assert pieces == []  # a plain answer is the Completion alone
    model, tok = load_adapted(reg.version(v1))
    assert plain.text == tok.decode(greedy(model, tok, encode_chat(tok, CHAT), 12), skip_special_tokens=True)
    pieces, streamed = _collect(serving, req, stream=True)
    assert len(pieces) > 1 and "".join(pieces) == streamed.text == plain.text
    assert (streamed.finish, streamed.completion_tokens) == (plain.finish, plain.completion_tokens)


def test_stop_strings_cut_plain_and_streamed_answers_alike(lib):
    serving, _, (_, v2, _) = lib
    ask = {"model": v2, "prompt": "The quick brown", "max_tokens": 16}
    _, full = _collect(serving, CompletionRequest.model_validate(ask), stream=False)
    # a stop string that first occurs mid-answer, so the stream must hold back what may begin it
    at = next(i for i in range(5, len(full.text) - 4) if full.text.index(full.text[i:i + 4]) == i)
    req = CompletionRequest.model_validate({**ask, "stop": ["zzzz", full.text[at:at + 4]]})
    _, plain = _collect(serving, req, stream=False)
    pieces, streamed = _collect(serving, req, stream=True)
    assert plain.text == streamed.text == "".join(pieces) == full.text[:at]
    assert plain.finish == streamed.finish == "stop"


def test_playground_streams_base_and_versions(lib):
    """What `tunesmith ui` calls: one prompt to base and several versions, text pieces as they come."""
    serving, reg, (v1, v2, _) = lib
    answers = {}
    for model in ("base", v1, v2):
        streamed = _pieces(serving, model, CHAT, max_tokens=8)
        whole = _pieces(serving, model, CHAT, max_tokens=8, stream=False)
        assert len(whole) == 1 and "".join(streamed) == whole[0]
        answers[model] = whole[0]
    assert len(set(answers.values())) == 3
    with pytest.raises(ApiError) as e:  # what the HTTP API refuses, the playground refuses alike
        _pieces(serving, v1, CHAT, max_tokens=33)
    assert e.value.code == "max_tokens_too_large"


def test_the_playground_does_not_write_the_request_log(lib):
    serving, _, (v1, _, _) = lib
    def logged() -> int:
        with sqlite3.connect(serving.server.log.path) as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    before = logged()
    _pieces(serving, v1, CHAT, max_tokens=2)
    _collect(serving, ChatRequest.model_validate({"model": v1, "messages": CHAT, "max_tokens": 2}), stream=False)
    assert logged() == before + 1  # the API request only


def test_a_rejecting_guard_decides_before_the_first_piece(lib):
    serving, reg, (_, _, v3) = lib
    reg.set_alias("legal@strict", v3, guard="reject")  # v3's rules want "please", which it never says
    req = ChatRequest.model_validate({"model": "legal@strict", "messages": CHAT, "max_tokens": 4})

    async def first():
        return await anext(serving.run(serving.prepare(req), stream=True))

    with pytest.raises(ApiError) as e:
        asyncio.run(first())
    assert e.value.status == 422 and e.value.code == "rules_violation"
    reg.set_alias("legal@strict", v3, guard="retry")
    pieces, done = _collect(serving, req, stream=True)
    assert done.retries == serving.settings.retries and done.passed is False
    assert pieces == [done.text]  # a guarded stream sends the decided answer whole


def test_names_resolve_in_one_place(lib):
    serving, _, _ = lib
    for name in ("legal@nope", "../etc/passwd", "/tmp/x"):
        with pytest.raises(ApiError) as e:
            serving.prepare(ChatRequest.model_validate({"model": name, "messages": CHAT}))
        assert e.value.status == 404 and e.value.code == "model_not_found"
    with pytest.raises(ApiError, match="over this server's cap of 32"):
        serving.prepare(CompletionRequest.model_validate({"model": "base", "prompt": "hi", "max_tokens": 33}))


class _EchoEngine:
    """Another engine behind the same contract: answers every prompt with its own last tokens, from its own
    thread, two tokens per step when streaming."""

    def __init__(self, base: str, tokenizer_from: str, settings: ServeSettings):
        self.tok = load_tokenizer(tokenizer_from, chat=False)
        self.stops, self.generation_config, self.context = [self.tok.eos_token_id], None, 64
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> Generation:
        gen = Generation()
        self.jobs.append(job)
        threading.Thread(target=self._answer, args=(job, gen)).start()
        return gen

    def _answer(self, job: Job, gen: Generation) -> None:
        ids = job.prompt_ids[-job.max_new_tokens:]
        if job.stream:
            for i in range(0, len(ids), 2):
                gen.tokens(ids[i:i + 2])
        gen.finish(Outcome(ids, False))

    def loaded_adapters(self) -> list[str]:
        return []

    def health(self) -> dict:
        return {"worker_alive": True, "queue_depth": 0, "loaded_adapters": [], "error": None}

    def stop(self) -> None:
        pass


def test_another_engine_serves_behind_the_same_layer(deploy_env, tmp_path):
    settings = ServeSettings(registry=tmp_path / "r.db", base=str(deploy_env.base))
    serving = Serving(Server(settings, make_engine=_EchoEngine), settings)
    req = CompletionRequest.model_validate({"model": "base", "prompt": "the quick brown fox", "max_tokens": 3})
    _, plain = _collect(serving, req, stream=False)
    pieces, streamed = _collect(serving, req, stream=True)
    tok = serving.engine.tok
    assert plain.text == streamed.text == "".join(pieces) == tok.decode(tok("the quick brown fox")["input_ids"][-3:])
    assert plain.finish == "length" and [j.stream for j in serving.engine.jobs] == [False, True]
    with pytest.raises(ApiError) as e:  # the engine's context, not a model's config, bounds the prompt
        serving.prepare(CompletionRequest.model_validate({"model": "base", "prompt": "the " * 70, "max_tokens": 3}))
    assert e.value.code == "context_length_exceeded"
