"""replikv against etcd, Redis and PySyncObj: the same workloads, on this machine, in one run.

    bash benchmarks/compare.sh [--duration-s 10] [--systems replikv,etcd,...] [--workloads ...]
        [--client-processes 1] [--redis-benchmark-requests 200000] [--wait-quiet-s 60]
        [--rounds 1] [--json] [--out FILE]

(compare.sh installs the peers with benchmarks/install_peers.sh first.) The systems, each a
3-process cluster on free loopback ports with its data in a fresh temp dir, started one at a
time (this machine has 2 cores: never two clusters at once) and stopped before the next:

  replikv         replikv.bench.local_cluster(fsync="always", replication="passive"); every
                  connection first sends REPLIKV WRITECONCERN majority and REPLIKV CONSISTENCY
                  linearizable. Load goes to the leader (replikv.bench.discover).
  etcd            3 members of Debian's etcd-server 3.4 (/usr/bin/etcd), default settings (its
                  WAL is fsynced before a write is acknowledged), driven through the HTTP/JSON
                  gRPC gateway on the client port: POST /v3/kv/put {"key","value"} (base64) and
                  POST /v3/kv/range {"key"} (linearizable, the default). Load goes to the leader
                  (POST /v3/maintenance/status: `leader` == `header.member_id`).
  redis-always    Debian's redis-server, a primary and two replicas (--replicaof), appendonly
                  yes, appendfsync always, save "". Replication is asynchronous: the primary
                  acknowledges after its own AOF fsync, not its replicas'. Load: the primary.
  redis-everysec  the same with appendfsync everysec (fsync once a second, in the background).
  pysyncobj       benchmarks/peers/pysyncobj_kv.py: PySyncObj (PyPI) with a RESP front end;
                  journalFile on (PySyncObj cannot fsync its journal: written before the ack,
                  never flushed -- see that file's docstring), appendEntriesUseBatch off. GET
                  is served from the leader's applied dict: PySyncObj has no linearizable read.
                  Load goes to its leader.
  pysyncobj-msync (not in the default list) the same with the journal msynced after every
                  append: fsync-before-ack, by a wrapper of ours, not a PySyncObj option.
  replikv-compiled (not in the default list) replikv as above, its nodes running the cores
                  compiled by mypyc (`benchmarks/compiled.py build --out DIR`, then
                  --compiled-dir DIR here; default /tmp/replikv-compiled): the trial of a
                  compiled command path. Its ratios are printed below replikv's.

Workloads (replikv.bench.WORKLOADS; values of 100 bytes, keys random over 10,000, every key
preloaded first): set64 (SET / etcd put, 64 connections, one in flight each), setp16 (64
connections, 16 SETs per send; RESP systems only, n/a for etcd: HTTP/1.1 pipelining is not a
sensible way to drive it), get64 (GET / etcd linearizable range, 64 connections) and set1 (one
connection; its p50 is the single-client latency).

The load generator is replikv bench's: worker processes (spawn), each an asyncio loop (uvloop)
with its share of the connections, a start signal and a deadline, latencies in array('q') in ns;
each connection is a replikv.bench.LoadConnection, an asyncio protocol that sends its next
request from the callback that received the last reply. RESP systems run replikv.bench's own
worker (commands by replikv.bench.command_maker, replies by hiredis). etcd gets the same
connection with a minimal HTTP/1.1 keep-alive response reader, and requests
built once per worker for all 10,000 keys, so each operation is one write of prepared bytes and
one parse of a status line, headers and Content-Length body; a non-200 status is an error. The
table shows the clients' CPU per 1,000 operations and how busy a client process's core was, so a
saturated client is visible.

Server CPU is the sum over the system's three processes of utime + stime from /proc/<pid>/stat,
plus the CPU of children they reaped (redis's AOF-rewrite fork, PySyncObj's snapshot fork),
before and after each workload, per 1,000 operations.

Everything shares two cores, so anything else running on the machine skews the figures. Each
workload's row shows "others": the cores kept busy during it by anything but this system's
servers and our clients (the busy time of /proc/stat less theirs), flagged from 0.2 cores on.
Before each workload (and before redis-benchmark) the run waits, at most `--wait-quiet-s`, for
two quiet seconds in a row (under 0.1 cores of others).

The targets are the issue's: TARGETS (ratios between systems), and set1's p50 against its
floor, a 4 KiB append+fsync in the temp dir plus a TCP loopback round trip (replikv bench's
measurements), taken at the start of each round.

With `--rounds N` every system is measured N times over, in alternating order (system_order):
the report keeps each round (its tables, ratios and cross-checks) and judges each target by the
median of its per-round ratios (combine_rounds). The machine's speed drifts by tens of percent
within an hour here; one round alone can land a ratio on either side of its goal.

Every process started here is stopped in a `finally` (also on Ctrl-C, SIGTERM or an error):
servers in their own session through a launcher that sets PR_SET_PDEATHSIG, then
replikv.local_cluster.stop_process_groups; client workers are joined, then killed. Every wait has
a deadline; a server that does not become ready has its log tail printed.

The pure parts (HTTP response parsing, etcd requests, the tables and the ratios) are tested in
tests/unit/test_compare.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import http.client
import importlib.metadata
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from replikv.bench import (
    CLK_TCK,
    WORKLOADS,
    BenchError,
    LoadConnection,
    Member,
    WorkerPlan,
    WorkerReport,
    call,
    cpu_s_per_1k_ops,
    discover,
    drive_connections,
    info,
    latency_summary_ms,
    leader_term,
    local_cluster,
    machine_description,
    measure_fsync_ms,
    measure_loopback_rtt_ms,
    parse_address,
    parse_proc_stat_cpu_s,
    preload,
    resp_worker,  # replikv bench's own RESP client worker
    run_client_workers,
    run_load_connection,
    run_redis_benchmark,
    run_worker,
    split_clients,
)
from replikv.local_cluster import ClusterError, free_ports, stop_process_groups

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SYSTEMS = ("replikv", "etcd", "redis-always", "redis-everysec", "pysyncobj", "pysyncobj-msync",
           "replikv-compiled")
DEFAULT_SYSTEMS = "replikv,etcd,redis-always,redis-everysec,pysyncobj"
COMPARE_WORKLOADS = ("set64", "setp16", "get64", "set1")
KEYS = 10_000
VALUE_BYTES = 100

READY_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 30.0
WORKER_START_TIMEOUT_S = 30.0
PROGRESS_INTERVAL_S = 0.5
MAX_HEAD_BYTES = 16384
ETCD_PRELOAD_CONNECTIONS = 32
SATURATED_CORE_FRACTION = 0.9
OTHER_LOAD_WARNING_CORES = 0.2
QUIET_OTHER_CORES = 0.1
QUIET_SAMPLES = 2
LOG_TAIL_BYTES = 3000

PYSYNCOBJ_SERVER = REPO_ROOT / "benchmarks" / "peers" / "pysyncobj_kv.py"
DEFAULT_COMPILED_DIR = Path("/tmp/replikv-compiled")  # benchmarks/compiled.py's default

# For server processes: set PR_SET_PDEATHSIG (1) to SIGKILL (9), then become the server (same
# pid; the setting survives execve). Run as [python, "-c", EXEC_LAUNCHER, str(os.getpid()),
# program, *args]; if we are already gone, exit instead.
EXEC_LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(3)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

# The targets: (label, numerator, denominator, what, target); numerator and
# denominator are (system, workload); `what` is "ops_per_s" (ratio >= target) or "p99" (<=).
TARGETS = (
    ("replikv set64 ops/s / etcd put ops/s", ("replikv", "set64"), ("etcd", "set64"),
     "ops_per_s", 3.0),
    ("replikv set64 ops/s / PySyncObj set64 ops/s", ("replikv", "set64"), ("pysyncobj", "set64"),
     "ops_per_s", 5.0),
    ("replikv set64 p99 / etcd put p99", ("replikv", "set64"), ("etcd", "set64"), "p99", 1.0),
    ("replikv setp16 ops/s / Redis(always) setp16 ops/s", ("replikv", "setp16"),
     ("redis-always", "setp16"), "ops_per_s", 0.5),
    ("replikv get64 ops/s / etcd range ops/s", ("replikv", "get64"), ("etcd", "get64"),
     "ops_per_s", 3.0),
)


# The single-client target: set1's p50 against the floor, a 4 KiB append+fsync on the disk the
# systems' data lives on plus one TCP loopback round trip, both measured in the run.
FLOOR_TARGET_LABEL = "replikv set1 p50 / floor (append+fsync + loopback round trip)"
SET1_FLOOR_TARGET = 1.5
LATENCY_FIGURES = ("p50", "p99")  # ratios of these pass at or below their goal


class CompareError(RuntimeError):
    pass


# ---- HTTP/1.1, minimal ---------------------------------------------------------------------------


class HttpError(ValueError):
    """A response this client cannot read (not HTTP/1.x, no Content-Length, chunked, ...)."""


def parse_response_head(head: bytes) -> tuple[int, int]:
    """(status, content length) from a response's status line and headers (without the blank
    line that ends them)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(f"malformed header line {line[:80]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise HttpError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding" and value.strip().lower() != b"identity":
            raise HttpError(f"Transfer-Encoding {value.strip()[:40]!r} is not supported")
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return status, 0
        raise HttpError(f"HTTP {status} without Content-Length")
    return status, length


class HttpResponseReader:
    """Responses of one keep-alive connection, from bytes fed as they arrive: `gets()` returns
    (status, body) once a whole response is in, else None (like hiredis.Reader)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, int] | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def gets(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise HttpError(f"no end of headers within {MAX_HEAD_BYTES} bytes")
                return None
            self._head = parse_response_head(bytes(buffer[:end]))
            del buffer[:end + 4]
        status, length = self._head
        if len(buffer) < length:
            return None
        body = bytes(buffer[:length])
        del buffer[:length]
        self._head = None
        return status, body


def http_post_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (b"POST %b HTTP/1.1\r\nHost: %b:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b"
            % (path.encode(), host.encode(), port, len(body), body))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def etcd_put_body(key: bytes, value: bytes) -> bytes:
    return json.dumps({"key": _b64(key), "value": _b64(value)}, separators=(",", ":")).encode()


def etcd_range_body(key: bytes) -> bytes:
    """A linearizable range read of one key (serializable is not set: etcd's default)."""
    return json.dumps({"key": _b64(key)}, separators=(",", ":")).encode()


def bench_key(i: int) -> bytes:
    return b"bench:%d" % i  # the keys replikv.bench.command_maker and preload use


def etcd_requests(kind: str, address: tuple[str, int], keys: int, value_bytes: int) -> list[bytes]:
    """Every request of the workload, one per key, ready to send."""
    host, port = address
    value = b"v" * value_bytes
    if kind == "set":
        return [http_post_request(host, port, "/v3/kv/put", etcd_put_body(bench_key(i), value))
                for i in range(keys)]
    if kind == "get":
        return [http_post_request(host, port, "/v3/kv/range", etcd_range_body(bench_key(i)))
                for i in range(keys)]
    raise ValueError(f"no etcd requests for workload kind {kind!r}")


def http_json(address: tuple[str, int], path: str, payload: dict[str, Any],
              timeout_s: float = 3.0) -> dict[str, Any]:
    """One blocking POST of JSON on its own connection (setup and checks, not measured)."""
    conn = http.client.HTTPConnection(*address, timeout=timeout_s)
    try:
        conn.request("POST", path, body=json.dumps(payload),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise CompareError(f"POST {path} on {address[0]}:{address[1]}: HTTP "
                               f"{response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


# ---- the etcd client worker (same protocol with the parent as replikv.bench.resp_worker) ---


@dataclass(frozen=True)
class HttpPlan:
    address: tuple[str, int]
    kind: str  # "set" or "get"
    connections: int
    keys: int
    value_bytes: int
    seed: int


def http_error_text(response: tuple[int, bytes]) -> str | None:
    status, body = response
    return None if status == 200 else f"HTTP {status}: {body[:200]!r}"


async def _http_connection(plan: HttpPlan, requests: list[bytes], rng: random.Random,
                           go: asyncio.Event, deadline: list[float], report: WorkerReport,
                           connected: list[int]) -> None:
    """The same callback-driven connection as replikv's (replikv.bench.LoadConnection), with an
    HTTP/1.1 response reader: one request in flight, a random key's prebuilt request each."""
    randrange, count = rng.randrange, len(requests)
    protocol = LoadConnection(HttpResponseReader(), None, http_error_text)
    await run_load_connection(plan.address, protocol, (), lambda: requests[randrange(count)], 1,
                              go, deadline, report, connected)


def http_worker(plan: HttpPlan, pipe: Any) -> None:
    """A client worker process for etcd, driven exactly as replikv.bench.resp_worker is: the
    same connection driver and the same messages to the parent."""
    def main() -> Any:
        requests = etcd_requests(plan.kind, plan.address, plan.keys, plan.value_bytes)
        return drive_connections(plan.connections,
                                 functools.partial(_http_connection, plan, requests),
                                 plan.seed, pipe)
    run_worker(main, pipe)


async def _etcd_preload(address: tuple[str, int], keys: int, value_bytes: int) -> None:
    requests = etcd_requests("set", address, keys, value_bytes)
    todo = iter(requests)

    async def one_connection() -> None:
        protocol = LoadConnection(HttpResponseReader(), None, http_error_text)
        await asyncio.wait_for(asyncio.get_running_loop().create_connection(
            lambda: protocol, *address), CONNECT_TIMEOUT_S)
        try:
            for request in todo:
                [got] = await asyncio.wait_for(protocol.call(request, 1), REPLY_TIMEOUT_S)
                if (error := http_error_text(got)) is not None:
                    raise BenchError(f"preloading etcd failed: {error}")
        finally:
            protocol.close()

    await asyncio.gather(*(one_connection() for _ in range(ETCD_PRELOAD_CONNECTIONS)))


# ---- process CPU -----------------------------------------------------------------------------------


def parse_proc_stat_children_cpu_s(stat_text: str, clk_tck: int = CLK_TCK) -> float:
    """cutime + cstime (fields 16 and 17 of proc(5)): CPU of children the process waited for."""
    fields = stat_text.rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) / clk_tck


def parse_machine_busy_s(proc_stat_text: str, clk_tck: int = CLK_TCK) -> float:
    """CPU seconds all cores spent busy since boot, from /proc/stat's "cpu" line (user, nice,
    system, irq, softirq, steal; not idle or iowait)."""
    for line in proc_stat_text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            return (f[0] + f[1] + f[2] + sum(f[5:8])) / clk_tck
    raise ValueError("no cpu line in /proc/stat")


def machine_busy_s() -> float | None:
    try:
        return parse_machine_busy_s(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def processes_cpu_s(pids: Sequence[int]) -> float | None:
    """Own and reaped children's CPU seconds summed over `pids`; None if one is gone."""
    total = 0.0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        total += parse_proc_stat_cpu_s(text) + parse_proc_stat_children_cpu_s(text)
    return total


# ---- the systems -----------------------------------------------------------------------------------


@dataclass
class Target:
    """A running system as the workloads see it."""
    system: str
    protocol: str  # "resp" or "etcd"
    address: tuple[str, int]  # where the load goes: leader or primary
    pids: list[int]
    setup: tuple[tuple[bytes, ...], ...] = ()  # RESP commands each connection sends first
    version: str = "?"
    config: str = ""
    notes: list[str] = field(default_factory=list)
    leader_marker: Callable[[], Any] = lambda: None  # changes if leadership moved


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_BYTES:]
    except OSError as e:
        return f"(no log: {e})"


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-c", EXEC_LAUNCHER, str(os.getpid()), *argv],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def _wait_until(what: str, ready: Callable[[], bool], procs: Sequence[tuple[subprocess.Popen,
                Path]], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll `ready()` until it is true; fail (with the log tail) if a process exits or the
    deadline passes."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        for proc, log_path in procs:
            if proc.poll() is not None:
                raise CompareError(f"{what}: a server exited (status {proc.returncode}); "
                                   f"{log_path}:\n{_log_tail(log_path)}")
        try:
            if ready():
                return
        except (OSError, http.client.HTTPException, BenchError, CompareError, ValueError,
                KeyError) as e:
            last_error = e
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{_log_tail(p)}" for _, p in procs)
            raise CompareError(f"{what} not within {timeout_s:.0f} s"
                               + (f" (last error: {last_error})" if last_error else "")
                               + f"\n{tails}")
        time.sleep(POLL_INTERVAL_S)


def command_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return short_version(done.stdout or done.stderr)


def short_version(text: str) -> str:
    """`etcd --version` / `redis-server --version` output in one short line."""
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if "etcd Version" in fields:
        go = fields.get("Go Version")
        return f"etcd {fields['etcd Version'].strip()}" + (f" ({go.strip()})" if go else "")
    words = text.split()
    if words[:2] == ["Redis", "server"]:
        return " ".join(["Redis"] + [w for w in words[2:] if w.startswith(("v=", "malloc="))])
    return " ".join(words)


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def run_replikv(root: Path, log: Callable[[str], None],
                compiled_dir: Path | None = None) -> Iterator[Target]:
    """replikv's cluster; with `compiled_dir`, its nodes run the cores compiled there."""
    root.mkdir(parents=True, exist_ok=True)
    env = None
    name, version = "replikv", f"replikv {package_version('replikv')}"
    if compiled_dir is not None:
        if str(REPO_ROOT) not in sys.path:  # run as a script: make benchmarks importable
            sys.path.insert(0, str(REPO_ROOT))
        from benchmarks.compiled import TrialError, compiled_env, require_build
        try:
            require_build(compiled_dir)
        except TrialError as e:
            raise CompareError(str(e)) from None
        env = compiled_env(compiled_dir)
        name, version = "replikv-compiled", f"{version}, cores compiled by mypyc"
    try:
        with local_cluster(root, fsync="always", replication="passive", env=env) as addresses:
            members, leader_id = discover([parse_address(a) for a in addresses])
            leader = next(m for m in members if m.id == leader_id)
            pids = [m.pid for m in members if m.pid is not None]
            if len(pids) != 3:
                raise CompareError(f"found the pids of only {len(pids)} replikv nodes")
            yield Target(
                name, "resp", leader.address, pids,
                setup=((b"REPLIKV", b"WRITECONCERN", b"majority"),
                       (b"REPLIKV", b"CONSISTENCY", b"linearizable")),
                version=version,
                config="3 nodes, fsync=always, replication=passive, w=majority, "
                       "linearizable reads (ReadIndex)",
                leader_marker=lambda: (leader_id, leader_term(leader)))
    except ClusterError as e:
        raise CompareError(str(e)) from None


def etcd_leader(clients: Sequence[tuple[str, int]]) -> tuple[int, dict[str, Any]]:
    """(index of the leader in `clients`, its status) by POST /v3/maintenance/status."""
    for i, address in enumerate(clients):
        status = http_json(address, "/v3/maintenance/status", {})
        if status.get("leader") and status["leader"] == status["header"]["member_id"]:
            return i, status
    raise CompareError("no etcd member says it is the leader")


@contextlib.contextmanager
def run_etcd(root: Path, log: Callable[[str], None]) -> Iterator[Target]:
    exe = shutil.which("etcd")
    if exe is None:
        raise CompareError("etcd is not installed (benchmarks/install_peers.sh installs it)")
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(6, HOST)
    names = ["m1", "m2", "m3"]
    client_ports, peer_ports = ports[:3], ports[3:]
    initial = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(names, peer_ports, strict=True))
    token = f"compare-{os.getpid()}-{random.randrange(1 << 30)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for name, client, peer in zip(names, client_ports, peer_ports, strict=True):
            argv = [exe, "--name", name, "--data-dir", str(root / name),
                    "--listen-client-urls", f"http://{HOST}:{client}",
                    "--advertise-client-urls", f"http://{HOST}:{client}",
                    "--listen-peer-urls", f"http://{HOST}:{peer}",
                    "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
                    "--initial-cluster", initial, "--initial-cluster-token", token,
                    "--initial-cluster-state", "new"]
            log_path = root / f"{name}.log"
            procs.append((_spawn(argv, log_path, env), log_path))
        clients = [(HOST, p) for p in client_ports]
        found: list[tuple[int, dict[str, Any]]] = []

        def has_leader() -> bool:
            for address in clients:
                http_json(address, "/v3/maintenance/status", {})
            found[:] = [etcd_leader(clients)]
            return True

        _wait_until("etcd cluster with a leader", has_leader, procs)
        index, status = found[0]
        leader_address = clients[index]

        def marker() -> Any:
            with contextlib.suppress(OSError, http.client.HTTPException, CompareError, KeyError,
                                     ValueError):
                s = http_json(leader_address, "/v3/maintenance/status", {})
                return s.get("leader"), s.get("raftTerm")
            return None

        yield Target(
            "etcd", "etcd", leader_address, [p.pid for p, _ in procs],
            version=command_version([exe, "--version"]),
            config="3 members, default settings (WAL fsync before ack), HTTP/JSON gateway "
                   "/v3/kv/put and /v3/kv/range (linearizable)",
            notes=[f"server version {status.get('version')}"],
            leader_marker=marker)
    finally:
        stop_process_groups([p for p, _ in procs])


