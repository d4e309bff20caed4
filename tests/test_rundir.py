"""The run directory's two artefacts: run.json (RunInfo) and eval/results.json (EvalResults) load as
today's code writes them, refuse what they cannot read by file and field, and keep keys they do not know."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tunesmith.rundir import EvalResults, RunDir, RunDirError, RunInfo

# What train/sft.py writes today: write_info (name ... fast_path, then `created`) and, at the end,
# update_info (train_seconds ... final_reward). Copied from a real packed LoRA run.
TRAINED = {
    "name": "direct", "status": "running", "method": "lora", "objective": "sft",
    "base_model": "/models/tiny", "model_spec": "/models/tiny",
    "data": {"train": {"path": "/d/train.jsonl", "sha256": "a" * 64, "count": 8},
             "val": {"path": "/d/val.jsonl", "sha256": "b" * 64, "count": 4},
             "test": {"path": "/d/test.jsonl", "sha256": "c" * 64}},
    "rules": None, "system_prompt": None, "packing": True,
    "encode": {"total": 8, "kept": 8, "truncated": 0, "truncated_lines": [], "dropped_over_length": [],
               "dropped_no_trained_tokens": [], "trained_tokens": 112, "total_tokens": 376, "eos_trained": True,
               "val": {"total": 4, "kept": 4, "truncated": 0, "truncated_lines": [], "dropped_over_length": [],
                       "dropped_no_trained_tokens": [], "trained_tokens": 66, "total_tokens": 180,
                       "eos_trained": True}},
    "fast_path": {"attention": "dense", "compile_layers": False, "loss": "chunked", "direct": True,
                  "gradient_checkpointing": False, "notes": ["no CUDA GPU: dense document mask"],
                  "rows": {"rows": 1, "row_tokens": 1024, "examples": 8, "real_tokens": 376, "trained_tokens": 112,
                           "length_sq": 18208, "pad_fraction": 0.6328}},
}
FINISHED = {"status": "finished", "train_seconds": 0.82, "final_train_loss": 5.9960618019104,
            "final_eval_loss": 6.0937418937683105, "global_step": 5, "best_checkpoint": None,
            "stopped_early": None, "real_tokens_per_s": 2301.1, "final_reward": None}
TODAY_RUN = {**TRAINED, "created": "2026-12-02T00:53:24+00:00", **FINISHED}

# What evaluate/runner.py writes today (a classification run, trimmed to one example).
_METRICS = {"n": 2, "accuracy": 0.5, "macro_f1": 0.25,
            "per_class": {"billing": {"precision": 0.5, "recall": 1.0, "f1": 0.67, "support": 1}},
            "confusion": {"labels": ["billing", "tech"], "matrix": [[1, 0], [1, 0]]},
            "rouge_l": 0.5, "exact_match": 0.5, "compliance": {"short": 1.0, "all": 1.0}}
TODAY_RESULTS = {
    "task": "classification", "title": "r: base vs prompted vs tuned",
    "test": {"path": "/d/test.jsonl", "sha256": "c" * 64, "n": 2},
    "rules": "/d/rules.yaml", "few_shot": 1,
    "systems": {s: {"metrics": _METRICS} for s in ("base", "prompted", "tuned")},
    "examples": [{"id": 1, "line": 1, "prompt": "ticket about billing", "reference": "billing",
                  "outputs": {"base": "", "prompted": "billing", "tuned": "billing"},
                  "passes": {"base": {"short": True}, "prompted": {"short": True}, "tuned": {"short": True}}}],
    "regression": None,
    "gate": {"passed": False, "reasons": ["FAIL: tuned macro_f1 0.250 vs prompted 0.250 (delta +0.000 <= margin 0.000)"],
             "primary_metric": "macro_f1", "candidate": "tuned", "baseline": "prompted", "margin": 0.0,
             "candidate_value": 0.25, "baseline_value": 0.25, "delta": 0.0, "regression_flagged": []},
    "loss_curve": [{"step": 1, "epoch": 0.5, "loss": 6.25, "learning_rate": 0.0, "grad_norm": 0.51}],
}


def _run(tmp_path: Path, info: dict | None = None, results: dict | None = None) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.eval_dir.mkdir(parents=True)
    if info is not None:
        run.info_path.write_text(json.dumps(info))
    if results is not None:
        run.results_path.write_text(json.dumps(results))
    return run


def test_run_json_written_by_todays_trainer_loads(tmp_path):
    info = _run(tmp_path, TODAY_RUN).info()
    assert isinstance(info, RunInfo) and info.schema_version == 1 and info.status == "finished"
    assert info.data.train.count == 8 and info.data.test.count is None  # the sealed test split is only hashed
    assert list(info.data.splits()) == ["train", "val", "test"]
    assert info.fast_path["rows"]["row_tokens"] == 1024 and info.encode["val"]["kept"] == 4
    assert info.real_tokens_per_s == 2301.1 and info.final_reward is None


@pytest.mark.parametrize("raw", [
    {"status": "running"},  # what a test writes to fake an interrupted run
    {"name": "full", "status": "finished", "method": "full", "objective": "sft", "base_model": "/m",
     "system_prompt": "Answer with the label only."},  # a full fine-tune written by hand
    {"status": "finished", "data": {"train": {"in_memory": 12}}},  # pre-tokenized examples
    {"status": "finished", "data": {"train": {"path": "t", "sha256": "a", "count": 3},
                                    "mix": [{"path": "m.jsonl", "sha256": "d", "weight": 0.5, "count": 2}]}},
])
def test_other_run_json_shapes_of_today_load(tmp_path, raw):
    info = _run(tmp_path, raw).info()
    assert info.status == raw["status"] and info.model_dump(exclude_unset=True) == raw


def test_results_json_of_todays_shape_loads(tmp_path):
    results = _run(tmp_path, TODAY_RUN, TODAY_RESULTS).results()
    assert isinstance(results, EvalResults) and results.task == "classification" and results.test.n == 2
    assert results.systems["tuned"].metrics["macro_f1"] == 0.25
    assert results.examples[0].outputs["tuned"] == "billing" and results.examples[0].passes["base"] == {"short": True}
    # gate and regression are the eval stage's to type; as JSON they are what was written
    assert results.model_dump(mode="json", include={"gate", "regression"}, exclude_unset=True) == {
        "gate": TODAY_RESULTS["gate"], "regression": None}


def test_a_run_never_evaluated_has_no_results(tmp_path):
    assert _run(tmp_path, TODAY_RUN).results() is None


def test_a_directory_without_run_json_is_refused_by_name(tmp_path):
    run = _run(tmp_path)
    assert not run.is_run() and not run.finished()
    with pytest.raises(RunDirError, match="no run.json"):
        run.info()


def _with(raw: dict, path: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return out


@pytest.mark.parametrize("which, field, value", [
    ("run", "train_seconds", "fast"),
    ("run", "status", "done"),
    ("run", "data.train.count", "many"),
    ("results", "systems.tuned.metrics", 3),
    ("results", "test.n", "two"),
    ("results", "examples.0.outputs", ["not", "a", "dict"]),
])
def test_a_wrong_typed_field_is_refused_naming_file_and_field(tmp_path, which, field, value):
    if which == "run":
        run = _run(tmp_path, _with(TODAY_RUN, field, value))
        read, name = run.info, "run.json"
    else:
        run = _run(tmp_path, TODAY_RUN, _with(TODAY_RESULTS, field, value))
        read, name = run.results, "results.json"
    with pytest.raises(RunDirError) as e:
        read()
    assert str(e.value).startswith(f"{tmp_path}/run/") and f"{name}: {field}: " in str(e.value)
    assert e.value.field == field


def test_results_without_a_task_are_refused_naming_it(tmp_path):
    run = _run(tmp_path, TODAY_RUN, {k: v for k, v in TODAY_RESULTS.items() if k != "task"})
    with pytest.raises(RunDirError, match=r"results.json: task: Field required$"):
        run.results()


@pytest.mark.parametrize("which", ["run", "results"])
def test_a_newer_schema_version_is_refused(tmp_path, which):
    if which == "run":
        read = _run(tmp_path, {**TODAY_RUN, "schema_version": 2}).info
    else:
        read = _run(tmp_path, TODAY_RUN, {**TODAY_RESULTS, "schema_version": 2}).results
    with pytest.raises(RunDirError, match=r"\.json: schema_version: schema_version 2 is newer than this tunesmith "
                                          r"reads \(1\) \(upgrade tunesmith\)"):
        read()


def test_a_schema_version_that_is_not_a_number_is_refused(tmp_path):
    with pytest.raises(RunDirError, match=r"run.json: schema_version: expected an integer, got '1'"):
        _run(tmp_path, {**TODAY_RUN, "schema_version": "1"}).info()


@pytest.mark.parametrize("text, message", [("{not json", r"run.json: not valid JSON \(line 1"),
                                           ("[1, 2]", "run.json: not a JSON object")])
def test_a_file_that_is_not_a_json_object_is_refused_naming_it(tmp_path, text, message):
    run = _run(tmp_path)
    run.info_path.write_text(text)
    with pytest.raises(RunDirError, match=message):
        run.info()


def test_writing_as_the_trainer_does_keeps_todays_keys_and_values(tmp_path):
    run = _run(tmp_path)
    run.write_info(copy.deepcopy(TRAINED))
    started = json.loads(run.info_path.read_text())
    assert started["created"]  # stamped on the first write, as before
    run.update_info(dict(FINISHED))
    written = json.loads(run.info_path.read_text())
    assert written == {**TODAY_RUN, "created": started["created"], "schema_version": 1}
    assert run.finished()


def test_a_failed_run_keeps_what_it_recorded(tmp_path):
    run = _run(tmp_path)
    run.write_info(RunInfo(name="r", status="running", created="2026-01-01T00:00:00+00:00"))
    run.update_info({"status": "failed"})
    assert json.loads(run.info_path.read_text()) == {"schema_version": 1, "name": "r", "status": "failed",
                                                     "created": "2026-01-01T00:00:00+00:00"}


def test_writing_a_wrong_typed_field_is_refused_and_writes_nothing(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(RunDirError, match="run.json: global_step: "):
        run.write_info({**TRAINED, "global_step": "five"})
    assert not run.info_path.exists()
    with pytest.raises(RunDirError, match="results.json: systems.tuned: "):
        run.write_results({**TODAY_RESULTS, "systems": {"tuned": 0.9}})
    assert not run.results_path.exists()


def test_round_trip_keeps_unknown_keys(tmp_path):
    future_run = _with({**TODAY_RUN, "hardware": {"gpu": "H200"}}, "data.train.lines_kept", [1, 2])
    run = _run(tmp_path, future_run, {**TODAY_RESULTS, "judge": {"tuned": {"mean": 4.5}}})
    run.update_info({"final_reward": 0.5})
    assert json.loads(run.info_path.read_text()) == {**future_run, "final_reward": 0.5, "schema_version": 1}
    assert run.info().model_extra == {"hardware": {"gpu": "H200"}}
    run.write_results(run.results())
    assert json.loads(run.results_path.read_text()) == {**TODAY_RESULTS, "judge": {"tuned": {"mean": 4.5}},
                                                        "schema_version": 1}


def test_a_checkpoint_cut_short_while_saving_is_not_resumed_from(tmp_path):
    run = _run(tmp_path, {"status": "running"})
    for step, state in ((5, '{"global_step": 5}'), (10, ""), (15, None)):  # 10: killed writing it; 15: before it
        ckpt = run.checkpoints / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        if state is not None:
            (ckpt / "trainer_state.json").write_text(state)
    assert run.last_checkpoint() == run.checkpoints / "checkpoint-5"
