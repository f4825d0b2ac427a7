"""Sorted set commands: ZADD, ZINCRBY, ZREM, ZSCORE, ZMSCORE, ZCARD, ZCOUNT, ZLEXCOUNT, ZRANGE and
its older forms (ZRANGEBYSCORE, ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZREVRANGE),
ZRANGESTORE, ZRANK, ZREVRANK, ZPOPMIN, ZPOPMAX, ZMPOP, ZREMRANGEBYSCORE, ZREMRANGEBYRANK,
ZREMRANGEBYLEX, ZRANDMEMBER, ZSCAN, and the set operations ZUNION, ZINTER, ZDIFF, their STORE
forms and ZINTERCARD.

Same two-step shape as `strings`, `sets`, `hashes` and `lists`: `parse_*` checks syntax without
state or clock, `run_*` executes at a given time and raises CommandError before changing
anything. Semantics, replies, error texts and the order of checks follow Redis 7.4 (t_zset.c):
ZADD checks its options and every score before it looks at the key; the range commands parse
every option and both ends of the range first; ZUNION and its relatives look at every key's type
(a set counts, its members scoring 1) before their options, so a bad option comes after
WRONGTYPE; a sorted set left without members is deleted.

Scores are doubles. They are read as Redis reads them (strtod: "inf", "-inf", "+inf",
"1e5", hexadecimal "0x1p3"; "nan", an overflow, or an underflow to zero are not a valid float)
and range bounds as its range parser does ("(" for an exclusive bound, and strtod's leniency: a
leading space, an overflow to inf, an empty string as 0). Replies carry them as Python floats,
which `replikv.resp` writes as Redis 7.4 writes doubles (bulk strings in RESP2, doubles in
RESP3). Two places follow how Redis stores a zset rather than the zset alone:
- -0 as a score. A Redis listpack (a zset of at most 128 members, none longer than 64 bytes)
  stores an integral score as an integer, so a -0 written to one reads back as 0; a bigger
  zset keeps -0. Here a -0 stored into a zset that is, after the change, of a listpack's size
  becomes 0 (the reply of ZADD INCR and ZINCRBY still says -0, as Redis's does).
- ZSCAN's scores are the text Redis keeps in a listpack (as ZSCORE writes them) for a zset of
  a listpack's size, and %.17g for a bigger one, as Redis writes a skiplist's.
A zset that shrank keeps its skiplist in Redis, and Redis converts a zset written by more than
128 pairs at once even if fewer members result; replikv judges by the zset as it is (as OBJECT
ENCODING does), so in those cases the two may differ in the sign of a zero and the digits ZSCAN
shows.

ZRANGEBYLEX and its relatives are meant for members of one score. With several scores Redis's
answer depends on its encoding; here a zset of a listpack's size answers as a listpack does
(a linear walk), a bigger one by binary search over positions as a skiplist's descent does.
LIMIT with a negative offset answers nothing, as a listpack does (and as Redis 7.0 did for
both encodings).

Random picks (ZRANDMEMBER) draw from `state.random_generator()`, seeded by whoever runs the
command, as SRANDMEMBER and HRANDFIELD do.

The blocking forms (BZPOPMIN, BZPOPMAX, BZMPOP) are in `blocking`, built on ZPOPMIN, ZPOPMAX
and ZMPOP here.

Size limit. A sorted set holds at most ZSET_MEMBERS_MAX members and ZSET_BYTES_MAX bytes of
members (Redis has neither). Renaming, copying or storing one puts its whole post-image in one
log entry in passive replication: its members with their framing (at most 5 bytes each) and a
score each (9 bytes), which these bounds keep under the default 80 MiB entry limit (half a
set's member count, since each member carries a score, as a hash's field carries a value). ZADD,
ZINCRBY and the STORE forms refuse to grow a sorted set past them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from replikv.commands.hashes import parse_random_count
from replikv.commands.lists import parse_mpop
from replikv.commands.sets import SscanArgs, numkeys_keys, random_positions
from replikv.commands.strings import int64_arg, parse_int64
from replikv.limits import MIB
from replikv.replies import (
    NOT_FLOAT,
    SYNTAX,
    WRONG_TYPE,
    CommandError,
    NullArray,
    PairArray,
    wrong_arity,
)
from replikv.resp import format_double

if TYPE_CHECKING:
    from replikv.state import KVState, ZSetValue

ZSET_MEMBERS_MAX = 2 * 1024 * 1024
ZSET_BYTES_MAX = 48 * MIB  # the sum of the members' lengths
ZSET_TOO_BIG = (
    f"ERR zset would exceed the maximum size ({ZSET_MEMBERS_MAX} members, "
    f"{ZSET_BYTES_MAX} bytes of members)"
)
# ZRANDMEMBER with a negative count repeats members: at most this many picks and this many
# bytes of members in one reply (as HRANDFIELD and SRANDMEMBER).
ZRANDMEMBER_REPEATS_MAX = 4 * 1024 * 1024
ZRANDMEMBER_REPLY_BYTES_MAX = ZSET_BYTES_MAX
ZRANDMEMBER_TOO_BIG = f"ERR ZRANDMEMBER reply would exceed {ZRANDMEMBER_REPLY_BYTES_MAX} bytes"

ERR_NAN = "ERR resulting score is not a number (NaN)"
ERR_XX_NX = "ERR XX and NX options at the same time are not compatible"
ERR_GT_LT_NX = "ERR GT, LT, and/or NX options at the same time are not compatible"
ERR_INCR_PAIRS = "ERR INCR option supports a single increment-element pair"
ERR_RANGE_FLOAT = "ERR min or max is not a float"
ERR_RANGE_LEX = "ERR min or max not valid string range item"
ERR_LIMIT_RANK = ("ERR syntax error, LIMIT is only supported in combination with either BYSCORE "
                  "or BYLEX")
ERR_WITHSCORES_LEX = "ERR syntax error, WITHSCORES not supported in combination with BYLEX"
ERR_COUNT_NOT_POSITIVE = "ERR value is out of range, must be positive"
ERR_WEIGHT = "ERR weight value is not a float"
ERR_LIMIT_NEGATIVE = "ERR LIMIT can't be negative"

# Redis keeps a sorted set of at most this many members, none longer than this, as a listpack
# (zset-max-listpack-entries, zset-max-listpack-value): OBJECT ENCODING, the -0 rule and
# ZSCAN's score text (see the docstring).
LISTPACK_ENTRIES_MAX = 128
LISTPACK_MEMBER_BYTES_MAX = 64


# ---- reading scores ----

# strtod's grammar (C locale): a sign, then "inf" or "infinity", "nan" with an optional
# (n-char-sequence), a hexadecimal float (0x, hex digits with an optional point, an optional
# binary exponent) or a decimal one (digits with an optional point, an optional exponent).
_FLOAT = re.compile(
    rb"([+-]?)(?:(inf(?:inity)?)|(nan(?:\([0-9a-z_]*\))?)|(0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)"
    rb"(?:p[+-]?[0-9]+)?)|((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?))",
    re.IGNORECASE,
)
_C_SPACE = b" \t\n\v\f\r"


def strtod(text: bytes) -> tuple[float, bool] | None:
    """The double strtod reads from all of `text` (None if it does not take all of it, or
    reads NaN), and whether it over- or underflowed (strtod's ERANGE at an infinity or a
    zero)."""
    match = _FLOAT.fullmatch(text)
    if match is None:
        return None
    sign, infinity, nan, hexadecimal, decimal = match.groups()
    if nan is not None:
        return None
    negative = sign == b"-"
    if infinity is not None:
        return (-math.inf if negative else math.inf), False
    if hexadecimal is not None:
        try:
            value = float.fromhex(hexadecimal.decode())
        except OverflowError:
            value = math.inf
        mantissa = hexadecimal[2:].lower().split(b"p")[0]
    else:
        value = float(decimal)
        mantissa = decimal.lower().split(b"e")[0]
    out_of_range = math.isinf(value) or (value == 0 and mantissa.strip(b"0.") != b"")
    return (-value if negative else value), out_of_range


def parse_score(raw: bytes) -> float | None:
    """A score as Redis reads one (string2d): strtod over the whole argument, no leading
    space, no NaN, no overflow or underflow to zero. None if it is not a valid float."""
    if not raw or raw[0] in _C_SPACE:
        return None
    read = strtod(raw)
    if read is None or read[1]:
        return None
    return read[0]


def _score_arg(raw: bytes, error: str = NOT_FLOAT) -> float:
    score = parse_score(raw)
    if score is None:
        raise CommandError(error)
    return score


@dataclass(frozen=True, slots=True)
class ScoreRange:
    low: float
    low_exclusive: bool
    high: float
    high_exclusive: bool


def _range_bound(raw: bytes) -> tuple[float, bool]:
    """One end of a score range as Redis's zslParseRange reads it: "(" for an exclusive one,
    then strtod up to the end of the C string (so up to a NUL byte), leading spaces allowed,
    an overflow giving an infinity, an empty string 0 (but spaces alone nothing); NaN
    refused."""
    exclusive = raw[:1] == b"("
    text = (raw[1:] if exclusive else raw).split(b"\x00", 1)[0]
    if not text:
        return 0.0, exclusive
    read = strtod(text.lstrip(_C_SPACE))
    if read is None:
        raise CommandError(ERR_RANGE_FLOAT)
    return read[0], exclusive


def parse_score_range(low: bytes, high: bytes) -> ScoreRange:
    return ScoreRange(*_range_bound(low), *_range_bound(high))


@dataclass(frozen=True, slots=True)
class LexRange:
    low: bytes | None  # None: "-" (below everything) or "+" (above everything), see *_edge
    low_exclusive: bool
    high: bytes | None
    high_exclusive: bool
    low_edge: int  # -1 for "-", 1 for "+", 0 for a member
    high_edge: int


def _lex_bound(raw: bytes) -> tuple[bytes | None, bool, int]:
    """One end of a lex range: "-" or "+" (nothing may follow, up to a NUL byte as in C), or a
    member after "(" (exclusive) or "[" (inclusive)."""
    head = raw[:1]
    if head in (b"-", b"+") and raw[1:2] in (b"", b"\x00"):
        return None, True, -1 if head == b"-" else 1
    if head in (b"(", b"["):
        return raw[1:], head == b"(", 0
    raise CommandError(ERR_RANGE_LEX)


def parse_lex_range(low: bytes, high: bytes) -> LexRange:
    low_member, low_exclusive, low_edge = _lex_bound(low)
    high_member, high_exclusive, high_edge = _lex_bound(high)
    return LexRange(low_member, low_exclusive, high_member, high_exclusive, low_edge, high_edge)


def _lex_compare(member: bytes | None, edge: int, other: bytes | None, other_edge: int) -> int:
    """Redis's sdscmplex: "-" below and "+" above every member (and each equal to itself)."""
    if edge or other_edge:
        return 0 if edge == other_edge else (-1 if edge < other_edge else 1)
    return (member > other) - (member < other)  # type: ignore[operator]


