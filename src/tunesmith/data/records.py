"""Canonical records. Every input format is read into one of these three types.

Each record keeps its origin (file, 1-based line or row) so that any later rejection,
duplicate or rule violation points back to the exact place it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Origin:
    file: str
    line: int  # 1-based line (JSONL/TXT), element index + 1 (JSON array) or row number (CSV/Parquet)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    messages: list[Message]
    origin: Origin | None = None
    label: str | None = None  # set for classification data read as conversations
    meta: dict[str, Any] = field(default_factory=dict)

    kind: Literal["conversation"] = "conversation"

    @property
    def system(self) -> str | None:
        return self.messages[0].content if self.messages and self.messages[0].role == "system" else None

    def assistant_turns(self) -> list[str]:
        return [m.content for m in self.messages if m.role == "assistant"]

    def last_user(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""

    def prompt_messages(self) -> list[dict[str, str]]:
        """Everything before the final assistant turn: what a model is asked at eval time."""
        msgs = [m.to_dict() for m in self.messages]
        if msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        return msgs

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"messages": [m.to_dict() for m in self.messages]}
        if self.label is not None:
            d["label"] = self.label
        return d

    @classmethod
    def from_messages(cls, messages: list[dict[str, str]], origin: Origin | None = None, **kw: Any) -> "Conversation":
        return cls([Message(m["role"], m["content"]) for m in messages], origin=origin, **kw)


@dataclass
class Preference:
    prompt: list[Message]
    chosen: str
    rejected: str
    origin: Origin | None = None

    kind: Literal["preference"] = "preference"

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": [m.to_dict() for m in self.prompt], "chosen": self.chosen, "rejected": self.rejected}


@dataclass
class Text:
    text: str
    origin: Origin | None = None

    kind: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text}


Record = Union[Conversation, Preference, Text]
