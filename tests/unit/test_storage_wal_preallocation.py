"""The write-ahead log reserves file space ahead of its records.

A segment's file is extended (posix_fallocate) `preallocate_bytes` past its records, so that an
append's fdatasync has no new file size to record. The zeros after the records are unused space,
not data: only the last segment may end in them, `close()` and rotation cut them, and a crash
that leaves them is not a repair. A record torn inside that space is a torn tail like one cut
short at the end of the file.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import pytest

from replikv.storage import CorruptLogError, WriteAheadLog

from .fsync_recorder import record_fsyncs
from .wal_files import records_end

SEGMENT_HEADER = b"RKVWAL\x01\x00"
PREALLOCATE = 64 * 1024


def batch(first_index: int, count: int, term: int = 1, size_bytes: int = 100) -> list:
    return [
        (index, term, f"{index}:{term}:".encode().ljust(size_bytes, b"."))
        for index in range(first_index, first_index + count)
    ]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def open_log(directory: Path, **kwargs) -> tuple[WriteAheadLog, list]:
    kwargs.setdefault("preallocate_bytes", PREALLOCATE)
    return WriteAheadLog.open(directory, **kwargs)


def crash_copy(source: Path, destination: Path) -> Path:
    """The data dir as a kill -9 would leave it: copied while the log is still open."""
    shutil.copytree(source, destination)
    return destination


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "replikv.storage" and record.levelno >= logging.WARNING
    ]


def test_appends_write_into_reserved_space_and_close_cuts_it(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path)
    wal.append(batch(1, 2))
    wal.sync()
    (segment,) = segments(tmp_path)
    assert segment.stat().st_size == PREALLOCATE
    written = records_end(segment)
    assert len(SEGMENT_HEADER) < written < PREALLOCATE
    for first_index in range(3, 40, 2):
        wal.append(batch(first_index, 2))
        wal.sync()
        assert segment.stat().st_size == PREALLOCATE, "an append must not change the size"
    assert records_end(segment) > written
    wal.close()
    assert segment.stat().st_size == records_end(segment), "close() cuts the unused space"
    reopened, entries = open_log(tmp_path)
    assert entries == batch(1, 40)
    reopened.close()


def test_the_reservation_grows_ahead_of_the_records(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, preallocate_bytes=1024)
    sizes = set()
    for first_index in range(1, 101, 5):
        wal.append(batch(first_index, 5))
        (segment,) = segments(tmp_path)
        size, end = segment.stat().st_size, records_end(segment)
        assert end <= size <= end + 1024 + 5 * 120
        sizes.add(size)
    assert len(sizes) > 5, "the file is extended chunk by chunk, not once"
    wal.sync()
    wal.close()
    assert open_log(tmp_path)[1] == batch(1, 100)


def test_no_reservation_past_the_segment_size(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, segment_bytes=4096)
    wal.append(batch(1, 2))
    wal.sync()
    assert segments(tmp_path)[0].stat().st_size == 4096
    wal.close()


def test_preallocation_can_be_turned_off(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, preallocate_bytes=0)
    wal.append(batch(1, 2))
    wal.sync()
    (segment,) = segments(tmp_path)
    assert segment.stat().st_size == records_end(segment)
    wal.close()


def test_a_closed_segment_ends_with_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the last segment may end in reserved space: the reservation stops at segment_bytes,
    # where the segment is closed, so rotation has nothing to cut.
    wal, _ = open_log(tmp_path, segment_bytes=2048)
    first = tmp_path / f"{1:020d}.wal"
    last_index = 0
    while last_index == 0 or records_end(first) < 2048:
        last_index += 1
        wal.append(batch(last_index, 1))
        wal.sync()
        if last_index == 2:
            assert first.stat().st_size == 2048, "reserved up to the limit"
    fsyncs = record_fsyncs(monkeypatch)
    wal.append(batch(last_index + 1, 1))
    assert fsyncs == [], "the outgoing segment was already synced"
    assert first.stat().st_size == records_end(first)
    wal.sync()
    wal.close()
    assert [path.stat().st_size == records_end(path) for path in segments(tmp_path)] == [
        True,
        True,
    ]
    assert open_log(tmp_path, segment_bytes=2048)[1] == batch(1, last_index + 1)


def test_unused_space_left_by_a_crash_is_not_a_repair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal, _ = open_log(tmp_path / "live")
    wal.append(batch(1, 3))
    wal.sync()
    crashed = crash_copy(tmp_path / "live", tmp_path / "crashed")
    wal.close()
    (segment,) = segments(crashed)
    assert segment.stat().st_size == PREALLOCATE

    caplog.set_level(logging.DEBUG, logger="replikv.storage")
    reopened, entries = open_log(crashed)
    assert entries == batch(1, 3)
    assert (reopened.recovery_truncated_at, reopened.recovery_truncated_bytes) == (None, 0)
    assert storage_warnings(caplog) == []
    assert segment.stat().st_size == records_end(segment)
    reopened.append(batch(4, 1))
    reopened.sync()
    reopened.close()
    assert open_log(crashed)[1] == batch(1, 4)


@pytest.mark.parametrize("lost", ["the end", "a middle page", "the header"])
def test_a_record_torn_inside_reserved_space_is_a_torn_tail(
    tmp_path: Path, lost: str, caplog: pytest.LogCaptureFixture
) -> None:
    wal, _ = open_log(tmp_path / "live")
    wal.append(batch(1, 2))
    wal.sync()
    synced_end = records_end(segments(tmp_path / "live")[0])
    wal.append(batch(3, 100))  # about 12 KiB: several pages
    crashed = crash_copy(tmp_path / "live", tmp_path / "crashed")
    wal.close()
    (segment,) = segments(crashed)
    end = records_end(segment)
    data = bytearray(segment.read_bytes())
    # What a crash before the fdatasync may leave of the last record: some of its pages read
    # back as zeros (never written to the reserved space), in any order.
    if lost == "the end":
        data[end - 3000 : end] = bytes(3000)
    elif lost == "a middle page":
        data[synced_end + 4096 : synced_end + 8192] = bytes(4096)
    else:
        data[synced_end : synced_end + 4096] = bytes(4096)
    segment.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING, logger="replikv.storage")
    reopened, entries = open_log(crashed)
    assert entries == batch(1, 2)
    assert reopened.recovery_truncated_at == (segment, synced_end)
    reopened.close()
    (message,) = storage_warnings(caplog)
    reason = "zero-filled record header" if lost == "the header" else "checksum mismatch"
    assert "torn tail" in message and reason in message
    assert segment.stat().st_size == synced_end


def test_a_damaged_record_with_records_after_it_is_still_corruption(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path)
    wal.append(batch(1, 2))
    wal.append(batch(3, 2))
    wal.append(batch(5, 2))
    wal.sync()
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[len(SEGMENT_HEADER) + 40] ^= 0x5A  # inside the first record
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="checksum mismatch"):
        open_log(tmp_path)
    wal.close()


def test_zeros_after_the_records_of_a_segment_that_is_not_the_last_are_corruption(
    tmp_path: Path,
) -> None:
    wal, _ = open_log(tmp_path, segment_bytes=2048)
    wal.append(batch(1, 20))
    wal.append(batch(21, 1))
    wal.sync()
    wal.close()
    first = segments(tmp_path)[0]
    with open(first, "ab") as file:
        file.write(bytes(1000))
    with pytest.raises(CorruptLogError, match="only the last segment may end in"):
        open_log(tmp_path)


@pytest.mark.parametrize("written", [b"", b"R", b"RKVWAL"])
def test_a_segment_torn_at_creation_inside_its_reserved_space_is_removed(
    tmp_path: Path, written: bytes
) -> None:
    wal, _ = open_log(tmp_path)
    wal.append(batch(1, 2))
    wal.sync()
    wal.close()
    torn = tmp_path / f"{3:020d}.wal"
    torn.write_bytes(written + bytes(PREALLOCATE - len(written)))
    reopened, entries = open_log(tmp_path)
    assert entries == batch(1, 2)
    assert reopened.recovery_truncated_at == (torn, 0)
    reopened.close()
    assert segments(tmp_path) == [tmp_path / f"{1:020d}.wal"]


@pytest.mark.parametrize("error", [errno.EOPNOTSUPP, errno.ENOSPC])
def test_a_filesystem_that_cannot_preallocate_gets_plain_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: int
) -> None:
    calls = []

    def failing_fallocate(fd: int, offset: int, length: int) -> None:
        calls.append(length)
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "posix_fallocate", failing_fallocate)
    caplog.set_level(logging.WARNING, logger="replikv.storage")
    wal, _ = open_log(tmp_path, preallocate_bytes=1024)
    for first_index in range(1, 101, 5):
        wal.append(batch(first_index, 5))
    wal.sync()
    (segment,) = segments(tmp_path)
    assert segment.stat().st_size == records_end(segment)
    wal.close()
    monkeypatch.undo()
    assert open_log(tmp_path)[1] == batch(1, 100)
    if error == errno.ENOSPC:
        assert len(calls) > 1, "a full disk may have room later: asked again"
    else:
        assert len(calls) == 1, "not supported: asked once"
    warnings = storage_warnings(caplog)
    assert all("could not preallocate" in message for message in warnings)
    assert len(warnings) == 1, "said once, not on every append (a full disk logged thousands)"
