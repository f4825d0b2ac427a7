"""Geo commands, differentially: a scripted and a seeded stream of commands go to a real
redis-server and to a replikv state, and every reply must match, in RESP2 and RESP3, bytes parsed
the same way (hiredis). scripts/install.sh --test installs redis-server.

Nothing is normalised in the geo replies themselves: the scores GEOADD computes, the coordinates
GEOPOS prints (17 decimals), the distances (4 decimals), the hashes, the members a search finds
and their order (ties included: the streams put several members on one position, so a COUNT
below what is found goes through Redis's partial quicksort) must be Redis's. Only the scores a
ZRANGE shows of a STOREDIST target are compared as doubles against a Redis before 7.2, which
wrote 17 significant digits (as test_zsets_against_redis does).
The connection and server helpers are the hash test's.
"""

from __future__ import annotations

import random

import pytest

from replikv.resp import encode_reply
from replikv.state import KVState

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    RawConnection,
    _redis_server_installed,
    compare_stream,
    parsed,
    plain,
    redis_port,
    server_version,
    stream_coverage,
)
from .test_zsets_against_redis import normalised as zset_normalised

T0 = 1_000_000

SCRIPTED: list[list[bytes]] = [[arg.encode() for arg in line.split()] for line in """
GEOADD Sicily 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
GEOADD Sicily 200 10 x
GEOADD Sicily -inf 10 x
GEOADD Sicily 10 nan x
GEOADD Sicily 10 1e400 x
GEOADD Sicily 10 85.06 x
GEOADD Sicily nx xx 1 2 m
GEOADD Sicily ch ch ch
GEOADD Sicily gt 1 2 m
GEOADD Sicily 1 2 m 3
GEOADD Sicily ch 13.361389 38.115556 Palermo 1 1 new
GEOADD Sicily XX CH 2 2 new 3 3 absent
GEOADD Sicily NX 9 9 new 4 4 other
GEOADD Sicily 180 85.05112878 corner -180 -85.05112878 corner2 0 0 zero -0 -0 zero2
ZRANGE Sicily 0 -1 WITHSCORES
GEOPOS Sicily Palermo Catania nope corner corner2 zero
GEOPOS Sicily
GEOPOS nokey a b
GEOHASH Sicily Palermo Catania nope corner corner2 zero
GEOHASH nokey a
GEODIST Sicily Palermo Catania
GEODIST Sicily Palermo Catania km
GEODIST Sicily Palermo Catania MI
GEODIST Sicily Palermo Catania ft
GEODIST Sicily Palermo Palermo
GEODIST Sicily Palermo Catania xx
GEODIST Sicily Palermo Catania km x
GEODIST Sicily Palermo nope
GEODIST nokey Palermo nope
GEODIST nokey Palermo nope parsecs
GEORADIUS Sicily 15 37 200 km WITHDIST WITHCOORD WITHHASH
GEORADIUS Sicily 15 37 200 km WITHDIST ASC
GEORADIUS Sicily 15 37 200 km DESC COUNT 1
GEORADIUS Sicily 15 37 200 km COUNT 1 ANY
GEORADIUS Sicily 15 37 20000 km
GEORADIUS Sicily 15 37 200 km STORE dst
ZRANGE dst 0 -1 WITHSCORES
GEORADIUS Sicily 15 37 200 km STOREDIST dst
ZRANGE dst 0 -1 WITHSCORES
GEORADIUS Sicily 15 37 200 km STORE dst WITHDIST
GEORADIUS Sicily 15 37 1 m STORE dst
EXISTS dst
GEORADIUS Sicily 15 37 200 km STORE
GEORADIUS Sicily 200 37 x km
GEORADIUS Sicily 15 37 x km
GEORADIUS Sicily 15 37 -1 km
GEORADIUS Sicily 15 37 1 au
GEORADIUS Sicily 15 37 1 km ANY
GEORADIUS Sicily 15 37 1 km FROMMEMBER Palermo
GEORADIUSBYMEMBER Sicily Palermo 300 km WITHDIST
GEORADIUSBYMEMBER Sicily Palermo 0 km WITHDIST WITHHASH WITHCOORD
GEORADIUSBYMEMBER Sicily nope 300 km WITHDIST
GEORADIUSBYMEMBER Sicily nope x km WITHDIST
GEORADIUSBYMEMBER Sicily Palermo x km WITHDIST
GEORADIUSBYMEMBER nokey nope x km WITHDIST
GEORADIUSBYMEMBER nokey nope x km WITHDIST STORE y
GEORADIUSBYMEMBER nokey nope x km bad
GEORADIUSBYMEMBER Sicily Palermo 300 km STOREDIST dst COUNT 2 DESC
ZRANGE dst 0 -1 WITHSCORES
GEORADIUS_RO Sicily 15 37 200 km STORE dst
GEORADIUS_RO Sicily 15 37 200 km WITHCOORD
GEORADIUSBYMEMBER_RO Sicily Palermo 200 km STOREDIST dst
GEORADIUSBYMEMBER_RO Sicily Palermo 200 km COUNT 1
GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km ASC
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX 400 400 km ASC WITHCOORD WITHDIST
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX 400 40 km DESC WITHHASH
GEOSEARCH Sicily FROMMEMBER Palermo FROMLONLAT 1 1 BYBOX 400 400 km
GEOSEARCH Sicily FROMLONLAT 1 1 FROMMEMBER Palermo BYBOX 400 400 km
GEOSEARCH Sicily FROMMEMBER Palermo FROMMEMBER Catania BYRADIUS 10 km
GEOSEARCH Sicily FROMMEMBER nope FROMMEMBER Catania BYRADIUS 10 km
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 10 km BYBOX 1 1 km
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX 1 1 km BYRADIUS 10 km
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 10 km BYRADIUS 500 km
GEOSEARCH Sicily BYBOX 400 400 km ASC
GEOSEARCH Sicily FROMMEMBER Palermo ASC WITHDIST WITHHASH
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX 1 1
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 km ANY
geosearch Sicily BYRADIUS 1 km ASC
GeoSearch Sicily FROMLONLAT 1 1 DESC
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS -1 km
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX -1 1 km
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX 1 x km
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX x 1 km
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 lightyears
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 km COUNT 0
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 km COUNT x
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 km COUNT
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 km STORE x
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS 1 km STOREDIST
GEOSEARCH Sicily FROMMEMBER nope BYRADIUS x km
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS x km FROMMEMBER nope
GEOSEARCH Sicily FROMMEMBER Palermo BYRADIUS inf km WITHDIST
GEOSEARCH Sicily FROMMEMBER Palermo BYBOX inf inf mi WITHDIST
GEOSEARCH Sicily FROMLONLAT 0 85.05112878 BYRADIUS 100 km WITHDIST
GEOSEARCH Sicily FROMLONLAT -180 -85 BYBOX 40000 400 km WITHDIST
GEOSEARCH Sicily FROMLONLAT 0 0 BYRADIUS 0 m WITHDIST
GEOSEARCH nokey FROMMEMBER x BYRADIUS 1 km
GEOSEARCH nokey FROMMEMBER x BYRADIUS 1 km WITHDIST ANY
GEOSEARCHSTORE dst Sicily FROMMEMBER Palermo BYRADIUS 1000 km STOREDIST
ZRANGE dst 0 -1 WITHSCORES
GEOSEARCHSTORE dst Sicily FROMMEMBER Palermo BYBOX 1000 1000 km COUNT 2
ZRANGE dst 0 -1 WITHSCORES
GEOSEARCHSTORE dst Sicily FROMMEMBER Palermo BYRADIUS 1000 km WITHDIST
GEOSEARCHSTORE dst Sicily FROMMEMBER Palermo BYRADIUS 1000 km STORE x
GEOSEARCHSTORE dst nokey FROMMEMBER Palermo BYRADIUS 1000 km
EXISTS dst
SET str v
GEOADD str 1 1 m
GEOADD str 1 200 m
GEOSEARCH str x
GEOSEARCHSTORE dst str x
GEORADIUS str 200 x y z
GEOPOS str a
GEOHASH str a
GEODIST str a b x
GEODIST str a b
GEOSEARCHSTORE str Sicily FROMMEMBER Palermo BYRADIUS 100 km
TYPE str
ZADD weird -1 a 1.5 b 9.3e18 c 2e19 d inf e -inf f 4503599627370495 g 9007199254740993 h
GEOPOS weird a b c d e f g h
GEOHASH weird a b c d e f g h
GEODIST weird a b
GEOSEARCH weird FROMLONLAT 0 0 BYRADIUS 30000 km WITHHASH WITHCOORD
GEOSEARCH weird FROMMEMBER b BYBOX 40000 40000 km WITHHASH ASC
""".strip().splitlines()]

