"""Client connections: RESP bytes in, commands to the node core, replies out in order.

Pipelining: a client may send many commands before reading any reply. Replies go back in
request order (each command gets a slot; a slot is written once it and every slot before it are
filled). Consecutive commands of the same kind are submitted together, so a pipeline of reads
shares one ReadIndex round, and consecutive plain writes already received go as one request and
one log entry (`EXEC PIPELINE ...`, replikv.commands.transactions), each answered in its own
slot; consecutive plain reads likewise go as one read (`EXEC-READS ...`). When the kind changes
(a read after writes, or a write after reads) the connection waits for the earlier commands to
finish first: a read must see the connection's own earlier writes, and must not see its later
ones. Commands that change the connection itself (HELLO, SELECT, CLIENT, RESET, QUIT) wait too.

Large replies: a reply of more than LARGE_REPLY_ITEMS items (KEYS, SMEMBERS, MGET, HGETALL,
SCAN with a large COUNT) is encoded in the node's reply-encoder thread, so the event loop keeps
answering peers and other clients meanwhile (a loop held for longer than an election timeout
makes the followers elect another leader). The command still counts as in flight until its bytes are
ready; replies keep their order through the slots. Reply values are built for the reply and
never kept by the state, and the thread gets a shallow copy of the containers anyway.

Backpressure: while the connection waits, or while the client is not reading its replies
(transport write buffer over its high-water mark), the socket is not read, so a client cannot
make the node buffer unbounded input.

Local commands see the node through `NodeView` (the runtime). `runtime_topology` is REPLIKV
TOPOLOGY in terms of the runtime's state (the current membership, roles from raft, addresses
from the replicated address book and the peers' handshakes).

REPLIKV MEMBER and REPLIKV SWITCHOVER are not local: they go to the node core like a write
(a follower forwards them to the leader), one at a time on the connection.

Pub/sub. SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBE forms belong to the connection:
they wait for the connection's earlier commands, change the node's `Subscriptions` (what the
core counts for PUBLISH) and answer Redis 7's confirmation frames. Messages arrive from the
runtime (`push_messages`) as the entries that published them commit, and are written at once,
outside the reply slots: a RESP3 push may come between replies, and a RESP2 connection in the
subscribed context has no other replies pending. A subscriber is the one client whose output
the node cannot bound by not reading it, so its unsent output is bounded instead
(`pubsub_output_*` in replikv.limits): past the hard limit, or the soft one for too long, it is
disconnected, as Redis's client-output-buffer-limit pubsub does.

Blocking commands (BLPOP, BZPOPMIN and the others). The command table runs one attempt of each
(replikv.commands.blocking): it pops, or answers nil. The connection makes the wait: it waits
for the commands before it, submits an attempt as a write, and while attempts find nothing it
stays registered in the node's `Waiters` (replikv.server.blocking), which wake it when a
committed entry changes one of its keys; then, if this node's state holds one of the keys with
a value of the type it pops, it tries again. Its timeout, or CLIENT UNBLOCK, ends the wait with Redis's replies; an attempt
under way at that moment is answered first (what it popped is never dropped). Nothing after
the command on the connection runs until it is answered, as in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

from replikv.commands import CommandSpec, check_arity, lookup, unknown_command
from replikv.commands.blocking import TIMED_OUT_REPLY, blocking_of
from replikv.commands.streams import reads_only_new
from replikv.commands.transactions import (
    INTERNAL_READS,
    PIPELINE_BATCH_BYTES,
    PIPELINE_BATCH_COMMANDS,
    PIPELINE_BATCHABLE,
    PIPELINE_READS,
    WATCH_POINT_NAME,
    encode_exec,
    encode_reads,
)
from replikv.concerns import confirmed_read
from replikv.invariants import InvariantViolation
from replikv.node import is_admin_command
from replikv.pubsub import CHANNEL, PATTERN, SHARD, push_frame
from replikv.replies import CommandError, ErrorReply, NullArray, PairArray, Status, wrong_arity
from replikv.resp import ProtocolError, RequestParser, encode_reply
from replikv.server.blocking import Blocked, probe
from replikv.server.local_commands import (
    BARRIER_COMMANDS,
    LOCAL_COMMANDS,
    NO_AUTH_COMMANDS,
    NOAUTH,
    ConnectionState,
    MemberView,
    check_local_arity,
    member_views,
    parse_replikv_with,
    run_local,
)

if TYPE_CHECKING:
    from replikv.concerns import RequestOptions
    from replikv.server.runtime import NodeServer

log = logging.getLogger("replikv.clients")

# Replies with more items than this are encoded off the event loop (about 5 ms of encoding).
LARGE_REPLY_ITEMS = 10_000
ERR_REPLY_ENCODING = ErrorReply("ERR replikv could not encode this reply (a bug; the node's "
                                "log has the details)")

# MULTI ... EXEC (replikv.commands.transactions). The connection queues the commands and hands
# EXEC to the node core as one write.
TRANSACTION_COMMANDS = frozenset({b"multi", b"exec", b"discard", b"watch", b"unwatch"})
RUN_INSIDE_MULTI = frozenset({b"quit", b"reset"})  # run at once, as in Redis
QUEUED = Status("QUEUED")
OK = Status("OK")
ERR_EXEC_ABORT = ErrorReply("EXECABORT Transaction discarded because of previous errors.")
# EXEC itself refused (its arity), inside MULTI or not: Redis discards the transaction and the
# WATCH, and says why without the error's code.
ERR_EXEC_ARITY = ErrorReply("EXECABORT Transaction discarded because of: "
                            + wrong_arity("exec").removeprefix("ERR "))
WATCHED_KEYS_MAX = 10_000  # per connection
# The connection's pub/sub commands: name -> (namespace, True to subscribe).
SUBSCRIBE_COMMANDS = {b"subscribe": (CHANNEL, True), b"unsubscribe": (CHANNEL, False),
                      b"psubscribe": (PATTERN, True), b"punsubscribe": (PATTERN, False),
                      b"ssubscribe": (SHARD, True), b"sunsubscribe": (SHARD, False)}
# What a RESP2 connection with a subscription may run (Redis 7's subscribed context).
RUN_WHEN_SUBSCRIBED = frozenset({*SUBSCRIBE_COMMANDS, b"ping", b"quit", b"reset"})
# Redis names a container command with its subcommand in that context's refusal.
_CONTAINERS = frozenset({b"client", b"config", b"command", b"pubsub", b"object", b"memory"})
# CLIENT UNBLOCK ... ERROR: what the blocked command answers (Redis's text).
ERR_UNBLOCKED = ErrorReply("UNBLOCKED client unblocked via CLIENT UNBLOCK")
ERR_BLOCKING_SEQ = ErrorReply("ERR REPLIKV WITH SEQ cannot go with a blocking command: each "
                              "attempt to pop is a write of its own")
# Bytes counted per queued command beyond its arguments (its argument count in the internal
# EXEC), so the transaction is refused when queued, not when it is proposed.
QUEUED_COMMAND_OVERHEAD = 12


def _refused_when_subscribed(name: bytes, argv: list[bytes]) -> ErrorReply:
    """What a RESP2 connection with a subscription gets for any other command: Redis's
    unknown-command or arity error if it has one, else the subscribed context's refusal."""
    spec = lookup(argv[0])
    try:
        if spec is not None:
            check_arity(spec, argv)
        elif name in LOCAL_COMMANDS or name in TRANSACTION_COMMANDS or name == b"wait":
            check_local_arity(argv)
        else:
            return unknown_command(argv).reply()
    except CommandError as e:
        return e.reply()
    full = name.decode("latin-1")
    if name in _CONTAINERS and len(argv) > 1:
        full += "|" + argv[1].lower().decode("latin-1", "replace")[:32]
    return ErrorReply(f"ERR Can't execute '{full}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / "
                      "PING / QUIT / RESET are allowed in this context")


