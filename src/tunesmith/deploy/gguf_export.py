"""GGUF export for llama-family models (llama.cpp, Ollama), written with the `gguf` package.

The llama GGUF conventions this writer follows (and transformers' GGUF loader undoes):
- q and k projection rows are permuted from the Hugging Face rotary layout (first half /
  second half of each head) to llama.cpp's interleaved pairs;
- the tokenizer is stored as a `gpt2` byte-level BPE: tokens in id order, their types
  (normal / control / user-defined / unused) and the merges;
- hyper-parameters live under `llama.*`; a model with tied embeddings has no `output.weight`.

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

from tunesmith.deploy.merge import load_adapted
from tunesmith.deploy.modelfile import modelfile_path, modelfile_text
from tunesmith.deploy.registry import Version
from tunesmith.models import DEFAULT_MODEL, embedded_gguf, turn_end_token_id
from tunesmith.errors import UserError

TOLERANCE = {"f16": 1e-2, "q8_0": 1e-1}
QUANT_BLOCK = 32  # q8_0 quantises rows in blocks of 32 values; other rows stay f16


class ExportError(UserError):
    """A model this exporter cannot write; the message says which part and why."""


_ARCHITECTURES = ("llama", "mistral")


def check_supported(cfg: dict[str, Any]) -> None:
    """Refuse, before any work, a model whose weights the llama GGUF layout cannot hold."""
    model_type = cfg.get("model_type")
    if model_type not in _ARCHITECTURES:
        raise ExportError(f"model type {model_type!r}: the GGUF exporter handles the llama family only "
                          f"({', '.join(_ARCHITECTURES)}); use `tunesmith export merge` and llama.cpp's own converter")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}  # transformers 5 / older config.json
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ExportError(f"rope type {rope_type!r} is not supported by this exporter (default rope only); "
                          "use `tunesmith export merge` and llama.cpp's own converter")
    biased = [k for k in ("attention_bias", "mlp_bias") if cfg.get(k)]
    if biased:
        raise ExportError(f"{model_type} model with {' and '.join(biased)}: the llama GGUF layout has no bias tensors, "
                          "so the file would silently lose them; use `tunesmith export merge` instead")


def _rope_theta(cfg) -> float:  # the rope type was checked in check_supported
    params = getattr(cfg, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))


def _to_llama_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF stores each head's rotary dims as [first half | second half]; llama.cpp wants them pairwise interleaved."""
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _pre_tokenizer_name(tok, model_spec: str | None) -> str:
    """llama.cpp's name for how text is split before BPE."""
    if model_spec and model_spec.lower() in (DEFAULT_MODEL, "default"):
        src = embedded_gguf()
        if src is not None:
            import gguf

            field = gguf.GGUFReader(src).fields.get("tokenizer.ggml.pre")
            if field is not None:
                return str(field.contents())
    pre = json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    raise ExportError(
        f"tokenizer pre-tokenizer {pre.get('type')!r} has no known llama.cpp name; pass --pre NAME "
        "(the value of tokenizer.ggml.pre used by llama.cpp for this model family)"
    )


def _tokenizer_fields(tok, n_vocab: int) -> dict[str, Any]:
    import gguf

    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"tokenizer model {model.get('type')!r}: only byte-level BPE tokenizers are exported")
    tokens: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types: dict[int, int] = {i: gguf.TokenType.NORMAL for i in tokens}
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if max(tokens) >= n_vocab:
        raise ExportError(f"tokenizer has id {max(tokens)} but the embedding has only {n_vocab} rows")
    # Embedding rows beyond the tokenizer (padding for speed) still need a token each.
    token_list = [tokens.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    type_list = [int(types.get(i, gguf.TokenType.UNUSED)) for i in range(n_vocab)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = tok("a", add_special_tokens=True)["input_ids"]
    return {
        "tokens": token_list,
        "types": type_list,
        "merges": merges,
        "add_bos": tok.bos_token_id is not None and bool(probe) and probe[0] == tok.bos_token_id,
    }


def write_gguf(model, tok, path: str | Path, qtype: str = "f16", name: str = "model",
               model_spec: str | None = None, pre: str | None = None) -> Path:
    """Write a merged (plain transformers) llama model and its tokenizer as one GGUF file."""
    import gguf

    if qtype not in TOLERANCE:
        raise ExportError(f"--type {qtype!r}: expected one of {', '.join(TOLERANCE)}")
    cfg = model.config
    check_supported(cfg.to_dict())
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    n_vocab = state["model.embed_tokens.weight"].shape[0]
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    written = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} | {
        f"model.layers.{i}.{part}.weight" for i in range(cfg.num_hidden_layers)
        for part in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                     "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    left_out = sorted(k for k in state if k not in written and not k.endswith("rotary_emb.inv_freq"))
    if left_out:  # whatever the layout cannot hold would be silently dropped: a broken file
        raise ExportError(f"tensors with no place in the llama GGUF layout: {', '.join(left_out[:4])}"
                          + (f" and {len(left_out) - 4} more" if len(left_out) > 4 else ""))

    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    if head_dim * n_heads != cfg.hidden_size:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(_rope_theta(cfg))
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)

    fields = _tokenizer_fields(tok, n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre or _pre_tokenizer_name(tok, model_spec))
    w.add_token_list(fields["tokens"])
    w.add_token_types(fields["types"])
    w.add_token_merges(fields["merges"])
    for setter, token_id in ((w.add_bos_token_id, tok.bos_token_id), (w.add_eos_token_id, tok.eos_token_id),
                             (w.add_pad_token_id, tok.pad_token_id), (w.add_unk_token_id, tok.unk_token_id)):
        if token_id is not None:
            setter(int(token_id))
    turn_end = turn_end_token_id(tok) if tok.chat_template else None
    if turn_end is not None and turn_end != tok.eos_token_id:  # llama.cpp stops on end-of-turn (eot) as on EOS
        w.add_eot_token_id(int(turn_end))
    w.add_add_bos_token(fields["add_bos"])
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)

    def put(gguf_name: str, array: np.ndarray) -> None:
        if array.ndim == 1:  # norms stay f32, as llama.cpp expects
            w.add_tensor(gguf_name, array.astype(np.float32))
        elif qtype == "q8_0" and array.shape[-1] % QUANT_BLOCK == 0:
            q = gguf.quants.quantize(array.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name, array.astype(np.float16))

    put("token_embd.weight", state["model.embed_tokens.weight"])
    put("output_norm.weight", state["model.norm.weight"])
    if not tied:
        put("output.weight", state["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", _to_llama_rotary(state[p + "self_attn.q_proj.weight"], n_heads))
        put(f"blk.{i}.attn_k.weight", _to_llama_rotary(state[p + "self_attn.k_proj.weight"], n_kv))
        put(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
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
