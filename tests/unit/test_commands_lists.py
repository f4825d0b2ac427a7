"""List commands against KVState: Redis 7 semantics, replies, error texts and the order of checks
(t_list.c; checked against redis-server 7.0), WRONGTYPE in every direction, the key commands on
list keys, the blocking commands' attempts, introspection and the size limit.
tests/unit/test_lists_against_redis.py runs the same commands against a real redis-server."""

from __future__ import annotations

import pytest

from replikv.commands import lists as list_commands
from replikv.commands.introspection import listpack_entry_bytes
from replikv.commands.sets import numkeys_keys
from replikv.replies import NOT_INTEGER, OK, SYNTAX, WRONG_TYPE, NullArray, Status
from replikv.resp import encode_reply
from replikv.state import SHARD_COUNT

from .state_driver import T0, Node, err

WRONGTYPE = err(WRONG_TYPE)
SYNTAX_ERR = err(SYNTAX)


@pytest.fixture
def node() -> Node:
    return Node()


def items(node: Node, key: str = "l") -> object:
    return node.read("LRANGE", key, "0", "-1")


def with_list(node: Node, key: str, *elements: object) -> None:
    assert node.write("RPUSH", key, *elements) == len(elements)


# ---- pushes ----


def test_pushes_answer_the_length_and_keep_order(node: Node) -> None:
    assert node.write("RPUSH", "l", "a", "b") == 2
    assert node.write("LPUSH", "l", "x", "y") == 4  # each pushed at the head in turn
    assert items(node) == [b"y", b"x", b"a", b"b"]
    assert node.read("TYPE", "l") == Status("list")
    assert node.read("LLEN", "l") == 4
    assert node.write("RPUSH", "l", "a") == 5  # repeats are a list's own
    assert node.read("LLEN", "missing") == 0


def test_pushx_only_on_an_existing_list(node: Node) -> None:
    assert node.write("LPUSHX", "l", "a") == 0
    assert node.write("RPUSHX", "l", "a", "b") == 0
    assert node.read("EXISTS", "l") == 0
    with_list(node, "l", "m")
    assert node.write("LPUSHX", "l", "a", "b") == 3
    assert node.write("RPUSHX", "l", "z") == 4
    assert items(node) == [b"b", b"a", b"m", b"z"]


# ---- pops ----


def test_pop_one_and_with_a_count(node: Node) -> None:
    with_list(node, "l", "a", "b", "c", "d", "e")
    assert node.write("LPOP", "l") == b"a"
    assert node.write("RPOP", "l") == b"e"
    assert node.write("RPOP", "l", "2") == [b"d", b"c"]  # in the order they left
    assert node.write("LPOP", "l", "0") == []
    assert node.write("LPOP", "l", "9") == [b"b"]
    assert node.read("EXISTS", "l") == 0  # emptied: deleted
    assert node.write("LPOP", "l") is None
    assert node.write("RPOP", "l", "2") is NullArray
    assert node.write("LPOP", "l", "0") is NullArray  # the key is looked at before the count
    assert encode_reply(NullArray, 2) == b"*-1\r\n"


@pytest.mark.parametrize("count", ["-1", "x", "1.5", "99999999999999999999"])
def test_pop_count_errors_come_before_the_key(node: Node, count: str) -> None:
    node.write("SET", "s", "v")
    assert node.write("LPOP", "s", count) == err("ERR value is out of range, must be positive")
    assert node.write("RPOP", "missing", count) == err(list_commands.ERR_COUNT_NOT_POSITIVE)
    assert node.write("LPOP", "s", "1", "2") == err(
        "ERR wrong number of arguments for 'lpop' command")


# ---- LINDEX, LRANGE, LSET ----


def test_lindex(node: Node) -> None:
    with_list(node, "l", "a", "b", "c")
    assert [node.read("LINDEX", "l", i) for i in (0, 2, 3, -1, -3, -4)] == [
        b"a", b"c", None, b"c", b"a", None]
    assert node.read("LINDEX", "l", "x") == err(NOT_INTEGER)
    assert node.read("LINDEX", "missing", "x") is None  # the key first
    node.write("SET", "s", "v")
    assert node.read("LINDEX", "s", "x") == WRONGTYPE


