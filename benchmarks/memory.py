"""Memory per stored key: RSS overhead beyond the key and value bytes, on a 3-node cluster,
against the target "at most 200 bytes of RSS overhead per stored key beyond the key and value
bytes, at 1,000,000 keys"; then where the bytes go. Run as a script:

    .venv/bin/python benchmarks/memory.py --keys 1000000 [--value-bytes 100] [--seed 1]
        [--keep-entries 5000] [--node-snapshots off|default] [--json] [--out results.json]
        [--keep-dir]
        [--no-breakdown | --breakdown-only] [--gdb-malloc-trim] [--malloc-mmap-threshold N]

Cluster part. Three nodes (the integration tests' real-process harness, on free loopback ports
in a temp dir). Node settings are the defaults except the log compaction ones: automatic
snapshots are off (--snapshot-entries 0 --snapshot-log-bytes 0), so the whole load is still in
the in-memory Raft log when "loaded" is read, and --snapshot-keep-entries is `--keep-entries`
(default 5,000, the node's own; its `snapshot_keep_bytes`, 16 MiB by default, then bounds what
a snapshot leaves of this load of 2,000 MSETs of about 60 KB each: before that bound existed,
the node's defaults kept the whole load in the log after a snapshot, and this script used 10).
With --node-snapshots default the nodes keep their own snapshot rules instead: the growth rule
(`snapshot_log_ratio`) then snapshots during the load, and "loaded" is what a node at its
defaults holds. Per node, VmRSS (and VmHWM) from /proc/<pid>/status is read:

- baseline: after start-up, a leader, and a warm-up of a few MSETs like the load's (then
  deleted, so the code paths and buffers a load uses exist before the baseline);
- loaded: after `--keys` keys (`key:000000000`..., 13 bytes, values of `--value-bytes`) were
  written through the leader in pipelined MSETs of 500 (`load_keys` of catch_up.py), every node
  applied the leader's commit index, and DBSIZE read locally on each node equals `--keys`;
- compacted: after a snapshot forced on every node (GET /backup on its admin port: a snapshot of
  its applied state taken now, which then compacts its log through index - keep-entries; the
  stream is read and discarded), followers first, then the leader.

Overhead per key = (RSS - RSS at baseline - keys * (key bytes + value bytes)) / keys, for each
node, loaded and compacted, and the same with the end's VmHWM (the process's peak); PASS when
<= 200 bytes. Each reading also splits RSS by kind of mapping (/proc/<pid>/smaps: glibc's heap,
its other threads' heaps, anonymous mappings such as CPython's object arenas, files).

Two experiments, off by default, to test what would lower the figure without changing the node:
--gdb-malloc-trim makes every node call glibc's malloc_trim(0) after the compacted reading (gdb
attaches to it for a moment; needs gdb and ptrace rights over our own children) and reads RSS
again; --malloc-mmap-threshold N starts the nodes with MALLOC_MMAP_THRESHOLD_=N, so allocations
from N bytes (log entries of 60 KB, say) get their own mappings, returned when freed.

Breakdown part (in fresh processes, no cluster, well under a minute): a KVState is built with
the same keys through the node's own apply paths, and every structure it (and the node) keeps
per key is sized with sys.getsizeof rounded up the way the allocators do: the key and value
objects, the shard dicts, the expiry index, the in-memory Raft log's entries (RaftLog + Entry,
until compaction), the copy-on-write capture a snapshot may take, the undo records a leader
keeps until commit, the session table. Three runs: "follower" (entries of effects through
`replikv.entries.apply_entry`, as followers apply them), "leader" (MSETs parsed from RESP and
run through `KVState.execute_recorded`, effects encoded into entries, undo records kept for
the 8 entries in flight, as the leader does), both also reading their own RSS so the sum of the
structures can be compared with what the process really holds; and "tracemalloc" (the follower
path at up to 200,000 keys under tracemalloc: total traced bytes and the source lines that
allocated them).

Nodes are children in their own sessions that the kernel kills should this process die; they
are stopped in a `finally`, so Ctrl-C, SIGTERM or an error leave nothing running.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make the harness and catch_up importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.catch_up import (  # after the path above
    BATCH_KEYS,
    LOCAL_READ,
    PIPELINE_DEPTH,
    VALUE_BYTES_DEFAULT,
    BenchError,
    RssSampler,
    emit_report,
    key_name,
    load_keys,
    machine_info,
    mset_batch,
    proc_status_kib,
    run_on_cluster,
    say,
    timeout_for,
    value_for,
)
from replikv.entries import apply_entry
from replikv.node import encode_effects_entry
from replikv.raft.log import RaftLog
from replikv.raft.messages import Entry
from replikv.resp import RequestParser
from replikv.server.snapshots import BATCH_ITEMS
from replikv.sessions import SessionTable
from replikv.state import EFFECT_EXPIRE, EFFECT_SET_STRING, KVState
from tests.integration.cluster import HOST, Cluster, raw_command

TARGET_OVERHEAD_BYTES = 200
KEEP_ENTRIES_DEFAULT = 5_000  # the node's default
WARMUP_BATCHES = PIPELINE_DEPTH  # MSETs of BATCH_KEYS keys, deleted again before the baseline
WARMUP_KEY_FORMAT = "memory:warmup:{:09d}"
SETTLE_S = 2.0  # after the last change, before reading RSS
APPLY_TIMEOUT_FLOOR_S, APPLY_TIMEOUT_PER_MILLION_KEYS_S = 60.0, 300.0
SNAPSHOT_TIMEOUT_FLOOR_S, SNAPSHOT_TIMEOUT_PER_MILLION_KEYS_S = 60.0, 300.0
HTTP_CHUNK_BYTES = 1 << 20
TRACEMALLOC_KEYS_MAX = 200_000
TRACEMALLOC_FRAMES = 2  # enough to get past msgpack and a namedtuple's __new__
WORKER_TIMEOUT_S = 300.0
EXPIRY_SAMPLE_KEYS = 100_000  # keys given a TTL in the breakdown, to price the expiry index
SESSION_SAMPLE = 10_000
MALLOC_ENV = "MALLOC_MMAP_THRESHOLD_"  # sessions recorded in the breakdown, to price the session table

MIB = 2**20
# CPython's small-object allocator serves requests up to 512 bytes in 16-byte size classes on
# 64-bit builds (3.8+); bigger ones go to glibc malloc: 8 bytes of header, 16-byte alignment,
# 32 bytes at least.
PYMALLOC_MAX_BYTES = 512
PYMALLOC_ALIGN = 16


# ---- arithmetic (pure; tests/unit/test_memory_bench.py) ----


def key_len(keys: int) -> int:
    """Bytes of each loaded key: key_name pads to 9 digits, so all keys of a load of up to a
    billion have the same length."""
    if not 1 <= keys <= 10**9:
        raise ValueError("keys must be 1..10**9")
    first, last = len(key_name(0)), len(key_name(keys - 1))
    if first != last:
        raise ValueError("keys of different lengths")
    return first


def stored_bytes(keys: int, key_bytes: int, value_bytes: int) -> int:
    """The key and value bytes themselves: what the target does not count as overhead."""
    return keys * (key_bytes + value_bytes)


def overhead_per_key(rss_bytes: int, baseline_bytes: int, keys: int, key_bytes: int,
                     value_bytes: int) -> float:
    """RSS beyond the baseline and beyond the stored key and value bytes, per key."""
    if keys <= 0:
        raise ValueError("keys must be positive")
    return (rss_bytes - baseline_bytes - stored_bytes(keys, key_bytes, value_bytes)) / keys


def verdict(overhead: float, target: float = TARGET_OVERHEAD_BYTES) -> str:
    return "PASS" if overhead <= target else "MISS"


def alloc_size(requested: int) -> int:
    """Bytes an allocation of `requested` bytes really takes (see PYMALLOC_MAX_BYTES)."""
    if requested <= 0:
        return 0
    if requested <= PYMALLOC_MAX_BYTES:
        return -(-requested // PYMALLOC_ALIGN) * PYMALLOC_ALIGN
    return max(32, -(-(requested + 8) // 16) * 16)


def per_key(total_bytes: float, keys: int) -> float:
    return round(total_bytes / keys, 1) if keys else 0.0


def node_summary(role: str, baseline_kib: dict[str, int], loaded_kib: dict[str, int],
                 compacted_kib: dict[str, int], *, keys: int, key_bytes: int,
                 value_bytes: int, target: float = TARGET_OVERHEAD_BYTES) -> dict:
    """One node's figures from its /proc readings (VmRSS, VmHWM in KiB) at the three moments;
    the VmHWM at the end is the peak over the node's whole life."""
    base = baseline_kib["VmRSS"] * 1024

    def over(kib: int) -> float:
        return round(overhead_per_key(kib * 1024, base, keys, key_bytes, value_bytes), 1)

    loaded, compacted = over(loaded_kib["VmRSS"]), over(compacted_kib["VmRSS"])
    peak = over(compacted_kib["VmHWM"])
    return {
        "role": role,
        "baseline_rss_bytes": base,
        "baseline_hwm_bytes": baseline_kib["VmHWM"] * 1024,
        "loaded_rss_bytes": loaded_kib["VmRSS"] * 1024,
        "compacted_rss_bytes": compacted_kib["VmRSS"] * 1024,
        "hwm_end_bytes": compacted_kib["VmHWM"] * 1024,
        "overhead_loaded_bytes_per_key": loaded,
        "overhead_compacted_bytes_per_key": compacted,
        "overhead_hwm_bytes_per_key": peak,
        "verdict_loaded": verdict(loaded, target),
        "verdict_compacted": verdict(compacted, target),
        "verdict_hwm": verdict(peak, target),
    }


