"""Raft log replication, one rule per test: the AppendEntries receiver, the leader's side of it,
commitment (§5.3, §5.4.2 and the Figure 8 scenario), and flow control.

A follower is fed hand-written AppendRequests; a leader is fed hand-written AppendResponses; a
few tests pass messages between two or five cores by hand so the reader sees each round trip.
"""

from __future__ import annotations

from replikv.raft.core import RaftCore, Ready, Role, SnapshotMeta, classify_replaced
from replikv.raft.membership import Membership
from replikv.raft.messages import AppendRequest, AppendResponse, Entry, VoteRequest, VoteResponse
from replikv.raft.progress import ProgressState
from replikv.storage.hardstate import HardState

from .raft_harness import (
    IDS3,
    IDS5,
    Cluster,
    append_request,
    entry,
    log_entries,
    log_of,
    log_terms,
    make_core,
    make_leader,
    persist,
    sent,
    settle,
    time_out,
)

# -- AppendEntries receiver ---------------------------------------------------------------------


def test_append_is_rejected_when_the_log_has_no_entry_at_prev_index() -> None:
    node = make_core("n2", term=2, log=[1, 1])
    node.step(append_request(2, "n1", 5, 2, [entry(6, 2)]))
    rd = persist(node)
    assert sent(rd) == [AppendResponse(2, "n2", False, 5, hint_index=3, hint_term=0)]
    assert log_terms(node) == [1, 1]


def test_append_is_rejected_when_the_term_at_prev_index_differs_with_a_hint_to_that_term() -> None:
    node = make_core("n2", term=4, log=[1, 2, 2, 2, 2])
    node.step(append_request(4, "n1", 4, 3, [entry(5, 4)]))
    assert sent(persist(node)) == [AppendResponse(4, "n2", False, 4, hint_index=2, hint_term=2)]
    assert log_terms(node) == [1, 2, 2, 2, 2], "a rejected request changes nothing"


def test_a_rejection_hint_never_points_below_the_commit_index() -> None:
    node = make_core("n2", term=3, log=[2, 2, 2, 2])
    node.step(append_request(3, "n1", 2, 2, [], commit=2))
    node.step(append_request(3, "n1", 4, 3, [entry(5, 3)]))
    assert sent(persist(node))[-1] == AppendResponse(3, "n2", False, 4, hint_index=3,
                                                     hint_term=2)


def test_conflicting_entries_and_all_that_follow_them_are_deleted() -> None:
    node = make_core("n2", term=3, log=[1, 1, 2, 2, 2])
    node.step(append_request(3, "n1", 2, 1, [entry(3, 3)]))
    rd = persist(node)
    assert log_terms(node) == [1, 1, 3]
    assert rd.entries == [entry(3, 3)], "the replacing entries are written"
    assert sent(rd) == [AppendResponse(3, "n2", True, 3)]


def test_new_entries_are_appended() -> None:
    node = make_core("n2", term=2, log=[1])
    node.step(append_request(2, "n1", 1, 1, [entry(2, 2), entry(3, 2)]))
    rd = persist(node)
    assert rd.entries == [entry(2, 2), entry(3, 2)]
    assert log_terms(node) == [1, 2, 2]
    assert sent(rd) == [AppendResponse(2, "n2", True, 3)]


def test_a_stale_shorter_request_after_a_longer_one_does_not_drop_entries() -> None:
    node = make_core("n2", term=2)
    node.step(append_request(2, "n1", 0, 0, log_of([1, 2, 2])))
    node.step(append_request(2, "n1", 0, 0, log_of([1, 2])))  # delayed, sent earlier
    rd = persist(node)
    assert log_terms(node) == [1, 2, 2]
    assert rd.entries == log_of([1, 2, 2]), "each entry is written once"
    assert sent(rd) == [AppendResponse(2, "n2", True, 3), AppendResponse(2, "n2", True, 2)]


def test_a_stale_shorter_request_after_the_longer_one_was_persisted_changes_nothing() -> None:
    node = make_core("n2", term=2)
    node.step(append_request(2, "n1", 0, 0, log_of([1, 2, 2])))
    persist(node)
    node.step(append_request(2, "n1", 1, 1, log_of([2], start=2)))
    rd = persist(node)
    assert rd.entries == [] and log_terms(node) == [1, 2, 2]
    assert node.log.persisted_index == 3


