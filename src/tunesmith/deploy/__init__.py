"""Deploy: the adapter registry, merge and GGUF export, the OpenAI-compatible server, the data flywheel."""
