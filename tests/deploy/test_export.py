"""Merge and GGUF export: files plain transformers loads, llama GGUF conventions, parity checks that catch errors."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
import typer
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from tunesmith.deploy import gguf_export, gguf_reload
from tunesmith.deploy import modelfile as mf
from tunesmith.deploy.cli import export_app
from tunesmith.deploy.merge import load_adapted, parity_prompts
from tunesmith.deploy.registry import Registry


@pytest.fixture(scope="module")
def setup(deploy_env, tmp_path_factory):
    env = deploy_env
    root = tmp_path_factory.mktemp("export")
    reg = Registry(root / "registry.db")
    version = reg.add(env.runs[0], "legal")
    reg.set_alias("legal@prod", version.id)
    return {"reg": reg, "version": version, "root": root}


RELOAD = " (transformers reload: the fallback when llama.cpp is not installed)"


def _without_llama_cpp(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))


def _cli(*args):
    app = typer.Typer()
    app.add_typer(export_app, name="export")
    return CliRunner().invoke(app, ["export", *args])


def test_parity_prompts_come_from_the_test_split_first(setup):
    prompts = parity_prompts(setup["version"], 5)
    assert [p[-1]["content"] for p in prompts[:3]] == ["What is a lease?", "Is a verbal contract binding?",
                                                       "What is 2 + 2?"]
    assert len(prompts) == 5


def test_merge_cli_writes_plain_transformers_model_with_parity(setup):
    out = setup["root"] / "merged"
    res = _cli("merge", "legal@prod", "-o", str(out), "--registry", str(setup["reg"].path), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["parity"][0]
    assert report["passed"] and report["identical_greedy"] == report["prompts"] == 8
    assert report["rel_logit_diff"] < 1e-5
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True)
    assert not any("lora" in k for k in merged.state_dict())
    # the merge really moved the weights: the adapter is not a no-op
    base = AutoModelForCausalLM.from_pretrained(setup["version"].base_model)
    diff = (merged.model.layers[0].self_attn.q_proj.weight - base.model.layers[0].self_attn.q_proj.weight).abs().max()
    assert float(diff.detach()) > 1e-2


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_gguf_round_trip_within_tolerance(setup, qtype):
    v = setup["version"]
    path = gguf_export.export_gguf(v, setup["root"] / qtype / "legal.gguf", qtype)
    report = gguf_reload.verify_gguf(v, path, qtype).to_dict()
    assert report["passed"], report
    assert report["rel_logit_diff"] <= gguf_export.TOLERANCE[qtype]
    assert "tokenizer_mismatch" not in report and report["eos_matches"]
    if qtype == "f16":
        assert report["rel_logit_diff"] < 5e-3 and report["identical_greedy"] >= 7
        assert report["top1_agreement"] >= 0.95

    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.t")}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied embeddings
    want = gguf.GGMLQuantizationType.F16 if qtype == "f16" else gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_q.weight"].tensor_type == want
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert tokens[2] == "<|im_end|>" and types[2] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL

    if qtype == "f16":  # q rows are stored in llama.cpp's rotary order, not Hugging Face's
        merged = load_adapted(v)[0].merge_and_unload()
        hf_q = merged.model.layers[0].self_attn.q_proj.weight.detach().numpy()
        stored = tensors["blk.0.attn_q.weight"].data.astype(np.float32)
        head = hf_q.shape[0] // 4
        assert np.allclose(stored[1], hf_q[head // 2], atol=1e-3)  # row 1 of head 0 = first row of its 2nd half
        assert not np.allclose(stored, hf_q, atol=1e-3)

    modelfile = mf.modelfile_path(path).read_text()
    assert mf.modelfile_path(path).name == "legal.Modelfile"
    assert modelfile.startswith("FROM ./legal.gguf\nTEMPLATE \"\"\"")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "<|im_start|>{{ .Role }}" in modelfile


# SmolLM2-Instruct's template: a conversation without a system turn gets a default one.
SMOLLM_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                   "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                   "<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                   "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                   "{% endif %}")


@pytest.mark.parametrize("template", ["plain", "default-system"])
def test_modelfile_renders_like_the_models_own_template_with_and_without_system(tiny_model_dir, template):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    if template == "default-system":
        tok.chat_template = SMOLLM_TEMPLATE
    modelfile = mf.modelfile_text("m.gguf", tok, system_prompt=None)
    assert ("SYSTEM" in modelfile) == (template == "default-system")
    for messages in mf.PROBES:  # without and with a system message
        own = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert mf.render(modelfile, messages) == own


def test_two_exports_into_one_folder_keep_their_own_modelfiles(setup):
    folder = setup["root"] / "both"
    f16 = gguf_export.export_gguf(setup["version"], folder / "legal.f16.gguf", "f16")
    q8 = gguf_export.export_gguf(setup["version"], folder / "legal.q8_0.gguf", "q8_0")
    assert mf.modelfile_path(f16).read_text().startswith("FROM ./legal.f16.gguf\n")
    assert mf.modelfile_path(q8).read_text().startswith("FROM ./legal.q8_0.gguf\n")
    assert not (folder / "Modelfile").exists()


def test_verify_catches_a_gguf_without_rotary_permutation(setup, monkeypatch):
    v, reg = setup["version"], setup["reg"]
    bad = setup["root"] / "bad" / "legal.gguf"
    monkeypatch.setattr(gguf_export, "_to_llama_rotary", lambda w, n: w)
    gguf_export.export_gguf(v, bad, "f16")
    monkeypatch.undo()
    good = gguf_export.export_gguf(v, setup["root"] / "good" / "legal.gguf", "f16")
    merged = setup["root"] / "merged-verify"
    assert _cli("merge", v.id, "-o", str(merged), "--no-verify", "--registry", str(reg.path)).exit_code == 0

    _without_llama_cpp(monkeypatch)  # this is the transformers-reload check; tests/deploy/test_parity.py runs llama.cpp
    res = _cli("verify", v.id, "--runtimes", "llama.cpp", "--merged", str(merged), "--gguf", str(good),
               "--registry", str(reg.path), "--json")
    assert res.exit_code == 0, res.output
    assert [r["kind"] for r in json.loads(res.stdout)["exports"]] == ["merge", "gguf-f16" + RELOAD]
    res = _cli("verify", v.id, "--runtimes", "llama.cpp", "--gguf", str(bad), "--registry", str(reg.path), "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)["exports"][0]
    assert not report["passed"] and report["rel_logit_diff"] > gguf_export.TOLERANCE["f16"]


def test_verify_takes_the_weight_type_from_the_file(setup, tmp_path, monkeypatch):
    v, db = setup["version"], str(setup["reg"].path)
    _without_llama_cpp(monkeypatch)
    q8 = gguf_export.export_gguf(v, setup["root"] / "typed" / "legal.gguf", "q8_0")
    assert gguf_reload.gguf_type(q8) == "q8_0"
    res = _cli("verify", v.id, "--runtimes", "llama.cpp", "--gguf", str(q8), "--registry", db, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["exports"][0]
    assert report["kind"] == "gguf-q8_0" + RELOAD and report["tolerance"] == gguf_export.TOLERANCE["q8_0"]
    res = _cli("verify", v.id, "--gguf", str(q8), "--type", "f16", "--registry", db)
    assert res.exit_code == 2 and "declares q8_0" in res.output
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    res = _cli("verify", v.id, "--gguf", str(junk), "--registry", db)
    assert res.exit_code == 2 and "not a readable GGUF file" in res.output


def test_export_refuses_unusable_arguments(setup, tmp_path):
    db = str(setup["reg"].path)
    res = _cli("gguf", "legal@prod", "-o", str(tmp_path / "x.gguf"), "--type", "q4_k", "--registry", db)
    assert res.exit_code == 2 and "expected one of f16, q8_0" in res.output
    res = _cli("merge", "legal@nope", "-o", str(tmp_path / "m"), "--registry", db)
    assert res.exit_code == 2 and "no version 'legal@nope'" in res.output
    res = _cli("verify", "legal@prod", "--type", "q4_k", "--registry", db)
    assert res.exit_code == 2 and "expected one of f16, q8_0" in res.output


def test_gguf_loaded_by_transformers_generates_like_merged(setup):
    """End-to-end: the f16 file answers a chat prompt with the merged model's greedy tokens."""
    from transformers import AutoTokenizer

    from tunesmith.deploy.merge import encode_chat, greedy

    v = setup["version"]
    path = gguf_export.export_gguf(v, setup["root"] / "e2e" / "legal.gguf", "f16")
    merged, tok = load_adapted(v)
    merged = merged.merge_and_unload()
    g_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    g_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    msgs = [{"role": "user", "content": "What is a lease?"}]
    ids = encode_chat(g_tok, msgs)
    assert ids == encode_chat(tok, msgs)
    assert greedy(g_model, g_tok, ids, 12) == greedy(merged, tok, ids, 12)
