"""Sorted set commands against KVState: Redis 7.4 semantics, replies, error texts and the order
of checks (t_zset.c; checked against redis-server 7.0, and 7.4's source where they differ),
WRONGTYPE in every direction, the key commands on sorted set keys, the blocking
commands, introspection and the size limit. tests/unit/test_zsets_against_redis.py runs the
same commands against a real redis-server."""

from __future__ import annotations

import math

import pytest

from replikv.commands import zsets
from replikv.commands.lists import ERR_LMPOP_COUNT, ERR_NUMKEYS
from replikv.commands.zsets import parse_score
from replikv.replies import NOT_FLOAT, NOT_INTEGER, OK, SYNTAX, WRONG_TYPE, NullArray, PairArray
from replikv.resp import encode_reply
from replikv.state import (
    KEY_OVERHEAD_BYTES,
    SHARD_COUNT,
    ZSET_MEMBER_OVERHEAD_BYTES,
    ZSET_OVERHEAD_BYTES,
)

from .state_driver import T0, Node, err

WRONGTYPE = err(WRONG_TYPE)


@pytest.fixture
def node() -> Node:
    return Node()


def ranked(node: Node, key: str = "z") -> object:
    return node.read("ZRANGE", key, "0", "-1", "WITHSCORES")


def with_zset(node: Node, key: str = "z", *pairs: object) -> None:
    pairs = pairs or ("1", "a", "2", "b", "3", "c", "4", "d")
    assert node.write("ZADD", key, *pairs) == len(pairs) // 2


# ---- reading scores ----


@pytest.mark.parametrize(("raw", "score"), [
    (b"1", 1.0), (b"-2.5", -2.5), (b"+3", 3.0), (b".5", 0.5), (b"5.", 5.0), (b"1e3", 1000.0),
    (b"1E-2", 0.01), (b"inf", math.inf), (b"+inf", math.inf), (b"-inf", -math.inf),
    (b"INF", math.inf), (b"Infinity", math.inf), (b"-infinity", -math.inf), (b"0x10", 16.0),
    (b"0x1p-2", 0.25), (b"-0X1.8P1", -3.0), (b"0x.8", 0.5), (b"1e308", 1e308),
    (b"4.9e-324", 5e-324), (b"0e-999", 0.0), (b"-0", -0.0),
    (b"9007199254740993", 9007199254740992.0),
])  # fmt: skip
def test_scores_are_read_as_strtod_reads_them(raw: bytes, score: float) -> None:
    parsed = parse_score(raw)
    assert parsed == score and math.copysign(1, parsed) == math.copysign(1, score)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [
    b"", b" 1", b"1 ", b"x", b"1x", b"nan", b"-nan", b"NaN(1)", b"1e", b"e5", b".", b"+",
    b"1e309", b"-1e309", b"1e-400", b"0x", b"0x1p99999", b"1\x00", b"1_000", b"infinit",
    b"(1",
])  # fmt: skip
def test_bad_scores_are_refused(raw: bytes) -> None:
    assert parse_score(raw) is None


# ---- ZADD, ZINCRBY ----


def test_zadd_adds_and_updates_and_answers_the_count(node: Node) -> None:
    assert node.write("ZADD", "z", "1", "a", "2", "b") == 2
    assert node.write("ZADD", "z", "3", "a", "1", "c") == 1  # a updated, c added
    assert ranked(node) == [b"c", 1.0, b"b", 2.0, b"a", 3.0]
    assert node.write("ZADD", "z", "CH", "3", "a", "5", "b", "0", "d") == 2  # b changed, d new
    assert node.write("ZADD", "z", "1", "x", "2", "x") == 1  # the last score given wins
    assert node.read("ZSCORE", "z", "x") == 2.0
    # y added, then updated by its second pair; x unchanged.
    assert node.write("ZADD", "z", "ch", "1", "y", "2", "y", "2", "x") == 2
    assert node.read("TYPE", "z") == "zset"
    assert node.read("ZCARD", "z") == 6 and node.read("ZCARD", "missing") == 0


def test_zadd_nx_xx_gt_lt(node: Node) -> None:
    with_zset(node, "z", "5", "a")
    assert node.write("ZADD", "z", "NX", "1", "a", "1", "b") == 1
    assert node.read("ZSCORE", "z", "a") == 5.0
    assert node.write("ZADD", "z", "XX", "CH", "7", "a", "1", "new") == 1
    assert node.read("ZSCORE", "z", "new") is None
    assert node.write("ZADD", "z", "GT", "CH", "6", "a", "8", "b", "0", "c") == 2  # b up, c new
    assert node.read("ZMSCORE", "z", "a", "b", "c") == [7.0, 8.0, 0.0]
    assert node.write("ZADD", "z", "LT", "CH", "9", "a", "1", "b") == 1
    assert node.write("ZADD", "z", "XX", "GT", "CH", "100", "a") == 1
    assert node.write("ZADD", "missing", "XX", "1", "a") == 0
    assert node.read("EXISTS", "missing") == 0


