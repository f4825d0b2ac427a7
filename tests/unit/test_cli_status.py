"""`replikv status` against fake admin endpoints: tiny HTTP servers answering canned /status."""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from click.testing import CliRunner
from rich.console import Console

from replikv import status_view
from replikv.cli import main

from .fake_http import fake_http_server

MIB = 1024 * 1024
GIB = 1024 * MIB
LEADER = {
    "id": "n1", "role": "leader", "term": 7, "leader": "n1", "replication": "passive",
    "fsync": "always", "commit_index": 120, "applied_index": 120, "last_log_index": 125,
    "staleness_ms": 0, "fsync_p99_ms": 0.412,
    "disk": {"path": "/data/n1", "total_bytes": 100 * GIB, "free_bytes": int(41.3 * GIB),
             "low_free_bytes": 512 * MIB, "state": "ok"},
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
    "disk": {"path": "/data/n2", "total_bytes": 100 * GIB, "free_bytes": 12 * GIB,
             "low_free_bytes": 512 * MIB, "state": "ok"},
}
NEW_FOLLOWER = {**FOLLOWER, "id": "n4", "staleness_ms": None, "leader": None}


@pytest.fixture
def fake_node() -> Iterator:
    """Start fake admin servers: fake(body) -> "127.0.0.1:PORT" answering GET /status."""
    with ExitStack() as servers:

        def start(body: object, *, status_code: int = 200) -> str:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()

            def answer(method: str, path: str, _body: bytes) -> tuple[int, bytes]:
                return (status_code if (method, path) == ("GET", "/status") else 404), payload

            return f"127.0.0.1:{servers.enter_context(fake_http_server(answer))}"

        yield start


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


def cells_of(line: str) -> list[str]:
    """A plain table line's cells (columns are at least two spaces apart)."""
    return re.split(r" {2,}", line.strip())


def test_one_line_per_node_with_role_indexes_and_lag(fake_node) -> None:
    leader, follower, new = fake_node(LEADER), fake_node(FOLLOWER), fake_node(NEW_FOLLOWER)
    down = closed_port_address()

    result = status("--nodes", f"{leader},{follower},{new},{down}")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ADMIN", "ID", "ROLE", "TERM", "LEADER", "LAST", "COMMIT",
                                "APPLIED", "FSYNC99", "DISK", "HEALTH", "LAG", "CONTACT"]
    assert len(lines) == 6
    assert lines[-1] == "modes: replication passive, fsync always"
    assert line_of(result.output, leader).split()[:10] == [
        leader, "n1", "leader", "7", "n1", "125", "120", "120", "0.41", "ms"]
    assert "degraded: n3 unreachable" in line_of(result.output, leader)
    assert cells_of(line_of(result.output, leader))[-2:] == [
        "n2 0 entries/0 ms, n3 15 entries/340 ms (disconnected)",  # LAG
        "n2 50 ms ago, n3 2300 ms ago"]  # CONTACT: when the leader last heard from each
    assert line_of(result.output, follower).split()[:12] == [
        follower, "n2", "follower", "7", "n1", "121", "120", "119", "-", "12.0", "GiB", "ok"]
    assert cells_of(line_of(result.output, follower))[-2:] == ["staleness 12 ms", "-"]
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
    # FSYNC99 is "0.41 ms", DISK "41.3 GiB", then HEALTH
    assert leader_cells[8:13] == ["0.41", "ms", "41.3", "GiB", "ok"]
    assert [line_of(result.output, a).split()[8:12] for a in addresses[1:]] == [
        ["-", "12.0", "GiB", "stale"], ["-", "12.0", "GiB", "electing"]]


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


# The table itself (replikv.status_view), from canned /status answers.

STANDBY = {**FOLLOWER, "id": "n4", "role": "standby", "staleness_ms": 30}
ADDRESSES = ["10.0.0.1:7201", "10.0.0.2:7201", "10.0.0.4:7201", "10.0.0.3:7201"]
ANSWERS = [(LEADER, None), (FOLLOWER, None), (STANDBY, None), (None, "connection refused")]


def rendered(*renderables, width: int = 200, **console_options) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), **console_options)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text(styles=bool(console_options.get("force_terminal")))


