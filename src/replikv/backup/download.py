"""Taking an online backup from a running node: the client side of `replikv backup create`.

A node serves backups on its admin HTTP port (`GET /backup`: it takes a snapshot now, with the
copy-on-write cursor, so it pauses nobody, and streams the file with its Content-Length). The
address given may be the admin port or the client (Redis protocol) port: a port that does not
answer HTTP is asked `REPLIKV TOPOLOGY`, whose answer names the node's admin address.

The file is written the way the node writes its own snapshots: to `FILE.tmp`, fsynced, verified
in full (`inspect_backup`: checksums, counts, state digest), then given its name atomically and
the directory fsynced. Without `force` an existing FILE is never replaced, not even by a race
(the final step is a hard link, which fails if the name exists). `write_backup_file` is that
durable half on its own, fed by any reader, so scheduled backups (written by the leader from
`SnapshotRuntime.open_backup`) can reuse it.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from replikv.backup import BackupError
from replikv.backup.verify import BackupSummary, inspect_backup
from replikv.client.credentials import admin_connection, authorization_headers
from replikv.limits import KIB, MIB
from replikv.storage.files import SYNC_EVERY_BYTES, fsync_directory, write_fully

CHUNK_BYTES = 1 * MIB  # read from the socket and written at a time
PROBE_TIMEOUT_S = 2.0  # for telling an admin port from a client port
WAITING_NOTE_S = 10.0  # a backup's node silent this long: say so (fetch_backup's on_waiting)
PROBE_ANSWER_BYTES_MAX = 64 * KIB
ERROR_ANSWER_BYTES_MAX = 64 * KIB
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True, slots=True)
class NodeAdmin:
    """A node's admin address, and how we found it."""

    address: str  # "host:port"
    node_id: str
    found_via: str  # "admin" (the address given) or "client" (asked REPLIKV TOPOLOGY)


@dataclass(frozen=True, slots=True)
class FetchedBackup:
    summary: BackupSummary  # of the file at its final name, verified
    node_id: str  # the node that served it
    role: str  # its role when it took the snapshot
    transfer_seconds: float  # from the request until the last byte (includes taking it)
    verify_seconds: float


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackupError(f"{address!r} is not HOST:PORT (a node's admin or client address)")
    return host.strip("[]"), int(port)


