"""A new member catching up from a snapshot of a big state, with every node's memory measured.
Run as a script:

    .venv/bin/python benchmarks/catch_up.py --keys 1000000 [--value-bytes 100] [--json]
        [--out results.json] [--seed 1] [--keep-dir]

It starts three voters and a fourth node started with --join (the integration tests' real-process
harness, `tests/integration/cluster.py`, on free loopback ports in a temp dir), loads `--keys`
keys through the leader in pipelined MSETs of 500 keys, and waits until the leader has taken a
snapshot covering all of them and compacted its log, so the newcomer cannot be sent the log.
Then the clock starts: `replikv member add n4 ...` adds n4 as a standby, the leader streams its
snapshot in chunks, n4 verifies and loads it, receives the few entries after it, and the CLI
promotes it to voter. Reported:

- when n4 had installed the snapshot, and when it was a voter that had applied the leader's
  commit index (both from the moment `member add` started), and how the first splits into the
  transfer and the load (from n4's log);
- the snapshot's size and the rate it was delivered at (MB/s, keys/s);
- every node's peak RSS: VmHWM from /proc/<pid>/status (the kernel's high-water mark for the
  process's whole life) read before the catch-up and at the end, plus VmRSS sampled every 100 ms
  so the load phase and the catch-up phase each get their own peak; and RSS per key;
- a check: 1,000 random keys read on n4 from its own copy (READPREF nearest, CONSISTENCY local)
  equal what was written, and DBSIZE on n4 is exactly --keys.

The integration test `tests/integration/test_catch_up.py` runs the same flow (`run_catch_up`)
with 50,000 keys. Nodes are children in their own sessions that the kernel kills should this
process die (PR_SET_PDEATHSIG); they are stopped in a `finally`, so Ctrl-C, SIGTERM or an error
leave nothing running. Every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import hiredis

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make the test harness importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration.cluster import (  # after the path above
    HOST,
    PYTHON,
    Cluster,
    ClusterTimeout,
    NodeExited,
    encode_command,
    running,
)

JOINER = "n4"
VOTERS = ("n1", "n2", "n3")

BATCH_KEYS = 500  # keys per MSET: one log entry of ~60 KB with 100-byte values
PIPELINE_DEPTH = 8  # MSETs in flight on the loading connection
VALUE_BYTES_DEFAULT = 100
SAMPLE_KEYS_DEFAULT = 1000
RSS_SAMPLE_INTERVAL_S = 0.1
STATUS_POLL_INTERVAL_S = 0.1
LOAD_SOCKET_TIMEOUT_S = 30.0
LOAD_RETRIES_MAX = 5  # reconnections (e.g. after a leader change) while loading
PAD_WRITES_PER_ROUND = 50

# Waits grow with the data: a fixed floor plus a generous allowance per key.
LOAD_TIMEOUT_FLOOR_S, LOAD_TIMEOUT_PER_MILLION_KEYS_S = 60.0, 1200.0
SNAPSHOT_TIMEOUT_FLOOR_S, SNAPSHOT_TIMEOUT_PER_MILLION_KEYS_S = 30.0, 300.0
CATCH_UP_TIMEOUT_FLOOR_S, CATCH_UP_TIMEOUT_PER_MILLION_KEYS_S = 60.0, 600.0
SETTLE_TIMEOUT_S = 60.0

MIB = 2**20
KEY_FORMAT = "key:{:09d}"
# A padding write that creates no key: DEL of a key nobody writes still takes a log entry.
PAD_COMMAND = ("DEL", "catch-up:pad:never-set")
LOCAL_READ = ("REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local")


class BenchError(RuntimeError):
    """The cluster did not do what the benchmark needs (no leader, a node died, a wait ran
    out, a wrong value read back)."""


def timeout_for(keys: int, floor_s: float, per_million_keys_s: float) -> float:
    return floor_s + per_million_keys_s * keys / 1_000_000


def key_name(i: int) -> str:
    return KEY_FORMAT.format(i)


def value_for(i: int, value_bytes: int, seed: int) -> bytes:
    """Key i's value: deterministic, so the check needs no copy of a million values, and
    different for every key (hex of a hash, so nothing compresses it away)."""
    digest = hashlib.shake_128(b"%d:%d" % (seed, i)).hexdigest((value_bytes + 1) // 2)
    return digest[:value_bytes].encode()


def snapshot_settings(keys: int) -> tuple[int, int]:
    """(--snapshot-entries, --snapshot-keep-entries) for a load of `keys` keys.

    Keeping the node's default 5,000 entries would keep the whole load of 2,000 MSETs in the
    log, and its growth rule (snapshot_log_ratio) takes its last snapshot of the load wherever
    the threshold falls. A snapshot every half of the load's entries takes two during the load
    at known places (the growth rule may add some); the leader keeps a fifth of that in its
    log, enough for the voters, which lag by a few entries."""
    batches = math.ceil(keys / BATCH_KEYS)
    every = max(50, batches // 2)
    return every, max(20, every // 5)


def node_args(keys: int) -> list[str]:
    every, keep = snapshot_settings(keys)
    return ["--snapshot-entries", str(every), "--snapshot-keep-entries", str(keep)]


def make_cluster(root: Path, keys: int, rng: random.Random | None = None) -> Cluster:
    """Three voters and the joiner n4, with snapshot settings fitted to `keys` (not started)."""
    return Cluster(root, len(VOTERS) + 1, joiners=1, extra_args=node_args(keys), rng=rng)


# ---- one process, as the kernel sees it ----

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, *fields: str) -> dict[str, int]:
    """Fields of /proc/<pid>/status given in kB (VmRSS, VmHWM, ...), in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            out[name] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class RssSampler(threading.Thread):
    """Reads every node's VmRSS each 100 ms and keeps the highest value per phase, so the load
    and the catch-up each get their own peak (VmHWM only knows the whole life's)."""

    def __init__(self, pids: dict[str, int], phase: str = "start") -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids = pids
        self.phase = phase
        self.peaks_kib: dict[str, dict[str, int]] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            peaks = self.peaks_kib.setdefault(self.phase, {})
            for node_id, pid in self.pids.items():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    rss = proc_status_kib(pid, "VmRSS")["VmRSS"]
                    peaks[node_id] = max(peaks.get(node_id, 0), rss)
            self.samples += 1
            self._stop_event.wait(RSS_SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5.0)


