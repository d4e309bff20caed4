"""QA pass 3 of the training stage: user errors are messages, every lost example is counted (val and DPO too)."""

import json
from typing import get_args

from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import RunConfig

runner = CliRunner()


def _chat(path, pairs):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for u, a in pairs))
    return path


def _config(tmp_path, tiny, **over):
    _chat(tmp_path / "train.jsonl", [(f"question {i}", f"answer {i}") for i in range(6)])
    raw = {"name": "qa", "model": str(tiny), "output_dir": "runs",
           "data": {"train": "train.jsonl", "max_seq_len": 40},
           "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    f = tmp_path / "run.yaml"
    f.write_text(json.dumps(raw))
    return f


def _error(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    return " ".join(res.output.split())


def test_val_examples_cut_to_nothing_are_counted(tiny_model_dir, tmp_path):
    # 2 of 4 val prompts fill max_seq_len: their answers are cut away and they leave the val set; run.json says so
    _chat(tmp_path / "val.jsonl", [("long question " * 40, "a"), ("short", "b"), ("long question " * 40, "c"),
                                   ("short too", "d")])
    f = _config(tmp_path, tiny_model_dir, data={"val": "val.jsonl"})
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output
    val = json.loads(res.stdout)["data"]["val"]
    v = str(tmp_path / "val.jsonl")
    assert (val["total"], val["kept"], val["truncated"]) == (4, 2, 2)
    assert val["dropped_no_trained_tokens"] == [f"{v}:1", f"{v}:3"]
    info = json.loads((tmp_path / "runs" / "qa" / "run.json").read_text())
    assert info["encode"]["val"]["kept"] == 2 and info["data"]["val"]["count"] == 4
    assert "data (val): 2 of 4 truncated" in " ".join(res.stderr.split())


def test_all_examples_cut_names_the_counts(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir, data={"max_seq_len": 16})
    _chat(tmp_path / "train.jsonl", [("a long question that fills the row " * 3, "yes")] * 3)
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert ("none of the 3 examples has a trained token left: 0 dropped as over-length, 3 cut to no trained "
            "token (max_seq_len=16, over_length=truncate)") in msg


def test_dpo_with_val_counts_pairs_trl_would_drop_and_finishes(tiny_model_dir, tmp_path):
    rows = [{"prompt": ("long prompt " * 30 if i < 3 else "") + f"say {i}", "chosen": f"Good {i}.",
             "rejected": f"bad {i}"} for i in range(8)]
    (tmp_path / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    f = _config(tmp_path, tiny_model_dir, objective="dpo",
                data={"train": "pref.jsonl", "val": "pref.jsonl", "max_seq_len": 40})
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output  # it used to end in UnboundLocalError after training with a val set
    out = json.loads(res.stdout)
    p = str(tmp_path / "pref.jsonl")
    for report in (out["data"], out["data"]["val"]):
        assert (report["total"], report["kept"]) == (8, 5)
        assert report["dropped_no_trained_tokens"] == [f"{p}:1", f"{p}:2", f"{p}:3"]
        assert report["trained_tokens"] > 0
    assert out["final_eval_loss"] is not None
    assert json.loads((tmp_path / "runs" / "qa" / "run.json").read_text())["status"] == "finished"


def test_lora_layers_and_targets_the_model_lacks_are_named(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir)
    msg = _error(runner.invoke(app, ["train", str(f), "--set", "lora.layers=[0,5]"]))
    assert "lora.layers: [5] not in the model's layers 0..1" in msg
    msg = _error(runner.invoke(app, ["train", str(f), "--set", "lora.layers=-3"]))
    assert "lora.layers: -3 asks for the last 3 layers; the model has 2" in msg
    msg = _error(runner.invoke(app, ["train", str(f), "--set", "lora.target_modules=[q_proj,qproj]"]))
    assert ("lora.target_modules: ['qproj'] not found in the model; its linear modules are down_proj, gate_proj, "
            "k_proj, lm_head, o_proj, q_proj, up_proj, v_proj") in msg
    # one name written as a plain string is that module (PEFT alone would read it as a regex matching nothing)
    res = runner.invoke(app, ["train", str(f), "--set", "lora.target_modules=v_proj", "--json"])
    assert res.exit_code == 0, res.output
    adapter = json.loads((tmp_path / "runs" / "qa" / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["v_proj"]


def test_lora_layers_on_gpt2_target_its_conv1d_modules(tiny_model_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tunesmith.train.adapters import peft_config

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=2, n_positions=64))
    cfg = RunConfig.model_validate({"lora": {"layers": -1}})
    lc = peft_config(cfg, model, tiny_model_dir)
    assert sorted(lc.target_modules) == ["c_attn", "c_fc", "c_proj"] and lc.layers_to_transform == [2]


def test_rerun_of_an_interrupted_run_keeps_its_checkpoints(tiny_model_dir, tmp_path):
    f = _config(tmp_path, tiny_model_dir)
    ckpt = tmp_path / "runs" / "qa" / "checkpoints" / "checkpoint-7"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (tmp_path / "runs" / "qa" / "run.json").write_text('{"status": "running"}')
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert "interrupted run with a checkpoint at step 7: --resume continues it, --force starts it over" in msg
    assert (ckpt / "trainer_state.json").is_file()


def test_empty_val_file_is_an_error_not_skipped(tiny_model_dir, tmp_path):
    (tmp_path / "val.jsonl").write_text("\n\n")
    f = _config(tmp_path, tiny_model_dir, data={"val": "val.jsonl"}, train={"keep_best": True})
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert f"{tmp_path / 'val.jsonl'}: no records in the file" in msg


def test_validate_checks_every_file_and_value(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data:\n  train: t.jsonl\n  mix:\n    - {path: general.jsonl, weight: 0.2}\n"
                 "  chat_template: mine.jinja\n")
    (tmp_path / "t.jsonl").write_text("{}\n")
    msg = _error(runner.invoke(app, ["config", "validate", str(f)]))
    assert msg.endswith(f"data.mix[0].path: {tmp_path / 'general.jsonl'}; "
                        f"data.chat_template: {tmp_path / 'mine.jinja'}")
    mix = "data.mix=[{path: t.jsonl, weight: 0.6}, {path: t.jsonl, weight: 0.4}]"
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", mix]))
    assert msg == f"error: {f}: data.mix weights must add up to less than 1 (the rest is the main training set)"
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", "train.scheduler=cosin",
                                     "--set", "train.dtype=fp16", "--set", "dpo.loss_type=dpo"]))
    assert "dpo.loss_type: Input should be 'sigmoid'" in msg and "train.scheduler: Input should be 'linear'" in msg
    assert "train.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'" in msg
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", "objective=grpo",
                                     "--set", "train.keep_best=true"]))
    assert msg.endswith("train.keep_best need a val loss, which objective grpo does not compute")
    msg = _error(runner.invoke(app, ["config", "validate", str(f), "--set", "data..train=x.jsonl"]))
    assert msg == "error: --set data..train=…: expected a dotted field name such as train.lr"


