"""Servability: what would make another runtime answer differently from the adapter, found before it serves.

Checked after `export gguf` (the Modelfile), for `serve --engine vllm` start-up (what vLLM cannot load) and
for the printed `vllm serve` command (what plain vLLM would do differently: stop tokens, chat template,
versions it does not serve). Each finding has a level (error: answers would be wrong or refused; warning:
something a user must know) and a stable code that tests and scripts can match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.deploy.registry import Registry, RegistryError, Version

# Adapter weights vLLM cannot load: full embedding / output layers (modules_to_save), LoRA on them, or rows for
# tokens a run added to the vocabulary (peft's trainable tokens).
_UNLOADABLE = ("embed_tokens", "lm_head", "wte", "trainable_tokens", "modules_to_save")
# vLLM accepts only these LoRA ranks for --max-lora-rank.
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    code: str  # not-lora | unloadable-weights | rank-over-max | stop-token-mismatch | template-mismatch |
    #            no-alias | modelfile-template | modelfile-stops | modelfile-unchecked | parity-unchecked
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _adapter_config(v: Version) -> dict:
    return json.loads((v.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))


def lora_rank(v: Version) -> int:
    """The largest rank any layer of the version's adapter has (rank_pattern may raise some above `r`)."""
    cfg = _adapter_config(v)
    return max([int(cfg.get("r") or 8), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())])


def vllm_findings(v: Version, max_rank: int | None = None) -> list[Finding]:
    """Why vLLM cannot load this version's adapter (errors), given the running server's --max-lora-rank."""
    if v.peft_type not in (None, "LORA"):
        return [Finding("error", "not-lora", f"version {v.id} is a {v.peft_type.lower()} adapter; vLLM serves LoRA "
                                             "adapters only")]
    v.check_files()
    cfg = _adapter_config(v)
    if cfg.get("modules_to_save") or cfg.get("trainable_token_indices"):
        return [Finding("error", "unloadable-weights",
                        f"version {v.id} trains embedding or added-token weights (modules_to_save / trainable "
                        "tokens), which vLLM cannot load; serve it with the embedded engine")]
    from safetensors import safe_open

    with safe_open(str(v.adapter_dir / "adapter_model.safetensors"), "np") as f:
        odd = sorted(k for k in f.keys() if any(part in k for part in _UNLOADABLE))
    if odd:
        return [Finding("error", "unloadable-weights",
                        f"version {v.id} has embedding or added-token weights ({odd[0]}{' …' if len(odd) > 1 else ''}), "
                        "which vLLM cannot load; serve it with the embedded engine")]
    rank = lora_rank(v)
    if rank > VLLM_RANKS[-1]:
        return [Finding("error", "rank-over-max", f"version {v.id} has LoRA rank {rank}, above vLLM's maximum of "
                                                  f"{VLLM_RANKS[-1]}")]
    if max_rank is not None and rank > max_rank:
        return [Finding("error", "rank-over-max", f"version {v.id} has LoRA rank {rank}, over the running vLLM's "
                                                  f"--max-lora-rank {max_rank}; restart `tunesmith serve` to serve it")]
    return []


def _our_stops(v: Version) -> tuple[Any, list[int]]:
    from transformers import GenerationConfig

    from tunesmith.deploy.merge import tokenizer_dir
    from tunesmith.models import load_tokenizer, stop_token_ids

    tok = load_tokenizer(tokenizer_dir(v), chat=False)
    try:
        gen = GenerationConfig.from_pretrained(v.base_model)
    except OSError:
        gen = None
    return tok, stop_token_ids(tok, gen)


def vllm_stops(model_dir: str | Path) -> list[int]:
    """The tokens plain vLLM ends an answer on for this model folder: its tokenizer's EOS and the
    generation_config.json EOS list (config.json's EOS when there is no generation_config)."""
    from transformers import AutoTokenizer, GenerationConfig

    ids: list[int] = []
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        extra = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except OSError:
        extra = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("eos_token_id")
    for i in [tok.eos_token_id, *(extra if isinstance(extra, list) else [extra])]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