def test_a_duplicate_request_whose_entries_match_writes_nothing() -> None:
    node = make_core("n2", term=2, log=[1, 2, 2])
    node.step(append_request(2, "n1", 1, 1, [entry(2, 2)]))
    rd = persist(node)
    assert rd.entries == [] and log_terms(node) == [1, 2, 2]


def test_the_commit_index_is_the_leaders_commit_bounded_by_the_last_new_entry() -> None:
    node = make_core("n2", term=2)
    node.step(append_request(2, "n1", 0, 0, log_of([1, 2, 2]), commit=5))
    assert node.commit_index == 3, "bounded by the last new entry"
    node.step(append_request(2, "n1", 3, 2, [entry(4, 2)], commit=2))
    assert node.commit_index == 3, "never moves back"
    node.step(append_request(2, "n1", 4, 2, [], commit=4))
    assert node.commit_index == 4


def test_the_commit_index_is_bounded_by_what_this_request_verified_not_by_the_log_end() -> None:
    # The follower holds entries beyond the request; only those the request matched may commit.
    node = make_core("n2", term=3, log=[1, 1, 2, 2])
    node.step(append_request(3, "n1", 0, 0, log_of([1, 1]), commit=4))
    assert node.commit_index == 2


def test_an_ack_for_entries_replaced_before_they_were_persisted_is_never_sent() -> None:
    """Persist before you speak, across a term change within one batch: n5 accepts two entries
    from the leader of term 7 and queues its ack; before that batch is written, the leader of
    term 8 replaces them. Only the replacement reaches the disk, so the ack for term 7's entries
    must not leave (the leader of term 7 would count a copy that exists nowhere)."""
    node = make_core("n5", voters=IDS5, term=6, log=[6])
    node.step(append_request(7, "n1", 1, 6, [entry(2, 7), entry(3, 7)]))
    node.step(append_request(8, "n2", 1, 6, [entry(2, 8)]))
    rd = node.ready()
    assert rd.entries == [entry(2, 8)]
    assert sent(rd, AppendResponse) == [AppendResponse(8, "n5", True, 2)]


def test_a_write_completing_after_its_entries_were_replaced_does_not_vouch_for_the_new_ones(
) -> None:
    """The runtime keeps stepping messages while a Ready's write is in flight. If a newer
    leader replaces some of those entries meanwhile, the old write's completion must not count
    the replacements as durable (they are written by the next Ready)."""
    node = make_core("n2", term=6, log=[6])
    node.step(append_request(7, "n1", 1, 6, [entry(2, 7), entry(3, 7)]))
    in_flight = node.ready()
    assert in_flight.entries == [entry(2, 7), entry(3, 7)]
    node.step(append_request(8, "n3", 2, 7, [entry(3, 8)], commit=3))  # while it is written
    node.advance(in_flight)
    assert node.log.persisted_index < 3
    rd = node.ready()
    assert rd.entries == [entry(3, 8)]
    assert entry(3, 8) not in rd.committed, "not applied before it is durable"
    node.advance(rd)
    assert node.log.persisted_index == 3


def test_an_append_response_leaves_only_after_the_entries_are_persisted() -> None:
    node = make_core("n2", term=2, log=[1])
    node.step(append_request(2, "n1", 1, 1, [entry(2, 2)], commit=1))
    rd = node.ready()
    assert rd.hard_state is None and rd.entries == [entry(2, 2)] and rd.must_sync
    assert rd.early_messages == []
    assert [env.message for env in rd.messages] == [AppendResponse(2, "n2", True, 2)]


def test_a_follower_applies_a_committed_entry_only_once_it_is_durable() -> None:
    node = make_core("n2", term=2)
    node.step(append_request(2, "n1", 0, 0, log_of([2, 2]), commit=2))
    rd = node.ready()
    assert rd.committed == []
    node.advance(rd)
    assert node.ready().committed == log_of([2, 2])


def test_an_append_request_from_the_leader_restarts_the_election_timer() -> None:
    node = make_core("n2", term=2, election_ticks=10)
    for _ in range(5):
        for _ in range(9):
            node.tick()
        node.step(append_request(2, "n1", 0, 0))
    assert node.role is Role.FOLLOWER and node.leader_id == "n1"


