"""String commands against KVState: happy paths, every option, error texts, expiry interplay.

Writes go through `apply_command` (the replicated path, at the entry's time) and reads through
`execute_read` (local, at the node's time), exactly as the node uses them.
"""

from __future__ import annotations

import pytest

from replikv.commands import strings
from replikv.replies import NOT_FLOAT, NOT_INTEGER, OK, OVERFLOW, SYNTAX, ErrorReply, wrong_arity

from .state_driver import T0, Node, err


@pytest.fixture
def node() -> Node:
    return Node()


def invalid_expire(command: str) -> ErrorReply:
    return ErrorReply(f"ERR invalid expire time in '{command}' command")


# ---- GET / SET ----


def test_get_missing_is_none(node: Node) -> None:
    assert node.read("GET", "k") is None


def test_set_then_get(node: Node) -> None:
    assert node.write("SET", "k", "v") == OK
    assert node.read("GET", "k") == b"v"
    assert node.write("SET", "k", "w") == OK
    assert node.read("GET", "k") == b"w"


def test_set_binary_key_and_value(node: Node) -> None:
    assert node.write("SET", b"\x00\xff\r\n", b"\x00v\r\n") == OK
    assert node.read("GET", b"\x00\xff\r\n") == b"\x00v\r\n"


def test_set_empty_value(node: Node) -> None:
    assert node.write("SET", "k", "") == OK
    assert node.read("GET", "k") == b""
    assert node.read("EXISTS", "k") == 1


def test_set_options_are_case_insensitive(node: Node) -> None:
    assert node.write("set", "k", "v", "nx", "px", "100") == OK
    assert node.read("PTTL", "k") == 100


def test_set_discards_previous_ttl(node: Node) -> None:
    node.write("SET", "k", "v", "EX", "10")
    node.write("SET", "k", "w")
    assert node.read("TTL", "k") == -1


def test_set_nx(node: Node) -> None:
    assert node.write("SET", "k", "v", "NX") == OK
    assert node.write("SET", "k", "w", "NX") is None
    assert node.read("GET", "k") == b"v"


def test_set_xx(node: Node) -> None:
    assert node.write("SET", "k", "v", "XX") is None
    assert node.read("EXISTS", "k") == 0
    node.write("SET", "k", "v")
    assert node.write("SET", "k", "w", "XX") == OK
    assert node.read("GET", "k") == b"w"


def test_set_ifeq_is_compare_and_set(node: Node) -> None:
    assert node.write("SET", "k", "v", "IFEQ", "v") is None  # missing: not created
    assert node.read("EXISTS", "k") == 0
    node.write("SET", "k", "old")
    assert node.write("SET", "k", "new", "IFEQ", "other") is None
    assert node.read("GET", "k") == b"old"
    assert node.write("SET", "k", "new", "IFEQ", "old") == OK
    assert node.read("GET", "k") == b"new"


def test_set_ifne(node: Node) -> None:
    assert node.write("SET", "k", "v", "IFNE", "x") == OK  # missing: created
    assert node.write("SET", "k", "w", "IFNE", "v") is None
    assert node.read("GET", "k") == b"v"
    assert node.write("SET", "k", "w", "IFNE", "zzz") == OK
    assert node.read("GET", "k") == b"w"


def test_set_get_returns_old_value(node: Node) -> None:
    assert node.write("SET", "k", "v", "GET") is None
    assert node.write("SET", "k", "w", "GET") == b"v"
    assert node.read("GET", "k") == b"w"


