"""`data synth`: distil a teacher model into chat records through any OpenAI-compatible endpoint.

Retries with backoff are the `openai` client's own (429, 5xx, timeouts, connection errors,
honouring Retry-After); this module adds a requests-per-second limit, resumability (prompts
already answered in OUT are skipped, a half-written last line is dropped) and a review
sample of about 10% for a human to read before training on the answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunesmith.data import formats, parsers
from tunesmith.data.containers import Bad, read_rows
from tunesmith.data.formats import Invalid
from tunesmith.data.records import ROLES, Origin

REVIEW_FRACTION = 0.10


@dataclass
class Prompt:
    origin: Origin
    messages: list[dict[str, str]]

    @property
    def key(self) -> str:
        return prompt_key(self.messages)


def prompt_key(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _prompt_messages(value: Any, fmt: str, origin: Origin) -> list[dict[str, str]]:
    """The turns to send: a record of any format without its final answer (prompts need no answers)."""
    if fmt in ("chat", "sharegpt"):
        obj = parsers._require_dict(value)
        key = "messages" if "messages" in obj else "conversations"
        if fmt == "chat":
            msgs = parsers._messages(obj.get(key), key, "role", "content", {r: r for r in ROLES})
        else:
            msgs = parsers._sharegpt_messages(obj.get(key), key)
        while msgs and msgs[-1].role == "assistant":
            msgs.pop()
        if not msgs or msgs[-1].role != "user":
            raise Bad("no_user_turn", "the prompt does not end on a user turn")
        return [m.to_dict() for m in msgs]
    if fmt == "preference":
        return [m.to_dict() for m in parsers._parse_preference(value, origin).prompt]
    if fmt in ("text", "classification"):
        return [{"role": "user", "content": parsers._content(parsers._require_dict(value).get("text"), "text")}]
    obj = parsers._require_dict(value)
    instruction = parsers._content(obj.get("instruction"), "instruction")
    extra = parsers._opt_str(obj, "input")
    return [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction}]


def read_prompts(path: str | Path, format: str = "auto") -> tuple[list[Prompt], list[Invalid]]:
    """Prompts from any supported file (a .txt file is one prompt per line)."""
    p = Path(path)
    formats.require_file(p)
    rows_iter, plain = read_rows(p)
    rows = list(rows_iter)
    fmt = format if format != "auto" else "text" if plain else formats._detect(v for _, v, _ in rows if not isinstance(v, Bad)) or "text"
    prompts: list[Prompt] = []
    invalid: list[Invalid] = []
    for line, value, raw in rows:
        origin = Origin(str(p), line)
        try:
            if isinstance(value, Bad):
                raise value
            prompts.append(Prompt(origin, _prompt_messages(value, fmt, origin)))
        except Bad as bad:
            invalid.append(Invalid(line, bad.reason, bad.message, str(p), raw))
    return prompts, invalid


class RateLimiter:
    """At most `rps` request starts per second across threads."""

    def __init__(self, rps: float):
        self.interval = 1.0 / rps if rps > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


@dataclass
class SynthResult:
    out: str
    review: str
    prompts: int  # prompts considered (the first n of the file)
    already_answered: int
    written: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # prompts that could not be read, with line and reason
    review_count: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "review_file": self.review,
            "prompts": self.prompts,
            "already_answered": self.already_answered,
            "written": self.written,
            "failed": len(self.failed),
            "failures": self.failed,
            "invalid_prompts": len(self.invalid),
            "invalid_prompt_records": self.invalid,
            "review_sample": self.review_count,
        }


def review_path(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.stem + ".review.jsonl")


def _answered(out: Path) -> set[str]:
    """Keys of prompts already in OUT; a last line cut off by a crash is removed so appends stay valid."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    keys = set()
    for line in data.decode("utf-8", "replace").split("\n"):  # splitlines() also breaks at U+2028 inside strings
        try:
            msgs = json.loads(line)["messages"]
            keys.add(prompt_key(msgs[:-1]))
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            continue
    return keys


def _write_review(out: Path, fraction: float, seed: int) -> int:
    lines = [ln for ln in out.read_text(encoding="utf-8").split("\n") if ln.strip()] if out.exists() else []
    k = min(len(lines), math.ceil(len(lines) * fraction))
    picked = sorted(random.Random(seed).sample(range(len(lines)), k))
    with review_path(out).open("w", encoding="utf-8") as f:
        for i in picked:
            record = json.loads(lines[i])
            f.write(json.dumps({"line": i + 1, **record, "review": {"ok": None, "note": ""}}, ensure_ascii=False) + "\n")
    return k


def synth(
    prompts_file: str | Path,
    out: str | Path,
    teacher_url: str,
    teacher_model: str,
    n: int | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    rps: float = 5.0,
    concurrency: int = 4,
    max_retries: int = 4,
    timeout: float = 120.0,
    temperature: float | None = None,
    max_tokens: int | None = None,
    review_fraction: float = REVIEW_FRACTION,
    seed: int = 0,
    format: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> SynthResult:
    from openai import OpenAI, OpenAIError

    prompts, invalid = read_prompts(prompts_file, format)
    if not prompts and not invalid:
        raise formats.DataError(f"{prompts_file}: no prompts (the file is empty or holds only blank lines)")
    if n is not None:
        prompts = prompts[:n]
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = _answered(out_path)
    todo = [p for p in prompts if p.key not in done]
    result = SynthResult(str(out_path), str(review_path(out_path)), len(prompts), len(prompts) - len(todo), 0)
    result.invalid = [x.to_dict() for x in invalid]
    # local OpenAI-compatible servers accept any key; the client only insists that one is set
    client = OpenAI(
        base_url=teacher_url, api_key=os.environ.get(api_key_env) or "not-set", max_retries=max_retries, timeout=timeout
    )
    limiter = RateLimiter(rps)
    extra: dict[str, Any] = {}
    if temperature is not None:
        extra["temperature"] = temperature
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens

    def ask(p: Prompt) -> str:
        limiter.wait()
        resp = client.chat.completions.create(model=teacher_model, messages=p.messages, **extra)
        answer = resp.choices[0].message.content if resp.choices else None
        if not answer or not answer.strip():
            raise ValueError("the teacher returned an empty answer")
        return answer

    with out_path.open("a", encoding="utf-8") as f, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(ask, p) for p in todo]
        # written in prompt order (not completion order) so reruns produce the same file
        for p, fut in zip(todo, futures):
            try:
                answer = fut.result()
            except (OpenAIError, ValueError) as e:
                result.failed.append({"line": p.origin.line, "error": f"{type(e).__name__}: {e}"})
            else:
                f.write(json.dumps({"messages": p.messages + [{"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
                f.flush()
                result.written += 1
            if progress:
                progress(1)
    result.review_count = _write_review(out_path, review_fraction, seed)
    return result
