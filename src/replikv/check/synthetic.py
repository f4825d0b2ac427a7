"""Synthetic histories: what the clients of a correct store would record, for testing and
benchmarking the checker.

A caller plans the schedule: which client calls what on which key, when each operation takes
effect (an instant inside its call/return interval; for an unknown outcome, any time after the
call, or never; for a failure, never) and when it returns. `history_from_plans` then runs a
sequential register model in effect order, chooses each operation's arguments as it takes
effect (so compare-and-set can expect the current value), and records the results a correct
store would have answered. Every history it returns is linearizable by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from replikv.check.history import Op

_CANONICAL_INT = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_INT64_MAX = 2**63 - 1


@dataclass(slots=True)
class Plan:
    client: int
    key: bytes
    kind: str  # "get" | "set" | "cas" | "del" | "incr"
    call_ns: int
    effect_ns: int | None  # None: never takes effect
    return_ns: int | None  # None: outcome unknown
    outcome: str  # "ok" | "fail" | "unknown"


# (plan, the key's value as the op takes effect, or None if it never does) -> (value, expected)
ChooseArguments = Callable[[Plan, bytes | None], tuple[bytes | None, bytes | None]]


def incr_result(current: bytes | None) -> int | None:
    """What INCR answers on `current`, or None where Redis refuses (not an integer, overflow)."""
    if current is None:
        return 1
    if _CANONICAL_INT.fullmatch(current) is None:
        return None
    n = int(current)
    return n + 1 if n < _INT64_MAX else None


def history_from_plans(plans: list[Plan], choose_arguments: ChooseArguments,
                       on_value: Callable[[bytes, bytes], None] | None = None) -> list[Op]:
    """Run the plans through the register model; `on_value(key, value)` sees every value a key
    takes. A planned "ok" INCR that Redis would refuse becomes "fail" (an error, no effect)."""
    state: dict[bytes, bytes | None] = {}
    args: dict[int, tuple[bytes | None, bytes | None]] = {}
    results: dict[int, object] = {}
    for _, n in sorted((p.effect_ns, n) for n, p in enumerate(plans) if p.effect_ns is not None):
        p = plans[n]
        current = state.get(p.key)
        value, expected = args[n] = choose_arguments(p, current)
        if p.kind == "get":
            results[n] = current
            continue
        if p.kind == "set":
            new = value
        elif p.kind == "cas":
            results[n] = current is not None and current == expected
            new = value if results[n] else current
        elif p.kind == "del":
            results[n] = int(current is not None)
            new = None
        else:
            count = incr_result(current)
            if count is None:
                if p.outcome == "ok":
                    p.outcome = "fail"
                continue
            results[n] = count
            new = b"%d" % count
        state[p.key] = new
        if new is not None and on_value is not None:
            on_value(p.key, new)
    history = []
    for n, p in enumerate(plans):
        value, expected = args[n] if n in args else choose_arguments(p, None)
        result = results.get(n) if p.outcome == "ok" else None
        history.append(Op(p.client, p.key, p.kind, value, expected, p.call_ns, p.return_ns,
                          p.outcome, result))
    return history
