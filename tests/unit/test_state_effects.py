"""Recorded execution, effects and undo: the two replication modes must leave every replica in the
same state, and a leader must be able to take back what it executed speculatively.

The property tests run seeded workloads that mix strings, sets and hashes big enough to rebuild
their index, lists pushed, popped, trimmed, moved and edited in the middle, expiry,
RENAME/COPY/DEL/FLUSHALL and commands that fail; a failure names its seed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from replikv.invariants import InvariantViolation
from replikv.replies import ErrorReply
from replikv.state import (
    EFFECT_DELETE,
    EFFECT_EXPIRE,
    EFFECT_FLUSH,
    EFFECT_HASH_DELETE,
    EFFECT_HASH_REPLACE,
    EFFECT_HASH_SET,
    EFFECT_LIST_INSERT,
    EFFECT_LIST_POP_HEAD,
    EFFECT_LIST_POP_TAIL,
    EFFECT_LIST_PUSH_HEAD,
    EFFECT_LIST_PUSH_TAIL,
    EFFECT_LIST_REMOVE,
    EFFECT_LIST_REPLACE,
    EFFECT_LIST_SET,
    EFFECT_SET_ADD,
    EFFECT_SET_REMOVE,
    EFFECT_SET_REPLACE,
    EFFECT_SET_STRING,
    EFFECT_ZSET_ADD,
    EFFECT_ZSET_REMOVE,
    EFFECT_ZSET_REMOVE_RANGE,
    EFFECT_ZSET_REPLACE,
    SHARD_COUNT,
    KVState,
    shard_of,
)

T0 = 1_000_000

# ---- a seeded workload ----

# b"a" and b"k1065" share a shard, so the order of keys within a shard is observed too.
_KEYS = [b"a", b"b", b"c", b"k1065"]
_BIG = b"big"  # mostly set commands, so one set grows past several index rebuilds and back
_MEMBERS = [b"m%d" % i for i in range(400)] + [b"", b"\x00\xff"]
_BIG_HASH = b"bighash"  # mostly hash commands: a hash that grows past index rebuilds and back
_BIG_ZSET = b"bigzset"  # mostly sorted set commands, likewise
_SCORES = [b"1", b"-2.5", b"0", b"-0", b"inf", b"-inf", b"0.1", b"7", b"1e20", b"3"]

Op = tuple[str, list[bytes] | int, int, int]  # (kind, argv or expiry limit, time_ms, seed)


def _members(rng: random.Random, most: int, pool: int = len(_MEMBERS)) -> list[bytes]:
    return [
        _MEMBERS[i] if i < len(_MEMBERS) else b"m%d" % i
        for i in (rng.randrange(pool) for _ in range(rng.randint(1, most)))
    ]


def _pairs(rng: random.Random, most: int, pool: int = len(_MEMBERS)) -> list[bytes]:
    """Fields (repeats allowed: the last value wins) each followed by a value."""
    return [item for field in _members(rng, most, pool)
            for item in (field, rng.choice([b"1", b"x", b"22", b"-7", b"1.5", b""]))]


def _scored(rng: random.Random, most: int, pool: int = len(_MEMBERS)) -> list[bytes]:
    """Members (repeats allowed: the last score wins) each preceded by a score."""
    return [item for member in _members(rng, most, pool)
            for item in (rng.choice(_SCORES), member)]


def _count(rng: random.Random) -> list[bytes]:
    return rng.choice([[], [b"1"], [b"2"], [b"0"], [b"50"]])


def _number(rng: random.Random) -> bytes:
    return b"%d" % rng.choice([0, 1, 2, 5, 40, 100, 2000, -1])


_TEMPLATES: list[tuple[int, Callable[[random.Random], list[bytes]]]] = [
    # (weight, argv maker). Sets grow in big steps so they cross the index rebuild thresholds.
    (14, lambda r: [b"SADD", r.choice(_KEYS), *_members(r, 90)]),
    (12, lambda r: [b"SADD", _BIG, *_members(r, 150, 1200)]),
    (4, lambda r: [b"SREM", _BIG, *_members(r, 200, 1200)]),
    (4, lambda r: [b"SPOP", _BIG, b"%d" % r.randint(1, 150)]),
    (1, lambda r: [r.choice([b"RENAME", b"COPY", b"SMOVE"]), _BIG, r.choice(_KEYS), b"m1"][:3]),
    (1, lambda r: [b"SINTERSTORE", _BIG, _BIG, r.choice(_KEYS)]),
    (6, lambda r: [b"SREM", r.choice(_KEYS), *_members(r, 90)]),
    (3, lambda r: [b"SPOP", r.choice(_KEYS)]),
    (4, lambda r: [b"SPOP", r.choice(_KEYS), b"%d" % r.randint(0, 120)]),
    (2, lambda r: [b"SRANDMEMBER", r.choice(_KEYS), b"%d" % r.randint(-4, 4)]),
    (3, lambda r: [b"SMOVE", r.choice(_KEYS), r.choice(_KEYS), r.choice(_MEMBERS[:20])]),
    (2, lambda r: [b"SINTERSTORE", r.choice(_KEYS), r.choice(_KEYS), r.choice(_KEYS)]),
    (2, lambda r: [b"SUNIONSTORE", r.choice(_KEYS), r.choice(_KEYS), r.choice(_KEYS)]),
    (2, lambda r: [b"SDIFFSTORE", r.choice(_KEYS), r.choice(_KEYS), r.choice(_KEYS)]),
    (1, lambda r: [b"SMEMBERS", r.choice(_KEYS)]),
    (1, lambda r: [b"SINTERCARD", b"2", r.choice(_KEYS), r.choice(_KEYS), b"LIMIT", b"3"]),
    (4, lambda r: [b"SET", r.choice(_KEYS), r.choice([b"1", b"x", b"22"])]),
    (2, lambda r: [b"SET", r.choice(_KEYS), b"v", b"PX", b"%d" % r.randint(1, 3000)]),
    (1, lambda r: [b"SET", r.choice(_KEYS), b"v", b"GET"]),
    (2, lambda r: [b"INCR", r.choice(_KEYS)]),
    (2, lambda r: [b"APPEND", r.choice(_KEYS), b"yz"]),
    (1, lambda r: [b"GETDEL", r.choice(_KEYS)]),
    (1, lambda r: [b"SETRANGE", r.choice(_KEYS), b"3", b"q"]),
    (3, lambda r: [b"PEXPIRE", r.choice(_KEYS), b"%d" % r.randint(-10, 3000)]),
    (1, lambda r: [b"EXPIRE", r.choice(_KEYS), _number(r), r.choice([b"NX", b"XX", b"GT"])]),
    (1, lambda r: [b"PEXPIREAT", r.choice(_KEYS), b"%d" % (T0 + r.randint(0, 20_000))]),
    (2, lambda r: [b"PERSIST", r.choice(_KEYS)]),
    (2, lambda r: [b"DEL", r.choice(_KEYS), r.choice(_KEYS)]),
    (2, lambda r: [b"RENAME", r.choice(_KEYS), r.choice(_KEYS)]),
    (1, lambda r: [b"RENAMENX", r.choice(_KEYS), r.choice(_KEYS)]),
    (2, lambda r: [b"COPY", r.choice(_KEYS), r.choice(_KEYS), b"REPLACE"]),
    (6, lambda r: [b"HSET", r.choice(_KEYS), *_pairs(r, 40)]),
    (7, lambda r: [b"HSET", _BIG_HASH, *_pairs(r, 150, 1200)]),
    (4, lambda r: [b"HDEL", _BIG_HASH, *_members(r, 300, 1200)]),
    (1, lambda r: [b"HDEL", _BIG_HASH, *[b"m%d" % i for i in range(r.randrange(400), 1200)]]),
    (3, lambda r: [b"HDEL", r.choice(_KEYS), *_members(r, 40)]),
    (2, lambda r: [b"HINCRBY", r.choice(_KEYS + [_BIG_HASH]), r.choice(_MEMBERS[:8]), _number(r)]),
    (2, lambda r: [b"HINCRBYFLOAT", r.choice(_KEYS), r.choice(_MEMBERS[:8]), b"0.25"]),
    (1, lambda r: [b"HSETNX", r.choice(_KEYS), r.choice(_MEMBERS[:8]), b"nx"]),
    (1, lambda r: [b"HMSET", r.choice(_KEYS), *_pairs(r, 4)]),
    (1, lambda r: [b"HRANDFIELD", r.choice(_KEYS), b"%d" % r.randint(-4, 4), b"WITHVALUES"]),
    (1, lambda r: [b"HGETALL", r.choice(_KEYS + [_BIG_HASH])]),
    (1, lambda r: [r.choice([b"RENAME", b"COPY"]), _BIG_HASH, r.choice(_KEYS)]),
    (5, lambda r: [r.choice([b"LPUSH", b"RPUSH"]), r.choice(_KEYS), *_members(r, 30, 12)]),
    (1, lambda r: [r.choice([b"LPUSHX", b"RPUSHX"]), r.choice(_KEYS), *_members(r, 3, 12)]),
    (4, lambda r: [r.choice([b"LPOP", b"RPOP"]), r.choice(_KEYS), *_count(r)]),
    (2, lambda r: [b"LTRIM", r.choice(_KEYS), b"%d" % r.randint(-5, 5), b"%d" % r.randint(-8, 30)]),
    (2, lambda r: [b"LREM", r.choice(_KEYS), b"%d" % r.randint(-3, 3), r.choice(_MEMBERS[:12])]),
    (2, lambda r: [b"LSET", r.choice(_KEYS), b"%d" % r.randint(-6, 6), r.choice(_MEMBERS[:12])]),
    (2, lambda r: [b"LINSERT", r.choice(_KEYS), r.choice([b"BEFORE", b"AFTER"]),
                   r.choice(_MEMBERS[:12]), b"ins"]),
    (2, lambda r: [b"LMOVE", r.choice(_KEYS), r.choice(_KEYS), r.choice([b"LEFT", b"RIGHT"]),
                   r.choice([b"LEFT", b"RIGHT"])]),
    (1, lambda r: [b"RPOPLPUSH", r.choice(_KEYS), r.choice(_KEYS)]),
    (1, lambda r: [b"LMPOP", b"2", r.choice(_KEYS), r.choice(_KEYS), r.choice([b"LEFT", b"RIGHT"]),
                   b"COUNT", b"%d" % r.randint(1, 4)]),
    (1, lambda r: [b"LRANGE", r.choice(_KEYS), b"0", b"-1"]),
    (3, lambda r: [b"ZADD", r.choice(_KEYS), *_scored(r, 30)]),
    (6, lambda r: [b"ZADD", _BIG_ZSET, *_scored(r, 150, 1200)]),
    (1, lambda r: [b"ZADD", r.choice(_KEYS + [_BIG_ZSET]), r.choice([b"NX", b"XX", b"GT", b"CH"]),
                   *_scored(r, 10)]),
    (1, lambda r: [b"ZINCRBY", r.choice(_KEYS + [_BIG_ZSET]), r.choice(_SCORES),
                   r.choice(_MEMBERS[:8])]),
    (4, lambda r: [b"ZREM", _BIG_ZSET, *_members(r, 300, 1200)]),
    # Keeps a few dozen members: the index shrinks without the key going.
    (2, lambda r: [b"ZREMRANGEBYRANK", _BIG_ZSET, b"0", b"-%d" % r.randint(10, 60)]),
    (3, lambda r: [r.choice([b"ZPOPMIN", b"ZPOPMAX"]), _BIG_ZSET, b"%d" % r.randint(1, 40)]),
    (1, lambda r: [b"ZREM", r.choice(_KEYS), *_members(r, 20)]),
    (2, lambda r: [r.choice([b"ZPOPMIN", b"ZPOPMAX"]), r.choice(_KEYS + [_BIG_ZSET]),
                   *_count(r)]),
    (1, lambda r: [b"ZMPOP", b"2", r.choice(_KEYS), _BIG_ZSET, r.choice([b"MIN", b"MAX"]),
                   b"COUNT", b"%d" % r.randint(1, 60)]),
    (1, lambda r: [b"ZREMRANGEBYRANK", r.choice(_KEYS + [_BIG_ZSET]), b"%d" % r.randint(-9, 9),
                   b"%d" % r.randint(-9, 40)]),
    (1, lambda r: [b"ZREMRANGEBYSCORE", r.choice(_KEYS + [_BIG_ZSET]), b"(0", b"5"]),
    (1, lambda r: [b"ZREMRANGEBYLEX", r.choice(_KEYS), b"[m1", b"(m3"]),
    (1, lambda r: [r.choice([b"ZUNIONSTORE", b"ZINTERSTORE", b"ZDIFFSTORE"]), r.choice(_KEYS),
                   b"2", r.choice(_KEYS), r.choice(_KEYS + [_BIG_ZSET])]),
    (1, lambda r: [b"ZRANGESTORE", r.choice(_KEYS), _BIG_ZSET, b"0", b"%d" % r.randint(0, 50)]),
    (1, lambda r: [r.choice([b"RENAME", b"COPY"]), _BIG_ZSET, r.choice(_KEYS)]),
    (1, lambda r: [b"ZRANGE", r.choice(_KEYS + [_BIG_ZSET]), b"0", b"-1", b"WITHSCORES"]),
    (1, lambda r: [b"SET", r.choice(_KEYS), b"v", b"NX", b"XX"]),  # a syntax error
    (1, lambda r: [b"SPOP", r.choice(_KEYS), b"-1"]),  # a parse error
    (1, lambda r: [b"NOSUCH", r.choice(_KEYS)]),
]
_FLUSH_ONE_IN = 150
_EXPIRY_ENTRY_ONE_IN = 12


def generate_ops(seed: int, steps: int) -> list[Op]:
    rng = random.Random(seed)
    makers = [maker for weight, maker in _TEMPLATES for _ in range(weight)]
    ops: list[Op] = []
    now_ms = T0
    for _ in range(steps):
        now_ms += rng.choice([0, 0, 1, 10, 100, 700])
        command_seed = rng.getrandbits(32)
        roll = rng.randrange(_FLUSH_ONE_IN)
        if roll == 0:
            ops.append(("cmd", [b"FLUSHALL"], now_ms, command_seed))
        elif roll % _EXPIRY_ENTRY_ONE_IN == 0:
            ops.append(("expire", rng.choice([1, 3, 100]), now_ms, 0))
        else:
            ops.append(("cmd", rng.choice(makers)(rng), now_ms, command_seed))
    return ops


def run_recorded(state: KVState, op: Op) -> tuple[object, list[list], object]:
    """Execute one op on a leader: a command, or an expiry entry of the keys it lists."""
    kind, payload, time_ms, seed = op
    if kind == "cmd":
        return state.execute_recorded(payload, time_ms, seed)  # type: ignore[arg-type]
    keys = state.expired_keys(time_ms, payload)  # type: ignore[arg-type]
    count, effects, undo = state.expire_recorded(keys, time_ms)
    return (keys, count), effects, undo


def run_active(state: KVState, op: Op, keys: list[bytes] | None = None) -> object:
    """Apply one op as an active-mode follower: the command, or the leader's expiry keys."""
    kind, payload, time_ms, seed = op
    if kind == "cmd":
        return state.apply_command(payload, time_ms, seed)  # type: ignore[arg-type]
    if keys is None:
        keys = state.expired_keys(time_ms, payload)  # type: ignore[arg-type]
    return keys, state.apply_expire(keys, time_ms)