def test_zadd_incr_and_zincrby(node: Node) -> None:
    assert node.write("ZADD", "z", "INCR", "2.5", "a") == 2.5
    assert node.write("ZINCRBY", "z", "-1", "a") == 1.5
    assert node.write("ZINCRBY", "z", "1e3", "b") == 1000.0
    assert node.write("ZADD", "z", "INCR", "NX", "1", "a") is None  # a exists: nothing done
    assert node.write("ZADD", "z", "INCR", "XX", "1", "zz") is None
    assert node.write("ZADD", "z", "INCR", "GT", "-1", "a") is None
    assert node.write("ZADD", "z", "INCR", "GT", "1", "a") == 2.5
    assert node.write("ZADD", "missing", "XX", "INCR", "1", "a") is None
    assert node.write("ZINCRBY", "z", "0", "a") == 2.5  # processed, unchanged
    assert node.write("ZINCRBY", "z", "inf", "a") == math.inf
    assert node.write("ZINCRBY", "z", "-inf", "a") == err(zsets.ERR_NAN)
    assert node.read("ZSCORE", "z", "a") == math.inf  # unchanged by the error
    assert encode_reply(1.5, 2) == b"$3\r\n1.5\r\n" and encode_reply(1.5, 3) == b",1.5\r\n"


@pytest.mark.parametrize(("argv", "reply"), [
    (["ZADD", "z"], err("ERR wrong number of arguments for 'zadd' command")),
    (["ZADD", "z", "1"], err("ERR wrong number of arguments for 'zadd' command")),
    (["ZADD", "z", "NX", "1"], err(SYNTAX)),
    (["ZADD", "z", "1", "a", "2"], err(SYNTAX)),
    (["ZADD", "z", "NX", "XX", "1", "a"], err(zsets.ERR_XX_NX)),
    (["ZADD", "z", "GT", "LT", "1", "a"], err(zsets.ERR_GT_LT_NX)),
    (["ZADD", "z", "NX", "GT", "1", "a"], err(zsets.ERR_GT_LT_NX)),
    (["ZADD", "z", "INCR", "1", "a", "2", "b"], err(zsets.ERR_INCR_PAIRS)),
    (["ZADD", "z", "1", "a", "x", "b"], err(NOT_FLOAT)),
    (["ZADD", "z", "nan", "a"], err(NOT_FLOAT)),
    (["ZADD", "z", "1e400", "a"], err(NOT_FLOAT)),
    (["ZINCRBY", "z", "x", "a"], err(NOT_FLOAT)),
    (["ZINCRBY", "z", "nx", "a"], err(SYNTAX)),  # Redis parses it as ZADD's options
    (["ZINCRBY", "z", "1"], err("ERR wrong number of arguments for 'zincrby' command")),
])  # fmt: skip
def test_zadd_errors_come_before_the_key(node: Node, argv: list[str], reply: object) -> None:
    node.write("SET", "z", "v")  # a string: the parse errors come first
    assert node.write(*argv) == reply


def test_a_negative_zero_is_zero_in_a_zset_of_a_listpacks_size(node: Node) -> None:
    # A Redis listpack stores an integral score as an integer: -0 reads back as 0. A bigger
    # sorted set keeps -0 (and so does the reply of the INCR that computed it).
    assert node.write("ZADD", "small", "INCR", "-0", "m") == -0.0
    assert math.copysign(1, node.read("ZSCORE", "small", "m")) == 1.0  # type: ignore[arg-type]
    assert encode_reply(node.read("ZSCORE", "small", "m"), 2) == b"$1\r\n0\r\n"
    node.write("ZADD", "big", *[x for i in range(129) for x in (str(i), f"m{i}")])
    node.write("ZADD", "big", "-0.0", "zero")
    assert encode_reply(node.read("ZSCORE", "big", "zero"), 2) == b"$2\r\n-0\r\n"
    node.write("ZADD", "long", "-0", "x" * 65)  # a long member: a skiplist
    assert encode_reply(node.read("ZSCORE", "long", "x" * 65), 3) == b",-0\r\n"
    # -0 equals 0: updating one to the other changes nothing.
    assert node.write("ZADD", "big", "CH", "0", "zero") == 0


# ---- ZREM, ZSCORE, ZMSCORE ----


def test_zrem_and_the_last_member_deletes_the_key(node: Node) -> None:
    with_zset(node)
    assert node.write("ZREM", "z", "a", "a", "x") == 1
    assert node.write("ZREM", "missing", "a") == 0
    assert node.write("ZREM", "z", "b", "c", "d", "e") == 3
    assert node.read("EXISTS", "z") == 0
    assert node.read("ZSCORE", "z", "a") is None
    assert node.read("ZMSCORE", "z", "a", "b") == [None, None]
    assert encode_reply([None, 1.5], 2) == b"*2\r\n$-1\r\n$3\r\n1.5\r\n"
    assert encode_reply([None, 1.5], 3) == b"*2\r\n_\r\n,1.5\r\n"


