"""The HTTP face of the serving layer: the key, the body size limit and JSON, then a call into Serving.

A streamed answer's status line waits for its first piece, so what fails before it (a full queue, a
timeout, a failed generation, a rules rejection) is a real error status; what fails after it arrives as
an error event in the stream, as OpenAI's API does it.
"""

from __future__ import annotations

import hmac
from contextlib import aclosing
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.deploy.serve.protocol import (
    ApiError, ChatRequest, CompletionRequest, Feedback, SseChunks, completion_body, decode_json, parse, sse, usage,
)
from tunesmith.deploy.serve.serving import Completion, Prepared, Serving
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server


def create_app(settings: ServeSettings, server: Server | None = None) -> FastAPI:
    """The FastAPI app; `server` may be passed to share one loaded model between apps (tests)."""
    srv = server or Server(settings)
    serving = Serving(srv, settings)
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None)
    app.state.server, app.state.serving = srv, serving

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:  # unknown route, wrong method
        return _error_response(ApiError(exc.status_code, str(exc.detail),
                                        "not_found" if exc.status_code == 404 else "bad_request", headers=exc.headers))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # same error shape, no traceback to clients
        return _error_response(ApiError(500, f"internal error: {type(exc).__name__}", "internal_error",
                                        "server_error"))

    def has_key(request: Request) -> bool:
        if settings.api_key is None:
            return True
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        return hmac.compare_digest(given.encode(), settings.api_key.encode())

    def check_key(request: Request) -> None:
        if not has_key(request):
            raise ApiError(401, "Incorrect API key provided", "invalid_api_key")

    async def read_json(request: Request) -> Any:
        too_large = ApiError(413, f"request body over {settings.max_body_bytes} bytes", "body_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise too_large
        return decode_json(bytes(body))

    async def answer(request: Request, model_cls: type[ChatRequest] | type[CompletionRequest]) -> Any:
        check_key(request)
        req = parse(model_cls, await read_json(request))
        p = serving.prepare(req)
        headers = {"X-Tunesmith-Version": p.target.answered_by}
        if req.stream:
            pieces = serving.run(p, stream=True)
            first = await anext(pieces)
            return StreamingResponse(_sse_stream(serving, p, first, pieces), media_type="text/event-stream",
                                     headers=headers)
        done = await serving.complete(p)
        return JSONResponse(completion_body(p.rid, p.endpoint, p.target.answered_by, done.text, done.finish,
                                            done.prompt_tokens, done.completion_tokens, serving.extra(p, done)),
                            headers=headers)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        state = serving.health()
        if not has_key(request):  # probes need no key; which versions are loaded is for key holders
            del state["loaded_adapters"]
        return JSONResponse(state, 200 if state["worker_alive"] else 503)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [_model(m) for m in serving.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check_key(request)
        if model_id not in serving.model_ids():
            raise ApiError(404, f"The model '{model_id}' does not exist", "model_not_found", param="model")
        return _model(model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await answer(request, ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await answer(request, CompletionRequest)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        check_key(request)
        return serving.feedback(parse(Feedback, await read_json(request)))

    return app


async def _sse_stream(serving: Serving, p: Prepared, first: str | Completion,
                      rest: AsyncIterator[str | Completion]) -> AsyncIterator[str]:
    chunks = SseChunks(p.rid, p.endpoint, p.target.answered_by)
    async with aclosing(rest):  # a client that hangs up closes this, which abandons its generation
        piece = first
        while True:
            if isinstance(piece, Completion):
                u = usage(piece.prompt_tokens, piece.completion_tokens) if p.req.include_usage() else None
                for chunk in chunks.end(piece.finish, serving.extra(p, piece), u):
                    yield chunk
                return
            yield chunks.piece(piece)
            try:
                piece = await anext(rest)
            except ApiError as e:  # the status line is sent: the error goes in the stream
                yield sse({"error": e.body()})
                return


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "tunesmith"}


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": e.body()}, status_code=e.status, headers=e.headers)
