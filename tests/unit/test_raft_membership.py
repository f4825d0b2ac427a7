"""Membership changes and snapshots in the Raft core, on a small hand-driven cluster.

The application state here is the list of applied entry payloads; a snapshot is that list,
msgpack-encoded, sent in small chunks so every transfer takes several round trips.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from replikv.raft.core import RaftConfig, RaftCore, Role, SnapshotMeta
from replikv.raft.membership import (
    ADD_LEARNER,
    DEMOTE,
    PROMOTE,
    REMOVE,
    Membership,
    MembershipError,
    is_config_entry,
)
from replikv.raft.messages import (
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
    VoteRequest,
)


class Net:
    """Cores with instant, reliable (unless told otherwise) delivery and instant disks."""

    def __init__(self, ids: tuple[str, ...], *, voters: tuple[str, ...] | None = None,
                 learners: tuple[str, ...] = (), chunk: int = 16, **cfg: object) -> None:
        self.cfg = dict(cfg, snapshot_chunk_bytes=chunk)
        self.voters = voters if voters is not None else ids
        self.learners = learners
        self.cores: dict[str, RaftCore] = {}
        self.state: dict[str, list[bytes]] = {}
        self.snap: dict[str, tuple[SnapshotMeta, bytes] | None] = {}
        self.partial: dict[str, tuple[int, int, bytearray]] = {}
        self.down: set[str] = set()
        self.drop = lambda to, msg: False  # a filter that loses messages
        self.rolled_back: dict[str, list[Entry]] = {}
        self.maybe_committed: dict[str, list[Entry]] = {}
        for i in ids:
            self.add_node(i)

    def add_node(self, node_id: str, *, joining: bool = False) -> None:
        voters = () if joining else self.voters
        learners = () if joining else self.learners
        self.cores[node_id] = RaftCore(
            RaftConfig(node_id=node_id, voters=voters, learners=learners, **self.cfg),
            rng=random.Random(node_id))
        self.state[node_id] = []
        self.snap[node_id] = None
        self.rolled_back[node_id] = []
        self.maybe_committed[node_id] = []

    def __getitem__(self, node_id: str) -> RaftCore:
        return self.cores[node_id]

    def leader(self) -> str | None:
        leaders = [i for i, c in self.cores.items() if c.role is Role.LEADER and i not in self.down]
        assert len(leaders) <= 1 or len({self.cores[x].term for x in leaders}) == len(leaders)
        return max(leaders, key=lambda x: self.cores[x].term) if leaders else None

    def pump(self, limit: int = 10_000) -> None:
        queue: list[tuple[str, str, object]] = []
        for _ in range(limit):
            progressed = False
            for i, core in self.cores.items():
                if i in self.down or not core.has_ready():
                    continue
                progressed = True
                rd = core.ready()
                self.rolled_back[i].extend(rd.rolled_back)
                self.maybe_committed[i].extend(rd.maybe_committed)
                for e in rd.committed:
                    if e.data and not is_config_entry(e.data):
                        self.state[i].append(e.data)
                core.advance(rd)
                for chunk in rd.snapshot_chunks:
                    self._receive(i, chunk)
                for env in (*rd.early_messages, *rd.messages):
                    queue.append((i, env.to, env.message))
            while queue:
                src, to, msg = queue.pop(0)
                if to in self.down or to not in self.cores or self.drop(to, msg):
                    continue
                if isinstance(msg, InstallSnapshot):
                    meta, blob = self.snap[src]
                    assert (meta.index, meta.term) == (msg.index, msg.snap_term)
                    msg = InstallSnapshot(msg.term, msg.src, msg.index, msg.snap_term, len(blob),
                                          msg.offset, msg.length,
                                          blob[msg.offset:msg.offset + msg.length])
                self.cores[to].step(msg)
                progressed = True
            if not progressed:
                # Quiet: a commit index no AppendRequest carried goes out on its own now, as
                # the server sends it COMMIT_BROADCAST_DELAY_S later.
                lagging = [c for i, c in self.cores.items()
                           if i not in self.down and c.commit_unsent]
                if not lagging:
                    return
                for core in lagging:
                    core.broadcast_commit()
        raise AssertionError("the cluster did not settle")

    def _receive(self, node_id: str, chunk: InstallSnapshot) -> None:
        index, term, buf = self.partial.get(node_id, (chunk.index, chunk.snap_term, bytearray()))
        if (index, term) != (chunk.index, chunk.snap_term):
            index, term, buf = chunk.index, chunk.snap_term, bytearray()
        if chunk.offset == len(buf):
            buf.extend(chunk.data)
        self.partial[node_id] = (index, term, buf)
        core = self.cores[node_id]
        if len(buf) < chunk.size:
            core.snapshot_chunk_saved(chunk, len(buf))
            return
        del self.partial[node_id]
        payload, voters, learners = msgpack.unpackb(bytes(buf))
        meta = SnapshotMeta(index, term, Membership(tuple(voters), tuple(learners)))
        if core.restore(meta, len(buf)):
            self.state[node_id] = list(payload)
            self.snap[node_id] = (meta, bytes(buf))

    def take_snapshot(self, node_id: str, keep: int = 0) -> SnapshotMeta:
        core = self.cores[node_id]
        index = core.applied_index
        m = core.membership_at(index)
        meta = SnapshotMeta(index, core.log.term_at(index), m)
        blob = msgpack.packb([self.state[node_id], list(m.voters), list(m.learners)])
        self.snap[node_id] = (meta, blob)
        core.set_snapshot(meta, len(blob))
        core.compact(index - keep)
        return meta

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for i, core in self.cores.items():
                if i not in self.down:
                    core.tick()
            self.pump()

    def elect(self, node_id: str) -> None:
        core = self.cores[node_id]
        for _ in range(3 * core.config.election_ticks):
            if core.role is Role.LEADER:
                return
            core.tick()
            self.pump()
        assert core.role is Role.LEADER, f"{node_id} did not win ({core.role})"

    def write(self, n: int, prefix: str = "w") -> None:
        leader = self.cores[self.leader()]
        for k in range(n):
            assert leader.propose([f"{prefix}{k}".encode()]) is not None
            self.pump()

    def change(self, op: str, node_id: str) -> int:
        leader = self.cores[self.leader()]
        return leader.propose_membership(leader.membership.changed(op, node_id))


def started(ids=("n1", "n2", "n3"), **kw) -> Net:
    net = Net(ids, **kw)
    net.elect(ids[0])
    net.write(3)
    return net


def test_a_learner_receives_the_log_but_never_counts_toward_a_majority() -> None:
    net = started()
    net.add_node("n4", joining=True)
    net.change(ADD_LEARNER, "n4")
    net.pump()
    assert net["n1"].membership.learners == ("n4",)
    assert net["n4"].membership.learners == ("n4",)  # it learnt it from the log
    net.write(2)
    assert net.state["n4"] == net.state["n1"]
    # With two voters down the learner does not make a majority: nothing commits.
    net.down |= {"n2", "n3"}
    commit = net["n1"].commit_index
    net["n1"].propose([b"stuck"])
    net.pump()
    assert net["n1"].commit_index == commit
    # And it never campaigns, however long it hears nothing.
    net.down = {"n1", "n2", "n3"}
    for _ in range(50):
        net["n4"].tick()
    assert net["n4"].role is Role.FOLLOWER and net["n4"].elections_started == 0
    assert not any(isinstance(env.message, VoteRequest) for env in net["n4"].ready().messages)


def test_promotion_needs_a_caught_up_learner_and_then_the_majority_grows() -> None:
    net = started()
    net.add_node("n4", joining=True)
    net.down.add("n4")
    net.change(ADD_LEARNER, "n4")
    net.pump()
    with pytest.raises(MembershipError, match="catching up|reachable"):
        net.change(PROMOTE, "n4")
    net.down.discard("n4")
    net.tick(3)  # heartbeats find it and bring it up to date
    assert net["n1"].progress["n4"].match == net["n1"].log.last_index
    net.change(PROMOTE, "n4")
    net.pump()
    assert net["n1"].voters == ("n1", "n2", "n3", "n4") and net["n1"].quorum == 3
    # Now two of four down leaves no majority.
    net.down |= {"n3", "n4"}
    commit = net["n1"].commit_index
    net["n1"].propose([b"x"])
    net.pump()
    assert net["n1"].commit_index == commit


def test_one_change_at_a_time_and_never_without_a_reachable_majority() -> None:
    net = started()
    net.add_node("n4", joining=True)
    net.change(ADD_LEARNER, "n4")  # not yet committed: nothing pumped
    with pytest.raises(MembershipError, match="still being committed"):
        net.change(REMOVE, "n2")
    net.pump()
    net.down.add("n3")
    net.tick(net["n1"].config.election_ticks)  # n3 has been silent for a while
    # Removing n2 would leave {n1, n3} with only n1 reachable.
    with pytest.raises(MembershipError, match="majority"):
        net.change(REMOVE, "n2")
    net.change(REMOVE, "n3")  # removing the dead one is fine
    net.pump()
    assert net["n1"].voters == ("n1", "n2")


def test_only_single_server_changes() -> None:
    net = started()
    leader = net["n1"]
    with pytest.raises(MembershipError, match="one voter"):
        leader.propose_membership(Membership(("n1",)))


def test_removing_the_leader_hands_over_and_the_rest_go_on() -> None:
    net = started()
    net.change(REMOVE, "n1")
    net.pump()
    assert net["n1"].role is Role.FOLLOWER
    new = net.leader()
    assert new in ("n2", "n3"), "the best-placed voter should have been told to campaign"
    assert net[new].voters == ("n2", "n3")
    net.write(2, prefix="after")
    assert net.state["n2"] == net.state["n3"]
    assert net.state["n2"][-1] == b"after1"
    # The removed node never campaigns again.
    for _ in range(60):
        net["n1"].tick()
    assert net["n1"].role is Role.FOLLOWER


def test_a_demoted_voter_keeps_following_as_a_learner() -> None:
    net = started()
    net.change(DEMOTE, "n3")
    net.pump()
    assert net["n1"].voters == ("n1", "n2") and net["n1"].learners == ("n3",)
    net.write(2, prefix="d")
    assert net.state["n3"] == net.state["n1"]


def test_a_truncated_config_entry_is_undone() -> None:
    net = started()
    net.add_node("n4", joining=True)
    net.down |= {"n2", "n3"}
    net.change(ADD_LEARNER, "n4")  # n1 alone has it
    net.pump()
    assert net["n1"].membership.learners == ("n4",)
    net.down = {"n1", "n4"}
    for _ in range(100):
        net.tick()
        if net.leader() in ("n2", "n3"):
            break
    net.write(1, prefix="new-")
    net.down = {"n4"}
    net.pump()
    net.tick(2)
    assert net["n1"].membership.learners == ()  # the entry was overwritten: config reverted
    assert any(is_config_entry(e.data) for e in net.rolled_back["n1"])


def test_a_new_member_catches_up_from_a_chunked_snapshot() -> None:
    net = started(chunk=7)
    net.write(20)
    for i in ("n1", "n2", "n3"):
        net.take_snapshot(i, keep=2)
    assert net["n1"].log.offset > 0
    net.add_node("n4", joining=True)
    net.change(ADD_LEARNER, "n4")
    net.pump()
    net.tick(4)
    assert net.state["n4"] == net.state["n1"]
    assert net["n4"].snapshot is not None
    assert net["n1"].progress["n4"].state.value == "replicate"
    net.write(3, prefix="later")
    assert net.state["n4"] == net.state["n1"]


def test_a_snapshot_transfer_survives_lost_chunks_and_resumes() -> None:
    net = started(chunk=20)
    net.write(30)
    net.take_snapshot("n1", keep=0)
    net.down.add("n3")
    net.write(5, prefix="x")
    net.take_snapshot("n1", keep=0)
    rng = random.Random(7)
    net.drop = lambda to, msg: isinstance(msg, InstallSnapshot | InstallSnapshotResponse) and \
        rng.random() < 0.2
    net.down.discard("n3")
    for _ in range(400):
        net.tick()
        if net.state["n3"] == net.state["n1"]:
            break
    assert net.state["n3"] == net.state["n1"]


def test_a_follower_with_a_conflicting_log_discards_it_for_the_snapshot() -> None:
    net = started(chunk=8)
    # n3 leads a term of its own and writes 12 entries no one else gets (a stale leader's).
    assert net["n1"].transfer_leadership("n3")
    net.pump()
    n3 = net["n3"]
    assert n3.role is Role.LEADER
    net.down.update({"n1", "n2"})
    first_stale = n3.log.last_index + 1
    for k in range(12):
        assert n3.propose([f"stale{k}".encode()]) is not None
    net.pump()
    stale = n3.log.slice(first_stale, n3.log.last_index + 1)
    assert len(stale) == 12 and n3.commit_index < first_stale
    # Meanwhile another node leads a later term, writes 6 entries and compacts its log into a
    # snapshot.
    net.down = {"n3"}
    net.tick(3 * n3.config.election_ticks)
    leader = net.leader()
    assert leader in ("n1", "n2") and net[leader].term > stale[-1].term
    net.write(6)
    meta = net.take_snapshot(leader, keep=0)
    assert first_stale < meta.index < stale[-1].index
    net.down.discard("n3")
    net.tick(4)
    assert net.state["n3"] == net.state[leader]
    assert not any(d.startswith(b"stale") for d in net.state["n3"])
    # Past the snapshot's index n3's entries never committed; at or below it, entries of an
    # older term than the snapshot's may have (n3 cannot tell): saved, marked apart.
    assert net.rolled_back["n3"] == [e for e in stale if e.index > meta.index]
    assert net.maybe_committed["n3"] == [e for e in stale if e.index <= meta.index]


def test_removing_a_learner_and_timeout_now_only_for_voters() -> None:
    net = started()
    net.add_node("n4", joining=True)
    net.change(ADD_LEARNER, "n4")
    net.pump()
    net.tick(2)
    assert not net["n1"].transfer_leadership("n4")
    net.change(REMOVE, "n4")
    net.pump()
    assert "n4" not in net["n1"].progress
    assert not any(isinstance(env.message, TimeoutNow) for env in net["n1"].ready().messages)


def test_a_leader_sends_the_snapshot_it_installed_itself():
    """A node that caught up from a snapshot and later leads must be able to send that same
    snapshot on (its size comes with it; a size of 0 once stalled such a transfer forever)."""
    net = started(chunk=6)
    net.down.add("n2")
    net.write(12)
    net.take_snapshot("n1", keep=0)
    net.take_snapshot("n3", keep=0)
    net.down.discard("n2")
    net.tick(4)
    assert net["n2"].snapshot is not None and net["n2"].snapshot_size > 0
    assert net["n1"].transfer_leadership("n2")
    net.pump()
    net.tick(2)
    assert net.leader() == "n2"
    net.add_node("n4", joining=True)
    net.change(ADD_LEARNER, "n4")
    net.pump()
    net.tick(6)
    assert net.state["n4"] == net.state["n2"]


def test_a_leader_that_demoted_itself_and_crashed_can_still_finish_the_change():
    """The only copy of a leader's self-demotion is on that leader, which crashes before it
    commits. The other voter lacks the entry, so it cannot win (the old leader's log is more
    up to date); the old leader, no longer a voter by its own log, must still be allowed to
    run (dissertation §4.2.2), or the cluster deadlocks. Found by the random schedules."""
    from replikv.raft.core import RaftConfig, RaftCore

    net = Net(("n1", "n3"))
    net.elect("n3")
    net.write(2)
    net.down.add("n1")
    leader = net["n3"]
    leader.propose_membership(leader.membership.changed(DEMOTE, "n3"))
    leader.ready()  # appended and persisted here only
    entries = leader.log.slice(1, leader.log.last_index + 1)
    net.cores["n3"] = RaftCore(RaftConfig(node_id="n3", voters=("n1", "n3"), **net.cfg),
                               hard_state=leader.hard_state(), entries=entries,
                               rng=random.Random(3))
    net.state["n3"] = []  # its state is rebuilt from the log, as after a real restart
    assert not net["n3"].is_leader and net["n3"].voters == ("n1",)
    net.down.clear()
    for _ in range(200):
        net.tick()
        if net.leader() == "n1" and net["n1"].membership.learners == ("n3",):
            break
    assert net.leader() == "n1"
    assert net["n1"].voters == ("n1",) and not net["n1"].config_change_pending()
    net.write(1, prefix="after")
    assert net.state["n3"] == net.state["n1"]
