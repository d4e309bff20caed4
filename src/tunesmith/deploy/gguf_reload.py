"""Parity of a GGUF export re-loaded by transformers: the fallback check when llama.cpp is not installed
(deploy/runtimes.py runs the file in llama.cpp itself). Logits of every prompt position are compared with
the fp32 merged model's, within gguf_export.TOLERANCE, and the greedy continuations are counted."""

from __future__ import annotations

from pathlib import Path

from tunesmith.deploy.gguf_export import TOLERANCE, ExportError
from tunesmith.deploy.merge import ParityReport, encode_chat, greedy, load_adapted, parity_prompts
from tunesmith.deploy.registry import Version


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


def reload_misreads(version: Version) -> str | None:
    """Why transformers' GGUF loader cannot stand in for llama.cpp on this version's family, or None.
    Measured on tiny models whose files agree with transformers inside llama.cpp itself: it ignores Llama 3's
    rope_freqs (0.58 relative logit difference), misreads Gemma 3's sliding window and rope bases (0.73) and
    fails on Qwen3's head size; Llama 2-style, Mistral, Qwen2 and Phi-3 files re-load faithfully."""
    import json

    cfg_file = Path(version.base_model) / "config.json"
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    from tunesmith.deploy.gguf_arch import rope

    model_type = cfg.get("model_type")
    if model_type in ("gemma3_text", "qwen3"):
        return f"transformers cannot read a {model_type} GGUF back faithfully"
    if model_type == "llama" and rope(cfg)["rope_type"] == "llama3":
        return "transformers ignores the rope_freqs tensor of a Llama 3 GGUF"
    return None


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
