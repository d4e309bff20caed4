"""What will training on this data cost? Tokens are counted with the model's own tokenizer and chat
template, then priced for managed fine-tuning APIs (prices.yaml, editable) and for renting a GPU
(hours from the throughput estimate in memory.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.plan.memory import Method, estimate_step_time
from tunesmith.plan.shapes import ModelShape
from tunesmith.errors import UserError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
# Throughput is estimated for micro-batches of about this many tokens (packed or padding-free), since
# per-micro-batch host costs dominate small batches (see memory.py).
_TOKENS_PER_MICRO_BATCH = 8192


class ManagedPrice(BaseModel):
    provider: str
    model: str
    usd_per_million_training_tokens: float = Field(ge=0, allow_inf_nan=False)


class SelfHosted(BaseModel):
    gpu_hour_usd: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: str
    note: str = ""
    managed: list[ManagedPrice]
    self_hosted: SelfHosted


class PriceError(UserError):
    pass


def load_prices(path: Path = DEFAULT_PRICES) -> PriceTable:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, unreadable, not text
        raise PriceError(f"{path}: cannot read a price table ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PriceError(f"{where}: not valid YAML") from None
    try:
        # as_of is often written as a bare date, which YAML parses as a date object
        if isinstance(raw, dict) and "as_of" in raw:
            raw["as_of"] = str(raw["as_of"])
        return PriceTable.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PriceError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def apply_length_policy(counts: list[int], max_seq_len: int, policy: str = "truncate") -> list[int]:
    """Token counts as training keeps them under data.over_length: cut to max_seq_len, the longer records left
    out ("drop"), or a PriceError naming how many are over ("error", which would stop training)."""
    over = sum(c > max_seq_len for c in counts)
    if policy == "drop":
        return [c for c in counts if c <= max_seq_len]
    if policy == "error" and over:
        raise PriceError(f"{over} record(s) over max_seq_len={max_seq_len} tokens; with data.over_length: error "
                         "training would stop on the first")
    return [min(c, max_seq_len) for c in counts]


@dataclass
class CostEstimate:
    records: int
    tokens_per_epoch: int
    mean_tokens_per_record: float
    max_tokens_per_record: int
    epochs: int
    training_tokens: int
    managed: list[dict]
    self_hosted: dict
    prices_as_of: str
    prices_note: str

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_cost(
    counts: list[int],
    epochs: int,
    prices: PriceTable,
    shape: ModelShape | None,
    method: Method = "lora",
    gpu: str = "h100",
    mfu: float | None = None,
    tokens_per_second: float | None = None,
    gpu_hour_usd: float | None = None,
) -> CostEstimate:
    if epochs < 1:
        raise UserError("epochs must be at least 1")
    per_epoch = sum(counts)
    total = per_epoch * epochs
    mean_len = per_epoch / len(counts)
    managed = [
        {
            "provider": p.provider,
            "model": p.model,
            "usd_per_million_training_tokens": p.usd_per_million_training_tokens,
            "usd": round(total / 1e6 * p.usd_per_million_training_tokens, 4),
        }
        for p in prices.managed
    ]
    if tokens_per_second is None:
        if shape is None:
            raise PriceError("no model shape (config.json) to estimate throughput from; pass --tokens-per-second")
        seq_len = max(1, round(mean_len))
        batch = max(1, _TOKENS_PER_MICRO_BATCH // seq_len)
        tokens_per_second = estimate_step_time(shape, method, seq_len, batch, gpu=gpu, mfu=mfu).tokens_per_second
    if tokens_per_second <= 0:
        raise UserError("tokens per second must be positive")
    if gpu_hour_usd is None:
        if gpu not in prices.self_hosted.gpu_hour_usd:
            raise PriceError(f"no GPU-hour price for {gpu!r} in the price table; pass --gpu-hour-usd")
        gpu_hour_usd = prices.self_hosted.gpu_hour_usd[gpu]
    hours = total / tokens_per_second / 3600
    return CostEstimate(
        records=len(counts),
        tokens_per_epoch=per_epoch,
        mean_tokens_per_record=round(mean_len, 2),
        max_tokens_per_record=max(counts),
        epochs=epochs,
        training_tokens=total,
        managed=managed,
        self_hosted={
            "model": shape.name if shape else None,
            "method": method,
            "gpu": gpu,
            "tokens_per_second": tokens_per_second,
            "gpu_hours": round(hours, 6),
            "gpu_hour_usd": gpu_hour_usd,
            "usd": round(hours * gpu_hour_usd, 4),
        },
        prices_as_of=prices.as_of,
        prices_note=prices.note,
    )

