"""A stand-in for vLLM's OpenAI server, run as a child by the vLLM engine tests (test-only).

It takes vLLM's command line (and ignores what it does not use) and mimics the endpoints the engine calls:
/health, /v1/models, /v1/load_lora_adapter, /v1/unload_lora_adapter and streamed /v1/completions with
token ids. Each model name answers its own token sequence, ending with the first of the request's
stop_token_ids, so a test can tell which version answered. FAKE_VLLM_RECORD names a JSON-lines file that
gets its argv and environment, every adapter load and every completion request; FAKE_VLLM_DELAY delays
listening (readiness); FAKE_VLLM_EXIT makes it exit at once with that code (a start that fails);
FAKE_VLLM_CANNOT_RUN makes every completion fail (a model it cannot run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

ANSWER_LEN = 6  # tokens before the stop token


def answer_ids(model: str, n: int) -> list[int]:
    start = sum(model.encode()) % 200 + 40
    return [start + i for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--served-model-name", default="base")
    args, _ = ap.parse_known_args()
    record = Path(os.environ["FAKE_VLLM_RECORD"])

    def note(kind: str, **what) -> None:
        with record.open("a") as f:
            f.write(json.dumps({"kind": kind, "pid": os.getpid(), **what}) + "\n")

    note("start", argv=sys.argv[1:], env={k: v for k, v in os.environ.items() if k.startswith("VLLM_")})
    if os.environ.get("FAKE_VLLM_EXIT"):
        print("fake vllm: refusing to start", flush=True)
        sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
    loaded: dict[str, str] = {}
    app = FastAPI()

    @app.middleware("http")
    async def key(request: Request, call_next):
        if request.url.path.startswith("/v1") and \
                request.headers.get("authorization") != f"Bearer {os.environ['VLLM_API_KEY']}":
            return JSONResponse({"error": {"message": "Unauthorized"}}, 401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {}

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": m} for m in [args.served_model_name, *loaded]]}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request):
        if os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") != "True":
            return JSONResponse({"detail": "Not Found"}, 404)
        body = await request.json()
        if body["lora_name"] in loaded:
            return JSONResponse({"error": {"message": f"The lora adapter '{body['lora_name']}' has already been "
                                                      "loaded."}}, 400)
        if not (Path(body["lora_path"]) / "adapter_config.json").is_file():
            return JSONResponse({"error": {"message": f"no adapter at {body['lora_path']}"}}, 400)
        loaded[body["lora_name"]] = body["lora_path"]
        note("load", **body)
        return f"Success: LoRA adapter '{body['lora_name']}' added successfully."

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request):
        body = await request.json()
        loaded.pop(body["lora_name"], None)
        note("unload", **body)
        return "Success"

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        note("completion", body=body)
        if os.environ.get("FAKE_VLLM_CANNOT_RUN"):  # as vLLM does for a model its kernels cannot run
            return JSONResponse({"error": {"message": "EngineCore encountered an issue."}}, 500)
        model = body["model"]
        if model != args.served_model_name and model not in loaded:
            return JSONResponse({"error": {"message": f"The model `{model}` does not exist."}}, 404)
        ids = answer_ids(model, min(ANSWER_LEN, body["max_tokens"]))
        if body.get("stop_token_ids") and len(ids) < body["max_tokens"]:
            ids.append(body["stop_token_ids"][0])

        async def chunks():
            for i, t in enumerate(ids):
                last = i == len(ids) - 1
                choice = {"index": 0, "text": "", "token_ids": [t], "finish_reason": "stop" if last else None}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
