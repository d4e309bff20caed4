"""export gguf (tunesmith.deploy.gguf_export) refuses, by name and before loading weights, the architectures,
rope types and tensors llama.cpp would not run as transformers does, and writes nothing then."""

from __future__ import annotations

import json

import pytest

from tests.helpers import deploy_cli as _cli, make_run, one_line as _text
from tunesmith.deploy import gguf_export
from tunesmith.deploy.registry import Registry


def _tiny_base(root, model_type: str, **extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.demo.tiny import build_tokenizer

    root.mkdir(parents=True)
    tok = build_tokenizer(root)
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=256, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, bos_token_id=None, **extra)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(root))
    return root


@pytest.mark.parametrize("model_type, extra, message", [
    ("olmo", {}, "model type 'olmo': `export gguf` writes llama, mistral, qwen2, qwen3, gemma3_text, phi3"),
    ("gemma", {"head_dim": 8}, "model type 'gemma' (Gemma 1; Gemma 3 (gemma3_text) is supported)"),
    ("llama", {"attention_bias": True}, "llama model with attention_bias (the llama GGUF layout has no such bias"),
    ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}},
     "llama model with rope type 'yarn' (supported for llama: default, llama3)"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 16},
     "qwen2 model with use_sliding_window (llama.cpp's qwen graphs have no sliding window)"),
])
def test_gguf_refuses_what_it_cannot_hold_and_writes_nothing(tmp_path, model_type, extra, message):
    base = _tiny_base(tmp_path / "base", model_type, **extra)
    run = make_run(tmp_path / "runs", base, "r", seed=1)
    db = tmp_path / "r.db"
    Registry(db).add(run, "arch")
    vid = Registry(db).versions()[0].id
    out = tmp_path / "out" / "m.gguf"
    res = _cli("export", "gguf", vid, "-o", str(out), "--registry", str(db))
    assert res.exit_code == 2 and message in _text(res)
    assert not out.parent.exists()
    # merging is architecture-neutral: it works and is parity-checked
    res = _cli("export", "merge", vid, "-o", str(tmp_path / "merged"), "--prompts", "2", "--registry", str(db),
               "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["parity"][0]["identical_greedy"] == 2


def test_gguf_writer_refuses_tensors_it_would_drop(tmp_path):
    """A config that understates the model (bias tensors present, attention_bias false) is caught by the tensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.demo.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         attention_bias=True))
    model.config.attention_bias = False
    with torch.no_grad():
        with pytest.raises(gguf_export.ExportError,
                           match=r"no place in the llama GGUF layout: model\.layers\.0\.self_attn\.k_proj\.bias"):
            gguf_export.write_gguf(model, tok, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.partial").exists()


@pytest.mark.parametrize("cfg, message", [
    ({"model_type": "gemma3"}, "model type 'gemma3' (a multimodal Gemma 3 (vision tower included); export its text"),
    ({"model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64,
      "num_attention_heads": 4, "head_dim": 16, "query_pre_attn_scalar": 32},
     "gemma3_text model with query_pre_attn_scalar 32 != head_dim 16"),
    ({"model_type": "phi3", "hidden_act": "gelu"}, "phi3 model with activation 'gelu' (llama.cpp's phi3 uses silu)"),
    ({"model_type": "qwen3", "hidden_act": "silu", "rope_scaling": {"type": "dynamic", "factor": 2.0}},
     "qwen3 model with rope type 'dynamic' (supported for qwen3: default)"),  # an older config.json's spelling
])
def test_check_supported_names_what_llama_cpp_would_run_differently(cfg, message):
    with pytest.raises(gguf_export.ExportError) as e:
        gguf_export.check_supported(cfg)
    assert message in str(e.value)


def test_check_supported_accepts_the_families_llama_cpp_runs():
    for cfg in ({"model_type": "llama", "hidden_act": "silu", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
                {"model_type": "qwen2", "hidden_act": "silu", "use_sliding_window": False},
                {"model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
                 "num_attention_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
                 "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}},
                {"model_type": "phi3", "hidden_act": "silu", "rope_scaling": {"type": "longrope"}}):
        gguf_export.check_supported(cfg)


def test_the_transformers_fallback_is_not_trusted_for_families_it_misreads(tmp_path):
    """Without llama.cpp, export gguf re-loads the file with transformers; for Llama 3, Gemma 3 and Qwen3 that
    reload is wrong (not the file), so it says the parity is unchecked instead of failing a good export."""
    import json
    from types import SimpleNamespace

    from tunesmith.deploy.gguf_reload import reload_misreads

    def version(cfg):
        d = tmp_path / cfg["model_type"] / str(len(list(tmp_path.glob("*/*"))))
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        return SimpleNamespace(base_model=str(d))

    assert "rope_freqs" in reload_misreads(version({"model_type": "llama", "rope_scaling": {"rope_type": "llama3"}}))
    assert "gemma3_text" in reload_misreads(version({"model_type": "gemma3_text"}))
    assert "qwen3" in reload_misreads(version({"model_type": "qwen3"}))
    for faithful in ({"model_type": "llama"}, {"model_type": "mistral"}, {"model_type": "qwen2"},
                     {"model_type": "phi3"}):
        assert reload_misreads(version(faithful)) is None