def test_the_table_has_each_nodes_role_health_lag_and_contact() -> None:
    text = rendered(status_view.build_table(ADDRESSES, ANSWERS))

    header, *rows = text.splitlines()
    assert header.split() == status_view.HEADER
    assert len(rows) == 4  # one line per node
    by_address = {cells_of(row)[0]: cells_of(row) for row in rows}
    assert by_address["10.0.0.1:7201"] == [
        "10.0.0.1:7201", "n1", "leader", "7", "n1", "125", "120", "120", "0.41 ms",
        "41.3 GiB", "degraded: n3 unreachable", "n2 0 entries/0 ms, n3 15 entries/340 ms (disconnected)",
        "n2 50 ms ago, n3 2300 ms ago"]
    assert by_address["10.0.0.2:7201"] == [
        "10.0.0.2:7201", "n2", "follower", "7", "n1", "121", "120", "119", "-", "12.0 GiB",
        "ok", "staleness 12 ms", "-"]
    assert by_address["10.0.0.4:7201"] == [
        "10.0.0.4:7201", "n4", "standby", "7", "n1", "121", "120", "119", "-", "12.0 GiB",
        "ok", "staleness 30 ms", "-"]
    assert by_address["10.0.0.3:7201"] == [
        "10.0.0.3:7201", "?", "unreachable", "-", "-", "-", "-", "-", "-", "-", "down",
        "connection refused", "-"]


def test_numbers_are_right_aligned() -> None:
    answers = [({**LEADER, "term": 12345, "last_log_index": 9}, None), (FOLLOWER, None)]

    header, leader, follower = rendered(
        status_view.build_table(ADDRESSES[:2], answers)).splitlines()

    for column in ("TERM", "LAST", "COMMIT", "APPLIED", "FSYNC99", "DISK"):
        end = header.index(column) + len(column)
        assert leader[end - 1] != " " and follower[end - 1] != " ", column
        assert leader[end] == " " and follower[end] == " ", column
    term_end = header.index("TERM") + len("TERM")
    assert (leader[term_end - 5:term_end], follower[term_end - 5:term_end]) == ("12345", "    7")


def test_on_a_terminal_each_follower_has_its_own_line_in_lag_and_contact() -> None:
    text = rendered(status_view.build_table(ADDRESSES[:1], ANSWERS[:1], one_line=False))

    _, first, second = text.splitlines()
    assert cells_of(first)[-2:] == ["n2 0 entries/0 ms", "n2 50 ms ago"]
    assert cells_of(second) == ["n3 15 entries/340 ms (disconnected)", "n3 2300 ms ago"]


def test_roles_and_health_have_colours_on_a_terminal() -> None:
    electing = {**FOLLOWER, "id": "n5", "role": "candidate", "leader": None}
    answers = [*ANSWERS, (electing, None)]

    text = rendered(status_view.build_table([*ADDRESSES, "10.0.0.5:7201"], answers),
                    force_terminal=True, color_system="standard")

    assert "\x1b[1;32mleader" in text  # bold green
    assert "\x1b[36mstandby" in text  # cyan
    assert "\x1b[33mcandidate" in text  # yellow
    assert "\x1b[31munreachable" in text  # red
    assert "\x1b[32mok" in text  # green
    assert "\x1b[33mdegraded: n3 unreachable" in text  # yellow
    assert "\x1b[31mdown" in text  # red
    assert "\x1b[33melecting" in text
    assert "follower" in text and "\x1b[36mfollower" not in text  # followers: no colour


def test_text_from_a_node_is_not_taken_for_markup() -> None:
    odd = {**FOLLOWER, "id": "[bold]n9[/bold]", "leader": "[red]x"}

    text = rendered(status_view.build_table(["h:1", "h:2"],
                                            [(odd, None), (None, "[Errno 111] refused")]))

    assert "[bold]n9[/bold]" in text and "[red]x" in text and "[Errno 111] refused" in text


