"""What the misbehaving judge (the `endpoint` fixture in conftest.py) answers: the answer it grades says how
(HTML, no choices, no text, a slow reply, an unparseable verdict). REASKS keeps what re-asks told it."""

from __future__ import annotations

import json
import time


def reply(answer: str) -> tuple[int, str, bytes]:
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
