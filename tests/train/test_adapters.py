"""Adapters (tunesmith.train.adapters): lora.layers and lora.target_modules checked against the model, for Conv1D
models too."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import RunConfig
from tests.helpers import cli_error as _error, train_config as _config

runner = CliRunner()


def test_lora_layers_and_targets_the_model_lacks_are_named(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir)
    msg = _error(runner.invoke(app, ["train", str(f), "--set", "lora.layers=[0,5]"]))
    assert "lora.layers: [5] not in the model's layers 0..1" in msg
    msg = _error(runner.invoke(app, ["train", str(f), "--set", "lora.layers=-3"]))
    assert "lora.layers: -3 asks for the last 3 layers; the model has 2" in msg
    msg = _error(runner.invoke(app, ["train", str(f), "--set", "lora.target_modules=[q_proj,qproj]"]))
    assert ("lora.target_modules: ['qproj'] not found in the model; its linear modules are down_proj, gate_proj, "
            "k_proj, lm_head, o_proj, q_proj, up_proj, v_proj") in msg
    # one name written as a plain string is that module (PEFT alone would read it as a regex matching nothing)
    res = runner.invoke(app, ["train", str(f), "--set", "lora.target_modules=v_proj", "--json"])
    assert res.exit_code == 0, res.output
    adapter = json.loads((tmp_path / "runs" / "qa" / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["v_proj"]


def test_lora_layers_on_gpt2_target_its_conv1d_modules(tiny_model_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tunesmith.train.adapters import peft_config

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=2, n_positions=64))
    cfg = RunConfig.model_validate({"lora": {"layers": -1}})
    lc = peft_config(cfg, model, tiny_model_dir)
    assert sorted(lc.target_modules) == ["c_attn", "c_fc", "c_proj"] and lc.layers_to_transform == [2]
