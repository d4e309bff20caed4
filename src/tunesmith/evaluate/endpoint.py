"""Endpoint systems: test prompts answered by an OpenAI-compatible endpoint (config `eval.systems` entries with a
url), with the openai client's retries and backoff, a requests-per-minute limit and a few requests in flight.

A request that still fails after its retries is not fatal: the item is recorded with the reason, scored as an
empty answer, and counted in results.json (`systems[name].endpoint`), so one flaky endpoint never costs a whole
evaluation. Answers are cached per item, keyed by url, model, messages and generation settings; a re-run asks
again only for the items that failed.

Tokens per request come from the reply's `usage`; an endpoint that sends none has its tokens counted with the
run's tokenizer and labelled "estimated".
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from tunesmith.eval_settings import EndpointSystem
from tunesmith.data.records import Conversation

Messages = list[dict[str, str]]
TokenCounter = Callable[[Messages, str], tuple[int, int]]


def endpoint_messages(tests: list[Conversation], system: EndpointSystem, shots: Messages) -> list[Messages]:
    """Each test prompt as the endpoint gets it: its system prompt replaced when the system names one, the
    few-shot pairs between the system prompt and the question."""
    out = []
    for conv in tests:
        msgs = conv.prompt_messages()
        head = [m for m in msgs if m["role"] == "system"]
        if system.system_prompt is not None:
            head = [{"role": "system", "content": system.system_prompt}]
        out.append(head + shots + [m for m in msgs if m["role"] != "system"])
    return out


def token_counter(tokenizer) -> TokenCounter:
    """(prompt, completion) tokens of one request as `tokenizer` counts them: the chat template with its
    generation prompt, and the answer's text."""

    def count(messages: Messages, text: str) -> tuple[int, int]:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return (len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
                len(tokenizer(text, add_special_tokens=False)["input_ids"]))

    return count


class _RateLimit:
    """Spaces request starts at least 60/rate seconds apart, across threads."""

    def __init__(self, per_minute: float | None):
        self.gap = 60.0 / per_minute if per_minute else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.gap:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.gap
        time.sleep(max(0.0, start - now))


def _failure(exc: Exception, retries: int) -> dict[str, Any]:
    """The reason an exhausted request failed, and the retries it took (the client retries what is retryable)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return {"error": "timeout", "retries": retries}
    if isinstance(exc, openai.APIConnectionError):
        return {"error": "connection failed", "retries": retries}
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        retried = code in (408, 409, 429) or code >= 500
        message = exc.message if isinstance(exc.message, str) else ""
        return {"error": f"HTTP {code}" + (f" ({message[:80]})" if message and not retried else ""),
                "retries": retries if retried else 0}
    return {"error": f"{type(exc).__name__}: {exc}"[:120], "retries": 0}


def ask_endpoint(
    system: EndpointSystem,
    conversations: list[Messages],
    *,
    max_tokens: int,
    cache: Path,
    count_tokens: TokenCounter,
    console: Console,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """One item per conversation, in order: {"text", "prompt_tokens", "completion_tokens", "usage" ("api" |
    "estimated"), "retries"}, or {"error", "retries"} for a request that failed after its retries."""
    import openai

    from tunesmith.evaluate.generate import progress_bar
    from tunesmith.evaluate.openai_client import chat_choice, make_client, shown

    items: list[dict[str, Any] | None] = [None] * len(conversations)
    if cache.is_file():
        items = [it if "text" in it else None for it in json.loads(cache.read_text(encoding="utf-8"))]
    todo = [i for i, it in enumerate(items) if it is None]
    if cache.is_file():
        again = f"; asking again for {len(todo)} that failed" if todo else ""
        console.print(f"[dim]{system.name}: {len(items) - len(todo)} answers from cache{again}[/]")
    if not todo:
        return items  # type: ignore[return-value]
    client = make_client(system.url, system.api_key_env, system.timeout_s, system.retries)
    limit = _RateLimit(system.rate_limit)

    def one(i: int) -> dict[str, Any]:
        limit.wait()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=system.model, messages=conversations[i], temperature=system.temperature, max_tokens=max_tokens)
            resp = raw.parse()
        except openai.APIError as e:
            return _failure(e, system.retries)
        choice = chat_choice(resp)
        if choice is None:
            return {"error": f"not a chat completion: {shown(resp)!r}"[:120], "retries": raw.retries_taken}
        text = (choice.message.content or "").strip()  # as the local systems' answers are
        usage = resp.usage
        if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
            counted, source = (usage.prompt_tokens, usage.completion_tokens), "api"
        else:
            counted, source = count_tokens(conversations[i], text), "estimated"
        return {"text": text, "prompt_tokens": counted[0], "completion_tokens": counted[1], "usage": source,
                "retries": raw.retries_taken}

    progress = progress_bar(console, f"endpoint {system.name}") if show_progress else None
    try:
        if progress:
            progress.start()
            task = progress.add_task(system.name, total=len(todo))
        with ThreadPoolExecutor(max_workers=system.concurrency) as pool:
            for i, item in zip(todo, pool.map(one, todo)):
                items[i] = item
                if progress:
                    progress.update(task, advance=1)
    finally:
        if progress:
            progress.stop()
        done = [it if it is not None else {"error": "not asked (interrupted)", "retries": 0} for it in items]
        cache.write_text(json.dumps(done, ensure_ascii=False), encoding="utf-8")
    return done


def endpoint_record(system: EndpointSystem, items: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json `systems[name].endpoint`: where it was asked, and what failed and why."""
    failed = [(i + 1, it["error"]) for i, it in enumerate(items) if "error" in it]
    reasons = Counter(reason for _, reason in failed)
    summary = None
    if failed:
        why = next(iter(reasons)) if len(reasons) == 1 else ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        plural = "retry" if system.retries == 1 else "retries"
        summary = (f"endpoint {system.name}: {len(failed)} of {len(items)} requests failed after "
                   f"{system.retries} {plural}: {why}")
    return {"url": system.url, "model": system.model, "requests": len(items), "failed": len(failed),
            "retries": sum(it.get("retries", 0) for it in items), "max_retries": system.retries,
            "reasons": dict(reasons), "failures": [{"id": i, "reason": r} for i, r in failed], "summary": summary}


def usage_record(counts: list[tuple[int, int] | None], sources: set[str]) -> dict[str, Any]:
    """results.json `systems[name].usage` from per-request (prompt, completion) tokens; None: no answer."""
    answered = [c for c in counts if c is not None]
    n = len(answered)
    prompt, completion = sum(c[0] for c in answered), sum(c[1] for c in answered)
    return {"requests": n, "prompt_tokens": prompt, "completion_tokens": completion,
            "mean_prompt_tokens": prompt / n if n else None, "mean_completion_tokens": completion / n if n else None,
            "source": sources.pop() if len(sources) == 1 else "mixed" if sources else None}
