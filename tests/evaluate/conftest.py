"""Fixtures of the evaluate tests. `endpoint`: a judge on loopback that misbehaves on cue (judge_endpoint.py says
how), for the judge's own tests and for `eval RUN --judge-url`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tests.evaluate.judge_endpoint import REASKS, reply


@pytest.fixture()
def endpoint() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = body["messages"][1]["content"].rsplit("Answer to grade:\n", 1)[1].strip()
            if len(body["messages"]) > 2:  # a re-ask: remember what the judge was told
                REASKS.append(body["messages"][2:])
            status, kind, data = reply(answer)
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
