"""One world, one uvicorn server in a thread and one headless Chromium for all UI tests."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ui.world import build

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).parents[2] / "docs" / "ui"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return build(tmp_path_factory.mktemp("ui-world"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(settings):
    """The UI app on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    from tunesmith.ui.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(world):
    from tunesmith.ui.app import Settings

    with running(Settings(runs=[world.runs], registry=world.registry)) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).is_file() or shutil.which("chromium") is None:
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page plus what it did: console errors and every request's URL."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))


@pytest.fixture
def open_page(browser):
    contexts = []

    def make(width: int = 1280) -> Watched:
        ctx = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(ctx)
        return Watched(ctx.new_page())

    yield make
    for ctx in contexts:
        ctx.close()


def screenshot(page, stem: str) -> None:
    """docs/ui/<stem>.png when TUNESMITH_UI_SCREENSHOTS is set (refreshing the docs is a deliberate act):
    the first 1400 px from where the page is scrolled, in 256 colours, small enough to commit."""
    if not os.environ.get("TUNESMITH_UI_SCREENSHOTS"):
        return
    from PIL import Image

    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"{stem}.png"
    page.screenshot(path=str(path), clip={**page.evaluate("({x: scrollX, y: scrollY})"),
                                          "width": page.viewport_size["width"], "height": 1400}, full_page=True)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