# ---- ZCOUNT, ZLEXCOUNT, ranges ----


def test_zcount_bounds(node: Node) -> None:
    with_zset(node, "z", "1", "a", "2", "b", "3", "c", "-inf", "lo", "inf", "hi")
    assert node.read("ZCOUNT", "z", "-inf", "+inf") == 5
    assert node.read("ZCOUNT", "z", "(1", "3") == 2
    assert node.read("ZCOUNT", "z", "(1", "(3") == 1
    assert node.read("ZCOUNT", "z", "3", "1") == 0
    assert node.read("ZCOUNT", "z", "(inf", "inf") == 0
    assert node.read("ZCOUNT", "z", "inf", "inf") == 1
    assert node.read("ZCOUNT", "z", "", "2") == 2  # strtod reads an empty bound as 0
    assert node.read("ZCOUNT", "z", " 2", "1e400") == 3  # a leading space; an overflow is inf
    assert node.read("ZCOUNT", "z", "(", "(2") == 1
    for spaces in (" ", "( ", "1 ", "\t"):  # spaces alone are not a number, nor after one
        assert node.read("ZCOUNT", "z", spaces, "2") == err(zsets.ERR_RANGE_FLOAT)
    assert node.read("ZCOUNT", "missing", "x", "1") == err(zsets.ERR_RANGE_FLOAT)
    assert node.read("ZCOUNT", "z", "1", "nan") == err(zsets.ERR_RANGE_FLOAT)
    assert node.read("ZCOUNT", "z", "[1", "2") == err(zsets.ERR_RANGE_FLOAT)
    assert node.read("ZCOUNT", "missing", "1", "2") == 0


def test_zlexcount_and_lex_bounds(node: Node) -> None:
    with_zset(node, "z", *[x for m in "abcdef" for x in ("0", m)])
    assert node.read("ZLEXCOUNT", "z", "-", "+") == 6
    assert node.read("ZLEXCOUNT", "z", "[b", "(e") == 3
    assert node.read("ZLEXCOUNT", "z", "(b", "[e") == 3
    assert node.read("ZLEXCOUNT", "z", "+", "-") == 0
    assert node.read("ZLEXCOUNT", "z", "[c", "[c") == 1
    assert node.read("ZLEXCOUNT", "z", "(c", "[c") == 0
    assert node.read("ZLEXCOUNT", "z", "[", "[c") == 3
    for bad in (("a", "+"), ("-", "c"), ("+x", "+"), ("", "+")):
        assert node.read("ZLEXCOUNT", "missing", *bad) == err(zsets.ERR_RANGE_LEX)


def test_zrange_by_rank_and_rev(node: Node) -> None:
    with_zset(node)
    assert node.read("ZRANGE", "z", "0", "-1") == [b"a", b"b", b"c", b"d"]
    assert node.read("ZRANGE", "z", "1", "2", "WITHSCORES") == [b"b", 2.0, b"c", 3.0]
    assert node.read("ZRANGE", "z", "0", "1", "REV") == [b"d", b"c"]
    assert node.read("ZREVRANGE", "z", "-2", "-1", "WITHSCORES") == [b"b", 2.0, b"a", 1.0]
    assert node.read("ZRANGE", "z", "-100", "100") == [b"a", b"b", b"c", b"d"]
    assert node.read("ZRANGE", "z", "3", "1") == []
    assert node.read("ZRANGE", "z", "5", "10") == []
    assert node.read("ZRANGE", "missing", "0", "-1") == []
    reply = node.read("ZRANGE", "z", "0", "0", "WITHSCORES")
    assert type(reply) is PairArray
    assert encode_reply(reply, 2) == b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    assert encode_reply(reply, 3) == b"*1\r\n*2\r\n$1\r\na\r\n,1\r\n"


def test_zrange_by_score_with_limit(node: Node) -> None:
    with_zset(node, "z", *[x for i in range(10) for x in (str(i), f"m{i}")])
    assert node.read("ZRANGE", "z", "(2", "5", "BYSCORE") == [b"m3", b"m4", b"m5"]
    assert node.read("ZRANGEBYSCORE", "z", "2", "5", "LIMIT", "1", "2") == [b"m3", b"m4"]
    assert node.read("ZRANGEBYSCORE", "z", "2", "5", "LIMIT", "1", "-1") == [b"m3", b"m4", b"m5"]
    assert node.read("ZRANGEBYSCORE", "z", "2", "5", "LIMIT", "-1", "5") == []
    assert node.read("ZRANGEBYSCORE", "z", "-inf", "inf", "LIMIT", "10", "5") == []
    assert node.read("ZREVRANGEBYSCORE", "z", "5", "(2", "WITHSCORES", "LIMIT", "1", "1") == [
        b"m4", 4.0]
    assert node.read("ZRANGE", "z", "5", "(2", "BYSCORE", "REV", "LIMIT", "0", "2") == [
        b"m5", b"m4"]
    assert node.read("ZRANGE", "z", "5", "2", "BYSCORE") == []


