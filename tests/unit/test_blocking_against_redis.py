"""The blocking list and sorted set commands, byte for byte: the same script goes to a real
redis-server and to one replikv node running in this process (a one-member cluster), in RESP2
and RESP3, and every reply must be the same bytes. A client blocks (its command is sent and
not answered), another pushes, and the first one's reply is read: BLPOP, BRPOP, BLMOVE,
BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX and BZMPOP served by a later push, their timeouts, their
errors, a blocked client that waits on while its key holds a string, BLMOVE served into a
destination of the wrong type, CLIENT UNBLOCK with TIMEOUT and ERROR, XREAD and XREADGROUP
with BLOCK (served by a later XADD, `$`, `>`, a consumer's history), and each command inside
MULTI (where it never blocks). scripts/install.sh --test installs redis-server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    _redis_server_installed,
    redis_port,
)
from .test_pubsub_against_redis import NodeInThread, Raw

SILENCE_S = 0.1  # a blocked client says nothing for this long

# (connection, operation, command): "call" sends and reads one reply, "send" only sends (the
# connection blocks), "read" reads the reply a blocked connection got, "silent" checks that a
# blocked connection got nothing yet. b"$A" in a command is connection a's client id.
Step = tuple[str, str, tuple[bytes, ...]]
SCRIPT: list[Step] = [
    ("b", "call", (b"DEL", b"q", b"q2", b"d", b"z", b"w", b"src", b"dst", b"later", b"none", b"d2",
                      b"s")),
    # Nothing to pop: the timeout passes.
    ("a", "call", (b"BLPOP", b"q", b"0.02")), ("a", "call", (b"BRPOP", b"q", b"q2", b"0.02")),
    ("a", "call", (b"BLMOVE", b"q", b"d", b"LEFT", b"LEFT", b"0.02")),
    ("a", "call", (b"BRPOPLPUSH", b"q", b"d", b"0.02")),
    ("a", "call", (b"BLMPOP", b"0.02", b"2", b"q", b"q2", b"LEFT")),
    ("a", "call", (b"BZPOPMIN", b"z", b"0.02")), ("a", "call", (b"BZPOPMAX", b"z", b"0.02")),
    ("a", "call", (b"BZMPOP", b"0.02", b"1", b"z", b"MIN", b"COUNT", b"2")),
    # Errors: the timeout first, then the options, then the keys.
    ("a", "call", (b"BLPOP", b"q", b"x")), ("a", "call", (b"BLPOP", b"q", b"-1")),
    ("a", "call", (b"BLPOP", b"q", b"inf")), ("a", "call", (b"BLPOP", b"q")),
    ("a", "call", (b"BLMOVE", b"q", b"d", b"UP", b"LEFT", b"x")),
    ("a", "call", (b"BLMPOP", b"0", b"0", b"q", b"LEFT")),
    ("a", "call", (b"BLMPOP", b"x", b"1", b"q", b"LEFT")),
    ("a", "call", (b"BLMPOP", b"0", b"1", b"q", b"LEFT", b"COUNT", b"0")),
    ("a", "call", (b"BZMPOP", b"0", b"1", b"z", b"UP")),
    ("b", "call", (b"SET", b"w", b"str")), ("a", "call", (b"BLPOP", b"w", b"q", b"0")),
    ("a", "call", (b"BZPOPMIN", b"w", b"0")),
    # Served at once.
    ("b", "call", (b"RPUSH", b"q", b"1", b"2", b"3")),
    ("a", "call", (b"BLPOP", b"q2", b"q", b"0")), ("a", "call", (b"BRPOP", b"q", b"0")),
    # Served by a later push.
    ("a", "send", (b"BLPOP", b"q2", b"0")), ("a", "silent", ()),  # blocked before the push
    ("b", "call", (b"RPUSH", b"q2", b"x", b"y")), ("a", "read", ()),
    ("b", "call", (b"LRANGE", b"q2", b"0", b"-1")),
    ("a", "send", (b"BLMOVE", b"src", b"d", b"RIGHT", b"LEFT", b"0")),
    ("b", "call", (b"LPUSH", b"src", b"m")), ("a", "read", ()),
    ("a", "send", (b"BRPOPLPUSH", b"src", b"d", b"0")),
    ("b", "call", (b"RPUSH", b"src", b"n")), ("a", "read", ()),
    ("b", "call", (b"LRANGE", b"d", b"0", b"-1")),
    ("a", "send", (b"BLMPOP", b"0", b"2", b"q9", b"src", b"RIGHT", b"COUNT", b"2")),
    ("b", "call", (b"RPUSH", b"src", b"1", b"2", b"3")), ("a", "read", ()),
    ("a", "send", (b"BZPOPMAX", b"z", b"0")),
    ("b", "call", (b"ZADD", b"z", b"1", b"a", b"2.5", b"b")), ("a", "read", ()),
    ("a", "call", (b"BZMPOP", b"0", b"1", b"z", b"MIN")),
    ("a", "send", (b"BZMPOP", b"0", b"1", b"z", b"MIN", b"COUNT", b"3")),
    ("b", "call", (b"ZADD", b"z", b"3", b"c", b"-4", b"d")), ("a", "read", ()),
    ("a", "send", (b"BZPOPMIN", b"z", b"0")),
    ("b", "call", (b"ZADD", b"z", b"inf", b"e")), ("a", "read", ()),
    # A key that holds a string while a client waits on it: the client waits on.
    ("b", "call", (b"DEL", b"w")), ("a", "send", (b"BLPOP", b"w", b"0")), ("a", "silent", ()),
    ("b", "call", (b"SET", b"w", b"str")), ("a", "silent", ()),
    ("b", "call", (b"DEL", b"w")), ("b", "call", (b"RPUSH", b"w", b"v")), ("a", "read", ()),
    # BLMOVE served into a destination of the wrong type: WRONGTYPE, the element stays.
    ("b", "call", (b"SET", b"dst", b"str")),
    ("a", "send", (b"BLMOVE", b"src", b"dst", b"LEFT", b"LEFT", b"0")),
    ("b", "call", (b"RPUSH", b"src", b"v")), ("a", "read", ()),
    ("b", "call", (b"LRANGE", b"src", b"0", b"-1")),
    # CLIENT UNBLOCK: as a timeout, or with an error; 0 when the client is not blocked.
    ("a", "send", (b"BLPOP", b"none", b"0")), ("a", "silent", ()),
    ("b", "call", (b"CLIENT", b"UNBLOCK", b"$A")), ("a", "read", ()),
    ("b", "call", (b"CLIENT", b"UNBLOCK", b"$A")),
    ("a", "send", (b"BZPOPMIN", b"none", b"0")), ("a", "silent", ()),
    ("b", "call", (b"CLIENT", b"UNBLOCK", b"$A", b"ERROR")), ("a", "read", ()),
    ("b", "call", (b"CLIENT", b"UNBLOCK", b"$A", b"NOPE")),
    ("b", "call", (b"CLIENT", b"UNBLOCK", b"x")),
    # A command after a blocked one waits for it.
    ("a", "send", (b"BLPOP", b"later", b"0")), ("a", "send", (b"PING",)),
    ("a", "silent", ()), ("b", "call", (b"RPUSH", b"later", b"1")), ("a", "read", ()),
    ("a", "read", ()),
    # XREAD and XREADGROUP with BLOCK: `$` is the last id when the command came.
    ("b", "call", (b"XADD", b"s", b"1-0", b"a", b"1")),
    ("a", "call", (b"XREAD", b"BLOCK", b"20", b"STREAMS", b"s", b"$")),
    ("a", "call", (b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"0")),
    ("a", "send", (b"XREAD", b"COUNT", b"5", b"BLOCK", b"0", b"STREAMS", b"s", b"nope", b"$",
                   b"$")), ("a", "silent", ()),
    ("b", "call", (b"XADD", b"s", b"2-0", b"b", b"2")), ("a", "read", ()),
    ("b", "call", (b"XGROUP", b"CREATE", b"s", b"g", b"$")),
    ("a", "send", (b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"0", b"STREAMS", b"s",
                   b">")), ("a", "silent", ()),
    ("b", "call", (b"XADD", b"s", b"3-0", b"c", b"3")), ("a", "read", ()),
    ("a", "call", (b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"0", b"STREAMS", b"s",
                   b"0")),
    ("a", "call", (b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"20", b"STREAMS", b"s",
                   b">")),
    ("a", "call", (b"XREAD", b"BLOCK", b"x", b"STREAMS", b"s", b"$")),
    ("a", "call", (b"XREAD", b"BLOCK", b"-1", b"STREAMS", b"s", b"$")),
    ("a", "call", (b"XREAD", b"BLOCK", b"0", b"STREAMS", b"dst", b"$")),  # a string
    # Inside MULTI nothing blocks: what there is, or nil.
    ("a", "call", (b"MULTI",)), ("a", "call", (b"BLPOP", b"none", b"0")),
    ("a", "call", (b"BLMOVE", b"none", b"d", b"LEFT", b"LEFT", b"0")),
    ("a", "call", (b"BZPOPMIN", b"none", b"0")),
    ("a", "call", (b"BLMPOP", b"0", b"1", b"none", b"LEFT")),
    ("a", "call", (b"BRPOPLPUSH", b"d", b"d2", b"0")),
    ("a", "call", (b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$")),
    ("a", "call", (b"EXEC",)),
]


def run_script(port: int, protocol: int) -> list[bytes]:
    conns = {"a": Raw(port), "b": Raw(port)}
    try:
        for conn in conns.values():
            if protocol == 3:
                conn.call(b"HELLO", b"3")
        a_id = conns["a"].call(b"CLIENT", b"ID")[1:-2]
        out = []
        for who, op, argv in SCRIPT:
            conn = conns[who]
            argv = tuple(a_id if arg == b"$A" else arg for arg in argv)
            if op == "call":
                out.append(conn.call(*argv))
            elif op == "send":
                conn.send(*argv)
                out.append(b"")
            elif op == "read":
                out.append(conn.frames(1))
            else:
                conn.sock.settimeout(SILENCE_S)
                try:
                    out.append(conn.sock.recv(1 << 16))
                except TimeoutError:
                    out.append(b"(silent)")
        return out
    finally:
        for conn in conns.values():
            conn.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeInThread]:
    running = NodeInThread(tmp_path_factory.mktemp("blocking-node"))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("protocol", [2, 3])
def test_blocking_commands_answer_what_redis_answers(redis_port: int,  # noqa: F811
                                                     node: NodeInThread, protocol: int) -> None:
    expected = run_script(redis_port, protocol)
    before = dict(node.server.info_sections()["stats"])
    got = run_script(node.port, protocol)
    for step, want, have in zip(SCRIPT, expected, got, strict=True):
        assert have == want, f"{step}: redis-server {want!r}, replikv {have!r}"
    assert node.server.waiters.calls == 0  # every wait ended, and left nothing behind
    info = node.server.info_sections()
    stats = dict(info["stats"])
    # 15 blocking commands of the script pop or read something (XREADGROUP of a history
    # never waits); 12 waits end by their timeout or CLIENT UNBLOCK.
    assert stats["blocked_served"] - before["blocked_served"] == 15
    assert stats["blocked_timeouts"] - before["blocked_timeouts"] == 12
    assert dict(info["clients"])["blocked_clients"] == 0
    exposition = node.server.metrics.render().decode()
    assert "replikv_blocked_clients 0.0" in exposition
    assert "replikv_blocked_served_total" in exposition


def test_a_session_number_cannot_go_with_a_blocking_command(node: NodeInThread) -> None:
    """SEQ names one write, and every attempt of a blocking command is a write of its own:
    replikv refuses the pair rather than answer a later attempt with the first one's nil."""
    conn = Raw(node.port)
    try:
        assert conn.call(b"REPLIKV", b"SESSION", b"NEW") == b"+OK\r\n"
        assert conn.call(b"REPLIKV", b"WITH", b"SEQ", b"1", b"BLPOP", b"x", b"0") == (
            b"-ERR REPLIKV WITH SEQ cannot go with a blocking command: each attempt to pop is "
            b"a write of its own\r\n")
        assert conn.call(b"REPLIKV", b"WITH", b"SEQ", b"1", b"RPUSH", b"x", b"a") == b":1\r\n"
        assert conn.call(b"BLPOP", b"x", b"0") == b"*2\r\n$1\r\nx\r\n$1\r\na\r\n"
    finally:
        conn.close()


