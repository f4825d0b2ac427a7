"""Snapshot files: the key-value state at one log index, checksummed, written and read as a stream.

A snapshot lets the node drop the log up to its index (log compaction), lets a leader bring a
far-behind follower up to date by sending it, and (issue #6) is what a backup holds. The state
can be far larger than what we may hold twice in memory, so the format is a sequence of framed
records written and verified one at a time: memory is bounded by the largest record, never by
the state. A file only gets its final name once it is complete and fsynced (written to `*.tmp`,
or received as `*.partial` and verified in full), so a crash leaves either a whole snapshot or
debris that `SnapshotStore` deletes at startup.

On-disk format, version 1 (the numbers below are never renumbered):

    header   8 bytes: b"RKVSNAP" then the format version byte (1)
    records  each `struct.pack("<II", payload_length, crc32(payload))` then the payload, a
             msgpack array whose first element is the record type:

      [0, manifest]           RECORD_MANIFEST, exactly once, first. `manifest` is a map with str
                              keys: "format" (int, equals the header's version), "index" and
                              "term" (ints >= 0: the last log entry the state includes),
                              "created_ms" (int, wall clock, informational), "node_id",
                              "cluster_id", "replication_mode" (str), and "extra" (a map the
                              caller supplies, e.g. the cluster membership; it reads back as
                              msgpack decodes it, so tuples come back as lists). Readers ignore
                              keys they do not know.
      [1, [item, ...]]        RECORD_BATCH, zero or more, a non-empty list of items:
                                [key, 0, value, expire_at_ms|None]        ITEM_STRING: key := bytes
                                [key, 1, [member, ...], expire_at_ms|None] ITEM_SET: key := a set
                                    of these members, in position order
                                [key, 2, [member, ...], None]             ITEM_SET_MORE: more
                                    members (in order) of the set begun by the item just before,
                                    which has the same key (a big set is split so that no record
                                    grows past ITEM_SET_CHUNK_BYTES_MAX of members)
                                [key, 3, [field, value, ...], expire_at_ms|None] ITEM_HASH: key :=
                                    a hash of these fields (each followed by its value), in
                                    position order
                                [key, 4, [field, value, ...], None]       ITEM_HASH_MORE: more
                                    fields of the hash begun by the item just before, as
                                    ITEM_SET_MORE continues a set
                                [key, 5, [element, ...], expire_at_ms|None] ITEM_LIST: key := a
                                    list of these elements, in order (repeats allowed)
                                [key, 6, [element, ...], None]            ITEM_LIST_MORE: more
                                    elements of the list begun by the item just before, as
                                    ITEM_SET_MORE continues a set
                                [key, 7, [member, score, ...], expire_at_ms|None] ITEM_ZSET:
                                    key := a sorted set of these members, each followed by its
                                    score (a msgpack float64: -0.0 and infinities as they are,
                                    never NaN), lowest score first
                                [key, 8, [member, score, ...], None]      ITEM_ZSET_MORE: more
                                    members of the sorted set begun by the item just before, as
                                    ITEM_SET_MORE continues a set
                                [key, 9, [meta, [entry, ...]], expire_at_ms|None] ITEM_STREAM:
                                    key := a stream: its meta (ids, counters, consumer groups
                                    with their consumers and pending entries) and its first
                                    entries, each [ms, seq, field, value, ...], ascending (the
                                    shapes of replikv.stream_value's image; the entry list
                                    may be empty, and so may the stream)
                                [key, 10, [entry, ...], None]             ITEM_STREAM_MORE:
                                    more entries of the stream begun by the item just before,
                                    as ITEM_SET_MORE continues a set
                                [name, 11, [code, [[function, [flag, ...], description|None],
                                    ...]], None]                          ITEM_LIBRARY: a
                                    function library (FUNCTION LOAD): its name, its code and
                                    the functions it registered; not a key (the key count
                                    leaves it out), written before the keys
                              Keys, values, members, fields and elements are msgpack bin; member
                              and element lists are non-empty, field and sorted-set member lists
                              non-empty and of even length (no field twice in one hash, no
                              member twice in one sorted set); expiry times are absolute
                              milliseconds fitting an int64. Kinds 3 and 4 came after the first
                              release of version 1, kinds 5 and 6 after them, kinds 7 and 8
                              after those, kinds 9 and 10 after those, kind 11 after those: an older reader refuses a file that holds a kind it
                              does not know ("unknown kind"), so the version stays 1.
      [2, name, data]         RECORD_SECTION, zero or more, after every batch: a named blob the
                              caller supplies (name: non-empty str of at most
                              SECTION_NAME_BYTES_MAX UTF-8 bytes, unique in the file; data: bin).
      [3, trailer]            RECORD_TRAILER, exactly once, last; nothing may follow it. A map:
                              "key_count" (items of kind 0, 1, 3, 5, 7 or 9), "record_count" (records before
                              the trailer, manifest included), "data_bytes" (the sum of the
                              payload lengths of the batch records), "sha256" (32 bytes: SHA-256
                              of every byte of the file before the trailer record's header), and
                              "state_digest" (KVState.digest() of the state the items rebuild,
                              as hex, or None if the writer did not know it).

    The CRC of a record guards it in isolation; the trailer's SHA-256 catches what per-record
    CRCs cannot (a record dropped, duplicated or reordered, a file spliced from two snapshots),
    and its counts say the reader saw everything. A payload longer than RECORD_BYTES_MAX, or
    longer than what is left of the file, is damage: it is reported, never allocated.

Every way a file can fail to be a usable snapshot raises CorruptSnapshotError naming the file,
the byte offset and the reason. `iter_snapshot` hands out batches as it verifies, so its last
event, ("end", info), is the only proof the file was whole: restore into a fresh object and swap
it in only after that.

Naming: a complete snapshot is `snapshot-{index:020d}-{term:020d}.rkvsnap`, so name order is
index order; a snapshot being received from a peer is `recv-{index:020d}-{term:020d}.partial`,
and its size is where an interrupted transfer resumes.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import msgpack

from replikv.invariants import invariant
from replikv.limits import KIB, MIB
from replikv.storage.errors import StorageError
from replikv.storage.files import (
    create_directory,
    fsync_directory,
    pwrite_fully,
    write_fully,
)

MAGIC = b"RKVSNAP"
FORMAT_VERSION = 1  # the newest format this code writes and reads
HEADER = MAGIC + bytes([FORMAT_VERSION])
HEADER_BYTES = len(HEADER)
RECORD_HEADER = struct.Struct("<II")

RECORD_MANIFEST = 0
RECORD_BATCH = 1
RECORD_SECTION = 2
RECORD_TRAILER = 3
_RECORD_NAMES = {
    RECORD_MANIFEST: "manifest",
    RECORD_BATCH: "batch",
    RECORD_SECTION: "section",
    RECORD_TRAILER: "trailer",
}

ITEM_STRING = 0
ITEM_SET = 1
ITEM_SET_MORE = 2
ITEM_HASH = 3
ITEM_HASH_MORE = 4
ITEM_LIST = 5
ITEM_LIST_MORE = 6
ITEM_ZSET = 7
ITEM_ZSET_MORE = 8
ITEM_STREAM = 9
ITEM_STREAM_MORE = 10
ITEM_LIBRARY = 11

# Limits. The largest legitimate record is a batch holding one string of the largest size a
# command may build (512 MiB, STRING_BYTES_MAX) under a key of up to the default bulk limit
# (64 MiB), plus msgpack framing; anything claiming more is damage. The other sizes are targets
# the state's snapshot cursor aims for, so that ordinary records stay small: a batch is built in
# one event-loop turn, and a reader holds about one decoded batch (~3x its bytes) at a time.
RECORD_BYTES_MAX = 640 * MIB
BATCH_BYTES_TARGET = 256 * KIB  # the cursor ends a batch once its items reach this many bytes
# Member bytes in one set item, field and value bytes in one hash item (one may exceed it).
ITEM_SET_CHUNK_BYTES_MAX = 256 * KIB
SECTION_NAME_BYTES_MAX = 255
CHUNK_BYTES_MAX = 16 * MIB  # one chunk of a snapshot sent to or received from a peer
_IO_BUFFER_BYTES = 256 * KIB  # what the writer gathers before one os.write, the reader's buffer
_MANIFEST_STR_KEYS = ("node_id", "cluster_id", "replication_mode")
_MANIFEST_INT_KEYS = ("index", "term", "created_ms")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_SNAPSHOT_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.rkvsnap$")
# A writer's temp file: the final name, a unique part from mkstemp, ".tmp".
_TEMP_NAME = re.compile(r"^snapshot-\d{20}-\d{20}\.rkvsnap\.[^/]+\.tmp$")
_PARTIAL_NAME = re.compile(r"^recv-(\d{20})-(\d{20})\.partial$")

log = logging.getLogger("replikv.storage")


class CorruptSnapshotError(StorageError):
    """A snapshot file cannot be used: foreign, from a newer replikv, truncated or damaged."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"unusable snapshot {path} at byte offset {offset}: {reason}. Nothing was loaded "
            "from it; use another snapshot (an older one, or a fresh one from another replica) "
            "and keep this file as evidence if it was not expected to be damaged."
        )


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What is known about one snapshot file. `key_count` and `state_digest` come from the
    trailer, so they are None until the whole file has been verified (or if the writer did not
    know the digest)."""

    path: Path
    index: int
    term: int
    size_bytes: int
    manifest: dict = field(repr=False)
    key_count: int | None = None
    state_digest: str | None = None


def snapshot_file_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term:020d}.rkvsnap"


def partial_file_name(index: int, term: int) -> str:
    return f"recv-{index:020d}-{term:020d}.partial"


# ---- shapes, checked where data leaves for disk and again where it comes back ----


def _is_expiry(value: object) -> bool:
    return value is None or (type(value) is int and _INT64_MIN <= value <= _INT64_MAX)


def _is_member_list(value: object) -> bool:
    return type(value) is list and bool(value) and all(type(m) is bytes for m in value)


def _is_field_list(value: object) -> bool:
    """Fields each followed by its value (repeats are the restoring state's to find)."""
    return _is_member_list(value) and len(value) % 2 == 0  # type: ignore[arg-type]


def _is_score_list(value: object) -> bool:
    """Sorted-set members each followed by its score, a float that is not NaN (repeats are
    the restoring state's to find)."""
    return (type(value) is list and bool(value) and len(value) % 2 == 0
            and all(type(m) is bytes for m in value[0::2])
            and all(type(s) is float and not math.isnan(s) for s in value[1::2]))


def _is_stream_entries(value: object) -> bool:
    """Stream entries, each [ms, seq, field, value, ...] (order and ranges are the restoring
    state's to check)."""
    return type(value) is list and all(
        type(entry) is list and len(entry) >= 4 and len(entry) % 2 == 0
        and type(entry[0]) is int and type(entry[1]) is int
        and all(type(item) is bytes for item in entry[2:]) for entry in value)


def _is_stream_start(value: object) -> bool:
    """[meta, entries]: the meta a 6-list (its contents are the restoring state's to check)."""
    return (type(value) is list and len(value) == 2 and type(value[0]) is list
            and len(value[0]) == 6 and _is_stream_entries(value[1]))


def _is_stream_more(value: object) -> bool:
    return bool(value) and _is_stream_entries(value)


# The kinds that begin a key holding a collection: (the kind that continues it, the shape its
# value must have, the reason when it has not). A continuation names the collection it extends.
_COLLECTION_STARTS = {
    ITEM_SET: (ITEM_SET_MORE, _is_member_list,
               "is a set whose members are not a non-empty list of bytes"),
    ITEM_HASH: (ITEM_HASH_MORE, _is_field_list,
                ("is a hash whose fields are not a non-empty list of bytes, each field followed "
                 "by its value")),
    ITEM_LIST: (ITEM_LIST_MORE, _is_member_list,
                "is a list whose elements are not a non-empty list of bytes"),
    ITEM_ZSET: (ITEM_ZSET_MORE, _is_score_list,
                ("is a sorted set whose members are not a non-empty list of bytes, each member "
                 "followed by its score (a float, not NaN)")),
    ITEM_STREAM: (ITEM_STREAM_MORE, _is_stream_start,
                  "is a stream that is not [meta, entries], each entry [ms, seq, field, value, ...]"),
}
_CONTINUATIONS = {
    ITEM_SET_MORE: ("set", _is_member_list,
                    "continues a set with members that are not a non-empty list of bytes"),
    ITEM_HASH_MORE: ("hash", _is_field_list,
                     ("continues a hash with fields that are not a non-empty list of bytes, each "
                      "field followed by its value")),
    ITEM_LIST_MORE: ("list", _is_member_list,
                     "continues a list with elements that are not a non-empty list of bytes"),
    ITEM_ZSET_MORE: ("sorted set", _is_score_list,
                     ("continues a sorted set with members that are not a non-empty list of "
                      "bytes, each member followed by its score (a float, not NaN)")),
    ITEM_STREAM_MORE: ("stream", _is_stream_more,
                       "continues a stream with entries that are not [ms, seq, field, value, ...]"),
}
# The kinds that continue the key of the item before (every other kind is a key of its own).
CONTINUATION_KINDS = frozenset(_CONTINUATIONS)


def _is_library(value: object) -> bool:
    if type(value) is not list or len(value) != 2 or type(value[0]) is not bytes:
        return False
    functions = value[1]
    return type(functions) is list and bool(functions) and all(
        type(f) is list and len(f) == 3 and type(f[0]) is bytes and type(f[1]) is list
        and all(type(flag) is bytes for flag in f[1])
        and (f[2] is None or type(f[2]) is bytes) for f in functions)


class _ItemChecker:
    """Checks batches of items in file order, across batch boundaries (an ITEM_SET_MORE must
    follow the same key's set, an ITEM_HASH_MORE the same key's hash, and so on for lists and
    sorted sets), and counts keys. Returns a reason instead of raising, so the writer can treat
    a bad item as its own bug and the reader as damage."""

    __slots__ = ("_open", "key_count")

    def __init__(self) -> None:
        self.key_count = 0
        # The collection the last item began or continued, if it was one: (the kind that
        # continues it, its key).
        self._open: tuple[int, bytes] | None = None

    def check(self, items: object) -> str | None:
        if type(items) is not list or not items:
            return "a batch record does not hold a non-empty list of items"
        check_item = self._check_item
        for position, item in enumerate(items):
            # The usual item, a string without expiry, checked inline: `kind is ITEM_STRING`
            # holds only for that very int object (a bool or another type goes the long way).
            if (type(item) is list and len(item) == 4 and item[1] is ITEM_STRING
                    and type(item[0]) is bytes and type(item[2]) is bytes and item[3] is None):
                self._open = None
                self.key_count += 1
                continue
            problem = check_item(item)
            if problem is not None:
                return f"item {position} of the batch {problem}"
        return None

    def _check_item(self, item: object) -> str | None:
        if type(item) is not list or len(item) != 4:
            return "is not a list [key, kind, value, expire_at_ms]"
        key, kind, value, expire_at_ms = item
        if type(key) is not bytes:
            return "has a key that is not bytes"
        if not _is_expiry(expire_at_ms):
            return f"has an expiry {expire_at_ms!r} that is not None or an int64"
        if type(kind) is not int:  # bool is an int subclass, so compare types exactly
            return f"has a kind {kind!r} that is not an int"
        if kind == ITEM_STRING:
            if type(value) is not bytes:
                return "is a string whose value is not bytes"
            self._open = None
        elif kind in _COLLECTION_STARTS:
            more_kind, shape, reason = _COLLECTION_STARTS[kind]
            if not shape(value):
                return reason
            self._open = (more_kind, key)
        elif kind == ITEM_LIBRARY:
            if not _is_library(value) or expire_at_ms is not None:
                return "is a library that is not [code, [function, ...]] without expiry"
            self._open = None
            return None  # not a key
        elif kind in _CONTINUATIONS:
            name, shape, reason = _CONTINUATIONS[kind]
            if not shape(value):
                return reason
            if self._open != (kind, key):
                return f"continues the {name} {key!r}, which is not the {name} just before it"
            if expire_at_ms is not None:
                return (f"continues a {name} and repeats an expiry (only the first item has "
                        "one)")
            return None
        else:
            return f"has an unknown kind {kind!r}"
        self.key_count += 1
        return None


def _manifest_problem(manifest: object, version: int) -> str | None:
    if type(manifest) is not dict:
        return "the manifest is not a map"
    if manifest.get("format") != version or type(manifest.get("format")) is not int:
        return f"the manifest's format {manifest.get('format')!r} differs from the header's {version}"
    for name in _MANIFEST_INT_KEYS:
        value = manifest.get(name)
        if type(value) is not int or not 0 <= value <= _INT64_MAX:
            return f"the manifest's {name!r} is {value!r}, not an int >= 0"
    for name in _MANIFEST_STR_KEYS:
        if type(manifest.get(name)) is not str:
            return f"the manifest's {name!r} is {manifest.get(name)!r}, not a str"
    if type(manifest.get("extra")) is not dict:
        return "the manifest's 'extra' is not a map"
    return None


def _trailer_problem(trailer: object) -> str | None:
    if type(trailer) is not dict:
        return "the trailer is not a map"
    for name in ("key_count", "record_count", "data_bytes"):
        value = trailer.get(name)
        if type(value) is not int or value < 0:
            return f"the trailer's {name!r} is {value!r}, not an int >= 0"
    sha256 = trailer.get("sha256")
    if type(sha256) is not bytes or len(sha256) != 32:
        return "the trailer's 'sha256' is not 32 bytes"
    if trailer.get("state_digest") is not None and type(trailer["state_digest"]) is not str:
        return "the trailer's 'state_digest' is not a str or None"
    return None


def _section_problem(name: object, data: object) -> str | None:
    if type(name) is not str or not name:
        return f"a section name {name!r} is not a non-empty str"
    if len(name.encode("utf-8", "surrogatepass")) > SECTION_NAME_BYTES_MAX:
        return f"a section name is longer than {SECTION_NAME_BYTES_MAX} bytes"
    if type(data) is not bytes:
        return f"the data of section {name!r} is not bytes"
    return None


# ---- writing ----


class SnapshotWriter:
    """Writes one snapshot: construct with the manifest, `add_batch` the state's items, then
    `add_section` the caller's blobs, then `finish`. Until `finish` returns, the only file is a
    `*.tmp` in `directory`; as a context manager, leaving without `finish` (an exception, say)
    removes it.

    `manifest` must hold "index", "term", "created_ms", "node_id", "cluster_id",
    "replication_mode" and may hold "extra" (a msgpack-able dict); the writer adds "format".
    Anything else is the caller's mistake and raises ValueError. With `fsync=False` (a node
    whose operator chose fsync = "never") nothing is forced to disk."""

    def __init__(self, directory: Path | str, manifest: dict, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        checked = _manifest_for_writing(manifest)
        self.index: int = checked["index"]
        self.term: int = checked["term"]
        manifest_payload = _pack([RECORD_MANIFEST, checked])
        # What readers will see: the manifest as msgpack decodes it.
        self._manifest = msgpack.unpackb(manifest_payload, raw=False, strict_map_key=False)[1]
        create_directory(self.directory)
        fd, name = tempfile.mkstemp(
            prefix=snapshot_file_name(self.index, self.term) + ".", suffix=".tmp",
            dir=self.directory,
        )
        self._fd: int | None = fd
        self.temp_path = Path(name)
        self._finished: SnapshotInfo | None = None
        self._pending = bytearray()  # framed records not yet handed to os.write
        self._sha256 = hashlib.sha256()
        self._size_bytes = 0
        self._record_count = 0
        self._data_bytes = 0
        self._items = _ItemChecker()
        self._section_names: set[str] = set()  # membership only
        try:
            self._put(HEADER)
            self._put_record(manifest_payload)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._finished is None:
            self.abort()

    def add_batch(self, items: list[list]) -> None:
        """Append one batch of state items (as `StateSnapshotCursor.next_batch` returns them).
        An empty batch writes nothing. Batches must all come before the first section."""
        self._check_open()
        if self._section_names:
            raise ValueError("snapshot batches must all come before the first section")
        if not items:
            return
        # Items leave for disk here: a bad one is our bug, and must never reach the file.
        problem = self._items.check(items)
        invariant(problem is None, f"snapshot writer given a bad batch: {problem}")
        payload = _pack([RECORD_BATCH, items])
        self._put_record(payload)
        self._data_bytes += len(payload)

    def add_section(self, name: str, data: bytes) -> None:
        """Append the named blob `data` (e.g. "sessions"); each name at most once."""
        self._check_open()
        problem = _section_problem(name, data)
        if problem is not None:
            raise ValueError(problem)
        if name in self._section_names:
            raise ValueError(f"snapshot section {name!r} added twice")
        self._section_names.add(name)
        self._put_record(_pack([RECORD_SECTION, name, data]))

    def finish(self, *, state_digest: str | None = None) -> SnapshotInfo:
        """Write the trailer, make the file durable and give it its final name (replacing a
        snapshot of the same index and term, which holds the same state). `state_digest` is
        the digest of the state the items rebuild (`StateSnapshotCursor.state_digest()`), for
        whoever restores it to check. On any failure the temp file is removed."""
        self._check_open()
        invariant(
            state_digest is None or type(state_digest) is str, "state_digest must be a str"
        )
        try:
            trailer = {
                "key_count": self._items.key_count,
                "record_count": self._record_count,
                "data_bytes": self._data_bytes,
                "sha256": self._sha256.digest(),
                "state_digest": state_digest,
            }
            self._put_record(_pack([RECORD_TRAILER, trailer]), hashed=False)
            self._flush()
            fd, self._fd = self._fd, None
            try:
                if self._fsync:
                    os.fsync(fd)  # type: ignore[arg-type]
            finally:
                os.close(fd)  # type: ignore[arg-type]
            final_path = self.directory / snapshot_file_name(self.index, self.term)
            os.replace(self.temp_path, final_path)
        except BaseException:
            self.abort()
            raise
        if self._fsync:
            fsync_directory(self.directory)
        self._finished = SnapshotInfo(
            path=final_path,
            index=self.index,
            term=self.term,
            size_bytes=self._size_bytes,
            manifest=self._manifest,
            key_count=self._items.key_count,
            state_digest=state_digest,
        )
        return self._finished

    def abort(self) -> None:
        """Give up: close and remove the temp file. Does nothing after `finish` or `abort`."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._finished is None:
            self.temp_path.unlink(missing_ok=True)

    @property
    def size_bytes(self) -> int:
        """Bytes put so far (some may still be buffered, not yet written to the file)."""
        return self._size_bytes

    def sync_written(self) -> None:
        """fdatasync what has been written to the file so far. Callable from another thread
        than the one adding batches (it touches only the file descriptor), as long as the
        caller does not finish or abort the writer meanwhile. Syncing as it goes spreads a big
        snapshot's writeback, so that the log's own fsyncs never wait behind all of it at
        once at `finish`."""
        fd = self._fd
        if fd is not None and self._fsync:
            os.fdatasync(fd)

    def _check_open(self) -> None:
        if self._fd is None:
            raise ValueError("this snapshot writer is already finished or aborted")

    def _put_record(self, payload: bytes, *, hashed: bool = True) -> None:
        invariant(
            len(payload) <= RECORD_BYTES_MAX,
            f"a snapshot record of {len(payload)} bytes exceeds RECORD_BYTES_MAX",
        )
        self._put(RECORD_HEADER.pack(len(payload), zlib.crc32(payload)), hashed=hashed)
        self._put(payload, hashed=hashed)
        if hashed:
            self._record_count += 1

    def _put(self, data: bytes, *, hashed: bool = True) -> None:
        if hashed:
            self._sha256.update(data)
        self._size_bytes += len(data)
        if len(data) >= _IO_BUFFER_BYTES:
            # Big payloads go straight to the file rather than through another copy.
            self._flush()
            write_fully(self._fd, data)  # type: ignore[arg-type]
            return
        self._pending += data
        if len(self._pending) >= _IO_BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            write_fully(self._fd, self._pending)  # type: ignore[arg-type]
            self._pending.clear()


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _manifest_for_writing(manifest: dict) -> dict:
    if type(manifest) is not dict:
        raise ValueError("the snapshot manifest must be a dict")
    known = {*_MANIFEST_INT_KEYS, *_MANIFEST_STR_KEYS, "extra", "format"}
    unknown = sorted(str(name) for name in manifest if name not in known)
    if unknown:
        raise ValueError(f"unknown snapshot manifest keys: {', '.join(unknown)}")
    if manifest.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"this replikv writes snapshot format {FORMAT_VERSION} only")
    checked = {"format": FORMAT_VERSION, **manifest}
    checked.setdefault("extra", {})
    problem = _manifest_problem(checked, FORMAT_VERSION)
    if problem is not None:
        raise ValueError(problem)
    try:
        _pack(checked["extra"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"the snapshot manifest's extra is not msgpack-able: {exc}") from exc
    return checked


# ---- reading ----


def read_manifest(path: Path | str) -> SnapshotInfo:
    """The header and manifest of a snapshot, without reading the rest: cheap, but it says
    nothing about whether the rest of the file is intact (see `verify_snapshot`)."""
    events = _read(Path(path))
    try:
        _, info = next(events)
    finally:
        events.close()
    return info


def verify_snapshot(path: Path | str) -> SnapshotInfo:
    """Read the whole file, in bounded memory, checking every CRC, every record's shape, the
    order of records, the trailer's SHA-256 and its counts. Returns the info with key_count
    (and state_digest if recorded); raises CorruptSnapshotError on the first problem."""
    info = None
    for event in _read(Path(path)):
        if event[0] == "end":
            info = event[1]
        del event  # let each batch go before the next one is read: memory stays one batch
    invariant(info is not None, "the snapshot reader stopped without an end event")
    return info  # type: ignore[return-value]


_TRAILER_SEARCH_BYTES = 4 * KIB  # a trailer is ~150 bytes: five fields, two of them hashes


def read_trailer_hint(path: Path | str) -> dict | None:
    """The trailer record, found from the end of the file without reading the rest, or None
    if no well-framed trailer (right length, CRC, shape) ends the file. A hint only: nothing in
    it is vouched for until the whole file has been verified. It lets a single streaming pass
    know the key count up front (for a progress bar, or to start a state digest)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        take = min(size - HEADER_BYTES, _TRAILER_SEARCH_BYTES)
        if take <= RECORD_HEADER.size:
            return None
        file.seek(size - take)
        tail = file.read(take)
    # The trailer's frame starts where its claimed length reaches exactly the end of the file.
    for start in range(len(tail) - RECORD_HEADER.size - 1, -1, -1):
        length, crc = RECORD_HEADER.unpack_from(tail, start)
        if start + RECORD_HEADER.size + length != len(tail):
            continue
        payload = tail[start + RECORD_HEADER.size:]
        if zlib.crc32(payload) != crc:
            continue
        try:
            record = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001, S112 - a CRC collision on random bytes: keep looking
            continue
        if (type(record) is list and len(record) == 2 and record[0] == RECORD_TRAILER
                and _trailer_problem(record[1]) is None):
            return record[1]
    return None


def iter_snapshot(path: Path | str) -> Iterator[tuple]:
    """Yield the file's contents in file order while verifying it:
    ("batch", items) for each batch, ("section", name, data) for each section, and lastly
    ("end", info) once the trailer matched. Anything handed out before ("end", ...) is
    unverified: load it into a fresh object and use that only after the end event; the
    generator raises CorruptSnapshotError (at the end, if the trailer disagrees) otherwise."""
    events = _read(Path(path))
    try:
        next(events)  # the manifest: see read_manifest
        yield from events
    finally:
        events.close()


class _RecordReader:
    """Reads framed records from an open snapshot file, checking each frame; keeps the running
    SHA-256 of everything it has been told to hash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb", buffering=_IO_BUFFER_BYTES)  # noqa: SIM115 (closed by close)
        self.size_bytes = os.fstat(self._file.fileno()).st_size
        self.offset = 0
        self.sha256 = hashlib.sha256()

    def close(self) -> None:
        self._file.close()

    def corrupt(self, offset: int, reason: str) -> CorruptSnapshotError:
        return CorruptSnapshotError(self.path, offset, reason)

    def read_header(self) -> int:
        """Check the 8-byte header; returns the format version."""
        header = self._file.read(HEADER_BYTES)
        self.offset = len(header)
        if len(header) < HEADER_BYTES:
            if not header:
                raise self.corrupt(0, "the file is empty: truncated before the header")
            if MAGIC.startswith(header[: len(MAGIC)]):
                raise self.corrupt(
                    0, f"truncated: the file is {len(header)} bytes, shorter than its header"
                )
        if header[: len(MAGIC)] != MAGIC:
            raise self.corrupt(
                0,
                f"not a replikv snapshot: it starts with {header[: len(MAGIC)]!r} where a "
                f"snapshot starts with {MAGIC!r}",
            )
        version = header[len(MAGIC)]
        if version > FORMAT_VERSION:
            raise self.corrupt(
                len(MAGIC),
                f"written by a newer replikv: format {version}, this version reads up to "
                f"{FORMAT_VERSION}",
            )
        if version < 1:
            raise self.corrupt(len(MAGIC), f"unknown snapshot format version {version}")
        self.sha256.update(header)
        return version

    def read_record(self) -> tuple[int, list, bytes, bytes]:
        """The next record: (offset, decoded payload, frame header, payload). Raises if the file
        ends (every file ends with its trailer, so running out is truncation)."""
        offset = self.offset
        frame = self._file.read(RECORD_HEADER.size)
        if not frame:
            raise self.corrupt(
                offset,
                "truncated: the file ends here, before its trailer record (an interrupted write "
                "or transfer)",
            )
        if len(frame) < RECORD_HEADER.size:
            raise self.corrupt(offset, "truncated: the file ends inside a record header")
        length, expected_crc = RECORD_HEADER.unpack(frame)
        if length == 0:
            raise self.corrupt(offset, "bad record header: a payload length of 0")
        if length > RECORD_BYTES_MAX:
            raise self.corrupt(
                offset,
                f"bad record header: a payload of {length} bytes exceeds the maximum record "
                f"size of {RECORD_BYTES_MAX} bytes",
            )
        remaining = self.size_bytes - offset - RECORD_HEADER.size
        if length > remaining:
            # Checked before reading, so a damaged length never becomes a giant allocation.
            raise self.corrupt(
                offset,
                f"truncated: the record here claims {length} payload bytes but only "
                f"{max(remaining, 0)} remain in the file",
            )
        payload = self._file.read(length)
        if len(payload) != length:
            raise self.corrupt(offset, "truncated: the file shrank while being read")
        actual_crc = zlib.crc32(payload)
        if actual_crc != expected_crc:
            raise self.corrupt(
                offset,
                f"CRC mismatch: the record header says {expected_crc:#010x}, its payload of "
                f"{length} bytes has {actual_crc:#010x}",
            )
        self.offset = offset + RECORD_HEADER.size + length
        try:
            decoded = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # any decoder failure on checksummed bytes is corruption
            raise self.corrupt(
                offset, f"bad record: the payload is not valid msgpack ({exc})"
            ) from exc
        if type(decoded) is not list or not decoded or type(decoded[0]) is not int:
            raise self.corrupt(offset, "bad record: the payload is not [record type, ...]")
        if decoded[0] not in _RECORD_NAMES:
            raise self.corrupt(offset, f"bad record: unknown record type {decoded[0]}")
        return offset, decoded, frame, payload

    def at_end(self) -> bool:
        return not self._file.read(1)


def _read(path: Path) -> Generator[tuple, None, None]:
    """The one reader behind read_manifest, verify_snapshot and iter_snapshot: yields
    ("manifest", info), then ("batch", items) / ("section", name, data) in file order, then
    ("end", verified info). Each record is checked before it is yielded."""
    reader = _RecordReader(path)
    try:
        version = reader.read_header()
        offset, record, frame, payload = reader.read_record()
        if record[0] != RECORD_MANIFEST or len(record) != 2:
            raise reader.corrupt(offset, "bad record: the first record is not the manifest")
        manifest = record[1]
        problem = _manifest_problem(manifest, version)
        if problem is not None:
            raise reader.corrupt(offset, f"bad manifest: {problem}")
        reader.sha256.update(frame)
        reader.sha256.update(payload)
        info = SnapshotInfo(
            path=path,
            index=manifest["index"],
            term=manifest["term"],
            size_bytes=reader.size_bytes,
            manifest=manifest,
        )
        yield "manifest", info

        items = _ItemChecker()
        record_count = 1
        data_bytes = 0
        section_names: set[str] = set()  # membership only
        while True:
            offset, record, frame, payload = reader.read_record()
            kind = record[0]
            if kind == RECORD_TRAILER:
                break
            reader.sha256.update(frame)
            reader.sha256.update(payload)
            record_count += 1
            if kind == RECORD_BATCH:
                if section_names:
                    raise reader.corrupt(offset, "bad record order: a batch after a section")
                problem = items.check(record[1]) if len(record) == 2 else "has the wrong length"
                if problem is not None:
                    raise reader.corrupt(offset, f"bad batch record: {problem}")
                data_bytes += len(payload)
                yield "batch", record[1]
            elif kind == RECORD_SECTION:
                if len(record) != 3:
                    raise reader.corrupt(offset, "bad section record: not [2, name, data]")
                _, name, data = record
                problem = _section_problem(name, data)
                if problem is None and name in section_names:
                    problem = f"section {name!r} appears twice"
                if problem is not None:
                    raise reader.corrupt(offset, f"bad section record: {problem}")
                section_names.add(name)
                yield "section", name, data
            else:
                raise reader.corrupt(offset, "bad record order: a second manifest")
            record = frame = payload = None  # type: ignore[assignment]  # see verify_snapshot

        trailer = record[1] if len(record) == 2 else None
        problem = _trailer_problem(trailer)
        if problem is not None:
            raise reader.corrupt(offset, f"bad trailer record: {problem}")
        actual_sha256 = reader.sha256.digest()
        if trailer["sha256"] != actual_sha256:  # type: ignore[index]
            raise reader.corrupt(
                offset,
                f"trailer checksum mismatch: the SHA-256 of the {offset} bytes before the "
                f"trailer is {actual_sha256.hex()}, the trailer says "
                f"{trailer['sha256'].hex()} (records were altered, lost or reordered)",  # type: ignore[index]
            )
        for name, counted in (("record_count", record_count), ("data_bytes", data_bytes)):
            if trailer[name] != counted:  # type: ignore[index]
                raise reader.corrupt(
                    offset,
                    f"{name} mismatch: the trailer says {trailer[name]}, the file has {counted}",  # type: ignore[index]
                )
        if trailer["key_count"] != items.key_count:  # type: ignore[index]
            raise reader.corrupt(
                offset,
                f"key count mismatch: the trailer says {trailer['key_count']} keys, the "  # type: ignore[index]
                f"batches hold {items.key_count}",
            )
        if not reader.at_end():
            raise reader.corrupt(
                reader.offset,
                f"{reader.size_bytes - reader.offset} bytes of unknown data after the trailer",
            )
        yield "end", replace(
            info, key_count=items.key_count, state_digest=trailer["state_digest"]  # type: ignore[index]
        )
    finally:
        reader.close()


# ---- the directory of snapshots, and moving them between nodes ----


class SnapshotStore:
    """The snapshot directory of one node: complete snapshots by (index, term), the one partial
    snapshot being received from a peer. Opening it removes the temp files of snapshot writers
    interrupted by a crash (only those: other files are left alone), so no writer may be
    running in the directory meanwhile; the node owns it, as it owns its data dir."""

    def __init__(self, directory: Path | str, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        create_directory(self.directory)
        removed = [path for path in self.directory.iterdir() if _TEMP_NAME.match(path.name)]
        for path in removed:
            log.warning("removing %s, left by a snapshot writer that did not finish", path)
            path.unlink(missing_ok=True)
        if removed:
            self._sync_directory()

    def writer(self, manifest: dict) -> SnapshotWriter:
        """A writer whose snapshot lands in this store."""
        return SnapshotWriter(self.directory, manifest, fsync=self._fsync)

    def list(self) -> list[SnapshotInfo]:
        """The complete snapshots whose manifest reads back, oldest first (by index, then term).
        A file with a snapshot's name but an unreadable manifest is logged and left alone."""
        found = []
        for path in self.directory.iterdir():
            match = _SNAPSHOT_NAME.match(path.name)
            if not match:
                continue
            try:
                info = read_manifest(path)
            except FileNotFoundError:
                continue  # removed while we looked
            except CorruptSnapshotError as error:
                log.warning("ignoring snapshot %s: %s", path, error.reason)
                continue
            if (info.index, info.term) != (int(match.group(1)), int(match.group(2))):
                log.warning(
                    "ignoring snapshot %s: its manifest says index %d term %d",
                    path, info.index, info.term,
                )
                continue
            found.append(info)
        found.sort(key=lambda info: (info.index, info.term))
        return found

    def latest(self) -> SnapshotInfo | None:
        """The snapshot with the highest index (then term), or None."""
        snapshots = self.list()
        return snapshots[-1] if snapshots else None

    def remove_older_than(self, keep: int) -> builtins.list[SnapshotInfo]:
        """Retention: keep the `keep` (>= 1) newest snapshots, remove the others; returns
        those removed. A process still sending a removed one keeps reading its open file."""
        if type(keep) is not int or keep < 1:
            raise ValueError(f"keep must be an int >= 1, not {keep!r}")
        removed = self.list()[:-keep]
        for info in removed:
            info.path.unlink(missing_ok=True)
        if removed:
            self._sync_directory()
        return removed

    def begin_receive(self, index: int, term: int, total_bytes: int) -> SnapshotReceiver:
        """Start (or resume) receiving the snapshot at (index, term), `total_bytes` long, as
        raw bytes in chunks. A partial file left for the same (index, term) is kept and its
        size is where to resume (`receiver.offset`); partials of other snapshots are deleted.
        Resuming assumes the sender sends the same file; if it is not (another leader's
        snapshot of the same index), verification fails at `finish` and the caller starts over."""
        for name, value in (("index", index), ("term", term), ("total_bytes", total_bytes)):
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an int >= 0, not {value!r}")
        if total_bytes <= HEADER_BYTES:
            raise ValueError(f"a snapshot of {total_bytes} bytes cannot be valid")
        path = self.directory / partial_file_name(index, term)
        stale = [
            other for other in self.directory.iterdir()
            if _PARTIAL_NAME.match(other.name) and other != path
        ]
        for other in stale:
            log.info("removing %s: a different snapshot is being received now", other)
            other.unlink(missing_ok=True)
        if stale:
            self._sync_directory()
        return SnapshotReceiver(self, path, index, term, total_bytes)

    def _sync_directory(self) -> None:
        if self._fsync:
            fsync_directory(self.directory)


class SnapshotReceiver:
    """One snapshot arriving from a peer as raw bytes. `write` appends chunks at `offset`;
    `finish` verifies the whole file before it becomes a snapshot. Nothing is fsynced until
    `finish`: after a crash a partial may end in garbage, which verification then rejects.
    `close` (or leaving the `with` block) keeps the partial for a later resume; `abort`
    deletes it."""

    def __init__(
        self, store: SnapshotStore, path: Path, index: int, term: int, total_bytes: int
    ) -> None:
        self._store = store
        self.path = path
        self.index = index
        self.term = term
        self.total_bytes = total_bytes
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        size = os.fstat(self._fd).st_size
        if size > total_bytes:
            # Longer than the snapshot it is meant to be: not a prefix of it. Start over.
            log.warning("discarding %s: %d bytes, more than the %d expected", path, size,
                        total_bytes)
            os.ftruncate(self._fd, 0)
            size = 0
        os.lseek(self._fd, size, os.SEEK_SET)
        self.offset = size  # where the next chunk must start: the resume point

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, offset: int, data: bytes) -> None:
        """Append the chunk `data`, which must start exactly at `self.offset`."""
        if self._fd is None:
            raise ValueError("this snapshot receiver is closed")
        if offset != self.offset:
            raise ValueError(f"a snapshot chunk at offset {offset}, expected {self.offset}")
        if len(data) > CHUNK_BYTES_MAX:
            raise ValueError(f"a snapshot chunk of {len(data)} bytes exceeds {CHUNK_BYTES_MAX}")
        if offset + len(data) > self.total_bytes:
            raise ValueError(
                f"a snapshot chunk ending at {offset + len(data)} passes the announced size "
                f"{self.total_bytes}"
            )
        # At the chunk's own offset: a write cut short (a full disk) leaves the file position
        # past what `offset` counts, and a retry of the chunk must land where it belongs.
        pwrite_fully(self._fd, data, offset)
        self.offset += len(data)

    def finish(self) -> SnapshotInfo:
        """Make the received file durable, verify it in full and give it its snapshot name.
        If it fails verification (or is not the snapshot announced) the partial is deleted and
        CorruptSnapshotError raised; no snapshot file appears."""
        if self._fd is None:
            raise ValueError("this snapshot receiver is closed")
        if self.offset != self.total_bytes:
            raise ValueError(f"only {self.offset} of {self.total_bytes} snapshot bytes received")
        fd, self._fd = self._fd, None
        try:
            if self._store._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            info = verify_snapshot(self.path)
            if (info.index, info.term) != (self.index, self.term):
                raise CorruptSnapshotError(
                    self.path, 0,
                    f"the manifest says index {info.index} term {info.term}, but the snapshot "
                    f"announced was index {self.index} term {self.term}",
                )
        except CorruptSnapshotError:
            self.path.unlink(missing_ok=True)
            self._store._sync_directory()
            raise
        final_path = self._store.directory / snapshot_file_name(self.index, self.term)
        os.replace(self.path, final_path)
        self._store._sync_directory()
        return replace(info, path=final_path)

    def close(self) -> None:
        """Stop receiving for now, keeping the partial file for a resume."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def abort(self) -> None:
        """Stop receiving and delete the partial file."""
        self.close()
        self.path.unlink(missing_ok=True)


class SnapshotSource:
    """A snapshot opened for sending to a peer in chunks. Holding the file open means a
    retention pass that removes the snapshot meanwhile does not cut the transfer short."""

    def __init__(self, info: SnapshotInfo) -> None:
        self.info = info
        self._fd: int | None = os.open(info.path, os.O_RDONLY | os.O_CLOEXEC)
        self.size_bytes = os.fstat(self._fd).st_size

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read_chunk(self, offset: int, size_bytes: int) -> bytes:
        """Up to `size_bytes` (<= CHUNK_BYTES_MAX) bytes from `offset`; b"" at the end."""
        if self._fd is None:
            raise ValueError("this snapshot source is closed")
        _check_chunk_request(offset, size_bytes)
        return _pread_fully(self._fd, offset, size_bytes)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def open_for_sending(info: SnapshotInfo) -> SnapshotSource:
    return SnapshotSource(info)


def read_chunk(path: Path | str, offset: int, size_bytes: int) -> bytes:
    """One chunk of a snapshot file, opened for this call only (see SnapshotSource to send a
    whole file)."""
    _check_chunk_request(offset, size_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _pread_fully(fd, offset, size_bytes)
    finally:
        os.close(fd)


def _check_chunk_request(offset: int, size_bytes: int) -> None:
    if type(offset) is not int or offset < 0:
        raise ValueError(f"a chunk offset must be an int >= 0, not {offset!r}")
    if type(size_bytes) is not int or not 0 < size_bytes <= CHUNK_BYTES_MAX:
        raise ValueError(f"a chunk size must be an int in 1..{CHUNK_BYTES_MAX}, not {size_bytes!r}")


def _pread_fully(fd: int, offset: int, size_bytes: int) -> bytes:
    # pread may return fewer bytes than asked before end of file; only b"" means the end.
    parts = []
    while size_bytes > 0:
        part = os.pread(fd, size_bytes, offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        size_bytes -= len(part)
    return b"".join(parts)

