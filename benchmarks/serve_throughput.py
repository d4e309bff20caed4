"""Serving throughput of `tunesmith serve`, embedded engine vs vLLM child, on one machine.

For each engine (one after the other, never both at once) and each mode -- `base` (no adapter), `one` (every
request to one LoRA version), `mixed` (requests round-robin over --adapters versions) -- and each concurrency
level: send `rounds * level` greedy /v1/completions requests, `level` at a time, and report completion tokens
per second over the wall time, and p50/p95 request latency. The LoRA versions are random rank-8 adapters of the
base (every attention and MLP projection), registered in a temporary registry, so both engines serve the same
ones. The table ends with embedded/vLLM ratios.

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
from pathlib import Path

import httpx
import uvicorn

from tunesmith.deploy.registry import Registry
from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server
from tunesmith.deploy.serve.vllm_child import free_port
from tunesmith.deploy.serve.vllm_engine import VllmEngine, VllmOptions
from tunesmith.models import resolve_model
from tunesmith.rundir import RunDir

PROMPTS = ["The court held that", "A lease is a contract", "Refunds are issued when", "The quick brown fox",
           "Write a letter to the landlord", "The answer to the billing question is"]


async def _level(url: str, models: list[str], level: int, rounds: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    tokens = 0
    sem = asyncio.Semaphore(level)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(i: int) -> None:
            nonlocal tokens
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/completions", json={
                    "model": models[i % len(models)], "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0})
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


def _adapters(base: str, n: int, root: Path) -> list[str]:
    """n registered versions of random rank-8 LoRA adapters of `base` (B drawn, not zero: each one changes answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    registry = Registry(root / "registry.db")
    ids = []
    for i in range(n):
        run = RunDir(root / f"run-{i}")
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"], task_type="CAUSAL_LM"))
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
        model.save_pretrained(str(run.adapter), safe_serialization=True)
        run.write_info({"name": f"bench-{i}", "status": "finished", "method": "lora", "objective": "sft",
                        "base_model": base, "model_spec": base})
        ids.append(registry.add(run.path, "bench").id)
    return ids


def _bench(engine: str, settings: ServeSettings, modes: dict[str, list[str]], args: argparse.Namespace) -> list[dict]:
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
        rows = [{"mode": mode, **asyncio.run(_level(f"http://127.0.0.1:{port}", models, n, args.rounds,
                                                     args.max_tokens))}
                for mode, models in modes.items() for n in args.levels]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        srv.engine.stop()
    return [{"engine": engine, "start_s": round(start_s, 1), **row} for row in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--engines", default="embedded,vllm")
    ap.add_argument("--levels", default="1,4,16,64", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--modes", default="base,one,mixed")
    ap.add_argument("--adapters", type=int, default=4, help="LoRA versions the `mixed` mode spreads requests over")
    ap.add_argument("--rounds", type=int, default=2, help="requests per level = rounds * concurrency")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--vllm-command", default=None)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="for the embedded engine; vLLM on CPU sets its own (one on a 2-core machine)")
    args = ap.parse_args()
    import tempfile

    import torch

    torch.set_num_threads(args.torch_threads)

    root = Path(tempfile.mkdtemp(prefix="bench-"))
    base = str(resolve_model(args.model))
    wanted = args.modes.split(",")
    versions = _adapters(base, args.adapters if "mixed" in wanted else 1, root) if set(wanted) - {"base"} else []
    modes = {m: {"base": ["base"], "one": versions[:1], "mixed": versions}[m] for m in wanted}
    settings = ServeSettings(registry=root / "registry.db", base=base, queue_size=256, max_tokens_cap=args.max_tokens,
                             timeout_s=600)
    rows = [row for engine in args.engines.split(",") for row in _bench(engine, settings, modes, args)]
    print(f"{'engine':9} {'start_s':>7} {'mode':>6} {'conc':>4} {'reqs':>4} {'tok/s':>7} {'p50_s':>7} {'p95_s':>7}")
    for r in rows:
        print(f"{r['engine']:9} {r['start_s']:7} {r['mode']:>6} {r['concurrency']:4} {r['requests']:4} "
              f"{r['tokens_per_s']:7} {r['p50_s']:7} {r['p95_s']:7}")
    by = {(r["engine"], r["mode"], r["concurrency"]): r["tokens_per_s"] for r in rows}
    for mode in modes:
        for n in args.levels:
            if ("embedded", mode, n) in by and ("vllm", mode, n) in by:
                print(f"embedded/vllm {mode:>6} x{n:<3} {by['embedded', mode, n] / by['vllm', mode, n]:.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
