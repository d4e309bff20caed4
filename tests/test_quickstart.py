"""The spine end to end on the tiny model: data → check → clean → split → LoRA SFT → eval → report."""

import json

from rich.console import Console

from tunesmith.quickstart import run_quickstart
from tunesmith.rules import compliance, load_rules
from tunesmith.train.dataset import read_conversations


def test_quickstart_path_on_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))  # the replay answers are cached there
    out = tmp_path / "qs"
    settings = {
        "model": str(tiny_model_dir),
        "lora": {"layers": None, "r": 4, "alpha": 8},
        "train": {"max_steps": 4, "batch_size": 4, "eval_every": 2, "logging_steps": 1, "lr": 1e-3},
        "eval": {"max_new_tokens": 12, "max_examples": 5, "few_shot": 1, "batch_size": 8},
    }
    summary = run_quickstart(out, Console(stderr=True, quiet=True), show_progress=False, settings=settings,
                             examples=60)

    # counts add up through clean and split
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    rejected = (out / "data" / "rejected.jsonl").read_text().splitlines()
    assert sum(manifest["counts"].values()) + len(rejected) == 60
    assert summary["test_examples"] == 5

    run = json.loads((out / "runs" / "legal-bot" / "run.json").read_text())
    assert run["status"] == "finished" and run["method"] == "lora"
    assert run["data"]["train"]["count"] == manifest["counts"]["train"]
    metrics = [json.loads(x) for x in (out / "runs" / "legal-bot" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4]
    assert (out / "runs" / "legal-bot" / "adapter" / "adapter_model.safetensors").is_file()

    # the summary's compliance is exactly what the rules say about the saved outputs
    results = json.loads((out / "runs" / "legal-bot" / "eval" / "results.json").read_text())
    rules = load_rules(out / "data" / "rules.yaml")
    tests = read_conversations(str(out / "data" / "test.jsonl"))[:5]
    for system in ("base", "prompted", "tuned"):
        outputs = [ex["outputs"][system] for ex in results["examples"]]
        checks = [rules.check_answer(o, t.last_user()) for o, t in zip(outputs, tests)]
        assert summary[system]["compliance"] == compliance(checks, rules.names)["all"]
        assert set(summary[system]["per_rule"]) == {"disclaimer", "numbered_items", "case_reference",
                                                         "no_invented_reference"}
    assert summary["gate"]["primary_metric"] == "compliance.all"
    # the default recipe asks the base model for its general answers (the random tiny one may give only
    # blanks, left out); the suite ran and its verdict is there
    assert (out / "data" / "general.jsonl").is_file()
    assert summary["gate"]["regression_verdict"] in ("PASS", "FAIL", "inconclusive")
    assert set(results["regression"]["by_category"]) == {"arithmetic", "facts", "instructions", "format"}
    assert {"train", "eval", "eval.regression.base", "eval.regression.tuned"} <= set(summary["seconds"])
    # what the numbers cannot show is said from results.json, with the kind of base model the run recorded
    from tunesmith.evaluate.notes import eval_notes

    assert summary["base_model_kind"] == results["base_model_kind"] == run["base_model_kind"] == "instruct"
    assert summary["stops"] == results["stops"] and set(summary["stops"]) == {"base", "prompted", "tuned"}
    assert summary["notes"] == eval_notes(results)
    assert summary["regression"]["overall"]["base"] == round(results["regression"]["overall"]["base"], 4)

    html = (out / "report.html").read_text()
    for fragment in ("base", "prompted", "tuned", "disclaimer", "<svg class=\"chart\"", "id=\"verdict\""):
        assert fragment in html

    # generations are cached: a second evaluation does not regenerate
    from tunesmith.evaluate.runner import evaluate_run

    again = evaluate_run(out / "runs" / "legal-bot", console=Console(quiet=True), show_progress=False)
    assert [e["outputs"] for e in again["examples"]] == [e["outputs"] for e in results["examples"]]
    assert again["regression"] == results["regression"] and again["timings"] == {}  # the suite's answers too


def test_eval_gate_exit_codes(tiny_model_dir, tmp_path, monkeypatch):
    """`tunesmith eval RUN --gate`: exit 1 when tuned does not beat prompted, 0 when it does by the margin."""
    from typer.testing import CliRunner

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))

    from tunesmith.cli import app

    out = tmp_path / "qs"
    settings = {
        "model": str(tiny_model_dir),
        "lora": {"layers": None, "r": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 4, "eval_every": None, "logging_steps": 1},
        "eval": {"max_new_tokens": 8, "max_examples": 3, "few_shot": 1, "batch_size": 8, "regression": False},
    }
    run_quickstart(out, Console(stderr=True, quiet=True), show_progress=False, settings=settings, examples=40)
    run_dir = out / "runs" / "legal-bot"
    runner = CliRunner()
    # a random tiny model passes no rule: tuned 0.0 vs prompted 0.0 is no improvement
    failed = runner.invoke(app, ["eval", str(run_dir), "--gate", "--json"])
    assert failed.exit_code == 1, failed.output
    decision = json.loads((run_dir / "eval" / "gate.json").read_text())
    assert decision["passed"] is False and decision["delta"] == 0.0
    passed = runner.invoke(app, ["eval", str(run_dir), "--gate", "--margin", "-0.5", "--json"])
    assert passed.exit_code == 0, passed.output
    assert json.loads((run_dir / "eval" / "gate.json").read_text())["passed"] is True
    bad = runner.invoke(app, ["eval", str(run_dir), "--systems", "base,oracle"])
    assert bad.exit_code == 2


