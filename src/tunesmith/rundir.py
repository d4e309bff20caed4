"""The run directory, the unit of work (see README "Run directory"), and the one owner of the two
artefacts everything downstream reads: `run.json` (RunInfo) and `eval/results.json` (EvalResults).
Nothing else opens those files; readers go through `RunDir.info()` / `RunDir.results()`."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.errors import UserError
from tunesmith.evaluate.verdicts import GateResult, LmEvalResult, RegressionResult

RUN_FILE = "run.json"  # what makes a folder a run directory (the web app finds runs by it)
RUN_SCHEMA = 1
RESULTS_SCHEMA = 1


class RunDirError(UserError):
    """A run directory whose run.json / results.json cannot be read: names the file and the field."""


class _Artefact(BaseModel):
    # extra="allow": a file written by a newer minor version keeps the keys this one does not know
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class DataFile(_Artefact):
    """One data split as training read it. The sealed test split has no `count` (it is never read
    during training); pre-tokenized examples passed in memory have only `in_memory`."""

    path: str | None = None
    sha256: str | None = None
    count: int | None = None
    in_memory: int | None = None


class DataManifest(_Artefact):
    """run.json `data`: the files a run trained on, pinned by hash; `mix` lists the mixed-in files."""

    train: DataFile | None = None
    val: DataFile | None = None
    test: DataFile | None = None
    mix: list[dict[str, Any]] | None = None

    def splits(self) -> dict[str, DataFile]:
        """The splits recorded, by name, in train/val/test order."""
        return {name: f for name in ("train", "val", "test") if (f := getattr(self, name)) is not None}


class RunInfo(_Artefact):
    """run.json: what a training run is and how it ended. Files from before `schema_version`
    existed load as version 1 (their keys are the same). A missing `status` stays None rather than
    being guessed."""

    schema_version: int = RUN_SCHEMA
    name: str | None = None
    status: Literal["running", "finished", "failed"] | None = None
    created: str | None = None
    method: str | None = None
    objective: str | None = None
    base_model: str | None = None
    model_spec: str | None = None
    # "pretrained": a base model that never learned to answer and stop (models.model_facts); None before it was kept
    base_model_kind: Literal["instruct", "pretrained"] | None = None
    model_source: dict[str, Any] | None = None  # a model dequantized from a GGUF: file, sha256, quantization
    data: DataManifest = Field(default_factory=DataManifest)
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


class TestSplit(_Artefact):
    """results.json `test`: the file the systems were scored on and how many examples it gave."""

    __test__ = False  # not a pytest test class, whatever its name
    path: str | None = None
    sha256: str | None = None
    n: int | None = None


class TokenUsage(_Artefact):
    """results.json `systems[name].usage`: tokens per request of one system over the requests it answered."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    mean_prompt_tokens: float | None = None
    mean_completion_tokens: float | None = None
    # api: the endpoint's `usage`; tokenizer: a local system, the tokens it was given and generated (up to
    # its stop token); estimated: counted from the text with the run's tokenizer (an endpoint that sent no
    # usage, or local generations cached before counts were kept); mixed: some of each
    source: Literal["api", "estimated", "tokenizer", "mixed"] | None = None


class EndpointFailure(_Artefact):
    id: int  # the example's id
    reason: str  # timeout, connection failed, HTTP 500, ...


class EndpointRun(_Artefact):
    """results.json `systems[name].endpoint`: where an endpoint system was asked and what failed after retries
    (a failed request is scored as an empty answer). The API key is never recorded."""

    url: str
    model: str
    requests: int
    failed: int = 0
    retries: int = Field(0, description="Retries taken by all requests together.")
    max_retries: int | None = None
    reasons: dict[str, int] = {}
    failures: list[EndpointFailure] = []
    summary: str | None = Field(None, description="'endpoint X: 3 of 24 requests failed after 3 retries: timeout'; "
                                "null when none failed.")


class SystemResult(_Artefact):
    """results.json `systems[name]`: the scores of one system (base, prompted, tuned, or an endpoint's name);
    `usage` and `endpoint` are absent from results written before they existed."""

    metrics: dict[str, Any] = {}
    usage: TokenUsage | None = None
    endpoint: EndpointRun | None = None  # set for an endpoint system only


class Example(_Artefact):
    """results.json `examples[i]`: one test example, each system's answer and its per-rule checks."""

    id: int | None = None
    line: int | None = None
    prompt: str | None = None
    reference: str | None = None
    outputs: dict[str, str] = {}
    passes: dict[str, dict[str, bool]] = {}


class StopCount(_Artefact):
    """results.json `stops[system]`: how many of its test answers ran to the token limit without a stop token."""

    n: int
    ran_to_limit: int
    limit: int | None = None


