"""Peer wire format: length-prefixed msgpack frames, validated field by field.

A frame is a 4-byte big-endian length followed by one msgpack value. The first frame a dialing
node sends is a handshake naming the protocol, the cluster id and both node ids; the listener
closes the link (and logs why) if any of them is wrong. A handshake with an empty cluster id is
a question from a node joining without --cluster-id: the listener answers with one frame,
`["replikv-peer", "cluster-id", id]`, and closes the link (the only frame it ever writes).
Every later frame is one message: `[kind, field, field, ...]` with the fields in dataclass
order.

Decoding trusts nothing: wrong kinds, lengths, types, negative numbers or oversized ids raise
PeerProtocolError, and the transport drops the link. A peer can therefore never crash a node
or reach the cores with a malformed message; whether the *values* make sense (terms, indexes)
is the consensus protocol's business.

Reply values inside ForwardReply (see replikv.replies) travel as msgpack values, with extension
types for the RESP types msgpack has no word for (simple strings, errors, null arrays, sets).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from replikv.concerns import options_from_fields
from replikv.node_messages import (
    ForwardReply,
    ForwardRequest,
    ReadIndexReply,
    ReadIndexRequest,
    WaitReply,
    WaitRequest,
)
from replikv.raft.membership import Membership, MembershipError, is_config_entry
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
from replikv.replies import DoubleText, ErrorReply, KeyedArrays, NullArray, PairArray, Status

PROTOCOL = "replikv-peer"
PROTOCOL_VERSION = 3
FRAME_HEADER = struct.Struct(">I")
MAX_ID_CHARS = 64
MAX_DEPTH = 32

_EXT_STATUS, _EXT_ERROR, _EXT_NULL_ARRAY, _EXT_SET, _EXT_PAIRS = 1, 2, 3, 4, 5
_EXT_KEYED = 6  # KeyedArrays: its keys and values alternating
_EXT_DOUBLE_TEXT = 7  # DoubleText: its text

# What msgpack raises on garbage: truncated or extra data, bad formats, too deep nesting
# (ValueError subclasses), unhashable map keys (TypeError), bad UTF-8 in str (ValueError).
_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


class PeerProtocolError(Exception):
    """A peer sent something that is not a valid replikv peer frame."""


# -- message kinds ---------------------------------------------------------------------------

_KINDS: dict[int, type] = {
    1: VoteRequest, 2: VoteResponse, 3: AppendRequest, 4: AppendResponse, 5: TimeoutNow,
    6: InstallSnapshot, 7: InstallSnapshotResponse,
    20: ForwardRequest, 21: ForwardReply, 22: ReadIndexRequest, 23: ReadIndexReply,
    24: WaitRequest, 25: WaitReply,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def encode_message(message: object) -> bytes:
    """One message as a complete frame (header included)."""
    cls = type(message)
    m: Any = message  # one of the kinds below, dispatched on its exact class
    if cls is AppendRequest:
        body = [3, m.term, m.src, m.prev_index, m.prev_term,
                [[e.index, e.term, e.data] for e in m.entries], m.commit, m.seq, m.lease]
    elif cls is AppendResponse:
        body = [4, m.term, m.src, m.success, m.index, m.hint_index, m.hint_term, m.seq]
    elif cls is VoteRequest:
        body = [1, m.term, m.src, m.last_log_index, m.last_log_term, m.pre_vote, m.transfer]
    elif cls is VoteResponse:
        body = [2, m.term, m.src, m.granted, m.pre_vote]
    elif cls is TimeoutNow:
        body = [5, m.term, m.src]
    elif cls is InstallSnapshot:
        body = [6, m.term, m.src, m.index, m.snap_term, m.size, m.offset, m.length, m.data]
    elif cls is InstallSnapshotResponse:
        body = [7, m.term, m.src, m.index, m.snap_term, m.offset]
    elif cls is ForwardRequest:
        body = [20, m.src, m.req_id, list(m.argv), m.options.as_fields(), m.is_read]
    elif cls is ForwardReply:
        body = [21, m.src, m.req_id, _reply_to_wire(m.result, 0), m.not_leader, m.index]
    elif cls is ReadIndexRequest:
        body = [22, m.src, m.req_id, m.lease]
    elif cls is ReadIndexReply:
        body = [23, m.src, m.req_id, m.index]
    elif cls is WaitRequest:
        body = [24, m.src, m.req_id, m.index, m.replicas, m.timeout_ms]
    elif cls is WaitReply:
        body = [25, m.src, m.req_id, m.count]
    else:
        raise TypeError(f"not a peer message: {cls.__name__}")
    data = msgpack.packb(body, use_bin_type=True)
    return FRAME_HEADER.pack(len(data)) + data


def decode_message(payload: bytes) -> object:
    """A frame's payload (without header) back into a message; PeerProtocolError if invalid."""
    try:
        body = msgpack.unpackb(payload, use_list=True, raw=False, ext_hook=_ext_hook,
                               strict_map_key=False)
    except PeerProtocolError:
        raise
    except _UNPACK_ERRORS as e:
        raise PeerProtocolError(f"undecodable frame: {e.__class__.__name__}: {e}") from None
    if not isinstance(body, list) or not body or type(body[0]) is not int:
        raise PeerProtocolError("frame is not a [kind, ...] list")
    kind = body[0]
    f = body[1:]
    if kind == 3:
        _expect(f, 8, "AppendRequest")
        entries_raw = f[4]
        if not isinstance(entries_raw, list):
            raise PeerProtocolError("AppendRequest.entries is not a list")
        entries = []
        prev = _nat(f[2], "prev_index")
        for i, raw in enumerate(entries_raw):
            if not (isinstance(raw, list) and len(raw) == 3 and type(raw[2]) is bytes):
                raise PeerProtocolError("malformed entry")
            index, term = _nat(raw[0], "entry index"), _nat(raw[1], "entry term")
            if index != prev + 1 + i or term == 0:
                raise PeerProtocolError("entries not contiguous after prev_index")
            if is_config_entry(raw[2]):
                try:
                    Membership.decode(raw[2])
                except MembershipError as exc:
                    raise PeerProtocolError(f"bad membership entry {index}: {exc}") from None
            entries.append(Entry(index, term, raw[2]))
        return AppendRequest(_nat(f[0], "term"), _id(f[1]), prev, _nat(f[3], "prev_term"),
                             tuple(entries), _nat(f[5], "commit"), _nat(f[6], "seq"),
                             _bool(f[7]))
    if kind == 4:
        _expect(f, 7, "AppendResponse")
        return AppendResponse(_nat(f[0], "term"), _id(f[1]), _bool(f[2]), _nat(f[3], "index"),
                              _nat(f[4], "hint_index"), _nat(f[5], "hint_term"),
                              _nat(f[6], "seq"))
    if kind == 1:
        _expect(f, 6, "VoteRequest")
        return VoteRequest(_nat(f[0], "term"), _id(f[1]), _nat(f[2], "last_log_index"),
                           _nat(f[3], "last_log_term"), _bool(f[4]), _bool(f[5]))
    if kind == 2:
        _expect(f, 4, "VoteResponse")
        return VoteResponse(_nat(f[0], "term"), _id(f[1]), _bool(f[2]), _bool(f[3]))
    if kind == 5:
        _expect(f, 2, "TimeoutNow")
        return TimeoutNow(_nat(f[0], "term"), _id(f[1]))
    if kind == 6:
        _expect(f, 8, "InstallSnapshot")
        size, offset, length = _nat(f[4], "size"), _nat(f[5], "offset"), _nat(f[6], "length")
        data = f[7]
        if type(data) is not bytes or len(data) > length or offset + len(data) > size:
            raise PeerProtocolError("InstallSnapshot chunk does not fit its offset and size")
        return InstallSnapshot(_nat(f[0], "term"), _id(f[1]), _nat(f[2], "index"),
                               _nat(f[3], "snap_term"), size, offset, length, data)
    if kind == 7:
        _expect(f, 5, "InstallSnapshotResponse")
        return InstallSnapshotResponse(_nat(f[0], "term"), _id(f[1]), _nat(f[2], "index"),
                                       _nat(f[3], "snap_term"), _nat(f[4], "offset"))
    if kind == 20:
        _expect(f, 5, "ForwardRequest")
        argv = f[2]
        if not (isinstance(argv, list) and argv and all(type(a) is bytes for a in argv)):
            raise PeerProtocolError("ForwardRequest.argv is not a list of bytes")
        try:
            options = options_from_fields(f[3])
        except ValueError as e:
            raise PeerProtocolError(f"ForwardRequest.options: {e}") from None
        return ForwardRequest(_id(f[0]), _nat(f[1], "req_id"), tuple(argv), options,
                              _bool(f[4]))
    if kind == 21:
        _expect(f, 5, "ForwardReply")
        _check_reply(f[2], 0)
        return ForwardReply(_id(f[0]), _nat(f[1], "req_id"), f[2], _bool(f[3]),
                            _nat(f[4], "index"))
    if kind == 22:
        _expect(f, 3, "ReadIndexRequest")
        return ReadIndexRequest(_id(f[0]), _nat(f[1], "req_id"), _bool(f[2]))
    if kind == 23:
        _expect(f, 3, "ReadIndexReply")
        read_index = None if f[2] is None else _nat(f[2], "index")
        return ReadIndexReply(_id(f[0]), _nat(f[1], "req_id"), read_index)
    if kind == 24:
        _expect(f, 5, "WaitRequest")
        return WaitRequest(_id(f[0]), _nat(f[1], "req_id"), _nat(f[2], "index"),
                           _nat(f[3], "replicas"), _nat(f[4], "timeout_ms"))
    if kind == 25:
        _expect(f, 3, "WaitReply")
        count = None if f[2] is None else _nat(f[2], "count")
        return WaitReply(_id(f[0]), _nat(f[1], "req_id"), count)
    raise PeerProtocolError(f"unknown message kind {kind}")


