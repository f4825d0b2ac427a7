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


def member(node_id: str, role: str, *, voter: bool = True, me: bool = False) -> list:
    return [b"id", node_id.encode(), b"role", role.encode(), b"voter", int(voter),
            b"client", f"127.0.0.1:{7000 + int(node_id[1:])}".encode(), b"admin", b"",
            b"self", int(me)]


def test_member_list_skips_a_node_that_names_no_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    # n1 was removed: it still lists itself as a voter and knows no leader. n2 follows n3.
    views = {
        "127.0.0.1:7001": [member("n1", "follower", me=True), member("n2", "follower"),
                           member("n3", "follower")],
        "127.0.0.1:7002": [member("n2", "follower", me=True), member("n3", "leader"),
                           member("n4", "follower")],
        "127.0.0.1:7003": [member("n2", "follower"), member("n3", "leader", me=True),
                           member("n4", "follower")],
    }
    asked: list[str] = []

    def fake_call(address: str, *argv: str, **kw: object) -> object:
        asked.append(address)
        return views[address]

    monkeypatch.setattr(cli, "_cluster_call", fake_call)
    result = CliRunner().invoke(main, ["member", "list", "--cluster",
                                       "127.0.0.1:7001,127.0.0.1:7002"])
    assert result.exit_code == 0, result.output
    assert asked == ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    assert [line.split()[:2] for line in result.output.splitlines()] == [
        ["n2", "follower"], ["n3", "leader"], ["n4", "follower"]]

    views["127.0.0.1:7002"] = [member("n2", "candidate", me=True), member("n3", "follower")]
    result = CliRunner().invoke(main, ["member", "list", "--cluster",
                                       "127.0.0.1:7001,127.0.0.1:7002"])
    assert result.exit_code == 0, result.output
    assert "no node at 127.0.0.1:7001,127.0.0.1:7002 names a leader" in result.output
    assert "n1" in result.output  # the first view, with the warning
