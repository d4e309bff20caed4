"""The pieces under the pages: charts, word diff, spans, filters, the results cache."""

from __future__ import annotations

import re

from tunesmith.ui.charts import bar_chart, line_chart, nice_ticks, tick_labels
from tunesmith.ui.examples import Filters, highlight, select, word_diff


def test_a_zero_bar_is_a_visible_hairline_with_its_label():
    svg = bar_chart([("disclaimer", {"base": 0.0, "tuned": 0.9})], "pass rate", hi=1.0, percent=True)
    widths = [float(w) for w in re.findall(r'<rect x="190" y="\d+" width="([\d.]+)"', svg)]
    assert widths[0] >= 1.5 and widths[1] > 250  # 0.9 of the 308 px plot
    assert ">0.0%</text>" in svg and ">90.0%</text>" in svg


def test_ticks_are_round_cover_the_data_and_share_one_format():
    assert nice_ticks(0.3, 0.8) == [0.2, 0.4, 0.6, 0.8]
    assert tick_labels(nice_ticks(0.0005, 0.002)) == ["5.0e-04", "1.0e-03", "1.5e-03", "2.0e-03"]
    assert tick_labels([0, 1000, 2000]) == ["0", "1,000", "2,000"]


def test_line_chart_labels_each_last_value_apart():
    svg = line_chart({"train loss": [(1, 2.0), (10, 1.43)], "val loss": [(10, 1.42)]}, "loss")
    ys = [float(y) for y in re.findall(r'y="([\d.]+)" fill="[^"]+" class="val"', svg)]
    assert len(ys) == 2 and abs(ys[0] - ys[1]) >= 13  # two nearly equal end values do not overprint
    assert "no values logged yet" in line_chart({"x": []}, "loss")
    # a run that logged one loss: its axis is centred on it (6.25 +- 10%), not pinned at the bottom
    one = line_chart({"train": [(1, 6.25)]}, "loss")
    assert re.findall(r'text-anchor="end">([^<]+)<', one) == ["5.5", "6.0", "6.5", "7.0"]


def test_word_diff_marks_changed_words_and_gives_up_on_unrelated_text():
    ref = "Usually yes, check clause 3. Not legal advice."
    assert word_diff("Usually yes, check clause 4. Not legal advice.", ref) == \
        "Usually yes, check clause <del>3.</del> <ins>4. </ins>Not legal advice."
    assert word_diff("Something else entirely <b>", ref) is None
    assert "&lt;b&gt;" in word_diff("Usually yes, check clause 3. <b> Not legal advice.", ref)


def test_highlight_wraps_spans_and_escapes_the_rest():
    assert highlight("a <guarantee> b", [[2, 13]]) == "a <mark>&lt;guarantee&gt;</mark> b"
    assert highlight("abc", [[5, 9], "junk"]) == "abc"  # spans outside the text are ignored


def test_filters_ignore_unknown_values_and_select_pages():
    f = Filters.parse({"system": "nope", "rule": "r", "sort": "x", "page": "-2", "differ": "1"}, ["a"], ["r"])
    assert (f.system, f.rule, f.sort, f.page, f.differ) == ("", "r", "id", 1, True)
    examples = [{"id": i, "outputs": {"a": "x", "b": "x" if i % 2 else "y"},
                 "passes": {"a": {"r": i != 5}, "b": {"r": True}}} for i in range(120)]
    page, total = select(examples, Filters(rule="r"))
    assert total == 1 and page[0]["id"] == 5
    assert select(examples, Filters(rule="r", system="b"))[1] == 0
    # differ: the 60 even ids (other text) and 5 (same text, other rule result); page 2 starts at the 51st
    page, total = select(examples, Filters(differ=True, page=2))
    assert total == 61 and len(page) == 11 and [e["id"] for e in page][:2] == [98, 100]


def test_spans_point_at_what_broke_a_match_rule():
    from tunesmith.rules import parse_rules
    from tunesmith.ui.spans import violation_spans

    rules = parse_rules({"rules": [{"name": "no_promises", "forbidden": ["guarantee", "100%"]},
                                   {"name": "no_urls", "not_regex": "https?://\\S+"},
                                   {"name": "ids", "grounded": "C-\\d+"}, {"name": "short", "max_words": 2}]})
    answer = "I guarantee case C-12 (see http://x.y) and C-7, 100% sure."
    got = violation_spans(rules, answer, "about case C-7", ["no_promises", "no_urls", "ids", "short"])
    assert {k: [answer[a:b] for a, b in v] for k, v in got.items()} == {
        "no_promises": ["guarantee", "100%"], "no_urls": ["http://x.y)"], "ids": ["C-12"]}
