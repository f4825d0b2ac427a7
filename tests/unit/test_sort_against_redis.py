"""SORT and SORT_RO, differentially: a scripted sequence and a seeded random one go to a real
redis-server (its own, on a free port, in the C locale, where strcoll is byte order) and to a
replikv state, and every reply must match, in RESP2 and RESP3, bytes parsed the same way
(hiredis). scripts/install.sh --test installs redis-server.

Only what Redis defines is compared exactly (README, Commands: SORT). Where its order is
unspecified the comparison is weaker, and a STORE list made so is copied from Redis into the
replikv state so the streams go on alike:
- a set BY nosort without STORE answers its encoding's order in Redis (an intset's ascending
  integers, a hash table's own order) and SMEMBERS's here: the reply's length is compared;
- ALPHA with a BY pattern whose values are equal (or missing) for two elements leaves them in
  qsort's order in Redis: the replies are compared as multisets, or by length under a LIMIT.
Elements with a NUL byte are sorted ALPHA only with STORE (without it Redis's strcoll stops at
the NUL and leaves them unordered).
"""

from __future__ import annotations

import os
import random
import shlex
from collections.abc import Iterator

import pytest

from replikv.features import FEATURE_LEVEL
from replikv.resp import encode_reply
from replikv.state import KVState

from .test_hashes_against_redis import (  # noqa: F401  (a fixture, used by name)
    RawConnection,
    _redis_server_installed,
    parsed,
    plain,
    running_redis_server,
)

T0 = 1_000_000


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # ALPHA without STORE compares with strcoll: the C locale's is byte order.
    yield from running_redis_server(tmp_path_factory.mktemp("redis-sort"),
                                    {**os.environ, "LC_ALL": "C"})


def _new_state() -> KVState:
    state = KVState()
    state.raise_feature_level(FEATURE_LEVEL)  # scripts may call SORT
    return state


def _ours(state: KVState, argv: list[bytes], step: int, protocol: int) -> object:
    return plain(parsed(encode_reply(state.apply_command(argv, T0 + step, step), protocol)))


# ---- the scripted sequence: each reply compared exactly ----

