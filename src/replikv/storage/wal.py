"""The Raft log on disk: an append-only write-ahead log split into segment files.

Entries are `(index, term, data)`. Each `append()` writes exactly one record holding one batch of
contiguous entries, in one `os.pwrite`; `sync()` makes everything appended so far durable with one
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

Preallocation. Before a write that would extend the current segment's file, the file is extended
(`posix_fallocate`) to `preallocate_bytes` past its records, never past `segment_bytes`. Records
are then written into that space, so the file's size does not change with each append and the
fdatasync that makes a record durable has no metadata to commit with it: p50 101-126 us
against 145-176 us per 300-byte append + sync on this VM's ext4 (`benchmarks/wal_fsync.py`). The
zeros after the records are unused space, not data. Since a segment is closed once its records
reach `segment_bytes`, only the last segment can end in them; `close()` cuts them, and so does
`open()` when a crash left them (silently: nothing written is discarded). A filesystem that
cannot preallocate gets plain extending writes.

Crash recovery, applied by `open()`:
  * Only zeros after the last record of the LAST segment are its unused preallocated space (or a
    tail a filesystem zero-filled): cut, and not reported, as they hold nothing.
  * Only in the LAST segment, a bad record whose claimed extent reaches the end of the written
    bytes (end of file, or only zeros after it) is a torn tail left by a crash during the last
    write: fewer than 8 header bytes left; a payload length pointing past EOF or past the last
    non-zero byte; a bad CRC on a record followed by nothing but zeros (its pages that never
    reached the disk read back as zeros inside preallocated space); or a zero header followed by
    non-zero bytes (the record's first page never reached the disk). It is discarded, and the
    file is truncated there and fsynced so later appends start clean. A last segment whose own
    header is cut short, followed by nothing or by zeros (a crash just after creating it), is
    torn the same way.
  * But first the bytes after a would-be torn record at X are searched for a complete, valid
    record: one bit flipped in a LENGTH field can make a record in the middle claim an extent past
    EOF, and cutting there would silently drop every later record, all of them fsynced and
    acknowledged. A torn write is the last thing in the file, so nothing valid can follow it. A
    start Y > X counts if its header fits, 0 < length <= what remains and <= `max_record_bytes`,
    the payload has the shape `append()` writes, the CRC matches, it decodes, and its first index
    is plausible: above the last good record's last index, or at or above the segment's name (an
    override may go back that far). Then it is corruption, not a torn tail. Old records exposed by
    a filesystem in a torn tail (stale blocks of a deleted segment) hold older indexes and do not
    count. The search is bounded: it covers the last `max_record_bytes` + 8 bytes before the
    trailing zeros, skips zero runs, and rejects candidates on their header and payload prefix
    before computing any CRC. If a torn tail is crowded with record-like bytes (only crafted data
    does that) past the `_SCAN_CANDIDATES_MAX` / `_SCAN_CHECKSUM_PASSES_MAX` budget, it refuses to
    guess and raises CorruptLogError.
  * Every repair is logged as a WARNING on the "replikv.storage" logger (file, offset, bytes
    discarded) and recorded on the log as `recovery_truncated_at` and `recovery_truncated_bytes`.
  * A last segment left with no records is deleted (and the directory fsynced): it would
    otherwise carry a name that the next batch might not match.
  * Anything else is corruption and raises CorruptLogError naming the file, the byte offset and
    the reason: a bad CRC with data after it, any bad record in a non-last segment, a bad record
    followed by a valid one, a payload that is not the expected msgpack shape, indexes that leave
    a gap, a segment whose first record does not match its name, a bad segment header. The node
    refuses to start rather than serve corrupt data; nothing is ever silently skipped.
  * A payload length over `max_record_bytes` is a bad header like any other: torn if its extent
    runs to or past EOF in the last segment (and nothing valid follows), corruption otherwise.

Archiving (for point-in-time recovery). Opened with `archive_dir`, the log has every segment
copied there by a `SegmentArchiver` (see `replikv.storage.wal_archive`): at rotation, before
`drop_segments_through` or `reset` deletes it, and the durable part of the current segment at
`close()`. `read_archive` reads such a directory back with the rules above, read-only.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import msgpack

from replikv.invariants import InvariantViolation, invariant
from replikv.limits import DEFAULT_LIMITS
from replikv.storage.errors import CorruptLogError, StorageError
from replikv.storage.files import create_directory, fsync_directory, pwrite_fully
from replikv.storage.wal_archive import (
    ARCHIVE_WAIT_BEFORE_DELETE_S,
    ArchivedSegment,
    ArchiveJob,
    ArchiveOwner,
    SegmentArchiver,
    list_archive,
)

Entry = tuple[int, int, bytes]
_Converted = TypeVar("_Converted")

SEGMENT_MAGIC = b"RKVWAL"
SEGMENT_VERSION = 1
SEGMENT_HEADER = SEGMENT_MAGIC + bytes([SEGMENT_VERSION, 0])
RECORD_HEADER = struct.Struct("<II")

# One record is one appended batch. A follower's batch arrives in one peer frame, so the largest
# frame bounds what a sane batch encodes to; a header claiming more is damage, not data.
DEFAULT_MAX_RECORD_BYTES = DEFAULT_LIMITS.max_peer_frame_bytes

_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")

# Budget for the search behind a would-be torn tail (see the module docstring). Ordinary data,
# random or not, yields a handful of candidates and almost never a CRC to compute; only bytes
# crafted to look like records can exhaust it, and then we refuse to guess rather than cut.
_SCAN_CANDIDATES_MAX = 1 << 16  # candidate record starts checked beyond the byte pattern
_SCAN_CHECKSUM_PASSES_MAX = 4  # CRC work allowed, in multiples of the scanned window's bytes
_ZERO_TAIL_CHUNK_BYTES = 64 * 1024
_ZERO_CHUNK = bytes(_ZERO_TAIL_CHUNK_BYTES)

log = logging.getLogger("replikv.storage")


def _datasync(fd: int) -> None:
    """Make a segment's appended records durable: fdatasync, which also writes the metadata
    needed to read them back (the file's size) but not its timestamps. A new segment's name is
    made durable separately (the directory's fsync). About 1.5x faster than fsync per append
    here (4 KiB appends on ext4: 183 against 280-400 us), and what etcd's WAL does."""
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


@dataclass(slots=True)
class _Segment:
    path: Path
    first_index: int  # from its name: the first index of its first record
    lowest_record_index: int  # lowest first index of any record in it (overrides can go lower)
    highest_index: int  # highest entry index it holds, including overridden ones
    size_bytes: int = 0  # its length once closed (the current one's is _segment_size_bytes)
    archive_job: ArchiveJob | None = None  # the latest copy of it handed to the archiver


@dataclass(slots=True)
class _Record:
    offset: int
    first_index: int
    pairs: list[list]  # [[term, data], ...], shape already checked


@dataclass(frozen=True, slots=True)
class _TornTail:
    offset: int  # where the torn record starts: the file is cut here
    reason: str  # what was wrong with it, for the warning


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
    path: Path, data: bytes, *, name_index: int, is_last: bool, max_record_bytes: int
) -> tuple[list[_Record], int, _TornTail | None]:
    """Decode the records after the segment header.

    Returns them, the offset just past the last of them, and the torn tail (None if there is
    none). Zeros after the last record are unused preallocated space (see the module docstring):
    allowed in the last segment, where they are not a torn tail; in any other segment they are
    corruption. Raises CorruptLogError for a bad record that the recovery rules do not call torn.
    """
    size = len(data)
    records: list[_Record] = []
    offset = len(SEGMENT_HEADER)
    # Where the non-zero bytes end: a record may end in zeros (its data can), but none starts
    # at or past this point, and a bad record reaching it had nothing written after it.
    nonzero_end = _end_of_nonzero(data, offset)
    while offset < size:
        if offset >= nonzero_end:
            if is_last:
                return records, offset, None
            raise CorruptLogError(
                path, offset, "zero-filled record header followed only by zeros (only the last "
                "segment may end in a torn record or unused preallocated space)")
        reason, reaches_eof = _check_record(data, offset, max_record_bytes, nonzero_end)
        if reason is not None:
            if is_last and reaches_eof:
                if records:
                    last_good_index = records[-1].first_index + len(records[-1].pairs) - 1
                    plausible_from = min(name_index, last_good_index + 1)
                else:
                    plausible_from = name_index
                _refuse_if_a_valid_record_follows(
                    path,
                    data,
                    offset,
                    reason,
                    plausible_from=plausible_from,
                    max_record_bytes=max_record_bytes,
                )
                return records, offset, _TornTail(offset, reason)
            if reaches_eof:
                reason += " (only the last segment may end in a torn record)"
            raise CorruptLogError(path, offset, reason)
        length, _ = RECORD_HEADER.unpack_from(data, offset)
        end = offset + RECORD_HEADER.size + length
        first_index, pairs = _decode_payload(path, offset, data[offset + RECORD_HEADER.size : end])
        records.append(_Record(offset, first_index, pairs))
        offset = end
    return records, offset, None


def _end_of_nonzero(data: bytes, start: int) -> int:
    """The offset just past the last non-zero byte at or after `start`; `start` if none is."""
    end = len(data)
    # Backwards in chunks, so the cost is that of the zero tail, not of the whole segment; a
    # comparison with zeros is a memcmp, many times faster than rstrip on a zero run.
    while end > start:
        low = max(start, end - _ZERO_TAIL_CHUNK_BYTES)
        chunk = data[low:end]
        if chunk != _ZERO_CHUNK[: end - low]:
            return low + len(chunk.rstrip(b"\x00"))
        end = low
    return start


@functools.lru_cache(maxsize=256)
def _record_start_pattern(length_high_byte_max: int) -> re.Pattern[bytes]:
    """Where a record as `append()` writes it could start, judged on a few bytes, at C speed.

    A match starts at the payload, 8 bytes after the record start, and covers the msgpack head
    that `append()` always writes: [first_index (a uint, not 0), [[term (a uint), data (bin)]
    The lookbehind asks the length field's high byte to be small enough for what remains of the
    file, which throws out most random headers. The pattern opens with a literal byte so that
    `re` looks for that byte first, which is fast and skips zero runs.
    """
    high = re.escape(bytes([length_high_byte_max]))
    wide_uint = rb"\xcc[\x00-\xff]|\xcd[\x00-\xff]{2}|\xce[\x00-\xff]{4}|\xcf[\x00-\xff]{8}"
    uint = rb"(?:[\x00-\x7f]|" + wide_uint + rb")"
    positive_uint = rb"(?:[\x01-\x7f]|" + wide_uint + rb")"
    array_header = rb"(?:[\x91-\x9f]|\xdc[\x00-\xff]{2}|\xdd[\x00-\xff]{4})"
    return re.compile(
        rb"\x92(?<=[\x00-"
        + high
        + rb"][\x00-\xff]{4}\x92)"
        + positive_uint
        + array_header
        + rb"\x92"
        + uint
        + rb"[\xc4-\xc6]"
    )


# msgpack markers with a big-endian value after them: marker -> (kind, width of the value).
_MSGPACK_SIZED = {
    0xCC: ("uint", 1),
    0xCD: ("uint", 2),
    0xCE: ("uint", 4),
    0xCF: ("uint", 8),
    0xDC: ("array", 2),
    0xDD: ("array", 4),
    0xC4: ("bin", 1),
    0xC5: ("bin", 2),
    0xC6: ("bin", 4),
}


def _msgpack_header(data: bytes, position: int, end: int) -> tuple[str, int, int] | None:
    """(kind, value, next position) of the uint / array / bin header at `position`, if any."""
    if position >= end:
        return None
    marker = data[position]
    if marker <= 0x7F:
        return "uint", marker, position + 1
    if 0x90 <= marker <= 0x9F:
        return "array", marker & 0x0F, position + 1
    sized = _MSGPACK_SIZED.get(marker)
    if sized is None:
        return None
    kind, width = sized
    value_end = position + 1 + width
    if value_end > end:
        return None
    return kind, int.from_bytes(data[position + 1 : value_end], "big"), value_end


def _payload_first_index(data: bytes, start: int, end: int) -> int | None:
    """The first index of a payload in `data[start:end]` shaped as `append()` writes it.

    Checks only the head, up to the end of the first entry, so it costs the same whatever the
    payload's size; None if these bytes cannot be such a payload.
    """
    header = _msgpack_header(data, start, end)
    if header is None or header[:2] != ("array", 2):
        return None
    first_index = _msgpack_header(data, header[2], end)
    if first_index is None or first_index[0] != "uint" or first_index[1] < 1:
        return None
    entries = _msgpack_header(data, first_index[2], end)
    if entries is None or entries[0] != "array" or entries[1] < 1:
        return None
    pair = _msgpack_header(data, entries[2], end)
    if pair is None or pair[:2] != ("array", 2):
        return None
    term = _msgpack_header(data, pair[2], end)
    if term is None or term[0] != "uint":
        return None
    entry_data = _msgpack_header(data, term[2], end)
    if entry_data is None or entry_data[0] != "bin":
        return None
    entry_end = entry_data[2] + entry_data[1]
    if entries[1] == 1:
        return first_index[1] if entry_end == end else None
    if entry_end >= end or data[entry_end] != 0x92:
        return None
    return first_index[1]


def _refuse_if_a_valid_record_follows(
    path: Path,
    data: bytes,
    offset: int,
    reason: str,
    *,
    plausible_from: int,
    max_record_bytes: int,
) -> None:
    """Raise CorruptLogError if a valid record starts after the bad record at `offset`.

    The bad record looks torn (its extent reaches EOF), but a torn write is the last thing in the
    file: a valid record after it means the damage is in the middle (say, a flipped bit in a
    length field), and cutting at `offset` would discard acknowledged entries.
    """
    size = len(data)
    scan_from = offset + 1
    # The last valid record after the damage, if there is one, is followed by nothing but a
    # zero-filled tail (a torn record there too would be a second fault), so it starts at most
    # header + max_record_bytes before the last non-zero byte.
    data_end = _end_of_nonzero(data, scan_from)
    if data_end == scan_from:
        return  # only zeros follow: a zero-filled tail
    scan_from = max(scan_from, data_end - RECORD_HEADER.size - max_record_bytes)
    length_max = min(max_record_bytes, size - scan_from - RECORD_HEADER.size)
    if length_max < 1:
        return
    window_bytes = size - scan_from
    checksum_bytes_max = _SCAN_CHECKSUM_PASSES_MAX * window_bytes
    candidates = 0
    checksum_bytes = 0
    view = memoryview(data)
    pattern = _record_start_pattern(min(length_max >> 24, 0xFF))
    # A match ends on a non-zero byte (a bin marker), so the zeros past data_end need no look.
    for match in pattern.finditer(data, scan_from + RECORD_HEADER.size, data_end):
        candidates += 1
        start = match.start() - RECORD_HEADER.size
        length, expected_crc = RECORD_HEADER.unpack_from(data, start)
        payload_start = start + RECORD_HEADER.size
        payload_end = payload_start + length
        if length == 0 or length > max_record_bytes or payload_end > size:
            accepted = False  # most random headers claim more than remains
        else:
            first_index = _payload_first_index(data, payload_start, payload_end)
            accepted = first_index is not None and first_index >= plausible_from
        if accepted:
            checksum_bytes += length
        if candidates > _SCAN_CANDIDATES_MAX or checksum_bytes > checksum_bytes_max:
            raise CorruptLogError(
                path,
                offset,
                f"record at {offset} is damaged ({reason}), and the last {window_bytes} bytes of "
                "the file hold too many record-like byte patterns to rule out a valid record "
                "among them: refusing to guess whether acknowledged entries follow",
            )
        if not accepted or zlib.crc32(view[payload_start:payload_end]) != expected_crc:
            continue
        try:
            first_index, pairs = _decode_payload(path, start, data[payload_start:payload_end])
        except CorruptLogError:
            continue  # checksummed but not a record: the checksum matched by chance
        raise CorruptLogError(
            path,
            offset,
            f"record at {offset} is damaged but a valid record follows at {start}: refusing to "
            f"discard acknowledged entries (the damaged record: {reason}; the record at {start} "
            f"holds entries {first_index} to {first_index + len(pairs) - 1})",
        )


def _check_record(
    data: bytes, offset: int, max_record_bytes: int, nonzero_end: int
) -> tuple[str | None, bool]:
    """Check the framing of the record at `offset`, which starts before `nonzero_end` (the
    offset just past the segment's last non-zero byte).

    Returns (None, False) if header and CRC are good, else the reason and whether the bad
    record's claimed extent reaches the end of the file's written bytes: end of file, or zeros
    from its end on (which makes it a torn tail in the last segment).
    """
    size = len(data)
    remaining = size - offset
    if remaining < RECORD_HEADER.size:
        return f"only {remaining} bytes left, too few for a record header", True
    length, expected_crc = RECORD_HEADER.unpack_from(data, offset)
    end = offset + RECORD_HEADER.size + length
    if length == 0 and expected_crc == 0:
        # crc32(b"") is 0, so a zero header would otherwise pass as an empty record. Non-zero
        # bytes follow it (the caller stops at the zeros that end the written bytes): the rest
        # of a record whose first page never reached the disk, if nothing valid follows.
        return "zero-filled record header followed by non-zero bytes", True
    if length > max_record_bytes:
        reason = f"record length {length} is over the {max_record_bytes}-byte limit"
        return reason, end >= nonzero_end
    if end > size:
        return f"record of {length} payload bytes runs {end - size} bytes past end of file", True
    actual_crc = zlib.crc32(memoryview(data)[offset + RECORD_HEADER.size : end])
    if actual_crc != expected_crc:
        followed_by = (f"{size - end} bytes follow the record" if end < nonzero_end
                       else f"only zeros follow it ({size - end} bytes)")
        reason = (
            f"checksum mismatch: header says {expected_crc:#010x}, payload has "
            f"{actual_crc:#010x}, and {followed_by}"
        )
        return reason, end >= nonzero_end
    return None, False


def _drop_cached_pages(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _read_from_disk(path: Path) -> bytes:
    """A segment's bytes as the disk holds them: its clean cached pages are dropped first,
    which the kernel then reads again from the disk. After a failed writeback the cache may
    hold pages, marked clean, that never reached it (PostgreSQL's "fsyncgate")."""
    with open(path, "rb") as f:
        _drop_cached_pages(f.fileno())
        return f.read()


def _check_segment_header(path: Path, data: bytes, *, is_last: bool) -> bool:
    """True if the header is good, False if it is a torn creation; raises on corruption."""
    header = data[: len(SEGMENT_HEADER)]
    if header == SEGMENT_HEADER:
        return True
    # A torn creation wrote a prefix of the header, if anything, then nothing but zeros (the
    # file's preallocated space, or a tail the filesystem zero-filled) or nothing at all.
    written = data[: _end_of_nonzero(data, 0)]
    if is_last and len(written) < len(SEGMENT_HEADER) and SEGMENT_HEADER.startswith(written):
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
        preallocate_bytes: int = 0,
        recovery_truncated_at: tuple[Path, int] | None = None,
        recovery_truncated_bytes: int = 0,
        archiver: SegmentArchiver | None = None,
    ) -> None:
        self._directory = directory
        self._segments = segments
        self._first_index = first_index
        self._last_index = last_index
        self._segment_size_bytes = segment_size_bytes
        self._segment_bytes = segment_bytes
        self._max_record_bytes = max_record_bytes
        self._preallocate_bytes = preallocate_bytes
        self._fd: int | None = None
        if segments:
            self._fd = os.open(segments[-1].path, os.O_WRONLY | os.O_CLOEXEC)
        # The current segment's file size: its records (`_segment_size_bytes`) and then the
        # zeros preallocated after them. open() cut any such zeros a previous run left.
        self._allocated_bytes = segment_size_bytes if segments else 0
        self._segment_unsynced = False
        self._directory_unsynced = False
        self._closed = False
        # After a failed write or fsync the file's state is unknown (and a failed fsync may have
        # dropped dirty pages), so the only safe continuation is a restart that re-reads the disk.
        self._failed = False
        self._preallocate_failing = False  # the last preallocation failed (logged once)
        self._recovery_truncated_at = recovery_truncated_at
        self._recovery_truncated_bytes = recovery_truncated_bytes
        self._archiver = archiver
        # What of the current segment the last fsync covered (all of it at open: what a
        # previous run left is what is on disk): the part of it the archive may copy.
        self._synced_size_bytes = segment_size_bytes if segments else 0
        self._synced_highest_index = segments[-1].highest_index if segments else 0

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_LIMITS.wal_segment_bytes,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        archive_dir: Path | None = None,
        archive_owner: ArchiveOwner | None = None,
        preallocate_bytes: int = DEFAULT_LIMITS.wal_preallocate_bytes,
    ) -> tuple[WriteAheadLog, list[Entry]]:
        """Open (creating if needed) the log in `directory`; return it and its entries.

        Repairs a torn tail as described in the module docstring; raises CorruptLogError for
        anything else that does not check out. With `archive_dir`, segments are copied there
        (see the module docstring); StorageError if it cannot be used (inside `directory`,
        not creatable, locked by another node, or `archive_owner` is not the one it records:
        see wal_archive.claim_archive). `preallocate_bytes` is how far ahead of its
        records a segment's file is extended (0: not at all); see the module docstring.
        """
        invariant(segment_bytes > len(SEGMENT_HEADER), f"segment_bytes {segment_bytes} too small")
        invariant(max_record_bytes >= 1, f"max_record_bytes {max_record_bytes} must be >= 1")
        create_directory(directory)
        listed = _list_segments(directory)
        segments: list[_Segment] = []
        entries: list[Entry] = []
        log_first_index = 0  # 0 while the log is empty
        segment_size_bytes = 0
        truncated_at: tuple[Path, int] | None = None
        truncated_bytes = 0
        for position, (name_index, path) in enumerate(listed):
            is_last = position == len(listed) - 1
            if name_index < 1:
                raise CorruptLogError(path, 0, "segment name says index 0; indexes start at 1")
            data = _read_from_disk(path)
            if not _check_segment_header(path, data, is_last=is_last):
                log.warning(
                    "write-ahead log %s: removing this last segment, torn by a crash while it was "
                    "being created; discarding its %d bytes from byte offset 0 (%s)",
                    path,
                    len(data),
                    "a cut-short segment header" if data.count(0) < len(data) else "all zeros",
                )
                truncated_at, truncated_bytes = (path, 0), len(data)
                cls._remove_empty_last_segment(directory, path)
                continue
            records, records_end, torn = _read_records(
                path,
                data,
                name_index=name_index,
                is_last=is_last,
                max_record_bytes=max_record_bytes,
            )
            size_bytes = len(data)
            if torn is None and records and records_end < size_bytes:
                # Preallocated space the last run did not fill (it was killed, or its close()
                # did not cut it): nothing was written there, so nothing is discarded.
                log.debug("write-ahead log %s: cutting %d bytes of unused preallocated space "
                          "at byte offset %d", path, size_bytes - records_end, records_end)
                cls._truncate(path, records_end)
                size_bytes = records_end
            if torn is not None:
                discarded = len(data) - torn.offset
                log.warning(
                    "write-ahead log %s: cutting a torn tail at byte offset %d, discarding %d "
                    "bytes left by a crash during the last write (%s)",
                    path,
                    torn.offset,
                    discarded,
                    torn.reason,
                )
                cls._truncate(path, torn.offset)
                truncated_at, truncated_bytes = (path, torn.offset), discarded
                size_bytes = torn.offset
            if not records:
                if not is_last:
                    raise CorruptLogError(
                        path, len(SEGMENT_HEADER), "segment holds no records but is not the last"
                    )
                log.warning(
                    "write-ahead log %s: removing this last segment, left with no records; "
                    "%d bytes discarded in all from byte offset 0",
                    path,
                    len(data),
                )
                # The whole file goes, so that is what was discarded, torn tail included.
                truncated_at, truncated_bytes = (path, 0), len(data)
                cls._remove_empty_last_segment(directory, path)
                continue
            if records[0].first_index != name_index:
                raise CorruptLogError(
                    path,
                    records[0].offset,
                    f"first record starts at index {records[0].first_index} but the segment "
                    f"name says {name_index}",
                )
            segment = _Segment(path, name_index, name_index, name_index - 1, size_bytes)
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
        archiver = None
        if archive_dir is not None:
            archiver = cls._open_archiver(directory, Path(archive_dir), segments, archive_owner)
        wal = cls(
            directory,
            segments,
            first_index=log_first_index,
            last_index=entries[-1][0] if entries else 0,
            segment_size_bytes=segment_size_bytes,
            segment_bytes=segment_bytes,
            max_record_bytes=max_record_bytes,
            preallocate_bytes=max(0, preallocate_bytes),
            recovery_truncated_at=truncated_at,
            recovery_truncated_bytes=truncated_bytes,
            archiver=archiver,
        )
        return wal, entries

    @staticmethod
    def _open_archiver(directory: Path, archive_dir: Path, segments: list[_Segment],
                       owner: ArchiveOwner | None) -> SegmentArchiver:
        wal_dir, archive = directory.resolve(), archive_dir.resolve()
        if archive == wal_dir or wal_dir in archive.parents:
            raise StorageError(f"the log archive {archive_dir} must not be inside the log "
                               f"directory {directory}")
        archiver = SegmentArchiver(archive_dir, owner)
        # What a previous run may not have archived (it crashed, or archiving was off then):
        # copied now unless the archive holds it already. The last segment too, as it is on
        # disk now: a crashed run archived none of what it added to it.
        for segment in segments:
            segment.archive_job = archiver.submit(
                segment.path, first_index=segment.first_index,
                last_index=segment.highest_index, size_bytes=segment.size_bytes,
                skip_if_copied=True)
        return archiver

    @staticmethod
    def _truncate(path: Path, offset: int) -> None:
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

    @property
    def recovery_truncated_at(self) -> tuple[Path, int] | None:
        """Where `open()` cut a torn tail: the file and the byte offset the discarded bytes began
        at (0 when the whole last segment was removed); None if it discarded nothing."""
        return self._recovery_truncated_at

    @property
    def recovery_truncated_bytes(self) -> int:
        """How many bytes `open()` discarded as a torn tail (0 if none)."""
        return self._recovery_truncated_bytes

    @property
    def archive_errors(self) -> int:
        """Segment copies that failed (each logged as an ERROR); 0 without an archive."""
        return self._archiver.errors if self._archiver is not None else 0

    def wait_for_archive(self, timeout_s: float = ARCHIVE_WAIT_BEFORE_DELETE_S) -> bool:
        """Wait until every copy handed to the archiver so far is made or has failed; False on
        timeout. True at once without an archive."""
        return self._archiver is None or self._archiver.wait_idle(timeout_s)

    def archive_status(self) -> dict | None:
        """The archive's state for /status, None if the log is not archived."""
        archiver = self._archiver
        if archiver is None:
            return None
        return {"dir": str(archiver.directory), "copies": archiver.copies,
                "pending": archiver.pending, "errors": archiver.errors,
                "last_error": archiver.last_error}

    def append(self, entries: Sequence[Entry]) -> None:
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
            fd = self._fd
            if fd is None or (
                self._segment_size_bytes >= self._segment_bytes
                and first > self._segments[-1].first_index
            ):
                fd = self._start_segment(first)
                record = SEGMENT_HEADER + record
            offset = self._segment_size_bytes
            end = offset + len(record)
            if end > self._allocated_bytes:
                self._preallocate(fd, end)
            pwrite_fully(fd, record, offset)
            self._allocated_bytes = max(self._allocated_bytes, end)
        except BaseException:
            self._fail()
            raise
        self._segment_size_bytes += len(record)
        self._segment_unsynced = True
        segment = self._segments[-1]
        segment.lowest_record_index = min(segment.lowest_record_index, first)
        segment.highest_index = max(segment.highest_index, last)
        if self._last_index == 0 or first < self._first_index:
            self._first_index = first
        self._last_index = last

    def _preallocate(self, fd: int, end: int) -> None:
        """Before a write that extends the current segment's file to `end`: extend it further,
        to `preallocate_bytes` past the records, but not past `segment_bytes` (the segment is
        closed there). Writes into that space leave the file's size alone, so their fdatasync
        has no metadata to record. If the filesystem cannot (or the disk is full), the write
        extends the file itself, as it would without preallocation."""
        target = min(self._segment_size_bytes + self._preallocate_bytes, self._segment_bytes)
        if target < end:
            return
        wanted = target - self._allocated_bytes
        try:
            os.posix_fallocate(fd, self._allocated_bytes, wanted)
        except OSError as exc:
            # A failed call may still have extended the file: its size is what counts.
            self._allocated_bytes = max(self._allocated_bytes, os.fstat(fd).st_size)
            if exc.errno != errno.ENOSPC:
                self._preallocate_bytes = 0  # not supported here: do not ask on every write
            if not self._preallocate_failing:  # once, not on every append while the disk is full
                log.warning("write-ahead log %s: could not preallocate %d bytes (%s); %s",
                            self._directory, wanted, exc,
                            "will retry (said once until it works again)"
                            if exc.errno == errno.ENOSPC else "writing without it")
            self._preallocate_failing = True
            return
        if self._preallocate_failing:
            log.info("write-ahead log %s: preallocating again", self._directory)
        self._preallocate_failing = False
        self._allocated_bytes = target

    def _start_segment(self, first_index: int) -> int:
        """Open a new segment starting at `first_index`; its file descriptor."""
        if self._fd is not None:
            # A sync point: after it, nothing before the new segment can be torn, which is what
            # lets recovery treat damage in any but the last segment as corruption.
            # Only the last segment may end in unused preallocated space, and a segment closed
            # here has none: it is closed once its records reach segment_bytes, which is as far
            # as `_preallocate` extends it.
            invariant(self._allocated_bytes <= self._segment_size_bytes,
                      f"segment closed with {self._allocated_bytes - self._segment_size_bytes} "
                      "bytes of preallocated space after its records")
            if self._segment_unsynced:
                _datasync(self._fd)
                self._segment_unsynced = False
            if self._directory_unsynced:
                fsync_directory(self._directory)
                self._directory_unsynced = False
            os.close(self._fd)
            self._fd = None
            self._segments[-1].size_bytes = self._segment_size_bytes
            # The outgoing segment, and any closed one whose copy failed before: try again.
            for closed in self._segments:
                self._archive(closed, closed.size_bytes, closed.highest_index)
        path = _segment_path(self._directory, first_index)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = self._fd = os.open(path, flags, 0o644)
        self._segments.append(_Segment(path, first_index, first_index, first_index - 1))
        self._segment_size_bytes = self._allocated_bytes = 0
        self._synced_size_bytes, self._synced_highest_index = 0, first_index - 1
        self._directory_unsynced = True
        return fd

    @property
    def unsynced(self) -> bool:
        """Whether anything appended (or a new segment's name) still awaits `sync()`."""
        return self._segment_unsynced or self._directory_unsynced

    def sync(self) -> None:
        """Make every appended record durable (one fsync, plus the directory after a rotation)."""
        self._check_usable()
        try:
            if self._segment_unsynced:
                fd = self._fd
                if fd is None:
                    raise InvariantViolation("records were appended with no segment open")
                _datasync(fd)
                self._segment_unsynced = False
            if self._directory_unsynced:
                fsync_directory(self._directory)
                self._directory_unsynced = False
        except BaseException:
            self._fail()
            raise
        if self._segments:
            self._synced_size_bytes = self._segment_size_bytes
            self._synced_highest_index = self._segments[-1].highest_index

    def drop_segments_through(self, index: int) -> int:
        """Delete the oldest whole segments holding only entries <= `index`; return how many.

        The current segment is never dropped. Only a prefix of segments goes, because replay
        reads them in order: a segment is kept, and so is everything after it, as soon as one
        holds an entry above `index`.
        """
        self._check_usable()
        dropped = 0
        deadline = time.monotonic() + ARCHIVE_WAIT_BEFORE_DELETE_S
        try:
            while len(self._segments) > 1 and self._segments[0].highest_index <= index:
                oldest = self._segments[0]
                self._archive_before_delete(oldest, oldest.size_bytes, oldest.highest_index,
                                            deadline)
                oldest.path.unlink()
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

    def reset(self) -> int:
        """Delete every segment: the log restarts after a snapshot that replaced it (the next
        `append` may start at any index). Returns how many segments were deleted. Call it only
        once the snapshot is durable: a crash midway leaves some older segments, which the
        node's start-up discards as being behind its snapshot."""
        self._check_usable()
        if self._archiver is not None and self._segments:
            deadline = time.monotonic() + ARCHIVE_WAIT_BEFORE_DELETE_S
            for segment in self._segments[:-1]:
                self._archive_before_delete(segment, segment.size_bytes, segment.highest_index,
                                            deadline)
            self._archive_before_delete(self._segments[-1], self._synced_size_bytes,
                                        self._synced_highest_index, deadline)
        dropped = 0
        try:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            for segment in self._segments:
                segment.path.unlink(missing_ok=True)
                dropped += 1
            fsync_directory(self._directory)
        except BaseException:
            self._failed = True
            raise
        self._segments = []
        self._segment_size_bytes = self._allocated_bytes = 0
        self._synced_size_bytes = self._synced_highest_index = 0
        self._segment_unsynced = self._directory_unsynced = False
        self._first_index = self._last_index = 0
        if self._archiver is not None:
            self._archiver.new_generation()  # a new log: its copies order after the old one's
        return dropped

    def close(self) -> None:
        """Release the file; does not sync (call `sync()` first for durability). With an
        archive, copy the current segment's durable part there first and wait for every copy."""
        if self._closed:
            return
        if self._archiver is not None:
            for closed in self._segments[:-1]:  # those whose copy failed so far
                self._archive(closed, closed.size_bytes, closed.highest_index,
                              wait_s=ARCHIVE_WAIT_BEFORE_DELETE_S)
            if self._segments:
                self._archive(self._segments[-1], self._synced_size_bytes,
                              self._synced_highest_index, wait_s=ARCHIVE_WAIT_BEFORE_DELETE_S)
            self._archiver.close()
        if self._fd is not None:
            if not self._failed and self._allocated_bytes > self._segment_size_bytes:
                # The file ends with its records again; if this cut is lost in a crash, open()
                # makes it.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._segment_size_bytes)
            os.close(self._fd)
            self._fd = None
        self._closed = True

    def _archive(self, segment: _Segment, size_bytes: int, last_index: int, *,
                 wait_s: float = 0.0) -> ArchiveJob | None:
        """Hand the first `size_bytes` bytes of `segment` to the archiver, unless they are
        there already or hold no record. Never raises."""
        if self._archiver is None or size_bytes <= len(SEGMENT_HEADER):
            return None
        job = segment.archive_job
        if job is not None and job.size_bytes == size_bytes and (job.ok or not job.done.is_set()):
            return job  # copied, or being copied
        job = self._archiver.submit(segment.path, first_index=segment.first_index,
                                    last_index=last_index, size_bytes=size_bytes, wait_s=wait_s)
        segment.archive_job = job
        return job

    def _archive_before_delete(self, segment: _Segment, size_bytes: int, last_index: int,
                               deadline: float) -> None:
        """Make sure the archive holds `segment` before the log deletes it, waiting for its
        copy until `deadline` (time.monotonic(); one budget for all the segments of one drop
        or reset). A failure is logged and counted by the archiver, never raised."""
        job = self._archive(segment, size_bytes, last_index,
                            wait_s=max(0.001, deadline - time.monotonic()))
        if job is None or job.done.wait(max(0.0, deadline - time.monotonic())):
            return
        log.warning("log archive: segment %s is deleted while its copy is still being made "
                    "(waited %.0f s); the copy goes on from the open file, but a crash before "
                    "it ends leaves the archive without it", segment.path,
                    ARCHIVE_WAIT_BEFORE_DELETE_S)

    def _fail(self) -> None:
        """A write or fsync of the log failed: unusable from now on, and the current segment
        cut back to what the last successful fsync made durable. Without the cut, a restart
        would read the records the disk may not hold from the page cache, which outlives the
        process (and Linux keeps pages whose writeback failed as if they were written): the
        node would acknowledge entries to its leader that one power cut later are gone."""
        self._failed = True
        fd = self._fd
        if fd is None:
            return
        try:
            os.ftruncate(fd, self._synced_size_bytes)
            _drop_cached_pages(fd)
            self._allocated_bytes = min(self._allocated_bytes, self._synced_size_bytes)
        except OSError as e:
            log.error("write-ahead log %s: after an I/O error, could not cut the current segment "
                      "back to its last durable byte %d (%s); the next start reads it from the "
                      "disk, not from the cache", self._directory, self._synced_size_bytes, e)

    def _check_usable(self) -> None:
        invariant(not self._closed, f"write-ahead log {self._directory} used after close()")
        if self._failed:
            raise StorageError(
                f"write-ahead log {self._directory} is unusable after an earlier I/O error; "
                "restart the node so it recovers from what is on disk"
            )


