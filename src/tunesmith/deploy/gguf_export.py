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
from tunesmith.deploy.merge import ParityReport, encode_chat, greedy, load_adapted, parity_prompts
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
