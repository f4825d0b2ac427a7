"""Hashes on a real 3-node cluster in both replication modes: what one node writes every node
reads back identically (fields in the same order, the same bytes), through a failover, a restart
from disk and a snapshot that compacts the log (the hashes then reach the restarted node in it).

Passive mode ships each write's effects (the fields set or deleted, a RENAMEd hash whole),
active mode the commands; either way every replica must hold the same hashes. Each node's own
copy is read with `REPLIKV WITH READPREF nearest CONSISTENCY local`, after it has applied the
leader's last index.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial

import pytest
import redis

from .cluster import Cluster

pytestmark = pytest.mark.timeout(120)

LOCAL_READ = ("REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local")


def local_view(cluster: Cluster, node_id: str, keys: list[str]) -> dict[str, object]:
    """Each key's fields and values in the node's own order, and its type: from its local
    copy, in RESP3 (HGETALL a map) and in RESP2 (a flat array in the same order)."""
    view: dict[str, object] = {}
    for protocol in (2, 3):
        client = cluster.client(node_id, protocol=protocol, decode_responses=True)
        for key in keys:
            reply = client.execute_command(*LOCAL_READ, "HGETALL", key)
            items = list(reply.items()) if isinstance(reply, dict) else list(
                zip(reply[0::2], reply[1::2], strict=True))
            view[f"{key}/{protocol}"] = items
            view[f"{key}/type"] = client.execute_command(*LOCAL_READ, "TYPE", key)
    return view


def retried(command, *args):  # type: ignore[no-untyped-def]
    """Run a write, again only after TRYAGAIN (which says it was not applied: safe to retry,
    even for HINCRBY), as during the election after the leader was killed."""
    for _ in range(100):
        try:
            return command(*args)
        except redis.exceptions.ResponseError as e:
            if not str(e).startswith("TRYAGAIN") and "leader" not in str(e).lower():
                raise
            time.sleep(0.05)
    raise AssertionError(f"{args} refused 100 times")


def all_applied(cluster: Cluster, node_ids: list[str]) -> None:
    leader = cluster.leader(among=node_ids)
    target = cluster.status(leader)["commit_index"]
    for node_id in node_ids:
        cluster.wait_applied(node_id, target)


def agreed_view(cluster: Cluster, node_ids: list[str],
                view: Callable[[str], dict[str, object]]) -> dict[str, object]:
    """Once every node has applied the leader's commit index: the view every node's local copy
    gives (asserted identical on all of them)."""
    all_applied(cluster, node_ids)
    views = {i: view(i) for i in node_ids}
    first = views[node_ids[0]]
    for node_id in node_ids[1:]:
        assert views[node_id] == first, f"{node_id} differs from {node_ids[0]}"
    return first


def through_failover_and_restart(cluster: Cluster, clients: dict[str, redis.Redis],
                                 write: Callable[[dict[str, redis.Redis], int], None],
                                 check: Callable[[list[str]], None]) -> None:
    """Check every node; kill -9 the leader and check the survivors; write through them past
    the snapshot threshold and check; restart the old leader from its own disk (then the
    leader's log or snapshot) and check; restart every node and check."""
    ids = cluster.ids
    check(ids)
    old_leader = cluster.leader()
    cluster.kill9(old_leader)
    survivors = [i for i in ids if i != old_leader]
    cluster.leader(among=survivors)
    check(survivors)
    write({i: clients[i] for i in survivors}, 300)
    check(survivors)
    cluster.start(old_leader)
    check(ids)
    cluster.stop_all()
    cluster.start_all()
    check(ids)


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_hashes_agree_on_every_node_through_failover_and_restart(make_cluster, mode):
    rng = random.Random(7)
    cluster = make_cluster(3, extra_args=["--replication", mode, "--snapshot-entries", "200"])
    ids = cluster.ids
    clients = {i: cluster.client(i, decode_responses=True) for i in ids}
    keys = [f"h{k}" for k in range(6)]
    expected: dict[str, dict[str, str]] = {key: {} for key in keys}

    def write(clients_now: dict[str, redis.Redis], steps: int) -> None:
        for _ in range(steps):
            client = clients_now[rng.choice(list(clients_now))]
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.5:
                fields = {f"f{rng.randrange(40)}": f"v{rng.randrange(10**6)}" for _ in range(5)}
                retried(partial(client.hset, key, mapping=fields))
                expected[key].update({f: v for f, v in fields.items()})
            elif roll < 0.7:
                field = f"f{rng.randrange(40)}"
                retried(client.hdel, key, field)
                expected[key].pop(field, None)
            elif roll < 0.9:
                field = f"n{rng.randrange(3)}"
                value = retried(client.hincrby, key, field, 3)
                expected[key][field] = str(value)
            else:
                field = f"x{rng.randrange(3)}"
                value = retried(client.hincrbyfloat, key, field, 0.25)
                expected[key][field] = client.hget(key, field)
                assert float(expected[key][field]) == value

    write(clients, 400)
    # RENAME and COPY carry a whole hash (in passive mode its post-image).
    clients["n1"].copy("h0", "copy-of-h0")
    expected["copy-of-h0"] = dict(expected["h0"])
    clients["n2"].rename("h1", "renamed-h1")
    expected["renamed-h1"] = expected.pop("h1")
    keys[:] = [k for k in keys if k != "h1"]
    all_keys = sorted(expected)

    def check(node_ids: list[str]) -> None:
        first = agreed_view(cluster, node_ids, lambda i: local_view(cluster, i, all_keys))
        for key in all_keys:
            assert dict(first[f"{key}/3"]) == expected[key], key  # type: ignore[arg-type]
            assert first[f"{key}/2"] == first[f"{key}/3"]  # the same order in both protocols

    through_failover_and_restart(cluster, clients, write, check)
