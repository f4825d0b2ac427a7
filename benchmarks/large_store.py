"""Sustained writes on a large store, under each snapshot policy: what log compaction costs.

    .venv/bin/python benchmarks/large_store.py [--keys 1000000] [--duration-s 30]
        [--policies growth,count,off] [--workload set64] [--json] [--out results.json]

A snapshot costs work in proportion to the state's size (every key is read, encoded, written
and fsynced); a policy decides how often that work is done. For each policy in turn, a fresh
3-node cluster (the integration tests' real-process harness, on free loopback ports in a temp
dir, default settings except the snapshot rules) is loaded with `--keys` keys of 100 bytes
(pipelined MSETs of 500, as benchmarks/memory.py loads them), then `replikv bench --cluster ...
--workloads set64` (keys random over 10,000, so the state's size stays put) runs for
`--duration-s` against it. Printed per policy: throughput, latency, CPU per 1,000 SETs per
node, the snapshots each node took during the workload, and each node's RSS overhead per key at
the end. The policies:

- growth: the node's defaults: a snapshot once the log since the last one costs
  `snapshot_log_ratio` (0.25) of the keyspace's memory, and at least 8 MiB;
- count: the earlier default, a snapshot every 50,000 entries (`--snapshot-log-ratio 0
  --snapshot-entries 50000`), whatever the state's size;
- off: no automatic snapshot (the log grows without bound: a reference, not a setting to run);
- backups: growth, and scheduled backups every 10 s (`--backup-every 10s`): the leader takes a
  snapshot, copies it into a backup file (fsynced, then verified in full) and keeps the newest.

Nodes are stopped in a `finally`, so Ctrl-C, SIGTERM or an error leave nothing running.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make the harness and catch_up importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.catch_up import (  # after the path above
    BenchError,
    emit_report,
    load_keys,
    machine_info,
    proc_status_kib,
    run_on_cluster,
    say,
)
from tests.integration.cluster import HOST, Cluster

POLICIES: dict[str, list[str]] = {
    "growth": [],
    "count": ["--snapshot-log-ratio", "0", "--snapshot-entries", "50000"],
    "off": ["--snapshot-log-ratio", "0", "--snapshot-entries", "0", "--snapshot-log-bytes", "0"],
    # growth, and the leader writes a scheduled backup every BACKUP_EVERY (into the cluster's
    # directory; {root} is replaced by it)
    "backups": ["--backup-dir", "{root}/backups", "--backup-every", "10s"],
}
VALUE_BYTES = 100
SEED = 1
BENCH_TIMEOUT_EXTRA_S = 120.0
MIB = 2**20


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    return names


def snapshots_taken(cluster: Cluster) -> dict[str, int]:
    return {n: (cluster.status(n).get("snapshot") or {}).get("taken", 0) for n in cluster.ids}


def backups_written(cluster: Cluster) -> dict[str, int]:
    """Each node's scheduled backups written so far (0 where none are scheduled)."""
    return {n: (cluster.status(n).get("scheduled_backups") or {}).get("written", 0)
            for n in cluster.ids}


def gc_stats(cluster: Cluster) -> dict[str, dict[str, float]]:
    """Each node's full garbage collections so far (INFO memory): count, total and longest
    pause in ms; empty for a node that does not report them."""
    out = {}
    for n in cluster.ids:
        info = cluster.info(n, "memory")
        out[n] = {k: float(info[k]) for k in ("gc_full_collections", "gc_full_pause_ms_total",
                                              "gc_full_pause_ms_max") if k in info}
    return out


def bench_command(cluster: Cluster, workload: str, duration_s: float) -> list[str]:
    addresses = ",".join(f"{HOST}:{cluster.port(n)}" for n in cluster.ids)
    return [sys.executable, "-m", "replikv", "bench", "--cluster", addresses,
            "--workloads", workload, "--duration-s", str(duration_s), "--json"]


