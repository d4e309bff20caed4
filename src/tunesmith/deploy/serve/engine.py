"""What the serving layer needs from whatever runs the model: the contract an engine keeps.

An engine takes a `Job` (prompt token ids, an adapter, sampling) and hands back a `Generation`: token ids
as they are decoded (for a streaming job), then an `Outcome`, or an error. Engines run the model on their
own thread or process; `Generation` carries their output into the serving event loop without holding a
thread per waiting request. The embedded engine (embedded.py) is one; a child-process engine keeps the
same contract.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, NamedTuple, Protocol

from tunesmith.deploy.registry import Version


class EngineError(Exception):
    """Why an engine could not answer one job; serving turns each kind into its HTTP status."""


class QueueFull(EngineError):
    pass


class EngineDead(EngineError):
    pass


class Unservable(EngineError):
    """This engine cannot run the asked version at all (the message names it and says why)."""


class GenerationError(EngineError):
    """Generation of one job failed; the engine goes on with the next."""


class GenerationTimeout(EngineError):
    pass


@dataclass
class Job:
    adapter: Version | None  # None: the base model
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stops: list[str]  # stop strings: generation halts at one; serving cuts the text there
    stream: bool = False  # hand tokens over as they are decoded
    stop_ids: list[int] | None = None  # the answering version's end tokens; None: the base tokenizer's

    def group_key(self) -> tuple:
        seed = self.seed if self.temperature > 0 else None  # greedy requests batch whatever their seed
        return (self.adapter.id if self.adapter else None, self.temperature, self.top_p, seed, tuple(self.stops))


class Outcome(NamedTuple):
    ids: list[int]  # the completion's token ids, end token cut off
    hit_eos: bool


class Generation:
    """One job's output on its way from the engine's thread to the event loop that submitted it.

    The engine calls tokens/finish/fail from any thread; the serving side reads `events` and calls
    `abandon` when nobody waits any more (timeout, client gone), so the engine can skip or stop the job.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[int] | Outcome | GenerationError] = asyncio.Queue()
        self._abandoned = threading.Event()

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    def abandon(self) -> None:
        self._abandoned.set()

    def tokens(self, ids: list[int]) -> None:
        self._put(ids)

    def finish(self, outcome: Outcome) -> None:
        self._put(outcome)

    def fail(self, error: GenerationError) -> None:
        self._put(error)

    def _put(self, item: list[int] | Outcome | GenerationError) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop that asked has closed: nobody will read this
            self.abandon()

    async def events(self, timeout_s: float) -> AsyncIterator[list[int] | Outcome]:
        """Token id lists (streaming jobs), then the Outcome. Each wait is bounded by timeout_s."""
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout_s)
                except asyncio.TimeoutError:
                    raise GenerationTimeout(f"no output within {timeout_s:g} s") from None
                if isinstance(item, GenerationError):
                    raise item
                yield item
                if isinstance(item, Outcome):
                    return
        finally:
            self.abandon()  # also on cancellation: a request that went away stops its generation


class Engine(Protocol):
    tok: Any  # the tokenizer prompts are encoded with and answers decoded with
    stops: list[int]  # the base model's end tokens
    generation_config: Any  # the base model's, for the end tokens of versions
    context: int | None  # most tokens a prompt plus its answer may hold

    def submit(self, job: Job) -> Generation:
        """Queue one job; QueueFull or EngineDead at once rather than a wait."""

    def loaded_adapters(self) -> list[str]:
        """Version ids whose adapters are in memory now."""

    def health(self) -> dict[str, Any]:
        """worker_alive, queue_depth, loaded_adapters, and `error` (why the worker died, else None)."""

    def stop(self) -> None: ...
