"""Hash commands, differentially: the same seeded stream of commands goes to a real
redis-server and to a replikv state, and every reply must match, in RESP2 and RESP3, bytes parsed
the same way (hiredis). scripts/install.sh --test installs redis-server.

Where replikv differs from Redis on purpose (README, Commands) the replies are compared after
normalising: HGETALL, HKEYS and HVALS by their contents (a Redis listpack keeps the order of
the fields left after HDEL, a hashtable has an order of its own; replikv moves the last field
into a deleted one's place), HRANDFIELD by its shape (the picks come from replikv's seeded
generator), HSCAN by its contents with a COUNT that takes the whole hash (a Redis hashtable
pages where replikv's single bucket of up to 128 fields does not). Increments are exact in
binary, since HINCRBYFLOAT computes in decimal where Redis uses a long double. NOVALUES (Redis
7.4) is left out when the server is older, and so are the encodings of sets (listpack sets came
in Redis 7.2; replikv answers as 7.4 does).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hiredis
import pytest

from replikv.resp import encode_reply
from replikv.state import KVState

T0 = 1_000_000



@pytest.fixture(autouse=True)
def _redis_server_installed() -> None:
    # Not a skip: scripts/install.sh --test installs it (without starting its system service),
    # and CI runs these.
    assert shutil.which("redis-server"), "redis-server is missing: run scripts/install.sh --test"


class RawConnection:
    """One RESP connection to redis-server; replies parsed by hiredis (errors as values)."""

    def __init__(self, port: int, protocol: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = hiredis.Reader()
        if protocol == 3:
            self.command([b"HELLO", b"3"])

    def command(self, argv: list[bytes]) -> object:
        self.sock.sendall(b"*%d\r\n" % len(argv) + b"".join(
            b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in argv))
        while (reply := self.reader.gets()) is False:
            self.reader.feed(self.sock.recv(65536))
        return reply

    def close(self) -> None:
        self.sock.close()


def parsed(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    return reader.gets()


def plain(value: object) -> object:
    """hiredis's reply as comparable Python values (errors as their text)."""
    if isinstance(value, hiredis.ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}  # type: ignore[misc]
    return value


