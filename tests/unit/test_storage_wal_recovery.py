"""Opening a write-ahead log after a crash or after disk damage.

A torn tail in the last segment (the last write was cut short) is discarded and truncated away;
everything else that fails a check stops the node with CorruptLogError naming file and offset.
The helpers below read the on-disk format independently of the implementation, so that these
tests also pin the format down.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from replikv.storage import CorruptLogError, WriteAheadLog

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
