"""Multiple choice by likelihood: which choice would the model most likely answer? No generation.

Each choice is scored as the assistant's whole reply after the chat template's generation prompt:
the sum of its tokens' log-probabilities divided by its length in characters (lm-eval's acc_norm),
so a long choice is not punished for having more tokens.

The question is the long part (template, system prompt, question: ~50 tokens) and a choice the short
one (a few tokens), so each question goes through the model once and its KV cache is copied to each
of its choices, which then run only their own tokens: about a quarter of the work of running every
(question, choice) sequence whole, with the same scores up to float rounding.
"""

from __future__ import annotations

from typing import Sequence


def pick_choices(model, tokenizer, conversations: Sequence[list[dict[str, str]]], choices: Sequence[Sequence[str]],
                 *, batch_size: int = 32) -> list[int]:
    """Index of the most likely choice for each conversation."""
    scores = choice_scores(model, tokenizer, conversations, choices, batch_size=batch_size)
    return [max(range(len(s)), key=s.__getitem__) for s in scores]


def choice_scores(model, tokenizer, conversations: Sequence[list[dict[str, str]]],
                  choices: Sequence[Sequence[str]], *, batch_size: int = 32) -> list[list[float]]:
    """Per conversation, each choice's log-likelihood per character."""
    import torch

    prefixes = [tokenizer(tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"] for c in conversations]
    options = [[tokenizer(o, add_special_tokens=False)["input_ids"] for o in opts] for opts in choices]
    scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    model.eval()
    # longest questions first: a batch's padding is set by its longest member
    order = sorted(range(len(prefixes)), key=lambda q: -len(prefixes[q]))
    for start in range(0, len(order), batch_size):
        qs = order[start:start + batch_size]
        ids, mask = _left_padded([prefixes[q] for q in qs], pad)
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        position_ids=_positions(mask).to(device), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts each choice's first token
        rows = [(r, k) for r, q in enumerate(qs) for k in range(len(options[q]))]
        cache = out.past_key_values
        cache.reorder_cache(torch.tensor([r for r, _ in rows], device=device))  # one copy per choice
        width = max(len(options[qs[r]][k]) for r, k in rows)
        tail = torch.full((len(rows), width), pad, dtype=torch.long)
        tail_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, k) in enumerate(rows):
            seq = options[qs[r]][k]
            tail[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            tail_mask[i, :len(seq)] = 1
        row_mask = mask[[r for r, _ in rows]]
        full_mask = torch.cat([row_mask, tail_mask], dim=1)
        positions = row_mask.sum(-1, keepdim=True) + torch.arange(width)[None, :]
        with torch.inference_mode():
            logits = model(input_ids=tail.to(device), attention_mask=full_mask.to(device),
                           position_ids=positions.to(device), past_key_values=cache, use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for i, (r, k) in enumerate(rows):
            seq = options[qs[r]][k]
            if not seq:
                scores[qs[r]][k] = float("-inf")
                continue
            total = first[r, seq[0]].item()
            if len(seq) > 1:  # token j + 1 is predicted at position j of the choice's own run
                total += logp[i, :len(seq) - 1].gather(1, torch.tensor(seq[1:], device=logp.device)[:, None]).sum().item()
            scores[qs[r]][k] = total / max(1, len(tokenizer.decode(seq)))
    return scores


def _left_padded(seqs: list[list[int]], pad: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[r, width - len(seq):] = 1
    return ids, mask


def _positions(mask):
    """Positions as if each row were alone: left padding shifts nothing."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
