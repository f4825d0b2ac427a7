"""fsync = always | batch | never on a real cluster.

Each mode is visible (INFO server, /status, and for the relaxed modes a WARNING in the node's
output), writes work in it, and the fsyncs it promises are the ones it does (INFO stats:
`wal_fsyncs` grows with always and batch, and nothing at all is fsynced with never).

What a relaxed mode gives up is only what a power loss takes: the page cache survives kill -9,
so every acknowledged write must survive kill -9 of every node at once, in every mode. That
also proves each write reached write(2) before it was acknowledged, not a user-space buffer.
"""

from __future__ import annotations

import pytest

from .cluster import Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

BATCH_INTERVAL_MS = 50


def stats(cluster: Cluster, node_id: str) -> dict[str, int]:
    info = cluster.info(node_id, "stats")
    return {k: int(info[k]) for k in ("fsyncs", "wal_fsyncs", "entries_written")}


def write_keys(cluster: Cluster, node_id: str, prefix: str, count: int) -> dict[str, str]:
    """`count` SETs through `node_id`, half one at a time and half pipelined; returns those
    acknowledged (all of them, or the test fails)."""
    r = cluster.client(node_id, decode_responses=True)
    acked = {}
    single = count // 2
    for i in range(single):
        key, value = f"{prefix}-{i}", f"value-{i}-{prefix}"
        assert r.set(key, value) is True
        acked[key] = value
    pipe = r.pipeline(transaction=False)
    batch = {f"{prefix}-{i}": f"value-{i}-{prefix}" for i in range(single, count)}
    for key, value in batch.items():
        pipe.set(key, value)
    assert pipe.execute() == [True] * len(batch)
    acked.update(batch)
    return acked


@pytest.mark.parametrize("mode", ["always", "batch", "never"])
def test_fsync_mode_is_shown_counted_and_acknowledged_writes_survive_kill9_of_all(
        make_cluster, mode: str):
    extra = ["--fsync", mode]
    if mode == "batch":
        extra += ["--fsync-interval-ms", str(BATCH_INTERVAL_MS)]
    cluster = make_cluster(3, extra_args=extra)

    for node_id in cluster.ids:
        server = cluster.info(node_id, "server")
        assert server["fsync"] == mode, server
        assert server.get("fsync_interval_ms") == (
            str(BATCH_INTERVAL_MS) if mode == "batch" else None), server
        assert cluster.status(node_id)["fsync"] == mode
        stdout = cluster.nodes[node_id].stdout_path.read_text()
        if mode == "always":
            assert "WARNING" not in stdout, stdout
        else:
            warning = next((line for line in stdout.splitlines()
                            if line.startswith(f"WARNING: fsync={mode}")), None)
            assert warning is not None, stdout
            assert "loses power" in warning and "lost" in warning, warning
            assert f"fsync={mode}" in cluster.log_text(node_id)

    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    acked = write_keys(cluster, leader, "a", 200)
    acked.update(write_keys(cluster, follower, "f", 40))  # forwarded to the leader

    commit = cluster.status(leader)["commit_index"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit)
    if mode == "never":
        # Long enough for several batch intervals: nothing may have been fsynced at all.
        wait_until(lambda: all(stats(cluster, i)["entries_written"] > 0 for i in cluster.ids),
                   timeout_s=5, what="every node to have written entries")
        for node_id in cluster.ids:
            assert stats(cluster, node_id)["fsyncs"] == 0, (node_id, stats(cluster, node_id))
    else:
        # Every node fsyncs its log: before acknowledging (always), or within an interval.
        seen = {i: wait_until(lambda i=i: stats(cluster, i)["wal_fsyncs"] or None,
                              timeout_s=5, what=f"{i} to fsync its log")
                for i in cluster.ids}
        acked.update(write_keys(cluster, leader, "b", 20))
        for node_id in cluster.ids:
            wait_until(lambda i=node_id: stats(cluster, i)["wal_fsyncs"] > seen[i],
                       timeout_s=5, what=f"{node_id}'s log fsyncs to grow with more writes")
        if mode == "batch":
            # The fsyncs are batched: far fewer than the 110 single writes each caused.
            assert stats(cluster, leader)["wal_fsyncs"] < 110, stats(cluster, leader)

    cluster.kill_all()
    cluster.start_all()
    leader = cluster.leader()
    commit = cluster.status(leader)["commit_index"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit)
        assert cluster.info(node_id, "server")["fsync"] == mode
    cluster.assert_values(cluster.ids, acked)
    # A clean stop (SIGTERM) is clean in every mode; with batch it syncs the log once more.
    assert cluster.stop_all() == {i: 0 for i in cluster.ids}
