"""`tunesmith plan` commands: parse, call the calculators in plan/, print. `memory` and `cost` live in
sizing_cli.py and are registered here, after advise and breakeven, in the order `--help` lists them."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.prompt import Confirm, IntPrompt, Prompt
from rich.table import Table

from tunesmith.clikit import emit, err, fail, out, require_finite, user_errors
from tunesmith.plan import advisor, breakeven as be
from tunesmith.plan.answers import advisor_inputs, load_answers
from tunesmith.plan.dataset import read_conversations, summarise
from tunesmith.plan.sizing_cli import cost, memory

app = typer.Typer(
    help="Decide before you train: prompt, RAG or fine-tune? What will it cost, will it fit, when does it pay back?",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


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


def _effect(effect: dict[str, int]) -> str:
    return ", ".join(f"{v:+d} {k}" for k, v in sorted(effect.items(), key=lambda kv: -kv[1]))


def _print_advice(a: advisor.Advice) -> None:
    out.print(Panel(f"[bold]{a.label}[/]  ({a.confidence})", title="Recommendation", expand=False))
    if a.data:
        d = a.data
        line = f"Data: {d['records']} records, system prompt on {d['system_prompt_share']:.0%} ({d['system_prompt_chars']} chars)"
        if d["labels"]:
            line += f", {len(d['labels'])} labels (imbalance {d['label_imbalance']}x)" if d["label_imbalance"] else f", labels: {d['labels']}"
        out.print(escape(line))  # the labels are the user's
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
        reasons.add_row(r.rule, escape(r.text), _effect(r.effect))
    out.print(reasons)
    for w in a.warnings:
        out.print(f"[yellow]warning:[/] {escape(w)}")
    out.print("[bold]Next steps[/]")
    for step in a.next_steps:
        out.print(f"  - {escape(step)}")


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
    stats = None
    with user_errors():
        merged: dict[str, Any] = load_answers(answers) if answers else {}
        if data:
            stats = summarise(read_conversations(data))
    if not answers and not given and sys.stdin.isatty():
        merged.update(_ask(skip={"examples"} if stats else set()))
    merged.update(given)
    with user_errors():
        inputs = advisor_inputs(merged, answers)
    result = advisor.advise(inputs, stats)
    emit(result.to_dict(), as_json, lambda: _print_advice(result))


# ---------------------------------------------------------------- breakeven

_PLOT_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp")


@app.command()
def breakeven(
    overhead_tokens: Optional[int] = typer.Option(None, min=0, help="Prompt tokens per request that fine-tuning removes (instructions, few-shot examples)."),
    from_eval: Optional[Path] = typer.Option(None, "--from-eval", help="...or a run directory: the tokens per request its evaluation measured, for each endpoint system vs tuned."),
    price_in: float = typer.Option(..., min=0, help="USD per million input tokens of the prompted model (of the endpoint, with --from-eval)."),
    price_out: Optional[float] = typer.Option(None, min=0, help="USD per million output tokens of the endpoint (--from-eval)."),
    training_cost: float = typer.Option(..., min=0, help="One-off cost of the fine-tune, USD (see `tunesmith plan cost`)."),
    ft_cost_per_request: Optional[float] = typer.Option(None, min=0, help="Remaining prompt cost per request of the fine-tuned model, USD (with --from-eval: its whole serving cost per request, e.g. GPU $/h / requests per hour)."),
    ft_prompt_tokens: Optional[int] = typer.Option(None, min=0, help="...or its remaining prompt tokens per request."),
    ft_price_in: Optional[float] = typer.Option(None, min=0, help="USD per million input tokens of the fine-tuned model (default: --price-in)."),
    ft_price_out: Optional[float] = typer.Option(None, min=0, help="USD per million output tokens of the fine-tuned model (--from-eval; default: --price-out)."),
    system: Optional[list[str]] = typer.Option(None, "--system", help="Endpoint system to compare (--from-eval; repeatable; default: all)."),
    requests_per_day: Optional[float] = typer.Option(None, min=0, help="Traffic, to turn requests into days."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a cumulative-cost chart (PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Per-request cost of prompting vs a fine-tune, and after how many requests (and days) the training pays back.

    With --from-eval, the requests priced are those an evaluation measured: each endpoint system's mean prompt and
    completion tokens at --price-in/--price-out against the tuned model's (at --ft-price-in/--ft-price-out, default
    the same prices, or a fixed --ft-cost-per-request).

    Example: tunesmith plan breakeven --overhead-tokens 2300 --price-in 5 --ft-cost-per-request 0.00015 --training-cost 50 --requests-per-day 1000

    Example: tunesmith plan breakeven --from-eval runs/legal-bot --price-in 2.5 --price-out 10 --training-cost 40 --requests-per-day 5000
    """
    require_finite(price_in=price_in, training_cost=training_cost, ft_cost_per_request=ft_cost_per_request,
            ft_price_in=ft_price_in, requests_per_day=requests_per_day, price_out=price_out, ft_price_out=ft_price_out)
    if (overhead_tokens is None) == (from_eval is None):
        fail("give exactly one of --overhead-tokens or --from-eval RUN_DIR")
    if from_eval is not None:
        _breakeven_from_eval(from_eval, price_in, price_out, training_cost, ft_cost_per_request, ft_prompt_tokens,
                             ft_price_in, ft_price_out, requests_per_day, system, plot, as_json)
        return
    if price_out is not None or ft_price_out is not None or system:
        fail("--price-out, --ft-price-out and --system only apply together with --from-eval")
    if (ft_cost_per_request is None) == (ft_prompt_tokens is None):
        fail("give exactly one of --ft-cost-per-request or --ft-prompt-tokens (with optional --ft-price-in)")
    if ft_price_in is not None and ft_prompt_tokens is None:
        fail("--ft-price-in only applies together with --ft-prompt-tokens")
    if requests_per_day == 0:
        fail("--requests-per-day must be positive")
    if plot is not None and plot.is_dir():
        fail(f"--plot {plot}: is a directory; give a file name such as {plot / 'breakeven.png'}")
    if plot is not None and plot.suffix and plot.suffix.lower() not in _PLOT_FORMATS:
        fail(f"--plot {plot}: use one of {', '.join(_PLOT_FORMATS)}")
    assert overhead_tokens is not None
    prompt_cost = be.per_request_cost(overhead_tokens, price_in)
    ft_cost = ft_cost_per_request if ft_cost_per_request is not None else be.per_request_cost(ft_prompt_tokens or 0, price_in if ft_price_in is None else ft_price_in)
    result = be.breakeven(prompt_cost, ft_cost, training_cost, requests_per_day)
    payload = result.to_dict()
    if plot:
        try:
            plot = be.plot_cumulative(result, plot)
        except OSError as exc:
            fail(f"--plot {plot}: cannot write ({exc.strerror or exc})")
        payload["plot"] = str(plot)
    emit(payload, as_json, lambda: _print_breakeven(result, overhead_tokens, price_in, plot))


