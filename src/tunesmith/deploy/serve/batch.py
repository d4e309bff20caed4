"""A decode batch that requests join and leave between steps (continuous batching) over a transformers model.

transformers' own continuous batching (`generate_batch`) packs every request into one flattened sequence, so
peft cannot give each request its own LoRA adapter; here each request is one row of an ordinary batch, and peft's
mixed-batch forward (`adapter_names`) applies each row's adapter in the same forward pass.

Rows are left-padded to a common width: the key/value cache, the attention mask and the position ids are those
`generate()` would build for a left-padded batch. A joining row is prefilled on its own cache, padded on the left
to the running width (or the running rows are) and concatenated on the batch axis; a leaving row is taken out
with `batch_select_indices`, and columns that are padding in every remaining row are cut off the left. The cache
is a config-less DynamicCache, so every layer keeps all its keys: sliding-window layers (Gemma 3) get their window
from the attention mask, not from a rolling buffer that could not be padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import DynamicCache

# model(input_ids, attention_mask, position_ids, past_key_values, adapters) -> last-position logits [rows, vocab]
Forward = Callable[..., torch.Tensor]


@dataclass
class Row:
    """One request's place in the batch: what it decodes with and what it has decoded."""

    prompt: list[int]
    adapter: str | None  # the peft adapter name, None for the base model
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ids: list[int] = field(default_factory=list)  # decoded so far
    owner: Any = None  # the engine's record of the request
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.temperature > 0:
            self.generator = torch.Generator()
            if self.seed is not None:
                self.generator.manual_seed(self.seed)
            else:
                self.generator.seed()


class DecodeBatch:
    """The running rows and their cache. `admit` prefills joining rows and returns their first tokens; `step`
    feeds every row its last token and returns each row's next one; `keep` drops the rows that are done."""

    def __init__(self, forward: Forward, pad_id: int):
        self._forward, self._pad = forward, pad_id
        self.rows: list[Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, width]: 1 where the cache holds a real token
        self._last: torch.Tensor | None = None  # [rows, 1]: each row's newest token, not yet in the cache

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, rows: list[Row]) -> list[int]:
        """Prefill `rows` (prompt plus what each already decoded) and join them to the batch; their next tokens."""
        seqs = [r.prompt + r.ids for r in rows]
        width = max(map(len, seqs))
        ids = torch.tensor([[self._pad] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        cache = DynamicCache()
        logits = self._forward(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                               past_key_values=cache, adapters=[r.adapter for r in rows])
        picks = sample(logits, rows)
        last = torch.tensor(picks).unsqueeze(1)
        if self._cache is None:
            self._cache, self._mask, self._last = cache, mask, last
        else:
            assert self._mask is not None and self._last is not None
            grow = max(self._mask.shape[1], width)
            _pad_left(self._cache, grow - self._mask.shape[1])
            _pad_left(cache, grow - width)
            for mine, theirs in zip(self._cache.layers, cache.layers):
                mine.keys = torch.cat([mine.keys, theirs.keys])
                mine.values = torch.cat([mine.values, theirs.values])
            self._mask = torch.cat([_pad_mask(self._mask, grow), _pad_mask(mask, grow)])
            self._last = torch.cat([self._last, last])
        self.rows += rows
        return picks

    def step(self) -> list[int]:
        """One decoding step for every row; the token each row picks next."""
        assert self._cache is not None and self._mask is not None and self._last is not None
        mask = torch.cat([self._mask, torch.ones(len(self.rows), 1, dtype=self._mask.dtype)], dim=1)
        logits = self._forward(input_ids=self._last, attention_mask=mask, position_ids=_positions(mask)[:, -1:],
                               past_key_values=self._cache, adapters=[r.adapter for r in self.rows])
        self._mask = mask
        picks = sample(logits, self.rows)
        self._last = torch.tensor(picks).unsqueeze(1)
        return picks

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at these indices (in order); the cache loses the others and any all-padding prefix."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._last = None
            return
        assert self._cache is not None and self._mask is not None and self._last is not None
        idx = torch.tensor(keep)
        self._cache.batch_select_indices(idx)
        self._mask, self._last = self._mask[idx], self._last[idx]
        # the cache's width is how far back the longest remaining row reaches
        used = self._mask.any(dim=0).nonzero()
        cut = int(used[0]) if len(used) else self._mask.shape[1]
        if cut:
            self._mask = self._mask[:, cut:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]


def sample(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Each row's next token: the argmax for greedy rows, else a draw at its temperature and top_p."""
    picks = logits.argmax(dim=-1)
    for i, row in enumerate(rows):
        if row.temperature <= 0:
            continue
        scaled = logits[i].float() / row.temperature
        if row.top_p < 1.0:
            order = scaled.argsort(descending=True)
            probs = scaled[order].softmax(-1)
            # drop the tail beyond top_p, always keeping the most likely token
            drop = probs.cumsum(-1) - probs > row.top_p
            scaled[order[drop]] = float("-inf")
        picks[i] = torch.multinomial(scaled.softmax(-1), 1, generator=row.generator)[0]
    return picks.tolist()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as generate() gives a left-padded batch: real tokens count from 0; padding says 1."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _pad_left(cache: DynamicCache, n: int) -> None:
    if n <= 0:
        return
    for layer in cache.layers:
        k, v = layer.keys, layer.values
        layer.keys = torch.cat([k.new_zeros(*k.shape[:2], n, k.shape[3]), k], dim=2)
        layer.values = torch.cat([v.new_zeros(*v.shape[:2], n, v.shape[3]), v], dim=2)


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([mask.new_zeros(mask.shape[0], width - mask.shape[1]), mask], dim=1)
