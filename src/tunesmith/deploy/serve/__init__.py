"""The embedded OpenAI-compatible server, in layers that each do one job.

protocol  the OpenAI wire shapes: request models, response bodies and SSE chunks, ApiError
engine    what serving needs from a model runner (Job, Generation, the Engine protocol)
embedded  the in-process engine: one worker thread owns the model, batches by adapter
vllm_engine  an engine that decodes on a vLLM child (`--engine vllm`), loading versions into it at runtime
vllm_child   that child process: started, waited for, watched, restarted, stopped
state     what one server holds (registry, request log, engine) and what a model name means
serving   one completion path for streaming and plain answers, the rules guard, the request log;
          callable without HTTP (the `tunesmith ui` playground uses Serving.chat)
app       the FastAPI routes, a few lines each: key, body size, JSON, then the serving layer
"""
