"""The asyncio node process: moves bytes and time into the node core and its actions out.

It owns everything with side effects — sockets, the clock, the disk, a thread for fsync — and
no decisions. One task runs the Ready loop:

    wait until the core has work
    deliver client replies; send the messages that need nothing durable (leader appends,
        forwards): the leader's fsync overlaps with the followers' network round trip
    append entries + save hard state, fsync       (in the disk thread; the event loop keeps
                                                   accepting commands meanwhile, and those
                                                   become the next batch: group commit)
    send the messages that promise durability (votes, append acks)
    advance the core

Everything proposed while one fsync is running goes to disk in the next single write+fsync and
to each follower in one AppendRequest per batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from replikv import __version__
from replikv.commands.streams import resolve_last_ids
from replikv.commands.transactions import PIPELINE_BATCH_BYTES, encode_exec
from replikv.concerns import DEFAULT_OPTIONS, RequestOptions, interned
from replikv.config import (
    MAXMEMORY_POLICY,
    ConfigError,
    NodeSettings,
    parse_address,
    read_passwords,
)
from replikv.entries import ALL_KEYS, entry_keys
from replikv.features import FEATURE_LEVEL, command_level
from replikv.invariants import InvariantViolation
from replikv.node import NodeConfig, NodeCore, NodeReady, decode_address_book
from replikv.pubsub import Published, Subscriptions, message_frame
from replikv.raft.core import COMMIT_BROADCAST_DELAY_MS, RaftConfig, RaftCore, Ready, Role
from replikv.raft.membership import Membership
from replikv.raft.messages import Entry, InstallSnapshot
from replikv.replies import ErrorReply
from replikv.resp import encode_reply
from replikv.server.admin_http import AdminServer
from replikv.server.blocking import Waiters
from replikv.server.gcstats import freeze_startup_objects, process_gc_stats
from replikv.server.local_commands import (
    REDIS_COMPAT_VERSION,
    ConnectionState,
    MemberView,
    NodeView,
)
from replikv.server.logs import attach_node
from replikv.server.metrics import NodeMetrics
from replikv.server.peer_transport import PeerTransport, learn_cluster_id
from replikv.server.resp_server import ClientConnection, runtime_topology
from replikv.server.slowlog import SlowLog
from replikv.server.snapshots import SnapshotRuntime, load_latest, resident_bytes, snapshot_dir
from replikv.state import KVState
from replikv.storage.datadir import DataDir, stored_cluster_id
from replikv.storage.disk_space import (
    DISK_LOW,
    DiskSpace,
    DiskSpaceAlarm,
    format_bytes,
    low_disk_warning,
    read_disk_space,
    refuse_to_start_if_full,
    this_process_uses_reserved_blocks,
)
from replikv.storage.errors import StorageError
from replikv.storage.hardstate import load_hard_state, save_hard_state
from replikv.storage.rollback import RollbackRecord, write_rollback_files
from replikv.storage.snapshot import SnapshotStore
from replikv.storage.wal import WriteAheadLog
from replikv.storage.wal_archive import ArchiveOwner
from replikv.tls import (
    TlsError,
    handshake_timeout,
    peer_contexts,
    reload_certificate,
    server_context,
)

log = logging.getLogger("replikv.node")


FSYNC_SAMPLES = 1024
EVENTS_KEPT = 200  # the node's timeline: role changes, membership changes, rollbacks
# A batch is persisted on the event loop only while fsyncs take at most this long (smoothed).
INLINE_FSYNC_MAX_S = 0.002
COMMIT_BROADCAST_DELAY_S = COMMIT_BROADCAST_DELAY_MS / 1000  # see RaftCore.commit_unsent
# How long a node joining without --cluster-id keeps asking the members which cluster it is.
LEARN_CLUSTER_ID_S = 10.0
# How often the tick loop reads the data dir's free space (one statvfs: the kernel's counters).
DISK_SPACE_EVERY_S = 1.0


# Plain writes of several connections gathered in one Ready cycle go as one log entry of at most
# this many commands (and PIPELINE_BATCH_BYTES of arguments).
CROSS_BATCH_COMMANDS = 256


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Shares:
    """The reply target of a batch of several connections' writes: hands each request its share
    of the batch's replies (a request of n > 1 commands gets a list of n), or the batch's one
    error to all."""

    __slots__ = ("requests", "targets")

    def __init__(self, targets: dict, requests: list[tuple[int, int]]) -> None:
        self.targets = targets  # the runtime's, where each request's connection waits
        self.requests = requests  # (request id, its number of commands), in the batch's order

    def on_reply(self, _batch_id: int, value: object) -> None:
        requests, targets = self.requests, self.targets
        total = sum(n for _r, n in requests)
        split = type(value) is list and len(value) == total
        at = 0
        for req_id, n in requests:
            conn = targets.pop(req_id, None)
            if conn is None:
                at += n
                continue
            if not split:
                conn.on_reply(req_id, value)
            elif n == 1:
                conn.on_reply(req_id, value[at])  # type: ignore[index]
            else:
                conn.on_reply(req_id, value[at:at + n])  # type: ignore[index]
            at += n


@dataclass(slots=True)
class DiskStats:
    fsyncs: int = 0  # every fsync of the log or the hard state
    fsync_seconds_total: float = 0.0
    last_fsync_seconds: float = 0.0
    entries_written: int = 0
    wal_fsyncs: int = 0  # of which of the log (0 with fsync = "never")
    # Recent fsync time, smoothed (each fsync moves it 1/8 of the way): it decides whether a
    # batch is persisted on the event loop or in the disk thread.
    recent_fsync_seconds: float = 0.0
    # The last FSYNC_SAMPLES fsync durations, for the p99 that /status and `replikv status`
    # show.
    samples: deque = field(default_factory=lambda: deque(maxlen=FSYNC_SAMPLES))

    def p99_ms(self) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3)


class NodeServer(NodeView):
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.node_id = settings.id
        # What a new connection starts with; REPLIKV commands change it per connection.
        # Interned: clients that set these same options share them, and so are joined (see
        # replikv.concerns.interned).
        self.default_options = interned(settings.default_options())
        self.started_s = time.time()
        # NodeView: the passwords AUTH accepts, requirepass first (see reload); () for none.
        self.passwords = tuple(p.encode() for p in (settings.requirepass,
                                                    *settings.requirepass_previous) if p)
        # TLS contexts (None: plain TCP), built now so that a bad file stops the start at once.
        tls = settings.tls_files()
        self.client_tls = (server_context(tls, require_client_cert=settings.tls_auth_clients)
                           if tls is not None else None)
        self.peer_tls = peer_contexts(tls) if tls is not None else None
        self.clients: set[ClientConnection] = set()
        self._next_client_id = 0
        # Request ids also name forwarded writes on the leader, which drops duplicates by
        # (origin, id): start from the clock so ids never repeat across restarts.
        self._next_req_id = time.time_ns() // 1000
        self._reply_targets: dict[int, ClientConnection] = {}
        # Plain writes waiting for the next Ready cycle (submit_writes): (request id, commands,
        # their arguments' bytes, options, connection id).
        self._gathered: list[tuple[int, list[list[bytes]], int, RequestOptions, int]] = []
        self._wakeup: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replikv-disk")
        # Large client replies (see resp_server.LARGE_REPLY_ITEMS), one at a time.
        self._reply_encoder = ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="replikv-replies")
        self.large_replies = 0  # encoded in the reply-encoder thread
        # Pub/sub: message frames written to subscribers, and subscribers disconnected for
        # leaving too much of them unsent (resp_server.ClientConnection.push_messages).
        self.pubsub_messages_delivered = 0
        self.pubsub_disconnections = 0
        # Clients blocked in BLPOP and the others (replikv.server.blocking), and the state
        # object the last Ready cycle ended with (another one: a snapshot replaced it).
        self.waiters = Waiters()
        self._slowlog = SlowLog()  # NodeView.slowlog: SLOWLOG and its CONFIG settings
        self._waiters_state: KVState | None = None
        self._waiters_leading = False  # ... and whether this node led then
        self.blocked_served = 0  # blocking commands answered with something popped
        self.blocked_timeouts = 0  # ... and waits ended by their timeout or CLIENT UNBLOCK
        # Stalls of the event loop (see _tick_loop): how many, the longest, the last.
        self.loop_stalls = 0
        self.loop_stall_max_ms = 0
        self.loop_stall_last: dict | None = None
        self._disk_jobs = 0  # submitted to the disk thread and not yet done
        self._commit_timer: asyncio.TimerHandle | None = None  # see _broadcast_commit
        self.disk_stats = DiskStats()
        self.gc_stats = process_gc_stats()
        self.metrics = NodeMetrics(self)
        self.events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        # The data dir's free space (see replikv.storage.disk_space): read at start-up and
        # then by the tick loop about once a second.
        self.disk_alarm = DiskSpaceAlarm(settings.disk_low_free_bytes)
        # Below disk_min_free_bytes (with the same margin to recover) the disk is nearly full:
        # as leader, the node refuses writes that add data (NodeCore.disk_refusal).
        self.disk_full_alarm = DiskSpaceAlarm(settings.disk_min_free_bytes)
        self._disk_full_error = ErrorReply(
            f"MISCONF the disk of the leader {settings.id} is nearly full (less than "
            f"disk_min_free_bytes, {format_bytes(settings.disk_min_free_bytes)}, free in "
            f"{settings.data_dir.absolute()}): writes that add data are refused until "
            "space is freed; reads and deletes still run")
        self.memory_full = False  # the keyspace is over maxmemory (check_memory_limit)
        # Root may use the blocks reserved for root (unless a container took that away).
        self._disk_as_root = this_process_uses_reserved_blocks()
        self._disk_read_error: str | None = None
        # Set by open_storage() (the first four) and run() (the transport); read them through
        # the properties below.
        self._datadir: DataDir | None = None
        self._wal: WriteAheadLog | None = None
        self._node: NodeCore | None = None
        self._snapshots: SnapshotRuntime | None = None
        self._transport: PeerTransport | None = None
        self.admin: AdminServer | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._fatal: BaseException | None = None
        self._last_seen_role: tuple | None = None
        self._membership_seen: Membership | None = None

    # -- what open_storage() and run() create ----------------------------------------------------
    # Nothing that uses these runs before they are set: open_storage() and run() create them
    # before any task, connection or admin request starts. A use before that is our bug.

    @property
    def is_open(self) -> bool:
        """Whether open_storage() has run (for what may be asked earlier: the log context)."""
        return self._node is not None

    @property
    def datadir(self) -> DataDir:
        return _created(self._datadir, "the data dir", "open_storage()")

    @property
    def wal(self) -> WriteAheadLog:
        return _created(self._wal, "the log", "open_storage()")

    @property
    def node(self) -> NodeCore:
        return _created(self._node, "the node core", "open_storage()")

    @property
    def snapshots(self) -> SnapshotRuntime:
        return _created(self._snapshots, "the snapshots", "open_storage()")

    @property
    def transport(self) -> PeerTransport:
        return _created(self._transport, "the peer transport", "run()")

    # -- start-up -----------------------------------------------------------------------------

    async def resolve_cluster_id(self) -> None:
        """Without --cluster-id, settle which cluster this node belongs to before its data dir
        is opened: the one its data dir recorded (the id derived from --peers no longer
        matches once the members have changed), or, for a node joining with an empty data dir,
        the one the members it can reach answer with. The derived id stays when neither
        applies (a new cluster), or when no member answered within LEARN_CLUSTER_ID_S."""
        s = self.settings
        if not s.cluster_id_derived:
            return
        cluster_id = stored_cluster_id(s.data_dir)
        source = f"its data dir {s.data_dir}"
        if cluster_id is None and s.join:
            answers = await learn_cluster_id(s.id, s.peers, timeout_s=LEARN_CLUSTER_ID_S,
                                             tls=self.peer_tls[1] if self.peer_tls else None)
            if len(set(answers.values())) > 1:
                said = ", ".join(f"{p} says {c}" for p, c in sorted(answers.items()))
                raise StorageError(f"the members answer with different cluster ids ({said}): "
                                   "start this node with --cluster-id set to the one it joins")
            if not answers:
                log.warning("joining: no member answered which cluster it is within %.0f s; "
                            "using the id derived from --peers, %s (if the members refuse "
                            "this node, start it with --cluster-id)", LEARN_CLUSTER_ID_S,
                            s.cluster_id)
                return
            peer, cluster_id = min(answers.items())
            source = f"member {peer}"
        if cluster_id is None:
            return
        same = cluster_id == s.cluster_id
        if not same or source.startswith("member"):  # a joining node always says what it learnt
            log.info("cluster id %s, from %s (%s derived from --peers)", cluster_id, source,
                     "the same as" if same else f"not {s.cluster_id},")
        if not same:
            self.settings = replace(s, cluster_id=cluster_id)

    def check_disk_space_at_start(self) -> None:
        """Refuse to start (DiskSpaceError, a StorageError) while the data dir's file system
        has less free than disk_min_free_bytes: the node would stop at its first write.
        Otherwise the reading is the disk alarm's first (a low disk is reported at once)."""
        space = read_disk_space(self.settings.data_dir, as_root=self._disk_as_root)
        refuse_to_start_if_full(space, self.settings.disk_min_free_bytes)
        self._observe_disk_space(space)

    def open_storage(self) -> None:
        """Lock the data dir and recover the log and hard state (raises on corruption)."""
        s = self.settings
        # Before anything is written (a new data dir's files, the WAL's preallocation).
        self.check_disk_space_at_start()
        self._datadir = DataDir.open(s.data_dir, node_id=s.id, cluster_id=s.cluster_id,
                                     replication=s.replication)
        hard_state = load_hard_state(self.datadir.hard_state_path)
        store = SnapshotStore(snapshot_dir(self.datadir.path), fsync=s.fsync != "never")
        loaded = load_latest(store)
        self._wal, records = WriteAheadLog.open(self.datadir.wal_dir,
                                                segment_bytes=s.limits.wal_segment_bytes,
                                                archive_dir=s.archive_dir,
                                                archive_owner=ArchiveOwner(s.cluster_id, s.id),
                                                preallocate_bytes=s.limits.wal_preallocate_bytes)
        entries = [Entry(i, t, d) for i, t, d in records]
        offset = entries[0].index - 1 if entries else 0
        state, time_ms, meta, size = KVState(), 0, None, 0
        if loaded is not None:
            meta, state, time_ms, sessions, info = loaded
            size = info.size_bytes
            entries = self._entries_after_snapshot(entries, meta.index, meta.term)
        bootstrap = tuple(sorted(s.bootstrap_peers()))
        raft = RaftCore(
            RaftConfig(node_id=s.id, voters=bootstrap,
                       election_ticks=s.election_ticks, heartbeat_ticks=s.heartbeat_ticks,
                       max_append_entries_bytes=s.limits.max_append_entries_bytes,
                       max_append_entries_count=s.limits.max_append_entries_count,
                       max_inflight_appends=s.limits.max_inflight_appends,
                       snapshot_chunk_bytes=s.snapshot_chunk_bytes),
            hard_state=hard_state, entries=entries,
            rng=random.Random(int.from_bytes(os.urandom(8), "big")),
            log_offset=offset if meta is None else 0, snapshot=meta, snapshot_size=size)
        self._node = NodeCore(NodeConfig(node_id=s.id, tick_ms=s.tick_ms,
                                         request_timeout_ms=s.request_timeout_ms,
                                         replication=s.replication, limits=s.limits,
                                         snapshot_entries=s.snapshot_entries,
                                         snapshot_keep_entries=s.snapshot_keep_entries,
                                         snapshot_keep_bytes=s.snapshot_keep_bytes,
                                         snapshot_log_bytes=s.snapshot_log_bytes,
                                         snapshot_log_ratio=s.snapshot_log_ratio,
                                         snapshot_log_min_bytes=s.snapshot_log_min_bytes,
                                         auto_replace_after_ms=s.auto_replace_after_ms,
                                         maxmemory=s.maxmemory),
                              raft, state,
                              rng=random.Random(int.from_bytes(os.urandom(8), "big")))
        self.node.state_time_ms = time_ms
        self.node.disk_refusal = self.disk_refusal  # a reading before the core existed
        if loaded is not None:
            self.node.sessions = sessions
        self._snapshots = SnapshotRuntime(self, store)
        log.info("recovered %d log entries (last index %d), term %d, voted for %s",
                 len(entries), raft.log.last_index, raft.term, raft.voted_for or "nobody")

    def _entries_after_snapshot(self, entries: list[Entry], index: int,
                                term: int) -> list[Entry]:
        """The log entries that continue a snapshot at (index, term). A log that ends before
        the snapshot, or holds another entry at its index (this node installed the snapshot
        over a conflicting log and crashed before resetting its WAL), does not continue it:
        the WAL is reset and the log starts after the snapshot."""
        if entries and entries[0].index > index + 1:
            raise StorageError(
                f"the log starts at index {entries[0].index} but the newest usable snapshot "
                f"ends at {index}: entries in between are missing (a snapshot file was lost or "
                "is damaged). Restore this node from a backup or wipe its data dir so it "
                "catches up from the others")
        continues = bool(entries) and entries[-1].index >= index and (
            entries[0].index == index + 1
            or entries[index - entries[0].index].term == term)
        if not continues:
            if entries:
                log.warning("the log (entries %d..%d) does not continue the snapshot at %d; "
                            "starting the log after the snapshot", entries[0].index,
                            entries[-1].index, index)
                self.wal.reset()
            return []
        return [e for e in entries if e.index > index]

    def encode_large_reply(self, value: list | dict, protocol: int,
                           done: Callable[[bytes | None], None]) -> None:
        """Encode a large client reply in the reply-encoder thread; `done(bytes)` runs on the
        loop when it is ready (`done(None)` if encoding failed, which is a bug, logged)."""
        self.large_replies += 1
        future = asyncio.get_running_loop().run_in_executor(self._reply_encoder, encode_reply,
                                                            value, protocol)

        def finished(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            error = f.exception()
            if error is not None:
                log.error("could not encode a reply of %d items", len(value),
                          exc_info=error)
            done(None if error is not None else f.result())

        future.add_done_callback(finished)

    def run_on_disk(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run `fn(*args)` in the disk thread: the one thread besides the loop that touches the
        log and snapshot files, one job at a time in submission order."""
        self._disk_jobs += 1
        future = asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)
        future.add_done_callback(self._disk_job_done)
        return future

    def _disk_job_done(self, _future: asyncio.Future) -> None:
        self._disk_jobs -= 1

    async def _persist_ready(self, rd: Ready) -> None:
        """Make a Ready's entries and hard state durable. On a fast disk, right here on the
        loop: handing the write and fsync to a thread and back costs more CPU than the loop
        would get done meanwhile (every reply waits for this Ready anyway), and the context
        switches are on every write's path (measured: about 20% less CPU per SET on 2 cores).
        In the disk thread instead while it has work (a snapshot's compaction, a rollback file,
        a batch fsync: behind it, so the files see the writes in order), and while fsyncs are
        slow (recently over INLINE_FSYNC_MAX_S), so that a slow disk does not stall the loop's
        other work (local reads, PING, health checks, the admin API)."""
        if self._disk_jobs == 0 and self.disk_stats.recent_fsync_seconds <= INLINE_FSYNC_MAX_S:
            self._persist(rd)
        else:
            await self.run_on_disk(self._persist, rd)

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT or stop(); then shut down cleanly."""
        loop = asyncio.get_running_loop()
        self._wakeup = wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        if not self.is_open:
            await self.resolve_cluster_id()
            self.open_storage()
        s = self.settings
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                             (signal.SIGHUP, self.reload)):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):
                pass
        advertised = {"client": str(s.listen)}
        if s.admin is not None:
            advertised["admin"] = str(s.admin)
        self._transport = PeerTransport(node_id=s.id, cluster_id=s.cluster_id, peers=s.peers,
                                        limits=s.limits, on_message=self._on_peer_message,
                                        advertised=advertised, passwords=self.passwords,
                                        tls=self.peer_tls, on_peer_level=self._on_peer_level)
        await self.transport.start(s.peer_listen)
        client_server = await loop.create_server(lambda: ClientConnection(self), s.listen.host,
                                                 s.listen.port, reuse_address=True,
                                                 ssl=self.client_tls, ssl_handshake_timeout=(
                                                     handshake_timeout(self.client_tls)))
        self._servers.append(client_server)
        if s.admin is not None:
            self.admin = AdminServer(self)
            await self.admin.start(s.admin)
        self._update_peers()
        tasks = [asyncio.create_task(self._ready_loop(wakeup), name="ready-loop"),
                 asyncio.create_task(self._tick_loop(), name="ticker"),
                 asyncio.create_task(self.snapshots.run(), name="snapshots")]
        if s.backup_every_ms:
            tasks.append(asyncio.create_task(self.snapshots.run_scheduled_backups(),
                                             name="scheduled-backups"))
        if s.fsync == "batch":
            tasks.append(asyncio.create_task(self._batch_fsync_loop(), name="batch-fsync"))
        fsync_mode = (f"batch (every {s.fsync_interval_ms} ms)" if s.fsync == "batch"
                      else s.fsync)
        scheme = "https" if self.client_tls else "http"
        log.info("replikv %s node %s serving clients on %s, peers on %s%s; data in %s; "
                 "fsync=%s; cluster %s%s", __version__, s.id, s.listen, s.peer_listen,
                 f", admin on {scheme}://{s.admin}" if s.admin else "", s.data_dir, fsync_mode,
                 s.cluster_id, "; TLS on every port" + (
                     " (client certificates required)" if s.tls_auth_clients else "")
                 if self.client_tls else "")
        warning = _fsync_warning(s)
        if warning is not None:
            log.warning("%s", warning)
            print(f"WARNING: {warning}", flush=True)
        space = self.disk_alarm.last
        if self.disk_alarm.state == DISK_LOW and space is not None:  # logged when it was read
            print(f"WARNING: {low_disk_warning(space, self.disk_alarm.low_free_bytes)}",
                  flush=True)
        tls_args = f" --tls --cacert {s.tls_ca_cert_file}" if self.client_tls else ""
        print(f"replikv node {s.id} ready: redis-cli -p {s.listen.port}{tls_args}", flush=True)
        try:
            stop_wait = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop_wait and t.exception() is not None:
                    self._fatal = t.exception()
        finally:
            await self._shutdown(tasks)
        if self._fatal is not None:
            failed = NodeFailed(self._fatal)
            log.critical("node %s %s", self.node_id, failed, exc_info=self._fatal)
            raise failed from self._fatal

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def reload(self) -> None:
        """SIGHUP: read the password file and the TLS certificate and key again, so that a
        password or a certificate is changed without a restart. What cannot be read is logged
        and the node keeps what it had. Connections already open are not touched: a client
        authenticated with an old password stays so, a TLS session keeps its certificate."""
        s = self.settings
        said = []
        if s.requirepass_file is not None:
            try:
                passwords = read_passwords(s.requirepass_file, "requirepass_file")
            except ConfigError as e:
                log.error("reload (SIGHUP): keeping the passwords the node had: %s", e)
            else:
                if not self.requirepass:
                    log.error("reload (SIGHUP): the node started without a password; a "
                              "password needs a restart (every client must then give it)")
                else:
                    self.passwords = tuple(p.encode() for p in passwords)
                    if self._transport is not None:
                        self._transport.passwords = self.passwords
                    said.append(f"{len(passwords)} password(s) from {s.requirepass_file} "
                                "(the first is the one given to peers)")
        tls = s.tls_files()
        if tls is not None and self.client_tls is not None and self.peer_tls is not None:
            try:
                reload_certificate(tls, [self.client_tls, *self.peer_tls])
            except TlsError as e:
                log.error("reload (SIGHUP): keeping the TLS certificate the node had: %s", e)
            else:
                said.append(f"the TLS certificate {tls.cert_file} and CA {tls.ca_cert_file}")
        log.info("reload (SIGHUP): %s", "; ".join(said) if said else
                 "nothing to read again (no requirepass_file, no TLS)")
        self.record_event("reload", "reloaded " + ("; ".join(said) if said else "nothing"))

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        log.info("node %s shutting down", self.node_id)
        for srv in self._servers:
            srv.close()
        for conn in list(self.clients):
            conn._close()
        if self.admin is not None:
            await self.admin.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._commit_timer is not None:
            self._commit_timer.cancel()
        if self._transport is not None:
            await self._transport.close()
        self._disk.shutdown(wait=True)
        self._reply_encoder.shutdown(wait=False, cancel_futures=True)
        if self._snapshots is not None:
            self._snapshots.close()
        if self._wal is not None:
            self._wal.close()
        if self._datadir is not None:
            self._datadir.close()

    # -- events into the core -----------------------------------------------------------------

    def submit(self, conn: ClientConnection, argv: list[bytes],
               options: RequestOptions = DEFAULT_OPTIONS) -> int:
        if self._gathered:
            self._submit_gathered()  # in the order the connections sent them
        self._next_req_id += 1
        req_id = self._next_req_id
        self._reply_targets[req_id] = conn
        self.node.submit(req_id, argv, now_ms(), options, conn.state.client_id)
        self.wake()
        return req_id

    def submit_writes(self, conn: ClientConnection, commands: list[list[bytes]], size: int,
                      options: RequestOptions) -> int:
        """Plain writes (PIPELINE_BATCHABLE, the connection's own options), one or a batch of a
        pipeline's, with `size` bytes of arguments: gathered until the core's next Ready cycle,
        then submitted together with those of other connections as one request and one log
        entry (EXEC PIPELINE). The reply is the command's, or for several a list of theirs."""
        self._next_req_id += 1
        req_id = self._next_req_id
        self._reply_targets[req_id] = conn
        self._gathered.append((req_id, commands, size, options, conn.state.client_id))
        self.wake()
        return req_id

    def _submit_gathered(self) -> None:
        """Submit the writes gathered since the last Ready cycle: runs of them with the same
        options as one EXEC PIPELINE each (at most CROSS_BATCH_COMMANDS commands and
        PIPELINE_BATCH_BYTES of arguments), whose reply is handed back out by _Shares. "The
        same" is one object: connections' options are interned (replikv.concerns.interned), so
        equal settings are one object and the test costs nothing per write."""
        gathered, self._gathered = self._gathered, []
        node, now = self.node, now_ms()
        i, end = 0, len(gathered)
        while i < end:
            req_id, commands, size, options, client_id = gathered[i]
            j, count = i + 1, len(commands)
            while j < end and gathered[j][3] is options:
                count += len(gathered[j][1])
                size += gathered[j][2]
                if count > CROSS_BATCH_COMMANDS or size > PIPELINE_BATCH_BYTES:
                    break
                j += 1
            if j == i + 1:
                argv = commands[0] if len(commands) == 1 else encode_exec(commands,
                                                                        pipeline=True)
                node.submit(req_id, argv, now, options, client_id)
            else:
                group = gathered[i:j]
                self.metrics.count_joined_batch(len(group))
                self._next_req_id += 1
                batch_id = self._next_req_id
                self._reply_targets[batch_id] = _Shares(  # type: ignore[assignment]
                    self._reply_targets, [(g[0], len(g[1])) for g in group])
                node.submit(batch_id, encode_exec([c for g in group for c in g[1]],
                                                  pipeline=True),
                            now, options, tuple(g[4] for g in group))
            i = j

    async def run_admin(self, argv: list[bytes]) -> object:
        """Run a REPLIKV MEMBER / SWITCHOVER command for the admin HTTP API; its reply."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        class _Sink:
            @staticmethod
            def on_reply(_req_id: int, value: object) -> None:
                if not done.done():
                    done.set_result(value)

        self._next_req_id += 1
        req_id = self._next_req_id
        self._reply_targets[req_id] = _Sink()  # type: ignore[assignment]
        self.node.submit(req_id, argv, now_ms())
        self.wake()
        return await done

    def end_session(self, client_id: int) -> None:
        if self._node is not None:
            self._node.end_session(client_id)

    def _on_peer_level(self, src: str, level: int | None) -> None:
        """A member's link advertised the feature level its replikv can apply (None: the link
        closed)."""
        node = self.node
        if level is not None and node.peer_levels.get(src) != level:
            cluster = node.state.feature_level
            if level < cluster:
                log.error("member %s runs a replikv of feature level %d, below this cluster's "
                          "level %d: it cannot apply this cluster's log and will stop; run "
                          "this node's replikv (level %d) on it", src, level, cluster,
                          FEATURE_LEVEL)
            elif level != FEATURE_LEVEL:
                log.info("member %s runs a replikv of feature level %d (this node: %d); "
                         "writes that need a level some member lacks are refused until every "
                         "member has it", src, level, FEATURE_LEVEL)
        node.peer_features(src, level)

    def _on_peer_message(self, src: str, message: object) -> None:
        self.node.step(src, message, now_ms())
        self.wake()

    async def _tick_loop(self) -> None:
        """Tick on the monotonic clock. After a stall (SIGSTOP, a long fsync or GC) the core
        gets one tick carrying the number that passed, not a burst: timers fire once, and the
        lease and vote-refusal windows still see how much time went by."""
        interval = self.settings.tick_ms / 1000
        loop = asyncio.get_running_loop()
        started = loop.time()
        done = 0
        stall_report_ms = self.settings.election_ticks * self.settings.tick_ms // 2
        # The free-space reading rides on the ticks: nothing on the write path, no task more.
        disk_every = max(1, round(DISK_SPACE_EVERY_S / interval))
        disk_due = disk_every
        while True:
            await asyncio.sleep(max(0.0, started + (done + 1) * interval - loop.time()))
            due = int((loop.time() - started) / interval)
            if due <= done:
                continue
            late_ms = (due - done - 1) * self.settings.tick_ms  # ticks that came late
            if late_ms >= stall_report_ms:
                self._loop_stalled(late_ms)
            self.node.tick(now_ms(), due - done)
            done = due
            self.wake()
            if done >= disk_due:
                disk_due = done + disk_every
                self.sample_disk_space()
                self.check_memory_limit()

    # -- maxmemory --------------------------------------------------------------------------------

    @property  # type: ignore[override]
    def maxmemory(self) -> int:
        """The memory limit the node core enforces as leader (NodeView; CONFIG SET)."""
        return self.node.maxmemory

    @maxmemory.setter
    def maxmemory(self, limit: int) -> None:
        if limit != self.node.maxmemory:
            log.info("maxmemory set to %s (CONFIG SET; lasts until the node restarts: put it "
                     "in the node's config too)", format_bytes(limit) if limit else "0 (none)")
        self.node.maxmemory = limit
        self.check_memory_limit()

    def check_memory_limit(self) -> None:
        """Whether the keyspace is over maxmemory (about once a second, and when the limit
        changes): said once per change in the log and the timeline, on every node (they hold
        the same keyspace, so a follower says what its leader refuses)."""
        limit = self.node.maxmemory
        full = bool(limit) and self.node.state.used_bytes() > limit
        if full == self.memory_full:
            return
        self.memory_full = full
        used = format_bytes(self.node.state.used_bytes())
        if full:
            log.warning("the keyspace holds %s, over maxmemory (%s): writes that add data are "
                        "refused with OOM until keys are deleted or expire, or maxmemory is "
                        "raised (CONFIG SET maxmemory, and the config)", used,
                        format_bytes(limit))
            self.record_event("memory", f"{self.node_id}: keyspace {used}, over maxmemory "
                              f"({format_bytes(limit)}); writes that add data are refused")
        else:
            log.info("the keyspace holds %s, within maxmemory again: writes are accepted", used)
            self.record_event("memory", f"{self.node_id}: keyspace {used}, within maxmemory "
                              "again")

    def memory_status(self) -> dict:
        """/status's "memory": the keyspace's size (INFO's used_memory), the limit, and
        whether writes that add data are refused."""
        return {"used_bytes": self.node.state.used_bytes(), "rss_bytes": resident_bytes(),
                "maxmemory": self.node.maxmemory, "maxmemory_policy": MAXMEMORY_POLICY,
                "full": self.memory_full, "oom_rejections": self.node.oom_rejections}

    def sample_disk_space(self) -> None:
        """Read the data dir's free space, on the loop: a statvfs of a local file system reads
        the kernel's counters and does not wait for the disk (a network file system could;
        keep data dirs local). A failed read is logged once and leaves the last reading."""
        try:
            space = read_disk_space(self.settings.data_dir, as_root=self._disk_as_root)
        except OSError as e:
            if self._disk_read_error is None:
                log.warning("cannot read the free space of the file system holding %s "
                            "(statvfs): %s; /status keeps the last reading",
                            self.settings.data_dir, e)
            self._disk_read_error = str(e)
            return
        self._disk_read_error = None
        self._observe_disk_space(space)

    def _observe_disk_space(self, space: DiskSpace) -> None:
        self._observe_disk_full(space)
        alarm = self.disk_alarm
        change = alarm.observe(space)
        if change is None:
            return
        free = format_bytes(space.free_bytes)
        if change == DISK_LOW:
            log.warning("%s", low_disk_warning(space, alarm.low_free_bytes))
            self.record_event("disk", f"{self.node_id}'s disk is low: {free} free in "
                              f"{space.path}, below disk_low_free_bytes "
                              f"({format_bytes(alarm.low_free_bytes)})")
        else:
            log.info("disk space ok again: the file system holding %s has %s free, above "
                     "disk_low_free_bytes (%s)", space.path, free,
                     format_bytes(alarm.low_free_bytes))
            self.record_event("disk", f"{self.node_id}'s disk has {free} free again in "
                              f"{space.path}")

    def _observe_disk_full(self, space: DiskSpace) -> None:
        """Below disk_min_free_bytes: refuse writes that add data (as leader) until the disk
        has that much again plus a margin. The log would otherwise fill the disk, and a node
        whose log write fails stops; every replica's disk takes the same log."""
        change = self.disk_full_alarm.observe(space)
        if change is None:
            return
        minimum = format_bytes(self.disk_full_alarm.low_free_bytes)
        free = format_bytes(space.free_bytes)
        if self._node is not None:
            self._node.disk_refusal = self.disk_refusal
        if change == DISK_LOW:
            log.warning("disk nearly full: %s free in %s, below disk_min_free_bytes (%s); as "
                        "leader this node refuses writes that add data (MISCONF) until there "
                        "is %s free again. Free space on that file system or move the data dir",
                        free, space.path, minimum,
                        format_bytes(self.disk_full_alarm.recover_at_bytes))
            self.record_event("disk", f"{self.node_id}'s disk is nearly full: {free} free in "
                              f"{space.path}, below disk_min_free_bytes ({minimum}); writes "
                              "that add data are refused")
        else:
            log.info("disk space %s free in %s, enough again: writes are accepted", free,
                     space.path)
            self.record_event("disk", f"{self.node_id}'s disk has {free} free in {space.path}: "
                              "writes are accepted again")

    @property
    def disk_refusal(self) -> ErrorReply | None:
        """What writes that add data get while the disk is nearly full (the node core holds
        the same once it exists), else None."""
        return self._disk_full_error if self.disk_full_alarm.state == DISK_LOW else None

    def disk_status(self) -> dict | None:
        """/status's "disk": the latest reading of the data dir's file system."""
        space = self.disk_alarm.last
        if space is None:
            return None
        return {"path": space.path, "total_bytes": space.total_bytes,
                "free_bytes": space.free_bytes,
                "low_free_bytes": self.disk_alarm.low_free_bytes,
                "min_free_bytes": self.disk_full_alarm.low_free_bytes,
                "state": self.disk_alarm.state,
                # Below min_free_bytes: as leader, writes that add data are refused.
                "writes_refused": self.disk_refusal is not None,
                "rejections": self._node.disk_rejections if self._node is not None else 0,
                **({"error": self._disk_read_error} if self._disk_read_error else {})}

    def _loop_stalled(self, stall_ms: int) -> None:
        """The loop was held for `stall_ms` (within a tick): followers may have started an
        election meanwhile. Said in the log, /status, /metrics and the timeline."""
        self.loop_stalls += 1
        self.loop_stall_max_ms = max(self.loop_stall_max_ms, stall_ms)
        self.loop_stall_last = {"t_ms": int(time.time() * 1000), "ms": stall_ms}
        text = (f"{self.node_id}'s event loop was held for about {stall_ms} ms (a slow "
                "command, a long GC or fsync, or the process was paused)")
        log.warning("%s; the election timeout is %d ms", text,
                    self.settings.election_ticks * self.settings.tick_ms)
        self.record_event("stall", text)

    # -- the Ready loop -----------------------------------------------------------------------

    async def _ready_loop(self, wakeup: asyncio.Event) -> None:
        node = self.node
        send = self.transport.send
        while True:
            await wakeup.wait()
            wakeup.clear()
            if self._gathered:
                self._submit_gathered()
            while node.has_ready():
                started = time.perf_counter()
                rd: NodeReady = node.ready()
                if rd.raft.committed:
                    self.metrics.apply_seconds.observe(time.perf_counter() - started)
                if node.commit_latencies_ms:
                    self.metrics.observe_commits(node.commit_latencies_ms)
                    node.commit_latencies_ms.clear()
                self._deliver(rd.replies)
                if rd.published:
                    self._deliver_published(rd.published)
                if self.waiters:
                    self._wake_blocked(rd)
                else:  # what a first waiter's cycle compares with (_wake_blocked)
                    self._waiters_state, self._waiters_leading = node.state, node.raft.is_leader
                for env in rd.early_messages:
                    message = env.message
                    if isinstance(message, InstallSnapshot):
                        message = self.snapshots.fill(env.to, message)
                        if message is None:
                            continue
                    if not send(env.to, message):
                        node.undeliverable(env.to, message)
                if rd.rolled_back:
                    # Saved before the entries that replace them reach the log.
                    await self.run_on_disk(self._save_rollback, rd)
                if rd.raft.must_sync:
                    self.transport.flush()  # followers write while we do
                    await self._persist_ready(rd.raft)
                for env in rd.raft.messages:
                    message = env.message
                    if isinstance(message, InstallSnapshot):
                        message = self.snapshots.fill(env.to, message)
                    if message is not None:
                        send(env.to, message)
                node.advance(rd)
                for peer, had, has in node.raft.take_lost_entries():
                    self._follower_lost_entries(peer, had, has)
                if rd.raft.snapshot_chunks:
                    await self.snapshots.receive(rd.raft.snapshot_chunks)
                if node.raft.membership is not self._membership_seen:
                    self._update_peers()
                self._log_role_change()
                if self._gathered:
                    self._submit_gathered()  # what arrived while this cycle waited for the disk
            if self._commit_timer is None and node.raft.commit_unsent:
                self._commit_timer = asyncio.get_running_loop().call_later(
                    COMMIT_BROADCAST_DELAY_S, self._broadcast_commit)

    def _follower_lost_entries(self, peer: str, had: int, has: int) -> None:
        text = (f"{peer} had acknowledged the log up to index {had} but its log now ends at "
                f"{has}: its data dir was wiped or replaced. It is being caught up from there; "
                "until it is, committed entries have fewer copies than counted, and it may have "
                "forgotten a vote it cast. The safe way to replace a node's data is `replikv "
                "member remove`, then start it empty with --join and `replikv member add`")
        log.warning("%s", text)
        self.record_event("lost-entries", text)

    def _broadcast_commit(self) -> None:
        """A commit index no AppendRequest carried within COMMIT_BROADCAST_DELAY_S: send it."""
        self._commit_timer = None
        if self.node.raft.broadcast_commit():
            self.wake()

    def member_addresses(self) -> dict[str, dict[str, str]]:
        """Where each member is: the replicated address book, completed from `peers`."""
        book = decode_address_book(self.node.raft.membership.context)
        for peer_id, address in self.settings.peers.items():
            book.setdefault(peer_id, {}).setdefault("peer", str(address))
        for peer_id, info in self._transport.peer_info.items() if self._transport else ():
            for key, value in info.items():
                book.setdefault(peer_id, {}).setdefault(key, value)
        book.setdefault(self.node_id, {}).update(
            {"client": str(self.settings.listen), "peer": str(self.settings.peer_listen)})
        if self.settings.admin is not None:
            book[self.node_id]["admin"] = str(self.settings.admin)
        return book

    def _update_peers(self) -> None:
        """Open links to members we learnt of from a membership change (their address comes
        with the config entry that added them)."""
        membership = self.node.raft.membership
        if self._membership_seen is not None and membership != self._membership_seen:
            self.record_event("membership", "members now: voters "
                              f"{', '.join(membership.voters)}; standbys "
                              f"{', '.join(membership.learners) or 'none'}")
        self._membership_seen = membership
        if self._transport is None:
            return
        book = decode_address_book(membership.context)
        for member in membership.members:
            if member == self.node_id:
                continue
            address = book.get(member, {}).get("peer")
            if address is None:
                continue
            try:
                self.transport.ensure_peer(member, parse_address(address, f"peer of {member}"))
            except ValueError as e:
                log.warning("cannot reach new member %s: %s", member, e)

    def _log_role_change(self) -> None:
        raft = self.node.raft
        seen = (raft.role, raft.term, raft.leader_id)
        before = self._last_seen_role
        if seen == before:
            return
        self._last_seen_role = seen
        if (before is not None and before[0] is Role.LEADER and raft.role is not Role.LEADER
                and raft.term == before[1]):
            # Stepped down in its own term: nothing else logs why.
            if self.node_id not in raft.voters:
                log.info("stepped down as leader in term %d: no longer a voter (its removal "
                         "committed)", raft.term)
                self.record_event("step-down", f"{self.node_id} stepped down as leader in term "
                                  f"{raft.term}: no longer a voter")
            else:
                timeout_ms = self.settings.election_ticks * self.settings.tick_ms
                log.warning("stepped down as leader in term %d: no majority of the voters "
                            "answered within an election timeout (%d ms), so another leader "
                            "may exist (check-quorum); writes wait for an elected leader",
                            raft.term, timeout_ms)
                self.record_event("step-down", f"{self.node_id} stepped down as leader in term "
                                  f"{raft.term}: no majority answered for {timeout_ms} ms")
        if raft.role is Role.LEADER:
            log.info("became leader in term %d (log at %d)", raft.term, raft.log.last_index)
            self.record_event("leader", f"{self.node_id} became leader in term {raft.term}")
        elif raft.role is Role.FOLLOWER:
            log.info("following %s in term %d", raft.leader_id or "no leader yet", raft.term)
            if raft.leader_id is not None:
                self.record_event("follow", f"{self.node_id} follows {raft.leader_id} in term "
                                  f"{raft.term}")
        elif raft.role is Role.PRE_CANDIDATE:
            log.info("no leader heard from for an election timeout: asking the voters whether "
                     "an election for term %d could win (pre-vote)", raft.term + 1)
        elif raft.role is Role.CANDIDATE:
            log.info("campaigning in term %d", raft.term)
            self.record_event("election", f"{self.node_id} started an election for term "
                              f"{raft.term}")

    def client_states(self) -> list[ConnectionState]:
        """CLIENT LIST: every open client connection (NodeView)."""
        return [c.state for c in self.clients]

    def record_event(self, kind: str, text: str) -> None:
        """One line of the node's timeline (GET /events; the dashboard merges every node's)."""
        raft = self._node.raft if self._node else None
        self.events.append({"t_ms": int(time.time() * 1000), "kind": kind,
                            "term": raft.term if raft else 0,
                            "leader": raft.leader_id if raft else None,
                            "node": self.node_id, "text": text})

    def _save_rollback(self, rd: NodeReady) -> None:
        """In the disk thread: the entries a new leader discarded go to rollback files."""
        raft = self.node.raft
        records = [RollbackRecord(r.entry.index, r.entry.term, r.entry.data, r.acknowledged,
                                  r.maybe_committed) for r in rd.rolled_back]
        paths = write_rollback_files(self.settings.data_dir, self.node_id, records,
                                     wall_time_ms=now_ms(), new_term=raft.term,
                                     new_leader=raft.leader_id,
                                     fsync=self.settings.fsync != "never")
        where = ", ".join(str(p) for p in paths)
        maybe = sum(1 for r in records if r.maybe_committed)
        if maybe:
            log.info("a snapshot from leader %s replaced %d log entries that may have been "
                     "committed (this node restarted, so it cannot tell); saved in %s, marked "
                     "'maybe committed'", raft.leader_id or "?", maybe, where)
        rolled = len(records) - maybe
        if not rolled:
            return
        acknowledged = sum(1 for r in records if r.acknowledged and not r.maybe_committed)
        level = logging.WARNING if acknowledged else logging.INFO
        log.log(level, "rolled back %d uncommitted log entries (%d acknowledged to clients at "
                "w=1) discarded by leader %s in term %d; saved in %s (see `replikv rollback "
                "list`)", rolled, acknowledged, raft.leader_id or "?", raft.term, where)
        self.record_event("rollback", f"{self.node_id} rolled back {rolled} uncommitted "
                          f"entries ({acknowledged} acknowledged at w=1)")

    def _persist(self, rd: Ready) -> None:
        """In the disk thread: write the Ready's entries and hard state, as durably as the
        fsync mode asks. "always": both fsynced before this returns. "batch": the hard state
        fsynced, the entries only written (`_batch_fsync_loop` syncs them). "never": neither
        fsynced, though the hard state is still replaced atomically."""
        mode = self.settings.fsync
        if rd.entries:
            self.wal.append(rd.entries)
            self.disk_stats.entries_written += len(rd.entries)
        if rd.hard_state is not None:
            started = time.perf_counter()
            save_hard_state(self.datadir.hard_state_path, rd.hard_state,
                            fsync=mode != "never")
            if mode != "never":
                self._count_fsync(time.perf_counter() - started, wal=False)
        if rd.entries and mode == "always":
            self._sync_wal()

    def _sync_wal(self) -> None:
        """In the disk thread: fsync what the log has written since its last fsync, if any."""
        if not self.wal.unsynced:
            return
        started = time.perf_counter()
        self.wal.sync()
        self._count_fsync(time.perf_counter() - started, wal=True)

    def _count_fsync(self, elapsed: float, *, wal: bool) -> None:
        stats = self.disk_stats
        stats.fsyncs += 1
        stats.wal_fsyncs += int(wal)
        stats.fsync_seconds_total += elapsed
        stats.last_fsync_seconds = elapsed
        stats.recent_fsync_seconds += (elapsed - stats.recent_fsync_seconds) / 8
        stats.samples.append(elapsed)
        self.metrics.fsync_seconds["wal" if wal else "hardstate"].observe(elapsed)

    async def _batch_fsync_loop(self) -> None:
        """fsync = "batch": sync the log at most every fsync_interval_ms, in the disk thread
        (so after any write already queued there), and once more when the node stops."""
        interval = self.settings.fsync_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                if loop.time() - next_at > interval:
                    next_at = loop.time()  # the last sync was slow: no burst to catch up
                await self.run_on_disk(self._sync_wal)
        except asyncio.CancelledError:
            await self.run_on_disk(self._sync_wal)
            raise

    def _deliver(self, replies: list[tuple[int, object]]) -> None:
        targets = self._reply_targets
        for req_id, value in replies:
            conn = targets.pop(req_id, None)
            if conn is not None:
                conn.on_reply(req_id, value)

    def _deliver_published(self, published: list[Published]) -> None:
        """Committed messages to this node's subscribers, in log order: each subscriber gets
        its frames of the whole batch in one write."""
        subscriptions = self.node.subscriptions
        out: dict[ClientConnection, list[bytes]] = {}
        for p in published:
            frames: dict[tuple[bytes | None, int], bytes] = {}
            for conn, pattern in subscriptions.targets(p.channel, p.sharded):
                protocol = conn.state.protocol  # type: ignore[attr-defined]
                frame = frames.get((pattern, protocol))
                if frame is None:
                    frame = frames[pattern, protocol] = message_frame(
                        p.channel, p.message, pattern, p.sharded, protocol)
                out.setdefault(conn, []).append(frame)  # type: ignore[arg-type]
        for conn, data in out.items():
            self.pubsub_messages_delivered += len(data)
            conn.push_messages(b"".join(data))

    def pubsub_subscriptions(self) -> Subscriptions:
        return self.node.subscriptions

    def _wake_blocked(self, rd: NodeReady) -> None:
        """Wake the blocked clients (replikv.server.blocking) that the entries this cycle
        applied may serve: the keys of the committed entries, or every key when the state was
        replaced (a snapshot) or entries applied ahead were undone (this node stopped leading)."""
        state, leading = self.node.state, self.node.raft.is_leader
        if (state is not self._waiters_state or leading != self._waiters_leading
                or rd.rolled_back or rd.raft.maybe_committed):
            self._waiters_state, self._waiters_leading = state, leading
            changed: list[bytes] = [ALL_KEYS]
        elif rd.raft.committed:
            changed = []
            for entry in rd.raft.committed:
                changed.extend(entry_keys(entry.data))
        else:
            return
        for call in self.waiters.changed(changed, self._room):
            call.wake()

    def _room(self, key: bytes) -> int:
        """How many blocked calls a change to `key` may serve now (Waiters.changed): a list's
        or a sorted set's length in this node's state, every call for a stream, none for a key
        that holds nothing or another type."""
        state, now = self.node.state, now_ms()
        kind = state.type_name(key, now)
        if kind == b"list" or kind == b"zset":
            return len(state.lookup(key, now))  # type: ignore[arg-type]
        return self.waiters.calls if kind == b"stream" else 0

    def type_of(self, key: bytes) -> bytes | None:
        """The type of `key` in this node's state now (TYPE's name), None if it has none: a
        blocked client's probe."""
        return self.node.state.type_name(key, now_ms())

    def waits_unwritten(self, argv: list[bytes], keys: tuple[bytes, ...]) -> bool:
        """Whether a blocking command may begin its wait with a read instead of an attempt
        (resp_server's `_block`): this node's state holds none of its `keys`, none of them is
        busy (Waiters.busy), and the cluster already runs the command's level (a first attempt
        would raise it, or refuse it)."""
        node = self.node
        if command_level(argv, node.config.replication == "active") > node.state.feature_level:
            return False
        if self.waiters.busy(keys):
            return False
        t, type_name = now_ms(), node.state.type_name
        return all(type_name(key, t) is None for key in keys)

    def resolve_stream_ids(self, argv: list[bytes]) -> list[bytes]:
        """XREAD BLOCK's argv with each `$` made the stream's last id in this node's state now,
        which every attempt then reads after (CommandError: WRONGTYPE)."""
        return resolve_last_ids(self.node.state, argv, now_ms())

    def unblock_client(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: end the blocking command client `client_id` waits in, if any, as
        if its timeout had passed (or with an error); whether it was blocked."""
        for conn in self.clients:
            if conn.state.client_id == client_id:
                return conn.unblock(error)
        return False

    # -- clients ------------------------------------------------------------------------------

    def next_client_id(self) -> int:
        self._next_client_id += 1
        return self._next_client_id

    def register_client(self, conn: ClientConnection) -> bool:
        if len(self.clients) >= self.settings.limits.max_client_connections:
            return False
        self.clients.add(conn)
        return True

    def unregister_client(self, conn: ClientConnection) -> None:
        self.clients.discard(conn)

    # -- introspection (NodeView) ---------------------------------------------------------------

    def leader_client_address(self) -> str | None:
        raft = self.node.raft
        if raft.leader_id is None:
            return None
        if raft.leader_id == self.node_id:
            return str(self.settings.listen)
        return self.transport.peer_info.get(raft.leader_id, {}).get("client")

    def topology(self) -> list[MemberView]:
        return runtime_topology(self)

    def role_reply(self) -> list:
        raft = self.node.raft
        applied = self.node.applied_index
        if raft.role is Role.LEADER:
            followers = []
            for peer, pr in sorted(raft.progress.items()):
                host, _, port = (self.transport.peer_info.get(peer, {}).get("client") or
                                 f"{peer}:0").rpartition(":")
                followers.append([host.encode(), port.encode(), str(pr.match).encode()])
            return ["master", applied, followers]
        leader = self.leader_client_address()
        host, _, port = (leader or "?:0").rpartition(":")
        state = "connected" if leader else "connect"
        return ["slave", host.encode(), int(port or 0), state, applied]

    def status(self) -> dict:
        node, raft = self.node, self.node.raft
        followers = {}
        if raft.role is Role.LEADER:
            lag = node.replica_lag()
            for peer, pr in sorted(raft.progress.items()):
                followers[peer] = {
                    "match_index": pr.match, "next_index": pr.next, "state": pr.state.value,
                    "lag_entries": lag.get(peer, (0, 0))[0],
                    "lag_ms": lag.get(peer, (0, 0))[1],
                    "last_contact_ms": None if pr.last_contact_tick is None else
                    (raft.tick_count - pr.last_contact_tick) * self.settings.tick_ms,
                    "connected": self.transport.is_connected(peer),
                    "voter": peer in raft.voters,
                    **({"snapshot_sent_bytes": pr.snapshot_offset,
                        "snapshot_bytes": pr.snapshot_size}
                       if pr.state.value == "snapshot" else {}),
                }
        membership = raft.membership
        book = self.member_addresses()
        role = raft.role.value
        if self.node_id in membership.learners:
            role = "standby"
        elif self.node_id not in membership.voters:
            role = "not a member"
        snap = raft.snapshot
        return {
            "id": self.node_id, "cluster_id": self.settings.cluster_id,
            "role": role, "term": raft.term, "leader": raft.leader_id,
            "leader_client_address": self.leader_client_address(),
            "voted_for": raft.voted_for,
            "commit_index": raft.commit_index, "applied_index": node.applied_index,
            "last_log_index": raft.log.last_index, "last_log_term": raft.log.last_term,
            "persisted_index": raft.log.persisted_index,
            "replication": self.settings.replication,
            "applied_ahead": node.applied_ahead,
            "staleness_ms": node.staleness_ms(),
            "lease_remaining_ms": raft.lease_remaining_ticks() * self.settings.tick_ms,
            "rolled_back_entries": node.rolled_back_entries,
            "rolled_back_acknowledged": node.rolled_back_acknowledged,
            "members": {p: book.get(p, {}).get("peer", "?") for p in membership.members},
            "voters": list(membership.voters), "standbys": list(membership.learners),
            "membership_change_pending": raft.config_change_pending(),
            "addresses": {p: book.get(p, {}) for p in membership.members},
            "followers": followers,
            "snapshot": None if snap is None else {
                "index": snap.index, "term": snap.term, "bytes": raft.snapshot_size,
                "taken": self.snapshots.taken, "installed": self.snapshots.installed,
                "failed": self.snapshots.failures,
                "memory_trims": self.snapshots.memory_trims,
                "memory_returned_bytes": self.snapshots.memory_returned_bytes,
                "last_trim_seconds": round(self.snapshots.last_trim_seconds, 4)},
            "log_first_index": raft.log.offset + 1,
            # The growth rule (snapshot_log_ratio): the next snapshot is due once the log's
            # cost reaches the threshold (0: the rule is off).
            "log_since_snapshot": {"cost_bytes": node.log_cost_since_snapshot(),
                                   "snapshot_due_at_bytes": node.growth_threshold()},
            "archive": self.wal.archive_status(),
            **({"scheduled_backups": {
                "dir": str(self.settings.backup_dir), "written": self.snapshots.scheduled_backups,
                "failed": self.snapshots.scheduled_failures,
                "last": self.snapshots.last_scheduled_backup}}
               if self.settings.backup_every_ms else {}),
            "backups_taken": self.snapshots.backups_taken,
            "keys": node.state.key_count(), "pending_requests": node.pending_requests,
            "clients": len(self.clients), "fsync": self.settings.fsync,
            "fsync_p99_ms": self.disk_stats.p99_ms(),
            "disk": self.disk_status(),
            "memory": self.memory_status(),
            "features": self.feature_status(),
            **({"fsync_interval_ms": self.settings.fsync_interval_ms}
               if self.settings.fsync == "batch" else {}),
            "uptime_s": int(time.time() - self.started_s), "pid": os.getpid(),
            "event_loop_stalls": {"count": self.loop_stalls, "max_ms": self.loop_stall_max_ms,
                                  "last": self.loop_stall_last},
            "large_replies": self.large_replies,
            "pubsub": self.pubsub_status(),
            # Clients waiting in BLPOP, XREAD BLOCK and the others (replikv.server.blocking).
            "blocking": {"clients": self.waiters.calls, "served": self.blocked_served,
                         "timeouts": self.blocked_timeouts},
            **({"faults": self.fault_status()} if self.settings.fault_injection else {}),
        }

    def feature_status(self) -> dict:
        """/status's "features" (replikv.features): the cluster's level, what this node's
        replikv can apply, and what each other member advertised (None: no link from it now;
        a follower hears only from the members that send it something)."""
        node = self.node
        return {"cluster_level": node.state.feature_level, "this_node": FEATURE_LEVEL,
                "members": {m: node.peer_levels.get(m) for m in node.raft.membership.members
                            if m != self.node_id},
                "rejections": node.feature_rejections}

    def pubsub_status(self) -> dict:
        channels, patterns, shard_channels = self.node.subscriptions.counts()
        return {"channels": channels, "patterns": patterns, "shard_channels": shard_channels,
                "subscribers": sum(1 for c in self.clients if c.subscription_count),
                "messages_published": self.node.published_total,
                "messages_delivered": self.pubsub_messages_delivered,
                "output_limit_disconnections": self.pubsub_disconnections}

    def fault_status(self) -> dict:
        """Injected faults (the playground): who is cut off, the added delay, what was lost."""
        t = self._transport
        if t is None:
            return {"blocked": [], "delay_ms": 0, "dropped": 0}
        return {"blocked": sorted(t.blocked), "delay_ms": round(t.delay_s * 1000),
                "dropped": t.fault_dropped}

    def info_sections(self) -> dict[str, list[tuple[str, object]]]:
        st = self.status()
        node, raft = self.node, self.node.raft
        server = [
            ("redis_version", REDIS_COMPAT_VERSION), ("replikv_version", __version__),
            ("redis_mode", "standalone"), ("os", sys.platform),
            ("process_id", os.getpid()), ("tcp_port", self.settings.listen.port),
            ("uptime_in_seconds", st["uptime_s"]), ("node_id", self.node_id),
            ("cluster_id", self.settings.cluster_id), ("data_dir", self.settings.data_dir),
            ("fsync", self.settings.fsync),
            # replikv.features: what this replikv applies, and what the cluster's log uses.
            ("feature_level", FEATURE_LEVEL), ("cluster_feature_level", node.state.feature_level),
        ]
        if self.settings.fsync == "batch":
            server.append(("fsync_interval_ms", self.settings.fsync_interval_ms))
        clients = [("connected_clients", len(self.clients)),
                   ("blocked_clients", self.waiters.calls),
                   ("pending_requests", node.pending_requests)]
        is_leader = raft.role is Role.LEADER
        replication: list[tuple[str, object]] = [
            ("role", "master" if is_leader else "slave"),
            ("raft_role", raft.role.value), ("node_id", self.node_id),
            ("leader_id", raft.leader_id or ""),
            ("leader_address", st["leader_client_address"] or ""),
            ("term", raft.term), ("commit_index", raft.commit_index),
            ("applied_index", node.applied_index), ("last_log_index", raft.log.last_index),
            ("replication_mode", self.settings.replication),
            ("default_write_concern", self.settings.write_concern),
            ("default_read_preference", self.settings.read_preference),
            ("default_read_consistency", self.settings.read_consistency),
            ("applied_ahead", node.applied_ahead),
        ]
        if is_leader:
            replication.append(("connected_slaves", sum(
                1 for f in st["followers"].values() if f["connected"])))
            for i, (peer, f) in enumerate(st["followers"].items()):
                host, _, port = (self.transport.peer_info.get(peer, {}).get("client")
                                 or "?:0").rpartition(":")
                link = "online" if f["connected"] else "offline"
                replication.append((f"slave{i}", (
                    f"ip={host},port={port},state={link},offset={f['match_index']},"
                    f"lag={f['last_contact_ms'] // 1000}")))
                replication.append((f"follower_{peer}", (
                    f"match_index={f['match_index']},next_index={f['next_index']},"
                    f"lag_entries={f['lag_entries']},lag_ms={f['lag_ms']},state={f['state']},"
                    f"last_contact_ms={f['last_contact_ms']}")))
            replication.append(("lease_remaining_ms", st["lease_remaining_ms"]))
        else:
            leader = st["leader_client_address"] or "?:0"
            host, _, port = leader.rpartition(":")
            staleness = st["staleness_ms"]
            replication += [("master_host", host), ("master_port", port),
                            ("master_link_status", "up" if raft.leader_id else "down"),
                            ("staleness_ms", -1 if staleness is None else staleness)]
        stats = [
            ("entries_applied", node.entries_applied),
            ("commands_executed", node.commands_executed),
            ("effects_applied", node.effects_applied),
            ("rolled_back_entries", node.rolled_back_entries),
            ("rolled_back_acknowledged", node.rolled_back_acknowledged),
            ("wtimeouts", node.wtimeouts),
            ("writes_forwarded", node.forwarded_total),
            ("unknown_outcomes", node.unknown_outcomes),
            ("elections_started", raft.elections_started),
            ("leader_changes", raft.leader_changes),
            ("fsyncs", self.disk_stats.fsyncs),
            ("wal_fsyncs", self.disk_stats.wal_fsyncs),
            ("fsync_avg_ms", round(1000 * self.disk_stats.fsync_seconds_total
                                   / max(1, self.disk_stats.fsyncs), 3)),
            ("entries_written", self.disk_stats.entries_written),
            ("peer_links_rejected", self.transport.rejected_links),
            ("acl_access_denied_auth", self.auth_failures),  # Redis's name for the same count
            ("oom_rejections", node.oom_rejections),  # writes refused over maxmemory, as leader
            ("disk_full_rejections", node.disk_rejections),  # ... on a nearly full disk
            # ... because a member could not apply them (replikv.features)
            ("feature_level_rejections", node.feature_rejections),
            # Redis's names; then messages of committed entries, frames written to this node's
            # subscribers, subscribers disconnected at the output limit.
            ("pubsub_channels", st["pubsub"]["channels"]),
            ("pubsub_patterns", st["pubsub"]["patterns"]),
            ("pubsubshard_channels", st["pubsub"]["shard_channels"]),
            ("pubsub_messages_published", st["pubsub"]["messages_published"]),
            ("pubsub_messages_delivered", st["pubsub"]["messages_delivered"]),
            ("pubsub_output_limit_disconnections", st["pubsub"]["output_limit_disconnections"]),
            # Blocking commands answered with what an attempt took, and waits ended by their
            # timeout or CLIENT UNBLOCK.
            ("blocked_served", self.blocked_served),
            ("blocked_timeouts", self.blocked_timeouts),
        ]
        used, rss = node.state.used_bytes(), resident_bytes()
        memory: list[tuple[str, object]] = [
            ("used_memory", used), ("used_memory_human", _human_bytes(used)),
            ("used_memory_rss", rss), ("used_memory_rss_human", _human_bytes(rss)),
            ("maxmemory", node.maxmemory), ("maxmemory_human", _human_bytes(node.maxmemory)),
            ("maxmemory_policy", MAXMEMORY_POLICY),
            # As Redis 7.0 names them: this node's script cache, and the (replicated) libraries.
            ("number_of_cached_scripts", len(node.scripts)),
            ("number_of_functions", sum(len(lib.functions)
                                        for lib in node.state.libraries.values())),
            ("number_of_libraries", len(node.state.libraries)),
            ("log_entries_in_memory", raft.log.last_index - raft.log.offset),
            ("log_cost_since_snapshot", st["log_since_snapshot"]["cost_bytes"]),
            ("snapshot_due_at_log_cost", st["log_since_snapshot"]["snapshot_due_at_bytes"]),
            *self.gc_stats.info_fields(),
        ]
        keyspace = []
        if node.state.key_count():
            keyspace.append(("db0", (f"keys={node.state.key_count()},"
                                     f"expires={node.state.expires_count()},avg_ttl=0")))
        return {"server": server, "clients": clients, "memory": memory,
                "replication": replication, "stats": stats,
                "errorstats": self.metrics.errorstats(), "keyspace": keyspace,
                "commandstats": self.metrics.commandstats()}

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT (NodeView)."""
        self.metrics.reset_stats()


def _human_bytes(n: int) -> str:
    """As Redis prints used_memory_human: 1.50M, 812.00K, 17B."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


def _fsync_warning(s: NodeSettings) -> str | None:
    """What an operator risks with a relaxed fsync mode, for the start-up output."""
    if s.fsync == "batch":
        return (f"fsync=batch: node {s.id} acknowledges writes before they are on disk and "
                f"fsyncs its log every {s.fsync_interval_ms} ms. If this machine loses power "
                f"(a process crash loses nothing), up to the last {s.fsync_interval_ms} ms of "
                f"writes it acknowledged can be lost; if a majority of nodes lose power at "
                f"once, so can writes acknowledged to clients.")
    if s.fsync == "never":
        return (f"fsync=never: node {s.id} never fsyncs its log or its term and vote; the OS "
                f"writes them out when it chooses (often after 30 s or more). If this machine "
                f"loses power (a process crash loses nothing), writes it acknowledged can be "
                f"lost and a damaged term/vote file makes it refuse to start; if a majority of "
                f"nodes lose power at once, writes acknowledged to clients can be lost.")
    return None


_T = TypeVar("_T")


def _created(value: _T | None, what: str, by: str) -> _T:
    """`value`, which `by` creates before anything can use it (NodeServer's properties)."""
    if value is None:
        raise InvariantViolation(f"{what} is used before {by}")
    return value


class NodeFailed(Exception):
    """The node stopped serving because of an error (a failed disk write or fsync, ...): not a
    failure to start. Logged with its cause when it happens."""

    def __init__(self, cause: BaseException) -> None:
        where = f" ({cause.filename})" if isinstance(cause, OSError) and cause.filename else ""
        super().__init__(f"stopped after an error while serving: {cause}{where}; fix the "
                         "cause (for a full disk, free space) and start the node again: it "
                         "recovers what is on disk")


def run_node(settings: NodeSettings) -> None:
    try:
        import uvloop  # a faster event loop; asyncio's own works too
    except ImportError:  # pragma: no cover
        uvloop = None  # type: ignore[assignment]  # mypy cannot type an optional import
    server = NodeServer(settings)
    attach_node(server)
    server.check_disk_space_at_start()  # before a joining node spends time asking the members
    asyncio.run(server.resolve_cluster_id())
    server.open_storage()
    # What is alive now lives as long as the process: out of the full collections' walk.
    frozen = freeze_startup_objects()
    log.info("%d objects alive at start-up moved out of the garbage collector's walk", frozen)
    if uvloop is not None:
        uvloop.run(server.run())
    else:  # pragma: no cover
        asyncio.run(server.run())
