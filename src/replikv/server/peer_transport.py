"""Peer links: one outbound TCP connection per peer for what we send, inbound ones for what
peers send us.

Sending never blocks the caller: a message is encoded and queued on the peer's link. While a
link is down its messages are dropped, not queued — Raft retransmits what matters (heartbeats
carry the consistency check; a lost forward times out as UNKNOWN), and stale messages delivered
late would only be noise. The queue of one live link is bounded in bytes
(`max_peer_send_queue_bytes`); past that the link is reset, which the leader's flow control
then handles like any other loss.

The first frame on every connection is a handshake (see replikv.wire). A handshake with an
empty cluster id asks which cluster this is: it gets one answer frame and the link is closed
(`learn_cluster_id` is the asking side). Inbound links whose
handshake names another cluster, an unknown node, or not us are closed and logged; so are links
that send a frame that does not decode, is larger than `max_peer_frame_bytes`, or claims to
come from a node other than the one that shook hands. None of that reaches the cores.

On a cluster with a password (`requirepass`) a handshake must also prove that its sender knows
it: it carries a fresh random nonce and an HMAC-SHA256, keyed with the password, of the
cluster id, both node ids and that nonce (`handshake_proof`). The password never travels, and
a node that does not know it cannot open a link, so it can neither inject messages nor pose
as a member. This guards against anyone who can reach the peer port; it does not hide the
traffic from someone who can read the network (the links are not encrypted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

from replikv.config import Address
from replikv.features import FEATURE_LEVEL, HANDSHAKE_KEY, parse_advertised
from replikv.limits import Limits
from replikv.tls import handshake_timeout
from replikv.wire import (
    CLUSTER_ID_QUESTION,
    FRAME_HEADER,
    PROTOCOL_VERSION,
    PeerProtocolError,
    decode_cluster_id_answer,
    decode_handshake,
    decode_message,
    encode_cluster_id_answer,
    encode_handshake,
    encode_message,
)

log = logging.getLogger("replikv.peers")

HANDSHAKE_TIMEOUT_S = 5.0
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 0.25  # a restarted peer is reached within this
_DRAIN_ABOVE_BYTES = 1 << 20
# Node ids remembered to log once (unknown nodes, nodes asking for the cluster id): bounded, since
# anyone who reaches the peer port can send ids.
REMEMBERED_IDS_MAX = 1024


class FrameSplitter:
    """The bytes of one peer connection in, complete frame payloads out. A frame is a 4-byte
    big-endian length and that many bytes; a length over `max_frame_bytes` is a protocol error
    (raised before its bytes are buffered)."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_frame_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        if self._buf:
            self._buf += data
            data = self._buf
        out = []
        pos, n, header, limit = 0, len(data), FRAME_HEADER.size, self._max
        unpack = FRAME_HEADER.unpack_from
        while n - pos >= header:
            (length,) = unpack(data, pos)
            if length > limit:
                raise PeerProtocolError(f"frame of {length} bytes is over the limit of {limit}")
            end = pos + header + length
            if end > n:
                break
            out.append(bytes(data[pos + header:end]))
            pos = end
        if data is self._buf:
            del self._buf[:pos]
        elif pos < n:
            self._buf += data[pos:]
        return out


