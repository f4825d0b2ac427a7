"""Incremental snapshots of KVState: whatever changes the state goes through while a cursor hands
out batches (commands, recorded executions and their undo, passive-mode effects, expiry entries,
FLUSHALL and undoing it, a reset), the batches rebuild exactly the state of the instant the
snapshot began: digest, member and field positions, expiry listing, SCAN. And with no snapshot
running, the state behaves and costs as before.

The property test is driven by one seed per example (hypothesis prints it on failure); set and
hash items are split into chunks of a few members or fields so that chunked sets and hashes meet
concurrent changes too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replikv.state as state_module
from replikv.invariants import InvariantViolation
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
    Item,
    KVState,
    RecordDigest,
    StateSnapshotCursor,
    Undo,
    ZSetImage,
    shard_of,
)
from replikv.storage.snapshot import (
    ITEM_HASH,
    ITEM_HASH_MORE,
    ITEM_LIST,
    ITEM_LIST_MORE,
    ITEM_SET,
    ITEM_SET_MORE,
    ITEM_STRING,
    ITEM_ZSET,
    ITEM_ZSET_MORE,
)

T0 = 1_000_000


def _keys_sharing_a_shard(with_key: bytes, count: int) -> list[bytes]:
    found = [with_key]
    candidate = 0
    while len(found) < count:
        key = b"k%d" % candidate
        if shard_of(key) == shard_of(with_key) and key != with_key:
            found.append(key)
        candidate += 1
    return found


# Four keys in one shard (so a capture must take the whole shard, in sorted order), more spread
# over other shards, and a big set that grows past several rebuilds of its member index.
_SHARED = _keys_sharing_a_shard(b"a", 4)
_KEYS = _SHARED + [b"key%d" % i for i in range(60)] + [b""]
_BIG = b"big"
_BIG_HASH = b"bighash"
_BIG_LIST = b"biglist"
_BIG_ZSET = b"bigzset"
_SCORES = [1.0, -2.5, 0.0, -0.0, math.inf, -math.inf, 0.1, 1e20]
_MEMBERS = [b"m%d" % i for i in range(300)] + [b"", b"\x00\xff", b"x" * 40]


def _members(rng: random.Random, most: int) -> list[bytes]:
    return [rng.choice(_MEMBERS) for _ in range(rng.randint(1, most))]


def _pairs(rng: random.Random, most: int) -> list[bytes]:
    return [item for field in _members(rng, most)
            for item in (field, rng.choice([b"1", b"v", b"", b"y" * 30]))]


def _key(rng: random.Random) -> bytes:
    roll = rng.random()
    return _BIG if roll < 0.1 else _BIG_HASH if roll < 0.15 else rng.choice(_KEYS)


def _random_hash_command(rng: random.Random, k1: bytes) -> list[bytes]:
    roll = rng.randrange(10)
    if roll < 3:
        return [b"HSET", k1, *_pairs(rng, 12)]
    if roll < 5:
        return [b"HSET", _BIG_HASH, *_pairs(rng, 150)]
    if roll < 7:
        return [b"HDEL", rng.choice([k1, _BIG_HASH]), *_members(rng, 80)]
    if roll < 8:
        return [b"HINCRBY", k1, rng.choice(_MEMBERS[:5]), b"3"]
    if roll < 9:
        return [b"HSETNX", k1, rng.choice(_MEMBERS[:5]), b"nx"]
    return [b"HINCRBYFLOAT", k1, rng.choice(_MEMBERS[:5]), b"1.25"]


def _random_list_command(rng: random.Random, k1: bytes, k2: bytes) -> list[bytes]:
    roll = rng.randrange(10)
    if roll < 3:
        return [rng.choice([b"LPUSH", b"RPUSH"]), rng.choice([k1, _BIG_LIST]),
                *_members(rng, 150)]
    if roll < 5:
        return [rng.choice([b"LPOP", b"RPOP"]), rng.choice([k1, _BIG_LIST]),
                b"%d" % rng.randint(1, 60)]
    if roll < 6:
        return [b"LTRIM", rng.choice([k1, _BIG_LIST]), b"1", b"-2"]
    if roll < 7:
        return [b"LREM", rng.choice([k1, _BIG_LIST]), b"0", rng.choice(_MEMBERS[:20])]
    if roll < 8:
        return [b"LSET", k1, b"0", b"set"]
    if roll < 9:
        return [b"LINSERT", rng.choice([k1, _BIG_LIST]), b"AFTER", rng.choice(_MEMBERS[:20]),
                b"ins"]
    return [b"LMOVE", rng.choice([k1, _BIG_LIST]), k2, b"LEFT", b"RIGHT"]


def _scored(rng: random.Random, most: int) -> list[bytes]:
    return [item for member in _members(rng, most)
            for item in (rng.choice([b"1", b"-2.5", b"-0", b"inf", b"0.1", b"7"]), member)]


def _random_zset_command(rng: random.Random, k1: bytes, k2: bytes) -> list[bytes]:
    roll = rng.randrange(10)
    if roll < 3:
        return [b"ZADD", rng.choice([k1, _BIG_ZSET]), *_scored(rng, 150)]
    if roll < 5:
        return [rng.choice([b"ZPOPMIN", b"ZPOPMAX"]), rng.choice([k1, _BIG_ZSET]),
                b"%d" % rng.randint(1, 60)]
    if roll < 6:
        return [b"ZREM", rng.choice([k1, _BIG_ZSET]), *_members(rng, 80)]
    if roll < 7:
        return [b"ZREMRANGEBYSCORE", rng.choice([k1, _BIG_ZSET]), b"(0", b"5"]
    if roll < 8:
        return [b"ZINCRBY", rng.choice([k1, _BIG_ZSET]), b"0.5", rng.choice(_MEMBERS[:20])]
    if roll < 9:
        return [b"ZUNIONSTORE", k2, b"2", k1, _BIG_ZSET]
    return [b"ZREMRANGEBYRANK", rng.choice([k1, _BIG_ZSET]), b"0", b"-20"]


def _random_command(rng: random.Random, now_ms: int) -> list[bytes]:
    roll = rng.randrange(100)
    k1, k2 = _key(rng), _key(rng)
    if rng.random() < 0.2:
        return _random_hash_command(rng, k1)
    if rng.random() < 0.15:
        return _random_zset_command(rng, k1, k2)
    if rng.random() < 0.15:
        return _random_list_command(rng, k1, k2)
    if roll < 12:
        return [b"SADD", k1, *_members(rng, 12)]
    if roll < 18:
        return [b"SADD", _BIG, *_members(rng, 150)]
    if roll < 24:
        return [b"SREM", rng.choice([k1, _BIG]), *_members(rng, 80)]
    if roll < 30:
        return [b"SPOP", rng.choice([k1, _BIG]), b"%d" % rng.randint(1, 60)]
    if roll < 33:
        return [b"SMOVE", k1, k2, rng.choice(_MEMBERS[:20])]
    if roll < 36:
        return [rng.choice([b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE"]), k1, k2, _key(rng)]
    if roll < 46:
        return [b"SET", k1, rng.choice([b"1", b"v", b"", b"x" * 30])]
    if roll < 52:
        return [b"SET", k1, b"v", b"PX", b"%d" % rng.randint(1, 3000)]
    if roll < 56:
        return [b"INCR", k1]
    if roll < 59:
        return [b"APPEND", k1, b"yz"]
    if roll < 62:
        return [b"SETRANGE", k1, b"2", b"q"]
    if roll < 68:
        return [b"PEXPIRE", k1, b"%d" % rng.randint(-5, 3000)]
    if roll < 71:
        return [b"PEXPIREAT", k1, b"%d" % (now_ms + rng.randint(-100, 5000))]
    if roll < 75:
        return [b"PERSIST", k1]
    if roll < 81:
        return [b"DEL", k1, k2]
    if roll < 85:
        return [b"RENAME", k1, k2]
    if roll < 89:
        return [b"COPY", k1, k2, b"REPLACE"]
    if roll < 91:
        return [b"GETDEL", k1]
    if roll < 93:
        return [b"SET", k1, b"v", b"NX", b"XX"]  # a syntax error: no change
    if roll < 99 or rng.random() < 0.7:
        return [b"GET", k1]  # a read through the log
    return [b"FLUSHALL"]  # rare: it empties the state the snapshot is busy with


def _random_effects(rng: random.Random, state: KVState, now_ms: int) -> list[list]:
    """A valid effects list for `state`, as a backup in passive mode receives."""
    key = _key(rng)
    kind = state.type_name(key, 0)  # time 0: nothing counts as expired
    members = list(dict.fromkeys(_members(rng, 20)))
    expiry = rng.choice([None, now_ms + rng.randint(-50, 4000)])
    pairs = [item for field in members for item in (field, b"h%d" % rng.randrange(100))]
    if rng.random() < 0.12:
        scored = [item for member in members for item in (member, rng.choice(_SCORES))]
        size = len(state.lookup(key, 0) or ()) if kind == b"zset" else 0  # type: ignore[arg-type]
        roll = rng.randrange(4)
        if roll == 0 and kind in (None, b"zset"):
            return [[EFFECT_ZSET_ADD, key, scored]]
        if roll == 1 and size > 1:
            zset = state.lookup(key, 0)
            present = [member for _, member in zset][: size - 1]  # type: ignore[union-attr]
            return [[EFFECT_ZSET_REMOVE, key, rng.sample(present, rng.randint(1, len(present)))]]
        if roll == 2 and size > 1:
            start = rng.randrange(size - 1)
            return [[EFFECT_ZSET_REMOVE_RANGE, key, start, rng.randint(1, size - 1 - start)]]
        return [[EFFECT_ZSET_REPLACE, key, scored, expiry]]
    if rng.random() < 0.15:
        length = len(state.lookup(key, 0) or ()) if kind == b"list" else 0  # type: ignore[arg-type]
        roll = rng.randrange(5)
        if roll == 0 and kind in (None, b"list"):
            return [[rng.choice([EFFECT_LIST_PUSH_HEAD, EFFECT_LIST_PUSH_TAIL]), key, members]]
        if roll == 1 and length > 1:
            return [[rng.choice([EFFECT_LIST_POP_HEAD, EFFECT_LIST_POP_TAIL]), key,
                     rng.randint(1, length - 1)]]
        if roll == 2 and length:
            return [[EFFECT_LIST_SET, key, rng.randrange(length), b"set"],
                    [EFFECT_LIST_INSERT, key, rng.randint(0, length), b"ins"]]
        if roll == 3 and length > 1:
            return [[EFFECT_LIST_REMOVE, key, sorted(rng.sample(range(length), length // 2))]]
        return [[EFFECT_LIST_REPLACE, key, members, expiry]]
    if rng.random() < 0.25:
        roll = rng.randrange(4)
        if roll == 0 and kind in (None, b"hash"):
            return [[EFFECT_HASH_SET, key, pairs]]
        if roll == 1 and kind in (None, b"hash"):
            return [[EFFECT_HASH_DELETE, key, members]]
        if roll == 2:
            return [[EFFECT_DELETE, key], [EFFECT_HASH_SET, key, pairs]]
        return [[EFFECT_HASH_REPLACE, key, pairs, expiry]]
    roll = rng.randrange(8)
    if roll == 0:
        return [[EFFECT_SET_STRING, key, b"e%d" % rng.randrange(100), expiry]]
    if roll == 1:
        return [[EFFECT_DELETE, key]]
    if roll == 2:
        return [[EFFECT_DELETE, key], [EFFECT_SET_ADD, key, members]]
    if roll == 3 and kind in (None, b"set"):
        return [[EFFECT_SET_ADD, key, members]]
    if roll == 4 and kind in (None, b"set"):
        return [[EFFECT_SET_REMOVE, key, members]]
    if roll == 5:
        return [[EFFECT_SET_REPLACE, key, members, expiry]]
    if roll == 6:
        return [[EFFECT_EXPIRE, key, expiry]]
    if roll == 7 and rng.random() < 0.2:
        return [[EFFECT_SET_STRING, _SHARED[0], b"before", None], [EFFECT_FLUSH]]
    return [[EFFECT_EXPIRE, key, None]]


class Workload:
    """One seeded stream of changes to a state, every kind of change there is. Recorded
    executions keep their Undo on a stack that any unrecorded change invalidates (undo must
    revert the latest change), and are undone at random."""

    def __init__(self, seed: int, state: KVState) -> None:
        self.rng = random.Random(seed)
        self.state = state
        self.now_ms = T0
        self.undos: list[Undo] = []

    def step(self, *, recorded_only: bool = False) -> str:
        rng, state = self.rng, self.state
        self.now_ms += rng.choice([0, 1, 10, 100, 700])
        roll = rng.randrange(65 if recorded_only else 100)
        if roll < 25 and self.undos and not recorded_only:
            state.undo(self.undos.pop())
            return "undo"
        if roll < 55:
            _, _, undo = state.execute_recorded(_random_command(rng, self.now_ms), self.now_ms)
            self.undos.append(undo)
            return "execute_recorded"
        if roll < 60:
            keys = state.expired_keys(self.now_ms, rng.choice([1, 5, 100]))
            _, _, undo = state.expire_recorded(keys, self.now_ms)
            self.undos.append(undo)
            return "expire_recorded"
        if roll < 65:
            undo = state.apply_effects_recorded(_random_effects(rng, state, self.now_ms))
            self.undos.append(undo)
            return "apply_effects_recorded"
        # From here on the change is not recorded, so no earlier execution can be undone.
        self.undos.clear()
        if roll < 80:
            state.apply_command(_random_command(rng, self.now_ms), self.now_ms)
            return "apply_command"
        if roll < 90:
            state.apply_effects(_random_effects(rng, state, self.now_ms))
            return "apply_effects"
        if roll < 99:
            keys = state.expired_keys(self.now_ms, rng.choice([1, 5, 100]))
            state.apply_expire(keys, self.now_ms)
            return "apply_expire"
        # A reset: everything replaced by another state's items.
        state.apply_command([b"FLUSHALL"], self.now_ms)
        other = KVState()
        for _ in range(5):
            other.apply_command(_random_command(rng, self.now_ms), self.now_ms)
        state.restore_records([_record(*item) for item in other.items()])
        return "reset"


def _record(key: bytes, value: Item, expire_at_ms: int | None) -> list:
    if isinstance(value, ZSetImage):
        return [key, ITEM_ZSET, value.pairs, expire_at_ms]
    if isinstance(value, dict):
        return [key, ITEM_HASH, [item for pair in value.items() for item in pair], expire_at_ms]
    if isinstance(value, tuple):  # a list's elements
        return [key, ITEM_LIST, list(value), expire_at_ms]
    return [key, ITEM_STRING if isinstance(value, bytes) else ITEM_SET, value, expire_at_ms]


def ordered_items(state: KVState) -> list[tuple[bytes, object, int | None]]:
    """state.items() with each hash's fields as a list (dicts compare equal in any order)."""
    return [(key, list(value.items()) if isinstance(value, dict) else value, expire_at_ms)
            for key, value, expire_at_ms in state.items()]


