"""The CLI edge every sub-app shares: fail() prints user text verbatim and exits with its code; emit() prints
one JSON object or the human view."""

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tunesmith.clikit import emit, fail, user_errors
from tunesmith.errors import DataError, UserError

runner = CliRunner()


def _run(body, *args: str):
    app = typer.Typer()
    app.command()(body)  # a one-command app runs it without naming it
    return runner.invoke(app, list(args))


def test_fail_prints_rich_markup_verbatim_on_stderr_and_exits_2():
    def body() -> None:
        fail("train [bold]x[/bold].jsonl: role [/] is unknown")

    res = _run(body)
    assert res.exit_code == 2
    assert res.stderr == "error: train [bold]x[/bold].jsonl: role [/] is unknown\n"
    assert res.stdout == ""


def test_fail_exits_with_the_given_code():
    def body() -> None:
        fail("refused", code=1)

    assert _run(body).exit_code == 1


def test_a_user_error_prints_where_what_and_the_hint():
    def body() -> None:
        with user_errors():
            raise DataError("unknown role 'robot'", file="t[1].jsonl", line=3, field="messages[0].role",
                            hint="use system, user or assistant")

    res = _run(body)
    assert res.exit_code == 2
    assert res.stderr == ("error: t[1].jsonl:3: messages[0].role: unknown role 'robot' "
                          "(use system, user or assistant)\n")


def test_user_errors_turns_the_named_types_into_a_failure_and_lets_others_through():
    def body() -> None:
        with user_errors(OSError, code=3):
            open("/nonexistent/[red]dir/file")

    res = _run(body)
    assert res.exit_code == 3 and "[red]dir/file" in res.stderr and "Traceback" not in res.output

    with pytest.raises(KeyError):
        with user_errors(OSError):
            raise KeyError("a bug, not the user's")
    assert issubclass(UserError, ValueError)  # `except ValueError` callers still catch every stage error


def test_emit_writes_one_json_object_or_calls_the_human_view():
    shown = []

    def body(as_json: bool = typer.Option(False, "--json")) -> None:
        emit({"path": Path("a b"), "text": "café"}, as_json, lambda: shown.append(1))

    res = _run(body, "--json")
    assert res.exit_code == 0 and res.stdout.count("\n") == 1
    assert json.loads(res.stdout) == {"path": "a b", "text": "café"} and not shown
    assert _run(body).stdout == "" and shown == [1]


def test_deploy_errors_print_user_paths_literally(tmp_path):
    from tunesmith.deploy.cli import registry_app

    missing = tmp_path / "[bold]reg.db"
    res = runner.invoke(registry_app, ["list", "--registry", str(missing)])
    assert res.exit_code == 2
    assert f"no registry at {missing}" in " ".join(res.stderr.split())


def _commands(group, path=()):
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name)) if getattr(sub, "commands", None) else [((*path, name), sub)]


def test_every_command_has_an_example_in_its_help():
    from tunesmith.cli import app

    commands = dict(_commands(typer.main.get_command(app)))
    assert ("plan", "cost") in commands and ("data", "render") in commands
    missing = [" ".join(path) for path, cmd in commands.items() if "Example: tunesmith " + " ".join(path)
               not in (cmd.help or "")]
    assert missing == []
