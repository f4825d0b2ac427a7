"""SORT and SORT_RO: the elements of a list, a set or a sorted set, sorted by their own value or
by the value of other keys (BY pattern, `*` standing for the element, `key->field` for a hash's
field), paged (LIMIT offset count), each replaced by other keys' values (GET pattern, `#` for
the element itself), and with STORE written to a list.

Same two-step shape as the other families: `parse_sort` checks the options without state or
clock (a syntax error or a bad LIMIT comes first, as in Redis), `run_sort` executes and raises
CommandError before changing anything. Semantics, replies, error texts and the order of checks
follow Redis 7.0's sort.c:
- The options, then the key's type (WRONGTYPE for a string, a hash or a stream; a missing key
  sorts as an empty list), then the scores: a numeric sort reads each element, or its BY value,
  as strtod does (leading spaces, `inf`, hexadecimal, an empty string as 0; an element whose
  BY key is missing scores 0) and answers `ERR One or more scores can't be converted into
  double` for one that is not a whole double (NaN, an overflow, an inexact underflow).
- A BY pattern without `*` (`BY nosort`) sorts nothing, and stays in force past a later BY:
  a list keeps its order (DESC walks it from the tail) and a sorted set its (score, member)
  order, LIMIT taking a range of it; a set answers its own order (SMEMBERS's), except that
  with STORE or in a script it is sorted ALPHA, as Redis sorts it there.
- LIMIT: a negative offset is 0, a negative count takes everything after the offset.
- GET of a missing key, of a key of another type, or of a pattern without `*` is nil (an empty
  string in a STORE list). STORE replaces the destination by a list without expiry, or deletes
  it when the result is empty, and answers the number of elements stored.

Order, and where Redis's is unspecified. A numeric sort orders by score, then by the element's
bytes (Redis's tie-break), so its order is Redis's whatever the input order. ALPHA orders by
bytes (Redis's strcoll, in the C locale redis-server runs in, is byte order up to a NUL byte;
replikv compares the whole element, as Redis does with STORE). Where Redis finds two elements
equal — ALPHA with BY values that are equal or both missing — its qsort (or, with BY and a
LIMIT, its pqsort) leaves their order unspecified; replikv keeps their input order (a list's
order, a set's own order, a sorted set's (score, member) order), which is a function of the
replicated state, so every replica answers alike.

Write or read. Redis flags SORT a write whatever its options, and this registry decides the kind
per command, not per argv: SORT always goes through the log (in passive replication an entry
without effects when there is no STORE), SORT_RO is the read (STORE is a syntax error there).
`sort_keys` lists the sorted key and STORE's destination (the last STORE, as Redis takes it),
so WATCH and the log entry see the write (in active replication, where the entry is the
command, a WATCH of the sorted key is so aborted by a SORT that stores nothing: on the safe
side); the keys BY and GET read are found only as the command runs, like Redis's, whose key
specs call them unknown.

Size limit. The elements sorted are at most one container's (a list or a set holds at most
4,194,304, a sorted set 2,097,152), each with one BY lookup. The result, elements times GET
patterns, is limited to SORT_RESULT_ENTRIES_MAX entries and SORT_RESULT_BYTES_MAX bytes (a
list's limits, so that a STORE's post-image fits one log entry as any list's does), checked
before anything is stored; Redis has no such limit.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, cast

from replikv.commands.lists import LIST_BYTES_MAX, LIST_ELEMENTS_MAX
from replikv.commands.strings import int64_arg
from replikv.commands.zsets import strtod
from replikv.replies import SYNTAX, WRONG_TYPE, CommandError

if TYPE_CHECKING:
    from replikv.state import KVState

ERR_NOT_DOUBLE = "ERR One or more scores can't be converted into double"
SORT_RESULT_ENTRIES_MAX = LIST_ELEMENTS_MAX
SORT_RESULT_BYTES_MAX = LIST_BYTES_MAX
SORT_TOO_BIG = (
    f"ERR SORT result would exceed the maximum size ({SORT_RESULT_ENTRIES_MAX} elements, "
    f"{SORT_RESULT_BYTES_MAX} bytes of elements)"
)

_C_SPACE = b" \t\n\v\f\r"  # what strtod skips first (isspace in the C locale)
_DOUBLE_NORMAL_MIN = sys.float_info.min


@dataclass(frozen=True, slots=True)
class SortArgs:
    key: bytes
    desc: bool
    alpha: bool
    limit_start: int
    limit_count: int  # negative: no limit
    store: bytes | None
    by: bytes | None  # the last BY pattern
    dontsort: bool  # some BY pattern had no `*`
    gets: tuple[bytes, ...]


def _c_string(raw: bytes) -> bytes:
    """`raw` as C's string functions see it: up to its first NUL byte. Redis matches SORT's
    option names (strcasecmp) and finds a pattern's `*` and `->` (strchr, strstr) so."""
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _parse(argv: list[bytes], read_only: bool) -> SortArgs:
    desc = alpha = dontsort = False
    limit_start, limit_count = 0, -1
    store: bytes | None = None
    by: bytes | None = None
    gets: list[bytes] = []
    i = 2
    while i < len(argv):
        word = _c_string(argv[i]).lower()
        left = len(argv) - i - 1
        if word == b"asc":
            desc = False
        elif word == b"desc":
            desc = True
        elif word == b"alpha":
            alpha = True
        elif word == b"limit" and left >= 2:
            limit_start, limit_count = int64_arg(argv[i + 1]), int64_arg(argv[i + 2])
            i += 2
        elif word == b"store" and left >= 1 and not read_only:
            store = argv[i + 1]
            i += 1
        elif word == b"by" and left >= 1:
            by = argv[i + 1]
            if b"*" not in _c_string(by):
                dontsort = True
            i += 1
        elif word == b"get" and left >= 1:
            gets.append(argv[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    return SortArgs(argv[1], desc, alpha, limit_start, limit_count, store, by, dontsort,
                    tuple(gets))


def parse_sort(argv: list[bytes]) -> SortArgs:
    """SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
    [STORE destination], the options in any order, each as often as wished (the last wins;
    GETs add up)."""
    return _parse(argv, False)


def parse_sort_ro(argv: list[bytes]) -> SortArgs:
    """SORT_RO: SORT without STORE."""
    return _parse(argv, True)


def sort_keys(argv: list[bytes]) -> list[bytes]:
    """The sorted key and STORE's destination, if any."""
    try:
        store = _parse(argv, False).store
    except CommandError:
        return argv[1:2]
    return argv[1:2] if store is None else [argv[1], store]


def sort_ro_keys(argv: list[bytes]) -> list[bytes]:
    return argv[1:2]


# ---- patterns ----


def _lookup(state: KVState, pattern: bytes, element: bytes, time_ms: int) -> bytes | None:
    """What a BY or GET pattern names for `element` (Redis's lookupKeyByPattern): `#` is the
    element; the first `*` is replaced by it to make a key, whose string value is the answer,
    or, when `->` and a field follow the `*`, that field of the hash at the key. None when
    there is no `*`, no such key or field, or a key of another type."""
    if pattern[:1] == b"#" and (len(pattern) == 1 or pattern[1] == 0):
        return element
    searched = _c_string(pattern)
    star = searched.find(b"*")
    if star < 0:
        return None
    arrow = searched.find(b"->", star + 1)
    if 0 <= arrow and arrow + 2 < len(searched):
        key = pattern[:star] + element + pattern[star + 1 : arrow]
        field: bytes | None = pattern[arrow + 2 :]
    else:
        key = pattern[:star] + element + pattern[star + 1 :]
        field = None
    value = state.lookup(key, time_ms)
    if value is None:
        return None
    if field is None:
        return value if type(value) is bytes else None
    if state.type_name(key, time_ms) != b"hash":
        return None
    return state.get_hash(key, time_ms).get(field)  # type: ignore[union-attr]


# ---- scores ----


def _exact(text: bytes, value: float) -> bool:
    """Whether the number written in `text` (strtod's grammar, finite) is exactly `value`."""
    negative = text[:1] == b"-"
    digits = text.lstrip(b"+-").lower()
    if digits.startswith(b"0x"):
        mantissa, _, exponent = digits[2:].partition(b"p")
        whole, _, fraction = mantissa.partition(b".")
        written = Fraction(int(whole + fraction, 16)) * Fraction(2) ** (
            int(exponent or b"0") - 4 * len(fraction))
    else:
        written = Fraction(digits.decode())
    return (-written if negative else written) == Fraction(value)


def sort_score(raw: bytes) -> float | None:
    """A numeric SORT's score for `raw` as Redis reads it: strtod over the C string (so up to
    a NUL byte), leading spaces skipped, an empty string 0; None if strtod does not take all
    of it, or reads NaN, or sets ERANGE (an overflow, or an underflow that lost precision:
    glibc's rule, under which an exact subnormal such as 0x1p-1074 is fine)."""
    text = _c_string(raw)
    if not text:
        return 0.0  # nothing read: strtod's end is the string's end
    body = text.lstrip(_C_SPACE)
    read = strtod(body) if body else None
    if read is None or read[1]:
        return None
    score = read[0]
    if score != 0 and abs(score) < _DOUBLE_NORMAL_MIN and not _exact(body, score):
        return None
    return score


# ---- SORT, SORT_RO ----


def _source(state: KVState, args: SortArgs, time_ms: int) -> tuple[bytes, object]:
    """The sorted key's type (b"list" for a missing key) and value (None if missing)."""
    kind = state.type_name(args.key, time_ms)
    if kind is None:
        return b"list", None
    if kind == b"list":
        return kind, state.get_list(args.key, time_ms)
    if kind == b"set":
        return kind, state.get_set(args.key, time_ms)
    if kind == b"zset":
        return kind, state.get_zset(args.key, time_ms)
    raise CommandError(WRONG_TYPE)


def _sorted(state: KVState, elements: list[bytes], by: bytes | None, alpha: bool, desc: bool,
            time_ms: int) -> list[bytes]:
    """The elements in SORT's order (see the module docstring)."""
    if alpha and by is None:
        return sorted(elements, reverse=desc)
    if alpha and by is not None:
        by_values = [_lookup(state, by, element, time_ms) for element in elements]
        # A missing BY value sorts first; equal ones keep their input order (a stable sort,
        # stable with reverse too).
        order = sorted(range(len(elements)), reverse=desc, key=lambda i: (
            (False, b"") if by_values[i] is None else (True, by_values[i])))
        return [elements[i] for i in order]
    keyed: list[tuple[float, bytes]] = []
    for element in elements:
        by_value = element if by is None else _lookup(state, by, element, time_ms)
        if by_value is None:
            keyed.append((0.0, element))  # no BY key: 0, not a conversion error
            continue
        score = sort_score(by_value)
        if score is None:
            raise CommandError(ERR_NOT_DOUBLE)
        keyed.append((score, element))
    keyed.sort(reverse=desc)  # by score, then by the element's bytes, as Redis breaks ties
    return [element for _, element in keyed]


def run_sort(state: KVState, args: SortArgs, time_ms: int) -> object:
    kind, value = _source(state, args, time_ms)
    alpha, by, dontsort = args.alpha, args.by, args.dontsort
    if dontsort and kind == b"set" and (args.store is not None or state.in_script_call):
        # Redis sorts a set ALPHA here rather than answer its hash-table order (to replicate
        # the same list and give a script the same answer); replikv does as Redis does.
        alpha, by, dontsort = True, None, False
    length = 0 if value is None else len(value)  # type: ignore[arg-type]
    start = max(args.limit_start, 0)
    end = length - 1 if args.limit_count < 0 else start + args.limit_count - 1
    if start >= length:
        start, end = length - 1, length - 2
    end = min(end, length - 1)
    chosen: list[bytes]
    if value is None or (dontsort and kind != b"set" and end < start):
        chosen = []  # (a sort reads every score first, even for an empty page)
    elif dontsort and kind == b"list":
        if args.desc:  # from the tail: positions length-1-start down to length-1-end
            chosen = value.range(length - 1 - end, length - 1 - start)  # type: ignore[attr-defined]
            chosen.reverse()
        else:
            chosen = value.range(start, end)  # type: ignore[attr-defined]
    elif dontsort and kind == b"zset":
        if args.desc:
            pairs = value.slice(length - 1 - end, length - start, True)  # type: ignore[attr-defined]
        else:
            pairs = value.slice(start, end + 1)  # type: ignore[attr-defined]
        chosen = [member for _, member in pairs]
    elif dontsort:  # a set: its own order, whatever ASC or DESC say (Redis does not sort)
        chosen = value.member_list()[start : end + 1]  # type: ignore[attr-defined]
    else:
        if kind == b"list":
            elements = value.element_list()  # type: ignore[attr-defined]
        elif kind == b"set":
            elements = value.member_list()  # type: ignore[attr-defined]
        else:
            elements = [member for _, member in value]  # type: ignore[attr-defined]
        chosen = _sorted(state, elements, by, alpha, args.desc, time_ms)[start : end + 1]
    result = _fetched(state, args.gets, chosen, time_ms)
    if args.store is None:
        return result
    stored = [b"" if item is None else item for item in result]
    if stored:
        state.write_list(args.store, stored)
    else:
        state.delete(args.store)
    return len(stored)


def _fetched(state: KVState, gets: tuple[bytes, ...], chosen: list[bytes], time_ms: int
             ) -> list[bytes | None]:
    """The chosen elements, or for each the GET patterns' values, within the size limit."""
    if len(chosen) * max(len(gets), 1) > SORT_RESULT_ENTRIES_MAX:
        raise CommandError(SORT_TOO_BIG)
    if not gets:
        return cast("list[bytes | None]", chosen)  # a container's elements: within bounds
    result = [_lookup(state, pattern, element, time_ms) for element in chosen
              for pattern in gets]
    if sum(len(item) for item in result if item is not None) > SORT_RESULT_BYTES_MAX:
        raise CommandError(SORT_TOO_BIG)
    return result
