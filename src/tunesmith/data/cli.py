"""`tunesmith data` commands: parse arguments, call the data modules, print a table (views.py) or one JSON object.

Exit codes: 0 clean, 1 the data has errors (invalid records, rule violations, a refused
split, failed synth prompts), 2 unusable arguments or unreadable files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from tunesmith.clikit import emit, err as _err, fail, out as _out, user_errors
from tunesmith.data import views
from tunesmith.data.formats import FORMATS

app = typer.Typer(help="Check, clean, split, convert, report on and synthesise training data.", no_args_is_help=True)

# Beyond a UserError: the parsers a user's file goes through (csv, json, pyarrow, tokenizers) refuse bad input
# with a ValueError or an OSError, and either is the user's to fix.
_READ_ERRORS = (ValueError, OSError)

FORMAT_HELP = f"Input format: auto or one of {', '.join(FORMATS)}."


def _check_format(fmt: str) -> None:
    if fmt != "auto" and fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; use auto or one of {', '.join(FORMATS)}")


@app.command()
def check(
    files: Optional[list[Path]] = typer.Argument(
        None, help="JSONL, JSON, CSV, TSV, Parquet or TXT files (default: data.train of --config)."),
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
    config: Optional[Path] = typer.Option(
        None, "--config", help="Run config YAML: data.train, data.format, data.rules, the model's tokenizer, "
        "data.chat_template and data.max_seq_len from it; flags given override it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Validate data files: invalid records, duplicates, rule violations, lengths, labels, warnings.

    Exit 0 when clean, 1 with invalid records or rule violations, 2 for unusable arguments.

    Example: tunesmith data check train.jsonl --rules rules.yaml --tokenizer smollm2-135m-instruct --max-seq-len 1024

    Example: tunesmith data check --config examples/legal-bot.yaml
    """
    from tunesmith.data.check import check as run_check
    from tunesmith.data.check import load_tokenizer

    if config is not None:
        from tunesmith.config import load_config
        from tunesmith.train.base import tokenizer_dir

        with user_errors():
            cfg = load_config(config)
            # the tokenizer training uses: a previous run as `model` has its own
            tokenizer = tokenizer or str(tokenizer_dir(cfg.model))
        d = cfg.data
        files = files or ([Path(d.train)] if d.train else None)
        format = d.format if format == "auto" else format
        rules = rules or (Path(d.rules) if d.rules else None)
        chat_template, max_seq_len = chat_template or d.chat_template, max_seq_len or d.max_seq_len
    if not files:
        fail("give the data files to check, or --config run.yaml with data.train")
    _check_format(format)
    if chat_template is not None and tokenizer is None:
        fail("--chat-template needs --tokenizer (lengths are counted in its tokens)")
    with user_errors(*_READ_ERRORS):
        tok = load_tokenizer(tokenizer, chat_template) if chat_template is not None else tokenizer
        rep = run_check(files, format, rules, tok, max_seq_len, near_dup_threshold)
    emit(rep, as_json, lambda: views.print_check(rep))
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
        fail(f"--rejected and -o are the same file ({out}); the rejected records would replace the kept ones")
    with user_errors(*_READ_ERRORS):
        result = run_clean(files, format, rules, drop_near_dups, drop_violations, near_dup_threshold)
        write_clean(result, out, rejected)
    s = result.summary() | {"out": str(out), "rejected_file": str(rejected)}
    emit(s, as_json, lambda: views.print_clean(s))


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
    from tunesmith.data.split import LeakError, split_files

    _check_format(format)
    with user_errors(*_READ_ERRORS):
        try:
            manifest = split_files(files, out, ratios, stratify, seed, force, near_dup_threshold, format)
        except LeakError as e:  # the data's fault, not the arguments': exit 1
            if as_json:  # a script still gets its one JSON object, saying why nothing was written
                emit({"error": "leak", "message": str(e)}, True, lambda: None)
            fail(e, code=1)
    emit(manifest, as_json, lambda: views.print_split(manifest, out))


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
    from tunesmith.data.convert import convert_file

    _check_format(format)
    with user_errors(*_READ_ERRORS):
        s = convert_file(file, to, out, format)
    emit(s, as_json, lambda: views.print_convert(s))


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
    """The web app's Data page as one self-contained HTML file: counts, rejected lines, duplicates, violations, lengths.

    Example: tunesmith data report train.jsonl --rules rules.yaml -o data_report.html
    """
    from tunesmith.data.check import analyse
    from tunesmith.data.report import write_report

    _check_format(format)
    with user_errors(*_READ_ERRORS):
        a = analyse(files, format, rules, tokenizer, max_seq_len, near_dup_threshold)
        write_report(a, out)
    emit({"out": str(out), "records": a.read.total, "ok": a.report()["ok"]}, as_json,
         lambda: _out.print(escape(f"wrote {out}")))


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
        fail("--rps must be > 0, --concurrency >= 1 and -n >= 0")
    with user_errors(*_READ_ERRORS):
        with task("asking the teacher", n or 0) as advance:
            result = run_synth(
                prompts, out, teacher_url, teacher_model, n, api_key_env, rps, concurrency, max_retries, timeout,
                temperature, max_tokens, progress=advance,
            )
    emit(result.summary(), as_json, lambda: views.print_synth(result))
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
        fail("-n and --max-new-tokens must be >= 1")
    with user_errors(*_READ_ERRORS):
        chosen = (read_prompts(prompts) if prompts else general_prompts())[:n]
        result = self_distill(model, chosen, system_prompt=system_prompt, max_new_tokens=max_new_tokens,
                              console=_err)
        write_jsonl(result.records, out)
    s = result.summary(out)
    emit(s, as_json, lambda: _out.print(escape(f"{s['written']} answers written to {out}; {s['empty_answers']} "
                                               "empty answers left out")))
