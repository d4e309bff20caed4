"""The adapter registry: named versions, aliases with traffic splits, lineage and history.

One SQLite file, embedded. Every write runs inside `BEGIN IMMEDIATE`, so two processes adding
versions at the same moment get distinct version numbers instead of a race; WAL mode lets the
server read while the CLI writes.

Location (first that applies): the `--registry PATH` option, the TUNESMITH_REGISTRY environment
variable, `~/.cache/tunesmith/registry.db` (under TUNESMITH_CACHE when that is set). A per-user
cache location is the default because one machine usually serves one user's versions and the
registry must outlive any one project directory.

Adapters are copied into a store next to the database (`registry.db` -> `registry-store/<version>/`),
so deleting or re-running the training run never breaks a registered version.

Versions are named `<name>-v<N>-<YYYYMMDD>`; aliases are `<name>@<label>` (e.g. `legal@prod`) and
point at one version or split traffic across several by weight. Each alias change is appended to
a history; `rollback` follows the history back to the target the current one replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from tunesmith.rundir import RunDir, RunDirError
from tunesmith.models import cache_dir
from tunesmith.rules import RulesError, load_rules
from tunesmith.errors import UserError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}@[a-z0-9][a-z0-9_.-]{0,63}$")
GUARD_MODES = ("off", "report", "retry", "reject")
# Only these files travel into the store: safetensors weights, configs and tokenizer files.
_STORE_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    created TEXT NOT NULL,
    base_model TEXT NOT NULL,
    store TEXT NOT NULL,
    lineage TEXT NOT NULL,
    UNIQUE (name, number)
);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    targets TEXT NOT NULL,
    guard TEXT NOT NULL DEFAULT 'off',
    rules TEXT,
    head INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retired (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alias_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    targets TEXT NOT NULL,
    action TEXT NOT NULL,
    at TEXT NOT NULL,
    replaced INTEGER
);
"""


class RegistryError(UserError):
    """A registry operation that cannot be done; the message says which name and why."""


@dataclass(frozen=True)
class Version:
    id: str
    name: str
    number: int
    created: str
    base_model: str
    store: Path
    lineage: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.store

    @property
    def rules_yaml(self) -> str | None:
        return self.lineage.get("rules_yaml")

    @property
    def peft_type(self) -> str | None:
        """LORA, PROMPT_TUNING, PREFIX_TUNING…, as the stored adapter_config.json says."""
        path = self.store / "adapter_config.json"
        return json.loads(path.read_text(encoding="utf-8")).get("peft_type") if path.is_file() else None

    def check_mergeable(self) -> None:
        """Only weight adapters merge: prompt and prefix tuning add virtual tokens, which are inputs, not weights."""
        if self.peft_type not in (None, "LORA"):
            raise RegistryError(f"version {self.id}: a {self.peft_type.lower()} adapter adds virtual tokens, not "
                                "weights, so it cannot be merged into the model or exported; serve it with "
                                "`tunesmith serve`")

    def missing_files(self) -> list[str]:
        return [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (self.store / f).is_file()]

    def check_files(self) -> None:
        """Refuse clearly when the stored adapter or the base model was deleted behind the registry's back."""
        if not (Path(self.base_model) / "config.json").is_file():
            raise RegistryError(f"version {self.id}: its base model {self.base_model} is gone (moved or deleted); "
                                "put it back there to use this version")
        missing = self.missing_files()
        if missing:
            raise RegistryError(f"version {self.id}: {', '.join(missing)} missing from its store {self.store} "
                                f"(deleted?); remove it with `tunesmith registry remove {self.id}` and register "
                                "the run again")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "number": self.number,
            "created": self.created,
            "base_model": self.base_model,
            "store": str(self.store),
            "lineage": self.lineage,
        }


