"""The runtime's side of disk space (NodeServer): each reading goes to the alarm; a disk going
low is a WARNING and a "disk" event once, its recovery an INFO and an event; /status and
/metrics show the latest reading; a failed reading is logged once and keeps the last one; and a
nearly full disk stops the node before it opens its data dir."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from replikv.config import load_settings
from replikv.server import runtime
from replikv.server.runtime import NodeServer
from replikv.storage.disk_space import (
    DiskSpace,
    DiskSpaceError,
    this_process_uses_reserved_blocks,
)

MIB = 1024 * 1024
GIB = 1024 * MIB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NodeServer]:
    peer = free_port()
    settings = load_settings(None, {"id": "n1", "data_dir": tmp_path / "n1",
                                    "listen": f"127.0.0.1:{free_port()}",
                                    "peer_listen": f"127.0.0.1:{peer}",
                                    "peers": f"n1=127.0.0.1:{peer}"})
    node = NodeServer(settings)
    yield node
    node._disk.shutdown(wait=True)
    node._reply_encoder.shutdown(wait=True)


def readings(monkeypatch: pytest.MonkeyPatch, *free: int | OSError) -> None:
    """The next reads of the disk return these free sizes (of 100 GiB) or raise these."""
    queue = list(free)

    def read(path: Path, *, as_root: bool) -> DiskSpace:
        value = queue.pop(0)
        if isinstance(value, OSError):
            raise value
        return DiskSpace(str(path), total_bytes=100 * GIB, free_bytes=value)

    monkeypatch.setattr(runtime, "read_disk_space", read)


def test_low_and_recovered_are_logged_and_recorded_once_each(
        server: NodeServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    readings(monkeypatch, 10 * GIB, 300 * MIB, 200 * MIB, 2 * GIB, 3 * GIB)
    caplog.set_level(logging.INFO, logger="replikv.node")

    server.sample_disk_space()
    assert server.disk_status() == {
        "path": str(server.settings.data_dir), "total_bytes": 100 * GIB,
        "free_bytes": 10 * GIB, "low_free_bytes": 512 * MIB, "min_free_bytes": 16 * MIB,
        "state": "ok", "writes_refused": False, "rejections": 0}
    assert not caplog.records and not server.events

    server.sample_disk_space()  # 300 MiB: low
    server.sample_disk_space()  # 200 MiB: still low, nothing new
    assert server.disk_status()["state"] == "low"
    assert server.disk_status()["free_bytes"] == 200 * MIB
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [(
        f"disk space low: the file system holding {server.settings.data_dir} has 300.0 MiB "
        "free of 100.0 GiB, below disk_low_free_bytes (512.0 MiB); a node whose disk fills "
        "stops (fail-stop: a failed log write or fsync is never retried) and will not restart "
        "until there is space. Free space on that file system or move the data dir to a "
        "larger one")]
    assert [(e["kind"], e["node"]) for e in server.events] == [("disk", "n1")]
    assert "n1's disk is low: 300.0 MiB free" in server.events[0]["text"]

    caplog.clear()
    server.sample_disk_space()  # 2 GiB: ok again
    server.sample_disk_space()
    assert server.disk_status()["state"] == "ok"
    assert [(r.levelno, r.getMessage()[:20]) for r in caplog.records] == [
        (logging.INFO, "disk space ok again:")]
    assert [e["kind"] for e in server.events] == ["disk", "disk"]
    assert "n1's disk has 2.0 GiB free again" in server.events[1]["text"]


def test_a_failed_reading_is_logged_once_and_keeps_the_last(
        server: NodeServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    readings(monkeypatch, 10 * GIB, OSError(5, "Input/output error"),
             OSError(5, "Input/output error"), 9 * GIB)
    caplog.set_level(logging.WARNING, logger="replikv.node")

    server.sample_disk_space()
    server.sample_disk_space()
    server.sample_disk_space()

    assert len(caplog.records) == 1
    assert "cannot read the free space" in caplog.records[0].getMessage()
    status = server.disk_status()
    assert status is not None
    assert status["free_bytes"] == 10 * GIB and "Input/output error" in status["error"]
    server.sample_disk_space()  # readable again: the error goes
    del status["error"]
    assert server.disk_status() == {**status, "free_bytes": 9 * GIB}


def test_a_nearly_full_disk_refuses_before_the_data_dir_is_opened(
        server: NodeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    readings(monkeypatch, 15 * MIB)

    with pytest.raises(DiskSpaceError, match=r"has 15.0 MiB free, below disk_min_free_bytes"):
        server.open_storage()

    assert not server.is_open
    assert not os.path.exists(server.settings.data_dir)  # nothing was written


def test_the_real_reading_of_the_data_dir(server: NodeServer) -> None:
    server.sample_disk_space()

    status = server.disk_status()
    assert status is not None and status["state"] == "ok"
    st = os.statvfs(server.settings.data_dir.parent)
    free = (st.f_bfree if this_process_uses_reserved_blocks() else st.f_bavail) * st.f_frsize
    assert status["total_bytes"] == st.f_blocks * st.f_frsize
    assert abs(status["free_bytes"] - free) < 256 * MIB


def test_a_nearly_full_disk_refuses_writes_until_it_has_room_again(
        server: NodeServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    readings(monkeypatch, 20 * MIB, 10 * MIB, 16 * MIB + 512 * 1024, 18 * MIB)
    caplog.set_level(logging.INFO, logger="replikv.node")

    server.sample_disk_space()  # 20 MiB: low (below 512 MiB) but not full
    assert server.disk_refusal is None
    server.sample_disk_space()  # 10 MiB: below disk_min_free_bytes (16 MiB)
    refusal = server.disk_refusal
    assert refusal is not None and refusal.message == (
        "MISCONF the disk of the leader n1 is nearly full (less than disk_min_free_bytes, "
        f"16.0 MiB, free in {server.settings.data_dir}): writes that add data are refused "
        "until space is freed; reads and deletes still run")
    assert server.disk_status()["writes_refused"] is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("disk nearly full: 10.0 MiB free") for w in warnings), warnings
    server.sample_disk_space()  # 16.5 MiB: above the threshold, not yet above the margin
    assert server.disk_refusal is refusal
    server.sample_disk_space()  # 18 MiB: room again
    assert server.disk_refusal is None and server.disk_status()["writes_refused"] is False
    kinds = [(e["kind"], e["text"]) for e in server.events]
    assert [k for k, t in kinds if "nearly full" in t or "accepted again" in t] == [
        "disk", "disk"], kinds
