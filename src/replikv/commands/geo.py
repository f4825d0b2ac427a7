"""Geospatial commands: GEOADD, GEOPOS, GEODIST, GEOHASH, GEOSEARCH, GEOSEARCHSTORE and the
older GEORADIUS, GEORADIUSBYMEMBER, GEORADIUS_RO and GEORADIUSBYMEMBER_RO.

As in Redis (geo.c), a geo set is a sorted set whose scores are 52-bit geohashes (`geohash`):
GEOADD is ZADD with the scores it computes, so its passive effects are ZADD's, and the STORE
forms write a sorted set as ZRANGESTORE does. Replies, error texts and the order of checks are
Redis 7.0's: GEOADD checks its options and every position before it looks at the key; GEODIST
its unit first; a search looks at the key's type first, then (GEORADIUS) the centre and radius,
then its options in order, looking up a FROMMEMBER (and GEORADIUSBYMEMBER's member) where it
comes if the key exists, then the conflicts (STORE with WITH*, no FROM*, no BY*, ANY without
COUNT), and only then answers a missing key. So `parse_*` of a search checks nothing that
depends on the key and keeps each error for `run_geosearch` to raise in its place, as
ZUNION's options are kept (zsets.py).

A search is Redis's: the nine geohash boxes around the centre (`geohash.search_boxes`), each a
score range of the sorted set walked lowest first, every member's exact distance checked
against the area; then the order Redis gives (no order asked: the boxes' order; ASC or DESC:
by distance, ties in the order found, as glibc's merge sort leaves them; COUNT below the number
found: Redis's partial quicksort, `_partial_sort`, whose ties fall where they fall in Redis).
Distances are written with four decimals as Redis writes them (fixedpoint_d2string), the
coordinates with 17 decimals, trailing zeros cut (addReplyHumanLongDouble: DoubleText).

Work is bounded by the sorted set: a search walks each of at most nine score ranges once, so it
looks at no more than nine times the members of one sorted set (at most ZSET_MEMBERS_MAX), and
answers at most as many (ANY with COUNT stops at COUNT); the STORE forms are bounded by the
sorted set size limit as ZRANGESTORE is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands import geohash
from replikv.commands.geohash import Shape
from replikv.commands.strings import parse_int64
from replikv.commands.zsets import ZaddArgs, _write_result, parse_score
from replikv.replies import NOT_FLOAT, NOT_INTEGER, SYNTAX, CommandError, DoubleText, NullArray

if TYPE_CHECKING:
    from replikv.state import KVState, ZSetValue

ERR_UNIT = "ERR unsupported unit provided. please use M, KM, FT, MI"
ERR_MEMBER = "ERR could not decode requested zset member"
ERR_COUNT = "ERR COUNT must be > 0"
ERR_ANY = "ERR the ANY argument requires COUNT argument"

# Meters in one of each unit (extractUnitOrReply).
UNIT_METERS: dict[bytes, float] = {b"m": 1.0, b"km": 1000.0, b"ft": 0.3048, b"mi": 1609.34}

# A box's members are read this many at a time, so ANY with a small COUNT reads little.
_WALK_CHUNK = 256


def _word(raw: bytes) -> bytes:
    """An option as Redis's strcasecmp sees it: up to a NUL byte, ASCII case folded."""
    return raw.split(b"\x00", 1)[0].lower()


def _double(raw: bytes, error: str = NOT_FLOAT) -> float:
    value = parse_score(raw)  # Redis's string2d, as ZADD reads a score
    if value is None:
        raise CommandError(error)
    return value


def _long_lat(raw_longitude: bytes, raw_latitude: bytes) -> tuple[float, float]:
    """extractLongLatOrReply: two doubles, then the range (Redis's limits: the latitudes Web
    Mercator covers)."""
    longitude, latitude = _double(raw_longitude), _double(raw_latitude)
    if (longitude < geohash.GEO_LONG_MIN or longitude > geohash.GEO_LONG_MAX
            or latitude < geohash.GEO_LAT_MIN or latitude > geohash.GEO_LAT_MAX):
        raise CommandError(f"ERR invalid longitude,latitude pair {longitude:f},{latitude:f}")
    return longitude, latitude


def _unit(raw: bytes) -> float:
    meters = UNIT_METERS.get(_word(raw))
    if meters is None:
        raise CommandError(ERR_UNIT)
    return meters


def _radius(raw_radius: bytes, raw_unit: bytes) -> tuple[float, float]:
    """extractDistanceOrReply: (radius, meters per unit)."""
    radius = _double(raw_radius, "ERR need numeric radius")
    if radius < 0:
        raise CommandError("ERR radius cannot be negative")
    return radius, _unit(raw_unit)


