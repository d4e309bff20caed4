"""TrainingArguments every objective's trainer starts from (TRL configs and the fast path alike)."""

from __future__ import annotations

import os
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.rundir import RunDir


def resolved_checkpointing(cfg: RunConfig) -> bool:
    """gradient_checkpointing for the plain path: auto is on with a CUDA GPU (as TRL/transformers), off on CPU."""
    import torch

    g = cfg.train.gradient_checkpointing
    return torch.cuda.is_available() if g == "auto" else g


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
        # bf16 on a CPU (AMX) needs it too: the Trainer refuses bf16 without a GPU unless told it is on the CPU.
        use_cpu=not torch.cuda.is_available() and (int(os.environ.get("WORLD_SIZE", "1")) > 1
                                                   or dtype == torch.bfloat16),
        # Every trainable parameter (adapter, prompt or whole model) takes part in every forward, so DDP need not
        # walk the autograd graph each step looking for unused ones (the Trainer's default without checkpointing).
        ddp_find_unused_parameters=False,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
    )
