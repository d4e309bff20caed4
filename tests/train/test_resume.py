"""--resume continues exactly: a run SIGKILLed after a checkpoint and resumed ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.train.recipe import train
from tests.helpers import write_chat
from tests.helpers import cli_error as _error, train_config as _config

STEPS = 30
runner = CliRunner()


def write_config(path, tiny, data, name, performance="off"):
    path.write_text(yaml.safe_dump({
        "name": name, "model": str(tiny), "output_dir": "runs",
        "data": {"train": str(data), "max_seq_len": 64},
        # dropout on: the resumed run must also restore the RNG to match
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "train": {"max_steps": STEPS, "batch_size": 4, "lr": 5e-3, "logging_steps": 1, "save_every": 5,
                  "save_total_limit": 2, "seed": 3, "performance": performance, "row_tokens": 128},
    }))
    return path


def test_rerun_of_an_interrupted_run_keeps_its_checkpoints(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir)
    ckpt = tmp_path / "runs" / "qa" / "checkpoints" / "checkpoint-7"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (tmp_path / "runs" / "qa" / "run.json").write_text('{"status": "running"}')
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert "interrupted run with a checkpoint at step 7: --resume continues it, --force starts it over" in msg
    assert (ckpt / "trainer_state.json").is_file()


def test_resume_on_edited_training_data_warns(tiny_model_dir, tmp_path):
    import shutil

    f = _config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 1})
    assert runner.invoke(app, ["train", str(f)]).exit_code == 0
    run = tmp_path / "runs" / "qa"
    shutil.rmtree(run / "checkpoints" / "checkpoint-2")  # as if killed between step 1 and 2
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with (tmp_path / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "new"},
                                          {"role": "assistant", "content": "row"}]}) + "\n")
    res = runner.invoke(app, ["train", str(f), "--resume", "--json"])
    assert res.exit_code == 0, res.output
    err = " ".join(res.stderr.split())
    assert "warning: resuming on changed data: data.train changed since the interrupted run read it" in err
    assert json.loads(res.stdout)["data"]["kept"] == 7


@pytest.mark.parametrize("performance", ["off", "on"])  # the plain TRL path and the fast path (packed rows)
def test_sigkill_then_resume_matches_uninterrupted(tiny_model_dir, tmp_path, performance):
    data = write_chat(tmp_path / "train.jsonl", 18, seed=5)  # 18 examples: epochs end mid-batch, data order matters
    quiet = Console(stderr=True, quiet=True)

    straight = train(load_config(write_config(tmp_path / "a.yaml", tiny_model_dir, data, "straight", performance)),
                     console=quiet, show_progress=False)

    cfg_path = write_config(tmp_path / "b.yaml", tiny_model_dir, data, "killed", performance)
    run_dir = tmp_path / "runs" / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.train", str(cfg_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "checkpoint-5" / "trainer_state.json").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "running"  # killed mid-way, not finished
    logged = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) < STEPS

    resumed = train(load_config(cfg_path), resume=True, console=quiet, show_progress=False)
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # no step logged twice after the resume
    assert resumed.final_train_loss == pytest.approx(straight.final_train_loss, abs=1e-4)
    a = load_file(straight.run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
