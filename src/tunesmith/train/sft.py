"""The training recipe, readable top to bottom: data → model → trainer → save.

One recipe for every objective, on TRL trainers with PEFT adapters:
  sft       chat records; loss on assistant turns only (system prompt and user turns stay in the input)
  pretrain  raw text; every token trained; each document ends with EOS
  dpo       preference pairs (train/dpo.py)
  grpo      prompts from chat records, answers rewarded by the rules contract (train/grpo.py)
For sft and pretrain the examples are tokenized here (not by TRL) so that the assistant mask
comes from the model's own chat template for any template, and so that every cut or
dropped example is counted in the run's report. Batches are packed padding-free: the
examples of a batch are concatenated into one row and position_ids restart at 0 for each,
from which transformers builds a block-diagonal causal mask (tests/test_train_packing.py
checks that a packed batch gives exactly the per-example losses). On a CUDA GPU, sft and
pretrain take the fast path instead (train/fast.py: rows of a token budget, FlexAttention,
compiled layers, fused loss; `train.performance`), on the same Trainer machinery.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tunesmith.config import RunConfig, dump_config
from tunesmith.data.records import Conversation, Text
from tunesmith.train import tokenize as tk
from tunesmith.rundir import RunDir


@dataclass
class TrainResult:
    run_dir: Path
    train_seconds: float
    final_train_loss: float | None
    final_eval_loss: float | None
    encode_report: dict[str, Any]
    skipped: bool = False
    real_tokens_per_s: float | None = None  # fast path: example tokens (no padding) per second of training
    final_reward: float | None = None  # grpo: mean rules reward of the last logged step (its loss says little)


class DataError(ValueError):
    """Training data that cannot be used as it is; the message names file, line and reason."""


def record_location(record, index: int) -> str:
    return str(record.origin) if record.origin else f"example {index + 1}"


def encode_record(tokenizer, record: Conversation | Text) -> tk.Encoded:
    if isinstance(record, Text):
        return tk.encode_text(tokenizer, record.text)
    return tk.encode_conversation(tokenizer, [m.to_dict() for m in record.messages])


def encode_dataset(tokenizer, records, max_len: int, policy: str) -> tuple[list[tk.Encoded], tk.EncodeReport]:
    """Token ids and labels of every record, the over-length policy applied; nothing lost without a count.

    An example left with no trained token is an error naming its lines, unless truncation
    (over_length: truncate) cut its trained tokens away: then it is dropped and counted.
    """
    report = tk.EncodeReport(total=len(records))
    out: list[tk.Encoded] = []
    untrained: list[str] = []
    from tunesmith.models import stop_token_ids

    stops = set(stop_token_ids(tokenizer)) if tokenizer.chat_template else {tokenizer.eos_token_id}
    eos_seen = False
    for i, record in enumerate(records):
        where = record_location(record, i)
        try:
            enc = encode_record(tokenizer, record)
        except tk.TemplateError as e:
            raise DataError(f"{where}: {e}") from None
        try:
            cut = tk.apply_length_policy(enc, max_len, policy)
        except tk.OverLengthError as e:
            raise DataError(f"{where}: {e} (data.over_length: error)") from None
        if cut is None:
            report.dropped_over_length.append(where)
            continue
        if cut.truncated:
            report.truncated.append(where)
        if cut.n_trained == 0:
            (report.dropped_no_trained_tokens if cut.truncated else untrained).append(where)
            continue
        eos_seen = eos_seen or not stops.isdisjoint(cut.labels)
        report.trained_tokens += cut.n_trained
        report.total_tokens += len(cut.input_ids)
        out.append(cut)
    if untrained:
        more = f" and {len(untrained) - 10} more" if len(untrained) > 10 else ""
        raise DataError(
            f"{len(untrained)} example(s) have no trained token: {', '.join(untrained[:10])}{more}. "
            "Each needs an assistant turn that the chat template renders."
        )
    report.kept = len(out)
    report.eos_trained = eos_seen
    if not out:
        raise DataError(
            f"none of the {report.total} examples has a trained token left: {len(report.dropped_over_length)} dropped "
            f"as over-length, {len(report.dropped_no_trained_tokens)} cut to no trained token (max_seq_len={max_len}, "
            f"over_length={policy})"
        )
    return out, report


def _tokenized(encoded: list[tk.Encoded] | None):
    from datasets import Dataset

    if encoded is None:
        return None
    return Dataset.from_dict({"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]})


def report_cuts(report: tk.EncodeReport, cfg: RunConfig, console: Console, split: str = "train",
                policy: str | None = None) -> None:
    if report.truncated or report.dropped_over_length or report.dropped_no_trained_tokens:
        console.print(
            f"[yellow]data ({split}):[/] {len(report.truncated)} of {report.total} truncated, "
            f"{len(report.dropped_over_length)} dropped as over-length, {len(report.dropped_no_trained_tokens)} "
            f"dropped because truncation left no trained token (max_seq_len={cfg.data.max_seq_len}, "
            f"over_length={policy or cfg.data.over_length}); lines in run.json"
        )


def token_examples(cfg: RunConfig, tokenizer, splits, console: Console):
    """sft / pretrain: encoded train and val examples (input_ids + labels) and the encode report."""
    encoded, report = encode_dataset(tokenizer, splits["train"], cfg.data.max_seq_len, cfg.data.over_length)
    # Chat answers must teach the model to stop; raw documents longer than max_seq_len all lose their EOS to
    # truncation, which is ordinary for continued pre-training (run.json still records eos_trained).
    if not report.eos_trained and cfg.objective != "pretrain":
        from tunesmith.models import stop_token_ids

        names = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in stop_token_ids(tokenizer))
        raise DataError(
            f"no end-of-turn token ({names}) is ever trained: the model would not learn to stop. "
            "Check the chat template and the max_seq_len truncation."
        )
    report_cuts(report, cfg, console)
    val = None
    if splits.get("val"):
        # Val is always truncated (its loss is still measured); what that cut or dropped is counted too.
        try:
            val, val_report = encode_dataset(tokenizer, splits["val"], cfg.data.max_seq_len, "truncate")
        except DataError as e:
            raise DataError(f"data.val: {e}") from None
        report_cuts(val_report, cfg, console, "val", "truncate")
        report.val = val_report
    return encoded, val, report


def check_context(model, train_enc, val_enc) -> None:
    """An example longer than the model's positions fails deep in the forward pass (GPT-2's learned position
    embeddings: IndexError); name it and the limit instead."""
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max((len(e.input_ids) for e in (train_enc or []) + (val_enc or [])), default=0)
    if limit and longest > limit:
        raise DataError(f"an example has {longest} tokens but the model takes at most {limit} positions "
                        f"(max_position_embeddings); set data.max_seq_len to {limit} or less")


def packed_rows(cfg: RunConfig, model, tokenizer, train_enc, val_enc, console: Console):
    """Fast path: train/val rows of one token budget, the plan of what runs on this machine, the packing stats."""
    from tunesmith.train import fast
    from tunesmith.train.packing import auto_row_tokens, pack_rows

    row_tokens = cfg.train.row_tokens or auto_row_tokens(train_enc, cfg.train.batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        train_ds, stats = pack_rows(train_enc, row_tokens, pad_id)
        eval_ds = pack_rows(val_enc, row_tokens, pad_id)[0] if val_enc else None
    except ValueError as e:  # an example longer than the row
        raise DataError(f"train.row_tokens: {e}; raise train.row_tokens or lower data.max_seq_len") from None
    plan = fast.plan(model, row_tokens, cfg.train.gradient_checkpointing, cfg.method, cfg.lora.r)
    console.print(f"[dim]fast path: {stats.examples} examples in {stats.rows} rows of {row_tokens} tokens "
                  f"({100 * stats.pad_fraction:.1f}% padding); attention {plan.attention}, "
                  f"compile {'on' if plan.compile_layers else 'off'}, loss {plan.loss}[/]")
    for note in plan.notes:
        console.print(f"[dim]fast path: {note}[/]")
    return train_ds, eval_ds, plan, stats.to_dict()


def wants_fast_path(cfg: RunConfig, packing: bool) -> tuple[bool, str | None]:
    """Whether this run takes train/fast.py, and why not when the config asked for it."""
    import torch

    t = cfg.train
    if t.performance == "off" or cfg.objective not in ("sft", "pretrain"):
        return False, None
    if t.performance == "auto" and not torch.cuda.is_available():
        return False, None  # on CPU the plain path is as fast; `performance: on` forces the fast path
    if cfg.method not in ("lora", "qlora", "full"):
        return False, f"performance: {cfg.method} prepends virtual tokens per example; plain path"
    if not packing:
        return False, "performance: train.packing is off; plain path"
    return True, None


def resolved_checkpointing(cfg: RunConfig) -> bool:
    """gradient_checkpointing for the plain path: auto is on with a CUDA GPU (as TRL/transformers), off on CPU."""
    import torch

    g = cfg.train.gradient_checkpointing
    return torch.cuda.is_available() if g == "auto" else g


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes the run directory under accelerate/torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def training_args(cfg: RunConfig, run: RunDir, has_eval: bool, model, checkpointing: bool) -> dict[str, Any]:
    """TrainingArguments shared by every objective's TRL config and the fast path."""
    import torch

    t = cfg.train
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    keep_best = bool((t.keep_best or t.early_stopping_patience) and has_eval)
    eval_strategy = "no" if not has_eval else ("steps" if t.eval_every else "epoch")
    if keep_best:  # the best checkpoint can only be one that was evaluated
        save_strategy, save_steps = eval_strategy, t.eval_every
    else:
        save_strategy, save_steps = ("steps" if t.save_every else "no"), t.save_every
    return dict(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a fraction of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        logging_steps=t.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_every,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        report_to=list(t.report_to) or "none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs an accelerator; on CPU it only warns
        # Several processes without CUDA (torchrun on CPUs): gloo data parallel instead of independent runs.
        use_cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
        # Every trainable parameter (adapter, prompt or whole model) takes part in every forward, so DDP need not
        # walk the autograd graph each step looking for unused ones (the Trainer's default without checkpointing).
        ddp_find_unused_parameters=False,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
    )