def test_every_scheduler_offered_runs_without_extra_arguments():
    import torch
    from transformers import get_scheduler

    names = get_args(RunConfig.model_fields["train"].annotation.model_fields["scheduler"].annotation)
    for name in names:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
        get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=4)
    assert len(names) == 8


def test_config_example_names_the_methods():
    msg = _error(runner.invoke(app, ["config", "example", "--method", "dora"]))
    assert msg == "error: --method 'dora': choose one of lora, qlora, full, prompt_tuning, prefix_tuning"


def test_run_name_and_output_dir_must_make_a_run_directory(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("name: ../elsewhere\n")
    assert _error(runner.invoke(app, ["config", "validate", str(f)])) == (
        f"error: {f}: name: '../elsewhere' must be one directory name (no '/', not '.' or '..')")
    (tmp_path / "runs").write_text("a file where the runs should go")
    f.write_text("name: legal\noutput_dir: runs\n")
    assert _error(runner.invoke(app, ["config", "validate", str(f)])) == (
        f"error: {f}: output_dir: {tmp_path / 'runs'} is a file, so the run directory {tmp_path / 'runs' / 'legal'} "
        "cannot be made")


def test_resume_on_edited_training_data_warns(tiny_model_dir, tmp_path):
    import shutil

    f = _config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 1})
    assert runner.invoke(app, ["train", str(f)]).exit_code == 0
    run = tmp_path / "runs" / "qa"
    shutil.rmtree(run / "checkpoints" / "checkpoint-2")  # as if killed between step 1 and 2
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with (tmp_path / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "new"},
                                          {"role": "assistant", "content": "row"}]}) + "\n")
    res = runner.invoke(app, ["train", str(f), "--resume", "--json"])
    assert res.exit_code == 0, res.output
    err = " ".join(res.stderr.split())
    assert "warning: resuming on changed data: data.train changed since the interrupted run read it" in err
    assert json.loads(res.stdout)["data"]["kept"] == 7


