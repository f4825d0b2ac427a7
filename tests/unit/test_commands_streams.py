"""Streams: replies and errors, ids from the entry's time, trimming, consumer groups, the
pending entries list, claims; and what replication needs of them: undo restores exactly,
passive effects applied on another state give the same digest and replies, snapshots round
trip. The replies against a real redis-server are test_streams_against_redis.py's."""

from __future__ import annotations

import random
from pathlib import Path
from unittest import mock

import msgpack
import pytest

from replikv.commands import keys_of, lookup, streams
from replikv.entries import entry_keys
from replikv.features import COMMAND_LEVELS, FEATURE_LEVEL, STREAM_LEVEL, command_level
from replikv.replies import OK, ErrorReply, KeyedArrays, NullArray, Status
from replikv.resp import encode_reply
from replikv.sessions import reply_from_msgpack, reply_to_msgpack
from replikv.state import EFFECT_STREAM_ADD, KVState, RecordDigest
from replikv.storage.snapshot import ITEM_STREAM, ITEM_STREAM_MORE
from replikv.wire import FRAME_HEADER, decode_message, encode_message

from .state_driver import T0, Node, err
from .test_state_snapshot import drain, small_set_chunks
from .test_storage_snapshot import restore, write_snapshot

XADD_SMALL = err("ERR The ID specified in XADD is equal or smaller than the target stream top "
                 "item")


def _id(reply: object) -> tuple[int, int]:
    ms, seq = reply.split(b"-")  # type: ignore[attr-defined]
    return int(ms), int(seq)


# ---- ids, XADD, ranges ----


def test_auto_ids_take_the_entry_time_and_never_go_backwards() -> None:
    node = Node()
    assert node.write("XADD", "s", "*", "f", "v", t=5000) == b"5000-0"
    assert node.write("XADD", "s", "*", "f", "v", t=5000) == b"5000-1"
    # The leader's clock went back: the sequence goes on rather than the id going back.
    assert node.write("XADD", "s", "*", "f", "v", t=4000) == b"5000-2"
    assert node.write("XADD", "s", "*", "f", "v", t=6000) == b"6000-0"
    assert node.write("XADD", "s", "6000-*", "f", "v") == b"6000-1"
    assert node.write("XADD", "s", "7000-*", "f", "v") == b"7000-0"
    assert node.write("XADD", "s", "6000-5", "f", "v") == XADD_SMALL
    assert node.write("XADD", "s", "0-0", "f", "v") == err(
        "ERR The ID specified in XADD must be greater than 0-0")
    assert node.write("XADD", "s", "x", "f", "v") == err(streams.INVALID_ID)
    assert node.write("XADD", "s", "*", "f") == err(
        "ERR wrong number of arguments for 'xadd' command")
    assert node.write("XADD", "nokey", "NOMKSTREAM", "*", "f", "v") is None
    assert node.read("EXISTS", "nokey") == 0
    assert node.read("XLEN", "s") == 6


def test_two_replicas_given_the_same_entries_assign_the_same_ids() -> None:
    one, two = Node(), Node()
    for t in (10, 10, 9, 12, 12):
        assert one.write("XADD", "s", "*", "a", "1", t=t) == two.write(
            "XADD", "s", "*", "a", "1", t=t)
    assert one.state.digest() == two.state.digest()


def test_the_last_possible_id_exhausts_the_stream() -> None:
    node = Node()
    top = "18446744073709551615-18446744073709551615"
    assert node.write("XADD", "s", top, "f", "v") == top.encode()
    assert node.write("XADD", "s", "*", "f", "v") == err(streams.ERR_EXHAUSTED)


