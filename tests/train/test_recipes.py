"""Each method and objective really trains on the tiny model: golden losses (fixed seed, CPU) and the run dir."""

import io
import json
import random
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from tunesmith.train.recipe import train

from tests.helpers import QUIET, WORDS, losses, make_cfg, write_chat

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-data")
    write_chat(d / "train.jsonl", 16)
    write_chat(d / "val.jsonl", 4, seed=1)
    rng = random.Random(2)
    with open(d / "pref.jsonl", "w") as f:
        for _ in range(8):
            q = " ".join(rng.choice(WORDS) for _ in range(4))
            f.write(json.dumps({"prompt": q, "chosen": "1. " + " ".join(rng.choice(WORDS) for _ in range(3)),
                                "rejected": " ".join(rng.choice(WORDS) for _ in range(3))}) + "\n")
    with open(d / "text.txt", "w") as f:
        for _ in range(8):
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) + "\n")
    (d / "rules.yaml").write_text('rules:\n  - name: short\n    max_words: 2\n  - name: fox\n    contains: "fox"\n')
    return d


# Recorded on CPU (torch 2.13, transformers 5.23, trl 1.16) and reproduced bit-for-bit on a second run.
GOLDEN = {
    "lora": [6.233112, 6.185255, 6.135654, 6.040332],
    "full": [6.233112, 6.160961, 5.639990, 5.162191],
    "prompt_tuning": [6.216539, 6.215656, 6.235085, 6.180785],
    "dpo": [0.693147, 0.686411, 0.644630, 0.578521],  # starts at ln 2: the adapter starts as a no-op
    "pretrain": [6.216611, 6.189882, 6.062274, 6.083727],
}


@pytest.mark.parametrize("case", list(GOLDEN))
def test_golden_losses(tiny_model_dir, data, tmp_path, case):
    over = {}
    if case in ("full", "prompt_tuning"):
        over["method"] = case
    if case == "dpo":
        over.update(objective="dpo", data__train=str(data / "pref.jsonl"))
    if case == "pretrain":
        over.update(objective="pretrain", data__train=str(data / "text.txt"))
    # the golden values are TRL's plain path; the fast path's equal curve is test_fast's subject
    cfg = make_cfg(tiny_model_dir, data, tmp_path, case, train__performance="off", **over)
    result = train(cfg, console=QUIET, show_progress=False)
    got = losses(result.run_dir)
    assert got == pytest.approx(GOLDEN[case], abs=1e-3)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["objective"] == cfg.objective and info["global_step"] == 4
    if case == "full":
        assert (result.run_dir / "model" / "model.safetensors").is_file() and not (result.run_dir / "adapter").exists()
    else:
        assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_prefix_tuning_trains_without_packing(tiny_model_dir, data, tmp_path):
    cfg = make_cfg(tiny_model_dir, data, tmp_path, "prefix", method="prefix_tuning")
    result = train(cfg, console=QUIET, show_progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["packing"] is False and info["status"] == "finished"
    got = losses(result.run_dir)
    assert len(got) == 4 and got[-1] != got[0]


def test_label_mask_counts_on_a_known_conversation(tiny_model_dir):
    from tunesmith.data.records import Conversation
    from tunesmith.models import load_tokenizer
    from tunesmith.train.tokenize import encode_dataset

    tok = load_tokenizer(tiny_model_dir)
    conv = Conversation.from_messages([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Refund for my account?"},
        {"role": "assistant", "content": "1. Write to billing."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "2. Wait for the letter."},
    ])
    encoded, report = encode_dataset(tok, [conv], 512, "error")
    # each assistant turn is 12 tokens with its <|im_end|>; system and user turns are not trained
    assert (report.trained_tokens, report.total_tokens, report.kept) == (24, 84, 1)
    assert report.eos_trained and encoded[0].labels.count(tok.eos_token_id) == 2


def _plant_lengths(path):
    long = " ".join(["billing"] * 60)
    rows = [("refund?", "yes."), ("account?", "no."), ("fox?", "quick."), ("letter?", long), (long, "ok.")]
    with open(path, "w") as f:
        for q, a in rows:
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"messages": msgs}) + "\n")


@pytest.mark.parametrize("policy", ["truncate", "drop", "error"])
def test_over_length_policies_are_counted_never_silent(tiny_model_dir, data, tmp_path, policy):
    from tunesmith.train.tokenize import DataError

    f = tmp_path / "lengths.jsonl"
    _plant_lengths(f)
    cfg = make_cfg(tiny_model_dir, data, tmp_path, policy, data={"train": str(f), "max_seq_len": 40,
                                                                  "over_length": policy},
                   train={"max_steps": 1, "batch_size": 2})
    if policy == "error":
        with pytest.raises(DataError, match=rf"{f}:4: example has \d+ tokens, over max_seq_len=40"):
            train(cfg, console=QUIET, show_progress=False)
        return
    result = train(cfg, console=QUIET, show_progress=False)
    enc = json.loads((result.run_dir / "run.json").read_text())["encode"]
    if policy == "truncate":  # line 5's only answer lies past the cut: dropped and counted, not an error
        assert enc["truncated_lines"] == [f"{f}:4", f"{f}:5"] and enc["dropped_no_trained_tokens"] == [f"{f}:5"]
        assert enc["kept"] == 4
    else:
        assert enc["dropped_over_length"] == [f"{f}:4", f"{f}:5"] and enc["kept"] == 3