# -- handshake -------------------------------------------------------------------------------

def encode_handshake(cluster_id: str, src: str, dst: str,
                     info: dict[str, str] | None = None) -> bytes:
    """`info` advertises the sender's other addresses, e.g. {"client": "127.0.0.1:7001"}."""
    data = msgpack.packb([PROTOCOL, PROTOCOL_VERSION, cluster_id, src, dst, info or {}],
                         use_bin_type=True)
    return FRAME_HEADER.pack(len(data)) + data


def decode_handshake(payload: bytes) -> tuple[int, str, str, str, dict[str, str]]:
    """(version, cluster_id, src, dst, info) or PeerProtocolError."""
    try:
        body = msgpack.unpackb(payload, use_list=True, raw=False)
    except _UNPACK_ERRORS as e:
        raise PeerProtocolError(f"undecodable handshake: {e}") from None
    if not (isinstance(body, list) and len(body) == 6 and body[0] == PROTOCOL):
        raise PeerProtocolError("not a replikv peer handshake")
    version = body[1]
    if type(version) is not int:
        raise PeerProtocolError("bad handshake version")
    if not isinstance(body[2], str) or len(body[2]) > MAX_CLUSTER_ID_CHARS:
        raise PeerProtocolError("bad cluster id")
    info = body[5]
    if not (isinstance(info, dict) and len(info) <= 16 and all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 512
            for k, v in info.items())):
        raise PeerProtocolError("bad handshake info")
    return version, body[2], _id(body[3]), _id(body[4]), info


