"""Set commands: SADD, SREM, SCARD, SISMEMBER, SMISMEMBER, SMEMBERS, SPOP, SRANDMEMBER, SMOVE,
SINTER/SUNION/SDIFF with their STORE forms, SINTERCARD and SSCAN.

Same two-step shape as `strings`: `parse_*` checks syntax without state or clock, `run_*`
executes at a given time and raises CommandError before changing anything. Semantics, error
texts and the order of checks follow Redis 7 (t_set.c): e.g. SINTER type-checks every key even
after a missing one, SMOVE from a missing source replies 0 whatever the destination holds, and
SSCAN checks its options only once the key is known to be a set.

Two deliberate differences, both for determinism:
- Replies Redis sends as a RESP3 set (SMEMBERS, SINTER, SUNION, SDIFF, SPOP with a count) are
  lists here. A Python set of bytes iterates in PYTHONHASHSEED order, which differs between
  processes; a list in the set's own order gives the same bytes on every replica.
- Random picks (SPOP, SRANDMEMBER) draw from `state.random_generator()`, seeded by whoever runs
  the command (the log entry carries the seed), using only `randrange`, whose output for a given
  seed is stable across Python versions.

Size limit. A set holds at most SET_MEMBERS_MAX members and SET_MEMBER_BYTES_MAX bytes of
members (Redis has neither). Renaming, copying or storing a set puts its whole post-image in one
log entry in passive replication; these bounds keep that image (members plus msgpack framing of
at most 5 bytes each) under the default 80 MiB entry limit, and bound the work and reply of one
SMEMBERS or SUNION. SADD, SMOVE and SUNIONSTORE refuse to grow a set past them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands.glob import compile_glob
from replikv.commands.keys import SCAN_COUNT_DEFAULT, SCAN_COUNT_MAX, parse_cursor
from replikv.commands.strings import INT64_MAX, int64_arg, parse_int64
from replikv.limits import MIB
from replikv.replies import NOT_INTEGER, SYNTAX, CommandError

if TYPE_CHECKING:
    from replikv.state import KVState, SetValue

SET_MEMBERS_MAX = 4 * 1024 * 1024
SET_MEMBER_BYTES_MAX = 48 * MIB  # the sum of the members' lengths
SET_TOO_BIG = (
    f"ERR set would exceed the maximum size ({SET_MEMBERS_MAX} members, "
    f"{SET_MEMBER_BYTES_MAX} bytes of members)"
)

# SRANDMEMBER with a negative count repeats members, so its reply is not bounded by the set: at
# most this many picks (Redis allows any long) and this many bytes in one reply.
SRANDMEMBER_REPEATS_MAX = SET_MEMBERS_MAX
SRANDMEMBER_REPLY_BYTES_MAX = SET_MEMBER_BYTES_MAX
SRANDMEMBER_TOO_BIG = f"ERR SRANDMEMBER reply would exceed {SRANDMEMBER_REPLY_BYTES_MAX} bytes"

# Redis picks distinct members by copying the set and removing picks when the count is more than
# a third of the set, and by drawing until it has enough distinct ones otherwise.
SRANDMEMBER_COPY_FACTOR = 3


def _check_room(value: SetValue | None, added: list[bytes]) -> None:
    """Refuse a change that would grow a set past the size limit."""
    members = len(added) + (0 if value is None else len(value))
    member_bytes = sum(map(len, added)) + (0 if value is None else value.member_bytes)
    if members > SET_MEMBERS_MAX or member_bytes > SET_MEMBER_BYTES_MAX:
        raise CommandError(SET_TOO_BIG)


# ---- SADD, SREM, SCARD, SISMEMBER, SMISMEMBER, SMEMBERS ----


def parse_key_members(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return argv[1], argv[2:]


def run_sadd(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    key, members = args
    value = state.get_set(key, time_ms)
    # dict.fromkeys drops repeats and keeps the first occurrence's order.
    added = [m for m in dict.fromkeys(members) if value is None or m not in value]
    if not added:
        return 0
    _check_room(value, added)
    return state.set_add(key, added)


def run_srem(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    key, members = args
    if state.get_set(key, time_ms) is None:
        return 0
    return state.set_remove(key, members)


def run_scard(state: KVState, key: bytes, time_ms: int) -> int:
    value = state.get_set(key, time_ms)
    return 0 if value is None else len(value)


def run_sismember(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> int:
    key, member = args
    value = state.get_set(key, time_ms)
    return int(value is not None and member in value)


def run_smismember(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> list[int]:
    key, members = args
    value = state.get_set(key, time_ms)
    return [int(value is not None and member in value) for member in members]


def run_smembers(state: KVState, key: bytes, time_ms: int) -> list[bytes]:
    value = state.get_set(key, time_ms)
    return [] if value is None else value.member_list()


# ---- SPOP, SRANDMEMBER ----


def parse_spop(argv: list[bytes]) -> tuple[bytes, int | None]:
    """SPOP key [count]. The count is checked before the key, as in Redis."""
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    if len(argv) == 2:
        return argv[1], None
    count = parse_int64(argv[2])
    if count is None or count < 0:
        raise CommandError("ERR value is out of range, must be positive")
    return argv[1], count


def run_spop(state: KVState, args: tuple[bytes, int | None], time_ms: int) -> object:
    key, count = args
    value = state.get_set(key, time_ms)
    if value is None:
        return None if count is None else []
    if count is None:
        return state.set_pop(key, 1, state.random_generator())[0]
    if count == 0:
        return []
    return state.set_pop(key, count, state.random_generator())


def parse_srandmember(argv: list[bytes]) -> tuple[bytes, int | None]:
    """SRANDMEMBER key [count]; a negative count may repeat members."""
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    if len(argv) == 2:
        return argv[1], None
    count = int64_arg(argv[2])
    if count < -SRANDMEMBER_REPEATS_MAX:
        raise CommandError(
            "ERR value is out of range, value must between "
            f"{-SRANDMEMBER_REPEATS_MAX} and {INT64_MAX}"
        )
    return argv[1], count


def random_positions(size: int, count: int, rng: random.Random) -> list[int]:
    """`count` (< size) distinct positions of a set or hash of `size`, in random order, O(count)
    work (SRANDMEMBER and HRANDFIELD with a positive count)."""
    if count * SRANDMEMBER_COPY_FACTOR > size:
        # A partial Fisher-Yates shuffle of the positions: O(size), and size < 3 * count.
        positions = list(range(size))
        for i in range(count):
            j = rng.randrange(i, size)
            positions[i], positions[j] = positions[j], positions[i]
        return positions[:count]
    chosen: dict[int, None] = {}  # insertion-ordered, so the reply order is the draw order
    while len(chosen) < count:
        chosen[rng.randrange(size)] = None
    return list(chosen)


def _random_distinct(value: SetValue, count: int, state: KVState) -> list[bytes]:
    """`count` (< len(value)) distinct members in random order, O(count) work."""
    positions = random_positions(len(value), count, state.random_generator())
    return [value.member_at(p) for p in positions]


def run_srandmember(state: KVState, args: tuple[bytes, int | None], time_ms: int) -> object:
    key, count = args
    value = state.get_set(key, time_ms)
    if value is None:
        return None if count is None else []
    size = len(value)
    if count is None:
        return value.member_at(state.random_generator().randrange(size))
    if count == 0:
        return []
    if count < 0:
        rng = state.random_generator()
        picks: list[bytes] = []
        reply_bytes = 0
        for _ in range(-count):
            member = value.member_at(rng.randrange(size))
            reply_bytes += len(member)
            if reply_bytes > SRANDMEMBER_REPLY_BYTES_MAX:
                raise CommandError(SRANDMEMBER_TOO_BIG)
            picks.append(member)
        return picks
    if count >= size:
        return value.member_list()
    return _random_distinct(value, count, state)


# ---- SMOVE ----


def parse_smove(argv: list[bytes]) -> tuple[bytes, bytes, bytes]:
    return argv[1], argv[2], argv[3]


def run_smove(state: KVState, args: tuple[bytes, bytes, bytes], time_ms: int) -> int:
    source, destination, member = args
    source_set = state.get_set(source, time_ms)
    if source_set is None:
        return 0  # whatever the destination holds, as in Redis
    destination_set = state.get_set(destination, time_ms)
    if source == destination:
        return int(member in source_set)
    if member not in source_set:
        return 0
    adds = destination_set is None or member not in destination_set
    if adds:
        _check_room(destination_set, [member])
    state.set_remove(source, [member])
    if adds:
        state.set_add(destination, [member])
    return 1


# ---- SINTER, SUNION, SDIFF and their STORE forms, SINTERCARD ----


def _sets_of(state: KVState, keys: list[bytes], time_ms: int) -> list[SetValue | None]:
    # Every key is type-checked in order, even after a missing one (Redis 7).
    return [state.get_set(key, time_ms) for key in keys]


def _intersection(sets: list[SetValue | None], limit: int = 0) -> list[bytes]:
    """Members of every set, in the smallest set's order; stops at `limit` (0: no limit)."""
    if any(value is None for value in sets):
        return []  # a missing key is an empty set
    ordered: list[SetValue] = sorted(sets, key=len)  # type: ignore[arg-type]
    smallest = ordered[0]
    others = [value for value in ordered[1:] if value is not smallest]
    found: list[bytes] = []
    for member in smallest:
        if all(member in value for value in others):
            found.append(member)
            if len(found) == limit:
                break
    return found


