"""What the local systems are asked: the prompted baseline's few-shot examples, each system's messages, and how
many new tokens an answer gets."""

from __future__ import annotations

import math
import random
from pathlib import Path

from tunesmith.config import RunConfig
from tunesmith.data.records import Conversation, Message, Preference
from tunesmith.train.dataset import read_conversations, read_records


def few_shot_messages(train: list[Conversation], k: int, seed: int) -> list[dict[str, str]]:
    """k (user, assistant) pairs drawn from train with a fixed seed, for the prompted baseline."""
    if k <= 0 or not train:
        return []
    picked = random.Random(seed).sample(train, min(k, len(train)))
    shots: list[dict[str, str]] = []
    for conv in picked:
        shots += [m for m in conv.prompt_messages() if m["role"] != "system"]
        shots.append({"role": "assistant", "content": conv.assistant_turns()[-1]})
    return shots


def few_shot_pool(cfg: RunConfig) -> list[Conversation]:
    """Train examples for the prompted baseline: conversations, or for a DPO run each prompt with its chosen answer."""
    if cfg.objective == "dpo":
        prefs = read_records(cfg.data.train, cfg.data.format, cfg.data.system_prompt, Preference, "dpo")
        return [Conversation(p.prompt + [Message("assistant", p.chosen)], p.origin) for p in prefs]
    return read_conversations(cfg.data.train, cfg.data.format, cfg.data.system_prompt)


def system_prompts(tests: list[Conversation], system: str, shots: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    out = []
    for conv in tests:
        msgs = conv.prompt_messages()
        if system == "prompted" and shots:
            head = [m for m in msgs if m["role"] == "system"]
            msgs = head + shots + [m for m in msgs if m["role"] != "system"]
        out.append(msgs)
    return out



def token_limit(tokenizer_dir: str | Path, tests: list[Conversation], cap: int, trust_remote_code: bool) -> int:
    """New tokens an answer gets: the longest reference's length plus 25%, never above eval.max_new_tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=trust_remote_code)
    return tokens_for(tok, [c.assistant_turns()[-1] for c in tests], cap)


def tokens_for(tok, references: list[str], cap: int) -> int:
    """The rule itself, for anyone who decodes answers to compare with these (`export verify`)."""
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in references)
    return min(cap, math.ceil(longest * 1.25) + 4)
