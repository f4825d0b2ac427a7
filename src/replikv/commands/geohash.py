"""Redis's geohash arithmetic (geohash.c, geohash_helper.c): the 52-bit interleaved score of a
position, its decoding, the nine boxes a search looks in, and the haversine distance.

A geo set is a sorted set whose scores are these geohashes, so every computation here must give
Redis's bits and Redis's doubles exactly: ZRANGE shows the scores, GEOPOS the decoded
coordinates, GEOSEARCH the members its boxes and distances select. The C code is followed step
by step (the same operations in the same order on IEEE doubles, which Python's floats are; the
trigonometry is the platform's libm, as Redis's is), with its unsigned 64-bit integers as Python
ints masked to 64 bits, and C's quiet NaN and infinity where Python's math raises (cos of an
infinite angle, asin of a sine rounded above 1, a division by zero), so an absurd radius answers
as in Redis rather than failing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from replikv.invariants import invariant

GEO_STEP_MAX = 26  # 26 * 2 = 52 bits: a score is a double's whole mantissa
GEO_LAT_MIN = -85.05112878
GEO_LAT_MAX = 85.05112878
GEO_LONG_MIN = -180.0
GEO_LONG_MAX = 180.0
EARTH_RADIUS_IN_METERS = 6372797.560856
MERCATOR_MAX = 20037726.37
_D_R = math.pi / 180.0  # geohash_helper.c's D_R
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_EVEN_BITS = 0x5555555555555555
_ODD_BITS = 0xAAAAAAAAAAAAAAAA

# (min, max) of each coordinate: Redis's own (Web Mercator's latitude limits) and the
# standard ones GEOHASH re-encodes with.
Range = tuple[float, float]
LONG_RANGE: Range = (GEO_LONG_MIN, GEO_LONG_MAX)
LAT_RANGE: Range = (GEO_LAT_MIN, GEO_LAT_MAX)
STANDARD_LAT_RANGE: Range = (-90.0, 90.0)


@dataclass(frozen=True, slots=True)
class HashBits:
    """A geohash of `step` bits per coordinate (GeoHashBits); bits 0 and step 0: no box."""

    bits: int
    step: int


NO_BOX = HashBits(0, 0)


@dataclass(frozen=True, slots=True)
class Area:
    """A geohash box's corners (GeoHashArea)."""

    long_min: float
    long_max: float
    lat_min: float
    lat_max: float


# ---- bits ----


def _interleave(x: int, y: int) -> int:
    """interleave64: x's bits at the even positions, y's at the odd (x, y < 2**32)."""
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                        (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333),
                        (1, 0x5555555555555555)):
        x = (x | (x << shift)) & mask
        y = (y | (y << shift)) & mask
    return (x | (y << 1)) & _U64


def _deinterleave(interleaved: int) -> int:
    """deinterleave64: the even bits in the low 32, the odd bits in the high 32."""
    x = interleaved
    y = interleaved >> 1
    for shift, mask in ((0, 0x5555555555555555), (1, 0x3333333333333333),
                        (2, 0x0F0F0F0F0F0F0F0F), (4, 0x00FF00FF00FF00FF),
                        (8, 0x0000FFFF0000FFFF), (16, 0x00000000FFFFFFFF)):
        x = (x | (x >> shift)) & mask
        y = (y | (y >> shift)) & mask
    return (x | (y << 32)) & _U64


def score_bits(score: float) -> int:
    """`(uint64_t)score` as x86-64 compiles it (decodeGeohash): a geo score is an integer
    below 2**54 and converts exactly; any other score a sorted set may hold converts as the
    CPU's truncating conversion does (a negative one wraps, an out-of-range one gives 2**63
    or 0), so GEOPOS of an ordinary sorted set's member answers as Redis does."""
    two_63 = 9223372036854775808.0
    if not score >= two_63:  # (NaN too)
        if math.isfinite(score) and score >= -two_63:
            return int(score) & _U64
        return 1 << 63
    high = score - two_63
    if high < two_63:
        return int(high) + (1 << 63)
    return 0


