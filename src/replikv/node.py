"""The node core: client requests in, consensus and replies out. Sans-I/O, like the raft core.

It sits between the connection handlers (which parse RESP) and the consensus core.

Writes. The leader executes each write against its own state when it proposes it, before the
entry commits ("applied ahead"), and keeps an undo record until the entry commits. What goes
into the log depends on the cluster's replication mode:
- passive (primary-backup): the entry carries the write's *effects* (post-images such as
  `set k v`, `del k`, set members added or removed), which backups replay without ever
  executing a command;
- active (state-machine replication): the entry carries the *command*, with the leader's clock
  and, for commands that draw random numbers, a seed fixed inside it; every replica executes it.
Executing at proposal time gives the reply before the commit, which is what write concern w=1
needs (acknowledge once the leader's own log is durable). w=majority answers at commit, w=all
once every voter holds the entry. If the leader loses its leadership, everything applied ahead
of the commit index is undone, newest first, and entries later discarded by the new leader are
handed to the driver (`NodeReady.rolled_back`) to be saved in a rollback file.

Reads. A read runs where its read preference allows (the leader, or this node if it is a
follower the preference accepts; otherwise it is forwarded to the leader). Its consistency says
what it waits for first: linearizable reads take a ReadIndex (one quorum round, batched per
Ready), lease reads take one from the leader's lease, local reads take nothing (a follower checks
its staleness bound). A read that runs on state holding entries applied ahead of the commit
index is held until those commit, so no read ever shows a write that could still be undone.
A connection's session remembers the index of its last write, and its later reads on any node
wait until that index is applied (read your writes).

Pub/sub. PUBLISH is a write that changes no key: its entry carries the message (an effect in
passive mode, the command in active mode). The state puts what an entry publishes in an outbox;
the node takes it after each entry and hands it to the driver (NodeReady.published) only once
the entry has committed: a follower as it applies, a leader from the applied-ahead record when
the index commits (dropped with the record if the entry is undone). `subscriptions` is the
driver's record of this node's subscribers, which PUBLISH's reply counts on the leader.

Every request has a deadline; its error says whether the command certainly did not take effect
(TRYAGAIN) or might have (UNKNOWN).

Log entries are msgpack `[kind, time_ms, payload, ...]`, or b"" for the leader's no-op:
kind 1 a command (payload argv, optional 4th field the random seed), kind 2 an expiry batch
(payload keys; active mode), kind 3 effects (payload as KVState.apply_effects takes it). The time
applied is max(entry time, previous applied time), so expiry stays monotonic and identical on
every replica even if a new leader's clock is behind the old one's.

The driver loop (asyncio server or simulator) is the raft one with node-level extras:

    while node.has_ready():
        rd = node.ready()
        deliver(rd.replies); send(rd.early_messages)
        publish(rd.published)             # committed messages to this node's subscribers
        save(rd.rolled_back)              # a rollback file, before the replacing entries
        persist(rd.raft.hard_state, rd.raft.entries)
        send(rd.raft.messages); node.advance(rd)
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from replikv.commands import grows_log, grows_memory, parse_command
from replikv.commands.scripts import ScriptCache, ScriptContext
from replikv.commands.transactions import (
    WATCH_POINT_NAME_LOWER,
    WATCH_SCAN_MAX,
    changes_any,
    encode_exec,
    is_pipeline,
    split_exec,
    split_watch,
)
from replikv.concerns import DEFAULT_OPTIONS, FOLLOWER_MAY_SERVE, TIMEOUT_MS_MAX, RequestOptions
from replikv.entries import (
    ENTRY_COMMAND,
    ENTRY_EFFECTS,
    ENTRY_EXPIRE,
    ENTRY_FEATURES,
    apply_entry,
)
from replikv.features import (
    FEATURE_LEVEL,
    FEATURE_LEVEL_LEGACY,
    PUBLISH_LEVEL,
    command_level,
    level_error,
    needed_level,
)
from replikv.invariants import InvariantViolation, invariant
from replikv.limits import DEFAULT_LIMITS, Limits
from replikv.node_messages import (
    ForwardReply,
    ForwardRequest,
    ReadIndexReply,
    ReadIndexRequest,
    WaitReply,
    WaitRequest,
)
from replikv.pubsub import Published, Subscriptions
from replikv.raft.core import RaftCore, Ready, SnapshotMeta
from replikv.raft.membership import (
    ADD_LEARNER,
    DEMOTE,
    PROMOTE,
    REMOVE,
    Membership,
    MembershipError,
    valid_member_id,
)
from replikv.raft.messages import AppendRequest, Entry, Envelope
from replikv.replies import (
    NOT_INTEGER,
    CommandError,
    ErrorReply,
    NullArray,
    Status,
    _NullArray,
    wrong_arity,
)
from replikv.scripting import ScriptAborted, ScriptBudget
from replikv.sessions import SessionTable, Verdict
from replikv.state import KVState, Undo

REPLICATION_MODES = ("passive", "active")
# Writes whose outcome depends on a random draw: the leader fixes the seed inside the entry.
# exec: a transaction may hold an SPOP; eval and fcall: a script's math.random and its redis.calls.
RANDOM_WRITES = frozenset({b"spop", b"exec", b"eval", b"fcall"})
_SCRIPTS = (b"eval", b"fcall")  # the writes that run Lua, whose calls are judged as they run
RECENT_FORWARDS_MAX = 100_000
COMMIT_MARKS_MAX = 1024
PROPOSE_TIMES_MAX = 100_000
# Request deadlines are filed in buckets of this many ms before the exact heap (see
# _expire_deadlines): most requests finish long before their deadline, and a heap of every
# finished request's deadline (5 s of them at full load: tens of thousands) cost the leader a
# push and a pop each on a deep heap.
DEADLINE_BUCKET_MS = 100
# What an entry of the in-memory Raft log costs beyond its data: its end and its term in two
# arrays, their over-allocation, and a share of the newest 4,096-8,192 entries also kept as
# tuples (tracemalloc, 40-byte entries: 29 bytes each over 100,000 entries, 19 over 400,000;
# it was 145 while the log held an Entry tuple, an index int and a bytes object per entry).
# Used to weigh the log against the state for snapshot_log_ratio.
ENTRY_OVERHEAD_BYTES = 25
COMMIT_LATENCIES_MAX = 100_000  # commit_latencies_ms kept for a driver that does not take them

# The client-facing errors, with what each guarantees. Documented in the README.
ERR_NO_LEADER = ErrorReply(
    "TRYAGAIN no leader is available (election in progress or no quorum); "
    "the command was not applied, retry it")
ERR_NOT_APPLIED = ErrorReply(
    "TRYAGAIN leadership changed before the command committed and it was discarded; "
    "the command was not applied, retry it")
ERR_UNKNOWN = ErrorReply(
    "UNKNOWN the leader was lost before the write was confirmed; it may or may not have been "
    "applied: read the key before retrying a write that is not idempotent")
ERR_BUSY = ErrorReply(
    "TRYAGAIN too many requests in flight on this node; the command was not applied, retry it")
ERR_READ_TIMEOUT = ErrorReply(
    "TRYAGAIN the read could not be confirmed with a quorum in time; nothing was changed, "
    "retry it")
ERR_NOT_SECONDARY = ErrorReply(
    "NOTSECONDARY this node is the primary and the read preference is 'secondary': connect "
    "to a follower, or use secondaryPreferred or nearest")
ERR_RETRY_SAME_SEQ = ErrorReply(
    "TRYAGAIN leadership changed while this retried write's first attempt was committing; "
    "retry it with the same sequence number (it is applied at most once)")
# Redis's text, word for word (clients and tools match on it).
ERR_OOM = ErrorReply("OOM command not allowed when used memory > 'maxmemory'.")
ERR_EFFECTS_TOO_LARGE = (
    "ERR the command's effects are too large for one log entry (limit {limit} bytes); "
    "nothing was changed")


def wtimeout_error(holders: int, voters: int, waited_ms: int) -> ErrorReply:
    return ErrorReply(
        f"WTIMEOUT the write is committed and durable on a majority, but only {holders} of "
        f"{voters} voters held it after {waited_ms} ms (w=all); it was applied: do not retry it")


def stale_error(staleness_ms: int | None, bound_ms: int) -> ErrorReply:
    behind = "an unknown time" if staleness_ms is None else f"{staleness_ms} ms"
    return ErrorReply(
        f"STALE this replica is {behind} behind the primary, more than MAXSTALENESS "
        f"{bound_ms} ms; read from the primary or another replica")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    tick_ms: int = 50
    request_timeout_ms: int = 5000
    expire_every_ticks: int = 2
    expire_batch_keys: int = 1000
    replication: str = "passive"
    limits: Limits = DEFAULT_LIMITS
    # Log compaction: snapshot the state once this many entries were applied since the last
    # snapshot (0: never), then drop the log through the snapshot's index minus
    # `snapshot_keep_entries` (kept so followers slightly behind get entries, not a snapshot).
    snapshot_entries: int = 0
    snapshot_keep_entries: int = 1000
    # ...and of those, no more than this many bytes of entry data (0: no byte bound): a log of
    # large entries (bulk MSETs, big values) must not keep hundreds of MiB in memory.
    snapshot_keep_bytes: int = 0
    snapshot_log_bytes: int = 0  # also due once the entries since hold this much data
    # Also due once the log since the last snapshot (each entry's data plus
    # ENTRY_OVERHEAD_BYTES) costs `snapshot_log_ratio` times the keyspace's memory
    # (KVState.used_bytes()), and at least `snapshot_log_min_bytes` (0.0: off). The log's
    # memory then stays proportional to the data, and the work of writing snapshots, which is
    # proportional to the state's size, proportional to the writes: a fixed entry count makes a
    # large state snapshot over and over under a steady write load.
    snapshot_log_ratio: float = 0.0
    snapshot_log_min_bytes: int = 0
    # Automatic replacement (0: off): see NodeCore._auto_replace.
    auto_replace_after_ms: int = 0
    # Redis's maxmemory with the noeviction policy (0: no limit): see NodeCore.maxmemory.
    maxmemory: int = 0

    def __post_init__(self) -> None:
        invariant(self.replication in REPLICATION_MODES,
                  f"replication must be one of {REPLICATION_MODES}")


class RolledBack(NamedTuple):
    """A log entry a new leader discarded. `acknowledged`: True if a client was told it
    succeeded (w=1), False if not, None if this node cannot know (it restarted since)."""

    entry: Entry
    acknowledged: bool | None
    # True for an entry a snapshot replaced that may be the committed one at its index (see
    # raft.core.classify_replaced): saved all the same, and marked so.
    maybe_committed: bool = False


@dataclass(slots=True)
class NodeReady:
    raft: Ready
    # Node messages (forwarding, read indexes) depend on nothing local being durable.
    early_messages: list[Envelope] = field(default_factory=list)
    replies: list[tuple[int, object]] = field(default_factory=list)
    # Save these (a rollback file) before persisting raft.entries, which replace them.
    rolled_back: list[RolledBack] = field(default_factory=list)
    # Messages of PUBLISH and SPUBLISH entries that committed, in log order: hand them to this
    # node's subscribers (replikv.pubsub). Never an entry that is not committed.
    published: list[Published] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    req_id: int
    argv: list[bytes]
    kind: str  # "write" | "read" | "wait" | "admin" (membership, switchover: run by the leader)
    opts: RequestOptions
    session: int | tuple[int, ...] | None  # the connection(s): tuple for a batch of several
    deadline_ms: int
    # "waiting" (no leader yet), "proposed" (in our log), "forwarded", "reading", "held"
    # (result computed, waiting for the commit index), "replicating" (w=all, committed)
    phase: str = "waiting"
    sent_to: str | None = None
    reply_to: tuple[str, int] | None = None  # forwarded to us: (origin node, its request id)
    min_index: int = 0  # read your writes: serve only once applied this far
    wait_replicas: int = 0
    wait_index: int = 0
    wait_until_ms: int = 0  # WAIT: when the leader answers with the count it has
    parsed: tuple | None = None  # (spec, parsed arguments) of a client command, parsed once


@dataclass(slots=True)
class _Proposal:
    """A client write this node proposed as leader, until its entry commits or is replaced."""

    term: int
    target: tuple  # ("local", req_id) | ("remote", node, req_id)
    reply: Any
    w: str
    proposed_ms: int
    wtimeout_ms: int
    acked: bool = False  # already answered (w=1, once durable here)


@dataclass(slots=True)
class SnapshotJob:
    """A snapshot being written: the state as of `index` (on a leader, possibly ahead of the
    commit index: it is kept only once `index` commits with `term`). The driver pulls record
    batches from `cursor` (KVState.begin_snapshot) between other work, so the node never stops
    serving, and asks `NodeCore.snapshot_verdict` when the cursor is exhausted."""

    index: int
    term: int
    membership: Membership
    time_ms: int  # the state's time (the last applied entry's), restored with it
    cursor: Any
    sessions: bytes  # the session table at `index` (SessionTable.to_bytes)
    drained: bool = False
    feature_level: int = FEATURE_LEVEL_LEGACY  # the cluster's at `index` (replikv.features)


# Member operations as clients spell them (REPLIKV MEMBER <op> ...).
MEMBER_OPS = {b"add": ADD_LEARNER, b"promote": PROMOTE, b"demote": DEMOTE, b"remove": REMOVE}


def decode_address_book(context: bytes) -> dict[str, dict[str, str]]:
    """The membership context as the node layer uses it: id -> {"peer": "host:port",
    "client": ..., "admin": ...}. Invalid or empty context gives {}."""
    if not context:
        return {}
    try:
        book = msgpack.unpackb(context, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return {}
    if not isinstance(book, dict):
        return {}
    return {k: {a: b for a, b in v.items() if isinstance(a, str) and isinstance(b, str)}
            for k, v in book.items() if isinstance(k, str) and isinstance(v, dict)}


def encode_address_book(book: dict[str, dict[str, str]]) -> bytes:
    return msgpack.packb({k: dict(sorted(v.items())) for k, v in sorted(book.items())},
                         use_bin_type=True)


def is_admin_command(argv: list[bytes] | tuple[bytes, ...]) -> bool:
    """REPLIKV MEMBER ... and REPLIKV SWITCHOVER ...: run by the leader, forwarded to it."""
    return (len(argv) >= 2 and argv[0].lower() == b"replikv"
            and argv[1].lower() in (b"member", b"switchover"))


class _AppliedAhead(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index, as NamedTuple allows
    term: int
    undo: Any
    time_before_ms: int
    session_undo: Any = None  # the entry's record in the session table
    # What the entry published, (sharded, channel, message): delivered once it commits,
    # dropped if it is undone.
    published: list[tuple[bool, bytes, bytes]] | None = None


def encode_command_entry(argv: list[bytes], time_ms: int, seed: int = 0,
                         session: list | None = None) -> bytes:
    body: list = [ENTRY_COMMAND, time_ms, argv]
    if seed or session:
        body.append(seed)
    if session:
        body.append(session)
    return msgpack.packb(body, use_bin_type=True)


def encode_expire_entry(keys: list[bytes], time_ms: int) -> bytes:
    return msgpack.packb([ENTRY_EXPIRE, time_ms, keys], use_bin_type=True)


def encode_features_entry(level: int, time_ms: int) -> bytes:
    return msgpack.packb([ENTRY_FEATURES, time_ms, level], use_bin_type=True)


def encode_effects_entry(effects: list, time_ms: int, session: list | None = None) -> bytes:
    body: list = [ENTRY_EFFECTS, time_ms, effects]
    if session:
        body += [0, session]
    return msgpack.packb(body, use_bin_type=True)


class NodeCore:
    def __init__(self, config: NodeConfig, raft: RaftCore, state: KVState,
                 rng: random.Random | None = None) -> None:
        invariant(config.node_id == raft.id, "node and raft ids differ")
        self.config = config
        self.id = config.node_id
        self.raft = raft
        self.state = state
        self.rng = rng if rng is not None else random.Random(0)
        # Pub/sub: this node's subscriptions, which the driver keeps (the runtime's
        # connections subscribe through it) and PUBLISH counts on the leader; and the messages
        # of committed entries not yet handed to the driver (NodeReady.published).
        self.subscriptions = Subscriptions()
        self._published: list[Published] = []
        self.published_total = 0  # messages of committed entries handed to the driver
        self._attach_pubsub(state)
        self.now_ms = 0
        # The state reflects the log through applied_index. On the leader that may be ahead of
        # the commit index: _ahead holds the undo records of those entries, oldest first.
        self.applied_index = raft.applied_index
        self.state_time_ms = 0  # the time of the last applied entry, never decreasing
        # Retryable writes: per client session, the last sequence number applied and its
        # reply. Replicated state like `state` (in snapshots; undone with it).
        self.sessions = SessionTable()
        self._dup_waiting: list[tuple[int, tuple, object]] = []  # (index, target, reply)
        # Data of the committed entries applied, ever, and at the last snapshot's index: their
        # difference is what the snapshot rules weigh. A snapshot job remembers the count at
        # its index, so what is applied while the job is written counts towards the next one.
        self._bytes_applied = 0
        self._bytes_at_snapshot = 0
        self._job_bytes: tuple[int, int] = (-1, 0)  # (index, _bytes_applied) of the last job
        # Nodes snapshot a little apart (up to a quarter of the interval later), so a cluster
        # does not spend its CPU on snapshots all at the same moment.
        self._snapshot_jitter = 0  # entries, for snapshot_entries
        self._growth_jitter = 0.0  # a fraction of the threshold, for snapshot_log_ratio
        self._new_snapshot_jitter()
        self._ahead: deque[_AppliedAhead] = deque()
        self._was_leader = False
        self._terms_led: set[int] = set()

        self._requests: dict[int, _Request] = {}
        # Deadlines: (deadline_ms, req_id) filed by deadline_ms // DEADLINE_BUCKET_MS, a heap
        # of those bucket numbers, and the exact heap that a due bucket's still-pending
        # requests move to (the requests due within the next bucket, at most).
        self._deadline_buckets: dict[int, list[tuple[int, int]]] = {}
        self._bucket_heap: list[int] = []
        self._deadlines: list[tuple[int, int]] = []
        self._waiting_for_leader: deque[int] = deque()
        self._parked: list[int] = []  # refused by the node we believe leads; wait for news
        self._next_internal_id = -1  # requests other nodes forwarded to us have negative ids
        # (origin, req_id) of forwarded writes proposed lately, so that a duplicated
        # ForwardRequest is not proposed twice. Origins number requests uniquely across their
        # restarts (see NodeServer), so a key is never reused for a different command.
        self._recent_forwards: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._proposals: dict[int, _Proposal] = {}
        self._w1_pending: deque[int] = deque()  # indexes of w=1 proposals not yet durable
        self._all_waiting: dict[int, _Proposal] = {}  # committed w=all writes awaiting copies
        self._waits: set[int] = set()  # WAIT requests being answered here (leader)
        # Open connection -> index of its last write (0: none yet); entered by a connection's
        # first write, dropped by end_session.
        self._sessions: dict[int, int] = {}
        self._read_batch: list[int] = []
        self._next_batch_id = 1
        self._read_batches: dict[int, tuple[list[int], str | None]] = {}  # batch -> (reqs, asked)
        self._reads_waiting_apply: list[tuple[int, int]] = []  # heap (index, req_id)
        self._held: list[tuple[int, int, object]] = []  # heap (applied index, req_id, result)
        self._replies: list[tuple[int, object]] = []
        self._msgs: list[Envelope] = []
        self._known_leader: str | None = raft.leader_id
        self._expire_inflight_index = 0
        # Staleness: (local time, leader's commit index) from recent AppendRequests; once we
        # have applied that index we were up to date as of that time.
        self._commit_marks: deque[tuple[int, int]] = deque()
        self._caught_up_ms: int | None = None
        self._propose_times: list[tuple[int, int]] = []  # (index, local time) on the leader
        # Counters for INFO and metrics.
        self.entries_applied = 0  # committed entries other than no-ops
        self.commands_executed = 0  # commands run against the state (writes, not reads)
        self.effects_applied = 0  # effects entries replayed (passive backups)
        self.forwarded_total = 0
        self.unknown_outcomes = 0
        self.rolled_back_entries = 0
        self.rolled_back_acknowledged = 0
        self.maybe_committed_entries = 0  # replaced by a snapshot, perhaps committed
        self.wtimeouts = 0
        self.auto_replacements = 0  # membership changes made by automatic replacement
        self.duplicate_writes = 0  # retried writes answered from the session table
        self.proposals_total = 0  # entries proposed as leader
        # Leader: milliseconds from proposing a client write to its commit, for the driver's
        # metrics to take (it empties the list); bounded if nobody does.
        self.commit_latencies_ms: list[int] = []
        # The memory limit (Redis's maxmemory, policy noeviction; 0: none). While the keyspace
        # holds more than this (KVState.used_bytes, the model INFO's used_memory reports), the
        # leader refuses the writes Redis flags "denyoom" (those that can add data) with Redis's
        # OOM error, before running them; deletes, expiries, pops and the like still run.
        # Only the leader decides, when it proposes: every replica holds the same keyspace, so
        # the leader's limit bounds every node's, and followers apply whatever the log holds.
        # The driver may change it at run time (CONFIG SET maxmemory).
        self.maxmemory = config.maxmemory
        self.oom_rejections = 0  # commands refused for it, as leader
        # Set by the driver while this node's disk is nearly full (below disk_min_free_bytes):
        # the error that writes that add data then get, as over maxmemory (a node whose disk
        # fills stops; every replica's disk fills with the same log). None: no refusal.
        self.disk_refusal: ErrorReply | None = None
        self.disk_rejections = 0  # commands refused for it, as leader
        # The feature level (replikv.features) each other member advertised in its peer
        # handshake, as the driver last told us (`peer_features`); a member not in it has no
        # link to this node now.
        self.peer_levels: dict[str, int] = {}
        self.feature_rejections = 0  # writes refused as leader: a member could not apply them
        # Lua scripts: this node's script cache (not replicated: SCRIPT LOAD, EVAL), and the
        # limits of the scripts whose outcome this node decides (as leader, or serving EVAL_RO).
        limits = config.limits
        self.scripts = ScriptCache(limits.script_cache_max_scripts,
                                   limits.script_cache_max_bytes, limits.script_max_body_bytes)
        budget = ScriptBudget(limits.script_max_instructions, limits.script_max_memory_bytes)
        self._script_write_context = ScriptContext(budget, self._script_refusal,
                                                   self._script_disk_refusal)
        self._script_read_context = ScriptContext(budget)
        self.scripts_stopped = 0  # scripts stopped by their limits here (nothing applied)

    # -- events -------------------------------------------------------------------------------

    def submit(self, req_id: int, argv: list[bytes], now_ms: int,
               options: RequestOptions = DEFAULT_OPTIONS,
               session: int | tuple[int, ...] | None = None) -> None:
        """A client command. Its reply appears in a later NodeReady.replies as (req_id, value).

        `session` names the client connection (for read-your-writes and WAIT), or the
        connections of a batch of writes (an internal EXEC PIPELINE: each of them has written
        at its index); end it with end_session when the connection closes."""
        self.now_ms = now_ms
        if argv and argv[0].lower() == b"wait":
            self._submit_wait(req_id, argv, options, session if type(session) is int else None)
            return
        if is_admin_command(argv):
            req = _Request(req_id, list(argv), "admin", options, None,
                           now_ms + self.config.request_timeout_ms)
            self._add_request(req)
            self._route_write(req)
            return
        if argv and argv[0][:1] in b"EeSs" and len(argv[0]) >= 4:  # EVAL*, EXEC, SCRIPT
            scripted, answer = self._scripts_on_submit(argv)
            if scripted is None:
                self._replies.append((req_id, answer))
                return
            argv = scripted
        try:
            spec, _parsed = parse_command(argv)
        except CommandError as e:
            self._replies.append((req_id, e.reply()))
            return
        if len(self._requests) >= self.config.limits.max_pending_requests:
            self._replies.append((req_id, ERR_BUSY))
            return
        is_write = spec.kind == "write"
        if is_write and sum(map(len, argv)) > self.config.limits.max_entry_bytes:
            self._replies.append((req_id, ErrorReply(
                f"ERR command too large for one log entry (limit "
                f"{self.config.limits.max_entry_bytes} bytes)")))
            return
        timeout_ms = self.config.request_timeout_ms
        if is_write and options.w == "all":
            timeout_ms += options.wtimeout_ms or self.config.request_timeout_ms
        req = _Request(req_id, argv, spec.kind, options, session, now_ms + timeout_ms,
                       parsed=(spec, _parsed))
        if session is not None:
            sessions = self._sessions
            if not is_write:
                req.min_index = (sessions.get(session, 0) if isinstance(session, int) else
                                 max(sessions.get(one, 0) for one in session))
            else:
                for one in _connections(session):
                    sessions.setdefault(one, 0)  # open: its writes' indexes are noted
        self._add_request(req)
        self._route(req)

    def _scripts_on_submit(self, argv: list[bytes]) -> tuple[list[bytes] | None, object]:
        """What this node does with a client's command before routing it, for scripts: SCRIPT
        is answered here (the cache is this node's); EVALSHA becomes EVAL of the cached body
        (NOSCRIPT if this node does not know it), inside a transaction too; EVAL's body is
        cached here. (the command to route, None) or (None, the reply to answer at once)."""
        name = argv[0].lower()
        if name == b"script":
            return None, self.scripts.command(argv)
        if name == b"evalsha" or name == b"evalsha_ro":
            resolved = self.scripts.resolve(argv)
            return (resolved, None) if isinstance(resolved, list) else (None, resolved)
        if (name == b"eval" or name == b"eval_ro") and len(argv) >= 3:
            too_large = self.scripts.too_large(argv[1])
            if too_large is not None:
                return None, too_large
            self.scripts.add(argv[1])
        elif name == b"exec" and not is_pipeline(argv):
            resolved_exec = self._resolve_in_exec(argv)
            return ((resolved_exec, None) if isinstance(resolved_exec, list)
                    else (None, resolved_exec))
        return argv, None

    def _resolve_in_exec(self, argv: list[bytes]) -> list[bytes] | ErrorReply:
        """A transaction's EVALSHAs as EVAL of their bodies; one this node does not know
        answers NOSCRIPT in its slot of EXEC's reply, as in Redis (it becomes a script that
        answers that error)."""
        try:
            watch, bare = split_watch(argv)
            commands = split_exec(bare)
        except CommandError as e:
            return e.reply()
        if not any(c[0].lower() in (b"evalsha", b"evalsha_ro") for c in commands):
            return argv
        resolved: list[list[bytes]] = []
        for command in commands:
            if command[0].lower() in (b"evalsha", b"evalsha_ro"):
                found = self.scripts.resolve(command)
                command = found if isinstance(found, list) else [
                    b"EVAL", b"return redis.error_reply('" + found.message.encode() + b"')",
                    b"0"]
            resolved.append(command)
        return encode_exec(resolved, watch)

    def _write_refusal(self) -> ErrorReply | None:
        """Why the leader refuses writes that add data now: its disk nearly full (MISCONF),
        the keyspace over maxmemory (OOM); None when it does not."""
        refusal = self.disk_refusal
        if refusal is None and self.maxmemory and self.state.used_bytes() > self.maxmemory:
            refusal = ERR_OOM
        return refusal

    def _script_disk_refusal(self) -> ErrorReply | None:
        """`_script_refusal` for a nearly full disk alone (an allow-oom function's)."""
        refusal = self.disk_refusal
        if refusal is not None:
            self._count_refused(refusal, 1)
        return refusal

    def _script_refusal(self) -> ErrorReply | None:
        """Inside a script the leader runs: why a command Redis flags denyoom is refused now,
        as Redis judges each redis.call (counted as a refused write)."""
        refusal = self._write_refusal()
        if refusal is not None:
            self._count_refused(refusal, 1)
        return refusal

    def peer_features(self, node_id: str, level: int | None) -> None:
        """A member's peer link told us the feature level its replikv can apply; None: its link
        closed, so it is unknown until the member connects again (it may come back running
        another replikv)."""
        if level is None:
            self.peer_levels.pop(node_id, None)
        else:
            self.peer_levels[node_id] = level

    def members_below(self, level: int) -> list[tuple[str, int | None]]:
        """The other members (voters and standbys) not known to apply `level`: (id, advertised
        level or None if unknown), in id order."""
        m = self.raft.membership
        return [(member, self.peer_levels.get(member))
                for member in sorted({*m.voters, *m.learners} - {self.id})
                if self.peer_levels.get(member, 0) < level]

    def end_session(self, session: int) -> None:
        self._sessions.pop(session, None)

    def step(self, env_src: str, message: object, now_ms: int) -> None:
        """A message from peer `env_src` (already validated by the wire decoder)."""
        self.now_ms = now_ms
        if isinstance(message, ForwardRequest):
            self._on_forward_request(message)
        elif isinstance(message, ForwardReply):
            self._on_forward_reply(message)
        elif isinstance(message, ReadIndexRequest):
            if self.raft.is_leader:
                self.raft.request_read(("remote", message.src, message.req_id),
                                       lease=message.lease)
            else:
                self._send(message.src, ReadIndexReply(self.id, message.req_id, None))
        elif isinstance(message, ReadIndexReply):
            self._on_read_index(message.req_id, message.index)
        elif isinstance(message, WaitRequest):
            self._on_wait_request(message)
        elif isinstance(message, WaitReply):
            self._on_wait_reply(message)
        else:
            self.raft.step(message)
            if (isinstance(message, AppendRequest) and message.lease
                    and message.term == self.raft.term and self.raft.leader_id == message.src):
                # Sent under a lease: no other leader existed, so its commit index was the
                # cluster's (a leader without one may have been replaced unawares, or, new,
                # not know the commit index yet): news of how far the cluster has committed.
                self._note_leader_commit(message.commit)
        self._after_event()

    def undeliverable(self, to: str, message: object) -> None:
        """The driver could not send `message` (no link to `to`): it certainly was not received.

        A forwarded request or a read-index request then waits for news of a leader instead of
        timing out as UNKNOWN: during a failover the old leader's link drops before a new
        leader is elected, and writes sent meanwhile should go to the new one.
        """
        if isinstance(message, ForwardRequest | WaitRequest):
            req = self._requests.get(message.req_id)
            if req is not None and req.phase == "forwarded" and req.sent_to == to:
                req.sent_to = None
                self._park(req, to)
        elif isinstance(message, ReadIndexRequest):
            entry = self._read_batches.pop(message.req_id, None)
            if entry is not None:
                for r in entry[0]:
                    req = self._requests.get(r)
                    if req is not None:
                        self._park(req, to)
        self._after_event()

    def tick(self, now_ms: int, ticks: int = 1) -> None:
        """`ticks` ticks have passed since the last call (more than one when the process was
        stopped or starved: the driver counts them on a monotonic clock)."""
        self.now_ms = now_ms
        self.raft.tick()
        if ticks > 1:
            self.raft.clock_jumped(ticks - 1)
        self._check_role()
        if (self.raft.is_leader and self.raft.tick_count % self.config.expire_every_ticks == 0
                and self.raft.commit_index >= self._expire_inflight_index):
            self._propose_expiry()
        if self._all_waiting:
            self._expire_all_waiting()
        if self.config.auto_replace_after_ms and self.raft.is_leader:
            self._auto_replace()
        self._expire_deadlines()
        self._after_event()

    def _auto_replace(self) -> None:
        """Passive redundancy: a voter unreachable for auto_replace_after_ms is replaced by a
        caught-up standby. One single-server change at a time, and memoryless (a new leader
        carries on where the old one stopped): while the voters are an odd number, promote a
        standby that is reachable and caught up; while they are an even number, demote the
        voter silent longest. So 3 voters with one lost become 4 (the standby joins), then 3
        again (the lost one becomes a standby, and catches up as one if it comes back)."""
        raft = self.raft
        if raft.config_change_pending() or not raft.committed_in_current_term():
            return
        limit_ticks = max(1, self.config.auto_replace_after_ms // self.config.tick_ms)
        silent = {v: raft.tick_count - (pr.last_contact_tick or 0)
                  for v, pr in raft.progress.items() if v in raft.voters}
        lost = sorted((v for v, t in silent.items() if t >= limit_ticks),
                      key=lambda v: (-silent[v], v))
        if not lost:
            return
        current = raft.membership
        if len(current.voters) % 2 == 1:
            ready = [s for s in current.learners if s in raft.progress
                     and raft.tick_count - (raft.progress[s].last_contact_tick or 0)
                     < raft.config.election_ticks
                     and raft.progress[s].match + raft.config.promote_max_lag_entries
                     >= raft.log.last_index]
            if not ready:
                return
            target, op = max(ready, key=lambda s: (raft.progress[s].match, s)), PROMOTE
        else:
            target, op = lost[0], DEMOTE
        try:
            index = raft.propose_membership(current.changed(op, target))
        except MembershipError:
            return  # e.g. no reachable majority after the change: wait
        self._ahead.append(_AppliedAhead(index, raft.term, None, self.state_time_ms))
        self.applied_index = index
        self.auto_replacements += 1

    # -- the Ready cycle ------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._replies or self._msgs or self._read_batch or self._published
                    or self.raft.has_ready())

    def ready(self) -> NodeReady:
        self._check_role()
        if self._read_batch:
            self._flush_read_batch()
        rd = self.raft.ready()
        rolled_back = [self._rolled_back(e) for e in rd.rolled_back]
        if rd.maybe_committed:
            rolled_back += [self._rolled_back(e, maybe_committed=True)
                            for e in rd.maybe_committed]
            rolled_back.sort(key=lambda r: r.entry.index)
        self._apply(rd.committed)
        remote = False
        for rs in rd.read_states:
            ctx = rs.context
            if ctx[0] == "local":
                self._on_read_index(ctx[1], rs.index)
            else:
                self._send(ctx[1], ReadIndexReply(self.id, ctx[2], rs.index))
                remote = True
        if remote:
            # A follower serves its read once it has applied the index it was given: it must
            # not wait for the commit index to come with the next write or tick.
            self.raft.broadcast_commit()
        self._serve_reads()
        self._release_held()
        out = NodeReady(rd, early_messages=self._msgs, replies=self._replies,
                        rolled_back=rolled_back, published=self._published)
        self._msgs, self._replies, self._published = [], [], []
        out.early_messages.extend(rd.early_messages)
        self._after_event()  # reads refused above are routed again in the next Ready
        return out

    def advance(self, rd: NodeReady) -> None:
        self.raft.advance(rd.raft)
        if self._w1_pending:
            self._ack_durable_w1()
        self._after_event()

    # -- leadership: applying ahead and undoing ---------------------------------------------------

    def _check_role(self) -> None:
        is_leader = self.raft.is_leader
        if is_leader and not self._was_leader:
            self._was_leader = True
            self._terms_led.add(self.raft.term)
            self._apply_log_ahead()
        elif not is_leader and self._was_leader:
            self._was_leader = False
            self._undo_uncommitted()

    def _apply_log_ahead(self) -> None:
        """A new leader brings its state up to its whole log (entries of earlier terms not yet
        committed, and its no-op) before it executes anything new."""
        log = self.raft.log
        for e in log.slice(self.applied_index + 1, log.last_index + 1):
            before = self.state_time_ms
            undo, session_undo = self._apply_entry(e, recorded=True)
            self._ahead.append(_AppliedAhead(e.index, e.term, undo, before, session_undo,
                                             self.state.take_published() or None))
            self.applied_index = e.index

    def _undo_uncommitted(self) -> None:
        """Leadership lost: undo what was applied ahead of the commit index, newest first. The
        entries may still commit under the new leader; then they are applied again in order."""
        commit = self.raft.commit_index
        while self._ahead and self._ahead[-1].index > commit:
            a = self._ahead.pop()
            if a.session_undo is not None:
                self.sessions.undo(a.session_undo)
            if a.undo is not None:
                self.state.undo(a.undo)
            self.state_time_ms = a.time_before_ms
            self.applied_index = a.index - 1
        self._w1_pending.clear()
        self._propose_times = []
        for prop in self._all_waiting.values():
            self._deliver(prop.target, wtimeout_error(1, len(self.raft.voters),
                                                      self.now_ms - prop.proposed_ms))
        self._all_waiting = {}
        waiting_dups, self._dup_waiting = self._dup_waiting, []
        for _index, target, _reply in waiting_dups:
            self._deliver(target, ERR_RETRY_SAME_SEQ)
        # Reads computed on the undone state, and WAITs answered from our progress, start over.
        held, self._held = self._held, []
        waits, self._waits = self._waits, set()
        for req_id in [r for _i, r, _res in held] + sorted(waits):
            req = self._requests.get(req_id)
            if req is None:
                continue
            if req.reply_to is not None:
                self._park(req, None)  # the origin asked the primary: let it find the new one
            else:
                self._route(req)

    # -- routing --------------------------------------------------------------------------------

    def _route(self, req: _Request) -> None:
        if req.kind == "read":
            self._route_read(req)
        elif req.kind == "wait":
            self._route_wait(req)
        else:
            self._route_write(req)

    def _route_write(self, req: _Request) -> None:
        if self.raft.is_leader:
            outcome: int | ErrorReply | Status | _NullArray | None
            if req.kind == "admin":
                outcome = self._run_admin(req.argv, ("local", req.req_id))
            else:
                outcome = self._propose_command(req.argv, ("local", req.req_id), req.opts,
                                                req.parsed)
            if isinstance(outcome, ErrorReply | Status | _NullArray):
                self._finish(req.req_id, outcome)
                return
            if outcome is not None:
                req.phase = "proposed"
                return
        elif self.raft.leader_id is not None:
            leader = self.raft.leader_id
            req.phase, req.sent_to = "forwarded", leader
            self.forwarded_total += 1
            self._send(leader, ForwardRequest(self.id, req.req_id, tuple(req.argv), req.opts))
            return
        req.phase = "waiting"
        self._waiting_for_leader.append(req.req_id)

    def _propose_command(self, argv: list[bytes], target: tuple, opts: RequestOptions,
                         parsed: tuple | None = None) -> int | ErrorReply | _NullArray | None:
        """Execute a write ahead of its commit and propose it. Returns its index, an error
        (nothing changed), NullArray for a transaction whose watched keys changed (nothing
        proposed), or None if the leader cannot propose now (a transfer is under way)."""
        invariant(self.applied_index == self.raft.log.last_index,
                  "state at %d behind the log at %d", self.applied_index, self.raft.log.last_index)
        t = self._entry_time()
        session_rec: list[Any] | None = None  # [session, seq, packed reply]
        if opts.session is not None and opts.seq is not None:
            check = self.sessions.lookup(opts.session, opts.seq, t)
            if check.verdict is Verdict.STALE:
                return check.reply
            if check.verdict is Verdict.DUPLICATE:
                # Applied before (perhaps by an earlier leader): answer what it answered, once
                # the entry that applied it has committed.
                self.duplicate_writes += 1
                if check.index <= self.raft.commit_index:
                    self._deliver(target, check.reply, check.index)
                else:
                    self._dup_waiting.append((check.index, target, check.reply))
                return check.index
        name = argv[0].lower()
        # Slots of a pipeline's batch refused (see _admit_refusing), each layer as it applies to
        # the batch the layer before left: its replies are put back newest layer first.
        refusals: list[tuple[list[int], ErrorReply]] = []
        try:
            level, needs = needed_level(argv, self.config.replication == "active")
        except CommandError as e:
            return e.reply()
        if level > self.state.feature_level:
            cluster_level = self.state.feature_level
            active = self.config.replication == "active"
            admitted_argv = self._admit_level(
                argv, level, needs, t, lambda c: command_level(c, active) > cluster_level,
                refusals)
            if admitted_argv is None or isinstance(admitted_argv, ErrorReply):
                return admitted_argv  # refused, or the leader cannot propose now
            if admitted_argv is not argv:
                argv, parsed = admitted_argv, None
        refusal = self._write_refusal()
        if refusal is not None:
            try:
                # A nearly full disk also refuses PUBLISH: it adds no key, but its message to
                # the log.
                admitted = self._admit_refusing(
                    argv, refusal, grows_memory if refusal is ERR_OOM else grows_log)
            except CommandError as e:
                return e.reply()
            if isinstance(admitted, ErrorReply):
                return admitted
            if admitted is not None:
                argv, refused, parsed = admitted
                refusals.append((refused, refusal))
        if name == b"exec":
            try:
                watch, argv = split_watch(argv)  # the log gets the transaction without it
            except CommandError as e:
                return e.reply()
            if watch is not None and self._watched_changed(*watch):
                return NullArray  # EXEC's nil: a watched key changed
        seed = self.rng.getrandbits(31) + 1 if name in RANDOM_WRITES else 0
        try:
            reply, effects, undo = self._execute_write(argv, t, seed, parsed)
            published = self.state.take_published()
            if published and self.state.feature_level < PUBLISH_LEVEL:
                # Messages the check above did not look for (a pipeline batch's PUBLISH, a
                # script's): the level must rise before this entry, or they are refused (a
                # script whole, a batch's PUBLISHes in their slots).
                self.state.undo(undo)
                admitted_argv = self._admit_level(
                    argv, PUBLISH_LEVEL, b"PUBLISH", t,
                    lambda c: command_level(c) >= PUBLISH_LEVEL or c[0].lower() in _SCRIPTS,
                    refusals)
                if admitted_argv is None or isinstance(admitted_argv, ErrorReply):
                    return admitted_argv
                if admitted_argv is not argv:
                    argv, parsed = admitted_argv, None
                reply, effects, undo = self._execute_write(argv, t, seed, parsed)
                published = self.state.take_published()
            wanted, wanted_by = self.state.script_level_wanted
            self.state.script_level_wanted = (0, b"")
            if wanted > self.state.feature_level:
                # A script called a command of a level the cluster is not at (it was answered
                # as unknown, as an older replikv answers it): raise the level before this
                # entry and run the script again, or refuse it whole.
                self.state.undo(undo)
                admitted_argv = self._admit_level(
                    argv, wanted, wanted_by, t, lambda c: c[0].lower() in _SCRIPTS, refusals)
                if admitted_argv is None or isinstance(admitted_argv, ErrorReply):
                    self.state.take_published()
                    return admitted_argv
                if admitted_argv is not argv:
                    argv, parsed = admitted_argv, None
                reply, effects, undo = self._execute_write(argv, t, seed, parsed)
                published = self.state.take_published()
        except ScriptAborted as stopped:
            self.state.take_published()  # what the stopped script published goes with it
            self.scripts_stopped += 1
            return stopped.reply
        self.commands_executed += 1
        for refused, error in reversed(refusals):
            reply = _with_refused(reply, refused, error)
        if opts.session is not None and opts.seq is not None:
            session_rec = [opts.session, opts.seq, self.sessions.pack_reply(reply)]
        if self.config.replication == "passive":
            data = encode_effects_entry(effects, t, session_rec)
        else:
            data = encode_command_entry(argv, t, seed, session_rec)
        if len(data) > self.config.limits.max_entry_bytes:
            self.state.undo(undo)
            return ErrorReply(ERR_EFFECTS_TOO_LARGE.format(
                limit=self.config.limits.max_entry_bytes))
        index = self._propose_applied(data, undo, t, published or None)
        if index is None:
            return None
        if session_rec is not None:
            token = self.sessions.record_packed(session_rec[0], session_rec[1], session_rec[2],
                                                t, index)
            self._ahead[-1] = self._ahead[-1]._replace(session_undo=token)
        wtimeout_ms = opts.wtimeout_ms or self.config.request_timeout_ms
        self._proposals[index] = _Proposal(self.raft.term, target, reply, opts.w, self.now_ms,
                                           wtimeout_ms)
        if opts.w == "1":
            self._w1_pending.append(index)
        return index

    def _execute_write(self, argv: list[bytes], time_ms: int, seed: int, parsed: tuple | None
                       ) -> tuple[object, list[list], Undo]:
        """Run a write as the leader, recorded. A script run here decides what the log gets:
        it runs within the limits, and one they stop (ScriptAborted) leaves nothing (the
        recorded execution undid its writes) and is not logged."""
        self.state.script_context = self._script_write_context
        self.state.script_level_wanted = (0, b"")  # (a replica's applying may have left one)
        try:
            return self.state.execute_recorded(argv, time_ms, seed, parsed)
        finally:
            self.state.script_context = None

    def _admit_refusing(self, argv: list[bytes], error: ErrorReply,
                        refuses: Callable[[list[bytes]], bool]
                        ) -> ErrorReply | tuple[list[bytes], list[int], None] | None:
        """While the keyspace is over maxmemory (`error` ERR_OOM, `refuses` grows_memory), the
        disk nearly full (`error` disk_refusal, the same) or a member cannot apply some
        commands (a level error, `refuses` what needs a higher level): `error` for a write
        `refuses` (a client's transaction holding one is refused whole, as Redis refuses its
        EXEC), or, for a batch of a pipeline's writes, the batch without those (each answers
        `error` in its slot: a pipeline is not a transaction) and their slots; None to run
        `argv` as it is. CommandError for a malformed internal EXEC."""
        if argv[0].lower() != b"exec":
            if refuses(argv):
                self._count_refused(error, 1)
                return error
            return None
        commands = split_exec(argv)
        refused = [i for i, command in enumerate(commands) if refuses(command)]
        if not refused:
            return None
        if not is_pipeline(argv) or len(refused) == len(commands):
            self._count_refused(error, len(refused) if is_pipeline(argv) else 1)
            return error  # a batch's one error is every command's
        self._count_refused(error, len(refused))
        skip = set(refused)
        kept = [command for i, command in enumerate(commands) if i not in skip]
        return encode_exec(kept, pipeline=True), refused, None

    def _count_refused(self, error: ErrorReply, commands: int) -> None:
        if error is ERR_OOM:
            self.oom_rejections += commands
        elif error is self.disk_refusal:
            self.disk_rejections += commands
        else:
            self.feature_rejections += commands

    def _admit_level(self, argv: list[bytes], level: int, name: bytes, time_ms: int,
                     refuses: Callable[[list[bytes]], bool],
                     refusals: list[tuple[list[int], ErrorReply]]
                     ) -> list[bytes] | ErrorReply | None:
        """`argv` needs feature level `level` (for its command `name`), above the cluster's.
        Raises the level first if every member has it (`argv` runs as it is); else refuses
        what `refuses` (the level error: for the whole, or a pipeline batch without those
        commands, their slots added to `refusals`). None if the leader cannot propose now."""
        gate = self._raise_level(level, name, time_ms)
        if not isinstance(gate, ErrorReply):
            return argv if gate else None
        admitted = self._admit_refusing(argv, gate, refuses)
        if admitted is None:  # nothing `refuses` names: refuse the whole rather than guess
            self._count_refused(gate, 1)
            return gate
        if isinstance(admitted, ErrorReply):
            return admitted
        refusals.append((admitted[1], gate))
        return admitted[0]

    def _raise_level(self, level: int, name: bytes, time_ms: int) -> ErrorReply | bool | None:
        """A write needs feature level `level`, above the cluster's: if every other member has
        advertised it, propose the entry that raises the cluster to the highest level all of
        them share (it comes before the write in the log, and is undone with it) and answer
        True; None if the leader cannot propose now; else the error naming a member holding
        the level back."""
        behind = self.members_below(level)
        if behind:
            member, advertised = behind[0]
            return level_error(name, level, member, advertised)
        m = self.raft.membership
        shared = min([FEATURE_LEVEL, *(self.peer_levels[p] for p in {*m.voters, *m.learners}
                                       if p != self.id)])
        undo = self.state.raise_feature_level_recorded(shared)
        if self._propose_applied(encode_features_entry(shared, time_ms), undo, time_ms) is None:
            return None
        return True

    def _run_admin(self, argv: list[bytes], target: tuple) -> int | ErrorReply | Status | None:
        """On the leader: a membership change (proposed; answered when it commits, like a
        write) or a switchover (answered at once). Returns as _propose_command does, or a
        Status to answer at once."""
        sub = argv[1].lower()
        if sub == b"switchover":
            return self._switchover(argv[2].decode("utf-8", "replace") if len(argv) > 2
                                    else None)
        if len(argv) < 4 or argv[2].lower() not in MEMBER_OPS:
            return ErrorReply("ERR usage: REPLIKV MEMBER ADD|PROMOTE|DEMOTE|REMOVE <id> "
                              "[PEER host:port CLIENT host:port ADMIN host:port]")
        op = MEMBER_OPS[argv[2].lower()]
        node_id = argv[3].decode("utf-8", "replace")
        if not valid_member_id(node_id):
            return ErrorReply(f"ERR invalid member id {node_id[:64]!r}")
        current = self.raft.membership
        book = decode_address_book(current.context)
        if op == ADD_LEARNER:
            fields = argv[4:]
            if len(fields) % 2:
                return ErrorReply("ERR member addresses come in pairs: PEER host:port ...")
            addresses = {}
            for name, value in zip(fields[::2], fields[1::2], strict=True):
                key = name.decode("latin-1").lower()
                if key not in ("peer", "client", "admin") or not _is_address(value):
                    return ErrorReply(f"ERR bad member address {key} {value[:64]!r}: "
                                      "expected PEER|CLIENT|ADMIN host:port")
                addresses[key] = value.decode()
            if "peer" not in addresses:
                return ErrorReply("ERR a new member needs its PEER host:port, where the "
                                  "others reach it")
            book[node_id] = addresses
        try:
            new = current.changed(op, node_id)
            if op == REMOVE:
                book.pop(node_id, None)
            new = Membership(new.voters, new.learners, encode_address_book(book))
            index = self.raft.propose_membership(new)
        except MembershipError as e:
            return ErrorReply(f"ERR membership change refused: {e}")
        # The config entry changes no key; it is "applied ahead" like any other entry so the
        # state keeps following the log.
        self._ahead.append(_AppliedAhead(index, self.raft.term, None, self.state_time_ms))
        self.applied_index = index
        verb = {ADD_LEARNER: "added as a standby (learner)", PROMOTE: "promoted to voter",
                DEMOTE: "demoted to standby (learner)", REMOVE: "removed"}[op]
        self._proposals[index] = _Proposal(
            self.raft.term, target, Status(f"OK {node_id} {verb} at index {index}"),
            "majority", self.now_ms, self.config.request_timeout_ms)
        return index

    def _switchover(self, target: str | None) -> ErrorReply | Status:
        raft = self.raft
        candidates = [v for v in raft.voters if v != self.id and v in raft.progress]
        if target is None:
            if not candidates:
                return ErrorReply("ERR switchover: no other voter to hand leadership to")
            target = max(candidates, key=lambda v: (raft.progress[v].match, v))
        elif target == self.id:
            return Status(f"OK {self.id} already leads")
        elif target not in candidates:
            return ErrorReply(f"ERR switchover: {target[:64]} is not a voter of this cluster")
        if not raft.transfer_leadership(target):
            return ErrorReply("ERR switchover: this node cannot transfer leadership now")
        return Status(f"OK transferring leadership from {self.id} to {target}: writes pause "
                      "until it has caught up and taken over")

    # -- snapshots --------------------------------------------------------------------------------

    def start_snapshot(self, *, force: bool = False) -> SnapshotJob | None:
        """A new snapshot job if one is due (the driver writes it, see SnapshotJob). With
        `force` (an online backup) thresholds do not matter: any state past the last snapshot
        gets a job; None then means the last snapshot already holds the applied state. One job
        at a time: the state allows one cursor, so the driver serializes the callers."""
        every, max_bytes = self.config.snapshot_entries, self.config.snapshot_log_bytes
        raft = self.raft
        last = self._last_snapshot_index()
        if self.applied_index <= last:
            return None
        due_by_count = every and self.applied_index - last >= every + self._snapshot_jitter
        due_by_bytes = max_bytes and self._bytes_since_snapshot >= max_bytes
        if not (force or due_by_count or due_by_bytes or self._due_by_growth(last)):
            return None
        index = self.applied_index
        term = raft.log.term_at(index)
        if term is None:  # applied entries are in the log until a snapshot covers them
            raise InvariantViolation(f"no term for applied index {index}")
        self._job_bytes = (index, self._bytes_applied)
        return SnapshotJob(index, term, raft.membership_at(index),
                           self.state_time_ms, self.state.begin_snapshot(),
                           self.sessions.to_bytes(), feature_level=self.state.feature_level)

    @property
    def _bytes_since_snapshot(self) -> int:
        return self._bytes_applied - self._bytes_at_snapshot

    def _last_snapshot_index(self) -> int:
        raft = self.raft
        return raft.snapshot.index if raft.snapshot is not None else raft.log.offset

    def log_cost_since_snapshot(self, last: int | None = None) -> int:
        """What the entries applied since the last snapshot (or since index `last`) cost in
        memory, estimated: their data plus ENTRY_OVERHEAD_BYTES each."""
        if last is None:
            last = self._last_snapshot_index()
        return (self._bytes_since_snapshot
                + max(self.applied_index - last, 0) * ENTRY_OVERHEAD_BYTES)

    def growth_threshold(self) -> int:
        """The log cost at which the growth rule (`snapshot_log_ratio`) makes a snapshot due,
        this node's jitter included; 0 when the rule is off."""
        ratio = self.config.snapshot_log_ratio
        if not ratio:
            return 0
        base = max(self.config.snapshot_log_min_bytes, ratio * self.state.used_bytes())
        return int(base * (1 + self._growth_jitter))

    def _due_by_growth(self, last: int) -> bool:
        threshold = self.growth_threshold()
        return bool(threshold) and self.log_cost_since_snapshot(last) >= threshold

    def _new_snapshot_jitter(self) -> None:
        every = self.config.snapshot_entries
        self._snapshot_jitter = self.rng.randrange(every // 4) if every >= 4 else 0
        if self.config.snapshot_log_ratio:
            self._growth_jitter = self.rng.random() / 4

    def snapshot_verdict(self, job: SnapshotJob) -> str:
        """"commit" once the job's index is committed (keep the snapshot), "abort" if it never
        will be (its entry was replaced, or the log moved past it), else "wait"."""
        raft = self.raft
        if job.index <= raft.log.offset or raft.log.term_at(job.index) != job.term:
            return "abort"
        if min(raft.commit_index, raft.applied_index) >= job.index:
            return "commit"
        return "wait"

    def snapshot_saved(self, job: SnapshotJob, size: int) -> int:
        """The job's snapshot is durable. Compacts the log; returns the new log offset (the
        driver may delete log segments holding only entries up to it)."""
        raft = self.raft
        raft.set_snapshot(SnapshotMeta(job.index, job.term, job.membership), size)
        index, at_job = self._job_bytes
        self._bytes_at_snapshot = at_job if index == job.index else self._bytes_applied
        self._new_snapshot_jitter()
        upto = self._compact_through(min(job.index, raft.applied_index))
        if upto > raft.log.offset:
            raft.compact(upto)
        return raft.log.offset

    def _compact_through(self, index: int) -> int:
        """Where to compact after a snapshot at `index`: keep the last `snapshot_keep_entries`
        entries before it, fewer if they hold more than `snapshot_keep_bytes` of data."""
        log = self.raft.log
        upto = max(index - self.config.snapshot_keep_entries, log.offset)
        keep_bytes = self.config.snapshot_keep_bytes
        if keep_bytes:
            kept = 0
            for i in range(index, upto, -1):
                kept += log.data_size(i)
                if kept > keep_bytes:
                    return i
        return upto

    def install_snapshot(self, meta: SnapshotMeta, state: KVState, time_ms: int,
                         sessions: SessionTable | None = None, size: int = 0) -> bool:
        """A snapshot received from the leader is durable and loaded into `state`: it replaces
        this node's state. False if it is no longer wanted (this node has moved past it, or
        now leads); then nothing changed."""
        if self.raft.is_leader or meta.index <= self.raft.commit_index:
            return False
        invariant(not self._ahead, "a follower with entries applied ahead")
        self.state = state
        self._attach_pubsub(state)
        self.sessions = sessions if sessions is not None else SessionTable()
        self.applied_index = meta.index
        self._bytes_at_snapshot = self._bytes_applied
        self._job_bytes = (-1, 0)
        self.state_time_ms = max(self.state_time_ms, time_ms)
        self._commit_marks.clear()
        restored = self.raft.restore(meta, size)
        invariant(restored, "raft refused a snapshot the node accepted")
        self._after_event()
        return True

    def _propose_applied(self, data: bytes, undo: Undo, time_ms: int,
                         published: list[tuple[bool, bytes, bytes]] | None = None
                         ) -> int | None:
        """Propose an entry whose change is already applied; undo it if the proposal fails.
        `published`: its messages, delivered once it commits."""
        at = self.raft.propose([data])
        if at is None:
            self.state.undo(undo)
            return None
        index, term = at
        self.proposals_total += 1
        self._ahead.append(_AppliedAhead(index, term, undo, self.state_time_ms,
                                         published=published))
        self.state_time_ms = max(self.state_time_ms, time_ms)
        self.applied_index = index
        times = self._propose_times
        times.append((index, self.now_ms))
        if len(times) > PROPOSE_TIMES_MAX:
            del times[: len(times) // 2]
        return index

    def watch_index(self) -> int:
        """Where a WATCH sent to this node starts: the last index it has applied that is
        certainly committed. (A leader's applied-ahead entries may yet be replaced by another
        leader's at the same indexes, which a scan from beyond them would never see.)"""
        return min(self.applied_index, self.raft.commit_index)

    def _watched_changed(self, index: int, keys: list[bytes]) -> bool:
        """WATCH: whether an entry of this leader's log after `index` changes one of `keys`;
        True also when the log cannot tell (see replikv.commands.transactions)."""
        log = self.raft.log
        last = log.last_index
        if index < log.offset or index > last or last - index > WATCH_SCAN_MAX:
            return True
        return changes_any([e.data for e in log.slice(index + 1, last + 1)], keys)

    def _entry_time(self) -> int:
        return max(self.now_ms, self.state_time_ms)

    def _on_forward_request(self, m: ForwardRequest) -> None:
        if m.is_read:
            self._on_forwarded_read(m)
            return
        key = (m.src, m.req_id)
        if key in self._recent_forwards:
            return  # a duplicate delivery: the first copy is already proposed (or answered)
        outcome: int | ErrorReply | Status | _NullArray | None
        if is_admin_command(m.argv):
            if not self.raft.is_leader:
                self._send(m.src, ForwardReply(self.id, m.req_id, None, not_leader=True))
                return
            outcome = self._run_admin(list(m.argv), ("remote", m.src, m.req_id))
        else:
            argv = self._accept_forwarded(m, "write")
            if argv is None:
                return
            outcome = self._propose_command(argv, ("remote", m.src, m.req_id), m.options)
        if outcome is None:  # leadership transfer in progress
            self._send(m.src, ForwardReply(self.id, m.req_id, None, not_leader=True))
            return
        if isinstance(outcome, ErrorReply | Status | _NullArray):
            self._send(m.src, ForwardReply(self.id, m.req_id, outcome))
            return
        self._recent_forwards[key] = None
        if len(self._recent_forwards) > RECENT_FORWARDS_MAX:
            self._recent_forwards.popitem(last=False)

    def _accept_forwarded(self, m: ForwardRequest, kind: str) -> list[bytes] | None:
        """The argv of a forwarded command this leader will run; None once it has answered
        the origin instead (not the leader, or a command that is not a valid `kind`)."""
        if not self.raft.is_leader:
            self._send(m.src, ForwardReply(self.id, m.req_id, None, not_leader=True))
            return None
        argv = list(m.argv)
        try:
            spec, _ = parse_command(argv)
            if spec.kind != kind:
                raise CommandError(f"ERR only {kind}s are forwarded as {kind}s")
        except CommandError as e:
            self._send(m.src, ForwardReply(self.id, m.req_id, e.reply()))
            return None
        return argv

    def _on_forwarded_read(self, m: ForwardRequest) -> None:
        argv = self._accept_forwarded(m, "read")
        if argv is None:
            return
        req = _Request(self._new_internal_id(), argv, "read", m.options, None,
                       self.now_ms + self.config.request_timeout_ms, reply_to=(m.src, m.req_id))
        self._add_request(req)
        self._route_read(req)

    def _on_forward_reply(self, m: ForwardReply) -> None:
        req = self._requests.get(m.req_id)
        if req is None or req.phase != "forwarded" or req.sent_to != m.src:
            return  # already answered (timed out, or a duplicate)
        if m.not_leader:
            # Definitely not proposed there: safe to route again, but not back to the same node
            # until we learn of another leader.
            req.sent_to = None
            self._park(req, m.src)
            return
        self._finish(req.req_id, m.result, m.index)

    # -- reads ------------------------------------------------------------------------------------

    def _route_read(self, req: _Request) -> None:
        opts = req.opts
        raft = self.raft
        pref = opts.read_preference
        if raft.is_leader:
            if pref == "secondary":
                self._finish(req.req_id, ERR_NOT_SECONDARY)
                return
            here = True
        else:
            here = (pref in FOLLOWER_MAY_SERVE
                    or (pref == "primaryPreferred" and raft.leader_id is None)
                    # Active replication: a follower's linearizable read is the same as the
                    # primary's, so it serves the read itself.
                    or (pref == "primary" and self.config.replication == "active"
                        and opts.read_consistency != "local"))
        if not here:
            if raft.leader_id is None:
                req.phase = "waiting"
                self._waiting_for_leader.append(req.req_id)
                return
            req.phase, req.sent_to = "forwarded", raft.leader_id
            self._send(raft.leader_id, ForwardRequest(self.id, req.req_id, tuple(req.argv),
                                                      opts, is_read=True))
            return
        if opts.read_consistency == "local":
            bound = opts.max_staleness_ms
            if bound is not None:
                staleness = self.staleness_ms()
                if staleness is None or staleness > bound:
                    self._finish(req.req_id, stale_error(staleness, bound))
                    return
            self._read_at(req, req.min_index)
            return
        req.phase = "reading"
        self._read_batch.append(req.req_id)

    def _flush_read_batch(self) -> None:
        reqs, self._read_batch = self._read_batch, []
        by_lease: dict[bool, list[int]] = {}
        for r in reqs:
            req = self._requests.get(r)
            if req is not None and req.phase == "reading":
                by_lease.setdefault(req.opts.read_consistency == "lease", []).append(r)
        for lease, group in by_lease.items():
            if self.raft.is_leader:
                batch = self._new_batch(group, self.id)
                self.raft.request_read(("local", batch), lease=lease)
            elif self.raft.leader_id is not None:
                batch = self._new_batch(group, self.raft.leader_id)
                self._send(self.raft.leader_id, ReadIndexRequest(self.id, batch, lease))
            else:
                for r in group:
                    self._requests[r].phase = "waiting"
                self._waiting_for_leader.extend(group)

    def _new_batch(self, reqs: list[int], asked: str) -> int:
        batch = self._next_batch_id
        self._next_batch_id += 1
        self._read_batches[batch] = (reqs, asked)
        return batch

    def _on_read_index(self, batch: int, index: int | None) -> None:
        entry = self._read_batches.pop(batch, None)
        if entry is None:
            return
        reqs = [self._requests[r] for r in entry[0] if r in self._requests]
        if index is None:
            # The node asked could not confirm leadership; reads are safe to ask again.
            for req in reqs:
                self._park(req, entry[1])
            return
        for req in reqs:
            self._read_at(req, max(index, req.min_index))

    def _read_at(self, req: _Request, index: int) -> None:
        """Run the read once this node has applied `index`."""
        if index <= self.applied_index:
            self._execute_read(req)
        else:
            req.phase = "reading"
            heapq.heappush(self._reads_waiting_apply, (index, req.req_id))

    def _serve_reads(self) -> None:
        waiting = self._reads_waiting_apply
        while waiting and waiting[0][0] <= self.applied_index:
            _index, r = heapq.heappop(waiting)
            req = self._requests.get(r)
            if req is not None:
                self._execute_read(req)

    def _execute_read(self, req: _Request) -> None:
        result: object
        argv = req.argv
        if len(argv) == 1 and argv[0].lower() == WATCH_POINT_NAME_LOWER:  # no read has one arg
            result = self.watch_index()  # the state this read would see (see WATCH-POINT)
        else:
            self.state.script_context = self._script_read_context  # for EVAL_RO
            try:
                result = self.state.execute_read(argv, self.now_ms, self.rng.getrandbits(31))
            finally:
                self.state.script_context = None
        if self.applied_index > self.raft.commit_index:
            # The state holds writes applied ahead of their commit: answer once they commit.
            req.phase = "held"
            heapq.heappush(self._held, (self.applied_index, req.req_id, result))
        else:
            self._finish(req.req_id, result)

    def _release_held(self) -> None:
        held, commit = self._held, self.raft.commit_index
        while held and held[0][0] <= commit:
            _index, req_id, result = heapq.heappop(held)
            req = self._requests.get(req_id)
            if req is not None and req.phase == "held":
                self._finish(req_id, result)

    # -- WAIT -------------------------------------------------------------------------------------

    def _submit_wait(self, req_id: int, argv: list[bytes], options: RequestOptions,
                     session: int | None) -> None:
        try:
            if len(argv) != 3:
                raise CommandError(wrong_arity("wait"))
            replicas, timeout_ms = _int_arg(argv[1]), _int_arg(argv[2])
            if timeout_ms < 0:
                raise CommandError("ERR timeout is negative")
            if timeout_ms > TIMEOUT_MS_MAX:  # the documented limit (0 waits up to it)
                raise CommandError(f"ERR timeout must be a number of milliseconds in "
                                   f"0..{TIMEOUT_MS_MAX}")
        except CommandError as e:
            self._replies.append((req_id, e.reply()))
            return
        limit_ms = timeout_ms if timeout_ms else TIMEOUT_MS_MAX
        # The origin waits a little longer than the leader, so the leader's count arrives.
        req = _Request(req_id, argv, "wait", options, session,
                       self.now_ms + limit_ms + self.config.request_timeout_ms)
        req.wait_replicas = max(replicas, 0)
        req.wait_index = self._sessions.get(session, 0) if session is not None else 0
        req.wait_until_ms = self.now_ms + limit_ms
        self._add_request(req)
        self._route_wait(req)

    def _route_wait(self, req: _Request) -> None:
        raft = self.raft
        if raft.is_leader:
            req.phase = "proposed"
            self._waits.add(req.req_id)
            # Answered here: at the client's own timeout, not the forwarding margin.
            self._add_deadline(req.wait_until_ms, req.req_id)
            self._check_waits()
        elif raft.leader_id is not None:
            req.phase, req.sent_to = "forwarded", raft.leader_id
            timeout_ms = int(req.argv[2]) if req.reply_to is None else 0
            self._send(raft.leader_id, WaitRequest(self.id, req.req_id, req.wait_index,
                                                   req.wait_replicas, max(timeout_ms, 0)))
        else:
            req.phase = "waiting"
            self._waiting_for_leader.append(req.req_id)

    def _on_wait_request(self, m: WaitRequest) -> None:
        if not self.raft.is_leader:
            self._send(m.src, WaitReply(self.id, m.req_id, None))
            return
        limit_ms = m.timeout_ms if m.timeout_ms else TIMEOUT_MS_MAX
        req = _Request(self._new_internal_id(), [b"WAIT"], "wait", DEFAULT_OPTIONS, None,
                       self.now_ms + limit_ms, reply_to=(m.src, m.req_id))
        req.wait_replicas, req.wait_index = m.replicas, m.index
        req.wait_until_ms = req.deadline_ms
        self._add_request(req)
        self._route_wait(req)

    def _on_wait_reply(self, m: WaitReply) -> None:
        req = self._requests.get(m.req_id)
        if req is None or req.phase != "forwarded" or req.sent_to != m.src:
            return
        if m.count is None:
            req.sent_to = None
            self._park(req, m.src)
            return
        self._finish(req.req_id, m.count)

    def replicas_holding(self, index: int) -> int:
        """On the leader: how many other voters hold the log durably through `index`."""
        return sum(1 for pr in self.raft.progress.values() if pr.match >= index)

    def _check_waits(self) -> None:
        for req_id in list(self._waits):
            req = self._requests.get(req_id)
            if req is None:
                self._waits.discard(req_id)
                continue
            count = self.replicas_holding(req.wait_index)
            if count >= req.wait_replicas:
                self._waits.discard(req_id)
                self._finish(req_id, count)

    # -- write concern ----------------------------------------------------------------------------

    def _ack_durable_w1(self) -> None:
        """w=1: answer once the leader's own log holds the entry durably."""
        raft = self.raft
        persisted = raft.log.persisted_index
        while self._w1_pending and self._w1_pending[0] <= persisted:
            index = self._w1_pending.popleft()
            prop = self._proposals.get(index)
            if (prop is not None and not prop.acked and raft.is_leader
                    and prop.term == raft.term and raft.log.term_at(index) == prop.term):
                prop.acked = True
                self._deliver(prop.target, prop.reply, index)

    def _all_hold(self, index: int) -> int:
        """How many voters (this leader included) hold the log durably through `index`."""
        mine = 1 if self.raft.log.persisted_index >= index else 0
        return mine + self.replicas_holding(index)

    def _on_committed(self, index: int, term: int, prop: _Proposal) -> None:
        if prop.term != term:
            if not prop.acked:
                self._deliver(prop.target, ERR_NOT_APPLIED)
            return
        if len(self.commit_latencies_ms) < COMMIT_LATENCIES_MAX:
            self.commit_latencies_ms.append(self.now_ms - prop.proposed_ms)
        if prop.acked:
            return
        if prop.w == "all" and self._all_hold(index) < len(self.raft.voters):
            if not self.raft.is_leader:
                self.wtimeouts += 1
                self._deliver(prop.target, wtimeout_error(
                    1, len(self.raft.voters), self.now_ms - prop.proposed_ms))
                return
            self._all_waiting[index] = prop
            if prop.target[0] == "local":
                req = self._requests.get(prop.target[1])
                if req is not None:
                    req.phase = "replicating"
            return
        self._deliver(prop.target, prop.reply, index)

    def _check_all_waiting(self) -> None:
        voters = len(self.raft.voters)
        for index in [i for i in self._all_waiting if self._all_hold(i) >= voters]:
            prop = self._all_waiting.pop(index)
            self._deliver(prop.target, prop.reply, index)

    def _expire_all_waiting(self) -> None:
        for index, prop in list(self._all_waiting.items()):
            if self.now_ms - prop.proposed_ms >= prop.wtimeout_ms:
                del self._all_waiting[index]
                self.wtimeouts += 1
                self._deliver(prop.target, wtimeout_error(
                    self._all_hold(index), len(self.raft.voters),
                    self.now_ms - prop.proposed_ms))

    # -- applying -------------------------------------------------------------------------------

    def _apply(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.index <= self.applied_index:
                # Applied ahead while this node led; now it is committed.
                a = self._ahead.popleft()
                invariant(a.index == e.index and a.term == e.term,
                          "committed entry %d/%d is not the one applied ahead (%d/%d)",
                          e.index, e.term, a.index, a.term)
                if a.published:
                    self._deliver_published(e.index, a.published)
            else:
                invariant(e.index == self.applied_index + 1,
                          "applying %d after %d", e.index, self.applied_index)
                self._apply_entry(e, recorded=False)
                self.applied_index = e.index
                if self.state.published:
                    self._deliver_published(e.index, self.state.take_published())
            if e.data:
                self.entries_applied += 1
                self._bytes_applied += len(e.data)
            marks = self._commit_marks
            while marks and marks[0][1] <= e.index:
                self._caught_up_ms = marks.popleft()[0]
            prop = self._proposals.pop(e.index, None)
            if prop is not None:
                self._on_committed(e.index, e.term, prop)

    def _deliver_published(self, index: int, published: list[tuple[bool, bytes, bytes]]) -> None:
        """The messages of the entry at `index`, which has committed, go to the driver."""
        self._published.extend(Published(index, channel, message, sharded)
                               for sharded, channel, message in published)
        self.published_total += len(published)

    def _attach_pubsub(self, state: KVState) -> None:
        """Have `state` collect what PUBLISH entries publish, and count this node's
        subscribers for PUBLISH's reply."""
        state.published = []
        state.pubsub = self.subscriptions

    def _apply_entry(self, e: Entry, *, recorded: bool) -> tuple[object | None, object | None]:
        """Apply one log entry to the state (and its session record to the session table);
        with `recorded`, return their undo records. The rules are `replikv.entries`', shared
        with point-in-time recovery."""
        applied = apply_entry(self.state, self.sessions, e.data, e.index, self.state_time_ms,
                              recorded=recorded)
        self.state_time_ms = applied.time_ms
        if applied.kind == ENTRY_COMMAND:
            self.commands_executed += 1
        elif applied.kind == ENTRY_EFFECTS:
            self.effects_applied += 1
        return applied.undo, applied.session_undo

    def _propose_expiry(self) -> None:
        invariant(self.applied_index == self.raft.log.last_index, "expiry before catching up")
        keys = self.state.expired_keys(self.now_ms, self.config.expire_batch_keys)
        if not keys:
            return
        t = self._entry_time()
        _count, effects, undo = self.state.expire_recorded(keys, t)
        if self.config.replication == "passive":
            data = encode_effects_entry(effects, t)
        else:
            data = encode_expire_entry(keys, t)
        index = self._propose_applied(data, undo, t)
        if index is not None:
            self._expire_inflight_index = index

    def _rolled_back(self, e: Entry, *, maybe_committed: bool = False) -> RolledBack:
        # The proposal stays pending: another replica may still hold this entry and a later
        # leader commit it (Raft's Figure 8), so only the entry committed at this index tells
        # whether it took effect (see _on_committed).
        prop = self._proposals.get(e.index)
        if prop is not None and prop.term == e.term:
            acknowledged: bool | None = prop.acked
        elif e.term in self._terms_led:
            acknowledged = False  # ours, but not a client write (a no-op or an expiry)
        else:
            acknowledged = None
        if maybe_committed:
            self.maybe_committed_entries += 1
        else:
            self.rolled_back_entries += 1
            self.rolled_back_acknowledged += acknowledged is True
        return RolledBack(e, acknowledged, maybe_committed)

    def _deliver(self, target: tuple, value: object, index: int = 0) -> None:
        if target[0] == "local":
            self._finish(target[1], value, index)
        else:
            self._send(target[1], ForwardReply(self.id, target[2], value, index=index))

    # -- staleness and lag ------------------------------------------------------------------------

    def _note_leader_commit(self, commit: int) -> None:
        if commit <= self.applied_index:
            self._caught_up_ms = self.now_ms
            self._commit_marks.clear()
            return
        marks = self._commit_marks
        if marks and (marks[-1][1] == commit or len(marks) >= COMMIT_MARKS_MAX):
            # Same commit index, later time (or no room): the later mark is the useful one.
            marks[-1] = (self.now_ms, max(commit, marks[-1][1]))
        else:
            marks.append((self.now_ms, commit))

    def staleness_ms(self) -> int | None:
        """How far behind the primary this node's state may be, None if unknown. On the leader,
        0 while it holds a lease (a quorum answered it lately, so no other leader can exist),
        else unknown: a leader cut off from the others does not know it has been replaced. On
        a follower, the time since it last had everything the leader had committed, as of a
        message from the leader it processed then (a follower that was paused may
        underestimate this until fresh news arrives: see the README)."""
        if self.raft.is_leader:
            return 0 if self.raft.lease_remaining_ticks() > 0 else None
        if self._caught_up_ms is None:
            return None
        return max(0, self.now_ms - self._caught_up_ms)

    def replica_lag(self) -> dict[str, tuple[int, int]]:
        """On the leader: peer -> (entries behind, milliseconds since the oldest entry it lacks
        was proposed)."""
        raft = self.raft
        if not raft.is_leader:
            return {}
        last = raft.log.last_index
        times = self._propose_times
        out = {}
        for peer, pr in raft.progress.items():
            if pr.match >= last:
                out[peer] = (0, 0)
                continue
            pos = bisect_right(times, (pr.match, float("inf")))
            lag_ms = self.now_ms - times[pos][1] if pos < len(times) else 0
            out[peer] = (last - pr.match, max(0, lag_ms))
        if times and raft.progress:
            low = min(pr.match for pr in raft.progress.values())
            cut = bisect_right(times, (low, float("inf")))
            if cut > 1024:
                del times[:cut]
        return out

    # -- bookkeeping ----------------------------------------------------------------------------

    def _add_request(self, req: _Request) -> None:
        self._requests[req.req_id] = req
        self._add_deadline(req.deadline_ms, req.req_id)

    def _add_deadline(self, deadline_ms: int, req_id: int) -> None:
        key = deadline_ms // DEADLINE_BUCKET_MS
        bucket = self._deadline_buckets.get(key)
        if bucket is None:
            bucket = self._deadline_buckets[key] = []
            heapq.heappush(self._bucket_heap, key)
        bucket.append((deadline_ms, req_id))

    def _new_internal_id(self) -> int:
        self._next_internal_id -= 1
        return self._next_internal_id

    def _send(self, to: str, message: object) -> None:
        self._msgs.append(Envelope(to, message))

    def _finish(self, req_id: int, value: Any, index: int = 0) -> None:
        req = self._requests.pop(req_id, None)
        if req is None:
            return
        if req.reply_to is not None:
            origin, origin_id = req.reply_to
            if req.kind == "wait":
                self._send(origin, WaitReply(self.id, origin_id, value))
            else:
                self._send(origin, ForwardReply(self.id, origin_id, value, index=index))
            return
        session = req.session
        if index and session is not None:
            # Only for a connection still open: one that ended meanwhile (end_session) is not
            # noted again, so the table holds open connections only.
            sessions = self._sessions
            for one in _connections(session):
                if one in sessions:
                    sessions[one] = max(sessions[one], index)
        self._replies.append((req_id, value))

    def _park(self, req: _Request, refused_by: str | None) -> None:
        """Requeue a request that `refused_by` would not take (it is not the leader)."""
        if req.reply_to is not None:
            # Someone forwarded it to us as the leader, and we are not: let the origin route it.
            self._requests.pop(req.req_id, None)
            origin, origin_id = req.reply_to
            if req.kind == "wait":
                self._send(origin, WaitReply(self.id, origin_id, None))
            else:
                self._send(origin, ForwardReply(self.id, origin_id, None, not_leader=True))
            return
        req.phase = "waiting"
        if refused_by is not None and refused_by == self.raft.leader_id:
            self._parked.append(req.req_id)  # wait until we hear of another leader
        else:
            self._waiting_for_leader.append(req.req_id)

    def _after_event(self) -> None:
        self._check_role()
        leader = self.raft.leader_id
        if leader != self._known_leader:
            self._known_leader = leader
            self._on_leader_change()
        if leader is not None and self._waiting_for_leader:
            waiting, self._waiting_for_leader = self._waiting_for_leader, deque()
            for r in waiting:
                req = self._requests.get(r)
                if req is not None and req.phase == "waiting":
                    self._route(req)
        if self._dup_waiting:
            self._answer_duplicates()
        if self.raft.is_leader:
            if self._all_waiting:
                self._check_all_waiting()
            if self._waits:
                self._check_waits()
        if self._held:
            self._release_held()

    def _answer_duplicates(self) -> None:
        commit = self.raft.commit_index
        ready = [d for d in self._dup_waiting if d[0] <= commit]
        if ready:
            self._dup_waiting = [d for d in self._dup_waiting if d[0] > commit]
            for index, target, reply in ready:
                self._deliver(target, reply, index)

    def _on_leader_change(self) -> None:
        if self._parked:
            self._waiting_for_leader.extend(self._parked)
            self._parked = []
        # Read batches asked of a node that is no longer the leader are asked again (reads are
        # idempotent), and so are forwarded reads and WAITs. Writes forwarded to it stay
        # pending: a new leader may still commit them, and the old one, if it runs and hears
        # from the new one, answers when it learns their fate (the result, or TRYAGAIN for an
        # entry replaced). It hears within a heartbeat; if it has not answered an election
        # timeout after a new leader is known, it is most likely dead or cut off, and would
        # never answer: UNKNOWN then, not at the request's own deadline (seconds later).
        leader = self.raft.leader_id
        grace_ms = self.raft.config.election_ticks * self.config.tick_ms
        for batch, (reqs, asked) in list(self._read_batches.items()):
            if asked != self.raft.leader_id:
                del self._read_batches[batch]
                for r in reqs:
                    req = self._requests.get(r)
                    if req is not None:
                        self._park(req, None)
        for req in list(self._requests.values()):
            if req.phase != "forwarded" or req.sent_to == leader:
                continue
            if req.kind not in ("write", "admin"):
                req.sent_to = None
                self._park(req, None)
            elif leader is not None and self.now_ms + grace_ms < req.deadline_ms:
                self._add_deadline(self.now_ms + grace_ms, req.req_id)

    def _expire_deadlines(self) -> None:
        now = self.now_ms
        # Every bucket that may hold a deadline <= now: what is still pending moves to the exact
        # heap, what has finished is dropped. Then the exact heap is served in (deadline_ms,
        # req_id) order, as if every deadline had been in it from the start.
        due, bucket_heap = now // DEADLINE_BUCKET_MS, self._bucket_heap
        if bucket_heap and bucket_heap[0] <= due:
            requests, exact = self._requests, self._deadlines
            while bucket_heap and bucket_heap[0] <= due:
                for entry in self._deadline_buckets.pop(heapq.heappop(bucket_heap)):
                    if entry[1] in requests:
                        heapq.heappush(exact, entry)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, req_id = heapq.heappop(self._deadlines)
            req = self._requests.get(req_id)
            if req is None:
                continue
            if req.kind == "read":
                self._finish(req_id, ERR_READ_TIMEOUT)
            elif req.kind == "wait":
                answered_here = req_id in self._waits
                if now < req.deadline_ms and not (answered_here and now >= req.wait_until_ms):
                    continue  # an earlier deadline entry for a WAIT since routed elsewhere
                self._waits.discard(req_id)
                count = self.replicas_holding(req.wait_index) if self.raft.is_leader else 0
                self._finish(req_id, count)
            elif req.phase == "waiting":
                self._finish(req_id, ERR_NO_LEADER)
            else:
                self.unknown_outcomes += 1
                self._finish(req_id, ERR_UNKNOWN)

    # -- introspection --------------------------------------------------------------------------

    @property
    def terms_led(self) -> int:
        """Terms in which this node became leader (elections won, transfers received)."""
        return len(self._terms_led)

    @property
    def pending_requests(self) -> int:
        return len(self._requests)

    @property
    def applied_ahead(self) -> int:
        """Entries applied on this leader ahead of the commit index."""
        return len(self._ahead)

    def digest(self) -> str:
        """The replicated state's checksum: the keys and the session table."""
        return f"{self.state.digest()}/{self.sessions.digest()}"

    @property
    def committed_applied_index(self) -> int:
        """The last committed entry the state reflects (the state may hold more, ahead)."""
        return self.applied_index - len(self._ahead)


def _connections(session: int | tuple[int, ...]) -> tuple[int, ...]:
    """A request's connection, or the connections of a batch of several (replikv.server.runtime),
    as a tuple."""
    return (session,) if isinstance(session, int) else session


def _with_refused(replies: object, refused: list[int], error: ErrorReply) -> object:
    """A pipeline batch's replies, run without the commands at the slots `refused` (sorted),
    with `error` put back in those slots."""
    invariant(type(replies) is list, "a pipeline batch answered %r", replies)
    out = list(replies)  # type: ignore[call-overload]
    for slot in refused:
        out.insert(slot, error)
    return out


def _is_address(value: bytes) -> bool:
    host, sep, port = value.rpartition(b":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536 and len(value) < 300)


def _int_arg(raw: bytes) -> int:
    try:
        if len(raw) > 20:
            raise ValueError
        return int(raw)
    except ValueError:
        raise CommandError(NOT_INTEGER) from None
