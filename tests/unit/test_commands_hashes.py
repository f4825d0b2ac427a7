"""Hash commands against KVState: Redis 7 semantics, error texts and the order of checks
(t_hash.c; checked against redis-server 7.0, and 7.4 for HSCAN's NOVALUES), WRONGTYPE in every
direction, the key commands on hash keys, random picks from the caller's seed, HSCAN's cursor,
RESP2 and RESP3 replies, and the size limit. tests/unit/test_hashes_against_redis.py runs the
same commands against a real redis-server."""

from __future__ import annotations

import pytest

from replikv.commands import hashes as hash_commands
from replikv.replies import (
    NOT_FLOAT,
    NOT_INTEGER,
    OK,
    OVERFLOW,
    SYNTAX,
    WRONG_TYPE,
    PairArray,
    Status,
)
from replikv.resp import encode_reply
from replikv.state import SHARD_COUNT

from .state_driver import T0, Node, err

WRONGTYPE = err(WRONG_TYPE)
OUT_OF_RANGE = "ERR value is out of range, value must between -4194304 and 9223372036854775807"


@pytest.fixture
def node() -> Node:
    return Node()


def with_hash(node: Node, key: str, *pairs: object) -> None:
    assert node.write("HSET", key, *pairs) == len(set(pairs[0::2]))


def hscan_all(node: Node, key: str, *options: object) -> list[bytes]:
    cursor: object = "0"
    found: list[bytes] = []
    for _ in range(100_000):
        reply = node.read("HSCAN", key, cursor, *options)
        assert isinstance(reply, list), reply
        cursor, items = reply
        found.extend(items)
        if cursor == b"0":
            return found
    raise AssertionError("HSCAN did not finish")


# ---- HSET, HMSET, HSETNX, HGET, HMGET ----


def test_hset_counts_new_fields_and_keeps_insertion_order(node: Node) -> None:
    assert node.write("HSET", "h", "b", "1", "a", "2") == 2
    assert node.write("HSET", "h", "a", "3", "c", "4") == 1  # a is updated in place
    assert node.read("HGETALL", "h") == {b"b": b"1", b"a": b"3", b"c": b"4"}
    assert list(node.read("HGETALL", "h")) == [b"b", b"a", b"c"]  # type: ignore[call-overload]
    assert node.read("HKEYS", "h") == [b"b", b"a", b"c"]
    assert node.read("HVALS", "h") == [b"1", b"3", b"4"]
    assert node.read("HLEN", "h") == 3
    assert node.read("TYPE", "h") == Status("hash")
    assert node.read("EXISTS", "h") == 1


def test_hset_with_a_field_twice_keeps_the_last_value_and_counts_it_once(node: Node) -> None:
    assert node.write("HSET", "h", "f", "1", "g", "2", "f", "3") == 2
    assert node.read("HGETALL", "h") == {b"f": b"3", b"g": b"2"}
    assert list(node.read("HGETALL", "h")) == [b"f", b"g"]  # type: ignore[call-overload]


def test_hset_accepts_any_bytes(node: Node) -> None:
    assert node.write("HSET", "h", b"", b"", b"\x00\xff", b"a\r\nb") == 2
    assert node.read("HGET", "h", b"") == b""
    assert node.read("HGET", "h", b"\x00\xff") == b"a\r\nb"
    assert node.read("HEXISTS", "h", b"") == 1


def test_hmset_answers_ok(node: Node) -> None:
    assert node.write("HMSET", "h", "a", "1", "b", "2") == OK
    assert node.write("HMSET", "h", "a", "9") == OK
    assert node.read("HMGET", "h", "a", "b", "zz", "a") == [b"9", b"2", None, b"9"]


@pytest.mark.parametrize("command", ["HSET", "HMSET"])
@pytest.mark.parametrize("args", [["h"], ["h", "f"], ["h", "f", "v", "g"]])
def test_hset_needs_field_value_pairs(node: Node, command: str, args: list[str]) -> None:
    expected = err(f"ERR wrong number of arguments for '{command.lower()}' command")
    assert node.write(command, *args) == expected
    assert node.read("EXISTS", "h") == 0


