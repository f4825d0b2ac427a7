"""Admin HTTP: health and status for people, load balancers and monitoring.

A deliberately small HTTP/1.1 server on asyncio streams (GET only, one request per connection,
bounded request size) so the node needs no web framework:

    GET /health   200 while the process serves
    GET /status   200, JSON: role, term, indexes, members, per-follower progress
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from replikv.config import Address

if TYPE_CHECKING:
    from replikv.server.runtime import NodeServer

log = logging.getLogger("replikv.admin")

MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 5.0


class AdminServer:
    def __init__(self, node: NodeServer) -> None:
        self.node = node
        self.server: asyncio.base_events.Server | None = None

    async def start(self, address: Address) -> None:
        self.server = await asyncio.start_server(self._handle, address.host, address.port,
                                                 reuse_address=True, limit=MAX_REQUEST_BYTES)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, body = 400, {"error": "malformed request line"}
            elif parts[0] != "GET":
                status, body = 405, {"error": "only GET is supported"}
            else:
                status, body = self.route(parts[1].split("?", 1)[0])
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError,
                ConnectionError, ValueError):
            status, body = 400, {"error": "bad request"}
        try:
            payload = json.dumps(body, indent=1).encode()
            writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + payload)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def route(self, path: str) -> tuple[int, dict]:
        if path == "/health":
            return 200, {"status": "ok", "id": self.node.node_id}
        if path == "/status":
            return 200, self.node.status()
        return 404, {"error": f"no such endpoint {path}; try /health or /status"}


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}
