"""Checking a backup file in full and saying what is inside it.

One streaming pass does everything `replikv backup verify` reports: the snapshot reader checks
every record's CRC and shape, their order, the trailer's SHA-256 and counts
(`iter_snapshot`); meanwhile the records feed a `RecordDigest`, so the state digest recorded
when the backup was taken is recomputed without building the state (memory: one batch, one
set); and the manifest's membership and the session table are decoded, as a node loading the
file would. A file that passes loads on a node; one that fails raises CorruptSnapshotError (the
bytes are damaged, cut short, foreign or from a newer replikv) or BackupError (the bytes are
intact but do not hold what a backup must), and `explain` turns either into an operator's
sentence.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from replikv.backup import BackupError
from replikv.invariants import InvariantViolation
from replikv.raft.membership import Membership, MembershipError
from replikv.sessions import SessionTable
from replikv.state import RecordDigest
from replikv.storage.snapshot import (
    CONTINUATION_KINDS,
    ITEM_LIBRARY,
    CorruptSnapshotError,
    SnapshotInfo,
    iter_snapshot,
    read_manifest,
    read_trailer_hint,
)

SESSIONS_SECTION = "sessions"

# Files of ours that are not snapshots, and common wrappers, by their first bytes: named in the
# error, since "it starts with b'RKVWAL\x01'" does not tell an operator much.
_KNOWN_MAGIC = (
    (b"RKVWAL", "a replikv write-ahead log segment (DATA_DIR/wal/*.wal), not a backup"),
    (b"RKVHS", "a replikv node's hard state file, not a backup"),
    (b"RKVMT", "a replikv data dir's meta file, not a backup"),
    (b"RKVRB", "a replikv rollback file (see `replikv rollback show`), not a backup"),
    (b"\x1f\x8b", "a gzip file; decompress it first (gunzip)"),
    (b"\xfd7zXZ", "an xz file; decompress it first (unxz)"),
    (b"(\xb5/\xfd", "a zstd file; decompress it first (unzstd)"),
    (b"PK\x03\x04", "a zip archive; extract the backup from it first"),
)
_PRINTABLE = frozenset(string.printable.encode())


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a verified backup holds."""

    path: str
    size_bytes: int
    format_version: int
    cluster_id: str
    taken_on_node: str
    index: int
    term: int
    created_ms: int  # wall clock when the snapshot was written
    state_time_ms: int  # the state's own (log) time: that of the last entry it includes
    key_count: int
    replication_mode: str
    voters: tuple[str, ...]
    standbys: tuple[str, ...]
    sessions: int  # retryable-write sessions it carries
    state_digest: str | None
    digest_checked: bool  # recomputed from the records and equal to the recorded one
    sha256: str  # the trailer's SHA-256 of everything before it (hex)
    restored_from: dict | None  # for a node's snapshot seeded by `replikv restore`

    def as_json(self) -> dict:
        out = asdict(self)
        out["voters"], out["standbys"] = list(self.voters), list(self.standbys)
        return out

    @classmethod
    def from_json(cls, data: dict) -> BackupSummary:
        """The summary that `as_json` gave (raises KeyError or TypeError if it is not one)."""
        return cls(**{**data, "voters": tuple(data["voters"]),
                      "standbys": tuple(data["standbys"])})


def backup_membership(info: SnapshotInfo) -> tuple[Membership, int]:
    """The membership and state time a snapshot's manifest carries (BackupError if absent or
    malformed: then no node could load it)."""
    extra = info.manifest.get("extra")
    try:
        membership = Membership.decode(extra["membership"])  # type: ignore[index]
        time_ms = extra.get("time_ms", 0)  # type: ignore[union-attr]
        if type(time_ms) is not int:
            raise ValueError(f"time_ms {time_ms!r} is not an int")
    except (KeyError, TypeError, ValueError, MembershipError) as e:
        raise BackupError(
            f"{info.path} is a snapshot file but not a usable backup: its manifest lacks a "
            f"valid cluster membership ({e}); no node could load it") from None
    return membership, time_ms


def check_sessions(path: Path, data: bytes) -> int:
    """The number of sessions in a snapshot's session table (BackupError if undecodable)."""
    try:
        return len(SessionTable.from_bytes(data))
    except ValueError as e:
        raise BackupError(f"{path}: its retryable-write session table is damaged ({e}); no "
                          "node could load it") from None


def count_keys(items: list[list]) -> int:
    """The keys a batch begins (a continuation or a function library is none)."""
    return sum(1 for item in items
               if item[1] not in CONTINUATION_KINDS and item[1] != ITEM_LIBRARY)


