"""The `tunesmith` command: a thin typer app. Each stage registers its own sub-app."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.console import Console

from tunesmith.data.cli import app as data_app
from tunesmith.deploy.cli import export_app, flywheel_app, registry_app, serve
from tunesmith.evaluate.cli import app as eval_app
from tunesmith.plan.cli import app as plan_app
from tunesmith.train.cli import config_app, train
from tunesmith.train.render import render
from tunesmith.ui.cli import ui

# Deprecation notices that transformers raises about its own internal calls are noise to a user.
warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6.*", category=FutureWarning)

app = typer.Typer(
    name="tunesmith",
    help="Decide, prepare data, train, evaluate, deploy and account for a fine-tuned model.\n\n"
    "Start with:  tunesmith quickstart",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
app.add_typer(plan_app, name="plan")
data_app.command("render")(render)
app.add_typer(data_app, name="data")
app.command("train")(train)
app.add_typer(config_app, name="config")
app.add_typer(eval_app, name="eval")
app.add_typer(registry_app, name="registry")
app.add_typer(export_app, name="export")
app.command("serve")(serve)
app.add_typer(flywheel_app, name="flywheel")
app.command("ui")(ui)


@app.command()
def quickstart(
    out: Path = typer.Option(Path("tunesmith-quickstart"), "--out", help="Folder for data, run and report."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object on stdout."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    show_forgetting: bool = typer.Option(
        False, "--show-forgetting", help="Train with the over-eager recipe (no replay, high learning rate) to see "
        "the gate fail on forgetting and which general items were lost."),
    model: str | None = typer.Option(None, "--model", help="Base model: an embedded name (smollm2-135m-instruct, "
                              "gemma3-270m), a local model directory or a .gguf file."),
    seed: int = typer.Option(0, "--seed", help="Training seed (data order, LoRA init); the demo data and its "
                             "split stay the same, so runs with different seeds are comparable."),
) -> None:
    """Run the whole pipeline offline on the embedded default model, on a CPU, in a few minutes.

    Demo data (a law firm's support bot) → check → split → LoRA fine-tune of SmolLM2-135M-Instruct (or
    --model) → base vs prompted vs tuned on format compliance → report.html.

    Example: tunesmith quickstart --out /tmp/qs --json --seed 1
    """
    from tunesmith.quickstart import dumps, print_summary, run_quickstart

    console = Console(stderr=True)
    summary = run_quickstart(out, console, show_progress=not no_progress, show_forgetting=show_forgetting,
                             model=model, settings={"train": {"seed": seed}})
    if as_json:
        typer.echo(dumps(summary))
    else:
        print_summary(summary, Console())


def main() -> None:  # pragma: no cover - console entry point
    app()
