"""Admin HTTP: health and status for people, load balancers and monitoring.

A deliberately small HTTP/1.1 server on asyncio streams (GET and POST, one request per
connection, bounded request size) so the node needs no web framework:

    GET /health   200 while the process serves
    GET /primary  200 only on the leader while it holds its lease (a quorum answered it
                  lately, so no other leader exists); 503 otherwise
    GET /replica  200 only on a follower within ?max_lag_ms= (default 5000) of the primary,
                  by its staleness estimate (see NodeCore.staleness_ms); 503 otherwise
    GET /status   200, JSON: role, term, indexes, members, per-follower progress, the data
                  dir's disk space ("disk": free and total bytes, state "ok" or "low")
    GET /members  200, JSON: the members as REPLIKV TOPOLOGY lists them
    GET /         200, text/html: the dashboard (replikv/server/dashboard.html)
    GET /events   200, JSON: this node's timeline (role and membership changes, rollbacks,
                  a disk going low and recovering)
    GET /metrics  200, Prometheus text format: state, counters and latency histograms (see
                  replikv.server.metrics)
    GET /backup   200, application/octet-stream: an online backup, i.e. a snapshot file of
                  this node's state taken now at a committed index (see
                  SnapshotRuntime.open_backup), with Content-Length; 503 JSON if none can be
                  taken (the reason says why). `replikv backup create` is its client.

and the membership operations (answered once committed; any member takes them, a follower
forwards them to the leader):

    POST /members/<id>/add?peer=H:P[&client=H:P][&admin=H:P]   join as a standby
    POST /members/<id>/promote | /demote | /remove
    POST /switchover[?to=<id>]
    POST /faults?block=<id>,<id>&delay_ms=<n>   (only with --fault-injection) drop messages
                  to and from those peers, delay what this node sends; POST /faults/clear

    200 {"result": "OK ..."}; 409 {"error": ...} if refused (the reason says what to do);
    503 if no leader answered in time.

Load balancers route writes by /primary and reads by /replica or /primary (see
`replikv haproxy-config`); a 503 body says why, for the operator reading a health-check log.
The POST endpoints change the cluster: bind the admin address to a private network.

On a node with a password (`requirepass`), GET /backup (which hands out every key) and every
POST ask for it with HTTP Basic authentication, user `default` (`curl -u default:PASSWORD`):
401 with `WWW-Authenticate` otherwise. The health, status and metrics endpoints and the
dashboard stay open, so that load balancers and Prometheus need no secret; they show the
cluster's state and counts, never keys or values.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from replikv.config import Address
from replikv.limits import MIB
from replikv.replies import ErrorReply
from replikv.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from replikv.server.snapshots import BackupUnavailable
from replikv.tls import handshake_timeout

if TYPE_CHECKING:
    from replikv.server.runtime import NodeServer

log = logging.getLogger("replikv.admin")

MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 5.0
REPLICA_MAX_LAG_MS_DEFAULT = 5000
REPLICA_MAX_LAG_MS_MAX = 24 * 3600 * 1000
BACKUP_STREAMS_MAX = 2  # backups being taken or sent at once; more get 503
FAULT_DELAY_MS_MAX = 60_000
BACKUP_CHUNK_BYTES = 1 * MIB  # read from the snapshot file, written, drained: memory per stream


class AdminServer:
    def __init__(self, node: NodeServer) -> None:
        self.node = node
        self.server: asyncio.base_events.Server | None = None
        self.backup_streams = 0

    async def start(self, address: Address) -> None:
        tls = self.node.client_tls
        self.server = await asyncio.start_server(
            self._handle, address.host, address.port, reuse_address=True,
            limit=MAX_REQUEST_BYTES, ssl=tls, ssl_handshake_timeout=handshake_timeout(tls))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backup = False  # GET /backup: answered by streaming a file, not with JSON
        status, body = 200, {}
        method = ""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            method = parts[0]
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, body = 400, {"error": "malformed request line"}
            elif (parts[0] == "POST" or parts[1].partition("?")[0] == "/backup") and \
                    not self._authorized(head):
                self.node.auth_failures += 1
                await _answer(writer, 401, json.dumps(
                    {"error": "this node has a password: give it with HTTP Basic "
                              "authentication, user default (curl -u default:PASSWORD; "
                              "replikv's commands read REPLIKV_PASSWORD)"}).encode(),
                    "application/json", readable_anywhere=False,
                    extra_headers='WWW-Authenticate: Basic realm="replikv", charset="UTF-8"\r\n')
                return
            elif parts[0] == "POST":
                path, _, query = parts[1].partition("?")
                status, body = await self.post(path, query)
            elif parts[0] != "GET":
                status, body = 405, {"error": "only GET and POST are supported"}
            elif parts[1].partition("?")[0] == "/backup":
                backup = True
            elif parts[1].partition("?")[0] in ("/", "/dashboard"):
                await _answer(writer, 200, dashboard_html(), "text/html; charset=utf-8")
                return
            elif parts[1].partition("?")[0] == "/metrics":
                try:
                    payload = self.node.metrics.render()
                except Exception as e:  # a bug of ours: say so, keep serving
                    log.exception("rendering /metrics failed")
                    status, body = 500, {"error": f"rendering the metrics failed: {e}"}
                else:
                    await _answer(writer, 200, payload, METRICS_CONTENT_TYPE)
                    return
            else:
                path, _, query = parts[1].partition("?")
                status, body = self.route(path, query)
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError,
                ConnectionError, ValueError):
            status, body = 400, {"error": "bad request"}
        if backup:
            await self._backup(writer)
        else:
            await _answer_json(writer, status, body, readable_anywhere=method == "GET")

    def _authorized(self, head: bytes) -> bool:
        """Whether the request may use the guarded endpoints: the node has no password, or
        the request's Authorization header gives it (Basic, user `default`)."""
        if not self.node.requirepass:
            return True
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep or name.strip().lower() != b"authorization":
                continue
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() != b"basic":
                return False
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, given = decoded.partition(b":")
            return bool(sep) and user == b"default" and self.node.password_accepted(given)
        return False

    async def _backup(self, writer: asyncio.StreamWriter) -> None:
        """Take a snapshot now and stream it: headers with its size, then the file's bytes
        a chunk at a time, each written and drained before the next is read (a slow client
        holds one chunk, not the file)."""
        if self.backup_streams >= BACKUP_STREAMS_MAX:
            await _answer_json(writer, 503, {"error": f"{self.backup_streams} backups are "
                                             "in progress on this node; try again shortly"})
            return
        self.backup_streams += 1
        source = None
        try:
            try:
                source = await self.node.snapshots.open_backup()
            except (BackupUnavailable, OSError) as e:  # OSError: the snapshot's disk failed
                log.warning("backup refused: %s", e)
                await _answer_json(writer, 503, {"error": str(e), "id": self.node.node_id})
                return
            info = source.info
            name = f"replikv-{self.node.settings.cluster_id}-{info.index:09d}.rkvsnap"
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {source.size_bytes}\r\n"
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                f"X-Replikv-Node: {self.node.node_id}\r\n"
                f"X-Replikv-Role: {self.node.node.raft.role.value}\r\n"
                f"X-Replikv-Index: {info.index}\r\nX-Replikv-Term: {info.term}\r\n"
                f"Connection: close\r\n\r\n".encode())
            loop = asyncio.get_running_loop()
            offset = 0
            while offset < source.size_bytes:
                size = min(BACKUP_CHUNK_BYTES, source.size_bytes - offset)
                # Off the event loop (the default executor, not the disk thread, whose queue
                # holds the log's fsyncs): a cold read must not stall clients.
                chunk = await loop.run_in_executor(None, source.read_chunk, offset, size)
                if not chunk:  # cannot happen to an open, complete file; end short, loudly
                    log.error("backup: %s ended at byte %d of %d", info.path, offset,
                              source.size_bytes)
                    break
                writer.write(chunk)
                await writer.drain()
                offset += len(chunk)
            log.info("backup at index %d: %d bytes sent", info.index, offset)
        except ConnectionError as e:
            log.info("backup: the client went away (%s)", e)
        except (OSError, ValueError) as e:  # reading the open file failed: end it short
            log.error("backup: reading the snapshot failed, the transfer is cut short: %s", e)
        finally:
            self.backup_streams -= 1
            if source is not None:
                source.close()
            writer.close()

    def route(self, path: str, query: str = "") -> tuple[int, dict]:
        if path == "/health":
            return 200, {"status": "ok", "id": self.node.node_id}
        if path == "/status":
            return 200, self.node.status()
        if path == "/primary":
            return self._primary()
        if path == "/members":
            return 200, {"members": [m.as_reply() for m in self.node.topology()]}
        if path == "/events":
            return 200, {"id": self.node.node_id, "events": list(self.node.events)}
        if path == "/replica":
            try:
                max_lag_ms = _query_int(query, "max_lag_ms", REPLICA_MAX_LAG_MS_DEFAULT,
                                        REPLICA_MAX_LAG_MS_MAX)
            except ValueError as e:
                return 400, {"error": str(e)}
            return self._replica(max_lag_ms)
        return 404, {"error": f"no such endpoint {path}; try /health, /primary, /replica, "
                              f"/status, /members, /metrics or /backup"}

    async def post(self, path: str, query: str) -> tuple[int, dict]:
        """Membership changes and switchover, run as REPLIKV MEMBER / SWITCHOVER commands."""
        params = {k: v[-1] for k, v in parse_qs(query, max_num_fields=8).items()}
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == "faults":
            return self._faults(parts, params, query)
        if parts == ["switchover"]:
            argv = [b"REPLIKV", b"SWITCHOVER"] + ([params["to"].encode()] if "to" in params
                                                   else [])
        elif len(parts) == 3 and parts[0] == "members" and parts[2] in (
                "add", "promote", "demote", "remove"):
            argv = [b"REPLIKV", b"MEMBER", parts[2].upper().encode(), parts[1].encode()]
            if parts[2] == "add":
                for key in ("peer", "client", "admin"):
                    if key in params:
                        argv += [key.upper().encode(), params[key].encode()]
        elif path in ("/health", "/status", "/primary", "/replica", "/members", "/backup",
                      "/metrics"):
            return 405, {"error": f"{path} only answers GET"}
        else:
            return 404, {"error": f"no such endpoint POST {path}; try /members/<id>/add?peer="
                                  "H:P, /members/<id>/promote, /demote, /remove or /switchover"}
        reply = await self.node.run_admin(argv)
        if isinstance(reply, ErrorReply):
            status = 503 if reply.code in ("TRYAGAIN", "UNKNOWN") else 409
            return status, {"error": reply.message}
        return 200, {"result": str(reply)}

    def _faults(self, parts: list[str], params: dict[str, str],
                query: str) -> tuple[int, dict]:
        """POST /faults?block=ID,ID&delay_ms=N sets this node's injected faults (each one
        given replaces its kind; one left out stays as it was); POST /faults/clear heals.
        Only with --fault-injection."""
        if not self.node.settings.fault_injection:
            return 403, {"error": "fault injection is off on this node (start it with "
                                  "--fault-injection; `replikv cluster up` does)"}
        transport = self.node.transport
        if parts == ["faults", "clear"]:
            transport.set_faults(frozenset(), 0.0)
        elif parts == ["faults"]:
            blocked = transport.blocked
            if "block" in params:
                blocked = frozenset(p for p in params["block"].split(",") if p)
                if len(blocked) > 64 or any(len(p) > 64 for p in blocked):
                    return 400, {"error": "block: at most 64 member ids"}
            delay_s = transport.delay_s
            if "delay_ms" in params:
                try:
                    delay_s = _query_int(query, "delay_ms", 0, FAULT_DELAY_MS_MAX) / 1000
                except ValueError as e:
                    return 400, {"error": str(e)}
            transport.set_faults(blocked, delay_s)
        else:
            return 404, {"error": "try POST /faults?block=ID,...&delay_ms=N or /faults/clear"}
        log.warning("injected faults now: %s", self.node.fault_status())
        return 200, {"faults": self.node.fault_status()}

    def _primary(self) -> tuple[int, dict]:
        raft = self.node.node.raft
        body = {"id": self.node.node_id, "role": raft.role.value, "term": raft.term,
                "leader": raft.leader_id}
        if not raft.is_leader:
            return 503, {**body, "reason": "not the leader"}
        if raft.lease_remaining_ticks() <= 0:
            return 503, {**body, "reason": "leader without a quorum lately (no lease)"}
        return 200, body

    def _replica(self, max_lag_ms: int) -> tuple[int, dict]:
        node = self.node.node
        staleness_ms = node.staleness_ms()
        body = {"id": self.node.node_id, "role": node.raft.role.value,
                "leader": node.raft.leader_id, "staleness_ms": staleness_ms,
                "max_lag_ms": max_lag_ms}
        if node.raft.is_leader:
            return 503, {**body, "reason": "the leader (ask /primary)"}
        if staleness_ms is None or staleness_ms > max_lag_ms:
            return 503, {**body, "reason": "further behind the primary than max_lag_ms"}
        return 200, body