@pytest.mark.parametrize(("start", "stop", "expected"), [
    (0, -1, "abcde"), (1, 2, "bc"), (-2, -1, "de"), (-100, 1, "ab"), (3, 100, "de"),
    (4, 2, ""), (5, 9, ""), (-1, -2, ""), (0, 0, "a"), (-5, -5, "a"), (2, -3, "c"),
])  # fmt: skip
def test_lrange(node: Node, start: int, stop: int, expected: str) -> None:
    with_list(node, "l", *"abcde")
    assert node.read("LRANGE", "l", start, stop) == [c.encode() for c in expected]


def test_lrange_of_a_long_list_from_either_end() -> None:
    node = Node()
    with_list(node, "l", *range(1000))
    assert node.read("LRANGE", "l", "-3", "-1") == [b"997", b"998", b"999"]
    assert node.read("LRANGE", "l", "500", "502") == [b"500", b"501", b"502"]
    assert node.read("LRANGE", "l", "990", "-1") == [b"%d" % i for i in range(990, 1000)]


def test_lrange_checks_its_integers_before_the_key(node: Node) -> None:
    node.write("SET", "s", "v")
    assert node.read("LRANGE", "s", "x", "1") == err(NOT_INTEGER)
    assert node.read("LRANGE", "s", "0", "1") == WRONGTYPE
    assert node.read("LRANGE", "missing", "0", "-1") == []


def test_lset(node: Node) -> None:
    assert node.write("LSET", "l", "0", "x") == err("ERR no such key")
    assert node.write("LSET", "l", "x", "x") == err("ERR no such key")  # the key first
    with_list(node, "l", "a", "b")
    assert node.write("LSET", "l", "-1", "z") == OK
    assert node.write("LSET", "l", "0", "") == OK
    assert items(node) == [b"", b"z"]
    assert node.write("LSET", "l", "2", "x") == err("ERR index out of range")
    assert node.write("LSET", "l", "-3", "x") == err("ERR index out of range")
    assert node.write("LSET", "l", "x", "x") == err(NOT_INTEGER)
    node.write("SET", "s", "v")
    assert node.write("LSET", "s", "x", "x") == WRONGTYPE


# ---- LINSERT, LREM, LTRIM ----


def test_linsert(node: Node) -> None:
    assert node.write("LINSERT", "l", "BEFORE", "a", "x") == 0
    with_list(node, "l", "a", "b", "a")
    assert node.write("LINSERT", "l", "before", "a", "x") == 4  # the first pivot
    assert node.write("LINSERT", "l", "AFTER", "a", "y") == 5
    assert node.write("LINSERT", "l", "AFTER", "nothere", "y") == -1
    assert node.write("LINSERT", "l", "AFTER", "a", "z") == 6  # after the last? no: the first
    assert items(node) == [b"x", b"a", b"z", b"y", b"b", b"a"]
    node.write("SET", "s", "v")
    assert node.write("LINSERT", "s", "MIDDLE", "a", "x") == err(SYNTAX)  # before the key
    assert node.write("LINSERT", "s", "AFTER", "a", "x") == WRONGTYPE


@pytest.mark.parametrize(("count", "left"), [
    (0, "bcd"), (1, "bxcxdx"), (2, "bcxdx"), (-1, "xbxcxd"), (-2, "xbxcd"), (100, "bcd"),
])  # fmt: skip
def test_lrem(node: Node, count: int, left: str) -> None:
    with_list(node, "l", *"xbxcxdx")
    assert node.write("LREM", "l", count, "x") == 7 - len(left)
    assert items(node) == [c.encode() for c in left]


def test_lrem_edges(node: Node) -> None:
    assert node.write("LREM", "l", "0", "x") == 0
    with_list(node, "l", "x", "x")
    assert node.write("LREM", "l", "0", "y") == 0
    assert node.write("LREM", "l", "-5", "x") == 2
    assert node.read("EXISTS", "l") == 0
    node.write("SET", "s", "v")
    assert node.write("LREM", "s", "z", "x") == err(NOT_INTEGER)
    assert node.write("LREM", "s", "0", "x") == WRONGTYPE


