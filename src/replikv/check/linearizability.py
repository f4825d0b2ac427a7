"""Is a recorded client history linearizable? The oracle of the simulator and the fault tests.

A history (see `replikv.check.history`) is linearizable if every operation can be given one
instant between its invocation and its completion such that, replayed in that order on a plain
single-threaded key-value map, every operation gets exactly the reply the client saw. Operations
that certainly failed had no effect and are dropped. Operations with an unknown outcome may take
effect at any instant after their invocation, or never.

The model is one register per key holding bytes or nothing (absent): get reads it; set writes
it; del empties it and answers 1 if it held something, else 0; cas (SET k new IFEQ expected)
writes `new` and answers True only if the register holds exactly `expected` (an absent key
matches nothing), else answers False and changes nothing; incr treats absent as 0, needs a
canonical signed 64-bit decimal (as Redis's string2ll), stores and answers the successor, and
otherwise is refused with no effect.

Linearizability is local: a map is linearizable iff each key's history is, so keys are checked
one at a time, each with its own small search. The search is Wing & Gong's, with Lowe's
memoization ("Testing for linearizability", 2017), as Porcupine and Knossos do it: the call and
return events sit in one doubly linked list in time order; an operation can be linearized next
if its call comes before the first return still in the list; linearizing lifts its two events
out of the list, backtracking puts them back; and a cache of (which operations are linearized,
register value) pairs prunes every state already explored (remembered when the search leaves it
having failed). Calls sort before returns at equal
times, so operations that touch at an instant count as concurrent: the checker never invents a
real-time order the clock did not show.

The plain search explores every order of concurrent operations that fits so far; a few rules,
each sound because any linearization can be rewritten to obey it, keep it from doing so
needlessly (a brute-force checker agrees with it on random small histories, see the tests):
- A completed op that changes nothing where it is legal (a get, a failed cas, a del of an
  absent key) and is legal now is placed now, as the only move: placing it later gains nothing.
- Of completed ops with the same effect and reply (say, two sets of a value nobody reads), only
  the one returning first is tried at each step.
- Written values that no op can ever observe are one value, UNREAD (see `_Unread`), so states
  differing only in which of them the register holds are one state.
- Completed candidates are tried in the order they return, the likeliest order of effect.

Unknown-outcome ops have no return event, so they never hold the search back, and they are
optional: the key is linearizable once every completed op is placed (unknown ops left over
happen after the end, or never). Optional ops are where such searches explode, since k of them
can be placed in 2^k ways, so they are placed only where they matter:
- only after every completed candidate has been tried from the state;
- only where they change the register, and only if the op placed right after them needs them:
  a completed op that is illegal without them, or an unknown cas or incr that behaves
  differently without them (`_KeySearch._useful_classes` finds the few that could qualify);
- unknown ops with the same effect are interchangeable, so each class is used in call order,
  and two unknown ops in a row that commute are placed in one order only;
- the cache holds, per state, the sets of unknown ops placed when it failed, and skips a state
  reached with a superset of one of those (the extra ones would still be available there).

The search remains exponential in the worst case: long histories of one heavily contended key
with many timed-out ops (thousands of ops on one key from 20+ clients) can take minutes, so
tests should spread ops over many keys, as Jepsen's independent keys do, and pass `timeout_s`.

Every linearization found is replayed through the model and checked against the real-time
order before "ok" is reported; a mismatch is our own bug (an invariant failure).
"""

from __future__ import annotations

import bisect
import re
import time
from collections import defaultdict
from dataclasses import dataclass

from replikv.check.history import Op
from replikv.invariants import InvariantViolation, invariant

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_CANONICAL_INT = re.compile(rb"0|-?[1-9][0-9]{0,18}")

# How many search steps run between looks at the clock for the timeout.
DEADLINE_CHECK_STEPS = 4096

# How a failure is shown: the operations last placed before the search got stuck, and the
# operations that were candidates at that point (the whole window stays under about ten lines).
WINDOW_PLACED_OPS_MAX = 3
WINDOW_CANDIDATE_OPS_MAX = 6
VALUE_REPR_CHARS_MAX = 40

