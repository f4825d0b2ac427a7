"""The node core: client requests in, consensus and replies out. Sans-I/O, like the raft core.

It sits between the connection handlers (which parse RESP) and the consensus core:
- writes are proposed to the log on the leader, forwarded to the leader from a follower, or
  held briefly while no leader is known (an election takes well under a second);
- reads are batched: every read that arrives before the next Ready shares one ReadIndex
  confirmation (on the leader a heartbeat round, on a follower one request to the leader) and
  is served from local state once this node has applied up to that index;
- committed entries are applied to the key-value state machine in log order on every node, and
  the result of each applied entry answers the request that proposed it, wherever it came from;
- every request has a deadline; its error says whether the command certainly did not take
  effect (TRYAGAIN) or might have (UNKNOWN).

Log entries carry commands with the leader's clock fixed inside them (state-machine
replication): `[kind, time_ms, payload]` in msgpack, or b"" for the leader's no-op. The time
applied is max(entry time, previous applied time), so expiry stays monotonic and identical on
every replica even if a new leader's clock is behind the old one's.

The driver loop (asyncio server or simulator) is the raft one with node-level extras:

    while node.has_ready():
        rd = node.ready()
        deliver(rd.replies); send(rd.early_messages)
        persist(rd.raft.hard_state, rd.raft.entries)
        send(rd.raft.messages); node.advance(rd)
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import msgpack

from replikv.commands import parse_command
from replikv.invariants import invariant
from replikv.limits import DEFAULT_LIMITS, Limits
from replikv.node_messages import ForwardReply, ForwardRequest, ReadIndexReply, ReadIndexRequest
from replikv.raft.core import RaftCore, Ready
from replikv.raft.messages import Entry, Envelope
from replikv.replies import CommandError, ErrorReply
from replikv.state import KVState

ENTRY_COMMAND = 1
ENTRY_EXPIRE = 2
RECENT_FORWARDS_MAX = 100_000

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


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    tick_ms: int = 50
    request_timeout_ms: int = 5000
    expire_every_ticks: int = 2
    expire_batch_keys: int = 1000
    limits: Limits = DEFAULT_LIMITS


@dataclass(slots=True)
class NodeReady:
    raft: Ready
    # Node messages (forwarding, read indexes) depend on nothing local being durable.
    early_messages: list[Envelope] = field(default_factory=list)
    replies: list[tuple[int, object]] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    req_id: int
    argv: list[bytes]
    is_write: bool
    deadline_ms: int
    # "waiting" (no leader yet), "proposed" (in our log), "forwarded", "reading"
    phase: str = "waiting"
    sent_to: str | None = None


def encode_command_entry(argv: list[bytes], time_ms: int) -> bytes:
    return msgpack.packb([ENTRY_COMMAND, time_ms, argv], use_bin_type=True)


def encode_expire_entry(keys: list[bytes], time_ms: int) -> bytes:
    return msgpack.packb([ENTRY_EXPIRE, time_ms, keys], use_bin_type=True)


class NodeCore:
    def __init__(self, config: NodeConfig, raft: RaftCore, state: KVState) -> None:
        invariant(config.node_id == raft.id, "node and raft ids differ")
        self.config = config
        self.id = config.node_id
        self.raft = raft
        self.state = state
        self.now_ms = 0
        self.applied_index = raft.applied_index
        self.state_time_ms = 0  # the time of the last applied entry, never decreasing

        self._requests: dict[int, _Request] = {}
        self._deadlines: list[tuple[int, int]] = []  # heap of (deadline_ms, req_id)
        self._waiting_for_leader: deque[int] = deque()
        self._parked: list[int] = []  # refused by the node we believe leads; wait for news
        # (origin, req_id) of forwarded writes proposed lately, so that a duplicated
        # ForwardRequest is not proposed twice. Origins number requests uniquely across their
        # restarts (see NodeServer), so a key is never reused for a different command.
        self._recent_forwards: OrderedDict[tuple[str, int], None] = OrderedDict()
        # index -> (term, target); target is ("local", req_id) or ("remote", node, req_id)
        self._proposed: dict[int, tuple[int, tuple]] = {}
        self._read_batch: list[int] = []
        self._next_batch_id = 1
        self._read_batches: dict[int, tuple[list[int], str | None]] = {}  # batch -> (reqs, asked)
        self._reads_waiting_apply: list[tuple[int, int, list[int]]] = []  # heap (index, batch, reqs)
        self._replies: list[tuple[int, object]] = []
        self._msgs: list[Envelope] = []
        self._known_leader: str | None = raft.leader_id
        self._expire_inflight_index = 0
        # Counters for INFO and metrics.
        self.commands_applied = 0
        self.forwarded_total = 0
        self.unknown_outcomes = 0

    # -- events -------------------------------------------------------------------------------

    def submit(self, req_id: int, argv: list[bytes], now_ms: int) -> None:
        """A client command. Its reply appears in a later NodeReady.replies as (req_id, value)."""
        self.now_ms = now_ms
        try:
            spec, _parsed = parse_command(argv)
        except CommandError as e:
            self._replies.append((req_id, e.reply()))
            return
        if len(self._requests) >= self.config.limits.max_pending_requests:
            self._replies.append((req_id, ERR_BUSY))
            return
        if spec.kind == "write" and sum(map(len, argv)) > self.config.limits.max_entry_bytes:
            self._replies.append((req_id, ErrorReply(
                f"ERR command too large for one log entry (limit "
                f"{self.config.limits.max_entry_bytes} bytes)")))
            return
        req = _Request(req_id, argv, spec.kind == "write",
                       now_ms + self.config.request_timeout_ms)
        self._requests[req_id] = req
        heapq.heappush(self._deadlines, (req.deadline_ms, req_id))
        self._route(req)

    def step(self, env_src: str, message: object, now_ms: int) -> None:
        """A message from peer `env_src` (already validated by the wire decoder)."""
        self.now_ms = now_ms
        if isinstance(message, ForwardRequest):
            self._on_forward_request(message)
        elif isinstance(message, ForwardReply):
            self._on_forward_reply(message)
        elif isinstance(message, ReadIndexRequest):
            if self.raft.is_leader:
                self.raft.request_read(("remote", message.src, message.req_id))
            else:
                self._send(message.src, ReadIndexReply(self.id, message.req_id, None))
        elif isinstance(message, ReadIndexReply):
            self._on_read_index(message.req_id, message.index)
        else:
            self.raft.step(message)
        self._after_event()

    def undeliverable(self, to: str, message: object) -> None:
        """The driver could not send `message` (no link to `to`): it certainly was not received.

        A forwarded write or a read-index request then waits for news of a leader instead of
        timing out as UNKNOWN: during a failover the old leader's link drops before a new
        leader is elected, and writes sent meanwhile should go to the new one.
        """
        if isinstance(message, ForwardRequest):
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

    def tick(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.raft.tick()
        if (self.raft.is_leader and self.raft.tick_count % self.config.expire_every_ticks == 0
                and self.applied_index >= self._expire_inflight_index):
            self._propose_expiry()
        self._expire_deadlines()
        self._after_event()

    # -- the Ready cycle ------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._replies or self._msgs or self._read_batch or self.raft.has_ready())

    def ready(self) -> NodeReady:
        if self._read_batch:
            self._flush_read_batch()
        rd = self.raft.ready()
        self._apply(rd.committed)
        for rs in rd.read_states:
            ctx = rs.context
            if ctx[0] == "local":
                self._on_read_index(ctx[1], rs.index)
            else:
                self._send(ctx[1], ReadIndexReply(self.id, ctx[2], rs.index))
        self._serve_reads()
        out = NodeReady(rd, early_messages=self._msgs, replies=self._replies)
        self._msgs, self._replies = [], []
        out.early_messages.extend(rd.early_messages)
        self._after_event()  # reads refused above are routed again in the next Ready
        return out

    def advance(self, rd: NodeReady) -> None:
        self.raft.advance(rd.raft)
        self._after_event()

    # -- routing --------------------------------------------------------------------------------

    def _route(self, req: _Request) -> None:
        if not req.is_write:
            req.phase = "reading"
            self._read_batch.append(req.req_id)
            return
        leader = self.raft.leader_id
        if self.raft.is_leader:
            at = self.raft.propose([encode_command_entry(req.argv, self._entry_time())])
            if at is not None:
                req.phase = "proposed"
                self._proposed[at[0]] = (at[1], ("local", req.req_id))
                return
        elif leader is not None:
            req.phase, req.sent_to = "forwarded", leader
            self.forwarded_total += 1
            self._send(leader, ForwardRequest(self.id, req.req_id, tuple(req.argv)))
            return
        req.phase = "waiting"
        self._waiting_for_leader.append(req.req_id)

    def _entry_time(self) -> int:
        return max(self.now_ms, self.state_time_ms)

    def _on_forward_request(self, m: ForwardRequest) -> None:
        key = (m.src, m.req_id)
        if key in self._recent_forwards:
            return  # a duplicate delivery: the first copy is already proposed (or answered)
        if not self.raft.is_leader:
            self._send(m.src, ForwardReply(self.id, m.req_id, None, not_leader=True))
            return
        argv = list(m.argv)
        try:
            spec, _ = parse_command(argv)
            if spec.kind != "write":
                raise CommandError("ERR only writes are forwarded")
        except CommandError as e:
            self._send(m.src, ForwardReply(self.id, m.req_id, e.reply()))
            return
        at = self.raft.propose([encode_command_entry(argv, self._entry_time())])
        if at is None:  # leadership transfer in progress
            self._send(m.src, ForwardReply(self.id, m.req_id, None, not_leader=True))
            return
        self._proposed[at[0]] = (at[1], ("remote", m.src, m.req_id))
        self._recent_forwards[key] = None
        if len(self._recent_forwards) > RECENT_FORWARDS_MAX:
            self._recent_forwards.popitem(last=False)

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
        self._finish(req.req_id, m.result)

    def _flush_read_batch(self) -> None:
        reqs, self._read_batch = self._read_batch, []
        reqs = [r for r in reqs if r in self._requests]
        if not reqs:
            return
        if self.raft.is_leader:
            batch = self._new_batch(reqs, self.id)
            self.raft.request_read(("local", batch))
        elif self.raft.leader_id is not None:
            batch = self._new_batch(reqs, self.raft.leader_id)
            self._send(self.raft.leader_id, ReadIndexRequest(self.id, batch))
        else:
            for r in reqs:
                self._requests[r].phase = "waiting"
            self._waiting_for_leader.extend(reqs)

    def _new_batch(self, reqs: list[int], asked: str) -> int:
        batch = self._next_batch_id
        self._next_batch_id += 1
        self._read_batches[batch] = (reqs, asked)
        return batch

    def _on_read_index(self, batch: int, index: int | None) -> None:
        entry = self._read_batches.pop(batch, None)
        if entry is None:
            return
        reqs = [r for r in entry[0] if r in self._requests]
        if index is None:
            # The node asked could not confirm leadership; reads are safe to ask again.
            for r in reqs:
                self._park(self._requests[r], entry[1])
            return
        heapq.heappush(self._reads_waiting_apply, (index, batch, reqs))
        self._serve_reads()  # often applied far enough already: answer now, not next tick

    def _serve_reads(self) -> None:
        waiting = self._reads_waiting_apply
        while waiting and waiting[0][0] <= self.applied_index:
            _index, _batch, reqs = heapq.heappop(waiting)
            for r in reqs:
                req = self._requests.get(r)
                if req is not None:
                    self._finish(r, self.state.execute_read(req.argv, self.now_ms))

    # -- applying -------------------------------------------------------------------------------

    def _apply(self, entries: list[Entry]) -> None:
        for e in entries:
            invariant(e.index == self.applied_index + 1,
                      f"applying {e.index} after {self.applied_index}")
            result: object = None
            if e.data:
                kind, time_ms, payload = msgpack.unpackb(e.data, use_list=True)
                t = max(time_ms, self.state_time_ms)
                self.state_time_ms = t
                if kind == ENTRY_COMMAND:
                    result = self.state.apply_command(payload, t)
                    self.commands_applied += 1
                elif kind == ENTRY_EXPIRE:
                    self.state.apply_expire(payload, t)
                else:
                    invariant(False, f"unknown entry kind {kind} at index {e.index}")
            self.applied_index = e.index
            proposed = self._proposed.pop(e.index, None)
            if proposed is not None:
                term, target = proposed
                self._deliver(target, result if term == e.term else ERR_NOT_APPLIED)

    def _deliver(self, target: tuple, value: object) -> None:
        if target[0] == "local":
            self._finish(target[1], value)
        else:
            self._send(target[1], ForwardReply(self.id, target[2], value))

    def _propose_expiry(self) -> None:
        keys = self.state.expired_keys(self.now_ms, self.config.expire_batch_keys)
        if keys:
            at = self.raft.propose([encode_expire_entry(keys, self._entry_time())])
            if at is not None:
                self._expire_inflight_index = at[0]

    # -- bookkeeping ----------------------------------------------------------------------------

    def _send(self, to: str, message: object) -> None:
        self._msgs.append(Envelope(to, message))

    def _finish(self, req_id: int, value: object) -> None:
        if self._requests.pop(req_id, None) is not None:
            self._replies.append((req_id, value))

    def _park(self, req: _Request, refused_by: str | None) -> None:
        """Requeue a request that `refused_by` would not take (it is not the leader)."""
        req.phase = "waiting"
        if refused_by is not None and refused_by == self.raft.leader_id:
            self._parked.append(req.req_id)  # wait until we hear of another leader
        else:
            self._waiting_for_leader.append(req.req_id)

    def _after_event(self) -> None:
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

    def _on_leader_change(self) -> None:
        if self._parked:
            self._waiting_for_leader.extend(self._parked)
            self._parked = []
        # Read batches asked of a node that is no longer the leader are asked again (reads are
        # idempotent). Writes forwarded to it stay pending: it may still commit them, and will
        # answer when it applies them; otherwise their deadline reports UNKNOWN.
        for batch, (reqs, asked) in list(self._read_batches.items()):
            if asked != self.raft.leader_id:
                del self._read_batches[batch]
                for r in reqs:
                    req = self._requests.get(r)
                    if req is not None:
                        req.phase = "waiting"
                        self._waiting_for_leader.append(r)

    def _expire_deadlines(self) -> None:
        now = self.now_ms
        while self._deadlines and self._deadlines[0][0] <= now:
            _, req_id = heapq.heappop(self._deadlines)
            req = self._requests.get(req_id)
            if req is None:
                continue
            if not req.is_write:
                self._finish(req_id, ERR_READ_TIMEOUT)
            elif req.phase == "waiting":
                self._finish(req_id, ERR_NO_LEADER)
            else:
                self.unknown_outcomes += 1
                self._finish(req_id, ERR_UNKNOWN)

    # -- introspection --------------------------------------------------------------------------

    @property
    def pending_requests(self) -> int:
        return len(self._requests)