class CheckedRecords:
    """The events of a backup file, as `iter_snapshot` yields them, checked on the way: the
    state digest recomputed from the key batches, the session table decoded, `on_keys(n)`
    called per batch of n keys (a progress bar's hook). Iterate it once, then call
    `digest_checked()`. Shared by `inspect_backup` and the restore, which copies the events."""

    def __init__(self, path: Path, *, check_digest: bool = True,
                 on_keys: Callable[[int], None] | None = None) -> None:
        self.path = path
        self._on_keys = on_keys
        self._hint = read_trailer_hint(path) if check_digest else None
        self._digest = RecordDigest(self._hint["key_count"]) if self._hint is not None else None
        self.sessions = 0
        self._end: SnapshotInfo | None = None
        self._trailer: dict | None = None

    @property
    def end(self) -> SnapshotInfo:
        """What the snapshot's trailer says, once the records were iterated."""
        if self._end is None:
            raise InvariantViolation(f"{self.path}: its end is asked for before it was read")
        return self._end

    @property
    def trailer(self) -> dict:
        """The verified trailer, once `digest_checked()` has run."""
        if self._trailer is None:
            raise InvariantViolation(f"{self.path}: its trailer is asked for before it was read")
        return self._trailer

    def __iter__(self) -> Iterator[tuple]:
        for event in iter_snapshot(self.path):
            if event[0] == "batch":
                if self._digest is not None:
                    self._digest.update(event[1])
                if self._on_keys is not None:
                    self._on_keys(count_keys(event[1]))
            elif event[0] == "section":
                if event[1] == SESSIONS_SECTION:
                    self.sessions = check_sessions(self.path, event[2])
            else:
                self._end = event[1]
            yield event
        if self._end is None:  # iter_snapshot raises rather than end without its trailer
            raise BackupError(f"{self.path}: the snapshot reader stopped before the trailer")

    def digest_checked(self) -> bool:
        """After the iteration: whether the recomputed state digest matched the recorded one
        (False: it could not be recomputed); BackupError if they differ."""
        self._trailer = read_trailer_hint(self.path)  # the file is verified now: so is this
        if self._trailer is None:
            raise BackupError(f"{self.path}: its trailer cannot be found again after "
                              "verification")
        return _check_digest(self.path, self.end,
                             self._digest if self._hint == self._trailer else None)


def inspect_backup(path: Path | str, *, check_digest: bool = True,
                   on_keys: Callable[[int], None] | None = None) -> BackupSummary:
    """Verify the backup at `path` in full, in one streaming pass, and summarize it.

    Raises CorruptSnapshotError or BackupError. `on_keys(n)` is called as each batch of n keys
    has been read (a progress bar's hook)."""
    path = Path(path)
    manifest_info = read_manifest(path)
    membership, time_ms = backup_membership(manifest_info)
    records = CheckedRecords(path, check_digest=check_digest, on_keys=on_keys)
    for _event in records:
        pass
    checked = records.digest_checked()
    end, trailer, sessions = records.end, records.trailer, records.sessions
    manifest = end.manifest
    restored_from = manifest["extra"].get("restored_from")
    return BackupSummary(
        path=str(path), size_bytes=end.size_bytes, format_version=manifest["format"],
        cluster_id=manifest["cluster_id"], taken_on_node=manifest["node_id"],
        index=end.index, term=end.term, created_ms=manifest["created_ms"],
        state_time_ms=time_ms, key_count=end.key_count or 0,
        replication_mode=manifest["replication_mode"], voters=membership.voters,
        standbys=membership.learners, sessions=sessions, state_digest=end.state_digest,
        digest_checked=checked, sha256=trailer["sha256"].hex(),
        restored_from=restored_from if isinstance(restored_from, dict) else None)


def _check_digest(path: Path, end: SnapshotInfo, digest: RecordDigest | None) -> bool:
    """True if the digest recomputed from the records equals the recorded one; False if it
    could not be recomputed (none recorded, or records not in the cursor's order); raises
    BackupError if they differ."""
    if digest is None or end.state_digest is None:
        return False
    computed = digest.hexdigest()
    if computed is None:
        return False
    if computed != end.state_digest:
        raise BackupError(
            f"{path}: the keys it holds do not rebuild the state it was taken from (state "
            f"digest {computed}, recorded {end.state_digest}), although every checksum "
            "matches: the backup was written wrongly. Do not restore from it; take another")
    return True


def explain(error: CorruptSnapshotError | BackupError) -> str:
    """The error as an operator reads it: what is wrong with the file, and what it is if it is
    something else we recognize."""
    if isinstance(error, BackupError):
        return str(error)
    hint = ""
    if error.reason.startswith("not a replikv snapshot"):
        what = _what_file_is(error.path)
        hint = f" It looks like {what}." if what else ""
    elif "written by a newer replikv" in error.reason:
        hint = " Upgrade replikv to verify or restore it."
    return (f"{error.path} is not a usable backup: {error.reason} (at byte offset "
            f"{error.offset}).{hint} Nothing was changed.")


def _what_file_is(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError:
        return ""
    for magic, what in _KNOWN_MAGIC:
        if head.startswith(magic):
            return what
    if head and all(byte in _PRINTABLE for byte in head):
        return "a text file"
    return ""
