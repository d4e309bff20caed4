"""data synth against a real OpenAI-compatible HTTP server on loopback: retries, failures, resume, rate limit."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data.cli import app
from tunesmith.data.synth import read_prompts, review_path, synth
from tests.helpers import write_rows as _write

runner = CliRunner()


class _Teacher(BaseHTTPRequestHandler):
    seen: Counter = Counter()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        self.seen[prompt] += 1
        if "flaky" in prompt and self.seen[prompt] == 1:
            return self._send(500, {"error": {"message": "try again"}})
        if "forbidden" in prompt:
            return self._send(400, {"error": {"message": "content policy"}})
        answer = f"{body['model']} answers: {prompt.upper()}"
        self._send(
            200,
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    def _send(self, code: int, obj: dict):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def teacher():
    _Teacher.seen = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", _Teacher.seen
    server.shutdown()
    server.server_close()


def _prompts(path: Path, n: int, special: dict[int, str] | None = None) -> Path:
    lines = [f"question number {i}" for i in range(1, n + 1)]
    for i, text in (special or {}).items():
        lines[i - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def test_synth_retries_writes_review_and_resumes(tmp_path, teacher):
    url, seen = teacher
    prompts = _prompts(tmp_path / "p.txt", 12, {3: "a flaky question"})
    out = tmp_path / "out.jsonl"
    r = synth(prompts, out, url, "teach-1", n=10, rps=100, max_retries=2)
    assert (r.prompts, r.already_answered, r.written, r.failed) == (10, 0, 10, [])
    assert seen["a flaky question"] == 2  # one 500, one retry
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[2]["messages"] == [
        {"role": "user", "content": "a flaky question"},
        {"role": "assistant", "content": "teach-1 answers: A FLAKY QUESTION"},
    ]
    review = [json.loads(x) for x in review_path(out).read_text().splitlines()]
    assert len(review) == 1 and rows[review[0]["line"] - 1]["messages"] == review[0]["messages"]
    # resume: only the two new prompts are asked
    before = sum(seen.values())
    r = synth(prompts, out, url, "teach-1", n=12, rps=100)
    assert (r.already_answered, r.written) == (10, 2) and sum(seen.values()) - before == 2
    assert len(out.read_text().splitlines()) == 12
    assert len(review_path(out).read_text().splitlines()) == 2  # ceil(10% of 12)
    # a crash mid-write leaves half a line: it is dropped and that prompt asked again
    out.write_text(out.read_text()[:-20])
    r = synth(prompts, out, url, "teach-1", n=12, rps=100)
    assert (r.already_answered, r.written) == (11, 1)
    assert [json.loads(x)["messages"][0]["content"] for x in out.read_text().splitlines()][-1] == "question number 12"


def test_synth_rate_limit_and_failures_via_cli(tmp_path, teacher):
    url, seen = teacher
    prompts = _prompts(tmp_path / "p.txt", 8, {5: "a forbidden question"})
    out = tmp_path / "out.jsonl"
    start = time.monotonic()
    res = runner.invoke(
        app,
        ["synth", "--teacher-url", url, "--teacher-model", "t", "--prompts", str(prompts), "-n", "8", "-o", str(out),
         "--rps", "10", "--concurrency", "4", "--json"],
    )
    elapsed = time.monotonic() - start
    assert res.exit_code == 1, res.output
    s = json.loads(res.stdout)
    assert (s["written"], s["failed"]) == (7, 1)
    assert s["failures"][0]["line"] == 5 and "content policy" in s["failures"][0]["error"]
    assert seen["a forbidden question"] == 1  # a 400 is not retried
    assert elapsed >= 0.65  # 8 request starts at 10/s need at least 0.7 s
    # output in prompt order whatever order answers arrived in
    assert [json.loads(x)["messages"][0]["content"] for x in out.read_text().splitlines()][:4] == [
        f"question number {i}" for i in range(1, 5)
    ]


def test_synth_lists_the_prompts_it_could_not_read_and_refuses_an_empty_file(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl", [{"messages": [{"role": "assistant", "content": "no question"}]},
                                            {"messages": []}])
    args = ["synth", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t", "-o", str(tmp_path / "o.jsonl")]
    res = runner.invoke(app, [*args, "--prompts", str(prompts), "--json"])
    assert res.exit_code == 1, res.output
    s = json.loads(res.stdout)
    assert (s["prompts"], s["written"], s["invalid_prompts"]) == (0, 0, 2)
    assert [(x["file"], x["line"], x["reason"]) for x in s["invalid_prompt_records"]] == [
        (str(prompts), 1, "no_user_turn"), (str(prompts), 2, "empty_content")]
    res = runner.invoke(app, [*args, "--prompts", str(prompts)])
    assert "invalid prompt, line 1: no_user_turn (the prompt does not end on a user turn)" in res.stdout
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    res = runner.invoke(app, [*args, "--prompts", str(empty)])
    assert res.exit_code == 2 and f"{empty}: no prompts" in res.stderr


def test_prompts_from_chat_records(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(
        json.dumps({"messages": [{"role": "system", "content": "Be formal."}, {"role": "user", "content": "Hi"}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "old answer"}]}) + "\n"
        + json.dumps({"messages": [{"role": "assistant", "content": "no question"}]}) + "\n"
    )
    prompts, invalid = read_prompts(p)
    assert [x.messages for x in prompts] == [
        [{"role": "system", "content": "Be formal."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Q"}],
    ]
    assert [(x.line, x.reason) for x in invalid] == [(3, "no_user_turn")]
