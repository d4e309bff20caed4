"""One parity report across runtimes: the same prompts, decoded greedily by the adapter and by each runtime.

Per runtime: identical answers (token ids), the median character where differing answers first diverge,
answers that end at the same place (same length, both on an end token or both at the limit), rule compliance
and a task metric (ROUGE-L against the test split's answers), tokens/s. A runtime at f32 or f16 passes with
at least `min_identical` of its answers identical to the adapter's. Quantised weights (q8_0; bf16 on a GPU)
cannot be token-identical, so such a runtime passes when its rule compliance and task metric stay within
`margin` of the adapter's, and the report says which rule judged it.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunesmith.deploy.registry import Version
from tunesmith.deploy.runtimes import RuntimeRun
from tunesmith.errors import UserError

EXACT_TYPES = ("f32", "f16")  # weight types whose greedy answers must match the adapter's token for token
MIN_IDENTICAL = 0.9
MARGIN = 0.05


class PromptsError(UserError):
    """A --prompts file that cannot be read as chat prompts; the message names the file and line."""


Case = tuple[list[dict[str, str]], str | None]  # prompt messages, the reference answer when known


def read_cases(path: Path, n: int) -> list[Case]:
    """Chat prompts from a JSONL file of {"messages": [...]} records; a final assistant turn is the reference."""
    cases: list[Case] = []
    try:
        lines = path.expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptsError(f"{path}: cannot read ({e})") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            msgs = json.loads(line).get("messages")
        except (json.JSONDecodeError, AttributeError):
            raise PromptsError(f"{path}:{no}: not a JSON object with a 'messages' list") from None
        ok = isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user",
                                                                                             "assistant")
            for m in msgs)
        if not ok:
            raise PromptsError(f"{path}:{no}: 'messages' must be a list of {{role, content}} turns "
                               "(role system, user or assistant)")
        answer = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else None
        prompt = [{"role": m["role"], "content": m["content"]} for m in (msgs[:-1] if answer is not None else msgs)]
        if not prompt or prompt[-1]["role"] != "user":
            raise PromptsError(f"{path}:{no}: the prompt must end with a user turn")
        cases.append((prompt, answer))
        if len(cases) >= n:
            break
    if not cases:
        raise PromptsError(f"{path}: no prompts")
    return cases


@dataclass
class RuntimeReport:
    runtime: str
    detail: str
    weight_type: str
    prompts: int
    identical: int
    first_divergence: float | None  # median character of the first difference, over the differing answers
    same_stop: int
    tokens_per_s: float
    compliance: float | None  # share of answers passing every rule of the version (None: it has no rules)
    adapter_compliance: float | None
    task_metric: float | None  # ROUGE-L against the references (None: no references)
    adapter_task_metric: float | None
    rule: str  # which rule judged it, in words
    passed: bool
    mismatches: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Scored:
    texts: list[str]
    compliance: float | None
    task: float | None


def _score(run: RuntimeRun, tok, cases: list[Case], rules) -> _Scored:
    from tunesmith.evaluate import metrics

    texts = [tok.decode(a.ids, skip_special_tokens=True) for a in run.answers]
    comp = None
    if rules is not None:
        comp = metrics.compliance(texts, [c[0][-1]["content"] for c in cases], rules)["all"]
    refs = [(t, c[1]) for t, c in zip(texts, cases) if c[1] is not None]
    task = metrics.generation([t for t, _ in refs], [r for _, r in refs])["rouge_l"] if refs else None
    return _Scored(texts, comp, task)


def compare(ref: RuntimeRun, run: RuntimeRun, tok, cases: list[Case], rules=None, min_identical: float = MIN_IDENTICAL,
            margin: float = MARGIN) -> RuntimeReport:
    """How `run` answers against the adapter's answers `ref` on the same prompts."""
    a, b = _score(ref, tok, cases, rules), _score(run, tok, cases, rules)
    identical = same_stop = 0
    diverge: list[int] = []
    mismatches = []
    for (msgs, _), x, y, tx, ty in zip(cases, ref.answers, run.answers, a.texts, b.texts):
        if x.ids == y.ids:
            identical += 1
        else:
            diverge.append(len(os.path.commonprefix([tx, ty])))
            mismatches.append({"prompt": msgs[-1]["content"], "adapter": tx, run.runtime: ty})
        same_stop += x.stopped == y.stopped and len(x.ids) == len(y.ids)
    n = len(cases)
    tokens = sum(len(x.ids) + x.stopped for x in run.answers)
    if run.weight_type in EXACT_TYPES:
        rule = f"{run.weight_type}: at least {min_identical:.0%} of answers identical to the adapter's"
        passed = identical >= min_identical * n
    else:
        checks = [(name, got, want) for name, got, want in (("rule compliance", b.compliance, a.compliance),
                                                             ("ROUGE-L", b.task, a.task)) if want is not None]
        rule = (f"{run.weight_type} is quantised, so answers cannot be token-identical: "
                + (" and ".join(name for name, _, _ in checks) + f" within {margin:g} of the adapter's"
                   if checks else "no rules or reference answers to judge it by; identical answers are informative"))
        passed = all(abs(got - want) <= margin for _, got, want in checks)
    return RuntimeReport(run.runtime, run.detail, run.weight_type, n, identical,
                         statistics.median(diverge) if diverge else None, same_stop,
                         tokens / run.seconds if run.seconds > 0 else 0.0, b.compliance, a.compliance, b.task, a.task,
                         rule, passed, mismatches[:3])


