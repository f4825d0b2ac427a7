"""Seeding a node's data dir from a backup, so that the node starts from the backup's state.

What a restored data dir holds is what a node that had just installed a snapshot would hold:

- `meta`: the node id, the cluster id (the backup's, or one chosen for the new cluster) and the
  replication mode the backup was taken in (a cluster cannot change it);
- `snapshots/`: the backup, rewritten record by record through SnapshotWriter with a new
  manifest: the same index, term, state time, keys and sessions, but the membership replaced by
  the new cluster's voters (the ids of `--peers`, with their peer addresses as the address
  book) and the node and cluster ids of the new node; `extra.restored_from` says where it came
  from. The state digest is recomputed from the records on the way (RecordDigest) and must match
  the one recorded when the backup was taken;
- `hardstate`: term = the snapshot's term, no vote. Raft needs a node's term to be at least the
  last term in its log: with term 0 a restored node would campaign in term 1 and, as leader,
  append entries of term 1 after the snapshot's term, breaking log matching;
- no log: the log starts after the snapshot. Restored nodes of one cluster hold the same
  snapshot, so whichever is elected has the others' log, commits a no-op of its new term and
  goes on from the snapshot's index.

Nothing is deleted before the new data is complete and verified: the new data dir is built as a
sibling of the target (`.NAME.restore-*`, same file system), checked (the snapshot read back in
full, the meta and hard state read back), then swapped in: the old dir is renamed aside
(`.NAME.replaced-*`), the new one renamed into place, the parent fsynced, and only then is the
old one removed. A crash in between leaves the old data under `.NAME.replaced-*` and the
complete new data under `.NAME.restore-*`, never a half-written target. A data dir that a running
node holds (its LOCK is flocked) is refused, also with --force, and stays locked against a node
starting on it until the restore has finished.

The state to seed comes from a `SeedSource`. Today that is a backup file streamed as it is
(`BackupFileSeed`); point-in-time recovery adds a source that loads a backup, replays archived
log entries up to the chosen index or time and writes the resulting state through a snapshot
cursor, and everything else here stays as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from replikv.backup import BackupError
from replikv.backup.verify import (
    CheckedRecords,
    backup_membership,
)
from replikv.config import REPLICATION_MODES
from replikv.invariants import invariant
from replikv.node import encode_address_book
from replikv.raft.membership import Membership, MembershipError, valid_member_id
from replikv.server.snapshots import snapshot_dir
from replikv.storage.datadir import DataDir, lock_holder
from replikv.storage.errors import StorageError
from replikv.storage.files import create_directory, fsync_directory
from replikv.storage.hardstate import HardState, load_hard_state, save_hard_state
from replikv.storage.snapshot import (
    SnapshotInfo,
    SnapshotStore,
    SnapshotWriter,
    read_manifest,
    read_trailer_hint,
    verify_snapshot,
)

LOCK_FILE = "LOCK"


class RestoreRefused(BackupError):
    """The target is not one a restore may replace (not empty without --force, in use, ...)."""


# ---- what to seed ----


class SeedSource(Protocol):
    """A state at one index to seed data dirs with."""

    def describe(self) -> SnapshotInfo:
        """The state's index, term and manifest, read cheaply and checked (membership, mode)
        before anything is written; raises CorruptSnapshotError or BackupError."""
        ...

    def write_into(self, directory: Path, manifest: dict, *, fsync: bool,
                   on_keys: Callable[[int], None] | None) -> tuple[SnapshotInfo, bool]:
        """Write the state as a snapshot with `manifest` into `directory`; returns its info and
        whether its state digest was recomputed and matched."""
        ...


class BackupFileSeed:
    """A backup file, streamed into the new snapshot batch by batch: verified as it is read
    (only a file whose trailer checks out is ever finished), digest recomputed on the way."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._info: SnapshotInfo | None = None

    def describe(self) -> SnapshotInfo:
        if self._info is None:
            info = read_manifest(self.path)
            backup_membership(info)
            mode = info.manifest["replication_mode"]
            if mode not in REPLICATION_MODES:
                raise BackupError(f"{self.path} was taken in replication mode {mode!r}, which "
                                  f"this replikv does not know ({', '.join(REPLICATION_MODES)})")
            self._info = info
        return self._info

    def sha256(self) -> bytes:
        """The trailer's SHA-256 (a hint until the file is verified, which write_into does)."""
        trailer = read_trailer_hint(self.path)
        return trailer["sha256"] if trailer is not None else b""

    def write_into(self, directory: Path, manifest: dict, *, fsync: bool,
                   on_keys: Callable[[int], None] | None) -> tuple[SnapshotInfo, bool]:
        records = CheckedRecords(self.path, on_keys=on_keys)
        with SnapshotWriter(directory, manifest, fsync=fsync) as writer:
            for event in records:
                if event[0] == "batch":
                    writer.add_batch(event[1])
                elif event[0] == "section":
                    writer.add_section(event[1], event[2])
            checked = records.digest_checked()
            info = writer.finish(state_digest=records.end.state_digest)
        return info, checked