def test_hsetnx(node: Node) -> None:
    assert node.write("HSETNX", "h", "f", "1") == 1
    assert node.write("HSETNX", "h", "f", "2") == 0
    assert node.write("HSETNX", "h", "g", "3") == 1
    assert node.read("HGETALL", "h") == {b"f": b"1", b"g": b"3"}


def test_reads_of_a_missing_key(node: Node) -> None:
    assert node.read("HGET", "nope", "f") is None
    assert node.read("HMGET", "nope", "a", "b") == [None, None]
    assert node.read("HEXISTS", "nope", "f") == 0
    assert node.read("HLEN", "nope") == 0
    assert node.read("HSTRLEN", "nope", "f") == 0
    assert node.read("HKEYS", "nope") == []
    assert node.read("HVALS", "nope") == []
    assert node.read("HGETALL", "nope") == {}
    assert node.read("HRANDFIELD", "nope") is None
    assert node.read("HRANDFIELD", "nope", "3") == []
    assert node.read("HRANDFIELD", "nope", "-3", "WITHVALUES") == []
    assert node.read("HSCAN", "nope", "0") == [b"0", []]


def test_hget_hexists_hstrlen(node: Node) -> None:
    with_hash(node, "h", "f", "hello", "e", "")
    assert node.read("HGET", "h", "f") == b"hello"
    assert node.read("HGET", "h", "nope") is None
    assert node.read("HEXISTS", "h", "e") == 1
    assert node.read("HEXISTS", "h", "nope") == 0
    assert node.read("HSTRLEN", "h", "f") == 5
    assert node.read("HSTRLEN", "h", "e") == 0
    assert node.read("HSTRLEN", "h", "nope") == 0


# ---- HDEL ----


def test_hdel_counts_removed_and_deletes_the_emptied_hash(node: Node) -> None:
    with_hash(node, "h", "a", "1", "b", "2", "c", "3")
    assert node.write("HDEL", "h", "a", "x", "a") == 1
    # The last field moves into the deleted one's place (a Redis listpack would keep b, c).
    assert node.read("HKEYS", "h") == [b"c", b"b"]
    assert node.read("HGETALL", "h") == {b"c": b"3", b"b": b"2"}
    assert node.write("HDEL", "h", "b", "c", "zz") == 2
    assert node.read("EXISTS", "h") == 0
    assert node.read("TYPE", "h") == Status("none")
    assert node.read("DBSIZE") == 0
    assert node.write("HDEL", "h", "a") == 0


# ---- HINCRBY, HINCRBYFLOAT ----


def test_hincrby(node: Node) -> None:
    assert node.write("HINCRBY", "h", "n", "5") == 5  # a missing key and field count as 0
    assert node.write("HINCRBY", "h", "n", "-7") == -2
    assert node.read("HGET", "h", "n") == b"-2"
    node.write("HSET", "h", "big", "9223372036854775807", "small", "-9223372036854775808")
    assert node.write("HINCRBY", "h", "big", "1") == err(OVERFLOW)
    assert node.write("HINCRBY", "h", "small", "-1") == err(OVERFLOW)
    assert node.write("HINCRBY", "h", "big", "0") == 9223372036854775807
    assert node.read("HGET", "h", "big") == b"9223372036854775807"


@pytest.mark.parametrize("value", ["x", " 1", "01", "1.5", "", "9223372036854775808", "+1"])
def test_hincrby_refuses_a_value_that_is_not_an_integer(node: Node, value: str) -> None:
    with_hash(node, "h", "f", value)
    assert node.write("HINCRBY", "h", "f", "1") == err("ERR hash value is not an integer")
    assert node.read("HGET", "h", "f") == value.encode()


