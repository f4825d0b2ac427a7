"""The failover playground on a real `replikv cluster up`: pause the leader (SIGSTOP) and watch
another node take over, resume it and see it follow; kill the new leader (SIGKILL) and restart
it through the supervisor; a pid that no longer runs the node is never signalled."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import (
    HOST,
    PYTHON,
    REPO_ROOT,
    free_base_port,
    raw_command,
    stop_cluster_up,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def replikv(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "replikv", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
                          check=False)


def status(admin_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{admin_port}/status", timeout=1) as r:
            return json.loads(r.read())
    except OSError:
        return None


@contextlib.contextmanager
def cluster_up(tmp_path: Path, *args: str, base: int | None = None, nodes: int = 3,
               relative: bool = False) -> Iterator[tuple[int, Path, Path, set[int]]]:
    """A real `replikv cluster up` (3 voters; `args` are more of its options, `nodes` how many
    processes they make) with a leader: yields (base port, data dir, its log, the node pids to
    clean up should it fail to stop them); stopped however this ends. `relative`: started
    from tmp_path with its default data dir, `replikv-data` (as the README's quick start)."""
    base = base or free_base_port(nodes)
    data_dir = tmp_path / ("replikv-data" if relative else "data")
    log_path = tmp_path / "cluster-up.log"
    where = ([] if relative else ["--data-dir", str(data_dir)])
    with open(log_path, "a") as log:
        up = subprocess.Popen([PYTHON, "-m", "replikv", "cluster", "up", "--base-port",
                               str(base), *where, *args],
                              stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path if relative else REPO_ROOT,
                              start_new_session=True)
    state_path = data_dir / "cluster.json"
    pids: set[int] = set()

    def ready() -> bool:
        return up.poll() is not None or state_path.exists() and any(
            (s := status(base + 200 + i)) is not None and s["role"] == "leader"
            for i in range(nodes))

    try:
        wait_until(ready, timeout_s=30.0, what="cluster up with a leader")
        assert up.poll() is None, log_path.read_text()
        pids |= {n["pid"] for n in json.loads(state_path.read_text())["nodes"].values()}
        yield base, data_dir, log_path, pids
    finally:
        stop_cluster_up(up, pids)
    assert "cluster stopped" in log_path.read_text()
    assert not state_path.exists()


def test_the_cluster_commands_find_nodes_started_from_a_relative_data_dir(
        tmp_path: Path) -> None:
    """The README's way: `cluster up` with its default, relative `replikv-data`, then `cluster
    pause`/`resume`/`kill`/`restart` from the same directory, before and after a restart. The
    nodes once ran with a relative --config that the pid check (which compares the config's
    full path) never matched, so every one of these commands refused."""
    def here(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "replikv", "cluster", *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=60, check=False)

    with cluster_up(tmp_path, relative=True) as (_base, data_dir, log_path, pids):
        for node_id in ("n1", "n2"):
            paused = here("pause", node_id)
            assert paused.returncode == 0, paused.stderr
            assert here("resume", node_id).returncode == 0
        killed = here("kill", "n3")
        assert killed.returncode == 0, killed.stderr
        wait_until(lambda: "killed by SIGKILL" in log_path.read_text(), timeout_s=10.0,
                   what="cluster up noticing the crash")
        restarted = here("restart", "n3")
        assert restarted.returncode == 0, restarted.stderr
        pids |= {n["pid"] for n in json.loads((data_dir / "cluster.json").read_text())
                 ["nodes"].values() if n["pid"]}
        paused = here("pause", "n3")  # the restarted process is found too
        assert paused.returncode == 0, paused.stderr
        assert here("resume", "n3").returncode == 0
        by_hand = [line for line in log_path.read_text().splitlines() if "by hand" in line]
        assert by_hand and f"--config {data_dir.resolve()}/n3.toml" in by_hand[-1]


def test_a_second_cluster_up_on_a_running_data_dir_is_refused_and_changes_nothing(
        tmp_path: Path) -> None:
    import signal

    with cluster_up(tmp_path) as (_base, data_dir, _log_path, _pids):
        files = {p: p.read_bytes() for p in data_dir.glob("*.toml")} | {
            data_dir / "cluster.json": (data_dir / "cluster.json").read_bytes()}
        second = subprocess.run(
            [PYTHON, "-m", "replikv", "cluster", "up", "--data-dir", str(data_dir),
             "--base-port", str(free_base_port(3))],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=30, check=False)
        assert second.returncode == 1 and "already runs from" in second.stderr, second.stderr
        assert {p: p.read_bytes() for p in files} == files  # configs and state untouched
        paused = replikv(data_dir, "cluster", "pause", "n1")
        assert paused.returncode == 0, paused.stderr
        assert replikv(data_dir, "cluster", "resume", "n1").returncode == 0
        # Closing its terminal (SIGHUP) stops the nodes too, not only the supervisor.
        state = json.loads((data_dir / "cluster.json").read_text())
        os.kill(state["supervisor_pid"], signal.SIGHUP)
        node_pids = [n["pid"] for n in state["nodes"].values()]
        wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and
                                   "zombie" not in _proc_state(p) for p in node_pids),
                   timeout_s=20.0, what="the nodes stopping after SIGHUP")


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


