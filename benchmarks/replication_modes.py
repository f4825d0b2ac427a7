"""What passive and active replication cost, measured on real 3-node clusters. Run as a script:

    .venv/bin/python benchmarks/replication_modes.py [--quick] [--out results.json]
        [--clients 16] [--ops N] [--fsync always|batch|never] [--modes passive,active]

For each replication mode it starts a fresh cluster (three `python -m replikv node` processes on
free loopback ports, data in a temp dir), finds the leader, and runs these workloads against it,
each with `--clients` threads of redis-py (one connection each) sharing a fixed number of writes:

    set          SET of 100-byte values over 10k keys, at write concern w=1, majority and all
    sinterstore  SINTERSTORE dst<i%100> a b over two preloaded ~20k-member sets that share 10
                 members: expensive to execute, tiny result
    spop         SPOP from a big preloaded set: the leader fixes the random pick

Per run it reports throughput, p50/p99 latency, CPU seconds per 1000 writes of each node (from
/proc/<pid>/stat, sampled before the run and after every node has applied the whole log), log
bytes per write (growth of each node's wal/ directory), the INFO counters commands_executed and
effects_applied, and each node's RSS. Passive replication ships effects, so its followers only
apply them; active replication ships commands, so every follower executes each one again.

Every node is our child process in its own session, asks the kernel to kill it should we die
(PR_SET_PDEATHSIG), and is stopped in a `finally`, so Ctrl-C, SIGTERM or an error leave nothing
running. Every wait is bounded in time and in iterations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from replikv.local_cluster import (
    NODE_LAUNCHER,
    SCRATCH_PORT_RANGE,
    ClusterError,
    free_ports,
    stop_process_groups,
)

HOST = "127.0.0.1"
PORT_RANGE = SCRATCH_PORT_RANGE
NODE_IDS = ("n1", "n2", "n3")

READY_TIMEOUT_S = 20.0
LEADER_TIMEOUT_S = 15.0
CATCH_UP_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 90.0  # one measured run stops issuing writes after this, whatever is left
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.05
ADMIN_HTTP_TIMEOUT_S = 1.0
CLIENT_SOCKET_TIMEOUT_S = 10.0

CLIENTS_DEFAULT = 16
OPS_FULL = 5000
OPS_QUICK = 2000
SET_KEYS = 10_000
SET_VALUE_BYTES = 100
INTER_SET_MEMBERS = 20_000
INTER_OVERLAP_MEMBERS = 10
INTER_DESTINATIONS = 100
SPOP_POOL_MEMBERS_MIN = 50_000
PRELOAD_CHUNK_MEMBERS = 2000
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The nodes' election timeout, in ticks of 50 ms (node default 10, i.e. 0.5-1 s). A node that
# executes a batch of 16 SINTERSTOREs (~25 ms each) holds its event loop for 0.4 s and more; with
# three such nodes and the clients sharing a 2-CPU machine (active mode) heartbeats then arrive
# late, elections follow one another, and the run would measure elections instead of
# replication. 2-4 s keeps one leader through every run; `--election-ticks 10` shows the effect.
ELECTION_TICKS_DEFAULT = 40



class BenchError(RuntimeError):
    """The cluster did not do what the benchmark needs (no leader, a node died, ...)."""


def wait_until(predicate: Callable[[], object], *, timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    for _ in range(int(timeout_s / POLL_INTERVAL_S) + 1):
        try:
            result = predicate()
        except (OSError, ValueError, redis.RedisError) as e:
            result, last_error = None, e
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}"
                     + (f" (last error: {last_error})" if last_error else ""))


def pick_free_ports(count: int, rng: random.Random) -> list[int]:
    try:
        return free_ports(count, HOST, rng, PORT_RANGE)
    except ClusterError as e:
        raise BenchError(str(e)) from None


# ---- one node process, as the kernel sees it ----


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wal_data_bytes(path: Path) -> int:
    """The bytes of log records in a WAL directory: each segment up to its last non-zero byte.
    A segment's size says nothing per write: the log grows its files ahead, in
    wal_preallocate_bytes steps of zeros (a record ending in a zero byte is counted a few
    bytes short, which an average over thousands of writes does not see)."""
    if not path.is_dir():
        return 0
    return sum(len(p.read_bytes().rstrip(b"\0")) for p in path.iterdir() if p.is_file())


@dataclass
class Node:
    id: str
    client_port: int
    peer_port: int
    admin_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    def status(self) -> dict:
        url = f"http://{HOST}:{self.admin_port}/status"
        with urllib.request.urlopen(url, timeout=ADMIN_HTTP_TIMEOUT_S) as response:
            return json.loads(response.read())

    def info_stats(self) -> dict[str, int]:
        client = redis.Redis(host=HOST, port=self.client_port, socket_timeout=5.0,
                             retry=Retry(NoBackoff(), 0))
        try:
            stats = client.info("stats")
        finally:
            client.close()
        return {k: int(v) for k, v in stats.items() if isinstance(v, int)}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """Three node processes; use as a context manager so they are always stopped."""

    replication: str
    fsync: str
    root: Path
    rng: random.Random
    election_ticks: int
    nodes: list[Node] = field(default_factory=list)

    def __enter__(self) -> Self:
        ports = pick_free_ports(3 * len(NODE_IDS), self.rng)
        for i, node_id in enumerate(NODE_IDS):
            self.nodes.append(Node(node_id, *ports[3 * i:3 * i + 3],
                                   data_dir=self.root / node_id,
                                   log_path=self.root / f"{node_id}.log"))
        peers = ",".join(f"{n.id}={HOST}:{n.peer_port}" for n in self.nodes)
        try:
            for n in self.nodes:
                argv = [sys.executable, "-c", NODE_LAUNCHER, str(os.getpid()), "node",
                        "--id", n.id, "--data-dir", str(n.data_dir),
                        "--listen", f"{HOST}:{n.client_port}",
                        "--peer-listen", f"{HOST}:{n.peer_port}", "--peers", peers,
                        "--admin", f"{HOST}:{n.admin_port}",
                        "--replication", self.replication, "--fsync", self.fsync,
                        "--election-ticks", str(self.election_ticks),
                        "--log-level", "info"]
                with open(n.log_path, "ab") as log:
                    # Own session: a terminal's Ctrl-C reaches only us, and we stop the nodes.
                    n.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
            for n in self.nodes:
                wait_until(lambda n=n: self._check_alive() and n.status(),
                           timeout_s=READY_TIMEOUT_S, what=f"node {n.id} to serve /status")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        stop_process_groups([n.proc for n in self.nodes if n.proc is not None])

    def _check_alive(self) -> bool:
        for n in self.nodes:
            if not n.alive():
                tail = n.log_path.read_text(errors="replace")[-2000:]
                code = n.proc.returncode if n.proc is not None else "?"
                raise BenchError(f"node {n.id} exited (status {code}); its log ends:\n{tail}")
        return True

    def log_tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {n.id} log ({n.log_path}) ends:\n"
                         + n.log_path.read_text(errors="replace")[-chars:]
                         for n in self.nodes if n.log_path.exists())

    def leader(self) -> Node:
        """The node every node agrees is the leader."""
        def agreed() -> Node | None:
            self._check_alive()
            statuses = {n.id: n.status() for n in self.nodes}
            leaders = {s["leader"] for s in statuses.values()}
            if len(leaders) != 1 or None in leaders:
                return None
            (leader_id,) = leaders
            if statuses[leader_id]["role"] != "leader":
                return None
            return next(n for n in self.nodes if n.id == leader_id)
        return wait_until(agreed, timeout_s=LEADER_TIMEOUT_S, what="an agreed leader")

    def wait_all_applied(self, leader: Node) -> int:
        """Wait until every node has applied the leader's whole log; return its last index."""
        last = leader.status()["last_log_index"]
        wait_until(lambda: self._check_alive() and all(
            n.status()["applied_index"] >= last for n in self.nodes),
            timeout_s=CATCH_UP_TIMEOUT_S, what=f"every node to apply index {last}")
        return last


