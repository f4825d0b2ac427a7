"""The Raft consensus core: a pure, deterministic state machine.

It is fed events — `step(message)`, `tick()`, `propose(data)`, `request_read(ctx)` — and hands
back work as a `Ready` batch: hard state and entries to make durable, messages to send, committed
entries to apply, confirmed read indexes. It does no I/O and reads no clock: time is a count of
ticks, randomness comes from an injected `random.Random`. The asyncio server and the
deterministic simulator drive this same object. The shape follows etcd-io/raft's RawNode:

    while core.has_ready():
        rd = core.ready()
        send(rd.early_messages)            # leader AppendRequests; they need no local fsync
        save_rollback(rd.rolled_back)      # entries a new leader overwrote, before they vanish
        persist(rd.hard_state, rd.entries) # fsync when rd.must_sync
        send(rd.messages)                  # votes and acks only after what they promise is durable
        apply(rd.committed)
        core.advance(rd)

What it implements (Ongaro's dissertation section numbers in brackets):
- leader election with randomized timeouts [3.4]; one vote per term, persisted before the reply;
  the up-to-date check on candidates' logs [3.6.1];
- PreVote [9.6]: a node that was partitioned away asks first whether it could win, so it does not
  raise its term and depose a healthy leader when it comes back;
- CheckQuorum [6.2]: a leader that has not heard from a majority within an election timeout steps
  down; a node that heard from a leader less than election_ticks ticks ago refuses votes and
  pre-votes (leader stickiness), unless the leader itself asked for the election (TimeoutNow);
- log replication with the consistency check [3.5], fast backtracking by conflict term [3.5
  note], pipelined AppendRequests with a bounded in-flight window, commit only by counting
  replicas of an entry from the current term [3.6.2], a no-op entry at the start of each term;
- ReadIndex [6.4]: linearizable reads confirmed by one heartbeat round, batched: all reads that
  arrive before the round's messages leave share it;
- lease reads [6.4.1]: `request_read(ctx, lease=True)` is answered at once, without a round, by
  a leader that holds a lease (see below), and falls back to ReadIndex otherwise;
- rolled-back entries: a follower that drops a conflicting suffix of its log reports the dropped
  entries (`Ready.rolled_back`) so the driver can keep them in a rollback file, as MongoDB does.

Leader leases. Every AppendRequest carries a confirmation number (`seq`), echoed in the answer;
the leader remembers the tick at which each number was first sent (for as long as a lease can
reach back), and every heartbeat starts a new one. A leader holds a lease while it has committed
an entry of its term (so it knows the commit index), no leadership transfer is under way, it has
sent no TimeoutNow in this term (a TimeoutNow delayed in the network can start an election at
any later time, and voters grant such votes regardless), and a quorum (itself included) answered
AppendRequests sent less than `lease_ticks` ticks ago.

The lease rests on vote refusal (`refuses_votes`): a node refuses every vote and pre-vote not
asked on a leader's behalf for election_ticks ticks after it last heard from a leader, even if a
stale reply has since moved it to a later term; and for election_ticks ticks after it starts,
since answers it gave before a crash may still count toward a lease (a node still at term 0 has
never answered a leader and is exempt). A new leader needs a vote from someone in the lease's
quorum, so it cannot be elected until election_ticks ticks of that voter's clock have passed
since the voter answered, which is after the leader sent the request. The assumption: clocks on
different nodes run at the same rate within a factor of (election_ticks - lease_ticks) /
election_ticks, so that lease_ticks of the leader's ticks never last longer than
election_ticks of any voter's. Message delays do not matter (the lease counts from when the
request was sent). Without CheckQuorum nothing refuses votes, so there are no leases: lease
reads fall back to ReadIndex.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from replikv.invariants import InvariantViolation, invariant
from replikv.raft.log import RaftLog
from replikv.raft.membership import Membership, MembershipError, is_config_entry
from replikv.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Envelope,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from replikv.raft.progress import Progress, ProgressState
from replikv.storage.hardstate import HardState


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# How long a driver lets a new commit index wait for the next AppendRequest to carry it to the
# followers before it calls broadcast_commit (see RaftCore.commit_unsent): long enough for a
# lone client's next write to arrive (a loopback round trip and its parsing), short enough that
# followers apply and serve what was written at once to anyone watching.
COMMIT_BROADCAST_DELAY_MS = 1


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: str
    # The bootstrap membership: what the cluster was created with. Config entries in the log and
    # snapshots supersede it. A node joining an existing cluster starts with none (it is not a
    # member until a config entry that names it reaches it).
    voters: tuple[str, ...]
    # An election starts after a random number of ticks in [election_ticks, 2*election_ticks).
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_entries_bytes: int = 4 * 1024 * 1024
    max_append_entries_count: int = 4096
    max_inflight_appends: int = 64
    # How long a quorum's answer to an AppendRequest lets the leader serve reads without a
    # round, counted from when the request was sent. None: election_ticks - 2 (the margin
    # allows for clock-rate differences, see the module docstring). 0 disables lease reads.
    lease_ticks: int | None = None
    learners: tuple[str, ...] = ()
    # Snapshot chunks sent to a follower that needs a snapshot: one in flight at a time.
    snapshot_chunk_bytes: int = 1024 * 1024
    # A learner is promoted to voter only once its log is within this many entries of the
    # leader's (a voter that lags far behind slows every commit until it catches up).
    promote_max_lag_entries: int = 1000

    def __post_init__(self) -> None:
        invariant(len(set(self.voters)) == len(self.voters), "duplicate voter ids")
        invariant(self.snapshot_chunk_bytes >= 1, "snapshot_chunk_bytes must be >= 1")
        invariant(self.heartbeat_ticks >= 1, "heartbeat_ticks must be >= 1")
        invariant(self.election_ticks > self.heartbeat_ticks,
                  "election_ticks must exceed heartbeat_ticks")
        if self.lease_ticks is None:
            object.__setattr__(self, "lease_ticks", self.election_ticks - 2)
        invariant(isinstance(self.lease_ticks, int)
                  and 0 <= self.lease_ticks < self.election_ticks,
                  f"lease_ticks must be in [0, election_ticks): {self.lease_ticks}")


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed read index for the context given to request_read (None: not confirmed)."""

    context: Any
    index: int | None


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """A snapshot covers the log through `index` (whose entry has `term`); `membership` is the
    configuration in force at that index."""

    index: int
    term: int
    membership: Membership



