"""Leadership transfer (Ongaro's thesis §3.10), one rule per test: the leader brings the target
up to date, tells it TimeoutNow, and refuses proposals meanwhile; the target campaigns at once,
and voters that still hear from the old leader vote for it anyway (transfer=True).
"""

from __future__ import annotations

from replikv.raft.core import RaftCore, Role
from replikv.raft.messages import AppendRequest, AppendResponse, TimeoutNow, VoteRequest

from .raft_harness import Cluster, make_core, make_leader, persist, sent, settle


def ack(leader: RaftCore, peer: str, index: int) -> None:
    leader.step(AppendResponse(leader.term, peer, True, index))


def test_transfer_to_a_caught_up_follower_sends_timeout_now_at_once() -> None:
    leader = make_leader("n1")
    ack(leader, "n2", 1)
    settle(leader)
    assert leader.transfer_leadership("n2")
    assert sent(persist(leader), TimeoutNow) == [TimeoutNow(1, "n1")]


def test_transfer_to_a_lagging_follower_first_catches_it_up() -> None:
    leader = make_leader("n1", term=1, log=[1, 1])
    assert leader.transfer_leadership("n2")
    rd = persist(leader)
    assert sent(rd, TimeoutNow) == []
    assert [m.prev_index for m in sent(rd, AppendRequest, to="n2")] == [2]
    ack(leader, "n2", 2)
    assert sent(persist(leader), TimeoutNow) == [], "not yet: the no-op is still missing"
    ack(leader, "n2", 3)
    assert sent(persist(leader), TimeoutNow, to="n2") == [TimeoutNow(2, "n1")]


def test_proposals_are_refused_during_a_transfer() -> None:
    leader = make_leader("n1")
    leader.transfer_leadership("n2")
    assert leader.propose([b"x"]) is None
    assert leader.log.last_index == 1


def test_a_transfer_that_does_not_finish_within_an_election_timeout_is_abandoned() -> None:
    leader = make_leader("n1", election_ticks=10, check_quorum=False)
    leader.transfer_leadership("n2")
    for _ in range(10):
        leader.tick()
    assert leader.is_leader and leader.propose([b"x"]) == (2, 1)


def test_transfer_to_itself_or_a_stranger_is_refused() -> None:
    leader = make_leader("n1")
    assert not leader.transfer_leadership("n1")
    assert not leader.transfer_leadership("n9")
    assert leader.propose([b"x"]) is not None


def test_a_follower_cannot_start_a_transfer() -> None:
    assert not make_core("n2").transfer_leadership("n3")


def test_timeout_now_makes_the_target_campaign_at_once_without_pre_vote() -> None:
    node = make_core("n2", term=1, log=[1])
    node.step(AppendRequest(1, "n1", 1, 1, (), 1))
    persist(node)
    node.step(TimeoutNow(1, "n1"))
    rd = persist(node)
    assert (node.role, node.term, node.voted_for) == (Role.CANDIDATE, 2, "n2")
    assert sent(rd, VoteRequest, to="n3") == [VoteRequest(2, "n2", 1, 1, transfer=True)]


def test_the_target_wins_even_though_every_voter_still_hears_from_the_old_leader() -> None:
    c = Cluster()
    c.elect("n1")
    c["n1"].propose([b"before"])
    c.flush("n1")
    c.deliver()
    assert c["n1"].transfer_leadership("n3")
    c.flush("n1")
    c.deliver()
    assert c.leaders() == ["n3"] and c["n3"].term == 2
    assert c["n1"].role is Role.FOLLOWER
    c.run(ticks=3)
    assert c["n1"].leader_id == "n3" and c["n3"].committed_in_current_term()
    assert c["n3"].log.entry(2).data == b"before"
    assert c["n3"].propose([b"after"]) is not None