_KEYS = [b"g1", b"g2"]  # g2 grows past a listpack's 128 members
_MEMBERS = [b"m%d" % i for i in range(40)] + [b"", b"a\x00b", b"x" * 70]
# A few spots many members share (ties in distance), and a wide spread.
_SPOTS = [(b"2.35", b"48.85"), (b"2.3522", b"48.8566"), (b"-0.1276", b"51.5072"),
          (b"13.4", b"52.52"), (b"179.99", b"0.5"), (b"-179.99", b"0.5"), (b"0", b"0"),
          (b"139.69", b"35.68"), (b"-74.006", b"40.7128"), (b"2.36", b"48.86")]
_UNITS = [b"m", b"km", b"km", b"mi", b"ft", b"KM"]
_RADII = [b"0", b"1", b"50", b"200", b"200", b"1000", b"5000", b"20000", b"0.5"]
_BAD = [b"-1", b"x", b"yd", b"inf"]  # (an infinite radius is no error: the whole world)


def _pick(rng: random.Random, choices: list[bytes]) -> bytes:
    """Mostly one of `choices`, now and then a bad or odd argument."""
    return rng.choice(_BAD) if rng.random() < 0.03 else rng.choice(choices)


def _member(rng: random.Random) -> bytes:
    """Mostly a member both keys hold from the start."""
    return rng.choice(_MEMBERS[:20]) if rng.random() < 0.8 else rng.choice(_MEMBERS)


