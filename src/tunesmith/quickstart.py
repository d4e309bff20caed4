"""`tunesmith quickstart`: the whole pipeline on the embedded default, offline, on a laptop CPU.

generate demo data → check → split (sealed test) → LoRA SFT → evaluate base / prompted /
tuned on format compliance → report.html → summary. Every stage is the same code the
stand-alone commands run; the quickstart only chooses small, CPU-friendly settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.demo import legal

# CPU budget: about 5 minutes of training and generation on 2 cores. The rules are learnt
# from ~120 examples; adapting only the last layers keeps backward cheap on a CPU.
QUICKSTART_CONFIG: dict[str, Any] = {
    "name": "legal-bot",
    "model": "smollm2-135m-instruct",
    "method": "lora",
    "data": {
        "train": "data/train.jsonl",
        "val": "data/val.jsonl",
        "test": "data/test.jsonl",
        "rules": "data/rules.yaml",
        "max_seq_len": 512,
    },
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear", "layers": -8},
    "train": {"max_steps": 40, "batch_size": 4, "lr": 2.0e-3, "warmup_ratio": 0.1, "logging_steps": 2,
              "eval_every": 20, "seed": 0},
    "eval": {"few_shot": 3, "max_new_tokens": 192, "batch_size": 24, "max_examples": 24, "regression": True},
    "output_dir": "runs",
}
DEMO_EXAMPLES = 240
# `--replay`: the base model's own answers to general prompts make up 30% of training (data.mix), at half
# the learning rate for 60 steps. Measured on the embedded default over train seeds 0, 1, 2: regression
# overall 40% -> 36.7, 30, 30% (without replay: 23.3, 26.7, 23.3%), compliance 0.91, 0.82, 1.00 (without:
# 1.00, 0.95, 1.00); the format category still drops (the disclaimer habit leaks into JSON-only answers),
# so the strict gate still fails.
REPLAY_SETTINGS: dict[str, Any] = {"data": {"mix": [{"path": "data/general.jsonl", "weight": 0.3}]},
                                   "train": {"max_steps": 60, "lr": 1.0e-3}}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_quickstart(
    out: Path,
    console: Console,
    show_progress: bool = True,
    settings: dict[str, Any] | None = None,
    examples: int = DEMO_EXAMPLES,
    replay: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """Run every stage into `out`; `settings` override QUICKSTART_CONFIG (tests use a tiny model).
    `replay`: mix self-distilled general answers of the base model into training against forgetting.
    `model`: another base model (an embedded name such as gemma3-270m, a directory or a .gguf file)."""
    from tunesmith.config import load_config
    from tunesmith.data.check import check
    from tunesmith.data.clean import clean, write_clean
    from tunesmith.data.split import write_split
    from tunesmith.evaluate.runner import evaluate_run
    from tunesmith.models import resolve_model
    from tunesmith.report.eval_report import render_eval_report
    from tunesmith.train.recipe import train

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    console.rule("[bold]1. data")
    config = _merge(QUICKSTART_CONFIG, REPLAY_SETTINGS) if replay else dict(QUICKSTART_CONFIG)
    config = _merge(config, settings or {})
    if model:  # config.yaml is written into `out`: a relative path would be read from there
        config["model"] = str(Path(model).resolve()) if Path(model).exists() else model
    raw, rules_path = legal.write(data_dir, n=examples, seed=0)
    report = check(raw, rules=rules_path)
    violations = sum(len(v) for v in report["rule_violations"].values())
    console.print(
        f"{raw}: {report['records']} records, {report['valid']} valid, {len(report['invalid'])} invalid, "
        f"{report['exact_duplicates']} exact and {report['near_duplicates']} near duplicates, "
        f"{violations} rule violations"
    )
    cleaned = clean([raw], rules=rules_path, drop_near_dups=True, drop_violations=True)
    write_clean(cleaned, data_dir / "clean.jsonl", data_dir / "rejected.jsonl")
    counts = cleaned.summary()
    console.print(f"clean: read {counts['read']} = kept {counts['kept']} + rejected {counts['rejected']} "
                  f"{counts['rejected_by_reason'] or ''} (reasons in {data_dir / 'rejected.jsonl'})")
    manifest = write_split(cleaned.kept, data_dir, ratios=(0.8, 0.1, 0.1), seed=0)
    console.print("split: " + ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()))

    console.rule("[bold]2. model")
    t = time.time()
    base = resolve_model(config["model"])
    console.print(f"{escape(config['model'])} ready at {base} ({time.time() - t:.1f}s)")
    if replay:
        _write_replay(config, data_dir / "general.jsonl", console, show_progress)

    console.rule("[bold]3. train")
    cfg_path = out / "config.yaml"
    cfg_path.write_text(
        "# The quickstart's run config: copy it and change model/data to start your own.\n"
        + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    cfg = load_config(cfg_path)
    result = train(cfg, force=True, console=console, show_progress=show_progress)

    console.rule("[bold]4. evaluate")
    results = evaluate_run(result.run_dir, console=console, show_progress=show_progress)
    report_path = render_eval_report(results, result.run_dir / "report.html")
    (out / "report.html").write_text(Path(report_path).read_text(encoding="utf-8"), encoding="utf-8")

    systems = results["systems"]
    summary = {
        name: {
            "compliance": systems[name]["metrics"]["compliance"]["all"],
            "per_rule": {k: v for k, v in systems[name]["metrics"]["compliance"].items() if k != "all"},
            "rouge_l": systems[name]["metrics"].get("rouge_l"),
        }
        for name in systems
    }
    summary |= {
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "test_examples": results["test"]["n"],
        "gate": results["gate"],
        "run_dir": str(result.run_dir),
        "report": str((out / "report.html").resolve()),
    }
    return summary


def _write_replay(config: dict[str, Any], path: Path, console: Console, show_progress: bool) -> None:
    """The base model answers the shipped general prompts; with no usable answer the mix is left out."""
    from tunesmith.data.formats import write_jsonl
    from tunesmith.data.replay import general_prompts, self_distill

    t = time.time()
    result = self_distill(config["model"], general_prompts(), console=console, show_progress=show_progress)
    write_jsonl(result.records, path)
    console.print(f"replay: {len(result.records)} general answers of the base model in {path} "
                  f"({len(result.empty)} empty left out, {time.time() - t:.1f}s)")
    if not result.records:
        config["data"].pop("mix", None)
        console.print("[yellow]replay:[/] no usable answer, so nothing is mixed into training")


def print_summary(summary: dict[str, Any], console: Console) -> None:
    systems = [s for s in ("base", "prompted", "tuned") if s in summary]
    rules = list(summary[systems[0]]["per_rule"]) if systems else []
    table = Table(title=f"format compliance on {summary['test_examples']} sealed test examples")
    table.add_column("rule")
    for s in systems:
        table.add_column(s, justify="right")
    for r in rules:
        table.add_row(r, *[f"{summary[s]['per_rule'][r]:.0%}" for s in systems])
    table.add_row("[bold]all rules[/]", *[f"[bold]{summary[s]['compliance']:.0%}[/]" for s in systems])
    console.print(table)
    gate = summary.get("gate") or {}
    verdict = "[green]PASS[/]" if gate.get("passed") else "[red]FAIL[/]"
    console.print(f"promotion gate: {verdict}")
    for reason in gate.get("reasons", []):
        console.print(f"  {'[green]' if reason.startswith('ok') else '[red]'}{escape(reason)}[/]")
    if gate.get("regression_flagged"):
        console.print("  [yellow]hint:[/] the tuned model lost general ability (catastrophic forgetting); the "
                      "lost items are in the report. Mix the base model's own general answers into training "
                      "(`tunesmith data replay -o general.jsonl`, then `data.mix: [{path: general.jsonl, weight: "
                      "0.3}]`; `tunesmith quickstart --replay` shows it), lower the learning rate or adapt fewer "
                      "layers, then evaluate again.")
    console.print(f"train {summary['train_seconds']}s, total {summary['total_seconds']}s")
    console.print(f"report: {summary['report']}")
    console.print(f"run:    {summary['run_dir']}")


def dumps(summary: dict[str, Any]) -> str:
    return json.dumps(summary, ensure_ascii=False)
