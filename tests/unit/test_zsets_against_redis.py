"""Sorted set commands, differentially: the same seeded stream of commands goes to a real
redis-server and to a replikv state, and every reply must match, in RESP2 and RESP3, bytes parsed
the same way (hiredis). scripts/install.sh --test installs redis-server.

What is normalised, and why:
- Scores are compared exactly against Redis 7.2 and later, which write them as replikv does (the
  shortest digits, `replikv.resp.format_double`). Redis 7.0 wrote 17 significant digits
  (0.1 as 0.10000000000000001): against it every bulk string that reads as a double is compared
  as that double, sign of zero included. RESP3 doubles are parsed by hiredis either way.
- ZRANDMEMBER by its shape, and by the members it picks being the key's (replikv's picks come
  from its seeded generator).
- ZSCAN by its contents (a Redis skiplist pages in its dict's order; replikv's zset of up to 128
  members comes whole in ZRANGE's order, as a Redis listpack does).
- OBJECT ENCODING only for the keys whose history Redis does not remember differently: z1 and
  z2, which never hold a member of more than 64 bytes or more than 128 members.
ZRANGEBYLEX and its relatives go only to keys whose members share one score (zl) or that are
listpacks in Redis (z1, z2), where the answer is specified; "dst" (the STORE commands' target)
may mix scores in a skiplist. ZRANK ... WITHSCORE (Redis 7.2) and ZSCAN ... NOVALUES (whose
error Redis 7.4 words its own way) are left out for older servers.
The connection and server helpers are the hash test's.
"""

from __future__ import annotations

import math
import random

import pytest

from replikv.resp import encode_reply
from replikv.state import KVState

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    RawConnection,
    _redis_server_installed,
    compare_stream,
    parsed,
    plain,
    redis_port,
    server_version,
    stream_coverage,
)

T0 = 1_000_000

_MIXED = [b"z1", b"z2"]  # listpacks in Redis: scores of every kind, short members
_LEX = b"zl"  # every member scores 0 (and one is long: a skiplist in Redis)
_DST = b"dst"  # the STORE commands' target
_KEYS = [*_MIXED, _LEX, _DST, b"str", b"set"]
_MEMBERS = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"", b"10", b"-3", b"a\x00b", b"B"]
_LONG = b"m" * 70
_SCORES = [b"1", b"2", b"-3", b"0", b"-0", b"0.5", b"1.5", b"inf", b"-inf", b"+inf", b"1e3",
           b"0.1", b"1e20", b"1e-5", b"9007199254740993", b"-2.25", b"3", b"4", b"0.30000000000000004",
           b"1e-7", b"123.456"]
_BAD_SCORES = [b"x", b"nan", b"", b" 1", b"1e400", b"(1", b"1e-400", b"1 "]
_BOUNDS = [b"-inf", b"+inf", b"inf", b"(1", b"1", b"1.5", b"(0", b"0", b"-3", b"(-3", b"2",
           b"(inf", b"x", b"", b" 2", b"[1", b"1e400", b"(", b"3", b" ", b"( ", b"0x1p1",
           b"-0"]
_LEX_BOUNDS = [b"-", b"+", b"[a", b"(b", b"[c", b"(c", b"[", b"(", b"[g", b"(10", b"a", b"+x",
               b"[m"]
_INTS = [b"0", b"1", b"2", b"-1", b"-2", b"5", b"-100", b"x", b"100", b"1.5"]


def _member(rng: random.Random, key: bytes) -> bytes:
    if key == _LEX and rng.random() < 0.1:
        return _LONG
    return rng.choice(_MEMBERS)


def _score(rng: random.Random, key: bytes) -> bytes:
    if key == _LEX:
        return b"0"
    return rng.choice(_BAD_SCORES) if rng.random() < 0.04 else rng.choice(_SCORES)


def _pairs(rng: random.Random, key: bytes, most: int) -> list[bytes]:
    return [x for _ in range(rng.randint(1, most)) for x in (_score(rng, key), _member(rng, key))]


def _zadd(rng: random.Random, key: bytes) -> list[bytes]:
    options = rng.choice([[], [], [], [b"NX"], [b"XX"], [b"CH"], [b"GT"], [b"LT"], [b"GT", b"CH"],
                          [b"XX", b"LT", b"CH"], [b"NX", b"XX"], [b"GT", b"LT"], [b"NX", b"GT"],
                          [b"INCR"], [b"INCR", b"XX"], [b"incr", b"nx"], [b"ch", b"GT", b"incr"]])
    if b"INCR" in [o.upper() for o in options] and rng.random() < 0.8:
        return [b"ZADD", key, *options, _score(rng, key), _member(rng, key)]
    return [b"ZADD", key, *options, *_pairs(rng, key, 5)]