# ---- the cluster part ----


def node_args(keep_entries: int, snapshots: str = "off") -> list[str]:
    """A log kept after a snapshot of `keep_entries` entries; with `snapshots` "off", no
    automatic snapshot (the load stays in the log until the forced one), with "default" the
    node's own rules (the growth rule then compacts the log during the load)."""
    off = ["--snapshot-log-ratio", "0", "--snapshot-entries", "0", "--snapshot-log-bytes", "0"]
    return [*(off if snapshots == "off" else []), "--snapshot-keep-entries", str(keep_entries)]


def read_memory(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    return {n: proc_status_kib(pid, "VmRSS", "VmHWM") for n, pid in pids.items()}


THREAD_HEAP_ALIGN = 64 * MIB  # glibc's per-thread malloc heaps start at multiples of this


def smaps_rss_kib(text: str) -> dict[str, int]:
    """RSS by kind of mapping, from the text of /proc/<pid>/smaps, in KiB: "heap" (glibc's
    main arena, [heap]), "thread_heaps" (glibc's arenas of other threads: an anonymous
    read-write mapping starting on a 64 MiB boundary and followed by the inaccessible rest of
    its 64 MiB reservation, or all 64 MiB of it), "anon" (other anonymous mappings: CPython's
    object arenas and blocks malloc gave their own mapping), "file" (the interpreter,
    libraries) and "other" (stack, vdso, ...)."""
    out = dict.fromkeys(("heap", "thread_heaps", "anon", "file", "other"), 0)
    last: list = []  # [start, end, kind, rss] of the mapping being read
    for line in text.splitlines():
        first, _, rest = line.partition(" ")
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            lo, hi = (int(x, 16) for x in first.split("-"))
            fields = rest.split(None, 4)
            perms = fields[0] if fields else ""
            name = fields[4].strip() if len(fields) > 4 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("["):
                kind = "other"
            elif name:
                kind = "file"
            elif lo % THREAD_HEAP_ALIGN == 0 and hi - lo == THREAD_HEAP_ALIGN:
                kind = "thread_heaps"
            else:
                kind = "anon"
                if (perms.startswith("---") and last and last[2] == "anon" and last[1] == lo
                        and last[0] % THREAD_HEAP_ALIGN == 0
                        and hi - last[0] == THREAD_HEAP_ALIGN):
                    last[2] = "thread_heaps"  # the usable part of a thread heap
            if last:
                out[last[2]] += last[3]
            last = [lo, hi, kind, 0]
        elif first == "Rss:" and last:
            last[3] += int(rest.split()[0])
    if last:
        out[last[2]] += last[3]
    return out


def read_smaps(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    out = {}
    for n, pid in pids.items():
        try:
            out[n] = smaps_rss_kib(Path(f"/proc/{pid}/smaps").read_text())
        except OSError:
            out[n] = {}
    return out


def local_dbsize(cluster: Cluster, node_id: str) -> int:
    """DBSIZE from the node's own copy (READPREF nearest, CONSISTENCY local)."""
    reply = raw_command(cluster.port(node_id), *LOCAL_READ, "DBSIZE", timeout_s=10.0)
    if not isinstance(reply, int):
        raise BenchError(f"DBSIZE on {node_id} answered {reply!r}")
    return reply


def wait_all_applied(cluster: Cluster, leader: str, timeout_s: float) -> int:
    commit = cluster.status(leader)["commit_index"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit, timeout_s=timeout_s)
    return commit


def warm_up(cluster: Cluster, leader: str, value_bytes: int) -> None:
    """A few MSETs shaped like the load's, then their keys deleted: the baseline then includes
    what exists once writes have flowed (imported code, buffers, connections), not keys."""
    port = cluster.port(leader)
    value = b"w" * value_bytes
    names = [WARMUP_KEY_FORMAT.format(i) for i in range(WARMUP_BATCHES * BATCH_KEYS)]
    for start in range(0, len(names), BATCH_KEYS):
        argv: list[str | bytes] = ["MSET"]
        for name in names[start:start + BATCH_KEYS]:
            argv += [name, value]
        reply = raw_command(port, *argv, timeout_s=30.0)
        if reply != b"OK":
            raise BenchError(f"warm-up MSET answered {reply!r}")
    for start in range(0, len(names), BATCH_KEYS):
        deleted = raw_command(port, "DEL", *names[start:start + BATCH_KEYS], timeout_s=30.0)
        if deleted != len(names[start:start + BATCH_KEYS]):
            raise BenchError(f"warm-up DEL answered {deleted!r}")


def force_snapshot(cluster: Cluster, node_id: str, timeout_s: float) -> dict:
    """GET /backup on the node's admin port: it takes a snapshot of its applied state now and
    compacts its log before answering; the file is read and thrown away."""
    url = f"http://{HOST}:{cluster.nodes[node_id].admin_port}/backup"
    started = time.monotonic()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            length = int(resp.headers["Content-Length"])
            index = int(resp.headers["X-Replikv-Index"])
            while chunk := resp.read(HTTP_CHUNK_BYTES):
                received += len(chunk)
    except urllib.error.HTTPError as e:
        raise BenchError(f"GET /backup on {node_id}: {e.code} {e.read()[:500]!r}") from None
    if received != length:
        raise BenchError(f"GET /backup on {node_id}: {received} of {length} bytes")
    return {"index": index, "bytes": length, "seconds": round(time.monotonic() - started, 2)}


def gdb_malloc_trim(pid: int) -> bool:
    """Make the node call glibc's malloc_trim(0) (gdb attaches for a moment): True if it gave
    memory back. An experiment: what a malloc_trim after log compaction would change."""
    done = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                          capture_output=True, text=True, timeout=120, check=False)
    return any(line.startswith("$1 = 1") for line in done.stdout.splitlines())


def log_entries_held(status: dict) -> int:
    return status["last_log_index"] - status["log_first_index"] + 1


def run_cluster(cluster: Cluster, *, keys: int, value_bytes: int, seed: int,
                keep_entries: int, show_progress: bool, gdb_trim: bool = False,
                snapshots: str = "off", say=say) -> dict:
    """The cluster part on a started 3-node cluster; returns its figures (a dict for JSON)."""
    klen = key_len(keys)
    leader = cluster.leader()
    pids = {n: cluster.nodes[n].pid for n in cluster.ids}
    say(f"warm-up: {WARMUP_BATCHES} MSETs of {BATCH_KEYS} keys through {leader}, deleted")
    warm_up(cluster, leader, value_bytes)
    wait_all_applied(cluster, leader, APPLY_TIMEOUT_FLOOR_S)
    if any(local_dbsize(cluster, n) for n in cluster.ids):
        raise BenchError("keys left after the warm-up")
    time.sleep(SETTLE_S)
    baseline = read_memory(pids)
    baseline_smaps = read_smaps(pids)
    baseline_status = {n: cluster.status(n) for n in cluster.ids}
    say("baseline: " + ", ".join(f"{n} {v['VmRSS'] / 1024:.0f} MiB"
                                 for n, v in baseline.items()))
    sampler = RssSampler(pids, phase="load")
    sampler.start()
    try:
        load, leader = load_keys(cluster, leader, keys, value_bytes, seed,
                                 show_progress=show_progress, say=say)
        sampler.phase = "apply"
        commit = wait_all_applied(cluster, leader, timeout_for(
            keys, APPLY_TIMEOUT_FLOOR_S, APPLY_TIMEOUT_PER_MILLION_KEYS_S))
        dbsize_loaded = {n: local_dbsize(cluster, n) for n in cluster.ids}
        if any(d != keys for d in dbsize_loaded.values()):
            raise BenchError(f"DBSIZE per node {dbsize_loaded}, not {keys}")
        time.sleep(SETTLE_S)
        loaded = read_memory(pids)
        loaded_smaps = read_smaps(pids)
        loaded_status = {n: cluster.status(n) for n in cluster.ids}
        say(f"every node applied index {commit}; loaded: "
            + ", ".join(f"{n} {v['VmRSS'] / 1024:.0f} MiB" for n, v in loaded.items()))

        sampler.phase = "snapshot"
        snapshots = {}
        order = [n for n in cluster.ids if n != leader] + [leader]
        for node_id in order:
            say(f"forcing a snapshot on {node_id} (GET /backup)")
            snapshots[node_id] = force_snapshot(cluster, node_id, timeout_for(
                keys, SNAPSHOT_TIMEOUT_FLOOR_S, SNAPSHOT_TIMEOUT_PER_MILLION_KEYS_S))
        sampler.phase = "compacted"
        time.sleep(SETTLE_S)
        compacted = read_memory(pids)
        compacted_smaps = read_smaps(pids)
        compacted_status = {n: cluster.status(n) for n in cluster.ids}
        dbsize_end = {n: local_dbsize(cluster, n) for n in cluster.ids}
        say("compacted: " + ", ".join(f"{n} {v['VmRSS'] / 1024:.0f} MiB"
                                      for n, v in compacted.items()))
    finally:
        sampler.stop()
    trimmed: dict[str, dict[str, int]] = {}
    trimmed_smaps: dict[str, dict[str, int]] = {}
    if gdb_trim:
        say("experiment: malloc_trim(0) in every node, through gdb")
        released = {n: gdb_malloc_trim(pid) for n, pid in pids.items()}
        time.sleep(SETTLE_S)
        trimmed, trimmed_smaps = read_memory(pids), read_smaps(pids)
        say("after malloc_trim: " + ", ".join(f"{n} {v['VmRSS'] / 1024:.0f} MiB"
                                              for n, v in trimmed.items()))

    problems = []
    nodes = {}
    for n in cluster.ids:
        role = "leader" if n == leader else "follower"
        summary = node_summary(role, baseline[n], loaded[n], compacted[n], keys=keys,
                               key_bytes=klen, value_bytes=value_bytes)
        st, snap = compacted_status[n], snapshots[n]
        summary.update({
            "pid": pids[n],
            "log_entries_held_baseline": log_entries_held(baseline_status[n]),
            "log_entries_held_loaded": log_entries_held(loaded_status[n]),
            "log_entries_held_compacted": log_entries_held(st),
            "log_first_index_compacted": st["log_first_index"],
            "snapshot_index": snap["index"], "snapshot_bytes": snap["bytes"],
            "snapshot_seconds": snap["seconds"],
            "snapshot_status": st.get("snapshot"),  # what the node says of its snapshots
            "peak_rss_load_bytes": sampler.peaks_kib.get("load", {}).get(n, 0) * 1024,
            "peak_rss_snapshot_bytes": sampler.peaks_kib.get("snapshot", {}).get(n, 0) * 1024,
            "dbsize_end": dbsize_end[n],
            "smaps_rss_kib": {"baseline": baseline_smaps[n], "loaded": loaded_smaps[n],
                              "compacted": compacted_smaps[n]},
        })
        if gdb_trim:
            over = round(overhead_per_key(trimmed[n]["VmRSS"] * 1024,
                                          summary["baseline_rss_bytes"], keys, klen,
                                          value_bytes), 1)
            summary.update({"trimmed_rss_bytes": trimmed[n]["VmRSS"] * 1024,
                            "overhead_trimmed_bytes_per_key": over,
                            "verdict_trimmed": verdict(over), "malloc_trim_released": released[n]})
            summary["smaps_rss_kib"]["trimmed"] = trimmed_smaps[n]
        if st["log_first_index"] - 1 < snap["index"] - keep_entries:
            problems.append(f"{n}'s log was not compacted: starts at {st['log_first_index']}, "
                            f"snapshot at {snap['index']}")
        if dbsize_end[n] != keys:
            problems.append(f"DBSIZE on {n} is {dbsize_end[n]} after the snapshot")
        nodes[n] = summary
    worst = {phase: max(nodes.values(), key=lambda v: v[f"overhead_{phase}_bytes_per_key"])
             for phase in ("loaded", "compacted", "hwm")}
    return {
        "keys": keys, "key_bytes": klen, "value_bytes": value_bytes, "seed": seed,
        "stored_bytes": stored_bytes(keys, klen, value_bytes),
        "node_args": node_args(keep_entries, snapshots), "keep_entries": keep_entries,
        "node_snapshots": snapshots,
        "snapshots_during_load": {n: (v.get("snapshot_status") or {}).get("taken", 0) - 1
                                  for n, v in nodes.items()},
        "load": {"seconds": round(load.seconds, 2), "keys_per_s": round(keys / load.seconds),
                 "reconnects": load.reconnects, "errors": load.errors[:5],
                 "batch_keys": BATCH_KEYS, "pipeline_depth": PIPELINE_DEPTH},
        "leader": leader, "commit_index": commit, "warmup_keys": WARMUP_BATCHES * BATCH_KEYS,
        "target_bytes_per_key": TARGET_OVERHEAD_BYTES,
        "worst": {phase: {"bytes_per_key": v[f"overhead_{phase}_bytes_per_key"],
                          "verdict": verdict(v[f"overhead_{phase}_bytes_per_key"])}
                  for phase, v in worst.items()},
        "nodes": nodes,
        "problems": problems,
    }


# ---- the breakdown part (runs in its own process: `--worker MODE`) ----


def rss_now() -> int:
    return proc_status_kib(os.getpid(), "VmRSS")["VmRSS"] * 1024


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): give back free heap pages (also those between used chunks,
    which free() alone never returns). False where there is no glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def dict_bytes(d: dict) -> int:
    """A dict's object (with its GC header) plus its separately allocated table."""
    size = sys.getsizeof(d)
    empty = sys.getsizeof({})
    return alloc_size(empty) + alloc_size(size - empty) if size > empty else alloc_size(size)