class _OutboundLink:
    """What we send to one peer. Messages queued during one event-loop iteration leave in one
    write (one syscall per peer per batch, not one per message), scheduled with call_soon, so a
    leader's AppendEntries are on the wire before it waits for its own fsync. Past
    _DRAIN_ABOVE_BYTES of unsent data the link's task waits for the socket to drain first."""

    def __init__(self, transport: PeerTransport, peer: str, address: Address) -> None:
        self.transport = transport
        self.peer = peer
        self.address = address
        self.writer: asyncio.StreamWriter | None = None
        self.queue: list[bytes] = []
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.connected = False
        self.dropped_messages = 0
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.flush_scheduled = False
        self.tls_failure_logged = False  # said once until the link connects again

    def _note_connect_failure(self, error: OSError) -> None:
        """A refused connection is routine (the peer is down, or not started yet); a failed
        TLS handshake is a configuration problem, said once (a WARNING) until it connects."""
        if isinstance(error, ssl.SSLError) and not self.tls_failure_logged:
            self.tls_failure_logged = True
            log.warning("TLS handshake with peer %s at %s failed: %s (every member needs a "
                        "certificate signed by the cluster's tls_ca_cert_file)", self.peer,
                        self.address, getattr(error, "verify_message", None) or error)

    def send(self, frame: bytes) -> bool:
        if not self.connected:
            self.dropped_messages += 1
            return False
        if self.queued_bytes + len(frame) > self.transport.limits.max_peer_send_queue_bytes:
            log.warning("send queue to %s over %d bytes: resetting the link", self.peer,
                        self.transport.limits.max_peer_send_queue_bytes)
            self._reset()
            return False
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        if not self.flush_scheduled and self.loop is not None:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self.flush_scheduled = False
        writer = self.writer
        if not self.queue or writer is None or not self.connected:
            return
        transport = writer.transport
        if transport.is_closing():
            # The peer went away (kill -9: a reset) and the link's task has not noticed yet:
            # what is queued is lost like any message on a broken link.
            self.dropped_messages += len(self.queue)
            self._reset()
            return
        if transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES:
            self.wakeup.set()  # the link's task drains the socket, then flushes
            return
        frames, self.queue = self.queue, []
        self.queued_bytes = 0
        try:
            transport.writelines(frames)
        except (OSError, RuntimeError) as e:  # uvloop: RuntimeError on a closed handle
            log.info("sending to %s failed (%s): resetting the link", self.peer, e)
            self.dropped_messages += len(frames)
            self._reset()

    def _reset(self) -> None:
        """Drop the link's queue and connection; its task reconnects."""
        self.queue.clear()
        self.queued_bytes = 0
        self.connected = False
        if self.writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.transport.abort()

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        delay = RECONNECT_MIN_S
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    self.address.host, self.address.port, ssl=self.transport.tls_connecting,
                    ssl_handshake_timeout=handshake_timeout(self.transport.tls_connecting))
            except (OSError, ssl.SSLError) as e:
                self._note_connect_failure(e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            connected_at = asyncio.get_running_loop().time()
            self.writer = writer
            try:
                transport = self.transport
                info = dict(transport.advertised)
                if transport.passwords:
                    info[_PROOF_KEY] = handshake_proof(transport.passwords[0], transport.cluster_id,
                                                       transport.node_id, self.peer)
                writer.write(encode_handshake(transport.cluster_id, transport.node_id,
                                              self.peer, info))
                self.connected = True
                self.tls_failure_logged = False
                log.info("connected to peer %s at %s", self.peer, self.address)
                # The peer never writes on this connection; reading tells us when it closes.
                closed = asyncio.ensure_future(reader.read(1))
                while not closed.done():
                    if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES:
                        drained = asyncio.ensure_future(writer.drain())
                        await asyncio.wait({drained, closed},
                                           return_when=asyncio.FIRST_COMPLETED)
                        if not drained.done():
                            drained.cancel()
                        elif (error := drained.exception()) is not None:
                            raise error
                        continue
                    if self.queue:
                        self._flush()
                        continue
                    self.wakeup.clear()
                    waiter = asyncio.ensure_future(self.wakeup.wait())
                    await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                closed.cancel()
            except (OSError, ConnectionError):
                pass
            finally:
                if self.connected:
                    log.info("lost connection to peer %s", self.peer)
                self.connected = False
                self.queue.clear()
                self.queued_bytes = 0
                with contextlib.suppress(OSError, RuntimeError):
                    writer.transport.abort()
                self.writer = None
            if asyncio.get_running_loop().time() - connected_at > 1.0:
                delay = RECONNECT_MIN_S  # it worked for a while: reconnect at once
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)  # refused at once (not yet a member?)


