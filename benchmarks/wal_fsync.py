"""What one durable append costs the write-ahead log, with and without preallocated space.

    .venv/bin/python benchmarks/wal_fsync.py [--dir PATH] [--appends 3000] [--bytes 300]
                                              [--rounds 3]

Each round opens a fresh log in `--dir` (default: a temporary directory under the current
directory, so on the disk the nodes' data dirs would use) once with `preallocate_bytes = 0` and
once with the default, and times `--appends` single-record appends of `--bytes` bytes each
followed by `sync()` (the log's fdatasync): p50, p99 and mean microseconds per durable append.
The two settings alternate within each round, because a shared VM's disk drifts between runs.
Each round starts with the disk's own figure from `replikv bench`'s floor (the median of a
4 KiB append + fsync to a plain file).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from replikv.bench import measure_fsync_ms
from replikv.limits import DEFAULT_LIMITS
from replikv.storage import WriteAheadLog


def summary(samples_s: list[float]) -> str:
    ordered = sorted(samples_s)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return f"p50 {p50:6.0f} us   p99 {p99:6.0f} us   mean {statistics.fmean(ordered) * 1e6:6.0f} us"


def time_log(directory: Path, preallocate_bytes: int, appends: int, size_bytes: int) -> list[float]:
    wal, _ = WriteAheadLog.open(directory, preallocate_bytes=preallocate_bytes)
    data = os.urandom(size_bytes)
    samples = []
    try:
        for index in range(1, appends + 1):
            started = time.perf_counter()
            wal.append([(index, 1, data)])
            wal.sync()
            samples.append(time.perf_counter() - started)
    finally:
        wal.close()
        shutil.rmtree(directory)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: ./)")
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--bytes", type=int, default=300, help="entry data per append")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wal-fsync-", dir=args.dir or Path.cwd()))
    default = DEFAULT_LIMITS.wal_preallocate_bytes
    try:
        print(f"{args.appends} appends of {args.bytes} bytes, each made durable, in {base}")
        for round_number in range(1, args.rounds + 1):
            floor_us = measure_fsync_ms(base) * 1000
            print(f"round {round_number}  bench's floor (4 KiB + fsync)     p50 {floor_us:6.0f} us")
            for preallocate in (0, default):
                samples = time_log(base / f"wal-{preallocate}", preallocate, args.appends,
                                   args.bytes)
                label = f"log, preallocate_bytes={preallocate}"
                print(f"round {round_number}  {label:<34}{summary(samples)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