def _breakeven_from_eval(run_dir: Path, price_in: float, price_out: float | None, training_cost: float,
                         ft_cost_per_request: float | None, ft_prompt_tokens: int | None, ft_price_in: float | None,
                         ft_price_out: float | None, requests_per_day: float | None, systems: list[str] | None,
                         plot: Path | None, as_json: bool) -> None:
    if price_out is None:
        fail("--from-eval needs --price-out too: an endpoint request pays for its completion tokens")
    if ft_prompt_tokens is not None:
        fail("--ft-prompt-tokens does not apply with --from-eval: the tuned model's tokens are the measured ones")
    if ft_cost_per_request is not None and (ft_price_in is not None or ft_price_out is not None):
        fail("give --ft-cost-per-request or --ft-price-in/--ft-price-out, not both")
    if requests_per_day == 0:
        fail("--requests-per-day must be positive")
    if plot is not None:
        fail("--plot draws one comparison; with --from-eval use --json and plot the numbers")
    with user_errors():
        result = be.from_eval(run_dir, price_in=price_in, price_out=price_out, training_cost=training_cost,
                              ft_cost_per_request=ft_cost_per_request, ft_price_in=ft_price_in,
                              ft_price_out=ft_price_out, requests_per_day=requests_per_day, systems=systems)
    emit(result, as_json, lambda: _print_from_eval(result))


