"""`tunesmith registry | export | flywheel | serve` commands."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tunesmith.clikit import fail as _fail
from tunesmith.deploy.registry import GUARD_MODES, Registry, RegistryError, Version

out = Console()
err = Console(stderr=True)

registry_app = typer.Typer(help="Name adapter versions, point aliases at them, roll back.", no_args_is_help=True)
export_app = typer.Typer(help="Merge or convert a registered version for other runtimes.", no_args_is_help=True)
flywheel_app = typer.Typer(help="Turn serving failures into the next training set.", no_args_is_help=True)

RegistryOpt = Annotated[
    Optional[Path],
    typer.Option("--registry", envvar="TUNESMITH_REGISTRY",
                 help="Registry database (default: ~/.cache/tunesmith/registry.db).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object to stdout.")]


def _open(registry: Path | None, create: bool = False) -> Registry:
    # Only `registry add` may start a new database: elsewhere a mistyped --registry would silently read an
    # empty registry (and leave a stray file behind).
    if registry is not None and not create and not registry.expanduser().exists():
        _fail(f"no registry at {registry} (`tunesmith registry add RUN --name NAME --registry {registry}` creates one)")
    try:
        return Registry(registry)
    except Exception as e:  # an unreadable or foreign file given as --registry
        _fail(f"cannot open registry {registry}: {e}")
        raise


def _emit(as_json: bool, obj: dict[str, Any], human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        human()


def _os_error(e: OSError, output: Path) -> str:
    # errno set: the file system refused the output; otherwise a library's OSError (e.g. a model it cannot load)
    return f"cannot write {output}: {e.strerror}" if e.errno is not None else str(e)


def _resolve_version(reg: Registry, name: str) -> Version:
    """A version id, or an alias (its main target)."""
    alias = reg.find_alias(name)
    return reg.version(alias.targets[0][0] if alias else name)


# ---- registry --------------------------------------------------------------------------------


@registry_app.command("add")
def registry_add(
    run: Annotated[Path, typer.Argument(help="Finished run directory (run.json + adapter/).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model family, e.g. legal.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a run's adapter as the next version of NAME (copied into the registry store).

    Example: tunesmith registry add runs/legal-lora --name legal
    """
    reg = _open(registry, create=True)
    try:
        v = reg.add(run, name)
    except RegistryError as e:
        _fail(str(e))
    same = [o.id for o in reg.versions(name) if o.id != v.id and o.lineage.get("run") == v.lineage.get("run")
            and o.lineage.get("trained") == v.lineage.get("trained")]
    if same:  # registering twice is allowed (e.g. after a new eval) but is more often a slip
        err.print(f"note: this training run is already registered as {', '.join(same)}", highlight=False)
    _emit(as_json, v.to_dict(), lambda: out.print(f"registered [bold]{v.id}[/bold] from {run} (stored in {v.store})"))


def _headline(metrics: dict | None, gate: dict | None) -> str:
    """The metric the gate decided on (what a reader compares across versions), else the first few numbers."""
    if not metrics:
        return "-"
    primary = (gate or {}).get("primary_metric")
    if isinstance(metrics.get(primary), (int, float)):
        return f"{primary} {metrics[primary]:.3f}"
    return json.dumps(metrics)[:40]


