"""Run config: complete commented examples per method, validation errors that name the field, --set overrides."""

import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import RunConfig, load_config
from tests.helpers import EXAMPLES

runner = CliRunner()


def test_example_qlora_is_complete_and_valid(tmp_path):
    res = runner.invoke(app, ["config", "example", "--method", "qlora"])
    assert res.exit_code == 0
    assert "# 4-bit data type of the frozen base weights.\n  quant_type: \"nf4\"" in res.output
    assert "double_quant: true" in res.output and 'compute_dtype: "bfloat16"' in res.output
    f = tmp_path / "q.yaml"
    f.write_text(res.output)
    cfg = load_config(f)
    assert cfg.method == "qlora" and cfg.qlora.quant_type == "nf4"
    # every field of every section is in the example, so it is the one place to read defaults
    data = yaml.safe_load(res.output)
    assert set(data) == set(RunConfig.model_fields) and set(data["train"]) == set(cfg.train.model_fields)


def test_validate_names_the_inconsistent_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("objective: grpo\ndata: {train: t.jsonl}\ntrain: {batch_size: 3}\n")
    (tmp_path / "t.jsonl").write_text("")
    res = runner.invoke(app, ["config", "validate", str(f)])
    assert res.exit_code == 2 and "objective grpo needs data.rules" in " ".join(res.output.split())
    f.write_text("data: {train: t.jsonl}\ntrain: {early_stopping_patience: 2}\n")
    res = runner.invoke(app, ["config", "validate", str(f)])
    assert res.exit_code == 2 and "need data.val" in " ".join(res.output.split())
    res = runner.invoke(app, ["config", "validate", str(f), "--set", "train.early_stopping_patience=null",
                              "--set", "train.report_to=[tensorboard]"])
    assert res.exit_code == 0 and "- tensorboard" in res.output
    res = runner.invoke(app, ["config", "validate", str(f), "--set", "train.report_to=[comet]"])
    assert res.exit_code == 2 and "train.report_to.0" in res.output


def test_shipped_training_examples_load():
    from pathlib import Path

    examples = sorted(EXAMPLES.glob("*.yaml"))
    got = {(c.method, c.objective) for c in map(load_config, examples)}
    assert {("lora", "sft"), ("qlora", "sft"), ("full", "sft"), ("prompt_tuning", "sft"), ("lora", "dpo"),
            ("lora", "pretrain"), ("lora", "grpo")} <= got


def test_performance_on_off_survive_yaml_booleans(tmp_path):
    """YAML 1.1 reads bare on/off as booleans; `performance: off` must still mean the plain path."""
    from tunesmith.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("train:\n  performance: off\n")
    assert load_config(path).train.performance == "off"
    assert load_config(path, ["train.performance=on"]).train.performance == "on"
    assert load_config(path, ["train.performance=auto"]).train.performance == "auto"


def test_missing_integrations_fail_before_loading_with_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    import pytest

    from tunesmith.config import load_config
    from tunesmith.train.adapters import MethodError, check_method

    real = importlib.util.find_spec
    absent = {"tensorboard", "tensorboardX", "liger_kernel"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  report_to: [tensorboard]\n")
    with pytest.raises(MethodError, match="train.report_to: tensorboard is not installed: pip install tensorboard"):
        check_method(load_config(path))
    with pytest.raises(MethodError, match="train.liger: liger-kernel is not installed"):
        check_method(load_config(path, ["train.report_to=[]", "train.liger=true"]))
    absent.clear()  # with the packages present the same config passes
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    check_method(load_config(path, ["train.liger=true"]))


def test_model_paths_are_stored_absolute(tmp_path, monkeypatch):
    """A run's config.yaml must work from any directory: a relative model dir is resolved (next to the config
    first, then from the working directory) and paths are normalised."""
    from tunesmith.config import load_config

    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "local").mkdir(parents=True)
    conf = tmp_path / "conf" / "run.yaml"
    monkeypatch.chdir(tmp_path)
    conf.write_text("model: ./models/base\noutput_dir: ../runs\n")
    cfg = load_config(conf)
    assert cfg.model == str(tmp_path / "models" / "base") and cfg.output_dir == str(tmp_path / "runs")
    conf.write_text("model: local\n")
    assert load_config(conf).model == str(tmp_path / "conf" / "local")
    conf.write_text("model: Org/Name\n")  # not a directory: a hub id or the default's name stays as written
    assert load_config(conf).model == "Org/Name"
