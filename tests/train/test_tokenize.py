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

from tests.helpers import GEMMA, PHI3


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


def _instruct_tokenizer(tiny_model_dir, template, end):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": [end, "<|user|>", "<|assistant|>", "<start_of_turn>"]})
    tok.eos_token = "<|endoftext|>"  # the tokenizer's EOS is not what ends a turn
    tok.chat_template = template
    return tok


def test_stop_tokens_include_the_templates_end_of_turn(tiny_model_dir):
    from types import SimpleNamespace

    from tunesmith.data.records import Conversation
    from tunesmith.models import stop_token_ids, turn_end_token_id
    from tunesmith.train.tokenize import encode_dataset

    for template, end in ((PHI3, "<|end|>"), (GEMMA, "<end_of_turn>")):
        tok = _instruct_tokenizer(tiny_model_dir, template, end)
        end_id = tok.convert_tokens_to_ids(end)
        assert turn_end_token_id(tok) == end_id
        assert stop_token_ids(tok) == [tok.eos_token_id, end_id]
        assert stop_token_ids(tok, SimpleNamespace(eos_token_id=[end_id, 7])) == [tok.eos_token_id, end_id, 7]
        # the turn end trains, so the model learns to stop, and the EOS check accepts it
        enc, report = encode_dataset(tok, [Conversation.from_messages(CONV)], 512, "error")
        assert [t for t in enc[0].labels if t != IGNORE].count(end_id) == 2 and report.eos_trained
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert turn_end_token_id(plain) == plain.eos_token_id  # ChatML: <|im_end|> is both
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert turn_end_token_id(plain) is None  # turns end in plain text


# Qwen3's layout: only the answer after the last user turn gets an (empty) <think> block, so rendering
# a conversation up to an earlier answer does not give a prefix of the whole conversation.
QWEN3 = ("{% set last = namespace(i=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
         "{% set last.i = loop.index0 %}{% endif %}{% endfor %}"
         "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
         "{% if m['role'] == 'assistant' and loop.index0 > last.i %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
         "{{ m['content'] + '<|im_end|>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_template_that_rewrites_earlier_turns_is_searched(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = QWEN3
    conv = CONV + [{"role": "user", "content": "Wait."}, {"role": "assistant", "content": "Wait."}]
    enc = encode_conversation(tok, conv)
    trained = tok.decode([t for t in enc.labels if t != IGNORE])
    # every answer with its end-of-turn token; the user's "Wait." is not mistaken for the answer "Wait."
    assert trained == "1. Write to us.<|im_end|>2. Wait.<|im_end|>Wait.<|im_end|>"
    text = tok.decode(enc.input_ids)
    assert text.count("<think>") == 1 and "And then?" in text


def test_preference_pairs_are_cut_and_counted_here(tiny_model_dir):
    """DPO's over-length policy is this module's: pairs come out already cut, each loss named by its line."""
    import pytest

    from tunesmith.data.records import Message, Origin, Preference
    from tunesmith.train.tokenize import DataError, encode_pair, encode_pairs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def pair(prompt, line):
        return Preference([Message("user", prompt)], "Good answer here.", "bad", origin=Origin("pref.jsonl", line))

    short, long_answer, long_prompt = pair("hi", 1), pair("refund " * 12, 2), pair("refund " * 40, 3)
    full = encode_pair(tok, long_answer)
    assert tok.decode(full.chosen_ids) == "Good answer here.<|im_end|>\n"  # the answer starts where TRL starts it
    limit = len(full.prompt_ids) + 3  # room for 3 answer tokens of pair 2; pair 3's prompt alone is longer
    pairs, report = encode_pairs(tok, [short, long_answer, long_prompt], limit, "truncate")
    assert len(pairs) == report.kept == 2 and all(len(p.prompt_ids) + len(p.chosen_ids) <= limit for p in pairs)
    assert pairs[1].chosen_ids == full.chosen_ids[:3] and pairs[1].rejected_ids == full.rejected_ids[:3]
    assert report.truncated == ["pref.jsonl:2", "pref.jsonl:3"] and report.dropped_no_trained_tokens == ["pref.jsonl:3"]
    assert report.trained_tokens == sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    _, dropped = encode_pairs(tok, [short, long_answer, long_prompt], limit, "drop")
    assert dropped.kept == 1 and dropped.dropped_over_length == ["pref.jsonl:2", "pref.jsonl:3"]
    with pytest.raises(DataError, match=r"pref.jsonl:2: pair has \d+ tokens, over max_seq_len="):
        encode_pairs(tok, [short, long_answer], limit, "error")
