"""The Raft log on disk: an append-only write-ahead log split into segment files.

Entries are `(index, term, data)`. Each `append()` writes exactly one record holding one batch of
contiguous entries, in one `os.write`; `sync()` makes everything appended so far durable with one
fsync. Nothing is ever rewritten in place: when Raft must replace a conflicting suffix, the new
batch is simply appended, and the override rule (as in etcd's WAL) applies on replay: a record
whose first index is at or below the log's last index replaces the log from that index on (at or
below the log's first index, it replaces all of it). So the only file operations are append,
truncate-at-open and delete-whole-segment, which keeps crash behaviour easy to reason about.

Layout. The directory holds segments named `%020d.wal` after the first index written in them, so
name order is write order (a segment is only started for a batch whose first index is above the
current segment's name; an override going lower stays in the current segment). A segment starts
with an 8-byte header, magic b"RKVWAL", a version byte and a pad byte, followed by records:
`struct.pack("<II", payload_length, crc32(payload))` then payload = msgpack
`[first_index, [[term, data], ...]]`. A segment is closed once it has grown to `segment_bytes`,
and switching to a new one is a sync point (the outgoing segment, and the directory if it gained
a file, are fsynced first), so that after a crash only the last segment can be damaged by it.

Crash recovery, applied by `open()`:
  * Only in the LAST segment, a bad record whose claimed extent reaches or passes end of file is a
    torn tail left by a crash during the last write: fewer than 8 header bytes left; a payload
    length pointing past EOF; a bad CRC on a record that ends exactly at EOF; or a zero header
    followed only by zeros up to EOF (filesystems may leave zero-filled tails). It is discarded,
    and the file is truncated there and fsynced so later appends start clean. A last segment whose
    own header is cut short or all zeros (a crash just after creating it) is torn the same way.
  * A last segment left with no records is deleted (and the directory fsynced): it would
    otherwise carry a name that the next batch might not match.
  * Anything else is corruption and raises CorruptLogError naming the file, the byte offset and
    the reason: a bad CRC with data after it, any bad record in a non-last segment, a payload
    that is not the expected msgpack shape, indexes that leave a gap, a segment whose first
    record does not match its name, a bad segment header. The node refuses to start rather than
    serve corrupt data; nothing is ever silently skipped.
  * A payload length over `max_record_bytes` is a bad header like any other: torn if its extent
    runs to or past EOF in the last segment, corruption otherwise.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack

from replikv.invariants import invariant
from replikv.limits import DEFAULT_LIMITS
from replikv.storage.errors import CorruptLogError, StorageError
from replikv.storage.files import create_directory, fsync_directory, write_fully

Entry = tuple[int, int, bytes]

SEGMENT_MAGIC = b"RKVWAL"
SEGMENT_VERSION = 1
SEGMENT_HEADER = SEGMENT_MAGIC + bytes([SEGMENT_VERSION, 0])
RECORD_HEADER = struct.Struct("<II")

# One record is one appended batch. A follower's batch arrives in one peer frame, so the largest
# frame bounds what a sane batch encodes to; a header claiming more is damage, not data.
DEFAULT_MAX_RECORD_BYTES = DEFAULT_LIMITS.max_peer_frame_bytes

_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")


@dataclass(slots=True)
class _Segment:
    path: Path
    first_index: int  # from its name: the first index of its first record
    lowest_record_index: int  # lowest first index of any record in it (overrides can go lower)
    highest_index: int  # highest entry index it holds, including overridden ones


@dataclass(slots=True)
class _Record:
    offset: int
    first_index: int
    pairs: list[list]  # [[term, data], ...], shape already checked


def _segment_path(directory: Path, first_index: int) -> Path:
    return directory / f"{first_index:020d}.wal"


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.iterdir():
        match = _SEGMENT_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    found.sort()
    return found


def _decode_payload(path: Path, offset: int, payload: bytes) -> tuple[int, list[list]]:
    # The CRC matched, so a failure here is not a torn write: some writer produced bad data.
    try:
        decoded = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # any decoder failure on checksummed bytes is corruption
        raise CorruptLogError(path, offset, f"record payload is not valid msgpack ({exc})") from exc
    if not isinstance(decoded, list) or len(decoded) != 2:
        raise CorruptLogError(path, offset, "record payload is not [first_index, entries]")
    first_index, pairs = decoded
    if type(first_index) is not int or first_index < 1:
        raise CorruptLogError(path, offset, f"record first index {first_index!r} is not >= 1")
    if not isinstance(pairs, list) or not pairs:
        raise CorruptLogError(path, offset, "record entries are not a non-empty list")
    for position, pair in enumerate(pairs):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or type(pair[0]) is not int
            or pair[0] < 0
            or type(pair[1]) is not bytes
        ):
            raise CorruptLogError(
                path, offset, f"entry {first_index + position} is not [term >= 0, data bytes]"
            )
    return first_index, pairs


def _read_records(
    path: Path, data: bytes, *, is_last: bool, max_record_bytes: int
) -> tuple[list[_Record], int | None]:
    """Decode the records after the segment header.

    Returns them with the offset of a torn tail (None if there is none); raises CorruptLogError
    for a bad record that the recovery rules do not call torn.
    """
    size = len(data)
    records = []
    offset = len(SEGMENT_HEADER)
    while offset < size:
        reason, reaches_eof = _check_record(data, offset, max_record_bytes)
        if reason is not None:
            if is_last and reaches_eof:
                return records, offset
            if reaches_eof:
                reason += " (only the last segment may end in a torn record)"
            raise CorruptLogError(path, offset, reason)
        length, _ = RECORD_HEADER.unpack_from(data, offset)
        end = offset + RECORD_HEADER.size + length
        first_index, pairs = _decode_payload(path, offset, data[offset + RECORD_HEADER.size : end])
        records.append(_Record(offset, first_index, pairs))
        offset = end
    return records, None


def _check_record(data: bytes, offset: int, max_record_bytes: int) -> tuple[str | None, bool]:
    """Check the framing of the record at `offset`.

    Returns (None, False) if header and CRC are good, else the reason and whether the bad
    record's claimed extent reaches end of file (which makes it a torn tail in the last segment).
    """
    size = len(data)
    remaining = size - offset
    if remaining < RECORD_HEADER.size:
        return f"only {remaining} bytes left, too few for a record header", True
    length, expected_crc = RECORD_HEADER.unpack_from(data, offset)
    end = offset + RECORD_HEADER.size + length
    if length == 0 and expected_crc == 0:
        # crc32(b"") is 0, so a zero header would otherwise pass as an empty record.
        if data.count(0, offset) == remaining:
            return "zero-filled record header followed only by zeros", True
        return "zero-filled record header followed by non-zero bytes", False
    if length > max_record_bytes:
        return f"record length {length} is over the {max_record_bytes}-byte limit", end >= size
    if end > size:
        return f"record of {length} payload bytes runs {end - size} bytes past end of file", True
    actual_crc = zlib.crc32(memoryview(data)[offset + RECORD_HEADER.size : end])
    if actual_crc != expected_crc:
        reason = (
            f"checksum mismatch: header says {expected_crc:#010x}, payload has "
            f"{actual_crc:#010x}, and {size - end} bytes follow the record"
        )
        return reason, end == size
    return None, False


def _check_segment_header(path: Path, data: bytes, *, is_last: bool) -> bool:
    """True if the header is good, False if it is a torn creation; raises on corruption."""
    header = data[: len(SEGMENT_HEADER)]
    if header == SEGMENT_HEADER:
        return True
    cut_short = len(data) < len(SEGMENT_HEADER) and SEGMENT_HEADER.startswith(data)
    all_zeros = data.count(0) == len(data)
    if is_last and (cut_short or all_zeros):
        return False
    if len(data) < len(SEGMENT_HEADER):
        reason = f"segment header cut short at {len(data)} bytes"
    elif header[: len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
        reason = f"bad segment magic {header[: len(SEGMENT_MAGIC)]!r}, expected {SEGMENT_MAGIC!r}"
    elif header[len(SEGMENT_MAGIC)] != SEGMENT_VERSION:
        reason = (
            f"unknown segment format version {header[len(SEGMENT_MAGIC)]} "
            f"(this replikv reads version {SEGMENT_VERSION})"
        )
    else:
        reason = f"bad segment header pad byte {header[-1]}"
    raise CorruptLogError(path, 0, reason)


class WriteAheadLog:
    """An open write-ahead log directory; create it with `WriteAheadLog.open`."""

    def __init__(
        self,
        directory: Path,
        segments: list[_Segment],
        *,
        first_index: int,
        last_index: int,
        segment_size_bytes: int,
        segment_bytes: int,
        max_record_bytes: int,
    ) -> None:
        self._directory = directory
        self._segments = segments
        self._first_index = first_index
        self._last_index = last_index
        self._segment_size_bytes = segment_size_bytes
        self._segment_bytes = segment_bytes
        self._max_record_bytes = max_record_bytes
        self._fd: int | None = None
        if segments:
            self._fd = os.open(segments[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._segment_unsynced = False
        self._directory_unsynced = False
        self._closed = False
        # After a failed write or fsync the file's state is unknown (and a failed fsync may have
        # dropped dirty pages), so the only safe continuation is a restart that re-reads the disk.
        self._failed = False

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_LIMITS.wal_segment_bytes,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> tuple[WriteAheadLog, list[Entry]]:
        """Open (creating if needed) the log in `directory`; return it and its entries.

        Repairs a torn tail as described in the module docstring; raises CorruptLogError for
        anything else that does not check out.
        """
        invariant(segment_bytes > len(SEGMENT_HEADER), f"segment_bytes {segment_bytes} too small")
        invariant(max_record_bytes >= 1, f"max_record_bytes {max_record_bytes} must be >= 1")
        create_directory(directory)
        listed = _list_segments(directory)
        segments: list[_Segment] = []
        entries: list[Entry] = []
        log_first_index = 0  # 0 while the log is empty
        segment_size_bytes = 0
        for position, (name_index, path) in enumerate(listed):
            is_last = position == len(listed) - 1
            if name_index < 1:
                raise CorruptLogError(path, 0, "segment name says index 0; indexes start at 1")
            data = path.read_bytes()
            if not _check_segment_header(path, data, is_last=is_last):
                cls._remove_empty_last_segment(directory, path)
                continue
            records, torn_offset = _read_records(
                path, data, is_last=is_last, max_record_bytes=max_record_bytes
            )
            size_bytes = len(data)
            if torn_offset is not None:
                cls._truncate_torn_tail(path, torn_offset)
                size_bytes = torn_offset
            if not records:
                if not is_last:
                    raise CorruptLogError(
                        path, len(SEGMENT_HEADER), "segment holds no records but is not the last"
                    )
                cls._remove_empty_last_segment(directory, path)
                continue
            if records[0].first_index != name_index:
                raise CorruptLogError(
                    path,
                    records[0].offset,
                    f"first record starts at index {records[0].first_index} but the segment "
                    f"name says {name_index}",
                )
            segment = _Segment(path, name_index, name_index, name_index - 1)
            for record in records:
                first = record.first_index
                last = first + len(record.pairs) - 1
                log_last_index = log_first_index + len(entries) - 1
                new_entries = [
                    (first + offset, term, data) for offset, (term, data) in enumerate(record.pairs)
                ]
                if not entries or first <= log_first_index:
                    # The first record of an empty log may start anywhere (after a snapshot);
                    # one at or below the log's start replaces all of it.
                    entries = new_entries
                    log_first_index = first
                elif first > log_last_index + 1:
                    raise CorruptLogError(
                        path,
                        record.offset,
                        f"record starts at index {first} but the log before it ends at "
                        f"{log_last_index}: indexes must be contiguous",
                    )
                else:
                    del entries[first - log_first_index :]
                    entries.extend(new_entries)
                segment.lowest_record_index = min(segment.lowest_record_index, first)
                segment.highest_index = max(segment.highest_index, last)
            segments.append(segment)
            segment_size_bytes = size_bytes
        wal = cls(
            directory,
            segments,
            first_index=log_first_index,
            last_index=entries[-1][0] if entries else 0,
            segment_size_bytes=segment_size_bytes,
            segment_bytes=segment_bytes,
            max_record_bytes=max_record_bytes,
        )
        return wal, entries

    @staticmethod
    def _truncate_torn_tail(path: Path, offset: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _remove_empty_last_segment(directory: Path, path: Path) -> None:
        path.unlink()
        fsync_directory(directory)

    @property
    def first_index(self) -> int:
        """The first index present in the log, or 0 when the log is empty."""
        return self._first_index

    @property
    def last_index(self) -> int:
        """The last index in the log, or 0 when the log is empty."""
        return self._last_index

    @property
    def directory(self) -> Path:
        return self._directory

    def append(self, entries: list[Entry]) -> None:
        """Write one batch as one record. Not durable until `sync()` returns.

        A batch starting at or below `last_index` replaces the log from its first index on.
        """
        self._check_usable()
        invariant(entries, "append of an empty batch")
        first = entries[0][0]
        invariant(type(first) is int and first >= 1, f"entry index {first!r} is not >= 1")
        invariant(
            self._last_index == 0 or first <= self._last_index + 1,
            f"append at index {first} would leave a gap after last index {self._last_index}",
        )
        pairs = []
        expected_index = first
        for index, term, data in entries:
            invariant(
                index == expected_index,
                f"batch indexes are not contiguous: {index} where {expected_index} belongs",
            )
            invariant(type(term) is int and term >= 0, f"entry {index} term {term!r} invalid")
            invariant(type(data) is bytes, f"entry {index} data is {type(data).__name__}")
            pairs.append((term, data))
            expected_index += 1
        payload = msgpack.packb([first, pairs], use_bin_type=True)
        invariant(
            len(payload) <= self._max_record_bytes,
            f"batch of {len(entries)} entries encodes to {len(payload)} bytes, over the "
            f"{self._max_record_bytes}-byte record limit; the caller must split it",
        )
        record = RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        last = first + len(entries) - 1
        try:
            if self._fd is None or (
                self._segment_size_bytes >= self._segment_bytes
                and first > self._segments[-1].first_index
            ):
                self._start_segment(first)
                record = SEGMENT_HEADER + record
            write_fully(self._fd, record)
        except BaseException:
            self._failed = True
            raise
        self._segment_size_bytes += len(record)
        self._segment_unsynced = True
        segment = self._segments[-1]
        segment.lowest_record_index = min(segment.lowest_record_index, first)
        segment.highest_index = max(segment.highest_index, last)
        if self._last_index == 0 or first < self._first_index:
            self._first_index = first
        self._last_index = last

    def _start_segment(self, first_index: int) -> None:
        if self._fd is not None:
            # A sync point: after it, nothing before the new segment can be torn, which is what
            # lets recovery treat damage in any but the last segment as corruption.
            if self._segment_unsynced:
                os.fsync(self._fd)
                self._segment_unsynced = False
            if self._directory_unsynced:
                fsync_directory(self._directory)
                self._directory_unsynced = False
            os.close(self._fd)
            self._fd = None
        path = _segment_path(self._directory, first_index)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o644)
        self._segments.append(_Segment(path, first_index, first_index, first_index - 1))
        self._segment_size_bytes = 0
        self._directory_unsynced = True

    def sync(self) -> None:
        """Make every appended record durable (one fsync, plus the directory after a rotation)."""
        self._check_usable()
        try:
            if self._segment_unsynced:
                os.fsync(self._fd)
                self._segment_unsynced = False
            if self._directory_unsynced:
                fsync_directory(self._directory)
                self._directory_unsynced = False
        except BaseException:
            self._failed = True
            raise

    def drop_segments_through(self, index: int) -> int:
        """Delete the oldest whole segments holding only entries <= `index`; return how many.

        The current segment is never dropped. Only a prefix of segments goes, because replay
        reads them in order: a segment is kept, and so is everything after it, as soon as one
        holds an entry above `index`.
        """
        self._check_usable()
        dropped = 0
        try:
            while len(self._segments) > 1 and self._segments[0].highest_index <= index:
                self._segments[0].path.unlink()
                # One directory fsync per deletion, so they reach disk oldest first: a crash
                # must not leave an older segment behind a gap.
                fsync_directory(self._directory)
                del self._segments[0]
                dropped += 1
        except BaseException:
            self._failed = True
            raise
        if dropped:
            # Replaying the remaining segments starts the log at their lowest record.
            self._first_index = min(segment.lowest_record_index for segment in self._segments)
        return dropped

    def close(self) -> None:
        """Release the file; does not sync (call `sync()` first for durability)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._closed = True

    def _check_usable(self) -> None:
        invariant(not self._closed, f"write-ahead log {self._directory} used after close()")
        if self._failed:
            raise StorageError(
                f"write-ahead log {self._directory} is unusable after an earlier I/O error; "
                "restart the node so it recovers from what is on disk"
            )
