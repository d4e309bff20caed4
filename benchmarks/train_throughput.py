#!/usr/bin/env python3
"""LoRA/QLoRA/full SFT throughput of `tunesmith train` beside the peer stack, on the peer benchmark's workload.

The workload is the peer benchmark's own (imported from its file, not re-implemented): the same
random-weight model shapes (Llama-3.2-1B, Qwen2.5-0.5B), the same 2,400 synthetic examples (median 339
tokens, ~70% of tokens trained), LoRA r16/alpha32/dropout 0 on the 7 projections, bf16, AdamW lr 2e-4.
Our runs go through `tunesmith.train.recipe.train` (the code behind `tunesmith train`) with the
examples handed over pre-tokenized; the peer configs run through the peer script in the same call.
Every variant runs in its own process (fresh memory statistics and compile caches), times
`--timed` optimizer steps after `--warmup` with the GPU synchronised at step ends, and reports:
real tok/s (example tokens, padding excluded), peak allocated GiB, MFU on the peer's formula, and the
ratio to the best peer config of the same model and quantisation.

  # the GPU call (device machine): all variants + peer G/D/F, table in $OUT/table.md and results.json
  python benchmarks/train_throughput.py --peer-bench bench/peer_bench.py --out $OUT
  # one variant, or a subset
  python benchmarks/train_throughput.py --peer-bench bench/peer_bench.py --only ts_lora_llama_r8k,G_llama1b_pack_bfd4096
  # CPU plumbing check on the peer's tiny shape (no timing claims)
  python benchmarks/train_throughput.py --peer-bench ../shared/bench/peer_bench.py --smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import TrainerCallback  # noqa: E402  (after the offline switch)

PEAK_FLOPS = 989e12  # H100 SXM dense bf16, the peer's MFU denominator
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Our variants. row: token slots per micro-batch row (8192 ≈ the peer's best config's 8.1k tokens per step).
OURS = {
    "ts_lora_llama_r8k": dict(model="llama3.2-1b", method="lora", row=8192),
    "ts_lora_llama_r8k_gc": dict(model="llama3.2-1b", method="lora", row=8192, gc=True),
    "ts_lora_llama_r16k": dict(model="llama3.2-1b", method="lora", row=16384),
    "ts_lora_qwen_r8k": dict(model="qwen2.5-0.5b", method="lora", row=8192),
    "ts_qlora_llama_r8k": dict(model="llama3.2-1b", method="qlora", row=8192),
    "ts_full_llama_r8k": dict(model="llama3.2-1b", method="full", row=8192),
    "ts_plain_lora_llama": dict(model="llama3.2-1b", method="lora", performance="off", batch=16),
    "ts_plain_liger_llama": dict(model="llama3.2-1b", method="lora", performance="off", batch=16, liger=True),
    # torch.profiler over 3 steps after warm-up: where the time goes (kernel table in OUT/profile_*.txt)
    "ts_lora_llama_r8k_profiled": dict(model="llama3.2-1b", method="lora", row=8192, profile=3),
}
AGREEMENT = "agree_llama"  # first 20 losses of the fast path and the plain path on the same full batches
PEERS = {  # the peer script's configs this table compares against, by (model, quantised)
    "G_llama1b_pack_bfd4096": ("llama3.2-1b", False),
    "D_llama1b_qlora_nf4_padfree": ("llama3.2-1b", True),
    "F_qwen05b_padfree_liger": ("qwen2.5-0.5b", False),
}
SMOKE = {
    "ts_lora_tiny": dict(model="tiny", method="lora", row=2048, performance="on"),
    "ts_plain_tiny": dict(model="tiny", method="lora", performance="off", batch=4),
}


def load_peer(path: str):
    spec = importlib.util.spec_from_file_location("peer_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def examples(peer, n: int, vocab: int):
    from tunesmith.train.tokenize import Encoded

    ids, labels, _ = peer.make_examples(n, vocab, seed=0)
    return [Encoded(i, lab) for i, lab in zip(ids, labels)]


def base_params(peer, model_config) -> int:
    return sum(p.numel() for p in peer.build_meta_params(model_config))


def run_ours(name: str, spec: dict, peer, base: Path, out: Path, warmup: int, timed: int, n_examples: int) -> dict:
    import torch

    from tunesmith.config import RunConfig
    from tunesmith.train.recipe import train

    cuda = torch.cuda.is_available()
    ckpt = peer.prepare_checkpoint(spec["model"], str(base), "cuda" if cuda else "cpu")
    model_config = peer.build_config(spec["model"])
    data = examples(peer, n_examples, model_config.vocab_size)
    fast = spec.get("performance", "on") != "off"
    cfg = RunConfig.model_validate({
        "name": name, "model": ckpt, "method": spec["method"], "output_dir": str(base / "runs"),
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": LORA_TARGETS},
        "train": {"max_steps": warmup + timed, "batch_size": spec.get("batch", 16), "lr": 2e-4,
                  "scheduler": "linear", "warmup_ratio": 0.0, "logging_steps": 10_000, "seed": 42,
                  "dtype": "bfloat16" if cuda else "float32", "performance": spec.get("performance", "on"),
                  "row_tokens": spec.get("row"), "gradient_checkpointing": spec.get("gc", "auto"),
                  "liger": spec.get("liger", False)},
    })

    class Meter(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.tokens: list[int] = []

        def on_train_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.tokens.append(state.num_input_tokens_seen)

    meter = Meter()
    callbacks = [meter]
    if spec.get("profile") and cuda:
        callbacks.append(Profiler(warmup, spec["profile"], out / f"profile_{name}.txt"))
    result = train(cfg, force=True, show_progress=False, examples=(data, None), callbacks=callbacks)
    info = json.loads((result.run_dir / "run.json").read_text())
    window = meter.ends[-1] - meter.ends[warmup - 1]
    steps = [b - a for a, b in zip(meter.ends[warmup - 1:], meter.ends[warmup:])]
    if fast:
        real = meter.tokens[-1] - meter.tokens[warmup - 1]
        rows = info["fast_path"]["rows"]
        sq_per_token = rows["length_sq"] / rows["real_tokens"]  # window ≈ data average (shuffled rows)
        exact = True
    else:  # the plain path does not count tokens: a random sample of `batch` examples per step on average
        lengths = [len(e.input_ids) for e in data]
        real = timed * spec["batch"] * sum(lengths) / len(lengths)
        sq_per_token = sum(n * n for n in lengths) / sum(lengths)
        exact = False
    n = base_params(peer, model_config)
    d_attn = model_config.num_attention_heads * (getattr(model_config, "head_dim", None)
                                                 or model_config.hidden_size // model_config.num_attention_heads)
    lin = (6 * n if spec["method"] == "full" else 4 * n + 6 * lora_params(model_config)) * real
    attn = 6 * model_config.num_hidden_layers * d_attn * sq_per_token * real
    import peft
    import transformers

    return {
        "name": name, "status": "ok", "ours": True, "model": spec["model"], "method": spec["method"],
        "quantised": spec["method"] == "qlora", "tokens_per_s": round(real / window, 1), "tokens_exact": exact,
        "peak_mem_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "s_per_step_mean": round(window / timed, 4), "s_per_step_min": round(min(steps), 4),
        "s_per_step_max": round(max(steps), 4), "first_step_s": round(meter.ends[0] - meter.begin, 3),  # compile time lands here
        "mfu_4N": round(lin / window / PEAK_FLOPS, 4), "mfu_4N_attn": round((lin + attn) / window / PEAK_FLOPS, 4),
        "fast_path": info.get("fast_path"), "final_train_loss": result.final_train_loss,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
    }


class Profiler(TrainerCallback):
    """torch.profiler over `steps` optimizer steps after warm-up: GPU busy fraction, launches per step, top kernels."""

    def __init__(self, warmup: int, steps: int, path: Path):
        self.warmup, self.steps, self.path = warmup, steps, path

    def on_step_begin(self, args, state, control, **kw):
        import torch
        from torch.profiler import ProfilerActivity, profile

        if state.global_step == self.warmup:
            torch.cuda.synchronize()
            self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.prof.__enter__()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        import torch

        if state.global_step == self.warmup + self.steps and hasattr(self, "prof"):
            torch.cuda.synchronize()
            wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)
            events = self.prof.key_averages()
            gpu_s = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") / 1e6
            launches = sum(e.count for e in events if "LaunchKernel" in e.key)
            head = {"steps": self.steps, "wall_s": round(wall, 3), "gpu_kernel_s": round(gpu_s, 3),
                    "gpu_busy": round(gpu_s / wall, 3), "launches_per_step": round(launches / self.steps)}
            self.path.write_text(json.dumps(head) + "\n\n" + events.table(
                sort_by="self_device_time_total", row_limit=40, max_name_column_width=80))
            del self.prof


def lora_params(c) -> int:
    """LoRA r16 parameters on the 7 projections: r · (in + out) per projection per layer."""
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv, h, i = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim, c.hidden_size, c.intermediate_size
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
    return 16 * per_layer * c.num_hidden_layers


def run_agreement(peer, base: Path, steps: int = 20) -> dict:
    """Fast and plain path on identical full batches (24 examples per step): their first `steps` losses."""
    import torch

    from tunesmith.config import RunConfig
    from tunesmith.train.recipe import train

    cuda = torch.cuda.is_available()
    key = "llama3.2-1b" if cuda else "tiny"
    ckpt = peer.prepare_checkpoint(key, str(base), "cuda" if cuda else "cpu")
    data = examples(peer, 24, peer.build_config(key).vocab_size)
    total = sum(len(e.input_ids) for e in data)
    curves = {}
    for performance in ("off", "on"):
        cfg = RunConfig.model_validate({
            "name": f"agree-{performance}", "model": ckpt, "output_dir": str(base / "runs"),
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": LORA_TARGETS},
            "train": {"max_steps": steps, "batch_size": 24, "lr": 1e-3, "scheduler": "constant", "warmup_ratio": 0.0,
                      "logging_steps": 1, "seed": 42, "dtype": "bfloat16" if cuda else "float32",
                      "performance": performance, "row_tokens": -(-total // 128) * 128},
        })
        run = train(cfg, force=True, show_progress=False, examples=(data, None)).run_dir
        curves[performance] = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()
                               if '"loss"' in x]
    diff = max(abs(a - b) for a, b in zip(curves["off"], curves["on"]))
    return {"name": AGREEMENT, "status": "ok", "plain": curves["off"], "fast": curves["on"],
            "max_abs_diff": diff, "pass_1e-2": diff <= 1e-2}


def run_peer(name: str, peer_path: str, base: Path, out: Path, warmup: int, timed: int, n: int, timeout: float):
    rfile = base / f"peer_{name}.json"
    cmd = [sys.executable, peer_path, "--run", name, "--out", str(out), "--base", str(base), "--result-file",
           str(rfile), "--n-examples", str(n), "--warmup", str(warmup), "--timed", str(timed)]
    subprocess.run(cmd, timeout=timeout, check=False)
    r = json.loads(rfile.read_text())
    model, quantised = PEERS[name]
    r.update(ours=False, model=model, quantised=quantised, tokens_exact=True)
    return r


def table(results: list[dict]) -> str:
    best = {}
    for r in results:
        if r.get("status") == "ok" and r.get("ours") is False and "tokens_per_s" in r:
            key = (r["model"], r["quantised"])
            best[key] = max(best.get(key, 0), r["tokens_per_s"])
    lines = ["| run | model | method | real tok/s | peak GiB | s/step | MFU | MFU 4N | × best peer |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["name"] == AGREEMENT and r.get("status") == "ok":
            lines.append(f"\nLoss agreement, fast vs plain path, first {len(r['fast'])} steps on identical full "
                         f"batches: max |Δ| = {r['max_abs_diff']:.2e} ({'pass' if r['pass_1e-2'] else 'FAIL'} at 1e-2)")
            continue
        if r.get("status") != "ok" or "tokens_per_s" not in r:
            lines.append(f"| {r['name']} | | | {r.get('status')}: {str(r.get('error', ''))[:80]} | | | | | |")
            continue
        ref = best.get((r["model"], r["quantised"]))
        ratio = f"{r['tokens_per_s'] / ref:.2f}×" if ref else "—"
        approx = "" if r.get("tokens_exact", True) else "≈"
        lines.append(f"| {r['name']} | {r['model']} | {r.get('method', 'lora (peer)')} | {approx}{r['tokens_per_s']:,.0f} | "
                     f"{r.get('peak_mem_alloc_gib')} | {r['s_per_step_mean']:.3f} | {100 * r['mfu_4N_attn']:.1f}% | "
                     f"{100 * r['mfu_4N']:.1f}% | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-bench", required=True, help="path of shared/bench/peer_bench.py")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/train_throughput"))
    ap.add_argument("--base", default="/tmp/train_throughput_base", help="checkpoints and run dirs")
    ap.add_argument("--only", default=None, help="comma-separated variant names (ours, peers, agree_llama)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--timed", type=int, default=25)
    ap.add_argument("--n-examples", type=int, default=2400)
    ap.add_argument("--per-run-s", type=float, default=240)
    ap.add_argument("--smoke", action="store_true", help="CPU plumbing check on the tiny shape")
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one variant in this process
    a = ap.parse_args()
    out, base = Path(a.out), Path(a.base)
    out.mkdir(parents=True, exist_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    peer = load_peer(a.peer_bench)
    ours = SMOKE if a.smoke else OURS

    if a.run:
        try:
            r = run_agreement(peer, base) if a.run == AGREEMENT else run_ours(
                a.run, ours[a.run], peer, base, out, a.warmup, a.timed, a.n_examples)
        except Exception as e:  # noqa: BLE001 - one failed variant must not lose the others' numbers
            import traceback

            traceback.print_exc()
            r = {"name": a.run, "status": "failed", "error": f"{type(e).__name__}: {e}"[:1500]}
        (base / f"ours_{a.run}.json").write_text(json.dumps(r, indent=1, default=str))
        return

    names = a.only.split(",") if a.only else [*ours, AGREEMENT, *([] if a.smoke else PEERS)]
    results = []
    for name in names:
        t0 = time.time()
        print(f"=== {name}", flush=True)
        try:
            if name in PEERS:
                r = run_peer(name, a.peer_bench, base, out, a.warmup, a.timed + 5, a.n_examples, a.per_run_s)
            else:
                cmd = [sys.executable, __file__, "--peer-bench", a.peer_bench, "--out", str(out), "--base", str(base),
                       "--run", name, "--warmup", str(a.warmup), "--timed", str(a.timed),
                       "--n-examples", str(a.n_examples), *(["--smoke"] if a.smoke else [])]
                subprocess.run(cmd, timeout=a.per_run_s, check=False)
                r = json.loads((base / f"ours_{name}.json").read_text())
        except Exception as e:  # noqa: BLE001 - timeouts and missing result files are reported, not raised
            r = {"name": name, "status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}
        r["wall_s"] = round(time.time() - t0, 1)
        results.append(r)
        print(json.dumps({k: r.get(k) for k in ("name", "status", "tokens_per_s", "peak_mem_alloc_gib", "mfu_4N",
                                                "max_abs_diff", "error")}), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    md = table(results)
    (out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
