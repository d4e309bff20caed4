"""What `tunesmith serve` can be told; shared by the engine (queue, batching) and serving (caps, timeout)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


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
    batch_size: int = Field(32, description="Most requests decoded together; more wait and join as others finish.")
    max_adapters: int = Field(16, description="Adapters kept loaded; the least recently used is unloaded beyond it.")
    retries: int = Field(2, description="Extra sampled attempts for an alias whose guard is 'retry'.")
    timeout_s: float = Field(300, description="A request waiting longer than this for its next output is answered "
                                              "503.")
    seed: int | None = Field(None, description="Seed for traffic-split choices (tests, reproducible canaries).")