def view(state: KVState, time_ms: int) -> dict[str, object]:
    """What a client or the node can see of a state, positions and orders included. Not SSCAN's
    (HSCAN's, ZSCAN's) paging, which follows a set's bucket count (see the state module's
    docstring)."""
    read = state.execute_read
    seen: dict[str, object] = {
        "digest": state.digest(),
        "key_count": state.key_count(),
        "expires_count": state.expires_count(),
        "used_bytes": state.used_bytes(),
        "items": ordered_items(state),
        "expired_keys": state.expired_keys(10**15, 10**6),
        "scan": read([b"SCAN", b"0", b"COUNT", b"%d" % (10 * SHARD_COUNT)], time_ms),
        "randomkey": read([b"RANDOMKEY"], time_ms),
    }
    for key in [*_KEYS, _BIG, _BIG_HASH, _BIG_ZSET]:
        hashed = read([b"HGETALL", key], time_ms)
        seen[repr(key)] = [
            read([b"PTTL", key], time_ms),
            read([b"TYPE", key], time_ms),
            read([b"SMEMBERS", key], time_ms),
            read([b"SRANDMEMBER", key, b"-5"], time_ms, 7),
            list(hashed.items()) if isinstance(hashed, dict) else hashed,
            read([b"HRANDFIELD", key, b"-5", b"WITHVALUES"], time_ms, 7),
            read([b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"], time_ms),
            read([b"ZRANDMEMBER", key, b"-5", b"WITHSCORES"], time_ms, 7),
        ]
    return seen


@contextmanager
def small_set_chunks(member_bytes: int = 40) -> Iterator[None]:
    """Split set items every few members, so the tests meet chunked sets without megabytes."""
    with mock.patch.object(state_module, "ITEM_SET_CHUNK_BYTES_MAX", member_bytes):
        yield


def drain(cursor: StateSnapshotCursor, max_items: int = 1000) -> list[list]:
    records: list[list] = []
    while (batch := cursor.next_batch(max_items)) is not None:
        records.extend(batch)
    return records


def build(seed: int, steps: int) -> Workload:
    workload = Workload(seed, KVState())
    for _ in range(steps):
        workload.step()
    return workload


# ---- the property: batches taken during changes rebuild the state at begin ----


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps_before=st.integers(0, 200),
    recorded_before=st.integers(0, 40),
    steps_between_batches=st.integers(0, 6),
    max_items=st.integers(1, 8),
)
def test_batches_rebuild_the_state_at_begin_whatever_happens_meanwhile(
    seed: int, steps_before: int, recorded_before: int, steps_between_batches: int, max_items: int
) -> None:
    with small_set_chunks():
        workload = build(seed, steps_before)
        for _ in range(recorded_before):  # undos that reach back past the begin
            workload.step(recorded_only=True)
        state = workload.state
        begin_ms = workload.now_ms
        at_begin = view(state, begin_ms)
        cursor = state.begin_snapshot()
        records: list[list] = []
        while True:
            for _ in range(workload.rng.randint(0, steps_between_batches)):
                workload.step()
            batch = cursor.next_batch(max_items)
            if batch is None:
                break
            assert 1 <= len(batch) <= max_items
            records.extend(batch)
        assert not state.snapshot_running()
        for _ in range(20):  # the cursor is detached: changes go on without it
            workload.step()

        restored = KVState.from_records(records)
        assert view(restored, begin_ms) == at_begin
        assert cursor.state_digest() == at_begin["digest"]
        assert sum(record[1] not in (ITEM_SET_MORE, ITEM_HASH_MORE, ITEM_LIST_MORE,
                                     ITEM_ZSET_MORE)
                   for record in records) == at_begin["key_count"]


def test_the_workload_exercises_every_kind_of_change_and_chunked_sets() -> None:
    """The property is only as good as its workload: it must mix every kind of change with
    batches, including chunked sets and both flush-and-undo orders."""
    kinds: set[str] = set()
    more_items = more_hash_items = more_list_items = more_zset_items = 0
    with small_set_chunks():
        for seed in range(20):
            workload = build(seed, 100)
            cursor = workload.state.begin_snapshot()
            while (batch := cursor.next_batch(3)) is not None:
                more_items += sum(record[1] == ITEM_SET_MORE for record in batch)
                more_hash_items += sum(record[1] == ITEM_HASH_MORE for record in batch)
                more_list_items += sum(record[1] == ITEM_LIST_MORE for record in batch)
                more_zset_items += sum(record[1] == ITEM_ZSET_MORE for record in batch)
                kinds.add(workload.step())
                kinds.add(workload.step())
    assert kinds == {
        "undo", "execute_recorded", "expire_recorded", "apply_effects_recorded",
        "apply_command", "apply_effects", "apply_expire", "reset",
    }  # fmt: skip
    assert more_items > 10
    assert more_hash_items > 10
    assert more_list_items > 10
    assert more_zset_items > 10


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_taken_while_undoing_everything_back_past_the_begin(seed: int) -> None:
    """Undo reaches into the state at begin (sets the snapshot must show with members later
    undone, a FLUSHALL recorded before the begin and undone after it)."""
    with small_set_chunks():
        workload = Workload(seed, KVState())
        state = workload.state
        for _ in range(60):
            command = _random_command(workload.rng, workload.now_ms)
            workload.undos.append(state.execute_recorded(command, workload.now_ms)[2])
        workload.undos.append(state.execute_recorded([b"FLUSHALL"], T0)[2])
        for _ in range(60):
            command = _random_command(workload.rng, workload.now_ms)
            workload.undos.append(state.execute_recorded(command, workload.now_ms)[2])
        begin_ms = workload.now_ms
        at_begin = view(state, begin_ms)
        cursor = state.begin_snapshot()
        records = list(cursor.next_batch(2) or [])
        while workload.undos:
            state.undo(workload.undos.pop())
            if (batch := cursor.next_batch(2)) is not None:
                records.extend(batch)
        records.extend(drain(cursor))
        assert state.key_count() == 0
        assert view(KVState.from_records(records), begin_ms) == at_begin


# ---- copy-on-write, shard by shard ----


def _state_with(*commands: list[bytes]) -> KVState:
    state = KVState()
    for command in commands:
        state.apply_command(command, T0)
    return state


def test_a_change_captures_its_shard_once() -> None:
    a, b = _SHARED[0], _SHARED[1]  # same shard
    state = _state_with([b"SET", a, b"1"], [b"SADD", b, b"x", b"y"], [b"SET", b"other", b"o"])
    cursor = state.begin_snapshot()
    shard = shard_of(a)
    assert cursor.shards_preserved == 0 and not cursor.dumped[shard]

    state.apply_command([b"SET", a, b"2"], T0)
    assert cursor.shards_preserved == 1 and cursor.dumped[shard]
    captured = cursor._pending[shard]
    assert cursor._pending_items(shard) == sorted([(a, b"1", None), (b, [b"x", b"y"], None)])

    # Further changes to that shard, of every kind, capture nothing more.
    state.apply_command([b"SET", a, b"3", b"PX", b"10"], T0)
    state.apply_command([b"SADD", b, b"z"], T0)
    state.apply_command([b"SREM", b, b"x"], T0)
    state.apply_command([b"PERSIST", a], T0)
    state.apply_command([b"DEL", b], T0)
    _, _, undo = state.execute_recorded([b"SADD", b, b"w"], T0)
    state.undo(undo)
    assert cursor.shards_preserved == 1
    assert cursor._pending[shard] is captured
    assert cursor._pending_items(shard) == sorted([(a, b"1", None), (b, [b"x", b"y"], None)])

    restored = KVState.from_records(drain(cursor))
    original = _state_with([b"SET", a, b"1"], [b"SADD", b, b"x", b"y"], [b"SET", b"other", b"o"])
    assert list(restored.items()) == list(original.items())
    assert restored.digest() == original.digest() == cursor.state_digest()


def test_a_shard_already_emitted_is_not_captured_again() -> None:
    state = _state_with(*([b"SET", b"key%d" % i, b"v"] for i in range(50)))
    expected = state.digest()
    cursor = state.begin_snapshot()
    records = cursor.next_batch(25) or []
    emitted = [record[0] for record in records]
    for key in emitted:
        state.apply_command([b"SET", key, b"changed"], T0)
        state.apply_command([b"DEL", key], T0)
    assert cursor.shards_preserved == 0
    records += drain(cursor)
    assert KVState.from_records(records).digest() == expected


def test_every_kind_of_change_captures_the_shard_first() -> None:
    """One test per mutation path: each change lands on a shard not yet captured, and the
    snapshot still shows the value from before."""
    base = [
        [b"SET", b"s", b"1", b"PX", b"5000"],
        [b"SADD", b"set", *[b"m%d" % i for i in range(200)]],  # big enough to rebuild its index
        [b"SET", b"plain", b"p"],
        [b"HSET", b"hash", *[b"f%d" % (i // 2) for i in range(400)]],  # 200 fields
    ]
    changes: list[list[bytes]] = [
        [b"SET", b"s", b"2"],
        [b"DEL", b"s"],
        [b"PEXPIRE", b"s", b"99"],
        [b"PERSIST", b"s"],
        [b"SADD", b"set", b"new"],
        [b"SREM", b"set", b"m3"],
        [b"SREM", b"set", *[b"m%d" % i for i in range(190)]],  # shrinks the index too
        [b"SPOP", b"set", b"3"],
        [b"SPOP", b"set", b"500"],
        [b"RENAME", b"set", b"moved"],
        [b"RENAME", b"plain", b"s"],
        [b"COPY", b"set", b"s", b"REPLACE"],
        [b"SMOVE", b"set", b"plain2", b"m1"],
        [b"SINTERSTORE", b"set", b"set", b"nothing"],
        [b"INCR", b"plain"],
        [b"APPEND", b"s", b"x"],
        [b"GETDEL", b"s"],
        [b"HSET", b"hash", b"new", b"1"],
        [b"HSET", b"hash", b"f3", b"changed"],
        [b"HDEL", b"hash", b"f3"],
        [b"HDEL", b"hash", *[b"f%d" % i for i in range(190)]],  # shrinks the index too
        [b"HDEL", b"hash", *[b"f%d" % i for i in range(200)]],
        [b"HINCRBY", b"hash", b"f5", b"1"],
        [b"HINCRBYFLOAT", b"hash", b"f6", b"1"],
        [b"HSETNX", b"hash", b"fresh", b"1"],
        [b"RENAME", b"hash", b"moved"],
        [b"COPY", b"hash", b"s", b"REPLACE"],
        [b"HSET", b"s", b"f", b"v"],  # WRONGTYPE: nothing changes
        [b"FLUSHALL"],
    ]
    for change in changes:
        for recorded, undo_it in ((False, False), (True, False), (True, True)):
            state = _state_with(*base)
            before = view(state, T0)
            cursor = state.begin_snapshot()
            if recorded:
                _, _, undo = state.execute_recorded(change, T0 + 1)
                if undo_it:
                    state.undo(undo)
            else:
                state.apply_command(change, T0 + 1)
            restored = KVState.from_records(drain(cursor, max_items=1))
            assert view(restored, T0) == before, (change, recorded, undo_it)


def test_flushall_copies_nothing_and_the_cursor_reads_the_old_shards() -> None:
    state = _state_with(*([b"SADD", b"key%d" % i, b"a", b"b"] for i in range(300)))
    before = view(state, T0)
    cursor = state.begin_snapshot()
    records = cursor.next_batch(10) or []
    state.apply_command([b"FLUSHALL"], T0)
    assert cursor.shards_preserved == 0  # nothing was copied at the flush
    assert state._snapshot is None  # and the state stopped testing its shards against it
    state.apply_command([b"SADD", b"key7", b"after"], T0)  # new shards: nothing to preserve
    assert cursor.shards_preserved == 0
    records += drain(cursor)
    assert view(KVState.from_records(records), T0) == before


def test_undoing_a_flushall_hands_the_shards_back_to_copy_on_write() -> None:
    state = _state_with(*([b"SADD", b"key%d" % i, b"a", b"b"] for i in range(40)))
    before = view(state, T0)
    cursor = state.begin_snapshot()
    _, _, undo = state.execute_recorded([b"FLUSHALL"], T0)
    assert state._snapshot is None
    state.undo(undo)
    assert state._snapshot is cursor
    state.apply_command([b"SADD", b"key3", b"c"], T0)  # a change to the begin-time shards again
    assert cursor.shards_preserved == 1
    assert view(KVState.from_records(drain(cursor, 3)), T0) == before


def test_undoing_a_flushall_from_before_the_begin_leaves_the_cursor_on_its_own_shards() -> None:
    state = _state_with([b"SET", b"old", b"1"])
    _, _, undo_flush = state.execute_recorded([b"FLUSHALL"], T0)
    _, _, undo_set = state.execute_recorded([b"SET", b"new", b"2"], T0)
    before = view(state, T0)
    cursor = state.begin_snapshot()
    state.undo(undo_set)
    assert cursor.shards_preserved == 1
    state.undo(undo_flush)  # the pre-flush shards come back; the cursor's are not the state's
    assert state._snapshot is None and state.get(b"old", T0) == b"1"
    state.apply_command([b"SET", b"new", b"3"], T0)
    state.apply_command([b"SET", b"old", b"3"], T0)
    assert cursor.shards_preserved == 1
    assert view(KVState.from_records(drain(cursor)), T0) == before


@pytest.mark.parametrize(
    "command",
    [
        [b"SADD", b"s", b"c", b"d"],
        [b"SREM", b"s", b"a"],
        [b"SPOP", b"s", b"1"],
        [b"SMOVE", b"s", b"t", b"b"],
        [b"SADD", b"s", *[b"n%d" % i for i in range(200)]],  # rebuilds the member index
        [b"PEXPIRE", b"s", b"50"],
        [b"PERSIST", b"s"],
        [b"HSET", b"h", b"a", b"2", b"new", b"3"],
        [b"HDEL", b"h", b"a"],
        [b"HINCRBY", b"h", b"b", b"5"],
        [b"HSET", b"h", *[b"n%d" % (i // 2) for i in range(400)]],  # rebuilds the field index
    ],
)
def test_undoing_a_change_made_before_the_begin_captures_first(command: list[bytes]) -> None:
    """The undo log names the key of each member or field change, so undo can preserve its
    shard."""
    state = _state_with([b"SADD", b"s", b"a", b"b"], [b"SADD", b"t", b"x"],
                        [b"HSET", b"h", b"a", b"1", b"b", b"2"])
    state.set_expire(b"s", T0 + 10_000)
    _, _, undo = state.execute_recorded(command, T0)
    before = view(state, T0)
    cursor = state.begin_snapshot()
    state.undo(undo)
    assert cursor.shards_preserved >= 1
    assert view(KVState.from_records(drain(cursor)), T0) == before


def test_expired_keys_not_yet_deleted_are_in_the_snapshot() -> None:
    state = _state_with([b"SET", b"gone", b"v", b"PX", b"5"], [b"SADD", b"s", b"m"])
    state.set_expire(b"s", T0 + 1)
    later = T0 + 10_000
    assert state.execute_read([b"EXISTS", b"gone", b"s"], later) == 0
    records = drain(state.begin_snapshot())
    assert sorted(records) == [[b"gone", ITEM_STRING, b"v", T0 + 5], [b"s", ITEM_SET, [b"m"], T0 + 1]]
    restored = KVState.from_records(records)
    assert restored.digest() == state.digest()
    assert restored.expired_keys(later, 10) == state.expired_keys(later, 10)


# ---- batches and records ----


def test_an_empty_state_has_no_batches_and_the_empty_digest() -> None:
    cursor = KVState().begin_snapshot()
    assert cursor.next_batch(10) is None
    assert cursor.next_batch(10) is None  # stays done
    assert cursor.state_digest() == KVState().digest()


def test_batches_respect_max_items_and_max_bytes() -> None:
    state = _state_with(*([b"SET", b"key%d" % i, b"v" * 100] for i in range(500)))
    cursor = state.begin_snapshot()
    sizes = []
    records: list[list] = []
    while (batch := cursor.next_batch(1000, max_bytes=1000)) is not None:
        sizes.append(len(batch))
        records += batch
    # ~116 bytes per item: the batch stops once it reaches 1000 bytes.
    assert max(sizes) == 9 and len(records) == 500
    cursor = state.begin_snapshot()
    assert len(cursor.next_batch(7) or []) == 7
    cursor.close()


def test_a_big_set_is_split_into_chunks_that_restore_its_positions() -> None:
    state = KVState()
    members = [b"%05d" % i for i in range(3000)]
    random.Random(1).shuffle(members)
    state.apply_command([b"SADD", b"big", *members], T0)
    state.apply_command([b"SPOP", b"big", b"700"], T0, seed=3)  # swap-removes reorder positions
    state.set_expire(b"big", T0 + 50)
    before = list(state.items())
    with small_set_chunks(member_bytes=1000):
        cursor = state.begin_snapshot()
        records = cursor.next_batch(3) or []
        state.apply_command([b"SREM", b"big", *members[:100]], T0)  # in the middle of the set
        records += drain(cursor, 3)
    kinds = [record[1] for record in records]
    assert kinds[0] == ITEM_SET and set(kinds[1:]) == {ITEM_SET_MORE}
    assert records[0][3] == T0 + 50 and all(record[3] is None for record in records[1:])
    # 1000 bytes of chunk hold 100 members of 5 bytes plus 5 bytes of framing each.
    assert [len(record[2]) for record in records] == [100] * 23
    restored = KVState.from_records(records)
    assert list(restored.items()) == before  # the members at their positions
    assert restored.digest() == cursor.state_digest() != state.digest()


def chunked_snapshot(state: KVState, changes: list[list[bytes]], kind: int, more_kind: int
                     ) -> tuple[list[list], StateSnapshotCursor]:
    """Snapshot a state holding one big collection "big" (with an expiry of T0 + 50) in items
    of at most 1000 bytes, applying `changes` once the first batch is out. Checks the records
    are one item of `kind`, with the expiry, then continuations of `more_kind`, without."""
    with small_set_chunks(member_bytes=1000):
        cursor = state.begin_snapshot()
        records = cursor.next_batch(3) or []
        for argv in changes:  # in the middle
            state.apply_command(argv, T0)
        records += drain(cursor, 3)
    kinds = [record[1] for record in records]
    assert kinds[0] == kind and set(kinds[1:]) == {more_kind}
    assert records[0][3] == T0 + 50 and all(record[3] is None for record in records[1:])
    return records, cursor


def test_a_big_hash_is_split_into_chunks_that_restore_its_positions() -> None:
    state = KVState()
    fields = [b"%05d" % i for i in range(3000)]
    random.Random(1).shuffle(fields)
    state.apply_command([b"HSET", b"big", *[x for f in fields for x in (f, b"v" + f)]], T0)
    state.apply_command([b"HDEL", b"big", *fields[:700]], T0)  # swap-removes reorder positions
    state.set_expire(b"big", T0 + 50)
    before = ordered_items(state)
    records, cursor = chunked_snapshot(state, [[b"HDEL", b"big", *fields[700:800]],
                                               [b"HSET", b"big", fields[900], b"changed"]],
                                       ITEM_HASH, ITEM_HASH_MORE)
    # 1000 bytes of chunk hold 47 fields of 5 bytes with their values of 6, plus 5 bytes of
    # framing each (21 bytes a field); a chunk never splits a field from its value.
    assert [len(record[2]) for record in records] == [94] * 48 + [2 * 2300 - 94 * 48]
    restored = KVState.from_records(records)
    assert ordered_items(restored) == before  # the fields at their positions
    assert restored.digest() == cursor.state_digest() != state.digest()


def test_a_big_list_is_split_into_chunks_that_restore_its_order() -> None:
    state = KVState()
    elements = [b"%04d" % (i % 500) for i in range(3000)]  # repeats are a list's own
    state.apply_command([b"RPUSH", b"big", *elements], T0)
    state.set_expire(b"big", T0 + 50)
    before = list(state.items())
    records, cursor = chunked_snapshot(
        state, [[b"LPOP", b"big", b"100"], [b"LSET", b"big", b"-1", b"changed"],
                [b"LINSERT", b"big", b"BEFORE", b"0499", b"new"]], ITEM_LIST, ITEM_LIST_MORE)
    # 1000 bytes of chunk hold 111 elements of 4 bytes plus 5 bytes of framing each.
    assert [len(record[2]) for record in records] == [111] * 27 + [3000 - 111 * 27]
    restored = KVState.from_records(records)
    assert list(restored.items()) == before  # the elements in their order
    assert restored.digest() == cursor.state_digest() != state.digest()
    digest = RecordDigest(1)
    digest.update(records)
    assert digest.hexdigest() == cursor.state_digest()


def test_a_big_zset_is_split_into_chunks_that_restore_it_exactly() -> None:
    state = KVState()
    # Scores of every kind, -0.0 and the infinities included (past a listpack's size, so -0
    # stays -0), restored bit for bit.
    scores = [b"-0", b"0", b"inf", b"-inf", b"0.1", b"1e-300", b"-2.5"]
    state.apply_command([b"ZADD", b"big", *[x for i in range(3000)
                                            for x in (scores[i % 7], b"%04d" % i)]], T0)
    state.set_expire(b"big", T0 + 50)
    before = list(state.items())
    records, cursor = chunked_snapshot(
        state, [[b"ZPOPMIN", b"big", b"100"], [b"ZADD", b"big", b"3", b"0001", b"4", b"new"]],
        ITEM_ZSET, ITEM_ZSET_MORE)
    # 1000 bytes of chunk hold 43 members of 4 bytes with their scores (9), plus 5 bytes of
    # framing each (23 bytes a member); a chunk never splits a member from its score.
    assert [len(record[2]) for record in records] == [86] * 69 + [2 * 3000 - 86 * 69]
    restored = KVState.from_records(records)
    assert list(restored.items()) == before
    assert restored.digest() == cursor.state_digest() != state.digest()
    digest = RecordDigest(1)
    digest.update(records)
    assert digest.hexdigest() == cursor.state_digest()
    zero = restored.execute_read([b"ZSCORE", b"big", b"0000"], T0)
    assert zero == 0.0 and math.copysign(1.0, zero) == -1.0  # type: ignore[arg-type]
    # Through msgpack, as a snapshot file holds them: the same floats.
    packed = msgpack.unpackb(msgpack.packb(records, use_bin_type=True), raw=False)
    assert KVState.from_records(packed).digest() == cursor.state_digest()


def test_a_list_digest_depends_on_the_order_of_its_elements() -> None:
    one = _state_with([b"RPUSH", b"l", b"a", b"b"])
    other = _state_with([b"RPUSH", b"l", b"b", b"a"])
    assert one.digest() != other.digest()
    assert one.digest() == _state_with([b"LPUSH", b"l", b"b", b"a"]).digest()
    assert _state_with([b"SADD", b"l", b"a", b"b"]).digest() != one.digest()


def test_records_are_plain_msgpack_ready_values_sharing_nothing_mutable() -> None:
    state = _state_with([b"SADD", b"s", b"a", b"b"], [b"SET", b"k", b"v", b"PX", b"9"],
                        [b"HSET", b"h", b"f", b"1", b"g", b"2"])
    cursor = state.begin_snapshot()
    records = cursor.next_batch(10) or []
    state.apply_command([b"SADD", b"s", b"c"], T0)  # after the shard was emitted
    state.apply_command([b"HSET", b"h", b"f", b"3"], T0)
    assert sorted(records) == [[b"h", ITEM_HASH, [b"f", b"1", b"g", b"2"], None],
                               [b"k", ITEM_STRING, b"v", T0 + 9],
                               [b"s", ITEM_SET, [b"a", b"b"], None]]
    assert all(type(record[2]) in (bytes, list) for record in records)
    assert cursor.next_batch(10) is None


def test_restore_records_rejects_records_that_cannot_come_from_a_snapshot() -> None:
    bad_batches = [
        [[b"k", ITEM_STRING, b"v", None], [b"k", ITEM_STRING, b"w", None]],  # a repeated key
        [[b"k", ITEM_SET, [b"a"], None], [b"k", ITEM_SET, [b"b"], None]],
        [[b"k", ITEM_SET_MORE, [b"a"], None]],  # continues no set
        [[b"k", ITEM_SET, [b"a"], None], [b"k", ITEM_SET_MORE, [b"a"], None]],  # repeats
        [[b"k", ITEM_SET, [b"a"], None], [b"k", ITEM_SET_MORE, [b"b"], 5]],  # expiry again
        [[b"k", ITEM_SET, [b"a", b"a"], None]],
        [[b"k", ITEM_SET, [], None]],
        [[b"k", 9, b"v", None]],
        [[b"k", ITEM_STRING, b"v", "soon"]],
        [[b"k", ITEM_STRING, b"v"]],
        [[b"k", ITEM_HASH, [b"f"], None]],  # a field without its value
        [[b"k", ITEM_HASH, [], None]],
        [[b"k", ITEM_HASH, [b"f", b"1", b"f", b"2"], None]],
        [[b"k", ITEM_HASH, [b"f", 1], None]],
        [[b"k", ITEM_HASH_MORE, [b"f", b"1"], None]],  # continues no hash
        [[b"k", ITEM_SET, [b"a"], None], [b"k", ITEM_HASH_MORE, [b"f", b"1"], None]],
        [[b"k", ITEM_HASH, [b"f", b"1"], None], [b"k", ITEM_SET_MORE, [b"a"], None]],
        [[b"k", ITEM_HASH, [b"f", b"1"], None], [b"k", ITEM_HASH_MORE, [b"f", b"2"], None]],
        [[b"k", ITEM_HASH, [b"f", b"1"], None], [b"k", ITEM_HASH_MORE, [b"g", b"2"], 5]],
        [[b"k", ITEM_STRING, b"v", None], [b"k", ITEM_HASH, [b"f", b"1"], None]],
        [[b"k", ITEM_ZSET, [b"a"], None]],  # a member without its score
        [[b"k", ITEM_ZSET, [b"a", 1], None]],  # an int is not a score
        [[b"k", ITEM_ZSET, [b"a", math.nan], None]],
        [[b"k", ITEM_ZSET, [b"a", 1.0, b"a", 2.0], None]],
        [[b"k", ITEM_ZSET, [], None]],
        [[b"k", ITEM_ZSET_MORE, [b"a", 1.0], None]],  # continues no sorted set
        [[b"k", ITEM_ZSET, [b"a", 1.0], None], [b"k", ITEM_ZSET_MORE, [b"a", 2.0], None]],
        [[b"k", ITEM_ZSET, [b"a", 1.0], None], [b"k", ITEM_ZSET_MORE, [b"b", 2.0], 5]],
        [[b"k", ITEM_HASH, [b"f", b"1"], None], [b"k", ITEM_ZSET_MORE, [b"b", 2.0], None]],
    ]
    for batch in bad_batches:
        with pytest.raises(InvariantViolation):
            KVState.from_records(batch)


def test_restore_records_accepts_a_set_continued_in_a_later_batch() -> None:
    state = KVState()
    state.restore_records([[b"k", ITEM_SET, [b"a", b"b"], 77]])
    state.restore_records([[b"k", ITEM_SET_MORE, [b"c"], None], [b"z", ITEM_STRING, b"1", None]])
    expected = _state_with([b"SADD", b"k", b"a", b"b", b"c"], [b"SET", b"z", b"1"])
    expected.set_expire(b"k", 77)
    assert list(state.items()) == list(expected.items())
    assert state.used_bytes() == expected.used_bytes()


def test_restore_records_accepts_a_hash_continued_in_a_later_batch() -> None:
    state = KVState()
    state.restore_records([[b"h", ITEM_HASH, [b"a", b"1", b"b", b"2"], 77]])
    state.restore_records([[b"h", ITEM_HASH_MORE, [b"c", b"3"], None],
                           [b"z", ITEM_STRING, b"1", None]])
    expected = _state_with([b"HSET", b"h", b"a", b"1", b"b", b"2", b"c", b"3"],
                           [b"SET", b"z", b"1"])
    expected.set_expire(b"h", 77)
    assert ordered_items(state) == ordered_items(expected)
    assert state.used_bytes() == expected.used_bytes()
    assert state.digest() == expected.digest()


# ---- one cursor at a time, and no cost without one ----


def test_one_snapshot_at_a_time() -> None:
    state = _state_with([b"SET", b"k", b"v"])
    cursor = state.begin_snapshot()
    assert state.snapshot_running()
    with pytest.raises(InvariantViolation):
        state.begin_snapshot()
    cursor.close()
    cursor.close()  # idempotent
    assert not state.snapshot_running()
    with pytest.raises(InvariantViolation):
        cursor.next_batch(1)  # closed before the end
    finished = state.begin_snapshot()
    drain(finished)
    assert not state.snapshot_running()  # finishing detaches too
    state.begin_snapshot().close()


def test_a_snapshot_cannot_begin_inside_a_recorded_execution() -> None:
    state = KVState()
    with pytest.raises(InvariantViolation):
        state._recorded(state.begin_snapshot)
    assert not state.snapshot_running()


def test_closing_early_releases_the_captures() -> None:
    state = _state_with(*([b"SET", b"key%d" % i, b"v"] for i in range(20)))
    cursor = state.begin_snapshot()
    state.apply_command([b"DEL", b"key3"], T0)
    assert cursor._pending
    cursor.close()
    assert not cursor._pending and state._snapshot is None


def test_without_a_snapshot_the_hook_is_never_entered(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no cursor (never begun, finished, or closed) a change costs the one test of
    `_snapshot`: the capture code is not even called."""
    calls = []
    original = StateSnapshotCursor._preserve

    def counting(self: StateSnapshotCursor, shard_index: int) -> None:
        calls.append(shard_index)
        original(self, shard_index)

    monkeypatch.setattr(StateSnapshotCursor, "_preserve", counting)
    workload = build(5, 300)
    assert calls == []
    drain(workload.state.begin_snapshot())
    workload.state.begin_snapshot().close()
    for _ in range(300):
        workload.step()
    assert calls == []


def test_a_finished_snapshot_leaves_the_state_behaving_exactly_as_without_one() -> None:
    with_snapshots, without = build(11, 0), build(11, 0)
    for step in range(400):
        if step % 50 == 10:
            cursor = with_snapshots.state.begin_snapshot()
            cursor.next_batch(5)
        if step % 50 == 30:
            drain(cursor)
        assert with_snapshots.step() == without.step()
        if step % 25 == 0:
            now_ms = with_snapshots.now_ms
            assert view(with_snapshots.state, now_ms) == view(without.state, now_ms)


def test_preserved_shards_are_not_objects_for_the_garbage_collector_to_walk() -> None:
    """Writes spread over a large keyspace preserve nearly every shard early in a snapshot; a
    full collection of the node then walked one object per key held by the captures, for as
    long as the snapshot was being written. A copied dict of bytes is not tracked at all."""
    import gc

    state = KVState()
    keys = 100_000
    state.apply_effects([[EFFECT_SET_STRING, b"k%d" % i, b"v", None] for i in range(keys)])
    state.apply_command([b"SET", b"k1", b"v", b"PX", b"60000"], T0)  # one expiry to keep
    before = state.digest()
    cursor = state.begin_snapshot()
    touched = {}
    for i in range(keys):
        touched.setdefault(shard_of(b"k%d" % i), b"k%d" % i)
    for key in touched.values():  # one write in every shard
        state.apply_command([b"SET", key, b"new"], T0)
    assert cursor.shards_preserved == len(touched) == SHARD_COUNT
    gc.collect()
    visits = 0
    stack, seen = [cursor._pending], set()
    while stack:
        held = stack.pop()
        if id(held) in seen or not gc.is_tracked(held):
            continue
        seen.add(id(held))
        referents = gc.get_referents(held)
        visits += len(referents)
        stack.extend(referents)
    assert visits <= 4 * SHARD_COUNT, visits  # the shards' entries, not the keys
    # ...and the snapshot is still the state at begin.
    restored = KVState.from_records(drain(cursor))
    assert restored.digest() == before == cursor.state_digest()