def _print_from_eval(result: dict[str, Any]) -> None:
    tuned = result["tuned"]
    table = Table(title="Break-even from measured tokens per request")
    for col in ("system", "prompt tok", "answer tok", "$/request", "saving"):
        table.add_column(col, justify="left" if col == "system" else "right")

    def tokens(row: dict[str, Any], key: str) -> str:
        return "—" if row.get(key) is None else f"{row[key]:,.1f}" + "*" * (row.get("source") == "estimated")

    table.add_row("tuned", tokens(tuned, "mean_prompt_tokens"), tokens(tuned, "mean_completion_tokens"),
                  _money(tuned["cost_per_request"]), "")
    for name, row in result["systems"].items():
        table.add_row(escape(name), tokens(row, "mean_prompt_tokens"), tokens(row, "mean_completion_tokens"),
                      _money(row["prompt_cost_per_request"]), _money(row["saving_per_request"]))
    out.print(table)
    p = result["prices"]
    out.print(f"from {escape(result['results'])}: endpoint at ${p['price_in']:g}/M in, ${p['price_out']:g}/M out; "
              f"training ${result['training_cost']:,.2f}", soft_wrap=True)
    for name, row in result["systems"].items():
        if row["never_breaks_even"]:
            out.print(f"{escape(name)}: [bold red]never[/] breaks even: tuned costs as much or more per request")
            continue
        days = "" if row["breakeven_days"] is None else \
            f" ({row['breakeven_days']:,.1f} days at {row['requests_per_day']:,.6g} requests/day)"
        out.print(f"{escape(name)}: break-even after [bold]{row['breakeven_requests']:,.0f}[/] requests{days}")
    for name, why in result["skipped"].items():
        out.print(f"[yellow]skipped:[/] {escape(name)} {escape(why)}", soft_wrap=True)
    if any(r.get("source") == "estimated" for r in [tuned, *result["systems"].values()]):
        out.print("* estimated: the endpoint sent no usage; counted with the run's tokenizer")
    for name, row in result["systems"].items():
        if row["failed"]:
            out.print(f"[yellow]note:[/] {escape(name)}: {row['failed']} failed requests are not in its means")


def _print_breakeven(result: be.Breakeven, overhead_tokens: int, price_in: float, plot: Path | None) -> None:
    prompt_cost, ft_cost, requests_per_day = result.prompt_cost_per_request, result.ft_cost_per_request, result.requests_per_day
    table = Table(title="Break-even: prompted vs fine-tuned", show_header=False)
    table.add_row("prompted, per request", f"{_money(prompt_cost)}  ({overhead_tokens:,} tokens x ${price_in:g}/M)")
    table.add_row("fine-tuned, per request", _money(ft_cost))
    table.add_row("saving per request", _money(result.saving_per_request))
    table.add_row("training cost", f"${result.training_cost:,.2f}")
    if result.never_breaks_even:
        table.add_row("break-even", "[bold red]never[/]: the fine-tuned model costs as much or more per request")
    else:
        table.add_row("break-even", f"[bold]{result.breakeven_requests:,.0f}[/] requests")
        if result.breakeven_days is not None:
            table.add_row("", f"[bold]{result.breakeven_days:,.1f}[/] days at {requests_per_day:,.6g} requests/day")
    out.print(table)
    if plot:
        out.print(f"plot: {plot}")


app.command()(memory)
app.command()(cost)
