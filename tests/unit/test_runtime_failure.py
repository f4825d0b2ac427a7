"""A node whose disk fails while it serves (a failed fsync: a full or failing disk) stops, says
why in its log at CRITICAL with the cause, and raises NodeFailed (the CLI's `stopped after an
error while serving`, not `cannot start`)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from replikv.config import load_settings
from replikv.server.runtime import NodeFailed, NodeServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_fsync_while_serving_stops_the_node_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    client, peer = free_port(), free_port()
    settings = load_settings(None, {"id": "n1", "data_dir": tmp_path / "n1",
                                    "listen": f"127.0.0.1:{client}",
                                    "peer_listen": f"127.0.0.1:{peer}",
                                    "peers": f"n1=127.0.0.1:{peer}"})
    server = NodeServer(settings)
    server.open_storage()
    real = os.fdatasync

    def full_disk(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).endswith(".wal"):
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", full_disk)  # the one member's first entry fails
    caplog.set_level(logging.CRITICAL, logger="replikv")
    with pytest.raises(NodeFailed, match="stopped after an error while serving.*No space"):
        asyncio.run(asyncio.wait_for(server.run(), timeout=20))
    assert any("stopped after an error while serving" in r.getMessage()
               for r in caplog.records if r.levelno == logging.CRITICAL)