@pytest.mark.parametrize(("start", "stop", "left"), [
    (0, -1, "abcde"), (1, -2, "bcd"), (0, 0, "a"), (-2, 100, "de"), (3, 1, ""),
    (5, 10, ""), (-100, 1, "ab"),
])  # fmt: skip
def test_ltrim(node: Node, start: int, stop: int, left: str) -> None:
    with_list(node, "l", *"abcde")
    assert node.write("LTRIM", "l", start, stop) == OK
    assert items(node) == [c.encode() for c in left]
    assert node.read("EXISTS", "l") == int(bool(left))


def test_ltrim_errors(node: Node) -> None:
    assert node.write("LTRIM", "missing", "0", "1") == OK
    node.write("SET", "s", "v")
    assert node.write("LTRIM", "s", "0", "x") == err(NOT_INTEGER)
    assert node.write("LTRIM", "s", "0", "1") == WRONGTYPE


# ---- LPOS ----


def test_lpos(node: Node) -> None:
    with_list(node, "l", *"abcabca")
    assert node.read("LPOS", "l", "a") == 0
    assert node.read("LPOS", "l", "c") == 2
    assert node.read("LPOS", "l", "z") is None
    assert node.read("LPOS", "l", "a", "RANK", "2") == 3
    assert node.read("LPOS", "l", "a", "RANK", "-1") == 6
    assert node.read("LPOS", "l", "a", "RANK", "-3") == 0
    assert node.read("LPOS", "l", "a", "RANK", "4") is None
    assert node.read("LPOS", "l", "a", "COUNT", "0") == [0, 3, 6]
    assert node.read("LPOS", "l", "a", "COUNT", "2") == [0, 3]
    assert node.read("LPOS", "l", "a", "COUNT", "0", "RANK", "-1") == [6, 3, 0]
    assert node.read("LPOS", "l", "a", "COUNT", "0", "MAXLEN", "4") == [0, 3]
    assert node.read("LPOS", "l", "a", "RANK", "-1", "MAXLEN", "1") == 6
    assert node.read("LPOS", "l", "b", "RANK", "-1", "MAXLEN", "1") is None
    assert node.read("LPOS", "l", "z", "COUNT", "1") == []
    assert node.read("LPOS", "missing", "a") is None
    assert node.read("LPOS", "missing", "a", "COUNT", "1") == []


@pytest.mark.parametrize(("options", "message"), [
    (["RANK", "0"], list_commands.ERR_RANK_ZERO),
    (["RANK", "x"], NOT_INTEGER),
    (["RANK", "-9223372036854775808"], list_commands.ERR_RANK_RANGE),
    (["COUNT", "-1"], "ERR COUNT can't be negative"),
    (["COUNT", "x"], "ERR COUNT can't be negative"),
    (["MAXLEN", "-1"], "ERR MAXLEN can't be negative"),
    (["RANK"], SYNTAX),
    (["FOO", "1"], SYNTAX),
])  # fmt: skip
def test_lpos_checks_its_options_before_the_key(node: Node, options: list[str],
                                                message: str) -> None:
    node.write("SET", "s", "v")
    assert node.read("LPOS", "s", "a", *options) == err(message)
    assert node.read("LPOS", "s", "a") == WRONGTYPE


# ---- LMOVE, RPOPLPUSH, LMPOP ----


def test_lmove_between_lists(node: Node) -> None:
    with_list(node, "a", "1", "2", "3")
    assert node.write("LMOVE", "a", "b", "LEFT", "RIGHT") == b"1"
    assert node.write("LMOVE", "a", "b", "right", "left") == b"3"
    assert items(node, "b") == [b"3", b"1"]
    assert node.write("RPOPLPUSH", "a", "b") == b"2"
    assert node.read("EXISTS", "a") == 0
    assert items(node, "b") == [b"2", b"3", b"1"]
    assert node.write("LMOVE", "a", "b", "LEFT", "LEFT") is None


def test_lmove_onto_itself_rotates_and_keeps_the_expiry(node: Node) -> None:
    with_list(node, "l", "a", "b", "c")
    assert node.write("RPOPLPUSH", "l", "l") == b"c"
    assert items(node) == [b"c", b"a", b"b"]
    assert node.write("LMOVE", "l", "l", "LEFT", "RIGHT") == b"c"
    assert items(node) == [b"a", b"b", b"c"]
    with_list(node, "one", "x")
    node.write("PEXPIRE", "one", "100")
    assert node.write("LMOVE", "one", "one", "LEFT", "RIGHT") == b"x"
    assert node.read("PTTL", "one") == 100