@dataclass(frozen=True)
class Alias:
    alias: str
    targets: list[tuple[str, float]]  # (version id, traffic weight); weights sum to 1
    guard: str
    rules_yaml: str | None
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "targets": [{"version": v, "weight": w} for v, w in self.targets],
            "guard": self.guard,
            "rules": self.rules_yaml,
            "history": self.history,
        }


def default_path() -> Path:
    env = os.environ.get("TUNESMITH_REGISTRY")
    return Path(env).expanduser() if env else cache_dir() / "registry.db"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Registry:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.store_root = self.path.with_name(self.path.stem + "-store")
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- versions -------------------------------------------------------------------------

    def add(self, run_dir: str | Path, name: str, today: datetime | None = None) -> Version:
        """Register the adapter of a finished run as the next version of `name`."""
        if not NAME_RE.match(name):
            raise RegistryError(f"name {name!r}: use lowercase letters, digits, '-' or '_', starting with a letter "
                                "or digit (max 64)")
        run = Path(run_dir).expanduser().resolve()
        lineage = read_lineage(run)
        adapter = run / "adapter"
        self.store_root.mkdir(parents=True, exist_ok=True)
        staging = self.store_root / f".incoming-{uuid.uuid4().hex}"
        # Copying happens outside the write lock: it may take seconds for a big adapter.
        staging.mkdir()
        try:
            for f in sorted(adapter.iterdir()):
                if f.is_file() and f.name.endswith(_STORE_SUFFIXES):
                    shutil.copy2(f, staging / f.name)
            stamp = (today or _now()).strftime("%Y%m%d")
            with self._write() as db:
                # Numbers of removed versions are never given out again: alias history and the request log
                # still name them, and a rollback must not land on a different adapter under an old id.
                row = db.execute("SELECT MAX(n) FROM (SELECT number AS n FROM versions WHERE name = ? "
                                 "UNION ALL SELECT number FROM retired WHERE name = ?)", (name, name)).fetchone()
                number = (row[0] or 0) + 1
                vid = f"{name}-v{number}-{stamp}"
                store = self.store_root / vid
                if store.exists():  # a leftover of a version removed earlier under the same id
                    shutil.rmtree(store)
                staging.rename(store)
                db.execute(
                    "INSERT INTO versions (id, name, number, created, base_model, store, lineage) VALUES (?,?,?,?,?,?,?)",
                    (vid, name, number, _now().isoformat(timespec="seconds"), lineage["base_model"], str(store),
                     json.dumps(lineage)),
                )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.version(vid)

    def versions(self, name: str | None = None) -> list[Version]:
        with self._connect() as db:
            if name:
                rows = db.execute("SELECT * FROM versions WHERE name = ? ORDER BY number", (name,)).fetchall()
            else:
                rows = db.execute("SELECT * FROM versions ORDER BY name, number").fetchall()
        return [_version(r) for r in rows]

    def find_version(self, vid: str) -> Version | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM versions WHERE id = ?", (vid,)).fetchone()
        return _version(row) if row else None

    def version(self, vid: str) -> Version:
        v = self.find_version(vid)
        if v is None:
            raise RegistryError(f"no version {vid!r} in {self.path} (see: tunesmith registry list)")
        return v

    def remove(self, vid: str) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM versions WHERE id = ?", (vid,)).fetchone() is None:
                raise RegistryError(f"no version {vid!r} in {self.path}")
            users = [
                r["alias"]
                for r in db.execute("SELECT alias, targets FROM aliases").fetchall()
                if any(v == vid for v, _ in json.loads(r["targets"]))
            ]
            if users:
                raise RegistryError(f"version {vid!r} is still served by alias {', '.join(users)}; move the alias first")
            gone = db.execute("SELECT store, name, number FROM versions WHERE id = ?", (vid,)).fetchone()
            store = gone["store"]
            db.execute("INSERT OR REPLACE INTO retired (id, name, number) VALUES (?,?,?)",
                       (vid, gone["name"], gone["number"]))
            db.execute("DELETE FROM versions WHERE id = ?", (vid,))
        shutil.rmtree(store, ignore_errors=True)

    # ---- aliases --------------------------------------------------------------------------

    def set_alias(
        self,
        alias: str,
        version: str,
        split: dict[str, float] | None = None,
        guard: str | None = None,
        rules_yaml: str | None = None,
    ) -> Alias:
        """Point `alias` at `version`, optionally sending fractions of traffic to other versions."""
        if not ALIAS_RE.match(alias):
            raise RegistryError(f"alias {alias!r}: expected NAME@LABEL, e.g. legal@prod")
        if guard is not None and guard not in GUARD_MODES:
            raise RegistryError(f"guard {guard!r}: expected one of {', '.join(GUARD_MODES)}")
        split = dict(split or {})
        if version in split:
            raise RegistryError(f"{version!r} is both the main target and a split target")
        if any(not 0 < w < 1 for w in split.values()) or sum(split.values()) >= 1:
            raise RegistryError("split weights must each be in (0, 1) and leave a positive share for the main version")
        targets = [(version, round(1 - sum(split.values()), 6))] + sorted(split.items())
        with self._write() as db:
            for v, _ in targets:
                if db.execute("SELECT 1 FROM versions WHERE id = ?", (v,)).fetchone() is None:
                    raise RegistryError(f"no version {v!r} in {self.path} (see: tunesmith registry list)")
            current = db.execute("SELECT * FROM aliases WHERE alias = ?", (alias,)).fetchone()
            seq = _append_history(db, alias, targets, "set", current["head"] if current else None)
            if current is None:
                db.execute(
                    "INSERT INTO aliases (alias, targets, guard, rules, head) VALUES (?,?,?,?,?)",
                    (alias, json.dumps(targets), guard or "off", rules_yaml, seq),
                )
            else:
                db.execute(
                    "UPDATE aliases SET targets = ?, guard = ?, rules = ?, head = ? WHERE alias = ?",
                    (json.dumps(targets), guard or current["guard"],
                     rules_yaml if rules_yaml is not None else current["rules"], seq, alias),
                )
        return self.alias(alias)

    def rollback(self, alias: str) -> Alias:
        """Point `alias` back at the target its current one replaced; repeated calls walk further back."""
        with self._write() as db:
            current = db.execute("SELECT * FROM aliases WHERE alias = ?", (alias,)).fetchone()
            if current is None:
                raise RegistryError(f"no alias {alias!r} in {self.path}")
            head = db.execute("SELECT * FROM alias_history WHERE seq = ?", (current["head"],)).fetchone()
            if head["replaced"] is None:
                raise RegistryError(f"alias {alias!r} has no earlier target to roll back to")
            previous = db.execute("SELECT * FROM alias_history WHERE seq = ?", (head["replaced"],)).fetchone()
            targets = json.loads(previous["targets"])
            missing = [v for v, _ in targets if db.execute("SELECT 1 FROM versions WHERE id = ?", (v,)).fetchone() is None]
            if missing:
                raise RegistryError(f"cannot roll back {alias!r}: version {', '.join(missing)} was removed")
            seq = _append_history(db, alias, targets, "rollback", previous["replaced"])
            db.execute("UPDATE aliases SET targets = ?, head = ? WHERE alias = ?", (json.dumps(targets), seq, alias))
        return self.alias(alias)

    def find_alias(self, alias: str) -> Alias | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM aliases WHERE alias = ?", (alias,)).fetchone()
            if row is None:
                return None
            hist = db.execute(
                "SELECT seq, targets, action, at FROM alias_history WHERE alias = ? ORDER BY seq", (alias,)
            ).fetchall()
        return Alias(
            alias=row["alias"],
            targets=[(v, w) for v, w in json.loads(row["targets"])],
            guard=row["guard"],
            rules_yaml=row["rules"],
            history=[
                {"seq": h["seq"], "targets": json.loads(h["targets"]), "action": h["action"], "at": h["at"]}
                for h in hist
            ],
        )

    def alias(self, alias: str) -> Alias:
        a = self.find_alias(alias)
        if a is None:
            raise RegistryError(f"no alias {alias!r} in {self.path}")
        return a

    def aliases(self) -> list[Alias]:
        with self._connect() as db:
            names = [r[0] for r in db.execute("SELECT alias FROM aliases ORDER BY alias").fetchall()]
        return [a for a in (self.find_alias(n) for n in names) if a is not None]


