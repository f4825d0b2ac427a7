"""Hash commands: HSET, HSETNX, HMSET, HGET, HMGET, HDEL, HEXISTS, HLEN, HSTRLEN, HKEYS, HVALS,
HGETALL, HINCRBY, HINCRBYFLOAT, HRANDFIELD and HSCAN.

Same two-step shape as `strings` and `sets`: `parse_*` checks syntax without state or clock,
`run_*` executes at a given time and raises CommandError before changing anything. Semantics,
error texts and the order of checks follow Redis 7 (t_hash.c): HINCRBY and HINCRBYFLOAT refuse a
bad increment before they look at the key (so before WRONGTYPE), HRANDFIELD checks its count and
WITHVALUES before the key, HSCAN checks its options only once the key is known to be a hash, HMGET
answers nils for a missing key but WRONGTYPE for another type, and a hash left without fields is
deleted.

Determinism, as for sets: a hash keeps its fields in positions every replica reproduces (see
`replikv.state.HashValue`), and HGETALL, HKEYS, HVALS answer in that order: insertion order until
a field is deleted, then the last field takes the deleted one's place (a Redis listpack keeps the
others in order; a Redis hashtable has an order of its own). HGETALL answers a RESP3 map (in
that order), as Redis does; HRANDFIELD ... WITHVALUES answers [field, value] pairs in RESP3 and a
flat array in RESP2, as Redis does. Random picks draw from `state.random_generator()`, seeded by
whoever runs the command (the log entry carries the seed), with the same draws SRANDMEMBER
makes. HINCRBYFLOAT computes in decimal, as INCRBYFLOAT does (`strings.float_sum`).

Size limit. A hash holds at most HASH_FIELDS_MAX fields and HASH_BYTES_MAX bytes of fields and
values (Redis has neither). Renaming or copying a hash puts its whole post-image in one log
entry in passive replication; these bounds keep that image (fields and values plus msgpack
framing of at most 5 bytes each) under the default 80 MiB entry limit, and bound the work and
reply of one HGETALL. HSET, HMSET, HSETNX, HINCRBY and HINCRBYFLOAT refuse to grow a hash past
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from replikv.commands.sets import parse_collection_scan, random_positions
from replikv.commands.strings import (
    INT64_MAX,
    float_sum,
    int64_arg,
    int64_sum,
    parse_float,
)
from replikv.limits import MIB
from replikv.replies import (
    NOT_FLOAT,
    OK,
    SYNTAX,
    CommandError,
    PairArray,
    Status,
    wrong_arity,
)

if TYPE_CHECKING:
    from replikv.state import HashValue, KVState

HASH_FIELDS_MAX = 2 * 1024 * 1024
HASH_BYTES_MAX = 48 * MIB  # the sum of the fields' and the values' lengths
HASH_TOO_BIG = (
    f"ERR hash would exceed the maximum size ({HASH_FIELDS_MAX} fields, "
    f"{HASH_BYTES_MAX} bytes of fields and values)"
)

# HRANDFIELD with a negative count repeats fields, so its reply is not bounded by the hash: at
# most this many picks (Redis allows any long) and this many bytes of fields (and values) in
# one reply.
HRANDFIELD_REPEATS_MAX = 4 * 1024 * 1024
HRANDFIELD_REPLY_BYTES_MAX = HASH_BYTES_MAX
HRANDFIELD_TOO_BIG = f"ERR HRANDFIELD reply would exceed {HRANDFIELD_REPLY_BYTES_MAX} bytes"
# Redis refuses a WITHVALUES (WITHSCORES) count beyond half a long either way (the reply doubles
# it).
_WITHVALUES_COUNT_MAX = INT64_MAX // 2

ERR_NOT_INTEGER_VALUE = "ERR hash value is not an integer"
ERR_NOT_FLOAT_VALUE = "ERR hash value is not a float"
ERR_NAN_OR_INFINITY = "ERR value is NaN or Infinity"


def _check_room(value: HashValue | None, pairs: list[bytes]) -> None:
    """Refuse a change that would grow a hash past the size limit. `pairs`: the fields it sets,
    each followed by its new value (no field twice)."""
    fields = 0 if value is None else len(value)
    total = 0 if value is None else value.data_bytes
    for i in range(0, len(pairs), 2):
        field, new = pairs[i], pairs[i + 1]
        old = None if value is None else value.get(field)
        if old is None:
            fields += 1
            total += len(field) + len(new)
        else:
            total += len(new) - len(old)
    if fields > HASH_FIELDS_MAX or total > HASH_BYTES_MAX:
        raise CommandError(HASH_TOO_BIG)


# ---- HSET, HMSET, HSETNX ----


def _parse_pairs(argv: list[bytes], command: str) -> tuple[bytes, list[bytes]]:
    """key field value [field value ...]: the fields once each, where each first appears, with
    the last value given (HSET h f 1 f 2 sets f to 2, as Redis does), flat."""
    if len(argv) % 2:
        raise CommandError(wrong_arity(command))
    latest = dict(zip(argv[2::2], argv[3::2], strict=True))
    if len(latest) * 2 == len(argv) - 2:
        return argv[1], argv[2:]
    return argv[1], [item for pair in latest.items() for item in pair]


def parse_hset(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return _parse_pairs(argv, "hset")


def parse_hmset(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return _parse_pairs(argv, "hmset")


def run_hset(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    key, pairs = args
    _check_room(state.get_hash(key, time_ms), pairs)
    return state.hash_set(key, pairs)


def run_hmset(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> Status:
    run_hset(state, args, time_ms)
    return OK


def parse_hsetnx(argv: list[bytes]) -> tuple[bytes, bytes, bytes]:
    return argv[1], argv[2], argv[3]


def run_hsetnx(state: KVState, args: tuple[bytes, bytes, bytes], time_ms: int) -> int:
    key, field, value = args
    hashed = state.get_hash(key, time_ms)
    if hashed is not None and field in hashed:
        return 0
    _check_room(hashed, [field, value])
    state.hash_set(key, [field, value])
    return 1


# ---- HGET, HMGET, HDEL, HEXISTS, HLEN, HSTRLEN ----


def parse_key_field(argv: list[bytes]) -> tuple[bytes, bytes]:
    return argv[1], argv[2]


def parse_key_fields(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return argv[1], argv[2:]


def run_hget(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> bytes | None:
    key, field = args
    hashed = state.get_hash(key, time_ms)
    return None if hashed is None else hashed.get(field)


def run_hmget(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> list[bytes | None]:
    key, fields = args
    hashed = state.get_hash(key, time_ms)  # a missing key is an empty hash; another type is not
    if hashed is None:
        return [None] * len(fields)
    return [hashed.get(field) for field in fields]


def run_hdel(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    key, fields = args
    if state.get_hash(key, time_ms) is None:
        return 0
    return state.hash_delete(key, fields)


def run_hexists(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> int:
    key, field = args
    hashed = state.get_hash(key, time_ms)
    return int(hashed is not None and field in hashed)


def run_hlen(state: KVState, key: bytes, time_ms: int) -> int:
    hashed = state.get_hash(key, time_ms)
    return 0 if hashed is None else len(hashed)


def run_hstrlen(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> int:
    key, field = args
    hashed = state.get_hash(key, time_ms)
    value = None if hashed is None else hashed.get(field)
    return 0 if value is None else len(value)


# ---- HKEYS, HVALS, HGETALL ----


def run_hkeys(state: KVState, key: bytes, time_ms: int) -> list[bytes]:
    hashed = state.get_hash(key, time_ms)
    return [] if hashed is None else hashed.field_list()


def run_hvals(state: KVState, key: bytes, time_ms: int) -> list[bytes]:
    hashed = state.get_hash(key, time_ms)
    return [] if hashed is None else hashed.value_list()


def run_hgetall(state: KVState, key: bytes, time_ms: int) -> dict[bytes, bytes]:
    """A map in RESP3, field value field value ... in RESP2 (replikv.resp encodes a dict so),
    in position order both ways."""
    hashed = state.get_hash(key, time_ms)
    return {} if hashed is None else hashed.as_dict()


# ---- HINCRBY, HINCRBYFLOAT ----


def parse_hincrby(argv: list[bytes]) -> tuple[bytes, bytes, int]:
    # The increment is checked before the key's type, as in Redis.
    return argv[1], argv[2], int64_arg(argv[3])


def run_hincrby(state: KVState, args: tuple[bytes, bytes, int], time_ms: int) -> int:
    key, field, increment = args
    hashed = state.get_hash(key, time_ms)
    result = int64_sum(None if hashed is None else hashed.get(field), increment,
                       ERR_NOT_INTEGER_VALUE)
    pairs = [field, b"%d" % result]
    _check_room(hashed, pairs)
    state.hash_set(key, pairs)
    return result


def parse_hincrbyfloat(argv: list[bytes]) -> tuple[bytes, bytes, Decimal]:
    # The increment is checked before the key's type, as in Redis; so is an infinite one.
    increment = parse_float(argv[3])
    if increment is None:
        raise CommandError(NOT_FLOAT)
    if increment.is_infinite():
        raise CommandError(ERR_NAN_OR_INFINITY)
    return argv[1], argv[2], increment


def run_hincrbyfloat(state: KVState, args: tuple[bytes, bytes, Decimal], time_ms: int) -> bytes:
    key, field, increment = args
    hashed = state.get_hash(key, time_ms)
    old = None if hashed is None else hashed.get(field)
    current = Decimal(0) if old is None else parse_float(old)
    if current is None:
        raise CommandError(ERR_NOT_FLOAT_VALUE)
    text = float_sum(current, increment)
    pairs = [field, text]
    _check_room(hashed, pairs)
    state.hash_set(key, pairs)
    return text


# ---- HRANDFIELD ----


@dataclass(frozen=True, slots=True)
class HrandfieldArgs:
    key: bytes
    count: int | None  # None: one field, answered as a bulk string
    with_values: bool


def parse_random_count(argv: list[bytes], repeats_max: int, option: bytes
                       ) -> tuple[int | None, bool]:
    """HRANDFIELD's and ZRANDMEMBER's `key [count [option]]` (`option` lowercase: withvalues,
    withscores): (the count or None, whether the option was given). A negative count may
    repeat members, at most `repeats_max` times. Checked in Redis's order: the count's range,
    then the syntax, then the option's range (the reply doubles the count)."""
    if len(argv) == 2:
        return None, False
    count = int64_arg(argv[2])
    if count < -repeats_max:
        raise CommandError(
            f"ERR value is out of range, value must between {-repeats_max} and {INT64_MAX}")
    if len(argv) > 4 or (len(argv) == 4 and argv[3].lower() != option):
        raise CommandError(SYNTAX)
    with_option = len(argv) == 4
    if with_option and count > _WITHVALUES_COUNT_MAX:
        raise CommandError("ERR value is out of range")
    return count, with_option