@overload
def read_archive(
    directory: Path | str,
    *,
    first_index: int = 1,
    last_index: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    convert: None = None,
) -> list[tuple[int, int, bytes]]: ...


@overload
def read_archive(
    directory: Path | str,
    *,
    first_index: int = 1,
    last_index: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    convert: Callable[[bytes], _Converted],
) -> list[tuple[int, int, _Converted]]: ...


def read_archive(
    directory: Path | str,
    *,
    first_index: int = 1,
    last_index: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    convert: Callable[[bytes], Any] | None = None,
) -> list[tuple[int, int, Any]]:
    """The log an archive directory describes: `(index, term, data)` in index order.

    The copies are read in write order (see `replikv.storage.wal_archive`) and their records
    applied with the override rule: a record starting at or below the last index replaces
    the log from its first index on. Of several copies of one segment in one generation the
    longest is used, after checking that the others are its prefixes. A record starting past
    the end leaves a gap (a reset log restarted after a snapshot, or a copy missing): the result
    is then not contiguous, and the caller decides whether the gap matters.

    Only entries within `first_index`..`last_index` are kept (every copy is still read and
    checked, as an override anywhere can reach into the window), which bounds memory to the
    window; `convert`, if given, maps each kept entry's data to what is kept instead (say, its
    time). Read-only: nothing in `directory` is repaired, removed or created. Any damage, even
    what `open()` would call a torn tail (a copy is only ever renamed into place complete),
    raises CorruptLogError naming the file and byte offset; StorageError if `directory` is not
    a directory.
    """
    directory = Path(directory)
    high = last_index if last_index is not None else float("inf")
    groups: dict[tuple[int, int], list] = {}
    for copy in list_archive(directory):
        groups.setdefault((copy.generation, copy.first_index), []).append(copy)
    entries: list[tuple[int, int, Any]] = []
    for key in sorted(groups):
        copies = groups[key]  # shortest first (list_archive's order)
        longest = copies[-1]
        data = _read_archived_copy(longest)
        for shorter in copies[:-1]:
            _check_prefix(_read_archived_copy(shorter), shorter.path, data, longest.path)
        if not _check_segment_header(longest.path, data, is_last=False):
            raise CorruptLogError(longest.path, 0, "bad segment header")  # unreachable
        records, _, _ = _read_records(longest.path, data, name_index=longest.first_index,
                                   is_last=False, max_record_bytes=max_record_bytes)
        if not records:
            raise CorruptLogError(longest.path, len(SEGMENT_HEADER), "archived segment holds "
                                  "no records")
        if records[0].first_index != longest.first_index:
            raise CorruptLogError(longest.path, records[0].offset,
                                  f"first record starts at index {records[0].first_index} but "
                                  f"the name says {longest.first_index}")
        highest = max(r.first_index + len(r.pairs) - 1 for r in records)
        if highest != longest.last_index:
            raise CorruptLogError(longest.path, records[-1].offset,
                                  f"the records reach index {highest} but the name says "
                                  f"{longest.last_index}")
        for record in records:
            first = record.first_index
            if entries and entries[-1][0] >= first:
                del entries[bisect.bisect_left(entries, first, key=_entry_index):]
            for offset, (term, entry_data) in enumerate(record.pairs):
                index = first + offset
                if first_index <= index <= high:
                    entries.append((index, term,
                                    entry_data if convert is None else convert(entry_data)))
    return entries


def _entry_index(entry: tuple[int, int, object]) -> int:
    return entry[0]


def _read_archived_copy(copy: ArchivedSegment) -> bytes:
    data = copy.path.read_bytes()
    if len(data) != copy.size_bytes:
        raise CorruptLogError(copy.path, min(len(data), copy.size_bytes),
                              f"the archived copy holds {len(data)} bytes but its name says "
                              f"{copy.size_bytes}")
    return data


def _check_prefix(shorter: bytes, shorter_path: Path, longer: bytes, longer_path: Path) -> None:
    """Two copies of one segment from one generation: the shorter must begin the longer."""
    if longer.startswith(shorter):
        return
    differs_at = next(i for i, (a, b) in enumerate(zip(shorter, longer, strict=False)) if a != b)
    raise CorruptLogError(
        shorter_path, differs_at,
        f"this copy of the segment and the longer copy {longer_path.name} differ from this "
        "byte on, but a segment only ever grows: one of them is damaged (move aside the one "
        "you do not trust)")