def through_the_log(effects: list[list]) -> list[list]:
    """Effects as a backup reads them back from a log entry."""
    packed = msgpack.packb(effects, use_bin_type=True)
    return msgpack.unpackb(packed, use_list=True, raw=False)


def counters(state: KVState) -> tuple[str, int, int, int]:
    return state.digest(), state.key_count(), state.expires_count(), state.used_bytes()


def observe(state: KVState, time_ms: int) -> dict[str, object]:
    """Everything a client or the node can see, order included."""
    read = state.execute_read
    scan = read([b"SCAN", b"0", b"COUNT", b"%d" % (10 * SHARD_COUNT)], time_ms)
    seen: dict[str, object] = {
        "counters": counters(state),
        "expired_keys": state.expired_keys(10**15, 10**6),
        "scan": scan,
        "items": list(state.items()),
        "randomkey": read([b"RANDOMKEY"], time_ms),
    }
    for key in [*_KEYS, _BIG, _BIG_HASH, _BIG_ZSET]:
        seen[key.decode()] = [
            read([b"PTTL", key], time_ms),
            read([b"TYPE", key], time_ms),
            read([b"SMEMBERS", key], time_ms),
            sscan_all(state, key, time_ms),
            read([b"SRANDMEMBER", key, b"-3"], time_ms, 9),
            hgetall_in_order(state, key, time_ms),
            sscan_all(state, key, time_ms, b"HSCAN"),
            read([b"HRANDFIELD", key, b"-3", b"WITHVALUES"], time_ms, 9),
            read([b"LRANGE", key, b"0", b"-1"], time_ms),
            read([b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"], time_ms),
            sscan_all(state, key, time_ms, b"ZSCAN"),
            read([b"ZRANDMEMBER", key, b"-3", b"WITHSCORES"], time_ms, 9),
            read([b"OBJECT", b"ENCODING", key], time_ms),
        ]
    return seen


def hgetall_in_order(state: KVState, key: bytes, time_ms: int) -> object:
    reply = state.execute_read([b"HGETALL", key], time_ms)
    return list(reply.items()) if isinstance(reply, dict) else reply


def ordered_items(state: KVState) -> list[tuple[bytes, object, int | None]]:
    """state.items() with each hash's fields as a list, so that comparing two states compares
    their fields' positions too (dicts compare equal in any order)."""
    return [(key, list(value.items()) if isinstance(value, dict) else value, expire_at_ms)
            for key, value, expire_at_ms in state.items()]


def sscan_all(state: KVState, key: bytes, time_ms: int, command: bytes = b"SSCAN") -> object:
    cursor = b"0"
    found: list[object] = []
    while True:
        reply = state.execute_read([command, key, cursor, b"COUNT", b"10"], time_ms)
        if not isinstance(reply, list):
            return reply
        cursor = reply[0]
        found.append(reply[1])
        if cursor == b"0":
            return found


def bucket_count(state: KVState, key: bytes = _BIG) -> int:
    value = state.lookup(key, 0)
    return len(value._buckets) if value is not None and not isinstance(value, bytes) else 0


# ---- the two modes agree ----

# Effects that change the state relative to what it holds (applied exactly once, in log order,
# and refused as contradicting the state when there is nothing left to change).
_DELTAS = (EFFECT_LIST_PUSH_HEAD, EFFECT_LIST_PUSH_TAIL, EFFECT_LIST_POP_HEAD,
           EFFECT_LIST_POP_TAIL, EFFECT_LIST_INSERT, EFFECT_LIST_REMOVE, EFFECT_ZSET_REMOVE,
           EFFECT_ZSET_REMOVE_RANGE)

SEEDS = range(8)
# Enough for the big set, hash and sorted set each to grow past index rebuilds and shrink back.
WORKLOAD_STEPS = 760


@pytest.mark.parametrize("seed", SEEDS)
def test_recorded_effects_and_active_replay_agree(seed: int) -> None:
    """Per command: a leader executing recorded (A), a passive backup applying its effects (B),
    an active follower running the command with the same seed (C), and a backup that applies
    every effects list twice (D) all hold the same state. (D) applies a list's pushes, pops,
    inserts and removals, and a sorted set's removals, once: those effects are deltas, applied
    exactly once in log order.)"""
    leader, backup, follower, twice = KVState(), KVState(), KVState(), KVState()
    errors = 0
    for step, op in enumerate(generate_ops(seed, WORKLOAD_STEPS)):
        reply, effects, _undo = run_recorded(leader, op)
        keys = reply[0] if op[0] == "expire" else None  # type: ignore[index]
        assert run_active(follower, op, keys) == reply, (seed, step, op)
        logged = through_the_log(effects)
        assert logged == effects, (seed, step, op)
        backup.apply_effects(logged)
        twice.apply_effects(logged)
        if not any(effect[0] in _DELTAS for effect in logged):
            twice.apply_effects(logged)
        if isinstance(reply, ErrorReply):
            errors += 1
            assert all(effect[0] == EFFECT_DELETE for effect in effects), (seed, step, op)
        expected = counters(leader)
        assert counters(follower) == expected, (seed, step, op)
        assert counters(backup) == expected, (seed, step, op)
        assert twice.digest() == expected[0], (seed, step, op)
    # Replaying effects performs the leader's own appends and swap-removes: same positions.
    assert ordered_items(backup) == ordered_items(leader) == ordered_items(follower)
    assert errors > 5


@pytest.mark.parametrize("key", [_BIG, _BIG_HASH, _BIG_ZSET])
def test_the_workload_grows_and_shrinks_a_set_and_a_hash_index(key: bytes) -> None:
    """The property tests are only as good as the workload: its big set, hash and sorted set
    must rebuild their index both ways."""
    grew = shrank = 0
    for seed in SEEDS:
        state = KVState()
        buckets_seen = [0]
        for op in generate_ops(seed, WORKLOAD_STEPS):
            run_active(state, op)
            if bucket_count(state, key) != buckets_seen[-1]:
                buckets_seen.append(bucket_count(state, key))
        grew += max(buckets_seen) >= 4
        shrank += any(0 < later < earlier for earlier, later in itertools.pairwise(buckets_seen))
    assert grew == len(SEEDS)
    assert shrank >= len(SEEDS) // 2


# ---- undo ----


@pytest.mark.parametrize("seed", SEEDS)
def test_undo_in_reverse_order_restores_everything_observable(seed: int) -> None:
    state = KVState()
    undone: list[tuple[object, dict[str, object], int]] = []
    for op in generate_ops(200 + seed, 100):
        time_ms = op[2]
        before = observe(state, time_ms)
        _, _, undo = run_recorded(state, op)
        undone.append((undo, before, time_ms))
    assert state.key_count() > 0
    while undone:
        undo, before, time_ms = undone.pop()
        state.undo(undo)  # type: ignore[arg-type]
        assert observe(state, time_ms) == before, (seed, len(undone))
    assert counters(state) == counters(KVState())


@pytest.mark.parametrize("seed", SEEDS)
def test_after_undo_the_state_behaves_as_if_the_commands_never_ran(seed: int) -> None:
    """Undo must restore hidden structure too (set index, member positions, expiry heap): a
    state that ran and undid ops[i:j] continues exactly like one that never ran them."""
    ops = generate_ops(200 + seed, 240)
    rng = random.Random(seed)
    first, last = sorted(rng.sample(range(40, 200), 2))
    undoing = KVState()
    undos = []
    for op in ops[:last]:
        undos.append(run_recorded(undoing, op)[2])
    for undo in reversed(undos[first:]):
        undoing.undo(undo)  # type: ignore[arg-type]
    never = KVState()
    for op in ops[:first]:
        run_active(never, op)
    for step, op in enumerate(ops[last:]):
        assert run_active(undoing, op) == run_active(never, op), (seed, step, op)
    assert ordered_items(undoing) == ordered_items(never)
    assert counters(undoing) == counters(never)


def test_undo_keeps_the_scan_order_of_keys_sharing_a_shard() -> None:
    state = KVState()
    keys = [b"k1065", b"a", b"k6880", b"k8646"]
    assert len({shard_of(key) for key in keys}) == 1
    for key in keys:
        state.apply_command([b"SET", key, b"v"], T0)
    before = observe(state, T0)
    _, _, undo = state.execute_recorded([b"DEL", b"k1065", b"k6880"], T0)
    state.undo(undo)
    assert observe(state, T0) == before


def test_undo_must_revert_the_latest_change_first() -> None:
    state = KVState()
    _, _, first = state.execute_recorded([b"SADD", b"s", b"a"], T0)
    _, _, second = state.execute_recorded([b"SADD", b"s", b"b"], T0)
    with pytest.raises(InvariantViolation):
        state.undo(first)
    state.undo(second)
    with pytest.raises(InvariantViolation):
        state.undo(second)  # twice
    state.undo(first)
    assert state.key_count() == 0
    _, _, third = state.execute_recorded([b"SADD", b"s", b"c"], T0)
    state.apply_command([b"SADD", b"s", b"d"], T0)  # a change the undo does not know about
    with pytest.raises(InvariantViolation):
        state.undo(third)


def test_a_bug_during_a_recorded_execution_leaves_the_state_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", b"a", b"b"], T0)
    state.apply_command([b"SET", b"gone", b"v", b"PX", b"5"], T0)
    before = counters(state)
    set_add = KVState.set_add

    def set_add_then_fail(self: KVState, key: bytes, members: list[bytes]) -> int:
        set_add(self, key, members)
        raise RuntimeError("boom")

    monkeypatch.setattr(KVState, "set_add", set_add_then_fail)
    with pytest.raises(RuntimeError):
        state.execute_recorded([b"SMOVE", b"s", b"gone", b"a"], T0 + 10)
    assert counters(state) == before
    assert state.execute_read([b"SMEMBERS", b"s"], T0) == [b"a", b"b"]


def test_a_command_that_changes_the_state_and_then_fails_is_a_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from replikv.replies import CommandError

    state = KVState()
    state.apply_command([b"SADD", b"s", b"a", b"b"], T0)
    before = counters(state)
    set_add = KVState.set_add

    def set_add_then_refuse(self: KVState, key: bytes, members: list[bytes]) -> int:
        set_add(self, key, members)
        raise CommandError("ERR too late")

    monkeypatch.setattr(KVState, "set_add", set_add_then_refuse)
    with pytest.raises(InvariantViolation):
        state.execute_recorded([b"SADD", b"s", b"c"], T0)
    assert counters(state) == before


# ---- effects are small and say what changed ----


def test_adding_one_member_to_a_big_set_records_one_member() -> None:
    state = KVState()
    members = [b"member:%d" % i for i in range(50_000)]
    state.apply_command([b"SADD", b"big", *members], T0)
    before = counters(state)
    reply, effects, undo = state.execute_recorded([b"SADD", b"big", b"new", b"member:7"], T0)
    assert reply == 1
    assert effects == [[EFFECT_SET_ADD, b"big", [b"new"]]]
    assert len(undo._log) <= 2  # the append, maybe an index rebuild
    _, effects, _ = state.execute_recorded([b"SREM", b"big", b"member:3", b"nope"], T0)
    assert effects == [[EFFECT_SET_REMOVE, b"big", [b"member:3"]]]
    state.undo(_)
    state.undo(undo)
    assert counters(state) == before


def test_deleting_a_big_set_keeps_the_set_for_undo() -> None:
    state = KVState()
    state.apply_command([b"SADD", b"big", *[b"%d" % i for i in range(20_000)]], T0)
    original = state.lookup(b"big", T0)
    before = observe(state, T0)
    _, effects, undo = state.execute_recorded([b"DEL", b"big"], T0)
    assert effects == [[EFFECT_DELETE, b"big"]]
    assert len(undo._log) == 1
    state.undo(undo)
    assert state.lookup(b"big", T0) is original
    assert observe(state, T0) == before


def test_flushall_records_one_effect_and_undo_restores_the_old_shards() -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", b"a"], T0)
    state.apply_command([b"SET", b"k", b"v", b"PX", b"100"], T0)
    before = observe(state, T0)
    _, effects, undo = state.execute_recorded([b"FLUSHALL"], T0)
    assert effects == [[EFFECT_FLUSH]]
    assert len(undo._log) == 1
    state.undo(undo)
    assert observe(state, T0) == before


@pytest.mark.parametrize(
    ("setup", "argv", "expected"),
    [
        ([], [b"SET", b"k", b"v", b"PX", b"100"], [[EFFECT_SET_STRING, b"k", b"v", T0 + 100]]),
        ([[b"SET", b"k", b"1", b"EX", b"9"]], [b"INCR", b"k"],
         [[EFFECT_SET_STRING, b"k", b"2", T0 + 9000]]),
        ([[b"SET", b"k", b"v"]], [b"PEXPIRE", b"k", b"50"], [[EFFECT_EXPIRE, b"k", T0 + 50]]),
        ([[b"SET", b"k", b"v", b"PX", b"9"]], [b"PERSIST", b"k"], [[EFFECT_EXPIRE, b"k", None]]),
        ([[b"SET", b"k", b"v"]], [b"PEXPIRE", b"k", b"0"], [[EFFECT_DELETE, b"k"]]),
        ([[b"SADD", b"a", b"x", b"y"], [b"SADD", b"b", b"y", b"x"]], [b"SINTERSTORE", b"d", b"a", b"b"],
         [[EFFECT_SET_REPLACE, b"d", [b"x", b"y"], None]]),
        ([[b"SADD", b"a", b"x"], [b"SET", b"d", b"v"]], [b"SINTERSTORE", b"d", b"a", b"missing"],
         [[EFFECT_DELETE, b"d"]]),
        ([[b"SADD", b"a", b"x", b"y"], [b"PEXPIRE", b"a", b"70"]], [b"RENAME", b"a", b"b"],
         [[EFFECT_DELETE, b"a"], [EFFECT_SET_REPLACE, b"b", [b"x", b"y"], T0 + 70]]),
        ([[b"SADD", b"a", b"x"]], [b"COPY", b"a", b"b"], [[EFFECT_SET_REPLACE, b"b", [b"x"], None]]),
        ([[b"SADD", b"a", b"x", b"y"]], [b"SMOVE", b"a", b"b", b"x"],
         [[EFFECT_SET_REMOVE, b"a", [b"x"]], [EFFECT_SET_ADD, b"b", [b"x"]]]),
        ([[b"SADD", b"a", b"x", b"y"]], [b"SPOP", b"a", b"5"], [[EFFECT_DELETE, b"a"]]),
        ([[b"SADD", b"a", b"x", b"y"]], [b"SREM", b"a", b"y", b"x"], [[EFFECT_DELETE, b"a"]]),
        ([[b"SADD", b"a", b"x"]], [b"SADD", b"a", b"x"], []),
        ([[b"SADD", b"a", b"x"]], [b"SMEMBERS", b"a"], []),
        ([[b"SET", b"k", b"v"]], [b"SADD", b"k", b"x"], []),  # WRONGTYPE
        ([], [b"HSET", b"h", b"f", b"1", b"g", b"2", b"f", b"3"],
         [[EFFECT_HASH_SET, b"h", [b"f", b"3", b"g", b"2"]]]),
        ([[b"HSET", b"h", b"f", b"1"]], [b"HINCRBY", b"h", b"f", b"41"],
         [[EFFECT_HASH_SET, b"h", [b"f", b"42"]]]),
        ([[b"HSET", b"h", b"f", b"1"]], [b"HINCRBYFLOAT", b"h", b"f", b"0.5"],
         [[EFFECT_HASH_SET, b"h", [b"f", b"1.5"]]]),
        ([[b"HSET", b"h", b"f", b"1"]], [b"HSETNX", b"h", b"f", b"2"], []),
        ([[b"HSET", b"h", b"f", b"1", b"g", b"2"]], [b"HDEL", b"h", b"g", b"x", b"g"],
         [[EFFECT_HASH_DELETE, b"h", [b"g"]]]),
        ([[b"HSET", b"h", b"f", b"1"]], [b"HDEL", b"h", b"f"], [[EFFECT_DELETE, b"h"]]),
        ([[b"HSET", b"h", b"f", b"1"], [b"PEXPIRE", b"h", b"70"]], [b"RENAME", b"h", b"i"],
         [[EFFECT_DELETE, b"h"], [EFFECT_HASH_REPLACE, b"i", [b"f", b"1"], T0 + 70]]),
        ([[b"HSET", b"h", b"f", b"1", b"g", b"2"]], [b"COPY", b"h", b"i"],
         [[EFFECT_HASH_REPLACE, b"i", [b"f", b"1", b"g", b"2"], None]]),
        ([[b"HSET", b"h", b"f", b"x"]], [b"HINCRBY", b"h", b"f", b"1"], []),  # not an integer
        ([[b"SET", b"k", b"v"]], [b"HSET", b"k", b"f", b"v"], []),  # WRONGTYPE
        ([[b"HSET", b"h", b"f", b"v"]], [b"SADD", b"h", b"x"], []),  # WRONGTYPE
        ([], [b"LPUSH", b"l", b"a", b"b"], [[EFFECT_LIST_PUSH_HEAD, b"l", [b"a", b"b"]]]),
        ([[b"RPUSH", b"l", b"a"]], [b"RPUSH", b"l", b"b"], [[EFFECT_LIST_PUSH_TAIL, b"l", [b"b"]]]),
        ([[b"RPUSH", b"l", b"a", b"b", b"c"]], [b"LPOP", b"l", b"2"],
         [[EFFECT_LIST_POP_HEAD, b"l", 2]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"RPOP", b"l"], [[EFFECT_LIST_POP_TAIL, b"l", 1]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"RPOP", b"l", b"9"], [[EFFECT_DELETE, b"l"]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LPOP", b"l", b"0"], []),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LSET", b"l", b"-1", b"z"],
         [[EFFECT_LIST_SET, b"l", 1, b"z"]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LINSERT", b"l", b"AFTER", b"a", b"z"],
         [[EFFECT_LIST_INSERT, b"l", 1, b"z"]]),
        ([[b"RPUSH", b"l", b"x", b"a", b"x", b"b", b"x"]], [b"LREM", b"l", b"-2", b"x"],
         [[EFFECT_LIST_REMOVE, b"l", [2, 4]]]),
        ([[b"RPUSH", b"l", b"x", b"x"]], [b"LREM", b"l", b"0", b"x"], [[EFFECT_DELETE, b"l"]]),
        ([[b"RPUSH", b"l", b"a", b"b", b"c", b"d"]], [b"LTRIM", b"l", b"1", b"1"],
         [[EFFECT_LIST_POP_HEAD, b"l", 1], [EFFECT_LIST_POP_TAIL, b"l", 2]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LTRIM", b"l", b"5", b"9"], [[EFFECT_DELETE, b"l"]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LTRIM", b"l", b"0", b"-1"], []),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LMOVE", b"l", b"m", b"LEFT", b"RIGHT"],
         [[EFFECT_LIST_POP_HEAD, b"l", 1], [EFFECT_LIST_PUSH_TAIL, b"m", [b"a"]]]),
        ([[b"RPUSH", b"l", b"a"]], [b"RPOPLPUSH", b"l", b"m"],
         [[EFFECT_DELETE, b"l"], [EFFECT_LIST_PUSH_HEAD, b"m", [b"a"]]]),
        ([[b"RPUSH", b"l", b"a"], [b"PEXPIRE", b"l", b"70"]], [b"RPOPLPUSH", b"l", b"l"], []),
        ([[b"RPUSH", b"l", b"a", b"b"], [b"PEXPIRE", b"l", b"70"]], [b"RENAME", b"l", b"m"],
         [[EFFECT_DELETE, b"l"], [EFFECT_LIST_REPLACE, b"m", [b"a", b"b"], T0 + 70]]),
        ([[b"RPUSH", b"l", b"a", b"b"]], [b"LMPOP", b"2", b"x", b"l", b"RIGHT"],
         [[EFFECT_LIST_POP_TAIL, b"l", 1]]),
        ([[b"SET", b"k", b"v"]], [b"LPUSH", b"k", b"x"], []),  # WRONGTYPE
        ([[b"RPUSH", b"l", b"a"], [b"SET", b"k", b"v"]], [b"LMOVE", b"l", b"k", b"LEFT", b"LEFT"],
         []),  # WRONGTYPE
        ([], [b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"a"],
         [[EFFECT_ZSET_ADD, b"z", [b"a", 3.0, b"b", 2.0]]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b"]], [b"ZADD", b"z", b"1", b"a", b"5", b"b"],
         [[EFFECT_ZSET_ADD, b"z", [b"b", 5.0]]]),  # only what changed
        ([[b"ZADD", b"z", b"1", b"a"]], [b"ZADD", b"z", b"CH", b"2", b"a", b"1", b"a"], []),
        ([[b"ZADD", b"z", b"1", b"a"]], [b"ZINCRBY", b"z", b"0.5", b"a"],
         [[EFFECT_ZSET_ADD, b"z", [b"a", 1.5]]]),
        ([], [b"ZADD", b"z", b"-0", b"a"], [[EFFECT_ZSET_ADD, b"z", [b"a", 0.0]]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b"]], [b"ZREM", b"z", b"b", b"x", b"b"],
         [[EFFECT_ZSET_REMOVE, b"z", [b"b"]]]),
        ([[b"ZADD", b"z", b"1", b"a"]], [b"ZREM", b"z", b"a"], [[EFFECT_DELETE, b"z"]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"c"]], [b"ZPOPMAX", b"z", b"2"],
         [[EFFECT_ZSET_REMOVE_RANGE, b"z", 1, 2]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"c"]], [b"ZPOPMIN", b"z"],
         [[EFFECT_ZSET_REMOVE_RANGE, b"z", 0, 1]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"c"]],
         [b"ZREMRANGEBYSCORE", b"z", b"(1", b"2"], [[EFFECT_ZSET_REMOVE_RANGE, b"z", 1, 1]]),
        ([[b"ZADD", b"z", b"1", b"a"]], [b"ZMPOP", b"1", b"z", b"MIN", b"COUNT", b"5"],
         [[EFFECT_DELETE, b"z"]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b"], [b"PEXPIRE", b"z", b"70"]],
         [b"RENAME", b"z", b"y"],
         [[EFFECT_DELETE, b"z"], [EFFECT_ZSET_REPLACE, b"y", [b"a", 1.0, b"b", 2.0], T0 + 70]]),
        ([[b"ZADD", b"z", b"1", b"a", b"2", b"b"], [b"ZADD", b"y", b"5", b"b"]],
         [b"ZINTERSTORE", b"d", b"2", b"z", b"y"],
         [[EFFECT_ZSET_REPLACE, b"d", [b"b", 7.0], None]]),
        ([[b"ZADD", b"z", b"1", b"a"], [b"SET", b"d", b"v"]], [b"ZRANGESTORE", b"d", b"z", b"1", b"2"],
         [[EFFECT_DELETE, b"d"]]),
        ([[b"ZADD", b"z", b"1", b"a"]], [b"ZADD", b"z", b"INCR", b"inf", b"a"],
         [[EFFECT_ZSET_ADD, b"z", [b"a", math.inf]]]),
        ([[b"ZADD", b"z", b"inf", b"a"]], [b"ZADD", b"z", b"INCR", b"-inf", b"a"], []),  # NaN
        ([[b"SET", b"k", b"v"]], [b"ZADD", b"k", b"1", b"x"], []),  # WRONGTYPE
        # An expired key named by a write is dropped first, even if the command then fails.
        ([[b"SET", b"k", b"v", b"PX", b"1"]], [b"RENAME", b"k", b"j"], [[EFFECT_DELETE, b"k"]]),
    ],
)  # fmt: skip
def test_effects_of_single_commands(
    setup: list[list[bytes]], argv: list[bytes], expected: list[list]
) -> None:
    state = KVState()
    for command in setup:
        assert not isinstance(state.apply_command(command, T0), ErrorReply)
    _, effects, _ = state.execute_recorded(argv, T0 + (1 if argv[0] == b"RENAME" else 0))
    assert effects == expected


def test_setting_one_field_of_a_big_hash_records_one_field() -> None:
    state = KVState()
    pairs = [item for i in range(50_000) for item in (b"field:%d" % i, b"v%d" % i)]
    state.apply_command([b"HSET", b"big", *pairs], T0)
    before = counters(state)
    reply, effects, undo = state.execute_recorded(
        [b"HSET", b"big", b"new", b"1", b"field:7", b"changed"], T0)
    assert reply == 1
    assert effects == [[EFFECT_HASH_SET, b"big", [b"new", b"1", b"field:7", b"changed"]]]
    assert len(undo._log) <= 3  # the append, the update, maybe an index rebuild
    _, deleted, undo_delete = state.execute_recorded([b"HDEL", b"big", b"field:3", b"no"], T0)
    assert deleted == [[EFFECT_HASH_DELETE, b"big", [b"field:3"]]]
    state.undo(undo_delete)
    state.undo(undo)
    assert counters(state) == before
    assert state.execute_read([b"HGET", b"big", b"field:7"], T0) == b"v7"


def test_spop_effects_name_the_popped_members_in_pick_order() -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", *[b"%d" % i for i in range(300)]], T0)
    popped, effects, _ = state.execute_recorded([b"SPOP", b"s", b"7"], T0, 1234)
    assert effects == [[EFFECT_SET_REMOVE, b"s", popped]]
    other = KVState()
    other.apply_command([b"SADD", b"s", *[b"%d" % i for i in range(300)]], T0)
    assert other.apply_command([b"SPOP", b"s", b"7"], T0, 1234) == popped


def test_expire_recorded() -> None:
    state = KVState()
    state.apply_command([b"SET", b"a", b"v", b"PX", b"10"], T0)
    state.apply_command([b"SADD", b"s", b"x"], T0)
    state.apply_command([b"PEXPIRE", b"s", b"20"], T0)
    before = observe(state, T0)
    keys = state.expired_keys(T0 + 30, 10)
    count, effects, undo = state.expire_recorded(keys + [b"never"], T0 + 30)
    assert count == 2
    assert effects == [[EFFECT_DELETE, b"a"], [EFFECT_DELETE, b"s"]]
    state.undo(undo)
    assert observe(state, T0) == before


def test_apply_effects_recorded_can_be_undone() -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", b"a", b"b"], T0)
    before = observe(state, T0)
    undo = state.apply_effects_recorded(
        [[EFFECT_SET_REMOVE, b"s", [b"a"]], [EFFECT_SET_STRING, b"k", b"v", None], [EFFECT_FLUSH]]
    )
    assert state.key_count() == 0
    state.undo(undo)
    assert observe(state, T0) == before


# ---- apply_effects checks its input ----


@pytest.mark.parametrize(
    "effects",
    [
        "not a list",
        [[]],
        [(EFFECT_DELETE, b"k")],
        [[99, b"k"]],
        [[EFFECT_DELETE, "k"]],
        [[EFFECT_DELETE, b"k", b"extra"]],
        [[EFFECT_SET_STRING, b"k", b"v"]],
        [[EFFECT_SET_STRING, b"k", "v", None]],
        [[EFFECT_SET_STRING, b"k", b"v", 1.5]],
        [[EFFECT_SET_STRING, b"k", b"v", True]],
        [[EFFECT_SET_STRING, b"k", b"v", 1 << 63]],
        [[EFFECT_SET_ADD, b"k", []]],
        [[EFFECT_SET_ADD, b"k", [b"a", b"a"]]],
        [[EFFECT_SET_REMOVE, b"k", [1]]],
        [[EFFECT_SET_REMOVE, b"k", b"a"]],
        [[EFFECT_SET_REPLACE, b"k", [b"a"]]],
        [[EFFECT_SET_REPLACE, b"k", [b"a"], "soon"]],
        [[EFFECT_EXPIRE, b"k", b"100"]],
        [[EFFECT_FLUSH, b"k"]],
        [[EFFECT_HASH_SET, b"h", []]],
        [[EFFECT_HASH_SET, b"h", [b"f"]]],  # a field without its value
        [[EFFECT_HASH_SET, b"h", [b"f", b"1", b"f", b"2"]]],
        [[EFFECT_HASH_SET, b"h", [b"f", 1]]],
        [[EFFECT_HASH_SET, b"h", b"f"]],
        [[EFFECT_HASH_DELETE, b"h", [b"f", b"f"]]],
        [[EFFECT_HASH_DELETE, b"h", []]],
        [[EFFECT_HASH_REPLACE, b"h", [b"f", b"1"]]],
        [[EFFECT_HASH_REPLACE, b"h", [b"f", b"1"], "soon"]],
        [[EFFECT_HASH_REPLACE, b"h", [b"f", b"1", b"g"], None]],
        [[EFFECT_LIST_PUSH_HEAD, b"l", []]],
        [[EFFECT_LIST_PUSH_TAIL, b"l", [b"a", 1]]],
        [[EFFECT_LIST_PUSH_TAIL, b"l", b"a"]],
        [[EFFECT_LIST_POP_HEAD, b"l", 0]],
        [[EFFECT_LIST_POP_TAIL, b"l", -1]],
        [[EFFECT_LIST_POP_TAIL, b"l", True]],
        [[EFFECT_LIST_POP_TAIL, b"l", b"1"]],
        [[EFFECT_LIST_SET, b"l", -1, b"x"]],
        [[EFFECT_LIST_SET, b"l", 0, 5]],
        [[EFFECT_LIST_INSERT, b"l", 0]],
        [[EFFECT_LIST_REMOVE, b"l", []]],
        [[EFFECT_LIST_REMOVE, b"l", [1, 1]]],
        [[EFFECT_LIST_REMOVE, b"l", [2, 1]]],
        [[EFFECT_LIST_REMOVE, b"l", [-1]]],
        [[EFFECT_LIST_REPLACE, b"l", [b"a"]]],
        [[EFFECT_LIST_REPLACE, b"l", [], None]],
        [[EFFECT_ZSET_ADD, b"z", []]],
        [[EFFECT_ZSET_ADD, b"z", [b"a"]]],  # a member without its score
        [[EFFECT_ZSET_ADD, b"z", [b"a", 1]]],  # an int is not a score
        [[EFFECT_ZSET_ADD, b"z", [b"a", math.nan]]],
        [[EFFECT_ZSET_ADD, b"z", [b"a", 1.0, b"a", 2.0]]],
        [[EFFECT_ZSET_ADD, b"z", [1.0, b"a"]]],
        [[EFFECT_ZSET_REMOVE, b"z", []]],
        [[EFFECT_ZSET_REMOVE, b"z", [b"a", b"a"]]],
        [[EFFECT_ZSET_REMOVE_RANGE, b"z", -1, 1]],
        [[EFFECT_ZSET_REMOVE_RANGE, b"z", 0, 0]],
        [[EFFECT_ZSET_REMOVE_RANGE, b"z", 0, True]],
        [[EFFECT_ZSET_REPLACE, b"z", [b"a", 1.0]]],
        [[EFFECT_ZSET_REPLACE, b"z", [b"a", 1.0], "soon"]],
        [[EFFECT_ZSET_REPLACE, b"z", [], None]],
        [[EFFECT_DELETE, b"s"], [EFFECT_FLUSH], ["bad"]],  # nothing applies if one is bad
    ],
)
def test_apply_effects_refuses_malformed_input(effects: object) -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", b"a"], T0)
    before = counters(state)
    with pytest.raises(InvariantViolation):
        state.apply_effects(effects)  # type: ignore[arg-type]
    assert counters(state) == before


@pytest.mark.parametrize("opcode", [EFFECT_SET_ADD, EFFECT_SET_REMOVE])
def test_apply_effects_refuses_set_members_on_a_string(opcode: int) -> None:
    state = KVState()
    state.apply_command([b"SET", b"k", b"v"], T0)
    with pytest.raises(InvariantViolation):
        state.apply_effects([[opcode, b"k", [b"a"]]])


@pytest.mark.parametrize("effect", [[EFFECT_HASH_SET, b"k", [b"f", b"v"]],
                                    [EFFECT_HASH_DELETE, b"k", [b"f"]]])
@pytest.mark.parametrize("setup", [[b"SET", b"k", b"v"], [b"SADD", b"k", b"f"]])
def test_apply_effects_refuses_hash_fields_on_another_type(setup: list[bytes],
                                                           effect: list) -> None:
    state = KVState()
    state.apply_command(setup, T0)
    with pytest.raises(InvariantViolation):
        state.apply_effects([effect])


@pytest.mark.parametrize("effect", [
    [EFFECT_LIST_PUSH_HEAD, b"s", [b"a"]], [EFFECT_LIST_POP_TAIL, b"s", 1],
    [EFFECT_LIST_POP_HEAD, b"l", 3], [EFFECT_LIST_POP_HEAD, b"missing", 1],
    [EFFECT_LIST_SET, b"l", 2, b"x"], [EFFECT_LIST_INSERT, b"l", 3, b"x"],
    [EFFECT_LIST_REMOVE, b"l", [0, 2]], [EFFECT_LIST_SET, b"s", 0, b"x"],
    [EFFECT_SET_ADD, b"l", [b"a"]], [EFFECT_HASH_SET, b"l", [b"f", b"v"]],
])  # fmt: skip
def test_apply_effects_refuses_list_effects_that_contradict_the_state(effect: list) -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", b"a"], T0)
    state.apply_command([b"RPUSH", b"l", b"a", b"b"], T0)
    before = (counters(state), state.digest())
    with pytest.raises(InvariantViolation):
        state.apply_effects_recorded([effect])
    assert (counters(state), state.digest()) == before


@pytest.mark.parametrize("effect", [
    [EFFECT_ZSET_ADD, b"s", [b"a", 1.0]], [EFFECT_ZSET_REMOVE, b"s", [b"a"]],
    [EFFECT_ZSET_REMOVE, b"z", [b"x"]], [EFFECT_ZSET_REMOVE, b"z", [b"a", b"b"]],
    [EFFECT_ZSET_REMOVE, b"missing", [b"a"]], [EFFECT_ZSET_REMOVE_RANGE, b"z", 1, 2],
    [EFFECT_ZSET_REMOVE_RANGE, b"z", 0, 2], [EFFECT_ZSET_REMOVE_RANGE, b"s", 0, 1],
    [EFFECT_ZSET_REMOVE_RANGE, b"missing", 0, 1], [EFFECT_SET_ADD, b"z", [b"a"]],
    [EFFECT_HASH_SET, b"z", [b"f", b"v"]], [EFFECT_LIST_POP_HEAD, b"z", 1],
])  # fmt: skip
def test_apply_effects_refuses_zset_effects_that_contradict_the_state(effect: list) -> None:
    state = KVState()
    state.apply_command([b"SADD", b"s", b"a"], T0)
    state.apply_command([b"ZADD", b"z", b"1", b"a", b"2", b"b"], T0)
    before = (counters(state), state.digest())
    with pytest.raises(InvariantViolation):
        state.apply_effects_recorded([effect])
    assert (counters(state), state.digest()) == before


def test_a_change_to_a_big_zset_records_only_what_changed() -> None:
    state = KVState()
    state.apply_command([b"ZADD", b"z", *[x for i in range(100_000)
                                           for x in (b"%d" % i, b"m%d" % i)]], T0)
    before = counters(state)
    undos = []
    for argv, expected in [
        ([b"ZADD", b"z", b"1.5", b"new", b"0", b"m0"], [[EFFECT_ZSET_ADD, b"z", [b"new", 1.5]]]),
        ([b"ZINCRBY", b"z", b"1", b"m5"], [[EFFECT_ZSET_ADD, b"z", [b"m5", 6.0]]]),
        ([b"ZREM", b"z", b"m7", b"nope"], [[EFFECT_ZSET_REMOVE, b"z", [b"m7"]]]),
        ([b"ZPOPMIN", b"z", b"3"], [[EFFECT_ZSET_REMOVE_RANGE, b"z", 0, 3]]),
        ([b"ZREMRANGEBYSCORE", b"z", b"1000", b"(51000"],
         [[EFFECT_ZSET_REMOVE_RANGE, b"z", 997, 50_000]]),
        ([b"ZREMRANGEBYRANK", b"z", b"-10", b"-1"], [[EFFECT_ZSET_REMOVE_RANGE, b"z", 49_987, 10]]),
    ]:
        reply, effects, undo = state.execute_recorded(argv, T0)
        assert not isinstance(reply, ErrorReply), (argv, reply)
        assert effects == expected, argv
        undos.append(undo)
    assert state.execute_read([b"ZCARD", b"z"], T0) == 49_987
    for undo in reversed(undos):
        state.undo(undo)
    assert counters(state) == before


def test_the_digest_tells_a_negative_zero_score_from_zero() -> None:
    states = []
    for score in (b"0", b"-0"):
        state = KVState()
        # Past a listpack's size, a -0 score is kept (see replikv.commands.zsets).
        state.apply_command([b"ZADD", b"z", *[x for i in range(200) for x in (b"1", b"m%d" % i)],
                             score, b"zero"], T0)
        states.append(state)
    assert states[0].digest() != states[1].digest()
    cursor = states[1].begin_snapshot()
    records: list[list] = []
    while (batch := cursor.next_batch(1000)) is not None:
        records.extend(batch)
    restored = KVState.from_records(records)
    assert restored.digest() == states[1].digest()
    score = restored.execute_read([b"ZSCORE", b"z", b"zero"], T0)
    assert score == 0.0 and math.copysign(1.0, score) == -1.0  # type: ignore[arg-type]


def test_a_push_or_pop_on_a_big_list_records_only_what_changed() -> None:
    state = KVState()
    state.apply_command([b"RPUSH", b"l", *[b"e%d" % i for i in range(100_000)]], T0)
    for argv, expected in [
        ([b"LPUSH", b"l", b"new"], [[EFFECT_LIST_PUSH_HEAD, b"l", [b"new"]]]),
        ([b"RPOP", b"l", b"3"], [[EFFECT_LIST_POP_TAIL, b"l", 3]]),
        ([b"LSET", b"l", b"50000", b"mid"], [[EFFECT_LIST_SET, b"l", 50000, b"mid"]]),
        ([b"LINSERT", b"l", b"BEFORE", b"mid", b"x"], [[EFFECT_LIST_INSERT, b"l", 50000, b"x"]]),
        ([b"LREM", b"l", b"1", b"x"], [[EFFECT_LIST_REMOVE, b"l", [50000]]]),
        ([b"LTRIM", b"l", b"0", b"99"], [[EFFECT_LIST_POP_TAIL, b"l", 99_998 - 100]]),
    ]:
        reply, effects, _ = state.execute_recorded(argv, T0)
        assert not isinstance(reply, ErrorReply), (argv, reply)
        assert effects == expected, argv
    assert state.execute_read([b"LLEN", b"l"], T0) == 100


def test_apply_effects_refuses_set_members_on_a_hash() -> None:
    state = KVState()
    state.apply_command([b"HSET", b"k", b"f", b"v"], T0)
    with pytest.raises(InvariantViolation):
        state.apply_effects([[EFFECT_SET_ADD, b"k", [b"a"]]])


def test_apply_effects_never_runs_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import replikv.state

    def no_parsing(argv: list[bytes]) -> None:
        raise AssertionError("apply_effects parsed a command")

    monkeypatch.setattr(replikv.state, "parse_command", no_parsing)
    state = KVState()
    state.apply_effects([[EFFECT_SET_ADD, b"s", [b"a", b"b"]], [EFFECT_EXPIRE, b"s", T0 + 5]])
    state.apply_effects([[EFFECT_EXPIRE, b"missing", T0]])  # no key, no change
    assert state.key_count() == 1
    assert state.expire_at_ms(b"s") == T0 + 5


# ---- determinism across processes, digest, snapshots ----


def summary(seed: int) -> dict[str, object]:
    """A leader's replies, effects and final state for one workload; also run in a
    subprocess with another PYTHONHASHSEED."""
    state = KVState()
    replies = []
    for op in generate_ops(seed, 400):
        reply, effects, _ = run_recorded(state, op)
        replies.append(repr((reply, effects)))
    for key in [*_KEYS, _BIG, _BIG_HASH, _BIG_ZSET]:
        replies.append(repr(sscan_all(state, key, T0, b"ZSCAN")))
        replies.append(repr(state.execute_read([b"ZRANDMEMBER", key, b"5", b"WITHSCORES"], T0, 3)))
        replies.append(repr(sscan_all(state, key, T0)))
        replies.append(repr(state.execute_read([b"SRANDMEMBER", key, b"5"], T0, 3)))
        replies.append(repr(sscan_all(state, key, T0, b"HSCAN")))
        replies.append(repr(state.execute_read([b"HRANDFIELD", key, b"5", b"WITHVALUES"], T0, 3)))
        replies.append(repr(hgetall_in_order(state, key, T0)))
    return {
        "replies": replies,
        "digest": state.digest(),
        "items": repr(ordered_items(state)),
        "hash_of_bytes": hash(b"replikv"),  # shows the hash seed really differed
    }


def test_execution_is_independent_of_the_process_hash_seed() -> None:
    local = summary(7)
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
        "from tests.unit.test_state_effects import summary\n"
        "print(json.dumps(summary(7)))\n"
    )
    remote = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
            timeout=120,
        )  # fmt: skip
        remote.append(json.loads(done.stdout))
    assert remote[0]["hash_of_bytes"] != remote[1]["hash_of_bytes"]
    for result in remote:
        for field in ("replies", "digest", "items"):
            assert result[field] == local[field], field