def test_xrange_and_xrevrange_with_exclusive_bounds_and_count() -> None:
    node = Node()
    for i in range(1, 6):
        node.write("XADD", "s", f"{i}-0", "n", str(i))
    entry = [b"2-0", [b"n", b"2"]]
    assert node.read("XRANGE", "s", "-", "+", "COUNT", "2") == [[b"1-0", [b"n", b"1"]], entry]
    assert node.read("XRANGE", "s", "(1-0", "(3-0") == [entry]
    assert len(node.read("XRANGE", "s", "(1-0", "(3")) == 2  # type: ignore[arg-type]  # 3-0 < 3-max
    assert node.read("XREVRANGE", "s", "+", "(3-0", "COUNT", "1") == [[b"5-0", [b"n", b"5"]]]
    assert node.read("XRANGE", "s", "-", "+", "COUNT", "0") is NullArray
    assert node.read("XRANGE", "s", "5", "1") == []
    assert node.read("XRANGE", "nokey", "-", "+") == []
    assert node.read("XRANGE", "s", "(-", "+") == err(streams.INVALID_ID)
    assert node.read("XRANGE", "s", "-", "(0-0") == err("ERR invalid end ID for the interval")
    assert node.read("XRANGE", "s", "-", "+", "LIMIT") == err("ERR syntax error")


def test_xdel_and_trimming() -> None:
    node = Node()
    for i in range(1, 11):
        node.write("XADD", "s", f"{i}-1", "n", str(i))
    assert node.write("XDEL", "s", "2-1", "2-1", "99-0") == 1
    assert node.write("XDEL", "nokey", "bad") == 0  # the key is looked at first, as in Redis
    assert node.write("XDEL", "s", "bad") == err(streams.INVALID_ID)
    assert node.write("XTRIM", "s", "MINID", "4") == 2  # 1-1 and 3-1
    assert node.write("XTRIM", "s", "MAXLEN", "=", "5") == 2
    assert [e[0] for e in node.read("XRANGE", "s", "-", "+")] == [  # type: ignore[union-attr]
        b"6-1", b"7-1", b"8-1", b"9-1", b"10-1"]
    # "~" trims exactly too, but no more than LIMIT entries.
    assert node.write("XTRIM", "s", "MAXLEN", "~", "0", "LIMIT", "2") == 2
    assert node.write("XADD", "s", "MAXLEN", "1", "11-0", "n", "11") == b"11-0"
    assert node.read("XLEN", "s") == 1
    assert node.write("XADD", "s", "MAXLEN", "0", "12-0", "n", "12") == b"12-0"
    assert node.read("XLEN", "s") == 0 and node.read("TYPE", "s") == Status("stream")
    assert node.write("XTRIM", "s", "LIMIT", "2") == err(
        "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy")
    assert node.write("XTRIM", "s", "MAXLEN", "2", "LIMIT", "2") == err(
        "ERR syntax error, LIMIT cannot be used without the special ~ option")
    info = node.read("XINFO", "STREAM", "s")
    assert info[b"entries-added"] == 12 and info[b"max-deleted-entry-id"] == b"2-1"  # type: ignore[index]
    assert info[b"last-generated-id"] == b"12-0" and info[b"first-entry"] is None  # type: ignore[index]


def test_xsetid() -> None:
    node = Node()
    node.write("XADD", "s", "5-0", "f", "v")
    assert node.write("XSETID", "s", "4-0") == err(
        "ERR The ID specified in XSETID is smaller than the target stream top item")
    assert node.write("XSETID", "s", "9-0", "ENTRIESADDED", "7", "MAXDELETEDID", "8-0") == OK
    assert node.write("XADD", "s", "*", "f", "v", t=3) == b"9-1"
    assert node.write("XSETID", "nokey", "1-0") == err("ERR no such key")


