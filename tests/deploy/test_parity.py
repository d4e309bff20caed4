"""export verify across runtimes (tunesmith.deploy.parity, runtimes): the comparison on planted answers, the CLI
on the tiny model with the embedded engine and llama.cpp, a broken GGUF caught in llama.cpp, the quantised rule,
and the labelled transformers fallback of export gguf.

llama.cpp tests skip only where llama-cpp-python is not installed and CI is unset; in CI they must run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import pytest

from tests.helpers import RULES_YAML, cli_error, deploy_cli
from tunesmith.deploy import gguf_export
from tunesmith.deploy.parity import PromptsError, compare, read_cases
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.runtimes import Answer, RuntimeRun


def _need_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is not installed, and CI must run the llama.cpp parity checks "
                        "(scripts/install.sh --with-llama-cpp)")
        pytest.skip("llama-cpp-python is not installed (scripts/install.sh --with-llama-cpp)")


@pytest.fixture(scope="module")
def setup(deploy_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    reg = Registry(root / "registry.db")
    version = reg.add(deploy_env.runs[2], "legal")  # the run with rules
    reg.set_alias("legal@prod", version.id)
    return {"reg": reg, "version": version, "root": root, "db": str(reg.path)}


def _verify(setup, *args: str):
    return deploy_cli("export", "verify", "legal@prod", "--registry", setup["db"], "--json", *args)


def _without(monkeypatch, *modules: str) -> None:
    """Make `modules` look not installed (importlib.util.find_spec is what runtimes.missing asks)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def _answers(tok, texts_stopped):
    out = []
    for text, stopped in texts_stopped:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # the planted texts survive the round trip
        out.append(Answer(ids, stopped))
    return out


def test_compare_counts_identical_divergence_stops_and_rules(tiny_model_dir):
    import yaml

    from tunesmith.models import load_tokenizer
    from tunesmith.rules import parse_rules

    tok = load_tokenizer(tiny_model_dir)
    cases = [([{"role": "user", "content": q}], ref) for q, ref in
             (("q1", "please the fox"), ("q2", "the quick cat"), ("q3", None), ("q4", None))]
    ref = RuntimeRun("adapter", "f32", _answers(tok, [("please the fox", True), ("the quick cat", True),
                                                      ("a b", True), ("please court", True)]), 1.0)
    run = RuntimeRun("llama.cpp", "f16", _answers(tok, [("please the fox", True), ("the quick court", True),
                                                        ("a b c", False), ("please court", True)]), 2.0)
    rules = parse_rules(yaml.safe_load(RULES_YAML))
    r = compare(ref, run, tok, cases, rules)
    assert (r.identical, r.same_stop, r.prompts) == (2, 3, 4)
    assert r.first_divergence == 7  # "the quick c" (11 characters) and "a b" (3)
    assert (r.compliance, r.adapter_compliance) == (0.5, 0.5)
    assert r.adapter_task_metric == 1.0 and 0.5 < r.task_metric < 1.0
    assert r.tokens_per_s == sum(len(a.ids) + a.stopped for a in run.answers) / 2.0
    assert not r.passed and "at least 90%" in r.rule  # 2 of 4 identical at f16
    assert compare(ref, run, tok, cases, rules, min_identical=0.5).passed
    assert [m["prompt"] for m in r.mismatches] == ["q2", "q3"]

    quantised = RuntimeRun("llama.cpp", "q8_0", run.answers, 2.0)
    q = compare(ref, quantised, tok, cases, rules)
    assert "cannot be token-identical" in q.rule and "rule compliance and ROUGE-L within 0.05" in q.rule
    assert q.passed is (abs(q.task_metric - 1.0) <= 0.05)
    assert compare(ref, quantised, tok, cases, rules, margin=0.5).passed


def test_prompts_file_errors_name_the_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                 + "\n\n" + json.dumps({"messages": [{"role": "assistant", "content": "x"}, {"role": "user",
                                                                                             "content": "a"}]})
                 + "\n{oops\n")
    assert read_cases(f, 2) == [([{"role": "user", "content": "hi"}], "yo"),
                                ([{"role": "assistant", "content": "x"}, {"role": "user", "content": "a"}], None)]
    with pytest.raises(PromptsError, match=r"p\.jsonl:4: not a JSON object"):
        read_cases(f, 5)
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}))
    with pytest.raises(PromptsError, match=r"p\.jsonl:1: 'messages' must be a list"):
        read_cases(f, 5)


def test_verify_refuses_unknown_runtimes_and_bad_prompts(setup, tmp_path):
    res = deploy_cli("export", "verify", "legal@prod", "--runtimes", "embedded,tpu", "--registry", setup["db"])
    assert res.exit_code == 2 and "--runtimes 'embedded,tpu': expected" in cli_error(res)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1]\n")
    res = deploy_cli("export", "verify", "legal@prod", "--prompts", str(bad), "--registry", setup["db"])
    assert res.exit_code == 2 and "bad.jsonl:1: not a JSON object" in cli_error(res)


