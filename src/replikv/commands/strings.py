"""String commands: GET, SET and its relatives, counters, APPEND and ranges.

Each command is a `parse_*` (syntax and argument decoding, no state, no clock, so a bad command
is refused before it reaches the log) and a `run_*` (executed against the state at the entry's
time, or at the local time for reads). Run functions raise CommandError before they change
anything, so an error reply never leaves a half-applied command behind.

Semantics and error texts follow Redis 7/8 (t_string.c), including the order in which it checks
things, because clients match on error texts and on nil-versus-error outcomes. One deliberate
difference: INCRBYFLOAT computes in decimal rather than x87 long double (see run_incrbyfloat).

Other types: `state.get` raises WRONGTYPE for a key holding a set, as Redis's string lookups do,
so every command that reads the old value (GET, GETSET, INCR, APPEND, SETRANGE, SET with GET or
IFEQ/IFNE, ...) refuses a set; commands that only overwrite (SET, MSET, SETEX) replace it, those
that only test existence (SETNX, MSETNX, SET NX/XX) count it, and MGET reads it as nil.

This module also owns how Redis reads numbers from arguments and values (`int64_arg`), which
the key commands reuse.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from replikv.limits import MIB
from replikv.replies import (
    NOT_FLOAT,
    NOT_INTEGER,
    OK,
    OVERFLOW,
    SYNTAX,
    CommandError,
    wrong_arity,
)

if TYPE_CHECKING:
    from replikv.state import KVState

# Redis's proto-max-bulk-len default: no string may grow past it through APPEND or SETRANGE.
STRING_BYTES_MAX = 512 * MIB
STRING_TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Redis's string2ll: the canonical decimal form only (no '+', spaces or leading zeros, no "-0").
_CANONICAL_INT = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def parse_int64(raw: bytes) -> int | None:
    """The value of `raw` if it is a canonical signed 64-bit integer, else None."""
    if len(raw) > 20 or _CANONICAL_INT.fullmatch(raw) is None:
        return None
    value = int(raw)
    if value < INT64_MIN or value > INT64_MAX:
        return None
    return value


def int64_arg(raw: bytes) -> int:
    """An integer argument; a client mistake if it is not one (Redis's wording)."""
    value = parse_int64(raw)
    if value is None:
        raise CommandError(NOT_INTEGER)
    return value


def invalid_expire(command: str) -> CommandError:
    return CommandError(f"ERR invalid expire time in '{command}' command")


# ---- expiry options shared by SET, SETEX, PSETEX and GETEX ----

_EXPIRE_UNITS = {b"EX": (1000, True), b"PX": (1, True), b"EXAT": (1000, False), b"PXAT": (1, False)}


@dataclass(frozen=True, slots=True)
class ExpireOption:
    """EX/PX/EXAT/PXAT with its raw argument; resolved against the time by `expire_at_ms`."""

    unit_ms: int  # 1000 for seconds, 1 for milliseconds
    relative: bool  # EX/PX add the current time; EXAT/PXAT are absolute
    raw: bytes

    def amount_ms(self, command: str) -> int:
        """The argument in milliseconds, checked as Redis does before looking at the time."""
        amount = int64_arg(self.raw)
        if amount <= 0 or amount > INT64_MAX // self.unit_ms:
            raise invalid_expire(command)
        return amount * self.unit_ms

    def expire_at_ms(self, command: str, time_ms: int) -> int:
        at_ms = self.amount_ms(command) + (time_ms if self.relative else 0)
        if at_ms > INT64_MAX:
            raise invalid_expire(command)
        return at_ms


# ---- argument shapes shared by several commands ----


def parse_key(argv: list[bytes]) -> bytes:
    return argv[1]


def parse_keys(argv: list[bytes]) -> list[bytes]:
    return argv[1:]


def parse_key_value(argv: list[bytes]) -> tuple[bytes, bytes]:
    return argv[1], argv[2]


# ---- GET, SET and relatives ----


def run_get(state: KVState, key: bytes, time_ms: int) -> bytes | None:
    return state.get(key, time_ms)


class SetArgs(NamedTuple):  # a NamedTuple: built per SET, 3x cheaper than a frozen dataclass
    key: bytes
    value: bytes
    condition: bytes | None  # b"NX", b"XX", b"IFEQ", b"IFNE"
    compare_to: bytes | None  # the IFEQ / IFNE value
    get: bool
    expire: ExpireOption | None
    keep_ttl: bool


_SET_CONDITIONS = (b"NX", b"XX", b"IFEQ", b"IFNE")


def _expire_option(option: bytes, amount: bytes, previous: ExpireOption | None) -> ExpireOption:
    """EX/PX/EXAT/PXAT with its amount. Repeating the same one is allowed (the last wins);
    mixing two different ones is a syntax error, as in Redis."""
    unit_ms, relative = _EXPIRE_UNITS[option]
    if previous is not None and (previous.unit_ms, previous.relative) != (unit_ms, relative):
        raise CommandError(SYNTAX)
    return ExpireOption(unit_ms, relative, amount)


def parse_set(argv: list[bytes]) -> SetArgs:
    """SET key value [NX|XX|IFEQ v|IFNE v] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL].

    Like Redis, repeating an option is allowed (the last one wins) and combining two of one
    group is a syntax error."""
    condition: bytes | None = None
    compare_to: bytes | None = None
    get = False
    expire: ExpireOption | None = None
    keep_ttl = False
    i = 3
    while i < len(argv):
        option = argv[i].upper()
        has_next = i + 1 < len(argv)
        if option in _SET_CONDITIONS and condition in (None, option):
            if option in (b"IFEQ", b"IFNE"):
                if not has_next:
                    raise CommandError(SYNTAX)
                i += 1
                compare_to = argv[i]
            condition = option
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and expire is None:
            keep_ttl = True
        elif option in _EXPIRE_UNITS and not keep_ttl and has_next:
            i += 1
            expire = _expire_option(option, argv[i], expire)
        else:
            raise CommandError(SYNTAX)
        i += 1
    if expire is not None:
        expire.amount_ms("set")  # refuse a bad number before it enters the log
    return SetArgs(argv[1], argv[2], condition, compare_to, get, expire, keep_ttl)


def run_set(state: KVState, args: SetArgs, time_ms: int) -> object:
    expire_at_ms = None if args.expire is None else args.expire.expire_at_ms("set", time_ms)
    condition = args.condition
    old: bytes | None = None
    if args.get or condition in (b"IFEQ", b"IFNE"):
        old = state.get(args.key, time_ms)  # WRONGTYPE for a set
        exists = old is not None
    elif condition is not None:
        exists = state.exists(args.key, time_ms)  # a plain SET overwrites any type
    else:
        exists = False  # not looked at: a SET without NX/XX does not ask (no lookup)
    allowed = (
        condition is None
        or (condition == b"NX" and not exists)
        or (condition == b"XX" and exists)
        or (condition == b"IFEQ" and old is not None and old == args.compare_to)
        or (condition == b"IFNE" and old != args.compare_to)
    )
    if allowed:
        if expire_at_ms is not None and expire_at_ms <= time_ms:
            # EXAT/PXAT in the past: Redis stores the key already expired, i.e. it is gone.
            state.delete(args.key)
        elif args.keep_ttl:
            state.write(args.key, args.value, keep_ttl=True)
        else:
            state.write(args.key, args.value, expire_at_ms)
    if args.get:
        return old
    return OK if allowed else None


def run_setnx(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> int:
    key, value = args
    if state.exists(key, time_ms):
        return 0
    state.write(key, value)
    return 1


class SetexArgs(NamedTuple):
    command: str
    key: bytes
    expire: ExpireOption
    value: bytes


def _parse_setex(argv: list[bytes], command: str, unit_ms: int) -> SetexArgs:
    args = SetexArgs(command, argv[1], ExpireOption(unit_ms, True, argv[2]), argv[3])
    args.expire.amount_ms(command)
    return args


def parse_setex(argv: list[bytes]) -> SetexArgs:
    return _parse_setex(argv, "setex", 1000)


def parse_psetex(argv: list[bytes]) -> SetexArgs:
    return _parse_setex(argv, "psetex", 1)


def run_setex(state: KVState, args: SetexArgs, time_ms: int) -> object:
    state.write(args.key, args.value, args.expire.expire_at_ms(args.command, time_ms))
    return OK


def run_getset(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> bytes | None:
    key, value = args
    old = state.get(key, time_ms)
    state.write(key, value)
    return old


def run_getdel(state: KVState, key: bytes, time_ms: int) -> bytes | None:
    old = state.get(key, time_ms)
    if old is not None:
        state.delete(key)
    return old


@dataclass(frozen=True, slots=True)
class GetexArgs:
    key: bytes
    expire: ExpireOption | None
    persist: bool


def parse_getex(argv: list[bytes]) -> GetexArgs:
    """GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST]. The number is checked when run, as
    Redis does: GETEX on a missing key replies nil whatever the number."""
    expire: ExpireOption | None = None
    persist = False
    i = 2
    while i < len(argv):
        option = argv[i].upper()
        if option == b"PERSIST" and expire is None:
            persist = True
        elif option in _EXPIRE_UNITS and not persist and i + 1 < len(argv):
            i += 1
            expire = _expire_option(option, argv[i], expire)
        else:
            raise CommandError(SYNTAX)
        i += 1
    return GetexArgs(argv[1], expire, persist)


def run_getex(state: KVState, args: GetexArgs, time_ms: int) -> bytes | None:
    value = state.get(args.key, time_ms)
    if value is None:
        return None
    if args.expire is not None:
        expire_at_ms = args.expire.expire_at_ms("getex", time_ms)
        if expire_at_ms <= time_ms:
            state.delete(args.key)  # EXAT/PXAT in the past
        else:
            state.set_expire(args.key, expire_at_ms)
    elif args.persist:
        state.persist(args.key)
    return value


def run_mget(state: KVState, keys: list[bytes], time_ms: int) -> list[bytes | None]:
    # A key of another type reads as nil here, not as an error.
    values = [state.lookup(key, time_ms) for key in keys]
    return [value if type(value) is bytes else None for value in values]  # type: ignore[misc]


def _parse_pairs(argv: list[bytes], command: str) -> list[tuple[bytes, bytes]]:
    if len(argv) % 2 == 0:
        raise CommandError(wrong_arity(command))
    return list(zip(argv[1::2], argv[2::2], strict=True))


def parse_mset(argv: list[bytes]) -> list[tuple[bytes, bytes]]:
    return _parse_pairs(argv, "mset")


def parse_msetnx(argv: list[bytes]) -> list[tuple[bytes, bytes]]:
    return _parse_pairs(argv, "msetnx")


def run_mset(state: KVState, pairs: list[tuple[bytes, bytes]], time_ms: int) -> object:
    for key, value in pairs:
        state.write(key, value)
    return OK


def run_msetnx(state: KVState, pairs: list[tuple[bytes, bytes]], time_ms: int) -> int:
    if any(state.exists(key, time_ms) for key, _ in pairs):
        return 0
    for key, value in pairs:
        state.write(key, value)
    return 1


# ---- counters ----


def parse_incr(argv: list[bytes]) -> tuple[bytes, int]:
    return argv[1], 1


def parse_decr(argv: list[bytes]) -> tuple[bytes, int]:
    return argv[1], -1


def parse_incrby(argv: list[bytes]) -> tuple[bytes, int]:
    return argv[1], int64_arg(argv[2])


def parse_decrby(argv: list[bytes]) -> tuple[bytes, int]:
    decrement = int64_arg(argv[2])
    if decrement == INT64_MIN:
        raise CommandError("ERR decrement would overflow")  # -INT64_MIN does not fit
    return argv[1], -decrement


def int64_sum(old: bytes | None, increment: int, not_integer: str) -> int:
    """old (a missing value counts as 0) + increment, as INCRBY and HINCRBY store it; a
    CommandError with `not_integer` if old is not a 64-bit integer, or if the sum overflows."""
    current = 0 if old is None else parse_int64(old)
    if current is None:
        raise CommandError(not_integer)
    result = current + increment
    if result < INT64_MIN or result > INT64_MAX:
        raise CommandError(OVERFLOW)
    return result


def run_incrby(state: KVState, args: tuple[bytes, int], time_ms: int) -> int:
    key, increment = args
    result = int64_sum(state.get(key, time_ms), increment, NOT_INTEGER)
    # INCR keeps the key's time to live, as Redis does.
    state.write(key, b"%d" % result, keep_ttl=True)
    return result


# INCRBYFLOAT: Redis parses with strtold and prints the long double with "%.17Lf" and trailing
# zeros removed. x87 long double arithmetic cannot be reproduced portably in Python, and binary
# floats would print 0.1 + 0.2 as 0.30000000000000004 where Redis prints 0.3. Decimal arithmetic
# is exact for what users type, deterministic everywhere, and agrees with Redis on the
# documented examples: 34 significant digits, then rounded to 17 decimal places like "%.17Lf".
FLOAT_ARG_BYTES_MAX = 5 * 1024 - 1  # Redis's MAX_LONG_DOUBLE_CHARS buffer, less its NUL
_FLOAT_SYNTAX = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)", re.IGNORECASE
)
# The widest exponents decimal allows, so that no typed number silently overflows or underflows
# in parsing; the range check below then refuses what strtold would.
_FLOAT_CONTEXT = decimal.Context(
    prec=34,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[],
)
# Wide enough to hold any finite result to 17 decimal places exactly.
_FLOAT_PRINT_CONTEXT = decimal.Context(prec=6000, rounding=decimal.ROUND_HALF_EVEN, traps=[])
_FLOAT_PRINT_QUANTUM = decimal.Decimal("1e-17")
# The long double range: beyond it strtold reports overflow (or underflow to zero) and Redis
# refuses the number.
_LONG_DOUBLE_MAX = decimal.Decimal("1.18973149535723176502e4932")
_LONG_DOUBLE_TINIEST = decimal.Decimal("3.64519953188247460253e-4951")


def parse_float(raw: bytes) -> decimal.Decimal | None:
    """A number as Redis's string2ld accepts it (decimal forms, inf; not nan), else None.
    Hexadecimal floats, which strtold also reads, are refused."""
    if len(raw) > FLOAT_ARG_BYTES_MAX or _FLOAT_SYNTAX.fullmatch(raw) is None:
        return None
    value = _FLOAT_CONTEXT.create_decimal(raw.decode("ascii"))
    if value.is_infinite():
        # Typed as inf: accepted (the sum is refused later). Reached by overflow: refused.
        return value if raw.lstrip(b"+-")[:1] in (b"i", b"I") else None
    if abs(value) > _LONG_DOUBLE_MAX or (value and abs(value) < _LONG_DOUBLE_TINIEST):
        return None
    return value


def format_float(value: decimal.Decimal) -> bytes:
    """Like Redis's human long double format: 17 decimal places, trailing zeros cut, no "-0"."""
    if value.as_tuple().exponent < -17:  # type: ignore[operator]
        value = value.quantize(_FLOAT_PRINT_QUANTUM, context=_FLOAT_PRINT_CONTEXT)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode("ascii")


def parse_incrbyfloat(argv: list[bytes]) -> tuple[bytes, decimal.Decimal | None]:
    # A bad increment is answered when the command runs, after the key's type is checked
    # (WRONGTYPE first, as in Redis).
    return argv[1], parse_float(argv[2])


def run_incrbyfloat(state: KVState, args: tuple[bytes, decimal.Decimal | None],
                    time_ms: int) -> bytes:
    key, increment = args
    old = state.get(key, time_ms)
    if increment is None:
        raise CommandError(NOT_FLOAT)
    current = decimal.Decimal(0) if old is None else parse_float(old)
    if current is None:
        raise CommandError(NOT_FLOAT)
    text = float_sum(current, increment)
    state.write(key, text, keep_ttl=True)
    return text


def float_sum(current: decimal.Decimal, increment: decimal.Decimal) -> bytes:
    """current + increment as INCRBYFLOAT and HINCRBYFLOAT store it; a CommandError, with
    Redis's text, if the sum is not a finite long double."""
    result = _FLOAT_CONTEXT.add(current, increment)
    if not result.is_finite() or abs(result) > _LONG_DOUBLE_MAX:
        raise CommandError("ERR increment would produce NaN or Infinity")
    return format_float(result)


# ---- APPEND, STRLEN and ranges ----


def run_append(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> int:
    key, suffix = args
    old = state.get(key, time_ms)
    if old is None:
        state.write(key, suffix)
        return len(suffix)
    if len(old) + len(suffix) > STRING_BYTES_MAX:
        raise CommandError(STRING_TOO_LONG)
    value = old + suffix
    state.write(key, value, keep_ttl=True)
    return len(value)


def run_strlen(state: KVState, key: bytes, time_ms: int) -> int:
    value = state.get(key, time_ms)
    return 0 if value is None else len(value)


def parse_getrange(argv: list[bytes]) -> tuple[bytes, int, int]:
    return argv[1], int64_arg(argv[2]), int64_arg(argv[3])


def run_getrange(state: KVState, args: tuple[bytes, int, int], time_ms: int) -> bytes:
    key, start, end = args
    value = state.get(key, time_ms)
    if value is None:
        return b""
    length = len(value)
    if start < 0:
        start += length
    if end < 0:
        end += length
    if length == 0 or start >= length or end < 0 or start > end:
        return b""
    return value[max(start, 0) : min(end, length - 1) + 1]


def parse_setrange(argv: list[bytes]) -> tuple[bytes, int, bytes]:
    offset = int64_arg(argv[2])
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    return argv[1], offset, argv[3]


def run_setrange(state: KVState, args: tuple[bytes, int, bytes], time_ms: int) -> int:
    key, offset, patch = args
    old = state.get(key, time_ms)
    if not patch:
        return 0 if old is None else len(old)  # nothing to write, no key created
    if offset + len(patch) > STRING_BYTES_MAX:
        raise CommandError(STRING_TOO_LONG)
    if old is None:
        state.write(key, bytes(offset) + patch)
        return offset + len(patch)
    if len(old) < offset:
        value = old + bytes(offset - len(old)) + patch
    else:
        value = old[:offset] + patch + old[offset + len(patch) :]
    state.write(key, value, keep_ttl=True)
    return len(value)
