"""Invariant checks that stay on in production.

`assert` disappears under `python -O`; these do not. An invariant failure means replikv has a
bug: the node stops loudly rather than risk corrupting or serving wrong data. A client's mistake
is a CommandError (an error reply); a peer's misbehaviour is dropped and logged; neither is ever
an InvariantViolation.
"""

from __future__ import annotations


class InvariantViolation(RuntimeError):
    """replikv's own bug was detected; the process must not continue."""


def invariant(condition: object, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)
