"""Stage-to-stage integration as a new user meets it: what one stage writes, the next one reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.helpers import base_without_template, make_run
from fastapi.testclient import TestClient

from tunesmith.deploy.cli import _headline
from tunesmith.deploy.registry import Registry
from tunesmith.deploy.server import Server, ServeSettings, create_app

# A template of the run's own, unlike the base's ChatML: serving must render what training rendered.
RUN_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant: ' }}{% endif %}"
)


def _tiny_qwen2_without_template(tiny_model_dir: Path, out: Path) -> Path:
    """A non-Llama base (Qwen2: biased q/k/v projections) sharing the tiny tokenizer, with no chat template."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base_without_template(tiny_model_dir, out)
    for f in ("model.safetensors", "config.json", "generation_config.json"):
        (out / f).unlink(missing_ok=True)
    llama = json.loads((tiny_model_dir / "config.json").read_text())
    cfg = Qwen2Config(vocab_size=llama["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, eos_token_id=llama["eos_token_id"],
                      pad_token_id=llama["pad_token_id"], bos_token_id=None)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(str(out))
    return out


def _with_run_template(run: Path, tiny_model_dir: Path) -> Path:
    """What `tunesmith train` saves beside the adapter when data.chat_template is set."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = RUN_TEMPLATE
    tok.save_pretrained(str(run / "adapter"))
    return run


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-serve")
    base = base_without_template(tiny_model_dir, root / "base")
    reg = Registry(root / "registry.db")
    run = _with_run_template(make_run(root / "runs", base, "chatml-run", seed=1), tiny_model_dir)
    vid = reg.add(run, "tickets").id
    settings = ServeSettings(registry=reg.path, seed=0)
    srv = Server(settings)
    with TestClient(create_app(settings, srv)) as client:
        yield client, vid, tiny_model_dir, reg
    srv.engine.stop()


def test_serve_uses_the_template_the_run_trained_with_on_a_base_without_one(served):
    from transformers import AutoTokenizer

    client, vid, tok_dir, _ = served
    msgs = [{"role": "user", "content": "Refund for invoice 9994 please"}]
    r = client.post("/v1/chat/completions", json={"model": vid, "messages": msgs, "max_tokens": 2})
    assert r.status_code == 200, r.text
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    expected = tok.apply_chat_template(msgs, chat_template=RUN_TEMPLATE, add_generation_prompt=True,
                                       tokenize=True, return_dict=False)
    assert r.json()["usage"]["prompt_tokens"] == len(expected)
    # the base alone has no template: a clear 400, not a server that refuses to start
    r = client.post("/v1/chat/completions", json={"model": "base", "messages": msgs, "max_tokens": 2})
    assert r.status_code == 400 and "no chat template" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json={"model": "base", "prompt": "Refund", "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_vllm_command_carries_the_runs_chat_template(served):
    from tunesmith.deploy.vllm import vllm_command

    _, vid, _, reg = served
    reg.set_alias("tickets@prod", vid)
    argv, _ = vllm_command(reg)
    at = argv.index("--chat-template")
    assert Path(argv[at + 1]) == reg.version(vid).adapter_dir / "chat_template.jinja"
    assert Path(argv[at + 1]).read_text() == RUN_TEMPLATE


def test_data_check_counts_tokens_with_the_template_training_will_use(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from tunesmith.cli import app
    from tunesmith.models import load_tokenizer

    base = base_without_template(tiny_model_dir, tmp_path / "base")
    msgs = [{"role": "user", "content": "Zoë (33) from Zürich"}, {"role": "assistant", "content": '{"age": 33}'}]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["data", "check", str(data), "--tokenizer", str(base)])
    assert res.exit_code == 2 and "--chat-template chatml" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["data", "check", str(data), "--tokenizer", str(base), "--chat-template", "chatml",
                                   "--json"])
    assert res.exit_code == 0, res.output
    tok = load_tokenizer(base, chat=False, chat_template="chatml")
    n = len(tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"])
    assert json.loads(res.stdout)["length_tokens"]["max"] == n


SYSTEM = "Classify the ticket: billing, technical or account. Answer with the label only."


def test_readme_pipeline_on_a_qwen2_base_without_a_template(tiny_model_dir, tmp_path, monkeypatch):
    """split → config example → train → eval → registry → serve → flywheel, each stage reading what the last
    wrote: the run's template and system prompt reach serving, and the server answers what eval measured."""
    import yaml
    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.chdir(tmp_path)
    base = _tiny_qwen2_without_template(tiny_model_dir, tmp_path / "base")
    labels = ["billing", "technical", "account"]
    with open("tickets.csv", "w", encoding="utf-8", newline="") as f:
        f.write("text,label\r\n")
        f.writelines(f"Ticket {i}: problem number {i * 7},{labels[i % 3]}\r\n" for i in range(30))
    Path("rules.yaml").write_text('rules:\n  - name: label_only\n    regex: "^(billing|technical|account)$"\n')
    cli = CliRunner()

    def ok(*args):
        res = cli.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return res

    ok("data", "split", "tickets.csv", "--out", "data/")
    cfg = yaml.safe_load(ok("config", "example").stdout)
    cfg["model"] = str(base)
    cfg["data"].update(train="data/train.jsonl", val="data/val.jsonl", test="data/test.jsonl", rules="rules.yaml",
                       system_prompt=SYSTEM, chat_template="chatml")
    cfg["train"].update(max_steps=2, batch_size=4, lr=0.01)
    cfg["eval"].update(max_new_tokens=4, few_shot=1)
    Path("run.yaml").write_text(yaml.safe_dump(cfg))
    trained = json.loads(ok("train", "run.yaml", "--json").stdout)
    run = Path(trained["run_dir"])
    info = json.loads((run / "run.json").read_text())
    assert info["system_prompt"] == SYSTEM and info["data"]["train"]["count"] == trained["data"]["total"]

    summary = json.loads(ok("eval", run, "--json").stdout)
    results = json.loads((run / "eval" / "results.json").read_text())
    assert summary["tuned"] == results["systems"]["tuned"]["metrics"]
    assert results["test"]["n"] == json.loads(Path("data/manifest.json").read_text())["counts"]["test"]

    reg = tmp_path / "reg" / "registry.db"
    added = json.loads(ok("registry", "add", run, "--name", "tickets", "--registry", reg, "--json").stdout)
    ok("registry", "alias", "tickets@prod", added["id"], "--guard", "report", "--registry", reg)
    again = ok("registry", "add", run, "--name", "tickets", "--registry", reg)
    assert f"note: this training run is already registered as {added['id']}" in " ".join(again.stderr.split())
    listed = ok("registry", "list", "--registry", reg).stdout
    metric = results["gate"]["primary_metric"]
    value = results["systems"]["tuned"]["metrics"][metric]
    assert _headline(results["systems"]["tuned"]["metrics"], results["gate"]) == f"{metric} {value:.3f}"
    assert metric in listed and '{"n"' not in listed  # the gate's metric, not a cut-off JSON dump

    settings = ServeSettings(registry=reg)
    srv = Server(settings)
    try:
        with TestClient(create_app(settings, srv)) as client:
            for ex in results["examples"][:2]:  # no system message: the server adds the run's, as eval did
                r = client.post("/v1/chat/completions", json={
                    "model": "tickets@prod", "messages": [{"role": "user", "content": ex["prompt"]}],
                    "max_tokens": cfg["eval"]["max_new_tokens"]})
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"].strip() == ex["outputs"]["tuned"]
                assert r.json()["tunesmith"]["rules_passed"] == all(ex["passes"]["tuned"].values())
    finally:
        srv.engine.stop()
    srv.log.close()
    # clients asked for the alias: exporting by it finds their answers (the log also names the version)
    exported = json.loads(ok("flywheel", "export", "-o", "next.jsonl", "--version", "tickets@prod", "--registry", reg,
                             "--json").stdout)
    assert exported["records"] == 2
    first = json.loads(Path("next.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": SYSTEM}


@pytest.mark.parametrize("eos", ["<|im_end|>", "<|endoftext|>"])
def test_modelfile_ends_turns_as_the_run_trained(tiny_model_dir, eos):
    """A base model trained with data.chat_template: chatml ends each turn with its EOS, not <|im_end|>."""
    from tunesmith.deploy.modelfile import modelfile_text
    from tunesmith.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir, chat=False)
    tok.eos_token = eos
    tok.chat_template = load_tokenizer(tiny_model_dir, chat=False, chat_template="chatml").chat_template
    text = modelfile_text("m.gguf", tok, "Be brief.")
    assert ('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}' + eos + "\n{{ end }}"
            "<|im_start|>assistant\n\"\"\"") in text
    stops = [line for line in text.splitlines() if line.startswith("PARAMETER stop")]
    assert stops == [f"PARAMETER stop {json.dumps(eos)}", 'PARAMETER stop "<|im_start|>"']
    assert 'SYSTEM """Be brief."""' in text


def test_full_fine_tune_run_is_served_from_its_run_directory(tiny_model_dir, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from tunesmith.cli import app

    run = tmp_path / "runs" / "full"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "run.json").write_text(json.dumps({"name": "full", "status": "finished", "method": "full",
                                              "objective": "sft", "base_model": str(tiny_model_dir),
                                              "system_prompt": "Answer with the label only."}))
    reg = tmp_path / "reg" / "registry.db"
    res = CliRunner().invoke(app, ["registry", "add", str(run), "--name", "full", "--registry", str(reg)])
    assert res.exit_code == 2 and f"tunesmithserve--base{run}" in "".join(res.output.split())  # rich wraps it
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: served.append(a))
    res = CliRunner().invoke(app, ["serve", "--base", str(run), "--registry", str(reg)])
    assert res.exit_code == 0, res.output
    assert served[0].state.server.base == str((run / "model").resolve())
    assert "'Answer with the label only.'" in " ".join(res.output.split())
    served[0].state.server.engine.stop()


