"""Shapes: one parsed row → a canonical record (Conversation, Preference or Text), or `Bad` with a reason.

One parser per format in formats.FORMATS; each checks roles, types and content so that a record that
exists is one training can use.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.containers import Bad
from tunesmith.data.records import ROLES, Conversation, Message, Origin, Preference, Text

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "system": "system",
}
_TOOL_ROLES = ("tool", "function", "function_call", "observation", "tool_call", "ipython")


def _content(value: Any, where: str) -> str:
    """Message content as a string; OpenAI-style lists of text parts are joined."""
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        if not all(isinstance(p.get("text"), str) for p in value):
            raise Bad("non_string_content", f"{where}: a text part has no string 'text'")
        value = "".join(p["text"] for p in value)
    if isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        kinds = sorted({str(p.get("type")) for p in value} - {"text"})
        raise Bad("non_string_content", f"{where}: content parts of type {', '.join(kinds)} are not supported (text only)")
    if not isinstance(value, str):
        raise Bad("non_string_content", f"{where}: content must be a string, got {_type(value)}")
    if not value.strip():
        raise Bad("empty_content", f"{where}: content is empty")
    return value


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require_dict(obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise Bad("wrong_type", f"expected a JSON object, got {_type(obj)}")
    return obj


def _check_turns(messages: list[Message]) -> None:
    for i, m in enumerate(messages):
        if m.role == "system" and i != 0:
            raise Bad("invalid_role", f"message {i + 1}: a system message must come first")
    if not any(m.role == "user" for m in messages):
        raise Bad("no_user_turn", "conversation has no user turn")
    if messages[-1].role != "assistant":
        raise Bad("missing_assistant", f"conversation ends on a {messages[-1].role} turn, not an assistant turn")


def _messages(value: Any, key: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[Message]:
    if not isinstance(value, list):
        raise Bad("wrong_type", f"'{key}' must be a list, got {_type(value)}")
    if not value:
        raise Bad("empty_content", f"'{key}' is empty")
    out: list[Message] = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict):
            raise Bad("wrong_type", f"{key}[{i}] must be an object, got {_type(m)}")
        role = m.get(role_key)
        if m.get("tool_calls") or m.get("function_call") or role in _TOOL_ROLES:
            raise Bad("invalid_role", f"{key}[{i}]: a tool call or tool result; tool-calling conversations are not supported")
        if not isinstance(role, str) or role not in roles:
            raise Bad("invalid_role", f"{key}[{i}]: {role_key} {role!r} is not one of {', '.join(sorted(roles))}")
        if content_key not in m:
            raise Bad("non_string_content", f"{key}[{i}]: no '{content_key}'")
        out.append(Message(roles[role], _content(m[content_key], f"{key}[{i}]")))
    return out


def _parse_chat(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    if "messages" not in obj:
        raise Bad("unknown_shape", "expected a chat record with a 'messages' list")
    msgs = _messages(obj["messages"], "messages", "role", "content", {r: r for r in ROLES})
    _check_turns(msgs)
    label = obj.get("label")
    return Conversation(msgs, origin=origin, label=None if label is None else _label(label),
                        meta=_ignored(obj["messages"], {"role", "content"}))


def _ignored(turns: list, used: set[str]) -> dict[str, Any]:
    """meta["ignored"]: turn fields the canonical record cannot hold ('name', 'weight'), so `data check` can say
    they are left out instead of losing them silently."""
    keys = sorted({k for t in turns for k, v in t.items() if v not in (None, "", [], {})} - used)  # empty: nothing lost
    return {"ignored": keys} if keys else {}


def _sharegpt_messages(turns: Any, key: str) -> list[Message]:
    # many exports keep the 'conversations' key but write OpenAI-style role/content turns
    openai_style = isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" not in turns[0] and "role" in turns[0]
    return _messages(turns, key, *(("role", "content") if openai_style else ("from", "value")), _SHAREGPT_ROLES)


def _parse_sharegpt(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    key = "conversations" if "conversations" in obj else "messages" if "messages" in obj else None
    if key is None:
        raise Bad("unknown_shape", "expected a ShareGPT record with a 'conversations' list")
    msgs = _sharegpt_messages(obj[key], key)
    if isinstance(obj.get("system"), str) and obj["system"].strip() and msgs[0].role != "system":
        msgs.insert(0, Message("system", obj["system"]))
    _check_turns(msgs)
    return Conversation(msgs, origin=origin, meta=_ignored(obj[key], {"from", "value", "role", "content"}))


def _opt_str(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Bad("non_string_content", f"'{key}' must be a string, got {_type(value)}")
    return value


def _parse_alpaca(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    if "instruction" not in obj or "output" not in obj:
        raise Bad("unknown_shape", "expected an Alpaca record with 'instruction' and 'output'")
    instruction = _content(obj["instruction"], "instruction")
    extra = _opt_str(obj, "input")
    if obj["output"] is None or (isinstance(obj["output"], str) and not obj["output"].strip()):
        raise Bad("missing_assistant", "'output' is empty: the record has no assistant answer")
    output = _content(obj["output"], "output")
    system = _opt_str(obj, "system")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    msgs = ([Message("system", system)] if system.strip() else []) + [Message("user", user), Message("assistant", output)]
    # keep the instruction/input split so alpaca → alpaca conversion is lossless
    meta: dict[str, Any] = {"alpaca": {"instruction": instruction, "input": extra}}
    if obj.get("history"):
        meta["ignored"] = ["history"]  # earlier turns in a list of pairs: not read (see `data check` warnings)
    return Conversation(msgs, origin=origin, meta=meta)


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 from a float column (pandas turns an int column with a gap into floats) is class 1
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Bad("wrong_type", f"'label' must be a string or integer, got {_type(value)}")
    label = str(value)
    if not label.strip():
        raise Bad("empty_content", "'label' is empty")
    return label


def _parse_classification(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    if "text" not in obj or "label" not in obj:
        missing = " and ".join(repr(k) for k in ("text", "label") if k not in obj)
        raise Bad("unknown_shape", f"expected a classification record with 'text' and 'label'; {missing} missing")
    text = _content(obj["text"], "text")
    label = _label(obj["label"])
    msgs = [Message("user", text), Message("assistant", label)]
    system = _opt_str(obj, "system")
    if system.strip():
        msgs.insert(0, Message("system", system))
    return Conversation(msgs, origin=origin, label=label)


def _pref_answer(value: Any, key: str) -> tuple[list[Message], str]:
    """(leading messages, final assistant answer) of a chosen/rejected field."""
    if isinstance(value, list):
        msgs = _messages(value, key, "role", "content", {r: r for r in ROLES})
        if msgs[-1].role != "assistant":
            raise Bad("missing_assistant", f"'{key}' does not end on an assistant turn")
        return msgs[:-1], msgs[-1].content
    return [], _content(value, key)


def _parse_preference(obj: Any, origin: Origin) -> Preference:
    obj = _require_dict(obj)
    if "chosen" not in obj or "rejected" not in obj:
        missing = " and ".join(repr(k) for k in ("chosen", "rejected") if k not in obj)
        raise Bad("unknown_shape", f"expected a preference record with 'prompt', 'chosen' and 'rejected'; {missing} missing")
    head_c, chosen = _pref_answer(obj["chosen"], "chosen")
    head_r, rejected = _pref_answer(obj["rejected"], "rejected")
    prompt_value = obj.get("prompt")
    if prompt_value is None:
        # TRL's implicit-prompt form: the prompt is the turns chosen and rejected share
        if not head_c or [m.to_dict() for m in head_c] != [m.to_dict() for m in head_r]:
            raise Bad("no_user_turn", "no 'prompt', and chosen/rejected do not share leading prompt turns")
        prompt = head_c
    elif [m.to_dict() for m in head_c] != [m.to_dict() for m in head_r]:
        # one prompt is kept: rejected's own leading turns would be lost without a word
        raise Bad("invalid_role", "chosen and rejected start with different turns before their answers")
    elif isinstance(prompt_value, list):
        prompt = _messages(prompt_value, "prompt", "role", "content", {r: r for r in ROLES}) + head_c
    else:
        prompt = [Message("user", _content(prompt_value, "prompt"))] + head_c
    if not any(m.role == "user" for m in prompt):
        raise Bad("no_user_turn", "the prompt has no user turn")
    if prompt[-1].role != "user":
        raise Bad("invalid_role", f"the prompt ends on a {prompt[-1].role} turn; it must end on a user turn")
    return Preference(prompt, chosen, rejected, origin=origin)


def _parse_text(obj: Any, origin: Origin) -> Text:
    obj = _require_dict(obj)
    if "text" not in obj:
        raise Bad("unknown_shape", "expected a text record with 'text'")
    return Text(_content(obj["text"], "text"), origin=origin)


PARSERS = {
    "chat": _parse_chat,
    "sharegpt": _parse_sharegpt,
    "alpaca": _parse_alpaca,
    "classification": _parse_classification,
    "preference": _parse_preference,
    "text": _parse_text,
}
