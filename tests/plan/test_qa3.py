"""`tunesmith plan` as a new user meets it: hub ids, other architectures' configs, absurd numbers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tunesmith.plan import memory as mem
from tunesmith.plan.cli import app

runner = CliRunner()


def _text(res) -> str:
    return " ".join(res.output.split())  # rich wraps long messages at the terminal width


@pytest.mark.parametrize("hub_id, key", [
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
    ("mistralai/Mistral-7B-v0.1", "mistral-7b-v0.1"),
    ("mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b-v0.1"),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b"),
    ("meta-llama/Llama-2-13b-hf", "llama-2-13b"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b"),
])
def test_official_hub_ids_resolve_to_known_shapes(hub_id, key):
    res = runner.invoke(app, ["memory", "--model", hub_id, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == key


def test_mistral_v01_has_the_smaller_vocabulary():
    # 32000 vs 32768 embedding rows, untied: (32768 - 32000) * 4096 * 2 parameters apart
    assert mem.param_count(mem.KNOWN_SHAPES["mistral-7b"]) - mem.param_count(mem.KNOWN_SHAPES["mistral-7b-v0.1"]) \
        == 768 * 4096 * 2
    assert mem.param_count(mem.KNOWN_SHAPES["mistral-7b-v0.1"]) == 7_241_732_096  # Mistral-7B-v0.1's published count


def test_gemma_config_without_tie_flag_counts_the_embedding_once(tmp_path):
    # gemma-2b's config.json as published: no tie_word_embeddings key, and Gemma ties them
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
        "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 256000}))
    res = runner.invoke(app, ["memory", "--model", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["params"] == 2_506_172_416


def _tiny(model_type: str, **kw):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw))


@pytest.mark.parametrize("model_type, kw", [
    ("phi3", dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=1)),
    ("gpt2", dict(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0)),
])
def test_lora_count_of_fused_projections_matches_peft(tmp_path, model_type, kw):
    """Phi-3 (qkv_proj, gate_up_proj) and GPT-2 (c_attn) get one adapter per fused layer, not one per part."""
    from peft import LoraConfig, get_peft_model

    model = _tiny(model_type, **kw)
    model.config.save_pretrained(tmp_path)
    shape = mem.resolve_shape(str(tmp_path))
    real_params = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert mem.param_count(shape) == real_params
    assert mem.lora_param_count(shape, 8) == trainable
    # by hand for phi3: per layer qkv 8*(64+128) + o 8*(64+64) + gate_up 8*(64+192) + down 8*(96+64), 2 layers
    if model_type == "phi3":
        assert trainable == 2 * 8 * ((64 + 128) + (64 + 64) + (64 + 192) + (96 + 64)) == 11_776


@pytest.mark.parametrize("args", [
    ["breakeven", "--overhead-tokens", "100", "--price-in", "inf", "--ft-prompt-tokens", "0", "--training-cost", "5"],
    ["breakeven", "--overhead-tokens", "100", "--price-in", "5", "--ft-prompt-tokens", "0", "--training-cost", "inf"],
    ["advise", "--price-in", "inf", "--task", "chat"],
])
def test_infinite_prices_are_refused_not_printed_as_invalid_json(args):
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 2
    assert res.stdout == "" and "finite number" in _text(res)


def test_infinite_price_in_answers_file_and_price_table(tmp_path):
    answers = tmp_path / "a.yaml"
    answers.write_text("task: chat\nprice_in: 1e400\n")  # YAML 1.1 reads it as a string, pydantic as inf
    res = runner.invoke(app, ["advise", "--answers", str(answers), "--json"])
    assert res.exit_code == 2 and "price_in: Input should be a finite number" in _text(res)
    prices = tmp_path / "p.yaml"
    prices.write_text("as_of: 2025-06\nmanaged: []\nself_hosted:\n  gpu_hour_usd:\n    h100: -3\n")
    from tunesmith.plan import cost as co

    with pytest.raises(co.PriceError, match="h100: Input should be greater than or equal to 0"):
        co.load_prices(prices)


def test_answers_given_as_a_directory_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["advise", "--answers", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory, not an answers file" in _text(res)


def test_fractional_requests_per_day_are_shown_as_given():
    # 100 tokens x $5/M = $0.0005 saved per request; $50 / $0.0005 = 100,000 requests = 200,000 days at 0.5/day
    res = runner.invoke(app, ["breakeven", "--overhead-tokens", "100", "--price-in", "5", "--ft-prompt-tokens", "0",
                              "--training-cost", "50", "--requests-per-day", "0.5"])
    assert res.exit_code == 0, res.output
    assert "100,000" in res.output and "200,000.0 days at 0.5 requests/day" in _text(res)


def test_step_time_on_a_card_too_small_says_it_does_not_fit():
    res = runner.invoke(app, ["memory", "--model", "llama-3.1-70b", "--method", "full", "--gpu", "t4"])
    assert res.exit_code == 0, res.output
    assert "does not fit in its 16 GiB" in _text(res)


def test_empty_model_name_is_named_as_such():
    res = runner.invoke(app, ["memory", "--model", " "])
    assert res.exit_code == 2 and "no model given" in _text(res)


def test_cost_with_a_known_shape_name_says_it_needs_the_tokenizer(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    res = runner.invoke(app, ["cost", str(data), "--model", "meta-llama/Llama-3.1-8B-Instruct"])
    assert res.exit_code == 2
    assert "is a known shape for `plan memory`, but counting tokens needs the model's tokenizer files" in _text(res)


def test_70b_on_an_8_gib_card_does_not_fit():
    res = runner.invoke(app, ["memory", "--model", "llama-3.1-70b", "--method", "lora", "--gpu-memory", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["fits"]["8GiB"] is False and out["total_gib"] > 130
    # LoRA r=16 on all 7 projections of 80 layers, by hand: 16 * (in + out) summed per layer
    per_layer = 16 * (2 * (8192 + 8192) + 2 * (8192 + 1024) + 3 * (8192 + 28672))
    assert out["trainable_params"] == 80 * per_layer == 207_093_760
    res = runner.invoke(app, ["memory", "--model", "smollm2-135m", "--gpu-memory", "8", "--json"])
    assert json.loads(res.stdout)["fits"]["8GiB"] is True
    res = runner.invoke(app, ["memory", "--model", "smollm2-135m", "--gpu-memory", "inf"])
    assert res.exit_code == 2 and "finite number" in _text(res)


_BE = ["breakeven", "--overhead-tokens", "2300", "--price-in", "5", "--ft-cost-per-request", "0.00015",
       "--training-cost", "50"]


def test_plot_path_reported_is_the_file_written(tmp_path):
    res = runner.invoke(app, [*_BE, "--plot", str(tmp_path / "chart"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["plot"] == str(tmp_path / "chart.png") and (tmp_path / "chart.png").stat().st_size > 0
    # 2300 x $5/M = $0.0115; saving $0.01135; $50 / $0.01135 = 4405.3 requests
    assert round(out["breakeven_requests"], 1) == 4405.3


@pytest.mark.parametrize("name, message", [("", "is a directory"), ("chart.txt", "use one of .png")])
def test_unusable_plot_paths_exit_2(tmp_path, name, message):
    res = runner.invoke(app, [*_BE, "--plot", str(tmp_path / name) if name else str(tmp_path)])
    assert res.exit_code == 2 and message in _text(res)
    assert not list(tmp_path.iterdir()) and not tmp_path.with_suffix(".png").exists()


def test_price_table_given_as_a_directory(tmp_path):
    from tunesmith.plan import cost as co

    with pytest.raises(co.PriceError, match="cannot read a price table"):
        co.load_prices(tmp_path)


@pytest.mark.parametrize("model_type, extra", [
    ("qwen3", {}), ("gemma2", {}), ("gemma3_text", {}), ("llama", {"attention_bias": True, "mlp_bias": True}),
])
def test_exact_count_with_extra_norms_and_biases(tmp_path, model_type, extra):
    """Qwen3's q/k norms, Gemma 2/3's sandwich norms, Llama's o/MLP biases: param_count equals transformers'."""
    model = _tiny(model_type, vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, **extra)
    model.config.save_pretrained(tmp_path)
    assert mem.param_count(mem.resolve_shape(str(tmp_path))) == sum(p.numel() for p in model.parameters())
