"""Serving throughput of `tunesmith serve`, embedded engine vs vLLM child, on one machine.

For each engine (one after the other, never both at once): serve the base model, then at each concurrency
level send `rounds * level` greedy /v1/completions requests, `level` at a time, and report completion
tokens per second over the wall time, and p50/p95 request latency.

  python benchmarks/serve_throughput.py --vllm-command "VENV/bin/python -m vllm.entrypoints.openai.api_server"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import threading
import time
from functools import partial

import httpx
import uvicorn

from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server
from tunesmith.deploy.serve.vllm_child import free_port
from tunesmith.deploy.serve.vllm_engine import VllmEngine, VllmOptions
from tunesmith.models import resolve_model

PROMPTS = ["The court held that", "A lease is a contract", "Refunds are issued when", "The quick brown fox",
           "Write a letter to the landlord", "The answer to the billing question is"]


async def _level(url: str, level: int, rounds: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    tokens = 0
    sem = asyncio.Semaphore(level)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(i: int) -> None:
            nonlocal tokens
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/completions", json={
                    "model": "base", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)
                tokens += r.json()["usage"]["completion_tokens"]

        await one(0)  # warm-up, not counted
        latencies.clear()
        tokens = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(level * rounds)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"concurrency": level, "requests": len(latencies), "tokens_per_s": round(tokens / wall, 1),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3)}


def _bench(engine: str, settings: ServeSettings, args: argparse.Namespace) -> list[dict]:
    make = partial(VllmEngine, options=VllmOptions(command=shlex.split(args.vllm_command) if args.vllm_command
                                                   else None)) if engine == "vllm" else None
    t0 = time.perf_counter()
    srv = Server(settings, make) if make else Server(settings)
    start_s = time.perf_counter() - t0
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, srv), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        rows = [asyncio.run(_level(f"http://127.0.0.1:{port}", n, args.rounds, args.max_tokens)) for n in args.levels]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        srv.engine.stop()
    return [{"engine": engine, "start_s": round(start_s, 1), **row} for row in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--engines", default="embedded,vllm")
    ap.add_argument("--levels", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--rounds", type=int, default=2, help="requests per level = rounds * concurrency")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--vllm-command", default=None)
    ap.add_argument("--registry", default=None, help="default: an empty one in a temp dir")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="for the embedded engine; vLLM on CPU sets its own (one on a 2-core machine)")
    args = ap.parse_args()
    import tempfile

    import torch

    torch.set_num_threads(args.torch_threads)

    registry = args.registry or f"{tempfile.mkdtemp(prefix='bench-')}/registry.db"
    settings = ServeSettings(registry=registry, base=str(resolve_model(args.model)), queue_size=256,
                             max_tokens_cap=args.max_tokens, timeout_s=600)
    rows = [row for engine in args.engines.split(",") for row in _bench(engine, settings, args)]
    print(f"{'engine':9} {'start_s':>7} {'conc':>4} {'reqs':>4} {'tok/s':>7} {'p50_s':>7} {'p95_s':>7}")
    for r in rows:
        print(f"{r['engine']:9} {r['start_s']:7} {r['concurrency']:4} {r['requests']:4} {r['tokens_per_s']:7} "
              f"{r['p50_s']:7} {r['p95_s']:7}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