def _append_history(db: sqlite3.Connection, alias: str, targets: list, action: str, replaced: int | None) -> int:
    cur = db.execute(
        "INSERT INTO alias_history (alias, targets, action, at, replaced) VALUES (?,?,?,?,?)",
        (alias, json.dumps(targets), action, _now().isoformat(timespec="seconds"), replaced),
    )
    return int(cur.lastrowid)


def _version(row: sqlite3.Row) -> Version:
    return Version(
        id=row["id"],
        name=row["name"],
        number=row["number"],
        created=row["created"],
        base_model=row["base_model"],
        store=Path(row["store"]),
        lineage=json.loads(row["lineage"]),
    )


def read_lineage(run: Path) -> dict[str, Any]:
    """What a version records about where it came from: run.json, eval/results.json and the rules text."""
    run_dir = RunDir(run)
    if not run_dir.is_run():
        raise RegistryError(f"{run}: not a run directory (no run.json)")
    run_json = run_dir.info_path
    try:
        info = run_dir.info()
    except RunDirError as e:
        raise RegistryError(str(e)) from None
    if info.status != "finished":
        raise RegistryError(f"{run_json}: run status is {info.status!r}; only finished runs can be registered")
    if info.method == "full" or (run / "model").is_dir() and not run_dir.adapter.is_dir():
        raise RegistryError(f"{run}: a full fine-tune (model/) is served as its own model, not as a registry adapter: "
                            f"tunesmith serve --base {run}")
    adapter = run_dir.adapter
    if not (adapter / "adapter_config.json").is_file():
        raise RegistryError(f"{adapter}: no adapter_config.json (expected PEFT save_pretrained output)")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise RegistryError(f"{adapter}: no adapter_model.safetensors (tunesmith loads safetensors only)")
    if not info.base_model:
        raise RegistryError(f"{run_json}: no base_model recorded")
    evaluation = None
    try:
        results = run_dir.results()
    except RunDirError as e:  # an unreadable evaluation is recorded as such; the run itself is still usable
        evaluation = {"error": str(e)}
    else:
        if results is not None:
            tuned = results.systems.get("tuned")
            # as written, however the eval stage types it
            gate = results.model_dump(mode="json", include={"gate"}, exclude_unset=True).get("gate")
            evaluation = {"metrics": tuned.metrics if tuned else None, "gate": gate}
    rules_yaml = None
    if info.rules:
        rules_path = Path(info.rules)
        rules_path = rules_path if rules_path.is_absolute() else run / rules_path
        if rules_path.is_file():
            try:
                rules_yaml = load_rules(rules_path).to_yaml()
            except RulesError as e:
                raise RegistryError(f"{run_json}: its rules file is unusable: {e}") from None
    adapter_cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    return {
        "run": str(run),
        "run_name": info.name,
        "method": info.method,
        "objective": info.objective,
        "base_model": info.base_model,
        "model_spec": info.model_spec,
        "data_sha256": {name: split.sha256 for name, split in info.data.splits().items()},
        "system_prompt": info.system_prompt,
        "rules": info.rules,
        "rules_yaml": rules_yaml,
        "lora_rank": adapter_cfg.get("r"),
        "train_seconds": info.train_seconds,
        "final_train_loss": info.final_train_loss,
        "final_eval_loss": info.final_eval_loss,
        "trained": info.created,
        "eval": evaluation,
        "gate": (evaluation or {}).get("gate"),
    }