def _above_low(member: bytes, spec: LexRange) -> bool:
    cmp = _lex_compare(member, 0, spec.low, spec.low_edge)
    return cmp > 0 if spec.low_exclusive else cmp >= 0


def _below_high(member: bytes, spec: LexRange) -> bool:
    cmp = _lex_compare(member, 0, spec.high, spec.high_edge)
    return cmp < 0 if spec.high_exclusive else cmp <= 0


# ---- positions of a range ----


def _score_span(value: ZSetValue, spec: ScoreRange) -> tuple[int, int]:
    """The positions [start, stop) of the members whose scores are in the range: O(log n)."""
    start = value.score_position(spec.low, spec.low_exclusive)
    stop = value.score_position(spec.high, not spec.high_exclusive)
    return start, max(start, stop)


def _lex_run(value: ZSetValue, spec: LexRange, reverse: bool, offset: int = 0,
             limit: int = -1) -> tuple[int, int]:
    """The positions [first, last) a lex range with LIMIT offset count walks over, as Redis
    walks them: from the first member at or above the low end (provided it is at or below the
    high end; reverse: from the last member at or below the high end, provided it is at or
    above the low end), past `offset` members whatever they are, then on while members stay
    at or below the high end (reverse: down, while at or above the low end), at most `limit`
    (a negative one: no limit). For members of one score that is every member in the range;
    otherwise see the module docstring."""
    cmp = _lex_compare(spec.low, spec.low_edge, spec.high, spec.high_edge)
    size = len(value)
    if (offset < 0 or size == 0 or cmp > 0
            or (cmp == 0 and (spec.low_exclusive or spec.high_exclusive))):
        return 0, 0
    if not _above_low(value.at(size - 1)[1], spec) or not _below_high(value.at(0)[1], spec):
        return 0, 0
    if size <= LISTPACK_ENTRIES_MAX:  # a listpack's linear walk
        members = [member for _, member in value]
        if reverse:
            stop = size
            while stop and not _below_high(members[stop - 1], spec):
                stop -= 1
            if not stop or not _above_low(members[stop - 1], spec):
                return 0, 0
            stop -= offset
            start = stop
            while start > 0 and stop - start != limit and _above_low(members[start - 1], spec):
                start -= 1
            return (start, stop) if start < stop else (0, 0)
        start = 0
        while start < size and not _above_low(members[start], spec):
            start += 1
        if start == size or not _below_high(members[start], spec):
            return 0, 0
        start += offset
        stop = start
        while stop < size and stop - start != limit and _below_high(members[stop], spec):
            stop += 1
        return (start, stop) if start < stop else (0, 0)

    def boundary(passes: Callable[[bytes], bool], low: int, high: int) -> int:
        """The first position in [low, high) whose member does not pass (a skiplist's
        descent: a binary search that takes the members for sorted)."""
        while low < high:
            middle = (low + high) // 2
            if passes(value.at(middle)[1]):
                low = middle + 1
            else:
                high = middle
        return low

    if reverse:
        stop = boundary(lambda member: _below_high(member, spec), 0, size) - offset
        start = boundary(lambda member: not _above_low(member, spec), 0, max(stop, 0))
        if limit >= 0:
            start = max(start, stop - limit)
    else:
        start = boundary(lambda member: not _above_low(member, spec), 0, size) + offset
        stop = boundary(lambda member: _below_high(member, spec), min(start, size), size)
        if limit >= 0:
            stop = min(stop, start + limit)
    return (start, stop) if start < stop else (0, 0)


