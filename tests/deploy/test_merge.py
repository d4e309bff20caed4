"""export merge and verify (tunesmith.deploy.merge): never replace what is not a model, name a version or base model
that is gone."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import deploy_cli as _cli, make_run, one_line as _text, version_id as _vid
from tunesmith.deploy.registry import Registry


def test_version_with_deleted_files_is_refused_by_name(reg, tmp_path):
    gone = _vid(reg, "gone")
    res = _cli("export", "merge", gone, "-o", str(tmp_path / "m"), "--registry", str(reg.path))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"version {gone}: adapter_config.json, adapter_model.safetensors missing from its store" in _text(res)
    assert not (tmp_path / "m").exists()
    res = _cli("export", "gguf", gone, "-o", str(tmp_path / "g.gguf"), "--registry", str(reg.path))
    assert res.exit_code == 2 and "missing from its store" in _text(res)
    base = reg.version(_vid(reg, "legal")).base_model  # any model directory, to get past the argument checks
    res = _cli("export", "verify", gone, "--merged", base, "--registry", str(reg.path))
    assert res.exit_code == 2 and "missing from its store" in _text(res)


def test_merge_never_replaces_a_directory_that_is_not_a_model(reg, tmp_path):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("important")
    res = _cli("export", "merge", _vid(reg, "legal"), "-o", str(precious), "--no-verify", "--registry", str(reg.path))
    assert res.exit_code == 2 and "is not a model directory (no config.json)" in _text(res)
    assert (precious / "notes.txt").read_text() == "important" and (precious / "sub").is_dir()
    res = _cli("export", "merge", _vid(reg, "legal"), "-o", str(precious / "notes.txt"), "--registry", str(reg.path))
    assert res.exit_code == 2 and "is a file" in _text(res)
    base = reg.version(_vid(reg, "legal")).base_model
    res = _cli("export", "merge", _vid(reg, "legal"), "-o", base, "--no-verify", "--registry", str(reg.path))
    assert res.exit_code == 2 and "is the base model of this version" in _text(res)
    assert (Path(base) / "model.safetensors").is_file()
    # an earlier export (a model directory) is replaced as before
    out = tmp_path / "merged"
    assert _cli("export", "merge", _vid(reg, "legal"), "-o", str(out), "--no-verify",
                "--registry", str(reg.path)).exit_code == 0
    (out / "stale.txt").write_text("from an older export")
    assert _cli("export", "merge", _vid(reg, "legal"), "-o", str(out), "--no-verify",
                "--registry", str(reg.path)).exit_code == 0
    assert (out / "config.json").is_file() and not (out / "stale.txt").exists()


def test_export_output_and_verify_input_mistakes_exit_2(reg, tmp_path):
    res = _cli("export", "gguf", _vid(reg, "legal"), "-o", str(tmp_path), "--registry", str(reg.path))
    assert res.exit_code == 2 and "is a directory; give the GGUF file's path" in _text(res)
    res = _cli("export", "verify", _vid(reg, "legal"), "--merged", str(tmp_path), "--registry", str(reg.path))
    assert res.exit_code == 2 and "not a merged model directory (no config.json)" in _text(res)


def test_moved_base_model_is_named_not_a_hub_error(tmp_path):
    from tunesmith.demo.tiny import build_tiny_model

    base = build_tiny_model(tmp_path / "base")
    run = make_run(tmp_path / "runs", base, "r", seed=2)
    db = tmp_path / "r.db"
    vid = Registry(db).add(run, "moved").id
    shutil.rmtree(base)
    res = _cli("export", "merge", vid, "-o", str(tmp_path / "m"), "--registry", str(db))
    assert res.exit_code == 2
    assert f"version {vid}: its base model {base} is gone (moved or deleted)" in _text(res)
    res = _cli("serve", "--registry", str(db))
    assert res.exit_code == 2 and f"base model {base} does not exist" in _text(res)
