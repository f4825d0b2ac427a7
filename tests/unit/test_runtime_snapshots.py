"""A node's start-up with snapshots on disk: which snapshot it loads, and which log entries it
keeps after it (the log must continue the snapshot, or it restarts after it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replikv.config import load_settings
from replikv.raft.membership import Membership
from replikv.server.runtime import NodeServer
from replikv.server.snapshots import snapshot_dir
from replikv.sessions import SessionTable
from replikv.state import KVState
from replikv.storage.errors import StorageError
from replikv.storage.snapshot import SnapshotStore
from replikv.storage.wal import WriteAheadLog

PEERS = "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"


def settings(tmp_path: Path):
    return load_settings(None, {"id": "n1", "data_dir": tmp_path / "n1",
                                "listen": "127.0.0.1:7001", "peer_listen": "127.0.0.1:7101",
                                "peers": PEERS})


def write_snapshot(tmp_path: Path, index: int, term: int, keys: int) -> None:
    state = KVState()
    for i in range(keys):
        state.apply_command([b"SET", f"k{i}".encode(), f"v{index}".encode()], 1000)
    store = SnapshotStore(snapshot_dir(tmp_path / "n1"))
    writer = store.writer({"index": index, "term": term, "created_ms": 1, "node_id": "n1",
                           "cluster_id": "c", "replication_mode": "passive",
                           "extra": {"membership": Membership(("n1", "n2", "n3")).encode(),
                                     "time_ms": 1000}})
    cursor = state.begin_snapshot()
    while (batch := cursor.next_batch(100)) is not None:
        writer.add_batch(batch)
    writer.add_section("sessions", SessionTable().to_bytes())
    writer.finish(state_digest=cursor.state_digest())


def write_log(tmp_path: Path, terms: dict[int, int]) -> None:
    """Log entries {index: term}, contiguous, as the WAL holds them."""
    (tmp_path / "n1").mkdir(parents=True, exist_ok=True)
    wal, _ = WriteAheadLog.open(tmp_path / "n1" / "wal")
    first = min(terms)
    wal.append([(i, terms[i], b"") for i in range(first, max(terms) + 1)])
    wal.sync()
    wal.close()


def start(tmp_path: Path) -> NodeServer:
    srv = NodeServer(settings(tmp_path))
    srv.open_storage()
    return srv


def stop(srv: NodeServer) -> None:
    srv.wal.close()
    srv.datadir.close()
    srv._disk.shutdown()
    srv.snapshots.close()


def test_the_log_after_a_matching_snapshot_is_kept(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 10, 2, keys=5)
    write_log(tmp_path, {i: 1 if i < 8 else 2 for i in range(1, 16)})
    srv = start(tmp_path)
    try:
        log = srv.node.raft.log
        assert (log.offset, log.offset_term, log.last_index) == (10, 2, 15)
        assert srv.node.applied_index == 10 and srv.node.state.key_count() == 5
        assert srv.node.raft.snapshot.index == 10
    finally:
        stop(srv)


@pytest.mark.parametrize("terms", [
    {i: 1 for i in range(1, 6)},  # ends before the snapshot
    {i: 1 for i in range(1, 16)},  # holds another entry (term 1) at the snapshot's index
])
def test_a_log_that_does_not_continue_the_snapshot_is_reset(tmp_path: Path, terms) -> None:
    write_snapshot(tmp_path, 10, 2, keys=3)
    write_log(tmp_path, terms)
    srv = start(tmp_path)
    try:
        log = srv.node.raft.log
        assert (log.offset, log.last_index) == (10, 10)
        assert srv.wal.last_index == 0  # nothing stale can follow the snapshot on disk
        srv.wal.append([(11, 3, b"next")])  # and the log goes on after it
    finally:
        stop(srv)
    reopened = start(tmp_path)
    try:
        assert reopened.node.raft.log.last_index == 11
    finally:
        stop(reopened)


def test_a_gap_between_snapshot_and_log_refuses_to_start(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 10, 2, keys=1)
    write_log(tmp_path, {i: 2 for i in range(20, 25)})
    with pytest.raises(StorageError, match="missing"):
        start(tmp_path)


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 10, 2, keys=4)
    write_snapshot(tmp_path, 20, 2, keys=7)
    newest = max(snapshot_dir(tmp_path / "n1").glob("*.rkvsnap"))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    write_log(tmp_path, {i: 2 for i in range(8, 26)})
    srv = start(tmp_path)
    try:
        assert srv.node.raft.snapshot.index == 10 and srv.node.state.key_count() == 4
        assert srv.node.raft.log.last_index == 25
    finally:
        stop(srv)


def test_freed_memory_is_given_back_and_counted():
    from replikv.server.snapshots import release_free_memory, resident_bytes

    before = resident_bytes()
    assert before > 10 * 2**20  # this interpreter's own VmRSS, read from /proc/self/statm
    returned = release_free_memory()
    assert 0 <= returned <= before


def test_a_snapshot_is_synced_as_it_is_written_one_sync_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The disk writes a big snapshot back in pieces while it is written, not all at finish(),
    # where the log's fsyncs (on every write's path) would queue behind the whole file.
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from replikv.server import snapshots

    monkeypatch.setattr(snapshots, "SYNC_EVERY_BYTES", 64 * 1024)
    state = KVState()
    for i in range(20_000):
        state.apply_command([b"SET", f"key:{i}".encode(), b"v" * 40], 1000)
    store = SnapshotStore(tmp_path)
    writer = store.writer({"index": 5, "term": 1, "created_ms": 1, "node_id": "n1",
                           "cluster_id": "c", "replication_mode": "passive"})
    syncs: list[tuple[int, str]] = []
    in_flight = []
    real_sync = writer.sync_written

    def recording_sync() -> None:
        in_flight.append(1)
        assert len(in_flight) == 1, "two syncs at once"
        syncs.append((writer.size_bytes, threading.current_thread().name))
        real_sync()
        in_flight.pop()

    writer.sync_written = recording_sync  # type: ignore[method-assign]
    cursor = state.begin_snapshot()
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="io")
    try:
        asyncio.run(snapshots.write_state(writer, cursor, io))
    finally:
        io.shutdown()
    total = writer.size_bytes
    assert total > 10 * 64 * 1024
    assert total // (64 * 1024) // 2 <= len(syncs) <= total // (64 * 1024)
    assert all(name.startswith("io") for _, name in syncs)
    writer.add_section("sessions", SessionTable().to_bytes())
    info = writer.finish(state_digest=cursor.state_digest())
    assert info.index == 5
    cursor.close()


def test_writing_a_snapshot_waits_for_its_sync_before_failing(tmp_path: Path) -> None:
    # A failing sync is the writer's error, raised only once no sync runs on the file.
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from replikv.server import snapshots

    state = KVState()
    for i in range(2_000):
        state.apply_command([b"SET", f"k{i}".encode(), b"v" * 3000], 1000)
    writer = SnapshotStore(tmp_path).writer({"index": 5, "term": 1, "created_ms": 1,
                                             "node_id": "n1", "cluster_id": "c",
                                             "replication_mode": "passive"})

    def failing_sync() -> None:
        raise OSError(5, "Input/output error")

    writer.sync_written = failing_sync  # type: ignore[method-assign]
    io = ThreadPoolExecutor(max_workers=1)
    try:
        with pytest.raises(OSError, match="Input/output error"):
            asyncio.run(snapshots.write_state(writer, state.begin_snapshot(), io))
    finally:
        io.shutdown()
        writer.abort()