def test_quickstart_replay_mixes_base_answers(tiny_model_dir, tmp_path, monkeypatch):
    """The default recipe: the base model's general answers are written and mixed at 30%, computed once per
    model; none usable → no mix; --show-forgetting trains without them."""
    import tunesmith.data.replay as replay

    answered = replay.Replay(records=[{"messages": [{"role": "user", "content": f"general {i}"},
                                                    {"role": "assistant", "content": f"answer {i}"}]}
                                      for i in range(10)])
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(replay, "self_distill", lambda *a, **k: calls.append(1) or answered)
    settings = {
        "model": str(tiny_model_dir),
        "lora": {"layers": None, "r": 4, "alpha": 8},
        "train": {"max_steps": 1, "batch_size": 4, "eval_every": None, "logging_steps": 1},
        "eval": {"max_new_tokens": 4, "max_examples": 2, "few_shot": 1, "batch_size": 8, "regression": False},
    }
    out = tmp_path / "qs"
    run_quickstart(out, Console(stderr=True, quiet=True), show_progress=False, settings=settings, examples=40)
    assert len((out / "data" / "general.jsonl").read_text().splitlines()) == 10
    run = json.loads((out / "runs" / "legal-bot" / "run.json").read_text())
    train_count = run["data"]["train"]["count"]
    [mix] = run["data"]["mix"]
    assert mix["weight"] == 0.3 and mix["count"] == round(round(train_count / 0.7) * 0.3)

    # a second quickstart reuses the answers instead of generating them again
    run_quickstart(tmp_path / "qs1", Console(stderr=True, quiet=True), show_progress=False, settings=settings,
                   examples=40)
    assert len(calls) == 1 and (tmp_path / "qs1" / "data" / "general.jsonl").read_text() == \
        (out / "data" / "general.jsonl").read_text()

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(replay, "self_distill", lambda *a, **k: replay.Replay(empty=["p"]))
    run_quickstart(tmp_path / "qs2", Console(stderr=True, quiet=True), show_progress=False, settings=settings,
                   examples=40)
    assert "mix" not in json.loads((tmp_path / "qs2" / "runs" / "legal-bot" / "run.json").read_text())["data"]

    run_quickstart(tmp_path / "qs3", Console(stderr=True, quiet=True), show_progress=False, settings=settings,
                   examples=40, show_forgetting=True)
    assert not (tmp_path / "qs3" / "data" / "general.jsonl").exists()
    assert "mix" not in json.loads((tmp_path / "qs3" / "runs" / "legal-bot" / "run.json").read_text())["data"]


def test_gemma_recipe_is_the_default_without_replay(tiny_model_dir, tmp_path, monkeypatch):
    """gemma3-270m's overlay (MODEL_RECIPES) leaves the replay mix out, and changes nothing else."""
    import copy

    import pytest
    import yaml

    import tunesmith.data.replay as replay
    import tunesmith.models as models
    import tunesmith.train.recipe as recipe
    from tunesmith.quickstart import QUICKSTART_CONFIG, model_recipe

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(models, "resolve_model", lambda spec, *a, **k: tiny_model_dir)
    monkeypatch.setattr(replay, "self_distill", lambda *a, **k: pytest.fail("the base was asked for replay answers"))
    monkeypatch.setattr(recipe, "train", stop)
    out = tmp_path / "qs"
    with pytest.raises(Stop):
        run_quickstart(out, Console(stderr=True, quiet=True), show_progress=False, examples=40, model="gemma3-270m")
    want = copy.deepcopy(QUICKSTART_CONFIG) | {"model": "gemma3-270m"}
    want["data"]["mix"] = []
    assert yaml.safe_load((out / "config.yaml").read_text()) == want
    assert model_recipe("smollm2-135m-instruct") == model_recipe(None) == model_recipe(str(tiny_model_dir)) == {}
