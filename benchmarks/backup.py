"""Backup and restore of a big state: throughput, pauses and peak memory. Run as a script:

    .venv/bin/python benchmarks/backup.py --keys 1000000 [--value-bytes 100] [--seed 1]
        [--json] [--out results.json] [--keep-dir]

It starts a 3-node cluster (the integration tests' real-process harness on free loopback
ports in a temp dir, default node settings), loads `--keys` keys through the leader in
pipelined MSETs of 500 (the loader of `benchmarks/catch_up.py`), then measures:

- backup: `replikv backup create --from <a follower's admin address>`: the follower takes a
  snapshot now and streams it; the CLI writes, fsyncs and verifies it (checksums and the state
  digest recomputed). Throughput is keys and bytes over the command's wall time (snapshot,
  transfer, fsync, verification). Meanwhile a probe sends one write through the serving node
  and one local read on it every 20 ms: the longest of each shows any pause the backup caused.
  Memory: the serving node's VmHWM (the kernel's peak over its whole life) before and after,
  its VmRSS sampled every 100 ms during the backup, and the CLI's peak RSS (ru_maxrss);
- verify: `replikv backup verify FILE`: time and the process's peak RSS;
- restore: after stopping the cluster, `replikv restore --force` of each node's data dir (the
  first is reported in detail: time, keys/s, MB/s, peak RSS of the restore process); then the
  restored cluster is started and timed until it has a leader and every node holds every key
  (DBSIZE read locally on each node), and 1,000 random keys are checked on every node.

Nodes are children in their own sessions that the kernel kills should this process die; they
are stopped in a `finally`, so Ctrl-C or an error leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make the harness and catch_up importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.catch_up import (  # after the path above
    BATCH_KEYS,
    PIPELINE_DEPTH,
    VALUE_BYTES_DEFAULT,
    BenchError,
    RssSampler,
    emit_report,
    key_name,
    load_keys,
    machine_info,
    proc_status_kib,
    run_on_cluster,
    say,
    timeout_for,
    value_for,
)
from replikv.bench import percentile
from tests.integration.cluster import (
    HOST,
    PYTHON,
    Cluster,
    client_without_retries,
    raw_command,
    wait_until,
)

MIB = 2**20
LOCAL = ("REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local")
PROBE_INTERVAL_S = 0.02
PROBE_KEY = "probe"
BASELINE_S = 2.0
SAMPLE_KEYS = 1000
COMMAND_TIMEOUT_FLOOR_S, COMMAND_TIMEOUT_PER_MILLION_KEYS_S = 60.0, 600.0
START_TIMEOUT_FLOOR_S, START_TIMEOUT_PER_MILLION_KEYS_S = 30.0, 120.0


def run_measured(argv: list[str], timeout_s: float, cwd: Path) -> tuple[dict, float, int]:
    """Run a `replikv ... --json` command; returns (its JSON output, wall seconds, its peak
    RSS in bytes from wait4's rusage, which is that process's alone)."""
    out_path = cwd / f"cmd-{time.monotonic_ns()}.out"
    with open(out_path, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                stdin=subprocess.DEVNULL)
    deadline = started + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError(f"`{' '.join(argv[2:])}` still running after {timeout_s:.0f}s")
        time.sleep(0.01)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv[2:])}` failed ({proc.returncode}): {text[-2000:]}")
    return json.loads(text), seconds, usage.ru_maxrss * 1024


class Probe(threading.Thread):
    """Every 20 ms: one write through the serving node (forwarded to the leader) and one local
    read on it; keeps each one's latencies."""

    def __init__(self, port: int) -> None:
        super().__init__(name="probe", daemon=True)
        self.client = client_without_retries(port, socket_timeout=10.0)
        self.phase = "baseline"  # then "backup" while it runs, then "after"
        self.write_ms: dict[str, list[float]] = {}
        self.read_ms: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._halt.is_set():
            phase = self.phase
            try:
                started = time.perf_counter()
                self.client.set(PROBE_KEY, i)  # one key: the backup holds --keys + 1
                self.write_ms.setdefault(phase, []).append((time.perf_counter() - started) * 1e3)
                started = time.perf_counter()
                self.client.execute_command(*LOCAL, "GET", PROBE_KEY)
                self.read_ms.setdefault(phase, []).append((time.perf_counter() - started) * 1e3)
            except Exception as e:  # noqa: BLE001 - reported
                self.errors.append(repr(e))
            i += 1
            self._halt.wait(PROBE_INTERVAL_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(15.0)
        self.client.close()


def latency(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"count": len(values), "p50_ms": round(percentile(ordered, 0.5), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2),
            "max_ms": round(max(values, default=float("nan")), 2)}


def check_restored(cluster: Cluster, keys: int, value_bytes: int, seed: int,
                   rng: random.Random) -> dict:
    sample = rng.sample(range(keys), min(SAMPLE_KEYS, keys))
    wrong = 0
    dbsize = {}
    for node_id in cluster.ids:
        port = cluster.port(node_id)
        dbsize[node_id] = raw_command(port, *LOCAL, "DBSIZE", timeout_s=10.0)
        for start in range(0, len(sample), 500):
            part = sample[start:start + 500]
            found = raw_command(port, *LOCAL, "MGET", *[key_name(i) for i in part],
                                timeout_s=10.0)
            wrong += sum(1 for i, v in zip(part, found, strict=True)
                         if v != value_for(i, value_bytes, seed))
    return {"sampled_per_node": len(sample), "wrong": wrong, "dbsize": dbsize}


def run(cluster: Cluster, root: Path, *, keys: int, value_bytes: int, seed: int,
        show_progress: bool, say) -> dict:
    rng = random.Random(seed)
    leader = cluster.leader()
    load, leader = load_keys(cluster, leader, keys, value_bytes, seed,
                             show_progress=show_progress, say=say)
    serving = next(i for i in cluster.ids if i != leader)
    wait_until(lambda: cluster.status(serving)["applied_index"]
               >= cluster.status(leader)["commit_index"], timeout_s=60.0,
               what=f"{serving} to apply everything")
    pids = {n: cluster.nodes[n].pid for n in cluster.ids}
    before = {n: proc_status_kib(p, "VmRSS", "VmHWM") for n, p in pids.items()}
    backup_file = root / "backup.rkvsnap"
    command_timeout = timeout_for(keys, COMMAND_TIMEOUT_FLOOR_S,
                                  COMMAND_TIMEOUT_PER_MILLION_KEYS_S)

    say(f"backup from {serving} (a follower), while a probe writes and reads through it")
    sampler = RssSampler(pids, phase="backup")
    probe = Probe(cluster.port(serving))
    sampler.start()
    probe.start()
    time.sleep(BASELINE_S)  # the probe's latencies without a backup, to compare with
    try:
        probe.phase = "backup"
        created, backup_s, backup_cli_rss = run_measured(
            [PYTHON, "-m", "replikv", "backup", "create", "--from",
             f"{HOST}:{cluster.nodes[serving].admin_port}", "--to", str(backup_file), "--json"],
            command_timeout, root)
        probe.phase = "after"
        time.sleep(0.5)
    finally:
        probe.stop()
        sampler.stop()
    after = {n: proc_status_kib(p, "VmRSS", "VmHWM") for n, p in pids.items()}
    size = created["size_bytes"]
    say(f"backup: {size:,} bytes, {created['key_count']:,} keys in {backup_s:.2f} s")

    say("verify")
    verified, verify_s, verify_rss = run_measured(
        [PYTHON, "-m", "replikv", "backup", "verify", str(backup_file), "--json"],
        command_timeout, root)
    if not verified.get("ok") or not verified.get("digest_checked"):
        raise BenchError(f"the backup did not verify: {verified}")

    cluster.stop_all()
    say("restore every node's data dir")
    restores = {}
    for node_id in cluster.ids:
        result, seconds, rss = run_measured(
            [PYTHON, "-m", "replikv", "restore", "--from", str(backup_file), "--data-dir",
             str(cluster.nodes[node_id].data_dir), "--node-id", node_id, "--peers",
             cluster.peers, "--force", "--json"], command_timeout, root)
        restores[node_id] = {"seconds": round(seconds, 2), "peak_rss_bytes": rss,
                             "snapshot_bytes": result["snapshot_bytes"],
                             "digest_checked": result["digest_checked"]}
        say(f"restored {node_id} in {seconds:.2f} s, peak RSS {rss / MIB:.0f} MiB")

    say("start the restored cluster")
    started = time.monotonic()
    for node_id in cluster.ids:
        cluster.start(node_id, wait=False)
    start_timeout = timeout_for(keys, START_TIMEOUT_FLOOR_S, START_TIMEOUT_PER_MILLION_KEYS_S)
    cluster.wait_ready(cluster.ids, timeout_s=start_timeout)
    ready_s = time.monotonic() - started
    new_leader = cluster.leader(timeout_s=start_timeout)
    serving_s = time.monotonic() - started
    check = check_restored(cluster, keys, value_bytes, seed, rng)
    assert cluster.client(new_leader).set("after-restore", "1")
    restored_rss = {n: proc_status_kib(cluster.nodes[n].pid, "VmRSS", "VmHWM")
                    for n in cluster.ids}

    first = restores[cluster.ids[0]]
    return {
        "keys": keys, "value_bytes": value_bytes, "seed": seed,
        "load": {"seconds": round(load.seconds, 1), "keys_per_s": round(keys / load.seconds),
                 "batch_keys": BATCH_KEYS, "pipeline_depth": PIPELINE_DEPTH},
        "serving_node": serving, "leader": leader,
        "backup": {
            "seconds": round(backup_s, 2), "bytes": size, "index": created["index"],
            "key_count": created["key_count"],
            "keys_per_s": round(keys / backup_s), "mb_per_s": round(size / 1e6 / backup_s, 1),
            "cli_transfer_seconds": created["transfer_seconds"],
            "cli_verify_seconds": created["verify_seconds"],
            "cli_peak_rss_bytes": backup_cli_rss,
            "serving_node_rss_before_bytes": before[serving]["VmRSS"] * 1024,
            "serving_node_hwm_before_bytes": before[serving]["VmHWM"] * 1024,
            "serving_node_peak_rss_sampled_bytes":
                sampler.peaks_kib.get("backup", {}).get(serving, 0) * 1024,
            "serving_node_hwm_after_bytes": after[serving]["VmHWM"] * 1024,
            "nodes_hwm_before_after_bytes": {n: [before[n]["VmHWM"] * 1024,
                                                 after[n]["VmHWM"] * 1024] for n in pids},
            "probe_write": {k: latency(v) for k, v in probe.write_ms.items()},
            "probe_local_read": {k: latency(v) for k, v in probe.read_ms.items()},
            "probe_errors": probe.errors[:5],
        },
        "verify": {"seconds": round(verify_s, 2), "peak_rss_bytes": verify_rss,
                   "keys_per_s": round(keys / verify_s),
                   "mb_per_s": round(size / 1e6 / verify_s, 1)},
        "restore": {"per_node": restores, "seconds": first["seconds"],
                    "keys_per_s": round(keys / first["seconds"]),
                    "mb_per_s": round(size / 1e6 / first["seconds"], 1),
                    "peak_rss_bytes": max(r["peak_rss_bytes"] for r in restores.values())},
        "restored_cluster": {"ready_s": round(ready_s, 2), "leader_s": round(serving_s, 2),
                             "leader": new_leader, "check": check,
                             "rss_bytes": {n: v["VmRSS"] * 1024
                                           for n, v in restored_rss.items()}},
        "bench_process_peak_rss_bytes":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def format_report(r: dict) -> str:
    b, v, rs, rc = r["backup"], r["verify"], r["restore"], r["restored_cluster"]
    pw, pr = b["probe_write"], b["probe_local_read"]
    rows = [
        ("state", (f"{r['keys']:,} keys x {r['value_bytes']} B values; loaded in "
                   f"{r['load']['seconds']} s ({r['load']['keys_per_s']:,} keys/s)")),
        ("backup", (f"{b['seconds']:.2f} s for {b['bytes']:,} bytes "
                    f"({b['bytes'] / MIB:.1f} MiB) at index {b['index']:,}: "
                    f"{b['keys_per_s']:,} keys/s, {b['mb_per_s']} MB/s (snapshot taken and "
                    f"streamed {b['cli_transfer_seconds']:.2f} s, file verified "
                    f"{b['cli_verify_seconds']:.2f} s, process start included)")),
        ("  serving node", (f"{r['serving_node']} (a follower): VmHWM "
                            f"{_mib(b['serving_node_hwm_before_bytes'])} before, "
                            f"{_mib(b['serving_node_hwm_after_bytes'])} after; VmRSS "
                            f"{_mib(b['serving_node_rss_before_bytes'])} before, peak sampled "
                            f"during the backup "
                            f"{_mib(b['serving_node_peak_rss_sampled_bytes'])}")),
        ("  CLI process", f"peak RSS {_mib(b['cli_peak_rss_bytes'])}"),
        *[(f"  {label}", (f"writes through {r['serving_node']} p50 {w['p50_ms']} ms, p99 "
                           f"{w['p99_ms']} ms, max {w['max_ms']} ms ({w['count']}); local "
                           f"reads on it p50 {rd['p50_ms']} ms, p99 {rd['p99_ms']} ms, max "
                           f"{rd['max_ms']} ms"))
          for label, w, rd in (("before it", pw["baseline"], pr["baseline"]),
                               ("during it", pw["backup"], pr["backup"]))],
        ("verify", (f"{v['seconds']:.2f} s ({v['keys_per_s']:,} keys/s, {v['mb_per_s']} MB/s), "
                    f"peak RSS {_mib(v['peak_rss_bytes'])}")),
        ("restore", (f"{rs['seconds']:.2f} s per node ({rs['keys_per_s']:,} keys/s, "
                     f"{rs['mb_per_s']} MB/s: read, rewrite, fsync, verify, swap), peak RSS "
                     f"{_mib(rs['peak_rss_bytes'])}; per node "
                     + ", ".join(f"{n} {x['seconds']:.2f} s" for n, x in rs["per_node"].items()))),
        ("restored cluster", (f"nodes ready {rc['ready_s']} s after start (each loaded the "
                              f"snapshot), leader at {rc['leader_s']} s; DBSIZE "
                              + ", ".join(f"{n} {d:,}" for n, d in rc["check"]["dbsize"].items())
                              + f"; {rc['check']['sampled_per_node']} sampled keys per node, "
                              f"{rc['check']['wrong']} wrong")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {val}" for k, val in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=VALUE_BYTES_DEFAULT)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print a JSON object, no table")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    parser.add_argument("--keep-dir", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.keys <= 50_000_000 and 1 <= args.value_bytes <= 1 << 20):
        parser.error("--keys must be 1..50000000 and --value-bytes 1..1048576")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])

    root = Path(tempfile.mkdtemp(prefix="replikv-backup-bench-"))
    cluster = Cluster(root, 3, rng=random.Random(args.seed))
    started = time.monotonic()

    def body() -> dict:
        cluster.start_all()
        return run(cluster, root, keys=args.keys, value_bytes=args.value_bytes,
                   seed=args.seed, show_progress=not args.json, say=say)

    result = run_on_cluster(cluster, root, body, keep_dir=args.keep_dir,
                            failures=(AssertionError,))
    if isinstance(result, int):
        return result
    report = {"command": command, "machine": machine_info(),
              "total_s": round(time.monotonic() - started, 1), **result}
    check = result["restored_cluster"]["check"]
    problems = []
    expected_keys = args.keys + 1  # and the probe's key
    if check["wrong"] or any(d != expected_keys for d in check["dbsize"].values()):
        problems.append(f"the restored data is wrong: {check}")
    if result["backup"]["key_count"] != expected_keys:
        problems.append(f"the backup holds {result['backup']['key_count']} keys, not "
                        f"{expected_keys}")
    if result["backup"]["probe_errors"]:
        problems.append(f"the probe's commands failed: {result['backup']['probe_errors']}")
    report["problems"] = problems
    return emit_report(report, out=args.out, as_json=args.json, problems=problems,
                       setup=(f"3 nodes on loopback, fsync=always, default node settings; "
                              f"total {report['total_s']:.0f} s"),
                       body=lambda: format_report(result))


if __name__ == "__main__":
    sys.exit(main())
