"""`tunesmith eval` commands that need no model: score saved outputs, judge them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.clikit import fail as _fail
from tunesmith.evaluate.score import TASKS, ScoreError, join_ids, read_outputs, score_predictions
from tunesmith.rules import RulesError, load_rules

class _RunByDefault(TyperGroup):
    """`tunesmith eval RUN_DIR …` means `tunesmith eval run RUN_DIR …`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Evaluate systems: base vs prompted vs tuned on a run (`eval RUN_DIR`), score saved outputs, judge them.\n\n"
    "Example: tunesmith eval runs/legal-bot --regression --gate",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

_out = Console()
_err = Console(stderr=True)


@app.command()
def score(
    predictions: Path = typer.Option(..., "--predictions", "-p", help="JSONL of {\"id\", \"output\"} from the system."),
    references: Optional[Path] = typer.Option(
        None, "--references", "-r", help="JSONL of {\"id\", \"output\"} expected answers (optional for compliance)."
    ),
    task: str = typer.Option(..., "--task", "-t", help=f"One of: {', '.join(TASKS)}."),
    rules: Optional[Path] = typer.Option(
        None, "--rules", help="Rules YAML; adds format compliance to any task (required for compliance)."
    ),
    ignore_case: bool = typer.Option(False, "--ignore-case", help="Classification: compare labels case-insensitively."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Score one system's saved outputs against references. No model is loaded.

    Lines are joined by id; every id must appear in both files exactly once.

    Example: tunesmith eval score -p tuned.jsonl -r test_refs.jsonl --task classification --json
    """
    try:
        ruleset = load_rules(rules) if rules else None
        result = score_predictions(predictions, references, task, ruleset, ignore_case=ignore_case)  # type: ignore[arg-type]
    except (ScoreError, RulesError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_scores(task, result)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _print_scores(task: str, result: dict[str, Any]) -> None:
    summary = Table(title=f"{task} — {result['n']} examples", show_header=True)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in ("accuracy", "macro_f1", "json_valid_rate", "field_accuracy_mean", "rouge_l", "exact_match"):
        if key in result:
            summary.add_row(key, f"{result[key]:.4f}")
    if "compliance" in result:
        summary.add_row("compliance (all rules)", _pct(result["compliance"]["all"]))
    _out.print(summary)
    if "per_class" in result:
        t = Table(title="per class")
        for col in ("label", "precision", "recall", "f1", "support"):
            t.add_column(col, justify="left" if col == "label" else "right")
        for label, row in result["per_class"].items():
            t.add_row(escape(label) if label.strip() else "(empty answer)", f"{row['precision']:.4f}",
                      f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
        _out.print(t)
    for key, title, column, value in (("field_accuracy", "field accuracy", "field", "accuracy"),
                                      ("compliance", "format compliance", "rule", "pass rate")):
        if key in result:
            t = Table(title=title)
            t.add_column(column)
            t.add_column(value, justify="right")
            for name, rate in result[key].items():
                t.add_row(escape(name), _pct(rate))
            _out.print(t)


def _read_rubric(path: Optional[Path]) -> Optional[str]:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        _fail(f"{path}: cannot read rubric: {e.strerror}")
    except UnicodeDecodeError:
        _fail(f"{path}: cannot read rubric: not UTF-8 text")
    if not text:  # silently grading with the default rubric would hide the mistake
        _fail(f"{path}: the rubric file is empty")
    return text


@app.command()
def judge(
    predictions: Path = typer.Option(
        ..., "--predictions", "-p", help="JSONL of {\"id\", \"output\", \"prompt\"?} to grade."
    ),
    base_url: str = typer.Option(..., "--base-url", help="OpenAI-compatible endpoint of the judge, e.g. http://127.0.0.1:8000/v1."),
    model: str = typer.Option(..., "--model", help="Judge model name."),
    references: Optional[Path] = typer.Option(
        None, "--references", "-r", help="JSONL of {\"id\", \"output\", \"prompt\"?}: reference answers shown to the judge."
    ),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Name of the env var holding the API key."),
    rubric_file: Optional[Path] = typer.Option(None, "--rubric", help="Text file with the rubric (default: a general one)."),
    retries: int = typer.Option(2, "--retries", min=0, help="Re-asks when the judge's reply is not the JSON verdict."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight at once."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds to wait for one judge reply."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Grade outputs 1-5 with an LLM judge; unparseable verdicts are counted, not guessed.

    Each item needs a prompt: a "prompt" field on the reference line or the prediction line.

    Example: tunesmith eval judge -p tuned.jsonl -r refs.jsonl --base-url http://127.0.0.1:8000/v1 --model judge --json
    """
    from tunesmith.evaluate.judge import JudgeConfig, JudgeError, judge as run_judge

    try:
        preds = read_outputs(predictions)
        refs = read_outputs(references) if references else {}
        if references:
            join_ids(preds, refs, predictions, references)  # an unanswered reference must not vanish from the mean
    except ScoreError as e:
        _fail(str(e))
    rubric = _read_rubric(rubric_file)
    items = []
    for key, row in preds.items():
        ref = refs.get(key, {})
        prompt = next((r["prompt"] for r in (ref, row) if isinstance(r.get("prompt"), str)), None)  # null = absent
        if not isinstance(prompt, str):
            _fail(f"id {key!r}: no 'prompt' on the prediction or reference line")
        output = row["output"] if isinstance(row["output"], str) else json.dumps(row["output"])
        reference = ref.get("output")
        items.append(
            {
                "id": row["id"],
                "prompt": prompt,
                "output": output,
                "reference": None if reference is None else reference if isinstance(reference, str) else json.dumps(reference),
            }
        )
    config = JudgeConfig(
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        retries=retries,
        concurrency=concurrency,
        timeout_s=timeout,
        **({"rubric": rubric} if rubric else {}),
    )
    try:
        result = run_judge(items, config)
    except JudgeError as e:
        _fail(str(e), code=1)
    if as_json:
        typer.echo(json.dumps(result))
        return
    t = Table(title=f"judge {model} — {result['n']} items")
    t.add_column("metric")
    t.add_column("value", justify="right")
    mean = result["mean_score"]
    t.add_row("mean score (1-5)", "n/a" if mean is None else f"{mean:.2f}")
    t.add_row("scored", str(result["scored"]))
    t.add_row("unparseable", str(result["unparseable"]))
    for k, v in result["score_counts"].items():
        t.add_row(f"score {k}", str(v))
    _out.print(t)
    failed = [it for it in result["items"] if it["score"] is None]
    if failed:
        t = Table(title=f"unparseable verdicts (last reply after {retries + 1} attempts)")
        t.add_column("id")
        t.add_column("judge's reply")
        for it in failed:
            reply = it["reason"] if len(it["reason"]) <= 120 else it["reason"][:117] + "..."
            t.add_row(escape(str(it["id"])), escape(reply))
        _out.print(t)


@app.command("run")
def run(
    run_or_config: Path = typer.Argument(..., help="A run directory, or the run config YAML that names it."),
    test: Optional[Path] = typer.Option(None, "--test", help="Test file (default: data.test of the run's config)."),
    systems: Optional[str] = typer.Option(
        None, "--systems", help="Comma-separated systems to compare (default: eval.systems of the run's config)."
    ),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules YAML (default: data.rules of the config)."),
    regression: bool = typer.Option(False, "--regression", help="Also run the general-prompt regression suite."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible endpoint of an LLM judge."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model name."),
    rubric_file: Optional[Path] = typer.Option(None, "--rubric", help="Rubric text file for the judge."),
    gate: bool = typer.Option(False, "--gate", help="Exit 1 unless the gate's verdict is PASS (FAIL and inconclusive "
                              "exit 1); the verdict is printed either way."),
    margin: float = typer.Option(0.0, "--margin", help="How much tuned must beat the baseline by (gate)."),
    against: Optional[str] = typer.Option(None, "--against", help="System the gate compares tuned with: prompted "
                                          "or an endpoint system's name (default: eval.gate_against)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Generate with base, prompted baseline, tuned model and any endpoint systems on the sealed test split;
    score; gate; report.

    Generations are cached per system and test-file hash, so re-scoring never regenerates; an endpoint's
    answers are cached per request, so a re-run asks only for those that failed.

    Example: tunesmith eval runs/legal-bot --regression --gate

    Example: tunesmith eval runs/legal-bot --gate --against production
    """
    from tunesmith.config import ConfigError, load_config
    from tunesmith.evaluate.runner import SYSTEMS, evaluate_run
    from tunesmith.models import ModelError
    from tunesmith.report.eval_report import render_eval_report

    if (judge_url is None) != (judge_model is None):
        _fail("--judge-url and --judge-model go together")
    rubric = _read_rubric(rubric_file)  # before generating, so a wrong path does not cost a whole evaluation
    run_dir = run_or_config
    if run_or_config.is_file():
        try:
            run_dir = load_config(run_or_config).run_dir
        except ConfigError as e:
            _fail(str(e))
    from tunesmith.rundir import RunDir

    if not RunDir(run_dir).is_run():
        _fail(f"{run_dir}: not a run directory (no run.json); train it first with `tunesmith train`")
    try:
        settings = load_config(run_dir / "config.yaml").eval
    except ConfigError as e:
        _fail(str(e))
    known = [*SYSTEMS, *settings.endpoints()]
    if systems is not None:
        chosen = [s.strip() for s in systems.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in known]
        if unknown or not chosen:
            _fail(f"--systems: unknown {', '.join(unknown) or 'empty'}; choose from {', '.join(known)} "
                  "(endpoint systems are defined in eval.systems of the run's config)")
    else:
        chosen = settings.names()
    named = "--systems" if systems is not None else f"eval.systems of {run_dir / 'config.yaml'}"
    if not chosen:
        _fail(f"{named} is empty; choose from {', '.join(known)}")
    target = against or settings.gate_against
    if against is not None and against not in known:
        _fail(f"--against {against}: no such system; choose from {', '.join(s for s in known if s != 'tuned')}")
    if against == "tuned":
        _fail("--against tuned: the gate compares tuned with another system")
    if against is not None and against not in chosen:
        _fail(f"--against {against}: not among the systems evaluated ({named}: {', '.join(chosen)})")
    if gate and not {"tuned", target} <= set(chosen):
        _fail(f"--gate needs both the tuned and the {target} system in {named}")
    if regression and not {"base", "tuned"} <= set(chosen):
        _fail(f"--regression compares base with tuned; {named} needs both")
    try:
        results = evaluate_run(run_dir, test_path=str(test) if test else None, systems=chosen,
                               rules_path=str(rules) if rules else None, console=_err, margin=margin,
                               regression=regression or None, against=against)
    except (ValueError, RulesError, OSError, ModelError) as e:
        _fail(str(e))
    if judge_url:
        from tunesmith.rundir import EvalResults

        results["judge"] = _judge_systems(results, judge_url, judge_model, rubric)
        RunDir(run_dir).write_results(EvalResults.model_validate(results))
    report = render_eval_report(results, run_dir / "report.html")
    decision = results.get("gate")
    if gate and decision is not None:
        (run_dir / "eval" / "gate.json").write_text(json.dumps(decision, indent=2))
    from tunesmith.evaluate.notes import eval_notes

    notes = eval_notes(results)
    summary = {s: v["metrics"] for s, v in results["systems"].items()} | {
        "task": results["task"], "gate": decision, "regression": results.get("regression"), "notes": notes,
        "judge": {s: {k: v for k, v in j.items() if k != "items"} for s, j in results["judge"].items()}
        if results.get("judge") else None, "report": str(report), "run_dir": str(run_dir),
        "usage": {s: v.get("usage") for s, v in results["systems"].items()},
        "endpoints": {s: v["endpoint"] for s, v in results["systems"].items() if v.get("endpoint")}}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_comparison(results)
        _err.print(f"report: {report}")
    for note in notes:
        _err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if decision is not None:  # the verdict is always shown; --gate only turns it into the exit code
        _print_verdict(decision)
    if gate and not decision["passed"]:
        raise typer.Exit(1)


def _print_verdict(decision: dict[str, Any]) -> None:
    color = {"PASS": "green", "FAIL": "red"}.get(decision["verdict"], "yellow")
    _err.print(f"promotion gate: [bold {color}]{decision['verdict']}[/]")
    for reason in decision["reasons"]:
        tone = "green" if reason.startswith("ok") else "red" if reason.startswith("FAIL") else "yellow"
        _err.print(f"  [{tone}]{escape(reason)}[/]", soft_wrap=True)


def _judge_systems(results: dict[str, Any], url: str, model: str, rubric: Optional[str]) -> dict[str, Any]:
    from tunesmith.evaluate.judge import JudgeConfig, JudgeError, judge as run_judge

    config = JudgeConfig(base_url=url, model=model, **({"rubric": rubric} if rubric else {}))
    out = {}
    for system in results["systems"]:
        items = [{"id": ex["id"], "prompt": ex["prompt"], "output": ex["outputs"][system],
                  "reference": ex["reference"]} for ex in results["examples"]]
        try:
            verdict = run_judge(items, config)
        except JudgeError as e:
            _fail(str(e), code=1)
        out[system] = verdict  # items too: results.json shows which answers scored low or went unparsed
    return out


def _print_comparison(results: dict[str, Any]) -> None:
    systems = list(results["systems"])
    t = Table(title=f"{results['task']} — {results['test']['n']} test examples")
    t.add_column("metric")
    for s in systems:
        t.add_column(s, justify="right")
    first = results["systems"][systems[0]]["metrics"]
    rows: list[tuple[str, list[Any]]] = []
    for key in ("accuracy", "macro_f1", "json_valid_rate", "field_accuracy_mean", "rouge_l", "exact_match"):
        if key in first:
            rows.append((key, [results["systems"][s]["metrics"].get(key) for s in systems]))
    for rule in first.get("compliance", {}):
        rows.append((f"compliance: {rule}", [results["systems"][s]["metrics"]["compliance"][rule] for s in systems]))
    for name, values in rows:
        t.add_row(escape(name), *[_pct(v) if isinstance(v, (int, float)) else "—" for v in values])
    judged = results.get("judge") or {}
    if judged:
        means = [judged.get(s, {}).get("mean_score") for s in systems]
        t.add_row("judge mean (1-5)", *["—" if m is None else f"{m:.2f}" for m in means])
        t.add_row("judge unparseable", *[str(judged.get(s, {}).get("unparseable", "—")) for s in systems])
    usage = [results["systems"][s].get("usage") or {} for s in systems]
    if any(u.get("mean_prompt_tokens") is not None for u in usage):
        for key, label in (("mean_prompt_tokens", "prompt tokens / request"),
                           ("mean_completion_tokens", "completion tokens / request")):
            t.add_row(label, *["—" if u.get(key) is None else f"{u[key]:.1f}" + "*" * (u.get("source") == "estimated")
                               for u in usage])
    _out.print(t)
    if any(u.get("source") == "estimated" for u in usage):
        _out.print("* estimated: the endpoint sent no usage; counted with the run's tokenizer")
    reg = results.get("regression")
    if reg:
        t = Table(title=f"regression suite (base → tuned): {reg['verdict']}")
        for col in ("category", "n", "base", "tuned", "lost", "gained", "p (drop)", "detectable", "verdict"):
            t.add_column(col, justify="left" if col in ("category", "verdict") else "right")
        for name, row in list(reg["by_category"].items()) + [("overall", reg["overall"])]:
            seen = "—" if row["detectable_drop"] is None else _pct(row["detectable_drop"])
            t.add_row(name, str(row["n"]), _pct(row["base"]), _pct(row["tuned"]), str(row["lost"]), str(row["gained"]),
                      f"{row['p_drop']:.3g}", seen, row["verdict"])
        _out.print(t)