# A handshake with an empty cluster id asks which cluster the listener belongs to (a node
# joining without --cluster-id); the answer is the only frame a listener ever writes back.
CLUSTER_ID_QUESTION = ""
_CLUSTER_ID_ANSWER = "cluster-id"
MAX_CLUSTER_ID_CHARS = 256


def encode_cluster_id_answer(cluster_id: str) -> bytes:
    data = msgpack.packb([PROTOCOL, _CLUSTER_ID_ANSWER, cluster_id], use_bin_type=True)
    return FRAME_HEADER.pack(len(data)) + data


def decode_cluster_id_answer(payload: bytes) -> str:
    """The cluster id a listener answered with, or PeerProtocolError."""
    try:
        body = msgpack.unpackb(payload, use_list=True, raw=False)
    except _UNPACK_ERRORS as e:
        raise PeerProtocolError(f"undecodable cluster id answer: {e}") from None
    if not (isinstance(body, list) and len(body) == 3 and body[0] == PROTOCOL
            and body[1] == _CLUSTER_ID_ANSWER):
        raise PeerProtocolError("not a replikv cluster id answer")
    cluster_id = body[2]
    if not isinstance(cluster_id, str) or not cluster_id or len(cluster_id) > MAX_CLUSTER_ID_CHARS:
        raise PeerProtocolError("bad cluster id")
    return cluster_id


