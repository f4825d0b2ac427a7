"""`replikv bench`: the standard workloads against a 3-node cluster, with latency percentiles,
throughput and each node's CPU and memory cost.

Without `--cluster` it starts its own cluster (three `python -m replikv node` processes on free
loopback ports, data in a fresh temp dir) and stops it at the end, also on Ctrl-C or an error;
each node asks the kernel to kill it should this process die (PR_SET_PDEATHSIG).

The clients must not be what is measured, so they speak RESP directly: asyncio protocols
(uvloop where installed) that send each batch from the callback that received the last reply
of the one before (LoadConnection), commands encoded by hand, replies parsed by hiredis.
Connections are spread over worker processes (`--client-processes`), each with its own event
loop; the table shows the clients' own CPU per 1,000 operations, so a saturated client is
visible. Every connection goes to the leader (found with REPLIKV TOPOLOGY): writes must reach
it, and linearizable reads are served there without a forwarding hop. Each connection sets its
write concern and read consistency with REPLIKV WRITECONCERN / CONSISTENCY first.

A workload runs for `--duration-s`; each client issues one command (or `pipeline` commands in
one send) and waits for the replies before the next. An operation's latency runs from the send
of its batch to the arrival of its reply. Node CPU comes from /proc/<pid>/stat (utime + stime)
before and after a workload, peak RSS from VmHWM (the process's high-water mark so far), both
only for nodes whose process is on this machine.

Beside the single-client SET it prints the floor that latency cannot beat: one 4 KiB append +
fsync on the data dir's disk plus one TCP loopback round trip.

The pure parts (workload parsing, percentiles, CPU arithmetic, the table) have no I/O and are
tested in tests/unit/test_bench.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from replikv.invariants import InvariantViolation
from replikv.local_cluster import (
    NODE_LAUNCHER,
    ClusterError,
    free_ports,
    stop_process_groups,
)

HOST = "127.0.0.1"
NODE_IDS = ("n1", "n2", "n3")
CLK_TCK = os.sysconf("SC_CLK_TCK")

READY_TIMEOUT_S = 20.0
LEADER_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05
CONNECT_TIMEOUT_S = 5.0
# A set-up reply, or the replies still due once a workload's time is up: a stuck cluster ends
# the run instead of hanging.
REPLY_TIMEOUT_S = 30.0
WORKER_START_TIMEOUT_S = 30.0
PROGRESS_INTERVAL_S = 0.5
READ_CHUNK_BYTES = 65536
PRELOAD_KEYS_PER_MSET = 500
PRELOAD_PIPELINE_DEPTH = 8
MSET_KEYS = 10
PREBUILT_KEYS_MAX = 1_000_000  # encoded keys kept ready (about 70 MB at the most)
MIX_READ_FRACTION = 0.9
FSYNC_SAMPLES = 200
FSYNC_APPEND_BYTES = 4096
LOOPBACK_SAMPLES = 1000
LOOPBACK_MESSAGE_BYTES = 64



class BenchError(RuntimeError):
    """The cluster did not do what the benchmark needs (no leader, a node died, no reply)."""


# ---- workloads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    kind: str  # "set", "get", "mix" (90% GET, 10% SET) or "mset"
    clients: int
    pipeline: int = 1  # commands per send

    @property
    def reads(self) -> bool:
        return self.kind in ("get", "mix")


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("set1", "set", 1),
    Workload("set64", "set", 64),
    Workload("set256", "set", 256),
    Workload("setp16", "set", 64, pipeline=16),
    Workload("get64", "get", 64),
    Workload("mix90", "mix", 64),
    Workload("mset10", "mset", 64),
)}
DEFAULT_WORKLOADS = ",".join(WORKLOADS)


def parse_workloads(text: str) -> list[Workload]:
    """"set1,get64" -> the named workloads in that order. Raises ValueError on an unknown name,
    a repeated one, or none at all."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("no workloads given")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from "
                         f"{DEFAULT_WORKLOADS}")
    if len(set(names)) != len(names):
        raise ValueError(f"a workload is named twice in {text!r}")
    return [WORKLOADS[n] for n in names]


def split_clients(clients: int, processes: int) -> list[int]:
    """Connections per worker process: as even as possible, no worker without any."""
    processes = max(1, min(processes, clients))
    base, extra = divmod(clients, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def encode_command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


def command_maker(kind: str, keys: int, value: bytes, rng: random.Random) -> Callable[[], bytes]:
    """A function returning one encoded command of the workload, on a key random over `keys`."""
    value_part = b"$%d\r\n%b\r\n" % (len(value), value)
    randrange, rand = rng.randrange, rng.random

    def encoded_key(i: int) -> bytes:
        key = b"bench:%d" % i
        return b"$%d\r\n%b\r\n" % (len(key), key)

    if keys <= PREBUILT_KEYS_MAX:  # the usual case: each key's encoding built once
        key_parts = [encoded_key(i) for i in range(keys)]

        def key_part() -> bytes:
            return key_parts[randrange(keys)]
    else:
        def key_part() -> bytes:
            return encoded_key(randrange(keys))

    def set_command() -> bytes:
        return b"*3\r\n$3\r\nSET\r\n" + key_part() + value_part

    def get_command() -> bytes:
        return b"*2\r\n$3\r\nGET\r\n" + key_part()

    def mix_command() -> bytes:
        return get_command() if rand() < MIX_READ_FRACTION else set_command()

    def mset_command() -> bytes:
        return (b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * MSET_KEYS)
                + b"".join(key_part() + value_part for _ in range(MSET_KEYS)))

    makers = {"set": set_command, "get": get_command, "mix": mix_command, "mset": mset_command}
    return makers[kind]


