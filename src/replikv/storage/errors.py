"""The errors storage raises when what is on disk cannot be trusted or used.

They are kept apart from `InvariantViolation` (replikv's own bug) because here the fault lies in
the environment: a damaged disk, an operator pointing two nodes at one directory, a crash that
left something we cannot explain. Each message names the file and says what to do, because the
person reading it is an operator at a terminal, not a developer with a debugger.
"""

from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """Something on disk is unusable; the node must not start (or continue) on top of it."""


class CorruptLogError(StorageError):
    """A write-ahead log segment holds bytes that are neither valid records nor a torn tail."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"corrupt write-ahead log {path} at byte offset {offset}: {reason}. "
            "This node refuses to start rather than serve corrupt data. To recover, stop it, "
            "move its data directory aside (keep it as evidence) and restore the node from the "
            "other replicas."
        )


class CorruptStateError(StorageError):
    """A small state file (hard state, data dir meta) failed its checks when read back."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"corrupt state file {path}: {reason}. This node refuses to start rather than "
            "risk voting twice or forgetting its identity; restore it from the other replicas."
        )


class DataDirError(StorageError):
    """The data directory cannot be used by this process (locked, or belongs to someone else)."""


class CorruptRollbackFileError(StorageError):
    """A rollback file failed its checks when read back: its entries cannot be shown as data."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"damaged rollback file {path}: {reason}. Its entries cannot be trusted, so none are "
            "shown; keep the file as evidence. Other rollback files and the node itself are not "
            "affected."
        )
