"""Endpoint systems (eval.systems entries with a url): a real `tunesmith serve` app on loopback, asked with the real
openai client, serving the run's own base model, so the endpoint's greedy answers must be the local base's.
A thin ASGI layer in front of it misbehaves on cue: the first requests of each body answered 500, or every reply
held past the client's timeout."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.deploy.live import Running
from tests.helpers import write_pairs
from tunesmith.evaluate.cli import app

runner = CliRunner()
PAIRS = [("question one", "answer one"), ("question two", "answer two"), ("question three", "answer three")]


class Misbehave:
    """ASGI layer over the served app: `fail_first` 500s per distinct request body (with a 10 ms retry-after-ms,
    as OpenAI's API sends), `delay` seconds before every answer, or replies without `usage` (`strip_usage`).
    `calls` counts chat requests."""

    def __init__(self, inner):
        self.inner, self.fail_first, self.delay, self.calls, self.seen = inner, 0, 0.0, 0, Counter()
        self.strip_usage = False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.inner(scope, receive, send)
        body, more = b"", True
        while more:
            msg = await receive()
            body, more = body + msg.get("body", b""), msg.get("more_body", False)
        self.calls += 1
        self.seen[body] += 1
        if self.seen[body] <= self.fail_first:
            data = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after-ms", b"10")]})
            return await send({"type": "http.response.body", "body": data})
        if self.delay:
            await asyncio.sleep(self.delay)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        if not self.strip_usage:
            return await self.inner(scope, replay, send)
        start, chunks = {}, []

        async def without_usage(msg):
            if msg["type"] == "http.response.start":
                return start.update(msg)
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                reply = json.loads(b"".join(chunks))
                reply.pop("usage", None)
                data = json.dumps(reply).encode()
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                await send({**start, "headers": headers + [(b"content-length", str(len(data)).encode())]})
                await send({"type": "http.response.body", "body": data})

        await self.inner(scope, replay, without_usage)


def _talkative(tiny: Path, out: Path) -> Path:
    """The tiny model with seeded noise on its weights: it answers in varied (if meaningless) text, where the
    random one answers only newlines, which strip to the same empty answer whatever served them."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny, out)
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """A trained tiny run, and `tunesmith serve` serving its base model at `url` behind a Misbehave `layer`."""
    from tunesmith.cli import app as main_app
    from tunesmith.deploy.serve.app import create_app
    from tunesmith.deploy.serve.settings import ServeSettings
    from tunesmith.deploy.serve.state import Server

    root = tmp_path_factory.mktemp("endpoint-run")
    base = _talkative(tiny_model_dir, root / "base")
    write_pairs(root / "train.jsonl", [(f"question {i}", f"answer {i}") for i in range(6)])
    write_pairs(root / "test.jsonl", PAIRS)
    (root / "cfg.yaml").write_text(
        f"name: r\nmodel: {base}\noutput_dir: runs\n"
        "data: {train: train.jsonl, test: test.jsonl, max_seq_len: 40}\nlora: {r: 2, alpha: 4}\n"
        "train: {max_steps: 1, batch_size: 2, logging_steps: 1}\neval: {few_shot: 1}\n", encoding="utf-8")
    res = runner.invoke(main_app, ["train", str(root / "cfg.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    settings = ServeSettings(registry=root / "registry.db", base=str(base), seed=0, max_tokens_cap=64)
    srv = Server(settings)
    layer = Misbehave(create_app(settings, srv))
    running = Running(layer)
    yield {"run": root / "runs" / "r", "url": running.url + "/v1", "layer": layer}
    running.stop()
    srv.engine.stop()


def _run_with(served, tmp_path: Path, *endpoints: dict, **eval_keys) -> Path:
    """A copy of the run (no cached generations) whose eval.systems are base, prompted, tuned and `endpoints`."""
    run = Path(shutil.copytree(served["run"], tmp_path / "run", ignore=shutil.ignore_patterns("generations")))
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["eval"]["systems"] = ["base", "prompted", "tuned",
                              *({"url": served["url"], "model": "base", **e} for e in endpoints)]
    cfg["eval"].update(eval_keys)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    served["layer"].fail_first, served["layer"].delay = 0, 0.0
    served["layer"].seen.clear()
    served["layer"].strip_usage = False
    return run


def test_endpoint_answers_are_the_local_base_s_with_exact_usage_and_a_gate_against_it(served, tmp_path):
    run = _run_with(served, tmp_path, {"name": "hosted", "api_key_env": "TUNESMITH_TEST_KEY"})
    res = runner.invoke(app, [str(run), "--gate", "--against", "hosted", "--json"],
                        env={"TUNESMITH_TEST_KEY": "sk-secret-value"})
    assert res.exit_code in (0, 1), res.output  # the verdict is the tiny model's business; it must be about hosted
    results = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))
    answers = [ex["outputs"]["base"] for ex in results["examples"]]
    assert [ex["outputs"]["hosted"] for ex in results["examples"]] == answers
    assert len(set(answers)) == 3 and all(answers)  # three different answers, none empty
    hosted, base = results["systems"]["hosted"], results["systems"]["base"]
    assert hosted["metrics"] == base["metrics"]
    # the server counts the prompt as our tokenizer does, through the same chat template
    assert hosted["usage"]["source"] == "api" and base["usage"]["source"] == "tokenizer"
    assert hosted["usage"]["requests"] == 3 and hosted["usage"]["prompt_tokens"] == base["usage"]["prompt_tokens"]
    assert hosted["usage"]["completion_tokens"] == base["usage"]["completion_tokens"], (hosted["usage"], base["usage"])
    assert hosted["endpoint"] | {"url": None} == {
        "url": None, "model": "base", "requests": 3, "failed": 0, "retries": 0, "max_retries": 3, "reasons": {},
        "failures": [], "summary": None}
    assert results["gate"]["baseline"] == "hosted" and "vs hosted" in results["gate"]["reasons"][0]
    assert json.loads(res.stdout)["gate"]["baseline"] == "hosted"
    saved = (run / "eval" / "results.json").read_text(encoding="utf-8") + res.output
    assert "sk-secret-value" not in saved
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "hosted" in html and "sk-secret-value" not in html

    # the crossover from what was measured: hosted's tokens at its prices, tuned's at the same prices
    from tunesmith.plan.cli import app as plan_app

    plan = runner.invoke(plan_app, ["breakeven", "--from-eval", str(run), "--price-in", "2", "--price-out", "8",
                                    "--training-cost", "0.5", "--json"])
    assert plan.exit_code == 0, plan.output
    tuned = results["systems"]["tuned"]["usage"]
    per_request = {s: u["mean_prompt_tokens"] * 2e-6 + u["mean_completion_tokens"] * 8e-6
                   for s, u in (("hosted", hosted["usage"]), ("tuned", tuned))}
    priced = json.loads(plan.stdout)["systems"]["hosted"]
    assert priced["prompt_cost_per_request"] == pytest.approx(per_request["hosted"], rel=1e-12)
    assert priced["ft_cost_per_request"] == pytest.approx(per_request["tuned"], rel=1e-12)

    calls = served["layer"].calls
    again = runner.invoke(app, [str(run), "--json"])
    assert again.exit_code == 0, again.output
    assert served["layer"].calls == calls and "hosted: 3 answers from cache" in again.stderr
    assert json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))["gate"]["baseline"] == "prompted"


