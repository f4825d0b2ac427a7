"""Making bytes durable on a POSIX filesystem, and checking them when they come back.

Nothing written is durable until fsync returns, and a new or renamed directory entry is not
durable until its directory has been fsynced too; these functions exist so that no caller has to
remember that. Small state files (hard state, data dir meta) are replaced atomically: write
`<name>.tmp`, fsync it, rename it over `<name>`, fsync the directory. A crash leaves either the
old file or the new one, plus perhaps a stale `.tmp` that the next write truncates.

Those small files share one checksummed framing: magic, a format version byte, the CRC32 of the
body, then the body. The CRC turns a damaged sector into a clear error instead of a wrong vote.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from replikv.storage.errors import CorruptStateError

_CHECKSUM = struct.Struct("<I")

# A big file being written (a snapshot, a backup) is fdatasynced every this many bytes, one sync
# at a time: the disk writes it back in small pieces as it goes, not all at once at the end,
# where the log's fsyncs (on every write's path) would queue behind it for tens of milliseconds.
SYNC_EVERY_BYTES = 4 * 1024 * 1024


def fsync_directory(path: Path) -> None:
    """Make the entries of directory `path` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_directory(path: Path) -> None:
    """Create `path` and any missing parents, making each new directory entry durable."""
    missing: list[Path] = []
    cursor = path
    while not cursor.is_dir():
        missing.append(cursor)
        cursor = cursor.parent
    # Top-down, so that each parent exists before the fsync that records its new child.
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            # Someone else made it between our check and now; it still needs a durable entry.
            pass
        fsync_directory(directory.parent)


def write_fully(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until every byte is written: a write may legally write fewer bytes than asked."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_fully(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """os.pwrite at `offset` until every byte is written (a write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_file_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace `path` with `data` so that after a crash it holds either the old or new bytes.

    With `fsync=False` (only for a node whose operator chose fsync = "never") the replacement is
    still atomic for a process crash, but nothing is forced to disk: after a power loss the file
    may hold the old bytes, the new ones, or (on some filesystems) be empty or damaged, which
    its reader's checksum then reports.
    """
    tmp_path = path.with_name(path.name + ".tmp")
    # O_TRUNC: a .tmp left by a crash in an earlier write is simply overwritten.
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_fully(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp_path, path)
    if fsync:
        fsync_directory(path.parent)


def encode_checksummed(magic: bytes, version: int, body: bytes) -> bytes:
    """Frame `body` as magic, version byte, CRC32(body), body."""
    return magic + bytes([version]) + _CHECKSUM.pack(zlib.crc32(body)) + body


def decode_checksummed(path: Path, data: bytes, magic: bytes, version: int) -> bytes:
    """Check the framing written by `encode_checksummed` and return the body.

    `path` only names the file in the error; raises CorruptStateError saying what is wrong.
    """
    header_bytes = len(magic) + 1 + _CHECKSUM.size
    if len(data) < header_bytes:
        if not magic.startswith(data[: len(magic)]):
            raise CorruptStateError(path, f"bad magic {data[: len(magic)]!r}, expected {magic!r}")
        raise CorruptStateError(
            path, f"truncated: {len(data)} bytes, shorter than the {header_bytes}-byte header"
        )
    if data[: len(magic)] != magic:
        raise CorruptStateError(path, f"bad magic {data[: len(magic)]!r}, expected {magic!r}")
    found_version = data[len(magic)]
    if found_version != version:
        raise CorruptStateError(
            path, f"unknown format version {found_version} (this replikv reads version {version})"
        )
    (expected_crc,) = _CHECKSUM.unpack_from(data, len(magic) + 1)
    body = data[header_bytes:]
    actual_crc = zlib.crc32(body)
    if actual_crc != expected_crc:
        raise CorruptStateError(
            path,
            f"checksum mismatch: header says {expected_crc:#010x}, body of {len(body)} bytes "
            f"has {actual_crc:#010x} (the file is damaged or was cut short)",
        )
    return body
