"""Should this task be prompted, given few-shot examples, retrieval, a fine-tune, or both?

A scored rule set, not a model: each rule that applies adds or removes points for the five options
and says why. The option with most points wins; on a tie the simpler option wins (a prompt is
cheaper to build and to change than an index, which is cheaper than a training pipeline). Every
number here is a judgement call written down so that it can be read, argued with and changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.plan.dataset import DataStats

OPTIONS = ("prompt", "few-shot", "rag", "fine-tune", "rag+fine-tune")  # simplest first: the tie-break order
LABELS = {
    "prompt": "Prompt only",
    "few-shot": "Few-shot prompt",
    "rag": "Retrieval (RAG)",
    "fine-tune": "Fine-tune",
    "rag+fine-tune": "RAG + fine-tune",
}


class Task(str, Enum):
    classification = "classification"
    extraction = "extraction"
    generation = "generation"
    style = "style"
    qa = "qa"
    translation = "translation"
    summarization = "summarization"
    chat = "chat"
    other = "other"


class KnowledgeChange(str, Enum):
    none = "none"  # the input holds everything needed
    static = "static"  # needs domain documents that rarely change
    yearly = "yearly"
    monthly = "monthly"
    weekly = "weekly"
    daily = "daily"


class Strictness(str, Enum):
    low = "low"
    medium = "medium"
    strict = "strict"


class AdvisorInputs(BaseModel):
    """What the advisor asks. Field names are the keys of an --answers YAML file."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True, validate_default=True)

    task: Task = Field(Task.other, description="kind of task")
    examples: int = Field(0, ge=0, description="labelled input/output examples available")
    knowledge_changes: KnowledgeChange = Field(
        KnowledgeChange.none, description="how often the facts the answers depend on change (none: the input has them)"
    )
    format_strictness: Strictness = Field(Strictness.medium, description="how strictly the output format must hold")
    daily_volume: int = Field(100, ge=0, description="requests per day")
    prompt_tokens: int = Field(500, ge=0, description="instruction + example tokens repeated on every request")
    price_in: float = Field(5.0, ge=0, allow_inf_nan=False, description="USD per million input tokens of the prompted model")
    privacy: bool = Field(False, description="data must stay on your own infrastructure")
    latency_ms: int | None = Field(None, gt=0, description="latency target per request in ms")
    recurring: bool = Field(True, description="a recurring workload (False: a one-off job)")


@dataclass
class Reason:
    rule: str
    text: str
    effect: dict[str, int]


@dataclass
class Advice:
    recommendation: str
    label: str
    confidence: str
    scores: dict[str, int]
    reasons: list[Reason]
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    data: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _examples(a: AdvisorInputs, n: int, from_data: bool) -> Reason:
    src = "records in the data" if from_data else "examples"
    if n == 0:
        return Reason("examples", "No labelled examples: start zero-shot, and collect real inputs and corrected outputs as you go.",
                      {"prompt": 2, "fine-tune": -4, "rag+fine-tune": -4})
    if n < 20:
        return Reason("examples", f"Only {n} {src}: too few to fine-tune on (aim for 100+); show the best ones as few-shot demonstrations.",
                      {"few-shot": 2, "prompt": 1, "fine-tune": -4, "rag+fine-tune": -4})
    if n < 100:
        return Reason("examples", f"{n} {src}: enough for few-shot demonstrations and a small eval set, thin for fine-tuning (100+ helps, hundreds are better).",
                      {"few-shot": 2, "fine-tune": -1, "rag+fine-tune": -1})
    if n < 1000:
        return Reason("examples", f"{n} {src}: enough to fine-tune a small model with LoRA, with some held out for testing.",
                      {"fine-tune": 2, "rag+fine-tune": 1})
    return Reason("examples", f"{n:,} {src}: plenty to fine-tune on and to measure the result.", {"fine-tune": 3, "rag+fine-tune": 2})