# ---- statistics --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values sorted ascending (fraction 0.99 for p99); 0.0 if
    there are none."""
    if not sorted_values:
        return 0.0
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not within 0..1")
    # round() first: 0.99 * 100 is 99.00000000000001 in floating point, and must be rank 99.
    rank = max(1, math.ceil(round(fraction * len(sorted_values), 9)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary_ms(latencies_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    return {name: percentile(ordered, q) / 1e6
            for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))}


def parse_proc_stat_cpu_s(stat_text: str, clk_tck: int = CLK_TCK) -> float:
    """utime + stime in seconds from the text of /proc/<pid>/stat (fields 14 and 15 of
    proc(5)). The command name in field 2 may hold spaces and parentheses, so fields are
    counted from its closing parenthesis."""
    fields = stat_text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / clk_tck


def parse_vm_hwm_bytes(status_text: str) -> int | None:
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_s_per_1k_ops(cpu_before_s: float, cpu_after_s: float, ops: int) -> float | None:
    """CPU seconds spent per 1,000 operations; None without operations."""
    if ops <= 0:
        return None
    if cpu_after_s < cpu_before_s:
        raise ValueError("CPU time went backwards (a different process?)")
    return (cpu_after_s - cpu_before_s) * 1000.0 / ops


# ---- results and the table ---------------------------------------------------------------------


@dataclass
class NodeCost:
    cpu_s_per_1k_ops: float | None = None
    peak_rss_bytes: int | None = None
    leader: bool = False


@dataclass
class WorkloadResult:
    name: str
    clients: int
    pipeline: int
    client_processes: int
    ops: int
    errors: int
    duration_s: float
    ops_per_s: float
    latency_ms: dict[str, float]
    nodes: dict[str, NodeCost] = field(default_factory=dict)
    client_cpu_s_per_1k_ops: float | None = None
    term_before: int | None = None
    term_after: int | None = None
    first_error: str | None = None
    # Elections started by any member during the workload (INFO stats elections_started: a
    # candidate asking for votes; a PreVote round that went no further is not one); None if a
    # member could not be asked.
    elections: int | None = None


@dataclass
class Floor:
    fsync_4k_append_ms_p50: float
    loopback_rtt_ms_p50: float
    fsync_dir: str

    @property
    def floor_ms(self) -> float:
        return self.fsync_4k_append_ms_p50 + self.loopback_rtt_ms_p50


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(results: Sequence[WorkloadResult], node_ids: Sequence[str]) -> str:
    """The results as aligned text, one row per workload; CPU is seconds per 1,000 operations,
    RSS the node's peak so far in MiB; '*' marks the leader."""
    header = ["workload", "clients", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"]
    header += [f"cpu {n}" for n in node_ids] + ["cpu client"]
    header += [f"rss {n} MiB" for n in node_ids]
    rows = []
    for r in results:
        clients = f"{r.clients}" + (f"x{r.pipeline}" if r.pipeline > 1 else "")
        row = [r.name, clients, f"{r.ops_per_s:,.0f}", _fmt(r.latency_ms["p50"]),
               _fmt(r.latency_ms["p99"]), _fmt(r.latency_ms["p999"]), f"{r.errors}"]
        for n in node_ids:
            cost = r.nodes.get(n, NodeCost())
            row.append(_fmt(cost.cpu_s_per_1k_ops, 3) + ("*" if cost.leader else ""))
        row.append(_fmt(r.client_cpu_s_per_1k_ops, 3))
        for n in node_ids:
            rss = r.nodes.get(n, NodeCost()).peak_rss_bytes
            row.append("-" if rss is None else f"{rss / 2**20:,.0f}")
        rows.append(row)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_elections(results: Sequence[WorkloadResult]) -> str:
    """One line: were there elections under load (none is the goal at default settings)?"""
    changed = [r.name for r in results if r.term_before is not None
               and r.term_after is not None and r.term_after != r.term_before]
    started = {r.name: r.elections for r in results if r.elections}
    unknown = [r.name for r in results if r.elections is None]
    if not changed and not started:
        return ("elections: none started during any workload, the leader's term unchanged"
                + (f" (not known for {', '.join(unknown)})" if unknown else ""))
    parts = [f"{name} {n}" for name, n in started.items()]
    text = "warning: elections started during " + (", ".join(parts) or "-")
    if changed:
        text += f"; the leader's term changed during {', '.join(changed)}"
    return text


def format_floor(floor: Floor, set1: WorkloadResult | None) -> str:
    text = (f"floor for one client's SET: {floor.floor_ms:.3f} ms = 4 KiB append+fsync "
            f"{floor.fsync_4k_append_ms_p50:.3f} ms (median of {FSYNC_SAMPLES}, in "
            f"{floor.fsync_dir}) + TCP loopback round trip {floor.loopback_rtt_ms_p50:.3f} ms "
            f"(median of {LOOPBACK_SAMPLES})")
    if set1 is not None and floor.floor_ms > 0:
        p50 = set1.latency_ms["p50"]
        text += f"; set1 p50 {p50:.3f} ms = {p50 / floor.floor_ms:.2f}x the floor"
    return text


# ---- the floor: disk and loopback --------------------------------------------------------------


def measure_fsync_ms(directory: Path, samples: int = FSYNC_SAMPLES) -> float:
    """Median time of appending 4 KiB to a file in `directory` and fsyncing it."""
    block = os.urandom(FSYNC_APPEND_BYTES)
    fd, path = tempfile.mkstemp(prefix="bench-fsync-", dir=directory)
    try:
        os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            times = []
            for _ in range(samples):
                start = time.perf_counter_ns()
                os.write(fd, block)
                os.fsync(fd)
                times.append(time.perf_counter_ns() - start)
        finally:
            os.close(fd)
    finally:
        os.unlink(path)
    return statistics.median(times) / 1e6


_ECHO_SERVER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
server.settimeout(10.0)
conn, _ = server.accept()
conn.settimeout(30.0)
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := conn.recv(4096):
    conn.sendall(data)
"""


def measure_loopback_rtt_ms(samples: int = LOOPBACK_SAMPLES) -> float:
    """Median round trip of a small message to a TCP echo server on loopback. The server is
    another process, as a node is: between two threads of one process the GIL decides who
    runs, which measured anywhere from 8 to 120 us here."""
    message = b"x" * LOOPBACK_MESSAGE_BYTES
    echo = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        port = int(echo.stdout.readline())  # type: ignore[union-attr]
        times = []
        with socket.create_connection((HOST, port), timeout=5.0) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(samples):
                start = time.perf_counter_ns()
                client.sendall(message)
                got = 0
                while got < len(message):
                    chunk = client.recv(4096)
                    if not chunk:
                        raise BenchError("loopback echo closed early")
                    got += len(chunk)
                times.append(time.perf_counter_ns() - start)
    except (OSError, ValueError) as e:
        raise BenchError(f"could not measure the loopback round trip: {e}") from None
    finally:
        echo.kill()
        echo.wait()
    return statistics.median(times) / 1e6


# ---- talking to nodes (blocking, outside the measured runs) ------------------------------------


def _require_hiredis() -> Any:
    try:
        import hiredis
    except ImportError:
        raise BenchError("replikv bench parses replies with hiredis, one of replikv's "
                         "dependencies, which is not installed here: pip install hiredis "
                         "(or run scripts/install.sh again)") from None
    return hiredis


def _connect(address: tuple[str, int], timeout_s: float) -> socket.socket:
    """A blocking connection to a node's client port: TLS when REPLIKV_TLS_CA_CERT is set."""
    from replikv.client.credentials import env_tls_context

    context = env_tls_context()
    sock = socket.create_connection(address, timeout=timeout_s)
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock)
    except OSError:
        sock.close()
        raise


