"""HyperLogLog commands, differentially: the same seeded stream of commands goes to a real
redis-server and to a replikv state; every reply must match (RESP2 and RESP3, parsed by
hiredis), and so must the bytes GET returns for every key after every command: the sparse
code, its promotion to dense and the dense registers are Redis's byte for byte.

The one difference allowed is the documented one (README, Commands): Redis's PFCOUNT of one
key writes the cardinality it computed into the header (bytes 8 to 15) and later writes only
set its stale bit, where replikv's PFCOUNT is a read and never writes there. So for a key a
single-key PFCOUNT has counted, the header's cache bytes may differ, with replikv's marked
stale; every other byte, and every reply, must be the same.
"""

from __future__ import annotations

import random

import pytest

from replikv.commands import hyperloglog as hll
from replikv.resp import encode_reply
from replikv.state import KVState

from .test_hashes_against_redis import (  # noqa: F401 (fixtures)
    T0,
    RawConnection,
    _redis_server_installed,
    parsed,
    plain,
    redis_port,
)

_KEYS = [b"h1", b"h2", b"h3", b"str", b"set", b"bad"]
_SHORT_SPARSE = b"HYLL\x01" + bytes(10) + b"\x80" + b"\x7f\xfe"  # 16383 registers


def _elements(rng: random.Random, most: int) -> list[bytes]:
    return [b"el:%d" % rng.randrange(20_000) for _ in range(rng.randint(0, most))]


def commands(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"not an hll at all"], [b"SADD", b"set", b"m"],
                              [b"SET", b"bad", _SHORT_SPARSE]]
    for _ in range(count):
        key = rng.choice(_KEYS[:3])
        keys = rng.sample(_KEYS, rng.randint(1, 3))
        out.append(rng.choice([
            [b"PFADD", key, *_elements(rng, 3)],
            [b"PFADD", key, *_elements(rng, 3)],
            [b"PFADD", key, *_elements(rng, 300)],
            [b"PFADD", key, *_elements(rng, 300)],
            [b"PFADD", key, *_elements(rng, 3000)],  # often past the sparse limit
            [b"PFADD", rng.choice(_KEYS), b"x"],
            [b"PFCOUNT", key],
            [b"PFCOUNT", *keys],
            [b"PFMERGE", key, *rng.sample(_KEYS[:3] + [b"none"], rng.randint(0, 2))],
            [b"PFMERGE", key, *keys],
            [b"DEL", key],
            [b"COPY", key, rng.choice(_KEYS[:3]), b"REPLACE"],
            [b"RENAME", key, rng.choice(_KEYS[:3])],
            [b"TYPE", key],
            [b"OBJECT", b"ENCODING", key],
            [b"STRLEN", key],
        ]))
    return out


def _counted(argv: list[bytes], counted: set[bytes]) -> None:
    """Track the keys whose header Redis may have written a count into."""
    name = argv[0].upper()
    if name == b"PFCOUNT" and len(argv) == 2:
        counted.add(argv[1])
    elif name in (b"COPY", b"RENAME") and argv[1] in counted:
        counted.add(argv[2])


@pytest.mark.parametrize("protocol", [2, 3])
def test_replies_and_bytes_match_redis(redis_port: int, protocol: int) -> None:  # noqa: F811
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        counted: set[bytes] = set()
        stream = commands(11 + protocol, 150)
        seen_dense = seen_sparse = False
        for step, argv in enumerate(stream):
            expected = plain(redis.command(argv))
            reply = state.apply_command(argv, T0 + step, step)
            assert plain(parsed(encode_reply(reply, protocol))) == expected, (step, argv)
            _counted(argv, counted)
            for key in _KEYS[:3]:
                theirs = redis.command([b"GET", key])
                ours = state.execute_read([b"GET", key], T0 + step)
                if isinstance(ours, bytes) and ours[:4] == b"HYLL":
                    seen_dense |= ours[4] == hll.ENCODING_DENSE
                    seen_sparse |= ours[4] == hll.ENCODING_SPARSE
                if ours == theirs:
                    continue
                assert isinstance(ours, bytes) and isinstance(theirs, bytes), (step, argv, key)
                assert key in counted, (step, argv, key)
                assert ours[:8] + ours[16:] == theirs[:8] + theirs[16:], (step, argv, key)
                assert ours[15] & 0x80, (step, argv, key)  # replikv's cache stays stale
        assert seen_dense and seen_sparse
        names = {argv[0] for argv in stream}
        assert {b"PFADD", b"PFCOUNT", b"PFMERGE", b"COPY", b"RENAME"} <= names
    finally:
        redis.close()


def test_errors_and_corrupted_values_match_redis(redis_port: int) -> None:  # noqa: F811
    redis = RawConnection(redis_port, 2)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        dense = b"HYLL\x00" + bytes(11) + bytes(12288)
        script = [
            [b"SET", b"str", b"hello"], [b"SADD", b"set", b"m"],
            [b"SET", b"short", _SHORT_SPARSE], [b"SET", b"dense", dense],
            [b"SET", b"wrong-length", dense[:-1]], [b"SET", b"enc2", b"HYLL\x02" + bytes(20)],
            [b"PFADD", b"ok", b"a", b"b"],
            [b"PFADD", b"str", b"a"], [b"PFADD", b"set", b"a"], [b"PFADD", b"wrong-length"],
            [b"PFADD", b"enc2", b"a"], [b"PFCOUNT", b"short"], [b"PFCOUNT", b"ok", b"short"],
            [b"PFCOUNT", b"ok", b"str", b"short"], [b"PFCOUNT", b"dense"],
            [b"PFMERGE", b"dest", b"ok", b"short"], [b"EXISTS", b"dest"],
            [b"PFMERGE", b"dest", b"ok", b"dense"], [b"PFCOUNT", b"dest"],
            [b"PFADD", b"dense", b"a", b"b", b"c"], [b"PFCOUNT", b"dense"],
            [b"PFMERGE", b"set", b"ok"], [b"PFCOUNT"], [b"PFMERGE"],
        ]
        for step, argv in enumerate(script):
            expected = plain(redis.command(argv))
            reply = state.apply_command(argv, T0 + step, step)
            assert plain(parsed(encode_reply(reply, 2))) == expected, (step, argv)
        for key in (b"dense", b"dest", b"ok"):  # (the first two counted: cache bytes aside)
            ours, theirs = state.execute_read([b"GET", key], T0), redis.command([b"GET", key])
            assert isinstance(ours, bytes) and isinstance(theirs, bytes)
            assert ours[:8] + ours[16:] == theirs[:8] + theirs[16:], key
    finally:
        redis.close()
