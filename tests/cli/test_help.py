"""Every command, option and argument of ``abstats`` has help text (issue 15: pause, resume and
rollback had none), and ``--help`` works on each command."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from abstats.cli import app


def _commands(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, [*path, name])
    return found


def test_every_command_and_parameter_has_help() -> None:
    commands = _commands(typer.main.get_command(app), [])
    assert len(commands) > 25  # the walk did reach the sub-commands
    missing = [
        " ".join(["abstats", *path, *([] if param is None else [param.name])])
        for path, command in commands
        for param in [None, *command.params]
        if not ((command.help if param is None else getattr(param, "help", None)) or "").strip()
    ]
    assert missing == []


def test_help_on_every_command() -> None:
    runner = CliRunner()
    for path, _ in _commands(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
