"""Lease reads (Ongaro's thesis §6.4.1), one rule per test, then scenarios that drive whole
clusters one tick and one message at a time.

A leader that a quorum (itself included) answered recently may serve `request_read(ctx,
lease=True)` at once, with no heartbeat round: `lease_ticks` ticks counted from when the answered
AppendRequest was sent. It holds no lease before its no-op commits, during a leadership transfer,
after it has sent TimeoutNow in its term, without CheckQuorum, or with lease_ticks=0; the read
then falls back to a ReadIndex round. The lease is safe because voters refuse votes for
election_ticks ticks after hearing from a leader, and after a restart: the scenarios check that
no new leader is elected while an old one still holds a lease, given clocks that tick together.
"""

from __future__ import annotations

import random

import pytest

from replikv.invariants import InvariantViolation
from replikv.raft.core import RaftConfig, RaftCore, ReadState, Role
from replikv.raft.messages import (
    AppendRequest,
    AppendResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

from .raft_harness import (
    IDS3,
    IDS5,
    Cluster,
    SafetyMonitor,
    append_request,
    make_core,
    make_leader,
    persist,
    random_fault,
    sent,
    settle,
    wait_out_start_up_window,
)
from .test_raft_random_schedules import check_liveness_after_healing


def ack(leader: RaftCore, peer: str, index: int, seq: int) -> None:
    leader.step(AppendResponse(leader.term, peer, True, index, seq=seq))


def heartbeat_seq(leader: RaftCore) -> int:
    """Tick the leader until it sends a heartbeat; the seq those requests carry."""
    for _ in range(leader.config.heartbeat_ticks):
        leader.tick()
    return sent(persist(leader), AppendRequest, to="n2")[0].seq


def leased_leader(**config: object) -> RaftCore:
    """A three-node leader of term 1 whose no-op n2 acknowledged at once: a fresh lease."""
    leader = make_leader("n1", **config)
    ack(leader, "n2", 1, seq=0)  # the no-op's requests carry seq 0
    settle(leader)
    assert leader.committed_in_current_term()
    return leader


# -- configuration ------------------------------------------------------------------------------


def test_lease_ticks_defaults_to_two_below_election_ticks() -> None:
    assert RaftConfig("n1", IDS3).lease_ticks == 8
    assert RaftConfig("n1", IDS3, election_ticks=4, heartbeat_ticks=1).lease_ticks == 2
    assert RaftConfig("n1", IDS3, lease_ticks=0).lease_ticks == 0


@pytest.mark.parametrize("lease_ticks", [-1, 10, 11])
def test_lease_ticks_must_be_below_election_ticks(lease_ticks: int) -> None:
    with pytest.raises(InvariantViolation):
        RaftConfig("n1", IDS3, election_ticks=10, lease_ticks=lease_ticks)


# -- serving and refusing -----------------------------------------------------------------------


def test_a_leader_with_a_fresh_quorum_answer_serves_a_lease_read_at_once_without_a_message(
) -> None:
    leader = leased_leader()
    assert leader.lease_remaining_ticks() == 8
    leader.request_read("r", lease=True)
    rd = persist(leader)
    assert rd.read_states == [ReadState("r", 1)]
    assert sent(rd) == [] and not leader.has_ready()


def test_the_lease_is_counted_from_when_the_answered_request_was_sent() -> None:
    leader = leased_leader()  # tick t: n2 answered the no-op's requests, sent at t
    seq = heartbeat_seq(leader)  # t + 2
    for _ in range(5):
        leader.tick()
        settle(leader)  # t + 7, and nobody answers
    assert leader.lease_remaining_ticks() == 1, "n2's answer holds it until t + 8"
    ack(leader, "n3", 1, seq=seq)  # an answer five ticks late, to the request sent at t + 2
    assert leader.lease_remaining_ticks() == 3, "from t + 2, when that request left, not now"


def test_the_lease_runs_out_lease_ticks_after_the_last_answered_request_was_sent() -> None:
    leader = leased_leader()  # answered request sent at this tick
    for remaining in range(7, -1, -1):
        leader.tick()
        settle(leader)  # heartbeats go out; no answer comes back
        assert leader.lease_remaining_ticks() == remaining
    assert leader.is_leader
    leader.request_read("r", lease=True)
    rd = persist(leader)
    assert rd.read_states == [], "no lease: the read waits for a ReadIndex round"
    (hb,) = sent(rd, AppendRequest, to="n3")
    ack(leader, "n3", 1, seq=hb.seq)
    assert persist(leader).read_states == [ReadState("r", 1)]
    assert leader.lease_remaining_ticks() == 8, "the round's answer renewed the lease"


def test_answers_to_heartbeats_renew_the_lease_without_any_read() -> None:
    c = Cluster(election_ticks=10, heartbeat_ticks=2)
    leader = c.elect("n1")
    for _ in range(100):
        c.run(1)  # every node ticks, every message is delivered at once
        assert leader.lease_remaining_ticks() >= 8 - 1
    seqs = {env.message.seq for env in c.sent if isinstance(env.message, AppendRequest)}
    assert len(seqs) > 50, "every heartbeat starts a new confirmation number"


def test_a_leader_holds_no_lease_before_its_no_op_commits() -> None:
    leader = make_leader("n1", term=1, log=[1, 1])  # no-op at 3, term 2
    ack(leader, "n2", 2, seq=0)  # a quorum answered, but the no-op is not on it yet
    assert leader.lease_remaining_ticks() == 0
    leader.request_read("r", lease=True)
    assert persist(leader).read_states == [], "it waits for the no-op, as ReadIndex does"
    ack(leader, "n2", 3, seq=0)
    assert leader.lease_remaining_ticks() > 0
    rd = persist(leader)
    assert rd.read_states == [], "the waiting read takes a ReadIndex round"
    ack(leader, "n3", 3, seq=sent(rd, AppendRequest, to="n3")[-1].seq)
    assert persist(leader).read_states == [ReadState("r", 3)]


def test_a_leader_holds_no_lease_while_it_transfers_leadership() -> None:
    leader = leased_leader()
    leader.propose([b"x"])
    persist(leader)
    assert leader.transfer_leadership("n3")  # n3 lags: no TimeoutNow yet
    assert leader.lease_remaining_ticks() == 0
    leader.request_read("r", lease=True)
    rd = persist(leader)
    assert rd.read_states == [] and sent(rd, TimeoutNow) == []
    assert any(m.seq > 0 for m in sent(rd, AppendRequest, to="n2")), "a ReadIndex round"


def test_a_leader_that_sent_timeout_now_holds_no_lease_for_the_rest_of_its_term() -> None:
    """A TimeoutNow delayed in the network starts an election whenever it arrives, and voters
    grant such votes even while they hear from the leader: no lease can guard against it."""
    leader = leased_leader()
    ack(leader, "n3", 1, seq=0)
    assert leader.transfer_leadership("n3")
    assert sent(persist(leader), TimeoutNow) == [TimeoutNow(1, "n1")]  # and it is lost
    for _ in range(10):
        leader.tick()  # the transfer is abandoned after an election timeout
        for hb in sent(persist(leader), AppendRequest, to="n2"):
            ack(leader, "n2", 1, seq=hb.seq)
    assert leader.is_leader and leader.transfer_target is None
    assert leader.propose([b"x"]) is not None, "the transfer is over"
    assert leader.lease_remaining_ticks() == 0


@pytest.mark.parametrize("config", [{"lease_ticks": 0}, {"check_quorum": False}],
                         ids=["lease_ticks=0", "no-check-quorum"])
def test_lease_reads_fall_back_to_read_index_when_leases_are_off(config: dict) -> None:
    leader = leased_leader(**config)
    assert leader.lease_remaining_ticks() == 0
    leader.request_read("r", lease=True)
    rd = persist(leader)
    assert rd.read_states == []
    (hb,) = sent(rd, AppendRequest, to="n2")
    ack(leader, "n2", 1, seq=hb.seq)
    assert persist(leader).read_states == [ReadState("r", 1)]


def test_a_follower_refuses_a_lease_read_as_it_refuses_any_read() -> None:
    node = make_core("n2", term=1)
    node.request_read("r", lease=True)
    assert node.lease_remaining_ticks() == 0
    assert persist(node).read_states == [ReadState("r", None)]


def test_a_single_voter_holds_a_lease_on_its_own() -> None:
    node = make_core("n1", voters=("n1",))
    for _ in range(20):
        node.tick()
    settle(node)
    node.request_read("r", lease=True)
    assert persist(node).read_states == [ReadState("r", 1)]


def test_in_a_cluster_of_five_the_lease_rests_on_the_second_freshest_follower_answer() -> None:
    leader = make_leader("n1", voters=IDS5)
    ack(leader, "n2", 1, seq=0)
    ack(leader, "n3", 1, seq=0)  # answers to requests sent at tick t; the no-op commits
    settle(leader)
    seq = heartbeat_seq(leader)  # tick t + 2
    ack(leader, "n4", 1, seq=seq)
    assert leader.lease_remaining_ticks() == 6, "n1, n4 and one of n2, n3: from tick t"
    for _ in range(6):
        leader.tick()
        settle(leader)
    assert leader.lease_remaining_ticks() == 0, "n1 and n4 are two of five"
    ack(leader, "n5", 1, seq=seq)
    assert leader.lease_remaining_ticks() == 2, "n1, n4 and n5: from tick t + 2"


# -- scenarios: clocks that tick together, one tick and one message at a time --------------------


def step_by_step(c: Cluster, check: object, ticks: int) -> None:
    """Tick every live node in turn, then deliver queued messages one by one in order, calling
    `check()` after every single step."""
    for _ in range(ticks):
        for node in c.live:
            c.tick(node)
            check()  # type: ignore[operator]
        while c.network:
            c.deliver_at(0)
            check()  # type: ignore[operator]


class LeaseWatch:
    """Records, step by step, the old leader's lease and when a newer leader appears."""

    def __init__(self, c: Cluster, old: str) -> None:
        self.c, self.old, self.term = c, old, c[old].term
        self.new_leader_at_step: int | None = None
        self.lease_ended_at_step: int | None = None
        self.led_when_lease_ended = False
        self.steps = 0

    def __call__(self) -> None:
        self.steps += 1
        old = self.c[self.old]
        remaining = old.lease_remaining_ticks() if self.old in self.c.live else 0
        if remaining == 0 and self.lease_ended_at_step is None:
            self.lease_ended_at_step = self.steps
            self.led_when_lease_ended = old.is_leader and old.term == self.term
        newer = [i for i in self.c.leaders() if self.c[i].term > self.term]
        if newer and self.new_leader_at_step is None:
            self.new_leader_at_step = self.steps
        if newer:
            assert remaining == 0, (
                f"{newer} leads a later term while {self.old} holds its lease {remaining} more "
                f"ticks")


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre-vote", "vote"])
def test_a_partitioned_leaders_lease_ends_before_the_others_can_elect_a_new_leader(
        seed: int, pre_vote: bool) -> None:
    c = Cluster(seed=seed, election_ticks=10, heartbeat_ticks=2, pre_vote=pre_vote)
    c.elect("n1")
    c.run(ticks=5 + seed)  # a steady state, at a different phase of the heartbeats per seed
    assert c["n1"].lease_remaining_ticks() > 0
    c.isolate("n1")
    watch = LeaseWatch(c, "n1")
    step_by_step(c, watch, ticks=40)
    assert watch.new_leader_at_step is not None, "the majority elected a new leader"
    assert watch.lease_ended_at_step < watch.new_leader_at_step
    assert watch.led_when_lease_ended, "the lease ran out by its clock, not by stepping down"


def test_a_restarted_follower_does_not_help_elect_a_leader_while_its_answers_hold_a_lease(
) -> None:
    """n3 has been cut off and keeps timing out; n1 leads with n2's answers alone. Then n1 is
    cut off too, and n2 crashes and restarts at once, forgetting that it heard from n1. n2 must
    still refuse n3's (pre-)votes until n1's lease, which counts on n2, has run out."""
    c = Cluster(election_ticks=10, heartbeat_ticks=2)
    c.elect("n1")
    c.partition({"n1", "n2"}, {"n3"})
    c.run(ticks=35)  # n3 has timed out at least once; n2, in n1's lease, refused it
    assert c.leaders() == ["n1"] and c["n1"].lease_remaining_ticks() > 0
    c.partition({"n1"}, {"n2", "n3"})
    c.crash("n2")
    c.restart("n2")
    watch = LeaseWatch(c, "n1")
    step_by_step(c, watch, ticks=40)
    assert watch.new_leader_at_step is not None
    assert watch.lease_ended_at_step < watch.new_leader_at_step


def test_a_follower_pushed_to_a_later_term_by_a_stale_reply_still_honours_the_lease() -> None:
    """A reply from an old election can carry a newer term and move a follower past its
    leader's term without a leader of that term. It must not then vote at once: its leader
    may still hold a lease counting on its last answer."""
    node = wait_out_start_up_window(make_core("n2", term=2, log=[1, 2], election_ticks=10))
    node.step(append_request(2, "n1", 2, 2))  # hears from its leader
    node.step(VoteResponse(5, "n3", False))  # a late refusal from a term-5 voter
    assert (node.term, node.leader_id) == (5, None)
    node.step(VoteRequest(5, "n3", 2, 2))
    assert sent(persist(node), VoteResponse) == [VoteResponse(5, "n2", False)]
    for _ in range(10):
        node.tick()
    assert node.role is Role.FOLLOWER
    node.step(VoteRequest(5, "n3", 2, 2))
    assert sent(persist(node), VoteResponse) == [VoteResponse(5, "n2", True)]


# -- random schedules with clocks that tick together ---------------------------------------------

LEASE_SEEDS = range(100)
LEASE_STEPS = 1500
# deliver, drop, replay, tick (every node), propose, read, lease read, crash, restart,
# partition, transfer
LEASE_WEIGHTS = [70, 2, 2, 8, 6, 3, 10, 1, 3, 2, 1]
LEASE_ACTIONS = ["deliver", "drop", "replay", "tick", "propose", "read", "lease-read", "crash",
                 "restart", "partition", "transfer"]


def run_lease_schedule(seed: int, steps: int = LEASE_STEPS) -> int:
    """Random deliveries, drops, stale replays, crashes, restarts, partitions and transfers,
    but every live clock ticks together. After every step: Raft's safety properties, reads
    never stale, and no leader elected while an older one holds a lease. Returns how many lease
    reads were served without a round."""
    rng = random.Random(seed)
    ids = rng.choice([IDS3, IDS5])
    election_ticks = rng.choice([3, 4, 6, 10])
    c = Cluster(ids, seed=seed, election_ticks=election_ticks,
                heartbeat_ticks=rng.randrange(1, election_ticks),
                lease_ticks=rng.choice([election_ticks - 2, election_ticks - 1, 1]),
                pre_vote=rng.random() < 0.7)
    mon = SafetyMonitor(c)
    served = reads = 0
    for step in range(steps):
        action = rng.choices(LEASE_ACTIONS, LEASE_WEIGHTS)[0]
        live = c.live
        try:
            if action == "deliver" and c.network:
                c.deliver_at(rng.randrange(len(c.network)), keep=rng.random() < 0.1)
            elif action == "tick":
                c.tick()
            elif action == "propose" and live:
                c[rng.choice(live)].propose([f"p{step}".encode()])
                c.flush()
            elif action in ("read", "lease-read") and live:
                reads += 1
                leaders = c.leaders()
                node = rng.choice(leaders if leaders and rng.random() < 0.8 else live)
                lease = action == "lease-read"
                served += lease and c[node].lease_remaining_ticks() > 0
                mon.request_read(node, f"r{reads}", lease=lease)
                c.flush(node)
            elif random_fault(c, rng, action) and action == "transfer":
                c.flush()
            mon.check()
            mon.check_leases()
        except Exception as exc:
            raise AssertionError(f"seed {seed}, step {step} ({action}): {exc!r}") from exc
    try:
        check_liveness_after_healing(c, mon)
    except Exception as exc:
        raise AssertionError(f"seed {seed}, after healing: {exc!r}") from exc
    return served


@pytest.mark.parametrize("seed", LEASE_SEEDS)
def test_random_schedules_never_elect_a_leader_while_an_older_one_holds_a_lease(
        seed: int) -> None:
    run_lease_schedule(seed)


def test_random_schedules_do_serve_lease_reads() -> None:
    """The schedules above are not vacuous: leases are held and lease reads served."""
    assert sum(run_lease_schedule(seed, steps=500) for seed in range(10)) >= 50
