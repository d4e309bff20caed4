"""When does a fine-tune pay for itself?

Only the tokens fine-tuning removes are compared: the instructions and few-shot examples a prompted
model needs on every request ("overhead"). The user's own input and the answer cost the same on
both sides, so they cancel out.

`from_eval` compares whole requests instead, at the tokens an evaluation measured (eval/results.json, the
endpoint's own `usage` where it sent one): each endpoint system's prompt and completion tokens at the
endpoint's prices, against the tuned model's at its own (or a fixed serving cost per request).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError


class FromEvalError(UserError):
    """A run whose evaluation cannot price its systems: none yet, no endpoint system, nothing measured."""


@dataclass
class Breakeven:
    prompt_cost_per_request: float
    ft_cost_per_request: float
    saving_per_request: float
    training_cost: float
    breakeven_requests: float | None  # None: fine-tuning never pays back
    breakeven_days: float | None
    requests_per_day: float | None
    never_breaks_even: bool

    def to_dict(self) -> dict:
        return asdict(self)


def per_request_cost(tokens: float, usd_per_million: float) -> float:
    return tokens * usd_per_million / 1e6


def breakeven(
    prompt_cost_per_request: float,
    ft_cost_per_request: float,
    training_cost: float,
    requests_per_day: float | None = None,
) -> Breakeven:
    if min(prompt_cost_per_request, ft_cost_per_request, training_cost) < 0:
        raise ValueError("costs must not be negative")
    if requests_per_day is not None and requests_per_day <= 0:
        raise ValueError("requests per day must be positive")
    saving = prompt_cost_per_request - ft_cost_per_request
    never = saving <= 0
    requests = None if never else training_cost / saving
    days = None if requests is None or requests_per_day is None else requests / requests_per_day
    return Breakeven(
        prompt_cost_per_request=prompt_cost_per_request,
        ft_cost_per_request=ft_cost_per_request,
        saving_per_request=saving,
        training_cost=training_cost,
        breakeven_requests=requests,
        breakeven_days=days,
        requests_per_day=requests_per_day,
        never_breaks_even=never,
    )


def request_cost(prompt_tokens: float, completion_tokens: float, price_in: float, price_out: float) -> float:
    return per_request_cost(prompt_tokens, price_in) + per_request_cost(completion_tokens, price_out)


def from_eval(
    run_dir: str | Path,
    *,
    price_in: float,
    price_out: float,
    training_cost: float,
    ft_cost_per_request: float | None = None,
    ft_price_in: float | None = None,
    ft_price_out: float | None = None,
    requests_per_day: float | None = None,
    systems: list[str] | None = None,
) -> dict[str, Any]:
    """Break-even of the tuned model against each endpoint system of a run's evaluation (or those named), at
    the mean tokens per request measured there. The tuned model costs `ft_cost_per_request`, or its own
    measured tokens at `ft_price_in`/`ft_price_out` (default: the endpoint's prices: only the tokens saved
    count)."""
    from tunesmith.rundir import RunDir

    run = RunDir(run_dir)
    results = run.results()
    if results is None:
        raise FromEvalError(f"{run.path}: no eval results ({run.results_path} is missing); evaluate the run first: "
                            f"tunesmith eval {run.path}")
    where = str(run.results_path)
    endpoints = {name: s for name, s in results.systems.items() if s.endpoint is not None}
    if not endpoints:
        raise FromEvalError(f"{where}: no endpoint systems to price (have: {', '.join(results.systems) or 'none'}); "
                            "add one to eval.systems as {name, url, model} and evaluate again")
    unknown = [name for name in systems or [] if name not in endpoints]
    if unknown:
        raise FromEvalError(f"--system {', '.join(unknown)}: not an endpoint system of {where} "
                            f"(have: {', '.join(endpoints)})")
    tuned = results.systems.get("tuned")
    tuned_usage = tuned.usage if tuned else None
    if ft_cost_per_request is None and (tuned_usage is None or tuned_usage.mean_prompt_tokens is None):
        raise FromEvalError(f"{where}: no measured tokens for the tuned system (evaluated before tokens were "
                            "recorded, or without tuned); evaluate again or give --ft-cost-per-request")
    ft_in = price_in if ft_price_in is None else ft_price_in
    ft_out = price_out if ft_price_out is None else ft_price_out
    tuned_row: dict[str, Any] = {"cost_per_request": ft_cost_per_request}
    if tuned_usage is not None and tuned_usage.mean_prompt_tokens is not None:
        tuned_row |= {"mean_prompt_tokens": tuned_usage.mean_prompt_tokens,
                      "mean_completion_tokens": tuned_usage.mean_completion_tokens, "source": tuned_usage.source}
        if ft_cost_per_request is None:
            tuned_row["cost_per_request"] = request_cost(tuned_usage.mean_prompt_tokens,
                                                         tuned_usage.mean_completion_tokens or 0.0, ft_in, ft_out)
    rows: dict[str, Any] = {}
    skipped: dict[str, str] = {}  # endpoints that answered nothing: nothing measured to price
    for name in systems or list(endpoints):
        usage, ep = endpoints[name].usage, endpoints[name].endpoint
        if usage is None or usage.mean_prompt_tokens is None:
            skipped[name] = f"answered no request ({ep.summary or 'no usage'})"
            continue
        cost = request_cost(usage.mean_prompt_tokens, usage.mean_completion_tokens or 0.0, price_in, price_out)
        rows[name] = {"model": ep.model, "url": ep.url, "requests": usage.requests, "failed": ep.failed,
                      "mean_prompt_tokens": usage.mean_prompt_tokens,
                      "mean_completion_tokens": usage.mean_completion_tokens, "source": usage.source,
                      **breakeven(cost, tuned_row["cost_per_request"], training_cost, requests_per_day).to_dict()}
    if not rows:
        raise FromEvalError(f"{where}: " + "; ".join(f"endpoint system {n} {why}" for n, why in skipped.items())
                            + "; nothing was measured to price")
    return {"run_dir": str(run.path), "results": where,
            "prices": {"price_in": price_in, "price_out": price_out, "ft_price_in": None if ft_cost_per_request
                       is not None else ft_in, "ft_price_out": None if ft_cost_per_request is not None else ft_out},
            "training_cost": training_cost, "requests_per_day": requests_per_day, "tuned": tuned_row,
            "systems": rows, "skipped": skipped}


def plot_cumulative(result: Breakeven, path: Path) -> Path:
    """Cumulative cost of both options against the number of requests, the crossing marked."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and in CI
    import matplotlib.pyplot as plt

    horizon = 2 * result.breakeven_requests if result.breakeven_requests else 10_000  # 0 when training is free
    horizon = max(10, math.ceil(horizon))
    xs = [horizon * k / 200 for k in range(201)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, [x * result.prompt_cost_per_request for x in xs], label="prompted (overhead tokens every request)")
    ax.plot(xs, [result.training_cost + x * result.ft_cost_per_request for x in xs], label="fine-tuned (training + per request)")
    if not result.never_breaks_even:
        y = result.breakeven_requests * result.prompt_cost_per_request
        ax.axvline(result.breakeven_requests, color="grey", linestyle=":", linewidth=1)
        note = f"break-even ≈ {result.breakeven_requests:,.0f} requests"
        if result.breakeven_days is not None:
            note += f" (≈ {result.breakeven_days:,.1f} days)"
        ax.annotate(note, (result.breakeven_requests, y), textcoords="offset points", xytext=(-8, 10), ha="right")
    else:
        ax.set_title("fine-tuning never breaks even: it costs at least as much per request")
    ax.set_xlabel("requests")
    ax.set_ylabel("cumulative cost (USD)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if not path.suffix:  # matplotlib would add .png itself; the path returned must be the file written
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
