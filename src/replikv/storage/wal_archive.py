"""Archiving write-ahead log segments: the log kept beyond compaction, for point-in-time recovery.

A node started with an archive directory keeps a copy of every segment of its log there: a
segment is copied once it is closed (rotation), in any case before compaction or a reset deletes
it, and the durable part of the current segment is copied at a clean shutdown. Replaying those
copies on top of a backup (`replikv.pitr`) rebuilds the state at any index or time after it.

Shape. The copies are made by one thread owned by the `SegmentArchiver`, so a segment's 64 MiB
never stall the log's writes; the log hands over an open descriptor and a byte count, and only
the bytes the log had made durable are ever copied (never an unsynced tail that a power loss
could still take back). A deletion (drop or reset) waits, up to ARCHIVE_WAIT_BEFORE_DELETE_S in
all, for its segments' copies to be complete; a copy reads from its descriptor, so it can finish
even if the file is deleted meanwhile. A copy is written as the durable files of a data dir
are: a temp name in the archive directory, fsync, rename, fsync the directory. Archiving never
fails the log and delays it only at such a deletion: an error is logged as an ERROR on the
"replikv.storage" logger and counted (`errors`, `last_error`), and the node goes on; the next
rotation, the deletion of that segment or the log's close tries the copy again.

Names. `{generation:08d}-{first_index:020d}-{last_index:020d}-{size_bytes:012d}.wal`: the
segment's first index (its name in the log), the highest index in the copied bytes, how many
bytes were copied, and the generation: a number that grows each time the log is opened and each
time it is reset (a snapshot replaced it). Segments are append-only, so two copies of one
segment in one generation differ only in length, the longer holding the shorter; a later
generation may hold the same segment again (grown since), or a new log that reuses an index
after a reset, and ordering by (generation, first index) is the order the records were written
in. That is what the override rule needs when the archive is read back (`wal.read_archive`).

The directory belongs to one node: the archiver holds an exclusive flock on `.lock` in it while
the log is open, and a second node pointed at it is refused at start-up. It also records whose
log it is, in `OWNER` (checksummed like the data dir's small files: magic b"RKVAO", a version
byte, CRC32, msgpack {cluster_id, node_id}), written when a node first archives there: a node of
another cluster, or another node, is refused, and point-in-time recovery refuses to replay it on
a backup of another cluster (`replikv.pitr`). An archive written before OWNER existed gets one
at its node's next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import msgpack

from replikv.limits import MIB
from replikv.storage.errors import CorruptStateError, StorageError
from replikv.storage.files import (
    create_directory,
    decode_checksummed,
    encode_checksummed,
    fsync_directory,
    write_file_atomically,
    write_fully,
)

ARCHIVE_QUEUE_MAX = 64  # copies waiting for the archiver thread; more is an error, not a wait
ARCHIVE_WAIT_BEFORE_DELETE_S = 10.0  # how long one drop or reset waits for its copies
LOCK_FILE = ".lock"
OWNER_FILE = "OWNER"
OWNER_MAGIC = b"RKVAO"
OWNER_VERSION = 1
_COPY_CHUNK_BYTES = 1 * MIB
_ARCHIVE_NAME = re.compile(r"^(\d{8})-(\d{20})-(\d{20})-(\d{12})\.wal$")
_TEMP_NAME = re.compile(r"^\.\d{8}-\d{20}-\d{20}-\d{12}\.wal\.[^/]+\.tmp$")

log = logging.getLogger("replikv.storage")


@dataclass(frozen=True, slots=True)
class ArchivedSegment:
    """One copy in an archive directory, as its name describes it."""

    path: Path
    generation: int
    first_index: int
    last_index: int
    size_bytes: int


def archive_file_name(generation: int, first_index: int, last_index: int,
                      size_bytes: int) -> str:
    return f"{generation:08d}-{first_index:020d}-{last_index:020d}-{size_bytes:012d}.wal"


def list_archive(directory: Path | str) -> list[ArchivedSegment]:
    """The copies in `directory`, in write order: by generation, first index, then length.
    Files with other names (temp files, the lock) are not copies and are left out."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StorageError(f"log archive {directory} is not a directory")
    found = []
    for path in directory.iterdir():
        match = _ARCHIVE_NAME.match(path.name)
        if match:
            generation, first, last, size = (int(group) for group in match.groups())
            found.append(ArchivedSegment(path, generation, first, last, size))
    found.sort(key=lambda s: (s.generation, s.first_index, s.size_bytes, s.last_index))
    if not found and not (directory / OWNER_FILE).exists():
        nested = sorted(p.name for p in directory.iterdir() if p.is_dir() and (
            (p / OWNER_FILE).exists() or any(_ARCHIVE_NAME.match(q.name) for q in p.iterdir())))
        if nested:
            raise StorageError(
                f"{directory} is not a log archive, but holds {len(nested)}: "
                f"{', '.join(nested)} (one per node, as `cluster up --archive-dir` makes "
                f"them): name one, e.g. {directory / nested[0]}")
    return found