@contextlib.contextmanager
def run_redis(root: Path, log: Callable[[str], None], appendfsync: str) -> Iterator[Target]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise CompareError("redis-server is not installed (benchmarks/install_peers.sh)")
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3, HOST)
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for i, port in enumerate(ports):
            data_dir = root / f"r{i + 1}"
            data_dir.mkdir()
            argv = [exe, "--port", str(port), "--bind", HOST, "--dir", str(data_dir),
                    "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
                    "--daemonize", "no", "--logfile", ""]
            if i > 0:
                argv += ["--replicaof", HOST, str(ports[0])]
            log_path = root / f"r{i + 1}.log"
            procs.append((_spawn(argv, log_path), log_path))
        primary = (HOST, ports[0])

        def replicas_online() -> bool:
            for port in ports:
                call((HOST, port), "PING", timeout_s=1.0)
            repl = info(primary, "replication")
            online = [k for k, v in repl.items()
                      if k.startswith("slave") and "state=online" in v]
            return repl.get("connected_slaves") == "2" and len(online) == 2

        _wait_until(f"redis ({appendfsync}) with 2 online replicas", replicas_online, procs)
        yield Target(
            f"redis-{appendfsync}", "resp", primary, [p.pid for p, _ in procs],
            version=command_version([exe, "--version"]),
            config=f"primary + 2 replicas (asynchronous replication), appendonly yes, "
                   f"appendfsync {appendfsync}, save \"\"",
            leader_marker=lambda: info(primary, "replication").get("role"))
    finally:
        stop_process_groups([p for p, _ in procs])


