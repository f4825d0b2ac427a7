"""The replicated session table: exactly-once writes across failovers (retryable writes).

A client tags each write with a session id and a sequence number (`REPLIKV SESSION <id>`, then
`REPLIKV WITH SEQ <n> <write>`). The state machine remembers, per session, the last sequence
number applied and that write's reply. A write retried after a failover (its connection broke,
or it got TRYAGAIN / UNKNOWN) carries the same number again and is answered from the table
instead of being executed a second time, even an INCR. This is the Raft dissertation's §6.3
client session, and what MongoDB calls a retryable write.

The table is part of the replicated state, so it is pure and deterministic:
- no clock: every time is the log entry's leader time in ms, passed in;
- no iteration over Python sets or dicts of bytes in anything that decides state or output
  (bytes hashing differs between processes); order comes from sorting;
- changes are undone exactly, newest first: the leader records a write when it executes it,
  before the entry commits, and undoes it if it loses its leadership (see `record` / `undo`).

How the node core uses it (see node.py):

    check = table.lookup(session, seq, entry_time_ms)      # on the leader, before executing
    NEW        execute the write; put `table.pack_reply(reply)` in the log entry; then on the
               leader (ahead of the commit) and on every replica (at apply), in log order,
               `token = table.record_packed(session, seq, packed, entry_time_ms, index)`;
               undo(token) if the leader loses office before the entry commits
    DUPLICATE  do not execute: answer `check.reply` once the entry at `check.index` (the one
               that recorded it) has committed
    STALE      do not execute: answer `check.reply`, an error: the reply is gone

Bounds, all deterministic functions of the recorded history (see the constants below):
- a session idle for more than `ttl_ms` of log time (30 min) expires: a retry after that is
  treated as new. Clients retry within seconds, so this only bounds memory;
- at most `max_sessions` sessions (100,000); beyond that the least recently used one is evicted
  (oldest last-use time, ties broken by the session id's bytes);
- a reply is kept only if its encoding is at most `reply_bytes_max` (64 KiB). A larger one is
  stored as a marker with its size, and a retry of that write gets
  `-SESSIONREPLYLOST ... was applied, but its reply (N bytes) was larger than ...`: the write
  is not executed again, and the client learns it took effect (read the keys for its result);
- the kept replies together take at most `replies_bytes_max` (64 MiB); beyond that the least
  recently used sessions are evicted as above.

Reply values (see replikv.replies) have an exact, canonical msgpack-ready encoding here
(`reply_to_msgpack` / `reply_from_msgpack`): only ints, floats, bools, None, bytes and lists,
so it can sit inside a log entry as it is; set members are sorted by their encoding, so equal
replies encode to equal bytes in every process.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgpack

from replikv.invariants import InvariantViolation, invariant
from replikv.replies import DoubleText, ErrorReply, KeyedArrays, NullArray, PairArray, Status

SESSION_ID_BYTES_MAX = 64
SEQ_MAX = (1 << 63) - 1
SESSIONS_MAX = 100_000
SESSION_TTL_MS = 30 * 60 * 1000
SESSION_REPLY_BYTES_MAX = 64 * 1024
SESSION_REPLIES_BYTES_MAX = 64 * 1024 * 1024
# Nesting of a reply value (arrays in arrays); commands never come close.
REPLY_DEPTH_MAX = 32

_SNAPSHOT_FORMAT = "replikv-sessions"
_SNAPSHOT_VERSION = 1
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1
_TIME_MS_MAX = (1 << 63) - 1

# Tags of the reply encoding: [tag, ...] lists stand for everything msgpack has no word for.
_T_STR, _T_STATUS, _T_LIST, _T_TUPLE, _T_DICT, _T_SET, _T_FROZENSET = 0, 1, 2, 3, 4, 5, 6
_T_ERROR, _T_NULL_ARRAY, _T_BIGINT, _T_PAIRS = 7, 8, 9, 10
_T_KEYED = 11  # KeyedArrays (XREADGROUP's reply)
_T_DOUBLE_TEXT = 12  # DoubleText (GEOPOS's coordinates)
# A stored reply ("blob"): [1, encoded reply] when kept, [0, size in bytes] when too large.
_BLOB_TOO_LARGE, _BLOB_KEPT = 0, 1

_UNPACK_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
                  msgpack.UnpackException)


# -- validation ------------------------------------------------------------------------------

def check_session_id(session: object) -> bytes:
    """`session` if it is a valid session id (1..64 bytes); ValueError otherwise."""
    if type(session) is not bytes or not 1 <= len(session) <= SESSION_ID_BYTES_MAX:
        raise ValueError(f"a session id is 1..{SESSION_ID_BYTES_MAX} bytes")
    return session


def check_seq(seq: object) -> int:
    """`seq` if it is a valid sequence number (an int in 1..2**63-1); ValueError otherwise."""
    if type(seq) is not int or not 1 <= seq <= SEQ_MAX:
        raise ValueError(f"a sequence number is an integer in 1..{SEQ_MAX}")
    return seq


def parse_seq(raw: bytes) -> int:
    """A sequence number written in decimal digits (as a RESP argument); ValueError if not.

    Stricter than int(): no sign, spaces or underscores."""
    if not (raw.isdigit() and len(raw) <= 19 and raw.isascii()):
        raise ValueError(f"a sequence number is an integer in 1..{SEQ_MAX}")
    return check_seq(int(raw))


# -- the reply encoding ------------------------------------------------------------------------

def reply_to_msgpack(value: object) -> object:
    """A reply value as plain msgpack-ready values (ints, floats, bools, None, bytes, lists),
    exactly: `reply_from_msgpack` gives back an equal value of the same types (bytearray and
    memoryview come back as bytes). Canonical: equal replies give equal encodings, also sets.
    TypeError for a value that is not a reply value, ValueError for one that cannot be one
    (a simple string with a line break, nesting deeper than REPLY_DEPTH_MAX)."""
    return _encode(value, 0)


def _encode(v: Any, depth: int) -> object:
    if _is_plain(v, depth):
        return v
    t = type(v)
    if t is int:
        return [_T_BIGINT, str(v).encode()]  # beyond msgpack's integers
    if t is str:
        return [_T_STR, v.encode("utf-8", "surrogatepass")]
    if t is Status:
        if "\r" in v or "\n" in v:
            raise ValueError("a simple string cannot contain CR or LF")
        return [_T_STATUS, str(v).encode("utf-8", "surrogatepass")]
    if t is ErrorReply:
        if "\r" in v.message or "\n" in v.message:
            raise ValueError("an error reply cannot contain CR or LF")
        return [_T_ERROR, v.message.encode("utf-8", "surrogatepass")]
    if v is NullArray:
        return [_T_NULL_ARRAY]
    if t is list or t is tuple:
        return [_T_LIST if t is list else _T_TUPLE, *(_encode(x, depth + 1) for x in v)]
    if t is PairArray:
        return [_T_PAIRS, *(_encode(x, depth + 1) for x in v)]
    if t is KeyedArrays:
        return [_T_KEYED, *(_encode(x, depth + 1) for x in v)]
    if t is dict:
        out: list = [_T_DICT]
        for key, x in v.items():  # insertion order: the order the client sees
            out.append(_encode(key, depth + 1))
            out.append(_encode(x, depth + 1))
        return out
    if t is set or t is frozenset:
        items = [_encode(x, depth + 1) for x in v]
        items.sort(key=_pack)  # sets iterate in hash order, which differs between processes
        return [_T_SET if t is set else _T_FROZENSET, *items]
    if t is DoubleText:
        return [_T_DOUBLE_TEXT, bytes(v)]
    if t is bytearray or t is memoryview:
        return bytes(v)
    raise TypeError(f"not a reply value: {t.__name__}")


def _is_plain(v: Any, depth: int) -> bool:
    """Whether `v` is its own encoding (bytes, None, a bool, a float, an int msgpack holds);
    for both directions. ValueError if `depth` is beyond REPLY_DEPTH_MAX."""
    if depth > REPLY_DEPTH_MAX:
        raise ValueError(f"reply nested deeper than {REPLY_DEPTH_MAX}")
    t = type(v)
    return t is bytes or v is None or t is bool or t is float or \
        (t is int and _INT64_MIN <= v <= _UINT64_MAX)


def _pack(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def reply_from_msgpack(data: object) -> object:
    """The inverse of `reply_to_msgpack`, for values unpacked with msgpack (raw=False). Checks
    everything: ValueError for anything that `reply_to_msgpack` could not have produced."""
    return _decode(data, 0)


def _decode(v: Any, depth: int) -> object:
    if _is_plain(v, depth):
        return v
    t = type(v)
    if t is int:
        raise ValueError("integer out of range")
    if t is not list or not v or type(v[0]) is not int:
        raise ValueError(f"not an encoded reply value: {t.__name__}")
    tag, rest = v[0], v[1:]
    if tag in (_T_STR, _T_STATUS, _T_ERROR, _T_BIGINT):
        if len(rest) != 1 or type(rest[0]) is not bytes:
            raise ValueError("malformed string value")
        text = rest[0].decode("utf-8", "surrogatepass")
        if tag == _T_STR:
            return text
        if tag == _T_BIGINT:
            if not (text.lstrip("-").isdigit() and text.isascii() and len(text) <= 4300):
                raise ValueError("malformed big integer")
            n = int(text)
            if _INT64_MIN <= n <= _UINT64_MAX or str(n) != text:
                raise ValueError("big integer not in its canonical form")
            return n
        if "\r" in text or "\n" in text:
            raise ValueError("a simple string or error with a line break")
        return Status(text) if tag == _T_STATUS else ErrorReply(text)
    if tag == _T_DOUBLE_TEXT:
        if len(rest) != 1 or type(rest[0]) is not bytes:
            raise ValueError("malformed double text")
        return DoubleText(rest[0])
    if tag == _T_NULL_ARRAY:
        if rest:
            raise ValueError("malformed null array")
        return NullArray
    if tag == _T_LIST:
        return [_decode(x, depth + 1) for x in rest]
    if tag == _T_TUPLE:
        return tuple(_decode(x, depth + 1) for x in rest)
    if tag == _T_PAIRS:
        if len(rest) % 2:
            raise ValueError("a pair array with an odd number of items")
        return PairArray(_decode(x, depth + 1) for x in rest)
    if tag == _T_KEYED:
        if len(rest) % 2:
            raise ValueError("keyed arrays with an odd number of items")
        return KeyedArrays(_decode(x, depth + 1) for x in rest)
    if tag == _T_DICT:
        if len(rest) % 2:
            raise ValueError("a map with an odd number of items")
        out = {}
        for i in range(0, len(rest), 2):
            key = _decode(rest[i], depth + 1)
            if key in out:
                raise ValueError("a map with a repeated key")
            out[key] = _decode(rest[i + 1], depth + 1)
        return out
    if tag in (_T_SET, _T_FROZENSET):
        packed = [_pack(x) for x in rest]
        if any(a >= b for a, b in itertools.pairwise(packed)):
            raise ValueError("set members not in canonical order")
        members = [_decode(x, depth + 1) for x in rest]
        result = set(members) if tag == _T_SET else frozenset(members)
        if len(result) != len(members):
            raise ValueError("a set with a repeated member")
        return result
    raise ValueError(f"unknown reply tag {tag}")


# -- lookups ----------------------------------------------------------------------------------

class Verdict(Enum):
    NEW = "new"  # execute the write (unknown session, expired session, or a higher seq)
    DUPLICATE = "duplicate"  # already applied: answer with the remembered reply
    STALE = "stale"  # older than the session's last write: its reply is gone


@dataclass(frozen=True, slots=True)
class SessionCheck:
    verdict: Verdict
    # DUPLICATE: the reply to answer with (an ErrorReply if it was too large to keep);
    # STALE: the ErrorReply to answer with; NEW: None.
    reply: Any = None
    # DUPLICATE: the log index of the entry that recorded the write (0 if unknown). Answer only
    # once it has committed, as for the original.
    index: int = 0
    # The session's last applied sequence number (0 for an unknown or expired session).
    last_seq: int = 0

    @property
    def is_new(self) -> bool:
        return self.verdict is Verdict.NEW


NEW_CHECK = SessionCheck(Verdict.NEW)


def stale_error(seq: int, last_seq: int) -> ErrorReply:
    return ErrorReply(f"SESSIONSTALE sequence {seq} of this session was superseded by "
                      f"{last_seq}; its reply is no longer known")


def reply_lost_error(seq: int, size: int, limit: int) -> ErrorReply:
    return ErrorReply(f"SESSIONREPLYLOST sequence {seq} of this session was applied, but its "
                      f"reply ({size} bytes) was larger than the {limit} bytes a session keeps; "
                      f"read the keys to see its effect")


# -- the table -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Session:
    seq: int
    last_used_ms: int
    index: int
    blob: bytes  # msgpack [1, encoded reply] or [0, size]


@dataclass(frozen=True, slots=True)
class UndoToken:
    """What `record` changed; give it back to `undo` to revert exactly that (newest first)."""

    serial: int
    prev_serial: int
    session: bytes
    previous: _Session | None  # the session's entry before (None: it had none)
    removed: tuple[tuple[bytes, _Session], ...]  # sessions expired or evicted by the record


class SessionTable:
    """Per session: the last sequence number applied, its reply, its last-use time. Pure and
    deterministic; see the module docstring."""

    def __init__(self, *, max_sessions: int = SESSIONS_MAX, ttl_ms: int = SESSION_TTL_MS,
                 reply_bytes_max: int = SESSION_REPLY_BYTES_MAX,
                 replies_bytes_max: int = SESSION_REPLIES_BYTES_MAX) -> None:
        _check_limits(max_sessions, ttl_ms, reply_bytes_max, replies_bytes_max)
        self.max_sessions = max_sessions
        self.ttl_ms = ttl_ms
        self.reply_bytes_max = reply_bytes_max
        self.replies_bytes_max = replies_bytes_max
        self._sessions: dict[bytes, _Session] = {}
        # (last_used_ms, session) of every session, oldest first, plus stale pairs left by
        # later uses and removals (skipped when met; rebuilt when they pile up).
        self._by_age: list[tuple[int, bytes]] = []
        self._blob_bytes = 0  # sum of len(blob) over the sessions
        # Undo bookkeeping, not state: serial of the newest record not undone.
        self._serials = 0
        self._last_serial = 0

    # -- queries --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def reply_bytes(self) -> int:
        """Bytes of stored replies (what `replies_bytes_max` bounds)."""
        return self._blob_bytes

    def last_seq(self, session: bytes, time_ms: int) -> int:
        """The session's last applied sequence number at `time_ms`; 0 if unknown or expired."""
        entry = self._live(session, time_ms)
        return 0 if entry is None else entry.seq

    def lookup(self, session: bytes, seq: int, time_ms: int) -> SessionCheck:
        """What to do with write `seq` of `session` arriving at log time `time_ms`. Changes
        nothing."""
        check_session_id(session)
        check_seq(seq)
        entry = self._live(session, time_ms)
        if entry is None or seq > entry.seq:
            return NEW_CHECK if entry is None else SessionCheck(Verdict.NEW, last_seq=entry.seq)
        if seq < entry.seq:
            return SessionCheck(Verdict.STALE, stale_error(seq, entry.seq), last_seq=entry.seq)
        return SessionCheck(Verdict.DUPLICATE, self._reply_of(seq, entry.blob), entry.index,
                            entry.seq)

    def _live(self, session: bytes, time_ms: int) -> _Session | None:
        entry = self._sessions.get(session)
        if entry is None or self._expired(entry, time_ms):
            return None
        return entry

    def _expired(self, entry: _Session, time_ms: int) -> bool:
        return time_ms - entry.last_used_ms > self.ttl_ms

    def _reply_of(self, seq: int, blob: bytes) -> object:
        kind, payload = msgpack.unpackb(blob, raw=False)
        if kind == _BLOB_TOO_LARGE:
            return reply_lost_error(seq, payload, self.reply_bytes_max)
        return reply_from_msgpack(payload)

    # -- changes --------------------------------------------------------------------------------

    def pack_reply(self, reply: object) -> bytes:
        """The reply as the table stores it, and as a log entry should carry it: its encoding,
        or a small marker with its size if that is over `reply_bytes_max`."""
        encoded = reply_to_msgpack(reply)
        size = len(_pack(encoded))
        if size > self.reply_bytes_max:
            return _pack([_BLOB_TOO_LARGE, size])
        return _pack([_BLOB_KEPT, encoded])

    def record(self, session: bytes, seq: int, reply: object, time_ms: int,
               index: int = 0) -> UndoToken:
        """`record_packed` with the reply value itself."""
        return self._record(session, seq, self.pack_reply(reply), time_ms, index, trusted=True)

    def record_packed(self, session: bytes, seq: int, packed: bytes, time_ms: int,
                      index: int = 0) -> UndoToken:
        """Remember that write `seq` of `session` was applied at log time `time_ms` by the
        entry at `index`, with the reply `packed` (from `pack_reply`, as the entry carries it).

        Expires idle sessions and evicts the least recently used ones over the limits (never
        the one recorded). Returns the token that undoes exactly this. ValueError, changing
        nothing, for invalid arguments, including a `seq` not above the session's last one
        (the caller should have looked it up first)."""
        return self._record(session, seq, packed, time_ms, index, trusted=False)

    def _record(self, session: bytes, seq: int, packed: bytes, time_ms: int, index: int, *,
                trusted: bool) -> UndoToken:
        check_session_id(session)
        check_seq(seq)
        if type(time_ms) is not int or not 0 <= time_ms <= _TIME_MS_MAX:
            raise ValueError("time_ms must be a non-negative 63-bit integer")
        if type(index) is not int or not 0 <= index <= _TIME_MS_MAX:
            raise ValueError("index must be a non-negative 63-bit integer")
        if not trusted:
            _check_blob(packed, self.reply_bytes_max)
        current = self._live(session, time_ms)
        if current is not None and seq <= current.seq:
            raise ValueError(f"sequence {seq} is not above the session's last one, "
                             f"{current.seq}: look it up before recording")
        previous = self._sessions.get(session)
        removed: list[tuple[bytes, _Session]] = []
        # Expire idle sessions, oldest first (the recorded one too, if it expired: it is
        # then replaced, and its old entry restored by undo).
        while self._by_age:
            used_ms, oldest = self._by_age[0]
            entry = self._sessions.get(oldest)
            if entry is None or entry.last_used_ms != used_ms:
                heapq.heappop(self._by_age)  # a stale pair
                continue
            if not self._expired(entry, time_ms):
                break
            heapq.heappop(self._by_age)
            self._remove(oldest, entry)
            removed.append((oldest, entry))
        if previous is not None and session in self._sessions:
            self._remove(session, previous)
        self._put(session, _Session(seq, time_ms, index, packed))
        # Evict the least recently used over the limits, never the session just recorded.
        skipped: list[tuple[int, bytes]] = []
        while len(self._sessions) > self.max_sessions \
                or self._blob_bytes > self.replies_bytes_max:
            invariant(bool(self._by_age), "session table: over its limits with none to evict")
            used_ms, oldest = heapq.heappop(self._by_age)
            entry = self._sessions.get(oldest)
            if entry is None or entry.last_used_ms != used_ms:
                continue
            if oldest == session:
                skipped.append((used_ms, oldest))
                continue
            self._remove(oldest, entry)
            removed.append((oldest, entry))
        for pair in skipped:
            heapq.heappush(self._by_age, pair)
        self._compact_if_needed()
        self._serials += 1
        token = UndoToken(self._serials, self._last_serial, session, previous, tuple(removed))
        self._last_serial = token.serial
        return token

    def undo(self, token: UndoToken) -> None:
        """Revert the `record` that returned `token`. Records are undone newest first: the
        token must be that of the newest record not yet undone."""
        invariant(type(token) is UndoToken and token.serial == self._last_serial,
                  "session table: undo out of order (undo the newest record first)")
        current = self._sessions.get(token.session)
        if current is None:
            raise InvariantViolation("session table: the recorded session is gone")
        self._remove(token.session, current)
        if token.previous is not None:
            self._put(token.session, token.previous)
        for session, entry in token.removed:
            if session == token.session and token.previous is not None:
                continue  # restored above (it was expired, removed, then replaced)
            self._put(session, entry)
        self._last_serial = token.prev_serial
        self._compact_if_needed()

    def _put(self, session: bytes, entry: _Session) -> None:
        invariant(session not in self._sessions, "session table: entry already present")
        self._sessions[session] = entry
        self._blob_bytes += len(entry.blob)
        heapq.heappush(self._by_age, (entry.last_used_ms, session))

    def _remove(self, session: bytes, entry: _Session) -> None:
        del self._sessions[session]
        self._blob_bytes -= len(entry.blob)

    def _compact_if_needed(self) -> None:
        if len(self._by_age) > 2 * len(self._sessions) + 64:
            self._by_age = [(e.last_used_ms, s) for s, e in self._sessions.items()]
            heapq.heapify(self._by_age)

    # -- snapshots --------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole table (limits included) as canonical bytes: equal tables, equal bytes, in
        any process."""
        rows = [[s, e.seq, e.last_used_ms, e.index, e.blob]
                for s, e in sorted(self._sessions.items())]
        return _pack([_SNAPSHOT_FORMAT, _SNAPSHOT_VERSION, self.max_sessions, self.ttl_ms,
                      self.reply_bytes_max, self.replies_bytes_max, rows])

    @classmethod
    def from_bytes(cls, data: object) -> SessionTable:
        """A table from `to_bytes` output. Checks everything; ValueError for any bytes that
        `to_bytes` could not have produced."""
        if not isinstance(data, bytes | bytearray | memoryview):
            # ValueError, not TypeError: from_bytes promises one exception for every bad input.
            raise ValueError("session table snapshot must be bytes")  # noqa: TRY004
        try:
            body = msgpack.unpackb(bytes(data), raw=False, use_list=True, strict_map_key=True)
            return cls._from_body(body)
        except ValueError as e:
            raise ValueError(f"invalid session table snapshot: {e}") from None
        except _UNPACK_ERRORS as e:
            raise ValueError(f"invalid session table snapshot: {e.__class__.__name__}: "
                             f"{e}"[:300]) from None

    @classmethod
    def _from_body(cls, body: object) -> SessionTable:
        if not (isinstance(body, list) and len(body) == 7 and body[0] == _SNAPSHOT_FORMAT):
            raise ValueError("not a session table snapshot")
        if body[1] != _SNAPSHOT_VERSION or type(body[1]) is not int:
            raise ValueError(f"unsupported snapshot version {body[1]!r}"[:100])
        for limit in body[2:6]:
            if type(limit) is not int:
                raise ValueError("limits must be integers")
        table = cls(max_sessions=body[2], ttl_ms=body[3], reply_bytes_max=body[4],
                    replies_bytes_max=body[5])
        rows = body[6]
        if not isinstance(rows, list) or len(rows) > table.max_sessions:
            raise ValueError("too many sessions or not a list")
        last = None
        for row in rows:
            if not (isinstance(row, list) and len(row) == 5):
                raise ValueError("malformed session row")
            session, seq, used_ms, index, blob = row
            check_session_id(session)
            check_seq(seq)
            if last is not None and session <= last:
                raise ValueError("sessions not in strictly ascending order")
            last = session
            for n in (used_ms, index):
                if type(n) is not int or not 0 <= n <= _TIME_MS_MAX:
                    raise ValueError("times and indexes are non-negative 63-bit integers")
            _check_blob(blob, table.reply_bytes_max)
            table._sessions[session] = _Session(seq, used_ms, index, blob)
            table._blob_bytes += len(blob)
        if table._blob_bytes > table.replies_bytes_max:
            raise ValueError("stored replies over the table's limit")
        table._by_age = [(e.last_used_ms, s) for s, e in table._sessions.items()]
        heapq.heapify(table._by_age)
        return table

    def digest(self) -> str:
        """A checksum of the table as hex; replicas at the same applied index agree."""
        return hashlib.blake2b(self.to_bytes(), digest_size=16).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionTable):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable


def _check_limits(max_sessions: int, ttl_ms: int, reply_bytes_max: int,
                  replies_bytes_max: int) -> None:
    for name, value in (("max_sessions", max_sessions), ("ttl_ms", ttl_ms),
                        ("reply_bytes_max", reply_bytes_max),
                        ("replies_bytes_max", replies_bytes_max)):
        if type(value) is not int or not 1 <= value <= _TIME_MS_MAX:
            raise ValueError(f"{name} must be a positive integer")
    if replies_bytes_max < reply_bytes_max + 64:
        raise ValueError("replies_bytes_max must leave room for at least one reply")


def _check_blob(blob: object, reply_bytes_max: int) -> None:
    """A stored reply: msgpack [1, encoded reply] (kept) or [0, size] (too large to keep)."""
    if type(blob) is not bytes or len(blob) > reply_bytes_max + 16:
        raise ValueError("a stored reply must be bytes within the reply limit")
    try:
        body = msgpack.unpackb(blob, raw=False, use_list=True, strict_map_key=True)
    except _UNPACK_ERRORS as e:
        raise ValueError(f"undecodable stored reply: {e.__class__.__name__}") from None
    if not (isinstance(body, list) and len(body) == 2 and type(body[0]) is int):
        raise ValueError("malformed stored reply")
    kind, payload = body
    if kind == _BLOB_TOO_LARGE:
        if type(payload) is not int or not reply_bytes_max < payload <= _TIME_MS_MAX:
            raise ValueError("malformed too-large marker")
    elif kind == _BLOB_KEPT:
        reply_from_msgpack(payload)
    else:
        raise ValueError("unknown stored reply kind")
    if _pack(body) != blob:
        raise ValueError("stored reply not in canonical form")


__all__ = [
    "SEQ_MAX",
    "SESSIONS_MAX",
    "SESSION_ID_BYTES_MAX",
    "SESSION_REPLIES_BYTES_MAX",
    "SESSION_REPLY_BYTES_MAX",
    "SESSION_TTL_MS",
    "SessionCheck",
    "SessionTable",
    "UndoToken",
    "Verdict",
    "check_seq",
    "check_session_id",
    "parse_seq",
    "reply_from_msgpack",
    "reply_lost_error",
    "reply_to_msgpack",
    "stale_error",
]
