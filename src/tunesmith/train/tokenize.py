"""Render conversations with the model's own chat template and mark which tokens train.

Assistant-only loss for any chat template: the text of each assistant turn is located by
rendering the conversation up to that turn (with and without the generation prompt), and
every token whose first character falls inside an assistant span is trained. Templates that
rewrite earlier turns (Qwen3's <think> blocks) are searched instead: each answer is found
verbatim in the rendered text, in turn order. The span
runs to the end of the turn, so the end-of-turn token (`<|im_end|>` for ChatML) is
trained: a model that never learns to stop is the most common fine-tuning failure.
The system prompt and user turns stay in the input, untrained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import UserError

IGNORE = -100


class TemplateError(UserError):
    """The chat template does not render conversations as a growing prefix; masks cannot be derived."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return render_chat(tokenizer, messages, tokenize=False, add_generation_prompt=generation_prompt)


def render_chat(tokenizer, messages: list[dict[str, str]], **kwargs):
    """apply_chat_template, with a template's own refusal (Gemma's "System role not supported") as a TemplateError."""
    from jinja2.exceptions import TemplateError as JinjaError, TemplateSyntaxError

    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except TemplateSyntaxError as e:
        raise TemplateError(f"the chat template is not valid Jinja (template line {e.lineno}): {e.message}") from None
    except JinjaError as e:
        roles = "/".join(m["role"] for m in messages)
        raise TemplateError(f"the model's chat template refuses a conversation ({roles}): {e}") from None


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of every assistant turn (content + end-of-turn marker)."""
    text = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else ""
        through = _render(tokenizer, messages[: i + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            return text, _searched_spans(tokenizer, messages, text)
        end = len(through.rstrip())  # the newline after the end-of-turn token is not part of the answer
        spans.append((len(before), end))
    return text, spans


def _searched_spans(tokenizer, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Spans for templates that rewrite earlier turns (Qwen3 gives only the last answer an empty <think> block):
    each answer is found in the rendered text after the turns before it, and its span runs on through the
    end-of-turn token that follows it."""
    from tunesmith.models import turn_end_token_id

    end_id = turn_end_token_id(tokenizer)
    end_text = tokenizer.convert_ids_to_tokens(end_id) if end_id is not None else tokenizer.eos_token
    spans, cursor = [], 0
    for m in messages:
        content = m["content"].strip()  # templates often trim; the stripped text is what must appear
        at = text.find(content, cursor) if content else -1
        if m["role"] != "assistant":
            cursor = at + len(content) if at >= 0 else cursor
            continue
        if at < 0:
            raise TemplateError("the chat template rewrites earlier turns and an answer does not appear verbatim in "
                                "the rendered conversation, so its tokens cannot be located")
        end = at + len(content)
        close = text.find(end_text, end) if end_text else -1
        if close >= 0 and not text[end:close].strip():
            end = close + len(end_text)
        spans.append((at, end))
        cursor = end
    return spans


def encode_conversation(tokenizer, messages: list[dict[str, str]]) -> Encoded:
    """Token ids of the whole conversation, labels = ids on assistant tokens and IGNORE elsewhere."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for tok_id, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
        trained = any(s <= start < e for s, e in spans)
        labels.append(tok_id if trained else IGNORE)
    return Encoded(list(enc["input_ids"]), labels)


def encode_text(tokenizer, text: str) -> Encoded:
    """Continued pre-training: every token trains; the document ends with EOS so documents stay apart."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return Encoded(list(ids), list(ids))


@dataclass
class EncodeReport:
    """Counts of what encoding did to a dataset: never silent about a lost or cut example."""

    total: int = 0
    kept: int = 0
    truncated: list[str] = field(default_factory=list)  # "file:line" of each example
    dropped_over_length: list[str] = field(default_factory=list)
    dropped_no_trained_tokens: list[str] = field(default_factory=list)  # truncation cut every trained token
    trained_tokens: int = 0
    total_tokens: int = 0
    eos_trained: bool = True
    val: EncodeReport | None = None  # the validation split's own counts (always truncated, never an error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "truncated": len(self.truncated),
            "truncated_lines": self.truncated,
            "dropped_over_length": self.dropped_over_length,
            "dropped_no_trained_tokens": self.dropped_no_trained_tokens,
            "trained_tokens": self.trained_tokens,
            "total_tokens": self.total_tokens,
            "eos_trained": self.eos_trained,
        } | ({"val": self.val.to_dict()} if self.val else {})


class OverLengthError(UserError):
    pass


def apply_length_policy(enc: Encoded, max_len: int, policy: str) -> Encoded | None:
    """Truncate, drop (None) or raise for an example longer than `max_len` tokens."""
    if len(enc.input_ids) <= max_len:
        return enc
    if policy == "drop":
        return None
    if policy == "error":
        raise OverLengthError(f"example has {len(enc.input_ids)} tokens, over max_seq_len={max_len}")
    return Encoded(enc.input_ids[:max_len], enc.labels[:max_len], truncated=True)