def test_zrange_by_lex(node: Node) -> None:
    with_zset(node, "z", *[x for m in "abcdefg" for x in ("0", m)])
    assert node.read("ZRANGEBYLEX", "z", "[b", "(e") == [b"b", b"c", b"d"]
    assert node.read("ZRANGE", "z", "(e", "[b", "BYLEX", "REV") == [b"d", b"c", b"b"]
    assert node.read("ZREVRANGEBYLEX", "z", "+", "-", "LIMIT", "2", "2") == [b"e", b"d"]
    assert node.read("ZRANGEBYLEX", "z", "-", "+", "LIMIT", "5", "10") == [b"f", b"g"]
    # Mixed scores in a listpack-sized zset: the walk Redis's listpack makes (offset steps
    # over members whatever they are).
    node.write("ZADD", "mixed", "1", "g", "2", "b", "3", "10", "4", "-3", "5", "i")
    assert node.read("ZREVRANGEBYLEX", "mixed", "+", "(10", "LIMIT", "4", "1") == [b"g"]
    # (the first member at or above [c is g, the walk then takes every member up to +)
    assert node.read("ZRANGEBYLEX", "mixed", "[c", "+") == [b"g", b"b", b"10", b"-3", b"i"]


def test_a_big_zset_answers_ranges_by_position(node: Node) -> None:
    members = [f"m{i:05d}" for i in range(5000)]
    node.write("ZADD", "z", *[x for m in members for x in ("0", m)])
    assert node.read("ZRANGEBYLEX", "z", "[m00100", "(m00103") == [b"m00100", b"m00101",
                                                                     b"m00102"]
    assert node.read("ZREVRANGEBYLEX", "z", "+", "-", "LIMIT", "1", "2") == [b"m04998",
                                                                             b"m04997"]
    assert node.read("ZLEXCOUNT", "z", "(m00100", "+") == 4899
    assert node.write("ZREMRANGEBYLEX", "z", "-", "(m00010") == 10
    node.write("ZADD", "s", *[x for i in range(5000) for x in (str(i % 100), f"n{i:05d}")])
    assert node.read("ZCOUNT", "s", "10", "(20") == 500
    assert node.read("ZRANGEBYSCORE", "s", "99", "+inf", "LIMIT", "10", "2") == [b"n01099",
                                                                                 b"n01199"]
    assert node.read("ZRANK", "s", "n00001") == 50  # after the 50 members scoring 0
    assert node.read("ZREVRANK", "s", "n00001") == 4949


@pytest.mark.parametrize(("argv", "reply"), [
    (["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"], err(zsets.ERR_LIMIT_RANK)),
    # LIMIT x -1 is no limit, accepted whatever the range: the key is looked at.
    (["ZRANGE", "z", "0", "1", "LIMIT", "5", "-1"], WRONGTYPE),
    (["ZRANGE", "z", "[a", "[b", "BYLEX", "WITHSCORES"], err(zsets.ERR_WITHSCORES_LEX)),
    (["ZRANGE", "z", "0", "1", "REV", "REV"], err(SYNTAX)),
    (["ZRANGE", "z", "0", "1", "BYSCORE", "BYLEX"], err(SYNTAX)),
    (["ZRANGE", "z", "0", "1", "LIMIT", "0"], err(SYNTAX)),
    (["ZRANGE", "z", "0", "1", "LIMIT", "x", "1", "BYSCORE"], err(NOT_INTEGER)),
    (["ZRANGE", "z", "a", "1"], err(NOT_INTEGER)),
    (["ZRANGE", "z", "a", "1", "BYSCORE"], err(zsets.ERR_RANGE_FLOAT)),
    (["ZRANGE", "z", "a", "1", "BYLEX"], err(zsets.ERR_RANGE_LEX)),
    (["ZRANGEBYSCORE", "z", "0", "1", "REV"], err(SYNTAX)),
    (["ZREVRANGE", "z", "0", "1", "BYSCORE"], err(SYNTAX)),
    (["ZRANGESTORE", "d", "z", "0", "1", "WITHSCORES"], err(SYNTAX)),
    (["ZRANGE", "z", "0"], err("ERR wrong number of arguments for 'zrange' command")),
])  # fmt: skip
def test_zrange_errors_come_before_the_key(node: Node, argv: list[str], reply: object) -> None:
    node.write("SET", "z", "v")
    assert node.write(*argv) == reply
    assert node.read("ZRANGE", "z", "0", "1") == WRONGTYPE


def test_zrangestore(node: Node) -> None:
    with_zset(node)
    node.write("SET", "d", "v", "EX", "100")
    assert node.write("ZRANGESTORE", "d", "z", "1", "-1", "REV") == 3
    assert ranked(node, "d") == [b"a", 1.0, b"b", 2.0, b"c", 3.0]
    assert node.read("TTL", "d") == -1  # replaced whole, without its expiry
    assert node.write("ZRANGESTORE", "d", "z", "(2", "+inf", "BYSCORE", "LIMIT", "0", "1") == 1
    assert node.write("ZRANGESTORE", "d", "z", "10", "20") == 0
    assert node.read("EXISTS", "d") == 0  # an empty result deletes the destination
    assert node.write("ZRANGESTORE", "d", "missing", "0", "-1") == 0


