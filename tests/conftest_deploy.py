"""Fake finished training runs for the deploy tests: a tiny llama + a LoRA adapter with non-zero B."""

from __future__ import annotations

import json
import os
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")


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


_ENV: dict[str, "DeployEnv"] = {}


class DeployEnv:
    """A tiny base model and three finished runs of one family, each with a different adapter."""

    def __init__(self, root: Path):
        from tunesmith.demo.tiny import build_tiny_model

        self.root = root
        self.base = build_tiny_model(root / "base")
        self.runs = [make_run(root / "runs", self.base, f"legal-{i}", seed=i, rules=(i == 3)) for i in (1, 2, 3)]


def deploy_env(tmp_path_factory) -> DeployEnv:
    """Built once per test session (about 5 s), shared by every deploy test module."""
    if "env" not in _ENV:
        _ENV["env"] = DeployEnv(tmp_path_factory.mktemp("deploy"))
    return _ENV["env"]