def state_structures(state: Any) -> dict[str, int]:
    """Bytes (allocator-rounded) of what a KVState holds, beyond the key and value bytes."""
    key_hdr = value_hdr = key_data = value_data = 0
    shard_dicts = 0
    getsizeof = sys.getsizeof
    for shard in state._shards:
        shard_dicts += dict_bytes(shard)
        for key, value in shard.items():
            key_data += len(key)
            key_hdr += alloc_size(getsizeof(key)) - len(key)
            if type(value) is bytes:
                value_data += len(value)
                value_hdr += alloc_size(getsizeof(value)) - len(value)
    heap = state._expiry_heap
    expiry = (dict_bytes(state._expires) + alloc_size(getsizeof(heap))
              + sum(alloc_size(getsizeof(t)) + alloc_size(getsizeof(t[0])) for t in heap))
    return {
        "key_data": key_data, "value_data": value_data,
        "key_objects": key_hdr, "value_objects": value_hdr,
        "shard_dicts": shard_dicts, "shard_list": alloc_size(getsizeof(state._shards)),
        "expiry_index": expiry,
    }


def log_structures(log: Any) -> dict[str, int]:
    """Bytes of a RaftLog (replikv.raft.log): its arena of entry data in chunks, the arrays of
    terms and data ends, and the Entry tuples it keeps for its newest entries (their data
    objects and index ints included)."""
    chunks = log._chunks
    arena = alloc_size(sys.getsizeof(chunks)) + sum(alloc_size(sys.getsizeof(c)) for c in chunks)
    arrays = sum(alloc_size(sys.getsizeof(a)) for a in (log._terms, log._ends, log._chunk_starts))
    tail = log._tail
    tail_objects = alloc_size(sys.getsizeof(tail))
    for e in tail:
        tail_objects += alloc_size(sys.getsizeof(e)) + alloc_size(sys.getsizeof(e.data))
        if not -5 <= e.index <= 256:  # small ints are shared
            tail_objects += alloc_size(sys.getsizeof(e.index))
    return {"entries": len(log._terms), "tail_entries": len(tail),
            "data_bytes": log._arena_end - log._base, "arena": arena, "arrays": arrays,
            "tail_objects": tail_objects, "total": arena + arrays + tail_objects}