def test_xread_answers_at_once_and_blocks_never() -> None:
    node = Node()
    node.write("XADD", "a", "1-0", "f", "1")
    node.write("XADD", "b", "2-0", "f", "2")
    assert node.read("XREAD", "STREAMS", "a", "b", "0", "1-0") == KeyedArrays(
        [b"a", [[b"1-0", [b"f", b"1"]]], b"b", [[b"2-0", [b"f", b"2"]]]])
    assert node.read("XREAD", "COUNT", "1", "STREAMS", "a", "a", "0", "0") == KeyedArrays(
        [b"a", [[b"1-0", [b"f", b"1"]]], b"a", [[b"1-0", [b"f", b"1"]]]])
    # BLOCK: as if the timeout expired with nothing new ($ is the last id now).
    assert node.read("XREAD", "BLOCK", "1000", "STREAMS", "a", "$") is NullArray
    assert node.read("XREAD", "BLOCK", "-1", "STREAMS", "a", "$") == err(
        "ERR timeout is negative")
    assert node.read("XREAD", "STREAMS", "a", ">") == err(
        "ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> "
        "<consumer> option.")
    # RESP2: an array of [key, entries]; RESP3: a map.
    reply = node.read("XREAD", "STREAMS", "a", "0")
    assert encode_reply(reply, 2) == b"*1\r\n*2\r\n$1\r\na\r\n*1\r\n*2\r\n$3\r\n1-0\r\n" \
        b"*2\r\n$1\r\nf\r\n$1\r\n1\r\n"
    assert encode_reply(reply, 3).startswith(b"%1\r\n$1\r\na\r\n*1\r\n")
    # A reply kept for a session's retry, or forwarded to a follower, comes back the same.
    assert reply_from_msgpack(msgpack.unpackb(msgpack.packb(reply_to_msgpack(reply)),
                                              raw=False)) == reply
    assert type(reply_from_msgpack(msgpack.unpackb(
        msgpack.packb(reply_to_msgpack(reply)), raw=False))) is KeyedArrays


def test_a_blocked_xread_retries_with_the_ids_dollar_meant_at_first() -> None:
    node = Node()
    node.write("XADD", "a", "1-0", "f", "1")
    node.write("XADD", "b", "2-0", "f", "2")
    argv = [b"XREAD", b"BLOCK", b"0", b"STREAMS", b"a", b"nokey", b"b", b"$", b"$", b"0"]
    resolved = streams.resolve_last_ids(node.state, argv, T0)
    assert resolved == [*argv[:7], b"1-0", b"0-0", b"0"]
    assert node.read(*argv) == KeyedArrays([b"b", [[b"2-0", [b"f", b"2"]]]])
    node.write("XADD", "a", "3-0", "f", "3")
    node.write("XADD", "nokey", "4-0", "f", "4")
    assert node.read(*resolved) == KeyedArrays([b"a", [[b"3-0", [b"f", b"3"]]],
                                                b"nokey", [[b"4-0", [b"f", b"4"]]],
                                                b"b", [[b"2-0", [b"f", b"2"]]]])


# ---- consumer groups ----


def _grouped(count: int = 4) -> Node:
    node = Node()
    for i in range(1, count + 1):
        node.write("XADD", "s", f"{i}-0", "n", str(i))
    assert node.write("XGROUP", "CREATE", "s", "g", "0") == OK
    return node