def _position(rng: random.Random) -> tuple[bytes, bytes]:
    if rng.random() < 0.6:
        return rng.choice(_SPOTS)
    if rng.random() < 0.03:
        return rng.choice([(b"181", b"0"), (b"0", b"86"), (b"x", b"0"), (b"0", b"")])
    return (b"%.6f" % rng.uniform(-180, 180), b"%.6f" % rng.uniform(-85, 85))


def _centre(rng: random.Random) -> list[bytes]:
    if rng.random() < 0.5:
        return [b"FROMMEMBER", _member(rng)]
    return [b"FROMLONLAT", *_position(rng)]


def _area(rng: random.Random) -> list[bytes]:
    if rng.random() < 0.5:
        return [b"BYRADIUS", _pick(rng, _RADII), _pick(rng, _UNITS)]
    return [b"BYBOX", _pick(rng, _RADII), _pick(rng, _RADII), _pick(rng, _UNITS)]


def _options(rng: random.Random, with_options: bool) -> list[bytes]:
    """Options in a random order: WITH* (if `with_options`), ASC or DESC, COUNT n, ANY."""
    words: list[bytes] = []
    if with_options:
        words += rng.sample([b"WITHDIST", b"WITHHASH", b"WITHCOORD"], rng.randint(0, 3))
    words += rng.choice([[], [], [b"ASC"], [b"DESC"]])
    count = rng.choice([[], [], [b"COUNT", b"1"], [b"COUNT", b"3"], [b"COUNT", b"10"],
                        [b"COUNT", b"2"]])
    if rng.random() < 0.03:
        count = [b"COUNT", rng.choice([b"0", b"x", b"-1"])]
    if (count and rng.random() < 0.3) or rng.random() < 0.02:
        words.append(b"ANY")
    rng.shuffle(words)
    at = rng.randint(0, len(words))
    return words[:at] + count + words[at:]


