"""Assistant-only masks from the model's own chat template: exactly which tokens train."""

from transformers import AutoTokenizer

from tunesmith.train.tokenize import IGNORE, apply_length_policy, encode_conversation

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Refund?"},
    {"role": "assistant", "content": "1. Write to us."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "2. Wait."},
]


def test_only_assistant_turns_and_end_of_turn_train(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = encode_conversation(tok, CONV)
    trained = [t for t in enc.labels if t != IGNORE]
    assert tok.decode(trained) == "1. Write to us.<|im_end|>2. Wait.<|im_end|>"
    expected = len(tok("1. Write to us.<|im_end|>", add_special_tokens=False)["input_ids"]) + len(
        tok("2. Wait.<|im_end|>", add_special_tokens=False)["input_ids"])
    assert enc.n_trained == expected
    # the system prompt and user turns stay in the input
    text = tok.decode(enc.input_ids)
    assert "You are terse." in text and "And then?" in text
    assert trained.count(tok.eos_token_id) == 2


def test_length_policies(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = encode_conversation(tok, CONV)
    n = len(enc.input_ids)
    assert apply_length_policy(enc, n, "drop") is enc
    assert apply_length_policy(enc, n - 1, "drop") is None
    cut = apply_length_policy(enc, n - 3, "truncate")
    assert cut.truncated and len(cut.input_ids) == n - 3 and cut.labels == enc.labels[: n - 3]
    try:
        apply_length_policy(enc, 5, "error")
    except ValueError as e:
        assert f"{n} tokens" in str(e)
    else:
        raise AssertionError("over-length example accepted with policy=error")
