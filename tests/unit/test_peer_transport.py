"""The peer transport: frames split from arbitrary chunks, messages sent in one write per
event-loop iteration, and links that break the protocol dropped before the core sees anything.
The links run over real loopback sockets; the core is a recording callback."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct

import pytest
import uvloop  # a runtime dependency of replikv, not a skip
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.config import Address
from replikv.limits import Limits
from replikv.raft.messages import AppendResponse, VoteRequest
from replikv.server.peer_transport import FrameSplitter, PeerTransport
from replikv.wire import (
    FRAME_HEADER,
    PeerProtocolError,
    encode_handshake,
    encode_message,
)

CLUSTER = "c1"


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


@given(payloads=st.lists(st.binary(max_size=300), max_size=20), seed=st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_frames_come_out_whole_however_the_bytes_are_cut(payloads, seed):
    stream = b"".join(frame(p) for p in payloads)
    rng = random.Random(seed)
    splitter = FrameSplitter(1000)
    out, pos = [], 0
    while pos < len(stream):
        step = rng.randint(1, 64)
        out += splitter.feed(stream[pos:pos + step])
        pos += step
    assert out == payloads
    assert splitter.buffered == 0


def test_a_partial_frame_stays_buffered_until_complete():
    splitter = FrameSplitter(100)
    data = frame(b"hello") + frame(b"world")
    assert splitter.feed(data[:7]) == []
    assert splitter.buffered == 7
    assert splitter.feed(data[7:12]) == [b"hello"]
    assert splitter.feed(data[12:]) == [b"world"]
    assert splitter.buffered == 0


def test_an_oversized_frame_is_refused_from_its_header_alone():
    splitter = FrameSplitter(100)
    assert splitter.feed(frame(b"x" * 100)) == [b"x" * 100]  # the limit itself is allowed
    with pytest.raises(PeerProtocolError, match="101 bytes is over the limit of 100"):
        splitter.feed(struct.pack(">I", 101))


# ---- links over loopback --------------------------------------------------------------------


def make_transport(node_id, port, peers, received):
    return PeerTransport(node_id=node_id, cluster_id=CLUSTER, limits=Limits(),
                         peers={p: Address("127.0.0.1", q) for p, q in peers.items()},
                         on_message=lambda src, m: received.append((src, m)))


async def wait_for(condition, timeout_s=5.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def free_port_pair():
    from replikv.local_cluster import free_ports
    return free_ports(2, "127.0.0.1")


@contextlib.asynccontextmanager
async def linked_pair(got_a, got_b):
    """Transports "a" and "b" on loopback, started, with a's link to b up; closed after."""
    pa, pb = free_port_pair()
    a = make_transport("a", pa, {"a": pa, "b": pb}, got_a)
    b = make_transport("b", pb, {"a": pa, "b": pb}, got_b)
    await a.start(Address("127.0.0.1", pa))
    await b.start(Address("127.0.0.1", pb))
    try:
        await wait_for(lambda: a.is_connected("b"))
        yield a, b
    finally:
        await a.close()
        await b.close()


def test_messages_queued_in_one_iteration_leave_in_one_write_and_arrive_in_order():
    async def main():
        got_b = []
        async with linked_pair([], got_b) as (a, _b):
            link = a.links["b"]
            writes = []
            real = link.writer.transport.writelines
            link.writer.transport.writelines = lambda frames: (writes.append(len(frames)),
                                                               real(frames))
            messages = [AppendResponse(term=3, src="a", success=True, index=i, seq=i)
                        for i in range(50)]
            for m in messages:
                assert a.send("b", m)
            await wait_for(lambda: len(got_b) == 50)
            assert writes == [50]
            assert got_b == [("a", m) for m in messages]
            assert not a.send("nobody", messages[0])
    asyncio.run(main())


