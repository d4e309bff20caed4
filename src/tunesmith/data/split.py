"""`data split`: a deterministic, optionally stratified train/val/test split that cannot leak.

Leak policy. A record in val or test that repeats (exactly or nearly) a train record makes
the test score meaningless, so:
  1. duplicate groups in the input (exact and near duplicates, joined transitively) are
     refused by default: the error lists them and points to `data clean`;
  2. with `force=True` the split goes ahead and keeps each duplicate group inside one split,
     so no group straddles train and test;
  3. after splitting, val and test are checked against train (exact + near); any leak left
     (LSH is approximate) is refused too unless forced, and recorded in the manifest.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith import __version__
from tunesmith.data import dedup
from tunesmith.data.formats import read_files, require_one_kind, require_records, sha256_file, write_jsonl
from tunesmith.data.records import Record
from tunesmith.errors import UserError

SPLITS = ("train", "val", "test")
STRATIFY = ("auto", "label", "none")
_SHOWN = 10


class LeakError(UserError):
    """val/test would hold duplicates of train records; the message lists them."""


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    try:
        values = [float(x) for x in text.split(",")] if isinstance(text, str) else [float(x) for x in text]
    except ValueError:
        values = []  # not numbers: the message below says what is expected
    if len(values) != 3 or any(v < 0 for v in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise UserError(f"ratios must be three non-negative numbers summing to 1 (train,val,test), got {text!r}")
    if values[0] == 0:
        raise UserError("the train ratio must be above 0")
    return values[0], values[1], values[2]


def _key_fn(stratify: str | Callable[[Record], Any] | None) -> Callable[[Record], Any] | None:
    if stratify is None or callable(stratify):
        return stratify

    def key(r: Record) -> Any:
        value = getattr(r, stratify, None)
        if value is None:
            raise UserError(f"cannot stratify by {stratify!r}: record {r.origin} has no {stratify}")
        return value

    return key


def split_records(
    records: Sequence[Record],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: str | Callable[[Record], Any] | None = None,
    groups: Sequence[int] | None = None,
) -> dict[str, list[Record]]:
    """{"train", "val", "test"} lists; the same input, ratios and seed always give the same split.

    Records sharing a `groups` id stay in one split. With `stratify` (an attribute name such
    as "label", or a function) every stratum is split in the ratios, as closely as whole
    records allow while the split sizes still match the ratios overall. Within a split,
    records keep their input order.
    """
    r_train, r_val, _ = parse_ratios(ratios)
    key = _key_fn(stratify)
    units: dict[int, list[int]] = {}
    for i in range(len(records)):
        units.setdefault(groups[i] if groups is not None else i, []).append(i)
    strata: dict[Any, list[list[int]]] = {}
    for members in units.values():
        strata.setdefault(key(records[members[0]]) if key else None, []).append(members)
    rng = random.Random(seed)
    chosen: dict[str, list[int]] = {s: [] for s in SPLITS}
    keys = sorted(strata, key=str)
    targets = _allocate([sum(len(u) for u in strata[k]) for k in keys], r_train, r_val)
    for k, (n_train, n_val) in zip(keys, targets):
        stratum = strata[k]
        rng.shuffle(stratum)
        filled = 0
        for unit in stratum:
            name = "train" if filled < n_train else "val" if filled < n_train + n_val else "test"
            chosen[name].extend(unit)
            filled += len(unit)
    return {s: [records[i] for i in sorted(idx)] for s, idx in chosen.items()}


def _allocate(sizes: list[int], r_train: float, r_val: float) -> list[tuple[int, int]]:
    """(train, val) record counts per stratum whose totals match the ratios of the whole set.

    Rounding each stratum on its own drifts: ten classes of 3 records each round to 2/0/1, so
    test would get 10 records and val none where 0.8/0.1/0.1 asks for 10/10 of 100. Instead the
    totals are rounded once (largest remainder) and each stratum's leftover records go to the
    splits that still need records, largest fractional share first.
    """
    ratios = (r_train, r_val, max(0.0, 1.0 - r_train - r_val))
    # on equal remainders (rounded: 1 - 0.8 - 0.1 is not 0.1 in floats) test is served first, then val:
    # an empty test split is the worst outcome
    tie = {0: 2, 1: 1, 2: 0}
    totals = [math.floor(sum(sizes) * r) for r in ratios]
    order = sorted(range(3), key=lambda j: (-round(sum(sizes) * ratios[j] - totals[j], 9), tie[j]))
    for k in range(sum(sizes) - sum(totals)):
        totals[order[k % 3]] += 1
    shares = [[size * r for r in ratios] for size in sizes]
    cells = [[math.floor(x) for x in row] for row in shares]
    left = [size - sum(row) for size, row in zip(sizes, cells)]
    need = [totals[j] - sum(row[j] for row in cells) for j in range(3)]
    by_share = sorted(((i, j) for i in range(len(sizes)) for j in range(3)),
                      key=lambda c: (-round(shares[c[0]][c[1]] - cells[c[0]][c[1]], 9), c[0], tie[c[1]]))
    while sum(left) > 0:  # each pass places at least one record: some stratum has some and some split needs one
        for i, j in by_share:
            if left[i] > 0 and need[j] > 0:
                cells[i][j] += 1
                left[i] -= 1
                need[j] -= 1
    return [(row[0], row[1]) for row in cells]


def duplicate_groups(records: Sequence[Record], threshold: float = 0.8) -> tuple[list[int], list[tuple[int, int, float]]]:
    """(group id per record, (record, duplicate_of, similarity) pairs) from exact and near duplicates."""
    parent = list(range(len(records)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    exact = dedup.find_exact_duplicates(records)
    near = dedup.find_near_duplicates([dedup.dedup_text(r) for r in records], threshold, skip=exact)
    pairs = [(i, j, 1.0) for i, j in exact.items()] + [(d.index, d.duplicate_of, d.similarity) for d in near]
    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    # the same input under different labels: not a duplicate to refuse (data clean would not remove it), but
    # one in train and one in test would still leak the input, so they stay together
    first: dict[str, int] = {}
    for i, r in enumerate(records):
        if getattr(r, "label", None) is not None:
            j = first.setdefault(json.dumps(r.prompt_messages(), ensure_ascii=False), i)
            parent[find(i)] = find(j)
    return [find(i) for i in range(len(records))], sorted(pairs)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _describe(records: Sequence[Record], pairs: list[tuple[int, int, float]], others: Sequence[Record] | None = None) -> str:
    lines = []
    for i, j, sim in pairs[:_SHOWN]:
        ra, rb = (others if others is not None else records)[i], records[j]
        a, b = ra.origin, rb.origin
        # a near duplicate can score 1.0 too (case, punctuation, system prompt differ): only equal records are exact
        exact = dedup.exact_key(ra) == dedup.exact_key(rb)
        kind = "exact duplicate" if exact else f"near duplicate, Jaccard {sim:.2f}"
        lines.append(f"  {a} repeats {b} ({kind})")
    if len(pairs) > _SHOWN:
        lines.append(f"  … and {len(pairs) - _SHOWN} more")
    return "\n".join(lines)


def write_split(
    records: Sequence[Record],
    out_dir: str | Path,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: str | Callable[[Record], Any] | None = None,
    force: bool = False,
    near_dup_threshold: float = 0.8,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Split, check for leaks, write train/val/test.jsonl and manifest.json; returns the manifest."""
    groups, pairs = duplicate_groups(records, near_dup_threshold)
    if pairs and not force:
        raise LeakError(
            f"{_count(len(pairs), 'record duplicates', 'records duplicate')} other records (exactly or nearly); "
            f"a split could put copies in both train and test:\n{_describe(records, pairs)}\n"
            "Run `tunesmith data clean --drop-near-dups` first, or pass --force to keep each duplicate group "
            "inside one split."
        )
    parts = split_records(records, ratios, seed, stratify, groups)
    held_out = parts["val"] + parts["test"]
    leaks = dedup.cross_duplicates(parts["train"], held_out, near_dup_threshold)
    if leaks and not force:
        raise LeakError(
            f"{_count(len(leaks), 'val/test record duplicates', 'val/test records duplicate')} train records:\n{_describe(parts['train'], leaks, held_out)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha: dict[str, str] = {}
    for name in SPLITS:
        path = out / f"{name}.jsonl"
        write_jsonl(parts[name], path)
        sha[path.name] = sha256_file(path)
    key = _key_fn(stratify)
    labelled = all(getattr(r, "label", None) is not None for r in records) and records
    ratio_of = dict(zip(SPLITS, parse_ratios(ratios)))
    label_counts = {s: dict(sorted(Counter(r.label for r in parts[s]).items())) for s in SPLITS} if labelled else None
    warnings = [f"the {s} split is empty: {len(records)} records × {ratio_of[s]:g} rounds to none; add records or "
                f"raise its ratio" for s in SPLITS if ratio_of[s] > 0 and not parts[s]]
    if label_counts:
        labels = sorted({r.label for r in records})
        for s in ("val", "test"):
            missing = [x for x in labels if parts[s] and x not in label_counts[s]]
            if missing:
                warnings.append(f"the {s} split has no record of label(s) {', '.join(map(str, missing))}: "
                                "their scores there cannot be measured")
    manifest = {
        **(source or {}),
        "seed": seed,
        "ratios": ratio_of,
        "stratify": stratify if isinstance(stratify, str) or stratify is None else getattr(stratify, "__name__", "custom"),
        "counts": {s: len(parts[s]) for s in SPLITS},
        "label_counts": label_counts,
        "strata": sorted({str(key(r)) for r in records}) if key else None,
        "files": {s: f"{s}.jsonl" for s in SPLITS},
        "sha256": sha,
        "near_dup_threshold": near_dup_threshold,
        "duplicate_groups": len({groups[i] for i, _, _ in pairs}),
        "duplicates_in_input": len(pairs),
        "leaks": [
            {"record": str(held_out[i].origin), "duplicate_of": str(parts["train"][j].origin), "similarity": round(s, 3)}
            for i, j, s in leaks
        ],
        "warnings": warnings,
        "tunesmith_version": __version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def stratify_key(records: Sequence[Record], mode: str) -> str | None:
    """The attribute to stratify by for a STRATIFY mode: "auto" stratifies by label only when every record
    has one (a partly labelled file would fail on the first record without)."""
    labelled = bool(records) and all(getattr(r, "label", None) is not None for r in records)
    return "label" if mode == "label" or (mode == "auto" and labelled) else None


def split_files(
    files: Sequence[Path],
    out_dir: Path,
    ratios: str | Sequence[float] = (0.8, 0.1, 0.1),
    stratify: str = "auto",
    seed: int = 0,
    force: bool = False,
    near_dup_threshold: float = 0.8,
    format: str = "auto",
) -> dict[str, Any]:
    """Read `files`, split them as write_split does and return the manifest, which also names the inputs and
    lists every invalid record left out (file, line, reason). Refuses to write over one of its own inputs."""
    if stratify not in STRATIFY:
        raise UserError(f"--stratify must be auto, label or none, got {stratify!r}")
    written = {(out_dir / f"{name}.jsonl").resolve() for name in SPLITS} | {(out_dir / "manifest.json").resolve()}
    clobbered = [str(f) for f in files if Path(f).resolve() in written]
    if clobbered:
        # "split data/train.jsonl -o data/" would replace the full input with its own train part
        raise UserError(f"{', '.join(clobbered)} would be overwritten by the split; choose another --out")
    ratio_values = parse_ratios(ratios)
    read = require_one_kind(require_records(read_files(files, format)), "a split")
    source = {"source": [str(f) for f in files], "format": read.format, "read": read.total,
              "invalid": len(read.invalid), "invalid_records": [x.to_dict() for x in read.invalid]}
    return write_split(read.records, out_dir, ratio_values, seed, stratify_key(read.records, stratify), force,
                       near_dup_threshold, source)
