"""How `tunesmith data` results look in a terminal: summary tables and lists, every user-given text
(file names, labels, messages) escaped so it prints as typed. --json prints the same dicts instead."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from tunesmith.clikit import out as _out

if TYPE_CHECKING:
    from tunesmith.data.synth import SynthResult

_SHOWN = 30  # rows per table in the terminal; --json has everything


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _lines(values: list, limit: int = _SHOWN) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", … (+{len(values) - limit})" if len(values) > limit else "")


def _pair(p: dict[str, Any]) -> tuple[str, str]:
    """(line, duplicate of) cells; with several files a bare line number would not say which file."""
    if "file" in p:
        return escape(f"{p['file']}:{p['line']}"), escape(f"{p['duplicate_of_file']}:{p['duplicate_of']}")
    return str(p["line"]), str(p["duplicate_of"])


def print_check(rep: dict[str, Any]) -> None:
    summary = Table(title="data check", show_header=False, title_justify="left")
    summary.add_column("", style="bold")
    summary.add_column("")
    rows = [
        ("files", ", ".join(rep["files"])),
        ("format", rep["format"]),
        ("records", rep["records"]),
        ("valid", rep["valid"]),
        ("invalid", len(rep["invalid"])),
        ("exact duplicates", rep["exact_duplicates"]),
        (f"near duplicates (≥{rep['near_dup_threshold']})", rep["near_duplicates"]),
        (f"length ({rep['length_unit']})", " · ".join(f"{k} {v}" for k, v in rep["length_tokens"].items())),
    ]
    if rep["over_length"]["max_seq_len"] is not None:
        rows.append((f"over {rep['over_length']['max_seq_len']} {rep['length_unit']}", rep["over_length"]["count"]))
    for k, v in rows:
        summary.add_row(k, escape(str(v)))
    _out.print(summary)
    if rep["invalid"]:
        t = Table(title="invalid records", title_justify="left")
        for c in ("file", "line", "reason", "message"):
            t.add_column(c)
        for x in rep["invalid"][:_SHOWN]:
            t.add_row(escape(x["file"]), str(x["line"]), x["reason"], escape(x["message"]))
        _out.print(t)
        if len(rep["invalid"]) > _SHOWN:
            _out.print(f"… and {len(rep['invalid']) - _SHOWN} more (use --json)")
    if rep["rules"]:
        t = Table(title="rules", title_justify="left")
        for c in ("rule", "violations", "lines"):
            t.add_column(c)
        for name, lines in rep["rule_violations"].items():
            t.add_row(escape(name), str(len(lines)), escape(_lines(lines)), style="red" if lines else "green")
        _out.print(t)
    if rep["exact_duplicate_pairs"] or rep["near_duplicate_pairs"]:
        t = Table(title="duplicates (flagged → kept)", title_justify="left")
        for c in ("line", "duplicate of", "kind"):
            t.add_column(c)
        for p in rep["exact_duplicate_pairs"][:_SHOWN]:
            t.add_row(*_pair(p), "exact")
        for p in rep["near_duplicate_pairs"][:_SHOWN]:
            t.add_row(*_pair(p), f"near ({p['similarity']:.2f})")
        _out.print(t)
    if rep["label_counts"]:
        t = Table(title="labels", title_justify="left")
        t.add_column("label")
        t.add_column("records", justify="right")
        for k, v in rep["label_counts"].items():
            t.add_row(escape(k), str(v))
        _out.print(t)
    for w in rep["warnings"]:
        _out.print(f"[yellow]warning:[/yellow] {escape(w)}")
    _out.print("[green]OK[/green]" if rep["ok"] else f"[red]{_count(rep['errors'], 'record')} with errors[/red]")


def print_clean(s: dict[str, Any]) -> None:
    _out.print(f"read {s['read']} = kept {s['kept']} + rejected {s['rejected']}")
    for reason, n in s["rejected_by_reason"].items():
        _out.print(f"  {escape(reason)}: {n}")
    _out.print(escape(f"wrote {s['out']} and {s['rejected_file']}"))


def print_split(manifest: dict[str, Any], out: Path) -> None:
    c = manifest["counts"]
    _out.print(f"read {manifest['read']}: invalid {manifest['invalid']}, train {c['train']}, val {c['val']}, test {c['test']}")
    for x in manifest["invalid_records"][:_SHOWN]:
        _out.print(f"  [red]left out[/red] {escape(x['file'])}:{x['line']}: {x['reason']} ({escape(x['message'])})", soft_wrap=True)
    if manifest["invalid"] > _SHOWN:
        _out.print(f"  … and {manifest['invalid'] - _SHOWN} more (see invalid_records in manifest.json)")
    if manifest["label_counts"]:
        for name, counts in manifest["label_counts"].items():
            _out.print(f"  {name}: " + (escape(", ".join(f"{k} {v}" for k, v in counts.items())) or "(empty)"))
    if manifest["duplicates_in_input"]:
        _out.print(f"[yellow]{_count(manifest['duplicates_in_input'], 'duplicate')} kept inside their group's split "
                   "(--force)[/yellow]")
    for w in manifest["warnings"]:
        _out.print(f"[yellow]warning:[/yellow] {escape(w)}")
    _out.print(escape(f"wrote {out}/train.jsonl, val.jsonl, test.jsonl, manifest.json"))


def print_convert(s: dict[str, Any]) -> None:
    _out.print(f"{s['from']} → {s['to']}: read {s['read']}, wrote {s['written']}, skipped {len(s['skipped'])}, "
               f"invalid {len(s['invalid'])}")
    for x in s["invalid"][:_SHOWN]:
        _out.print(f"  invalid line {x['line']}: {x['reason']} ({escape(x['message'])})", soft_wrap=True)
    for sk in s["skipped"][:_SHOWN]:
        _out.print(f"  skipped line {sk['line']}: {escape(sk['reason'])}")
    for note, n in s["notes"].items():
        _out.print(f"  note: {note} ({n} records)")


def print_synth(result: SynthResult) -> None:
    s = result.summary()
    _out.print(
        f"{s['prompts']} prompts: {s['already_answered']} already answered, {s['written']} written, {s['failed']} failed"
        + (f"; {s['invalid_prompts']} invalid prompts left out" if s["invalid_prompts"] else "")
    )
    for f in result.failed[:_SHOWN]:
        _out.print(f"  [red]line {f['line']}:[/red] {escape(f['error'])}")
    for x in result.invalid[:_SHOWN]:
        _out.print(f"  [red]invalid prompt, line {x['line']}:[/red] {x['reason']} ({escape(x['message'])})", soft_wrap=True)
    _out.print(escape(f"review sample: {s['review_sample']} records in {s['review_file']}"))