def undo_bytes(undo: Any) -> int:
    """An Undo of an MSET: its object, its log list and one tuple per key written."""
    log = undo._log
    return (alloc_size(sys.getsizeof(undo)) + alloc_size(sys.getsizeof(log))
            + sum(alloc_size(sys.getsizeof(t)) for t in log))


def cow_capture_bytes(state: Any) -> tuple[int, int]:
    """A snapshot cursor's worst case: every shard captured before the walk reached it (writes
    touching every shard while a snapshot runs). Returns (bytes of the captured lists and
    tuples, RSS growth while they are held)."""
    cursor = state.begin_snapshot()
    try:
        gc.collect()
        before = rss_now()
        for shard_index in range(len(state._shards)):
            cursor._preserve(shard_index)
        held = rss_now() - before
        total = alloc_size(sys.getsizeof(cursor._pending))
        for captured in cursor._pending.values():
            total += alloc_size(sys.getsizeof(captured))
            total += sum(alloc_size(sys.getsizeof(t)) for t in captured)
        return total, held
    finally:
        cursor.close()


def snapshot_walk_rss(state: Any) -> int:
    """RSS growth over a whole snapshot walk (batches of the snapshot writer's size, dropped
    as they come, as the writer does once they are written)."""
    gc.collect()
    before = peak = rss_now()
    cursor = state.begin_snapshot()
    try:
        batches = 0
        while cursor.next_batch(BATCH_ITEMS) is not None:
            batches += 1
            if batches % 50 == 0:
                peak = max(peak, rss_now())
    finally:
        cursor.close()
    return max(peak, rss_now()) - before