# ---- loading ----


class LoadConnection:
    """One raw RESP connection to the leader with a window of commands in flight: each MSET
    is one log entry, and the leader batches the entries that arrive together into one fsync
    and one AppendEntries, so a window of them loads far faster than one at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=LOAD_SOCKET_TIMEOUT_S)
        self.reader = hiredis.Reader()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(payload)

    def reply(self) -> Any:
        while (reply := self.reader.gets()) is False:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the node closed the connection")
            self.reader.feed(chunk)
        return reply

    def close(self) -> None:
        self.sock.close()


class LoadRefused(Exception):
    """An MSET answered with an error (TRYAGAIN after a leader change, ...)."""


@dataclass
class LoadStats:
    keys: int
    seconds: float
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class Progress:
    """A progress bar with `rich` if it is installed, else a plain line every 10%."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self._rich: Any = None
        self._next_pct = 10
        self._started = time.monotonic()
        if enabled and importlib.util.find_spec("rich") is not None:
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(console=Console(stderr=True))  # stdout is the report
            self._task = self._rich.add_task(label, total=total)
            self._rich.start()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
            return
        pct = 100 * done // max(1, self.total)
        if pct >= self._next_pct or done == self.total:
            elapsed = time.monotonic() - self._started
            print(f"{self.label}: {done:,}/{self.total:,} ({pct}%) in {elapsed:.1f}s, "
                  f"{done / max(elapsed, 1e-9):,.0f}/s", file=sys.stderr, flush=True)
            self._next_pct = pct - pct % 10 + 10

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()


def mset_batch(batch: int, keys: int, value_bytes: int, seed: int) -> bytes:
    argv: list[bytes | str] = ["MSET"]
    for i in range(batch * BATCH_KEYS, min(keys, (batch + 1) * BATCH_KEYS)):
        argv += [key_name(i), value_for(i, value_bytes, seed)]
    return encode_command(*argv)


