"""What an operator asks a node about its own commands: SLOWLOG, INFO commandstats and
errorstats, CONFIG RESETSTAT (replikv.server.slowlog, server.metrics). The texts, errors and
shapes are redis-server 7.0's (sent to both, byte for byte, with the slow log switched off on
both so that its contents cannot differ); what is logged and counted is checked on one replikv
node running in this process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from replikv.server.slowlog import ARG_BYTES_MAX, ARGS_MAX, SlowLog

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    _redis_server_installed,
    redis_port,
)
from .test_pubsub_against_redis import NodeInThread, Raw

SAME_AS_REDIS: list[tuple[bytes, ...]] = [
    (b"CONFIG", b"SET", b"slowlog-log-slower-than", b"-1"),
    (b"SLOWLOG", b"RESET"), (b"SLOWLOG", b"GET"), (b"SLOWLOG", b"GET", b"0"),
    (b"SLOWLOG", b"GET", b"-1"), (b"SLOWLOG", b"LEN"),
    (b"SLOWLOG",), (b"SLOWLOG", b"GET", b"x"), (b"SLOWLOG", b"GET", b"-2"),
    (b"SLOWLOG", b"GET", b"1", b"2"), (b"SLOWLOG", b"LEN", b"x"), (b"SLOWLOG", b"RESET", b"x"),
    (b"SLOWLOG", b"FOO"), (b"SLOWLOG", b"HELP"),
    (b"CONFIG", b"SET", b"slowlog-log-slower-than", b"x"),
    (b"CONFIG", b"SET", b"slowlog-log-slower-than", b"-5"),
    (b"CONFIG", b"SET", b"slowlog-max-len", b"-1"), (b"CONFIG", b"SET", b"slowlog-max-len", b"x"),
    (b"CONFIG", b"SET", b"slowlog-max-len", b"64"),
    # (one parameter each: redis-server lists several in its dict's order)
    (b"CONFIG", b"GET", b"slowlog-max-len"), (b"CONFIG", b"GET", b"slowlog-log-slower-than"),
    (b"CONFIG", b"SET", b"slowlog-max-len", b"128"),
    (b"CONFIG", b"SET", b"slowlog-log-slower-than", b"10000"),
    (b"CONFIG", b"GET", b"slowlog-max-len"), (b"CONFIG", b"GET", b"slowlog-log-slower-than"),
    (b"CONFIG", b"RESETSTAT"), (b"CONFIG", b"RESETSTAT", b"x"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeInThread]:
    running = NodeInThread(tmp_path_factory.mktemp("slowlog-node"))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("protocol", [2, 3])
def test_slowlog_and_config_answer_what_redis_answers(redis_port: int,  # noqa: F811
                                                      node: NodeInThread, protocol: int) -> None:
    replies = []
    for port in (redis_port, node.port):
        conn = Raw(port)
        try:
            if protocol == 3:
                conn.call(b"HELLO", b"3")
            replies.append([conn.call(*argv) for argv in SAME_AS_REDIS])
        finally:
            conn.close()
    for argv, want, have in zip(SAME_AS_REDIS, *replies, strict=True):
        assert have == want, f"{argv}: redis-server {want!r}, replikv {have!r}"


def test_the_slow_log_keeps_the_newest_commands_as_redis_cuts_them(node: NodeInThread) -> None:
    conn = Raw(node.port)
    try:
        conn.call(b"CLIENT", b"SETNAME", b"op")
        conn.call(b"CONFIG", b"SET", b"slowlog-log-slower-than", b"0")  # every command
        conn.call(b"SLOWLOG", b"RESET")
        conn.call(b"SET", b"k", b"v")
        conn.call(b"SET", b"big", b"x" * 300)
        conn.call(b"MSET", *[b"m%d" % (i // 2) for i in range(40)])
        conn.call(b"AUTH", b"secret")  # answered by the connection: never logged
        assert conn.call(b"SLOWLOG", b"LEN") == b":3\r\n"
        text = conn.call(b"SLOWLOG", b"GET", b"-1")
        conn.call(b"CONFIG", b"SET", b"slowlog-max-len", b"2")
        assert conn.call(b"SLOWLOG", b"LEN") == b":2\r\n"
        conn.call(b"CONFIG", b"SET", b"slowlog-log-slower-than", b"-1")
        conn.call(b"GET", b"k")
        assert conn.call(b"SLOWLOG", b"LEN") == b":2\r\n"  # off: nothing more
        conn.call(b"CONFIG", b"SET", b"slowlog-max-len", b"128")
        conn.call(b"CONFIG", b"SET", b"slowlog-log-slower-than", b"10000")
        assert conn.call(b"SLOWLOG", b"RESET") == b"+OK\r\n"
        assert conn.call(b"SLOWLOG", b"LEN") == b":0\r\n"
    finally:
        conn.close()
    # Newest first: MSET (31 of its 41 arguments, then how many more), the big SET (128
    # bytes of its value, then how many more), SET k v; each with the client's name.
    assert b"secret" not in text
    assert text.startswith(b"*3\r\n*6\r\n:")
    assert (b"*32\r\n$4\r\nMSET\r\n" in text
            and b"$23\r\n... (10 more arguments)\r\n" in text)
    cut = b"x" * ARG_BYTES_MAX + b"... (172 more bytes)"
    assert b"$%d\r\n%b\r\n" % (len(cut), cut) in text
    assert b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n" in text
    assert text.count(b"$2\r\nop\r\n") == 3
    assert len(re.findall(rb"\$\d+\r\n127\.0\.0\.1:\d+\r\n", text)) == 3


def test_info_counts_commands_and_errors_until_resetstat(node: NodeInThread) -> None:
    conn = Raw(node.port)
    try:
        assert conn.call(b"CONFIG", b"RESETSTAT") == b"+OK\r\n"
        conn.call(b"SET", b"s", b"v")
        conn.call(b"SET", b"s", b"w")
        assert conn.call(b"LPUSH", b"s", b"x").startswith(b"-WRONGTYPE ")
        assert conn.call(b"NOSUCHCOMMAND").startswith(b"-ERR unknown command")
        stats = conn.call(b"INFO", b"commandstats").decode()
        errors = conn.call(b"INFO", b"errorstats").decode()
        default, everything = conn.call(b"INFO").decode(), conn.call(b"INFO", b"all").decode()
        conn.call(b"CONFIG", b"RESETSTAT")
        after = conn.call(b"INFO", b"commandstats").decode()
    finally:
        conn.close()
    assert re.search(r"cmdstat_set:calls=2,usec=\d+,usec_per_call=\d+\.\d\d,rejected_calls=0,"
                     r"failed_calls=0\r\n", stats), stats
    assert re.search(r"cmdstat_lpush:calls=1,usec=\d+,usec_per_call=[\d.]+,rejected_calls=0,"
                     r"failed_calls=1\r\n", stats), stats
    assert "cmdstat_get:" not in stats and "cmdstat_nosuchcommand" not in stats
    assert "errorstat_WRONGTYPE:count=1\r\n" in errors and "errorstat_ERR:count=1\r\n" in errors
    # As in Redis: INFO leaves commandstats out (errorstats in), INFO all has both.
    assert "# Errorstats" in default and "# Commandstats" not in default
    assert "# Commandstats" in everything and "cmdstat_set:" in everything
    assert "cmdstat_set" not in after and "cmdstat_config:calls=1," in after


def test_a_slow_log_entry_is_cut_as_redis_cuts_it() -> None:
    log = SlowLog()
    log.slower_than_us = 100
    log.record(99.9, [b"GET", b"fast"], "a:1", b"")
    assert len(log) == 0
    log.record(100, [b"SET", b"k", b"v" * (ARG_BYTES_MAX + 1)], "a:1", b"n")
    (entry,) = log.newest(10)
    assert entry[0] == 0 and entry[2] == 100 and entry[4:] == [b"a:1", b"n"]
    assert entry[3] == [b"SET", b"k", b"v" * ARG_BYTES_MAX + b"... (1 more bytes)"]
    log.record(5000, [b"DEL", *[b"k"] * ARGS_MAX], "a:1", b"")
    assert log.newest(1)[0][3][-1] == b"... (2 more arguments)"
    assert len(log.newest(1)[0][3]) == ARGS_MAX
    log.set_max_len(1)
    assert [e[0] for e in log.newest(-1)] == [1]
    log.max_len = 0
    log.record(5000, [b"DEL", b"k"], "a:1", b"")
    assert len(log) == 1  # (set_max_len trims; a max of 0 logs nothing more)