# ---- encoding and decoding ----


def encode(long_range: Range, lat_range: Range, longitude: float, latitude: float,
           step: int) -> HashBits | None:
    """geohashEncode: the box of `step` bits holding the position; None outside the ranges
    (or Redis's own limits)."""
    if (longitude > GEO_LONG_MAX or longitude < GEO_LONG_MIN or latitude > GEO_LAT_MAX
            or latitude < GEO_LAT_MIN):
        return None
    if (latitude < lat_range[0] or latitude > lat_range[1] or longitude < long_range[0]
            or longitude > long_range[1]):
        return None
    lat_offset = (latitude - lat_range[0]) / (lat_range[1] - lat_range[0])
    long_offset = (longitude - long_range[0]) / (long_range[1] - long_range[0])
    lat_offset *= float(1 << step)
    long_offset *= float(1 << step)
    # (double to uint32_t: truncation; an offset of exactly 2**step keeps its bit above.)
    return HashBits(_interleave(int(lat_offset) & _U32, int(long_offset) & _U32), step)


def score_of(longitude: float, latitude: float) -> float:
    """The sorted set score GEOADD gives a position already checked to be in range:
    geohashEncodeWGS84 at GEO_STEP_MAX, aligned to 52 bits (as the integer Redis hands ZADD,
    read back as a double)."""
    hashed = encode(LONG_RANGE, LAT_RANGE, longitude, latitude, GEO_STEP_MAX)
    if hashed is None:
        invariant(False, "score_of given a position out of range")
        return 0.0  # (not reached)
    return float(align52(hashed))


def decode(long_range: Range, lat_range: Range, hashed: HashBits) -> Area:
    """geohashDecode: the box's corners."""
    separated = _deinterleave(hashed.bits)
    lat_scale = lat_range[1] - lat_range[0]
    long_scale = long_range[1] - long_range[0]
    lat_cells = separated & _U32
    long_cells = separated >> 32
    cells = float(1 << hashed.step)
    return Area(
        long_range[0] + (long_cells * 1.0 / cells) * long_scale,
        long_range[0] + (((long_cells + 1) & _U32) * 1.0 / cells) * long_scale,
        lat_range[0] + (lat_cells * 1.0 / cells) * lat_scale,
        lat_range[0] + (((lat_cells + 1) & _U32) * 1.0 / cells) * lat_scale,
    )


def position_of(score: float) -> tuple[float, float]:
    """decodeGeohash: the (longitude, latitude) a score stands for, the centre of its box,
    clamped to Redis's limits."""
    area = decode(LONG_RANGE, LAT_RANGE, HashBits(score_bits(score), GEO_STEP_MAX))
    longitude = (area.long_min + area.long_max) / 2
    longitude = min(max(longitude, GEO_LONG_MIN), GEO_LONG_MAX)
    latitude = (area.lat_min + area.lat_max) / 2
    latitude = min(max(latitude, GEO_LAT_MIN), GEO_LAT_MAX)
    return longitude, latitude


def align52(hashed: HashBits) -> int:
    """geohashAlign52Bits: the box's first score."""
    return (hashed.bits << (52 - hashed.step * 2)) & _U64


_GEOALPHABET = b"0123456789bcdefghjkmnpqrstuvwxyz"


def standard_geohash(score: float) -> bytes:
    """GEOHASH's 11 characters: the position re-encoded with the standard latitude range
    (-90..90), the eleventh character always '0' (52 bits make 10.4 characters)."""
    longitude, latitude = position_of(score)
    hashed = encode(LONG_RANGE, STANDARD_LAT_RANGE, longitude, latitude, GEO_STEP_MAX)
    bits = 0 if hashed is None else hashed.bits
    chars = bytes(_GEOALPHABET[(bits >> (52 - (i + 1) * 5)) & 0x1F] for i in range(10))
    return chars + b"0"


# ---- neighbours and the search boxes ----