def test_lmove_checks(node: Node) -> None:
    node.write("SET", "s", "v")
    assert node.write("LMOVE", "s", "d", "UP", "LEFT") == err(SYNTAX)  # before the key
    assert node.write("LMOVE", "missing", "s", "LEFT", "LEFT") is None  # destination unseen
    with_list(node, "l", "a")
    assert node.write("LMOVE", "l", "s", "LEFT", "LEFT") == WRONGTYPE
    assert node.write("RPOPLPUSH", "s", "l") == WRONGTYPE
    assert items(node) == [b"a"]


def test_lmpop(node: Node) -> None:
    with_list(node, "b", "1", "2", "3")
    assert node.write("LMPOP", "2", "a", "b", "LEFT") == [b"b", [b"1"]]
    assert node.write("LMPOP", "2", "a", "b", "RIGHT", "COUNT", "5") == [b"b", [b"3", b"2"]]
    assert node.write("LMPOP", "2", "a", "b", "RIGHT") is NullArray
    node.write("SET", "s", "v")
    with_list(node, "l", "x")
    assert node.write("LMPOP", "2", "l", "s", "LEFT") == [b"l", [b"x"]]  # s never looked at
    assert node.write("LMPOP", "2", "s", "l", "LEFT") == WRONGTYPE


@pytest.mark.parametrize(("args", "message"), [
    (["0", "l", "LEFT"], "ERR numkeys should be greater than 0"),
    (["x", "l", "LEFT"], "ERR numkeys should be greater than 0"),
    (["2", "l", "LEFT"], SYNTAX),
    (["1", "l", "MIDDLE"], SYNTAX),
    (["1", "l", "LEFT", "COUNT", "0"], "ERR count should be greater than 0"),
    (["1", "l", "LEFT", "COUNT", "1", "COUNT", "1"], SYNTAX),
    (["1", "l", "LEFT", "FOO"], SYNTAX),
    (["1", "l", "LEFT", "COUNT"], SYNTAX),
])  # fmt: skip
def test_lmpop_errors(node: Node, args: list[str], message: str) -> None:
    with_list(node, "l", "a")
    assert node.write("LMPOP", *args) == err(message)
    assert items(node) == [b"a"]


def test_lmpop_keys_are_found_for_expiry() -> None:
    node = Node()
    with_list(node, "l", "a")
    node.write("PEXPIRE", "l", "10")
    assert node.write("LMPOP", "1", "l", "LEFT", t=T0 + 10) is NullArray
    assert node.state.key_count() == 0  # the expired key was dropped before the command ran
    assert numkeys_keys([b"LMPOP", b"2", b"a", b"b", b"LEFT"]) == [b"a", b"b"]


# ---- the blocking commands: one attempt each (the waiting is the connection's) ----


def test_blocking_list_pops_pop_the_first_list_in_order_or_answer_nil(node: Node) -> None:
    assert node.write("BLPOP", "a", "b", "0") is NullArray
    assert node.write("BLMPOP", "0", "2", "a", "b", "LEFT") is NullArray
    assert node.write("BLMOVE", "a", "b", "LEFT", "RIGHT", "1.5") is None  # as LMOVE, MULTI
    assert node.write("BRPOPLPUSH", "a", "b", "0") is None
    with_list(node, "b", "1", "2", "3", "4", "5")
    assert node.write("BLPOP", "a", "b", "0") == [b"b", b"1"]
    assert node.write("BRPOP", "a", "b", "0") == [b"b", b"5"]
    assert node.write("BLMOVE", "b", "a", "LEFT", "LEFT", "0") == b"2"
    assert node.write("BRPOPLPUSH", "b", "a", "0") == b"4"
    assert node.write("BLMPOP", "0", "2", "a", "b", "RIGHT", "COUNT", "9") == [b"a", [b"2", b"4"]]
    assert items(node, "b") == [b"3"]
    node.write("SET", "s", "v")
    assert node.write("BLPOP", "s", "b", "0") == WRONGTYPE  # the first key found decides
    assert node.write("BLPOP", "b", "s", "0") == [b"b", b"3"]


