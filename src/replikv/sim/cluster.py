"""The simulated cluster: real node cores on a simulated clock, network and disk.

Each SimNode wraps the very NodeCore/RaftCore/KVState objects the server runs and drives them
the way the asyncio runtime does:

    ready → replies to clients, early messages out → persist (takes simulated time; a crash
    meanwhile loses it) → messages out → advance

Everything happens in one event queue ordered by simulated time, with ties broken by insertion
order, and every random choice comes from one seeded generator: the same seed replays the same
run, event for event.

Faults: crash (memory lost; the disk keeps what was persisted; a write in flight is lost, or
only its atomically-replaced hard state lands), restart, pause (a SIGSTOP: the node processes
nothing, its timers and its disk thread included, then resumes with stale beliefs), network
delay, loss, duplication, reordering and partitions, slow disks. `on_leader` lets a nemesis strike
a leader at the instant it is elected or advances its commit index, before its messages leave.

Invariants are checked as the run goes (a violation raises SimViolation with the recent trace):
at most one leader per term; log matching; a committed entry never changes or disappears, and
every new leader holds all of them (leader completeness); every node applies the same entries in
the same order; state digests agree at equal applied indexes; and every node delivers the
messages of PUBLISH entries only once they commit, each once, in log order, exactly those its
log's entries carry (NodeReady.published; a node caught up by a snapshot skips the messages
the snapshot covers, and a restarted one delivers its log's again, to no subscriber).
"""

from __future__ import annotations

import heapq
import random
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import msgpack

from replikv import features
from replikv.concerns import DEFAULT_OPTIONS, RequestOptions
from replikv.entries import entry_publishes
from replikv.invariants import InvariantViolation
from replikv.node import NodeConfig, NodeCore, NodeReady, RolledBack, SnapshotJob
from replikv.raft.core import COMMIT_BROADCAST_DELAY_MS, RaftConfig, RaftCore, Role, SnapshotMeta
from replikv.raft.membership import Membership
from replikv.raft.messages import AppendRequest, Entry, InstallSnapshot
from replikv.sessions import SessionTable
from replikv.sim.network import NetworkFaults, SimNetwork
from replikv.state import KVState
from replikv.storage.hardstate import HardState

TICK_MS = 50
START_MS = 1_000_000


class SimViolation(AssertionError):
    """An invariant broke. The message names it; `trace` holds the events that led to it."""

    def __init__(self, message: str, trace: list[str]) -> None:
        super().__init__(message)
        self.trace = trace


@dataclass(slots=True)
class SimSnapshot:
    meta: SnapshotMeta
    blob: bytes  # msgpack [index, term, membership, time_ms, [item record, ...], sessions]