def classify_replaced(dropped: list[Entry], snap_index: int, snap_term: int,
                      commit_index: int) -> tuple[list[Entry], list[Entry]]:
    """The entries a snapshot at (snap_index, snap_term) replaced, in a log that did not hold
    that entry: (certainly not committed, possibly committed). The rest were committed.

    The committed log holds (snap_index, snap_term), and its terms never decrease, so:
    - an entry at or below `commit_index`, the commit this node knew, was committed;
    - an entry of term `snap_term` at or below snap_index was made by that term's only leader,
      whose log then held it under (snap_index, snap_term): it was committed, and by Log
      Matching so was every entry before it in this log;
    - an entry after snap_index (this log's entry at snap_index differs), or of a term after
      snap_term, was never committed;
    - of an older term, at or below snap_index, after those: it may have been either (this
      node restarted, so it no longer knows how far its log had committed; a snapshot does not
      say which terms its entries had).
    """
    proven = commit_index
    for e in dropped:
        if e.index <= snap_index and e.term == snap_term:
            proven = max(proven, e.index)
    rolled_back, maybe = [], []
    for e in dropped:
        if e.index <= proven:
            continue
        if e.index > snap_index or e.term > snap_term:
            rolled_back.append(e)
        else:
            maybe.append(e)
    return rolled_back, maybe

@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    # Messages that may be sent before `entries`/`hard_state` are durable (the leader's own
    # AppendRequests: the leader counts itself toward a commit only once its write is durable).
    early_messages: list[Envelope] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    # Entries dropped from the log since the last Ready (a follower overwriting a conflicting
    # suffix), in index order, durable or not; an entry dropped twice appears twice. Save them
    # before writing `entries`, which replace them on disk.
    rolled_back: list[Entry] = field(default_factory=list)
    # Entries an installed snapshot replaced that may or may not be the committed ones at their
    # index (see `restore`): saved beside `rolled_back`, marked as possibly committed.
    maybe_committed: list[Entry] = field(default_factory=list)
    # Snapshot chunks received from the leader, for the driver to store; it then reports each
    # with `snapshot_chunk_saved` (or, for the last one, loads the snapshot and calls `restore`).
    snapshot_chunks: list[InstallSnapshot] = field(default_factory=list)

    @property
    def must_sync(self) -> bool:
        return self.hard_state is not None or bool(self.entries)


