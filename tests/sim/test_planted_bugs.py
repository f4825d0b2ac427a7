"""Proof that the simulator finds bugs: each test plants one (here, in test code only) and
asserts that a bounded number of seeds exposes it."""

from __future__ import annotations

import dataclasses

import pytest

from replikv.node import NodeCore, RolledBack
from replikv.raft.core import RaftCore
from replikv.raft.log import RaftLog
from replikv.sim.cluster import DriverOptions
from replikv.sim.runner import SimConfig, run_seed
from replikv.state import KVState


def first_failing_seed(config: SimConfig, max_seeds: int) -> tuple[int, str] | None:
    for seed in range(max_seeds):
        r = run_seed(seed, config)
        if not r.ok:
            return seed, r.failure
    return None


def commit_by_counting_replicas_of_any_term(self: RaftCore) -> None:
    """Raft §5.4.2's trap: commit an earlier term's entry because a majority holds it."""
    matches = sorted((self.log.persisted_index if v == self.id else self.progress[v].match
                      for v in self.voters), reverse=True)
    candidate = matches[self.quorum - 1]
    self.commit_index = max(self.commit_index, candidate)


def serve_reads_locally(self: NodeCore, req) -> None:
    """A follower answering reads from its own state without asking for a read index."""
    if req.kind == "read":
        self._finish(req.req_id, self.state.execute_read(req.argv, self.now_ms))
        return
    ORIGINAL_ROUTE(self, req)


ORIGINAL_ROUTE = NodeCore._route


def test_finds_commit_of_earlier_term_entries(monkeypatch):
    monkeypatch.setattr(RaftCore, "_maybe_commit", commit_by_counting_replicas_of_any_term)
    found = first_failing_seed(SimConfig(nemesis_interval_ms=(50, 400)), 200)
    assert found is not None, "the simulator missed the planted commit-rule bug"
    assert "committed" in found[1] or "linearizable" in found[1]


def test_finds_vote_granted_without_log_up_to_date_check(monkeypatch):
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    found = first_failing_seed(SimConfig(), 50)
    assert found is not None, "the simulator missed the planted voting bug"


def test_finds_acknowledging_before_fsync():
    found = first_failing_seed(SimConfig(options=DriverOptions(ack_before_fsync=True)), 300)
    assert found is not None, "the simulator missed acknowledgements sent before fsync"


def test_finds_follower_reads_without_read_index(monkeypatch):
    monkeypatch.setattr(NodeCore, "_route", serve_reads_locally)
    found = first_failing_seed(SimConfig(faults="network"), 100)
    assert found is not None, "the simulator missed stale follower reads"
    # Stale reads break linearizability, or first the pinned connections' monotonic reads.
    assert "linearizable" in found[1] or "monotonic reads" in found[1]


ORIGINAL_ROLLED_BACK = NodeCore._rolled_back


def label_rollbacks_unacknowledged(self: NodeCore, entry, **kw) -> RolledBack:
    """A rollback file that forgets which discarded writes clients were told succeeded."""
    saved = ORIGINAL_ROLLED_BACK(self, entry, **kw)
    return RolledBack(saved.entry, False, saved.maybe_committed)


def answer_reads_without_waiting_for_commit(self: NodeCore, req) -> None:
    """A leader answering reads from state that holds writes applied ahead of their commit."""
    self._finish(req.req_id, self.state.execute_read(req.argv, self.now_ms))


def test_finds_lost_w1_writes_missing_from_rollback_files(monkeypatch):
    monkeypatch.setattr(NodeCore, "_rolled_back", label_rollbacks_unacknowledged)
    found = first_failing_seed(SimConfig(nemesis_interval_ms=(50, 400)), 200)
    assert found is not None, "the simulator missed w=1 writes lost without a rollback record"
    assert "rollback" in found[1]


def test_finds_a_deposed_leader_that_keeps_what_it_applied_ahead(monkeypatch):
    monkeypatch.setattr(NodeCore, "_undo_uncommitted", lambda self: None)
    found = first_failing_seed(SimConfig(nemesis_interval_ms=(50, 400)), 200)
    assert found is not None, "the simulator missed a leader that never undoes"


def test_finds_reads_of_writes_not_yet_committed(monkeypatch):
    monkeypatch.setattr(NodeCore, "_execute_read", answer_reads_without_waiting_for_commit)
    found = first_failing_seed(SimConfig(nemesis_interval_ms=(50, 400)), 200)
    assert found is not None, "the simulator missed dirty reads on the leader"
    assert "linearizable" in found[1] or "monotonic reads" in found[1]


