"""The model families `export gguf` writes, and what each one's llama.cpp architecture expects.

One row per transformers `model_type`; the tensor names come from the `gguf` package's own mapping
(`gguf.get_tensor_name_map`), so a Hugging Face weight with no place in the architecture is found, not
dropped. What a row says (checked in llama.cpp on tiny random models, tests/deploy/test_gguf_arch.py):
- llama / mistral → `llama`: llama.cpp rotates pairs of adjacent dims, so q/k rows are permuted from the
  Hugging Face half-split layout; Llama 3's rope scaling is a `rope_freqs` tensor of per-dim divisors.
- qwen2 / qwen3 → `qwen2` / `qwen3`: half-split ("neox") rope as in transformers, no permutation;
  qwen2's q/k/v biases and qwen3's q/k norms are ordinary tensors of the architecture.
- gemma3_text → `gemma3`: Gemma's RMSNorm scales by (1 + w), llama.cpp's by w, so norms are stored +1;
  the sliding-window layers, their own rope base and the window size are header fields.
- phi3 → `phi3`: fused qkv and gate_up projections are kept fused; longrope factors become tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    activation: str  # the MLP activation llama.cpp hard-codes for the architecture
    rope_types: tuple[str, ...]  # Hugging Face rope types this writer reproduces
    llama_rotary: bool = False  # q/k rows permuted to llama.cpp's adjacent-pair rope
    norm_shift: float = 0.0  # added to every *norm.weight
    biases: bool = False  # linear biases (qwen2's q/k/v) are tensors of the architecture
    refusals: Callable[[dict[str, Any]], list[str]] = field(default=lambda cfg: [])


def _no_sliding_qwen(cfg: dict[str, Any]) -> list[str]:
    # llama.cpp's qwen2/qwen3 attend over the whole context: a sliding-window Qwen would differ past the window
    sliding = cfg.get("use_sliding_window")
    return ["use_sliding_window (llama.cpp's qwen graphs have no sliding window)"] if sliding else []


def _gemma3_refusals(cfg: dict[str, Any]) -> list[str]:
    found = []
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if cfg.get("query_pre_attn_scalar", head_dim) != head_dim:  # llama.cpp scales queries by 1/sqrt(head_dim)
        found.append(f"query_pre_attn_scalar {cfg['query_pre_attn_scalar']} != head_dim {head_dim}")
    if cfg.get("attn_logit_softcapping"):
        found.append("attn_logit_softcapping (llama.cpp's gemma3 has none)")
    types = cfg.get("layer_types") or []
    if types and set(types) - {"sliding_attention", "full_attention"}:
        found.append(f"layer types {sorted(set(types))}")
    return found


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "silu", ("default", "llama3"), llama_rotary=True),
    "mistral": Family("llama", "silu", ("default",), llama_rotary=True),
    "qwen2": Family("qwen2", "silu", ("default",), biases=True, refusals=_no_sliding_qwen),
    "qwen3": Family("qwen3", "silu", ("default",), refusals=_no_sliding_qwen),
    "gemma3_text": Family("gemma3", "gelu_pytorch_tanh", ("default",), norm_shift=1.0, refusals=_gemma3_refusals),
    "phi3": Family("phi3", "silu", ("default", "longrope")),
}
# Names users meet that are close to a supported one, and what to do instead.
_HINTS = {
    "gemma3": "a multimodal Gemma 3 (vision tower included); export its text model (Gemma3ForCausalLM)",
    "gemma": "Gemma 1; Gemma 3 (gemma3_text) is supported",
    "gemma2": "Gemma 2; Gemma 3 (gemma3_text) is supported",
}


def rope(cfg: dict[str, Any], layer: str = "full_attention") -> dict[str, Any]:
    """One layer type's rope parameters with `rope_type` and `rope_theta` filled in, from a transformers 5
    config (`rope_parameters`, per layer type for Gemma 3) or an older config.json (`rope_scaling`, `rope_theta`)."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" in params or "sliding_attention" in params:
        params = dict(params.get(layer) or {})
    params["rope_type"] = params.get("rope_type", params.get("type")) or "default"
    if "rope_theta" not in params:
        old = cfg.get("rope_local_base_freq") if layer == "sliding_attention" else None
        params["rope_theta"] = old or cfg.get("rope_theta") or 10000.0
    return params


