"""Flywheel export: only conversations `tunesmith data check` accepts as chat records leave the log."""

from __future__ import annotations

import json

from tunesmith.deploy.flywheel import RequestLog, export_records


def _row(rid: str, messages: list[dict], response: str, passed: int) -> dict:
    return {"id": rid, "endpoint": "chat", "requested": "legal@prod", "version": "legal-v1-20261122",
            "request": {"messages": messages}, "response": response, "finish_reason": "stop", "status": "ok",
            "latency_ms": 1.0, "prompt_tokens": 3, "completion_tokens": 2, "rules": {"polite": bool(passed)},
            "rules_passed": passed}


def test_export_skips_conversations_without_a_user_turn(tmp_path):
    log = RequestLog(tmp_path / "requests.db")
    log.write(**_row("a", [{"role": "user", "content": "hi"}], "hello", 0))
    log.write(**_row("b", [{"role": "assistant", "content": "x"}], "y", 0))
    log.write(**_row("c", [{"role": "system", "content": "be brief"}], "ok", 0))
    log.write(**_row("d", [{"role": "user", "content": "thanks"}], "you're welcome", 1))
    log.close()
    out = tmp_path / "next.jsonl"
    counts = export_records(tmp_path / "requests.db", out, failed_only=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["request_id"] for r in records] == ["a"]
    assert counts == {"records": 1, "corrected": 0, "needs_correction": 1, "skipped_no_user_turn": 2}
