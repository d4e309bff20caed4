"""`tunesmith serve`: the embedded engine, or vLLM as a child process, behind one OpenAI-compatible front."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tunesmith.clikit import fail as _fail
from tunesmith.deploy.cli_common import RegistryOpt, _open, err
from tunesmith.deploy.registry import RegistryError

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
             "('/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server'); default: this Python's vLLM, else "
             "the .venv-vllm beside this venv (scripts/install.sh --with-vllm).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Largest max_tokens a request may ask.")] = 1024,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1, help="Requests in flight before 429.")] = 64,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds a request waits for its next output "
                                                                    "before it is answered 503.")] = 300,
    log: Annotated[Optional[Path], typer.Option("--log", help="Request log (default: requests.db beside the "
                                                               "registry).")] = None,
    check: Annotated[int, typer.Option("--check", min=0, help="With --engine vllm: once vLLM is up, decode this many "
                                       "test-split prompts of each aliased version (else the newest of each name) "
                                       "through it and through the adapter in this process, and say how many "
                                       "answers are identical. 0: skip.")] = 3,
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
        from tunesmith.deploy.servability import command_findings
        from tunesmith.deploy.vllm import vllm_command

        reg = _open(registry)
        try:
            argv, notes = vllm_command(reg, host, port, api_key)
            findings = command_findings(reg, argv)  # what plain vLLM would do unlike tunesmith (stops, template)
        except RegistryError as e:
            _fail(str(e))
        for note in notes:
            err.print(f"note: {note}", highlight=False)
        for f in findings:
            err.print(f"{f.level} ({f.code}): {f.message}", highlight=False, soft_wrap=True)
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
        if check:
            _startup_parity(server, check)
    err.print(f"serving {', '.join(server.model_ids())} on http://{host}:{port}/v1",
              highlight=False, soft_wrap=True)
    # uvicorn shuts down on SIGTERM, then raises it again under the handler it found: with the default one the
    # process dies there and `finally` never runs (a vLLM child then only goes by its parent-death signal)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        server.engine.stop()  # for vLLM: the child goes with us
        signal.signal(signal.SIGTERM, previous)
        err.print("stopped", highlight=False)


def _startup_parity(server, n: int) -> None:
    """The running vLLM against the adapters it serves, on a few prompts: what `export verify` would say, said
    before the first user request, so a runtime that answers differently is known at start-up."""
    from tunesmith.deploy.merge import answer_limit, parity_cases
    from tunesmith.deploy.parity import verify_runtimes

    reg, engine = server.registry, server.engine
    served = [v for v in reg.versions() if v.id not in engine.refused
              and str(Path(v.base_model).resolve()) == str(Path(server.base).resolve())]
    aliased = {vid for a in reg.aliases() for vid, _ in a.targets}
    newest = {v.name: v for v in sorted(served, key=lambda v: v.number)}
    for v in [v for v in served if v.id in aliased] or list(newest.values()):
        try:
            cases = parity_cases(v, n)
            report = verify_runtimes(v, reg.path, ["vllm"], cases, max_new_tokens=answer_limit(v, cases),
                                     running_vllm=engine)[0]
        except Exception as e:  # a check that cannot run must not stop a server that can
            err.print(f"warning: start-up parity of {v.id} could not run ({type(e).__name__}: {e})",
                      highlight=False, soft_wrap=True)
            continue
        said = (f"start-up parity, {v.id}: {report.identical}/{report.prompts} answers identical to the adapter's "
                f"({report.weight_type})")
        if report.passed:
            err.print(said, highlight=False, soft_wrap=True)
        else:
            err.print(f"warning: {said}, below the bar ({report.rule}); see "
                      f"`tunesmith export verify {v.id} --runtimes vllm`", highlight=False, soft_wrap=True)


def _vllm_engine(command: str | None):
    """The engine factory for --engine vllm; exits 2 when vLLM cannot be started from this Python."""
    from functools import partial

    from tunesmith.deploy.serve.vllm_engine import VllmEngine, VllmOptions, find_command, own_venv

    argv = find_command(command)
    if argv is None:
        _fail(f"vLLM is not installed in this Python ({sys.executable}) nor in {own_venv()}: "
              "install it with `scripts/install.sh --with-vllm`, pass --vllm-command, or use --print and run the "
              "command where vLLM is")
    err.print(f"vLLM: {shlex.join(argv)}", highlight=False, soft_wrap=True)
    return partial(VllmEngine, options=VllmOptions(command=argv))
