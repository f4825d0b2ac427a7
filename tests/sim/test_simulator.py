"""The simulator: deterministic replay, a sweep of seeds with every fault, regression seeds."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from replikv.sim.runner import SimConfig, run_seed

CI_SEEDS = 500
SOAK_SEEDS = 20_000
REGRESSIONS = Path(__file__).with_name("regression_seeds.txt")


def _run(args: tuple[int, str, int]) -> tuple[int, bool, str | None, int, int]:
    seed, faults, nodes = args
    r = run_seed(seed, SimConfig(faults=faults, nodes=nodes))
    return seed, r.ok, r.failure, r.ops, r.faults


def _sweep(seeds: list[tuple[int, str, int]]) -> None:
    workers = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_run, seeds, chunksize=8))
    failed = [(s, f) for s, ok, f, _, _ in results if not ok]
    ops = sum(r[3] for r in results)
    faults = sum(r[4] for r in results)
    print(f"\n{len(seeds)} seeds, {ops} operations checked, {faults} faults injected")
    assert not failed, "\n\n".join(
        f"seed {s} failed (replay: replikv sim --seed {s} --trace):\n{f}" for s, f in failed[:3])


def test_same_seed_replays_the_same_run():
    a = run_seed(7, SimConfig(trace_all=True))
    b = run_seed(7, SimConfig(trace_all=True))
    assert a.ok and b.ok
    assert a.trace == b.trace and a.events == b.events and a.ops == b.ops
    c = run_seed(8, SimConfig(trace_all=True))
    assert c.trace != a.trace


def test_ci_sweep_all_faults_three_nodes():
    _sweep([(seed, "all", 3) for seed in range(CI_SEEDS)])


def test_ci_sweep_five_nodes():
    _sweep([(10_000 + seed, "all", 5) for seed in range(100)])


def test_ci_sweep_with_transactions():
    """A third of the operations as MULTI ... EXEC (with a side key's INCR), 3 and 5 nodes,
    both replication modes as the seeds pick them, membership changes and snapshots too."""
    sent = 0
    for seed, nodes in [(20_000 + s, 3) for s in range(80)] + [(30_000 + s, 5) for s in range(20)]:
        r = run_seed(seed, SimConfig(nodes=nodes, transactions=True))
        assert r.ok, f"seed {seed} failed (replay: replikv sim --seed {seed} --nodes {nodes} " \
                     f"--transactions on --trace):\n{r.failure}"
        sent += r.transactions
    assert sent > 1000, sent


def test_ci_sweep_with_streams_hyperloglog_and_blocking_pops():
    """Unrecorded XADD, XREADGROUP, XAUTOCLAIM, PFADD, BLPOP attempts and the rest among the
    operations, in both replication modes, with snapshots: every replica must end alike."""
    sent = 0
    for s in range(24):
        seed, replication = 40_000 + s, ("passive", "active")[s % 2]
        r = run_seed(seed, SimConfig(newer=True, replication=replication, snapshots=s % 4 < 2))
        assert r.ok, (f"seed {seed} failed (replay: replikv sim --seed {seed} --replication "
                      f"{replication} --newer on --trace):\n{r.failure}")
        sent += r.newer
    assert sent > 200, sent


def test_regression_seeds():
    seeds = []
    for line in REGRESSIONS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            seed, faults, nodes = line.split()[:3]
            seeds.append((int(seed), faults, int(nodes)))
    assert seeds
    _sweep(seeds)


@pytest.mark.soak
def test_soak(request):
    if not request.config.getoption("--soak"):
        pytest.skip("soak runs only with --soak")
    _sweep([(100_000 + seed, "all", 3) for seed in range(SOAK_SEEDS)])


def test_a_discarded_proposal_is_answered_by_what_commits_at_its_index():
    """A regression found with a denser nemesis (50-400 ms): the node core answered TRYAGAIN as
    soon as a leader's own copy of a proposal was overwritten, but another replica still held
    the entry and a later leader committed it (Raft's Figure 8): the write took effect."""
    r = run_seed(790, SimConfig(nodes=5, nemesis_interval_ms=(50, 400)))
    assert r.ok, r.failure


def test_membership_changes_and_snapshot_transfers_are_exercised():
    """The sweeps above leave membership changes and snapshots to each seed; here they are on
    in every seed, and the runs must actually commit changes and install snapshots."""
    totals = [0, 0, 0]
    for seed in range(20):
        r = run_seed(50_000 + seed, SimConfig(membership=True, snapshots=True))
        assert r.ok, f"seed {50_000 + seed}: {r.failure}"
        totals[0] += r.membership_changes
        totals[1] += r.snapshots_taken
        totals[2] += r.snapshots_installed
    changes, taken, installed = totals
    assert changes >= 10 and taken >= 50 and installed >= 5, totals


def test_followers_learn_a_lone_writes_commit_within_the_broadcast_delay():
    """The simulator drives the cores as the server does: a commit index that no AppendRequest
    carried goes out COMMIT_BROADCAST_DELAY_MS later, not at the next tick (50 ms). Ten lone
    writes, each followed by a quiet spell: each time, within the delay and one network hop
    (at most 8 ms), every follower knows the write committed."""
    from replikv.raft.core import COMMIT_BROADCAST_DELAY_MS
    from replikv.sim.cluster import SimCluster

    cluster = SimCluster(("n1", "n2", "n3"), seed=11)
    cluster.run_until(cluster.now_ms + 5_000, stop=lambda: bool(cluster.leaders()))
    cluster.run_until(cluster.now_ms + 500)  # the no-op commits, the followers settle
    (leader,) = cluster.leaders()
    raft = cluster.nodes[leader].core.raft
    for i in range(10):
        assert cluster.submit(leader, 100 + i, [b"SET", b"k", b"%d" % i])
        index = raft.log.last_index
        cluster.run_until(cluster.now_ms + 1_000,
                          stop=lambda index=index: raft.commit_index >= index)
        assert raft.commit_index >= index
        cluster.run_until(cluster.now_ms + COMMIT_BROADCAST_DELAY_MS + 8 + 1)
        behind = {n: cluster.nodes[n].core.raft.commit_index for n in cluster.ids
                  if n != leader and cluster.nodes[n].core.raft.commit_index < index}
        assert not behind, f"write {i} (index {index}): followers behind: {behind}"
        cluster.run_until(cluster.now_ms + 30)  # quiet before the next one