def load_keys(cluster: Cluster, leader: str, keys: int, value_bytes: int, seed: int, *,
              show_progress: bool,
              say: Callable[[str], None] = lambda _: None) -> tuple[LoadStats, str]:
    """MSET keys 0..keys-1 through the leader; returns the stats and the leader at the end
    (`say` gets a line before and one after).

    Batches whose OK has not arrived when something goes wrong (an error reply, a dropped
    connection) are sent again, after finding the leader anew: MSET is idempotent."""
    batches = math.ceil(keys / BATCH_KEYS)
    todo = deque(range(batches))
    acked = 0
    stats = LoadStats(keys, 0.0)
    deadline = time.monotonic() + timeout_for(keys, LOAD_TIMEOUT_FLOOR_S,
                                              LOAD_TIMEOUT_PER_MILLION_KEYS_S)
    progress = Progress(keys, "loading keys", show_progress)
    say(f"loading {keys:,} keys of {value_bytes} bytes through {leader}")
    started = time.monotonic()
    try:
        while todo:
            inflight: deque[int] = deque()
            conn = None
            try:
                conn = LoadConnection(cluster.port(leader))
                while todo or inflight:
                    if time.monotonic() > deadline:
                        raise BenchError(f"loading did not finish in time: {acked:,} of "
                                         f"{keys:,} keys acknowledged")
                    if todo and len(inflight) < PIPELINE_DEPTH:
                        batch = todo.popleft()
                        inflight.append(batch)
                        conn.send(mset_batch(batch, keys, value_bytes, seed))
                        continue
                    reply = conn.reply()
                    if reply != b"OK":
                        raise LoadRefused(f"MSET answered {reply!r}")
                    batch = inflight.popleft()
                    acked += min(keys, (batch + 1) * BATCH_KEYS) - batch * BATCH_KEYS
                    progress.update(acked)
            except (OSError, LoadRefused) as e:
                todo.extendleft(reversed(inflight))
                stats.reconnects += 1
                stats.errors.append(f"{type(e).__name__}: {e}")
                if stats.reconnects > LOAD_RETRIES_MAX:
                    raise BenchError(f"loading failed {stats.reconnects} times; errors: "
                                     f"{stats.errors}") from None
                leader = cluster.leader(among=VOTERS)
            finally:
                if conn is not None:
                    conn.close()
    finally:
        progress.close()
    stats.seconds = time.monotonic() - started
    say(f"loaded in {stats.seconds:.1f} s ({keys / max(stats.seconds, 1e-9):,.0f} keys/s)")
    return stats, leader


def pad_until_snapshot(cluster: Cluster, leader: str, index: int, every: int,
                       timeout_s: float) -> tuple[dict, int]:
    """Write padding entries (that create no key) until the leader has a snapshot at `index`
    or later and its log starts after 1; returns its status and the padding writes made.

    Snapshots are taken every --snapshot-entries applied entries, plus a jitter of up to a
    quarter of that drawn by each node after each snapshot, so the one covering the end of the
    load may need a few more entries before it is due: it certainly is a quarter past `every`."""
    deadline = time.monotonic() + timeout_s
    pads = 0
    client = cluster.client(leader, socket_timeout=10.0)
    try:
        while True:
            status = cluster.status(leader)
            snap = status.get("snapshot")
            if snap is not None and snap["index"] >= index and status["log_first_index"] > 1:
                return status, pads
            if time.monotonic() > deadline:
                raise BenchError(f"the leader took no snapshot covering index {index} within "
                                 f"{timeout_s:.0f}s; last status: snapshot={snap}, "
                                 f"log_first_index={status['log_first_index']}, "
                                 f"applied_index={status['applied_index']}")
            last = snap["index"] if snap is not None else status["log_first_index"] - 1
            if status["applied_index"] - last < every + every // 4:  # bring it closer
                pipe = client.pipeline(transaction=False)
                for _ in range(PAD_WRITES_PER_ROUND):
                    pipe.execute_command(*PAD_COMMAND)
                pipe.execute()
                pads += PAD_WRITES_PER_ROUND
            else:
                time.sleep(STATUS_POLL_INTERVAL_S)  # due or being written: wait for it
    finally:
        client.close()


def total_elections(cluster: Cluster) -> int:
    return sum(int(cluster.info(n, "stats").get("elections_started", 0))
               for n in cluster.alive_ids())


# ---- the catch-up ----


@dataclass
class CatchUpTimeline:
    """Seconds from the start of `member add` at which each step was first seen."""

    standby_s: float | None = None
    sending_s: float | None = None
    sent_s: float | None = None
    installed_s: float | None = None
    voter_s: float | None = None
    caught_up_s: float | None = None
    max_sent_bytes: int = 0
    polls: int = 0
    unanswered_polls: int = 0  # /status requests (leader or n4) that failed or timed out