def _move_x(hashed: HashBits, direction: int) -> HashBits:
    x = hashed.bits & _ODD_BITS
    y = hashed.bits & _EVEN_BITS
    zz = _EVEN_BITS >> (64 - hashed.step * 2)
    if direction > 0:
        x = (x + (zz + 1)) & _U64
    else:
        x = ((x | zz) - (zz + 1)) & _U64
    x &= _ODD_BITS >> (64 - hashed.step * 2)
    return HashBits(x | y, hashed.step)


def _move_y(hashed: HashBits, direction: int) -> HashBits:
    x = hashed.bits & _ODD_BITS
    y = hashed.bits & _EVEN_BITS
    zz = _ODD_BITS >> (64 - hashed.step * 2)
    if direction > 0:
        y = (y + (zz + 1)) & _U64
    else:
        y = ((y | zz) - (zz + 1)) & _U64
    y &= _EVEN_BITS >> (64 - hashed.step * 2)
    return HashBits(x | y, hashed.step)


def _neighbors(hashed: HashBits) -> dict[str, HashBits]:
    """geohashNeighbors: the eight boxes around one (x is the longitude, y the latitude)."""
    return {
        "east": _move_x(hashed, 1), "west": _move_x(hashed, -1),
        "south": _move_y(hashed, -1), "north": _move_y(hashed, 1),
        "north_west": _move_y(_move_x(hashed, -1), 1),
        "north_east": _move_y(_move_x(hashed, 1), 1),
        "south_east": _move_y(_move_x(hashed, 1), -1),
        "south_west": _move_y(_move_x(hashed, -1), -1),
    }


def _steps_by_radius(range_meters: float, latitude: float) -> int:
    """geohashEstimateStepsByRadius: the precision of the nine boxes."""
    if range_meters == 0:
        return 26
    step = 1
    while range_meters < MERCATOR_MAX:
        range_meters *= 2
        step += 1
    step -= 2
    if latitude > 66 or latitude < -66:
        step -= 1
        if latitude > 80 or latitude < -80:
            step -= 1
    return min(max(step, 1), 26)


@dataclass(frozen=True, slots=True)
class Shape:
    """A search area (GeoShape): a circle of `radius`, or a box `width` by `height`, in the
    unit `conversion` meters make one of, around (longitude, latitude)."""

    longitude: float
    latitude: float
    conversion: float
    radius: float | None  # None: a box
    width: float = 0.0
    height: float = 0.0


def _cos(x: float) -> float:
    return math.cos(x) if math.isfinite(x) else math.nan


