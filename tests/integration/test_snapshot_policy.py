"""The growth rule of log compaction on real processes: a snapshot once the log since the last
one costs `snapshot_log_ratio` of the keyspace's memory, and what INFO memory and /status show
of it."""

from __future__ import annotations

from .cluster import Cluster, wait_until

RATIO = 0.5
MIN_BYTES = 300_000
# Keep 2 entries: the load's pipelined SETs share entries (as few as 10 for its 2,000 keys), and
# the log must still be seen compacted after the first snapshot.
ARGS = ["--snapshot-log-ratio", str(RATIO), "--snapshot-log-min-bytes", str(MIN_BYTES),
        "--snapshot-keep-entries", "2"]
BIG_KEYS, BIG_VALUE = 2000, 1000
# A pipelined SET of 100 bytes costs 110 bytes of log when it shares an entry with the rest of
# its pipeline, 170 alone: either way these make one or two snapshots (below).
HOT_WRITES = 16_000


def pipelined_sets(cluster: Cluster, node_id: str, pairs: list[tuple[str, bytes]]) -> None:
    c = cluster.client(node_id, socket_timeout=10.0)
    try:
        for start in range(0, len(pairs), 200):
            pipe = c.pipeline(transaction=False)
            for k, v in pairs[start:start + 200]:
                pipe.set(k, v)
            assert all(ok is True for ok in pipe.execute())
    finally:
        c.close()


def memory(cluster: Cluster, node_id: str) -> dict[str, float]:
    """INFO memory's numeric fields (not the _human ones, nor words such as
    maxmemory_policy's noeviction)."""
    info = cluster.info(node_id, "memory")
    return {k: float(v) if "." in v else int(v) for k, v in info.items()
            if not k.endswith("_human") and v.lstrip("-").replace(".", "", 1).isdigit()}


def all_below_threshold(cluster: Cluster) -> bool:
    return all(m["log_cost_since_snapshot"] < m["snapshot_due_at_log_cost"]
               for m in (memory(cluster, i) for i in cluster.ids))


def taken(cluster: Cluster) -> dict[str, int]:
    return {i: (cluster.status(i)["snapshot"] or {}).get("taken", 0) for i in cluster.ids}


def test_snapshots_follow_the_size_of_the_keyspace(make_cluster):
    cluster = make_cluster(3, extra_args=ARGS)
    leader = cluster.leader()
    pipelined_sets(cluster, leader, [(f"big:{i}", b"x" * BIG_VALUE) for i in range(BIG_KEYS)])
    index = cluster.status(leader)["commit_index"]
    for i in cluster.ids:
        cluster.wait_applied(i, index)
    # The load cost its log about twice the rule's threshold: every node has snapshotted.
    wait_until(lambda: all(n >= 1 for n in taken(cluster).values()), timeout_s=20,
               what="a snapshot on every node after the load")
    # A second snapshot may still be due or being written when the first is counted: the rule
    # catches up (the writer asks every 100 ms), and then no node's log exceeds its threshold.
    wait_until(lambda: all_below_threshold(cluster), timeout_s=20,
               what="every node's log since its last snapshot below the rule's threshold")
    for i in cluster.ids:
        m = memory(cluster, i)
        # INFO memory: the keyspace's estimate (data plus about 117 bytes a key), the log's
        # cost since the last snapshot and where the rule will take the next one.
        assert BIG_KEYS * BIG_VALUE <= m["used_memory"] <= BIG_KEYS * (BIG_VALUE + 300), m
        assert m["used_memory_rss"] > m["used_memory"], m
        # What the node had at start-up (its imports) is frozen out of full collections; the
        # collections since are counted and timed.
        assert m["gc_frozen_objects"] > 10_000, m
        assert m["gc_full_pause_ms_total"] >= m["gc_full_pause_ms_max"] >= 0, m
        assert m["gc_full_collections"] > 0 or m["gc_full_pause_ms_total"] == 0, m
        due = m["snapshot_due_at_log_cost"]
        assert RATIO * m["used_memory"] <= due <= 1.25 * RATIO * m["used_memory"] + 1, m
        assert m["log_cost_since_snapshot"] < due, m
        status = cluster.status(i)
        assert status["log_first_index"] > 1, status  # the log was compacted
        assert status["log_since_snapshot"]["snapshot_due_at_bytes"] == due, status

    # Overwriting one key keeps the keyspace's size: a snapshot comes every time the log has
    # grown by about half of it again (each SET of 100 bytes costs 110-170 bytes of log), so
    # 16,000 SETs make one or two on each node, no more (a fixed count would not scale so).
    before = taken(cluster)
    pipelined_sets(cluster, leader, [("hot", b"v" * 100)] * HOT_WRITES)
    index = cluster.status(leader)["commit_index"]
    for i in cluster.ids:
        cluster.wait_applied(i, index)
    wait_until(lambda: all(taken(cluster)[i] > before[i] for i in cluster.ids), timeout_s=20,
               what="a snapshot on every node after the overwrites")
    wait_until(lambda: all_below_threshold(cluster), timeout_s=20,
               what="every node's log since its last snapshot below the rule's threshold")
    after = taken(cluster)
    for i in cluster.ids:
        assert 1 <= after[i] - before[i] <= 3, (i, before, after)
        m = memory(cluster, i)
        assert m["log_cost_since_snapshot"] < m["snapshot_due_at_log_cost"], m
    values = {cluster.client(i).get("hot") for i in cluster.ids}
    assert values == {b"v" * 100}