# -- field checks ----------------------------------------------------------------------------

def _expect(fields: list, n: int, name: str) -> None:
    if len(fields) != n:
        raise PeerProtocolError(f"{name} has {len(fields)} fields, expected {n}")


def _nat(v: object, name: str) -> int:
    if type(v) is not int or v < 0 or v >= 1 << 63:
        raise PeerProtocolError(f"{name} is not a non-negative 63-bit integer: {v!r}"[:200])
    return v


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise PeerProtocolError(f"expected a boolean, got {type(v).__name__}")
    return v


def _id(v: object) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_ID_CHARS:
        raise PeerProtocolError("bad node id")
    return v


# -- reply values ----------------------------------------------------------------------------

def _reply_to_wire(v: Any, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise ValueError("reply nested too deeply")
    t = type(v)
    if t is bytes or t is int or v is None or t is bool or t is float:
        return v
    if t is Status:
        return msgpack.ExtType(_EXT_STATUS, str(v).encode())
    if t is ErrorReply:
        return msgpack.ExtType(_EXT_ERROR, v.message.encode())
    if v is NullArray:
        return msgpack.ExtType(_EXT_NULL_ARRAY, b"")
    if t is str:
        return v
    if t is list or t is tuple:
        return [_reply_to_wire(x, depth + 1) for x in v]
    if t is dict:
        return {_reply_to_wire(k, depth + 1): _reply_to_wire(x, depth + 1) for k, x in v.items()}
    if t is set or t is frozenset:
        items = [_reply_to_wire(x, depth + 1) for x in v]
        return msgpack.ExtType(_EXT_SET, msgpack.packb(items, use_bin_type=True))
    if t is PairArray:
        items = [_reply_to_wire(x, depth + 1) for x in v]
        return msgpack.ExtType(_EXT_PAIRS, msgpack.packb(items, use_bin_type=True))
    if t is KeyedArrays:
        items = [_reply_to_wire(x, depth + 1) for x in v]
        return msgpack.ExtType(_EXT_KEYED, msgpack.packb(items, use_bin_type=True))
    if t is DoubleText:
        return msgpack.ExtType(_EXT_DOUBLE_TEXT, bytes(v))
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise TypeError(f"not a reply value: {t.__name__}")


def _unpack_pairs(data: bytes, what: str) -> list:
    """The items of a PairArray or KeyedArrays extension: a list of an even length."""
    try:
        items = msgpack.unpackb(data, use_list=True, raw=False, ext_hook=_ext_hook,
                                strict_map_key=False)
    except PeerProtocolError:
        raise
    except _UNPACK_ERRORS as e:
        raise PeerProtocolError(f"bad {what}: {e}") from None
    if not isinstance(items, list) or len(items) % 2:
        raise PeerProtocolError(f"bad {what}")
    return items


def _ext_hook(code: int, data: bytes) -> object:
    if code == _EXT_STATUS:
        text = data.decode("utf-8", "replace")
        if "\r" in text or "\n" in text:
            raise PeerProtocolError("simple string with a line break")
        return Status(text)
    if code == _EXT_ERROR:
        return ErrorReply(data.decode("utf-8", "replace"))
    if code == _EXT_NULL_ARRAY:
        return NullArray
    if code == _EXT_SET:
        try:
            items = msgpack.unpackb(data, use_list=True, raw=False, ext_hook=_ext_hook)
        except PeerProtocolError:
            raise
        except _UNPACK_ERRORS as e:
            raise PeerProtocolError(f"bad set value: {e}") from None
        if not isinstance(items, list):
            raise PeerProtocolError("bad set value")
        try:
            return frozenset(items)
        except TypeError:
            raise PeerProtocolError("unhashable set member") from None
    if code == _EXT_PAIRS:
        return PairArray(_unpack_pairs(data, "pair array"))
    if code == _EXT_KEYED:
        return KeyedArrays(_unpack_pairs(data, "keyed arrays"))
    if code == _EXT_DOUBLE_TEXT:
        return DoubleText(data)
    raise PeerProtocolError(f"unknown extension type {code}")


def _check_reply(v: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PeerProtocolError("reply nested too deeply")
    if isinstance(v, list):
        for x in v:
            _check_reply(x, depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_reply(k, depth + 1)
            _check_reply(x, depth + 1)
