"""The Plan page: break-even calculator, memory per method and the advisor questionnaire, each
the `tunesmith plan` code behind a form (query parameters, so every answer has a URL)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tunesmith.plan import breakeven as be
from tunesmith.plan.advisor import AdvisorInputs, KnowledgeChange, Strictness, Task, advise
from tunesmith.plan.memory import KNOWN_SHAPES, estimate_memory
from tunesmith.ui.charts import bar_chart, line_chart

BREAKEVEN_DEFAULTS = {"requests_per_day": 2000.0, "overhead_tokens": 1500.0, "price_in": 2.5,
                      "ft_prompt_tokens": 100.0, "ft_price_in": 3.0, "training_cost": 40.0}
METHODS = ("full", "lora", "qlora")


def _float(params: dict[str, str], key: str, default: float, lo: float = 0.0) -> float:
    """A non-negative number from the form; anything unreadable falls back to the default."""
    try:
        value = float(params.get(key, default))
    except ValueError:
        return default
    return value if value >= lo and value == value and value != float("inf") else default


def money(x: float) -> str:
    """Dollars as people write them: cents for big sums, enough digits to see a per-request cost."""
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:.6f}".rstrip("0").rstrip(".") if x else "$0"


def breakeven_view(params: dict[str, str]) -> dict[str, Any]:
    v = {k: _float(params, k, d) for k, d in BREAKEVEN_DEFAULTS.items()}
    v["requests_per_day"] = max(v["requests_per_day"], 1.0)
    prompt_cost = be.per_request_cost(v["overhead_tokens"], v["price_in"])
    ft_cost = be.per_request_cost(v["ft_prompt_tokens"], v["ft_price_in"])
    r = be.breakeven(prompt_cost, ft_cost, v["training_cost"], v["requests_per_day"])
    horizon = min(3650.0, max(30.0, 2 * r.breakeven_days)) if r.breakeven_days else 365.0
    days = [horizon * k / 40 for k in range(41)]
    rpd = v["requests_per_day"]
    chart = line_chart({"prompting": [(d, prompt_cost * rpd * d) for d in days],
                        "fine-tune": [(d, v["training_cost"] + ft_cost * rpd * d) for d in days]},
                       "cumulative cost, USD", x_label="days")
    if r.never_breaks_even:
        sentence = (f"NEVER PAYS BACK — the fine-tuned model costs {money(ft_cost)} per request, not less than "
                    f"prompting's {money(prompt_cost)}")
    else:
        sentence = (f"PAYS BACK after {r.breakeven_requests:,.0f} requests ≈ {r.breakeven_days:,.1f} days at "
                    f"{rpd:,.0f}/day (saves {money(r.saving_per_request)} per request; training "
                    f"{money(v['training_cost'])})")
    return {"inputs": v, "result": r, "sentence": sentence, "chart": chart, "never": r.never_breaks_even}


def memory_view(params: dict[str, str]) -> dict[str, Any]:
    model = params.get("model") if params.get("model") in KNOWN_SHAPES else "smollm2-135m"
    seq_len = int(_float(params, "seq_len", 1024, 1))
    batch = int(_float(params, "batch", 1, 1))
    lora_r = int(_float(params, "lora_r", 16, 1))
    shape = KNOWN_SHAPES[model]
    rows = [estimate_memory(shape, m, seq_len=seq_len, batch=batch, lora_r=lora_r) for m in METHODS]
    chart = bar_chart([(e.method, {"total GiB": e.total_gib}) for e in rows], f"training memory, {model}")
    return {"models": list(KNOWN_SHAPES), "model": model, "seq_len": seq_len, "batch": batch, "lora_r": lora_r,
            "rows": rows, "chart": chart}


def advisor_view(params: dict[str, str]) -> dict[str, Any]:
    fields = {k: params[k] for k in AdvisorInputs.model_fields if params.get(k) not in (None, "")}
    for flag in ("privacy", "recurring"):
        if "asked" in params:  # an unticked checkbox sends nothing: the form marks that it was submitted
            fields[flag] = flag in params
    try:
        inputs = AdvisorInputs.model_validate(fields)
        error = None
    except ValidationError as e:
        err = e.errors()[0]
        error = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
        inputs = AdvisorInputs()
    return {"inputs": inputs, "advice": advise(inputs) if "asked" in params and not error else None,
            "error": error, "tasks": [t.value for t in Task], "changes": [k.value for k in KnowledgeChange],
            "strictness": [s.value for s in Strictness]}
