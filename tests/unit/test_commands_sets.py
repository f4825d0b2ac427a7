"""Set commands against KVState: Redis 7 semantics and error texts, WRONGTYPE in both
directions, the key commands on set keys, random picks from the caller's seed, SSCAN's cursor,
and the size limit. redis-server is not available here, so the expected replies are Redis's
documented (t_set.c) behaviour."""

from __future__ import annotations

import pytest

from replikv.commands import sets as set_commands
from replikv.replies import NOT_INTEGER, OK, SYNTAX, WRONG_TYPE, Status
from replikv.state import SHARD_COUNT

from .state_driver import T0, Node, err

WRONGTYPE = err(WRONG_TYPE)


@pytest.fixture
def node() -> Node:
    return Node()


def with_set(node: Node, key: str, *members: object) -> None:
    assert node.write("SADD", key, *members) == len(set(members))


def sscan_all(node: Node, key: str, *options: object) -> list[bytes]:
    cursor: object = "0"
    found: list[bytes] = []
    for _ in range(100_000):
        reply = node.read("SSCAN", key, cursor, *options)
        assert isinstance(reply, list), reply
        cursor, members = reply
        found.extend(members)
        if cursor == b"0":
            return found
    raise AssertionError("SSCAN did not finish")


# ---- SADD, SREM, SCARD, SISMEMBER, SMISMEMBER, SMEMBERS ----


def test_sadd_counts_new_members_once_and_keeps_insertion_order(node: Node) -> None:
    assert node.write("SADD", "s", "b", "a", "b", "c") == 3
    assert node.write("SADD", "s", "a", "d", "d") == 1
    assert node.read("SMEMBERS", "s") == [b"b", b"a", b"c", b"d"]
    assert node.read("SCARD", "s") == 4
    assert node.read("TYPE", "s") == Status("set")
    assert node.read("EXISTS", "s") == 1


def test_sadd_accepts_any_bytes(node: Node) -> None:
    assert node.write("SADD", "s", b"", b"\x00\xff", b"a\r\nb") == 3
    assert node.read("SISMEMBER", "s", b"") == 1
    assert node.read("SISMEMBER", "s", b"\x00\xff") == 1


def test_srem_counts_removed_and_deletes_the_emptied_set(node: Node) -> None:
    with_set(node, "s", "a", "b", "c")
    assert node.write("SREM", "s", "a", "x", "a") == 1
    assert node.read("SMEMBERS", "s") == [b"c", b"b"]  # the last member moves into the hole
    assert node.write("SREM", "s", "b", "c", "zz") == 2
    assert node.read("EXISTS", "s") == 0
    assert node.read("TYPE", "s") == Status("none")
    assert node.read("DBSIZE") == 0
    assert node.write("SREM", "s", "a") == 0


def test_membership_and_cardinality_of_a_missing_key(node: Node) -> None:
    assert node.read("SCARD", "nope") == 0
    assert node.read("SISMEMBER", "nope", "a") == 0
    assert node.read("SMISMEMBER", "nope", "a", "b") == [0, 0]
    assert node.read("SMEMBERS", "nope") == []


def test_smismember_answers_per_member(node: Node) -> None:
    with_set(node, "s", "a", "c")
    assert node.read("SMISMEMBER", "s", "a", "b", "c", "a") == [1, 0, 1, 1]
    assert node.read("SISMEMBER", "s", "b") == 0


# ---- WRONGTYPE, both ways ----