def test_xreadgroup_delivers_records_the_pel_and_serves_history() -> None:
    node = _grouped()
    got = node.write("XREADGROUP", "GROUP", "g", "alice", "COUNT", "2", "STREAMS", "s", ">",
                     t=T0)
    assert got == KeyedArrays([b"s", [[b"1-0", [b"n", b"1"]], [b"2-0", [b"n", b"2"]]]])
    assert node.write("XREADGROUP", "GROUP", "g", "bob", "STREAMS", "s", ">", t=T0 + 10) == \
        KeyedArrays([b"s", [[b"3-0", [b"n", b"3"]], [b"4-0", [b"n", b"4"]]]])
    assert node.write("XREADGROUP", "GROUP", "g", "bob", "STREAMS", "s", ">") is NullArray
    # Idle times are the reader's clock minus the delivery times the entries recorded.
    assert node.read("XPENDING", "s", "g", t=T0 + 100) == [
        4, b"1-0", b"4-0", [[b"alice", b"2"], [b"bob", b"2"]]]
    assert node.read("XPENDING", "s", "g", "IDLE", "95", "-", "+", "10", t=T0 + 100) == [
        [b"1-0", b"alice", 100, 1], [b"2-0", b"alice", 100, 1]]
    # History: the consumer's own pending entries, their delivery count going up.
    node.write("XDEL", "s", "2-0")
    assert node.write("XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", "0",
                      t=T0 + 200) == KeyedArrays([b"s", [[b"1-0", [b"n", b"1"]],
                                                         [b"2-0", NullArray]]])
    assert node.read("XPENDING", "s", "g", "-", "+", "10", "alice", t=T0 + 200) == [
        [b"1-0", b"alice", 0, 2], [b"2-0", b"alice", 200, 1]]
    assert node.write("XACK", "s", "g", "1-0", "1-0", "9-0") == 1
    groups = node.read("XINFO", "GROUPS", "s")
    assert groups == [{b"name": b"g", b"consumers": 2, b"pending": 3,
                       b"last-delivered-id": b"4-0", b"entries-read": 4, b"lag": 0}]
    consumers = node.read("XINFO", "CONSUMERS", "s", "g", t=T0 + 300)
    assert consumers == [
        {b"name": b"alice", b"pending": 1, b"idle": 100, b"inactive": 100},
        {b"name": b"bob", b"pending": 2, b"idle": 290, b"inactive": 290}]


def test_xreadgroup_errors() -> None:
    node = _grouped()
    assert node.write("XREADGROUP", "GROUP", "nog", "c", "STREAMS", "s", ">") == err(
        "NOGROUP No such key 's' or consumer group 'nog' in XREADGROUP with GROUP option")
    assert node.write("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "$") == ErrorReply(
        streams._parse_read([b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"s", b"$"],
                            True).ids[0])  # type: ignore[arg-type]
    assert node.write("XREADGROUP", "COUNT", "1", "NOACK", "STREAMS", "s", ">") == err(
        "ERR Missing GROUP option for XREADGROUP")
    assert node.write("XGROUP", "CREATE", "s", "g", "$") == err(
        "BUSYGROUP Consumer Group name already exists")
    assert node.write("XGROUP", "CREATE", "nokey", "g", "$") == err(streams.ERR_XGROUP_KEY)
    assert node.write("XGROUP", "CREATE", "new", "g", "$", "MKSTREAM") == OK
    assert node.read("XLEN", "new") == 0


