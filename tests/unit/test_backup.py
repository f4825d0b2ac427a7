"""Backups without a cluster: verifying a file, rewriting its manifest for a new cluster,
seeding and swapping data dirs, refusing what must be refused, and every kind of bad file
leaving the disk exactly as it was."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from replikv.backup import BackupError
from replikv.backup.download import write_backup_file
from replikv.backup.restore import (
    BackupFileSeed,
    RestoreRefused,
    check_target,
    cluster_membership,
    new_cluster_id,
    restore_data_dir,
    restored_manifest,
    swap_into_place,
)
from replikv.backup.verify import explain, inspect_backup
from replikv.cli import main
from replikv.config import default_cluster_id, load_settings
from replikv.node import decode_address_book
from replikv.raft.membership import Membership
from replikv.server.runtime import NodeServer
from replikv.server.snapshots import snapshot_dir
from replikv.sessions import SessionTable
from replikv.state import KVState, RecordDigest
from replikv.storage.datadir import DataDir
from replikv.storage.hardstate import HardState, load_hard_state
from replikv.storage.snapshot import (
    CorruptSnapshotError,
    SnapshotWriter,
    read_manifest,
    read_trailer_hint,
    verify_snapshot,
)

from .node_harness import Cluster as CoreCluster

T0 = 1_700_000_000_000
OLD_MEMBERS = Membership(("a1", "a2", "a3"), ("a4",), b"old address book")
PEERS = {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102", "n3": "127.0.0.1:7103"}
PEERS_FLAG = ",".join(f"{k}={v}" for k, v in PEERS.items())


# ---- a backup to work on ----


def sample_state(keys: int = 500) -> KVState:
    state = KVState()
    for i in range(keys):
        state.apply_command([b"SET", b"key:%d" % i, b"value-%d" % i], T0)
    for i in range(0, keys, 9):
        state.apply_command([b"PEXPIRE", b"key:%d" % i, b"%d" % (3_600_000 + i)], T0)
    for i in range(5):
        state.apply_command([b"SADD", b"set:%d" % i, *[b"m%d" % j for j in range(i * 40 + 1)]],
                            T0)
    # A set bigger than one item record, so it is split into ITEM_SET_MORE continuations.
    state.apply_command([b"SADD", b"big", *[b"%0300d" % j for j in range(2000)]], T0)
    for i in range(3):
        state.apply_command([b"HSET", b"hash:%d" % i, *[b"f%d" % (j // 2) for j in range(i * 40 + 2)]],
                            T0)
    # And a hash split into ITEM_HASH_MORE continuations, with an expiry.
    state.apply_command([b"HSET", b"bighash", *[b"%0200d" % j for j in range(2000)]], T0)
    state.apply_command([b"PEXPIRE", b"bighash", b"3600000"], T0)
    # And a sorted set split into ITEM_ZSET_MORE continuations, -0 and infinities among its
    # scores (past a listpack's size, so -0 stays -0: the digest tells them apart).
    state.apply_command([b"ZADD", b"bigzset", *[x for j in range(2000) for x in (
        [b"-0", b"inf", b"-inf", b"0.1", b"%d" % j][j % 5], b"%0200d" % j)]], T0)
    return state


def sessions_bytes() -> bytes:
    table = SessionTable()
    table.record(b"client-1", 3, b"OK", T0)
    table.record(b"client-2", 7, 42, T0)
    return table.to_bytes()


def write_backup(directory: Path, state: KVState | None = None, *, index: int = 120,
                 term: int = 4, mode: str = "passive", extra: dict | None = None,
                 max_items: int = 64) -> Path:
    state = state if state is not None else sample_state()
    manifest = {"index": index, "term": term, "created_ms": T0 + 5, "node_id": "a2",
                "cluster_id": "replikv-original", "replication_mode": mode,
                "extra": extra if extra is not None else {"membership": OLD_MEMBERS.encode(),
                                                          "time_ms": T0 + 1}}
    cursor = state.begin_snapshot()
    with SnapshotWriter(directory, manifest, fsync=False) as writer:
        while (batch := cursor.next_batch(max_items)) is not None:
            writer.add_batch(batch)
        writer.add_section("sessions", sessions_bytes())
        return writer.finish(state_digest=cursor.state_digest()).path


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    path = write_backup(tmp_path / "made")
    final = tmp_path / "backup.rkvsnap"
    path.rename(final)
    return final


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under `root` (itself included) with its mode and, for files, its bytes."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))] if root.exists() else []:
        st = path.lstat()
        out[str(path.relative_to(root.parent))] = (
            st.st_mode, path.read_bytes() if path.is_file() else None)
    return out


def existing_data_dir(parent: Path) -> Path:
    """A node's data dir with some content, as a target to replace (or leave alone)."""
    data_dir = parent / "n1"
    DataDir.open(data_dir, node_id="n1", cluster_id="old-cluster").close()
    (data_dir / "wal" / "00000000000000000001.wal").write_bytes(b"RKVWAL\x01\x00old log")
    (data_dir / "hardstate").write_bytes(b"old hard state")
    return data_dir


