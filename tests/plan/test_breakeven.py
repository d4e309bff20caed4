"""Break-even: the worked example from the docs must reproduce exactly."""

import json

import pytest
from typer.testing import CliRunner

from tunesmith.plan import breakeven as be
from tunesmith.plan.breakeven import breakeven, per_request_cost
from tunesmith.plan.cli import app
from tests.helpers import one_line as _text

runner = CliRunner()
WORKED = ["breakeven", "--overhead-tokens", "2300", "--price-in", "5", "--training-cost", "50", "--requests-per-day", "1000"]


def test_worked_example_numbers():
    prompt = per_request_cost(2300, 5.0)
    assert prompt == pytest.approx(0.0115, abs=1e-15)
    r = breakeven(prompt, 0.00015, 50.0, 1000)
    assert r.saving_per_request == pytest.approx(0.01135, abs=1e-15)
    assert r.breakeven_requests == pytest.approx(50 / 0.01135, rel=1e-12)
    assert round(r.breakeven_requests) == 4405
    assert r.breakeven_days == pytest.approx(4.405286, abs=1e-6)
    assert not r.never_breaks_even


@pytest.mark.parametrize("ft_args", [["--ft-cost-per-request", "0.00015"], ["--ft-prompt-tokens", "30"], ["--ft-prompt-tokens", "15", "--ft-price-in", "10"]])
def test_cli_json_worked_example(ft_args):
    res = runner.invoke(app, WORKED + ft_args + ["--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for key in ("prompt_cost_per_request", "ft_cost_per_request", "saving_per_request", "breakeven_requests", "breakeven_days"):
        assert key in d
    assert d["prompt_cost_per_request"] == pytest.approx(0.0115)
    assert d["ft_cost_per_request"] == pytest.approx(0.00015)
    assert d["breakeven_requests"] == pytest.approx(4405.29, abs=0.01)
    assert d["breakeven_days"] == pytest.approx(4.41, abs=0.01)


def test_cli_table_shows_requests_and_days():
    res = runner.invoke(app, WORKED + ["--ft-cost-per-request", "0.00015"])
    assert res.exit_code == 0
    assert "4,405" in res.stdout and "4.4 days" in res.stdout


def test_never_breaks_even():
    r = breakeven(per_request_cost(10, 5.0), 0.001, 50.0, 1000)
    assert r.never_breaks_even and r.breakeven_requests is None and r.breakeven_days is None
    assert r.saving_per_request < 0
    res = runner.invoke(app, ["breakeven", "--overhead-tokens", "10", "--price-in", "5", "--ft-cost-per-request", "0.001", "--training-cost", "50", "--json"])
    d = json.loads(res.stdout)
    assert d["never_breaks_even"] is True and d["breakeven_requests"] is None
    res = runner.invoke(app, ["breakeven", "--overhead-tokens", "10", "--price-in", "5", "--ft-cost-per-request", "0.001", "--training-cost", "50"])
    assert "never" in res.stdout


def test_equal_costs_never_break_even():
    assert breakeven(0.01, 0.01, 1.0).never_breaks_even


def test_plot_is_written(tmp_path):
    png = tmp_path / "be.png"
    res = runner.invoke(app, WORKED + ["--ft-cost-per-request", "0.00015", "--plot", str(png), "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_free_training_breaks_even_at_zero_and_plot_does_not_say_never(tmp_path, monkeypatch):
    import matplotlib.axes

    titles: list[str] = []
    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, *a, **k: (titles.append(t), real(self, t, *a, **k))[1])
    result = be.breakeven(0.01, 0.0, 0.0, requests_per_day=10)
    assert result.breakeven_requests == 0.0 and not result.never_breaks_even
    be.plot_cumulative(result, tmp_path / "free.png")
    assert (tmp_path / "free.png").stat().st_size > 0
    assert not any("never" in t for t in titles)


def test_breakeven_with_no_or_negative_saving_never_pays_back():
    for ft in ("0.01", "0.02"):  # 2000 tokens x $5/M = $0.01 per request
        res = runner.invoke(app, ["breakeven", "--overhead-tokens", "2000", "--price-in", "5",
                                  "--ft-cost-per-request", ft, "--training-cost", "50", "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["never_breaks_even"] is True and out["breakeven_requests"] is None


@pytest.mark.parametrize("args", [
    ["breakeven", "--overhead-tokens", "100", "--price-in", "inf", "--ft-prompt-tokens", "0", "--training-cost", "5"],
    ["breakeven", "--overhead-tokens", "100", "--price-in", "5", "--ft-prompt-tokens", "0", "--training-cost", "inf"],
    ["advise", "--price-in", "inf", "--task", "chat"],
])
def test_infinite_prices_are_refused_not_printed_as_invalid_json(args):
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 2
    assert res.stdout == "" and "finite number" in _text(res)


def test_fractional_requests_per_day_are_shown_as_given():
    # 100 tokens x $5/M = $0.0005 saved per request; $50 / $0.0005 = 100,000 requests = 200,000 days at 0.5/day
    res = runner.invoke(app, ["breakeven", "--overhead-tokens", "100", "--price-in", "5", "--ft-prompt-tokens", "0",
                              "--training-cost", "50", "--requests-per-day", "0.5"])
    assert res.exit_code == 0, res.output
    assert "100,000" in res.output and "200,000.0 days at 0.5 requests/day" in _text(res)


_BE = ["breakeven", "--overhead-tokens", "2300", "--price-in", "5", "--ft-cost-per-request", "0.00015",
       "--training-cost", "50"]


def test_plot_path_reported_is_the_file_written(tmp_path):
    res = runner.invoke(app, [*_BE, "--plot", str(tmp_path / "chart"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["plot"] == str(tmp_path / "chart.png") and (tmp_path / "chart.png").stat().st_size > 0
    # 2300 x $5/M = $0.0115; saving $0.01135; $50 / $0.01135 = 4405.3 requests
    assert round(out["breakeven_requests"], 1) == 4405.3


@pytest.mark.parametrize("name, message", [("", "is a directory"), ("chart.txt", "use one of .png")])
def test_unusable_plot_paths_exit_2(tmp_path, name, message):
    res = runner.invoke(app, [*_BE, "--plot", str(tmp_path / name) if name else str(tmp_path)])
    assert res.exit_code == 2 and message in _text(res)
    assert not list(tmp_path.iterdir()) and not tmp_path.with_suffix(".png").exists()


@pytest.mark.parametrize(
    "extra",
    [
        [],  # neither ft cost nor ft tokens
        ["--ft-cost-per-request", "0.001", "--ft-prompt-tokens", "3"],
        ["--ft-cost-per-request", "0.001", "--ft-price-in", "3"],
    ],
)
def test_unusable_arguments_exit_2(extra):
    res = runner.invoke(app, ["breakeven", "--overhead-tokens", "10", "--price-in", "5", "--training-cost", "50", *extra])
    assert res.exit_code == 2
    assert "Traceback" not in res.output


# --- --from-eval: the tokens an evaluation measured --------------------------------------------------------

def _planted(tmp_path, systems: dict) -> str:
    """A run directory whose eval/results.json holds `systems` (metrics and usage as `tunesmith eval` writes them)."""
    from tunesmith.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.write_info({"name": "run", "status": "finished"})
    run.write_results({"task": "generation", "systems": systems})
    return str(run.path)


def _usage(prompt: float, completion: float, requests: int = 24, source: str = "api") -> dict:
    return {"requests": requests, "prompt_tokens": round(prompt * requests), "completion_tokens": round(completion * requests),
            "mean_prompt_tokens": prompt, "mean_completion_tokens": completion, "source": source}


MEASURED = {
    "prompted": {"metrics": {"n": 24}, "usage": _usage(900, 10, source="tokenizer")},
    "tuned": {"metrics": {"n": 24}, "usage": _usage(40, 10, source="tokenizer")},
    "hosted": {"metrics": {"n": 24}, "usage": _usage(1200, 10, requests=21),
               "endpoint": {"url": "http://127.0.0.1:9/v1", "model": "big", "requests": 24, "failed": 3,
                            "summary": "endpoint hosted: 3 of 24 requests failed after 3 retries: timeout"}},
    "mini": {"metrics": {"n": 24}, "usage": _usage(1200, 12, source="estimated"),
             "endpoint": {"url": "http://127.0.0.1:9/v1", "model": "mini", "requests": 24}},
}
FROM_EVAL = ["breakeven", "--price-in", "2.5", "--price-out", "10", "--training-cost", "29"]


def test_from_eval_prices_each_endpoint_at_its_measured_tokens(tmp_path):
    run = _planted(tmp_path, MEASURED)
    res = runner.invoke(app, [*FROM_EVAL, "--from-eval", run, "--requests-per-day", "500", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    # tuned at the endpoint's prices: 40 x 2.5/M + 10 x 10/M = $0.0002; hosted: 1200 x 2.5/M + 10 x 10/M = $0.0031
    assert d["tuned"]["cost_per_request"] == pytest.approx(0.0002, rel=1e-12)
    hosted = d["systems"]["hosted"]
    assert hosted["prompt_cost_per_request"] == pytest.approx(0.0031, rel=1e-12)
    assert hosted["saving_per_request"] == pytest.approx(0.0029, rel=1e-12)
    assert hosted["breakeven_requests"] == pytest.approx(10_000, rel=1e-9)  # $29 / $0.0029
    assert hosted["breakeven_days"] == pytest.approx(20, rel=1e-9)  # at 500 a day
    assert (hosted["requests"], hosted["failed"], hosted["source"]) == (21, 3, "api")
    mini = d["systems"]["mini"]  # 12 completion tokens: $0.00312, saving $0.00292
    assert mini["breakeven_requests"] == pytest.approx(29 / 0.00292, rel=1e-9) and mini["source"] == "estimated"
    assert list(d["systems"]) == ["hosted", "mini"]  # local systems are not priced per token

    res = runner.invoke(app, [*FROM_EVAL, "--from-eval", run, "--system", "hosted", "--ft-cost-per-request", "0.0011"])
    assert res.exit_code == 0, res.output
    text = _text(res)
    assert "hosted: break-even after 14,500 requests" in text and "mini" not in text  # $29 / ($0.0031 - $0.0011)
    assert "hosted: 3 failed requests are not in its means" in text

    assert json.loads(runner.invoke(app, [*FROM_EVAL, "--from-eval", run, "--json"]).stdout)["skipped"] == {}

    res = runner.invoke(app, [*FROM_EVAL, "--from-eval", run, "--ft-price-in", "0.5", "--ft-price-out", "1", "--json"])
    d = json.loads(res.stdout)  # tuned: 40 x 0.5/M + 10 x 1/M = $0.00003
    assert d["tuned"]["cost_per_request"] == pytest.approx(0.00003, rel=1e-12)
    assert d["systems"]["hosted"]["breakeven_requests"] == pytest.approx(29 / 0.00307, rel=1e-9)


@pytest.mark.parametrize("case, extra, message", [
    ("no-results", [], "no eval results"),
    ("no-endpoints", [], "no endpoint systems to price (have: prompted, tuned)"),
    ("measured", ["--system", "prompted"], "--system prompted: not an endpoint system"),
    ("measured", ["--overhead-tokens", "10"], "give exactly one of --overhead-tokens or --from-eval"),
    ("measured", ["--ft-prompt-tokens", "10"], "--ft-prompt-tokens does not apply with --from-eval"),
    ("nothing-answered", [], "endpoint system hosted answered no request (endpoint hosted: 24 of 24"),
])
def test_from_eval_refuses_what_it_cannot_price(tmp_path, case, extra, message):
    from tunesmith.rundir import RunDir

    systems = {"no-endpoints": {k: MEASURED[k] for k in ("prompted", "tuned")}, "measured": MEASURED,
               "nothing-answered": {"tuned": MEASURED["tuned"], "hosted": {
                   "usage": {"requests": 0}, "endpoint": {"url": "u", "model": "m", "requests": 24, "failed": 24,
                                                          "summary": "endpoint hosted: 24 of 24 failed"}}}}
    run = _planted(tmp_path, systems.get(case, {}))
    if case == "no-results":
        RunDir(run).results_path.unlink()
    res = runner.invoke(app, [*FROM_EVAL, "--from-eval", run, *extra, "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert message in _text(res) and "Traceback" not in res.output


def test_from_eval_needs_the_output_price():
    res = runner.invoke(app, ["breakeven", "--from-eval", "runs/x", "--price-in", "2", "--training-cost", "1"])
    assert res.exit_code == 2 and "--from-eval needs --price-out" in _text(res)


def test_from_eval_skips_an_endpoint_that_answered_nothing_and_says_so(tmp_path):
    gone = {"usage": {"requests": 0}, "endpoint": {"url": "http://u", "model": "m", "requests": 24, "failed": 24,
                                                   "summary": "endpoint gone: 24 of 24 requests failed"}}
    run = _planted(tmp_path, {**MEASURED, "gone": gone})
    res = runner.invoke(app, [*FROM_EVAL, "--from-eval", run, "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert list(d["systems"]) == ["hosted", "mini"]
    assert d["skipped"] == {"gone": "answered no request (endpoint gone: 24 of 24 requests failed)"}
    res = runner.invoke(app, [*FROM_EVAL, "--from-eval", run])
    assert "skipped: gone answered no request" in _text(res)
