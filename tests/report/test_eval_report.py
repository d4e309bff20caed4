"""report.html: the web app's Eval page body as one file, rendering what is present and only that."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunesmith.evaluate import metrics
from tunesmith.evaluate.gate import decide
from tunesmith.evaluate.regression import compare_regression, load_suite, score_regression
from tunesmith.report.eval_report import render_eval_report
from tunesmith.ui.evalpage import collapsed_confusion
from html import escape as esc, unescape
from tunesmith.rules import parse_rules

RULES = parse_rules({"rules": [{"name": "disclaimer", "ends_with": "Not legal advice."}, {"name": "short", "max_words": 8}]})
PROMPTS = ["Can I break my lease?", "Is a verbal contract binding?", "What is <b>tort</b>?"]
OUTPUTS = {
    "base": ["Maybe.", "Sometimes, it depends on a lot of things really.", "A civil wrong."],
    "prompted": ["Maybe. Not legal advice.", "It depends. Not legal advice.", "A civil wrong."],
    "tuned": ["Check the lease terms. Not legal advice.", "Often yes. Not legal advice.", "A civil wrong. Not legal advice."],
}


def compliance_results() -> dict:
    systems = {}
    passes = {}
    for name, outs in OUTPUTS.items():
        systems[name] = {"metrics": {"n": 3}, "compliance": metrics.compliance(outs, PROMPTS, RULES)}
        passes[name] = metrics.compliance_checks(outs, PROMPTS, RULES)
    examples = [
        {
            "id": i,
            "prompt": p,
            "reference": None,
            "outputs": {s: OUTPUTS[s][i] for s in OUTPUTS},
            "passes": {s: passes[s][i] for s in OUTPUTS},
        }
        for i, p in enumerate(PROMPTS)
    ]
    # base answers "x" and knows the facts; tuned answers "42" and forgot them
    suite = load_suite()
    base = score_regression({it["id"]: it["answer"] if it["kind"] == "choice" else "x" for it in suite})
    tuned = score_regression({it["id"]: next(c for c in it["choices"] if c != it["answer"]) if it["kind"] == "choice"
                              else "42" for it in suite})
    reg = compare_regression(base, tuned)
    gate = decide("compliance", {n: {"compliance": s["compliance"]} for n, s in systems.items()}, reg)
    return {
        "task": "compliance",
        "title": "Legal bot: eval",
        "systems": systems,
        "examples": examples,
        "regression": reg,
        "gate": gate,
        "loss_curve": [
            {"step": 1, "loss": 2.5},
            {"step": 2, "loss": 2.0, "eval_loss": None},
            {"step": 2, "eval_loss": 2.2},
            {"step": 4, "loss": 1.2},
            {"step": 4, "eval_loss": 1.6},
        ],
    }


def section(html: str, ident: str) -> str:
    """The markup of the element with this id, up to the end of its section."""
    rest = html[html.index(f'id="{ident}"'):]
    return rest[: rest.index("</section>")]


def rows(html: str) -> list[list[str]]:
    """Each body row's cells as text (tags dropped)."""
    body = html[html.index("<tbody>"): html.index("</tbody>")]
    return [[unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_compliance_report_is_one_file_decision_first(tmp_path: Path) -> None:
    out = render_eval_report(compliance_results(), tmp_path / "sub" / "eval.html")
    html = out.read_text(encoding="utf-8")
    # self-contained: nothing to fetch, the app's stylesheet and script inlined, charts as SVG
    # and no link that only works inside the app: the rule names jump to the examples, in the page
    assert not re.search(r"<link|<img|<script[^>]*\bsrc=|https?://|href=\"(?!#)", html)
    assert "<style>" in html and "--okbg" in html and "every_selection" in html
    assert len(re.findall(r'<svg class="chart"', html)) == 4  # metrics, rules, loss, general ability
    for ident in ("verdict", "gate", "metrics", "rules", "loss", "regression", "examples"):
        assert f'id="{ident}"' in html
    for absent in ("per-class", "confusion", "fields", "judge"):
        assert f'id="{absent}"' not in html
    # decision first: the verdict sentence, then one row per gate check with value, threshold, n and result
    assert html.index('id="verdict"') < html.index('id="gate"') < html.index('id="metrics"')
    assert ('<p class="verdict">DO NOT PROMOTE — compliance 1.00 tuned vs 0.67 prompted, but general ability '
            "−38.0 points overall, facts −100.0 points: 166 lost / 1 gained of 434</p>") in html
    assert rows(section(html, "gate")) == [
        ["compliance: tuned − prompted", "+0.333", "> 0.000", "3", "✓ pass"],
        ["general ability: arithmetic", "+1.2 points", "≥ −15.0 points", "80", "✓ pass"],
        ["general ability: facts", "−100.0 points", "≥ −15.0 points", "154", "✗ fail"],
        ["general ability: format", "+0.0 points", "≥ −15.0 points", "80", "✓ pass"],
        # 12 lost of 120: within 15 points as observed, but the interval reaches past it
        ["general ability: instructions", "−10.0 points", "≥ −15.0 points", "120", "? inconclusive"],
        ["general ability: overall", "−38.0 points", "≥ −5.0 points", "434", "✗ fail"],
    ]
    # tuned passes every rule on 3/3, prompted on 2/3, base on none
    assert rows(section(html, "rules"))[-1] == ["all rules", "0.0%", "66.7%", "100.0%"]
    assert "final train loss 1.2000; final validation loss 1.6000" in section(html, "loss")
    # the regression items lost and gained, the lost ones collapsed under one summary
    reg = section(html, "regression")
    assert "<b>166 lost</b>" in reg and '<h3 id="gained">1 gained</h3>' in reg
    gained = [c for c in compliance_results()["regression"]["changed"] if c["change"] == "gained"]
    assert esc(gained[0]["prompt"]) in reg
    # prompts and outputs are escaped, never injected
    assert "&lt;b&gt;tort&lt;/b&gt;" in html and "<b>tort</b>" not in html
    examples = section(html, "examples")
    assert examples.count("<article") == 3 and examples.count('class="col"') == 9
    assert '<span class="res bad">✗ short</span>' in examples and examples.count("✓ disclaimer") == 5


def test_report_filters_are_the_ui_selection_precomputed(tmp_path: Path) -> None:
    html = render_eval_report(compliance_results(), tmp_path / "r.html").read_text(encoding="utf-8")
    raw = html[html.index('id="example-selections">') + len('id="example-selections">'):]
    picks = json.loads(raw[: raw.index("</script>")])
    assert len(picks) == 4 * 3 * 2 * 3  # (all + 3 systems) x (any + 2 rules) x differ x 3 sorts
    assert picks["||0|id"] == [0, 1, 2]
    assert picks["|short|0|id"] == [1]  # only base's 9-word answer breaks "short"
    assert picks["prompted|disclaimer|0|id"] == [2] and picks["tuned|disclaimer|0|id"] == []
    assert picks["||0|failures"] == [1, 2, 0]  # 2, 2 and 1 failed checks; ties keep id order


def test_classification_report_renders_only_present_parts(tmp_path: Path) -> None:
    refs = ["bug", "bug", "billing", "feature"]
    systems = {
        "base": metrics.classification(["billing", "bug", "billing", "other"], refs),
        "tuned": metrics.classification(["bug", "bug", "billing", "feature"], refs),
    }
    html = render_eval_report({"task": "classification", "systems": systems}, tmp_path / "c.html").read_text()
    for ident in ("metrics", "per-class", "confusion"):
        assert f'id="{ident}"' in html
    for absent in ("rules", "loss", "regression", "gate", "examples", "checks"):
        assert f'id="{absent}"' not in html
    assert "NO GATE — this evaluation ran without a promotion gate" in section(html, "verdict")
    assert rows(section(html, "metrics"))[0] == ["Accuracy", "0.500", "1.000"]
    assert ["other", "0", "0.000", "–"] in rows(section(html, "per-class"))  # base's invented label is a class
    tuned = section(html, "confusion").split("<h3>tuned</h3>")[1]
    assert rows(tuned) == [["billing", "1", "0", "0"], ["bug", "0", "2", "0"],
                           ["feature", "0", "0", "1"]]


def test_report_shows_judge_scores_and_names_the_empty_answer_class(tmp_path):
    from tunesmith.evaluate.metrics import classification

    scores = {s: {"metrics": classification(p, ["a", "b", "a"])} for s, p in
              {"base": ["", "b", "<i>x</i>"], "tuned": ["a", "b", "a"]}.items()}
    results = {"task": "classification", "systems": scores,
               "judge": {"base": {"n": 3, "scored": 2, "unparseable": 1, "mean_score": 3.5},
                         "tuned": {"n": 3, "scored": 0, "unparseable": 3, "mean_score": None}}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert rows(section(html, "judge")) == [["base", "3.50", "2", "1", "3"], ["tuned", "–", "0", "3", "3"]]
    per_class = section(html, "per-class")
    assert ["(empty answer)", "0", "0.000", "–"] in rows(per_class) and "<td></td>" not in per_class
    assert "&lt;i&gt;x&lt;/i&gt;" in per_class and "<i>x</i>" not in html


def test_prose_answers_are_summed_up_not_one_class_each_in_the_report(tmp_path):
    from tunesmith.evaluate.metrics import classification

    refs = ["billing", "tech", "other"] * 4
    base = [f"I believe this ticket is about topic number {i}, probably" for i in range(12)]
    base[0], base[1] = "billing", ""
    tuned = refs[:2] + ["billing"] + refs[3:]
    metrics = {"base": classification(base, refs), "tuned": classification(tuned, refs)}
    labels, cols, matrix = collapsed_confusion(metrics["base"]["confusion"])
    assert labels == ["billing", "other", "tech"]
    assert cols == ["billing", "other", "tech", "other answers (11)"]
    assert matrix == [[1, 0, 0, 3], [0, 0, 0, 4], [0, 0, 0, 4]]
    assert collapsed_confusion(metrics["tuned"]["confusion"])[2] == [[4, 0, 0], [1, 3, 0], [0, 0, 4]]

    results = {"task": "classification", "systems": {s: {"metrics": m} for s, m in metrics.items()}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    per_class = section(html, "per-class")
    # billing: base 1 right of 1 predicted, 4 true -> F1 2*(1*0.25)/1.25 = 0.4; tuned 4 of 5 predicted -> 8/9
    assert rows(per_class) == [["billing", "4", "0.400", "0.889"], ["other", "4", "0.000", "0.857"],
                               ["tech", "4", "0.000", "1.000"],
                               ["other answers (11 labels no reference has)", "0", "0.000", "–"]]
    assert "distinct ones per system: base 11, tuned 0." in per_class
    # the chart draws the real classes only, each bar labelled with its value
    chart = per_class[per_class.index("<svg"):]
    assert chart.count("<rect") == 2 + 3 * 2 and ">0.889</text>" in chart and "other answers" not in chart


def test_a_pretrained_base_that_never_stops_gets_one_note_at_the_top(tmp_path):
    from tunesmith.report.eval_report import render_eval_report

    results = {"task": "compliance", "model": "gemma3-270m", "base_model_kind": "pretrained",
               "systems": {"base": {"metrics": {"compliance": {"all": 0.0}}}},
               "stops": {"base": {"n": 3, "ran_to_limit": 3, "limit": 8}}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count('id="model-notes"') == 1
    assert ('<p class="banner warn" id="model-notes">note: gemma3-270m is a pretrained base model: its baselines '
            'never stop (3/3 ran to the 8-token limit)</p>') in html
    results["base_model_kind"] = "instruct"
    results["stops"]["base"]["ran_to_limit"] = 1
    assert 'id="model-notes"' not in render_eval_report(results, tmp_path / "r2.html").read_text(encoding="utf-8")