# ---- ZRANK, ZREVRANK ----


def test_zrank_and_zrevrank(node: Node) -> None:
    with_zset(node)
    assert node.read("ZRANK", "z", "c") == 2 and node.read("ZREVRANK", "z", "c") == 1
    assert node.read("ZRANK", "z", "c", "WITHSCORE") == [2, 3.0]
    assert node.read("ZREVRANK", "z", "a", "withscore") == [3, 1.0]
    assert node.read("ZRANK", "z", "x") is None
    assert node.read("ZRANK", "z", "x", "WITHSCORE") is NullArray
    assert node.read("ZRANK", "missing", "x", "WITHSCORE") is NullArray
    assert node.read("ZRANK", "z", "a", "bad") == err(SYNTAX)
    assert node.read("ZRANK", "z", "a", "WITHSCORE", "x") == err(
        "ERR wrong number of arguments for 'zrank' command")


# ---- pops ----


def test_zpopmin_zpopmax(node: Node) -> None:
    with_zset(node)
    assert node.write("ZPOPMIN", "z") == [b"a", 1.0]
    assert node.write("ZPOPMAX", "z", "2") == [b"d", 4.0, b"c", 3.0]
    assert type(node.write("ZPOPMAX", "z", "0")) is list
    assert node.write("ZPOPMIN", "z", "10") == [b"b", 2.0]
    assert node.read("EXISTS", "z") == 0
    assert node.write("ZPOPMIN", "z") == []
    assert node.write("ZPOPMIN", "z", "x") == err(zsets.ERR_COUNT_NOT_POSITIVE)
    assert node.write("ZPOPMIN", "z", "-1") == err(zsets.ERR_COUNT_NOT_POSITIVE)
    assert node.write("ZPOPMIN", "z", "1", "2") == err(SYNTAX)
    # RESP3: flat without a count, pairs with one.
    assert encode_reply([b"a", 1.0], 3) == b"*2\r\n$1\r\na\r\n,1\r\n"


def test_zmpop(node: Node) -> None:
    with_zset(node, "b")
    assert node.write("ZMPOP", "2", "a", "b", "MIN") == [b"b", [[b"a", 1.0]]]
    assert node.write("ZMPOP", "2", "a", "b", "max", "COUNT", "2") == [
        b"b", [[b"d", 4.0], [b"c", 3.0]]]
    assert node.write("ZMPOP", "1", "a", "MIN") is NullArray
    assert node.write("ZMPOP", "0", "a", "MIN") == err(ERR_NUMKEYS)
    assert node.write("ZMPOP", "2", "a", "MIN") == err(SYNTAX)
    assert node.write("ZMPOP", "1", "a", "LEFT") == err(SYNTAX)
    assert node.write("ZMPOP", "1", "b", "MIN", "COUNT", "0") == err(ERR_LMPOP_COUNT)
    assert node.write("ZMPOP", "1", "b", "MIN", "COUNT", "1", "COUNT", "1") == err(SYNTAX)
    node.write("SET", "s", "v")
    assert node.write("ZMPOP", "2", "s", "b", "MIN") == WRONGTYPE
    assert node.write("ZMPOP", "2", "b", "s", "MIN") == [b"b", [[b"b", 2.0]]]  # s not reached
    assert zsets.store_keys([b"ZUNIONSTORE", b"d", b"2", b"a", b"b", b"WEIGHTS", b"1", b"2"]) == [
        b"d", b"a", b"b"]


# ---- range removals ----


def test_zremrangebyrank_score_lex(node: Node) -> None:
    with_zset(node, "z", *[x for i in range(10) for x in (str(i), f"m{i}")])
    assert node.write("ZREMRANGEBYRANK", "z", "0", "1") == 2
    assert node.write("ZREMRANGEBYRANK", "z", "-1", "-1") == 1
    assert node.write("ZREMRANGEBYRANK", "z", "5", "2") == 0
    assert node.write("ZREMRANGEBYSCORE", "z", "(3", "5") == 2
    assert node.read("ZRANGE", "z", "0", "-1") == [b"m2", b"m3", b"m6", b"m7", b"m8"]
    node.write("ZADD", "l", *[x for m in "abcde" for x in ("0", m)])
    assert node.write("ZREMRANGEBYLEX", "l", "(a", "[c") == 2
    assert node.write("ZREMRANGEBYLEX", "l", "-", "+") == 3
    assert node.read("EXISTS", "l") == 0
    assert node.write("ZREMRANGEBYRANK", "z", "x", "1") == err(NOT_INTEGER)
    assert node.write("ZREMRANGEBYSCORE", "z", "x", "1") == err(zsets.ERR_RANGE_FLOAT)
    assert node.write("ZREMRANGEBYLEX", "z", "x", "+") == err(zsets.ERR_RANGE_LEX)
    assert node.write("ZREMRANGEBYRANK", "missing", "0", "-1") == 0