def _keys(rng: random.Random) -> list[bytes]:
    return [rng.choice(_KEYS) for _ in range(rng.randint(1, 3))]


def commands(seed: int, count: int, recent: bool) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"v"], [b"SADD", b"set", b"a", b"c", b"x"]]
    for _ in range(count):
        key = rng.choice(_KEYS)
        zkey = rng.choice([*_MIXED, _LEX])  # a key whose lex ranges are specified
        member = _member(rng, key)
        low, high = rng.choice(_BOUNDS), rng.choice(_BOUNDS)
        lex_low, lex_high = rng.choice(_LEX_BOUNDS), rng.choice(_LEX_BOUNDS)
        # A negative offset only where Redis has a listpack: a Redis 7.4 skiplist counts it
        # from the end of the range, where a listpack (and Redis 7.0) answer nothing.
        offsets = _INTS if key in _MIXED and zkey in _MIXED else [b"0", b"1", b"2", b"5", b"x"]
        limit = [b"LIMIT", rng.choice(offsets), rng.choice(_INTS)] if rng.random() < 0.4 else []
        scores = [b"WITHSCORES"] if rng.random() < 0.5 else []
        inputs = [rng.choice(_KEYS) for _ in range(rng.randint(1, 3))]
        # Mostly as many keys as numkeys says; now and then more or fewer (a syntax error).
        numkeys = b"%d" % (len(inputs) if rng.random() < 0.8 else rng.randint(1, 3))
        options: list[list[bytes]] = [
            _zadd(rng, key), _zadd(rng, key), _zadd(rng, rng.choice(_MIXED)),
            [b"ZINCRBY", key, _score(rng, key) if key != _LEX else b"0", member],
            [b"ZINCRBY", key, b"nx", member],
            [b"ZINCRBY", rng.choice(_MIXED), rng.choice([b"inf", b"-inf"]), b"i"],  # to NaN
            [b"ZADD", key, *rng.choice([[b"NX", b"XX"], [b"gt", b"LT"], [b"NX", b"GT"],
                                        [b"INCR"]]), *_pairs(rng, key, 2)],
            [b"ZREM", key, *[_member(rng, key) for _ in range(rng.randint(1, 3))]],
            [b"ZSCORE", key, member],
            [b"ZMSCORE", key, member, _member(rng, key)],
            [b"ZCARD", key],
            [b"ZCOUNT", key, low, high],
            [b"ZLEXCOUNT", zkey, lex_low, lex_high],
            [b"ZRANGE", key, rng.choice(_INTS), rng.choice(_INTS), *scores],
            [b"ZRANGE", key, rng.choice(_INTS), rng.choice(_INTS), b"REV", *scores, *limit],
            [b"ZRANGE", key, low, high, b"BYSCORE", *rng.choice([[], [b"REV"]]), *scores, *limit],
            [b"ZRANGE", zkey, lex_low, lex_high, b"BYLEX", *rng.choice([[], [b"REV"]]), *limit],
            [b"ZRANGE", zkey, lex_low, lex_high, b"BYLEX", b"WITHSCORES"],
            [b"ZRANGE", key, b"0", b"1", rng.choice([b"REV", b"BYSCORE", b"BYLEX", b"x"]),
             rng.choice([b"REV", b"BYSCORE", b"BYLEX"])],
            [b"ZRANGEBYSCORE", key, low, high, *scores, *limit],
            [b"ZREVRANGEBYSCORE", key, high, low, *scores, *limit],
            [b"ZRANGEBYSCORE", key, low, high, b"REV"],
            [b"ZRANGEBYLEX", zkey, lex_low, lex_high, *limit],
            [b"ZREVRANGEBYLEX", zkey, lex_high, lex_low, *limit],
            [b"ZREVRANGE", key, rng.choice(_INTS), rng.choice(_INTS), *scores],
            [b"ZRANK", key, member], [b"ZREVRANK", key, member],
            [rng.choice([b"ZRANK", b"ZREVRANK"]), key, member, b"x", b"y"],
            [rng.choice([b"ZPOPMIN", b"ZPOPMAX"]), key],
            [rng.choice([b"ZPOPMIN", b"ZPOPMAX"]), key, rng.choice([b"0", b"1", b"2", b"5",
                                                                    b"-1", b"x"])],
            [b"ZPOPMIN", key, b"1", b"2"],
            [b"ZMPOP", numkeys, *inputs, rng.choice([b"MIN", b"max", b"left"])],
            [b"ZMPOP", numkeys, *inputs[:2], b"MAX", b"COUNT", rng.choice([b"1", b"3", b"0",
                                                                           b"x"])],
            [b"ZMPOP", b"0", key, b"MIN"],
            [b"ZREMRANGEBYRANK", key, rng.choice(_INTS), rng.choice(_INTS)],
            [b"ZREMRANGEBYSCORE", key, low, high],
            [b"ZREMRANGEBYLEX", zkey, lex_low, lex_high],
            [b"ZRANDMEMBER", key, *rng.choice([[], [b"2"], [b"-5"], [b"0"], [b"20"],
                                               [b"3", b"WITHSCORES"], [b"-3", b"withscores"],
                                               [b"x"], [b"2", b"bad"]])],
            [b"ZSCAN", key, rng.choice([b"0", b"x"]), *rng.choice([[], [b"COUNT", b"1000"],
                                                                  [b"MATCH", b"*a*"],
                                                                  [b"COUNT", b"0"],
                                                                  [b"TYPE", b"zset"]])],
            [rng.choice([b"ZUNION", b"ZINTER", b"ZDIFF"]), numkeys, *inputs,
             *rng.choice([[], [b"WITHSCORES"], [b"AGGREGATE", b"MIN", b"WITHSCORES"],
                          [b"AGGREGATE", b"max"], [b"WEIGHTS", b"2", b"0.5", b"-1"][:1 + len(inputs)],
                          [b"WEIGHTS", b"x", b"1", b"1"][:1 + len(inputs)], [b"AGGREGATE", b"avg"],
                          [b"WITHSCORES", b"WITHSCORES"]])],
            [rng.choice([b"ZUNIONSTORE", b"ZINTERSTORE", b"ZDIFFSTORE"]), _DST, numkeys, *inputs,
             *rng.choice([[], [b"AGGREGATE", b"SUM"], [b"WEIGHTS", b"1", b"2", b"0"][:1 + len(inputs)],
                          [b"WITHSCORES"], [b"AGGREGATE", b"MAX", b"WEIGHTS", b"0", b"1", b"1"][:3 + len(inputs)]])],
            [b"ZINTERCARD", numkeys, *inputs, *rng.choice([[], [b"LIMIT", b"1"], [b"LIMIT", b"-1"],
                                                          [b"LIMIT", b"x"], [b"WITHSCORES"]])],
            [b"ZUNION", b"0", key], [b"ZINTERSTORE", _DST, b"x", key],
            [b"ZUNION", b"2", *_MIXED, b"WEIGHTS", b"1", rng.choice([b"nope", b"nan", b"2"])],
            [b"ZRANGESTORE", _DST, key, *rng.choice([[rng.choice(_INTS), rng.choice(_INTS)],
                                                    [low, high, b"BYSCORE", *limit],
                                                    [b"0", b"-1", b"REV"],
                                                    [b"0", b"-1", b"WITHSCORES"]])],
            [b"TYPE", key],
            [b"OBJECT", b"ENCODING", rng.choice(_MIXED)],
            [b"DEL", key],
            [b"ZADD", key], [b"ZADD", key, b"1"], [b"ZADD", key, b"NX", b"1"],
            [b"ZCOUNT", key, b"1"],
            [b"BZPOPMIN", key, b"0.01"],  # one attempt here; there, 10 ms of blocking
        ]
        if recent:  # Redis 7.2 on: ZRANK ... WITHSCORE; Redis 7.4 on: NOVALUES is known
            options.append([rng.choice([b"ZRANK", b"ZREVRANK"]), key, member,
                            rng.choice([b"WITHSCORE", b"withscore", b"bad"])])
            options.append([b"ZSCAN", key, b"0", b"NOVALUES"])
        argv = rng.choice(options)
        if argv[0] == b"ZINCRBY" and argv[3] == b"i" and rng.random() < 0.3:
            out.append([b"ZADD", argv[1], b"inf" if argv[2] == b"-inf" else b"-inf", b"i"])
        out.append(argv)
    return out


