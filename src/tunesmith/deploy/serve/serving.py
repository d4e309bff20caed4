"""The serving layer: a parsed OpenAI request in, text pieces and one Completion out, without HTTP.

`prepare` resolves the model name and builds the prompt; `run` is the one completion path, streaming or
not: it submits jobs to the engine, decodes and cuts at stop strings, applies the rules guard (retrying
when the alias says so) and writes the request log. A stream is live (pieces as they are decoded) unless
the guard may still refuse or replace the answer; then the answer is decided first and sent whole.
"""

from __future__ import annotations

import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator

from tunesmith.deploy.merge import encode_chat
from tunesmith.deploy.serve.engine import (
    EngineDead, EngineError, GenerationError, GenerationTimeout, Job, Outcome, QueueFull, Unservable,
)
from tunesmith.deploy.serve.protocol import (
    ApiError, ChatRequest, CommonRequest, CompletionRequest, Endpoint, Feedback, Message, parse,
)
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server, Target

RETRY_TEMPERATURE = 0.7  # a greedy retry would repeat the same failing answer


@dataclass
class Prepared:
    """A request ready to generate: its target, its prompt, what the log keeps of it."""

    rid: str
    endpoint: Endpoint
    req: CommonRequest
    target: Target
    prompt_ids: list[int]
    max_new_tokens: int
    last_user: str  # what the rules check an answer against
    logged: dict[str, Any]
    started: float


@dataclass
class Completion:
    text: str
    finish: str  # stop | length
    prompt_tokens: int
    completion_tokens: int
    rules: dict[str, bool] | None
    retries: int

    @property
    def passed(self) -> bool | None:
        return None if self.rules is None else all(self.rules.values())


