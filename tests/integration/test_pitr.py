"""Point-in-time recovery and scheduled backups, with real processes.

Every node archives its log (--archive-dir). After a backup, more writes land, then a FLUSHALL,
then a few writes more. `replikv archive find` names the entry just before the FLUSHALL;
`replikv restore --archive --until` replays the archive on top of the backup up to there (by
index, and by time), and the restored cluster holds every write before the mistake and none
after it. Separately, the leader writes scheduled backups (--backup-every) and keeps the
newest --backup-keep of them.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

from .cluster import HOST, MEASUREMENTS, Cluster, wait_until
from .test_backup import local

BEFORE, AFTER = 1500, 700


def mset(cluster: Cluster, node_id: str, prefix: str, count: int) -> None:
    client = cluster.client(node_id, socket_timeout=30.0)
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 250):
        pipe.mset({f"{prefix}:{i:05d}": f"{prefix}-{i}" for i in range(start,
                                                                        min(count, start + 250))})
    assert all(pipe.execute())


def restore_cluster(make_cluster, backup: Path, archive: Path, until: str, name: str) -> Cluster:
    fresh = make_cluster(3, start=False, name=name)
    for done in fresh.restore_all(backup, "--archive", str(archive), "--until", until):
        assert "replayed" in done.stderr, done.stderr
    fresh.start_all()
    return fresh


def test_recover_to_just_before_a_flushall(make_cluster, tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    cluster = make_cluster(3, node_args={
        i: ["--archive-dir", str(archives / i)] for i in ("n1", "n2", "n3")})
    leader = cluster.leader()
    mset(cluster, leader, "a", BEFORE)
    backup = tmp_path / "backup.rkvsnap"
    taken = cluster.cli("backup", "create", "--from",
                        f"{HOST}:{cluster.nodes[leader].admin_port}", "--to", str(backup))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    mset(cluster, leader, "b", AFTER)  # after the backup: only the archive has these
    time.sleep(0.05)
    before_flush = datetime.now(UTC)
    time.sleep(0.05)
    assert cluster.client(leader).flushall()
    mset(cluster, leader, "c", 10)  # after the mistake: must not come back
    assert set(cluster.stop_all().values()) == {0}  # a clean stop archives the log's tail

    archive = archives / leader
    info = cluster.cli("archive", "info", str(archive))
    assert info.returncode == 0 and "indexes" in info.stdout, info.stdout + info.stderr
    found = cluster.cli("archive", "find", str(archive))
    assert found.returncode == 0, found.stdout + found.stderr
    until = re.search(r"--until (\d+)", found.stdout).group(1)
    # One key's removal, found by replaying the archive on the backup: the same entry.
    by_key = cluster.cli("archive", "find", str(archive), "--key", "a:00007",
                         "--backup", str(backup))
    assert by_key.returncode == 0, by_key.stdout + by_key.stderr
    assert re.search(r"--until (\d+)", by_key.stdout).group(1) == until, by_key.stdout
    assert "flushall" in by_key.stdout.lower(), by_key.stdout
    misuse = cluster.cli("archive", "find", str(archive), "--backup", str(backup))
    assert misuse.returncode == 2 and "--backup goes with --key" in misuse.stderr

    expected = ([f"a-{i}".encode() for i in range(BEFORE)]
                + [f"b-{i}".encode() for i in range(AFTER)])
    for label, point in (("index", until),
                         ("time", before_flush.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))):
        started = time.monotonic()
        fresh = restore_cluster(make_cluster, backup, archive, point, f"restored-{label}")
        MEASUREMENTS.append(f"point-in-time recovery by {label}: 3 nodes restored and serving "
                            f"in {time.monotonic() - started:.2f} s ({BEFORE + AFTER} keys)")
        for node_id in fresh.ids:
            assert local(fresh, node_id, "DBSIZE") == BEFORE + AFTER, (label, node_id)
            got = [*local(fresh, node_id, "MGET", *[f"a:{i:05d}" for i in range(BEFORE)]),
                   *local(fresh, node_id, "MGET", *[f"b:{i:05d}" for i in range(AFTER)])]
            assert got == expected, (label, node_id)
            assert local(fresh, node_id, "EXISTS", "c:00000") == 0
        assert fresh.client(fresh.leader()).set("after", "1")
        fresh.stop_all()


def test_the_leader_writes_scheduled_backups_and_keeps_the_newest(make_cluster,
                                                                   tmp_path: Path) -> None:
    dirs = {i: tmp_path / "backups" / i for i in ("n1", "n2", "n3")}
    cluster = make_cluster(3, node_args={
        i: ["--backup-dir", str(dirs[i]), "--backup-every", "1s", "--backup-keep", "2"]
        for i in dirs})
    leader = cluster.leader()
    mset(cluster, leader, "s", 500)

    def backups() -> list[Path]:
        return sorted(dirs[leader].glob("backup-*.rkvsnap"))

    wait_until(lambda: len(backups()) >= 2 and cluster.status(leader)[
        "scheduled_backups"]["written"] >= 3, timeout_s=20, what="three scheduled backups")
    assert len(backups()) == 2  # the oldest were removed
    assert not list(dirs[leader].glob("*.tmp"))
    for follower in (i for i in dirs if i != leader):
        assert not list(dirs[follower].glob("backup-*"))  # only the leader writes them
    newest = backups()[-1]
    checked = cluster.cli("backup", "verify", str(newest))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"keys\s+500\b", checked.stdout), checked.stdout
    # The mistake, then the newest scheduled backup from before it brings the keys back.
    assert cluster.client(leader).flushall()
    wait_until(lambda: local(cluster, leader, "DBSIZE") == 0, timeout_s=5, what="the flush")
    assert set(cluster.stop_all().values()) == {0}
    cluster.restore_all(newest, "--force")
    cluster.start_all()
    for node_id in cluster.ids:
        assert local(cluster, node_id, "DBSIZE") == 500
        assert local(cluster, node_id, "MGET", *[f"s:{i:05d}" for i in range(500)]) == [
            f"s-{i}".encode() for i in range(500)]


def test_the_local_cluster_archives_and_comes_back_to_just_before_a_flushall(
        tmp_path: Path) -> None:
    """The README's local-cluster way: `cluster up --archive-dir`, a backup, more writes, the
    mistake; Ctrl-C (a clean stop archives every node's open segment); `archive find`; then
    `cluster up --restore FILE --restore-archive DIR --until N --force` starts the cluster at
    the entry before the FLUSHALL."""
    import subprocess

    from .cluster import PYTHON, raw_command
    from .test_playground import cluster_up, replikv

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "replikv", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60, check=False)

    archive, backup = tmp_path / "archive", tmp_path / "backup.rkvsnap"
    with cluster_up(tmp_path, "--archive-dir", str(archive)) as (base, data_dir, _log, _pids):
        for i in range(40):
            assert raw_command(base, "SET", f"before:{i}", "x") == b"OK"
        done = cli("backup", "create", "--from", f"{HOST}:{base + 201}", "--to", str(backup))
        assert done.returncode == 0, done.stderr
        for i in range(30):
            assert raw_command(base, "SET", f"after:{i}", "y") == b"OK"
        assert raw_command(base, "FLUSHALL") == b"OK"
        assert raw_command(base, "SET", "later", "z") == b"OK"
    found = cli("archive", "find", str(archive / "n1"))
    assert found.returncode == 0, found.stderr
    until = re.search(r"--until (\d+)", found.stdout).group(1)  # type: ignore[union-attr]
    with cluster_up(tmp_path, "--restore", str(backup), "--restore-archive",
                    str(archive / "n1"), "--until", until, "--force",
                    base=base) as (_b, _d, log_path, _p):
        assert f"to {until}: index {until}" in log_path.read_text()
        for port in (base, base + 1, base + 2):
            assert raw_command(port, "REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY",
                               "local", "DBSIZE") == 70
        assert raw_command(base, "GET", "after:29") == b"y"
        assert raw_command(base, "GET", "later") is None
    refused = replikv(data_dir, "cluster", "up", "--restore-archive", str(archive / "n1"),
                      "--until", until)
    assert refused.returncode == 2 and "--restore FILE" in refused.stderr