def auth_commands() -> tuple[tuple[bytes, ...], ...]:
    """AUTH with REPLIKV_PASSWORD, for a cluster with a password (none without it)."""
    from replikv.client.credentials import env_password

    password = env_password()
    return ((b"AUTH", password.encode()),) if password else ()


def _auth_reply_check(reply: Any, address: tuple[str, int]) -> None:
    hiredis = _require_hiredis()
    if isinstance(reply, hiredis.ReplyError):
        from replikv.client.errors import auth_problem

        raise BenchError(f"{address[0]}:{address[1]}: {auth_problem(str(reply))}")


def call(address: tuple[str, int], *args: bytes | str, timeout_s: float = 5.0) -> Any:
    """One command on a fresh connection (authenticated first with REPLIKV_PASSWORD if it is
    set); an error reply raises BenchError."""
    hiredis = _require_hiredis()
    reader = hiredis.Reader()
    argv = [a if isinstance(a, bytes) else a.encode() for a in args]
    auth = auth_commands()
    with _connect(address, timeout_s) as s:
        s.sendall(b"".join(encode_command(*c) for c in auth) + encode_command(*argv))
        replies: list[Any] = []
        try:
            while len(replies) < len(auth) + 1:
                while (reply := reader.gets()) is False:
                    chunk = s.recv(READ_CHUNK_BYTES)
                    if not chunk:
                        raise BenchError(f"{address} closed the connection")
                    reader.feed(chunk)
                replies.append(reply)
        except hiredis.ProtocolError as e:  # it answered, but not in RESP
            raise BenchError(f"{address[0]}:{address[1]} is not a replikv client port ({e}); "
                             "give the nodes' client ports, such as 7001") from None
    for answer in replies[:-1]:
        _auth_reply_check(answer, address)
    if isinstance(reply, hiredis.ReplyError):
        if str(reply).startswith("NOAUTH"):
            _auth_reply_check(reply, address)
        raise BenchError(f"{args[0]!r} on {address[0]}:{address[1]}: {reply}")
    return reply


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"expected HOST:PORT (a node's client address), got {text!r}")
    return host, int(port)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(member: Any) -> dict[str, Any]:
    pairs = member.items() if isinstance(member, dict) else zip(member[::2], member[1::2])
    return {_text(k): (_text(v) if isinstance(v, bytes) else v) for k, v in pairs}


def info(address: tuple[str, int], section: str) -> dict[str, str]:
    out = {}
    for line in _text(call(address, "INFO", section)).splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value
    return out


@dataclass
class Member:
    id: str
    address: tuple[str, int]
    pid: int | None = None  # set when the process is on this machine

    def cpu_s(self) -> float | None:
        return self._from_proc("stat", parse_proc_stat_cpu_s)

    def peak_rss_bytes(self) -> int | None:
        return self._from_proc("status", parse_vm_hwm_bytes)

    def _from_proc(self, name: str, parse: Callable[[str], Any]) -> Any:
        """parse(/proc/<pid>/<name>), or None for a process not here (or gone)."""
        if self.pid is None:
            return None
        try:
            return parse(Path(f"/proc/{self.pid}/{name}").read_text())
        except OSError:
            return None


