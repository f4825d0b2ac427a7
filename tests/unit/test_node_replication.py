"""Replication modes, write concerns, WAIT, rollback and read preferences in the node core,
driven message by message (see node_harness.py)."""

from __future__ import annotations

import msgpack
import pytest

from replikv.concerns import RequestOptions
from replikv.node import ENTRY_COMMAND, ENTRY_EFFECTS
from replikv.node_messages import ForwardRequest, ReadIndexRequest
from replikv.raft.messages import AppendRequest
from replikv.replies import OK, ErrorReply

from .node_harness import MISSING, Cluster

W1 = RequestOptions(w="1")
WALL = RequestOptions(w="all", wtimeout_ms=500)
LOCAL = RequestOptions(read_consistency="local")
NEAREST_LOCAL = RequestOptions(read_preference="nearest", read_consistency="local")


def followers(c: Cluster, leader: str) -> list[str]:
    return [i for i in c.ids if i != leader]


def entry_kinds(c: Cluster, node: str) -> set[int]:
    return {msgpack.unpackb(e.data)[0] for e in c.disks[node].entries if e.data}


def settle(c: Cluster, ticks: int = 5) -> None:
    c.deliver()
    c.tick(ticks)


WORKLOAD = [
    ("SET", "a", "1"), ("INCR", "a"), ("APPEND", "a", "x"), ("SADD", "s", "m1", "m2", "m3"),
    ("SREM", "s", "m2"), ("SET", "b", "v", "PX", "100000"), ("DEL", "b"), ("MSET", "c", "1",
                                                                            "d", "2"),
    ("RENAME", "c", "e"), ("SINTERSTORE", "t", "s", "s"), ("INCR", "s"),  # WRONGTYPE: no effect
]


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_every_replica_ends_with_the_same_state(mode):
    c = Cluster(replication=mode)
    leader = c.elect()
    for argv in WORKLOAD:
        c.call(leader, *argv)
    settle(c)
    digests = {c.nodes[i].state.digest() for i in c.ids}
    assert len(digests) == 1
    assert all(c.nodes[i].committed_applied_index == c.nodes[leader].applied_index
               for i in c.ids)


def test_passive_and_active_modes_reach_the_same_state_for_the_same_commands():
    digests = {}
    for mode in ("passive", "active"):
        c = Cluster(replication=mode)
        leader = c.elect()
        for argv in WORKLOAD:
            c.call(leader, *argv)
        settle(c)
        digests[mode] = c.nodes[followers(c, leader)[0]].state.digest()
    assert digests["passive"] == digests["active"]


def test_passive_backups_replay_effects_and_never_execute_a_command():
    c = Cluster(replication="passive")
    leader = c.elect()
    for argv in WORKLOAD:
        c.call(leader, *argv)
    settle(c)
    assert c.nodes[leader].commands_executed == len(WORKLOAD)
    for f in followers(c, leader):
        assert c.nodes[f].commands_executed == 0
        assert c.nodes[f].effects_applied == len(WORKLOAD)
    assert ENTRY_COMMAND not in entry_kinds(c, leader)
    assert ENTRY_EFFECTS in entry_kinds(c, leader)


def test_active_replicas_each_execute_every_command():
    c = Cluster(replication="active")
    leader = c.elect()
    for argv in WORKLOAD:
        c.call(leader, *argv)
    settle(c)
    for i in c.ids:
        assert c.nodes[i].commands_executed == len(WORKLOAD)
        assert c.nodes[i].effects_applied == 0
    assert entry_kinds(c, leader) == {ENTRY_COMMAND}


def test_active_spop_picks_the_same_members_on_every_replica():
    c = Cluster(replication="active")
    leader = c.elect()
    c.call(leader, "SADD", "s", *[f"m{i}" for i in range(50)])
    popped = c.call(leader, "SPOP", "s", "5")
    assert len(popped) == 5
    settle(c)
    assert len({c.nodes[i].state.digest() for i in c.ids}) == 1
    seeds = [msgpack.unpackb(e.data) for e in c.disks[leader].entries if e.data]
    assert any(len(body) == 4 and body[2][0] == b"SPOP" for body in seeds)  # seed in the entry


