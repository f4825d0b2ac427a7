"""SORT and SORT_RO against KVState: Redis 7.0's replies, error texts and order of checks
(sort.c; checked against redis-server 7.0), replikv's deterministic order where Redis's is
unspecified, STORE's effects (replayed on a backup, undone), the size limit, feature levels and
scripts. tests/unit/test_sort_against_redis.py runs them against a real redis-server."""

from __future__ import annotations

import math

import pytest

from replikv import features
from replikv.commands import sort as sort_commands
from replikv.replies import NOT_INTEGER, SYNTAX, WRONG_TYPE, ErrorReply, Status
from replikv.state import EFFECT_DELETE, EFFECT_LIST_REPLACE, KVState

from .state_driver import T0, Node, err

NOT_DOUBLE = err(sort_commands.ERR_NOT_DOUBLE)


@pytest.fixture
def node() -> Node:
    n = Node()
    n.state.raise_feature_level(features.FEATURE_LEVEL)  # scripts may call SORT
    return n


def b(*words: str) -> list[bytes]:
    return [w.encode() for w in words]


def test_numeric_and_alpha_orders(node: Node) -> None:
    node.write("RPUSH", "l", "3", "1", "2", "10", "5", "1.5", "-inf", " 4", "")
    assert node.write("SORT", "l") == b("-inf", "", "1", "1.5", "2", "3", " 4", "5", "10")
    assert node.read("SORT_RO", "l", "DESC") == b("10", "5", " 4", "3", "2", "1.5", "1", "",
                                                  "-inf")
    assert node.read("SORT_RO", "l", "ALPHA") == b("", " 4", "-inf", "1", "1.5", "10", "2", "3",
                                                   "5")
    assert node.read("SORT_RO", "l", "alpha", "desc", "asc") == node.read("SORT_RO", "l",
                                                                          "ALPHA")
    # Equal scores are ordered by the elements' bytes (Redis's tie-break), DESC reversing it.
    node.write("RPUSH", "t", "1.0", "1", "01", "0x1")
    assert node.read("SORT_RO", "t") == b("01", "0x1", "1", "1.0")
    assert node.read("SORT_RO", "t", "DESC") == b("1.0", "1", "0x1", "01")


@pytest.mark.parametrize(("raw", "score"), [
    (b"1", 1.0), (b"", 0.0), (b" \t7", 7.0), (b"+2.5", 2.5), (b"1e3", 1000.0),
    (b"0x10", 16.0), (b"inf", math.inf), (b"-Infinity", -math.inf), (b"1\0junk", 1.0),
    (b"\0x", 0.0), (b"0x1p-1074", 5e-324), (b"2.2250738585072014e-308", 2.2250738585072014e-308),
    (b"1e-400", None), (b"1e400", None), (b"1e-310", None), (b"nan", None), (b"5 ", None),
    (b" ", None), (b"x", None), (b"1e", None), (b"0x", None), (b"--1", None),
])  # fmt: skip
def test_scores_are_read_as_redis_reads_them(raw: bytes, score: float | None) -> None:
    # strtod over the C string; ERANGE (an overflow, an inexact underflow) and NaN refused.
    assert sort_commands.sort_score(raw) == score


def test_a_score_that_is_not_a_double_fails_the_whole_sort(node: Node) -> None:
    node.write("RPUSH", "l", "1", "x", "2")
    assert node.read("SORT_RO", "l") == NOT_DOUBLE
    assert node.read("SORT_RO", "l", "LIMIT", "0", "1") == NOT_DOUBLE  # every element is read
    assert node.write("SORT", "l", "STORE", "d") == NOT_DOUBLE
    assert node.read("EXISTS", "d") == 0
    assert node.read("SORT_RO", "l", "ALPHA") == b("1", "2", "x")
    assert node.read("SORT_RO", "l", "BY", "nosort") == b("1", "x", "2")  # nothing is read


def test_limit(node: Node) -> None:
    node.write("RPUSH", "l", "5", "4", "3", "2", "1")
    cases = {("0", "2"): b("1", "2"), ("1", "-1"): b("2", "3", "4", "5"),
             ("-5", "2"): b("1", "2"), ("3", "9"): b("4", "5"), ("0", "0"): [],
             ("5", "1"): [], ("4", "9223372036854775807"): b("5")}
    for (offset, count), expected in cases.items():
        assert node.read("SORT_RO", "l", "LIMIT", offset, count) == expected, (offset, count)
    assert node.read("SORT_RO", "l", "LIMIT", "0", "1", "LIMIT", "4", "1") == b("5")  # last wins


