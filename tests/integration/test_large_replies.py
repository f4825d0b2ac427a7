"""A command that touches the whole keyspace must not cost the cluster its leader: KEYS over
600,000 keys (1.3 s of event loop on the old code, long past the 0.5 s election timeout, so
the followers elected another leader) now holds the loop for a fraction of that, because the
keys are gathered with C-level sorts and bisection and the 9 MB reply is encoded in the reply
thread. SCAN's COUNT is capped, so one call stays short."""

from __future__ import annotations

import pytest

from replikv.commands.keys import SCAN_COUNT_MAX

from .cluster import wait_until

pytestmark = pytest.mark.timeout(180)

KEYS = 600_000
BATCH = 5_000


def test_keys_over_a_large_keyspace_causes_no_election(make_cluster) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader()
    client = cluster.client(leader, socket_timeout=60.0)
    for b in range(KEYS // BATCH):
        client.mset({b"user:%d:%d" % (b, i): b"x" for i in range(BATCH)})
    client.mset({b"other:%d" % i: b"y" for i in range(100)})
    terms = {n: cluster.status(n)["term"] for n in cluster.nodes}
    stalls_before = cluster.status(leader)["event_loop_stalls"]["count"]

    everything = client.keys("*")
    users = client.keys("user:*")
    cursor, first = client.scan(0, count=10**9)

    assert len(everything) == len(set(everything)) == KEYS + 100
    assert len(users) == KEYS and all(k.startswith(b"user:") for k in users)
    assert cursor != 0 and SCAN_COUNT_MAX <= len(first) < KEYS
    for n in cluster.nodes:  # nobody started an election, the leader kept its term
        s = cluster.status(n)
        assert (s["term"], s["leader"]) == (terms[n], leader), (n, s["term"], s["leader"])
    status = cluster.status(leader)
    assert status["large_replies"] >= 2  # KEYS and KEYS user:* were encoded off the loop
    # Any stall reported stayed short of an election timeout (it would have caused one).
    stalls = status["event_loop_stalls"]
    assert stalls["count"] == stalls_before or stalls["max_ms"] < 500, stalls
    # In a pipeline, a large reply keeps its place among small ones (it is encoded later).
    pipe = client.pipeline(transaction=False)
    pipe.keys("user:1*").set("after", "1").get("after").keys("other:*").dbsize()
    assert pipe.execute() == [client.keys("user:1*"), True, b"1",
                              client.keys("other:*"), KEYS + 101]
    # Replicas answer the same keys in the same order (sorted within each shard).
    follower = next(n for n in cluster.nodes if n != leader)
    commit = cluster.status(leader)["commit_index"]
    wait_until(lambda: cluster.status(follower)["applied_index"] >= commit, timeout_s=30.0,
               what=f"{follower} applying everything")
    local = cluster.client(follower, socket_timeout=60.0)
    assert local.execute_command("REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY",
                                 "local", "KEYS", "user:*") == users


FIELDS = 600_000


def test_hgetall_of_a_large_hash_causes_no_election(make_cluster) -> None:
    """The same for one large hash: HGETALL's 1.2 million items, HKEYS and HVALS are encoded in
    the reply thread while the loop keeps answering the followers."""
    cluster = make_cluster(3)
    leader = cluster.leader()
    client = cluster.client(leader, socket_timeout=60.0)
    for b in range(FIELDS // BATCH):
        client.hset("big", mapping={b"f:%d:%d" % (b, i): b"%d" % i for i in range(BATCH)})
    terms = {n: cluster.status(n)["term"] for n in cluster.nodes}
    large_before = cluster.status(leader)["large_replies"]
    stalls_before = cluster.status(leader)["event_loop_stalls"]["count"]

    everything = client.hgetall("big")
    fields = client.hkeys("big")
    values = client.hvals("big")

    assert len(everything) == FIELDS and everything[b"f:3:7"] == b"7"
    assert fields == list(everything) and values == list(everything.values())
    for n in cluster.nodes:
        s = cluster.status(n)
        assert (s["term"], s["leader"]) == (terms[n], leader), (n, s["term"], s["leader"])
    status = cluster.status(leader)
    assert status["large_replies"] >= large_before + 3
    stalls = status["event_loop_stalls"]
    assert stalls["count"] == stalls_before or stalls["max_ms"] < 500, stalls