def test_contact_says_how_long_ago_in_readable_units() -> None:
    followers = {"n2": {**LEADER["followers"]["n2"], "last_contact_ms": 42_000},
                 "n3": {**LEADER["followers"]["n3"], "last_contact_ms": None},
                 "n4": {**LEADER["followers"]["n2"], "last_contact_ms": 9 * 60_000 + 59_000},
                 "n5": {**LEADER["followers"]["n2"], "last_contact_ms": 3 * 3_600_000}}

    assert status_view.contact({**LEADER, "followers": followers}) == (
        "n2 42 s ago, n3 never, n4 599 s ago, n5 3 h ago")
    assert status_view.contact({**LEADER, "followers": {}}) == "-"
    assert status_view.lag({**LEADER, "followers": {}}) == "no followers"
    assert status_view.contact(FOLLOWER) == "-"
    assert status_view.ago(120_000 * 30) == "60 min ago"


def test_modes_line_flags_nodes_that_differ() -> None:
    assert status_view.modes_line(ANSWERS).plain == "modes: replication passive, fsync always"
    differ = [*ANSWERS, ({**FOLLOWER, "replication": "active"}, None)]
    assert status_view.modes_line(differ).plain == (
        "modes: replication active, fsync always; replication passive, fsync always  "
        "(the nodes differ!)")


NO_FORCED_COLOUR = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": "80"}


def test_piped_output_is_plain_text_one_line_per_node(fake_node) -> None:
    leader = fake_node({**LEADER, "followers": {
        f"n{i}": {**LEADER["followers"]["n3"]} for i in range(2, 8)}})
    standby, down = fake_node(STANDBY), closed_port_address()

    result = CliRunner(env=NO_FORCED_COLOUR).invoke(
        main, ["status", "--nodes", f"{leader},{standby},{down}"])

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 5  # header, 3 nodes, modes: nothing wrapped, even past 80 columns
    assert len(line_of(result.output, leader)) > 200
    assert cells_of(line_of(result.output, leader))[-1] == ", ".join(
        f"n{i} 2300 ms ago" for i in range(2, 8))
    assert cells_of(line_of(result.output, standby))[2] == "standby"
    assert all(line == line.rstrip() for line in lines)


def test_piped_watch_prints_plain_tables_under_timestamps(fake_node) -> None:
    leader = fake_node(LEADER)

    result = CliRunner(env=NO_FORCED_COLOUR).invoke(
        main, ["status", "--nodes", leader, "--watch", "--interval-s", "0.1", "--count", "2"])

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    lines = result.output.splitlines()
    assert [line.startswith("replikv status at ") for line in lines] == [
        True, False, False, False] * 2
    assert lines[1].split() == status_view.HEADER


def test_watch_on_a_terminal_redraws_in_place(fake_node) -> None:
    leader, down = fake_node(LEADER), closed_port_address()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="standard")

    status_view.watch([leader, down], 1.0, False, 0.1, 2, console=console)

    frames = out.getvalue().split("replikv status at ")[1:]
    assert len(frames) >= 2  # 2 refreshes (Live draws the last one once more as it stops)
    for frame in frames:
        assert "\x1b[1;32mleader" in frame and "connection refused" in frame
        # On a terminal each follower has its own line in LAG and CONTACT.
        assert any(re.search(r"  n2 0 entries/0 ms +n2 50 ms ago *$", line)
                   for line in frame.splitlines()), frame
    # Each frame but the last is then erased in place: cursor up, erase line.
    assert all("\x1b[1A\x1b[2K" in frame for frame in frames[:-1])
    assert "\x1b[1A" not in frames[-1]  # and the last one stays on the screen


def test_once_on_a_terminal_has_colours_and_a_line_per_follower(fake_node) -> None:
    leader = fake_node(LEADER)
    out = io.StringIO()

    status_view.show([leader], 1.0, False,
                     Console(file=out, force_terminal=True, width=200, color_system="standard"))

    lines = out.getvalue().splitlines()
    assert "\x1b[1;32mleader" in lines[1]
    assert re.search(r"  n2 0 entries/0 ms +n2 50 ms ago *$", lines[1]), lines
    assert re.search(r"  n3 15 entries/340 ms \(disconnected\) +n3 2300 ms ago *$", lines[2])
    assert lines[3] == "modes: replication passive, fsync always"


