"""Backups: a copy of the data that replication cannot take away.

Replication copies every write, a mistaken FLUSHALL included, to every replica within
milliseconds; a backup is the state at one committed index, kept outside the cluster, from
which the data can be brought back. A backup file is a snapshot file
(`replikv.storage.snapshot`): a manifest (cluster id, index, term, time, replication mode,
format version, the membership), the keys in checksummed records, the retryable-write session
table, and a trailer with the key count, the state's digest and a SHA-256 over everything.

- `download`: `replikv backup create`: a node's admin endpoint `GET /backup` takes a snapshot
  now (copy-on-write: the node keeps serving) and streams it; the client writes it to a temp
  file, fsyncs, verifies it in full, and only then gives it its name.
- `verify`: `replikv backup verify`: every checksum, the manifest, the trailer's counts, and the
  state digest recomputed from the records in one streaming pass; a summary of what is inside.
- `restore`: `replikv restore` and `replikv cluster up --restore`: seeds a node's data dir from a
  backup, for a cluster of the given members, building it beside the old one and swapping it in
  only once it is complete and verified.

Every step streams: memory is bounded by one record batch (and one set's members), never by the
state. Point-in-time recovery (replaying archived log segments on top of a backup) and scheduled
backups are to build on these pieces: a restore writes whatever a `restore.SeedSource` gives it
(a backup replayed up to a chosen index is one more source), and a scheduled backup is
`SnapshotRuntime.open_backup` (server/snapshots.py) written out by `download.write_backup_file`.
"""

from __future__ import annotations


class BackupError(Exception):
    """A backup cannot be taken, used or restored; the message says what is wrong and what to
    do. (A damaged or foreign file raises `replikv.storage.snapshot.CorruptSnapshotError`.)"""
