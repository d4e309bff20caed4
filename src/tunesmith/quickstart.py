"""`tunesmith quickstart`: the whole pipeline on the embedded default, offline, on a laptop CPU.

generate demo data → check → split (sealed test) → LoRA SFT → evaluate base / prompted /
tuned on format compliance → report.html → summary. Every stage is the same code the
stand-alone commands run; the quickstart only chooses small, CPU-friendly settings.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.demo import legal

# The recipe that forgets: `--show-forgetting` trains with it to show a gate that fails, and why. Every layer
# adapted at a high learning rate on the legal data alone learns the format fast, and the format (numbered
# items, the disclaimer) leaks into every general answer.
FORGETTING_CONFIG: dict[str, Any] = {
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
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear", "layers": None},
    "train": {"max_steps": 64, "batch_size": 4, "lr": 4.0e-3, "warmup_ratio": 0.1, "logging_steps": 2,
              "eval_every": 32, "seed": 0},
    "eval": {"few_shot": 3, "max_new_tokens": 192, "batch_size": 24, "max_examples": 24, "regression": True},
    "output_dir": "runs",
}
# The default: the last 8 layers at a moderate learning rate, with the base model's own answers to general
# prompts as 30% of training (`tunesmith data replay`, data.mix), so the adapter also learns where the format
# does not belong; one validation pass at the end (CPU time). 64 steps of ~4 examples (about 1.2 epochs): at
# 48 the adapter of train seed 1 had not yet learned to stop after the disclaimer (13 of 23 answers ran to the
# token limit, compliance 0.43), while seeds 0 and 2 had.
QUICKSTART_CONFIG: dict[str, Any] = {
    **FORGETTING_CONFIG,
    "lora": {**FORGETTING_CONFIG["lora"], "layers": -8},
    "data": {**FORGETTING_CONFIG["data"], "mix": [{"path": "data/general.jsonl", "weight": 0.3}]},
    "train": {**FORGETTING_CONFIG["train"], "lr": 2.0e-3, "eval_every": None},
}
DEMO_EXAMPLES = 240
# What differs for one embedded model, laid over either recipe above (then `settings` over that).
# gemma3-270m is the pretrained base: its own answers to the replay prompts never stop (each runs to the token
# limit through a 262k-token output layer: measured over 13 minutes on a busy 2-core CPU before it was stopped),
# so replay would cost most of the run and mix truncated continuations into training.
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    "gemma3-270m": {"data": {"mix": []}},
}


def model_recipe(model: str | None) -> dict[str, Any]:
    """The changes MODEL_RECIPES makes for `model` (an embedded model's name; {} for anything else)."""
    from tunesmith.models import embedded_name

    return MODEL_RECIPES.get(embedded_name(model or "") or "", {})


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A new config: `base` deep-copied (a run edits its config, e.g. drops an empty mix), `changes` laid over."""
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_quickstart(
    out: Path,
    console: Console,
    show_progress: bool = True,
    settings: dict[str, Any] | None = None,
    examples: int = DEMO_EXAMPLES,
    show_forgetting: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """Run every stage into `out`; `settings` override the recipe (tests use a tiny model).
    `show_forgetting`: train with FORGETTING_CONFIG (no replay) instead of QUICKSTART_CONFIG.
    `model`: another base model (an embedded name such as gemma3-270m, a directory or a .gguf file)."""
    from tunesmith.config import load_config
    from tunesmith.data.check import check
    from tunesmith.data.clean import clean, write_clean
    from tunesmith.data.split import write_split
    from tunesmith.evaluate.notes import eval_notes
    from tunesmith.evaluate.runner import evaluate_run
    from tunesmith.models import resolve_model
    from tunesmith.report.eval_report import render_eval_report
    from tunesmith.train.recipe import train

    from tunesmith.evaluate.generate import set_cpu_threads

    started = time.time()
    threads = set_cpu_threads()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    console.rule("[bold]1. data")
    recipe = _merge(FORGETTING_CONFIG if show_forgetting else QUICKSTART_CONFIG, model_recipe(model))
    config = _merge(recipe, settings or {})
    if model:  # config.yaml is written into `out`: a relative path would be read from there
        config["model"] = str(Path(model).resolve()) if Path(model).exists() else model
    replay = bool(config["data"].get("mix"))
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
    seconds: dict[str, float] = {"data": time.time() - started}
    t = time.time()
    base = resolve_model(config["model"])
    console.print(f"{escape(config['model'])} ready at {base} ({time.time() - t:.1f}s)")
    seconds["model"] = time.time() - t
    if replay:
        t = time.time()
        _write_replay(config, data_dir / "general.jsonl", console, show_progress)
        seconds["replay"] = time.time() - t

    console.rule("[bold]3. train")
    cfg_path = out / "config.yaml"
    cfg_path.write_text(
        "# The quickstart's run config: copy it and change model/data to start your own.\n"
        + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    cfg = load_config(cfg_path)
    result = train(cfg, force=True, console=console, show_progress=show_progress)

    seconds["train"] = result.train_seconds

    console.rule("[bold]4. evaluate")
    t = time.time()
    results = evaluate_run(result.run_dir, console=console, show_progress=show_progress)
    seconds["eval"] = time.time() - t
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
        "seed": config["train"]["seed"],
        "gate": results["gate"],
        "torch_threads": threads,
        "lost_items": [c for c in (results["regression"] or {}).get("changed", []) if c["change"] == "lost"],
        "base_model_kind": results["base_model_kind"],
        "stops": results["stops"],
        "regression": _regression_rates(results["regression"]),
        "notes": eval_notes(results),
        # where the time went: stages here, and inside eval each system's generation and the suite
        "seconds": {k: round(v, 1) for k, v in seconds.items()} | {
            f"eval.{k}": v for k, v in results["timings"].items()},
        "run_dir": str(result.run_dir),
        "report": str((out / "report.html").resolve()),
    }
    return summary


def _regression_rates(reg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The suite's pass rates, base and tuned, overall and per category (every other number is in results.json)."""
    if not reg:
        return None
    rows = {"overall": reg["overall"]} | reg["by_category"]
    return {name: {"base": round(r["base"], 4), "tuned": round(r["tuned"], 4), "n": r["n"], "verdict": r["verdict"]}
            for name, r in rows.items()}


def _write_replay(config: dict[str, Any], path: Path, console: Console, show_progress: bool) -> None:
    """The base model answers the shipped general prompts; with no usable answer the mix is left out."""
    from tunesmith.data.formats import write_jsonl
    from tunesmith.data.replay import cached_self_distill, general_prompts

    t = time.time()
    result, origin = cached_self_distill(config["model"], general_prompts(), console=console,
                                         show_progress=show_progress)
    write_jsonl(result.records, path)
    console.print(f"replay: {len(result.records)} general answers of the base model in {path} "
                  f"({len(result.empty)} empty left out; {origin}, {time.time() - t:.1f}s)")
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
    color = {"PASS": "green", "FAIL": "red"}.get(gate.get("verdict"), "yellow")
    console.print(f"promotion gate: [bold {color}]{gate.get('verdict')}[/]")
    for reason in gate.get("reasons", []):
        tone = "green" if reason.startswith("ok") else "red" if reason.startswith("FAIL") else "yellow"
        console.print(f"  [{tone}]{escape(reason)}[/]")
    for note in summary.get("notes", []):
        console.print(f"  [yellow]note:[/] {escape(note)}")
    lost = summary.get("lost_items", [])
    if gate.get("regression_flagged"):
        console.print(f"  [yellow]forgetting:[/] the tuned model lost {len(lost)} suite items the base passed, e.g.:")
        for item in lost[:5]:
            console.print(f"    {escape(item['id'])}: {escape(item['prompt'])}\n      base:  {escape(item['base'][:80])!r}"
                          f"\n      tuned: {escape(item['tuned'][:80])!r}")
        console.print("  [yellow]hint:[/] mix the base model's own general answers into training "
                      "(`tunesmith data replay -o general.jsonl`, then `data.mix: [{path: general.jsonl, weight: "
                      "0.3}]`, as the default quickstart does), lower the learning rate or adapt fewer layers, then "
                      "evaluate again. Every lost item is in the report.")
    console.print("time: " + ", ".join(f"{k} {v}s" for k, v in summary.get("seconds", {}).items()))
    console.print(f"train {summary['train_seconds']}s, total {summary['total_seconds']}s")
    console.print(f"report: {summary['report']}")
    console.print(f"run:    {summary['run_dir']}")


def dumps(summary: dict[str, Any]) -> str:
    return json.dumps(summary, ensure_ascii=False)
