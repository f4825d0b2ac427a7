"""The linearizability checker: hand-made histories that must pass or fail, agreement with a
brute-force checker on tiny random histories, and histories generated from a model run (which
must pass) with one result corrupted so that no linearization allows it (which must fail)."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replikv.check import CheckResult, Op, check_history, format_result
from replikv.check.linearizability import describe_op
from replikv.check.synthetic import Plan, history_from_plans

# ---- building histories by hand ----


def op(
    client: int,
    kind: str,
    call: int,
    ret: int | None,
    result: object = None,
    *,
    value: bytes | None = None,
    expected: bytes | None = None,
    outcome: str | None = None,
    key: bytes = b"k",
) -> Op:
    """An op on `key`; ret None means its outcome is unknown."""
    if outcome is None:
        outcome = "unknown" if ret is None else "ok"
    return Op(client, key, kind, value, expected, call, ret, outcome, result)


def get(client, call, ret, result, **kw):
    return op(client, "get", call, ret, result, **kw)


def set_(client, call, ret, value, **kw):
    return op(client, "set", call, ret, None, value=value, **kw)


def cas(client, call, ret, expected, new, result, **kw):
    return op(client, "cas", call, ret, result, value=new, expected=expected, **kw)


def delete(client, call, ret, result, **kw):
    return op(client, "del", call, ret, result, **kw)


def incr(client, call, ret, result, **kw):
    return op(client, "incr", call, ret, result, **kw)


def assert_linearizable(ops: list[Op]) -> CheckResult:
    result = check_history(ops)
    assert result.ok is True, format_result(result)
    return result


def assert_not_linearizable(ops: list[Op]) -> CheckResult:
    result = check_history(ops)
    assert result.ok is False, format_result(result)
    assert result.key is not None
    assert result.window, "a failure names the ops it could not linearize"
    assert len(result.window) <= 10
    return result


# ---- histories that must pass ----


def test_empty_history_is_linearizable():
    result = assert_linearizable([])
    assert (result.keys_checked, result.ops_checked) == (0, 0)


def test_sequential_sets_and_gets():
    assert_linearizable(
        [
            get(1, 0, 10, None),
            set_(1, 20, 30, b"a"),
            get(2, 40, 50, b"a"),
            set_(2, 60, 70, b"b"),
            get(1, 80, 90, b"b"),
        ]
    )


@pytest.mark.parametrize("seen", [None, b"a"])
def test_get_concurrent_with_a_set_may_see_either_value(seen):
    assert_linearizable([set_(1, 0, 100, b"a"), get(2, 10, 20, seen)])


def test_reads_during_a_long_write_switch_once():
    assert_linearizable(
        [
            set_(1, 0, 100, b"a"),
            get(2, 10, 20, None),
            get(3, 30, 40, b"a"),
            get(2, 50, 60, b"a"),
        ]
    )


def test_ops_touching_at_an_instant_count_as_concurrent():
    # The set returns at 10 and the get is called at 10: either order is allowed.
    assert_linearizable([set_(1, 0, 10, b"a"), get(2, 10, 20, None)])


def test_cas_chains_succeed_and_fail():
    assert_linearizable(
        [
            cas(1, 0, 10, b"1", b"2", False),  # absent matches nothing
            set_(1, 20, 30, b"1"),
            cas(2, 40, 50, b"1", b"2", True),
            cas(3, 60, 70, b"1", b"3", False),
            cas(1, 80, 90, b"2", b"3", True),
            get(2, 100, 110, b"3"),
        ]
    )


def test_concurrent_cas_only_one_wins():
    assert_linearizable(
        [
            set_(1, 0, 10, b"0"),
            cas(2, 20, 50, b"0", b"a", False),
            cas(3, 20, 50, b"0", b"b", True),
            get(1, 60, 70, b"b"),
        ]
    )


def test_concurrent_incrs_in_any_order():
    # Three overlapping incrs; the one called last answered 1.
    assert_linearizable(
        [
            incr(1, 0, 100, 3),
            incr(2, 10, 100, 2),
            incr(3, 20, 100, 1),
            get(1, 110, 120, b"3"),
            incr(2, 130, 140, 4),
        ]
    )


def test_incr_counts_from_a_set_integer_and_del_resets():
    assert_linearizable(
        [
            set_(1, 0, 10, b"41"),
            incr(1, 20, 30, 42),
            delete(2, 40, 50, 1),
            delete(2, 60, 70, 0),
            incr(1, 80, 90, 1),
            get(3, 100, 110, b"1"),
        ]
    )


def test_failed_set_never_read():
    assert_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(2, 20, 30, b"b", outcome="fail"),
            get(1, 40, 50, b"a"),
        ]
    )


def test_unknown_set_read_later_is_assumed_applied():
    assert_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(2, 20, None, b"b"),  # timed out
            get(1, 30, 40, b"a"),  # not yet
            get(3, 50, 60, b"b"),  # now it has
            get(1, 70, 80, b"b"),
        ]
    )


def test_unknown_set_never_read_is_assumed_not_applied():
    assert_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(2, 20, None, b"b"),
            get(1, 30, 40, b"a"),
            get(3, 1000, 1010, b"a"),
        ]
    )


def test_unknown_set_read_only_by_a_later_get():
    # The set that completed before the unknown one was invoked is overwritten by it, long
    # after the client gave up.
    assert_linearizable(
        [
            set_(1, 0, 5, b"y"),
            set_(2, 10, None, b"x"),
            get(3, 1_000, 1_010, b"y"),
            get(3, 5_000, 5_010, b"x"),
        ]
    )


def test_never_completed_op_may_take_effect_after_everything():
    assert_linearizable([incr(1, 0, None, None), get(2, 10, 20, None)])


def test_unknown_incr_explains_a_skipped_number():
    assert_linearizable(
        [
            incr(1, 0, 10, 1),
            incr(2, 20, None, None),
            incr(1, 30, 40, 3),
        ]
    )


def test_unknown_ops_of_each_kind_in_one_chain():
    # Only the unknown set, then the unknown cas, then the unknown incr explain the reads.
    assert_linearizable(
        [
            set_(1, 0, None, b"5"),
            cas(2, 0, None, b"5", b"10", None),
            incr(3, 0, None, None),
            get(4, 100, 110, b"11"),
            delete(5, 120, None, None),
            get(4, 130, 140, None),
        ]
    )


def test_unknown_op_spent_in_a_dead_branch_is_available_in_another():
    # Placing the sets a then b, the search must spend the unknown set of a to read a, and then
    # lacks it for the last read; the same state reached by b then a still has it to spend.
    assert_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(2, 0, 10, b"b"),
            set_(3, 0, None, b"a"),
            get(1, 20, 30, b"a"),
            set_(2, 40, 50, b"c"),
            get(1, 60, 70, b"a"),
        ]
    )


def test_unknown_get_is_ignored():
    assert_linearizable([get(1, 0, None, b"never written"), set_(2, 10, 20, b"a")])


def test_failed_incr_on_a_non_integer_is_ignored():
    assert_linearizable(
        [
            set_(1, 0, 10, b"abc"),
            incr(2, 20, 30, None, outcome="fail"),
            get(1, 40, 50, b"abc"),
        ]
    )


def test_keys_are_independent():
    a = {"key": b"a"}
    b = {"key": b"b"}
    result = assert_linearizable(
        [
            set_(1, 0, 10, b"1", **a),
            set_(1, 20, 30, b"1", **b),
            get(2, 40, 50, b"1", **a),
            get(2, 40, 50, b"1", **b),
        ]
    )
    assert (result.keys_checked, result.ops_checked) == (2, 4)


# ---- histories that must fail ----


def test_stale_read_fails():
    result = assert_not_linearizable(
        [
            set_(1, 0, 10, b"old"),
            set_(1, 20, 30, b"new"),
            get(2, 40, 50, b"old"),
        ]
    )
    assert result.key == b"k"
    stuck = get(2, 40, 50, b"old")
    assert stuck in result.window
    assert "b'new'" in result.explanation  # what the register held


def test_lost_write_fails():
    assert_not_linearizable(
        [
            set_(1, 0, 10, b"a"),
            get(2, 20, 30, None),
            get(3, 40, 50, None),
        ]
    )


def test_lost_write_behind_a_concurrent_one_fails():
    # Both sets completed before the reads began; the reads must agree on the last one.
    assert_not_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(2, 0, 10, b"b"),
            get(3, 20, 30, b"a"),
            get(4, 40, 50, b"b"),
        ]
    )


def test_read_of_a_value_never_written_fails():
    assert_not_linearizable([set_(1, 0, 10, b"a"), get(2, 20, 30, b"zzz")])


def test_read_of_a_failed_sets_value_fails():
    assert_not_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(2, 20, 30, b"b", outcome="fail"),
            get(1, 40, 50, b"b"),
        ]
    )


def test_read_before_an_unknown_set_was_invoked_fails():
    assert_not_linearizable([get(1, 0, 5, b"x"), set_(2, 10, None, b"x")])


def test_unknown_set_takes_effect_at_most_once():
    assert_not_linearizable(
        [
            set_(1, 0, None, b"x"),
            set_(2, 5, 10, b"y"),
            get(3, 20, 25, b"x"),
            get(3, 30, 35, b"y"),
        ]
    )


def test_incr_counted_twice_fails():
    assert_not_linearizable([incr(1, 0, 10, 1), incr(2, 20, 30, 1)])


def test_incr_on_a_non_integer_cannot_succeed():
    assert_not_linearizable([set_(1, 0, 10, b"abc"), incr(2, 20, 30, 1)])


def test_cas_succeeding_from_a_value_the_register_could_not_hold_fails():
    assert_not_linearizable(
        [
            set_(1, 0, 10, b"a"),
            set_(1, 20, 30, b"b"),
            cas(2, 40, 50, b"a", b"c", True),
        ]
    )


def test_cas_on_an_absent_key_cannot_succeed():
    assert_not_linearizable([cas(1, 0, 10, b"", b"x", True)])


def test_non_monotonic_reads_fail():
    # A read saw the new value; a later read by another client saw the old one again.
    result = assert_not_linearizable(
        [
            set_(1, 0, 10, b"old"),
            set_(2, 20, 100, b"new"),
            get(3, 30, 40, b"new"),
            get(4, 50, 60, b"old"),
        ]
    )
    assert get(4, 50, 60, b"old") in result.window


def test_del_count_must_match_existence():
    assert_not_linearizable([delete(1, 0, 10, 1)])
    assert_not_linearizable([set_(1, 0, 10, b"a"), delete(2, 20, 30, 0)])


def test_failure_names_the_first_bad_key_only():
    ops = [
        set_(1, 0, 10, b"1", key=b"a"),
        get(2, 20, 30, b"1", key=b"a"),
        get(2, 20, 30, b"2", key=b"b"),
        get(2, 20, 30, b"3", key=b"c"),
    ]
    result = assert_not_linearizable(ops)
    assert result.key == b"b"
    assert result.keys_checked == 2


# ---- the result and its printing ----


def test_format_result_explains_a_failure_readably():
    ops = [
        set_(7, 1_000_000, 2_000_000, b"old"),
        set_(7, 3_000_000, 4_000_000, b"new"),
        get(8, 5_000_000, 6_000_000, b"old"),
    ]
    text = format_result(check_history(ops))
    assert text.startswith("NOT linearizable: key b'k'")
    assert "client 8" in text and "get => b'old'" in text
    # Times are relative to the first op of the history.
    assert "[+4.000 .. +5.000 ms]" in text


def test_describe_op_shows_arguments_and_outcomes():
    assert "cas b'1' -> b'2' => nil" in describe_op(cas(1, 0, 10, b"1", b"2", False))
    assert "incr => unknown outcome" in describe_op(incr(1, 0, None, None))
    assert ".. open" in describe_op(incr(1, 0, None, None))
    assert "set b'v' => failed" in describe_op(set_(1, 0, 10, b"v", outcome="fail"))


def test_timeout_gives_unknown_not_a_pass():
    result = check_history([set_(1, 0, 10, b"a"), get(2, 20, 30, b"a")], timeout_s=0)
    assert result.ok is None
    assert "UNKNOWN" in format_result(result)


def test_timeout_stops_a_search_that_would_take_ages():
    # Twenty-two concurrent sets of distinct values, then two reads that no order explains: the
    # search must try every subset of the sets before it can say no. (The late unknown cas ops
    # only make every value one that some op looks for, so no two sets are alike.)
    ops = [set_(c, 0, 100, b"v%d" % c) for c in range(22)]
    ops += [cas(100 + c, 1000, None, b"v%d" % c, b"w", None) for c in range(22)]
    ops += [get(99, 200, 210, b"v0"), get(99, 220, 230, b"v1")]
    result = check_history(ops, timeout_s=0.5)
    assert result.ok is None
    assert result.key == b"k"
    assert result.elapsed_s < 5


def test_check_history_refuses_what_is_not_an_op():
    with pytest.raises(TypeError):
        check_history([("not", "an", "op")])  # type: ignore[list-item]


# ---- agreement with a brute-force checker on tiny histories ----

_CANONICAL_INT = re.compile(rb"0|-?[1-9][0-9]*")


def _model_step(o: Op, v: bytes | None) -> tuple[bool, bytes | None]:
    """The register model written plainly: (could `o` run on `v` as recorded, new value).
    For an op of unknown outcome any reply goes."""
    known = o.outcome == "ok"
    if o.kind == "get":
        return (not known or o.result == v), v
    if o.kind == "set":
        return True, o.value
    if o.kind == "cas":
        matched = v is not None and v == o.expected
        return (not known or o.result == matched), (o.value if matched else v)
    if o.kind == "del":
        count = 0 if v is None else 1
        return (not known or o.result is None or o.result == count), None
    # incr
    if v is None:
        n = 0
    elif _CANONICAL_INT.fullmatch(v) and -(2**63) <= int(v) < 2**63:
        n = int(v)
    else:
        return not known, v  # refused: only an op of unknown outcome can have run
    if n + 1 >= 2**63:
        return not known, v
    return (not known or o.result == n + 1), b"%d" % (n + 1)


def brute_force_linearizable(ops: list[Op]) -> bool:
    """Try every subset of the unknown ops and every order that respects real time."""
    for key in {o.key for o in ops}:
        mine = [o for o in ops if o.key == key and o.outcome != "fail"]
        completed = [o for o in mine if o.outcome == "ok"]
        optional = [o for o in mine if o.outcome == "unknown"]
        if not any(
            _orders_exist(completed + list(chosen))
            for size in range(len(optional) + 1)
            for chosen in itertools.combinations(optional, size)
        ):
            return False
    return True


def _orders_exist(ops: list[Op]) -> bool:
    def before(a: Op, b: Op) -> bool:
        return a.return_ns is not None and a.return_ns < b.call_ns

    def search(remaining: tuple[int, ...], v: bytes | None) -> bool:
        if not remaining:
            return True
        for i in remaining:
            if any(before(ops[j], ops[i]) for j in remaining if j != i):
                continue
            legal, after = _model_step(ops[i], v)
            if legal and search(tuple(j for j in remaining if j != i), after):
                return True
        return False

    return search(tuple(range(len(ops))), None)


_VALUES = [b"1", b"2", b"x", b"0"]


@st.composite
def tiny_histories(draw) -> list[Op]:
    ops = []
    for client in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["get", "set", "cas", "del", "incr"]))
        call = draw(st.integers(0, 12))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "unknown", "fail"]))
        ret = None if outcome == "unknown" else call + draw(st.integers(0, 8))
        value = draw(st.sampled_from(_VALUES)) if kind in ("set", "cas") else None
        expected = draw(st.sampled_from(_VALUES)) if kind == "cas" else None
        result: object = None
        if outcome == "ok":
            if kind == "get":
                result = draw(st.sampled_from([None, *_VALUES]))
            elif kind == "cas":
                result = draw(st.booleans())
            elif kind == "del":
                result = draw(st.sampled_from([0, 1, None]))
            elif kind == "incr":
                result = draw(st.integers(1, 3))
        key = draw(st.sampled_from([b"k", b"k", b"j"]))
        ops.append(Op(client, key, kind, value, expected, call, ret, outcome, result))
    return ops


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_histories())
def test_agrees_with_brute_force_on_tiny_histories(ops):
    assert check_history(ops).ok == brute_force_linearizable(ops)


# ---- histories generated from a model run ----


def model_history(
    rng: random.Random, ops_count: int, keys: list[bytes], clients: int
) -> tuple[list[Op], set[bytes]]:
    """Clients issue ops one at a time; each takes effect at an instant inside its interval
    (an unknown op: after its call, or never), in a sequential model. Returns the history and
    every value any op wrote."""
    plans = []
    free_at = [0] * clients
    for _ in range(ops_count):
        client = rng.randrange(clients)
        call = free_at[client] + rng.randrange(5)
        effect = call + rng.randrange(20)
        ret = effect + rng.randrange(20)
        r = rng.random()
        outcome = "ok" if r < 0.8 else "unknown" if r < 0.92 else "fail"
        if outcome == "unknown":
            ret = None
            effect = effect + rng.choice([0, 200]) if rng.random() < 0.5 else None
        elif outcome == "fail":
            effect = None
        kind = rng.choice(["get", "get", "set", "cas", "del", "incr"])
        plans.append(Plan(client, rng.choice(keys), kind, call, effect, ret, outcome))
        free_at[client] = ret if ret is not None else call + 30

    seen: dict[bytes, list[bytes]] = {k: [b"seed"] for k in keys}
    fresh = itertools.count(1)

    def arguments(plan: Plan, current: bytes | None):
        if plan.kind == "set":
            return rng.choice([b"v%d" % next(fresh), b"%d" % rng.randrange(3)]), None
        if plan.kind == "cas":
            expected = current if current is not None and rng.random() < 0.6 else None
            if expected is None:
                expected = rng.choice(seen[plan.key])
            return b"v%d" % next(fresh), expected
        return None, None

    history = history_from_plans(plans, arguments,
                                 on_value=lambda key, value: seen[key].append(value))
    written = {v for values in seen.values() for v in values[1:]}
    written |= {o.value for o in history if o.kind in ("set", "cas")}
    return history, written


histories_from_a_model = st.builds(
    model_history,
    st.randoms(use_true_random=False),
    st.integers(1, 120),
    st.sampled_from([[b"k"], [b"k", b"j"], [b"a", b"b", b"c"]]),
    st.integers(1, 6),
)


@settings(max_examples=300, deadline=None)
@given(histories_from_a_model)
def test_histories_from_a_model_run_pass(generated):
    ops, _ = generated
    assert_linearizable(ops)


@settings(max_examples=300, deadline=None)
@given(histories_from_a_model, st.data())
def test_histories_with_a_corrupted_result_fail(generated, data):
    ops, written = generated
    # A result no linearization allows: a get of a value nobody wrote, an incr answering a
    # negative count (counters start at 0 and sets write non-negative integers), or a cas that
    # succeeded expecting a value nobody wrote.
    corruptible = [
        n for n, o in enumerate(ops) if o.outcome == "ok" and o.kind in ("get", "incr", "cas")
    ]
    if not corruptible:
        ops = ops + [get(0, 0, 1, b"corrupt")]
        corruptible = [len(ops) - 1]
    n = data.draw(st.sampled_from(corruptible))
    o = ops[n]
    assert b"corrupt" not in written
    if o.kind == "get":
        bad = Op(o.client, o.key, "get", None, None, o.call_ns, o.return_ns, "ok", b"corrupt")
    elif o.kind == "incr":
        bad = Op(o.client, o.key, "incr", None, None, o.call_ns, o.return_ns, "ok", -1)
    else:
        bad = Op(o.client, o.key, "cas", o.value, b"corrupt", o.call_ns, o.return_ns, "ok", True)
    ops = ops[:n] + [bad] + ops[n + 1 :]
    result = assert_not_linearizable(ops)
    assert result.key == o.key
