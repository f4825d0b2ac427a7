"""What `NodeServer._persist` forces to disk in each fsync mode, counted at os.fsync.

always: the log and the hard state before `_persist` returns (so before any acknowledgement);
batch: the hard state only, the log later by `_sync_wal`; never: nothing at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from replikv.config import load_settings
from replikv.raft.core import Ready
from replikv.server.runtime import NodeServer
from replikv.storage.hardstate import HardState, load_hard_state

from .fsync_recorder import record_fsyncs

PEERS = "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return record_fsyncs(monkeypatch)


def server(tmp_path: Path, mode: str) -> NodeServer:
    settings = load_settings(None, {"id": "n1", "data_dir": tmp_path / "n1",
                                    "listen": "127.0.0.1:7001", "peer_listen": "127.0.0.1:7101",
                                    "peers": PEERS, "fsync": mode})
    srv = NodeServer(settings)
    srv.open_storage()
    return srv


def persist(srv: NodeServer, first: int, *, term: int = 1, vote: str | None = "n1") -> None:
    srv._persist(Ready(hard_state=HardState(term, vote),
                       entries=[(first, term, b""), (first + 1, term, b"x")]))


@pytest.mark.parametrize("mode, log_fsynced, hard_state_fsynced", [
    ("always", True, True), ("batch", False, True), ("never", False, False)])
def test_persist(tmp_path: Path, fsyncs: list[str], mode: str, log_fsynced: bool,
                 hard_state_fsynced: bool) -> None:
    srv = server(tmp_path, mode)
    try:
        fsyncs.clear()
        persist(srv, 1)
        wal_synced = any(p.endswith(".wal") for p in fsyncs)
        hard_state_synced = any(p.endswith("hardstate.tmp") for p in fsyncs)
        assert (wal_synced, hard_state_synced) == (log_fsynced, hard_state_fsynced), fsyncs
        assert load_hard_state(srv.datadir.hard_state_path) == HardState(1, "n1")
        assert srv.disk_stats.entries_written == 2
        assert srv.disk_stats.wal_fsyncs == int(log_fsynced)
        assert srv.disk_stats.fsyncs == int(log_fsynced) + int(hard_state_fsynced)
    finally:
        srv.wal.close()
        srv.datadir.close()
        srv._disk.shutdown()


def test_batch_syncs_the_log_later_and_only_when_something_was_written(
        tmp_path: Path, fsyncs: list[str]) -> None:
    srv = server(tmp_path, "batch")
    try:
        srv._sync_wal()
        assert srv.disk_stats.wal_fsyncs == 0, "nothing written yet: no fsync"
        persist(srv, 1)
        persist(srv, 3)
        fsyncs.clear()
        srv._sync_wal()
        assert [p for p in fsyncs if p.endswith(".wal")] != [] and srv.disk_stats.wal_fsyncs == 1
        srv._sync_wal()
        assert srv.disk_stats.wal_fsyncs == 1, "nothing written since: no second fsync"
        assert not srv.wal.unsynced
    finally:
        srv.wal.close()
        srv.datadir.close()
        srv._disk.shutdown()



def test_a_batch_is_persisted_on_the_loop_only_while_the_disk_is_fast_and_idle(
        tmp_path: Path) -> None:
    """Inline on a fast, idle disk (no thread handoff); in the disk thread behind other disk
    work (order), and once fsyncs have been slow (the loop must keep serving meanwhile)."""
    import asyncio
    import threading

    srv = server(tmp_path, "always")
    threads: list[str] = []
    real_persist = srv._persist

    def recording_persist(rd: Ready) -> None:
        threads.append(threading.current_thread().name)
        real_persist(rd)

    srv._persist = recording_persist  # type: ignore[method-assign]

    async def main() -> None:
        ready = lambda first: Ready(entries=[(first, 1, b"x")])
        await srv._persist_ready(ready(1))
        assert threads[-1] == "MainThread"
        # Behind a job in the disk thread: queued after it.
        blocker = threading.Event()
        busy = srv.run_on_disk(blocker.wait, 5.0)
        pending = asyncio.ensure_future(srv._persist_ready(ready(2)))
        await asyncio.sleep(0.05)
        assert len(threads) == 1, "it ran before the disk job queued ahead of it"
        blocker.set()
        await busy
        await pending
        assert threads[-1].startswith("replikv-disk")
        # A slow disk: the next batch goes to the disk thread too.
        srv.disk_stats.recent_fsync_seconds = 0.050
        await srv._persist_ready(ready(3))
        assert threads[-1].startswith("replikv-disk")
        srv.disk_stats.recent_fsync_seconds = 0.0001
        await srv._persist_ready(ready(4))
        assert threads[-1] == "MainThread"
        assert srv.wal.last_index == 4

    try:
        asyncio.run(main())
    finally:
        srv.wal.close()
        srv.datadir.close()
        srv._disk.shutdown()