async def _answer_json(writer: asyncio.StreamWriter, status: int, body: dict, *,
                       readable_anywhere: bool = False) -> None:
    await _answer(writer, status, json.dumps(body, indent=1).encode(), "application/json",
                  readable_anywhere=readable_anywhere)


async def _answer(writer: asyncio.StreamWriter, status: int, payload: bytes,
                  content_type: str, *, readable_anywhere: bool = True,
                  extra_headers: str = "") -> None:
    # Access-Control-Allow-Origin on GET answers: the dashboard one node serves reads every
    # member's /status, /events and /metrics. POST answers do not get it.
    cors = "Access-Control-Allow-Origin: *\r\n" if readable_anywhere else ""
    try:
        writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                     f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                     f"{cors}{extra_headers}Connection: close\r\n\r\n".encode() + payload)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


_DASHBOARD: bytes | None = None


def dashboard_html() -> bytes:
    """The dashboard page, shipped in the package (no build step, nothing fetched from the
    internet: one HTML file with its script and styles inline)."""
    global _DASHBOARD
    if _DASHBOARD is None:
        _DASHBOARD = (Path(__file__).parent / "dashboard.html").read_bytes()
    return _DASHBOARD


def _query_int(query: str, name: str, default: int, maximum: int) -> int:
    values = parse_qs(query, max_num_fields=8).get(name)
    if not values:
        return default
    raw = values[-1]
    if not raw.isdigit() or int(raw) > maximum:
        raise ValueError(f"{name} must be a whole number of milliseconds in 0..{maximum}")
    return int(raw)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict", 503: "Service Unavailable"}
