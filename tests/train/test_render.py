"""`data render` (tunesmith.train.render) counts examples as training does, the mixed-in ones included."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.helpers import train_config as _config

runner = CliRunner()


def test_render_counts_include_the_mix_like_training(tiny_model_dir, tmp_path):
    import typer

    from tunesmith.train.render import render

    (tmp_path / "general.json").write_text(json.dumps([{"instruction": f"Do {i}", "input": "", "output": f"Done {i}"}
                                                       for i in range(3)]))
    f = _config(tmp_path, tiny_model_dir, data={"mix": [{"path": "general.json", "weight": 0.25}]})
    cmd = typer.Typer()
    cmd.command()(render)
    out = json.loads(runner.invoke(cmd, [str(f), "--n", "1", "--json"]).stdout)
    assert out["report"]["total"] == 8  # 6 of train.jsonl + round(8 × 0.25) from the mix, as training counts
    assert out["examples"][0]["origin"] == f"{tmp_path / 'train.jsonl'}:1"
