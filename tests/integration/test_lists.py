"""Lists on a real 3-node cluster in both replication modes: what one node writes every node
reads back identically (the same elements in the same order), through a failover, a restart from
disk and a snapshot that compacts the log (the lists then reach the restarted node in it).

Passive mode ships each write's effects (elements pushed, a count popped from one end, an index
set, positions removed, a RENAMEd list whole), active mode the commands; either way every
replica must hold the same lists. Each node's own copy is read with `REPLIKV WITH READPREF
nearest CONSISTENCY local`, after it has applied the leader's last index. The client keeps a
model of every list and checks each reply against it.
"""

from __future__ import annotations

import random

import pytest
import redis

from .cluster import Cluster
from .test_hashes import LOCAL_READ, agreed_view, retried, through_failover_and_restart

pytestmark = pytest.mark.timeout(120)


def local_view(cluster: Cluster, node_id: str, keys: list[str]) -> dict[str, object]:
    client = cluster.client(node_id, decode_responses=True)
    return {key: (client.execute_command(*LOCAL_READ, "LRANGE", key, 0, -1),
                  client.execute_command(*LOCAL_READ, "TYPE", key)) for key in keys}


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_lists_agree_on_every_node_through_failover_and_restart(make_cluster, mode):
    rng = random.Random(11)
    cluster = make_cluster(3, extra_args=["--replication", mode, "--snapshot-entries", "200"])
    ids = cluster.ids
    clients = {i: cluster.client(i, decode_responses=True) for i in ids}
    keys = [f"l{k}" for k in range(5)]
    model: dict[str, list[str]] = {key: [] for key in keys}

    def write(clients_now: dict[str, redis.Redis], steps: int) -> None:
        for _ in range(steps):
            client = clients_now[rng.choice(list(clients_now))]
            key, other = rng.choice(keys), rng.choice(keys)
            items = model[key]
            roll = rng.random()
            if roll < 0.3:
                values = [f"v{rng.randrange(8)}" for _ in range(rng.randint(1, 4))]
                if rng.random() < 0.5:
                    assert retried(client.rpush, key, *values) == len(items) + len(values)
                    items.extend(values)
                else:
                    assert retried(client.lpush, key, *values) == len(items) + len(values)
                    items[:0] = values[::-1]
            elif roll < 0.45:
                count = rng.randint(1, 3)
                popped = retried(client.lpop, key, count)
                assert popped == (items[:count] or None)
                del items[:count]
            elif roll < 0.55:
                popped = retried(client.rpop, key)
                assert popped == (items.pop() if items else None)
            elif roll < 0.65:
                moved = retried(client.lmove, key, other, "LEFT", "RIGHT")
                assert moved == (items[0] if items else None)
                if items:
                    model[other].append(items.pop(0))
            elif roll < 0.72:
                value, count = f"v{rng.randrange(8)}", rng.choice([0, 1, -1])
                assert retried(client.lrem, key, count, value) == min(
                    items.count(value), abs(count) or len(items))
                if count == 0:
                    items[:] = [item for item in items if item != value]
                elif value in items:
                    del items[items.index(value) if count > 0
                              else len(items) - 1 - items[::-1].index(value)]
            elif roll < 0.8:
                if items:
                    index = rng.randrange(-len(items), len(items))
                    assert retried(client.lset, key, index, "set") is True
                    items[index] = "set"
            elif roll < 0.88:
                pivot = f"v{rng.randrange(8)}"
                reply = retried(client.linsert, key, "BEFORE", pivot, "ins")
                if not items:
                    assert reply == 0
                elif pivot in items:
                    items.insert(items.index(pivot), "ins")
                    assert reply == len(items)
                else:
                    assert reply == -1
            else:
                assert retried(client.ltrim, key, 0, 9) is True
                del items[10:]

    write(clients, 400)
    clients["n1"].copy("l0", "copy-of-l0")
    model["copy-of-l0"] = list(model["l0"])
    clients["n2"].rename("l1", "renamed-l1")
    model["renamed-l1"] = model.pop("l1")
    keys[:] = [k for k in keys if k != "l1"]
    all_keys = sorted(model)

    def check(node_ids: list[str]) -> None:
        first = agreed_view(cluster, node_ids, lambda i: local_view(cluster, i, all_keys))
        for key in all_keys:
            assert first[key][0] == model[key], key  # type: ignore[index]

    through_failover_and_restart(cluster, clients, write, check)
