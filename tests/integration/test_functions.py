"""Functions on a real 3-node cluster in both replication modes: a library loaded through a
follower is on every node, FCALL increments from every node are each counted once, and the
library survives a kill -9 of the leader, a restart from disk after snapshots compacted the log
(the library then reaches the node only in a snapshot), and a restart of every node.

Each node's own copy is read with `REPLIKV WITH READPREF nearest CONSISTENCY local` (FUNCTION
LIST goes through the log: FCALL_RO is the local read).
"""

from __future__ import annotations

import random

import pytest
import redis

from .cluster import Cluster
from .test_hashes import LOCAL_READ, agreed_view, retried, through_failover_and_restart

pytestmark = pytest.mark.timeout(120)

LIBRARY = """#!lua name=counters
redis.register_function('bump', function(keys, args)
  return redis.call('incrby', keys[1], args[1])
end)
redis.register_function{function_name='peek', flags={'no-writes'},
  callback=function(keys) return redis.call('get', keys[1]) end}
"""


def local_view(cluster: Cluster, node_id: str, keys: list[str]) -> dict[str, object]:
    client = cluster.client(node_id, decode_responses=True)
    return {key: client.execute_command(*LOCAL_READ, "FCALL_RO", "peek", 1, key)
            for key in keys}


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_a_library_serves_every_node_through_failover_snapshots_and_restart(make_cluster, mode):
    rng = random.Random(5)
    cluster = make_cluster(3, extra_args=["--replication", mode, "--snapshot-entries", "40",
                                          "--snapshot-keep-entries", "5"])
    ids = cluster.ids
    clients = {i: cluster.client(i, decode_responses=True) for i in ids}
    follower = next(i for i in ids if i != cluster.leader())
    assert clients[follower].function_load(LIBRARY) == "counters"
    with pytest.raises(redis.exceptions.ResponseError, match="already exists"):
        clients[follower].function_load(LIBRARY)
    keys = [f"c{k}" for k in range(4)]
    model = dict.fromkeys(keys, 0)

    def write(clients_now: dict[str, redis.Redis], steps: int) -> None:
        for _ in range(steps):
            client = clients_now[rng.choice(list(clients_now))]
            key, by = rng.choice(keys), rng.randrange(1, 10)
            model[key] += by
            assert retried(client.fcall, "bump", 1, key, by) == model[key]

    write(clients, 120)

    def check(node_ids: list[str]) -> None:
        view = agreed_view(cluster, node_ids, lambda i: local_view(cluster, i, keys))
        assert view == {key: str(value) for key, value in model.items()}

    through_failover_and_restart(cluster, clients, write, check)
    for node_id in ids:
        client = cluster.client(node_id, decode_responses=True)
        listed = client.function_list()
        assert [lib[:2] for lib in listed] == [["library_name", "counters"]]  # RESP2
        memory = client.info("memory")
        assert (memory["number_of_libraries"], memory["number_of_functions"]) == (1, 2)
