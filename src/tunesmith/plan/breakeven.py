"""When does a fine-tune pay for itself?

Only the tokens fine-tuning removes are compared: the instructions and few-shot examples a prompted
model needs on every request ("overhead"). The user's own input and the answer cost the same on
both sides, so they cancel out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path


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
