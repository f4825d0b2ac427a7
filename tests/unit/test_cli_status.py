"""`replikv status` against fake admin endpoints: tiny HTTP servers answering canned /status."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from replikv.cli import main

LEADER = {
    "id": "n1", "role": "leader", "term": 7, "leader": "n1", "replication": "passive",
    "fsync": "always", "commit_index": 120, "applied_index": 120, "last_log_index": 125,
    "staleness_ms": 0, "fsync_p99_ms": 0.412,
    "followers": {
        "n2": {"match_index": 125, "next_index": 126, "lag_entries": 0, "lag_ms": 0,
               "connected": True, "last_contact_ms": 50},
        "n3": {"match_index": 110, "next_index": 111, "lag_entries": 15, "lag_ms": 340,
               "connected": False, "last_contact_ms": 2300},
    },
}
FOLLOWER = {
    "id": "n2", "role": "follower", "term": 7, "leader": "n1", "replication": "passive",
    "fsync": "always", "commit_index": 120, "applied_index": 119, "last_log_index": 121,
    "staleness_ms": 12, "fsync_p99_ms": None, "followers": {},
}
NEW_FOLLOWER = {**FOLLOWER, "id": "n4", "staleness_ms": None, "leader": None}


@pytest.fixture
def fake_node() -> Iterator:
    """Start fake admin servers: fake(body) -> "127.0.0.1:PORT" answering GET /status."""
    servers: list[ThreadingHTTPServer] = []

    def start(body: object, *, status_code: int = 200) -> str:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = status_code if self.path == "/status" else 404
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_address() -> str:
    """An address nobody listens on: a port the kernel gave us, closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def status(*args: str):
    return CliRunner().invoke(main, ["status", *args])


def line_of(output: str, address: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(address)]
    return line


def test_one_line_per_node_with_role_indexes_and_lag(fake_node) -> None:
    leader, follower, new = fake_node(LEADER), fake_node(FOLLOWER), fake_node(NEW_FOLLOWER)
    down = closed_port_address()

    result = status("--nodes", f"{leader},{follower},{new},{down}")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ADMIN", "ID", "ROLE", "TERM", "LEADER", "LAST", "COMMIT",
                                "APPLIED", "FSYNC99", "HEALTH", "LAG"]
    assert len(lines) == 6
    assert lines[-1] == "modes: replication passive, fsync always"
    assert line_of(result.output, leader).split()[:10] == [
        leader, "n1", "leader", "7", "n1", "125", "120", "120", "0.41", "ms"]
    assert "degraded: n3 unreachable" in line_of(result.output, leader)
    assert line_of(result.output, leader).endswith(
        "n2 0 entries/0 ms (heard 50 ms ago), n3 15 entries/340 ms (heard 2300 ms ago) "
        "(disconnected)")
    assert line_of(result.output, follower).split()[:10] == [
        follower, "n2", "follower", "7", "n1", "121", "120", "119", "-", "ok"]
    assert line_of(result.output, follower).endswith("staleness 12 ms")
    assert line_of(result.output, new).split()[4] == "-"
    assert "no leader" in line_of(result.output, new)
    assert "staleness unknown" in line_of(result.output, new)
    assert line_of(result.output, down).split()[:3] == [down, "?", "unreachable"]
    assert "down" in line_of(result.output, down).split()
    assert "refused" in line_of(result.output, down)


def test_json_has_every_answer_and_every_error(fake_node) -> None:
    leader, down = fake_node(LEADER), closed_port_address()

    result = status("--nodes", f"{leader},{down}", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"address": leader, "status": LEADER},
        {"address": down, "error": "connection refused"},
    ]


def test_none_answering_says_how_to_start_a_cluster() -> None:
    down = [closed_port_address(), closed_port_address()]

    result = status("--nodes", ",".join(down), "--timeout-s", "0.5")

    assert result.exit_code == 1
    assert f"no node answered at {down[0]}, {down[1]}" in result.output
    assert "replikv cluster up" in result.output


def test_none_answering_with_json_still_prints_the_errors() -> None:
    down = closed_port_address()

    result = status("--nodes", down, "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{"address": down, "error": "connection refused"}]
    assert "replikv cluster up" in result.stderr


def test_default_is_the_local_cluster_admin_ports() -> None:
    result = status("--help")

    assert "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203" in result.output.replace("\n", "")


@pytest.mark.parametrize("answer, status_code", [(b"<html>hello</html>", 200),
                                                 ({"error": "no such endpoint"}, 404),
                                                 ({"status": "ok"}, 200)])
def test_something_else_on_the_port_is_not_taken_for_a_node(fake_node, answer,
                                                             status_code) -> None:
    other, leader = fake_node(answer, status_code=status_code), fake_node(LEADER)

    result = status("--nodes", f"{other},{leader}")

    assert result.exit_code == 0, result.output
    assert line_of(result.output, other).split()[:3] == [other, "?", "unreachable"]
    assert "unexpected answer" in line_of(result.output, other)


@pytest.mark.parametrize("nodes", ["", "localhost", "localhost:http", "host:0", ":7201"])
def test_a_malformed_address_is_a_usage_error(nodes: str) -> None:
    result = status("--nodes", nodes)

    assert result.exit_code == 2
    assert "--nodes" in result.output


def test_health_says_what_needs_a_look(fake_node) -> None:
    healthy_leader = {**LEADER, "followers": {"n2": {**LEADER["followers"]["n2"]}}}
    stale = {**FOLLOWER, "staleness_ms": 9000}
    electing = {**FOLLOWER, "role": "candidate", "leader": None}
    addresses = [fake_node(b) for b in (healthy_leader, stale, electing)]

    result = status("--nodes", ",".join(addresses))

    assert result.exit_code == 0, result.output
    leader_cells = line_of(result.output, addresses[0]).split()
    assert leader_cells[8:11] == ["0.41", "ms", "ok"]  # FSYNC99 is "0.41 ms", then HEALTH
    assert [line_of(result.output, a).split()[8:10] for a in addresses[1:]] == [
        ["-", "stale"], ["-", "electing"]]


def test_modes_that_differ_between_nodes_are_flagged(fake_node) -> None:
    result = status("--nodes", f"{fake_node(LEADER)},{fake_node({**FOLLOWER, 'fsync': 'never'})}")

    assert result.output.splitlines()[-1] == (
        "modes: replication passive, fsync always; replication passive, fsync never  "
        "(the nodes differ!)")


def test_watch_refreshes_the_given_number_of_times(fake_node) -> None:
    leader = fake_node(LEADER)
    down = closed_port_address()

    result = status("--cluster", leader, "--watch", "--interval-s", "0.1", "--count", "3")

    assert result.exit_code == 0, result.output
    assert result.output.count("replikv status at ") == 3
    assert result.output.count("ADMIN") == 3
    # Nobody answering is shown, not fatal, while watching.
    result = status("--nodes", down, "--watch", "--interval-s", "0.1", "--count", "2",
                    "--timeout-s", "0.2")
    assert result.exit_code == 0, result.output
    assert result.output.count("no node answered") == 2
