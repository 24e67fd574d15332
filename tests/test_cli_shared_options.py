"""Options both command lines share are defined once (turnip.cli_errors), and behave the same everywhere."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from turnip.cli import main as run_main

from turnipc.cli import main as compiler_main


def _commands() -> dict[str, click.Command]:
    cmds = {f"turnipc {name}": cmd for name, cmd in compiler_main.commands.items()}
    cmds["turnip-run"] = run_main
    return cmds


def test_every_json_flag_is_the_shared_one():
    with_json = {}
    for name, cmd in _commands().items():
        for p in cmd.params:
            if "--json" in getattr(p, "opts", ()):
                with_json[name] = p
    assert {"turnipc plan", "turnipc verify", "turnipc inspect", "turnipc simulate", "turnipc layout", "turnipc diff",
            "turnipc timeline", "turnip-run"} <= set(with_json), sorted(with_json)
    for name, p in with_json.items():
        assert p.name == "as_json" and p.is_eager, name
        assert p.callback is not None and "json_option" in p.callback.__qualname__, name


@pytest.mark.parametrize("args", [["simulate", "{missing}.plan"], ["timeline", "{missing}.json", "--png", "{missing}.png"], ["layout", "{missing}.csv"]])
def test_errors_of_a_json_command_are_json(tmp_path, args):
    """Commands that used to print only `error: ...` with --json (their own fail helpers) now answer in JSON too."""
    r = CliRunner().invoke(compiler_main, [a.format(missing=tmp_path / "missing") for a in args] + ["--json"])
    assert r.exit_code == 2, r.output
    obj = json.loads(r.stdout)
    assert obj["exit_code"] == 2 and obj["error"] == r.stderr.strip()[len("error: "):]
    assert "missing" in obj["error"]


def test_without_json_an_error_is_one_line_on_stderr(tmp_path):
    r = CliRunner().invoke(compiler_main, ["simulate", str(tmp_path / "missing.plan")])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
