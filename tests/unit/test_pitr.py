"""Point-in-time recovery: a backup plus the archived log gives the state the replicas had.

A three-node cluster (the node harness: the real node cores, in both replication modes) runs a
workload of strings, sets, expiry, SPOP, retryable writes, membership changes, a DEL and a
FLUSHALL. At checkpoints the leader's state digest, time and membership are recorded; a backup is
taken mid-way (a real snapshot job); the leader's log is written through a WAL with an archive
directory (rotating and compacting as it goes). Replaying the archive on top of the backup, to
an index or to a time, must give exactly what the cluster had at that point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from replikv.concerns import RequestOptions
from replikv.entries import entry_time_ms
from replikv.pitr import RecoveryError, describe_archive, find_removal, list_entries, replay
from replikv.raft.membership import Membership, is_config_entry
from replikv.raft.messages import Entry
from replikv.server.snapshots import load_snapshot
from replikv.storage.snapshot import SnapshotWriter, read_manifest, verify_snapshot
from replikv.storage.wal import WriteAheadLog
from replikv.storage.wal_archive import ArchiveOwner, list_archive

from .node_harness import Cluster

MODES = ("passive", "active")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    index: int
    digest: str  # NodeCore.digest(): keys and session table
    time_ms: int
    membership: Membership


@dataclass
class Run:
    cluster: Cluster
    leader: str
    checkpoints: dict[str, Checkpoint]
    backup: Path
    backup_index: int
    archive: Path
    entries: list  # the leader's log: Entry(index, term, data)

    def membership_at(self, index: int) -> Membership:
        return self.cluster.nodes[self.leader].raft.membership_at(index)


def settle(c: Cluster, leader: str, name: str, checkpoints: dict[str, Checkpoint]) -> None:
    c.tick(3)
    node = c.nodes[leader]
    assert node.applied_index == node.raft.commit_index, "everything applied is committed"
    checkpoints[name] = Checkpoint(name, node.applied_index, node.digest(), node.state_time_ms,
                                   node.raft.membership_at(node.applied_index))


def write_backup(c: Cluster, leader: str, directory: Path) -> tuple[Path, int]:
    """A backup as the runtime writes one (SnapshotRuntime._write), from a real snapshot job."""
    node = c.nodes[leader]
    job = node.start_snapshot(force=True)
    assert job is not None
    manifest = {"index": job.index, "term": job.term, "created_ms": 1, "node_id": leader,
                "cluster_id": "pitr-test", "replication_mode": c.replication,
                "extra": {"membership": job.membership.encode(), "time_ms": job.time_ms}}
    with SnapshotWriter(directory, manifest) as writer:
        while (batch := job.cursor.next_batch(7)) is not None:
            writer.add_batch(batch)
        writer.add_section("sessions", job.sessions)
        info = writer.finish(state_digest=job.cursor.state_digest())
    job.cursor.close()
    return info.path, job.index


def archive_log(entries: list, wal_dir: Path, archive: Path, *, drop_every: int = 4,
                owner: ArchiveOwner | None = None) -> None:
    """Write the log through a WAL with an archive, in small batches with tiny segments, and
    compact it now and then, as a node would."""
    wal, _ = WriteAheadLog.open(wal_dir, segment_bytes=100, archive_dir=archive,
                                archive_owner=owner)
    for start in range(0, len(entries), 3):
        wal.append([(e.index, e.term, e.data) for e in entries[start:start + 3]])
        wal.sync()
        if start // 3 % drop_every == drop_every - 1:
            wal.drop_segments_through(entries[start].index - 2)
    wal.close()


def run_workload(tmp_path: Path, replication: str) -> Run:
    c = Cluster(replication=replication, seed=7)
    c.down.add("n4")  # a member that is added and removed, and never runs
    leader = c.elect()
    cps: dict[str, Checkpoint] = {}

    def call(*argv: str, **kwargs) -> object:
        reply = c.call(leader, *argv, **kwargs)
        c.tick()  # each write at a later time, so a time can fall between two
        return reply

    call("SET", "a", "1")
    call("SET", "b", "2", "PX", "2500")
    call("SADD", "s", "x", "y", "z", "w")
    call("MSET", "m1", "v1", "m2", "v2")
    settle(c, leader, "before-backup", cps)
    backup, backup_index = write_backup(c, leader, tmp_path / "backups")
    call("INCR", "n")
    call("SREM", "s", "x")
    call("SPOP", "s")
    settle(c, leader, "after-spop", cps)
    s1 = RequestOptions(session=b"client-1", seq=1)
    assert call("SET", "sk", "one", options=s1) is not None
    call("SET", "sk", "two", options=RequestOptions(session=b"client-1", seq=2))
    call("SET", "sk", "two", options=RequestOptions(session=b"client-1", seq=2))  # a retry
    settle(c, leader, "sessions", cps)
    settle(c, leader, "b-alive", cps)
    c.tick(60)  # b's time to live runs out: the leader logs its expiry
    settle(c, leader, "expired", cps)
    call("REPLIKV", "MEMBER", "ADD", "n4", "PEER", "127.0.0.1:9")
    call("SET", "c", "3")
    settle(c, leader, "n4-added", cps)
    call("DEL", "a")
    call("SET", "e", "5")
    settle(c, leader, "before-flush", cps)
    call("FLUSHALL")
    settle(c, leader, "flushed", cps)
    call("REPLIKV", "MEMBER", "REMOVE", "n4")
    call("SET", "d", "4")
    call("SADD", "last", "only")
    settle(c, leader, "last-added", cps)
    call("SPOP", "last")  # removes the key: its last member
    call("SET", "r1", "x")
    settle(c, leader, "r1-set", cps)
    call("RENAME", "r1", "r2")  # removes r1
    settle(c, leader, "end", cps)
    assert cps["expired"].index > cps["b-alive"].index, "the expiry was logged"
    assert cps["expired"].digest != cps["b-alive"].digest, "the expiry changed the state"
    entries = list(c.disks[leader].entries)
    assert entries[-1].index == cps["end"].index
    archive = tmp_path / "archive"
    archive_log(entries, tmp_path / "wal", archive)
    return Run(c, leader, cps, backup, backup_index, archive, entries)


@pytest.fixture(params=MODES)
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Run:
    return run_workload(tmp_path, request.param)


def loaded(path: Path) -> tuple[str, int, Membership, int, int]:
    """(digest as NodeCore.digest gives it, state time, membership, index, term)."""
    info = verify_snapshot(path)
    meta, state, time_ms, sessions = load_snapshot(read_manifest(path))
    assert info.state_digest == state.digest()
    return f"{state.digest()}/{sessions.digest()}", time_ms, meta.membership, meta.index, meta.term


# Replaying to an index or a time ---------------------------------------------------------------


def test_replay_to_an_index_gives_the_state_the_cluster_had(run: Run, tmp_path: Path) -> None:
    for name, cp in run.checkpoints.items():
        if cp.index < run.backup_index:
            continue
        out = tmp_path / "out" / name
        result = replay(run.backup, run.archive, until_index=cp.index, out_dir=out)
        assert (result.snapshot.index, result.backup_index) == (cp.index, run.backup_index)
        assert result.entries_applied == cp.index - run.backup_index
        digest, time_ms, membership, index, term = loaded(result.snapshot.path)
        assert digest == cp.digest, name
        assert (time_ms, result.time_ms) == (cp.time_ms, cp.time_ms), name
        assert membership == cp.membership == result.membership, name
        assert (index, term) == (cp.index, run.entries[cp.index - 1].term)
        if cp.index < run.entries[-1].index:
            assert result.next_entry is not None and result.next_entry.index == cp.index + 1
        else:
            assert result.next_entry is None
        manifest = read_manifest(result.snapshot.path).manifest
        assert manifest["cluster_id"] == "pitr-test"
        assert manifest["replication_mode"] == run.cluster.replication
        assert manifest["extra"]["replayed"]["backup_index"] == run.backup_index


def test_the_membership_follows_the_config_entries(run: Run, tmp_path: Path) -> None:
    added = run.checkpoints["n4-added"]
    assert "n4" not in run.checkpoints["expired"].membership.learners
    assert "n4" in added.membership.learners
    assert "n4" not in run.checkpoints["end"].membership.members
    config_indexes = [e.index for e in run.entries if is_config_entry(e.data)]
    for index in config_indexes:
        result = replay(run.backup, run.archive, until_index=index, out_dir=tmp_path / str(index))
        assert result.membership == run.membership_at(index)


def test_replay_to_a_time_stops_before_the_first_later_entry(run: Run, tmp_path: Path) -> None:
    for name, cp in run.checkpoints.items():
        if cp.index < run.backup_index or name == "end":
            continue
        # Every entry after a checkpoint was written at least a tick later than its state time;
        # membership changes and no-ops carry no time and never stop a replay.
        expected_index = cp.index
        for e in run.entries[cp.index:]:
            if entry_time_ms(e.data) is not None:
                assert entry_time_ms(e.data) > cp.time_ms
                break
            expected_index = e.index
        for until_time_ms in (cp.time_ms, cp.time_ms + 1):
            out = tmp_path / f"{name}-{until_time_ms}"
            result = replay(run.backup, run.archive, until_time_ms=until_time_ms, out_dir=out)
            digest, time_ms, membership, index, _term = loaded(result.snapshot.path)
            assert (index, digest, time_ms) == (expected_index, cp.digest, cp.time_ms), name
            assert membership == run.membership_at(expected_index)
            assert result.next_entry is not None
            assert result.next_entry.time_ms is not None
            assert result.next_entry.time_ms > until_time_ms


def test_recover_to_just_before_the_flushall(run: Run, tmp_path: Path) -> None:
    before = run.checkpoints["before-flush"]
    flush = find_removal(run.archive, after_index=run.backup_index)
    assert flush is not None and flush.index == before.index + 1
    assert flush.text.lower() == "flushall"
    result = replay(run.backup, run.archive, until_index=flush.recover_until_index,
                    out_dir=tmp_path / "out")
    digest, *_ = loaded(result.snapshot.path)
    assert digest == before.digest
    _meta, state, time_ms, _sessions = load_snapshot(read_manifest(result.snapshot.path))
    assert state.get(b"e", time_ms) == b"5"
    assert state.get(b"c", time_ms) == b"3"
    # After the flush, from the same backup, the keys are gone, as on every replica.
    flushed = replay(run.backup, run.archive, until_index=flush.index, out_dir=tmp_path / "f")
    _meta, state, time_ms, _sessions = load_snapshot(read_manifest(flushed.snapshot.path))
    assert state.key_count() == 0


def test_find_the_deletion_of_one_key(run: Run) -> None:
    deleted = find_removal(run.archive, key=b"a", after_index=run.backup_index)
    assert deleted is not None
    assert deleted.index == run.checkpoints["n4-added"].index + 1  # DEL a
    assert deleted.text.lower() == 'del "a"'  # the command (active) or its effect (passive)
    expired = find_removal(run.archive, key=b"b")
    assert expired is not None
    assert run.checkpoints["b-alive"].index < expired.index <= run.checkpoints["expired"].index
    # A FLUSHALL removes every key. Of a key no earlier entry wrote, it is still the answer
    # (the key may be older than the archive), marked so.
    flush = find_removal(run.archive)
    assert flush is not None and flush.key_written_before is None
    never = find_removal(run.archive, key=b"never-written")
    assert never == dataclasses.replace(flush, key_written_before=False)
    assert find_removal(run.archive, key=b"e") == dataclasses.replace(flush,
                                                                     key_written_before=True)
    # Written before it, then deleted, then looked for after the deletion: still written.
    assert find_removal(run.archive, key=b"a", after_index=deleted.index
                        ).key_written_before is True  # type: ignore[union-attr]
    late = find_removal(run.archive, key=b"a", after_time_ms=run.checkpoints["end"].time_ms)
    assert late is None


def test_with_the_backup_any_removal_of_a_key_is_found(run: Run) -> None:
    # Replayed on the backup's state, whatever removed the key: here an SPOP of its last
    # member and a RENAME, which the log's commands (active mode) do not show as removals.
    for key, before in ((b"last", "last-added"), (b"r1", "r1-set")):
        found = find_removal(run.archive, key=key, backup=run.backup)
        assert found is not None and found.index == run.checkpoints[before].index + 1, key
        assert found.recover_until_index == run.checkpoints[before].index
    spop = find_removal(run.archive, key=b"last", backup=run.backup)
    assert spop is not None and spop.text.lower().startswith(
        "spop" if run.cluster.replication == "active" else "del")
    after_flush = run.checkpoints["flushed"].index
    if run.cluster.replication == "active":
        assert find_removal(run.archive, key=b"last", after_index=after_flush) is None, \
            "the command alone cannot tell"
    else:
        # Its effect is a deletion.
        assert find_removal(run.archive, key=b"last", after_index=after_flush) == spop
    # The same answers as the log's own for DEL, expiry and FLUSHALL (the replay knows the
    # key existed: it leaves key_written_before unset).
    for key in (b"a", b"b", b"e"):
        from_log = find_removal(run.archive, key=key, after_index=run.backup_index)
        assert from_log is not None
        assert find_removal(run.archive, key=key, backup=run.backup) == dataclasses.replace(
            from_log, key_written_before=None), key
    assert find_removal(run.archive, key=b"never-written", backup=run.backup) is None
    with pytest.raises(ValueError, match="give the key"):
        find_removal(run.archive, backup=run.backup)
    # after_index and after_time_ms skip earlier removals.
    popped = run.checkpoints["last-added"].index + 1
    assert find_removal(run.archive, key=b"last", backup=run.backup, after_index=popped) is None
    assert find_removal(run.archive, key=b"a", backup=run.backup,
                        after_time_ms=run.checkpoints["end"].time_ms) is None
    assert find_removal(run.archive, key=b"e", backup=run.backup,
                        after_time_ms=run.checkpoints["before-flush"].time_ms) is not None


def test_describe_archive(run: Run) -> None:
    coverage = describe_archive(run.archive)
    timed = [entry_time_ms(e.data) for e in run.entries if entry_time_ms(e.data) is not None]
    assert (coverage.first_index, coverage.last_index) == (1, run.entries[-1].index)
    assert (coverage.first_time_ms, coverage.last_time_ms) == (timed[0], timed[-1])
    assert coverage.runs == ((1, run.entries[-1].index),)
    assert coverage.copies == len(list_archive(run.archive)) > 3
    assert coverage.as_json()["runs"] == [[1, run.entries[-1].index]]
    shown = list_entries(run.archive, first_index=run.backup_index + 1,
                         last_index=run.backup_index + 3)
    assert [e.index for e in shown] == [run.backup_index + 1, run.backup_index + 2,
                                        run.backup_index + 3]
    assert all(e.text for e in shown)


# Refusals: nothing guessed, nothing written --------------------------------------------------


def assert_refused(run: Run, tmp_path: Path, match: str, **until: int) -> None:
    out = tmp_path / "refused"
    with pytest.raises(RecoveryError, match=match):
        replay(run.backup, run.archive, out_dir=out, **until)
    assert not out.exists() or not any(out.iterdir())


def test_a_gap_after_the_backup_is_refused(run: Run, tmp_path: Path) -> None:
    end = run.checkpoints["end"].index
    middle = [c for c in list_archive(run.archive)
              if run.backup_index + 2 < c.first_index and c.last_index < end - 2]
    assert middle
    for copy in middle[:1]:
        copy.path.unlink()
    missing_from = middle[0].first_index
    assert_refused(run, tmp_path, "lacks entries", until_index=end)
    assert_refused(run, tmp_path, "lacks entries",
                   until_time_ms=run.checkpoints["end"].time_ms - 1)
    # Short of the gap, the archive is still good.
    result = replay(run.backup, run.archive, until_index=missing_from - 1, out_dir=tmp_path / "ok")
    assert result.snapshot.index == missing_from - 1
    coverage = describe_archive(run.archive)
    assert len(coverage.runs) == 2 and coverage.runs[0][1] == missing_from - 1


def test_targets_out_of_reach_are_refused(run: Run, tmp_path: Path) -> None:
    end = run.checkpoints["end"]
    backup = run.checkpoints["before-backup"]
    assert_refused(run, tmp_path, "ends at index", until_index=end.index + 5)
    assert_refused(run, tmp_path, "after the requested index", until_index=run.backup_index - 1)
    assert_refused(run, tmp_path, "without an entry after the requested time",
                   until_time_ms=end.time_ms + 60_000)
    assert_refused(run, tmp_path, "after the requested time", until_time_ms=backup.time_ms - 1)
    with pytest.raises(ValueError, match="exactly one"):
        replay(run.backup, run.archive, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="exactly one"):
        replay(run.backup, run.archive, out_dir=tmp_path / "x", until_index=5, until_time_ms=5)


def test_an_archive_of_another_history_is_refused(run: Run, tmp_path: Path) -> None:
    other = tmp_path / "other-archive"
    foreign = [Entry(e.index, e.term + 9, e.data) for e in run.entries]
    archive_log(foreign, tmp_path / "other-wal", other)
    with pytest.raises(RecoveryError, match="different histories"):
        replay(run.backup, other, until_index=run.checkpoints["end"].index,
               out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_archive_of_another_cluster_is_refused_even_with_the_same_entries(
        run: Run, tmp_path: Path) -> None:
    # Two local clusters of n1, n2, n3 can write the very same indexes and terms; only the
    # archive's owner tells them apart.
    end = run.checkpoints["end"].index
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    archive_log(run.entries, tmp_path / "wal-1", theirs, owner=ArchiveOwner("other", "n1"))
    with pytest.raises(RecoveryError, match=r"is the log of node n1 of cluster other, and "
                                            r"backup .* is of cluster pitr-test"):
        replay(run.backup, theirs, until_index=end, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    archive_log(run.entries, tmp_path / "wal-2", ours, owner=ArchiveOwner("pitr-test", "n2"))
    assert replay(run.backup, ours, until_index=end,
                  out_dir=tmp_path / "out").snapshot.index == end
    assert describe_archive(ours).as_json()["cluster_id"] == "pitr-test"
    assert describe_archive(run.archive).owner is None  # an archive from before owners


def test_replay_to_the_backup_itself(run: Run, tmp_path: Path) -> None:
    result = replay(run.backup, run.archive, until_index=run.backup_index, out_dir=tmp_path / "o")
    digest, *_ = loaded(result.snapshot.path)
    assert digest == run.checkpoints["before-backup"].digest
    assert result.entries_applied == 0


def test_the_commands_say_what_to_do_when_the_archive_falls_short(run: Run,
                                                                  tmp_path: Path) -> None:
    """`archive find` with nothing found, and `restore --until` past the archive's end, point
    at the likely cause (a running node's open segment is not archived yet) and at `archive
    info`; the refused restore leaves no directory it made behind."""
    from click.testing import CliRunner

    from replikv.cli import main

    runner = CliRunner()
    end = run.checkpoints["end"]
    found = runner.invoke(main, ["archive", "find", str(run.archive),
                                 "--after-index", str(end.index)])
    assert found.exit_code == 1
    assert "no FLUSHALL after index" in found.output and "stops cleanly" in found.output
    target = tmp_path / "new" / "cluster" / "n1"
    refused = runner.invoke(main, [
        "restore", "--from", str(run.backup), "--archive", str(run.archive),
        "--until", str(end.index + 5), "--data-dir", str(target), "--node-id", "n1",
        "--peers", "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"])
    assert refused.exit_code == 1
    assert "ends at index" in refused.output and "archive info" in refused.output
    assert not (tmp_path / "new").exists()


def test_archive_find_of_a_key_no_entry_wrote_says_the_flush_may_not_concern_it(
        run: Run) -> None:
    from click.testing import CliRunner

    from replikv.cli import main

    never = CliRunner().invoke(main, ["archive", "find", str(run.archive), "--key", "ghost"])
    assert never.exit_code == 0, never.output
    assert "flushall" in never.output.lower()
    assert "no entry of the archive before it writes 'ghost'" in never.output
    written = CliRunner().invoke(main, ["archive", "find", str(run.archive), "--key", "e"])
    assert written.exit_code == 0 and "no entry of the archive" not in written.output