def parse_hrandfield(argv: list[bytes]) -> HrandfieldArgs:
    """HRANDFIELD key [count [WITHVALUES]] (see parse_random_count)."""
    count, with_values = parse_random_count(argv, HRANDFIELD_REPEATS_MAX, b"withvalues")
    return HrandfieldArgs(argv[1], count, with_values)


def _picked(hashed: HashValue, positions: list[int], with_values: bool) -> object:
    if not with_values:
        return [hashed.field_at(p) for p in positions]
    pairs = PairArray()
    for p in positions:
        pairs.append(hashed.field_at(p))
        pairs.append(hashed.value_at(p))
    return pairs


def run_hrandfield(state: KVState, args: HrandfieldArgs, time_ms: int) -> object:
    hashed = state.get_hash(args.key, time_ms)
    count = args.count
    if hashed is None:
        return None if count is None else []
    size = len(hashed)
    if count is None:
        return hashed.field_at(state.random_generator().randrange(size))
    if count == 0:
        return []
    if count < 0:
        rng = state.random_generator()
        positions: list[int] = []
        reply_bytes = 0
        for _ in range(-count):
            position = rng.randrange(size)
            reply_bytes += len(hashed.field_at(position))
            if args.with_values:
                reply_bytes += len(hashed.value_at(position))
            if reply_bytes > HRANDFIELD_REPLY_BYTES_MAX:
                raise CommandError(HRANDFIELD_TOO_BIG)
            positions.append(position)
        return _picked(hashed, positions, args.with_values)
    if count >= size:
        return _picked(hashed, list(range(size)), args.with_values)
    return _picked(hashed, random_positions(size, count, state.random_generator()),
                   args.with_values)


