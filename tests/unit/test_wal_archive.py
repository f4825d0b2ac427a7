"""The log archive: every segment copied before it can be lost, and read back as the log it was.

Writing: a segment is copied when it is closed (rotation), before `drop_segments_through` or
`reset` deletes it, and the durable part of the current segment at `close()`; copies are named
`generation-first-last-bytes.wal`; a failed copy is an ERROR and a count, never a failed write.
Reading: `read_archive` applies the override rule in write order, takes the longest of
overlapping copies, and reports damage as CorruptLogError without touching anything.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replikv.config import ConfigError, load_settings
from replikv.storage import CorruptLogError, StorageError, WriteAheadLog
from replikv.storage.wal import SEGMENT_HEADER, read_archive
from replikv.storage.wal_archive import (
    ArchiveOwner,
    SegmentArchiver,
    archive_file_name,
    list_archive,
    read_archive_owner,
)

from .wal_files import records_end

NAME = re.compile(r"^(\d{8})-(\d{20})-(\d{20})-(\d{12})\.wal$")


def batch(first_index: int, count: int, term: int = 1, size_bytes: int = 40) -> list:
    return [
        (index, term, f"{index}:{term}:".encode().ljust(size_bytes, b"."))
        for index in range(first_index, first_index + count)
    ]


def copies(archive: Path) -> list[tuple[int, int, int, int]]:
    """(generation, first, last, bytes) of each copy, in write order."""
    return [(c.generation, c.first_index, c.last_index, c.size_bytes) for c in list_archive(archive)]


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def open_wal(tmp_path: Path, **kwargs) -> WriteAheadLog:
    kwargs.setdefault("segment_bytes", 200)
    wal, _ = WriteAheadLog.open(tmp_path / "wal", archive_dir=tmp_path / "archive", **kwargs)
    return wal


def write(wal: WriteAheadLog, entries: list) -> None:
    wal.append(entries)
    wal.sync()


# Writing the archive -------------------------------------------------------------------------


def test_a_segment_is_archived_when_it_is_closed(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    write(wal, batch(1, 5))  # over 200 bytes: the next batch starts a new segment
    write(wal, batch(6, 5))
    assert wal.wait_for_archive()
    first = tmp_path / "wal" / f"{1:020d}.wal"
    assert copies(tmp_path / "archive") == [(1, 1, 5, first.stat().st_size)]
    archived = list_archive(tmp_path / "archive")[0].path
    assert archived.read_bytes() == first.read_bytes()
    assert archived.name == archive_file_name(1, 1, 5, first.stat().st_size)
    wal.close()


def test_close_archives_the_durable_part_of_the_current_segment(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=10_000)
    write(wal, batch(1, 3))
    durable = records_end(tmp_path / "wal" / f"{1:020d}.wal")
    wal.append(batch(4, 2))  # written, never fsynced: a power loss could still take it back
    wal.close()
    assert copies(tmp_path / "archive") == [(1, 1, 3, durable)]
    assert read_archive(tmp_path / "archive") == batch(1, 3)


def test_names_keep_every_version_of_a_segment_apart(tmp_path: Path) -> None:
    # Archived at shutdown, then again from the next run once it grew: two copies, two names.
    wal = open_wal(tmp_path, segment_bytes=10_000)
    write(wal, batch(1, 3))
    wal.close()
    wal = open_wal(tmp_path, segment_bytes=10_000)
    write(wal, batch(4, 3))
    write(wal, batch(6, 1, term=2))  # an override: the log's last index stays 6
    wal.close()
    found = copies(tmp_path / "archive")
    assert [(g, first, last) for g, first, last, _ in found] == [(1, 1, 3), (2, 1, 6)]
    assert all(NAME.match(c.path.name) for c in list_archive(tmp_path / "archive"))
    assert read_archive(tmp_path / "archive") == batch(1, 5) + batch(6, 1, term=2)


def test_drop_archives_what_it_deletes_even_if_rotation_could_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_copy = SegmentArchiver._copy
    failing = {"on": True}

    def copy(self, job):
        if failing["on"]:
            raise OSError("disk full (simulated)")
        return real_copy(self, job)

    monkeypatch.setattr(SegmentArchiver, "_copy", copy)
    wal = open_wal(tmp_path)
    with caplog.at_level(logging.ERROR, logger="replikv.storage"):
        for first in range(1, 30, 5):
            write(wal, batch(first, 5))
        assert wal.wait_for_archive()
    assert wal.archive_errors >= 1
    assert "disk full (simulated)" in wal.archive_status()["last_error"]
    assert any(r.levelno == logging.ERROR and "log archive" in r.getMessage()
               for r in caplog.records)
    assert copies(tmp_path / "archive") == []
    failing["on"] = False
    dropped = wal.drop_segments_through(15)
    assert dropped == 3
    assert read_archive(tmp_path / "archive", last_index=15) == batch(1, 15)
    write(wal, batch(31, 5))  # the log went on throughout
    wal.close()
    assert read_archive(tmp_path / "archive") == batch(1, 35)


def test_a_failed_copy_never_fails_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def copy(self, job):
        raise OSError("archive disk unplugged (simulated)")

    monkeypatch.setattr(SegmentArchiver, "_copy", copy)
    wal = open_wal(tmp_path)
    for first in range(1, 40, 5):
        write(wal, batch(first, 5))
    wal.drop_segments_through(20)
    wal.reset()
    write(wal, batch(100, 5))
    wal.close()
    assert wal.archive_errors >= 5
    _, entries = WriteAheadLog.open(tmp_path / "wal", segment_bytes=200)
    assert entries == batch(100, 5)


def test_drop_waits_for_the_copy_of_what_it_deletes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_copy = SegmentArchiver._copy

    def slow_copy(self, job):
        import time
        time.sleep(0.05)
        return real_copy(self, job)

    monkeypatch.setattr(SegmentArchiver, "_copy", slow_copy)
    wal = open_wal(tmp_path)
    for first in range(1, 30, 5):
        write(wal, batch(first, 5))
    wal.drop_segments_through(15)
    # No wait_for_archive: returning from the drop is the promise.
    assert read_archive(tmp_path / "archive", last_index=15) == batch(1, 15)
    wal.close()


def test_reset_archives_the_old_log_and_starts_a_new_generation(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    write(wal, batch(1, 10))
    write(wal, batch(11, 10))  # entries 11..20 never commit: a snapshot at 15 replaces them
    wal.reset()
    write(wal, batch(16, 10, term=3))  # the new log starts after the snapshot, below 20
    wal.close()
    found = copies(tmp_path / "archive")
    assert {g for g, *_ in found} == {1, 2}
    assert [first for g, first, *_ in found if g == 2] == [16]
    # Read in write order, the new log's first record replaces the old one's from 16 on.
    assert read_archive(tmp_path / "archive") == batch(1, 15) + batch(16, 10, term=3)


def test_segments_a_previous_run_left_unarchived_are_archived_at_open(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path / "wal", segment_bytes=200)  # archiving off
    for first in range(1, 30, 5):
        write(wal, batch(first, 5))
    wal.close()
    wal = open_wal(tmp_path)
    assert wal.wait_for_archive()
    # Every segment, the current one as it is on disk (a crashed run archived none of it).
    assert read_archive(tmp_path / "archive") == batch(1, 30)
    wal.close()
    before = copies(tmp_path / "archive")
    open_wal(tmp_path).close()  # nothing new: nothing copied twice
    assert copies(tmp_path / "archive") == before


def test_an_archive_directory_serves_one_node(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    with pytest.raises(StorageError, match="in use by another process"):
        WriteAheadLog.open(tmp_path / "other-wal", archive_dir=tmp_path / "archive")
    wal.close()
    with pytest.raises(StorageError, match="must not be inside the log directory"):
        WriteAheadLog.open(tmp_path / "wal", archive_dir=tmp_path / "wal" / "archive")


def test_an_archive_records_whose_log_it_is_and_refuses_any_other(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    mine = ArchiveOwner("replikv-aaaa", "n1")
    open_wal(tmp_path, archive_owner=mine).close()
    assert read_archive_owner(archive) == mine
    open_wal(tmp_path, archive_owner=mine).close()  # the same node again: fine
    for other, words in ((ArchiveOwner("replikv-bbbb", "n1"), "node n1 of cluster replikv-bbbb"),
                         (ArchiveOwner("replikv-aaaa", "n2"), "node n2 of cluster replikv-aaaa")):
        with pytest.raises(StorageError, match=f"holds the log of node n1 of cluster "
                                               f"replikv-aaaa, and this is {words}"):
            WriteAheadLog.open(tmp_path / "other-wal", archive_dir=archive, archive_owner=other)
    assert read_archive_owner(archive) == mine
    # The refused opening released the archive's lock.
    open_wal(tmp_path, archive_owner=mine).close()


def test_an_archive_from_before_owners_is_claimed_and_a_damaged_owner_is_refused(
        tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    wal = open_wal(tmp_path)  # no owner: as before the OWNER file existed
    write(wal, batch(1, 3))
    wal.close()
    assert read_archive_owner(archive) is None
    open_wal(tmp_path, archive_owner=ArchiveOwner("c", "n1")).close()
    assert read_archive_owner(archive) == ArchiveOwner("c", "n1")
    data = bytearray((archive / "OWNER").read_bytes())
    data[-1] ^= 0xFF
    (archive / "OWNER").write_bytes(bytes(data))
    with pytest.raises(StorageError, match="checksum mismatch.*remove it only if"):
        open_wal(tmp_path, archive_owner=ArchiveOwner("c", "n1"))


def test_the_directory_holding_per_node_archives_is_named_for_what_it_is(
        tmp_path: Path) -> None:
    for node in ("n1", "n2"):
        wal, _ = WriteAheadLog.open(tmp_path / f"wal-{node}", segment_bytes=200,
                                    archive_dir=tmp_path / "archive" / node)
        write(wal, batch(1, 3))
        wal.close()
    (tmp_path / "archive" / "notes").mkdir()
    with pytest.raises(StorageError, match=r"is not a log archive, but holds 2: n1, n2 .*"
                                           r"name one, e\.g\. .*archive/n1"):
        read_archive(tmp_path / "archive")
    assert len(read_archive(tmp_path / "archive" / "n1")) == 3
    assert list_archive(tmp_path / "archive" / "notes") == [], "an empty archive is no error"


def test_archive_dir_setting(tmp_path: Path) -> None:
    base = {"id": "n1", "data_dir": str(tmp_path / "d"), "listen": "127.0.0.1:7001",
            "peer_listen": "127.0.0.1:7101", "peers": "n1=127.0.0.1:7101"}
    assert load_settings(None, base).archive_dir is None
    settings = load_settings(None, {**base, "archive_dir": str(tmp_path / "arch")})
    assert settings.archive_dir == tmp_path / "arch"
    config = tmp_path / "node.toml"
    config.write_text(f'archive-dir = "{tmp_path / "arch2"}"\n')
    assert load_settings(config, base).archive_dir == tmp_path / "arch2"
    for inside in (tmp_path / "d" / "wal", tmp_path / "d" / "wal" / "a", tmp_path / "d"):
        with pytest.raises(ConfigError, match="archive_dir"):
            load_settings(None, {**base, "archive_dir": str(inside)})


# Reading the archive ---------------------------------------------------------------------------


def test_overlapping_copies_of_one_segment_take_the_longest(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=10_000)
    write(wal, batch(1, 3))
    write(wal, batch(4, 3))
    wal.close()
    archive = tmp_path / "archive"
    (full,) = list_archive(archive)
    data = full.path.read_bytes()
    prefix = _first_record(data)  # what a shutdown after the first batch would have copied
    (archive / archive_file_name(1, 1, 3, len(prefix))).write_bytes(prefix)
    assert read_archive(archive) == batch(1, 6)
    # A shorter copy that does not begin the longer one: one of them is damaged.
    damaged = bytearray(prefix)
    damaged[-1] ^= 0xFF
    (archive / archive_file_name(1, 1, 3, len(prefix))).write_bytes(bytes(damaged))
    with pytest.raises(CorruptLogError, match="differ from this byte on") as caught:
        read_archive(archive)
    assert caught.value.path.name == archive_file_name(1, 1, 3, len(prefix))
    assert caught.value.offset == len(prefix) - 1


def test_overrides_are_applied_in_write_order(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    write(wal, batch(1, 8))
    write(wal, batch(6, 4, term=2))  # replaces 6..8 and adds 9
    write(wal, batch(10, 5, term=2))
    write(wal, batch(12, 2, term=3))  # replaces 12..14
    wal.close()
    expected = batch(1, 5) + batch(6, 4, term=2) + batch(10, 2, term=2) + batch(12, 2, term=3)
    assert read_archive(tmp_path / "archive") == expected
    assert read_archive(tmp_path / "archive", first_index=7, last_index=12) == [
        e for e in expected if 7 <= e[0] <= 12]
    times = read_archive(tmp_path / "archive", convert=len)
    assert times == [(i, t, len(d)) for i, t, d in expected]


def test_a_missing_copy_leaves_a_gap_not_an_error(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    for first in range(1, 30, 5):
        write(wal, batch(first, 5))
    wal.close()
    archive = tmp_path / "archive"
    middle = [c for c in list_archive(archive) if c.first_index == 11]
    assert middle
    middle[0].path.unlink()
    indexes = [i for i, _, _ in read_archive(archive)]
    assert indexes == [*range(1, 11), *range(16, 31)]


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong-name", "bad-header"])
def test_damage_is_reported_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    wal = open_wal(tmp_path)
    for first in range(1, 20, 5):
        write(wal, batch(first, 5))
    wal.close()
    archive = tmp_path / "archive"
    victim = list_archive(archive)[1]
    data = bytearray(victim.path.read_bytes())
    if damage == "flip":
        data[len(SEGMENT_HEADER) + 20] ^= 0x01
        victim.path.write_bytes(bytes(data))
        expected_offset = len(SEGMENT_HEADER)
    elif damage == "truncate":
        victim.path.write_bytes(bytes(data[:-3]))
        expected_offset = len(data) - 3
    elif damage == "wrong-name":
        victim.path.rename(archive / archive_file_name(victim.generation, victim.first_index,
                                                       victim.last_index + 1, victim.size_bytes))
        expected_offset = len(SEGMENT_HEADER)
    else:
        data[:6] = b"NOTWAL"
        victim.path.write_bytes(bytes(data))
        expected_offset = 0
    before = contents(archive)
    with pytest.raises(CorruptLogError) as caught:
        read_archive(archive)
    assert caught.value.path.parent == archive
    assert caught.value.offset == expected_offset
    assert contents(archive) == before


def test_read_archive_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a directory"):
        read_archive(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def _first_record(segment: bytes) -> bytes:
    """The segment cut after its first record."""
    length = int.from_bytes(segment[len(SEGMENT_HEADER): len(SEGMENT_HEADER) + 4], "little")
    return segment[: len(SEGMENT_HEADER) + 8 + length]


# The archive is the log as it was written, whatever happened to the log ----------------------


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 4)),  # back, count
        st.tuples(st.just("drop"), st.integers(0, 30), st.just(0)),
        # where the new log starts: below the old one's end (it overrides) or past it (a gap)
        st.tuples(st.just("reset"), st.integers(-3, 8), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_the_archive_reads_back_as_every_append_applied_in_order(
        tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    tmp_path = tmp_path_factory.mktemp("archive-model")
    wal = open_wal(tmp_path, segment_bytes=150)
    model: dict[int, tuple[int, bytes]] = {}  # the log every append described, overrides applied
    last = 0
    term = 1
    restart_at: int | None = None  # after a reset: where the new log starts
    for op, a, b in ops:
        if op == "append":
            if restart_at is not None:
                first, restart_at = restart_at, None
            else:
                first = max(1, last + 1 - a)
            term += 1
            entries = batch(first, b, term=term)
            write(wal, entries)
            for index in [i for i in model if i >= first]:
                del model[index]
            model.update({i: (t, d) for i, t, d in entries})
            last = first + b - 1
        elif op == "drop":
            wal.drop_segments_through(min(a, last))
        elif op == "reset":
            wal.reset()
            restart_at = max(1, last + 1 - a)
        else:
            wal.close()
            wal = open_wal(tmp_path, segment_bytes=150)
            if restart_at is not None and wal.last_index:
                restart_at = None  # nothing was appended after the reset: the log goes on
            last = wal.last_index or last
    wal.close()
    assert read_archive(tmp_path / "archive") == [(i, t, d) for i, (t, d) in sorted(model.items())]
    assert not [p for p in os.listdir(tmp_path / "archive") if p.endswith(".tmp")]
