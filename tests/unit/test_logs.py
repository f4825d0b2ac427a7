"""--log-format json: one object per record, with the node's state when there is a node."""

from __future__ import annotations

import json
import logging

import pytest

from replikv.config import ConfigError, load_settings
from replikv.server.logs import JsonFormatter, node_context
from replikv.server.runtime import NodeServer

FLAGS = {"id": "n1", "data_dir": "/tmp/x", "listen": "127.0.0.1:7001",
         "peer_listen": "127.0.0.1:7101", "peers": "n1=127.0.0.1:7101"}


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            exc_info = sys.exc_info()
    return logging.LogRecord("replikv.node", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_record_is_one_json_line_with_the_node_and_its_state():
    formatter = JsonFormatter("n2", lambda: {"role": "leader", "term": 7, "commit_index": 41})
    line = formatter.format(record("became leader in term %d", 7))
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == "became leader in term 7"
    assert (out["node"], out["level"], out["logger"]) == ("n2", "warning", "replikv.node")
    assert (out["role"], out["term"], out["commit_index"]) == ("leader", 7, 41)
    assert out["ts"].endswith("Z") and "T" in out["ts"]


def test_without_a_node_yet_and_with_an_exception():
    out = json.loads(JsonFormatter("n1").format(record("line\nbreak", exc=True)))
    assert out["msg"] == "line\nbreak" and "term" not in out
    assert "ValueError: boom" in out["exc"]


def test_the_log_format_setting_is_checked():
    assert load_settings(None, FLAGS).log_format == "text"
    assert load_settings(None, {**FLAGS, "log_format": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format: expected one of text, json"):
        load_settings(None, {**FLAGS, "log_format": "xml"})


def test_the_node_context_is_empty_until_the_node_opens_its_storage(tmp_path):
    # Log lines are written before the node core exists (while the cluster id is settled).
    server = NodeServer(load_settings(None, {**FLAGS, "data_dir": tmp_path / "n1"}))
    context = node_context(server)
    assert context() == {}
    server.open_storage()
    try:
        assert context() == {"role": "follower", "term": 0, "leader": None, "commit_index": 0,
                             "applied_index": 0}
    finally:
        server.wal.close()
        server.datadir.close()
        server.snapshots.close()
        server._disk.shutdown()
