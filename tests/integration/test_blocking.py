"""Blocking pops on a real 3-node cluster: a work queue whose workers wait in BLPOP and BZPOPMIN
on both followers, fed through a follower. Every job pushed goes to exactly one worker. Then
the leader is killed with kill -9 while the workers wait: they go on waiting on their nodes,
undisturbed, and the jobs pushed once a new leader is elected reach them too, each once.

And a follower that has not yet applied a committed push still pops it for its client: a
blocking command that finds none of its keys in its node's state asks the cluster with a
linearizable read before it waits (no log entry), never judges from its node alone.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
import redis

from .cluster import HOST, Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

JOBS_EACH_PHASE = 30


class Worker(threading.Thread):
    """Pops jobs with BLPOP (or BZPOPMIN) on one node until stopped; bounded in time."""

    def __init__(self, cluster: Cluster, node_id: str, zset: bool) -> None:
        super().__init__(daemon=True)
        self.client = cluster.client(node_id, socket_timeout=10)
        self.zset = zset
        self.got: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 90
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if self.zset:
                    popped = self.client.bzpopmin("zjobs", 1)
                else:
                    popped = self.client.blpop(["jobs"], 1)
            except redis.exceptions.RedisError as e:  # while there is no leader
                self.errors.append(str(e))
                time.sleep(0.1)
                continue
            if popped:
                self.got.append(popped[1].decode())


def push_all(client: redis.Redis, start: int, count: int) -> None:
    """Push jobs start..start+count, each to the list and to the sorted set, retrying while
    a leader is being elected (bounded)."""
    deadline = time.monotonic() + 30
    for i in range(start, start + count):
        while True:
            try:
                client.rpush("jobs", f"j{i}")
                client.zadd("zjobs", {f"z{i}": i})
                break
            except redis.exceptions.RedisError:
                assert time.monotonic() < deadline, "no leader took the pushes"
                time.sleep(0.2)


def consumed(workers: list[Worker]) -> list[str]:
    return [job for w in workers for job in w.got]


def test_every_job_goes_to_one_waiting_worker_through_a_failover(make_cluster) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader()
    followers = [n for n in cluster.ids if n != leader]
    workers = [Worker(cluster, node_id, zset) for node_id in followers
               for zset in (False, True, False)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: all(cluster.info(n, "clients")["blocked_clients"] == "3"
                               for n in followers), timeout_s=10,
                   what="every worker waiting")
        producer = cluster.client(followers[0], socket_timeout=10)
        push_all(producer, 0, JOBS_EACH_PHASE)
        wait_until(lambda: len(consumed(workers)) >= 2 * JOBS_EACH_PHASE, timeout_s=20,
                   what="the first jobs popped")

        cluster.kill9(leader)  # the workers are waiting: none has an attempt under way
        push_all(producer, JOBS_EACH_PHASE, JOBS_EACH_PHASE)
        assert cluster.leader(among=followers) != leader
        wait_until(lambda: len(consumed(workers)) >= 4 * JOBS_EACH_PHASE, timeout_s=30,
                   what="the jobs pushed after the failover popped")
        time.sleep(0.5)  # nothing more arrives
    finally:
        for w in workers:
            w.stop.set()
        for w in workers:
            w.join(timeout=15)
    got = consumed(workers)
    pushed = [f"{p}{i}" for p in "jz" for i in range(2 * JOBS_EACH_PHASE)]
    assert sorted(got) == sorted(pushed), "a job was lost or given twice"
    assert all(w.got for w in workers), "a waiting worker was never served"
    assert cluster.client(followers[1]).llen("jobs") == 0


def test_a_lagging_follower_pops_what_the_leader_committed(make_cluster) -> None:
    cluster = make_cluster(3, extra_args=["--fault-injection"])
    leader = cluster.leader()
    follower = next(n for n in cluster.ids if n != leader)

    def faults(query: str) -> None:
        req = urllib.request.Request(
            f"http://{HOST}:{cluster.nodes[leader].admin_port}/faults{query}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

    client = cluster.client(follower, socket_timeout=10)
    assert client.blpop(["lagging"], 0.05) is None  # (nothing there yet)
    # What the leader sends arrives 300 ms late: the push commits once a follower has it,
    # and the followers learn that it did only with the leader's next message.
    faults("?delay_ms=300")
    try:
        cluster.client(leader, socket_timeout=10).rpush("lagging", "job")
        assert int(cluster.info(follower)["applied_index"]) < int(
            cluster.info(leader)["commit_index"]), "the follower is not behind"
        # Its timeout passes long before the follower applies the push on its own.
        assert client.blpop(["lagging"], 0.05) == (b"lagging", b"job")
    finally:
        faults("/clear")
