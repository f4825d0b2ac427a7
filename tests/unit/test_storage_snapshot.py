"""Snapshot files: the format round-trips a real KVState, every kind of damage is reported as
CorruptSnapshotError naming file, offset and cause (and never as anything else), transfers
resume after a crash and are verified before they count, and memory stays bounded.

`craft` below writes the on-disk format independently of the implementation, so these tests
also pin the format down: a file it writes must verify, and a file with one thing wrong must
fail for exactly that reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import struct
import tracemalloc
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from replikv.invariants import InvariantViolation
from replikv.state import KVState
from replikv.storage import snapshot as snapshot_module
from replikv.storage.errors import StorageError
from replikv.storage.snapshot import (
    CHUNK_BYTES_MAX,
    ITEM_HASH,
    ITEM_HASH_MORE,
    ITEM_SET,
    ITEM_SET_CHUNK_BYTES_MAX,
    ITEM_SET_MORE,
    ITEM_STRING,
    ITEM_ZSET,
    ITEM_ZSET_MORE,
    RECORD_BYTES_MAX,
    CorruptSnapshotError,
    SnapshotInfo,
    SnapshotStore,
    SnapshotWriter,
    iter_snapshot,
    open_for_sending,
    read_chunk,
    read_manifest,
    verify_snapshot,
)

from .fsync_recorder import record_fsyncs

T0 = 1_000_000
MANIFEST = {
    "index": 42,
    "term": 3,
    "created_ms": 1_700_000_000_000,
    "node_id": "n1",
    "cluster_id": "cluster-a",
    "replication_mode": "passive",
    "extra": {"members": {"n1": "10.0.0.1:7000", "n2": "10.0.0.2:7000"}},
}
FINAL_NAME = "snapshot-00000000000000000042-00000000000000000003.rkvsnap"


# ---- an independent writer and reader of the format ----


def encode_record(payload_object: object) -> bytes:
    payload = msgpack.packb(payload_object, use_bin_type=True)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def craft(
    path: Path,
    records: list[object],
    *,
    header: bytes = b"RKVSNAP\x01",
    trailer: dict | None = None,
    after: bytes = b"",
) -> Path:
    """Write `records` (manifest first) as a snapshot file, with a correct trailer updated by
    `trailer`'s entries, then `after`."""
    data = header + b"".join(encode_record(record) for record in records)
    batches = [record for record in records if isinstance(record, list) and record[0] == 1]
    correct = {
        "key_count": sum(
            item[1] in (ITEM_STRING, ITEM_SET, ITEM_HASH) for batch in batches
            for item in batch[1]
        ),
        "record_count": len(records),
        "data_bytes": sum(len(msgpack.packb(batch, use_bin_type=True)) for batch in batches),
        "sha256": hashlib.sha256(data).digest(),
        "state_digest": None,
    }
    path.write_bytes(data + encode_record([3, {**correct, **(trailer or {})}]) + after)
    return path