def test_by_keys_and_hash_fields(node: Node) -> None:
    node.write("RPUSH", "l", "a", "b", "c", "d")
    node.write("MSET", "w_a", "3", "w_b", "1", "w_c", "2")  # w_d is missing: 0
    assert node.read("SORT_RO", "l", "BY", "w_*") == b("d", "b", "c", "a")
    assert node.read("SORT_RO", "l", "BY", "w_*", "DESC") == b("a", "c", "b", "d")
    node.write("HSET", "h_a", "f", "9")
    node.write("HSET", "h_b", "f", "-1", "g", "x")
    node.write("SET", "h_c", "5")  # not a hash: missing
    assert node.read("SORT_RO", "l", "BY", "h_*->f") == b("b", "c", "d", "a")
    assert node.read("SORT_RO", "l", "BY", "h_*->g") == NOT_DOUBLE
    assert node.read("SORT_RO", "l", "BY", "h_*->g", "ALPHA") == b("a", "c", "d", "b")
    node.write("SET", "w_d", "zz")
    assert node.read("SORT_RO", "l", "BY", "w_*") == NOT_DOUBLE
    # The field follows the `*`; `->` with nothing after it is part of the key's name.
    node.write("SET", "k_c->", "-1")
    assert node.read("SORT_RO", "l", "BY", "k_*->") == b("c", "a", "b", "d")
    assert node.read("SORT_RO", "l", "BY", "->k_*", "LIMIT", "0", "1") == b("a")


def test_alpha_by_ties_keep_the_input_order(node: Node) -> None:
    # Redis leaves equal BY values (or missing ones, which sort first) in qsort's order; here
    # they keep the list's order, so every replica answers alike.
    node.write("RPUSH", "l", "p", "q", "r", "s", "t")
    node.write("MSET", "w_p", "m", "w_r", "m", "w_s", "a")
    assert node.read("SORT_RO", "l", "BY", "w_*", "ALPHA") == b("q", "t", "s", "p", "r")
    assert node.read("SORT_RO", "l", "BY", "w_*", "ALPHA", "DESC") == b("p", "r", "s", "q", "t")


def test_nosort(node: Node) -> None:
    node.write("RPUSH", "l", "c", "a", "b", "d")
    assert node.read("SORT_RO", "l", "BY", "nosort") == b("c", "a", "b", "d")
    assert node.read("SORT_RO", "l", "BY", "nosort", "DESC") == b("d", "b", "a", "c")
    assert node.read("SORT_RO", "l", "BY", "nosort", "DESC", "LIMIT", "1", "2") == b("b", "a")
    assert node.read("SORT_RO", "l", "BY", "nosort", "LIMIT", "3", "5") == b("d")
    # A BY without `*` stays in force past a later BY (as in Redis); `#` has no `*` either.
    assert node.read("SORT_RO", "l", "BY", "nosort", "BY", "w_*") == b("c", "a", "b", "d")
    assert node.read("SORT_RO", "l", "BY", "#", "ALPHA") == b("c", "a", "b", "d")
    assert node.read("SORT_RO", "l", "BY", "no\0*") == b("c", "a", "b", "d")  # C string: no *
    node.write("ZADD", "z", "3", "a", "1", "b", "2", "c", "2", "d")
    assert node.read("SORT_RO", "z", "BY", "nosort") == b("b", "c", "d", "a")
    assert node.read("SORT_RO", "z", "BY", "nosort", "DESC", "LIMIT", "1", "2") == b("d", "c")
    assert node.read("SORT_RO", "z", "BY", "nosort", "LIMIT", "4", "1") == []
    assert node.read("SORT_RO", "z", "ALPHA", "DESC") == b("d", "c", "b", "a")


def test_a_set_sorts_by_its_own_order_unless_stored_or_in_a_script(node: Node) -> None:
    node.write("SADD", "s", "5", "3", "10", "1")
    # Its own order (SMEMBERS's, a function of the history of adds and removes, never of a
    # process's hash seed); DESC changes nothing, as Redis does not sort then.
    assert node.read("SORT_RO", "s", "BY", "nosort") == node.read("SMEMBERS", "s")
    assert node.read("SORT_RO", "s", "BY", "nosort", "DESC", "LIMIT", "1", "2") == b("3", "10")
    assert node.read("SORT_RO", "s") == b("1", "3", "5", "10")
    # STORE or a script: sorted ALPHA, as Redis does, any BY dropped and DESC honoured.
    assert node.write("SORT", "s", "BY", "nosort", "DESC", "STORE", "d") == 4
    assert node.read("LRANGE", "d", "0", "-1") == b("5", "3", "10", "1")
    script = "return redis.call('SORT', KEYS[1], 'BY', 'nosort', 'GET', '#')"
    assert node.write("EVAL", script, "1", "s") == b("1", "10", "3", "5")
    assert node.read("EVAL_RO", script.replace("'SORT'", "'SORT_RO'"), "1", "s") == b(
        "1", "10", "3", "5")
    assert node.read("SORT_RO", "s", "BY", "nosort") == b("5", "3", "10", "1")  # flag cleared


