"""Raft safety under random schedules, then liveness once the faults stop.

Each seed drives a cluster of 3, 4 or 5 cores through 2000 random steps — deliveries in any
order, duplicates (also of long-stale messages), drops, ticks, messages stepped while a write is
in flight, proposals, reads, partitions, leadership transfers, membership changes (nodes become
learners, voters, or leave, and come back), crashes (some of them between a leader's early
messages and its fsync) and restarts from the persisted hard state and entries —
and `SafetyMonitor` checks after every step: one leader per term, one vote
per term, log matching, leader completeness, committed entries never changing, applied
sequences agreeing, confirmed reads never older than what was committed when they were asked.
Then the network heals, every node restarts, and a leader must emerge and commit a new entry
on every member. Every failure names its seed and step; rerun one with `run_schedule(seed)`.

These schedules found two bugs in the core (see test_raft_replication.py: a rejection of a
request from the leader's earlier term, and an ack for entries replaced before they were
persisted); a few thousand more seeds are worth running after any change to the core:
    python -c "from tests.unit.test_raft_random_schedules import *; \
               [run_schedule(s) for s in range(10_000)]"
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.raft.core import Role
from replikv.raft.membership import ADD_LEARNER, DEMOTE, PROMOTE, REMOVE, MembershipError
from replikv.raft.messages import AppendResponse, Entry

from .raft_harness import (
    IDS3,
    IDS5,
    Cluster,
    SafetyMonitor,
    append_request,
    entry,
    log_entries,
    make_core,
    persist,
    random_fault,
    sent,
)

SEEDS = range(200)
STEPS = 2000
# deliver, drop, replay, tick, flush, propose, read, crash, restart, partition, transfer,
# begin (a Ready's write starts), finish (it completes), member (a membership change)
WEIGHTS = [40, 3, 2, 40, 12, 15, 10, 2, 4, 4, 1, 5, 5, 2]


def run_schedule(seed: int, steps: int = STEPS) -> None:
    """One seeded run: a safety phase with faults, then a liveness phase without. Any failure,
    an invariant violation inside the core included, is reported with its seed and step."""
    rng = random.Random(seed)
    ids = rng.choices([IDS3, IDS5, IDS5[:4]], [5, 4, 1])[0]
    election_ticks = rng.choice([3, 4, 6])
    c = Cluster(ids, seed=seed, election_ticks=election_ticks,
                heartbeat_ticks=rng.randrange(1, election_ticks),
                max_inflight_appends=rng.choice([1, 2, 64]),
                max_append_entries_count=rng.choice([1, 3, 4096]),
                max_append_entries_bytes=rng.choice([1, 8, 4 * 1024 * 1024]),
                pre_vote=rng.random() < 0.8, check_quorum=rng.random() < 0.8)
    mon = SafetyMonitor(c)
    schedule = Schedule(rng, c, mon)
    for step in range(steps):
        action = rng.choices(ACTIONS, WEIGHTS)[0]
        try:
            schedule.do(action)
            mon.check()
        except Exception as exc:
            raise AssertionError(f"seed {seed}, step {step} ({action}): {exc!r}") from exc
    try:
        check_liveness_after_healing(c, mon)
    except Exception as exc:
        raise AssertionError(f"seed {seed}, after healing: {exc!r}") from exc


ACTIONS = ["deliver", "drop", "replay", "tick", "flush", "propose", "read", "crash", "restart",
           "partition", "transfer", "begin", "finish", "member"]


class Schedule:
    """The random actions of the safety phase."""

    def __init__(self, rng: random.Random, c: Cluster, mon: SafetyMonitor) -> None:
        self.rng, self.c, self.mon = rng, c, mon
        self.proposals = self.reads = 0

    def do(self, action: str) -> None:
        rng, c = self.rng, self.c
        live = c.live
        if action == "deliver" and c.network:
            c.deliver_at(rng.randrange(len(c.network)), keep=rng.random() < 0.1,
                         flush=rng.random() < 0.8)
        elif action == "tick" and live:
            node = rng.choice(live)
            c[node].tick()
            if rng.random() < 0.8:
                c.flush(node)
        elif action == "flush" and live:
            c.flush(rng.choice(live), crash_before_persist=rng.random() < 0.05)
        elif action == "propose" and live:
            self.proposals += 1
            c[rng.choice(live)].propose([f"p{self.proposals}".encode()])
        elif action == "read" and live:
            self.reads += 1
            self.mon.request_read(rng.choice(live), f"r{self.reads}")
        elif random_fault(c, rng, action):
            pass
        elif action == "begin" and live:
            c.begin_ready(rng.choice(live))
        elif action == "finish" and c.in_flight:
            c.finish_ready(rng.choice(sorted(c.in_flight)))
        elif action == "member":
            leaders = [i for i in live if c[i].role is Role.LEADER]
            if leaders:
                self.change_membership(c[rng.choice(leaders)])

    def change_membership(self, leader) -> None:
        """One random single-server change, as the leader judges it (refusals are fine)."""
        m = leader.membership
        options = [(ADD_LEARNER, i) for i in self.c.ids if i not in m.members]
        options += [(PROMOTE, i) for i in m.learners]
        options += [(op, i) for i in m.voters if len(m.voters) > 1 for op in (DEMOTE, REMOVE)]
        options += [(REMOVE, i) for i in m.learners]
        op, node = self.rng.choice(options)
        try:
            leader.propose_membership(m.changed(op, node))
        except MembershipError:
            pass


def check_liveness_after_healing(c: Cluster, mon: SafetyMonitor) -> None:
    """Heal everything; a leader must emerge and commit a new entry on every member."""
    ids = c.ids
    election_ticks = c[ids[0]].config.election_ticks
    c.heal()
    for node in sorted(c.down):
        c.restart(node)
    proposed_in: set[int] = set()  # terms whose leader was handed the final entry
    for _ in range(60 * election_ticks):
        c.tick()
        c.deliver()
        mon.check()
        leaders = [c[i] for i in c.leaders()]
        if (len(leaders) == 1 and leaders[0].term not in proposed_in
                and leaders[0].propose([b"final"]) is not None):
            proposed_in.add(leaders[0].term)
        if len(leaders) == 1 and all(any(e.data == b"final" for e in c.applied[i])
                                     for i in leaders[0].membership.members):
            return
    raise AssertionError(
        f"no progress after healing: (role, term, commit, voters) "
        f"{ {i: (c[i].role.value, c[i].term, c[i].commit_index, c[i].voters) for i in ids} }")


@pytest.mark.parametrize("seed", SEEDS)
def test_random_schedules_keep_raft_safe_and_recover_once_healed(seed: int) -> None:
    run_schedule(seed)


# -- a follower's log under any order of one leader's AppendRequests ------------------------------


@st.composite
def leader_and_follower_logs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Two logs obeying log matching: a shared prefix, then suffixes whose terms differ at every
    index (the leader's terms are odd, the follower's divergent ones even)."""
    shared = sorted(draw(st.lists(st.sampled_from([1, 3]), max_size=6)))
    top = shared[-1] if shared else 1
    leader = shared + sorted(draw(st.lists(st.sampled_from([t for t in (1, 3, 5) if t >= top]),
                                           max_size=6)))
    follower = shared + sorted(draw(st.lists(st.sampled_from([t for t in (2, 4) if t >= top]),
                                             max_size=6)))
    return leader, follower