# ---- workloads ----


def client_for(node: Node) -> redis.Redis:
    # No retries: a resent write would be counted twice. One connection, so the connection's
    # write concern applies to every command.
    return redis.Redis(host=HOST, port=node.client_port, socket_timeout=CLIENT_SOCKET_TIMEOUT_S,
                       socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0),
                       single_connection_client=True)


def set_op(i: int, rng: random.Random, value: bytes) -> tuple:
    return ("SET", f"bench:k{rng.randrange(SET_KEYS)}", value)


def sinterstore_op(i: int, rng: random.Random, value: bytes) -> tuple:
    return ("SINTERSTORE", f"bench:dst{i % INTER_DESTINATIONS}", "bench:a", "bench:b")


def spop_op(i: int, rng: random.Random, value: bytes) -> tuple:
    return ("SPOP", "bench:pool")


def sadd_in_chunks(client: redis.Redis, key: str, members: Iterator[str] | range,
                   prefix: str) -> None:
    chunk: list[str] = []
    for m in members:
        chunk.append(f"{prefix}{m}")
        if len(chunk) == PRELOAD_CHUNK_MEMBERS:
            client.execute_command("SADD", key, *chunk)
            chunk = []
    if chunk:
        client.execute_command("SADD", key, *chunk)


def preload_sinterstore(client: redis.Redis, ops: int) -> None:
    first_b = INTER_SET_MEMBERS - INTER_OVERLAP_MEMBERS
    sadd_in_chunks(client, "bench:a", range(INTER_SET_MEMBERS), "m")
    sadd_in_chunks(client, "bench:b", range(first_b, first_b + INTER_SET_MEMBERS), "m")
    got = len(client.execute_command("SINTER", "bench:a", "bench:b"))
    if got != INTER_OVERLAP_MEMBERS:
        raise BenchError(f"preloaded sets share {got} members, not {INTER_OVERLAP_MEMBERS}")


