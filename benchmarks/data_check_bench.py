"""Time `data check` (validation, exact + near duplicates, rules, lengths) on generated chat records.

    python benchmarks/data_check_bench.py            # 100k records, target < 60 s on 2 cores
    python benchmarks/data_check_bench.py -n 20000

Records share one system prompt (as real sets do), have 40-160 word user+assistant text
drawn from a Zipf-like vocabulary, and carry planted defects: 1% exact duplicates, 1% near
duplicates (one word changed), 0.1% invalid JSON lines. The script prints records/s and
seconds per phase, and checks that the planted defects were found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from tunesmith.data.check import check
from tunesmith.demo.legal import DISCLAIMER, RULES_YAML, SYSTEM_PROMPT

TARGET_S = 60.0


def _vocab(n: int = 20000) -> tuple[list[str], list[float]]:
    """Words and cumulative Zipf weights (cumulative, so each draw is a bisect, not a 20k-long sum)."""
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(n * 2)})[:n]
    cum, total = [], 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1)
        cum.append(total)
    return words, cum


def generate(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    words, cum = _vocab()
    planted = {"exact": 0, "near": 0, "invalid": 0}
    lines: list[str] = []
    records: list[dict] = []
    while len(lines) < n:
        roll = rng.random()
        if records and roll < 0.01:
            lines.append(json.dumps(rng.choice(records)))
            planted["exact"] += 1
            continue
        if records and roll < 0.02:
            base = rng.choice(records)
            answer = base["messages"][2]["content"].split(" ")
            answer[rng.randrange(len(answer) - 8)] = "changed"
            rec = {"messages": [base["messages"][0], base["messages"][1], {"role": "assistant", "content": " ".join(answer)}]}
            lines.append(json.dumps(rec))
            planted["near"] += 1
            continue
        if roll < 0.021:
            lines.append('{"messages": [broken')
            planted["invalid"] += 1
            continue
        user = " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(10, 40))) + "?"
        items = [" ".join(rng.choices(words, cum_weights=cum, k=rng.randint(6, 14))) + "." for _ in range(rng.randint(3, 8))]
        answer = "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1)) + "\n" + DISCLAIMER
        rec = {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ]
        }
        records.append(rec)
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return planted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="records to generate")
    ap.add_argument("--threshold", type=float, default=0.8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, rules = Path(tmp) / "bench.jsonl", Path(tmp) / "rules.yaml"
        rules.write_text(RULES_YAML, encoding="utf-8")
        t0 = time.perf_counter()
        planted = generate(data, args.n)
        gen_s = time.perf_counter() - t0
        size_mb = data.stat().st_size / 1e6
        t0 = time.perf_counter()
        rep = check([data], rules=rules, near_dup_threshold=args.threshold)
        total = time.perf_counter() - t0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"records: {rep['records']} ({size_mb:.1f} MB), generated in {gen_s:.1f} s; CPU cores available: {cores}")
    for phase, secs in rep["timings_s"].items():
        print(f"  {phase:<18} {secs:7.2f} s")
    print(f"data check total: {total:.2f} s  ->  {rep['records'] / total:,.0f} records/s  (target < {TARGET_S:.0f} s)")
    print(
        f"found: invalid {len(rep['invalid'])} (planted {planted['invalid']}), exact duplicates {rep['exact_duplicates']} "
        f"(planted {planted['exact']}), near duplicates {rep['near_duplicates']} (planted {planted['near']}, "
        f"recall {min(rep['near_duplicates'], planted['near']) / max(planted['near'], 1):.1%})"
    )
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
