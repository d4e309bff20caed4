"""Batched greedy generation: left padding, KV cache, prompts sorted by length to waste little padding.

A per-conversation `max_new_tokens` keeps short answers from paying for long ones: batches never mix
limits, and each batch stops as soon as every row in it has produced a stop token. `generate_counted` also
counts tokens and says which answers ended on a stop token: a pretrained base model's answers run to the limit instead."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def set_cpu_threads() -> int:
    """Torch threads for a CPU run: as many as torch would use on an idle machine, fewer (down to one) when
    others keep the cores busy; never more than already set.
    Torch's threads wait for each other at every matmul, so a thread that loses its core stalls the rest:
    measured on 2 busy cores (load 10), 8 short greedy answers took 29 s on one thread and 336 s on two."""
    import torch

    if torch.cuda.is_available():
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    threads = max(1, min(torch.get_num_threads(), int(cores - busy_cores() + 0.5)))
    torch.set_num_threads(threads)
    return threads


def busy_cores(window_s: float = 0.3) -> float:
    """Cores other processes keep busy now: /proc/stat sampled over `window_s`. The load average answers
    for the last minute, so right after a busy spell it would keep an idle machine on one thread (seen:
    load 0.9 on an idle 2-core box, a quickstart trained on one thread)."""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = sample()
    if first is None:
        return os.getloadavg()[0]
    time.sleep(window_s)
    second = sample()
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total if total > 0 else 0.0


def progress_bar(console: Console | None = None, label: str = "generate") -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console or Console(stderr=True),
    )


def generate(
    model,
    tokenizer,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int | Sequence[int] = 256,
    batch_size: int = 16,
    label: str = "generate",
    console: Console | None = None,
    show_progress: bool = True,
) -> list[str]:
    """One answer per conversation (the chat template's generation prompt appended), in input order;
    `max_new_tokens`: one limit for all, or one per conversation."""
    return generate_counted(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            label=label, console=console, show_progress=show_progress)[0]


def generate_counted(
    model,
    tokenizer,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int | Sequence[int] = 256,
    batch_size: int = 16,
    label: str = "generate",
    console: Console | None = None,
    show_progress: bool = True,
) -> tuple[list[str], list[tuple[int, int]], list[bool]]:
    """`generate`'s answers; (prompt, completion) tokens per conversation as the model saw and produced
    them: the completion up to and including its stop token (what an API's `usage` counts), special tokens
    and whitespace that the decoded answer drops included; and whether each ended on a stop token (False:
    it ran to its token limit)."""
    import torch

    from tunesmith.models import stop_token_ids

    texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    limits = [max_new_tokens] * len(texts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(texts):
        raise ValueError(f"{len(limits)} max_new_tokens for {len(texts)} conversations")
    order = sorted(range(len(texts)), key=lambda i: (-limits[i], -lengths[i]))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and limits[batches[-1][0]] == limits[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    outputs: list[str] = [""] * len(texts)
    counts: list[tuple[int, int]] = [(n, 0) for n in lengths]
    stopped: list[bool] = [False] * len(texts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None)) or None
    model.eval()
    device = next(model.parameters()).device
    progress = progress_bar(console, label) if show_progress else None
    try:
        if progress:
            progress.start()
            task = progress.add_task(label, total=len(texts))
        for idx in batches:
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc, max_new_tokens=limits[idx[0]], do_sample=False, eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
                )
            for row, i in zip(out, idx):
                new = row[enc["input_ids"].shape[1]:].tolist()
                outputs[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
                stop = next((k for k, t in enumerate(new) if t in (stop_ids or ())), None)
                counts[i] = (lengths[i], len(new) if stop is None else stop + 1)
                # padding follows only a row's own stop token, so a row without one ran to the limit
                stopped[i] = stop is not None
            if progress:
                progress.update(task, advance=len(idx))
    finally:
        tokenizer.padding_side = side
        if progress:
            progress.stop()
    return outputs, counts, stopped
