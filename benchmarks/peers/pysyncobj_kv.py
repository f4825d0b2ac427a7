"""A small replicated key-value server on PySyncObj, for benchmarks/compare.py.

    .venv/bin/python benchmarks/peers/pysyncobj_kv.py --self 127.0.0.1:7001 \
        --partners 127.0.0.1:7002,127.0.0.1:7003 --listen 127.0.0.1:6001 --data-dir DIR

One process is one Raft member: a `SyncObj` (PySyncObj's Raft, ticking in its own thread) whose
state is a dict changed only by `@replicated` methods, and an asyncio front end (uvloop where
installed) speaking RESP, requests parsed by `hiredis.Reader`. Start three with each other's
`--self` addresses as `--partners`.

Commands:
  SET key value        replicated; +OK only once PySyncObj's callback reports the entry
                       committed (a majority has it in its log) and applied on this node. The
                       call is `sync=False` with `callback=`; the callback runs in PySyncObj's
                       tick thread and hops back to the event loop with call_soon_threadsafe.
                       A failure (FAIL_REASON: no leader, discarded, queue full, ...) is an
                       error reply. On a follower PySyncObj forwards the command to the leader.
  MSET k v [k v ...]   the same, one log entry (used to preload keys).
  GET key              this node's own applied dict. PySyncObj has NO linearizable read (no
                       ReadIndex, no lease): a GET on the leader returns what it has applied,
                       which a newly elected leader elsewhere may already have overwritten; on a
                       follower it may be stale. Benchmarks send GETs to the leader.
  PING, ROLE           ROLE answers [leader|follower|candidate] from SyncObj's raft state
                       (`_isLeader()` / `getStatus()`); INFO has role, term, commit index.

Durability, as read in pysyncobj 0.3.17's source (journal.py, syncobj.py, config.py):
  * `SyncObjConf(journalFile=...)` switches the Raft log from memory (`MemoryJournal`) to a
    `FileJournal`. Every entry is written into an mmap of the journal file (`ResizableFile`,
    grown by mremap/ftruncate) as it is appended, on the leader before it is counted towards
    the commit and on a follower before it answers the append_entries. That write reaches the
    page cache only: nothing in SyncObj ever calls `FileJournal.flush()` (the one place that
    msyncs is `_destroy()`, at shutdown), and there is no configuration option to flush,
    fsync or msync per write, per batch or on a timer. So a commit survives a crash of the
    processes, not a power loss or kernel crash of the machine that holds the majority. (No
    fsync call appears anywhere in the pysyncobj package.)
  * The metadata (current term and vote, written synchronously when they change; the commit
    index, written at most once a second) goes to JOURNAL.meta with write + Python-level
    flush + rename, no fsync either.
  * `fullDumpFile` holds the snapshot written at log compaction (after 5,000 entries or 300 s
    by default, in a forked child), after which the journal is rewritten without the
    compacted entries; without it a restart would lose them, so it is set too (the snapshot
    file is not fsynced either).
  So the closest PySyncObj comes to fsync-before-ack is `journalFile` (written-before-ack,
  unflushed); `--journal file` (the default here) uses that, unmodified. `--journal msync` is
  NOT a PySyncObj setting: it wraps the FileJournal so that every append is followed by
  `flush()` (msync(MS_SYNC) of the mapping, i.e. a data sync of the file) before SyncObj goes
  on, which makes each entry durable before the leader counts it or a follower acknowledges it
  -- one msync per entry, no group commit. `--journal memory` keeps the log in memory only.

Batching: with `appendEntriesUseBatch` (PySyncObj's default) the leader sends new entries only on
its append_entries timer (every `appendEntriesPeriod`, 0.1 s), so each write waits ~0.1 s;
with it off (`--no-batch`, what compare.py uses) every command is sent at once and a pipe wakes
the tick thread. That is a configuration PySyncObj documents for lower latency. Measured here
with redis-benchmark -c 64 (2 cores): batch on ~600 SET/s at ~105 ms p50 (and ~5,300/s with
-P 16); batch off ~4,500 SET/s at ~12 ms p50 (~4,000/s with -P 16), so off is its better side
for the closed-loop workloads compared.

compare.py starts each process through a launcher that sets PR_SET_PDEATHSIG; SIGTERM or SIGINT
stops it (SyncObj.destroy()).

The RESP handling (CommandHandler, OrderedReplies) has no PySyncObj or socket in it and is
tested in tests/unit/test_compare.py with a fake store.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

# FAIL_REASON values of pysyncobj (syncobj.FAIL_REASON), for error replies without importing it.
FAIL_REASONS = {0: "SUCCESS", 1: "QUEUE_FULL", 2: "MISSING_LEADER", 3: "DISCARDED",
                4: "NOT_LEADER", 5: "LEADER_CHANGED", 6: "REQUEST_DENIED", 7: "UNKNOWN_OUTCOME"}
RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def error(text: str) -> bytes:
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


class Store(Protocol):
    """What the front end needs of the replicated state (a SyncObj, or a fake in tests).
    `set`/`mset` call `done(fail_reason)` once, from any thread, 0 meaning committed and
    applied here."""

    def role(self) -> str: ...
    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes, done: Callable[[int], None]) -> None: ...
    def mset(self, pairs: list[tuple[bytes, bytes]], done: Callable[[int], None]) -> None: ...
    def info(self) -> dict[str, Any]: ...


class OrderedReplies:
    """One connection's replies in request order: a reply that is ready while an earlier one is
    still waiting for its commit is held back until that one is filled."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._pending: collections.deque[list[bytes | None]] = collections.deque()

    def now(self, data: bytes) -> None:
        if self._pending:
            self._pending.append([data])
        else:
            self._write(data)

    def reserve(self) -> list[bytes | None]:
        slot: list[bytes | None] = [None]
        self._pending.append(slot)
        return slot

    def fill(self, slot: list[bytes | None], data: bytes) -> None:
        slot[0] = data
        out = []
        pending = self._pending
        while pending and pending[0][0] is not None:
            out.append(pending.popleft()[0])
        if out:
            self._write(b"".join(out))

    @property
    def waiting(self) -> int:
        return len(self._pending)


