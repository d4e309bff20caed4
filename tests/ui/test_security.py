"""What the app refuses: paths outside known run files, forged posts, missing keys, exposed binds."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.ui.world import make_run
from tunesmith.cli import app as cli_app
from tunesmith.ui.app import Settings, create_app
from tunesmith.ui.cli import check_host


@pytest.fixture
def client(world):
    return TestClient(create_app(Settings(runs=[world.runs], registry=world.registry)))


@pytest.mark.parametrize("url", [
    "/runs/..%2F..%2Fetc/passwd",
    "/runs/legal-good/files/adapter/..%2F..%2F..%2Fetc%2Fpasswd",
    "/runs/legal-good/files/..%2Fadapter/adapter_config.json",
    "/runs/legal-good/files/checkpoints",
    "/runs/legal-good/files/adapter/%2Fetc%2Fpasswd",
    "/runs/legal-good/files/adapter/run.json",
    "/static/..%2F..%2Fcli.py",
])
def test_crafted_paths_read_nothing(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert "root:" not in r.text and "Traceback" not in r.text and "Not found" in r.text


def test_symlinks_out_of_a_run_are_neither_listed_nor_served(client, world, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    (world.runs / "legal-good" / "adapter" / "leak.json").symlink_to(secret)
    (world.runs / "linked-run").symlink_to(world.runs / "legal-good")  # a run dir reached through a link
    try:
        listing = client.get("/runs/legal-good/files/adapter")
        assert listing.status_code == 200 and "adapter_config.json" in listing.text and "leak.json" not in listing.text
        assert client.get("/runs/legal-good/files/adapter/leak.json").status_code == 404
        assert "linked-run" not in client.get("/runs").text
        assert client.get("/runs/linked-run").status_code == 404
    finally:
        (world.runs / "legal-good" / "adapter" / "leak.json").unlink()
        (world.runs / "linked-run").unlink()


def test_registry_posts_need_the_pages_csrf_token(client, world):
    r = client.post("/registry/rollback", data={"alias": "legal@prod", "csrf": "forged"})
    assert r.status_code == 409 and "CSRF" in r.text
    r = client.post("/registry/promote", data={"alias": "legal@prod", "version": world.failed_version,
                                               "confirm": "yes", "force": "yes"})
    assert r.status_code == 409
    assert client.get("/registry/rollback").status_code in (404, 405)  # changes are never a GET


def test_api_key_is_required_when_set(world):
    c = TestClient(create_app(Settings(runs=[world.runs], registry=world.registry, api_key="s3cret")))
    assert c.get("/runs").status_code == 401
    assert c.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/runs?key=s3cret").status_code == 200
    assert c.get("/runs").status_code == 200  # the key given once is kept in a cookie


def test_non_loopback_bind_needs_a_key():
    assert check_host("127.0.0.1", None) is None and check_host("::1", None) is None
    assert check_host("localhost", None) is None
    assert "refusing to start without --api-key" in check_host("0.0.0.0", None)
    assert "refusing" in check_host("my-box.lan", None)
    assert check_host("0.0.0.0", "k") is None
    out = CliRunner().invoke(cli_app, ["ui", "--host", "0.0.0.0", "--runs", "."], env={**os.environ,
                                                                                         "TUNESMITH_UI_API_KEY": ""})
    assert out.exit_code == 2 and "--api-key" in out.output


def test_broken_artefacts_are_explained_not_crashed(client, world):
    run = make_run(world.runs, "legal-broken")
    try:
        run.results_path.write_text("{not json", encoding="utf-8")
        r = client.get("/runs/legal-broken/eval")
        assert r.status_code == 422 and "not valid JSON" in r.text and "Traceback" not in r.text
        assert "legal-broken" in client.get("/runs").text  # the table still lists it
        r = client.get("/runs/legal-live/eval")
        assert r.status_code == 404 and "has not been evaluated yet" in r.text
    finally:
        import shutil

        shutil.rmtree(run.path)


def test_missing_registry_is_a_page_not_a_new_file(world, tmp_path):
    c = TestClient(create_app(Settings(runs=[world.runs], registry=tmp_path / "nope.db")))
    r = c.get("/registry")
    assert r.status_code == 404 and "no registry at" in r.text
    assert not (tmp_path / "nope.db").exists()