def _knowledge(a: AdvisorInputs) -> Reason | None:
    k = a.knowledge_changes
    if k in ("weekly", "daily"):
        return Reason("knowledge", f"The facts change {k}: whatever is trained into the weights is stale by the next change, so retrieve current documents at request time (fine-tuning can still shape format and tone on top).",
                      {"rag": 5, "rag+fine-tune": 3, "fine-tune": -4, "prompt": -2, "few-shot": -2})
    if k == "monthly":
        return Reason("knowledge", "The facts change monthly: retraining monthly is possible but retrieval keeps answers current without it.",
                      {"rag": 4, "rag+fine-tune": 2, "fine-tune": -2, "prompt": -1, "few-shot": -1})
    if k in ("static", "yearly"):
        return Reason("knowledge", "Answers depend on domain documents: retrieval grounds them and can cite the source; fine-tuning is an unreliable way to store facts.",
                      {"rag": 3, "rag+fine-tune": 2, "prompt": -1})
    return None


_TASK_RULES: dict[str, tuple[str, dict[str, int]]] = {
    "classification": ("Classification has a fixed label set and short answers: a small fine-tuned model typically matches a large prompted one at a fraction of the cost per request.",
                       {"fine-tune": 3, "few-shot": 1}),
    "extraction": ("Extraction follows one schema on every request: a fine-tune learns the fields and edge cases from examples.",
                   {"fine-tune": 2, "few-shot": 1}),
    "generation": ("A house style or voice is easier to show with examples than to describe in instructions.", {"fine-tune": 3}),
    "style": ("A house style or voice is easier to show with examples than to describe in instructions.", {"fine-tune": 3}),
    "translation": ("General-purpose models already translate well: an instruction (and a glossary, if terms matter) is usually enough.", {"prompt": 3}),
    "summarization": ("General-purpose models already summarise well: instructions on length and focus are usually enough.", {"prompt": 2}),
}


def _task(a: AdvisorInputs) -> Reason | None:
    if a.task == "qa":
        if a.knowledge_changes == "none":
            return Reason("task", "Question answering over text supplied with the question: a prompt can do it.", {"prompt": 1})
        return Reason("task", "Question answering stands or falls with having the right facts in context.", {"rag": 2})
    if a.task in _TASK_RULES:
        text, effect = _TASK_RULES[a.task]
        return Reason("task", text, effect)
    return None


def _strictness(a: AdvisorInputs) -> Reason:
    if a.format_strictness == "strict":
        return Reason("format", "The output format must hold strictly: fine-tuning makes it the model's default, while a prompted model keeps a residual rate of violations (validate outputs either way).",
                      {"fine-tune": 3, "rag+fine-tune": 2})
    if a.format_strictness == "medium":
        return Reason("format", "A consistent format matters: examples, in the prompt or in training, pin it down.", {"fine-tune": 1, "rag+fine-tune": 1, "few-shot": 1})
    return Reason("format", "Free-form output: no format to enforce.", {"prompt": 1})


def _volume(a: AdvisorInputs) -> Reason | None:
    if not a.recurring:
        return None
    tokens = a.daily_volume * a.prompt_tokens
    usd = tokens * a.price_in / 1e6
    spend = f"{a.daily_volume:,} requests/day x {a.prompt_tokens:,} prompt tokens = {tokens / 1e6:,.1f}M tokens/day (about ${usd:,.2f}/day at ${a.price_in:g}/M)"
    if tokens >= 20_000_000:
        return Reason("volume", f"{spend} spent repeating the same instructions: a fine-tune removes most of them and can run on a smaller model. Check with `tunesmith plan breakeven`.",
                      {"fine-tune": 3, "rag+fine-tune": 2})
    if tokens >= 1_000_000:
        return Reason("volume", f"{spend}: a fine-tune that drops the instructions saves money over time.", {"fine-tune": 1, "rag+fine-tune": 1})
    if a.daily_volume < 50:
        return Reason("volume", f"Low volume ({a.daily_volume}/day): per-request savings add up slowly.", {"prompt": 1, "fine-tune": -1})
    return None


def _recurring(a: AdvisorInputs) -> Reason:
    if not a.recurring:
        return Reason("recurrence", "A one-off job: training a model or building an index costs more than it can save on a single run.",
                      {"prompt": 4, "few-shot": 1, "rag": -1, "fine-tune": -4, "rag+fine-tune": -4})
    return Reason("recurrence", "A recurring workload: a one-time setup (an index, a training run) can pay for itself.",
                  {"rag": 1, "fine-tune": 1, "rag+fine-tune": 1})


def _privacy(a: AdvisorInputs) -> Reason | None:
    if not a.privacy:
        return None
    return Reason("privacy", "Data must stay on your infrastructure: a small open model you host yourself, fine-tuned on your examples, usually closes much of the gap to large hosted models.",
                  {"fine-tune": 1, "rag+fine-tune": 1})


