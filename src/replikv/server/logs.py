"""A node's logs: text for people, or JSON lines for log pipelines (`--log-format json`).

A JSON line holds the time (ISO 8601, UTC), level, logger, message, the node id and, once the
node is running, its role, term, commit index and applied index at the moment of the event, so
every consensus event ("became leader in term 4") can be placed in the log's history without
parsing the message. An exception's traceback goes in "exc".
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replikv.config import NodeSettings
    from replikv.server.runtime import NodeServer


class JsonFormatter(logging.Formatter):
    """One JSON object per record. `context()` adds the node's current state (it must not
    raise; it is called for every record)."""

    def __init__(self, node_id: str, context: Callable[[], dict] | None = None) -> None:
        super().__init__()
        self.node_id = node_id
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node_id,
        }
        if self.context is not None:
            out.update(self.context())
        out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def node_context(server: NodeServer) -> Callable[[], dict]:
    """The node's role, term and indexes now, for JsonFormatter (empty before it has a core)."""
    def context() -> dict:
        if not server.is_open:
            return {}
        node = server.node
        raft = node.raft
        return {"role": raft.role.value, "term": raft.term, "leader": raft.leader_id,
                "commit_index": raft.commit_index, "applied_index": node.applied_index}
    return context


_json_formatter: JsonFormatter | None = None


def configure_logging(settings: NodeSettings) -> None:
    """Log to stderr in the settings' format and level."""
    global _json_formatter
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        _json_formatter = JsonFormatter(settings.id)
        handler.setFormatter(_json_formatter)
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)-7s [{settings.id}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, settings.log_level.upper(), logging.INFO))


def attach_node(server: NodeServer) -> None:
    """From now on JSON log lines carry this node's role, term and indexes."""
    if _json_formatter is not None:
        _json_formatter.context = node_context(server)