def expiry_cost(state: Any, sample: int) -> float:
    """Bytes per key with a TTL (expiry dict entry, int, heap tuple), from `sample` keys given
    one through EFFECT_EXPIRE; the TTLs are removed again afterwards."""
    keys = [key for shard in state._shards for key in shard][:sample]
    before = state_structures(state)["expiry_index"]
    at = 4_000_000_000_000
    state.apply_effects([[EFFECT_EXPIRE, k, at + i] for i, k in enumerate(keys)])
    after = state_structures(state)["expiry_index"]
    state.apply_effects([[EFFECT_EXPIRE, k, None] for k in keys])
    return per_key(after - before, len(keys))


def session_cost(sample: int) -> float:
    """Bytes per client session in the session table (small replies)."""
    table = SessionTable()
    empty = table_bytes(table)
    packed = table.pack_reply(b"OK")
    for i in range(sample):
        table.record_packed(b"session-%08d" % i, 1, packed, 1_000 + i, i + 1)
    return per_key(table_bytes(table) - empty, sample)


def table_bytes(table: Any) -> int:
    sessions = table._sessions
    total = dict_bytes(sessions) + alloc_size(sys.getsizeof(table._by_age))
    for sid, s in sessions.items():
        total += alloc_size(sys.getsizeof(sid)) + alloc_size(sys.getsizeof(s))
        total += alloc_size(sys.getsizeof(s.blob))
        total += sum(alloc_size(sys.getsizeof(v)) for v in (s.seq, s.last_used_ms, s.index)
                     if not -5 <= v <= 256)
    for pair in table._by_age:
        total += alloc_size(sys.getsizeof(pair)) + alloc_size(sys.getsizeof(pair[0]))
    return total


