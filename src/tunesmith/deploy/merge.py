"""Merge a registered adapter into its base model, and prove the merge changed nothing.

The merged directory is a plain transformers model (safetensors) plus the tokenizer, so
`AutoModelForCausalLM.from_pretrained(dir)` loads it with no peft installed. The parity check
greedily decodes the same prompts with base+adapter and with the merged model re-loaded from
disk; the token ids must be identical.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.deploy.registry import Version
from tunesmith.eval_settings import EvalSettings
from tunesmith.rundir import RunDir, RunDirError
from tunesmith.models import load_model, load_tokenizer, stop_token_ids
from tunesmith.errors import UserError

# Used when the run left no readable test split to draw parity prompts from.
FALLBACK_PROMPTS = [
    "What is a contract?",
    "Summarise the notice period rules in two sentences.",
    'Return {"name": "Ada", "age": 36} as JSON.',
    "Classify: my refund has not arrived.",
    "What is 2 + 2?",
    "Write one sentence about the quick brown fox.",
    "List three things a tenant should check before signing.",
    "Explain billing in one line.",
]


class OutputError(UserError):
    """An output path that must not be written (it would overwrite something that is not an export)."""


def check_output_dir(out: Path, base_model: str | None = None) -> None:
    """Replacing the output directory is only safe when it is empty or holds a model (an earlier export) other
    than the base the adapter needs."""
    if base_model and out == Path(base_model).expanduser().resolve():
        raise OutputError(f"{out}: is the base model of this version; the merge would replace it, breaking every "
                          "version trained on it")
    if out.is_file():
        raise OutputError(f"{out}: is a file; give a directory for the merged model")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise OutputError(f"{out}: exists and is not a model directory (no config.json); it would be replaced, so "
                          "choose a new or empty directory")


@dataclass
class ParityReport:
    kind: str
    prompts: int
    identical: int
    max_abs_diff: float
    rel_diff: float
    tolerance: float | None
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        if self.tolerance is None:
            return self.identical == self.prompts
        return self.rel_diff <= self.tolerance and not self.extra.get("tokenizer_mismatch")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "passed": self.passed,
            "prompts": self.prompts,
            "identical_greedy": self.identical,
            "max_abs_logit_diff": self.max_abs_diff,
            "rel_logit_diff": self.rel_diff,
            "tolerance": self.tolerance,
            "mismatches": self.mismatches,
            **self.extra,
        }


def tokenizer_dir(version: Version) -> Path:
    """The adapter store carries the tokenizer the run trained with; older runs may only have the base's."""
    store = version.adapter_dir
    if (store / "tokenizer_config.json").is_file() or (store / "tokenizer.json").is_file():
        return store
    return Path(version.base_model)


def load_adapted(version: Version):
    """(peft model, tokenizer) for a version, fp32, eval mode, safetensors only."""
    from peft import PeftModel

    version.check_files()
    base = load_model(version.base_model, dtype="float32")
    model = PeftModel.from_pretrained(base, str(version.adapter_dir), use_safetensors=True)
    model.eval()
    return model, load_tokenizer(tokenizer_dir(version))


def parity_prompts(version: Version, n: int) -> list[list[dict[str, str]]]:
    """Chat prompts for parity checks: the run's test split when it is still readable, else fixed prompts."""
    return [messages for messages, _ in parity_cases(version, n)]


def parity_cases(version: Version, n: int) -> list[tuple[list[dict[str, str]], str | None]]:
    """(prompt messages, the test split's answer or None) for parity checks: the run's test split when it is
    still readable, then fixed prompts (with the run's system prompt) up to n."""
    convs: list[tuple[list[dict[str, str]], str | None]] = []
    test = None
    if version.lineage.get("run") and (run := RunDir(version.lineage["run"])).is_run():
        try:
            test = run.info().data.test
        except RunDirError:  # the run directory changed since it was registered: the fixed prompts do
            pass
    test_path = test.path if test else None
    if test_path and Path(test_path).is_file():
        for line in Path(test_path).read_text(encoding="utf-8").splitlines():
            try:
                msgs = json.loads(line).get("messages")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "content" in m for m in msgs):
                answer = msgs[-1]["content"] if msgs[-1].get("role") == "assistant" else None
                prompt = msgs[:-1] if answer is not None else msgs
                if prompt:
                    convs.append(([{"role": m["role"], "content": m["content"]} for m in prompt], answer))
            if len(convs) >= n:
                break
    system = version.lineage.get("system_prompt")
    for text in FALLBACK_PROMPTS:
        if len(convs) >= n:
            break
        convs.append((([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}],
                      None))
    return convs[:n]


def answer_limit(version: Version, cases: list[tuple[list[dict[str, str]], str | None]],
                 cap: int = EvalSettings.model_fields["max_new_tokens"].default, without_answers: int = 64) -> int:
    """New tokens each parity answer gets, as the evaluation gives them (the longest test answer + 25%, at most
    `cap`): a shorter limit would compare answers cut before what the rules check (a closing disclaimer)."""
    from tunesmith.evaluate.prompts import tokens_for

    answers = [a for _, a in cases if a]
    if not answers:
        return without_answers
    return tokens_for(load_tokenizer(tokenizer_dir(version), chat=False), answers, cap)


def encode_chat(tok, messages: list[dict[str, str]], chat_template: str | None = None) -> list[int]:
    ids = tok.apply_chat_template(messages, chat_template=chat_template, add_generation_prompt=True, tokenize=True,
                                  return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def greedy(model, tok, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(tok, model.generation_config),
            pad_token_id=tok.pad_token_id,
        )
    return out[0, len(prompt_ids):].tolist()


def last_logits(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def merge_to_dir(version: Version, out_dir: str | Path) -> Path:
    """Write the merged model + tokenizer; atomic (a crash never leaves a half-written directory)."""
    out = Path(out_dir).expanduser().resolve()  # resolved: "." has no name to put a .partial sibling beside
    check_output_dir(out, version.base_model)
    version.check_mergeable()
    model, tok = load_adapted(version)
    merged = model.merge_and_unload()
    # Runtimes that read generation_config.json (transformers, vLLM) then stop at the end-of-turn token too.
    stops = stop_token_ids(tok, merged.generation_config)
    merged.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0] if stops else None
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def verify_merge(version: Version, merged_dir: str | Path, n: int = 8, max_new_tokens: int = 24) -> ParityReport:
    """Greedy outputs of base+adapter vs the merged directory loaded by plain transformers: must be identical."""
    from transformers import AutoModelForCausalLM

    adapted, tok = load_adapted(version)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), use_safetensors=True, dtype="float32").eval()
    prompts = parity_prompts(version, n)
    identical, max_abs, ref_max, mismatches = 0, 0.0, 0.0, []
    for messages in prompts:
        ids = encode_chat(tok, messages)
        a, b = greedy(adapted, tok, ids, max_new_tokens), greedy(merged, tok, ids, max_new_tokens)
        la, lb = last_logits(adapted, ids), last_logits(merged, ids)
        max_abs = max(max_abs, float((la - lb).abs().max()))
        ref_max = max(ref_max, float(la.abs().max()))
        if a == b:
            identical += 1
        else:
            mismatches.append({"prompt": messages[-1]["content"], "adapter": tok.decode(a), "merged": tok.decode(b)})
    return ParityReport("merge", len(prompts), identical, max_abs, max_abs / max(ref_max, 1e-12),
                        None, mismatches)
