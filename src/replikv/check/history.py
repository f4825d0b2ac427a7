"""Client histories: what each client asked, when, and what it was told.

A history is the raw material of the linearizability checker (`replikv.check.linearizability`).
The deterministic simulator and the real-cluster fault tests record one with `HistoryRecorder`:
`invoke` when a client sends an operation, `complete` when it learns the outcome. An operation
ends in one of three ways, and the difference decides what the checker may assume:

- "ok": the reply arrived; `result` is what the client was told.
- "fail": the operation certainly had no effect (a TRYAGAIN error, a refused INCR on a
  non-integer). The checker drops it.
- "unknown": a timeout, an UNKNOWN error, a crashed client, or no completion at all. The
  operation may have taken effect at any moment after its invocation, even after the history
  ends, or never. `return_ns` is None.

Histories are saved as JSON Lines, one operation per line, so a failing run can be kept next to
its seed and checked again. Bytes (keys, values, byte results) are written as JSON strings in
latin-1: byte N becomes code point N. That maps every byte string to exactly one string and back,
keeps ASCII keys readable, and with JSON's escaping (`\\r`, `\\n`, `\\u00ff`) every line stays
one line of ASCII. Because only bytes are written as strings, a string in the `result` field
always means bytes; a rare `str` result (an error message kept for the record) is written as
{"text": ...} so it, too, reads back exactly.

Ops are checked where they enter (constructing an `Op` validates it), so a malformed history is
refused with a TypeError or ValueError naming the problem, rather than confusing the checker
later; `load_history` reports either as a ValueError with the file and line.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

KINDS = ("get", "set", "cas", "del", "incr")
OUTCOMES = ("ok", "fail", "unknown")

# Which argument fields each kind carries: (value, expected).
_ARGUMENTS = {
    "get": (False, False),
    "set": (True, False),
    "cas": (True, True),
    "del": (False, False),
    "incr": (False, False),
}


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on one key: its arguments, its time interval and its outcome.

    `result` for an "ok" op: get -> bytes or None (absent); cas -> True (OK) or False (nil);
    incr -> the new value as an int; set -> None or the reply; del -> the count (0 or 1), or None
    when it was not recorded. For "fail" and "unknown" ops the result is only kept for the record.
    """

    client: int
    key: bytes
    kind: str  # "get" | "set" | "cas" | "del" | "incr"
    value: bytes | None  # set: the value; cas: the new value
    expected: bytes | None  # cas: the value the key must hold
    call_ns: int  # invocation time (any monotonic clock, integer nanoseconds)
    return_ns: int | None  # completion time; None when the outcome is unknown
    outcome: str  # "ok" | "fail" (certainly no effect) | "unknown"
    result: object

    def __post_init__(self) -> None:
        if not _is_int(self.client):
            raise TypeError(f"client must be an int, not {self.client!r}")
        if not isinstance(self.key, bytes):
            raise TypeError(f"key must be bytes, not {self.key!r}")
        if self.kind not in _ARGUMENTS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        takes_value, takes_expected = _ARGUMENTS[self.kind]
        for field, wanted, x in (
            ("value", takes_value, self.value),
            ("expected", takes_expected, self.expected),
        ):
            if not (isinstance(x, bytes) if wanted else x is None):
                must = "bytes" if wanted else "None"
                raise TypeError(f"{self.kind}: {field} must be {must}, not {x!r}")
        if not _is_int(self.call_ns):
            raise TypeError(f"call_ns must be an int, not {self.call_ns!r}")
        if self.outcome == "unknown":
            if self.return_ns is not None:
                raise ValueError("an op with an unknown outcome has return_ns None")
        elif not _is_int(self.return_ns):
            raise TypeError(f"a completed op needs an int return_ns, not {self.return_ns!r}")
        elif self.return_ns < self.call_ns:
            raise ValueError(f"return_ns {self.return_ns} is before call_ns {self.call_ns}")
        if not isinstance(self.result, (type(None), bool, int, bytes, str)):
            raise TypeError(f"result must be None, bool, int, bytes or str: {self.result!r}")
        if self.outcome == "ok":
            _check_ok_result(self.kind, self.result)


def _check_ok_result(kind: str, result: object) -> None:
    if kind == "get":
        good = result is None or isinstance(result, bytes)
    elif kind == "cas":
        good = isinstance(result, bool)
    elif kind == "incr":
        good = _is_int(result)
    elif kind == "del":
        good = result is None or _is_int(result)
    else:  # set: the reply carries no information about the state
        good = True
    if not good:
        raise TypeError(f"an ok {kind} cannot have the result {result!r}")


# ---- JSON Lines ----


def _bytes_to_json(data: bytes | None) -> str | None:
    return None if data is None else data.decode("latin-1")


def _bytes_from_json(text: object, field: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"{field} must be a string or null, not {text!r}")
    return text.encode("latin-1")  # a code point above 255 raises: not one of our files


