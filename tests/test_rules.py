"""The rules contract: planted good and bad answers, exact outcomes."""

from pathlib import Path

import pytest
import yaml

from tunesmith.demo import legal
from tunesmith.rules import RulesError, compliance, load_rules, parse_json_answer, parse_rules

DEMO = parse_rules(yaml.safe_load(legal.RULES_YAML))
GOOD = f"Case reference: LF-2026-0417.\n1. Write to the landlord.\n2. Keep copies.\n{legal.DISCLAIMER}\n"


def test_demo_rules_on_planted_answers():
    prompt = "My deposit is late. My case reference is LF-2026-0417."
    assert DEMO.check_answer(GOOD, prompt) == {"disclaimer": True, "numbered_items": True, "case_reference": True,
                                               "no_invented_reference": True}
    no_disclaimer = GOOD.replace(legal.DISCLAIMER, "Kind regards.")
    assert DEMO.check_answer(no_disclaimer, prompt)["disclaimer"] is False
    one_item = f"Case reference: LF-2026-0417.\n1. Write to the landlord.\n{legal.DISCLAIMER}"
    assert DEMO.check_answer(one_item, prompt)["numbered_items"] is False
    wrong_ref = GOOD.replace("0417", "0418")
    assert DEMO.check_answer(wrong_ref, prompt)["case_reference"] is False
    assert DEMO.check_answer(wrong_ref, prompt)["no_invented_reference"] is False
    # no reference in the prompt: nothing to echo, but quoting one is an invention
    no_ref = DEMO.check_answer(wrong_ref, "My deposit is late.")
    assert no_ref["case_reference"] is True and no_ref["no_invented_reference"] is False
    asks = f"Please quote your case reference (format LF-YYYY-NNNN).\n1. a\n2. b\n{legal.DISCLAIMER}"
    assert all(DEMO.check_answer(asks, "My deposit is late.").values())


def test_compliance_rates():
    results = [
        {"a": True, "b": True},
        {"a": True, "b": False},
        {"a": False, "b": False},
        {"a": True, "b": True},
    ]
    assert compliance(results, ["a", "b"]) == {"a": 0.75, "b": 0.5, "all": 0.5}


def test_every_kind():
    rs = parse_rules({"rules": [
        {"name": "ends", "ends_with": "Bye."},
        {"name": "starts", "starts_with": "Hello", "ignore_case": True},
        {"name": "has", "contains": "refund"},
        {"name": "re", "regex": r"^\d+\. "},
        {"name": "nre", "not_regex": r"\bguarantee\b"},
        {"name": "forb", "forbidden": ["however", "sorry"]},
        {"name": "json", "valid_json": True},
        {"name": "schema", "json_schema": {"type": "object", "required": ["id"]}},
        {"name": "maxw", "max_words": 6},
        {"name": "minw", "min_words": 2},
    ]})
    r = rs.check_answer("hello there\n1. refund due\nBye.   ")
    assert r == {"ends": True, "starts": True, "has": True, "re": True, "nre": True, "forb": True,
                 "json": False, "schema": False, "maxw": True, "minw": True}
    r = rs.check_answer('```json\n{"id": 3}\n```')
    assert r["json"] is True and r["schema"] is True
    assert rs.check_answer("However, we guarantee it.")["forb"] is False
    assert rs.check_answer("Howeverish words")["forb"] is True  # whole words only
    assert rs.check_answer("However, we guarantee it.")["nre"] is False
    assert rs.check_answer("one two three four five six seven")["maxw"] is False
    assert parse_json_answer("not json") == (False, None)
    assert parse_json_answer('```JSON\n{"id": 3}\n```') == (True, {"id": 3})  # fence tag in any case


def test_scope_all_checks_every_assistant_turn():
    rs = parse_rules({"rules": [{"name": "d", "ends_with": "X.", "scope": "all"},
                                {"name": "last", "ends_with": "X."}]})
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "no"},
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "yes X."}]
    assert rs.check_conversation(msgs) == {"d": False, "last": True}


@pytest.mark.parametrize("body, fragment", [
    ({"rules": [{"name": "a"}]}, "exactly one of"),
    ({"rules": [{"name": "a", "regex": "("}]}, "invalid regex"),
    ({"rules": [{"name": "a", "contains": "x"}, {"name": "a", "contains": "y"}]}, "duplicate rule names"),
    ({"rules": [{"name": "a", "contains": "x", "colour": "red"}]}, "colour"),
    ({"nope": 1}, "'rules:' list"),
])
def test_bad_rules_are_named(tmp_path, body, fragment):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(body))
    with pytest.raises(RulesError) as e:
        load_rules(p)
    assert str(p) in str(e.value) and fragment in str(e.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "w", "forbidden": ["however", ""]}, "rule 'w': forbidden needs one or more non-empty words"),
        ({"name": "w", "forbidden": []}, "rule 'w': forbidden needs one or more non-empty words"),
        ({"name": "n", "ends_with": "  "}, "rule 'n': ends_with is empty"),
        ({"name": "m", "max_words": -1}, "rule 'm': max_words must be 0 or more, got -1"),
    ],
)
def test_rules_that_would_match_everything_are_refused(rule: dict, message: str) -> None:
    with pytest.raises(RulesError) as e:
        parse_rules({"rules": [rule]}, "r.yaml")
    assert str(e.value) == f"r.yaml: rule #1 ({rule['name']}): {message}"


def test_yaml_booleans_in_a_rule_are_explained(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load("rules:\n  - name: neg\n    forbidden: [no, never]\n")
    with pytest.raises(RulesError) as e:
        parse_rules(data, "r.yaml")
    assert str(e.value) == ("r.yaml: rule #1 (neg): forbidden.0: Input should be a valid string "
                            "(YAML read it as False: put the text in quotes)")


def test_rule_named_all_and_absurdly_nested_json_answers():
    import pytest

    from tunesmith.rules import RulesError, parse_json_answer, parse_rules

    with pytest.raises(RulesError, match="cannot be named 'all'"):
        parse_rules({"rules": [{"name": "all", "contains": "x"}]}, "r.yaml")
    assert parse_json_answer("[" * 5000 + "]" * 5000) == (False, None)
    assert parse_json_answer('{"a": "x\u2028y"}') == (True, {"a": "x\u2028y"})
