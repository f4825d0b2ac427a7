"""Geo commands (commands/geo.py, commands/geohash.py): replies, errors and their order, the
passive effects (ZADD's and a stored sorted set's: a second state applying them has the same
digest), undo, and the coordinate reply (DoubleText) through RESP, sessions, the peer wire and
scripts. Redis's own replies are compared in test_geo_against_redis.py."""

from __future__ import annotations

import msgpack
import pytest

from replikv.commands import geohash, keys_of, parse_command
from replikv.commands.geo import distance_text, human_double
from replikv.features import GEO_LEVEL, command_level, script_call_level
from replikv.replies import DoubleText, ErrorReply, NullArray
from replikv.resp import encode_reply
from replikv.sessions import reply_from_msgpack, reply_to_msgpack
from replikv.state import EFFECT_DELETE, EFFECT_ZSET_ADD, EFFECT_ZSET_REPLACE, KVState
from replikv.wire import _ext_hook, _reply_to_wire

T0 = 1_000_000
SICILY = [b"GEOADD", b"Sicily", b"13.361389", b"38.115556", b"Palermo", b"15.087269",
          b"37.502669", b"Catania"]


def run(state: KVState, *argv: bytes | str) -> object:
    return state.apply_command([a.encode() if isinstance(a, str) else a for a in argv], T0)


@pytest.fixture
def sicily() -> KVState:
    state = KVState()
    assert state.apply_command(SICILY, T0) == 2
    return state


def test_geoadd_stores_redis_s_geohash_as_the_score(sicily: KVState) -> None:
    # Redis 7.0: ZSCORE Sicily Palermo is 3479099956230698.
    assert run(sicily, "ZSCORE", "Sicily", "Palermo") == 3479099956230698.0
    assert run(sicily, "ZSCORE", "Sicily", "Catania") == 3479447370796909.0
    assert run(sicily, "TYPE", "Sicily") == "zset"
    assert geohash.position_of(3479099956230698.0) == (13.361389338970184, 38.1155563954963)


def test_geoadd_options_are_zadd_s(sicily: KVState) -> None:
    assert run(sicily, "GEOADD", "Sicily", "CH", "13.361389", "38.115556", "Palermo",
               "1", "1", "new") == 1
    assert run(sicily, "GEOADD", "Sicily", "XX", "CH", "2", "2", "new", "3", "3", "absent") == 1
    assert run(sicily, "GEOADD", "Sicily", "NX", "9", "9", "new", "4", "4", "other") == 1
    assert run(sicily, "ZCARD", "Sicily") == 4


@pytest.mark.parametrize(("argv", "error"), [
    (["GEOADD", "k", "200", "10", "m"], "ERR invalid longitude,latitude pair 200.000000,10.000000"),
    (["GEOADD", "k", "10", "85.06", "m"], "ERR invalid longitude,latitude pair 10.000000,85.060000"),
    (["GEOADD", "k", "-inf", "1", "m"], "ERR invalid longitude,latitude pair -inf,1.000000"),
    (["GEOADD", "k", "x", "1", "m"], "ERR value is not a valid float"),
    (["GEOADD", "k", "1", "nan", "m"], "ERR value is not a valid float"),
    (["GEOADD", "k", "NX", "XX", "1", "1", "m"], "ERR syntax error"),
    (["GEOADD", "k", "ch", "ch", "ch"], "ERR syntax error"),
    (["GEOADD", "k", "1", "1", "m", "2"], "ERR syntax error"),
    (["GEOADD", "k", "1", "1"], "ERR wrong number of arguments for 'geoadd' command"),
    (["GEODIST", "k", "a", "b", "parsecs"],
     "ERR unsupported unit provided. please use M, KM, FT, MI"),
    (["GEODIST", "k", "a", "b", "km", "x"], "ERR syntax error"),
])  # fmt: skip
def test_errors_found_before_the_key_is_looked_at(argv: list[str], error: str) -> None:
    state = KVState()
    state.apply_command([b"SET", b"k", b"v"], T0)  # not a sorted set: these come first
    assert run(state, *argv) == ErrorReply(error)
    assert run(state, "GET", "k") == b"v"


