"""Malformed client bytes against a live node (DESIGN.md: malformed bytes produce an error
reply or a closed connection, never a crash or a changed state).

Raw sockets, so the bytes are exactly what we say. A protocol error is answered with Redis's
error text and the connection is closed (a byte stream that failed to parse cannot be
resynchronized); a command error (unknown command, wrong arity) is answered and the connection
stays usable. Meanwhile a well-behaved redis-py client on the same node keeps working, and at
the end the keyspace holds exactly what the good commands wrote.

One node with --max-bulk-bytes 1024, so the bulk limit is cheap to reach.
"""

from __future__ import annotations

import socket
import threading
import time

import hiredis
import pytest

from .cluster import HOST, Cluster, encode_command, running

MAX_BULK = 1024
pytestmark = pytest.mark.timeout(60)


class RawClient:
    """A client socket that sends exact bytes and reads RESP replies or the close."""

    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout_s)
        self.reader = hiredis.Reader()
        self.timeout_s = timeout_s

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, count: int) -> list:
        out = []
        deadline = time.monotonic() + self.timeout_s
        for _ in range(100_000):
            while len(out) < count and (reply := self.reader.gets()) is not False:
                out.append(reply)
            if len(out) == count:
                return out
            if time.monotonic() > deadline:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {out!r}, wanted {count} replies")
            self.reader.feed(chunk)
        raise AssertionError(f"only {out!r} within {self.timeout_s}s, wanted {count} replies")

    def rest_until_closed(self) -> bytes:
        """Everything the server still sends, which must end with it closing the connection."""
        data = b""
        deadline = time.monotonic() + self.timeout_s
        for _ in range(10_000):
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data  # closed with unread input still queued: a reset, equally closed
            if not chunk:
                return data
            data += chunk
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"server did not close the connection; got {data[:200]!r}")

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