def test_finds_replicas_that_misjudge_their_staleness(monkeypatch):
    monkeypatch.setattr(NodeCore, "staleness_ms", lambda self: 0)
    found = first_failing_seed(SimConfig(), 100)
    assert found is not None, "the simulator missed reads beyond MAXSTALENESS"
    assert "max staleness" in found[1]


@pytest.mark.parametrize("faults", ["network", "crash", "disk", "none"])
def test_each_fault_class_passes_on_correct_code(faults):
    for seed in range(10):
        r = run_seed(seed, SimConfig(faults=faults))
        assert r.ok, f"seed {seed} ({faults}): {r.failure}"


def test_finds_a_snapshot_without_copy_on_write(monkeypatch):
    """A snapshot cursor that reads shards as they are when it gets to them, not as they were
    when the snapshot began: writes made meanwhile leak into a snapshot labelled with an
    earlier index, and a follower that installs it diverges."""
    from replikv.state import StateSnapshotCursor

    monkeypatch.setattr(StateSnapshotCursor, "_preserve", lambda self, shard_index: None)
    found = first_failing_seed(SimConfig(snapshots=True), 100)
    assert found is not None, "the simulator missed snapshots taken without copy-on-write"
    assert any(w in found[1] for w in ("digests differ", "linearizable", "snapshot cursor")), \
        found[1]


def test_finds_committed_entries_saved_as_rolled_back_after_a_snapshot(monkeypatch):
    """A follower that restarted knows no commit index; when a snapshot replaces its log,
    calling every entry past that index rolled back files committed writes as lost."""
    from replikv.raft import core as core_module

    monkeypatch.setattr(core_module, "classify_replaced",
                        lambda dropped, snap_index, snap_term, commit_index: (
                            [e for e in dropped if e.index > commit_index], []))
    found = first_failing_seed(SimConfig(snapshots=True), 100)
    assert found is not None, "the simulator missed committed entries saved as rolled back"
    assert "as rolled back" in found[1], found[1]


def test_finds_a_session_table_that_is_not_replicated(monkeypatch):
    """Retryable writes whose session record stays on the leader: after a failover a retried
    INCR runs twice (and the replicas' session tables differ)."""
    import replikv.node as node_module

    encode_command, encode_effects = (node_module.encode_command_entry,
                                      node_module.encode_effects_entry)
    monkeypatch.setattr(node_module, "encode_command_entry",
                        lambda argv, t, seed=0, session=None: encode_command(argv, t, seed))
    monkeypatch.setattr(node_module, "encode_effects_entry",
                        lambda effects, t, session=None: encode_effects(effects, t))
    found = first_failing_seed(SimConfig(), 100)
    assert found is not None, "the simulator missed an unreplicated session table"
    assert "digests differ" in found[1] or "exactly-once" in found[1]


def test_finds_replicas_that_apply_part_of_a_transaction(monkeypatch):
    """Active replicas that skip a transaction's second command when they replay it (the
    leader, recording, runs it): the side key's counts diverge."""
    original = KVState.run_transaction

    def skip_the_second(self: KVState, commands, time_ms):
        if self._recording is None:
            commands = commands[:1]
            return [*original(self, commands, time_ms), None]
        return original(self, commands, time_ms)

    monkeypatch.setattr(KVState, "run_transaction", skip_the_second)
    found = first_failing_seed(SimConfig(replication="active", transactions=True), 20)
    assert found is not None, "the simulator missed replicas applying half a transaction"


def test_finds_a_pipelines_reads_answered_out_of_place(monkeypatch):
    """A batch of a pipeline's reads (EXEC-READS) that answers its reads in the wrong order:
    the operation gets the side key's value, which the checker finds impossible."""
    from replikv.commands import COMMANDS, transactions

    original = transactions.run_reads

    def reversed_replies(state, parsed, time_ms):
        return original(state, parsed, time_ms)[::-1]

    spec = COMMANDS["exec-reads"]
    monkeypatch.setitem(COMMANDS, "exec-reads", dataclasses.replace(spec, run=reversed_replies))
    found = first_failing_seed(SimConfig(transactions=True), 20)
    assert found is not None, "the simulator missed reads answered out of place"
