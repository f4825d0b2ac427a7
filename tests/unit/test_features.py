"""Feature levels (replikv.features): a leader logs an entry of a newer kind only once every
member can apply it, raises the cluster's level through the log first, and refuses the write,
naming the member holding it back, otherwise.

The tests invent a level above this replikv's (`next_level`): HSET needs it. They hold whatever
levels later releases add."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

from replikv import features, node
from replikv.commands.transactions import PIPELINE_BATCHABLE, encode_exec
from replikv.config import Address
from replikv.entries import ENTRY_FEATURES, apply_entry
from replikv.invariants import InvariantViolation
from replikv.raft.membership import Membership
from replikv.raft.messages import AppendResponse
from replikv.replies import OK, ErrorReply
from replikv.server.snapshots import SnapshotLoadError, load_snapshot
from replikv.sessions import SessionTable
from replikv.state import KVState
from replikv.storage.rollback import describe_entry
from replikv.storage.snapshot import SnapshotStore
from replikv.wire import encode_handshake

from .node_harness import Cluster
from .test_peer_transport import CLUSTER, free_port_pair, make_transport, raw_link, wait_for

CURRENT = features.FEATURE_LEVEL


@pytest.fixture
def next_level(monkeypatch: pytest.MonkeyPatch) -> int:
    """This replikv, made one level newer: HSET's entries need the new level."""
    level = CURRENT + 1
    monkeypatch.setattr(features, "FEATURE_LEVEL", level)
    monkeypatch.setattr(node, "FEATURE_LEVEL", level)
    monkeypatch.setattr(features, "COMMAND_LEVELS", {**features.COMMAND_LEVELS, b"hset": level})
    # (HSET is batchable, which a command with a level must not be, except PUBLISH: these tests
    # send it alone or in a transaction.)
    return level


def entry_kinds(c: Cluster, node_id: str) -> list[object]:
    """Each log entry's kind (None for a no-op or a config entry), in log order."""
    log = c.nodes[node_id].raft.log
    out = []
    for e in log.slice(log.offset + 1, log.last_index + 1):
        decoded = msgpack.unpackb(e.data) if e.data and e.data[:1] != b"\x00" else None
        out.append(decoded[0] if isinstance(decoded, list) else None)
    return out


@pytest.mark.parametrize("replication", ["passive", "active"])
def test_the_first_write_that_needs_a_new_level_raises_the_cluster_to_it_through_the_log(
        next_level, replication):
    c = Cluster(replication=replication)
    leader = c.elect()
    follower = next(i for i in c.ids if i != leader)
    assert c.call(leader, "SET", "k", "v") == OK  # needs nothing new: no features entry
    assert ENTRY_FEATURES not in entry_kinds(c, leader)
    assert all(c.nodes[i].state.feature_level == features.FEATURE_LEVEL_LEGACY for i in c.ids)
    assert c.call(follower, "HSET", "h", "f", "v") == 1  # forwarded: the leader raises it
    kinds = entry_kinds(c, leader)
    assert kinds.count(ENTRY_FEATURES) == 1
    # The features entry comes right before the write that needed it.
    assert kinds.index(ENTRY_FEATURES) == len(kinds) - 2
    c.tick(2)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {next_level}
    assert len({c.nodes[i].digest() for i in c.ids}) == 1
    assert c.call(leader, "HSET", "h", "g", "w") == 1
    assert entry_kinds(c, leader).count(ENTRY_FEATURES) == 1  # raised once, for good


def test_a_member_at_an_older_level_holds_the_write_back_with_an_error_naming_it(next_level):
    c = Cluster(levels={"n3": CURRENT})
    leader = c.elect()
    if leader == "n3":
        pytest.fail("the harness's seed elects n1 or n2")
    last = c.nodes[leader].raft.log.last_index
    reply = c.call(leader, "HSET", "h", "f", "v")
    assert isinstance(reply, ErrorReply)
    assert reply.message == (
        f"ERR HSET needs every member of the cluster at feature level {next_level} or later, "
        f"and n3 runs a replikv at level {CURRENT}: upgrade it first (replikv status shows "
        "each member's level)")
    assert c.nodes[leader].raft.log.last_index == last  # nothing proposed
    assert c.nodes[leader].feature_rejections == 1
    assert c.call(leader, "SET", "k", "v") == OK  # what every member applies still runs
    # A transaction holding it is refused whole (a pipeline's batch loses only that command:
    # tests/unit/test_pubsub_node.py, with PUBLISH, the one batchable kind that needs a level).
    assert c.call(leader, *encode_exec([[b"SET", b"a", b"1"], [b"HSET", b"h", b"f", b"v"]])) \
        == reply
    assert c.call(leader, "GET", "a") is None
    assert c.nodes[leader].feature_rejections == 2
    # Once n3 is upgraded (its link advertises the new level), the write goes through.
    for i in c.ids:
        if i != "n3":
            c.nodes[i].peer_features("n3", next_level)
    assert c.call(leader, "HSET", "h", "f", "v") == 1
    c.tick(2)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {next_level}