# -- Rolled-back entries ------------------------------------------------------------------------
# A follower that drops a conflicting suffix hands the dropped entries to the driver in
# Ready.rolled_back, with the entries that replace them, so they reach a rollback file first.


def test_entries_dropped_for_a_conflict_are_reported_as_rolled_back() -> None:
    node = make_core("n2", term=3, log=[1, 1, 2, 2, 2])
    node.step(append_request(3, "n1", 2, 1, [entry(3, 3)]))
    rd = persist(node)
    assert rd.rolled_back == [entry(3, 2), entry(4, 2), entry(5, 2)]
    assert rd.entries == [entry(3, 3)] and log_terms(node) == [1, 1, 3]
    assert persist(node).rolled_back == [], "reported once"


def test_entries_never_handed_to_the_driver_are_reported_too() -> None:
    node = make_core("n2", term=2, log=[1, 1])  # durable
    node.step(append_request(2, "n1", 2, 1, [entry(3, 2), entry(4, 2)]))  # not yet written
    node.step(append_request(3, "n3", 1, 1, [entry(2, 3)]))
    rd = persist(node)
    assert rd.rolled_back == [entry(2, 1), entry(3, 2), entry(4, 2)]
    assert rd.entries == [entry(2, 3)]


def test_entries_whose_write_is_in_flight_are_reported_with_their_replacements() -> None:
    node = make_core("n2", term=6, log=[6])
    node.step(append_request(7, "n1", 1, 6, [entry(2, 7), entry(3, 7)]))
    in_flight = node.ready()
    node.step(append_request(8, "n3", 2, 7, [entry(3, 8)]))  # while that write runs
    node.advance(in_flight)
    rd = node.ready()
    assert (rd.rolled_back, rd.entries) == ([entry(3, 7)], [entry(3, 8)])


def test_an_entry_dropped_re_appended_and_dropped_again_is_reported_each_time() -> None:
    node = make_core("n2", term=2, log=[1, 2])
    node.step(append_request(3, "n1", 1, 1, [entry(2, 3)]))  # drops (2, t2)
    node.step(append_request(4, "n3", 1, 1, [entry(2, 2), entry(3, 4)]))  # (2, t2) is back
    node.step(append_request(5, "n1", 1, 1, [entry(2, 5)]))  # and is dropped again
    rd = persist(node)
    # In index order; at one index, in the order they were dropped.
    assert rd.rolled_back == [entry(2, 2), entry(2, 3), entry(2, 2), entry(3, 4)]
    assert log_terms(node) == [1, 5] and rd.entries == [entry(2, 5)]


# A follower that restarted no longer knows how far its log had committed. When a snapshot
# replaces a log that lacks the snapshot's own entry, what it can prove decides what it saves:
# an entry of the snapshot's term (or before one) was committed, one after the snapshot or of a
# later term never was, and one of an older term may have been either.


def restored(log: list[int], snap_index: int, snap_term: int, term: int = 9) -> Ready:
    node = make_core("n2", term=term, log=log)
    settle(node)
    assert node.commit_index == 0, "a restarted follower knows no commit yet"
    assert node.restore(SnapshotMeta(snap_index, snap_term, Membership(IDS3, ())), 100)
    rd = persist(node)
    assert node.log.last_index == snap_index and node.commit_index == snap_index
    return rd


def test_a_snapshot_of_the_same_term_replaces_committed_entries_and_saves_none() -> None:
    # The snapshot's leader (term 2) wrote entries 2..4; its log held them under (6, 2).
    rd = restored([1, 2, 2, 2], 6, 2)
    assert (rd.rolled_back, rd.maybe_committed) == ([], [])


def test_entries_before_one_of_the_snapshot_term_were_committed_too() -> None:
    rd = restored([1, 1, 2, 3], 6, 3)
    assert (rd.rolled_back, rd.maybe_committed) == ([], [])


def test_older_terms_may_have_committed_and_later_terms_never_did() -> None:
    rd = restored([1, 1, 2, 2, 3, 5, 7], 6, 4)
    # 1..5: terms 1 to 3, older than the snapshot's 4, at or below its index: unknown. (6, 5)
    # is of a later term than the committed (6, 4), and 7 follows that differing entry 6.
    assert [e.index for e in rd.maybe_committed] == [1, 2, 3, 4, 5]
    assert rd.rolled_back == [entry(6, 5), entry(7, 7)]


