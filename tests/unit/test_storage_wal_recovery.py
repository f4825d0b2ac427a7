"""Opening a write-ahead log after a crash or after disk damage.

A torn tail in the last segment (the last write was cut short) is discarded and truncated away;
everything else that fails a check stops the node with CorruptLogError naming file and offset.
The helpers below read the on-disk format independently of the implementation, so that these
tests also pin the format down.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import struct
import time
import zlib
from pathlib import Path

import msgpack
import pytest

from replikv.storage import CorruptLogError, WriteAheadLog
from replikv.storage import wal as wal_module

SEGMENT_HEADER = b"RKVWAL\x01\x00"


def batch(first_index: int, count: int, term: int = 1) -> list:
    return [
        (index, term, f"entry-{index}".encode())
        for index in range(first_index, first_index + count)
    ]


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def record_extents(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each record in a well-formed segment."""
    data = path.read_bytes()
    assert data[:8] == SEGMENT_HEADER
    extents = []
    offset = 8
    while offset < len(data):
        length, _ = struct.unpack_from("<II", data, offset)
        extents.append((offset, offset + 8 + length))
        offset += 8 + length
    assert offset == len(data)
    return extents


def encode_record(payload_object: object) -> bytes:
    payload = msgpack.packb(payload_object, use_bin_type=True)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def build_log(directory: Path, batches: list[list], segment_bytes: int = 10_000) -> None:
    wal, _ = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
    for entries in batches:
        wal.append(entries)
    wal.sync()
    wal.close()


def three_segments(directory: Path) -> list[list]:
    """A log of 3 segments, each holding 3 records of 2 entries; returns the batches."""
    batches = [batch(first_index, 2) for first_index in range(1, 19, 2)]
    wal, _ = WriteAheadLog.open(directory, segment_bytes=90)
    for entries in batches:
        wal.append(entries)
    wal.sync()
    wal.close()
    paths = segment_paths(directory)
    assert [len(record_extents(path)) for path in paths] == [3, 3, 3]
    return batches


def flatten(batches: list[list]) -> list:
    return [entry for entries in batches for entry in entries]


def assert_appends_work_after_recovery(directory: Path, expected: list) -> None:
    wal, entries = WriteAheadLog.open(directory)
    assert entries == expected
    next_index = expected[-1][0] + 1 if expected else 1
    wal.append(batch(next_index, 2, term=7))
    wal.sync()
    wal.close()
    assert WriteAheadLog.open(directory)[1] == expected + batch(next_index, 2, term=7)


# Torn tails -------------------------------------------------------------------------------------


def test_truncating_the_last_record_at_every_offset_is_recovered(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    batches = three_segments(pristine)
    last_segment = segment_paths(pristine)[-1]
    start, end = record_extents(last_segment)[-1]
    for cut in range(start, end):
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(pristine, directory)
        torn_segment = directory / last_segment.name
        os.truncate(torn_segment, cut)

        wal, entries = WriteAheadLog.open(directory)
        assert entries == flatten(batches[:-1]), f"cut at {cut}"
        assert wal.last_index == batches[-2][-1][0]
        wal.close()
        assert torn_segment.stat().st_size == start, "torn bytes must be truncated away"
        assert_appends_work_after_recovery(directory, flatten(batches[:-1]))


def test_torn_only_record_of_the_last_segment_removes_the_segment(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 30)], segment_bytes=100)
    build_log(tmp_path, [batch(31, 2)], segment_bytes=100)
    first, second = segment_paths(tmp_path)
    assert second.name == f"{31:020d}.wal"
    _, end = record_extents(second)[0]
    os.truncate(second, end - 3)

    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 30)
    wal.close()
    # An empty last segment would carry a name (31) the next batch might not match.
    assert segment_paths(tmp_path) == [first]
    assert_appends_work_after_recovery(tmp_path, batch(1, 30))


@pytest.mark.parametrize("kept_header_bytes", [0, 3, 7, 8])
def test_last_segment_torn_during_creation_is_removed(
    tmp_path: Path, kept_header_bytes: int
) -> None:
    build_log(tmp_path, [batch(1, 4)])
    (tmp_path / f"{5:020d}.wal").write_bytes(SEGMENT_HEADER[:kept_header_bytes])
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 4)
    wal.close()
    assert [path.name for path in segment_paths(tmp_path)] == [f"{1:020d}.wal"]
    assert_appends_work_after_recovery(tmp_path, batch(1, 4))