def _page(start: int, stop: int, offset: int, limit: int) -> tuple[int, int] | None:
    """LIMIT offset count over the positions [start, stop): the positions [first, last) it
    keeps counted from `start` (the caller reverses them for a reverse range); None if
    nothing. A negative count keeps everything from the offset, a negative offset nothing."""
    if offset < 0:
        return None
    first = start + offset
    last = stop if limit < 0 else min(stop, first + limit)
    return (first, last) if first < last else None


# ---- the zset after a change, and -0 ----


def _check_room(value: ZSetValue | None, added: list[bytes]) -> None:
    """Refuse a change that would grow a sorted set past the size limit (`added`: the members
    it adds, none present)."""
    members = len(added) + (0 if value is None else len(value))
    member_bytes = sum(map(len, added)) + (0 if value is None else value.data_bytes)
    if members > ZSET_MEMBERS_MAX or member_bytes > ZSET_BYTES_MAX:
        raise CommandError(ZSET_TOO_BIG)


def _stored_scores(pairs: list[object], size: int, long_members: int) -> list[object]:
    """`pairs` (member, score, ...) as they are stored in a sorted set that holds `size`
    members, `long_members` of them longer than 64 bytes, after the change: a -0 becomes 0 in
    one of a listpack's size (see the module docstring)."""
    if size > LISTPACK_ENTRIES_MAX or long_members:
        return pairs
    return [0.0 if (i % 2 and item == 0.0 and math.copysign(1.0, item) < 0)  # type: ignore[arg-type]
            else item for i, item in enumerate(pairs)]


