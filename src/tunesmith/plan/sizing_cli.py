"""`tunesmith plan memory` and `tunesmith plan cost`: will a run fit, and what will it cost.

Both take `--config run.yaml`, so the model, method, max_seq_len, LoRA rank, batch size and chat template
are the ones training will use (read by tunesmith.config's loader); a flag given on the command line wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from tunesmith.clikit import emit, err, fail, out, require_finite, user_errors
from tunesmith.config import RunConfig, load_config
from tunesmith.errors import UserError
from tunesmith.plan import cost as co, memory as mem, shapes
from tunesmith.plan.dataset import read_conversations

_METHODS = ("full", "lora", "qlora")


def _config_option(fields: str):
    return typer.Option(None, "--config", help=f"Run config YAML: {fields} from it; flags given override it.")


def _run_config(path: Path | None) -> RunConfig | None:
    if path is None:
        return None
    with user_errors():
        return load_config(path)


def _method(flag: str | None, cfg: RunConfig | None) -> str:
    method = flag or (cfg.method if cfg else "lora")
    if method not in _METHODS:
        where = "--method" if flag else "method (from --config)"
        fail(f"{where} must be full, lora or qlora, not {method!r}")
    return method


def memory(
    model: Optional[str] = typer.Option(None, help="Directory with config.json, or a known name: " + ", ".join(shapes.KNOWN_SHAPES)),
    method: Optional[str] = typer.Option(None, help="full | lora | qlora (default: lora; method with --config)."),
    seq_len: Optional[int] = typer.Option(None, min=1, help="Tokens per sequence: the padded length, or the mean length when padding-free/packed (default: 1024; data.max_seq_len with --config)."),
    batch: Optional[int] = typer.Option(None, min=1, help="Sequences per micro-batch (default: 1; train.batch_size with --config)."),
    grad_accum: Optional[int] = typer.Option(None, min=1, help="Micro-batches per optimizer step, step time only (default: 1; train.grad_accum with --config)."),
    grad_checkpointing: bool = typer.Option(True, "--grad-checkpointing/--no-grad-checkpointing", help="Recompute activations in backward."),
    lora_r: Optional[int] = typer.Option(None, min=1, help="LoRA rank, adapters on all linear projections (default: 16; lora.r with --config)."),
    gpu: Optional[str] = typer.Option(None, help="Estimate step time on: " + " | ".join(mem.GPUS)),
    mfu: Optional[float] = typer.Option(None, min=0.001, max=1.0, help="MFU of the compute part (default: 0.2 under 3B params, else 0.4; a per-layer host cost is added)."),
    gpu_memory: Optional[float] = typer.Option(None, "--gpu-memory", min=0.001, help="Your card's memory in GiB (e.g. 8), checked besides the listed GPUs."),
    config: Optional[Path] = _config_option("model, method, data.max_seq_len, lora.r, train.batch_size and train.grad_accum"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Estimate GPU memory (weights, gradients, optimizer, adapters, activations, overhead) from the model's shape alone.

    Example: tunesmith plan memory --model llama-3.1-8b --method qlora --seq-len 2048 --batch 4 --gpu l4

    Example: tunesmith plan memory --config examples/legal-bot.yaml --gpu-memory 8

    Example: tunesmith plan memory --model ./my-model-dir --method lora --json
    """
    cfg = _run_config(config)
    model = model or (cfg.model if cfg else None)
    if model is None:
        fail("give --model (a directory with config.json or a known name) or --config run.yaml")
    method = _method(method, cfg)
    seq_len = seq_len or (cfg.data.max_seq_len if cfg else 1024)
    lora_r = lora_r or (cfg.lora.r if cfg else 16)
    batch = batch or (cfg.train.batch_size if cfg else 1)
    grad_accum = grad_accum or (cfg.train.grad_accum if cfg else 1)
    if gpu is not None and gpu not in mem.GPUS:
        fail(f"--gpu must be one of {', '.join(mem.GPUS)}, not {gpu!r}")
    require_finite(gpu_memory=gpu_memory)
    with user_errors():
        shape = shapes.resolve_shape(model)
    est = mem.estimate_memory(shape, method, seq_len, batch, grad_checkpointing, lora_r)  # type: ignore[arg-type]
    payload: dict[str, Any] = est.to_dict() | {"fits": mem.fits(est.total_gib, gpu_memory)}
    step = None
    if gpu:
        step = mem.estimate_step_time(shape, method, seq_len, batch, grad_accum, gpu, mfu, grad_checkpointing, lora_r, est.total_gib)  # type: ignore[arg-type]
        payload["step_time"] = step.to_dict()
    setup = f"{method}, {batch} x {seq_len} tokens, grad checkpointing {'on' if grad_checkpointing else 'off'}"
    emit(payload, as_json, lambda: _print_memory(shape, est, step, payload, setup, gpu))