def test_last_segment_of_zeros_is_a_torn_creation(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 4)])
    (tmp_path / f"{5:020d}.wal").write_bytes(bytes(4096))
    assert WriteAheadLog.open(tmp_path)[1] == batch(1, 4)
    assert len(segment_paths(tmp_path)) == 1


def test_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    good_size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(bytes(4096))
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 4)
    wal.close()
    assert segment.stat().st_size == good_size
    assert_appends_work_after_recovery(tmp_path, batch(1, 4))


def test_last_record_overwritten_by_zeros_is_torn(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:start] + bytes(end - start + 512))
    assert WriteAheadLog.open(tmp_path)[1] == batch(1, 2)
    assert segment.stat().st_size == start


def test_bad_checksum_on_a_last_record_ending_at_eof_is_torn(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[-1]
    flip_byte(segment, end - 1)
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 2)
    wal.close()
    assert segment.stat().st_size == start


def test_length_running_past_eof_is_torn(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[-1]
    data = bytearray(segment.read_bytes())
    struct.pack_into("<I", data, start, end - start + 100)
    segment.write_bytes(bytes(data))
    assert WriteAheadLog.open(tmp_path)[1] == batch(1, 2)
    assert segment.stat().st_size == start


def test_length_over_the_limit_reaching_eof_is_torn(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    start, _ = record_extents(segment)[-1]
    data = bytearray(segment.read_bytes())
    struct.pack_into("<I", data, start, 0xFFFF_FFF0)
    segment.write_bytes(bytes(data))
    assert WriteAheadLog.open(tmp_path, max_record_bytes=4096)[1] == batch(1, 2)
    assert segment.stat().st_size == start


# Corruption: refuse to start --------------------------------------------------------------------


def assert_corrupt(directory: Path, path: Path, offset: int, reason: str, **open_kwargs) -> None:
    before = {p.name: p.read_bytes() for p in segment_paths(directory)}
    with pytest.raises(CorruptLogError) as caught:
        WriteAheadLog.open(directory, **open_kwargs)
    error = caught.value
    assert (error.path, error.offset) == (path, offset)
    assert reason in error.reason
    message = str(error)
    assert str(path) in message
    assert f"byte offset {offset}" in message
    assert "refuses to start" in message
    assert "other replicas" in message
    after = {p.name: p.read_bytes() for p in segment_paths(directory)}
    assert after == before, "a corrupt log must be left exactly as found, as evidence"


def test_flipped_byte_in_a_middle_record_of_the_last_segment(tmp_path: Path) -> None:
    three_segments(tmp_path)
    segment = segment_paths(tmp_path)[-1]
    start, end = record_extents(segment)[1]
    flip_byte(segment, end - 2)
    assert_corrupt(tmp_path, segment, start, "checksum mismatch")


def test_flipped_byte_in_a_header_of_a_middle_record(tmp_path: Path) -> None:
    three_segments(tmp_path)
    segment = segment_paths(tmp_path)[-1]
    start, _ = record_extents(segment)[1]
    flip_byte(segment, start + 5)  # inside the CRC field
    assert_corrupt(tmp_path, segment, start, "checksum mismatch")


def test_flipped_byte_in_the_last_record_of_a_non_last_segment(tmp_path: Path) -> None:
    three_segments(tmp_path)
    segment = segment_paths(tmp_path)[1]
    start, end = record_extents(segment)[-1]
    flip_byte(segment, end - 1)  # ends at that segment's EOF, but it is not the last segment
    assert_corrupt(tmp_path, segment, start, "only the last segment may end in a torn record")


def test_truncated_non_last_segment(tmp_path: Path) -> None:
    three_segments(tmp_path)
    segment = segment_paths(tmp_path)[0]
    start, end = record_extents(segment)[-1]
    os.truncate(segment, end - 4)
    assert_corrupt(tmp_path, segment, start, "past end of file")


def test_length_over_the_limit_with_data_after_it(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2), batch(5, 2)])
    (segment,) = segment_paths(tmp_path)
    start, _ = record_extents(segment)[0]
    data = bytearray(segment.read_bytes())
    struct.pack_into("<I", data, start, 5000)
    segment.write_bytes(bytes(data + bytes(6000)))
    # The claimed extent ends inside the file, so this is not a torn tail.
    assert_corrupt(tmp_path, segment, start, "over the 4096-byte limit", max_record_bytes=4096)


