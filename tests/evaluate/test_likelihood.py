"""Multiple choice by likelihood: the question's cache shared by its choices scores what whole sequences score."""

from __future__ import annotations

import torch

from tunesmith.evaluate.likelihood import choice_scores, pick_choices


def _whole(model, tok, conv, options):
    """Each (question, choice) sequence run on its own, from scratch: the reference."""
    prefix = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    out = []
    for option in options:
        ids = tok(option, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prefix + ids])).logits[0].float(), -1)
        out.append(sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(ids)) / len(tok.decode(ids)))
    return out


def test_shared_prefix_scores_equal_whole_sequences(tiny_model_dir):
    from tunesmith.models import load_model, load_tokenizer

    model, tok = load_model(tiny_model_dir, "float32"), load_tokenizer(tiny_model_dir)
    # questions of different lengths (left padding), 2 to 4 choices of 1 to many tokens
    convs = [[{"role": "user", "content": q}] for q in (
        "Which is a colour?", "Pick the animal that barks, from the list below, please.", "2 + 2 =")]
    options = [["red", "table", "the number seven"], ["dog", "cat"], ["4", "five", "22", "four hundred and six"]]
    got = choice_scores(model, tok, convs, options, batch_size=2)
    for conv, opts, scores in zip(convs, options, got):
        assert len(scores) == len(opts)
        assert max(abs(a - b) for a, b in zip(scores, _whole(model, tok, conv, opts))) < 1e-4
    assert pick_choices(model, tok, convs, options, batch_size=2) == [max(range(len(s)), key=s.__getitem__)
                                                                      for s in got]