@settings(max_examples=300, deadline=None)
@given(
    logs=leader_and_follower_logs(),
    requests=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12)),
                      max_size=25),
)
def test_a_follower_fed_one_leaders_requests_in_any_order_never_loses_what_it_acknowledged(
        logs: tuple[list[int], list[int]], requests: list[tuple[int, int, int]]) -> None:
    """Property of the AppendEntries receiver: whatever slices of the leader's log arrive, in any
    order and repeated, (1) every success acknowledges a prefix the follower really shares with
    the leader, (2) an acknowledged prefix is never lost afterwards, (3) the commit index never
    exceeds a verified prefix and never moves back."""
    leader_terms, follower_terms = logs
    term = 6  # the leader's term, above every entry's
    leader_log = [entry(i + 1, t) for i, t in enumerate(leader_terms)]
    follower = make_core("n2", term=term, log=follower_terms)
    acked = 0
    last_commit = 0
    for prev, count, commit in requests:
        prev = min(prev, len(leader_log))
        entries = leader_log[prev:prev + count]
        prev_term = leader_log[prev - 1].term if prev else 0
        commit = min(commit, len(leader_log))
        follower.step(append_request(term, "n1", prev, prev_term, entries, commit))
        rd = persist(follower)
        (resp,) = sent(rd, AppendResponse)
        log = log_entries(follower)
        if resp.success:
            assert log[:resp.index] == leader_log[:resp.index]
            acked = max(acked, resp.index)
        assert log[:acked] == leader_log[:acked], "an acknowledged entry was lost"
        assert follower.commit_index >= last_commit
        assert log[:follower.commit_index] == leader_log[:follower.commit_index]
        last_commit = follower.commit_index


def test_entry_equality_is_by_index_term_and_data() -> None:
    # The safety checks above compare Entry tuples; make sure data takes part in that.
    assert entry(1, 1) != Entry(1, 1, b"other")