def _write_result(state: KVState, destination: bytes, ranked: list[tuple[float, bytes]]) -> int:
    """Store a result (score, member) as the destination's new sorted set (whatever it held,
    without expiry); an empty result deletes the destination. Returns its size."""
    if not ranked:
        state.delete(destination)
        return 0
    members = [member for _, member in ranked]
    _check_room(None, members)
    long_members = sum(len(m) > LISTPACK_MEMBER_BYTES_MAX for m in members)
    pairs: list[object] = [item for score, member in ranked for item in (member, score)]
    state.write_zset(destination, _stored_scores(pairs, len(ranked), long_members))
    return len(ranked)


# ---- ZADD, ZINCRBY ----


@dataclass(frozen=True, slots=True)
class ZaddArgs:
    key: bytes
    pairs: list[tuple[float, bytes]]  # (score or increment, member), in the order given
    nx: bool
    xx: bool
    gt: bool
    lt: bool
    ch: bool
    incr: bool


_ZADD_OPTIONS = (b"NX", b"XX", b"CH", b"INCR", b"GT", b"LT")


def _parse_zadd(argv: list[bytes], incr: bool) -> ZaddArgs:
    """ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...], and ZINCRBY key
    increment member, which Redis parses the same way (so ZINCRBY k nx m is a syntax error).
    Checked in Redis's order: options, pairs, conflicts, then every score."""
    flags: set[bytes] = {b"INCR"} if incr else set()  # membership only, never iterated
    index = 2
    while index < len(argv):
        option = argv[index].upper()
        if option not in _ZADD_OPTIONS:
            break
        flags.add(option)
        index += 1
    rest = argv[index:]
    if not rest or len(rest) % 2:
        raise CommandError(SYNTAX)
    nx, xx, gt, lt = (b"NX" in flags, b"XX" in flags, b"GT" in flags, b"LT" in flags)
    if nx and xx:
        raise CommandError(ERR_XX_NX)
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise CommandError(ERR_GT_LT_NX)
    if b"INCR" in flags and len(rest) > 2:
        raise CommandError(ERR_INCR_PAIRS)
    pairs = [(_score_arg(rest[i]), rest[i + 1]) for i in range(0, len(rest), 2)]
    return ZaddArgs(argv[1], pairs, nx, xx, gt, lt, b"CH" in flags, b"INCR" in flags)


def parse_zadd(argv: list[bytes]) -> ZaddArgs:
    return _parse_zadd(argv, False)


def parse_zincrby(argv: list[bytes]) -> ZaddArgs:
    return _parse_zadd(argv, True)


def run_zadd(state: KVState, args: ZaddArgs, time_ms: int) -> object:
    """Each pair in turn as Redis's zsetAdd: the replies count what each did, the effect names
    the members whose score changed, with their final scores."""
    value = state.get_zset(args.key, time_ms)
    if value is None and args.xx:
        return None if args.incr else 0
    changed: dict[bytes, float] = {}  # member -> its new score, in the order first changed
    added = updated = 0
    reply: float | None = None
    for score, member in args.pairs:
        current = changed.get(member)
        if current is None and value is not None:
            current = value.score(member)
        if current is None:
            if args.xx:
                continue
            changed[member] = score
            added += 1
            reply = score
            continue
        if args.nx:
            continue
        if args.incr:
            score += current
            if math.isnan(score):
                raise CommandError(ERR_NAN)
        if (args.lt and score >= current) or (args.gt and score <= current):
            continue
        reply = score
        if score != current:
            changed[member] = score
            updated += 1
    if changed:
        new = [member for member in changed if value is None or member not in value]
        _check_room(value, new)
        size = len(new) + (0 if value is None else len(value))
        long_members = sum(len(m) > LISTPACK_MEMBER_BYTES_MAX for m in new) + (
            0 if value is None else value.long_members)
        pairs: list[object] = [item for member, score in changed.items()
                               for item in (member, score)]
        state.zset_add(args.key, _stored_scores(pairs, size, long_members))
    if args.incr:
        return reply
    return added + updated if args.ch else added


# ---- ZREM, ZCARD, ZSCORE, ZMSCORE ----


