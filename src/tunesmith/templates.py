"""Chat templates by name: the built-in `chatml`, and the model families' own templates that TRL ships
(trl/chat_templates/*.jinja), offered to a tokenizer that has none (a pretrained base, a GGUF without one)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.errors import ModelError

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

# A model family's own template among those TRL ships, by config model_type, with the turn tokens the vocabulary
# must have for it: a family's template keeps its turn tokens, which chatml would replace.
FAMILY_TEMPLATES = {
    "gemma3_text": ("gemma3", ("<start_of_turn>", "<end_of_turn>")),
    "gemma3": ("gemma3", ("<start_of_turn>", "<end_of_turn>")),
    "gemma2": ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    "gemma": ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    "llama": ("llama3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "qwen2": ("qwen2_5", ("<|im_start|>", "<|im_end|>")),
    "qwen3": ("qwen3", ("<|im_start|>", "<|im_end|>")),
    "phi3": ("phi3", ("<|user|>", "<|assistant|>", "<|end|>")),
}


def trl_template(name: str) -> Path | None:
    """TRL's shipped template `name`.jinja (found without importing trl), or None."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations or not name.replace("_", "").isalnum():
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / f"{name}.jinja"
    return path if path.is_file() else None


def is_template_name(spec: str) -> bool:
    """A data.chat_template value that names a template (built-in or TRL's) rather than a file."""
    return spec in BUILTIN_TEMPLATES or (not Path(spec).expanduser().is_file() and trl_template(spec) is not None)


def suggest_template(tokenizer, model_type: str | None) -> str:
    """The data.chat_template to offer a tokenizer without one: its family's TRL template, else chatml."""
    name, tokens = FAMILY_TEMPLATES.get(model_type or "", (None, ()))
    vocab = tokenizer.get_vocab()
    if name and trl_template(name) and all(t in vocab for t in tokens):
        return name
    return "chatml"


def chat_template_text(spec: str) -> str:
    """A built-in template by name, a TRL template by name (gemma3, llama3, qwen2_5, phi3…), or a .jinja file."""
    if spec in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        path = trl_template(spec)
    if path is None:
        raise ModelError(f"data.chat_template: {spec!r} is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}), "
                         "nor a template TRL ships (gemma3, llama3, qwen2_5, phi3, …), nor a template file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"data.chat_template: {spec}: not UTF-8 text") from None
