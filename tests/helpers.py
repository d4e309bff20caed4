"""Helpers shared by test subjects: repository paths, fake finished training runs (a tiny llama
+ a LoRA adapter with non-zero B) for the deploy and end-to-end tests, records and files written inside a
test, and the CLI run as a user runs it. Test files import the short helpers under the local names their
tests use (`from tests.helpers import chat as _chat`)."""

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
           # fp32: the golden losses hold on every CPU (auto trains in bf16 where the CPU has AMX)
           "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-2, "logging_steps": 1, "warmup_ratio": 0.0,
                     "dtype": "float32"}}
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


# --- records and files written inside a test --------------------------------------------------------------


def chat(user: str, answer: str, system: str | None = None) -> dict:
    """One chat record: a user turn and its answer, after a system turn when one is given."""
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + msgs}


def write_rows(path: Path, rows: list) -> Path:
    """One JSON value per line (a string row is written as a JSON string, not as raw text)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_pairs(path: Path, pairs) -> Path:
    """Chat records from (question, answer) pairs, one a line."""
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for u, a in pairs))
    return path


def random_words(rng: random.Random, n: int = 15) -> str:
    """n words from a 5000-word vocabulary: texts that are neither exact nor near duplicates of each other."""
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def train_config(tmp_path: Path, tiny, **over) -> Path:
    """run.yaml for one step on six chat pairs (tmp_path/train.jsonl); `over` replaces or updates sections."""
    write_pairs(tmp_path / "train.jsonl", [(f"question {i}", f"answer {i}") for i in range(6)])
    raw = {"name": "qa", "model": str(tiny), "output_dir": "runs",
           "data": {"train": "train.jsonl", "max_seq_len": 40},
           "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    f = tmp_path / "run.yaml"
    f.write_text(json.dumps(raw))
    return f


# --- driving the CLI ----------------------------------------------------------------------------------------


def one_line(res) -> str:
    """A CLI result's output as one line: rich wraps long messages at the terminal width."""
    return " ".join(res.output.split())


def cli_error(res) -> str:
    """The message of a CLI run that must have been refused as a user error (exit 2, no traceback)."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    return one_line(res)


def data_check(*args: str) -> tuple[int, dict]:
    """`tunesmith data check ARGS --json`: the exit code and the report."""
    from typer.testing import CliRunner

    from tunesmith.data.cli import app

    res = CliRunner().invoke(app, ["check", *args, "--json"])
    assert "Traceback" not in res.output
    return res.exit_code, json.loads(res.stdout)


def deploy_cli(*args: str):
    """The registry, export and serve commands, run as `tunesmith ARGS` would run them."""
    import typer
    from typer.testing import CliRunner

    from tunesmith.deploy.cli import export_app, registry_app, serve

    app = typer.Typer()
    app.add_typer(registry_app, name="registry")
    app.add_typer(export_app, name="export")
    app.command("serve")(serve)
    return CliRunner().invoke(app, list(args))


def version_id(reg, name: str, n: int = 1) -> str:
    """The id of the n-th version registered under `name`."""
    return reg.versions(name)[n - 1].id


def base_without_template(model_dir: Path, out: Path) -> Path:
    """A copy of a model whose tokenizer has no chat template, as a pre-trained base's has none."""
    import shutil

    shutil.copytree(model_dir, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out
