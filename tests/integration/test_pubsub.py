"""Pub/sub on a real 3-node cluster: PUBLISH goes through the log and every node delivers each
committed message to its own subscribers. A redis-py subscriber on every node (one by pattern,
one in RESP2) and a publisher writing through a follower: every subscriber receives every
acknowledged message, in the same order on all three nodes. Then the leader is killed with
kill -9 mid-stream: the subscribers of the surviving nodes have every message whose PUBLISH was
acknowledged, in one order, each once. And a subscriber that never reads is disconnected at the
output limit (lowered here) while the node goes on serving.
"""

from __future__ import annotations

import socket
import time

import pytest
import redis

from .cluster import Cluster, encode_command, wait_until

pytestmark = pytest.mark.timeout(120)

CHANNEL = "events"
LIMIT_BYTES = 256 * 1024


def subscribe(cluster: Cluster, node_id: str, *, pattern: bool = False, protocol: int = 3
              ) -> redis.client.PubSub:
    pubsub = cluster.client(node_id, protocol=protocol).pubsub()
    if pattern:
        pubsub.psubscribe("ev*")
    else:
        pubsub.subscribe(CHANNEL)
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] in ("subscribe", "psubscribe")
    return pubsub


def drain(pubsub: redis.client.PubSub, want: int, timeout_s: float) -> list[str]:
    """The messages received, once `want` have come or nothing came for a while (bounded)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] in ("message", "pmessage"):
            got.append(message["data"].decode())
    return got


def test_every_node_delivers_every_acknowledged_message_in_one_order_through_a_failover(
        make_cluster) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower, other = [n for n in cluster.ids if n != leader]
    subscribers = {leader: subscribe(cluster, leader, protocol=2),
                   follower: subscribe(cluster, follower),
                   other: subscribe(cluster, other, pattern=True)}
    publisher = cluster.client(follower, socket_timeout=10)
    acked = []
    for i in range(30):
        assert publisher.publish(CHANNEL, f"m{i}") >= 0  # the leader's own receivers
        acked.append(f"m{i}")
    for node_id, pubsub in subscribers.items():
        assert drain(pubsub, len(acked), 10) == acked, node_id

    # kill -9 the leader mid-stream; publish on through the follower.
    unknown = []
    started = time.monotonic()
    for i in range(30, 200):
        if i == 45:
            cluster.kill9(leader)
        if len(acked) >= 75 or time.monotonic() - started > 25:
            break
        try:
            publisher.publish(CHANNEL, f"m{i}")
            acked.append(f"m{i}")
        except redis.exceptions.RedisError:  # TRYAGAIN, UNKNOWN: perhaps delivered
            unknown.append(f"m{i}")
    assert len(acked) > 45, f"no publish was acknowledged after the failover: {unknown}"
    assert cluster.leader(among=[follower, other]) != leader
    acked = acked[30:]  # the first 30 were received above
    received = {n: drain(subscribers[n], len(acked), 15) for n in (follower, other)}
    for node_id, got in received.items():
        extra = [m for m in got if m not in acked]
        wait_more = drain(subscribers[node_id], 10_000, 1) if extra else []
        got += wait_more
        assert len(got) == len(set(got)), f"{node_id} received a message twice"
        assert set(acked) <= set(got), (node_id, sorted(set(acked) - set(got)))
        assert set(got) <= set(acked) | set(unknown), node_id
    assert received[follower] == received[other]  # one order
    print(f"acknowledged {len(acked)} after the first 30, {len(unknown)} unknown, in "
          f"{time.monotonic() - started:.1f} s")
    for pubsub in subscribers.values():
        pubsub.close()


def test_a_subscriber_that_never_reads_is_disconnected_at_the_limit(make_cluster) -> None:
    cluster = make_cluster(3, extra_args=["--pubsub-output-buffer-limit-bytes",
                                          str(LIMIT_BYTES)])
    leader = cluster.leader()
    node_id = next(n for n in cluster.ids if n != leader)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", cluster.port(node_id)))
    slow.settimeout(5)
    try:
        slow.sendall(encode_command("SUBSCRIBE", "flood"))
        assert slow.recv(1024).endswith(b":1\r\n")
        reader = subscribe(cluster, node_id)  # a subscriber that reads keeps up
        reader.subscribe("flood")
        publisher = cluster.client(leader).pipeline(transaction=False)
        message = b"x" * 65536
        deadline = time.monotonic() + 30
        sent = 0
        while time.monotonic() < deadline and sent < 600:  # at most 39 MB
            for _ in range(20):
                publisher.publish("flood", message)
            publisher.execute()
            sent += 20
            drain(reader, 10_000, 0.2)
            if int(cluster.info(node_id, "stats")["pubsub_output_limit_disconnections"]):
                break
        stats = cluster.info(node_id, "stats")
        assert stats["pubsub_output_limit_disconnections"] == "1", stats
        assert "disconnecting subscriber" in cluster.log_text(node_id)
        # The node serves on, and the other subscriber still gets what is published.
        node = cluster.client(node_id)
        assert node.pubsub_numsub("flood") == [(b"flood", 1)]
        assert node.set("after", "1") is True
        cluster.client(leader).publish("flood", "after")
        assert drain(reader, 10_000, 3)[-1:] == ["after"]
        reader.close()
        wait_until(lambda: cluster.status(node_id)["pubsub"]["subscribers"] == 0,
                   timeout_s=5, what="no subscriber left")
    finally:
        slow.close()
