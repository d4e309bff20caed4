"""Where in an answer a rule was broken, for the rules whose verdict comes from a match: forbidden
words, a `not_regex` pattern, an identifier `grounded` says was invented. Other kinds (ends_with,
max_words, valid_json…) fail as a whole and have no span to mark."""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.rules import Rule, RuleSet, RulesError, load_rules


def run_rules(run_dir: Path, declared: str | None) -> RuleSet | None:
    """The rules file a run names (relative to the run dir when relative); None when absent or unusable."""
    if not declared:
        return None
    path = Path(declared) if Path(declared).is_absolute() else run_dir / declared
    try:
        return load_rules(path) if path.is_file() else None
    except (RulesError, OSError):
        return None


def _spans(rule: Rule, answer: str, prompt: str) -> list[list[int]]:
    flags = re.MULTILINE | (re.IGNORECASE if rule.ignore_case else 0)
    if rule.kind == "forbidden":
        pattern = "|".join(r"(?<!\w)" + re.escape(w) + r"(?!\w)" for w in rule.forbidden)
        return [[m.start(), m.end()] for m in re.finditer(pattern, answer, re.IGNORECASE)]
    if rule.kind == "not_regex":
        return [[m.start(), m.end()] for m in re.finditer(rule.not_regex, answer, flags) if m.end() > m.start()]
    if rule.kind == "grounded":
        return [[m.start(), m.end()] for m in re.finditer(rule.grounded, answer, flags) if m.group(0) not in prompt]
    return []


def violation_spans(rules: RuleSet, answer: str, prompt: str, failed: list[str]) -> dict[str, list[list[int]]]:
    """{rule: [[start, end], ...]} for each failed rule that can say where."""
    out = {}
    for rule in rules.rules:
        if rule.name in failed and (spans := _spans(rule, answer, prompt)):
            out[rule.name] = spans
    return out
