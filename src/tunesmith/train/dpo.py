"""Preference tuning with TRL's DPOTrainer: prompt + chosen/rejected answers, in chat form.

TRL tokenizes the pairs with the model's chat template. Lengths are measured here first so
that the over-length policy (truncate | drop | error) is applied and counted like for SFT;
with `truncate`, TRL keeps the start of each sequence up to max_seq_len, and a pair whose
prompt alone fills max_seq_len is dropped here and counted (TRL would drop it silently). With a PEFT
adapter the reference model is the same network with the adapter switched off, so no
second copy is loaded; full fine-tuning keeps a frozen copy as the reference.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tunesmith.config import RunConfig
from tunesmith.data.records import Preference
from tunesmith.train.tokenize import EncodeReport, TemplateError


def _row(p: Preference) -> dict[str, Any]:
    return {
        "prompt": [m.to_dict() for m in p.prompt],
        "chosen": [{"role": "assistant", "content": p.chosen}],
        "rejected": [{"role": "assistant", "content": p.rejected}],
    }


def _ids(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
    from tunesmith.train.tokenize import render_chat

    return list(render_chat(tokenizer, messages, tokenize=True, return_dict=True,
                            add_generation_prompt=generation_prompt)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _lengths(tokenizer, row: dict[str, Any]) -> tuple[int, list[int]]:
    """Prompt tokens and prompt+answer tokens of each side, split where TRL splits them (common prefix)."""
    prompt = _ids(tokenizer, row["prompt"], generation_prompt=True)
    sides = [_ids(tokenizer, row["prompt"] + row[side]) for side in ("chosen", "rejected")]
    return min(_common_prefix(prompt, s) for s in sides), [len(s) for s in sides]


def _rows(cfg: RunConfig, tokenizer, records: list[Preference], policy: str) -> tuple[list[dict], EncodeReport]:
    from tunesmith.train.sft import DataError, record_location

    limit = cfg.data.max_seq_len
    report = EncodeReport(total=len(records))
    rows = []
    for i, rec in enumerate(records):
        row = _row(rec)
        try:
            prompt_len, lengths = _lengths(tokenizer, row)
        except TemplateError as e:
            raise DataError(f"{record_location(rec, i)}: {e}") from None
        n = max(lengths)
        if n > limit:
            where = record_location(rec, i)
            if policy == "error":
                raise DataError(f"{where}: pair has {n} tokens, over max_seq_len={limit} (data.over_length: error)")
            if policy == "drop":
                report.dropped_over_length.append(where)
                continue
            report.truncated.append(where)
            if prompt_len >= limit:  # TRL keeps the start: no answer token would be left, and it drops the pair
                report.dropped_no_trained_tokens.append(where)
                continue
        report.total_tokens += sum(min(k, limit) for k in lengths)
        report.trained_tokens += sum(min(k, limit) - prompt_len for k in lengths)
        rows.append(row)
    report.kept = len(rows)
    if not rows:
        raise DataError(
            f"no preference pair is left of {report.total}: {len(report.dropped_over_length)} dropped as over-length, "
            f"{len(report.dropped_no_trained_tokens)} with a prompt that fills max_seq_len={limit}"
        )
    return rows, report


def preference_datasets(cfg: RunConfig, tokenizer, splits, console: Console):
    from datasets import Dataset

    from tunesmith.train.sft import DataError, report_cuts

    rows, report = _rows(cfg, tokenizer, splits["train"], cfg.data.over_length)
    report_cuts(report, cfg, console)
    eval_ds = None
    if splits.get("val"):
        try:
            val_rows, report.val = _rows(cfg, tokenizer, splits["val"], "truncate")
        except DataError as e:
            raise DataError(f"data.val: {e}") from None
        report_cuts(report.val, cfg, console, "val", "truncate")
        eval_ds = Dataset.from_list(val_rows)
    return Dataset.from_list(rows), eval_ds, report


def dpo_trainer(cfg: RunConfig, model, tokenizer, common: dict[str, Any], train_ds, eval_ds, callbacks):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common, beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type], max_length=cfg.data.max_seq_len,
                     dataset_num_proc=None)
    return DPOTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)