def test_what_the_node_knew_was_committed_is_never_saved() -> None:
    node = make_core("n2", term=3, log=[1, 1, 1])
    node.step(append_request(3, "n1", 3, 1, [entry(4, 3)], commit=2))
    settle(node)
    assert node.commit_index == 2
    assert node.restore(SnapshotMeta(9, 2, Membership(IDS3, ())), 100)
    rd = persist(node)
    assert [e.index for e in rd.maybe_committed] == [3]
    assert rd.rolled_back == [entry(4, 3)]


def test_classify_replaced_splits_the_log_in_three() -> None:
    log = [entry(i, t) for i, t in enumerate([1, 2, 2, 3, 3, 4], start=1)]
    assert classify_replaced(log, 5, 2, 0) == (log[3:], [])
    assert classify_replaced(log, 8, 5, 1) == ([], log[1:])
    assert classify_replaced(log, 4, 3, 0) == (log[4:], [])
    assert classify_replaced(log, 3, 1, 0) == (log[1:], [])


def test_nothing_is_rolled_back_when_appends_only_extend_the_log_or_repeat_it() -> None:
    node = make_core("n2", term=2, log=[1])
    node.step(append_request(2, "n1", 1, 1, [entry(2, 2), entry(3, 2)]))
    node.step(append_request(2, "n1", 1, 1, [entry(2, 2)]))  # a delayed shorter duplicate
    node.step(append_request(2, "n1", 3, 2, [entry(4, 2)]))
    node.step(append_request(2, "n1", 9, 2, [entry(10, 2)]))  # rejected: a gap
    rd = persist(node)
    assert rd.rolled_back == [] and log_terms(node) == [1, 2, 2, 2]


def test_a_deposed_leaders_uncommitted_entries_end_up_in_its_rollback_file() -> None:
    c = Cluster()
    c.elect("n1")
    c.isolate("n1")
    c["n1"].propose([b"lost-1", b"lost-2"])  # durable on n1 alone, never committed
    c.flush("n1")
    new = c.run_until_leader(among={"n2", "n3"})
    new.propose([b"kept"])
    c.flush(new.id)
    c.deliver()
    c.heal()
    c.run(ticks=30)
    assert [e.data for e in c.disks["n1"].rolled_back] == [b"lost-1", b"lost-2"]
    assert [e.data for e in c.disks["n1"].entries] == [e.data for e in log_entries(new)]
    assert c.disks["n2"].rolled_back == c.disks["n3"].rolled_back == []


# -- Leaders ------------------------------------------------------------------------------------


def ack(leader: RaftCore, peer: str, index: int, seq: int = 0) -> None:
    leader.step(AppendResponse(leader.term, peer, True, index, seq=seq))


def with_entries(requests: list[AppendRequest]) -> list[AppendRequest]:
    """Leave out empty AppendRequests (heartbeats, commit-index updates)."""
    return [r for r in requests if r.entries]


def test_a_leader_sends_heartbeats_every_heartbeat_ticks() -> None:
    leader = make_leader("n1", election_ticks=10, heartbeat_ticks=3)
    for peer in ("n2", "n3"):
        ack(leader, peer, 1)
    settle(leader)
    leader.broadcast_commit()  # the commit index (1), so that the ticks below have none to send
    settle(leader)
    for _ in range(4):
        leader.tick()
        leader.tick()
        assert sent(settle(leader)) == []
        leader.tick()
        rd = persist(leader)
        assert sorted(env.to for env in rd.early_messages) == ["n2", "n3"]
        assert all(isinstance(env.message, AppendRequest) and env.message.commit == 1
                   for env in rd.early_messages)


def test_a_leader_sends_appends_before_its_own_fsync_in_early_messages() -> None:
    leader = make_leader("n1")
    ack(leader, "n2", 1)
    settle(leader)
    leader.propose([b"x"])
    rd = leader.ready()
    assert rd.entries == [(2, 1, b"x")] and rd.hard_state is None
    assert [env.to for env in rd.early_messages] == ["n2"]
    assert rd.early_messages[0].message.entries == ((2, 1, b"x"),)