def test_mix_adds_each_source_by_weight(tiny_model_dir, data, tmp_path):
    general = write_chat(tmp_path / "general.jsonl", 30, seed=9)
    cfg = make_cfg(tiny_model_dir, data, tmp_path, "mix", data={"train": str(data / "train.jsonl"), "max_seq_len": 64,
                                                                 "mix": [{"path": str(general), "weight": 0.25}]},
                   train={"max_steps": 1, "batch_size": 2})
    result = train(cfg, console=QUIET, show_progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    # 16 own examples are 75% of round(16 / 0.75) = 21; the other 5 are drawn from general.jsonl
    assert info["data"]["mix"][0]["count"] == 5 and info["encode"]["total"] == 21


def test_qlora_without_cuda_fails_before_loading(tmp_path):
    from typer.testing import CliRunner

    from tunesmith.cli import app

    cfg = tmp_path / "q.yaml"
    cfg.write_text("method: qlora\nmodel: does-not-exist\ndata: {train: nowhere.jsonl}\n")
    res = CliRunner().invoke(app, ["train", str(cfg)])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "needs an NVIDIA GPU with CUDA" in out and "pip install 'tunesmith[gpu]'" in out


def test_pretrain_then_sft_on_the_merged_stage_one(tiny_model_dir, data, tmp_path):
    import torch

    stage1 = train(make_cfg(tiny_model_dir, data, tmp_path, "stage1", objective="pretrain",
                            data__train=str(data / "text.txt")), console=QUIET, show_progress=False)
    cfg2 = make_cfg(tiny_model_dir, data, tmp_path, "stage2")
    cfg2.model = str(stage1.run_dir)
    stage2 = train(cfg2, console=QUIET, show_progress=False)
    info = json.loads((stage2.run_dir / "run.json").read_text())
    merged = stage1.run_dir / "merged"
    assert info["base_model"] == str(merged.resolve()) and info["model_spec"] == str(stage1.run_dir)
    base_w = load_file(tiny_model_dir / "model.safetensors")
    merged_w = load_file(merged / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base_w[key], merged_w[key])  # the stage-1 adapter is in the weights
    assert losses(stage2.run_dir)[0] < GOLDEN["lora"][0]  # stage 2 starts from a model that saw the domain words


def test_finished_run_is_a_no_op_unless_forced(tiny_model_dir, data, tmp_path):
    cfg = make_cfg(tiny_model_dir, data, tmp_path, "again", train={"max_steps": 1, "batch_size": 2, "logging_steps": 1})
    first = train(cfg, console=QUIET, show_progress=False)
    out = Console(file=io.StringIO(), width=400)
    again = train(cfg, console=out, show_progress=False)
    assert again.skipped and again.final_train_loss == first.final_train_loss
    assert "differs" not in out.file.getvalue()
    changed = cfg.model_copy(deep=True)
    changed.train.lr, changed.lora.r = 0.5, 8
    train(changed, console=out, show_progress=False)  # still a no-op, but it says what the user changed
    assert "differs from the finished run's: lora.r 4 → 8, train.lr 0.0002 → 0.5. The finished run is kept" \
        in out.file.getvalue()
    forced = train(cfg, force=True, console=QUIET, show_progress=False)
    assert not forced.skipped and len(losses(forced.run_dir)) == 1


def test_grpo_reward_is_the_fraction_of_rules_passed(tiny_model_dir, data, tmp_path):
    import torch

    from tunesmith.rules import load_rules
    from tunesmith.train.objectives.grpo import rules_reward

    reward = rules_reward(load_rules(data / "rules.yaml"))
    completions = [[{"role": "assistant", "content": "the fox"}], [{"role": "assistant", "content": "a fox jumps"}],
                   [{"role": "assistant", "content": "nothing here"}], [{"role": "assistant", "content": "x y z"}]]
    assert reward(prompts=[[]] * 4, completions=completions, question=[""] * 4) == [1.0, 0.5, 0.5, 0.0]

    cfg = make_cfg(tiny_model_dir, data, tmp_path, "grpo", objective="grpo", data__rules=str(data / "rules.yaml"),
                   grpo={"num_generations": 2, "max_completion_length": 6}, train={"max_steps": 2, "batch_size": 4,
                                                                                   "lr": 1e-2, "logging_steps": 1})
    result = train(cfg, console=QUIET, show_progress=False)
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["reward"] <= 1 for r in rows)
    assert result.final_reward == rows[-1]["reward"]  # reported: a GRPO loss says little about progress
    adapter = load_file(result.run_dir / "adapter" / "adapter_model.safetensors")
    assert any(torch.count_nonzero(v) for k, v in adapter.items() if "lora_B" in k)  # B starts at zero