_GET, _SET, _CAS, _DEL, _INCR = range(5)
_KIND_CODES = {"get": _GET, "set": _SET, "cas": _CAS, "del": _DEL, "incr": _INCR}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history.

    `ok` is True (linearizable), False (not), or None (unknown: the timeout ran out first; never
    read it as a pass). `keys_checked` and `ops_checked` count the keys whose check finished and
    all their ops, including those dropped as certainly without effect. On failure `key` is the
    first key found not linearizable and `window` the operations shown in `explanation`; on a
    timeout `key` is the key being checked when time ran out.
    """

    ok: bool | None
    keys_checked: int
    ops_checked: int
    elapsed_s: float
    key: bytes | None = None
    explanation: str = ""
    window: tuple[Op, ...] = ()


def check_history(ops: list[Op], *, timeout_s: float | None = None) -> CheckResult:
    """Check that `ops` is linearizable, key by key (in sorted key order, stopping at the first
    key that is not). With `timeout_s`, give up after about that many seconds with ok=None."""
    started_s = time.perf_counter()
    deadline_s = None if timeout_s is None else started_s + timeout_s
    by_key: dict[bytes, list[Op]] = defaultdict(list)
    for op in ops:
        if not isinstance(op, Op):
            raise TypeError(f"a history holds Op instances, not {op!r}")
        by_key[op.key].append(op)
    origin_ns = min((op.call_ns for op in ops), default=0)

    keys_checked = 0
    ops_checked = 0
    for key in sorted(by_key):
        key_ops = by_key[key]
        if deadline_s is not None and time.perf_counter() >= deadline_s:
            return _timed_out(key, keys_checked, ops_checked, started_s, timeout_s)
        search = _KeySearch(key_ops)
        verdict = search.run(deadline_s)
        if verdict is None:
            return _timed_out(key, keys_checked, ops_checked, started_s, timeout_s)
        keys_checked += 1
        ops_checked += len(key_ops)
        if not verdict:
            window, explanation = search.explain(origin_ns)
            return CheckResult(
                ok=False,
                keys_checked=keys_checked,
                ops_checked=ops_checked,
                elapsed_s=time.perf_counter() - started_s,
                key=key,
                explanation=explanation,
                window=window,
            )
    return CheckResult(
        ok=True,
        keys_checked=keys_checked,
        ops_checked=ops_checked,
        elapsed_s=time.perf_counter() - started_s,
    )


def _timed_out(
    key: bytes, keys_checked: int, ops_checked: int, started_s: float, timeout_s: float | None
) -> CheckResult:
    return CheckResult(
        ok=None,
        keys_checked=keys_checked,
        ops_checked=ops_checked,
        elapsed_s=time.perf_counter() - started_s,
        key=key,
        explanation=f"the timeout of {timeout_s} s ran out while checking key {_show(key)}",
    )


def format_result(result: CheckResult) -> str:
    """A few lines for a human: the verdict, what was checked, and on failure the window."""
    counts = (
        f"{result.keys_checked} keys, {result.ops_checked} ops checked in {result.elapsed_s:.3f} s"
    )
    if result.ok:
        return f"linearizable: {counts}"
    if result.ok is None:
        return f"UNKNOWN (not a pass): {result.explanation}; {counts} before that"
    return f"NOT linearizable: key {_show(result.key)} ({counts})\n{result.explanation}"


# ---- the model ----


# The register value that stands for any value no operation of the key can tell apart (see
# `_Unread`). It is a str, so it equals no bytes: no get reads it, no cas matches it, and incr
# refuses it (an ok incr would reveal its successor; an unknown one changes nothing visible).
UNREAD = "<a value no op reads>"


class _Unread:
    """Which written values no operation of one key can ever observe.

    A value is observed if an ok get returns it, a cas (of any outcome) expects it, or an ok
    incr returns it. A written value v is unread if it is not observed and, when it is an
    integer, neither is any of v+1 .. v+N (N = the incr ops on the key: the most increments v
    could ever receive). All unread values behave alike for every op of the key, so the search
    stores them as UNREAD: states that differ only in which unread value the register holds
    merge, and unknown writes of unread values become interchangeable. This is what keeps
    timed-out writes, whose values nobody read, from multiplying the search.
    """

    def __init__(self, ops: list[Op]) -> None:
        observed: set[bytes] = set()
        for op in ops:
            if op.kind == "cas":
                observed.add(op.expected)  # type: ignore[arg-type]
            elif op.outcome == "ok" and op.kind == "get" and op.result is not None:
                observed.add(op.result)  # type: ignore[arg-type]
            elif op.outcome == "ok" and op.kind == "incr":
                observed.add(b"%d" % op.result)  # type: ignore[str-format]
        self.observed = observed
        self.observed_ints = sorted(n for v in observed if (n := _counter(v)) is not None)
        self.incrs = sum(op.kind == "incr" for op in ops)

    def abstract(self, value: bytes | None) -> bytes | str | None:
        if value is None or value in self.observed:
            return value
        n = _counter(value)
        if n is not None:
            # Any observed integer in n+1 .. n+incrs could be reached from n.
            k = bisect.bisect_right(self.observed_ints, n)
            if k < len(self.observed_ints) and self.observed_ints[k] <= n + self.incrs:
                return value
        return UNREAD


def _counter(value: bytes | str | None) -> int | None:
    """The integer incr sees in `value` (absent is 0), or None if incr would be refused."""
    if value is None:
        return 0
    if isinstance(value, str):  # UNREAD, the only str
        return None
    if len(value) > 20 or _CANONICAL_INT.fullmatch(value) is None:
        return None
    n = int(value)
    return n if INT64_MIN <= n <= INT64_MAX else None


def _return_ns(op: Op) -> int:
    """A completed op's return time (Op refuses a completed op without one)."""
    if op.return_ns is None:
        raise InvariantViolation(f"a completed op has no return time: {op}")
    return op.return_ns