def _role(address: tuple[str, int]) -> str:
    reply = call(address, "ROLE", timeout_s=1.0)
    return reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])


@contextlib.contextmanager
def run_pysyncobj(root: Path, log: Callable[[str], None], journal: str) -> Iterator[Target]:
    try:
        import pysyncobj  # noqa: F401 - only to fail early with a clear message
    except ImportError:
        raise CompareError("pysyncobj is not installed in this Python "
                           "(benchmarks/install_peers.sh installs it)") from None
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(6, HOST)
    raft = [f"{HOST}:{p}" for p in ports[:3]]
    clients = [(HOST, p) for p in ports[3:]]
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for i in range(3):
            argv = [sys.executable, str(PYSYNCOBJ_SERVER), "--self", raft[i],
                    "--partners", ",".join(a for j, a in enumerate(raft) if j != i),
                    "--listen", f"{HOST}:{clients[i][1]}", "--data-dir", str(root / f"p{i + 1}"),
                    "--journal", journal, "--no-batch"]
            log_path = root / f"p{i + 1}.log"
            procs.append((_spawn(argv, log_path), log_path))
        leaders: list[tuple[str, int]] = []

        def one_leader() -> bool:
            roles = [_role(a) for a in clients]
            leaders[:] = [a for a, r in zip(clients, roles, strict=True) if r == "leader"]
            return len(leaders) == 1

        _wait_until("PySyncObj cluster with one leader", one_leader, procs)
        leader = leaders[0]
        call(leader, "SET", "compare:warmup", "1", timeout_s=10.0)  # a commit goes through

        def marker() -> Any:
            with contextlib.suppress(OSError, BenchError):
                fields = info(leader, "")
                return fields.get("role"), fields.get("raft_term")
            return None

        journal_text = {"file": "journalFile (mmap, written before ack, never flushed)",
                        "msync": "journalFile + msync after every append (our wrapper)",
                        "memory": "memory journal"}[journal]
        yield Target(
            "pysyncobj" if journal == "file" else f"pysyncobj-{journal}", "resp", leader,
            [p.pid for p, _ in procs],
            version=f"pysyncobj {package_version('pysyncobj')}",
            config=f"3 members, {journal_text}, appendEntriesUseBatch off, GET from the "
                   f"leader's local dict (no linearizable read in PySyncObj)",
            leader_marker=marker)
    finally:
        stop_process_groups([p for p, _ in procs])


