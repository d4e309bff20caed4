"""The embedded OpenAI-compatible server: one base model in memory, many adapter versions.

Request path: the handler checks the key, body size and JSON, resolves `model` in the registry
(a version id, an alias -- which may split traffic -- or `base`), and puts a job on a bounded
queue. One worker thread owns the model: it takes whatever is queued, groups jobs by adapter
(one `set_adapter` per group, one batched `generate` per group of plain requests) and hands
results back. A full queue answers 429 instead of piling up work.

The registry is read on every request, so `tunesmith registry alias` or `rollback` takes
effect on the next request without a restart. A model name is only ever a registry key, never
a path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.deploy.flywheel import RequestLog
from tunesmith.deploy.merge import encode_chat, tokenizer_dir
from tunesmith.deploy.registry import Registry, RegistryError, Version
from tunesmith.models import load_model, load_tokenizer, stop_token_ids
from tunesmith.rules import RuleSet, parse_rules

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,130}$")
RETRY_TEMPERATURE = 0.7  # a greedy retry would repeat the same failing answer


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry: Path | None = Field(None, description="Registry database (default: TUNESMITH_REGISTRY or the cache).")
    log: Path | None = Field(None, description="Request log database (default: requests.db beside the registry).")
    base: str | None = Field(None, description="Base model dir; default: the base of the newest registered version.")
    api_key: str | None = Field(None, description="When set, every /v1 request needs 'Authorization: Bearer KEY'.")
    max_body_bytes: int = Field(1_000_000, description="Larger request bodies are refused with 413.")
    max_tokens_cap: int = Field(1024, description="Requests asking for more new tokens are refused with 400.")
    default_max_tokens: int = Field(256, description="New-token limit when a request names none.")
    queue_size: int = Field(64, description="Requests waiting or running at once; beyond it the answer is 429.")
    batch_size: int = Field(8, description="Most requests for one adapter decoded together in one generate call.")
    max_adapters: int = Field(16, description="Adapters kept loaded; the least recently used is unloaded beyond it.")
    retries: int = Field(2, description="Extra sampled attempts for an alias whose guard is 'retry'.")
    timeout_s: float = Field(300, description="A request waiting longer than this is answered 503.")
    seed: int | None = Field(None, description="Seed for traffic-split choices (tests, reproducible canaries).")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body()}, status_code=self.status, headers=self.headers)


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = ""

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ("system", "user", "assistant", "developer"):
            raise ValueError(f"unsupported role {v!r}")
        return v

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


# OpenAI fields that change what the answer means; asked for (truthy) they are refused, not silently dropped.
_UNSUPPORTED = ("echo", "logprobs", "top_logprobs", "tools", "functions", "suffix")


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send many optional OpenAI fields; unknown ones are ignored
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # torch.manual_seed's range

    def unsupported(self) -> str | None:
        extra = self.model_extra or {}
        for name in _UNSUPPORTED:
            if extra.get(name):
                return name
        fmt = extra.get("response_format")
        if fmt and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            return "response_format"
        best_of = extra.get("best_of")
        return "best_of" if isinstance(best_of, int) and best_of > 1 else None

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def stops(self) -> list[str]:
        # An empty stop string would end generation after the first token.
        return [s for s in ([self.stop] if isinstance(self.stop, str) else list(self.stop or [])) if s]


class ChatRequest(_Common):
    messages: list[_Message] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("prompt: exactly one prompt per request")
            return self.prompt[0]
        return self.prompt


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    flag: bool = True
    correction: str | None = None


class TokenStream:
    """A generate() streamer handing new token ids, one step at a time, to the HTTP response thread."""

    def __init__(self, timeout_s: float):
        self._q: queue.Queue[list[int] | None] = queue.Queue()
        self._timeout = timeout_s
        self._prompt_skipped = False

    def put(self, value: Any) -> None:
        if not self._prompt_skipped:  # generate() first passes the prompt itself
            self._prompt_skipped = True
            return
        self._q.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[int]:
        while (step := self._q.get(timeout=self._timeout)) is not None:
            yield from step


@dataclass
class Job:
    adapter: Version | None  # None: the base model
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stops: list[str]
    streamer: TokenStream | None = None
    stop_ids: list[int] | None = None  # the answering version's end tokens; None: the base tokenizer's
    future: Future = field(default_factory=Future)  # -> (completion token ids, hit_eos)
    # Set by the request side when nobody waits for the answer any more (timeout, client gone): the worker
    # skips the job, or stops generating once every job of its batch is abandoned.
    abandoned: threading.Event = field(default_factory=threading.Event)

    def group_key(self) -> tuple:
        seed = self.seed if self.temperature > 0 else None  # greedy requests batch whatever their seed
        return (self.adapter.id if self.adapter else None, self.temperature, self.top_p, seed, tuple(self.stops))


class GenerationError(RuntimeError):
    """Generation of one job failed; the worker goes on with the next."""


class _UntilAbandoned:
    """A generate() stopping criterion: stop decoding a batch nobody waits for."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = all(j.abandoned.is_set() for j in self.jobs)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class Engine:
    """Owns the model; only its worker thread touches it."""

    def __init__(self, base: str, tokenizer_from: str, settings: ServeSettings):
        self.settings = settings
        self.base_model = load_model(base, dtype="float32").eval()
        # A base model may have no chat template: its versions bring their own (Server.chat_format).
        self.tok = load_tokenizer(tokenizer_from, chat=False)
        self.stops = stop_token_ids(self.tok, self.base_model.generation_config)  # EOS and end-of-turn
        self.model: Any = self.base_model  # becomes a PeftModel when the first adapter loads
        self.loaded: OrderedDict[str, str] = OrderedDict()  # version id -> peft adapter name
        self.peft_type: str | None = None  # of the loaded adapters
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self.died: str | None = None  # why the worker thread ended, when it ended without stop()
        self._thread = threading.Thread(target=self._run, name="tunesmith-worker", daemon=True)
        self._thread.start()

    # ---- admission ------------------------------------------------------------------------

    def submit(self, job: Job) -> Future:
        if not self.alive():
            raise self.dead_error()
        with self._lock:
            if self._pending >= self.settings.queue_size:
                raise ApiError(429, f"server busy: {self._pending} requests queued; retry shortly",
                               "queue_full", "rate_limit_error")
            self._pending += 1
        job.future.add_done_callback(self._release)
        self.jobs.put(job)
        return job.future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def stop(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def dead_error(self) -> ApiError:
        return ApiError(503, f"the generation worker is dead ({self.died or 'stopped'}); restart tunesmith serve",
                        "worker_dead", "server_error")

    def health(self) -> dict[str, Any]:
        with self._lock:
            depth = self._pending
        return {"worker_alive": self.alive(), "queue_depth": depth, "loaded_adapters": list(self.loaded)}

    # ---- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._serve_one_batch():
                pass
        except BaseException as e:  # only a bug gets here; say so on /health instead of hanging every request
            self.died = f"{type(e).__name__}: {e}"
            raise

    def _serve_one_batch(self) -> bool:
        first = self.jobs.get()
        if first is None:
            return False
        batch = self._gather(first)
        try:
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.group_key(), []).append(job)
            for jobs in groups.values():
                plain = [j for j in jobs if j.streamer is None]
                for i in range(0, len(plain), self.settings.batch_size):
                    self._guarded(plain[i:i + self.settings.batch_size])
                for j in jobs:
                    if j.streamer is not None:
                        self._guarded([j])
        except Exception as e:  # a fault outside generation: fail what is left of this batch, keep serving
            for j in batch:
                _settle(j, error=GenerationError(f"{type(e).__name__}: {e}"))
        return True

    def _gather(self, first: Job) -> list[Job]:
        batch = [first]
        while len(batch) < 4 * self.settings.batch_size:
            try:
                nxt = self.jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self.jobs.put(None)
                break
            batch.append(nxt)
        # Claiming a job's future makes it impossible to cancel from the request side, so the result set
        # later always lands; a job already cancelled (its request timed out while queued) is dropped here.
        return [j for j in batch if _claim(j)]

    def _guarded(self, jobs: list[Job]) -> None:
        try:
            self._activate(jobs[0].adapter)
            results = self._generate(jobs)
        except Exception as e:
            if len(jobs) > 1:  # find the job that fails: the others of its batch still get their answers
                for j in jobs:
                    self._guarded([j])
                return
            _settle(jobs[0], error=GenerationError(f"{type(e).__name__}: {e}"))
            return
        for j, r in zip(jobs, results):
            _settle(j, result=r)

    def _activate(self, version: Version | None) -> None:
        if version is None:
            return
        if version.id in self.loaded:
            self.loaded.move_to_end(version.id)
        else:
            from peft import PeftModel

            kind = version.peft_type
            if self.model is not self.base_model and kind != self.peft_type:
                # peft holds one adapter type per model (LoRA or prompt tuning): drop the loaded ones, which load
                # again when next asked for, and give the base back its own layers
                if self.peft_type == "LORA":
                    self.model.base_model.unload()
                self.model, self.loaded = self.base_model, OrderedDict()
            self.peft_type = kind
            name = f"a{uuid.uuid4().hex[:12]}"  # peft adapter names must be identifiers
            if self.model is self.base_model:
                self.model = PeftModel.from_pretrained(self.base_model, str(version.adapter_dir),
                                                       adapter_name=name, use_safetensors=True).eval()
            else:
                self.model.load_adapter(str(version.adapter_dir), adapter_name=name, use_safetensors=True)
            self.loaded[version.id] = name
            while len(self.loaded) > self.settings.max_adapters:
                _, old = self.loaded.popitem(last=False)
                self.model.delete_adapter(old)
        self.model.set_adapter(self.loaded[version.id])

    def _generate(self, jobs: list[Job]) -> list[tuple[list[int], bool]]:
        import contextlib

        import torch

        j0 = jobs[0]
        pad = self.tok.pad_token_id
        width = max(len(j.prompt_ids) for j in jobs)
        # Left padding keeps every prompt's last token at the same position for decoding.
        ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs])
        mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs])
        stops = j0.stop_ids or self.stops
        sample = j0.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample}
        if j0.stops:  # generation halts at a stop string; the handler cuts the text there
            kwargs.update(stop_strings=j0.stops, tokenizer=self.tok)
        if sample:
            kwargs.update(temperature=j0.temperature, top_p=j0.top_p)
            if j0.seed is not None:
                torch.manual_seed(j0.seed)
        base_only = j0.adapter is None and self.model is not self.base_model
        ctx = self.model.disable_adapter() if base_only else contextlib.nullcontext()
        with ctx, torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max(j.max_new_tokens for j in jobs),
                eos_token_id=stops, pad_token_id=pad, streamer=j0.streamer,
                stopping_criteria=[_UntilAbandoned(jobs)], **kwargs,
            )
        results = []
        for row, j in zip(out[:, width:].tolist(), jobs):
            row = row[: j.max_new_tokens]
            end = next((k for k, t in enumerate(row) if t in stops), None)
            results.append((row if end is None else row[:end], end is not None))
        return results