def test_zero_header_followed_by_data(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    start, _ = record_extents(segment)[0]
    data = segment.read_bytes()
    segment.write_bytes(data[:start] + bytes(8) + data[start + 8 :])
    assert_corrupt(tmp_path, segment, start, "zero-filled record header followed by non-zero")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"RKVXAL\x01\x00", "bad segment magic"),
        (b"RKVWAL\x02\x00", "unknown segment format version 2"),
        (b"RKVWAL\x01\x07", "pad byte"),
    ],
)
def test_bad_segment_header(tmp_path: Path, header: bytes, reason: str) -> None:
    three_segments(tmp_path)
    for position in (0, -1):  # a non-last and the last segment: neither is a torn creation
        segment = segment_paths(tmp_path)[position]
        original = segment.read_bytes()
        segment.write_bytes(header + original[8:])
        assert_corrupt(tmp_path, segment, 0, reason)
        segment.write_bytes(original)


def test_cut_short_header_of_a_non_last_segment(tmp_path: Path) -> None:
    three_segments(tmp_path)
    segment = segment_paths(tmp_path)[1]
    os.truncate(segment, 5)
    assert_corrupt(tmp_path, segment, 0, "segment header cut short")


def write_segment(directory: Path, name_index: int, records: list[bytes]) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name_index:020d}.wal"
    path.write_bytes(SEGMENT_HEADER + b"".join(records))
    return path


@pytest.mark.parametrize(
    ("payload_object", "reason"),
    [
        ("not a list", "not [first_index, entries]"),
        ([1], "not [first_index, entries]"),
        ([0, [[1, b"x"]]], "first index 0"),
        ([1, []], "non-empty list"),
        ([1, [[1, "text"]]], "entry 1 is not [term >= 0, data bytes]"),
        ([1, [[1, b"a"], [-1, b"b"]]], "entry 2 is not"),
        ([1, [[1, b"a", b"extra"]]], "entry 1 is not"),
    ],
)
def test_checksummed_record_of_the_wrong_shape_is_corruption_even_at_eof(
    tmp_path: Path, payload_object: object, reason: str
) -> None:
    good = encode_record([1, [[1, b"a"]]])
    path = write_segment(tmp_path, 1, [good, encode_record(payload_object)])
    assert_corrupt(tmp_path, path, len(SEGMENT_HEADER) + len(good), reason)


def test_undecodable_msgpack_with_a_good_checksum(tmp_path: Path) -> None:
    payload = b"\xc1\xc1\xc1"  # 0xc1 is never used in msgpack
    record = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    path = write_segment(tmp_path, 1, [record])
    assert_corrupt(tmp_path, path, len(SEGMENT_HEADER), "not valid msgpack")


def test_gap_between_records(tmp_path: Path) -> None:
    first = encode_record([1, [[1, b"a"], [1, b"b"]]])
    path = write_segment(tmp_path, 1, [first, encode_record([4, [[1, b"d"]]])])
    assert_corrupt(tmp_path, path, len(SEGMENT_HEADER) + len(first), "must be contiguous")


def test_gap_between_segments(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, [encode_record([1, [[1, b"a"]]])])
    second = write_segment(tmp_path, 3, [encode_record([3, [[1, b"c"]]])])
    assert_corrupt(tmp_path, second, len(SEGMENT_HEADER), "must be contiguous")


def test_missing_middle_segment_is_a_gap(tmp_path: Path) -> None:
    three_segments(tmp_path)
    _, middle, last = segment_paths(tmp_path)
    middle.unlink()
    assert_corrupt(tmp_path, last, len(SEGMENT_HEADER), "must be contiguous")


def test_segment_name_must_match_its_first_record(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, [encode_record([1, [[1, b"a"]]])])
    second = write_segment(tmp_path, 3, [encode_record([2, [[1, b"b"]]])])
    assert_corrupt(tmp_path, second, len(SEGMENT_HEADER), "segment name says 3")


