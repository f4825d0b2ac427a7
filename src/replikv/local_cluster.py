"""`replikv cluster up`: N node processes on one machine, supervised in the foreground.

Each node is a separate `python -m replikv node --config DATA_DIR/<id>.toml` process, so
killing one (kill -9) is a real crash of a real process. Their output is merged into ours with
each line prefixed by the node's id. Ctrl-C (or SIGTERM) stops every node with SIGTERM, waits for
them to shut down cleanly, and only then exits; a node that does not stop within the grace
period is killed.

The failover playground. While it runs, the supervisor keeps DATA_DIR/cluster.json up to date
(its own pid, each node's pid or null, ports, config) and watches DATA_DIR/control/ for
requests. `replikv cluster kill|pause|resume|restart NODE` (see `playground`) read that file:
kill sends SIGKILL, pause SIGSTOP, resume SIGCONT to the node's process group, after checking
that the pid still runs that node's config (a pid the kernel reused for something else is never
signalled); restart asks the supervisor, which stops the node if it runs (SIGTERM, then
SIGKILL after the grace period) and starts it again with its output still merged here.

Standbys (--standbys K): nodes n<N+1>..n<N+K> start with `join = true` (the cluster is
created by the N voters alone) and the supervisor adds each as a standby through a voter's
admin API (POST /members/<id>/add) once a leader answers; one that is a member already (a
resumed cluster) is left as it is. With --auto-replace-after-ms the leader promotes a caught-up
standby when a voter has been unreachable that long (see NodeSettings.auto_replace_after_ms).
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from replikv.client.credentials import TLS_CA_CERT_ENV, admin_url

STOP_GRACE_S = 10.0
STANDBY_ADD_TIMEOUT_S = 120.0  # how long the supervisor keeps trying to add a standby
STATE_FILE = "cluster.json"  # written by the supervisor of `cluster up`: see the docstring
SUPERVISOR_LOCK = ".cluster-up.lock"  # held by the running `cluster up` (LocalCluster.lock)
CONTROL_DIR = "control"
_COLORS = ["36", "35", "33", "32", "34"]


# Ports for throwaway clusters (tests, benchmarks) come from here: below Linux's default
# ephemeral range (32768-60999), so a client connection's local port never sits on a port a
# restarting node needs to listen on again.
SCRATCH_PORT_RANGE = (20000, 32000)


def free_ports(count: int, host: str = "127.0.0.1", rng: random.Random | None = None,
               port_range: tuple[int, int] = SCRATCH_PORT_RANGE) -> list[int]:
    """`count` distinct ports that could be bound on `host` just now (bounded attempts)."""
    rng = rng or random.Random()
    ports: list[int] = []
    for _attempt in range(count * 50):
        if len(ports) == count:
            break
        port = rng.randrange(*port_range)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        ports.append(port)
    if len(ports) != count:
        raise ClusterError(f"could not find {count} free ports in {port_range}")
    return ports


class ClusterError(Exception):
    pass


def free_base_port(nodes: int = 3, host: str = "127.0.0.1") -> int:
    """A base port B for a scratch `cluster up` of `nodes` nodes (standbys included): B+i,
    B+100+i and B+200+i free for every i < nodes, all below SCRATCH_PORT_RANGE's end."""
    for base in free_ports(40, host):
        if base + 200 + nodes > SCRATCH_PORT_RANGE[1]:
            continue
        try:
            for port in [base + d + i for d in (0, 100, 200) for i in range(nodes)]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return base
    raise ClusterError("no free block of ports for a local cluster among 40 candidates")


class AdminRefused(Exception):
    """A node's admin endpoint answered with an error (the message is its reason)."""


