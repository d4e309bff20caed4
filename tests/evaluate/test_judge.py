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


def test_parse_verdict() -> None:
    assert parse_verdict('{"score": 4.0, "reason": "x"}') == (4, "x")
    assert parse_verdict('{"score": true}') is None
    assert parse_verdict('{"score": 3.5}') is None
    assert parse_verdict('{"score": "4"}') is None
    assert parse_verdict("[4]") is None
    assert parse_verdict('{"score": 1}') == (1, "")