def test_claims_move_pending_entries_and_autoclaim_reports_deleted_ones() -> None:
    node = _grouped()
    node.write("XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">", t=T0)
    # Not idle long enough at T0 + 50; idle enough at T0 + 500.
    assert node.write("XCLAIM", "s", "g", "bob", "100", "1-0", t=T0 + 50) == []
    assert node.write("XCLAIM", "s", "g", "bob", "100", "1-0", "2-0", "JUSTID",
                      t=T0 + 500) == [b"1-0", b"2-0"]
    assert node.read("XPENDING", "s", "g", "-", "+", "10", "bob", t=T0 + 600) == [
        [b"1-0", b"bob", 100, 1], [b"2-0", b"bob", 100, 1]]
    assert node.write("XCLAIM", "s", "g", "carol", "0", "3-0", "RETRYCOUNT", "7", "IDLE", "40",
                      t=T0 + 600) == [[b"3-0", [b"n", b"3"]]]
    assert node.read("XPENDING", "s", "g", "3-0", "3-0", "1", t=T0 + 600) == [
        [b"3-0", b"carol", 40, 7]]
    node.write("XDEL", "s", "4-0")
    assert node.write("XAUTOCLAIM", "s", "g", "dave", "0", "0", "COUNT", "2",
                      t=T0 + 700) == [b"3-0", [[b"1-0", [b"n", b"1"]], [b"2-0", [b"n", b"2"]]],
                                      []]
    assert node.write("XAUTOCLAIM", "s", "g", "dave", "0", "3-0", t=T0 + 700) == [
        b"0-0", [[b"3-0", [b"n", b"3"]]], [b"4-0"]]
    assert node.read("XPENDING", "s", "g", t=T0 + 700) == [3, b"1-0", b"3-0", [[b"dave", b"3"]]]
    assert node.write("XCLAIM", "s", "g", "x", "0", "1-0", "BOGUS") == err(
        "ERR Unrecognized XCLAIM option 'BOGUS'")
    assert node.write("XCLAIM", "s", "nog", "x", "0", "1-0") == err(
        "NOGROUP No such key 's' or consumer group 'nog'")
    assert node.write("XGROUP", "DELCONSUMER", "s", "g", "dave") == 3
    assert node.read("XPENDING", "s", "g") == [0, None, None, NullArray]


def test_xinfo_stream_full() -> None:
    node = _grouped(3)
    node.write("XREADGROUP", "GROUP", "g", "alice", "COUNT", "1", "STREAMS", "s", ">", t=T0)
    full = node.read("XINFO", "STREAM", "s", "FULL", "COUNT", "2")
    assert full[b"entries"] == [[b"1-0", [b"n", b"1"]], [b"2-0", [b"n", b"2"]]]  # type: ignore[index]
    (group,) = full[b"groups"]  # type: ignore[index]
    assert group[b"pending"] == [[b"1-0", b"alice", T0, 1]]
    assert group[b"consumers"] == [{b"name": b"alice", b"seen-time": T0, b"active-time": T0,
                                    b"pel-count": 1, b"pending": [[b"1-0", T0, 1]]}]
    assert group[b"lag"] == 2 and group[b"entries-read"] == 1
    assert node.read("OBJECT", "ENCODING", "s") == b"stream"
    assert node.read("XINFO", "STREAM", "s", "FULL", "x") == err(
        "ERR unknown subcommand or wrong number of arguments for 'STREAM'. Try XINFO HELP.")


# ---- keyspace commands ----


def test_type_scan_rename_copy_del_and_memory_usage() -> None:
    node = _grouped(2)
    assert node.read("TYPE", "s") == Status("stream")
    assert node.read("SCAN", "0", "TYPE", "stream", "COUNT", "10000") == [b"0", [b"s"]]
    assert node.write("COPY", "s", "c") == 1
    assert node.read("XINFO", "GROUPS", "c") == node.read("XINFO", "GROUPS", "s")
    assert node.write("RENAME", "s", "r") == OK
    assert node.read("XLEN", "r") == 2
    assert node.read("MEMORY", "USAGE", "r") > 0  # type: ignore[operator]
    assert node.state.used_bytes() == sum(node.read("MEMORY", "USAGE", k)  # type: ignore[misc]
                                          for k in (b"r", b"c"))
    assert node.write("XADD", "c", "9-0", "a", "b") == b"9-0"  # the copy is its own
    assert node.read("XLEN", "r") == 2
    assert node.write("DEL", "r", "c") == 2
    assert node.state.used_bytes() == 0
    node.write("SET", "str", "v")
    assert node.write("XADD", "str", "*", "f", "v") == err(
        "WRONGTYPE Operation against a key holding the wrong kind of value")


def test_an_expired_stream_is_gone_for_writes_and_reads() -> None:
    node = _grouped(1)
    node.write("PEXPIRE", "s", "10")
    assert node.read("XLEN", "s", t=T0 + 10) == 0
    assert node.write("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM", t=T0 + 20) == OK
    assert node.read("XINFO", "STREAM", "s", t=T0 + 20)[b"length"] == 0  # type: ignore[index]


def test_the_size_limits() -> None:
    node = Node()
    with mock.patch.object(streams, "STREAM_ENTRIES_MAX", 3):
        for i in range(1, 4):
            node.write("XADD", "s", f"{i}-0", "f", "v")
        assert node.write("XADD", "s", "4-0", "f", "v") == err(streams.STREAM_TOO_BIG)
        assert node.write("XADD", "s", "MAXLEN", "3", "4-0", "f", "v") == b"4-0"
    with mock.patch.object(streams, "STREAM_PENDING_MAX", 1):
        node.write("XGROUP", "CREATE", "s", "g", "0")
        assert node.write("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">") == err(
            streams.STREAM_GROUPS_TOO_BIG)
        assert node.write("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "s",
                          ">")[1][0][0] == b"2-0"  # type: ignore[index]


# ---- replication: levels, keys, effects, undo, snapshots ----


def test_stream_writes_need_the_stream_level() -> None:
    assert FEATURE_LEVEL >= STREAM_LEVEL == 6
    for name in (b"xadd", b"xdel", b"xtrim", b"xsetid", b"xreadgroup", b"xack", b"xclaim",
                 b"xautoclaim", b"xgroup"):
        assert COMMAND_LEVELS[name] == STREAM_LEVEL
        assert command_level([name], active=True) == STREAM_LEVEL
    assert command_level([b"xrange"]) == 1 and command_level([b"xread"]) == 1
    # A script calls no stream command below the level (an older replica would not know it).
    state = KVState()
    assert state.run_for_script([b"XADD", b"s", b"*", b"f", b"v"], T0, 0) == err(
        "ERR XADD needs the cluster at feature level 6 (streams): upgrade every member, then "
        "write to a stream once from a client")
    state.raise_feature_level(STREAM_LEVEL)
    assert state.run_for_script([b"XADD", b"s", b"1-0", b"f", b"v"], T0, 0) == b"1-0"


def test_keys_of_the_stream_commands() -> None:
    argv = [b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"1", b"STREAMS", b"a", b"b", b">",
            b">"]
    assert keys_of(lookup(b"xreadgroup"), argv) == [b"a", b"b"]  # type: ignore[arg-type]
    assert keys_of(lookup(b"xread"), [b"XREAD", b"STREAMS", b"k", b"0"]) == [b"k"]  # type: ignore[arg-type]
    assert keys_of(lookup(b"xgroup"), [b"XGROUP", b"CREATE", b"k", b"g", b"$"]) == [b"k"]  # type: ignore[arg-type]
    assert keys_of(lookup(b"xgroup"), [b"XGROUP", b"HELP"]) == []  # type: ignore[arg-type]
    state = KVState()
    _, effects, _ = state.execute_recorded([b"XADD", b"k", b"1-0", b"f", b"v"], T0)
    assert effects == [[EFFECT_STREAM_ADD, b"k", b"1-0", [b"f", b"v"]]]
    assert entry_keys(msgpack.packb([3, T0, effects])) == [b"k"]


_KEYS = [b"s1", b"s2"]


def _random_command(rng: random.Random, step: int, added: list[bytes]) -> list[bytes]:
    """`added`: the ids XADD answered so far, which the commands mostly name."""
    key = rng.choice(_KEYS)
    group = b"g1" if rng.random() < 0.8 else b"g2"
    consumer = rng.choice([b"c1", b"c2", b"c3"])
    some_id = rng.choice(added[-30:]) if added and rng.random() < 0.9 else b"%d-1" % step
    weighted = [  # (weight, command)
        (8, [b"XADD", key, b"*", b"f", b"%d" % step]),
        (2, [b"XADD", key, b"MAXLEN", b"8", b"*", b"f", b"v", b"g", b"w"]),
        (1, [b"XADD", key, some_id, b"f", b"v"]),
        (2, [b"XDEL", key, some_id, some_id]),
        (1, [b"XTRIM", key, b"MINID", some_id]),
        (1, [b"XTRIM", key, b"MAXLEN", b"~", b"3", b"LIMIT", b"2"]),
        (1, [b"XSETID", key, b"%d-9" % (step * 10 + 5), b"MAXDELETEDID", b"1-0"]),
        (4, [b"XGROUP", b"CREATE", key, group, rng.choice([b"0", b"$"]), b"MKSTREAM"]),
        (1, [b"XGROUP", b"SETID", key, group, b"0", b"ENTRIESREAD", b"1"]),
        (0.3, [b"XGROUP", b"DESTROY", key, group]),
        (1, [b"XGROUP", b"CREATECONSUMER", key, group, consumer]),
        (0.5, [b"XGROUP", b"DELCONSUMER", key, group, consumer]),
        (5, [b"XREADGROUP", b"GROUP", group, consumer, b"COUNT", b"3", b"STREAMS", key, b">"]),
        (1, [b"XREADGROUP", b"GROUP", group, consumer, b"NOACK", b"STREAMS", key, b">"]),
        (2, [b"XREADGROUP", b"GROUP", group, consumer, b"STREAMS", key, key, b"0", b">"]),
        (2, [b"XACK", key, group, *added[-6:], some_id]),
        (2, [b"XCLAIM", key, group, consumer, b"0", some_id, b"1-0", b"FORCE"]),
        (2, [b"XCLAIM", key, group, consumer, b"0", some_id, b"JUSTID", b"LASTID", some_id]),
        (2, [b"XAUTOCLAIM", key, group, consumer, b"0", b"0", b"COUNT", b"2"]),
        (0.3, [b"RENAME", key, rng.choice(_KEYS)]),
        (0.3, [b"COPY", key, rng.choice(_KEYS), b"REPLACE"]),
        (0.2, [b"PEXPIRE", key, b"5"]),
        (0.2, [b"DEL", key]),
    ]
    return rng.choices([c for _, c in weighted], [w for w, _ in weighted])[0]


def _time(step: int) -> int:
    return step * 10 + 1


_READS = [[b"XINFO", b"STREAM", k, b"FULL"] for k in _KEYS] + [
    [b"XINFO", b"GROUPS", k] for k in _KEYS] + [
    [b"XPENDING", k, g, b"-", b"+", b"100"] for k in _KEYS for g in (b"g1", b"g2")]


def _observed(state: KVState, t: int) -> list[object]:
    return [state.execute_read(argv, t) for argv in _READS] + [state.used_bytes()]


@pytest.mark.parametrize("seed", range(4))
def test_effects_on_a_backup_and_undo_keep_every_replica_identical(seed: int) -> None:
    rng = random.Random(seed)
    leader, backup, active = KVState(), KVState(), KVState()
    added: list[bytes] = []
    for step in range(250):
        t = _time(step)
        argv = _random_command(rng, step, added)
        before_digest, before = leader.digest(), _observed(leader, t)
        reply, effects, undo = leader.execute_recorded(argv, t, step)
        if rng.random() < 0.2:  # a leader that loses its leadership takes it back
            leader.undo(undo)
            assert leader.digest() == before_digest and _observed(leader, t) == before, argv
            reply, effects, undo = leader.execute_recorded(argv, t, step)
        # Effects travel as msgpack, as a log entry holds them.
        backup.apply_effects(msgpack.unpackb(msgpack.packb(effects), raw=True, use_list=True))
        assert active.apply_command(argv, t, step) == reply, argv
        if argv[0] == b"XADD" and type(reply) is bytes:
            added.append(reply)
        assert leader.digest() == backup.digest() == active.digest(), (seed, step, argv)
        assert _observed(leader, t) == _observed(backup, t) == _observed(active, t), argv


def test_the_workload_reaches_groups_pending_entries_and_claims() -> None:
    rng = random.Random(0)
    state = KVState()
    replies: dict[bytes, int] = {}
    added: list[bytes] = []
    for step in range(250):
        argv = _random_command(rng, step, added)
        reply = state.apply_command(argv, _time(step), step)
        if argv[0] == b"XADD" and type(reply) is bytes:
            added.append(reply)
        if not isinstance(reply, ErrorReply) and reply not in ([], NullArray, 0):
            replies[argv[0]] = replies.get(argv[0], 0) + 1
    assert {b"XADD", b"XREADGROUP", b"XCLAIM", b"XAUTOCLAIM", b"XACK", b"XGROUP", b"XDEL",
            b"XTRIM"} <= set(replies)


def _big_state() -> KVState:
    state = KVState()
    for i in range(1, 301):
        state.apply_command([b"XADD", b"big", b"%d-0" % i, b"field", b"v" * 20], T0)
    for argv in ([b"XGROUP", b"CREATE", b"big", b"g", b"0"],
                 [b"XREADGROUP", b"GROUP", b"g", b"a", b"COUNT", b"5", b"STREAMS", b"big", b">"],
                 [b"XREADGROUP", b"GROUP", b"g", b"b", b"COUNT", b"5", b"STREAMS", b"big", b">"],
                 [b"XGROUP", b"CREATECONSUMER", b"big", b"g", b"idle"],
                 [b"XDEL", b"big", b"2-0"], [b"XGROUP", b"CREATE", b"big", b"h", b"$"],
                 [b"XGROUP", b"CREATE", b"empty", b"g", b"$", b"MKSTREAM"]):
        state.apply_command(argv, T0 + 7)
    state.set_expire(b"big", T0 + 10_000)
    return state


def test_a_snapshot_of_a_big_stream_comes_in_chunks_and_restores_exactly() -> None:
    state = _big_state()
    reads = [[b"XINFO", b"STREAM", b"big", b"FULL", b"COUNT", b"0"],
             [b"XINFO", b"CONSUMERS", b"big", b"g"], [b"XINFO", b"STREAM", b"empty", b"FULL"]]
    before = [state.execute_read(argv, T0 + 50) for argv in reads]
    with small_set_chunks(member_bytes=1000):
        cursor = state.begin_snapshot()
        records = cursor.next_batch(1) or []
        # Changes while the snapshot runs are not in it (copy-on-write).
        state.apply_command([b"XADD", b"big", b"999-0", b"f", b"v"], T0 + 60)
        state.apply_command([b"XACK", b"big", b"g", b"1-0"], T0 + 60)
        records += drain(cursor, 3)
    kinds = [record[1] for record in records if record[0] == b"big"]
    assert kinds[0] == ITEM_STREAM and len(kinds) > 5 and set(kinds[1:]) == {ITEM_STREAM_MORE}
    packed = msgpack.unpackb(msgpack.packb(records, use_bin_type=True), raw=False)
    restored = KVState.from_records(packed)
    assert restored.digest() == cursor.state_digest() != state.digest()
    assert [restored.execute_read(argv, T0 + 50) for argv in reads] == before
    assert restored.expire_at_ms(b"big") == T0 + 10_000
    digest = RecordDigest(2)
    digest.update(packed)
    assert digest.hexdigest() == cursor.state_digest()
    # The restored stream goes on as the original: ids, groups, counters.
    for one in (state, restored):
        one.apply_command([b"XACK", b"big", b"g", b"1-0"], T0 + 60)
        one.apply_command([b"XADD", b"big", b"999-0", b"f", b"v"], T0 + 60)
    assert restored.digest() == state.digest()
    assert restored.used_bytes() == state.used_bytes()


def test_a_stream_survives_a_snapshot_file(tmp_path: Path) -> None:
    state = _big_state()
    info = write_snapshot(tmp_path, state)
    restored, _, end = restore(info.path)
    assert restored.digest() == state.digest() == end.state_digest
    assert list(restored.items()) == list(state.items())


def test_wire_carries_keyed_arrays() -> None:
    from replikv.node_messages import ForwardReply

    reply = KeyedArrays([b"s", [[b"1-0", [b"f", b"v"]]]])
    frame = encode_message(ForwardReply("n1", 7, reply, False, 3))
    message = decode_message(frame[FRAME_HEADER.size:])
    assert message.result == reply and type(message.result) is KeyedArrays  # type: ignore[attr-defined]