class CommandHandler:
    """RESP commands -> replies. `threadsafe(fn, *args)` runs fn on the event loop's thread
    (loop.call_soon_threadsafe); the store's completion callbacks go through it."""

    def __init__(self, store: Store, threadsafe: Callable[..., Any]) -> None:
        self.store = store
        self.threadsafe = threadsafe

    def handle(self, argv: list[bytes], replies: OrderedReplies) -> None:
        if not isinstance(argv, list) or not argv:
            replies.now(error("ERR protocol: expected an array of bulk strings"))
            return
        name = bytes(argv[0]).upper()
        if name == b"SET":
            if len(argv) != 3:
                replies.now(error("ERR SET takes exactly a key and a value here (no options)"))
                return
            self.store.set(argv[1], argv[2], self._completion(replies))
        elif name == b"GET":
            if len(argv) != 2:
                replies.now(error("ERR wrong number of arguments for 'get' command"))
                return
            value = self.store.get(argv[1])
            replies.now(NIL if value is None else bulk(value))
        elif name == b"MSET":
            if len(argv) < 3 or len(argv) % 2 != 1:
                replies.now(error("ERR wrong number of arguments for 'mset' command"))
                return
            pairs = list(zip(argv[1::2], argv[2::2], strict=True))
            self.store.mset(pairs, self._completion(replies))
        elif name == b"PING":
            replies.now(PONG if len(argv) == 1 else bulk(argv[1]))
        elif name == b"ROLE":
            replies.now(b"*1\r\n" + bulk(self.store.role().encode()))
        elif name == b"INFO":
            text = "".join(f"{k}:{v}\r\n" for k, v in self.store.info().items())
            replies.now(bulk(text.encode()))
        else:
            replies.now(error(f"ERR unknown command '{name.decode(errors='replace')}'"))

    def _completion(self, replies: OrderedReplies) -> Callable[[int], None]:
        slot = replies.reserve()

        def done(reason: int) -> None:  # any thread
            data = OK if reason == 0 else error(
                f"ERR pysyncobj: {FAIL_REASONS.get(reason, str(reason))}")
            self.threadsafe(replies.fill, slot, data)

        return done


