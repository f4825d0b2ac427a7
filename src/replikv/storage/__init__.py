"""Durable storage for one node: its data directory, Raft hard state and write-ahead log.

Everything here follows the same rules: nothing counts as durable until it is fsynced (and, for a
new or renamed file, its directory too), small files are replaced atomically, and every byte read
back is checked by CRC32. What fails those checks stops the node with an error naming the file;
the only damage cut off (and logged as a warning) is a torn tail from a crash in the write-ahead log's last write.
"""

from replikv.storage.datadir import DataDir
from replikv.storage.errors import (
    CorruptLogError,
    CorruptRollbackFileError,
    CorruptStateError,
    DataDirError,
    StorageError,
)
from replikv.storage.hardstate import HardState, load_hard_state, save_hard_state
from replikv.storage.rollback import (
    RollbackRecord,
    list_rollback_files,
    read_rollback_file,
    write_rollback_file,
)
from replikv.storage.wal import Entry, WriteAheadLog

__all__ = [
    "CorruptLogError",
    "CorruptRollbackFileError",
    "CorruptStateError",
    "DataDir",
    "DataDirError",
    "Entry",
    "HardState",
    "RollbackRecord",
    "StorageError",
    "WriteAheadLog",
    "list_rollback_files",
    "load_hard_state",
    "read_rollback_file",
    "save_hard_state",
    "write_rollback_file",
]
