"""maxmemory on real node processes: a cluster whose keyspace grows past the limit refuses
writes that add data with Redis's OOM error (redis-py raises OutOfMemoryError), still serves
reads and deletes, says so in /status, /metrics, INFO, the timeline and `replikv status`, keeps
refusing after its leader is killed, and accepts writes again once keys are deleted."""

from __future__ import annotations

import pytest
import redis

from .cluster import HOST, Cluster, wait_until
from .test_admin_http import scrape
from .test_disk_space import events

pytestmark = pytest.mark.timeout(120)

LIMIT = 256 * 1024
VALUE = "x" * 200


def fill_until_refused(client: redis.Redis, prefix: str, max_keys: int = 5000) -> int:
    """SETs until one is refused with OOM; returns how many were accepted."""
    for n in range(max_keys):
        try:
            client.set(f"{prefix}{n}", VALUE)
        except redis.exceptions.OutOfMemoryError as e:
            assert str(e) == "command not allowed when used memory > 'maxmemory'."
            return n
    raise AssertionError(f"{max_keys} SETs and none refused under maxmemory {LIMIT}")


def memory_full_everywhere(cluster: Cluster, full: bool) -> None:
    wait_until(lambda: all(cluster.status(i)["memory"]["full"] is full
                           for i in cluster.alive_ids()),
               timeout_s=10, what=f"every node's /status memory.full {full}")


def test_writes_that_add_data_are_refused_over_maxmemory_and_deletes_make_room(make_cluster):
    cluster = make_cluster(3, extra_args=["--maxmemory", "256kb"])
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    client = cluster.client(follower)  # writes forwarded: the leader decides

    accepted = fill_until_refused(client, "k")
    info = cluster.info(leader, "memory")
    used = int(info["used_memory"])
    assert LIMIT < used < LIMIT + 1024, info  # refused from the first write past the limit
    assert (info["maxmemory"], info["maxmemory_human"], info["maxmemory_policy"]) == (
        str(LIMIT), "256.00K", "noeviction")
    assert client.config_get("maxmemory*") == {"maxmemory": str(LIMIT),
                                               "maxmemory-policy": "noeviction"}
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.sadd("set", "member")
    assert client.get("k0") == VALUE.encode() and client.exists("k1") == 1  # reads go on

    # A pipeline runs its deletes and answers OOM for its writes; a transaction with a write
    # that adds data is refused whole.
    pipe = client.pipeline(transaction=False)
    for i in range(4):
        pipe.delete(f"k{i}")
        pipe.set(f"new{i}", "v")
    replies = pipe.execute(raise_on_error=False)
    assert replies[0::2] == [1, 1, 1, 1]
    assert all(isinstance(r, redis.exceptions.OutOfMemoryError) for r in replies[1::2]), replies
    fill_until_refused(client, "again")  # the deletes made room: over the limit again
    multi = client.pipeline(transaction=True)
    multi.delete("k4").set("new", "v")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        multi.execute()
    assert client.exists("k4") == 1

    memory_full_everywhere(cluster, True)
    status = cluster.status(leader)["memory"]
    assert status["maxmemory"] == LIMIT and status["oom_rejections"] >= 7, status
    metrics = scrape(cluster, leader)
    assert metrics[("replikv_memory_full", ())] == 1
    assert metrics[("replikv_maxmemory_bytes", ())] == LIMIT
    assert metrics[("replikv_oom_rejections_total", ())] == status["oom_rejections"]
    (event,) = [e for e in events(cluster, leader) if e["kind"] == "memory"]
    assert "over maxmemory (256.0 KiB)" in event["text"], event
    shown = cluster.cli("status", "--nodes",
                        ",".join(f"{HOST}:{n.admin_port}" for n in cluster.nodes.values()))
    assert "over the leader's maxmemory (256.0 KiB" in shown.stdout, shown.stdout

    # The next leader refuses too (its own maxmemory, the same), and its keyspace is the same.
    cluster.kill9(leader)
    new_leader = cluster.leader()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        cluster.client(new_leader).set("after-failover", "v")

    # Deleting keys makes room; every node sees it.
    survivor = cluster.client(new_leader)
    assert survivor.delete(*[f"k{i}" for i in range(accepted // 2)]) > 0
    assert survivor.set("after-delete", "v") is True
    memory_full_everywhere(cluster, False)


def test_config_set_maxmemory_changes_the_limit_at_run_time(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    client = cluster.client(leader)
    assert client.config_get("maxmemory") == {"maxmemory": "0"}  # no limit by default
    for i in range(200):
        client.set(f"k{i}", VALUE)
    for node_id in cluster.ids:  # as an operator would: every member
        assert cluster.client(node_id).config_set("maxmemory", "10kb") is True
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("one-more", "v")
    with pytest.raises(redis.exceptions.ResponseError, match="never evicts"):
        client.config_set("maxmemory-policy", "allkeys-lru")
    for node_id in cluster.ids:
        cluster.client(node_id).config_set("maxmemory", "0")
    assert client.set("one-more", "v") is True
    assert "maxmemory set to 10.0 KiB" in cluster.log_text(leader)