# ---- the streaming digest and the trailer hint ----


@pytest.mark.parametrize("max_items", [1, 7, 1000])
def test_the_streaming_digest_equals_the_state_digest(tmp_path: Path, max_items: int) -> None:
    state = sample_state()
    path = write_backup(tmp_path, state, max_items=max_items)
    digest = RecordDigest(state.key_count())
    from replikv.storage.snapshot import iter_snapshot

    for event in iter_snapshot(path):
        if event[0] == "batch":
            digest.update(event[1])
    assert digest.hexdigest() == state.digest()


def test_the_streaming_digest_declines_records_out_of_order() -> None:
    digest = RecordDigest(2)
    records = [[b"b", 0, b"1", None], [b"a", 0, b"2", None]]
    from replikv.state import shard_of

    records.sort(key=lambda r: -shard_of(r[0]))  # descending shards: not the cursor's order
    digest.update(records)
    assert digest.hexdigest() is None
    wrong_count = RecordDigest(5)
    wrong_count.update([[b"a", 0, b"2", None]])
    assert wrong_count.hexdigest() is None


def test_the_trailer_hint_is_found_from_the_end(backup: Path, tmp_path: Path) -> None:
    hint = read_trailer_hint(backup)
    assert hint is not None and hint["key_count"] == verify_snapshot(backup).key_count
    cut = tmp_path / "cut"
    cut.write_bytes(backup.read_bytes()[:-3])
    assert read_trailer_hint(cut) is None
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"RKVSNAP\x01")
    assert read_trailer_hint(tiny) is None


# ---- verify ----


def test_inspect_says_what_is_inside(backup: Path) -> None:
    s = inspect_backup(backup)
    state = sample_state()
    assert (s.index, s.term, s.cluster_id, s.taken_on_node) == (120, 4, "replikv-original", "a2")
    assert (s.key_count, s.sessions, s.replication_mode) == (state.key_count(), 2, "passive")
    assert (s.voters, s.standbys, s.format_version) == (("a1", "a2", "a3"), ("a4",), 1)
    assert (s.created_ms, s.state_time_ms) == (T0 + 5, T0 + 1)
    assert s.state_digest == state.digest() and s.digest_checked
    assert s.size_bytes == backup.stat().st_size and len(s.sha256) == 64
    assert inspect_backup(backup, check_digest=False).digest_checked is False


def test_verify_command_prints_a_summary_and_json(backup: Path) -> None:
    result = CliRunner().invoke(main, ["backup", "verify", str(backup)])
    assert result.exit_code == 0, result.output
    assert "a valid replikv backup" in result.output
    assert "replikv-original" in result.output and "recomputed from the keys: matches" in (
        result.output)
    result = CliRunner().invoke(main, ["backup", "verify", str(backup), "--json"])
    assert result.exit_code == 0, result.output
    import json

    body = json.loads(result.output)
    assert body["ok"] is True and body["index"] == 120 and body["digest_checked"] is True