def discover(addresses: Sequence[tuple[str, int]]) -> tuple[list[Member], str]:
    """The members and the leader's id, once some node names a leader with a client address.
    A member's pid is kept if its INFO process_id is a process on this machine listening on a
    loopback address."""
    deadline = time.monotonic() + LEADER_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for address in addresses:
            try:
                members = [_fields(m) for m in call(address, "REPLIKV", "TOPOLOGY")]
            except (OSError, BenchError) as e:
                last_error = e
                continue
            leader = next((m for m in members if m.get("role") == "leader" and m.get("client")),
                          None)
            if leader is None:
                continue
            if not leader.get("self"):
                # The leader knows every member's client address; a follower only those of
                # the peers it has talked to.
                with contextlib.suppress(OSError, BenchError):
                    members = [_fields(m) for m in call(parse_address(leader["client"]),
                                                        "REPLIKV", "TOPOLOGY")]
            known = {m["id"]: parse_address(m["client"]) for m in members if m.get("client")}
            for given in addresses:  # members whose address only the caller knows
                with contextlib.suppress(OSError, BenchError, KeyError):
                    known.setdefault(info(given, "server")["node_id"], given)
            out = []
            for member_id in sorted(known):
                member = Member(member_id, known[member_id])
                with contextlib.suppress(OSError, BenchError, ValueError, KeyError):
                    pid = int(info(member.address, "server")["process_id"])
                    if member.address[0] in ("127.0.0.1", "localhost", "::1") and \
                            Path(f"/proc/{pid}/stat").exists():
                        member.pid = pid
                out.append(member)
            return out, leader["id"]
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(f"no leader found within {LEADER_TIMEOUT_S:.0f} s"
                     + (f" (last error: {last_error})" if last_error else ""))


def elections_started(members: Sequence[Member]) -> int | None:
    """Elections the members have started since they came up (INFO stats elections_started),
    summed; None if one of them does not answer."""
    total = 0
    for m in members:
        try:
            total += int(info(m.address, "stats")["elections_started"])
        except (OSError, BenchError, ValueError, KeyError):
            return None
    return total


def elections_between(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


def leader_term(leader: Member) -> int | None:
    with contextlib.suppress(OSError, BenchError, ValueError, KeyError):
        return int(info(leader.address, "replication")["term"])
    return None


def preload(leader: Member, keys: int, value: bytes) -> None:
    """Every key of the key space written once (pipelined MSETs), so reads find values."""
    hiredis = _require_hiredis()
    reader = hiredis.Reader()
    commands = [encode_command(*c) for c in auth_commands()]
    for first in range(0, keys, PRELOAD_KEYS_PER_MSET):
        argv = [b"MSET"]
        for i in range(first, min(keys, first + PRELOAD_KEYS_PER_MSET)):
            argv += [b"bench:%d" % i, value]
        commands.append(encode_command(*argv))
    with _connect(leader.address, REPLY_TIMEOUT_S) as s:
        for start in range(0, len(commands), PRELOAD_PIPELINE_DEPTH):
            batch = commands[start:start + PRELOAD_PIPELINE_DEPTH]
            s.sendall(b"".join(batch))
            for _ in batch:
                while (reply := reader.gets()) is False:
                    chunk = s.recv(READ_CHUNK_BYTES)
                    if not chunk:
                        raise BenchError("the leader closed the connection while preloading")
                    reader.feed(chunk)
                if isinstance(reply, hiredis.ReplyError):
                    raise BenchError(f"preloading failed: {reply}")


# ---- the client workers ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerPlan:
    address: tuple[str, int]
    kind: str
    connections: int
    pipeline: int
    keys: int
    value_bytes: int
    setup: tuple[tuple[bytes, ...], ...]  # commands each connection sends first
    seed: int


@dataclass
class WorkerReport:
    ops: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_ns: array = field(default_factory=lambda: array("q"))
    cpu_s: float = 0.0
    elapsed_s: float = 0.0


class LoadConnection(asyncio.Protocol):
    """One load connection, driven from the event loop's callbacks: when the last reply of a
    batch arrives, the next batch goes out from inside data_received. A coroutine that awaited
    each reply (asyncio streams, a timeout per read) cost the client about 20 us of CPU per
    operation, a fifth of the machine under set64, taken from the nodes it measures.

    `reader` is a hiredis.Reader-like parser (feed, gets); `incomplete` is what its gets()
    returns until a whole reply is in (False for hiredis, None for HttpResponseReader);
    `error_of(reply)` is None for a success, else the error's text."""

    def __init__(self, reader: Any, incomplete: Any,
                 error_of: Callable[[Any], str | None]) -> None:
        self._reader = reader
        self._incomplete = incomplete
        self.error_of = error_of
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._expect = 0
        self._replies: list[Any] = []
        self._loading = False
        self._make: Callable[[], bytes] = bytes
        self._pipeline = 1
        self._deadline = 0.0
        self._report = WorkerReport()
        self._start = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(BenchError(
                f"a server closed a client connection{f' ({exc})' if exc else ''}"))

    def _arm(self) -> asyncio.Future[Any]:
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def call(self, data: bytes, replies: int) -> asyncio.Future[list[Any]]:
        """Send `data` and resolve with the next `replies` replies (set-up, not measured)."""
        assert self._transport is not None and not self._loading
        waiter = self._arm()
        self._replies, self._expect = [], replies
        self._transport.write(data)
        return waiter

    def load(self, make: Callable[[], bytes], pipeline: int, deadline: float,
             report: WorkerReport) -> asyncio.Future[None]:
        """Send batches of `pipeline` requests from `make()`, each once the previous batch is
        answered, until time.monotonic() passes `deadline`; count into `report`. Resolves
        when the last batch is answered."""
        assert self._transport is not None
        waiter = self._arm()
        self._loading, self._make, self._pipeline = True, make, pipeline
        self._deadline, self._report = deadline, report
        self._send_batch()
        return waiter

    def _send_batch(self) -> None:
        make = self._make
        batch = b"".join([make() for _ in range(self._pipeline)])
        self._expect = self._pipeline
        self._start = time.perf_counter_ns()
        assert self._transport is not None
        self._transport.write(batch)

    def data_received(self, data: bytes) -> None:
        reader, incomplete = self._reader, self._incomplete
        try:
            reader.feed(data)
            while self._expect and (reply := reader.gets()) is not incomplete:
                self._expect -= 1
                if not self._loading:
                    self._replies.append(reply)
                    continue
                report = self._report
                if (error := self.error_of(reply)) is None:
                    report.latencies_ns.append(time.perf_counter_ns() - self._start)
                    report.ops += 1
                else:
                    report.errors += 1
                    report.first_error = report.first_error or error
        except Exception as e:  # noqa: BLE001 - a reply this client cannot read ends the run
            self._fail(BenchError(f"unreadable reply: {e}"))
            return
        if self._expect or self._waiter is None or self._waiter.done():
            return
        if not self._loading:
            self._waiter.set_result(self._replies)
        elif time.monotonic() < self._deadline:
            self._send_batch()
        else:
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def resp_error_text(reply: Any) -> str | None:
    import hiredis
    return str(reply) if isinstance(reply, hiredis.ReplyError) else None


async def run_load_connection(address: tuple[str, int], protocol: LoadConnection,
                              setup: Sequence[bytes], make: Callable[[], bytes], pipeline: int,
                              go: asyncio.Event, deadline: list[float], report: WorkerReport,
                              connected: list[int], tls: ssl.SSLContext | None = None) -> None:
    """Connect `protocol` to `address`, send each of `setup` (one request each; an error reply
    fails the run), count in `connected`, wait for `go`, then load until `deadline[0]`. Replies
    still missing REPLY_TIMEOUT_S after that (a stuck cluster) end the run with BenchError."""
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.create_connection(lambda: protocol, *address, ssl=tls),
                           CONNECT_TIMEOUT_S)
    try:
        for request in setup:
            [answer] = await asyncio.wait_for(protocol.call(request, 1), REPLY_TIMEOUT_S)
            if (error := protocol.error_of(answer)) is not None:
                raise BenchError(f"{request!r}: {error}")
        connected[0] += 1
        await go.wait()
        remaining = deadline[0] - time.monotonic()
        try:
            await asyncio.wait_for(protocol.load(make, pipeline, deadline[0], report),
                                   max(0.0, remaining) + REPLY_TIMEOUT_S)
        except TimeoutError:
            raise BenchError(f"replies still missing {REPLY_TIMEOUT_S:g} s after the workload's "
                             "end") from None
    finally:
        protocol.close()


