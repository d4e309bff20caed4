"""eval.lm_eval: lm-evaluation-harness tasks on base and tuned (tunesmith.evaluate.lm_eval_backend), on a tiny
finished run whose adapter is planted (random LoRA B, so tuned picks differently): a local task YAML over a
JSONL file, its items paired into the regression check, the scores checked against choice likelihoods
computed here with transformers, the answers cached, and tasks that cannot run named before a model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers import FIXTURES, make_run

runner = CliRunner()
TASK_DIR = FIXTURES / "eval" / "lm_eval"
LIMIT = 16


@pytest.fixture(scope="module")
def lm_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished LoRA run whose adapter is planted (random B: tuned picks differently from base), with
    eval.lm_eval over a copy of the fixture task named relative to the config."""
    from tunesmith.config import dump_config, load_config

    root = tmp_path_factory.mktemp("lm-eval-run")
    shutil.copytree(TASK_DIR, root / "tasks")
    run = make_run(root / "runs", tiny_model_dir, "r", seed=3)
    (root / "cfg.yaml").write_text(
        f"name: r\nmodel: {tiny_model_dir}\noutput_dir: runs\ndata: {{test: {run / 'data' / 'test.jsonl'}}}\n"
        f"eval: {{systems: [base, tuned], max_new_tokens: 2, lm_eval: {{tasks: [tasks/sums.yaml], limit: {LIMIT}}}}}\n",
        encoding="utf-8")
    (run / "config.yaml").write_text(dump_config(load_config(root / "cfg.yaml")), encoding="utf-8")
    return run


