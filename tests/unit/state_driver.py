"""A KVState with argument conversion, shared by the command tests."""

from __future__ import annotations

from replikv.replies import ErrorReply
from replikv.state import KVState

T0 = 1_000_000


def _arg(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class Node:
    """One replica's state machine: `write` applies like a log entry, `read` like a query.
    `seed` is the random seed the entry or the read carries (SPOP, SRANDMEMBER)."""

    def __init__(self) -> None:
        self.state = KVState()

    def write(self, *args: object, t: int = T0, seed: int = 0) -> object:
        return self.state.apply_command([_arg(a) for a in args], t, seed)

    def read(self, *args: object, t: int = T0, seed: int = 0) -> object:
        return self.state.execute_read([_arg(a) for a in args], t, seed)


def err(message: str) -> ErrorReply:
    return ErrorReply(message)
