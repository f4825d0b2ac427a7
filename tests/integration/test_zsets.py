"""Sorted sets on a real 3-node cluster in both replication modes: what one node writes every
node reads back identically (the same members, scores and order, in RESP2 and RESP3), through a
failover (the leader killed with kill -9), a restart from disk and a snapshot that compacts the
log (the sorted sets then reach the restarted node in it).

Passive mode ships each write's effects (members with their new scores, members removed, a rank
range popped, a stored or RENAMEd sorted set whole), active mode the commands; either way every
replica must hold the same sorted sets. Each node's own copy is read with `REPLIKV WITH READPREF
nearest CONSISTENCY local`, after it has applied the leader's last index. The client keeps a
model of every sorted set and checks each reply against it. Writes go to every node: a
follower forwards them to the leader.
"""

from __future__ import annotations

import random

import pytest
import redis

from .cluster import Cluster
from .test_hashes import LOCAL_READ, agreed_view, retried, through_failover_and_restart

pytestmark = pytest.mark.timeout(120)

# Scores a double holds exactly, so the model's sums are the cluster's.
SCORES = [-3.0, -1.5, 0.0, 0.5, 1.0, 2.0, 2.5, 7.0, 10.0]
MEMBERS = [f"m{i}" for i in range(10)]


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    """A model sorted set in Redis's order: by score, then member."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]))


def flat_pairs(reply: list) -> list[tuple[str, float]]:
    """(member, score) pairs from a reply redis-py may have parsed into pairs or left flat."""
    items = [x for item in reply for x in (item if isinstance(item, list | tuple) else [item])]
    return [(m, float(s)) for m, s in zip(items[0::2], items[1::2], strict=True)]


def local_view(cluster: Cluster, node_id: str, keys: list[str]) -> dict[str, object]:
    """Each key's members and scores in order, from the node's own copy, in RESP2 (a flat
    array of bulk strings) and RESP3 ([member, double] pairs), and its type and encoding."""
    view: dict[str, object] = {}
    for protocol in (2, 3):
        client = cluster.client(node_id, protocol=protocol, decode_responses=True)
        for key in keys:
            reply = client.execute_command(*LOCAL_READ, "ZRANGE", key, 0, -1, "WITHSCORES")
            view[f"{key}/{protocol}"] = flat_pairs(reply)
        view["types"] = [client.execute_command(*LOCAL_READ, "TYPE", key) for key in keys]
        view["encodings"] = [client.execute_command(*LOCAL_READ, "OBJECT", "ENCODING", key)
                             for key in keys]
    return view


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_zsets_agree_on_every_node_through_failover_and_restart(make_cluster, mode):
    rng = random.Random(13)
    cluster = make_cluster(3, extra_args=["--replication", mode, "--snapshot-entries", "200"])
    ids = cluster.ids
    clients = {i: cluster.client(i, decode_responses=True) for i in ids}
    keys = [f"z{k}" for k in range(4)]
    model: dict[str, dict[str, float]] = {key: {} for key in keys}
    # A sorted set past a listpack's size: ranks and pops on a skiplist too.
    model["big"] = {f"b{i:03d}": float(i % 17) for i in range(300)}
    assert clients["n2"].execute_command(
        "ZADD", "big", *[x for m, s in model["big"].items() for x in (s, m)]) == 300
    keys.append("big")

    def write(clients_now: dict[str, redis.Redis], steps: int) -> None:
        for _ in range(steps):
            client = clients_now[rng.choice(list(clients_now))]
            key = rng.choice(keys)
            scores = model[key]
            roll = rng.random()
            if roll < 0.3:
                option = rng.choice(["", "", "NX", "XX", "GT", "LT", "CH"])
                pairs = [(rng.choice(SCORES), rng.choice(MEMBERS))
                         for _ in range(rng.randint(1, 4))]
                args = [x for score, member in pairs for x in (score, member)]
                reply = retried(client.execute_command, "ZADD", key, *filter(None, [option]),
                                *args)
                added = changed = 0
                for score, member in pairs:
                    old = scores.get(member)
                    if old is None:
                        if option != "XX":
                            scores[member] = score
                            added += 1
                    elif option != "NX" and not (option == "GT" and score <= old) and not (
                            option == "LT" and score >= old) and score != old:
                        scores[member] = score
                        changed += 1
                assert reply == added + (changed if option == "CH" else 0), (key, args)
            elif roll < 0.42:
                member, step = rng.choice(MEMBERS), rng.choice([1.0, -0.5, 2.5])
                assert retried(client.zincrby, key, step, member) == scores.get(member, 0) + step
                scores[member] = scores.get(member, 0) + step
            elif roll < 0.54:
                members = rng.sample(MEMBERS, rng.randint(1, 3))
                assert retried(client.zrem, key, *members) == sum(m in scores for m in members)
                for member in members:
                    scores.pop(member, None)
            elif roll < 0.66:
                count, highest = rng.randint(1, 3), rng.random() < 0.5
                popped = retried(client.execute_command, "ZPOPMAX" if highest else "ZPOPMIN",
                                 key, count)
                order = ranked(scores)[::-1] if highest else ranked(scores)
                assert flat_pairs(popped) == order[:count]
                for member, _ in order[:count]:
                    del scores[member]
            elif roll < 0.74:
                low, high = sorted(rng.sample(SCORES, 2))
                gone = [m for m, s in scores.items() if low < s <= high]
                assert retried(client.zremrangebyscore, key, f"({low}", high) == len(gone)
                for member in gone:
                    del scores[member]
            elif roll < 0.8:
                order = ranked(scores)
                assert retried(client.zremrangebyrank, key, 0, 1) == min(2, len(order))
                for member, _ in order[:2]:
                    del scores[member]
            elif roll < 0.88:
                other = rng.choice([k for k in keys if k not in (key, "big")])
                union = dict(model[other])
                for member, score in scores.items():
                    union[member] = union.get(member, 0) + 2 * score
                assert retried(client.zunionstore, "dst", {other: 1, key: 2}) == len(union)
                model["dst"] = union
            elif roll < 0.94:
                order = ranked(scores)
                assert retried(client.execute_command, "ZRANGESTORE", "copy", key, 0,
                               2) == min(3, len(order))
                model["copy"] = dict(order[:3])
            else:
                order = ranked(scores)
                # A read anywhere: the leader's answer (linearizable).
                assert flat_pairs(client.zrange(key, 0, -1, withscores=True)) == order
            for name in ("dst", "copy"):
                if name in model and not model[name]:
                    del model[name]  # an empty result deletes the key

    write(clients, 400)
    for key in ("z0", "z1"):  # so that COPY and RENAME have something to move
        assert clients["n2"].zadd(key, {"last": 99.5}) == int("last" not in model[key])
        model[key]["last"] = 99.5
    clients["n1"].copy("z0", "copy-of-z0")
    model["copy-of-z0"] = dict(model["z0"])
    clients["n3"].rename("z1", "renamed-z1")
    model["renamed-z1"] = model.pop("z1")
    keys[:] = [k for k in keys if k != "z1"]
    all_keys = sorted({*model, "dst", "copy"})

    def check(node_ids: list[str]) -> None:
        first = agreed_view(cluster, node_ids, lambda i: local_view(cluster, i, all_keys))
        for key in all_keys:
            expected = ranked(model.get(key, {}))
            assert first[f"{key}/2"] == expected, key
            assert first[f"{key}/3"] == expected, key

    through_failover_and_restart(cluster, clients, write, check)