def _divide(a: float, b: float) -> float:
    """C's a / b: a division by zero gives an infinity (or NaN), not an exception."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _bounding_box(shape: Shape) -> tuple[float, float, float, float]:
    """geohashBoundingBox: (min long, min lat, max long, max lat) of the area."""
    longitude, latitude = shape.longitude, shape.latitude
    if shape.radius is not None:
        height = width = shape.conversion * shape.radius
    else:
        height = shape.conversion * (shape.height / 2)
        width = shape.conversion * (shape.width / 2)
    lat_delta = (height / EARTH_RADIUS_IN_METERS) / _D_R
    long_delta_top = _divide(width / EARTH_RADIUS_IN_METERS,
                             _cos((latitude + lat_delta) * _D_R)) / _D_R
    long_delta_bottom = _divide(width / EARTH_RADIUS_IN_METERS,
                                _cos((latitude - lat_delta) * _D_R)) / _D_R
    southern = latitude < 0
    long_delta = long_delta_bottom if southern else long_delta_top
    return longitude - long_delta, latitude - lat_delta, longitude + long_delta, \
        latitude + lat_delta


def search_boxes(shape: Shape) -> list[HashBits]:
    """geohashCalculateAreasByShapeWGS84, as membersOfAllNeighbors takes its result: the box
    holding the centre, then its north, south, east, west, north-east, north-west,
    south-east and south-west neighbours, NO_BOX for those the area cannot reach."""
    min_lon, min_lat, max_lon, max_lat = _bounding_box(shape)
    if shape.radius is not None:
        radius_meters = shape.radius
    else:
        half_width, half_height = shape.width / 2, shape.height / 2
        radius_meters = math.sqrt(half_width * half_width + half_height * half_height)
    radius_meters *= shape.conversion
    steps = _steps_by_radius(radius_meters, shape.latitude)

    def around(step: int) -> tuple[HashBits, dict[str, HashBits], Area]:
        hashed = encode(LONG_RANGE, LAT_RANGE, shape.longitude, shape.latitude, step)
        # (A centre is in range: checked, or decoded from a score and clamped.)
        if hashed is None:
            invariant(False, "a search centre out of range")
            hashed = NO_BOX  # (not reached)
        return hashed, _neighbors(hashed), decode(LONG_RANGE, LAT_RANGE, hashed)

    hashed, neighbors, area = around(steps)
    north = decode(LONG_RANGE, LAT_RANGE, neighbors["north"])
    south = decode(LONG_RANGE, LAT_RANGE, neighbors["south"])
    east = decode(LONG_RANGE, LAT_RANGE, neighbors["east"])
    west = decode(LONG_RANGE, LAT_RANGE, neighbors["west"])
    decrease_step = (north.lat_max < max_lat or south.lat_min > min_lat
                     or east.long_max < max_lon or west.long_min > min_lon)
    if steps > 1 and decrease_step:
        steps -= 1
        hashed, neighbors, area = around(steps)
    if steps >= 2:  # leave out the boxes the area does not reach
        dropped: set[str] = set()
        if area.lat_min < min_lat:
            dropped |= {"south", "south_west", "south_east"}
        if area.lat_max > max_lat:
            dropped |= {"north", "north_east", "north_west"}
        if area.long_min < min_lon:
            dropped |= {"west", "south_west", "north_west"}
        if area.long_max > max_lon:
            dropped |= {"east", "south_east", "north_east"}
        for name in dropped:
            neighbors[name] = NO_BOX
    return [hashed] + [neighbors[name] for name in (
        "north", "south", "east", "west", "north_east", "north_west", "south_east",
        "south_west")]


def box_scores(hashed: HashBits) -> tuple[int, int]:
    """scoresOfGeoHashBox: the scores [min, max) of the positions in the box."""
    return align52(hashed), align52(HashBits(hashed.bits + 1, hashed.step))


# ---- distances ----


def _asin(x: float) -> float:
    return math.asin(x) if -1.0 <= x <= 1.0 else math.nan


def _sin(x: float) -> float:
    return math.sin(x) if math.isfinite(x) else math.nan


def lat_distance(lat1: float, lat2: float) -> float:
    """geohashGetLatDistance: meters along a meridian."""
    return EARTH_RADIUS_IN_METERS * abs(lat2 * _D_R - lat1 * _D_R)


def distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """geohashGetDistance: the haversine distance in meters."""
    lon1r = lon1 * _D_R
    lon2r = lon2 * _D_R
    v = _sin((lon2r - lon1r) / 2)
    if v == 0.0:
        return lat_distance(lat1, lat2)
    lat1r = lat1 * _D_R
    lat2r = lat2 * _D_R
    u = _sin((lat2r - lat1r) / 2)
    a = u * u + _cos(lat1r) * _cos(lat2r) * v * v
    return 2.0 * EARTH_RADIUS_IN_METERS * _asin(math.sqrt(a) if a >= 0 else math.nan)


def distance_if_within(shape: Shape, longitude: float, latitude: float) -> float | None:
    """geoWithinShape: the distance in meters from the centre of `shape` to the position if
    the position is in the area, else None. A box holds a position whose distance along the
    meridian is within half its height and along the parallel within half its width."""
    if shape.radius is not None:
        meters = distance(shape.longitude, shape.latitude, longitude, latitude)
        return None if meters > shape.radius * shape.conversion else meters
    width_m = shape.width * shape.conversion
    height_m = shape.height * shape.conversion
    if lat_distance(latitude, shape.latitude) > height_m / 2:
        return None
    if distance(longitude, latitude, shape.longitude, latitude) > width_m / 2:
        return None
    return distance(shape.longitude, shape.latitude, longitude, latitude)
