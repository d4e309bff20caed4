"""The eval HTML report renders what is present, and only that."""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.evaluate import metrics
from tunesmith.evaluate.gate import decide
from tunesmith.evaluate.regression import compare_regression, load_suite, score_regression
from tunesmith.report.eval_report import render_eval_report
from tunesmith.report.html import esc, page, table
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


def test_compliance_report_with_loss_curve_and_gate(tmp_path: Path) -> None:
    out = render_eval_report(compliance_results(), tmp_path / "sub" / "eval.html")
    html = out.read_text(encoding="utf-8")
    for title in ("Promotion gate", "Metrics", "Format compliance", "Training loss", "Regression suite", "Where the systems differ"):
        assert f"<h2>{title}</h2>" in html
    for title in ("Per-class F1", "Confusion matrices", "Field accuracy"):
        assert title not in html
    for system in ("base", "prompted", "tuned"):
        assert f"{system}</th>" in html
    # tuned passes all rules on 3/3, prompted on 2/3: compliance table shows both
    assert "1.000" in html and "0.667" in html
    assert "final train loss 1.2000; final validation loss 1.6000" in html
    # prompts and outputs are escaped, never injected
    assert "&lt;b&gt;tort&lt;/b&gt;" in html and "<b>tort</b>" not in html
    # every example differs between systems here, so all three are shown
    assert "3 of 3 test examples" in html
    # "42" answers the arithmetic items whose result is 42 where "x" did not: listed as gained, both answers shown
    results = compliance_results()
    gained = [c for c in results["regression"]["changed"] if c["change"] == "gained"]
    assert gained and esc(gained[0]["prompt"]) in html and "gained" in html
    # metrics chart, compliance chart, loss curve
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)) == 3
    # every fact forgotten: the gate refuses and says by how much
    facts = results["regression"]["by_category"]["facts"]
    assert "do not promote" in html and f"regression facts dropped {facts['drop'] * 100:.1f} points" in html
    # decision first: the verdict sentence opens the report, then one row per gate check
    banner = html[html.index('id="verdict">') + len('id="verdict">'):]
    assert banner.startswith("DO NOT PROMOTE — compliance 1.00 tuned vs 0.67 prompted, but general ability")
    assert html.index('id="verdict"') < html.index("<h2>Metrics</h2>")


def test_classification_report_renders_only_present_parts(tmp_path: Path) -> None:
    refs = ["bug", "bug", "billing", "feature"]
    systems = {
        "base": metrics.classification(["billing", "bug", "billing", "other"], refs),
        "tuned": metrics.classification(["bug", "bug", "billing", "feature"], refs),
    }
    html = render_eval_report({"task": "classification", "systems": systems}, tmp_path / "c.html").read_text()
    for title in ("Metrics", "Per-class F1", "Confusion matrices"):
        assert f"<h2>{title}</h2>" in html
    for absent in ("Format compliance", "Training loss", "Regression suite", "Promotion gate", "Where the systems differ"):
        assert absent not in html
    assert '<td class="num best">1.000</td>' in html  # tuned's perfect accuracy is the best in its row
    assert "other" in html  # the invented label appears as a class


def test_report_shows_judge_scores_and_names_the_empty_answer_class(tmp_path):
    from tunesmith.evaluate.metrics import classification

    scores = {s: {"metrics": classification(p, ["a", "b", "a"])} for s, p in
              {"base": ["", "b", "<i>x</i>"], "tuned": ["a", "b", "a"]}.items()}
    results = {"task": "classification", "systems": scores,
               "judge": {"base": {"n": 3, "scored": 2, "unparseable": 1, "mean_score": 3.5},
                         "tuned": {"n": 3, "scored": 0, "unparseable": 3, "mean_score": None}}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    judge = html[html.index('id="judge"'):]
    judge = judge[: judge.index("</section>")]
    cells = [c for c in judge.split("<td") if c.startswith(' class="num">')]
    assert [c.split(">")[1].split("<")[0] for c in cells] == ["3.50", "2", "1", "3", "–", "0", "3", "3"]
    per_class = html[html.index('id="per-class"'):]
    assert "<td>(empty answer)</td>" in per_class and "<td></td>" not in per_class
    assert "&lt;i&gt;x&lt;/i&gt;" in per_class and "<i>x</i>" not in html


def test_prose_answers_are_summed_up_not_one_class_each_in_the_report(tmp_path):
    from tunesmith.evaluate.metrics import classification
    from tunesmith.report.eval_report import _collapsed_confusion

    refs = ["billing", "tech", "other"] * 4
    base = [f"I believe this ticket is about topic number {i}, probably" for i in range(12)]
    base[0], base[1] = "billing", ""
    tuned = refs[:2] + ["billing"] + refs[3:]
    metrics = {"base": classification(base, refs), "tuned": classification(tuned, refs)}
    rows, cols, matrix = _collapsed_confusion(metrics["base"]["confusion"])
    assert rows == ["billing", "other", "tech"]
    assert cols == ["billing", "other", "tech", "other answers (11)"]
    assert matrix == [[1, 0, 0, 3], [0, 0, 0, 4], [0, 0, 0, 4]]
    assert _collapsed_confusion(metrics["tuned"]["confusion"])[2] == [[4, 0, 0], [1, 3, 0], [0, 0, 4]]

    results = {"task": "classification", "systems": {s: {"metrics": m} for s, m in metrics.items()}}
    html = render_eval_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    per_class = html[html.index('id="per-class"'):]
    per_class = per_class[: per_class.index("</section>")]
    body = per_class[per_class.index("<tbody>"):]
    row_labels = [cell.split("</td>")[0] for cell in body.split("<tr><td>")[1:]]
    assert row_labels == ["billing", "other", "tech", "other answers (11 labels no reference has)"]
    assert "distinct ones per system: base 11, tuned 0." in per_class
    # billing: base 1 right of 1 predicted, 4 true -> F1 2*(1*0.25)/1.25 = 0.4; tuned 4 of 5 predicted -> 8/9
    assert '<td>billing</td><td class="num">4</td><td class="num">0.400</td><td class="num">0.889</td>' in body


def test_html_helpers_escape() -> None:
    assert esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    doc = page("T & Co", table(["h"], [[esc("<x>")], [("1", "best")]], numeric=[True]))
    assert "<title>T &amp; Co</title>" in doc and "&lt;x&gt;" in doc and '<td class="num best">1</td>' in doc


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