@pytest.mark.parametrize(
    "argv",
    [
        ["GET", "s"],
        ["GETSET", "s", "v"],
        ["GETDEL", "s"],
        ["GETEX", "s", "PX", "100"],
        ["INCR", "s"],
        ["DECR", "s"],
        ["INCRBY", "s", "2"],
        ["DECRBY", "s", "2"],
        ["INCRBYFLOAT", "s", "1.5"],
        ["APPEND", "s", "x"],
        ["STRLEN", "s"],
        ["GETRANGE", "s", "0", "-1"],
        ["SETRANGE", "s", "0", "x"],
        ["SETRANGE", "s", "0", ""],
        ["SET", "s", "v", "GET"],
        ["SET", "s", "v", "NX", "GET"],
        ["SET", "s", "v", "IFEQ", "a"],
        ["SET", "s", "v", "IFNE", "a"],
    ],
)
def test_string_commands_that_read_the_value_refuse_a_set(node: Node, argv: list[str]) -> None:
    with_set(node, "s", "a")
    before = node.state.digest()
    reply = node.write(*argv) if argv[0] not in ("GET", "STRLEN", "GETRANGE") else node.read(*argv)
    assert reply == WRONGTYPE
    assert node.state.digest() == before


def test_string_commands_that_overwrite_or_test_existence_accept_a_set(node: Node) -> None:
    with_set(node, "s", "a")
    assert node.write("SET", "s", "v", "NX") is None
    assert node.write("SETNX", "s", "v") == 0
    assert node.write("MSETNX", "fresh", "1", "s", "v") == 0
    assert node.read("MGET", "s", "nope") == [None, None]
    assert node.read("TYPE", "s") == Status("set")
    assert node.write("SET", "s", "v", "XX") == OK
    assert node.read("GET", "s") == b"v"
    with_set(node, "t", "a")
    assert node.write("MSET", "t", "w") == OK
    assert node.read("TYPE", "t") == Status("string")
    with_set(node, "u", "a")
    assert node.write("SETEX", "u", "10", "w") == OK
    assert node.read("GET", "u") == b"w"


def test_set_keepttl_over_a_set_keeps_its_expiry(node: Node) -> None:
    with_set(node, "s", "a")
    node.write("PEXPIRE", "s", "5000")
    assert node.write("SET", "s", "v", "KEEPTTL") == OK
    assert node.read("PTTL", "s") == 5000
    assert node.read("GET", "s") == b"v"


@pytest.mark.parametrize(
    "argv",
    [
        ["SADD", "k", "a"],
        ["SREM", "k", "a"],
        ["SCARD", "k"],
        ["SISMEMBER", "k", "a"],
        ["SMISMEMBER", "k", "a"],
        ["SMEMBERS", "k"],
        ["SPOP", "k"],
        ["SPOP", "k", "2"],
        ["SPOP", "k", "0"],
        ["SRANDMEMBER", "k"],
        ["SRANDMEMBER", "k", "-2"],
        ["SRANDMEMBER", "k", "0"],
        ["SMOVE", "k", "s", "a"],
        ["SMOVE", "s", "k", "a"],
        ["SMOVE", "s", "k", "not-a-member"],
        ["SINTER", "s", "k"],
        ["SINTER", "missing", "k"],
        ["SUNION", "missing", "k"],
        ["SDIFF", "s", "k"],
        ["SDIFF", "missing", "k"],
        ["SINTERSTORE", "d", "missing", "k"],
        ["SUNIONSTORE", "d", "s", "k"],
        ["SDIFFSTORE", "d", "s", "k"],
        ["SINTERCARD", "2", "missing", "k"],
        ["SSCAN", "k", "0"],
        ["SSCAN", "k", "0", "COUNT", "0"],
    ],
)
def test_set_commands_refuse_a_string(node: Node, argv: list[str]) -> None:
    node.write("SET", "k", "v")
    with_set(node, "s", "a")
    before = node.state.digest()
    assert node.write(*argv) == WRONGTYPE
    assert node.state.digest() == before


def test_store_commands_overwrite_a_string_destination(node: Node) -> None:
    with_set(node, "s", "a", "b")
    node.write("SET", "d", "v", "EX", "100")
    assert node.write("SUNIONSTORE", "d", "s") == 2
    assert node.read("TYPE", "d") == Status("set")
    assert node.read("TTL", "d") == -1


# ---- SPOP and SRANDMEMBER ----