def _picks(model_dir: Path, adapter: Path | None) -> list[int]:
    """The choice each item's model finds most likely: the summed log-probability of the choice's tokens after
    the prompt, computed directly with transformers (what lm-eval's acc is an argmax of)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    rows = [json.loads(line) for line in (TASK_DIR / "sums.jsonl").read_text(encoding="utf-8").splitlines()][:LIMIT]
    picks = []
    for row in rows:
        context = f"Question: {row['question']}\nAnswer:"
        scores = []
        for choice in row["choices"]:
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].float(), -1)
            scores.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        picks.append(max(range(len(scores)), key=scores.__getitem__))
    return picks


def test_lm_eval_task_runs_on_base_and_tuned_and_is_paired_into_the_regression_check(lm_run, tiny_model_dir,
                                                                                         monkeypatch):
    from tunesmith.evaluate import lm_eval_backend
    from tunesmith.evaluate.cli import app
    from tunesmith.rundir import RunDir

    res = runner.invoke(app, [str(lm_run), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    results = RunDir(lm_run).results()
    task = results.lm_eval.tasks["tiny_sums"]
    assert (task.n, task.metric, task.category, results.lm_eval.limit) == (LIMIT, "acc", "lm-eval:tiny_sums", LIMIT)

    labels = [json.loads(line)["label"] for line in (TASK_DIR / "sums.jsonl").read_text().splitlines()][:LIMIT]
    base_ok = [p == y for p, y in zip(_picks(tiny_model_dir, None), labels)]
    tuned_ok = [p == y for p, y in zip(_picks(tiny_model_dir, lm_run / "adapter"), labels)]
    assert task.base["acc"] == pytest.approx(sum(base_ok) / LIMIT)
    assert task.tuned["acc"] == pytest.approx(sum(tuned_ok) / LIMIT)
    lost = sum(b and not t for b, t in zip(base_ok, tuned_ok))
    gained = sum(t and not b for b, t in zip(base_ok, tuned_ok))
    assert lost + gained > 0, "the planted adapter changes no pick: the pairing below would test nothing"
    row = summary["regression"]["by_category"]["lm-eval:tiny_sums"]
    assert (row["n"], row["lost"], row["gained"]) == (LIMIT, lost, gained)
    assert row["base"] == pytest.approx(sum(base_ok) / LIMIT) and row["verdict"] in ("PASS", "FAIL", "inconclusive")
    # the only category here, so the overall row is the task's, and its verdict is the check's
    assert summary["regression"]["overall"]["n"] == LIMIT and list(summary["regression"]["by_category"]) == [
        "lm-eval:tiny_sums"]
    changed = [c for c in summary["regression"]["changed"] if c["category"] == "lm-eval:tiny_sums"]
    assert len(changed) == lost + gained and sum(c["change"] == "lost" for c in changed) == lost
    assert all(c["prompt"].startswith("Question: What is ") for c in changed)
    assert "lm-eval:tiny_sums" in (lm_run / "report.html").read_text(encoding="utf-8")

    # a second evaluation reads both systems' answers from the cache: lm-eval does not run again
    def no_run(*args, **kwargs):
        raise AssertionError("lm-eval ran again for the same model, adapter and task")

    monkeypatch.setattr(lm_eval_backend, "run_tasks", no_run)
    res = runner.invoke(app, [str(lm_run), "--json"])
    assert res.exit_code == 0, res.output
    again = RunDir(lm_run).results()
    assert again.lm_eval.tasks["tiny_sums"].tuned == task.tuned
    assert json.loads(res.stdout)["regression"]["by_category"] == summary["regression"]["by_category"]


def _with_tasks(run: Path, tmp_path: Path, tasks: list[str]) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("generations"))
    cfg = copy / "config.yaml"
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["eval"]["lm_eval"]["tasks"] = tasks
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    return copy


def test_tasks_that_cannot_run_here_are_named_before_any_model_loads(lm_run, tmp_path, monkeypatch):
    import lm_eval.evaluator

    import tunesmith.models
    from tunesmith.evaluate.cli import app

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for an evaluation that cannot run")

    monkeypatch.setattr(tunesmith.models, "load_model", no_model)
    monkeypatch.setattr(lm_eval.evaluator, "simple_evaluate", no_model)
    run = _with_tasks(lm_run, tmp_path, ["arc_easy"])  # built in, but its data set lives on the Hub
    res = runner.invoke(app, [str(run)])
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())
    assert "lm-eval task 'arc_easy' reads data set 'allenai/ai2_arc' from the Hugging Face Hub" in err
    assert "hf download --repo-type dataset allenai/ai2_arc" in err and "write a local task YAML" in err

    shutil.rmtree(run)
    run = _with_tasks(lm_run, tmp_path, [str(tmp_path / "nowhere.yaml")])
    res = runner.invoke(app, [str(run)])
    assert res.exit_code == 2 and f"{tmp_path / 'nowhere.yaml'}: eval.lm_eval.tasks: no such task YAML file" in \
        " ".join(res.stderr.split())

    shutil.rmtree(run)
    run = _with_tasks(lm_run, tmp_path, ["no_such_task_anywhere"])
    res = runner.invoke(app, [str(run)])
    assert res.exit_code == 2
    assert "'no_such_task_anywhere' is neither a task YAML path nor a built-in lm-eval task" in " ".join(
        res.stderr.split())


def test_lm_eval_settings_resolve_task_paths_against_the_config(tmp_path):
    from tunesmith.config import ConfigError, load_config

    (tmp_path / "conf").mkdir()
    cfg_path = tmp_path / "conf" / "run.yaml"
    cfg_path.write_text("eval: {lm_eval: {tasks: [tasks/sums.yaml, ../all_tasks/, arc_easy], limit: 5}}\n")
    cfg = load_config(cfg_path)
    assert cfg.eval.lm_eval.tasks == [str(tmp_path / "conf" / "tasks" / "sums.yaml"), str(tmp_path / "all_tasks"),
                                      "arc_easy"]
    assert load_config(cfg_path, ["eval.lm_eval.tasks=[x/t.yaml]"]).eval.lm_eval.tasks == [
        str(Path("x/t.yaml").resolve())]
    cfg_path.write_text("eval: {lm_eval: {tasks: [], limit: 0}}\n")
    with pytest.raises(ConfigError, match="eval.lm_eval.tasks: List should have at least 1 item"):
        load_config(cfg_path)