def _apply(kind: int, arg: bytes | str | None, expected: bytes | None,
           value: bytes | str | None):
    """The effect of an operation whose reply is unknown: (changes the register, new value)."""
    if kind == _SET:
        return value != arg, arg
    if kind == _DEL:
        return value is not None, None
    if kind == _CAS:
        if value == expected and arg != expected:
            return True, arg
        return False, value
    if kind == _INCR:
        n = _counter(value)
        if n is None or n == INT64_MAX:  # refused: not an integer, or would overflow
            return False, value
        return True, b"%d" % (n + 1)
    return False, value  # get


def _replies(kind: int, arg, expected, result, value: bytes | str | None):
    """Whether an operation that answered `result` could run on `value`: (legal, new value)."""
    if kind == _GET:
        return value == result, value
    if kind == _SET:
        return True, arg
    if kind == _CAS:
        if value == expected:  # bytes never equal None: an absent key matches nothing
            return result is True, arg
        return result is False, value
    if kind == _DEL:
        return result is None or result == (value is not None), None
    n = _counter(value)  # incr
    if n is None or n == INT64_MAX or n + 1 != result:
        return False, value
    return True, b"%d" % result


# ---- the search for one key ----

# A state's entry in the failure cache keeps at most this many sets of unknown ops; past that,
# new sets are not remembered (the search stays correct; it may explore some states twice).
FAILED_SETS_PER_STATE_MAX = 32


def _dominated(failed: list[int] | None, unknown_bits: int) -> bool:
    """Whether a state was already found hopeless with a subset of `unknown_bits` placed (the
    extra unknown ops placed here are still available there, so here is no better)."""
    if failed is not None:
        for earlier in failed:
            if earlier & ~unknown_bits == 0:
                return True
    return False


def _remember_failed(cache: dict, state: tuple, unknown_bits: int) -> None:
    failed = cache.get(state)
    if failed is None:
        cache[state] = [unknown_bits]
    elif len(failed) < FAILED_SETS_PER_STATE_MAX:
        failed.append(unknown_bits)


# What the search loop is doing: entering a new state, trying completed ops, choosing and then
# trying unknown ops, or backtracking.
_ENTER, _SCAN, _CHOOSE_UNKNOWN, _SCAN_UNKNOWN, _BACKTRACK = range(5)


