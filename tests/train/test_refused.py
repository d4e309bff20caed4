"""A run refused before training starts leaves no run directory behind, and never touches one that was there."""

import json
import shutil

import pytest

from tests.helpers import QUIET, make_cfg, write_chat
from tunesmith.train.recipe import train


@pytest.fixture()
def data(tmp_path):
    write_chat(tmp_path / "train.jsonl", 8)
    return tmp_path


def test_unloadable_model_leaves_no_run_dir(tiny_model_dir, data, tmp_path):
    from tunesmith.models import ModelError

    cfg = make_cfg(tiny_model_dir, data, tmp_path, "missing", model=str(tmp_path / "no-such-model"))
    with pytest.raises(ModelError):
        train(cfg, console=QUIET, show_progress=False)
    assert not cfg.run_dir.exists()
    broken = tmp_path / "broken-model"  # resolves and tokenizes, then its weights do not load
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    cfg = make_cfg(broken, data, tmp_path, "broken")
    with pytest.raises(Exception):
        train(cfg, console=QUIET, show_progress=False)
    assert not cfg.run_dir.exists()


def test_refused_adapter_setting_leaves_no_run_dir(tiny_model_dir, data, tmp_path):
    from tunesmith.train.adapters import MethodError

    cfg = make_cfg(tiny_model_dir, data, tmp_path, "bad-target", lora={"r": 4, "target_modules": ["qproj"]})
    with pytest.raises(MethodError, match="not found in the model"):
        train(cfg, console=QUIET, show_progress=False)
    assert not cfg.run_dir.exists()


def test_refused_force_keeps_the_finished_run(tiny_model_dir, data, tmp_path):
    from tunesmith.train.adapters import MethodError

    cfg = make_cfg(tiny_model_dir, data, tmp_path, "kept", train={"max_steps": 1, "batch_size": 2})
    train(cfg, console=QUIET, show_progress=False)
    before = {p.relative_to(cfg.run_dir): p.read_bytes() for p in cfg.run_dir.rglob("*") if p.is_file()}
    bad = cfg.model_copy(deep=True)
    bad.lora.target_modules = ["qproj"]
    with pytest.raises(MethodError):
        train(bad, force=True, console=QUIET, show_progress=False)
    after = {p.relative_to(cfg.run_dir): p.read_bytes() for p in cfg.run_dir.rglob("*") if p.is_file()}
    assert after == before  # adapter, run.json, config.yaml, metrics: all as the finished run left them
    assert json.loads((cfg.run_dir / "run.json").read_text())["status"] == "finished"
