"""replikv.Client and AsyncClient against a real 3-node cluster: discovery from one seed,
writes through the leader, reads spread by read preference, REPLIKV TOPOLOGY as nodes answer
it, and kill -9 of the leader while the client counts (retryable writes: the count is exact;
without them, every lost answer is reported as OutcomeUnknown).

`test_retryable_incr_is_exactly_once_across_kill_9_of_the_leader` needs the node core to
honour sessions (REPLIKV WITH SEQ checked against the replicated session table); until then an
INCR whose answer was lost in the failover can be applied twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import redis

from replikv import AsyncClient, Client, OutcomeUnknown
from replikv.client.errors import UnsupportedCommand

from .cluster import HOST, MEASUREMENTS, Cluster, raw_command, wait_until

pytestmark = pytest.mark.timeout(120)


def address(cluster: Cluster, node_id: str) -> str:
    return f"{HOST}:{cluster.port(node_id)}"


def followers(cluster: Cluster, leader: str) -> list[str]:
    return [i for i in cluster.ids if i != leader]


def connected_clients(cluster: Cluster) -> dict[str, int]:
    return {i: int(cluster.info(i, "clients")["connected_clients"]) for i in cluster.ids}


def as_text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def test_replikv_topology_lists_every_member_with_its_addresses(shared_cluster):
    cluster = shared_cluster
    leader = cluster.leader()
    reply = raw_command(cluster.port(leader), "REPLIKV", "TOPOLOGY")  # RESP2: flat arrays
    members = [{as_text(m[i]): as_text(m[i + 1]) for i in range(0, len(m), 2)} for m in reply]
    assert [m["id"] for m in members] == ["n1", "n2", "n3"]
    for m in members:
        n = cluster.nodes[m["id"]]
        assert m["client"] == f"{HOST}:{n.client_port}"
        assert m["admin"] == f"{HOST}:{n.admin_port}"
        assert m["voter"] == 1
        assert m["role"] == ("leader" if m["id"] == leader else "follower")
        assert m["self"] == int(m["id"] == leader)
    me = next(m for m in members if m["self"])
    status = cluster.status(leader)
    assert me["term"] == status["term"] and me["applied_index"] <= status["applied_index"]
    # A follower, asked over RESP3 by redis-py, answers maps naming the same leader.
    follower = followers(cluster, leader)[0]
    r = cluster.client(follower, protocol=3, decode_responses=True)
    view = r.execute_command("REPLIKV", "TOPOLOGY")
    assert [m["role"] for m in view if m["id"] == leader] == ["leader"]
    assert next(m for m in view if m["self"] == 1)["id"] == follower


@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (3, True)], ids=["resp2", "resp3"])
def test_client_discovers_the_cluster_from_one_seed(shared_cluster, protocol, decode):
    cluster = shared_cluster
    leader = cluster.leader()
    seed = followers(cluster, leader)[0]
    with Client(address(cluster, seed), protocol=protocol, decode_responses=decode,
                read_preference="secondary") as kv:
        topo = kv.topology()
        assert topo.leader.id == leader
        assert {m.id: m.address for m in topo.members} == {
            i: address(cluster, i) for i in cluster.ids}
        assert topo.answered_by == address(cluster, leader)
        value = "é" if decode else "é".encode()
        assert kv.set(f"cd{protocol}:k", "é") is True
        assert kv.get(f"cd{protocol}:k") == value
        assert kv.sadd(f"cd{protocol}:s", "a", "b") == 2
        assert kv.smembers(f"cd{protocol}:s") == ({"a", "b"} if decode else {b"a", b"b"})
        assert [k for k in kv.scan_iter(match=f"cd{protocol}:*")]


def test_writes_go_to_the_leader_and_are_not_forwarded(shared_cluster):
    cluster = shared_cluster
    leader = cluster.leader()
    before = {i: int(cluster.info(i, "stats")["writes_forwarded"]) for i in cluster.ids}
    executed = int(cluster.info(leader, "stats")["commands_executed"])
    with Client(",".join(address(cluster, i) for i in reversed(cluster.ids))) as kv:
        for i in range(20):
            assert kv.set(f"cw:{i}", str(i)) is True
        assert kv.incr("cw:n") == 1
        assert kv.mget([f"cw:{i}" for i in range(3)]) == [b"0", b"1", b"2"]
    after = {i: int(cluster.info(i, "stats")["writes_forwarded"]) for i in cluster.ids}
    assert after == before  # no follower had to forward anything
    assert int(cluster.info(leader, "stats")["commands_executed"]) >= executed + 21


@pytest.mark.parametrize(("preference", "served_by"), [
    ("primary", "leader"), ("secondary", "followers"), ("secondaryPreferred", "followers"),
    ("nearest", "everyone")])
def test_reads_are_spread_by_read_preference(shared_cluster, preference, served_by):
    cluster = shared_cluster
    leader = cluster.leader()
    with Client(address(cluster, leader), read_preference=preference) as setup:
        setup.set("cr:k", "v")
    before = connected_clients(cluster)
    with Client(address(cluster, leader), read_preference=preference,
                read_consistency="linearizable") as kv:
        kv.topology()
        for _ in range(60):
            assert kv.get("cr:k") == b"v"  # linearizable: sees the write wherever it is read
        opened = {i: n - before[i] for i, n in connected_clients(cluster).items()}
    # Pooled connections stay open while the client lives: one per member that served reads.
    expected = {"leader": {leader}, "followers": set(followers(cluster, leader)),
                "everyone": set(cluster.ids)}[served_by]
    assert {i for i, n in opened.items() if n > 0} == expected, opened


def test_async_client_discovers_writes_and_reads(shared_cluster):
    cluster = shared_cluster
    leader = cluster.leader()

    async def scenario() -> None:
        async with AsyncClient(address(cluster, followers(cluster, leader)[1]),
                               read_preference="secondaryPreferred") as kv:
            topo = await kv.topology()
            assert topo.leader.id == leader
            results = await asyncio.gather(*(kv.incr("ca:n") for _ in range(50)))
            assert sorted(results) == list(range(1, 51))
            assert await kv.get("ca:n") == b"50"
            assert await kv.sadd("ca:s", "a", "b") == 2
            pipe = kv.pipeline()
            pipe.get("ca:n").scard("ca:s")
            assert await pipe.execute() == [b"50", 2]

    asyncio.run(scenario())


def test_command_errors_are_raised_and_not_retried(shared_cluster):
    cluster = shared_cluster
    with Client(address(cluster, "n1"), write_concern="majority") as kv:
        kv.sadd("ce:set", "m")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            kv.incr("ce:set")
        with pytest.raises(redis.ResponseError, match="syntax"):
            kv.execute_command("SET", "ce:k", "v", "NOPE")
        assert kv.scard("ce:set") == 1


# -- kill -9 of the leader under a counting client --------------------------------------------------

def count_through_a_failover(cluster: Cluster, kv: Client, key: str, total: int,
                             threads: int = 4,
                             operation: Callable[[], object] | None = None) -> list[object]:
    """INCR `key` (or run `operation`) `total` times from `threads` threads sharing `kv`, and
    kill -9 the leader once a third of them are answered, while the others are in flight.
    Returns each one's outcome: its reply, or OutcomeUnknown."""
    run = operation or (lambda: kv.incr(key))
    leader = cluster.leader()
    outcomes: list[object] = []
    lock = threading.Lock()
    per_thread = total // threads

    def count() -> None:
        for _ in range(per_thread):
            try:
                outcome: object = run()
            except OutcomeUnknown as e:
                outcome = e
            with lock:
                outcomes.append(outcome)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for w in workers:
        w.start()
    wait_until(lambda: len(outcomes) >= total // 3, timeout_s=60, what="a third of the INCRs",
               interval_s=0.001)
    started = time.monotonic()
    cluster.kill9(leader)
    for w in workers:
        w.join(90)
    assert not any(w.is_alive() for w in workers), "a counting thread is stuck"
    MEASUREMENTS.append(f"smart client: the {total - total // 3} writes left when the leader "
                        f"was killed (kill -9) took {time.monotonic() - started:.2f} s")
    assert len(outcomes) == per_thread * threads
    return outcomes


