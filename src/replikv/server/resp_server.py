"""Client connections: RESP bytes in, commands to the node core, replies out in order.

Pipelining: a client may send many commands before reading any reply. Replies go back in
request order (each command gets a slot; a slot is written once it and every slot before it are
filled). Consecutive commands of the same kind are submitted together, so a pipeline of writes
becomes one log batch and a pipeline of reads shares one ReadIndex round. When the kind changes
(a read after writes, or a write after reads) the connection waits for the earlier commands to
finish first: a read must see the connection's own earlier writes, and must not see its later
ones. Commands that change the connection itself (HELLO, SELECT, CLIENT, RESET, QUIT) wait too.

Large replies: a reply of more than LARGE_REPLY_ITEMS items (KEYS, SMEMBERS, MGET, SCAN with a
large COUNT) is encoded in the node's reply-encoder thread, so the event loop keeps answering
peers and other clients meanwhile (a loop held for longer than an election timeout makes the
followers elect another leader). The command still counts as in flight until its bytes are
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
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from replikv.commands import lookup
from replikv.node import is_admin_command
from replikv.replies import CommandError, ErrorReply
from replikv.resp import ProtocolError, RequestParser, encode_reply
from replikv.server.local_commands import (
    BARRIER_COMMANDS,
    LOCAL_COMMANDS,
    ConnectionState,
    MemberView,
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


def large_reply_copy(value: object) -> list | None:
    """A copy of `value` to encode in another thread if it is a large array (more than
    LARGE_REPLY_ITEMS items, at the top or in one of a short array's items, as in SCAN's
    [cursor, keys]); None to encode it here. Containers are copied (C-level list()), their
    leaves are immutable bytes and numbers."""
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
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.failed = False  # a protocol error was seen: answer what is pending, then close
        # Reply slots in request order: [req_id, encoded reply or None while waiting].
        self.slots: deque[list] = deque()
        self.slot_of: dict[int, list] = {}
        self.inflight = 0
        self.inflight_kind: str | None = None
        self.held: list[bytes] | None = None  # a parsed command waiting for in-flight ones
        # The REPLIKV WITH options of the held command, if any.
        self.held_options: RequestOptions | None = None
        self.reading_paused = False
        self.writing_paused = False

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
        while not self.closed and not self.writing_paused and not self.failed:
            argv = self.held
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
            options = self.state.options
            if name == b"replikv" and len(argv) > 1 and argv[1].upper() == b"WITH":
                try:
                    options, argv = parse_replikv_with(options, argv)
                except CommandError as e:
                    self._push_done(e.reply())
                    continue
                name = argv[0].lower()
            admin = name == b"replikv" and is_admin_command(argv)
            handler = None if admin else LOCAL_COMMANDS.get(name)
            if handler is not None:
                if self.inflight and name in BARRIER_COMMANDS:
                    self.held = argv
                    break
                reply = run_local(handler, self.state, self.view, argv)
                self.server.metrics.count_command(name.decode("latin-1"),
                                                  type(reply) is not ErrorReply)
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
            if self.inflight and (kind != self.inflight_kind or self.inflight >= max_inflight
                                  or kind == "wait"):
                self.held = argv
                self.held_options = options
                break
            if self.held_options is not None:
                options, self.held_options = self.held_options, None
            req_id = self.server.submit(self, argv, options)
            # The name counted in /metrics: a known command's, never the client's bytes.
            slot = [req_id, None, spec.name if spec is not None else (
                "unknown" if kind == "read" else kind)]
            self.slots.append(slot)
            self.slot_of[req_id] = slot
            self.inflight += 1
            self.inflight_kind = kind
        self._flush()
        if self.failed:
            return
        if self.held is not None or self.writing_paused:
            self._pause_reading()
        elif self.reading_paused:
            self.reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def on_reply(self, req_id: int, value: object) -> None:
        slot = self.slot_of.pop(req_id, None)
        if slot is None or self.closed:
            return
        large = large_reply_copy(value)
        if large is not None:
            self.server.encode_large_reply(large, self.state.protocol,
                                           lambda data: self._complete(slot, data, True))
            return
        self._complete(slot, encode_reply(value, self.state.protocol),
                       type(value) is not ErrorReply)

    def _complete(self, slot: list, data: bytes | None, ok: bool) -> None:
        """The reply of `slot` is `data` (None: it could not be encoded)."""
        if self.closed:
            return
        if data is None:
            data, ok = encode_reply(ERR_REPLY_ENCODING), False
        slot[1] = data
        self.server.metrics.count_command(slot[2], ok)
        self.inflight -= 1
        if self.inflight == 0:
            self.inflight_kind = None
            if self.held is not None:
                self._pump()
                return
        self._flush()

    def _push_done(self, value: object) -> None:
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
