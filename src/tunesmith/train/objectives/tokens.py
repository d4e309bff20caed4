"""What sft and pretrain share: examples tokenized here (not by TRL), trained on the plain or the fast path.

Tokenizing here means the assistant mask comes from the model's own chat template for any
template, and every cut or dropped example is counted in the run's report. On the plain path
batches are packed padding-free: the examples of a batch are concatenated into one row and
position_ids restart at 0 for each, from which transformers builds a block-diagonal causal
mask (tests/train/test_packing.py checks that a packed batch gives exactly the per-example
losses). On a CUDA GPU the fast path runs instead (train/fast.py: rows of a token budget,
FlexAttention, compiled layers, fused loss; `train.performance`), on the same Trainer machinery.
"""

from __future__ import annotations

from tunesmith.config import RunConfig
from tunesmith.train import tokenize as tk
from tunesmith.train.objective import Built, Data, Setup
from tunesmith.train.tokenize import DataError


def token_data(cfg: RunConfig, tokenizer, splits, console, check=None) -> Data:
    """Encoded train and val examples (input_ids + labels); `check(report)` vets the train split."""
    train, val, report = tk.encode_splits(tk.encode_dataset, tokenizer, splits, cfg.data.max_seq_len,
                                          cfg.data.over_length, console, check)
    return Data(train, val, report)


def check_context(model, data: Data) -> None:
    """An example longer than the model's positions fails deep in the forward pass (GPT-2's learned position
    embeddings: IndexError); name it and the limit instead."""
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max((len(e.input_ids) for e in (data.train or []) + (data.val or [])), default=0)
    if limit and longest > limit:
        raise DataError(f"an example has {longest} tokens but the model takes at most {limit} positions "
                        f"(max_position_embeddings); set data.max_seq_len to {limit} or less")


def wants_fast_path(cfg: RunConfig, packing: bool) -> tuple[bool, str | None]:
    """Whether this run takes train/fast.py, and why not when the config asked for it."""
    t = cfg.train
    if t.performance == "off":
        return False, None
    if cfg.method not in ("lora", "qlora", "full"):
        return False, f"performance: {cfg.method} prepends virtual tokens per example; plain path"
    if not packing:
        return False, "performance: train.packing is off; plain path"
    return True, None


def token_trainer(setup: Setup, data: Data) -> Built:
    fast, why_not = wants_fast_path(setup.cfg, setup.packing)
    if why_not:
        setup.console.print(f"[dim]{why_not}[/]")
    return _fast_trainer(setup, data) if fast else _plain_trainer(setup, data)


def _dataset(encoded: list[tk.Encoded] | None):
    from datasets import Dataset

    if encoded is None:
        return None
    return Dataset.from_dict({"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]})


def _plain_trainer(setup: Setup, data: Data) -> Built:
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**setup.args(data.val is not None), padding_free=setup.packing,
                     max_length=None,  # lengths were enforced by encode_dataset
                     dataset_num_proc=None, use_liger_kernel=setup.cfg.train.liger)
    return Built(SFTTrainer(model=setup.model, args=args, train_dataset=_dataset(data.train),
                            eval_dataset=_dataset(data.val), processing_class=setup.tokenizer,
                            callbacks=setup.callbacks))


def _packed_rows(setup: Setup, data: Data):
    """Train/val rows of one token budget, the plan of what runs on this machine, the packing stats."""
    from tunesmith.train import fast
    from tunesmith.train.packing import auto_row_tokens, pack_rows

    cfg, tokenizer, console = setup.cfg, setup.tokenizer, setup.console
    row_tokens = cfg.train.row_tokens or auto_row_tokens(data.train, cfg.train.batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        train_ds, stats = pack_rows(data.train, row_tokens, pad_id)
        eval_ds = pack_rows(data.val, row_tokens, pad_id)[0] if data.val else None
    except ValueError as e:  # an example longer than the row
        raise DataError(f"train.row_tokens: {e}; raise train.row_tokens or lower data.max_seq_len") from None
    plan = fast.plan(setup.model, row_tokens, cfg.train.gradient_checkpointing, cfg.method, cfg.lora.r)
    console.print(f"[dim]fast path: {stats.examples} examples in {stats.rows} rows of {row_tokens} tokens "
                  f"({100 * stats.pad_fraction:.1f}% padding); attention {plan.attention}, "
                  f"compile {'on' if plan.compile_layers else 'off'}, loss {plan.loss}[/]")
    for note in plan.notes:
        console.print(f"[dim]fast path: {note}[/]")
    return train_ds, eval_ds, plan, stats.to_dict()


def _fast_trainer(setup: Setup, data: Data) -> Built:
    from transformers import TrainingArguments

    from tunesmith.train.fast import PackedTrainer
    from tunesmith.train.packing import collate_rows

    train_ds, eval_ds, plan, rows = _packed_rows(setup, data)
    common = setup.args(eval_ds is not None, plan.gradient_checkpointing)
    # One row is one micro-batch: batch_size already shaped the row (row_tokens).
    args = TrainingArguments(**{**common, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1},
                             remove_unused_columns=False, prediction_loss_only=True)
    trainer = PackedTrainer(model=setup.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                            processing_class=setup.tokenizer, data_collator=collate_rows, callbacks=setup.callbacks,
                            fast_plan=plan)
    return Built(trainer, fast_path=plan.to_dict() | {"rows": rows})
