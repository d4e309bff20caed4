"""`tunesmith data render CONFIG`: training examples exactly as the model will see them.

Each example is rendered with the model's chat template and the config's max_seq_len and
over-length policy; trained tokens are bold green, the rest (system prompt, user turns,
template markup) dim. The counts are those training would report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.text import Text

from tunesmith.config import RunConfig, load_config
from tunesmith.train import tokenize as tk


def _segments(tokenizer, enc: tk.Encoded) -> list[dict[str, Any]]:
    """Runs of consecutive tokens with the same trained flag, decoded together (keeps multi-byte characters whole)."""
    segs: list[dict[str, Any]] = []
    start = 0
    flags = [lab != tk.IGNORE for lab in enc.labels]
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            segs.append({"text": tokenizer.decode(enc.input_ids[start:i]), "trained": flags[start]})
            start = i
    return segs


def render_examples(cfg: RunConfig, n: int = 3) -> dict[str, Any]:
    """The first `n` training examples as trained-or-not segments, plus the whole file's encode counts."""
    from tunesmith.models import load_tokenizer
    from tunesmith.train.base import tokenizer_dir
    from tunesmith.train.dataset import TrainingDataError, load_training_records, read_records
    from tunesmith.train.objective import find_objective

    obj = find_objective(cfg.objective)
    if not obj.tokens:
        raise TrainingDataError(
            f"render shows examples of the objectives that train on labelled tokens (sft, pretrain); "
            f"objective {cfg.objective} does not"
        )
    if not cfg.data.train:
        raise TrainingDataError("data.train is not set")
    tokenizer = load_tokenizer(tokenizer_dir(cfg.model), cfg.trust_remote_code, chat=obj.chat,
                               chat_template=cfg.data.chat_template)
    records = read_records(cfg.data.train, cfg.data.format, cfg.data.system_prompt, obj.record_type, cfg.objective)
    # The counts cover what training encodes: the data.mix sources too (the examples shown stay data.train's first).
    trained = load_training_records(cfg, obj.record_type)[0]["train"] if cfg.data.mix else records
    _, report = tk.encode_dataset(tokenizer, trained, cfg.data.max_seq_len, cfg.data.over_length)
    shown = []
    for i, record in enumerate(records):
        if len(shown) == n:
            break
        enc = tk.apply_length_policy(tk.encode_record(tokenizer, record), cfg.data.max_seq_len, cfg.data.over_length)
        if enc is None or enc.n_trained == 0:
            continue
        shown.append({"origin": tk.record_location(record, i), "tokens": len(enc.input_ids), "trained": enc.n_trained,
                      "truncated": enc.truncated, "segments": _segments(tokenizer, enc)})
    return {"examples": shown, "report": report.to_dict()}


def print_rendered(result: dict[str, Any], console: Console) -> None:
    for ex in result["examples"]:
        cut = ", truncated" if ex["truncated"] else ""
        console.print(Text(f"── {ex['origin']}: {ex['tokens']} tokens, {ex['trained']} trained{cut}", style="bold"),
                      soft_wrap=True)
        text = Text()
        for seg in ex["segments"]:
            text.append(seg["text"], style="bold green" if seg["trained"] else "dim")
        console.print(text, soft_wrap=True)
    r = result["report"]
    console.print(
        f"{r['kept']} of {r['total']} examples train; {r['trained_tokens']} of {r['total_tokens']} tokens trained "
        f"({r['trained_tokens'] / max(r['total_tokens'], 1):.0%}); {r['truncated']} truncated, "
        f"{len(r['dropped_over_length'])} dropped as over-length, {len(r['dropped_no_trained_tokens'])} dropped "
        f"with no trained token left; end-of-turn token trained: {'yes' if r['eos_trained'] else 'NO'}",
        highlight=False,
    )


def render(
    config: Path = typer.Argument(..., help="Run config YAML; its data.train, model, max_seq_len and policy are used."),
    n: int = typer.Option(3, "--n", min=0, help="How many examples to show."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field: --set data.max_seq_len=256."),
    as_json: bool = typer.Option(False, "--json", help="Print examples as text segments and counts, one JSON object."),
) -> None:
    """Show training examples as the model sees them: trained tokens bold green, the rest dim, with counts.

    Example: tunesmith data render examples/legal-bot.yaml --n 2
    """
    from tunesmith.train.cli import _fail, user_errors

    try:
        result = render_examples(load_config(config, set_ or []), n)
    except user_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        print_rendered(result, Console(highlight=False))