class _KeySearch:
    """Wing & Gong's search over one key's history, with Lowe's cache.

    Operations are numbered: the completed ones 0..m-1, the unknown ones m..n-1 (in call order).
    The list holds entry 0 (head), 2i+1 (call of completed op i), 2i+2 (its return) and a tail,
    as arrays of links, so lifting an op out and back in is a few list stores. Unknown ops sit
    in classes of ops with the same effect (kind, value, expected), each placed in call order,
    so a class is a list of members and a count of those placed.
    """

    def __init__(self, ops: list[Op]) -> None:
        completed = [op for op in ops if op.outcome == "ok"]
        # A failed op certainly did nothing; an unknown get did nothing either way.
        unknown = [op for op in ops if op.outcome == "unknown" and op.kind != "get"]
        unknown.sort(key=lambda op: op.call_ns)
        self.ops = completed + unknown
        self.m = m = len(completed)
        self.kind = [_KIND_CODES[op.kind] for op in self.ops]
        unread = _Unread(self.ops)
        self.arg = [unread.abstract(op.value) for op in self.ops]
        self.expected = [op.expected for op in self.ops]
        self.result = [op.result for op in self.ops]
        self.call_ns = [op.call_ns for op in self.ops]
        # Completed ops that never change the register where they are legal.
        self.read_only = [
            k == _GET
            or (k == _CAS and (self.result[i] is False or self.arg[i] == self.expected[i]))
            or (k == _DEL and self.result[i] == 0)
            for i, k in enumerate(self.kind[:m])
        ]
        # Completed ops with the same effect and the same reply are twins (a set's reply says
        # nothing, so sets of one value are twins whatever they answered).
        twins: dict[tuple, int] = {}
        self.twin_of = [
            twins.setdefault(
                (k, self.arg[i], self.expected[i], None if k == _SET else self.result[i]),
                len(twins),
            )
            for i, k in enumerate(self.kind[:m])
        ]
        self._build_list(completed)
        self._build_classes()

        # Where the search got furthest, for the explanation.
        self.best_placed = -1
        self.best_placed_ops: set[int] = set()
        self.best_value: bytes | str | None = None
        self.best_stuck = -1
        self.best_path: list[int] = []

    def _build_list(self, completed: list[Op]) -> None:
        """The call and return entries in time order; calls before returns at equal times."""
        m = self.m
        tail = 2 * m + 1
        order = sorted(
            [(op.call_ns, 0, 2 * i + 1) for i, op in enumerate(completed)]
            + [(_return_ns(op), 1, 2 * i + 2) for i, op in enumerate(completed)]
        )
        self.entry_ns = [0] * (tail + 1)
        self.nxt = [tail] * (tail + 1)
        self.prv = [0] * (tail + 1)
        previous = 0
        for t_ns, _, e in order:
            self.entry_ns[e] = t_ns
            self.nxt[previous] = e
            self.prv[e] = previous
            previous = e
        self.nxt[previous] = tail
        self.prv[tail] = previous

    def _build_classes(self) -> None:
        """Unknown ops grouped by effect, and indexes to find the classes that may help."""
        m, n = self.m, len(self.ops)
        class_of: dict[tuple, int] = {}
        self.class_members: list[list[int]] = []
        self.class_of_op = [-1] * n
        for j in range(m, n):
            effect = (self.kind[j], self.arg[j], self.expected[j])
            if effect not in class_of:
                class_of[effect] = len(self.class_members)
                self.class_members.append([])
            self.class_members[class_of[effect]].append(j)
            self.class_of_op[j] = class_of[effect]
        self.class_placed = [0] * len(self.class_members)
        self.set_class_of: dict[bytes | str, int] = {}
        self.del_class = self.incr_class = -1
        self.cas_classes_of: dict[bytes, list[int]] = defaultdict(list)
        for (kind, arg, expected), c in class_of.items():
            if kind == _SET:
                self.set_class_of[arg] = c
            elif kind == _DEL:
                self.del_class = c
            elif kind == _INCR:
                self.incr_class = c
            else:
                self.cas_classes_of[expected].append(c)
        # Set classes whose value an unknown cas expects, or that an unknown incr could count
        # on from (sorted by that integer).
        self.sets_feeding_cas = sorted(
            c for arg, c in self.set_class_of.items() if arg in self.cas_classes_of
        )
        self.integer_sets = sorted(
            (x, c) for arg, c in self.set_class_of.items() if (x := _counter(arg)) is not None
        )
        self.cas_expected_integers = sorted(
            x for expected in self.cas_classes_of if (x := _counter(expected)) is not None
        )

    def run(self, deadline_s: float | None) -> bool | None:
        """True if linearizable, False if not, None if the deadline passed first."""
        m = self.m
        if m == 0:
            return True
        kind, arg, expected, result = self.kind, self.arg, self.expected, self.result
        read_only, class_of_op, twin_of = self.read_only, self.class_of_op, self.twin_of
        class_members, class_placed = self.class_members, self.class_placed
        nxt, prv, entry_ns = self.nxt, self.prv, self.entry_ns
        tail = 2 * m + 1

        def return_ns_of(e: int) -> int:  # of the op whose call entry is e
            return entry_ns[e + 1]

        # Lowe's cache, holding the states explored without success: (completed ops placed,
        # register value) for states reached by a completed op, and the same plus (unknown op,
        # value before it) for states reached by an unknown op, which allow fewer next steps.
        # Each lists the sets of unknown ops placed (bits) it failed with; a state with more
        # unknown ops placed than a failed one is skipped. States are remembered when the search
        # leaves them having failed, so a skip never relies on a state still being explored.
        failed_free: dict[tuple[int, bytes | str | None], list[int]] = {}
        failed_after_unknown: dict[tuple, list[int]] = {}
        # Frames: (op, its call entry or class, value before it, the two variables below as
        # they were before it, and the moves list, position and barrier of the state it left;
        # the moves list is None if the op was the only move from that state).
        stack: list[tuple] = []
        done_bits = 0  # completed ops placed: bit i for op i
        unknown_bits = 0  # unknown ops placed: bit j - m for op j
        value: bytes | str | None = None
        last_unknown = -1  # the op just placed if it was an unknown one, else -1
        before_unknown: bytes | str | None = None  # and the register value before it
        placed = 0  # completed ops placed
        moves: list[int] | None = []  # call entries (or unknown classes) to try from here
        position = 0  # the next of them to try
        barrier = 0  # the first return entry still listed: nothing called after it may go next
        candidates: list[int] = []  # the call entries of the completed ops that may go next
        steps = 0
        mode = _ENTER

        while True:
            steps += 1
            if (
                steps % DEADLINE_CHECK_STEPS == 0
                and deadline_s is not None
                and time.perf_counter() > deadline_s
            ):
                return None

            if mode == _ENTER:
                # A new state. The completed ops that may go next are those called before the
                # first return still listed. If one of them changes nothing and is legal now,
                # placing it now is as good as later (everything not yet placed returns after
                # it was called), so it is the only move tried. Otherwise all are tried, those
                # returning first first (the order they most likely took effect in), then
                # unknown ops.
                candidates = []
                e = nxt[0]
                while e & 1:
                    candidates.append(e)
                    e = nxt[e]
                invariant(e != tail, "the search ran off the end with ops left to place")
                barrier = e
                for e in candidates:
                    i = e >> 1
                    if (
                        read_only[i]
                        and _replies(kind[i], arg[i], expected[i], result[i], value)[0]
                        and (
                            last_unknown < 0
                            or not _replies(
                                kind[i], arg[i], expected[i], result[i], before_unknown
                            )[0]
                        )
                    ):
                        break
                else:
                    if len(candidates) > 1:
                        candidates.sort(key=return_ns_of)
                        # Of completed ops with the same effect and reply, only the one that
                        # returns first is tried: any linearization placing another twin here
                        # stays valid with the two swapped.
                        seen_twins = set()
                        distinct = []
                        for e in candidates:
                            t = twin_of[e >> 1]
                            if t not in seen_twins:
                                seen_twins.add(t)
                                distinct.append(e)
                        candidates = distinct
                    moves, position, mode = candidates, 0, _SCAN
                    continue
                new_done_bits = done_bits | (1 << i)
                if _dominated(failed_free.get((new_done_bits, value)), unknown_bits):
                    mode = _BACKTRACK
                    continue
                new_value = value
                moves = None

            elif mode == _SCAN:
                while position < len(moves):  # type: ignore[arg-type]
                    e = moves[position]  # type: ignore[index]
                    i = e >> 1
                    legal, new_value = _replies(kind[i], arg[i], expected[i], result[i], value)
                    # Right after an unknown op u, op i must need u: be illegal without it. (An
                    # op legal both with and without u either ends the same, so u could be left
                    # out, or is a failed cas, and u could go after it.)
                    if legal and last_unknown >= 0:
                        legal = not _replies(
                            kind[i], arg[i], expected[i], result[i], before_unknown
                        )[0]
                    if legal:
                        new_done_bits = done_bits | (1 << i)
                        if not _dominated(
                            failed_free.get((new_done_bits, new_value)), unknown_bits
                        ):
                            break
                    position += 1
                else:
                    if placed > self.best_placed:
                        self._remember_best(placed, value, barrier, stack)
                    mode = _CHOOSE_UNKNOWN
                    continue

            elif mode == _CHOOSE_UNKNOWN:
                moves = self._useful_classes(value, candidates, entry_ns[barrier])
                position, mode = 0, _SCAN_UNKNOWN
                continue

            elif mode == _SCAN_UNKNOWN:
                while position < len(moves):  # type: ignore[arg-type]
                    c = moves[position]  # type: ignore[index]
                    j = class_members[c][class_placed[c]]
                    changes, new_value = _apply(kind[j], arg[j], expected[j], value)
                    if changes and last_unknown >= 0:
                        # As for completed ops, j must need u; and two unknown ops that commute
                        # are placed in call order only.
                        u = last_unknown
                        v = _apply(kind[j], arg[j], expected[j], before_unknown)[1]
                        if v == new_value or (
                            class_of_op[u] > c
                            and _apply(kind[u], arg[u], expected[u], v)[1] == new_value
                        ):
                            changes = False
                    if changes:
                        new_unknown_bits = unknown_bits | (1 << (j - m))
                        if not _dominated(
                            failed_free.get((done_bits, new_value)), new_unknown_bits
                        ) and not _dominated(
                            failed_after_unknown.get((done_bits, new_value, j, value)),
                            new_unknown_bits,
                        ):
                            break
                    position += 1
                else:
                    mode = _BACKTRACK
                    continue
                stack.append((j, c, value, last_unknown, before_unknown, moves, position, barrier))
                class_placed[c] += 1
                unknown_bits = new_unknown_bits
                last_unknown, before_unknown, value = j, value, new_value
                mode = _ENTER
                continue

            if mode != _BACKTRACK:
                # Place completed op i (call entry e).
                stack.append((i, e, value, last_unknown, before_unknown, moves, position, barrier))
                done_bits, value, last_unknown = new_done_bits, new_value, -1
                placed += 1
                r = e + 1
                nxt[prv[e]] = nxt[e]
                prv[nxt[e]] = prv[e]
                nxt[prv[r]] = nxt[r]
                prv[nxt[r]] = prv[r]
                if placed == m:
                    self._verify(stack)
                    return True
                mode = _ENTER
                continue

            # _BACKTRACK: nothing more to try here. Remember the failure, take back the last op
            # placed and try the next move of the state before it (none, if it was the only).
            if not stack:
                return False
            i, entry, value_before, last_unknown, before_unknown, moves, position, barrier = (
                stack.pop()
            )
            if i < m:
                _remember_failed(failed_free, (done_bits, value), unknown_bits)
                done_bits ^= 1 << i
                placed -= 1
                r = entry + 1
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                mode = _SCAN
            else:
                _remember_failed(
                    failed_after_unknown, (done_bits, value, i, value_before), unknown_bits
                )
                unknown_bits ^= 1 << (i - m)
                class_placed[entry] -= 1
                mode = _SCAN_UNKNOWN
            if moves is None:
                mode = _BACKTRACK
            else:
                position += 1
                if mode == _SCAN:
                    candidates = moves
            value = value_before

    def _useful_classes(
        self, value: bytes | str | None, candidates: list[int], barrier_ns: int
    ) -> list[int]:
        """The classes of unknown ops worth placing now, from a state where the register holds
        `value` and the completed ops `candidates` may go next.

        An unknown op u placed now must be needed by the next op: a completed op illegal now and
        legal after u, or an unknown cas expecting u's value, or an unknown incr counting on it
        (an unknown set or del never needs what came before it). A chain of unknown incrs must
        in turn be needed, by an op expecting one of the next few integers. Everything else
        could be left out, so it is not tried. What is returned may still include classes that
        turn out useless; they are filtered again when placed.
        """
        kind, arg, expected, result = self.kind, self.arg, self.expected, self.result
        call_ns, class_members, class_placed = self.call_ns, self.class_members, self.class_placed
        # Values that would make some candidate legal, which it is not now.
        wanted: set[bytes | None] = set()
        anything_else = False  # some candidate is legal at any value but this one
        wanted_integers = list(self.cas_expected_integers)
        for e in candidates:
            i = e >> 1
            k, r = kind[i], result[i]
            if k == _GET:
                target = r if isinstance(r, bytes) else None  # an ok get's: bytes or None
            elif k == _CAS:
                target = expected[i]
                if r is False:
                    # Illegal only on its expected value: once past it, it is legal again.
                    if (n := _counter(target)) is not None:
                        wanted_integers.append(n + 1)
                    if value == target:
                        anything_else = True
                    continue
            elif k == _INCR:
                target = b"%d" % (r - 1)  # type: ignore[operator]
                if r == 1 and value is not None and value != b"0":
                    wanted.add(None)  # absent counts as 0
            elif k == _DEL:
                if r == 1 and value is None:
                    anything_else = True
                target = None
                if r != 0:
                    continue
            else:
                continue  # a set is legal anywhere
            if (n := _counter(target)) is not None and target is not None:
                wanted_integers.append(n)
            if not _replies(k, arg[i], expected[i], r, value)[0]:
                wanted.add(target)

        def available(c: int) -> bool:
            members = class_members[c]
            placed = class_placed[c]
            return placed < len(members) and call_ns[members[placed]] <= barrier_ns

        incrs_available = 0
        if self.incr_class >= 0:
            members = class_members[self.incr_class]
            placed = class_placed[self.incr_class]
            while placed < len(members) and call_ns[members[placed]] <= barrier_ns:
                incrs_available += 1
                placed += 1
        wanted_integers.sort()

        def counted_on(start: int, incrs: int) -> bool:
            """Whether `incrs` unknown incrs from `start` could reach a wanted integer."""
            if incrs <= 0:
                return False
            k = bisect.bisect_right(wanted_integers, start)
            return k < len(wanted_integers) and wanted_integers[k] <= start + incrs

        def useful(after: bytes | str | None, incrs: int) -> bool:
            if anything_else or after in wanted or after in self.cas_classes_of:
                return True
            n = _counter(after)  # absent counts as 0
            return n is not None and counted_on(n, incrs)

        classes: set[int] = set()
        if anything_else:
            classes.update(self.set_class_of.values())
            if value is not None and self.del_class >= 0:
                classes.add(self.del_class)
        else:
            for target in wanted:
                c = self.set_class_of.get(target)  # type: ignore[arg-type]
                if c is not None:
                    classes.add(c)
            if (
                self.del_class >= 0
                and value is not None
                and (None in wanted or counted_on(0, incrs_available))
            ):
                classes.add(self.del_class)
            classes.update(self.sets_feeding_cas)
            if self.incr_class >= 0 and incrs_available:
                # Sets of integers that a run of unknown incrs could carry to a wanted one.
                sets = self.integer_sets
                for integer in wanted_integers:
                    lo = bisect.bisect_left(sets, (integer - incrs_available, -1))
                    hi = bisect.bisect_left(sets, (integer, -1))
                    classes.update(c for _, c in sets[lo:hi])
        for c in self.cas_classes_of.get(value, ()):  # type: ignore[arg-type]
            classes.add(c)
        if self.incr_class >= 0 and incrs_available:
            n = _counter(value)
            if n is not None and n < INT64_MAX:
                after = b"%d" % (n + 1)
                if useful(after, incrs_available - 1):
                    classes.add(self.incr_class)

        chosen = []
        for c in sorted(classes):
            if not available(c):
                continue
            j = class_members[c][class_placed[c]]
            changes, after = _apply(kind[j], arg[j], expected[j], value)
            if changes and useful(after, incrs_available - (c == self.incr_class)):
                chosen.append(c)
        return chosen

    def _remember_best(
        self, placed: int, value: bytes | str | None, return_entry: int, stack: list
    ) -> None:
        self.best_placed = placed
        self.best_placed_ops = {frame[0] for frame in stack}
        self.best_value = value
        self.best_stuck = (return_entry >> 1) - 1
        self.best_path = [frame[0] for frame in stack[-WINDOW_PLACED_OPS_MAX:]]

    def _verify(self, stack: list[tuple]) -> None:
        """Replay the linearization found; it must obey the model and the real-time order."""
        order = [frame[0] for frame in stack]
        invariant(len(set(order)) == len(order), "an op was linearized twice")
        invariant(
            sorted(i for i in order if i < self.m) == list(range(self.m)),
            "a completed op was left out of the linearization",
        )
        # With the real values, not UNREAD: this also checks that abstraction. (Messages are
        # built only for the op at fault: formatting every op would cost more than the replay.)
        value = None
        legal = True
        for i in order:
            op = self.ops[i]
            if i < self.m:
                legal, value = _replies(self.kind[i], op.value, op.expected, op.result, value)
                if not legal:
                    break
            else:
                _, value = _apply(self.kind[i], op.value, op.expected, value)
        invariant(legal, f"the linearization found is illegal at {op}")
        # b placed before a is wrong if a returned before b was called.
        earliest_later_return_ns = float("inf")
        in_order = True
        for i in reversed(order):
            op = self.ops[i]
            in_order = earliest_later_return_ns >= op.call_ns
            if not in_order:
                break
            if op.return_ns is not None:
                earliest_later_return_ns = min(earliest_later_return_ns, op.return_ns)
        invariant(in_order, f"the linearization found breaks real-time order at {op}")

    def explain(self, origin_ns: int) -> tuple[tuple[Op, ...], str]:
        """The window around where the search got furthest, and a few lines describing it."""
        invariant(self.best_stuck >= 0, "no explanation recorded for a failed search")
        stuck = self.ops[self.best_stuck]
        return_ns = stuck.return_ns
        # What could have gone before it: completed ops first, then the unknown ops called
        # most recently (those called long ago rarely matter and would crowd the window).
        invariant(return_ns is not None, "the op the search got stuck on has no return")
        completed = [
            i
            for i in range(self.m)
            if i != self.best_stuck
            and i not in self.best_placed_ops
            and self.ops[i].call_ns <= return_ns  # type: ignore[operator]
        ]
        unknown = [
            j
            for j in range(self.m, len(self.ops))
            if j not in self.best_placed_ops and self.ops[j].call_ns <= return_ns  # type: ignore[operator]
        ]
        completed.sort(key=lambda i: self.ops[i].call_ns)
        unknown.sort(key=lambda j: -self.ops[j].call_ns)
        candidates = completed + unknown
        shown = candidates[:WINDOW_CANDIDATE_OPS_MAX]
        window = tuple(self.ops[i] for i in self.best_path) + (stuck,)
        window += tuple(self.ops[i] for i in shown)
        unit = _time_unit(
            max(op.call_ns if op.return_ns is None else op.return_ns for op in window) - origin_ns
        )

        def line(i: int) -> str:
            return "  " + describe_op(self.ops[i], origin_ns, unit)

        lines = [
            (
                f"{self.best_placed} of {self.m} completed ops linearized, then stuck "
                "(times relative to the first op of the history)."
            )
        ]
        if self.best_path:
            lines.append("last ops placed:")
            lines += [line(i) for i in self.best_path]
        lines.append(f"register then holds {_show(self.best_value)}")
        lines.append("cannot place (the earliest-returning op not yet placed):")
        lines.append(line(self.best_stuck))
        if shown:
            lines.append("nor any op that could go before it:")
            lines += [line(i) for i in shown]
            if len(candidates) > len(shown):
                lines.append(f"  ... and {len(candidates) - len(shown)} more")
        else:
            lines.append("and no other op could go before it.")
        return window, "\n".join(lines)