SCRIPTED: list[str] = [
    "RPUSH l 3 1 2 10 5 1.5 -inf 0x10 07 +4",
    "SORT l", "SORT l DESC", "SORT l ALPHA", "SORT l ALPHA DESC", "SORT_RO l LIMIT 2 3",
    "SORT l LIMIT -3 2", "SORT l LIMIT 1 -1", "SORT l LIMIT 0 0", "SORT l LIMIT 10 1",
    "SORT l LIMIT 9 1", "SORT l LIMIT 2 9223372036854775807", "SORT l LIMIT 0 1 LIMIT 3 1",
    "SORT l BY nosort", "SORT l BY nosort DESC", "SORT l BY nosort DESC LIMIT 1 3",
    "SORT l BY nosort LIMIT 8 5", "SORT l BY nosort BY w_*", "SORT l BY #",
    "MSET w_3 9 w_1 -1 w_2 1e3 w_10 x o_1 one o_2 two",
    "SORT l BY w_*", "SORT l BY w_* GET o_* GET # GET nostar", "SORT l BY w_* DESC LIMIT 0 4",
    "SET w_10 inf", "SORT l BY w_* DESC", "SORT l BY w_*-> GET #x",
    "HSET h_3 f 2 g z", "HSET h_1 f -5", "SET h_2 notahash", "SORT l BY h_*->f",
    "SORT l BY h_*->f GET h_*->g GET h_*-> GET h_*->f",
    "SORT l GET o_* STORE d", "LRANGE d 0 -1", "TYPE d",
    "SORT l BY nosort DESC STORE d", "LRANGE d 0 -1", "SORT l LIMIT 0 0 STORE d", "EXISTS d",
    "SORT l STORE d GET o_* STORE e", "LRANGE e 0 -1", "EXISTS d",
    "SORT l STORE l ALPHA", "LRANGE l 0 -1",
    "SORT nokey", "SORT nokey STORE e", "EXISTS e", "SORT_RO nokey BY nosort GET #",
    "SADD s 5 3 10 1 -2", "SORT s", "SORT s DESC LIMIT 1 2", "SORT s ALPHA",
    "SORT s BY nosort STORE d", "LRANGE d 0 -1", "SORT s BY nosort DESC ALPHA STORE d",
    "LRANGE d 0 -1", "SORT s BY w_* GET o_*", "SORT s BY nosort GET # STORE d LIMIT 1 2",
    "LRANGE d 0 -1",
    "SADD t b c a B",
    "SORT t ALPHA", "SORT t BY nosort STORE d DESC", "LRANGE d 0 -1", "SORT t",
    "ZADD z 3 a 1 b 2 c 2 d 0 e",
    "SORT z BY nosort", "SORT z BY nosort DESC", "SORT z BY nosort LIMIT 1 3",
    "SORT z BY nosort DESC LIMIT 1 3", "SORT z BY nosort LIMIT 5 1", "SORT z ALPHA DESC",
    "SORT z", "SORT z BY nosort STORE d", "LRANGE d 0 -1",
    "ZADD y 1 10 2 9 3 -1",
    "SORT y", "SORT y DESC GET # GET o_*", "SORT y BY nosort GET w_*",
    "SET str v", "HSET hh f v", "XADD x 1-1 f v",
    "SORT str", "SORT hh", "SORT x", "SORT str STORE d", "SORT_RO str LIMIT 0 1",
    "SORT str foo", "SORT str LIMIT x 1", "SORT str LIMIT 1 1.5", "SORT str LIMIT 1",
    "SORT str BY", "SORT str GET", "SORT str STORE", "SORT_RO l STORE d",
    "SORT_RO str LIMIT x 1 STORE d", "SORT l ASC DESC ALPHA ASC", "SORT l LIMIT 0 0 GET #",
    "RPUSH sub2 0x1p-1074 0", "SORT sub2", "RPUSH nan 1 nan", "SORT nan", "SORT nan ALPHA",
    "RPUSH sp 2 ' 1' '' 3", "SORT sp", "RPUSH tail 5 '5 '", "SORT tail", "SORT tail LIMIT 0 0",
    "SORT", "SORT_RO",
]
# Last, since Redis does not clear errno before strtod: once a SORT met an ERANGE, its later
# numeric SORTs fail too until some system call fails with another errno (a new connection's
# accept loop ends on EAGAIN). replikv reads each score afresh.
SCRIPTED_RANGE_ERRORS: list[str] = [
    "RPUSH bad 1 2 1e400", "SORT bad", "SORT bad ALPHA", "SORT bad BY nosort",
    "SORT bad STORE d", "LRANGE d 0 -1", "RPUSH sub 1 1e-310", "SORT sub",
    "RPUSH sub3 1 -1e-320", "SORT sub3",
]


def _split(command: str) -> list[bytes]:
    return [word.encode() for word in shlex.split(command)]


# Binary and script cases, well defined in Redis too.
SCRIPTED_BINARY: list[list[bytes]] = [
    [b"RPUSH", b"nul", b"1\0x", b"a\0b", b"a\0a", b"a", b"\0"],
    [b"SORT", b"nul", b"ALPHA", b"STORE", b"d"], [b"LRANGE", b"d", b"0", b"-1"],
    [b"SORT", b"nul", b"ALPHA", b"DESC", b"STORE", b"d"], [b"LRANGE", b"d", b"0", b"-1"],
    [b"RPUSH", b"num", b"2\0x", b"1", b"\0"], [b"SORT", b"num"],
    [b"SORT", b"num", b"desc\0junk"], [b"SORT", b"num", b"GET", b"#\0x"],
    [b"SORT", b"num", b"BY", b"nosort\0*"], [b"SORT", b"num", b"BY", b"w_*\0"],
    [b"SET", b"k_1->", b"5"], [b"SORT", b"num", b"BY", b"k_*->"],
    [b"EVAL", b"return redis.call('SORT', KEYS[1], 'BY', 'nosort')", b"1", b"s"],
    [b"EVAL", b"return redis.call('SORT', KEYS[1], 'BY', 'nosort', 'DESC', 'GET', '#')",
     b"1", b"t"],
    [b"EVAL_RO", b"return redis.call('SORT_RO', KEYS[1], 'BY', 'nosort', 'LIMIT', 1, 2)",
     b"1", b"s"],
    [b"EVAL", b"return redis.call('SORT', KEYS[1], 'BY', 'nosort')", b"1", b"z"],
]