def _print_memory(shape: shapes.ModelShape, est: mem.MemoryEstimate, step: mem.StepTimeEstimate | None,
                  payload: dict[str, Any], setup: str, gpu: str | None) -> None:
    table = Table(title=f"{escape(shape.name)}: {setup}")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    for key in ("weights", "gradients", "optimizer", "adapters", "activations", "workspace"):
        table.add_row(key, f"{payload[key + '_gib']:.2f}")
    table.add_row("[bold]peak allocated[/] (≈ torch max_memory_allocated)", f"[bold]{est.peak_allocated_gib:.2f}[/]")
    table.add_row("CUDA context + fragmentation", f"{est.cuda_overhead_gib:.2f}")
    table.add_row("[bold]total needed on the card[/]", f"[bold]{est.total_gib:.2f}[/]")
    out.print(table)
    out.print(f"parameters {est.params:,}; trainable {est.trainable_params:,}")
    out.print("fits on: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in payload["fits"].items()))
    if step and gpu:
        out.print(
            f"step time on {step.gpu} at {step.mfu:.0%} MFU: ~{step.seconds_per_step:.3g} s per step of {step.tokens_per_step:,} tokens "
            f"(~{step.tokens_per_second:,.0f} tokens/s)"
            + (f" [yellow]-- but it does not fit in its {mem.GPUS[gpu].memory_gib:g} GiB[/]" if step.fits_in_memory is False else "")
        )


def _tokenizer(model: str, chat_template: str | None):
    """The model's tokenizer as training loads it (models.load_tokenizer, data.chat_template applied); a previous
    run as `model` gives its trained tokenizer, as training's next stage uses."""
    from tunesmith.data.check import load_tokenizer
    from tunesmith.models import ModelError
    from tunesmith.train.base import tokenizer_dir

    try:
        path = tokenizer_dir(model)
    except ModelError as exc:
        hint = ""
        if shapes.normalise_name(model) in shapes.KNOWN_SHAPES:  # a name `plan memory` accepts, so say why cost cannot
            hint = (f" ('{model}' is a known shape for `plan memory`, but counting tokens needs the model's "
                    "tokenizer files: pass a local directory with them)")
        fail(f"{exc}{hint}")
    try:
        return path, load_tokenizer(path, chat_template)
    except UserError as exc:
        fail(exc)
    except (OSError, ValueError) as exc:  # transformers' own refusals of a directory
        fail(f"{path}: cannot load a tokenizer ({exc})")


def cost(
    data: Optional[Path] = typer.Argument(None, help="Training data: {messages}, {text,label} or Alpaca records (default: data.train of --config)."),
    model: Optional[str] = typer.Option(None, help="Model directory or smollm2-135m-instruct: its tokenizer and chat template count the tokens; its config.json gives the shape."),
    epochs: int = typer.Option(1, min=1, help="Passes over the data (1, as train.epochs defaults to; not read from --config, where train.max_steps may rule instead)."),
    prices: Path = typer.Option(co.DEFAULT_PRICES, help="Price table YAML (dated, illustrative; copy and edit it)."),
    method: Optional[str] = typer.Option(None, help="full | lora | qlora, for the self-hosted throughput (default: lora; method with --config)."),
    gpu: str = typer.Option("h100", help="Self-hosted GPU: " + " | ".join(mem.GPUS)),
    gpu_hour_usd: Optional[float] = typer.Option(None, min=0, help="Override the price table's USD per GPU hour."),
    tokens_per_second: Optional[float] = typer.Option(None, min=0.001, help="Override the estimated training throughput."),
    mfu: Optional[float] = typer.Option(None, min=0.001, max=1.0, help="MFU for the throughput estimate (see `plan memory`)."),
    chat_template: Optional[str] = typer.Option(None, "--chat-template", help="As data.chat_template: 'chatml' or a .jinja file, replacing the tokenizer's own."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", min=1, help="Count at most this many tokens per record, as training truncates (default: none; data.max_seq_len with --config)."),
    config: Optional[Path] = _config_option(
        "data.train, model, method, data.chat_template, data.system_prompt, data.max_seq_len and data.over_length"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Count training tokens with the model's real tokenizer and chat template, and price them.

    With --config the count is training's: data.train with data.system_prompt added, the config's chat
    template, and data.max_seq_len with data.over_length applied.

    Example: tunesmith plan cost data/train.jsonl --model ./models/llama-3.2-1b --epochs 3 --gpu l4

    Example: tunesmith plan cost --config examples/legal-bot.yaml --json
    """
    from tunesmith.data.check import token_lengths

    cfg = _run_config(config)
    data = data or (Path(cfg.data.train) if cfg and cfg.data.train else None)
    model = model or (cfg.model if cfg else None)
    if data is None or model is None:
        fail("give the training data and --model, or --config run.yaml with data.train and model")
    method = _method(method, cfg)
    chat_template = chat_template or (cfg.data.chat_template if cfg else None)
    max_seq_len = max_seq_len or (cfg.data.max_seq_len if cfg else None)
    if gpu not in mem.GPUS:
        fail(f"--gpu must be one of {', '.join(mem.GPUS)}, not {gpu!r}")
    require_finite(gpu_hour_usd=gpu_hour_usd, tokens_per_second=tokens_per_second)
    with user_errors():
        table = co.load_prices(prices)
        loaded = read_conversations(data, cfg.data.system_prompt if cfg else None)
    if loaded.skipped:
        err.print(f"[yellow]warning:[/] {escape(loaded.warning() or '')}", soft_wrap=True)
    path, tokenizer = _tokenizer(model, chat_template)
    shape = None
    if tokens_per_second is None:
        try:
            shape = shapes.resolve_shape(str(path))
        except shapes.UnknownModel as exc:
            fail(f"{exc}; pass --tokens-per-second to skip the throughput estimate")
    with user_errors():
        counts = token_lengths(loaded.conversations, tokenizer)
        if max_seq_len is not None:
            counts = co.apply_length_policy(counts, max_seq_len, cfg.data.over_length if cfg else "truncate")
        result = co.estimate_cost(counts, epochs, table, shape, method, gpu, mfu, tokens_per_second, gpu_hour_usd)  # type: ignore[arg-type]
    emit({**result.to_dict(), "skipped_rows": loaded.skipped}, as_json, lambda: _print_cost(result, epochs, gpu, prices))


def _print_cost(result: co.CostEstimate, epochs: int, gpu: str, prices: Path) -> None:
    out.print(
        f"{result.records:,} records, {result.tokens_per_epoch:,} tokens per epoch (mean {result.mean_tokens_per_record:,.1f}, "
        f"max {result.max_tokens_per_record:,}) x {epochs} epochs = [bold]{result.training_tokens:,}[/] training tokens"
    )
    managed = Table(title=f"Managed fine-tuning APIs (prices as of {result.prices_as_of}; illustrative)")
    for col in ("provider", "model", "USD / M tokens", "USD"):
        managed.add_column(col, justify="right" if "USD" in col else "left")
    for m in result.managed:
        managed.add_row(escape(m["provider"]), escape(m["model"]), f"{m['usd_per_million_training_tokens']:g}", f"{m['usd']:,.2f}")
    out.print(managed)
    sh = result.self_hosted
    out.print(
        f"Self-hosted ({sh['method']} on {gpu}): ~{sh['tokens_per_second']:,.0f} tokens/s -> {sh['gpu_hours']:,.3f} GPU hours "
        f"x ${sh['gpu_hour_usd']:g}/h = [bold]${sh['usd']:,.2f}[/] (plus setup time and idle minutes, not counted)"
    )
    out.print(f"[dim]{result.prices_note} Edit {prices} or pass --prices.[/]")