@dataclass
class Skipped:
    runtime: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "skipped": self.reason}


def version_rules(version: Version):
    if not version.rules_yaml:
        return None
    import yaml

    from tunesmith.rules import parse_rules

    return parse_rules(yaml.safe_load(version.rules_yaml), f"rules of {version.id}")


def verify_runtimes(version: Version, registry: Path, runtimes: list[str], cases: list[Case], *,
                    max_new_tokens: int = 64, gguf: Path | None = None, gguf_type: str = "f16",
                    vllm_command: list[str] | None = None, min_identical: float = MIN_IDENTICAL,
                    margin: float = MARGIN, step: Callable[[str], None] = lambda s: None,
                    answered: Callable[[], None] = lambda: None, running_vllm=None) -> list[RuntimeReport | Skipped]:
    """Decode `cases` with the adapter, then with each runtime in `runtimes` that is installed, and compare.

    llama.cpp runs `gguf` when given, else a GGUF of `gguf_type` exported for this check into a temporary folder.
    `running_vllm`: a vLLM engine already serving, checked as it is instead of starting one."""
    import tempfile

    from transformers import GenerationConfig

    from tunesmith.deploy import runtimes as rt
    from tunesmith.deploy.merge import encode_chat, tokenizer_dir
    from tunesmith.models import load_tokenizer, stop_token_ids

    tok = load_tokenizer(tokenizer_dir(version))
    try:
        gen_config = GenerationConfig.from_pretrained(version.base_model)
    except OSError:  # a base without generation_config.json: the tokenizer's end tokens alone
        gen_config = None
    stops = stop_token_ids(tok, gen_config)
    prompts = [encode_chat(tok, msgs) for msgs, _ in cases]
    rules = version_rules(version)
    step("adapter (reference)")
    ref = rt.reference(version, prompts, stops, max_new_tokens, answered)
    reports: list[RuntimeReport | Skipped] = []
    for name in runtimes:
        if (name != "vllm" or running_vllm is None) and (why := rt.missing(name, vllm_command)):
            reports.append(Skipped(name, why))
            continue
        step(name)
        if name == "embedded":
            run = rt.embedded(version, registry, prompts, stops, max_new_tokens)
        elif name == "vllm":
            run = rt.vllm(version, registry, prompts, stops, max_new_tokens, vllm_command, running_vllm)
        if name in ("embedded", "vllm"):  # the engines answer all prompts at once
            for _ in prompts:
                answered()
        if name == "llama.cpp":
            with tempfile.TemporaryDirectory(prefix="tunesmith-parity-") as tmp:
                path, qtype = gguf, gguf_type
                if path is None:
                    from tunesmith.deploy.gguf_export import export_gguf

                    step(f"llama.cpp (exporting a {gguf_type} GGUF to run)")
                    path = export_gguf(version, Path(tmp) / f"{version.id}.gguf", gguf_type)
                run = rt.llama_cpp(path, qtype, prompts, max_new_tokens, answered)
        reports.append(compare(ref, run, tok, cases, rules, min_identical, margin))
    return reports
