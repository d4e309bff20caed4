"""The base model of a run: a model setting, or a previous run for two-stage recipes (pretrain → sft → dpo).

`model: runs/stage1` names a finished run directory. A full fine-tune is used as it is
(`runs/stage1/model`); a LoRA run is merged into its own base model once and cached in
`runs/stage1/merged/`, so the next stage trains a fresh adapter on top of the merged
weights and evaluation compares against the stage-1 model. Prompt/prefix-tuning runs
cannot be merged into weights, so they cannot be chained.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tunesmith.models import ModelError, resolve_model, resolve_tokenizer
from tunesmith.rundir import RunDir, RunInfo

MERGED = "merged"


def is_run_dir(spec: str | Path) -> bool:
    return RunDir(Path(spec).expanduser()).info_path.is_file()


def _run_info(run: Path) -> RunInfo:
    info = RunDir(run).info()
    if info.status != "finished":
        raise ModelError(f"model {run}: the run is not finished (status {info.status!r}); finish it first")
    return info


def tokenizer_dir(spec: str | Path) -> Path:
    """Where the tokenizer of a model setting lives, without merging anything (for `data render`, `plan cost`,
    `data check --config`). A .gguf file gives its tokenizer alone (models.resolve_tokenizer): the very files its
    converted model carries, without dequantizing the weights only to count tokens."""
    if not is_run_dir(spec):
        p = Path(spec).expanduser()
        return resolve_tokenizer(p, "`model:`") if p.suffix.lower() == ".gguf" and p.is_file() else resolve_model(spec)
    run = Path(spec).expanduser()
    for sub in ("model", MERGED, "adapter"):
        if (run / sub / "tokenizer_config.json").is_file():
            return run / sub
    return Path(_run_info(run).base_model)


def resolve_base(spec: str | Path, trust_remote_code: bool = False) -> Path:
    """A local model directory for `model:`; a previous run resolves to its trained model (merged if an adapter)."""
    if not is_run_dir(spec):
        return resolve_model(spec)
    run = Path(spec).expanduser().resolve()
    info = _run_info(run)
    if (run / "model" / "config.json").is_file():
        return run / "model"
    merged = run / MERGED
    if (merged / "config.json").is_file():
        return merged
    adapter = run / "adapter"
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise ModelError(f"model {run}: the run has neither model/ nor adapter/; it cannot be a base model")
    peft_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("peft_type")
    if peft_type != "LORA":
        raise ModelError(
            f"model {run}: a {peft_type} adapter cannot be merged into the weights, so the run cannot be a base "
            "model; chain from a lora, qlora or full run"
        )
    _merge(Path(info.base_model), adapter, merged, trust_remote_code)
    return merged


def _merge(base: Path, adapter: Path, out: Path, trust_remote_code: bool) -> None:
    import torch
    from peft import PeftModel

    from tunesmith.models import load_model, load_tokenizer

    # Merging in fp32 avoids rounding the sum twice; the next stage picks its own dtype when it loads.
    model = load_model(base, "float32", trust_remote_code)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # processes of a distributed run merge side by side
    shutil.rmtree(tmp, ignore_errors=True)
    with torch.no_grad():
        model.save_pretrained(str(tmp), safe_serialization=True)
    load_tokenizer(adapter, trust_remote_code).save_pretrained(str(tmp))
    try:
        tmp.rename(out)  # atomic: an interrupted merge is redone, never half-used
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