def test_hincrbyfloat_computes_in_decimal_as_incrbyfloat_does(node: Node) -> None:
    assert node.write("HINCRBYFLOAT", "h", "f", "10.5") == b"10.5"
    assert node.write("HINCRBYFLOAT", "h", "f", "0.1") == b"10.6"
    assert node.write("HINCRBYFLOAT", "h", "f", "-5.6") == b"5"
    assert node.write("HINCRBYFLOAT", "h", "g", "5.0e3") == b"5000"
    assert node.write("HINCRBYFLOAT", "h", "g", "1e-17") == b"5000.00000000000000001"
    node.write("HSET", "h", "i", "3")
    assert node.write("HINCRBYFLOAT", "h", "i", "1.5") == b"4.5"
    assert node.write("INCRBYFLOAT", "s", "1.5") == b"1.5"  # the same arithmetic


def test_hincrbyfloat_errors(node: Node) -> None:
    with_hash(node, "h", "text", "abc", "inf", "inf")
    assert node.write("HINCRBYFLOAT", "h", "text", "1") == err("ERR hash value is not a float")
    assert node.write("HINCRBYFLOAT", "h", "f", "x") == err(NOT_FLOAT)
    assert node.write("HINCRBYFLOAT", "h", "f", "0x10") == err(NOT_FLOAT)
    for infinite in ("inf", "-inf", "+Infinity"):
        assert node.write("HINCRBYFLOAT", "h", "f", infinite) == err("ERR value is NaN or Infinity")
    assert node.write("HINCRBYFLOAT", "h", "inf", "1") == err(
        "ERR increment would produce NaN or Infinity")
    node.write("HSET", "h", "huge", "1e4932")
    assert node.write("HINCRBYFLOAT", "h", "huge", "1e4932") == err(
        "ERR increment would produce NaN or Infinity")
    assert node.read("HLEN", "h") == 3


def test_increments_check_their_argument_before_the_key_type(node: Node) -> None:
    # As in Redis: the increment is parsed first, so a bad one wins over WRONGTYPE.
    node.write("SET", "s", "v")
    assert node.write("HINCRBY", "s", "f", "x") == err(NOT_INTEGER)
    assert node.write("HINCRBYFLOAT", "s", "f", "x") == err(NOT_FLOAT)
    assert node.write("HINCRBYFLOAT", "s", "f", "inf") == err("ERR value is NaN or Infinity")
    assert node.write("HINCRBY", "s", "f", "1") == WRONGTYPE
    assert node.write("HINCRBYFLOAT", "s", "f", "1") == WRONGTYPE


# ---- HGETALL in RESP2 and RESP3 ----


def test_hgetall_is_a_flat_array_in_resp2_and_a_map_in_resp3(node: Node) -> None:
    with_hash(node, "h", "b", "1", "a", "22")
    reply = node.read("HGETALL", "h")
    assert encode_reply(reply, 2) == b"*4\r\n$1\r\nb\r\n$1\r\n1\r\n$1\r\na\r\n$2\r\n22\r\n"
    assert encode_reply(reply, 3) == b"%2\r\n$1\r\nb\r\n$1\r\n1\r\n$1\r\na\r\n$2\r\n22\r\n"
    empty = node.read("HGETALL", "missing")
    assert (encode_reply(empty, 2), encode_reply(empty, 3)) == (b"*0\r\n", b"%0\r\n")


# ---- HRANDFIELD ----


def test_hrandfield_without_count(node: Node) -> None:
    with_hash(node, "h", "a", "1", "b", "2", "c", "3")
    picks = {node.read("HRANDFIELD", "h", seed=seed) for seed in range(40)}
    assert picks == {b"a", b"b", b"c"}


def test_hrandfield_positive_count_gives_distinct_fields(node: Node) -> None:
    pairs = [x for i in range(100) for x in (f"f{i}", f"v{i}")]
    with_hash(node, "h", *pairs)
    for count in (1, 5, 40, 99):
        picks = node.read("HRANDFIELD", "h", count, seed=count)
        assert isinstance(picks, list) and len(picks) == count == len(set(picks))
    assert node.read("HRANDFIELD", "h", "100") == node.read("HKEYS", "h")
    assert node.read("HRANDFIELD", "h", "1000") == node.read("HKEYS", "h")
    assert node.read("HRANDFIELD", "h", "0") == []
    with_values = node.read("HRANDFIELD", "h", "5", "WITHVALUES", seed=3)
    assert type(with_values) is PairArray and len(with_values) == 10
    assert with_values[0::2] == node.read("HRANDFIELD", "h", "5", seed=3)  # the same draws
    assert all(v == b"v" + f[1:] for f, v in zip(with_values[0::2], with_values[1::2], strict=True))


