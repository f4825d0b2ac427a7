"""MULTI ... EXEC against real 3-node clusters, passive and active, driven by redis-py's own
transactional pipeline (`pipeline()`, transaction=True by default) and by raw commands.

A transaction is one log entry: it is applied whole on every replica, and nothing runs in
between its commands. The concurrency test shows the second: clients on every node run
MULTI INCR x INCR y EXEC at once, and every EXEC must answer the same number for x and y
(any interleaving of another transaction between the two INCRs would make them differ).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from .cluster import HOST, Cluster
from .test_replication_guarantees import _snapshot, replikv_args, wait_caught_up

pytestmark = pytest.mark.timeout(120)

MODES = ["passive", "active"]
CLIENTS_PER_NODE = 2
TRANSACTIONS_PER_CLIENT = 60


def _agree(cluster: Cluster) -> dict[str, object]:
    wait_caught_up(cluster)
    states = {node: _snapshot(cluster, node) for node in cluster.ids}
    first = states[cluster.ids[0]]
    for node, state in states.items():
        assert state == first, f"{node} differs from {cluster.ids[0]}"
    return first


@pytest.mark.parametrize("mode", MODES)
def test_a_transaction_is_one_entry_applied_whole_on_every_replica(make_cluster, mode: str):
    cluster = make_cluster(3, extra_args=replikv_args(mode))
    leader = cluster.leader()
    follower = next(n for n in cluster.ids if n != leader)
    for node in (leader, follower):  # a follower forwards the whole transaction
        r = cluster.client(node, decode_responses=True)
        r.sadd(f"{node}:set", *[f"m{i}" for i in range(20)])
        index_before = int(cluster.status(leader)["commit_index"])
        pipe = r.pipeline()  # transaction=True: MULTI ... EXEC
        pipe.set(f"{node}:a", "1").incr(f"{node}:a").sadd(f"{node}:a", "x")
        pipe.get(f"{node}:a").spop(f"{node}:set", 3).set(f"{node}:b", "v", ex=600)
        replies = pipe.execute(raise_on_error=False)
        assert replies[0] is True and replies[1] == 2 and replies[3] == "2"
        assert isinstance(replies[2], redis.ResponseError) and "WRONGTYPE" in str(replies[2])
        assert len(replies[4]) == 3 and replies[5] is True
        # One entry for the six commands (the leader may add a no-op or an expiry of its own,
        # none here: nothing expires and the term is settled).
        assert int(cluster.status(leader)["commit_index"]) == index_before + 1
    state = _agree(cluster)
    for node in (leader, follower):
        assert state[f"{node}:a"] == ("string", "2")
        assert len(state[f"{node}:set"][1]) == 17  # the same 3 popped on every replica


def test_multi_exec_discard_and_their_errors_as_in_redis(make_cluster):
    cluster = make_cluster(3)
    r = cluster.client(next(n for n in cluster.ids if n != cluster.leader()),
                       decode_responses=True, protocol=2)
    conn = r.connection_pool.get_connection()  # one connection, no reply callbacks

    def run(*args: str) -> object:
        conn.send_command(*args)
        return conn.read_response()

    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        run("EXEC")
    with pytest.raises(redis.ResponseError, match="DISCARD without MULTI"):
        run("DISCARD")
    assert run("MULTI") == "OK"
    with pytest.raises(redis.ResponseError, match="MULTI calls can not be nested"):
        run("MULTI")  # answered, and the transaction goes on
    assert run("SET", "t:k", "1") == "QUEUED"
    assert run("EXEC") == ["OK"]
    assert run("MULTI") == "OK" and run("EXEC") == []
    # DISCARD drops what was queued.
    assert run("MULTI") == "OK" and run("SET", "t:k", "2") == "QUEUED"
    assert run("DISCARD") == "OK" and r.get("t:k") == "1"
    # A command refused when queued (unknown, wrong arity, connection-level) aborts EXEC, and
    # nothing of the transaction is applied.
    for bad in (("NOSUCH", "x"), ("GET",), ("PING",), ("WAIT", "1", "0")):
        assert run("MULTI") == "OK" and run("SET", "t:k", "3") == "QUEUED"
        with pytest.raises(redis.ResponseError):
            run(*bad)
        with pytest.raises(redis.ResponseError, match="Transaction discarded because of "
                                                      "previous errors"):
            run("EXEC")
        assert r.get("t:k") == "1", bad
    # WATCH: a change by anyone after it makes EXEC answer nil and apply nothing.
    other = cluster.client(cluster.leader(), decode_responses=True)
    assert run("WATCH", "t:k") == "OK" and run("MULTI") == "OK"
    with pytest.raises(redis.ResponseError, match="WATCH inside MULTI is not allowed"):
        run("WATCH", "t:j")
    assert run("SET", "t:k", "5") == "QUEUED"
    assert other.set("t:k", "changed") is True
    assert run("EXEC") is None and r.get("t:k") == "changed"
    other.set("t:k", "1")
    assert run("WATCH", "t:k") == "OK" and run("UNWATCH") == "OK"  # UNWATCH forgets it
    other.set("t:k", "1")
    assert run("MULTI") == "OK" and run("GET", "t:k") == "QUEUED" and run("EXEC") == ["1"]
    # RESET inside MULTI discards it.
    assert run("MULTI") == "OK" and run("SET", "t:k", "4") == "QUEUED"
    assert run("RESET") == "RESET"
    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        run("EXEC")
    assert r.get("t:k") == "1"
    # Write concern for the whole transaction, given to EXEC.
    assert run("MULTI") == "OK" and run("INCR", "t:n") == "QUEUED"
    assert run("REPLIKV", "WITH", "W", "all", "EXEC") == [1]
    assert run("MULTI") == "OK"
    with pytest.raises(redis.ResponseError, match="applies only to EXEC"):
        run("REPLIKV", "WITH", "W", "1", "INCR", "t:n")
    with pytest.raises(redis.ResponseError, match="discarded"):
        run("EXEC")
    assert r.get("t:n") == "1"


def run_clients(cluster: Cluster, work: Callable[[redis.Redis], None],
                timeout_s: float = 90.0) -> int:
    """`work(client)` in CLIENTS_PER_NODE threads per node, each with its own connection to its
    node; raises the first error of any; returns how many clients ran."""
    errors: list[BaseException] = []

    def client(node: str) -> None:
        try:
            work(cluster.client(node, socket_timeout=20.0))
        except BaseException as e:  # noqa: BLE001 - raised below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(node,), daemon=True)
               for node in cluster.ids for _ in range(CLIENTS_PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return len(threads)


@pytest.mark.parametrize("mode", MODES)
def test_nothing_runs_between_the_commands_of_a_transaction(make_cluster, mode: str):
    cluster = make_cluster(3, extra_args=replikv_args(mode))
    answers: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(r: redis.Redis) -> None:
        for _ in range(TRANSACTIONS_PER_CLIENT):
            x, y = r.pipeline().incr("tx:x").incr("tx:y").execute()
            with lock:
                answers.append((x, y))

    total = run_clients(cluster, work) * TRANSACTIONS_PER_CLIENT
    assert len(answers) == total
    assert all(x == y for x, y in answers), [a for a in answers if a[0] != a[1]][:5]
    assert sorted(x for x, _ in answers) == list(range(1, total + 1))
    state = _agree(cluster)
    assert state["tx:x"] == state["tx:y"] == ("string", str(total))


@pytest.mark.parametrize("mode", MODES)
def test_watch_makes_optimistic_increments_exact(make_cluster, mode: str):
    """The WATCH pattern redis-py's transaction() uses: read, compute, write in MULTI/EXEC,
    retry on WatchError. Clients on every node at once must lose no increment."""
    cluster = make_cluster(3, extra_args=replikv_args(mode))
    aborts: list[int] = []
    per_client = 25

    def work(r: redis.Redis) -> None:
        tries = 0

        def increment(pipe: redis.client.Pipeline) -> None:
            nonlocal tries
            tries += 1
            value = int(pipe.get("opt:n") or 0)
            pipe.multi()
            pipe.set("opt:n", value + 1)

        for _ in range(per_client):
            r.transaction(increment, "opt:n")
        aborts.append(tries - per_client)

    total = run_clients(cluster, work) * per_client
    state = _agree(cluster)
    assert state["opt:n"] == ("string", str(total))
    assert sum(aborts) > 0, "no transaction ever raced another: the test proved nothing"


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_a_watch_on_a_follower_right_after_a_write_runs_as_in_redis(make_cluster, mode: str):
    """SET k, then WATCH k, GET k, MULTI, SET, EXEC on a follower, by hand: with nothing
    written between, EXEC must run every time. When WATCH took the follower's own applied
    index, the write just acknowledged (not yet applied there) counted as a change after the
    WATCH, and EXEC answered nil about 29 times in 30."""
    cluster, leader, follower = _leader_and_follower(make_cluster, mode)
    writer = cluster.client(leader, decode_responses=True)
    conn = redis.Connection(host=HOST, port=cluster.nodes[follower].client_port,
                            socket_timeout=10.0, decode_responses=True)

    def call(*argv: str) -> Any:  # one connection, replies as sent (no redis-py callbacks)
        conn.send_command(*argv)
        return conn.read_response()

    try:
        for i in range(30):
            if i % 2:
                writer.set("w:k", str(i))  # acknowledged to another client
            else:
                assert call("SET", "w:k", str(i)) == "OK"  # or to this one
            assert call("WATCH", "w:k") == "OK"
            assert call("GET", "w:k") == str(i)
            assert call("MULTI") == "OK"
            assert call("SET", "w:k", f"tx{i}") == "QUEUED"
            assert call("EXEC") == ["OK"], i
        # And a change after the WATCH still aborts it.
        assert call("WATCH", "w:k") == "OK"
        writer.set("w:k", "changed")
        assert call("MULTI") == "OK"
        assert call("SET", "w:k", "lost") == "QUEUED"
        assert call("EXEC") is None
    finally:
        conn.disconnect()
    assert writer.get("w:k") == "changed"


ANY = object()  # an expected reply not checked
WRONGTYPE = object()  # an expected WRONGTYPE error


def _assert_replies(got: list[object], expected: list[object]) -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if e is WRONGTYPE:
            assert isinstance(g, redis.ResponseError) and "WRONGTYPE" in str(g), i
        elif e is not ANY:
            assert g == e, (i, g, e)


def _leader_and_follower(make_cluster: Callable[..., Cluster],
                         mode: str) -> tuple[Cluster, str, str]:
    cluster = make_cluster(3, extra_args=replikv_args(mode))
    leader = cluster.leader()
    return cluster, leader, next(n for n in cluster.ids if n != leader)


def _pipeline_on(cluster: Cluster, node: str) -> tuple[str, Any, list[object]]:
    """A key prefix of the node's own, a pipeline (transaction=False) through it, and the list
    of the replies expected from it."""
    r = cluster.client(node, decode_responses=True)
    return f"{node}:", r.pipeline(transaction=False), []


@pytest.mark.parametrize("mode", MODES)
def test_a_pipelines_writes_go_in_batches_and_every_reply_is_its_own(make_cluster, mode: str):
    # redis-py's pipeline(transaction=False) sends everything in one write: the connection
    # batches consecutive plain writes into one entry each (replikv.commands.transactions), and
    # each command still gets the reply it would get alone, in its place, through the leader
    # and through a follower that forwards the batch.
    from .test_admin_http import scrape

    cluster, leader, follower = _leader_and_follower(make_cluster, mode)
    for node in (leader, follower):
        index_before = int(cluster.status(leader)["commit_index"])
        p, pipe, expected = _pipeline_on(cluster, node)
        for i in range(100):
            pipe.set(f"{p}k{i % 10}", str(i))
            pipe.incr(f"{p}n")
            expected += [True, i + 1]
            if i % 25 == 24:
                pipe.incr(f"{p}k0")  # k0 holds the last multiple of 10 set
                pipe.sadd(f"{p}s", "m").incr(f"{p}s").get(f"{p}n")  # INCR of a set: WRONGTYPE
                # (SADD answers 1 the first time, 0 after)
                expected += [(i // 10) * 10 + 1, ANY, WRONGTYPE, str(i + 1)]
        pipe.delete(f"{p}k1").expire(f"{p}k2", 600)
        expected += [1, True]
        _assert_replies(pipe.execute(raise_on_error=False), expected)
        # Fewer entries than writes: the GETs cut the pipeline into 4 runs of writes, each of
        # at most a few batches (64 commands each), however the bytes arrived.
        writes = len(expected) - 4
        assert int(cluster.status(leader)["commit_index"]) - index_before < writes // 4
    metrics = scrape(cluster, leader)
    assert metrics[("replikv_pipeline_batched_commands_total", ())] >= 100
    state = _agree(cluster)
    for node in (leader, follower):
        assert state[f"{node}:n"] == ("string", "100")
        assert f"{node}:k1" not in state


@pytest.mark.parametrize("mode", MODES)
def test_a_pipelines_reads_go_in_batches_and_see_the_connections_writes(make_cluster, mode: str):
    # A pipeline's plain reads go as one internal read (EXEC-READS), served after one
    # ReadIndex round: through the leader, and through a follower (which forwards them in
    # passive mode and serves them itself in active mode). Each sees the writes sent before
    # it on the connection, never those after.
    from .test_admin_http import scrape

    cluster, leader, follower = _leader_and_follower(make_cluster, mode)
    for node in (leader, follower):
        p, pipe, expected = _pipeline_on(cluster, node)
        for i in range(60):
            pipe.set(f"{p}k{i}", str(i))
            expected.append(True)
        for i in range(60):
            pipe.get(f"{p}k{i}").exists(f"{p}k{i}", f"{p}none").strlen(f"{p}k{i}")
            expected += [str(i), 1, len(str(i))]
        pipe.sadd(f"{p}s", "m").get(f"{p}s").sismember(f"{p}s", "m").mget(f"{p}k1", f"{p}none")
        expected += [1, WRONGTYPE, 1, ["1", None]]
        pipe.delete(f"{p}k0").get(f"{p}k0")
        expected += [1, None]
        _assert_replies(pipe.execute(raise_on_error=False), expected)
    batched = sum(scrape(cluster, n)[("replikv_pipeline_batched_reads_total", ())]
                  for n in (leader, follower))
    assert batched >= 2 * 180


JOIN_CLIENTS = 24
JOIN_ROUNDS = 40


@pytest.mark.parametrize("mode", MODES)
def test_clients_with_the_same_write_concern_share_log_entries(make_cluster, mode: str):
    # Clients that each set their write concern (as `replikv bench` and most drivers do) still
    # have their plain writes joined into one log entry when they arrive in one event-loop turn:
    # their equal settings are one shared object (replikv.concerns.interned). Every reply is
    # still each client's own.
    import socket

    from .test_admin_http import scrape

    cluster, leader, _ = _leader_and_follower(make_cluster, mode)
    socks = [socket.create_connection(("127.0.0.1", cluster.port(leader)), timeout=10)
             for _ in range(JOIN_CLIENTS)]
    try:
        readers = [s.makefile("rb") for s in socks]
        for s, r in zip(socks, readers, strict=True):
            s.sendall(b"REPLIKV WRITECONCERN majority\r\nREPLIKV CONSISTENCY linearizable\r\n")
            assert r.readline() == b"+OK\r\n" and r.readline() == b"+OK\r\n"
        index_before = int(cluster.status(leader)["commit_index"])
        for round_ in range(JOIN_ROUNDS):
            for i, s in enumerate(socks):  # all sent before any reply is read
                s.sendall(b"INCRBY join:%d %d\r\n" % (i, round_ + 1))
            for i, r in enumerate(readers):
                total = (round_ + 1) * (round_ + 2) // 2
                assert r.readline() == b":%d\r\n" % total, (round_, i)
        entries = int(cluster.status(leader)["commit_index"]) - index_before
    finally:
        for s in socks:
            s.close()
    metrics = scrape(cluster, leader)
    assert metrics[("replikv_joined_write_batches_total", ())] >= 1
    assert metrics[("replikv_joined_write_requests_total", ())] >= 2 * \
        metrics[("replikv_joined_write_batches_total", ())]
    assert entries < JOIN_CLIENTS * JOIN_ROUNDS
    state = _agree(cluster)
    total = JOIN_ROUNDS * (JOIN_ROUNDS + 1) // 2
    for i in range(JOIN_CLIENTS):
        assert state[f"join:{i}"] == ("string", str(total))