class RespProtocol(asyncio.Protocol):
    def __init__(self, handler: CommandHandler) -> None:
        import hiredis

        self.handler = handler
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.replies: OrderedReplies | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.replies = OrderedReplies(self._write)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (argv := self.reader.gets()) is not False:
                self.handler.handle(argv, self.replies)
        except Exception as e:  # noqa: BLE001 - a protocol error ends this connection only
            self._write(error(f"ERR protocol: {e}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


# ---- the PySyncObj side (imported only when serving) -------------------------------------------


def _msync_journal_factory() -> Callable[..., Any]:
    """createJournal replacement whose FileJournal msyncs after every append (`--journal
    msync`; not a PySyncObj option, see the module docstring)."""
    from pysyncobj import journal

    class FlushingFileJournal(journal.FileJournal):
        def add(self, command, idx, term):
            super().add(command, idx, term)
            self.flush()

    def create(journal_file: str | None = None) -> Any:
        if journal_file is None:
            return journal.MemoryJournal()
        return FlushingFileJournal(journal_file)

    return create


def make_store(self_address: str, partners: list[str], data_dir: Path, journal: str,
               batch: bool) -> Any:
    import pysyncobj.syncobj
    from pysyncobj import SyncObj, SyncObjConf, replicated

    if journal == "msync":
        pysyncobj.syncobj.createJournal = _msync_journal_factory()
    conf = SyncObjConf(
        journalFile=str(data_dir / "journal.bin") if journal != "memory" else None,
        fullDumpFile=str(data_dir / "dump.bin") if journal != "memory" else None,
        appendEntriesUseBatch=batch,
        dynamicMembershipChange=False,
    )

    class KVStore(SyncObj):
        def __init__(self) -> None:
            super().__init__(self_address, partners, conf)
            self.data: dict[bytes, bytes] = {}  # after __init__: part of the snapshot

        @replicated
        def _set(self, key: bytes, value: bytes) -> None:
            self.data[key] = value

        @replicated
        def _mset(self, pairs: list[tuple[bytes, bytes]]) -> None:
            for key, value in pairs:
                self.data[key] = value

        # -- the Store protocol --
        def role(self) -> str:
            if self._isLeader():
                return "leader"
            return RAFT_STATES.get(self.getStatus()["state"], "?")

        def get(self, key: bytes) -> bytes | None:
            return self.data.get(key)

        def set(self, key: bytes, value: bytes, done: Callable[[int], None]) -> None:
            self._set(key, value, callback=lambda _result, reason: done(reason))

        def mset(self, pairs: list[tuple[bytes, bytes]], done: Callable[[int], None]) -> None:
            self._mset(pairs, callback=lambda _result, reason: done(reason))

        def info(self) -> dict[str, Any]:
            status = self.getStatus()
            leader = status.get("leader")
            return {"role": self.role(), "raft_term": status["raft_term"],
                    "commit_idx": status["commit_idx"], "last_applied": status["last_applied"],
                    "leader": getattr(leader, "address", leader), "log_len": status["log_len"],
                    "pysyncobj_version": status["version"], "journal": journal,
                    "append_entries_use_batch": int(batch), "keys": len(self.data)}

    return KVStore()


async def serve(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    partners = [p for p in args.partners.split(",") if p]
    store = make_store(args.self_address, partners, data_dir, args.journal, args.batch)
    loop = asyncio.get_running_loop()
    handler = CommandHandler(store, loop.call_soon_threadsafe)
    host, _, port = args.listen.rpartition(":")
    server = await loop.create_server(lambda: RespProtocol(handler), host, int(port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"pysyncobj_kv: raft {args.self_address}, partners {partners}, RESP on {args.listen}, "
          f"journal={args.journal}, appendEntriesUseBatch={args.batch}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        store.destroy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self", dest="self_address", required=True, help="HOST:PORT for Raft")
    parser.add_argument("--partners", required=True, help="the other members' HOST:PORT, commas")
    parser.add_argument("--listen", required=True, help="HOST:PORT for RESP clients")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--journal", choices=("file", "msync", "memory"), default="file",
                        help="file: PySyncObj's journalFile (mmap, never flushed); msync: the "
                             "same, msync after every append (not a PySyncObj option); memory")
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=False,
                        help="appendEntriesUseBatch (PySyncObj's default is on)")
    args = parser.parse_args(argv)
    try:
        import uvloop
        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(args))


if __name__ == "__main__":
    sys.exit(main())
