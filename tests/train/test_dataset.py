"""Training records (tunesmith.train.dataset): an empty val file and a mix weight worth no example are errors."""

from __future__ import annotations

from typer.testing import CliRunner

from tunesmith.cli import app
from tests.helpers import cli_error as _error, train_config as _config, write_pairs as _chat

runner = CliRunner()


def test_empty_val_file_is_an_error_not_skipped(tiny_model_dir, tmp_path):
    (tmp_path / "val.jsonl").write_text("\n\n")
    f = _config(tmp_path, tiny_model_dir, data={"val": "val.jsonl"}, train={"keep_best": True})
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert f"{tmp_path / 'val.jsonl'}: no records in the file" in msg


def test_mix_weight_that_rounds_to_no_example_is_an_error(tiny_model_dir, tmp_path):
    _chat(tmp_path / "general.jsonl", [("hi", "hello")])
    f = _config(tmp_path, tiny_model_dir, data={"mix": [{"path": "general.jsonl", "weight": 0.05}]})
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert msg.endswith(f"data.mix: {tmp_path / 'general.jsonl'}: weight 0.05 of 6 training examples is 0 examples; "
                        "raise its weight or leave the source out")