def _scores_as_doubles(value: object) -> object:
    """Every bulk string that reads as a double as that double (for Redis before 7.2), written
    so that -0.0 and 0.0 differ."""
    if isinstance(value, list):
        return [_scores_as_doubles(item) for item in value]
    if isinstance(value, bytes):
        try:
            number = float(value)
        except ValueError:
            return value
        return ("double", repr(number)) if not math.isnan(number) else value
    if isinstance(value, float):
        return ("double", repr(value))
    return value


def normalised(argv: list[bytes], reply: object, exact_scores: bool) -> object:
    name = argv[0].upper()
    if isinstance(reply, tuple):  # an error
        return reply
    if name == b"ZRANDMEMBER":
        return ("picks", type(reply).__name__,
                len(reply) if isinstance(reply, list) else None)  # type: ignore[arg-type]
    if name == b"ZSCAN" and isinstance(reply, list) and isinstance(reply[1], list):
        items = reply[1]
        reply = [reply[0], sorted([m, s] for m, s in zip(items[0::2], items[1::2], strict=True))]
    return reply if exact_scores else _scores_as_doubles(reply)


def _check_picks(state: KVState, argv: list[bytes], reply: object) -> None:
    """ZRANDMEMBER's picks are the key's members, with their scores."""
    if (argv[0].upper() != b"ZRANDMEMBER" or not isinstance(reply, list)
            or argv[1] not in (*_MIXED, _LEX, _DST)):
        return
    ranked = state.apply_command([b"ZRANGE", argv[1], b"0", b"-1", b"WITHSCORES"], T0)
    scores = dict(zip(ranked[0::2], ranked[1::2], strict=True))  # type: ignore[index]
    with_scores = len(argv) == 4
    items = reply if not with_scores else reply[0::2]
    assert all(item in scores for item in items), (argv, reply)
    if with_scores:
        assert all(scores[m] == s for m, s in zip(reply[0::2], reply[1::2], strict=True))


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_zset_commands_answer_as_redis_does(redis_port: int, protocol: int,  # noqa: F811
                                            seed: int) -> None:
    version = server_version(redis_port)
    exact = version >= (7, 2)
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        mismatches = compare_stream(
            redis, state, commands(seed, 600, recent=version >= (7, 4)), protocol,
            lambda argv, reply: normalised(argv, reply, exact),
            lambda argv, reply: _check_picks(state, argv, reply))
        for key in _KEYS:  # the states agree too
            argv = [b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]
            ours = normalised(argv, plain(parsed(encode_reply(state.apply_command(argv, T0),
                                                              protocol))), exact)
            assert ours == normalised(argv, plain(redis.command(argv)), exact), key
        for key in _MIXED:
            argv = [b"OBJECT", b"ENCODING", key]
            assert state.apply_command(argv, T0) == redis.command(argv)
        assert not mismatches, mismatches[:3]
    finally:
        redis.close()


