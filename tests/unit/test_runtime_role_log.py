"""The runtime says why a leader stepped down in its own term (nothing else would), and when a
node starts a pre-vote."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from replikv.config import load_settings
from replikv.raft.core import Role
from replikv.server.runtime import NodeServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NodeServer]:
    ports = [free_port() for _ in range(3)]
    settings = load_settings(None, {
        "id": "n1", "data_dir": tmp_path / "n1", "listen": f"127.0.0.1:{free_port()}",
        "peer_listen": f"127.0.0.1:{ports[0]}",
        "peers": ",".join(f"n{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))})
    node = NodeServer(settings)
    node.open_storage()
    yield node
    node._wal.close()
    node.datadir.close()
    node._disk.shutdown(wait=True)
    node._reply_encoder.shutdown(wait=True)


def become(server: NodeServer, role: Role, term: int, leader: str | None) -> None:
    raft = server.node.raft
    raft.role, raft.term, raft.leader_id = role, term, leader
    server._log_role_change()


def test_a_leader_that_loses_its_majority_says_so(server: NodeServer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="replikv")
    become(server, Role.LEADER, 4, "n1")
    become(server, Role.FOLLOWER, 4, None)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "stepped down as leader in term 4: no majority of the voters answered within an " \
           "election timeout (500 ms)" in warning.getMessage()
    assert [e["kind"] for e in server.events][-2:] == ["leader", "step-down"]
    caplog.clear()
    become(server, Role.PRE_CANDIDATE, 4, None)
    assert "an election for term 5 could win (pre-vote)" in caplog.text
    become(server, Role.CANDIDATE, 5, None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_new_term_or_a_removal_is_not_called_a_lost_majority(server: NodeServer,
                                                              caplog) -> None:
    caplog.set_level(logging.INFO, logger="replikv")
    become(server, Role.LEADER, 4, "n1")
    become(server, Role.FOLLOWER, 5, "n2")  # deposed by a later term: "following" says it
    assert "step-down" not in [e["kind"] for e in server.events]
    become(server, Role.LEADER, 6, "n1")
    server.node.raft.voters = ("n2", "n3")  # as when its removal has committed
    become(server, Role.FOLLOWER, 6, None)
    assert "stepped down as leader in term 6: no longer a voter" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