def _result_to_json(result: object) -> object:
    if isinstance(result, bytes):
        return result.decode("latin-1")
    if isinstance(result, str):
        return {"text": result}
    return result  # None, bool, int: JSON keeps them apart


def _result_from_json(result: object) -> object:
    if isinstance(result, str):
        return result.encode("latin-1")
    if isinstance(result, dict):
        if set(result) != {"text"} or not isinstance(result["text"], str):
            raise ValueError(f"result object must be {{'text': str}}, not {result!r}")
        return result["text"]
    return result


def op_to_json(op: Op) -> str:
    """One line of JSON (no newline) for `op`."""
    return json.dumps(
        {
            "client": op.client,
            "key": _bytes_to_json(op.key),
            "kind": op.kind,
            "value": _bytes_to_json(op.value),
            "expected": _bytes_to_json(op.expected),
            "call_ns": op.call_ns,
            "return_ns": op.return_ns,
            "outcome": op.outcome,
            "result": _result_to_json(op.result),
        },
        ensure_ascii=True,
        separators=(",", ":"),
    )


_FIELDS = frozenset(
    ("client", "key", "kind", "value", "expected", "call_ns", "return_ns", "outcome", "result")
)
_OPTIONAL = frozenset({"expected"})  # only a compare-and-set has one; null if left out


def op_from_json(line: str) -> Op:
    """The Op written as `line` by `op_to_json`; ValueError if it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict) or not _FIELDS - _OPTIONAL <= set(record) <= _FIELDS:
        raise ValueError(f"an op line must be an object with the fields "
                         f"{sorted(_FIELDS - _OPTIONAL)}, and {sorted(_OPTIONAL)} if it has one")
    key = _bytes_from_json(record["key"], "key")
    if key is None:
        raise ValueError("key must be a string")
    return Op(
        client=record["client"],
        key=key,
        kind=record["kind"],
        value=_bytes_from_json(record["value"], "value"),
        expected=_bytes_from_json(record.get("expected"), "expected"),
        call_ns=record["call_ns"],
        return_ns=record["return_ns"],
        outcome=record["outcome"],
        result=_result_from_json(record["result"]),
    )


def dump_history(ops: list[Op], path: str | Path) -> None:
    """Write `ops` to `path` as JSON Lines, in the given order."""
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for op in ops:
            f.write(op_to_json(op))
            f.write("\n")


def load_history(path: str | Path) -> list[Op]:
    """The ops saved in `path` by `dump_history`. Blank lines are skipped; anything else that
    is not an op raises ValueError with its line number."""
    ops = []
    with open(path, encoding="ascii", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                ops.append(op_from_json(line))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{number}: {e}") from e
    return ops


# ---- recording ----


@dataclass(slots=True)
class _Pending:
    client: int
    key: bytes
    kind: str
    value: bytes | None
    expected: bytes | None
    call_ns: int
    done: Op | None = None


class HistoryRecorder:
    """Collects ops as clients invoke and complete them.

    `invoke` returns a handle; `complete(handle, ...)` records the outcome. An op never completed
    is "unknown" in `ops()`. Arguments are validated at `invoke` and results at `complete`, so a
    recording mistake shows up where it is made. Safe to share between threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []

    def invoke(
        self,
        client: int,
        key: bytes,
        kind: str,
        value: bytes | None = None,
        expected: bytes | None = None,
        *,
        now_ns: int,
    ) -> int:
        # Validate the arguments now, as the unknown op this would be if never completed.
        Op(client, key, kind, value, expected, now_ns, None, "unknown", None)
        with self._lock:
            self._pending.append(_Pending(client, key, kind, value, expected, now_ns))
            return len(self._pending) - 1

    def complete(self, handle: int, outcome: str, result: object, now_ns: int) -> Op:
        """Record how the op `handle` ended. An "unknown" outcome (a timeout) gets return_ns
        None whatever `now_ns` says: the op may still take effect later."""
        with self._lock:
            if not (_is_int(handle) and 0 <= handle < len(self._pending)):
                raise ValueError(f"no such op handle: {handle!r}")
            p = self._pending[handle]
            if p.done is not None:
                raise ValueError(f"op {handle} was already completed: {p.done}")
            return_ns = None if outcome == "unknown" else now_ns
            p.done = Op(
                p.client, p.key, p.kind, p.value, p.expected, p.call_ns, return_ns, outcome, result
            )
            return p.done

    def ops(self) -> list[Op]:
        """Every op in invocation order; those never completed are "unknown"."""
        with self._lock:
            return [p.done or self._unknown(p) for p in self._pending]

    @staticmethod
    def _unknown(p: _Pending) -> Op:
        return Op(p.client, p.key, p.kind, p.value, p.expected, p.call_ns, None, "unknown", None)
