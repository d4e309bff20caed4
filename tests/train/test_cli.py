"""`tunesmith train --json` keeps stdout to one JSON object; `data render` shows exactly what trains."""

import json

import typer
from typer.testing import CliRunner

from tests.helpers import write_chat
from tunesmith.cli import app
from tunesmith.train.render import render

runner = CliRunner()


def _config(tmp_path, tiny, **train):
    data = write_chat(tmp_path / "train.jsonl", 6)
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund?"},
                                 {"role": "assistant", "content": "1. Write to billing."}]}) + "\n"
        + data.read_text())
    f = tmp_path / "run.yaml"
    f.write_text(json.dumps({"name": "cli", "model": str(tiny), "output_dir": "runs",
                             "data": {"train": "train.jsonl", "max_seq_len": 64},
                             "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1, **train}}))
    return f


def test_train_json_prints_one_object(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir)
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # raises if anything else reached stdout
    assert summary["data"]["kept"] == 7 and summary["skipped"] is False
    again = json.loads(runner.invoke(app, ["train", str(f), "--json"]).stdout)
    assert again["skipped"] is True


def test_render_marks_trained_tokens(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir)
    cmd = typer.Typer()
    cmd.command()(render)
    res = runner.invoke(cmd, [str(f), "--n", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ex = out["examples"][0]
    assert ex["origin"].endswith("train.jsonl:1")
    assert [s["text"] for s in ex["segments"] if s["trained"]] == ["1. Write to billing.<|im_end|>"]
    assert "".join(s["text"] for s in ex["segments"]).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert ex["trained"] == 12 and out["report"]["total"] == 7 and out["report"]["eos_trained"]
    text = runner.invoke(cmd, [str(f), "--n", "2"]).output
    assert "train.jsonl:1: " in text and "7 of 7 examples train" in text


def test_eval_every_without_a_val_file_is_said_not_ignored(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir, eval_every=1)
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output
    assert "train.eval_every is set but data.val is not" in res.stderr
    assert json.loads(res.stdout)["final_eval_loss"] is None