def test_a_leader_counts_itself_toward_a_majority_only_once_its_entry_is_persisted() -> None:
    leader = make_leader("n1")
    ack(leader, "n2", 1)
    settle(leader)
    leader.propose([b"x"])
    rd = leader.ready()
    ack(leader, "n2", 2)
    assert leader.commit_index == 1, "n2 alone is not a majority of three"
    leader.advance(rd)
    assert leader.commit_index == 2


def test_a_majority_of_followers_commits_even_before_the_leaders_own_fsync() -> None:
    leader = make_leader("n1")
    for peer in ("n2", "n3"):
        ack(leader, peer, 1)
    settle(leader)
    leader.propose([b"x"])
    rd = leader.ready()
    ack(leader, "n2", 2)
    ack(leader, "n3", 2)
    assert leader.commit_index == 2
    assert leader.ready().committed == [], "but it applies only what it has on disk"
    leader.advance(rd)
    assert [e.data for e in leader.ready().committed] == [b"x"]


def test_a_leader_commits_once_a_majority_holds_an_entry_of_its_term() -> None:
    leader = make_leader("n1", voters=IDS5, term=1, log=[1])  # no-op at index 2, term 2
    ack(leader, "n2", 2)
    assert leader.commit_index == 0
    ack(leader, "n3", 2)
    assert leader.commit_index == 2
    # Nothing else to send: the new commit index waits for an AppendRequest to carry it (or
    # for the driver's broadcast_commit, or the next tick).
    assert leader.commit_unsent
    assert persist(leader).early_messages == []
    leader.broadcast_commit()
    assert [env.message.commit for env in persist(leader).early_messages] == [2, 2], (
        "followers in step hear the new commit index on broadcast_commit")
    assert not leader.commit_unsent


def _leader_with_a_new_commit() -> RaftCore:
    leader = make_leader("n1", term=1, log=[1])  # no-op at index 2, term 2
    for peer in ("n2", "n3"):
        ack(leader, peer, 2)
    assert leader.commit_index == 2
    assert persist(leader).early_messages == []
    return leader


def test_a_new_commit_index_travels_with_the_next_append_request() -> None:
    """Under load a commit costs no message of its own: the next batch's AppendRequests carry
    it, and nothing is left to broadcast."""
    leader = _leader_with_a_new_commit()
    assert leader.commit_unsent
    leader.propose([b"next"])
    requests = sent(persist(leader), AppendRequest)
    assert [(r.entries[0].data, r.commit) for r in requests] == [(b"next", 2), (b"next", 2)]
    assert not leader.commit_unsent
    leader.broadcast_commit()
    assert persist(leader).early_messages == []  # nobody lacks it: nothing sent


def test_a_commit_index_nothing_carried_goes_out_at_the_next_tick() -> None:
    """A driver that never calls broadcast_commit (the simulator) still tells the followers
    within one tick, well before the next heartbeat."""
    leader = _leader_with_a_new_commit()
    leader.tick()  # heartbeat_ticks is more than one: not a heartbeat
    rd = persist(leader)
    assert sorted((env.to, env.message.commit, env.message.entries)
                  for env in rd.early_messages) == [("n2", 2, ()), ("n3", 2, ())]
    assert not leader.commit_unsent


def test_only_a_leader_has_a_commit_index_to_send() -> None:
    follower = make_core("n2", term=1, log=[1])
    assert not follower.commit_unsent
    follower.broadcast_commit()
    assert not follower.has_ready()
    # A leader deposed with a commit index still unsent sends it to nobody.
    leader = _leader_with_a_new_commit()
    assert leader.commit_unsent
    leader.step(AppendRequest(5, "n3", 0, 0, (), 0, 0, False))  # a newer term's leader
    assert leader.role is Role.FOLLOWER and not leader.commit_unsent
    assert not leader.broadcast_commit()
    assert sent(settle(leader), AppendRequest) == []


