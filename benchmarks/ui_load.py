"""Page load time of `tunesmith ui` for a run with 1,000 eval examples (goal: under 300 ms).

Builds the UI test world (three runs, a registry) with 1,000 examples per evaluated run in a temp
folder, then times each page through the ASGI app in-process (no network, no browser: what is
measured is the server building the page, which is what grows with the number of examples).

    PYTHONPATH=src:. python benchmarks/ui_load.py [--examples 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.ui.world import build
from tunesmith.ui.app import Settings, create_app

PAGES = {
    "runs table": "/runs",
    "run page": "/runs/legal-bad",
    "curves.json (poll)": "/runs/legal-live/curves.json",
    "eval page": "/runs/legal-bad/eval",
    "eval, filtered": "/runs/legal-bad/eval?system=prompted&rule=disclaimer&sort=failures",
    "eval, search": "/runs/legal-bad/eval?q=tort&differ=1",
    "registry": "/registry",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = build(Path(tmp), n_examples=args.examples)
        client = TestClient(create_app(Settings(runs=[world.runs], registry=world.registry)))
        print(f"{args.examples} eval examples per run; median and worst of {args.repeat} loads after one warm-up\n")
        print(f"{'page':<22} {'median ms':>10} {'max ms':>8} {'KiB':>6}")
        for name, url in PAGES.items():
            r = client.get(url)
            assert r.status_code == 200, (url, r.status_code)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"{name:<22} {statistics.median(times):>10.1f} {max(times):>8.1f} {len(r.content) / 1024:>6.0f}")


if __name__ == "__main__":
    main()
