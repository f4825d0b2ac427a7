"""KVState: determinism across replicas and processes, expiry through the log, digest, reads
that never mutate, and the bookkeeping behind key_count / used_bytes / items."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.commands import COMMANDS
from replikv.invariants import InvariantViolation
from replikv.replies import OK, ErrorReply
from replikv.state import (
    EXPIRY_OVERHEAD_BYTES,
    KEY_OVERHEAD_BYTES,
    SET_MEMBER_OVERHEAD_BYTES,
    SET_OVERHEAD_BYTES,
    KVState,
)

T0 = 1_000_000

# ---- a workload of commands with non-decreasing times ----

_SLOTS: dict[str, list[bytes]] = {
    "K": [b"a", b"b", b"c", b"d", b""],
    "V": [b"", b"1", b"-7", b"x", b"2.5", b"9223372036854775807", b"abc", b"10"],
    "N": [b"0", b"1", b"-1", b"3", b"50", b"200", b"abc", b"9223372036854775807"],
    "F": [b"0.1", b"-2.5", b"1e3", b"abc", b"inf"],
    "PA": [b"999000", b"1000500", b"1002000", b"1005000", b"2000000"],
    "EA": [b"999", b"1001", b"1003", b"1010"],
    "O": [b"NX", b"XX", b"GT", b"LT"],
    "P": [b"*", b"a*", b"[a-c]", b"?"],
    "M": [b"x", b"y", b"z", b"1", b"", b"m5", b"m6"],
}

_TEMPLATES: list[str] = [
    "SET K V", "SET K V NX", "SET K V XX", "SET K V IFEQ V", "SET K V IFNE V", "SET K V GET",
    "SET K V PX N", "SET K V EX N", "SET K V PXAT PA", "SET K V EXAT EA", "SET K V KEEPTTL",
    "SET K V NX XX", "SETNX K V", "SETEX K N V", "PSETEX K N V", "GETSET K V", "GETDEL K",
    "GETEX K", "GETEX K PX N", "GETEX K PERSIST", "GETEX K PXAT PA", "MSET K V K V",
    "MSETNX K V K V", "INCR K", "DECR K", "INCRBY K N", "DECRBY K N", "INCRBYFLOAT K F",
    "APPEND K V", "SETRANGE K N V", "DEL K K", "UNLINK K", "EXPIRE K N", "PEXPIRE K N O",
    "EXPIREAT K EA", "PEXPIREAT K PA", "PERSIST K", "RENAME K K", "RENAMENX K K", "COPY K K",
    "COPY K K REPLACE", "GET K", "MGET K K", "TTL K", "PTTL K", "EXISTS K K", "KEYS P",
    "SCAN 0 COUNT 5000 MATCH P", "RANDOMKEY", "DBSIZE", "GETRANGE K N N", "STRLEN K", "TYPE K",
    "EXPIRETIME K", "NOSUCH K",
    # Sets, on the same keys as the strings, so WRONGTYPE comes up often.
    "SADD K M M M", "SADD K M", "SREM K M M", "SPOP K", "SPOP K N", "SRANDMEMBER K N",
    "SMOVE K K M", "SINTERSTORE K K K", "SUNIONSTORE K K K", "SDIFFSTORE K K", "SMEMBERS K",
    "SCARD K", "SISMEMBER K M", "SINTER K K", "SUNION K K", "SDIFF K K", "SSCAN K 0",
    "SINTERCARD 2 K K LIMIT N",
]  # fmt: skip
_RARE_TEMPLATES = ["FLUSHALL", "FLUSHDB ASYNC"]

Op = tuple[str, list[bytes] | int, int]  # ("cmd", argv, time_ms) or ("expire", limit, time_ms)


def generate_ops(choose: Callable[[Sequence], object], steps: int) -> list[Op]:
    ops: list[Op] = []
    now_ms = T0
    for _ in range(steps):
        now_ms += choose([0, 0, 1, 5, 50, 400, 1000])  # type: ignore[operator]
        roll = choose(range(40))
        if roll == 0:
            ops.append(("expire", choose([1, 2, 100]), now_ms))  # type: ignore[arg-type]
            continue
        template = choose(_RARE_TEMPLATES) if roll == 1 else choose(_TEMPLATES)
        argv = []
        for word in template.split():  # type: ignore[union-attr]
            argv.append(choose(_SLOTS[word]) if word in _SLOTS else word.encode())
        ops.append(("cmd", argv, now_ms))  # type: ignore[arg-type]
    return ops


def replay(ops: list[Op], followers: int = 0) -> tuple[list[object], list[KVState]]:
    """Apply `ops` to a leader and `followers` more states the way the log does: commands in
    order, and expiry entries whose keys the leader chose. Returns the leader's replies and
    every state; asserts each follower replied exactly as the leader."""
    states = [KVState() for _ in range(1 + followers)]
    replies: list[object] = []
    for kind, payload, time_ms in ops:
        if kind == "expire":
            keys = states[0].expired_keys(time_ms, payload)  # type: ignore[arg-type]
            results = [state.apply_expire(keys, time_ms) for state in states]
            replies.append((keys, results[0]))
        else:
            results = [state.apply_command(payload, time_ms) for state in states]  # type: ignore[arg-type]
            replies.append(results[0])
        assert all(result == results[0] for result in results)
    return replies, states


def replay_summary(encoded_ops: list[list]) -> dict[str, object]:
    """Replay ops given as JSON (hex-encoded arguments); used in a subprocess too."""
    ops: list[Op] = []
    for kind, payload, time_ms in encoded_ops:
        ops.append(
            (kind, [bytes.fromhex(a) for a in payload] if kind == "cmd" else payload, time_ms)
        )
    replies, (state,) = replay(ops)
    return {
        "replies": [repr(reply) for reply in replies],
        "digest": state.digest(),
        "hash_of_bytes": hash(b"replikv"),  # shows the hash seed really differed
    }


def encode_ops(ops: list[Op]) -> list[list]:
    return [
        [kind, [a.hex() for a in payload] if kind == "cmd" else payload, time_ms]  # type: ignore[union-attr]
        for kind, payload, time_ms in ops
    ]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_replicas_applying_the_same_log_agree(data: st.DataObject) -> None:
    steps = data.draw(st.integers(1, 120), label="steps")
    ops = generate_ops(lambda options: data.draw(st.sampled_from(list(options))), steps)
    _, states = replay(ops, followers=1)
    assert states[0].digest() == states[1].digest()
    assert list(states[0].items()) == list(states[1].items())


def test_replay_is_independent_of_the_process_hash_seed() -> None:
    rng = random.Random(20240601)
    ops = generate_ops(lambda options: rng.choice(list(options)), 3000)
    encoded = encode_ops(ops)
    local = replay_summary(encoded)
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_state\n"
        "print(json.dumps(test_state.replay_summary(json.load(sys.stdin))))\n"
    )
    remote = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(encoded),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        remote.append(json.loads(done.stdout))
    assert remote[0]["hash_of_bytes"] != remote[1]["hash_of_bytes"]
    for summary in remote:
        assert summary["replies"] == local["replies"]
        assert summary["digest"] == local["digest"]
    # The workload must exercise something: plenty of successful writes and some errors.
    assert local["replies"].count(repr(OK)) > 100
    assert any(reply.startswith("ErrorReply") for reply in local["replies"])


# ---- expiry through the log ----


def _state_with(*commands: tuple[list[bytes], int]) -> KVState:
    state = KVState()
    for argv, time_ms in commands:
        assert not isinstance(state.apply_command(argv, time_ms), ErrorReply)
    return state


def test_expired_keys_soonest_first_and_limited() -> None:
    state = KVState()
    for i, ttl_ms in enumerate([300, 100, 200, 5000]):
        state.apply_command([b"SET", b"k%d" % i, b"v", b"PX", b"%d" % ttl_ms], T0)
    state.apply_command([b"SET", b"forever", b"v"], T0)
    assert state.expired_keys(T0 + 99, 10) == []
    assert state.expired_keys(T0 + 100, 10) == [b"k1"]
    assert state.expired_keys(T0 + 1000, 10) == [b"k1", b"k2", b"k0"]
    assert state.expired_keys(T0 + 1000, 2) == [b"k1", b"k2"]
    # Listing does not consume: the keys stay until an expiry entry applies.
    assert state.expired_keys(T0 + 1000, 10) == [b"k1", b"k2", b"k0"]
    assert state.key_count() == 5


@pytest.mark.parametrize(
    "change",
    [
        [b"SET", b"k", b"new"],
        [b"PERSIST", b"k"],
        [b"PEXPIRE", b"k", b"10000"],
        [b"DEL", b"k"],
        [b"RENAME", b"k", b"other"],
    ],
)
def test_expired_keys_skips_keys_whose_expiry_changed(change: list[bytes]) -> None:
    state = _state_with(([b"SET", b"k", b"v", b"PX", b"100"], T0), (change, T0 + 50))
    assert b"k" not in state.expired_keys(T0 + 200, 10)


def test_expired_keys_reports_a_renamed_key_under_its_new_name() -> None:
    state = _state_with(
        ([b"SET", b"k", b"v", b"PX", b"100"], T0), ([b"RENAME", b"k", b"other"], T0 + 50)
    )
    assert state.expired_keys(T0 + 200, 10) == [b"other"]


def test_expired_keys_lists_a_key_once_even_if_its_expiry_was_set_twice() -> None:
    state = _state_with(
        ([b"SET", b"k", b"v", b"PXAT", b"%d" % (T0 + 100)], T0),
        ([b"DEL", b"k"], T0),
        ([b"SET", b"k", b"v", b"PXAT", b"%d" % (T0 + 100)], T0),
        ([b"PEXPIREAT", b"k", b"%d" % (T0 + 100)], T0),
    )
    assert state.expired_keys(T0 + 100, 10) == [b"k"]


def test_apply_expire_deletes_only_keys_still_expired() -> None:
    state = _state_with(
        ([b"SET", b"a", b"v", b"PX", b"100"], T0),
        ([b"SET", b"b", b"v", b"PX", b"100"], T0),
        ([b"SET", b"c", b"v", b"PX", b"100"], T0),
        ([b"SET", b"d", b"v", b"PX", b"100"], T0),
    )
    listed = state.expired_keys(T0 + 100, 10)
    assert sorted(listed) == [b"a", b"b", b"c", b"d"]
    # Writes proposed before the listing (so stamped earlier) apply before the expiry entry.
    state.apply_command([b"SET", b"b", b"fresh"], T0 + 90)
    state.apply_command([b"PEXPIRE", b"c", b"1000"], T0 + 90)
    state.apply_command([b"DEL", b"d"], T0 + 90)
    assert state.apply_expire(listed + [b"never-existed"], T0 + 102) == 1
    assert state.execute_read([b"MGET", b"a", b"b", b"c"], T0 + 102) == [None, b"fresh", b"v"]
    assert state.key_count() == 2
    assert state.expired_keys(T0 + 102, 10) == []


def test_apply_expire_uses_the_entry_time_not_the_listing_time() -> None:
    state = _state_with(([b"SET", b"k", b"v", b"PX", b"100"], T0))
    assert state.apply_expire([b"k"], T0 + 99) == 0  # not yet expired at the entry's time
    assert state.apply_expire([b"k"], T0 + 100) == 1


def test_expiry_heap_stays_bounded_under_repeated_ttl_changes() -> None:
    state = KVState()
    state.apply_command([b"SET", b"k", b"v"], T0)
    for i in range(20_000):
        state.apply_command([b"PEXPIRE", b"k", b"%d" % (1000 + i)], T0)
    assert len(state._expiry_heap) <= 2 * state.expires_count() + 1024 + 1
    assert state.expired_keys(T0 + 1000 + 19_999, 10) == [b"k"]
    assert state.expired_keys(T0 + 1000 + 19_998, 10) == []


def test_expired_keys_is_cheap_with_many_future_expiries() -> None:
    state = KVState()
    for i in range(100_000):
        state.write(b"k%d" % i, b"v", T0 + 10_000 + i)
    started = time.perf_counter()
    for _ in range(1000):
        assert state.expired_keys(T0, 100) == []
    assert len(state.expired_keys(T0 + 10_099, 1000)) == 100
    assert time.perf_counter() - started < 0.5


# ---- reads ----


def test_reads_never_change_state() -> None:
    state = _state_with(
        ([b"SET", b"a", b"1", b"PX", b"10"], T0),
        ([b"SET", b"b", b"2"], T0),
        ([b"SET", b"c", b"3", b"PX", b"1000"], T0),
    )
    before = state.digest()
    late = T0 + 5000
    for argv in (
        [b"GET", b"a"],
        [b"MGET", b"a", b"b", b"c"],
        [b"EXISTS", b"a", b"c"],
        [b"TTL", b"c"],
        [b"PTTL", b"a"],
        [b"KEYS", b"*"],
        [b"SCAN", b"0"],
        [b"RANDOMKEY"],
        [b"DBSIZE"],
        [b"STRLEN", b"a"],
        [b"GETRANGE", b"c", b"0", b"-1"],
        [b"TYPE", b"a"],
        [b"EXPIRETIME", b"c"],
        [b"TOUCH", b"a"],
    ):
        state.execute_read(argv, late)
    assert state.digest() == before
    assert state.key_count() == 3


def test_every_read_command_is_served_by_execute_read() -> None:
    reads = sorted(name for name, spec in COMMANDS.items() if spec.kind == "read")
    assert reads == sorted(
        ["get", "mget", "strlen", "getrange", "exists", "touch", "type", "ttl", "pttl"]
        + ["expiretime", "pexpiretime", "keys", "scan", "dbsize", "randomkey"]
        + ["scard", "sismember", "smismember", "smembers", "srandmember", "sinter", "sunion"]
        + ["sdiff", "sintercard", "sscan"]
        + ["hget", "hmget", "hexists", "hlen", "hstrlen", "hkeys", "hvals", "hgetall"]
        + ["hrandfield", "hscan"]
        + ["llen", "lindex", "lrange", "lpos"]
        + ["zcard", "zscore", "zmscore", "zcount", "zlexcount", "zrange", "zrangebyscore"]
        + ["zrevrangebyscore", "zrangebylex", "zrevrangebylex", "zrevrange", "zrank"]
        + ["zrevrank", "zrandmember", "zscan", "zunion", "zinter", "zdiff", "zintercard"]
        + ["pfcount"]  # commands/hyperloglog.py
        + ["sort_ro"]  # commands/sort.py (SORT is a write even without STORE)
        + ["geopos", "geohash", "geodist", "geosearch", "georadius_ro"]  # commands/geo.py
        + ["georadiusbymember_ro"]
        + ["xlen", "xrange", "xrevrange", "xread", "xpending", "xinfo"]
        + ["exec-reads"]  # a pipeline's reads as one (commands/transactions.py)
        + ["watch-point"]  # where a WATCH starts: the node answers it, not the state
        + ["object", "memory"]  # commands/introspection.py
        + ["eval_ro", "evalsha_ro"]  # commands/scripts.py
        + ["fcall_ro"]  # commands/functions.py (FUNCTION is a write, every subcommand)
    )
    state = KVState()
    state.write(b"n", b"12")
    assert state.execute_read([b"OBJECT", b"ENCODING", b"n"], T0) == b"int"
    assert isinstance(state.execute_read([b"MEMORY", b"USAGE", b"n"], T0), int)
    reply = KVState().execute_read([b"WATCH-POINT"], T0)
    assert isinstance(reply, ErrorReply) and "answered by the node" in reply.message


def test_execute_read_refuses_a_write() -> None:
    with pytest.raises(InvariantViolation):
        KVState().execute_read([b"SET", b"k", b"v"], T0)


def test_execute_read_returns_client_errors() -> None:
    state = KVState()
    assert isinstance(state.execute_read([b"NOSUCH"], T0), ErrorReply)
    assert isinstance(state.execute_read([b"GET"], T0), ErrorReply)


def test_reads_through_the_log_are_allowed() -> None:
    state = _state_with(([b"SET", b"k", b"v"], T0))
    assert state.apply_command([b"GET", b"k"], T0) == b"v"


def test_an_error_reply_leaves_the_state_unchanged() -> None:
    state = _state_with(([b"SET", b"k", b"abc", b"EX", b"100"], T0), ([b"SET", b"n", b"1"], T0))
    before = state.digest()
    for argv in (
        [b"INCR", b"k"],
        [b"INCRBYFLOAT", b"k", b"1"],
        [b"SET", b"k", b"v", b"NX", b"XX"],
        [b"RENAME", b"missing", b"k"],
        [b"SETRANGE", b"k", b"-1", b"x"],
        [b"EXPIRE", b"k", b"10", b"NX", b"XX"],
        [b"MSET", b"k", b"v", b"n"],
        [b"INCRBY", b"n", b"9223372036854775807"],
        [b"NOSUCH", b"k"],
    ):
        assert isinstance(state.apply_command(argv, T0), ErrorReply)
    assert state.digest() == before


# ---- digest ----

_ITEM = st.tuples(
    st.binary(max_size=6), st.binary(max_size=6), st.none() | st.integers(T0 + 1, T0 + 10**6)
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_ITEM, unique_by=lambda item: item[0], max_size=40), st.randoms())
def test_digest_is_independent_of_insertion_order(items: list, rng: random.Random) -> None:
    first, second = KVState(), KVState()
    for key, value, expire_at_ms in items:
        first.write(key, value, expire_at_ms)
    shuffled = list(items)
    rng.shuffle(shuffled)
    for key, value, expire_at_ms in shuffled:
        second.write(key, value, expire_at_ms)
    assert first.digest() == second.digest()


def _digest_of(items: list[tuple[bytes, bytes, int | None]]) -> str:
    state = KVState()
    for key, value, expire_at_ms in items:
        state.write(key, value, expire_at_ms)
    return state.digest()


def test_digest_changes_with_any_single_change() -> None:
    base = [(b"a", b"1", None), (b"b", b"2", T0 + 5), (b"c", b"", None)]
    variants = [
        [(b"a", b"9", None), (b"b", b"2", T0 + 5), (b"c", b"", None)],  # a value
        [(b"a", b"1", None), (b"b", b"2", T0 + 6), (b"c", b"", None)],  # an expiry time
        [(b"a", b"1", None), (b"b", b"2", None), (b"c", b"", None)],  # an expiry removed
        [(b"a", b"1", T0 + 5), (b"b", b"2", T0 + 5), (b"c", b"", None)],  # an expiry added
        [(b"a", b"1", None), (b"b", b"2", T0 + 5)],  # a key removed
        [(b"a", b"1", None), (b"b", b"2", T0 + 5), (b"c", b"", None), (b"d", b"", None)],
        [(b"A", b"1", None), (b"b", b"2", T0 + 5), (b"c", b"", None)],  # a key renamed
        [(b"a1", b"", None), (b"b", b"2", T0 + 5), (b"c", b"", None)],  # bytes moved
    ]
    digests = {_digest_of(base)} | {_digest_of(variant) for variant in variants}
    assert len(digests) == 1 + len(variants)


def test_digest_of_empty_states_and_after_delete() -> None:
    state = KVState()
    empty = state.digest()
    assert empty == KVState().digest()
    state.write(b"k", b"v", T0 + 1)
    assert state.digest() != empty
    state.delete(b"k")
    assert state.digest() == empty


# ---- bookkeeping ----


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_counters_match_the_contents(data: st.DataObject) -> None:
    ops = generate_ops(lambda options: data.draw(st.sampled_from(list(options))), 80)
    _, (state,) = replay(ops)
    items = list(state.items())
    assert state.key_count() == len(items)
    assert state.expires_count() == sum(expire is not None for _, _, expire in items)
    strings = [(key, value) for key, value, _ in items if isinstance(value, bytes)]
    sets = [(key, value) for key, value, _ in items if isinstance(value, list)]
    assert all(sets_value for _, sets_value in sets)  # an empty set never exists
    data_bytes = sum(len(key) + len(value) for key, value in strings)
    data_bytes += sum(len(key) + sum(map(len, members)) for key, members in sets)
    expected_used = (
        data_bytes
        + len(items) * KEY_OVERHEAD_BYTES
        + state.expires_count() * EXPIRY_OVERHEAD_BYTES
        + len(sets) * SET_OVERHEAD_BYTES
        + sum(len(members) for _, members in sets) * SET_MEMBER_OVERHEAD_BYTES
    )
    assert state.used_bytes() == expected_used


def test_items_and_restore_round_trip() -> None:
    rng = random.Random(7)
    ops = generate_ops(lambda options: rng.choice(list(options)), 500)
    _, (state,) = replay(ops)
    restored = KVState()
    for key, value, expire_at_ms in state.items():
        restored.restore_item(key, value, expire_at_ms)
    assert restored.digest() == state.digest()
    assert list(restored.items()) == list(state.items())  # set members in the same positions
    assert restored.used_bytes() == state.used_bytes()
    assert restored.key_count() == state.key_count()
    assert restored.expired_keys(10**12, 10**6) == state.expired_keys(10**12, 10**6)


def test_write_refuses_non_bytes_values() -> None:
    with pytest.raises(InvariantViolation):
        KVState().write(b"k", "text")  # type: ignore[arg-type]