def test_endpoint_answering_500_twice_is_retried_and_the_retries_counted(served, tmp_path):
    run = _run_with(served, tmp_path, {"name": "flaky", "concurrency": 3})
    served["layer"].fail_first = 2
    calls = served["layer"].calls
    res = runner.invoke(app, [str(run), "--systems", "base,flaky", "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert results["systems"]["flaky"]["endpoint"]["retries"] == 6 and results["systems"]["flaky"]["endpoint"][
        "failed"] == 0
    assert served["layer"].calls - calls == 9
    assert [ex["outputs"]["flaky"] for ex in results["examples"]] == [ex["outputs"]["base"] for ex in
                                                                      results["examples"]]


def test_endpoint_without_usage_has_its_tokens_counted_and_marked_estimated(served, tmp_path):
    from transformers import AutoTokenizer

    run = _run_with(served, tmp_path, {"name": "bare"})
    served["layer"].strip_usage = True
    res = runner.invoke(app, [str(run), "--systems", "base,bare"])
    assert res.exit_code == 0, res.output
    assert "* estimated: the endpoint sent no usage" in res.stdout
    results = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))
    bare, base = results["systems"]["bare"]["usage"], results["systems"]["base"]["usage"]
    tok = AutoTokenizer.from_pretrained(str(run / "adapter"))
    answers = [ex["outputs"]["bare"] for ex in results["examples"]]
    assert answers == [ex["outputs"]["base"] for ex in results["examples"]]
    # the prompt through the same template is exact; the answer's text lacks the tokens that decoded to nothing
    assert bare["source"] == "estimated" and bare["prompt_tokens"] == base["prompt_tokens"]
    assert bare["completion_tokens"] == sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)