def test_get(node: Node) -> None:
    node.write("RPUSH", "l", "2", "1", "3")
    node.write("MSET", "o_1", "one", "o_2", "two")
    node.write("HSET", "h_3", "f", "F3")
    node.write("SADD", "o_3", "m")  # another type: nil
    assert node.read("SORT_RO", "l", "GET", "o_*", "GET", "#", "GET", "h_*->f") == [
        b"one", b"1", None, b"two", b"2", None, None, b"3", b"F3"]
    assert node.read("SORT_RO", "l", "GET", "nostar", "BY", "nosort") == [None, None, None]
    assert node.read("SORT_RO", "l", "GET", "#\0x", "LIMIT", "0", "1") == b("1")  # C: "#"
    assert node.read("SORT_RO", "l", "GET", "#x", "LIMIT", "0", "1") == [None]
    assert node.read("SORT_RO", "l", "GET", "o_*", "LIMIT", "0", "0") == []
    # In a STORE list a nil is an empty string.
    assert node.write("SORT", "l", "GET", "o_*", "STORE", "d") == 3
    assert node.read("LRANGE", "d", "0", "-1") == b("one", "two", "")


def test_missing_key_and_wrong_type(node: Node) -> None:
    assert node.read("SORT_RO", "nokey") == []
    assert node.read("SORT_RO", "nokey", "LIMIT", "0", "5", "GET", "#") == []
    node.write("SET", "d", "v")
    assert node.write("SORT", "nokey", "STORE", "d") == 0
    assert node.read("EXISTS", "d") == 0  # an empty result deletes the destination
    node.write("SET", "str", "1")
    node.write("HSET", "h", "f", "1")
    node.write("XADD", "x", "1-1", "f", "v")
    for key in ("str", "h", "x"):
        assert node.read("SORT_RO", key) == err(WRONG_TYPE)
        assert node.write("SORT", key, "STORE", "d") == err(WRONG_TYPE)


@pytest.mark.parametrize(("options", "error"), [
    (["foo"], SYNTAX), (["LIMIT", "1"], SYNTAX), (["BY"], SYNTAX), (["GET"], SYNTAX),
    (["STORE"], SYNTAX), (["LIMIT", "x", "1"], NOT_INTEGER), (["LIMIT", "1", "1.5"], NOT_INTEGER),
    (["LIMIT", "0", "99999999999999999999"], NOT_INTEGER),
    (["LIMIT", "x", "1", "foo"], NOT_INTEGER), (["foo", "LIMIT", "x", "1"], SYNTAX),
])  # fmt: skip
def test_option_errors_come_before_the_key(node: Node, options: list[str], error: str) -> None:
    node.write("SET", "str", "v")
    assert node.read("SORT_RO", "str", *options) == err(error)
    assert node.write("SORT", "str", *options) == err(error)


def test_option_names_are_read_as_c_strings_and_sort_ro_has_no_store(node: Node) -> None:
    node.write("RPUSH", "l", "2", "1")
    assert node.read("SORT_RO", "l", "desc\0junk") == b("2", "1")  # strcasecmp stops at NUL
    assert node.read("SORT_RO", "l", "STORE", "d") == err(SYNTAX)
    assert node.write("SORT_RO", "l", "LIMIT", "x", "0", "STORE", "d") == err(NOT_INTEGER)


