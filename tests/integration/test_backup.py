"""Backups are not redundancy, shown with real processes.

- The demonstration: 10,000 keys, `replikv backup create`, FLUSHALL: every replica's own copy
  (read locally on each node) is empty within a second, because replication did its job. Then
  every node's data dir is restored from the backup with `replikv restore`, the cluster starts
  again, every key is back on every node, and the restored cluster takes new writes.
- A backup is the state at one committed index, taken while a single sequential writer keeps
  writing: key i is in it iff i <= some cut, from a follower and from the leader alike, and the
  leader's includes every write acknowledged before it was asked.
- `replikv cluster up --restore FILE` seeds a whole new local cluster, here from a backup of a
  cluster with other member ids, and refuses to replace data dirs without --force.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from replikv.config import default_cluster_id, parse_peers
from replikv.raft.membership import Membership
from replikv.state import KVState
from replikv.storage.snapshot import SnapshotWriter, iter_snapshot

from .cluster import (
    HOST,
    MEASUREMENTS,
    PYTHON,
    REPO_ROOT,
    Cluster,
    free_base_port,
    raw_command,
    stop_cluster_up,
    wait_until,
)

KEYS = 10_000
MSET_KEYS = 500
LOCAL = ("REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local")
FLUSH_VISIBLE_WITHIN_S = 1.0


def key(i: int) -> str:
    return f"key:{i:05d}"


def write_keys(cluster: Cluster, node_id: str, count: int) -> None:
    client = cluster.client(node_id, socket_timeout=30.0)
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, MSET_KEYS):
        pipe.mset({key(i): f"value-{i}" for i in range(start, min(count, start + MSET_KEYS))})
    assert all(pipe.execute())


def local(cluster: Cluster, node_id: str, *argv: str) -> object:
    """A command answered from this node's own copy (no leader involved)."""
    return raw_command(cluster.port(node_id), *LOCAL, *argv, timeout_s=5.0)


def local_values(cluster: Cluster, node_id: str, count: int) -> list[bytes | None]:
    found: list[bytes | None] = []
    for start in range(0, count, MSET_KEYS):
        found += local(cluster, node_id, "MGET",
                       *[key(i) for i in range(start, min(count, start + MSET_KEYS))])
    return found


def backup_keys(path: Path) -> set[bytes]:
    keys = set()
    for event in iter_snapshot(path):
        if event[0] == "batch":
            keys.update(item[0] for item in event[1] if item[1] != 2)
    return keys


