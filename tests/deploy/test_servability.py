"""Servability findings (tunesmith.deploy.servability), each planted: LoRA rank over --max-lora-rank, an adapter
with embedding weights, a base whose generation_config ends answers on EOS only while the version ends turns
with another token, a version without an alias for the printed vLLM command, and a Modelfile whose TEMPLATE
or stops differ from the model's own."""

from __future__ import annotations

import json

import pytest

from tests.helpers import deploy_cli, make_run
from tunesmith.deploy import modelfile, servability
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.vllm import vllm_command


def _codes(findings) -> list[tuple[str, str]]:
    return [(f.level, f.code) for f in findings]


def _embedding_run(root, base):
    """A run whose adapter also trains the embedding (peft modules_to_save)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = make_run(root, base, "embeds", seed=5)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    cfg = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["embed_tokens"], task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(str(run / "adapter"), safe_serialization=True)
    return run


def test_vllm_refuses_rank_over_max_and_embedding_weights(deploy_env, tmp_path):
    reg = Registry(tmp_path / "r.db")
    small = reg.add(make_run(tmp_path / "runs", deploy_env.base, "r4", seed=1, rank=4), "legal")
    big = reg.add(make_run(tmp_path / "runs", deploy_env.base, "r16", seed=2, rank=16), "legal")
    embeds = reg.add(_embedding_run(tmp_path / "runs", deploy_env.base), "legal")
    assert servability.vllm_findings(small, max_rank=8) == []
    (rank,) = servability.vllm_findings(big, max_rank=8)
    assert (rank.level, rank.code) == ("error", "rank-over-max")
    assert "LoRA rank 16, over the running vLLM's --max-lora-rank 8" in rank.message
    assert servability.vllm_findings(big, max_rank=16) == []
    assert _codes(servability.vllm_findings(embeds)) == [("error", "unloadable-weights")]


@pytest.fixture(scope="module")
def gemma_like(tmp_path_factory):
    """A base that, like Gemma 3, ends turns with a token (<|im_end|>) that is not its EOS (<|endoftext|>), and
    whose generation_config lists only the EOS: plain vLLM on that folder would run past every answer."""
    from tunesmith.demo.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("gemma-like")
    base = build_tiny_model(root / "base")
    cfg_path = base / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["eos_token"] = "<|endoftext|>"
    cfg_path.write_text(json.dumps(cfg))
    gen = json.loads((base / "generation_config.json").read_text())
    gen["eos_token_id"] = 0
    (base / "generation_config.json").write_text(json.dumps(gen))
    reg = Registry(root / "r.db")
    aliased = reg.add(make_run(root / "runs", base, "a", seed=1), "legal")
    loose = reg.add(make_run(root / "runs", base, "b", seed=2), "legal")
    reg.set_alias("legal@prod", aliased.id)
    return {"reg": reg, "base": base, "aliased": aliased, "loose": loose}


def test_printed_vllm_command_would_run_past_the_answer_and_skip_unaliased(gemma_like):
    reg = gemma_like["reg"]
    assert servability.vllm_stops(gemma_like["base"]) == [0]
    argv, _ = vllm_command(reg)
    findings = servability.command_findings(reg, argv)
    assert _codes(findings) == [("error", "stop-token-mismatch"), ("warning", "no-alias")]
    stop, alias = findings
    assert f"version {gemma_like['aliased'].id} ends answers with <|im_end|> (2)" in stop.message
    assert "<|endoftext|> (0) only" in stop.message and '"stop_token_ids": [2]' in stop.message
    assert alias.message.startswith(f"version {gemma_like['loose'].id} has no alias")
    res = deploy_cli("serve", "--engine", "vllm", "--print", "--registry", str(reg.path))
    assert res.exit_code == 0 and "error (stop-token-mismatch)" in res.output and "warning (no-alias)" in res.output


def test_printed_vllm_command_of_a_consistent_base_has_no_findings(deploy_env, tmp_path):
    reg = Registry(tmp_path / "r.db")
    v = reg.add(deploy_env.runs[0], "legal")
    reg.set_alias("legal@prod", v.id)
    assert servability.command_findings(reg, vllm_command(reg)[0]) == []


def test_printed_vllm_command_with_another_template_is_caught(deploy_env, tmp_path):
    reg = Registry(tmp_path / "r.db")
    v = reg.add(deploy_env.runs[0], "legal")
    reg.set_alias("legal@prod", v.id)
    argv, _ = vllm_command(reg)
    other = tmp_path / "other.jinja"
    other.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    found = servability.command_findings(reg, argv + ["--chat-template", str(other)])
    assert _codes(found) == [("error", "template-mismatch")]


def test_modelfile_render_follows_ollama_semantics():
    text = ('FROM ./m.gguf\nTEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
            '{{ end }}<|im_start|>assistant\n"""\nSYSTEM """Be brief."""\nPARAMETER stop "<|im_end|>"\n')
    # SYSTEM joins a conversation without a system turn only
    assert modelfile.render(text, [{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert modelfile.render(text, [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert modelfile.stops(text) == ["<|im_end|>"]
    assert modelfile.render(text.replace("{{ .Role }}", "{{ if .System }}x{{ end }}"), []) is None
    assert modelfile.render("FROM ./m.gguf\n", []) is None


def test_modelfile_findings_catch_a_changed_template_or_a_missing_stop(tiny_model_dir):
    from tunesmith.models import load_tokenizer, stop_token_ids

    tok = load_tokenizer(tiny_model_dir)
    stops = stop_token_ids(tok)
    good = modelfile.modelfile_text("m.gguf", tok, None)
    assert servability.modelfile_findings(tok, good, stops) == []
    no_newline = good.replace("<|im_end|>\n{{ end }}", "<|im_end|>{{ end }}")
    (f,) = servability.modelfile_findings(tok, no_newline, stops)
    assert f.code == "modelfile-template" and "without a system message and with a system message" in f.message
    no_stop = "\n".join(line for line in good.splitlines() if line != 'PARAMETER stop "<|im_end|>"') + "\n"
    assert _codes(servability.modelfile_findings(tok, no_stop, stops)) == [("error", "modelfile-stops")]
    bare = "FROM ./m.gguf\nPARAMETER stop \"<|im_end|>\"\n"
    assert _codes(servability.modelfile_findings(tok, bare, stops)) == [("warning", "modelfile-unchecked")]