def test_retryable_incr_is_exactly_once_across_kill_9_of_the_leader(make_cluster):
    cluster = make_cluster(3)
    total = 300
    seeds = ",".join(address(cluster, i) for i in cluster.ids)
    with Client(seeds, retry_writes=True, socket_timeout=10.0) as kv:
        outcomes = count_through_a_failover(cluster, kv, "counter", total)
        # Every INCR was answered, each applied exactly once: the answers are 1..total.
        assert not [o for o in outcomes if not isinstance(o, int)], outcomes
        assert sorted(outcomes) == list(range(1, total + 1)), \
            sorted(set(range(1, total + 1)) ^ set(outcomes))[:10]
        assert kv.get("counter") == str(total).encode()
    survivors = cluster.alive_ids()
    wait_until(lambda: all(cluster.client(i).execute_command(
        "REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local", "GET", "counter")
        == str(total).encode() for i in survivors), timeout_s=10,
        what="every survivor to hold the final count")


def test_retryable_transactions_are_exactly_once_across_kill_9_of_the_leader(make_cluster):
    """pipeline(transaction=True) resends MULTI ... EXEC under one sequence number: each
    transaction is applied once, whole (x and y move together), through a failover."""
    cluster = make_cluster(3)
    total = 200
    seeds = ",".join(address(cluster, i) for i in cluster.ids)
    with Client(seeds, retry_writes=True, socket_timeout=10.0) as kv:
        outcomes = count_through_a_failover(
            cluster, kv, "tx", total,
            operation=lambda: kv.pipeline(transaction=True).incr("tx:x").incr("tx:y").execute())
        assert all(isinstance(o, list) and o[0] == o[1] for o in outcomes), \
            [o for o in outcomes if not isinstance(o, list) or o[0] != o[1]][:5]
        assert sorted(o[0] for o in outcomes) == list(range(1, total + 1))
        assert kv.mget("tx:x", "tx:y") == [str(total).encode()] * 2