@registry_app.command("list")
def registry_list(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Only this model family.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List versions and aliases.

    Example: tunesmith registry list --name legal
    """
    reg = _open(registry)
    versions, aliases = reg.versions(name), reg.aliases()
    if name:
        aliases = [a for a in aliases if a.alias.split("@")[0] == name]

    def human() -> None:
        t = Table(title=f"versions ({reg.path})")
        # The id is what every other command takes: never cut it with an ellipsis on a narrow terminal.
        t.add_column("version", no_wrap=True)
        for col in ("created", "run", "data sha256 (train)", "tuned metrics", "gate"):
            t.add_column(col)
        for v in versions:
            lin = v.lineage
            metrics = (lin.get("eval") or {}).get("metrics")
            gate = lin.get("gate")
            t.add_row(v.id + ("\n[red](files missing)[/red]" if v.missing_files() else ""),
                      v.created[:16].replace("T", " "),
                      lin.get("run_name") or lin.get("run", ""),
                      (lin.get("data_sha256", {}).get("train") or "")[:12],
                      _headline(metrics, gate),
                      ("pass" if gate.get("passed") else "fail") if isinstance(gate, dict) and "passed" in gate else "-")
        out.print(t)
        if aliases:
            ta = Table(title="aliases")
            for col in ("alias", "targets", "guard"):
                ta.add_column(col)
            for a in aliases:
                ta.add_row(a.alias, ", ".join(f"{v} ({w:.0%})" for v, w in a.targets), a.guard)
            out.print(ta)

    _emit(as_json, {"registry": str(reg.path),
                    "versions": [{**v.to_dict(), "files_ok": not v.missing_files()} for v in versions],
                    "aliases": [a.to_dict() for a in aliases]}, human)


@registry_app.command("show")
def registry_show(
    name: Annotated[str, typer.Argument(help="A version id or an alias.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a version's lineage, or an alias's targets and history.

    Example: tunesmith registry show legal@prod
    """
    reg = _open(registry)
    alias = reg.find_alias(name)
    if alias is not None:
        obj = alias.to_dict()

        def human() -> None:
            out.print(f"[bold]{alias.alias}[/bold] -> " + ", ".join(f"{v} ({w:.0%})" for v, w in alias.targets)
                      + f"   guard: {alias.guard}")
            t = Table(title="history")
            for col in ("#", "at", "action", "targets"):
                t.add_column(col)
            for h in alias.history:
                t.add_row(str(h["seq"]), h["at"], h["action"], ", ".join(f"{v} ({w:.0%})" for v, w in h["targets"]))
            out.print(t)
    else:
        try:
            v = reg.version(name)
        except RegistryError as e:
            _fail(str(e))
        obj = {**v.to_dict(), "files_ok": not v.missing_files()}

        def human() -> None:
            out.print(f"[bold]{v.id}[/bold]  base: {v.base_model}  store: {v.store}"
                      + (f"  [red](missing: {', '.join(v.missing_files())})[/red]" if v.missing_files() else ""))
            t = Table(show_header=False)
            for k, val in v.lineage.items():
                if k != "rules_yaml":
                    t.add_row(k, json.dumps(val) if isinstance(val, (dict, list)) else str(val))
            out.print(t)

    _emit(as_json, obj, human)


def _parse_split(items: list[str]) -> dict[str, float]:
    split: dict[str, float] = {}
    for item in items:
        vid, sep, frac = item.rpartition("=")
        try:
            split[vid] = float(frac)
        except ValueError:
            sep = ""
        if not sep or not vid:
            _fail(f"--split {item!r}: expected VERSION=FRACTION, e.g. legal-v3-20261122=0.1")
    return split


@registry_app.command("alias")
def registry_alias(
    alias: Annotated[str, typer.Argument(help="NAME@LABEL, e.g. legal@prod.")],
    version: Annotated[str, typer.Argument(help="Version that gets the remaining traffic.")],
    split: Annotated[list[str], typer.Option("--split", help="VERSION=FRACTION sent elsewhere (repeatable).")] = [],
    guard: Annotated[Optional[str], typer.Option("--guard", help=f"Rules guard: {' | '.join(GUARD_MODES)}.")] = None,
    rules: Annotated[Optional[Path], typer.Option("--rules", help="Rules file for the guard "
                                                                 "(default: the run's rules).")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version, optionally splitting traffic (canary) and guarding answers with rules.

    Example: tunesmith registry alias legal@prod legal-v2-20261122 --split legal-v3-20261123=0.1 --guard retry
    """
    from tunesmith.rules import RulesError, load_rules

    rules_yaml = None
    if rules is not None:
        try:
            rules_yaml = load_rules(rules).to_yaml()
        except RulesError as e:
            _fail(str(e))
    reg = _open(registry)
    try:
        a = reg.set_alias(alias, version, _parse_split(split), guard, rules_yaml)
    except RegistryError as e:
        _fail(str(e))
    _emit(as_json, a.to_dict(),
          lambda: out.print(f"{a.alias} -> " + ", ".join(f"{v} ({w:.0%})" for v, w in a.targets) + f"  guard: {a.guard}"))


@registry_app.command("rollback")
def registry_rollback(
    alias: Annotated[str, typer.Argument(help="Alias to move back to its previous target.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias back at the target it had before its last change (history is kept).

    Example: tunesmith registry rollback legal@prod
    """
    reg = _open(registry)
    try:
        a = reg.rollback(alias)
    except RegistryError as e:
        _fail(str(e))
    _emit(as_json, a.to_dict(),
          lambda: out.print(f"rolled back {a.alias} -> " + ", ".join(f"{v} ({w:.0%})" for v, w in a.targets)))


@registry_app.command("remove")
def registry_remove(
    version: Annotated[str, typer.Argument(help="Version id to delete (refused while an alias uses it).")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a version and its stored adapter.

    Example: tunesmith registry remove legal-v1-20261122
    """
    reg = _open(registry)
    try:
        reg.remove(version)
    except RegistryError as e:
        _fail(str(e))
    _emit(as_json, {"removed": version}, lambda: out.print(f"removed {version}"))


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

    _emit(as_json, obj, human)
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
    """Write a llama-family GGUF (llama.cpp / Ollama) plus an Ollama Modelfile, parity-checked.

    Example: tunesmith export gguf legal@prod -o legal.gguf --type q8_0
    """
    from tunesmith.deploy.gguf_export import TOLERANCE, ExportError, export_gguf, modelfile_path, verify_gguf
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
    from tunesmith.deploy.gguf_export import TOLERANCE, ExportError, gguf_type, verify_gguf
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
    _emit(as_json, {"output": str(output), **counts},
          lambda: out.print(f"wrote {counts['records']} records to {output} ({counts['corrected']} corrected, "
                            f"{counts['needs_correction']} need a corrected answer before training"
                            + (f"; skipped {counts['skipped_no_user_turn']} without a user turn"
                               if counts["skipped_no_user_turn"] else "") + ")"))


# ---- serve -----------------------------------------------------------------------------------


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="TUNESMITH_API_KEY",
                                                   help="Require 'Authorization: Bearer KEY'.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model dir (default: the newest version's); "
                                                                "also smollm2-135m-instruct.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="embedded (the model in this process) | vllm (a vLLM "
                                                           "child process behind this server).")] = "embedded",
    print_only: Annotated[bool, typer.Option(
        "--print", help="With --engine vllm: print a plain `vllm serve` command (aliases frozen in), exit.")] = False,
    vllm_cmd: Annotated[Optional[str], typer.Option(
        "--vllm-command", envvar="TUNESMITH_VLLM_COMMAND",
        help="With --engine vllm: the command that starts vLLM's OpenAI server, e.g. from another venv "
             "('/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server'); default: this Python's vLLM.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Largest max_tokens a request may ask.")] = 1024,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1, help="Requests in flight before 429.")] = 64,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds a request waits for its next output "
                                                                    "before it is answered 503.")] = 300,
    log: Annotated[Optional[Path], typer.Option("--log", help="Request log (default: requests.db beside the "
                                                               "registry).")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Serve registry versions and aliases over an OpenAI-compatible API (one base, many adapters).

    Example: tunesmith serve --port 8000 --api-key secret
    then: curl -H 'Authorization: Bearer secret' localhost:8000/v1/chat/completions
          -d '{"model": "legal@prod", "messages": [{"role": "user", "content": "hi"}]}'
    Example: tunesmith serve --engine vllm   (vLLM decodes; keys, aliases, rollback, guard and log stay here)
    Example: tunesmith serve --engine vllm --print   (the plain vLLM command, to run vLLM yourself)
    """
    if api_key is not None and not api_key.strip():
        _fail("--api-key is empty: give a secret, or leave the option out to serve without a key")
    if engine not in ("embedded", "vllm"):
        _fail(f"--engine {engine!r}: expected embedded or vllm")
    if engine == "vllm" and print_only:
        from tunesmith.deploy.vllm import vllm_command

        try:
            argv, notes = vllm_command(_open(registry), host, port, api_key)
        except RegistryError as e:
            _fail(str(e))
        for note in notes:
            err.print(f"note: {note}", highlight=False)
        sys.stdout.write(shlex.join(argv) + "\n")
        return
    import uvicorn

    from tunesmith.deploy.serve.app import create_app
    from tunesmith.deploy.serve.settings import ServeSettings
    from tunesmith.deploy.serve.state import Server
    from tunesmith.models import ModelError, resolve_model
    from tunesmith.rundir import RunDir, RunDirError

    make_engine = _vllm_engine(vllm_cmd) if engine == "vllm" else None
    run = RunDir(Path(base).expanduser()) if base else None
    if run is not None and run.info_path.is_file() and (run.path / "model" / "config.json").is_file():
        base = str(run.path / "model")  # a full fine-tune's run directory: its model
        try:
            system_prompt = run.info().system_prompt
        except RunDirError:  # the note is advice; an unreadable run.json does not stop its model being served
            system_prompt = None
        if system_prompt:
            err.print(f"note: {run.path} trained with a system prompt that `base` does not add; send it in "
                      f"each request: {system_prompt!r}", highlight=False, soft_wrap=True)
    try:
        base_dir = str(resolve_model(base)) if base else None
        settings = ServeSettings(registry=registry, log=log, base=base_dir, api_key=api_key,
                                 max_tokens_cap=max_tokens, queue_size=queue_size, timeout_s=timeout)
        if make_engine is not None:
            err.print("starting vLLM (a minute or two on CPU)", highlight=False)
        app = create_app(settings, Server(settings, make_engine) if make_engine else None)
    except (ModelError, RegistryError, ValueError, RuntimeError) as e:  # RuntimeError: vLLM did not start
        _fail(str(e))
    server = app.state.server
    if make_engine is not None:
        child = server.engine.child
        err.print(f"vLLM ready in {child.startup_s:.0f} s (log: {child.log_path})", highlight=False, soft_wrap=True)
        for why in server.engine.refused.values():
            err.print(f"note: not served: {why}", highlight=False, soft_wrap=True)
    err.print(f"serving {', '.join(server.model_ids())} on http://{host}:{port}/v1",
              highlight=False, soft_wrap=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        server.engine.stop()  # for vLLM: the child goes with us


def _vllm_engine(command: str | None):
    """The engine factory for --engine vllm; exits 2 when vLLM cannot be started from this Python."""
    import importlib.util
    from functools import partial

    from tunesmith.deploy.serve.vllm_engine import VllmEngine, VllmOptions

    if command is None and importlib.util.find_spec("vllm") is None:
        _fail(f"vLLM is not installed in this Python ({sys.executable}): install it with "
              "`scripts/install.sh --with-vllm`, pass --vllm-command, or use --print and run the command where "
              "vLLM is")
    return partial(VllmEngine, options=VllmOptions(command=shlex.split(command) if command else None))
