"""benchmarks/replication_modes.py's log-size figure: the bytes of records a write adds to the
WAL, not the segment files' size, which grows ahead in preallocated steps of zeros."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from benchmarks.replication_modes import wal_data_bytes
from replikv.storage import WriteAheadLog

from .wal_files import records_end


def test_the_log_size_counts_records_not_preallocated_space(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, preallocate_bytes=64 * 1024)
    sizes = []
    for index in range(1, 6):
        wal.append([(index, 1, b"x" * 100)])
        wal.sync()
        sizes.append(wal_data_bytes(tmp_path))
    (segment,) = tmp_path.glob("*.wal")
    assert segment.stat().st_size == 64 * 1024  # the file's size says nothing per write
    assert sizes[-1] == records_end(segment)
    steps = {b - a for a, b in pairwise(sizes)}
    assert len(steps) == 1 and 100 < steps.pop() < 200  # one record: its 100 bytes and framing
    wal.close()
    assert wal_data_bytes(tmp_path / "missing") == 0
