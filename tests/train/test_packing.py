"""Padding-free packing must not let examples attend to each other.

A packed batch (examples concatenated into one row, position_ids restarting at 0) goes
through TRL's collator and the model exactly as in training. Its per-token losses must
equal those of each example run alone, and the batch loss must equal the token-weighted
mean of the per-example losses (the trainer's normalisation: sum over trained tokens /
number of trained tokens).
"""

import pytest
import torch
import torch.nn.functional as F
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from tunesmith.data.records import Conversation
from tunesmith.models import load_model, load_tokenizer
from tunesmith.train.tokenize import encode_dataset

CONVS = [
    [{"role": "user", "content": "Refund for my account?"}, {"role": "assistant", "content": "1. Write to billing."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "the quick brown fox"},
     {"role": "assistant", "content": "lazy dog"}],
    [{"role": "user", "content": "court letter?"}, {"role": "assistant", "content": "answer the letter by Monday"}],
]


def token_losses(model, input_ids, labels, **kw):
    """Per-target-token cross-entropy (next-token shift), IGNORE targets removed."""
    logits = model(input_ids=input_ids, use_cache=False, **kw).logits[0, :-1]
    target = labels[0, 1:]
    keep = target != -100
    return F.cross_entropy(logits[keep], target[keep], reduction="none")


def test_packed_batch_equals_examples_one_by_one(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, "float32")
    model.train()  # the training path: no KV cache; dropout is 0 in this model
    encoded, _ = encode_dataset(tok, [Conversation.from_messages(c) for c in CONVS], 256, "error")
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch

    packed = token_losses(model, batch["input_ids"], batch["labels"], position_ids=batch["position_ids"])
    alone = [token_losses(model, torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])) for r in rows]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-5)

    batch_loss = model(**{k: batch[k] for k in ("input_ids", "labels", "position_ids")}, use_cache=False).loss
    weighted = sum(a.sum() for a in alone) / sum(a.numel() for a in alone)
    assert batch_loss.item() == pytest.approx(weighted.item(), abs=1e-5)
    # Without the position_ids restart the examples would see each other: the check above is not vacuous.
    leaky = token_losses(model, batch["input_ids"], batch["labels"])
    assert (leaky - packed).abs().max() > 1e-3
