"""Render conversations with the model's own chat template and mark which tokens train.

Assistant-only loss for any chat template: the text of each assistant turn is located by
rendering the conversation up to that turn (with and without the generation prompt), and
every token whose first character falls inside an assistant span is trained. Templates that
rewrite earlier turns (Qwen3's <think> blocks) are searched instead: each answer is found
verbatim in the rendered text, in turn order. The span
runs to the end of the turn, so the end-of-turn token (`<|im_end|>` for ChatML) is
trained: a model that never learns to stop is the most common fine-tuning failure.
The system prompt and user turns stay in the input, untrained.

This module is also the one owner of the over-length policy (data.over_length: truncate |
drop | error) for every objective that hands tokens to its trainer: chat examples and raw
text (`encode_dataset`), preference pairs (`encode_pairs`). Whatever is cut or dropped is
counted in an EncodeReport (run.json's "encode") and named by file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import DataError, UserError  # the recipes' data errors are the project's one DataError

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


# --- datasets: every record encoded, the over-length policy applied, every cut counted ----------------------------


def record_location(record, index: int) -> str:
    """'file:line' of a record, for every message that names one; records built in memory count from 1."""
    return str(record.origin) if record.origin else f"example {index + 1}"


def encode_record(tokenizer, record) -> Encoded:
    from tunesmith.data.records import Text

    if isinstance(record, Text):
        return encode_text(tokenizer, record.text)
    return encode_conversation(tokenizer, [m.to_dict() for m in record.messages])


def _stop_ids(tokenizer) -> set[int]:
    from tunesmith.models import stop_token_ids

    return set(stop_token_ids(tokenizer)) if tokenizer.chat_template else {tokenizer.eos_token_id}


def encode_dataset(tokenizer, records, max_len: int, policy: str) -> tuple[list[Encoded], EncodeReport]:
    """Token ids and labels of every record, the over-length policy applied; nothing lost without a count.

    An example left with no trained token is an error naming its lines, unless truncation
    (over_length: truncate) cut its trained tokens away: then it is dropped and counted.
    """
    report = EncodeReport(total=len(records), eos_trained=False)
    out: list[Encoded] = []
    untrained: list[str] = []
    stops = _stop_ids(tokenizer)
    for i, record in enumerate(records):
        where = record_location(record, i)
        try:
            cut = apply_length_policy(encode_record(tokenizer, record), max_len, policy)
        except TemplateError as e:
            raise DataError(f"{where}: {e}") from None
        except OverLengthError as e:
            raise DataError(f"{where}: {e} (data.over_length: error)") from None
        if cut is None:
            report.dropped_over_length.append(where)
            continue
        if cut.truncated:
            report.truncated.append(where)
        if cut.n_trained == 0:
            (report.dropped_no_trained_tokens if cut.truncated else untrained).append(where)
            continue
        report.eos_trained = report.eos_trained or not stops.isdisjoint(cut.labels)
        report.trained_tokens += cut.n_trained
        report.total_tokens += len(cut.input_ids)
        out.append(cut)
    if untrained:
        more = f" and {len(untrained) - 10} more" if len(untrained) > 10 else ""
        raise DataError(f"{len(untrained)} example(s) have no trained token: {', '.join(untrained[:10])}{more}. "
                        "Each needs an assistant turn that the chat template renders.")
    report.kept = len(out)
    if not out:
        raise DataError(
            f"none of the {report.total} examples has a trained token left: {len(report.dropped_over_length)} dropped "
            f"as over-length, {len(report.dropped_no_trained_tokens)} cut to no trained token (max_seq_len={max_len}, "
            f"over_length={policy})"
        )
    return out, report


@dataclass
class EncodedPair:
    """A preference pair as TRL's DPO collator takes it: the shared prompt, then each answer's tokens."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    def as_row(self) -> dict[str, list[int]]:
        return {"prompt_ids": self.prompt_ids, "chosen_ids": self.chosen_ids, "rejected_ids": self.rejected_ids}