def preload_spop(client: redis.Redis, ops: int) -> None:
    sadd_in_chunks(client, "bench:pool", range(max(SPOP_POOL_MEMBERS_MIN, 2 * ops)), "p")


@dataclass(frozen=True)
class Workload:
    name: str
    write_concern: str
    op: Callable[[int, random.Random, bytes], tuple]
    preload: Callable[[redis.Redis, int], None] | None = None
    ops_fraction: float = 1.0  # of --ops: an expensive command runs fewer times




WORKLOADS = [
    Workload("set", "1", set_op),
    Workload("set", "majority", set_op),
    Workload("set", "all", set_op),
    # ~25 ms of CPU per execution here, so a fifth of the writes keeps a run short.
    Workload("sinterstore", "majority", sinterstore_op, preload_sinterstore, ops_fraction=0.2),
    Workload("spop", "majority", spop_op, preload_spop),
]


@dataclass
class ClientResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def drive(leader: Node, workload: Workload, ops: int, clients: int, seed: int,
          deadline: float) -> tuple[list[ClientResult], float]:
    """`ops` writes shared by `clients` threads; returns their results and the elapsed time."""
    results = [ClientResult() for _ in range(clients)]
    start_barrier = threading.Barrier(clients + 1, timeout=READY_TIMEOUT_S)
    value = b"v" * SET_VALUE_BYTES

    def one_client(c: int) -> None:
        mine = range(c, ops, clients)  # client c does writes c, c+clients, ...
        rng = random.Random(seed * 1000 + c)
        result = results[c]
        client = client_for(leader)
        try:
            client.execute_command("REPLIKV", "WRITECONCERN", workload.write_concern)
            start_barrier.wait()
            for i in mine:
                if time.monotonic() >= deadline:
                    result.errors.append("run deadline reached")
                    break
                argv = workload.op(i, rng, value)
                t0 = time.perf_counter()
                try:
                    client.execute_command(*argv)
                except redis.RedisError as e:
                    result.errors.append(f"{argv[0]}: {e}")
                    if len(result.errors) > 10:
                        break
                    continue
                result.latencies_s.append(time.perf_counter() - t0)
        except (redis.RedisError, threading.BrokenBarrierError) as e:
            result.errors.append(f"client {c}: {e}")
            with contextlib.suppress(threading.BrokenBarrierError):
                start_barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=one_client, args=(c,), name=f"client-{c}", daemon=True)
               for c in range(clients)]
    for t in threads:
        t.start()
    started = True
    try:
        start_barrier.wait()
    except threading.BrokenBarrierError:
        started = False
    t0 = time.perf_counter()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic() + CLIENT_SOCKET_TIMEOUT_S))
    elapsed = time.perf_counter() - t0
    if any(t.is_alive() for t in threads):
        raise BenchError(f"{workload.name}: clients still running after the run deadline")
    if not started:
        errors = [e for r in results for e in r.errors]
        raise BenchError(f"{workload.name}: clients could not start: {errors[:3]}")
    return results, elapsed


