"""A small world for the UI tests and the load benchmark, built without torch in well under a second:
run directories written through `tunesmith.rundir`, fake adapter files (the registry copies bytes,
it never loads them) and a registry with two versions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.deploy.registry import Registry
from tunesmith.evaluate.gate import decide
from tunesmith.evaluate.regression import compare_regression, load_suite, score_regression
from tunesmith.rundir import EvalResults, RunDir

PROMPTS = ["Can I break my lease early?", "Is a verbal contract binding?", "What is a tort?", "Who pays the deposit?"]
DISCLAIMER = "Not legal advice."


@dataclass
class World:
    root: Path
    runs: Path
    registry: Path
    passed_version: str
    failed_version: str


def _outputs(system: str, i: int) -> str:
    prompt = PROMPTS[i % len(PROMPTS)]
    if system == "base":
        return f"Well, {prompt.lower()} I guarantee it depends on many things.\nAsk someone."
    if system == "prompted":
        return f"It depends on the contract. {DISCLAIMER}" if i % 2 else "It depends on the contract."
    return f"Usually yes, check clause {i}. {DISCLAIMER}" + (" word" * 200 if i == 3 else "")


def results(n_examples: int, gate_passes: bool) -> EvalResults:
    systems = ("base", "prompted", "tuned")
    examples, rates = [], {s: {"disclaimer": 0, "short": 0, "no_promises": 0, "all": 0} for s in systems}
    for i in range(n_examples):
        outs = {s: _outputs(s, i) for s in systems}
        passes = {s: {"disclaimer": o.rstrip().endswith(DISCLAIMER), "short": len(o.split()) <= 40,
                      "no_promises": "guarantee" not in o.lower()} for s, o in outs.items()}
        for s in systems:
            for rule, ok in passes[s].items():
                rates[s][rule] += ok
            rates[s]["all"] += all(passes[s].values())
        examples.append({"id": i + 1, "line": i + 1, "prompt": PROMPTS[i % len(PROMPTS)],
                         "reference": f"Usually yes, check clause {i}. {DISCLAIMER}", "outputs": outs,
                         "passes": passes, "cut_off": {"tuned": i == 3}})
    scores = {s: {"n": n_examples, "rouge_l": 0.3 + 0.2 * k,
                  "compliance": {r: v / n_examples for r, v in rates[s].items()}} for k, s in enumerate(systems)}
    # the base answers every suite item right; the planted forgetting: the tuned model loses all of arithmetic
    right = {it["id"]: it["reference"] if it["kind"] == "generate" else it["answer"] for it in load_suite()}
    base = score_regression(right)
    tuned = base if gate_passes else score_regression(
        {i: "x" if i.startswith("arithmetic-") else a for i, a in right.items()})
    reg = compare_regression(base, tuned)
    gate = decide("compliance", scores, reg)
    return EvalResults(task="compliance", title="legal: base vs prompted vs tuned",
                       test={"path": "test.jsonl", "n": n_examples}, few_shot=3,
                       systems={s: {"metrics": m} for s, m in scores.items()}, examples=examples,
                       regression=reg, gate=gate)


RULES = (f"rules:\n  - name: disclaimer\n    ends_with: \"{DISCLAIMER}\"\n  - name: short\n    max_words: 40\n"
         "  - name: no_promises\n    forbidden: [guarantee]\n")


def _chat(q: str, a: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"


def write_data(run: RunDir) -> dict:
    """train (13 records, one invalid line, one answer without the disclaimer) and val (3 records: an exact
    and a near copy of train records): the manifest run.json records for them."""
    train = [_chat(f"Question {i} about leases and deposits, case {i}?", f"Answer {i}. {DISCLAIMER}")
             for i in range(12)]
    train[5] = _chat("Question 5 about leases and deposits, case 5?", "Answer 5 without the disclaimer.")
    train.insert(7, "{not json\n")
    long_q = ("My landlord kept the whole deposit after I moved out of the flat in March, and says the carpet "
              "was worn and the walls needed painting after three years of tenancy. Can they do that?")
    long_a = f"They may deduct for damage beyond fair wear and tear only, and must itemise it. {DISCLAIMER}"
    train.append(_chat(long_q, long_a))
    val = [train[2], _chat("A question only val has?", f"Its answer. {DISCLAIMER}"),
           _chat(long_q.replace("March", "April"), long_a)]
    manifest = {}
    for split, lines in (("train", train), ("val", val)):
        path = run.write_text(f"data/{split}.jsonl", "".join(lines))
        manifest[split] = {"path": f"data/{split}.jsonl", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                           "count": len(lines)}
    run.write_text("rules.yaml", RULES)
    return manifest


def make_run(runs: Path, name: str, status: str = "finished", n_examples: int = 12, gate_passes: bool = False,
             steps: int = 20) -> RunDir:
    run = RunDir(runs / name)
    run.path.mkdir(parents=True)
    run.write_info({"name": name, "status": status, "method": "lora", "objective": "sft",
                    "base_model": "/models/smollm2-135m-instruct", "created": "2026-12-01T10:00:00+00:00",
                    "data": write_data(run), "rules": "rules.yaml",
                    "global_step": steps if status == "finished" else None,
                    "final_train_loss": 0.91 if status == "finished" else None,
                    "final_eval_loss": 1.02 if status == "finished" else None, "train_seconds": 42.0})
    run.write_text("config.yaml", f"name: {name}\nlora:\n  r: 8\n  alpha: 16\ntrain:\n  lr: 0.0002\n  epochs: 2\n")
    rows = [{"step": s, "epoch": s / 10, "loss": 2.5 / s ** 0.5, "learning_rate": 2e-4 * (1 - s / (steps + 1)),
             "grad_norm": 1.5 - s / 40} for s in range(1, steps + 1, 2)]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    adapter = run.adapter
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    for step in (10, 20):
        ckpt = run.checkpoints / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
    if status == "finished":
        run.write_results(results(n_examples, gate_passes))
    return run


def build(root: Path, n_examples: int = 12) -> World:
    runs = root / "runs"
    good = make_run(runs, "legal-good", gate_passes=True, n_examples=n_examples)
    bad = make_run(runs, "legal-bad", gate_passes=False, n_examples=n_examples)
    make_run(runs, "legal-live", status="running", steps=6)
    reg = Registry(root / "registry.db")
    v1 = reg.add(good.path, "legal")
    v2 = reg.add(bad.path, "legal")
    reg.set_alias("legal@prod", v1.id)
    return World(root, runs, reg.path, v1.id, v2.id)
