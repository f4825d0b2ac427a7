"""OBJECT and MEMORY against KVState: Redis 7.4's answers where replikv can give them, and the
documented estimates where it cannot (IDLETIME, MEMORY USAGE). Redis's replies were taken
from redis-server 7.0 (7.4 for set encodings: listpack sets came in 7.2; hash encodings are the
same in both, with hash-max-listpack-entries 128 and hash-max-listpack-value 64)."""

from __future__ import annotations

import pytest

from replikv.commands.introspection import ERR_FREQ_NOT_TRACKED
from replikv.commands.transactions import encode_exec
from replikv.replies import NOT_INTEGER, SYNTAX, Status
from replikv.state import (
    EXPIRY_OVERHEAD_BYTES,
    HASH_FIELD_OVERHEAD_BYTES,
    HASH_OVERHEAD_BYTES,
    KEY_OVERHEAD_BYTES,
    SET_MEMBER_OVERHEAD_BYTES,
    SET_OVERHEAD_BYTES,
    ZSET_MEMBER_OVERHEAD_BYTES,
    ZSET_OVERHEAD_BYTES,
)

from .state_driver import T0, Node, err


@pytest.fixture
def node() -> Node:
    return Node()


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (b"0", b"int"),
        (b"5", b"int"),
        (b"-9223372036854775808", b"int"),
        (b"9223372036854775807", b"int"),
        (b"9223372036854775808", b"embstr"),  # past int64
        (b"0012", b"embstr"),  # leading zeros: not Redis's canonical integer
        (b"-0", b"embstr"),
        (b"+5", b"embstr"),
        (b" 5", b"embstr"),
        (b"", b"embstr"),
        (b"x" * 44, b"embstr"),
        (b"x" * 45, b"raw"),
        (b"1" * 45, b"raw"),
    ],
)
def test_object_encoding_of_a_string_is_what_set_gives_in_redis(
        node: Node, value: bytes, encoding: bytes) -> None:
    node.write("SET", "k", value)
    assert node.read("OBJECT", "ENCODING", "k") == encoding


@pytest.mark.parametrize(
    ("members", "encoding"),
    [
        ([b"1", b"2", b"-3"], b"intset"),
        ([str(i).encode() for i in range(512)], b"intset"),
        ([str(i).encode() for i in range(513)], b"hashtable"),
        ([b"1", b"a"], b"listpack"),
        ([b"x" * 64], b"listpack"),
        ([b"x" * 65], b"hashtable"),
        ([b"m%d" % i for i in range(128)], b"listpack"),
        ([b"m%d" % i for i in range(129)], b"hashtable"),
        ([b"01"], b"listpack"),  # not a canonical integer
    ],
)
def test_object_encoding_of_a_set_follows_redis_thresholds(
        node: Node, members: list[bytes], encoding: bytes) -> None:
    node.write("SADD", "s", *members)
    assert node.read("OBJECT", "ENCODING", "s") == encoding


@pytest.mark.parametrize(
    ("pairs", "encoding"),
    [
        ([b"f", b"v"], b"listpack"),
        ([b"1", b"2"], b"listpack"),  # integers too: hashes have no intset
        ([b"x" * 64, b"y" * 64], b"listpack"),
        ([b"x" * 65, b"v"], b"hashtable"),  # a long field
        ([b"f", b"y" * 65], b"hashtable"),  # a long value
        ([x for i in range(128) for x in (b"f%d" % i, b"v")], b"listpack"),
        ([x for i in range(129) for x in (b"f%d" % i, b"v")], b"hashtable"),
    ],
)
def test_object_encoding_of_a_hash_follows_redis_thresholds(
        node: Node, pairs: list[bytes], encoding: bytes) -> None:
    node.write("HSET", "h", *pairs)
    assert node.read("OBJECT", "ENCODING", "h") == encoding
    assert node.read("OBJECT", "REFCOUNT", "h") == 1


@pytest.mark.parametrize(
    ("pairs", "encoding"),
    [
        ([b"1", b"m"], b"listpack"),
        ([b"1", b"x" * 64], b"listpack"),
        ([b"1", b"x" * 65], b"skiplist"),  # a long member
        ([x for i in range(128) for x in (b"%d" % i, b"m%d" % i)], b"listpack"),
        ([x for i in range(129) for x in (b"%d" % i, b"m%d" % i)], b"skiplist"),
    ],
)
def test_object_encoding_of_a_zset_follows_redis_thresholds(
        node: Node, pairs: list[bytes], encoding: bytes) -> None:
    node.write("ZADD", "z", *pairs)
    assert node.read("OBJECT", "ENCODING", "z") == encoding


def test_a_zset_that_shrank_is_judged_as_it_is_now(node: Node) -> None:
    # Redis would still say skiplist (it never converts back); replikv judges the value.
    node.write("ZADD", "z", "1", "y" * 65, "2", "v")
    assert node.read("OBJECT", "ENCODING", "z") == b"skiplist"
    node.write("ZREM", "z", "y" * 65)
    assert node.read("OBJECT", "ENCODING", "z") == b"listpack"


def test_a_hash_that_shrank_is_judged_as_it_is_now(node: Node) -> None:
    # Redis would still say hashtable (it never converts back); replikv judges the value.
    node.write("HSET", "h", "f", "y" * 65, "g", "v")
    assert node.read("OBJECT", "ENCODING", "h") == b"hashtable"
    node.write("HDEL", "h", "f")
    assert node.read("OBJECT", "ENCODING", "h") == b"listpack"


