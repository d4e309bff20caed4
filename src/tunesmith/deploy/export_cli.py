"""`tunesmith export merge | gguf | verify` and `tunesmith flywheel export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunesmith.clikit import emit
from tunesmith.clikit import fail as _fail
from tunesmith.deploy.cli_common import (
    JsonOpt,
    RegistryOpt,
    _open,
    _os_error,
    _resolve_version,
    err,
    out,
)
from tunesmith.deploy.registry import RegistryError

export_app = typer.Typer(help="Merge or convert a registered version for other runtimes.", no_args_is_help=True)
flywheel_app = typer.Typer(help="Turn serving failures into the next training set.", no_args_is_help=True)


# ---- export ----------------------------------------------------------------------------------


def _steps() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, transient=True)


def _parity_table(report: dict[str, Any]) -> None:
    t = Table(title=f"parity: {report['kind']}")
    t.add_column("check")
    t.add_column("value")
    t.add_row("identical greedy outputs", f"{report['identical_greedy']}/{report['prompts']}")
    t.add_row("max |logit diff|", f"{report['max_abs_logit_diff']:.3g}")
    t.add_row("relative to max |logit|", f"{report['rel_logit_diff']:.3g}"
              + (f" (tolerance {report['tolerance']:g})" if report["tolerance"] is not None else ""))
    if "top1_agreement" in report:
        t.add_row("top-1 token agreement", f"{report['top1_agreement']:.2%}")
    if "tokenizer_mismatch" in report:
        t.add_row("tokenizer mismatches", str(len(report["tokenizer_mismatch"])))
    t.add_row("result", "[green]pass[/green]" if report["passed"] else "[red]FAIL[/red]")
    out.print(t)


def _finish(as_json: bool, obj: dict[str, Any], reports: list[dict[str, Any]], done: str) -> None:
    def human() -> None:
        out.print(done)
        for r in reports:
            _parity_table(r)

    emit(obj, as_json, human)
    if any(not r["passed"] for r in reports):
        raise typer.Exit(1)


PromptsOpt = Annotated[int, typer.Option("--prompts", min=1, help="Parity prompts (from the run's test split).")]


@export_app.command("merge")
def export_merge(
    version: Annotated[str, typer.Argument(help="Version id or alias.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the merged model.")],
    prompts: PromptsOpt = 8,
    verify: Annotated[bool, typer.Option(help="Run the parity check after merging.")] = True,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge an adapter into its base: a plain transformers model + tokenizer (safetensors), parity-checked.

    Example: tunesmith export merge legal@prod -o merged/legal
    """
    from tunesmith.deploy.merge import OutputError, merge_to_dir, verify_merge
    from tunesmith.models import ModelError

    reg = _open(registry)
    try:
        v = _resolve_version(reg, version)
        with _steps() as progress:
            task = progress.add_task(f"merging {v.id}", total=2 if verify else 1)
            merge_to_dir(v, output)
            progress.update(task, advance=1, description="parity check (adapter vs merged)")
            reports = [verify_merge(v, output, n=prompts).to_dict()] if verify else []
            progress.update(task, advance=1)
    except (RegistryError, ModelError, OutputError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(_os_error(e, output))
    _finish(as_json, {"version": v.id, "output": str(output), "parity": reports}, reports,
            f"merged {v.id} -> {output}")


@export_app.command("gguf")
def export_gguf_cmd(
    version: Annotated[str, typer.Argument(help="Version id or alias.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="GGUF file to write (its Modelfile, FILE.Modelfile, goes beside it).")],
    type_: Annotated[str, typer.Option("--type", help="Weight type: f16 | q8_0.")] = "f16",
    pre: Annotated[Optional[str], typer.Option("--pre", help="llama.cpp pre-tokenizer name (default: detected).")] = None,
    prompts: PromptsOpt = 8,
    verify: Annotated[bool, typer.Option(help="Re-load the file with transformers and compare logits.")] = True,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a GGUF (Llama, Mistral, Qwen2/3, Gemma 3, Phi-3) plus an Ollama Modelfile, parity-checked.

    Example: tunesmith export gguf legal@prod -o legal.gguf --type q8_0
    """
    from tunesmith.deploy.gguf_export import (
        TOLERANCE,
        ExportError,
        export_gguf,
        modelfile_path,
        verify_gguf,
    )
    from tunesmith.models import ModelError

    if type_ not in TOLERANCE:
        _fail(f"--type {type_!r}: expected one of {', '.join(TOLERANCE)}")
    if output.expanduser().is_dir():
        _fail(f"{output}: is a directory; give the GGUF file's path, e.g. {output / 'model.gguf'}")
    reg = _open(registry)
    try:
        v = _resolve_version(reg, version)
        with _steps() as progress:
            task = progress.add_task(f"writing {output}", total=2 if verify else 1)
            path = export_gguf(v, output, type_, pre)
            progress.update(task, advance=1, description="parity check (merged vs GGUF re-loaded)")
            reports = [verify_gguf(v, path, type_, n=prompts).to_dict()] if verify else []
            progress.update(task, advance=1)
    except (RegistryError, ModelError, ExportError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(_os_error(e, output))
    modelfile = modelfile_path(path)
    _finish(as_json, {"version": v.id, "output": str(path), "modelfile": str(modelfile),
                      "parity": reports}, reports, f"wrote {path} and {modelfile}")


@export_app.command("verify")
def export_verify(
    version: Annotated[str, typer.Argument(help="Version id or alias the export came from.")],
    merged: Annotated[Optional[Path], typer.Option("--merged", help="Merged model directory to check.")] = None,
    gguf: Annotated[Optional[Path], typer.Option("--gguf", help="GGUF file to check.")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="The GGUF's weight type (sets the tolerance); "
                                                  "default: the type the file declares.")] = None,
    prompts: PromptsOpt = 8,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parity check of existing exports against the registered adapter; exit code 1 when one fails.

    Example: tunesmith export verify legal@prod --merged merged/legal --gguf legal.gguf
    """
    from tunesmith.deploy.gguf_export import (
        TOLERANCE,
        ExportError,
        gguf_type,
        verify_gguf,
    )
    from tunesmith.deploy.merge import verify_merge
    from tunesmith.models import ModelError

    if merged is None and gguf is None:
        _fail("nothing to verify: give --merged DIR and/or --gguf FILE")
    if type_ is not None and type_ not in TOLERANCE:
        _fail(f"--type {type_!r}: expected one of {', '.join(TOLERANCE)}")
    for p in (merged, gguf):
        if p is not None and not p.exists():
            _fail(f"{p}: no such file or directory")
    if merged is not None and not (merged / "config.json").is_file():
        _fail(f"{merged}: not a merged model directory (no config.json)")
    if gguf is not None:
        # Judging a q8_0 file by the f16 tolerance would fail a good export, so the file's own type decides.
        try:
            declared = gguf_type(gguf)
        except ExportError as e:
            _fail(str(e))
        if type_ is not None and type_ != declared:
            _fail(f"--type {type_} but {gguf} declares {declared}")
        type_ = declared
    reg = _open(registry)
    try:
        v = _resolve_version(reg, version)
    except RegistryError as e:
        _fail(str(e))
    reports = []
    try:
        with _steps() as progress:
            task = progress.add_task("parity checks", total=(merged is not None) + (gguf is not None))
            if merged is not None:
                reports.append(verify_merge(v, merged, n=prompts).to_dict())
                progress.update(task, advance=1)
            if gguf is not None:
                reports.append(verify_gguf(v, gguf, type_, n=prompts).to_dict())
                progress.update(task, advance=1)
    except (RegistryError, ModelError) as e:
        _fail(str(e))
    _finish(as_json, {"version": v.id, "parity": reports}, reports, f"checked exports of {v.id}")


# ---- flywheel --------------------------------------------------------------------------------


@flywheel_app.command("export")
def flywheel_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file for the next training set.")],
    failed: Annotated[bool, typer.Option("--failed", help="Only answers that broke a rule or were flagged.")] = False,
    version: Annotated[Optional[str], typer.Option(
        "--version", help="Only answers of this version, or of this alias (e.g. legal@prod).")] = None,
    log: Annotated[Optional[Path], typer.Option("--log", help="Request log (default: requests.db beside the "
                                                               "registry).")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write logged chat exchanges as conversation records; a user's correction replaces the answer.

    Example: tunesmith flywheel export --failed -o next.jsonl
    """
    from tunesmith.deploy.flywheel import export_records
    from tunesmith.deploy.registry import default_path

    log_path = log or (registry or default_path()).expanduser().with_name("requests.db")
    if not log_path.is_file():
        _fail(f"{log_path}: no request log (start `tunesmith serve` first, or pass --log)")
    if output.expanduser().is_dir():
        _fail(f"{output}: is a directory; give the JSONL file's path")
    import sqlite3

    try:
        counts = export_records(log_path, output, failed_only=failed, version=version)
    except sqlite3.DatabaseError as e:
        _fail(f"{log_path}: not a tunesmith request log ({e})")
    except OSError as e:
        _fail(_os_error(e, output))
    if version and not counts["records"] and not counts["skipped_no_user_turn"]:
        err.print(f"note: no logged chat answers of version {version!r} in {log_path}", highlight=False)
    emit({"output": str(output), **counts}, as_json,
         lambda: out.print(f"wrote {counts['records']} records to {output} ({counts['corrected']} corrected, "
                           f"{counts['needs_correction']} need a corrected answer before training"
                           + (f"; skipped {counts['skipped_no_user_turn']} without a user turn"
                              if counts["skipped_no_user_turn"] else "") + ")"))