class EvalResults(_Artefact):
    """eval/results.json: every number the CLI, the report, the registry and the UI show."""

    schema_version: int = RESULTS_SCHEMA
    task: str
    title: str | None = None
    test: TestSplit | None = None
    rules: str | None = None
    few_shot: int | None = None
    systems: dict[str, SystemResult] = {}
    examples: list[Example] = []
    regression: RegressionResult | None = None  # the suite, base vs tuned; fields documented in evaluate/verdicts.py
    lm_eval: LmEvalResult | None = None  # eval.lm_eval tasks' scores; their paired rows are in `regression`
    gate: GateResult | None = None  # the promotion decision; fields documented in evaluate/verdicts.py
    model: str | None = None  # the run's model setting (run.json model_spec)
    base_model_kind: Literal["instruct", "pretrained"] | None = None  # run.json's; None in older results
    stops: dict[str, StopCount] = {}  # per system; absent for answers cached before endings were kept
    loss_curve: list[dict[str, Any]] = []


A = TypeVar("A", bound=_Artefact)


def _validate(model: type[A], raw: Any, path: Path, newest: int) -> A:
    if not isinstance(raw, dict):
        raise RunDirError("not a JSON object", file=str(path))
    version = raw.get("schema_version", 1)
    if type(version) is not int:
        raise RunDirError(f"expected an integer, got {version!r}", file=str(path), field="schema_version")
    if version > newest:
        raise RunDirError(f"schema_version {version} is newer than this tunesmith reads ({newest})",
                          file=str(path), field="schema_version", hint="upgrade tunesmith")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        got = "" if err["type"] == "missing" else f" (got {err['input']!r:.80})"  # a missing field's input is its parent
        raise RunDirError(err["msg"] + got, file=str(path), field=field) from None


def _load(model: type[A], path: Path, newest: int) -> A:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"cannot read it: {e}", file=str(path)) from None
    except json.JSONDecodeError as e:
        # the registry has always said it this way, and its callers match on it
        raise RunDirError(f"not valid JSON (line {e.lineno}: {e.msg})", file=str(path)) from None
    return _validate(model, raw, path, newest)


def _whole_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _dump(path: Path, model: _Artefact) -> None:
    # Only the keys that were set (or loaded): a file keeps the shape its writer gave it, plus the
    # schema version, instead of growing a null for every field this module knows.
    data = {"schema_version": model.schema_version, **model.model_dump(mode="json", exclude_unset=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / RUN_FILE

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

    def is_run(self) -> bool:
        """Whether this is a run directory at all (it has a run.json)."""
        return self.info_path.is_file()

    def info(self) -> RunInfo:
        """run.json, typed. A directory without one is refused by name."""
        if not self.is_run():
            raise RunDirError("no run.json: not a tunesmith run directory", file=str(self.path))
        return _load(RunInfo, self.info_path, RUN_SCHEMA)

    def finished(self) -> bool:
        return self.is_run() and self.info().status == "finished"

    def write_info(self, info: RunInfo | dict[str, Any]) -> RunInfo:
        """Validate and write run.json; `created` is stamped on first write. Returns what was written."""
        if isinstance(info, dict):
            info = _validate(RunInfo, info, self.info_path, RUN_SCHEMA)
        if info.created is None:
            info = info.model_copy(update={"created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        _dump(self.info_path, info)
        return info

    def update_info(self, changes: dict[str, Any]) -> RunInfo:
        """Change some run.json keys, keeping the others (unknown ones included)."""
        current = self.info().model_dump(mode="json", exclude_unset=True) if self.is_run() else {}
        return self.write_info({**current, **changes})

    def results(self) -> EvalResults | None:
        """eval/results.json, typed; None before the run was evaluated."""
        return _load(EvalResults, self.results_path, RESULTS_SCHEMA) if self.results_path.is_file() else None

    def write_results(self, results: EvalResults | dict[str, Any]) -> Path:
        if isinstance(results, dict):
            results = _validate(EvalResults, results, self.results_path, RESULTS_SCHEMA)
        _dump(self.results_path, results)
        return self.results_path

    def write_text(self, name: str, text: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return p

    def reset(self) -> None:
        for name in ("adapter", "model", "merged", "checkpoints", "eval"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for path in (self.info_path, self.metrics, self.path / "loss.png", self.path / "report.html"):
            path.unlink(missing_ok=True)

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint. The trainer writes trainer_state.json last, so a checkpoint
        without it, or with one cut short, was being written when the process died and is skipped."""
        if not self.checkpoints.is_dir():
            return None
        ckpts = [p for p in self.checkpoints.glob("checkpoint-*")
                 if p.name.split("-")[-1].isdigit() and _whole_json(p / "trainer_state.json")]
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