def start_system(name: str, root: Path, log: Callable[[str], None],
                 compiled_dir: Path | None = None) -> contextlib.AbstractContextManager[Target]:
    if name == "replikv":
        return run_replikv(root / "replikv", log)
    if name == "replikv-compiled":
        return run_replikv(root / name, log, compiled_dir or DEFAULT_COMPILED_DIR)
    if name == "etcd":
        return run_etcd(root / "etcd", log)
    if name.startswith("redis-"):
        return run_redis(root / name, log, name.removeprefix("redis-"))
    if name == "pysyncobj":
        return run_pysyncobj(root / name, log, "file")
    if name == "pysyncobj-msync":
        return run_pysyncobj(root / name, log, "msync")
    raise ValueError(f"unknown system {name!r}")


def preload_target(target: Target, keys: int, value_bytes: int) -> None:
    if target.protocol == "etcd":
        asyncio.run(_etcd_preload(target.address, keys, value_bytes))
    else:
        preload(Member("leader", target.address), keys, b"v" * value_bytes)


# ---- one workload ------------------------------------------------------------------------------


@dataclass
class Settings:
    systems: list[str]
    workloads: list[str]
    duration_s: float
    client_processes: int
    keys: int = KEYS
    value_bytes: int = VALUE_BYTES
    redis_benchmark_requests: int = 200_000
    wait_quiet_s: float = 0.0
    seed: int = 1
    compiled_dir: str | None = None  # replikv-compiled's build (benchmarks/compiled.py)
    rounds: int = 1  # the systems measured this many times over, in alternating order


