#!/usr/bin/env bash
# Prepare, on a machine with access to the package index, what a GPU device call needs beside the repo:
#   .whl/    wheels the device image lacks (its image has torch, triton, accelerate, typer, rich, pyyaml;
#            not trl, datasets, pydantic, bitsandbytes, liger-kernel), for CPython 3.12 x86-64
#   .bench/  the peer benchmark script (../shared/bench/peer_bench.py) the throughput table runs beside ours
# Both folders are git-ignored through .git/info/exclude (they travel with the device tool's `carry`).
# Then, on the device (one call, carry [".whl", ".bench"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 || exit
#   python3 benchmarks/train_throughput.py --peer-bench .bench/peer_bench.py --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
peer="${1:-../shared/bench/peer_bench.py}"
mkdir -p .git/info
for d in /.whl/ /.bench/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
mkdir -p .whl .bench
cp "$peer" .bench/peer_bench.py
# Versions pinned in pyproject.toml; the pure-Python dependencies of trl/datasets/pydantic that the image lacks.
pkgs=(transformers==5.23.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
      pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
      liger-kernel==0.8.5 bitsandbytes==0.50.2)
py="${PYTHON:-.venv/bin/python}"
for p in "${pkgs[@]}"; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$p"
done
du -sh .whl .bench