def test_digest_includes_types_and_ignores_member_order() -> None:
    forward, backward = KVState(), KVState()
    members = [b"%d" % i for i in range(500)]
    forward.apply_command([b"SADD", b"s", *members], T0)
    for member in reversed(members):
        backward.apply_command([b"SADD", b"s", member], T0)
    assert forward.execute_read([b"SMEMBERS", b"s"], T0) != backward.execute_read(
        [b"SMEMBERS", b"s"], T0
    )
    assert forward.digest() == backward.digest()
    digests = set()
    for build in (
        [[b"SET", b"k", b"x"]],
        [[b"SADD", b"k", b"x"]],
        [[b"SADD", b"k", b"x", b"y"]],
        [[b"SADD", b"k", b"xy"]],
        [[b"SADD", b"k", b"x"], [b"PEXPIRE", b"k", b"10"]],
        [[b"HSET", b"k", b"x", b""]],
        [[b"HSET", b"k", b"x", b"y"]],
        [[b"HSET", b"k", b"xy", b""]],
        [[b"HSET", b"k", b"y", b"x"]],
        [[b"HSET", b"k", b"x", b"y", b"z", b""]],
        [[b"HSET", b"k", b"x", b"y"], [b"PEXPIRE", b"k", b"10"]],
    ):
        state = KVState()
        for argv in build:
            state.apply_command(argv, T0)
        digests.add(state.digest())
    assert len(digests) == 11