def test_w1_is_acknowledged_once_durable_on_the_leader_alone():
    c = Cluster()
    leader = c.elect()
    c.partition({leader}, set(followers(c, leader)))
    fast = c.submit(leader, "SET", "k", "async", options=W1)
    slow = c.submit(leader, "SET", "k2", "sync")
    c.deliver()
    assert c.reply(leader, fast) == OK
    assert c.reply(leader, slow) is MISSING


def test_lost_w1_write_lands_in_the_deposed_leaders_rollback_file():
    c = Cluster()
    old = c.elect()
    f1, f2 = followers(c, old)
    assert c.call(old, "SET", "k", "committed") == OK
    c.partition({old}, {f1, f2})
    lost = c.submit(old, "SET", "k", "lost-at-w1", options=W1)
    c.deliver()
    assert c.reply(old, lost) == OK
    # The majority side elects a new leader and moves on.
    for _ in range(100):
        c.tick()
        if any(c.nodes[i].raft.is_leader for i in (f1, f2)):
            break
    new = next(i for i in (f1, f2) if c.nodes[i].raft.is_leader)
    assert c.call(new, "SET", "other", "x") == OK
    c.heal()
    settle(c, 20)
    assert c.call(new, "GET", "k") == b"committed"
    saved = c.disks[old].rolled_back
    acknowledged = [r for r in saved if r.acknowledged]
    assert len(acknowledged) == 1
    effects = msgpack.unpackb(acknowledged[0].entry.data)[2]
    assert b"lost-at-w1" in msgpack.packb(effects)
    assert c.nodes[old].rolled_back_acknowledged == 1
    # After the rollback every replica agrees again.
    assert len({c.nodes[i].state.digest() for i in c.ids}) == 1


def test_deposed_leader_undoes_what_it_applied_ahead():
    c = Cluster()
    old = c.elect()
    f1, f2 = followers(c, old)
    c.call(old, "SADD", "s", "a")
    c.partition({old}, {f1, f2})
    c.submit(old, "SADD", "s", "b", options=W1)
    c.submit(old, "DEL", "s")
    c.submit(old, "SET", "k", "v")
    c.deliver()
    assert c.nodes[old].applied_ahead == 3
    c.tick(60)  # CheckQuorum: the isolated leader steps down
    assert not c.nodes[old].raft.is_leader
    assert c.nodes[old].applied_ahead == 0
    assert c.nodes[old].state.digest() == c.nodes[f1].state.digest()


def test_w_all_waits_for_every_voter_then_reports_wtimeout():
    c = Cluster()
    leader = c.elect()
    f1, f2 = followers(c, leader)
    assert c.call(leader, "SET", "k", "v1", options=WALL) == OK
    c.partition({leader, f1}, {f2})
    req = c.submit(leader, "SET", "k", "v2", options=WALL)
    c.deliver()
    c.tick(2)
    assert c.reply(leader, req) is MISSING  # committed on a majority, not on all
    c.tick(12)
    reply = c.reply(leader, req)
    assert isinstance(reply, ErrorReply) and reply.code == "WTIMEOUT"
    assert "2 of 3" in reply.message
    assert c.call(leader, "GET", "k") == b"v2"  # it was applied


def test_w_all_through_a_follower_is_answered_once_all_hold_it():
    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    assert c.call(f, "SET", "k", "v", options=WALL) == OK
    for i in c.ids:
        assert c.nodes[i].raft.log.persisted_index >= c.nodes[leader].raft.commit_index


