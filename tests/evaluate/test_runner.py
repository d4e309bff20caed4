"""`tunesmith eval RUN` (tunesmith.evaluate.runner) on tiny trained runs: systems and flags checked before any model
loads, generations cached and redone when what they depend on changed, a moved base model named, the judge's
items kept in results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.evaluate.cli import app
from tests.helpers import write_rows as _write

runner = CliRunner()


def test_eval_run_rejects_bad_rubric_and_gate_without_baseline_up_front(tmp_path):
    missing_run = tmp_path / "no-such-run"
    res = runner.invoke(app, [str(missing_run), "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j",
                              "--rubric", str(tmp_path / "rubric.txt")])
    assert res.exit_code == 2
    assert "rubric.txt: cannot read rubric: No such file or directory" in res.stderr
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    _write(tmp_path / "p.jsonl", [{"id": 1, "output": "x", "prompt": "q"}])
    res = runner.invoke(app, ["judge", "-p", str(tmp_path / "p.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                              "--model", "j", "--rubric", str(tmp_path / "empty.txt")])
    assert res.exit_code == 2 and "empty.txt: the rubric file is empty" in res.stderr


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qa3-run")
    labels = ["billing", "tech"]
    for name, n in (("train", 8), ("test", 2)):
        _write(root / f"{name}.jsonl", [{"text": f"{name} ticket {i} about {labels[i % 2]}", "label": labels[i % 2]}
                                        for i in range(n)])
    return _trained(root, "r", f"model: {tiny_model_dir}\nmethod: lora\noutput_dir: runs\n"
                          "data: {train: train.jsonl, test: test.jsonl, max_seq_len: 64}\n"
                          "lora: {r: 2, alpha: 4}\n"
                          "train: {max_steps: 1, batch_size: 4, logging_steps: 1}\n"
                          "eval: {max_new_tokens: 2, few_shot: 1, regression: false}\n")


def _trained(root: Path, name: str, config: str) -> Path:
    """`tunesmith train` on run `name` of a config written to root/cfg.yaml; the run directory."""
    from tunesmith.cli import app as main_app

    (root / "cfg.yaml").write_text(f"name: {name}\n{config}", encoding="utf-8")
    res = runner.invoke(main_app, ["train", str(root / "cfg.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    return root / "runs" / name


def test_systems_come_from_the_config_and_are_checked_before_any_model_loads(tiny_run, tmp_path, monkeypatch):
    import shutil

    import yaml

    import tunesmith.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a command that cannot run")

    monkeypatch.setattr(tunesmith.models, "load_model", no_model)
    res = runner.invoke(app, [str(tiny_run), "--systems", "base,tuned", "--gate", "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "--gate needs both the tuned and the prompted system in --systems" in res.stderr
    res = runner.invoke(app, [str(tiny_run), "--systems", "prompted,tuned", "--regression"])
    assert res.exit_code == 2
    assert "--regression compares base with tuned; --systems needs both" in res.stderr

    run = tmp_path / "two-systems"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("generations"))
    cfg = run / "config.yaml"
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["eval"]["systems"] = ["base", "tuned"]
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    res = runner.invoke(app, [str(run), "--gate"])
    assert res.exit_code == 2
    assert f"--gate needs both the tuned and the prompted system in eval.systems of {cfg}" in res.stderr
    monkeypatch.undo()
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert "base" in summary and "tuned" in summary and "prompted" not in summary and summary["gate"] is None


def test_regression_flag_runs_the_suite_when_the_config_does_not(tiny_run):
    res = runner.invoke(app, [str(tiny_run), "--regression", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    reg = summary["regression"]
    assert reg is not None and set(reg["by_category"]) == {"arithmetic", "facts", "instructions", "format"}
    saved = json.loads((tiny_run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert saved["regression"] == reg
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    assert 'id="regression"' in html
    assert "test.jsonl (2 examples) · prompted baseline 1-shot from train</p>" in html


def test_empty_test_file_is_an_error_and_keeps_the_last_results(tiny_run, tmp_path):
    before = (tiny_run / "eval" / "results.json").read_bytes() if (tiny_run / "eval" / "results.json").exists() else None
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    res = runner.invoke(app, [str(tiny_run), "--test", str(empty), "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "empty.jsonl: no records in the file (it is empty or holds only blank lines)" in res.stderr
    after = (tiny_run / "eval" / "results.json").read_bytes() if (tiny_run / "eval" / "results.json").exists() else None
    assert after == before


def test_rescoring_from_the_cache_loads_no_model(tiny_run, tmp_path, monkeypatch):
    import tunesmith.models

    first = runner.invoke(app, [str(tiny_run), "--json"])
    assert first.exit_code == 0, first.output

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although every generation is cached")

    monkeypatch.setattr(tunesmith.models, "load_model", no_model)
    monkeypatch.setattr(tunesmith.models, "load_tokenizer", no_model)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: short\n    max_words: 3\n", encoding="utf-8")
    again = runner.invoke(app, [str(tiny_run), "--rules", str(rules), "--json"])
    assert again.exit_code == 0, again.output
    saved = json.loads((tiny_run / "eval" / "results.json").read_text(encoding="utf-8"))
    for system in ("base", "prompted", "tuned"):
        outs = [ex["outputs"][system] for ex in saved["examples"]]
        want = sum(len(o.split()) <= 3 for o in outs) / len(outs)
        assert saved["systems"][system]["metrics"]["compliance"] == {"short": want, "all": want}
    assert json.loads(again.stdout)["tuned"]["accuracy"] == json.loads(first.stdout)["tuned"]["accuracy"]


def test_missing_base_model_is_named_not_a_repo_id_error(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "moved-run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("generations"))
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["base_model"] = str(tmp_path / "deleted-model")
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert f"base model {tmp_path / 'deleted-model'} is not there any more" in res.stderr


def test_full_fine_tune_of_a_base_without_template_evaluates_with_the_run_s_template(tiny_model_dir, tmp_path):
    import shutil

    base = tmp_path / "base-no-template"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink()  # a pre-trained base: data.chat_template supplies the format
    _write(tmp_path / "train.jsonl", [{"text": f"ticket {i}", "label": "a" if i % 2 else "b"} for i in range(4)])
    _write(tmp_path / "test.jsonl", [{"text": "ticket 9", "label": "a"}])
    run = _trained(tmp_path, "f", f"model: {base}\nmethod: full\noutput_dir: runs\n"
                             "data: {train: train.jsonl, test: test.jsonl, max_seq_len: 64, chat_template: chatml}\n"
                             "train: {max_steps: 1, batch_size: 4, logging_steps: 1}\n"
                             "eval: {max_new_tokens: 2, few_shot: 1}\n")
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["task"] == "classification" and [summary[s]["n"] for s in ("base", "prompted", "tuned")] == [1, 1, 1]
    # macro F1 is no per-example pass: the gate's interval is the bootstrap over the (one) test example
    assert summary["gate"]["task"]["method"] == "paired bootstrap, 2000 resamples"
    assert summary["gate"]["task"]["n"] == 1 and summary["gate"]["task"]["resamples"] == 2000


def test_eval_run_with_judge_keeps_items_in_results_and_shows_scores(tiny_run, endpoint):
    res = runner.invoke(app, [str(tiny_run), "--judge-url", endpoint, "--judge-model", "j", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["judge"]["tuned"] == {"n": 2, "scored": 2, "unparseable": 0, "mean_score": 2.0,
                                         "score_counts": {"1": 0, "2": 2, "3": 0, "4": 0, "5": 0}}
    saved = json.loads((tiny_run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert [it["id"] for it in saved["judge"]["base"]["items"]] == [1, 2]
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    judge = html[html.index('id="judge"'):]
    assert judge[: judge.index("</section>")].count('<td class="num">2.00</td>') == 3
    table = runner.invoke(app, [str(tiny_run), "--judge-url", endpoint, "--judge-model", "j"])
    assert table.exit_code == 0, table.output
    assert any(line.startswith("│ judge mean (1-5)") and line.count("2.00") == 3 for line in table.stdout.splitlines())


def test_generations_are_redone_when_only_the_chat_template_changed(tiny_run, tmp_path):
    import shutil

    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "r"))  # the shared run stays as it was
    first = runner.invoke(app, [str(tiny_run), "--systems", "tuned", "--json"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [str(tiny_run), "--systems", "tuned", "--json"])
    assert "generations from cache" in again.stderr
    template = tiny_run / "adapter" / "chat_template.jinja"
    template.write_text(template.read_text(encoding="utf-8").replace("<|im_start|>", "<|im_start|> "), encoding="utf-8")
    changed = runner.invoke(app, [str(tiny_run), "--systems", "tuned", "--json"])
    assert changed.exit_code == 0, changed.output
    assert "generations from cache" not in changed.stderr


def test_results_carry_the_base_model_kind_and_answers_that_ran_to_the_limit(tiny_run, tmp_path, monkeypatch):
    import shutil

    import tunesmith.models
    from tunesmith.rundir import RunDir

    run = Path(shutil.copytree(tiny_run, tmp_path / "r"))  # the shared run stays as it was
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 0, res.output
    saved = RunDir(run).results()
    info = RunDir(run).info()
    assert saved.base_model_kind == info.base_model_kind == "instruct" and saved.model == info.model_spec
    assert set(saved.stops) == {"base", "prompted", "tuned"}
    assert all(s.n == 2 and s.limit == 2 and 0 <= s.ran_to_limit <= 2 for s in saved.stops.values())

    # the same answers from a base recorded as pretrained: said without generating again; a cache written
    # before endings were kept loads too, its system's count left out rather than guessed
    monkeypatch.setattr(tunesmith.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    RunDir(run).update_info({"base_model_kind": "pretrained"})
    [cached] = [p for p in (run / "eval" / "generations").glob("prompted-*.json") if not p.name.endswith(".tokens.json")]
    cached.write_text(json.dumps(json.loads(cached.read_text(encoding="utf-8"))["outputs"]), encoding="utf-8")
    again = runner.invoke(app, [str(run), "--json"])
    assert again.exit_code == 0, again.output
    saved = RunDir(run).results()
    assert saved.base_model_kind == "pretrained" and set(saved.stops) == {"base", "tuned"}
    hit = saved.stops["base"].ran_to_limit
    how = "never stop" if hit == 2 else "rarely stop" if hit > 1 else "mostly stop"
    note = f"{Path(info.model_spec).name} is a pretrained base model: its baselines {how} ({hit}/2 ran to the 2-token limit"
    assert json.loads(again.stdout)["notes"][0].startswith(note)
    assert "note: " + note in (run / "report.html").read_text(encoding="utf-8")


def test_a_second_run_of_the_same_base_reuses_the_base_answers_and_generates_only_its_own(tiny_run, tmp_path):
    """The base and prompted answers and the base suite answers are the base model's: a sweep's second run finds
    them in the shared store (evaluate/gencache.py) and generates only the tuned system."""
    import shutil

    from tunesmith.evaluate import gencache
    from tunesmith.rundir import RunDir

    first, second = (Path(shutil.copytree(tiny_run, tmp_path / name, ignore=shutil.ignore_patterns("eval")))
                     for name in ("a", "b"))  # without the answers other tests cached in the shared run
    res = runner.invoke(app, [str(first), "--regression", "--json"])
    assert res.exit_code == 0, res.output
    shared = sorted(p.name.split("-")[0] + ("-" + p.name.split("-")[1] if p.name.startswith("regression") else "")
                    for p in gencache.store().glob("*.json") if not p.name.endswith(".tokens.json"))
    assert shared == ["base", "prompted", "regression-base"]
    assert {"generate.base", "generate.prompted", "regression.base"} <= set(RunDir(first).results().timings)

    res = runner.invoke(app, [str(second), "--regression", "--json"])
    assert res.exit_code == 0, res.output
    a, b = RunDir(first).results(), RunDir(second).results()
    assert {k for k in b.timings if k.startswith(("generate.", "regression."))} == {"generate.tuned", "regression.tuned"}
    assert [e.outputs for e in a.examples] == [e.outputs for e in b.examples]
    assert b.systems["base"].usage == a.systems["base"].usage  # the token counts came along

    # weights rewritten in place are another model: nothing of the old answers is used for them
    base = Path(RunDir(second).info().base_model)
    weights = next(base.glob("*.safetensors"))
    assert gencache.base_identity(base) != (weights.touch() or gencache.base_identity(base))
