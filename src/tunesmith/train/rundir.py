"""The run directory: the unit of work (see README "Run directory")."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


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