def post_admin(url: str, timeout_s: float = 5.0, password: str | None = None) -> dict:
    """POST to a node's admin endpoint; its JSON answer. AdminRefused with the node's reason
    if it answered an error; OSError if it did not answer. `password` (else REPLIKV_PASSWORD)
    for a node with one."""
    from replikv.client.credentials import admin_urlopen, authorization_headers

    request = urllib.request.Request(url, method="POST",
                                     headers=authorization_headers(password))
    try:
        with admin_urlopen(request, timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error")
        except (ValueError, AttributeError, OSError):
            reason = None
        raise AdminRefused(str(reason or f"HTTP {e.code}")) from None


# For child node processes: sets PR_SET_PDEATHSIG (1) to SIGKILL (9) and then becomes the node
# (same pid; the setting survives execve). If the parent is already gone by then, there is
# nobody to clean up after it: exit. Run as [python, "-c", NODE_LAUNCHER, str(os.getpid()),
# *replikv_args], so a test or benchmark that dies never leaves nodes behind.
NODE_LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(3)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'replikv', *sys.argv[2:]])\n"
)


def stop_process_groups(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each still-running process's group (and SIGCONT: a paused process must run to
    stop), wait up to `grace_s` in all, SIGKILL the rest. For processes started with
    start_new_session=True."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(grace_s)


@dataclass(frozen=True, slots=True)
class LocalNode:
    id: str
    client_port: int
    peer_port: int
    admin_port: int
    config_path: Path
    standby: bool = False  # started with join = true and added as a standby