def test_render_counts_include_the_mix_like_training(tiny_model_dir, tmp_path):
    import typer

    from tunesmith.train.render import render

    (tmp_path / "general.json").write_text(json.dumps([{"instruction": f"Do {i}", "input": "", "output": f"Done {i}"}
                                                       for i in range(3)]))
    f = _config(tmp_path, tiny_model_dir, data={"mix": [{"path": "general.json", "weight": 0.25}]})
    cmd = typer.Typer()
    cmd.command()(render)
    out = json.loads(runner.invoke(cmd, [str(f), "--n", "1", "--json"]).stdout)
    assert out["report"]["total"] == 8  # 6 of train.jsonl + round(8 × 0.25) from the mix, as training counts
    assert out["examples"][0]["origin"] == f"{tmp_path / 'train.jsonl'}:1"


def test_set_keeps_text_that_yaml_block_syntax_would_change(tmp_path):
    import yaml

    f = tmp_path / "run.yaml"
    f.write_text("name: legal\n")
    for text in ("Answer: yes", "- cite the statute", "#1 rule: be brief"):
        res = runner.invoke(app, ["config", "validate", str(f), "--set", f"data.system_prompt={text}"])
        assert res.exit_code == 0, res.output
        assert yaml.safe_load(res.stdout)["data"]["system_prompt"] == text
    res = runner.invoke(app, ["config", "validate", str(f), "--set", "name=2026", "--set", "lora.layers=[0, 1]",
                              "--set", "data.val=null", "--set", "train.lr=1e-4"])
    cfg = yaml.safe_load(res.stdout)
    assert (cfg["name"], cfg["lora"]["layers"], cfg["data"]["val"], cfg["train"]["lr"]) == ("2026", [0, 1], None, 1e-4)


