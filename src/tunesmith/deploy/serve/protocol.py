"""OpenAI's wire format as this server speaks it: request models, errors, response bodies and SSE chunks.

Nothing here knows about models, the registry or HTTP frameworks, so every layer above can use it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Endpoint = Literal["chat", "text"]


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = ""

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ("system", "user", "assistant", "developer"):
            raise ValueError(f"unsupported role {v!r}")
        return v

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


# OpenAI fields that change what the answer means; asked for (truthy) they are refused, not silently dropped.
_UNSUPPORTED = ("echo", "logprobs", "top_logprobs", "tools", "functions", "suffix")


class CommonRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send many optional OpenAI fields; unknown ones are ignored
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # torch.manual_seed's range

    def unsupported(self) -> str | None:
        extra = self.model_extra or {}
        for name in _UNSUPPORTED:
            if extra.get(name):
                return name
        fmt = extra.get("response_format")
        if fmt and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            return "response_format"
        best_of = extra.get("best_of")
        return "best_of" if isinstance(best_of, int) and best_of > 1 else None

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def stops(self) -> list[str]:
        # An empty stop string would end generation after the first token.
        return [s for s in ([self.stop] if isinstance(self.stop, str) else list(self.stop or [])) if s]


class ChatRequest(CommonRequest):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(CommonRequest):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("prompt: exactly one prompt per request")
            return self.prompt[0]
        return self.prompt


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    flag: bool = True
    correction: str | None = None


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and NaN/Infinity all are ValueErrors
        raise ApiError(400, f"request body is not valid JSON: {e}", "invalid_json") from None
    except RecursionError:  # a body of deeply nested arrays overflows the decoder's stack
        raise ApiError(400, "request body is not valid JSON: nested too deeply", "invalid_json") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # Python's json accepts NaN/Infinity; JSON does not


def parse(model_cls: type[BaseModel], data: Any) -> Any:
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "body"
        raise ApiError(400, f"{where}: {err['msg']}", "invalid_request", param=where) from None


def usage(n_in: int, n_out: int) -> dict[str, int]:
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def completion_body(rid: str, endpoint: Endpoint, model: str, text: str, finish: str, n_in: int, n_out: int,
                    extra: dict[str, Any]) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if endpoint == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid, "object": "chat.completion" if endpoint == "chat" else "text_completion",
        "created": int(time.time()), "model": model, "choices": [choice],
        "usage": usage(n_in, n_out),
        "tunesmith": extra,
    }


class SseChunks:
    """One streamed answer's SSE chunks in OpenAI's shape: deltas, then a chunk with finish_reason, then (when
    the client asked with stream_options.include_usage) one with no choices and the usage, then [DONE]."""

    def __init__(self, rid: str, endpoint: Endpoint, model: str):
        self.rid, self.endpoint, self.model = rid, endpoint, model
        self.created = int(time.time())
        self.obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        self._head = True  # the first chat delta names the role

    def piece(self, text: str) -> str:
        if self.endpoint == "chat":
            delta: dict[str, Any] | str = {"role": "assistant", "content": text} if self._head else {"content": text}
        else:
            delta = text
        self._head = False
        return sse(self._chunk(delta, None))

    def end(self, finish: str, extra: dict[str, Any], usage_: dict[str, int] | None) -> Iterator[str]:
        last = self._chunk({} if self.endpoint == "chat" else "", finish)
        last["tunesmith"] = extra
        yield sse(last)
        if usage_ is not None:
            yield sse({"id": self.rid, "object": self.obj, "created": self.created, "model": self.model,
                       "choices": [], "usage": usage_})
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        choice["delta" if self.endpoint == "chat" else "text"] = delta
        return {"id": self.rid, "object": self.obj, "created": self.created, "model": self.model, "choices": [choice]}


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