def supports(protocol: str, workload: str) -> str | None:
    """None if the workload runs against the protocol, else why not."""
    if protocol == "etcd" and WORKLOADS[workload].pipeline > 1:
        return "n/a: HTTP/1.1 pipelining is not a sensible way to drive etcd's gateway"
    return None


def wait_for_quiet(pids: Sequence[int], max_wait_s: float, log: Callable[[str], None],
                   system: str) -> float | None:
    """Before a workload: wait (at most `max_wait_s`) until, for QUIET_SAMPLES one-second
    samples in a row, the machine is busy with less than QUIET_OTHER_CORES cores of anything
    but this system's (idle) servers. Returns the seconds waited, or None if it stayed busy."""
    started = time.monotonic()
    deadline = started + max_wait_s
    quiet, told = 0, False
    while time.monotonic() < deadline:
        machine0, servers0, t0 = machine_busy_s(), processes_cpu_s(pids), time.monotonic()
        time.sleep(1.0)
        machine1, servers1 = machine_busy_s(), processes_cpu_s(pids)
        other = other_cores_busy(machine0, machine1, servers0, servers1, 0.0,
                                 time.monotonic() - t0)
        if other is None:
            return None
        quiet = quiet + 1 if other < QUIET_OTHER_CORES else 0
        if quiet >= QUIET_SAMPLES:
            return time.monotonic() - started
        if not told and quiet == 0:
            log(f"  {system}: waiting for other processes to leave the CPUs ({other:.2f} cores "
                f"busy; at most {max_wait_s:.0f} s)")
            told = True
    log(f"  {system}: the machine stayed busy; measuring anyway (see 'others')")
    return None


def run_workload(target: Target, name: str, settings: Settings,
                 log: Callable[[str], None]) -> dict[str, Any]:
    workload = WORKLOADS[name]
    waited = (wait_for_quiet(target.pids, settings.wait_quiet_s, log, target.system)
              if settings.wait_quiet_s > 0 else None)
    shares = split_clients(workload.clients, settings.client_processes)
    workers: list[tuple[Callable[..., None], Any]] = []
    for i, share in enumerate(shares):
        seed = settings.seed * 1000 + i
        if target.protocol == "etcd":
            workers.append((http_worker, HttpPlan(target.address, workload.kind, share,
                                                  settings.keys, settings.value_bytes, seed)))
        else:
            workers.append((resp_worker, WorkerPlan(target.address, workload.kind, share,
                                                    workload.pipeline, settings.keys,
                                                    settings.value_bytes, target.setup, seed)))

    def measure() -> tuple[Any, float | None, float | None, float]:
        return (target.leader_marker(), processes_cpu_s(target.pids), machine_busy_s(),
                time.monotonic())

    try:
        report_list, (marker_before, cpu_before, machine_before, started), \
            (marker_after, cpu_after, machine_after, ended) = run_client_workers(
                workers, settings.duration_s, before=measure, after=measure)
    except BenchError as e:
        raise CompareError(str(e)) from None
    reports = dict(enumerate(report_list))
    wall = ended - started

    latencies = array("q")
    for r in reports.values():
        latencies.extend(r.latencies_ns)
    ops = sum(r.ops for r in reports.values())
    elapsed = max(r.elapsed_s for r in reports.values())
    client_cpu = sum(r.cpu_s for r in reports.values())
    server_cpu = (cpu_s_per_1k_ops(cpu_before, cpu_after, ops)
                  if cpu_before is not None and cpu_after is not None else None)
    result = {
        "workload": name, "clients": workload.clients, "pipeline": workload.pipeline,
        "client_processes": len(shares), "ops": ops,
        "errors": sum(r.errors for r in reports.values()),
        "first_error": next((r.first_error for r in reports.values() if r.first_error), None),
        "duration_s": round(elapsed, 3), "ops_per_s": ops / elapsed if elapsed > 0 else 0.0,
        "latency_ms": latency_summary_ms(latencies),
        "server_cpu_s_per_1k_ops": server_cpu,
        "server_cores_busy": ((cpu_after - cpu_before) / elapsed
                              if cpu_before is not None and cpu_after is not None and elapsed > 0
                              else None),
        "client_cpu_s_per_1k_ops": cpu_s_per_1k_ops(0.0, client_cpu, ops),
        "client_core_busy": client_cpu / elapsed / len(shares) if elapsed > 0 else None,
        "leader_changed": marker_before != marker_after,
        "waited_for_quiet_s": None if waited is None else round(waited, 1),
        # Cores busy with anything but this system's servers and our clients (the machine's
        # busy time less theirs): another workload on the machine skews the figures.
        "other_cores_busy": other_cores_busy(machine_before, machine_after, cpu_before,
                                             cpu_after, client_cpu, wall),
    }
    log(f"  {target.system:<15} {name:<7} {result['ops_per_s']:>10,.0f} ops/s  p50 "
        f"{result['latency_ms']['p50']:.2f} ms  p99 {result['latency_ms']['p99']:.2f} ms  "
        f"errors {result['errors']}")
    return result


