"""Raft messages: what one consensus core says to another.

Plain frozen dataclasses, one per message kind, so a scenario test reads like the paper's
Figure 2. Every message carries the sender's term and id. The wire encoding (msgpack lists) lives
in `replikv.wire`; decoding validates every field there, so the core can trust the types it is
handed, but never the values (terms, indexes) — those are checked by the protocol itself.

Besides the paper's RequestVote and AppendEntries:
- PreVote (Ongaro's thesis §9.6) reuses the VoteRequest/VoteResponse shape with `pre_vote=True`:
  a node asks whether it *could* win before it disturbs anyone by raising its term.
- AppendRequest.seq / AppendResponse.seq: a leader-local round number echoed by followers, used
  to confirm leadership for ReadIndex (thesis §6.4) without writing to the log.
- AppendResponse on rejection carries a hint (conflict index and term) so the leader skips a
  whole term of mismatching entries per round trip instead of one entry (thesis §5.3 note).
- TimeoutNow (thesis §3.10) tells a caught-up follower to start an election at once, for
  leadership transfer.
- InstallSnapshot / InstallSnapshotResponse (thesis §5.4.1): a follower that needs entries the
  leader has compacted away receives the leader's snapshot file in chunks. The core decides
  which snapshot, which offset and how many bytes; the driver fills in the bytes from its
  snapshot store when it sends the message (`data` is b"" in what the core emits), and writes
  received chunks to its own store. The follower answers each chunk with how many bytes of that
  snapshot it now holds, so a transfer resumes where it stopped, also after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Entry(NamedTuple):
    """One log entry. `data` is opaque to consensus; b"" is the leader's no-op."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as NamedTuple allows
    term: int
    data: bytes


@dataclass(frozen=True, slots=True)
class VoteRequest:
    term: int
    src: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    # Set by a candidate that was told TimeoutNow: voters skip the leader-lease check, since the
    # leader itself asked for the election.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    src: str
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    term: int
    src: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    seq: int = 0
    # The sender held a lease when it sent this: no other leader existed, so `commit` was the
    # cluster's commit index then (followers measure their staleness by it).
    lease: bool = False


@dataclass(frozen=True, slots=True)
class AppendResponse:
    term: int
    src: str
    success: bool
    # success: the highest index known to match the leader's log.
    # rejection: the prev_index of the request being rejected (lets the leader spot stale ones).
    index: int
    hint_index: int = 0
    hint_term: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    term: int
    src: str


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: str
    index: int  # the snapshot covers the log through this index...
    snap_term: int  # ...whose entry has this term
    size: int  # the snapshot file's total size in bytes
    offset: int  # where `data` goes in the file
    length: int  # how many bytes the driver should put in `data` (fewer at the end of the file)
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    term: int
    src: str
    index: int
    snap_term: int
    offset: int  # bytes of that snapshot the follower now holds (where the next chunk goes)


RaftMessage = (VoteRequest | VoteResponse | AppendRequest | AppendResponse | TimeoutNow
               | InstallSnapshot | InstallSnapshotResponse)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its destination, as the core hands it to the transport."""

    to: str
    message: Any