class RaftCore:
    def __init__(self, config: RaftConfig, *, hard_state: HardState | None = None,
                 entries: list[Entry] | None = None, rng: random.Random | None = None,
                 log_offset: int = 0, log_offset_term: int = 0,
                 snapshot: SnapshotMeta | None = None, snapshot_size: int = 0) -> None:
        self.config = config
        self.id = config.node_id
        self.rng = rng if rng is not None else random.Random(0)
        if snapshot is not None:
            log_offset, log_offset_term = snapshot.index, snapshot.term
        # The latest durable snapshot the driver holds (what a lagging follower is sent).
        self.snapshot = snapshot
        self.snapshot_size = snapshot_size
        # Membership: in force at the log's offset, then each config entry in the log.
        self._base_membership = (snapshot.membership if snapshot is not None
                                 else Membership(config.voters, config.learners))
        self._config_log: list[tuple[int, Membership]] = []
        self.membership = self._base_membership
        self.voters: tuple[str, ...] = ()
        self.learners: tuple[str, ...] = ()
        self.peers: tuple[str, ...] = ()
        self.quorum = 1

        hs = hard_state or HardState(term=0, voted_for=None)
        self.term = hs.term
        self.voted_for = hs.voted_for
        self.log = RaftLog(entries, offset=log_offset, offset_term=log_offset_term)
        # Commit index is volatile (Raft Figure 2): after a restart it is learnt again from the
        # leader, or by a new leader committing an entry of its own term.
        self.commit_index = log_offset
        self.applied_index = log_offset
        for e in self.log.slice(log_offset + 1, self.log.last_index + 1):
            self._note_config_entry(e)

        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_ticks = 0
        self.tick_count = 0
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.transfer_target: str | None = None
        # The tick at which this node last heard from a leader; for election_ticks after it the
        # node helps elect no one (a leader may count its answer toward a lease). Start-up counts
        # as hearing one: before a crash this node may have answered a leader that still counts
        # on it. A node still at term 0 has never answered any leader (leaders have term >= 1
        # and an answer is sent only once its term is durable), so nothing counts on it.
        self._heard_leader_tick: int | None = 0 if hs.term > 0 else None

        self._msgs: list[Envelope] = []
        self._hard_state_dirty = False
        self._append_pending = False
        self._commit_broadcast = False
        self._heartbeat_needed = False
        # ReadIndex: leadership-confirmation rounds.
        self._read_seq = 0
        self._read_round_open = False
        self._pending_reads: list[tuple[object, int, int]] = []  # (context, index, seq)
        self._reads_awaiting_commit: list[object] = []
        self._read_states: list[ReadState] = []
        # Leases: (first seq, tick) for each tick at which a new seq was first sent, only as far
        # back as a lease can reach (at most lease_ticks items).
        self._seq_sent_ticks: deque[tuple[int, int]] = deque()
        self._timeout_now_sent = False  # in this term; it rules out leases for the term
        self._rolled_back: list[Entry] = []
        self._maybe_committed: list[Entry] = []
        self._snapshot_chunks: list[InstallSnapshot] = []
        self._refresh_membership()
        # Followers found to have lost entries they had acknowledged (a wiped or restored data
        # dir): (follower, its match index, the end of its log). The driver takes and reports
        # them (take_lost_entries).
        self._lost_entries: list[tuple[str, int, int]] = []
        # Counters for status and metrics.
        self.elections_started = 0
        self.leader_changes = 0
        self._reset_election_timer()

    # -- introspection ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def hard_state(self) -> HardState:
        return HardState(term=self.term, voted_for=self.voted_for)

    def committed_in_current_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.term

    def lease_remaining_ticks(self) -> int:
        """For how many more ticks this leader may answer lease reads (0: it holds no lease)."""
        lease_ticks = self.config.lease_ticks
        if (self.role is not Role.LEADER or not lease_ticks or not self.config.check_quorum
                or self.transfer_target is not None or self._timeout_now_sent
                or not self.committed_in_current_term()):
            return 0
        # When each voter last answered: when the request it answered was sent.
        answered = [self.tick_count] if self.id in self.voters else []
        for peer, pr in self.progress.items():
            if peer not in self.voters:
                continue
            sent_tick = self._seq_sent_tick(pr.acked_seq)
            if sent_tick is not None:
                answered.append(sent_tick)
        if len(answered) < self.quorum:
            return 0
        answered.sort(reverse=True)
        return max(0, answered[self.quorum - 1] + lease_ticks - self.tick_count)

    def refuses_votes(self) -> bool:
        """Whether this node now refuses votes and pre-votes, except those a leader asked for
        (transfer): a leader may be counting on its recent answer for a lease, and CheckQuorum's
        leader stickiness keeps a live leader in place."""
        if not self.config.check_quorum:
            return False
        if self.role is Role.LEADER:
            return True
        return (self._heard_leader_tick is not None
                and self.tick_count - self._heard_leader_tick < self.config.election_ticks)

    # -- events ----------------------------------------------------------------------------------

    def clock_jumped(self, ticks: int) -> None:
        """`ticks` more ticks passed while this core was not ticked (its process was stopped or
        starved). They fire no timer, but they count for what time guarantees: a lease ends, a
        vote refusal window closes. Without this a leader resumed from SIGSTOP would believe
        its lease still held, though the others may have elected a new leader meanwhile."""
        invariant(ticks >= 0, f"the clock cannot jump back ({ticks} ticks)")
        self.tick_count += ticks

    def tick(self) -> None:
        """One unit of logical time has passed."""
        self.tick_count += 1
        if self.role is Role.LEADER:
            self.heartbeat_elapsed += 1
            self.election_elapsed += 1
            if self.election_elapsed >= self.config.election_ticks:
                self.election_elapsed = 0
                if self.config.check_quorum and not self._quorum_recently_active():
                    self._become_follower(self.term, None)
                    return
                self.transfer_target = None  # a transfer that did not finish in time is over
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                # A new confirmation number, so the answers renew the lease without reads.
                self._start_confirmation_round()
            else:
                self.broadcast_commit()
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_ticks:
            self.election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote)

    def propose(self, datas: list[bytes]) -> tuple[int, int] | None:
        """Append client data to the log. Returns (first index, term), or None if not leader."""
        if self.role is not Role.LEADER or self.transfer_target is not None or not datas:
            return None
        first = self.log.last_index + 1
        invariant(not any(is_config_entry(d) for d in datas),
                  "membership changes go through propose_membership")
        self.log.append_new(self.term, datas)
        self._append_pending = True
        return first, self.term

    @property
    def commit_unsent(self) -> bool:
        """A leader whose commit index some replicating follower has not been sent yet.

        A new commit index travels with the next AppendRequest, so under load it costs no
        message of its own. When none follows, the driver calls `broadcast_commit` after
        COMMIT_BROADCAST_DELAY_MS (the server and the simulator do), or the next tick sends
        it: sending it at once would double the messages of every lone write (an empty
        AppendRequest and its answer per follower). Only a leader has `progress` entries.
        """
        commit = self.commit_index
        for pr in self.progress.values():
            if pr.commit_sent < commit and pr.state is ProgressState.REPLICATE:
                return True
        return False

    def broadcast_commit(self) -> bool:
        """Send the commit index, in the next Ready, to the followers that lack it; whether
        any does (then has_ready() is true)."""
        if self.commit_unsent:
            self._commit_broadcast = True
            return True
        return False

    def request_read(self, context: object, *, lease: bool = False) -> None:
        """Ask for a linearizable read index; the answer comes back as a ReadState.

        With `lease`, a leader holding a lease answers at once (in the next Ready, no message
        sent); this trusts bounded clock drift (see the module docstring). Otherwise, and
        whenever there is no lease, a ReadIndex round confirms the leadership first."""
        if lease and self.lease_remaining_ticks() > 0:
            self._read_states.append(ReadState(context, self.commit_index))
        elif self.role is not Role.LEADER:
            self._read_states.append(ReadState(context, None))
        elif not self.committed_in_current_term():
            # Until the leader commits its no-op it does not know the full commit index [6.4].
            self._reads_awaiting_commit.append(context)
        else:
            self._start_read(context)

    def transfer_leadership(self, target: str) -> bool:
        """Start handing leadership to `target` (thesis 3.10). Proposals are refused meanwhile."""
        if (self.role is not Role.LEADER or target not in self.progress
                or target not in self.voters):
            return False
        self.transfer_target = target
        self.election_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_append(target, force=True)
        return True

    # -- membership ------------------------------------------------------------------------------

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at `index` (which must not be below the log's offset)."""
        invariant(index >= self.log.offset, f"membership at {index} below log start")
        found = self._base_membership
        for i, m in self._config_log:
            if i > index:
                break
            found = m
        return found

    def config_change_pending(self) -> bool:
        """Whether the latest configuration in the log is not yet committed."""
        return bool(self._config_log) and self._config_log[-1][0] > self.commit_index

    def propose_membership(self, new: Membership) -> int:
        """Propose a new configuration (a single-server change from the current one). Returns
        its log index; raises MembershipError saying why it is refused."""
        if self.role is not Role.LEADER:
            raise MembershipError("not the leader")
        if self.transfer_target is not None:
            raise MembershipError("a leadership transfer is under way; try again shortly")
        if not self.committed_in_current_term():
            raise MembershipError("the leader has not yet committed an entry of its term; "
                                  "try again shortly")
        if self.config_change_pending():
            raise MembershipError("another membership change is still being committed; "
                                  "try again shortly")
        cur = self.membership
        old_v, new_v = set(cur.voters), set(new.voters)
        if len(old_v ^ new_v) > 1:
            raise MembershipError("only one voter may be added or removed per change")
        if not new_v:
            raise MembershipError("the change would leave the cluster without voters")
        for added in new_v - old_v:
            pr = self.progress.get(added)
            if pr is None:
                raise MembershipError(f"{added} must first join as a learner (standby) and "
                                      "catch up before it can vote")
            if not self._recently_heard(added):
                raise MembershipError(f"{added} is not reachable (not heard from within an "
                                      "election timeout); it cannot become a voter now")
            if pr.match + self.config.promote_max_lag_entries < self.log.last_index:
                raise MembershipError(
                    f"{added} is still catching up ({self.log.last_index - pr.match} entries "
                    "behind); promote it once it has caught up")
        alive = sum(1 for v in new_v if self._recently_heard(v))
        needed = len(new_v) // 2 + 1
        if alive < needed:
            raise MembershipError(
                f"refused: only {alive} of the {len(new_v)} voters after the change are "
                f"reachable, fewer than the {needed} a majority needs; the cluster could not "
                "commit anything")
        index = self.log.last_index + 1
        self._log_append([Entry(index, self.term, new.encode())])
        self._append_pending = True
        return index

    def _recently_heard(self, node_id: str) -> bool:
        if node_id == self.id:
            return True
        pr = self.progress.get(node_id)
        return (pr is not None and pr.last_contact_tick is not None
                and self.tick_count - pr.last_contact_tick < self.config.election_ticks)

    def _note_config_entry(self, e: Entry) -> None:
        if is_config_entry(e.data):
            try:
                m = Membership.decode(e.data)
            except MembershipError:
                invariant(False, f"undecodable config entry at index {e.index}")
                return
            self._config_log.append((e.index, m))

    def _log_append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        before = len(self._config_log)
        for e in entries:
            self._note_config_entry(e)
        if len(self._config_log) != before:
            self._refresh_membership()

    def _log_truncate(self, index: int) -> list[Entry]:
        removed = self.log.truncate_from(index)
        if self._config_log and self._config_log[-1][0] >= index:
            self._config_log = [(i, m) for i, m in self._config_log if i < index]
            self._refresh_membership()
        return removed

    def _refresh_membership(self) -> None:
        m = self._config_log[-1][1] if self._config_log else self._base_membership
        self.membership = m
        self.voters, self.learners = m.voters, m.learners
        self.peers = tuple(p for p in m.members if p != self.id)
        self.quorum = len(m.voters) // 2 + 1
        if self.role is Role.LEADER:
            for p in self.peers:
                if p not in self.progress:
                    self.progress[p] = Progress(self.log.last_index + 1)
            for p in [p for p in self.progress if p not in self.peers]:
                del self.progress[p]
                if self.transfer_target == p:
                    self.transfer_target = None
        elif self.role is not Role.FOLLOWER and not self.may_campaign():
            self._become_follower(self.term, None)  # a candidate no longer allowed to run

    def _maybe_step_down_removed(self) -> None:
        """A leader whose own removal (or demotion) has committed hands over and steps down
        (dissertation §4.2.2): until then it led without counting itself in majorities."""
        if (self.role is not Role.LEADER or self.id in self.voters
                or self.config_change_pending()):
            return
        best = max((v for v in self.voters if v in self.progress),
                   key=lambda v: (self.progress[v].match, v), default=None)
        if best is not None and self.progress[best].match == self.log.last_index:
            self._send_timeout_now(best)  # the best-placed voter campaigns at once
        self._become_follower(self.term, None)

    # -- snapshots -------------------------------------------------------------------------------

    def set_snapshot(self, meta: SnapshotMeta, size: int) -> None:
        """The driver now durably holds a snapshot through meta.index (committed), `size` bytes
        long; lagging followers are sent the newest one."""
        invariant(size > 0, "a snapshot has a size")
        invariant(meta.index <= self.commit_index,
                  f"snapshot at {meta.index} beyond commit index {self.commit_index}")
        if self.snapshot is None or meta.index > self.snapshot.index:
            self.snapshot, self.snapshot_size = meta, size

    def compact(self, index: int) -> None:
        """Drop log entries through `index`; a durable snapshot must already cover them."""
        invariant(self.snapshot is not None and index <= self.snapshot.index,
                  f"compaction to {index} not covered by a snapshot")
        invariant(index <= self.applied_index, f"compaction to {index} beyond applied index")
        if index <= self.log.offset:
            return
        self._base_membership = self.membership_at(index)
        self._config_log = [(i, m) for i, m in self._config_log if i > index]
        self.log.compact(index)

    def snapshots_in_use(self) -> set[tuple[int, int]]:
        """(index, term) of the snapshots being sent to followers: keep their files."""
        return {(pr.snapshot.index, pr.snapshot.term) for pr in self.progress.values()
                if pr.state is ProgressState.SNAPSHOT and pr.snapshot is not None}

    def snapshot_unavailable(self, peer: str) -> None:
        """The driver could not read the snapshot it was to send `peer`: start over."""
        pr = self.progress.get(peer)
        if pr is not None and pr.state is ProgressState.SNAPSHOT:
            pr.become_probe()

    def snapshot_chunk_saved(self, chunk: InstallSnapshot, offset: int) -> None:
        """The driver stored a received chunk (or ignored it, if it was not at the offset it
        expected); it now holds `offset` bytes of that snapshot. Tells the sender."""
        self._send(chunk.src, InstallSnapshotResponse(self.term, self.id, chunk.index,
                                                      chunk.snap_term, offset))

    def restore(self, meta: SnapshotMeta, size: int) -> bool:
        """The driver has durably stored a snapshot received from the leader and loaded it into
        its state: the log now continues after meta.index. Returns False (and changes nothing)
        if the snapshot is not ahead of what this node has already committed."""
        invariant(self.role is not Role.LEADER, "a leader does not install snapshots")
        if meta.index <= self.commit_index:
            return False
        if self.log.term_at(meta.index) == meta.term:
            self.log.compact(meta.index)  # the entries after it still match: keep them
            self._config_log = [(i, m) for i, m in self._config_log if i > meta.index]
        else:
            dropped = self.log.reset(meta.index, meta.term)
            rolled_back, maybe = classify_replaced(dropped, meta.index, meta.term,
                                                   self.commit_index)
            self._rolled_back.extend(rolled_back)
            self._maybe_committed.extend(maybe)
            self._config_log = []
        self._base_membership = meta.membership
        self.commit_index = self.applied_index = meta.index
        self.snapshot, self.snapshot_size = meta, size
        self._refresh_membership()
        if self.leader_id is not None:
            self._send(self.leader_id, AppendResponse(self.term, self.id, True, meta.index))
        return True

    def step(self, msg: object) -> None:
        """Handle one message from a peer."""
        term = msg.term  # type: ignore[attr-defined]
        if term > self.term:
            if isinstance(msg, VoteRequest):
                if self.refuses_votes() and not msg.transfer:
                    return  # a live leader exists; do not let a disruptive node depose it
                if not msg.pre_vote:
                    self._become_follower(term, None)
            elif isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                pass  # granted pre-votes carry the term we would campaign in
            else:
                leader = (msg.src if isinstance(msg, AppendRequest | TimeoutNow | InstallSnapshot)
                          else None)
                self._become_follower(term, leader)
        elif term < self.term:
            if isinstance(msg, InstallSnapshot):
                self._send(msg.src, AppendResponse(self.term, self.id, False, 0))
            elif isinstance(msg, AppendRequest):
                # A deposed leader: tell it the new term so it steps down.
                self._send(msg.src, AppendResponse(self.term, self.id, False, msg.prev_index))
            elif isinstance(msg, VoteRequest) and msg.pre_vote:
                self._send(msg.src, VoteResponse(self.term, self.id, False, pre_vote=True))
            return

        if isinstance(msg, VoteRequest):
            self._handle_vote_request(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    # -- the Ready cycle ---------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs or self._hard_state_dirty or self._read_states or self._rolled_back
            or self._maybe_committed
            or self._snapshot_chunks or self.log.unstable_from <= self.log.last_index
            or (self.role is Role.LEADER and (
                self._append_pending or self._heartbeat_needed or self._commit_broadcast))
            or min(self.commit_index, self.log.persisted_index) > self.applied_index)

    def ready(self) -> Ready:
        if self.role is Role.LEADER:
            self._flush_appends()
        rd = Ready()
        if self._hard_state_dirty:
            rd.hard_state = self.hard_state()
            self._hard_state_dirty = False
        rd.entries = self.log.take_unstable()
        msgs, self._msgs = self._msgs, []
        if rd.hard_state is None:
            for env in msgs:
                (rd.early_messages if isinstance(env.message, AppendRequest)
                 else rd.messages).append(env)
        else:
            rd.messages = msgs
        apply_to = min(self.commit_index, self.log.persisted_index)
        if apply_to > self.applied_index:
            rd.committed = self.log.slice(self.applied_index + 1, apply_to + 1)
            self.applied_index = apply_to
        rd.read_states, self._read_states = self._read_states, []
        # Stable: an index dropped twice lists its entries in the order they were dropped.
        rd.rolled_back = sorted(self._rolled_back, key=lambda e: e.index)
        self._rolled_back = []
        rd.maybe_committed, self._maybe_committed = self._maybe_committed, []
        rd.snapshot_chunks, self._snapshot_chunks = self._snapshot_chunks, []
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted `rd.hard_state` and `rd.entries`."""
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                self._maybe_commit()

    # -- roles -------------------------------------------------------------------------------------

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        n = self.config.election_ticks
        self.randomized_election_ticks = n + self.rng.randrange(n)

    def _become_follower(self, term: int, leader: str | None) -> None:
        was_leader = self.role is Role.LEADER
        if term != self.term:
            invariant(term > self.term, f"term going backwards {self.term} -> {term}")
            self.term = term
            self.voted_for = None
            self._hard_state_dirty = True
        self.role = Role.FOLLOWER
        if leader is not None and leader != self.leader_id:
            self.leader_changes += 1
        self.leader_id = leader
        self.progress = {}
        self.transfer_target = None
        self._append_pending = self._commit_broadcast = self._heartbeat_needed = False
        self._reset_election_timer()
        if was_leader:
            self._fail_pending_reads()

    def may_campaign(self) -> bool:
        """Voters run for leader; standbys (learners) never do. A node that the latest
        configuration in its log removes or demotes, while that entry is not known to be
        committed, still may:
        it may hold the only copies of that entry (a leader removing itself that crashed before
        the change committed), and the other voters would refuse any candidate lacking it. It
        counts only the new configuration's votes, as every candidate does (dissertation
        §4.2.2); once the change is known committed it stops."""
        if self.id in self.voters:
            return True
        if not self._config_log:
            return False
        index, _ = self._config_log[-1]
        return index > self.commit_index and self.id in self.membership_at(index - 1).voters

    def _campaign(self, *, pre_vote: bool, transfer: bool = False) -> None:
        if not self.may_campaign():
            self.election_elapsed = 0  # learners and non-members never run
            return
        self.elections_started += not pre_vote
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            vote_term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.voted_for = self.id
            self._hard_state_dirty = True
            vote_term = self.term
        self.leader_id = None
        self.votes = {self.id: True}
        self._reset_election_timer()
        if self._poll() == "won":
            self._won_election()
            return
        for peer in self.voters:
            if peer == self.id:
                continue
            self._send(peer, VoteRequest(vote_term, self.id, self.log.last_index,
                                         self.log.last_term, pre_vote=pre_vote,
                                         transfer=transfer))

    def _poll(self) -> str:
        granted = sum(1 for p, v in self.votes.items() if v and p in self.voters)
        rejected = sum(1 for p, v in self.votes.items() if not v and p in self.voters)
        if granted >= self.quorum:
            return "won"
        if rejected > len(self.voters) - self.quorum:
            return "lost"
        return "pending"

    def _won_election(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._campaign(pre_vote=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        invariant(self.role is Role.CANDIDATE, f"become_leader from {self.role}")
        self.role = Role.LEADER
        self.leader_id = self.id
        self.leader_changes += 1
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        self.progress = {p: Progress(self.log.last_index + 1) for p in self.peers}
        for pr in self.progress.values():
            pr.recent_active = True  # give everyone one election timeout to answer
            pr.last_contact_tick = self.tick_count
        # Every answer in this term is to a request sent from now on (the current seq may have
        # been used in an earlier reign, but answers from then carry an older term).
        self._timeout_now_sent = False
        self._seq_sent_ticks.clear()
        self._note_seq_sent()
        # The no-op: committing an entry of its own term tells the leader its commit index, and
        # with it everything from earlier terms commits too [3.6.2].
        self._log_append([Entry(self.log.last_index + 1, self.term, b"")])
        self._append_pending = True

    def _handle_vote_request(self, m: VoteRequest) -> None:
        same_vote_again = self.voted_for == m.src
        # Refused within a lease even at our own term: a stale higher-term reply may have moved
        # this node past its leader's term without the leader being gone.
        may_vote_anew = m.transfer or not self.refuses_votes()
        can_vote = (same_vote_again
                    or (may_vote_anew and self.voted_for is None and self.leader_id is None)
                    or (may_vote_anew and m.pre_vote and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            if not m.pre_vote:
                self.voted_for = m.src
                self._hard_state_dirty = True
                self.election_elapsed = 0
            # A granted answer carries the request's term (the candidate's future term for a
            # pre-vote), so the candidate does not mistake it for a newer term.
            self._send(m.src, VoteResponse(m.term, self.id, True, pre_vote=m.pre_vote))
        else:
            self._send(m.src, VoteResponse(self.term, self.id, False, pre_vote=m.pre_vote))

    def _step_follower(self, msg: object) -> None:
        if isinstance(msg, AppendRequest | InstallSnapshot):
            self.election_elapsed = 0
            if self.leader_id != msg.src:
                self.leader_changes += 1
            self.leader_id = msg.src
            if isinstance(msg, AppendRequest):
                self._handle_append(msg)
            else:
                self._handle_install_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            self._campaign(pre_vote=False, transfer=True)

    def _step_candidate(self, msg: object) -> None:
        if isinstance(msg, AppendRequest | InstallSnapshot):
            # Someone won this term; follow it.
            self._become_follower(self.term, msg.src)
            self._step_follower(msg)
        elif isinstance(msg, VoteResponse):
            if msg.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return  # an answer to a round we are no longer in
            self.votes.setdefault(msg.src, msg.granted)
            outcome = self._poll()
            if outcome == "won":
                self._won_election()
            elif outcome == "lost":
                self._become_follower(self.term, None)

    def _handle_install_snapshot(self, m: InstallSnapshot) -> None:
        self._heard_leader_tick = self.tick_count
        if m.index <= self.commit_index:
            # Already have everything it covers: the leader can go on from our commit index.
            self._send(m.src, AppendResponse(self.term, self.id, True, self.commit_index))
            return
        self._snapshot_chunks.append(m)

    def _handle_append(self, m: AppendRequest) -> None:
        self._heard_leader_tick = self.tick_count
        log = self.log
        if m.prev_index < self.commit_index:
            # Everything up to our commit index is known to match; skip what we have.
            entries = [e for e in m.entries if e.index > self.commit_index]
            if not entries:
                self._send(m.src, AppendResponse(self.term, self.id, True, self.commit_index,
                                                 seq=m.seq))
                return
            prev_index, prev_term = entries[0].index - 1, log.term_at(entries[0].index - 1)
            invariant(prev_term is not None, "committed prefix missing")
        else:
            entries, prev_index, prev_term = list(m.entries), m.prev_index, m.prev_term
        if log.term_at(prev_index) != prev_term:
            if prev_index > log.last_index:
                hint_index, hint_term = log.last_index + 1, 0
            else:
                hint_term = log.term_at(prev_index) or 0
                hint_index = log.first_index_of_term(prev_index, floor=self.commit_index + 1)
            self._send(m.src, AppendResponse(self.term, self.id, False, m.prev_index,
                                             hint_index, hint_term, seq=m.seq))
            return
        # Find the first entry we do not already have; drop a conflicting suffix there.
        for i, e in enumerate(entries):
            have = log.term_at(e.index)
            if have != e.term:
                if have is not None:
                    invariant(e.index > self.commit_index,
                              f"conflict at committed index {e.index} (commit {self.commit_index})")
                    self._rolled_back.extend(self._log_truncate(e.index))
                    # Acks not yet handed out for entries being replaced promise entries that
                    # will never be written (this batch writes the replacements): drop them.
                    self._msgs = [env for env in self._msgs if not (
                        isinstance(env.message, AppendResponse) and env.message.success
                        and env.message.index >= e.index)]
                self._log_append(entries[i:])
                break
        last_new = prev_index + len(entries)
        if m.commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(m.commit, last_new))
        self._send(m.src, AppendResponse(self.term, self.id, True, last_new, seq=m.seq))

    def _step_leader(self, msg: object) -> None:
        if not isinstance(msg, AppendResponse | InstallSnapshotResponse):
            return
        pr = self.progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.last_contact_tick = self.tick_count
        if isinstance(msg, InstallSnapshotResponse):
            self._on_snapshot_progress(msg.src, pr, msg)
            return
        if msg.seq > pr.acked_seq:
            pr.acked_seq = msg.seq
            self._confirm_reads()
        if msg.success:
            if msg.index > pr.match:
                pr.match = msg.index
                pr.match_seq = msg.seq
                if pr.next <= msg.index:
                    pr.next = msg.index + 1
                if pr.state is ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state is ProgressState.SNAPSHOT:
                    if pr.match >= self.log.offset:  # installed, or no longer needed
                        pr.become_replicate()
                    elif pr.snapshot is None or pr.match >= pr.snapshot.index:
                        # Installed, but the log has since been compacted past it: the
                        # follower needs the newer snapshot (sent below, from PROBE).
                        pr.become_probe()
                else:
                    pr.free_inflight_through(msg.index)
                self._maybe_commit()
                if (self.transfer_target == msg.src and pr.match == self.log.last_index):
                    self._send_timeout_now(msg.src)
            elif pr.state is ProgressState.PROBE:
                pr.probe_sent = False
            if pr.match < self.log.last_index and self.role is Role.LEADER:
                self._send_append(msg.src)
            return
        if pr.state is ProgressState.SNAPSHOT:
            return  # a heartbeat's rejection: the snapshot is what it needs
        # Rejected: back up next, unless the rejection is for a request we no longer care about.
        if msg.index > self.log.last_index:
            # No request of this term had that prev_index: this answers an AppendRequest from
            # this node's earlier reign, which the follower rejected stamped with its own (our
            # current) term. Backing up to it would point next past the end of our log.
            return
        # Its log ends (at hint_index - 1) before entries it acknowledged, in an answer from a
        # later round than the one that acknowledged them (not a delayed copy): it lost them
        # (its data dir was wiped or replaced). Backing up only to match + 1 would probe the
        # same index for ever; start from where its log ends (or a snapshot), and say so:
        # copies of committed entries were lost, and it may have forgotten a vote.
        lost = msg.hint_term == 0 and 0 < msg.hint_index <= pr.match and msg.seq > pr.match_seq
        if pr.state is ProgressState.REPLICATE:
            if msg.index <= pr.match and not lost:
                return
        elif msg.index != pr.next - 1 and not lost:
            return
        if lost:
            if len(self._lost_entries) < 100:  # bounded for a driver that never takes them
                self._lost_entries.append((msg.src, pr.match, msg.hint_index - 1))
            pr.match = msg.hint_index - 1
        next_index = msg.hint_index or msg.index
        if msg.hint_term:
            last_of_term = self.log.last_index_of_term(msg.hint_term)
            if last_of_term is not None:
                next_index = last_of_term + 1
        pr.become_probe()
        pr.next = max(pr.match + 1, min(next_index, msg.index))
        self._send_append(msg.src)

    # -- leader machinery ------------------------------------------------------------------------

    def take_lost_entries(self) -> list[tuple[str, int, int]]:
        """Followers found to have lost acknowledged entries since the last call: (follower,
        the index it had acknowledged, where its log ends now)."""
        lost, self._lost_entries = self._lost_entries, []
        return lost

    def _send(self, to: str, message: object) -> None:
        self._msgs.append(Envelope(to, message))

    def _send_timeout_now(self, to: str) -> None:
        self._timeout_now_sent = True
        self._send(to, TimeoutNow(self.term, self.id))

    def _on_snapshot_progress(self, peer: str, pr: Progress,
                              msg: InstallSnapshotResponse) -> None:
        snap = pr.snapshot
        if (pr.state is not ProgressState.SNAPSHOT or snap is None
                or (msg.index, msg.snap_term) != (snap.index, snap.term)):
            return  # about a transfer that is over
        if msg.offset == pr.snapshot_offset and msg.offset != 0:
            return  # a duplicate answer; a lost chunk is resent at the next heartbeat
        pr.snapshot_offset = min(msg.offset, pr.snapshot_size)
        if pr.snapshot_offset < pr.snapshot_size:
            self._send_snapshot_chunk(peer, pr)
        # else: the follower has it all and is loading it; its AppendResponse ends the state.

    def _send_snapshot_chunk(self, peer: str, pr: Progress) -> None:
        snap = pr.sending_snapshot()
        offset = pr.snapshot_offset
        length = min(self.config.snapshot_chunk_bytes, pr.snapshot_size - offset)
        pr.snapshot_sent_tick = self.tick_count
        self._send(peer, InstallSnapshot(self.term, self.id, snap.index, snap.term,
                                         pr.snapshot_size, offset, length))

    def _send_append(self, peer: str, *, force: bool = False) -> bool:
        """Send what `peer` is missing, within flow control. Returns whether anything was sent.

        `force` sends even when flow control says wait (an empty AppendRequest if need be): it
        carries a heartbeat, a commit index or a ReadIndex round.
        """
        pr = self.progress[peer]
        log = self.log
        if pr.state is ProgressState.SNAPSHOT:
            if (pr.snapshot_offset == 0 and self.snapshot is not None
                    and self.snapshot.index > pr.sending_snapshot().index):
                # Nothing of the old one arrived yet and a newer snapshot exists: send that.
                pr.become_snapshot(self.snapshot, self.snapshot_size)
                self._send_snapshot_chunk(peer, pr)
                return True
            if not force:
                return False
            # A heartbeat: an empty AppendRequest at the log's start (it keeps the follower's
            # election timer quiet and renews leases; its rejection is ignored), and the chunk
            # again if its answer is overdue (lost).
            self._send_append_request(peer, log.offset, [])
            if self.tick_count - pr.snapshot_sent_tick >= 2 * self.config.heartbeat_ticks:
                self._send_snapshot_chunk(peer, pr)
            return True
        if pr.next - 1 < log.offset:
            # The follower needs entries compacted away: send it the snapshot instead.
            if self.snapshot is None or self.snapshot.index < log.offset:
                return False  # nothing to send it (cannot happen once compaction is in use)
            pr.become_snapshot(self.snapshot, self.snapshot_size)
            self._send_snapshot_chunk(peer, pr)
            return True
        if pr.state is ProgressState.PROBE:
            if pr.probe_sent:
                if not force:
                    return False
                # A heartbeat to a probing follower is an empty probe: cheap, and its answer
                # (match or a hint) moves the probe on even if the last one was lost.
                self._send_append_request(peer, pr.next - 1, [])
                return True
            entries = log.slice(pr.next, log.last_index + 1,
                                max_bytes=self.config.max_append_entries_bytes,
                                max_count=self.config.max_append_entries_count)
            self._send_append_request(peer, pr.next - 1, entries)
            pr.probe_sent = True
            return True
        sent = False
        while len(pr.inflight) < self.config.max_inflight_appends and pr.next <= log.last_index:
            entries = log.slice(pr.next, log.last_index + 1,
                                max_bytes=self.config.max_append_entries_bytes,
                                max_count=self.config.max_append_entries_count)
            self._send_append_request(peer, pr.next - 1, entries)
            pr.next = entries[-1].index + 1
            pr.inflight.append(entries[-1].index)
            sent = True
        if not sent and force:
            self._send_append_request(peer, pr.next - 1, [])
            sent = True
        return sent

    def _send_append_request(self, peer: str, prev_index: int, entries: list[Entry]) -> None:
        prev_term = self.log.term_at(prev_index)
        if prev_term is None:
            raise InvariantViolation(f"leader lacks entry {prev_index} for {peer}")
        self.progress[peer].commit_sent = self.commit_index
        self._send(peer, AppendRequest(self.term, self.id, prev_index, prev_term,
                                       tuple(entries), self.commit_index, self._read_seq,
                                       self.lease_remaining_ticks() > 0))

    def _flush_appends(self) -> None:
        """Once per Ready: one AppendRequest (or window of them) per follower for this batch."""
        force = self._heartbeat_needed
        for peer, pr in self.progress.items():
            sent = self._send_append(peer, force=force) if (
                self._append_pending or force) else False
            if (not sent and self._commit_broadcast and pr.state is ProgressState.REPLICATE
                    and pr.commit_sent < self.commit_index):
                self._send_append(peer, force=True)
        self._append_pending = self._heartbeat_needed = self._commit_broadcast = False
        self._read_round_open = False

    def _maybe_commit(self) -> None:
        if not self.voters:
            return
        matches = sorted((self.log.persisted_index if v == self.id else self.progress[v].match
                          for v in self.voters), reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            # Followers learn it from the next AppendRequest; if none follows soon, from
            # broadcast_commit() or the next tick (see commit_unsent).
            self.commit_index = candidate
            if self._reads_awaiting_commit:
                waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
                for ctx in waiting:
                    self._start_read(ctx)
            self._maybe_step_down_removed()

    def _quorum_recently_active(self) -> bool:
        active = (self.id in self.voters) + sum(
            1 for p, pr in self.progress.items() if pr.recent_active and p in self.voters)
        for pr in self.progress.values():
            pr.recent_active = False
        return active >= self.quorum

    def _start_read(self, context: object) -> None:
        if self.voters == (self.id,):
            self._read_states.append(ReadState(context, self.commit_index))
            return
        if not self._read_round_open:
            self._start_confirmation_round()
        self._pending_reads.append((context, self.commit_index, self._read_seq))

    def _start_confirmation_round(self) -> None:
        """A new seq, sent to every follower with the next Ready; reads until then join it."""
        self._read_seq += 1
        self._read_round_open = True
        self._heartbeat_needed = True
        self._note_seq_sent()

    def _note_seq_sent(self) -> None:
        lease_ticks = self.config.lease_ticks
        if not lease_ticks:
            return
        # Requests with this seq leave at this tick or later; counting from now is safe.
        if not self._seq_sent_ticks or self._seq_sent_ticks[-1][1] != self.tick_count:
            self._seq_sent_ticks.append((self._read_seq, self.tick_count))
        while self.tick_count - self._seq_sent_ticks[0][1] >= lease_ticks:
            self._seq_sent_ticks.popleft()  # too old to support a lease
        invariant(len(self._seq_sent_ticks) <= lease_ticks, "seq tick record beyond its bound")

    def _seq_sent_tick(self, seq: int) -> int | None:
        """The tick at which requests carrying `seq` were first sent, if recent enough to count
        (None: before the oldest record, or never sent in this term)."""
        for first_seq, tick in reversed(self._seq_sent_ticks):
            if first_seq <= seq:
                return tick
        return None

    def _confirm_reads(self) -> None:
        while self._pending_reads:
            ctx, index, seq = self._pending_reads[0]
            acks = (self.id in self.voters) + sum(
                1 for p, pr in self.progress.items() if pr.acked_seq >= seq and p in self.voters)
            if acks < self.quorum:
                return
            self._pending_reads.pop(0)
            self._read_states.append(ReadState(ctx, index))

    def _fail_pending_reads(self) -> None:
        for ctx, _index, _seq in self._pending_reads:
            self._read_states.append(ReadState(ctx, None))
        for ctx in self._reads_awaiting_commit:
            self._read_states.append(ReadState(ctx, None))
        self._pending_reads = []
        self._reads_awaiting_commit = []
        self._read_round_open = False
