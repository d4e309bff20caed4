"""Data parallel through torch.distributed (gloo on CPU): 2 processes × batch 2 train the same adapter as 1 × batch 4.

Same global batch: the distributed sampler hands rank 0 and rank 1 the two halves of what
one process would take in one step. Examples have different lengths, and the comparison
still holds because the trainer normalises the loss by the trained tokens of the whole
global batch (average_tokens_across_devices), not per process.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers import write_chat
from tests.helpers import EXAMPLES


def config(path, tiny, data, name, batch_size, **train):
    path.write_text(yaml.safe_dump({
        "name": name, "model": str(tiny), "output_dir": "runs", "data": {"train": str(data), "max_seq_len": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 3, "batch_size": batch_size, "lr": 1e-2, "logging_steps": 1, "seed": 0,
                  "dtype": "float32", "performance": "off", **train},
    }))
    return path


def free_port() -> int:
    """A port nobody holds now: a fixed one can still be taken by an earlier run or another program."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# plain: 1 × batch 4 against 2 × batch 2. fast: one 128-token row per micro-batch, 1 process × 2 accumulation
# steps against 2 processes × 1 (the wrapped model's own forward, loss scaled by the global trained tokens).
SETUPS = {"plain": ({"batch_size": 4}, {"batch_size": 2}),
          "fast": ({"batch_size": 1, "performance": "on", "row_tokens": 128, "grad_accum": 2},
                   {"batch_size": 1, "performance": "on", "row_tokens": 128})}


@pytest.mark.parametrize("path", list(SETUPS))
def test_two_processes_match_one(tiny_model_dir, tmp_path, path):
    data = write_chat(tmp_path / "train.jsonl", 16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    single_train, multi_train = SETUPS[path]
    one = config(tmp_path / "one.yaml", tiny_model_dir, data, "one", **single_train)
    two = config(tmp_path / "two.yaml", tiny_model_dir, data, "two", **multi_train)
    single = subprocess.Popen([sys.executable, "-m", "tunesmith.train", str(one)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--master_port", str(free_port()), "-m", "tunesmith.train", str(two)],
                           env=env, capture_output=True, timeout=300)
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err.decode()[-3000:]
    assert multi.returncode == 0, multi.stderr.decode()[-3000:]

    rows = {n: [json.loads(x) for x in (tmp_path / "runs" / n / "metrics.jsonl").read_text().splitlines()]
            for n in ("one", "two")}
    if path == "plain":
        assert [r["epoch"] for r in rows["two"]] == [0.25, 0.5, 0.75]  # one metrics log, 4 examples per step
    else:
        assert json.loads((tmp_path / "runs" / "two" / "run.json").read_text())["fast_path"]["direct"] is False
    assert [r["loss"] for r in rows["two"]] == pytest.approx([r["loss"] for r in rows["one"]], abs=1e-4)
    a = load_file(tmp_path / "runs" / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "runs" / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("launch_config", ["ddp.yaml", "fsdp.yaml"])
def test_shipped_accelerate_configs_launch_two_processes(tiny_model_dir, tmp_path, launch_config):
    """`accelerate launch --config_file examples/accelerate/…` as the README says, on 2 CPU processes (without
    GPUs accelerate runs data parallel): the same losses as one process with the same global batch."""

    shipped = EXAMPLES / "accelerate" / launch_config
    data = write_chat(tmp_path / "train.jsonl", 16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = config(tmp_path / "one.yaml", tiny_model_dir, data, "one", batch_size=4)
    two = config(tmp_path / "two.yaml", tiny_model_dir, data, "two", batch_size=2)
    single = subprocess.Popen([sys.executable, "-m", "tunesmith.train", str(one)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    multi = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(shipped),
                            "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
                            "-m", "tunesmith.train", str(two)], env=env, capture_output=True, timeout=300)
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err.decode()[-3000:]
    assert multi.returncode == 0, multi.stderr.decode()[-3000:]
    rows = {n: [json.loads(x) for x in (tmp_path / "runs" / n / "metrics.jsonl").read_text().splitlines()]
            for n in ("one", "two")}
    assert [r["epoch"] for r in rows["two"]] == [0.25, 0.5, 0.75]  # 2 processes × 2 examples per step
    assert [r["loss"] for r in rows["two"]] == pytest.approx([r["loss"] for r in rows["one"]], abs=1e-4)