def test_spop_without_count(node: Node) -> None:
    with_set(node, "s", "a", "b", "c")
    popped = node.write("SPOP", "s")
    assert popped in (b"a", b"b", b"c")
    assert node.read("SISMEMBER", "s", popped) == 0
    assert node.read("SCARD", "s") == 2
    assert node.write("SPOP", "missing") is None


def test_spop_with_count(node: Node) -> None:
    with_set(node, "s", *range(10))
    popped = node.write("SPOP", "s", "4", seed=7)
    assert isinstance(popped, list) and len(set(popped)) == 4
    assert node.read("SCARD", "s") == 6
    assert not set(popped) & set(node.read("SMEMBERS", "s"))  # type: ignore[arg-type]
    assert node.write("SPOP", "s", "0") == []
    assert node.write("SPOP", "missing", "3") == []


def test_spop_count_at_least_the_size_takes_everything_and_deletes(node: Node) -> None:
    with_set(node, "s", "a", "b", "c")
    assert node.write("SPOP", "s", "10") == [b"a", b"b", b"c"]
    assert node.read("EXISTS", "s") == 0


def test_spop_last_member_deletes_the_key(node: Node) -> None:
    with_set(node, "s", "a")
    assert node.write("SPOP", "s") == b"a"
    assert node.read("DBSIZE") == 0


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["SPOP", "s", "-1"], "ERR value is out of range, must be positive"),
        (["SPOP", "s", "abc"], "ERR value is out of range, must be positive"),
        (["SPOP", "s", "1", "2"], SYNTAX),
        (["SRANDMEMBER", "s", "abc"], NOT_INTEGER),
        (
            ["SRANDMEMBER", "s", "-9223372036854775808"],
            (
                "ERR value is out of range, value must between "
                f"{-set_commands.SRANDMEMBER_REPEATS_MAX} and 9223372036854775807"
            ),
        ),
        (["SRANDMEMBER", "s", "1", "2"], SYNTAX),
    ],
)
def test_count_errors(node: Node, argv: list[str], error: str) -> None:
    with_set(node, "s", "a")
    assert node.write(*argv) == err(error)
    # The count is checked before the key: a missing key gives the same error.
    assert node.write(argv[0], "missing", *argv[2:]) == err(error)


def test_picks_follow_the_seed(node: Node) -> None:
    other = Node()
    for replica in (node, other):
        with_set(replica, "s", *range(200))
    for seed in range(20):
        assert node.read("SRANDMEMBER", "s", "5", seed=seed) == other.read(
            "SRANDMEMBER", "s", "5", seed=seed
        )
        assert node.write("SPOP", "s", seed=seed) == other.write("SPOP", "s", seed=seed)
    assert node.read("SMEMBERS", "s") == other.read("SMEMBERS", "s")
    picks = {node.read("SRANDMEMBER", "s", seed=seed) for seed in range(50)}
    assert len(picks) > 10  # the seed really changes the pick


def test_srandmember_without_count_and_missing_key(node: Node) -> None:
    assert node.read("SRANDMEMBER", "missing") is None
    assert node.read("SRANDMEMBER", "missing", "3") == []
    assert node.read("SRANDMEMBER", "missing", "-3") == []
    with_set(node, "s", "a", "b")
    assert node.read("SRANDMEMBER", "s") in (b"a", b"b")
    assert node.read("SRANDMEMBER", "s", "0") == []


def test_srandmember_positive_count_gives_distinct_members(node: Node) -> None:
    with_set(node, "s", *range(100))
    for count, seed in [(1, 1), (5, 2), (30, 3), (34, 4), (99, 5)]:
        picks = node.read("SRANDMEMBER", "s", count, seed=seed)
        assert isinstance(picks, list) and len(picks) == count
        assert len(set(picks)) == count
        assert all(node.read("SISMEMBER", "s", m) == 1 for m in picks)
    assert sorted(node.read("SRANDMEMBER", "s", "100")) == sorted(  # type: ignore[type-var]
        node.read("SMEMBERS", "s")  # type: ignore[arg-type]
    )
    assert len(node.read("SRANDMEMBER", "s", "1000")) == 100  # type: ignore[arg-type]