def running_redis_server(directory: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """A redis-server on a free loopback port, its data in `directory`, until the generator
    is closed; its port. `env`: its environment (default: ours)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                RawConnection(port, 2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"redis-server did not start on port {port} (exit status "
                                f"{process.poll()}): the comparison needs it")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from running_redis_server(tmp_path_factory.mktemp("redis"))


def compare_stream(redis: RawConnection, state: KVState, stream: list[list[bytes]],
                   protocol: int, normalise: Callable[[list[bytes], object], object],
                   check: Callable[[list[bytes], object], None] | None = None) -> list[tuple]:
    """Send each command of `stream` to redis-server and apply it to `state` (at T0 + its
    step, seeded with its step); the (step, argv, ours, Redis's) of every reply that differs
    once both are parsed and normalised. `check` sees each of replikv's replies as well."""
    mismatches = []
    for step, argv in enumerate(stream):
        expected = normalise(argv, plain(redis.command(argv)))
        reply = state.apply_command(argv, T0 + step, step)
        if check is not None:
            check(argv, reply)
        ours = normalise(argv, plain(parsed(encode_reply(reply, protocol))))
        if ours != expected:
            mismatches.append((step, argv, ours, expected))
    return mismatches


def stream_coverage(stream: list[list[bytes]]) -> tuple[set[bytes], set[str], set[str]]:
    """What a differential stream exercises, run on a fresh state: the command names it sends
    (upper case), the errors it meets (their first 30 characters) and its kinds of reply."""
    state = KVState()
    names: set[bytes] = set()
    errors: set[str] = set()
    kinds: set[str] = set()
    for step, argv in enumerate(stream):
        reply = state.apply_command(argv, T0 + step, step)
        names.add(argv[0].upper())
        kinds.add(type(reply).__name__)
        if hasattr(reply, "message"):
            errors.add(reply.message[:30])  # type: ignore[attr-defined]
    return names, errors, kinds


def server_version(port: int) -> tuple[int, ...]:
    connection = RawConnection(port, 2)
    try:
        info = connection.command([b"INFO", b"server"])
    finally:
        connection.close()
    assert isinstance(info, bytes)
    line = next(ln for ln in info.decode().splitlines() if ln.startswith("redis_version:"))
    return tuple(int(part) for part in line.split(":")[1].split("."))


_KEYS = [b"h1", b"h2", b"str", b"set"]
# b"n" alone may grow past what a long double holds exactly: HINCRBYFLOAT never touches it.
_FIELDS = [b"f%d" % i for i in range(12)] + [b"", b"x" * 65]
_BIG_FIELD = b"n"
_VALUES = [b"1", b"-3", b"abc", b"", b"2.5", b"v" * 70, b"007", b"1e3"]


def _fields(rng: random.Random, most: int) -> list[bytes]:
    return [rng.choice(_FIELDS) for _ in range(rng.randint(1, most))]


def _pairs(rng: random.Random, most: int) -> list[bytes]:
    return [x for f in _fields(rng, most) for x in (f, rng.choice(_VALUES))]


def commands(seed: int, count: int, novalues: bool) -> list[list[bytes]]:
    rng = random.Random(seed)
    out: list[list[bytes]] = [[b"SET", b"str", b"v"], [b"SADD", b"set", b"m"]]
    for _ in range(count):
        key, field = rng.choice(_KEYS), rng.choice(_FIELDS)
        options: list[list[bytes]] = [
            [b"HSET", key, *_pairs(rng, 5)],
            [b"HSET", key, *_pairs(rng, 40)],
            [b"HMSET", key, *_pairs(rng, 3)],
            [b"HSETNX", key, field, rng.choice(_VALUES)],
            [b"HGET", key, field],
            [b"HMGET", key, *_fields(rng, 4)],
            [b"HDEL", key, *_fields(rng, 6)],
            [b"HEXISTS", key, field],
            [b"HLEN", key],
            [b"HSTRLEN", key, field],
            [b"HKEYS", key],
            [b"HVALS", key],
            [b"HGETALL", key],
            [b"HINCRBY", key, field, rng.choice([b"1", b"-5", b"x"])],
            [b"HINCRBY", key, _BIG_FIELD, rng.choice([b"1", b"9223372036854775807"])],
            [b"HSET", key, _BIG_FIELD, b"-9223372036854775808"],
            [b"HINCRBYFLOAT", key, field, rng.choice([b"0.5", b"-2.25", b"x", b"inf", b"3"])],
            [b"HRANDFIELD", key, *rng.choice([[], [b"3"], [b"-4", b"WITHVALUES"], [b"0"],
                                               [b"x"], [b"2", b"bad"]])],
            [b"HSCAN", key, b"0", b"COUNT", b"1000"],
            [b"HSCAN", key, b"0", b"MATCH", b"f1*", b"COUNT", b"1000"],
            [b"HSCAN", key, b"0", b"COUNT", b"0"],
            [b"HSCAN", key, b"x"],
            [b"TYPE", key],
            [b"OBJECT", b"ENCODING", key],
            [b"EXISTS", key],
            [b"DEL", key],
            [b"RENAME", key, rng.choice(_KEYS)],
            [b"COPY", key, rng.choice(_KEYS), b"REPLACE"],
            [b"HSET", key],
            [b"HSET", key, field, b"v", b"odd"],
            [b"HGET", key],
        ]
        if novalues:
            options.append([b"HSCAN", key, b"0", b"NOVALUES"])
        out.append(rng.choice(options))
    return out


def normalised(argv: list[bytes], reply: object) -> object:
    name = argv[0].upper()
    if isinstance(reply, tuple):  # an error
        return reply
    if name in (b"HKEYS", b"HVALS") and isinstance(reply, list):
        return sorted(reply)
    if name == b"HGETALL" and isinstance(reply, list):  # RESP2: pairs in some order
        return sorted(zip(reply[0::2], reply[1::2], strict=True))
    if name == b"HGETALL" and isinstance(reply, dict):
        return sorted(reply.items())
    if name == b"HRANDFIELD":
        return ("picks", type(reply).__name__,
                len(reply) if isinstance(reply, list) else None,  # type: ignore[arg-type]
                [type(item).__name__ for item in reply][:1] if isinstance(reply, list) else None)
    if name == b"HSCAN" and isinstance(reply, list) and isinstance(reply[1], list):
        items = reply[1]
        if b"NOVALUES" in argv:
            return [reply[0], sorted(items)]
        return [reply[0], sorted(zip(items[0::2], items[1::2], strict=True))]
    return reply


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_hash_commands_answer_as_redis_does(redis_port: int, protocol: int, seed: int) -> None:
    version = server_version(redis_port)
    novalues = version >= (7, 4)
    redis = RawConnection(redis_port, protocol)
    try:
        redis.command([b"FLUSHALL"])
        state = KVState()
        mismatches = []
        for step, argv in enumerate(commands(seed, 400, novalues)):
            if (argv[0] == b"OBJECT" and version < (7, 2)
                    and state.type_name(argv[2], T0 + step) == b"set"):
                continue
            expected = plain(redis.command(argv))
            ours = plain(parsed(encode_reply(state.apply_command(argv, T0 + step, step),
                                             protocol)))
            if argv[0] == b"OBJECT" and (ours, expected) == (b"listpack", b"hashtable"):
                # Redis keeps a hash a hashtable once a long field or value was written, even
                # after it is gone; replikv judges the value as it is (README, OBJECT). Never
                # the other way round.
                continue
            if normalised(argv, ours) != normalised(argv, expected):
                mismatches.append((step, argv, ours, expected))
        assert not mismatches, mismatches[:3]
    finally:
        redis.close()


def test_the_differential_stream_covers_every_hash_command_and_reply_kind() -> None:
    """The comparison is only as good as its stream: every command, errors and WRONGTYPE."""
    state = KVState()
    names: set[bytes] = set()
    errors: set[str] = set()
    encodings: set[bytes] = set()
    for step, argv in enumerate(commands(0, 400, True) + commands(1, 400, True)):
        reply = state.apply_command(argv, T0 + step, step)
        names.add(argv[0])
        if hasattr(reply, "message"):
            errors.add(reply.message.split(" ")[0] + " " + reply.message[:30])  # type: ignore[attr-defined]
        if argv[0] == b"OBJECT" and isinstance(reply, bytes):
            encodings.add(reply)
    assert {b"HSET", b"HMSET", b"HSETNX", b"HGET", b"HMGET", b"HDEL", b"HEXISTS", b"HLEN",
            b"HSTRLEN", b"HKEYS", b"HVALS", b"HGETALL", b"HINCRBY", b"HINCRBYFLOAT",
            b"HRANDFIELD", b"HSCAN"} <= names
    assert any(e.startswith("WRONGTYPE") for e in errors)
    assert any("hash value is not" in e for e in errors)
    assert any("wrong number of arguments" in e for e in errors)
    assert {b"listpack", b"hashtable"} <= encodings