def test_hrandfield_negative_count_may_repeat(node: Node) -> None:
    with_hash(node, "h", "a", "1", "b", "2")
    picks = node.read("HRANDFIELD", "h", "-50", seed=1)
    assert isinstance(picks, list) and len(picks) == 50 and set(picks) == {b"a", b"b"}
    pairs = node.read("HRANDFIELD", "h", "-50", "withvalues", seed=1)
    assert pairs[0::2] == picks  # type: ignore[index]
    assert set(zip(pairs[0::2], pairs[1::2], strict=True)) == {(b"a", b"1"), (b"b", b"2")}  # type: ignore[index]


def test_hrandfield_follows_the_seed_as_srandmember_does(node: Node) -> None:
    fields = [f"m{i}" for i in range(30)]
    with_hash(node, "h", *[x for f in fields for x in (f, "v")])
    node.write("SADD", "s", *fields)
    for seed in range(5):
        for count in ("-7", "3", "20"):
            assert node.read("HRANDFIELD", "h", count, seed=seed) == node.read(
                "SRANDMEMBER", "s", count, seed=seed)
        assert node.read("HRANDFIELD", "h", seed=seed) == node.read("SRANDMEMBER", "s",
                                                                     seed=seed)
    assert len({repr(node.read("HRANDFIELD", "h", "3", seed=s)) for s in range(10)}) > 1


def test_hrandfield_withvalues_is_nested_pairs_in_resp3_and_flat_in_resp2(node: Node) -> None:
    with_hash(node, "h", "a", "1")
    reply = node.read("HRANDFIELD", "h", "-2", "WITHVALUES")
    assert encode_reply(reply, 2) == b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\na\r\n$1\r\n1\r\n"
    assert encode_reply(reply, 3) == (b"*2\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"
                                      b"*2\r\n$1\r\na\r\n$1\r\n1\r\n")
    plain = node.read("HRANDFIELD", "h", "-2")
    assert encode_reply(plain, 3) == b"*2\r\n$1\r\na\r\n$1\r\na\r\n"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["x"], NOT_INTEGER),
        (["WITHVALUES"], NOT_INTEGER),
        (["1", "foo"], SYNTAX),
        (["1", "WITHVALUES", "x"], SYNTAX),
        (["x", "foo"], NOT_INTEGER),  # the count first
        (["-9223372036854775808"], OUT_OF_RANGE),
        (["-4194305", "foo"], OUT_OF_RANGE),
        (["4611686018427387904", "WITHVALUES"], "ERR value is out of range"),
    ],
)
def test_hrandfield_argument_errors_come_before_the_key(node: Node, args: list[str],
                                                        error: str) -> None:
    with_hash(node, "h", "a", "1")
    node.write("SET", "s", "v")
    for key in ("h", "s", "missing"):
        assert node.read("HRANDFIELD", key, *args) == err(error), key


def test_hrandfield_refuses_a_reply_too_big(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hash_commands, "HRANDFIELD_REPLY_BYTES_MAX", 100)
    with_hash(node, "h", "f" * 10, "v" * 10)
    assert isinstance(node.read("HRANDFIELD", "h", "-10"), list)
    assert node.read("HRANDFIELD", "h", "-11") == err(hash_commands.HRANDFIELD_TOO_BIG)
    assert node.read("HRANDFIELD", "h", "-6", "WITHVALUES") == err(
        hash_commands.HRANDFIELD_TOO_BIG)


# ---- HSCAN ----


