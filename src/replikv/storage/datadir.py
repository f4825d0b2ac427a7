"""A node's data directory: one owner at a time, and it remembers whose it is.

Two processes sharing a directory would interleave log writes and votes, and a directory started
under the wrong node id would make one node answer with another's promises. Both break Raft
without any visible error, so `DataDir.open` rules them out before anything else touches the
disk: it takes an exclusive `flock` on `LOCK` (held until `close()`; the kernel drops it if the
process dies, so a crash never leaves a stale lock), and it checks the `meta` file naming the
node and cluster the directory was created for.

Layout: `LOCK` (pid of the holder, for the error message only), `meta` (magic b"RKVMT", version
byte, CRC32, msgpack {format, node_id, cluster_id, replication}; written once, atomically; the
replication mode is fixed with it), `hardstate` (see `storage.hardstate`), `wal/` (see
`storage.wal`) and `rollback/` (see `storage.rollback`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

import msgpack

from replikv.invariants import invariant
from replikv.storage.errors import CorruptStateError, DataDirError
from replikv.storage.files import (
    create_directory,
    decode_checksummed,
    encode_checksummed,
    fsync_directory,
    write_file_atomically,
    write_fully,
)

META_MAGIC = b"RKVMT"
META_VERSION = 1
DATA_DIR_FORMAT = 1


class DataDir:
    """An open, locked data directory; create it with `DataDir.open`."""

    def __init__(self, path: Path, lock_fd: int, *, node_id: str, cluster_id: str) -> None:
        self.path = path
        self.wal_dir = path / "wal"
        self.hard_state_path = path / "hardstate"
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, path: Path, *, node_id: str, cluster_id: str,
             replication: str | None = None) -> DataDir:
        """Lock `path` (creating it if needed) and check or record which node it belongs to.

        Raises DataDirError if another process holds it or it belongs to another node/cluster,
        CorruptStateError if its meta file is damaged.
        """
        invariant(isinstance(node_id, str) and node_id, f"node_id {node_id!r} must be non-empty")
        invariant(
            isinstance(cluster_id, str) and cluster_id,
            f"cluster_id {cluster_id!r} must be non-empty",
        )
        _refuse_a_parent_of_node_dirs(path)
        create_directory(path)
        lock_fd = _lock(path / "LOCK")
        try:
            _check_or_write_meta(path / "meta", node_id=node_id, cluster_id=cluster_id,
                                 replication=replication)
            create_directory(path / "wal")
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, lock_fd, node_id=node_id, cluster_id=cluster_id)

    def close(self) -> None:
        """Release the lock; the directory may then be opened by another process."""
        if self._lock_fd is not None:
            # Closing the only descriptor of the open file description releases the flock.
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _refuse_a_parent_of_node_dirs(path: Path) -> None:
    """A directory that holds other nodes' data dirs (`cluster up`'s, whose nodes are DIR/n1,
    DIR/n2, ...) is not a node's data dir: a node started on it would be an empty voter with a
    real member's id, forgetting the log and the vote that member has, which Raft relies on."""
    if (path / "meta").exists() or not path.is_dir():
        return
    nodes = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "meta").exists())
    if nodes or (path / "cluster.json").exists():
        held = f"the data dirs of {', '.join(nodes)}" if nodes else "a cluster up's cluster.json"
        raise DataDirError(f"{path} is not a node's data dir: it holds {held}; give the node's "
                           f"own, such as {path / (nodes[0] if nodes else 'n1')}")


def lock_holder(fd: int) -> str | None:
    """Take the exclusive lock on the open LOCK file `fd`; if another process holds it, return
    the pid it wrote there (for the error message) instead."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
    return None


def _lock(lock_path: Path) -> int:
    created = not lock_path.exists()
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if created:
            fsync_directory(lock_path.parent)
        holder = lock_holder(fd)
        if holder is not None:
            raise DataDirError(
                f"data dir {lock_path.parent} is in use by another replikv process (pid {holder})"
            )
        # The pid only helps the operator read the error above; the lock itself is the flock.
        os.ftruncate(fd, 0)
        write_fully(fd, f"{os.getpid()}\n".encode("ascii"))
    except BaseException:
        os.close(fd)
        raise
    return fd


def stored_cluster_id(path: Path) -> str | None:
    """The cluster id recorded in data dir `path`; None if it has none yet (or its meta file
    cannot be read: `DataDir.open` then says why). Reads without the lock: the file is only
    ever replaced atomically."""
    meta_path = Path(path) / "meta"
    try:
        return _decode_meta(meta_path, meta_path.read_bytes())["cluster_id"]
    except (OSError, CorruptStateError):
        return None


def _decode_meta(meta_path: Path, data: bytes) -> dict:
    """The meta file's map, its node and cluster ids checked; CorruptStateError if damaged."""
    body = decode_checksummed(meta_path, data, META_MAGIC, META_VERSION)
    try:
        meta = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptStateError(meta_path, f"body is not valid msgpack ({exc})") from exc
    if not isinstance(meta, dict):
        raise CorruptStateError(meta_path, f"wrong types: body {meta!r} is not a map")
    if meta.get("format") != DATA_DIR_FORMAT:
        raise CorruptStateError(
            meta_path,
            f"unknown data dir format {meta.get('format')!r} (this replikv reads "
            f"format {DATA_DIR_FORMAT})",
        )
    if not isinstance(meta.get("node_id"), str) or not isinstance(meta.get("cluster_id"), str):
        raise CorruptStateError(meta_path, "wrong types: node_id and cluster_id must be strings")
    return meta


def _check_or_write_meta(meta_path: Path, *, node_id: str, cluster_id: str,
                         replication: str | None = None) -> None:
    try:
        data = meta_path.read_bytes()
    except FileNotFoundError:
        meta = {"format": DATA_DIR_FORMAT, "node_id": node_id, "cluster_id": cluster_id}
        if replication is not None:
            meta["replication"] = replication
        body = msgpack.packb(meta, use_bin_type=True)
        write_file_atomically(meta_path, encode_checksummed(META_MAGIC, META_VERSION, body))
        return
    meta = _decode_meta(meta_path, data)
    stored_node_id, stored_cluster_id = meta["node_id"], meta["cluster_id"]
    data_dir = meta_path.parent
    if stored_cluster_id != cluster_id:
        raise DataDirError(
            f"data dir {data_dir} belongs to cluster {stored_cluster_id!r}, but this node was "
            f"started for cluster {cluster_id!r}. Start it with cluster id "
            f"{stored_cluster_id!r}, or give it a different (empty) data dir to join "
            f"{cluster_id!r} as a new node."
        )
    stored_replication = meta.get("replication")
    if replication is not None and stored_replication not in (None, replication):
        raise DataDirError(
            f"data dir {data_dir} was created with replication = {stored_replication!r}, but "
            f"this node was started with {replication!r}. The replication mode is fixed when a "
            f"cluster is created: start it with --replication {stored_replication}, or "
            f"create a new cluster (back up and restore the data) to change it."
        )
    if stored_node_id != node_id:
        raise DataDirError(
            f"data dir {data_dir} belongs to node {stored_node_id!r} of cluster "
            f"{stored_cluster_id!r}, but this process was started as node {node_id!r}. Start it "
            f"with node id {stored_node_id!r}, or give node {node_id!r} its own data dir."
        )
