"""Load on the embedded server: many concurrent clients on loopback against the tiny model.

    python benchmarks/serve_load.py                    # 64 clients x 4 requests, queue of 32
    python benchmarks/serve_load.py --clients 128 --queue-size 64 --stream-share 0.5
    python benchmarks/serve_load.py --timeout 3 --max-tokens 64   # issue 15: requests that time out

Each client sends its requests back to back (a mix of plain and streamed chat requests, small
max_tokens). Prints the count of each status, 5xx and transport errors, whether the worker is still
alive afterwards, latency percentiles of the answered requests and completion tokens per second.
Exits 1 when any request got a 5xx other than a timeout, or the worker died: a full queue must
answer 429 and a request past --timeout 503, nothing worse, and the worker must go on.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn

from tunesmith.demo.tiny import build_tiny_model
from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.settings import ServeSettings

PROMPTS = ["What is a lease?", "Is a verbal contract binding?", "What is 2 + 2?", "Explain billing."]


def _serve(app) -> tuple[uvicorn.Server, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            sys.exit("server did not start within 30 s")
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def _one(client: httpx.Client, url: str, rng: random.Random, args) -> tuple[str, float, int]:
    body = {"model": "base", "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": args.max_tokens}
    stream = rng.random() < args.stream_share
    t0 = time.perf_counter()
    try:
        if not stream:
            r = client.post(url + "/v1/chat/completions", json=body)
            if r.status_code != 200:
                return _status(r), time.perf_counter() - t0, 0
            return "200", time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]
        with client.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True,
                                                                         "stream_options": {"include_usage": True}}) as r:
            if r.status_code != 200:
                r.read()
                return _status(r), time.perf_counter() - t0, 0
            events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
        if errors := [e["error"]["code"] for e in events if "error" in e]:
            return f"stream error {errors[0]}", time.perf_counter() - t0, 0
        return "200", time.perf_counter() - t0, events[-1]["usage"]["completion_tokens"]
    except httpx.HTTPError as e:
        return type(e).__name__, time.perf_counter() - t0, 0


def _status(r: httpx.Response) -> str:
    return f"{r.status_code} {r.json()['error']['code']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=4, help="requests per client, sent back to back")
    ap.add_argument("--queue-size", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--stream-share", type=float, default=0.25, help="share of requests that stream")
    ap.add_argument("--timeout", type=float, default=120, help="the server's timeout_s")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # the tiny model decodes fastest on one thread
    root = Path(tempfile.mkdtemp(prefix="serve-load-"))
    base = build_tiny_model(root / "base")
    settings = ServeSettings(registry=root / "registry.db", base=str(base), queue_size=args.queue_size,
                             max_tokens_cap=max(64, args.max_tokens), timeout_s=args.timeout)
    app = create_app(settings)
    server, url = _serve(app)
    barrier = threading.Barrier(args.clients)

    def client_run(i: int) -> list[tuple[str, float, int]]:
        rng = random.Random(i)
        with httpx.Client(timeout=180) as client:
            barrier.wait(timeout=60)
            return [_one(client, url, rng, args) for _ in range(args.requests)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = [r for rs in pool.map(client_run, range(args.clients)) for r in rs]
    wall = time.perf_counter() - t0
    health = httpx.get(url + "/health").json()
    server.should_exit = True
    app.state.server.engine.stop()

    counts = Counter(status for status, _, _ in results)
    answered = sorted(t for status, t, _ in results if status == "200")
    tokens = sum(n for _, _, n in results)
    server_errors = sum(n for status, n in counts.items()
                        if status.startswith(("5", "stream error")) and not status.endswith(" timeout"))
    print(f"{args.clients} clients x {args.requests} requests, queue {args.queue_size}, "
          f"max_tokens {args.max_tokens}, {args.stream_share:.0%} streamed: {wall:.1f} s")
    print("statuses: " + ", ".join(f"{s} x {n}" for s, n in sorted(counts.items())))
    print(f"5xx other than timeouts, or stream errors: {server_errors}; worker alive after: "
          f"{health['worker_alive']}")
    if answered:
        p95 = answered[min(len(answered) - 1, int(0.95 * len(answered)))]
        print(f"latency of answered: p50 {statistics.median(answered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; "
              f"{tokens / wall:.0f} completion tokens/s")
    return 1 if server_errors or not health["worker_alive"] else 0


if __name__ == "__main__":
    sys.exit(main())
