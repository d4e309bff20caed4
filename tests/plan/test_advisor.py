"""Advisor: the four shipped example cases, the data-driven path and input errors."""

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.plan.advisor import AdvisorInputs, advise
from tunesmith.plan.cli import app
from tunesmith.plan.dataset import read_conversations, summarise

from tests.helpers import EXAMPLES as _EXAMPLES
from tests.helpers import one_line as _text

runner = CliRunner()
EXAMPLES = _EXAMPLES / "plan"


def _advise_cli(*args: str) -> dict:
    res = runner.invoke(app, ["advise", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize(
    "example, expected, must_mention",
    [
        ("ticket_classification.yaml", "fine-tune", "Classification"),
        ("weekly_knowledge.yaml", "rag", "change weekly"),
        ("json_extraction.yaml", "fine-tune", "230.0M tokens/day"),
        ("oneoff_translation.yaml", "prompt", "one-off"),
    ],
)
def test_example_answer_files(example, expected, must_mention):
    d = _advise_cli("--answers", str(EXAMPLES / example))
    assert d["recommendation"] == expected
    assert any(must_mention in r["text"] for r in d["reasons"])
    scores = d["scores"]
    assert scores[expected] == max(scores.values())


def test_weekly_knowledge_is_not_fine_tune_alone():
    d = _advise_cli("--answers", str(EXAMPLES / "weekly_knowledge.yaml"))
    assert d["scores"]["fine-tune"] < d["scores"]["rag"]
    assert d["scores"]["fine-tune"] < d["scores"]["rag+fine-tune"]


def test_few_examples_turn_classification_into_few_shot():
    a = advise(AdvisorInputs(task="classification", examples=10, daily_volume=2000, prompt_tokens=800))
    assert a.recommendation == "few-shot"
    assert any("too few to fine-tune" in r.text for r in a.reasons)


def test_flags_override_answers_file():
    d = _advise_cli("--answers", str(EXAMPLES / "ticket_classification.yaml"), "--examples", "8")
    assert d["inputs"]["examples"] == 8 and d["recommendation"] == "few-shot"


def test_changing_facts_plus_strict_format_at_volume_is_rag_plus_fine_tune():
    a = advise(AdvisorInputs(task="extraction", examples=2000, knowledge_changes="weekly", format_strictness="strict",
                             daily_volume=100_000, prompt_tokens=2300))
    assert a.recommendation == "rag+fine-tune"


def test_one_off_with_many_examples_is_still_prompting():
    a = advise(AdvisorInputs(task="summarization", examples=5000, recurring=False))
    assert a.recommendation == "prompt"


def _write_tickets(path: Path, n: int, labels: list[str], weights: list[int]) -> None:
    rng = random.Random(0)
    with path.open("w") as fh:
        for i in range(n):
            label = rng.choices(labels, weights)[0]
            fh.write(json.dumps({"text": f"ticket {i} about {label}", "label": label}) + "\n")


def test_data_statistics_drive_the_advice(tmp_path):
    data = tmp_path / "tickets.jsonl"
    labels = ["billing", "technical", "account", "refund"]
    _write_tickets(data, 300, labels, [50, 30, 15, 5])
    stats = summarise(read_conversations(data))
    assert stats.records == 300 and stats.skipped_rows == 0
    assert sum(stats.labels.values()) == 300 and set(stats.labels) == set(labels)
    assert stats.label_imbalance == round(max(stats.labels.values()) / min(stats.labels.values()), 2)
    assert stats.system_prompt_share == 0.0

    d = _advise_cli("--data", str(data), "--task", "classification", "--daily-volume", "2000", "--prompt-tokens", "800")
    assert d["recommendation"] == "fine-tune"
    assert d["data"]["records"] == 300
    assert any("300 records in the data" in r["text"] for r in d["reasons"])


def test_imbalanced_labels_warn(tmp_path):
    data = tmp_path / "skewed.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": "spam" if i < 3 else "ham"}) + "\n" for i in range(60)))
    a = advise(AdvisorInputs(task="classification"), summarise(read_conversations(data)))
    assert any("19x" in w and "'spam' has 3" in w for w in a.warnings)


