"""GGUF export (llama.cpp, Ollama), written with the `gguf` package.

Which llama.cpp architecture a model becomes, and how its weights and hyper-parameters are laid out, is
one table: deploy/gguf_arch.py; the tokenizer metadata is deploy/gguf_vocab.py. This module maps the
tensors (gguf's own name map, so nothing is silently dropped) and writes the file.

Parity tolerances, as max |logit difference| relative to the largest |logit| of the fp32
merged model over every prompt position: f16 <= 1e-2, q8_0 <= 1e-1 (measured on SmolLM2-135M
with a merged LoRA: f16 1.0e-3, q8_0 4.5e-2). Beyond that the tokenizer must encode every
parity prompt to the same ids. The report also gives the share of positions whose top-1 token
agrees and how many greedy continuations are identical (informative: quantisation may
legitimately flip a near-tie).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.deploy import gguf_arch, gguf_vocab
from tunesmith.deploy.merge import load_adapted
from tunesmith.deploy.modelfile import modelfile_path, modelfile_text
from tunesmith.deploy.registry import Version
from tunesmith.errors import UserError

TOLERANCE = {"f16": 1e-2, "q8_0": 1e-1}
QUANT_BLOCK = 32  # q8_0 quantises rows in blocks of 32 values; other rows stay f16


class ExportError(UserError):
    """A model this exporter cannot write; the message says which part and why."""


def check_supported(cfg: dict[str, Any]) -> None:
    """Refuse, before any work, a model llama.cpp would not run as transformers does (gguf_arch.FAMILIES)."""
    gguf_arch.family(cfg)


def _to_llama_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF stores each head's rotary dims as [first half | second half]; llama.cpp wants them pairwise interleaved."""
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_tensors(model, fam: gguf_arch.Family, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every weight under its llama.cpp name, transformed as the family needs; refuses any it has no place for."""
    import gguf

    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[fam.arch.upper()], cfg["num_hidden_layers"])
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH[fam.arch.upper()]]}
    tied = bool(cfg.get("tie_word_embeddings"))
    out, left_out = {}, []
    for hf_name, array in state.items():
        if "rotary_emb" in hf_name or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias") if fam.biases else (".weight",))
        if name is None or _template(name) not in allowed:
            left_out.append(hf_name)
            continue
        if fam.norm_shift and hf_name.endswith("norm.weight"):
            array = array + fam.norm_shift
        if fam.llama_rotary and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = cfg["num_attention_heads"] if "attn_q" in name else cfg["num_key_value_heads"]
            array = _to_llama_rotary(array, heads)
        out[name] = array
    if left_out:  # whatever the layout cannot hold would be silently dropped: a broken file
        raise ExportError(f"tensors with no place in the {fam.arch} GGUF layout: {', '.join(sorted(left_out)[:4])}"
                          + (f" and {len(left_out) - 4} more" if len(left_out) > 4 else ""))
    return out


def _template(name: str) -> str:
    """blk.3.attn_q.weight → blk.{bid}.attn_q, the form gguf.TENSOR_NAMES uses."""
    base = name.rsplit(".", 1)[0]
    parts = base.split(".")
    if parts[0] == "blk" and len(parts) > 2:
        parts[1] = "{bid}"
    return ".".join(parts)


def write_gguf(model, tok, path: str | Path, qtype: str = "f16", name: str = "model",
               model_spec: str | None = None, pre: str | None = None) -> Path:
    """Write a merged (plain transformers) model and its tokenizer as one GGUF file llama.cpp runs."""
    import gguf

    if qtype not in TOLERANCE:
        raise ExportError(f"--type {qtype!r}: expected one of {', '.join(TOLERANCE)}")
    cfg = model.config.to_dict()
    fam = gguf_arch.family(cfg)
    tensors = _gguf_tensors(model, fam, cfg)
    n_vocab = tensors["token_embd.weight"].shape[0]

    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), fam.arch)
    w.add_name(name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    gguf_arch.header(w, fam, cfg)
    tensors.update(gguf_arch.rope_scaling(w, model, cfg))
    gguf_vocab.write_tokenizer(w, tok, n_vocab, model_spec=model_spec, pre=pre)

    for gguf_name, array in tensors.items():
        if array.ndim == 1:  # norms, biases and rope factors stay f32, as llama.cpp expects
            w.add_tensor(gguf_name, array.astype(np.float32))
        elif qtype == "q8_0" and array.shape[-1] % QUANT_BLOCK == 0:
            q = gguf.quants.quantize(array.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name, array.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out


def export_gguf(version: Version, path: str | Path, qtype: str = "f16", pre: str | None = None) -> Path:
    """Merge the version in memory, write FILE and its Ollama Modelfile beside it (`modelfile_path`)."""
    base_cfg = Path(version.base_model) / "config.json"
    if base_cfg.is_file():  # an unsupported model is refused before minutes of loading and merging
        check_supported(json.loads(base_cfg.read_text(encoding="utf-8")))
    version.check_mergeable()
    adapted, tok = load_adapted(version)
    merged = adapted.merge_and_unload()
    out = write_gguf(merged, tok, path, qtype, name=version.id, model_spec=version.lineage.get("model_spec"), pre=pre)
    modelfile_path(out).write_text(
        modelfile_text(out.name, tok, version.lineage.get("system_prompt")), encoding="utf-8"
    )
    return out
