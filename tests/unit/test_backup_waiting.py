"""`backup create` from a node that accepts the request and then says nothing (paused, hung)
says it is waiting, and why, instead of waiting --timeout-s in silence."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from replikv.backup import download
from replikv.cli import main


class _SilentOnBackup(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body = json.dumps({"status": "ok", "id": "n7"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        time.sleep(3.0)  # /backup: nothing, longer than the client waits

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def silent_admin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SilentOnBackup)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_silent_node_is_named_while_waiting_then_given_up_on(
        silent_admin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "WAITING_NOTE_S", 0.3)
    dest = tmp_path / "b.rkvsnap"
    started = time.monotonic()
    result = CliRunner().invoke(main, ["backup", "create", "--from", silent_admin, "--to",
                                       str(dest), "--timeout-s", "1"])
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 2.9, "gave up at --timeout-s"
    assert result.output.count(f"waiting for n7 ({silent_admin}): no answer after 0 s") == 1
    assert "a paused or hung node never answers" in result.output
    assert "no backup from" in result.output and not dest.exists()


def test_no_note_when_the_node_answers_or_fails_at_once(tmp_path: Path) -> None:
    notes: list[float] = []
    with pytest.raises(download.BackupError):
        download.fetch_backup("127.0.0.1:1", tmp_path / "b", timeout_s=5,
                              on_waiting=notes.append, waiting_after_s=0.2)
    time.sleep(0.4)
    assert notes == []