def other_cores_busy(machine_before: float | None, machine_after: float | None,
                     servers_before: float | None, servers_after: float | None,
                     clients_cpu_s: float, wall_s: float) -> float | None:
    if None in (machine_before, machine_after, servers_before, servers_after) or wall_s <= 0:
        return None
    other = (machine_after - machine_before) - (servers_after - servers_before) - clients_cpu_s
    return max(0.0, other / wall_s)


# ---- redis-benchmark cross-check ---------------------------------------------------------------


def redis_benchmark_setp16(address: tuple[str, int], requests: int, keys: int,
                           value_bytes: int) -> dict[str, Any]:
    """`redis-benchmark -t set -c 64 -P 16` (replikv bench's runner) against `address`."""
    try:
        rows = run_redis_benchmark(address, requests=requests, keys=keys,
                                   value_bytes=value_bytes, runs=[("set", 64, 16)])
    except BenchError as e:
        raise CompareError(str(e)) from None
    rows = [r for r in rows if r["test"] == "SET"]
    if not rows:
        raise CompareError("redis-benchmark printed no SET row")
    return rows[0]


# ---- tables and ratios (pure) ------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in rows]


WORKLOAD_TITLES = {
    "set64": "set64: SET (etcd: put), 64 connections, one operation in flight each",
    "setp16": "setp16: SET, 64 connections, 16 per send (pipelined)",
    "get64": "get64: GET (etcd: linearizable range), 64 connections",
    "set1": "set1: SET (etcd: put), one connection",
}


def format_workload_table(name: str, systems: dict[str, dict[str, Any]]) -> str:
    """One workload: a row per system (in the order given); a system that did not run it shows
    why."""
    header = ["system", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "srv cpu/1k",
              "srv cores", "cli cpu/1k", "cli core", "others"]
    rows = [header]
    notes = []
    for system, report in systems.items():
        r = report.get("workloads", {}).get(name)
        if r is None:
            continue
        if "skipped" in r:
            rows.append([system, r["skipped"].split(":")[0]] + [""] * (len(header) - 2))
            continue
        busy, other = r.get("client_core_busy"), r.get("other_cores_busy")
        saturated = busy is not None and busy >= SATURATED_CORE_FRACTION
        rows.append([
            system + ("!" if r.get("leader_changed") else ""), f"{r['ops_per_s']:,.0f}",
            _fmt(r["latency_ms"]["p50"]), _fmt(r["latency_ms"]["p99"]),
            _fmt(r["latency_ms"]["p999"]), f"{r['errors']}",
            _fmt(r["server_cpu_s_per_1k_ops"], 3), _fmt(r.get("server_cores_busy"), 2),
            _fmt(r["client_cpu_s_per_1k_ops"], 3),
            "-" if busy is None else f"{busy:.0%}" + ("*" if saturated else ""),
            _fmt(other, 2) + ("!" if other is not None and other >= OTHER_LOAD_WARNING_CORES
                              else "")])
        if r.get("errors"):
            notes.append(f"  {system}: {r['errors']} errors, the first: {r['first_error']}")
        if r.get("leader_changed"):
            notes.append(f"  {system}!: the leader (or its term) changed during the run")
    return "\n".join([WORKLOAD_TITLES.get(name, name), *_aligned(rows), *notes])


def _figure(systems: dict[str, dict[str, Any]], system: str, workload: str, what: str
            ) -> float | None:
    r = systems.get(system, {}).get("workloads", {}).get(workload)
    if not r or "skipped" in r or not r.get("ops"):
        return None
    return r["ops_per_s"] if what == "ops_per_s" else r["latency_ms"][what]


def compute_ratios(systems: dict[str, dict[str, Any]], floor_ms: float | None = None
                   ) -> list[dict[str, Any]]:
    """The issue's targets from the results: each with both figures, the ratio and PASS/MISS
    ("-" when a side did not run). Throughput ratios must reach the target; latency ratios
    must not exceed it. With `floor_ms` (a 4 KiB append+fsync plus a loopback round trip,
    measured in the run), set1's p50 is compared with that floor. If replikv-compiled ran,
    the same targets follow for it."""
    targets: list[tuple] = list(TARGETS)
    if floor_ms is not None:
        targets.append((FLOOR_TARGET_LABEL, ("replikv", "set1"), None, "p50",
                        SET1_FLOOR_TARGET))
    if "replikv-compiled" in systems:
        targets += [(label.replace("replikv", "replikv-compiled", 1), ("replikv-compiled", wl_a),
                     denominator, what, target)
                    for label, (_, wl_a), denominator, what, target in list(targets)]
    out = []
    for label, (sys_a, wl_a), denominator, what, target in targets:
        a = _figure(systems, sys_a, wl_a, what)
        b = floor_ms if denominator is None else _figure(systems, *denominator, what)
        ratio = a / b if a is not None and b else None
        out.append({"label": label, "what": what, "numerator": a, "denominator": b,
                    "ratio": ratio, "goal": target,
                    "target": f"<= {target:g}" if what in LATENCY_FIGURES else f">= {target:g}",
                    "verdict": _verdict(ratio, what, target)})
    return out


def _verdict(ratio: float | None, what: str, goal: float) -> str:
    if ratio is None:
        return "-"
    if what in LATENCY_FIGURES:
        return "PASS" if ratio <= goal else "MISS"
    return "PASS" if ratio >= goal else "MISS"


def system_order(systems: Sequence[str], round_number: int) -> list[str]:
    """The order the systems run in, in round `round_number` (1 first): as given in odd rounds,
    reversed in even ones, so that a machine that speeds up or slows down during the run
    favours no system."""
    return list(systems) if round_number % 2 else list(reversed(systems))