def test_a_snapshot_without_membership_is_not_a_backup(tmp_path: Path) -> None:
    path = write_backup(tmp_path, KVState(), extra={"time_ms": 5})
    with pytest.raises(BackupError, match="lacks a valid cluster membership"):
        inspect_backup(path)


def test_a_damaged_session_table_is_reported(tmp_path: Path) -> None:
    manifest = {"index": 3, "term": 1, "created_ms": T0, "node_id": "a1",
                "cluster_id": "c", "replication_mode": "passive",
                "extra": {"membership": OLD_MEMBERS.encode(), "time_ms": T0}}
    with SnapshotWriter(tmp_path, manifest, fsync=False) as writer:
        writer.add_section("sessions", b"not a session table")
        path = writer.finish().path
    with pytest.raises(BackupError, match="session table is damaged"):
        inspect_backup(path)


# ---- bad files: a clear error, nothing changed, for verify and restore alike ----


def _newer(data: bytes) -> bytes:
    return b"RKVSNAP\x02" + data[8:]


def _flip_middle(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x40
    return bytes(damaged)


def _reordered(data: bytes) -> bytes:
    """Two batch records swapped: every CRC still matches, only the trailer's SHA-256 can
    tell."""
    offsets = []
    offset = 8
    while offset < len(data):
        length, _ = struct.unpack_from("<II", data, offset)
        offsets.append((offset, offset + 8 + length))
        offset += 8 + length
    def starts_a_key(extent: tuple[int, int]) -> bool:  # not a batch continuing a set
        record = msgpack.unpackb(data[extent[0] + 8:extent[1]], raw=False)
        return record[0] != 1 or record[1][0][1] != 2

    # Two adjacent batches, each starting with a key of its own, followed by one too.
    a, b = next((a, b) for a, b, c in zip(offsets[1:], offsets[2:], offsets[3:], strict=False)
                if starts_a_key(a) and starts_a_key(b) and starts_a_key(c))
    return data[:a[0]] + data[b[0]:b[1]] + data[a[0]:a[1]] + data[b[1]:]


BAD_FILES = {
    "truncated": (lambda d: d[: len(d) * 2 // 3], "truncated"),
    "truncated in the header": (lambda d: d[:5], "shorter than its header"),
    "empty": (lambda d: b"", "the file is empty"),
    "corrupted": (_flip_middle, "CRC mismatch"),
    "records reordered": (_reordered, "trailer checksum mismatch"),
    "a text file": (lambda d: b"key1,value1\nkey2,value2\n" * 20, "It looks like a text file"),
    "a WAL segment": (lambda d: b"RKVWAL\x01\x00" + os.urandom(200),
                      "It looks like a replikv write-ahead log segment"),
    "gzipped": (lambda d: b"\x1f\x8b\x08\x00" + os.urandom(100), "decompress it first"),
    "newer version": (_newer, "written by a newer replikv: format 2"),
}


@pytest.fixture(params=sorted(BAD_FILES))
def bad_file(request: pytest.FixtureRequest, backup: Path, tmp_path: Path) -> tuple[Path, str]:
    damage, expected = BAD_FILES[request.param]
    path = tmp_path / f"bad-{request.param.replace(' ', '-')}.rkvsnap"
    path.write_bytes(damage(backup.read_bytes()))
    return path, expected


def test_verify_names_what_is_wrong(bad_file: tuple[Path, str]) -> None:
    path, expected = bad_file
    with pytest.raises(CorruptSnapshotError) as caught:
        inspect_backup(path)
    message = explain(caught.value)
    assert expected in message and str(path) in message and "not a usable backup" in message
    result = CliRunner().invoke(main, ["backup", "verify", str(path)])
    assert result.exit_code == 1 and expected in result.output, result.output
    result = CliRunner().invoke(main, ["backup", "verify", str(path), "--json"])
    assert result.exit_code == 1 and '"ok": false' in result.output


def test_restore_of_a_bad_file_changes_nothing(bad_file: tuple[Path, str],
                                               tmp_path: Path) -> None:
    path, expected = bad_file
    parent = tmp_path / "nodes"
    data_dir = existing_data_dir(parent)
    before = tree(parent)
    result = CliRunner().invoke(main, ["restore", "--from", str(path), "--data-dir",
                                       str(data_dir), "--node-id", "n1", "--peers", PEERS_FLAG,
                                       "--force"])
    assert result.exit_code == 1 and expected in result.output, result.output
    assert "Nothing was changed" in result.output
    assert tree(parent) == before  # byte for byte, and no temp dir left beside it


def test_restore_of_a_bad_file_into_a_new_dir_creates_nothing(bad_file: tuple[Path, str],
                                                              tmp_path: Path) -> None:
    path, _ = bad_file
    with pytest.raises((CorruptSnapshotError, BackupError)):
        restore_data_dir(BackupFileSeed(path), tmp_path / "new" / "deep" / "n1",
                         node_id="n1", peers=PEERS, cluster_id="c", fsync=False)
    assert not (tmp_path / "new").exists()


def test_a_backup_whose_keys_do_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    state = sample_state(50)
    manifest = {"index": 9, "term": 2, "created_ms": T0, "node_id": "a1", "cluster_id": "c",
                "replication_mode": "passive",
                "extra": {"membership": OLD_MEMBERS.encode(), "time_ms": T0}}
    cursor = state.begin_snapshot()
    with SnapshotWriter(tmp_path, manifest, fsync=False) as writer:
        while (batch := cursor.next_batch(10)) is not None:
            writer.add_batch(batch)
        cursor_digest = cursor.state_digest()
        wrong = hashlib.md5(cursor_digest.encode()).hexdigest()
        path = writer.finish(state_digest=wrong).path
    with pytest.raises(BackupError, match="do not rebuild the state"):
        inspect_backup(path)
    target = tmp_path / "n1"
    with pytest.raises(BackupError, match="do not rebuild the state"):
        restore_data_dir(BackupFileSeed(path), target, node_id="n1", peers=PEERS,
                         cluster_id="c", fsync=False)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if ".n1." in p.name]


# ---- the pure parts of a restore ----


def test_the_restored_manifest_keeps_the_state_and_replaces_the_cluster(backup: Path) -> None:
    source = read_manifest(backup)
    m = restored_manifest(source, node_id="n2", cluster_id="new-c", peers=PEERS,
                          restored_ms=T0 + 99)
    assert (m["index"], m["term"], m["created_ms"]) == (120, 4, T0 + 5)
    assert (m["node_id"], m["cluster_id"], m["replication_mode"]) == ("n2", "new-c", "passive")
    assert m["extra"]["time_ms"] == T0 + 1
    membership = Membership.decode(m["extra"]["membership"])
    assert membership.voters == ("n1", "n2", "n3") and membership.learners == ()
    assert decode_address_book(membership.context) == {i: {"peer": a} for i, a in PEERS.items()}
    assert m["extra"]["restored_from"] == {
        "cluster_id": "replikv-original", "node_id": "a2", "index": 120, "term": 4,
        "created_ms": T0 + 5, "restored_ms": T0 + 99}
    assert source.manifest["extra"]["membership"] == OLD_MEMBERS.encode()  # not mutated


def test_a_new_cluster_id_is_the_same_for_every_node_and_new() -> None:
    one = new_cluster_id(b"\x01" * 32, PEERS)
    assert one == new_cluster_id(b"\x01" * 32, dict(reversed(PEERS.items())))
    assert one != new_cluster_id(b"\x02" * 32, PEERS)
    assert one != new_cluster_id(b"\x01" * 32, {"n1": "h:1"})
    assert one.startswith("replikv-") and one != default_cluster_id(PEERS)


def test_bad_members_are_refused(backup: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not one of the members"):
        restore_data_dir(BackupFileSeed(backup), tmp_path / "x", node_id="n9", peers=PEERS,
                         cluster_id="c")
    with pytest.raises(BackupError, match="not a valid member id"):
        restore_data_dir(BackupFileSeed(backup), tmp_path / "x", node_id="bad id",
                         peers={"bad id": "h:1"}, cluster_id="c")
    with pytest.raises(BackupError, match="duplicate|invalid"):
        cluster_membership({"n1": "h:1", "bad=id": "h:2"})
    assert not (tmp_path / "x").exists()


def test_check_target(tmp_path: Path) -> None:
    assert check_target(tmp_path / "missing", force=False) is False
    (tmp_path / "empty").mkdir()
    assert check_target(tmp_path / "empty", force=False) is False
    full = existing_data_dir(tmp_path)
    with pytest.raises(RestoreRefused, match="is not empty .*LOCK, hardstate, meta, wal/"):
        check_target(full, force=False)
    assert check_target(full, force=True) is True
    (tmp_path / "file").write_text("x")
    with pytest.raises(RestoreRefused, match="not a directory"):
        check_target(tmp_path / "file", force=True)
    (tmp_path / "link").symlink_to(full)
    with pytest.raises(RestoreRefused, match="symbolic link"):
        check_target(tmp_path / "link", force=True)


def test_swap_replaces_and_removes_the_old_only_after(tmp_path: Path) -> None:
    target, new = tmp_path / "d", tmp_path / ".d.restore-1"
    target.mkdir()
    (target / "old").write_text("old")
    new.mkdir()
    (new / "new").write_text("new")
    assert swap_into_place(new, target) is True
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert [p.name for p in target.iterdir()] == ["new"]
    fresh = tmp_path / ".e.restore-1"
    fresh.mkdir()
    assert swap_into_place(fresh, tmp_path / "e") is False and (tmp_path / "e").is_dir()


def test_swap_puts_the_old_back_if_the_new_cannot_be_renamed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, new = tmp_path / "d", tmp_path / ".d.restore-1"
    target.mkdir()
    (target / "old").write_text("old")
    new.mkdir()
    real_rename = os.rename
    calls = []

    def flaky_rename(src: object, dst: object) -> None:
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="No space"):
        swap_into_place(new, target)
    assert (target / "old").read_text() == "old" and new.is_dir()


# ---- restoring ----


def start_node(data_dir: Path, node_id: str = "n1", **extra: object) -> NodeServer:
    srv = NodeServer(load_settings(None, {
        "id": node_id, "data_dir": data_dir, "listen": "127.0.0.1:7001",
        "peer_listen": PEERS[node_id], "peers": PEERS_FLAG, **extra}))
    srv.open_storage()
    return srv


def stop_node(srv: NodeServer) -> None:
    srv.wal.close()
    srv.datadir.close()
    srv._disk.shutdown()
    srv.snapshots.close()


def test_a_restored_data_dir_starts_a_node_from_the_backup(backup: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "nodes" / "n1"
    keys: list[int] = []
    result = restore_data_dir(BackupFileSeed(backup), data_dir, node_id="n1", peers=PEERS,
                              cluster_id=default_cluster_id(PEERS), on_keys=keys.append)
    state = sample_state()
    assert sum(keys) == state.key_count() and result.digest_checked and not result.replaced
    assert result.source_cluster_id == "replikv-original"
    assert sorted(p.name for p in data_dir.iterdir()) == ["LOCK", "hardstate", "meta",
                                                          "snapshots", "wal"]
    assert load_hard_state(data_dir / "hardstate") == HardState(term=4, voted_for=None)
    assert not list((data_dir / "wal").iterdir())
    assert [p.name for p in (tmp_path / "nodes").iterdir()] == ["n1"]  # no debris beside it
    srv = start_node(data_dir)
    try:
        node, raft = srv.node, srv.node.raft
        assert node.applied_index == 120 and raft.commit_index == 120
        assert (raft.log.offset, raft.log.offset_term, raft.term) == (120, 4, 4)
        assert raft.membership.voters == ("n1", "n2", "n3") and raft.membership.learners == ()
        assert node.state.digest() == state.digest()
        assert len(node.sessions) == 2 and node.state_time_ms == T0 + 1
        assert srv.member_addresses()["n3"]["peer"] == PEERS["n3"]
    finally:
        stop_node(srv)


def test_restore_refuses_a_non_empty_dir_without_force(backup: Path, tmp_path: Path) -> None:
    data_dir = existing_data_dir(tmp_path / "nodes")
    before = tree(tmp_path / "nodes")
    result = CliRunner().invoke(main, ["restore", "--from", str(backup), "--data-dir",
                                       str(data_dir), "--node-id", "n1", "--peers", PEERS_FLAG])
    assert result.exit_code == 1 and "is not empty" in result.output and "--force" in (
        result.output)
    assert tree(tmp_path / "nodes") == before
    result = CliRunner().invoke(main, ["restore", "--from", str(backup), "--data-dir",
                                       str(data_dir), "--node-id", "n1", "--peers", PEERS_FLAG,
                                       "--force"])
    assert result.exit_code == 0, result.output
    assert "its old contents were replaced" in result.output
    assert "replikv node --id n1" in result.output and "--cluster-id replikv-original" in (
        result.output)
    assert not (data_dir / "wal" / "00000000000000000001.wal").exists()
    assert [p.name for p in (tmp_path / "nodes").iterdir()] == ["n1"]
    assert inspect_backup(next((data_dir / "snapshots").iterdir())).voters == ("n1", "n2", "n3")


def test_restore_refuses_a_data_dir_a_node_is_using(backup: Path, tmp_path: Path) -> None:
    data_dir = existing_data_dir(tmp_path / "nodes")
    before = tree(tmp_path / "nodes")
    holder = os.open(data_dir / "LOCK", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(RestoreRefused, match="in use by a running replikv process"):
            restore_data_dir(BackupFileSeed(backup), data_dir, node_id="n1", peers=PEERS,
                             cluster_id="c", force=True)
    finally:
        os.close(holder)
    assert tree(tmp_path / "nodes") == before


def test_a_failure_midway_leaves_the_old_data_dir_as_it_was(
        backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = existing_data_dir(tmp_path / "nodes")
    before = tree(tmp_path / "nodes")
    import replikv.backup.restore as restore_module

    def failing_verify(*args: object, **kwargs: object) -> None:
        raise BackupError("the disk lied")

    monkeypatch.setattr(restore_module, "verify_seeded", failing_verify)
    with pytest.raises(BackupError, match="the disk lied"):
        restore_data_dir(BackupFileSeed(backup), data_dir, node_id="n1", peers=PEERS,
                         cluster_id="c", force=True)
    assert tree(tmp_path / "nodes") == before


def test_cluster_ids_for_restore(backup: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["restore", "--from", str(backup), "--node-id", "n1", "--peers", PEERS_FLAG]
    result = runner.invoke(main, [*base, "--data-dir", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    import json

    assert json.loads(result.output)["cluster_id"] == "replikv-original"
    new_ids = []
    for name in ("b", "c"):
        result = runner.invoke(main, [*base, "--data-dir", str(tmp_path / name),
                                      "--new-cluster-id", "--json"])
        assert result.exit_code == 0, result.output
        new_ids.append(json.loads(result.output)["cluster_id"])
    assert new_ids[0] == new_ids[1] != "replikv-original"
    result = runner.invoke(main, [*base, "--data-dir", str(tmp_path / "d"), "--cluster-id", "x",
                                  "--new-cluster-id"])
    assert result.exit_code == 2 and "not both" in result.output
    # The node refuses to start as another cluster than the data dir's, and says which.
    with pytest.raises(Exception, match="belongs to cluster 'replikv-original'"):
        start_node(tmp_path / "a")
    srv = start_node(tmp_path / "a", cluster_id="replikv-original")
    stop_node(srv)


def test_an_active_mode_backup_restores_as_active(tmp_path: Path) -> None:
    path = write_backup(tmp_path / "made", mode="active")
    data_dir = tmp_path / "n1"
    result = CliRunner().invoke(main, ["restore", "--from", str(path), "--data-dir",
                                       str(data_dir), "--node-id", "n1", "--peers", PEERS_FLAG,
                                       "--cluster-id", default_cluster_id(PEERS)])
    assert result.exit_code == 0, result.output
    assert "--replication active" in result.output
    with pytest.raises(Exception, match="replication = 'active'"):
        start_node(data_dir)
    stop_node(start_node(data_dir, replication="active"))


# ---- writing a downloaded backup ----


def reader_of(data: bytes):
    view = memoryview(data)
    position = [0]

    def read(size: int) -> bytes:
        chunk = bytes(view[position[0]:position[0] + size])
        position[0] += len(chunk)
        return chunk

    return read


def test_a_downloaded_backup_is_named_only_once_verified(backup: Path, tmp_path: Path) -> None:
    data = backup.read_bytes()
    dest = tmp_path / "out.rkvsnap"
    summary, _ = write_backup_file(reader_of(data), len(data), dest)
    assert dest.read_bytes() == data and summary.path == str(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["backup.rkvsnap", "made",
                                                                 "out.rkvsnap"])
    with pytest.raises(BackupError, match="appeared while the backup was taken"):
        write_backup_file(reader_of(data), len(data), dest)
    write_backup_file(reader_of(data), len(data), dest, force=True)
    # Cut short: the connection closed early. Nothing named, no temp file left.
    other = tmp_path / "cut.rkvsnap"
    with pytest.raises(BackupError, match="closed the connection after"):
        write_backup_file(reader_of(data[:1000]), len(data), other)
    assert not other.exists() and not (tmp_path / "cut.rkvsnap.tmp").exists()
    # Damaged in transit: verification refuses it.
    with pytest.raises(CorruptSnapshotError):
        write_backup_file(reader_of(_flip_middle(data)), len(data), other)
    assert not other.exists() and not (tmp_path / "cut.rkvsnap.tmp").exists()


def test_a_backup_being_written_is_synced_as_it_goes(backup: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """fdatasync every SYNC_EVERY_BYTES, not only one fsync at the end: a node's scheduled
    backup would otherwise hold up the node's own log fsyncs while the disk took it all."""
    from replikv.backup import download

    data = backup.read_bytes()
    every = 16 * 1024
    monkeypatch.setattr(download, "SYNC_EVERY_BYTES", every)
    monkeypatch.setattr(download, "CHUNK_BYTES", 4096)
    synced_at: list[int] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced_at.append(os.fstat(fd).st_size)
        real_fdatasync(fd)

    monkeypatch.setattr(download.os, "fdatasync", fdatasync)
    dest = tmp_path / "synced.rkvsnap"
    write_backup_file(reader_of(data), len(data), dest)
    assert dest.read_bytes() == data
    assert len(data) > 4 * every and len(synced_at) == len(data) // every
    assert all(b - a == every for a, b in zip([0, *synced_at], synced_at))


def test_a_backup_is_named_only_if_its_verifier_accepts_it(backup: Path,
                                                           tmp_path: Path) -> None:
    data = backup.read_bytes()
    seen: list[Path] = []

    def refuse(path: Path):
        seen.append(path)
        assert path.read_bytes() == data  # written in full (and fsynced) before it is checked
        raise BackupError("not today")

    dest = tmp_path / "refused.rkvsnap"
    with pytest.raises(BackupError, match="not today"):
        write_backup_file(reader_of(data), len(data), dest, verify=refuse)
    assert seen == [tmp_path / "refused.rkvsnap.tmp"]
    assert not dest.exists() and not seen[0].exists()


def test_a_child_process_verifies_a_scheduled_backup(backup: Path, tmp_path: Path) -> None:
    """What a node's scheduled backups use: the same verdicts as inspect_backup, from another
    process, so a million keys of Python do not hold the node's interpreter lock."""
    from replikv.backup.verify_child import verify_in_child

    summary = verify_in_child(backup)
    assert summary == inspect_backup(backup) and summary.digest_checked
    bad = tmp_path / "flipped.rkvsnap"
    bad.write_bytes(_flip_middle(backup.read_bytes()))
    with pytest.raises(CorruptSnapshotError) as caught:
        inspect_backup(bad)
    with pytest.raises(BackupError) as from_child:
        verify_in_child(bad)
    assert str(from_child.value) == explain(caught.value)
    with pytest.raises(BackupError, match="No such file"):
        verify_in_child(tmp_path / "missing.rkvsnap")
    # Through write_backup_file, as the node calls it: a damaged copy is never named.
    dest = tmp_path / "scheduled.rkvsnap"
    with pytest.raises(BackupError, match="not a usable backup"):
        write_backup_file(reader_of(bad.read_bytes()), bad.stat().st_size, dest,
                          verify=verify_in_child)
    assert not dest.exists() and not (tmp_path / "scheduled.rkvsnap.tmp").exists()
    summary, _ = write_backup_file(reader_of(backup.read_bytes()), backup.stat().st_size, dest,
                                   verify=verify_in_child)
    assert summary.path == str(dest) and summary.key_count == inspect_backup(backup).key_count


def test_a_verifier_whose_node_is_gone_stops(backup: Path) -> None:
    """The child exits at once when the process that started it is not its parent (a node
    killed with -9 while its backup was being verified), printing no verdict."""
    import subprocess
    import sys

    from replikv.backup.verify_child import ORPHANED_EXIT

    done = subprocess.run([sys.executable, "-m", "replikv.backup.verify_child", str(backup),
                           "1"], capture_output=True, timeout=60, check=False)
    assert done.returncode == ORPHANED_EXIT and done.stdout == b""
    done = subprocess.run([sys.executable, "-m", "replikv.backup.verify_child", str(backup),
                           str(os.getpid())], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0 and b'"ok": true' in done.stdout


def test_backup_create_refuses_to_overwrite_before_asking_anyone(backup: Path) -> None:
    result = CliRunner().invoke(main, ["backup", "create", "--from", "127.0.0.1:1", "--to",
                                       str(backup)])
    assert result.exit_code == 1 and "exists; pass --force" in result.output


# ---- forcing a snapshot for a backup ----


def test_a_forced_snapshot_ignores_the_thresholds_but_not_an_unchanged_state() -> None:
    cluster = CoreCluster()
    leader = cluster.elect()
    for i in range(3):
        cluster.call(leader, "SET", f"k{i}", "v")
    node = cluster.nodes[leader]
    assert node.config.snapshot_entries == 0 and node.start_snapshot() is None
    job = node.start_snapshot(force=True)
    assert job is not None and job.index == node.applied_index
    while job.cursor.next_batch(100) is not None:
        pass
    assert node.snapshot_verdict(job) == "commit"
    node.snapshot_saved(job, 100)
    assert node.start_snapshot(force=True) is None  # the snapshot already holds this state


def test_open_backup_serves_the_snapshot_holding_the_applied_state(
        backup: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    restore_data_dir(BackupFileSeed(backup), data_dir, node_id="n1", peers=PEERS,
                     cluster_id=default_cluster_id(PEERS), fsync=False)
    srv = start_node(data_dir)
    try:
        source = asyncio.run(srv.snapshots.open_backup())
        try:
            assert (source.info.index, source.info.term) == (120, 4)
            data = source.read_chunk(0, source.size_bytes)
            assert zlib.crc32(data) == zlib.crc32(next(snapshot_dir(data_dir).iterdir())
                                                  .read_bytes())
        finally:
            source.close()
        assert srv.snapshots.backups_taken == 1
    finally:
        stop_node(srv)



def test_a_node_that_applied_nothing_has_no_backup_to_give(tmp_path: Path) -> None:
    from replikv.server.snapshots import BackupUnavailable

    srv = start_node(tmp_path / "n1")
    try:
        with pytest.raises(BackupUnavailable, match="applied nothing yet"):
            asyncio.run(srv.snapshots.open_backup())
        assert srv.snapshots.backups_taken == 0
    finally:
        stop_node(srv)