def large_reply_copy(value: object) -> list | dict | None:
    """A copy of `value` to encode in another thread if it is a large array (more than
    LARGE_REPLY_ITEMS items, at the top or in one of a short array's items, as in SCAN's
    [cursor, keys]) or map (HGETALL); None to encode it here. Containers are copied (C-level
    list(), dict()), their leaves are immutable bytes and numbers."""
    if type(value) is dict:  # HGETALL: twice as many items as fields
        return dict(value) if 2 * len(value) > LARGE_REPLY_ITEMS else None
    if type(value) is PairArray:  # HRANDFIELD ... WITHVALUES
        return PairArray(value) if len(value) > LARGE_REPLY_ITEMS else None
    if type(value) is not list and type(value) is not tuple:
        return None
    if len(value) > LARGE_REPLY_ITEMS:
        return list(value)
    if len(value) <= 16 and any(type(item) in (list, tuple) and len(item) > LARGE_REPLY_ITEMS
                                for item in value):
        return [list(item) if type(item) in (list, tuple) else item for item in value]
    return None


def runtime_topology(server: NodeServer) -> list[MemberView]:
    """REPLIKV TOPOLOGY for a running node: every member of the current configuration (voters
    and standbys), with the client and admin addresses from the replicated address book, the
    node's settings, and what peers advertised in their handshakes."""
    raft = server.node.raft
    membership = raft.membership
    return member_views(self_id=server.node_id, self_role=raft.role.value, term=raft.term,
                        applied_index=server.node.applied_index, leader_id=raft.leader_id,
                        members=list(membership.members), voters=frozenset(membership.voters),
                        addresses=server.member_addresses())


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.view = server  # what local commands see
        self.parser = RequestParser(server.settings.limits)
        self.state = ConnectionState(client_id=server.next_client_id(),
                                     options=server.default_options,
                                     default_options=server.default_options)
        if server.requirepass:  # nothing but AUTH and HELLO ... AUTH until the password is given
            self.state.authenticated = False
            self.parser.set_authenticated(False)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.failed = False  # a protocol error was seen: answer what is pending, then close
        # Reply slots in request order: [req_id, encoded reply or None while waiting].
        self.slots: deque[list] = deque()
        self.slot_of: dict[int, list] = {}
        # A batch of a pipeline's writes or reads submitted as one request: its slots, in order.
        self.batch_of: dict[int, list[list]] = {}
        self.inflight = 0
        self.inflight_kind: str | None = None
        self.held: list[bytes] | None = None  # a parsed command waiting for in-flight ones
        # The REPLIKV WITH options of the held command, if any.
        self.held_options: RequestOptions | None = None
        self.reading_paused = False
        self.writing_paused = False
        # Between MULTI and EXEC: the commands queued; a refused one makes EXEC abort.
        self.multi: list[list[bytes]] | None = None
        self.multi_dirty = False
        self.multi_args = 0
        self.multi_bytes = 0
        # WATCH: the node's watch index when the first key was watched, and the keys.
        self.watch: tuple[int, list[bytes]] | None = None
        # A first WATCH waiting for its node's watch point (WATCH-POINT): (request id, keys).
        # Nothing after it on the connection is read until it is answered.
        self.watch_pending: tuple[int, list[bytes]] | None = None
        # Pub/sub: namespace -> the names this connection is subscribed to (in order); and
        # since when its unsent output has been over the soft limit (time.monotonic()).
        self.subscribed: dict[str, dict[bytes, None]] = {CHANNEL: {}, PATTERN: {}, SHARD: {}}
        self.subscription_count = 0
        self.over_soft_limit_since: float | None = None
        # The blocking command the connection waits in, if any.
        self.blocked: _Waiting | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport; asyncio.Protocol's signature names only the base class.
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        self.state.addr = f"{peer[0]}:{peer[1]}" if peer else "?"
        if not self.server.register_client(self):
            stream.write(b"-ERR max number of clients reached\r\n")
            stream.close()
            self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.subscription_count:
            self._unsubscribe_all()
        if self.blocked is not None:
            self._block_abandoned()
        self.server.unregister_client(self)
        self.server.end_session(self.state.client_id)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.parser.feed(data)
        self._pump()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._pump()

    # -- commands -----------------------------------------------------------------------------

    def _pump(self) -> None:
        max_inflight = self.server.settings.limits.max_pipeline_commands
        while (not self.closed and not self.writing_paused and not self.failed
               and self.watch_pending is None):
            argv = self.held
            resumed = argv is not None  # held earlier: its transaction step is done
            if argv is None:
                try:
                    argv = self.parser.get_command()
                except ProtocolError as e:
                    self._protocol_error(e)
                    return
                if argv is None:
                    break
            self.held = None
            name = argv[0].lower()
            if not self.state.authenticated and name not in NO_AUTH_COMMANDS:
                self._push_done(NOAUTH)
                continue
            options = self.state.options
            with_options = False
            if name == b"replikv" and len(argv) > 1 and argv[1].upper() == b"WITH":
                try:
                    options, argv = parse_replikv_with(options, argv)
                except CommandError as e:
                    self._multi_refuse(e.reply())
                    continue
                name, with_options = argv[0].lower(), True
            if name in INTERNAL_READS:  # the node's internal forms, not a client's commands
                self._multi_refuse(unknown_command(argv).reply())
                continue
            if (self.subscription_count and self.state.protocol == 2
                    and name not in RUN_WHEN_SUBSCRIBED):
                self._push_done(_refused_when_subscribed(name, argv))
                continue
            takes_watch_point = (name == b"watch" and self.multi is None and self.watch is None
                                 and 2 <= len(argv) <= WATCHED_KEYS_MAX + 1)
            if not resumed:
                if self.multi is not None and name not in RUN_INSIDE_MULTI:
                    exec_argv = self._in_multi(self.multi, name, argv, with_options)
                    if exec_argv is None:
                        continue
                    argv, name = exec_argv, b"exec"
                elif name in TRANSACTION_COMMANDS and not takes_watch_point:
                    self._push_done(self._outside_multi(name, argv))
                    continue
            if takes_watch_point:
                if self.inflight:  # after every earlier command of the connection has its effect
                    self.held, self.held_options = argv, options
                    break
                self._submit_watch_point(argv, options)
                break
            if name in SUBSCRIBE_COMMANDS or (name == b"ping" and self.subscription_count
                                              and self.state.protocol == 2):
                if self.inflight:  # after every earlier command of the connection
                    self.held = argv
                    break
                self._pubsub_command(name, argv)
                continue
            admin = name == b"replikv" and is_admin_command(argv)
            handler = None if admin else LOCAL_COMMANDS.get(name)
            if handler is not None:
                if self.inflight and name in BARRIER_COMMANDS:
                    self.held = argv
                    break
                started = time.perf_counter()
                reply = run_local(handler, self.state, self.view, argv)
                if name in NO_AUTH_COMMANDS and self.server.requirepass:
                    self.parser.set_authenticated(self.state.authenticated)
                if type(reply) is ErrorReply:
                    if self.multi is not None:  # RESET x inside MULTI: refused, as queued
                        self.multi_dirty = True
                elif name == b"reset":
                    self.multi = self.watch = None  # RESET also drops a transaction and WATCH
                    if self.subscription_count:
                        self._unsubscribe_all()  # ... and every subscription
                self.server.metrics.count_command(
                    name.decode("latin-1"), type(reply) is not ErrorReply,
                    (time.perf_counter() - started) * 1e6)
                self._push_done(reply)
                if self.state.closing:
                    self._flush()
                    self._close()
                    return
                continue
            spec = lookup(argv[0])
            # Errors are answered in order, as reads. WAIT waits for the writes before it, so
            # that it counts the copies of the connection's last write.
            kind = spec.kind if spec is not None else (
                "wait" if name == b"wait" else "admin" if admin else "read")
            if spec is not None and "blocking" in spec.flags:
                kind = "block"
            if self.inflight and (kind != self.inflight_kind or self.inflight >= max_inflight
                                  or kind == "wait" or kind == "block"):
                self.held = argv
                self.held_options = options
                break
            if self.held_options is not None:
                options, self.held_options = self.held_options, None
            if kind == "block":
                self._block(spec, argv, options)  # type: ignore[arg-type]
                continue
            if (kind == "write" and name in PIPELINE_BATCHABLE and options is self.state.options
                    and options.seq is None):
                batch = self._pipeline_batch(argv, name, max_inflight - self.inflight,
                                             PIPELINE_BATCHABLE)
                if batch is not None:
                    self._submit_batch(*batch, options, "write")
                    continue
                req_id = self.server.submit_writes(self, [argv], sum(map(len, argv)), options)
            elif (kind == "read" and name in PIPELINE_READS and options is self.state.options
                  and (batch := self._pipeline_batch(argv, name, max_inflight - self.inflight,
                                                     PIPELINE_READS)) is not None):
                self._submit_batch(*batch, options, "read")
                continue
            else:
                req_id = self.server.submit(self, argv, options)
            # The name counted in /metrics: a known command's, never the client's bytes.
            self._awaiting(req_id, spec.name if spec is not None else (
                "unknown" if kind == "read" else kind), kind, argv)
        self._flush()
        if self.failed:
            return
        if self.held is not None or self.writing_paused or self.watch_pending is not None:
            self._pause_reading()
        elif self.reading_paused:
            self.reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def _awaiting(self, req_id: int, name: str, kind: str, argv: list[bytes]) -> None:
        """Request `req_id` (a `kind` command counted as `name` in /metrics) was submitted: its
        reply slot, in order, until the node answers it (and when it was submitted, and its
        arguments, for INFO commandstats and SLOWLOG)."""
        slot = [req_id, None, name, time.perf_counter(), argv]
        self.slots.append(slot)
        self.slot_of[req_id] = slot
        self.inflight += 1
        self.inflight_kind = kind

    # -- a pipeline's writes and reads, batched -------------------------------------------------

    def _pipeline_batch(self, first: list[bytes], name: bytes, room: int,
                        batchable: frozenset[bytes],
                        ) -> tuple[list[list[bytes]], list[str], int] | None:
        """`first` (named `name`) and the commands in `batchable` (plain writes, or plain
        reads) that follow it in what the client has already sent, to submit as one request,
        with their names and their arguments' bytes (replikv.commands.transactions); None if
        none follows. At most `room` commands (the pipeline's limit of commands in flight)."""
        parser = self.parser
        following = parser.peek_command()
        if following is None or room < 2:
            return None
        limit = min(room, PIPELINE_BATCH_COMMANDS)
        max_args = self.server.settings.limits.max_command_args
        batch = [first]
        names = [name.decode("latin-1")]  # batchable commands are known: these are their names
        size = sum(map(len, first))
        args = 2 + 1 + len(first)  # the internal EXEC's name, mark and count, each argc
        while following is not None and len(batch) < limit:
            lowered = following[0].lower()
            if lowered not in batchable:
                break
            more_size = size + sum(map(len, following))
            more_args = args + 1 + len(following)
            if more_size > PIPELINE_BATCH_BYTES or more_args > max_args:
                break
            size, args = more_size, more_args
            batch.append(following)
            names.append(lowered.decode("latin-1"))
            parser.get_command()
            following = parser.peek_command()
        return (batch, names, size) if len(batch) > 1 else None

    def _submit_batch(self, batch: list[list[bytes]], names: list[str], size: int,
                      options: RequestOptions, kind: str) -> None:
        if kind == "write":
            req_id = self.server.submit_writes(self, batch, size, options)
        else:
            req_id = self.server.submit(self, encode_reads(batch), options)
        now = time.perf_counter()
        slots = [[req_id, None, name, now, argv] for name, argv in zip(names, batch, strict=True)]
        self.slots.extend(slots)
        self.batch_of[req_id] = slots
        self.inflight += len(slots)
        self.inflight_kind = kind
        self.server.metrics.count_pipeline_batch(len(slots), kind)

    def _batch_replies(self, slots: list[list], value: object) -> None:
        """The node's answer to a batch: a reply per command, or one error for all (the batch
        was refused as a whole: no leader, a write concern's timeout, ...)."""
        if type(value) is not list or len(value) != len(slots):
            value = [value] * len(slots)
        last = len(slots) - 1
        for i, (slot, item) in enumerate(zip(slots, value, strict=True)):
            self._reply_to(slot, item, i == last)  # one socket write for the batch

    # -- MULTI ... EXEC -------------------------------------------------------------------------

    def _outside_multi(self, name: bytes, argv: list[bytes]) -> object:
        if name == b"exec" and len(argv) != 1:
            self.watch = None
            return ERR_EXEC_ARITY
        try:
            check_local_arity(argv)  # before anything: UNWATCH x keeps the WATCH
        except CommandError as e:
            return e.reply()
        if name == b"multi":
            self.multi, self.multi_dirty = [], False
            self.multi_args, self.multi_bytes = 2, 16  # the internal EXEC's name and count
            return OK
        if name == b"watch":
            return self._watch(argv)
        if name == b"unwatch":
            self.watch = None
            return OK
        return ErrorReply(f"ERR {name.decode().upper()} without MULTI")

    def _watch(self, argv: list[bytes]) -> object:
        """WATCH key... once the connection watches already (the first WATCH takes its watch
        point from the node: _submit_watch_point), or refused: EXEC will answer nil if an entry
        after the watch point changes one of the keys (replikv.commands.transactions)."""
        watch = self.watch
        if len(argv) - 1 + (len(watch[1]) if watch else 0) > WATCHED_KEYS_MAX:
            return ErrorReply(f"ERR too many watched keys (limit {WATCHED_KEYS_MAX})")
        if watch is None:  # _pump sends a valid first WATCH to _submit_watch_point
            raise InvariantViolation("a first WATCH takes its watch point from the node")
        self.watch = (watch[0], watch[1] + argv[1:])
        return OK

    def _submit_watch_point(self, argv: list[bytes], options: RequestOptions) -> None:
        """A first WATCH: ask the node where it starts, as a read at the connection's read
        preference and consistency, so that a write acknowledged before it (to this client or
        any other) is never taken for a change after it, on a follower too, whose applied
        index may lag. Answered in _watch_point_answered."""
        req_id = self.server.submit(self, [WATCH_POINT_NAME], options)
        self._awaiting(req_id, "watch", "read", argv)
        self.watch_pending = (req_id, argv[1:])

    def _watch_point_answered(self, value: object) -> object:
        """The reply to the WATCH waiting for `value` (an index, or the error the read got)."""
        _req_id, keys = self.watch_pending  # type: ignore[misc]
        self.watch_pending = None
        if type(value) is not int:
            return value  # no leader, STALE, ...: the WATCH fails as that read would
        self.watch = (value, keys)
        return OK

    def _in_multi(self, queued: list[list[bytes]], name: bytes, argv: list[bytes],
                  with_options: bool) -> list[bytes] | None:
        """A command between MULTI and EXEC (`queued` so far): answered here (None), or, for
        EXEC, the internal EXEC to submit as one write."""
        if name == b"exec" and len(argv) != 1:
            self.multi = self.watch = None
            self._push_done(ERR_EXEC_ARITY)
            return None
        try:
            # A connection or node command's arity first, as Redis checks it before anything:
            # DISCARD x, MULTI x, WATCH alone, TIME x are refused and make EXEC abort.
            check_local_arity(argv)
        except CommandError as e:
            self._multi_refuse(e.reply())
            return None
        if name == b"exec" or name == b"discard":
            dirty, watch = self.multi_dirty, self.watch
            self.multi = self.watch = None  # EXEC and DISCARD also end WATCH
            if name == b"discard":
                self._push_done(OK)
            elif dirty:
                self._push_done(ERR_EXEC_ABORT)
            elif not queued and watch is None:
                self._push_done([])
            else:
                return encode_exec(queued, watch)
            return None
        if name == b"multi":
            self._push_done(ErrorReply("ERR MULTI calls can not be nested"))
            return None
        if name == b"watch":
            self._push_done(ErrorReply("ERR WATCH inside MULTI is not allowed"))
            return None
        if with_options:
            self._multi_refuse(ErrorReply("ERR REPLIKV WITH inside MULTI applies only to EXEC"))
            return None
        spec = lookup(argv[0])
        if spec is None:
            if (name in LOCAL_COMMANDS or name in TRANSACTION_COMMANDS or name == b"wait"
                    or name in SUBSCRIBE_COMMANDS or name == b"script"):
                self._multi_refuse(ErrorReply(f"ERR {name.decode().upper()} inside MULTI is "
                                              "not supported by replikv"))
            else:
                self._multi_refuse(unknown_command(argv).reply())
            return None
        try:
            check_arity(spec, argv)
        except CommandError as e:
            self._multi_refuse(e.reply())
            return None
        limits = self.server.settings.limits
        args = self.multi_args + 1 + len(argv)
        size = self.multi_bytes + QUEUED_COMMAND_OVERHEAD + sum(map(len, argv))
        if args > limits.max_command_args or size > limits.max_entry_bytes:
            self._multi_refuse(ErrorReply(
                f"ERR transaction too large for one log entry (limits: "
                f"{limits.max_command_args} arguments, {limits.max_entry_bytes} bytes)"))
            return None
        self.multi_args, self.multi_bytes = args, size
        queued.append(argv)
        self._push_done(QUEUED)
        return None

    def _multi_refuse(self, error: ErrorReply) -> None:
        """Answer `error`; inside MULTI it also makes EXEC abort, as in Redis."""
        if self.multi is not None:
            self.multi_dirty = True
        self._push_done(error)

    # -- pub/sub ----------------------------------------------------------------------------------

    def _pubsub_command(self, name: bytes, argv: list[bytes]) -> None:
        """(P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, and PING in a RESP2 subscribed context: Redis 7's
        frames, one per name (UNSUBSCRIBE with none: every one, or [unsubscribe, nil, 0])."""
        try:
            check_local_arity(argv)
            if name == b"ping" and len(argv) > 2:
                raise CommandError(wrong_arity("ping"))
        except CommandError as e:
            self._push_done(e.reply())
            return
        protocol = self.state.protocol
        self.server.metrics.count_command(name.decode("latin-1"), True)
        if name == b"ping":  # RESP2 subscribed: an array, as Redis answers there
            self._push_done([b"pong", argv[1] if len(argv) > 1 else b""])
            return
        namespace, subscribing = SUBSCRIBE_COMMANDS[name]
        mine = self.subscribed[namespace]
        registry = self.server.node.subscriptions
        kind = name.decode("latin-1")
        frames = []
        names = argv[1:] if subscribing or len(argv) > 1 else list(mine)
        if not names:
            frames.append(push_frame([kind, None, self._count_for(namespace)], protocol))
        for channel in names:
            if subscribing:
                if channel not in mine:
                    mine[channel] = None
                    self.subscription_count += 1
                    registry.add(namespace, channel, self)
            elif channel in mine:
                del mine[channel]
                self.subscription_count -= 1
                registry.remove(namespace, channel, self)
            frames.append(push_frame([kind, channel, self._count_for(namespace)], protocol))
        self.slots.append([None, b"".join(frames)])

    def _count_for(self, namespace: str) -> int:
        """The count a confirmation carries: channels and patterns, or shard channels."""
        if namespace == SHARD:
            return len(self.subscribed[SHARD])
        return len(self.subscribed[CHANNEL]) + len(self.subscribed[PATTERN])

    def _unsubscribe_all(self) -> None:
        """Every subscription ends (RESET, or the connection closed), without a reply."""
        registry = self.server.node.subscriptions
        for namespace, names in self.subscribed.items():
            for channel in names:
                registry.remove(namespace, channel, self)
            names.clear()
        self.subscription_count = 0
        self.over_soft_limit_since = None

    def push_messages(self, data: bytes) -> None:
        """Messages for this subscriber (their frames, encoded for its protocol). Written at
        once; a subscriber whose unsent output passes the limits is disconnected."""
        transport = self.transport
        if self.closed or transport is None:
            return
        transport.write(data)
        unsent = transport.get_write_buffer_size()
        limits = self.server.settings.limits
        if unsent <= limits.pubsub_output_soft_limit_bytes:
            self.over_soft_limit_since = None
            return
        if unsent > limits.pubsub_output_hard_limit_bytes:
            self._output_limit_exceeded(unsent, f"more than pubsub_output_hard_limit_bytes "
                                                f"({limits.pubsub_output_hard_limit_bytes})")
            return
        now = time.monotonic()
        if self.over_soft_limit_since is None:
            self.over_soft_limit_since = now
        elif (now - self.over_soft_limit_since) * 1000 >= limits.pubsub_output_soft_limit_ms:
            self._output_limit_exceeded(unsent, f"more than pubsub_output_soft_limit_bytes "
                                                f"({limits.pubsub_output_soft_limit_bytes}) for "
                                                f"{limits.pubsub_output_soft_limit_ms} ms")

    def _output_limit_exceeded(self, unsent: int, why: str) -> None:
        log.warning("disconnecting subscriber %s (id %d): %d bytes of messages unsent, %s; "
                    "a subscriber must read its messages as fast as they are published",
                    self.state.addr, self.state.client_id, unsent, why)
        self.server.pubsub_disconnections += 1
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # drops what is buffered; connection_lost unsubscribes
        if self.subscription_count:
            self._unsubscribe_all()

    # -- blocking commands ------------------------------------------------------------------------

    def _block(self, spec: CommandSpec, argv: list[bytes], options: RequestOptions) -> None:
        """A blocking command, once every earlier command of the connection is answered: its
        first attempt (or the read that shows none is needed), and the wait if it finds
        nothing (see replikv.server.blocking)."""
        try:
            check_arity(spec, argv)
            parsed = blocking_of(spec.name, spec.parse(argv))
            if parsed is not None and options.seq is not None:
                raise CommandError(ERR_BLOCKING_SEQ.message)
        except CommandError as e:
            self.server.metrics.count_command(spec.name, False)
            self._push_done(e.reply())
            return
        if parsed is None:  # XREAD without BLOCK: a command like any other
            self._awaiting(self.server.submit(self, argv, options), spec.name, spec.kind, argv)
            return
        slot = [None, None, spec.name, None, None]  # (its wait is not timed, as in Redis)
        self.slots.append(slot)
        self.inflight += 1
        self.inflight_kind = "block"
        call = Blocked(parsed.keys, self._block_wake)
        waiting = self.blocked = _Waiting(call, argv, options, slot, parsed.pops)
        self.server.waiters.add(call)
        if parsed.timeout_ms:
            waiting.timer = asyncio.get_running_loop().call_later(
                parsed.timeout_ms / 1000, self._block_timed_out)
        if parsed.pops == b"stream" and b"$" in argv:
            # XREAD's `$` is the last id when the command runs: read once this node has applied
            # every entry acknowledged before (a read's ReadIndex round, WATCH-POINT's), so
            # that an entry some client saw added is never taken for a new one.
            call.trying = waiting.resolving = True
            waiting.req_id = self.server.submit(self, [WATCH_POINT_NAME], options)
            return
        # None of the keys here: ask whether the cluster has any, with a read (no log entry),
        # so that a client waiting on an idle queue costs nothing. (Not XREADGROUP, whose
        # attempt answers NOGROUP for a missing key.)
        if ((parsed.pops != b"stream" or spec.name == "xread")
                and self.server.waits_unwritten(argv, parsed.keys)):
            call.trying = waiting.probing = True
            waiting.req_id = self.server.submit(self, [b"EXISTS", *parsed.keys],
                                                confirmed_read(options))
            return
        self._block_attempt()

    def _block_attempt(self) -> None:
        waiting = self.blocked
        assert waiting is not None
        waiting.call.trying, waiting.call.dirty = True, False
        waiting.req_id = self.server.submit(self, waiting.argv, waiting.options)

    def _block_wake(self) -> None:
        """One of the keys changed (the node's Waiters): try again if this node's state holds
        one of them."""
        waiting = self.blocked
        if (waiting is None or waiting.call.trying or waiting.ending is not None
                or self.closed):
            return
        if probe(self.server.type_of, waiting.call.keys, waiting.pops):
            self._block_attempt()

    def _block_answered(self, value: object) -> None:
        """An attempt's reply: what it popped (or an error) ends the wait; nil keeps it,
        unless its timeout passed meanwhile, or a key changed while it ran (try again)."""
        waiting = self.blocked
        assert waiting is not None
        waiting.req_id = None
        waiting.call.trying = False
        if waiting.probing:  # the read that looked for the keys (see _block)
            waiting.probing = False
            if type(value) is not int:
                self._block_end(value if waiting.ending is None else waiting.ending)
            elif value or waiting.call.dirty:
                self._block_attempt()  # something may be there: the attempt pops it
            elif waiting.ending is not None:
                self._block_end(waiting.ending)
            return  # nothing anywhere: the wait begins, no entry written
        if waiting.resolving:  # the read XREAD's `$` waited for (see _block)
            waiting.resolving = False
            if type(value) is not int or waiting.ending is not None:
                self._block_end(value if waiting.ending is None else waiting.ending)
                return
            try:
                argv = waiting.argv
                waiting.argv = self.server.resolve_stream_ids(argv)
            except CommandError as e:
                self._block_end(e.reply())
                return
            if waiting.call.dirty or not reads_only_new(argv):
                self._block_attempt()
            return
        if value is NullArray or value is None:
            if waiting.ending is not None:
                self._block_end(waiting.ending)
            elif waiting.call.dirty:
                self._block_wake()
            return
        self._block_end(value)
        if type(value) is not ErrorReply:
            self.server.blocked_served += 1
            for call in self.server.waiters.served(waiting.call):
                call.wake()  # there may be more to pop

    def _block_timed_out(self) -> None:
        waiting = self.blocked
        if waiting is None:
            return
        waiting.timer = None
        self.server.blocked_timeouts += 1
        self._block_ending(TIMED_OUT_REPLY)

    def unblock(self, error: bool) -> bool:
        """CLIENT UNBLOCK: end the wait as a timeout would, or with UNBLOCKED; False if the
        connection waits in no blocking command."""
        if self.blocked is None or self.blocked.ending is not None:
            return False
        self.server.blocked_timeouts += 1
        self._block_ending(ERR_UNBLOCKED if error else TIMED_OUT_REPLY)
        return True

    def _block_ending(self, reply: object) -> None:
        """End the wait with `reply`, at once, or once the attempt under way is answered if
        it finds nothing (what it pops is the reply)."""
        waiting = self.blocked
        assert waiting is not None
        if waiting.call.trying:
            waiting.ending = reply
        else:
            self._block_end(reply)

    def _block_done(self) -> _Waiting:
        """The wait is over: no longer registered, its timer stopped."""
        waiting = self.blocked
        assert waiting is not None
        self.blocked = None
        self.server.waiters.remove(waiting.call)
        if waiting.timer is not None:
            waiting.timer.cancel()
        return waiting

    def _block_end(self, value: object) -> None:
        self._reply_to(self._block_done().slot, value)

    def _block_abandoned(self) -> None:
        """The connection closed while blocked. An attempt under way may pop something
        nobody reads (as in Redis when a served client is gone): the next call waiting on
        those keys looks again."""
        waiting = self._block_done()
        if waiting.req_id is not None:
            for call in self.server.waiters.served(waiting.call):
                call.wake()

    def on_reply(self, req_id: int, value: object) -> None:
        blocked = self.blocked
        if blocked is not None and blocked.req_id == req_id:
            self._block_answered(value)
            return
        if self.watch_pending is not None and self.watch_pending[0] == req_id:
            value = self._watch_point_answered(value)
            slot = self.slot_of.pop(req_id, None)
            if slot is not None and not self.closed:
                self._reply_to(slot, value)
                self._pump()  # read on: what came after the WATCH
            return
        slot = self.slot_of.pop(req_id, None)
        if slot is None:
            slots = self.batch_of.pop(req_id, None)
            if slots is not None and not self.closed:
                self._batch_replies(slots, value)
            return
        if not self.closed:
            self._reply_to(slot, value)

    def _reply_to(self, slot: list, value: object, flush: bool = True) -> None:
        large = large_reply_copy(value)
        if large is not None:
            self.server.encode_large_reply(large, self.state.protocol,
                                           lambda data: self._complete(slot, data, True))
            if flush:
                self._flush()
            return
        self._complete(slot, encode_reply(value, self.state.protocol),
                       type(value) is not ErrorReply, flush)

    def _complete(self, slot: list, data: bytes | None, ok: bool, flush: bool = True) -> None:
        """The reply of `slot` is `data` (None: it could not be encoded); `flush`: write what
        is ready (False while more of a batch's replies are being filled in)."""
        if self.closed:
            return
        if data is None:
            data, ok = encode_reply(ERR_REPLY_ENCODING), False
        slot[1] = data
        started = slot[3]
        if started is None:
            self.server.metrics.count_command(slot[2], ok)
        else:
            usec = (time.perf_counter() - started) * 1e6
            self.server.metrics.count_command(slot[2], ok, usec)
            slowlog = self.server.slowlog
            if 0 <= slowlog.slower_than_us <= usec:
                slowlog.record(usec, slot[4], self.state.addr, self.state.name)
        if not ok:
            self.server.metrics.count_error(error_code(data))
        self.inflight -= 1
        if self.inflight == 0:
            self.inflight_kind = None
            if self.held is not None:
                self._pump()
                return
        if flush:
            self._flush()

    def _push_done(self, value: object) -> None:
        if type(value) is ErrorReply:
            self.server.metrics.count_error(value.code)
        self.slots.append([None, encode_reply(value, self.state.protocol)])

    def _flush(self) -> None:
        slots = self.slots
        if not slots or slots[0][1] is None or self.transport is None:
            return
        out = []
        while slots and slots[0][1] is not None:
            out.append(slots.popleft()[1])
        self.transport.write(b"".join(out))
        if self.failed and not slots:
            self._close()

    def _protocol_error(self, e: ProtocolError) -> None:
        """The stream cannot be resynchronized: answer what came before, then the error, then
        close. Commands already submitted still get their replies first (as Redis does)."""
        log.info("closing client %s: %s", self.state.addr, e.message)
        self._push_done(e.reply())
        self.failed = True
        self._pause_reading()
        self._flush()  # closes the connection once every reply up to the error is written

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def error_code(data: bytes) -> str:
    """The code of an encoded error reply (`-WRONGTYPE Operation ...`: WRONGTYPE), for INFO
    errorstats."""
    end = data.find(b" ", 1, 65)
    if end < 0:
        end = data.find(b"\r", 1, 65)
    return data[1:end if end > 0 else 65].decode("latin-1")


class _Waiting:
    """A connection's blocking command: its registration, the command and options each
    attempt submits, its reply slot, the attempt under way (its request id), its timer, and
    the reply it ends with if that attempt finds nothing (a timeout or CLIENT UNBLOCK came)."""

    __slots__ = ("argv", "call", "ending", "options", "pops", "probing", "req_id", "resolving",
                 "slot", "timer")

    def __init__(self, call: Blocked, argv: list[bytes], options: RequestOptions,
                 slot: list, pops: bytes) -> None:
        self.call = call
        self.argv = argv
        self.options = options
        self.slot = slot
        self.pops = pops  # the type of value it takes (TYPE's name), for the probe
        self.req_id: int | None = None
        self.probing = False  # the read looking for its keys is under way (_block)
        self.resolving = False  # XREAD's `$` is being resolved (_block)
        self.timer: asyncio.TimerHandle | None = None
        self.ending: object | None = None
