"""The write-ahead log's normal life: append, override, rotate, sync, drop, reopen.

Crash recovery (torn tails and corruption) is in test_storage_wal_recovery.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replikv.invariants import InvariantViolation
from replikv.storage import StorageError, WriteAheadLog

from .fsync_recorder import record_fsyncs
from .wal_files import records_end


def batch(first_index: int, count: int, term: int = 1, size_bytes: int = 10) -> list:
    return [
        (index, term, f"{index}:{term}:".encode().ljust(size_bytes, b"."))
        for index in range(first_index, first_index + count)
    ]


def segment_names(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".wal"))


def reopen(directory: Path, **kwargs) -> tuple[WriteAheadLog, list]:
    return WriteAheadLog.open(directory, **kwargs)


# Round trips -------------------------------------------------------------------------------------


def test_empty_directory_is_created_and_opens_empty(tmp_path: Path) -> None:
    wal, entries = WriteAheadLog.open(tmp_path / "a" / "wal")
    assert entries == []
    assert (wal.first_index, wal.last_index) == (0, 0)
    assert (tmp_path / "a" / "wal").is_dir()
    wal.sync()  # nothing to do, but must not fail
    wal.close()
    assert segment_names(tmp_path / "a" / "wal") == []


def test_round_trip_across_many_segments(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    expected = []
    for first_index in range(1, 60, 3):
        entries = batch(first_index, 3, term=first_index // 10 + 1)
        wal.append(entries)
        expected += entries
    wal.sync()
    wal.close()

    names = segment_names(tmp_path)
    assert len(names) > 3, "tiny segments should have rotated several times"
    reopened, entries = WriteAheadLog.open(tmp_path, segment_bytes=200)
    assert entries == expected
    assert (reopened.first_index, reopened.last_index) == (1, 60)
    # Each segment is named after the first index written in it, so name order is log order.
    first_indexes = [int(name.removesuffix(".wal")) for name in names]
    assert first_indexes[0] == 1
    assert first_indexes == sorted(first_indexes)
    assert all((index - 1) % 3 == 0 for index in first_indexes), "names are batch starts"


def test_appending_after_reopen_continues_the_log(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=150)
    wal.append(batch(1, 5))
    wal.sync()
    wal.close()
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=150)
    wal.append(batch(6, 5))
    wal.sync()
    wal.close()
    _, entries = WriteAheadLog.open(tmp_path, segment_bytes=150)
    assert entries == batch(1, 10)


def test_first_record_of_empty_log_may_start_anywhere(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(101, 2))
    assert (wal.first_index, wal.last_index) == (101, 102)
    wal.sync()
    wal.close()
    assert segment_names(tmp_path) == [f"{101:020d}.wal"]
    reopened, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(101, 2)
    assert (reopened.first_index, reopened.last_index) == (101, 102)


def test_close_does_not_lose_written_records(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(1, 2))
    wal.close()
    wal.close()  # idempotent
    _, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 2)


def test_use_after_close_is_a_bug(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.close()
    with pytest.raises(InvariantViolation, match="after close"):
        wal.append(batch(1, 1))


# Override (Raft truncating a conflicting suffix) ---------------------------------------------------


def test_override_replaces_suffix_within_a_segment(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(1, 5, term=1))
    wal.append(batch(3, 2, term=2))
    assert wal.last_index == 4
    wal.append(batch(5, 1, term=2))
    wal.sync()
    wal.close()
    _, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 2, term=1) + batch(3, 3, term=2)


def test_override_reaching_back_across_segment_boundaries(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=120)
    for first_index in range(1, 31, 3):
        wal.append(batch(first_index, 3, term=1))
    names_before = segment_names(tmp_path)
    assert len(names_before) >= 3
    # Override from inside the first segment: the later segments' entries are all superseded.
    wal.append(batch(2, 2, term=5))
    assert (wal.first_index, wal.last_index) == (1, 3)
    wal.append(batch(4, 3, term=5))
    wal.sync()
    wal.close()

    reopened, entries = WriteAheadLog.open(tmp_path, segment_bytes=120)
    assert entries == batch(1, 1, term=1) + batch(2, 5, term=5)
    assert reopened.last_index == 6
    # A segment is only started for a batch above the current segment's name, so names never
    # go backwards (and never collide) even though the log went back to index 2.
    names_after = segment_names(tmp_path)
    indexes = [int(name.removesuffix(".wal")) for name in names_after]
    assert indexes == sorted(set(indexes))
    reopened.append(batch(7, 1, term=5))
    reopened.sync()
    reopened.close()
    _, entries = WriteAheadLog.open(tmp_path, segment_bytes=120)
    assert entries == batch(1, 1, term=1) + batch(2, 6, term=5)


def test_override_at_or_below_first_index_replaces_the_whole_log(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(10, 3, term=1))
    wal.append(batch(10, 1, term=2))
    assert (wal.first_index, wal.last_index) == (10, 10)
    wal.append(batch(4, 2, term=3))
    assert (wal.first_index, wal.last_index) == (4, 5)
    wal.sync()
    wal.close()
    reopened, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(4, 2, term=3)
    assert (reopened.first_index, reopened.last_index) == (4, 5)


# Invariants on what goes to disk ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "empty batch"),
        ([(0, 1, b"x")], "not >= 1"),
        ([(4, 1, b"x")], "gap after last index 2"),
        ([(3, 1, b"x"), (5, 1, b"y")], "not contiguous"),
        ([(3, 1, b"x"), (3, 1, b"y")], "not contiguous"),
        ([(3, -1, b"x")], "term"),
        ([(3, True, b"x")], "term"),
        ([(3, 1, "text")], "data is str"),
        ([(3, 1, bytearray(b"x"))], "data is bytearray"),
    ],
)
def test_append_rejects_malformed_batches_without_writing(
    tmp_path: Path, entries: list, message: str
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(1, 2))
    wal.sync()
    (segment,) = segment_names(tmp_path)
    bytes_before = (tmp_path / segment).read_bytes()
    with pytest.raises(InvariantViolation, match=message):
        wal.append(entries)
    assert (tmp_path / segment).read_bytes() == bytes_before
    assert wal.last_index == 2
    wal.append(batch(3, 1))  # still usable: nothing half-written
    wal.close()
    assert WriteAheadLog.open(tmp_path)[1] == batch(1, 3)


def test_append_refuses_a_record_it_could_not_read_back(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, max_record_bytes=1000)
    wal.append(batch(1, 1, size_bytes=900))
    with pytest.raises(InvariantViolation, match="record limit"):
        wal.append(batch(2, 1, size_bytes=1000))
    wal.close()


# Writing --------------------------------------------------------------------------------------------


def test_a_batch_is_one_write_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(1, 1))
    writes = []
    real_pwrite = os.pwrite

    def counting_pwrite(fd: int, data, offset: int) -> int:
        writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    wal.append(batch(2, 100, size_bytes=100))
    assert len(writes) == 1
    assert writes[0] > 100 * 100
    wal.close()


def test_partial_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwrite = os.pwrite
    calls = []

    def short_pwrite(fd: int, data, offset: int) -> int:
        calls.append(offset)
        return real_pwrite(fd, bytes(data[:7]), offset)

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    for first_index in range(1, 20, 4):
        wal.append(batch(first_index, 4))
    wal.sync()
    wal.close()
    monkeypatch.undo()
    assert len(calls) > 20  # every record took several 7-byte writes
    assert WriteAheadLog.open(tmp_path, segment_bytes=100)[1] == batch(1, 20)


def test_failed_write_makes_the_log_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(1, 1))

    def failing_pwrite(fd: int, data, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(OSError, match="No space"):
        wal.append(batch(2, 1))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="unusable after an earlier I/O error"):
        wal.append(batch(2, 1))
    with pytest.raises(StorageError, match="unusable"):
        wal.sync()
    wal.close()


def test_failed_fsync_makes_the_log_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a failed fsync the kernel may have dropped the dirty pages; retrying would "succeed"
    # without the data ever reaching disk, so the log must refuse to carry on.
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(batch(1, 1))

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(os, "fdatasync", failing_fsync)  # what the log's sync uses
    with pytest.raises(OSError):
        wal.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="unusable"):
        wal.sync()
    wal.close()


@pytest.mark.parametrize("failing", ["fdatasync", "pwrite"])
def test_a_failed_fsync_or_write_leaves_only_what_was_durable_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A restart after a failed fsync must not take the records the page cache still holds
    for durable (the cache outlives the process; Linux may keep pages whose writeback failed):
    the failing log cuts its segment back to the last durable byte, and a start reads the
    segments past the cache. Entries 1-3 were synced; 4-5 were not when the sync failed."""
    wal, _ = WriteAheadLog.open(tmp_path, preallocate_bytes=4096)
    wal.append(batch(1, 3))
    wal.sync()
    (segment,) = tmp_path.glob("*.wal")
    durable = records_end(segment)
    wal.append(batch(4, 2))
    dropped: list[int] = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        dropped.append(advice)
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)

    def failing_call(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, failing_call)
    with pytest.raises(OSError):
        if failing == "fdatasync":
            wal.sync()
        else:
            wal.append(batch(6, 1))
    monkeypatch.undo()
    assert segment.stat().st_size == durable, "the unsynced records are still in the file"
    wal.close()
    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    dropped.clear()
    reopened, entries = WriteAheadLog.open(tmp_path)
    assert entries == batch(1, 3)
    assert os.POSIX_FADV_DONTNEED in dropped  # a start reads the segment from the disk
    reopened.close()