def test_hscan_returns_a_small_hash_whole_in_hgetall_order(node: Node) -> None:
    with_hash(node, "h", "b", "1", "a", "2", "c", "3")
    node.write("HDEL", "h", "b")
    assert node.read("HSCAN", "h", "0") == [b"0", [b"c", b"3", b"a", b"2"]]
    assert node.read("HSCAN", "h", "0", "NOVALUES") == [b"0", [b"c", b"a"]]
    assert node.read("HSCAN", "h", "0", "MATCH", "[ab]") == [b"0", [b"a", b"2"]]
    assert node.read("HSCAN", "h", "0", "novalues", "MATCH", "c*", "COUNT", "1") == [
        b"0", [b"c"]]


def test_hscan_walks_a_big_hash_in_steps(node: Node) -> None:
    pairs = {b"f%d" % i: b"v%d" % i for i in range(2000)}
    node.write("HSET", "h", *[x for pair in pairs.items() for x in pair])
    first = node.read("HSCAN", "h", "0", "COUNT", "10")
    assert isinstance(first, list) and first[0] != b"0"
    assert 20 <= len(first[1]) < 4000
    found = hscan_all(node, "h", "COUNT", "10")
    assert len(found) == 4000
    assert dict(zip(found[0::2], found[1::2], strict=True)) == pairs  # each field once, valued
    assert sorted(hscan_all(node, "h", "MATCH", "f1??", "NOVALUES")) == sorted(
        f for f in pairs if len(f) == 4 and f.startswith(b"f1"))


def test_hscan_returns_every_field_present_throughout(node: Node) -> None:
    """Fields added and removed during the scan make the hash grow and shrink its index; the
    fields that stay are still returned."""
    stable = [b"s%d" % i for i in range(600)]
    node.write("HSET", "h", *[x for f in stable for x in (f, b"v")])
    cursor: object = "0"
    found: set[bytes] = set()
    step = 0
    while True:
        cursor, fields = node.read("HSCAN", "h", cursor, "COUNT", "20",  # type: ignore[misc]
                                   "NOVALUES")
        found.update(fields)
        if cursor == b"0":
            break
        step += 1
        if step % 2:
            node.write("HSET", "h", *[x for i in range(300) for x in (b"x%d-%d" % (step, i), b"")])
        else:
            node.write("HDEL", "h", *[b"x%d-%d" % (step - 1, i) for i in range(300)])
    assert set(stable) <= found


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["COUNT", "0"], SYNTAX),
        (["COUNT", "abc"], NOT_INTEGER),
        (["COUNT"], SYNTAX),
        (["MATCH"], SYNTAX),
        (["TYPE", "hash"], SYNTAX),
        (["BOGUS", "1"], SYNTAX),
    ],
)
def test_hscan_option_errors_only_for_an_existing_hash(
    node: Node, options: list[str], error: str
) -> None:
    with_hash(node, "h", "a", "1")
    assert node.read("HSCAN", "h", "0", *options) == err(error)
    assert node.read("HSCAN", "missing", "0", *options) == [b"0", []]


def test_hscan_cursor_is_checked_first(node: Node) -> None:
    for cursor in ("-1", "abc", "18446744073709551616"):
        assert node.read("HSCAN", "missing", cursor) == err("ERR invalid cursor")


def test_novalues_is_for_hscan_only(node: Node) -> None:
    node.write("SADD", "s", "a")
    assert node.read("SSCAN", "s", "0", "NOVALUES") == err(
        "ERR NOVALUES option can only be used in HSCAN")
    assert node.read("SCAN", "0", "NOVALUES") == err(
        "ERR NOVALUES option can only be used in HSCAN")


# ---- WRONGTYPE in every direction ----


