"""The smart client's exceptions, and how it sorts the errors redis-py raises.

Every error a command can meet falls in one of three classes, and the class decides whether
the client may send the command again:

- the command's own fault (WRONGTYPE, a syntax error, WTIMEOUT, SESSIONSTALE, ...): raised at
  once, never retried; sending it again would fail the same way, or (WTIMEOUT: the write is
  committed) must not happen;
- a member's trouble that certainly left the command unapplied (the connection could not be
  opened, TRYAGAIN, STALE, NOTSECONDARY, too many clients): retried elsewhere or later;
- a member's trouble after the command was sent (the connection broke, a timeout, UNKNOWN):
  the command may or may not have been applied. Reads are retried. A write is retried only as
  a retryable write (the same session and sequence number, which the cluster applies at most
  once); otherwise the caller gets OutcomeUnknown.
"""

from __future__ import annotations

from enum import Enum

from redis.exceptions import (
    AuthenticationError,
    DataError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class OutcomeUnknown(RedisConnectionError):
    """A write was sent, and then its connection failed (or the node answered UNKNOWN) before
    the client learned whether it was applied. `command` is the command (its arguments as
    given); `cause` the error that cut it off. Read the keys it touches before sending it
    again if it is not idempotent (INCR, APPEND)."""

    def __init__(self, command: tuple, cause: BaseException | None) -> None:
        name = _command_text(command)
        super().__init__(f"the outcome of {name} is unknown: it was sent, then "
                         f"{cause.__class__.__name__ if cause else 'an error'}: {cause}; it may "
                         f"or may not have been applied")
        self.command = command
        self.cause = cause


class NoMemberAvailable(RedisConnectionError):
    """No member of the cluster could be reached (or none fits the read preference) before the
    command's deadline."""


class UnsupportedCommand(DataError):
    """A command the smart client does not send because its effect depends on one connection
    (SELECT, WAIT, MULTI, REPLIKV SESSION, ...) while the client spreads commands over pooled
    connections to several members. Use the client's options (write_concern, read_preference,
    ...) or a plain redis.Redis connected to one node instead."""


class NotSent(Exception):
    """Internal: an attempt failed before anything was sent (no connection); `cause` says
    why. The drivers turn it into a retry; callers never see it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Failure(Enum):
    COMMAND = "command"  # the command's own error: raise it
    NOT_APPLIED = "not_applied"  # certainly not applied: may go elsewhere
    MAYBE_APPLIED = "maybe_applied"  # sent, outcome unknown


# Error codes (first word of an error reply) of member trouble that left the command unapplied.
_NOT_APPLIED_CODES = frozenset({"TRYAGAIN", "STALE", "NOTSECONDARY", "LOADING", "MASTERDOWN"})


def classify(error: BaseException, *, sent: bool) -> Failure:
    """Which class `error` is in, for a command that was (`sent`) or certainly was not sent."""
    if isinstance(error, AuthenticationError):
        # No password, or the wrong one (a redis-py ConnectionError, raised as a connection
        # opens): every member would say the same, so it is the caller's to fix, not to retry.
        return Failure.COMMAND
    if isinstance(error, TryAgainError):
        return Failure.NOT_APPLIED
    if isinstance(error, ResponseError):
        code = str(error).split(" ", 1)[0]
        if code in _NOT_APPLIED_CODES:
            return Failure.NOT_APPLIED
        if code == "UNKNOWN":
            return Failure.MAYBE_APPLIED
        return Failure.COMMAND
    if isinstance(error, RedisConnectionError | RedisTimeoutError | OSError):
        return Failure.MAYBE_APPLIED if sent else Failure.NOT_APPLIED
    if isinstance(error, RedisError):
        # InvalidResponse and the like: the stream is broken, as for a lost connection.
        return Failure.MAYBE_APPLIED if sent else Failure.NOT_APPLIED
    return Failure.COMMAND


def _command_text(command: tuple) -> str:
    parts = []
    for arg in command[:4]:
        text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
        parts.append(text[:40])
    return " ".join(parts) + (" ..." if len(command) > 4 else "")




def describe_connection_error(error: BaseException, timeout_s: float | None = None) -> str:
    """What a failed connection or request means, for a person: redis-py's own text
    ("Error 111 connecting to 127.0.0.1:1. Connection refused.") made plain."""
    text = str(error)
    if isinstance(error, AuthenticationError) or text.startswith(("NOAUTH", "WRONGPASS")):
        return auth_problem(text)
    if isinstance(error, RedisTimeoutError | TimeoutError) or "timed out" in text.lower():
        within = f" within {timeout_s:g} s" if timeout_s is not None else ""
        return (f"no answer{within} (the node may be paused, overloaded, or this is not a "
                "replikv port)")
    if "refused" in text.lower():
        return "connection refused (nothing listens there: is the node running, on that port?)"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "unknown host name"
    if "unreachable" in text.lower():
        return "network unreachable"
    if "connection reset" in text.lower() or "closed by server" in text.lower():
        return "the connection was closed at once (not a replikv client port?)"
    return text


def auth_problem(text: str) -> str:
    """What an authentication error from a node means, and what to do about it."""
    # redis-py drops the code (NOAUTH, WRONGPASS) from the text of the errors it raises, so
    # the rest of the text tells them apart.
    if "without any password configured" in text or "no password is set" in text:
        return ("the node has no password, but one was given: unset REPLIKV_PASSWORD (or pass "
                "no password)")
    if "WRONGPASS" in text or "invalid username-password" in text or "invalid password" in text:
        return ("the node refused the password given (WRONGPASS): REPLIKV_PASSWORD (or "
                "password=...) must be the cluster's requirepass")
    return ("the node has a password (requirepass) and none was given: export "
            "REPLIKV_PASSWORD=... (replikv's commands), or pass password=... (a client)")


__all__ = ["Failure", "NoMemberAvailable", "NotSent", "OutcomeUnknown", "UnsupportedCommand",
           "auth_problem", "classify"]
