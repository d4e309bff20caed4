"""The tokens that end an answer, read off a tokenizer and a generation config: one definition that
training (is the end of a turn trained?), eval, serving, merge and GGUF conversion all use."""

from __future__ import annotations


def turn_end_token_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (<end_of_turn>, <|eot_id|>, <|end|>,
    <|im_end|>…), read off a rendered turn; None when the turn ends in plain text or the template cannot say."""
    probe = "tunesmith-probe-answer"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
                                             tokenize=False)
    except Exception:  # noqa: BLE001 - a template may reject any probe; the tokenizer's EOS still stops
        return None
    at = text.rfind(probe)
    if at < 0:
        return None
    after = tokenizer(text[at + len(probe):].lstrip(" "), add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return after[0] if after and after[0] in special else None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS, the chat template's end-of-turn token and the model's
    generation_config EOS list. Gemma, Phi-3 and Llama 3 end turns with a token that is not the tokenizer's EOS:
    training must teach it and generation must stop on it."""
    ids: list[int] = []
    extra = getattr(generation_config, "eos_token_id", None)
    for i in [tokenizer.eos_token_id, turn_end_token_id(tokenizer),
              *(extra if isinstance(extra, (list, tuple)) else [extra])]:
        if i is not None and i not in ids:
            ids.append(int(i))
    return ids
