"""Read a training file and summarise what the advisor and the cost estimate need.

Reading is tunesmith.data.formats' job (every supported container and shape, each record with its
origin); the plan stage keeps the conversation records, and skips unreadable rows with a count and
the first location, so a planning estimate is not blocked by one broken line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.data import formats
from tunesmith.data.records import Conversation, Message
from tunesmith.errors import DataError


@dataclass
class Loaded:
    conversations: list[Conversation]
    skipped: int  # unreadable rows, left out of every count
    first_skipped: str | None  # "file:line: message" of the first one

    def warning(self) -> str | None:
        if not self.skipped:
            return None
        return f"{self.skipped} unreadable row(s) left out (first: {self.first_skipped}); see `tunesmith data check`"


def read_conversations(path: Path, system_prompt: str | None = None) -> Loaded:
    """The file's conversations; `system_prompt` (data.system_prompt) goes first where a record has none, as
    training adds it."""
    result = formats.read_file(path)
    convs = [r for r in result.records if isinstance(r, Conversation)]
    if result.records and not convs:
        raise DataError(f"{path}: {result.format} records; planning needs conversations (chat, sharegpt, alpaca or text+label)")
    first = result.invalid[0] if result.invalid else None
    if not convs:
        reason = f" (first problem: line {first.line}: {first.message})" if first else ""
        raise DataError(f"{path}: no usable records{reason}")
    if system_prompt:
        for c in convs:
            if c.system is None:
                c.messages.insert(0, Message("system", system_prompt))
    return Loaded(convs, len(result.invalid), f"{first.file}:{first.line}: {first.message}" if first else None)


@dataclass
class DataStats:
    records: int
    labels: dict[str, int] = field(default_factory=dict)
    label_imbalance: float | None = None  # most common / least common label count
    system_prompt_share: float = 0.0  # share of records carrying the single most common system prompt
    system_prompt_chars: int = 0
    mean_user_chars: float = 0.0
    mean_assistant_chars: float = 0.0
    skipped_rows: int = 0
    skipped_note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(loaded: Loaded) -> DataStats:
    convs = loaded.conversations
    n = len(convs)
    labels = Counter(c.label for c in convs if c.label is not None)
    systems = Counter(c.system for c in convs if c.system)
    top_system, top_count = systems.most_common(1)[0] if systems else ("", 0)
    users = [m.content for c in convs for m in c.messages if m.role == "user"]
    answers = [a for c in convs for a in c.assistant_turns()]
    return DataStats(
        records=n,
        labels=dict(labels.most_common()),
        label_imbalance=round(max(labels.values()) / min(labels.values()), 2) if len(labels) > 1 else None,
        system_prompt_share=round(top_count / n, 3),
        system_prompt_chars=len(top_system),
        mean_user_chars=round(sum(map(len, users)) / max(len(users), 1), 1),
        mean_assistant_chars=round(sum(map(len, answers)) / max(len(answers), 1), 1),
        skipped_rows=loaded.skipped,
        skipped_note=loaded.warning(),
    )
