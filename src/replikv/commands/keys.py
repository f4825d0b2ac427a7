"""Keyspace commands: DEL, EXISTS, TYPE, expiry (EXPIRE family, TTL family, PERSIST), KEYS,
SCAN, DBSIZE, RANDOMKEY, FLUSHALL/FLUSHDB, RENAME/RENAMENX and COPY.

Same shape as `strings`: `parse_*` checks syntax without state or clock, `run_*` executes at a
given time and raises CommandError before changing anything. Semantics and error texts follow
Redis 7/8 (db.c, expire.c). Expiry times are absolute milliseconds; relative ones are resolved
against the entry's time, so every replica computes the same instant. These commands work on a
key whatever its type (string, set, hash, list, sorted set or stream); RENAME moves a set, hash,
list, sorted set or stream without copying it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands.glob import compile_glob, literal_prefix, match_everything
from replikv.commands.strings import (
    INT64_MAX,
    INT64_MIN,
    int64_arg,
    invalid_expire,
)
from replikv.replies import OK, SYNTAX, CommandError, Status

if TYPE_CHECKING:
    from replikv.state import KVState

# Every type name Redis knows (SCAN TYPE takes these).
REDIS_TYPE_NAMES = (b"string", b"list", b"set", b"zset", b"hash", b"stream")

SCAN_COUNT_DEFAULT = 10
# COUNT is a hint (as in Redis); one SCAN or SSCAN call looks at no more than this many keys or
# members (a little more: whole shards), so a call never holds the event loop for long.
SCAN_COUNT_MAX = 100_000
SCAN_CURSOR_MAX = (1 << 64) - 1  # Redis cursors are unsigned 64-bit


def parse_nothing(argv: list[bytes]) -> None:
    return None


def _live(state: KVState, key: bytes, time_ms: int) -> bool:
    return state.exists(key, time_ms)


# ---- DEL, EXISTS, TYPE ----


def run_del(state: KVState, keys: list[bytes], time_ms: int) -> int:
    deleted = 0
    for key in keys:
        if _live(state, key, time_ms):
            state.delete(key)
            deleted += 1
    return deleted


def run_exists(state: KVState, keys: list[bytes], time_ms: int) -> int:
    # A key named twice counts twice, as in Redis.
    return sum(_live(state, key, time_ms) for key in keys)


def run_type(state: KVState, key: bytes, time_ms: int) -> Status:
    type_name = state.type_name(key, time_ms)
    return Status("none" if type_name is None else type_name.decode())


# ---- reading expiry ----


def _expiry_reply(state: KVState, key: bytes, time_ms: int) -> int | None:
    """-2 for a missing key, -1 for one without expiry, else None (the caller computes)."""
    if not _live(state, key, time_ms):
        return -2
    if state.expire_at_ms(key) is None:
        return -1
    return None


def run_ttl(state: KVState, key: bytes, time_ms: int) -> int:
    reply = _expiry_reply(state, key, time_ms)
    if reply is not None:
        return reply
    return (state.expire_at_ms(key) - time_ms + 500) // 1000  # type: ignore[operator]


def run_pttl(state: KVState, key: bytes, time_ms: int) -> int:
    reply = _expiry_reply(state, key, time_ms)
    if reply is not None:
        return reply
    return state.expire_at_ms(key) - time_ms  # type: ignore[operator]


def run_expiretime(state: KVState, key: bytes, time_ms: int) -> int:
    reply = _expiry_reply(state, key, time_ms)
    if reply is not None:
        return reply
    return (state.expire_at_ms(key) + 500) // 1000  # type: ignore[operator]


def run_pexpiretime(state: KVState, key: bytes, time_ms: int) -> int:
    reply = _expiry_reply(state, key, time_ms)
    if reply is not None:
        return reply
    return state.expire_at_ms(key)  # type: ignore[return-value]


# ---- setting expiry ----


@dataclass(frozen=True, slots=True)
class ExpireArgs:
    command: str
    key: bytes
    when_ms: int  # absolute, or relative to the entry's time when `relative`
    relative: bool
    nx: bool
    xx: bool
    gt: bool
    lt: bool


def _parse_expire(argv: list[bytes], command: str, unit_ms: int, relative: bool) -> ExpireArgs:
    flags = {b"NX": False, b"XX": False, b"GT": False, b"LT": False}
    for option in argv[3:]:
        name = option.upper()
        if name not in flags:
            text = option.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")
            raise CommandError(f"ERR Unsupported option {text}")
        flags[name] = True
    nx, xx, gt, lt = flags[b"NX"], flags[b"XX"], flags[b"GT"], flags[b"LT"]
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    when = int64_arg(argv[2])
    # C division truncates toward zero; so must the lower bound.
    if unit_ms != 1 and (when > INT64_MAX // unit_ms or when < -(-INT64_MIN // unit_ms)):
        raise invalid_expire(command)
    return ExpireArgs(command, argv[1], when * unit_ms, relative, nx, xx, gt, lt)


def parse_expire(argv: list[bytes]) -> ExpireArgs:
    return _parse_expire(argv, "expire", 1000, True)


def parse_pexpire(argv: list[bytes]) -> ExpireArgs:
    return _parse_expire(argv, "pexpire", 1, True)


def parse_expireat(argv: list[bytes]) -> ExpireArgs:
    return _parse_expire(argv, "expireat", 1000, False)


def parse_pexpireat(argv: list[bytes]) -> ExpireArgs:
    return _parse_expire(argv, "pexpireat", 1, False)


def run_expire(state: KVState, args: ExpireArgs, time_ms: int) -> int:
    when_ms = args.when_ms
    if args.relative:
        if when_ms > INT64_MAX - time_ms:
            raise invalid_expire(args.command)
        when_ms += time_ms
    if not _live(state, args.key, time_ms):
        return 0
    current_ms = state.expire_at_ms(args.key)
    if args.nx and current_ms is not None:
        return 0
    if args.xx and current_ms is None:
        return 0
    # No expiry counts as an infinite time to live: GT never beats it, LT always does.
    if args.gt and (current_ms is None or when_ms <= current_ms):
        return 0
    if args.lt and current_ms is not None and when_ms >= current_ms:
        return 0
    if when_ms <= time_ms:
        state.delete(args.key)  # a time in the past deletes the key, and that counts as set
    else:
        state.set_expire(args.key, when_ms)
    return 1


def run_persist(state: KVState, key: bytes, time_ms: int) -> int:
    if not _live(state, key, time_ms):
        return 0
    return 1 if state.persist(key) else 0


# ---- KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHALL ----


def parse_keys_pattern(argv: list[bytes]) -> tuple[Callable[[bytes], bool], bytes | None]:
    """(the matcher, the literal prefix of a `prefix*` pattern or None)."""
    return compile_glob(argv[1]), literal_prefix(argv[1])


def run_keys(state: KVState, parsed: tuple[Callable[[bytes], bool], bytes | None],
             time_ms: int) -> list[bytes]:
    matches, prefix = parsed
    if prefix is not None:
        return state.keys_matching(time_ms, prefix=prefix)
    return state.keys_matching(time_ms, None if matches is match_everything else matches)


@dataclass(frozen=True, slots=True)
class ScanArgs:
    cursor: int
    count: int
    matches: Callable[[bytes], bool] | None
    type_name: bytes | None  # lowercase


def parse_cursor(raw: bytes) -> int:
    """A SCAN / SSCAN cursor: an unsigned 64-bit decimal."""
    if not raw or len(raw) > 20 or not raw.isdigit():
        raise CommandError("ERR invalid cursor")
    cursor = int(raw)
    if cursor > SCAN_CURSOR_MAX:
        raise CommandError("ERR invalid cursor")
    return cursor


def parse_scan(argv: list[bytes]) -> ScanArgs:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]."""
    cursor = parse_cursor(argv[1])
    count = SCAN_COUNT_DEFAULT
    matches: Callable[[bytes], bool] | None = None
    type_name: bytes | None = None
    i = 2
    while i < len(argv):
        option = argv[i].upper()
        has_value = i + 1 < len(argv)
        if option == b"COUNT" and has_value:
            count = int64_arg(argv[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
            count = min(count, SCAN_COUNT_MAX)
        elif option == b"MATCH" and has_value:
            pattern = argv[i + 1]
            matches = None if pattern == b"*" else compile_glob(pattern)
        elif option == b"TYPE" and has_value:
            type_name = argv[i + 1].lower()
            if type_name not in REDIS_TYPE_NAMES:
                text = argv[i + 1].decode("utf-8", "replace")
                text = text.replace("\r", " ").replace("\n", " ")
                raise CommandError(f"ERR unknown type name '{text}'")
        elif option == b"NOVALUES":
            raise CommandError("ERR NOVALUES option can only be used in HSCAN")
        else:
            raise CommandError(SYNTAX)
        i += 2
    return ScanArgs(cursor, count, matches, type_name)


def run_scan(state: KVState, args: ScanArgs, time_ms: int) -> list[object]:
    next_cursor, found = state.scan(args.cursor, args.count, time_ms)
    if args.type_name is not None:
        type_name = args.type_name
        found = [key for key in found if state.type_name(key, time_ms) == type_name]
    if args.matches is not None:
        matches = args.matches
        found = [key for key in found if matches(key)]
    return [b"%d" % next_cursor, found]


def run_dbsize(state: KVState, parsed: None, time_ms: int) -> int:
    return state.key_count()


def run_randomkey(state: KVState, parsed: None, time_ms: int) -> bytes | None:
    return state.random_key(time_ms)


def parse_flush(argv: list[bytes]) -> None:
    """FLUSHALL / FLUSHDB [ASYNC|SYNC]: both free everything at once here."""
    if len(argv) == 1 or (len(argv) == 2 and argv[1].upper() in (b"ASYNC", b"SYNC")):
        return
    raise CommandError(SYNTAX)


def run_flush(state: KVState, parsed: None, time_ms: int) -> Status:
    state.flush()
    return OK


# ---- RENAME, RENAMENX, COPY ----


def parse_rename(argv: list[bytes]) -> tuple[bytes, bytes]:
    return argv[1], argv[2]


def _rename(state: KVState, source: bytes, target: bytes, time_ms: int, nx: bool) -> bool | None:
    """Move source (any type) to target keeping its expiry. None if target exists and nx
    forbids it."""
    if not _live(state, source, time_ms):
        raise CommandError("ERR no such key")
    if source == target:
        return None if nx else True
    if nx and _live(state, target, time_ms):
        return None
    state.rename(source, target)
    return True


def run_rename(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> Status:
    _rename(state, args[0], args[1], time_ms, nx=False)
    return OK


def run_renamenx(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> int:
    return 0 if _rename(state, args[0], args[1], time_ms, nx=True) is None else 1


@dataclass(frozen=True, slots=True)
class CopyArgs:
    source: bytes
    target: bytes
    replace: bool


def parse_copy(argv: list[bytes]) -> CopyArgs:
    """COPY source destination [DB 0] [REPLACE]. replikv has one database, numbered 0, so DB
    is accepted only as 0; any other number is out of range as in a Redis with one database."""
    replace = False
    i = 3
    while i < len(argv):
        option = argv[i].upper()
        if option == b"REPLACE":
            replace = True
        elif option == b"DB" and i + 1 < len(argv):
            if int64_arg(argv[i + 1]) != 0:
                raise CommandError("ERR DB index is out of range")
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    if argv[1] == argv[2]:
        raise CommandError("ERR source and destination objects are the same")
    return CopyArgs(argv[1], argv[2], replace)


def run_copy(state: KVState, args: CopyArgs, time_ms: int) -> int:
    if not _live(state, args.source, time_ms):
        return 0
    if not args.replace and _live(state, args.target, time_ms):
        return 0
    state.copy(args.source, args.target)  # a collection is copied, not shared
    return 1
