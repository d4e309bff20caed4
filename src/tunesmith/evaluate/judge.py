"""Optional LLM-as-judge: score outputs 1-5 against a rubric via any OpenAI-compatible endpoint.

Judges are run by the user (OpenAI, a local vLLM, the tunesmith server...), so nothing
here is needed for the default evaluation. Answers that are not the requested JSON are
asked again up to `retries` times (shown their reply and the format) and then counted as
unparseable, never guessed.
"""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field

from tunesmith.rules import parse_json_answer
from tunesmith.errors import UserError

DEFAULT_RUBRIC = (
    "Score how well the answer serves the user: 5 = correct, complete and in the requested format; "
    "3 = partly correct or with format problems; 1 = wrong, off-topic or harmful."
)

_SYSTEM = (
    "You are a strict evaluator. Read the rubric, the user's request, an optional reference answer "
    "and the answer to grade. Reply with one JSON object and nothing else: "
    '{"score": <integer 1-5>, "reason": "<one sentence>"}'
)

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

# Sent with the unusable reply on a retry: at temperature 0 the same request gets the same reply.
_REASK = 'That was not the verdict format. Reply with one JSON object only: {"score": <integer 1-5>, "reason": "<one sentence>"}'


class JudgeError(UserError, RuntimeError):
    """The judge endpoint could not be used (connection, authentication, unknown model)."""


class JudgeConfig(BaseModel):
    base_url: str = Field(description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Judge model name as the endpoint knows it.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key; unset is fine for local servers."
    )
    rubric: str = Field(DEFAULT_RUBRIC, description="What a 1 and a 5 mean for this task.")
    retries: int = Field(2, ge=0, description="Extra attempts when the judge's reply is not the requested JSON.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of the judge.")
    max_tokens: int = Field(256, ge=1, description="Cap on the judge's reply length.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout in seconds.")


def judge_messages(rubric: str, prompt: str, output: str, reference: str | None = None) -> list[dict[str, str]]:
    parts = [f"Rubric:\n{rubric}", f"User request:\n{prompt}"]
    if reference:
        parts.append(f"Reference answer:\n{reference}")
    parts.append(f"Answer to grade:\n{output}")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_verdict(text: str) -> tuple[int, str] | None:
    """(score, reason) from a judge reply, or None when it is not a usable verdict.

    Accepts bare JSON, a ```json fence, or one JSON object inside surrounding prose.
    """
    ok, value = parse_json_answer(text)
    if not ok:
        m = _OBJECT.search(text)
        if not m:
            return None
        try:
            value = json.loads(m.group(0))
        except (json.JSONDecodeError, RecursionError):
            return None
    if not isinstance(value, dict):
        return None
    score = value.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score != int(score) or not 1 <= score <= 5:
        return None
    reason = value.get("reason", "")
    return int(score), reason if isinstance(reason, str) else json.dumps(reason)


def judge(items: list[dict[str, Any]], config: JudgeConfig, show_progress: bool = True) -> dict[str, Any]:
    """Grade each {"id", "prompt", "output", "reference"?} item.

    Returns {"n", "scored", "unparseable", "mean_score" (None when nothing scored),
    "score_counts": {"1".."5": k}, "items": [{"id", "score", "reason", "attempts"}]},
    items in input order; an unparseable item has score None and its last raw reply as reason.
    """
    import openai

    from tunesmith.evaluate.openai_client import chat_choice, make_client, shown

    client = make_client(config.base_url, config.api_key_env, config.timeout_s, retries=2)

    def grade(item: dict[str, Any]) -> dict[str, Any]:
        messages = judge_messages(config.rubric, item["prompt"], item["output"], item.get("reference"))
        text = ""
        for attempt in range(1, config.retries + 2):
            reask = [{"role": "assistant", "content": text}, {"role": "user", "content": _REASK}] if attempt > 1 else []
            try:
                resp = client.chat.completions.create(
                    model=config.model,
                    messages=messages + reask,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                )
            except openai.APITimeoutError:
                raise JudgeError(f"judge endpoint {config.base_url}: no reply within {config.timeout_s:g} s "
                                 "(3 tries); a slow judge needs a longer timeout") from None
            except openai.APIError as e:
                raise JudgeError(f"judge endpoint {config.base_url}: {e}") from None
            choice = chat_choice(resp)
            if choice is None:
                raise JudgeError(f"judge endpoint {config.base_url}: the reply is not an OpenAI chat completion "
                                 f"(is the URL the API's /v1 root?): {shown(resp)!r}")
            text = choice.message.content or ""
            # a refusal or a content filter leaves no text; say so instead of an empty reason
            raw = text or f"(no text; finish_reason {choice.finish_reason!r})"
            verdict = parse_verdict(raw)
            if verdict is not None:
                return {"id": item["id"], "score": verdict[0], "reason": verdict[1], "attempts": attempt}
        return {"id": item["id"], "score": None, "reason": raw, "attempts": config.retries + 1}

    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        futures = [pool.submit(grade, it) for it in items]
        results = _collect(futures, show_progress)
    scores = [r["score"] for r in results if r["score"] is not None]
    return {
        "n": len(results),
        "scored": len(scores),
        "unparseable": len(results) - len(scores),
        "mean_score": sum(scores) / len(scores) if scores else None,
        "score_counts": {str(k): scores.count(k) for k in range(1, 6)},
        "items": results,
    }


def _collect(futures: list, show_progress: bool) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("judging"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("judge", total=len(futures))
        results = []
        for fut in futures:
            try:
                results.append(fut.result())
            except JudgeError:
                for other in futures:
                    other.cancel()
                raise
            progress.advance(task)
    return results