class Serving:
    def __init__(self, server: Server, settings: ServeSettings):
        self.server, self.settings = server, settings
        self.engine = server.engine

    # ---- requests --------------------------------------------------------------------------

    def prepare(self, req: ChatRequest | CompletionRequest) -> Prepared:
        started = time.time()
        if (name := req.unsupported()) is not None:
            raise ApiError(400, f"{name}: not supported by this server (tunesmith serve); leave it out",
                           "unsupported_parameter", param=name)
        target = self.server.resolve(req.model)
        self._new_tokens(req)  # a max_tokens over the cap is refused before the prompt is built
        if isinstance(req, ChatRequest):
            endpoint: Endpoint = "chat"
            prompt_ids, last_user, logged = self._chat_prompt(target, req.messages)
        else:
            endpoint = "text"
            prompt_ids, last_user, logged = self._text_prompt(req)
        wanted = self._new_tokens(req, len(prompt_ids))
        context = self.engine.context
        if context and len(prompt_ids) + wanted > context:
            raise ApiError(400, f"prompt of {len(prompt_ids)} tokens plus max_tokens {wanted} is over the model's "
                           f"context of {context}", "context_length_exceeded", param="messages")
        rid = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex
        return Prepared(rid, endpoint, req, target, prompt_ids, wanted, last_user, logged, started)

    def _chat_prompt(self, target: Target, msgs: list[Message]) -> tuple[list[int], str, dict[str, Any]]:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in msgs]
        if target.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": target.system_prompt})
        if target.chat_template is None:
            raise ApiError(400, f"The model '{target.requested}' has no chat template (a base model); use "
                           "/v1/completions", "invalid_request", param="model")
        try:
            prompt_ids = encode_chat(self.engine.tok, messages, target.chat_template)
        except Exception as e:  # the model's chat template refuses this conversation shape
            raise ApiError(400, f"messages: the chat template refused them: {e}", "invalid_request",
                           param="messages") from None
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return prompt_ids, last_user, {"messages": messages}

    def _text_prompt(self, req: CompletionRequest) -> tuple[list[int], str, dict[str, Any]]:
        try:
            prompt = req.text()
        except ValueError as e:
            raise ApiError(400, str(e), "invalid_request", param="prompt") from None
        prompt_ids = self.engine.tok(prompt, add_special_tokens=True)["input_ids"]
        if not prompt_ids:  # nothing to condition on: generate() cannot start from zero tokens
            raise ApiError(400, "prompt: empty", "invalid_request", param="prompt")
        return prompt_ids, prompt, {"prompt": prompt}

    def _new_tokens(self, req: CommonRequest, prompt_len: int = 0) -> int:
        asked = req.max_completion_tokens or req.max_tokens
        cap = self.settings.max_tokens_cap
        if asked is None:
            # A request that names no limit must not be refused for one: the default shrinks to the cap and
            # to what the context leaves after the prompt.
            context = self.engine.context
            room = context - prompt_len if context else self.settings.default_max_tokens
            return max(1, min(self.settings.default_max_tokens, cap, room))
        if asked > cap:
            raise ApiError(400, f"max_tokens {asked} is over this server's cap of {cap}", "max_tokens_too_large",
                           param="max_tokens")
        return asked

    # ---- the completion path ---------------------------------------------------------------

    async def run(self, p: Prepared, stream: bool, record: bool = True) -> AsyncIterator[str | Completion]:
        """Text pieces, then the Completion; ApiError when there is no answer to give (busy, timed out,
        failed, refused by the rules guard). A guard that may refuse decides before the first piece."""
        live = stream and p.target.guard in ("off", "report")
        temperature, seed = p.req.temperature, p.req.seed
        attempt = 0
        while True:
            decoder = _StopDecoder(self.engine.tok, p.req.stops())
            job = Job(p.target.version, p.prompt_ids, p.max_new_tokens, temperature, p.req.top_p, seed,
                      p.req.stops(), stream=live, stop_ids=p.target.stop_ids)
            outcome = None
            async with aclosing(self._decode(job, decoder)) as pieces:  # closed at once when the caller stops
                async for piece in pieces:
                    if isinstance(piece, Outcome):
                        outcome = piece
                    elif live:
                        yield piece
            assert outcome is not None  # _decode ends with the Outcome or raises
            results = p.target.rules.check_answer(decoder.text, p.last_user) if p.target.rules else None
            done = Completion(decoder.text, "stop" if outcome.hit_eos or decoder.stopped else "length",
                              len(p.prompt_ids), len(outcome.ids), results, attempt)
            if done.passed is not False or p.target.guard != "retry" or attempt >= self.settings.retries:
                break
            attempt += 1
            temperature, seed = RETRY_TEMPERATURE, (seed or 0) + attempt
        if p.target.guard == "reject" and done.passed is False:
            if record:
                self._record(p, done, "rejected")
            failed = ", ".join(k for k, ok in (done.rules or {}).items() if not ok)
            raise ApiError(422, f"the answer of {p.target.answered_by} broke rules: {failed}", "rules_violation")
        if record:
            self._record(p, done, "ok")
        if not live and stream and done.text:
            yield done.text
        yield done

    async def complete(self, p: Prepared) -> Completion:
        """The plain (not streamed) answer."""
        async with aclosing(self.run(p, stream=False)) as items:
            return await anext(items)  # a plain run yields its Completion alone

    async def _decode(self, job: Job, decoder: _StopDecoder) -> AsyncIterator[str | Outcome]:
        try:
            gen = self.engine.submit(job)
            async with aclosing(gen.events(self.settings.timeout_s)) as events:
                async for event in events:
                    if isinstance(event, Outcome):
                        if not job.stream:  # the whole answer at once
                            decoder.feed(event.ids)
                        if piece := decoder.close():
                            yield piece
                        yield event
                    elif not decoder.stopped and (piece := decoder.feed(event)):
                        yield piece
        except EngineError as e:
            raise engine_error(e) from None

    def _record(self, p: Prepared, c: Completion, status: str) -> None:
        t = p.target
        self.server.log.write(
            id=p.rid, endpoint=p.endpoint, requested=t.requested, version=t.answered_by, request=p.logged,
            response=c.text, finish_reason=c.finish, status=status, latency_ms=(time.time() - p.started) * 1000,
            prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, rules=c.rules,
            rules_passed=None if c.passed is None else int(c.passed),
        )

    def extra(self, p: Prepared, c: Completion) -> dict[str, Any]:
        """The `tunesmith` object of a response: who was asked, what the rules said, how many retries."""
        return {"requested": p.target.requested, "rules": c.rules, "rules_passed": c.passed, "retries": c.retries}

    # ---- for callers without HTTP ----------------------------------------------------------

    async def chat(self, model: str, messages: list[dict[str, Any]], max_tokens: int | None = None,
                   stream: bool = True) -> AsyncIterator[str]:
        """Text pieces of one chat answer (the whole answer as one piece unless `stream`), as the HTTP API
        would give them, without writing the request log: for the `tunesmith ui` playground."""
        req = parse(ChatRequest, {"model": model, "messages": messages, "max_tokens": max_tokens})
        async with aclosing(self.run(self.prepare(req), stream=stream, record=False)) as pieces:
            async for piece in pieces:
                if isinstance(piece, str):
                    yield piece
                elif not stream and piece.text:
                    yield piece.text

    # ---- the rest of the API ---------------------------------------------------------------

    def model_ids(self) -> list[str]:
        self.require_alive()  # listing models a dead worker cannot answer would hide the outage
        return self.server.model_ids()

    def feedback(self, fb: Feedback) -> dict[str, Any]:
        if not self.server.log.flag(fb.id, fb.flag, fb.correction):
            raise ApiError(404, f"no logged response with id {fb.id!r}", "response_not_found", param="id")
        return {"id": fb.id, "flagged": fb.flag, "correction": fb.correction is not None}

    def health(self) -> dict[str, Any]:
        state = self.engine.health()
        return {"status": "ok" if state["worker_alive"] else "dead", **state}

    def require_alive(self) -> None:
        state = self.engine.health()
        if not state["worker_alive"]:
            raise engine_error(EngineDead(state["error"]))