def watch_catch_up(cluster: Cluster, leader: str, started: float, cli: subprocess.Popen,
                   cli_out: Path, timeout_s: float) -> CatchUpTimeline:
    """Poll the leader's and n4's /status until n4 is a voter that has applied the leader's
    commit index and `replikv member add` (`cli`, writing to `cli_out`) has succeeded."""
    seen = CatchUpTimeline()
    deadline = started + timeout_s
    last: dict = {}

    def at() -> float:
        return round(time.monotonic() - started, 3)

    def status_or_none(node_id: str) -> dict | None:
        try:
            return cluster.status(node_id)
        except OSError as e:  # busy (n4 loading the snapshot): a late answer, ask again
            last[f"{node_id}_error"] = repr(e)
            seen.unanswered_polls += 1
            return None

    while True:
        if not cluster.nodes[JOINER].alive:
            raise NodeExited(f"{JOINER} exited during the catch-up:\n"
                             + cluster.log_tail(JOINER, 30))
        seen.polls += 1
        lead = status_or_none(leader)
        if lead is not None:
            if lead["role"] != "leader" and lead["leader"] in VOTERS + (JOINER,):
                leader = lead["leader"]  # leadership moved: ask the new leader next time
            progress = lead["followers"].get(JOINER)
            last.update(leader_commit=lead["commit_index"], leader_n4_progress=progress)
            if seen.standby_s is None and JOINER in lead["standbys"] + lead["voters"]:
                seen.standby_s = at()
            if progress is not None and progress["state"] == "snapshot":
                if seen.sending_s is None:
                    seen.sending_s = at()
                seen.max_sent_bytes = max(seen.max_sent_bytes,
                                          progress.get("snapshot_sent_bytes", 0))
            elif progress is not None and seen.sending_s is not None and seen.sent_s is None:
                seen.sent_s = at()
            if seen.voter_s is None and JOINER in lead["voters"]:
                seen.voter_s = at()
        joiner = status_or_none(JOINER)
        if joiner is not None:
            snap = joiner.get("snapshot")
            last.update(n4_role=joiner["role"], n4_applied=joiner["applied_index"],
                        n4_snapshot=snap)
            if seen.installed_s is None and snap is not None and snap["installed"] >= 1:
                seen.installed_s = at()
            if (seen.caught_up_s is None and lead is not None and JOINER in lead["voters"]
                    and JOINER in joiner["voters"]
                    and joiner["applied_index"] >= lead["commit_index"]):
                seen.caught_up_s = at()
        cli_status = cli.poll()
        if cli_status not in (None, 0):
            raise BenchError(f"`replikv member add` failed (exit status {cli_status}): "
                             f"{cli_out.read_text(errors='replace')[-2000:]}")
        if seen.caught_up_s is not None and cli_status == 0:
            return seen
        if time.monotonic() > deadline:
            raise BenchError(f"{JOINER} did not catch up within {timeout_s:.0f}s; steps seen: "
                             f"{seen}; last status: {last}")
        time.sleep(STATUS_POLL_INTERVAL_S)


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_RECEIVING = re.compile(r"receiving snapshot at index (\d+) \((\d+) bytes\)")
_INSTALLED = re.compile(r"installed snapshot at index (\d+) .*: (\d+) keys, (\d+) bytes, "
                        r"([\d.]+) s after the last chunk")
_TAKEN = re.compile(r"snapshot at index (\d+): (\d+) bytes in ([\d.]+) s")


