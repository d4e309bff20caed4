"""The regression suite: did fine-tuning break what the model could already do?

The suite (tunesmith.evaluate.suite) is answered by the base and the tuned model; this module scores
one model's answers and pairs the two item by item. Generated answers pass when every check passes
and the answer is not an echo; a multiple-choice answer is the choice the model found most likely
and passes when it is the right one. The verdict on the paired outcomes is the gate's
(tunesmith.evaluate.gate.judge_drop).

An echo is an answer made only of runs of three or more words copied from the prompt: "144 divided
by 12" repeated back never answers "What is 144 divided by 12?". Checks marked "on": "added" look
only at what the answer added to such runs (the number after "17 + 25 ="), so a copied operand
cannot satisfy them either.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from tunesmith.rules import Rule

ECHO_RUN = 3
_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def load_suite() -> tuple[dict[str, Any], ...]:
    from tunesmith.evaluate.suite import build_suite

    items = []
    for item in build_suite():
        if item["kind"] == "generate":
            item["rules"] = [(Rule.model_validate({k: v for k, v in spec.items() if k != "on"}), spec.get("on"))
                             for spec in item["checks"]]
        items.append(item)
    return tuple(items)


@lru_cache(maxsize=1)
def suite_sha() -> str:
    """Hash of every item as shipped: part of the generation cache key, so a changed suite is re-answered."""
    plain = [{k: v for k, v in it.items() if k != "rules"} for it in load_suite()]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def regression_prompts() -> list[dict[str, Any]]:
    """What to ask: [{"id", "category", "kind", "messages", "max_new_tokens", "choices"?}] in suite order."""
    out = []
    for it in load_suite():
        row = {"id": it["id"], "category": it["category"], "kind": it["kind"],
               "messages": [{"role": "user", "content": it["prompt"]}], "max_new_tokens": it["max_new_tokens"]}
        if it["kind"] == "choice":
            row["choices"] = list(it["choices"])
        out.append(row)
    return out


def added_text(answer: str, prompt: str) -> tuple[str, bool]:
    """(what the answer adds to the prompt, whether it is an echo).

    Words are compared case-insensitively; every maximal run of >= ECHO_RUN answer words that also
    stands in the prompt is cut out. The answer is an echo when it has words and all were cut."""
    prompt_words = [w.lower() for w in _WORD.findall(prompt)]
    grams = {tuple(prompt_words[i:i + ECHO_RUN]) for i in range(len(prompt_words) - ECHO_RUN + 1)}
    matches = list(_WORD.finditer(answer))
    words = [m.group(0).lower() for m in matches]
    copied = [False] * len(words)
    for i in range(len(words) - ECHO_RUN + 1):
        if tuple(words[i:i + ECHO_RUN]) in grams:
            copied[i:i + ECHO_RUN] = [True] * ECHO_RUN
    pieces, pos = [], 0
    for m, cut in zip(matches, copied):
        if cut:
            pieces.append(answer[pos:m.start()])
            pos = m.end()
    pieces.append(answer[pos:])
    return "".join(pieces), bool(words) and all(copied)


def _check(item: dict[str, Any], answer: str) -> list[str]:
    """Names of what the answer failed ([] = passed)."""
    if item["kind"] == "choice":
        return [] if answer == item["answer"] else [f"chose {answer!r}, not {item['answer']!r}"]
    added, echo = added_text(answer, item["prompt"])
    if echo:
        return ["echo: the answer only repeats the prompt"]
    if not _WORD.search(answer):  # "no commas" and "at most 5 words" hold for nothing, which answers nothing
        return ["empty: the answer has no words"]
    return [rule.describe() + (" (on what the answer added)" if on == "added" else "")
            for rule, on in item["rules"] if not rule.check(added if on == "added" else answer, item["prompt"])]


def score_regression(outputs: dict[str, str]) -> dict[str, Any]:
    """Pass rates of one model's answers (id -> generated text, or the chosen choice).

    Returns {"overall": rate, "by_category": {cat: {"rate", "passed", "n"}},
    "items": [{"id", "category", "prompt", "output", "passed", "failed_checks"}]}.
    Every suite id must be answered; unknown ids are an error too, so a typo cannot
    silently shrink the suite.
    """
    suite = load_suite()
    known = {it["id"] for it in suite}
    missing = sorted(known - outputs.keys())
    unknown = sorted(set(outputs) - known)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"no answer for {_ids(missing)}")
        if unknown:
            parts.append(f"ids not in the suite: {_ids(unknown)}")
        raise ValueError("regression outputs: " + "; ".join(parts))
    items = []
    for it in suite:
        failed = _check(it, outputs[it["id"]])
        items.append({"id": it["id"], "category": it["category"], "prompt": it["prompt"],
                      "output": outputs[it["id"]], "passed": not failed, "failed_checks": failed})
    return rates(items)


def rates(items: list[dict[str, Any]]) -> dict[str, Any]:
    """score_regression's shape for scored items (each with "category" and "passed"): the suite's, an lm-eval
    task's (tunesmith.evaluate.lm_eval_backend), or both together, where "overall" pools every item."""
    by_category: dict[str, dict[str, Any]] = {}
    for item in items:
        cat = by_category.setdefault(item["category"], {"passed": 0, "n": 0})
        cat["passed"] += item["passed"]
        cat["n"] += 1
    for cat in by_category.values():
        cat["rate"] = cat["passed"] / cat["n"]
    overall = sum(i["passed"] for i in items) / len(items) if items else 0.0
    return {"overall": overall, "by_category": by_category, "items": items}


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def compare_regression(base: dict[str, Any], tuned: dict[str, Any], threshold: float | None = None,
                       category_threshold: float | None = None) -> dict[str, Any]:
    """Base vs tuned, paired item by item, per category and overall (gate.judge_drop on each).

    Returns {"threshold", "category_threshold", "alpha", "overall": row, "by_category": {cat: row},
    "flagged": [rows whose verdict is FAIL], "inconclusive": [rows without the power to decide],
    "verdict": "PASS" | "FAIL" | "inconclusive", "changed": [items lost or gained, both answers]};
    a row is gate.judge_drop's, with "base" and "tuned" pass rates added.
    """
    from tunesmith.evaluate import gate

    threshold = gate.REGRESSION_THRESHOLD if threshold is None else threshold
    category_threshold = gate.CATEGORY_THRESHOLD if category_threshold is None else category_threshold
    tuned_items = {it["id"]: it for it in tuned["items"]}
    pairs: dict[str, list[tuple[bool, bool]]] = {}
    for b in base["items"]:
        pairs.setdefault(b["category"], []).append((b["passed"], tuned_items[b["id"]]["passed"]))
    # the categories are tested together: Bonferroni keeps the chance of any false alarm at alpha
    cat_alpha = gate.ALPHA / max(1, len(pairs))
    rows = {cat: gate.judge_drop(p, category_threshold, cat_alpha) for cat, p in sorted(pairs.items())}
    overall = gate.judge_drop([x for p in pairs.values() for x in p], threshold, gate.ALPHA)
    for name, row in list(rows.items()) + [("overall", overall)]:
        src_b = base["by_category"][name]["rate"] if name != "overall" else base["overall"]
        src_t = tuned["by_category"][name]["rate"] if name != "overall" else tuned["overall"]
        row |= {"base": src_b, "tuned": src_t}
    every = rows | {"overall": overall}
    flagged = [name for name, row in every.items() if row["verdict"] == "FAIL"]
    inconclusive = [name for name, row in every.items() if row["verdict"] == "inconclusive"]
    verdict = "FAIL" if flagged else "inconclusive" if inconclusive else "PASS"
    return {"threshold": threshold, "category_threshold": category_threshold, "alpha": gate.ALPHA,
            "category_alpha": cat_alpha, "overall": overall, "by_category": rows, "flagged": flagged,
            "inconclusive": inconclusive, "verdict": verdict, "changed": changed_items(base, tuned)}


