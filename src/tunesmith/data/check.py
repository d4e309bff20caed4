"""`data check`: validate, find duplicates, check rules and lengths; one JSON report.

Line references: with one input file every `line` is an int. With several files, entries
in `invalid`, `exact_duplicate_pairs` and `near_duplicate_pairs` also carry `file`
(and `duplicate_of_file`), and the flat line lists (`rule_violations`, `over_length.lines`)
hold "file:line" strings, so no reference is ambiguous.
"""

from __future__ import annotations

import json
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
from tunesmith.errors import UserError
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
    template_refused: dict[int, str] = field(default_factory=dict)  # record index → the chat template's error
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

    def label_conflicts(self) -> list[list[int]]:
        """Groups of labelled records with the same input and different labels: the data contradicts itself."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.records):
            if isinstance(r, Conversation) and r.label is not None:
                groups.setdefault(json.dumps(r.prompt_messages(), ensure_ascii=False), []).append(i)
        return [idx for idx in groups.values() if len({self.records[i].label for i in idx}) > 1]

    def violating(self) -> set[int]:
        return {i for idx in self.violations.values() for i in idx}

    def warnings(self) -> list[str]:
        out: list[str] = []
        n = len(self.records)
        if n < MIN_EXAMPLES:
            out.append(f"only {n} valid records; fine-tuning usually needs at least {MIN_EXAMPLES}")
        labels = self.label_counts()
        if labels and len(labels) == 1:
            out.append(f"every labelled record has the label {next(iter(labels))!r}: a classifier needs at least two classes")
        conflicts = self.label_conflicts()
        if conflicts:
            shown = "; ".join(
                f"lines {', '.join(str(self.loc(i)) for i in idx)}: "
                + " / ".join(sorted({str(self.records[i].label) for i in idx}))
                for idx in conflicts[:3]
            )
            out.append(f"{len(conflicts)} texts carry different labels ({shown}); see label_conflicts")
        variants: dict[str, list[str]] = {}
        for label in labels or {}:
            variants.setdefault(label.strip().lower(), []).append(label)
        for names in variants.values():
            if len(names) > 1:
                # "Pos" and "pos " train as different answers: almost always a typo in the data
                out.append(f"labels {', '.join(repr(n) for n in sorted(names))} differ only in case or spaces; "
                           "they are counted as different classes")
        if labels and len(labels) > 1:
            (top, hi), (low, lo) = max(labels.items(), key=lambda kv: kv[1]), min(labels.items(), key=lambda kv: kv[1])
            if hi > MAX_IMBALANCE * lo:
                out.append(f"class imbalance {hi / lo:.1f}:1 ({top!r}: {hi}, {low!r}: {lo}) is worse than 3:1")
        if self.template_refused:
            shown = "; ".join(f"line {self.loc(i)}: {msg}" for i, msg in list(self.template_refused.items())[:3])
            out.append(
                f"the chat template of {self.tokenizer} refuses {len(self.template_refused)} records, so training on "
                f"them would fail ({shown}); see template_refused"
            )
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
        pairs = [*self.exact.items(), *((d.index, d.duplicate_of) for d in self.near)]
        across = Counter((self.records[j].origin.file, self.records[i].origin.file) for i, j in pairs
                         if self.records[i].origin.file != self.records[j].origin.file)
        for (kept, flagged), count in sorted(across.items()):
            # the usual case: a train file and a test file checked together
            out.append(f"{count} records of {flagged} repeat records of {kept}: if these are train and test data, "
                       "the test set leaks")
        ignored = [r.meta["ignored"] for r in self.records if isinstance(r, Conversation) and r.meta.get("ignored")]
        if ignored:
            fields = Counter(k for keys in ignored for k in keys)
            out.append(
                f"{len(ignored)} records hold fields tunesmith does not read and leaves out of what it writes: "
                + ", ".join(f"{k!r} in {c}" for k, c in sorted(fields.items(), key=lambda kv: (-kv[1], kv[0])))
            )
        unchecked = sum(1 for r in self.records if isinstance(r, Text))
        if self.rules and unchecked:
            # zero violations must not read as "compliant" when there was no answer to check
            out.append(f"{unchecked} text records have no answer: the rules were not checked on them")
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

        # a record the template refuses has no token length: it would distort the minimum as a 0
        lengths = np.asarray([n for i, n in enumerate(self.lengths) if i not in self.template_refused] or [0])
        stats = {
            "min": int(lengths.min()),
            "p50": int(np.percentile(lengths, 50, method="nearest")),
            "p95": int(np.percentile(lengths, 95, method="nearest")),
            "max": int(lengths.max()),
        }
        invalid_counts = Counter(x.reason for x in self.read.invalid)
        n_errors = len(self.read.invalid) + len(self.violating() | set(self.template_refused))
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
            "template_refused": [{"line": self.loc(i), "message": m} for i, m in self.template_refused.items()],
            "label_counts": self.label_counts(),
            "label_conflicts": [
                {"lines": [self.loc(i) for i in idx], "labels": sorted({str(self.records[i].label) for i in idx})}
                for idx in self.label_conflicts()
            ],
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


def load_tokenizer(spec: Any, chat_template: str | None = None):
    """A tokenizer object from a local model/tokenizer directory, a .gguf file or an embedded model's name;
    `chat_template` replaces its own as data.chat_template does in training."""
    if not isinstance(spec, (str, Path)):
        return spec
    from tunesmith import models

    path = models.resolve_tokenizer(spec, setting="--tokenizer")
    # raw text needs no chat template: token_lengths asks for one only when a record is a conversation
    return models.load_tokenizer(path, chat=False, chat_template=chat_template)


def token_lengths(records: Sequence[Record], tokenizer: Any, refused: dict[int, str] | None = None) -> list[int]:
    """Tokens per record with the model's chat template applied (the longer answer for preference).

    A record the template refuses (many raise on roles that do not alternate, or on a system turn)
    gets length 0 and its error in `refused`; without `refused` the error names the record and stops.
    """
    from jinja2.exceptions import TemplateError

    if getattr(tokenizer, "chat_template", None) is None and any(not isinstance(r, Text) for r in records):
        from tunesmith.models import ModelError

        raise ModelError(
            f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')}: the tokenizer has no chat template; "
            "conversations and preference pairs need one to be counted in tokens (raw text does not); "
            "pass --chat-template chatml (or a .jinja file), as data.chat_template does for training"
        )
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
        try:
            rendered = tokenizer.apply_chat_template(convs, tokenize=False)
        except TemplateError as e:
            if refused is None:
                from tunesmith.models import ModelError

                raise ModelError(f"{r.origin}: the chat template refuses this record: {e}") from None
            refused[i] = str(e)
            continue
        texts.extend(rendered)
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
        raise UserError(f"near-dup threshold must be in (0, 1], got {near_dup_threshold}")
    if max_seq_len is not None and max_seq_len < 1:
        raise UserError(f"max-seq-len must be positive, got {max_seq_len}")
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
        a.lengths, a.length_unit = token_lengths(read.records, tok, a.template_refused), "tokens"
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
