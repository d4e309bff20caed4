"""Break-even: the worked example from the docs must reproduce exactly."""

import json

import pytest
from typer.testing import CliRunner

from tunesmith.plan.breakeven import breakeven, per_request_cost
from tunesmith.plan.cli import app

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