def test_endpoint_that_times_out_is_named_counted_and_the_eval_completes(served, tmp_path):
    run = _run_with(served, tmp_path, {"name": "slow", "timeout_s": 0.3, "retries": 1})
    served["layer"].delay = 1.0
    res = runner.invoke(app, [str(run), "--systems", "base,prompted,tuned,slow"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    summary = "endpoint slow: 3 of 3 requests failed after 1 retry: timeout"
    assert summary in " ".join(res.stderr.split())
    results = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))
    slow = results["systems"]["slow"]
    assert slow["endpoint"]["summary"] == summary and slow["endpoint"]["reasons"] == {"timeout": 3}
    assert slow["endpoint"]["failures"] == [{"id": i, "reason": "timeout"} for i in (1, 2, 3)]
    assert slow["usage"]["requests"] == 0 and slow["metrics"]["n"] == 3
    assert [ex["outputs"]["slow"] for ex in results["examples"]] == ["", "", ""]
    assert summary in (run / "report.html").read_text(encoding="utf-8")

    # the endpoint is back (and the timeout, no part of the cache key, generous): the failed items are asked
    # again, and now answered
    served["layer"].delay = 0.0
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["eval"]["systems"][3]["timeout_s"] = 60
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = runner.invoke(app, [str(run), "--systems", "base,slow", "--json"])
    assert res.exit_code == 0, res.output
    assert "slow: 0 answers from cache; asking again for 3 that failed" in res.stderr
    results = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert results["systems"]["slow"]["endpoint"]["failed"] == 0
    assert [ex["outputs"]["slow"] for ex in results["examples"]] == [ex["outputs"]["base"] for ex in
                                                                     results["examples"]]


def test_gate_target_from_config_and_bad_names_are_refused_before_any_request(served, tmp_path):
    run = _run_with(served, tmp_path, {"name": "hosted", "system_prompt": "Answer briefly.", "few_shot": 1},
                    gate_against="hosted")
    calls = served["layer"].calls
    res = runner.invoke(app, [str(run), "--against", "nobody"])
    assert res.exit_code == 2 and "--against nobody: no such system; choose from base, prompted, hosted" in \
        " ".join(res.stderr.split())
    res = runner.invoke(app, [str(run), "--systems", "base,tuned", "--against", "hosted"])
    assert res.exit_code == 2 and "--against hosted: not among the systems evaluated" in " ".join(res.stderr.split())
    res = runner.invoke(app, [str(run), "--systems", "tuned,prompted", "--gate"])
    assert res.exit_code == 2 and "--gate needs both the tuned and the hosted system in --systems" in \
        " ".join(res.stderr.split())
    assert served["layer"].calls == calls
    res = runner.invoke(app, [str(run), "--systems", "tuned,hosted", "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))
    assert results["gate"]["baseline"] == "hosted"
    # its own system prompt and one shot from train: a longer prompt than tuned's, measured by the server
    assert results["systems"]["hosted"]["usage"]["mean_prompt_tokens"] > \
        results["systems"]["tuned"]["usage"]["mean_prompt_tokens"]


@pytest.mark.parametrize("systems, extra, message", [
    (["base", {"name": "base", "url": "http://u", "model": "m"}], {}, "endpoint name 'base': must be non-empty"),
    (["tuned", {"name": "x", "url": "http://u", "model": "m"}, {"name": "x", "url": "http://v", "model": "m"}], {},
     "eval.systems: x listed twice"),
    (["tuned", "prompted"], {"gate_against": "hosted"}, "eval.gate_against: 'hosted' is not in eval.systems"),
    (["tuned", {"name": "x", "url": "http://u"}], {}, "eval.systems.1.endpoint.model: Field required"),
    (["tuned", "basee"], {}, "eval.systems.1.local: Input should be 'base', 'prompted' or 'tuned'"),
    (["tuned", {"name": "x", "url": "localhost:8000", "model": "m"}], {},
     "eval.systems.1.endpoint.url: 'localhost:8000': expected an http:// or https:// URL"),
])
def test_endpoint_entries_are_checked_when_the_config_loads(tmp_path, systems, extra, message):
    from tunesmith.config import ConfigError, load_config

    (tmp_path / "run.yaml").write_text(json.dumps({"eval": {"systems": systems, **extra}}), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "run.yaml")
    assert message in str(e.value) and str(tmp_path / "run.yaml") in str(e.value)


def test_rate_limit_spaces_request_starts_across_threads(monkeypatch):
    from tunesmith.evaluate import endpoint

    now, slept = [100.0], []
    monkeypatch.setattr(endpoint.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(endpoint.time, "sleep", slept.append)
    limit = endpoint._RateLimit(120)  # 120 a minute: one start every 0.5 s
    for _ in range(3):
        limit.wait()
    now[0] = 102.0  # idle for a while: the next one starts at once
    limit.wait()
    assert slept == [0.0, 0.5, 1.0, 0.0]
    endpoint._RateLimit(None).wait()
    assert len(slept) == 4