def combine_rounds(rounds: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The targets over several rounds (each round's compute_ratios): for each target the
    median of its ratios over the rounds in which both sides ran, the medians of both figures,
    every round's ratio ("per_round", None where a side did not run) and the verdict of the
    median ratio. One slow or fast round then decides nothing on its own."""
    out = []
    for i, first in enumerate(rounds[0]):
        per_round = [r[i]["ratio"] for r in rounds]
        ran = [r[i] for r in rounds if r[i]["ratio"] is not None]
        ratio = statistics.median(r["ratio"] for r in ran) if ran else None
        out.append({**first,
                    "numerator": statistics.median(r["numerator"] for r in ran) if ran else None,
                    "denominator": (statistics.median(r["denominator"] for r in ran) if ran
                                    else None),
                    "ratio": ratio, "per_round": per_round,
                    "verdict": _verdict(ratio, first["what"], first["goal"])})
    return out


def format_ratios(ratios: Sequence[dict[str, Any]]) -> str:
    """The targets' table. After several rounds (combine_rounds) the figures and the ratio
    are medians, and each round's ratio has its own column before them."""
    rounds = len(ratios[0].get("per_round", ())) if ratios else 0
    per_round = [f"round {k + 1}" for k in range(rounds)] if rounds > 1 else []
    rows = [["target", *per_round, "replikv", "other", "ratio", "goal", "verdict"]]
    for r in ratios:
        latency = r["what"] in LATENCY_FIGURES
        unit, digits = (" ms", 3 if r["what"] == "p50" else 2) if latency else ("", 0)
        rows.append([r["label"], *(_fmt(x) for x in r.get("per_round", [])[:len(per_round)]),
                     "-" if r["numerator"] is None else f"{r['numerator']:,.{digits}f}{unit}",
                     "-" if r["denominator"] is None else f"{r['denominator']:,.{digits}f}{unit}",
                     _fmt(r["ratio"]), r["target"], r["verdict"]])
    title = ("ratios (the issue's targets):" if not per_round else
             f"ratios (the issue's targets): each round's, then the median of {rounds} rounds "
             "(of each figure too, on its own):")
    return "\n".join([title, *("  " + line for line in _aligned(rows))])


def format_report(report: dict[str, Any]) -> str:
    s, m = report["settings"], report["machine"]
    lines = [
        f"command: {report['command']}",
        (f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, Python "
         f"{m['python']}; servers and clients on this one machine, one system at a time"),
        (f"disk: 4 KiB append + fsync median {report['fsync_ms_p50']:.3f} ms (in the temp dir "
         f"the systems' data lives in); TCP loopback round trip median "
         f"{report.get('loopback_rtt_ms_p50', 0.0):.3f} ms; their sum is set1's floor"
         + (" (measured again each round)" if len(report.get("rounds") or ()) > 1 else "")),
        (f"workloads: {s['duration_s']:g} s each, values {s['value_bytes']} B, keys random over "
         f"{s['keys']:,} (all preloaded), client processes {s['client_processes']}"),
        "",
        "systems:",
    ]
    for name, r in report["systems"].items():
        lines.append(f"  {name:<15} {r.get('version', '?')}")
        if r.get("config"):
            lines.append(f"  {'':<15} {r['config']}")
        if r.get("error"):
            lines.append(f"  {'':<15} FAILED: {r['error'].splitlines()[0]}")
    rounds = report.get("rounds") or [{"order": list(report["systems"]),
                                       "systems": report["systems"],
                                       "redis_benchmark": report["redis_benchmark"]}]
    several = len(rounds) > 1
    for k, one in enumerate(rounds, 1):
        if several:
            order = ", ".join(one["order"])
            floor = (f"; set1's floor {one['fsync_ms_p50'] + one['loopback_rtt_ms_p50']:.3f} ms"
                     if "fsync_ms_p50" in one else "")
            lines += ["", f"round {k} of {len(rounds)} (systems in this order: {order}{floor})"]
        for name in s["workloads"]:
            lines += ["", format_workload_table(name, one["systems"])]
    lines += [
        "",
        ("srv cpu/1k: CPU seconds per 1,000 operations summed over the 3 server processes (and "
         "children they reaped); srv cores: those CPU seconds per second of the run (2 cores "
         "here); cli cpu/1k, cli core: the load generator's own CPU, per 1,000 operations and as "
         f"a share of one core per client process ('*': >= {SATURATED_CORE_FRACTION:.0%}, "
         "the client may be the limit); others: cores kept busy by anything else on the "
         f"machine during the run ('!': >= {OTHER_LOAD_WARNING_CORES:g}, the figures are "
         "skewed by it)."),
    ]
    if report.get("redis_benchmark"):
        lines += ["", "redis-benchmark cross-check of setp16 (SET, -c 64 -P 16):"]
        rows = [["system", "requests/s", "p50 ms", "p99 ms"]]
        checks = [(f"{system} (round {k})" if several else system, r)
                  for k, one in enumerate(rounds, 1)
                  for system, r in one["redis_benchmark"].items()]
        for system, r in checks:
            if "error" in r:
                rows.append([system, "failed", "", ""])
                continue
            rows.append([system, f"{r.get('rps', 0):,.0f}", _fmt(r.get("p50_latency_ms")),
                         _fmt(r.get("p99_latency_ms"))])
        lines += ["  " + line for line in _aligned(rows)]
        first = next((r for r in report["redis_benchmark"].values() if "command" in r), None)
        if first:
            lines.append(f"  e.g. {first['command']}")
        if "replikv" in report["redis_benchmark"]:
            lines.append("  (replikv's defaults apply to redis-benchmark's connections: "
                         "w=majority)")
    lines += ["", format_ratios(report["ratios"])]
    notes = report.get("notes") or []
    if notes:
        lines += ["", "notes:", *(f"  - {n}" for n in notes)]
    return "\n".join(lines)


NOTES = [
    ("PySyncObj has no linearizable read: its get64 is served from the leader's local dict "
     "(no ReadIndex, no lease), so it is not the same guarantee as replikv's or etcd's."),
    ("PySyncObj's journalFile is written (mmap) before a write is acknowledged but never "
     "flushed or fsynced (no option for it in pysyncobj); replikv, etcd and redis-always fsync "
     "before acknowledging."),
    ("Redis replicates asynchronously: its acknowledgement waits for the primary's own AOF "
     "write (fsync with 'always'), not for the replicas."),
    ("etcd is driven through its HTTP/JSON gateway (grpc-gateway in the etcd process): JSON "
     "and base64 and an in-process gRPC hop cost it CPU that a native gRPC client would not."),
]


# ---- the whole run -----------------------------------------------------------------------------


def run_round(settings: Settings, root: Path, order: Sequence[str], log: Callable[[str], None]
              ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every system in `order`, one at a time: its results, and the redis-benchmark
    cross-checks. Each system's data lives under `root` and is gone when it stops."""
    systems: dict[str, dict[str, Any]] = {}
    cross_check: dict[str, dict[str, Any]] = {}
    for name in order:
        entry: dict[str, Any] = {"workloads": {}}
        systems[name] = entry
        data = root / name
        log(f"{name}: starting a 3-process cluster in {data}")
        try:
            compiled_dir = Path(settings.compiled_dir) if settings.compiled_dir else None
            with start_system(name, root, log, compiled_dir) as target:
                entry.update(version=target.version, config=target.config,
                             notes=target.notes,
                             address=f"{target.address[0]}:{target.address[1]}")
                log(f"{name}: {target.version}; load goes to {entry['address']}; "
                    f"preloading {settings.keys:,} keys")
                preload_target(target, settings.keys, settings.value_bytes)
                for workload in settings.workloads:
                    why_not = supports(target.protocol, workload)
                    if why_not:
                        entry["workloads"][workload] = {"skipped": why_not}
                        continue
                    entry["workloads"][workload] = run_workload(target, workload, settings,
                                                                log)
                if (settings.redis_benchmark_requests
                        and name in ("replikv", "redis-always")):
                    if settings.wait_quiet_s > 0:
                        wait_for_quiet(target.pids, settings.wait_quiet_s, log, name)
                    log(f"{name}: redis-benchmark -t set -P 16, "
                        f"{settings.redis_benchmark_requests:,} requests")
                    try:
                        cross_check[name] = redis_benchmark_setp16(
                            target.address, settings.redis_benchmark_requests,
                            settings.keys, settings.value_bytes)
                    except CompareError as e:
                        cross_check[name] = {"error": str(e)}
        except (CompareError, BenchError) as e:
            entry["error"] = str(e)
            log(f"{name}: FAILED: {e}")
        finally:
            shutil.rmtree(data, ignore_errors=True)  # the next round starts afresh
    # The report lists the systems in the order given, whatever order they ran in.
    return ({name: systems[name] for name in settings.systems if name in systems},
            {name: cross_check[name] for name in settings.systems if name in cross_check})


def run_compare(settings: Settings, log: Callable[[str], None], command: str) -> dict[str, Any]:
    """The whole run: `settings.rounds` rounds (system_order) and their report. With one round
    the report is that round's; with more, "rounds" holds each and "ratios" their medians
    (combine_rounds), while "systems" and "redis_benchmark" are the first round's."""
    root = Path(tempfile.mkdtemp(prefix="replikv-compare-"))
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(1, settings.rounds + 1):
            order = system_order(settings.systems, number)
            if settings.rounds > 1:
                log(f"round {number} of {settings.rounds}: {', '.join(order)}")
            # The floor of set1, measured again each round: the disk drifts too.
            fsync_ms, rtt_ms = measure_fsync_ms(root), measure_loopback_rtt_ms()
            systems, cross_check = run_round(settings, root, order, log)
            rounds.append({"order": order, "systems": systems, "redis_benchmark": cross_check,
                           "fsync_ms_p50": fsync_ms, "loopback_rtt_ms_p50": rtt_ms,
                           "ratios": compute_ratios(systems, fsync_ms + rtt_ms)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first = rounds[0]
    return {
        "command": command,
        "settings": asdict(settings),
        "machine": machine_description(),
        "fsync_ms_p50": first["fsync_ms_p50"],
        "loopback_rtt_ms_p50": first["loopback_rtt_ms_p50"],
        "versions": {name: r.get("version") for name, r in first["systems"].items()},
        "systems": first["systems"],
        "redis_benchmark": first["redis_benchmark"],
        "rounds": rounds,
        "ratios": (combine_rounds([one["ratios"] for one in rounds]) if len(rounds) > 1
                   else first["ratios"]),
        "notes": NOTES,
    }


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"no {what} given")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a {what.removesuffix('s')} is named twice")
    return names


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    """The run's settings (they go into the JSON report as they are) and the other options."""
    parser = argparse.ArgumentParser(
        description="replikv against etcd, Redis and PySyncObj, the same workloads, this "
                    "machine.", epilog="See the module docstring for what each system runs.")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS,
                        help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--workloads", default=",".join(COMPARE_WORKLOADS),
                        help=f"comma-separated, from {', '.join(COMPARE_WORKLOADS)}")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--redis-benchmark-requests", type=int, default=200_000,
                        help="requests per redis-benchmark cross-check run; 0: skip it")
    parser.add_argument("--wait-quiet-s", type=float, default=60.0,
                        help="before each workload wait up to this long for other processes "
                             "to leave the CPUs (a shared machine); 0: don't wait")
    parser.add_argument("--compiled-dir", type=Path, default=DEFAULT_COMPILED_DIR,
                        help="replikv-compiled's build (benchmarks/compiled.py build --out DIR)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every system this many times over, in alternating order, "
                             "and judge the targets by the median ratios (1-9)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.duration_s <= 0:
        parser.error("--duration-s must be positive")
    if not 1 <= args.rounds <= 9:
        parser.error("--rounds: expected 1 to 9")
    try:
        settings = Settings(
            systems=parse_list(args.systems, SYSTEMS, "systems"),
            workloads=parse_list(args.workloads, COMPARE_WORKLOADS, "workloads"),
            duration_s=args.duration_s, client_processes=max(1, args.client_processes),
            redis_benchmark_requests=max(0, args.redis_benchmark_requests),
            wait_quiet_s=max(0.0, args.wait_quiet_s),
            compiled_dir=str(args.compiled_dir.resolve()), rounds=args.rounds)
    except ValueError as e:
        parser.error(str(e))
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)

    def log(text: str) -> None:
        print(f"compare: {text}", file=sys.stderr, flush=True)

    def on_sigterm(*_: Any) -> None:
        raise KeyboardInterrupt  # unwinds through every `finally`, which stops the servers

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    command = "bash benchmarks/compare.sh " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        report = run_compare(settings, log, command)
    except KeyboardInterrupt:
        log("interrupted; every server and client process was stopped")
        return 130
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_report(report), flush=True)
    return 1 if any("error" in r for one in report["rounds"]
                    for r in one["systems"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
