"""The README promises that every command has `--help` with examples: each leaf command's help
shows at least one `replikv ...` line, and renders without error."""

from __future__ import annotations

import click
from click.testing import CliRunner

from replikv.cli import main


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_shows_an_example_in_its_help() -> None:
    commands = leaf_commands(main)
    assert len(commands) >= 25  # the walk found the command tree
    runner = CliRunner()
    without = []
    for path in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if not any(line.strip().startswith("replikv ") for line in result.output.splitlines()):
            without.append(" ".join(path))
    assert without == [], f"--help without an example: {without}"
