"""Pub/sub on a subscriber's connection, byte for byte: the same commands go to a real
redis-server and to one replikv node running in this process (a one-member cluster), and every
reply and message frame must be the same bytes, in RESP2 and RESP3: the subscribe and
unsubscribe confirmations and their counts, `message`, `pmessage` and `smessage` frames (RESP3
pushes), UNSUBSCRIBE with nothing subscribed, the RESP2 subscribed context (its PING, its
refusal of other commands), RESET, and PUBSUB. scripts/install.sh --test installs
redis-server. Also: a subscriber that never reads is disconnected at the output limit, and the
node goes on serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from replikv.config import load_settings
from replikv.server.runtime import NodeServer

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    _redis_server_installed,
    redis_port,
)

IDLE_S = 0.05  # redis-server answers within this; its frames are the count to wait for
WAIT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeInThread:
    """One replikv node (its own cluster of one) serving on an event loop in a thread."""

    def __init__(self, tmp: Path, **limits: int) -> None:
        client, peer = free_port(), free_port()
        settings = load_settings(None, {"id": "n1", "data_dir": tmp / "n1",
                                        "listen": f"127.0.0.1:{client}",
                                        "peer_listen": f"127.0.0.1:{peer}",
                                        "peers": f"n1=127.0.0.1:{peer}"})
        if limits:
            settings = dataclasses.replace(
                settings, limits=dataclasses.replace(settings.limits, **limits))
        self.port = client
        self.server = NodeServer(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self.server.run(),), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = Raw(self.port)
                if conn.call(b"SET", b"ready", b"1") == b"+OK\r\n":
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                pytest.fail("the in-process replikv node did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.thread.join(timeout=20)


class Raw:
    """A RESP connection read as raw bytes, cut into whole frames with hiredis."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(WAIT_S)
        self.buffer = b""

    def send(self, *argv: bytes) -> None:
        self.sock.sendall(b"*%d\r\n" % len(argv) + b"".join(
            b"$%d\r\n%b\r\n" % (len(a), a) for a in argv))

    def frames(self, count: int | None) -> bytes:
        """The bytes of the next `count` frames (None: whatever arrives until IDLE_S of
        silence, which is how redis-server's are taken: it answers at once)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            cut = _frames_end(self.buffer, count)
            if cut is not None:
                data, self.buffer = self.buffer[:cut], self.buffer[cut:]
                return data
            self.sock.settimeout(IDLE_S if count is None else
                                 max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                chunk = None
            if count is None and chunk is None:
                data, self.buffer = self.buffer, b""
                return data
            if chunk == b"" or (chunk is None and time.monotonic() > deadline):
                data, self.buffer = self.buffer, b""
                return data  # fewer frames than expected: the comparison says so
            if chunk:
                self.buffer += chunk

    def call(self, *argv: bytes) -> bytes:
        self.send(*argv)
        return self.frames(1)

    def close(self) -> None:
        self.sock.close()


def _frames_end(data: bytes, count: int | None) -> int | None:
    """Where the first `count` whole frames of `data` end (None: not there yet)."""
    if count is None:
        return None
    pos = 0
    for _ in range(count):
        pos = _frame_end(data, pos)
        if pos < 0:
            return None
    return pos


def _frame_end(data: bytes, pos: int) -> int:
    """Where the RESP2/RESP3 frame at `pos` ends; -1 if it is not whole yet."""
    line_end = data.find(b"\r\n", pos)
    if line_end < 0:
        return -1
    kind, head = data[pos:pos + 1], data[pos + 1:line_end]
    after = line_end + 2
    if kind in (b"$", b"=", b"!"):
        length = int(head)
        if length < 0:
            return after
        return after + length + 2 if len(data) >= after + length + 2 else -1
    if kind in (b"*", b">", b"~", b"%", b"|"):
        items = int(head) * (2 if kind in (b"%", b"|") else 1)
        for _ in range(max(items, 0)):
            after = _frame_end(data, after)
            if after < 0:
                return -1
        return after
    return after  # + - : _ , # (


def count_frames(data: bytes) -> int:
    n, pos = 0, 0
    while pos < len(data):
        pos = _frame_end(data, pos)
        assert pos >= 0, f"a partial frame from redis-server: {data!r}"
        n += 1
    return n


# (connection, command): "sub" is the subscriber, "pub" another client, "read" takes what the
# subscriber was sent since.
SCRIPT: list[tuple[str, tuple[bytes, ...]]] = [
    ("sub", (b"UNSUBSCRIBE",)), ("sub", (b"PUNSUBSCRIBE",)), ("sub", (b"SUNSUBSCRIBE",)),
    ("sub", (b"SUBSCRIBE", b"a", b"b", b"a")), ("sub", (b"PSUBSCRIBE", b"a*", b"[xb]")),
    ("sub", (b"SSUBSCRIBE", b"s1")), ("sub", (b"PING",)), ("sub", (b"PING", b"x")),
    ("sub", (b"GET", b"k")), ("sub", (b"PUBSUB", b"NUMSUB", b"a")), ("sub", (b"SUBSCRIBE",)),
    ("sub", (b"PING", b"x", b"y")), ("sub", (b"GET",)), ("sub", (b"NOSUCHCOMMAND", b"x")),
    ("pub", (b"PUBLISH", b"a", b"hi")), ("pub", (b"PUBLISH", b"b", b"yo")),
    ("pub", (b"SPUBLISH", b"s1", b"m")), ("pub", (b"PUBLISH", b"zz", b"nobody")),
    ("pub", (b"PUBLISH", b"a", b"")), ("read", ()),
    ("pub", (b"PUBSUB", b"NUMSUB", b"a", b"b", b"zz")), ("pub", (b"PUBSUB", b"NUMSUB")),
    ("pub", (b"PUBSUB", b"NUMPAT")), ("pub", (b"PUBSUB", b"CHANNELS", b"a")),
    ("pub", (b"PUBSUB", b"SHARDCHANNELS")), ("pub", (b"PUBSUB", b"SHARDNUMSUB", b"s1", b"x")),
    ("pub", (b"PUBSUB", b"HELP")), ("pub", (b"PUBSUB", b"FOO")), ("pub", (b"PUBSUB",)),
    ("pub", (b"PUBSUB", b"NUMPAT", b"x")),
    ("sub", (b"UNSUBSCRIBE", b"a")), ("sub", (b"PUNSUBSCRIBE", b"zz")),
    ("sub", (b"SUNSUBSCRIBE",)), ("sub", (b"PUNSUBSCRIBE", b"a*")), ("sub", (b"PING",)),
    ("sub", (b"UNSUBSCRIBE",)), ("sub", (b"PUNSUBSCRIBE",)), ("sub", (b"PING",)),
    ("sub", (b"SUBSCRIBE", b"c")), ("pub", (b"PUBLISH", b"c", b"1")), ("read", ()),
    ("sub", (b"RESET",)), ("pub", (b"PUBLISH", b"c", b"2")), ("sub", (b"PING",)),
    ("sub", (b"SUBSCRIBE", b"d")), ("sub", (b"QUIT",)),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeInThread]:
    running = NodeInThread(tmp_path_factory.mktemp("pubsub-node"))
    try:
        yield running
    finally:
        running.stop()


def run_script(port: int, protocol: int, expected: list[bytes] | None) -> list[bytes]:
    """The bytes each step of SCRIPT got. With `expected` (redis-server's), each step waits
    for as many frames as Redis sent."""
    sub, pub = Raw(port), Raw(port)
    try:
        if protocol == 3:
            for conn in (sub, pub):
                conn.send(b"HELLO", b"3")
                conn.frames(1)
        out = []
        for step, (who, argv) in enumerate(SCRIPT):
            want = None if expected is None else count_frames(expected[step])
            if who == "read":
                out.append(sub.frames(want))
                continue
            conn = sub if who == "sub" else pub
            conn.send(*argv)
            out.append(conn.frames(want))
        return out
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_subscriber_frames_are_redis_bytes(redis_port: int, node: NodeInThread,  # noqa: F811
                                           protocol: int) -> None:
    theirs = run_script(redis_port, protocol, None)
    ours = run_script(node.port, protocol, theirs)
    diffs = [(step, SCRIPT[step], o, t) for step, (o, t) in enumerate(zip(ours, theirs,
                                                                            strict=True))
             if o != t]
    assert not diffs, "\n".join(f"step {s} {w} {a}: replikv {o!r}, Redis {t!r}"
                                for s, (w, a), o, t in diffs[:8])


def test_known_frames_byte_for_byte(node: NodeInThread) -> None:
    """The frames themselves (so that this says what they are without a redis-server)."""
    sub, pub = Raw(node.port), Raw(node.port)
    try:
        assert sub.call(b"UNSUBSCRIBE") == b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        assert sub.call(b"SUBSCRIBE", b"ch") == b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
        assert sub.call(b"PING") == b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        assert sub.call(b"GET", b"k") == (
            b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT "
            b"/ RESET are allowed in this context\r\n")
        assert pub.call(b"PUBLISH", b"ch", b"hi") == b":1\r\n"
        assert sub.frames(1) == b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        assert sub.call(b"HELLO", b"3").startswith(b"-ERR Can't execute 'hello'")
        sub.call(b"RESET")
        sub.call(b"HELLO", b"3")
        assert sub.call(b"PSUBSCRIBE", b"c*") == b">3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:1\r\n"
        assert sub.call(b"GET", b"k") == b"_\r\n"  # RESP3: any command
        assert pub.call(b"PUBLISH", b"ch", b"hi") == b":1\r\n"
        assert sub.frames(1) == b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        # Inside MULTI: refused when queued (the transaction then aborts).
        assert sub.call(b"MULTI") == b"+OK\r\n"
        assert sub.call(b"SUBSCRIBE", b"x").startswith(b"-ERR SUBSCRIBE inside MULTI")
        assert sub.call(b"EXEC").startswith(b"-EXECABORT")
    finally:
        sub.close()
        pub.close()


def test_a_subscriber_that_never_reads_is_disconnected_at_the_limit(tmp_path: Path) -> None:
    limit = 256 * 1024
    running = NodeInThread(tmp_path, pubsub_output_hard_limit_bytes=limit,
                           pubsub_output_soft_limit_bytes=limit)
    slow = Raw(running.port, rcvbuf=4096)
    reader, pub = Raw(running.port), Raw(running.port)
    try:
        assert slow.call(b"SUBSCRIBE", b"flood").endswith(b":1\r\n")
        assert reader.call(b"SUBSCRIBE", b"flood").endswith(b":1\r\n")
        message = b"x" * 65536
        sent = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sent < 400:  # at most 26 MB
            for _ in range(10):
                pub.send(b"PUBLISH", b"flood", message)
            replies = pub.frames(10)
            sent += 10
            reader.frames(10)  # the one that reads gets every message
            if b":1\r\n" in replies:  # the slow one is gone: one receiver left
                break
        info = pub.call(b"INFO", b"stats").decode()
        assert "pubsub_output_limit_disconnections:1" in info, info
        with pytest.raises(OSError):  # its connection was closed by the node
            slow.sock.settimeout(5)
            while slow.sock.recv(1 << 20):
                pass
            raise ConnectionResetError("closed")
        assert pub.call(b"PUBSUB", b"NUMSUB", b"flood") == b"*2\r\n$5\r\nflood\r\n:1\r\n"
        assert pub.call(b"PUBLISH", b"flood", b"after") == b":1\r\n"
        assert reader.frames(1).endswith(b"$5\r\nafter\r\n")
    finally:
        for conn in (slow, reader, pub):
            conn.close()
        running.stop()
