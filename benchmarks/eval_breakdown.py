#!/usr/bin/env python3
"""Where a quickstart's (or any evaluated run's) time goes: train, model load, each system's generation on
the test split, and the regression suite per model, beside the machine's load (other processes on a shared
CPU inflate every number; the load average says by how much to distrust them).

  # what the last evaluation recorded (eval/results.json timings, run.json train_seconds)
  python benchmarks/eval_breakdown.py tunesmith-quickstart/runs/legal-bot
  # evaluate again from scratch in a copy of the run (no generation cache), then print
  python benchmarks/eval_breakdown.py tunesmith-quickstart/runs/legal-bot --fresh
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def breakdown(run_dir: Path) -> list[tuple[str, float]]:
    from tunesmith.rundir import RunDir

    run = RunDir(run_dir)
    info = run.info()
    results = run.results()
    if results is None:
        sys.exit(f"{run_dir}: not evaluated yet (no eval/results.json); run `tunesmith eval {run_dir}` first")
    rows = [("train", info.train_seconds or 0.0)]
    rows += sorted((f"eval {k}", v) for k, v in (getattr(results, "timings", None) or {}).items())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--fresh", action="store_true", help="re-evaluate a copy of the run without its caches first")
    args = ap.parse_args()
    run_dir = args.run_dir
    load_before = os.getloadavg()
    if args.fresh:
        from rich.console import Console

        from tunesmith.evaluate.runner import evaluate_run

        tmp = Path(tempfile.mkdtemp(prefix="eval-breakdown-"))
        copy = tmp / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("generations", "checkpoints"))
        t = time.time()
        evaluate_run(copy, console=Console(stderr=True, quiet=True), show_progress=False)
        print(f"fresh evaluation: {time.time() - t:.1f}s wall (copy in {copy})")
        run_dir = copy
    rows = breakdown(run_dir)
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.1f}s")
    print(f"{'total':<{width}}  {sum(s for _, s in rows):7.1f}s")
    print(f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
