"""`replikv member add` when the new node never becomes reachable: it says what to do."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from replikv import cli
from replikv.cli import main


def test_member_add_of_a_node_that_never_answers_says_how_to_go_on_or_undo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_call(cluster_addresses: str, *argv: str, **kw: object) -> object:
        calls.append(argv)
        if argv[2] == "ADD":
            return "OK"
        raise click.ClickException("ERR membership change refused: n4 is not reachable")

    monkeypatch.setattr(cli, "_cluster_call", fake_call)
    result = CliRunner().invoke(main, ["member", "add", "n4", "--peer", "127.0.0.1:7104",
                                       "--wait-s", "1"])
    assert result.exit_code == 1, result.output
    assert calls[0][:4] == ("REPLIKV", "MEMBER", "ADD", "n4")
    assert len(calls) >= 2 and all(c[2] == "PROMOTE" for c in calls[1:])
    # One waiting line, with what to check; then the way forward and the way back.
    assert result.output.count("waiting for n4: n4 is not reachable (is it running") == 1
    assert "n4 stays a standby" in result.output
    assert "replikv member promote n4" in result.output
    assert "replikv member remove n4" in result.output


def test_member_add_refused_outright_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_call(cluster_addresses: str, *argv: str, **kw: object) -> object:
        calls.append(argv)
        if argv[2] == "ADD":
            return "OK"
        raise click.ClickException("ERR n4 is already a voter")

    monkeypatch.setattr(cli, "_cluster_call", fake_call)
    result = CliRunner().invoke(main, ["member", "add", "n4", "--peer", "127.0.0.1:7104"])
    assert result.exit_code == 1 and "already a voter" in result.output
    assert len(calls) == 2 and "stays a standby" not in result.output
