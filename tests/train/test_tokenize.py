"""Assistant-only masks from the model's own chat template: exactly which tokens train."""

import json

from transformers import AutoTokenizer
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.train.tokenize import IGNORE, apply_length_policy, encode_conversation

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Refund?"},
    {"role": "assistant", "content": "1. Write to us."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "2. Wait."},
]

from tests.helpers import GEMMA, PHI3
from tests.helpers import cli_error as _error, train_config as _config, write_pairs as _chat

runner = CliRunner()


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


def test_val_examples_cut_to_nothing_are_counted(tiny_model_dir, tmp_path):
    # 2 of 4 val prompts fill max_seq_len: their answers are cut away and they leave the val set; run.json says so
    _chat(tmp_path / "val.jsonl", [("long question " * 40, "a"), ("short", "b"), ("long question " * 40, "c"),
                                   ("short too", "d")])
    f = _config(tmp_path, tiny_model_dir, data={"val": "val.jsonl"})
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output
    val = json.loads(res.stdout)["data"]["val"]
    v = str(tmp_path / "val.jsonl")
    assert (val["total"], val["kept"], val["truncated"]) == (4, 2, 2)
    assert val["dropped_no_trained_tokens"] == [f"{v}:1", f"{v}:3"]
    info = json.loads((tmp_path / "runs" / "qa" / "run.json").read_text())
    assert info["encode"]["val"]["kept"] == 2 and info["data"]["val"]["count"] == 4
    assert "data (val): 2 of 4 truncated" in " ".join(res.stderr.split())


def test_all_examples_cut_names_the_counts(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir, data={"max_seq_len": 16})
    _chat(tmp_path / "train.jsonl", [("a long question that fills the row " * 3, "yes")] * 3)
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert ("none of the 3 examples has a trained token left: 0 dropped as over-length, 3 cut to no trained "
            "token (max_seq_len=16, over_length=truncate)") in msg


def test_pretrain_on_documents_longer_than_max_seq_len_trains(tiny_model_dir, tmp_path):
    # every document loses its EOS to truncation: ordinary for raw text, not the chat "never learns to stop" error
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "A long document about courts. " * 20}) + "\n"
                                         + json.dumps({"text": "Another long one on contracts. " * 20}) + "\n")
    f = _config(tmp_path, tiny_model_dir, objective="pretrain", data={"train": "docs.jsonl", "max_seq_len": 32})
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    d = out["data"]
    assert (d["kept"], d["truncated"], d["total_tokens"], d["eos_trained"]) == (2, 2, 64, False)
    again = runner.invoke(app, ["train", str(f), "--force"])  # no val: the summary names no val loss
    summary = " ".join(again.stderr.split())
    assert f"(train loss {_final_loss(f)}" in summary and "val loss" not in summary


def _final_loss(config) -> str:
    info = json.loads((config.parent / "runs" / "qa" / "run.json").read_text())
    return f"{info['final_train_loss']:.4f}"


def test_template_that_refuses_a_system_turn_names_the_line(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "no-system"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(  # Gemma's templates refuse a system turn like this
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    f = _config(tmp_path, model, data={"system_prompt": "Be brief."})
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert msg == (f"error: {tmp_path / 'train.jsonl'}:1: the model's chat template refuses a conversation "
                   "(system/user/assistant): System role not supported")
    (tmp_path / "pref.jsonl").write_text(json.dumps({"prompt": "Hi", "chosen": "Hello.", "rejected": "no"}) + "\n")
    f = _config(tmp_path, model, objective="dpo", data={"train": "pref.jsonl", "system_prompt": "Be brief."})
    assert _error(runner.invoke(app, ["train", str(f)])).endswith("(system/user): System role not supported")
    (tmp_path / "rules.yaml").write_text('rules:\n  - name: dot\n    ends_with: "."\n')
    f = _config(tmp_path, model, objective="grpo", data={"rules": "rules.yaml", "system_prompt": "Be brief."},
                grpo={"max_completion_length": 4, "num_generations": 2})
    assert _error(runner.invoke(app, ["train", str(f)])) == (
        f"error: {tmp_path / 'train.jsonl'}:1: the model's chat template refuses a conversation (system/user): "
        "System role not supported")
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}{{ m.content }")
    f = _config(tmp_path, model, data={"chat_template": "broken.jinja"})
    assert _error(runner.invoke(app, ["train", str(f)])) == (
        f"error: {tmp_path / 'train.jsonl'}:1: the chat template is not valid Jinja (template line 1): unexpected '}}'")


def test_examples_longer_than_the_models_positions_are_named(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(model)
    tok.save_pretrained(model)
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "A long document about courts. " * 40}) + "\n")
    f = _config(tmp_path, model, objective="pretrain", data={"train": "docs.jsonl", "max_seq_len": 100})
    assert _error(runner.invoke(app, ["train", str(f)])).endswith(
        "error: an example has 100 tokens but the model takes at most 64 positions (max_position_embeddings); "
        "set data.max_seq_len to 64 or less")


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
