"""GGUF files as models: `model: /path/model.gguf`, `--tokenizer model.gguf` and the embedded GGUFs.

A GGUF is read by transformers, dequantized to fp32 and saved once as a plain safetensors directory in
the model cache, keyed by the file's sha256, so a second run loads it in a second. What the file was
(path, hash, quantization, architecture, whether it is a pretrained base) is written beside the weights
as `tunesmith_source.json`; runs copy it into run.json, because a model dequantized from Q4_K_M is only
as good as the Q4_K_M model, not as the original weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from tunesmith.errors import ModelError

SOURCE_FILE = "tunesmith_source.json"

# llama.cpp spells a few architectures differently from transformers' GGUF loader, which renames them.
_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2"}
# Keys of transformers' GGUF mapping that are no causal LM: encoder-decoders, and the shared general/tokenizer fields.
_NOT_CAUSAL = {"t5", "umt5", "t5encoder", "general", "tokenizer"}
# A name that says the weights were tuned to follow instructions (SmolLM2-…-Instruct, gemma-3-…-it, …-Chat).
_INSTRUCT_NAME = re.compile(r"(instruct|chat|(^|[-_ .])it($|[-_ .]))", re.IGNORECASE)
_LOSSLESS = {"F32", "F16", "BF16"}


class GGUFError(ModelError):
    """A GGUF file that cannot become a model; the message names the file and says what to do."""


def metadata(path: Path) -> dict[str, Any]:
    """The fields of a GGUF header that decide how it is converted and described (memory-mapped: no weights read)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise GGUFError(f"{path}: not a readable GGUF file ({e})") from None

    def field(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    file_type = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        quant = f"file_type {file_type}" if file_type is not None else "unknown"
    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "finetune": field("general.finetune"),
        "base_model": field("general.base_model.0.name"),
        "quant": quant,
        "chat_template": field("tokenizer.chat_template"),
    }


def check_architecture(path: Path, arch: str | None) -> None:
    """Refuse, by name and before anything is converted, an architecture transformers cannot load as a causal LM."""
    import transformers
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    loadable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - _NOT_CAUSAL)
    if arch is None or _ARCH_ALIASES.get(arch, arch) not in loadable:
        raise GGUFError(
            f"{path}: a GGUF of architecture {arch!r}, which transformers {transformers.__version__} cannot load "
            f"as a causal LM from GGUF (it can: {', '.join(loadable)}). Fine-tune the original safetensors "
            "checkpoint instead (a local directory or `hf download ORG/NAME`)."
        )


def base_model_kind(meta: dict[str, Any], filename: str = "") -> str:
    """'instruct' when the file carries a chat template or its name says instruct/chat/it; else 'pretrained': a base
    model that has never learned to answer and stop, whose baselines run to the token limit."""
    if meta.get("chat_template"):
        return "instruct"
    names = (meta.get("name"), meta.get("finetune"), filename)
    return "instruct" if any(n and _INSTRUCT_NAME.search(str(n)) for n in names) else "pretrained"


def sha256(path: Path, index: Path) -> str:
    """The file's sha256, remembered by (path, size, mtime) in `index` so a multi-GB file is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    known[key] = h.hexdigest()
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f"{index.name}.{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
    os.replace(tmp, index)
    return known[key]


def source_record(path: Path | str, digest: str, meta: dict[str, Any], chat_template: str | None) -> dict[str, Any]:
    """What run.json says about a model that came from a GGUF (`chat_template`: where its template came from)."""
    quant = meta["quant"]
    note = (f"{quant} weights loaded as fp32: lossless" if quant in _LOSSLESS else
            f"{quant} dequantized to fp32: quality is that of the quantized model, not of the original weights")
    return {"gguf": str(path), "sha256": digest, "quant": quant, "architecture": meta["architecture"],
            "name": meta["name"], "derived_from": meta["base_model"],
            "base_model_kind": base_model_kind(meta, Path(str(path)).name),
            "chat_template": chat_template, "note": note}


def write_source(model_dir: Path, source: dict[str, Any]) -> None:
    tmp = Path(model_dir) / f"{SOURCE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(source, indent=1), encoding="utf-8")
    os.replace(tmp, Path(model_dir) / SOURCE_FILE)


def read_source(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished conversion into place atomically: a crash never leaves a half-written cache entry, and
    when two processes convert the same file the second one's copy (identical) is dropped."""
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file() and not (out / "tokenizer_config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def convert_tokenizer(gguf: Path, out: Path) -> None:
    """Only the tokenizer of a GGUF (for `--tokenizer`: token counts need no weights)."""
    from transformers import AutoTokenizer

    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    _publish(tmp, out)


def convert(gguf: Path, out: Path, source: dict[str, Any], chat_template: str | None = None) -> None:
    """Dequantize `gguf` into a safetensors model directory `out` with its tokenizer and `source` beside them.
    `chat_template` is given to the tokenizer of a file that has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.stops import stop_token_ids

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if chat_template is not None:
        tok.chat_template = chat_template
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries the GGUF quantization config ("quantized with gguf
    # and is not serializable"); rebuilding from a clean config and copying the dequantized weights works.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    if chat_template is not None:
        # the GGUF's EOS list knows nothing of the added template's turn end (Gemma's <end_of_turn>): plain
        # `generate` and vLLM read generation_config, so it must list every token that ends an answer
        model.generation_config.eos_token_id = stop_token_ids(tok, loaded.generation_config)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    write_source(tmp, source)
    _publish(tmp, out)
