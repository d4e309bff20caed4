"""The run directory, the unit of work (see README "Run directory"), and the one owner of the two
artefacts everything downstream reads: `run.json` (RunInfo) and `eval/results.json` (EvalResults).
Nothing else opens those files; readers go through `RunDir.info()` / `RunDir.results()`."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tunesmith.errors import UserError
from tunesmith.evaluate.verdicts import GateResult, RegressionResult

RUN_SCHEMA = 1
RESULTS_SCHEMA = 1


class RunDirError(UserError):
    """A run directory whose run.json / results.json cannot be read: names the file and the field."""


class _Artefact(BaseModel):
    # extra="allow": a file written by a newer minor version keeps the keys this one does not know
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class RunInfo(_Artefact):
    """run.json: what a training run is and how it ended. Files from before `schema_version`
    existed load as version 1 (their keys are the same)."""

    schema_version: int = RUN_SCHEMA
    name: str | None = None
    status: Literal["running", "finished", "failed"] = "running"
    created: str | None = None
    method: str | None = None
    objective: str | None = None
    base_model: str | None = None
    model_spec: str | None = None
    data: dict[str, Any] = {}
    rules: str | None = None
    system_prompt: str | None = None
    packing: bool | None = None
    encode: dict[str, Any] = {}
    fast_path: dict[str, Any] | None = None
    train_seconds: float | None = None
    final_train_loss: float | None = None
    final_eval_loss: float | None = None
    global_step: int | None = None
    best_checkpoint: str | None = None
    stopped_early: dict[str, Any] | None = None
    real_tokens_per_s: float | None = None
    final_reward: float | None = None


class EvalResults(_Artefact):
    """eval/results.json: every number the CLI, the report, the registry and the UI show."""

    schema_version: int = RESULTS_SCHEMA
    task: str
    title: str | None = None
    test: dict[str, Any] = {}
    rules: str | None = None
    few_shot: int | None = None
    systems: dict[str, dict[str, Any]] = {}
    examples: list[dict[str, Any]] = []
    regression: RegressionResult | None = None  # the suite, base vs tuned; fields documented in evaluate/verdicts.py
    gate: GateResult | None = None  # the promotion decision; fields documented in evaluate/verdicts.py
    loss_curve: list[dict[str, Any]] = []


def _load(model: type[BaseModel], path: Path, newest: int):
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"cannot read it: {e}", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"not valid JSON: {e.msg}", file=str(path), line=e.lineno) from None
    if not isinstance(raw, dict):
        raise RunDirError("not a JSON object", file=str(path))
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version > newest:
        raise RunDirError(f"schema_version {version!r} is newer than this tunesmith reads ({newest})",
                          file=str(path), field="schema_version", hint="upgrade tunesmith")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise RunDirError(err["msg"], file=str(path), field=field) from None


def _dump(path: Path, model: BaseModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(model.model_dump(mode="json"), indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def results_path(self) -> Path:
        return self.eval_dir / "results.json"

    def info(self) -> RunInfo:
        """run.json, typed. A directory without one is refused by name."""
        if not self.info_path.is_file():
            raise RunDirError("no run.json: not a tunesmith run directory", file=str(self.path))
        return _load(RunInfo, self.info_path, RUN_SCHEMA)

    def results(self) -> EvalResults | None:
        """eval/results.json, typed; None before the run was evaluated."""
        return _load(EvalResults, self.results_path, RESULTS_SCHEMA) if self.results_path.is_file() else None

    def write_results(self, results: EvalResults) -> Path:
        _dump(self.results_path, results)
        return self.results_path

    def finished(self) -> bool:
        return self.info_path.is_file() and self.read_info().get("status") == "finished"

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.info_path.read_text(encoding="utf-8")) if self.info_path.is_file() else {}

    def write_info(self, info: dict[str, Any]) -> None:
        info.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        tmp = self.info_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.info_path)

    def update_info(self, changes: dict[str, Any]) -> None:
        self.write_info({**self.read_info(), **changes})

    def write_text(self, name: str, text: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return p

    def reset(self) -> None:
        for name in ("adapter", "model", "merged", "checkpoints", "eval"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for name in ("run.json", "metrics.jsonl", "loss.png", "report.html"):
            (self.path / name).unlink(missing_ok=True)

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint. The trainer writes trainer_state.json last, so a checkpoint
        without it was being written when the process died and is skipped."""
        if not self.checkpoints.is_dir():
            return None
        ckpts = [p for p in self.checkpoints.glob("checkpoint-*")
                 if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
        return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def truncate_metrics(self, step: int) -> None:
        """Keep only rows up to `step`: a resumed run logs the steps after its checkpoint again."""
        rows = [r for r in self.read_metrics() if r["step"] <= step]
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]

    def plot_losses(self) -> Path | None:
        rows = self.read_metrics()
        if not rows:
            return None
        from tunesmith.report.plots import loss_figure

        fig = loss_figure(rows)
        out = self.path / "loss.png"
        fig.savefig(out, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return out