def test_empty_non_last_segment(tmp_path: Path) -> None:
    first = write_segment(tmp_path, 1, [])
    write_segment(tmp_path, 2, [encode_record([2, [[1, b"b"]]])])
    assert_corrupt(tmp_path, first, len(SEGMENT_HEADER), "no records")


def test_files_that_are_not_segments_are_ignored(tmp_path: Path) -> None:
    build_log(tmp_path, [batch(1, 2)])
    (tmp_path / "notes.txt").write_bytes(b"hello")
    (tmp_path / "1.wal").write_bytes(b"garbage")
    assert WriteAheadLog.open(tmp_path)[1] == batch(1, 2)


# Torn-tail repair is reported --------------------------------------------------------------------


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "replikv.storage" and record.levelno == logging.WARNING
    ]


def test_torn_tail_repair_is_logged_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[-1]
    os.truncate(segment, end - 5)
    discarded = end - 5 - start

    caplog.set_level(logging.WARNING, logger="replikv.storage")
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 2)
    assert wal.recovery_truncated_at == (segment, start)
    assert wal.recovery_truncated_bytes == discarded
    wal.close()
    (message,) = storage_warnings(caplog)
    assert str(segment) in message
    assert f"torn tail at byte offset {start}" in message
    assert f"discarding {discarded} bytes" in message

    # The repaired log opens clean: nothing to report the second time.
    caplog.clear()
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 2)
    assert (wal.recovery_truncated_at, wal.recovery_truncated_bytes) == (None, 0)
    wal.close()
    assert storage_warnings(caplog) == []


def test_removing_a_torn_last_segment_is_logged_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_log(tmp_path, [batch(1, 30)], segment_bytes=100)
    build_log(tmp_path, [batch(31, 2)], segment_bytes=100)
    _, second = segment_paths(tmp_path)
    _, end = record_extents(second)[0]
    os.truncate(second, end - 3)

    caplog.set_level(logging.WARNING, logger="replikv.storage")
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 30)
    # The whole file went, so that is what was discarded: from offset 0, header included.
    assert wal.recovery_truncated_at == (second, 0)
    assert wal.recovery_truncated_bytes == end - 3
    wal.close()
    cut, removal = storage_warnings(caplog)
    assert f"torn tail at byte offset {len(SEGMENT_HEADER)}" in cut
    assert str(second) in removal and "no records" in removal


@pytest.mark.parametrize(("contents", "what"), [(b"RKV", "cut-short"), (bytes(4096), "all zeros")])
def test_removing_a_segment_torn_at_creation_is_logged_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, contents: bytes, what: str
) -> None:
    build_log(tmp_path, [batch(1, 4)])
    torn = tmp_path / f"{5:020d}.wal"
    torn.write_bytes(contents)
    caplog.set_level(logging.WARNING, logger="replikv.storage")
    wal, _ = WriteAheadLog.open(tmp_path)
    assert (wal.recovery_truncated_at, wal.recovery_truncated_bytes) == ((torn, 0), len(contents))
    wal.close()
    (message,) = storage_warnings(caplog)
    assert str(torn) in message and what in message and f"its {len(contents)} bytes" in message


# A damaged length field is not a torn tail ------------------------------------------------------

# (byte within the little-endian u32 length, bit): low byte, middle bytes and the high byte. Each
# sets a bit that is clear in these small lengths, so the record claims to run past EOF.
LENGTH_BIT_FLIPS = [(0, 7), (1, 0), (1, 7), (2, 4), (3, 0), (3, 7)]


def flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def claimed_end(path: Path, start: int) -> int:
    (length,) = struct.unpack_from("<I", path.read_bytes(), start)
    return start + 8 + length


@pytest.mark.parametrize("damaged_record", [0, 1])
@pytest.mark.parametrize(("length_byte", "bit"), LENGTH_BIT_FLIPS)
def test_flipped_length_bit_before_the_last_record_is_corruption(
    tmp_path: Path, damaged_record: int, length_byte: int, bit: int
) -> None:
    three_segments(tmp_path)
    segment = segment_paths(tmp_path)[-1]
    extents = record_extents(segment)
    start, end = extents[damaged_record]
    flip_bit(segment, start + length_byte, bit)
    # The flip makes the record claim an extent past EOF: until now, a torn tail that took every
    # later (fsynced, acknowledged) record with it.
    assert claimed_end(segment, start) > segment.stat().st_size
    assert_corrupt(tmp_path, segment, start, f"valid record follows at {end}")
    with pytest.raises(CorruptLogError, match="refusing to discard acknowledged entries"):
        WriteAheadLog.open(tmp_path)