# ---- the pure parts: the new cluster, the new manifest ----


def parse_members(peers: Mapping[str, object]) -> dict[str, str]:
    """Member id -> peer address ("host:port"), checked: ids must be valid member ids."""
    members = {}
    for member_id, address in peers.items():
        if not valid_member_id(member_id):
            raise BackupError(f"--peers: {member_id!r} is not a valid member id")
        members[member_id] = str(address)
    if not members:
        raise BackupError("--peers: give every member of the new cluster as ID=HOST:PORT,...")
    return members


def cluster_membership(peers: dict[str, str]) -> Membership:
    """The new cluster: every id in `peers` a voter, their peer addresses its address book."""
    try:
        return Membership(tuple(peers), (),
                          encode_address_book({i: {"peer": a} for i, a in peers.items()}))
    except MembershipError as e:
        raise BackupError(f"--peers: {e}") from None


def new_cluster_id(backup_sha256: bytes, peers: dict[str, str]) -> str:
    """A cluster id for a new cluster made from this backup: derived from the backup's checksum
    and the member ids, so every node restored from the same file for the same members gets the
    same id without being told, and it differs from the original cluster's."""
    seed = b"restored:" + backup_sha256 + ",".join(sorted(peers)).encode()
    return f"replikv-{hashlib.sha256(seed).hexdigest()[:12]}"


def restored_manifest(source: SnapshotInfo, *, node_id: str, cluster_id: str,
                      peers: dict[str, str], restored_ms: int) -> dict:
    """The manifest of the snapshot seeded from `source`: the same state (index, term, state
    time, replication mode, creation time), the new node, cluster and membership."""
    old = source.manifest
    extra = dict(old.get("extra") or {})
    extra["membership"] = cluster_membership(peers).encode()
    extra["restored_from"] = {"cluster_id": old["cluster_id"], "node_id": old["node_id"],
                              "index": source.index, "term": source.term,
                              "created_ms": old["created_ms"], "restored_ms": restored_ms}
    return {"index": source.index, "term": source.term, "created_ms": old["created_ms"],
            "node_id": node_id, "cluster_id": cluster_id,
            "replication_mode": old["replication_mode"], "extra": extra}


# ---- the target data dir ----


def check_target(data_dir: Path, *, force: bool) -> bool:
    """Whether `data_dir` holds something the restore will replace; RestoreRefused if it may
    not (not a directory, a symlink, or not empty without `force`). Reads only."""
    if data_dir.is_symlink():
        raise RestoreRefused(f"data dir {data_dir} is a symbolic link; restore into the "
                             f"directory it points to ({data_dir.resolve()})")
    if not data_dir.exists():
        return False
    if not data_dir.is_dir():
        raise RestoreRefused(f"data dir {data_dir} exists and is not a directory")
    entries = sorted(os.listdir(data_dir))
    if not entries:
        return False
    if not force:
        shown = ", ".join(e + ("/" if (data_dir / e).is_dir() else "") for e in entries[:6])
        more = f" and {len(entries) - 6} more" if len(entries) > 6 else ""
        raise RestoreRefused(
            f"data dir {data_dir} is not empty (it holds {shown}{more}); a restore replaces "
            "all of it. Pass --force to replace it: the old contents are removed only after the "
            "new data is complete and verified. Nothing was changed.")
    return True