def commands(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"v"]]
    for key in _KEYS:  # a start: g2 past 128 members, many on shared spots
        triples: list[bytes] = []
        for member in _MEMBERS[:20 if key == b"g1" else 43]:
            lon, lat = rng.choice(_SPOTS) if rng.random() < 0.6 else (
                b"%.6f" % rng.uniform(-180, 180), b"%.6f" % rng.uniform(-85, 85))
            triples += [lon, lat, member]
        out.append([b"GEOADD", key, *triples])
    out.append([b"GEOADD", b"g2", *[x for i in range(100) for x in (
        b"%.5f" % rng.uniform(2.2, 2.5), b"%.5f" % rng.uniform(48.7, 49.0), b"p%d" % i)]])
    for _ in range(count):
        key = rng.choice(_KEYS) if rng.random() < 0.9 else rng.choice([b"str", b"none"])
        member = _member(rng)
        options: list[list[bytes]] = [
            [b"GEOADD", key, *rng.choice([[], [], [b"NX"], [b"XX"], [b"CH"], [b"XX", b"CH"],
                                          [b"NX", b"XX"]]),
             *[x for _ in range(rng.randint(1, 3)) for x in (*_position(rng),
                                                              rng.choice(_MEMBERS))]],
            [b"GEOPOS", key, *rng.sample(_MEMBERS, 3)],
            [b"GEOHASH", key, *rng.sample(_MEMBERS, 2)],
            [b"GEODIST", key, member, rng.choice(_MEMBERS), *rng.choice([[], [b"km"], [b"mi"],
                                                                        [b"ft"], [b"xx"]])],
            [b"GEOSEARCH", key, *_centre(rng), *_area(rng), *_options(rng, True)],
            [b"GEOSEARCH", key, *_centre(rng), *_area(rng), *_options(rng, True)],
            [b"GEOSEARCHSTORE", b"dst", key, *_centre(rng), *_area(rng),
             *_options(rng, False), *rng.choice([[], [b"STOREDIST"]])],
            [b"GEORADIUS", key, *_position(rng), _pick(rng, _RADII), _pick(rng, _UNITS),
             *_options(rng, True)],
            [b"GEORADIUS", key, *_position(rng), _pick(rng, _RADII), _pick(rng, _UNITS),
             *_options(rng, False), rng.choice([b"STORE", b"STOREDIST"]), b"dst"],
            [b"GEORADIUSBYMEMBER", key, member, _pick(rng, _RADII), _pick(rng, _UNITS),
             *_options(rng, True)],
            [b"GEORADIUSBYMEMBER", key, member, _pick(rng, _RADII), _pick(rng, _UNITS),
             *_options(rng, False), rng.choice([b"STORE", b"STOREDIST"]), b"dst"],
            [rng.choice([b"GEORADIUS_RO", b"GEORADIUSBYMEMBER_RO"]), key,
             *(_position(rng) if rng.random() < 0.5 else [member]), _pick(rng, _RADII),
             _pick(rng, _UNITS), *_options(rng, True)],
            [b"ZRANGE", b"dst", b"0", b"-1", b"WITHSCORES"],
            [b"ZREM", key, member],
        ]
        out.append(rng.choice(options))
    return out


def _compare(redis_port: int, protocol: int, stream: list[list[bytes]]) -> None:  # noqa: F811
    exact = server_version(redis_port) >= (7, 2)
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        mismatches = compare_stream(redis, state, stream, protocol,
                                    lambda argv, reply: zset_normalised(argv, reply, exact))
        for key in [*_KEYS, b"dst", b"Sicily"]:  # the states agree too, score for score
            argv = [b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]
            ours = plain(parsed(encode_reply(state.apply_command(argv, T0), protocol)))
            assert zset_normalised(argv, ours, exact) == zset_normalised(
                argv, plain(redis.command(argv)), exact), key
        assert not mismatches, mismatches[:3]
    finally:
        redis.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_scripted_geo_stream_answers_as_redis_does(redis_port: int,  # noqa: F811
                                                     protocol: int) -> None:
    _compare(redis_port, protocol, SCRIPTED)


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(2))
def test_a_random_geo_stream_answers_as_redis_does(redis_port: int,  # noqa: F811
                                                   protocol: int, seed: int) -> None:
    _compare(redis_port, protocol, commands(seed, 300))


def test_the_differential_streams_cover_every_geo_command_and_error() -> None:
    names, errors, kinds = stream_coverage(SCRIPTED + commands(0, 300) + commands(1, 300))
    assert {b"GEOADD", b"GEOPOS", b"GEODIST", b"GEOHASH", b"GEOSEARCH", b"GEOSEARCHSTORE",
            b"GEORADIUS", b"GEORADIUSBYMEMBER", b"GEORADIUS_RO",
            b"GEORADIUSBYMEMBER_RO"} <= names
    assert {"int", "bytes", "list", "NoneType", "ErrorReply"} <= kinds
    for text in ("WRONGTYPE", "ERR syntax error", "ERR value is not a valid float",
                 "ERR invalid longitude,latitude", "ERR unsupported unit provided",
                 "ERR need numeric radius", "ERR need numeric width", "ERR need numeric height",
                 "ERR radius cannot be negative", "ERR height or width cannot be n",
                 "ERR could not decode requested", "ERR COUNT must be > 0",
                 "ERR value is not an integer or", "ERR the ANY argument requires ",
                 "ERR exactly one of FROMMEMBER ", "ERR exactly one of BYRADIUS an",
                 "ERR STORE option in GEORADIUS ", "ERR GEOSEARCHSTORE is not comp"):
        assert any(e.startswith(text[:30]) for e in errors), text