def test_srandmember_negative_count_may_repeat(node: Node) -> None:
    with_set(node, "one", "x")
    assert node.read("SRANDMEMBER", "one", "-5") == [b"x"] * 5
    with_set(node, "s", "a", "b", "c")
    picks = node.read("SRANDMEMBER", "s", "-300", seed=3)
    assert isinstance(picks, list) and len(picks) == 300
    assert set(picks) == {b"a", b"b", b"c"}
    assert node.read("SCARD", "s") == 3  # a read: nothing removed


def test_srandmember_refuses_a_reply_too_big(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(set_commands, "SRANDMEMBER_REPLY_BYTES_MAX", 100)
    with_set(node, "s", "0123456789")
    assert len(node.read("SRANDMEMBER", "s", "-10")) == 10  # type: ignore[arg-type]
    assert node.read("SRANDMEMBER", "s", "-11") == err(set_commands.SRANDMEMBER_TOO_BIG)


# ---- SMOVE ----


def test_smove_moves_a_member(node: Node) -> None:
    with_set(node, "src", "a", "b")
    assert node.write("SMOVE", "src", "dst", "a") == 1
    assert node.read("SMEMBERS", "src") == [b"b"]
    assert node.read("SMEMBERS", "dst") == [b"a"]
    assert node.write("SMOVE", "src", "dst", "b") == 1
    assert node.read("EXISTS", "src") == 0  # emptied, so deleted
    assert node.read("SMEMBERS", "dst") == [b"a", b"b"]


def test_smove_when_the_destination_already_has_the_member(node: Node) -> None:
    with_set(node, "src", "a", "b")
    with_set(node, "dst", "a")
    assert node.write("SMOVE", "src", "dst", "a") == 1
    assert node.read("SMEMBERS", "src") == [b"b"]
    assert node.read("SMEMBERS", "dst") == [b"a"]


def test_smove_edge_cases(node: Node) -> None:
    node.write("SET", "str", "v")
    # A missing source replies 0 before the destination's type is looked at.
    assert node.write("SMOVE", "missing", "str", "a") == 0
    with_set(node, "s", "a")
    assert node.write("SMOVE", "s", "s", "a") == 1  # same key: a membership test, no change
    assert node.write("SMOVE", "s", "s", "x") == 0
    assert node.read("SMEMBERS", "s") == [b"a"]
    assert node.write("SMOVE", "s", "other", "x") == 0  # not a member
    assert node.read("EXISTS", "other") == 0


# ---- SINTER, SUNION, SDIFF, their STORE forms and SINTERCARD ----


@pytest.fixture
def three_sets(node: Node) -> Node:
    with_set(node, "a", "1", "2", "3", "4")
    with_set(node, "b", "3", "4", "5")
    with_set(node, "c", "4", "3", "6", "7", "8")
    return node


def test_sinter(three_sets: Node) -> None:
    node = three_sets
    assert node.read("SINTER", "a", "b", "c") == [b"3", b"4"]  # the smallest set's order
    assert node.read("SINTER", "a") == [b"1", b"2", b"3", b"4"]
    assert node.read("SINTER", "a", "a") == [b"1", b"2", b"3", b"4"]
    assert node.read("SINTER", "a", "missing") == []


def test_sunion(three_sets: Node) -> None:
    node = three_sets
    assert node.read("SUNION", "a", "b", "missing", "c") == [
        b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8",
    ]  # fmt: skip
    assert node.read("SUNION", "missing") == []


def test_sdiff(three_sets: Node) -> None:
    node = three_sets
    assert node.read("SDIFF", "a", "b") == [b"1", b"2"]
    assert node.read("SDIFF", "c", "a", "missing", "b") == [b"6", b"7", b"8"]
    assert node.read("SDIFF", "a", "a") == []
    assert node.read("SDIFF", "missing", "a") == []
    assert node.read("SDIFF", "a", "missing") == [b"1", b"2", b"3", b"4"]


def test_store_forms_replace_the_destination(three_sets: Node) -> None:
    node = three_sets
    assert node.write("SINTERSTORE", "d", "a", "b") == 2
    assert node.read("SMEMBERS", "d") == [b"3", b"4"]
    node.write("EXPIRE", "d", "100")
    assert node.write("SUNIONSTORE", "d", "b", "d") == 3
    assert node.read("SMEMBERS", "d") == [b"3", b"4", b"5"]
    assert node.read("TTL", "d") == -1  # a stored result has no expiry
    assert node.write("SDIFFSTORE", "a", "a", "b") == 2  # the destination may be a source
    assert node.read("SMEMBERS", "a") == [b"1", b"2"]


@pytest.mark.parametrize(
    "argv",
    [
        ["SINTERSTORE", "d", "a", "missing"],
        ["SINTERSTORE", "d", "a", "zero"],
        ["SUNIONSTORE", "d", "missing"],
        ["SDIFFSTORE", "d", "a", "a"],
        ["SDIFFSTORE", "d", "missing", "a"],
    ],
)
def test_an_empty_result_deletes_the_destination(three_sets: Node, argv: list[str]) -> None:
    node = three_sets
    node.write("SET", "d", "old")
    assert node.write(*argv) == 0
    assert node.read("EXISTS", "d") == 0
    with_set(node, "d", "x")
    assert node.write(*argv) == 0
    assert node.read("EXISTS", "d") == 0


def test_sintercard(three_sets: Node) -> None:
    node = three_sets
    assert node.read("SINTERCARD", "3", "a", "b", "c") == 2
    assert node.read("SINTERCARD", "1", "c") == 5
    assert node.read("SINTERCARD", "1", "c", "LIMIT", "3") == 3
    assert node.read("SINTERCARD", "1", "c", "limit", "0") == 5  # 0: no limit
    assert node.read("SINTERCARD", "2", "a", "b", "LIMIT", "1") == 1
    assert node.read("SINTERCARD", "2", "a", "missing") == 0
    assert node.read("SINTERCARD", "1", "LIMIT") == 0  # a key named LIMIT


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["0", "a"], "ERR numkeys should be greater than 0"),
        (["-1", "a"], "ERR numkeys should be greater than 0"),
        (["abc", "a"], "ERR numkeys should be greater than 0"),
        (["3", "a", "b"], "ERR Number of keys can't be greater than number of args"),
        (["1", "a", "LIMIT", "-1"], "ERR LIMIT can't be negative"),
        (["1", "a", "LIMIT", "x"], "ERR LIMIT can't be negative"),
        (["1", "a", "LIMIT"], SYNTAX),
        (["1", "a", "b"], SYNTAX),
    ],
)
def test_sintercard_errors(three_sets: Node, args: list[str], error: str) -> None:
    assert three_sets.read("SINTERCARD", *args) == err(error)