def test_a_skiplist_answers_as_redis_does(redis_port: int) -> None:  # noqa: F811
    """A sorted set past a listpack's size: ranks, score ranges, pops, range removals and the
    set operations on 300 members with scores of every kind."""
    version = server_version(redis_port)
    exact = version >= (7, 2)
    rng = random.Random(5)
    redis = RawConnection(redis_port, 2)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        scores = [b"%d" % rng.randint(-50, 50) for _ in range(150)] + [
            rng.choice(_SCORES) for _ in range(150)]
        big = [x for i, score in enumerate(scores) for x in (score, b"m%03d" % i)]
        stream: list[list[bytes]] = [[b"ZADD", b"big", *big], [b"ZADD", b"other", *big[:60]],
                                     [b"OBJECT", b"ENCODING", b"big"]]
        for _ in range(300):
            low, high = rng.choice(_BOUNDS), rng.choice(_BOUNDS)
            stream.append(rng.choice([
                [b"ZRANGE", b"big", rng.choice(_INTS), rng.choice(_INTS), b"WITHSCORES"],
                [b"ZRANGE", b"big", b"%d" % rng.randint(-320, 320), b"%d" % rng.randint(-320, 320),
                 b"REV"],
                [b"ZRANGEBYSCORE", b"big", low, high, b"WITHSCORES", b"LIMIT",
                 b"%d" % rng.randint(0, 40), b"%d" % rng.randint(-1, 20)],
                [b"ZREVRANGEBYSCORE", b"big", high, low, b"LIMIT", b"%d" % rng.randint(0, 40),
                 b"%d" % rng.randint(-1, 20)],
                [b"ZCOUNT", b"big", low, high],
                [b"ZRANK", b"big", b"m%03d" % rng.randrange(320)],
                [b"ZREVRANK", b"big", b"m%03d" % rng.randrange(320)],
                [b"ZSCORE", b"big", b"m%03d" % rng.randrange(320)],
                [b"ZADD", b"big", rng.choice(_SCORES), b"m%03d" % rng.randrange(320)],
                [b"ZINCRBY", b"big", rng.choice([b"1", b"-2.5", b"0.1"]),
                 b"m%03d" % rng.randrange(320)],
                [b"ZREM", b"big", b"m%03d" % rng.randrange(320)],
                [b"ZPOPMIN", b"big", b"2"], [b"ZPOPMAX", b"big"],
                [b"ZREMRANGEBYRANK", b"big", b"%d" % rng.randint(-5, 5), b"%d" % rng.randint(-5, 5)],
                [b"ZREMRANGEBYSCORE", b"big", b"(%d" % rng.randint(-50, 50),
                 b"%d" % rng.randint(-50, 50)],
                [b"ZUNION", b"2", b"big", b"other", b"WITHSCORES", b"AGGREGATE",
                 rng.choice([b"MIN", b"MAX"])],
                [b"ZINTERSTORE", b"dst", b"2", b"big", b"other", b"WEIGHTS", b"1", b"2"],
                [b"ZRANGE", b"dst", b"0", b"-1", b"WITHSCORES"],
                [b"ZDIFF", b"2", b"big", b"other"],
                [b"ZCARD", b"big"],
                [b"ZSCAN", b"big", b"0", b"COUNT", b"100000"],
            ]))
        mismatches = compare_stream(redis, state, stream, 2,
                                    lambda argv, reply: normalised(argv, reply, exact))
        assert not mismatches, [(step, argv[:6], *replies)
                                for step, argv, *replies in mismatches[:3]]
    finally:
        redis.close()


