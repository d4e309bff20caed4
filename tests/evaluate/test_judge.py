"""LLM-as-judge against a real OpenAI-compatible HTTP server on loopback returning canned verdicts."""

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
from tunesmith.evaluate.judge import JudgeConfig, JudgeError, judge, parse_verdict
from tests.evaluate.judge_endpoint import REASKS
from tests.helpers import write_rows as _write

runner = CliRunner()

# What the fake judge says for each answer; a list is replayed call by call (last one repeats).
CANNED = {
    "GOOD-1": ['{"score": 4, "reason": "fine"}'],
    "GOOD-2": ['{"score": 5, "reason": "great"}'],
    "FENCED": ['```json\n{"score": 5, "reason": "fenced"}\n```'],
    "PROSE": ['Verdict: {"score": 2, "reason": "weak"} - hope that helps'],
    "FLAKY": ["I would say three", '{"score": 3, "reason": "ok on retry"}'],
    "BAD": ["Score: five out of five!"],
    "OUT-OF-RANGE": ['{"score": 9, "reason": "too high"}'],
}


class FakeJudge:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth: set[str] = set()
        self.lock = threading.Lock()

    def reply(self, body: dict) -> tuple[int, dict]:
        if body["model"] != "judge-1":
            return 404, {"error": {"message": f"model {body['model']} not found", "type": "invalid_request_error"}}
        user = body["messages"][1]["content"]  # the grading request; a retry appends a re-ask after it
        answer = user.rsplit("Answer to grade:\n", 1)[1].strip()
        with self.lock:
            k = self.calls.get(answer, 0)
            self.calls[answer] = k + 1
        script = CANNED[answer]
        content = script[min(k, len(script) - 1)]
        return 200, {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }


@pytest.fixture()
def server() -> Iterator[tuple[str, FakeJudge]]:
    state = FakeJudge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.auth.add(self.headers.get("Authorization", ""))
            time.sleep(0.03)  # long enough for concurrent requests to overlap
            status, payload = state.reply(body)
            with state.lock:
                state.in_flight -= 1
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def items() -> list[dict]:
    return [{"id": i, "prompt": f"question {i}", "output": key, "reference": "ref"} for i, key in enumerate(CANNED)]


def test_judge_scores_retries_and_counts_unparseable(server, monkeypatch) -> None:
    url, state = server
    monkeypatch.setenv("TS_JUDGE_KEY", "sk-test-123")
    config = JudgeConfig(base_url=url, model="judge-1", api_key_env="TS_JUDGE_KEY", retries=2, concurrency=2)
    got = judge(items(), config, show_progress=False)

    assert got["n"] == 7 and got["scored"] == 5 and got["unparseable"] == 2
    by_id = {it["id"]: it for it in got["items"]}
    assert [by_id[i]["score"] for i in range(7)] == [4, 5, 5, 2, 3, None, None]
    assert by_id[4] == {"id": 4, "score": 3, "reason": "ok on retry", "attempts": 2}
    assert by_id[5]["attempts"] == 3 and by_id[5]["reason"] == "Score: five out of five!"
    assert got["mean_score"] == pytest.approx((4 + 5 + 5 + 2 + 3) / 5)
    assert got["score_counts"] == {"1": 0, "2": 1, "3": 1, "4": 1, "5": 2}
    # 1 retry for FLAKY, 2 for each unparseable answer
    assert state.calls["FLAKY"] == 2 and state.calls["BAD"] == 3 and state.calls["OUT-OF-RANGE"] == 3
    assert sum(state.calls.values()) == 7 + 1 + 2 + 2
    assert state.max_in_flight <= 2
    assert state.auth == {"Bearer sk-test-123"}


def test_retries_zero_gives_up_at_once(server) -> None:
    url, state = server
    got = judge(items(), JudgeConfig(base_url=url, model="judge-1", retries=0, concurrency=4), show_progress=False)
    assert got["unparseable"] == 3  # FLAKY no longer gets its second chance
    assert state.calls["BAD"] == 1
    assert state.max_in_flight <= 4


def test_endpoint_errors_raise(server) -> None:
    url, _ = server
    with pytest.raises(JudgeError, match="not found"):
        judge(items()[:1], JudgeConfig(base_url=url, model="nope"), show_progress=False)


def test_judge_cli(server, tmp_path: Path) -> None:
    url, _ = server
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "".join(json.dumps({"id": f"x{i}", "output": key, "prompt": "q"}) + "\n" for i, key in enumerate(["GOOD-1", "BAD"]))
    )
    runner = CliRunner()
    result = runner.invoke(app, ["judge", "-p", str(preds), "--base-url", url, "--model", "judge-1", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert (got["scored"], got["unparseable"], got["mean_score"]) == (1, 1, 4.0)

    result = runner.invoke(app, ["judge", "-p", str(preds), "--base-url", url, "--model", "missing"])
    assert result.exit_code == 1 and "not found" in result.stderr

    no_prompt = tmp_path / "np.jsonl"
    no_prompt.write_text(json.dumps({"id": 1, "output": "GOOD-1"}) + "\n")
    result = runner.invoke(app, ["judge", "-p", str(no_prompt), "--base-url", url, "--model", "judge-1"])
    assert result.exit_code == 2 and "no 'prompt'" in result.stderr


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


def test_parse_verdict() -> None:
    assert parse_verdict('{"score": 4.0, "reason": "x"}') == (4, "x")
    assert parse_verdict('{"score": true}') is None
    assert parse_verdict('{"score": 3.5}') is None
    assert parse_verdict('{"score": "4"}') is None
    assert parse_verdict("[4]") is None
    assert parse_verdict('{"score": 1}') == (1, "")