@pytest.mark.parametrize("protocol", [2, 3])
def test_scripted_sort_answers_as_redis_does(redis_port: int, protocol: int) -> None:
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        state = _new_state()
        mismatches = []
        stream = ([_split(c) for c in SCRIPTED] + SCRIPTED_BINARY
                  + [_split(c) for c in SCRIPTED_RANGE_ERRORS])
        for step, argv in enumerate(stream):
            expected = plain(redis.command(argv))
            ours = _ours(state, argv, step, protocol)
            if ours != expected:
                mismatches.append((step, argv, ours, expected))
        assert not mismatches, mismatches[:3]
    finally:
        redis.close()


# ---- the seeded random sequence ----

_NUMBERS = [b"1", b"2", b"10", b"-3", b"2.5", b"07", b"0x10", b" 7", b"inf", b""]
_WORDS = [b"a", b"b", b"B", b"ab", b"x y", b"1", b"10", b""]
_VALUES = [b"1", b"5", b"-2", b"3.5", b"10", b"", b"x", b"b", b"B"]
_BY = [b"w_*", b"w_*", b"h_*->f", b"nosort", b"w_*->", b"#", b"missing_*"]
_GET = [b"#", b"w_*", b"h_*->f", b"o_*", b"nostar", b"h_*->"]
_SOURCES = [b"n1", b"l1", b"s1", b"s2", b"z1", b"z2", b"d1", b"nokey", b"str"]


def commands(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"v"]]
    for _ in range(count):
        element = rng.choice(_NUMBERS + _WORDS)
        roll = rng.randrange(10)
        if roll == 0:
            key = rng.choice([b"n1", b"l1"])
            pool = _NUMBERS if key == b"n1" else _WORDS
            out.append([rng.choice([b"RPUSH", b"LPUSH"]), key,
                        *(rng.choice(pool) for _ in range(rng.randint(1, 4)))])
        elif roll == 1:
            key = rng.choice([b"s1", b"s2"])
            pool = _NUMBERS if key == b"s1" else _WORDS
            out.append([rng.choice([b"SADD", b"SREM"]), key,
                        *(rng.choice(pool) for _ in range(rng.randint(1, 4)))])
        elif roll == 2:
            key = rng.choice([b"z1", b"z2"])
            pool = _NUMBERS if key == b"z1" else _WORDS
            out.append([b"ZADD", key, b"%d" % rng.randint(-2, 2), rng.choice(pool)])
        elif roll == 3:
            out.append([b"SET", rng.choice([b"w_", b"o_"]) + element, rng.choice(_VALUES)])
        elif roll == 4:
            out.append([b"HSET", b"h_" + element, rng.choice([b"f", b"g"]),
                        rng.choice(_VALUES)])
        elif roll == 5:
            out.append([b"DEL", rng.choice([b"w_", b"h_", b"o_"]) + element])
        else:
            out.append(_sort_command(rng))
    return out


def _sort_command(rng: random.Random) -> list[bytes]:
    read_only = rng.random() < 0.3
    argv = [b"SORT_RO" if read_only else b"SORT", rng.choice(_SOURCES)]
    options: list[list[bytes]] = []
    if rng.random() < 0.5:
        options.append([b"BY", rng.choice(_BY)])
    if rng.random() < 0.4:
        options.append([b"LIMIT", rng.choice([b"-1", b"0", b"1", b"3", b"10"]),
                        rng.choice([b"-1", b"0", b"1", b"2", b"5"])])
    for _ in range(rng.choice([0, 0, 1, 2])):
        options.append([b"GET", rng.choice(_GET)])
    if rng.random() < 0.5:
        options.append([rng.choice([b"ASC", b"DESC", b"desc"])])
    if rng.random() < 0.5:
        options.append([b"ALPHA"])
    if not read_only and rng.random() < 0.3:
        options.append([b"STORE", rng.choice([b"d1", b"d2"])])
    if rng.random() < 0.03:
        options.append([rng.choice([b"LIMIT", b"BY", b"FOO"])])  # a syntax error
    rng.shuffle(options)
    return argv + [word for option in options for word in option]


