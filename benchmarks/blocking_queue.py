"""A work queue on blocking pops: how many jobs a second reach the workers, and how long a job
waits between its RPUSH being acknowledged and a worker's BLPOP answering it.

Workers wait in BLPOP (one connection each, spread over the nodes, or on one redis-server);
producers push one job per RPUSH, each job carrying the time it was sent. Reported: jobs a
second end to end, and the push-to-pop latency's p50 and p99 (the job's send time to the
worker's receipt), for replikv (a local 3-node cluster, fsync always, w=majority) and, with
--redis-port, a redis-server to compare with.

First, for --idle-s, the same workers wait on a queue nobody pushes to, each calling BLPOP
with a 1 s timeout again and again (as Celery's idle workers call BRPOP): the log entries that
costs the replikv cluster (the highest last_log_index of its members, before and after).

    .venv/bin/python benchmarks/blocking_queue.py [--duration-s 10] [--workers 8]
        [--producers 4] [--idle-s 5] [--redis-port 6379]

Bounded: it runs for --duration-s, then stops every thread and the cluster it started.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import redis

from replikv.bench import local_cluster, parse_address

QUEUE = "bench:queue"
IDLE_QUEUE = "bench:idle"


def run(addresses: list[tuple[str, int]], producers: int, workers: int, duration_s: float
        ) -> dict[str, float]:
    stop = threading.Event()
    latencies: list[float] = []
    popped = [0]
    lock = threading.Lock()

    def work(i: int) -> None:
        host, port = addresses[i % len(addresses)]
        r = redis.Redis(host=host, port=port, socket_timeout=10)
        while not stop.is_set():
            got = r.blpop([QUEUE], 1)
            if got is not None:
                waited = time.perf_counter() - float(got[1])
                with lock:
                    latencies.append(waited)
                    popped[0] += 1

    def produce(i: int) -> None:
        host, port = addresses[i % len(addresses)]
        r = redis.Redis(host=host, port=port, socket_timeout=10)
        while not stop.is_set():
            r.rpush(QUEUE, repr(time.perf_counter()))

    redis.Redis(*addresses[0], socket_timeout=10).delete(QUEUE)
    threads = ([threading.Thread(target=work, args=(i,)) for i in range(workers)]
               + [threading.Thread(target=produce, args=(i,)) for i in range(producers)])
    for t in threads:
        t.start()
    time.sleep(1.0)  # warm up
    with lock:
        start_count, latencies[:] = popped[0], []
    started = time.perf_counter()
    time.sleep(duration_s)
    with lock:
        count, sample = popped[0] - start_count, list(latencies)
    elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join(timeout=15)
    sample.sort()
    return {"jobs_per_s": count / elapsed,
            "p50_ms": 1000 * statistics.median(sample) if sample else float("nan"),
            "p99_ms": 1000 * sample[int(0.99 * (len(sample) - 1))] if sample else float("nan")}


def last_log_index(addresses: list[tuple[str, int]]) -> int:
    highest = 0
    for host, port in addresses:
        info = redis.Redis(host=host, port=port, socket_timeout=10).info("replication")
        highest = max(highest, int(info["last_log_index"]))
    return highest


def idle(addresses: list[tuple[str, int]], workers: int, duration_s: float) -> dict[str, float]:
    stop = threading.Event()
    calls = [0]
    lock = threading.Lock()

    def work(i: int) -> None:
        host, port = addresses[i % len(addresses)]
        r = redis.Redis(host=host, port=port, socket_timeout=10)
        while not stop.is_set():
            assert r.blpop([IDLE_QUEUE], 1) is None, "the idle queue had something"
            with lock:
                calls[0] += 1

    before = last_log_index(addresses)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    time.sleep(duration_s)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    entries = last_log_index(addresses) - before
    return {"calls": calls[0], "entries": entries, "entries_per_s": entries / duration_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--idle-s", type=float, default=5.0,
                        help="first, how long the workers wait on an idle queue (0: not)")
    parser.add_argument("--redis-port", type=int, default=None,
                        help="also measure a redis-server on this loopback port")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="replikv-queue-") as tmp, \
            local_cluster(Path(tmp), fsync="always", replication="passive") as cluster:
        addresses = [parse_address(a) for a in cluster]
        if args.idle_s > 0:
            r = idle(addresses, args.workers, args.idle_s)
            print(f"idle queue, {args.workers} workers in BLPOP with a 1 s timeout for "
                  f"{args.idle_s:g} s: {r['calls']} calls, {r['entries']} log entries "
                  f"({r['entries_per_s']:.1f} a second)")
        rows.append(("replikv (3 nodes, fsync always)",
                     run(addresses, args.producers, args.workers, args.duration_s)))
    if args.redis_port is not None:
        rows.append((f"redis-server :{args.redis_port}",
                     run([("127.0.0.1", args.redis_port)], args.producers, args.workers,
                         args.duration_s)))
    print(f"{'target':36} {'jobs/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in rows:
        print(f"{name:36} {r['jobs_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")


if __name__ == "__main__":
    main()