# ---- printing ----


def _show(value: object) -> str:
    if value is None:
        return "absent"
    text = repr(value)
    if len(text) > VALUE_REPR_CHARS_MAX:
        text = text[: VALUE_REPR_CHARS_MAX - 3] + "..."
    return text


# Times print in the largest of these units that the history's span reaches (ms at most, so
# that ops a few microseconds apart stay apart in a long history).
_TIME_UNITS = (("ns", 1), ("us", 1_000), ("ms", 1_000_000))


def _time_unit(span_ns: int) -> tuple[str, int]:
    chosen = _TIME_UNITS[0]
    for unit in _TIME_UNITS:
        if span_ns >= unit[1]:
            chosen = unit
    return chosen


def describe_op(op: Op, origin_ns: int = 0, unit: tuple[str, int] | None = None) -> str:
    """One line: client, times after `origin_ns`, kind, arguments, outcome and result."""
    end_ns = op.call_ns if op.return_ns is None else op.return_ns
    name, size_ns = unit or _time_unit(end_ns - origin_ns)

    def at(t_ns: int) -> str:
        if size_ns == 1:
            return f"+{t_ns - origin_ns}"
        return f"+{(t_ns - origin_ns) / size_ns:.3f}"

    ret = "open" if op.return_ns is None else at(op.return_ns)
    if op.kind == "set":
        action = f"set {_show(op.value)}"
    elif op.kind == "cas":
        action = f"cas {_show(op.expected)} -> {_show(op.value)}"
    else:
        action = op.kind
    if op.outcome == "ok":
        if op.kind == "get":
            reply = _show(op.result)
        elif op.kind == "cas":
            reply = "OK" if op.result else "nil"
        elif op.kind == "set":
            reply = "OK"
        else:
            reply = "?" if op.result is None else repr(op.result)
        outcome = f"=> {reply}"
    elif op.outcome == "fail":
        outcome = "=> failed (no effect)"
    else:
        outcome = "=> unknown outcome"
    return f"client {op.client:<3} [{at(op.call_ns)} .. {ret} {name}]  {action} {outcome}"