def run_zrem(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    key, members = args
    if state.get_zset(key, time_ms) is None:
        return 0
    return state.zset_remove(key, members)


def run_zcard(state: KVState, key: bytes, time_ms: int) -> int:
    value = state.get_zset(key, time_ms)
    return 0 if value is None else len(value)


def run_zscore(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> float | None:
    key, member = args
    value = state.get_zset(key, time_ms)
    return None if value is None else value.score(member)


def run_zmscore(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int
                ) -> list[float | None]:
    key, members = args
    value = state.get_zset(key, time_ms)  # a missing key is an empty zset; another type is not
    return [None if value is None else value.score(member) for member in members]


# ---- ZCOUNT, ZLEXCOUNT ----


def parse_zcount(argv: list[bytes]) -> tuple[bytes, ScoreRange]:
    return argv[1], parse_score_range(argv[2], argv[3])


def _width(value: ZSetValue | None, span: Callable[[ZSetValue], tuple[int, int]]) -> int:
    """How many members the span of positions found in `value` (if any) holds."""
    if value is None:
        return 0
    start, stop = span(value)
    return stop - start


def run_zcount(state: KVState, args: tuple[bytes, ScoreRange], time_ms: int) -> int:
    key, spec = args
    return _width(state.get_zset(key, time_ms), lambda value: _score_span(value, spec))


def parse_zlexcount(argv: list[bytes]) -> tuple[bytes, LexRange]:
    return argv[1], parse_lex_range(argv[2], argv[3])


def run_zlexcount(state: KVState, args: tuple[bytes, LexRange], time_ms: int) -> int:
    key, spec = args
    return _width(state.get_zset(key, time_ms), lambda value: _lex_run(value, spec, False))


# ---- ZRANGE and its older forms, ZRANGESTORE ----

_RANK, _SCORE, _LEX = "rank", "score", "lex"


@dataclass(frozen=True, slots=True)
class RangeArgs:
    key: bytes
    destination: bytes | None  # ZRANGESTORE's
    kind: str  # _RANK, _SCORE or _LEX
    reverse: bool
    with_scores: bool
    offset: int
    limit: int  # -1: no limit
    start: int  # a rank range's ends
    stop: int
    scores: ScoreRange | None
    lex: LexRange | None


def _parse_range(argv: list[bytes], first: int, store: bool, kind: str | None,
                 reverse: bool | None) -> RangeArgs:
    """Redis's zrangeGenericCommand: <key> <min> <max> from argv[first], then the options
    (WITHSCORES unless storing; LIMIT offset count; REV, BYSCORE and BYLEX only where the
    command leaves them open: `kind` or `reverse` None), then the conflicts, then the range."""
    with_scores = False
    offset, limit = 0, -1
    index = first + 3
    while index < len(argv):
        option = argv[index].upper()
        if not store and option == b"WITHSCORES":
            with_scores = True
        elif option == b"LIMIT" and len(argv) - index - 1 >= 2:
            offset, limit = int64_arg(argv[index + 1]), int64_arg(argv[index + 2])
            index += 2
        elif reverse is None and option == b"REV":
            reverse = True
        elif kind is None and option == b"BYLEX":
            kind = _LEX
        elif kind is None and option == b"BYSCORE":
            kind = _SCORE
        else:
            raise CommandError(SYNTAX)
        index += 1
    reverse = bool(reverse)
    kind = kind or _RANK
    if limit != -1 and kind == _RANK:
        raise CommandError(ERR_LIMIT_RANK)
    if with_scores and kind == _LEX:
        raise CommandError(ERR_WITHSCORES_LEX)
    low, high = argv[first + 1], argv[first + 2]
    if reverse and kind != _RANK:
        low, high = high, low  # given as max, min
    start = stop = 0
    scores = lex = None
    if kind == _RANK:
        start, stop = int64_arg(low), int64_arg(high)
    elif kind == _SCORE:
        scores = parse_score_range(low, high)
    else:
        lex = parse_lex_range(low, high)
    return RangeArgs(argv[first], argv[1] if store else None, kind, reverse, with_scores,
                     offset, limit, start, stop, scores, lex)


_RangeParse = Callable[[list[bytes]], RangeArgs]
# (where the key is, storing, the kind and the direction, None where an option chooses them)
parse_zrange: _RangeParse = partial(_parse_range, first=1, store=False, kind=None,
                                    reverse=None)
parse_zrangestore: _RangeParse = partial(_parse_range, first=2, store=True, kind=None,
                                         reverse=None)
parse_zrevrange: _RangeParse = partial(_parse_range, first=1, store=False, kind=_RANK,
                                       reverse=True)
parse_zrangebyscore: _RangeParse = partial(_parse_range, first=1, store=False, kind=_SCORE,
                                           reverse=False)
parse_zrevrangebyscore: _RangeParse = partial(_parse_range, first=1, store=False, kind=_SCORE,
                                              reverse=True)
parse_zrangebylex: _RangeParse = partial(_parse_range, first=1, store=False, kind=_LEX,
                                         reverse=False)
parse_zrevrangebylex: _RangeParse = partial(_parse_range, first=1, store=False, kind=_LEX,
                                            reverse=True)


def rank_span(start: int, stop: int, size: int) -> tuple[int, int] | None:
    """A rank range's ends made positive and clamped: positions [first, last) counted from
    the range's own end, or None when it holds nothing (as LRANGE's)."""
    if start < 0:
        start += size
    if stop < 0:
        stop += size
    start = max(start, 0)
    if start > stop or start >= size:
        return None
    return start, min(stop, size - 1) + 1


def _ranged(value: ZSetValue, args: RangeArgs) -> list[tuple[float, bytes]]:
    """The (score, member) pairs a range names, in the order of the reply."""
    size = len(value)
    if args.kind == _RANK:
        span = rank_span(args.start, args.stop, size)
        if span is None:
            return []
        first, last = span
        if args.reverse:
            first, last = size - last, size - first
        return value.slice(first, last, args.reverse)
    if args.offset > 0 and args.offset >= size:
        return []
    if args.kind == _LEX:
        start, stop = _lex_run(value, args.lex, args.reverse, args.offset,  # type: ignore[arg-type]
                               args.limit)
        return value.slice(start, stop, args.reverse)
    start, stop = _score_span(value, args.scores)  # type: ignore[arg-type]
    if args.reverse:
        page = _page(size - stop, size - start, args.offset, args.limit)
        return [] if page is None else value.slice(size - page[1], size - page[0], True)
    page = _page(start, stop, args.offset, args.limit)
    return [] if page is None else value.slice(*page)


def _with_scores(ranked: list[tuple[float, bytes]], with_scores: bool) -> object:
    """Members, or members with scores: a flat array in RESP2, [member, score] pairs in RESP3
    (a PairArray)."""
    if not with_scores:
        return [member for _, member in ranked]
    pairs = PairArray()
    for score, member in ranked:
        pairs.append(member)
        pairs.append(score)
    return pairs


def run_zrange(state: KVState, args: RangeArgs, time_ms: int) -> object:
    value = state.get_zset(args.key, time_ms)
    if value is None:
        return []
    return _with_scores(_ranged(value, args), args.with_scores)


def run_zrangestore(state: KVState, args: RangeArgs, time_ms: int) -> int:
    value = state.get_zset(args.key, time_ms)
    ranked = [] if value is None else _ranged(value, args)
    return _write_result(state, args.destination, ranked)  # type: ignore[arg-type]


# ---- ZRANK, ZREVRANK ----


def _parse_rank(argv: list[bytes], command: str) -> tuple[bytes, bytes, bool]:
    """key member [WITHSCORE]: (key, member, with the score)."""
    if len(argv) > 4:
        raise CommandError(wrong_arity(command))
    if len(argv) == 4 and argv[3].upper() != b"WITHSCORE":
        raise CommandError(SYNTAX)
    return argv[1], argv[2], len(argv) == 4


def parse_zrank(argv: list[bytes]) -> tuple[bytes, bytes, bool]:
    return _parse_rank(argv, "zrank")


def parse_zrevrank(argv: list[bytes]) -> tuple[bytes, bytes, bool]:
    return _parse_rank(argv, "zrevrank")


def _rank(state: KVState, args: tuple[bytes, bytes, bool], time_ms: int,
          reverse: bool) -> object:
    key, member, with_score = args
    value = state.get_zset(key, time_ms)
    rank = None if value is None else value.rank(member)
    if rank is None:
        return NullArray if with_score else None
    if reverse:
        rank = len(value) - 1 - rank  # type: ignore[arg-type]
    return [rank, value.score(member)] if with_score else rank  # type: ignore[union-attr]


def run_zrank(state: KVState, args: tuple[bytes, bytes, bool], time_ms: int) -> object:
    return _rank(state, args, time_ms, False)


def run_zrevrank(state: KVState, args: tuple[bytes, bytes, bool], time_ms: int) -> object:
    return _rank(state, args, time_ms, True)


# ---- ZPOPMIN, ZPOPMAX, ZMPOP ----


def _parse_pop(argv: list[bytes]) -> tuple[bytes, int | None]:
    """key [count]: the count, if given, an integer >= 0."""
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    if len(argv) == 2:
        return argv[1], None
    count = parse_int64(argv[2])
    if count is None or count < 0:
        raise CommandError(ERR_COUNT_NOT_POSITIVE)
    return argv[1], count


parse_zpopmin: Callable[[list[bytes]], tuple[bytes, int | None]] = _parse_pop
parse_zpopmax: Callable[[list[bytes]], tuple[bytes, int | None]] = _parse_pop


def pop_end(state: KVState, key: bytes, value: ZSetValue, highest: bool,
            count: int) -> list[tuple[float, bytes]]:
    """Pop `count` members from one end (all of them if fewer), in the order they left."""
    count = min(count, len(value))
    if highest:
        removed = state.zset_remove_range(key, len(value) - count, count)
        removed.reverse()
        return removed
    return state.zset_remove_range(key, 0, count)


def _pop(state: KVState, args: tuple[bytes, int | None], time_ms: int, highest: bool) -> object:
    key, count = args
    value = state.get_zset(key, time_ms)
    if value is None or count == 0:
        return []
    popped = pop_end(state, key, value, highest, 1 if count is None else count)
    if count is None:
        score, member = popped[0]
        return [member, score]  # flat in both protocols
    return _with_scores(popped, True)


def run_zpopmin(state: KVState, args: tuple[bytes, int | None], time_ms: int) -> object:
    return _pop(state, args, time_ms, False)


def run_zpopmax(state: KVState, args: tuple[bytes, int | None], time_ms: int) -> object:
    return _pop(state, args, time_ms, True)


def parse_zmpop(argv: list[bytes]) -> tuple[list[bytes], bool, int]:
    """numkeys key [key ...] MIN|MAX [COUNT count]: (keys, highest, count), as LMPOP's."""
    return parse_mpop(argv, b"MAX", b"MIN")


def run_zmpop(state: KVState, args: tuple[list[bytes], bool, int], time_ms: int) -> object:
    """Pop from the first key (in the order given) that holds a sorted set: [key, [[member,
    score], ...]] in both protocols."""
    keys, highest, count = args
    for key in keys:
        value = state.get_zset(key, time_ms)
        if value is not None:
            popped = pop_end(state, key, value, highest, count)
            return [key, [[member, score] for score, member in popped]]
    return NullArray


# ---- ZREMRANGEBYRANK, ZREMRANGEBYSCORE, ZREMRANGEBYLEX ----


def parse_zremrangebyrank(argv: list[bytes]) -> tuple[bytes, int, int]:
    return argv[1], int64_arg(argv[2]), int64_arg(argv[3])


def run_zremrangebyrank(state: KVState, args: tuple[bytes, int, int], time_ms: int) -> int:
    key, start, stop = args
    value = state.get_zset(key, time_ms)
    span = None if value is None else rank_span(start, stop, len(value))
    return 0 if span is None else _remove_span(state, key, *span)


def _remove_span(state: KVState, key: bytes, start: int, stop: int) -> int:
    if start >= stop:
        return 0
    state.zset_remove_range(key, start, stop - start)
    return stop - start


def run_zremrangebyscore(state: KVState, args: tuple[bytes, ScoreRange], time_ms: int) -> int:
    key, spec = args
    value = state.get_zset(key, time_ms)
    return 0 if value is None else _remove_span(state, key, *_score_span(value, spec))


def run_zremrangebylex(state: KVState, args: tuple[bytes, LexRange], time_ms: int) -> int:
    key, spec = args
    value = state.get_zset(key, time_ms)
    return 0 if value is None else _remove_span(state, key, *_lex_run(value, spec, False))


# ---- ZRANDMEMBER ----


@dataclass(frozen=True, slots=True)
class ZrandmemberArgs:
    key: bytes
    count: int | None  # None: one member, answered as a bulk string
    with_scores: bool


def parse_zrandmember(argv: list[bytes]) -> ZrandmemberArgs:
    """ZRANDMEMBER key [count [WITHSCORES]]; a negative count may repeat members. Checked in
    Redis's order: the count's range, then the syntax, then the WITHSCORES range."""
    count, with_scores = parse_random_count(argv, ZRANDMEMBER_REPEATS_MAX, b"withscores")
    return ZrandmemberArgs(argv[1], count, with_scores)


def run_zrandmember(state: KVState, args: ZrandmemberArgs, time_ms: int) -> object:
    value = state.get_zset(args.key, time_ms)
    count = args.count
    if value is None:
        return None if count is None else []
    size = len(value)
    if count is None:
        return value.at(state.random_generator().randrange(size))[1]
    if count == 0:
        return []
    if count < 0:
        rng = state.random_generator()
        picks: list[tuple[float, bytes]] = []
        reply_bytes = 0
        for _ in range(-count):
            pick = value.at(rng.randrange(size))
            reply_bytes += len(pick[1])
            if reply_bytes > ZRANDMEMBER_REPLY_BYTES_MAX:
                raise CommandError(ZRANDMEMBER_TOO_BIG)
            picks.append(pick)
        return _with_scores(picks, args.with_scores)
    if count >= size:  # the whole zset, highest first, as Redis iterates one
        return _with_scores(value.slice(0, size, True), args.with_scores)
    positions = random_positions(size, count, state.random_generator())
    if value.fits_listpack():
        positions.sort()  # Redis samples a listpack's members in their order
    return _with_scores([value.at(p) for p in positions], args.with_scores)


# ---- ZSCAN (parsed as SSCAN is: sets.parse_sscan) ----


def run_zscan(state: KVState, args: SscanArgs, time_ms: int) -> list[object]:
    value = state.get_zset(args.key, time_ms)
    if value is None:
        return [b"0", []]
    if args.error is not None:
        raise CommandError(args.error)
    next_cursor, members = value.scan(args.cursor, args.count)
    # As Redis writes them: a listpack's stored text, a skiplist's %.17g (the docstring).
    as_listpack = value.fits_listpack()
    found: list[bytes] = []
    for member in members:
        if args.matches is not None and not args.matches(member):
            continue
        score: float = value.score(member)  # type: ignore[assignment]
        found.append(member)
        found.append(format_double(score).encode() if as_listpack else b"%.17g" % score)
    return [b"%d" % next_cursor, found]


# ---- ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD ----

_UNION, _INTER, _DIFF = "union", "inter", "diff"
_SUM, _MIN, _MAX = b"SUM", b"MIN", b"MAX"


@dataclass(frozen=True, slots=True)
class SetOpArgs:
    destination: bytes | None
    keys: list[bytes]
    weights: list[float]
    aggregate: bytes
    with_scores: bool
    limit: int  # ZINTERCARD's; 0: none
    # Redis reads the options only after it has looked at every key's type: the first bad
    # option is kept here and raised then.
    error: str | None


def _parse_set_op(argv: list[bytes], numkeys_at: int, operation: str, store: bool,
                  cardinality: bool, command: str) -> SetOpArgs:
    numkeys = int64_arg(argv[numkeys_at])
    if numkeys < 1:
        raise CommandError(f"ERR at least 1 input key is needed for '{command}' command")
    if numkeys > len(argv) - (numkeys_at + 1):
        raise CommandError(SYNTAX)
    index = numkeys_at + 1 + numkeys
    keys = argv[numkeys_at + 1 : index]
    weights = [1.0] * numkeys
    aggregate = _SUM
    with_scores = False
    limit = 0
    error: str | None = None
    options = not cardinality and operation != _DIFF  # WEIGHTS and AGGREGATE
    while index < len(argv):
        option = argv[index].upper()
        remaining = len(argv) - index
        if options and remaining >= numkeys + 1 and option == b"WEIGHTS":
            parsed = [parse_score(raw) for raw in argv[index + 1 : index + 1 + numkeys]]
            if None in parsed:
                error = ERR_WEIGHT
                break
            weights = parsed  # type: ignore[assignment]
            index += 1 + numkeys
        elif options and remaining >= 2 and option == b"AGGREGATE":
            aggregate = argv[index + 1].upper()
            if aggregate not in (_SUM, _MIN, _MAX):
                error = SYNTAX
                break
            index += 2
        elif not store and not cardinality and option == b"WITHSCORES":
            with_scores = True
            index += 1
        elif cardinality and remaining >= 2 and option == b"LIMIT":
            number = parse_int64(argv[index + 1])
            if number is None or number < 0:
                error = ERR_LIMIT_NEGATIVE
                break
            limit = number
            index += 2
        else:
            error = SYNTAX
            break
    return SetOpArgs(argv[1] if store else None, keys, weights, aggregate, with_scores, limit,
                     error)


_SetOpParse = Callable[[list[bytes]], "SetOpArgs"]
_SetOpRun = Callable[["KVState", "SetOpArgs", int], object]
# (where numkeys is, the operation, storing, counting only, the name errors give)
parse_zunion: _SetOpParse = partial(_parse_set_op, numkeys_at=1, operation=_UNION,
                                    store=False, cardinality=False, command="zunion")
parse_zinter: _SetOpParse = partial(_parse_set_op, numkeys_at=1, operation=_INTER,
                                    store=False, cardinality=False, command="zinter")
parse_zdiff: _SetOpParse = partial(_parse_set_op, numkeys_at=1, operation=_DIFF,
                                   store=False, cardinality=False, command="zdiff")
parse_zintercard: _SetOpParse = partial(_parse_set_op, numkeys_at=1, operation=_INTER,
                                        store=False, cardinality=True, command="zintercard")
parse_zunionstore: _SetOpParse = partial(_parse_set_op, numkeys_at=2, operation=_UNION,
                                         store=True, cardinality=False, command="zunionstore")
parse_zinterstore: _SetOpParse = partial(_parse_set_op, numkeys_at=2, operation=_INTER,
                                         store=True, cardinality=False, command="zinterstore")
parse_zdiffstore: _SetOpParse = partial(_parse_set_op, numkeys_at=2, operation=_DIFF,
                                        store=True, cardinality=False, command="zdiffstore")


def store_keys(argv: list[bytes]) -> list[bytes]:
    """ZUNIONSTORE's and its relatives' keys: the destination, then the inputs."""
    return argv[1:2] + numkeys_keys(argv, 2)


# An input and its weight: a ZSetValue, a SetValue, or None for a missing key.
_Source = tuple[object, float]


def _sources(state: KVState, args: SetOpArgs, time_ms: int) -> list[_Source]:
    """Every input with its weight, each key's type checked in order (a set is a sorted set
    whose members score 1); then the option error, if any."""
    from replikv.state import SetValue, ZSetValue  # (the state imports the command table)

    sources: list[_Source] = []
    for key, weight in zip(args.keys, args.weights, strict=True):
        value = state.lookup(key, time_ms)
        if value is not None and type(value) is not ZSetValue and type(value) is not SetValue:
            raise CommandError(WRONG_TYPE)
        sources.append((value, weight))
    if args.error is not None:
        raise CommandError(args.error)
    return sources


def _scores_of(source: object) -> list[tuple[bytes, float]]:
    """An input's (member, score) pairs: a sorted set's in its order, a set's scoring 1."""
    from replikv.state import ZSetValue

    if source is None:
        return []
    if type(source) is ZSetValue:
        return [(member, score) for score, member in source]
    return [(member, 1.0) for member in source]  # type: ignore[attr-defined]


def _score_in(source: object, member: bytes) -> float | None:
    from replikv.state import ZSetValue

    if type(source) is ZSetValue:
        return source.score(member)
    return 1.0 if member in source else None  # type: ignore[operator]


def _aggregate(total: float, value: float, how: bytes) -> float:
    """Redis's zunionInterAggregate: a sum that is NaN (inf + -inf) is 0; MIN and MAX keep
    the total when the value is NaN."""
    if how == _SUM:
        total += value
        return 0.0 if math.isnan(total) else total
    if how == _MIN:
        return min(total, value)  # (the total when the value is NaN)
    return max(total, value)


def _weighted(score: float, weight: float) -> float:
    product = weight * score
    return 0.0 if math.isnan(product) else product


def _set_operation(sources: list[_Source], operation: str, how: bytes,
                   limit: int = 0) -> list[tuple[float, bytes]]:
    """The result as (score, member), lowest first. Inputs are taken smallest first for a
    union or an intersection (stably), so scores add up in Redis's order."""
    if operation == _DIFF:
        first, _ = sources[0]
        others = [source for source, _ in sources[1:] if source is not None]
        found = [(score, member) for member, score in _scores_of(first)
                 if not any(_score_in(other, member) is not None for other in others)]
        found.sort()
        return found
    ordered = sorted(sources, key=lambda source: 0 if source[0] is None else len(source[0]))  # type: ignore[arg-type]
    if operation == _INTER:
        smallest, weight = ordered[0]
        found = []
        for member, score in _scores_of(smallest):
            total = _weighted(score, weight)
            for other, other_weight in ordered[1:]:
                found_score = None if other is None else _score_in(other, member)
                if found_score is None:
                    break
                total = _aggregate(total, found_score * other_weight, how)
            else:
                found.append((total, member))
                if len(found) == limit:
                    break
        found.sort()
        return found
    totals: dict[bytes, float] = {}
    for source, weight in ordered:
        for member, score in _scores_of(source):
            value = _weighted(score, weight)
            current = totals.get(member)
            totals[member] = value if current is None else _aggregate(current, value, how)
    return sorted((score, member) for member, score in totals.items())


def _run_set_op(state: KVState, args: SetOpArgs, time_ms: int, operation: str) -> object:
    sources = _sources(state, args, time_ms)
    ranked = _set_operation(sources, operation, args.aggregate)
    if args.destination is not None:
        return _write_result(state, args.destination, ranked)
    return _with_scores(ranked, args.with_scores)


run_zunion: _SetOpRun = partial(_run_set_op, operation=_UNION)
run_zinter: _SetOpRun = partial(_run_set_op, operation=_INTER)
run_zdiff: _SetOpRun = partial(_run_set_op, operation=_DIFF)


def run_zintercard(state: KVState, args: SetOpArgs, time_ms: int) -> int:
    sources = _sources(state, args, time_ms)
    return len(_set_operation(sources, _INTER, _SUM, args.limit))