def _log_time(line: str) -> float | None:
    m = _LOG_TIME.match(line)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def snapshot_log_facts(cluster: Cluster, leader: str, wall_started: float) -> dict:
    """From the node logs: when n4 began receiving and finished installing (seconds after
    `member add` started), how long loading the file took, and the leader's last write."""
    facts: dict[str, Any] = {}
    for line in cluster.log_text(JOINER).splitlines():
        t = _log_time(line)
        if t is None or t < wall_started - 1:
            continue
        if (m := _RECEIVING.search(line)) and "receive_started_s" not in facts:
            facts["receive_started_s"] = round(t - wall_started, 3)
            facts["receive_from_byte_0"] = line.rstrip().endswith("from byte 0")
        elif m := _INSTALLED.search(line):
            facts["installed_logged_s"] = round(t - wall_started, 3)
            facts["installed_keys"] = int(m.group(2))
            facts["load_s"] = float(m.group(4))
    if "receive_started_s" in facts and "installed_logged_s" in facts:
        facts["transfer_s"] = round(facts["installed_logged_s"] - facts["load_s"]
                                    - facts["receive_started_s"], 3)
    for line in reversed(cluster.log_text(leader).splitlines()):
        if m := _TAKEN.search(line):
            facts["leader_snapshot_write_s"] = float(m.group(3))
            break
    return facts


def read_back(cluster: Cluster, node_id: str, keys: int, value_bytes: int, seed: int,
              sample: int, rng: random.Random) -> dict:
    """`sample` random keys GET from `node_id`'s own copy, compared with what was written,
    and its DBSIZE."""
    picked = rng.sample(range(keys), min(sample, keys))
    client = cluster.client(node_id, socket_timeout=30.0)
    try:
        pipe = client.pipeline(transaction=False)
        for i in picked:
            pipe.execute_command(*LOCAL_READ, "GET", key_name(i))
        got = pipe.execute()
        dbsize = client.execute_command(*LOCAL_READ, "DBSIZE")
    finally:
        client.close()
    wrong = [(key_name(i), g) for i, g in zip(picked, got, strict=True)
             if g != value_for(i, value_bytes, seed)]
    return {"sampled": len(picked), "wrong": len(wrong), "wrong_examples": wrong[:5],
            "dbsize": int(dbsize)}