def test_wait_counts_replicas_holding_the_connections_last_write():
    c = Cluster()
    leader = c.elect()
    f1, f2 = followers(c, leader)
    assert c.call(f1, "SET", "k", "v", session=7) == OK
    assert c.call(f1, "WAIT", "2", "1000", session=7) == 2
    c.partition({leader, f1}, {f2})
    assert c.call(leader, "SET", "k", "v2", session=8) == OK
    started_ms = c.now_ms
    assert c.call(leader, "WAIT", "2", "300", session=8) == 1  # only f1 has it, after 300 ms
    assert 300 <= c.now_ms - started_ms <= 400  # the client's timeout, nothing added
    assert c.call(leader, "WAIT", "1", "0", session=8) == 1
    err = c.call(leader, "WAIT", "x", "1")
    assert isinstance(err, ErrorReply) and "not an integer" in err.message
    # The timeout is limited to 24 h, as WTIMEOUT and MAXSTALENESS are (README, Limits), on
    # the leader and on a follower alike; 24 h itself is accepted.
    for node in (leader, f1):
        err = c.call(node, "WAIT", "1", str(24 * 3600 * 1000 + 1), session=8)
        assert isinstance(err, ErrorReply) and "0..86400000" in err.message, err
        err = c.call(node, "WAIT", "1", "-1", session=8)
        assert isinstance(err, ErrorReply) and "negative" in err.message, err
    assert c.call(leader, "WAIT", "1", str(24 * 3600 * 1000), session=8) == 1


def test_no_read_shows_a_write_that_could_still_be_undone():
    c = Cluster()
    leader = c.elect()
    assert c.call(leader, "SET", "k", "old") == OK
    c.partition({leader}, set(followers(c, leader)))
    assert c.call(leader, "SET", "k", "uncommitted", options=W1) == OK
    read = c.submit(leader, "GET", "k", options=NEAREST_LOCAL)
    c.deliver()
    assert c.reply(leader, read) is MISSING  # held: the state holds an uncommitted write
    c.tick(60)  # the leader steps down, undoes the write and runs the read again
    assert c.reply(leader, read) == b"old"


def test_secondary_preference_is_refused_on_the_primary():
    c = Cluster()
    leader = c.elect()
    reply = c.call(leader, "GET", "k", options=RequestOptions(read_preference="secondary"))
    assert isinstance(reply, ErrorReply) and reply.code == "NOTSECONDARY"
    f = followers(c, leader)[0]
    assert c.call(f, "GET", "k", options=RequestOptions(read_preference="secondary")) is None


def test_passive_primary_reads_on_a_backup_are_forwarded_to_the_primary():
    c = Cluster(replication="passive")
    leader = c.elect()
    f = followers(c, leader)[0]
    c.call(leader, "SET", "k", "v")
    assert c.call(f, "GET", "k") == b"v"
    forwarded = [m for s, _t, m in c.sent_log if s == f and isinstance(m, ForwardRequest)]
    assert forwarded and forwarded[-1].is_read


def test_active_followers_serve_linearizable_reads_themselves():
    c = Cluster(replication="active")
    leader = c.elect()
    f = followers(c, leader)[0]
    c.call(leader, "SET", "k", "v")
    assert c.call(f, "GET", "k") == b"v"
    assert any(isinstance(m, ReadIndexRequest) for s, _t, m in c.sent_log if s == f)
    assert not any(isinstance(m, ForwardRequest) for s, _t, m in c.sent_log if s == f)


def test_a_follower_read_does_not_wait_for_a_commit_index_no_write_carries():
    """A new commit index normally waits for the next AppendRequest (or a short delay). A
    follower that was given a read index must hear it at once, or the read would wait for
    the delay or the next tick."""
    c = Cluster(replication="active")
    leader = c.elect()
    f = followers(c, leader)[0]
    c.call(leader, "SET", "k", "v1")
    c.broadcast_when_quiet = False  # the server's delay never passes in this test
    write = c.submit(leader, "SET", "k", "v2")
    c.deliver()
    assert c.reply(leader, write) == OK
    assert c.nodes[leader].raft.commit_unsent  # the followers have not heard v2 committed
    read = c.submit(f, "GET", "k", options=RequestOptions(read_consistency="lease"))
    c.deliver()  # no tick: the leader answers from its lease and sends the commit index
    assert c.reply(f, read) == b"v2"


