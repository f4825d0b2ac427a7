"""List commands, differentially: the same seeded stream of commands goes to a real redis-server
and to a replikv state, and every reply must match exactly, in RESP2 and RESP3, bytes parsed the
same way (hiredis). scripts/install.sh --test installs redis-server.

A list's order is its own, so nothing is normalised: the replies, errors and their order of
checks must be Redis's. Left out: OBJECT ENCODING of a list before Redis 7.2 (listpack lists
came then; replikv answers as 7.4 does), and LPOS RANK -9223372036854775808 (refused from Redis
7.2 on, and not generated here). The connection and server helpers are the hash test's.
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

T0 = 1_000_000

_KEYS = [b"l1", b"l2", b"str", b"set"]
_ELEMENTS = [b"a", b"b", b"c", b"", b"1", b"-7", b"x" * 70]
_ENDS = [b"LEFT", b"RIGHT", b"left", b"middle"]


def _elements(rng: random.Random, most: int) -> list[bytes]:
    return [rng.choice(_ELEMENTS) for _ in range(rng.randint(1, most))]


def _index(rng: random.Random) -> bytes:
    return rng.choice([b"%d" % rng.randint(-8, 8), b"x", b"99999999999999999999", b"1.5"])


def commands(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"v"], [b"SADD", b"set", b"m"]]
    for _ in range(count):
        key, other = rng.choice(_KEYS), rng.choice(_KEYS)
        element = rng.choice(_ELEMENTS)
        roll = rng.randrange(22)
        argv: list[bytes] = [
            [b"LPUSH", key, *_elements(rng, 6)],
            [b"RPUSH", key, *_elements(rng, 6)],
            [rng.choice([b"LPUSHX", b"RPUSHX"]), key, *_elements(rng, 3)],
            [rng.choice([b"LPOP", b"RPOP"]), key],
            [rng.choice([b"LPOP", b"RPOP"]), key, rng.choice([b"0", b"1", b"3", b"-1", b"x"])],
            [b"LLEN", key],
            [b"LINDEX", key, _index(rng)],
            [b"LRANGE", key, _index(rng), _index(rng)],
            [b"LSET", key, _index(rng), element],
            [b"LREM", key, rng.choice([b"0", b"1", b"-1", b"2", b"x"]), element],
            [b"LTRIM", key, _index(rng), _index(rng)],
            [b"LINSERT", key, rng.choice([b"BEFORE", b"after", b"x"]), element, b"ins"],
            [b"LPOS", key, element],
            [b"LPOS", key, element, *rng.choice([
                [b"RANK", b"-1"], [b"RANK", b"2"], [b"RANK", b"0"], [b"COUNT", b"0"],
                [b"COUNT", b"2", b"RANK", b"-2"], [b"MAXLEN", b"3", b"COUNT", b"0"],
                [b"COUNT", b"-1"], [b"MAXLEN", b"x"], [b"RANK"], [b"FOO", b"1"]])],
            [b"LMOVE", key, other, rng.choice(_ENDS), rng.choice(_ENDS)],
            [b"RPOPLPUSH", key, other],
            [b"LMPOP", b"2", key, other, rng.choice(_ENDS)],
            [b"LMPOP", rng.choice([b"1", b"0", b"3", b"x"]), key, rng.choice(_ENDS), b"COUNT",
             rng.choice([b"1", b"4", b"0"])],
            [b"LPOP", key, b"1", b"2"],  # arity
            [b"TYPE", key],
            [b"DEL", key],
            [b"RPUSH", key],  # arity
        ][roll]
        out.append(argv)
    return out


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_list_commands_answer_as_redis_does(redis_port: int, protocol: int,  # noqa: F811
                                            seed: int) -> None:
    version = server_version(redis_port)
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        mismatches = compare_stream(redis, state, commands(seed, 500), protocol,
                                    lambda argv, reply: reply)
        for key in _KEYS:  # the states agree too
            argv = [b"LRANGE", key, b"0", b"-1"]
            ours = plain(parsed(encode_reply(state.apply_command(argv, T0), protocol)))
            assert ours == plain(redis.command(argv)), key
            if version >= (7, 2) and state.type_name(key, T0) == b"list":
                argv = [b"OBJECT", b"ENCODING", key]
                assert state.apply_command(argv, T0) == redis.command(argv)
        assert not mismatches, mismatches[:3]
    finally:
        redis.close()


def test_the_differential_stream_covers_every_list_command_and_reply_kind() -> None:
    """The comparison is only as good as its stream: every command, errors and WRONGTYPE."""
    names, errors, kinds = stream_coverage(commands(0, 500) + commands(1, 500))
    assert {b"LPUSH", b"RPUSH", b"LPUSHX", b"RPUSHX", b"LPOP", b"RPOP", b"LLEN", b"LINDEX",
            b"LRANGE", b"LSET", b"LREM", b"LTRIM", b"LINSERT", b"LPOS", b"LMOVE", b"RPOPLPUSH",
            b"LMPOP"} <= names
    assert {"int", "bytes", "list", "NoneType", "_NullArray", "ErrorReply"} <= kinds
    assert any(e.startswith("WRONGTYPE") for e in errors)
    for text in ("ERR no such key", "ERR index out of range", "ERR syntax error",
                 "ERR value is not an integer", "ERR value is out of range, m",
                 "ERR RANK can't be zero", "ERR numkeys should be great",
                 "ERR count should be greater", "ERR wrong number of argumen"):
        assert any(e.startswith(text[:25]) for e in errors), text
