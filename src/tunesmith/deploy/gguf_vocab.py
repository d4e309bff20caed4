"""The tokenizer as GGUF metadata, in the one of llama.cpp's two tokenizer models the Hugging Face one matches.

- Byte-level BPE (GPT-2 style: SmolLM2, Llama 3, Qwen2/3, most Phi-3.5+): `gpt2`, tokens in id order and the
  merges; `tokenizer.ggml.pre` names llama.cpp's built-in pre-tokenizer regex, recognised from the
  tokenizer's own Split regex (llama.cpp cannot run an arbitrary one).
- SentencePiece-style BPE (a ▁ for spaces, <0xNN> byte fallback: Gemma, Llama 2, Phi-3, Mistral v0.1):
  `llama`, tokens with scores. llama.cpp merges the adjacent pair whose joined piece scores highest; a
  tokenizer converted from SentencePiece lists its pieces by falling score, so -id is that order.
"""

from __future__ import annotations

import json
import re

from tunesmith.models import DEFAULT_MODEL, embedded_gguf, turn_end_token_id

# The Split regex of a tokenizer.json → llama.cpp's name for the same pre-tokenizer (llama-vocab.cpp).
_PRE_BY_REGEX = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "qwen2",
}
_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


def _error(msg: str):
    from tunesmith.deploy.gguf_export import ExportError

    return ExportError(msg)


def _parts(node: dict | None, key: str) -> list[dict]:
    """A normalizer or pre-tokenizer as the flat list of its steps (a Sequence is unrolled)."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for sub in node.get(key, []) for p in _parts(sub, key)]
    return [node]


def _sentencepiece_style(spec: dict) -> bool:
    model = spec.get("model") or {}
    norm = _parts(spec.get("normalizer"), "normalizers")
    pre = _parts(spec.get("pre_tokenizer"), "pretokenizers")
    spaces = any(n.get("type") == "Replace" and n.get("content") == "▁" for n in norm) or any(
        p.get("type") == "Metaspace" for p in pre)
    return model.get("type") == "BPE" and bool(model.get("byte_fallback")) and spaces


def _space_prefix(spec: dict) -> bool:
    """Whether a ▁ is put before the text (Llama 2, Phi-3), which llama.cpp calls add_space_prefix (Gemma: no)."""
    norm = _parts(spec.get("normalizer"), "normalizers")
    pre = _parts(spec.get("pre_tokenizer"), "pretokenizers")
    return any(n.get("type") == "Prepend" and n.get("prepend") == "▁" for n in norm) or any(
        p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never" for p in pre)


def pre_tokenizer_name(tok, model_spec: str | None) -> str:
    """llama.cpp's name for how text is split before byte-level BPE."""
    if model_spec and model_spec.lower() in (DEFAULT_MODEL, "default"):
        src = embedded_gguf()
        if src is not None:
            import gguf

            field = gguf.GGUFReader(src).fields.get("tokenizer.ggml.pre")
            if field is not None:
                return str(field.contents())
    pre = json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = _parts(pre, "pretokenizers")
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True):
        return "gpt-2"
    splits = [s for s in steps if s.get("type") == "Split"]
    if len(splits) == 1 and [s["type"] for s in steps] == ["Split", "ByteLevel"] and not steps[1].get("use_regex"):
        name = _PRE_BY_REGEX.get((splits[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise _error(
        f"tokenizer pre-tokenizer {[s.get('type') for s in steps]} has no known llama.cpp name; pass --pre NAME "
        "(the value of tokenizer.ggml.pre used by llama.cpp for this model family)"
    )


def _pieces(tok, spec: dict, n_vocab: int, sentencepiece: bool) -> tuple[list[str], list[int]]:
    import gguf

    model = spec["model"]
    tokens: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types: dict[int, int] = {}
    for i, t in tokens.items():
        byte = sentencepiece and _BYTE_PIECE.match(t)
        types[i] = gguf.TokenType.BYTE if byte else gguf.TokenType.NORMAL
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if tok.unk_token_id is not None and tok.unk_token_id in types:
        types[tok.unk_token_id] = gguf.TokenType.UNKNOWN
    if max(tokens) >= n_vocab:
        raise _error(f"tokenizer has id {max(tokens)} but the embedding has only {n_vocab} rows")
    # Embedding rows beyond the tokenizer (padding for speed) still need a token each.
    return ([tokens.get(i, f"[PAD{i}]") for i in range(n_vocab)],
            [int(types.get(i, gguf.TokenType.UNUSED)) for i in range(n_vocab)])


def write_tokenizer(w, tok, n_vocab: int, model_spec: str | None = None, pre: str | None = None) -> None:
    """Every tokenizer.* field llama.cpp reads: the vocabulary, special ids, BOS handling and the chat template."""
    import gguf

    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    sentencepiece = _sentencepiece_style(spec)
    if model.get("type") != "BPE":
        raise _error(f"tokenizer model {model.get('type')!r}: only BPE tokenizers (byte-level, or SentencePiece-style "
                     "with byte fallback) are exported")
    tokens, types = _pieces(tok, spec, n_vocab, sentencepiece)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if sentencepiece:
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_scores([-float(i) if t == gguf.TokenType.NORMAL else 0.0 for i, t in enumerate(types)])
        w.add_add_space_prefix(_space_prefix(spec))
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre or pre_tokenizer_name(tok, model_spec))
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for setter, token_id in ((w.add_bos_token_id, tok.bos_token_id), (w.add_eos_token_id, tok.eos_token_id),
                             (w.add_pad_token_id, tok.pad_token_id), (w.add_unk_token_id, tok.unk_token_id)):
        if token_id is not None:
            setter(int(token_id))
    turn_end = turn_end_token_id(tok) if tok.chat_template else None
    if turn_end is not None and turn_end != tok.eos_token_id:  # llama.cpp stops on end-of-turn (eot) as on EOS
        w.add_eot_token_id(int(turn_end))
    probe = tok("a", add_special_tokens=True)["input_ids"]
    w.add_add_bos_token(tok.bos_token_id is not None and bool(probe) and probe[0] == tok.bos_token_id)
    w.add_add_eos_token(tok.eos_token_id is not None and bool(probe) and probe[-1] == tok.eos_token_id)
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)