def _latency(a: AdvisorInputs) -> Reason | None:
    if a.latency_ms is None:
        return None
    if a.latency_ms <= 500:
        return Reason("latency", f"A {a.latency_ms} ms target: a small fine-tuned model with a short prompt is fastest; long few-shot prompts and a retrieval hop both add latency.",
                      {"fine-tune": 2, "rag": -1, "few-shot": -1})
    if a.latency_ms <= 1500:
        return Reason("latency", f"A {a.latency_ms} ms target: shorter prompts help; a fine-tune allows them.", {"fine-tune": 1})
    return None


def _data_rules(stats: DataStats) -> tuple[list[Reason], list[str]]:
    reasons: list[Reason] = []
    warnings = [stats.skipped_note] if stats.skipped_note else []
    if stats.system_prompt_share >= 0.9 and stats.system_prompt_chars >= 800:
        reasons.append(Reason("data.system_prompt",
                              f"The same {stats.system_prompt_chars:,}-character system prompt is on {stats.system_prompt_share:.0%} of records: a fine-tune can learn it and drop it from every request.",
                              {"fine-tune": 1}))
    if len(stats.labels) > 20:
        reasons.append(Reason("data.labels", f"{len(stats.labels)} labels: a few-shot prompt cannot show every class.", {"few-shot": -1}))
    if stats.label_imbalance and stats.label_imbalance >= 10:
        rarest = min(stats.labels, key=stats.labels.get)
        warnings.append(f"Labels are imbalanced ({stats.label_imbalance:g}x between the most and least common; '{rarest}' has {stats.labels[rarest]}): collect more of the rare classes or report per-class metrics.")
    if 0 < stats.system_prompt_share < 0.9 and len(stats.labels) == 0:
        warnings.append(f"Only {stats.system_prompt_share:.0%} of records share the most common system prompt: train and serve with the same one.")
    return reasons, warnings


_NEXT_STEPS = {
    "prompt": ["Write the instructions and keep 20-50 real inputs with expected outputs as an eval set.",
               "Revisit if the job becomes recurring or the volume grows: `tunesmith plan breakeven`."],
    "few-shot": ["Pick a few diverse examples per case for the prompt; keep others aside as an eval set.",
                 "Collect production inputs and corrected outputs: at 100+ examples a fine-tune becomes an option."],
    "rag": ["Index the source documents and measure retrieval (is the right passage in the top k?) before tuning the prompt.",
            "Set a re-indexing schedule that matches how often the facts change."],
    "fine-tune": ["Validate the data: `tunesmith data check DATA`.",
                  "Estimate cost and memory: `tunesmith plan cost DATA --model MODEL` and `tunesmith plan memory --model MODEL --method lora`.",
                  "Compare against the prompted baseline at eval time, not just against the base model."],
    "rag+fine-tune": ["Build and measure retrieval first; it carries the changing facts.",
                      "Fine-tune on (retrieved context, question, answer) records so the model learns the format and to use the context."],
}


def advise(inputs: AdvisorInputs, stats: DataStats | None = None) -> Advice:
    n_examples = stats.records if stats else inputs.examples
    reasons = [_recurring(inputs), _examples(inputs, n_examples, stats is not None)]
    reasons += [r for r in (_knowledge(inputs), _task(inputs), _strictness(inputs), _volume(inputs), _privacy(inputs), _latency(inputs)) if r]
    warnings: list[str] = []
    if stats:
        extra, warnings = _data_rules(stats)
        reasons += extra

    scores = {o: 0 for o in OPTIONS}
    for r in reasons:
        for option, points in r.effect.items():
            scores[option] += points
    ranked = sorted(OPTIONS, key=lambda o: (-scores[o], OPTIONS.index(o)))
    best, second = ranked[0], ranked[1]
    margin = scores[best] - scores[second]
    confidence = "clear" if margin >= 3 else f"close call: also consider {LABELS[second]}"
    return Advice(
        recommendation=best,
        label=LABELS[best],
        confidence=confidence,
        scores=dict(sorted(scores.items(), key=lambda kv: (-kv[1], OPTIONS.index(kv[0])))),
        reasons=reasons,
        warnings=warnings,
        next_steps=_NEXT_STEPS[best],
        inputs=inputs.model_dump(),
        data=stats.to_dict() if stats else None,
    )
