"""The rules contract: one small language, checked three times.

The same rules file is checked on training data (`data check`), measured as format
compliance at evaluation (`eval`), and optionally enforced by the server (`serve`).

    rules:
      - name: disclaimer
        ends_with: "This response does not constitute legal advice."
      - name: numbered
        regex: "^1\\. "
      - name: case_ref            # when the prompt holds a match, the answer must repeat it
        echo: "LF-\\d{4}-\\d{4}"
      - name: no_invented_ref     # every match in the answer must come from the prompt
        grounded: "LF-\\d{4}-\\d{4}"
      - name: json_output
        valid_json: true
      - name: no_however
        forbidden: ["however"]

Each rule has a `name` and exactly one kind. `scope: last` (default) checks the final
assistant turn of a conversation; `scope: all` checks every assistant turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tunesmith.errors import UserError

KINDS = (
    "ends_with",
    "starts_with",
    "contains",
    "regex",
    "not_regex",
    "forbidden",
    "valid_json",
    "json_schema",
    "max_words",
    "min_words",
    "echo",
    "grounded",
)


class RulesError(UserError):
    """A rules file that cannot be used; the message names the file and the rule."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Identifier used in reports and compliance tables.")
    scope: Literal["last", "all"] = Field("last", description="Which assistant turns are checked.")
    ignore_case: bool = Field(False, description="Case-insensitive ends_with/starts_with/contains/regex.")
    ends_with: str | None = Field(None, description="Answer ends with this text (trailing whitespace ignored).")
    starts_with: str | None = Field(None, description="Answer starts with this text (leading whitespace ignored).")
    contains: str | None = Field(None, description="Answer contains this text.")
    regex: str | None = Field(None, description="Answer matches this regex somewhere (multiline: ^ and $ match lines).")
    not_regex: str | None = Field(None, description="Answer does not match this regex anywhere (multiline).")
    forbidden: list[str] | None = Field(None, description="None of these words or phrases, whole words, case-insensitive.")
    valid_json: bool | None = Field(None, description="Answer parses as JSON (a ```json fence around it is accepted).")
    json_schema: dict[str, Any] | None = Field(None, description="Answer is JSON that validates against this schema.")
    max_words: int | None = Field(None, description="At most this many whitespace-separated words.")
    min_words: int | None = Field(None, description="At least this many whitespace-separated words.")
    echo: str | None = Field(
        None, description="Regex; every match found in the last user message must appear verbatim in the answer."
    )
    grounded: str | None = Field(
        None,
        description="Regex; every match found in the answer must appear in the last user message "
        "(never invent an identifier: case numbers, order ids, prices).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> "Rule":
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"rule {self.name!r} must have exactly one of {', '.join(KINDS)}; it has {kinds or 'none'}"
            )
        kind = kinds[0]
        value = getattr(self, kind)
        # an empty text or word matches everywhere: the rule would pass or fail every answer
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"rule {self.name!r}: {kind} is empty")
        if kind == "forbidden" and (not value or any(not w.strip() for w in value)):
            raise ValueError(f"rule {self.name!r}: forbidden needs one or more non-empty words")
        if kind in ("max_words", "min_words") and value < 0:
            raise ValueError(f"rule {self.name!r}: {kind} must be 0 or more, got {value}")
        for k in ("regex", "not_regex", "echo", "grounded"):
            pattern = getattr(self, k)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"rule {self.name!r}: invalid {k} pattern {pattern!r}: {e}") from e
        if self.json_schema is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(self.json_schema)
            except jsonschema.SchemaError as e:
                raise ValueError(f"rule {self.name!r}: invalid json_schema: {e.message}") from e
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @cached_property
    def _flags(self) -> int:
        return re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0)

    def describe(self) -> str:
        value = getattr(self, self.kind)
        return f"{self.kind}: {value!r}"

    def check(self, answer: str, prompt: str = "") -> bool:
        """True when `answer` satisfies this rule. `prompt` is the last user message (for `echo`)."""
        kind = self.kind
        fold = (lambda s: s.lower()) if self.ignore_case else (lambda s: s)
        if kind == "ends_with":
            return fold(answer.rstrip()).endswith(fold(self.ends_with.rstrip()))
        if kind == "starts_with":
            return fold(answer.lstrip()).startswith(fold(self.starts_with))
        if kind == "contains":
            return fold(self.contains) in fold(answer)
        if kind == "regex":
            return re.search(self.regex, answer, self._flags) is not None
        if kind == "not_regex":
            return re.search(self.not_regex, answer, self._flags) is None
        if kind == "forbidden":
            return not any(
                re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", answer, re.IGNORECASE) for w in self.forbidden
            )
        if kind == "valid_json":
            return parse_json_answer(answer)[0] == self.valid_json
        if kind == "json_schema":
            import jsonschema

            ok, value = parse_json_answer(answer)
            return ok and jsonschema.Draft202012Validator(self.json_schema).is_valid(value)
        if kind == "max_words":
            return len(answer.split()) <= self.max_words
        if kind == "min_words":
            return len(answer.split()) >= self.min_words
        if kind == "echo":
            return all(m.group(0) in answer for m in re.finditer(self.echo, prompt, self._flags))
        if kind == "grounded":
            return all(m.group(0) in prompt for m in re.finditer(self.grounded, answer, self._flags))
        raise AssertionError(kind)


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL | re.IGNORECASE)


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON: a strict parser downstream would refuse them
    raise ValueError(f"{name} is not valid JSON")