def test_object_on_a_missing_or_expired_key_is_nil(node: Node) -> None:
    for sub in ("ENCODING", "REFCOUNT", "IDLETIME", "FREQ"):
        assert node.read("OBJECT", sub, "nokey") is None
    node.write("SET", "k", "v", "PX", 100)
    assert node.read("OBJECT", "ENCODING", "k", t=T0 + 99) == b"embstr"
    assert node.read("OBJECT", "ENCODING", "k", t=T0 + 100) is None


def test_object_refcount_idletime_and_freq(node: Node) -> None:
    node.write("SET", "small", 5)
    node.write("SET", "big", 12345)
    node.write("SET", "text", "abc")
    node.write("SADD", "s", "a")
    # Redis shares the integers 0..9999 and reports INT_MAX references for them.
    assert node.read("OBJECT", "REFCOUNT", "small") == 2_147_483_647
    assert node.read("OBJECT", "refcount", "big") == 1
    assert node.read("OBJECT", "REFCOUNT", "text") == 1
    assert node.read("OBJECT", "REFCOUNT", "s") == 1
    # Access is not tracked: idle 0 always; FREQ is Redis's error without an LFU policy.
    assert node.read("OBJECT", "IDLETIME", "text", t=T0 + 3_600_000) == 0
    assert node.read("OBJECT", "FREQ", "text") == err(ERR_FREQ_NOT_TRACKED)
    assert ERR_FREQ_NOT_TRACKED.startswith("ERR An LFU maxmemory policy is not selected")


def test_object_and_memory_help(node: Node) -> None:
    help_lines = node.read("OBJECT", "HELP")
    assert isinstance(help_lines, list) and all(type(line) is Status for line in help_lines)
    assert help_lines[0] == "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    assert {"ENCODING <key>", "FREQ <key>", "IDLETIME <key>", "REFCOUNT <key>", "HELP"} <= set(
        help_lines)
    memory_help = node.read("MEMORY", "help")
    assert isinstance(memory_help, list)
    assert memory_help[0] == "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    assert "USAGE <key> [SAMPLES <count>]" in memory_help


def test_memory_usage_is_the_keys_share_of_used_memory(node: Node) -> None:
    node.write("SET", "str", "x" * 100)
    assert node.read("MEMORY", "USAGE", "str") == 3 + 100 + KEY_OVERHEAD_BYTES
    node.write("SET", "exp", "v", "EX", 100)
    assert node.read("MEMORY", "USAGE", "exp") == (
        3 + 1 + KEY_OVERHEAD_BYTES + EXPIRY_OVERHEAD_BYTES)
    node.write("SADD", "set", "a", "bb", "ccc")
    assert node.read("MEMORY", "USAGE", "set", "SAMPLES", 0) == (
        3 + KEY_OVERHEAD_BYTES + SET_OVERHEAD_BYTES + 6 + 3 * SET_MEMBER_OVERHEAD_BYTES)
    node.write("HSET", "hash", "a", "1", "bb", "22")
    assert node.read("MEMORY", "USAGE", "hash") == (
        4 + KEY_OVERHEAD_BYTES + HASH_OVERHEAD_BYTES + 6 + 2 * HASH_FIELD_OVERHEAD_BYTES)
    node.write("ZADD", "zset", "1", "a", "2.5", "bb")
    assert node.read("MEMORY", "USAGE", "zset") == (
        4 + KEY_OVERHEAD_BYTES + ZSET_OVERHEAD_BYTES + 3 + 2 * ZSET_MEMBER_OVERHEAD_BYTES)
    # Summed over every key it is INFO's used_memory, whatever SAMPLES says.
    node.write("SADD", "big", *(b"member-%d" % i for i in range(1000)))
    node.write("HSET", "bighash", *(b"field-%d" % (i // 2) for i in range(2000)))
    node.write("ZADD", "bigzset", *(b"%d" % i if i % 2 == 0 else b"m%d" % i for i in range(2000)))
    keys = [b"str", b"exp", b"set", b"big", b"hash", b"bighash", b"zset", b"bigzset"]
    usages = [node.read("MEMORY", "USAGE", key, "SAMPLES", 1) for key in keys]
    assert all(type(usage) is int for usage in usages)
    assert sum(usages) == node.state.used_bytes()  # type: ignore[arg-type]


def test_memory_usage_options_and_a_missing_key(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.read("MEMORY", "USAGE", "nokey") is None
    assert node.read("MEMORY", "USAGE", "nokey", "SAMPLES", 1, "samples", 2) is None
    # Options are checked before the key is looked up, in order, as Redis does.
    assert node.read("MEMORY", "USAGE", "nokey", "SAMPLES", "x") == err(NOT_INTEGER)
    assert node.read("MEMORY", "USAGE", "k", "SAMPLES") == err(SYNTAX)
    assert node.read("MEMORY", "USAGE", "k", "SAMPLES", -1) == err(SYNTAX)
    assert node.read("MEMORY", "USAGE", "k", "FOO") == err(SYNTAX)
    assert node.read("MEMORY", "USAGE", "k", "SAMPLES", "x", "FOO") == err(NOT_INTEGER)
    node.write("SET", "t", "v", "PX", 10)
    assert node.read("MEMORY", "USAGE", "t", t=T0 + 10) is None


def test_object_and_memory_are_reads_that_run_inside_exec(node: Node) -> None:
    # Queued in a transaction they answer in EXEC's reply, like any read, and see the
    # transaction's earlier writes.
    node.write("SET", "k", "12")
    reply = node.write(*encode_exec([[b"OBJECT", b"ENCODING", b"k"], [b"SADD", b"s", b"1"],
                                     [b"OBJECT", b"ENCODING", b"s"],
                                     [b"MEMORY", b"USAGE", b"missing"]]))
    assert reply == [b"int", 1, b"intset", None]