def config_changes(previous: Path, cfg: RunConfig, shown: int = 5) -> str:
    """'train.lr 0.0002 → 0.01, …' between a run dir's saved config.yaml and `cfg`; '' if equal or none saved."""
    if not previous.is_file():
        return ""
    try:
        old = yaml.safe_load(previous.read_text()) or {}
    except yaml.YAMLError:
        return ""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old), flat(cfg.model_dump(mode="json"))
    diffs = [f"{k} {a.get(k)!r} → {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    more = f", and {len(diffs) - shown} more" if len(diffs) > shown else ""
    return ", ".join(diffs[:shown]) + more


def train(cfg: RunConfig, *, resume: bool = False, force: bool = False, console: Console | None = None,
          show_progress: bool = True, examples: tuple[list[tk.Encoded], list[tk.Encoded] | None] | None = None,
          callbacks: list | None = None) -> TrainResult:
    """Train one run. `examples` (train, val) replaces data.train/data.val with examples tokenized elsewhere
    (benchmarks feed the peer workload's token ids this way); `callbacks` are extra Trainer callbacks."""
    import datasets
    import torch
    from peft import get_peft_model

    from tunesmith.models import load_tokenizer, model_facts, model_notes
    from tunesmith.train.adapters import VIRTUAL_TOKEN_METHODS, check_method, load_for_training, peft_config
    from tunesmith.train.base import resolve_base
    from tunesmith.train.dataset import load_training_records
    from tunesmith.train.progress import MetricsLog, OverfitWarning, RichProgress

    console = console or Console(stderr=True)
    datasets.disable_progress_bars()  # the rich progress bar is the one progress display
    check_method(cfg)  # before anything is loaded: QLoRA without CUDA fails here, with what to install
    run = RunDir(cfg.run_dir)
    main = is_main_process()
    changed = config_changes(run.path / "config.yaml", cfg)
    if run.finished() and not force:
        console.print(f"[green]{run.path} is already finished[/]; nothing to do (use --force to train again).")
        if changed:
            console.print(f"[yellow]warning:[/] this config differs from the finished run's: {changed}. "
                          "The finished run is kept; --force retrains it, or give the run a new name.")
        info = run.read_info()
        return TrainResult(run.path, info.get("train_seconds", 0.0), info.get("final_train_loss"),
                           info.get("final_eval_loss"), info.get("encode", {}), skipped=True,
                           final_reward=info.get("final_reward"))
    interrupted = run.last_checkpoint()
    if interrupted and not (resume or force):
        raise DataError(f"{run.path} is an interrupted run with a checkpoint at step "
                        f"{interrupted.name.rsplit('-', 1)[-1]}: --resume continues it, --force starts it over "
                        "(deleting its checkpoints)")
    last_ckpt = interrupted if resume else None
    if resume and last_ckpt is None:
        console.print(f"[yellow]--resume:[/] no complete checkpoint in {run.checkpoints}; starting from step 0")
    elif last_ckpt and changed:
        console.print(f"[yellow]warning:[/] resuming with a config that differs from the interrupted run's: {changed}")
    if main and not last_ckpt:
        run.reset()
    run.path.mkdir(parents=True, exist_ok=True)

    # --- data -------------------------------------------------------------------------------------
    base_dir = resolve_base(cfg.model, cfg.trust_remote_code)
    if main:
        for note in model_notes(base_dir):
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    # Raw text and examples tokenized elsewhere never go through the chat template.
    tokenizer = load_tokenizer(base_dir, cfg.trust_remote_code, chat=cfg.objective != "pretrain" and examples is None,
                               chat_template=cfg.data.chat_template)
    train_enc = val_enc = None
    if examples is not None:
        if cfg.objective not in ("sft", "pretrain"):
            raise ValueError("pre-tokenized examples are for objectives sft and pretrain")
        (train_enc, val_enc), report = examples, tk.EncodeReport(total=len(examples[0]), kept=len(examples[0]))
        manifest = {"train": {"in_memory": len(train_enc)}}
    else:
        splits, manifest = load_training_records(cfg)
        if last_ckpt:
            before = run.read_info().get("data", {})
            edited = [k for k in ("train", "val") if k in manifest and k in before
                      and before[k].get("sha256") != manifest[k]["sha256"]]
            if edited:
                console.print(f"[yellow]warning:[/] resuming on changed data: {', '.join('data.' + k for k in edited)}"
                              " changed since the interrupted run read it (sha256), so the resumed steps see other "
                              "examples than an uninterrupted run would")
        if cfg.objective == "dpo":
            from tunesmith.train.dpo import preference_datasets

            train_ds, eval_ds, report = preference_datasets(cfg, tokenizer, splits, console)
        elif cfg.objective == "grpo":
            from tunesmith.train.grpo import prompt_dataset

            if splits.get("val"):
                console.print("[dim]grpo: data.val is not used (there is no loss to evaluate on it)[/]")
            train_ds, eval_ds, report = prompt_dataset(splits["train"], tokenizer), None, None
        else:
            train_enc, val_enc, report = token_examples(cfg, tokenizer, splits, console)
        if cfg.train.eval_every and not cfg.data.val and cfg.objective != "grpo":
            console.print("[yellow]warning:[/] train.eval_every is set but data.val is not: no eval loss is computed")

    # --- model ------------------------------------------------------------------------------------
    random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = load_for_training(cfg, base_dir)
    check_context(model, train_enc, val_enc)
    adapter_config = peft_config(cfg, model, base_dir)
    if adapter_config is not None:
        model = get_peft_model(model, adapter_config)
    packing = cfg.train.packing
    if packing and cfg.method in VIRTUAL_TOKEN_METHODS:
        packing = False
        console.print(f"[dim]packing off: {cfg.method} prepends virtual tokens to every example, "
                      "so examples cannot share a row[/]")
    fast, why_not = wants_fast_path(cfg, packing)
    if why_not:
        console.print(f"[dim]{why_not}[/]")
    fast_plan = pack_info = None
    if fast:
        train_ds, eval_ds, fast_plan, pack_info = packed_rows(cfg, model, tokenizer, train_enc, val_enc, console)
    elif train_enc is not None:
        train_ds, eval_ds = _tokenized(train_enc), _tokenized(val_enc)

    # --- trainer ----------------------------------------------------------------------------------
    t = cfg.train
    checkpointing = fast_plan.gradient_checkpointing if fast_plan else resolved_checkpointing(cfg)
    common = training_args(cfg, run, eval_ds is not None, model, checkpointing)
    callbacks = [MetricsLog(run.metrics), OverfitWarning(console),
                 RichProgress(console, enabled=show_progress and main), *(callbacks or [])]
    if t.early_stopping_patience and eval_ds is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    if cfg.objective == "dpo":
        from tunesmith.train.dpo import dpo_trainer

        trainer = dpo_trainer(cfg, model, tokenizer, common, train_ds, eval_ds, callbacks)
    elif cfg.objective == "grpo":
        from tunesmith.train.grpo import grpo_trainer

        trainer = grpo_trainer(cfg, model, tokenizer, common, train_ds, callbacks)
    elif fast:
        from transformers import TrainingArguments

        from tunesmith.train.fast import PackedTrainer
        from tunesmith.train.packing import collate_rows

        # One row is one micro-batch: batch_size already shaped the row (row_tokens).
        args = TrainingArguments(**{**common, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1},
                                 remove_unused_columns=False, prediction_loss_only=True)
        trainer = PackedTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=tokenizer, data_collator=collate_rows, callbacks=callbacks,
                                fast_plan=fast_plan)
    else:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, padding_free=packing, max_length=None,  # lengths were enforced above
                         dataset_num_proc=None, use_liger_kernel=t.liger)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tokenizer, callbacks=callbacks)

    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts on stdout, which belongs to --json
    encode = report.to_dict() if report is not None else {}
    if main:
        run.write_text("config.yaml", dump_config(cfg))
        run.write_info({"name": cfg.name, "status": "running", "method": cfg.method, "objective": cfg.objective,
                        "base_model": str(Path(base_dir).resolve()), "model_spec": cfg.model, "data": manifest,
                        "rules": cfg.data.rules, "system_prompt": cfg.data.system_prompt, "packing": packing,
                        "encode": encode, "fast_path": fast_plan.to_dict() | {"rows": pack_info} if fast else None,
                        **model_facts(base_dir)})
        run.truncate_metrics(int(last_ckpt.name.split("-")[-1]) if last_ckpt else 0)
    start = time.time()
    try:
        out = trainer.train(resume_from_checkpoint=str(last_ckpt) if last_ckpt else None)
    except BaseException:
        if main:
            run.update_info({"status": "failed"})
        raise
    seconds = time.time() - start

    # --- save -------------------------------------------------------------------------------------
    final_eval = None
    if eval_ds is not None:
        # Reuse the last logged eval when it was taken at the final step, so metrics.jsonl has no repeat.
        logged = [h for h in trainer.state.log_history if "eval_loss" in h]
        if trainer.args.load_best_model_at_end and trainer.state.best_metric is not None:
            final_eval = trainer.state.best_metric  # the loaded best checkpoint's own, already logged, eval loss
        elif logged and logged[-1].get("step") == trainer.state.global_step and not trainer.args.load_best_model_at_end:
            final_eval = logged[-1]["eval_loss"]
        else:
            final_eval = trainer.evaluate()["eval_loss"]
    stopped_early = None
    if t.early_stopping_patience and 0 < trainer.state.global_step < trainer.state.max_steps:
        best = trainer.state.best_model_checkpoint
        stopped_early = {"step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
                         "best_step": int(best.rsplit("-", 1)[-1]) if best else None}
        console.print(f"[yellow]stopped early[/] at step {stopped_early['step']} of {stopped_early['max_steps']}: "
                      f"val loss did not improve for {t.early_stopping_patience} evaluation(s); the model is the "
                      f"best checkpoint (step {stopped_early['best_step']}, val loss {final_eval:.4f})")
    target = run.adapter if adapter_config is not None else run.path / "model"
    trainer.save_model(str(target))  # adapter only for PEFT methods; safetensors; tokenizer beside it
    metrics = run.read_metrics()
    losses = [r["loss"] for r in metrics if "loss" in r]
    final_loss = losses[-1] if losses else out.training_loss
    rewards = [r["reward"] for r in metrics if "reward" in r]
    final_reward = rewards[-1] if rewards else None
    # example tokens per second (not for a resumed run: its count includes the steps before the resume)
    tokens_per_s = round(trainer.state.num_input_tokens_seen / seconds, 1) if fast and not last_ckpt else None
    if main:
        run.update_info({"status": "finished", "train_seconds": round(seconds, 2), "final_train_loss": final_loss,
                         "final_eval_loss": final_eval, "global_step": trainer.state.global_step,
                         "best_checkpoint": trainer.state.best_model_checkpoint, "stopped_early": stopped_early,
                         "real_tokens_per_s": tokens_per_s, "final_reward": final_reward})
        run.plot_losses()
    return TrainResult(run.path, seconds, final_loss, final_eval, encode, real_tokens_per_s=tokens_per_s,
                       final_reward=final_reward)
