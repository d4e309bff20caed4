"""`data check`: validate, find duplicates, check rules and lengths; one JSON report.

Line references: with one input file every `line` is an int. With several files, entries
in `invalid`, `exact_duplicate_pairs` and `near_duplicate_pairs` also carry `file`
(and `duplicate_of_file`), and the flat line lists (`rule_violations`, `over_length.lines`)
hold "file:line" strings, so no reference is ambiguous.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesmith.data import dedup
from tunesmith.data.formats import ReadResult, read_files, require_records
from tunesmith.data.progress import task
from tunesmith.data.records import Conversation, Preference, Record, Text
from tunesmith.rules import RuleSet, load_rules

MIN_EXAMPLES = 100
MAX_IMBALANCE = 3.0
_TOKENIZE_BATCH = 512


@dataclass
class Analysis:
    """Everything `data check` found, by record index into `read.records`; `report()` is the JSON view."""

    read: ReadResult
    files: list[str]
    exact: dict[int, int] = field(default_factory=dict)
    near: list[dedup.NearDuplicate] = field(default_factory=list)
    near_dup_threshold: float = 0.8
    rules: RuleSet | None = None
    violations: dict[str, list[int]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)
    length_unit: str = "words"
    tokenizer: str | None = None
    max_seq_len: int | None = None
    over_length: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def records(self) -> list[Record]:
        return self.read.records

    def loc(self, i: int) -> int | str:
        o = self.records[i].origin
        return o.line if len(self.files) == 1 else f"{o.file}:{o.line}"

    def label_counts(self) -> dict[str, int] | None:
        labels = [r.label for r in self.records if isinstance(r, Conversation) and r.label is not None]
        if not labels:
            return None
        return dict(sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0])))

    def violating(self) -> set[int]:
        return {i for idx in self.violations.values() for i in idx}

    def warnings(self) -> list[str]:
        out: list[str] = []
        n = len(self.records)
        if n < MIN_EXAMPLES:
            out.append(f"only {n} valid records; fine-tuning usually needs at least {MIN_EXAMPLES}")
        labels = self.label_counts()
        if labels and len(labels) > 1:
            (top, hi), (low, lo) = max(labels.items(), key=lambda kv: kv[1]), min(labels.items(), key=lambda kv: kv[1])
            if hi > MAX_IMBALANCE * lo:
                out.append(f"class imbalance {hi / lo:.1f}:1 ({top!r}: {hi}, {low!r}: {lo}) is worse than 3:1")
        if self.over_length:
            out.append(
                f"{len(self.over_length)} records are longer than --max-seq-len {self.max_seq_len} "
                f"{self.length_unit}; they would be truncated in training"
            )
        out.extend(self._system_prompt_warnings())
        if self.exact:
            out.append(f"{len(self.exact)} exact duplicates; `tunesmith data clean` drops them")
        if self.near:
            out.append(f"{len(self.near)} near duplicates (Jaccard >= {self.near_dup_threshold}); see near_duplicate_pairs")
        same = sum(1 for r in self.records if isinstance(r, Preference) and r.chosen.strip() == r.rejected.strip())
        if same:
            out.append(f"{same} preference records have identical chosen and rejected answers")
        if self.length_unit == "words" and self.records:
            out.append("lengths are counted in words, not tokens: pass --tokenizer for token counts")
        return out

    def _system_prompt_warnings(self) -> list[str]:
        convs = [r for r in self.records if isinstance(r, Conversation)]
        if not convs:
            return []
        prompts = Counter(r.system for r in convs)
        missing = prompts.pop(None, 0)
        out = []
        if missing and prompts:
            out.append(f"inconsistent system prompts: {missing} of {len(convs)} conversations have none")
        if len(prompts) > 1:
            common = prompts.most_common(1)[0][1]
            out.append(
                f"inconsistent system prompts: {len(prompts)} different ones (the most common is used by {common} records)"
            )
        return out

    def report(self) -> dict[str, Any]:
        multi = len(self.files) > 1

        def pair(i: int, j: int, sim: float | None = None) -> dict[str, Any]:
            a, b = self.records[i].origin, self.records[j].origin
            d: dict[str, Any] = {"line": a.line, "duplicate_of": b.line}
            if sim is not None:
                d["similarity"] = round(sim, 3)
            if multi:
                d |= {"file": a.file, "duplicate_of_file": b.file}
            return d

        lengths = np.asarray(self.lengths or [0])
        stats = {
            "min": int(lengths.min()),
            "p50": int(np.percentile(lengths, 50, method="nearest")),
            "p95": int(np.percentile(lengths, 95, method="nearest")),
            "max": int(lengths.max()),
        }
        invalid_counts = Counter(x.reason for x in self.read.invalid)
        n_errors = len(self.read.invalid) + len(self.violating())
        return {
            "files": self.files,
            "format": self.read.format,
            "formats": self.read.formats,
            "records": self.read.total,
            "valid": len(self.records),
            "invalid": [x.to_dict() for x in self.read.invalid],
            "invalid_counts": dict(sorted(invalid_counts.items())),
            "exact_duplicates": len(self.exact),
            "exact_duplicate_pairs": [pair(i, j) for i, j in sorted(self.exact.items())],
            "near_duplicates": len(self.near),
            "near_duplicate_pairs": [pair(d.index, d.duplicate_of, d.similarity) for d in self.near],
            "near_dup_threshold": self.near_dup_threshold,
            "rules": self.rules.names if self.rules else [],
            "rule_violations": {k: [self.loc(i) for i in v] for k, v in self.violations.items()},
            "over_length": {
                "count": len(self.over_length),
                "lines": [self.loc(i) for i in self.over_length],
                "max_seq_len": self.max_seq_len,
            },
            "label_counts": self.label_counts(),
            "length_tokens": stats,
            "length_unit": self.length_unit,
            "tokenizer": self.tokenizer,
            "warnings": self.warnings(),
            "errors": n_errors,
            "ok": n_errors == 0,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def rule_messages(record: Record) -> list[dict[str, str]] | None:
    """The conversation the rules are checked on: chat as-is, preference with its chosen answer."""
    if isinstance(record, Conversation):
        return [m.to_dict() for m in record.messages]
    if isinstance(record, Preference):
        return [m.to_dict() for m in record.prompt] + [{"role": "assistant", "content": record.chosen}]
    return None


def check_rules(records: Sequence[Record], rules: RuleSet) -> dict[str, list[int]]:
    """{rule name: indices of records that break it}; text records have no answers and are skipped."""
    out: dict[str, list[int]] = {name: [] for name in rules.names}
    with task("checking rules", len(records)) as advance:
        for i, r in enumerate(records):
            advance(1)
            msgs = rule_messages(r)
            if msgs is None:
                continue
            for name, ok in rules.check_conversation(msgs).items():
                if not ok:
                    out[name].append(i)
    return out


def word_lengths(records: Sequence[Record]) -> list[int]:
    def words(r: Record) -> int:
        if isinstance(r, Conversation):
            return sum(len(m.content.split()) for m in r.messages)
        if isinstance(r, Preference):
            return sum(len(m.content.split()) for m in r.prompt) + max(len(r.chosen.split()), len(r.rejected.split()))
        return len(r.text.split())

    return [words(r) for r in records]


def load_tokenizer(spec: Any):
    """A tokenizer object from a local model/tokenizer directory or the embedded default's name."""
    if not isinstance(spec, (str, Path)):
        return spec
    from tunesmith import models

    path = Path(spec).expanduser()
    if not (path.is_dir() and (path / "tokenizer_config.json").is_file()):
        path = models.resolve_model(spec)
    return models.load_tokenizer(path)


