"""Every page in a real browser at desktop and phone width: fits, stays local, says the right thing."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect
from typer.testing import CliRunner

from tests.ui.conftest import screenshot
from tunesmith.cli import app as cli_app

PAGES = {
    "runs": "/runs",
    "run": "/runs/legal-good",
    "eval": "/runs/legal-bad/eval",
    "registry": "/registry",
    "data": "/runs/legal-good/data",
    "plan": "/plan?asked=1&task=classification&examples=3000&daily_volume=20000",
    "playground": "/playground",
    "files": "/runs/legal-good/files/adapter",
    "error": "/runs/nope",
}


@pytest.mark.parametrize("width", [1280, 420])
@pytest.mark.parametrize("name", list(PAGES))
def test_page_fits_has_no_errors_and_stays_local(server, open_page, name, width):
    w = open_page(width)
    w.page.goto(server + PAGES[name])
    w.page.wait_for_load_state("networkidle")
    scroll, inner = w.page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert scroll <= inner, f"{name} at {width}px overflows: {scroll} > {inner}"
    # the error page is a 404 on purpose; the browser logs that status, nothing else may be logged
    errors = [e for e in w.errors if not (name == "error" and "404" in e)]
    assert errors == []
    assert w.requests and all(urlparse(u).hostname == "127.0.0.1" for u in w.requests), w.requests
    if name != "playground":  # its screenshot shows streamed answers (test_playground)
        screenshot(w.page, f"{name}-{width}")
    if name == "eval" and os.environ.get("TUNESMITH_UI_SCREENSHOTS"):
        w.page.goto(server + PAGES[name] + "?rule=disclaimer#examples")
        screenshot(w.page, f"eval-examples-{width}")


def test_verdict_banner_explains_itself(server, open_page):
    w = open_page()
    w.page.goto(server + "/runs/legal-bad/eval")
    banner = w.page.locator("#verdict").inner_text()
    assert banner.startswith("DO NOT PROMOTE — compliance")
    # world.py plants the forgetting: every arithmetic item (80 of the suite's 434) lost
    assert "but general ability −18.4 points overall, arithmetic −100.0 points: 80 lost / 0 gained of 434" in banner
    w.page.goto(server + "/runs/legal-good/eval")
    assert w.page.locator("#verdict").inner_text().startswith("PROMOTE — compliance 0.92 tuned vs 0.50 prompted")
    rows = w.page.locator("#checks tbody tr")
    assert rows.count() >= 2 and "✓ pass" in rows.first.inner_text()


def test_filters_change_the_visible_examples(server, open_page):
    w = open_page()
    w.page.goto(server + "/runs/legal-bad/eval")
    assert w.page.locator("article.example").count() == 12
    w.page.select_option("select[name=rule]", "disclaimer")
    w.page.wait_for_url("**rule=disclaimer**")
    # base never ends with the disclaimer, so every example has a failing system for it
    assert w.page.locator("article.example").count() == 12
    w.page.select_option("select[name=system]", "prompted")
    w.page.wait_for_url("**system=prompted**")
    # prompted adds the disclaimer on odd examples only: half fail it, and only prompted's column shows
    assert w.page.locator("article.example").count() == 6
    assert w.page.locator("article.example .col").count() == 6
    assert "6 of 12 examples match" in w.page.locator("#example-count").inner_text()
    w.page.goto(server + "/runs/legal-bad/eval?q=tort")
    assert w.page.locator("article.example").count() == 3
    long_one = w.page.goto(server + "/runs/legal-bad/eval?system=tuned&sort=length")
    assert long_one.ok
    first = w.page.locator("article.example").first
    assert first.get_attribute("data-id") == "4"
    assert "✂ cut off at max tokens" in first.inner_text() and first.locator("details").count() >= 1
    assert "✗ short" in first.inner_text()
    # the run's forbidden-words rule says where base broke it: the word is marked in base's answer
    w.page.goto(server + "/runs/legal-bad/eval?rule=no_promises&system=base")
    marks = w.page.locator("article.example .col mark")
    assert marks.count() == 12 and {m.inner_text() for m in marks.all()} == {"guarantee"}


def _cli_alias(world) -> list[str]:
    out = CliRunner().invoke(cli_app, ["registry", "show", "legal@prod", "--json", "--registry", str(world.registry)])
    assert out.exit_code == 0, out.output
    return [t["version"] for t in json.loads(out.stdout)["targets"]]


def test_promote_refuses_failed_gate_then_forced_promote_and_rollback(server, open_page, world):
    assert _cli_alias(world) == [world.passed_version]
    w = open_page()
    w.page.goto(server + "/registry")
    row = w.page.locator("#versions tr", has_text=world.failed_version)
    assert "✗ do not promote" in row.inner_text()
    row.get_by_role("button", name="Promote…").click()
    w.page.wait_for_url("**/registry/promote")
    assert w.page.locator("#verdict").inner_text().startswith("DO NOT PROMOTE")
    w.page.get_by_role("button", name=f"Yes, point legal@prod at {world.failed_version}").click()
    assert "failed its promotion gate" in w.page.locator("main").inner_text()
    assert _cli_alias(world) == [world.passed_version]  # refused: nothing changed

    w.page.go_back()
    w.page.check("input[name=force]")
    w.page.get_by_role("button", name=f"Yes, point legal@prod at {world.failed_version}").click()
    w.page.wait_for_url("**/registry?done=**")
    assert f"legal@prod now points at {world.failed_version}" in w.page.locator("main").inner_text()
    assert _cli_alias(world) == [world.failed_version]

    w.page.get_by_role("button", name="Roll back legal@prod").click()
    w.page.wait_for_url("**/registry?done=**")
    assert _cli_alias(world) == [world.passed_version]
    history = CliRunner().invoke(cli_app, ["registry", "show", "legal@prod", "--json", "--registry",
                                           str(world.registry)])
    assert [h["action"] for h in json.loads(history.stdout)["history"]][-2:] == ["set", "rollback"]


def test_live_curves_follow_metrics_jsonl(server, open_page, world):
    w = open_page()
    w.page.goto(server + "/runs/legal-live")
    note = w.page.locator("#curves-note")
    assert note.inner_text().startswith("3 logged rows")
    before = w.page.locator("#curves-body").inner_html()
    with (world.runs / "legal-live" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 7, "loss": 0.42, "learning_rate": 1e-4, "grad_norm": 0.9}) + "\n")
    appended = time.monotonic()
    # a locator assertion, not wait_for_function: the app's CSP forbids evaluating strings
    expect(note).to_contain_text("4 logged rows", timeout=2500)
    assert time.monotonic() - appended < 2.0
    after = w.page.locator("#curves-body").inner_html()
    assert after != before and ">0.42<" in after  # the new last loss is labelled on the chart
    assert w.errors == []


def test_data_page_counts_add_up_and_search_filters_records(server, open_page):
    w = open_page()
    w.page.goto(server + "/runs/legal-good/data")
    assert "17 read = 16 kept + 1 rejected; 1 exact and 1 near duplicates; 1 rule violation." in \
        w.page.locator("#data-verdict").inner_text()
    assert "train.jsonl:8" in w.page.locator("#invalid").inner_text()
    dups = w.page.locator("#duplicates").inner_text()
    assert "val val.jsonl:1 duplicates train train.jsonl:3" in dups and "✗ crosses splits" in dups
    assert w.page.locator("#duplicates ins").first.text_content().strip() == "April,"  # collapsed: not rendered text
    assert "train.jsonl:6" in w.page.locator("#rules").inner_text()
    assert "limit: not checked (no max_seq_len)" in w.page.locator("#lengths").inner_text()
    assert w.page.locator("details.record").count() == 16
    w.page.fill("input[name=q]", "landlord")
    w.page.get_by_role("button", name="Search").click()
    w.page.wait_for_url("**q=landlord**")
    assert w.page.locator("details.record").count() == 2
    assert w.page.locator("#record-count").inner_text().startswith("2 records contain")


def test_breakeven_updates_when_an_input_moves(server, open_page):
    w = open_page()
    w.page.goto(server + "/plan")
    verdict = w.page.locator("#breakeven-verdict")
    assert "≈ 5.8 days at 2,000/day" in verdict.inner_text()
    w.page.fill("#requests_per_day-n", "4000")
    expect(verdict).to_contain_text("≈ 2.9 days at 4,000/day")  # same requests, twice the traffic
    assert w.page.locator("input[name=requests_per_day]").input_value() == "4000"
    w.page.fill("#ft_price_in-n", "100")
    expect(verdict).to_contain_text("NEVER PAYS BACK")
    assert w.errors == []
