"""DPO through `tunesmith train`: pairs TRL would drop are counted, for the val set too, and the run finishes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tunesmith.cli import app
from tests.helpers import train_config as _config

runner = CliRunner()


def test_dpo_with_val_counts_pairs_trl_would_drop_and_finishes(tiny_model_dir, tmp_path):
    rows = [{"prompt": ("long prompt " * 30 if i < 3 else "") + f"say {i}", "chosen": f"Good {i}.",
             "rejected": f"bad {i}"} for i in range(8)]
    (tmp_path / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    f = _config(tmp_path, tiny_model_dir, objective="dpo",
                data={"train": "pref.jsonl", "val": "pref.jsonl", "max_seq_len": 40})
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output  # it used to end in UnboundLocalError after training with a val set
    out = json.loads(res.stdout)
    p = str(tmp_path / "pref.jsonl")
    for report in (out["data"], out["data"]["val"]):
        assert (report["total"], report["kept"]) == (8, 5)
        assert report["dropped_no_trained_tokens"] == [f"{p}:1", f"{p}:2", f"{p}:3"]
        assert report["trained_tokens"] > 0
    assert out["final_eval_loss"] is not None
    assert json.loads((tmp_path / "runs" / "qa" / "run.json").read_text())["status"] == "finished"
