"""What the numbers cannot show: answers that never stopped (counted exactly at generation), a pretrained base
model said in one sentence, and a regression suite the base model mostly fails (a caveat on the gate's verdict,
which it never changes)."""

from __future__ import annotations

import pytest

from tunesmith.evaluate.gate import LITTLE_TO_LOSE, decide
from tunesmith.evaluate.notes import eval_notes
from tunesmith.evaluate.regression import compare_regression, load_suite, score_regression
from tunesmith.report.verdict import verdict
from tunesmith.rundir import EvalResults


def test_generate_counted_marks_exactly_the_answers_that_hit_a_stop_token(tiny_model_dir):
    import torch

    from tunesmith.evaluate.generate import generate, generate_counted
    from tunesmith.models import load_model, load_tokenizer, stop_token_ids

    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, "float32")
    torch.manual_seed(0)
    with torch.no_grad():  # the tiny model repeats one token whatever it is asked: random weights answer variously
        for w in model.parameters():
            w.normal_(0, 1.0)
    convs = [[{"role": "user", "content": q}] for q in
             ("What is a lease?", "Is a verbal contract binding?", "Name a colour.", "What is 2 + 2?", "Hello")]
    limit = 6
    answers = []  # each greedy answer's tokens, generated one by one without any stop token
    for c in convs:
        ids = tok.apply_chat_template(c, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=limit, min_new_tokens=limit, do_sample=False)
        answers.append([int(t) for t in out[0, ids["input_ids"].shape[1]:]])
    # plant a stop: a token of the first answer that another answer lacks now ends an answer; old stop ids stay
    planted = next(t for t in answers[0] if any(t not in a for a in answers[1:]))
    stops = set(stop_token_ids(tok, model.generation_config)) | {planted}
    want = [any(t in stops for t in a) for a in answers]
    assert want[0] and not all(want), (answers, stops)  # the fixture plants both cases
    model.generation_config.eos_token_id = [planted]
    texts, _, ended = generate_counted(model, tok, convs, max_new_tokens=limit, batch_size=1, show_progress=False)
    assert ended == want
    assert generate(model, tok, convs, max_new_tokens=limit, batch_size=1, show_progress=False) == texts


def _results(kind, base_hits, prompted_hits, n=24, suite_base=None, limit=150):
    results = {"task": "compliance", "model": "gemma3-270m", "base_model_kind": kind,
               "stops": {"base": {"n": n, "ran_to_limit": base_hits, "limit": limit},
                         "prompted": {"n": n, "ran_to_limit": prompted_hits, "limit": limit},
                         "tuned": {"n": n, "ran_to_limit": 1, "limit": limit}}}
    if suite_base is not None:
        results["regression"] = suite_base
    return EvalResults.model_validate(results)


def _suite(base_passing: int, tuned_passing: int):
    """Base and tuned suite results where the first `base_passing` / `tuned_passing` items pass."""
    items = load_suite()
    right = {it["id"]: it["answer"] if it["kind"] == "choice" else it["reference"] for it in items}
    wrong = {it["id"]: next(c for c in it["choices"] if c != it["answer"]) if it["kind"] == "choice" else ""
             for it in items}

    def answers(k):
        return {it["id"]: (right if i < k else wrong)[it["id"]] for i, it in enumerate(items)}

    return compare_regression(score_regression(answers(base_passing)), score_regression(answers(tuned_passing)))


def test_pretrained_base_that_never_stops_is_said_with_exact_counts():
    notes = eval_notes(_results("pretrained", 24, 24))
    assert notes == ["gemma3-270m is a pretrained base model: its baselines never stop (48/48 ran to the 150-token "
                     "limit; tuned: 1/24)"]
    assert eval_notes(_results("pretrained", 24, 10)) == [
        "gemma3-270m is a pretrained base model: its baselines rarely stop (34/48 ran to the 150-token limit; "
        "tuned: 1/24)"]
    assert eval_notes(_results("instruct", 2, 0)) == []  # an instruct model that stops has nothing to say
    # an instruct model whose baselines never stop is still said, without calling it pretrained
    assert eval_notes(_results("instruct", 24, 24))[0].startswith("the baselines never stop (48/48")
    # results written before endings were kept: no counts to say, the kind still is
    old = EvalResults.model_validate({"task": "compliance", "model": "/m/base.gguf", "base_model_kind": "pretrained"})
    assert eval_notes(old) == ["base.gguf is a pretrained base model, not instruction-tuned"]
    assert eval_notes(EvalResults.model_validate({"task": "compliance"})) == []


def test_a_suite_the_base_mostly_fails_gets_a_caveat_that_leaves_the_verdict_alone():
    n = len(load_suite())
    low = int(n * 0.12)
    reg = _suite(low, low)  # nothing lost: the suite's verdict is a PASS, on almost nothing
    assert reg["overall"]["base"] < LITTLE_TO_LOSE and reg["verdict"] == "PASS"
    systems = {"prompted": {"compliance": {"all": 0.0}}, "tuned": {"compliance": {"all": 1.0}}}
    gate = decide("compliance", systems, reg)
    assert gate["verdict"] == "PASS" and len(gate["caveats"]) == 1
    assert gate["caveats"][0].startswith(f"the regression suite has little to lose: the base model passes "
                                         f"{reg['overall']['base']:.0%} of it (")
    assert gate["reasons"][-1] == "caveat: " + gate["caveats"][0]
    sentence = verdict(gate, reg).sentence
    assert sentence.startswith("PROMOTE — ") and sentence.endswith(" — but " + gate["caveats"][0])
    notes = eval_notes(_results("pretrained", 24, 24, suite_base=reg))
    assert notes[1] == f"the regression suite has little to lose (base passes {reg['overall']['base']:.0%} of it)"

    fair = _suite(int(n * 0.6), int(n * 0.6))  # a base that passes 60% had something to lose: no caveat
    gate = decide("compliance", systems, fair)
    assert gate["caveats"] == [] and not any(r.startswith("caveat") for r in gate["reasons"])
    assert " — but " not in verdict(gate, fair).sentence
    assert eval_notes(_results("instruct", 0, 0, suite_base=fair)) == []


@pytest.mark.parametrize("kind", ["instruct", "pretrained", None])
def test_results_carry_the_base_model_kind_and_old_files_still_load(kind, tmp_path):
    from tunesmith.rundir import RunDir, RunDirError

    run = RunDir(tmp_path)
    run.write_results({"task": "compliance", "base_model_kind": kind,
                       "stops": {"base": {"n": 3, "ran_to_limit": 3, "limit": 8}}})
    got = run.results()
    assert got.base_model_kind == kind and got.stops["base"].ran_to_limit == 3
    run.results_path.write_text('{"task": "compliance"}')  # written before either existed
    assert run.results().base_model_kind is None and run.results().stops == {}
    run.results_path.write_text('{"task": "compliance", "base_model_kind": "chat"}')
    with pytest.raises(RunDirError, match="base_model_kind"):
        run.results()


def test_busy_cores_sees_a_spinning_thread_now_not_the_last_minute():
    """The quickstart picks torch threads from the cores others use right now (/proc/stat), not from the
    one-minute load average, which keeps an idle machine on one thread after a busy spell."""
    import os
    import threading

    from tunesmith.evaluate.generate import busy_cores

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        seen = busy_cores(0.5)
    finally:
        stop.set()
        t.join()
    assert 0.5 <= seen <= (os.cpu_count() or 1)