def test_stale_replica_refuses_reads_beyond_max_staleness():
    c = Cluster()
    leader = c.elect()
    f1, f2 = followers(c, leader)
    c.call(leader, "SET", "k", "v1")
    settle(c, 2)
    bounded = RequestOptions(read_preference="secondary", read_consistency="local",
                             max_staleness_ms=1000)
    assert c.call(f2, "GET", "k", options=bounded) == b"v1"
    c.partition({leader, f1}, {f2})
    c.call(leader, "SET", "k", "v2")
    c.tick(30)  # 1.5 s without news from the leader
    reply = c.call(f2, "GET", "k", options=bounded)
    assert isinstance(reply, ErrorReply) and reply.code == "STALE"
    # Without a bound the stale replica answers with what it has.
    assert c.call(f2, "GET", "k", options=NEAREST_LOCAL) == b"v1"


def test_lease_read_on_the_leader_needs_no_round_trip():
    c = Cluster()
    leader = c.elect()
    c.call(leader, "SET", "k", "v")
    settle(c, 2)
    before = len([m for s, _t, m in c.sent_log if s == leader and isinstance(m, AppendRequest)])
    req = c.submit(leader, "GET", "k", options=RequestOptions(read_consistency="lease"))
    assert c.reply(leader, req) == b"v"
    after = len([m for s, _t, m in c.sent_log if s == leader and isinstance(m, AppendRequest)])
    assert after == before


def test_a_session_reads_its_own_w1_write_on_a_follower():
    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    assert c.call(f, "SET", "k", "mine", options=W1, session=3) == OK
    # A local read on the same connection waits until this node has applied that write.
    assert c.call(f, "GET", "k", options=NEAREST_LOCAL, session=3) == b"mine"


def test_a_connection_that_ends_with_a_write_in_flight_leaves_nothing_behind():
    # end_session drops the connection's entry; its write committing afterwards must not put
    # it back (one entry per such connection, forever, before this was fixed).
    c = Cluster()
    leader = c.elect()
    node = c.nodes[leader]
    req = c.submit(leader, "SET", "k", "v", session=9)
    node.end_session(9)
    for _ in range(20):
        c.deliver()
        c.tick()
    assert c.reply(leader, req) == OK and 9 not in node._sessions
    assert c.call(leader, "SET", "k", "w", session=10) == OK
    assert node._sessions[10] > 0  # an open connection's write is still noted


def test_a_batch_of_several_connections_writes_counts_for_each_of_them():
    # The runtime submits plain writes of several connections as one EXEC PIPELINE with their
    # sessions: each connection's later reads and WAITs must see that write as its own.
    from replikv.commands.transactions import encode_exec

    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    batch = encode_exec([[b"SET", b"a", b"1"], [b"SET", b"b", b"2"]], pipeline=True)
    assert c.call(f, *batch, options=W1, session=(3, 4)) == [OK, OK]  # type: ignore[arg-type]
    assert c.call(f, "GET", "a", options=NEAREST_LOCAL, session=3) == b"1"
    assert c.call(f, "GET", "b", options=NEAREST_LOCAL, session=4) == b"2"
    node = c.nodes[f]
    assert node._sessions[3] == node._sessions[4] > 0
    assert c.call(f, "WAIT", "2", "1000", session=4) == 2


def test_a_leader_stopped_longer_than_its_lease_knows_it_has_none():
    c = Cluster()
    leader = c.elect()
    c.call(leader, "SET", "k", "v")
    settle(c, 2)
    node = c.nodes[leader]
    assert node.raft.lease_remaining_ticks() > 0 and node.staleness_ms() == 0
    # The process was stopped for 20 ticks: the driver hands over one tick carrying them all.
    node.tick(c.now_ms + 20 * 50, ticks=20)
    assert node.raft.lease_remaining_ticks() == 0
    assert node.staleness_ms() is None  # a bounded local read here now answers STALE
    follower = c.nodes[followers(c, leader)[0]]
    assert follower.raft.refuses_votes()
    follower.tick(c.now_ms + 20 * 50, ticks=20)  # its vote-refusal window passed meanwhile
    assert not follower.raft.refuses_votes()