def _claim(job: Job) -> bool:
    if job.abandoned.is_set():
        job.future.cancel()
    return job.future.set_running_or_notify_cancel()


def _settle(job: Job, result: Any = None, error: BaseException | None = None) -> None:
    if job.streamer is not None:
        job.streamer.end()
    if job.future.done():  # already failed by a fault earlier in the same batch
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)


@dataclass
class Target:
    requested: str
    version: Version | None
    guard: str
    rules: RuleSet | None
    system_prompt: str | None
    chat_template: str | None = None
    stop_ids: list[int] | None = None

    @property
    def answered_by(self) -> str:
        return self.version.id if self.version else "base"


class Server:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.registry = Registry(settings.registry)
        self.log = RequestLog(settings.log or self.registry.path.with_name("requests.db"))
        self.rng = random.Random(settings.seed)
        versions = self.registry.versions()
        if settings.base:
            self.base = str(Path(settings.base).expanduser().resolve())
        elif versions:
            self.base = str(Path(max(versions, key=lambda v: v.created).base_model).resolve())
        else:
            raise ValueError(f"registry {self.registry.path} has no versions; pass --base to serve a base model alone")
        if not (Path(self.base) / "config.json").is_file():
            raise ValueError(f"base model {self.base} does not exist (moved or deleted?); pass --base DIR")
        tokenizer_from = self.base
        same_base = [v for v in versions if self._same_base(v)]
        if same_base and not (Path(self.base) / "tokenizer_config.json").is_file():
            tokenizer_from = str(same_base[0].adapter_dir)
        self.engine = Engine(self.base, tokenizer_from, settings)
        self._chat_formats: dict[str, tuple[str | None, list[int]]] = {}

    def chat_format(self, version: Version | None) -> tuple[str | None, list[int]]:
        """The chat template and end tokens a version was trained with: its run may have replaced the base's
        template (data.chat_template), or the base may have none; the stored tokenizer says which."""
        if version is None:
            return self.engine.tok.chat_template, self.engine.stops
        if version.id not in self._chat_formats:
            tok = load_tokenizer(tokenizer_dir(version), chat=False)
            template = tok.chat_template or self.engine.tok.chat_template
            tok.chat_template = template
            self._chat_formats[version.id] = (template, stop_token_ids(tok, self.engine.base_model.generation_config))
        return self._chat_formats[version.id]

    def _same_base(self, v: Version) -> bool:
        return str(Path(v.base_model).resolve()) == self.base

    def resolve(self, name: str) -> Target:
        if name == "base":
            return Target(name, None, "off", None, None, *self.chat_format(None))
        # Names are registry keys only: anything path-like is unknown, never opened.
        alias = self.registry.find_alias(name) if _MODEL_NAME.match(name) else None
        if alias is not None:
            ids, weights = zip(*alias.targets)
            version = self.registry.find_version(self.rng.choices(ids, weights)[0])
            guard, rules_yaml = alias.guard, alias.rules_yaml
        else:
            version = self.registry.find_version(name) if _MODEL_NAME.match(name) else None
            guard, rules_yaml = "off", None
        if version is None:
            raise ApiError(404, f"The model '{name}' does not exist", "model_not_found", param="model")
        if not self._same_base(version):
            raise ApiError(404, f"The model '{name}' was trained on another base model than this server holds",
                           "model_not_found", param="model")
        if version.id not in self.engine.loaded:
            try:
                version.check_files()
            except RegistryError:
                raise ApiError(503, f"The model '{name}' cannot be loaded: files of {version.id} are missing on "
                               "the server", "model_unavailable", "server_error", param="model") from None
        rules = None
        text = rules_yaml or version.rules_yaml
        if guard != "off" and text:  # both were validated when registered
            import yaml

            rules = parse_rules(yaml.safe_load(text), f"rules of {name}")
        elif guard != "off":
            guard = "off"  # a guard with no rules anywhere has nothing to check
        return Target(name, version, guard, rules, version.lineage.get("system_prompt"), *self.chat_format(version))

    def model_ids(self) -> list[str]:
        ids = ["base"] + [v.id for v in self.registry.versions() if self._same_base(v)]
        # an alias whose versions were trained on another base would only ever answer 404
        return ids + [a.alias for a in self.registry.aliases() if all(v in ids for v, _ in a.targets)]