PROTOCOL_ERRORS = [
    # (name, bytes, the error reply's text)
    ("binary garbage longer than an inline line", b"\x00\x01\xfe\xff garbage " * 6000,
     b"-ERR Protocol error: too big inline request\r\n"),
    ("not a bulk string inside a multibulk", b"*1\r\nxyz\r\n",
     b"-ERR Protocol error: expected '$', got 'x'\r\n"),
    ("multibulk count that is not a number", b"*abc\r\n",
     b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("huge multibulk count", b"*99999999999\r\n",
     b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("multibulk count past the int64 range", b"*99999999999999999999999\r\n",
     b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("multibulk count just over max_command_args", b"*1048577\r\n",
     b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("bulk length over --max-bulk-bytes", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n",
     b"-ERR Protocol error: invalid bulk length\r\n"),
    ("negative bulk length", b"*2\r\n$3\r\nGET\r\n$-5\r\n",
     b"-ERR Protocol error: invalid bulk length\r\n"),
    ("bulk payload followed by garbage instead of CRLF", b"*1\r\n$3\r\nfooGARBAGE\r\n",
     b"-ERR Protocol error: expected CRLF after bulk data\r\n"),
    ("inline command with unbalanced quotes", b'SET x "a b\r\n',
     b"-ERR Protocol error: unbalanced quotes in request\r\n"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("client-input"), 1,
                      extra_args=["--max-bulk-bytes", str(MAX_BULK)])
    with running(cluster):
        yield cluster


@pytest.fixture
def bystander(node: Cluster):
    """A well-behaved client hammering the node for the whole test; must never see an error."""
    stop = threading.Event()
    stats = {"ok": 0, "errors": []}
    written: dict[str, str] = {}
    r = node.client("n1", socket_timeout=5.0, decode_responses=True)

    def run() -> None:
        for i in range(1_000_000):
            if stop.is_set():
                return
            key, value = f"bg:{i % 50}", f"{i}"
            try:
                assert r.set(key, value) is True
                written[key] = value
                assert r.get(key) == value
                stats["ok"] += 1
            except Exception as e:  # noqa: BLE001 - recorded and asserted on
                stats["errors"].append(repr(e))
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield stats, written
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize("name, data, error", PROTOCOL_ERRORS,
                         ids=[p[0].replace(" ", "-") for p in PROTOCOL_ERRORS])
def test_protocol_error_gets_an_error_reply_then_a_close(node, name, data, error):
    keys_before = set(node.client("n1").keys("*"))
    c = RawClient(node.port("n1"))
    try:
        c.send(data)
        assert c.rest_until_closed() == error
    finally:
        c.close()
    r = node.client("n1")
    assert r.ping() is True
    assert set(r.keys("*")) == keys_before
    assert node.nodes["n1"].alive


def test_good_commands_before_a_protocol_error_run_and_are_answered_first(node):
    """As in Redis (and as replikv.resp promises): the complete commands before the bad bytes
    run, and their replies are sent, in order, before the error and the close. The write goes
    through the log, so its reply is still pending when the bad bytes are parsed."""
    c = RawClient(node.port("n1"))
    try:
        c.send(encode_command("SET", "pre", "1") + encode_command("PING") + b"*x\r\n"
               + encode_command("SET", "post", "1"))
        received = c.rest_until_closed()
    finally:
        c.close()
    r = node.client("n1", decode_responses=True)
    applied = r.get("pre")
    assert r.exists("post") == 0
    assert received == b"+OK\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n", (
        f"SET pre 1 was applied (GET pre -> {applied!r}) but the client received {received!r}: "
        "the replies of commands still in flight were dropped and the protocol error took "
        "their place, so a pipelining client would report the applied SET as failed")


def test_bulk_at_the_limit_is_accepted(node):
    c = RawClient(node.port("n1"))
    try:
        c.send(encode_command("SET", "big", b"x" * MAX_BULK))
        assert c.replies(1) == [b"OK"]
    finally:
        c.close()
    assert node.client("n1").strlen("big") == MAX_BULK


def test_command_errors_and_inline_commands_keep_the_connection(node):
    c = RawClient(node.port("n1"))
    try:
        c.send(b"PING\r\n")
        assert c.replies(1) == [b"PONG"]
        c.send(b'SET x "a b"\r\n')
        assert c.replies(1) == [b"OK"]
        c.send(b"GET x\n")  # a bare LF ends an inline command too
        assert c.replies(1) == [b"a b"]
        c.send(encode_command("FOOBARX", "arg"))
        [err] = c.replies(1)
        assert isinstance(err, hiredis.ReplyError)
        assert str(err).startswith("ERR unknown command 'FOOBARX', with args beginning with:")
        c.send(encode_command("GET"))
        [err] = c.replies(1)
        assert str(err) == "ERR wrong number of arguments for 'get' command"
        c.send(encode_command("SET", "only-key"))
        [err] = c.replies(1)
        assert str(err) == "ERR wrong number of arguments for 'set' command"
        c.send(b"*0\r\n\r\n" + encode_command("ECHO", "still here"))  # empty requests: ignored
        assert c.replies(1) == [b"still here"]
    finally:
        c.close()
    r = node.client("n1", decode_responses=True)
    assert r.get("x") == "a b"
    assert r.exists("only-key") == 0


def test_abuse_does_not_disturb_another_client_or_the_data(node, bystander):
    stats, written = bystander
    r = node.client("n1", decode_responses=True)
    keep = {f"keep:{i}": f"value-{i}" for i in range(200)}
    assert r.mset(keep) is True
    pid = node.nodes["n1"].pid
    rss_before = rss_kib(pid)

    # Connections left hanging mid-command must not hold up anyone else.
    hanging = [RawClient(node.port("n1")) for _ in range(3)]
    hanging[0].send(b"*3\r\n$3\r\nSET\r\n$4\r\nhang\r\n$1000\r\nabc")  # payload never completes
    hanging[1].send(b"*1000000\r\n$1\r\na\r\n")  # 999,999 arguments never come
    hanging[2].send(b"SET hang partial-inline-line-without-end")
    for _round in range(3):
        for _name, data, error in PROTOCOL_ERRORS:
            c = RawClient(node.port("n1"))
            try:
                c.send(data)
                assert c.rest_until_closed() == error
            finally:
                c.close()
    time.sleep(0.3)
    for h in hanging:
        h.close()
    time.sleep(0.2)

    assert not stats["errors"], stats["errors"][:3]
    assert stats["ok"] > 10, f"the other client made little progress: {stats}"
    assert node.nodes["n1"].alive
    # No allocation from declared counts or lengths (a *1000000 header must not cost 8+ MB
    # per connection up front); allow generous slack for normal growth.
    assert rss_kib(pid) - rss_before < 64 * 1024, (rss_before, rss_kib(pid))
    assert r.mget(list(keep)) == list(keep.values())
    expected_keys = set(keep) | set(written)
    stray = {k for k in r.keys("*") if not k.startswith(("pre", "big", "x"))} - expected_keys
    assert not stray, f"keys nobody wrote successfully: {sorted(stray)[:10]}"
    assert r.exists("hang") == 0
    assert r.ping() is True
