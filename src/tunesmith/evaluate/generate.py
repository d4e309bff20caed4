"""Batched greedy generation: left padding, KV cache, prompts sorted by length to waste little padding."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


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
    max_new_tokens: int = 256,
    batch_size: int = 16,
    label: str = "generate",
    console: Console | None = None,
    show_progress: bool = True,
) -> list[str]:
    """One answer per conversation (the chat template's generation prompt appended), in input order."""
    import torch

    from tunesmith.models import stop_token_ids

    texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    outputs: list[str] = [""] * len(texts)
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
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
                )
            for row, i in zip(out, idx):
                outputs[i] = tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            if progress:
                progress.update(task, advance=len(idx))
    finally:
        tokenizer.padding_side = side
        if progress:
            progress.stop()
    return outputs
