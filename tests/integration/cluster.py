"""A real replikv cluster for integration tests: N node processes on loopback ports.

Each node is `python -m replikv node ...` started with subprocess, so kill -9, SIGTERM,
SIGSTOP and restarts are the real thing. Its stdout and stderr go to per-node log files under
the test's tmp dir (appended across restarts, each start marked), which the conftest prints the
tail of when a test fails.

Three rules keep a failing or interrupted test from leaving processes behind: every process
started is remembered in a module-level registry, the fixtures kill whatever is still running
on teardown, and each node asks the kernel to SIGKILL it should the pytest process itself die
(PR_SET_PDEATHSIG, set by a tiny launcher before it execs the node).

Ports are picked below the kernel's ephemeral range, so that a client connection's local port
can never sit on a port a restarting node needs to listen on again.

Every wait here is bounded both in time and in iterations; a wait that runs out raises
`ClusterTimeout` with what it last saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from replikv import local_cluster
from replikv.local_cluster import NODE_LAUNCHER, SCRATCH_PORT_RANGE, free_ports
from replikv.tls import TlsFiles, client_context, make_local_ca

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():  # pragma: no cover - running from another environment
    PYTHON = sys.executable

HOST = "127.0.0.1"
# Ports for nodes come from here: below Linux's default ephemeral range (32768-60999).
PORT_RANGE = SCRATCH_PORT_RANGE

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LEADER_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
ADMIN_HTTP_TIMEOUT_S = 0.5


# Every process started by any Cluster in this pytest process, so teardown can be sure.
_ALL_PROCESSES: list[subprocess.Popen] = []
# Clusters in use right now; the conftest prints their logs when a test fails.
ACTIVE_CLUSTERS: list[Cluster] = []
# Numbers worth seeing on every run (the failover time); printed in pytest's summary.
MEASUREMENTS: list[str] = []


class ClusterTimeout(AssertionError):
    """A bounded wait ran out; the message says what was last seen."""


class NodeExited(AssertionError):
    """A node process ended while we were waiting for it; ends any wait at once."""


def client_without_retries(port: int, *, socket_timeout: float = 5.0,
                           **kwargs: Any) -> redis.Redis:
    """A redis-py client that never resends a command on its own.

    redis-py 8 by default retries a command three times after a timeout or a dropped
    connection; for a write that is a silent second attempt whose first one may have been
    applied, which would make 'this write was refused, so it is absent' unprovable.
    """
    kwargs.setdefault("socket_connect_timeout", min(socket_timeout, 2.0))
    return redis.Redis(host=HOST, port=port, socket_timeout=socket_timeout,
                       retry=Retry(NoBackoff(), 0), **kwargs)


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as RESP (a multibulk array of bulk strings), written out by hand here so the
    tests do not lean on replikv's own encoder."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def raw_command(port: int, *args: bytes | str | int, timeout_s: float = 5.0) -> Any:
    """Send one command on a fresh socket and return the parsed reply (hiredis; errors come
    back as hiredis.ReplyError values, not raised)."""
    reader = hiredis.Reader()
    with socket.create_connection((HOST, port), timeout=timeout_s) as s:
        s.sendall(encode_command(*args))
        for _ in range(100_000):
            reply = reader.gets()
            if reply is not False:
                return reply
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before a reply to {args!r}")
            reader.feed(chunk)
    raise AssertionError("reply never completed")


def pick_free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """`count` distinct ports that could be bound just now on HOST."""
    return free_ports(count, HOST, rng, PORT_RANGE)


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, what: str,
               interval_s: float = POLL_INTERVAL_S) -> Any:
    """Poll `predicate` until it returns something truthy; return that. Bounded in time and
    in iterations. Exceptions from the predicate count as 'not yet' and the last one is
    reported if the wait runs out."""
    deadline = time.monotonic() + timeout_s
    max_iterations = int(timeout_s / max(interval_s, 0.001)) + 10
    last: Any = None
    for _ in range(max_iterations):
        try:
            last = predicate()
            if last:
                return last
        except NodeExited:
            raise
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    raise ClusterTimeout(f"timed out after {timeout_s}s waiting for {what}; last saw {last!r}")


@dataclass
class Node:
    id: str
    client_port: int
    peer_port: int
    admin_port: int
    data_dir: Path
    stdout_path: Path
    stderr_path: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    starts: int = 0
    # Added to the environment of its next starts, e.g. {"PYTHONPATH": <an older replikv's
    # src>} to run another version (tests/integration/test_rolling_upgrade.py).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.id} was never started"
        return self.proc.pid


class Cluster:
    """N replikv nodes n1..nN on loopback. Construct, then `start_all()`; `stop_all()` or
    `kill_all()` when done (the fixtures do the latter on teardown regardless)."""

    def __init__(self, root: Path, size: int = 3, *, extra_args: Iterable[str] = (),
                 node_args: dict[str, list[str]] | None = None,
                 rng: random.Random | None = None, joiners: int = 0) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        ports = pick_free_ports(3 * size, rng)
        self.nodes: dict[str, Node] = {}
        for i in range(size):
            node_id = f"n{i + 1}"
            self.nodes[node_id] = Node(
                id=node_id, client_port=ports[3 * i], peer_port=ports[3 * i + 1],
                admin_port=ports[3 * i + 2], data_dir=root / "data" / node_id,
                stdout_path=root / "logs" / f"{node_id}.stdout.log",
                stderr_path=root / "logs" / f"{node_id}.stderr.log",
                extra_args=[*extra_args, *(node_args or {}).get(node_id, [])])
        (root / "logs").mkdir(exist_ok=True)
        # The last `joiners` nodes are not among the members the cluster is created with: they
        # start with --join and become members through `replikv member add`.
        self.joiners = set(list(self.nodes)[size - joiners:]) if joiners else set()
        self.peers = ",".join(f"{n.id}={HOST}:{n.peer_port}" for n in self.nodes.values()
                              if n.id not in self.joiners)
        self._clients: list[redis.Redis] = []
        # Nodes started with TLS (tests/integration/test_tls.py): the context their admin API
        # is reached with (https); None: plain http.
        self.admin_tls: ssl.SSLContext | None = None

    # -- processes ---------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return list(self.nodes)

    def alive_ids(self) -> list[str]:
        return [n.id for n in self.nodes.values() if n.alive]

    def node_argv(self, node_id: str, *, data_dir: Path | None = None,
                  extra: Iterable[str] = ()) -> list[str]:
        """The `replikv node ...` arguments (without the interpreter) for `node_id`."""
        n = self.nodes[node_id]
        peers, join = self.peers, []
        if node_id in self.joiners:
            peers, join = f"{self.peers},{n.id}={HOST}:{n.peer_port}", ["--join"]
        return ["node", "--id", n.id, "--data-dir", str(data_dir or n.data_dir),
                "--listen", f"{HOST}:{n.client_port}",
                "--peer-listen", f"{HOST}:{n.peer_port}",
                "--peers", peers, "--admin", f"{HOST}:{n.admin_port}",
                *join, *n.extra_args, *extra]

    def member_args(self, node_id: str) -> list[str]:
        """`replikv member add` arguments naming the node's addresses."""
        n = self.nodes[node_id]
        return [node_id, "--peer", f"{HOST}:{n.peer_port}", "--client", f"{HOST}:{n.client_port}",
                "--admin", f"{HOST}:{n.admin_port}"]

    def cli(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run `replikv <args>` against this cluster (--cluster is added for member and
        switchover commands); returns the completed process (check=False)."""
        argv = [PYTHON, "-m", "replikv", *args]
        if args and args[0] in ("member", "switchover"):
            argv += ["--cluster", ",".join(f"{HOST}:{n.client_port}"
                                           for n in self.nodes.values() if n.alive)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              cwd=self.root, check=False)

    def restore_all(self, backup: Path, *extra: str) -> list[subprocess.CompletedProcess]:
        """`replikv restore --from backup` into every node's data dir (with its id and this
        cluster's peers, plus `extra` flags); each must succeed. The nodes must be stopped."""
        done = []
        for node_id in self.ids:
            run = self.cli("restore", "--from", str(backup), "--data-dir",
                           str(self.nodes[node_id].data_dir), "--node-id", node_id,
                           "--peers", self.peers, *extra)
            assert run.returncode == 0, run.stdout + run.stderr
            done.append(run)
        return done

    def start(self, node_id: str, *, wait: bool = True) -> None:
        """Start (or restart, with the same settings and data dir) one node."""
        n = self.nodes[node_id]
        assert not n.alive, f"{node_id} is already running (pid {n.pid})"
        n.starts += 1
        argv = [PYTHON, "-c", NODE_LAUNCHER, str(os.getpid()), *self.node_argv(node_id)]
        marker = f"===== harness: start #{n.starts} of {node_id} at {time.strftime('%X')} =====\n"
        with open(n.stdout_path, "a") as out, open(n.stderr_path, "a") as err:
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
            n.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                      cwd=self.root, start_new_session=True,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1", **n.env})
        _ALL_PROCESSES.append(n.proc)
        if wait:
            self.wait_ready([node_id])

    def start_all(self, *, wait_for_leader: bool = True) -> None:
        """Start every node (joiners too: they wait, outside the cluster, to be added)."""
        for node_id in self.ids:
            self.start(node_id, wait=False)
        self.wait_ready(self.ids)
        if wait_for_leader:
            self.leader()

    def wait_ready(self, ids: Iterable[str], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until each node printed its 'ready' line for its latest start."""
        for node_id in ids:
            n = self.nodes[node_id]

            def ready(n: Node = n) -> bool:
                if n.proc is not None and n.proc.poll() is not None:
                    raise NodeExited(
                        f"{n.id} exited with status {n.proc.returncode} before it was ready:\n"
                        + self.log_tail(n.id, 30))
                current = n.stdout_path.read_text(errors="replace").rsplit("===== harness", 1)
                return f"replikv node {n.id} ready" in current[-1]

            try:
                wait_until(ready, timeout_s=timeout_s, what=f"{node_id} to be ready")
            except ClusterTimeout as e:
                raise ClusterTimeout(f"{e}\n{self.log_tail(node_id, 30)}") from None

    def kill9(self, node_id: str) -> None:
        """SIGKILL: a crash. Returns once the process is gone."""
        n = self.nodes[node_id]
        assert n.alive, f"{node_id} is not running"
        n.proc.kill()
        n.proc.wait(STOP_TIMEOUT_S)

    def kill_all(self) -> None:
        """SIGKILL every running node at once (no waiting in between), then reap them."""
        running = [n for n in self.nodes.values() if n.alive]
        for n in running:
            try:
                n.proc.send_signal(signal.SIGCONT)  # a paused node must not stay stopped
                n.proc.kill()
            except ProcessLookupError:
                pass
        for n in running:
            n.proc.wait(STOP_TIMEOUT_S)

    def terminate(self, node_id: str, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status. Kills and raises if the
        node does not stop in time."""
        n = self.nodes[node_id]
        assert n.alive, f"{node_id} is not running"
        n.proc.terminate()
        try:
            return n.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(STOP_TIMEOUT_S)
            raise AssertionError(f"{node_id} did not stop within {timeout_s}s of SIGTERM:\n"
                                 + self.log_tail(node_id, 30)) from None

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every running node at once and wait; returns each one's exit status."""
        running = [n for n in self.nodes.values() if n.alive]
        for n in running:
            n.proc.terminate()
        codes = {}
        for n in running:
            try:
                codes[n.id] = n.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(STOP_TIMEOUT_S)
                codes[n.id] = -9
        return codes

    def pause(self, node_id: str) -> None:
        self.nodes[node_id].proc.send_signal(signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.nodes[node_id].proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Teardown: close clients and SIGKILL anything still running."""
        for c in self._clients:
            with contextlib.suppress(Exception):  # teardown must go on
                c.close()
        self._clients.clear()
        self.kill_all()

    # -- observing ---------------------------------------------------------------------------

    def client(self, node_id: str, *, socket_timeout: float = 5.0, **kwargs: Any) -> redis.Redis:
        """A redis-py client for `node_id` (no automatic retries; see client_without_retries)."""
        c = client_without_retries(self.nodes[node_id].client_port,
                                   socket_timeout=socket_timeout, **kwargs)
        self._clients.append(c)
        return c

    def port(self, node_id: str) -> int:
        return self.nodes[node_id].client_port

    def status(self, node_id: str) -> dict[str, Any]:
        """GET /status from the node's admin endpoint."""
        scheme = "https" if self.admin_tls is not None else "http"
        url = f"{scheme}://{HOST}:{self.nodes[node_id].admin_port}/status"
        with urllib.request.urlopen(url, timeout=ADMIN_HTTP_TIMEOUT_S,
                                    context=self.admin_tls) as resp:
            return json.loads(resp.read())

    def info(self, node_id: str, section: str = "replication") -> dict[str, str]:
        """INFO <section> parsed into a dict of strings (no redis-py parsing involved)."""
        text = raw_command(self.nodes[node_id].client_port, "INFO", section, timeout_s=2.0)
        assert isinstance(text, bytes), f"INFO {section} on {node_id} failed: {text!r}"
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#") and ":" in line:
                key, _, value = line.partition(":")
                out[key] = value
        return out

    def leader(self, timeout_s: float = LEADER_TIMEOUT_S,
               among: Iterable[str] | None = None) -> str:
        """The leader, once exactly one running node says it leads and every other running
        node names it as leader in the same term."""
        ids = list(among) if among is not None else None

        def agreed() -> str | None:
            statuses = {i: self.status(i) for i in (ids or self.alive_ids())}
            statuses = {i: s for i, s in statuses.items() if s["role"] != "not a member"}
            leaders = [i for i, s in statuses.items() if s["role"] == "leader"]
            if len(leaders) != 1:
                return None
            term = statuses[leaders[0]]["term"]
            if all(s["leader"] == leaders[0] and s["term"] == term for s in statuses.values()):
                return leaders[0]
            return None

        return wait_until(agreed, timeout_s=timeout_s, what="one agreed leader")

    def wait_applied(self, node_id: str, index: int, timeout_s: float = 10.0) -> dict:
        """Wait until `node_id` has applied at least `index`; returns its status."""
        seen: list[dict] = [{}]

        def applied() -> dict | None:
            seen[0] = self.status(node_id)
            return seen[0] if seen[0]["applied_index"] >= index else None

        try:
            return wait_until(applied, timeout_s=timeout_s,
                              what=f"{node_id} to apply index {index}")
        except ClusterTimeout as e:
            keys = ("role", "term", "leader", "commit_index", "applied_index",
                    "last_log_index", "persisted_index", "pending_requests")
            last = {k: seen[0].get(k) for k in keys}
            raise ClusterTimeout(f"{e}; its last status: {last}") from None

    def read_values(self, node_id: str, keys: list[str], *, chunk: int = 500
                    ) -> dict[str, str | None]:
        """GET every key on `node_id` (pipelined, in order), as str values or None."""
        c = self.client(node_id, socket_timeout=10.0, decode_responses=True)
        found: dict[str, str | None] = {}
        try:
            for start in range(0, len(keys), chunk):
                part = keys[start:start + chunk]
                pipe = c.pipeline(transaction=False)
                for key in part:
                    pipe.get(key)
                found.update(zip(part, pipe.execute(), strict=True))
        finally:
            c.close()
        return found

    def assert_values(self, node_ids: Iterable[str], expected: dict[str, str | None],
                      *, what: str = "acknowledged writes") -> None:
        """Every key in `expected` reads back (GET) with its value on every node listed."""
        problems = []
        for node_id in node_ids:
            found = self.read_values(node_id, list(expected))
            wrong = [(k, v, found[k]) for k, v in expected.items() if found[k] != v]
            if wrong:
                problems.append(f"{node_id}: {len(wrong)} of {len(expected)} {what} wrong, "
                                f"e.g. (key, expected, got) {wrong[:5]}")
        assert not problems, "\n".join(problems)

    def log_text(self, node_id: str) -> str:
        n = self.nodes[node_id]
        return n.stderr_path.read_text(errors="replace") if n.stderr_path.exists() else ""

    def log_tail(self, node_id: str, lines: int = 40) -> str:
        n = self.nodes[node_id]
        state = "running" if n.alive else "not running"
        parts = [f"--- {node_id} (pid {n.proc.pid if n.proc else '-'}, {state}) ---"]
        for path in (n.stdout_path, n.stderr_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"[{path.name}]")
                parts.extend(text)
        return "\n".join(parts)

    def all_log_tails(self, lines: int = 40) -> str:
        return "\n".join(self.log_tail(i, lines) for i in self.ids)

    def run_node_once(self, node_id: str, *, data_dir: Path | None = None,
                      extra: Iterable[str] = (), timeout_s: float = 15.0
                      ) -> subprocess.CompletedProcess:
        """Run `replikv node` for `node_id` in the foreground, for starts expected to fail.
        Kills it and raises if it is still running after `timeout_s`."""
        argv = [PYTHON, "-m", "replikv", *self.node_argv(node_id, data_dir=data_dir,
                                                          extra=extra)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=self.root,
                                start_new_session=True)
        _ALL_PROCESSES.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"`replikv {' '.join(argv[3:])}` still running after "
                                 f"{timeout_s}s; it should have refused to start.\n"
                                 f"stderr:\n{err.decode(errors='replace')[-3000:]}") from None
        return subprocess.CompletedProcess(argv, proc.returncode, out.decode(errors="replace"),
                                           err.decode(errors="replace"))


@contextmanager
def running(cluster: Cluster, *, start: bool = True) -> Iterator[Cluster]:
    """Register `cluster` for failure reports, start it (unless start=False), and SIGKILL
    whatever is left of it on the way out, whatever happened."""
    ACTIVE_CLUSTERS.append(cluster)
    try:
        if start:
            cluster.start_all()
        yield cluster
    finally:
        cluster.close()
        ACTIVE_CLUSTERS.remove(cluster)


def tls_args(files: TlsFiles) -> list[str]:
    """`replikv node` flags for a node with these TLS files."""
    return ["--tls-cert-file", str(files.cert_file), "--tls-key-file", str(files.key_file),
            "--tls-ca-cert-file", str(files.ca_cert_file)]


def start_tls_cluster(make_cluster: Callable[..., Cluster], tmp_path: Path, size: int = 3,
                      extra: tuple[str, ...] = (), client_cert: TlsFiles | None = None,
                      ) -> tuple[Cluster, dict[str, TlsFiles]]:
    """A started cluster (from the make_cluster fixture) whose nodes speak TLS on every port,
    with certificates from a local CA made in tmp_path/tls; the harness reaches the admin APIs
    over HTTPS (presenting `client_cert` for nodes started with --tls-auth-clients)."""
    files = make_local_ca(tmp_path / "tls", [f"n{i + 1}" for i in range(size)])
    cluster = make_cluster(size, start=False, extra_args=list(extra),
                           node_args={n: tls_args(f) for n, f in files.items()})
    cluster.admin_tls = client_context(
        files["n1"].ca_cert_file, *((client_cert.cert_file, client_cert.key_file)
                                    if client_cert else ()))
    cluster.start_all()
    return cluster, files


def kill_leftover_processes() -> None:
    """Last line of defence, for the session teardown: SIGKILL anything we started."""
    for proc in _ALL_PROCESSES:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def free_base_port(nodes: int = 3) -> int:
    """A base port for `cluster up` with `nodes` nodes (see replikv.local_cluster)."""
    return local_cluster.free_base_port(nodes, HOST)


def stop_cluster_up(proc: subprocess.Popen, node_pids: Iterable[int]) -> None:
    """Stop a `replikv cluster up` started in its own session (SIGTERM: it stops its nodes;
    SIGKILL to its group after 30 s), then SIGKILL any of `node_pids` still there (only if
    cluster up could not stop them: each node runs in its own process group)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30.0)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5.0)
    for pid in node_pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