async def _connection(plan: WorkerPlan, rng: random.Random, go: asyncio.Event,
                      deadline: list[float], report: WorkerReport, connected: list[int]) -> None:
    import hiredis

    protocol = LoadConnection(hiredis.Reader(), False, resp_error_text)
    make = command_maker(plan.kind, plan.keys, b"v" * plan.value_bytes, rng)
    from replikv.client.credentials import env_tls_context

    await run_load_connection(plan.address, protocol,
                              [encode_command(*argv) for argv in plan.setup], make,
                              plan.pipeline, go, deadline, report, connected,
                              tls=env_tls_context())


async def drive_connections(count: int, connection: Callable[..., Any], seed: int,
                            pipe: Any) -> WorkerReport:
    """A worker's run: `count` tasks of `connection(rng, go, deadline, report, connected)` (each
    sets itself up, counts itself in `connected`, waits for `go`, then loads until
    `deadline[0]`); tells the parent "ready" once all are set up, starts them on the duration
    it sends back, reports progress, and returns the filled-in report."""
    report = WorkerReport()
    go, deadline, connected = asyncio.Event(), [0.0], [0]
    rng = random.Random(seed)
    tasks = [asyncio.create_task(connection(random.Random(rng.random()), go, deadline, report,
                                            connected))
             for _ in range(count)]
    loop = asyncio.get_running_loop()
    setup_deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while connected[0] < count:
        failed = [e for t in tasks if t.done() and (e := t.exception()) is not None]
        if failed:
            raise failed[0]
        if time.monotonic() > setup_deadline:
            raise BenchError("client connections could not be set up in time")
        await asyncio.sleep(0.01)
    pipe.send(("ready", None))
    duration_s = await loop.run_in_executor(None, pipe.recv)
    cpu_start = time.process_time()
    started = time.monotonic()
    deadline[0] = started + duration_s
    go.set()

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            pipe.send(("progress", report.ops))

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*tasks)
    finally:
        reporter.cancel()
    report.elapsed_s = time.monotonic() - started
    report.cpu_s = time.process_time() - cpu_start
    return report