def test_shared_long_system_prompt_counts_for_fine_tuning(tmp_path):
    data = tmp_path / "chat.jsonl"
    system = "You are the support router. " * 40
    with data.open("w") as fh:
        for i in range(150):
            fh.write(json.dumps({"messages": [{"role": "system", "content": system}, {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}) + "\n")
    a = advise(AdvisorInputs(task="extraction"), summarise(read_conversations(data)))
    rule = [r for r in a.reasons if r.rule == "data.system_prompt"]
    assert rule and rule[0].effect == {"fine-tune": 1}


def test_infinite_price_in_answers_file_and_price_table(tmp_path):
    answers = tmp_path / "a.yaml"
    answers.write_text("task: chat\nprice_in: 1e400\n")  # YAML 1.1 reads it as a string, pydantic as inf
    res = runner.invoke(app, ["advise", "--answers", str(answers), "--json"])
    assert res.exit_code == 2 and "price_in: Input should be a finite number" in _text(res)
    prices = tmp_path / "p.yaml"
    prices.write_text("as_of: 2025-06\nmanaged: []\nself_hosted:\n  gpu_hour_usd:\n    h100: -3\n")
    from tunesmith.plan import cost as co

    with pytest.raises(co.PriceError, match="h100: Input should be greater than or equal to 0"):
        co.load_prices(prices)


def test_answers_given_as_a_directory_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["advise", "--answers", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory, not an answers file" in _text(res)


def test_bad_answers_and_bad_data_exit_2(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("task: poetry\nexamples: -3\n")
    res = runner.invoke(app, ["advise", "--answers", str(bad)])
    assert res.exit_code == 2 and "a.yaml" in res.output and "task" in res.output

    unknown = tmp_path / "b.yaml"
    unknown.write_text("tsk: qa\n")
    assert runner.invoke(app, ["advise", "--answers", str(unknown)]).exit_code == 2

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x", "label": "y"}\n{not json\n')
    d = _advise_cli("--data", str(data), "--task", "qa")
    assert d["data"]["records"] == 1 and d["data"]["skipped_rows"] == 1
    assert any(f"{data}:2" in w for w in d["warnings"])

    broken = tmp_path / "e.jsonl"
    broken.write_text("{not json\n")
    res = runner.invoke(app, ["advise", "--data", str(broken), "--task", "qa"])
    assert res.exit_code == 2 and "e.jsonl" in res.output and "line 1" in res.output.replace("\n", " ")


def test_terminal_view_prints_the_users_labels_and_paths_verbatim(tmp_path):
    data = tmp_path / "[red]d.jsonl"
    data.write_text('{"text": "x", "label": "[bold]y"}\n{"text": "z", "label": "[bold]y"}\n{not json\n')
    res = runner.invoke(app, ["advise", "--data", str(data), "--task", "classification"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "labels: {'[bold]y': 2}" in text and f"{data}:3" in text


def test_answers_file_and_inputs_as_library_calls(tmp_path):
    from tunesmith.errors import UserError
    from tunesmith.plan.answers import advisor_inputs, load_answers

    f = tmp_path / "a.yaml"
    f.write_text("task: classification\ndaily-volume: 2000\n")
    answers = load_answers(f)
    assert answers == {"task": "classification", "daily_volume": 2000}
    assert advisor_inputs(answers, f).daily_volume == 2000
    with pytest.raises(UserError, match=r"a.yaml: examples: Input should be greater than or equal to 0"):
        advisor_inputs({**answers, "examples": -1}, f)
    f.write_text("task: [\n")
    with pytest.raises(UserError, match=r"a.yaml:2: not valid YAML"):
        load_answers(f)
    with pytest.raises(UserError, match="is a directory, not an answers file"):
        load_answers(tmp_path)
