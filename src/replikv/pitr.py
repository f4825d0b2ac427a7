"""Point-in-time recovery: a backup, plus the archived log replayed on top of it up to a chosen
index or time, written out as a new snapshot file.

Replication copies a bad FLUSHALL to every replica within milliseconds; a backup holds the state
from before it, but only as of the moment it was taken. The log archive (`replikv node
--archive-dir`, see `replikv.storage.wal_archive`) holds every entry since, so the state at any
index or time after the backup can be rebuilt: load the backup, take the archived entries after
its index, and apply them exactly as every replica applied them (`replikv.entries.apply_entry`,
the node core's own code, so the result is the state the replicas had at that index, digest for
digest), stopping at `until_index`, or before the first entry whose time is after
`until_time_ms`. Membership changes in the replayed entries are followed, so the snapshot
records the membership in force at its index. The result is an ordinary snapshot file (the same
manifest, sessions section and state digest a node writes), so everything that restores a backup
(`replikv restore`, `replikv.backup.restore.BackupFileSeed`) restores it too.

Nothing is guessed. Replay refuses (RecoveryError) rather than produce a state no replica had:
when the archive is another cluster's log than the backup's (its OWNER file, see
`replikv.storage.wal_archive`), when the archive misses entries between the backup and the target (a gap), does not reach the
target, disagrees with the backup about the entry at the backup's index, or holds an entry that
does not apply to the state. A damaged archive raises CorruptLogError, a damaged backup
CorruptSnapshotError; neither changes anything, and no output file exists unless replay
succeeded.

Time. Each entry carries its leader's clock (ms); no-ops and membership changes carry none and
never stop a replay. The time applied is max(entry time, state time), as on the replicas, so
times seen by the replay never go back, and "until T" means: every entry up to the first one
whose applied time is after T. A time target also needs the archive to hold that first later
entry: an archive that simply ends before T cannot tell whether writes it lacks happened before T
(replay to its last index instead, explicitly).

Caveat: an archive is one node's log, and a log may end with entries that never committed (a
leader that lost office and stopped before it learned so). Archive the leader's log, or compare
the archives of two nodes (`describe_archive`), when the last few entries matter.

`describe_archive` says what an archive covers, for a CLI to print; `find_removal` finds the
first entry after a point that flushed everything or deleted a key, whose index minus one is the
point to recover to; `list_entries` shows entries as redis-cli lines (`describe_entry`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack

from replikv.backup import BackupError
from replikv.commands.transactions import split_exec
from replikv.entries import (
    ENTRY_COMMAND,
    ENTRY_EFFECTS,
    ENTRY_EXPIRE,
    apply_entry,
    entry_keys,
    entry_time_ms,
)
from replikv.invariants import InvariantViolation, invariant
from replikv.raft.membership import Membership, MembershipError, is_config_entry
from replikv.replies import CommandError
from replikv.server.snapshots import BATCH_ITEMS, SnapshotLoadError, load_snapshot
from replikv.state import EFFECT_DELETE, EFFECT_FLUSH, KVState
from replikv.storage.rollback import describe_entry
from replikv.storage.snapshot import SnapshotInfo, SnapshotWriter, read_manifest
from replikv.storage.wal import read_archive
from replikv.storage.wal_archive import ArchiveOwner, list_archive, read_archive_owner

SESSIONS_SECTION = "sessions"
_FLUSH_COMMANDS = frozenset({b"flushall", b"flushdb"})
_DELETE_COMMANDS = frozenset({b"del", b"unlink", b"getdel"})


class RecoveryError(BackupError):
    """The backup and the archive cannot give the state asked for; the message says why and what
    to do. Nothing was written."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A finished replay: the snapshot file written, and how it was reached."""

    snapshot: SnapshotInfo  # its index and term are those of the last entry applied
    backup_index: int
    time_ms: int  # the state's time: that of the last entry applied with a time
    entries_applied: int  # log entries replayed after the backup (no-ops and config included)
    membership: Membership
    next_entry: ArchivedEntry | None  # the first entry not applied, if the archive holds it


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    """One entry of an archive, for people: `text` reads like a redis-cli line."""

    index: int
    term: int
    time_ms: int | None
    kind: str  # "command", "effects", "expire", "noop", "membership" or "unknown"
    text: str
    # find_removal of a key, without a backup, answering with a flush: whether an earlier entry
    # of the archive wrote the key (False: if the key existed, it is older than the archive).
    key_written_before: bool | None = None

    @property
    def recover_until_index(self) -> int:
        """The index to recover to in order to undo this entry and nothing before it."""
        return self.index - 1


