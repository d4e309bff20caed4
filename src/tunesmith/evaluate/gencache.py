"""Answers of the base model shared between the runs that evaluate against it.

Every run trained from one base model compares itself with the same `base` and `prompted` answers to
the same test split, and with the same base answers to the regression suite: a sweep of ten runs would
otherwise generate them ten times. The run's own eval/generations/ stays the record of what it was
scored on; a base-model cache file found in the shared store is copied there, and one generated here
is copied to the store. The key names the base model by its folder and the size and modification time
of each weight file, so weights rewritten in place are never mistaken for the old ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# the answers, and the token counts kept beside them (runner._local_tokens)
_SIBLINGS = (".json", ".tokens.json")


def store() -> Path:
    from tunesmith.models import cache_dir

    return cache_dir() / "generations"


def base_identity(model_dir: str | Path) -> list:
    """What names a base model's weights in a cache key: its folder and its weight files' size and mtime."""
    folder = Path(model_dir)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return [str(folder.resolve() if folder.exists() else model_dir)] + [
        [f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _pair(cache: Path, where: Path) -> list[tuple[Path, Path]]:
    stem = cache.name[: -len(".json")]
    return [(cache.parent / (stem + s), where / (stem + s)) for s in _SIBLINGS]


def fetch(cache: Path) -> bool:
    """Copy a base-model cache file (and its token counts) from the shared store into the run; True when found."""
    if cache.is_file():
        return True
    pairs = _pair(cache, store())
    if not pairs[0][1].is_file():
        return False
    for local, shared in pairs:
        if shared.is_file():
            shutil.copyfile(shared, local)
    return True


def share(cache: Path) -> None:
    """Copy a base-model cache file the run just wrote (and its token counts) into the shared store."""
    where = store()
    where.mkdir(parents=True, exist_ok=True)
    for local, shared in _pair(cache, where):
        if local.is_file():
            tmp = shared.with_suffix(".tmp")
            shutil.copyfile(local, tmp)
            tmp.replace(shared)  # another eval reading the store never sees half a file
