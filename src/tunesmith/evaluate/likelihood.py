"""Multiple choice by likelihood: which choice would the model most likely answer? No generation.

Each choice is scored as the assistant's whole reply after the chat template's generation prompt:
the sum of its tokens' log-probabilities divided by its length in characters (lm-eval's acc_norm),
so a long choice is not punished for having more tokens. All (question, choice) sequences go
through the model in left-padded batches, longest first; one forward pass per batch, the
vocabulary head applied only where a choice's tokens are predicted.
"""

from __future__ import annotations

from typing import Sequence


def pick_choices(model, tokenizer, conversations: Sequence[list[dict[str, str]]], choices: Sequence[Sequence[str]],
                 *, batch_size: int = 32) -> list[int]:
    """Index of the most likely choice for each conversation."""
    import torch

    rows: list[tuple[int, list[int], int]] = []  # (question, prompt + choice ids, where the choice starts)
    for q, (conv, options) in enumerate(zip(conversations, choices)):
        prefix = tokenizer(tokenizer.apply_chat_template(list(conv), tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
        for option in options:
            ids = tokenizer(option, add_special_tokens=False)["input_ids"]
            rows.append((q, prefix + ids, len(prefix)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][1]))
    scores = [0.0] * len(rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = len(rows[idx[0]][1])
        # left padding puts every choice at the end, so only the last `keep` positions need the vocabulary head
        keep = max(len(rows[i][1]) - rows[i][2] for i in idx) + 1
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            seq = rows[i][1]
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as if each row were alone: padding shifts nothing
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), logits_to_keep=keep).logits
        for r, i in enumerate(idx):
            _, seq, at = rows[i]
            n = len(seq) - at
            targets = torch.tensor(seq[at:], device=logits.device)
            # a token is predicted by the logits one position earlier; the last kept row predicts nothing
            logp = torch.log_softmax(logits[r, keep - 1 - n:keep - 1].float(), dim=-1)
            scores[i] = logp.gather(1, targets[:, None]).sum().item() / max(1, len(tokenizer.decode(seq[at:])))
    picks: list[int] = []
    offset = 0
    for options in choices:
        span = scores[offset:offset + len(options)]
        picks.append(max(range(len(options)), key=span.__getitem__))
        offset += len(options)
    return picks