async def raw_link(port, *frames, wait_s=2.0):
    """A hand-made inbound connection: send frames, return whether the node closed it within
    `wait_s`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for f in frames:
            writer.write(f)
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(1), wait_s)
        except TimeoutError:
            return False
        return data == b""
    finally:
        writer.close()


@pytest.mark.parametrize("case", ["foreign cluster", "unknown node", "wrong destination",
                                  "spoofed source", "garbage", "oversized"])
def test_a_link_that_breaks_the_protocol_is_dropped_and_nothing_reaches_the_core(case):
    async def main():
        pa, pb = free_port_pair()
        got = []
        limits = Limits()
        a = make_transport("a", pa, {"a": pa, "b": pb}, got)
        await a.start(Address("127.0.0.1", pa))
        good = encode_message(VoteRequest(term=1, src="b", last_log_index=0, last_log_term=0))
        hello = encode_handshake(CLUSTER, "b", "a", {})
        frames = {
            "foreign cluster": [encode_handshake("other", "b", "a", {}), good],
            "unknown node": [encode_handshake(CLUSTER, "zz", "a", {}), good],
            "wrong destination": [encode_handshake(CLUSTER, "b", "c", {}), good],
            "spoofed source": [hello, encode_message(VoteRequest(term=1, src="c",
                                                                 last_log_index=0,
                                                                 last_log_term=0))],
            "garbage": [hello, frame(b"\xc1\xc1\xc1")],
            "oversized": [hello, struct.pack(">I", limits.max_peer_frame_bytes + 1)],
        }[case]
        try:
            assert await raw_link(pa, *frames), "the node kept the link open"
            assert got == []
            assert a.rejected_links == 1
            # A well-behaved link still works afterwards.
            assert not await raw_link(pa, hello, good, wait_s=0.3)
            await wait_for(lambda: len(got) == 1)
            assert got[0][0] == "b"
        finally:
            await a.close()
    asyncio.run(main())


def test_a_link_whose_connection_broke_under_it_drops_the_batch_and_reconnects():
    """A peer killed with kill -9 resets the connection; until the link's task notices, the
    transport is closed while the link still counts as connected. Sending then must lose the
    messages like any broken link, not raise into the caller (the node's Ready loop)."""
    async def main():
        got_b = []
        async with linked_pair([], got_b) as (a, _b):
            link = a.links["b"]
            link.writer.transport.abort()  # closed under the link; connected is still True
            await asyncio.sleep(0)  # uvloop closes the handle; the link's task has not run yet
            assert link.connected
            message = AppendResponse(term=3, src="a", success=True, index=1, seq=1)
            assert a.send("b", message)
            a.flush()  # what the Ready loop does before its fsync: must not raise
            assert link.dropped_messages == 1 and not link.queue
            await wait_for(lambda: a.is_connected("b"))  # the task reconnected
            assert a.send("b", message)
            await wait_for(lambda: got_b == [("a", message)])
    uvloop.run(main())  # the nodes' loop: its closed handles raise, asyncio's do not


def test_what_a_node_remembers_of_unknown_and_asking_nodes_is_bounded(monkeypatch):
    # Each unknown node id is warned about once; so is each node asking for the cluster id.
    # Ids cost memory, so past REMEMBERED_IDS_MAX of them the node stops remembering (and logs
    # at debug level).
    monkeypatch.setattr("replikv.server.peer_transport.REMEMBERED_IDS_MAX", 20)

    async def main():
        pa, pb = free_port_pair()
        a = make_transport("a", pa, {"a": pa, "b": pb}, [])
        await a.start(Address("127.0.0.1", pa))
        try:
            for number in range(50):
                writer = (await asyncio.open_connection("127.0.0.1", pa))[1]
                writer.write(encode_handshake(CLUSTER, f"x{number}", "a", {}))
                writer.close()
                await wait_for(lambda n=number: a.rejected_links == n + 1)
                reader, writer = await asyncio.open_connection("127.0.0.1", pa)
                writer.write(encode_handshake("", f"q{number}", "a", {}))
                assert await reader.read() != b""  # the answer, then the close
                writer.close()
            assert a.cluster_id_answers == 50
            assert len(a._warned_unknown) == len(a._told_cluster_id) == 20
        finally:
            await a.close()
    asyncio.run(main())
