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
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="Token limit of each answer "
                                                      "compared in llama.cpp (default: as the evaluation's, the "
                                                      "longest test answer + 25%).")] = None,
    verify: Annotated[bool, typer.Option(help="Run the file in llama.cpp and compare whole answers with the "
                                              "adapter's (without llama.cpp: re-load it with transformers).")] = True,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a GGUF (Llama, Mistral, Qwen2/3, Gemma 3, Phi-3) plus an Ollama Modelfile, parity-checked.

    Example: tunesmith export gguf legal@prod -o legal.gguf --type q8_0
    """
    from tunesmith.deploy.gguf_export import TOLERANCE, ExportError, export_gguf
    from tunesmith.deploy.gguf_reload import reload_misreads, verify_gguf
    from tunesmith.deploy.merge import answer_limit, parity_cases
    from tunesmith.deploy.modelfile import modelfile_path
    from tunesmith.deploy.parity import verify_runtimes
    from tunesmith.deploy.runtimes import missing
    from tunesmith.deploy.servability import Finding, export_findings
    from tunesmith.models import ModelError

    if type_ not in TOLERANCE:
        _fail(f"--type {type_!r}: expected one of {', '.join(TOLERANCE)}")
    if output.expanduser().is_dir():
        _fail(f"{output}: is a directory; give the GGUF file's path, e.g. {output / 'model.gguf'}")
    reg = _open(registry)
    in_llama = missing("llama.cpp") is None
    runtimes: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    try:
        v = _resolve_version(reg, version)
        with _steps() as progress:
            task = progress.add_task(f"writing {output}", total=1 + (2 * prompts if verify else 0))
            path = export_gguf(v, output, type_, pre)
            progress.advance(task)
            findings = [f.to_dict() for f in export_findings(v, path)]
            if verify and in_llama:
                cases = parity_cases(v, prompts)
                limit = max_tokens or answer_limit(v, cases)
                runtimes = [r.to_dict() for r in verify_runtimes(
                    v, reg.path, ["llama.cpp"], cases, max_new_tokens=limit, gguf=path,
                    gguf_type=type_,
                    step=lambda s: progress.update(task, description=f"parity: {s}"),
                    answered=lambda: progress.advance(task))]
            elif verify and (why := reload_misreads(v)):
                findings.append(Finding("warning", "parity-unchecked", (
                    f"parity not checked: {why}, and llama.cpp is not installed (scripts/install.sh "
                    "--with-llama-cpp); this family's writer is tested in llama.cpp in tunesmith's CI")).to_dict())
            elif verify:
                progress.update(task, description="parity: GGUF re-loaded by transformers (llama.cpp not installed)")
                reports = [_reload_report(verify_gguf(v, path, type_, n=prompts).to_dict())]
    except (RegistryError, ModelError, ExportError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(_os_error(e, output))
    modelfile = modelfile_path(path)
    passed = all(r["passed"] for r in runtimes + reports) and not any(f["level"] == "error" for f in findings)

    def human() -> None:
        out.print(f"wrote {path} and {modelfile}")
        _print_findings(findings)
        for r in runtimes:
            _runtime_table(r)
        for r in reports:
            _parity_table(r)

    emit({"version": v.id, "output": str(path), "modelfile": str(modelfile), "runtimes": runtimes,
          "parity": reports, "servability": findings, "passed": passed}, as_json, human)
    if not passed:
        raise typer.Exit(1)


def _runtime_table(r: dict[str, Any]) -> None:
    if "skipped" in r:
        out.print(f"[yellow]{r['runtime']}: not run[/yellow] — {r['skipped']}", soft_wrap=True)
        return
    n = r["prompts"]

    def vs(got: float | None, want: float | None, what: str) -> str:
        return f"no {what}" if got is None else f"{got:.2f} (adapter {want:.2f})"

    t = Table(title=f"{r['runtime']} ({r['weight_type']}): {r['detail']}", title_justify="left")
    t.add_column("check")
    t.add_column("value")
    t.add_row("identical answers", f"{r['identical']}/{n} ({r['identical'] / max(n, 1):.0%})")
    t.add_row("first divergence (median character)",
              "-" if r["first_divergence"] is None else f"{r['first_divergence']:g}")
    t.add_row("stops at the same place", f"{r['same_stop']}/{n}")
    t.add_row("rule compliance", vs(r["compliance"], r["adapter_compliance"], "rules"))
    t.add_row("ROUGE-L vs test answers", vs(r["task_metric"], r["adapter_task_metric"], "reference answers"))
    t.add_row("tokens/s", f"{r['tokens_per_s']:.1f}")
    t.add_row("judged by", r["rule"])
    t.add_row("result", "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]")
    out.print(t)


def _print_findings(findings: list[dict[str, Any]]) -> None:
    for f in findings:
        colour = "red" if f["level"] == "error" else "yellow"
        err.print(f"[{colour}]{f['level']}[/{colour}] ({f['code']}): {f['message']}", soft_wrap=True)


@export_app.command("verify")
def export_verify(
    version: Annotated[str, typer.Argument(help="Version id or alias.")],
    runtimes: Annotated[str, typer.Option("--runtimes", help="Comma-separated: embedded, llama.cpp, vllm; those not "
                                                             "installed are reported, not run.")] = "embedded,llama.cpp,vllm",
    prompts_file: Annotated[Optional[Path], typer.Option("--prompts", help="JSONL of {\"messages\": [...]} "
                                                          "(default: the run's test split).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="How many prompts.")] = 20,
    max_tokens: Annotated[Optional[int], typer.Option(
        "--max-tokens", min=1, help="Token limit of each answer (default: as the evaluation's, the longest test "
                                    "answer + 25%, so the rules see whole answers; 64 without test answers).")] = None,
    gguf: Annotated[Optional[Path], typer.Option("--gguf", help="GGUF for llama.cpp to run (default: an f16 export "
                                                               "made for the check); without llama.cpp it is "
                                                               "re-loaded by transformers instead.")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="Weight type of the GGUF exported for the check "
                                                  "(f16 | q8_0); with --gguf, the type the file declares.")] = None,
    merged: Annotated[Optional[Path], typer.Option("--merged", help="Also check a merged model directory.")] = None,
    min_identical: Annotated[float, typer.Option("--min-identical", min=0, max=1, help="Share of identical answers "
                                                  "an f16/f32 runtime needs.")] = 0.9,
    margin: Annotated[float, typer.Option("--margin", min=0, help="Quantised runtimes: how far rule compliance and "
                                           "ROUGE-L may fall from the adapter's.")] = 0.05,
    vllm_cmd: Annotated[Optional[str], typer.Option(
        "--vllm-command", envvar="TUNESMITH_VLLM_COMMAND", help="The command that starts vLLM's OpenAI server "
                                                                 "(default: this Python's vLLM, else the .venv-vllm "
                                                                 "beside this venv).")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Greedy answers of the adapter and of each runtime on the same prompts, one table per runtime; exit code 1
    when a runtime falls below the agreement asked for.

    Example: tunesmith export verify legal@prod --runtimes embedded,vllm,llama.cpp
    Example: tunesmith export verify legal@prod --runtimes llama.cpp --gguf legal.q8_0.gguf --n 50
    """

    from tunesmith.deploy.gguf_export import TOLERANCE, ExportError
    from tunesmith.deploy.gguf_reload import gguf_type, verify_gguf
    from tunesmith.deploy.merge import answer_limit, parity_cases, verify_merge
    from tunesmith.deploy.parity import PromptsError, read_cases, verify_runtimes
    from tunesmith.deploy.runtimes import RUNTIMES, missing
    from tunesmith.deploy.serve.vllm_engine import find_command
    from tunesmith.models import ModelError

    names = [r.strip() for r in runtimes.split(",") if r.strip()]
    bad = [r for r in names if r not in RUNTIMES]
    if not names or bad:
        _fail(f"--runtimes {runtimes!r}: expected a comma-separated list of {', '.join(RUNTIMES)}"
              + (f" (unknown: {', '.join(bad)})" if bad else ""))
    if type_ is not None and type_ not in TOLERANCE:
        _fail(f"--type {type_!r}: expected one of {', '.join(TOLERANCE)}")
    for p in (merged, gguf, prompts_file):
        if p is not None and not p.exists():
            _fail(f"{p}: no such file or directory")
    if merged is not None and not (merged / "config.json").is_file():
        _fail(f"{merged}: not a merged model directory (no config.json)")
    if gguf is not None:
        # Judging a q8_0 file as token-identical would fail a good export, so the file's own type decides.
        try:
            declared = gguf_type(gguf)
        except ExportError as e:
            _fail(str(e))
        if type_ is not None and type_ != declared:
            _fail(f"--type {type_} but {gguf} declares {declared}")
        type_ = declared
    vllm_command = find_command(vllm_cmd)
    reg = _open(registry)
    try:
        v = _resolve_version(reg, version)
        v.check_files()  # every runtime needs the adapter: say which files are gone before loading anything
        cases = read_cases(prompts_file, n) if prompts_file else parity_cases(v, n)
        max_tokens = max_tokens or answer_limit(v, cases)
    except (RegistryError, PromptsError, ModelError) as e:
        _fail(str(e))
    run_here = [r for r in names if not missing(r, vllm_command)]
    exports: list[dict[str, Any]] = []
    try:
        with _steps() as progress:
            task = progress.add_task("adapter (reference)", total=len(cases) * (1 + len(run_here)))
            reports = verify_runtimes(
                v, reg.path, names, cases, max_new_tokens=max_tokens, gguf=gguf, gguf_type=type_ or "f16",
                vllm_command=vllm_command, min_identical=min_identical, margin=margin,
                step=lambda s: progress.update(task, description=s), answered=lambda: progress.advance(task))
            if merged is not None:
                progress.update(task, description="merged directory (logits)")
                exports.append(verify_merge(v, merged, n=min(n, 8)).to_dict())
            if gguf is not None and "llama.cpp" in names and "llama.cpp" not in run_here:
                progress.update(task, description="GGUF re-loaded by transformers (llama.cpp not installed)")
                exports.append(_reload_report(verify_gguf(v, gguf, type_, n=min(n, 8)).to_dict()))
    except (RegistryError, ModelError, ExportError) as e:
        _fail(str(e))
    except RuntimeError as e:  # vLLM did not start
        _fail(str(e))
    rows = [r.to_dict() for r in reports]
    passed = all(r.get("passed", True) for r in rows) and all(r["passed"] for r in exports)

    def human() -> None:
        out.print(f"parity of {v.id} on {len(cases)} prompts (greedy, up to {max_tokens} tokens each)")
        for r in rows:
            _runtime_table(r)
        for r in exports:
            _parity_table(r)

    emit({"version": v.id, "prompts": len(cases), "max_new_tokens": max_tokens, "runtimes": rows, "exports": exports,
          "passed": passed}, as_json, human)
    if not passed:
        raise typer.Exit(1)


def _reload_report(report: dict[str, Any]) -> dict[str, Any]:
    report["kind"] += " (transformers reload: the fallback when llama.cpp is not installed)"
    return report


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
