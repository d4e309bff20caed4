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

from tunesmith.deploy.merge import ParityReport, encode_chat, greedy, load_adapted, parity_prompts
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


def _chatml_ollama(turn_end: str) -> str:
    return ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}" + turn_end
            + "\n{{ end }}<|im_start|>assistant\n")


def _chatml_turn_end(tok) -> str | None:
    """What ends a turn when the template has ChatML's layout: <|im_end|>, or the EOS token (tunesmith's `chatml`
    for base models, data.chat_template); None when it renders anything else."""
    if not tok.chat_template or "<|im_start|>" not in tok.chat_template:
        return None
    try:
        text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                       tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template may refuse the probe; Ollama then reads the GGUF's own
        return None
    for end in dict.fromkeys(e for e in ("<|im_end|>", tok.eos_token) if e):
        if text == f"<|im_start|>system\nS{end}\n<|im_start|>user\nU{end}\n<|im_start|>assistant\n":
            return end
    return None


def _default_system(tok, end: str) -> str | None:
    """The system prompt the template inserts when a conversation has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM…"). Ollama's TEMPLATE only sees the messages it is sent, so without a SYSTEM line
    a conversation without a system turn would render differently from the model's own template."""
    text = tok.apply_chat_template([{"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True)
    head, tail = "<|im_start|>system\n", f"{end}\n<|im_start|>user\nU{end}\n<|im_start|>assistant\n"
    if text.startswith(head) and text.endswith(tail) and len(text) > len(head) + len(tail):
        return text[len(head):-len(tail)]
    return None


def modelfile_path(gguf_path: str | Path) -> Path:
    """Each export's own Modelfile beside it (legal.q8_0.gguf → legal.q8_0.Modelfile), so a second export
    into the same folder does not overwrite the first one's; `ollama create NAME -f` takes any file name."""
    return Path(gguf_path).with_suffix(".Modelfile")


def modelfile_text(gguf_name: str, tok, system_prompt: str | None) -> str:
    """An Ollama Modelfile: the chat template in Ollama's Go-template syntax, the system prompt Ollama adds
    when a request has none (the run's own, else the template's default), and the stop tokens."""
    lines = [f"FROM ./{gguf_name}"]
    stops = [tok.eos_token] if tok.eos_token else []
    if (end := _chatml_turn_end(tok)) is not None:
        lines.append(f'TEMPLATE """{_chatml_ollama(end)}"""')
        stops += [end, "<|im_start|>"]
        system_prompt = system_prompt or _default_system(tok, end)
    else:
        lines.append("# chat template: not ChatML; Ollama reads tokenizer.chat_template from the GGUF file")
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    for s in dict.fromkeys(stops):
        lines.append(f"PARAMETER stop {json.dumps(s)}")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


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


def gguf_type(path: str | Path) -> str:
    """The weight type a GGUF file declares (general.file_type), as --type spells it."""
    import gguf

    try:
        field = gguf.GGUFReader(str(Path(path).expanduser())).fields.get("general.file_type")
    except Exception as e:  # truncated or not a GGUF file at all
        raise ExportError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    names = {int(gguf.LlamaFileType.MOSTLY_F16): "f16", int(gguf.LlamaFileType.MOSTLY_Q8_0): "q8_0"}
    found = names.get(int(field.contents())) if field is not None else None
    if found is None:
        raise ExportError(f"{path}: file type {field.contents() if field else 'missing'} is not one tunesmith "
                          f"checks (expected {', '.join(TOLERANCE)})")
    return found


def verify_gguf(version: Version, path: str | Path, qtype: str, n: int = 8, max_new_tokens: int = 24) -> ParityReport:
    """Re-load the GGUF with transformers and compare it with the fp32 merged model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path).expanduser().resolve()
    adapted, tok = load_adapted(version)
    merged = adapted.merge_and_unload().eval()
    g_tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    g_model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32).eval()
    prompts = parity_prompts(version, n)
    identical, max_abs, ref_max, mismatches, tok_mismatch = 0, 0.0, 0.0, [], []
    top1_same = positions = 0
    for messages in prompts:
        ids = encode_chat(tok, messages)
        if encode_chat(g_tok, messages) != ids:
            tok_mismatch.append(messages[-1]["content"])
        with torch.no_grad():
            ref = merged(torch.tensor([ids])).logits[0]
            got = g_model(torch.tensor([ids])).logits[0]
        max_abs = max(max_abs, float((ref - got).abs().max()))
        ref_max = max(ref_max, float(ref.abs().max()))
        top1_same += int((ref.argmax(-1) == got.argmax(-1)).sum())
        positions += len(ids)
        a, b = greedy(merged, tok, ids, max_new_tokens), greedy(g_model, tok, ids, max_new_tokens)
        if a == b:
            identical += 1
        else:
            mismatches.append({"prompt": messages[-1]["content"], "merged": tok.decode(a), "gguf": tok.decode(b)})
    extra = {"type": qtype, "eos_matches": g_tok.eos_token_id == tok.eos_token_id,
             "top1_agreement": top1_same / max(positions, 1)}
    if tok_mismatch:
        extra["tokenizer_mismatch"] = tok_mismatch
    if not extra["eos_matches"]:
        extra["tokenizer_mismatch"] = tok_mismatch + ["<eos id differs>"]
    return ParityReport(f"gguf-{qtype}", len(prompts), identical, max_abs, max_abs / max(ref_max, 1e-12),
                        TOLERANCE[qtype], mismatches, extra)
