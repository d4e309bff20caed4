"""Which run directories the web app may show, and the only way a URL reaches a file.

A URL never names a path: it names a run id this catalog handed out, then a file the catalog
listed inside that run. Anything else is "not found", so `..`, encoded slashes, absolute paths and
symlinks pointing out of a run cannot reach another file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunesmith.rundir import RUN_FILE, RunDir

# Run dirs sit directly in a --runs folder (runs/<name>/run.json) or one level deeper
# (project/runs/<name>/run.json); deeper trees are other projects' business.
_MAX_DEPTH = 2
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class NotFound(LookupError):
    """A run id or file name the catalog never handed out; the message says which."""


@dataclass(frozen=True)
class RunRef:
    id: str
    path: Path

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.path)


def _inside(path: Path, root: Path) -> bool:
    """True when `path`, with every symlink resolved, is `root` or below it."""
    try:
        path.resolve(strict=True).relative_to(root.resolve(strict=True))
    except (OSError, ValueError):
        return False
    return True


def _linked(path: Path, root: Path) -> bool:
    """True when `path` or any folder between `root` and it is a symlink: a run is where it is, not a link."""
    p = path
    while p != root and p != p.parent:
        if p.is_symlink():
            return True
        p = p.parent
    return False


class Catalog:
    def __init__(self, roots: list[Path]):
        self.roots = [Path(r).expanduser() for r in roots]

    def runs(self) -> list[RunRef]:
        """Every run dir under the roots, found afresh on each call so a run started later shows up."""
        found: list[RunRef] = []
        taken: set[str] = set()
        for root in self.roots:
            for run_json in sorted(self._run_jsons(root)):
                run = run_json.parent
                if not _inside(run, root) or _linked(run_json, root):
                    continue
                base = _SAFE.sub("-", run.name).strip("-") or "run"
                rid, k = base, 2
                while rid in taken:  # two roots may each hold a run of the same name
                    rid, k = f"{base}-{k}", k + 1
                taken.add(rid)
                found.append(RunRef(rid, run))
        return found

    @staticmethod
    def _run_jsons(root: Path) -> list[Path]:
        if RunDir(root).is_run():
            return [RunDir(root).info_path]
        out = []
        for depth in range(1, _MAX_DEPTH + 1):
            out += [p for p in root.glob("/".join(["*"] * depth) + "/" + RUN_FILE) if p.is_file()]
        return out

    def run(self, rid: str) -> RunRef:
        for ref in self.runs():
            if ref.id == rid:
                return ref
        raise NotFound(f"no run {rid!r} under {', '.join(str(r) for r in self.roots)}")

    def files(self, ref: RunRef, folder: str) -> list[Path]:
        """Regular files directly in `folder` ("adapter", "eval", …) of a run, symlinks left out."""
        if folder not in ("adapter", "eval"):
            raise NotFound(f"run {ref.id} has no listable folder {folder!r}")
        where = ref.path / folder
        if not where.is_dir() or where.is_symlink() or not _inside(where, ref.path):
            return []
        return sorted(p for p in where.iterdir() if p.is_file() and not p.is_symlink())

    def file(self, ref: RunRef, folder: str, name: str) -> Path:
        for p in self.files(ref, folder):
            if p.name == name:
                return p
        raise NotFound(f"run {ref.id} has no file {folder}/{name}")