def test_cluster_up_stops_with_an_error_when_every_node_fails(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i in (1, 2, 3):
        (data_dir / f"n{i}").write_text("not a directory")  # every node refuses to start
    done = subprocess.run(
        [PYTHON, "-m", "replikv", "cluster", "up", "--data-dir", str(data_dir), "--base-port",
         str(free_base_port(3))],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "every node stopped with an error" in done.stderr
    same = subprocess.run(
        [PYTHON, "-m", "replikv", "cluster", "up", "--data-dir", str(data_dir),
         "--archive-dir", str(data_dir)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert same.returncode == 2 and "outside the data dir" in same.stderr


def test_pause_kill_resume_restart_a_local_cluster(tmp_path: Path) -> None:
    with cluster_up(tmp_path) as (base, data_dir, log_path, pids):
        pause_kill_resume_restart(base, data_dir, log_path, pids)
    gone = replikv(data_dir, "cluster", "resume", "n1")
    assert gone.returncode == 1 and "no local cluster is running" in gone.stderr


def pause_kill_resume_restart(base: int, data_dir: Path, log_path: Path, pids: set[int]) -> None:
    admin = {f"n{i + 1}": base + 200 + i for i in range(3)}
    state_path = data_dir / "cluster.json"

    def leader(exclude: str | None = None) -> str | None:
        for node_id, port in admin.items():
            s = status(port) if node_id != exclude else None
            if s is not None and s["role"] == "leader":
                return node_id
        return None

    first = leader()
    term = status(admin[first])["term"]

    paused = replikv(data_dir, "cluster", "pause", first)
    assert paused.returncode == 0, paused.stderr
    assert f"{first} paused (SIGSTOP)" in paused.stdout
    second = wait_until(lambda: leader(exclude=first), timeout_s=15.0,
                        what="a new leader while the old one is frozen")
    assert second != first
    assert status(admin[second])["term"] > term
    assert raw_command(base + int(second[1:]) - 1, "SET", "during", "pause") == b"OK"

    resumed = replikv(data_dir, "cluster", "resume", first)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: (s := status(admin[first])) is not None and s["role"] == "follower"
               and s["leader"] == second, timeout_s=15.0,
               what="the resumed node following the new leader")

    killed = replikv(data_dir, "cluster", "kill", second)
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: "killed by SIGKILL" in log_path.read_text(), timeout_s=10.0,
               what="cluster up noticing the crash")
    again = replikv(data_dir, "cluster", "kill", second)
    assert again.returncode == 1 and "is not running" in again.stderr
    third = wait_until(lambda: leader(exclude=second), timeout_s=15.0,
                       what="a leader among the two left")

    restarted = replikv(data_dir, "cluster", "restart", second)
    assert restarted.returncode == 0, restarted.stderr + log_path.read_text()[-2000:]
    pids |= {n["pid"] for n in json.loads(state_path.read_text())["nodes"].values()
             if n["pid"]}
    wait_until(lambda: (s := status(admin[second])) is not None and s["leader"] == third
               and s["applied_index"] >= status(admin[third])["commit_index"] - 5,
               timeout_s=20.0, what="the restarted node caught up")
    port = base + int(second[1:]) - 1
    assert raw_command(port, "REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY",
                       "local", "GET", "during") == b"pause"

    # A stale pid in the state file is not signalled.
    state = json.loads(state_path.read_text())
    state["nodes"]["n1"]["pid"] = os.getpid()  # alive, but not a node
    state_path.write_text(json.dumps(state))
    refused = replikv(data_dir, "cluster", "kill", "n1")
    assert refused.returncode == 1 and "is not n1's node process" in refused.stderr
    unknown = replikv(data_dir, "cluster", "pause", "n9")
    assert unknown.returncode == 1 and "no node 'n9'" in unknown.stderr


def test_a_standby_replaces_a_killed_voter_and_the_cluster_resumes_as_it_was_left(
        tmp_path: Path) -> None:
    """`cluster up --standbys 1 --auto-replace-after-ms`: n4 joins as a standby; killing the
    leader makes it a voter in the lost node's place; the lost node comes back as a standby;
    and a second `cluster up` on the same data dir keeps that membership."""
    args = ("--standbys", "1", "--auto-replace-after-ms", "1500")
    admin = {f"n{i + 1}": i + 200 for i in range(4)}  # offsets from the base port

    def members(base: int, node_id: str) -> tuple[list[str], list[str]] | None:
        s = status(base + admin[node_id])
        return None if s is None else (sorted(s["voters"]), sorted(s["standbys"]))

    with cluster_up(tmp_path, *args, nodes=4) as (base, data_dir, log_path, pids):
        wait_until(lambda: all(members(base, n) == (["n1", "n2", "n3"], ["n4"])
                               for n in admin), timeout_s=20.0,
                   what="n4 added as a standby on every node")
        assert status(base + admin["n4"])["role"] == "standby"
        assert "n4 added as a standby" in log_path.read_text()
        # `replikv status` given one voter finds the standby through the members' addresses.
        shown = subprocess.run([PYTHON, "-m", "replikv", "status", "--nodes",
                                f"{HOST}:{base + 200}"], capture_output=True, text=True,
                               cwd=REPO_ROOT, timeout=30, check=False)
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines()
                   if line.startswith(f"{HOST}:{base + 203}"))
        assert row.split()[1:3] == ["n4", "standby"], shown.stdout
        leader = next(n for n in ("n1", "n2", "n3")
                      if status(base + admin[n])["role"] == "leader")
        assert raw_command(base + int(leader[1:]) - 1, "SET", "before", "kill") == b"OK"
        assert replikv(data_dir, "cluster", "kill", leader).returncode == 0
        voters = sorted({"n1", "n2", "n3", "n4"} - {leader})
        survivor = voters[0]
        wait_until(lambda: members(base, survivor) == (voters, [leader]), timeout_s=30.0,
                   what=f"n4 voting in place of the killed {leader}")
        restarted = replikv(data_dir, "cluster", "restart", leader)
        assert restarted.returncode == 0, restarted.stderr
        pids |= {n["pid"] for n in json.loads((data_dir / "cluster.json").read_text())[
            "nodes"].values() if n["pid"]}
        wait_until(lambda: (s := status(base + admin[leader])) is not None
                   and s["role"] == "standby" and s["leader"] is not None, timeout_s=30.0,
                   what=f"{leader} back as a standby")
        assert raw_command(base + 3, "REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY",
                           "local", "GET", "before") == b"kill"  # n4 has the data
    with cluster_up(tmp_path, *args, base=base, nodes=4) as (_, _, log_path, _):
        wait_until(lambda: "n4 is a member already" in log_path.read_text(), timeout_s=20.0,
                   what="the supervisor finding n4 a member already")
        wait_until(lambda: all(members(base, n) == (voters, [leader]) for n in admin),
                   timeout_s=20.0, what="the same membership after the restart")


def test_partition_heal_and_slow_inside_the_peer_transport(tmp_path: Path) -> None:
    with cluster_up(tmp_path) as (base, data_dir, _log_path, _pids):
        partition_heal_slow(base, data_dir)


def partition_heal_slow(base: int, data_dir: Path) -> None:
    admin = {f"n{i + 1}": base + 200 + i for i in range(3)}
    client = {f"n{i + 1}": base + i for i in range(3)}

    def leaders() -> list[str]:
        out = []
        for node_id, port in admin.items():
            s = status(port)
            if s is not None and s["role"] == "leader":
                out.append(node_id)
        return out

    (old,) = leaders()
    assert raw_command(client[old], "SET", "before", "1") == b"OK"

    cut = replikv(data_dir, "cluster", "partition", old)
    assert cut.returncode == 0, cut.stderr
    others = sorted(n for n in admin if n != old)
    assert f"partitioned: {old} | {' '.join(others)}" in cut.stdout
    new = wait_until(lambda: next((n for n in leaders() if n != old), None),
                     timeout_s=15.0, what="a leader on the majority side")
    # The majority side takes writes; the cut-off node steps down (CheckQuorum) and
    # cannot commit anything.
    assert raw_command(client[new], "SET", "during", "partition") == b"OK"
    wait_until(lambda: status(admin[old])["role"] != "leader", timeout_s=15.0,
               what="the isolated leader stepping down")
    s = status(admin[old])
    assert s["faults"]["blocked"] == others and s["faults"]["dropped"] > 0

    healed = replikv(data_dir, "cluster", "heal")
    assert healed.returncode == 0, healed.stderr
    wait_until(lambda: (s := status(admin[old]))["leader"] == new and s["faults"][
        "blocked"] == [] and s["applied_index"] >= status(admin[new])["commit_index"],
        timeout_s=15.0, what="the healed node following and caught up")
    assert raw_command(client[old], "REPLIKV", "WITH", "READPREF", "nearest",
                       "CONSISTENCY", "local", "GET", "during") == b"partition"

    # One slow follower: w=majority does not wait for it, w=all does.
    slow = next(n for n in admin if n != new)
    slowed = replikv(data_dir, "cluster", "slow", slow, "--delay-ms", "300")
    assert slowed.returncode == 0 and "waits 300 ms" in slowed.stdout, slowed.stderr

    def timed(*argv: str) -> float:
        started = time.monotonic()
        assert raw_command(client[new], *argv) == b"OK"
        return time.monotonic() - started

    assert timed("REPLIKV", "WITH", "W", "all", "SET", "slow", "all") >= 0.3
    assert min(timed("SET", "slow", f"majority{i}") for i in range(3)) < 0.3
    replikv(data_dir, "cluster", "heal")
    assert status(admin[slow])["faults"]["delay_ms"] == 0


def test_fault_injection_is_refused_unless_switched_on(shared_cluster):
    req = urllib.request.Request(
        f"http://{HOST}:{shared_cluster.nodes['n1'].admin_port}/faults?block=n2", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("POST /faults was accepted without --fault-injection")
    except urllib.error.HTTPError as e:
        assert e.code == 403
        assert "--fault-injection" in json.loads(e.read())["error"]
    assert "faults" not in shared_cluster.status("n1")
