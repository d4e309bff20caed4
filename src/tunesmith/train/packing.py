"""Token-budget rows: examples packed best-fit-decreasing into rows of a fixed number of token slots.

Why fixed rows: every micro-batch then has the same shape, so compiled kernels are reused step
after step and the attention plan is never rebuilt for a new length; the batch is sized by
tokens (what costs time and memory), not by a count of examples of any length.

Each row carries, per slot:
  input_ids      the example tokens, then the pad id in the tail
  shift_labels   the next token's label inside the same example; -100 on an example's last
                 token (it would predict the next example), on untrained tokens and on the tail
  position_ids   0.. restarting at every example (and every tail segment)
  doc_ids        0, 1, 2… one id per example, then one per tail segment: attention stays
                 inside a document (train/attention.py)
and per row real_tokens (slots holding example tokens) for the throughput count.
The tail is cut into segments no longer than the longest example, so no position exceeds
what the model already sees in the data.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tunesmith.train.tokenize import IGNORE, Encoded


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `capacity` (longest first, each into the fullest bin
    it fits). Deterministic: ties are broken by index, so the same data always packs the same way."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {capacity} slots")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free slots, bin index), sorted: bisect finds the tightest fit
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            bins.append([i])
            bin_index = len(bins) - 1
            left = capacity - n
        else:
            left, bin_index = free.pop(k)
            bins[bin_index].append(i)
            left -= n
        bisect.insort(free, (left, bin_index))
    return bins


@dataclass
class PackStats:
    rows: int
    row_tokens: int
    examples: int
    real_tokens: int
    trained_tokens: int
    length_sq: int  # Σ example length²: the attention work, for MFU

    @property
    def pad_fraction(self) -> float:
        return 1 - self.real_tokens / (self.rows * self.row_tokens)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "row_tokens": self.row_tokens, "examples": self.examples,
                "real_tokens": self.real_tokens, "trained_tokens": self.trained_tokens, "length_sq": self.length_sq,
                "pad_fraction": round(self.pad_fraction, 4)}


def build_row(examples: list[Encoded], row_tokens: int, pad_id: int, max_segment: int) -> dict[str, list[int]]:
    ids: list[int] = []
    targets: list[int] = []
    positions: list[int] = []
    docs: list[int] = []
    for d, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids += ex.input_ids
        targets += ex.labels[1:] + [IGNORE]
        positions += range(n)
        docs += [d] * n
    d = len(examples)
    real = len(ids)
    tail = row_tokens - len(ids)
    while tail > 0:
        n = min(tail, max_segment)
        ids += [pad_id] * n
        targets += [IGNORE] * n
        positions += range(n)
        docs += [d] * n
        d += 1
        tail -= n
    return {"input_ids": ids, "shift_labels": targets, "position_ids": positions, "doc_ids": docs,
            "real_tokens": real}


def auto_row_tokens(encoded: list[Encoded], examples_per_row: int, multiple: int = 128) -> int:
    """Slots for about `examples_per_row` examples of the mean length, never fewer than the longest example,
    rounded up to a multiple of 128 (the attention block size)."""
    lengths = [len(e.input_ids) for e in encoded]
    want = max(max(lengths), round(examples_per_row * sum(lengths) / len(lengths)))
    return -(-want // multiple) * multiple


def pack_rows(encoded: list[Encoded], row_tokens: int, pad_id: int):
    """A `datasets.Dataset` of rows (columns above) and its stats; every example lands in exactly one row."""
    from datasets import Dataset

    lengths = [len(e.input_ids) for e in encoded]
    bins = best_fit_decreasing(lengths, row_tokens)
    max_segment = max(lengths)
    rows = [build_row([encoded[i] for i in b], row_tokens, pad_id, max_segment) for b in bins]
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    stats = PackStats(rows=len(rows), row_tokens=row_tokens, examples=len(encoded), real_tokens=sum(lengths),
                      trained_tokens=sum(sum(1 for t in r["shift_labels"] if t != IGNORE) for r in rows),
                      length_sq=sum(n * n for n in lengths))
    return Dataset.from_dict(columns), stats


def collate_rows(rows: list[dict]) -> dict:
    """Micro-batch of rows as tensors. `labels` duplicates shift_labels: the Trainer counts the batch's
    trained tokens (for loss scaling under gradient accumulation) from shift_labels when a batch has labels.
    keep/targets: trained positions and their next tokens. real_tokens stays a Python int: it feeds the
    throughput count without a device sync."""
    import torch

    batch = {k: torch.tensor([r[k] for r in rows]) for k in ("input_ids", "shift_labels", "position_ids", "doc_ids")}
    batch["labels"] = batch["shift_labels"]
    # Trained positions of the flattened batch, found here on the CPU: on the GPU, nonzero() would wait
    # for the device to drain every step.
    flat = batch["shift_labels"].reshape(-1)
    batch["keep"] = (flat != IGNORE).nonzero().squeeze(-1)
    batch["targets"] = flat[batch["keep"]]
    batch["real_tokens"] = sum(r["real_tokens"] for r in rows)
    return batch