def build(mode: str, keys: int, value_bytes: int, seed: int) -> tuple[Any, Any, dict]:
    """A state with keys 0..keys-1 applied through the node's own path for `mode`, and the Raft
    log as a node holds it until compaction. Returns (state, log, extras)."""
    state, sessions, log = KVState(), SessionTable(), RaftLog()
    batches = -(-keys // BATCH_KEYS)
    time_ms, term = 1_700_000_000_000, 1
    extras: dict[str, Any] = {}
    if mode == "leader":
        parser = RequestParser()
        ahead: deque[tuple[int, Any]] = deque()
        undo_sizes = []
        for batch in range(batches):
            parser.feed(mset_batch(batch, keys, value_bytes, seed))
            argv = parser.get_command()
            _reply, effects, undo = state.execute_recorded(argv, time_ms, 0)
            data = encode_effects_entry(effects, time_ms)
            del effects, argv
            log.append([Entry(log.last_index + 1, term, data)])
            if batch < 3:
                undo_sizes.append(undo_bytes(undo) / BATCH_KEYS)
            ahead.append((log.last_index, undo))
            while len(ahead) > PIPELINE_DEPTH:  # committed: the undo record is dropped
                ahead.popleft()
            del undo
        ahead.clear()
        extras["undo_bytes_per_key_in_flight"] = round(max(undo_sizes), 1)
        extras["undo_keys_in_flight"] = PIPELINE_DEPTH * BATCH_KEYS
    else:
        state_time = 0
        for batch in range(batches):
            effects = [[EFFECT_SET_STRING, key_name(i).encode(), value_for(i, value_bytes, seed),
                        None] for i in range(batch * BATCH_KEYS,
                                             min(keys, (batch + 1) * BATCH_KEYS))]
            data = encode_effects_entry(effects, time_ms)
            del effects
            entry = Entry(log.last_index + 1, term, data)
            log.append([entry])
            state_time = apply_entry(state, sessions, data, entry.index, state_time).time_ms
    return state, log, extras


def breakdown_worker(mode: str, keys: int, value_bytes: int, seed: int) -> dict:
    """One breakdown run in this (fresh) process; see the module docstring."""
    if mode == "tracemalloc":
        return tracemalloc_worker(keys, value_bytes, seed)
    gc.collect()
    rss0 = rss_now()
    started = time.monotonic()
    state, log, extras = build(mode, keys, value_bytes, seed)
    build_s = time.monotonic() - started
    gc.collect()
    rss_loaded = rss_now()
    structures = state_structures(state)
    log_sizes = log_structures(log)
    log.compact(log.last_index)  # what a snapshot's compaction does
    gc.collect()
    rss_compacted = rss_now()
    trimmed = malloc_trim()
    rss_trimmed = rss_now()
    cow_bytes, cow_rss = cow_capture_bytes(state)
    gc.collect()
    walk_rss = snapshot_walk_rss(state)
    out = {
        "mode": mode, "keys": keys, "value_bytes": value_bytes, "build_s": round(build_s, 1),
        "rss_baseline_bytes": rss0, "rss_loaded_bytes": rss_loaded,
        "rss_compacted_bytes": rss_compacted, "rss_trimmed_bytes": rss_trimmed,
        "malloc_trim_released": trimmed,
        "structures_bytes": structures, "log": log_sizes,
        "cow_worst_bytes": cow_bytes, "cow_worst_rss_bytes": cow_rss,
        "snapshot_walk_rss_bytes": walk_rss,
        # KVState.used_bytes() less the key and value bytes: the node's own per-key estimate.
        "node_estimate_bytes_per_key": per_key(
            state.used_bytes() - structures["key_data"] - structures["value_data"], keys),
        "key_count": state.key_count(),
        **extras,
    }
    if mode == "follower":
        out["expiry_bytes_per_key_with_ttl"] = expiry_cost(state, min(EXPIRY_SAMPLE_KEYS, keys))
        out["session_bytes_per_session"] = session_cost(SESSION_SAMPLE)
    return out


def repo_frame(traceback: Any) -> str:
    """The innermost frame of an allocation's traceback that is this repository's code (not a
    library's, not a namedtuple's generated __new__), as "path:line"."""
    repo = str(REPO_ROOT) + os.sep
    for frame in reversed(traceback):  # most recent call first
        name = frame.filename
        if name.startswith(repo) and os.sep + ".venv" + os.sep not in name:
            return f"{name[len(repo):]}:{frame.lineno}"
    frame = traceback[-1]
    return f"{frame.filename}:{frame.lineno}"


def tracemalloc_worker(keys: int, value_bytes: int, seed: int) -> dict:
    """The follower path under tracemalloc: bytes traced per key with the log and after
    compaction, and the source lines holding the most."""
    import tracemalloc

    tracemalloc.start(TRACEMALLOC_FRAMES)
    state, log, _ = build("follower", keys, value_bytes, seed)
    gc.collect()
    traced_loaded = tracemalloc.get_traced_memory()[0]
    snap = tracemalloc.take_snapshot()
    log.compact(log.last_index)
    gc.collect()
    traced_compacted = tracemalloc.get_traced_memory()[0]
    by_line: dict[str, list[int]] = {}
    for stat in snap.statistics("traceback"):
        where = repo_frame(stat.traceback)
        total = by_line.setdefault(where, [0, 0])
        total[0] += stat.size
        total[1] += stat.count
    lines = [{"where": where, "bytes": size, "blocks": count,
              "bytes_per_key": per_key(size, keys)}
             for where, (size, count) in sorted(by_line.items(), key=lambda kv: -kv[1][0])[:8]]
    tracemalloc.stop()
    del state
    return {"mode": "tracemalloc", "keys": keys, "value_bytes": value_bytes,
            "traced_loaded_bytes": traced_loaded, "traced_compacted_bytes": traced_compacted,
            "top_lines": lines}


def run_breakdown(keys: int, value_bytes: int, seed: int, say=say) -> dict:
    """The three breakdown runs, each in a fresh interpreter."""
    out = {}
    for mode in ("follower", "leader", "tracemalloc"):
        n = min(keys, TRACEMALLOC_KEYS_MAX) if mode == "tracemalloc" else keys
        say(f"breakdown: {mode} path, {n:,} keys, in a fresh process")
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--keys",
                str(n), "--value-bytes", str(value_bytes), "--seed", str(seed)]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              check=False, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise BenchError(f"breakdown worker {mode} failed: {done.stderr[-3000:]}")
        out[mode] = json.loads(done.stdout)
        out[mode]["wall_s"] = round(time.monotonic() - started, 1)
    out["summary"] = summarize_breakdown(out)
    return out


def summarize_breakdown(b: dict) -> dict:
    """Per-key rows (bytes per key) of each build path: the structures, their sum, what the
    process's RSS grew by, and the difference (allocator slack)."""
    rows = {}
    for mode in ("follower", "leader"):
        r = b[mode]
        keys, s, lg = r["keys"], r["structures_bytes"], r["log"]
        data = s["key_data"] + s["value_data"]
        state_sum = sum(v for k, v in s.items() if k not in ("key_data", "value_data"))
        loaded = r["rss_loaded_bytes"] - r["rss_baseline_bytes"] - data
        compacted = r["rss_compacted_bytes"] - r["rss_baseline_bytes"] - data
        trimmed = r["rss_trimmed_bytes"] - r["rss_baseline_bytes"] - data
        rows[mode] = {
            "key_objects": per_key(s["key_objects"], keys),
            "value_objects": per_key(s["value_objects"], keys),
            "shard_dicts": per_key(s["shard_dicts"], keys),
            "shard_list": per_key(s["shard_list"], keys),
            "expiry_index": per_key(s["expiry_index"], keys),
            "state_total": per_key(state_sum, keys),
            "log_entries_total": per_key(lg["total"], keys),
            "log_data_bytes": per_key(lg["data_bytes"], keys),
            "log_entry_objects": per_key(lg["total"] - lg["data_bytes"], keys),
            "structures_with_log": per_key(state_sum + lg["total"], keys),
            "rss_overhead_loaded": per_key(loaded, keys),
            "rss_overhead_compacted": per_key(compacted, keys),
            "rss_overhead_trimmed": per_key(trimmed, keys),
            "slack_loaded": per_key(loaded - state_sum - lg["total"], keys),
            "slack_compacted": per_key(compacted - state_sum, keys),
            "slack_trimmed": per_key(trimmed - state_sum, keys),
            "cow_worst": per_key(r["cow_worst_bytes"], keys),
            "cow_worst_rss": per_key(r["cow_worst_rss_bytes"], keys),
            "snapshot_walk_rss": per_key(r["snapshot_walk_rss_bytes"], keys),
            "node_estimate": r["node_estimate_bytes_per_key"],
        }
    t = b["tracemalloc"]
    rows["tracemalloc"] = {
        "keys": t["keys"],
        "traced_loaded": per_key(t["traced_loaded_bytes"], t["keys"]),
        "traced_compacted": per_key(t["traced_compacted_bytes"], t["keys"]),
    }
    return rows


# ---- report ----


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f}"


def _table(rows: list[list[str]], left: int = 2) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(widths[i]) if i < left else c.rjust(widths[i])
                      for i, c in enumerate(r)).rstrip() for r in rows]


