"""Stream commands, differentially: the same seeded stream of commands goes to a real
redis-server and to a replikv state, and every reply must match, in RESP2 and RESP3, bytes parsed
the same way (hiredis). scripts/install.sh --test installs redis-server.

Time. replikv runs each command at the wall clock's millisecond, as redis-server does, so idle
times and IDLE/TIME options mean the same on both sides within the few milliseconds a step
takes; the stream never asks for an auto id (`*`: the millisecond would differ), and
min-idle-times are 0 or a thousand hours, never near the line.

What is normalised, and why (README, Commands, Streams):
- idle times (XPENDING's, XINFO CONSUMERS' idle and inactive, XINFO STREAM FULL's seen-time,
  active-time and delivery times) are dropped: they count milliseconds of two clocks;
- XINFO STREAM's radix-tree-keys and radix-tree-nodes, which describe Redis's memory layout;
- XINFO CONSUMERS' inactive and FULL's active-time (Redis 7.2) against an older server.
Approximate trimming (`~`) is left out: Redis trims whole radix-tree nodes only.
The connection and server helpers are the hash test's.
"""

from __future__ import annotations

import random
import time

import pytest

from replikv.resp import encode_reply
from replikv.state import KVState

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    RawConnection,
    _redis_server_installed,
    parsed,
    plain,
    redis_port,
    stream_coverage,
)

_STREAMS = [b"s1", b"s2"]
_KEYS = [*_STREAMS, b"str", b"nokey"]
_GROUPS = [b"g1", b"g2", b"nog"]
_CONSUMERS = [b"c1", b"c2", b"c3"]
_FIELDS = [b"f", b"g", b"", b"long" * 20]
_BAD_IDS = [b"abc", b"-1", b"1-x", b"+", b"-", b"1--1", b"18446744073709551616-0", b"",
            b"1-2-3"]
_ODD_IDS = [b" 5", b"+5", b"007-1", b"5-", b"18446744073709551615-18446744073709551615",
            b"0-0", b"0", b"1-*"]
_COUNTS = [b"0", b"1", b"2", b"5", b"-1", b"x", b"100"]


def _id(rng: random.Random, top: int) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(_BAD_IDS)
    if roll < 0.1:
        return rng.choice(_ODD_IDS)
    ms = rng.randint(0, top + 1)
    return b"%d" % ms if rng.random() < 0.2 else b"%d-%d" % (ms, rng.randint(0, 3))


def _range_id(rng: random.Random, top: int) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice([b"-", b"+", b"(-", b"(+", b"(", b"x"])
    text = _id(rng, top)
    return b"(" + text if rng.random() < 0.2 else text


def _fields(rng: random.Random) -> list[bytes]:
    return [x for _ in range(rng.randint(1, 3))
            for x in (rng.choice(_FIELDS), b"%d" % rng.randint(0, 99))]


def _trim(rng: random.Random, top: int) -> list[bytes]:
    roll = rng.random()
    if roll < 0.5:
        return []
    if roll < 0.7:
        return [b"MAXLEN", *rng.choice([[], [b"="]]), rng.choice([b"3", b"5", b"0", b"-1", b"x"])]
    if roll < 0.85:
        return [b"MINID", *rng.choice([[], [b"="]]), _id(rng, top)]
    return rng.choice([[b"MAXLEN", b"=", b"2", b"LIMIT", b"1"], [b"LIMIT", b"5"],
                       [b"MAXLEN", b"2", b"MINID", b"1"], [b"LIMIT", b"0"],
                       [b"MAXLEN", b"~", b"5", b"LIMIT", b"-1"], [b"MAXLEN"]])