def _box(raw_width: bytes, raw_height: bytes, raw_unit: bytes) -> tuple[float, float, float]:
    """extractBoxOrReply: (width, height, meters per unit)."""
    width = _double(raw_width, "ERR need numeric width")
    height = _double(raw_height, "ERR need numeric height")
    if height < 0 or width < 0:
        raise CommandError("ERR height or width cannot be negative")
    return width, height, _unit(raw_unit)


def human_double(value: float) -> DoubleText:
    """ld2string's LD_STR_HUMAN, as GEOPOS writes coordinates: 17 decimals, trailing zeros
    and a trailing point cut, "-0" written "0"."""
    text = f"{value:.17f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return DoubleText(text.encode())


def distance_text(value: float) -> bytes:
    """fixedpoint_d2string(value, 4): the value rounded (to even) to four decimals."""
    if value == 0:
        return b"0.0000"
    scaled = value * 10000.0
    units = round(scaled) if math.isfinite(scaled) else -(1 << 63)  # llrint
    digits = b"%d" % abs(units)
    if len(digits) <= 4:
        digits = b"0" * (5 - len(digits)) + digits
    return (b"-" if units < 0 else b"") + digits[:-4] + b"." + digits[-4:]


def _long_long(score: float) -> int:
    """(long long)score as x86-64 converts it: out of range (or not finite) is LLONG_MIN."""
    if math.isfinite(score) and -9223372036854775808.0 <= score < 9223372036854775808.0:
        return int(score)
    return -(1 << 63)


# ---- GEOADD ----


def parse_geoadd(argv: list[bytes]) -> ZaddArgs:
    """GEOADD key [NX|XX] [CH] longitude latitude member [...]: ZADD's arguments, with the
    scores the positions hash to. Options (any order), then the triples' count and NX with XX,
    then each position in turn."""
    nx = xx = ch = False
    index = 2
    while index < len(argv):
        option = _word(argv[index])
        if option == b"nx":
            nx = True
        elif option == b"xx":
            xx = True
        elif option == b"ch":
            ch = True
        else:
            break
        index += 1
    rest = argv[index:]
    if not rest or len(rest) % 3 or (nx and xx):
        raise CommandError(SYNTAX)
    pairs: list[tuple[float, bytes]] = []
    for i in range(0, len(rest), 3):
        longitude, latitude = _long_lat(rest[i], rest[i + 1])
        pairs.append((geohash.score_of(longitude, latitude), rest[i + 2]))
    return ZaddArgs(argv[1], pairs, nx, xx, False, False, ch, False)


# ---- GEOPOS, GEOHASH, GEODIST ----