@pytest.mark.parametrize(("timeout", "error"), [
    ("x", "ERR timeout is not a float or out of range"),
    ("nan", "ERR timeout is not a float or out of range"),
    ("-1", "ERR timeout is negative"), ("-inf", "ERR timeout is negative"),
    ("inf", "ERR timeout is negative"), ("1e300", "ERR timeout is negative"),  # as Redis 7.0
])  # fmt: skip
def test_a_timeout_is_read_before_anything_else(node: Node, timeout: str, error: str) -> None:
    node.write("SET", "s", "v")
    assert node.write("BLPOP", "s", timeout) == err(error)
    assert node.write("BLMPOP", timeout, "0", "s", "UP") == err(error)
    assert node.write("BLMOVE", "s", "d", "UP", "LEFT", timeout) == SYNTAX_ERR  # ends first


def test_timeouts_in_milliseconds_round_up_as_redis_rounds_them() -> None:
    from replikv.commands.blocking import parse_timeout

    assert parse_timeout(b"0") == 0 and parse_timeout(b"-0.0001") == 0  # for ever, as in Redis
    assert parse_timeout(b"0.0001") == 1 and parse_timeout(b"1.5") == 1500
    assert parse_timeout(b"0x1p3") == 8000 and parse_timeout(b"2e1") == 20000
    assert parse_timeout(b"9223372036854") == 0  # beyond any timer: for ever


def test_the_client_sends_blocking_commands_to_the_leader_without_a_session() -> None:
    from replikv.client.routing import Kind, route

    assert route(("BLPOP", "l", 0)).kind is Kind.OTHER  # never resent once it may have popped
    assert route(("LPOP", "l")).kind is Kind.WRITE


# ---- types ----


@pytest.mark.parametrize("argv", [
    ["LPUSH", "k", "a"], ["RPUSH", "k", "a"], ["LPUSHX", "k", "a"], ["RPUSHX", "k", "a"],
    ["LPOP", "k"], ["RPOP", "k", "2"], ["LLEN", "k"], ["LINDEX", "k", "0"],
    ["LRANGE", "k", "0", "1"], ["LSET", "k", "0", "a"], ["LREM", "k", "0", "a"],
    ["LTRIM", "k", "0", "1"], ["LINSERT", "k", "BEFORE", "a", "b"], ["LPOS", "k", "a"],
    ["LMOVE", "k", "d", "LEFT", "LEFT"], ["RPOPLPUSH", "k", "d"], ["LMPOP", "1", "k", "LEFT"],
])  # fmt: skip
@pytest.mark.parametrize("other", [["SET", "k", "v"], ["SADD", "k", "m"], ["HSET", "k", "f", "v"]])
def test_list_commands_refuse_other_types(node: Node, argv: list[str], other: list[str]) -> None:
    node.write(*other)
    assert node.write(*argv) == WRONGTYPE
    assert node.read("TYPE", "k") == Status({"SET": "string", "SADD": "set", "HSET": "hash"}[
        other[0]])


@pytest.mark.parametrize("argv", [
    ["GET", "k"], ["INCR", "k"], ["APPEND", "k", "x"], ["SADD", "k", "m"], ["SCARD", "k"],
    ["HSET", "k", "f", "v"], ["HGETALL", "k"], ["SMOVE", "k", "t", "f"],
])  # fmt: skip
def test_other_commands_refuse_a_list(node: Node, argv: list[str]) -> None:
    with_list(node, "k", "a")
    assert node.write(*argv) == WRONGTYPE
    assert items(node, "k") == [b"a"]


# ---- key commands on list keys ----


def test_expiry_rename_copy_del_scan(node: Node) -> None:
    with_list(node, "l", "a", "b", "a")
    assert node.write("PEXPIRE", "l", "100") == 1
    node.write("RPUSH", "l", "c")
    node.write("LPOP", "l")
    assert node.read("PTTL", "l") == 100  # changing elements keeps the expiry
    assert node.write("COPY", "l", "c") == 1
    node.write("LSET", "c", "0", "changed")
    assert items(node) == [b"b", b"a", b"c"]
    assert node.write("RENAME", "l", "m") == OK
    assert items(node, "m") == [b"b", b"a", b"c"]
    assert node.read("PTTL", "m") == 100
    cursor, found = node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "list")  # type: ignore[misc]
    assert cursor == b"0" and sorted(found) == [b"c", b"m"]
    assert node.read("LLEN", "m", t=T0 + 100) == 0
    assert node.write("RPUSH", "m", "new", t=T0 + 100) == 1  # the expired list dropped first
    assert node.read("TTL", "m", t=T0 + 100) == -1
    assert node.write("DEL", "m", "c", t=T0 + 100) == 1  # c, a copy, expired with l