def _chat_ids(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
    return list(render_chat(tokenizer, messages, tokenize=True, return_dict=True,
                            add_generation_prompt=generation_prompt)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def encode_pair(tokenizer, record) -> EncodedPair:
    """Prompt and answers split where TRL splits them: where the rendered prompt and prompt+answer diverge."""
    prompt = [m.to_dict() for m in record.prompt]
    prompt_ids = _chat_ids(tokenizer, prompt, generation_prompt=True)  # first: a refusal names the prompt's roles
    sides = [_chat_ids(tokenizer, prompt + [{"role": "assistant", "content": answer}])
             for answer in (record.chosen, record.rejected)]
    n = min(_common_prefix(prompt_ids, s) for s in sides)
    return EncodedPair(sides[0][:n], sides[0][n:], sides[1][n:])


def encode_pairs(tokenizer, records, max_len: int, policy: str) -> tuple[list[EncodedPair], EncodeReport]:
    """Every preference pair tokenized and cut to `max_len` here, so the trainer gets them as they train.

    A pair is as long as its prompt and longer answer. `truncate` keeps the start of each side; a pair
    whose prompt alone fills max_seq_len has no answer token left and is dropped and counted.
    """
    report = EncodeReport(total=len(records))
    out: list[EncodedPair] = []
    for i, record in enumerate(records):
        where = record_location(record, i)
        try:
            pair = encode_pair(tokenizer, record)
        except TemplateError as e:
            raise DataError(f"{where}: {e}") from None
        n = len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))
        if n > max_len:
            if policy == "error":
                raise DataError(f"{where}: pair has {n} tokens, over max_seq_len={max_len} (data.over_length: error)")
            if policy == "drop":
                report.dropped_over_length.append(where)
                continue
            report.truncated.append(where)
            if len(pair.prompt_ids) >= max_len:
                report.dropped_no_trained_tokens.append(where)
                continue
            room = max_len - len(pair.prompt_ids)
            pair = EncodedPair(pair.prompt_ids, pair.chosen_ids[:room], pair.rejected_ids[:room])
        report.trained_tokens += len(pair.chosen_ids) + len(pair.rejected_ids)
        report.total_tokens += 2 * len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)
        out.append(pair)
    report.kept = len(out)
    if not out:
        raise DataError(
            f"no preference pair is left of {report.total}: {len(report.dropped_over_length)} dropped as over-length, "
            f"{len(report.dropped_no_trained_tokens)} with a prompt that fills max_seq_len={max_len}"
        )
    return out, report


def report_cuts(report: EncodeReport, console, max_len: int, policy: str, split: str = "train") -> None:
    """One line on the console when anything was cut or dropped; the lines themselves are in run.json."""
    if report.truncated or report.dropped_over_length or report.dropped_no_trained_tokens:
        console.print(
            f"[yellow]data ({split}):[/] {len(report.truncated)} of {report.total} truncated, "
            f"{len(report.dropped_over_length)} dropped as over-length, {len(report.dropped_no_trained_tokens)} "
            f"dropped because truncation left no trained token (max_seq_len={max_len}, "
            f"over_length={policy}); lines in run.json"
        )


def encode_splits(encode, tokenizer, splits, max_len: int, policy: str, console, check=None):
    """Train and val encoded by `encode` (encode_dataset or encode_pairs): train under the run's policy,
    val always truncated (its loss is still measured). `check(report)` vets train before anything is printed.
    Returns (train, val or None, report), the val split's counts in report.val."""
    train, report = encode(tokenizer, splits["train"], max_len, policy)
    if check:
        check(report)
    report_cuts(report, console, max_len, policy)
    if not splits.get("val"):
        return train, None, report
    try:
        val, report.val = encode(tokenizer, splits["val"], max_len, "truncate")
    except DataError as e:
        raise DataError(f"data.val: {e}") from None
    report_cuts(report.val, console, max_len, "truncate", "val")
    return train, val, report
