"""The serving request log and the data flywheel built on it.

Every answered (or rule-rejected) request is one row: which name was asked for, which version
answered, latency, token counts, per-rule results, and later a user's flag or correction.
`export_records` turns those rows back into training records: a correction becomes the new
assistant answer; a failing answer without one is exported as-is so `tunesmith data check`
points at it for a human to fix.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    endpoint TEXT NOT NULL,
    requested TEXT NOT NULL,
    version TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    finish_reason TEXT,
    status TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    rules TEXT,
    rules_passed INTEGER,
    flagged INTEGER NOT NULL DEFAULT 0,
    correction TEXT
);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created);
"""


class RequestLog:
    """One SQLite file; a lock serialises this process's writers, WAL lets a CLI export read meanwhile."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)

    def write(self, **row: Any) -> None:
        row = {**row, "request": json.dumps(row["request"]),
               "rules": json.dumps(row["rules"]) if row.get("rules") is not None else None,
               "created": row.get("created", time.time())}
        cols = ", ".join(row)
        with self._lock:
            self._db.execute(f"INSERT INTO requests ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def flag(self, request_id: str, flagged: bool, correction: str | None) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE requests SET flagged = ?, correction = COALESCE(?, correction) WHERE id = ?",
                (int(flagged), correction, request_id),
            )
        return cur.rowcount == 1

    def rows(self, failed_only: bool = False, version: str | None = None) -> Iterator[dict[str, Any]]:
        sql = "SELECT * FROM requests WHERE endpoint = 'chat'"
        args: list[Any] = []
        if failed_only:
            sql += " AND (rules_passed = 0 OR flagged = 1)"
        if version:  # a version id, or the alias clients asked for (every version it sent traffic to)
            sql += " AND (version = ? OR requested = ?)"
            args += [version, version]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created", args).fetchall()
        for r in rows:
            d = dict(r)
            d["request"] = json.loads(d["request"])
            d["rules"] = json.loads(d["rules"]) if d["rules"] else None
            yield d

    def close(self) -> None:
        self._db.close()


def to_record(row: dict[str, Any]) -> dict[str, Any]:
    """A canonical conversation record for the next training set, with where it came from under `meta`."""
    answer = row["correction"] if row["correction"] is not None else row["response"]
    failed = sorted(k for k, ok in (row["rules"] or {}).items() if not ok)
    return {
        "messages": row["request"]["messages"] + [{"role": "assistant", "content": answer}],
        "meta": {
            "source": "serving",
            "request_id": row["id"],
            "version": row["version"],
            "flagged": bool(row["flagged"]),
            "corrected": row["correction"] is not None,
            "failed_rules": failed,
        },
    }


def export_records(log_path: str | Path, out: str | Path, failed_only: bool = False,
                   version: str | None = None) -> dict[str, int]:
    """Write JSONL records; returns counts (records, corrected, still needing a human, skipped)."""
    log = RequestLog(log_path)
    counts = {"records": 0, "corrected": 0, "needs_correction": 0, "skipped_no_user_turn": 0}
    out_path = Path(out).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with out_path.open("w", encoding="utf-8") as f:
            for row in log.rows(failed_only=failed_only, version=version):
                # The API takes conversations without a user turn; as training data they are invalid.
                if not any(m.get("role") == "user" for m in row["request"]["messages"]):
                    counts["skipped_no_user_turn"] += 1
                    continue
                rec = to_record(row)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts["records"] += 1
                if rec["meta"]["corrected"]:
                    counts["corrected"] += 1
                elif rec["meta"]["failed_rules"] or rec["meta"]["flagged"]:
                    counts["needs_correction"] += 1
    finally:
        log.close()
    return counts