def commands(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"v"]]
    top = 1
    for _ in range(count):
        top += rng.randint(0, 2)
        key = rng.choice(_STREAMS) if rng.random() < 0.85 else rng.choice(_KEYS)
        group = rng.choice(_GROUPS[:2]) if rng.random() < 0.9 else rng.choice(_GROUPS)
        consumer = rng.choice(_CONSUMERS)
        two = rng.sample(_STREAMS, 2)
        read_count = rng.choice([[], [b"COUNT", rng.choice(_COUNTS)]])
        options: list[list[bytes]] = [
            [b"XADD", key, *_trim(rng, top), b"%d-%d" % (top, rng.randint(0, 3)), *_fields(rng)],
            [b"XADD", key, b"%d-*" % top, *_fields(rng)],
            [b"XADD", key, *_trim(rng, top), _id(rng, top), *_fields(rng)],
            [b"XADD", key, b"NOMKSTREAM", b"%d-5" % top, *_fields(rng)],
            [b"XADD", key, b"%d-1" % top, b"f"],
            [b"XADD", key, b"MAXLEN", b"3", b"%d-9" % top, b"f", b"v"],
            [b"XLEN", key],
            [b"XRANGE", key, _range_id(rng, top), _range_id(rng, top), *read_count],
            [b"XRANGE", key, b"-", b"+"],
            [b"XREVRANGE", key, _range_id(rng, top), _range_id(rng, top), *read_count],
            [b"XRANGE", key, b"-", b"+", b"COUNT"],
            [b"XDEL", key, *[_id(rng, top) for _ in range(rng.randint(1, 3))]],
            [b"XTRIM", key, *(_trim(rng, top) or [b"MAXLEN", b"4"])],
            [b"XTRIM", key, b"MINID", b"%d" % rng.randint(0, top)],
            [b"XSETID", key, rng.choice([_id(rng, top + 3), b"%d-9" % (top + 2)]),
             *rng.choice([[], [b"ENTRIESADDED", rng.choice([b"3", b"100", b"-1"])],
                          [b"MAXDELETEDID", _id(rng, top)], [b"BOGUS"]])],
            [b"XREAD", *read_count, b"STREAMS", key, rng.choice([b"$", b"0", _id(rng, top)])],
            [b"XREAD", *read_count, b"STREAMS", *two, _id(rng, top), b"0-0"],
            [b"XREAD", b"BLOCK", rng.choice([b"1", b"-1", b"x"]), b"STREAMS", key, b"$"],
            [b"XREAD", b"STREAMS", key],
            [b"XREAD", b"STREAMS", key, key, b"0"],
            [b"XREADGROUP", b"GROUP", group, consumer, b"STREAMS", key, key, b">"],
            [b"XREAD", b"GROUP", group, consumer, b"STREAMS", key, b">"],
            [b"XREAD", b"STREAMS", key, b">"],
            [b"XGROUP", b"CREATE", key, group, rng.choice([b"$", b"0", _id(rng, top)]),
             *rng.choice([[], [b"MKSTREAM"], [b"ENTRIESREAD", rng.choice([b"2", b"-2", b"x"])],
                          [b"BOGUS"]])],
            [b"XGROUP", b"SETID", key, group, rng.choice([b"$", b"0", b"-", _id(rng, top)]),
             *rng.choice([[], [b"ENTRIESREAD", rng.choice([b"1", b"-1", b"-3"])]])],
            [b"XGROUP", b"DESTROY", key, rng.choice([b"g2", b"nog"])],
            [b"XGROUP", b"CREATECONSUMER", key, group, consumer],
            [b"XGROUP", b"DELCONSUMER", key, group, consumer],
            [b"XGROUP", b"CREATE", key],
            [b"XREADGROUP", b"GROUP", group, consumer, *read_count,
             *rng.choice([[], [b"NOACK"]]), b"STREAMS", key,
             rng.choice([b">", b">", b"0", b"$", _id(rng, top)])],
            [b"XREADGROUP", b"GROUP", group, consumer, b"STREAMS", *two, b">", b">"],
            [b"XREADGROUP", b"GROUP", group, consumer, b"BLOCK", b"1", b"STREAMS", key, b">"],
            [b"XREADGROUP", b"COUNT", b"1", b"NOACK", b"STREAMS", key, b">"],
            [b"XACK", key, group, *[_id(rng, top) for _ in range(rng.randint(1, 3))]],
            [b"XPENDING", key, group],
            [b"XPENDING", key, group, *rng.choice([[], [b"IDLE", rng.choice([b"0", b"x"])]]),
             _range_id(rng, top), _range_id(rng, top), rng.choice(_COUNTS),
             *rng.choice([[], [consumer]])],
            [b"XPENDING", key, group, b"-", b"+"],
            [b"XCLAIM", key, group, consumer, rng.choice([b"0", b"3600000000", b"x"]),
             *[_id(rng, top) for _ in range(rng.randint(1, 3))],
             *rng.choice([[], [b"JUSTID"], [b"FORCE"], [b"RETRYCOUNT", b"7"],
                          [b"IDLE", b"5000000"], [b"TIME", b"1"], [b"LASTID", _id(rng, top)],
                          [b"BOGUS"], [b"IDLE", b"x"], [b"FORCE", b"JUSTID"]])],
            [b"XAUTOCLAIM", key, group, consumer, rng.choice([b"0", b"3600000000", b"x"]),
             _range_id(rng, top),
             *rng.choice([[], [b"COUNT", rng.choice([b"1", b"2", b"0", b"x"])], [b"JUSTID"],
                          [b"BOGUS"]])],
            [b"XINFO", b"STREAM", key],
            [b"XINFO", b"STREAM", key, b"FULL", *rng.choice([[], [b"COUNT", b"2"]])],
            [b"XINFO", b"GROUPS", key],
            [b"XINFO", b"CONSUMERS", key, group],
            [b"XINFO", b"STREAM", key, b"bogus"],
            [b"TYPE", key],
            [b"OBJECT", b"ENCODING", key],
            [b"COPY", key, rng.choice([b"s3", b"nokey"]), b"REPLACE"],
        ]
        # The commands that build what the others read, more often.
        options += [options[0], options[1], options[0], options[21], options[21], options[27],
                    options[27], options[27], options[28], options[35], options[36]]
        out.append(rng.choice(options))
    return out