@dataclass(frozen=True, slots=True)
class ArchiveOwner:
    """Whose log an archive directory holds."""

    cluster_id: str
    node_id: str


def read_archive_owner(directory: Path | str) -> ArchiveOwner | None:
    """The owner recorded in archive `directory`; None if it records none (an archive older
    than the OWNER file). Raises CorruptStateError if the file is damaged."""
    path = Path(directory) / OWNER_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from None
    body = decode_checksummed(path, data, OWNER_MAGIC, OWNER_VERSION)
    try:
        decoded = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as e:
        raise CorruptStateError(path, f"body is not valid msgpack ({e})") from None
    if not (isinstance(decoded, dict) and isinstance(decoded.get("cluster_id"), str)
            and isinstance(decoded.get("node_id"), str)):
        raise CorruptStateError(path, "body is not {cluster_id, node_id}")
    return ArchiveOwner(decoded["cluster_id"], decoded["node_id"])


def claim_archive(directory: Path, owner: ArchiveOwner) -> None:
    """Record `owner` in archive `directory`, or check that it is the one recorded there.
    Raises StorageError naming both when another node or cluster owns it."""
    try:
        recorded = read_archive_owner(directory)
    except CorruptStateError as e:
        raise StorageError(f"{e}: remove it only if this archive is the log of node "
                           f"{owner.node_id} of cluster {owner.cluster_id}") from None
    if recorded is None:
        body = msgpack.packb({"cluster_id": owner.cluster_id, "node_id": owner.node_id},
                             use_bin_type=True)
        try:
            write_file_atomically(directory / OWNER_FILE,
                                  encode_checksummed(OWNER_MAGIC, OWNER_VERSION, body))
        except OSError as e:
            raise StorageError(f"cannot write {directory / OWNER_FILE}: {e.strerror or e}") \
                from None
        return
    if recorded != owner:
        raise StorageError(
            f"log archive {directory} holds the log of node {recorded.node_id} of cluster "
            f"{recorded.cluster_id}, and this is node {owner.node_id} of cluster "
            f"{owner.cluster_id}: each node needs an archive directory of its own, and a new "
            "cluster new archive directories (point-in-time recovery cannot mix two logs)")


class ArchiveJob:
    """One copy to make: `size_bytes` bytes of a segment, read through `fd`."""

    __slots__ = ("done", "fd", "first_index", "generation", "last_index", "ok", "size_bytes",
                 "source")

    def __init__(self, source: Path, fd: int, *, generation: int, first_index: int,
                 last_index: int, size_bytes: int) -> None:
        self.source = source
        self.fd = fd
        self.generation = generation
        self.first_index = first_index
        self.last_index = last_index
        self.size_bytes = size_bytes
        self.ok = False  # set before `done`: whether the copy is in the archive
        self.done = threading.Event()

    @property
    def name(self) -> str:
        return archive_file_name(self.generation, self.first_index, self.last_index,
                                 self.size_bytes)