def test_a_rejected_append_makes_the_leader_skip_the_followers_whole_conflicting_term() -> None:
    """Follower n2 holds six entries of term 2 from a deposed leader; the new leader's log has
    term 3 there. One rejection with a hint takes the leader back over all of them."""
    follower = make_core("n2", term=3, log=[1, 2, 2, 2, 2, 2, 2])
    leader = make_leader("n1", term=3, log=[1, 3, 3, 3, 3, 3, 3], heartbeat_ticks=1)
    leader.tick()  # its first probe was lost; the heartbeat probes again
    (probe,) = sent(persist(leader), AppendRequest, to="n2")
    assert (probe.prev_index, probe.prev_term) == (7, 3)

    follower.step(probe)
    (reject,) = sent(persist(follower), AppendResponse)
    assert (reject.success, reject.hint_index, reject.hint_term) == (False, 2, 2)

    leader.step(reject)
    (retry,) = sent(persist(leader), AppendRequest, to="n2")
    assert (retry.prev_index, retry.prev_term) == (1, 1), "one round trip, not six"
    assert len(retry.entries) == 7

    follower.step(retry)
    (accept,) = sent(persist(follower), AppendResponse)
    assert accept == AppendResponse(4, "n2", True, 8, seq=retry.seq)
    assert log_entries(follower) == log_entries(leader)


def test_a_rejection_hint_with_a_term_the_leader_also_has_resumes_after_its_last_entry() -> None:
    follower = make_core("n2", term=3, log=[1, 1, 1, 1, 1])
    leader = make_leader("n1", term=3, log=[1, 1, 3], heartbeat_ticks=1)  # no-op at 4, term 4
    leader.tick()
    (probe,) = sent(persist(leader), AppendRequest, to="n2")
    follower.step(probe)
    (reject,) = sent(persist(follower), AppendResponse)
    assert (reject.hint_index, reject.hint_term) == (1, 1)
    leader.step(reject)
    (retry,) = sent(persist(leader), AppendRequest, to="n2")
    assert (retry.prev_index, retry.prev_term) == (2, 1), "after the leader's last term-1 entry"


def test_a_rejection_from_a_shorter_follower_resumes_after_its_last_entry() -> None:
    leader = make_leader("n1", term=1, log=[1, 1, 1, 1])  # no-op at 5
    leader.step(AppendResponse(2, "n2", False, 4, hint_index=2, hint_term=0))
    (retry,) = sent(persist(leader), AppendRequest, to="n2")
    assert retry.prev_index == 1 and [e.index for e in retry.entries] == [2, 3, 4, 5]


def test_a_stale_rejection_does_not_move_the_leader_back() -> None:
    leader = make_leader("n1", term=1, log=[1, 1, 1, 1])
    ack(leader, "n2", 5)
    settle(leader)
    leader.step(AppendResponse(2, "n2", False, 4, hint_index=2, hint_term=0))  # delayed
    assert sent(persist(leader), to="n2") == []
    assert (leader.progress["n2"].match, leader.progress["n2"].state) == (
        5, ProgressState.REPLICATE)


def test_a_rejection_of_a_request_from_this_leaders_earlier_term_is_ignored() -> None:
    """A follower answers an AppendRequest of an older term with its own, current term. When the
    old request came from this same node in an earlier reign, the answer arrives looking like a
    rejection of this term's request, for an index this leader never sent. It must be ignored
    (it used to move `next` past the end of the log and stop the leader on an invariant)."""
    follower = make_core("n2", term=3, log=[1, 1])
    follower.step(append_request(1, "n1", 46, 1, [entry(47, 1)]))  # delayed since term 1
    (stale,) = sent(persist(follower))
    assert stale == AppendResponse(3, "n2", False, 46)

    leader = make_leader("n1", term=2, log=[1, 1])  # n1 leads term 3; its log ends at 3
    ack(leader, "n2", 3)
    settle(leader)
    leader.step(stale)
    assert leader.is_leader
    assert (leader.progress["n2"].match, leader.progress["n2"].next) == (3, 4)
    leader.propose([b"x"])
    (req,) = with_entries(sent(persist(leader), AppendRequest, to="n2"))
    assert req.prev_index == 3


# -- §5.4.2 and Figure 8 ------------------------------------------------------------------------