def run_worker(main: Callable[[], Any], pipe: Any) -> None:
    """The body of a client worker process: run the coroutine `main()` returns (on uvloop where
    installed), then send the parent ("done", report) or ("error", text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        import uvloop
        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        pipe.send(("done", runner(main())))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        pipe.send(("error", f"{type(e).__name__}: {e}"))


def resp_worker(plan: WorkerPlan, pipe: Any) -> None:
    """A RESP client worker process (replikv, or anything that speaks RESP)."""
    run_worker(lambda: drive_connections(plan.connections, functools.partial(_connection, plan),
                                         plan.seed, pipe), pipe)


# ---- progress display --------------------------------------------------------------------------


class Progress:
    """One updating line on stderr per workload (a plain \r-rewritten line: cheap while it
    measures, unlike a redrawn rich view). When stderr is not a terminal only the final line
    of each workload is written."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled

    def update(self, name: str, elapsed_s: float, duration_s: float, ops: int) -> None:
        if not self.enabled or not self.stream.isatty():
            return
        rate = ops / elapsed_s if elapsed_s > 0 else 0.0
        self.stream.write(f"\r  {name:<8} {min(elapsed_s, duration_s):5.1f}/{duration_s:g} s  "
                          f"{ops:>10,} ops  {rate:>10,.0f} ops/s ")
        self.stream.flush()

    def done(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r" + text.ljust(70) + "\n")
            self.stream.flush()


# ---- one workload ------------------------------------------------------------------------------


@dataclass
class BenchSettings:
    workloads: list[Workload]
    duration_s: float
    keys: int
    value_bytes: int
    w: str
    read_consistency: str
    fsync: str | None  # None: a remote cluster's own setting
    replication: str | None
    client_processes: int
    seed: int = 1
    # Also run redis-benchmark (Debian's redis-tools) with this many requests per run; 0: no.
    redis_benchmark_requests: int = 0


def run_client_workers(workers: Sequence[tuple[Callable[..., None], Any]], duration_s: float, *,
                       before: Callable[[], Any] = lambda: None,
                       after: Callable[[], Any] = lambda: None,
                       progress: Callable[[float, int], None] = lambda _s, _o: None,
                       ) -> tuple[list[WorkerReport], Any, Any]:
    """Start one process per (target, plan) (each runs `target(plan, pipe)`, e.g.
    resp_worker), wait until all are set up, call `before()`, let them load for `duration_s`,
    collect their reports (calling `progress(elapsed_s, ops so far)` meanwhile), call
    `after()`. Returns (reports, before's result, after's result). Every process is joined
    (killed if need be) however this ends; a worker's failure or death raises BenchError."""
    ctx = multiprocessing.get_context("spawn")
    procs = []
    try:
        for target, plan in workers:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=target, args=(plan, child_end), daemon=True)
            proc.start()
            procs.append((proc, parent_end))
        for proc, pipe in procs:
            if not pipe.poll(WORKER_START_TIMEOUT_S):
                raise BenchError("a client worker did not start in time")
            kind, payload = pipe.recv()
            if kind != "ready":
                raise BenchError(f"a client worker failed: {payload}")
        before_result = before()
        started = time.monotonic()
        for _, pipe in procs:
            pipe.send(duration_s)
        reports: dict[int, WorkerReport] = {}
        ops_seen = [0] * len(procs)
        hard_deadline = started + duration_s + REPLY_TIMEOUT_S + 5.0
        while len(reports) < len(procs):
            if time.monotonic() > hard_deadline:
                raise BenchError("client workers did not finish in time")
            for i, (proc, pipe) in enumerate(procs):
                while i not in reports and pipe.poll():
                    kind, payload = pipe.recv()
                    if kind == "progress":
                        ops_seen[i] = payload
                    elif kind == "done":
                        reports[i] = payload
                        ops_seen[i] = payload.ops
                    else:
                        raise BenchError(f"a client worker failed: {payload}")
                if i not in reports and not proc.is_alive() and not pipe.poll():
                    raise BenchError(f"a client worker died (exit code {proc.exitcode})")
            progress(time.monotonic() - started, sum(ops_seen))
            time.sleep(0.05)
        after_result = after()
    finally:
        for proc, pipe in procs:
            proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
            pipe.close()
    return [reports[i] for i in range(len(procs))], before_result, after_result


def run_workload(workload: Workload, settings: BenchSettings, members: list[Member],
                 leader: Member, progress: Progress) -> WorkloadResult:
    setup = (*auth_commands(), (b"REPLIKV", b"WRITECONCERN", settings.w.encode()),
             (b"REPLIKV", b"CONSISTENCY", settings.read_consistency.encode()))
    shares = split_clients(workload.clients, settings.client_processes)
    plans = [(resp_worker, WorkerPlan(leader.address, workload.kind, share, workload.pipeline,
                                      settings.keys, settings.value_bytes, setup,
                                      seed=settings.seed * 1000 + i))
             for i, share in enumerate(shares)]

    def measure() -> tuple[int | None, int | None, dict[str, float | None]]:
        return (leader_term(leader), elections_started(members),
                {m.id: m.cpu_s() for m in members})

    reports_list, (term_before, elections_before, cpu_before), \
        (term_after, elections_after, cpu_after) = run_client_workers(
            plans, settings.duration_s, before=measure, after=measure,
            progress=lambda elapsed, ops: progress.update(workload.name, elapsed,
                                                          settings.duration_s, ops))
    reports = dict(enumerate(reports_list))
    elections = elections_between(elections_before, elections_after)

    all_latencies = array("q")
    for r in reports.values():
        all_latencies.extend(r.latencies_ns)
    ops = sum(r.ops for r in reports.values())
    elapsed = max(r.elapsed_s for r in reports.values())
    nodes = {}
    for m in members:
        before, after = cpu_before[m.id], cpu_after[m.id]
        cpu = cpu_s_per_1k_ops(before, after, ops) if before is not None and after is not None \
            else None
        nodes[m.id] = NodeCost(cpu, m.peak_rss_bytes(), m.id == leader.id)
    result = WorkloadResult(
        workload.name, workload.clients, workload.pipeline, len(shares), ops,
        sum(r.errors for r in reports.values()), round(elapsed, 3),
        ops / elapsed if elapsed > 0 else 0.0, latency_summary_ms(all_latencies), nodes,
        cpu_s_per_1k_ops(0.0, sum(r.cpu_s for r in reports.values()), ops),
        term_before, term_after,
        next((r.first_error for r in reports.values() if r.first_error), None), elections)
    progress.done(f"  {workload.name:<8} {result.ops_per_s:>10,.0f} ops/s  p50 "
                  f"{result.latency_ms['p50']:.2f} ms  p99 {result.latency_ms['p99']:.2f} ms")
    return result


