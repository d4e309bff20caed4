"""What the Runs pages show about a run: one table row, the run card, its curves and checkpoints.
Artefacts are read through `tunesmith.rundir` only; config.yaml is the run's own resolved config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.rundir import EvalResults, RunDirError
from tunesmith.ui.catalog import RunRef
from tunesmith.ui.charts import line_chart
from tunesmith.report.verdict import verdict

@dataclass
class RunRow:
    id: str
    name: str
    status: str
    model: str
    method: str
    steps: int | None
    epochs: float | None
    train_loss: float | None
    val_loss: float | None
    verdict: str | None
    created: str
    error: str | None = None


def load_config(ref: RunRef) -> tuple[dict[str, Any], str]:
    """(parsed, text) of the run's resolved config.yaml; empty when the run has none."""
    path = ref.path / "config.yaml"
    if not path.is_file() or path.is_symlink():
        return {}, ""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    return (parsed if isinstance(parsed, dict) else {}), text


# results.json of a run with thousands of examples takes ~0.1 s to parse and validate; pages reuse the
# parsed copy until the file changes (size or mtime), so the table and the eval page stay fast.
_RESULTS: dict[Path, tuple[tuple[int, int], EvalResults | None]] = {}


def results(ref: RunRef) -> EvalResults | None:
    path = ref.rundir.results_path
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    hit = _RESULTS.get(path)
    if hit and hit[0] == key:
        return hit[1]
    value = ref.rundir.results()
    if len(_RESULTS) >= 64:
        _RESULTS.clear()
    _RESULTS[path] = (key, value)
    return value


def row(ref: RunRef) -> RunRow:
    try:
        info = ref.rundir.info()
        res = results(ref)
    except RunDirError as e:  # one broken run must not take the table down: show it with its reason
        return RunRow(ref.id, ref.path.name, "unreadable", "", "", None, None, None, None, None, "", error=str(e))
    rows = _metrics(ref)
    epochs = max((r["epoch"] for r in rows if isinstance(r.get("epoch"), (int, float))), default=None)
    steps = info.global_step if info.global_step is not None else max((r.get("step", 0) for r in rows), default=None)
    method = " / ".join(x for x in (info.method, info.objective) if x)
    v = verdict(res.gate, res.regression) if res and res.gate else None
    return RunRow(ref.id, info.name or ref.path.name, info.status, _short_model(info.base_model or info.model_spec),
                  method, steps, epochs, info.final_train_loss, info.final_eval_loss,
                  v.label if v else None, info.created or "")


def _short_model(model: str | None) -> str:
    # a local path to a cached model says little; its last part is the model's name
    return (model or "").rstrip("/").rsplit("/", 1)[-1]


def _metrics(ref: RunRef) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line being written right now (no newline yet, or cut) is skipped, not fatal."""
    try:
        return ref.rundir.read_metrics()
    except ValueError:
        out = []
        for line in ref.rundir.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def curves(ref: RunRef) -> dict[str, Any]:
    """The live-curves payload: how many rows there are, the run status and the charts' markup."""
    rows = _metrics(ref)
    try:
        status = ref.rundir.info().status
    except RunDirError:
        status = "unreadable"

    def points(key: str) -> list[tuple[float, float]]:
        return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]

    charts = [line_chart({"train loss": points("loss"), "val loss": points("eval_loss")}, "loss"),
              line_chart({"learning rate": points("learning_rate")}, "learning rate"),
              line_chart({"grad norm": points("grad_norm")}, "gradient norm")]
    return {"rows": len(rows), "status": status, "html": "".join(f'<div class="chartbox">{c}</div>' for c in charts)}


def card(ref: RunRef) -> dict[str, Any]:
    """Everything on the run card, as label -> value (strings) plus the config text."""
    info = ref.rundir.info()
    cfg, cfg_text = load_config(ref)
    lora = cfg.get("lora") or {}
    train = cfg.get("train") or {}
    facts: dict[str, Any] = {
        "status": info.status,
        "model": info.base_model or info.model_spec or "",
        "method": " / ".join(x for x in (info.method, info.objective) if x),
        "LoRA r / alpha": f"{lora['r']} / {lora.get('alpha', '?')}" if "r" in lora else None,
        "steps": info.global_step,
        "epochs": train.get("epochs"),
        "max steps": train.get("max_steps"),
        "learning rate": train.get("lr"),
        "train seconds": f"{info.train_seconds:.1f}" if info.train_seconds is not None else None,
        "final train loss": _f(info.final_train_loss),
        "final val loss": _f(info.final_eval_loss),
        "best checkpoint": info.best_checkpoint,
        "schema version": info.schema_version,
        "created": info.created,
    }
    data = [{"split": k, "path": v.path or "", "count": v.count, "sha256": v.sha256 or ""}
            for k, v in info.data.splits().items()]
    return {"facts": {k: v for k, v in facts.items() if v not in (None, "")}, "data": data, "config": cfg_text}


def _f(x: float | None) -> str | None:
    return None if x is None else f"{x:.4f}"


def checkpoints(ref: RunRef) -> list[dict[str, Any]]:
    """Saved checkpoints, newest last; one without trainer_state.json was cut off mid-write."""
    where = ref.rundir.checkpoints
    if not where.is_dir():
        return []
    out = []
    for p in where.glob("checkpoint-*"):
        step = p.name.rsplit("-", 1)[-1]
        if not step.isdigit() or p.is_symlink():
            continue
        size = sum(f.stat().st_size for f in p.iterdir() if f.is_file() and not f.is_symlink())
        out.append({"name": p.name, "step": int(step), "complete": (p / "trainer_state.json").is_file(),
                    "mb": size / 1e6})
    return sorted(out, key=lambda c: c["step"])
