"""The in-process engine: one base model in memory, many adapters, one worker thread that owns them.

The worker takes whatever is queued, groups jobs by adapter and sampling (one `set_adapter` per group,
one batched `generate` per group of plain jobs; a streaming job is decoded alone) and hands each job's
result to its Generation. Nothing one job does may end the worker: a job nobody waits for is skipped or
stopped, a job whose generation raises fails alone, and a fault in the loop itself is recorded so
/health can say the worker is dead instead of every request hanging.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from tunesmith.deploy.registry import Version
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
            groups: dict[tuple, list[_Work]] = {}
            for work in batch:
                groups.setdefault(work.job.group_key(), []).append(work)
            for group in groups.values():
                plain = [w for w in group if not w.job.stream]
                for i in range(0, len(plain), self.settings.batch_size):
                    self._guarded(plain[i:i + self.settings.batch_size])
                for w in group:
                    if w.job.stream:
                        self._guarded([w])
        except Exception as e:  # a fault outside generation: fail what is left of this batch, keep serving
            for w in batch:
                self._settle(w, GenerationError(f"{type(e).__name__}: {e}"))
        return True

    def _gather(self, first: _Work) -> list[_Work]:
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
        return batch

    def _guarded(self, work: list[_Work]) -> None:
        for w in work:
            if w.gen.abandoned:  # its request timed out while queued, or hung up
                self._settle(w, None)
        work = [w for w in work if not w.settled]
        if not work:
            return
        adapter = work[0].job.adapter
        try:
            self._activate(adapter)
        except Exception as e:  # the group shares the adapter, so all of it fails
            assert adapter is not None  # the base needs no loading
            _log.exception("loading the adapter of %s failed", adapter.id)
            for w in work:  # the message names the version; the path and traceback stay in the server's log
                self._settle(w, GenerationError(f"loading the adapter of {adapter.id} failed ({type(e).__name__}); "
                                                "the server log has the details"))
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