def test_a_client_waiting_on_an_idle_queue_writes_nothing(node: NodeInThread) -> None:
    """A blocking command that finds none of its keys asks the cluster with a read, not a
    write, and XREAD's `$` needs no attempt either: a worker polling an empty queue (Celery's
    workers call BRPOP with a 1 s timeout, again and again) adds nothing to the log. Entries
    come when there is something to pop, or when the queue is busy."""
    conn, other = Raw(node.port), Raw(node.port)
    log = node.server.node.raft.log
    idle_calls = [
        (b"BLPOP", b"idle", b"0.01"), (b"BRPOP", b"idle", b"idle2", b"0.01"),
        (b"BLMOVE", b"idle", b"d", b"LEFT", b"LEFT", b"0.01"),
        (b"BRPOPLPUSH", b"idle", b"d", b"0.01"), (b"BLMPOP", b"0.01", b"1", b"idle", b"LEFT"),
        (b"BZPOPMIN", b"iz", b"0.01"), (b"BZMPOP", b"0.01", b"1", b"iz", b"MAX"),
        (b"XREAD", b"BLOCK", b"10", b"STREAMS", b"is", b"0-0"),
        (b"XREAD", b"BLOCK", b"10", b"STREAMS", b"is", b"$"),
    ]
    try:
        conn.call(b"DEL", b"idle", b"iz", b"is", b"d")
        before = log.last_index
        for _ in range(3):
            for call in idle_calls:
                assert conn.call(*call) == b"*-1\r\n", call
        assert log.last_index == before, "waiting on keys nobody holds wrote entries"
        assert conn.call(b"XADD", b"is", b"1-1", b"f", b"v") == b"$3\r\n1-1\r\n"
        before = log.last_index  # (the first XADD may also raise the cluster's level)
        assert conn.call(b"XREAD", b"BLOCK", b"10", b"STREAMS", b"is", b"$") == b"*-1\r\n"
        assert log.last_index == before, "XREAD BLOCK of `$` alone wrote an attempt"
        # A key that is there: the attempt pops it (one entry); XREADGROUP of a missing key
        # still answers NOGROUP at once.
        assert conn.call(b"RPUSH", b"idle", b"job") == b":1\r\n"
        assert conn.call(b"BLPOP", b"idle", b"0.01") == b"*2\r\n$4\r\nidle\r\n$3\r\njob\r\n"
        assert log.last_index == before + 2
        assert conn.call(b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"10", b"STREAMS",
                         b"missing", b">").startswith(b"-NOGROUP ")
        # A queue in use: a push that serves a waiting client makes its key busy for a while,
        # and a call on it makes its attempt at once (one entry), without a read's round first.
        other.send(b"BLPOP", b"busy", b"0")
        deadline = time.monotonic() + 10
        while node.server.waiters.calls == 0:  # until it waits
            assert time.monotonic() < deadline, "BLPOP did not block"
            time.sleep(0.005)
        assert conn.call(b"RPUSH", b"busy", b"job") == b":1\r\n"
        assert other.frames(1) == b"*2\r\n$4\r\nbusy\r\n$3\r\njob\r\n"
        before = log.last_index
        assert conn.call(b"BLPOP", b"busy", b"0.01") == b"*-1\r\n"
        assert log.last_index == before + 1
    finally:
        conn.close()
        other.close()