def run_policy(policy: str, *, keys: int, duration_s: float, workload: str,
               keep_dir: bool) -> dict | int:
    root = Path(tempfile.mkdtemp(prefix=f"replikv-large-{policy}-"))
    node_args = [a.replace("{root}", str(root)) for a in POLICIES[policy]]
    cluster = Cluster(root, 3, extra_args=node_args, rng=random.Random(SEED))

    def body() -> dict:
        say(f"{policy}: starting n1..n3 in {root} ({' '.join(POLICIES[policy]) or 'defaults'})")
        cluster.start_all()
        leader = cluster.leader()
        pids = {n: cluster.nodes[n].pid for n in cluster.ids}
        baseline = {n: proc_status_kib(pid, "VmRSS")["VmRSS"] * 1024 for n, pid in pids.items()}
        load, leader = load_keys(cluster, leader, keys, VALUE_BYTES, SEED,
                                 show_progress=False, say=say)
        before = snapshots_taken(cluster)
        backups_before = backups_written(cluster)
        gc_before = gc_stats(cluster)
        command = bench_command(cluster, workload, duration_s)
        say(f"{policy}: {' '.join(shlex.quote(a) for a in command[1:])}")
        done = subprocess.run(command, check=False, capture_output=True, text=True,
                              timeout=duration_s + BENCH_TIMEOUT_EXTRA_S)
        if done.returncode != 0:
            raise BenchError(f"replikv bench failed ({done.returncode}): "
                             f"{done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout)["workloads"][0]
        after = snapshots_taken(cluster)
        backups = {n: backups_written(cluster)[n] - backups_before[n] for n in cluster.ids}
        gc_after = gc_stats(cluster)
        rss = {n: proc_status_kib(pid, "VmRSS")["VmRSS"] * 1024 for n, pid in pids.items()}
        dbsize = int(cluster.client(leader).dbsize())
        nodes = {}
        for n in cluster.ids:
            cost = result["nodes"].get(n) or {}
            nodes[n] = {
                "leader": n == leader,
                "cpu_s_per_1k_ops": cost.get("cpu_s_per_1k_ops"),
                "snapshots_during_workload": after[n] - before[n],
                "scheduled_backups_during_workload": backups[n],
                # full collections of the node process during the workload, and the longest
                # since it started (the load included)
                "gc_full_collections_during_workload": (
                    gc_after[n]["gc_full_collections"] - gc_before[n]["gc_full_collections"]
                    if gc_after[n] else None),
                "gc_full_pause_ms_during_workload": (
                    round(gc_after[n]["gc_full_pause_ms_total"]
                          - gc_before[n]["gc_full_pause_ms_total"], 1) if gc_after[n] else None),
                "gc_full_pause_ms_max": gc_after[n].get("gc_full_pause_ms_max"),
                "rss_end_bytes": rss[n],
                # beyond the key and value bytes, as benchmarks/memory.py counts it
                "overhead_bytes_per_key": round(
                    (rss[n] - baseline[n] - dbsize * (13 + VALUE_BYTES)) / dbsize, 1),
            }
        say(f"{policy}: {result['ops_per_s']:,.0f} ops/s, snapshots "
            + ", ".join(f"{n} {v['snapshots_during_workload']}" for n, v in nodes.items()))
        return {"policy": policy, "node_args": node_args, "keys_loaded": keys,
                "dbsize": dbsize, "load_seconds": round(load.seconds, 2),
                "workload": workload, "ops_per_s": result["ops_per_s"],
                "latency_ms": result["latency_ms"], "errors": result["errors"],
                "elections": result.get("elections"), "nodes": nodes}

    return run_on_cluster(cluster, root, body, keep_dir=keep_dir)


def format_report(r: dict) -> str:
    rows = [["policy", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "cpu/1k (leader*)",
             "snapshots", "backups", "B/key at end", "full GCs (longest ms)"]]
    for p in r["policies"]:
        nodes = p["nodes"].values()
        rows.append([
            p["policy"], f"{p['ops_per_s']:,.0f}", f"{p['latency_ms']['p50']:.2f}",
            f"{p['latency_ms']['p99']:.2f}", f"{p['latency_ms']['p999']:.2f}",
            str(p["errors"]),
            " ".join(f"{v['cpu_s_per_1k_ops']:.3f}{'*' if v['leader'] else ''}"
                     if v["cpu_s_per_1k_ops"] is not None else "?" for v in nodes),
            " ".join(str(v["snapshots_during_workload"]) for v in nodes),
            " ".join(str(v.get("scheduled_backups_during_workload", "?")) for v in nodes),
            " ".join(f"{v['overhead_bytes_per_key']:.0f}" for v in nodes),
            " ".join(f"{v['gc_full_collections_during_workload']:.0f}"
                     f"({v['gc_full_pause_ms_max']:.0f})"
                     if v.get("gc_full_pause_ms_max") is not None else "?" for v in nodes),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    by_name = {p["policy"]: p for p in r["policies"]}
    if "growth" in by_name:
        for other in ("count", "off"):
            if other in by_name:
                lines.append(f"growth / {other}: "
                             f"{by_name['growth']['ops_per_s'] / by_name[other]['ops_per_s']:.2f}"
                             " of the throughput")
    lines += ["", ("cpu/1k: CPU seconds per 1,000 operations per node (* the leader); "
                   "snapshots, backups: taken, and scheduled backups written, by each node during the "
                   "workload; B/key: (RSS - RSS at "
                   "start - keys x (key + value bytes)) / keys, per node, at the end; full GCs: the "
                   "node process's full garbage collections during the workload, and in "
                   "brackets the longest since it started, in ms")]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys loaded first")
    parser.add_argument("--duration-s", type=float, default=30.0,
                        help="how long the workload runs per policy")
    parser.add_argument("--workload", default="set64", choices=["set64", "set256", "setp16"])
    parser.add_argument("--policies", type=parse_policies, default=list(POLICIES),
                        help=f"which, in order (default: {','.join(POLICIES)})")
    parser.add_argument("--json", action="store_true", help="print a JSON object, no table")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    parser.add_argument("--keep-dir", action="store_true",
                        help="keep each cluster's directory afterwards")
    args = parser.parse_args()
    if not (1 <= args.keys <= 50_000_000 and 1 <= args.duration_s <= 3600):
        parser.error("--keys must be 1..50000000 and --duration-s 1..3600")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    report: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine_info(), "keys": args.keys, "duration_s": args.duration_s,
        "policies": []}
    for policy in args.policies:
        result = run_policy(policy, keys=args.keys, duration_s=args.duration_s,
                            workload=args.workload, keep_dir=args.keep_dir)
        if isinstance(result, int):
            return result
        report["policies"].append(result)
    report["total_s"] = round(time.monotonic() - started, 1)
    problems = [f"{p['policy']}: {p['errors']} errors" for p in report["policies"]
                if p["errors"]]
    return emit_report(report, out=args.out, as_json=args.json, problems=problems,
                       setup=(f"{args.keys:,} keys of {VALUE_BYTES} B loaded, then "
                              f"{args.workload} for {args.duration_s:g} s per policy; total "
                              f"{report['total_s']:.0f} s"),
                       body=lambda: format_report(report))


if __name__ == "__main__":
    sys.exit(main())