def format_cluster(r: dict) -> str:
    load = r["load"]
    out = [
        (f"keys: {r['keys']:,} x ({r['key_bytes']} B key + {r['value_bytes']} B value) = "
        f"{r['stored_bytes'] / MIB:,.1f} MiB stored; loaded through {r['leader']} in "
        f"{load['seconds']:.1f} s ({load['keys_per_s']:,} keys/s, MSET of "
        f"{load['batch_keys']}, {load['pipeline_depth']} in flight, {load['reconnects']} "
        "reconnects)"),
        f"node args: {' '.join(r['node_args'])}"
        + "".join(f"; node environment {k}={v}" for k, v in r.get("node_env", {}).items()),
        "",
        f"RSS overhead per key (target <= {r['target_bytes_per_key']} B):",
    ]
    trim = all("overhead_trimmed_bytes_per_key" in v for v in r["nodes"].values())
    header = ["node", "role", "base MiB", "loaded MiB", "compact MiB", "HWM MiB",
              "log entries", "loaded B/key", "compact B/key", "HWM B/key"]
    if trim:
        header.append("trimmed B/key")
    rows = [header]
    for n, v in r["nodes"].items():
        rows.append([
            n, v["role"], _mib(v["baseline_rss_bytes"]), _mib(v["loaded_rss_bytes"]),
            _mib(v["compacted_rss_bytes"]), _mib(v["hwm_end_bytes"]),
            f"{v['log_entries_held_loaded']:,} -> {v['log_entries_held_compacted']:,}",
            f"{v['overhead_loaded_bytes_per_key']:.0f} {v['verdict_loaded']}",
            f"{v['overhead_compacted_bytes_per_key']:.0f} {v['verdict_compacted']}",
            f"{v['overhead_hwm_bytes_per_key']:.0f} {v['verdict_hwm']}",
            *([f"{v['overhead_trimmed_bytes_per_key']:.0f} {v['verdict_trimmed']}"]
              if trim else []),
        ])
    out += _table(rows)
    if all(v.get("smaps_rss_kib") for v in r["nodes"].values()):
        out += ["", ("where the RSS sits (MiB at baseline -> loaded -> compacted"
                     + (" -> trimmed" if trim else "") + ", from /proc/<pid>/smaps):")]
        kinds = [("heap", "malloc heap"), ("thread_heaps", "thread heaps"),
                 ("anon", "anon mmaps"), ("file", "files")]
        phases = ("baseline", "loaded", "compacted", *(("trimmed",) if trim else ()))
        rows = [["node", "role", *[label for _, label in kinds]]]
        for n, v in r["nodes"].items():
            sm = v["smaps_rss_kib"]
            rows.append([n, v["role"], *[
                " -> ".join(f"{sm[phase].get(k, 0) / 1024:.0f}" for phase in phases)
                for k, _ in kinds]])
        out += _table(rows)
    returned = {n: (v.get("snapshot_status") or {}).get("memory_returned_bytes")
                for n, v in r["nodes"].items()}
    if all(b is not None for b in returned.values()):
        out += ["", "the nodes' own malloc_trim after compaction returned (their /status): "
                + ", ".join(f"{n} {b / MIB:,.0f} MiB" for n, b in returned.items())]
    w = r["worst"]
    out += [
        "",
        (f"worst node: {w['loaded']['bytes_per_key']:.0f} B/key with the load in the log "
        f"({w['loaded']['verdict']}), {w['compacted']['bytes_per_key']:.0f} B/key after the "
        f"snapshot and compaction ({w['compacted']['verdict']}), "
        f"{w['hwm']['bytes_per_key']:.0f} B/key at the peak, VmHWM ({w['hwm']['verdict']})"),
        "",
        textwrap.fill(
            "B/key = (RSS - RSS at baseline - keys x (key + value bytes)) / keys. base: VmRSS "
            "after start-up and a warm-up of MSETs whose keys were then deleted. loaded: every "
            "node applied everything, DBSIZE = keys on each, "
            + ("the whole load still in the in-memory Raft log (automatic snapshots off). "
               if r.get("node_snapshots", "off") == "off" else
               "with the node's default snapshot rules (snapshots taken during the load: "
               + ", ".join(f"{n} {k}" for n, k in r["snapshots_during_load"].items())
               + "), so the log holds what the growth rule has left in it. ")
            + "compact: after a snapshot forced on "
            "each node (GET /backup), which compacted its log to the last keep-entries. HWM: "
            "the node's peak RSS over its life (load, apply, snapshot). malloc heap: glibc's "
            "main arena ([heap]); thread heaps: glibc's arenas of the node's other threads "
            "(disk, snapshot I/O, executor); anon mmaps: CPython's object arenas and blocks "
            "malloc mapped on their own. "
            + ("trimmed: after the node was made to call malloc_trim(0) (gdb), an experiment; "
               "the baseline was not trimmed, so this also counts the few MiB of free heap the "
               "baseline held as given back. " if trim else "")
            + "Snapshots: "
            + ", ".join(f"{n} index {v['snapshot_index']:,}, {v['snapshot_bytes'] / MIB:.0f} "
                        f"MiB in {v['snapshot_seconds']:.1f} s" for n, v in r["nodes"].items())
            + ".", 100),
    ]
    return "\n".join(out)


BREAKDOWN_ROWS = [
    ("key_objects", "key bytes objects: header + padding", "state.py _replace: shard[key]"),
    ("value_objects", "value bytes objects: header + padding", "state.py _replace: shard[key]"),
    ("shard_dicts", "4096 shard dicts: 24 B entries, index, free slots", "state.py _shards"),
    ("shard_list", "the list of shards", "state.py _shards"),
    ("expiry_index", "expiry dict + heap (no key has a TTL here)", "state.py _expires"),
    ("state_total", "= the state's structures", ""),
    ("log_entry_objects", "Raft log: arena slack, arrays, newest Entry tuples",
     "raft/log.py arena"),
    ("log_data_bytes", "Raft log: entry data (msgpack effects)", "raft/log.py arena"),
    ("structures_with_log", "= state + log (until compaction)", ""),
    ("rss_overhead_loaded", "RSS growth - key/value bytes, log held", "measured"),
    ("slack_loaded", "  of which allocator slack", "RSS - structures"),
    ("rss_overhead_compacted", "RSS growth - key/value bytes, log dropped", "measured"),
    ("slack_compacted", "  of which allocator slack", "RSS - structures"),
    ("rss_overhead_trimmed", "... and after malloc_trim(0)", "measured"),
    ("slack_trimmed", "  of which allocator slack", "RSS - structures"),
    ("cow_worst", "snapshot COW capture, worst case (transient)", "state.py _capture"),
    ("cow_worst_rss", "  its RSS growth", "measured"),
    ("snapshot_walk_rss", "snapshot walk, RSS growth (transient)", "state.py next_batch"),
    ("node_estimate", "the node's own estimate (used_bytes - data)", "state.py KEY_OVERHEAD"),
]