def test_members_the_answers_name_are_asked_too(fake_node) -> None:
    """A standby (or a member added later) that --nodes did not list is found in the address
    book every /status carries, and gets its own row; --no-discover asks only what was given."""
    standby = fake_node({**FOLLOWER, "id": "n4", "role": "standby"})
    down = closed_port_address()
    elsewhere = closed_port_address()  # n1's own entry: n1 answered, so it is not asked again
    book = {"n1": {"admin": elsewhere}, "n4": {"admin": standby}, "n5": {"admin": down}}
    leader = fake_node({**LEADER, "addresses": book})

    result = status("--nodes", leader)

    assert result.exit_code == 0, result.output
    assert elsewhere not in result.output
    assert line_of(result.output, standby).split()[1:3] == ["n4", "standby"]
    assert line_of(result.output, down).split()[1:3] == ["?", "unreachable"]
    assert len(result.output.splitlines()) == 5  # header, n1, n4, n5, modes
    only = status("--nodes", leader, "--no-discover")
    assert only.exit_code == 0 and standby not in only.output and down not in only.output


@pytest.mark.parametrize("admin", [
    "evil.example/x:80",  # a path: the query would go elsewhere
    "user@host:80", "host:80/status?", "host", "host:port", " host:80", 42, None,
])
def test_only_plain_host_port_addresses_from_the_nodes_are_asked(admin) -> None:
    answers = [({**LEADER, "addresses": {"n9": {"admin": admin}}}, None)]
    assert status_view.discovered(["127.0.0.1:7201"], answers) == []


def test_discovery_skips_answered_members_and_stays_bounded() -> None:
    book = {f"n{i}": {"admin": f"127.0.0.1:{8000 + i}"} for i in range(1, 200)}
    answers = [({**LEADER, "addresses": book}, None)]
    extra = status_view.discovered(["127.0.0.1:7201"], answers)
    assert "127.0.0.1:8001" not in extra  # n1 answered (from another address)
    assert len(extra) == status_view.NODES_MAX - 1
    assert status_view.discovered(["127.0.0.1:7201"], [(None, "refused")]) == []


LOW_DISK = {**FOLLOWER, "id": "n3", "disk": {
    "path": "/data/n3", "total_bytes": 100 * GIB, "free_bytes": 300 * MIB,
    "low_free_bytes": 512 * MIB, "state": "low"}}