@pytest.mark.parametrize(("length_byte", "bit"), LENGTH_BIT_FLIPS)
def test_flipped_length_bit_in_the_last_record_is_still_a_torn_tail(
    tmp_path: Path, length_byte: int, bit: int
) -> None:
    batches = three_segments(tmp_path)
    segment = segment_paths(tmp_path)[-1]
    start, _ = record_extents(segment)[-1]
    flip_bit(segment, start + length_byte, bit)
    assert claimed_end(segment, start) > segment.stat().st_size
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == flatten(batches[:-1]), "nothing valid follows the last record"
    assert wal.recovery_truncated_at == (segment, start)
    wal.close()
    assert segment.stat().st_size == start
    assert_appends_work_after_recovery(tmp_path, flatten(batches[:-1]))


def test_override_after_a_damaged_record_is_found(tmp_path: Path) -> None:
    # A new leader's override may start below the damaged record's entries; it is acknowledged
    # like any other record and must not be cut off with the damage.
    build_log(tmp_path, [batch(1, 2), batch(3, 2), batch(5, 2), batch(3, 2, term=2)])
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[2]
    flip_bit(segment, start + 3, 6)
    assert_corrupt(tmp_path, segment, start, f"valid record follows at {end}")


def test_damaged_length_with_valid_records_and_a_zero_tail_after_it(tmp_path: Path) -> None:
    # The valid records are found even past a zero-filled tail longer than a record can be.
    build_log(tmp_path, [batch(1, 2), batch(3, 2), batch(5, 2)])
    (segment,) = segment_paths(tmp_path)
    start, _ = record_extents(segment)[1]
    last_start, _ = record_extents(segment)[2]
    with open(segment, "ab") as file:
        file.write(bytes(10_000))
    flip_bit(segment, start + 2, 0)
    assert_corrupt(
        tmp_path, segment, start, f"valid record follows at {last_start}", max_record_bytes=200
    )


def torn_record_containing(embedded: bytes, claimed_length: int = 5000) -> bytes:
    """The start of a record whose payload holds `embedded`: torn, it never reached its end."""
    payload_head = msgpack.packb([5, [[1, b"x" * 10]]], use_bin_type=True)[:-4]
    return struct.pack("<II", claimed_length, 0x1234_5678) + payload_head + embedded + b"tail"


def test_old_record_inside_a_torn_tail_does_not_count(tmp_path: Path) -> None:
    # A filesystem may expose stale blocks of a deleted segment in a torn tail: their records
    # hold indexes below this segment's, so they cannot be acknowledged entries after the damage.
    batches = three_segments(tmp_path)
    segment = segment_paths(tmp_path)[-1]
    good_size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(torn_record_containing(encode_record([1, [[1, b"stale"]]])))
    wal, entries = WriteAheadLog.open(tmp_path)
    assert entries == flatten(batches)
    assert wal.recovery_truncated_at == (segment, good_size)
    wal.close()


def test_newer_record_inside_a_torn_tail_refuses_to_guess(tmp_path: Path) -> None:
    # The other side of the trade-off: a record-shaped byte string with a plausible index inside
    # a torn tail cannot be told from a record after a damaged length, so the node stops (and is
    # restored from the other replicas) rather than risk throwing acknowledged entries away.
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    good_size = segment.stat().st_size
    torn = torn_record_containing(encode_record([5, [[1, b"looks new"]]]))
    with open(segment, "ab") as file:
        file.write(torn)
    assert_corrupt(tmp_path, segment, good_size, "valid record follows at")


def test_a_torn_tail_crowded_with_record_like_bytes_refuses_to_guess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only crafted data is this dense; the search stops at its budget instead of running long.
    monkeypatch.setattr(wal_module, "_SCAN_CANDIDATES_MAX", 50)
    build_log(tmp_path, [batch(1, 2), batch(3, 2)])
    (segment,) = segment_paths(tmp_path)
    good_size = segment.stat().st_size
    decoy = encode_record([5, [[1, b"decoy"]]])
    decoy = decoy[:4] + b"\xff\xff\xff\xff" + decoy[8:]  # right shape, wrong checksum
    with open(segment, "ab") as file:
        file.write(torn_record_containing(decoy * 100, claimed_length=len(decoy) * 200))
    assert_corrupt(tmp_path, segment, good_size, "too many record-like byte patterns")


