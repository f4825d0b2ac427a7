"""Peer links: one outbound TCP connection per peer for what we send, inbound ones for what
peers send us.

Sending never blocks the caller: a message is encoded and queued on the peer's link. While a
link is down its messages are dropped, not queued — Raft retransmits what matters (heartbeats
carry the consistency check; a lost forward times out as UNKNOWN), and stale messages delivered
late would only be noise. The queue of one live link is bounded in bytes
(`max_peer_send_queue_bytes`); past that the link is reset, which the leader's flow control
then handles like any other loss.

The first frame on every connection is a handshake (see replikv.wire). Inbound links whose
handshake names another cluster, an unknown node, or not us are closed and logged; so are links
that send a frame that does not decode, is larger than `max_peer_frame_bytes`, or claims to
come from a node other than the one that shook hands. None of that reaches the cores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from replikv.config import Address
from replikv.limits import Limits
from replikv.wire import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    PeerProtocolError,
    decode_handshake,
    decode_message,
    encode_handshake,
    encode_message,
)

log = logging.getLogger("replikv.peers")

HANDSHAKE_TIMEOUT_S = 5.0
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 0.25  # a restarted peer is reached within this
_DRAIN_ABOVE_BYTES = 1 << 20


class _OutboundLink:
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
        self.wakeup.set()
        return True

    def _reset(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        self.connected = False
        if self.writer is not None:
            self.writer.transport.abort()

    async def run(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.address.host,
                                                               self.address.port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            connected_at = asyncio.get_running_loop().time()
            self.writer = writer
            try:
                writer.write(encode_handshake(self.transport.cluster_id, self.transport.node_id,
                                              self.peer, self.transport.advertised))
                self.connected = True
                log.info("connected to peer %s at %s", self.peer, self.address)
                # The peer never writes on this connection; reading tells us when it closes.
                closed = asyncio.ensure_future(reader.read(1))
                while not closed.done():
                    if not self.queue:
                        self.wakeup.clear()
                        waiter = asyncio.ensure_future(self.wakeup.wait())
                        await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        continue
                    frames, self.queue = self.queue, []
                    self.queued_bytes = 0
                    writer.writelines(frames)
                    if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES:
                        await writer.drain()
                closed.cancel()
            except (OSError, ConnectionError):
                pass
            finally:
                if self.connected:
                    log.info("lost connection to peer %s", self.peer)
                self.connected = False
                self.queue.clear()
                self.queued_bytes = 0
                writer.transport.abort()
                self.writer = None
            if asyncio.get_running_loop().time() - connected_at > 1.0:
                delay = RECONNECT_MIN_S  # it worked for a while: reconnect at once
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)  # refused at once (not yet a member?)


class PeerTransport:
    def __init__(self, *, node_id: str, cluster_id: str, peers: dict[str, Address],
                 limits: Limits, on_message: Callable[[str, object], None],
                 advertised: dict[str, str] | None = None) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.limits = limits
        self.on_message = on_message
        # What this node tells peers about itself in the handshake (client address etc.).
        self.advertised = advertised or {}
        # What peers told us about themselves.
        self.peer_info: dict[str, dict[str, Any]] = {}
        self.links = {p: _OutboundLink(self, p, a) for p, a in peers.items() if p != node_id}
        self.server: asyncio.base_events.Server | None = None
        self.rejected_links = 0
        # Nodes we refused as unknown and said so (a joining node retries until it is added:
        # one warning, not one per attempt).
        self._warned_unknown: set[str] = set()
        self._inbound: set[asyncio.Task] = set()
        self._inbound_writers: set[asyncio.StreamWriter] = set()

    async def start(self, listen: Address) -> None:
        self.server = await asyncio.start_server(self._serve_inbound, listen.host, listen.port,
                                                 reuse_address=True)
        for link in self.links.values():
            link.task = asyncio.create_task(link.run(), name=f"peer-out-{link.peer}")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = [link.task for link in self.links.values() if link.task]
        for t in tasks:
            t.cancel()
        # Inbound handlers end on their own once their connection is aborted (cancelling
        # them would make asyncio's stream callback log the CancelledError).
        for writer in list(self._inbound_writers):
            writer.transport.abort()
        await asyncio.gather(*tasks, *self._inbound, return_exceptions=True)

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
        return link is not None and link.send(encode_message(message))

    def is_connected(self, peer: str) -> bool:
        link = self.links.get(peer)
        return link is not None and link.connected

    async def _serve_inbound(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inbound.add(task)
        self._inbound_writers.add(writer)
        peername = writer.get_extra_info("peername")
        src = None
        try:
            payload = await asyncio.wait_for(self._read_frame(reader), HANDSHAKE_TIMEOUT_S)
            version, cluster_id, src, dst, info = decode_handshake(payload)
            if version != PROTOCOL_VERSION:
                raise PeerProtocolError(f"peer speaks protocol version {version}, "
                                        f"we speak {PROTOCOL_VERSION}")
            if cluster_id != self.cluster_id:
                raise PeerProtocolError(f"peer belongs to cluster {cluster_id!r}, "
                                        f"we are {self.cluster_id!r}")
            if src not in self.links:
                # Said once per node (a joining node retries until `replikv member add`
                # adds it), then only at debug level.
                first = src not in self._warned_unknown and len(self._warned_unknown) < 1024
                self._warned_unknown.add(src)
                log.log(logging.WARNING if first else logging.DEBUG,
                        "dropping peer link from %s (%s): unknown node %r (members: %s); a "
                        "joining node is accepted once `replikv member add` adds it", peername,
                        src, src, ", ".join(sorted(self.links)))
                self.rejected_links += 1
                return
            if dst != self.node_id:
                raise PeerProtocolError(f"peer {src} thinks it is talking to {dst!r}, "
                                        f"we are {self.node_id!r}")
            info = _valid_info(info)
            trusted = False
            while True:
                payload = await self._read_frame(reader)
                message = decode_message(payload)
                if getattr(message, "src", None) != src:
                    raise PeerProtocolError(f"message claims to come from "
                                            f"{getattr(message, 'src', None)!r} on {src}'s link")
                if not trusted:
                    # What a peer says about itself (its client address, shown by ROLE and
                    # INFO) counts only once its link has carried a valid message.
                    trusted = True
                    self.peer_info[src] = info
                self.on_message(src, message)
        except PeerProtocolError as e:
            self.rejected_links += 1
            log.warning("dropping peer link from %s%s: %s", peername,
                        f" ({src})" if src else "", e)
        except TimeoutError:
            self.rejected_links += 1
            log.warning("dropping peer link from %s: no handshake within %.0f s", peername,
                        HANDSHAKE_TIMEOUT_S)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._inbound_writers.discard(writer)
            if task is not None:
                self._inbound.discard(task)

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes:
        header = await reader.readexactly(FRAME_HEADER.size)
        (length,) = FRAME_HEADER.unpack(header)
        if length > self.limits.max_peer_frame_bytes:
            raise PeerProtocolError(f"frame of {length} bytes is over the limit of "
                                    f"{self.limits.max_peer_frame_bytes}")
        return await reader.readexactly(length)


def _valid_info(info: dict[str, str]) -> dict[str, str]:
    """Keep only well-formed HOST:PORT addresses from a peer's self-description."""
    out = {}
    for key in ("client", "admin"):
        value = info.get(key, "")
        host, sep, port = value.rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536 and len(value) <= 255:
            out[key] = value
    return out