@dataclass(frozen=True, slots=True)
class ArchiveCoverage:
    """What an archive directory holds. `runs` are the contiguous index ranges of its log: more
    than one means gaps, which a replay cannot cross."""

    directory: Path
    copies: int  # segment copies (files)
    size_bytes: int
    generations: int  # times the archived log was (re)opened or reset
    first_index: int | None  # None: no entries at all
    last_index: int | None
    first_time_ms: int | None  # of the first entry that carries a time
    last_time_ms: int | None
    runs: tuple[tuple[int, int], ...]
    owner: ArchiveOwner | None = None  # None: an archive older than its OWNER file

    def as_json(self) -> dict:
        return {"directory": str(self.directory),
                "cluster_id": self.owner.cluster_id if self.owner else None,
                "node_id": self.owner.node_id if self.owner else None, "copies": self.copies,
                "size_bytes": self.size_bytes, "generations": self.generations,
                "first_index": self.first_index, "last_index": self.last_index,
                "first_time_ms": self.first_time_ms, "last_time_ms": self.last_time_ms,
                "runs": [list(run) for run in self.runs]}


class _Replayer:
    """A backup's state with the archived entries after its index applied one by one, checked
    as `replay` documents. `entries()` yields each entry before applying it (a caller that
    stops there leaves it unapplied) and applies it when asked for the next one."""

    def __init__(self, backup_path: Path, archive_dir: Path | str) -> None:
        self.backup_path, self.archive_dir = backup_path, archive_dir
        self.info = read_manifest(backup_path)
        try:
            self.meta, self.state, self.time_ms, self.sessions = load_snapshot(self.info)
        except SnapshotLoadError as e:
            raise RecoveryError(f"cannot use backup {backup_path}: {e}") from None
        self.membership = self.meta.membership
        self.last_index, self.last_term = self.meta.index, self.meta.term
        self.applied = 0
        owner = read_archive_owner(archive_dir)
        cluster_id = self.info.manifest["cluster_id"]
        if owner is not None and owner.cluster_id != cluster_id:
            raise RecoveryError(
                f"the archive {archive_dir} is the log of node {owner.node_id} of cluster "
                f"{owner.cluster_id}, and backup {backup_path} is of cluster {cluster_id}: "
                "they do not belong together. Use this cluster's archive with this backup, or "
                f"a backup of cluster {owner.cluster_id} with this archive (`replikv backup "
                "verify FILE` names a backup's cluster)")

    def entries(self, last_index: int | None = None) -> Iterator[tuple[int, int, bytes]]:
        """(index, term, data) of the archived entries after the backup, up to `last_index`."""
        meta, archive_dir = self.meta, self.archive_dir
        entries = read_archive(archive_dir, first_index=meta.index, last_index=last_index)
        if entries and entries[0][0] == meta.index:
            if entries[0][1] != meta.term:
                raise RecoveryError(
                    f"the archive {archive_dir} holds index {meta.index} with term "
                    f"{entries[0][1]}, but the backup's state at that index is of term "
                    f"{meta.term}: they come from different histories (another cluster, or a "
                    "discarded branch of this one)")
            entries = entries[1:]
        for index, term, data in entries:
            if index != self.last_index + 1:
                raise RecoveryError(
                    f"the archive {archive_dir} lacks entries {self.last_index + 1}..{index - 1}, "
                    f"needed to go on from index {self.last_index}: a segment copy is missing, "
                    "or this node's log restarted after a snapshot there. Use an archive that "
                    "holds them (another node's), or a later backup")
            if term < self.last_term:
                raise RecoveryError(
                    f"the archive {archive_dir} goes back from term {self.last_term} to term "
                    f"{term} at index {index}: its log mixes two histories")
            yield index, term, data
            try:
                self.time_ms = apply_entry(self.state, self.sessions, data, index,
                                           self.time_ms).time_ms
                if is_config_entry(data):
                    self.membership = Membership.decode(data)
            except (InvariantViolation, MembershipError, ValueError, TypeError,
                    msgpack.UnpackException) as e:
                raise RecoveryError(
                    f"entry {index} (term {term}) of the archive {archive_dir} does not apply "
                    f"to the state the backup and the entries before it give ({e}): the "
                    "archive and the backup do not belong together") from None
            self.last_index, self.last_term = index, term
            self.applied += 1