def test_set_get_with_failed_condition_returns_old_value_and_keeps_it(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.write("SET", "k", "w", "NX", "GET") == b"v"
    assert node.write("SET", "k", "w", "IFEQ", "nope", "GET") == b"v"
    assert node.read("GET", "k") == b"v"
    assert node.write("SET", "k", "w", "IFEQ", "v", "GET") == b"v"
    assert node.read("GET", "k") == b"w"
    assert node.write("SET", "missing", "w", "XX", "GET") is None
    assert node.read("EXISTS", "missing") == 0


@pytest.mark.parametrize(
    ("option", "amount", "pttl"),
    [("EX", "10", 10_000), ("PX", "1500", 1500), ("EXAT", str(T0 // 1000 + 20), 20_000)],
)
def test_set_expire_options(node: Node, option: str, amount: str, pttl: int) -> None:
    assert node.write("SET", "k", "v", option, amount) == OK
    assert node.read("PTTL", "k") == pttl


def test_set_pxat(node: Node) -> None:
    assert node.write("SET", "k", "v", "PXAT", T0 + 1234) == OK
    assert node.read("PEXPIRETIME", "k") == T0 + 1234


def test_set_absolute_expiry_in_the_past_leaves_no_key(node: Node) -> None:
    node.write("SET", "k", "old")
    assert node.write("SET", "k", "v", "PXAT", T0 - 1) == OK
    assert node.read("EXISTS", "k") == 0
    assert node.state.key_count() == 0
    node.write("SET", "k", "old")
    assert node.write("SET", "k", "v", "EXAT", "1", "GET") == b"old"
    assert node.read("GET", "k") is None
    assert node.write("SET", "k", "v", "PXAT", T0) == OK  # expiry == now is expired
    assert node.read("GET", "k") is None


def test_set_keepttl(node: Node) -> None:
    node.write("SET", "k", "v", "PX", "5000")
    assert node.write("SET", "k", "w", "KEEPTTL", t=T0 + 1000) == OK
    assert node.read("GET", "k", t=T0 + 1000) == b"w"
    assert node.read("PTTL", "k", t=T0 + 1000) == 4000
    assert node.write("SET", "fresh", "v", "KEEPTTL") == OK
    assert node.read("TTL", "fresh") == -1


def test_set_repeated_options_last_one_wins(node: Node) -> None:
    assert node.write("SET", "k", "v", "NX", "NX", "GET", "GET") is None
    assert node.write("SET", "k2", "v", "EX", "10", "EX", "20") == OK
    assert node.read("TTL", "k2") == 20


@pytest.mark.parametrize(
    "options",
    [
        ["NX", "XX"],
        ["XX", "NX"],
        ["NX", "IFEQ", "v"],
        ["IFEQ", "v", "IFNE", "v"],
        ["IFNE", "v", "XX"],
        ["EX", "10", "PX", "100"],
        ["PX", "10", "EXAT", "100"],
        ["EX", "10", "KEEPTTL"],
        ["KEEPTTL", "PX", "10"],
        ["EX"],
        ["IFEQ"],
        ["PERSIST"],
        ["BOGUS"],
        ["NX", "EX"],
    ],
)
def test_set_syntax_errors(node: Node, options: list[str]) -> None:
    assert node.write("SET", "k", "v", *options) == err(SYNTAX)
    assert node.state.key_count() == 0


@pytest.mark.parametrize(
    ("option", "amount"),
    [
        ("EX", "0"),
        ("EX", "-5"),
        ("PX", "0"),
        ("PXAT", "-1"),
        ("EXAT", "0"),
        ("EX", str(2**63 // 1000 + 1)),  # seconds * 1000 overflows
    ],
)
def test_set_invalid_expire_time(node: Node, option: str, amount: str) -> None:
    assert node.write("SET", "k", "v", option, amount) == invalid_expire("set")


def test_set_relative_expire_overflowing_with_the_time(node: Node) -> None:
    assert node.write("SET", "k", "v", "PX", str(2**63 - 1)) == invalid_expire("set")
    assert node.write("SET", "k", "v", "PXAT", str(2**63 - 1)) == OK


def test_set_expire_not_an_integer(node: Node) -> None:
    assert node.write("SET", "k", "v", "EX", "1.5") == err(NOT_INTEGER)
    assert node.write("SET", "k", "v", "PX", "abc") == err(NOT_INTEGER)


def test_set_bad_expire_is_refused_at_parse_time() -> None:
    from replikv.commands import parse_command
    from replikv.replies import CommandError

    with pytest.raises(CommandError):
        parse_command([b"SET", b"k", b"v", b"EX", b"0"])


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["GET"], "get"),
        (["GET", "a", "b"], "get"),
        (["SET", "k"], "set"),
        (["SETNX", "k"], "setnx"),
        (["SETEX", "k", "1"], "setex"),
        (["PSETEX", "k", "1"], "psetex"),
        (["GETSET", "k"], "getset"),
        (["GETDEL"], "getdel"),
        (["GETEX"], "getex"),
        (["MGET"], "mget"),
        (["MSET", "k"], "mset"),
        (["MSET", "k", "v", "k2"], "mset"),
        (["MSETNX", "k", "v", "k2"], "msetnx"),
        (["INCR"], "incr"),
        (["DECR", "a", "b"], "decr"),
        (["INCRBY", "k"], "incrby"),
        (["DECRBY", "k"], "decrby"),
        (["INCRBYFLOAT", "k"], "incrbyfloat"),
        (["APPEND", "k"], "append"),
        (["STRLEN"], "strlen"),
        (["GETRANGE", "k", "0"], "getrange"),
        (["SETRANGE", "k", "0"], "setrange"),
    ],
)
def test_wrong_arity(node: Node, argv: list[str], name: str) -> None:
    reply = node.write(*argv)
    assert reply == err(wrong_arity(name))


# ---- SETNX, SETEX, PSETEX, GETSET, GETDEL ----


def test_setnx(node: Node) -> None:
    assert node.write("SETNX", "k", "v") == 1
    assert node.write("SETNX", "k", "w") == 0
    assert node.read("GET", "k") == b"v"


def test_setex_and_psetex(node: Node) -> None:
    assert node.write("SETEX", "k", "10", "v") == OK
    assert node.read("GET", "k") == b"v"
    assert node.read("PTTL", "k") == 10_000
    assert node.write("PSETEX", "p", "250", "v") == OK
    assert node.read("PTTL", "p") == 250


@pytest.mark.parametrize("command", ["SETEX", "PSETEX"])
def test_setex_errors(node: Node, command: str) -> None:
    name = command.lower()
    assert node.write(command, "k", "0", "v") == invalid_expire(name)
    assert node.write(command, "k", "-1", "v") == invalid_expire(name)
    assert node.write(command, "k", "ten", "v") == err(NOT_INTEGER)
    assert node.state.key_count() == 0


def test_getset(node: Node) -> None:
    assert node.write("GETSET", "k", "v") is None
    node.write("EXPIRE", "k", "100")
    assert node.write("GETSET", "k", "w") == b"v"
    assert node.read("GET", "k") == b"w"
    assert node.read("TTL", "k") == -1  # GETSET discards the time to live


def test_getdel(node: Node) -> None:
    assert node.write("GETDEL", "k") is None
    node.write("SET", "k", "v", "EX", "10")
    assert node.write("GETDEL", "k") == b"v"
    assert node.read("EXISTS", "k") == 0
    assert node.state.expires_count() == 0


# ---- GETEX ----


def test_getex_without_options_is_get(node: Node) -> None:
    node.write("SET", "k", "v", "PX", "500")
    assert node.write("GETEX", "k") == b"v"
    assert node.read("PTTL", "k") == 500


@pytest.mark.parametrize(
    ("option", "amount", "pttl"),
    [("EX", "3", 3000), ("PX", "70", 70), ("EXAT", str(T0 // 1000 + 4), 4000)],
)
def test_getex_sets_expiry(node: Node, option: str, amount: str, pttl: int) -> None:
    node.write("SET", "k", "v")
    assert node.write("GETEX", "k", option, amount) == b"v"
    assert node.read("PTTL", "k") == pttl


def test_getex_pxat_and_persist(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.write("GETEX", "k", "PXAT", T0 + 99) == b"v"
    assert node.read("PEXPIRETIME", "k") == T0 + 99
    assert node.write("GETEX", "k", "PERSIST") == b"v"
    assert node.read("TTL", "k") == -1


def test_getex_past_absolute_time_deletes(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.write("GETEX", "k", "PXAT", T0 - 10) == b"v"
    assert node.read("EXISTS", "k") == 0


def test_getex_missing_key_is_nil_even_with_a_bad_number(node: Node) -> None:
    # Redis looks the key up before it checks the number.
    assert node.write("GETEX", "nope", "EX", "0") is None
    assert node.write("GETEX", "nope", "EX", "abc") is None


def test_getex_number_errors_on_existing_key(node: Node) -> None:
    node.write("SET", "k", "v")
    assert node.write("GETEX", "k", "EX", "0") == invalid_expire("getex")
    assert node.write("GETEX", "k", "PX", "x") == err(NOT_INTEGER)
    assert node.read("TTL", "k") == -1


@pytest.mark.parametrize(
    "options",
    [
        ["NX"],
        ["XX"],
        ["GET"],
        ["KEEPTTL"],
        ["EX"],
        ["EX", "1", "PX", "1"],
        ["EX", "1", "PERSIST"],
        ["PERSIST", "EX", "1"],
        ["BOGUS"],
    ],
)
def test_getex_syntax_errors(node: Node, options: list[str]) -> None:
    node.write("SET", "k", "v")
    assert node.write("GETEX", "k", *options) == err(SYNTAX)


# ---- MGET, MSET, MSETNX ----


def test_mget(node: Node) -> None:
    node.write("SET", "a", "1")
    node.write("SET", "c", "3", "PX", "10")
    assert node.read("MGET", "a", "b", "c", "a") == [b"1", None, b"3", b"1"]
    assert node.read("MGET", "a", "b", "c", t=T0 + 10) == [b"1", None, None]


def test_mset(node: Node) -> None:
    node.write("SET", "a", "old", "EX", "100")
    assert node.write("MSET", "a", "1", "b", "2", "b", "3") == OK
    assert node.read("MGET", "a", "b") == [b"1", b"3"]
    assert node.read("TTL", "a") == -1


def test_msetnx_is_all_or_nothing(node: Node) -> None:
    assert node.write("MSETNX", "a", "1", "b", "2") == 1
    assert node.write("MSETNX", "b", "x", "c", "3") == 0
    assert node.read("MGET", "a", "b", "c") == [b"1", b"2", None]
    assert node.write("MSETNX", "d", "1", "d", "2") == 1
    assert node.read("GET", "d") == b"2"


# ---- INCR family ----


def test_incr_decr(node: Node) -> None:
    assert node.write("INCR", "n") == 1
    assert node.write("INCR", "n") == 2
    assert node.write("DECR", "n") == 1
    assert node.write("INCRBY", "n", "10") == 11
    assert node.write("DECRBY", "n", "20") == -9
    assert node.write("DECR", "m") == -1
    assert node.read("GET", "n") == b"-9"


def test_incr_keeps_ttl(node: Node) -> None:
    node.write("SET", "n", "5", "PX", "1000")
    assert node.write("INCR", "n") == 6
    assert node.read("PTTL", "n") == 1000


@pytest.mark.parametrize(
    "value",
    [b"abc", b"", b" 1", b"1 ", b"+1", b"01", b"-0", b"1.0", b"1e3", b"9223372036854775808", b"-"],
)
def test_incr_non_integer_value(node: Node, value: bytes) -> None:
    node.write("SET", "n", value)
    assert node.write("INCR", "n") == err(NOT_INTEGER)
    assert node.read("GET", "n") == value


@pytest.mark.parametrize("increment", ["abc", "1.5", "", "+1", "9223372036854775808"])
def test_incrby_non_integer_increment(node: Node, increment: str) -> None:
    assert node.write("INCRBY", "n", increment) == err(NOT_INTEGER)
    assert node.write("DECRBY", "n", increment) == err(NOT_INTEGER)


def test_incr_extremes_and_overflow(node: Node) -> None:
    node.write("SET", "n", "9223372036854775806")
    assert node.write("INCR", "n") == 2**63 - 1
    assert node.write("INCR", "n") == err(OVERFLOW)
    assert node.read("GET", "n") == b"9223372036854775807"
    node.write("SET", "m", "-9223372036854775807")
    assert node.write("DECR", "m") == -(2**63)
    assert node.write("DECR", "m") == err(OVERFLOW)
    assert node.write("INCRBY", "m", "-1") == err(OVERFLOW)
    node.write("SET", "z", "1")
    assert node.write("INCRBY", "z", "9223372036854775807") == err(OVERFLOW)


def test_decrby_int64_min(node: Node) -> None:
    assert node.write("DECRBY", "n", "-9223372036854775808") == err("ERR decrement would overflow")
    assert node.write("INCRBY", "n", "-9223372036854775808") == -(2**63)


# ---- INCRBYFLOAT ----


@pytest.mark.parametrize(
    ("start", "increment", "result"),
    [
        (b"10.50", b"0.1", b"10.6"),  # Redis documentation example
        (b"5.0e3", b"2.0e2", b"5200"),  # Redis documentation example
        (b"3.0", b"0", b"3"),
        (b"0.1", b"0.2", b"0.3"),
        (b"1", b"-1", b"0"),
        (b"-1", b"0.5", b"-0.5"),
        (b"0", b"1e-20", b"0"),  # rounded to 17 places like %.17Lf
        (b"0", b"-1e-20", b"0"),  # never "-0"
        (b"0", b"1.5e-17", b"0.00000000000000002"),
        (b"1", b".5", b"1.5"),
        (b"1", b"5.", b"6"),
        (b"1", b"+5", b"6"),
        (b"0", b"1e30", b"1000000000000000000000000000000"),
    ],
)
def test_incrbyfloat(node: Node, start: bytes, increment: bytes, result: bytes) -> None:
    node.write("SET", "f", start)
    assert node.write("INCRBYFLOAT", "f", increment) == result
    assert node.read("GET", "f") == result


def test_incrbyfloat_missing_key_and_ttl(node: Node) -> None:
    assert node.write("INCRBYFLOAT", "f", "2.5") == b"2.5"
    node.write("PEXPIRE", "f", "300")
    assert node.write("INCRBYFLOAT", "f", "1") == b"3.5"
    assert node.read("PTTL", "f") == 300


@pytest.mark.parametrize(
    "bad", [b"abc", b"", b" 1", b"1 ", b"nan", b"1e", b"0x10", b"1e5000", b"1e-5000", b"--1"]
)
def test_incrbyfloat_not_a_float(node: Node, bad: bytes) -> None:
    assert node.write("INCRBYFLOAT", "f", bad) == err(NOT_FLOAT)
    node.write("SET", "g", bad)
    assert node.write("INCRBYFLOAT", "g", "1") == err(NOT_FLOAT)
    assert node.read("GET", "g") == bad


def test_incrbyfloat_infinity(node: Node) -> None:
    nan_or_inf = err("ERR increment would produce NaN or Infinity")
    assert node.write("INCRBYFLOAT", "f", "inf") == nan_or_inf
    assert node.write("INCRBYFLOAT", "f", "-Infinity") == nan_or_inf
    node.write("SET", "g", "1e4932")
    assert node.write("INCRBYFLOAT", "g", "1e4932") == nan_or_inf
    assert node.read("EXISTS", "f") == 0


def test_incrbyfloat_result_is_usable_by_incr(node: Node) -> None:
    node.write("SET", "f", "2.5")
    assert node.write("INCRBYFLOAT", "f", "0.5") == b"3"
    assert node.write("INCR", "f") == 4


def test_format_float_is_plain_decimal() -> None:
    import decimal

    assert strings.format_float(decimal.Decimal("1E+3")) == b"1000"
    assert strings.format_float(decimal.Decimal("-0.000")) == b"0"
    assert strings.format_float(decimal.Decimal("123.4500")) == b"123.45"


# ---- APPEND, STRLEN ----


def test_append(node: Node) -> None:
    assert node.write("APPEND", "k", "Hello") == 5
    assert node.write("APPEND", "k", " World") == 11
    assert node.read("GET", "k") == b"Hello World"
    assert node.write("APPEND", "k", "") == 11


def test_append_keeps_ttl(node: Node) -> None:
    node.write("SET", "k", "a", "PX", "100")
    node.write("APPEND", "k", "b")
    assert node.read("PTTL", "k") == 100


def test_append_too_long(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strings, "STRING_BYTES_MAX", 8)
    node.write("SET", "k", "12345")
    assert node.write("APPEND", "k", "678") == 8
    assert node.write("APPEND", "k", "9") == err(strings.STRING_TOO_LONG)
    assert node.read("GET", "k") == b"12345678"


def test_strlen(node: Node) -> None:
    assert node.read("STRLEN", "k") == 0
    node.write("SET", "k", "hello")
    assert node.read("STRLEN", "k") == 5


# ---- GETRANGE, SETRANGE ----


@pytest.mark.parametrize(
    ("start", "end", "result"),
    [
        (0, 3, b"This"),
        (-3, -1, b"ing"),
        (0, -1, b"This is a string"),
        (10, 100, b"string"),
        (5, 3, b""),
        (-100, -1, b"This is a string"),
        (0, -100, b""),
        (16, 20, b""),
        (-1, -2, b""),
        (-1, -1, b"g"),
        (2**63 - 1, 2**63 - 1, b""),
        (-(2**63), 2**63 - 1, b"This is a string"),
    ],
)
def test_getrange(node: Node, start: int, end: int, result: bytes) -> None:
    node.write("SET", "k", "This is a string")
    assert node.read("GETRANGE", "k", start, end) == result


def test_getrange_missing_and_empty(node: Node) -> None:
    assert node.read("GETRANGE", "k", 0, -1) == b""
    node.write("SET", "e", "")
    assert node.read("GETRANGE", "e", 0, -1) == b""


def test_getrange_not_integer(node: Node) -> None:
    assert node.read("GETRANGE", "k", "a", "1") == err(NOT_INTEGER)
    assert node.read("GETRANGE", "k", "0", "1.0") == err(NOT_INTEGER)


def test_setrange(node: Node) -> None:
    node.write("SET", "k", "Hello World")
    assert node.write("SETRANGE", "k", 6, "Redis") == 11
    assert node.read("GET", "k") == b"Hello Redis"
    assert node.write("SETRANGE", "k", 9, "xxxx") == 13
    assert node.read("GET", "k") == b"Hello Redxxxx"
    assert node.write("SETRANGE", "k", 15, "!") == 16
    assert node.read("GET", "k") == b"Hello Redxxxx\x00\x00!"


def test_setrange_missing_key_pads_with_zeros(node: Node) -> None:
    assert node.write("SETRANGE", "k", 6, "Redis") == 11
    assert node.read("GET", "k") == b"\x00" * 6 + b"Redis"


def test_setrange_empty_value_writes_nothing(node: Node) -> None:
    assert node.write("SETRANGE", "k", 10, "") == 0
    assert node.read("EXISTS", "k") == 0
    node.write("SET", "j", "abc")
    assert node.write("SETRANGE", "j", 10, "") == 3
    assert node.read("GET", "j") == b"abc"


def test_setrange_keeps_ttl(node: Node) -> None:
    node.write("SET", "k", "abc", "PX", "50")
    node.write("SETRANGE", "k", 1, "X")
    assert node.read("GET", "k") == b"aXc"
    assert node.read("PTTL", "k") == 50


def test_setrange_errors(node: Node) -> None:
    assert node.write("SETRANGE", "k", -1, "x") == err("ERR offset is out of range")
    assert node.write("SETRANGE", "k", "x", "x") == err(NOT_INTEGER)
    too_far = strings.STRING_BYTES_MAX
    assert node.write("SETRANGE", "k", too_far, "x") == err(strings.STRING_TOO_LONG)
    assert node.state.key_count() == 0


# ---- expiry interplay (the brief's scenario) ----


def test_key_with_px_exists_until_its_expiry_for_reads() -> None:
    node = Node()
    node.write("SET", "k", "v", "PX", "100", t=1000)
    assert node.read("GET", "k", t=1099) == b"v"
    assert node.read("EXISTS", "k", t=1099) == 1
    assert node.read("GET", "k", t=1100) is None
    assert node.read("STRLEN", "k", t=1100) == 0
    assert node.read("MGET", "k", t=1100) == [None]
    # Reads never delete: the key is still stored until the log removes it.
    assert node.state.key_count() == 1


@pytest.mark.parametrize(
    ("argv", "reply", "value"),
    [
        (["SET", "k", "w", "NX"], OK, b"w"),
        (["SET", "k", "w", "XX"], None, None),
        (["SET", "k", "w", "IFEQ", "v"], None, None),
        (["SET", "k", "w", "GET"], None, b"w"),
        (["INCR", "k"], 1, b"1"),
        (["APPEND", "k", "x"], 1, b"x"),
        (["SETRANGE", "k", "1", "x"], 2, b"\x00x"),
        (["GETSET", "k", "w"], None, b"w"),
        (["GETDEL", "k"], None, None),
        (["GETEX", "k", "PERSIST"], None, None),
        (["SETNX", "k", "w"], 1, b"w"),
        (["MSETNX", "k", "w"], 1, b"w"),
        (["INCRBYFLOAT", "k", "1.5"], b"1.5", b"1.5"),
    ],
)
def test_write_at_expiry_time_sees_key_absent(
    argv: list[str], reply: object, value: bytes | None
) -> None:
    node = Node()
    node.write("SET", "k", "v", "PX", "100", t=1000)
    assert node.write(*argv, t=1100) == reply
    assert node.read("GET", "k", t=1100) == value
    if value is not None:
        # The new key must not inherit the dead key's expiry.
        assert node.read("TTL", "k", t=1100) == -1


def test_incrbyfloat_on_a_set_is_wrongtype_whatever_the_increment(node: Node) -> None:
    # Redis looks the key up before it parses the increment.
    node.write("SADD", "s", "a")
    for increment in ("abc", "", "1"):
        reply = node.write("INCRBYFLOAT", "s", increment)
        assert isinstance(reply, ErrorReply) and reply.message.startswith("WRONGTYPE"), reply
