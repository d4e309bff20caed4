"""Preference tuning with TRL's DPOTrainer: prompt + chosen/rejected answers, in chat form.

TRL tokenizes the pairs with the model's chat template. Lengths are measured here first so
that the over-length policy (truncate | drop | error) is applied and counted like for SFT;
with `truncate`, TRL keeps the start of each sequence up to max_seq_len. With a PEFT
adapter the reference model is the same network with the adapter switched off, so no
second copy is loaded; full fine-tuning keeps a frozen copy as the reference.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tunesmith.config import RunConfig
from tunesmith.data.records import Preference
from tunesmith.train.tokenize import EncodeReport


def _row(p: Preference) -> dict[str, Any]:
    return {
        "prompt": [m.to_dict() for m in p.prompt],
        "chosen": [{"role": "assistant", "content": p.chosen}],
        "rejected": [{"role": "assistant", "content": p.rejected}],
    }


def _length(tokenizer, row: dict[str, Any]) -> int:
    return max(
        len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)["input_ids"])
        for side in ("chosen", "rejected")
    )


def _rows(cfg: RunConfig, tokenizer, records: list[Preference], policy: str) -> tuple[list[dict], EncodeReport]:
    from tunesmith.train.sft import DataError, record_location

    report = EncodeReport(total=len(records))
    rows = []
    for i, rec in enumerate(records):
        row = _row(rec)
        n = _length(tokenizer, row)
        report.total_tokens += min(n, cfg.data.max_seq_len)
        if n > cfg.data.max_seq_len:
            where = record_location(rec, i)
            if policy == "error":
                raise DataError(f"{where}: pair has {n} tokens, over max_seq_len={cfg.data.max_seq_len} "
                                "(data.over_length: error)")
            if policy == "drop":
                report.dropped_over_length.append(where)
                continue
            report.truncated.append(where)
        rows.append(row)
    report.kept = len(rows)
    if not rows:
        raise DataError("no preference pair is left after the over-length policy")
    return rows, report


def preference_datasets(cfg: RunConfig, tokenizer, splits, console: Console):
    from datasets import Dataset

    from tunesmith.train.sft import report_cuts

    rows, report = _rows(cfg, tokenizer, splits["train"], cfg.data.over_length)
    report_cuts(report, cfg, console)
    eval_ds = None
    if splits.get("val"):
        val_rows, _ = _rows(cfg, tokenizer, splits["val"], "truncate")
        eval_ds = Dataset.from_list(val_rows)
    return Dataset.from_list(rows), eval_ds, report


def dpo_trainer(cfg: RunConfig, model, tokenizer, common: dict[str, Any], train_ds, eval_ds, callbacks):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common, beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type], max_length=cfg.data.max_seq_len,
                     dataset_num_proc=None)
    return DPOTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)