# ---- SSCAN ----


def test_sscan_returns_a_small_set_whole(node: Node) -> None:
    with_set(node, "s", "b", "a", "c")
    cursor, members = node.read("SSCAN", "s", "0")  # type: ignore[misc]
    assert cursor == b"0"
    assert sorted(members) == [b"a", b"b", b"c"]
    assert node.read("SSCAN", "s", "0", "MATCH", "[ab]") == [b"0", [b"a", b"b"]]
    assert node.read("SSCAN", "missing", "0") == [b"0", []]


def test_sscan_walks_a_big_set_in_steps(node: Node) -> None:
    members = [b"m%d" % i for i in range(2000)]
    node.write("SADD", "s", *members)
    first = node.read("SSCAN", "s", "0", "COUNT", "10")
    assert isinstance(first, list) and first[0] != b"0"
    assert 10 <= len(first[1]) < 2000
    found = sscan_all(node, "s", "COUNT", "10")
    assert sorted(found) == sorted(members)  # each member exactly once with no changes
    assert sorted(sscan_all(node, "s", "MATCH", "m1??")) == sorted(
        m for m in members if len(m) == 4 and m.startswith(b"m1")
    )


def test_sscan_returns_every_member_present_throughout(node: Node) -> None:
    """Members added and removed during the scan make the set grow and shrink its index; the
    members that stay are still returned."""
    stable = [b"s%d" % i for i in range(600)]
    node.write("SADD", "s", *stable)
    cursor: object = "0"
    found: set[bytes] = set()
    step = 0
    while True:
        cursor, members = node.read("SSCAN", "s", cursor, "COUNT", "20")  # type: ignore[misc]
        found.update(members)
        if cursor == b"0":
            break
        step += 1
        if step % 2:
            node.write("SADD", "s", *[b"x%d-%d" % (step, i) for i in range(300)])
        else:
            node.write("SREM", "s", *[b"x%d-%d" % (step - 1, i) for i in range(300)])
    assert set(stable) <= found


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["COUNT", "0"], SYNTAX),
        (["COUNT", "abc"], NOT_INTEGER),
        (["COUNT"], SYNTAX),
        (["TYPE", "set"], SYNTAX),
        (["NOVALUES"], "ERR NOVALUES option can only be used in HSCAN"),
        (["BOGUS", "1"], SYNTAX),
    ],
)
def test_sscan_option_errors_only_for_an_existing_set(
    node: Node, options: list[str], error: str
) -> None:
    with_set(node, "s", "a")
    assert node.read("SSCAN", "s", "0", *options) == err(error)
    assert node.read("SSCAN", "missing", "0", *options) == [b"0", []]


