"""What a leader knows about each follower's log, and how fast it may send to it.

Two states, as in etcd-io/raft's tracker:
- PROBE: the leader does not know where the follower's log matches. It sends one
  AppendRequest at a time and waits for the answer (or the next heartbeat) before sending more,
  so a lagging follower is not flooded with entries it will reject.
- REPLICATE: the follower's log matches up to `match`; entries are streamed optimistically
  (`next` advances as they are sent), up to `max_inflight` unacknowledged requests.
- SNAPSHOT: the follower needs entries the leader has compacted away; it is sent the leader's
  snapshot in chunks, one at a time, each answered with how many bytes it now holds.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from replikv.invariants import InvariantViolation

if TYPE_CHECKING:
    from replikv.raft.core import SnapshotMeta


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "acked_seq",
        "commit_sent",
        "inflight",
        "last_contact_tick",
        "match",
        "match_seq",
        "next",
        "probe_sent",
        "recent_active",
        "snapshot",
        "snapshot_offset",
        "snapshot_sent_tick",
        "snapshot_size",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        # The seq of the answer that last raised match: a rejection from a later round saying
        # the follower's log ends before match is news (it lost entries), not a delayed copy.
        self.match_seq = -1
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        # Last index of each unacknowledged AppendRequest sent in REPLICATE state.
        self.inflight: deque[int] = deque()
        # Heard from since the last CheckQuorum round.
        self.recent_active = False
        # Highest leadership-confirmation round (AppendRequest.seq) the follower answered; -1:
        # none yet (a leader's first requests may carry seq 0, and an answer to one counts).
        self.acked_seq = -1
        # The commit index the last AppendRequest to it carried.
        self.commit_sent = 0
        # When the leader last heard from it; None: not in this term.
        self.last_contact_tick: int | None = None
        # SNAPSHOT state: which snapshot (a SnapshotMeta), its size, the bytes the follower
        # confirmed holding, and when the last chunk was sent (to resend one that was lost).
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_size = 0
        self.snapshot_offset = 0
        self.snapshot_sent_tick = 0

    def become_snapshot(self, snapshot: SnapshotMeta, size: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot, self.snapshot_size, self.snapshot_offset = snapshot, size, 0

    def sending_snapshot(self) -> SnapshotMeta:
        """The snapshot being sent; only in SNAPSHOT state, which always has one."""
        snapshot = self.snapshot
        if snapshot is None:
            raise InvariantViolation("a follower in SNAPSHOT state with no snapshot to send")
        return snapshot

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.snapshot = None
        self.inflight.clear()
        self.next = self.match + 1

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.probe_sent = False
        self.snapshot = None
        self.inflight.clear()
        self.next = self.match + 1

    def free_inflight_through(self, index: int) -> None:
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
                f"inflight={len(self.inflight)})")
