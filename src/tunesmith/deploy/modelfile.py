"""The Ollama Modelfile written beside each GGUF export: the model's chat template in Ollama's Go-template
syntax, the system prompt Ollama adds when a request has none, and the stop tokens."""

from __future__ import annotations

import json
import re
from pathlib import Path


def _chatml_ollama(turn_end: str) -> str:
    return ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}" + turn_end
            + "\n{{ end }}<|im_start|>assistant\n")


def _chatml_turn_end(tok) -> str | None:
    """What ends a turn when the template has ChatML's layout: <|im_end|>, or the EOS token (tunesmith's `chatml`
    for base models, data.chat_template); None when it renders anything else."""
    if not tok.chat_template or "<|im_start|>" not in tok.chat_template:
        return None
    try:
        text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                       tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template may refuse the probe; Ollama then reads the GGUF's own
        return None
    for end in dict.fromkeys(e for e in ("<|im_end|>", tok.eos_token) if e):
        if text == f"<|im_start|>system\nS{end}\n<|im_start|>user\nU{end}\n<|im_start|>assistant\n":
            return end
    return None


def _default_system(tok, end: str) -> str | None:
    """The system prompt the template inserts when a conversation has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM…"). Ollama's TEMPLATE only sees the messages it is sent, so without a SYSTEM line
    a conversation without a system turn would render differently from the model's own template."""
    text = tok.apply_chat_template([{"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True)
    head, tail = "<|im_start|>system\n", f"{end}\n<|im_start|>user\nU{end}\n<|im_start|>assistant\n"
    if text.startswith(head) and text.endswith(tail) and len(text) > len(head) + len(tail):
        return text[len(head):-len(tail)]
    return None


def modelfile_path(gguf_path: str | Path) -> Path:
    """Each export's own Modelfile beside it (legal.q8_0.gguf → legal.q8_0.Modelfile), so a second export
    into the same folder does not overwrite the first one's; `ollama create NAME -f` takes any file name."""
    return Path(gguf_path).with_suffix(".Modelfile")


def modelfile_text(gguf_name: str, tok, system_prompt: str | None) -> str:
    """An Ollama Modelfile: the chat template in Ollama's Go-template syntax, the system prompt Ollama adds
    when a request has none (the run's own, else the template's default), and the stop tokens."""
    lines = [f"FROM ./{gguf_name}"]
    stops = [tok.eos_token] if tok.eos_token else []
    if (end := _chatml_turn_end(tok)) is not None:
        lines.append(f'TEMPLATE """{_chatml_ollama(end)}"""')
        stops += [end, "<|im_start|>"]
        system_prompt = system_prompt or _default_system(tok, end)
    else:
        lines.append("# chat template: not ChatML; Ollama reads tokenizer.chat_template from the GGUF file")
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    for s in dict.fromkeys(stops):
        lines.append(f"PARAMETER stop {json.dumps(s)}")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


# Probe conversations a Modelfile must render exactly as the model's own template does: without a system turn
# (Ollama then adds the Modelfile's SYSTEM) and with one, over several turns.
PROBES = (
    [{"role": "user", "content": "What is a lease?"}],
    [{"role": "system", "content": "Be formal."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Good day."}, {"role": "user", "content": "Bye"}],
)


def render(text: str, messages: list[dict[str, str]]) -> str | None:
    """What Ollama sends the model for `messages` under this Modelfile, for the Go-template constructs tunesmith
    writes (a range over .Messages with .Role and .Content, then the generation prompt); None when the Modelfile
    has no TEMPLATE or one using anything else. Ollama joins SYSTEM to a conversation without a system turn."""
    template = re.search(r'^TEMPLATE """(.*?)"""', text, re.S | re.M)
    if template is None:
        return None
    shape = re.fullmatch(r"\{\{- range \.Messages \}\}(.*)\{\{ end \}\}(.*)", template.group(1), re.S)
    if shape is None or "{{" in shape.group(2) or re.search(r"\{\{(?! \.Role \}\}| \.Content \}\})", shape.group(1)):
        return None
    system = re.search(r'^SYSTEM """(.*?)"""', text, re.S | re.M)
    if system and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system.group(1)}, *messages]
    body, tail = shape.groups()
    return "".join(body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
                   for m in messages) + tail


def stops(text: str) -> list[str]:
    return [json.loads(m) for m in re.findall(r"^PARAMETER stop (.+)$", text, re.M)]