def test_a_low_disk_is_shown_in_its_row_and_warned_about_under_the_table(fake_node) -> None:
    leader, low = fake_node(LEADER), fake_node(LOW_DISK)

    result = CliRunner(env=NO_FORCED_COLOUR).invoke(main, ["status", "--nodes", f"{leader},{low}"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5  # header, 2 nodes, modes, one warning
    assert cells_of(line_of(result.output, low))[8:11] == ["-", "300.0 MiB (low)", "ok"]
    assert cells_of(line_of(result.output, leader))[9] == "41.3 GiB"
    assert lines[-2] == "modes: replication passive, fsync always"
    assert lines[-1] == (
        f"WARNING: the disk of n3 ({low}) is low: 300.0 MiB free in /data/n3, below "
        "disk_low_free_bytes (512.0 MiB). A node whose disk fills stops; free space on that "
        "file system or move the data dir")


def test_no_warning_while_every_disk_is_ok_or_unreported() -> None:
    older = {k: v for k, v in FOLLOWER.items() if k != "disk"}  # a node that does not say
    odd = {**FOLLOWER, "disk": {"free_bytes": "lots", "state": "low"}}
    answers = [(LEADER, None), (older, None), (odd, None), (None, "connection refused")]

    assert status_view.disk_warnings(ADDRESSES, answers) == []
    assert [status_view.disk_cell(body).plain for body in (LEADER, older, odd)] == [
        "41.3 GiB", "-", "-"]
    assert [line.plain for line in status_view.footer(ADDRESSES, answers)] == [
        "modes: replication passive, fsync always"]


def test_a_low_disk_is_yellow_on_a_terminal(fake_node) -> None:
    out = io.StringIO()

    status_view.show([fake_node(LOW_DISK)], 1.0, False,
                     Console(file=out, force_terminal=True, width=300, color_system="standard"))

    text = out.getvalue()
    assert "\x1b[1;33m300.0 MiB (low)" in text
    assert "\x1b[1;33mWARNING: the disk of n3" in text


def test_discovery_goes_on_through_the_members_each_answer_names(fake_node) -> None:
    """A follower's address book may lack another follower's admin address (it learns it only
    from that member's own messages), while the leader's has it: `replikv status` given only
    the follower still shows every member."""
    n3 = fake_node({**FOLLOWER, "id": "n3"})
    leader = fake_node({**LEADER, "id": "n2", "addresses": {"n3": {"admin": n3}}})
    follower = fake_node({**FOLLOWER, "id": "n1",
                          "addresses": {"n2": {"admin": leader}, "n3": {"admin": None}}})

    asked, answers = status_view.collect([follower], 2.0)

    assert asked == [follower, leader, n3]
    assert [body["id"] for body, _ in answers] == ["n1", "n2", "n3"]


def test_a_leader_over_maxmemory_is_warned_about_under_the_table(fake_node) -> None:
    full = {**LEADER, "memory": {"used_bytes": 110 * MIB, "maxmemory": 100 * MIB,
                                 "full": True, "oom_rejections": 3}}
    leader, follower = fake_node(full), fake_node({**FOLLOWER, "memory": full["memory"]})

    result = CliRunner(env=NO_FORCED_COLOUR).invoke(
        main, ["status", "--nodes", f"{leader},{follower}"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5  # header, 2 nodes, modes, one warning (the leader's, not twice)
    assert lines[-1] == (
        f"WARNING: the keyspace holds 110.0 MiB, over the leader's maxmemory (100.0 MiB; n1 at "
        f"{leader}): writes that add data are refused with OOM. Delete keys or give them "
        "expiries, or raise maxmemory on every member (CONFIG SET maxmemory, and their configs)")


def test_no_memory_warning_within_maxmemory_or_from_nodes_that_do_not_say() -> None:
    within = {**LEADER, "memory": {"used_bytes": 10, "maxmemory": 100, "full": False}}
    odd = {**LEADER, "memory": {"used_bytes": "much", "maxmemory": 1, "full": True}}
    answers = [(within, None), (LEADER, None), (odd, None), (None, "connection refused")]

    assert status_view.memory_warnings(ADDRESSES, answers) == []


def test_a_nearly_full_disk_is_red_and_says_that_writes_are_refused(fake_node) -> None:
    full = {**FOLLOWER, "id": "n3", "disk": {
        "path": "/data/n3", "total_bytes": 100 * GIB, "free_bytes": 10 * MIB,
        "low_free_bytes": 512 * MIB, "min_free_bytes": 16 * MIB, "state": "low",
        "writes_refused": True, "rejections": 4}}
    leader, node = fake_node(LEADER), fake_node(full)

    result = CliRunner(env=NO_FORCED_COLOUR).invoke(main, ["status", "--nodes", f"{leader},{node}"])

    assert result.exit_code == 0, result.output
    assert cells_of(line_of(result.output, node))[9] == "10.0 MiB (full)"
    assert result.output.splitlines()[-1] == (
        f"WARNING: the disk of n3 ({node}) is nearly full: 10.0 MiB free in /data/n3, below "
        "disk_min_free_bytes (16.0 MiB). As leader it refuses writes that add data (MISCONF); "
        "free space on that file system or move the data dir")
    assert status_view.disk_cell(full).style == "bold red"


def test_members_of_different_feature_levels_are_noted_under_the_table() -> None:
    def at(body: dict, node: str, level: int) -> dict:
        return {**body, "id": node,
                "features": {"cluster_level": 1, "this_node": level, "members": {}}}

    mixed = [(at(LEADER, "n1", 2), None), (at(FOLLOWER, "n2", 2), None),
             (at(FOLLOWER, "n3", 1), None), (None, "connection refused")]
    lines = status_view.feature_warnings(mixed)
    assert [line.plain for line in lines] == [
        ("NOTE: the members run replikv of different feature levels (n1 2, n2 2, n3 1) (the "
        "cluster's log is at level 1): writes that need level 2 are refused until every "
        "member runs a replikv of that level; finish the upgrade")]
    same = [(at(LEADER, "n1", 2), None), (at(FOLLOWER, "n2", 2), None), (None, "timed out")]
    assert status_view.feature_warnings(same) == []
    # A node whose /status has no "features" runs a replikv from before feature levels: 1.
    older = [(at(FOLLOWER, "n1", 2), None), ({**LEADER, "id": "n2"}, None)]
    assert "(n1 2, n2 1)" in status_view.feature_warnings(older)[0].plain