def test_a_member_not_heard_from_holds_the_level_back_until_raised_then_never_again(next_level):
    c = Cluster()
    leader = c.elect()
    other = next(i for i in c.ids if i != leader)
    c.nodes[leader].peer_features(other, None)  # its link closed, none came up since
    reply = c.call(leader, "HSET", "h", "f", "v")
    assert isinstance(reply, ErrorReply)
    assert f"and {other} has no link to this leader, so its level is unknown" in reply.message
    c.nodes[leader].peer_features(other, next_level)
    assert c.call(leader, "HSET", "h", "f", "v") == 1
    c.tick(2)
    # Raised for good: a member down or unknown later no longer matters (it was at the level).
    c.crash(other)
    del c.nodes[leader].peer_levels[other]
    assert c.call(leader, "HSET", "h", "g", "v") == 1


def test_a_features_entry_applied_ahead_is_undone_with_its_write_when_leadership_is_lost(
        next_level):
    c = Cluster()
    leader = c.elect()
    others = {i for i in c.ids if i != leader}
    c.partition({leader}, others)
    req = c.submit(leader, "HSET", "h", "f", "v")
    c.deliver()
    assert c.nodes[leader].state.feature_level == next_level  # applied ahead, not committed
    c.tick(60)  # the others elect a leader; the old one steps down when it hears of it
    c.heal()
    c.tick(60)
    new_leader = next(i for i in c.ids if c.nodes[i].raft.is_leader)
    assert new_leader != leader
    assert isinstance(c.reply(leader, req), ErrorReply)  # its write was never acknowledged
    c.tick(5)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {features.FEATURE_LEVEL_LEGACY}
    assert c.call(new_leader, "HSET", "h", "f", "v") == 1
    c.tick(2)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {next_level}
    assert len({c.nodes[i].digest() for i in c.ids}) == 1


def test_a_node_stops_on_a_level_above_its_own_rather_than_apply_on(next_level):
    state = KVState()
    data = node.encode_features_entry(next_level, 1000)
    apply_entry(state, SessionTable(), data, 7, 0)
    assert state.feature_level == next_level
    newer = node.encode_features_entry(next_level + 1, 1000)
    with pytest.raises(InvariantViolation, match=(
            f"log entry 7: the cluster is at feature level {next_level + 1}, and this replikv "
            f"can apply only up to level {next_level}: run a newer replikv on this node")):
        apply_entry(state, SessionTable(), newer, 7, 0)
    assert state.feature_level == next_level
    # An entry that does not raise the level (a leader that did not know of a higher one)
    # changes nothing: the level never falls.
    apply_entry(state, SessionTable(), node.encode_features_entry(CURRENT, 1000), 8, 0)
    assert state.feature_level == next_level
    assert describe_entry(data) == {
        "kind": "features", "time_ms": 1000,
        "text": f"(feature level {next_level}: every member can apply its entries)"}


def write_snapshot(directory: Path, level: int | None) -> object:
    state = KVState()
    state.apply_command([b"SET", b"k", b"v"], 1000)
    extra: dict = {"membership": Membership(("n1", "n2", "n3")).encode(), "time_ms": 1000}
    if level is not None:
        extra["feature_level"] = level
    writer = SnapshotStore(directory).writer({
        "index": 5, "term": 1, "created_ms": 1, "node_id": "n1", "cluster_id": "c",
        "replication_mode": "passive", "extra": extra})
    cursor = state.begin_snapshot()
    while (batch := cursor.next_batch(100)) is not None:
        writer.add_batch(batch)
    writer.add_section("sessions", SessionTable().to_bytes())
    return writer.finish(state_digest=cursor.state_digest())


def test_a_snapshot_carries_the_level_and_one_above_this_replikv_is_refused(tmp_path, next_level):
    old = write_snapshot(tmp_path / "old", None)  # written before feature levels
    assert load_snapshot(old)[1].feature_level == features.FEATURE_LEVEL_LEGACY
    raised = write_snapshot(tmp_path / "raised", next_level)
    _meta, state, _time, _sessions = load_snapshot(raised)
    assert state.feature_level == next_level
    assert state.digest() == KVState.from_records(
        [[b"k", 0, b"v", None]]).digest()  # the level is no part of the keyspace's digest
    newer = write_snapshot(tmp_path / "newer", next_level + 1)
    with pytest.raises(SnapshotLoadError, match="run a newer replikv on this node"):
        load_snapshot(newer)


def test_a_node_that_writes_a_snapshot_records_the_level_at_its_index(next_level):
    c = Cluster()
    leader = c.elect()
    assert c.call(leader, "HSET", "h", "f", "v") == 1
    c.tick(2)
    job = c.nodes[leader].start_snapshot(force=True)
    assert job is not None and job.feature_level == next_level
    job.cursor.close()