# ---- introspection ----


def test_object_encoding_follows_redis_74_thresholds(node: Node) -> None:
    with_list(node, "small", "a", "1")
    assert node.read("OBJECT", "ENCODING", "small") == b"listpack"
    # 7 bytes of listpack, then entries of 100 bytes with a 2-byte header and a 1-byte
    # back-length (103): 79 of them fill 8,144 bytes, 80 pass 8 KiB.
    with_list(node, "l", *["x" * 100] * 79)
    assert node.read("OBJECT", "ENCODING", "l") == b"listpack"
    node.write("RPUSH", "l", "x" * 100)
    assert node.read("OBJECT", "ENCODING", "l") == b"quicklist"
    node.write("RPOP", "l")
    assert node.read("OBJECT", "ENCODING", "l") == b"listpack"  # judged from the value alone
    assert [listpack_entry_bytes(e) for e in (b"7", b"-100", b"1000", b"40000", b"9000000",
                                              b"3000000000", b"", b"x" * 63, b"x" * 64)] == [
        2, 3, 3, 5, 6, 10, 2, 65, 67]


def test_memory_accounting_follows_the_elements(node: Node) -> None:
    empty = node.state.used_bytes()
    with_list(node, "l", "element")
    one = node.state.used_bytes()
    node.write("RPUSH", "l", "other")
    two = node.state.used_bytes()
    assert empty < one < two
    assert node.read("MEMORY", "USAGE", "l") == two - empty
    node.write("LSET", "l", "1", "longer value")
    assert node.state.used_bytes() == two + len("longer value") - len("other")
    node.write("LINSERT", "l", "BEFORE", "element", "x")
    node.write("LREM", "l", "0", "x")
    node.write("RPOP", "l")
    assert node.state.used_bytes() == one
    node.write("DEL", "l")
    assert node.state.used_bytes() == empty


# ---- the size limit ----


def test_a_list_stops_growing_at_its_limits(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(list_commands, "LIST_ELEMENTS_MAX", 3)
    monkeypatch.setattr(list_commands, "LIST_BYTES_MAX", 10)
    too_big = err(list_commands.LIST_TOO_BIG)
    with_list(node, "l", "a", "b")
    assert node.write("RPUSH", "l", "c", "d") == too_big
    assert node.write("LPUSHX", "l", "c", "d") == too_big
    assert node.write("RPUSH", "l", "c") == 3
    assert node.write("LINSERT", "l", "BEFORE", "a", "x") == too_big
    assert node.write("LSET", "l", "0", "x" * 8) == OK  # replaces: 10 bytes
    assert node.write("LSET", "l", "0", "x" * 9) == too_big
    with_list(node, "m", "m")
    assert node.write("LMOVE", "m", "l", "LEFT", "LEFT") == too_big
    assert node.write("LMOVE", "l", "l", "LEFT", "RIGHT") == b"x" * 8  # a rotation: no growth
    assert node.write("LPUSH", "new", "y" * 11) == too_big
    assert items(node, "m") == [b"m"]


def test_the_limits_keep_a_list_post_image_inside_one_log_entry() -> None:
    from replikv.limits import DEFAULT_LIMITS

    worst = list_commands.LIST_BYTES_MAX + list_commands.LIST_ELEMENTS_MAX * 5
    assert worst + 1024 < DEFAULT_LIMITS.max_entry_bytes


def test_replies_in_resp2_and_resp3(node: Node) -> None:
    with_list(node, "l", "a", "b")
    assert encode_reply(node.read("LRANGE", "l", "0", "-1"), 3) == b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    assert encode_reply(node.write("LMPOP", "1", "x", "LEFT"), 3) == b"_\r\n"
    assert encode_reply(node.write("LMPOP", "1", "l", "LEFT"), 2) == (
        b"*2\r\n$1\r\nl\r\n*1\r\n$1\r\na\r\n")