class Figure8:
    """Figure 8 of the Raft paper with five cores, driven step by step.

    (a) S1 led term 2 and put entry (2, t2) on S2; (b) S5 led term 3 and wrote (2, t3) only to
    itself; (c) S1 is back and wins term 4 with votes from S2 and S3. The cores are restarted
    from exactly that state, at term 3. Messages are relayed by hand, one entry per
    AppendRequest, and only along the links a step names: everything else is lost."""

    def __init__(self) -> None:
        # Without leader stickiness, so a vote request is judged on logs alone, as in the paper.
        cfg = {"voters": IDS5, "max_append_entries_count": 1, "heartbeat_ticks": 1,
               "check_quorum": False}
        self.s = {
            "n1": make_core("n1", term=3, log=[1, 2], **cfg),
            "n2": make_core("n2", term=3, log=[1, 2], **cfg),
            "n3": make_core("n3", term=3, log=[1], **cfg),
            "n4": make_core("n4", term=3, log=[1], **cfg),
            "n5": make_core("n5", term=3, log=[1, 3], **cfg),
        }

    def relay(self, *to: str) -> None:
        """S1 persists and sends; the named servers answer; S1 takes in the answers."""
        s1 = self.s["n1"]
        for msg_to, msg in [(env.to, env.message) for rd in settle(s1)
                            for env in (*rd.early_messages, *rd.messages)]:
            if msg_to in to:
                self.s[msg_to].step(msg)
                for answer in sent(settle(self.s[msg_to]), to="n1"):
                    s1.step(answer)

    def s1_wins_term_4(self) -> RaftCore:
        s1 = self.s["n1"]
        time_out(s1)
        self.relay("n2", "n3")  # pre-votes
        self.relay("n2", "n3")  # votes
        assert (s1.role, s1.term, log_terms(s1)) == (Role.LEADER, 4, [1, 2, 4])
        return s1

    def s5_votes_for_term_5(self) -> list[str]:
        """Who would vote for S5 (last entry (2, t3)) if it campaigned now?"""
        granted = []
        for voter in ("n2", "n3", "n4"):
            self.s[voter].step(VoteRequest(5, "n5", 2, 3))
            if sent(persist(self.s[voter]), VoteResponse)[-1].granted:
                granted.append(voter)
        return granted


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting_replicas() -> None:
    f = Figure8()
    s1 = f.s1_wins_term_4()
    f.relay("n3")  # S3 lacks index 2 and says so
    f.relay("n3")  # S1 sends (2, t2) alone; S3 stores it
    s1.tick()
    f.relay("n2")  # a heartbeat tells S1 that S2 holds index 2 too
    assert [log_terms(f.s[n]) for n in ("n1", "n2", "n3")] == [[1, 2, 4], [1, 2], [1, 2]]
    assert (s1.progress["n2"].match, s1.progress["n3"].match) == (2, 2)

    assert s1.commit_index == 0, "(2, t2) is on a majority but is not of the leader's term"
    # Why it must not commit: S5 can still win term 5 with S2, S3, S4 and overwrite it.
    assert f.s5_votes_for_term_5() == ["n2", "n3", "n4"]


def test_figure_8_the_old_term_entry_commits_with_the_first_entry_of_the_leaders_term() -> None:
    f = Figure8()
    s1 = f.s1_wins_term_4()
    for _ in range(4):
        s1.tick()
        f.relay("n2", "n3")
    assert [log_terms(f.s[n]) for n in ("n1", "n2", "n3")] == [[1, 2, 4]] * 3
    assert s1.commit_index == 3, "the no-op of term 4 commits, and (2, t2) before it"
    # Now S5 cannot win: a majority holds an entry of term 4, newer than its last term 3.
    assert f.s5_votes_for_term_5() == ["n4"]


# -- flow control -------------------------------------------------------------------------------


def test_in_probe_state_only_one_append_is_in_flight() -> None:
    leader = make_leader("n1", heartbeat_ticks=2)  # its first probe to each follower is out
    assert leader.progress["n2"].state is ProgressState.PROBE
    for i in range(3):
        leader.propose([f"x{i}".encode()])
        assert sent(persist(leader), to="n2") == [], "wait for the probe's answer"
    leader.tick()
    leader.tick()
    (heartbeat,) = sent(persist(leader), AppendRequest, to="n2")
    assert heartbeat.entries == (), "a heartbeat to a probing follower carries no entries"
    ack(leader, "n2", 1)
    assert leader.progress["n2"].state is ProgressState.REPLICATE
    (catch_up,) = with_entries(sent(persist(leader), AppendRequest, to="n2"))
    assert [e.index for e in catch_up.entries] == [2, 3, 4]


