"""The replicated session table (retryable writes): duplicates, stale retries, expiry, eviction
order, exact undo, snapshots that round-trip and refuse garbage, and determinism across
processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.invariants import InvariantViolation
from replikv.replies import OK, ErrorReply, NullArray, PairArray, Status
from replikv.sessions import (
    SEQ_MAX,
    SESSION_TTL_MS,
    SessionTable,
    Verdict,
    check_seq,
    check_session_id,
    parse_seq,
    reply_from_msgpack,
    reply_to_msgpack,
)

T0 = 1_700_000_000_000
REPO_ROOT = Path(__file__).resolve().parents[2]


def table(**kwargs: int) -> SessionTable:
    return SessionTable(**kwargs)


# -- lookups --------------------------------------------------------------------------------------

def test_an_unknown_session_is_new_and_a_retry_gets_the_first_reply():
    t = table()
    assert t.lookup(b"s1", 1, T0).verdict is Verdict.NEW
    t.record(b"s1", 1, 7, T0, index=41)
    check = t.lookup(b"s1", 1, T0 + 5)
    assert check.verdict is Verdict.DUPLICATE
    assert check.reply == 7 and type(check.reply) is int
    assert check.index == 41  # answer once the recording entry has committed
    assert t.lookup(b"s1", 2, T0 + 5).verdict is Verdict.NEW
    assert t.lookup(b"s2", 1, T0 + 5).verdict is Verdict.NEW  # sessions are independent


def test_a_superseded_sequence_number_is_stale_with_a_clear_error():
    t = table()
    t.record(b"s", 5, OK, T0)
    t.record(b"s", 7, OK, T0 + 1)
    check = t.lookup(b"s", 5, T0 + 2)
    assert check.verdict is Verdict.STALE
    assert check.reply == ErrorReply("SESSIONSTALE sequence 5 of this session was superseded "
                                     "by 7; its reply is no longer known")
    assert check.last_seq == 7


def test_lookup_changes_nothing():
    t = table()
    t.record(b"s", 1, b"v", T0)
    before = t.to_bytes()
    for seq in (1, 2, 3):
        t.lookup(b"s", seq, T0 + 10**9)
    assert t.to_bytes() == before


def test_recording_a_sequence_number_not_above_the_last_is_refused_without_change():
    t = table()
    t.record(b"s", 3, OK, T0)
    before = t.to_bytes()
    for seq in (1, 3):
        with pytest.raises(ValueError, match="look it up"):
            t.record(b"s", seq, OK, T0 + 1)
    assert t.to_bytes() == before


def test_a_reply_too_large_to_keep_is_a_marker_and_a_retry_says_it_was_applied():
    t = table(reply_bytes_max=100)
    token = t.record(b"s", 1, b"x" * 500, T0)
    check = t.lookup(b"s", 1, T0)
    assert check.verdict is Verdict.DUPLICATE
    assert isinstance(check.reply, ErrorReply)
    assert check.reply.code == "SESSIONREPLYLOST"
    assert "was applied" in check.reply.message and "100 bytes" in check.reply.message
    assert t.reply_bytes < 20
    t.undo(token)
    assert len(t) == 0


def test_the_packed_form_a_log_entry_carries_records_the_same_as_the_value():
    a, b = table(), table()
    reply = [b"x", 3, {b"k": frozenset({b"m1", b"m2"})}]
    a.record(b"s", 1, reply, T0, 9)
    b.record_packed(b"s", 1, a.pack_reply(reply), T0, 9)
    assert a.to_bytes() == b.to_bytes()
    for bad in (b"", b"\xc1", msgpack.packb([1]), msgpack.packb([2, 0]),
                msgpack.packb([0, 5]), msgpack.packb([1, [99]])):
        with pytest.raises(ValueError):
            b.record_packed(b"s", 2, bad, T0)


# -- expiry and eviction ----------------------------------------------------------------------------

def test_an_idle_session_expires_after_the_ttl_of_log_time():
    t = table(ttl_ms=1000)
    t.record(b"s", 4, OK, T0)
    assert t.lookup(b"s", 4, T0 + 1000).verdict is Verdict.DUPLICATE  # idle exactly the ttl
    assert t.lookup(b"s", 4, T0 + 1001).verdict is Verdict.NEW
    assert t.lookup(b"s", 2, T0 + 1001).verdict is Verdict.NEW  # no longer stale either
    t.record(b"s", 2, OK, T0 + 1001)  # the expired session starts over
    assert t.last_seq(b"s", T0 + 1001) == 2


def test_default_ttl_is_thirty_minutes():
    assert SESSION_TTL_MS == 30 * 60 * 1000
    t = table()
    t.record(b"s", 1, OK, T0)
    assert t.lookup(b"s", 1, T0 + SESSION_TTL_MS).verdict is Verdict.DUPLICATE
    assert t.lookup(b"s", 1, T0 + SESSION_TTL_MS + 1).verdict is Verdict.NEW


def test_expired_sessions_are_dropped_when_a_later_write_is_recorded():
    t = table(ttl_ms=1000)
    for i in range(5):
        t.record(b"old%d" % i, 1, OK, T0 + i)
    t.record(b"new", 1, OK, T0 + 1003)  # old0..old2 idle more than 1000 ms
    assert len(t) == 3
    assert [t.last_seq(b"old%d" % i, T0 + 1003) for i in range(5)] == [0, 0, 0, 1, 1]


def test_eviction_takes_the_least_recently_used_then_the_smallest_id():
    t = table(max_sessions=3)
    t.record(b"c", 1, OK, T0)
    t.record(b"a", 1, OK, T0 + 5)
    t.record(b"b", 1, OK, T0 + 5)
    t.record(b"c", 2, OK, T0 + 6)  # c is now the most recently used
    t.record(b"d", 1, OK, T0 + 7)  # one too many: a and b tie on time, a goes
    assert sorted(s for s in (b"a", b"b", b"c", b"d") if t.last_seq(s, T0 + 7)) == \
        [b"b", b"c", b"d"]
    t.record(b"e", 1, OK, T0 + 8)
    assert t.last_seq(b"b", T0 + 8) == 0


def test_eviction_never_takes_the_session_just_recorded_even_if_time_went_backwards():
    t = table(max_sessions=2)
    t.record(b"a", 1, OK, T0 + 100)
    t.record(b"b", 1, OK, T0 + 100)
    t.record(b"z", 1, OK, T0)  # older than everything, but it is the one being recorded
    assert t.last_seq(b"z", T0) == 1
    assert len(t) == 2


def test_total_reply_bytes_are_bounded_by_evicting_the_least_recently_used():
    t = table(reply_bytes_max=1000, replies_bytes_max=2800)  # room for 3 of ~906 bytes
    for i in range(5):
        t.record(b"s%d" % i, 1, b"v" * 900, T0 + i)
    assert t.reply_bytes <= 2800
    assert [t.last_seq(b"s%d" % i, T0 + 5) for i in range(5)] == [0, 0, 1, 1, 1]


# -- undo ---------------------------------------------------------------------------------------------

def test_undo_restores_evicted_and_expired_sessions_exactly():
    t = table(max_sessions=2, ttl_ms=1000)
    t.record(b"a", 1, b"ra", T0)
    t.record(b"b", 1, b"rb", T0 + 500)
    before = t.to_bytes()
    token = t.record(b"c", 1, b"rc", T0 + 1200)  # expires a, and b stays (2 sessions)
    token2 = t.record(b"d", 1, b"rd", T0 + 1300)  # evicts b
    assert t.last_seq(b"b", T0 + 1300) == 0
    t.undo(token2)
    t.undo(token)
    assert t.to_bytes() == before
    assert t.lookup(b"a", 1, T0).reply == b"ra"


def test_undo_must_go_newest_first_and_a_token_works_once():
    t = table()
    first = t.record(b"a", 1, OK, T0)
    second = t.record(b"a", 2, OK, T0 + 1)
    with pytest.raises(InvariantViolation):
        t.undo(first)
    t.undo(second)
    t.undo(first)
    with pytest.raises(InvariantViolation):
        t.undo(first)
    third = t.record(b"a", 1, OK, T0)
    with pytest.raises(InvariantViolation):
        t.undo(second)  # an old token never matches a new record
    t.undo(third)
    assert len(t) == 0


class Model:
    """The table's meaning, written the obvious way: a dict and full scans."""

    def __init__(self, max_sessions: int, ttl_ms: int) -> None:
        self.max_sessions, self.ttl_ms = max_sessions, ttl_ms
        self.sessions: dict[bytes, tuple[int, int, object]] = {}  # seq, last_used_ms, reply

    def live(self, s: bytes, now: int) -> tuple | None:
        e = self.sessions.get(s)
        return e if e is not None and now - e[1] <= self.ttl_ms else None

    def record(self, s: bytes, seq: int, reply: object, now: int) -> None:
        self.sessions = {k: e for k, e in self.sessions.items() if now - e[1] <= self.ttl_ms}
        self.sessions[s] = (seq, now, reply)
        while len(self.sessions) > self.max_sessions:
            victim = min((e[1], k) for k, e in self.sessions.items() if k != s)[1]
            del self.sessions[victim]


