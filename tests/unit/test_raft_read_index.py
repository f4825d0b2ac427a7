"""ReadIndex (Ongaro's thesis §6.4), one rule per test: a linearizable read gets the commit index
at the time it was asked, once a quorum has answered a heartbeat round sent after the request.
"""

from __future__ import annotations

from replikv.raft.core import RaftCore, ReadState, Role
from replikv.raft.messages import AppendRequest, AppendResponse

from .raft_harness import Cluster, make_core, make_leader, persist, sent, settle


def ack(leader: RaftCore, peer: str, index: int, seq: int = 0) -> None:
    leader.step(AppendResponse(leader.term, peer, True, index, seq=seq))


def committed_leader() -> RaftCore:
    """A three-node leader at term 1 whose no-op (index 1) is committed, followers caught up."""
    leader = make_leader("n1")
    ack(leader, "n2", 1)
    ack(leader, "n3", 1)
    settle(leader)
    assert leader.committed_in_current_term()
    return leader


def test_a_read_on_a_leader_that_has_not_committed_in_its_term_waits_for_its_no_op() -> None:
    leader = make_leader("n1", term=1, log=[1, 1])  # no-op at 3, term 2, not yet committed
    leader.request_read("r")
    rd = persist(leader)
    assert rd.read_states == []
    assert all(m.seq == 0 for m in sent(rd, AppendRequest)), "no confirmation round yet"
    ack(leader, "n2", 3)  # the no-op commits: now the leader knows its commit index
    rd = persist(leader)
    (hb,) = [m for m in sent(rd, AppendRequest, to="n3") if m.seq > 0]
    assert rd.read_states == []
    ack(leader, "n3", 3, seq=hb.seq)
    assert persist(leader).read_states == [ReadState("r", 3)]


def test_a_read_gets_the_commit_index_at_request_time_once_a_quorum_answers_a_later_round(
) -> None:
    leader = committed_leader()
    leader.request_read("r")
    rd = persist(leader)
    (hb2,) = sent(rd, AppendRequest, to="n2")
    (hb3,) = sent(rd, AppendRequest, to="n3")
    assert hb2.seq == hb3.seq > 0 and rd.read_states == []

    leader.propose([b"x"])  # the commit index moves on before the round completes
    persist(leader)
    ack(leader, "n2", 2)
    assert leader.commit_index == 2
    assert persist(leader).read_states == [], "n2 answered, but not to the round's heartbeat"

    ack(leader, "n2", 2, seq=hb2.seq)
    assert persist(leader).read_states == [ReadState("r", 1)]


def test_answers_to_rounds_sent_before_the_read_do_not_confirm_it() -> None:
    leader = committed_leader()
    leader.request_read("first")
    (hb,) = sent(persist(leader), AppendRequest, to="n2")
    leader.request_read("second")
    persist(leader)
    ack(leader, "n2", 1, seq=hb.seq)
    assert persist(leader).read_states == [ReadState("first", 1)]


def test_reads_before_one_ready_share_one_heartbeat_round() -> None:
    leader = committed_leader()
    for ctx in ("a", "b", "c"):
        leader.request_read(ctx)
    rd = persist(leader)
    assert sorted(env.to for env in rd.early_messages) == ["n2", "n3"], "one round, not three"
    seq = sent(rd, AppendRequest, to="n3")[0].seq
    ack(leader, "n3", 1, seq=seq)
    assert persist(leader).read_states == [ReadState("a", 1), ReadState("b", 1),
                                           ReadState("c", 1)]


def test_a_quorum_of_three_needs_one_follower_of_five_is_not_enough() -> None:
    leader = make_leader("n1", voters=("n1", "n2", "n3", "n4", "n5"))
    for p in ("n2", "n3"):
        ack(leader, p, 1)
    settle(leader)
    leader.request_read("r")
    seq = sent(persist(leader), AppendRequest, to="n2")[0].seq
    ack(leader, "n2", 1, seq=seq)
    assert persist(leader).read_states == []
    leader.step(AppendResponse(1, "n4", False, 1, hint_index=1, seq=seq))  # a rejection counts:
    assert persist(leader).read_states == [ReadState("r", 1)]  # n4 still follows this leader


def test_a_leader_that_steps_down_fails_its_pending_reads() -> None:
    leader = make_leader("n1", term=1, log=[1])
    leader.request_read("awaiting-commit")
    persist(leader)
    ack(leader, "n2", 2)
    leader.request_read("awaiting-round")
    leader.request_read("waits-for-commit-no-more")
    persist(leader)
    leader.step(AppendResponse(5, "n3", False, 0))
    assert leader.role is Role.FOLLOWER
    states = persist(leader).read_states
    assert sorted(states, key=lambda s: s.context) == [
        ReadState("awaiting-commit", None), ReadState("awaiting-round", None),
        ReadState("waits-for-commit-no-more", None)]


def test_a_read_on_a_follower_is_refused_at_once() -> None:
    node = make_core("n2", term=1)
    node.request_read("r")
    assert persist(node).read_states == [ReadState("r", None)]


def test_a_single_voter_confirms_a_read_without_a_round() -> None:
    node = make_core("n1", voters=("n1",))
    for _ in range(20):
        node.tick()
    settle(node)
    node.request_read("r")
    assert persist(node).read_states == [ReadState("r", 1)]


def test_a_deposed_leader_cannot_confirm_a_read() -> None:
    c = Cluster(check_quorum=False)  # so n1 keeps believing it leads
    c.elect("n1")
    c.isolate("n1")
    new = c.run_until_leader(among={"n2", "n3"})
    new.propose([b"newer"])
    c.flush(new.id)
    c.deliver()
    assert new.commit_index == 3 and c["n1"].is_leader
    c["n1"].request_read("stale?")
    c.tick("n1", times=4)
    assert c.read_states["n1"] == []
    c.heal()
    c.tick("n1")
    c.deliver()
    assert c.read_states["n1"] == [ReadState("stale?", None)]