@pytest.mark.parametrize(
    "argv",
    [
        ["HSET", "k", "f", "v"], ["HMSET", "k", "f", "v"], ["HSETNX", "k", "f", "v"],
        ["HGET", "k", "f"], ["HMGET", "k", "f"], ["HDEL", "k", "f"], ["HEXISTS", "k", "f"],
        ["HLEN", "k"], ["HSTRLEN", "k", "f"], ["HKEYS", "k"], ["HVALS", "k"], ["HGETALL", "k"],
        ["HINCRBY", "k", "f", "1"], ["HINCRBYFLOAT", "k", "f", "1"], ["HRANDFIELD", "k"],
        ["HRANDFIELD", "k", "2", "WITHVALUES"], ["HSCAN", "k", "0"],
    ],
)  # fmt: skip
@pytest.mark.parametrize("other", [["SET", "k", "v"], ["SADD", "k", "m"]])
def test_hash_commands_refuse_other_types(node: Node, argv: list[str], other: list[str]) -> None:
    node.write(*other)
    run = node.write if argv[0] in ("HSET", "HMSET", "HSETNX", "HDEL", "HINCRBY",
                                    "HINCRBYFLOAT") else node.read
    assert run(*argv) == WRONGTYPE
    assert node.read("TYPE", "k") == Status("string" if other[0] == "SET" else "set")


@pytest.mark.parametrize(
    "argv",
    [
        ["GET", "k"], ["GETSET", "k", "v"], ["INCR", "k"], ["APPEND", "k", "x"],
        ["STRLEN", "k"], ["GETRANGE", "k", "0", "1"], ["SETRANGE", "k", "0", "x"],
        ["SET", "k", "v", "GET"], ["INCRBYFLOAT", "k", "1"], ["GETDEL", "k"],
        ["SADD", "k", "m"], ["SREM", "k", "m"], ["SCARD", "k"], ["SMEMBERS", "k"],
        ["SISMEMBER", "k", "m"], ["SPOP", "k"], ["SRANDMEMBER", "k"], ["SSCAN", "k", "0"],
        ["SINTER", "k"], ["SMOVE", "k", "t", "f"],
    ],
)  # fmt: skip
def test_other_commands_refuse_a_hash(node: Node, argv: list[str]) -> None:
    with_hash(node, "k", "f", "v")
    assert node.write(*argv) == WRONGTYPE
    assert node.read("HGETALL", "k") == {b"f": b"v"}


def test_commands_that_overwrite_or_test_existence_accept_a_hash(node: Node) -> None:
    with_hash(node, "k", "f", "v")
    assert node.write("SETNX", "k", "x") == 0
    assert node.write("SET", "k", "v", "NX") is None
    assert node.read("MGET", "k") == [None]
    assert node.write("SET", "k", "x") == OK  # a plain SET replaces any type
    assert node.read("TYPE", "k") == Status("string")
    with_hash(node, "h", "f", "v")
    node.write("SADD", "s", "a")
    assert node.write("SUNIONSTORE", "h", "s") == 1
    assert node.read("TYPE", "h") == Status("set")


# ---- key commands on hash keys ----


def test_expiry_on_a_hash(node: Node) -> None:
    with_hash(node, "h", "f", "v")
    assert node.write("PEXPIRE", "h", "100") == 1
    assert node.read("PTTL", "h") == 100
    node.write("HSET", "h", "g", "w")  # changing fields keeps the expiry
    node.write("HINCRBY", "h", "n", "1")
    node.write("HDEL", "h", "f")
    assert node.read("PTTL", "h") == 100
    assert node.read("HGETALL", "h", t=T0 + 100) == {}
    assert node.read("EXISTS", "h", t=T0 + 100) == 0
    # A write on the expired key drops it first: the new hash has no expiry.
    assert node.write("HSET", "h", "x", "1", t=T0 + 100) == 1
    assert node.read("HGETALL", "h", t=T0 + 100) == {b"x": b"1"}
    assert node.read("TTL", "h", t=T0 + 100) == -1


def test_del_exists_dbsize_keys_scan_type(node: Node) -> None:
    with_hash(node, "h", "f", "v")
    node.write("SADD", "s", "a")
    node.write("SET", "k", "v")
    assert node.read("DBSIZE") == 3
    assert sorted(node.read("KEYS", "*")) == [b"h", b"k", b"s"]  # type: ignore[type-var]
    assert node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "hash") == [b"0", [b"h"]]
    assert node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "HASH") == [b"0", [b"h"]]
    assert node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "set") == [b"0", [b"s"]]
    assert node.write("DEL", "h", "s") == 2
    assert node.read("DBSIZE") == 1