def test_a_transaction_through_the_client_sync_and_async(shared_cluster):
    cluster = shared_cluster
    seeds = ",".join(address(cluster, i) for i in cluster.ids)
    with Client(seeds, decode_responses=True) as kv:
        pipe = kv.pipeline(transaction=True)
        pipe.set("tc:a", "1").incr("tc:a").get("tc:a").sadd("tc:a", "x")
        pipe.expire("tc:a", 100).ttl("tc:a").smembers("tc:none")
        replies = pipe.execute(raise_on_error=False)
        # redis-py's response callbacks, command by command; an error stays in its slot.
        assert replies[:3] == [True, 2, "2"] and replies[4:] == [True, 100, set()]
        assert isinstance(replies[3], redis.ResponseError) and "WRONGTYPE" in str(replies[3])
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            kv.pipeline(transaction=True).incr("tc:b").sadd("tc:a", "y").execute()
        assert kv.get("tc:b") == "1"  # the transaction ran; only its SADD failed
        # Refused when queued (wrong arity): nothing of the transaction is applied.
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            kv.pipeline(transaction=True).incr("tc:b").execute_command("GET").execute()
        # A command that is not data is refused before anything is sent.
        with pytest.raises(UnsupportedCommand, match="inside a transaction"):
            kv.pipeline(transaction=True).incr("tc:b").ping().execute()
        assert kv.get("tc:b") == "1"
        with pytest.raises(UnsupportedCommand, match="pipeline\\(transaction=True\\)"):
            kv.execute_command("MULTI")

    async def run_async() -> list:
        async with AsyncClient(seeds, decode_responses=True) as akv:
            return await akv.pipeline(transaction=True).incr("tc:n").incr("tc:n") \
                .smembers("tc:none").execute()

    assert asyncio.run(run_async()) == [1, 2, set()]


def test_without_retryable_writes_a_lost_answer_is_reported_not_guessed(make_cluster):
    cluster = make_cluster(3)
    total = 200
    seeds = ",".join(address(cluster, i) for i in cluster.ids)
    with Client(seeds, retry_writes=False) as kv:
        outcomes = count_through_a_failover(cluster, kv, "counter", total)
        answered = [o for o in outcomes if isinstance(o, int)]
        unknown = [o for o in outcomes if isinstance(o, OutcomeUnknown)]
        assert len(answered) + len(unknown) == total
        assert all(e.command == ("INCRBY", "counter", 1) for e in unknown)
        final = int(kv.get("counter"))
        # Every answered INCR was applied once; each unknown one at most once.
        assert len(answered) <= final <= len(answered) + len(unknown)
        assert len(set(answered)) == len(answered)
