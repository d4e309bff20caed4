"""The playground streams real answers from registry versions of a tiny model, with rule badges."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import running, screenshot
from tunesmith.deploy.registry import Registry
from tunesmith.ui.app import Settings


@pytest.fixture(scope="module")
def play_server(deploy_env, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("play") / "registry.db")
    plain = reg.add(deploy_env.runs[0], "legal")
    ruled = reg.add(deploy_env.runs[2], "legal")  # legal-3 was trained with a rule: contains "please"
    reg.set_alias("legal@prod", plain.id)
    with running(Settings(runs=[deploy_env.root / "runs"], registry=reg.path)) as url:
        yield url, plain.id, ruled.id


def test_playground_streams_side_by_side_with_rule_badges(play_server, open_page):
    url, plain, ruled = play_server
    w = open_page()
    w.page.goto(url + "/playground")
    for box in w.page.locator("input[name=model]").all():
        box.uncheck()
    w.page.check("input[name=model][value=base]")
    w.page.check(f"input[name=model][value='{ruled}']")
    w.page.fill("textarea[name=prompt]", "What is a lease?")
    w.page.fill("input[name=max_tokens]", "12")
    chunks = []
    w.page.on("response", lambda r: chunks.append(r.headers.get("content-type", "")) if "/chat/" in r.url else None)
    w.page.get_by_role("button", name="Send").click()
    for model in ("base", ruled):
        col = w.page.locator(f"article.answer[data-model='{model}']")
        expect(col).to_have_attribute("data-done", "1", timeout=60_000)
        assert col.locator("pre").text_content()  # an answer arrived (random weights: any tokens, even blank lines)
    assert all(c.startswith("text/event-stream") for c in chunks) and len(chunks) == 2
    ruled_col = w.page.locator(f"article.answer[data-model='{ruled}']")
    expect(ruled_col.locator(".checks")).to_contain_text("polite")
    expect(w.page.locator("article.answer[data-model='base'] .checks")).to_contain_text("no rules")
    screenshot(w.page, "playground-1280")
    with w.page.expect_download() as dl:
        w.page.get_by_role("button", name="Export as JSONL test cases").click()
    lines = [json.loads(x) for x in open(dl.value.path()).read().splitlines()]
    assert sorted(c["meta"]["model"] for c in lines) == sorted(["base", ruled])  # in the order answers finished
    assert all(c["messages"][0] == {"role": "user", "content": "What is a lease?"} for c in lines)
    assert w.errors == []


def test_data_page_counts_tokens_with_the_runs_own_tokenizer(play_server):
    import httpx

    url, _, _ = play_server
    html = httpx.get(url + "/runs/legal-1/data", timeout=60).text
    lengths = html[html.index('id="lengths"'):]
    lengths = lengths[: lengths.index("</section>")]
    # legal-1's adapter folder holds the tokenizer it trained with; its test split is the file that exists
    assert "tokens: min" in lengths and "/legal-1/adapter</code>" in lengths
    assert "limit: not checked (no max_seq_len)" in lengths
    assert "3 read = 3 kept + 0 rejected" in html