# ---- ZRANDMEMBER ----


def test_zrandmember(node: Node) -> None:
    with_zset(node)
    members = {b"a", b"b", b"c", b"d"}
    assert node.read("ZRANDMEMBER", "z", seed=3) in members
    assert node.read("ZRANDMEMBER", "z", seed=3) == node.read("ZRANDMEMBER", "z", seed=3)
    picks = node.read("ZRANDMEMBER", "z", "3", seed=1)
    assert len(picks) == 3 and set(picks) <= members  # type: ignore[arg-type]
    assert picks == sorted(picks)  # type: ignore[type-var]  # a listpack's order, as Redis
    assert node.read("ZRANDMEMBER", "z", "10", "WITHSCORES") == [b"d", 4.0, b"c", 3.0, b"b", 2.0,
                                                                 b"a", 1.0]  # highest first
    repeated = node.read("ZRANDMEMBER", "z", "-10", "WITHSCORES", seed=2)
    assert type(repeated) is PairArray and len(repeated) == 20
    assert node.read("ZRANDMEMBER", "z", "0") == []
    assert node.read("ZRANDMEMBER", "missing") is None
    assert node.read("ZRANDMEMBER", "missing", "2") == []
    assert node.read("ZRANDMEMBER", "z", "x") == err(NOT_INTEGER)
    assert node.read("ZRANDMEMBER", "z", "1", "x") == err(SYNTAX)
    assert node.read("ZRANDMEMBER", "z", str(2**62), "WITHSCORES") == err(
        "ERR value is out of range")
    assert node.read("ZRANDMEMBER", "z", str(-zsets.ZRANDMEMBER_REPEATS_MAX - 1)) == err(
        f"ERR value is out of range, value must between {-zsets.ZRANDMEMBER_REPEATS_MAX} and "
        "9223372036854775807")


# ---- ZSCAN ----


def test_zscan(node: Node) -> None:
    with_zset(node, "z", "0.1", "a", "2", "b", "1e20", "c")
    assert node.read("ZSCAN", "z", "0") == [b"0", [b"a", b"0.1", b"b", b"2", b"c", b"1e+20"]]
    assert node.read("ZSCAN", "z", "0", "MATCH", "[ab]") == [b"0", [b"a", b"0.1", b"b", b"2"]]
    assert node.read("ZSCAN", "missing", "0", "BAD") == [b"0", []]  # options checked later
    assert node.read("ZSCAN", "z", "0", "NOVALUES") == err(
        "ERR NOVALUES option can only be used in HSCAN")
    assert node.read("ZSCAN", "z", "0", "COUNT", "0") == err(SYNTAX)
    assert node.read("ZSCAN", "z", "x") == err("ERR invalid cursor")
    # Past a listpack's size, pages of buckets, and a skiplist's %.17g for the scores.
    node.write("ZADD", "big", *[x for i in range(1000) for x in (f"{i}.1", f"m{i}")])
    cursor, seen = b"0", {}
    for _ in range(1000):
        cursor, found = node.read("ZSCAN", "big", cursor, "COUNT", "50")  # type: ignore[misc]
        seen.update(zip(found[0::2], found[1::2], strict=True))
        if cursor == b"0":
            break
    assert len(seen) == 1000 and seen[b"m0"] == b"0.10000000000000001"


# ---- set operations ----


def test_zunion_zinter_zdiff(node: Node) -> None:
    node.write("ZADD", "a", "1", "x", "2", "y", "3", "z")
    node.write("ZADD", "b", "10", "y", "20", "z", "30", "w")
    node.write("SADD", "s", "z", "w", "v")
    assert node.read("ZUNION", "2", "a", "b", "WITHSCORES") == [
        b"x", 1.0, b"y", 12.0, b"z", 23.0, b"w", 30.0]
    assert node.read("ZINTER", "3", "a", "b", "s", "WITHSCORES") == [b"z", 24.0]
    assert node.read("ZINTER", "2", "a", "b", "AGGREGATE", "MAX", "WEIGHTS", "2", "1",
                     "WITHSCORES") == [b"y", 10.0, b"z", 20.0]
    assert node.read("ZUNION", "2", "a", "missing", "AGGREGATE", "min") == [b"x", b"y", b"z"]
    assert node.read("ZDIFF", "2", "a", "b", "WITHSCORES") == [b"x", 1.0]
    assert node.read("ZINTERCARD", "2", "a", "b") == 2
    assert node.read("ZINTERCARD", "2", "a", "b", "LIMIT", "1") == 1
    assert node.read("ZUNION", "1", "a", "WEIGHTS", "0") == [b"x", b"y", b"z"]
    # inf * 0 is NaN, which Redis makes 0; inf + -inf likewise.
    node.write("ZADD", "i", "inf", "x", "-inf", "y")
    assert node.read("ZUNION", "1", "i", "WEIGHTS", "0", "WITHSCORES") == [b"x", 0.0, b"y", 0.0]
    assert node.read("ZINTER", "2", "i", "i", "WEIGHTS", "1", "-1", "WITHSCORES") == [
        b"x", 0.0, b"y", 0.0]