def test_answers_are_as_long_as_the_evaluation_gives_them(setup):
    from tunesmith.deploy.merge import answer_limit, parity_cases, tokenizer_dir
    from tunesmith.models import load_tokenizer

    v = setup["version"]
    cases = parity_cases(v, 6)
    tok = load_tokenizer(tokenizer_dir(v), chat=False)
    longest = max(len(tok(a, add_special_tokens=False)["input_ids"]) for _, a in cases if a)
    assert answer_limit(v, cases) == min(256, math.ceil(longest * 1.25) + 4)
    assert answer_limit(v, cases, cap=5) == 5
    assert answer_limit(v, [(m, None) for m, _ in cases]) == 64  # no test answers: nothing to measure
    res = _verify(setup, "--runtimes", "embedded", "--n", "2")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["max_new_tokens"] == answer_limit(v, parity_cases(v, 2))


def test_runtime_not_installed_is_reported_not_run(setup, monkeypatch):
    _without(monkeypatch, "vllm")
    monkeypatch.delenv("TUNESMITH_VLLM_COMMAND", raising=False)
    monkeypatch.setattr(sys, "prefix", str(setup["root"] / ".venv"))  # no .venv-vllm beside it
    res = _verify(setup, "--runtimes", "vllm", "--n", "2")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["runtimes"]
    assert row["runtime"] == "vllm" and "scripts/install.sh --with-vllm" in row["skipped"]


def test_embedded_and_llama_cpp_answer_like_the_adapter(setup):
    _need_llama_cpp()
    # a random-weight model is full of near-ties: past ~10 tokens f16 rounding may flip one (seen at token 11)
    res = _verify(setup, "--runtimes", "embedded,llama.cpp", "--n", "6", "--max-tokens", "8")
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    rows = {r["runtime"]: r for r in body["runtimes"]}
    assert body["prompts"] == 6 and body["passed"]
    assert rows["embedded"]["identical"] == 6 and rows["embedded"]["same_stop"] == 6
    assert rows["llama.cpp"]["weight_type"] == "f16"
    assert rows["llama.cpp"]["identical"] == 6 and rows["llama.cpp"]["same_stop"] == 6
    # the rules of run 3 and the test split's answers are scored for the adapter and each runtime alike
    assert rows["llama.cpp"]["adapter_compliance"] == rows["llama.cpp"]["compliance"] is not None
    assert rows["llama.cpp"]["task_metric"] is not None


def test_llama_cpp_catches_a_gguf_without_rotary_permutation(setup, monkeypatch):
    _need_llama_cpp()
    bad = setup["root"] / "bad" / "legal.gguf"
    monkeypatch.setattr(gguf_export, "_to_llama_rotary", lambda w, n: w)
    gguf_export.export_gguf(setup["version"], bad, "f16")
    monkeypatch.undo()
    res = _verify(setup, "--runtimes", "llama.cpp", "--gguf", str(bad), "--n", "6", "--max-tokens", "16")
    assert res.exit_code == 1, res.output
    (row,) = json.loads(res.stdout)["runtimes"]
    assert not row["passed"] and row["identical"] < 5 and row["first_divergence"] is not None


def test_quantised_gguf_is_judged_by_the_margin(setup):
    _need_llama_cpp()
    q8 = gguf_export.export_gguf(setup["version"], setup["root"] / "q8" / "legal.q8_0.gguf", "q8_0")
    res = _verify(setup, "--runtimes", "llama.cpp", "--gguf", str(q8), "--n", "6", "--max-tokens", "16")
    (row,) = json.loads(res.stdout)["runtimes"]
    assert row["weight_type"] == "q8_0" and "cannot be token-identical" in row["rule"]
    assert res.exit_code == (0 if row["passed"] else 1)
    assert row["passed"] == (abs(row["compliance"] - row["adapter_compliance"]) <= 0.05
                             and abs(row["task_metric"] - row["adapter_task_metric"]) <= 0.05)


def test_export_gguf_checks_in_llama_cpp_and_labels_the_fallback(setup, monkeypatch):
    out = setup["root"] / "cli" / "legal.gguf"
    if importlib.util.find_spec("llama_cpp") is not None:
        # 8 tokens: the random-weight model's near-ties flip under f16 rounding further on (seen at token 11)
        res = deploy_cli("export", "gguf", "legal@prod", "-o", str(out), "--prompts", "4", "--max-tokens", "8",
                         "--registry", setup["db"], "--json")
        assert res.exit_code == 0, res.output
        body = json.loads(res.stdout)
        assert [r["runtime"] for r in body["runtimes"]] == ["llama.cpp"] and body["parity"] == []
        assert body["runtimes"][0]["identical"] == 4 and body["servability"] == []
    _without(monkeypatch, "llama_cpp")
    res = deploy_cli("export", "gguf", "legal@prod", "-o", str(out), "--prompts", "2", "--registry", setup["db"],
                     "--json")
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["runtimes"] == [] and body["servability"] == []
    assert body["parity"][0]["kind"] == "gguf-f16 (transformers reload: the fallback when llama.cpp is not installed)"
