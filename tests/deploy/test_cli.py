"""The registry, serve and flywheel commands' refusals: a registry that is not there, a name they cannot take,
versions whose files were deleted, a request log that is not one."""

from __future__ import annotations

import json
import shutil

import typer
from typer.testing import CliRunner

from tunesmith.deploy.registry import Registry
from tests.helpers import deploy_cli as _cli, one_line as _text, version_id as _vid


def test_read_commands_refuse_a_registry_that_does_not_exist(tmp_path):
    db = tmp_path / "typo" / "registry.db"
    for args in (["registry", "list"], ["registry", "show", "legal@prod"], ["registry", "rollback", "legal@prod"]):
        res = _cli(*args, "--registry", str(db))
        assert res.exit_code == 2 and f"no registry at {db}" in _text(res)
    assert not db.parent.exists()  # nothing created by a mistyped path


def test_name_starting_with_a_dash_says_why(reg):
    res = _cli("registry", "add", ".", "--name", "-x", "--registry", str(reg.path))
    assert res.exit_code == 2 and "starting with a letter or digit" in _text(res)


def test_list_marks_versions_whose_files_are_missing(reg):
    res = _cli("registry", "list", "--registry", str(reg.path), "--json")
    assert res.exit_code == 0, res.output
    ok = {v["id"]: v["files_ok"] for v in json.loads(res.stdout)["versions"]}
    assert ok == {_vid(reg, "gone"): False, **{v.id: True for v in reg.versions("legal")}}
    res = _cli("registry", "show", _vid(reg, "gone"), "--registry", str(reg.path), "--json")
    assert json.loads(res.stdout)["files_ok"] is False
    res = _cli("registry", "list", "--registry", str(reg.path))  # 80 columns: ids must still be whole
    assert "(files missing)" in res.output
    assert all(v.id in res.output for v in reg.versions())


def test_serve_refuses_an_empty_api_key(reg):
    res = _cli("serve", "--api-key", "", "--registry", str(reg.path))
    assert res.exit_code == 2 and "--api-key is empty" in _text(res)


def test_vllm_command_names_a_version_whose_files_were_deleted(reg, tmp_path):
    db = tmp_path / "v.db"
    shutil.copy(reg.path, db)  # same versions (stores are absolute paths); an alias on the deleted one
    Registry(db).set_alias("gone@prod", _vid(reg, "gone"))
    res = _cli("serve", "--engine", "vllm", "--print", "--registry", str(db))
    assert res.exit_code == 2 and f"version {_vid(reg, 'gone')}: adapter_config.json" in _text(res)


def test_flywheel_export_mistakes_exit_2(reg, tmp_path):
    from tunesmith.deploy.cli import flywheel_app

    app = typer.Typer()
    app.add_typer(flywheel_app, name="flywheel")
    not_a_log = tmp_path / "log.db"
    not_a_log.write_text("this is not sqlite\n")
    res = CliRunner().invoke(app, ["flywheel", "export", "-o", str(tmp_path / "o.jsonl"), "--log", str(not_a_log)])
    assert res.exit_code == 2 and "not a tunesmith request log" in _text(res)
    res = CliRunner().invoke(app, ["flywheel", "export", "-o", str(tmp_path), "--log", str(not_a_log)])
    assert res.exit_code == 2 and "is a directory; give the JSONL file's path" in _text(res)
