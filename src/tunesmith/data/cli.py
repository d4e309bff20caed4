"""`tunesmith data` commands: parse arguments, call the data modules, print a table or one JSON object.

Exit codes: 0 clean, 1 the data has errors (invalid records, rule violations, a refused
split, failed synth prompts), 2 unusable arguments or unreadable files.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.data.formats import FORMATS, DataError

app = typer.Typer(help="Check, clean, split, convert, report on and synthesise training data.", no_args_is_help=True)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)
_SHOWN = 30  # rows per table in the terminal; --json has everything

FORMAT_HELP = f"Input format: auto or one of {', '.join(FORMATS)}."


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn expected problems into a one-line message and exit 2, never a traceback."""
    from tunesmith.models import ModelError
    from tunesmith.rules import RulesError

    try:
        yield
    except (DataError, RulesError, ModelError, ValueError, OSError) as e:
        # file names, roles and labels come from the user: "[/]" in one must print, not break the markup
        _err.print(f"[red]Error:[/red] {escape(str(e))}", markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


def _check_format(fmt: str) -> None:
    if fmt != "auto" and fmt not in FORMATS:
        _err.print(f"[red]Error:[/red] unknown --format {escape(repr(fmt))}; use auto or one of {', '.join(FORMATS)}")
        raise typer.Exit(2)


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


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


def _print_check(rep: dict[str, Any]) -> None:
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


@app.command()
def check(
    files: list[Path] = typer.Argument(..., help="JSONL, JSON, CSV, TSV, Parquet or TXT files."),
    format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules YAML checked on every assistant answer."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Model/tokenizer dir, .gguf file or embedded model name; lengths in its tokens."
    ),
    chat_template: Optional[str] = typer.Option(
        None, "--chat-template", help="As data.chat_template: 'chatml' or a .jinja file, for a tokenizer without one."
    ),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Flag records longer than this."),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard similarity for near duplicates."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Validate data files: invalid records, duplicates, rule violations, lengths, labels, warnings.

    Exit 0 when clean, 1 with invalid records or rule violations, 2 for unusable arguments.

    Example: tunesmith data check train.jsonl --rules rules.yaml --tokenizer smollm2-135m-instruct --max-seq-len 1024
    """
    from tunesmith.data.check import check as run_check
    from tunesmith.data.check import load_tokenizer

    _check_format(format)
    if chat_template is not None and tokenizer is None:
        _err.print("[red]Error:[/red] --chat-template needs --tokenizer (lengths are counted in its tokens)")
        raise typer.Exit(2)
    with _user_errors():
        tok = load_tokenizer(tokenizer, chat_template) if chat_template is not None else tokenizer
        rep = run_check(files, format, rules, tok, max_seq_len, near_dup_threshold)
    if as_json:
        _emit(rep)
    else:
        _print_check(rep)
    raise typer.Exit(0 if rep["ok"] else 1)


@app.command()
def clean(
    files: list[Path] = typer.Argument(..., help="Input files."),
    out: Path = typer.Option(..., "-o", "--out", help="Kept records, canonical JSONL."),
    rejected: Optional[Path] = typer.Option(
        None, "--rejected", help="Every dropped record with its file, line and reason (default: OUT.rejected.jsonl)."
    ),
    drop_near_dups: bool = typer.Option(False, "--drop-near-dups", help="Also drop near duplicates."),
    drop_violations: bool = typer.Option(False, "--drop-violations", help="Also drop records that break --rules."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules YAML (needed for --drop-violations)."),
    format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard similarity for near duplicates."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write the kept records; invalid records and exact duplicates are always dropped.

    Every dropped record goes to the rejected file with its file, line and reason.

    Example: tunesmith data clean raw.jsonl -o clean.jsonl --rejected rejected.jsonl --drop-near-dups
    """
    from tunesmith.data.clean import clean as run_clean
    from tunesmith.data.clean import write_clean

    _check_format(format)
    # without a rejected file a dropped record would leave no trace of where it was and why
    rejected = rejected or out.with_name(f"{out.stem}.rejected.jsonl")
    if rejected.resolve() == out.resolve():
        _err.print(f"[red]Error:[/red] --rejected and -o are the same file ({escape(str(out))}); "
                   "the rejected records would replace the kept ones")
        raise typer.Exit(2)
    with _user_errors():
        result = run_clean(files, format, rules, drop_near_dups, drop_violations, near_dup_threshold)
        write_clean(result, out, rejected)
    s = result.summary() | {"out": str(out), "rejected_file": str(rejected)}
    if as_json:
        _emit(s)
        return
    _out.print(f"read {s['read']} = kept {s['kept']} + rejected {s['rejected']}")
    for reason, n in s["rejected_by_reason"].items():
        _out.print(f"  {reason}: {n}")
    _out.print(escape(f"wrote {out} and {rejected}"))


@app.command()
def split(
    files: list[Path] = typer.Argument(..., help="Input files."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for train/val/test.jsonl and manifest.json."),
    ratios: str = typer.Option("0.8,0.1,0.1", "--ratios", help="train,val,test fractions summing to 1."),
    stratify: str = typer.Option("auto", "--stratify", help="label, none, or auto (label when every record has one)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
    force: bool = typer.Option(False, "--force", help="Split even with duplicates (kept together in one split)."),
    format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard similarity for near duplicates."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Deterministic train/val/test split that refuses to leak duplicates into val or test.

    Invalid records are left out and listed (file, line, reason) in the manifest.

    Example: tunesmith data split clean.jsonl --out data/ --ratios 0.8,0.1,0.1 --seed 0
    """
    from tunesmith.data.formats import read_files, require_one_kind, require_records
    from tunesmith.data.split import LeakError, parse_ratios, write_split

    _check_format(format)
    if stratify not in ("auto", "label", "none"):
        _err.print(f"[red]Error:[/red] --stratify must be auto, label or none, got {escape(repr(stratify))}")
        raise typer.Exit(2)
    written = {(out / f"{name}.jsonl").resolve() for name in ("train", "val", "test")} | {(out / "manifest.json").resolve()}
    clobbered = [str(f) for f in files if f.resolve() in written]
    if clobbered:
        # "split data/train.jsonl -o data/" would replace the full input with its own train part
        _err.print(f"[red]Error:[/red] {escape(', '.join(clobbered))} would be overwritten by the split; choose another --out",
                   soft_wrap=True)
        raise typer.Exit(2)
    with _user_errors():
        ratio_values = parse_ratios(ratios)
        read = require_one_kind(require_records(read_files(files, format)), "a split")
        labelled = bool(read.records) and all(getattr(r, "label", None) is not None for r in read.records)
        key = "label" if stratify == "label" or (stratify == "auto" and labelled) else None
        source = {"source": [str(f) for f in files], "format": read.format, "read": read.total, "invalid": len(read.invalid),
                  "invalid_records": [x.to_dict() for x in read.invalid]}
        try:
            manifest = write_split(read.records, out, ratio_values, seed, key, force, near_dup_threshold, source)
        except LeakError as e:
            if as_json:
                _emit({"error": "leak", "message": str(e)})
            else:
                _err.print(f"[red]Refused:[/red] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(1) from None
    if as_json:
        _emit(manifest)
        return
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


@app.command()
def convert(
    file: Path = typer.Argument(..., help="Input file."),
    to: str = typer.Option(..., "--to", help="chat, alpaca or sharegpt."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSONL."),
    format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Convert between formats; records the target cannot hold are skipped and listed.

    Example: tunesmith data convert alpaca.json --to chat -o chat.jsonl
    """
    from tunesmith.data.convert import TARGETS
    from tunesmith.data.convert import convert as run_convert
    from tunesmith.data.formats import read_file, require_records, write_jsonl

    _check_format(format)
    if to not in TARGETS:
        _err.print(f"[red]Error:[/red] --to must be one of {', '.join(TARGETS)}, got {escape(repr(to))}")
        raise typer.Exit(2)
    with _user_errors():
        read = require_records(read_file(file, format))
        result = run_convert(read.records, to)
        write_jsonl(result.rows, out)
    s = {
        "from": read.format,
        "to": to,
        "read": read.total,
        "written": len(result.rows),
        "invalid": [x.to_dict() for x in read.invalid],
        "skipped": result.skipped,
        "notes": dict(result.notes),
        "out": str(out),
    }
    if as_json:
        _emit(s)
        return
    _out.print(f"{read.format} → {to}: read {s['read']}, wrote {s['written']}, skipped {len(result.skipped)}, invalid {len(read.invalid)}")
    for x in read.invalid[:_SHOWN]:
        _out.print(f"  invalid line {x.line}: {x.reason} ({escape(x.message)})", soft_wrap=True)
    for sk in result.skipped[:_SHOWN]:
        _out.print(f"  skipped line {sk['line']}: {escape(sk['reason'])}")
    for note, n in result.notes.items():
        _out.print(f"  note: {note} ({n} records)")


@app.command()
def report(
    files: list[Path] = typer.Argument(..., help="Input files."),
    out: Path = typer.Option(..., "-o", "--out", help="HTML file to write."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules YAML."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Model/tokenizer dir, .gguf file or embedded model name."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Flag records longer than this."),
    format: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard similarity for near duplicates."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Self-contained HTML report: length histogram, labels, duplicates, violations, warnings.

    Example: tunesmith data report train.jsonl --rules rules.yaml -o data_report.html
    """
    from tunesmith.data.check import analyse
    from tunesmith.data.report import write_report

    _check_format(format)
    with _user_errors():
        a = analyse(files, format, rules, tokenizer, max_seq_len, near_dup_threshold)
        write_report(a, out)
    if as_json:
        _emit({"out": str(out), "records": a.read.total, "ok": a.report()["ok"]})
    else:
        _out.print(escape(f"wrote {out}"))


@app.command()
def synth(
    teacher_url: str = typer.Option(..., "--teacher-url", help="Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1."),
    teacher_model: str = typer.Option(..., "--teacher-model", help="Model name the endpoint serves."),
    prompts: Path = typer.Option(..., "--prompts", help="Prompts: any data format, or a .txt file with one per line."),
    n: Optional[int] = typer.Option(None, "-n", help="Answer the first N prompts (default: all)."),
    out: Path = typer.Option(..., "-o", "--out", help="Chat JSONL; prompts already answered here are skipped."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key."),
    rps: float = typer.Option(5.0, "--rps", help="Maximum requests per second."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at once."),
    max_retries: int = typer.Option(4, "--max-retries", help="Retries per request (backoff, honours Retry-After)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per request."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature for the teacher."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Maximum answer tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Answer prompts with a teacher model and write chat records plus a 10% review sample (OUT.review.jsonl).

    Example: tunesmith data synth --teacher-url http://localhost:8000/v1 --teacher-model qwen2.5-7b --prompts prompts.txt -n 500 -o distilled.jsonl
    """
    from tunesmith.data.progress import task
    from tunesmith.data.synth import synth as run_synth

    if rps <= 0 or concurrency < 1 or (n is not None and n < 0):
        _err.print("[red]Error:[/red] --rps must be > 0, --concurrency >= 1 and -n >= 0")
        raise typer.Exit(2)
    with _user_errors():
        with task("asking the teacher", n or 0) as advance:
            result = run_synth(
                prompts, out, teacher_url, teacher_model, n, api_key_env, rps, concurrency, max_retries, timeout,
                temperature, max_tokens, progress=advance,
            )
    s = result.summary()
    if as_json:
        _emit(s)
    else:
        _out.print(
            f"{s['prompts']} prompts: {s['already_answered']} already answered, {s['written']} written, {s['failed']} failed"
            + (f"; {s['invalid_prompts']} invalid prompts left out" if s["invalid_prompts"] else "")
        )
        for f in result.failed[:_SHOWN]:
            _out.print(f"  [red]line {f['line']}:[/red] {escape(f['error'])}")
        for x in result.invalid[:_SHOWN]:
            _out.print(f"  [red]invalid prompt, line {x['line']}:[/red] {x['reason']} ({escape(x['message'])})", soft_wrap=True)
        _out.print(escape(f"review sample: {s['review_sample']} records in {s['review_file']}"))
    raise typer.Exit(1 if result.failed or result.invalid else 0)


@app.command()
def replay(
    out: Path = typer.Option(..., "-o", "--out", help="Chat JSONL of prompts answered by the model."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="The base model you will fine-tune."),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", help="Your own general prompts (.txt one per line, or chat data); default: the 72 shipped."
    ),
    n: Optional[int] = typer.Option(None, "-n", help="Answer the first N prompts (default: all)."),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help="Put this system prompt before each."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Answer length limit in tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Self-distilled replay data against forgetting: general prompts answered by the base model itself.

    Mix it into training at 10-20% with data.mix: the adapter also learns to answer as the base model did.

    Empty answers are counted, not written.

    Example: tunesmith data replay --model smollm2-135m-instruct -o data/general.jsonl
    """
    from tunesmith.data.replay import general_prompts, read_prompts, self_distill
    from tunesmith.data.formats import write_jsonl

    if (n is not None and n < 1) or max_new_tokens < 1:
        _err.print("[red]Error:[/red] -n and --max-new-tokens must be >= 1")
        raise typer.Exit(2)
    with _user_errors():
        chosen = (read_prompts(prompts) if prompts else general_prompts())[:n]
        result = self_distill(model, chosen, system_prompt=system_prompt, max_new_tokens=max_new_tokens,
                              console=_err)
        write_jsonl(result.records, out)
    s = result.summary(out)
    if as_json:
        _emit(s)
    else:
        _out.print(escape(f"{s['written']} answers written to {out}; {s['empty_answers']} empty answers left out"))