class _InboundLink(asyncio.Protocol):
    """One connection a peer opened to send us messages: a handshake frame within
    HANDSHAKE_TIMEOUT_S, then messages, each handed to the core as soon as its frame is
    complete (a protocol, not a stream reader: no task switch per frame)."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.splitter = FrameSplitter(owner.limits.max_peer_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None
        self.src: str | None = None
        self.trusted = False
        self.info: dict[str, str] = {}
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        self.owner._inbound.add(self)
        self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S,
                                                           self._handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        owner = self.owner
        owner._inbound.discard(self)
        self.transport = None
        if self.src is not None and owner._level_links.get(self.src) is self:
            # The member's link is gone: it may come back running another replikv, so its
            # feature level is unknown until its next link says.
            del owner._level_links[self.src]
            if owner.on_peer_level is not None:
                owner.on_peer_level(self.src, None)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _handshake_timeout(self) -> None:
        self.timer = None
        if self.src is None and self.transport is not None:
            self.owner.rejected_links += 1
            log.warning("dropping peer link from %s: no handshake within %.0f s", self.peername,
                        HANDSHAKE_TIMEOUT_S)
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        owner = self.owner
        try:
            for payload in self.splitter.feed(data):
                if self.src is None:
                    if not self._handshake(payload):
                        self.abort()
                        return
                    continue
                if self.src in owner.blocked:
                    owner.fault_dropped += 1
                    continue
                message = decode_message(payload)
                if getattr(message, "src", None) != self.src:
                    raise PeerProtocolError(f"message claims to come from "
                                            f"{getattr(message, 'src', None)!r} on "
                                            f"{self.src}'s link")
                if not self.trusted:
                    # What a peer says about itself (its client address, shown by ROLE and
                    # INFO) counts only once its link has carried a valid message.
                    self.trusted = True
                    owner._learned(self.src, self.info, self)
                owner.on_message(self.src, message)
                if self.transport is None:
                    return
        except PeerProtocolError as e:
            owner.rejected_links += 1
            log.warning("dropping peer link from %s%s: %s", self.peername,
                        f" ({self.src})" if self.src else "", e)
            self.abort()

    def _handshake(self, payload: bytes) -> bool:
        """Check the first frame; False (already logged and counted) to drop the link."""
        owner = self.owner
        self._stop_timer()
        version, cluster_id, src, dst, info = decode_handshake(payload)
        if version != PROTOCOL_VERSION:
            raise PeerProtocolError(f"peer speaks protocol version {version}, "
                                    f"we speak {PROTOCOL_VERSION}")
        if cluster_id == CLUSTER_ID_QUESTION:
            # A node about to join, started without --cluster-id and with an empty data dir,
            # asks which cluster this is. The id is no secret (/status and INFO show it); the
            # link carries nothing else.
            transport, self.transport = self.transport, None
            if transport is not None:
                transport.write(encode_cluster_id_answer(owner.cluster_id))
                transport.close()
            owner.cluster_id_answers += 1
            # Said once per asking node id, then only at debug level, as for unknown nodes.
            first = (src not in owner._told_cluster_id
                     and len(owner._told_cluster_id) < REMEMBERED_IDS_MAX)
            if first:
                owner._told_cluster_id.add(src)
            log.log(logging.INFO if first else logging.DEBUG, "told %s (%s) this cluster's id",
                    self.peername, src)
            return False
        if cluster_id != owner.cluster_id:
            # Most often a node joining after the membership changed: its default id is
            # derived from --peers, which no longer names the members the cluster began with.
            raise PeerProtocolError(f"peer {src!r} belongs to cluster {cluster_id!r}, we are "
                                    f"{owner.cluster_id!r}; a node joining a cluster must be "
                                    "started with its members' id (--cluster-id ID; a "
                                    "member's /status shows it as cluster_id)")
        if src not in owner.links:
            # Said once per node (a joining node retries until `replikv member add` adds it),
            # then only at debug level.
            first = (src not in owner._warned_unknown
                     and len(owner._warned_unknown) < REMEMBERED_IDS_MAX)
            if first:
                owner._warned_unknown.add(src)
            log.log(logging.WARNING if first else logging.DEBUG,
                    "dropping peer link from %s (%s): unknown node %r (members: %s); a "
                    "joining node is accepted once `replikv member add` adds it", self.peername,
                    src, src, ", ".join(sorted(owner.links)))
            owner.rejected_links += 1
            return False
        if dst != owner.node_id:
            self.src = src
            raise PeerProtocolError(f"peer {src} thinks it is talking to {dst!r}, "
                                    f"we are {owner.node_id!r}")
        proof = info.get(_PROOF_KEY, "")
        if owner.passwords and not any(check_handshake_proof(p, proof, cluster_id, src, dst)
                                       for p in owner.passwords):
            # Said once per node, as for unknown nodes: the peer retries several times a second.
            first = src not in owner._warned_auth and len(owner._warned_auth) < REMEMBERED_IDS_MAX
            if first:
                owner._warned_auth.add(src)
            log.log(logging.WARNING if first else logging.DEBUG,
                    "dropping peer link from %s (%s): it did not prove that it knows this "
                    "cluster's password (%s); every member needs the same requirepass",
                    self.peername, src,
                    "it sent no proof" if _PROOF_KEY not in info else "wrong password")
            owner.rejected_links += 1
            return False
        owner._warned_auth.discard(src)
        self.src = src
        try:
            level = parse_advertised(info)
        except ValueError as e:
            raise PeerProtocolError(f"peer {src}: {e}") from None
        self.info = _valid_info(info)
        self.info[HANDSHAKE_KEY] = str(level)
        if owner.passwords:
            # The proof shows a member sent this: what it says about itself counts at once
            # (without a password it waits for a valid message, see data_received).
            self.trusted = True
            owner._learned(src, self.info, self)
        return True


class PeerTransport:
    def __init__(self, *, node_id: str, cluster_id: str, peers: dict[str, Address],
                 limits: Limits, on_message: Callable[[str, object], None],
                 advertised: dict[str, str] | None = None, passwords: tuple[bytes, ...] = (),
                 tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
                 on_peer_level: Callable[[str, int | None], None] | None = None) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        # The cluster's passwords (NodeView.passwords): links prove they know the first
        # (handshake_proof), and a proof made with any of them is accepted; () for none.
        self.passwords = passwords
        # (accepting, connecting) contexts for mutual TLS (replikv.tls.peer_contexts), or None.
        self.tls_accepting: ssl.SSLContext | None = tls[0] if tls is not None else None
        self.tls_connecting: ssl.SSLContext | None = tls[1] if tls is not None else None
        self.limits = limits
        self.on_message = on_message
        # What this node tells peers about itself in the handshake (client address etc., and
        # the feature level this replikv can apply: replikv.features).
        self.advertised = {**(advertised or {}), HANDSHAKE_KEY: str(FEATURE_LEVEL)}
        # Told each member's feature level once its link is trusted (see _learned), and None
        # when that link closes; the link that told, per member.
        self.on_peer_level = on_peer_level
        self._level_links: dict[str, _InboundLink] = {}
        # What peers told us about themselves.
        self.peer_info: dict[str, dict[str, Any]] = {}
        self.links = {p: _OutboundLink(self, p, a) for p, a in peers.items() if p != node_id}
        self.server: asyncio.base_events.Server | None = None
        self.rejected_links = 0
        self.cluster_id_answers = 0  # questions from joining nodes answered (see _handshake)
        # Nodes we refused as unknown and said so (a joining node retries until it is added:
        # one warning, not one per attempt).
        self._warned_unknown: set[str] = set()
        self._told_cluster_id: set[str] = set()  # nodes that asked for the cluster id
        self._warned_auth: set[str] = set()  # nodes refused for want of the password
        self._inbound: set[_InboundLink] = set()
        # Fault injection (the playground; see set_faults): peers whose messages are dropped
        # both ways, and a delay added to everything this node sends.
        self.blocked: frozenset[str] = frozenset()
        self.delay_s = 0.0
        self.fault_dropped = 0

    async def start(self, listen: Address) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _InboundLink(self), listen.host, listen.port, reuse_address=True,
            ssl=self.tls_accepting, ssl_handshake_timeout=handshake_timeout(self.tls_accepting))
        for link in self.links.values():
            link.task = asyncio.create_task(link.run(), name=f"peer-out-{link.peer}")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = [link.task for link in self.links.values() if link.task]
        for t in tasks:
            t.cancel()
        for inbound in list(self._inbound):
            inbound.abort()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _learned(self, src: str, info: dict[str, str], link: _InboundLink) -> None:
        """A member's self-description from a trusted link: its addresses, and its feature
        level for the node core (forgotten when that link closes)."""
        self.peer_info[src] = info
        self._level_links[src] = link
        if self.on_peer_level is not None:
            self.on_peer_level(src, int(info[HANDSHAKE_KEY]))

    def ensure_peer(self, peer: str, address: Address) -> None:
        """Keep a link to `peer` at `address` (a member added at runtime, or one that moved)."""
        if peer == self.node_id:
            return
        link = self.links.get(peer)
        self._warned_unknown.discard(peer)
        if link is None:
            link = self.links[peer] = _OutboundLink(self, peer, address)
            if self.server is not None:
                link.task = asyncio.create_task(link.run(), name=f"peer-out-{peer}")
            log.info("new member %s at %s", peer, address)
        elif link.address != address:
            link.address = address  # used from the next connection attempt on
            log.info("member %s moved to %s", peer, address)

    def send(self, to: str, message: object) -> bool:
        """Queue a message; False when it certainly was not sent (no link to that peer)."""
        link = self.links.get(to)
        if link is None:
            return False
        if self.blocked or self.delay_s:
            return self._send_with_faults(link, to, encode_message(message))
        return link.send(encode_message(message))

    def set_faults(self, blocked: frozenset[str], delay_s: float) -> None:
        """Injected faults: drop every message to and from `blocked` peers (a partition, as
        seen from this node), and hold every message this node sends for `delay_s` (a slow
        link). Empty and 0.0 heal."""
        self.blocked = frozenset(blocked)
        self.delay_s = max(0.0, delay_s)

    def _send_with_faults(self, link: _OutboundLink, to: str, frame: bytes) -> bool:
        if to in self.blocked:
            self.fault_dropped += 1
            return True  # lost on the way, as a partition loses it: the sender cannot tell
        if self.delay_s and link.loop is not None:
            link.loop.call_later(self.delay_s, link.send, frame)
            return True
        return link.send(frame)

    def flush(self) -> None:
        """Write what is queued on every link now, not at the end of this loop iteration (the
        leader's AppendEntries must be on the wire before it blocks in its own fsync)."""
        for link in self.links.values():
            if link.queue:
                link._flush()

    def is_connected(self, peer: str) -> bool:
        link = self.links.get(peer)
        return link is not None and link.connected


# The handshake's info field that carries the password proof: "<nonce hex>:<HMAC hex>".
_PROOF_KEY = "auth"
_PROOF_NONCE_BYTES = 16
_PROOF_CONTEXT = b"replikv peer handshake v1"


def _proof_mac(password: bytes, nonce: bytes, cluster_id: str, src: str, dst: str) -> bytes:
    message = b"\0".join((_PROOF_CONTEXT, cluster_id.encode(), src.encode(), dst.encode(),
                          nonce))
    return hmac.new(password, message, hashlib.sha256).digest()


def handshake_proof(password: bytes, cluster_id: str, src: str, dst: str,
                    nonce: bytes | None = None) -> str:
    """What `src` sends `dst` to show it knows the cluster's password, without sending it."""
    nonce = os.urandom(_PROOF_NONCE_BYTES) if nonce is None else nonce
    return f"{nonce.hex()}:{_proof_mac(password, nonce, cluster_id, src, dst).hex()}"


def check_handshake_proof(password: bytes, proof: str, cluster_id: str, src: str,
                          dst: str) -> bool:
    """Whether `proof` (from a handshake's info) was made with `password` for this link."""
    nonce_hex, sep, mac_hex = proof.partition(":")
    try:
        nonce, mac = bytes.fromhex(nonce_hex), bytes.fromhex(mac_hex)
    except ValueError:
        return False
    if not sep or len(nonce) != _PROOF_NONCE_BYTES:
        return False
    return hmac.compare_digest(mac, _proof_mac(password, nonce, cluster_id, src, dst))


def _valid_info(info: dict[str, str]) -> dict[str, str]:
    # (The feature level, checked by parse_advertised, is added by the caller.)
    """Keep only well-formed HOST:PORT addresses from a peer's self-description."""
    out = {}
    for key in ("client", "admin"):
        value = info.get(key, "")
        host, sep, port = value.rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536 and len(value) <= 255:
            out[key] = value
    return out


# -- a joining node learns the cluster's id ---------------------------------------------------

ASK_TIMEOUT_S = 1.0  # one question to one member
_ANSWER_MAX_BYTES = 1024


async def ask_cluster_id(address: Address, node_id: str, peer: str,
                         timeout_s: float = ASK_TIMEOUT_S,
                         tls: ssl.SSLContext | None = None) -> str | None:
    """The cluster id the member `peer` at `address` answers with; None if it cannot be reached,
    does not answer in time, or answers with anything but a cluster id (an older version closes
    the link instead)."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                address.host, address.port, ssl=tls, ssl_handshake_timeout=handshake_timeout(tls))
            writer.write(encode_handshake(CLUSTER_ID_QUESTION, node_id, peer))
            header = await reader.readexactly(FRAME_HEADER.size)
            (length,) = FRAME_HEADER.unpack(header)
            if length > _ANSWER_MAX_BYTES:
                return None
            return decode_cluster_id_answer(await reader.readexactly(length))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, PeerProtocolError):
        return None
    finally:
        if writer is not None:
            writer.transport.abort()


async def learn_cluster_id(node_id: str, peers: dict[str, Address], *,
                           timeout_s: float, tls: ssl.SSLContext | None = None
                           ) -> dict[str, str]:
    """Ask every peer in `peers` but this node which cluster it belongs to, in rounds, until at
    least one has answered or `timeout_s` has passed; {peer: cluster id} of the answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    others = {p: a for p, a in peers.items() if p != node_id}
    while others:
        ids = list(others)
        found = await asyncio.gather(*(ask_cluster_id(others[p], node_id, p, tls=tls)
                                       for p in ids))
        answers = {p: cluster_id for p, cluster_id in zip(ids, found, strict=True) if cluster_id}
        if answers or loop.time() >= deadline:
            return answers
        await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
    return {}