# Torn tails that must still be recovered -------------------------------------------------------


def big_entry_data(kind: str, size_bytes: int) -> bytes:
    if kind == "zeros":
        return bytes(size_bytes)
    if kind == "random":
        return random.Random(20240611).randbytes(size_bytes)
    # Bytes that look like msgpack all over: small arrays, uints and bins.
    return (b"\x92\x01\xc4\x01a\x91\x00\x92\xcc\x80\xdc\x00\x02" * size_bytes)[:size_bytes]


@pytest.mark.parametrize("kind", ["zeros", "random", "msgpack-like"])
def test_torn_big_record_is_recovered_whatever_its_payload(tmp_path: Path, kind: str) -> None:
    pristine = tmp_path / "pristine"
    build_log(pristine, [batch(1, 2), [(3, 1, big_entry_data(kind, 1 << 20))]])
    (segment,) = segment_paths(pristine)
    start, end = record_extents(segment)[-1]
    original = segment.read_bytes()
    for cut in [start + 9, start + 4096, (start + end) // 2, end - 1]:
        for zero_filled in (False, True):  # cut short, or the rest of the write left as zeros
            directory = tmp_path / f"cut-{cut}-{zero_filled}"
            directory.mkdir()
            torn = original[:cut] + (bytes(end - cut) if zero_filled else b"")
            if torn == original:
                continue  # zeros in place of a payload of zeros: that is the whole record
            (directory / segment.name).write_bytes(torn)
            wal, entries = WriteAheadLog.open(directory)
            assert entries == batch(1, 2), f"cut at {cut}, zero-filled {zero_filled}"
            assert wal.recovery_truncated_at == (directory / segment.name, start)
            assert wal.recovery_truncated_bytes == len(torn) - start
            wal.close()


def test_torn_record_of_many_small_entries_is_recovered(tmp_path: Path) -> None:
    # Our own msgpack, dense with [term, data] pairs, must not look like a record start.
    generator = random.Random(7)
    entries = [
        (index, 3, generator.randbytes(generator.randrange(0, 12))) for index in range(3, 20_003)
    ]
    build_log(tmp_path, [batch(1, 2), entries])
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[-1]
    os.truncate(segment, end - 1000)
    assert WriteAheadLog.open(tmp_path)[1] == batch(1, 2)
    assert segment.stat().st_size == start


def open_timed(directory: Path) -> tuple[float, list]:
    began = time.perf_counter()
    wal, entries = WriteAheadLog.open(directory)
    elapsed = time.perf_counter() - began
    wal.close()
    return elapsed, entries


@pytest.mark.parametrize("shape", ["1-MiB-records", "one-64-MiB-record"])
def test_opening_a_64_mib_last_segment_with_a_torn_tail_is_fast(tmp_path: Path, shape: str) -> None:
    generator = random.Random(64)
    if shape == "1-MiB-records":
        batches = [[(index, 1, generator.randbytes(1 << 20))] for index in range(1, 66)]
    else:
        batches = [[(1, 1, b"first")], [(2, 1, generator.randbytes((64 << 20) + 4096))]]
    build_log(tmp_path, batches, segment_bytes=1 << 30)
    (segment,) = segment_paths(tmp_path)
    start, end = record_extents(segment)[-1]
    os.truncate(segment, end - 100)
    size_bytes = segment.stat().st_size
    assert size_bytes >= 64 << 20

    elapsed, entries = open_timed(tmp_path)
    assert [entry[0] for entry in entries] == [entry[0] for entry in flatten(batches[:-1])]
    assert segment.stat().st_size == start
    print(
        f"\nopen of a {size_bytes / (1 << 20):.1f} MiB last segment ({shape}, torn tail of "
        f"{size_bytes - start} bytes): {elapsed * 1000:.0f} ms"
    )
    assert elapsed < 2.0, f"{elapsed:.2f} s to open; well under a second expected"