# ---- a local cluster of our own ----------------------------------------------------------------


@dataclass
class LocalNodeProcess:
    id: str
    client_port: int
    peer_port: int
    admin_port: int
    log_path: Path
    proc: subprocess.Popen | None = None


@contextlib.contextmanager
def local_cluster(root: Path, *, fsync: str, replication: str,
                  env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """Three nodes on free loopback ports with data under `root`; yields their client
    addresses and stops them (SIGTERM, then SIGKILL after a grace period) however the block
    ends. `env`: the nodes' environment (default: ours)."""
    try:
        ports = free_ports(3 * len(NODE_IDS), HOST)
    except ClusterError as e:
        raise BenchError(str(e)) from None
    nodes = [LocalNodeProcess(node_id, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2],
                              log_path=root / f"{node_id}.log")
             for i, node_id in enumerate(NODE_IDS)]
    peers = ",".join(f"{n.id}={HOST}:{n.peer_port}" for n in nodes)
    try:
        for n in nodes:
            argv = [sys.executable, "-c", NODE_LAUNCHER, str(os.getpid()), "node", "--id", n.id,
                    "--data-dir", str(root / n.id), "--listen", f"{HOST}:{n.client_port}",
                    "--peer-listen", f"{HOST}:{n.peer_port}", "--peers", peers,
                    "--admin", f"{HOST}:{n.admin_port}", "--fsync", fsync,
                    "--replication", replication]
            with open(n.log_path, "ab") as log:
                # Own session: a terminal's Ctrl-C reaches only us, and we stop the nodes.
                n.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True,
                                          env=env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for n in nodes:
            proc = n.proc
            if proc is None:  # never: every node was started just above
                raise InvariantViolation(f"node {n.id} was not started")
            while True:
                if proc.poll() is not None:
                    tail = n.log_path.read_text(errors="replace")[-2000:]
                    raise BenchError(f"node {n.id} exited (status {proc.returncode}):\n{tail}")
                with contextlib.suppress(OSError, BenchError):
                    call((HOST, n.client_port), "PING", timeout_s=1.0)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"node {n.id} did not answer within {READY_TIMEOUT_S:.0f} s")
                time.sleep(POLL_INTERVAL_S)
        yield [f"{HOST}:{n.client_port}" for n in nodes]
    finally:
        stop_process_groups([n.proc for n in nodes if n.proc is not None])


# ---- the whole run -----------------------------------------------------------------------------


def machine_description() -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
            "python": platform.python_version(), "machine": platform.machine()}