def test_sscan_cursor_is_checked_first(node: Node) -> None:
    for cursor in ("-1", "abc", "18446744073709551616"):
        assert node.read("SSCAN", "missing", cursor) == err("ERR invalid cursor")


# ---- key commands on set keys ----


def test_expiry_on_a_set(node: Node) -> None:
    with_set(node, "s", "a")
    assert node.write("PEXPIRE", "s", "100") == 1
    assert node.read("PTTL", "s") == 100
    assert node.read("SMEMBERS", "s", t=T0 + 100) == []
    assert node.read("EXISTS", "s", t=T0 + 100) == 0
    # A write on the expired key drops it first: the new set has no expiry.
    assert node.write("SADD", "s", "b", t=T0 + 100) == 1
    assert node.read("SMEMBERS", "s", t=T0 + 100) == [b"b"]
    assert node.read("TTL", "s", t=T0 + 100) == -1
    node.write("EXPIRE", "s", "10", t=T0 + 100)
    assert node.write("PERSIST", "s", t=T0 + 100) == 1
    assert node.read("TTL", "s", t=T0 + 100) == -1


def test_adding_members_keeps_the_expiry(node: Node) -> None:
    with_set(node, "s", "a")
    node.write("EXPIRE", "s", "100")
    node.write("SADD", "s", "b")
    node.write("SREM", "s", "a")
    assert node.read("TTL", "s") == 100


def test_del_exists_dbsize_keys_scan_randomkey(node: Node) -> None:
    with_set(node, "s", "a")
    node.write("SET", "k", "v")
    assert node.read("DBSIZE") == 2
    assert sorted(node.read("KEYS", "*")) == [b"k", b"s"]  # type: ignore[type-var]
    assert node.read("EXISTS", "s", "k", "s") == 3
    assert node.read("RANDOMKEY") in (b"s", b"k")
    cursor, keys = node.read("SCAN", "0", "COUNT", SHARD_COUNT)  # type: ignore[misc]
    assert cursor == b"0" and sorted(keys) == [b"k", b"s"]
    assert node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "set") == [b"0", [b"s"]]
    assert node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "string") == [b"0", [b"k"]]
    assert node.read("SCAN", "0", "COUNT", SHARD_COUNT, "TYPE", "hash") == [b"0", []]
    assert node.write("DEL", "s", "k") == 2
    assert node.read("DBSIZE") == 0