def test_prompted_baseline_of_a_dpo_run_shows_the_chosen_answers(tiny_model_dir, tmp_path):
    """eval's few-shot examples come from data.train, which for DPO holds preference pairs, not chats."""
    from tunesmith.config import load_config
    from tunesmith.evaluate.prompts import few_shot_messages, few_shot_pool

    pairs = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": f"good {i}", "rejected": f"bad {i}"}
             for i in range(3)]
    (tmp_path / "pref.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "dpo.yaml").write_text(f"name: d\nmodel: {tiny_model_dir}\nobjective: dpo\ndata:\n  train: pref.jsonl\n"
                                       "  system_prompt: Be brief.\n")
    pool = few_shot_pool(load_config(tmp_path / "dpo.yaml"))
    assert [c.assistant_turns()[-1] for c in pool] == ["good 0", "good 1", "good 2"]
    assert pool[0].system == "Be brief."
    shots = few_shot_messages(pool, 3, 0)
    assert sorted(m["content"] for m in shots if m["role"] == "assistant") == ["good 0", "good 1", "good 2"]
    assert sorted(m["content"] for m in shots if m["role"] == "user") == ["q0", "q1", "q2"]


def _prompt_tuning_run(root: Path, base: Path) -> Path:
    """A finished prompt-tuning run (what `method: prompt_tuning` writes), with non-trivial virtual tokens."""
    import torch
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = make_run(root, base, "pt-run", seed=5)  # a LoRA run's layout; its adapter is replaced below
    shutil.rmtree(run / "adapter")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.prompt_encoder.parameters():
            p.normal_(0, 1.0)
    model.save_pretrained(str(run / "adapter"), safe_serialization=True)
    return run