def _failed(e: GenerationError) -> ApiError:
    return ApiError(500, f"generation failed: {e}", "generation_failed", "server_error")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # Python's json accepts NaN/Infinity; JSON does not


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def create_app(settings: ServeSettings, server: Server | None = None) -> FastAPI:
    """The FastAPI app; `server` may be passed to share one loaded model between apps (tests)."""
    srv = server or Server(settings)
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None)
    app.state.server = srv

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:  # unknown route, wrong method
        return ApiError(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "bad_request",
                        headers=exc.headers).response()

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # same error shape, no traceback to clients
        return ApiError(500, f"internal error: {type(exc).__name__}", "internal_error", "server_error").response()

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "Incorrect API key provided", "invalid_api_key")

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise ApiError(413, f"request body over {settings.max_body_bytes} bytes", "body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise ApiError(413, f"request body over {settings.max_body_bytes} bytes", "body_too_large")
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and NaN/Infinity all are ValueErrors
            raise ApiError(400, f"request body is not valid JSON: {e}", "invalid_json") from None
        except RecursionError:  # a body of deeply nested arrays overflows the decoder's stack
            raise ApiError(400, "request body is not valid JSON: nested too deeply", "invalid_json") from None

    def parse(model_cls: type[BaseModel], data: Any) -> Any:
        try:
            return model_cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(map(str, err["loc"])) or "body"
            raise ApiError(400, f"{where}: {err['msg']}", "invalid_request", param=where) from None

    context = getattr(srv.engine.base_model.config, "max_position_embeddings", None)

    def new_tokens(req: _Common, prompt_len: int = 0) -> int:
        asked = req.max_completion_tokens or req.max_tokens
        if asked is None:
            # A request that names no limit must not be refused for one: the default shrinks to the cap and
            # to what the context leaves after the prompt.
            room = context - prompt_len if context else settings.default_max_tokens
            return max(1, min(settings.default_max_tokens, settings.max_tokens_cap, room))
        if asked > settings.max_tokens_cap:
            raise ApiError(400, f"max_tokens {asked} is over this server's cap of {settings.max_tokens_cap}",
                           "max_tokens_too_large", param="max_tokens")
        return asked

    async def complete(target: Target, prompt_ids: list[int], req: _Common, last_user: str):
        """Generate, cut at stop strings, apply the rules guard: (text, finish, n_tokens, rule results, retries)."""
        temperature, seed = req.temperature, req.seed
        attempt = 0
        while True:
            job = Job(target.version, prompt_ids, new_tokens(req, len(prompt_ids)), temperature, req.top_p, seed,
                      req.stops(), stop_ids=target.stop_ids)
            fut = srv.engine.submit(job)
            try:
                ids, hit_eos = await asyncio.wait_for(asyncio.wrap_future(fut), settings.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(503, "generation timed out; retry later", "timeout", "server_error") from None
            except GenerationError as e:
                raise _failed(e) from None
            finally:
                job.abandoned.set()  # also when the client went away while waiting
            text, stopped = _cut_at_stop(srv.engine.tok.decode(ids, skip_special_tokens=True), req.stops())
            finish = "stop" if hit_eos or stopped else "length"
            results = target.rules.check_answer(text, last_user) if target.rules else None
            passed = results is None or all(results.values())
            if passed or target.guard != "retry" or attempt >= settings.retries:
                return text, finish, len(ids), results, attempt
            attempt += 1
            temperature, seed = RETRY_TEMPERATURE, (seed or 0) + attempt

    def record(rid: str, endpoint: str, target: Target, request: dict, text: str, finish: str | None,
               status: str, started: float, prompt_tokens: int, completion_tokens: int,
               rules: dict[str, bool] | None) -> None:
        srv.log.write(
            id=rid, endpoint=endpoint, requested=target.requested, version=target.answered_by, request=request,
            response=text, finish_reason=finish, status=status, latency_ms=(time.time() - started) * 1000,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, rules=rules,
            rules_passed=None if rules is None else int(all(rules.values())),
        )

    async def handle(request: Request, endpoint: str) -> Any:
        started = time.time()
        check_key(request)
        data = await read_json(request)
        req = parse(ChatRequest if endpoint == "chat" else CompletionRequest, data)
        if (name := req.unsupported()) is not None:
            raise ApiError(400, f"{name}: not supported by this server (tunesmith serve); leave it out",
                           "unsupported_parameter", param=name)
        target = srv.resolve(req.model)
        new_tokens(req)
        tok = srv.engine.tok
        if endpoint == "chat":
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in req.messages]
            if target.system_prompt and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": target.system_prompt})
            if target.chat_template is None:
                raise ApiError(400, f"The model '{target.requested}' has no chat template (a base model); use "
                               "/v1/completions", "invalid_request", param="model")
            try:
                prompt_ids = encode_chat(tok, messages, target.chat_template)
            except Exception as e:  # the model's chat template refuses this conversation shape
                raise ApiError(400, f"messages: the chat template refused them: {e}", "invalid_request",
                               param="messages") from None
            last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            logged: dict[str, Any] = {"messages": messages}
        else:
            try:
                prompt = req.text()
            except ValueError as e:
                raise ApiError(400, str(e), "invalid_request", param="prompt") from None
            prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
            if not prompt_ids:  # nothing to condition on: generate() cannot start from zero tokens
                raise ApiError(400, "prompt: empty", "invalid_request", param="prompt")
            last_user, logged = prompt, {"prompt": prompt}
        wanted = new_tokens(req, len(prompt_ids))
        if context and len(prompt_ids) + wanted > context:
            raise ApiError(400, f"prompt of {len(prompt_ids)} tokens plus max_tokens {wanted} is over the model's "
                           f"context of {context}", "context_length_exceeded", param="messages")
        rid = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex
        headers = {"X-Tunesmith-Version": target.answered_by}
        if req.stream and target.guard in ("off", "report"):
            return stream(rid, endpoint, target, req, prompt_ids, last_user, logged, started, headers)
        text, finish, n_out, results, retries = await complete(target, prompt_ids, req, last_user)
        passed = results is None or all(results.values())
        if target.guard == "reject" and not passed:
            record(rid, endpoint, target, logged, text, finish, "rejected", started, len(prompt_ids), n_out, results)
            failed = ", ".join(k for k, ok in results.items() if not ok)
            raise ApiError(422, f"the answer of {target.answered_by} broke rules: {failed}", "rules_violation")
        record(rid, endpoint, target, logged, text, finish, "ok", started, len(prompt_ids), n_out, results)
        extra = {"requested": target.requested, "rules": results, "rules_passed": None if results is None else passed,
                 "retries": retries}
        if req.stream:  # guarded streams are decided before the first byte: the whole answer in one chunk
            usage = _usage(len(prompt_ids), n_out) if req.include_usage() else None
            return StreamingResponse(
                iter(_stream_events(rid, endpoint, target.answered_by, [text], finish, extra, usage=usage)),
                media_type="text/event-stream", headers=headers)
        return JSONResponse(_body(rid, endpoint, target.answered_by, text, finish, len(prompt_ids), n_out, extra),
                            headers=headers)

    def stream(rid: str, endpoint: str, target: Target, req: _Common, prompt_ids: list[int], last_user: str,
               logged: dict, started: float, headers: dict[str, str]) -> StreamingResponse:
        streamer = TokenStream(settings.timeout_s)
        stops = req.stops()
        job = Job(target.version, prompt_ids, new_tokens(req, len(prompt_ids)), req.temperature, req.top_p, req.seed,
                  stops, streamer, stop_ids=target.stop_ids)
        fut = srv.engine.submit(job)  # a full queue answers 429 here, before the stream starts
        hold = max((len(s) for s in stops), default=1) - 1  # text that might be the start of a stop string
        tok = srv.engine.tok

        def events() -> Iterator[str]:
            try:
                yield from tokens()
            except GenerationError as e:  # the status line is sent: the error goes in the stream, as OpenAI's does
                yield _sse({"error": _failed(e).body()})
            except queue.Empty:
                yield _sse({"error": ApiError(503, "generation timed out; retry later", "timeout",
                                              "server_error").body()})
            finally:
                job.abandoned.set()  # the client may have gone: stop decoding for nobody

        def tokens() -> Iterator[str]:
            ids: list[int] = []
            text, sent, stopped = "", 0, False
            for token in streamer:
                ids.append(token)
                text = tok.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    continue
                cut, stopped = _cut_at_stop(text, stops)
                upto = len(cut) if stopped else len(text) - hold
                if upto > sent:
                    yield from _stream_events(rid, endpoint, target.answered_by, [text[sent:upto]], None, None,
                                              head=sent == 0)
                    sent = upto
                if stopped:
                    text = cut
                    break
            if not stopped and len(text) > sent:
                yield from _stream_events(rid, endpoint, target.answered_by, [text[sent:]], None, None, head=sent == 0)
            out_ids, hit_eos = fut.result(timeout=settings.timeout_s)
            finish = "stop" if hit_eos or stopped else "length"
            results = target.rules.check_answer(text, last_user) if target.rules else None
            record(rid, endpoint, target, logged, text, finish, "ok", started, len(prompt_ids), len(out_ids), results)
            extra = {"requested": target.requested, "rules": results,
                     "rules_passed": None if results is None else all(results.values()), "retries": 0}
            usage = _usage(len(prompt_ids), len(out_ids)) if req.include_usage() else None
            yield from _stream_events(rid, endpoint, target.answered_by, [], finish, extra, head=not text, usage=usage)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        state = srv.engine.health()
        try:
            check_key(request)
        except ApiError:  # probes need no key; which versions are loaded is for key holders
            del state["loaded_adapters"]
        if not state["worker_alive"]:
            return JSONResponse({"status": "dead", "error": srv.engine.dead_error().message, **state}, 503)
        return JSONResponse({"status": "ok", **state})

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        if not srv.engine.alive():  # listing models a dead worker cannot answer would hide the outage
            raise srv.engine.dead_error()
        return {"object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "tunesmith"} for m in srv.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check_key(request)
        if model_id not in srv.model_ids():
            raise ApiError(404, f"The model '{model_id}' does not exist", "model_not_found", param="model")
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "tunesmith"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, "text")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        check_key(request)
        fb = parse(Feedback, await read_json(request))
        if not srv.log.flag(fb.id, fb.flag, fb.correction):
            raise ApiError(404, f"no logged response with id {fb.id!r}", "response_not_found", param="id")
        return {"id": fb.id, "flagged": fb.flag, "correction": fb.correction is not None}

    return app


def _body(rid: str, endpoint: str, model: str, text: str, finish: str, n_in: int, n_out: int,
          extra: dict[str, Any]) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if endpoint == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid, "object": "chat.completion" if endpoint == "chat" else "text_completion",
        "created": int(time.time()), "model": model, "choices": [choice],
        "usage": _usage(n_in, n_out),
        "tunesmith": extra,
    }


def _usage(n_in: int, n_out: int) -> dict[str, int]:
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def _stream_events(rid: str, endpoint: str, model: str, pieces: list[str], finish: str | None,
                   extra: dict[str, Any] | None, head: bool = True,
                   usage: dict[str, int] | None = None) -> Iterator[str]:
    """SSE chunks in OpenAI's shape: deltas, then a chunk with finish_reason, then (when the client asked with
    stream_options.include_usage) one with no choices and the usage, then [DONE]."""
    created = int(time.time())
    obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"

    def chunk(delta: dict[str, Any] | str, fin: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": fin, "logprobs": None}
        if endpoint == "chat":
            choice["delta"] = delta
        else:
            choice["text"] = delta
        return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}

    for i, p in enumerate(pieces):
        if endpoint == "chat":
            delta: dict[str, Any] | str = {"role": "assistant", "content": p} if head and i == 0 else {"content": p}
        else:
            delta = p
        yield _sse(chunk(delta, None))
    if finish is not None:
        last = chunk({} if endpoint == "chat" else "", finish)
        last["tunesmith"] = extra
        yield _sse(last)
        if usage is not None:
            yield _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"