def test_early_stopping_keeps_the_best_checkpoint(tiny_model_dir, data, tmp_path):
    cfg = make_cfg(tiny_model_dir, data, tmp_path, "early", method="full",
                   data={"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl"), "max_seq_len": 64},
                   train={"max_steps": 12, "batch_size": 4, "lr": 0.05, "logging_steps": 1, "eval_every": 1,
                          "early_stopping_patience": 2, "warmup_ratio": 0.0,
                          "dtype": "float32", "performance": "off"})
    result = train(cfg, console=QUIET, show_progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]  # no re-evaluation row at the end
    best_step, best = min(evals, key=lambda e: e[1])
    # the recorded eval losses, seeded: [5.42, 4.38, 4.61, 5.40] → two evals without improvement after step 2
    assert [s for s, _ in evals] == [1, 2, 3, 4] and best_step == 2 and info["global_step"] == 4
    assert info["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert info["stopped_early"] == {"step": 4, "max_steps": 12, "best_step": 2}
    assert result.final_eval_loss == pytest.approx(best, abs=1e-5)
    saved = load_file(result.run_dir / "model" / "model.safetensors")  # the saved model is the best checkpoint
    kept = load_file(Path(info["best_checkpoint"]) / "model.safetensors")
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)


def test_overfit_warning_when_val_rises_while_train_falls():
    from tunesmith.train.progress import OverfitWarning

    console = Console(record=True, width=200)
    cb = OverfitWarning(console)
    for train_loss, val in [(3.0, 2.0), (2.5, 1.9), (2.0, 2.0), (1.5, 2.1)]:
        cb.on_log(None, None, None, logs={"loss": train_loss})
        cb.on_log(None, None, None, logs={"eval_loss": val})
    assert "validation loss rose for two evals in a row (1.9000 → 2.1000)" in console.export_text()
    quiet = OverfitWarning(Console(record=True))
    for train_loss, val in [(3.0, 2.0), (3.1, 1.9), (3.2, 2.0), (3.3, 2.1)]:  # train loss rising too: no warning
        quiet.on_log(None, None, None, logs={"loss": train_loss})
        quiet.on_log(None, None, None, logs={"eval_loss": val})
    assert not quiet.warned


def test_base_model_without_a_chat_template_trains_with_the_builtin_chatml(tiny_model_dir, data, tmp_path):
    import shutil

    from tunesmith.models import ModelError, load_tokenizer

    base = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink()  # a base model: no chat template at all
    cfg = make_cfg(base, data, tmp_path, "no-template", train={"max_steps": 1, "batch_size": 2})
    with pytest.raises(ModelError, match="has no chat template; .* Set data.chat_template: chatml"):
        train(cfg, console=QUIET, show_progress=False)
    cfg.data.chat_template = "chatml"
    result = train(cfg, console=QUIET, show_progress=False)
    assert result.encode_report["eos_trained"] is True
    tok = load_tokenizer(result.run_dir / "adapter")  # saved with the adapter: eval and serving render the same
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                       tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"  # EOS is <|im_end|>
    (tmp_path / "mine.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}"
                                         "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    custom = load_tokenizer(base, chat_template=str(tmp_path / "mine.jinja"))
    assert custom.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True) == "user: hi<|im_end|>assistant: "
    # the refusal also offers the templates TRL ships (issue 16)
    with pytest.raises(ModelError, match="'nope' is neither a built-in \\(chatml\\), nor a template TRL ships "
                                         "\\(gemma3, .*\\), nor a template file"):
        load_tokenizer(base, chat_template="nope")


def test_dpo_pairs_reach_trl_already_cut_and_trl_cuts_nothing(tiny_model_dir, data, tmp_path):
    from transformers import TrainerCallback

    # pairs 1-2: the prompt alone fills max_seq_len; 3-4: over it with room for answer tokens; 5-6: short
    rows = [{"prompt": "long prompt " * (30, 30, 3, 3, 0, 0)[i] + f"say {i}", "chosen": f"Good {i}.",
             "rejected": f"bad {i}"} for i in range(6)]
    (tmp_path / "cut.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = {}

    class Look(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **_):
            seen["max_length"] = args.max_length
            seen["lengths"] = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))
                               for r in train_dataloader.dataset]

    cfg = make_cfg(tiny_model_dir, data, tmp_path, "dpo-cut", objective="dpo",
                   data={"train": str(tmp_path / "cut.jsonl"), "max_seq_len": 40},
                   train={"max_steps": 1, "batch_size": 2})
    result = train(cfg, console=QUIET, show_progress=False, callbacks=[Look()])
    report = result.encode_report
    assert seen["max_length"] is None  # TRL neither truncates nor filters: the lengths below are all it gets
    assert report["kept"] == 4 and len(report["truncated_lines"]) == 4 and len(report["dropped_no_trained_tokens"]) == 2
    assert sorted(seen["lengths"]) == [24, 24, 40, 40]  # the tiny tokenizer: 16 prompt + 8 answer tokens when short