def test_advertised_levels_are_checked():
    assert features.parse_advertised({}) == features.FEATURE_LEVEL_LEGACY  # an older node
    assert features.parse_advertised({"features": "7"}) == 7
    for bad in ("", "x", "-1", "0", "1e3", "9999999", " 2"):
        with pytest.raises(ValueError):
            features.parse_advertised({"features": bad})


def test_a_peer_link_advertises_this_level_and_hands_the_peers_to_the_core():
    async def main():
        pa, pb = free_port_pair()
        learned: list[tuple[str, int]] = []
        a = make_transport("a", pa, {"a": pa, "b": pb}, [])
        b = make_transport("b", pb, {"a": pa, "b": pb}, [])
        b.on_peer_level = lambda src, level: learned.append((src, level))
        assert a.advertised["features"] == str(CURRENT)
        await a.start(Address("127.0.0.1", pa))
        await b.start(Address("127.0.0.1", pb))
        try:
            await wait_for(lambda: a.is_connected("b"))
            a.send("b", AppendResponse(term=1, src="a", success=True, index=0, seq=0))
            await wait_for(lambda: learned)
            assert learned == [("a", CURRENT)]
            assert b.peer_info["a"]["features"] == str(CURRENT)
            # A handshake whose level is not one is a peer's misbehaviour: the link is dropped.
            bad = encode_handshake(CLUSTER, "a", "b", {"features": "many"})
            rejected = b.rejected_links
            assert await raw_link(pb, bad)
            assert b.rejected_links == rejected + 1
            # When a's link closes, its level is unknown again: a may come back older.
            await a.close()
            await wait_for(lambda: learned[-1] == ("a", None))
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())

    for bad in (features.FEATURE_LEVEL_MAX + 1, 0, True, "2", None):
        with pytest.raises(ValueError, match="is not a feature level"):
            features.level_check(bad, "x")


def test_the_simulator_raises_the_level_under_faults_and_every_replica_agrees(next_level):
    """Seeds of the simulator (crashes, partitions, lost and duplicated messages, snapshots)
    where HSET needs the new level: the features entry is raised, undone and raised again as
    leaders come and go, and every run checks its invariants (linearizability, equal states)."""
    from replikv.sim.runner import SimConfig, run_seed

    for seed in range(6):
        r = run_seed(seed, SimConfig(snapshots=bool(seed % 2)))
        assert r.ok, f"seed {seed}: {r.failure}"


def test_a_pipeline_batch_holds_no_command_with_a_level_but_publish():
    """needed_level does not look into pipeline batches (the hot path); the node core judges
    a batch by the messages it published. That holds only while no other batchable command
    needs a level: a new one must be judged some other way."""
    batchable = {name.lower() for name in PIPELINE_BATCHABLE}
    assert {n for n in features.COMMAND_LEVELS if n in batchable} == {b"publish", b"spublish"}
    assert not {n for n in features.ACTIVE_COMMAND_LEVELS if n in batchable}


def test_a_script_that_publishes_needs_level_2_and_an_eval_entry_level_3_in_active_mode():
    """A script's entry holds its writes' effects in passive mode (older kinds: no level),
    unless it published; in active mode the entry is the EVAL itself, which older replikv
    cannot run (level 3)."""
    script = "redis.call('SET', KEYS[1], 'v') return redis.call('PUBLISH', 'c', 'm')"
    publishing = ["EVAL", script, "1", "k"]
    c = Cluster(levels={"n3": 1})
    leader = c.elect()
    assert leader != "n3", "the harness's seed elects n1 or n2"
    assert c.call(leader, "EVAL", "return redis.call('SET', KEYS[1], 'v')", "1", "a") == OK
    reply = c.call(leader, *publishing)
    assert isinstance(reply, ErrorReply) and reply.message.startswith(
        "ERR PUBLISH needs every member of the cluster at feature level 2 or later, and n3 "
        "runs a replikv at level 1")
    assert c.call(leader, "GET", "k") is None  # refused whole: its SET was undone
    for i in c.ids:
        c.nodes[i].peer_features("n3", 2)
    assert c.call(leader, *publishing) == 0
    assert c.call(leader, "GET", "k") == b"v"
    c.tick(2)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {2}

    active = Cluster(replication="active", levels={"n3": 2})
    leader = active.elect()
    reply = active.call(leader, "EVAL", "return 1", "0")
    assert isinstance(reply, ErrorReply) and reply.message.startswith(
        "ERR EVAL needs every member of the cluster at feature level 3 or later, and n3 runs "
        "a replikv at level 2")
    for i in active.ids:
        active.nodes[i].peer_features("n3", 3)
    assert active.call(leader, "EVAL", "return 1", "0") == 1
    active.tick(2)
    assert {active.nodes[i].state.feature_level for i in active.ids} == {3}