def replay(backup_path: Path | str, archive_dir: Path | str, *, out_dir: Path | str,
           until_index: int | None = None, until_time_ms: int | None = None,
           fsync: bool = True) -> ReplayResult:
    """Write into `out_dir` the snapshot of the state at `until_index`, or at the last entry
    whose time is <= `until_time_ms` (give exactly one), rebuilt from the backup file at
    `backup_path` and the log archive `archive_dir`. See the module docstring for what is
    refused (RecoveryError), and for CorruptLogError / CorruptSnapshotError."""
    if (until_index is None) == (until_time_ms is None):
        raise ValueError("say where to stop: give exactly one of until_index, until_time_ms")
    backup_path = Path(backup_path)
    replayer = _Replayer(backup_path, archive_dir)
    meta = replayer.meta
    if until_index is not None and until_index < meta.index:
        raise RecoveryError(
            f"backup {backup_path} holds the state at index {meta.index}, after the requested "
            f"index {until_index}: use a backup taken before it")
    if until_time_ms is not None and until_time_ms < replayer.time_ms:
        raise RecoveryError(
            f"backup {backup_path} already holds writes up to {_format_ms(replayer.time_ms)}, "
            f"after the requested time {_format_ms(until_time_ms)}: use a backup taken "
            "before it")
    next_entry: ArchivedEntry | None = None
    # One entry past the target too, to say what the recovery leaves out.
    for index, term, data in replayer.entries(
            last_index=None if until_index is None else until_index + 1):
        if until_index is not None and index > until_index:
            next_entry = _archived_entry(index, term, data)
            break
        if until_time_ms is not None:
            entry_ms = entry_time_ms(data)
            if entry_ms is not None and max(entry_ms, replayer.time_ms) > until_time_ms:
                next_entry = _archived_entry(index, term, data)
                break
    last_index, last_term = replayer.last_index, replayer.last_term
    if until_index is not None and last_index < until_index:
        raise RecoveryError(
            f"the archive {archive_dir} ends at index {last_index}, before the requested index "
            f"{until_index}: it cannot reach it (`replikv archive info` shows what it covers; a "
            f"running node archives its open log segment when it closes it or stops "
            f"cleanly)")
    if until_time_ms is not None and next_entry is None:
        raise RecoveryError(
            f"the archive {archive_dir} ends at index {last_index} "
            f"({_format_ms(replayer.time_ms)}) without an entry after the requested time "
            f"{_format_ms(until_time_ms)}, so it cannot tell whether writes it lacks came "
            f"before it; to replay everything it holds, recover to index {last_index}")

    info, membership, state_time_ms = replayer.info, replayer.membership, replayer.time_ms
    extra = dict(info.manifest.get("extra") or {})
    extra.update(membership=membership.encode(), time_ms=state_time_ms,
                 feature_level=replayer.state.feature_level, replayed={
        "backup_index": meta.index, "backup_term": meta.term, "entries": replayer.applied,
        "until_index": until_index, "until_time_ms": until_time_ms})
    manifest = {"index": last_index, "term": last_term, "created_ms": time.time_ns() // 10**6,
                "node_id": info.manifest["node_id"], "cluster_id": info.manifest["cluster_id"],
                "replication_mode": info.manifest["replication_mode"], "extra": extra}
    snapshot = _write_snapshot(Path(out_dir), manifest, replayer.state,
                               replayer.sessions.to_bytes(), fsync=fsync)
    return ReplayResult(snapshot, meta.index, state_time_ms, replayer.applied, membership,
                        next_entry)


def _write_snapshot(out_dir: Path, manifest: dict, state: KVState, sessions: bytes, *,
                    fsync: bool) -> SnapshotInfo:
    """The state as a snapshot file, as a node writes one (batches, sessions, digest)."""
    cursor = state.begin_snapshot()
    try:
        with SnapshotWriter(out_dir, manifest, fsync=fsync) as writer:
            while (batch := cursor.next_batch(BATCH_ITEMS)) is not None:
                writer.add_batch(batch)
            writer.add_section(SESSIONS_SECTION, sessions)
            return writer.finish(state_digest=cursor.state_digest())
    finally:
        cursor.close()


def describe_archive(directory: Path | str) -> ArchiveCoverage:
    """Which indexes and times the archive in `directory` covers (reads and checks every copy:
    CorruptLogError on damage). Holds one small tuple per entry in memory, never their data."""
    directory = Path(directory)
    copies = list_archive(directory)
    entries = read_archive(directory, convert=entry_time_ms)
    runs: list[tuple[int, int]] = []
    for index, _term, _time in entries:
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    times = [t for _i, _term, t in entries if t is not None]
    return ArchiveCoverage(
        directory=directory, copies=len(copies), size_bytes=sum(c.size_bytes for c in copies),
        generations=len({c.generation for c in copies}),
        first_index=entries[0][0] if entries else None,
        last_index=entries[-1][0] if entries else None,
        first_time_ms=times[0] if times else None, last_time_ms=times[-1] if times else None,
        runs=tuple(runs), owner=read_archive_owner(directory))


def list_entries(directory: Path | str, *, first_index: int = 1, last_index: int | None = None,
                 max_arg_bytes: int | None = 64) -> list[ArchivedEntry]:
    """The archive's entries from `first_index` to `last_index`, described for people."""
    return [_archived_entry(index, term, data, max_arg_bytes)
            for index, term, data in read_archive(directory, first_index=first_index,
                                                  last_index=last_index)]