def test_set_operation_stores(node: Node) -> None:
    node.write("ZADD", "a", "1", "x", "2", "y")
    node.write("ZADD", "b", "5", "y")
    node.write("SET", "d", "v")
    assert node.write("ZUNIONSTORE", "d", "2", "a", "b") == 2
    assert ranked(node, "d") == [b"x", 1.0, b"y", 7.0]
    assert node.write("ZINTERSTORE", "d", "2", "a", "b", "WEIGHTS", "2", "1") == 1
    assert ranked(node, "d") == [b"y", 9.0]
    assert node.write("ZDIFFSTORE", "d", "2", "b", "a") == 0
    assert node.read("EXISTS", "d") == 0
    assert node.write("ZUNIONSTORE", "d", "1", "a", "WITHSCORES") == err(SYNTAX)


@pytest.mark.parametrize(("argv", "reply"), [
    (["ZUNION", "0", "a"], err("ERR at least 1 input key is needed for 'zunion' command")),
    (["ZINTERSTORE", "d", "0", "a"],
     err("ERR at least 1 input key is needed for 'zinterstore' command")),
    (["ZUNION", "x", "a"], err(NOT_INTEGER)),
    (["ZUNION", "3", "a", "b"], err(SYNTAX)),
    # The options are read after every key's type: WRONGTYPE first.
    (["ZUNION", "2", "a", "str", "WEIGHTS", "x", "y"], WRONGTYPE),
    (["ZUNION", "2", "a", "b", "WEIGHTS", "x", "y"], err(zsets.ERR_WEIGHT)),
    (["ZUNION", "2", "a", "b", "WEIGHTS", "1"], err(SYNTAX)),
    (["ZUNION", "1", "a", "AGGREGATE", "avg"], err(SYNTAX)),
    (["ZDIFF", "1", "a", "WEIGHTS", "1"], err(SYNTAX)),
    (["ZDIFF", "1", "a", "AGGREGATE", "SUM"], err(SYNTAX)),
    (["ZINTERCARD", "1", "a", "WITHSCORES"], err(SYNTAX)),
    (["ZINTERCARD", "1", "a", "LIMIT", "-1"], err(zsets.ERR_LIMIT_NEGATIVE)),
    (["ZINTERCARD", "1", "a", "LIMIT", "x"], err(zsets.ERR_LIMIT_NEGATIVE)),
])  # fmt: skip
def test_set_operation_errors(node: Node, argv: list[str], reply: object) -> None:
    node.write("ZADD", "a", "1", "x")
    node.write("SET", "str", "v")
    assert node.write(*argv) == reply


# ---- the blocking commands: one attempt each (the waiting is the connection's) ----


def test_blocking_zset_pops_pop_the_first_sorted_set_or_answer_a_null_array(node: Node) -> None:
    assert node.write("BZPOPMIN", "z", "y", "0") is NullArray
    assert node.write("BZMPOP", "0", "1", "z", "MIN") is NullArray
    assert node.write("ZADD", "y", "1", "a", "2", "b", "3", "c") == 3
    assert node.write("BZPOPMIN", "z", "y", "0.5") == [b"y", b"a", 1.0]
    assert node.write("BZPOPMAX", "y", "0") == [b"y", b"c", 3.0]
    assert node.write("BZMPOP", "1", "2", "z", "y", "MAX", "COUNT", "5") == [b"y", [[b"b", 2.0]]]
    assert node.read("EXISTS", "y") == 0
    node.write("SET", "str", "v")
    assert node.write("BZPOPMIN", "str", "y", "0") == WRONGTYPE
    assert node.write("BZPOPMIN", "z", "-1") == err("ERR timeout is negative")


# ---- types ----


@pytest.mark.parametrize("argv", [
    ["ZADD", "k", "1", "a"], ["ZINCRBY", "k", "1", "a"], ["ZREM", "k", "a"], ["ZCARD", "k"],
    ["ZSCORE", "k", "a"], ["ZMSCORE", "k", "a"], ["ZCOUNT", "k", "0", "1"],
    ["ZLEXCOUNT", "k", "-", "+"], ["ZRANGE", "k", "0", "1"], ["ZRANGEBYSCORE", "k", "0", "1"],
    ["ZRANGEBYLEX", "k", "-", "+"], ["ZREVRANGE", "k", "0", "1"], ["ZRANK", "k", "a"],
    ["ZPOPMIN", "k"], ["ZPOPMAX", "k", "0"], ["ZMPOP", "1", "k", "MIN"],
    ["ZREMRANGEBYRANK", "k", "0", "1"], ["ZREMRANGEBYSCORE", "k", "0", "1"],
    ["ZREMRANGEBYLEX", "k", "-", "+"], ["ZRANDMEMBER", "k"], ["ZRANDMEMBER", "k", "1"],
    ["ZSCAN", "k", "0"], ["ZUNION", "1", "k"], ["ZINTERCARD", "1", "k"],
    ["ZRANGESTORE", "d", "k", "0", "1"], ["ZUNIONSTORE", "d", "1", "k"],
])  # fmt: skip
@pytest.mark.parametrize("other", [["SET", "k", "v"], ["RPUSH", "k", "v"], ["HSET", "k", "f", "v"]])
def test_zset_commands_refuse_other_types(node: Node, argv: list[str], other: list[str]) -> None:
    node.write(*other)
    assert node.write(*argv) == WRONGTYPE


