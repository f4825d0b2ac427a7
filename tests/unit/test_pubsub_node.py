"""PUBLISH through the log, in the node core: a message is handed to the driver (for the
node's subscribers) only once its entry commits, by every node, once, in log order; never the
message of an entry a leader applied ahead and lost. Both replication modes; a transaction and
a pipeline's batch carry their messages in the order of their commands."""

from __future__ import annotations

import pytest

from replikv.commands.transactions import encode_exec
from replikv.node import ERR_OOM
from replikv.pubsub import CHANNEL, PATTERN, SHARD, Published
from replikv.replies import ErrorReply

from .node_harness import Cluster

MODES = ("passive", "active")


def messages(cluster: Cluster, node_id: str) -> list[tuple[bytes, bytes, bool]]:
    return [(p.channel, p.message, p.sharded) for p in cluster.published[node_id]]


@pytest.mark.parametrize("mode", MODES)
def test_the_leader_delivers_only_once_the_entry_commits_and_every_node_delivers_it(mode):
    c = Cluster(replication=mode)
    leader = c.elect()
    followers = [i for i in c.ids if i != leader]
    for f in followers:  # the followers' acknowledgements are lost: nothing new commits
        c.blocked.add((f, leader))
    req = c.submit(leader, "PUBLISH", "news", "hello")
    c.deliver()
    node = c.nodes[leader]
    assert node.applied_index > node.raft.commit_index  # applied ahead of the commit...
    assert all(c.published[i] == [] for i in c.ids)  # ...and delivered by nobody
    c.heal()
    c.tick(3)
    assert c.reply(leader, req) == 0  # no subscriber on the leader
    index = node.raft.commit_index
    for i in c.ids:
        assert c.published[i] == [Published(index, b"news", b"hello", False)], i


@pytest.mark.parametrize("mode", MODES)
def test_a_message_the_lost_leader_applied_ahead_is_never_delivered(mode):
    c = Cluster(replication=mode)
    old = c.elect()
    others = {i for i in c.ids if i != old}
    c.partition({old}, others)
    c.submit(old, "PUBLISH", "news", "lost")
    c.deliver()
    # The entry raising the cluster's feature level to 2 (the first PUBLISH's), then its own.
    assert c.nodes[old].applied_ahead == 2
    new = None
    for _ in range(200):
        c.tick()
        leaders = [i for i in others if c.nodes[i].raft.is_leader]
        if leaders and c.nodes[leaders[0]].raft.committed_in_current_term():
            new = leaders[0]
            break
    assert new is not None
    assert c.call(new, "PUBLISH", "news", "kept") == 0
    c.heal()
    c.tick(20)
    assert not c.nodes[old].raft.is_leader and c.nodes[old].applied_ahead == 0
    for i in c.ids:
        assert messages(c, i) == [(b"news", b"kept", False)], i
    # The three delivered it at the same log index.
    assert len({c.published[i][0].index for i in c.ids}) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_new_leader_delivers_an_entry_of_the_old_one_once_it_commits(mode):
    c = Cluster(replication=mode)
    old = c.elect()
    others = [i for i in c.ids if i != old]
    for f in others:
        c.blocked.add((f, old))
    c.submit(old, "PUBLISH", "news", "inherited")
    c.deliver()  # the followers hold the entry; the leader never learns it
    assert all(c.published[i] == [] for i in c.ids)
    c.crash(old)
    c.heal()
    new = c.elect()
    assert new in others
    c.tick(3)
    for i in others:
        assert messages(c, i) == [(b"news", b"inherited", False)], i
    assert c.published[old] == []


@pytest.mark.parametrize("mode", MODES)
def test_a_transaction_and_a_pipeline_batch_deliver_in_command_order(mode):
    c = Cluster(replication=mode)
    leader = c.elect()
    follower = next(i for i in c.ids if i != leader)
    tx = encode_exec([[b"PUBLISH", b"a", b"1"], [b"SET", b"k", b"v"],
                      [b"SPUBLISH", b"s", b"2"], [b"PUBLISH", b"b", b"3"]])
    assert c.call(follower, *tx) == [0, _ok(), 0, 0]
    batch = encode_exec([[b"SET", b"k", b"w"], [b"PUBLISH", b"a", b"4"],
                         [b"PUBLISH", b"a", b"5"]], pipeline=True)
    assert c.call(follower, *batch)[1:] == [0, 0]
    c.tick(3)
    expected = [(b"a", b"1", False), (b"s", b"2", True), (b"b", b"3", False),
                (b"a", b"4", False), (b"a", b"5", False)]
    for i in c.ids:
        assert messages(c, i) == expected, i
        indexes = [p.index for p in c.published[i]]
        assert indexes[0] == indexes[1] == indexes[2] < indexes[3] == indexes[4]