class SegmentArchiver:
    """Copies log segments into `directory` from a thread of its own; see the module docstring.

    `submit` is called by the log's owner (one thread at a time), the copies are made in order.
    Raises StorageError if the directory cannot be created or is locked by another process."""

    def __init__(self, directory: Path | str, owner: ArchiveOwner | None = None) -> None:
        self.directory = Path(directory)
        try:
            create_directory(self.directory)
            self._lock_fd = os.open(self.directory / LOCK_FILE,
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StorageError(f"log archive {self.directory} cannot be used: {e}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StorageError(
                f"log archive {self.directory} is in use by another process: each node needs "
                "an archive directory of its own") from None
        if owner is not None:
            try:
                claim_archive(self.directory, owner)
            except StorageError:
                os.close(self._lock_fd)
                raise
        self._remove_temp_files()
        existing = list_archive(self.directory)
        # A new generation per opening: whatever this log writes is ordered after every copy
        # already here, whatever indexes it reuses.
        self._generation = max((s.generation for s in existing), default=0) + 1
        self._copied: dict[int, list[ArchivedSegment]] = {}  # first index -> copies
        self._copied_lock = threading.Lock()  # the thread adds to _copied, submit reads it
        for segment in existing:
            self._copied.setdefault(segment.first_index, []).append(segment)
        self.copies = 0  # copies written by this archiver
        self.errors = 0  # copies that failed (each logged as an ERROR)
        self.last_error: str | None = None
        self._queue: queue.Queue[ArchiveJob | None] = queue.Queue(ARCHIVE_QUEUE_MAX)
        self._last_job: ArchiveJob | None = None  # copies are made in order: this one last
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="replikv-wal-archive",
                                        daemon=True)
        self._thread.start()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def pending(self) -> int:
        """Copies submitted and not yet made."""
        return self._queue.qsize()

    def new_generation(self) -> None:
        """The log was reset: what it writes next is a new log, ordered after the old one."""
        self._generation += 1

    def submit(self, source: Path, *, first_index: int, last_index: int, size_bytes: int,
               skip_if_copied: bool = False, wait_s: float = 0.0) -> ArchiveJob | None:
        """Queue a copy of the first `size_bytes` bytes of segment `source`, which holds
        entries `first_index`..`last_index` in those bytes. With `skip_if_copied`, a copy
        already in the archive with the same bytes (from any generation) is enough. Waits up to
        `wait_s` for room in the queue. Never raises: None if the copy could not be queued (the
        error is logged and counted)."""
        if self._closed:
            return None
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self._failed(f"cannot open segment {source} to archive it: {e}")
            return None
        job = ArchiveJob(source, fd, generation=self._generation, first_index=first_index,
                         last_index=last_index, size_bytes=size_bytes)
        if skip_if_copied and self._has_copy(job):
            os.close(fd)
            job.ok = True
            job.done.set()
            return job
        try:
            if wait_s > 0:
                self._queue.put(job, timeout=wait_s)
            else:
                self._queue.put_nowait(job)
        except queue.Full:
            os.close(fd)
            self._failed(f"{ARCHIVE_QUEUE_MAX} copies are already waiting; segment {source} "
                         "was not archived now (is the archive directory's disk slow or "
                         "hung?); it is tried again before the log deletes it")
            return None
        self._last_job = job
        return job

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every copy submitted so far is made (or failed); False on timeout."""
        job = self._last_job
        return job is None or job.done.wait(timeout_s)

    def close(self) -> None:
        """Make every queued copy, stop the thread and release the directory."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        os.close(self._lock_fd)

    # -- the archiver thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._copy(job)
                job.ok = True
            except Exception as e:  # noqa: BLE001 - archiving must never take the node down
                self._failed(f"cannot archive {job.size_bytes} bytes of segment {job.source} "
                             f"into {self.directory}: {e}")
            finally:
                os.close(job.fd)
                job.done.set()

    def _copy(self, job: ArchiveJob) -> None:
        final = self.directory / job.name
        if final.exists() and final.stat().st_size == job.size_bytes:
            return  # this very version is archived already (the same log opened again)
        fd, temp_name = tempfile.mkstemp(prefix=f".{job.name}.", suffix=".tmp",
                                         dir=self.directory)
        temp = Path(temp_name)
        try:
            try:
                os.fchmod(fd, 0o644)  # as the log's own segments (mkstemp makes it 0600)
                offset = 0
                while offset < job.size_bytes:
                    chunk = os.pread(job.fd, min(_COPY_CHUNK_BYTES, job.size_bytes - offset),
                                     offset)
                    if not chunk:
                        raise OSError(f"the segment ends at byte {offset}, before the "
                                      f"{job.size_bytes} bytes to archive")
                    write_fully(fd, chunk)
                    offset += len(chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_directory(self.directory)
        copied = ArchivedSegment(final, job.generation, job.first_index, job.last_index,
                                 job.size_bytes)
        with self._copied_lock:
            self._copied.setdefault(job.first_index, []).append(copied)
        self.copies += 1
        log.debug("archived segment %s (entries %d..%d, %d bytes) as %s", job.source,
                  job.first_index, job.last_index, job.size_bytes, final)

    def _has_copy(self, job: ArchiveJob) -> bool:
        """Whether the archive holds exactly these bytes of the segment already."""
        with self._copied_lock:
            candidates = list(self._copied.get(job.first_index, ()))
        for copy in candidates:
            if (copy.last_index, copy.size_bytes) != (job.last_index, job.size_bytes):
                continue
            with contextlib.suppress(OSError):
                if copy.path.read_bytes() == os.pread(job.fd, job.size_bytes, 0):
                    return True
        return False

    def _failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.error("log archive: %s", message)

    def _remove_temp_files(self) -> None:
        """Copies cut short by a crash: never renamed, so never part of the archive."""
        for path in self.directory.iterdir():
            if _TEMP_NAME.match(path.name):
                with contextlib.suppress(OSError):
                    path.unlink()