def engine_error(e: EngineError) -> ApiError:
    if isinstance(e, QueueFull):
        return ApiError(429, str(e), "queue_full", "rate_limit_error")
    if isinstance(e, EngineDead):
        return ApiError(503, f"the generation worker is dead ({e}); restart tunesmith serve", "worker_dead",
                        "server_error")
    if isinstance(e, Unservable):
        return ApiError(400, str(e), "model_not_servable", param="model")
    if isinstance(e, GenerationTimeout):
        return ApiError(503, f"generation timed out ({e}); retry later", "timeout", "server_error")
    assert isinstance(e, GenerationError)
    return ApiError(500, f"generation failed: {e}", "generation_failed", "server_error")


class _StopDecoder:
    """Token ids in, text out; cuts at the first stop string and holds back what might begin one, or half of
    a multi-byte character, until the next ids say."""

    def __init__(self, tok: Any, stops: list[str]):
        self.tok, self.stops = tok, stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.ids: list[int] = []
        self.text, self.sent, self.stopped = "", 0, False

    def feed(self, ids: list[int]) -> str:
        self.ids += ids
        self.text = self.tok.decode(self.ids, skip_special_tokens=True)
        if self.text.endswith("\ufffd"):
            return ""
        cut, self.stopped = _cut_at_stop(self.text, self.stops)
        if self.stopped:
            self.text = cut
        return self._send(len(cut) if self.stopped else len(self.text) - self.hold)

    def close(self) -> str:
        """What is left once generation ended."""
        if not self.stopped:
            self.text, self.stopped = _cut_at_stop(self.text, self.stops)
        return self._send(len(self.text))

    def _send(self, upto: int) -> str:
        piece = self.text[self.sent:upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return piece


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
