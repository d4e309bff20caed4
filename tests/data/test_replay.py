"""`tunesmith data replay`: general prompts answered by the base model, kept apart from the regression suite."""

import json
import re

from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.data.formats import read_file
from tunesmith.data.replay import general_prompts, read_prompts
from tunesmith.evaluate.regression import load_suite

runner = CliRunner()


def _words(text):
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_shipped_prompts_are_held_out_from_the_regression_suite():
    """Replay teaches the base model's own behaviour on general prompts; the suite must stay unseen."""
    prompts = general_prompts()
    assert len(prompts) == 72 and len(set(prompts)) == 72
    suite = [it["prompt"] for it in load_suite()]
    for p in prompts:
        for q in suite:
            a, b = _words(p), _words(q)
            # below the data stage's near-duplicate threshold (0.8), as a train/test leak check would require;
            # same genre ("capital of Italy" beside "capital of France") is general ability, not the item
            assert len(a & b) / len(a | b) < 0.8, (p, q)
            assert p.split("?")[-1].strip() != "Answer with the number only." and "number only" not in p


def test_replay_runs_the_model_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "general.jsonl"
    r = runner.invoke(app, ["data", "replay", "--model", str(tiny_model_dir), "-o", str(out), "-n", "3",
                            "--max-new-tokens", "4", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["written"] + summary["empty_answers"] == 3  # the random tiny model may answer with blanks
    assert len(out.read_text().splitlines()) == summary["written"]


def test_replay_records_and_empty_answers(tiny_model_dir, tmp_path, monkeypatch):
    import tunesmith.evaluate.generate as gen

    seen = []

    def fake_generate(model, tokenizer, conversations, **kw):
        seen.extend(conversations)
        return ["  four two  ", " \n", "forty-two"]

    monkeypatch.setattr(gen, "generate", fake_generate)
    out = tmp_path / "general.jsonl"
    r = runner.invoke(app, ["data", "replay", "--model", str(tiny_model_dir), "-o", str(out), "-n", "3",
                            "--system-prompt", "Be brief.", "--json"])
    assert r.exit_code == 0, r.output
    prompts = general_prompts()[:3]
    assert json.loads(r.stdout) == {"written": 2, "empty_answers": 1, "empty_prompts": [prompts[1]],
                                    "out": str(out)}
    assert seen[0] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompts[0]}]
    result = read_file(out)
    assert not result.invalid and len(result.records) == 2
    assert [(m.role, m.content) for m in result.records[0].messages] == [
        ("system", "Be brief."), ("user", prompts[0]), ("assistant", "four two")]
    assert result.records[1].messages[1].content == prompts[2]


def test_own_prompts_from_text_or_chat_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\n  second prompt  \n")
    assert read_prompts(txt) == ["first prompt", "second prompt"]
    chat = tmp_path / "p.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi there"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    assert read_prompts(chat) == ["hi there"]
    bad = tmp_path / "bad.jsonl"  # a record with no user turn is named, not skipped
    bad.write_text(chat.read_text() + json.dumps({"messages": [{"role": "assistant", "content": "x"}]}) + "\n")
    r = runner.invoke(app, ["data", "replay", "-o", str(tmp_path / "o.jsonl"), "--prompts", str(bad)])
    assert r.exit_code == 2 and "1 invalid prompt(s): line 2: no_user_turn" in r.output
    r = runner.invoke(app, ["data", "replay", "-o", str(tmp_path / "o.jsonl"), "--prompts", str(tmp_path / "nope.txt")])
    assert r.exit_code == 2 and "nope.txt: no such file" in r.output