# ---- HSCAN ----


@dataclass(frozen=True, slots=True)
class HscanArgs:
    key: bytes
    cursor: int
    count: int
    matches: Callable[[bytes], bool] | None
    no_values: bool
    # Redis checks HSCAN's options only after finding the hash: a bad option on a missing key
    # still replies an empty scan. So a bad option is kept here and raised when run.
    error: str | None


def parse_hscan(argv: list[bytes]) -> HscanArgs:
    """HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]. The cursor is checked
    first."""
    cursor, count, matches, no_values, error = parse_collection_scan(argv,
                                                                     novalues_allowed=True)
    return HscanArgs(argv[1], cursor, count, matches, no_values, error)


def run_hscan(state: KVState, args: HscanArgs, time_ms: int) -> list[object]:
    hashed = state.get_hash(args.key, time_ms)
    if hashed is None:
        return [b"0", []]
    if args.error is not None:
        raise CommandError(args.error)
    next_cursor, positions = hashed.scan(args.cursor, args.count)
    matches = args.matches
    found: list[bytes] = []
    for position in positions:
        field = hashed.field_at(position)
        if matches is not None and not matches(field):
            continue
        found.append(field)
        if not args.no_values:
            found.append(hashed.value_at(position))
    return [b"%d" % next_cursor, found]
