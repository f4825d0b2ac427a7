"""What a node finds on its disk when it starts again.

- A crash (kill -9) while writes flow, plus a torn record at the end of the log (what a power
  cut mid-write leaves; a SIGKILL alone never tears a write()), is tolerated: the node
  discards the torn bytes, starts, and catches up.
- A flipped byte in the middle of the log, followed by more records, is corruption: the node
  refuses to start (status 1) and says which file and at which offset. The other nodes keep
  serving; putting the byte back lets the node start and catch up, so the refusal changed
  nothing on disk.

The segment format (replikv.storage.wal): an 8-byte header b"RKVWAL" + version + pad, then
records of struct "<II" (payload length, crc32(payload)) followed by the msgpack payload. The
reader below checks every CRC so the test fails loudly if the format is not what we think.
"""

from __future__ import annotations

import random
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import redis

from .cluster import Cluster, wait_until

SEGMENT_HEADER = b"RKVWAL\x01\x00"
RECORD_HEADER = struct.Struct("<II")
TORN_MARKER = b"TORN-TAIL-MARKER"

pytestmark = pytest.mark.timeout(90)


def segments(cluster: Cluster, node_id: str) -> list[Path]:
    found = sorted((cluster.nodes[node_id].data_dir / "wal").glob("*.wal"))
    assert found, f"{node_id} has no WAL segments"
    return found


def record_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, payload length) of every record in a healthy segment. The segment a running
    node writes to may end in zeros, the file space it reserved ahead of its records."""
    data = path.read_bytes()
    assert data[:8] == SEGMENT_HEADER, data[:8]
    offset, out = 8, []
    while offset < len(data):
        if not any(data[offset:]):
            break  # reserved space: nothing was written there
        length, crc = RECORD_HEADER.unpack_from(data, offset)
        payload = data[offset + 8: offset + 8 + length]
        assert len(payload) == length and zlib.crc32(payload) == crc, f"bad record at {offset}"
        out.append((offset, length))
        offset += 8 + length
    return out


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


class PipelinedWriter(threading.Thread):
    """Writes batches of 20 SETs through one node until stopped; remembers what was
    acknowledged and any error."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.acked: dict[str, str] = {}
        self.errors: list[str] = []
        self.batches = 0

    def run(self) -> None:
        rng = random.Random(5)
        for batch in range(100_000):
            if self.stop.is_set():
                return
            items = {f"w{batch}-{i}": f"{batch}-{i}-" + "x" * rng.randrange(10, 300)
                     for i in range(20)}
            pipe = self.client.pipeline(transaction=False)
            for k, v in items.items():
                pipe.set(k, v)
            try:
                replies = pipe.execute()
            except Exception as e:  # noqa: BLE001 - asserted on by the test
                self.errors.append(repr(e))
                return
            if replies != [True] * len(items):
                self.errors.append(f"batch {batch}: {replies[:5]}")
                return
            self.acked.update(items)
            self.batches += 1


def test_follower_killed_mid_write_with_a_torn_tail_restarts_and_catches_up(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    writer = PipelinedWriter(cluster.client(leader, decode_responses=True))
    writer.start()
    try:
        wait_until(lambda: writer.batches >= 20 or not writer.is_alive(), timeout_s=20,
                   what="20 acknowledged batches before the crash")
        cluster.kill9(follower)
        before_kill = writer.batches
        time.sleep(0.5)
        # What a crash during the last write leaves: a record header whose payload never
        # fully reached the disk, right after the last record (in the file space the node
        # reserved ahead of its records, zeros up to the end of the file).
        last = segments(cluster, follower)[-1]
        offset, length = record_offsets(last)[-1]
        torn_at = offset + 8 + length
        with open(last, "r+b") as f:
            f.seek(torn_at)
            f.write(RECORD_HEADER.pack(5000, 0xDEADBEEF) + TORN_MARKER * 10)
        print(f"{follower} killed after {before_kill} batches; torn record written to "
              f"{last.name} at offset {torn_at} (file size {last.stat().st_size})")
        restart_at = time.monotonic()
        cluster.start(follower)
        print(f"restart of {follower} took {time.monotonic() - restart_at:.2f}s")
        started = writer.batches
        wait_until(lambda: writer.batches >= started + 20 or not writer.is_alive(),
                   timeout_s=20, what="20 more acknowledged batches after the restart")
    finally:
        writer.stop.set()
        writer.join(10)
    assert not writer.errors, writer.errors
    assert writer.batches > before_kill, "writes did not continue while the follower was down"

    commit = cluster.status(leader)["commit_index"]
    catch_up_at = time.monotonic()
    status = cluster.wait_applied(follower, commit, timeout_s=15)
    print(f"{follower} applied {commit} entries {time.monotonic() - catch_up_at:.2f}s after "
          f"the writes stopped ({writer.batches} batches in all)")
    assert status["role"] == "follower" and status["leader"] == leader
    assert not any(TORN_MARKER in p.read_bytes() for p in segments(cluster, follower)), \
        "the torn record is still in the log"
    for p in segments(cluster, follower):
        record_offsets(p)  # every record left (and appended since) checks out
    cluster.assert_values([follower], writer.acked)


def test_corrupt_byte_in_the_middle_of_the_log_refuses_to_start(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    victim = next(i for i in cluster.ids if i != leader)
    r = cluster.client(leader)
    acked = {f"c{i}": f"value-{i}" for i in range(150)}
    for k, v in acked.items():  # one at a time: one record per write on the follower
        assert r.set(k, v) is True
    cluster.wait_applied(victim, cluster.status(leader)["commit_index"])
    assert cluster.terminate(victim) == 0

    first = segments(cluster, victim)[0]
    records = record_offsets(first)
    assert len(records) > 50, f"expected many records in {first}, found {len(records)}"
    offset, length = records[len(records) // 2]
    flip_byte(first, offset + RECORD_HEADER.size + length // 2)

    result = cluster.run_node_once(victim)
    print(f"flipped a byte of the record at offset {offset} of {len(records)}; stderr said: "
          f"{result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert str(first) in result.stderr, result.stderr[-2000:]
    assert f"at byte offset {offset}" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "ready" not in result.stdout

    # The other two keep serving, reads and writes.
    survivors = [i for i in cluster.ids if i != victim]
    for i in survivors:
        assert cluster.client(i).set(f"after-{i}", "ok") is True
        acked[f"after-{i}"] = "ok"
    cluster.assert_values(survivors, acked)

    # Refusing did not change the files: with the byte put back, the node starts and catches up.
    flip_byte(first, offset + RECORD_HEADER.size + length // 2)
    cluster.start(victim)
    cluster.wait_applied(victim, cluster.status(cluster.leader())["commit_index"])
    cluster.assert_values([victim], acked)