def record_extents(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of a well-formed snapshot file's bytes."""
    assert data[:8] == b"RKVSNAP\x01"
    extents = []
    offset = 8
    while offset < len(data):
        length, _ = struct.unpack_from("<II", data, offset)
        extents.append((offset, offset + 8 + length))
        offset += 8 + length
    assert offset == len(data)
    return extents


def decode_records(data: bytes) -> list:
    return [msgpack.unpackb(data[start + 8 : end], raw=False) for start, end in record_extents(data)]


def manifest_record() -> list:
    return [0, {"format": 1, **MANIFEST}]


ITEMS = [[b"a", ITEM_STRING, b"1", None], [b"s", ITEM_SET, [b"x", b"y"], T0]]


# ---- states and snapshots to work on ----


def sample_state(keys: int = 300) -> KVState:
    state = KVState()
    for i in range(keys):
        state.apply_command([b"SET", b"key%d" % i, b"value-%d" % i], T0)
    for i in range(0, keys, 7):
        state.apply_command([b"PEXPIRE", b"key%d" % i, b"%d" % (i + 1)], T0)
    for i in range(20):
        state.apply_command([b"SADD", b"set%d" % i, *[b"m%d" % j for j in range(i * 10 + 1)]], T0)
    state.apply_command([b"SPOP", b"set19", b"40"], T0, seed=9)
    for i in range(10):
        state.apply_command([b"HSET", b"hash%d" % i, *[b"%s%d" % (p, j) for j in range(i * 30 + 1)
                                                       for p in (b"f", b"v")]], T0)
    state.apply_command([b"HDEL", b"hash9", *[b"f%d" % j for j in range(0, 271, 3)]], T0)
    state.apply_command([b"PEXPIRE", b"hash3", b"5000"], T0)
    return state


def write_snapshot(
    directory: Path,
    state: KVState,
    manifest: dict = MANIFEST,
    sections: dict[str, bytes] | None = None,
    max_items: int = 50,
) -> SnapshotInfo:
    cursor = state.begin_snapshot()
    with SnapshotWriter(directory, manifest) as writer:
        while (batch := cursor.next_batch(max_items)) is not None:
            writer.add_batch(batch)
        for name, data in (sections or {}).items():
            writer.add_section(name, data)
        return writer.finish(state_digest=cursor.state_digest())


def restore(path: Path) -> tuple[KVState, dict[str, bytes], SnapshotInfo]:
    """What a node does: build a fresh state from the file, usable only after the end event."""
    state = KVState()
    sections: dict[str, bytes] = {}
    end = None
    for event in iter_snapshot(path):
        if event[0] == "batch":
            state.restore_records(event[1])
        elif event[0] == "section":
            sections[event[1]] = event[2]
        else:
            end = event[1]
    assert end is not None
    return state, sections, end


class SampleBytes(bytes):
    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing example
        return f"<a sample snapshot of {len(self)} bytes>"


@pytest.fixture(scope="module")
def sample_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("sample")
    info = write_snapshot(directory, sample_state(60), sections={"sessions": b"s" * 50})
    return SampleBytes(info.path.read_bytes())


# ---- round trips ----


def test_a_state_changing_while_written_round_trips_as_it_was_at_begin(tmp_path: Path) -> None:
    state = sample_state()
    expected = state.digest()
    expected_items = list(state.items())
    cursor = state.begin_snapshot()
    rng = random.Random(4)
    with SnapshotWriter(tmp_path, MANIFEST) as writer:
        while (batch := cursor.next_batch(16)) is not None:
            writer.add_batch(batch)
            key = b"key%d" % rng.randrange(300)  # the node keeps applying entries meanwhile
            state.apply_command(rng.choice([[b"DEL", key], [b"SADD", b"set5", key],
                                            [b"HSET", b"hash5", key, b"v"]]), T0)
        writer.add_section("sessions", b"\x00session table\xff")
        writer.add_section("membership", b"n1,n2,n3")
        info = writer.finish(state_digest=cursor.state_digest())

    assert info.path == tmp_path / FINAL_NAME
    assert sorted(os.listdir(tmp_path)) == [FINAL_NAME]  # the temp file became the snapshot
    assert (info.index, info.term, info.key_count) == (42, 3, 330)
    assert info.size_bytes == info.path.stat().st_size
    assert info.state_digest == expected != state.digest()

    restored, sections, end = restore(info.path)
    assert restored.digest() == expected
    assert list(restored.items()) == expected_items
    # set members and hash fields at their positions
    assert [list(v.items()) if isinstance(v, dict) else v for _, v, _ in restored.items()] == \
        [list(v.items()) if isinstance(v, dict) else v for _, v, _ in expected_items]
    assert sections == {"sessions": b"\x00session table\xff", "membership": b"n1,n2,n3"}
    assert list(sections) == ["sessions", "membership"]  # in file order
    assert end == verify_snapshot(info.path) == info
    assert end.manifest == {"format": 1, **MANIFEST}


def test_read_manifest_reads_only_the_start(tmp_path: Path) -> None:
    info = write_snapshot(tmp_path, sample_state())
    data = info.path.read_bytes()
    damaged = tmp_path / "damaged.rkvsnap"
    start, _ = record_extents(data)[1]
    damaged.write_bytes(data[: start + 20])  # cut inside the first batch
    manifest_only = read_manifest(damaged)
    assert (manifest_only.index, manifest_only.term) == (42, 3)
    assert manifest_only.key_count is None and manifest_only.state_digest is None
    assert manifest_only.manifest == {"format": 1, **MANIFEST}
    with pytest.raises(CorruptSnapshotError, match="truncated"):
        verify_snapshot(damaged)


def test_an_empty_state_and_no_sections(tmp_path: Path) -> None:
    info = write_snapshot(tmp_path, KVState())
    assert info.key_count == 0
    state, sections, _ = restore(info.path)
    assert state.digest() == KVState().digest() == info.state_digest
    assert sections == {}
    assert [record[0] for record in decode_records(info.path.read_bytes())] == [0, 3]


def test_a_set_bigger_than_one_record_is_split_and_restored_in_order(tmp_path: Path) -> None:
    state = KVState()
    members = [b"%04d" % i + b"m" * 400 for i in range(6000)]  # 2.4 MB of members
    random.Random(2).shuffle(members)
    state.apply_command([b"SADD", b"big", *members], T0)
    state.apply_command([b"SPOP", b"big", b"50"], T0, seed=1)
    info = write_snapshot(tmp_path, state, max_items=2)
    items = [item for record in decode_records(info.path.read_bytes()) if record[0] == 1
             for item in record[1]]  # fmt: skip
    per_item = ITEM_SET_CHUNK_BYTES_MAX // (404 + 5)  # members of 404 bytes, 5 of framing
    assert [item[1] for item in items] == [ITEM_SET] + [ITEM_SET_MORE] * (5950 // per_item)
    assert info.key_count == 1
    restored, _, _ = restore(info.path)
    assert list(restored.items()) == list(state.items())


def test_a_hash_bigger_than_one_record_is_split_and_restored_in_order(tmp_path: Path) -> None:
    state = KVState()
    fields = [b"%04d" % i + b"f" * 200 for i in range(6000)]
    random.Random(2).shuffle(fields)
    state.apply_command([b"HSET", b"big", *[x for f in fields for x in (f, f[:4] + b"v" * 196)]],
                        T0)
    state.apply_command([b"HDEL", b"big", *fields[:50]], T0)
    info = write_snapshot(tmp_path, state, max_items=2)
    items = [item for record in decode_records(info.path.read_bytes()) if record[0] == 1
             for item in record[1]]  # fmt: skip
    per_item = ITEM_SET_CHUNK_BYTES_MAX // (204 + 5 + 200 + 5)  # a field and its value
    assert [item[1] for item in items] == [ITEM_HASH] + [ITEM_HASH_MORE] * (5950 // per_item)
    assert all(len(item[2]) % 2 == 0 for item in items)
    assert info.key_count == 1
    restored, _, _ = restore(info.path)
    assert restored.digest() == state.digest() == info.state_digest
    assert restored.execute_read([b"HKEYS", b"big"], T0) == state.execute_read(
        [b"HKEYS", b"big"], T0)  # the fields at their positions


def test_a_zset_bigger_than_one_record_is_split_and_restored_exactly(tmp_path: Path) -> None:
    state = KVState()
    scores = [b"-0", b"inf", b"-inf", b"0.1", b"1e-300", b"-2.5", b"9007199254740993"]
    members = [b"%04d" % i + b"z" * 200 for i in range(6000)]
    state.apply_command([b"ZADD", b"big", *[x for i, m in enumerate(members)
                                            for x in (scores[i % 7], m)]], T0)
    state.apply_command([b"ZADD", b"small", b"-0", b"a", b"inf", b"b"], T0)
    state.apply_command([b"PEXPIRE", b"small", b"5000"], T0)
    info = write_snapshot(tmp_path, state, max_items=2)
    items = [item for record in decode_records(info.path.read_bytes()) if record[0] == 1
             for item in record[1]]  # fmt: skip
    per_item = ITEM_SET_CHUNK_BYTES_MAX // (204 + 5 + 9 + 5)  # a member and its score
    zset_items = [item for item in items if item[0] == b"big"]
    assert [item[1] for item in zset_items] == [ITEM_ZSET] + [ITEM_ZSET_MORE] * (6000 // per_item)
    assert all(type(score) is float for item in zset_items for score in item[2][1::2])
    assert info.key_count == 2
    restored, _, _ = restore(info.path)
    assert restored.digest() == state.digest() == info.state_digest
    assert list(restored.items()) == list(state.items())
    assert restored.execute_read([b"ZRANGE", b"big", b"0", b"2", b"WITHSCORES"], T0) == [
        b"0002" + b"z" * 200, float("-inf"), b"0009" + b"z" * 200, float("-inf"),
        b"0016" + b"z" * 200, float("-inf")]


def test_the_format_on_disk(tmp_path: Path) -> None:
    """Pinned by an independent reader: header, manifest first, batches, sections, trailer
    with the SHA-256 of everything before it."""
    state = KVState.from_records(ITEMS)
    info = write_snapshot(tmp_path, state, sections={"sessions": b"blob"})
    data = info.path.read_bytes()
    assert data[:8] == b"RKVSNAP\x01"
    records = decode_records(data)
    assert records[0] == manifest_record()
    assert records[1] == [1, ITEMS]
    assert records[2] == [2, "sessions", b"blob"]
    trailer_start = record_extents(data)[-1][0]
    assert records[3] == [
        3,
        {
            "key_count": 2,
            "record_count": 3,
            "data_bytes": len(msgpack.packb([1, ITEMS], use_bin_type=True)),
            "sha256": hashlib.sha256(data[:trailer_start]).digest(),
            "state_digest": state.digest(),
        },
    ]
    # And a file written by the independent writer reads back.
    crafted = craft(tmp_path / "crafted", [manifest_record(), [1, ITEMS], [2, "x", b""]])
    assert verify_snapshot(crafted).key_count == 2


def test_readers_ignore_manifest_keys_they_do_not_know(tmp_path: Path) -> None:
    path = craft(tmp_path / "f", [[0, {**manifest_record()[1], "added_later": [1, 2]}]])
    assert verify_snapshot(path).manifest["added_later"] == [1, 2]


# ---- the writer ----


def test_finish_fsyncs_the_file_before_naming_it_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[str] = []
    real_replace = os.replace

    def recording_replace(source: object, target: object) -> None:
        renames.append(str(target))
        real_replace(source, target)  # type: ignore[arg-type]

    fsyncs = record_fsyncs(monkeypatch)
    monkeypatch.setattr(os, "replace", recording_replace)
    writer = SnapshotWriter(tmp_path, MANIFEST)
    writer.add_batch(ITEMS)
    fsyncs.clear()
    info = writer.finish()
    assert renames == [str(info.path)]
    assert fsyncs == [str(writer.temp_path), str(tmp_path)]


def test_leaving_the_writer_without_finishing_removes_the_temp_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), SnapshotWriter(tmp_path, MANIFEST) as writer:
        writer.add_batch(ITEMS)
        assert writer.temp_path.exists() and writer.temp_path.suffix == ".tmp"
        raise RuntimeError("the node is stopping")
    assert os.listdir(tmp_path) == []
    with SnapshotWriter(tmp_path, MANIFEST):
        pass  # no finish: nothing left either
    assert os.listdir(tmp_path) == []
    writer = SnapshotWriter(tmp_path, MANIFEST)
    writer.abort()
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="already finished or aborted"):
        writer.add_batch(ITEMS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": -1}, "'index' is -1"),
        ({"term": "3"}, "'term' is '3'"),
        ({"created_ms": True}, "'created_ms' is True"),
        ({"node_id": 1}, "'node_id' is 1"),
        ({"replication_mode": None}, "'replication_mode' is None"),
        ({"extra": []}, "'extra' is not a map"),
        ({"extra": {"x": object()}}, "not msgpack-able"),
        ({"surprise": 1}, "unknown snapshot manifest keys: surprise"),
        ({"format": 2}, "writes snapshot format 1 only"),
    ],
)
def test_the_writer_refuses_a_bad_manifest(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SnapshotWriter(tmp_path, {**MANIFEST, **change})
    assert os.listdir(tmp_path) == []


def test_the_writer_keeps_the_record_order_and_checks_items(tmp_path: Path) -> None:
    writer = SnapshotWriter(tmp_path, {k: v for k, v in MANIFEST.items() if k != "extra"})
    writer.add_batch([])  # writes nothing
    writer.add_batch(ITEMS)
    with pytest.raises(InvariantViolation, match="item 0 of the batch is a set whose members"):
        writer.add_batch([[b"k", ITEM_SET, [], None]])
    with pytest.raises(InvariantViolation, match="continues the set b'k'"):
        writer.add_batch([[b"k", ITEM_SET_MORE, [b"m"], None]])
    writer.add_section("a", b"")
    with pytest.raises(ValueError, match="before the first section"):
        writer.add_batch(ITEMS)
    with pytest.raises(ValueError, match="added twice"):
        writer.add_section("a", b"again")
    with pytest.raises(ValueError, match="not a non-empty str"):
        writer.add_section("", b"")
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        writer.add_section("n" * 256, b"")
    info = writer.finish()
    assert info.manifest["extra"] == {} and verify_snapshot(info.path).key_count == 2


def test_a_record_over_the_limit_is_refused_on_write_and_on_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_module, "RECORD_BYTES_MAX", 1000)
    writer = SnapshotWriter(tmp_path, MANIFEST)
    with pytest.raises(InvariantViolation, match="exceeds RECORD_BYTES_MAX"):
        writer.add_batch([[b"k", ITEM_STRING, b"v" * 1000, None]])
    writer.abort()
    path = craft(tmp_path / "f", [manifest_record(), [1, [[b"k", ITEM_STRING, b"v" * 1000, None]]]])
    with pytest.raises(CorruptSnapshotError, match="exceeds the maximum record size of 1000"):
        verify_snapshot(path)


def test_the_largest_legitimate_record_is_under_the_limit() -> None:
    from replikv.commands.strings import STRING_BYTES_MAX
    from replikv.limits import DEFAULT_LIMITS

    assert STRING_BYTES_MAX + DEFAULT_LIMITS.max_bulk_bytes + 1024 < RECORD_BYTES_MAX < 2**32


# ---- damage: every kind is a CorruptSnapshotError saying what and where ----


def expect_corrupt(path: Path, offset: int, reason: str) -> CorruptSnapshotError:
    with pytest.raises(CorruptSnapshotError) as caught:
        verify_snapshot(path)
    error = caught.value
    assert isinstance(error, StorageError)
    assert error.path == path and error.offset == offset, (error.offset, error.reason)
    assert reason in error.reason, error.reason
    assert str(path) in str(error) and f"byte offset {offset}" in str(error)
    # The streaming reader fails the same way (after handing out what came before).
    with pytest.raises(CorruptSnapshotError) as again:
        for _ in iter_snapshot(path):
            pass
    assert (again.value.offset, again.value.reason) == (offset, error.reason)
    return error


def test_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.rkvsnap"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    expect_corrupt(path, 0, "not a replikv snapshot: it starts with b'\\x89PNG\\r\\n\\x1a'")
    path.write_bytes(b"RKVWAL\x01\x00" + bytes(100))  # one of ours, but not a snapshot
    expect_corrupt(path, 0, "not a replikv snapshot")
    with pytest.raises(CorruptSnapshotError, match="not a replikv snapshot"):
        read_manifest(path)


def test_a_newer_format(tmp_path: Path) -> None:
    path = craft(tmp_path / "f", [manifest_record()], header=b"RKVSNAP\x02")
    expect_corrupt(path, 7, "written by a newer replikv: format 2, this version reads up to 1")
    with pytest.raises(CorruptSnapshotError, match="newer replikv"):
        read_manifest(path)
    craft(path, [manifest_record()], header=b"RKVSNAP\x00")
    expect_corrupt(path, 7, "unknown snapshot format version 0")


def test_truncation_anywhere(tmp_path: Path, sample_bytes: bytes) -> None:
    path = tmp_path / "cut"
    path.write_bytes(b"")
    expect_corrupt(path, 0, "the file is empty")
    path.write_bytes(sample_bytes[:5])
    expect_corrupt(path, 0, "truncated: the file is 5 bytes, shorter than its header")
    for start, end in record_extents(sample_bytes):
        path.write_bytes(sample_bytes[:start])
        expect_corrupt(path, start, "the file ends here, before its trailer record")
        path.write_bytes(sample_bytes[: start + 3])
        expect_corrupt(path, start, "truncated: the file ends inside a record header")
        path.write_bytes(sample_bytes[: end - 1])
        expect_corrupt(path, start, f"claims {end - start - 8} payload bytes but only")


def test_a_crc_mismatch(tmp_path: Path, sample_bytes: bytes) -> None:
    start, end = record_extents(sample_bytes)[2]
    data = bytearray(sample_bytes)
    data[(start + end) // 2] ^= 0x10
    path = tmp_path / "f"
    path.write_bytes(data)
    expect_corrupt(path, start, "CRC mismatch: the record header says")


@pytest.mark.parametrize(
    ("records", "index", "reason"),
    [
        ([[1, ITEMS]], 0, "the first record is not the manifest"),
        ([[0, {**MANIFEST, "format": 2}]], 0, "bad manifest: the manifest's format 2 differs"),
        ([[0, {**MANIFEST, "format": 1, "index": None}]], 0, "the manifest's 'index' is None"),
        ([{"not": "a list"}], 0, "the payload is not [record type, ...]"),
        ([[9]], 0, "unknown record type 9"),
        ([manifest_record(), [1, []]], 1, "does not hold a non-empty list of items"),
        ([manifest_record(), [1, [[b"k", 99, b"v", None]]]], 1, "has an unknown kind 99"),
        ([manifest_record(), [1, [[b"k", True, b"v", None]]]], 1, "kind True that is not an int"),
        ([manifest_record(), [1, [["k", 0, b"v", None]]]], 1, "a key that is not bytes"),
        ([manifest_record(), [1, [[b"k", 0, "v", None]]]], 1, "a string whose value is not bytes"),
        ([manifest_record(), [1, [[b"k", 0, b"v", 2**63]]]], 1, "that is not None or an int64"),
        ([manifest_record(), [1, [[b"k", 1, [b"m", 5], None]]]], 1, "a set whose members are not"),
        ([manifest_record(), [1, [[b"k", 2, [b"m"], None]]]], 1, "continues the set b'k', which"),
        ([manifest_record(), [1, [[b"k", 1, [b"m"], 1], [b"j", 2, [b"n"], None]]]], 1,
         "item 1 of the batch continues the set b'j'"),
        ([manifest_record(), [1, [[b"k", 1, [b"m"], 1], [b"k", 2, [b"n"], 1]]]], 1,
         "repeats an expiry"),
        ([manifest_record(), [1, [[b"k", 3, [b"f"], None]]]], 1, "a hash whose fields are not"),
        ([manifest_record(), [1, [[b"k", 3, [b"f", 1], None]]]], 1, "a hash whose fields are"),
        ([manifest_record(), [1, [[b"k", 3, [], None]]]], 1, "a hash whose fields are not"),
        ([manifest_record(), [1, [[b"k", 4, [b"f", b"v"], None]]]], 1,
         "continues the hash b'k', which"),
        ([manifest_record(), [1, [[b"k", 1, [b"m"], None], [b"k", 4, [b"f", b"v"], None]]]], 1,
         "item 1 of the batch continues the hash b'k'"),
        ([manifest_record(), [1, [[b"k", 3, [b"f", b"v"], None], [b"k", 2, [b"m"], None]]]], 1,
         "item 1 of the batch continues the set b'k'"),
        ([manifest_record(), [1, [[b"k", 3, [b"f", b"v"], 1], [b"k", 4, [b"g"], None]]]], 1,
         "continues a hash with fields that are not"),
        ([manifest_record(), [1, [[b"k", 3, [b"f", b"v"], 1], [b"k", 4, [b"g", b"w"], 1]]]], 1,
         "continues a hash and repeats an expiry"),
        ([manifest_record(), [1, [[b"k", 7, [b"m"], None]]]], 1,
         "a sorted set whose members are not"),
        ([manifest_record(), [1, [[b"k", 7, [b"m", 1], None]]]], 1,
         "a sorted set whose members are not"),
        ([manifest_record(), [1, [[b"k", 7, [b"m", float("nan")], None]]]], 1,
         "each member followed by its score (a float, not NaN)"),
        ([manifest_record(), [1, [[b"k", 7, [1.0, b"m"], None]]]], 1,
         "a sorted set whose members are not"),
        ([manifest_record(), [1, [[b"k", 8, [b"m", 1.0], None]]]], 1,
         "continues the sorted set b'k', which"),
        ([manifest_record(), [1, [[b"k", 3, [b"f", b"v"], None], [b"k", 8, [b"m", 1.0], None]]]],
         1, "item 1 of the batch continues the sorted set b'k'"),
        ([manifest_record(), [1, [[b"k", 7, [b"m", 1.0], 1], [b"k", 8, [b"n", 2.0], 1]]]], 1,
         "continues a sorted set and repeats an expiry"),
        ([manifest_record(), [1, [[b"k", 0, b"v"]]]], 1, "is not a list [key, kind, value"),
        ([manifest_record(), [2, "s", b""], [1, ITEMS]], 2, "bad record order: a batch after"),
        ([manifest_record(), [2, "s", b""], [2, "s", b""]], 2, "section 's' appears twice"),
        ([manifest_record(), [2, b"s", b""]], 1, "a section name b's' is not a non-empty str"),
        ([manifest_record(), [2, "s", "text"]], 1, "the data of section 's' is not bytes"),
        ([manifest_record(), [2, "s"]], 1, "bad section record: not [2, name, data]"),
        ([manifest_record(), manifest_record()], 1, "bad record order: a second manifest"),
    ],
)  # fmt: skip
def test_bad_record_shapes(tmp_path: Path, records: list, index: int, reason: str) -> None:
    path = craft(tmp_path / "f", records)
    offsets = [start for start, _ in record_extents(path.read_bytes())]
    expect_corrupt(path, offsets[index], reason)


def test_a_payload_that_is_not_msgpack(tmp_path: Path) -> None:
    path = craft(tmp_path / "f", [manifest_record()])
    payload = b"\xc1"  # never used in msgpack
    data = path.read_bytes()
    start = record_extents(data)[-1][0]
    path.write_bytes(data[:start] + struct.pack("<II", 1, zlib.crc32(payload)) + payload)
    expect_corrupt(path, start, "the payload is not valid msgpack")


def test_records_lost_or_reordered_fail_the_trailer_checksum(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    extents = record_extents(sample_bytes)
    (a_start, a_end), (b_start, b_end) = extents[1], extents[2]
    swapped = (
        sample_bytes[:a_start]
        + sample_bytes[b_start:b_end]
        + sample_bytes[a_start:a_end]
        + sample_bytes[b_end:]
    )
    path = tmp_path / "swapped"
    path.write_bytes(swapped)
    trailer_start = extents[-1][0]
    expect_corrupt(path, trailer_start, "trailer checksum mismatch: the SHA-256 of the")
    dropped = sample_bytes[:a_start] + sample_bytes[a_end:]
    path.write_bytes(dropped)
    expect_corrupt(path, trailer_start - (a_end - a_start), "trailer checksum mismatch")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"key_count": 3}, "key count mismatch: the trailer says 3 keys, the batches hold 2"),
        ({"record_count": 5}, "record_count mismatch: the trailer says 5, the file has 2"),
        ({"data_bytes": 1}, "data_bytes mismatch: the trailer says 1"),
        ({"sha256": b"short"}, "bad trailer record: the trailer's 'sha256' is not 32 bytes"),
        ({"key_count": -1}, "the trailer's 'key_count' is -1"),
        ({"state_digest": 5}, "'state_digest' is not a str or None"),
    ],
)
def test_a_trailer_that_disagrees(tmp_path: Path, change: dict, reason: str) -> None:
    path = craft(tmp_path / "f", [manifest_record(), [1, ITEMS]], trailer=change)
    trailer_start = record_extents(path.read_bytes())[-1][0]
    expect_corrupt(path, trailer_start, reason)