def test_backups_are_not_redundancy(make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    write_keys(cluster, follower, KEYS)
    backup = tmp_path / "backup.rkvsnap"

    # From a follower's client address: the CLI finds its admin address itself.
    taken = cluster.cli("backup", "create", "--from", f"{HOST}:{cluster.port(follower)}",
                        "--to", str(backup))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert re.search(r"keys\s+10,000\b", taken.stdout), taken.stdout
    assert f"from node {follower} (follower" in taken.stdout
    again = cluster.cli("backup", "create", "--from", f"{HOST}:{cluster.port(follower)}",
                        "--to", str(backup))
    assert again.returncode == 1 and "exists; pass --force" in again.stderr

    # The mistake, replicated: every node's own copy is empty within a second.
    assert cluster.client(leader).flushall()
    flushed_at = time.monotonic()
    for node_id in cluster.ids:
        wait_until(lambda n=node_id: local(cluster, n, "DBSIZE") == 0, timeout_s=5.0,
                   what=f"{node_id} to lose the keys")
    lost_s = time.monotonic() - flushed_at
    MEASUREMENTS.append(f"backup demo: FLUSHALL emptied all 3 replicas in {lost_s * 1000:.0f} ms")
    assert lost_s < FLUSH_VISIBLE_WITHIN_S

    # The backup brings them back: restore every node's data dir, start the cluster again.
    assert set(cluster.stop_all().values()) == {0}
    for restored in cluster.restore_all(backup, "--force"):
        assert "its old contents were replaced" in restored.stdout
    cluster.start_all()
    expected = [f"value-{i}".encode() for i in range(KEYS)]
    for node_id in cluster.ids:
        assert local(cluster, node_id, "DBSIZE") == KEYS
        assert local_values(cluster, node_id, KEYS) == expected, node_id

    # A restored cluster is a cluster: it takes writes, through any node, everywhere.
    leader = cluster.leader()
    assert cluster.client(follower).set("after-restore", "yes")
    for node_id in cluster.ids:
        wait_until(lambda n=node_id: local(cluster, n, "GET", "after-restore") == b"yes",
                   timeout_s=5.0, what=f"{node_id} to have the new write")
    assert cluster.status(leader)["term"] > 1


class SequentialWriter(threading.Thread):
    """SET seq:<i> i for i = 0, 1, ... one at a time through the leader; `acked` is how many
    were acknowledged, `gaps_s` the longest wait for one acknowledgement."""

    def __init__(self, cluster: Cluster, node_id: str) -> None:
        super().__init__(daemon=True)
        self.client = cluster.client(node_id, socket_timeout=10.0)
        self.acked = 0
        self.longest_s = 0.0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                started = time.monotonic()
                assert self.client.set(f"seq:{self.acked:06d}", self.acked)
                self.longest_s = max(self.longest_s, time.monotonic() - started)
                self.acked += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def stop(self) -> None:
        self._halt.set()
        self.join(15.0)


def cut_of(path: Path) -> int:
    """The writer's keys in a backup are seq:0 .. seq:(cut-1), exactly; returns cut."""
    seq = sorted(int(k[4:]) for k in backup_keys(path) if k.startswith(b"seq:"))
    assert seq == list(range(len(seq))), f"{path.name}: not a prefix: {seq[:5]}..{seq[-5:]}"
    return len(seq)


def test_a_backup_is_one_committed_index_taken_while_writes_go_on(make_cluster,
                                                                  tmp_path: Path) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    write_keys(cluster, leader, 2000)  # something to copy while the writer runs
    writer = SequentialWriter(cluster, leader)
    writer.start()
    try:
        wait_until(lambda: writer.acked >= 100 or writer.error, timeout_s=10.0,
                   what="the writer to get going")
        cuts = {}
        for name, node_id, address in (
                ("follower", follower, f"{HOST}:{cluster.port(follower)}"),
                ("leader", leader, f"{HOST}:{cluster.nodes[leader].admin_port}")):
            acked_before = writer.acked
            path = tmp_path / f"{name}.rkvsnap"
            taken = cluster.cli("backup", "create", "--from", address, "--to", str(path))
            assert taken.returncode == 0, taken.stdout + taken.stderr
            acked_after = writer.acked
            cut = cut_of(path)
            cuts[name] = (acked_before, cut, acked_after)
            assert cut <= acked_after + 1  # at most the one write in flight
            if name == "leader":  # the leader has every acknowledged write
                assert cut >= acked_before, cuts
            assert len(backup_keys(path)) == 2000 + cut
            verified = cluster.cli("backup", "verify", str(path))
            assert verified.returncode == 0 and f"node {node_id}" in verified.stdout
    finally:
        writer.stop()
    assert writer.error is None, writer.error
    assert writer.acked > cuts["leader"][0]

    # The endpoint itself, as any HTTP client sees it; the follower has every write by now.
    cluster.wait_applied(follower, cluster.status(leader)["commit_index"])
    admin = f"http://{HOST}:{cluster.nodes[follower].admin_port}"
    with urllib.request.urlopen(f"{admin}/backup", timeout=30) as response:
        data = response.read()
        headers = response.headers
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(data) and data.startswith(b"RKVSNAP\x01")
    assert headers["X-Replikv-Node"] == follower and int(headers["X-Replikv-Index"]) > 0
    (tmp_path / "raw.rkvsnap").write_bytes(data)
    assert cut_of(tmp_path / "raw.rkvsnap") == writer.acked
    request = urllib.request.Request(f"{admin}/backup", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405
    assert cluster.status(follower)["backups_taken"] == 2
    MEASUREMENTS.append(
        f"backup under writes: cuts (acked before, cut, acked after) {cuts}; longest write "
        f"{writer.longest_s * 1000:.0f} ms")
    assert writer.longest_s < 2.0


# ---- cluster up --restore ----


def synthetic_backup(directory: Path, keys: int) -> Path:
    """A backup of another cluster (members a1..a3), written directly."""
    state = KVState()
    for i in range(keys):
        state.apply_command([b"SET", key(i).encode(), b"value-%d" % i], 1_000)
    state.apply_command([b"SADD", b"team", b"ann", b"bob"], 1_000)
    manifest = {"index": 777, "term": 5, "created_ms": 1_000, "node_id": "a2",
                "cluster_id": "replikv-elsewhere", "replication_mode": "passive",
                "extra": {"membership": Membership(("a1", "a2", "a3")).encode(),
                          "time_ms": 1_000}}
    cursor = state.begin_snapshot()
    with SnapshotWriter(directory, manifest) as writer:
        while (batch := cursor.next_batch(500)) is not None:
            writer.add_batch(batch)
        return writer.finish(state_digest=cursor.state_digest()).path


def test_cluster_up_restore_starts_a_new_cluster_from_a_backup(tmp_path: Path) -> None:
    backup = synthetic_backup(tmp_path / "made", 1000)
    base = free_base_port()
    data_dir = tmp_path / "data"
    argv = [PYTHON, "-m", "replikv", "cluster", "up", "--base-port", str(base), "--data-dir",
            str(data_dir), "--restore", str(backup)]
    log_path = tmp_path / "cluster-up.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                start_new_session=True)
    node_pids: list[int] = []
    try:
        wait_until(lambda: log_path.read_text().count(" ready: redis-cli") == 3
                   or proc.poll() is not None, timeout_s=20.0, what="three ready nodes")
        text = log_path.read_text()
        assert proc.poll() is None, text
        node_pids = [int(p) for p in re.findall(r"/status  pid (\d+)", text)]
        assert text.count("replikv: restored n") == 3 and "1,001 keys" in text, text
        ports = [base, base + 1, base + 2]

        def elected() -> bool:
            return any(raw_command(p, "ROLE")[0] == b"master" for p in ports)

        wait_until(elected, timeout_s=10.0, what="a leader")
        for port in ports:
            assert raw_command(port, *LOCAL, "DBSIZE") == 1001
            assert raw_command(port, *LOCAL, "GET", key(999)) == b"value-999"
        assert raw_command(base, "SET", "new", "write") == b"OK"
        with urllib.request.urlopen(f"http://{HOST}:{base + 200}/status", timeout=2) as r:
            status = json.loads(r.read())
        assert status["voters"] == ["n1", "n2", "n3"] and status["standbys"] == []
        # The local cluster's own id, new (not the one derived from n1, n2, n3 that every
        # local cluster would share), in every node's config, so later runs resume it.
        peers = parse_peers(",".join(f"n{i + 1}={HOST}:{base + 100 + i}" for i in range(3)))
        assert status["cluster_id"] != default_cluster_id(peers)
        assert status["cluster_id"].startswith("replikv-")
        for i in (1, 2, 3):
            config = tomllib.loads((data_dir / f"n{i}.toml").read_text())
            assert config["cluster_id"] == status["cluster_id"]
        assert status["snapshot"]["index"] == 777
    finally:
        stop_cluster_up(proc, node_pids)
    assert "cluster stopped" in log_path.read_text()

    # The data dirs hold a cluster now: restoring over them needs --force, and changes nothing
    # without it.
    before = {p: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}
    refused = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
                             check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr, refused.stderr
    assert {p: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()} == before