def run_bench(settings: BenchSettings, cluster: str | None, *, progress: Progress,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Run every workload; returns the report as one JSON-ready dict."""
    _require_hiredis()
    if settings.redis_benchmark_requests:
        require_redis_benchmark()  # before the workloads, not after them
    root = Path(tempfile.mkdtemp(prefix="replikv-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            if cluster is None:
                log(f"starting a local 3-node cluster in {root} (fsync={settings.fsync}, "
                    f"replication={settings.replication})")
                addresses = stack.enter_context(local_cluster(
                    root, fsync=settings.fsync or "always",
                    replication=settings.replication or "passive"))
            else:
                addresses = [a for a in cluster.split(",") if a.strip()]
                if not addresses:
                    raise BenchError("--cluster: expected HOST:PORT,... (the nodes' client "
                                     "addresses)")
            members, leader_id = discover([parse_address(a) for a in addresses])
            leader = next(m for m in members if m.id == leader_id)
            log(f"leader {leader.id} at {leader.address[0]}:{leader.address[1]}; measuring the "
                f"floor (fsync in {root}, loopback)")
            floor = Floor(measure_fsync_ms(root), measure_loopback_rtt_ms(), str(root))
            if any(w.reads for w in settings.workloads):
                log(f"preloading {settings.keys:,} keys")
                preload(leader, settings.keys, b"v" * settings.value_bytes)
            results = [run_workload(w, settings, members, leader, progress)
                       for w in settings.workloads]
            redis_benchmark = []
            if settings.redis_benchmark_requests:
                log("running redis-benchmark against the leader")
                redis_benchmark = run_redis_benchmark(
                    leader.address, requests=settings.redis_benchmark_requests,
                    keys=settings.keys, value_bytes=settings.value_bytes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "settings": {
            "w": settings.w, "read_consistency": settings.read_consistency,
            "fsync": settings.fsync, "replication": settings.replication,
            "duration_s": settings.duration_s, "keys": settings.keys,
            "value_bytes": settings.value_bytes, "client_processes": settings.client_processes,
            "cluster": cluster or "local (started by replikv bench)", "leader": leader.id,
        },
        "machine": machine_description(),
        "node_ids": [m.id for m in members],
        "floor": {**asdict(floor), "floor_ms": floor.floor_ms},
        "workloads": [asdict(r) for r in results],
        "redis_benchmark": redis_benchmark,
    }


# ---- redis-benchmark ---------------------------------------------------------------------------

# (test, clients, pipeline): the issue's `redis-benchmark -t set,get -c 64 -d 100 -r 10000 [-P 16]`
REDIS_BENCHMARK_RUNS = (("set", 64, 1), ("get", 64, 1), ("set", 64, 16), ("get", 64, 16))


def parse_redis_benchmark_csv(text: str) -> list[dict[str, Any]]:
    """redis-benchmark --csv output (7.x: "test","rps","avg_latency_ms",...,"p50_latency_ms",
    "p99_latency_ms",...) as one dict per test, numbers as floats."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows or rows[0][:2] != ["test", "rps"]:
        raise BenchError(f"redis-benchmark printed no CSV table: {text[:200]!r}")
    header = rows[0]
    out = []
    for row in rows[1:]:
        record: dict[str, Any] = {"test": row[0]}
        for name, value in zip(header[1:], row[1:], strict=False):
            try:
                record[name] = float(value)
            except ValueError:
                record[name] = value
        out.append(record)
    return out


def require_redis_benchmark() -> str:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise BenchError("redis-benchmark is not installed: it comes with Debian's redis-tools "
                         "(./scripts/install.sh --test installs it)")
    return exe


def run_redis_benchmark(address: tuple[str, int], *, requests: int, keys: int,
                        value_bytes: int,
                        runs: Sequence[tuple[str, int, int]] = REDIS_BENCHMARK_RUNS,
                        ) -> list[dict[str, Any]]:
    """The issue's redis-benchmark runs, (test, clients, pipeline) each, against `address`, so
    anyone can reproduce the figures with a tool nobody here wrote. Each result names the exact
    command."""
    exe = require_redis_benchmark()
    out = []
    for test, clients, pipeline in runs:
        args = ["-h", address[0], "-p", str(address[1]), "-t", test, "-c", str(clients),
                "-d", str(value_bytes), "-r", str(keys), "-n", str(requests), "--csv"]
        if pipeline > 1:
            args += ["-P", str(pipeline)]
        # The password (REPLIKV_PASSWORD) goes on redis-benchmark's command line, which has no
        # other way to take it, but never into what is printed or recorded.
        password = [a for _, a in auth_commands()]
        secret = ["-a", password[0].decode()] if password else []
        from replikv.client.credentials import env_tls_files

        if (tls := env_tls_files()) is not None:
            ca, cert, key = tls
            args += ["--tls", "--cacert", ca, *(["--cert", cert, "--key", key] if cert and key
                                                else [])]
        try:
            done = subprocess.run([exe, *args, *secret], capture_output=True, text=True,
                                  check=False, timeout=max(60.0, requests / 100))
        except subprocess.TimeoutExpired:
            raise BenchError(f"redis-benchmark {' '.join(args)} did not finish") from None
        if done.returncode != 0:
            raise BenchError(f"redis-benchmark {' '.join(args)} failed: "
                             f"{(done.stderr or done.stdout)[-300:]}")
        for record in parse_redis_benchmark_csv(done.stdout):
            out.append({**record, "pipeline": pipeline, "clients": clients,
                        "command": "redis-benchmark " + " ".join(args)})
    return out


def format_redis_benchmark(runs: Sequence[dict[str, Any]]) -> str:
    lines = ["redis-benchmark (against the leader):",
             f"  {'test':<6} {'-P':>3} {'requests/s':>11} {'p50 ms':>7} {'p99 ms':>7}"]
    for r in runs:
        lines.append(f"  {r['test']:<6} {r['pipeline']:>3} {r.get('rps', 0):>11,.0f} "
                     f"{r.get('p50_latency_ms', 0):>7.2f} {r.get('p99_latency_ms', 0):>7.2f}")
    if runs:
        lines.append(f"  e.g. {runs[0]['command']}")
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    results = [WorkloadResult(**{**r, "nodes": {k: NodeCost(**v) for k, v in r["nodes"].items()}})
               for r in report["workloads"]]
    s, m = report["settings"], report["machine"]
    set1 = next((r for r in results if r.name == "set1"), None)
    floor = Floor(report["floor"]["fsync_4k_append_ms_p50"],
                  report["floor"]["loopback_rtt_ms_p50"], report["floor"]["fsync_dir"])
    lines = [
        (f"replikv bench: w={s['w']} reads={s['read_consistency']} fsync={s['fsync'] or '?'} "
        f"replication={s['replication'] or '?'} keys={s['keys']:,} value={s['value_bytes']} B "
        f"duration={s['duration_s']:g} s per workload, client processes "
        f"{s['client_processes']}, cluster: {s['cluster']}"),
        (f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
         f"Python {m['python']}"),
        "",
        format_table(results, report["node_ids"]),
        "",
        "cpu: CPU seconds per 1,000 operations (* the leader); rss: peak RSS (VmHWM) so far.",
        format_floor(floor, set1),
    ]
    lines.append(format_elections(results))
    for r in results:
        if r.errors:
            lines.append(f"{r.name}: {r.errors} error replies, the first: {r.first_error}")
    if report.get("redis_benchmark"):
        lines += ["", format_redis_benchmark(report["redis_benchmark"])]
    return "\n".join(lines)


def main(settings: BenchSettings, cluster: str | None, as_json: bool) -> None:
    """Run and print (the click command's body); Ctrl-C stops everything cleanly."""
    progress = Progress(sys.stderr, enabled=True)

    def log(text: str) -> None:
        print(f"replikv bench: {text}", file=sys.stderr, flush=True)

    report = run_bench(settings, cluster, progress=progress, log=log)
    print(json.dumps(report, indent=2) if as_json else format_report(report), flush=True)