def _strength(state: KVState, argv: list[bytes], step: int) -> str:
    """How well Redis defines this command's answer: "exact", "multiset" or "length" (see the
    module docstring)."""
    if argv[0] not in (b"SORT", b"SORT_RO"):
        return "exact"
    words = [w.upper() for w in argv]
    by = [argv[i + 1] for i, w in enumerate(words[:-1]) if w == b"BY"]
    dontsort = any(b"*" not in pattern for pattern in by)
    store = b"STORE" in words
    kind = state.type_name(argv[1], T0 + step)
    if kind == b"set" and dontsort and not store:
        return "length"
    if b"ALPHA" not in words or not by or dontsort:
        return "exact"
    values = state.execute_read([b"SORT_RO", argv[1], b"BY", b"nosort", b"GET", by[-1]],
                                T0 + step)
    if not isinstance(values, list) or len(set(values)) == len(values):
        return "exact"
    return "length" if b"LIMIT" in words else "multiset"


def _weakened(reply: object, strength: str) -> object:
    if strength == "exact" or not isinstance(reply, list):
        return reply
    if strength == "length":
        return len(reply)
    return sorted(reply, key=lambda item: (item is not None, item or b""))


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(2))
def test_random_sorts_answer_as_redis_does(redis_port: int, protocol: int, seed: int) -> None:
    redis = RawConnection(redis_port, protocol)
    try:  # (a new connection: Redis's errno is EAGAIN again, see SCRIPTED_RANGE_ERRORS)
        redis.command([b"FLUSHALL"])
        state = _new_state()
        mismatches = []
        weak = 0
        for step, argv in enumerate(commands(seed, 700)):
            strength = _strength(state, argv, step)
            expected = _weakened(plain(redis.command(argv)), strength)
            ours = _weakened(_ours(state, argv, step, protocol), strength)
            if ours != expected:
                mismatches.append((step, argv, ours, expected))
            if strength != "exact":
                weak += 1
                words = [w.upper() for w in argv]
                if b"STORE" in words:  # go on from Redis's list
                    destination = argv[len(words) - 1 - words[::-1].index(b"STORE") + 1]
                    stored = redis.command([b"LRANGE", destination, b"0", b"-1"])
                    state.apply_command([b"DEL", destination], T0 + step)
                    if stored:
                        state.apply_command([b"RPUSH", destination, *stored], T0 + step)
        assert not mismatches, mismatches[:3]
        for key in _SOURCES + [b"d2"]:  # the states agree too
            for argv in ([b"TYPE", key], [b"LRANGE", key, b"0", b"-1"]):
                assert _ours(state, argv, 0, protocol) == plain(redis.command(argv)), argv
        assert weak < 200
    finally:
        redis.close()


def test_the_random_stream_covers_sort_s_replies_and_errors() -> None:
    state = _new_state()
    errors: set[str] = set()
    kinds: set[str] = set()
    strengths: set[str] = set()
    for step, argv in enumerate(commands(0, 700) + commands(1, 700)):
        strengths.add(_strength(state, argv, step))
        reply = state.apply_command(argv, T0 + step, step)
        if argv[0] in (b"SORT", b"SORT_RO"):
            kinds.add(type(reply).__name__)
            if isinstance(reply, list) and None in reply:
                kinds.add("nil")
            if hasattr(reply, "message"):
                errors.add(reply.message[:30])  # type: ignore[attr-defined]
    assert {"list", "int", "ErrorReply", "nil"} <= kinds
    assert strengths == {"exact", "multiset", "length"}
    for text in ("WRONGTYPE", "ERR syntax error", "ERR One or more scores"):
        assert any(e.startswith(text) for e in errors), text