def test_in_replicate_state_at_most_max_inflight_appends_are_in_flight() -> None:
    leader = make_leader("n1", max_inflight_appends=2)
    ack(leader, "n2", 1)
    settle(leader)
    sizes = []
    for i in range(5):
        leader.propose([f"x{i}".encode()])
        sizes.append(len(sent(persist(leader), AppendRequest, to="n2")))
    assert sizes == [1, 1, 0, 0, 0]
    ack(leader, "n2", 2)
    (more,) = with_entries(sent(persist(leader), AppendRequest, to="n2"))
    assert [e.index for e in more.entries] == [4, 5, 6], "one slot freed: the rest in one go"


def test_an_append_request_is_cut_at_max_append_entries_count() -> None:
    leader = make_leader("n1", max_append_entries_count=2, max_inflight_appends=10)
    ack(leader, "n2", 1)
    settle(leader)
    leader.propose([b"a", b"b", b"c", b"d", b"e"])
    reqs = sent(persist(leader), AppendRequest, to="n2")
    assert [[e.index for e in r.entries] for r in reqs] == [[2, 3], [4, 5], [6]]


def test_a_lost_append_in_replicate_state_is_resent_after_the_heartbeat_reveals_the_gap() -> None:
    follower = make_core("n2", term=0)
    leader = make_leader("n1", heartbeat_ticks=1)
    follower.step(append_request(1, "n1", 0, 0, [Entry(1, 1, b"")]))
    leader.step(sent(persist(follower))[0])
    settle(leader)
    leader.propose([b"lost"])
    persist(leader)  # the AppendRequest carrying it is dropped
    leader.tick()
    (heartbeat,) = sent(persist(leader), AppendRequest, to="n2")
    follower.step(heartbeat)
    (reject,) = sent(persist(follower))
    assert not reject.success
    leader.step(reject)
    (resend,) = sent(persist(leader), AppendRequest, to="n2")
    assert [e.data for e in resend.entries] == [b"lost"]


def test_entries_written_and_sent_round_trip_between_two_cores() -> None:
    leader = make_leader("n1", voters=("n1", "n2"), heartbeat_ticks=1)
    follower = make_core("n2", voters=("n1", "n2"))
    leader.propose([b"a", b"b"])
    for _ in range(3):
        leader.tick()  # the first probe was dropped by make_leader; heartbeats probe again
        for m in sent(settle(leader), AppendRequest):
            follower.step(m)
        for m in sent(settle(follower), AppendResponse):
            leader.step(m)
    assert log_entries(follower) == log_entries(leader) == [
        Entry(1, 1, b""), Entry(2, 1, b"a"), Entry(3, 1, b"b")]
    assert leader.commit_index == follower.commit_index == 3
    assert follower.hard_state() == HardState(1, None)


def test_a_follower_that_lost_its_log_is_caught_up_from_where_its_log_ends_and_reported() -> None:
    """A follower restarted with an empty data dir answers the leader's probe at its old match
    index with "my log ends at 0". Backing up no further than match + 1 probed that index for
    ever (the wiped node never caught up while the leader stayed); the leader now starts from
    the follower's end, and reports the loss (take_lost_entries) for the operator."""
    from .raft_harness import Disk

    for idle in (True, False):  # the leader idle (REPLICATE, heartbeats only), or writing
        c = Cluster()
        leader = c.elect("n1")
        for i in range(5):
            leader.propose([f"w{i}".encode()])
            c.run(ticks=3)
        assert log_entries(c["n3"]) == log_entries(leader)
        had = leader.progress["n3"].match
        assert had == leader.log.last_index
        leader.take_lost_entries()
        c.crash("n3")
        c.disks["n3"] = Disk()  # the data dir wiped
        c.restart("n3")
        if not idle:
            leader.propose([b"after"])
        c.run(ticks=30)
        assert log_entries(c["n3"]) == log_entries(leader), idle
        assert leader.take_lost_entries() == [("n3", had, 0)]
        assert leader.take_lost_entries() == []  # reported once