def percentile_ms(sorted_s: list[float], q: float) -> float:
    if not sorted_s:
        return float("nan")
    return 1000 * sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))]


def measure(cluster: Cluster, leader: Node, workload: Workload, ops: int, clients: int,
            seed: int) -> dict:
    if workload.preload is not None:
        loader = client_for(leader)
        try:
            workload.preload(loader, ops)
        finally:
            loader.close()
    cluster.wait_all_applied(leader)

    def snapshot() -> dict[str, dict]:
        return {n.id: {"cpu_s": cpu_seconds(n.proc.pid), "wal_bytes":
                       wal_data_bytes(n.data_dir / "wal"), **n.info_stats()}
                for n in cluster.nodes}

    before = snapshot()
    results, elapsed = drive(leader, workload, ops, clients, seed,
                             time.monotonic() + RUN_TIMEOUT_S)
    cluster.wait_all_applied(leader)
    after = snapshot()
    leader_after = cluster.leader()

    latencies = sorted(x for r in results for x in r.latencies_s)
    writes = len(latencies)
    errors = [e for r in results for e in r.errors]
    nodes = {}
    for n in cluster.nodes:
        b, a = before[n.id], after[n.id]
        nodes[n.id] = {
            "role": "leader" if n is leader else "follower",
            "cpu_s": round(a["cpu_s"] - b["cpu_s"], 3),
            "cpu_s_per_1k_writes": round(1000 * (a["cpu_s"] - b["cpu_s"]) / max(1, writes), 3),
            "wal_bytes": a["wal_bytes"] - b["wal_bytes"],
            "log_bytes_per_write": round((a["wal_bytes"] - b["wal_bytes"]) / max(1, writes), 1),
            "entries_written": a.get("entries_written", 0) - b.get("entries_written", 0),
            "commands_executed": a.get("commands_executed", 0) - b.get("commands_executed", 0),
            "effects_applied": a.get("effects_applied", 0) - b.get("effects_applied", 0),
            "elections_started": (a.get("elections_started", 0)
                                  - b.get("elections_started", 0)),
            "rss_bytes": rss_bytes(n.proc.pid),
        }
    return {"workload": workload.name, "write_concern": workload.write_concern,
            "clients": clients, "writes": writes, "errors": len(errors),
            "first_errors": errors[:3], "elapsed_s": round(elapsed, 3),
            "ops_per_s": round(writes / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": round(percentile_ms(latencies, 0.50), 3),
            "p99_ms": round(percentile_ms(latencies, 0.99), 3),
            "leader": leader.id, "leader_after": leader_after.id, "nodes": nodes}


def run_mode(replication: str, args: argparse.Namespace, rng: random.Random) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"replikv-bench-{replication}-") as tmp, \
            Cluster(replication, args.fsync, Path(tmp), rng, args.election_ticks) as cluster:
        leader = cluster.leader()
        print(f"[{replication}] cluster up in {tmp}, leader {leader.id}", file=sys.stderr)
        for k, workload in enumerate(WORKLOADS):
            started = time.monotonic()
            try:
                ops = max(1, int(args.ops * workload.ops_fraction))
                row = measure(cluster, leader, workload, ops, args.clients, args.seed + k)
            except BenchError:
                print(cluster.log_tails(), file=sys.stderr)
                raise
            row["replication"] = replication
            rows.append(row)
            if row["leader_after"] != leader.id:
                print(f"[{replication}] WARNING: leadership moved from {leader.id} to "
                      f"{row['leader_after']} during {workload.name}; its CPU columns mix "
                      f"roles (marked * in the table)", file=sys.stderr)
                leader = next(n for n in cluster.nodes if n.id == row["leader_after"])
            print(f"[{replication}] {workload.name} w={workload.write_concern}: "
                  f"{row['writes']} writes, {row['ops_per_s']:.0f} ops/s "
                  f"({time.monotonic() - started:.1f}s with preload)", file=sys.stderr)
    return rows


# ---- report ----


def machine_info() -> dict:
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "clk_tck": CLK_TCK}