def parse_geopos(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    """key [member ...] (GEOPOS and GEOHASH)."""
    return argv[1], argv[2:]


def run_geopos(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> list[object]:
    key, members = args
    value = state.get_zset(key, time_ms)
    reply: list[object] = []
    for member in members:
        score = None if value is None else value.score(member)
        if score is None:
            reply.append(NullArray)
            continue
        longitude, latitude = geohash.position_of(score)
        reply.append([human_double(longitude), human_double(latitude)])
    return reply


def run_geohash(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> list[object]:
    key, members = args
    value = state.get_zset(key, time_ms)
    reply: list[object] = []
    for member in members:
        score = None if value is None else value.score(member)
        reply.append(None if score is None else geohash.standard_geohash(score))
    return reply


def parse_geodist(argv: list[bytes]) -> tuple[bytes, bytes, bytes, float]:
    """key member1 member2 [M|KM|FT|MI]: the unit (and the count of arguments) first."""
    if len(argv) > 5:
        raise CommandError(SYNTAX)
    meters = _unit(argv[4]) if len(argv) == 5 else 1.0
    return argv[1], argv[2], argv[3], meters


def run_geodist(state: KVState, args: tuple[bytes, bytes, bytes, float], time_ms: int
                ) -> bytes | None:
    key, first, second, meters = args
    value = state.get_zset(key, time_ms)
    if value is None:
        return None
    score1, score2 = value.score(first), value.score(second)
    if score1 is None or score2 is None:
        return None
    lon1, lat1 = geohash.position_of(score1)
    lon2, lat2 = geohash.position_of(score2)
    return distance_text(geohash.distance(lon1, lat1, lon2, lat2) / meters)


# ---- GEOSEARCH, GEOSEARCHSTORE, GEORADIUS and its relatives ----

_SORT_NONE, _SORT_ASC, _SORT_DESC = 0, 1, 2
# The command forms (georadiusGeneric's flags).
_RADIUS_COORDS, _RADIUS_MEMBER, _SEARCH, _SEARCH_STORE = "coords", "member", "search", "store"


@dataclass(frozen=True, slots=True)
class GeoSearchArgs:
    """A search, parsed without looking at the key. The checks that come after the key's type
    (see the module docstring), in Redis's order: `lead_error` (GEORADIUS's centre and
    radius; GEORADIUSBYMEMBER's radius, after its `lead_member` is looked up, both only if
    the key exists), the FROMMEMBER members met before `option_error` (looked up in order if
    the key exists), `option_error`, then `final_error`."""

    command: bytes  # argv[0] as sent (error texts quote it)
    key: bytes
    store: bytes | None
    store_dist: bool
    lead_member: bytes | None
    lead_error: str | None
    lead_if_key: bool  # whether the lead checks are made only when the key exists
    from_members: tuple[bytes, ...]
    option_error: str | None
    final_error: str | None
    centre: tuple[float, float] | None  # None: the last member looked up
    radius: float | None  # None: a box
    width: float
    height: float
    conversion: float
    sort: int
    count: int  # 0: no COUNT
    any: bool
    with_dist: bool
    with_hash: bool
    with_coord: bool


def _parse_search(argv: list[bytes], form: str, read_only: bool) -> GeoSearchArgs:
    """georadiusGeneric's reading of its arguments, each error kept for its place."""
    search = form in (_SEARCH, _SEARCH_STORE)
    key = argv[2] if form == _SEARCH_STORE else argv[1]
    store: bytes | None = argv[1] if form == _SEARCH_STORE else None
    lead_member: bytes | None = None
    lead_error: str | None = None
    centre: tuple[float, float] | None = None
    radius: float | None = None
    width = height = 0.0
    conversion = 1.0
    if form == _RADIUS_COORDS:
        base = 6
        try:
            centre = _long_lat(argv[2], argv[3])
            radius, conversion = _radius(argv[4], argv[5])
        except CommandError as e:
            lead_error = e.message
    elif form == _RADIUS_MEMBER:
        base = 5
        lead_member = argv[2]
        try:
            radius, conversion = _radius(argv[3], argv[4])
        except CommandError as e:
            lead_error = e.message
    else:
        base = 3 if form == _SEARCH_STORE else 2
    with_dist = with_hash = with_coord = any_ = store_dist = False
    from_member = from_location = by_radius = by_box = False
    sort = _SORT_NONE
    count = 0
    from_members: list[bytes] = []
    option_error: str | None = None
    remaining = len(argv) - base
    i = 0
    try:
        while i < remaining:
            at = base + i
            arg = _word(argv[at])
            if arg == b"withdist":
                with_dist = True
            elif arg == b"withhash":
                with_hash = True
            elif arg == b"withcoord":
                with_coord = True
            elif arg == b"any":
                any_ = True
            elif arg == b"asc":
                sort = _SORT_ASC
            elif arg == b"desc":
                sort = _SORT_DESC
            elif arg == b"count" and i + 1 < remaining:
                number = parse_int64(argv[at + 1])
                if number is None:
                    raise CommandError(NOT_INTEGER)
                if number <= 0:
                    raise CommandError(ERR_COUNT)
                count = number
                i += 1
            elif (arg in (b"store", b"storedist") and i + 1 < remaining and not read_only
                  and not search):
                store = argv[at + 1]
                store_dist = arg == b"storedist"
                i += 1
            elif arg == b"storedist" and form == _SEARCH_STORE:
                store_dist = True
            elif arg == b"frommember" and i + 1 < remaining and search and not from_location:
                from_members.append(argv[at + 1])
                from_member = True
                centre = None
                i += 1
            elif arg == b"fromlonlat" and i + 2 < remaining and search and not from_member:
                centre = _long_lat(argv[at + 1], argv[at + 2])
                from_location = True
                i += 2
            elif arg == b"byradius" and i + 2 < remaining and search and not by_box:
                radius, conversion = _radius(argv[at + 1], argv[at + 2])
                by_radius = True
                i += 2
            elif arg == b"bybox" and i + 3 < remaining and search and not by_radius:
                width, height, conversion = _box(argv[at + 1], argv[at + 2], argv[at + 3])
                radius = None
                by_box = True
                i += 3
            else:
                raise CommandError(SYNTAX)
            i += 1
    except CommandError as e:
        option_error = e.message
    final_error: str | None = None
    name = argv[0].decode("latin-1")
    if store is not None and (with_dist or with_hash or with_coord):
        what = "GEOSEARCHSTORE" if form == _SEARCH_STORE else "STORE option in GEORADIUS"
        final_error = f"ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
    elif search and not (from_member or from_location):
        final_error = f"ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
    elif search and not (by_radius or by_box):
        final_error = f"ERR exactly one of BYRADIUS and BYBOX can be specified for {name}"
    elif any_ and not count:
        final_error = ERR_ANY
    return GeoSearchArgs(argv[0], key, store, store_dist, lead_member, lead_error,
                         form == _RADIUS_MEMBER, tuple(from_members), option_error, final_error,
                         centre, radius, width, height, conversion, sort, count, any_,
                         with_dist, with_hash, with_coord)


def parse_georadius(argv: list[bytes]) -> GeoSearchArgs:
    return _parse_search(argv, _RADIUS_COORDS, False)


def parse_georadius_ro(argv: list[bytes]) -> GeoSearchArgs:
    return _parse_search(argv, _RADIUS_COORDS, True)


def parse_georadiusbymember(argv: list[bytes]) -> GeoSearchArgs:
    return _parse_search(argv, _RADIUS_MEMBER, False)


def parse_georadiusbymember_ro(argv: list[bytes]) -> GeoSearchArgs:
    return _parse_search(argv, _RADIUS_MEMBER, True)


def parse_geosearch(argv: list[bytes]) -> GeoSearchArgs:
    return _parse_search(argv, _SEARCH, True)


def parse_geosearchstore(argv: list[bytes]) -> GeoSearchArgs:
    return _parse_search(argv, _SEARCH_STORE, True)


def radius_keys(argv: list[bytes]) -> list[bytes]:
    """GEORADIUS's and GEORADIUSBYMEMBER's keys: the source, and the STORE or STOREDIST key
    the command writes (the last one given), if any."""
    if argv[0].lower() == b"georadius":
        store = parse_georadius(argv).store
    else:
        store = parse_georadiusbymember(argv).store
    return [argv[1]] if store is None else [argv[1], store]


# A point found: (longitude, latitude, distance in meters, score, member).
_Point = tuple[float, float, float, float, bytes]


def _position(value: ZSetValue, member: bytes) -> tuple[float, float]:
    score = value.score(member)
    if score is None:
        raise CommandError(ERR_MEMBER)
    return geohash.position_of(score)


def _points_in_box(value: ZSetValue, box: geohash.HashBits, shape: Shape,
                   found: list[_Point], limit: int) -> None:
    """geoGetPointsInRange: the members scored within the box, lowest first, that lie in the
    area, appended to `found`; stops once `found` holds `limit` (0: no limit)."""
    low, high = geohash.box_scores(box)
    position = value.score_position(float(low), False)
    stop = value.score_position(float(high), False)
    while position < stop:
        chunk = value.slice(position, min(stop, position + _WALK_CHUNK))
        position += len(chunk)
        for score, member in chunk:
            longitude, latitude = geohash.position_of(score)
            meters = geohash.distance_if_within(shape, longitude, latitude)
            if meters is not None:
                found.append((longitude, latitude, meters, score, member))
            if found and limit and len(found) >= limit:
                return


def _search(value: ZSetValue, shape: Shape, limit: int) -> list[_Point]:
    """membersOfAllNeighbors: the nine boxes in order, a box the same as the one searched
    just before it skipped (as Redis compares them: never the first neighbour with the centre
    box)."""
    boxes = geohash.search_boxes(shape)
    found: list[_Point] = []
    last = 0
    for i, box in enumerate(boxes):
        if box == geohash.NO_BOX:
            continue
        if last and box == boxes[last]:
            continue
        if found and limit and len(found) >= limit:
            break
        _points_in_box(value, box, shape, found, limit)
        last = i
    return found


def _distance_order(a: _Point, b: _Point) -> int:
    """sort_gp_asc."""
    if a[2] > b[2]:
        return 1
    if a[2] == b[2]:
        return 0
    return -1


def _partial_sort(items: list[_Point], descending: bool, last: int) -> None:
    """Redis's pqsort (Bentley and McIlroy's quicksort that only sorts the parts that reach
    positions 0..`last`): the same comparisons and swaps, so ties come out as in Redis."""

    def cmp(i: int, j: int) -> int:
        order = _distance_order(items[i], items[j])
        return -order if descending else order

    def swap(i: int, j: int) -> None:
        items[i], items[j] = items[j], items[i]

    def vecswap(i: int, j: int, n: int) -> None:
        for k in range(n):
            swap(i + k, j + k)

    def med3(a: int, b: int, c: int) -> int:
        if cmp(a, b) < 0:
            return b if cmp(b, c) < 0 else (c if cmp(a, c) < 0 else a)
        return b if cmp(b, c) > 0 else (a if cmp(a, c) < 0 else c)

    def outside(start: int, end: int) -> bool:
        """Whether positions start..end miss the range 0..last entirely."""
        return (0 < start and last < start) or (0 > end and last > end)

    def sort(lo: int, n: int) -> None:
        while True:
            if n < 7:
                for pm in range(lo + 1, lo + n):
                    pl = pm
                    while pl > lo and cmp(pl - 1, pl) > 0:
                        swap(pl, pl - 1)
                        pl -= 1
                return
            pm = lo + n // 2
            if n > 7:
                pl = lo
                pn = lo + n - 1
                if n > 40:
                    d = n // 8
                    pl = med3(pl, pl + d, pl + 2 * d)
                    pm = med3(pm - d, pm, pm + d)
                    pn = med3(pn - 2 * d, pn - d, pn)
                pm = med3(pl, pm, pn)
            swap(lo, pm)
            pa = pb = lo + 1
            pc = pd = lo + n - 1
            while True:
                while pb <= pc:
                    result = cmp(pb, lo)
                    if result > 0:
                        break
                    if result == 0:
                        swap(pa, pb)
                        pa += 1
                    pb += 1
                while pb <= pc:
                    result = cmp(pc, lo)
                    if result < 0:
                        break
                    if result == 0:
                        swap(pc, pd)
                        pd -= 1
                    pc -= 1
                if pb > pc:
                    break
                swap(pb, pc)
                pb += 1
                pc -= 1
            pn = lo + n
            r = min(pa - lo, pb - pa)
            vecswap(lo, pb - r, r)
            r = min(pd - pc, pn - pd - 1)
            vecswap(pb, pn - r, r)
            r = pb - pa
            if r > 1 and not outside(lo, lo + r - 1):
                sort(lo, r)
            r = pd - pc
            if r <= 1:
                return
            lo, n = pn - r, r
            if outside(lo, lo + r - 1):
                return

    sort(0, len(items))


def run_geosearch(state: KVState, args: GeoSearchArgs, time_ms: int) -> object:
    value = state.get_zset(args.key, time_ms)
    centre = args.centre
    if args.lead_error is not None and not args.lead_if_key:
        raise CommandError(args.lead_error)
    if value is not None:
        if args.lead_member is not None:
            centre = _position(value, args.lead_member)
        if args.lead_error is not None:
            raise CommandError(args.lead_error)
        for member in args.from_members:
            centre = _position(value, member)
    if args.option_error is not None:
        raise CommandError(args.option_error)
    if args.final_error is not None:
        raise CommandError(args.final_error)
    if value is None:
        if args.store is not None:
            state.delete(args.store)
            return 0
        return []
    sort = args.sort
    if args.count and sort == _SORT_NONE and not args.any:
        sort = _SORT_ASC
    longitude, latitude = centre  # type: ignore[misc]
    shape = Shape(longitude, latitude, args.conversion, args.radius, args.width, args.height)
    found = _search(value, shape, args.count if args.any else 0)
    if not found and args.store is None:
        return []
    returned = len(found) if args.count == 0 or len(found) < args.count else args.count
    if sort != _SORT_NONE:
        if returned == len(found):  # glibc's qsort: a merge sort, so ties keep their order
            found.sort(key=lambda point: point[2], reverse=sort == _SORT_DESC)
        else:
            _partial_sort(found, sort == _SORT_DESC, returned - 1)
    found = found[:returned]
    if args.store is not None:
        ranked: list[tuple[float, bytes]] = []
        seen: set[bytes] = set()
        for _, _, meters, score, member in found:
            if member not in seen:  # (Redis's boxes never overlap; a guard, not a case)
                seen.add(member)
                ranked.append((meters / args.conversion if args.store_dist else score, member))
        _write_result(state, args.store, ranked)
        return returned
    if not (args.with_dist or args.with_hash or args.with_coord):
        return [point[4] for point in found]
    reply: list[object] = []
    for longitude, latitude, meters, score, member in found:
        item: list[object] = [member]
        if args.with_dist:
            item.append(distance_text(meters / args.conversion))
        if args.with_hash:
            item.append(_long_long(score))
        if args.with_coord:
            item.append([human_double(longitude), human_double(latitude)])
        reply.append(item)
    return reply