def run_catch_up(cluster: Cluster, *, keys: int, value_bytes: int = VALUE_BYTES_DEFAULT,
                 seed: int = 1, sample_keys: int = SAMPLE_KEYS_DEFAULT,
                 show_progress: bool = False,
                 say: Callable[[str], None] = lambda _: None) -> dict:
    """The whole flow on a started cluster from `make_cluster`: load, snapshot, add n4, watch
    it catch up, check its data, read every node's memory. Returns the figures (a dict for
    JSON); raises BenchError (or ClusterTimeout / NodeExited) when something goes wrong."""
    rng = random.Random(seed)
    leader = cluster.leader(among=VOTERS)
    term_before = cluster.status(leader)["term"]
    elections_before = total_elections(cluster)
    pids = {n: cluster.nodes[n].pid for n in cluster.ids}
    sampler = RssSampler(pids, phase="load")
    sampler.start()
    try:
        load, leader = load_keys(cluster, leader, keys, value_bytes, seed,
                                 show_progress=show_progress, say=say)
        loaded_index = cluster.status(leader)["commit_index"]
        sampler.phase = "snapshot"
        lead_status, pads = pad_until_snapshot(
            cluster, leader, loaded_index, snapshot_settings(keys)[0],
            timeout_for(keys, SNAPSHOT_TIMEOUT_FLOOR_S, SNAPSHOT_TIMEOUT_PER_MILLION_KEYS_S))
        say(f"leader {leader} has a snapshot at index {lead_status['snapshot']['index']} "
            f"({lead_status['snapshot']['bytes']:,} bytes), log from "
            f"{lead_status['log_first_index']}; {pads} padding writes")
        commit = cluster.status(leader)["commit_index"]
        for node_id in VOTERS:
            cluster.wait_applied(node_id, commit, timeout_s=SETTLE_TIMEOUT_S)
        leader_dbsize = cluster.client(leader).dbsize()
        if leader_dbsize != keys:
            raise BenchError(f"DBSIZE on the leader is {leader_dbsize}, not {keys}")
        before = {n: proc_status_kib(pid, "VmRSS", "VmHWM") for n, pid in pids.items()}
        cpu_before = {n: cpu_seconds(pid) for n, pid in pids.items()}

        say(f"replikv member add {JOINER}: catch-up starts")
        sampler.phase = "catch-up"
        catch_up_timeout = timeout_for(keys, CATCH_UP_TIMEOUT_FLOOR_S,
                                       CATCH_UP_TIMEOUT_PER_MILLION_KEYS_S)
        argv = [PYTHON, "-m", "replikv", "member", "add", *cluster.member_args(JOINER),
                "--wait-s", str(int(catch_up_timeout)), "--cluster",
                ",".join(f"{HOST}:{cluster.port(n)}" for n in VOTERS)]
        cli_out = cluster.root / "logs" / "member-add.log"
        wall_started, started = time.time(), time.monotonic()
        with open(cli_out, "w") as out:
            cli = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=cluster.root)
        try:
            timeline = watch_catch_up(cluster, leader, started, cli, cli_out, catch_up_timeout)
        finally:
            if cli.poll() is None:  # interrupted or timed out: it must not outlive us
                cli.kill()
                cli.wait(10.0)
        sampler.phase = "after"
        cpu_after = {n: cpu_seconds(pid) for n, pid in pids.items()}
        if f"{JOINER} promoted to voter" not in cli_out.read_text():
            raise BenchError(f"`replikv member add` did not promote {JOINER}: "
                             f"{cli_out.read_text()}")
        say(f"{JOINER} installed the snapshot after {timeline.installed_s}s, caught up as a "
            f"voter after {timeline.caught_up_s}s")

        joiner_status = cluster.status(JOINER)
        check = read_back(cluster, JOINER, keys, value_bytes, seed, sample_keys, rng)
        end = {n: proc_status_kib(pid, "VmRSS", "VmHWM") for n, pid in pids.items()}
    finally:
        sampler.stop()
    leader_end = cluster.leader(among=[*VOTERS, JOINER])
    term_end = cluster.status(leader_end)["term"]
    facts = snapshot_log_facts(cluster, leader, wall_started)

    snapshot_bytes = lead_status["snapshot"]["bytes"]
    installed_s = timeline.installed_s or float("nan")
    # n4 before the catch-up is a node holding no keys: what a node costs without data.
    empty_bytes = before[JOINER]["VmRSS"] * 1024
    nodes = {}
    for n in cluster.ids:
        role = ("leader" if n == leader else "joiner" if n == JOINER else "follower")
        peaks = sampler.peaks_kib
        nodes[n] = {
            "role": role, "pid": pids[n],
            "rss_before_catch_up_bytes": before[n]["VmRSS"] * 1024,
            "hwm_before_catch_up_bytes": before[n]["VmHWM"] * 1024,
            "peak_rss_load_bytes": peaks.get("load", {}).get(n, 0) * 1024,
            "peak_rss_snapshot_bytes": peaks.get("snapshot", {}).get(n, 0) * 1024,
            "peak_rss_catch_up_bytes": peaks.get("catch-up", {}).get(n, 0) * 1024,
            "rss_end_bytes": end[n]["VmRSS"] * 1024,
            "peak_rss_bytes": end[n]["VmHWM"] * 1024,
            "peak_rss_per_key_bytes": round(end[n]["VmHWM"] * 1024 / keys, 1),
            "rss_end_per_key_bytes": round(end[n]["VmRSS"] * 1024 / keys, 1),
            "peak_rss_above_empty_per_key_bytes":
                round((end[n]["VmHWM"] * 1024 - empty_bytes) / keys, 1),
            "rss_end_above_empty_per_key_bytes":
                round((end[n]["VmRSS"] * 1024 - empty_bytes) / keys, 1),
            "cpu_catch_up_s": round(cpu_after[n] - cpu_before[n], 2),
        }
    return {
        "keys": keys, "value_bytes": value_bytes, "batch_keys": BATCH_KEYS,
        "pipeline_depth": PIPELINE_DEPTH, "seed": seed,
        "node_args": node_args(keys),
        "load": {"seconds": round(load.seconds, 2),
                 "keys_per_s": round(keys / load.seconds), "reconnects": load.reconnects,
                 "errors": load.errors[:5], "padding_writes": pads},
        "leader": leader, "leader_end": leader_end,
        "term_before": term_before, "term_end": term_end,
        "elections_started": total_elections(cluster) - elections_before,
        "snapshot": {"index": lead_status["snapshot"]["index"], "bytes": snapshot_bytes,
                     "leader_log_first_index": lead_status["log_first_index"],
                     "n4_installed": (joiner_status.get("snapshot") or {}).get("installed", 0),
                     "n4_snapshot_index": (joiner_status.get("snapshot") or {}).get("index")},
        "catch_up": {
            "installed_s": timeline.installed_s, "caught_up_s": timeline.caught_up_s,
            "standby_s": timeline.standby_s, "sending_started_s": timeline.sending_s,
            "sending_ended_s": timeline.sent_s, "voter_s": timeline.voter_s,
            "max_snapshot_sent_bytes_seen": timeline.max_sent_bytes,
            "status_polls": timeline.polls,
            "status_polls_unanswered": timeline.unanswered_polls,
            "mb_per_s": round(snapshot_bytes / 1e6 / installed_s, 2),
            "keys_per_s": round(keys / installed_s),
            **facts,
        },
        "empty_node_rss_bytes": empty_bytes,
        "n4_voter": JOINER in joiner_status["voters"],
        "check": check,
        "rss_samples": sampler.samples,
        "nodes": nodes,
    }


