"""Keyspace commands against KVState: DEL/EXISTS/TYPE, expiry, KEYS, SCAN, RENAME, COPY, ..."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.replies import NOT_INTEGER, OK, SYNTAX, Status, wrong_arity
from replikv.state import SHARD_COUNT, KVState

from .state_driver import T0, Node, err


@pytest.fixture
def node() -> Node:
    return Node()


def scan_all(node: Node, *options: object, t: int = T0) -> list[bytes]:
    cursor = b"0"
    found: list[bytes] = []
    for _ in range(SHARD_COUNT + 1):
        reply = node.read("SCAN", cursor, *options, t=t)
        assert isinstance(reply, list)
        cursor, keys = reply
        found.extend(keys)
        if cursor == b"0":
            return found
    raise AssertionError("SCAN did not finish")


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["DEL"], "del"),
        (["UNLINK"], "unlink"),
        (["EXISTS"], "exists"),
        (["TOUCH"], "touch"),
        (["TYPE"], "type"),
        (["TTL"], "ttl"),
        (["PTTL", "a", "b"], "pttl"),
        (["EXPIRETIME"], "expiretime"),
        (["PEXPIRETIME"], "pexpiretime"),
        (["EXPIRE", "k"], "expire"),
        (["PEXPIRE", "k"], "pexpire"),
        (["EXPIREAT", "k"], "expireat"),
        (["PEXPIREAT", "k"], "pexpireat"),
        (["PERSIST"], "persist"),
        (["KEYS"], "keys"),
        (["KEYS", "a", "b"], "keys"),
        (["SCAN"], "scan"),
        (["DBSIZE", "x"], "dbsize"),
        (["RANDOMKEY", "x"], "randomkey"),
        (["RENAME", "a"], "rename"),
        (["RENAMENX", "a", "b", "c"], "renamenx"),
        (["COPY", "a"], "copy"),
    ],
)
def test_wrong_arity(node: Node, argv: list[str], name: str) -> None:
    assert node.write(*argv) == err(wrong_arity(name))


# ---- DEL, UNLINK, EXISTS, TOUCH, TYPE ----


@pytest.mark.parametrize("command", ["DEL", "UNLINK"])
def test_del(node: Node, command: str) -> None:
    node.write("MSET", "a", "1", "b", "2")
    node.write("SET", "gone", "x", "PX", "10")
    assert node.write(command, "a", "a", "missing", "gone", t=T0 + 10) == 1
    assert node.write(command, "b") == 1
    assert node.state.key_count() == 0


def test_del_removes_the_expiry(node: Node) -> None:
    node.write("SET", "k", "v", "EX", "10")
    node.write("DEL", "k")
    node.write("SET", "k", "v")
    assert node.read("TTL", "k") == -1
    assert node.state.expires_count() == 0


@pytest.mark.parametrize("command", ["EXISTS", "TOUCH"])
def test_exists_counts_repeats(node: Node, command: str) -> None:
    node.write("SET", "a", "1")
    node.write("SET", "b", "1", "PX", "5")
    assert node.read(command, "a", "a", "x", "b") == 3
    assert node.read(command, "a", "a", "x", "b", t=T0 + 5) == 2


def test_type(node: Node) -> None:
    node.write("SET", "a", "1")
    assert node.read("TYPE", "a") == Status("string")
    assert isinstance(node.read("TYPE", "a"), Status)
    assert node.read("TYPE", "b") == Status("none")


# ---- TTL family ----


def test_ttl_and_pttl(node: Node) -> None:
    assert node.read("TTL", "k") == -2
    assert node.read("PTTL", "k") == -2
    node.write("SET", "k", "v")
    assert node.read("TTL", "k") == -1
    assert node.read("PTTL", "k") == -1
    node.write("PEXPIRE", "k", "10499")
    assert node.read("PTTL", "k") == 10499
    assert node.read("TTL", "k") == 10  # rounded to the nearest second, as Redis does
    node.write("PEXPIRE", "k", "10500")
    assert node.read("TTL", "k") == 11
    assert node.read("TTL", "k", t=T0 + 10500) == -2


def test_expiretime_and_pexpiretime(node: Node) -> None:
    assert node.read("EXPIRETIME", "k") == -2
    node.write("SET", "k", "v")
    assert node.read("PEXPIRETIME", "k") == -1
    node.write("PEXPIREAT", "k", "1700000000499")
    assert node.read("PEXPIRETIME", "k") == 1700000000499
    assert node.read("EXPIRETIME", "k") == 1700000000
    node.write("EXPIREAT", "k", "1700000001")
    assert node.read("EXPIRETIME", "k") == 1700000001
    assert node.read("PEXPIRETIME", "k") == 1700000001000


# ---- EXPIRE family ----


@pytest.mark.parametrize(
    ("command", "amount", "pexpiretime"),
    [
        ("EXPIRE", "10", T0 + 10_000),
        ("PEXPIRE", "10", T0 + 10),
        ("EXPIREAT", str(T0 // 1000 + 7), T0 + 7000),
        ("PEXPIREAT", str(T0 + 7), T0 + 7),
    ],
)
def test_expire_commands(node: Node, command: str, amount: str, pexpiretime: int) -> None:
    assert node.write(command, "k", amount) == 0  # missing key
    node.write("SET", "k", "v")
    assert node.write(command, "k", amount) == 1
    assert node.read("PEXPIRETIME", "k") == pexpiretime


@pytest.mark.parametrize(
    ("command", "amount"),
    [
        ("EXPIRE", "0"),
        ("EXPIRE", "-10"),
        ("PEXPIRE", "0"),
        ("EXPIREAT", "1"),
        ("PEXPIREAT", str(T0)),
        ("PEXPIREAT", "-5"),
    ],
)
def test_expire_in_the_past_deletes_and_returns_one(node: Node, command: str, amount: str) -> None:
    node.write("SET", "k", "v")
    assert node.write(command, "k", amount) == 1
    assert node.read("EXISTS", "k") == 0
    assert node.state.key_count() == 0


def test_expire_nx_xx(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.write("EXPIRE", "k", "100", "XX") == 0
    assert node.write("EXPIRE", "k", "100", "NX") == 1
    assert node.write("EXPIRE", "k", "200", "NX") == 0
    assert node.write("EXPIRE", "k", "200", "XX") == 1
    assert node.read("TTL", "k") == 200


def test_expire_gt_lt(node: Node) -> None:
    node.write("SET", "k", "v")
    # No expiry counts as infinite: GT never applies, LT always does.
    assert node.write("EXPIRE", "k", "100", "GT") == 0
    assert node.write("EXPIRE", "k", "100", "LT") == 1
    assert node.write("EXPIRE", "k", "50", "GT") == 0
    assert node.write("EXPIRE", "k", "100", "GT") == 0  # equal is not greater
    assert node.write("EXPIRE", "k", "150", "GT") == 1
    assert node.write("EXPIRE", "k", "150", "LT") == 0
    assert node.write("EXPIRE", "k", "120", "lt", "xx") == 1
    assert node.read("TTL", "k") == 120


def test_expire_option_errors(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.write("EXPIRE", "k", "10", "FOO") == err("ERR Unsupported option FOO")
    nx_error = err("ERR NX and XX, GT or LT options at the same time are not compatible")
    assert node.write("EXPIRE", "k", "10", "NX", "XX") == nx_error
    assert node.write("EXPIRE", "k", "10", "GT", "NX") == nx_error
    gt_lt = err("ERR GT and LT options at the same time are not compatible")
    assert node.write("EXPIRE", "k", "10", "GT", "LT") == gt_lt
    # Options are checked before the number, as Redis does.
    assert node.write("EXPIRE", "k", "ten", "FOO") == err("ERR Unsupported option FOO")
    assert node.write("EXPIRE", "k", "ten") == err(NOT_INTEGER)
    assert node.read("TTL", "k") == -1


@pytest.mark.parametrize(
    ("command", "amount"),
    [
        ("EXPIRE", str(2**63 // 1000 + 1)),
        ("EXPIRE", str(-(2**63) // 1000 - 1)),
        ("EXPIREAT", str(2**63 // 1000 + 1)),
        ("PEXPIRE", str(2**63 - 1)),  # overflows once the time is added
    ],
)
def test_expire_overflow(node: Node, command: str, amount: str) -> None:
    node.write("SET", "k", "v")
    reply = node.write(command, "k", amount)
    assert reply == err(f"ERR invalid expire time in '{command.lower()}' command")
    assert node.read("TTL", "k") == -1


def test_persist(node: Node) -> None:
    assert node.write("PERSIST", "k") == 0
    node.write("SET", "k", "v")
    assert node.write("PERSIST", "k") == 0
    node.write("EXPIRE", "k", "10")
    assert node.write("PERSIST", "k") == 1
    assert node.read("TTL", "k") == -1
    assert node.state.expires_count() == 0


def test_persist_cannot_revive_an_expired_key(node: Node) -> None:
    node.write("SET", "k", "v", "PX", "10")
    assert node.write("PERSIST", "k", t=T0 + 10) == 0
    assert node.read("GET", "k", t=T0 + 10) is None


# ---- KEYS ----


def test_keys(node: Node) -> None:
    node.write("MSET", "hello", "1", "hallo", "2", "hxllo", "3", "hllo", "4", "heeeello", "5")
    assert sorted(node.read("KEYS", "h?llo")) == [b"hallo", b"hello", b"hxllo"]
    assert sorted(node.read("KEYS", "h*llo")) == [
        b"hallo",
        b"heeeello",
        b"hello",
        b"hllo",
        b"hxllo",
    ]
    assert sorted(node.read("KEYS", "h[ae]llo")) == [b"hallo", b"hello"]
    assert sorted(node.read("KEYS", "h[^e]llo")) == [b"hallo", b"hxllo"]
    assert sorted(node.read("KEYS", "h[a-b]llo")) == [b"hallo"]
    assert len(node.read("KEYS", "*")) == 5
    assert node.read("KEYS", "nothing*") == []


# Few distinct bytes, the highest ones among them, so keys share prefixes and bisection meets
# the 0xff edge (a prefix with no successor).
_KEY_BYTES = st.sampled_from([0x61, 0x62, 0xFE, 0xFF])


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.lists(_KEY_BYTES, max_size=4).map(bytes), max_size=40),
       prefix=st.lists(_KEY_BYTES, min_size=1, max_size=3).map(bytes),
       expired=st.sets(st.integers(0, 39), max_size=10))
def test_keys_with_a_literal_prefix_is_exactly_the_keys_starting_with_it(
        keys: list[bytes], prefix: bytes, expired: set[int]) -> None:
    """KEYS prefix* takes a range of each sorted shard by bisection; it must answer what the
    general matcher does, in the same order: prefixes ending in 0xff bytes, the prefix as a
    whole key, expired keys."""
    from replikv.commands.glob import GlobPattern
    from replikv.commands.keys import parse_keys_pattern, run_keys

    state = KVState()
    for i, key in enumerate(keys):
        state.apply_command([b"SET", key, b"v", b"PXAT", b"%d" % (T0 + 5)] if i in expired
                            else [b"SET", key, b"v"], T0)
    for t in (T0, T0 + 10):
        parsed = parse_keys_pattern([b"KEYS", prefix + b"*"])
        assert parsed[1] == prefix  # the fast path is taken
        general = GlobPattern(prefix + b"*").matches
        expected = [k for k in state.keys_matching(t) if general(k)]
        assert run_keys(state, parsed, t) == expected
        assert expected == [k for k in state.keys_matching(t) if k.startswith(prefix)]


@pytest.mark.parametrize("pattern, prefix", [
    (b"user:*", b"user:"), (b"*", None), (b"a*b*", None), (b"a?*", None), (b"a[b]*", None),
    (b"a\\**", None), (b"user:", None), (b"\xff\xff*", b"\xff\xff")])
def test_only_a_literal_prefix_and_one_trailing_star_take_the_fast_path(pattern, prefix) -> None:
    from replikv.commands.glob import literal_prefix

    assert literal_prefix(pattern) == prefix


def test_keys_star_includes_the_empty_key_and_skips_expired(node: Node) -> None:
    node.write("SET", "", "empty")
    node.write("SET", "short", "x", "PX", "1")
    assert sorted(node.read("KEYS", "*")) == [b"", b"short"]
    assert node.read("KEYS", "*", t=T0 + 1) == [b""]


# ---- SCAN ----


def test_scan_visits_every_key_once_when_nothing_changes(node: Node) -> None:
    keys = [b"key:%d" % i for i in range(2000)]
    for key in keys:
        node.write("SET", key, "v")
    found = scan_all(node)
    assert sorted(found) == sorted(keys)
    assert len(found) == len(set(found))


def test_scan_count_is_a_lower_bound_per_call(node: Node) -> None:
    for i in range(500):
        node.write("SET", f"key:{i}", "v")
    cursor, keys = node.read("SCAN", "0", "COUNT", "100")
    assert len(keys) >= 100
    assert int(cursor) > 0
    cursor, keys = node.read("SCAN", "0", "COUNT", "1000000")
    assert (cursor, len(keys)) == (b"0", 500)


def test_scan_count_is_capped_so_one_call_stays_short(node: Node) -> None:
    """COUNT is a hint: a call visits at most SCAN_COUNT_MAX keys (in whole shards), and
    following the cursor still returns every key exactly once."""
    from replikv.commands.keys import SCAN_COUNT_MAX

    total = SCAN_COUNT_MAX * 3 // 2
    node.state.apply_command([b"MSET", *[x for i in range(total) for x in (b"k%d" % i, b"v")]],
                             T0)
    cursor, first = node.read("SCAN", 0, "COUNT", 10**12)
    per_shard = total / SHARD_COUNT
    assert cursor != b"0" and SCAN_COUNT_MAX <= len(first) < SCAN_COUNT_MAX + 3 * per_shard
    seen = list(first)
    while cursor != b"0":
        cursor, found = node.read("SCAN", cursor, "COUNT", 10**12)
        seen += found
    assert len(seen) == len(set(seen)) == total


def test_sscan_count_is_capped_too(node: Node) -> None:
    from replikv.commands.keys import SCAN_COUNT_MAX

    total = SCAN_COUNT_MAX * 3 // 2
    node.state.apply_command([b"SADD", b"s", *[b"m%d" % i for i in range(total)]], T0)
    cursor, first = node.read("SSCAN", "s", 0, "COUNT", 10**12)
    assert cursor != b"0" and len(first) < total


def test_scan_default_count_is_ten(node: Node) -> None:
    for i in range(500):
        node.write("SET", f"key:{i}", "v")
    _, keys = node.read("SCAN", "0")
    assert 10 <= len(keys) < 20  # whole shards of ~1 key each until 10 were seen


def test_scan_cursor_always_advances(node: Node) -> None:
    for i in range(300):
        node.write("SET", f"key:{i}", "v")
    cursor = 0
    while True:
        next_cursor = int(node.read("SCAN", cursor, "COUNT", "7")[0])
        if next_cursor == 0:
            break
        assert next_cursor > cursor
        cursor = next_cursor


def test_scan_match_and_type(node: Node) -> None:
    node.write("MSET", "user:1", "a", "user:2", "b", "order:1", "c")
    assert sorted(scan_all(node, "MATCH", "user:*")) == [b"user:1", b"user:2"]
    assert sorted(scan_all(node, "match", "*", "count", "3")) == [b"order:1", b"user:1", b"user:2"]
    assert sorted(scan_all(node, "TYPE", "STRING")) == [b"order:1", b"user:1", b"user:2"]
    assert scan_all(node, "TYPE", "hash") == []
    assert scan_all(node, "TYPE", "list", "MATCH", "user:*") == []


def test_scan_skips_expired_keys(node: Node) -> None:
    node.write("SET", "a", "1", "PX", "10")
    node.write("SET", "b", "1")
    assert scan_all(node, t=T0 + 10) == [b"b"]


def test_scan_empty_database(node: Node) -> None:
    assert node.read("SCAN", "0") == [b"0", []]


@pytest.mark.parametrize("cursor", ["4096", "99999", "18446744073709551615"])
def test_scan_out_of_range_cursor_ends_the_scan(node: Node, cursor: str) -> None:
    node.write("SET", "a", "1")
    assert node.read("SCAN", cursor) == [b"0", []]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "", "18446744073709551616", " 1"])
def test_scan_invalid_cursor(node: Node, cursor: str) -> None:
    assert node.read("SCAN", cursor) == err("ERR invalid cursor")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["COUNT", "0"], SYNTAX),
        (["COUNT", "-1"], SYNTAX),
        (["COUNT", "abc"], NOT_INTEGER),
        (["COUNT"], SYNTAX),
        (["MATCH"], SYNTAX),
        (["TYPE"], SYNTAX),
        (["BOGUS", "1"], SYNTAX),
        (["TYPE", "nosuchtype"], "ERR unknown type name 'nosuchtype'"),
        (["NOVALUES"], "ERR NOVALUES option can only be used in HSCAN"),
    ],
)
def test_scan_option_errors(node: Node, options: list[str], error: str) -> None:
    assert node.read("SCAN", "0", *options) == err(error)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_scan_returns_every_key_present_throughout(data: st.DataObject) -> None:
    node = Node()
    stable = data.draw(st.lists(st.binary(max_size=8), unique=True, max_size=200), label="stable")
    churn_pool = [b"churn:%d" % i for i in range(400)]
    for key in stable:
        node.write("SET", b"s:" + key, "v")
    for key in churn_pool[: data.draw(st.integers(0, 400), label="initial churn")]:
        node.write("SET", key, "v")
    cursor = b"0"
    seen: set[bytes] = set()
    for _ in range(SHARD_COUNT + 1):
        count = data.draw(st.integers(1, 50), label="count")
        cursor, keys = node.read("SCAN", cursor, "COUNT", count)
        seen.update(keys)
        if cursor == b"0":
            break
        # Other keys come and go between the calls, growing and shrinking the shards.
        for _ in range(data.draw(st.integers(0, 30), label="changes")):
            key = data.draw(st.sampled_from(churn_pool), label="churn key")
            if data.draw(st.booleans(), label="insert"):
                node.write("SET", key, "v")
            else:
                node.write("DEL", key)
    assert cursor == b"0"
    assert {b"s:" + key for key in stable} <= seen


# ---- DBSIZE, RANDOMKEY, FLUSHALL ----


def test_dbsize_counts_keys_not_yet_expired_through_the_log(node: Node) -> None:
    assert node.read("DBSIZE") == 0
    node.write("MSET", "a", "1", "b", "2")
    node.write("SET", "c", "3", "PX", "1")
    assert node.read("DBSIZE") == 3
    # Like Redis, DBSIZE counts a key whose expiry passed until it is actually deleted.
    assert node.read("DBSIZE", t=T0 + 5) == 3
    node.state.apply_expire(node.state.expired_keys(T0 + 5, 10), T0 + 5)
    assert node.read("DBSIZE", t=T0 + 5) == 2


def test_randomkey(node: Node) -> None:
    assert node.read("RANDOMKEY") is None
    keys = {b"key:%d" % i for i in range(50)}
    for key in sorted(keys):
        node.write("SET", key, "v")
    chosen = {node.read("RANDOMKEY", t=T0 + i) for i in range(200)}
    assert chosen <= keys
    assert len(chosen) > 10  # spread over many keys as the time moves
    assert node.read("RANDOMKEY", t=T0 + 3) == node.read("RANDOMKEY", t=T0 + 3)


def test_randomkey_skips_expired_keys(node: Node) -> None:
    for i in range(20):
        node.write("SET", f"dead:{i}", "v", "PX", "5")
    assert node.read("RANDOMKEY", t=T0 + 5) is None
    node.write("SET", "alive", "v", t=T0 + 5)
    for t in range(T0 + 5, T0 + 50):
        assert node.read("RANDOMKEY", t=t) == b"alive"


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB"])
@pytest.mark.parametrize("option", [[], ["ASYNC"], ["sync"]])
def test_flush(node: Node, command: str, option: list[str]) -> None:
    node.write("MSET", "a", "1", "b", "2")
    node.write("SET", "c", "3", "EX", "10")
    assert node.write(command, *option) == OK
    assert node.read("DBSIZE") == 0
    assert node.state.expires_count() == 0
    assert node.state.expired_keys(T0 + 100_000, 10) == []
    assert node.state.digest() == KVState().digest()


@pytest.mark.parametrize("option", [["LAZY"], ["ASYNC", "SYNC"]])
def test_flush_syntax_error(node: Node, option: list[str]) -> None:
    node.write("SET", "a", "1")
    assert node.write("FLUSHALL", *option) == err(SYNTAX)
    assert node.read("DBSIZE") == 1


# ---- RENAME, RENAMENX ----


def test_rename(node: Node) -> None:
    node.write("SET", "a", "1", "PX", "500")
    node.write("SET", "b", "2", "EX", "100")
    assert node.write("RENAME", "a", "b") == OK
    assert node.read("MGET", "a", "b") == [None, b"1"]
    assert node.read("PTTL", "b") == 500  # the source's expiry moves with it
    node.write("SET", "c", "3")
    assert node.write("RENAME", "b", "d") == OK
    assert node.write("RENAME", "c", "d") == OK
    assert node.read("TTL", "d") == -1  # the old destination's expiry is gone
    assert node.state.expires_count() == 0


def test_rename_missing_and_same_key(node: Node) -> None:
    assert node.write("RENAME", "a", "b") == err("ERR no such key")
    assert node.write("RENAME", "a", "a") == err("ERR no such key")
    node.write("SET", "a", "1")
    assert node.write("RENAME", "a", "a") == OK
    assert node.read("GET", "a") == b"1"


def test_rename_expired_source_is_missing(node: Node) -> None:
    node.write("SET", "a", "1", "PX", "10")
    assert node.write("RENAME", "a", "b", t=T0 + 10) == err("ERR no such key")


def test_renamenx(node: Node) -> None:
    node.write("SET", "a", "1")
    node.write("SET", "b", "2")
    assert node.write("RENAMENX", "a", "b") == 0
    assert node.write("RENAMENX", "a", "a") == 0
    assert node.write("RENAMENX", "a", "c") == 1
    assert node.read("MGET", "a", "b", "c") == [None, b"2", b"1"]
    assert node.write("RENAMENX", "zz", "c") == err("ERR no such key")


def test_renamenx_over_an_expired_destination(node: Node) -> None:
    node.write("SET", "a", "1")
    node.write("SET", "b", "2", "PX", "10")
    assert node.write("RENAMENX", "a", "b", t=T0 + 10) == 1
    assert node.read("TTL", "b", t=T0 + 10) == -1


# ---- COPY ----


def test_copy(node: Node) -> None:
    node.write("SET", "a", "1", "PX", "700")
    assert node.write("COPY", "a", "b") == 1
    assert node.read("MGET", "a", "b") == [b"1", b"1"]
    assert node.read("PTTL", "b") == 700
    node.write("SET", "a", "2")
    assert node.write("COPY", "a", "b") == 0
    assert node.write("COPY", "a", "b", "REPLACE") == 1
    assert node.read("GET", "b") == b"2"
    assert node.read("TTL", "b") == -1
    assert node.write("COPY", "missing", "b", "REPLACE") == 0
    assert node.write("COPY", "a", "c", "DB", "0", "replace") == 1


def test_copy_errors(node: Node) -> None:
    node.write("SET", "a", "1")
    same = err("ERR source and destination objects are the same")
    assert node.write("COPY", "a", "a") == same
    assert node.write("COPY", "missing", "missing") == same
    assert node.write("COPY", "a", "b", "DB", "1") == err("ERR DB index is out of range")
    assert node.write("COPY", "a", "b", "DB", "x") == err(NOT_INTEGER)
    assert node.write("COPY", "a", "b", "DB") == err(SYNTAX)
    assert node.write("COPY", "a", "b", "BOGUS") == err(SYNTAX)
    assert node.read("EXISTS", "b") == 0