@dataclass(slots=True)
class SimDisk:
    """What survives a crash: the hard state, the log as last made durable (entries after
    `offset`), the snapshots, and a snapshot being received."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    offset: int = 0
    rolled_back: list[RolledBack] = field(default_factory=list)  # the rollback files
    snapshots: dict[tuple[int, int], SimSnapshot] = field(default_factory=dict)
    receiving: tuple[int, int, bytearray] | None = None

    def write(self, entries: list[Entry], hard_state: HardState | None,
              rolled_back: Sequence[RolledBack] = ()) -> None:
        # The runtime writes the rollback file first, in the same disk job as the entries.
        self.rolled_back.extend(rolled_back)
        if entries:
            first = entries[0].index
            if first - 1 > self.offset + len(self.entries):
                # The log restarts after a snapshot (as the runtime resets its WAL).
                self.entries, self.offset = [], first - 1
            del self.entries[max(first - 1 - self.offset, 0):]  # the WAL's override rule
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def latest_snapshot(self) -> SimSnapshot | None:
        return self.snapshots[max(self.snapshots)] if self.snapshots else None

    def save_snapshot(self, snap: SimSnapshot, in_use: set[tuple[int, int]]) -> None:
        self.snapshots[(snap.meta.index, snap.meta.term)] = snap
        newest = sorted(self.snapshots)[-2:]  # keep two, and any being sent
        for key in [k for k in self.snapshots if k not in newest and k not in in_use]:
            del self.snapshots[key]

    def compact(self, offset: int) -> None:
        """Drop the log through `offset` (the runtime deletes whole WAL segments)."""
        if offset > self.offset:
            del self.entries[:offset - self.offset]
            self.offset = offset


@dataclass(slots=True)
class DriverOptions:
    """How the driver treats the cores. The non-default settings are planted bugs for tests."""

    ack_before_fsync: bool = False  # send post-persist messages before the write is durable


@dataclass(slots=True)
class SimNode:
    id: str
    _core: NodeCore | None = None  # None while crashed
    disk: SimDisk = field(default_factory=SimDisk)
    up: bool = True
    incarnation: int = 0
    persisting: NodeReady | None = None
    paused: bool = False
    held: list[tuple] = field(default_factory=list)  # events that arrived while paused
    clock_skew_ms: int = 0
    was_leader_in: int = 0  # the last term we saw this node lead (for completeness checks)
    resumed_at_ms: int = 0  # when it last resumed from a pause
    paused_at_ms: int = 0
    elected_in: int = 0  # the last term on_leader was told this node leads
    commit_timer: bool = False  # a "commit" event is scheduled (see SimCluster._process)
    leader_commit: int = 0  # its commit index when on_leader last heard of it
    commit_checked: int = 0
    digest_checked: int = 0
    # Pub/sub: messages delivered (NodeReady.published) by index, not yet compared with the
    # log; and the index through which they have been.
    delivered: dict[int, list[tuple[bool, bytes, bytes]]] = field(default_factory=dict)
    publish_checked: int = 0

    @property
    def core(self) -> NodeCore:
        # The driver touches only the cores of nodes that are up; a crashed node has none.
        if self._core is None:
            raise InvariantViolation(f"the core of crashed node {self.id} is used")
        return self._core


class SimCluster:
    def __init__(self, ids: tuple[str, ...], *, seed: int, network: NetworkFaults | None = None,
                 request_timeout_ms: int = 2000, disk_latency_ms: tuple[int, int] = (1, 5),
                 disk_spike: float = 0.0, clock_skew_ms: int = 0,
                 options: DriverOptions | None = None, trace_limit: int = 400,
                 trace_all: bool = False, max_append_entries_count: int = 4096,
                 max_inflight_appends: int = 64, max_events: int = 400_000,
                 replication: str = "passive", voters: tuple[str, ...] | None = None,
                 snapshot_entries: int = 0, snapshot_keep_entries: int = 0,
                 snapshot_chunk_bytes: int = 512, snapshot_log_ratio: float = 0.0,
                 auto_replace_after_ms: int = 0) -> None:
        self.ids = ids
        # The bootstrap voters; the other ids start outside the cluster, waiting to be added.
        self.voters = voters if voters is not None else ids
        self.snapshot_entries = snapshot_entries
        self.snapshot_keep_entries = snapshot_keep_entries
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        self.snapshot_log_ratio = snapshot_log_ratio
        self.auto_replace_after_ms = auto_replace_after_ms
        self.snapshot_jobs: dict[str, tuple[SnapshotJob, list]] = {}
        self.snapshots_installed = 0
        self.snapshots_taken = 0
        self.replication = replication
        self.rng = random.Random(seed)
        self.now_ms = START_MS
        self.network = SimNetwork(self.rng, network or NetworkFaults())
        self.request_timeout_ms = request_timeout_ms
        self.disk_latency_ms = disk_latency_ms
        self.disk_spike = disk_spike
        self.options = options or DriverOptions()
        # Small flow-control limits make entries trickle one message at a time, which is when
        # old-term entries get acknowledged apart from the new leader's no-op.
        self.max_append_entries_count = max_append_entries_count
        self.max_inflight_appends = max_inflight_appends
        self.nodes = {i: SimNode(i, clock_skew_ms=self.rng.randint(-clock_skew_ms, clock_skew_ms))
                      for i in ids}
        self._queue: list[tuple[int, int, tuple]] = []
        self._seq = 0
        self.on_reply: Callable[[str, int, object], None] = lambda node, req, value: None
        # Called as a leader hands out a batch of work, before the batch's messages leave, with
        # "elected" (its first batch of a term) or "committed" (its commit index advanced): a
        # nemesis may cut the leader off or crash it at that instant.
        self.on_leader: Callable[[str, str], None] | None = None
        self.trace: deque[str] = deque(maxlen=None if trace_all else trace_limit)
        self.events = 0
        # A healthy run of a few simulated seconds takes tens of thousands of events; a run
        # that needs far more is stuck in a storm, which is a bug to report, not to wait out.
        self.max_events = max_events
        self.faults_injected = 0
        # Invariant state.
        self.leader_of_term: dict[int, str] = {}
        self.committed: list[tuple[int, int]] = []  # (term, crc of data) by index - 1
        # By index - 1: the term of the node that first counted the entry as committed, which is
        # the term it was committed in, or later if no node noticed at once.
        self.committed_in: list[int] = []
        self.committed_data: list[bytes] = []  # survives compaction, for the final checks
        self.entry_at: dict[tuple[int, int], int] = {}  # (index, term) -> crc of data
        self.digest_at: dict[int, tuple[str, str]] = {}  # applied index -> (digest, node)
        for i in ids:
            self._boot(self.nodes[i])

    # -- the event queue ----------------------------------------------------------------------

    def schedule(self, at_ms: int, event: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_ms, self._seq, event))

    def run_until(self, end_ms: int, stop: Callable[[], bool] | None = None) -> None:
        while self._queue and self._queue[0][0] <= end_ms:
            at, _, event = heapq.heappop(self._queue)
            self.now_ms = at
            self.events += 1
            if self.events > self.max_events:
                self._violation(f"more than {self.max_events} events: a message storm or "
                                f"livelock ({len(self._queue)} events queued)")
            self._dispatch(event)
            if stop is not None and stop():
                return
        self.now_ms = max(self.now_ms, end_ms)

    def _dispatch(self, event: tuple) -> None:
        kind = event[0]
        if kind == "call":
            event[1]()
            return
        node = self.nodes[event[1]]
        if not node.up or node.incarnation != event[2]:
            return  # addressed to a node that crashed since
        if node.paused:
            node.held.append(event)
            return
        if kind == "tick":
            node.core.tick(self.node_now(node))
            self.schedule(self.now_ms + TICK_MS, ("tick", node.id, node.incarnation))
        elif kind == "deliver":
            _, _, _, src, message = event
            self._note(f"{src}->{node.id} {_describe(message)}")
            node.core.step(src, message, self.node_now(node))
        elif kind == "persisted":
            self._persisted(node)
            return
        elif kind == "commit":
            self._commit_timer_fired(node)
        self._process(node)

    def node_now(self, node: SimNode) -> int:
        return self.now_ms + node.clock_skew_ms

    # -- driving one node like the runtime does -------------------------------------------------

    def _boot(self, node: SimNode) -> None:
        disk = node.disk
        self.snapshot_jobs.pop(node.id, None)
        bootstrap = self.voters if node.id in self.voters else ()
        snap = disk.latest_snapshot()
        state, time_ms, meta, entries = KVState(), 0, None, list(disk.entries)
        sessions = SessionTable()
        if snap is not None:
            meta = snap.meta
            state, time_ms, sessions = _load_sim_snapshot(snap.blob)
            entries = [e for e in entries if e.index > meta.index]
            if disk.offset + len(disk.entries) < meta.index or (
                    disk.offset < meta.index
                    and disk.entries[meta.index - disk.offset - 1].term != meta.term):
                entries = []  # the log does not continue from the snapshot: it restarts there
        raft = RaftCore(RaftConfig(node_id=node.id, voters=bootstrap,
                                   max_append_entries_count=self.max_append_entries_count,
                                   max_inflight_appends=self.max_inflight_appends,
                                   snapshot_chunk_bytes=self.snapshot_chunk_bytes),
                        hard_state=disk.hard_state, entries=entries,
                        rng=random.Random(self.rng.getrandbits(64)), snapshot=meta,
                        snapshot_size=len(snap.blob) if snap else 0,
                        log_offset=disk.offset if meta is None else 0)
        node._core = NodeCore(NodeConfig(node_id=node.id,
                                         request_timeout_ms=self.request_timeout_ms,
                                         replication=self.replication,
                                         snapshot_entries=self.snapshot_entries,
                                         snapshot_keep_entries=self.snapshot_keep_entries,
                                         snapshot_log_ratio=self.snapshot_log_ratio,
                                         auto_replace_after_ms=self.auto_replace_after_ms),
                              raft, state, rng=random.Random(self.rng.getrandbits(64)))
        node.core.state_time_ms = time_ms
        node.core.sessions = sessions
        # Every simulated node runs this replikv: each has told the others its level.
        for peer in self.nodes:
            if peer != node.id:
                node.core.peer_features(peer, features.FEATURE_LEVEL)
        node.up, node.paused, node.persisting, node.held = True, False, None, []
        node.commit_timer = False
        node.incarnation += 1
        node.commit_checked = node.digest_checked = 0
        node.delivered = {}
        node.publish_checked = node.core.applied_index  # its snapshot's: nothing before it
        self.schedule(self.now_ms + self.rng.randint(1, TICK_MS),
                      ("tick", node.id, node.incarnation))

    def submit(self, node_id: str, req_id: int, argv: list[bytes],
               options: RequestOptions = DEFAULT_OPTIONS) -> bool:
        """A client sends a command to a node; False if the node is down (connection refused)."""
        node = self.nodes[node_id]
        if not node.up:
            return False
        if node.paused:
            node.held.append(("submit", node.id, node.incarnation, req_id, argv, options))
            return True
        node.core.submit(req_id, argv, self.node_now(node), options)
        self._process(node)
        return True

    def _process(self, node: SimNode) -> None:
        core = node.core
        while node.persisting is None and core.has_ready():
            rd = core.ready()
            if core.raft.role is Role.LEADER and self.on_leader is not None:
                self._leader_event(node, self.on_leader)
                if node._core is not core:
                    return  # crashed there: nothing of this batch happened
            self._check_ready(node, rd)
            for req_id, value in rd.replies:
                self.on_reply(node.id, req_id, value)
            for env in rd.early_messages:
                if self.nodes[env.to].up:
                    self._send(node.id, env.to, env.message)
                else:
                    # As in the runtime: no link to a dead process, so the core is told the
                    # message certainly was not sent.
                    core.undeliverable(env.to, env.message)
            if self.options.ack_before_fsync:
                for env in rd.raft.messages:
                    self._send(node.id, env.to, env.message)
            if rd.raft.must_sync or rd.rolled_back:
                node.persisting = rd
                latency = self.rng.randint(*self.disk_latency_ms)
                if self.disk_spike and self.rng.random() < self.disk_spike:
                    latency += self.rng.randint(50, 400)
                self.schedule(self.now_ms + latency, ("persisted", node.id, node.incarnation))
                return
            self._finish_ready(node, rd)
            if node._core is not core:
                return
        if node._core is core and node.persisting is None:
            self._pump_snapshot(node)
            if not node.commit_timer and core.raft.commit_unsent:
                # As the runtime does: a commit index no AppendRequest carried goes out alone.
                node.commit_timer = True
                self.schedule(self.now_ms + COMMIT_BROADCAST_DELAY_MS,
                              ("commit", node.id, node.incarnation))

    @staticmethod
    def _commit_timer_fired(node: SimNode) -> None:
        node.commit_timer = False
        node.core.raft.broadcast_commit()

    def _pump_snapshot(self, node: SimNode) -> None:
        """Write a due snapshot a few records at a time, between the node's other work, as the
        runtime does (so writes land on the state while it is being written)."""
        core = node.core
        job_and_records = self.snapshot_jobs.get(node.id)
        if job_and_records is None:
            job = core.start_snapshot()
            if job is None:
                return
            self.snapshot_jobs[node.id] = job_and_records = (job, [])
            self._note(f"{node.id} SNAPSHOT start at {job.index}")
        job, records = job_and_records
        if not job.drained:
            batch = job.cursor.next_batch(self.rng.choice((1, 3, 50)))
            if batch is None:
                job.drained = True
            else:
                records.extend(batch)
                return
        verdict = core.snapshot_verdict(job)
        if verdict == "wait":
            return
        del self.snapshot_jobs[node.id]
        job.cursor.close()
        if verdict == "abort":
            self._note(f"{node.id} SNAPSHOT at {job.index} abandoned")
            return
        blob = msgpack.packb([job.index, job.term, job.membership.encode(), job.time_ms, records,
                              job.sessions, job.feature_level], use_bin_type=True)
        meta = SnapshotMeta(job.index, job.term, job.membership)
        node.disk.save_snapshot(SimSnapshot(meta, blob), core.raft.snapshots_in_use())
        offset = core.snapshot_saved(job, len(blob))
        node.disk.compact(offset)
        self.snapshots_taken += 1
        self._note(f"{node.id} SNAPSHOT at {job.index} kept; log now starts after {offset}")

    def _receive_chunks(self, node: SimNode, chunks: list[InstallSnapshot]) -> None:
        disk, core = node.disk, node.core
        for chunk in chunks:
            key = (chunk.index, chunk.snap_term)
            if disk.receiving is None or disk.receiving[:2] != key:
                disk.receiving = (*key, bytearray())
            buf = disk.receiving[2]
            if chunk.offset == len(buf) and chunk.data:
                buf.extend(chunk.data)
            if len(buf) < chunk.size:
                core.raft.snapshot_chunk_saved(chunk, len(buf))
                continue
            disk.receiving = None
            blob = bytes(buf)
            index, term, membership, *_rest = msgpack.unpackb(blob, use_list=True)
            if (index, term) != key:
                self._violation(f"{node.id} received a snapshot labelled {index}/{term} as "
                                f"{key}")
            meta = SnapshotMeta(index, term, Membership.decode(membership))
            state, time_ms, sessions = _load_sim_snapshot(blob)
            job = self.snapshot_jobs.pop(node.id, None)
            if job is not None:
                job[0].cursor.close()
            if core.install_snapshot(meta, state, time_ms, sessions, len(blob)):
                disk.save_snapshot(SimSnapshot(meta, blob), set())
                if core.raft.log.last_index == index or disk.offset + len(disk.entries) < index:
                    # The log restarts after the snapshot (nothing of it follows on): the
                    # runtime resets its WAL, so stale entries never follow the snapshot.
                    disk.entries, disk.offset = [], index
                else:
                    disk.compact(index)
                self.snapshots_installed += 1
                self._note(f"{node.id} INSTALLED snapshot at {index}")

    def _leader_event(self, node: SimNode, on_leader: Callable[[str, str], None]) -> None:
        raft = node.core.raft
        if node.elected_in != raft.term:
            node.elected_in, node.leader_commit = raft.term, raft.commit_index
            on_leader(node.id, "elected")
        elif raft.commit_index > node.leader_commit:
            node.leader_commit = raft.commit_index
            on_leader(node.id, "committed")

    def _persisted(self, node: SimNode) -> None:
        rd = node.persisting
        if rd is None:
            self._violation(f"{node.id}: a write completed that was never started")
        node.persisting = None
        node.disk.write(rd.raft.entries, rd.raft.hard_state, rd.rolled_back)
        self._finish_ready(node, rd)
        self._process(node)

    def _finish_ready(self, node: SimNode, rd: NodeReady) -> None:
        if not self.options.ack_before_fsync:
            for env in rd.raft.messages:
                self._send(node.id, env.to, env.message)
        node.core.advance(rd)
        if rd.raft.snapshot_chunks:
            self._receive_chunks(node, rd.raft.snapshot_chunks)
        self._check_node(node)

    def _send(self, src: str, dst: str, message: object) -> None:
        if isinstance(message, InstallSnapshot):
            # The driver fills in the chunk's bytes from its snapshot store as it sends.
            snap = self.nodes[src].disk.snapshots.get((message.index, message.snap_term))
            if snap is None:
                self.nodes[src].core.raft.snapshot_unavailable(dst)
                return
            data = snap.blob[message.offset:message.offset + message.length]
            message = InstallSnapshot(message.term, message.src, message.index,
                                      message.snap_term, len(snap.blob), message.offset,
                                      message.length, data)
        for delay in self.network.delays_ms(src, dst):
            self.schedule(self.now_ms + delay, ("deliver", dst, self.nodes[dst].incarnation, src,
                                                message))

    # -- faults ---------------------------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up:
            return
        self.faults_injected += 1
        self._note(f"CRASH {node_id}")
        if node.persisting is not None and node.persisting.raft.hard_state is not None \
                and self.rng.random() < 0.5:
            # The hard state is replaced atomically and fsynced on its own: it may have landed
            # although the log write of the same batch did not.
            node.disk.write([], node.persisting.raft.hard_state)
        node.up = False
        node.persisting = None
        node._core = None
        node.incarnation += 1

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up:
            return
        self._note(f"RESTART {node_id}")
        self._boot(node)

    def pause(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up and not node.paused:
            self.faults_injected += 1
            self._note(f"PAUSE {node_id}")
            node.paused = True
            node.paused_at_ms = self.now_ms

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up or not node.paused:
            return
        self._note(f"RESUME {node_id}")
        node.paused = False
        node.resumed_at_ms = self.now_ms
        held, node.held = node.held, []
        ticked = False
        for event in held:
            if event[0] == "submit":
                node.core.submit(event[3], event[4], self.node_now(node), event[5])
            elif event[0] == "tick":
                if not ticked:  # timers that fired while stopped run once, as asyncio's do,
                    ticked = True  # and the driver counts the ticks that passed meanwhile
                    missed = (self.now_ms - node.paused_at_ms) // TICK_MS
                    node.core.tick(self.node_now(node), max(1, missed))
                self.schedule(self.now_ms + TICK_MS, ("tick", node.id, node.incarnation))
            elif event[0] == "deliver":
                node.core.step(event[3], event[4], self.node_now(node))
            elif event[0] == "persisted":
                self._persisted(node)
                if not node.up:
                    return  # a nemesis crashed it as it went on (on_leader)
            elif event[0] == "commit":
                self._commit_timer_fired(node)
        self._process(node)

    def partition(self, *groups: set[str]) -> None:
        self.faults_injected += 1
        self._note(f"PARTITION {' | '.join(','.join(sorted(g)) for g in groups)}")
        self.network.partition(*groups)

    def block_one_way(self, src: str, dst: str) -> None:
        self.faults_injected += 1
        self._note(f"BLOCK {src}->{dst}")
        self.network.block_one_way(src, dst)

    def heal(self) -> None:
        self._note("HEAL")
        self.network.heal()

    # -- views ------------------------------------------------------------------------------------

    def leaders(self) -> list[str]:
        return [n.id for n in self.nodes.values()
                if n.up and not n.paused and n.core.raft.role is Role.LEADER]

    def live(self) -> list[str]:
        return [n.id for n in self.nodes.values() if n.up]

    def latest_membership(self) -> Membership:
        """The membership in the most advanced log among the nodes that are up (their own
        belief: what a leader would act on)."""
        up = [n for n in self.nodes.values() if n.up]
        if not up:
            return Membership(self.voters)
        best = max(up, key=lambda n: (n.core.raft.log.last_term, n.core.raft.log.last_index))
        return best.core.raft.membership

    def members(self) -> tuple[str, ...]:
        """Voters and standbys by the most advanced log: the nodes expected to serve."""
        m = self.latest_membership()
        return tuple(i for i in self.ids if i in m.members)

    # -- invariants -------------------------------------------------------------------------------

    def _violation(self, message: str) -> NoReturn:
        raise SimViolation(f"t={self.now_ms - START_MS}ms: {message}", list(self.trace))

    def _note(self, text: str) -> None:
        self.trace.append(f"{self.now_ms - START_MS:>7}ms {text}")

    def _check_ready(self, node: SimNode, rd: NodeReady) -> None:
        # Log matching, part one: the same (index, term) always holds the same data.
        for e in rd.raft.entries:
            crc = zlib.crc32(e.data)
            seen = self.entry_at.setdefault((e.index, e.term), crc)
            if seen != crc:
                self._violation(f"log matching: {node.id} has different data at index {e.index} "
                                f"term {e.term}")
        # Messages are delivered once, and only once the entry that published them commits.
        for p in rd.published:
            if p.index <= node.publish_checked or p.index > node.core.raft.commit_index:
                self._violation(f"{node.id} delivered a message of entry {p.index} "
                                f"{'again' if p.index <= node.publish_checked else 'before it committed'} "
                                f"(commit index {node.core.raft.commit_index})")
            node.delivered.setdefault(p.index, []).append((p.sharded, p.channel, p.message))
        # An entry saved as rolled back is not committed (yet: Raft's Figure 8 may still commit
        # a copy another node holds); one that may be is saved marked maybe_committed.
        for r in rd.rolled_back:
            i = r.entry.index
            if (not r.maybe_committed and i <= len(self.committed)
                    and self.committed[i - 1] == (r.entry.term, zlib.crc32(r.entry.data))):
                self._violation(f"{node.id} saved committed entry {i} (term {r.entry.term}) as "
                                f"rolled back")

    def _check_node(self, node: SimNode) -> None:
        raft = node.core.raft
        if raft.role is Role.LEADER:
            owner = self.leader_of_term.setdefault(raft.term, node.id)
            if owner != node.id:
                self._violation(f"two leaders in term {raft.term}: {owner} and {node.id}")
            if node.was_leader_in != raft.term:
                node.was_leader_in = raft.term
                self._note(f"{node.id} LEADER term {raft.term}")
                # Leader completeness: everything committed in its term or earlier ones is in
                # the new leader's log. (A leader noticed late, its first write slow or paused,
                # may have been deposed meanwhile by one that committed entries it lacks.)
                for i, (term, crc) in enumerate(self.committed, start=1):
                    if self.committed_in[i - 1] > raft.term or i < raft.log.offset:
                        continue
                    if i == raft.log.offset:
                        if raft.log.offset_term != term:
                            self._violation(f"leader completeness: new leader {node.id} "
                                            f"compacted through {i} with the wrong term")
                        continue
                    if raft.log.term_at(i) != term or zlib.crc32(raft.log.entry(i).data) != crc:
                        self._violation(f"leader completeness: new leader {node.id} (term "
                                        f"{raft.term}) lacks committed entry {i}")
        # Committed entries never change: compare what this node counts as committed with the
        # cluster-wide record, and extend it. (Entries compacted into a snapshot are not in the
        # log any more; the digest check below covers them.)
        upto = min(raft.commit_index, raft.log.last_index)
        for i in range(max(node.commit_checked, raft.log.offset) + 1, upto + 1):
            e = raft.log.entry(i)
            crc = zlib.crc32(e.data)
            if i <= len(self.committed):
                if self.committed[i - 1] != (e.term, crc):
                    self._violation(f"committed entry {i} changed: {node.id} has term {e.term}, "
                                    f"committed was term {self.committed[i - 1][0]}")
            elif i == len(self.committed) + 1:
                self.committed.append((e.term, crc))
                self.committed_in.append(raft.term)
                self.committed_data.append(e.data)
            else:
                self._violation(f"{node.id} committed entry {i} but entries before it were "
                                f"never seen committed ({len(self.committed)})")
        node.commit_checked = max(node.commit_checked, upto)
        self._check_published(node)
        # Same entries applied in the same order → the same state at the same index. A leader's
        # state may hold entries applied ahead of their commit: compare it only when it holds
        # none.
        applied = node.core.committed_applied_index
        if applied == node.digest_checked or node.core.applied_ahead:
            return
        node.digest_checked = applied
        if applied and applied <= len(self.committed):
            # The cluster's feature level is replicated state too, outside the keyspace digest.
            digest = f"{node.core.digest()}/level {node.core.state.feature_level}"
            seen = self.digest_at.setdefault(applied, (digest, node.id))
            if seen[0] != digest:
                self._violation(f"state digests differ at applied index {applied}: {seen[1]} and "
                                f"{node.id}")
        elif applied > len(self.committed):
            self._violation(f"{node.id} applied {applied} beyond anything committed "
                            f"({len(self.committed)})")


    def _check_published(self, node: SimNode) -> None:
        """What the node delivered through its committed applied index is exactly, entry by
        entry, what its log's entries publish (none for entries a snapshot covered)."""
        raft, applied = node.core.raft, node.core.committed_applied_index
        for i in range(node.publish_checked + 1, applied + 1):
            got = node.delivered.pop(i, [])
            if i > raft.log.offset:
                expected = entry_publishes(raft.log.entry(i).data)
            elif not got:
                continue  # covered by a snapshot this node installed: skipped
            else:  # applied, then compacted (a snapshot installed in the same turn)
                expected = (entry_publishes(self.committed_data[i - 1])
                            if i <= len(self.committed_data) else [])
            if got != expected:
                self._violation(f"{node.id} delivered {got!r} for entry {i}, which publishes "
                                f"{expected!r}")
        node.publish_checked = max(node.publish_checked, applied)
        if node.delivered:
            self._violation(f"{node.id} delivered messages of entries {sorted(node.delivered)} "
                            f"beyond its committed applied index {applied}")


def _describe(message: object) -> str:
    name = type(message).__name__
    if isinstance(message, AppendRequest):
        return (f"{name}(t{message.term} prev={message.prev_index}/{message.prev_term} "
                f"n={len(message.entries)} commit={message.commit})")
    fields = getattr(message, "__dataclass_fields__", {})
    inner = " ".join(f"{k}={getattr(message, k)!r}" for k in fields if k not in ("src", "argv",
                                                                               "result"))
    return f"{name}({inner})"


def _load_sim_snapshot(blob: bytes) -> tuple[KVState, int, SessionTable]:
    """The state, its time and the session table from a simulated snapshot."""
    _index, _term, _membership, time_ms, records, sessions, feature_level = msgpack.unpackb(
        blob, use_list=True)
    state = KVState.from_records(records)
    state.feature_level = feature_level
    return state, time_ms, SessionTable.from_bytes(sessions)
