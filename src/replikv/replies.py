"""Reply values: what commands return, independent of the wire protocol.

Commands (the state machine, the server's local commands) return plain Python values and the
RESP encoder (`replikv.resp`) turns them into RESP2 or RESP3 bytes for each connection:

    bytes / str      bulk string (str is UTF-8 encoded)
    Status("OK")     simple string  (+OK)
    ErrorReply(msg)  error          (-ERR ...); msg starts with the error code
    int              integer        (bool is a RESP3 boolean, 1/0 in RESP2)
    float            RESP3 double, bulk string in RESP2
    DoubleText(b"")  a double already written out: RESP3 double of that text, bulk in RESP2
    None             null           (RESP2 null bulk string $-1)
    NullArray        RESP2 null array (*-1); RESP3 null
    list / tuple     array
    dict             RESP3 map, flat array in RESP2 (in the dict's order)
    PairArray        RESP3 array of two-element arrays, flat array in RESP2
    KeyedArrays      RESP3 map, RESP2 array of [key, value] arrays (XREAD, XREADGROUP)
    set / frozenset  RESP3 set, array in RESP2

Keeping replies as values lets the same command code serve RESP2 and RESP3 clients and lets the
simulator and tests compare results without parsing bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


class Status(str):
    """A RESP simple string such as OK or PONG (never contains CR or LF)."""

    __slots__ = ()


OK = Status("OK")
PONG = Status("PONG")
QUEUED = Status("QUEUED")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A RESP error. `message` begins with its code: "ERR ...", "WRONGTYPE ...", "TRYAGAIN ..."."""

    message: str

    @property
    def code(self) -> str:
        return self.message.split(" ", 1)[0]


class PairArray(list):
    """Pairs held flat, [a1, b1, a2, b2, ...]: RESP2 sends them as that flat array, RESP3 as an
    array of [a, b] arrays. Redis answers HRANDFIELD ... WITHVALUES so (pairs may repeat, so a
    map cannot carry them)."""

    __slots__ = ()


class KeyedArrays(list):
    """Keys and values held flat, [k1, v1, k2, v2, ...], that Redis sends as a map in RESP3
    and as an array of [key, value] arrays in RESP2: XREAD and XREADGROUP, each stream's key
    with its entries (a key named twice in the command comes twice, as in Redis)."""

    __slots__ = ()


class DoubleText(bytes):
    """A double as its text (GEOPOS's and WITHCOORD's coordinates, which Redis writes with
    17 decimals, trailing zeros cut: addReplyHumanLongDouble): a bulk string of that text in
    RESP2, a RESP3 double of that text."""

    __slots__ = ()


class _NullArray:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NullArray"


NullArray = _NullArray()


class CommandError(Exception):
    """Raised while parsing or executing a command when the client made a mistake.

    The message is the full error text including its code, e.g.
    "ERR wrong number of arguments for 'get' command". It becomes an ErrorReply and never
    changes state.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def reply(self) -> ErrorReply:
        return ErrorReply(self.message)


# Error texts shared by several commands, spelled as Redis spells them so clients that match on
# them keep working.
WRONG_TYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"
OVERFLOW = "ERR increment or decrement would overflow"


def wrong_arity(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"
