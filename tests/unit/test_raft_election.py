"""Raft elections, one rule per test: terms, RequestVote, candidates, PreVote, CheckQuorum, restarts.

Each test puts one core in a known state, feeds it the messages the rule talks about, and reads
the Ready it hands back. Rules are from the Raft paper's Figure 2 ("All servers", "RequestVote
RPC", "Followers", "Candidates"), §5.4.1 (the election restriction) and Ongaro's thesis §9.6
(PreVote) and §6.2 (CheckQuorum, leader stickiness). The last tests run a few cores together.
"""

from __future__ import annotations

import pytest

from replikv.raft.core import RaftCore, Role
from replikv.raft.messages import (
    AppendResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from replikv.storage.hardstate import HardState

from .raft_harness import (
    Cluster,
    append_request,
    entry,
    make_core,
    make_leader,
    persist,
    sent,
    settle,
    time_out,
    wait_out_start_up_window,
)


def make_candidate(term: int = 1, **kw: object) -> RaftCore:
    """n1 timed out at `term`, won its pre-vote, and now campaigns at term+1."""
    core = make_core("n1", term=term, **kw)  # type: ignore[arg-type]
    time_out(core)
    for peer in core.peers:
        if core.role is Role.PRE_CANDIDATE:
            core.step(VoteResponse(term + 1, peer, True, pre_vote=True))
    assert core.role is Role.CANDIDATE and core.term == term + 1
    settle(core)
    return core


# -- All servers: terms ---------------------------------------------------------------------------


@pytest.mark.parametrize("message, leader", [
    (append_request(5, "n2", 0, 0), "n2"),
    (AppendResponse(5, "n2", False, 0), None),
    (VoteResponse(5, "n2", False), None),
    (VoteRequest(5, "n2", 0, 0), None),  # from a candidate whose log is not up to date
    (TimeoutNow(5, "n2"), "n2"),
], ids=["AppendRequest", "AppendResponse", "VoteResponse", "VoteRequest", "TimeoutNow"])
def test_a_message_with_a_higher_term_makes_the_node_a_follower_at_that_term_without_a_vote(
        message: object, leader: str | None) -> None:
    node = make_candidate(term=1, log=[1, 1])  # candidate at term 2, voted for itself
    node.step(message)
    if isinstance(message, TimeoutNow):
        # ...and a TimeoutNow then starts its own election at once, one term later.
        assert (node.role, node.term, node.voted_for) == (Role.CANDIDATE, 6, "n1")
        return
    assert (node.role, node.term, node.voted_for, node.leader_id) == (
        Role.FOLLOWER, 5, None, leader)
    assert persist(node).hard_state == HardState(5, None)


def test_a_leader_that_sees_a_higher_term_steps_down() -> None:
    leader = make_leader("n1", term=1)
    leader.step(AppendResponse(7, "n3", False, 1))
    assert (leader.role, leader.term, leader.voted_for) == (Role.FOLLOWER, 7, None)
    assert leader.propose([b"x"]) is None


def test_a_lower_term_append_request_is_rejected_with_the_current_term() -> None:
    node = make_core("n1", term=3, log=[1, 2])
    node.step(append_request(2, "n2", 2, 2, [entry(3, 2)], commit=3))
    rd = persist(node)
    assert sent(rd) == [AppendResponse(3, "n1", False, 2)]
    assert [env.message for env in rd.messages] == sent(rd), "sent after persisting"
    assert (node.term, node.leader_id, node.log.last_index, node.commit_index) == (3, None, 2, 0)


def test_a_lower_term_vote_request_is_not_granted() -> None:
    node = make_core("n1", term=3)
    node.step(VoteRequest(2, "n2", 10, 2))
    rd = persist(node)
    assert not any(m.granted for m in sent(rd, VoteResponse))
    assert rd.hard_state is None and node.voted_for is None


def test_a_lower_term_pre_vote_is_refused_with_the_current_term() -> None:
    node = make_core("n1", term=3)
    node.step(VoteRequest(2, "n2", 10, 2, pre_vote=True))  # n2 is at term 1, asking for 2
    node.step(VoteRequest(1, "n3", 10, 2, pre_vote=True))  # n3 is further behind
    assert sent(persist(node), VoteResponse) == [
        VoteResponse(3, "n1", False, pre_vote=True), VoteResponse(3, "n1", False, pre_vote=True)]


def test_a_pre_candidate_refused_at_a_higher_term_follows_that_term() -> None:
    node = make_core("n1", term=1)
    time_out(node)
    node.step(VoteResponse(3, "n2", False, pre_vote=True))
    assert (node.role, node.term) == (Role.FOLLOWER, 3)


# -- RequestVote receiver ---------------------------------------------------------------------


def test_a_node_grants_at_most_one_vote_per_term() -> None:
    node = wait_out_start_up_window(make_core("n1", term=1, log=[1]))
    node.step(VoteRequest(2, "n2", 1, 1))
    node.step(VoteRequest(2, "n3", 1, 1))
    assert sent(persist(node), VoteResponse) == [
        VoteResponse(2, "n1", True), VoteResponse(2, "n1", False)]
    assert node.voted_for == "n2"


def test_the_same_candidate_asking_again_in_its_term_gets_the_same_vote() -> None:
    node = wait_out_start_up_window(make_core("n1", term=1, log=[1]))
    node.step(VoteRequest(2, "n2", 1, 1))
    persist(node)
    node.step(VoteRequest(2, "n2", 1, 1))  # its first answer was lost
    assert sent(persist(node), VoteResponse) == [VoteResponse(2, "n1", True)]


def test_a_vote_leaves_only_after_it_is_persisted() -> None:
    node = wait_out_start_up_window(make_core("n1", term=1, log=[1]))
    node.step(VoteRequest(2, "n2", 1, 1))
    rd = node.ready()
    assert rd.hard_state == HardState(2, "n2") and rd.must_sync
    assert rd.early_messages == []
    assert [env.message for env in rd.messages] == [VoteResponse(2, "n1", True)]


def test_a_candidate_votes_for_itself_and_persists_it_before_asking_for_votes() -> None:
    node = make_core("n1", term=1, log=[1])
    time_out(node)
    persist(node)  # the pre-vote requests
    node.step(VoteResponse(2, "n2", True, pre_vote=True))
    rd = node.ready()
    assert rd.hard_state == HardState(2, "n1")
    assert rd.early_messages == []
    assert sorted(((env.to, env.message) for env in rd.messages), key=str) == [
        ("n2", VoteRequest(2, "n1", 1, 1)), ("n3", VoteRequest(2, "n1", 1, 1))]


@pytest.mark.parametrize("voter_log, cand_last_index, cand_last_term, granted", [
    ([1, 2], 5, 1, False),     # candidate's last term is lower: refused however long its log
    ([1, 1, 1], 2, 1, False),  # same last term, shorter log: refused
    ([1, 1], 2, 1, True),      # equally up to date: granted
    ([1, 1, 1], 1, 2, True),   # higher last term, even if shorter: granted
    ([], 0, 0, True),          # two empty logs
], ids=["lower-last-term", "same-term-shorter", "equal", "higher-last-term", "both-empty"])
def test_a_vote_is_granted_only_to_a_candidate_at_least_as_up_to_date(
        voter_log: list[int], cand_last_index: int, cand_last_term: int, granted: bool) -> None:
    """§5.4.1, the election restriction: compare last terms, then lengths."""
    node = wait_out_start_up_window(make_core("n1", term=2, log=voter_log))
    node.step(VoteRequest(3, "n2", cand_last_index, cand_last_term))
    rd = persist(node)
    assert sent(rd, VoteResponse) == [VoteResponse(3, "n1", granted)]
    assert rd.hard_state == HardState(3, "n2" if granted else None)


def test_a_pre_vote_is_judged_by_the_same_log_comparison_but_changes_nothing() -> None:
    node = wait_out_start_up_window(make_core("n1", term=2, log=[1, 2]))
    node.step(VoteRequest(3, "n2", 2, 2, pre_vote=True))
    node.step(VoteRequest(3, "n3", 5, 1, pre_vote=True))
    rd = persist(node)
    assert sent(rd, VoteResponse) == [VoteResponse(3, "n1", True, pre_vote=True),
                                      VoteResponse(2, "n1", False, pre_vote=True)]
    assert rd.hard_state is None and (node.term, node.voted_for) == (2, None)


def test_granting_a_vote_restarts_the_election_timer() -> None:
    node = make_core("n1", term=1, log=[1], election_ticks=10)
    wait_out_start_up_window(node)  # 10 ticks: 19 in all below, past its timeout (16 ticks)
    node.step(VoteRequest(2, "n2", 1, 1))
    for _ in range(9):
        node.tick()
    assert node.role is Role.FOLLOWER


def test_a_follower_with_a_known_leader_refuses_a_vote_in_the_leaders_term() -> None:
    node = make_core("n1", term=2, log=[1], check_quorum=False)
    node.step(append_request(2, "n2", 1, 1))
    node.step(VoteRequest(2, "n3", 1, 1))
    assert sent(persist(node), VoteResponse) == [VoteResponse(2, "n1", False)]


# -- Followers and candidates -------------------------------------------------------------------


def test_an_election_timeout_starts_a_pre_vote_without_raising_the_term() -> None:
    node = make_core("n1", term=1, log=[1], election_ticks=10)
    for _ in range(9):
        node.tick()
    assert node.role is Role.FOLLOWER, "no timeout before election_ticks"
    time_out(node)
    assert node.tick_count < 20, "the timeout is below 2 * election_ticks"
    rd = persist(node)
    assert (node.role, node.term, node.voted_for, rd.hard_state) == (
        Role.PRE_CANDIDATE, 1, None, None)
    assert sorted(((env.to, env.message) for env in rd.messages), key=str) == [
        ("n2", VoteRequest(2, "n1", 1, 1, pre_vote=True)),
        ("n3", VoteRequest(2, "n1", 1, 1, pre_vote=True))]


def test_election_timeouts_differ_between_nodes() -> None:
    timeouts = set()
    for seed in range(20):
        node = make_core("n1", seed=seed, election_ticks=10)
        time_out(node)
        timeouts.add(node.tick_count)
    assert len(timeouts) > 3 and all(10 <= t < 20 for t in timeouts)


def test_a_majority_of_pre_votes_makes_a_candidate_at_the_next_term_voting_for_itself() -> None:
    node = make_core("n1", term=1, log=[1])
    time_out(node)
    persist(node)
    node.step(VoteResponse(2, "n2", True, pre_vote=True))
    assert (node.role, node.term, node.voted_for) == (Role.CANDIDATE, 2, "n1")
    assert node.ready().hard_state == HardState(2, "n1")


def test_a_pre_candidate_refused_by_a_majority_goes_back_to_follower_at_its_term() -> None:
    node = make_core("n1", term=1, log=[1])
    time_out(node)
    node.step(VoteResponse(1, "n2", False, pre_vote=True))
    assert node.role is Role.PRE_CANDIDATE, "one refusal of three is not yet a majority"
    node.step(VoteResponse(1, "n3", False, pre_vote=True))
    assert (node.role, node.term, node.voted_for) == (Role.FOLLOWER, 1, None)


def test_a_candidate_with_a_majority_of_votes_becomes_leader() -> None:
    node = make_candidate(term=1, log=[1])
    node.step(VoteResponse(2, "n3", True))
    assert node.role is Role.LEADER and node.leader_id == "n1"


def test_a_candidate_refused_by_a_majority_goes_back_to_follower() -> None:
    node = make_candidate(term=1, log=[1])
    node.step(VoteResponse(2, "n2", False))
    assert node.role is Role.CANDIDATE
    node.step(VoteResponse(2, "n3", False))
    assert (node.role, node.term, node.voted_for) == (Role.FOLLOWER, 2, "n1")


def test_a_candidate_does_not_count_the_same_voter_twice() -> None:
    node = make_candidate(term=1, voters=("n1", "n2", "n3", "n4", "n5"))
    node.step(VoteResponse(2, "n2", True))
    node.step(VoteResponse(2, "n2", True))
    assert node.role is Role.CANDIDATE, "two of five votes is no majority"


def test_a_candidate_ignores_pre_vote_answers_from_the_round_before() -> None:
    node = make_candidate(term=1, voters=("n1", "n2", "n3", "n4", "n5"))
    node.step(VoteResponse(2, "n3", True, pre_vote=True))
    node.step(VoteResponse(2, "n4", True, pre_vote=True))
    assert node.role is Role.CANDIDATE


def test_a_candidate_receiving_an_append_request_of_its_term_becomes_follower() -> None:
    node = make_candidate(term=1, log=[1])
    node.step(append_request(2, "n2", 1, 1, [entry(2, 2)], commit=1))
    assert (node.role, node.term, node.leader_id) == (Role.FOLLOWER, 2, "n2")
    assert sent(persist(node), AppendResponse) == [AppendResponse(2, "n1", True, 2)]


def test_a_candidate_ignores_a_stale_leader_but_tells_it_the_new_term() -> None:
    node = make_candidate(term=1, log=[1])
    node.step(append_request(1, "n2", 1, 1))
    assert node.role is Role.CANDIDATE
    assert sent(persist(node), AppendResponse) == [AppendResponse(2, "n1", False, 1)]


def test_a_candidate_whose_election_times_out_starts_again() -> None:
    node = make_candidate(term=1, log=[1])
    time_out(node)
    assert node.role is Role.PRE_CANDIDATE and node.term == 2
    node.step(VoteResponse(3, "n3", True, pre_vote=True))
    assert (node.role, node.term, node.voted_for) == (Role.CANDIDATE, 3, "n1")


def test_a_single_voter_elects_itself_and_commits_alone() -> None:
    node = make_core("n1", voters=("n1",), log=[1])
    time_out(node)
    assert node.role is Role.LEADER and node.term == 1
    settle(node)
    assert node.commit_index == 2
    node.propose([b"x"])
    applied = [e for rd in settle(node) for e in rd.committed]
    assert applied == [(3, 1, b"x")] and node.commit_index == 3


# -- Leader election ----------------------------------------------------------------------------


def test_a_new_leader_appends_a_no_op_of_its_term_and_sends_it_to_every_follower() -> None:
    node = make_candidate(term=1, log=[1, 1])
    node.step(VoteResponse(2, "n2", True))
    rd = node.ready()
    assert rd.entries == [(3, 2, b"")]
    assert sorted(((env.to, env.message) for env in rd.early_messages), key=str) == [
        ("n2", append_request(2, "n1", 2, 1, [(3, 2, b"")], commit=0)),
        ("n3", append_request(2, "n1", 2, 1, [(3, 2, b"")], commit=0))]
    assert rd.messages == []


# -- PreVote and CheckQuorum, cluster scenarios --------------------------------------------------


def test_a_partitioned_node_does_not_raise_its_term_nor_depose_the_leader_on_return() -> None:
    c = Cluster()
    c.elect("n1")
    term = c["n1"].term
    c.isolate("n3")
    c.run(ticks=20 * 10)  # n3 times out again and again
    assert c["n3"].term == term and c["n3"].elections_started == 0
    c.heal()
    c.run(ticks=30)
    assert c.leaders() == ["n1"] and c["n1"].term == term
    assert (c["n3"].role, c["n3"].leader_id) == (Role.FOLLOWER, "n1")


def test_without_pre_vote_a_returning_node_does_depose_the_leader() -> None:
    """The contrast that shows what PreVote buys (and that the scenario above can fail)."""
    c = Cluster(pre_vote=False, check_quorum=False)
    c.elect("n1")
    term = c["n1"].term
    c.isolate("n3")
    c.run(ticks=20 * 10)
    assert c["n3"].term > term + 5
    c.heal()
    c.run(ticks=5)
    assert c["n1"].term > term, "the leader was deposed by the returning node's term"


def test_check_quorum_a_leader_cut_off_from_every_follower_steps_down() -> None:
    c = Cluster(election_ticks=10)
    c.elect("n1")
    c.isolate("n1")
    c.tick("n1", times=10)
    c.tick("n1", times=10)  # the check runs once per election timeout
    assert c["n1"].role is Role.FOLLOWER and c["n1"].leader_id is None


def test_check_quorum_a_leader_that_hears_from_a_majority_stays() -> None:
    c = Cluster(election_ticks=10)
    c.elect("n1")
    c.partition({"n1", "n2"}, {"n3"})
    c.run(ticks=100)
    assert c.leaders() == ["n1"]


def test_without_check_quorum_an_isolated_leader_stays_leader() -> None:
    c = Cluster(election_ticks=10, check_quorum=False)
    c.elect("n1")
    c.isolate("n1")
    c.tick("n1", times=100)
    assert c["n1"].is_leader


@pytest.mark.parametrize("pre_vote", [False, True], ids=["vote", "pre-vote"])
def test_a_follower_that_heard_from_its_leader_recently_ignores_a_higher_term_request(
        pre_vote: bool) -> None:
    node = make_core("n2", term=2, log=[1, 2])
    node.step(append_request(2, "n1", 2, 2))
    persist(node)
    node.tick()
    node.step(VoteRequest(3, "n3", 2, 2, pre_vote=pre_vote))
    rd = persist(node)
    assert sent(rd) == [] and rd.hard_state is None
    assert (node.term, node.leader_id) == (2, "n1")


def test_a_follower_grants_a_higher_term_vote_request_sent_on_the_leaders_behalf() -> None:
    node = make_core("n2", term=2, log=[1, 2])
    node.step(append_request(2, "n1", 2, 2))
    persist(node)
    node.step(VoteRequest(3, "n3", 2, 2, transfer=True))
    rd = persist(node)
    assert sent(rd, VoteResponse) == [VoteResponse(3, "n2", True)]
    assert rd.hard_state == HardState(3, "n3")


def test_a_follower_whose_leader_went_quiet_grants_a_pre_vote() -> None:
    node = make_core("n2", term=2, log=[1, 2], election_ticks=10)
    node.step(append_request(2, "n1", 2, 2))
    for _ in range(10):
        node.tick()
    node.step(VoteRequest(3, "n3", 2, 2, pre_vote=True))
    assert sent(persist(node), VoteResponse) == [VoteResponse(3, "n2", True, pre_vote=True)]


def test_a_leader_ignores_a_disruptive_higher_term_vote_request() -> None:
    leader = make_leader("n1", term=1)
    leader.step(VoteRequest(5, "n3", 9, 1))
    assert leader.is_leader and leader.term == 2


# -- §5.4.1 in a cluster ------------------------------------------------------------------------


def test_a_node_missing_a_committed_entry_cannot_be_elected() -> None:
    c = Cluster()
    c.elect("n1")
    c.isolate("n3")
    c["n1"].propose([b"committed"])
    c.flush("n1")
    c.deliver()
    assert c["n1"].commit_index == 2 and c["n3"].log.last_index == 1
    c.crash("n1")
    c.heal()
    for _ in range(5):
        c.tick("n3", times=30)
        c.deliver()
    assert c["n3"].role is not Role.LEADER
    c.elect("n2")
    assert c["n2"].log.entry(2).data == b"committed"


# -- Restart ---------------------------------------------------------------------------------------


def test_a_restarted_node_keeps_its_term_and_vote_and_does_not_vote_twice() -> None:
    node = wait_out_start_up_window(make_core("n1", term=1, log=[1]))
    node.step(VoteRequest(2, "n2", 1, 1))
    hard_state = persist(node).hard_state
    restarted = make_core("n1", term=hard_state.term, voted_for=hard_state.voted_for, log=[1])
    assert (restarted.term, restarted.voted_for) == (2, "n2")
    restarted.step(VoteRequest(2, "n3", 1, 1))
    restarted.step(VoteRequest(2, "n2", 1, 1))
    assert sent(persist(restarted), VoteResponse) == [
        VoteResponse(2, "n1", False), VoteResponse(2, "n1", True)]


@pytest.mark.parametrize("pre_vote", [False, True], ids=["vote", "pre-vote"])
def test_a_restarted_node_refuses_votes_for_election_ticks_after_it_starts(pre_vote: bool) -> None:
    """Before it crashed the node may have answered a leader that still counts that answer
    toward a lease; it forgot that, so it acts as if it had just heard from a leader."""
    node = make_core("n2", term=2, log=[1, 2], election_ticks=10)  # restarted from disk
    for _ in range(9):
        node.step(VoteRequest(3, "n3", 2, 2, pre_vote=pre_vote))
        rd = persist(node)
        assert sent(rd) == [] and rd.hard_state is None and node.term == 2
        node.tick()
    assert node.role is Role.FOLLOWER
    node.tick()  # ten ticks without hearing from a leader since it started
    node.step(VoteRequest(3, "n3", 2, 2, pre_vote=pre_vote))
    assert sent(persist(node), VoteResponse) == [VoteResponse(3, "n2", True, pre_vote=pre_vote)]


def test_a_restarted_node_that_hears_from_a_leader_refuses_votes_for_election_ticks_from_then(
) -> None:
    node = make_core("n2", term=2, log=[1, 2], election_ticks=10)
    for _ in range(5):
        node.tick()
    node.step(append_request(2, "n1", 2, 2))
    for _ in range(9):
        node.tick()
    node.step(VoteRequest(3, "n3", 2, 2))
    assert sent(persist(node), VoteResponse) == []
    node.tick()
    node.step(VoteRequest(3, "n3", 2, 2))
    assert sent(persist(node), VoteResponse) == [VoteResponse(3, "n2", True)]


def test_a_restarted_node_grants_a_vote_asked_on_the_leaders_behalf_at_once() -> None:
    node = make_core("n2", term=2, log=[1, 2])
    node.step(VoteRequest(3, "n3", 2, 2, transfer=True))
    assert sent(persist(node), VoteResponse) == [VoteResponse(3, "n2", True)]


def test_a_restarted_node_still_campaigns_when_its_own_timer_fires() -> None:
    node = make_core("n2", term=2, log=[1, 2], election_ticks=10)
    time_out(node)
    assert node.role is Role.PRE_CANDIDATE
    assert len(sent(persist(node), VoteRequest)) == 2


def test_a_node_that_never_left_term_0_votes_at_once() -> None:
    """It has never answered any leader (leaders have term >= 1, and answers leave only once
    their term is durable), so no lease can count on it."""
    node = make_core("n2", term=0)
    node.step(VoteRequest(1, "n3", 0, 0))
    assert sent(persist(node), VoteResponse) == [VoteResponse(1, "n2", True)]


def test_a_restarted_node_treats_its_log_as_durable_and_its_commit_index_as_unknown() -> None:
    node = make_core("n1", term=3, log=[1, 2, 3])
    assert not node.has_ready()
    assert (node.commit_index, node.log.persisted_index, node.role) == (0, 3, Role.FOLLOWER)


def test_a_cluster_restarted_from_disk_keeps_every_committed_entry() -> None:
    c = Cluster()
    c.elect("n1")
    for i in range(3):
        c["n1"].propose([f"v{i}".encode()])
        c.flush("n1")
        c.deliver()
    committed = c["n1"].log.slice(1, c["n1"].commit_index + 1)
    for n in c.ids:
        c.crash(n)
    for n in c.ids:
        c.restart(n)
    # A restarted node refuses votes for election_ticks ticks (a lease may still count on its
    # answers from before the crash); n1's clock runs through that window, n3's stands still.
    c.tick("n1", times=10)
    assert c.network == [] and c["n1"].role is Role.FOLLOWER
    leader = c.elect("n2")
    assert leader.log.slice(1, len(committed) + 1) == committed
    c.run(ticks=3)
    assert all(c.applied[n][:len(committed)] == committed for n in c.ids)