def find_admin(address: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> NodeAdmin:
    """The admin address of the node at `address` (its admin or its client address)."""
    host, port = _split(address)
    node_id = _probe_admin(host, port, timeout_s)
    if node_id is not None:
        return NodeAdmin(f"{host}:{port}", node_id, "admin")
    import redis

    from replikv.client.credentials import env_password, redis_tls_kwargs
    from replikv.client.errors import auth_problem, describe_connection_error
    from replikv.client.topology import TopologyError, parse_topology

    client = redis.Redis(host=host, port=port, socket_timeout=timeout_s,
                         socket_connect_timeout=timeout_s, password=env_password(),
                         **redis_tls_kwargs())
    try:
        reply = client.execute_command("REPLIKV", "TOPOLOGY")
        topology = parse_topology(reply, f"{host}:{port}")
    except redis.AuthenticationError as e:
        raise BackupError(f"the replikv node at {address}: {auth_problem(str(e))}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise BackupError(f"no replikv node at {address}: "
                          f"{describe_connection_error(e, timeout_s)}") from None
    except (redis.RedisError, TopologyError) as e:
        raise BackupError(f"{address} answers neither as a replikv admin port (HTTP) nor as a "
                          f"replikv client port (REPLIKV TOPOLOGY: {e})") from None
    finally:
        client.close()
    me = next(m for m in topology.members if m.id == topology.self_id)
    if not me.admin:
        raise BackupError(f"node {me.id} at {address} has no admin address; backups are served "
                          "on the admin HTTP port: start the node with --admin HOST:PORT")
    admin_host, admin_port = _split(me.admin)
    if admin_host in _WILDCARD_HOSTS:
        admin_host = host  # it listens everywhere: reach it where we reached its client port
    return NodeAdmin(f"{admin_host}:{admin_port}", me.id, "client")


def _probe_admin(host: str, port: int, timeout_s: float) -> str | None:
    """The node id if `host:port` is a replikv admin port (GET /health answers), else None."""
    conn = admin_connection(host, port, timeout_s)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = json.loads(response.read(PROBE_ANSWER_BYTES_MAX))
        if response.status == 200 and isinstance(body, dict) and body.get("status") == "ok":
            return str(body.get("id"))
    except (OSError, http.client.HTTPException, ValueError):
        pass
    finally:
        conn.close()
    return None


def check_destination(dest: Path, *, force: bool) -> None:
    """BackupError if `dest` may not be written (exists without `force`, no such directory)."""
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory; give the backup file's path")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; pass --force to replace it (or choose another name)")
    if not dest.parent.is_dir():
        raise BackupError(f"directory {dest.parent} does not exist")


def fetch_backup(admin: str, dest: Path, *, force: bool = False, timeout_s: float = 600.0,
                 on_start: Callable[[int, dict[str, str]], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None,
                 on_waiting: Callable[[float], None] | None = None,
                 waiting_after_s: float | None = None) -> FetchedBackup:
    """Ask the node at admin address `admin` for a backup and write it to `dest`, durably and
    verified. `on_start(total_bytes, headers)` once the node answers, `on_bytes(n)` per chunk;
    `on_waiting(seconds)` once, from another thread, if the node has not begun to answer
    `waiting_after_s` (WAITING_NOTE_S) after it was asked (it takes its snapshot first; a paused node never
    answers, and only `timeout_s` ends the wait). Raises BackupError, or CorruptSnapshotError
    (replikv.storage.snapshot) if what arrived does not verify."""
    check_destination(dest, force=force)
    host, port = _split(admin)
    started = time.perf_counter()
    conn = admin_connection(host, port, timeout_s)
    after_s = WAITING_NOTE_S if waiting_after_s is None else waiting_after_s
    note = (threading.Timer(after_s, on_waiting, args=(after_s,))
            if on_waiting is not None and after_s < timeout_s else None)
    try:
        try:
            if note is not None:
                note.daemon = True
                note.start()
            conn.request("GET", "/backup", headers=authorization_headers())
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            raise BackupError(f"no backup from {admin}: {e}") from None
        finally:
            if note is not None:
                note.cancel()
        headers = {k.lower(): v for k, v in response.getheaders()}
        if response.status != 200:
            raise BackupError(f"the node at {admin} could not give a backup (HTTP "
                              f"{response.status}): {_error_text(response)}")
        try:
            total = int(headers["content-length"])
        except (KeyError, ValueError):
            raise BackupError(f"{admin} answered /backup without a Content-Length; is it a "
                              "replikv admin port?") from None
        if on_start is not None:
            on_start(total, headers)

        def read(size: int) -> bytes:
            try:
                return response.read(size)
            except http.client.IncompleteRead as e:
                return e.partial
            except (OSError, http.client.HTTPException) as e:
                raise BackupError(f"the transfer from {admin} failed: {e}") from None

        summary, verify_seconds = write_backup_file(read, total, dest, force=force,
                                                    on_bytes=on_bytes, source=admin)
    finally:
        conn.close()
    return FetchedBackup(summary=summary, node_id=headers.get("x-replikv-node", "?"),
                         role=headers.get("x-replikv-role", "?"),
                         transfer_seconds=time.perf_counter() - started - verify_seconds,
                         verify_seconds=verify_seconds)


def write_backup_file(read: Callable[[int], bytes], total: int, dest: Path, *,
                      force: bool = False, on_bytes: Callable[[int], None] | None = None,
                      source: str = "the node",
                      verify: Callable[[Path], BackupSummary] = inspect_backup,
                      ) -> tuple[BackupSummary, float]:
    """Write `total` bytes from `read(n)` (b"" only at the end) to `dest` durably: into
    `dest.tmp`, fdatasynced every SYNC_EVERY_BYTES as it is written and fsynced at the end,
    checked in full by `verify` (which raises what it finds wrong), then named `dest` (never
    replacing an existing one unless `force`) and the directory fsynced. Returns the summary
    and the seconds verification took. On any failure `dest.tmp` is removed and `dest` is
    untouched."""
    tmp = dest.with_name(dest.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            received = synced = 0
            while received < total:
                chunk = read(min(CHUNK_BYTES, total - received))
                if not chunk:
                    raise BackupError(f"{source} closed the connection after {received:,} of "
                                      f"{total:,} bytes; nothing was written to {dest}")
                write_fully(fd, chunk)
                received += len(chunk)
                if received - synced >= SYNC_EVERY_BYTES:
                    # Written back in pieces: one sync of the whole file at the end would hold
                    # up the fsyncs of a node's log on the same disk for as long as it took.
                    os.fdatasync(fd)
                    synced = received
                if on_bytes is not None:
                    on_bytes(len(chunk))
            os.fsync(fd)
        finally:
            os.close(fd)
        verify_started = time.perf_counter()
        summary = verify(tmp)
        verify_seconds = time.perf_counter() - verify_started
        if force:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # fails if dest appeared meanwhile: never clobbered
            except FileExistsError:
                raise BackupError(f"{dest} appeared while the backup was taken; it was left "
                                  "alone (pass --force to replace it)") from None
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(dest.parent)
    return replace(summary, path=str(dest)), verify_seconds


def _error_text(response: http.client.HTTPResponse) -> str:
    raw = response.read(ERROR_ANSWER_BYTES_MAX)
    try:
        body = json.loads(raw)
        return str(body.get("error", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500] or "(no reason given)"