def parse_json_answer(answer: str) -> tuple[bool, Any]:
    """(ok, value): the answer as JSON, accepting one surrounding ```json fence."""
    text = answer.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError):  # "[" * 5000 nests past the parser's limit
        return False, None


@dataclass
class RuleSet:
    rules: list[Rule]
    source: str = "<rules>"

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def check_answer(self, answer: str, prompt: str = "") -> dict[str, bool]:
        """Per-rule result for one model output."""
        return {r.name: r.check(answer, prompt) for r in self.rules}

    def check_conversation(self, messages: list[dict[str, str]]) -> dict[str, bool]:
        """Per-rule result for a conversation (training data): scope decides which assistant turns count."""
        results: dict[str, bool] = {}
        turns: list[tuple[str, str]] = []  # (answer, the user message it answers)
        last_user = ""
        for m in messages:
            if m["role"] == "user":
                last_user = m["content"]
            elif m["role"] == "assistant":
                turns.append((m["content"], last_user))
        for r in self.rules:
            checked = turns if r.scope == "all" else turns[-1:]
            results[r.name] = all(r.check(a, p) for a, p in checked)
        return results

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            {"rules": [r.model_dump(exclude_none=True, exclude_defaults=True) | {"name": r.name} for r in self.rules]},
            sort_keys=False,
            allow_unicode=True,
        )


def compliance(results: list[dict[str, bool]], names: list[str]) -> dict[str, float]:
    """Pass rate per rule and `all` (fraction of outputs passing every rule)."""
    n = len(results)
    if n == 0:
        return {**{k: 0.0 for k in names}, "all": 0.0}
    out = {k: sum(r[k] for r in results) / n for k in names}
    out["all"] = sum(all(r[k] for k in names) for r in results) / n
    return out


def parse_rules(data: Any, source: str = "<rules>") -> RuleSet:
    if isinstance(data, dict):
        data = data.get("rules")
    if not isinstance(data, list):
        raise RulesError(f"{source}: expected a mapping with a 'rules:' list")
    rules: list[Rule] = []
    for i, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise RulesError(f"{source}: rule #{i} is not a mapping")
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as e:
            msgs = "; ".join(
                # a check of the whole rule has no field to name, and pydantic's "Value error, " prefix says nothing
                (f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else "") + err["msg"].removeprefix("Value error, ")
                + _yaml_hint(err)
                for err in e.errors()
            )
            raise RulesError(f"{source}: rule #{i} ({item.get('name', '?')}): {msgs}") from None
    names = [r.name for r in rules]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RulesError(f"{source}: duplicate rule names: {', '.join(sorted(dupes))}")
    if "all" in names:  # compliance results report every rule by name, and "all" is the overall rate
        raise RulesError(f"{source}: a rule cannot be named 'all' (the name of the overall compliance); rename it")
    return RuleSet(rules, source)


def _yaml_hint(err: dict) -> str:
    """Why a text field got a non-string: YAML reads unquoted no/yes/on/off as booleans and 2024 as a number."""
    value = err.get("input")
    if err.get("type") == "string_type" and isinstance(value, (bool, int, float)):
        return f" (YAML read it as {value!r}: put the text in quotes)"
    return ""


def load_rules(path: str | Path) -> RuleSet:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise RulesError(f"{p}: cannot read rules file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise RulesError(f"{p}: not valid YAML: {e}") from None
    return parse_rules(data, str(p))
