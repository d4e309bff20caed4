"""The in-process engine: one base model in memory, many adapters, one worker thread that owns them.

The worker decodes one batch step by step (batch.py): between steps, queued requests join it and finished
ones leave, so a request never waits for the longest answer of a batch it was not in. Rows of different LoRA
adapters share the batch through peft's mixed-batch forward. Adapters peft cannot mix (prompt tuning, DoRA)
are decoded by `generate()` once the running batch has drained, one group of them at a time.

Nothing one job does may end the worker: a job nobody waits for is dropped at the next step, a step that raises
is retried for each of its rows alone (from what each had decoded) so only the row that fails is failed, and a
fault in the loop itself is recorded so /health can say the worker is dead instead of every request hanging.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from tunesmith.deploy.registry import Version
from tunesmith.deploy.serve.batch import DecodeBatch, Row
from tunesmith.deploy.serve.engine import EngineDead, Generation, GenerationError, Job, Outcome, QueueFull
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.models import load_model, load_tokenizer, stop_token_ids

_log = logging.getLogger(__name__)


@dataclass
class _Work:
    job: Job
    gen: Generation
    settled: bool = False  # answered, failed or skipped; no longer counted against the queue


class EmbeddedEngine:
    """Owns the model; only its worker thread touches it."""

    def __init__(self, base: str, tokenizer_from: str, settings: ServeSettings):
        self.settings = settings
        self.base_model = load_model(base, dtype="float32").eval()
        # A base model may have no chat template: its versions bring their own (Server.chat_format).
        self.tok = load_tokenizer(tokenizer_from, chat=False)
        self.generation_config = self.base_model.generation_config
        self.stops = stop_token_ids(self.tok, self.generation_config)  # EOS and end-of-turn
        self.context: int | None = getattr(self.base_model.config, "max_position_embeddings", None)
        self.model: Any = self.base_model  # becomes a PeftModel when the first adapter loads
        self.loaded: OrderedDict[str, str] = OrderedDict()  # version id -> peft adapter name
        self.peft_type: str | None = None  # of the loaded adapters
        self.jobs: queue.Queue[_Work | None] = queue.Queue()
        self.batch = DecodeBatch(self._forward, self.tok.pad_token_id)
        self.waiting: deque[_Work] = deque()  # taken off the queue, not yet in the batch
        self._active: str | None = None  # the adapter peft has active
        self._mixable: dict[str, bool] = {}  # version id -> whether peft can batch it with other adapters
        self._pending = 0
        self._lock = threading.Lock()
        self.died: str | None = None  # why the worker thread ended, when it ended without stop()
        self._thread = threading.Thread(target=self._run, name="tunesmith-worker", daemon=True)
        self._thread.start()

    # ---- the Engine contract ---------------------------------------------------------------

    def submit(self, job: Job) -> Generation:
        if not self._thread.is_alive():
            raise EngineDead(self.died or "stopped")
        with self._lock:
            if self._pending >= self.settings.queue_size:
                raise QueueFull(f"server busy: {self._pending} requests queued; retry shortly")
            self._pending += 1
        gen = Generation()
        self.jobs.put(_Work(job, gen))
        return gen

    def loaded_adapters(self) -> list[str]:
        return list(self.loaded)

    def health(self) -> dict[str, Any]:
        with self._lock:
            depth = self._pending
        alive = self._thread.is_alive()
        return {"worker_alive": alive, "queue_depth": depth, "loaded_adapters": self.loaded_adapters(),
                "error": None if alive else self.died or "stopped"}

    def stop(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=10)

    # ---- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._take():
                self._admit()
                if self.batch:
                    self._step()
        except BaseException as e:  # only a bug gets here; say so on /health instead of hanging every request
            self.died = f"{type(e).__name__}: {e}"
            raise

    def _take(self) -> bool:
        """Move queued work to `waiting`, blocking only when there is nothing to do; False once stop() asked."""
        idle = not self.batch and not self.waiting
        while True:
            try:
                work = self.jobs.get() if idle else self.jobs.get_nowait()
            except queue.Empty:
                return True
            if work is None:
                return False
            self.waiting.append(work)
            idle = False

    def _admit(self) -> None:
        """Waiting work joins the batch, first come first served, as far as the batch has room."""
        joining: list[Row] = []
        while self.waiting and len(self.batch) + len(joining) < self.settings.batch_size:
            work = self.waiting[0]
            if work.gen.abandoned:  # its request timed out while queued, or hung up
                self.waiting.popleft()
                self._settle(work, None)
                continue
            if not self._can_mix(work.job.adapter):
                if self.batch or joining:
                    break  # it goes next, once the batch has drained
                self._generate_group()
                return
            self.waiting.popleft()
            in_use = {r.adapter for r in (*self.batch.rows, *joining)}
            try:
                name = self._load(work.job.adapter, in_use)
            except Exception as e:
                self._load_failed([work], e)
                continue
            j = work.job
            joining.append(Row(j.prompt_ids, name, j.temperature, j.top_p, j.seed, owner=work))
        if not joining:
            return
        try:
            picks = self.batch.admit(joining)
        except Exception as e:
            self._isolate(joining, e)
            return
        offset = len(self.batch) - len(joining)
        self._keep_unfinished(self.batch, picks, offset)

    def _step(self) -> None:
        try:
            picks = self.batch.step()
        except Exception as e:
            rows = list(self.batch.rows)
            self.batch.keep([])
            self._isolate(rows, e)
            return
        self._keep_unfinished(self.batch, picks)

    def _isolate(self, rows: list[Row], error: Exception) -> None:
        """A batched forward pass raised: decode each of its rows alone, from where it was, so only the row that
        fails is failed (its request gets a 5xx naming the error) and the others still get their answers."""
        if len(rows) == 1:
            _log.error("generation failed", exc_info=error)
            self._settle(rows[0].owner, GenerationError(f"{type(error).__name__}: {error}"))
            return
        for row in rows:
            alone = DecodeBatch(self._forward, self.tok.pad_token_id)
            try:
                picks = alone.admit([row])
                while self._keep_unfinished(alone, picks):
                    picks = alone.step()
            except Exception as e:
                _log.exception("generation failed")
                self._settle(row.owner, GenerationError(f"{type(e).__name__}: {e}"))

    def _keep_unfinished(self, batch: DecodeBatch, picks: list[int], offset: int = 0) -> bool:
        """Give rows offset.. their picked tokens, settle those that are done, drop them; whether any row is left."""
        done = set()
        for i, token in enumerate(picks, start=offset):
            row = batch.rows[i]
            work: _Work = row.owner
            job = work.job
            if work.gen.abandoned:
                self._settle(work, None)
            elif token in (job.stop_ids or self.stops):
                self._settle(work, Outcome(row.ids, True))
            else:
                row.ids.append(token)
                if job.stream:
                    work.gen.tokens([token])
                if len(row.ids) < job.max_new_tokens and not self._at_stop_string(row, job):
                    continue
                self._settle(work, Outcome(row.ids, False))
            done.add(i)
        batch.keep([i for i in range(len(batch)) if i not in done])
        return bool(batch)

    def _at_stop_string(self, row: Row, job: Job) -> bool:
        if not job.stops:
            return False
        longest = max(map(len, job.stops))
        # a stop string ends within the last `longest` tokens (each decodes to at least one character)
        tail = self.tok.decode(row.ids[-longest - 1:], skip_special_tokens=True)
        return any(s and s in tail for s in job.stops)

    def _settle(self, w: _Work, result: Outcome | GenerationError | None) -> None:
        if w.settled:
            return
        w.settled = True
        with self._lock:  # first: the slot is free by the time the client, answered, asks again
            self._pending -= 1
        if isinstance(result, Outcome):
            w.gen.finish(result)
        elif result is not None:
            w.gen.fail(result)

    # ---- the model ------------------------------------------------------------------------

    def _forward(self, *, adapters: list[str | None], **inputs: Any) -> Any:
        """Last-position logits of one forward pass, each row through its own adapter (None: the base)."""
        import torch

        names = set(adapters)
        extra: dict[str, Any] = {}
        ctx: Any = contextlib.nullcontext()
        model = self.model
        if names == {None}:
            model = self.base_model if self.peft_type != "LORA" else model
            if model is not self.base_model:
                ctx = model.disable_adapter()  # LoRA layers sit inside the base model's own modules
        elif len(names) == 1:
            if self._active != adapters[0]:  # set_adapter walks every module: only when it changes
                model.set_adapter(adapters[0])
                self._active = adapters[0]
        else:
            extra["adapter_names"] = [a or "__base__" for a in adapters]
        with ctx, torch.no_grad():
            out = model(**inputs, use_cache=True, logits_to_keep=1, **extra)
        return out.logits[:, -1]

    def _can_mix(self, version: Version | None) -> bool:
        """Whether peft batches this version's adapter with other adapters' rows (LoRA without DoRA)."""
        if version is None:
            return True
        if version.id not in self._mixable:
            cfg = version.adapter_dir / "adapter_config.json"
            conf = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
            self._mixable[version.id] = conf.get("peft_type") == "LORA" and not conf.get("use_dora")
        return self._mixable[version.id]

    def _load(self, version: Version | None, in_use: set[str | None] = frozenset()) -> str | None:
        """The peft adapter name of `version`, loading its adapter first if need be (None: the base model)."""
        if version is None:
            return None
        if version.id in self.loaded:
            self.loaded.move_to_end(version.id)
            return self.loaded[version.id]
        from peft import PeftModel

        kind = version.peft_type
        if self.model is not self.base_model and kind != self.peft_type:
            # peft holds one adapter type per model (LoRA or prompt tuning): drop the loaded ones, which load
            # again when next asked for, and give the base back its own layers. Only base rows can be running:
            # the batch never holds rows of another adapter type.
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
        for vid, old in list(self.loaded.items()):  # least recently used first; never one a running row needs
            if len(self.loaded) <= self.settings.max_adapters:
                break
            if old not in in_use and old != name:
                del self.loaded[vid]
                self.model.delete_adapter(old)
        return name

    def _load_failed(self, work: list[_Work], error: Exception) -> None:
        version = work[0].job.adapter
        assert version is not None  # the base needs no loading
        _log.error("loading the adapter of %s failed", version.id, exc_info=error)
        for w in work:  # the message names the version; the path and traceback stay in the server's log
            self._settle(w, GenerationError(f"loading the adapter of {version.id} failed ({type(error).__name__}); "
                                            "the server log has the details"))

    # ---- adapters peft cannot mix: generate() per group -------------------------------------

    def _generate_group(self) -> None:
        """Decode the first waiting job together with the waiting jobs of its group, through generate()."""
        key = self.waiting[0].job.group_key()
        group = [w for w in self.waiting if w.job.group_key() == key][: self.settings.batch_size]
        for w in group:
            self.waiting.remove(w)
        self._guarded(group)

    def _guarded(self, work: list[_Work]) -> None:
        adapter = work[0].job.adapter
        try:
            self._active = self._load(adapter)
            self.model.set_adapter(self._active)
        except Exception as e:  # the group shares the adapter, so all of it fails
            self._load_failed(work, e)
            return
        try:
            results = self._generate([w.job for w in work], [w.gen for w in work])
        except Exception as e:
            if len(work) > 1:  # find the job that fails: the others of its batch still get their answers
                for w in work:
                    self._guarded([w])
                return
            _log.exception("generation failed")
            self._settle(work[0], GenerationError(f"{type(e).__name__}: {e}"))
            return
        for w, outcome in zip(work, results):
            self._settle(w, outcome)

    def _generate(self, jobs: list[Job], gens: list[Generation] = ()) -> list[Outcome]:
        """One batched generate() for jobs of one group; `gens` (when given) receive streamed tokens and
        can stop the batch by all being abandoned."""
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
        if j0.stops:
            kwargs.update(stop_strings=j0.stops, tokenizer=self.tok)
        if sample:
            kwargs.update(temperature=j0.temperature, top_p=j0.top_p)
            if j0.seed is not None:
                torch.manual_seed(j0.seed)
        if gens:
            kwargs["stopping_criteria"] = [_UntilAbandoned(gens)]
            if j0.stream:
                kwargs["streamer"] = _TokenSink(gens[0])
        base_only = j0.adapter is None and self.model is not self.base_model
        ctx = self.model.disable_adapter() if base_only else contextlib.nullcontext()
        with ctx, torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max(j.max_new_tokens for j in jobs),
                eos_token_id=stops, pad_token_id=pad, **kwargs,
            )
        results = []
        for row, j in zip(out[:, width:].tolist(), jobs):
            row = row[: j.max_new_tokens]
            end = next((k for k, t in enumerate(row) if t in stops), None)
            results.append(Outcome(row if end is None else row[:end], end is not None))
        return results


class _TokenSink:
    """A generate() streamer handing each step's new token ids to the job's Generation."""

    def __init__(self, gen: Generation):
        self._gen = gen
        self._prompt_skipped = False

    def put(self, value: Any) -> None:
        if not self._prompt_skipped:  # generate() first passes the prompt itself
            self._prompt_skipped = True
            return
        self._gen.tokens(value.reshape(-1).tolist())

    def end(self) -> None:
        pass  # the worker finishes the Generation with the trimmed ids once generate() returns


class _UntilAbandoned:
    """A generate() stopping criterion: stop decoding a batch nobody waits for."""

    def __init__(self, gens: list[Generation]):
        self._gens = gens

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = all(g.abandoned for g in self._gens)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