def find_removal(directory: Path | str, *, key: bytes | None = None, after_index: int = 0,
                 after_time_ms: int | None = None,
                 backup: Path | str | None = None) -> ArchivedEntry | None:
    """The first entry after `after_index` (and, if given, whose time is after `after_time_ms`)
    that removed every key (FLUSHALL, FLUSHDB) or, with `key`, that removed `key`. Recover to
    its `recover_until_index` to get the state just before it. None if the archive holds no
    such entry.

    Without `backup`, entries are judged as they were logged: in active mode the command, in
    passive mode its effects (a flush is the effect [7], a deletion [2, key]; an expiry looks
    like a deletion there). For `key` that finds a flush, a DEL / UNLINK / GETDEL of it, or its
    expiry; commands that remove a key by other means (RENAME, SPOP or SREM of its last
    member, HDEL of its last field, ...) are not recognised in active mode, where only the state can tell. With the
    `backup` the archive continues (`key` only), the backup's state is replayed entry by entry,
    as `replay` does, and the entry after which the key is no longer stored is the answer,
    whatever removed it; nothing before the backup's index can be found that way."""
    if backup is not None:
        if key is None:
            raise ValueError("a backup is replayed to find one key's removal: give the key "
                             "(a flush is found without a backup)")
        return _find_removal_by_replay(Path(backup), directory, key, after_index, after_time_ms)
    time_ms = 0
    written = False  # for a key: whether an entry so far (from the archive's first) wrote it
    for index, term, data in read_archive(directory,
                                          first_index=1 if key is not None else after_index + 1):
        entry_ms = entry_time_ms(data)
        if entry_ms is None:
            continue
        time_ms = max(time_ms, entry_ms)  # the time the replicas applied it at
        if index > after_index and (after_time_ms is None or time_ms > after_time_ms) \
                and _removes(data, key):
            found = _archived_entry(index, term, data)
            if key is not None and _removes(data, None):  # a flush
                found = replace(found, key_written_before=written)
            return found
        if (key is not None and not written and key in entry_keys(data)
                and not _removes(data, None)):
            written = True
    return None


def _find_removal_by_replay(backup: Path, directory: Path | str, key: bytes, after_index: int,
                            after_time_ms: int | None) -> ArchivedEntry | None:
    replayer = _Replayer(backup, directory)
    state = replayer.state
    previous: tuple[int, int, bytes] | None = None  # the entry applied last, if it counts
    held = state.holds(key)
    for index, term, data in replayer.entries():
        # The entry before this one is applied now: did it remove the key?
        if previous is not None and held and not state.holds(key):
            return _archived_entry(*previous)
        held = state.holds(key)
        late_enough = after_time_ms is None or max(
            entry_time_ms(data) or 0, replayer.time_ms) > after_time_ms
        previous = (index, term, data) if index > after_index and late_enough else None
    if previous is not None and held and not state.holds(key):
        return _archived_entry(*previous)
    return None


def _command_removes(argv: list, key: bytes | None) -> bool:
    name = argv[0].lower() if isinstance(argv[0], bytes) else b""
    if name == b"exec":  # a transaction (replikv.commands.transactions): any of its commands
        try:
            return any(_command_removes(c, key) for c in split_exec(argv))
        except (CommandError, TypeError, AttributeError):
            return False
    return name in _FLUSH_COMMANDS or (
        key is not None and name in _DELETE_COMMANDS and key in argv[1:])


def _removes(data: bytes, key: bytes | None) -> bool:
    try:
        kind, _time_ms, payload, *_rest = msgpack.unpackb(data, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return False
    if kind == ENTRY_COMMAND and isinstance(payload, list) and payload:
        return _command_removes(payload, key)
    if kind == ENTRY_EXPIRE and isinstance(payload, list):
        return key is not None and key in payload
    if kind == ENTRY_EFFECTS and isinstance(payload, list):
        for effect in payload:
            if not isinstance(effect, list) or not effect:
                continue
            if effect[0] == EFFECT_FLUSH or (
                    key is not None and effect[0] == EFFECT_DELETE and effect[1:2] == [key]):
                return True
    return False


def _archived_entry(index: int, term: int, data: bytes,
                    max_arg_bytes: int | None = 64) -> ArchivedEntry:
    described = describe_entry(data, max_arg_bytes=max_arg_bytes)
    invariant(isinstance(described.get("text"), str), "describe_entry gives text")
    return ArchivedEntry(index, term, entry_time_ms(data), str(described["kind"]),
                         str(described["text"]))


def _format_ms(time_ms: int) -> str:
    seconds, ms = divmod(time_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"