def _ok() -> object:
    from replikv.replies import OK
    return OK


@pytest.mark.parametrize("mode", MODES)
def test_publish_answers_the_leaders_own_receivers(mode):
    c = Cluster(replication=mode)
    leader = c.elect()
    follower = next(i for i in c.ids if i != leader)
    subs = c.nodes[leader].subscriptions
    subs.add(CHANNEL, b"news", "conn-1")
    subs.add(CHANNEL, b"news", "conn-2")
    subs.add(PATTERN, b"n*", "conn-1")  # a channel and a matching pattern count twice
    subs.add(PATTERN, b"x*", "conn-3")
    subs.add(SHARD, b"news", "conn-4")
    c.nodes[follower].subscriptions.add(CHANNEL, b"news", "elsewhere")  # not counted
    assert c.call(follower, "PUBLISH", "news", "m") == 3
    assert c.call(follower, "SPUBLISH", "news", "m") == 1
    assert c.call(leader, "PUBLISH", "other", "m") == 0
    assert subs.remove(CHANNEL, b"news", "conn-2") and not subs.remove(CHANNEL, b"news", "x")
    assert c.call(leader, "PUBLISH", "news", "m") == 2


def test_a_nearly_full_disk_refuses_publish_and_maxmemory_does_not():
    c = Cluster()
    leader = c.elect()
    node = c.nodes[leader]
    node.disk_refusal = ErrorReply("MISCONF the disk of the leader is nearly full")
    assert c.call(leader, "PUBLISH", "news", "m") == node.disk_refusal
    batch = encode_exec([[b"DEL", b"k"], [b"PUBLISH", b"a", b"1"]], pipeline=True)
    assert c.call(leader, *batch) == [0, node.disk_refusal]
    assert node.disk_rejections == 2
    node.disk_refusal = None
    node.maxmemory = 1
    assert c.call(leader, "SET", "k", "v") == _ok()
    assert c.call(leader, "SET", "k2", "v") == ERR_OOM  # over maxmemory now
    assert c.call(leader, "PUBLISH", "news", "m") == 0  # PUBLISH is not denyoom
    c.tick(3)
    assert messages(c, leader) == [(b"news", b"m", False)]


@pytest.mark.parametrize("mode", MODES)
def test_publish_waits_for_every_member_to_run_a_replikv_that_can_apply_it(mode):
    """PUBLISH entries need feature level 2 (replikv.features): with a member at an older
    level, PUBLISH is refused, alone or in a transaction (whole) or a pipeline batch (its
    slot), and nothing is proposed; once every member advertises level 2 the leader raises
    the cluster's level through the log and PUBLISH goes through."""
    c = Cluster(replication=mode, levels={"n3": 1})
    leader = c.elect()
    assert leader != "n3", "the harness's seed elects n1 or n2"
    node = c.nodes[leader]
    last = node.raft.log.last_index
    refusal = c.call(leader, "PUBLISH", "news", "m")
    assert isinstance(refusal, ErrorReply) and refusal.message.startswith(
        "ERR PUBLISH needs every member of the cluster at feature level 2 or later, and n3 "
        "runs a replikv at level 1")
    assert c.call(leader, *encode_exec([[b"SET", b"k", b"v"],
                                        [b"PUBLISH", b"a", b"1"]])) == refusal
    assert node.raft.log.last_index == last
    assert c.call(leader, "GET", "k") is None
    batch = encode_exec([[b"SET", b"k", b"v"], [b"PUBLISH", b"news", b"m"]], pipeline=True)
    assert c.call(leader, *batch) == [_ok(), refusal]
    for i in c.ids:
        c.nodes[i].peer_features("n3", 2)
    assert c.call(leader, "PUBLISH", "news", "m") == 0
    c.tick(3)
    assert messages(c, leader) == [(b"news", b"m", False)]
    assert {c.nodes[i].state.feature_level for i in c.ids} == {2}