def test_pretrain_on_documents_longer_than_max_seq_len_trains(tiny_model_dir, tmp_path):
    # every document loses its EOS to truncation: ordinary for raw text, not the chat "never learns to stop" error
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "A long document about courts. " * 20}) + "\n"
                                         + json.dumps({"text": "Another long one on contracts. " * 20}) + "\n")
    f = _config(tmp_path, tiny_model_dir, objective="pretrain", data={"train": "docs.jsonl", "max_seq_len": 32})
    res = runner.invoke(app, ["train", str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    d = out["data"]
    assert (d["kept"], d["truncated"], d["total_tokens"], d["eos_trained"]) == (2, 2, 64, False)
    again = runner.invoke(app, ["train", str(f), "--force"])  # no val: the summary names no val loss
    assert " ".join(again.stderr.split()).endswith(f"(train loss {_final_loss(f)})")


def _final_loss(config) -> str:
    info = json.loads((config.parent / "runs" / "qa" / "run.json").read_text())
    return f"{info['final_train_loss']:.4f}"


def test_mix_weight_that_rounds_to_no_example_is_an_error(tiny_model_dir, tmp_path):
    _chat(tmp_path / "general.jsonl", [("hi", "hello")])
    f = _config(tmp_path, tiny_model_dir, data={"mix": [{"path": "general.jsonl", "weight": 0.05}]})
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert msg.endswith(f"data.mix: {tmp_path / 'general.jsonl'}: weight 0.05 of 6 training examples is 0 examples; "
                        "raise its weight or leave the source out")


def test_template_that_refuses_a_system_turn_names_the_line(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "no-system"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(  # Gemma's templates refuse a system turn like this
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    f = _config(tmp_path, model, data={"system_prompt": "Be brief."})
    msg = _error(runner.invoke(app, ["train", str(f)]))
    assert msg == (f"error: {tmp_path / 'train.jsonl'}:1: the model's chat template refuses a conversation "
                   "(system/user/assistant): System role not supported")
    (tmp_path / "pref.jsonl").write_text(json.dumps({"prompt": "Hi", "chosen": "Hello.", "rejected": "no"}) + "\n")
    f = _config(tmp_path, model, objective="dpo", data={"train": "pref.jsonl", "system_prompt": "Be brief."})
    assert _error(runner.invoke(app, ["train", str(f)])).endswith("(system/user): System role not supported")
    (tmp_path / "rules.yaml").write_text('rules:\n  - name: dot\n    ends_with: "."\n')
    f = _config(tmp_path, model, objective="grpo", data={"rules": "rules.yaml", "system_prompt": "Be brief."},
                grpo={"max_completion_length": 4, "num_generations": 2})
    assert _error(runner.invoke(app, ["train", str(f)])) == (
        f"error: {tmp_path / 'train.jsonl'}:1: the model's chat template refuses a conversation (system/user): "
        "System role not supported")
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}{{ m.content }")
    f = _config(tmp_path, model, data={"chat_template": "broken.jinja"})
    assert _error(runner.invoke(app, ["train", str(f)])) == (
        f"error: {tmp_path / 'train.jsonl'}:1: the chat template is not valid Jinja (template line 1): unexpected '}}'")


def test_set_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    import yaml

    (tmp_path / "configs").mkdir()
    f = tmp_path / "configs" / "run.yaml"
    f.write_text("data:\n  train: train.jsonl\n")
    (tmp_path / "configs" / "train.jsonl").write_text("{}\n")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "mine.jsonl").write_text("{}\n")
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["config", "validate", str(f), "--set", "data.train=data/mine.jsonl",
                              "--set", "output_dir=out", "--set", "data.mix=[{path: data/mine.jsonl}]",
                              "--set", "data.chat_template=chatml", "--set", "model=org/name"])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.stdout)
    assert cfg["data"]["train"] == cfg["data"]["mix"][0]["path"] == str(work / "data" / "mine.jsonl")
    assert (cfg["output_dir"], cfg["data"]["chat_template"], cfg["model"]) == (str(work / "out"), "chatml", "org/name")
    # a path written in the file stays relative to the file
    assert yaml.safe_load(runner.invoke(app, ["config", "validate", str(f), "--set", "train.lr=0.1"]).stdout
                          )["data"]["train"] == str(tmp_path / "configs" / "train.jsonl")


def test_progress_shows_a_loss_when_no_step_was_logged():
    from rich.console import Console

    from tunesmith.train.progress import RichProgress

    bar = RichProgress(Console(quiet=True), enabled=False)
    bar.on_log(None, None, None, logs={"train_loss": 2.5, "train_runtime": 1.0})
    assert bar.loss == "2.5000"
    logged = RichProgress(Console(quiet=True), enabled=False)
    logged.on_log(None, None, None, logs={"loss": 3.0})
    logged.on_log(None, None, None, logs={"train_loss": 9.0})  # the last logged step's loss stays
    assert logged.loss == "3.0000"


def test_config_file_with_a_key_twice_or_not_utf8_is_refused(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  lr: 0.1\ndata:\n  train: t.jsonl\ntrain:\n  epochs: 2\n")
    msg = _error(runner.invoke(app, ["config", "validate", str(f)]))
    assert msg.startswith(f"error: {f}: not valid YAML: 'train' is given twice (the first would be silently ignored)")
    assert "line 5, column 1" in msg
    f.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert _error(runner.invoke(app, ["config", "validate", str(f)])) == (
        f"error: {f}: not UTF-8 text (byte 9); save the file as UTF-8")
    f.write_text("train:\n  <<: {lr: 1, epochs: 3}\n  lr: 0.5\n")  # a merge key's value may be overridden
    res = runner.invoke(app, ["config", "validate", str(f)])
    assert res.exit_code == 0 and "  lr: 0.5\n" in res.stdout and "  epochs: 3.0\n" in res.stdout


def test_examples_longer_than_the_models_positions_are_named(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(model)
    tok.save_pretrained(model)
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "A long document about courts. " * 40}) + "\n")
    f = _config(tmp_path, model, objective="pretrain", data={"train": "docs.jsonl", "max_seq_len": 100})
    assert _error(runner.invoke(app, ["train", str(f)])).endswith(
        "error: an example has 100 tokens but the model takes at most 64 positions (max_position_embeddings); "
        "set data.max_seq_len to 64 or less")
