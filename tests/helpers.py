"""Helpers shared by test subjects: repository paths and fake finished training runs (a tiny llama
+ a LoRA adapter with non-zero B) for the deploy and end-to-end tests."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from rich.console import Console


os.environ.setdefault("HF_HUB_OFFLINE", "1")

TESTS = Path(__file__).parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
EXAMPLES = REPO / "examples"


RULES_YAML = "rules:\n  - name: polite\n    contains: \"please\"\n"


def make_run(root: Path, base: Path, name: str, seed: int, rank: int = 4, rules: bool = False) -> Path:
    """A run directory per the run-dir contract; `seed` makes each adapter answer differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = root / name
    run.mkdir(parents=True)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:  # B starts at zero, which would make the adapter a no-op
                p.normal_(0, 0.2)
    peft_model.save_pretrained(str(run / "adapter"), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(run / "adapter"))
    test = run / "data" / "test.jsonl"
    test.parent.mkdir()
    test.write_text(
        "\n".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]})
                  for q in ("What is a lease?", "Is a verbal contract binding?", "What is 2 + 2?")) + "\n"
    )
    if rules:
        (run / "rules.yaml").write_text(RULES_YAML)
    info = {
        "name": name, "status": "finished", "method": "lora", "objective": "sft",
        "base_model": str(base), "model_spec": str(base),
        "data": {"train": {"path": "train.jsonl", "sha256": "a" * 64, "count": 10},
                 "test": {"path": str(test), "sha256": "c" * 64, "count": 3}},
        "system_prompt": None, "rules": str(run / "rules.yaml") if rules else None,
        "train_seconds": 1.5, "final_train_loss": 0.75, "final_eval_loss": 0.8, "created": "2026-11-22T10:00:00+00:00",
    }
    (run / "run.json").write_text(json.dumps(info))
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text(json.dumps(
        {"task": "chat",
         "systems": {"base": {"metrics": {"compliance": 0.1}}, "tuned": {"metrics": {"compliance": 0.9}}},
         "gate": {"passed": True, "reason": "tuned beats base"}}))
    return run


class DeployEnv:
    """A tiny base model and three finished runs of one family, each with a different adapter."""

    def __init__(self, root: Path):
        from tunesmith.demo.tiny import build_tiny_model

        self.root = root
        self.base = build_tiny_model(root / "base")
        self.runs = [make_run(root / "runs", self.base, f"legal-{i}", seed=i, rules=(i == 3)) for i in (1, 2, 3)]


WORDS = "refund billing account the fox quick brown lazy dog answer court letter".split()
QUIET = Console(stderr=True, quiet=True)


def write_chat(path, n, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def make_cfg(tiny, data_dir, tmp_path, name, **over):
    raw = {"name": name, "model": str(tiny), "output_dir": str(tmp_path / "runs"),
           "data": {"train": str(data_dir / "train.jsonl"), "max_seq_len": 64},
           "lora": {"r": 4, "alpha": 8},
           "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-2, "logging_steps": 1, "warmup_ratio": 0.0}}
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    from tunesmith.config import RunConfig

    return RunConfig.model_validate(raw)


def losses(run_dir):
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


# Turn layouts of real instruct models whose end-of-turn token is not the tokenizer's EOS.
PHI3 = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