@pytest.mark.parametrize("argv", [
    ["GET", "z"], ["SADD", "z", "a"], ["HGET", "z", "f"], ["LPUSH", "z", "a"], ["INCR", "z"],
])  # fmt: skip
def test_other_commands_refuse_a_zset(node: Node, argv: list[str]) -> None:
    with_zset(node)
    assert node.write(*argv) == WRONGTYPE


def test_key_commands_on_a_zset(node: Node) -> None:
    with_zset(node)
    node.write("SET", "s", "v")
    assert node.read("TYPE", "z") == "zset"
    assert node.read("SCAN", "0", "TYPE", "zset", "COUNT", str(SHARD_COUNT)) == [b"0", [b"z"]]
    assert node.write("COPY", "z", "c") == 1
    node.write("ZADD", "c", "9", "e")
    assert node.read("ZCARD", "z") == 4 and node.read("ZCARD", "c") == 5  # a copy, not shared
    assert node.write("RENAME", "z", "r") == OK
    assert ranked(node, "r") == [b"a", 1.0, b"b", 2.0, b"c", 3.0, b"d", 4.0]
    assert node.write("PEXPIRE", "r", "100") == 1
    assert node.read("ZCARD", "r", t=T0 + 100) == 0
    assert node.write("SET", "c", "v") == OK  # SET replaces any type
    assert node.write("DEL", "r") == 1


# ---- introspection ----


@pytest.mark.parametrize(("pairs", "encoding"), [
    (["1", "a"], b"listpack"),
    (["1", "x" * 64], b"listpack"),
    (["1", "x" * 65], b"skiplist"),
    ([x for i in range(128) for x in ("1", f"m{i}")], b"listpack"),
    ([x for i in range(129) for x in ("1", f"m{i}")], b"skiplist"),
])  # fmt: skip
def test_object_encoding_of_a_zset(node: Node, pairs: list[str], encoding: bytes) -> None:
    node.write("ZADD", "z", *pairs)
    assert node.read("OBJECT", "ENCODING", "z") == encoding
    assert node.read("OBJECT", "REFCOUNT", "z") == 1


def test_memory_usage_of_a_zset(node: Node) -> None:
    node.write("ZADD", "z", "1", "a", "2", "bb")
    assert node.read("MEMORY", "USAGE", "z") == (
        1 + KEY_OVERHEAD_BYTES + ZSET_OVERHEAD_BYTES + 3 + 2 * ZSET_MEMBER_OVERHEAD_BYTES)
    node.write("ZADD", "big", *[x for i in range(1000) for x in (str(i), f"member-{i}")])
    node.write("ZPOPMIN", "big", "10")
    usages = [node.read("MEMORY", "USAGE", key) for key in ("z", "big")]
    assert sum(usages) == node.state.used_bytes()  # type: ignore[arg-type]


# ---- the size limit ----


def test_a_zset_is_refused_past_its_size(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zsets, "ZSET_MEMBERS_MAX", 3)
    monkeypatch.setattr(zsets, "ZSET_BYTES_MAX", 10)
    assert node.write("ZADD", "z", "1", "a", "2", "b", "3", "c") == 3
    too_big = err(zsets.ZSET_TOO_BIG)
    assert node.write("ZADD", "z", "4", "d") == too_big
    assert node.write("ZINCRBY", "z", "1", "d") == too_big
    assert node.write("ZADD", "z", "5", "a") == 0  # an update grows nothing
    assert node.write("ZADD", "y", "1", "x" * 11) == too_big
    node.write("ZADD", "w", "1", "w", "1", "v")
    assert node.write("ZUNIONSTORE", "d", "2", "z", "w") == too_big
    assert node.read("EXISTS", "d") == 0
    assert zsets.ZSET_TOO_BIG.startswith("ERR zset would exceed the maximum size (")


def test_the_largest_zset_post_image_fits_one_log_entry() -> None:
    # The worst case: the most members, every byte of member allowed, each with a score;
    # msgpack frames a member in at most 3 bytes here (members of at most 64 KiB).
    from replikv.limits import DEFAULT_LIMITS

    members, member_bytes = zsets.ZSET_MEMBERS_MAX, zsets.ZSET_BYTES_MAX
    worst = member_bytes + members * (3 + 9) + 64
    assert worst < DEFAULT_LIMITS.max_entry_bytes