def token_lengths(records: Sequence[Record], tokenizer: Any) -> list[int]:
    """Tokens per record with the model's chat template applied (the longer answer for preference)."""
    texts: list[str] = []
    owner: list[int] = []
    for i, r in enumerate(records):
        if isinstance(r, Text):
            texts.append(r.text)
            owner.append(i)
            continue
        if isinstance(r, Preference):
            prompt = [m.to_dict() for m in r.prompt]
            convs = [prompt + [{"role": "assistant", "content": a}] for a in (r.chosen, r.rejected)]
        else:
            convs = [[m.to_dict() for m in r.messages]]
        texts.extend(tokenizer.apply_chat_template(convs, tokenize=False))
        owner.extend([i] * len(convs))
    out = [0] * len(records)
    with task("tokenizing", len(texts)) as advance:
        for s in range(0, len(texts), _TOKENIZE_BATCH):
            batch = texts[s : s + _TOKENIZE_BATCH]
            ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
            for k, seq in enumerate(ids):
                out[owner[s + k]] = max(out[owner[s + k]], len(seq))
            advance(len(batch))
    return out


def analyse(
    paths: Sequence[str | Path],
    format: str = "auto",
    rules: RuleSet | str | Path | None = None,
    tokenizer: Any = None,
    max_seq_len: int | None = None,
    near_dup_threshold: float = 0.8,
) -> Analysis:
    """Run every check; raises DataError/RulesError/ModelError for unusable inputs (the CLI exits 2)."""
    if not 0.0 < near_dup_threshold <= 1.0:
        raise ValueError(f"near-dup threshold must be in (0, 1], got {near_dup_threshold}")
    if max_seq_len is not None and max_seq_len < 1:
        raise ValueError(f"max-seq-len must be positive, got {max_seq_len}")
    ruleset = load_rules(rules) if isinstance(rules, (str, Path)) else rules
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    read = require_records(read_files(paths, format))
    a = Analysis(read=read, files=[str(p) for p in paths], near_dup_threshold=near_dup_threshold, rules=ruleset)
    lap("read")
    a.exact = dedup.find_exact_duplicates(read.records)
    lap("exact_duplicates")
    with task("near duplicates", len(read.records)) as advance:
        a.near = dedup.find_near_duplicates(
            [dedup.dedup_text(r) for r in read.records], near_dup_threshold, skip=a.exact, progress=advance
        )
    lap("near_duplicates")
    if ruleset is not None:
        a.violations = check_rules(read.records, ruleset)
        lap("rules")
    if tok is not None:
        a.lengths, a.length_unit = token_lengths(read.records, tok), "tokens"
        a.tokenizer = str(tokenizer) if isinstance(tokenizer, (str, Path)) else getattr(tok, "name_or_path", None)
    else:
        a.lengths = word_lengths(read.records)
    a.max_seq_len = max_seq_len
    if max_seq_len is not None:
        a.over_length = [i for i, n in enumerate(a.lengths) if n > max_seq_len]
    lap("lengths")
    a.timings = timings
    return a


def check(
    paths: str | Path | Sequence[str | Path],
    format: str = "auto",
    rules: RuleSet | str | Path | None = None,
    tokenizer: Any = None,
    max_seq_len: int | None = None,
    near_dup_threshold: float = 0.8,
) -> dict[str, Any]:
    """The `data check --json` report as a dict (see the module docstring for line references)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return analyse(paths, format, rules, tokenizer, max_seq_len, near_dup_threshold).report()
