"""Rollback files: round trip, order, every way one can be damaged, and how entries read."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from replikv.invariants import InvariantViolation
from replikv.storage import (
    CorruptRollbackFileError,
    RollbackRecord,
    list_rollback_files,
    read_rollback_file,
    write_rollback_file,
)
from replikv.storage.rollback import describe_entry, write_rollback_files

T0 = 1_700_000_000_123  # 2023-11-14 22:13:20.123 UTC


def command(*argv: bytes, time_ms: int = T0, seed: int | None = None) -> bytes:
    fields = [1, time_ms, list(argv)] + ([seed] if seed is not None else [])
    return msgpack.packb(fields, use_bin_type=True)


RECORDS = [
    RollbackRecord(41, 3, b"", None),
    RollbackRecord(42, 3, command(b"set", b"k", b"v"), True),
    RollbackRecord(43, 3, command(b"del", b"k"), False),
]


def write(data_dir: Path, records: list[RollbackRecord] = RECORDS, *, wall_time_ms: int = T0,
          **kw: object) -> Path:
    return write_rollback_file(data_dir, "n1", records, wall_time_ms=wall_time_ms,
                               new_term=4, new_leader=kw.pop("new_leader", "n2"), **kw)


def test_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert path.parent == tmp_path / "rollback"
    assert path.name == "rollback-20231114T221320.123Z-i41-43.rkvrb"
    rb = read_rollback_file(path)
    assert rb.records == tuple(RECORDS)
    assert (rb.node_id, rb.wall_time_ms, rb.new_term, rb.new_leader) == ("n1", T0, 4, "n2")
    assert (rb.first_index, rb.last_index, rb.acknowledged_count, rb.unknown_count) == \
        (41, 43, 1, 1)
    assert sorted(os.listdir(path.parent)) == [path.name], "no .tmp left behind"


def test_without_fsync_the_file_is_the_same(tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    path = write(tmp_path, fsync=False, new_leader=None)
    assert calls == []
    monkeypatch.undo()
    rb = read_rollback_file(path)
    assert rb.records == tuple(RECORDS) and rb.new_leader is None


def test_the_file_is_fsynced_with_its_directory(tmp_path: Path, monkeypatch) -> None:
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = write(tmp_path)
    assert str(path) + ".tmp" in synced  # the data, before the rename
    assert synced[-1] == str(path.parent)  # the rename


def test_listing_is_oldest_first_and_counts(tmp_path: Path) -> None:
    later = write(tmp_path, wall_time_ms=T0 + 60_000)
    earlier = write(tmp_path, [RollbackRecord(7, 2, command(b"incr", b"c"), True)],
                    wall_time_ms=T0)
    same_ms = write(tmp_path, [RollbackRecord(7, 2, b"", None)], wall_time_ms=T0)
    assert same_ms.name == "rollback-20231114T221320.123Z-i7-7-2.rkvrb"
    (tmp_path / "rollback" / "stale.rkvrb.tmp").write_bytes(b"a crashed write")
    infos = list_rollback_files(tmp_path)
    assert [i.path for i in infos] == [earlier, same_ms, later]
    assert sorted(p.name for p in (earlier, later)) == [earlier.name, later.name], "ls order"
    last = infos[-1]
    assert (last.wall_time_ms, last.node_id, last.first_index, last.last_index,
            last.entry_count, last.acknowledged_count, last.unknown_count, last.new_term,
            last.new_leader, last.error) == (T0 + 60_000, "n1", 41, 43, 3, 1, 1, 4, "n2", None)


def test_no_rollback_directory_lists_nothing(tmp_path: Path) -> None:
    assert list_rollback_files(tmp_path) == []


def test_a_flipped_byte_is_reported_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRollbackFileError, match="checksum mismatch") as info:
        read_rollback_file(path)
    assert str(path) in str(info.value)
    [listed] = list_rollback_files(tmp_path)
    assert listed.error == str(info.value)
    assert (listed.wall_time_ms, listed.first_index, listed.last_index) == (T0, 41, 43)
    assert listed.entry_count is None and listed.node_id is None


@pytest.mark.parametrize("keep", [0, 3, 9, 20])
def test_a_truncated_file_is_reported(tmp_path: Path, keep: int) -> None:
    path = write(tmp_path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CorruptRollbackFileError, match="truncated|checksum|magic") as info:
        read_rollback_file(path)
    assert str(path) in str(info.value)


def framed(body: object, version: int = 1) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    return b"RKVRB" + bytes([version]) + struct.pack("<I", zlib.crc32(packed)) + packed


GOOD = {"node_id": "n1", "wall_time_ms": T0, "new_term": 4, "new_leader": "n2",
        "entries": [[1, 1, b"", None], [2, 1, b"", True]]}


@pytest.mark.parametrize("body, words", [
    ([1, 2], "not a map"),
    ({k: v for k, v in GOOD.items() if k != "entries"}, "lacks entries"),
    ({**GOOD, "entries": []}, "entries is not a non-empty list"),
    ({**GOOD, "entries": [[1, 1, b""]]}, "is not \\[index, term, data, acknowledged\\]"),
    ({**GOOD, "entries": [[1, 1, b"", None], [3, 1, b"", None]]}, "index 3 after 1"),
    ({**GOOD, "entries": [[1, 1, "text", None]]}, "data is not bytes"),
    ({**GOOD, "entries": [[1, 1, b"", 1]]}, "acknowledged 1"),
    ({**GOOD, "entries": [[0, 1, b"", None]]}, "index 0"),
    ({**GOOD, "new_term": -1}, "new_term"),
    ({**GOOD, "node_id": ""}, "node_id"),
])
def test_a_well_framed_but_wrong_body_is_reported(tmp_path: Path, body, words) -> None:
    path = tmp_path / "x.rkvrb"
    path.write_bytes(framed(body))
    with pytest.raises(CorruptRollbackFileError, match=words):
        read_rollback_file(path)


def test_a_well_framed_good_body_reads(tmp_path: Path) -> None:
    path = tmp_path / "x.rkvrb"
    path.write_bytes(framed(GOOD))
    assert [r.acknowledged for r in read_rollback_file(path).records] == [None, True]


def test_entries_maybe_committed_round_trip_and_are_not_counted_as_rolled_back(
        tmp_path: Path) -> None:
    records = [RollbackRecord(7, 2, command(b"set", b"a", b"1"), None, True),
               RollbackRecord(8, 2, command(b"set", b"b", b"2"), True, True),
               RollbackRecord(9, 5, command(b"set", b"c", b"3"), None)]
    rb = read_rollback_file(write(tmp_path, records))
    assert rb.records == tuple(records)
    assert (rb.maybe_committed_count, rb.acknowledged_count, rb.unknown_count) == (2, 0, 1)
    (info,) = list_rollback_files(tmp_path)
    assert (info.maybe_committed_count, info.acknowledged_count, info.unknown_count) == (2, 0, 1)


def test_a_version_2_entry_needs_its_fifth_field(tmp_path: Path) -> None:
    path = tmp_path / "x.rkvrb"
    path.write_bytes(framed(GOOD, version=2))  # four fields per entry, as version 1 had
    with pytest.raises(CorruptRollbackFileError, match="acknowledged, maybe_committed\\]"):
        read_rollback_file(path)
    path.write_bytes(framed({**GOOD, "entries": [[1, 1, b"", None, 1]]}, version=2))
    with pytest.raises(CorruptRollbackFileError, match="maybe_committed 1"):
        read_rollback_file(path)
    path.write_bytes(b"RKVRB\x03" + framed(GOOD)[6:])
    with pytest.raises(CorruptRollbackFileError, match="unknown format version 3"):
        read_rollback_file(path)


def test_records_with_gaps_or_repeats_go_to_one_file_per_run(tmp_path: Path) -> None:
    # An index dropped twice between two saves (once from each of two leaders) repeats.
    records = [RollbackRecord(2, 2, b"", None), RollbackRecord(2, 3, b"", None),
               RollbackRecord(2, 2, b"", None), RollbackRecord(3, 4, b"", None),
               RollbackRecord(7, 4, b"", None)]
    paths = write_rollback_files(tmp_path, "n1", records, wall_time_ms=T0, new_term=5,
                                 new_leader="n2")
    assert [[(r.index, r.term) for r in read_rollback_file(p).records] for p in paths] == [
        [(2, 2)], [(2, 3)], [(2, 2), (3, 4)], [(7, 4)]]
    assert len(set(paths)) == 4


@pytest.mark.parametrize("records", [
    [],
    [RollbackRecord(2, 1, b"", None), RollbackRecord(4, 1, b"", None)],
    [RollbackRecord(1, 1, "text", None)],  # type: ignore[arg-type]
    [RollbackRecord(1, 1, b"", 1)],  # type: ignore[arg-type]
    [RollbackRecord(1, 1, b"", None, 1)],  # type: ignore[arg-type]
])
def test_writing_bad_records_is_our_bug(tmp_path: Path, records) -> None:
    with pytest.raises(InvariantViolation):
        write(tmp_path, records)
    assert not list(tmp_path.glob("rollback/*.rkvrb"))


# -- describe_entry ---------------------------------------------------------------------------


def test_describe_a_command_like_redis_cli() -> None:
    assert describe_entry(command(b"set", b"k", b"v")) == \
        {"kind": "command", "time_ms": T0, "text": 'SET "k" "v"'}
    odd = describe_entry(command(b"set", b'a "q"\\', b"\n\r\t\x00\xff\x7f caf\xc3\xa9"))
    assert odd["text"] == 'SET "a \\"q\\"\\\\" "\\n\\r\\t\\x00\\xff\\x7f caf\\xc3\\xa9"'
    assert describe_entry(command(b"\x01x"))["text"] == '"\\x01x"'


def test_describe_a_command_with_a_seed() -> None:
    assert describe_entry(command(b"spop", b"s", seed=99)) == \
        {"kind": "command", "time_ms": T0, "text": 'SPOP "s"', "seed": 99}


def test_describe_cuts_long_arguments_only_when_asked() -> None:
    data = command(b"set", b"k", b"x" * 1000)
    assert describe_entry(data)["text"] == 'SET "k" "' + "x" * 1000 + '"'
    assert describe_entry(data, max_arg_bytes=4)["text"] == 'SET "k" "xxxx"...(+996 bytes)'


def test_describe_an_expiry_batch() -> None:
    data = msgpack.packb([2, T0, [b"a", b"b\n"]], use_bin_type=True)
    assert describe_entry(data) == {"kind": "expire", "time_ms": T0,
                                    "text": 'expired: "a" "b\\n"'}


def test_describe_effects_generically() -> None:
    # Operations that are not in the effects format (named ones, unknown codes) still show.
    ops = [[b"set", b"k", b"v", None, 1500], [b"del", b"x"], [99, [b"n", True], {b"a": 1.5}]]
    data = msgpack.packb([3, T0, ops], use_bin_type=True)
    assert describe_entry(data) == {
        "kind": "effects", "time_ms": T0,
        "text": 'set "k" "v" nil 1500; del "x"; [99 ["n" true] {"a": 1.5}]'}


def test_describe_a_noop() -> None:
    assert describe_entry(b"")["kind"] == "noop"
    assert describe_entry(b"")["time_ms"] is None


@pytest.mark.parametrize("data", [
    b"\xc1",  # never valid msgpack
    msgpack.packb([9, T0, []]),  # a kind we do not know
    msgpack.packb([1, T0, []]),  # a command without a name
    msgpack.packb([1, T0, [1, 2]]),  # arguments that are not bytes
    msgpack.packb([1, "soon", [b"get", b"k"]]),  # a time that is not a number
    msgpack.packb({"a": 1}),
    msgpack.packb([1, T0]),
])
def test_describe_anything_else_as_unknown(data: bytes) -> None:
    described = describe_entry(data)
    assert described["kind"] == "unknown" and described["time_ms"] is None
    assert described["text"].startswith(f"{len(data)} bytes: \"")


def test_effects_are_shown_as_the_operations_they_perform():
    from replikv import state
    from replikv.node import encode_effects_entry
    from replikv.storage.rollback import EFFECT_NAMES

    codes = {v for k, v in vars(state).items() if k.startswith("EFFECT_")}
    assert codes == set(EFFECT_NAMES), "the display table lags the effects format"
    s = state.KVState()
    _reply, effects, _undo = s.execute_recorded([b"SET", b"k", b"v", b"PXAT", b"99999"], 1000)
    _reply, more, _undo = s.execute_recorded([b"SADD", b"s", b"a", b"b"], 1000)
    _reply, gone, _undo = s.execute_recorded([b"DEL", b"k"], 1000)
    text = describe_entry(encode_effects_entry(effects + more + gone, 1000))["text"]
    assert 'set "k" "v" PXAT 99999' in text
    assert 'sadd "s" "a" "b"' in text
    assert 'del "k"' in text
    _reply, hashed, _undo = s.execute_recorded([b"HSET", b"h", b"f", b"1", b"g", b"2"], 1000)
    _reply, dropped, _undo = s.execute_recorded([b"HDEL", b"h", b"g"], 1000)
    s.apply_command([b"PEXPIREAT", b"h", b"99999"], 1000)
    _reply, moved, _undo = s.execute_recorded([b"RENAME", b"h", b"i"], 1000)
    text = describe_entry(encode_effects_entry(hashed + dropped + moved, 1000))["text"]
    assert text == ('hset "h" "f" "1" "g" "2"; hdel "h" "g"; del "h"; '
                    'hash-fields "i" "f" "1" PXAT 99999')
    _reply, scored, _undo = s.execute_recorded([b"ZADD", b"z", b"1.5", b"a", b"2", b"b",
                                                b"3", b"c"], 1000)
    _reply, removed, _undo = s.execute_recorded([b"ZREM", b"z", b"b"], 1000)
    _reply, popped, _undo = s.execute_recorded([b"ZPOPMIN", b"z"], 1000)
    _reply, copied, _undo = s.execute_recorded([b"COPY", b"z", b"y"], 1000)
    text = describe_entry(encode_effects_entry(scored + removed + popped + copied, 1000))["text"]
    assert text == ('zadd "z" 1.5 "a" 2.0 "b" 3.0 "c"; zrem "z" "b"; zrem-ranks "z" 0 1; '
                    'zset-members "y" 3.0 "c"')
    code = b"#!lua name=lib\nredis.register_function('f', function() return 1 end)"
    _reply, loaded, _undo = s.execute_recorded([b"FUNCTION", b"LOAD", code], 1000)
    _reply, deleted, _undo = s.execute_recorded([b"FUNCTION", b"DELETE", b"lib"], 1000)
    _reply, flushed, _undo = s.execute_recorded([b"FUNCTION", b"FLUSH"], 1000)
    text = describe_entry(encode_effects_entry(loaded + deleted + flushed, 1000))["text"]
    assert text.startswith('function-load "lib" "#!lua name=lib')
    assert text.endswith('; function-delete "lib"; function-flush')
