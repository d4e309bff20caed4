"""The one place an OpenAI-compatible endpoint is reached from evaluation (the judge, endpoint systems): the
client, built the same way for both, and the check that a reply is a chat completion at all.

Retries with exponential backoff on 429, 5xx, timeouts and lost connections are the openai client's own
(it honours Retry-After); callers only choose how many.
"""

from __future__ import annotations

import os
from typing import Any


def make_client(base_url: str, api_key_env: str, timeout_s: float, retries: int):
    """An openai.OpenAI for `base_url`; the key is read from the environment variable named, never passed
    around or stored (a local server without a key gets a placeholder the client insists on)."""
    import openai

    return openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "not-set", timeout=timeout_s,
                         max_retries=retries)


def chat_choice(resp: Any) -> Any | None:
    """The first choice of a chat completion, or None when the reply is not one (a proxy's login page, a web
    server at the wrong path, an error body sent with status 200)."""
    from openai.types.chat import ChatCompletion

    choices = getattr(resp, "choices", None) if isinstance(resp, ChatCompletion) else None
    if not choices or getattr(choices[0], "message", None) is None:
        return None
    return choices[0]


def shown(resp: Any) -> str:
    """The start of a reply that is not a chat completion, for the error naming it."""
    from openai.types.chat import ChatCompletion

    return (resp.model_dump_json() if isinstance(resp, ChatCompletion) else str(resp))[:200]
