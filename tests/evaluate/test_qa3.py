"""QA of `tunesmith eval` and its report on inputs the fixtures do not have: non-Latin ROUGE-L, null and
decomposed-Unicode labels, JSONL with raw line separators, judge endpoints that misbehave, argument checks
that come before any model loads, prose answers in the per-class report, and tiny trained runs
(`--regression`, re-scoring from the cache, a base model without a chat template, the judge in `eval RUN`)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from tunesmith.evaluate.cli import app
from tunesmith.report.eval_report import render_eval_report

runner = CliRunner()


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _score(*args: str) -> dict:
    res = runner.invoke(app, ["score", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_rouge_l_counts_words_of_every_script(tmp_path):
    refs = ["今天天气很好", "Привет мир", "Καλημέρα κόσμε", "The cats are running."]
    preds = ["今天天气不好", "Привет мир", "Καλημέρα", "the cat ran"]
    r = _write(tmp_path / "r.jsonl", [{"id": i, "output": x} for i, x in enumerate(refs)])
    p = _write(tmp_path / "p.jsonl", [{"id": i, "output": x} for i, x in enumerate(preds)])
    out = _score("-p", str(p), "-r", str(r), "-t", "generation")
    # Chinese by character: LCS 5 of 6 -> F 5/6; Russian identical -> 1; Greek 1 of 2 words ->
    # P 1, R 1/2, F 2/3; English as rouge-score stems it: the|cat|are|run vs the|cat|ran -> LCS 2, F 4/7
    assert out["rouge_l"] == pytest.approx((5 / 6 + 1.0 + 2 / 3 + 4 / 7) / 4, abs=1e-12)
    assert out["exact_match"] == 0.25


def test_rouge_l_on_ascii_is_rouge_scores_own():
    import random
    import string

    from rouge_score import rouge_scorer

    from tunesmith.evaluate.metrics import generation

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice(string.ascii_letters + "  _-.") for _ in range(rng.randint(0, 30)))
        assert generation([a], [b])["rouge_l"] == pytest.approx(scorer.score(b, a)["rougeL"].fmeasure, abs=1e-12)


def test_null_prediction_is_an_empty_answer_not_the_label_none(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "None"}, {"id": 2, "output": "spam"}])
    p = _write(tmp_path / "p.jsonl", [{"id": 1, "output": None}, {"id": 2, "output": "spam"}])
    out = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert out["accuracy"] == 0.5
    assert out["per_class"]["None"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert out["confusion"] == {"labels": ["", "None", "spam"], "matrix": [[0, 0, 0], [1, 0, 0], [0, 0, 1]]}
    table = runner.invoke(app, ["score", "-p", str(p), "-r", str(r), "-t", "classification"])
    assert "(empty answer)" in table.stdout


def test_line_separators_inside_json_strings_do_not_split_records(tmp_path):
    # U+2028, U+0085 and U+001C are legal raw inside JSON strings; str.splitlines() breaks lines at them
    outputs = ["one\u2028two", "nel\x85here", "fs\x1cx"]
    p = _write(tmp_path / "p.jsonl", [{"id": i, "output": o} for i, o in enumerate(outputs)])
    r = tmp_path / "r.jsonl"
    r.write_bytes(b"".join(json.dumps({"id": i, "output": o}).encode() + b"\r\n" for i, o in enumerate(outputs)))
    out = _score("-p", str(p), "-r", str(r), "-t", "generation")
    assert (out["n"], out["exact_match"], out["rouge_l"]) == (3, 1.0, 1.0)


def test_deeply_nested_line_is_a_named_error(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1, "output": {"a": 1}}\n{"id": 2, "output": ' + "[" * 50000 + "]" * 50000 + "}\n")
    res = runner.invoke(app, ["score", "-p", str(p), "-r", str(p), "-t", "extraction"])
    assert res.exit_code == 2
    assert "p.jsonl:2: not valid JSON: nested too deeply" in res.stderr


def test_labels_in_composed_and_decomposed_unicode_are_one_class(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "caf\u00e9"}, {"id": 2, "output": "th\u00e9"}])
    p = _write(tmp_path / "p.jsonl", [{"id": 1, "output": "cafe\u0301"}, {"id": 2, "output": "the"}])
    out = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert out["accuracy"] == 0.5
    assert out["confusion"]["labels"] == ["caf\u00e9", "the", "th\u00e9"]


# ---- judge against a local endpoint that misbehaves -------------------------------------------------


def _reply(answer: str) -> tuple[int, str, bytes]:
    def completion(choices: list) -> bytes:
        return json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "j", "choices": choices}).encode()

    if answer == "HTML":
        return 200, "text/html", b"<html><body>Sign in to the proxy</body></html>"
    if answer == "NOCHOICES":
        return 200, "application/json", completion([])
    if answer == "SLOW":
        time.sleep(1.5)
    if answer == "NOTEXT":
        msg = {"role": "assistant", "content": None}
        return 200, "application/json", completion([{"index": 0, "message": msg, "finish_reason": "content_filter"}])
    content = {"GOOD": '{"score": 4, "reason": "fine"}', "BAD": "I'd give it a 3/5"}.get(answer, '{"score": 2}')
    msg = {"role": "assistant", "content": content}
    return 200, "application/json", completion([{"index": 0, "message": msg, "finish_reason": "stop"}])


REASKS: list[list[dict]] = []


@pytest.fixture()
def endpoint() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = body["messages"][1]["content"].rsplit("Answer to grade:\n", 1)[1].strip()
            if len(body["messages"]) > 2:  # a re-ask: remember what the judge was told
                REASKS.append(body["messages"][2:])
            status, kind, data = _reply(answer)
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (timeout test)
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _judge(tmp_path: Path, url: str, answers: list[str], *extra: str):
    preds = _write(tmp_path / "p.jsonl", [{"id": f"x{i}", "output": a, "prompt": "q"} for i, a in enumerate(answers)])
    return runner.invoke(app, ["judge", "-p", str(preds), "--base-url", url, "--model", "j", *extra])


@pytest.mark.parametrize("answer", ["HTML", "NOCHOICES"])
def test_judge_reply_that_is_no_chat_completion_is_an_error(endpoint, tmp_path, answer):
    res = _judge(tmp_path, endpoint, ["GOOD", answer], "--json")
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    assert "the reply is not an OpenAI chat completion" in res.stderr
    assert "Traceback" not in res.output
    if answer == "HTML":
        assert "Sign in to the proxy" in res.stderr


def test_judge_reply_without_text_is_unparseable_with_the_finish_reason(endpoint, tmp_path):
    res = _judge(tmp_path, endpoint, ["GOOD", "NOTEXT"], "--json", "--retries", "1")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["scored"], got["unparseable"], got["mean_score"]) == (1, 1, 4.0)
    assert got["items"][1] == {"id": "x1", "score": None, "reason": "(no text; finish_reason 'content_filter')",
                               "attempts": 2}


def test_judge_timeout_option_names_the_limit(endpoint, tmp_path):
    res = _judge(tmp_path, endpoint, ["SLOW"], "--timeout", "0.2")
    assert res.exit_code == 1, res.output
    assert "no reply within 0.2 s" in res.stderr


def test_judge_retry_shows_the_judge_its_unusable_reply(endpoint, tmp_path):
    REASKS.clear()
    res = _judge(tmp_path, endpoint, ["BAD"], "--retries", "1", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["items"][0]["attempts"] == 2
    assert len(REASKS) == 1
    told = REASKS[0]
    assert told[0] == {"role": "assistant", "content": "I'd give it a 3/5"}
    assert told[1]["role"] == "user" and '{"score": <integer 1-5>' in told[1]["content"]


def test_judge_table_names_the_unparseable_items(endpoint, tmp_path):
    res = _judge(tmp_path, endpoint, ["GOOD", "BAD", "GOOD"], "--retries", "0")
    assert res.exit_code == 0, res.output
    assert "unparseable verdicts" in res.stdout
    row = next(line for line in res.stdout.splitlines() if "x1" in line)
    assert "I'd give it a 3/5" in row
    assert not any("x0" in line or "x2" in line for line in res.stdout.splitlines())


def test_judge_reference_without_a_prediction_is_an_error(endpoint, tmp_path):
    preds = _write(tmp_path / "p.jsonl", [{"id": 1, "output": "GOOD"}])
    refs = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "a", "prompt": "q"}, {"id": 2, "output": "b", "prompt": "q"}])
    res = runner.invoke(app, ["judge", "-p", str(preds), "-r", str(refs), "--base-url", endpoint, "--model", "j"])
    assert res.exit_code == 2
    assert "p.jsonl: no prediction for id '2' found in" in res.stderr


def test_judge_null_prompt_on_the_reference_falls_back_to_the_prediction_s(endpoint, tmp_path):
    preds = _write(tmp_path / "p.jsonl", [{"id": 1, "output": "GOOD", "prompt": "q"}])
    refs = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "a", "prompt": None}])
    res = runner.invoke(app, ["judge", "-p", str(preds), "-r", str(refs), "--base-url", endpoint, "--model", "j", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["mean_score"] == 4.0


# ---- `eval RUN` argument checks happen before any model is loaded ---------------------------------------


def test_eval_run_rejects_bad_rubric_and_gate_without_baseline_up_front(tmp_path):
    missing_run = tmp_path / "no-such-run"
    res = runner.invoke(app, [str(missing_run), "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j",
                              "--rubric", str(tmp_path / "rubric.txt")])
    assert res.exit_code == 2
    assert "rubric.txt: cannot read rubric: No such file or directory" in res.stderr
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    _write(tmp_path / "p.jsonl", [{"id": 1, "output": "x", "prompt": "q"}])
    res = runner.invoke(app, ["judge", "-p", str(tmp_path / "p.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                              "--model", "j", "--rubric", str(tmp_path / "empty.txt")])
    assert res.exit_code == 2 and "empty.txt: the rubric file is empty" in res.stderr


# ---- report -------------------------------------------------------------------------------------------


def test_report_shows_judge_scores_and_names_the_empty_answer_class(tmp_path):
    from tunesmith.evaluate.metrics import classification

    scores = {s: {"metrics": classification(p, ["a", "b", "a"])} for s, p in
              {"base": ["", "b", "<i>x</i>"], "tuned": ["a", "b", "a"]}.items()}
    results = {"task": "classification", "systems": scores,
               "judge": {"base": {"n": 3, "scored": 2, "unparseable": 1, "mean_score": 3.5},
                         "tuned": {"n": 3, "scored": 0, "unparseable": 3, "mean_score": None}}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    judge = html[html.index('id="judge"'):]
    judge = judge[: judge.index("</section>")]
    cells = [c for c in judge.split("<td") if c.startswith(' class="num">')]
    assert [c.split(">")[1].split("<")[0] for c in cells] == ["3.50", "2", "1", "3", "–", "0", "3", "3"]
    per_class = html[html.index('id="per-class"'):]
    assert "<td>(empty answer)</td>" in per_class and "<td></td>" not in per_class
    assert "&lt;i&gt;x&lt;/i&gt;" in per_class and "<i>x</i>" not in html


# ---- a tiny trained run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qa3-run")
    labels = ["billing", "tech"]
    for name, n in (("train", 8), ("test", 2)):
        _write(root / f"{name}.jsonl", [{"text": f"{name} ticket {i} about {labels[i % 2]}", "label": labels[i % 2]}
                                        for i in range(n)])
    return _trained(root, "r", f"model: {tiny_model_dir}\nmethod: lora\noutput_dir: runs\n"
                          "data: {train: train.jsonl, test: test.jsonl, max_seq_len: 64}\n"
                          "lora: {r: 2, alpha: 4}\n"
                          "train: {max_steps: 1, batch_size: 4, logging_steps: 1}\n"
                          "eval: {max_new_tokens: 2, few_shot: 1, regression: false}\n")


def _trained(root: Path, name: str, config: str) -> Path:
    """`tunesmith train` on run `name` of a config written to root/cfg.yaml; the run directory."""
    from tunesmith.cli import app as main_app

    (root / "cfg.yaml").write_text(f"name: {name}\n{config}", encoding="utf-8")
    res = runner.invoke(main_app, ["train", str(root / "cfg.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    return root / "runs" / name


def test_systems_come_from_the_config_and_are_checked_before_any_model_loads(tiny_run, tmp_path, monkeypatch):
    import shutil

    import yaml

    import tunesmith.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a command that cannot run")

    monkeypatch.setattr(tunesmith.models, "load_model", no_model)
    res = runner.invoke(app, [str(tiny_run), "--systems", "base,tuned", "--gate", "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "--gate needs both the tuned and the prompted system in --systems" in res.stderr
    res = runner.invoke(app, [str(tiny_run), "--systems", "prompted,tuned", "--regression"])
    assert res.exit_code == 2
    assert "--regression compares base with tuned; --systems needs both" in res.stderr

    run = tmp_path / "two-systems"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("generations"))
    cfg = run / "config.yaml"
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["eval"]["systems"] = ["base", "tuned"]
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    res = runner.invoke(app, [str(run), "--gate"])
    assert res.exit_code == 2
    assert f"--gate needs both the tuned and the prompted system in eval.systems of {cfg}" in res.stderr
    monkeypatch.undo()
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert "base" in summary and "tuned" in summary and "prompted" not in summary and summary["gate"] is None


def test_regression_flag_runs_the_suite_when_the_config_does_not(tiny_run):
    res = runner.invoke(app, [str(tiny_run), "--regression", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    reg = summary["regression"]
    assert reg is not None and set(reg["by_category"]) == {"arithmetic", "facts", "instructions", "format"}
    saved = json.loads((tiny_run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert saved["regression"] == reg
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    assert 'id="regression"' in html
    assert "test.jsonl (2 examples) · prompted baseline: 1-shot from train</p>" in html


def test_empty_test_file_is_an_error_and_keeps_the_last_results(tiny_run, tmp_path):
    before = (tiny_run / "eval" / "results.json").read_bytes() if (tiny_run / "eval" / "results.json").exists() else None
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    res = runner.invoke(app, [str(tiny_run), "--test", str(empty), "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "empty.jsonl: no records in the file (it is empty or holds only blank lines)" in res.stderr
    after = (tiny_run / "eval" / "results.json").read_bytes() if (tiny_run / "eval" / "results.json").exists() else None
    assert after == before


def test_rescoring_from_the_cache_loads_no_model(tiny_run, tmp_path, monkeypatch):
    import tunesmith.models

    first = runner.invoke(app, [str(tiny_run), "--json"])
    assert first.exit_code == 0, first.output

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although every generation is cached")

    monkeypatch.setattr(tunesmith.models, "load_model", no_model)
    monkeypatch.setattr(tunesmith.models, "load_tokenizer", no_model)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: short\n    max_words: 3\n", encoding="utf-8")
    again = runner.invoke(app, [str(tiny_run), "--rules", str(rules), "--json"])
    assert again.exit_code == 0, again.output
    saved = json.loads((tiny_run / "eval" / "results.json").read_text(encoding="utf-8"))
    for system in ("base", "prompted", "tuned"):
        outs = [ex["outputs"][system] for ex in saved["examples"]]
        want = sum(len(o.split()) <= 3 for o in outs) / len(outs)
        assert saved["systems"][system]["metrics"]["compliance"] == {"short": want, "all": want}
    assert json.loads(again.stdout)["tuned"]["accuracy"] == json.loads(first.stdout)["tuned"]["accuracy"]


def test_missing_base_model_is_named_not_a_repo_id_error(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "moved-run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("generations"))
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["base_model"] = str(tmp_path / "deleted-model")
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert f"base model {tmp_path / 'deleted-model'} is not there any more" in res.stderr


def test_prose_answers_are_summed_up_not_one_class_each_in_the_report(tmp_path):
    from tunesmith.evaluate.metrics import classification
    from tunesmith.report.eval_report import _collapsed_confusion

    refs = ["billing", "tech", "other"] * 4
    base = [f"I believe this ticket is about topic number {i}, probably" for i in range(12)]
    base[0], base[1] = "billing", ""
    tuned = refs[:2] + ["billing"] + refs[3:]
    metrics = {"base": classification(base, refs), "tuned": classification(tuned, refs)}
    rows, cols, matrix = _collapsed_confusion(metrics["base"]["confusion"])
    assert rows == ["billing", "other", "tech"]
    assert cols == ["billing", "other", "tech", "other answers (11)"]
    assert matrix == [[1, 0, 0, 3], [0, 0, 0, 4], [0, 0, 0, 4]]
    assert _collapsed_confusion(metrics["tuned"]["confusion"])[2] == [[4, 0, 0], [1, 3, 0], [0, 0, 4]]

    results = {"task": "classification", "systems": {s: {"metrics": m} for s, m in metrics.items()}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    per_class = html[html.index('id="per-class"'):]
    per_class = per_class[: per_class.index("</section>")]
    body = per_class[per_class.index("<tbody>"):]
    row_labels = [cell.split("</td>")[0] for cell in body.split("<tr><td>")[1:]]
    assert row_labels == ["billing", "other", "tech", "other answers (11 labels no reference has)"]
    assert "distinct ones per system: base 11, tuned 0." in per_class
    # billing: base 1 right of 1 predicted, 4 true -> F1 2*(1*0.25)/1.25 = 0.4; tuned 4 of 5 predicted -> 8/9
    assert '<td>billing</td><td class="num">4</td><td class="num">0.400</td><td class="num">0.889</td>' in body


def test_full_fine_tune_of_a_base_without_template_evaluates_with_the_run_s_template(tiny_model_dir, tmp_path):
    import shutil

    base = tmp_path / "base-no-template"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink()  # a pre-trained base: data.chat_template supplies the format
    _write(tmp_path / "train.jsonl", [{"text": f"ticket {i}", "label": "a" if i % 2 else "b"} for i in range(4)])
    _write(tmp_path / "test.jsonl", [{"text": "ticket 9", "label": "a"}])
    run = _trained(tmp_path, "f", f"model: {base}\nmethod: full\noutput_dir: runs\n"
                             "data: {train: train.jsonl, test: test.jsonl, max_seq_len: 64, chat_template: chatml}\n"
                             "train: {max_steps: 1, batch_size: 4, logging_steps: 1}\n"
                             "eval: {max_new_tokens: 2, few_shot: 1}\n")
    res = runner.invoke(app, [str(run), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["task"] == "classification" and [summary[s]["n"] for s in ("base", "prompted", "tuned")] == [1, 1, 1]


def test_eval_run_with_judge_keeps_items_in_results_and_shows_scores(tiny_run, endpoint):
    res = runner.invoke(app, [str(tiny_run), "--judge-url", endpoint, "--judge-model", "j", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["judge"]["tuned"] == {"n": 2, "scored": 2, "unparseable": 0, "mean_score": 2.0,
                                         "score_counts": {"1": 0, "2": 2, "3": 0, "4": 0, "5": 0}}
    saved = json.loads((tiny_run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert [it["id"] for it in saved["judge"]["base"]["items"]] == [1, 2]
    html = (tiny_run / "report.html").read_text(encoding="utf-8")
    judge = html[html.index('id="judge"'):]
    assert judge[: judge.index("</section>")].count('<td class="num">2.00</td>') == 3
    table = runner.invoke(app, [str(tiny_run), "--judge-url", endpoint, "--judge-model", "j"])
    assert table.exit_code == 0, table.output
    assert any(line.startswith("│ judge mean (1-5)") and line.count("2.00") == 3 for line in table.stdout.splitlines())


def test_generations_are_redone_when_only_the_chat_template_changed(tiny_run, tmp_path):
    import shutil

    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "r"))  # the shared run stays as it was
    first = runner.invoke(app, [str(tiny_run), "--systems", "tuned", "--json"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [str(tiny_run), "--systems", "tuned", "--json"])
    assert "generations from cache" in again.stderr
    template = tiny_run / "adapter" / "chat_template.jinja"
    template.write_text(template.read_text(encoding="utf-8").replace("<|im_start|>", "<|im_start|> "), encoding="utf-8")
    changed = runner.invoke(app, [str(tiny_run), "--systems", "tuned", "--json"])
    assert changed.exit_code == 0, changed.output
    assert "generations from cache" not in changed.stderr
