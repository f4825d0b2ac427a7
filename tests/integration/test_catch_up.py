"""A new member catching up from a snapshot, CI-sized: the flow of `benchmarks/catch_up.py`
(`run_catch_up`) with 50,000 keys instead of a million.

Three voters hold 50,000 keys loaded in MSETs and have compacted their logs past them, so n4,
added with `replikv member add`, can only catch up through the leader's snapshot. The test
checks that it did (it installed one), that it became a voter, and that its own copy holds what
was written (1,000 random keys read at CONSISTENCY local, and DBSIZE). The figures measured on
the way (durations, snapshot size, every node's peak RSS) go to pytest's summary, so a change
in cost shows on every run.
"""

from __future__ import annotations

import pytest

from benchmarks.catch_up import JOINER, VOTERS, node_args, run_catch_up

from .cluster import MEASUREMENTS

KEYS = 50_000


@pytest.mark.timeout(180)
def test_a_new_member_catches_up_from_a_snapshot_of_50k_keys(make_cluster):
    cluster = make_cluster(len(VOTERS) + 1, joiners=1, extra_args=node_args(KEYS))
    r = run_catch_up(cluster, keys=KEYS)

    snap, timing, check = r["snapshot"], r["catch_up"], r["check"]
    assert snap["leader_log_first_index"] > 1, snap  # the log alone could not catch n4 up
    assert snap["n4_installed"] >= 1, snap
    assert snap["n4_snapshot_index"] >= snap["index"], snap
    assert r["n4_voter"], r
    assert timing["installed_s"] is not None and timing["caught_up_s"] is not None, timing
    assert check["sampled"] == 1000 and check["wrong"] == 0, check
    assert check["dbsize"] == KEYS, check
    # Compaction (the voters) and the install (n4) gave freed memory back (malloc_trim).
    for node_id in (*VOTERS, JOINER):
        assert cluster.status(node_id)["snapshot"]["memory_trims"] >= 1, node_id

    MEASUREMENTS.append(
        f"catch-up of {JOINER} from a snapshot of {KEYS:,} keys ({snap['bytes'] / 2**20:.1f} "
        f"MiB): installed {timing['installed_s']:.2f} s and caught up as a voter "
        f"{timing['caught_up_s']:.2f} s after `member add` ({timing['mb_per_s']:.1f} MB/s, "
        f"{timing['keys_per_s']:,} keys/s); loaded at {r['load']['keys_per_s']:,} keys/s")
    MEASUREMENTS.append(
        "catch-up peak RSS (VmHWM) per node: " + ", ".join(
            f"{n} ({v['role']}) {v['peak_rss_bytes'] / 2**20:.0f} MiB"
            for n, v in r["nodes"].items())
        + f"; an empty node {r['empty_node_rss_bytes'] / 2**20:.0f} MiB")