def format_table(rows: list[dict]) -> str:
    header = ["mode", "workload", "w", "writes", "ops/s", "p50 ms", "p99 ms",
              "CPU s/1k L", "CPU s/1k F1", "CPU s/1k F2", "F/L CPU", "log B/write",
              "exec L/F1/F2", "effects L/F1/F2", "elections", "RSS MiB L/F1/F2"]
    lines = []
    for r in rows:
        nodes = r["nodes"]
        order = [r["leader"]] + sorted(k for k in nodes if k != r["leader"])
        cpu = [nodes[k]["cpu_s_per_1k_writes"] for k in order]
        follower_ratio = (sum(cpu[1:]) / len(cpu[1:])) / cpu[0] if cpu[0] else float("nan")
        log_b = sum(nodes[k]["log_bytes_per_write"] for k in order) / len(order)
        lines.append([
            r["replication"] + ("*" if r["leader_after"] != r["leader"] else ""),
            r["workload"], r["write_concern"], str(r["writes"]),
            f"{r['ops_per_s']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
            *(f"{c:.3f}" for c in cpu), f"{follower_ratio:.2f}", f"{log_b:.0f}",
            "/".join(str(nodes[k]["commands_executed"]) for k in order),
            "/".join(str(nodes[k]["effects_applied"]) for k in order),
            str(sum(nodes[k]["elections_started"] for k in order)),
            "/".join(f"{nodes[k]['rss_bytes'] / 2**20:.0f}" for k in order)])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    left = {0, 1, 2}
    out = []
    for row in [header, *lines]:
        out.append("  ".join(c.ljust(widths[i]) if i in left else c.rjust(widths[i])
                             for i, c in enumerate(row)).rstrip())
    return "\n".join(out)


LEGEND = """\
L = leader, F1/F2 = followers. CPU s/1k: user+system CPU seconds per 1000 writes, from the
run's start until every node applied the whole log. F/L CPU: mean follower CPU / leader CPU.
log B/write: bytes of log records a write added to a node's wal/ (mean over nodes). exec / effects:
INFO commands_executed / effects_applied during the run. elections: elections started by
any node during the run (0 means one leader throughout; * marks a run whose leader changed)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run: {OPS_QUICK} writes per workload instead of "
                             f"{OPS_FULL}")
    parser.add_argument("--ops", type=int, help="writes per workload (overrides --quick)")
    parser.add_argument("--clients", type=int, default=CLIENTS_DEFAULT,
                        help="concurrent clients (threads, one connection each)")
    parser.add_argument("--fsync", choices=["always", "batch", "never"], default="always",
                        help="every node's fsync mode (the node default is always)")
    parser.add_argument("--election-ticks", type=int, default=ELECTION_TICKS_DEFAULT,
                        help="every node's election timeout in 50 ms ticks (the node default "
                             "is 10); see ELECTION_TICKS_DEFAULT for why it is raised")
    parser.add_argument("--modes", default="passive,active",
                        help="replication modes to run, comma-separated")
    parser.add_argument("--seed", type=int, default=1, help="seeds keys and ports")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.ops is None:
        args.ops = OPS_QUICK if args.quick else OPS_FULL
    if not (1 <= args.clients <= 256 and 1 <= args.ops <= 1_000_000):
        parser.error("--clients must be 1..256 and --ops 1..1000000")
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in ("passive", "active") for m in modes):
        parser.error("--modes takes passive and/or active")

    # SIGTERM unwinds like Ctrl-C, through every `finally` that stops nodes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    info = machine_info()
    rng = random.Random(args.seed)
    started = time.monotonic()
    rows: list[dict] = []
    try:
        for mode in modes:
            rows += run_mode(mode, args, rng)
    except KeyboardInterrupt:
        print("interrupted; every node was stopped", file=sys.stderr)
        return 130
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    total_s = time.monotonic() - started

    print(f"command: {command}")
    print(f"machine: nproc={info['nproc']} python={info['python']} {info['platform']}")
    reduced = ", ".join(f"{w.name} {max(1, int(args.ops * w.ops_fraction))}"
                        for w in WORKLOADS if w.ops_fraction != 1.0)
    print(f"settings: {args.clients} clients, {args.ops} writes per run ({reduced}), fsync={args.fsync}, election-ticks={args.election_ticks}, "
          f"3 nodes on loopback, total {total_s:.0f}s\n")
    print(format_table(rows))
    print("\n" + LEGEND)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": command, "machine": info,
            "settings": {"clients": args.clients, "ops": args.ops, "fsync": args.fsync,
                         "election_ticks": args.election_ticks,
                         "modes": modes, "seed": args.seed},
            "total_s": round(total_s, 1), "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