def _rendered(tok, template: str | None) -> list[str] | None:
    from tunesmith.deploy.modelfile import PROBES

    if not template:
        return None
    try:
        return [tok.apply_chat_template(p, chat_template=template, tokenize=False, add_generation_prompt=True)
                for p in PROBES]
    except Exception:  # noqa: BLE001 - a template that refuses the probes differs from one that renders them
        return None


def command_findings(registry: Registry, argv: list[str]) -> list[Finding]:
    """What the printed `vllm serve` command would do differently from tunesmith for the versions it serves."""
    from transformers import AutoTokenizer

    base = argv[2]
    served = {p.split("=", 1)[0] for p in argv[argv.index("--lora-modules") + 1:]} if "--lora-modules" in argv else set()
    vllm_end = vllm_stops(base)
    base_tok = AutoTokenizer.from_pretrained(base)
    template = (Path(argv[argv.index("--chat-template") + 1]).read_text(encoding="utf-8")
                if "--chat-template" in argv else base_tok.chat_template)
    findings = []
    for v in registry.versions():
        if str(Path(v.base_model).resolve()) != str(Path(base).resolve()):
            continue
        if v.id not in served:
            findings.append(Finding("warning", "no-alias", f"version {v.id} has no alias, so the printed vLLM command "
                                    "does not serve it (the embedded server serves version ids directly)"))
            continue
        try:
            tok, ours = _our_stops(v)
        except (OSError, RegistryError) as e:
            findings.append(Finding("error", "unloadable-weights", f"version {v.id}: {e}"))
            continue
        past = [i for i in ours if i not in vllm_end]
        if past:
            names = ", ".join(f"{tok.convert_ids_to_tokens(i)} ({i})" for i in past)
            listed = ", ".join(f"{tok.convert_ids_to_tokens(i)} ({i})" for i in vllm_end) or "nothing"
            findings.append(Finding("error", "stop-token-mismatch",
                                    f"version {v.id} ends answers with {names}, but the vLLM command points at {base}, "
                                    f"which ends them on {listed} only, so vLLM would run past the answer; send "
                                    f'"stop_token_ids": {past} in each request, or use `tunesmith serve --engine vllm`'))
        mine = _rendered(tok, tok.chat_template)
        if mine is not None and mine != _rendered(tok, template):
            findings.append(Finding("error", "template-mismatch",
                                    f"version {v.id} was trained with a chat template that differs from the one the "
                                    "vLLM command applies; pass --chat-template with the version's chat_template.jinja"))
    return findings


def modelfile_findings(tok, text: str, stops: list[int]) -> list[Finding]:
    """Does the Modelfile render the probe conversations (with and without a system turn) as the model's own
    template does, and stop on every end token the model has?"""
    from tunesmith.deploy import modelfile

    findings = []
    own = _rendered(tok, tok.chat_template)
    got = [modelfile.render(text, p) for p in modelfile.PROBES]
    if any(g is None for g in got):
        findings.append(Finding("warning", "modelfile-unchecked",
                                "the Modelfile has no ChatML TEMPLATE; Ollama reads tokenizer.chat_template from the "
                                "GGUF, which this check cannot render"))
    elif own is not None and got != own:
        which = [w for w, g, o in zip(("without a system message", "with a system message"), got, own) if g != o]
        findings.append(Finding("error", "modelfile-template",
                                f"the Modelfile's TEMPLATE renders a conversation {' and '.join(which)} unlike the "
                                "model's own chat template"))
    declared = set(modelfile.stops(text))
    missing = [s for s in dict.fromkeys(tok.convert_ids_to_tokens(i) for i in stops) if s not in declared]
    if missing:
        findings.append(Finding("error", "modelfile-stops",
                                f"the Modelfile does not stop on {', '.join(missing)}, where the model ends answers"))
    return findings


def export_findings(v: Version, gguf_path: Path) -> list[Finding]:
    """The Modelfile written beside a GGUF export, against the version's own template and end tokens."""
    from tunesmith.deploy.modelfile import modelfile_path

    tok, stops = _our_stops(v)
    return modelfile_findings(tok, modelfile_path(gguf_path).read_text(encoding="utf-8"), stops)