def test_geopos_geohash_geodist(sicily: KVState) -> None:
    assert run(sicily, "GEOPOS", "Sicily", "Palermo", "nope") == [
        [b"13.36138933897018433", b"38.11555639549629859"], NullArray]
    assert all(type(c) is DoubleText for c in run(sicily, "GEOPOS", "Sicily", "Palermo")[0])
    assert run(sicily, "GEOPOS", "nokey", "a") == [NullArray]
    assert run(sicily, "GEOHASH", "Sicily", "Palermo", "Catania", "nope") == [
        b"sqc8b49rny0", b"sqdtr74hyu0", None]
    assert run(sicily, "GEODIST", "Sicily", "Palermo", "Catania") == b"166274.1516"
    assert run(sicily, "GEODIST", "Sicily", "Palermo", "Catania", "km") == b"166.2742"
    assert run(sicily, "GEODIST", "Sicily", "Palermo", "Catania", "MI") == b"103.3182"
    assert run(sicily, "GEODIST", "Sicily", "Palermo", "nope") is None
    assert run(sicily, "GEODIST", "nokey", "a", "b") is None


def test_searches(sicily: KVState) -> None:
    assert run(sicily, "GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200",
               "km", "ASC") == [b"Catania", b"Palermo"]
    assert run(sicily, "GEORADIUS", "Sicily", "15", "37", "200", "km", "WITHDIST", "WITHCOORD",
               "WITHHASH", "DESC", "COUNT", "1") == [
        [b"Palermo", b"190.4424", 3479099956230698,
         [b"13.36138933897018433", b"38.11555639549629859"]]]
    assert run(sicily, "GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYBOX", "400", "400",
               "km", "ASC", "WITHDIST") == [[b"Palermo", b"0.0000"], [b"Catania", b"166.2742"]]
    assert run(sicily, "GEORADIUSBYMEMBER_RO", "Sicily", "Palermo", "100", "km") == [b"Palermo"]
    assert run(sicily, "GEOSEARCH", "nokey", "FROMMEMBER", "x", "BYRADIUS", "1", "km") == []


