"""Run config: complete commented examples per method, validation errors that name the field, --set overrides."""

from typing import get_args

import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import RunConfig, load_config
from tests.helpers import EXAMPLES
from tests.helpers import cli_error as _error

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


def test_validate_checks_every_file_and_value(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data:\n  train: t.jsonl\n  mix:\n    - {path: general.jsonl, weight: 0.2}\n"
                 "  chat_template: mine.jinja\n")
    (tmp_path / "t.jsonl").write_text("{}\n")
    msg = _error(runner.invoke(app, ["config", "validate", str(f)]))
    assert msg.endswith(f"data.mix[0].path: {tmp_path / 'general.jsonl'}; "
                        f"data.chat_template: {tmp_path / 'mine.jinja'}")
    mix = "data.mix=[{path: t.jsonl, weight: 0.6}, {path: t.jsonl, weight: 0.4}]"
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", mix]))
    assert msg == f"error: {f}: data.mix weights must add up to less than 1 (the rest is the main training set)"
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", "train.scheduler=cosin",
                                     "--set", "train.dtype=fp16", "--set", "dpo.loss_type=dpo"]))
    assert "dpo.loss_type: Input should be 'sigmoid'" in msg and "train.scheduler: Input should be 'linear'" in msg
    assert "train.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'" in msg
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", "objective=grpo",
                                     "--set", "train.keep_best=true"]))
    assert msg.endswith("train.keep_best need a val loss, which objective grpo does not compute")
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", "data..train=x.jsonl"]))
    assert msg == "error: --set data..train=…: expected a dotted field name such as train.lr"


def test_every_scheduler_offered_runs_without_extra_arguments():
    import torch
    from transformers import get_scheduler

    names = get_args(RunConfig.model_fields["train"].annotation.model_fields["scheduler"].annotation)
    for name in names:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
        get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=4)
    assert len(names) == 8


def test_config_example_names_the_methods():
    msg = _error(runner.invoke(app, ["config", "example", "--method", "dora"]))
    assert msg == "error: --method 'dora': choose one of lora, qlora, full, prompt_tuning, prefix_tuning"


def test_run_name_and_output_dir_must_make_a_run_directory(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("name: ../elsewhere\n")
    assert _error(runner.invoke(app, ["config", "validate", str(f)])) == (
        f"error: {f}: name: '../elsewhere' must be one directory name (no '/', not '.' or '..')")
    (tmp_path / "runs").write_text("a file where the runs should go")
    f.write_text("name: legal\noutput_dir: runs\n")
    assert _error(runner.invoke(app, ["config", "validate", str(f)])) == (
        f"error: {f}: output_dir: {tmp_path / 'runs'} is a file, so the run directory {tmp_path / 'runs' / 'legal'} "
        "cannot be made")


def test_set_keeps_text_that_yaml_block_syntax_would_change(tmp_path):
    import yaml

    f = tmp_path / "run.yaml"
    f.write_text("name: legal\n")
    for text in ("Answer: yes", "- cite the statute", "#1 rule: be brief"):
        res = runner.invoke(app, ["config", "validate", str(f), "--set", f"data.system_prompt={text}"])
        assert res.exit_code == 0, res.output
        assert yaml.safe_load(res.stdout)["data"]["system_prompt"] == text
    res = runner.invoke(app, ["config", "validate", str(f), "--set", "name=2026", "--set", "lora.layers=[0, 1]",
                              "--set", "data.val=null", "--set", "train.lr=1e-4"])
    cfg = yaml.safe_load(res.stdout)
    assert (cfg["name"], cfg["lora"]["layers"], cfg["data"]["val"], cfg["train"]["lr"]) == ("2026", [0, 1], None, 1e-4)


def test_set_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    import yaml

    (tmp_path / "configs").mkdir()
    f = tmp_path / "configs" / "run.yaml"
    f.write_text("data:\n  train: train.jsonl\n")
    (tmp_path / "configs" / "train.jsonl").write_text("{}\n")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "mine.jsonl").write_text("{}\n")
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["config", "validate", str(f), "--set", "data.train=data/mine.jsonl",
                              "--set", "output_dir=out", "--set", "data.mix=[{path: data/mine.jsonl}]",
                              "--set", "data.chat_template=chatml", "--set", "model=org/name"])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.stdout)
    assert cfg["data"]["train"] == cfg["data"]["mix"][0]["path"] == str(work / "data" / "mine.jsonl")
    assert (cfg["output_dir"], cfg["data"]["chat_template"], cfg["model"]) == (str(work / "out"), "chatml", "org/name")
    # a path written in the file stays relative to the file
    assert yaml.safe_load(runner.invoke(app, ["config", "validate", str(f), "--set", "train.lr=0.1"]).stdout
                          )["data"]["train"] == str(tmp_path / "configs" / "train.jsonl")


def test_config_file_with_a_key_twice_or_not_utf8_is_refused(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  lr: 0.1\ndata:\n  train: t.jsonl\ntrain:\n  epochs: 2\n")
    msg = _error(runner.invoke(app, ["config", "validate", str(f)]))
    assert msg.startswith(f"error: {f}: not valid YAML: 'train' is given twice (the first would be silently ignored)")
    assert "line 5, column 1" in msg
    f.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert _error(runner.invoke(app, ["config", "validate", str(f)])) == (
        f"error: {f}: not UTF-8 text (byte 9); save the file as UTF-8")
    f.write_text("train:\n  <<: {lr: 1, epochs: 3}\n  lr: 0.5\n")  # a merge key's value may be overridden
    res = runner.invoke(app, ["config", "validate", str(f)])
    assert res.exit_code == 0 and "  lr: 0.5\n" in res.stdout and "  epochs: 3.0\n" in res.stdout


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