class LocalCluster:
    def __init__(self, nodes: int, *, base_port: int, host: str, data_dir: Path,
                 fsync: str = "always", replication: str = "passive", standbys: int = 0,
                 auto_replace_after_ms: int = 0, archive_dir: Path | None = None,
                 requirepass_file: Path | None = None, tls: bool = False,
                 maxmemory: str | None = None) -> None:
        self.host = host
        # `cluster up --tls`: a local CA and a certificate per node in DATA_DIR/tls (made on
        # the first start, kept after), named in every node's config.
        self.tls = tls
        # The cluster password's file (`cluster up --requirepass-file`): every node's config
        # names it, and the supervisor reads it for the admin calls it makes (adding standbys).
        self.requirepass_file = requirepass_file.resolve() if requirepass_file else None
        self.password: str | None = None
        if self.requirepass_file is not None:
            from replikv.config import ConfigError, read_passwords

            try:
                self.password = read_passwords(self.requirepass_file, "--requirepass-file")[0]
            except ConfigError as e:
                raise ClusterError(str(e)) from None
        self.archive_dir = archive_dir.resolve() if archive_dir is not None else None
        # `cluster up --maxmemory`: every node's maxmemory, checked before anything starts.
        self.maxmemory = 0
        if maxmemory is not None:
            from replikv.config import ConfigError, parse_memory

            try:
                self.maxmemory = parse_memory(maxmemory, "--maxmemory")
            except ConfigError as e:
                raise ClusterError(str(e)) from None
        # Absolute: the nodes run with their config's full path (what `cluster pause` and the
        # others check a pid against, and what the "start it by hand" hint prints).
        self.data_dir = data_dir = data_dir.resolve()
        self.fsync = fsync
        self.replication = replication
        self.auto_replace_after_ms = auto_replace_after_ms
        self.nodes = [
            LocalNode(f"n{i + 1}", base_port + i, base_port + 100 + i, base_port + 200 + i,
                      data_dir / f"n{i + 1}.toml", standby=i >= nodes)
            for i in range(nodes + standbys)
        ]
        self.procs: dict[str, subprocess.Popen] = {}
        self._print_lock = threading.Lock()
        self._stopping = False
        self.state_path = data_dir / STATE_FILE
        self._lock_fd: int | None = None  # SUPERVISOR_LOCK, held while this process runs
        self._errors: dict[str, int] = {}  # how each node last exited (reset when restarted)
        self.control_dir = data_dir / CONTROL_DIR

    @property
    def voters(self) -> list[LocalNode]:
        return [n for n in self.nodes if not n.standby]

    @functools.cached_property
    def cluster_id(self) -> str:
        """This local cluster's id: the one its nodes' data dirs record (or, before any node
        wrote one, their configs name), else a new random one. Random, not derived from the
        node ids: every local cluster has nodes n1, n2, n3, and two clusters with one id could
        talk to each other, or have a backup of one replayed with the other's log archive."""
        import secrets
        import tomllib

        from replikv.storage.datadir import stored_cluster_id

        for n in self.nodes:
            recorded = stored_cluster_id(self.data_dir / n.id)
            if recorded:
                return recorded
        for n in self.nodes:
            try:
                named = tomllib.loads(n.config_path.read_text()).get("cluster_id")
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if isinstance(named, str) and named:
                return named
        return f"replikv-{secrets.token_hex(6)}"

    @functools.cached_property
    def tls_files(self) -> dict:
        """Each node's TLS files (replikv.tls.TlsFiles), made on first use (`--tls`)."""
        from replikv.tls import make_local_ca

        files = make_local_ca(self.data_dir / "tls", [n.id for n in self.nodes],
                              hosts=sorted({self.host, "127.0.0.1", "localhost"}))
        # The supervisor's own admin calls (adding standbys) go over HTTPS with this CA.
        os.environ[TLS_CA_CERT_ENV] = str(self.ca_cert_file)
        return files

    @property
    def ca_cert_file(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def write_configs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        voters = [f"{n.id}={self.host}:{n.peer_port}" for n in self.voters]
        for n in self.nodes:
            # A standby's peers are the voters (who create the cluster) and itself.
            peers = ",".join(voters + ([f"{n.id}={self.host}:{n.peer_port}"] if n.standby
                                       else []))
            extra = ""
            if n.standby:
                extra += ("# not one of the members the cluster was created with: the "
                          "supervisor adds it as a standby\njoin = true\n")
            if self.auto_replace_after_ms:
                extra += f"auto_replace_after_ms = {self.auto_replace_after_ms}\n"
            if self.archive_dir is not None:
                extra += f'archive_dir = "{self.archive_dir / n.id}"\n'
            if self.requirepass_file is not None:
                extra += f'requirepass_file = "{self.requirepass_file}"\n'
            if self.maxmemory:
                extra += f"maxmemory = {self.maxmemory}\n"
            if self.tls:
                files = self.tls_files[n.id]
                extra += (f'tls_cert_file = "{files.cert_file}"\n'
                          f'tls_key_file = "{files.key_file}"\n'
                          f'tls_ca_cert_file = "{files.ca_cert_file}"\n')
            n.config_path.write_text(
                f'# replikv node settings written by `replikv cluster up`\n'
                f'id = "{n.id}"\n'
                f'data_dir = "{(self.data_dir / n.id).resolve()}"\n'
                f'listen = "{self.host}:{n.client_port}"\n'
                f'peer_listen = "{self.host}:{n.peer_port}"\n'
                f'admin = "{self.host}:{n.admin_port}"\n'
                f'peers = "{peers}"\n'
                f'cluster_id = "{self.cluster_id}"\n'
                f'fsync = "{self.fsync}"\n'
                f'replication = "{self.replication}"\n'
                f'# the playground: replikv cluster partition|heal|slow\n'
                f'fault_injection = true\n' + extra)

    def check_ports_free(self) -> None:
        for n in self.nodes:
            for port in (n.client_port, n.peer_port, n.admin_port):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind((self.host, port))
                    except OSError:
                        raise ClusterError(
                            f"port {port} on {self.host} is in use (another cluster running?); "
                            f"stop it or pick other ports with --base-port") from None

    def peers(self) -> dict[str, str]:
        """The members the cluster is created with: the voters."""
        return {n.id: f"{self.host}:{n.peer_port}" for n in self.voters}

    def restore(self, backup_file: Path, *, force: bool = False, source: str = "") -> None:
        """Seed every node's data dir from the backup (see replikv.backup.restore), before
        any node starts. The cluster id is this local cluster's (`cluster_id`: the one it had,
        or a new one), so later `cluster up` runs resume the restored cluster."""
        from replikv.backup import BackupError
        from replikv.backup.restore import BackupFileSeed, restore_data_dir
        from replikv.backup.verify import explain
        from replikv.storage.snapshot import CorruptSnapshotError

        peers = self.peers()
        cluster_id = self.cluster_id
        seed = BackupFileSeed(backup_file)
        # A standby joins the restored cluster and catches up from it; a data dir it kept from
        # before would hold another history, so it must not survive the restore.
        old_standbys = [self.data_dir / n.id for n in self.nodes
                        if n.standby and (self.data_dir / n.id).exists()]
        if old_standbys and not force:
            raise ClusterError(f"{', '.join(map(str, old_standbys))} already exist; the "
                               "standbys must start empty after a restore: add --force to "
                               "replace them")
        for n in self.voters:  # standbys join the restored cluster and catch up from it
            try:
                result = restore_data_dir(seed, self.data_dir / n.id, node_id=n.id,
                                          peers=peers, cluster_id=cluster_id, force=force)
            except (BackupError, CorruptSnapshotError) as e:
                raise ClusterError(explain(e)) from None
            except OSError as e:
                raise ClusterError(f"restoring {n.id} failed: {e}") from None
            snap = result.snapshot
            print(f"replikv: restored {n.id} from {source or backup_file}: index {snap.index:,} (term "
                  f"{snap.term}), {snap.key_count:,} keys, in {result.seconds:.2f} s"
                  + (" (replaced its old data dir)" if result.replaced else ""), flush=True)
        for path in old_standbys:
            shutil.rmtree(path)
            print(f"replikv: removed standby data dir {path}; it catches up from the restored "
                  "cluster", flush=True)

    def lock(self) -> None:
        """Hold DATA_DIR/.cluster-up.lock for as long as this process lives: a second `cluster
        up` on the same data dir is refused before it writes anything (it once rewrote the
        running nodes' configs and deleted cluster.json). The kernel drops the lock when the
        process ends, however it ends."""
        import fcntl

        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / SUPERVISOR_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
        except OSError as e:
            raise ClusterError(f"cannot use {self.data_dir} as the data dir: "
                               f"{e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ClusterError(f"a `replikv cluster up` (pid {holder}) already runs from "
                               f"{self.data_dir}; stop it (Ctrl-C in its terminal) or use "
                               "another --data-dir") from None
        self._lock_fd = fd  # our pid goes in once a restore (which may refuse) is done: run()

    def check_layout(self) -> None:
        """The nodes this run would start are those the data dir was last run with (its
        <id>.toml files): `cluster up --nodes 5` over a 3-node cluster's data started n4 and n5
        as a second cluster beside it (another cluster id), flooding the log with refused links."""
        before = sorted(p.stem for p in self.data_dir.glob("n*.toml"))
        planned = sorted(n.id for n in self.nodes)
        if before and before != planned:
            voters = sum(1 for n in self.nodes if not n.standby)
            raise ClusterError(
                f"{self.data_dir} was last run with {', '.join(before)}, and this would run "
                f"{', '.join(planned)} ({voters} voters and {len(planned) - voters} standbys): "
                "give the same --nodes and --standbys as before (change the membership of a "
                "running cluster with `replikv member add`/`remove`), or use another --data-dir")

    def run(self, *, restore_from: Path | None = None, force: bool = False,
            restored: bool = False) -> None:
        """Start the nodes and supervise them until Ctrl-C. `restored`: the caller seeded the
        nodes' data dirs (self.restore) already."""
        if self._lock_fd is None:
            self.lock()
        if restore_from is None and not restored:  # a restore builds the nodes' data afresh
            self.check_layout()
        self.check_ports_free()
        if restore_from is not None:
            self.restore(restore_from, force=force)
        if self._lock_fd is not None:  # for a second `cluster up` to name us
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self.write_configs()
        self.control_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.control_dir.glob("*"):
            stale.unlink(missing_ok=True)  # requests left by an earlier run
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop())
        # The terminal closed: stop the nodes too (each runs in a session of its own, which
        # the hang-up does not reach; they kept serving with no supervisor).
        signal.signal(signal.SIGHUP, lambda *_: self._request_stop())
        try:
            for n in self.nodes:
                self._start(n)
            self._write_state()
            self._banner()
            if any(n.standby for n in self.nodes):
                threading.Thread(target=self._add_standbys, daemon=True).start()
            while not self._stopping:
                time.sleep(0.2)
                self._reap()
                self._serve_requests()
                if not self.procs and self._errors and all(c > 0 for c in self._errors.values()):
                    # Every node stopped of an error of its own (a bad setting, a full disk),
                    # none by a signal (`cluster kill`): nothing will come back by itself.
                    raise ClusterError("every node stopped with an error (their output above "
                                       "says why); the cluster is stopped")
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
            self.state_path.unlink(missing_ok=True)

    def _write_state(self) -> None:
        """DATA_DIR/cluster.json: who runs where, for the playground commands (atomic)."""
        state = {"supervisor_pid": os.getpid(), "host": self.host, "nodes": {
            n.id: {"pid": self.procs[n.id].pid if n.id in self.procs else None,
                   "client_port": n.client_port, "peer_port": n.peer_port,
                   "admin_port": n.admin_port, "config": str(n.config_path),
                   "standby": n.standby}
            for n in self.nodes}}
        if self.tls:  # the playground commands reach the admin APIs with it
            state["tls_ca_cert"] = str(self.ca_cert_file)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_path)

    def _serve_requests(self) -> None:
        """Playground requests: DATA_DIR/control/restart-<id> restarts that node."""
        for request in sorted(self.control_dir.glob("restart-*")):
            request.unlink(missing_ok=True)
            node_id = request.name.removeprefix("restart-")
            node = next((n for n in self.nodes if n.id == node_id), None)
            if node is None:
                continue
            proc = self.procs.pop(node_id, None)
            if proc is not None and proc.poll() is None:
                with self._print_lock:
                    print(f"replikv: restarting {node_id} (stopping it first)", flush=True)
                stop_process_groups([proc])
            else:
                with self._print_lock:
                    print(f"replikv: starting {node_id} again", flush=True)
            self._start(node)
            self._write_state()

    def _request_stop(self) -> None:
        self._stopping = True

    def _add_standbys(self) -> None:
        """Add each standby node as a standby member, through any voter's admin API (a
        follower forwards it to the leader); retried until a leader takes it. A node the
        voter's /status already lists as a member (a resumed cluster) is left as it is."""
        from replikv.status_view import query_status

        deadline = time.monotonic() + STANDBY_ADD_TIMEOUT_S
        pending = [n for n in self.nodes if n.standby]
        last_error = ""
        while pending and not self._stopping and time.monotonic() < deadline:
            n = pending[0]
            query = urllib.parse.urlencode({
                "peer": f"{self.host}:{n.peer_port}", "client": f"{self.host}:{n.client_port}",
                "admin": f"{self.host}:{n.admin_port}"})
            for voter in self.voters:
                status, error = query_status(f"{self.host}:{voter.admin_port}", 2.0)
                if status is None:
                    last_error = f"{voter.id}: {error}"
                    continue
                if n.id in status.get("voters", []) or n.id in status.get("standbys", []):
                    role = "voter" if n.id in status.get("voters", []) else "standby"
                    said = f"replikv: {n.id} is a member already ({role})"
                else:
                    url = admin_url(f"{self.host}:{voter.admin_port}",
                                    f"/members/{n.id}/add?{query}")
                    try:
                        post_admin(url, password=self.password)
                    except (AdminRefused, OSError, ValueError) as e:
                        last_error = f"{voter.id}: {e}"
                        continue
                    said = f"replikv: {n.id} added as a standby"
                pending.pop(0)
                with self._print_lock:
                    print(said, flush=True)
                break
            else:
                time.sleep(0.5)
        if pending and not self._stopping:
            with self._print_lock:
                print(f"replikv: could not add {', '.join(n.id for n in pending)} as standbys "
                      f"({last_error}); add them with `replikv member add ID --standby ...`",
                      flush=True)

    def _start(self, n: LocalNode) -> None:
        self._errors.pop(n.id, None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "replikv", "node", "--config", str(n.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Own process group: the terminal's Ctrl-C reaches only us, and we stop the nodes
            # in order rather than racing them.
            start_new_session=True)
        self.procs[n.id] = proc
        threading.Thread(target=self._pump_output, args=(n, proc), daemon=True).start()

    def _pump_output(self, n: LocalNode, proc: subprocess.Popen) -> None:
        color = _COLORS[int(n.id[1:]) % len(_COLORS)] if sys.stdout.isatty() else None
        prefix = f"\x1b[{color}m{n.id:>3} |\x1b[0m " if color else f"{n.id:>3} | "
        if proc.stdout is None:  # never: _start pipes it
            return
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._print_lock:
                print(prefix + line, flush=True)

    def _banner(self) -> None:
        with self._print_lock:
            standbys = len(self.nodes) - len(self.voters)
            print(f"replikv: local cluster of {len(self.voters)} nodes"
                  + (f" and {standbys} standby(s)" if standbys else "") + ", data in "
                  f"{self.data_dir.resolve()}, fsync={self.fsync}, "
                  f"replication={self.replication}", flush=True)
            scheme = "https" if self.tls else "http"
            for n in self.nodes:
                print(f"  {n.id}  clients {self.host}:{n.client_port}  "
                      f"admin {scheme}://{self.host}:{n.admin_port}/status  "
                      f"pid {self.procs[n.id].pid}" + ("  (a spare: added as a standby when new; "
                                                       "`replikv status` shows its role)"
                                                       if n.standby else ""),
                      flush=True)
            if self.requirepass_file is not None:
                print(f"  the cluster has a password (in {self.requirepass_file}): give it to "
                      f"redis-cli and to replikv's commands with\n"
                      f"    export REDISCLI_AUTH=\"$(cat {self.requirepass_file})\" "
                      f"REPLIKV_PASSWORD=\"$(cat {self.requirepass_file})\"", flush=True)
            tls_args = ""
            if self.tls:
                tls_args = f" --tls --cacert {self.ca_cert_file}"
                print(f"  every port speaks TLS (certificates in {self.ca_cert_file.parent}); "
                      f"give replikv's commands the CA with\n"
                      f"    export REPLIKV_TLS_CA_CERT={self.ca_cert_file}", flush=True)
            print(f"  try: redis-cli -p {self.nodes[0].client_port}{tls_args} SET greeting hello"
                  f"   (Ctrl-C stops the cluster)", flush=True)

    def _reap(self) -> None:
        for node_id, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[node_id]
            self._errors[node_id] = code
            how = (f"killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            cfg = self.data_dir / f"{node_id}.toml"
            with self._print_lock:
                print(f"replikv: node {node_id} {how}; the others keep serving. Start it again "
                      f"with: replikv cluster restart {node_id}  (or by hand: "
                      f"{Path(sys.executable).parent / 'replikv'} node --config {cfg})",
                      flush=True)
            self._write_state()

    def stop(self) -> None:
        self._stopping = True
        stop_process_groups(list(self.procs.values()))
        with self._print_lock:
            print("replikv: cluster stopped", flush=True)