def test_store_replaces_the_destination_with_a_list_without_expiry(node: Node) -> None:
    node.write("RPUSH", "l", "b", "a", "c")
    node.write("SADD", "d", "m")
    node.write("PEXPIRE", "d", "100000")
    assert node.write("SORT", "l", "ALPHA", "STORE", "d", "DESC") == 3
    assert node.read("TYPE", "d") == Status("list")
    assert node.read("LRANGE", "d", "0", "-1") == b("c", "b", "a")
    assert node.read("PTTL", "d") == -1
    assert node.write("SORT", "l", "ALPHA", "STORE", "l") == 3  # onto itself
    assert node.read("LRANGE", "l", "0", "-1") == b("a", "b", "c")
    # An expired destination or source is absent.
    node.write("SET", "e", "v", "PX", "5")
    node.write("RPUSH", "gone", "1")
    node.write("PEXPIRE", "gone", "5")
    assert node.write("SORT", "gone", "STORE", "e", t=T0 + 10) == 0
    assert node.read("EXISTS", "e", "gone", t=T0 + 10) == 0


def _effects(state: KVState, argv: list[bytes]) -> tuple[object, list[list]]:
    reply, effects, _ = state.execute_recorded(argv, T0)
    return reply, effects


def test_store_effects_replay_on_a_backup_and_undo() -> None:
    leader, backup = KVState(), KVState()
    setup = [b"RPUSH l 3 1 2".split(), b"MSET o_1 x o_3 z".split(), b"SET d old".split(),
             b"ZADD z 1 a 2 b".split()]
    for argv in setup:
        _, effects = _effects(leader, argv)
        backup.apply_effects(effects)
    before = leader.digest()
    reply, effects = _effects(leader, b"SORT l GET o_* GET # STORE d".split())
    assert reply == 6
    assert effects == [[EFFECT_LIST_REPLACE, b"d", b("x", "1", "", "2", "z", "3"), None]]
    backup.apply_effects(effects)
    assert backup.digest() == leader.digest() != before
    # Without STORE: a write with no effects.
    assert _effects(leader, b"SORT l".split()) == (b("1", "2", "3"), [])
    # An empty result deletes the destination; one that did not exist: no effect.
    assert _effects(leader, b"SORT z BY nosort LIMIT 5 1 STORE d".split()) == (
        0, [[EFFECT_DELETE, b"d"]])
    assert _effects(leader, b"SORT nokey STORE d".split()) == (0, [])
    # Undo restores the state, newest first.
    state = KVState()
    for argv in setup:
        state.apply_command(argv, T0)
    before = state.digest()
    _, _, undo = state.execute_recorded(b"SORT l DESC STORE d".split(), T0)
    assert state.execute_read(b"LRANGE d 0 -1".split(), T0) == b("3", "2", "1")
    state.undo(undo)
    assert state.digest() == before
    assert state.execute_read(b"GET d".split(), T0) == b"old"


def test_the_result_is_limited(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    node.write("RPUSH", "l", "1", "2", "3")
    node.write("MSET", "o_1", "x" * 10, "o_2", "y" * 10)
    monkeypatch.setattr(sort_commands, "SORT_RESULT_ENTRIES_MAX", 5)
    assert node.read("SORT_RO", "l", "GET", "#") == b("1", "2", "3")
    too_big = err(sort_commands.SORT_TOO_BIG)
    assert node.read("SORT_RO", "l", "GET", "#", "GET", "#") == too_big
    assert node.write("SORT", "l", "GET", "#", "GET", "#", "LIMIT", "0", "2", "STORE", "e") == 4
    monkeypatch.setattr(sort_commands, "SORT_RESULT_BYTES_MAX", 15)
    assert node.read("SORT_RO", "l", "GET", "o_*") == too_big
    assert node.write("SORT", "l", "GET", "o_*", "STORE", "e") == too_big
    assert node.read("LLEN", "e") == 4  # unchanged
    assert node.read("SORT_RO", "l", "GET", "o_*", "LIMIT", "1", "5") == [b"y" * 10, None]


def test_feature_level_and_scripts() -> None:
    # Active replication logs the command itself: level 7; passive: a list's replace.
    assert features.SORT_LEVEL == 7 <= features.FEATURE_LEVEL
    for name in (b"SORT", b"sort_ro"):
        assert features.command_level([name, b"k"], active=True) == features.SORT_LEVEL
        assert features.command_level([name, b"k"]) == features.FEATURE_LEVEL_LEGACY
        assert features.script_call_level([name, b"k"]) == features.SORT_LEVEL
    # A script's call below the level is answered as an older replikv answers it, and asks
    # the leader for the level.
    state = KVState()
    state.raise_feature_level(features.SORT_LEVEL - 1)
    reply = state.apply_command([b"EVAL", b"return redis.call('SORT', 'k')", b"0"], T0)
    assert isinstance(reply, ErrorReply) and "Unknown Redis command" in reply.message
    assert state.script_level_wanted == (features.SORT_LEVEL, b"SORT")
