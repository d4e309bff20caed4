"""`tunesmith train` and `tunesmith config`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from tunesmith.clikit import fail as _fail
from tunesmith.config import ConfigError, RunConfig, check_model, dump_config, load_config
from tunesmith.templates import is_template_name

_err = Console(stderr=True)
config_app = typer.Typer(help="Validate run configs and print complete examples.", no_args_is_help=True)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the config, data or machine is unusable as given: a message, never a traceback."""
    from tunesmith.data.formats import DataError as ReadError
    from tunesmith.models import ModelError
    from tunesmith.rules import RulesError
    from tunesmith.train.adapters import MethodError
    from tunesmith.train.dataset import TrainingDataError
    from tunesmith.errors import UserError
    from tunesmith.train.tokenize import TemplateError

    return (ConfigError, ModelError, TrainingDataError, UserError, MethodError, TemplateError, RulesError, ReadError)


def train(
    config: Path = typer.Argument(..., help="Run config YAML (see `tunesmith config example`)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field: --set train.lr=1e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Train again even if the run is finished."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Fine-tune a model as the config says; writes a run directory.

    Re-running a finished run does nothing unless --force; --resume continues an interrupted one from its last checkpoint (set train.save_every).

    Several GPUs or nodes: accelerate launch --config_file examples/accelerate/fsdp.yaml -m tunesmith.train CONFIG

    Several CPU processes: python -m torch.distributed.run --nproc_per_node 2 -m tunesmith.train CONFIG

    Example: tunesmith train examples/legal-bot.yaml --set train.epochs=2
    """
    from tunesmith.train.recipe import is_main_process, train as run_train

    try:
        cfg = load_config(config, set_ or [])
        result = run_train(cfg, resume=resume, force=force, console=_err)
    except user_errors() as e:
        _fail(str(e))
    if not is_main_process():
        return  # under torchrun/accelerate every process gets here; one report is enough
    summary = {"run_dir": str(result.run_dir), "skipped": result.skipped,
               "train_seconds": round(result.train_seconds, 2),
               "final_train_loss": result.final_train_loss, "final_eval_loss": result.final_eval_loss,
               "data": result.encode_report, "real_tokens_per_s": result.real_tokens_per_s,
               "final_reward": result.final_reward}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        losses = [f"{name} loss {v:.4f}" for name, v in (("train", result.final_train_loss),
                                                         ("val", result.final_eval_loss)) if v is not None]
        reward = [f"reward {result.final_reward:.3f}"] if result.final_reward is not None else []
        speed = [f"{result.real_tokens_per_s:,.0f} real tokens/s"] if result.real_tokens_per_s else []
        details = f" ({', '.join(losses + reward + speed)})" if losses or reward or speed else ""
        _err.print(f"[green]done[/]: {result.run_dir}{details}")


@config_app.command("validate")
def validate(
    config: Path = typer.Argument(..., help="Run config YAML."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a field before validating."),
) -> None:
    """Check a config: fields, types, files that must exist, the model as `train` resolves it (a GGUF is
    converted once). Prints the resolved config.

    Example: tunesmith config validate examples/legal-bot.yaml
    """
    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as e:
        _fail(str(e))
    d = cfg.data
    files = [("train", d.train), ("val", d.val), ("test", d.test), ("rules", d.rules)]
    files += [(f"mix[{i}].path", m.path) for i, m in enumerate(d.mix)]
    if d.chat_template and not is_template_name(d.chat_template):
        files.append(("chat_template", d.chat_template))
    missing = [f"data.{k}: {v}" for k, v in files if v and not Path(v).is_file()]
    if missing:
        _fail("files not found (or not a file): " + "; ".join(missing))
    try:
        notes = check_model(cfg, str(config))
    except ConfigError as e:
        _fail(str(e))
    for note in notes:
        _err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    typer.echo(dump_config(cfg), nl=False)


@config_app.command("example")
def example(
    method: str = typer.Option("lora", "--method", help="lora | qlora | full | prompt_tuning | prefix_tuning."),
) -> None:
    """Print a complete config with every field and its documented default.

    Example: tunesmith config example --method qlora > my-run.yaml
    """
    from typing import get_args

    methods = get_args(RunConfig.model_fields["method"].annotation)
    if method not in methods:
        _fail(f"--method {method!r}: choose one of {', '.join(methods)}")
    cfg = RunConfig.model_validate({"method": method})
    typer.echo(commented_yaml(cfg), nl=False)


def commented_yaml(cfg: RunConfig) -> str:
    """The config as YAML with each field's description as a comment above it."""
    from pydantic import BaseModel

    lines: list[str] = []

    def emit(model: BaseModel, indent: int) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            pad = "  " * indent
            if field.description:
                lines.append(f"{pad}# {field.description}")
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:")
                emit(value, indent + 1)
            else:
                dumped = json.dumps(value.model_dump() if isinstance(value, BaseModel) else
                                    [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
                                    if isinstance(value, list) else value)
                lines.append(f"{pad}{name}: {dumped}")

    emit(cfg, 0)
    return "\n".join(lines) + "\n"