def family(cfg: dict[str, Any]) -> Family:
    """The family of a config (a config.json's dict), or an ExportError naming everything that does not fit."""
    from tunesmith.deploy.gguf_export import ExportError

    model_type = cfg.get("model_type")
    fam = FAMILIES.get(model_type)
    if fam is None:
        hint = f" ({_HINTS[model_type]})" if model_type in _HINTS else ""
        raise ExportError(f"model type {model_type!r}{hint}: `export gguf` writes {', '.join(FAMILIES)}; "
                          "use `tunesmith export merge` and llama.cpp's own converter")
    problems = fam.refusals(cfg)
    act = cfg.get("hidden_activation") or cfg.get("hidden_act")
    if act != fam.activation:
        problems.append(f"activation {act!r} (llama.cpp's {fam.arch} uses {fam.activation})")
    for layer in ("full_attention", "sliding_attention") if fam.arch == "gemma3" else ("full_attention",):
        kind = rope(cfg, layer)["rope_type"]
        if kind not in fam.rope_types:
            problems.append(f"rope type {kind!r} (supported for {model_type}: {', '.join(fam.rope_types)})")
    biased = [k for k in ("attention_bias", "mlp_bias") if cfg.get(k)]
    if biased:  # qwen2's q/k/v biases are not flagged by attention_bias; these would be extra, unplaced tensors
        problems.append(f"{' and '.join(biased)} (the {fam.arch} GGUF layout has no such bias tensors)")
    if problems:
        raise ExportError(f"{model_type} model with {'; '.join(problems)}: not exportable to GGUF by tunesmith; "
                          "use `tunesmith export merge` and llama.cpp's own converter")
    return fam


def header(w, fam: Family, cfg: dict[str, Any]) -> None:
    """The hyper-parameters llama.cpp reads for the family (the common ones are written by the caller)."""
    import gguf

    n_heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    params = rope(cfg)
    w.add_rope_freq_base(float(params["rope_theta"]))
    if fam.arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_freq_base_swa(float(rope(cfg, "sliding_attention")["rope_theta"]))
        w.add_sliding_window(int(cfg["sliding_window"]))
        types = cfg.get("layer_types")
        if types:  # per layer: the pattern llama.cpp would otherwise assume (5 sliding, 1 full) is not read
            w.add_sliding_window_pattern([t == "sliding_attention" for t in types])
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
        return
    if head_dim * n_heads != cfg["hidden_size"]:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    rot = params.get("partial_rotary_factor") or cfg.get("partial_rotary_factor") or 1.0
    w.add_rope_dimension_count(int(rot * head_dim))
    if fam.arch == "phi3":
        orig = params.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
        w.add_rope_scaling_orig_ctx_len(int(orig or cfg["max_position_embeddings"]))
        w.add_sliding_window(int(cfg.get("sliding_window") or 0))  # 0: no window (llama.cpp's Phi-4 test)
        if params["rope_type"] == "longrope":
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)


def rope_scaling(w, model, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Rope scaling llama.cpp takes as tensors, computed by transformers' own rope functions so the factors are
    exactly the ones the model was trained with; a header field when the scaling has one."""
    import gguf
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = rope(cfg)
    kind = params["rope_type"]
    if kind == "llama3":  # llama.cpp divides each default frequency by rope_freqs[i]
        scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](model.config, "cpu")
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        default = 1.0 / (float(params["rope_theta"]) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
        return {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight":
                (default / scaled.double().numpy()).astype(np.float32)}
    if kind == "longrope":  # llama.cpp picks long or short factors by context size, as transformers by length
        _, attn_factor = ROPE_INIT_FUNCTIONS["longrope"](model.config, "cpu")
        w.add_rope_scaling_attn_factors(float(attn_factor))
        return {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight":
                np.asarray(params["long_factor"], dtype=np.float32),
                gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight":
                np.asarray(params["short_factor"], dtype=np.float32)}
    return {}