# fsync accounting -------------------------------------------------------------------------------


class FsyncRecorder:
    """Which file each os.fsync / os.fdatasync call was for, by name relative to the log
    directory ("<dir>" for the directory itself)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self._paths = record_fsyncs(monkeypatch)
        self._directory = directory.resolve()

    def take(self) -> list[str]:
        paths, self._paths[:] = list(self._paths), []
        return ["<dir>" if Path(p) == self._directory else Path(p).name for p in paths]


def test_many_appends_then_one_sync_is_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    fsyncs = FsyncRecorder(monkeypatch, tmp_path)
    wal.append(batch(1, 1))
    wal.sync()
    # The first segment is a new file: its directory entry must be made durable too.
    assert fsyncs.take() == [f"{1:020d}.wal", "<dir>"]

    for first_index in range(2, 12):
        wal.append(batch(first_index, 1))
    assert fsyncs.take() == [], "append alone must not fsync"
    wal.sync()
    assert fsyncs.take() == [f"{1:020d}.wal"]
    wal.sync()
    assert fsyncs.take() == [], "nothing new to make durable"
    wal.close()


def test_rotation_fsyncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    wal.append(batch(1, 5, size_bytes=20))  # fills the first segment past 100 bytes
    wal.sync()
    fsyncs = FsyncRecorder(monkeypatch, tmp_path)
    wal.append(batch(6, 1))
    wal.append(batch(7, 1))
    assert fsyncs.take() == [], "the outgoing segment was already synced"
    wal.sync()
    assert fsyncs.take() == [f"{6:020d}.wal", "<dir>"]
    wal.close()


def test_rotation_first_makes_the_outgoing_segment_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rotation is a sync point so that only the last segment can ever hold a torn record.
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    fsyncs = FsyncRecorder(monkeypatch, tmp_path)
    wal.append(batch(1, 5, size_bytes=20))  # past 100 bytes: the next batch rotates
    wal.append(batch(6, 1))
    assert fsyncs.take() == [f"{1:020d}.wal", "<dir>"]
    wal.sync()
    assert fsyncs.take() == [f"{6:020d}.wal", "<dir>"]
    wal.close()


# Dropping old segments --------------------------------------------------------------------------


def test_drop_segments_through_deletes_only_whole_old_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    for first_index in range(1, 41, 5):
        wal.append(batch(first_index, 5))
    wal.sync()
    names = segment_names(tmp_path)
    starts = [int(name.removesuffix(".wal")) for name in names]
    assert len(starts) >= 4

    assert wal.drop_segments_through(starts[1] - 2) == 0, "first segment still holds that entry"
    fsyncs = FsyncRecorder(monkeypatch, tmp_path)
    assert wal.drop_segments_through(starts[2] - 1) == 2
    assert fsyncs.take() == ["<dir>", "<dir>"]
    assert segment_names(tmp_path) == names[2:]
    assert wal.first_index == starts[2]
    assert wal.last_index == 40

    # The current (last) segment is never dropped, whatever the index.
    assert wal.drop_segments_through(10_000) == len(names) - 3
    assert segment_names(tmp_path) == names[-1:]
    assert wal.first_index == starts[-1]
    wal.append(batch(41, 1))
    wal.sync()
    wal.close()
    reopened, entries = WriteAheadLog.open(tmp_path, segment_bytes=100)
    assert entries == batch(starts[-1], 42 - starts[-1])
    assert reopened.first_index == starts[-1]


def test_drop_keeps_a_segment_whose_overridden_entries_are_above_the_index(
    tmp_path: Path,
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    wal.append(batch(1, 10, term=1))  # segment 1: 1..10
    wal.append(batch(11, 2, term=1))  # segment 11: 11..12
    wal.append(batch(5, 4, term=2))  # override goes in segment 11: log is 1..8
    wal.append(batch(9, 8, term=2))  # log 1..16, still segment 11 (override stays)
    wal.append(batch(17, 1, term=2))  # segment 17
    assert len(segment_names(tmp_path)) == 3
    # Segment 1 physically holds index 10, above 8, so it must stay.
    assert wal.drop_segments_through(8) == 0
    # Through 10: segment 1 goes; segment 11's records still rebuild 5..17 on their own.
    assert wal.drop_segments_through(10) == 1
    assert wal.first_index == 5
    wal.sync()
    wal.close()
    reopened, entries = WriteAheadLog.open(tmp_path, segment_bytes=100)
    assert entries == batch(5, 13, term=2)
    assert (reopened.first_index, reopened.last_index) == (5, 17)


# A model-based check of everything together, with crashes --------------------------------------


@st.composite
def entry_data(draw) -> bytes:
    return draw(st.binary(min_size=0, max_size=40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    segment_bytes=st.integers(min_value=40, max_value=400),
    preallocate_bytes=st.sampled_from([0, 64, 4 << 20]),
)
def test_log_matches_a_model_through_appends_drops_reopens_and_crashes(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    segment_bytes: int,
    preallocate_bytes: int,
) -> None:
    directory = tmp_path_factory.mktemp("wal")
    options = {"segment_bytes": segment_bytes, "preallocate_bytes": preallocate_bytes}
    wal, _ = WriteAheadLog.open(directory, **options)
    model: list = []  # the log as the WAL should present it
    compacted_through = 0  # highest index passed to drop_segments_through
    term = 0
    # For crash simulation: the state and the current segment's size at the last sync and after
    # every append since, so a cut anywhere in unsynced bytes maps to an expected log.
    synced: tuple[str | None, int, list] = (None, 0, [])
    history: list[tuple[str, int, list]] = []

    def current_segment() -> tuple[str | None, int]:
        names = segment_names(directory)
        if not names:
            return None, 0
        return names[-1], records_end(directory / names[-1])

    def check_reopened(reopened: WriteAheadLog, entries: list, expected: list) -> None:
        if compacted_through == 0:
            assert entries == expected
        else:
            # Dropping declared the entries up to compacted_through disposable (a snapshot holds
            # them), so what comes back is a suffix of the expected log holding at least
            # everything above that point.
            assert entries == expected[len(expected) - len(entries) :]
            assert len(entries) >= sum(1 for entry in expected if entry[0] > compacted_through)
        assert reopened.first_index == (entries[0][0] if entries else 0)
        assert reopened.last_index == (entries[-1][0] if entries else 0)

    for _ in range(data.draw(st.integers(min_value=1, max_value=25), label="steps")):
        action = data.draw(
            st.sampled_from(["append", "append", "append", "sync", "drop", "reopen", "crash"])
        )
        if action == "append":
            last_index = wal.last_index
            if last_index == 0:
                first_index = data.draw(st.integers(min_value=1, max_value=5))
            else:
                back = data.draw(st.one_of(st.just(0), st.integers(0, last_index)))
                first_index = max(1, last_index + 1 - back)
            count = data.draw(st.integers(min_value=1, max_value=4))
            # A fresh term per batch, so an override that was ignored cannot go unnoticed.
            term += 1
            entries = [
                (first_index + offset, term, data.draw(entry_data())) for offset in range(count)
            ]
            wal.append(entries)
            if model and first_index > model[0][0]:
                model = model[: first_index - model[0][0]]
            else:
                model = []
            model = model + entries
            history.append((*current_segment(), list(model)))
        elif action == "sync":
            wal.sync()
            synced = (*current_segment(), list(model))
            history = []
        elif action == "drop":
            if not model:
                continue
            index = data.draw(st.integers(model[0][0] - 1, model[-1][0] + 1))
            must_keep = [entry for entry in model if entry[0] > index]
            wal.drop_segments_through(index)
            compacted_through = max(compacted_through, index)
            if must_keep:
                assert wal.first_index <= must_keep[0][0]
            model = [entry for entry in model if entry[0] >= wal.first_index]
            history = [
                (name, size, [e for e in state if e[0] >= wal.first_index])
                for name, size, state in history
            ]
            synced = (synced[0], synced[1], [e for e in synced[2] if e[0] >= wal.first_index])
        elif action == "reopen":
            wal.sync()
            wal.close()
            wal, entries = WriteAheadLog.open(directory, **options)
            check_reopened(wal, entries, model)
            synced, history = (*current_segment(), list(model)), []
        else:  # crash: lose an arbitrary suffix of what was written since the last sync
            name, size = current_segment()
            file_size = (directory / name).stat().st_size if name is not None else 0
            wal.close()
            expected = model
            if name is not None:
                base = synced[1] if synced[0] == name else 0
                cut = data.draw(st.integers(min_value=base, max_value=size))
                lost = (directory / name).read_bytes()[cut:size]
                os.truncate(directory / name, cut)
                if data.draw(st.booleans(), label="the lost bytes read back as zeros"):
                    # As in preallocated space (or a file extended without its data). Lost
                    # zeros are not lost: a record ending in them may come back whole.
                    os.truncate(directory / name, max(file_size, size))
                    cut += len(lost) - len(lost.lstrip(b"\0"))
                expected = synced[2]
                for item_name, item_size, state in history:
                    if item_name != name or item_size <= cut:
                        expected = state
            wal, entries = WriteAheadLog.open(directory, **options)
            check_reopened(wal, entries, expected)
            model = entries
            synced, history = (*current_segment(), list(model)), []
    wal.sync()
    wal.close()
    reopened, entries = WriteAheadLog.open(directory, **options)
    check_reopened(reopened, entries, model)
    reopened.close()


def test_reset_deletes_every_segment_and_the_log_restarts_anywhere(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path / "wal", segment_bytes=200)
    for i in range(1, 30):
        wal.append([(i, 1, b"x" * 40)])
    wal.sync()
    assert len(list((tmp_path / "wal").iterdir())) > 1
    assert wal.reset() > 1
    assert list((tmp_path / "wal").iterdir()) == []
    wal.append([(501, 3, b"after the snapshot")])
    wal.sync()
    wal.close()
    reopened, entries = WriteAheadLog.open(tmp_path / "wal")
    assert entries == [(501, 3, b"after the snapshot")]
    assert reopened.first_index == reopened.last_index == 501
    reopened.close()