def test_the_differential_stream_covers_every_zset_command_and_reply_kind() -> None:
    """The comparison is only as good as its stream: every command, errors and WRONGTYPE."""
    names, errors, kinds = stream_coverage(commands(0, 600, True) + commands(1, 600, True))
    assert {b"ZADD", b"ZINCRBY", b"ZREM", b"ZSCORE", b"ZMSCORE", b"ZCARD", b"ZCOUNT",
            b"ZLEXCOUNT", b"ZRANGE", b"ZRANGEBYSCORE", b"ZREVRANGEBYSCORE", b"ZRANGEBYLEX",
            b"ZREVRANGEBYLEX", b"ZREVRANGE", b"ZRANK", b"ZREVRANK", b"ZPOPMIN", b"ZPOPMAX",
            b"ZMPOP", b"ZREMRANGEBYRANK", b"ZREMRANGEBYSCORE", b"ZREMRANGEBYLEX",
            b"ZRANDMEMBER", b"ZSCAN", b"ZUNION", b"ZINTER", b"ZDIFF", b"ZUNIONSTORE",
            b"ZINTERSTORE", b"ZDIFFSTORE", b"ZINTERCARD", b"ZRANGESTORE"} <= names
    assert {"int", "bytes", "list", "float", "NoneType", "_NullArray", "ErrorReply",
            "PairArray"} <= kinds
    assert any(e.startswith("WRONGTYPE") for e in errors)
    for text in ("ERR value is not a valid float", "ERR min or max is not a float",
                 "ERR min or max not valid string", "ERR syntax error",
                 "ERR value is not an integer", "ERR value is out of range, m",
                 "ERR XX and NX options at the s", "ERR GT, LT, and/or NX options",
                 "ERR INCR option supports a sin", "ERR resulting score is not a n",
                 "ERR syntax error, LIMIT is onl", "ERR syntax error, WITHSCORES n",
                 "ERR weight value is not a floa", "ERR LIMIT can't be negative",
                 "ERR numkeys should be greater", "ERR count should be greater th",
                 "ERR at least 1 input key is ne", "ERR wrong number of arguments",
                 "ERR invalid cursor", "ERR NOVALUES option can only b"):
        assert any(e.startswith(text[:25]) for e in errors), text