def _union(sets: list[SetValue | None]) -> list[bytes]:
    """Members of any set, in order of first appearance."""
    union: dict[bytes, None] = {}
    for value in sets:
        if value is not None:
            union.update(dict.fromkeys(value))
    return list(union)


def _difference(sets: list[SetValue | None]) -> list[bytes]:
    """Members of the first set that are in none of the others, in the first set's order."""
    first = sets[0]
    if first is None:
        return []
    others = [value for value in sets[1:] if value is not None]
    return [member for member in first if not any(member in value for value in others)]


def run_sinter(state: KVState, keys: list[bytes], time_ms: int) -> list[bytes]:
    return _intersection(_sets_of(state, keys, time_ms))


def run_sunion(state: KVState, keys: list[bytes], time_ms: int) -> list[bytes]:
    return _union(_sets_of(state, keys, time_ms))


def run_sdiff(state: KVState, keys: list[bytes], time_ms: int) -> list[bytes]:
    return _difference(_sets_of(state, keys, time_ms))


def parse_store(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return argv[1], argv[2:]


def _store(state: KVState, destination: bytes, result: list[bytes]) -> int:
    """Replace the destination (whatever it held, without expiry) by the result; an empty
    result deletes it."""
    if result:
        state.write_set(destination, result)
    else:
        state.delete(destination)
    return len(result)


def run_sinterstore(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    destination, keys = args
    return _store(state, destination, _intersection(_sets_of(state, keys, time_ms)))


def run_sunionstore(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    destination, keys = args
    result = _union(_sets_of(state, keys, time_ms))
    _check_room(None, result)  # an intersection or difference is never bigger than a set
    return _store(state, destination, result)


def run_sdiffstore(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    destination, keys = args
    return _store(state, destination, _difference(_sets_of(state, keys, time_ms)))


def parse_sintercard(argv: list[bytes]) -> tuple[list[bytes], int]:
    """SINTERCARD numkeys key [key ...] [LIMIT limit]."""
    numkeys = parse_int64(argv[1])
    if numkeys is None or numkeys < 1:
        raise CommandError("ERR numkeys should be greater than 0")
    if numkeys > len(argv) - 2:
        raise CommandError("ERR Number of keys can't be greater than number of args")
    limit = 0
    i = 2 + numkeys
    while i < len(argv):
        if argv[i].upper() == b"LIMIT" and i + 1 < len(argv):
            value = parse_int64(argv[i + 1])
            if value is None or value < 0:
                raise CommandError("ERR LIMIT can't be negative")
            limit = value
            i += 2
        else:
            raise CommandError(SYNTAX)
    return argv[2 : 2 + numkeys], limit


def numkeys_keys(argv: list[bytes], numkeys_at: int = 1) -> list[bytes]:
    """The keys of a command whose argv[numkeys_at] counts the keys that follow it
    (SINTERCARD, LMPOP, ZMPOP, ZUNION, ...)."""
    numkeys = parse_int64(argv[numkeys_at]) if len(argv) > numkeys_at else None
    if numkeys is None or numkeys < 1:
        return []
    return argv[numkeys_at + 1 : numkeys_at + 1 + numkeys]


def run_sintercard(state: KVState, args: tuple[list[bytes], int], time_ms: int) -> int:
    keys, limit = args
    return len(_intersection(_sets_of(state, keys, time_ms), limit))


# ---- SSCAN ----


@dataclass(frozen=True, slots=True)
class SscanArgs:
    key: bytes
    cursor: int
    count: int
    matches: Callable[[bytes], bool] | None
    # Redis checks SSCAN's options only after finding the set: a bad option on a missing key
    # still replies an empty scan. So a bad option is kept here and raised when run.
    error: str | None


def parse_collection_scan(argv: list[bytes], *, novalues_allowed: bool,
                          ) -> tuple[int, int, Callable[[bytes], bool] | None, bool, str | None]:
    """SSCAN's and HSCAN's `key cursor [MATCH pattern] [COUNT count] [NOVALUES]`: (cursor,
    count, matcher or None, NOVALUES given, the syntax error or None). The cursor is checked
    first (raising), the options as Redis checks them: the first bad one is the error."""
    cursor = parse_cursor(argv[2])
    count = SCAN_COUNT_DEFAULT
    matches: Callable[[bytes], bool] | None = None
    no_values = False
    error: str | None = None
    i = 3
    while i < len(argv) and error is None:
        option = argv[i].upper()
        has_value = i + 1 < len(argv)
        if option == b"COUNT" and has_value:
            value = parse_int64(argv[i + 1])
            if value is None:
                error = NOT_INTEGER
            elif value < 1:
                error = SYNTAX
            else:
                count = min(value, SCAN_COUNT_MAX)
            i += 2
        elif option == b"MATCH" and has_value:
            pattern = argv[i + 1]
            matches = None if pattern == b"*" else compile_glob(pattern)
            i += 2
        elif option == b"NOVALUES":
            if not novalues_allowed:
                error = "ERR NOVALUES option can only be used in HSCAN"
            no_values = True
            i += 1
        else:
            error = SYNTAX  # TYPE included: it only applies to SCAN
    return cursor, count, matches, no_values, error


def parse_sscan(argv: list[bytes]) -> SscanArgs:
    """SSCAN key cursor [MATCH pattern] [COUNT count]. The cursor is checked first."""
    cursor, count, matches, _, error = parse_collection_scan(argv, novalues_allowed=False)
    return SscanArgs(argv[1], cursor, count, matches, error)


def run_sscan(state: KVState, args: SscanArgs, time_ms: int) -> list[object]:
    value = state.get_set(args.key, time_ms)
    if value is None:
        return [b"0", []]
    if args.error is not None:
        raise CommandError(args.error)
    next_cursor, found = value.scan(args.cursor, args.count)
    if args.matches is not None:
        matches = args.matches
        found = [member for member in found if matches(member)]
    return [b"%d" % next_cursor, found]
