"""Peer frames: every message round-trips; anything else is a PeerProtocolError, never a crash."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.concerns import RequestOptions
from replikv.node_messages import (
    ForwardReply,
    ForwardRequest,
    ReadIndexReply,
    ReadIndexRequest,
    WaitReply,
    WaitRequest,
)
from replikv.raft.membership import Membership
from replikv.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from replikv.replies import OK, ErrorReply, NullArray, PairArray, Status
from replikv.wire import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    PeerProtocolError,
    decode_handshake,
    decode_message,
    encode_handshake,
    encode_message,
)

MESSAGES = [
    VoteRequest(3, "n1", 10, 2, pre_vote=True, transfer=False),
    VoteResponse(3, "n2", True, pre_vote=True),
    AppendRequest(4, "n1", 9, 3, (Entry(10, 4, b""), Entry(11, 4, b"\x00data")), 8, seq=7),
    AppendRequest(4, "n1", 0, 0, (), 0),
    AppendRequest(4, "n1", 0, 0, (), 3, seq=2, lease=True),
    AppendResponse(4, "n3", False, 9, hint_index=5, hint_term=2, seq=7),
    TimeoutNow(5, "n1"),
    AppendRequest(4, "n1", 9, 3, (Entry(10, 4, Membership(("n1", "n2"), ("n3",)).encode()),), 8),
    InstallSnapshot(5, "n1", 120, 4, 1000, 0, 64, b"x" * 64),
    InstallSnapshot(5, "n1", 120, 4, 1000, 960, 64, b"y" * 40),
    InstallSnapshotResponse(5, "n3", 120, 4, 1000),
    ForwardRequest("n2", 17, (b"SET", b"k", b"\r\nv")),
    ForwardReply("n1", 17, OK),
    ForwardReply("n1", 18, ErrorReply("ERR boom")),
    ForwardReply("n1", 19, [b"a", None, 3, Status("QUEUED"), [NullArray, 1.5, True]]),
    ForwardReply("n1", 20, {b"k": b"v"}),
    ForwardReply("n1", 21, frozenset({b"a", b"b"})),
    ForwardReply("n1", 22, None, not_leader=True),
    ReadIndexRequest("n3", 5),
    ReadIndexRequest("n3", 6, lease=True),
    ReadIndexReply("n1", 5, 42),
    ReadIndexReply("n1", 6, None),
    ForwardRequest("n2", 18, (b"GET", b"k"), RequestOptions(
        w="all", wtimeout_ms=250, read_preference="nearest", read_consistency="local",
        max_staleness_ms=900), is_read=True),
    ForwardReply("n1", 23, OK, index=99),
    WaitRequest("n2", 24, 100, 2, 0),
    WaitReply("n1", 24, 2),
    WaitReply("n1", 25, None),
]


def payload(frame: bytes) -> bytes:
    (length,) = FRAME_HEADER.unpack(frame[:4])
    assert length == len(frame) - 4
    return frame[4:]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message):
    assert decode_message(payload(encode_message(message))) == message


def test_hash_replies_keep_their_order_and_type():
    # HGETALL's map in the hash's own order; HRANDFIELD WITHVALUES's pairs (RESP3 nests them).
    reply = ForwardReply("n1", 30, [{b"b": b"1", b"a": b"2"}, PairArray([b"f", b"v", b"f", b"v"])])
    back = decode_message(payload(encode_message(reply)))
    assert back == reply
    assert list(back.result[0]) == [b"b", b"a"]
    assert type(back.result[1]) is PairArray


def test_handshake_round_trips_and_rejects_other_protocols():
    frame = encode_handshake("c1", "n1", "n2", {"client": "127.0.0.1:7001"})
    assert decode_handshake(payload(frame)) == (PROTOCOL_VERSION, "c1", "n1", "n2",
                                                {"client": "127.0.0.1:7001"})
    for bad in [b"", b"\xc1", msgpack.packb(["http", 1, "c", "a", "b", {}]),
                msgpack.packb(["replikv-peer", "1", "c", "a", "b", {}]),
                msgpack.packb(["replikv-peer", 1, "c", "", "b", {}]),
                msgpack.packb(["replikv-peer", 1, "c", "a", "b", {"x": 1}])]:
        with pytest.raises(PeerProtocolError):
            decode_handshake(bad)


@pytest.mark.parametrize("body", [
    [],                                   # no kind
    ["3"],                                # kind not an int
    [99, 1],                              # unknown kind
    [3, 1, "n1", 0, 0, [], 0],            # AppendRequest missing a field
    [3, -1, "n1", 0, 0, [], 0, 0],        # negative term
    [3, 1, "n1", 0, 0, [[2, 1, b"x"]], 0, 0],   # entries not contiguous after prev_index
    [3, 1, "n1", 0, 0, [[1, 0, b"x"]], 0, 0],   # entry of term 0
    [3, 1, "n1", 0, 0, [[1, 1, "str"]], 0, 0],  # entry data not bytes
    [4, 1, "n1", 1, 0, 0, 0, 0],          # success not a bool
    [1, 1, "x" * 65, 0, 0, False, False],  # id too long
    [1, 2 ** 63, "n1", 0, 0, False, False],  # term out of range
    [20, "n1", 1, []],                    # empty argv
    [20, "n1", 1, ["SET"]],               # argv not bytes
    [23, "n1", 1, "5"],                   # index not an int
])
def test_malformed_messages_are_rejected(body):
    with pytest.raises(PeerProtocolError):
        decode_message(msgpack.packb(body, use_bin_type=True))


def test_unknown_extension_types_are_rejected():
    body = [21, "n1", 1, msgpack.ExtType(77, b"x"), False]
    with pytest.raises(PeerProtocolError):
        decode_message(msgpack.packb(body, use_bin_type=True))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_peer_protocol_error(data):
    try:
        decode_message(data)
    except PeerProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MESSAGES), st.integers(min_value=0), st.integers(0, 255))
def test_flipped_bytes_in_valid_frames_never_crash(message, position, value):
    data = bytearray(payload(encode_message(message)))
    data[position % len(data)] = value
    try:
        decode_message(bytes(data))
    except PeerProtocolError:
        pass


@pytest.mark.parametrize("body", [
    [6, 5, "n1", 120, 4, 100, 90, 64, b"y" * 20],  # runs past the snapshot's size
    [6, 5, "n1", 120, 4, 1000, 0, 8, b"y" * 9],  # more bytes than announced
    [6, 5, "n1", 120, 4, 1000, 0, 8, "text"],  # not bytes
    [7, 5, "n1", 120, 4, -1],  # negative offset
    [3, 4, "n1", 0, 0, [[1, 4, b"\xc1garbage"]], 0, 0, False],  # a broken membership entry
])
def test_bad_snapshot_and_membership_frames_are_refused(body):
    with pytest.raises(PeerProtocolError):
        decode_message(msgpack.packb(body, use_bin_type=True))