def format_breakdown(b: dict) -> str:
    s = b["summary"]
    f, ld = b["follower"], b["leader"]
    out = [(f"where the bytes go (bytes per key; fresh processes, no cluster; {f['keys']:,} "
           f"keys of {f['value_bytes']} B; follower path built in {f['build_s']} s, leader "
           f"path in {ld['build_s']} s):")]
    rows = [["structure", "follower", "leader", "where"]]
    for name, label, where in BREAKDOWN_ROWS:
        rows.append([label, f"{s['follower'][name]:.1f}", f"{s['leader'][name]:.1f}", where])
    out += _table(rows, left=1)
    t = s["tracemalloc"]
    out += [
        "",
        (f"leader only, until commit: undo records {ld['undo_bytes_per_key_in_flight']:.0f} "
        f"B per key in flight ({ld['undo_keys_in_flight']:,} keys in flight, not per stored "
        "key). Per key with a TTL (not in this load): expiry index "
        f"{f['expiry_bytes_per_key_with_ttl']:.0f} B. Session table: "
        f"{f['session_bytes_per_session']:.0f} B per client session, none per key (the load "
        "uses no session)."),
        (f"tracemalloc (follower path, {t['keys']:,} keys): {t['traced_loaded']:.1f} B/key "
        f"traced with the log (key and value bytes included), {t['traced_compacted']:.1f} "
        "after compaction; top lines:"),
    ]
    rows = [["where", "B/key", "blocks"]]
    for line in b["tracemalloc"]["top_lines"]:
        rows.append([line["where"], f"{line['bytes_per_key']:.1f}", f"{line['blocks']:,}"])
    out += ["  " + line for line in _table(rows, left=1)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to load")
    parser.add_argument("--value-bytes", type=int, default=VALUE_BYTES_DEFAULT)
    parser.add_argument("--seed", type=int, default=1, help="seeds values and ports")
    parser.add_argument("--keep-entries", type=int, default=KEEP_ENTRIES_DEFAULT,
                        help="--snapshot-keep-entries of the nodes")
    parser.add_argument("--node-snapshots", choices=["off", "default"], default="off",
                        help="off (the default): no automatic snapshot, so 'loaded' is the "
                             "worst case, the whole load in the log; default: the nodes' own "
                             "snapshot rules, what a node at its defaults holds")
    parser.add_argument("--malloc-mmap-threshold", type=int, metavar="BYTES",
                        help="an experiment: start the nodes with glibc's "
                             "MALLOC_MMAP_THRESHOLD_=BYTES (allocations from that size get "
                             "their own mapping, returned to the OS when freed)")
    parser.add_argument("--gdb-malloc-trim", action="store_true",
                        help="an experiment, after the compacted reading: make every node "
                             "call malloc_trim(0) (gdb attaches to it) and read RSS again")
    parser.add_argument("--json", action="store_true", help="print a JSON object, no table")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    parser.add_argument("--keep-dir", action="store_true",
                        help="keep the cluster's directory (data, node logs) afterwards")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-breakdown", action="store_true", help="the cluster part only")
    which.add_argument("--breakdown-only", action="store_true", help="no cluster")
    parser.add_argument("--worker", choices=["follower", "leader", "tracemalloc"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (1 <= args.keys <= 50_000_000 and 1 <= args.value_bytes <= 1 << 20
            and args.keep_entries >= 0):
        parser.error("--keys must be 1..50000000, --value-bytes 1..1048576, --keep-entries >= 0")
    if args.worker:
        print(json.dumps(breakdown_worker(args.worker, args.keys, args.value_bytes, args.seed)))
        return 0

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    started = time.monotonic()
    report: dict[str, Any] = {"command": command, "machine": machine_info()}
    if not args.breakdown_only:
        root = Path(tempfile.mkdtemp(prefix="replikv-memory-"))
        cluster = Cluster(root, 3, extra_args=node_args(args.keep_entries, args.node_snapshots),
                          rng=random.Random(args.seed))

        def body() -> dict:
            say(f"starting n1..n3 in {root}")
            # The harness starts nodes with this process's environment.
            saved = os.environ.get(MALLOC_ENV)
            if args.malloc_mmap_threshold is not None:
                os.environ[MALLOC_ENV] = str(args.malloc_mmap_threshold)
            try:
                cluster.start_all()
            finally:
                if saved is None:
                    os.environ.pop(MALLOC_ENV, None)
                else:
                    os.environ[MALLOC_ENV] = saved
            return run_cluster(cluster, keys=args.keys, value_bytes=args.value_bytes,
                               seed=args.seed, keep_entries=args.keep_entries,
                               show_progress=not args.json, gdb_trim=args.gdb_malloc_trim,
                               snapshots=args.node_snapshots)

        result = run_on_cluster(cluster, root, body, keep_dir=args.keep_dir)
        if isinstance(result, int):
            return result
        result["node_env"] = ({MALLOC_ENV: str(args.malloc_mmap_threshold)}
                              if args.malloc_mmap_threshold is not None else {})
        report["cluster"] = result
    if not args.no_breakdown:
        try:
            report["breakdown"] = run_breakdown(args.keys, args.value_bytes, args.seed)
        except (BenchError, subprocess.TimeoutExpired) as e:
            print(f"breakdown failed: {e}", file=sys.stderr)
            return 1
    report["total_s"] = round(time.monotonic() - started, 1)
    problems = report.get("cluster", {}).get("problems", [])

    def body() -> str:
        parts = []
        if "cluster" in report:
            parts.append(format_cluster(report["cluster"]))
        if "breakdown" in report:
            parts.append("\n" + format_breakdown(report["breakdown"]))
        return "\n".join(parts)

    return emit_report(report, out=args.out, as_json=args.json, problems=problems,
                       setup=f"total {report['total_s']:.0f} s", body=body)


if __name__ == "__main__":
    sys.exit(main())