def test_rename_moves_a_hash_with_its_order_and_expiry(node: Node) -> None:
    with_hash(node, "h", "c", "1", "a", "2", "b", "3")
    node.write("PEXPIRE", "h", "5000")
    node.write("SET", "t", "old")
    assert node.write("RENAME", "h", "t") == OK
    assert node.read("HKEYS", "t") == [b"c", b"a", b"b"]
    assert node.read("PTTL", "t") == 5000
    assert node.read("EXISTS", "h") == 0
    assert node.write("RENAMENX", "t", "u") == 1
    assert node.read("TYPE", "u") == Status("hash")


def test_copy_of_a_hash_is_independent(node: Node) -> None:
    with_hash(node, "h", "a", "1", "b", "2")
    node.write("EXPIRE", "h", "50")
    assert node.write("COPY", "h", "c") == 1
    assert node.read("TTL", "c") == 50
    node.write("HSET", "c", "a", "changed", "z", "26")
    node.write("HDEL", "c", "b")
    assert node.read("HGETALL", "h") == {b"a": b"1", b"b": b"2"}
    assert node.read("HGETALL", "c") == {b"a": b"changed", b"z": b"26"}
    assert node.write("COPY", "h", "c") == 0  # exists: not replaced
    assert node.write("COPY", "h", "c", "REPLACE") == 1
    assert node.read("HKEYS", "c") == [b"a", b"b"]


def test_memory_accounting_follows_the_fields(node: Node) -> None:
    empty = node.state.used_bytes()
    with_hash(node, "h", "field", "value")
    one = node.state.used_bytes()
    node.write("HSET", "h", "other", "v")
    two = node.state.used_bytes()
    assert empty < one < two
    assert node.read("MEMORY", "USAGE", "h") == two - empty
    node.write("HSET", "h", "other", "longer value")  # an update in place
    assert node.state.used_bytes() == two + len("longer value") - 1
    node.write("HDEL", "h", "other")
    assert node.state.used_bytes() == one
    node.write("DEL", "h")
    assert node.state.used_bytes() == empty


# ---- the size limit ----


def test_a_hash_stops_growing_at_its_limits(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hash_commands, "HASH_FIELDS_MAX", 3)
    monkeypatch.setattr(hash_commands, "HASH_BYTES_MAX", 30)
    too_big = err(hash_commands.HASH_TOO_BIG)
    with_hash(node, "h", "a", "1", "b", "2")
    assert node.write("HSET", "h", "c", "3", "d", "4") == too_big
    assert node.write("HSET", "h", "a", "9", "c", "3") == 1  # an update takes no field
    assert node.write("HSETNX", "h", "d", "4") == too_big
    assert node.write("HMSET", "h", "d", "4") == too_big
    assert node.write("HINCRBY", "h", "d", "1") == too_big
    assert node.write("HINCRBYFLOAT", "h", "d", "1") == too_big
    assert node.write("HSET", "h", "a", "x" * 26) == too_big  # bytes: 6 now, 30 at most
    assert node.write("HSET", "h", "a", "x" * 25) == 0
    assert node.write("HINCRBY", "h", "b", "1000") == too_big  # "1002" is 3 bytes more
    assert node.read("HGETALL", "h") == {b"a": b"x" * 25, b"b": b"2", b"c": b"3"}
    assert node.write("HSET", "new", "f" * 20, "v" * 11) == too_big


def test_the_limits_keep_a_hash_post_image_inside_one_log_entry() -> None:
    from replikv.limits import DEFAULT_LIMITS

    # Every field and value carries at most 5 bytes of msgpack framing.
    worst = hash_commands.HASH_BYTES_MAX + 2 * hash_commands.HASH_FIELDS_MAX * 5
    assert worst + 1024 < DEFAULT_LIMITS.max_entry_bytes
