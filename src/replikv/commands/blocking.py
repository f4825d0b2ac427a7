"""The blocking list and sorted set commands: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP,
BZPOPMIN, BZPOPMAX and BZMPOP, as one attempt each.

In the table these are writes like LPOP: what `run_*` here does is one attempt, which pops what
is there (the same effects as the non-blocking form, so a passive replica applies nothing new)
or answers nil. That is exactly what Redis does with them inside MULTI (a transaction never
blocks), and what a transaction here does. The waiting is the client connection's
(replikv.server.resp_server, with replikv.server.blocking): it makes an attempt, and while
there is nothing to pop it waits for a committed entry to change one of the keys, or for the
timeout, and tries again. A client parked in a node is thus never an entry parked in the log:
every entry still finishes when it is applied, and the attempt that pops is an ordinary write,
ordered, replicated and acknowledged at the connection's write concern like any other.

Parsing and replies follow Redis 7.0 (t_list.c, t_zset.c, timeout.c): the timeout is read
first (seconds, a float, `ERR timeout is not a float or out of range`, `ERR timeout is
negative`, also for one too large to count in milliseconds, as Redis 7.0 says), then the options, then the keys in order: the
first that holds a value of the wrong type answers WRONGTYPE, the first that holds a list (or
sorted set) is popped from. BLPOP answers [key, element], BZPOPMIN [key, member, score],
BLMPOP and BZMPOP what LMPOP and ZMPOP answer, BLMOVE and BRPOPLPUSH the element; with nothing
to pop an attempt answers a null array (BLMOVE and BRPOPLPUSH a null bulk string, as Redis
answers inside MULTI), and a wait that times out answers a null array (`TIMED_OUT_REPLY`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands import lists, zsets
from replikv.commands.sets import numkeys_keys
from replikv.replies import CommandError, NullArray

if TYPE_CHECKING:
    from replikv.state import KVState

ERR_TIMEOUT_NOT_FLOAT = "ERR timeout is not a float or out of range"
ERR_TIMEOUT_NEGATIVE = "ERR timeout is negative"
# A longer timeout (a thousand years, in milliseconds) is waited out as 0 is, for ever: no
# timer is set that far ahead.
TIMEOUT_MS_MAX = 1000 * 366 * 86_400_000
LLONG_LIMIT = float(1 << 63)
# What a blocked command answers when its timeout passes (Redis 7.0: a null array for every
# blocking list and sorted set command).
TIMED_OUT_REPLY = NullArray


@dataclass(frozen=True, slots=True)
class Blocking:
    """A parsed blocking command: what one attempt does (`args` for `run`), how long to wait
    (`timeout_ms`, 0 for ever), which keys a change to must wake it (`keys`, in order) and
    the type of value it takes from them (TYPE's name)."""

    timeout_ms: int
    keys: tuple[bytes, ...]
    args: object
    pops: bytes = b"list"


def blocking_of(name: str, parsed: object) -> Blocking | None:
    """How a command flagged "blocking" waits, from its parsed arguments: the commands here
    always may; XREAD and XREADGROUP only with BLOCK (streams.waits). None: it answers at
    once."""
    if isinstance(parsed, Blocking):
        return parsed
    from replikv.commands import streams  # (streams is not needed to pop)

    if isinstance(parsed, streams.XreadArgs) and streams.waits(parsed):
        keys = tuple(dict.fromkeys(parsed.keys))
        return Blocking(parsed.block_ms or 0, keys, None, b"stream")
    return None


def parse_timeout(raw: bytes) -> int:
    """A blocking command's timeout in seconds, as Redis 7.0 reads it (a long double, rounded
    up to whole milliseconds): milliseconds, 0 to wait for ever; CommandError otherwise."""
    seconds = zsets.parse_score(raw)
    if seconds is None:
        raise CommandError(ERR_TIMEOUT_NOT_FLOAT)
    millis = seconds * 1000.0
    # Redis 7.0 converts to a long long before its checks: past its range (an infinity too)
    # that gives LLONG_MIN on x86-64, hence "negative".
    rounded = math.ceil(millis) if -LLONG_LIMIT < millis < LLONG_LIMIT else -1
    if rounded < 0:
        raise CommandError(ERR_TIMEOUT_NEGATIVE)
    return 0 if rounded > TIMEOUT_MS_MAX else rounded


# ---- BLPOP, BRPOP, BZPOPMIN, BZPOPMAX: key [key ...] timeout ----


def parse_blpop(argv: list[bytes]) -> Blocking:
    keys = tuple(argv[1:-1])
    return Blocking(parse_timeout(argv[-1]), keys, keys)


def parse_bzpopmin(argv: list[bytes]) -> Blocking:
    keys = tuple(argv[1:-1])
    return Blocking(parse_timeout(argv[-1]), keys, keys, b"zset")


def parse_brpop(argv: list[bytes]) -> Blocking:
    return parse_blpop(argv)


def parse_bzpopmax(argv: list[bytes]) -> Blocking:
    return parse_bzpopmin(argv)


def _list_pop(state: KVState, keys: tuple[bytes, ...], time_ms: int, head: bool) -> object:
    for key in keys:
        if state.get_list(key, time_ms) is not None:  # WRONGTYPE for another type
            return [key, state.list_pop(key, head, 1)[0]]
    return NullArray


def run_blpop(state: KVState, args: Blocking, time_ms: int) -> object:
    return _list_pop(state, args.args, time_ms, True)  # type: ignore[arg-type]


def run_brpop(state: KVState, args: Blocking, time_ms: int) -> object:
    return _list_pop(state, args.args, time_ms, False)  # type: ignore[arg-type]


def _zset_pop(state: KVState, keys: tuple[bytes, ...], time_ms: int, highest: bool) -> object:
    for key in keys:
        value = state.get_zset(key, time_ms)  # WRONGTYPE for another type
        if value is not None:
            score, member = zsets.pop_end(state, key, value, highest, 1)[0]
            return [key, member, score]
    return NullArray


def run_bzpopmin(state: KVState, args: Blocking, time_ms: int) -> object:
    return _zset_pop(state, args.args, time_ms, False)  # type: ignore[arg-type]


def run_bzpopmax(state: KVState, args: Blocking, time_ms: int) -> object:
    return _zset_pop(state, args.args, time_ms, True)  # type: ignore[arg-type]


# ---- BLMOVE, BRPOPLPUSH ----


def parse_blmove(argv: list[bytes]) -> Blocking:
    """source destination LEFT|RIGHT LEFT|RIGHT timeout: the ends first, as Redis reads them."""
    moved = lists.parse_lmove(argv[:5])
    return Blocking(parse_timeout(argv[5]), (argv[1],), moved)


def parse_brpoplpush(argv: list[bytes]) -> Blocking:
    moved = lists.parse_rpoplpush(argv[:3])
    return Blocking(parse_timeout(argv[3]), (argv[1],), moved)


def run_blmove(state: KVState, args: Blocking, time_ms: int) -> object:
    return lists.run_lmove(state, args.args, time_ms)  # type: ignore[arg-type]


# ---- BLMPOP, BZMPOP: timeout numkeys key [key ...] end [COUNT count] ----


def parse_blmpop(argv: list[bytes]) -> Blocking:
    timeout = parse_timeout(argv[1])
    popped = lists.parse_mpop(argv[1:], b"LEFT", b"RIGHT")
    return Blocking(timeout, tuple(popped[0]), popped)


def parse_bzmpop(argv: list[bytes]) -> Blocking:
    timeout = parse_timeout(argv[1])
    popped = lists.parse_mpop(argv[1:], b"MAX", b"MIN")
    return Blocking(timeout, tuple(popped[0]), popped, b"zset")


def run_blmpop(state: KVState, args: Blocking, time_ms: int) -> object:
    return lists.run_lmpop(state, args.args, time_ms)  # type: ignore[arg-type]


def run_bzmpop(state: KVState, args: Blocking, time_ms: int) -> object:
    return zsets.run_zmpop(state, args.args, time_ms)  # type: ignore[arg-type]


def mpop_keys(argv: list[bytes]) -> list[bytes]:
    """BLMPOP's and BZMPOP's keys: argv[2] counts them."""
    return numkeys_keys(argv, 2)
