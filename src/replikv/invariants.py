"""Invariant checks that stay on in production.

`assert` disappears under `python -O`; these do not. An invariant failure means replikv has a
bug: the node stops loudly rather than risk corrupting or serving wrong data. A client's mistake
is a CommandError (an error reply); a peer's misbehaviour is dropped and logged; neither is ever
an InvariantViolation.
"""

from __future__ import annotations


class InvariantViolation(RuntimeError):
    """replikv's own bug was detected; the process must not continue."""


def invariant(condition: object, message: str, *args: object) -> None:
    """Raise InvariantViolation(message % args) unless `condition` holds. On hot paths pass the
    values as `args` rather than formatting them into the message (an f-string is formatted
    on every call, even when nothing is wrong)."""
    if not condition:
        raise InvariantViolation(message % args if args else message)
