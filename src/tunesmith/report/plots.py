"""Matplotlib figures shared by the reports (Agg backend: no display needed)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_figure(rows: list[dict[str, Any]]):
    """Train and validation loss against optimizer step, from metrics.jsonl rows."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train", color="#3b6ea8", linewidth=2)
    if val:
        ax.plot(*zip(*val), label="validation", color="#d9822b", linewidth=2, marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if train or val:  # a GRPO run logs rewards, not losses: an empty legend only warns on stderr
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig
