"""The runtimes `tunesmith export verify` compares: each decodes the same prompt token ids greedily.

Every runtime gets token ids rendered with the version's own chat template and tokenizer, so the only thing
that differs is the runtime. `reference` is the adapter itself (base + peft, fp32, one prompt at a time);
`embedded` is tunesmith's serving engine (batched, left-padded); `llama.cpp` runs a GGUF export through
llama-cpp-python and stops on the end tokens the GGUF declares; `vllm` is a vLLM child behind tunesmith's
vLLM engine (float32 on CPU). A runtime that is not installed says how to install it instead of running.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.deploy.registry import Version

RUNTIMES = ("embedded", "llama.cpp", "vllm")
INSTALL_HINT = {
    "llama.cpp": "scripts/install.sh --with-llama-cpp (llama-cpp-python, library only)",
    "vllm": "scripts/install.sh --with-vllm (found in .venv-vllm beside this venv), or set TUNESMITH_VLLM_COMMAND",
}


@dataclass
class Answer:
    ids: list[int]  # the answer's token ids, the end token cut off
    stopped: bool  # ended on an end token (else it ran to the token limit)


@dataclass
class RuntimeRun:
    runtime: str
    weight_type: str  # f32 | f16 | q8_0: whether token-identical answers can be asked for
    answers: list[Answer]
    seconds: float  # wall time of generation only (not loading)
    detail: str = ""  # what ran: the file, the vLLM command


def missing(runtime: str, vllm_command: list[str] | None = None) -> str | None:
    """Why `runtime` cannot run here (with how to install it), or None."""
    if runtime == "llama.cpp" and importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed in {sys.executable}: {INSTALL_HINT['llama.cpp']}"
    if runtime == "vllm" and vllm_command is None:
        from tunesmith.deploy.serve.vllm_engine import find_command, own_venv

        if find_command() is None:
            return (f"vLLM is not installed in {sys.executable} nor in {own_venv()}, and "
                    f"TUNESMITH_VLLM_COMMAND is unset: {INSTALL_HINT['vllm']}")
    return None


def reference(version: Version, prompts: list[list[int]], stops: list[int], max_new_tokens: int,
              on_answer: Callable[[], None] = lambda: None) -> RuntimeRun:
    """The adapter as trained: base + peft in fp32, greedy, one prompt at a time."""
    import torch

    from tunesmith.deploy.merge import load_adapted

    model, tok = load_adapted(version)
    answers, start = [], time.perf_counter()
    for ids in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id)
        answers.append(_cut(out[0, len(ids):].tolist(), stops))
        on_answer()
    return RuntimeRun("adapter", "f32", answers, time.perf_counter() - start, "base + adapter (peft, fp32)")


def embedded(version: Version, registry: Path, prompts: list[list[int]], stops: list[int],
             max_new_tokens: int) -> RuntimeRun:
    """tunesmith's embedded serving engine, all prompts queued at once, as concurrent requests would be."""
    from tunesmith.deploy.merge import tokenizer_dir
    from tunesmith.deploy.serve.embedded import EmbeddedEngine

    engine = EmbeddedEngine(version.base_model, str(tokenizer_dir(version)), _settings(registry, len(prompts)))
    try:
        answers, seconds = _through_engine(engine, version, prompts, stops, max_new_tokens)
    finally:
        engine.stop()
    return RuntimeRun("embedded", "f32", answers, seconds, "tunesmith serve (embedded engine, batched)")


def vllm(version: Version, registry: Path, prompts: list[list[int]], stops: list[int], max_new_tokens: int,
         command: list[str] | None, running=None) -> RuntimeRun:
    """A vLLM child (float32 without a GPU) behind tunesmith's vLLM engine, the adapter loaded by its id.
    `running`: a VllmEngine already serving (the start-up check of `serve --engine vllm`), used and left running."""
    from tunesmith.deploy.merge import tokenizer_dir
    from tunesmith.deploy.serve.vllm_engine import VllmEngine, VllmOptions, _has_gpu

    engine = running or VllmEngine(version.base_model, str(tokenizer_dir(version)), _settings(registry, len(prompts)),
                                   VllmOptions(command=command))
    try:
        answers, seconds = _through_engine(engine, version, prompts, stops, max_new_tokens)
        detail = " ".join(engine.child.argv[:3]) + " …"
    finally:
        if running is None:
            engine.stop()
    # without a GPU the engine asks for float32; with one vLLM picks its own (half) type
    return RuntimeRun("vllm", "f32" if not _has_gpu() else "bf16", answers, seconds, detail)


def llama_cpp(gguf_path: Path, weight_type: str, prompts: list[list[int]], max_new_tokens: int,
              on_answer: Callable[[], None] = lambda: None) -> RuntimeRun:
    """The GGUF in llama.cpp: greedy (top-k 1), ending on the end tokens the file declares (EOS, end-of-turn)."""
    import llama_cpp

    width = max(len(p) for p in prompts) + max_new_tokens
    with plain_cpu_buffers():
        llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=width, n_batch=min(width, 512), n_threads=_threads(),
                              seed=0, verbose=False)
    stops = gguf_stops(llm.metadata)
    answers, start = [], time.perf_counter()
    try:
        for ids in prompts:
            out: list[int] = []
            stopped = False
            for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
                if token in stops:
                    stopped = True
                    break
                out.append(int(token))
                if len(out) >= max_new_tokens:
                    break
            answers.append(Answer(out, stopped))
            on_answer()
    finally:
        llm.close()
    return RuntimeRun("llama.cpp", weight_type, answers, time.perf_counter() - start,
                      f"llama-cpp-python {llama_cpp.__version__}, {gguf_path.name}")


@contextmanager
def plain_cpu_buffers():
    """Load without llama.cpp's extra CPU buffer types. On a CPU with AMX, a build for the machine (GGML_NATIVE)
    repacks q8_0 weights for its AMX kernels, and decoding a small model from that buffer crashes the process
    (SIGSEGV in llama_decode, seen with llama-cpp-python 0.3.36 on Sapphire Rapids); the plain CPU buffer runs the
    same weights with the AVX-512 kernels. llama-cpp-python does not expose the setting, so its default is
    adjusted while the model loads."""
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def gguf_stops(metadata: dict[str, str]) -> set[int]:
    """The end tokens a GGUF declares, as llama.cpp reads them from its metadata."""
    keys = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
    return {int(metadata[k]) for k in keys if k in metadata}


def _cut(ids: list[int], stops: list[int]) -> Answer:
    end = next((k for k, t in enumerate(ids) if t in stops), None)
    return Answer(ids if end is None else ids[:end], end is not None)


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _settings(registry: Path, n: int):
    from tunesmith.deploy.serve.settings import ServeSettings

    return ServeSettings(registry=registry, queue_size=max(n, 1), max_tokens_cap=4096, timeout_s=1800)


def _through_engine(engine, version: Version, prompts: list[list[int]], stops: list[int],
                    max_new_tokens: int) -> tuple[list[Answer], float]:
    from tunesmith.deploy.serve.engine import Job, Outcome

    async def run() -> list[Answer]:
        gens = [engine.submit(Job(version, ids, max_new_tokens, 0.0, 1.0, None, [], stop_ids=stops))
                for ids in prompts]
        answers = []
        for gen in gens:
            async for item in gen.events(1800):
                if isinstance(item, Outcome):
                    answers.append(Answer(list(item.ids), item.hit_eos))
        return answers

    start = time.perf_counter()
    answers = asyncio.run(run())
    return answers, time.perf_counter() - start
