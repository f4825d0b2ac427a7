"""Lua scripts on a real 3-node cluster: redis-py's Lock, through a follower and across a
kill -9 of the leader, and a counter incremented by an EVAL script from several clients.

redis-py's Lock acquires with SET NX PX and releases, extends and reacquires with Lua scripts
(EVALSHA, falling back to SCRIPT LOAD on NOSCRIPT): the script cache is each node's own, so
the follower a client talks to loads and resolves them and forwards their bodies.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.exceptions import LockNotOwnedError

from .cluster import wait_until

pytestmark = pytest.mark.timeout(90)

INCREMENT = "return redis.call('incrby', KEYS[1], ARGV[1])"


def test_redis_py_lock_survives_a_leader_kill(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower, other = [i for i in cluster.ids if i != leader]
    owner = cluster.client(follower)
    rival = cluster.client(other)

    # The whole protocol through a follower: acquire, extend, reacquire, release.
    lock = owner.lock("lk:basic", timeout=5)
    assert lock.acquire(blocking=False)
    assert lock.extend(2) and 6000 < owner.pttl("lk:basic") <= 7000
    assert lock.reacquire() and owner.pttl("lk:basic") <= 5000
    assert lock.owned() and lock.locked()
    # A second client waits for it, and gets it once it is released.
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(
        rival.lock("lk:basic", timeout=5, blocking_timeout=5).acquire()))
    waiter.start()
    time.sleep(0.3)
    assert not got  # still held
    lock.release()
    waiter.join(timeout=10)
    assert got == [True]
    stale = owner.lock("lk:basic", timeout=5)
    stale.local.token = b"not-the-owner"
    with pytest.raises(LockNotOwnedError):
        stale.release()  # the release script answers 0: the rival holds it
    stale.local.token = b"not-the-owner"  # release() forgot it
    with pytest.raises(LockNotOwnedError):
        stale.extend(1)

    # A lock with a timeout expires on its own.
    short = owner.lock("lk:short", timeout=0.3)
    assert short.acquire(blocking=False)
    assert not rival.lock("lk:short", timeout=1).acquire(blocking=False)
    time.sleep(0.6)
    assert rival.lock("lk:short", timeout=1).acquire(blocking=False)

    # Held while the leader is killed: still the owner's on the new leader, and released
    # by its owner afterwards.
    held = owner.lock("lk:failover", timeout=60)
    assert held.acquire(blocking=False)
    token = held.local.token
    cluster.kill9(leader)
    new_leader = cluster.leader(among=[follower, other])
    assert new_leader != leader
    leader_client = cluster.client(new_leader)
    assert leader_client.get("lk:failover") == token
    assert not rival.lock("lk:failover", timeout=1).acquire(blocking=False)

    def released() -> bool:
        try:
            held.release()
            return True
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False  # TRYAGAIN while the new leader settles: retry

    wait_until(released, timeout_s=10, what="the owner's release")
    assert leader_client.get("lk:failover") is None


def test_a_script_counter_counts_every_acknowledged_increment_once(make_cluster):
    cluster = make_cluster(3)
    clients_per_node, increments = 2, 40
    acked = [0] * (len(cluster.ids) * clients_per_node)
    errors: list[str] = []

    def run(slot: int, node_id: str) -> None:
        client = cluster.client(node_id)
        script = client.register_script(INCREMENT)
        for _ in range(increments):
            try:
                script(keys=["counter"], args=[1])
                acked[slot] += 1
            except redis.RedisError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=run, args=(slot, node_id))
               for slot, node_id in enumerate(
                   [i for i in cluster.ids for _ in range(clients_per_node)])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    assert sum(acked) == len(threads) * increments
    for node_id in cluster.ids:  # every replica holds the same count (read locally)
        wait_until(lambda n=node_id: cluster.client(n).execute_command(
            "REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local", "GET",
            "counter") == str(sum(acked)).encode(), timeout_s=10, what=f"{node_id}'s counter")