def changed_items(base: dict[str, Any], tuned: dict[str, Any]) -> list[dict[str, Any]]:
    """The items one model passes and the other fails, both answers side by side: what forgetting looks like."""
    tuned_items = {it["id"]: it for it in tuned.get("items", [])}
    out = []
    for b in base.get("items", []):
        t = tuned_items.get(b["id"])
        if t is not None and t["passed"] != b["passed"]:
            out.append({"id": b["id"], "category": b["category"], "prompt": b["prompt"], "change": "lost"
                        if b["passed"] else "gained", "base": b["output"], "tuned": t["output"],
                        "failed_checks": t["failed_checks"] or b["failed_checks"]})
    return out


def answer_suite(model, tokenizer, *, batch_size: int, label: str, console=None,
                 show_progress: bool = True) -> dict[str, str]:
    """One model's answers to every item (id -> text): generated, each with its item's token limit, or
    the most likely choice, picked without generating."""
    from tunesmith.evaluate.generate import generate
    from tunesmith.evaluate.likelihood import pick_choices

    prompts = regression_prompts()
    gen = [p for p in prompts if p["kind"] == "generate"]
    mc = [p for p in prompts if p["kind"] == "choice"]
    texts = generate(model, tokenizer, [p["messages"] for p in gen], max_new_tokens=[p["max_new_tokens"] for p in gen],
                     batch_size=batch_size, label=label, console=console, show_progress=show_progress)
    picks = pick_choices(model, tokenizer, [p["messages"] for p in mc], [p["choices"] for p in mc],
                         batch_size=batch_size)
    return {p["id"]: t for p, t in zip(gen, texts)} | {p["id"]: p["choices"][k] for p, k in zip(mc, picks)}