def test_digest_ignores_field_order() -> None:
    forward, backward = KVState(), KVState()
    pairs = [(b"f%d" % i, b"v%d" % i) for i in range(500)]
    forward.apply_command([b"HSET", b"h", *[x for pair in pairs for x in pair]], T0)
    for field, value in reversed(pairs):
        backward.apply_command([b"HSET", b"h", field, value], T0)
    assert forward.execute_read([b"HKEYS", b"h"], T0) != backward.execute_read(
        [b"HKEYS", b"h"], T0)
    assert forward.digest() == backward.digest()


def test_snapshot_round_trip_keeps_member_positions_and_picks() -> None:
    state = KVState()
    for op in generate_ops(31, 200):
        run_active(state, op)
    state.apply_command([b"SADD", b"big", *[b"%d" % i for i in range(1000)]], T0)
    state.apply_command([b"SPOP", b"big", b"300"], T0, 5)
    restored = KVState()
    for key, value, expire_at_ms in state.items():
        restored.restore_item(key, value, expire_at_ms)
    assert counters(restored) == counters(state)
    assert ordered_items(restored) == ordered_items(state)
    for seed in range(5):
        argv = [b"SPOP", b"big", b"3"]
        assert restored.apply_command(argv, T0, seed) == state.apply_command(argv, T0, seed)