_ops = st.lists(st.tuples(
    st.sampled_from(["record", "record", "record", "undo"]),
    st.sampled_from([b"a", b"b", b"c", b"d", b"e"]),
    st.integers(0, 400),  # time step, ms
    st.sampled_from([OK, 1, b"v", None, [b"x", 2], frozenset({b"p", b"q"})]),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_random_records_and_undos_match_the_model_and_undo_is_exact(ops):
    t = table(max_sessions=3, ttl_ms=1000)
    model = Model(3, 1000)
    now = T0
    # Records not undone yet, newest last: (token, bytes before, model state before).
    stack: list[tuple] = []
    for op, session, step, reply in ops:
        now += step
        if op == "undo":
            if stack:
                token, before, model_before, time_before = stack.pop()
                t.undo(token)
                assert t.to_bytes() == before
                model.sessions = model_before
                now = time_before  # the log position the undone entry had
            continue
        seq = model.live(session, now)[0] + 1 if model.live(session, now) else 1
        assert t.lookup(session, seq, now).verdict is Verdict.NEW
        before, model_before = t.to_bytes(), dict(model.sessions)
        stack.append((t.record(session, seq, reply, now), before, model_before, now - step))
        model.record(session, seq, reply, now)
        for s in (b"a", b"b", b"c", b"d", b"e"):
            expected = model.live(s, now)
            assert t.last_seq(s, now) == (expected[0] if expected else 0)
            if expected:
                check = t.lookup(s, expected[0], now)
                assert check.verdict is Verdict.DUPLICATE and check.reply == expected[2]
        assert len(t) == len(model.sessions)
    while stack:
        token, before, _, _ = stack.pop()
        t.undo(token)
        assert t.to_bytes() == before
    assert t.to_bytes() == table(max_sessions=3, ttl_ms=1000).to_bytes()


# -- the reply encoding ---------------------------------------------------------------------------------

REPLIES = [
    b"", b"bulk\r\n", "text é", Status("OK"), ErrorReply("WRONGTYPE nope"), 0, -1, 2**63 - 1,
    -(2**63), 2**64 - 1, 2**64, -(2**100), 1.5, -0.0, float("inf"), True, False, None,
    NullArray, [], (), [b"a", [b"b", [None]]], (1, b"x"), {}, {b"k": 1, "f": [2.5]},
    set(), {b"m", b"n", 3}, frozenset({b"z", b"y"}), {b"s": {1, 2}}, "\udcff",
    PairArray(), PairArray([b"f", b"v", b"f", b"v"]), [PairArray([b"a", 1])],
]


@pytest.mark.parametrize("reply", REPLIES, ids=repr)
def test_every_reply_value_round_trips_exactly(reply):
    packed = msgpack.packb(reply_to_msgpack(reply), use_bin_type=True)
    back = reply_from_msgpack(msgpack.unpackb(packed, raw=False))
    assert back == reply
    assert type(back) is type(reply)
    if isinstance(reply, dict):
        assert list(back) == list(reply)  # the order the client saw
        assert [type(v) for v in back.values()] == [type(v) for v in reply.values()]
    if isinstance(reply, list | tuple):
        assert [type(v) for v in back] == [type(v) for v in reply]


_leaf = st.one_of(st.binary(max_size=8), st.integers(-(2**70), 2**70), st.booleans(),
                  st.none(), st.floats(allow_nan=False), st.text(max_size=5),
                  st.builds(Status, st.text(alphabet="abcOK ", max_size=5)),
                  st.builds(ErrorReply, st.text(alphabet="ERR x", max_size=8)),
                  st.just(NullArray))
_hashable = st.one_of(st.binary(max_size=6), st.integers(-5, 5), st.text(max_size=3))
_reply = st.recursive(_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(_hashable, kids, max_size=3),
    st.sets(_hashable, max_size=4), st.frozensets(_hashable, max_size=4)), max_leaves=15)


@settings(max_examples=300, deadline=None)
@given(_reply)
def test_random_replies_round_trip_and_encode_canonically(reply):
    encoded = reply_to_msgpack(reply)
    packed = msgpack.packb(encoded, use_bin_type=True)
    assert reply_from_msgpack(msgpack.unpackb(packed, raw=False)) == reply
    assert msgpack.packb(reply_to_msgpack(reply_from_msgpack(encoded)),
                         use_bin_type=True) == packed


def test_values_that_are_not_replies_are_refused():
    for bad in (object(), 1j, [Status("a\r\nb")], {1: object()}):
        with pytest.raises((TypeError, ValueError)):
            reply_to_msgpack(bad)
    deep: list = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        reply_to_msgpack(deep)
    for bad in ([], [99], [0], [0, "str"], [5, b"b", b"a"], [5, b"a", b"a"], [4, b"k"],
                [9, b"5"], [9, b"0x10"], [1, b"a\nb"], [8, 1], 2**65, "plain str", [2, {}]):
        with pytest.raises(ValueError):
            reply_from_msgpack(bad)


# -- validation helpers ------------------------------------------------------------------------------

def test_session_ids_and_sequence_numbers_are_validated():
    assert check_session_id(b"x") == b"x"
    assert check_session_id(b"k" * 64)
    for bad in (b"", b"k" * 65, "text", None, bytearray(b"x")):
        with pytest.raises(ValueError):
            check_session_id(bad)
    assert check_seq(1) == 1 and check_seq(SEQ_MAX) == SEQ_MAX
    for bad in (0, -1, SEQ_MAX + 1, True, 1.0, "1"):
        with pytest.raises(ValueError):
            check_seq(bad)
    assert parse_seq(b"42") == 42 and parse_seq(b"9223372036854775807") == SEQ_MAX
    for bad in (b"", b"0", b"-1", b"+1", b" 1", b"1_0", b"9223372036854775808", b"1e3",
                "٣".encode()):
        with pytest.raises(ValueError):
            parse_seq(bad)


# -- snapshots ---------------------------------------------------------------------------------------

def filled_table() -> SessionTable:
    t = table(max_sessions=50)
    for i in range(40):
        t.record(b"session-%02d" % (i % 17), i + 1, [b"r", i, frozenset({b"a%d" % i, b"b"})],
                 T0 + i * 7, index=100 + i)
    t.record(b"big", 1, b"x" * (70 * 1024), T0 + 1000)
    return t


def test_snapshots_round_trip_and_equal_tables_have_equal_bytes_and_digests():
    t = filled_table()
    data = t.to_bytes()
    back = SessionTable.from_bytes(data)
    assert back.to_bytes() == data and back.digest() == t.digest()
    assert back.max_sessions == 50
    assert back.lookup(b"session-05", 40, T0).reply == t.lookup(b"session-05", 40, T0).reply
    # The restored table keeps working the same way, evictions included.
    for tb in (t, back):
        for i in range(60):
            tb.record(b"more-%02d" % i, 1, OK, T0 + 5000 + i)
    assert back.to_bytes() == t.to_bytes()
    assert table().digest() != t.digest()


def test_garbage_snapshots_raise_value_error_and_nothing_else():
    good = filled_table().to_bytes()
    cases = [b"", b"\x00", b"garbage", good[:-1], good + b"\x00", good[:len(good) // 2],
             msgpack.packb(["replikv-sessions"]), msgpack.packb(["other", 1, 1, 1, 1, 1, []]),
             msgpack.packb(["replikv-sessions", 2, 10, 10, 100, 1000, []]),
             msgpack.packb(["replikv-sessions", 1, 0, 10, 100, 1000, []]),
             msgpack.packb(["replikv-sessions", 1, 10, 10, 100, 1000, [[b"s", 0, 1, 1,
                                                                        msgpack.packb([1, 1])]]]),
             msgpack.packb(["replikv-sessions", 1, 10, 10, 100, 1000,
                            [[b"b", 1, 1, 1, msgpack.packb([1, 1])],
                             [b"a", 1, 1, 1, msgpack.packb([1, 1])]]]),
             msgpack.packb({"a": 1}), "not bytes", None]
    for data in cases:
        with pytest.raises(ValueError):
            SessionTable.from_bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_snapshots_either_load_or_raise_value_error(data):
    good = filled_table().to_bytes()
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        loaded = SessionTable.from_bytes(bytes(raw))
    except ValueError:
        return
    assert SessionTable.from_bytes(loaded.to_bytes()).to_bytes() == loaded.to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_value_error(raw):
    try:
        SessionTable.from_bytes(raw)
    except ValueError:
        pass


# -- determinism across processes ---------------------------------------------------------------------

_DETERMINISM_SCRIPT = """
import json, random
from replikv.replies import OK
from replikv.sessions import SessionTable
rng = random.Random(7)
t = SessionTable(max_sessions=20, ttl_ms=5000)
now = 1_000_000
for i in range(400):
    now += rng.randrange(0, 100)
    s = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
    seq = t.last_seq(s, now) + 1
    reply = rng.choice([OK, {bytes([rng.randrange(256)]) for _ in range(8)}, i, [b"x", {s}]])
    token = t.record(s, seq, reply, now, index=i)
    if rng.random() < 0.1:
        t.undo(token)
print(json.dumps([t.digest(), t.to_bytes().hex()]))
"""


def test_the_table_is_identical_in_processes_with_different_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = str(REPO_ROOT / "src")
        out = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        outputs.add(out.stdout.strip())
    assert len(outputs) == 1, outputs
    digest, hex_bytes = json.loads(outputs.pop())
    assert SessionTable.from_bytes(bytes.fromhex(hex_bytes)).digest() == digest


# -- the RESP protocol: REPLIKV SESSION and REPLIKV WITH SEQ -------------------------------------------

def _replikv(conn, *args: bytes) -> object:
    from replikv.server.local_commands import LOCAL_COMMANDS, run_local

    return run_local(LOCAL_COMMANDS[b"replikv"], conn, None, [b"REPLIKV", *args])


def test_replikv_session_sets_shows_and_clears_the_connection_session():
    from replikv.concerns import DEFAULT_OPTIONS
    from replikv.server.local_commands import LOCAL_COMMANDS, ConnectionState, NodeView, run_local

    conn = ConnectionState(client_id=1)
    assert _replikv(conn, b"SESSION", b"c0ffee") == OK
    assert conn.options.session == b"c0ffee"
    assert _replikv(conn, b"OPTIONS")["session"] == b"c0ffee"
    assert _replikv(conn, b"WRITECONCERN", b"1") == OK  # other settings keep the session
    assert conn.options.session == b"c0ffee"
    assert _replikv(conn, b"SESSION", b"off") == OK
    assert conn.options.session is None and "session" not in _replikv(conn, b"OPTIONS")
    assert _replikv(conn, b"SESSION", b"again") == OK
    assert _replikv(conn, b"SESSION") == OK
    assert conn.options.session is None
    for bad in ([b"SESSION", b""], [b"SESSION", b"x" * 65], [b"SESSION", b"a", b"b"]):
        reply = _replikv(conn, *bad)
        assert isinstance(reply, ErrorReply), bad
    _replikv(conn, b"SESSION", b"s")
    run_local(LOCAL_COMMANDS[b"reset"], conn, NodeView(), [b"RESET"])  # a node, no password
    assert conn.options == DEFAULT_OPTIONS
    help_text = " ".join(_replikv(conn, b"HELP"))
    assert "SESSION" in help_text and "SEQ" in help_text and "TOPOLOGY" in help_text


def test_replikv_with_seq_marks_one_write_of_the_session():
    from replikv.concerns import RequestOptions
    from replikv.replies import CommandError
    from replikv.server.local_commands import ConnectionState, parse_replikv_with

    conn = ConnectionState(client_id=1)
    _replikv(conn, b"SESSION", b"abc")
    options, argv = parse_replikv_with(conn.options, [b"REPLIKV", b"WITH", b"W", b"all", b"SEQ",
                                                      b"12", b"INCR", b"counter"])
    assert options == RequestOptions(w="all", session=b"abc", seq=12)
    assert argv == [b"INCR", b"counter"]
    assert conn.options.seq is None  # SEQ is per command only
    # An unknown command keeps its own error, from the node core.
    assert parse_replikv_with(conn.options, [b"REPLIKV", b"WITH", b"SEQ", b"1", b"NOPE"])[1] \
        == [b"NOPE"]
    errors = {
        (b"SEQ", b"0", b"SET", b"k", b"v"): "SEQ must be an integer",
        (b"SEQ", b"x", b"SET", b"k", b"v"): "SEQ must be an integer",
        (b"SEQ", b"-3", b"SET", b"k", b"v"): "SEQ must be an integer",
        (b"SEQ", b"1", b"GET", b"k"): "writes only",
        (b"SEQ", b"1", b"WAIT", b"1", b"0"): "writes only",
        (b"SEQ",): "needs a value",
        (b"SEQ", b"1"): "needs a command",
    }
    for args, message in errors.items():
        with pytest.raises(CommandError, match=message):
            parse_replikv_with(conn.options, [b"REPLIKV", b"WITH", *args])
    no_session = ConnectionState(client_id=2)
    with pytest.raises(CommandError, match="needs a session"):
        parse_replikv_with(no_session.options, [b"REPLIKV", b"WITH", b"SEQ", b"1", b"SET",
                                                b"k", b"v"])


def test_forwarded_writes_keep_their_session_and_seq_and_peers_cannot_send_bad_ones():
    from replikv.concerns import RequestOptions, options_from_fields
    from replikv.node_messages import ForwardRequest
    from replikv.wire import FRAME_HEADER, PeerProtocolError, decode_message, encode_message

    for options in (RequestOptions(session=b"s" * 64, seq=SEQ_MAX),
                    RequestOptions(w="1", session=b"\x00\xff", seq=1),
                    RequestOptions(session=b"only-a-session"),
                    RequestOptions()):
        message = ForwardRequest("n2", 7, (b"INCR", b"k"), options)
        assert decode_message(encode_message(message)[4:]) == message
    # Without a session the options look exactly as before sessions existed (5 fields).
    assert len(RequestOptions().as_fields()) == 5
    base = ["majority", None, "primary", "linearizable", None]
    for bad in ([*base, None, None], [*base, None, 5], [*base, b"", 5], [*base, b"x" * 65, 1],
                [*base, b"s", 0], [*base, b"s", 2**63], [*base, "text", 1], [*base, b"s", 1.0],
                [*base, b"s", True], [*base, b"s"], [*base, b"s", 1, 2]):
        with pytest.raises(ValueError):
            options_from_fields(bad)
        body = msgpack.packb([20, "n2", 1, [b"SET", b"k", b"v"], bad, False], use_bin_type=True)
        with pytest.raises(PeerProtocolError):
            decode_message((FRAME_HEADER.pack(len(body)) + body)[4:])