def test_bytes_after_the_trailer(tmp_path: Path) -> None:
    path = craft(tmp_path / "f", [manifest_record(), [1, ITEMS]], after=b"\x00" * 7)
    size = path.stat().st_size
    expect_corrupt(path, size - 7, "7 bytes of unknown data after the trailer")


def test_a_damaged_length_is_reported_without_allocating_it(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    start, _ = record_extents(sample_bytes)[1]
    path = tmp_path / "f"
    for length in (RECORD_BYTES_MAX + 1, 0xFFFFFFFF, RECORD_BYTES_MAX):
        data = bytearray(sample_bytes)
        struct.pack_into("<I", data, start, length)
        path.write_bytes(data)
        tracemalloc.start()
        try:
            with pytest.raises(CorruptSnapshotError) as caught:
                verify_snapshot(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024
        expected = "exceeds the maximum record size" if length > RECORD_BYTES_MAX else "truncated"
        assert caught.value.offset == start and expected in caught.value.reason
    data = bytearray(sample_bytes)
    struct.pack_into("<I", data, start, 0)
    path.write_bytes(data)
    expect_corrupt(path, start, "bad record header: a payload length of 0")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.none() | st.integers(0),
)
def test_any_damage_is_a_corrupt_snapshot_error_and_nothing_else(
    tmp_path: Path, sample_bytes: bytes, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(sample_bytes)
    for position, xor in flips:
        data[position % len(data)] ^= xor
    if cut is not None:
        data = data[: cut % len(data)]
    assume(data != sample_bytes)  # two flips of one byte may cancel out
    path = tmp_path / "damaged.rkvsnap"
    path.write_bytes(data)
    with pytest.raises(CorruptSnapshotError):
        verify_snapshot(path)
    with pytest.raises(CorruptSnapshotError):
        for _ in iter_snapshot(path):
            pass
    try:
        read_manifest(path)  # may well succeed: the damage can lie past the manifest
    except CorruptSnapshotError:
        pass


# ---- the store: latest, retention, debris ----


def manifest_at(index: int, term: int) -> dict:
    return {**MANIFEST, "index": index, "term": term}


def test_latest_list_and_retention(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    assert store.latest() is None and store.list() == []
    state = KVState.from_records(ITEMS)
    for index, term in [(9, 1), (100, 2), (15, 1), (100, 3), (1000, 3)]:
        cursor = state.begin_snapshot()
        with store.writer(manifest_at(index, term)) as writer:
            while (batch := cursor.next_batch(10)) is not None:
                writer.add_batch(batch)
            writer.finish()
    assert [(s.index, s.term) for s in store.list()] == [
        (9, 1), (15, 1), (100, 2), (100, 3), (1000, 3),
    ]  # fmt: skip
    latest = store.latest()
    assert latest is not None and (latest.index, latest.term) == (1000, 3)
    removed = store.remove_older_than(keep=2)
    assert [(s.index, s.term) for s in removed] == [(9, 1), (15, 1), (100, 2)]
    assert [(s.index, s.term) for s in store.list()] == [(100, 3), (1000, 3)]
    assert store.remove_older_than(keep=5) == []
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
        store.remove_older_than(keep=0)


def test_the_store_skips_files_it_cannot_trust(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path)
    good = write_snapshot(tmp_path, KVState.from_records(ITEMS), manifest_at(5, 1))
    (tmp_path / "snapshot-00000000000000000009-00000000000000000001.rkvsnap").write_bytes(b"junk")
    misnamed = tmp_path / "snapshot-00000000000000000008-00000000000000000001.rkvsnap"
    misnamed.write_bytes(good.path.read_bytes())  # its manifest says index 5
    (tmp_path / "notes.txt").write_text("not a snapshot")
    caplog.set_level(logging.WARNING, logger="replikv.storage")
    assert [s.path for s in store.list()] == [good.path]
    assert store.latest() == read_manifest(good.path)
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "not a replikv snapshot" in warnings and "manifest says index 5 term 1" in warnings
    assert store.remove_older_than(keep=1) == []  # damaged files stay, as evidence


def test_startup_removes_temp_files_of_interrupted_writers(tmp_path: Path) -> None:
    SnapshotStore(tmp_path)
    interrupted = SnapshotWriter(tmp_path, MANIFEST)
    interrupted.add_batch(ITEMS)
    interrupted._flush()  # the process dies here: the temp file stays behind
    partial = tmp_path / "recv-00000000000000000001-00000000000000000001.partial"
    partial.write_bytes(b"RKVSNAP\x01")
    kept = write_snapshot(tmp_path, KVState.from_records(ITEMS))
    someone_elses = tmp_path / "hardstate.tmp"
    someone_elses.write_bytes(b"")
    assert interrupted.temp_path.exists()
    SnapshotStore(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([kept.path.name, partial.name, someone_elses.name])
    os.close(interrupted._fd)  # type: ignore[arg-type]


# ---- receiving from a peer, and sending ----


def chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(offset, data[offset : offset + size]) for offset in range(0, len(data), size)]


def test_receive_in_chunks(tmp_path: Path, sample_bytes: bytes) -> None:
    store = SnapshotStore(tmp_path)
    receiver = store.begin_receive(42, 3, len(sample_bytes))
    assert receiver.offset == 0
    for offset, chunk in chunks(sample_bytes, 1000):
        receiver.write(offset, chunk)
    info = receiver.finish()
    assert info.path == tmp_path / FINAL_NAME and info.key_count == verify_snapshot(info.path).key_count
    assert os.listdir(tmp_path) == [FINAL_NAME]
    assert info.path.read_bytes() == sample_bytes
    assert store.latest() == read_manifest(info.path)


def test_receive_resumes_after_a_crash(tmp_path: Path, sample_bytes: bytes) -> None:
    store = SnapshotStore(tmp_path)
    receiver = store.begin_receive(42, 3, len(sample_bytes))
    parts = chunks(sample_bytes, 700)
    for offset, chunk in parts[:4]:
        receiver.write(offset, chunk)
    os.close(receiver._fd)  # type: ignore[arg-type]  # the process dies: no close, no fsync
    receiver._fd = None

    store = SnapshotStore(tmp_path)  # a restart
    resumed = store.begin_receive(42, 3, len(sample_bytes))
    assert resumed.offset == 4 * 700
    with pytest.raises(ValueError, match="a snapshot chunk at offset 0, expected 2800"):
        resumed.write(0, sample_bytes[:700])
    for offset, chunk in parts[4:]:
        resumed.write(offset, chunk)
    assert resumed.finish().path.read_bytes() == sample_bytes


def test_a_chunk_retried_after_a_short_write_lands_where_it_belongs(
    tmp_path: Path, sample_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: a chunk's write stops part way and fails; once there is room the same chunk
    is written again. (With writes at the file position, the retry landed after the partial
    bytes, and the finished snapshot failed its CRC: the transfer started over from zero.)"""
    store = SnapshotStore(tmp_path)
    receiver = store.begin_receive(42, 3, len(sample_bytes))
    parts = chunks(sample_bytes, 700)
    receiver.write(*parts[0])
    real_pwrite, real_write = os.pwrite, os.write

    def full_disk(fd: int, data: bytes, *offset: int) -> int:
        monkeypatch.setattr(os, "pwrite", real_pwrite)
        monkeypatch.setattr(os, "write", real_write)
        half = bytes(data[: len(data) // 2])
        written = real_pwrite(fd, half, *offset) if offset else real_write(fd, half)
        assert written == len(half)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        receiver.write(*parts[1])
    assert receiver.offset == 700
    for offset, chunk in parts[1:]:
        receiver.write(offset, chunk)
    assert receiver.finish().path.read_bytes() == sample_bytes


def test_a_receive_of_another_snapshot_discards_the_old_partial(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    store = SnapshotStore(tmp_path)
    with store.begin_receive(41, 3, len(sample_bytes)) as old:
        old.write(0, sample_bytes[:100])
    assert os.listdir(tmp_path) == ["recv-00000000000000000041-00000000000000000003.partial"]
    with store.begin_receive(42, 3, len(sample_bytes)) as new:
        assert new.offset == 0
        new.write(0, sample_bytes[:10])
    assert os.listdir(tmp_path) == ["recv-00000000000000000042-00000000000000000003.partial"]


def test_a_bad_chunk_is_rejected_and_leaves_no_snapshot(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    store = SnapshotStore(tmp_path)
    receiver = store.begin_receive(42, 3, len(sample_bytes))
    for offset, chunk in chunks(sample_bytes, 1000):
        if offset == 2000:
            chunk = chunk[:500] + bytes([chunk[500] ^ 1]) + chunk[501:]
        receiver.write(offset, chunk)
    with pytest.raises(CorruptSnapshotError, match="CRC mismatch"):
        receiver.finish()
    assert os.listdir(tmp_path) == []
    assert store.latest() is None


def test_a_snapshot_other_than_the_one_announced_is_rejected(
    tmp_path: Path, sample_bytes: bytes
) -> None:
    store = SnapshotStore(tmp_path)
    receiver = store.begin_receive(43, 3, len(sample_bytes))
    receiver.write(0, sample_bytes)
    with pytest.raises(CorruptSnapshotError, match="announced was index 43 term 3"):
        receiver.finish()
    assert os.listdir(tmp_path) == []


def test_receiver_misuse(tmp_path: Path, sample_bytes: bytes) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError, match="cannot be valid"):
        store.begin_receive(1, 1, 8)
    with pytest.raises(ValueError, match="index must be an int >= 0"):
        store.begin_receive(-1, 1, 100)
    receiver = store.begin_receive(42, 3, len(sample_bytes))
    with pytest.raises(ValueError, match="passes the announced size"):
        receiver.write(0, sample_bytes + b"x")
    with pytest.raises(ValueError, match="exceeds"):
        receiver.write(0, bytes(CHUNK_BYTES_MAX + 1))
    receiver.write(0, sample_bytes[:50])
    with pytest.raises(ValueError, match="only 50 of"):
        receiver.finish()  # the partial stays, for a resume
    receiver.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        receiver.write(50, b"x")


def test_a_partial_longer_than_announced_starts_over(tmp_path: Path, sample_bytes: bytes) -> None:
    store = SnapshotStore(tmp_path)
    (tmp_path / "recv-00000000000000000042-00000000000000000003.partial").write_bytes(
        bytes(len(sample_bytes) + 1)
    )
    receiver = store.begin_receive(42, 3, len(sample_bytes))
    assert receiver.offset == 0
    receiver.write(0, sample_bytes)
    assert receiver.finish().path.read_bytes() == sample_bytes


def test_sending_survives_retention_removing_the_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    info = write_snapshot(tmp_path, sample_state(), manifest_at(1, 1))
    expected = info.path.read_bytes()
    with open_for_sending(info) as source:
        assert source.size_bytes == len(expected)
        first = source.read_chunk(0, 1000)
        write_snapshot(tmp_path, KVState(), manifest_at(2, 1))
        removed = store.remove_older_than(keep=1)
        assert [(s.index, s.term) for s in removed] == [(1, 1)] and not info.path.exists()
        rest = b""
        while part := source.read_chunk(1000 + len(rest), 4096):
            rest += part
    assert first + rest == expected
    other = store.latest()
    assert other is not None
    assert read_chunk(other.path, 0, 8) == b"RKVSNAP\x01"
    assert read_chunk(other.path, other.size_bytes, 10) == b""
    with pytest.raises(ValueError, match="a chunk size must be"):
        read_chunk(other.path, 0, CHUNK_BYTES_MAX + 1)


# ---- memory ----


def test_writing_and_verifying_use_bounded_memory(tmp_path: Path) -> None:
    """200,000 keys: the file is tens of megabytes, but neither writing (the state aside) nor
    verifying nor reading holds more than a few batches at a time."""
    state = KVState.from_records(
        [b"key:%08d" % i, ITEM_STRING, b"%08d" % i * 12, None] for i in range(200_000)
    )
    tracemalloc.start()
    try:
        info = write_snapshot(tmp_path, state, max_items=10_000)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        verified = verify_snapshot(info.path)
        _, verify_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        batches = sum(1 for event in iter_snapshot(info.path) if event[0] == "batch")
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verified.key_count == 200_000 and batches > 10
    size = info.size_bytes
    assert size > 20_000_000
    assert max(write_peak, verify_peak, read_peak) < size // 10, (write_peak, verify_peak, read_peak)
