"""Registry, export and server as a new user meets them: deleted files, unsafe outputs, other architectures,
and OpenAI-API edge cases (default max_tokens under a low cap, empty stop strings, huge seeds, usage chunks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.helpers import make_run
from tunesmith.deploy import gguf_export
from tunesmith.deploy.cli import export_app, registry_app, serve
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.server import Server, ServeSettings, create_app

KEY = "k3y"
CHAT = [{"role": "user", "content": "What is a lease?"}]


def _cli(*args):
    app = typer.Typer()
    app.add_typer(registry_app, name="registry")
    app.add_typer(export_app, name="export")
    app.command("serve")(serve)
    return CliRunner().invoke(app, list(args))


def _text(res) -> str:
    return " ".join(res.output.split())  # rich wraps long messages at the terminal width


@pytest.fixture(scope="module")
def reg(deploy_env, tmp_path_factory):
    env = deploy_env
    r = Registry(tmp_path_factory.mktemp("qa3") / "registry.db")
    for run in env.runs:
        r.add(run, "legal")
    r.add(env.runs[0], "gone")
    shutil.rmtree(r.versions("gone")[0].store)  # a version whose stored files were deleted behind its back
    return r


def _vid(reg, name, n=1):
    return reg.versions(name)[n - 1].id


# ---- registry ---------------------------------------------------------------------------------


def test_read_commands_refuse_a_registry_that_does_not_exist(tmp_path):
    db = tmp_path / "typo" / "registry.db"
    for args in (["registry", "list"], ["registry", "show", "legal@prod"], ["registry", "rollback", "legal@prod"]):
        res = _cli(*args, "--registry", str(db))
        assert res.exit_code == 2 and f"no registry at {db}" in _text(res)
    assert not db.parent.exists()  # nothing created by a mistyped path


def test_name_starting_with_a_dash_says_why(reg):
    res = _cli("registry", "add", ".", "--name", "-x", "--registry", str(reg.path))
    assert res.exit_code == 2 and "starting with a letter or digit" in _text(res)


def test_version_with_deleted_files_is_refused_by_name(reg, tmp_path):
    gone = _vid(reg, "gone")
    res = _cli("export", "merge", gone, "-o", str(tmp_path / "m"), "--registry", str(reg.path))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"version {gone}: adapter_config.json, adapter_model.safetensors missing from its store" in _text(res)
    assert not (tmp_path / "m").exists()
    res = _cli("export", "gguf", gone, "-o", str(tmp_path / "g.gguf"), "--registry", str(reg.path))
    assert res.exit_code == 2 and "missing from its store" in _text(res)
    base = reg.version(_vid(reg, "legal")).base_model  # any model directory, to get past the argument checks
    res = _cli("export", "verify", gone, "--merged", base, "--registry", str(reg.path))
    assert res.exit_code == 2 and "missing from its store" in _text(res)


# ---- export -----------------------------------------------------------------------------------


def test_merge_never_replaces_a_directory_that_is_not_a_model(reg, tmp_path):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("important")
    res = _cli("export", "merge", _vid(reg, "legal"), "-o", str(precious), "--no-verify", "--registry", str(reg.path))
    assert res.exit_code == 2 and "is not a model directory (no config.json)" in _text(res)
    assert (precious / "notes.txt").read_text() == "important" and (precious / "sub").is_dir()
    res = _cli("export", "merge", _vid(reg, "legal"), "-o", str(precious / "notes.txt"), "--registry", str(reg.path))
    assert res.exit_code == 2 and "is a file" in _text(res)
    base = reg.version(_vid(reg, "legal")).base_model
    res = _cli("export", "merge", _vid(reg, "legal"), "-o", base, "--no-verify", "--registry", str(reg.path))
    assert res.exit_code == 2 and "is the base model of this version" in _text(res)
    assert (Path(base) / "model.safetensors").is_file()
    # an earlier export (a model directory) is replaced as before
    out = tmp_path / "merged"
    assert _cli("export", "merge", _vid(reg, "legal"), "-o", str(out), "--no-verify",
                "--registry", str(reg.path)).exit_code == 0
    (out / "stale.txt").write_text("from an older export")
    assert _cli("export", "merge", _vid(reg, "legal"), "-o", str(out), "--no-verify",
                "--registry", str(reg.path)).exit_code == 0
    assert (out / "config.json").is_file() and not (out / "stale.txt").exists()


def test_export_output_and_verify_input_mistakes_exit_2(reg, tmp_path):
    res = _cli("export", "gguf", _vid(reg, "legal"), "-o", str(tmp_path), "--registry", str(reg.path))
    assert res.exit_code == 2 and "is a directory; give the GGUF file's path" in _text(res)
    res = _cli("export", "verify", _vid(reg, "legal"), "--merged", str(tmp_path), "--registry", str(reg.path))
    assert res.exit_code == 2 and "not a merged model directory (no config.json)" in _text(res)


def _tiny_base(root, model_type: str, **extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.demo.tiny import build_tokenizer

    root.mkdir(parents=True)
    tok = build_tokenizer(root)
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=256, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, bos_token_id=None, **extra)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(root))
    return root


@pytest.mark.parametrize("model_type, extra, message", [
    ("qwen2", {}, "model type 'qwen2': the GGUF exporter handles the llama family only (llama, mistral)"),
    ("gemma", {"head_dim": 8}, "model type 'gemma': the GGUF exporter handles the llama family only"),
    ("llama", {"attention_bias": True}, "llama model with attention_bias: the llama GGUF layout has no bias tensors"),
    ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 128}},
     "rope type 'llama3' is not supported by this exporter (default rope only)"),  # every Llama 3.1 / 3.2
])
def test_gguf_refuses_what_it_cannot_hold_and_writes_nothing(tmp_path, model_type, extra, message):
    base = _tiny_base(tmp_path / "base", model_type, **extra)
    run = make_run(tmp_path / "runs", base, "r", seed=1)
    db = tmp_path / "r.db"
    Registry(db).add(run, "arch")
    vid = Registry(db).versions()[0].id
    out = tmp_path / "out" / "m.gguf"
    res = _cli("export", "gguf", vid, "-o", str(out), "--registry", str(db))
    assert res.exit_code == 2 and message in _text(res)
    assert not out.parent.exists()
    # merging is architecture-neutral: it works and is parity-checked
    res = _cli("export", "merge", vid, "-o", str(tmp_path / "merged"), "--prompts", "2", "--registry", str(db),
               "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["parity"][0]["identical_greedy"] == 2


def test_gguf_writer_refuses_tensors_it_would_drop(tmp_path):
    """A config that understates the model (bias tensors present, attention_bias false) is caught by the tensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.demo.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         attention_bias=True))
    model.config.attention_bias = False
    with torch.no_grad():
        with pytest.raises(gguf_export.ExportError,
                           match=r"no place in the llama GGUF layout: model\.layers\.0\.self_attn\.k_proj\.bias"):
            gguf_export.write_gguf(model, tok, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.partial").exists()


# ---- server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(reg):
    # a cap (8) below the default new-token limit (16): requests naming no max_tokens must still work
    settings = ServeSettings(registry=reg.path, api_key=KEY, max_tokens_cap=8, default_max_tokens=16, seed=0)
    srv = Server(settings)
    with TestClient(create_app(settings, srv)) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client
    srv.engine.stop()


def test_default_max_tokens_is_capped_not_refused(api, reg):
    r = api.post("/v1/chat/completions", json={"model": _vid(reg, "legal"), "messages": CHAT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] <= 8
    if body["choices"][0]["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 8
    r = api.post("/v1/chat/completions", json={"model": _vid(reg, "legal"), "messages": CHAT, "max_tokens": 9})
    assert r.status_code == 400 and r.json()["error"]["code"] == "max_tokens_too_large"


def test_empty_stop_strings_are_ignored(api, reg):
    ask = {"model": _vid(reg, "legal", 2), "messages": CHAT, "max_tokens": 6}
    plain = api.post("/v1/chat/completions", json=ask).json()
    stopped = api.post("/v1/chat/completions", json={**ask, "stop": ["", ""]}).json()
    assert stopped["choices"][0]["message"] == plain["choices"][0]["message"]
    assert stopped["usage"] == plain["usage"] and stopped["choices"][0]["finish_reason"] == \
        plain["choices"][0]["finish_reason"]


def test_out_of_range_seed_and_empty_prompt_are_400_not_500(api, reg):
    r = api.post("/v1/chat/completions", json={"model": "base", "messages": CHAT, "max_tokens": 2,
                                               "temperature": 1, "seed": 2**70})
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    r = api.post("/v1/completions", json={"model": "base", "prompt": "", "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "prompt: empty", "type": "invalid_request_error", "param": "prompt", "code": "invalid_request"}


def test_missing_adapter_files_answer_503_naming_the_model(api, reg):
    r = api.post("/v1/chat/completions", json={"model": _vid(reg, "gone"), "messages": CHAT, "max_tokens": 2})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "model_unavailable" and _vid(reg, "gone") in err["message"]
    assert str(reg.path.parent) not in err["message"]  # server paths stay on the server


@pytest.mark.parametrize("endpoint, payload", [
    ("/v1/chat/completions", {"messages": CHAT}),
    ("/v1/completions", {"prompt": "What is a lease?"}),
])
def test_stream_include_usage_ends_with_a_usage_chunk(api, reg, endpoint, payload):
    ask = {"model": _vid(reg, "legal", 3), "max_tokens": 5, **payload}
    plain = api.post(endpoint, json=ask).json()
    with api.stream("POST", endpoint, json={**ask, "stream": True, "stream_options": {"include_usage": True}}) as r:
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    usage_chunk = json.loads(lines[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert json.loads(lines[-3])["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    with api.stream("POST", endpoint, json={**ask, "stream": True}) as r:  # not asked: no usage chunk
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert all("usage" not in json.loads(ln) for ln in lines[:-1])


def test_serve_refuses_an_empty_api_key(reg):
    res = _cli("serve", "--api-key", "", "--registry", str(reg.path))
    assert res.exit_code == 2 and "--api-key is empty" in _text(res)


def test_vllm_command_names_a_version_whose_files_were_deleted(reg, tmp_path):
    db = tmp_path / "v.db"
    shutil.copy(reg.path, db)  # same versions (stores are absolute paths); an alias on the deleted one
    Registry(db).set_alias("gone@prod", _vid(reg, "gone"))
    res = _cli("serve", "--engine", "vllm", "--print", "--registry", str(db))
    assert res.exit_code == 2 and f"version {_vid(reg, 'gone')}: adapter_config.json" in _text(res)


# ---- flywheel ---------------------------------------------------------------------------------


def test_flywheel_export_mistakes_exit_2(reg, tmp_path):
    from tunesmith.deploy.cli import flywheel_app

    app = typer.Typer()
    app.add_typer(flywheel_app, name="flywheel")
    not_a_log = tmp_path / "log.db"
    not_a_log.write_text("this is not sqlite\n")
    res = CliRunner().invoke(app, ["flywheel", "export", "-o", str(tmp_path / "o.jsonl"), "--log", str(not_a_log)])
    assert res.exit_code == 2 and "not a tunesmith request log" in _text(res)
    res = CliRunner().invoke(app, ["flywheel", "export", "-o", str(tmp_path), "--log", str(not_a_log)])
    assert res.exit_code == 2 and "is a directory; give the JSONL file's path" in _text(res)


def test_list_marks_versions_whose_files_are_missing(reg):
    res = _cli("registry", "list", "--registry", str(reg.path), "--json")
    assert res.exit_code == 0, res.output
    ok = {v["id"]: v["files_ok"] for v in json.loads(res.stdout)["versions"]}
    assert ok == {_vid(reg, "gone"): False, **{v.id: True for v in reg.versions("legal")}}
    res = _cli("registry", "show", _vid(reg, "gone"), "--registry", str(reg.path), "--json")
    assert json.loads(res.stdout)["files_ok"] is False
    res = _cli("registry", "list", "--registry", str(reg.path))  # 80 columns: ids must still be whole
    assert "(files missing)" in res.output
    assert all(v.id in res.output for v in reg.versions())


def test_removed_version_numbers_are_never_reused(deploy_env, tmp_path):
    """Reusing legal-v3's id for a new adapter would make a rollback silently serve the wrong model."""
    from datetime import datetime

    from tunesmith.deploy.registry import RegistryError

    env = deploy_env
    r = Registry(tmp_path / "r.db")
    day = datetime(2026, 11, 22)
    v1, v2, v3 = (r.add(run, "legal", today=day).id for run in env.runs)
    r.set_alias("legal@prod", v3)
    r.set_alias("legal@prod", v2)
    r.remove(v3)
    again = r.add(env.runs[0], "legal", today=day)
    assert again.id == "legal-v4-20261122" and again.number == 4
    with pytest.raises(RegistryError, match="version legal-v3-20261122 was removed"):
        r.rollback("legal@prod")
    assert r.alias("legal@prod").targets == [(v2, 1.0)]


@pytest.mark.parametrize("field, value", [
    ("logprobs", True), ("echo", True), ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("response_format", {"type": "json_object"}), ("best_of", 2),
])
def test_features_the_server_lacks_are_refused_not_ignored(api, reg, field, value):
    ask = {"model": _vid(reg, "legal"), "messages": CHAT, "max_tokens": 2}
    r = api.post("/v1/chat/completions", json={**ask, field: value})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == field and r.json()["error"]["code"] == "unsupported_parameter"
    # the same fields at their "off" values, as SDKs send them, are fine
    off = {"logprobs": False, "echo": False, "tools": [], "response_format": {"type": "text"}, "best_of": 1}[field]
    assert api.post("/v1/chat/completions", json={**ask, field: off}).status_code == 200


def test_retrieve_one_model(api, reg):
    alias_free = _vid(reg, "legal")
    r = api.get(f"/v1/models/{alias_free}")
    assert r.status_code == 200 and r.json() == {"id": alias_free, "object": "model", "created": 0,
                                                  "owned_by": "tunesmith"}
    r = api.get("/v1/models/nope@prod")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert api.get("/v1/models/base", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_default_max_tokens_shrinks_to_the_context_left(api, reg):
    """No max_tokens and a prompt near the context (2048): answered within what is left, not refused."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reg.version(_vid(reg, "legal")).base_model)
    prompt = " the" * 2045  # one token each with the tiny tokenizer
    n = len(tok(prompt)["input_ids"])
    assert n == 2045
    r = api.post("/v1/completions", json={"model": _vid(reg, "legal"), "prompt": prompt})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == n and r.json()["usage"]["completion_tokens"] <= 2048 - n
    r = api.post("/v1/completions", json={"model": _vid(reg, "legal"), "prompt": prompt, "max_tokens": 8})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_moved_base_model_is_named_not_a_hub_error(tmp_path):
    from tunesmith.demo.tiny import build_tiny_model

    base = build_tiny_model(tmp_path / "base")
    run = make_run(tmp_path / "runs", base, "r", seed=2)
    db = tmp_path / "r.db"
    vid = Registry(db).add(run, "moved").id
    shutil.rmtree(base)
    res = _cli("export", "merge", vid, "-o", str(tmp_path / "m"), "--registry", str(db))
    assert res.exit_code == 2
    assert f"version {vid}: its base model {base} is gone (moved or deleted)" in _text(res)
    res = _cli("serve", "--registry", str(db))
    assert res.exit_code == 2 and f"base model {base} does not exist" in _text(res)
