"""export gguf (deploy/gguf_arch.py, gguf_vocab.py) per family, checked in llama.cpp itself: a tiny random model of
each architecture, with a tokenizer of the kind that family ships, is written as f16 GGUF and run by
llama-cpp-python; its logits must match transformers' within the f16 tolerance, its greedy continuation must be the
same, and llama.cpp's tokenizer (read from the file) must encode text to the same ids as the Hugging Face one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tunesmith.deploy import gguf_export

try:
    import llama_cpp
except ImportError:  # CI installs llama-cpp-python; there a missing one is a failure, not a skip
    if os.environ.get("CI"):
        raise
    pytest.skip("llama-cpp-python is not installed (CI installs it)", allow_module_level=True)

TEXTS = ["The tenant shall pay the rent on the first day of each month.",
         "What is 2 + 2? The answer is 4, not 22 or 2024.",
         "  two spaces, a tab\there, and a new\nline — café, naïve, 日本"]
GREEDY_TOKENS = 16


def _corpus() -> list[str]:
    from tunesmith.demo import legal

    return [m["content"] for r in legal.generate(60, seed=7) for m in r["messages"]] + TEXTS[:2]


def _byte_level(pre: str):
    """A byte-level BPE with the pre-tokenizer llama.cpp knows as `pre` (gpt-2, llama-bpe, qwen2)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tunesmith.deploy.gguf_vocab import _PRE_BY_REGEX

    tok = Tokenizer(models.BPE())
    if pre == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        regex = next(r for r, name in _PRE_BY_REGEX.items() if name == pre)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


GEMMA_SPECIALS = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}
# Phi-3 keeps Llama 2's <s> </s> <unk> and ends text with <|endoftext|>; llama.cpp looks these up by name in a
# model called phi3 (llama-vocab.cpp), so a Phi-3 tokenizer without them would not even load.
PHI3_SPECIALS = {"unk": "<unk>", "bos": "<s>", "end": "</s>", "eos": "<|endoftext|>"}


def _sentencepiece_style(space_prefix: bool, specials: dict[str, str]):
    """A SentencePiece-style BPE as transformers converts Gemma's and Llama 2's: ▁ for spaces, <0xNN> byte pieces,
    and every split of a piece into two pieces listed as a merge, ranked by the piece's id."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    norm = [normalizers.Replace(" ", "▁")]
    if space_prefix:
        norm.insert(0, normalizers.Prepend("▁"))
    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.Sequence(norm)
    trained.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=360, show_progress=False))
    pieces = list(specials.values()) + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [p for p, _ in sorted(trained.get_vocab().items(), key=lambda kv: kv[1]) if p not in pieces]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = [(p[:k], p[k:]) for p in pieces[len(specials) + 256:] for k in range(1, len(p))
              if p[:k] in vocab and p[k:] in vocab]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence(norm)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if space_prefix else []))
    bos = specials["bos"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=specials["eos"],
                                   pad_token=specials.get("pad", specials["eos"]), unk_token="<unk>",
                                   additional_special_tokens=[t for k, t in specials.items() if k == "end"])


def _model(model_type: str, tok, **extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = AutoConfig.for_model(model_type, **(settings | extra))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # norms away from their init, so a wrong (1 + w) convention changes the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.rand_like(p) * 0.5 - 0.25)
    return model


# model_type, tokenizer builder, extra config
FAMILIES = {
    "llama3": ("llama", lambda: _byte_level("llama-bpe"), {"rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}, "tie_word_embeddings": True}),
    "mistral": ("mistral", lambda: _sentencepiece_style(True, PHI3_SPECIALS), {"tie_word_embeddings": False}),
    "qwen2": ("qwen2", lambda: _byte_level("qwen2"), {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", lambda: _byte_level("qwen2"), {"head_dim": 32, "tie_word_embeddings": True}),
    "gemma3": ("gemma3_text", lambda: _sentencepiece_style(False, GEMMA_SPECIALS), {
        "num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8}),
    "phi3": ("phi3", lambda: _sentencepiece_style(True, PHI3_SPECIALS), {"tie_word_embeddings": False}),
}


def _llama_cpp(path):
    from tunesmith.deploy.runtimes import plain_cpu_buffers

    with plain_cpu_buffers():
        return llama_cpp.Llama(str(path), n_ctx=128, n_batch=128, logits_all=True, n_threads=1, verbose=False)


def _llama_cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def _greedy_misses(ref, got, ids: list[int], n: int, tol: float) -> list[tuple[int, int, int]]:
    """Steps of the reference's greedy path where `got` picks a token the reference does not rank within `tol`
    (relative to its largest logit) of its own best: (step, reference's token, got's token). The path follows the
    reference, so one near-tie (a random tiny model has many; f16 kernels differ by CPU) cannot derail the rest."""
    ids, misses = list(ids), []
    for step in range(n):
        r, g = ref(ids)[-1], got(ids)[-1]
        best, pick = int(np.argmax(r)), int(np.argmax(g))
        if r[pick] < r[best] - tol * np.abs(r).max():
            misses.append((step, best, pick))
        ids.append(best)
    return misses


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_runs_in_llama_cpp_as_in_transformers(tmp_path, family):
    import torch

    model_type, make_tok, extra = FAMILIES[family]
    tok = make_tok()
    model = _model(model_type, tok, **extra)
    path = gguf_export.write_gguf(model, tok, tmp_path / f"{family}.gguf", "f16", name=family)
    llm = _llama_cpp(path)

    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids, text
        text_ids = ids[1:] if tok.bos_token_id is not None else ids
        # llama.cpp may drop the ▁ it prefixed; what matters is that pieces and byte fallbacks decode as text
        assert llm.detokenize(text_ids).decode().lstrip(" ") == text.lstrip(" ")
    assert llm.token_eos() == tok.eos_token_id

    def hf(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].double().numpy()

    worst = 0.0
    for i, text in enumerate(TEXTS):
        ids = tok(text)["input_ids"]
        ref, got = hf(ids), _llama_cpp_logits(llm, ids)
        worst = max(worst, float(np.abs(ref - got).max() / np.abs(ref).max()))
        if i < 2:
            prompt = ids[:12]
            misses = _greedy_misses(hf, lambda x: _llama_cpp_logits(llm, x), prompt, GREEDY_TOKENS,
                                    gguf_export.TOLERANCE["f16"])
            assert misses == [], f"{family}: {text!r}: greedy picks off the reference's top tokens {misses}"
    assert worst <= gguf_export.TOLERANCE["f16"], f"{family}: relative max |logit diff| {worst:.2e}"
    llm.close()


def test_llama3_rope_scaling_is_in_the_file(tmp_path):
    """The rope_freqs tensor carries Llama 3's scaling: without it (default rope) llama.cpp's logits move away."""
    import torch

    model_type, make_tok, extra = FAMILIES["llama3"]
    tok = make_tok()
    model = _model(model_type, tok, **extra)
    ids = tok(" ".join(TEXTS))["input_ids"][:100]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
    good = _llama_cpp_logits(_llama_cpp(gguf_export.write_gguf(model, tok, tmp_path / "good.gguf")), ids)
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    plain = _llama_cpp_logits(_llama_cpp(gguf_export.write_gguf(model, tok, tmp_path / "plain.gguf")), ids)
    rel = lambda x: float(np.abs(ref - x).max() / np.abs(ref).max())  # noqa: E731
    assert rel(good) <= gguf_export.TOLERANCE["f16"] < rel(plain)
