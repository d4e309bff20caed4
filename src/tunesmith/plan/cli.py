"""`tunesmith plan` commands: parse, call the calculators in plan/, print."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from enum import Enum
from typing import Any, NoReturn, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.prompt import Confirm, IntPrompt, Prompt
from rich.table import Table

from tunesmith.plan import advisor, breakeven as be, cost as co, memory as mem
from tunesmith.plan.dataset import DataError, read_conversations, summarise

app = typer.Typer(
    help="Decide before you train: prompt, RAG or fine-tune? What will it cost, will it fit, when does it pay back?",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

out = Console()
err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _finite(**values: float | None) -> None:
    """Typer's min=0 lets inf through, which would print Infinity/NaN (not JSON) and meaningless sums."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            _fail(f"--{name.replace('_', '-')} must be a finite number, not {value}")


def _emit_json(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _money(x: float) -> str:
    sign = "-" if x < 0 else ""
    digits = f"{abs(x):,.6f}".rstrip("0").rstrip(".") if abs(x) < 0.01 else f"{abs(x):,.4f}"
    return f"{sign}${digits}"


# ---------------------------------------------------------------- advise

_QUESTIONS: list[tuple[str, str]] = [
    ("task", "Task type"),
    ("examples", "How many labelled examples do you have"),
    ("knowledge_changes", "How often do the facts the answers depend on change"),
    ("format_strictness", "How strict is the output format"),
    ("recurring", "Is this a recurring workload (not a one-off job)"),
    ("daily_volume", "Requests per day"),
    ("prompt_tokens", "Instruction + example tokens repeated on every request"),
    ("privacy", "Must the data stay on your own infrastructure"),
    ("latency_ms", "Latency target per request in ms (0 = none)"),
]


def _ask(skip: set[str]) -> dict[str, Any]:
    defaults = advisor.AdvisorInputs()
    answers: dict[str, Any] = {}
    fields = advisor.AdvisorInputs.model_fields
    for name, question in _QUESTIONS:
        if name in skip:
            continue
        default = getattr(defaults, name)
        annotation = fields[name].annotation
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            answers[name] = Prompt.ask(question, choices=[e.value for e in annotation], default=str(default), console=err)
        elif annotation is bool:
            answers[name] = Confirm.ask(question, default=default, console=err)
        else:
            value = IntPrompt.ask(question, default=default or 0, console=err)
            answers[name] = None if name == "latency_ms" and value == 0 else value
    return answers


def _load_answers(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except IsADirectoryError:
        _fail(f"{path}: is a directory, not an answers file")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read ({exc})")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        _fail(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML")
    if not isinstance(raw, dict):
        _fail(f"{path}: expected a mapping of answers (task: ..., examples: ...)")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def _effect(effect: dict[str, int]) -> str:
    return ", ".join(f"{v:+d} {k}" for k, v in sorted(effect.items(), key=lambda kv: -kv[1]))


def _print_advice(a: advisor.Advice) -> None:
    out.print(Panel(f"[bold]{a.label}[/]  ({a.confidence})", title="Recommendation", expand=False))
    if a.data:
        d = a.data
        line = f"Data: {d['records']} records, system prompt on {d['system_prompt_share']:.0%} ({d['system_prompt_chars']} chars)"
        if d["labels"]:
            line += f", {len(d['labels'])} labels (imbalance {d['label_imbalance']}x)" if d["label_imbalance"] else f", labels: {d['labels']}"
        out.print(line)
    scores = Table(title="Scores (higher is better)")
    scores.add_column("option")
    scores.add_column("score", justify="right")
    for option, score in a.scores.items():
        scores.add_row(advisor.LABELS[option], str(score), style="bold green" if option == a.recommendation else None)
    out.print(scores)
    reasons = Table(title="Why", show_lines=True)
    reasons.add_column("rule")
    reasons.add_column("reason", ratio=3)
    reasons.add_column("effect", ratio=1)
    for r in a.reasons:
        reasons.add_row(r.rule, r.text, _effect(r.effect))
    out.print(reasons)
    for w in a.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    out.print("[bold]Next steps[/]")
    for step in a.next_steps:
        out.print(f"  - {step}")


@app.command()
def advise(
    data: Optional[Path] = typer.Option(None, "--data", help="JSONL of {messages} or {text,label} records; its statistics replace --examples."),
    answers: Optional[Path] = typer.Option(None, "--answers", help="YAML file with the answers (keys as the flags, with underscores). Flags override it."),
    task: Optional[advisor.Task] = typer.Option(None, help="Kind of task."),
    examples: Optional[int] = typer.Option(None, min=0, help="Labelled examples available."),
    knowledge_changes: Optional[advisor.KnowledgeChange] = typer.Option(None, help="How often the facts behind the answers change (none: the input holds them)."),
    format_strictness: Optional[advisor.Strictness] = typer.Option(None, help="How strictly the output format must hold."),
    daily_volume: Optional[int] = typer.Option(None, min=0, help="Requests per day."),
    prompt_tokens: Optional[int] = typer.Option(None, min=0, help="Instruction + example tokens repeated on every request."),
    price_in: Optional[float] = typer.Option(None, min=0, help="USD per million input tokens of the prompted model (default 5)."),
    privacy: Optional[bool] = typer.Option(None, "--privacy/--no-privacy", help="Data must stay on your own infrastructure."),
    latency_ms: Optional[int] = typer.Option(None, min=1, help="Latency target per request, ms."),
    recurring: Optional[bool] = typer.Option(None, "--recurring/--one-off", help="Recurring workload or a one-off job."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Recommend prompt, few-shot, RAG, fine-tune or RAG + fine-tune, with the scored reasons.

    Asks interactively when run in a terminal with neither flags nor --answers.

    Example: tunesmith plan advise --task classification --examples 300 --daily-volume 2000 --prompt-tokens 800

    Example: tunesmith plan advise --answers examples/plan/weekly_knowledge.yaml --json
    """
    flags = {
        "task": task, "examples": examples, "knowledge_changes": knowledge_changes, "format_strictness": format_strictness,
        "daily_volume": daily_volume, "prompt_tokens": prompt_tokens, "price_in": price_in, "privacy": privacy,
        "latency_ms": latency_ms, "recurring": recurring,
    }
    given = {k: (v.value if isinstance(v, Enum) else v) for k, v in flags.items() if v is not None}
    merged: dict[str, Any] = _load_answers(answers) if answers else {}
    stats = None
    if data:
        try:
            stats = summarise(read_conversations(data))
        except DataError as exc:
            _fail(str(exc))
    if not answers and not given and sys.stdin.isatty():
        merged.update(_ask(skip={"examples"} if stats else set()))
    merged.update(given)
    try:
        inputs = advisor.AdvisorInputs.model_validate(merged)
    except ValidationError as exc:
        where = f"{answers}: " if answers else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answers'}: {e['msg']}" for e in exc.errors())
        _fail(f"{where}{problems}")
    result = advisor.advise(inputs, stats)
    if as_json:
        _emit_json(result.to_dict())
    else:
        _print_advice(result)


# ---------------------------------------------------------------- breakeven

_PLOT_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp")


@app.command()
def breakeven(
    overhead_tokens: int = typer.Option(..., min=0, help="Prompt tokens per request that fine-tuning removes (instructions, few-shot examples)."),
    price_in: float = typer.Option(..., min=0, help="USD per million input tokens of the prompted model."),
    training_cost: float = typer.Option(..., min=0, help="One-off cost of the fine-tune, USD (see `tunesmith plan cost`)."),
    ft_cost_per_request: Optional[float] = typer.Option(None, min=0, help="Remaining prompt cost per request of the fine-tuned model, USD."),
    ft_prompt_tokens: Optional[int] = typer.Option(None, min=0, help="...or its remaining prompt tokens per request."),
    ft_price_in: Optional[float] = typer.Option(None, min=0, help="USD per million input tokens of the fine-tuned model (default: --price-in)."),
    requests_per_day: Optional[float] = typer.Option(None, min=0, help="Traffic, to turn requests into days."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a cumulative-cost chart (PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Per-request cost of prompting vs a fine-tune, and after how many requests (and days) the training pays back.

    Example: tunesmith plan breakeven --overhead-tokens 2300 --price-in 5 --ft-cost-per-request 0.00015 --training-cost 50 --requests-per-day 1000
    """
    _finite(price_in=price_in, training_cost=training_cost, ft_cost_per_request=ft_cost_per_request,
            ft_price_in=ft_price_in, requests_per_day=requests_per_day)
    if (ft_cost_per_request is None) == (ft_prompt_tokens is None):
        _fail("give exactly one of --ft-cost-per-request or --ft-prompt-tokens (with optional --ft-price-in)")
    if ft_price_in is not None and ft_prompt_tokens is None:
        _fail("--ft-price-in only applies together with --ft-prompt-tokens")
    if requests_per_day == 0:
        _fail("--requests-per-day must be positive")
    if plot is not None and plot.is_dir():
        _fail(f"--plot {plot}: is a directory; give a file name such as {plot / 'breakeven.png'}")
    if plot is not None and plot.suffix and plot.suffix.lower() not in _PLOT_FORMATS:
        _fail(f"--plot {plot}: use one of {', '.join(_PLOT_FORMATS)}")
    prompt_cost = be.per_request_cost(overhead_tokens, price_in)
    ft_cost = ft_cost_per_request if ft_cost_per_request is not None else be.per_request_cost(ft_prompt_tokens or 0, price_in if ft_price_in is None else ft_price_in)
    result = be.breakeven(prompt_cost, ft_cost, training_cost, requests_per_day)
    payload = result.to_dict()
    if plot:
        try:
            plot = be.plot_cumulative(result, plot)
        except OSError as exc:
            _fail(f"--plot {plot}: cannot write ({exc.strerror or exc})")
        payload["plot"] = str(plot)
    if as_json:
        _emit_json(payload)
        return
    table = Table(title="Break-even: prompted vs fine-tuned", show_header=False)
    table.add_row("prompted, per request", f"{_money(prompt_cost)}  ({overhead_tokens:,} tokens x ${price_in:g}/M)")
    table.add_row("fine-tuned, per request", _money(ft_cost))
    table.add_row("saving per request", _money(result.saving_per_request))
    table.add_row("training cost", f"${training_cost:,.2f}")
    if result.never_breaks_even:
        table.add_row("break-even", "[bold red]never[/]: the fine-tuned model costs as much or more per request")
    else:
        table.add_row("break-even", f"[bold]{result.breakeven_requests:,.0f}[/] requests")
        if result.breakeven_days is not None:
            table.add_row("", f"[bold]{result.breakeven_days:,.1f}[/] days at {requests_per_day:,.6g} requests/day")
    out.print(table)
    if plot:
        out.print(f"plot: {plot}")


# ---------------------------------------------------------------- memory


@app.command()
def memory(
    model: str = typer.Option(..., help="Directory with config.json, or a known name: " + ", ".join(mem.KNOWN_SHAPES)),
    method: str = typer.Option("lora", help="full | lora | qlora"),
    seq_len: int = typer.Option(1024, min=1, help="Tokens per sequence (padded length, or mean length when padding-free/packed)."),
    batch: int = typer.Option(1, min=1, help="Sequences per micro-batch."),
    grad_accum: int = typer.Option(1, min=1, help="Micro-batches per optimizer step (step time only)."),
    grad_checkpointing: bool = typer.Option(True, "--grad-checkpointing/--no-grad-checkpointing", help="Recompute activations in backward."),
    lora_r: int = typer.Option(16, min=1, help="LoRA rank (adapters on all linear projections)."),
    gpu: Optional[str] = typer.Option(None, help="Estimate step time on: " + " | ".join(mem.GPUS)),
    mfu: Optional[float] = typer.Option(None, min=0.001, max=1.0, help="MFU of the compute part (default: 0.2 under 3B params, else 0.4; a per-layer host cost is added)."),
    gpu_memory: Optional[float] = typer.Option(None, "--gpu-memory", min=0.001, help="Your card's memory in GiB (e.g. 8), checked besides the listed GPUs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Estimate GPU memory (weights, gradients, optimizer, adapters, activations, overhead) from the model's shape alone.

    Example: tunesmith plan memory --model llama-3.1-8b --method qlora --seq-len 2048 --batch 4 --gpu l4

    Example: tunesmith plan memory --model ./my-model-dir --method lora --json

    Example: tunesmith plan memory --model llama-3.1-8b --method qlora --gpu-memory 8
    """
    if method not in ("full", "lora", "qlora"):
        _fail(f"--method must be full, lora or qlora, not {method!r}")
    if gpu is not None and gpu not in mem.GPUS:
        _fail(f"--gpu must be one of {', '.join(mem.GPUS)}, not {gpu!r}")
    try:
        shape = mem.resolve_shape(model)
    except mem.UnknownModel as exc:
        _fail(str(exc))
    est = mem.estimate_memory(shape, method, seq_len, batch, grad_checkpointing, lora_r)  # type: ignore[arg-type]
    payload: dict[str, Any] = est.to_dict()
    payload["fits"] = {k: est.total_gib <= g.memory_gib for k, g in mem.GPUS.items() if g.memory_gib}
    if gpu_memory is not None:
        _finite(gpu_memory=gpu_memory)
        payload["fits"][f"{gpu_memory:g}GiB"] = est.total_gib <= gpu_memory
    step = None
    if gpu:
        step = mem.estimate_step_time(shape, method, seq_len, batch, grad_accum, gpu, mfu, grad_checkpointing, lora_r, est.total_gib)  # type: ignore[arg-type]
        payload["step_time"] = step.to_dict()
    if as_json:
        _emit_json(payload)
        return
    table = Table(title=f"{shape.name}: {method}, {batch} x {seq_len} tokens, grad checkpointing {'on' if grad_checkpointing else 'off'}")
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
    if step:
        out.print(
            f"step time on {step.gpu} at {step.mfu:.0%} MFU: ~{step.seconds_per_step:.3g} s per step of {step.tokens_per_step:,} tokens "
            f"(~{step.tokens_per_second:,.0f} tokens/s)"
            + (f" [yellow]-- but it does not fit in its {mem.GPUS[gpu].memory_gib:g} GiB[/]" if step.fits_in_memory is False else "")
        )


# ---------------------------------------------------------------- cost


@app.command()
def cost(
    data: Path = typer.Argument(..., help="Training JSONL ({messages}, {text,label} or Alpaca records)."),
    model: str = typer.Option(..., help="Model directory or smollm2-135m-instruct: its tokenizer and chat template count the tokens; its config.json gives the shape."),
    epochs: int = typer.Option(1, min=1, help="Passes over the data (1, as train.epochs defaults to)."),
    prices: Path = typer.Option(co.DEFAULT_PRICES, help="Price table YAML (dated, illustrative; copy and edit it)."),
    method: str = typer.Option("lora", help="full | lora | qlora (self-hosted throughput)."),
    gpu: str = typer.Option("h100", help="Self-hosted GPU: " + " | ".join(mem.GPUS)),
    gpu_hour_usd: Optional[float] = typer.Option(None, min=0, help="Override the price table's USD per GPU hour."),
    tokens_per_second: Optional[float] = typer.Option(None, min=0.001, help="Override the estimated training throughput."),
    mfu: Optional[float] = typer.Option(None, min=0.001, max=1.0, help="MFU for the throughput estimate (see `plan memory`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Count training tokens with the model's real tokenizer and chat template, and price them.

    Example: tunesmith plan cost data/train.jsonl --model ./models/llama-3.2-1b --epochs 3 --gpu l4
    """
    if method not in ("full", "lora", "qlora"):
        _fail(f"--method must be full, lora or qlora, not {method!r}")
    if gpu not in mem.GPUS:
        _fail(f"--gpu must be one of {', '.join(mem.GPUS)}, not {gpu!r}")
    _finite(gpu_hour_usd=gpu_hour_usd, tokens_per_second=tokens_per_second)
    try:
        table = co.load_prices(prices)
        loaded = read_conversations(data)
    except (co.PriceError, DataError) as exc:
        _fail(str(exc))
    convs = loaded.conversations
    if loaded.skipped:
        err.print(f"[yellow]warning:[/] {loaded.warning()}")
    from tunesmith.models import ModelError, resolve_model

    try:
        model = resolve_model(model)
    except ModelError as exc:
        hint = ""
        if mem._normalise(model) in mem.KNOWN_SHAPES:  # a name `plan memory` accepts, so say why cost cannot
            hint = (f" ('{model}' is a known shape for `plan memory`, but counting tokens needs the model's "
                    "tokenizer files: pass a local directory with them)")
        _fail(f"{exc}{hint}")
    shape = None
    if tokens_per_second is None:
        try:
            shape = mem.resolve_shape(str(model))
        except mem.UnknownModel as exc:
            _fail(f"{exc}; pass --tokens-per-second to skip the throughput estimate")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as exc:
        _fail(f"{model}: cannot load a tokenizer ({exc})")
    with Progress(TextColumn("counting tokens"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
        task_id = bar.add_task("count", total=len(convs))
        try:
            counts = co.count_tokens(tokenizer, convs, on_record=lambda: bar.advance(task_id))
        except co.PriceError as exc:
            _fail(f"{model}: {exc}")
    try:
        result = co.estimate_cost(counts, epochs, table, shape, method, gpu, mfu, tokens_per_second, gpu_hour_usd)  # type: ignore[arg-type]
    except (co.PriceError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        _emit_json({**result.to_dict(), "skipped_rows": loaded.skipped})
        return
    out.print(
        f"{result.records:,} records, {result.tokens_per_epoch:,} tokens per epoch (mean {result.mean_tokens_per_record:,.1f}, "
        f"max {result.max_tokens_per_record:,}) x {epochs} epochs = [bold]{result.training_tokens:,}[/] training tokens"
    )
    managed = Table(title=f"Managed fine-tuning APIs (prices as of {result.prices_as_of}; illustrative)")
    for col in ("provider", "model", "USD / M tokens", "USD"):
        managed.add_column(col, justify="right" if "USD" in col else "left")
    for m in result.managed:
        managed.add_row(m["provider"], m["model"], f"{m['usd_per_million_training_tokens']:g}", f"{m['usd']:,.2f}")
    out.print(managed)
    sh = result.self_hosted
    out.print(
        f"Self-hosted ({sh['method']} on {gpu}): ~{sh['tokens_per_second']:,.0f} tokens/s -> {sh['gpu_hours']:,.3f} GPU hours "
        f"x ${sh['gpu_hour_usd']:g}/h = [bold]${sh['usd']:,.2f}[/] (plus setup time and idle minutes, not counted)"
    )
    out.print(f"[dim]{result.prices_note} Edit {prices} or pass --prices.[/]")