def test_rename_moves_a_set_with_its_order_and_expiry(node: Node) -> None:
    with_set(node, "s", "c", "a", "b")
    node.write("PEXPIRE", "s", "5000")
    node.write("SET", "t", "old")
    assert node.write("RENAME", "s", "t") == OK
    assert node.read("SMEMBERS", "t") == [b"c", b"a", b"b"]
    assert node.read("PTTL", "t") == 5000
    assert node.read("EXISTS", "s") == 0
    with_set(node, "u", "x")
    assert node.write("RENAMENX", "t", "u") == 0
    assert node.write("RENAMENX", "t", "v") == 1
    assert node.read("TYPE", "v") == Status("set")


def test_copy_of_a_set_is_independent(node: Node) -> None:
    with_set(node, "s", "a", "b")
    node.write("EXPIRE", "s", "50")
    assert node.write("COPY", "s", "c") == 1
    assert node.read("TTL", "c") == 50
    node.write("SADD", "c", "z")
    node.write("SREM", "s", "a")
    assert node.read("SMEMBERS", "s") == [b"b"]
    assert node.read("SMEMBERS", "c") == [b"a", b"b", b"z"]
    node.write("SET", "str", "v")
    assert node.write("COPY", "s", "str") == 0
    assert node.write("COPY", "s", "str", "REPLACE") == 1
    assert node.read("SMEMBERS", "str") == [b"b"]
    assert node.write("COPY", "str", "s2", "REPLACE") == 1


def test_flushall_removes_sets(node: Node) -> None:
    with_set(node, "s", *range(300))
    assert node.write("FLUSHALL") == OK
    assert node.read("DBSIZE") == 0
    assert node.state.used_bytes() == 0


def test_used_bytes_follows_set_members(node: Node) -> None:
    assert node.state.used_bytes() == 0
    with_set(node, "s", "a")
    one = node.state.used_bytes()
    node.write("SADD", "s", *[b"m%03d" % i for i in range(100)])
    many = node.state.used_bytes()
    assert many > one + 100 * 4
    node.write("SREM", "s", *[b"m%03d" % i for i in range(100)])
    assert node.state.used_bytes() == one
    node.write("DEL", "s")
    assert node.state.used_bytes() == 0


# ---- the size limit ----


@pytest.fixture
def small_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(set_commands, "SET_MEMBERS_MAX", 3)
    monkeypatch.setattr(set_commands, "SET_MEMBER_BYTES_MAX", 10)


@pytest.mark.usefixtures("small_sets")
def test_sadd_refuses_to_grow_a_set_past_the_limit(node: Node) -> None:
    too_big = err(set_commands.SET_TOO_BIG)
    assert node.write("SADD", "s", "a", "b", "c") == 3
    before = node.state.digest()
    assert node.write("SADD", "s", "d") == too_big
    assert node.write("SADD", "s", "a") == 0  # nothing new: no growth
    assert node.state.digest() == before
    assert node.write("SADD", "t", "0123456789x") == too_big  # 11 bytes of members
    assert node.read("EXISTS", "t") == 0


@pytest.mark.usefixtures("small_sets")
def test_smove_and_sunionstore_respect_the_limit(node: Node) -> None:
    too_big = err(set_commands.SET_TOO_BIG)
    node.write("SADD", "full", "a", "b", "c")
    node.write("SADD", "other", "d", "a")
    before = node.state.digest()
    assert node.write("SMOVE", "other", "full", "d") == too_big
    assert node.state.digest() == before
    assert node.write("SMOVE", "other", "full", "a") == 1  # already there: no growth
    assert node.write("SUNIONSTORE", "u", "full", "other") == too_big
    assert node.write("SINTERSTORE", "u", "full", "full") == 3
