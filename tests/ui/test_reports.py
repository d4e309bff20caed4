"""report.html and the data report, opened from disk in a real browser at desktop and phone width:
they fit, fetch nothing, say the verdict first, and the example filters work offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.ui.world import RULES
from tunesmith.cli import app as cli_app
from tunesmith.report.eval_report import render_eval_report
from tunesmith.rundir import RunDir

# the world's rules plus one whose broken word can be marked: the long answer says "damage" (train and val)
DATA_RULES = RULES + "  - name: no_damage\n    forbidden: [damage]\n"


@dataclass
class Reports:
    eval: Path
    data: Path


@pytest.fixture(scope="module")
def reports(world, tmp_path_factory) -> Reports:
    out = tmp_path_factory.mktemp("reports")
    bad = RunDir(world.runs / "legal-bad")
    # where `tunesmith eval` writes it: the run's rules.yaml is found and the words breaking a rule are marked
    eval_html = render_eval_report(bad.results(), bad.path / "report.html")
    rules = out / "data-rules.yaml"
    rules.write_text(DATA_RULES, encoding="utf-8")
    data = world.runs / "legal-good" / "data"
    res = CliRunner().invoke(cli_app, ["data", "report", str(data / "train.jsonl"), str(data / "val.jsonl"),
                                       "--rules", str(rules), "-o", str(out / "data.html")])
    assert res.exit_code == 0, res.output
    return Reports(eval_html, out / "data.html")


def _open(open_page, path: Path, width: int):
    w = open_page(width)
    w.page.goto(path.as_uri())
    w.page.wait_for_load_state("load")
    return w


@pytest.mark.parametrize("width", [1280, 420])
@pytest.mark.parametrize("name", ["eval", "data"])
def test_report_fits_has_no_errors_and_fetches_nothing(reports, open_page, name, width):
    path = getattr(reports, name)
    w = _open(open_page, path, width)
    scroll, inner = w.page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert scroll <= inner, f"{name} report at {width}px overflows: {scroll} > {inner}"
    assert w.errors == []
    assert w.requests == [path.as_uri()]  # the file itself and not one request more
    assert w.page.locator("a[href]:not([href^='#'])").count() == 0  # no link that needs the app
    banner = w.page.locator("#verdict" if name == "eval" else "#data-verdict").inner_text()
    if name == "eval":  # world.py plants the forgetting: every arithmetic item (80 of the suite's 434) lost
        assert banner == ("DO NOT PROMOTE — compliance 0.92 tuned vs 0.50 prompted, but general ability −18.4 "
                          "points overall, arithmetic −100.0 points: 80 lost / 0 gained of 434")
        assert w.page.locator("#checks tbody tr").count() == 6
        assert w.page.locator("#checks tbody tr").nth(1).inner_text().split("\t") == \
            ["general ability: arithmetic", "−100.0 points", "≥ −15.0 points", "80", "✗ fail"]
    else:
        assert banner == ("✗ 4 errors — 17 read = 16 kept + 1 rejected; 1 exact and 1 near duplicates; "
                          "3 rule violations.")


def _visible(w) -> list[str]:
    return [a.get_attribute("data-id") for a in w.page.locator("article.example:visible").all()]


def test_report_filters_change_the_visible_examples_offline(reports, open_page):
    w = _open(open_page, reports.eval, 1280)
    assert len(_visible(w)) == 12
    w.page.select_option("select[name=rule]", "disclaimer")
    assert len(_visible(w)) == 12  # base never ends with the disclaimer
    w.page.select_option("select[name=system]", "prompted")
    # prompted adds the disclaimer on odd examples only: half fail it, and only prompted's column shows
    assert _visible(w) == ["1", "3", "5", "7", "9", "11"]
    assert w.page.locator("article.example .col:visible").count() == 6
    assert w.page.locator("#example-count").inner_text().startswith("6 of 12 examples match")
    w.page.check("input[name=differ]")
    assert len(_visible(w)) == 6  # every example's systems differ
    w.page.get_by_role("button", name="Reset").click()
    assert len(_visible(w)) == 12 and w.page.locator("article.example .col:visible").count() == 36
    w.page.select_option("select[name=system]", "tuned")
    w.page.select_option("select[name=sort]", "length")
    first = w.page.locator("article.example:visible").first
    assert first.get_attribute("data-id") == "4"
    assert "✂ cut off at max tokens" in first.inner_text() and first.locator("details").count() >= 1
    assert "✗ short" in first.inner_text()
    # the run's forbidden-words rule says where base broke it: the word is marked in base's answer
    w.page.get_by_role("button", name="Reset").click()
    w.page.locator("#rules a[data-rule=no_promises]").click()
    w.page.select_option("select[name=system]", "base")
    marks = w.page.locator("article.example .col:visible mark")
    assert marks.count() == 12 and {m.inner_text() for m in marks.all()} == {"guarantee"}
    w.page.select_option("select[name=system]", "tuned")
    assert _visible(w) == [] and w.page.locator("#no-examples").is_visible()
    assert w.errors == []


def test_data_report_shows_where_and_why(reports, open_page):
    w = _open(open_page, reports.data, 420)
    assert "train.jsonl:8" in w.page.locator("#invalid").inner_text()
    files = w.page.locator("#files tbody tr")
    assert [files.nth(i).inner_text().split("\t")[:4] for i in range(3)] == \
        [["train", "train.jsonl", "13", "1"], ["val", "val.jsonl", "3", "0"], ["total", "", "16", "1"]]
    dups = w.page.locator("#duplicates").inner_text()
    assert "val val.jsonl:1 duplicates train train.jsonl:3" in dups and "✗ crosses splits" in dups
    assert w.page.locator("#duplicates ins").first.text_content().strip() == "April,"
    rules = w.page.locator("#rules")
    assert "✗ disclaimer: 1 record" in rules.inner_text() and "✗ no_damage: 2 records" in rules.inner_text()
    assert [m.text_content() for m in rules.locator("details mark").all()] == ["damage", "damage"]
    assert "limit: not checked (no max_seq_len)" in w.page.locator("#lengths").inner_text()
    assert w.page.locator("details.record").count() == 16 and w.page.locator("#records form").count() == 0