@contextlib.contextmanager
def locked_against_nodes(data_dir: Path) -> Iterator[None]:
    """Hold the data dir's node lock (if it has one) for the restore: refuse if a node runs on
    it, and keep one from starting on the old data meanwhile. Writes nothing."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield
        return
    try:
        holder = lock_holder(fd)
        if holder is not None:
            raise RestoreRefused(
                f"data dir {data_dir} is in use by a running replikv process (pid {holder}); "
                "stop that node first. Nothing was changed.")
        yield
    finally:
        os.close(fd)


def swap_into_place(new: Path, target: Path, *, fsync: bool = True) -> bool:
    """Make the complete directory `new` the `target` (a sibling of it): the old target, if
    any, is renamed aside, `new` renamed into place, the parent fsynced, and only then the old
    one deleted. Returns whether an old target was replaced. If the second rename fails, the
    old target is put back."""
    parent = target.parent
    invariant(new.parent.resolve() == parent.resolve(), "swap_into_place needs siblings")
    old = None
    if target.exists():
        old = parent / f".{target.name}.replaced-{secrets.token_hex(4)}"
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if fsync:
        fsync_directory(parent)
    if old is not None:
        shutil.rmtree(old)
        if fsync:
            fsync_directory(parent)
    return old is not None


# ---- the restore ----


@dataclass(frozen=True, slots=True)
class RestoreResult:
    data_dir: Path
    node_id: str
    cluster_id: str
    replication_mode: str
    snapshot: SnapshotInfo  # the seeded snapshot, verified
    source_cluster_id: str
    replaced: bool  # an old data dir was replaced
    digest_checked: bool
    seconds: float


def restore_data_dir(source: SeedSource, data_dir: Path | str, *, node_id: str,
                     peers: dict[str, str], cluster_id: str, force: bool = False,
                     fsync: bool = True,
                     on_keys: Callable[[int], None] | None = None) -> RestoreResult:
    """Seed `data_dir` for node `node_id` of the cluster `peers` (id -> peer address) from
    `source`. Raises RestoreRefused, BackupError or CorruptSnapshotError, and then nothing in
    `data_dir` has changed (a temp dir beside it was created and removed)."""
    data_dir = Path(os.path.abspath(data_dir))  # "." or "dir/" have a real name and parent
    if data_dir.parent == data_dir:
        raise RestoreRefused(f"cannot restore into {data_dir}: give a data dir below it")
    started = time.perf_counter()
    peers = parse_members(peers)
    if node_id not in peers:
        raise BackupError(f"--node-id {node_id!r} is not one of the members in --peers "
                          f"({', '.join(peers)})")
    if not cluster_id:
        raise BackupError("the cluster id must not be empty")
    info = source.describe()
    mode = info.manifest["replication_mode"]
    manifest = restored_manifest(info, node_id=node_id, cluster_id=cluster_id, peers=peers,
                                 restored_ms=time.time_ns() // 10**6)
    with locked_against_nodes(data_dir):
        check_target(data_dir, force=force)
        created = _missing_parents(data_dir.parent)
        create_directory(data_dir.parent)
        temp = _new_sibling(data_dir, "restore")
        try:
            DataDir.open(temp, node_id=node_id, cluster_id=cluster_id, replication=mode).close()
            save_hard_state(temp / "hardstate", HardState(term=info.term, voted_for=None),
                            fsync=fsync)
            snapshot, digest_checked = source.write_into(snapshot_dir(temp), manifest,
                                                         fsync=fsync, on_keys=on_keys)
            checked = verify_seeded(temp, snapshot, node_id=node_id, cluster_id=cluster_id,
                                    replication_mode=mode)
            replaced = swap_into_place(temp, data_dir, fsync=fsync)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            for directory in created:  # deepest first; only those still empty
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
    checked = replace(checked, path=snapshot_dir(data_dir) / checked.path.name)
    return RestoreResult(data_dir=data_dir, node_id=node_id, cluster_id=cluster_id,
                         replication_mode=mode, snapshot=checked,
                         source_cluster_id=info.manifest["cluster_id"], replaced=replaced,
                         digest_checked=digest_checked,
                         seconds=time.perf_counter() - started)


def verify_seeded(directory: Path, written: SnapshotInfo, *, node_id: str, cluster_id: str,
                  replication_mode: str) -> SnapshotInfo:
    """Read back what a node will read at start-up: the meta (as the node will open it), the
    hard state, and the snapshot (in full, as the newest in its store). BackupError if any of it
    differs from what was written."""
    try:
        DataDir.open(directory, node_id=node_id, cluster_id=cluster_id,
                     replication=replication_mode).close()
        hard_state = load_hard_state(directory / "hardstate")
        latest = SnapshotStore(snapshot_dir(directory)).latest()
        if latest is None:
            raise BackupError("no snapshot is found in the new data dir")
        info = verify_snapshot(latest.path)
    except StorageError as e:
        raise BackupError(f"the new data dir {directory} did not read back: {e}") from None
    expected = (written.path, written.index, written.term, written.key_count,
                written.state_digest)
    found = (info.path, info.index, info.term, info.key_count, info.state_digest)
    if found != expected or hard_state != HardState(written.term, None):
        raise BackupError(f"the new data dir {directory} did not read back as written "
                          f"(snapshot {found} vs {expected}, hard state {hard_state})")
    return info


def _new_sibling(path: Path, what: str) -> Path:
    """A new, empty directory `.NAME.<what>-<random>` beside `path` (mode as for mkdir, unlike
    mkdtemp's 0700: it becomes the data dir)."""
    for _attempt in range(100):
        sibling = path.parent / f".{path.name}.{what}-{secrets.token_hex(4)}"
        try:
            sibling.mkdir()
        except FileExistsError:
            continue
        return sibling
    raise BackupError(f"cannot create a temporary directory beside {path}")


def _missing_parents(path: Path) -> list[Path]:
    """The directories of `path` (itself included) that do not exist yet, deepest first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing
