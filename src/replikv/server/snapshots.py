"""The runtime's side of snapshots: writing them without pausing, sending and receiving them.

The decisions live in the node core (when a snapshot is due, whether it may be kept, what to
compact) and the Raft core (who needs a snapshot, which chunk to send next). This module does
their I/O with the snapshot store (`replikv.storage.snapshot`):

- writing: a background task pulls record batches from the state's copy-on-write cursor a few
  thousand keys at a time, yielding to the event loop between batches, so the node keeps
  serving while a snapshot of any size is written; once the node core says the snapshot's index
  has committed, it is fsynced and renamed into place (in the disk thread), the log is
  compacted and old WAL segments and snapshots are deleted;
- sending: InstallSnapshot messages leave the core without their bytes; `fill` reads the chunk
  from the snapshot file as the message is sent (files being sent stay open, so retention
  cannot pull them away mid-transfer);
- receiving: chunks are appended to a partial file (which survives a restart: the transfer
  resumes); the last one triggers a full verification, then the state is loaded from the file in
  the disk thread and handed to the node core, and the WAL is reset if the log restarts after
  the snapshot.

A snapshot's manifest carries, besides index and term, `extra = {"membership": <config entry
bytes>, "time_ms": <the state's time>, "feature_level": <the cluster's level at the index, see
replikv.features; absent in snapshots written before feature levels, which are at the legacy
level>}`.

Online backups (`GET /backup` on the admin port, `replikv backup create`) are snapshots taken on
demand: `open_backup` forces a job whatever the thresholds, waits until it is durable (and, on a
leader, until its index committed) and hands back the file opened for reading. Only one cursor
may run over a state at a time, so the periodic writer and backups take turns on one lock.
A backup's snapshot is an ordinary snapshot afterwards (it compacts the log like any other).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from replikv.features import FEATURE_LEVEL_LEGACY, level_check
from replikv.invariants import InvariantViolation
from replikv.raft.core import SnapshotMeta
from replikv.raft.membership import Membership, MembershipError
from replikv.raft.messages import InstallSnapshot
from replikv.sessions import SessionTable
from replikv.state import KVState
from replikv.storage.errors import StorageError
from replikv.storage.files import SYNC_EVERY_BYTES  # in the snapshot I/O thread (write_state)
from replikv.storage.snapshot import (
    CorruptSnapshotError,
    SnapshotInfo,
    SnapshotReceiver,
    SnapshotSource,
    SnapshotStore,
    SnapshotWriter,
    iter_snapshot,
)

if TYPE_CHECKING:
    from replikv.node import NodeCore, SnapshotJob
    from replikv.server.runtime import NodeServer
    from replikv.state import StateSnapshotCursor

log = logging.getLogger("replikv.snapshots")

SNAPSHOTS_KEPT = 2
# Keys per cursor batch, the snapshot's work between two yields to clients and peers (about
# 2.4 us a key, so ~1.2 ms). 2,000 held the loop ~5 ms at a time: on a 1M-key store under set64,
# five interleaved runs each (benchmarks/results/large_store_snapshot_batch.txt) gave a median
# p99 of 13.0 ms at 500 against 29.6 ms at 2,000, and 10,390 SETs/s against 9,131.
BATCH_ITEMS = 500
CHECK_EVERY_S = 0.1  # how often the writer task asks whether a snapshot is due
SNAPSHOT_RETRY_S = 10.0  # after a snapshot failed (a full disk, say)
SOURCES_OPEN_MAX = 4
# A backup's snapshot is abandoned when its entry was replaced (a leader lost office) or a
# snapshot from the leader replaced the state meanwhile; it is then taken again, this often.
BACKUP_ATTEMPTS_MAX = 3


class SnapshotLoadError(Exception):
    pass


class BackupUnavailable(Exception):
    """This node cannot give a backup now; the message says why and what to do."""


def load_snapshot(info: SnapshotInfo) -> tuple[SnapshotMeta, KVState, int, SessionTable]:
    """Read and verify a snapshot file into a fresh state (raises CorruptSnapshotError or
    SnapshotLoadError; nothing is used unless the whole file checks out)."""
    extra = info.manifest.get("extra") or {}
    try:
        membership = Membership.decode(extra["membership"])
        time_ms = int(extra.get("time_ms", 0))
    except (KeyError, TypeError, ValueError, MembershipError) as e:
        raise SnapshotLoadError(f"snapshot {info.path} lacks a valid membership: {e}") from None
    try:
        # Written by replikv since feature levels; an older snapshot is at the legacy level.
        feature_level = level_check(extra.get("feature_level", FEATURE_LEVEL_LEGACY),
                                    f"snapshot {info.path}")
    except ValueError as e:
        raise SnapshotLoadError(str(e)) from None
    ended: list[SnapshotInfo] = []
    sections: dict[str, bytes] = {}

    def items() -> Iterator[list]:
        for event in iter_snapshot(info.path):
            if event[0] == "batch":
                yield from event[1]
            elif event[0] == "section":
                sections[event[1]] = event[2]
            elif event[0] == "end":
                ended.append(event[1])

    state = KVState.from_records(items())
    state.feature_level = feature_level
    if not ended:
        raise SnapshotLoadError(f"snapshot {info.path} ended without its trailer")
    digest = ended[0].state_digest
    if digest is not None and digest != state.digest():
        raise SnapshotLoadError(f"snapshot {info.path}: the restored state's digest differs "
                                "from the one recorded when it was written")
    try:
        sessions = SessionTable.from_bytes(sections.get("sessions", SessionTable().to_bytes()))
    except ValueError as e:
        raise SnapshotLoadError(f"snapshot {info.path}: bad session table: {e}") from None
    return SnapshotMeta(info.index, info.term, membership), state, time_ms, sessions


def load_latest(store: SnapshotStore
                ) -> tuple[SnapshotMeta, KVState, int, SessionTable, SnapshotInfo] | None:
    """The newest snapshot that loads, trying older ones if the newest is damaged."""
    for info in reversed(store.list()):
        started = time.perf_counter()
        try:
            meta, state, time_ms, sessions = load_snapshot(info)
        except (CorruptSnapshotError, SnapshotLoadError) as e:
            log.error("cannot use snapshot %s: %s; trying an older one", info.path, e)
            continue
        log.info("loaded snapshot at index %d (term %d): %d keys in %.1f s", meta.index,
                 meta.term, state.key_count(), time.perf_counter() - started)
        return meta, state, time_ms, sessions, info
    return None


async def write_state(writer: SnapshotWriter, cursor: StateSnapshotCursor,
                      io: ThreadPoolExecutor) -> None:
    """Add the cursor's batches of BATCH_ITEMS keys to `writer`, letting clients and peers in
    between batches, and fdatasync the file every SYNC_EVERY_BYTES in the `io` thread, one sync
    at a time. Returns (or raises) only once no sync is running, so that the caller may finish
    or abort the writer."""
    loop = asyncio.get_running_loop()
    syncing: asyncio.Future | None = None  # the one sync in flight
    synced_at = 0
    try:
        while (batch := cursor.next_batch(BATCH_ITEMS)) is not None:
            writer.add_batch(batch)
            if writer.size_bytes - synced_at >= SYNC_EVERY_BYTES:
                if syncing is not None:
                    await syncing  # at most one at a time: the disk sets the pace
                synced_at = writer.size_bytes
                syncing = loop.run_in_executor(io, writer.sync_written)
            await asyncio.sleep(0)
    finally:
        if syncing is not None:
            await asyncio.wait([syncing])  # never left running on a file about to be closed
    if syncing is not None:
        syncing.result()  # its error, if any


class SnapshotRuntime:
    def __init__(self, server: NodeServer, store: SnapshotStore) -> None:
        self.server = server
        self.store = store
        self._sources: dict[tuple[int, int], SnapshotSource] = {}
        self._receiver: SnapshotReceiver | None = None
        # Snapshot files are fsynced, verified and loaded in their own thread, not the log's:
        # fsyncing 100 MiB or loading a million keys there would hold up every log write
        # (and so every acknowledgement) behind it. What touches the log (compaction, reset)
        # stays on the log's thread, after the snapshot it depends on is durable.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replikv-snapshot-io")
        self._installing: tuple[int, int] | None = None
        # One snapshot cursor per state at a time: the periodic writer and backups take turns.
        self._writing = asyncio.Lock()
        self._abandoned_reason = ""  # why the last job was not kept (for a backup's error)
        self.failures = 0  # snapshots that failed to be written
        self.scheduled_backups = 0
        self.scheduled_failures = 0
        self.last_scheduled_backup: str | None = None
        self.taken = 0
        self.installed = 0
        self.memory_trims = 0  # malloc_trim calls after compaction or an install
        self.memory_returned_bytes = 0  # resident bytes they gave back to the system
        self.last_trim_seconds = 0.0
        self.backups_taken = 0
        self.sent_chunks = 0
        self.last_snapshot_seconds = 0.0
        self.last_snapshot_bytes = 0

    @property
    def node(self) -> NodeCore:
        return self.server.node

    # -- writing ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """The background writer: one snapshot at a time, whenever the node core says so."""
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            async with self._writing:
                job = self.node.start_snapshot()
                if job is None:
                    continue
                try:
                    await self._write(job)
                except (OSError, StorageError) as e:
                    # A full or failing disk: the node goes on serving from its log (which
                    # keeps growing) and tries again later; this is worth an operator's look.
                    self.failures += 1
                    log.error("snapshot at index %d failed, retrying in %.0f s: %s",
                              job.index, SNAPSHOT_RETRY_S, e)
                    await asyncio.sleep(SNAPSHOT_RETRY_S)

    async def open_backup(self) -> SnapshotSource:
        """A snapshot of this node's applied state, taken now, durable, at a committed index,
        opened for reading (the caller closes it; retention may delete the file meanwhile, the
        open file stays readable). If nothing was applied since the last snapshot, that one is
        the backup. The node keeps serving throughout (the copy-on-write cursor), and a leader
        waits at most one request timeout for the snapshot's index to commit. Raises
        BackupUnavailable."""
        timeout_s = self.server.settings.request_timeout_ms / 1000
        reason = ""
        for _attempt in range(BACKUP_ATTEMPTS_MAX):
            async with self._writing:
                job = self.node.start_snapshot(force=True)
                if job is None:
                    info = self._snapshot_of_applied_state()
                    if info is None and self.node.applied_index == 0:
                        raise BackupUnavailable(
                            "this node has applied nothing yet (a new cluster without a "
                            "leader?); try again once it has a leader")
                    if info is None:
                        raise BackupUnavailable(
                            f"the snapshot holding this node's state (index "
                            f"{self.node.applied_index}) is missing from {self.store.directory}"
                            "; back up another member")
                else:
                    info = await self._write(job, commit_timeout_s=timeout_s)
                if info is not None:
                    try:
                        source = SnapshotSource(info)
                    except FileNotFoundError:  # a snapshot installed meanwhile retired it
                        reason = f"snapshot {info.path.name} was removed before it was opened"
                        continue
                    self.backups_taken += 1
                    log.info("backup: serving snapshot at index %d (term %d), %d bytes",
                             info.index, info.term, source.size_bytes)
                    return source
                reason = self._abandoned_reason
        raise BackupUnavailable(f"no snapshot could be kept after {BACKUP_ATTEMPTS_MAX} "
                                f"attempts; the last: {reason}. Try again, or back up another "
                                "member")

    async def run_scheduled_backups(self) -> None:
        """--backup-every: the leader writes a backup into backup_dir every interval (named
        by time and index, written to a temp file, fsynced, verified, renamed) and keeps the
        newest backup_keep. Followers skip their turn; a failure is logged and retried at the
        next interval, never fatal."""
        s = self.server.settings
        backup_dir = s.backup_dir
        if backup_dir is None:  # NodeSettings refuses backup_every without it
            raise InvariantViolation("scheduled backups without a backup_dir")
        loop = asyncio.get_running_loop()
        interval = s.backup_every_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if not self.node.raft.is_leader:
                continue
            try:
                source = await self.open_backup()
            except Exception as e:  # noqa: BLE001 - logged, retried at the next interval
                self.scheduled_failures += 1
                log.error("scheduled backup failed: %s", e)
                continue
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            dest = backup_dir / (f"backup-{stamp}-i{source.info.index}-"
                                 f"t{source.info.term}.rkvsnap")
            try:
                await loop.run_in_executor(None, self._write_scheduled, source, dest)
                removed = await loop.run_in_executor(None, self._prune_backups, backup_dir)
            except Exception as e:  # noqa: BLE001 - logged, retried at the next interval
                self.scheduled_failures += 1
                log.error("scheduled backup to %s failed: %s", dest, e)
                continue
            finally:
                source.close()
            self.scheduled_backups += 1
            self.last_scheduled_backup = str(dest)
            log.info("scheduled backup written: %s (%d bytes, index %d); %d old ones removed",
                     dest, source.size_bytes, source.info.index, removed)

    def _write_scheduled(self, source: SnapshotSource, dest: Path) -> None:
        """In a worker thread: copy the snapshot into a backup file, verified in a child
        process (a second of Python per million keys, which in a thread here would hold the
        interpreter lock against the event loop)."""
        from replikv.backup.download import write_backup_file
        from replikv.backup.verify_child import verify_in_child

        dest.parent.mkdir(parents=True, exist_ok=True)
        offset = 0

        def read(n: int) -> bytes:
            nonlocal offset
            chunk = source.read_chunk(offset, n)
            offset += len(chunk)
            return chunk

        write_backup_file(read, source.size_bytes, dest, verify=verify_in_child)

    def _prune_backups(self, backup_dir: Path) -> int:
        keep = self.server.settings.backup_keep
        backups = sorted(backup_dir.glob("backup-*.rkvsnap"))
        old = backups[:-keep] if len(backups) > keep else []
        for path in old:
            path.unlink(missing_ok=True)
        return len(old)

    def _snapshot_of_applied_state(self) -> SnapshotInfo | None:
        """The stored snapshot holding exactly the applied state, if there is one."""
        raft, applied = self.node.raft, self.node.applied_index
        if raft.snapshot is None or raft.snapshot.index != applied:
            return None
        key = (raft.snapshot.index, raft.snapshot.term)
        return next((i for i in reversed(self.store.list()) if (i.index, i.term) == key), None)

    async def _write(self, job: SnapshotJob, *,
                     commit_timeout_s: float | None = None) -> SnapshotInfo | None:
        """Write the job's snapshot and keep it once its index has committed; None if it was
        abandoned (its entry was replaced, or it did not commit within `commit_timeout_s`)."""
        server, node = self.server, self.node
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        manifest = {"index": job.index, "term": job.term, "created_ms": time.time_ns() // 10**6,
                    "node_id": server.node_id, "cluster_id": server.settings.cluster_id,
                    "replication_mode": server.settings.replication,
                    "extra": {"membership": job.membership.encode(), "time_ms": job.time_ms,
                              "feature_level": job.feature_level}}
        writer = self.store.writer(manifest)
        try:
            await write_state(writer, job.cursor, self._io)
            writer.add_section("sessions", job.sessions)
            deadline = None if commit_timeout_s is None else loop.time() + commit_timeout_s
            while (verdict := node.snapshot_verdict(job)) == "wait":
                if deadline is not None and loop.time() >= deadline:
                    verdict = "timeout"
                    break
                await asyncio.sleep(server.settings.tick_ms / 1000)
            if verdict != "commit":
                self._abandoned_reason = (
                    f"the snapshot at index {job.index} was abandoned: "
                    + ("its entry was replaced or the log moved past it" if verdict == "abort"
                       else f"its index did not commit within {commit_timeout_s:g} s (is a "
                            "majority of the cluster reachable?)"))
                log.info("%s", self._abandoned_reason)
                writer.abort()
                return None
            digest = job.cursor.state_digest()
            info = await loop.run_in_executor(self._io,
                                              lambda: writer.finish(state_digest=digest))
        except BaseException:
            writer.abort()
            raise
        finally:
            job.cursor.close()
        offset = node.snapshot_saved(job, info.size_bytes)
        await server.run_on_disk(self._after_snapshot, offset)
        self.taken += 1
        self.last_snapshot_seconds = time.perf_counter() - started
        self.last_snapshot_bytes = info.size_bytes
        log.info("snapshot at index %d: %d bytes in %.2f s; log compacted through %d",
                 job.index, info.size_bytes, self.last_snapshot_seconds, offset)
        server.wake()
        return info

    def _after_snapshot(self, offset: int) -> None:
        """In the disk thread: drop what the new snapshot made redundant."""
        self.server.wal.drop_segments_through(offset)
        self.store.remove_older_than(SNAPSHOTS_KEPT)
        self._trim_memory()

    def _trim_memory(self) -> None:
        """Give the memory of the log entries compaction just freed back to the system."""
        started = time.perf_counter()
        self.memory_returned_bytes += release_free_memory()
        self.memory_trims += 1
        self.last_trim_seconds = time.perf_counter() - started

    # -- sending ---------------------------------------------------------------------------------

    def fill(self, to: str, message: InstallSnapshot) -> InstallSnapshot | None:
        """The message with its chunk's bytes, or None if the snapshot is gone (the core is
        told and starts that follower over)."""
        key = (message.index, message.snap_term)
        source = self._sources.get(key)
        try:
            if source is None:
                info = next((i for i in self.store.list() if (i.index, i.term) == key), None)
                if info is None:
                    raise FileNotFoundError(f"snapshot {key} is gone")
                source = SnapshotSource(info)
                while len(self._sources) >= SOURCES_OPEN_MAX:
                    self._sources.pop(next(iter(self._sources))).close()
                self._sources[key] = source
            data = source.read_chunk(message.offset, message.length)
        except (OSError, ValueError) as e:
            log.warning("cannot send snapshot %s to %s: %s", key, to, e)
            self.node.raft.snapshot_unavailable(to)
            return None
        self.sent_chunks += 1
        return InstallSnapshot(message.term, message.src, message.index, message.snap_term,
                               source.size_bytes, message.offset, message.length, data)

    # -- receiving -------------------------------------------------------------------------------

    async def receive(self, chunks: list[InstallSnapshot]) -> None:
        server, node = self.server, self.node
        loop = asyncio.get_running_loop()
        for chunk in chunks:
            if (chunk.index, chunk.snap_term) == self._installing or (
                    chunk.index <= node.raft.commit_index):
                continue  # a resent chunk of a snapshot being loaded, or already installed
            rcv = self._receiver
            try:
                if rcv is None or (rcv.index, rcv.term, rcv.total_bytes) != (
                        chunk.index, chunk.snap_term, chunk.size):
                    if rcv is not None:
                        rcv.close()
                    rcv = self._receiver = self.store.begin_receive(chunk.index,
                                                                    chunk.snap_term, chunk.size)
                    log.info("receiving snapshot at index %d (%d bytes) from %s, from byte %d",
                             chunk.index, chunk.size, chunk.src, rcv.offset)
                if chunk.data and chunk.offset == rcv.offset:
                    rcv.write(chunk.offset, chunk.data)
            except (OSError, ValueError) as e:
                log.warning("snapshot chunk from %s refused: %s", chunk.src, e)
                continue
            if rcv.offset < rcv.total_bytes:
                node.raft.snapshot_chunk_saved(chunk, rcv.offset)
                continue
            self._receiver = None
            self._installing = (chunk.index, chunk.snap_term)
            try:
                await self._install(rcv, chunk, loop)
            finally:
                self._installing = None
        server.wake()

    async def _install(self, rcv: SnapshotReceiver, chunk: InstallSnapshot,
                       loop: asyncio.AbstractEventLoop) -> None:
        server, node = self.server, self.node
        started = time.perf_counter()
        try:
            info = await loop.run_in_executor(self._io, rcv.finish)
            meta, state, time_ms, sessions = await loop.run_in_executor(self._io,
                                                                        load_snapshot, info)
        except (CorruptSnapshotError, SnapshotLoadError, OSError) as e:
            log.error("snapshot received from %s is unusable, starting over: %s", chunk.src, e)
            node.raft.snapshot_chunk_saved(chunk, 0)
            return
        if not node.install_snapshot(meta, state, time_ms, sessions, info.size_bytes):
            log.info("snapshot at %d no longer needed (this node has moved past it)", meta.index)
            return
        self.installed += 1
        wal = server.wal
        restart_log = node.raft.log.last_index == meta.index or wal.last_index < meta.index
        await server.run_on_disk(self._after_install, restart_log, meta.index)
        log.info("installed snapshot at index %d (term %d) from %s: %d keys, %d bytes, "
                 "%.2f s after the last chunk", meta.index, meta.term, chunk.src,
                 state.key_count(), info.size_bytes, time.perf_counter() - started)

    def _after_install(self, restart_log: bool, index: int) -> None:
        if restart_log:
            self.server.wal.reset()  # the log now starts after the snapshot
        else:
            self.server.wal.drop_segments_through(index)
        self.store.remove_older_than(SNAPSHOTS_KEPT)
        self._trim_memory()  # the state the snapshot replaced, and the log before it

    def close(self) -> None:
        self._io.shutdown(wait=True)
        for source in self._sources.values():
            source.close()
        self._sources.clear()
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# None until looked up; False where there is no glibc.
_malloc_trim: Callable[[int], object] | Literal[False] | None = None


def release_free_memory() -> int:
    """glibc's malloc_trim(0): hand the free pages inside the heap back to the kernel; the
    resident bytes it released (0 where there is no glibc). Without it the memory of a
    compacted log stays resident: freed log entries leave holes between live keys that
    malloc keeps (measured in benchmarks/memory.py: 1,000,000 keys of 100 B, RSS overhead per
    key 252 B after compaction, about 120 B after the trim). It walks the heap, so it runs
    in the disk thread (ctypes releases the GIL around the call)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if not _malloc_trim:
        return 0
    before = resident_bytes()
    _malloc_trim(0)
    return max(0, before - resident_bytes())


def resident_bytes() -> int:
    """This process's resident set (VmRSS) in bytes; 0 if /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def snapshot_dir(data_dir: Path) -> Path:
    return data_dir / "snapshots"
