"""The training recipe, one shape for every objective, readable top to bottom:

  prepare the run dir → build data → build model → build trainer → train → finish (save, run.json)

What differs between objectives (sft, pretrain, dpo, grpo: train/objectives/) is which records they
read, the datasets they build and the trainer they train with (the contract: train/objective.py).
Everything else is here and the same for all: the base model and tokenizer, the PEFT adapter,
callbacks, the run directory and what run.json records.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tunesmith.config import RunConfig
from tunesmith.rundir import RunDir
from tunesmith.train import tokenize as tk
from tunesmith.train.objective import Built, Data, Objective, Setup, find_objective
from tunesmith.train.prepare import Start, begin, is_main_process, prepare, refusals_leave_nothing

__all__ = ["TrainResult", "is_main_process", "train"]


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


def train(cfg: RunConfig, *, resume: bool = False, force: bool = False, console: Console | None = None,
          show_progress: bool = True, examples: tuple[list[tk.Encoded], list[tk.Encoded] | None] | None = None,
          callbacks: list | None = None) -> TrainResult:
    """Train one run. `examples` (train, val) replaces data.train/data.val with examples tokenized elsewhere
    (benchmarks feed the peer workload's token ids this way); `callbacks` are extra Trainer callbacks."""
    import datasets

    from tunesmith.train.adapters import check_method

    console = console or Console(stderr=True)
    datasets.disable_progress_bars()  # the rich progress bar is the one progress display
    objective = find_objective(cfg.objective)
    check_method(cfg)  # before anything is loaded: QLoRA without CUDA fails here, with what to install
    run = RunDir(cfg.run_dir)
    start = prepare(cfg, run, resume=resume, force=force, console=console)
    if start is None:
        return _finished(run)
    with refusals_leave_nothing(run, start):
        base_dir, tokenizer = _setup_tokenizer(cfg, objective, pretokenized=examples is not None, console=console)
        data, manifest = _setup_data(cfg, objective, tokenizer, run, start, examples, console)
        model, adapted, packing = _setup_model(cfg, objective, base_dir, data, console)
        setup = Setup(cfg, run, model, tokenizer, _callbacks(cfg, run, data, console, show_progress, callbacks),
                      console, packing)
        built = _setup_trainer(objective, setup, data)
        begin(cfg, run, start, _run_info(cfg, base_dir, manifest, data, packing, built))
    out, seconds = _train(built.trainer, run, start)
    return _finish(setup, built, data, start, out, seconds, adapted)


def _finished(run: RunDir) -> TrainResult:
    info = run.info()
    return TrainResult(run.path, info.train_seconds or 0.0, info.final_train_loss, info.final_eval_loss,
                       info.encode, skipped=True, final_reward=info.final_reward)


# --- setup ----------------------------------------------------------------------------------------------------------


def _setup_tokenizer(cfg: RunConfig, objective: Objective, pretokenized: bool, console: Console):
    from tunesmith.models import load_tokenizer, model_notes
    from tunesmith.train.base import resolve_base

    base_dir = resolve_base(cfg.model, cfg.trust_remote_code)
    if is_main_process():  # a GGUF's dequantization, a pretrained (not instruct) base
        for note in model_notes(base_dir):
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    # Raw text and examples tokenized elsewhere never go through the chat template.
    tokenizer = load_tokenizer(base_dir, cfg.trust_remote_code, chat=objective.chat and not pretokenized,
                               chat_template=cfg.data.chat_template)
    return base_dir, tokenizer


def _setup_data(cfg: RunConfig, objective: Objective, tokenizer, run: RunDir, start: Start, examples,
                console: Console) -> tuple[Data, dict[str, Any]]:
    """The objective's datasets and the data manifest run.json records (paths, sha256, counts)."""
    from tunesmith.train.dataset import load_training_records

    if examples is not None:
        if not objective.tokens:
            raise ValueError(f"pre-tokenized examples are for objectives that train on tokens, not {objective.name}")
        train, val = examples
        report = tk.EncodeReport(total=len(train), kept=len(train))
        return Data(train, val, report), {"train": {"in_memory": len(train)}}
    splits, manifest = load_training_records(cfg, objective.record_type)
    if start.checkpoint:
        _warn_changed_data(run, manifest, console)
    data = objective.datasets(cfg, tokenizer, splits, console)
    if cfg.train.eval_every and not cfg.data.val and objective.uses_val:
        console.print("[yellow]warning:[/] train.eval_every is set but data.val is not: no eval loss is computed")
    return data, manifest


def _warn_changed_data(run: RunDir, manifest: dict[str, Any], console: Console) -> None:
    before = run.info().data.splits() if run.is_run() else {}
    edited = [k for k in ("train", "val") if k in manifest and k in before
              and before[k].sha256 != manifest[k]["sha256"]]
    if edited:
        console.print(f"[yellow]warning:[/] resuming on changed data: {', '.join('data.' + k for k in edited)}"
                      " changed since the interrupted run read it (sha256), so the resumed steps see other "
                      "examples than an uninterrupted run would")


def _setup_model(cfg: RunConfig, objective: Objective, base_dir: Path, data: Data, console: Console):
    """The model to train, adapter applied; whether it is an adapter; whether examples may share a row."""
    import torch
    from peft import get_peft_model

    from tunesmith.train.adapters import VIRTUAL_TOKEN_METHODS, load_for_training, peft_config
    from tunesmith.train.objectives.tokens import check_context

    random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = load_for_training(cfg, base_dir)
    if objective.tokens:
        check_context(model, data)
    adapter_config = peft_config(cfg, model, base_dir)
    if adapter_config is not None:
        model = get_peft_model(model, adapter_config)
    packing = cfg.train.packing
    if packing and cfg.method in VIRTUAL_TOKEN_METHODS:
        packing = False
        console.print(f"[dim]packing off: {cfg.method} prepends virtual tokens to every example, "
                      "so examples cannot share a row[/]")
    return model, adapter_config is not None, packing


def _callbacks(cfg: RunConfig, run: RunDir, data: Data, console: Console, show_progress: bool,
               extra: list | None) -> list:
    from tunesmith.train.progress import MetricsLog, OverfitWarning, RichProgress

    callbacks = [MetricsLog(run.metrics), OverfitWarning(console),
                 RichProgress(console, enabled=show_progress and is_main_process()), *(extra or [])]
    if cfg.train.early_stopping_patience and data.val is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    return callbacks


def _setup_trainer(objective: Objective, setup: Setup, data: Data) -> Built:
    from transformers import PrinterCallback

    built = objective.trainer(setup, data)
    built.trainer.remove_callback(PrinterCallback)  # it prints raw log dicts on stdout, which belongs to --json
    return built


def _run_info(cfg: RunConfig, base_dir: Path, manifest: dict[str, Any], data: Data, packing: bool,
              built: Built) -> dict[str, Any]:
    """run.json as training starts (_finish adds how it ended)."""
    from tunesmith.models import model_facts  # where the base came from (a GGUF's source and quantization)

    return {"name": cfg.name, "status": "running", "method": cfg.method, "objective": cfg.objective,
            "base_model": str(Path(base_dir).resolve()), "model_spec": cfg.model, "data": manifest,
            "rules": cfg.data.rules, "system_prompt": cfg.data.system_prompt, "packing": packing,
            "encode": data.report.to_dict() if data.report is not None else {}, "fast_path": built.fast_path,
            **model_facts(base_dir)}


# --- train and finish -----------------------------------------------------------------------------------------------


def _train(trainer, run: RunDir, start: Start):
    began = time.time()
    try:
        out = trainer.train(resume_from_checkpoint=str(start.checkpoint) if start.checkpoint else None)
    except BaseException:
        if is_main_process():
            run.update_info({"status": "failed"})
        raise
    return out, time.time() - began


def _final_eval(trainer) -> float | None:
    if trainer.eval_dataset is None:
        return None
    # Reuse the last logged eval when it was taken at the final step, so metrics.jsonl has no repeat.
    logged = [h for h in trainer.state.log_history if "eval_loss" in h]
    if trainer.args.load_best_model_at_end and trainer.state.best_metric is not None:
        return trainer.state.best_metric  # the loaded best checkpoint's own, already logged, eval loss
    if logged and logged[-1].get("step") == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return logged[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def _stopped_early(setup: Setup, trainer, final_eval: float | None) -> dict[str, Any] | None:
    patience, state = setup.cfg.train.early_stopping_patience, trainer.state
    if not (patience and 0 < state.global_step < state.max_steps):
        return None
    best = state.best_model_checkpoint
    stopped = {"step": state.global_step, "max_steps": state.max_steps,
               "best_step": int(best.rsplit("-", 1)[-1]) if best else None}
    setup.console.print(f"[yellow]stopped early[/] at step {stopped['step']} of {stopped['max_steps']}: val loss did "
                        f"not improve for {patience} evaluation(s); the model is the best checkpoint (step "
                        f"{stopped['best_step']}, val loss {final_eval:.4f})")
    return stopped


def _finish(setup: Setup, built: Built, data: Data, start: Start, out, seconds: float, adapted: bool) -> TrainResult:
    """Save the model (the adapter only for PEFT methods), then record how the run ended in run.json."""
    trainer, run = built.trainer, setup.run
    final_eval = _final_eval(trainer)
    stopped_early = _stopped_early(setup, trainer, final_eval)
    trainer.save_model(str(run.adapter if adapted else run.path / "model"))  # safetensors; tokenizer beside it
    metrics = run.read_metrics()
    losses = [r["loss"] for r in metrics if "loss" in r]
    final_loss = losses[-1] if losses else out.training_loss
    rewards = [r["reward"] for r in metrics if "reward" in r]
    final_reward = rewards[-1] if rewards else None
    # example tokens per second (not for a resumed run: its count includes the steps before the resume)
    fast = built.fast_path is not None
    tokens_per_s = round(trainer.state.num_input_tokens_seen / seconds, 1) if fast and not start.checkpoint else None
    if is_main_process():
        run.update_info({"status": "finished", "train_seconds": round(seconds, 2), "final_train_loss": final_loss,
                         "final_eval_loss": final_eval, "global_step": trainer.state.global_step,
                         "best_checkpoint": trainer.state.best_model_checkpoint, "stopped_early": stopped_early,
                         "real_tokens_per_s": tokens_per_s, "final_reward": final_reward})
        run.plot_losses()
    encode = data.report.to_dict() if data.report is not None else {}
    return TrainResult(run.path, seconds, final_loss, final_eval, encode, real_tokens_per_s=tokens_per_s,
                       final_reward=final_reward)
