"""`data clean`: keep the good records, send every other one to a rejected file with its reason.

Counts always add up: read = kept + rejected. Exact duplicates are always dropped; near
duplicates and rule violations only when asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tunesmith.data.check import analyse
from tunesmith.data.formats import require_one_kind, write_jsonl
from tunesmith.data.records import Record
from tunesmith.errors import UserError
from tunesmith.rules import RuleSet


@dataclass
class CleanResult:
    read: int
    kept: list[Record] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in self.rejected).items())),
        }


def clean(
    paths: Sequence[str | Path],
    format: str = "auto",
    rules: RuleSet | str | Path | None = None,
    drop_near_dups: bool = False,
    drop_violations: bool = False,
    near_dup_threshold: float = 0.8,
) -> CleanResult:
    if drop_violations and rules is None:
        raise UserError("--drop-violations needs --rules")
    a = analyse(paths, format, rules, near_dup_threshold=near_dup_threshold)
    require_one_kind(a.read, "a cleaned file")
    out = CleanResult(read=a.read.total)
    for x in a.read.invalid:
        out.rejected.append(x.to_dict(with_raw=True))
    near = {d.index: d for d in a.near}
    broken: dict[int, list[str]] = {}
    for name, idx in a.violations.items():
        for i in idx:
            broken.setdefault(i, []).append(name)
    for i, r in enumerate(a.records):
        o = r.origin
        entry: dict[str, Any] = {"line": o.line, "file": o.file}
        if i in a.exact:
            j = a.records[a.exact[i]].origin
            entry |= {"reason": "exact_duplicate", "message": f"repeats {j}", "duplicate_of": j.line}
        elif drop_near_dups and i in near:
            j = a.records[near[i].duplicate_of].origin
            entry |= {
                "reason": "near_duplicate",
                "message": f"similar to {j} (Jaccard {near[i].similarity:.2f})",
                "duplicate_of": j.line,
            }
        elif drop_violations and i in broken:
            entry |= {"reason": "rule_violation", "message": "breaks " + ", ".join(broken[i]), "rules": broken[i]}
        else:
            out.kept.append(r)
            continue
        out.rejected.append(entry | {"record": r.to_dict()})
    out.rejected.sort(key=lambda e: (e["file"], e["line"]))
    return out


def write_clean(result: CleanResult, out: str | Path, rejected: str | Path | None = None) -> None:
    write_jsonl(result.kept, out)
    if rejected is not None:
        write_jsonl(result.rejected, rejected)