_DROPPED = {b"idle", b"inactive", b"seen-time", b"active-time", b"radix-tree-keys",
            b"radix-tree-nodes"}


def _as_map(value: object) -> object:
    """A RESP2 flat array of name, value, ... as the dict RESP3 gives."""
    if isinstance(value, list) and value and len(value) % 2 == 0 and all(
            isinstance(k, bytes) for k in value[0::2]):
        return dict(zip(value[0::2], value[1::2], strict=True))
    return value


def _info(value: object) -> object:
    value = _as_map(value)
    if not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if k not in _DROPPED}
    if b"groups" in out and isinstance(out[b"groups"], list):  # FULL
        groups = []
        for group in out[b"groups"]:
            group = _info(group)
            if isinstance(group, dict):
                group[b"pending"] = [p[:2] + p[3:] for p in group.get(b"pending") or []]
                group[b"consumers"] = [
                    {k: ([p[:1] + p[2:] for p in v] if k == b"pending" else v)
                     for k, v in _info(c).items()}  # type: ignore[union-attr]
                    for c in group.get(b"consumers") or []]
            groups.append(group)
        out[b"groups"] = groups
    return out


def normalised(argv: list[bytes], reply: object) -> object:
    name = argv[0].upper()
    if isinstance(reply, tuple):  # an error
        return reply
    if name == b"XPENDING" and len(argv) > 3 and isinstance(reply, list):
        return [[p[0], p[1], p[3]] if isinstance(p, list) else p for p in reply]
    if name == b"XINFO" and argv[1].upper() in (b"CONSUMERS", b"GROUPS") and isinstance(
            reply, list):
        return [_info(item) for item in reply]
    if name == b"XINFO":
        return _info(reply)
    return reply


def run_against_redis(redis: RawConnection, stream: list[list[bytes]], protocol: int
                      ) -> list[tuple]:
    state = KVState()
    mismatches = []
    last_ms = 0
    for step, argv in enumerate(stream):
        expected = normalised(argv, plain(redis.command(argv)))
        now_ms = max(last_ms, int(time.time() * 1000))
        last_ms = now_ms
        reply = state.apply_command(argv, now_ms, step)
        ours = normalised(argv, plain(parsed(encode_reply(reply, protocol))))
        if ours != expected:
            mismatches.append((step, argv, ours, expected))
    return mismatches


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_stream_commands_answer_as_redis_does(redis_port: int, protocol: int,  # noqa: F811
                                              seed: int) -> None:
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        mismatches = run_against_redis(redis, commands(seed, 700), protocol)
        assert not mismatches, [(step, argv[:8], *replies)
                                for step, argv, *replies in mismatches[:3]]
    finally:
        redis.close()


def test_the_differential_stream_covers_every_stream_command_and_reply_kind() -> None:
    """The comparison is only as good as its stream: every command, errors and WRONGTYPE."""
    names, errors, kinds = stream_coverage(commands(0, 700) + commands(1, 700))
    assert {b"XADD", b"XLEN", b"XRANGE", b"XREVRANGE", b"XDEL", b"XTRIM", b"XSETID", b"XREAD",
            b"XREADGROUP", b"XACK", b"XPENDING", b"XCLAIM", b"XAUTOCLAIM", b"XGROUP",
            b"XINFO"} <= names
    assert {"int", "bytes", "list", "NoneType", "_NullArray", "ErrorReply", "KeyedArrays",
            "dict", "Status"} <= kinds
    assert any(e.startswith("WRONGTYPE") for e in errors)
    assert any(e.startswith("NOGROUP") for e in errors)
    for text in ("ERR Invalid stream ID specified", "ERR The ID specified in XADD is",
                 "ERR The ID specified in XADD mu", "ERR syntax error",
                 "ERR The MAXLEN argument must b", "ERR syntax error, LIMIT cannot",
                 "ERR Unbalanced XREAD list of s", "ERR The > ID can be specified",
                 "ERR The $ ID is meaningless in", "ERR Missing GROUP option for X",
                 "ERR value is not an integer or", "ERR timeout is negative",
                 "ERR The XGROUP subcommand requ", "BUSYGROUP Consumer Group name",
                 "ERR Invalid min-idle-time argu", "ERR Unrecognized XCLAIM option",
                 "ERR COUNT must be > 0", "ERR no such key",
                 "ERR unknown subcommand or wron", "ERR The GROUP option is only su"):
        assert any(e.startswith(text[:25]) for e in errors), text