def _untied_llama(tiny_model_dir: Path, out: Path) -> Path:
    """The tiny Llama with its own LM head: tied, its greedy answer hardly depends on anything before the last token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(tiny_model_dir, out)
    cfg = LlamaConfig.from_pretrained(str(tiny_model_dir))
    cfg.tie_word_embeddings = False
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    return out


def test_server_switches_between_lora_and_prompt_tuning_versions(tiny_model_dir, tmp_path):
    """peft holds one adapter type per model: a prompt-tuning version asked for after a LoRA one was a 500."""
    base = _untied_llama(tiny_model_dir, tmp_path / "base")
    reg = Registry(tmp_path / "registry.db")
    lora = reg.add(make_run(tmp_path / "runs", base, "lora-run", seed=3), "lora").id
    pt = reg.add(_prompt_tuning_run(tmp_path / "runs", base), "pt").id
    settings = ServeSettings(registry=reg.path)
    srv = Server(settings)
    try:
        with TestClient(create_app(settings, srv)) as client:
            def ask(model):
                r = client.post("/v1/chat/completions", json={
                    "model": model, "max_tokens": 6, "messages": [{"role": "user", "content": "What is a lease?"}]})
                assert r.status_code == 200, r.text
                return r.json()["choices"][0]["message"]["content"]

            first = {m: ask(m) for m in ("base", pt, lora)}
            assert len(set(first.values())) == 3  # each adapter changes the answer
            assert {m: ask(m) for m in (pt, "base", lora, pt)} == first
    finally:
        srv.engine.stop()


def test_prompt_tuning_version_is_refused_by_merge_gguf_and_vllm(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from tunesmith.cli import app
    from tunesmith.deploy.registry import RegistryError
    from tunesmith.deploy.vllm import vllm_command

    reg = Registry(tmp_path / "registry.db")
    pt = reg.add(_prompt_tuning_run(tmp_path / "runs", tiny_model_dir), "pt").id
    for args in (["export", "merge", pt, "-o", str(tmp_path / "merged")],
                 ["export", "gguf", pt, "-o", str(tmp_path / "pt.gguf")]):
        res = CliRunner().invoke(app, [*args, "--registry", str(reg.path)])
        assert res.exit_code == 2, res.output
        assert "prompt_tuning adapter adds virtual tokens" in " ".join(res.output.split())
    assert not (tmp_path / "merged").exists() and not (tmp_path / "pt.gguf").exists()
    reg.set_alias("pt@prod", pt)
    with pytest.raises(RegistryError, match="prompt_tuning adapter; vLLM serves LoRA adapters only"):
        vllm_command(reg)


def test_loss_figure_of_a_run_that_logged_no_loss_warns_nothing():
    import warnings

    from tunesmith.report.plots import loss_figure

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found" was printed to users
        fig = loss_figure([{"step": 2, "epoch": 0.04, "reward": 0.0}])
    assert fig.axes[0].get_legend() is None
    assert loss_figure([{"step": 1, "loss": 2.0}]).axes[0].get_legend() is not None


def test_models_list_leaves_out_aliases_of_another_base(tiny_model_dir, tmp_path):
    """After a two-stage run (another base) is registered, `serve` holds one base: /v1/models must not offer an
    alias that can only answer 404."""
    other = _untied_llama(tiny_model_dir, tmp_path / "other-base")
    reg = Registry(tmp_path / "registry.db")
    here = reg.add(make_run(tmp_path / "runs", tiny_model_dir, "here", seed=1), "legal").id
    there = reg.add(make_run(tmp_path / "runs", other, "there", seed=2), "legal").id
    reg.set_alias("legal@prod", here)
    reg.set_alias("legal@next", there)
    srv = Server(ServeSettings(registry=reg.path, base=str(tiny_model_dir)))
    try:
        assert srv.model_ids() == ["base", here, "legal@prod"]
    finally:
        srv.engine.stop()
