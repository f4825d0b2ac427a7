"""What replication mode, write concern and read preference promise, on real processes.

- Acknowledged writes at w=majority and w=all survive kill -9 of the leader, in both modes: a
  recorded history of concurrent clients is linearizable.
- A write acknowledged at w=1 that a new leader discards is not lost silently: the deposed
  node saves it in a rollback file, marked acknowledged, and counts it in INFO.
- w=all with a member down answers WTIMEOUT once its WTIMEOUT passes, and the write is there;
  WAIT counts the replicas that hold the connection's writes.
- Read preferences: NOTSECONDARY on the primary, STALE beyond MAXSTALENESS; reads on one
  connection never go back in time, and a connection reads its own writes.
- Passive backups only replay effects, never execute a command; in active mode every replica
  executes every command; either way all replicas end up with the same data.

The options are set per command with `REPLIKV WITH ...` where a test must survive reconnects
(redis-py opens a new connection after an error, which would lose per-connection settings),
and per connection with `REPLIKV WRITECONCERN|READPREF|CONSISTENCY` where the test is about the
connection. Every seed is printed; REPLIKV_TEST_SEED replays one.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import threading
import time

import hiredis
import pytest
import redis

from replikv.check.history import HistoryRecorder
from replikv.check.linearizability import check_history, format_result

from .cluster import PYTHON, Cluster, raw_command, wait_until
from .history_clients import HistoryWorkload, run_history_clients

pytestmark = pytest.mark.timeout(90)

SEED = int(os.environ.get("REPLIKV_TEST_SEED", str(random.randrange(1 << 30))))
MODES = ["passive", "active"]
CLI_TIMEOUT_S = 20.0


def replikv_args(mode: str) -> list[str]:
    return ["--replication", mode]


def stats(cluster: Cluster, node_id: str) -> dict[str, int]:
    return {k: int(v) for k, v in cluster.info(node_id, "stats").items() if v.isdigit()}


def wait_caught_up(cluster: Cluster, timeout_s: float = 10.0) -> str:
    """Wait until every running node has applied the leader's commit index and the leader
    holds nothing applied ahead of it; returns the leader."""
    leader = cluster.leader()

    def caught_up() -> bool:
        lead = cluster.status(leader)
        if lead["applied_ahead"] or lead["role"] != "leader":
            return False
        return all(cluster.status(i)["applied_index"] == lead["commit_index"]
                   for i in cluster.alive_ids())

    wait_until(caught_up, timeout_s=timeout_s, what="every node to apply the commit index")
    return leader


def run_cli(*args: str) -> str:
    """Run `replikv ARGS...` (the CLI an operator would use) and return its stdout."""
    result = subprocess.run([PYTHON, "-m", "replikv", *args], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"replikv {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


# -- 1. acknowledged writes survive a leader crash, at w=majority and w=all -------------------

HISTORY_CLIENTS = 4
HISTORY_KEYS = [b"h0", b"h1", b"h2"]
HISTORY_LOAD_S = 4.0
HISTORY_WTIMEOUT_MS = 400


def _final_reads(cluster: Cluster, recorder: HistoryRecorder, client: int) -> None:
    """Read every key through every node once the cluster is healed: these reads must see
    every acknowledged write (the checker places them after everything that completed)."""
    for node in cluster.ids:
        r = cluster.client(node)
        for key in HISTORY_KEYS:
            handle = recorder.invoke(client, key, "get", None, None, now_ns=time.monotonic_ns())
            result = r.get(key)
            recorder.complete(handle, "ok", result, time.monotonic_ns())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("w", ["majority", "all"])
def test_acknowledged_writes_survive_kill9_of_the_leader(make_cluster, mode: str, w: str):
    seed = SEED
    print(f"seed {seed} (set REPLIKV_TEST_SEED to replay)")
    cluster = make_cluster(3, extra_args=[*replikv_args(mode), "--request-timeout-ms", "1500"])
    recorder = HistoryRecorder()
    workload = HistoryWorkload(
        keys=tuple(HISTORY_KEYS), weights=(35, 25, 15, 10, 15), lease_read_share=1 / 3,
        write_prefix=("REPLIKV", "WITH", "W", w, "WTIMEOUT", str(HISTORY_WTIMEOUT_MS)),
        socket_timeout_s=3.0)

    def faults() -> None:
        started = time.monotonic()
        time.sleep(0.8)
        leader = cluster.leader()
        cluster.kill9(leader)
        # Long enough for a new leader to take writes with a member missing (WTIMEOUT at w=all).
        time.sleep(1.5)
        cluster.start(leader)
        time.sleep(max(0.0, HISTORY_LOAD_S - (time.monotonic() - started)))

    run_history_clients(cluster, recorder, HISTORY_CLIENTS, workload, seed=seed, faults=faults)
    wait_caught_up(cluster)
    _final_reads(cluster, recorder, HISTORY_CLIENTS)

    ops = recorder.ops()
    outcomes = {o: sum(1 for op in ops if op.outcome == o) for o in ("ok", "fail", "unknown")}
    writes_ok = sum(1 for op in ops if op.outcome == "ok" and op.kind != "get")
    wtimeouts = sum(1 for op in ops if op.result == "WTIMEOUT")
    print(f"{mode} w={w}: {len(ops)} operations {outcomes}, {writes_ok} acknowledged writes, "
          f"{wtimeouts} WTIMEOUT")
    assert writes_ok > 100, "too few writes were acknowledged to mean anything"
    result = check_history(ops, timeout_s=60)
    assert result.ok is True, format_result(result)


# -- 2. a lost w=1 write is recorded ------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_w1_write_discarded_by_a_new_leader_is_saved_as_acknowledged(make_cluster, mode: str):
    """The leader acknowledges a w=1 write that no follower can have received (both were
    killed: a SIGSTOPped follower would still find it in its socket buffer on waking), is then
    frozen while the followers restart and elect a new leader that writes over that index, and
    wakes up to find its entry replaced. It must save the entry, marked acknowledged."""
    cluster = make_cluster(3, extra_args=replikv_args(mode))
    old = cluster.leader()
    followers = [i for i in cluster.ids if i != old]
    r = cluster.client(old, decode_responses=True)
    assert r.set("before", "b") is True
    wait_caught_up(cluster)

    for f in followers:
        cluster.kill9(f)
    # Well within an election timeout: a leader that hears from no quorum steps down after one.
    sent = time.monotonic()
    assert r.execute_command("REPLIKV", "WITH", "W", "1", "SET", "lost-key", "v") == "OK"
    assert time.monotonic() - sent < 0.4
    cluster.pause(old)
    try:
        for f in followers:
            cluster.start(f, wait=False)
        cluster.wait_ready(followers)
        new = cluster.leader(among=followers)
        assert cluster.client(new, decode_responses=True).set("after", "a") is True
    finally:
        cluster.resume(old)
    assert cluster.leader() == new
    wait_caught_up(cluster)

    for node in cluster.ids:
        c = cluster.client(node, decode_responses=True)
        assert c.get("lost-key") is None, f"{node} still has the discarded w=1 write"
        assert (c.get("before"), c.get("after")) == ("b", "a")
    old_dir = cluster.nodes[old].data_dir
    files = sorted((old_dir / "rollback").glob("*.rkvrb"))
    assert len(files) == 1, files
    listing = run_cli("rollback", "list", "--data-dir", str(old_dir))
    rows = [line.split() for line in listing.splitlines() if line.rstrip().endswith(".rkvrb")]
    assert len(rows) == 1 and rows[0][-1] == files[0].name, listing
    assert rows[0][2] == old and rows[0][5] == "1", listing  # NODE, ACKNOWLEDGED

    shown = json.loads(run_cli("rollback", "show", files[0].name, "--data-dir", str(old_dir),
                               "--json"))
    assert shown["node_id"] == old and shown["new_leader"] == new
    acknowledged = [e for e in shown["entries"] if e["acknowledged"] is True]
    assert len(acknowledged) == 1, shown["entries"]
    entry = acknowledged[0]
    if mode == "active":
        assert (entry["kind"], entry["text"]) == ("command", 'SET "lost-key" "v"'), entry
    else:
        assert entry["kind"] == "effects", entry
        assert '"lost-key" "v"' in entry["text"], entry
    assert all(e["acknowledged"] is False for e in shown["entries"] if e is not entry)

    old_stats = stats(cluster, old)
    assert old_stats["rolled_back_acknowledged"] == 1, old_stats
    assert old_stats["rolled_back_entries"] == len(shown["entries"]), old_stats
    for f in followers:
        assert stats(cluster, f)["rolled_back_entries"] == 0


# -- 3. w=all and WAIT ---------------------------------------------------------------------------

WAIT_TIMEOUT_MS = 1000


def _wtimeout_write(cluster: Cluster, node: str, key: str) -> tuple[object, float]:
    started = time.monotonic()
    reply = raw_command(cluster.port(node), "REPLIKV", "WITH", "W", "all", "WTIMEOUT", "500",
                        "SET", key, "v", timeout_s=5.0)
    return reply, time.monotonic() - started


def _write_then_wait(client: redis.Redis, key: str) -> tuple[int, float]:
    assert client.set(key, "w") is True
    started = time.monotonic()
    count = client.execute_command("WAIT", 2, WAIT_TIMEOUT_MS)
    return count, time.monotonic() - started


def test_w_all_times_out_with_a_member_down_and_wait_counts_replicas(make_cluster):
    cluster = make_cluster(3, extra_args=["--request-timeout-ms", "2000"])
    leader = cluster.leader()
    up, down = [i for i in cluster.ids if i != leader]
    for node in (leader, up):
        reply, took_s = _wtimeout_write(cluster, node, f"all-up-{node}")
        assert reply == b"OK" and took_s < 1.0, (node, reply, took_s)
        count, took_s = _write_then_wait(cluster.client(node, socket_timeout=8.0), "x")
        assert count == 2 and took_s < 0.5, (node, count, took_s)

    cluster.kill9(down)
    wtimeouts_before = stats(cluster, leader)["wtimeouts"]
    for node in (leader, up):
        key = f"one-down-{node}"
        reply, took_s = _wtimeout_write(cluster, node, key)
        assert isinstance(reply, hiredis.ReplyError) and str(reply).startswith("WTIMEOUT"), \
            (node, reply)
        assert 0.45 < took_s < 2.0, f"WTIMEOUT 500 via {node} answered after {took_s:.2f}s"
        assert cluster.client(node, decode_responses=True).get(key) == "v"
    assert stats(cluster, leader)["wtimeouts"] == wtimeouts_before + 2

    # WAIT through a follower (the leader's own WAIT: see the next test).
    count, took_s = _write_then_wait(cluster.client(up, socket_timeout=8.0), "y")
    assert count == 1, count
    assert WAIT_TIMEOUT_MS / 1000 - 0.05 < took_s < WAIT_TIMEOUT_MS / 1000 + 1.0, took_s

    cluster.start(down)
    wait_caught_up(cluster)
    reply, _ = _wtimeout_write(cluster, leader, "all-up-again")
    assert reply == b"OK", reply


def test_wait_on_the_leader_returns_at_its_timeout(make_cluster):
    cluster = make_cluster(3, extra_args=["--request-timeout-ms", "2000"])
    leader = cluster.leader()
    cluster.kill9(next(i for i in cluster.ids if i != leader))
    count, took_s = _write_then_wait(cluster.client(leader, socket_timeout=8.0), "z")
    assert count == 1, count
    assert took_s < WAIT_TIMEOUT_MS / 1000 + 1.0, f"WAIT 2 {WAIT_TIMEOUT_MS} took {took_s:.2f}s"


# -- 4. read preferences and staleness ---------------------------------------------------------

def test_read_preference_secondary_and_max_staleness(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    reader, other = [i for i in cluster.ids if i != leader]
    assert cluster.client(leader).set("k", "v1") is True
    wait_caught_up(cluster)

    on_leader = cluster.client(leader, decode_responses=True)
    assert on_leader.execute_command("REPLIKV", "READPREF", "secondary") == "OK"
    with pytest.raises(redis.ResponseError, match="^NOTSECONDARY"):
        on_leader.get("k")
    assert on_leader.execute_command("REPLIKV", "READPREF", "secondaryPreferred") == "OK"
    assert on_leader.get("k") == "v1"

    r = cluster.client(reader, decode_responses=True)
    assert r.execute_command("REPLIKV", "READPREF", "secondary") == "OK"
    assert r.get("k") == "v1"
    assert r.execute_command("REPLIKV", "CONSISTENCY", "local") == "OK"
    assert r.execute_command("REPLIKV", "READPREF", "secondary", "MAXSTALENESS", "500") == "OK"
    assert r.get("k") == "v1"
    assert r.execute_command("REPLIKV", "OPTIONS") == {
        "w": "majority", "wtimeout_ms": 0, "readpref": "secondary", "maxstaleness_ms": 500,
        "consistency": "local"}

    # The reader hears from nobody for longer than its bound.
    cluster.pause(leader)
    cluster.pause(other)
    try:
        time.sleep(1.2)
        assert int(cluster.info(reader)["staleness_ms"]) > 500
        with pytest.raises(redis.ResponseError, match="^STALE"):
            r.get("k")
        assert r.execute_command("REPLIKV", "READPREF", "nearest") == "OK"
        assert r.get("k") == "v1"  # no bound: its own (possibly stale) state
    finally:
        cluster.resume(leader)
        cluster.resume(other)
    # The reader went without a leader for longer than an election timeout, so it may have
    # won the election that followed: read through whichever node follows now.
    new_leader = cluster.leader()
    follower = reader if reader != new_leader else other
    again = cluster.client(follower, decode_responses=True)
    assert again.execute_command("REPLIKV", "CONSISTENCY", "local") == "OK"
    assert again.execute_command("REPLIKV", "READPREF", "secondary", "MAXSTALENESS",
                                 "500") == "OK"
    assert wait_until(lambda: again.get("k") == "v1", timeout_s=5.0,
                      what="a follower to be within MAXSTALENESS again")


def test_followers_hear_a_lone_writes_commit_within_milliseconds(make_cluster):
    """A lone write's commit index reaches the followers COMMIT_BROADCAST_DELAY_MS (1 ms) after
    the commit, not at the next tick (50 ms): the server's timer (runtime._broadcast_commit).
    Twenty lone writes on a quiet cluster; the median time until a follower reports the write
    committed must stay far below half a tick, which is where it would sit without the timer
    (the tick that sends it instead comes at a random phase)."""
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    writer = cluster.client(leader)
    watcher = cluster.client(follower)
    waits_ms = []
    for i in range(20):
        assert writer.set(f"lone{i}", "v") is True
        index = int(writer.info("replication")["commit_index"])
        started = time.monotonic()
        while int(watcher.info("replication")["commit_index"]) < index:
            assert time.monotonic() - started < 5.0, "the follower never heard of the commit"
        waits_ms.append((time.monotonic() - started) * 1000)
        time.sleep(0.06)  # quiet: more than a tick, so no next write carries the commit
    waits_ms.sort()
    assert waits_ms[len(waits_ms) // 2] < 10.0, waits_ms


# -- 5. monotonic reads and read-your-writes -----------------------------------------------------

MONOTONIC_LOAD_S = 3.0


def test_reads_on_one_follower_connection_never_go_back(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    reader_node, churned = [i for i in cluster.ids if i != leader]
    writer = cluster.client(leader)
    invoked = [0]  # INCRs sent so far: no read may see more
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not stop.is_set() and invoked[0] < 100_000:
                invoked[0] += 1
                assert writer.incr("counter") == invoked[0]
        except BaseException as e:  # noqa: BLE001 - re-raised in the test below
            errors.append(e)

    r = cluster.client(reader_node)
    assert r.execute_command("REPLIKV", "READPREF", "secondary") == b"OK"
    assert r.execute_command("REPLIKV", "CONSISTENCY", "local") == b"OK"
    seen: list[int] = []
    thread = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    thread.start()
    killed = restarted = False
    try:
        for _ in range(200_000):
            elapsed = time.monotonic() - started
            if elapsed > MONOTONIC_LOAD_S:
                break
            if not killed and elapsed > 0.8:
                cluster.kill9(churned)
                killed = True
            if killed and not restarted and elapsed > 1.3:
                cluster.start(churned, wait=False)
                restarted = True
            value = int(r.get("counter") or 0)
            limit = invoked[0]
            assert value <= limit, f"read {value} before INCR number {value} was sent"
            seen.append(value)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors, errors[0]
    cluster.wait_ready([churned])
    going_back = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert not going_back, f"reads went back in time: {going_back[:5]}"
    print(f"{len(seen)} reads of {invoked[0]} increments, {len(set(seen))} distinct values")
    assert len(set(seen)) > 20, "the reader saw too few of the writes to mean anything"
    final = invoked[0]
    wait_until(lambda: int(r.get("counter")) == final, timeout_s=5.0,
               what="the follower to apply the last increment")

    # Read your writes: at w=1, through a follower, reading its own state.
    wait_caught_up(cluster)
    for node in (reader_node, churned):
        c = cluster.client(node, decode_responses=True)
        for option, value in (("WRITECONCERN", "1"), ("READPREF", "nearest"),
                              ("CONSISTENCY", "local")):
            assert c.execute_command("REPLIKV", option, value) == "OK"
        for i in range(100):
            assert c.set("ryw", f"x{i}") is True
            assert c.get("ryw") == f"x{i}", f"{node} did not read its own write {i}"


# -- 6. passive backups replay effects; active replicas execute; all agree ----------------------

WRITES = 240


def _workload(cluster: Cluster, leader: str, rng: random.Random) -> int:
    """SET, INCR, SADD, SPOP, SINTERSTORE through the leader and the followers alike."""
    clients = {i: cluster.client(i) for i in cluster.ids}
    for i in range(WRITES):
        r = clients[leader if i % 2 else rng.choice(cluster.ids)]
        op = i % 5
        if op == 0:
            assert r.set(f"s{rng.randrange(20)}", f"v{i}") is True
        elif op == 1:
            r.incr(f"c{rng.randrange(5)}")
        elif op == 2:
            r.sadd(f"set{rng.randrange(4)}", *[f"m{rng.randrange(30)}" for _ in range(3)])
        elif op == 3:
            r.spop(f"set{rng.randrange(4)}")
        else:
            r.sinterstore(f"inter{rng.randrange(3)}", f"set{rng.randrange(4)}",
                          f"set{rng.randrange(4)}")
    return WRITES


def _snapshot(cluster: Cluster, node: str) -> dict[str, object]:
    """Every key's type and value on `node`, read from its own state."""
    c = cluster.client(node, decode_responses=True)
    c.execute_command("REPLIKV", "READPREF", "nearest")
    c.execute_command("REPLIKV", "CONSISTENCY", "local")
    keys = sorted(c.keys("*"))
    assert c.dbsize() == len(keys)
    out: dict[str, object] = {}
    for key in keys:
        kind = c.type(key)
        out[key] = (kind, sorted(c.smembers(key)) if kind == "set" else c.get(key))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_backups_replay_or_execute_by_mode_and_all_replicas_agree(make_cluster, mode: str):
    print(f"seed {SEED} (set REPLIKV_TEST_SEED to replay)")
    cluster = make_cluster(3, extra_args=replikv_args(mode))
    leader = cluster.leader()
    writes = _workload(cluster, leader, random.Random(SEED))
    assert cluster.leader() == leader, "the leader changed: the counts below assume it did not"
    wait_caught_up(cluster)

    counts = {i: stats(cluster, i) for i in cluster.ids}
    assert counts[leader]["commands_executed"] >= writes, counts[leader]
    for node in cluster.ids:
        if node == leader:
            continue
        if mode == "passive":
            assert counts[node]["commands_executed"] == 0, (node, counts[node])
            assert counts[node]["effects_applied"] >= writes, (node, counts[node])
        else:
            assert counts[node]["commands_executed"] == counts[leader]["commands_executed"], \
                (node, counts[node], counts[leader])
            assert counts[node]["effects_applied"] == 0, (node, counts[node])

    snapshots = {i: _snapshot(cluster, i) for i in cluster.ids}
    assert snapshots[leader], "the workload left no keys"
    for node in cluster.ids:
        differ = {k for k in snapshots[leader].keys() | snapshots[node].keys()
                  if snapshots[leader].get(k) != snapshots[node].get(k)}
        examples = [(k, snapshots[leader].get(k), snapshots[node].get(k))
                    for k in sorted(differ)[:5]]
        assert not differ, f"{node} differs from the leader {leader}: {examples}"
