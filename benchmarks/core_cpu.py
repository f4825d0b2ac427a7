"""The CPU cost of a SET in the sans-I/O cores alone: no sockets, no disk, no event loop.

    .venv/bin/python benchmarks/core_cpu.py [--batch 64] [--ops 20000] [--profile]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/core_cpu.py          # instructions: repeatable

Three NodeCores (tests/unit/node_harness.py's in-memory cluster) elect a leader; then `--batch`
SETs at a time are submitted to the leader and every node processes what it has, the way the
asyncio runtime does (submit, Ready, messages through the real wire encoder and decoder, Ready
again), until `--ops` SETs are done. It prints the wall time per SET summed over the three
cores (the leader's share is about half); `--profile` adds cProfile's top functions.

Wall time on a shared VM drifts by 20% or more between runs; callgrind's instruction count
("Collected") does not, which is how the core's optimizations were compared (the count
includes start-up, the same for every run).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from node_harness import Cluster

from replikv.wire import decode_message, encode_message

FRAME_HEADER_BYTES = 4


def exchange(cluster: Cluster) -> None:
    """Every node processes what it has; then every message is delivered, through the wire."""
    for node_id in cluster.ids:
        cluster.process(node_id)
    queue, cluster.queue = cluster.queue, []
    for to, src, message in queue:
        wire = encode_message(message)[FRAME_HEADER_BYTES:]
        cluster.nodes[to].step(src, decode_message(wire), cluster.now_ms)


def run(cluster: Cluster, leader: str, batch: int, rounds: int) -> None:
    node = cluster.nodes[leader]
    value = b"v" * 100
    for r in range(rounds):
        for i in range(batch):
            cluster._req += 1
            node.submit(cluster._req, [b"SET", b"bench:%d" % ((i * 7 + r) % 10_000), value],
                        cluster.now_ms)
        # Propose and send; append and answer; commit and apply (the followers apply with
        # the next round, whose AppendRequests carry the commit index).
        for _ in range(3):
            exchange(cluster)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    cluster = Cluster()
    leader = cluster.elect()
    cluster.queue.clear()
    rounds = max(1, args.ops // args.batch)
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    run(cluster, leader, args.batch, rounds)
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - started
    # The followers learn the last commit index: no next write carries it, so it goes out on
    # its own, as the server sends it after COMMIT_BROADCAST_DELAY_S.
    cluster.nodes[leader].raft.broadcast_commit()
    for _ in range(3):
        exchange(cluster)
    done = rounds * args.batch
    applied = {n: cluster.nodes[n].applied_index for n in cluster.ids}
    if len(set(applied.values())) != 1:
        raise SystemExit(f"the nodes did not all apply everything: {applied}")
    print(f"{elapsed / done * 1e6:.1f} us per SET over the three cores "
          f"(batch {args.batch}, {done:,} SETs)")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
