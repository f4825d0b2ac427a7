"""List commands: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP, LLEN, LINDEX, LRANGE, LSET, LREM,
LTRIM, LINSERT, LPOS, LMOVE, RPOPLPUSH and LMPOP.

Same two-step shape as `strings`, `sets` and `hashes`: `parse_*` checks syntax without state or
clock, `run_*` executes at a given time and raises CommandError before changing anything.
Semantics, replies, error texts and the order of checks follow Redis 7 (t_list.c): LRANGE,
LTRIM and LREM refuse a bad integer before they look at the key, LINDEX and LSET only after it
(LINDEX of a missing key is nil whatever its index), LPOP with a count answers a null array for
a missing key, LPOS and LMPOP check every option first, LMOVE looks at the destination's type
only once the source is known to hold a list, and a list left without elements is deleted. A
list's order is the only order it has, so every replica answers alike without any care here
beyond never reading a clock or a random generator.

The blocking forms (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP) are in `blocking`: one attempt
each, built on LPOP, LMOVE and LMPOP here; the client's connection does the waiting.

Size limit. A list holds at most LIST_ELEMENTS_MAX elements and LIST_BYTES_MAX bytes of them
(Redis has neither). Renaming or copying a list puts its whole post-image in one log entry in
passive replication; these bounds keep that image (elements plus msgpack framing of at most 5
bytes each) under the default 80 MiB entry limit, and bound the work and reply of one LRANGE.
The pushes, LSET, LINSERT, LMOVE and RPOPLPUSH refuse to grow a list past them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replikv.commands.strings import int64_arg, parse_int64
from replikv.limits import MIB
from replikv.replies import OK, SYNTAX, CommandError, NullArray, Status, wrong_arity

if TYPE_CHECKING:
    from replikv.state import KVState, ListValue

LIST_ELEMENTS_MAX = 4 * 1024 * 1024
LIST_BYTES_MAX = 48 * MIB  # the sum of the elements' lengths
LIST_TOO_BIG = (
    f"ERR list would exceed the maximum size ({LIST_ELEMENTS_MAX} elements, "
    f"{LIST_BYTES_MAX} bytes of elements)"
)

ERR_NO_SUCH_KEY = "ERR no such key"
ERR_INDEX_OUT_OF_RANGE = "ERR index out of range"
ERR_COUNT_NOT_POSITIVE = "ERR value is out of range, must be positive"
ERR_RANK_ZERO = (
    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use "
    "negative to start from the end of the list"
)
ERR_RANK_RANGE = (  # Redis 7.2 on: -LONG_MIN would overflow
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
)
ERR_LPOS_COUNT = "ERR COUNT can't be negative"
ERR_LPOS_MAXLEN = "ERR MAXLEN can't be negative"
ERR_NUMKEYS = "ERR numkeys should be greater than 0"
ERR_LMPOP_COUNT = "ERR count should be greater than 0"


def _check_room(value: ListValue | None, added: list[bytes],
                replacing: bytes | None = None) -> None:
    """Refuse a change that would grow a list past the size limit: `added` elements pushed or
    inserted, or (LSET) the one element of `added` put in place of `replacing`."""
    elements = 0 if value is None else len(value)
    total = sum(map(len, added)) + (0 if value is None else value.data_bytes)
    if replacing is None:
        elements += len(added)
    else:
        total -= len(replacing)
    if elements > LIST_ELEMENTS_MAX or total > LIST_BYTES_MAX:
        raise CommandError(LIST_TOO_BIG)


def _end(raw: bytes) -> bool:
    """LEFT or RIGHT (any case) as `head`: True for LEFT."""
    word = raw.upper()
    if word == b"LEFT":
        return True
    if word == b"RIGHT":
        return False
    raise CommandError(SYNTAX)


def _index(value: ListValue, raw: bytes) -> int | None:
    """LINDEX's and LSET's index, counted from the end if negative; None if outside."""
    index = int64_arg(raw)
    if index < 0:
        index += len(value)
    return index if 0 <= index < len(value) else None


def _range(start: int, stop: int, length: int) -> tuple[int, int] | None:
    """LRANGE's and LTRIM's start and stop made positive and clamped: (first, last) inclusive,
    or None when the range holds nothing."""
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    start = max(start, 0)
    if start > stop or start >= length:
        return None
    return start, min(stop, length - 1)


# ---- LPUSH, RPUSH, LPUSHX, RPUSHX ----


def parse_key_elements(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return argv[1], argv[2:]


def _push(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int, head: bool,
          only_existing: bool) -> int:
    key, elements = args
    value = state.get_list(key, time_ms)
    if value is None and only_existing:
        return 0
    _check_room(value, elements)
    return state.list_push(key, head, elements)


def run_lpush(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    return _push(state, args, time_ms, True, False)


def run_rpush(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    return _push(state, args, time_ms, False, False)


def run_lpushx(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    return _push(state, args, time_ms, True, True)


def run_rpushx(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    return _push(state, args, time_ms, False, True)


# ---- LPOP, RPOP ----


def _parse_pop(argv: list[bytes], command: str) -> tuple[bytes, int | None]:
    """key [count]: the count, if given, an integer >= 0."""
    if len(argv) > 3:
        raise CommandError(wrong_arity(command))
    if len(argv) == 2:
        return argv[1], None
    count = parse_int64(argv[2])
    if count is None or count < 0:
        raise CommandError(ERR_COUNT_NOT_POSITIVE)
    return argv[1], count


def parse_lpop(argv: list[bytes]) -> tuple[bytes, int | None]:
    return _parse_pop(argv, "lpop")


def parse_rpop(argv: list[bytes]) -> tuple[bytes, int | None]:
    return _parse_pop(argv, "rpop")


def _pop(state: KVState, args: tuple[bytes, int | None], time_ms: int, head: bool) -> object:
    key, count = args
    if state.get_list(key, time_ms) is None:
        return None if count is None else NullArray
    if count is None:
        return state.list_pop(key, head, 1)[0]
    if count == 0:
        return []
    return state.list_pop(key, head, count)


def run_lpop(state: KVState, args: tuple[bytes, int | None], time_ms: int) -> object:
    return _pop(state, args, time_ms, True)


def run_rpop(state: KVState, args: tuple[bytes, int | None], time_ms: int) -> object:
    return _pop(state, args, time_ms, False)


# ---- LLEN, LINDEX, LRANGE ----


def run_llen(state: KVState, key: bytes, time_ms: int) -> int:
    value = state.get_list(key, time_ms)
    return 0 if value is None else len(value)


def parse_key_raw(argv: list[bytes]) -> tuple[bytes, bytes]:
    """key and one argument checked only once the key is known to be a list (LINDEX)."""
    return argv[1], argv[2]


def run_lindex(state: KVState, args: tuple[bytes, bytes], time_ms: int) -> bytes | None:
    key, raw_index = args
    value = state.get_list(key, time_ms)
    if value is None:
        return None
    index = _index(value, raw_index)
    return None if index is None else value.at(index)


def parse_key_start_stop(argv: list[bytes]) -> tuple[bytes, int, int]:
    return argv[1], int64_arg(argv[2]), int64_arg(argv[3])


def run_lrange(state: KVState, args: tuple[bytes, int, int], time_ms: int) -> list[bytes]:
    key, start, stop = args
    value = state.get_list(key, time_ms)
    if value is None:
        return []
    bounds = _range(start, stop, len(value))
    return [] if bounds is None else value.range(*bounds)


# ---- LSET, LINSERT, LREM, LTRIM ----


def parse_lset(argv: list[bytes]) -> tuple[bytes, bytes, bytes]:
    return argv[1], argv[2], argv[3]


def run_lset(state: KVState, args: tuple[bytes, bytes, bytes], time_ms: int) -> Status:
    key, raw_index, element = args
    value = state.get_list(key, time_ms)
    if value is None:
        raise CommandError(ERR_NO_SUCH_KEY)
    index = _index(value, raw_index)
    if index is None:
        raise CommandError(ERR_INDEX_OUT_OF_RANGE)
    _check_room(value, [element], replacing=value.at(index))
    state.list_set(key, index, element)
    return OK


def parse_linsert(argv: list[bytes]) -> tuple[bytes, bool, bytes, bytes]:
    """key BEFORE|AFTER pivot element: (key, after, pivot, element)."""
    where = argv[2].upper()
    if where != b"BEFORE" and where != b"AFTER":
        raise CommandError(SYNTAX)
    return argv[1], where == b"AFTER", argv[3], argv[4]


def run_linsert(state: KVState, args: tuple[bytes, bool, bytes, bytes], time_ms: int) -> int:
    key, after, pivot, element = args
    value = state.get_list(key, time_ms)
    if value is None:
        return 0
    for index, current in enumerate(value):
        if current == pivot:
            _check_room(value, [element])
            return state.list_insert(key, index + 1 if after else index, element)
    return -1


def parse_lrem(argv: list[bytes]) -> tuple[bytes, int, bytes]:
    return argv[1], int64_arg(argv[2]), argv[3]


def run_lrem(state: KVState, args: tuple[bytes, int, bytes], time_ms: int) -> int:
    """Remove up to |count| elements equal to `element` (from the head if count > 0, from the
    tail if < 0, all if 0). One effect names their positions, not the list left behind."""
    key, count, element = args
    value = state.get_list(key, time_ms)
    if value is None:
        return 0
    limit = abs(count) if count else len(value)
    positions: list[int] = []
    if count >= 0:
        for index, current in enumerate(value):
            if current == element:
                positions.append(index)
                if len(positions) == limit:
                    break
    else:
        last = len(value) - 1
        for offset, current in enumerate(value.reversed_range(len(value))):
            if current == element:
                positions.append(last - offset)
                if len(positions) == limit:
                    break
        positions.reverse()
    if positions:
        state.list_remove_at(key, positions)
    return len(positions)


def run_ltrim(state: KVState, args: tuple[bytes, int, int], time_ms: int) -> Status:
    """Keep start..stop: pops from both ends (two small effects; the capped-list pattern LPUSH
    then LTRIM 0 n pops one element from the tail), or a delete if nothing is kept."""
    key, start, stop = args
    value = state.get_list(key, time_ms)
    if value is None:
        return OK
    length = len(value)
    bounds = _range(start, stop, length)
    if bounds is None:
        state.delete(key)
        return OK
    first, last = bounds
    if first:
        state.list_pop(key, True, first)
    if last < length - 1:
        state.list_pop(key, False, length - 1 - last)
    return OK


# ---- LPOS ----


def parse_lpos(argv: list[bytes]) -> tuple[bytes, bytes, int, int | None, int]:
    """key element [RANK rank] [COUNT num-matches] [MAXLEN len]: (key, element, rank, count or
    None if not given, maxlen; 0 for no limit)."""
    rank, count, maxlen = 1, None, 0
    i = 3
    while i < len(argv):
        option = argv[i].upper()
        if i + 1 >= len(argv):
            raise CommandError(SYNTAX)
        raw = argv[i + 1]
        if option == b"RANK":
            rank = int64_arg(raw)
            if rank == 0:
                raise CommandError(ERR_RANK_ZERO)
            if rank == -(1 << 63):
                raise CommandError(ERR_RANK_RANGE)
        elif option == b"COUNT":
            number = parse_int64(raw)
            if number is None or number < 0:
                raise CommandError(ERR_LPOS_COUNT)
            count = number
        elif option == b"MAXLEN":
            number = parse_int64(raw)
            if number is None or number < 0:
                raise CommandError(ERR_LPOS_MAXLEN)
            maxlen = number
        else:
            raise CommandError(SYNTAX)
        i += 2
    return argv[1], argv[2], rank, count, maxlen


def run_lpos(state: KVState, args: tuple[bytes, bytes, int, int | None, int],
             time_ms: int) -> object:
    key, element, rank, count, maxlen = args
    value = state.get_list(key, time_ms)
    if value is None:
        return None if count is None else []
    length = len(value)
    from_head = rank > 0
    skip = abs(rank) - 1  # matches to pass over before the first one reported
    wanted = 1 if count is None else count  # 0: every match
    scan = length if maxlen == 0 else min(maxlen, length)
    walk = iter(value) if from_head else iter(value.reversed_range(scan))
    found: list[int] = []
    for offset in range(scan):
        if next(walk) != element:
            continue
        if skip:
            skip -= 1
            continue
        found.append(offset if from_head else length - 1 - offset)
        if len(found) == wanted:
            break
    if count is None:
        return found[0] if found else None
    return found


# ---- LMOVE, RPOPLPUSH ----


def parse_lmove(argv: list[bytes]) -> tuple[bytes, bytes, bool, bool]:
    return argv[1], argv[2], _end(argv[3]), _end(argv[4])


def parse_rpoplpush(argv: list[bytes]) -> tuple[bytes, bytes, bool, bool]:
    return argv[1], argv[2], False, True


def run_lmove(state: KVState, args: tuple[bytes, bytes, bool, bool], time_ms: int
              ) -> bytes | None:
    """Pop from one end of `source`, push at one end of `destination`: two small effects (or,
    when the source empties, its delete and the push)."""
    source, destination, from_head, to_head = args
    value = state.get_list(source, time_ms)
    if value is None:
        return None
    target = state.get_list(destination, time_ms)  # WRONGTYPE only once the source is a list
    element = value.at(0 if from_head else len(value) - 1)
    if source == destination:
        if len(value) == 1:
            return element  # popped and pushed back: nothing changes, the expiry stays
        state.list_pop(source, from_head, 1)
        state.list_push(source, to_head, [element])
        return element
    _check_room(target, [element])
    state.list_pop(source, from_head, 1)
    state.list_push(destination, to_head, [element])
    return element


# ---- LMPOP ----


def parse_lmpop(argv: list[bytes]) -> tuple[list[bytes], bool, int]:
    """numkeys key [key ...] LEFT|RIGHT [COUNT count]: (keys, head, count)."""
    return parse_mpop(argv, b"LEFT", b"RIGHT")


def parse_mpop(argv: list[bytes], first: bytes, second: bytes) -> tuple[list[bytes], bool, int]:
    """LMPOP's and ZMPOP's `numkeys key [key ...] first|second [COUNT count]` (the end, any
    case: LEFT|RIGHT, MIN|MAX): (keys, whether the end is `first`, count)."""
    numkeys = parse_int64(argv[1])
    if numkeys is None or numkeys < 1:
        raise CommandError(ERR_NUMKEYS)
    where = 2 + numkeys
    if where >= len(argv):
        raise CommandError(SYNTAX)
    end = argv[where].upper()
    if end != first and end != second:
        raise CommandError(SYNTAX)
    count: int | None = None
    i = where + 1
    while i < len(argv):
        if count is None and argv[i].upper() == b"COUNT" and i + 1 < len(argv):
            number = parse_int64(argv[i + 1])
            if number is None or number < 1:
                raise CommandError(ERR_LMPOP_COUNT)
            count = number
            i += 2
        else:
            raise CommandError(SYNTAX)
    return argv[2:where], end == first, 1 if count is None else count


def run_lmpop(state: KVState, args: tuple[list[bytes], bool, int], time_ms: int) -> object:
    """Pop from the first key (in the order given) that holds a list: [key, elements]."""
    keys, head, count = args
    for key in keys:
        if state.get_list(key, time_ms) is not None:
            return [key, state.list_pop(key, head, count)]
    return NullArray