# ---- report ----


def machine_info() -> dict:
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"nproc": os.cpu_count(), "memory_bytes": mem_kib * 1024, "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform()}


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def format_report(r: dict) -> str:
    c, snap = r["catch_up"], r["snapshot"]
    load, check = r["load"], r["check"]
    rows = [
        ("keys loaded", (f"{r['keys']:,} x {r['value_bytes']} B values, MSET of "
                         f"{r['batch_keys']}, {r['pipeline_depth']} in flight")),
        ("load time", (f"{load['seconds']:.1f} s ({load['keys_per_s']:,} keys/s), "
                       f"{load['reconnects']} reconnects, {load['padding_writes']} padding "
                       "writes")),
        ("snapshot", (f"index {snap['index']:,}, {snap['bytes']:,} bytes "
                      f"({snap['bytes'] / MIB:.1f} MiB); leader's log from "
                      f"{snap['leader_log_first_index']:,}; leader wrote it in "
                      f"{_s(c.get('leader_snapshot_write_s'))}")),
        ("(a) n4 installed snapshot", (f"{_s(c['installed_s'])} after `member add` started "
                                       f"(standby at {_s(c['standby_s'])}, leader sending "
                                       f"from {_s(c['sending_started_s'])})")),
        ("    of which transfer", (f"{_s(c.get('transfer_s'))} (first chunk at "
                                   f"{_s(c.get('receive_started_s'))})")),
        ("    of which load", f"{_s(c.get('load_s'))} (verify the file, build the state)"),
        ("(b) n4 voter, caught up", f"{_s(c['caught_up_s'])} (voter at {_s(c['voter_s'])})"),
        ("(c) throughput", (f"{c['mb_per_s']:.1f} MB/s, {c['keys_per_s']:,} keys/s "
                            "(snapshot bytes, keys / time to installed)")),
        ("check on n4", (f"{check['sampled'] - check['wrong']}/{check['sampled']} sampled "
                         f"keys right, DBSIZE {check['dbsize']:,}, snapshots installed "
                         f"{snap['n4_installed']}")),
        ("leader / elections", (f"{r['leader']} -> {r['leader_end']}, term "
                                f"{r['term_before']} -> {r['term_end']}, "
                                f"{r['elections_started']} elections started")),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    header = ["node", "role", "RSS before", "peak load", "peak snap", "peak catch-up",
              "RSS end", "VmHWM end", "HWM B/key", "RSS B/key", "CPU s catch-up"]
    legend = ("B/key: (VmHWM or RSS at the end - an empty node's RSS, "
              f"{r['empty_node_rss_bytes'] / MIB:.0f} MiB) / keys. peak load / snap / "
              "catch-up: highest VmRSS sampled every 100 ms while loading, while waiting for "
              "the snapshot, and from `member add` until n4 caught up. VmHWM end: the "
              "kernel's peak for the process's whole life. CPU: user+system seconds during "
              "the catch-up.")
    table = [header]
    for n, v in r["nodes"].items():
        table.append([n, v["role"], _mib(v["rss_before_catch_up_bytes"]),
                      _mib(v["peak_rss_load_bytes"]), _mib(v["peak_rss_snapshot_bytes"]),
                      _mib(v["peak_rss_catch_up_bytes"]), _mib(v["rss_end_bytes"]),
                      _mib(v["peak_rss_bytes"]),
                      f"{v['peak_rss_above_empty_per_key_bytes']:.0f}",
                      f"{v['rss_end_above_empty_per_key_bytes']:.0f}",
                      f"{v['cpu_catch_up_s']:.1f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out.append("")
    out.append("memory per node (MiB):")
    for row in table:
        out.append("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                             for i, cell in enumerate(row)).rstrip())
    out.append("")
    out.append(textwrap.fill(legend, 100))
    return "\n".join(out)


def say(msg: str) -> None:
    print(f"[{time.strftime('%X')}] {msg}", file=sys.stderr, flush=True)


def run_on_cluster(cluster: Cluster, root: Path, body: Callable[[], dict], *, keep_dir: bool,
                   failures: tuple[type[BaseException], ...] = ()) -> dict | int:
    """Run `body` with `cluster`, stopping every node whatever happens (Ctrl-C and SIGTERM
    included); keep `root` if asked or if it failed. Returns body's result, or an exit code
    (1: failed, with the nodes' log tails printed; 130: interrupted)."""
    failed = True
    try:
        with running(cluster, start=False):
            try:
                result = body()
                failed = False
                return result
            except (BenchError, ClusterTimeout, NodeExited, *failures) as e:
                print(f"benchmark failed: {e}\n\n{cluster.all_log_tails(40)}", file=sys.stderr)
                return 1
            finally:
                cluster.stop_all()
    except KeyboardInterrupt:
        print("interrupted; every node was stopped", file=sys.stderr)
        return 130
    finally:
        if keep_dir or failed:
            print(f"directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def emit_report(report: dict, *, out: Path | None, as_json: bool, setup: str,
                body: Callable[[], str], problems: list[str]) -> int:
    """Write the report to `out` (JSON) if given; print it as JSON or as text (the command, the
    machine, `setup`, then `body()`), then each problem. The script's exit status: 1 if there
    were problems."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        m = report["machine"]
        print(f"command: {report['command']}")
        print(f"machine: nproc={m['nproc']}, memory {m['memory_bytes'] / 2**30:.1f} GiB, "
              f"{m['cpu']}, Python {m['python']}, {m['platform']}")
        print(f"{setup}\n")
        print(body())
        for p in problems:
            print(f"PROBLEM: {p}")
    sys.stdout.flush()
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to load")
    parser.add_argument("--value-bytes", type=int, default=VALUE_BYTES_DEFAULT)
    parser.add_argument("--sample", type=int, default=SAMPLE_KEYS_DEFAULT,
                        help="random keys read back on n4")
    parser.add_argument("--seed", type=int, default=1, help="seeds values, ports and samples")
    parser.add_argument("--json", action="store_true", help="print a JSON object, no table")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    parser.add_argument("--keep-dir", action="store_true",
                        help="keep the cluster's directory (data, node logs) afterwards")
    args = parser.parse_args()
    if not (1 <= args.keys <= 50_000_000 and 1 <= args.value_bytes <= 1 << 20):
        parser.error("--keys must be 1..50000000 and --value-bytes 1..1048576")

    # SIGTERM unwinds like Ctrl-C, through the `finally` that stops the nodes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    root = Path(tempfile.mkdtemp(prefix="replikv-catch-up-"))
    cluster = make_cluster(root, args.keys, random.Random(args.seed))
    started = time.monotonic()

    def body() -> dict:
        say(f"starting n1..n3 and {JOINER} (--join) in {root}")
        cluster.start_all()
        return run_catch_up(cluster, keys=args.keys, value_bytes=args.value_bytes,
                            seed=args.seed, sample_keys=args.sample,
                            show_progress=not args.json, say=say)

    result = run_on_cluster(cluster, root, body, keep_dir=args.keep_dir)
    if isinstance(result, int):
        return result
    total_s = time.monotonic() - started

    report = {"command": command, "machine": machine_info(), "total_s": round(total_s, 1),
              **result}
    problems = []
    if result["check"]["wrong"] or result["check"]["dbsize"] != args.keys:
        problems.append(f"n4's data is wrong: {result['check']}")
    if not result["n4_voter"] or result["snapshot"]["n4_installed"] < 1:
        problems.append("n4 is not a voter, or installed no snapshot")
    report["problems"] = problems
    return emit_report(report, out=args.out, as_json=args.json, problems=problems,
                       setup=(f"3 voters + {JOINER} joining, on loopback, fsync=always; node "
                              f"args {' '.join(node_args(args.keys))}; total {total_s:.0f} s"),
                       body=lambda: format_report(result))


if __name__ == "__main__":
    sys.exit(main())
