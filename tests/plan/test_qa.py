"""Edge cases of `tunesmith plan` found by an independent check."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
from typer.testing import CliRunner

from tunesmith.plan import breakeven as be
from tunesmith.plan.cli import app

runner = CliRunner()


def test_free_training_breaks_even_at_zero_and_plot_does_not_say_never(tmp_path, monkeypatch):
    import matplotlib.axes

    titles: list[str] = []
    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, *a, **k: (titles.append(t), real(self, t, *a, **k))[1])
    result = be.breakeven(0.01, 0.0, 0.0, requests_per_day=10)
    assert result.breakeven_requests == 0.0 and not result.never_breaks_even
    be.plot_cumulative(result, tmp_path / "free.png")
    assert (tmp_path / "free.png").stat().st_size > 0
    assert not any("never" in t for t in titles)


def test_breakeven_with_no_or_negative_saving_never_pays_back():
    for ft in ("0.01", "0.02"):  # 2000 tokens x $5/M = $0.01 per request
        res = runner.invoke(app, ["breakeven", "--overhead-tokens", "2000", "--price-in", "5",
                                  "--ft-cost-per-request", ft, "--training-cost", "50", "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["never_breaks_even"] is True and out["breakeven_requests"] is None


def test_memory_qlora_from_local_qwen2_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}))
    res = runner.invoke(app, ["memory", "--model", str(tmp_path), "--method", "qlora", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["params"] == 494_032_768  # Qwen2.5-0.5B's published count, q/k/v biases included
    # LoRA r=16 on the 7 projections: 16 * sum(in + out) per layer, 24 layers
    assert out["trainable_params"] == 16 * (2 * (896 + 896) + 2 * (896 + 128) + 3 * (896 + 4864)) * 24