@pytest.mark.parametrize(("argv", "error"), [
    # The key's type first, whatever else is wrong.
    (["GEOSEARCH", "str", "x", "y", "z", "w", "v"],
     "WRONGTYPE Operation against a key holding the wrong kind of value"),
    # GEORADIUSBYMEMBER's member before its radius; a FROMMEMBER where it comes.
    (["GEORADIUSBYMEMBER", "Sicily", "nope", "x", "km"],
     "ERR could not decode requested zset member"),
    (["GEOSEARCH", "Sicily", "FROMMEMBER", "nope", "BYRADIUS", "x", "km"],
     "ERR could not decode requested zset member"),
    (["GEOSEARCH", "Sicily", "BYRADIUS", "x", "km", "FROMMEMBER", "nope"],
     "ERR need numeric radius"),
    (["GEOSEARCH", "Sicily", "FROMLONLAT", "1", "1", "FROMMEMBER", "x", "BYRADIUS", "1", "km"],
     "ERR syntax error"),
    (["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYBOX", "-1", "1", "km"],
     "ERR height or width cannot be negative"),
    (["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "1", "km", "COUNT", "0"],
     "ERR COUNT must be > 0"),
    (["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "1", "km", "ANY"],
     "ERR the ANY argument requires COUNT argument"),
    (["GeoSearch", "Sicily", "BYRADIUS", "1", "km", "ASC", "DESC"],
     "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for GeoSearch"),
    (["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "ASC", "DESC", "ASC"],
     "ERR exactly one of BYRADIUS and BYBOX can be specified for GEOSEARCH"),
    (["GEORADIUS", "Sicily", "1", "1", "1", "km", "STORE", "d", "WITHDIST"],
     ("ERR STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and WITHCOORD "
      "options")),
    (["GEOSEARCHSTORE", "d", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "1", "km",
      "WITHHASH"],
     "ERR GEOSEARCHSTORE is not compatible with WITHDIST, WITHHASH and WITHCOORD options"),
    (["GEORADIUS_RO", "Sicily", "1", "1", "1", "km", "STORE", "d"], "ERR syntax error"),
    (["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "1", "km", "STOREDIST"],
     "ERR syntax error"),
])  # fmt: skip
def test_search_errors_in_redis_s_order(sicily: KVState, argv: list[str], error: str) -> None:
    run(sicily, "SET", "str", "v")
    assert run(sicily, *argv) == ErrorReply(error)


def test_a_missing_key_skips_the_member_and_radius_but_not_the_options() -> None:
    state = KVState()
    assert run(state, "GEORADIUSBYMEMBER", "nokey", "m", "x", "km") == []
    assert run(state, "GEORADIUSBYMEMBER", "nokey", "m", "x", "km", "bad") == ErrorReply(
        "ERR syntax error")
    run(state, "SET", "d", "v")
    assert run(state, "GEORADIUSBYMEMBER", "nokey", "m", "x", "km", "STORE", "d") == 0
    assert run(state, "EXISTS", "d") == 0  # the STORE key is deleted, as Redis does


def test_store_forms_write_a_sorted_set_and_keys_name_the_target(sicily: KVState) -> None:
    argv = [b"GEORADIUS", b"Sicily", b"15", b"37", b"200", b"km", b"STOREDIST", b"d"]
    spec, _ = parse_command(argv)
    assert spec.kind == "write" and keys_of(spec, argv) == [b"Sicily", b"d"]
    assert keys_of(spec, argv[:6]) == [b"Sicily"]
    assert sicily.apply_command(argv, T0) == 2
    assert run(sicily, "ZRANGE", "d", "0", "-1", "WITHSCORES") == [
        b"Catania", 56.4412578701582, b"Palermo", 190.44242984775784]
    assert run(sicily, "GEOSEARCHSTORE", "d2", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS",
               "10", "km") == 1
    assert run(sicily, "ZSCORE", "d2", "Palermo") == 3479099956230698.0
    spec, _ = parse_command([b"GEOSEARCHSTORE", b"d", b"s", b"FROMLONLAT", b"0", b"0",
                             b"BYRADIUS", b"1", b"m"])
    assert (spec.first_key, spec.last_key) == (1, 2)


def test_passive_effects_rebuild_the_same_state_and_undo_takes_them_back() -> None:
    leader, backup = KVState(), KVState()
    stream = [SICILY, [b"GEOADD", b"Sicily", b"CH", b"1", b"1", b"Palermo", b"2", b"2", b"x"],
              [b"SET", b"d", b"v"],
              [b"GEOSEARCHSTORE", b"d", b"Sicily", b"FROMLONLAT", b"1", b"1", b"BYRADIUS",
               b"500", b"km", b"STOREDIST"],
              [b"GEORADIUS", b"Sicily", b"15", b"37", b"1", b"m", b"STORE", b"d"],
              [b"GEORADIUS", b"Sicily", b"15", b"37", b"300", b"km", b"STORE", b"e"],
              [b"GEOADD", b"Sicily", b"200", b"1", b"bad"]]
    kinds = []
    for step, argv in enumerate(stream):
        before = leader.digest()
        reply, effects, undo = leader.execute_recorded(argv, T0 + step)
        kinds += [effect[0] for effect in effects]
        after = leader.digest()
        leader.undo(undo)
        assert leader.digest() == before, argv
        again, effects_again, _ = leader.execute_recorded(argv, T0 + step)
        assert (again, effects_again) == (reply, effects)
        backup.apply_effects(effects)
        assert backup.digest() == after == leader.digest(), argv
    assert {EFFECT_ZSET_ADD, EFFECT_ZSET_REPLACE, EFFECT_DELETE} <= set(kinds)


def test_ties_under_count_follow_redis_s_partial_sort() -> None:
    """Twelve members on one spot and COUNT 3: Redis's pqsort leaves these first (its own
    comparisons and swaps)."""
    state = KVState()
    run(state, "GEOADD", "k", *[x for i in range(12) for x in ("2.35", "48.85", f"m{i:02d}")])
    run(state, "GEOADD", "k", "2.36", "48.86", "far")
    reply = run(state, "GEOSEARCH", "k", "FROMLONLAT", "2.35", "48.85", "BYRADIUS", "10", "km",
                "COUNT", "3")
    assert reply == [b"m00", b"m01", b"m02"]  # (redis-server 7.0 answers these)
    assert run(state, "GEOSEARCH", "k", "FROMLONLAT", "2.36", "48.86", "BYRADIUS", "10", "km",
               "COUNT", "2", "DESC") == [b"m00", b"m01"]


def test_the_text_of_distances_and_coordinates() -> None:
    assert distance_text(0.0) == b"0.0000"
    assert distance_text(0.00004) == b"0.0000"
    assert distance_text(0.25) == b"0.2500"
    assert distance_text(12345.67891) == b"12345.6789"
    assert human_double(180.0) == b"180"
    assert human_double(-0.0) == b"0"
    assert human_double(-1e-20) == b"0"
    assert human_double(13.361389338970184) == b"13.36138933897018433"


def test_a_coordinate_is_a_resp3_double_and_survives_sessions_and_the_wire() -> None:
    coordinate = DoubleText(b"13.36138933897018433")
    assert encode_reply([coordinate], 2) == b"*1\r\n$20\r\n13.36138933897018433\r\n"
    assert encode_reply([coordinate], 3) == b"*1\r\n,13.36138933897018433\r\n"
    reply = [[coordinate, DoubleText(b"0")], NullArray]
    back = reply_from_msgpack(msgpack.unpackb(msgpack.packb(reply_to_msgpack(reply)),
                                              raw=False))
    assert back == reply and type(back[0][0]) is DoubleText  # type: ignore[index]
    wired = msgpack.unpackb(msgpack.packb(_reply_to_wire(reply, 0)), ext_hook=_ext_hook,
                            raw=False)
    assert wired[0] == [coordinate, DoubleText(b"0")] and type(wired[0][0]) is DoubleText


def test_a_script_sees_coordinates_as_redis_7_0_gives_them(sicily: KVState) -> None:
    body = (b"local p = redis.call('GEOPOS', KEYS[1], 'Palermo')[1] "
            b"return {type(p[1]), p[1]}")
    # Below the geo level a script's call is answered as an older replikv answers it, and
    # the leader is told to raise the level and run the script again.
    reply = sicily.apply_command([b"EVAL", body, b"1", b"Sicily"], T0)
    assert isinstance(reply, ErrorReply) and "Unknown Redis command" in reply.message
    assert sicily.script_level_wanted == (GEO_LEVEL, b"GEOPOS")
    sicily.raise_feature_level(GEO_LEVEL)
    assert sicily.apply_command([b"EVAL", body, b"1", b"Sicily"], T0) == [
        b"string", b"13.36138933897018433"]
    body3 = (b"redis.setresp(3) local p = redis.call('GEOPOS', KEYS[1], 'Palermo')[1] "
             b"return tostring(p[1].double)")
    assert sicily.apply_command([b"EVAL", body3, b"1", b"Sicily"], T0) == b"13.36138933897"


def test_geo_commands_need_the_geo_level() -> None:
    for name in (b"geoadd", b"geosearchstore", b"georadius", b"geopos", b"geosearch",
                 b"geohash", b"geodist", b"georadiusbymember_ro"):
        assert command_level([name], active=True) == GEO_LEVEL
        assert script_call_level([name]) == GEO_LEVEL  # a script's call: judged either way
    # Passive: GEOADD's and the STORE forms' effects are ZADD's; coordinates in a reply need it.
    assert command_level([b"geoadd"]) == command_level([b"geosearchstore"]) == 1
    assert command_level([b"georadius"]) == command_level([b"geopos"]) == GEO_LEVEL
