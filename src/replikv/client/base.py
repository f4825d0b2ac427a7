"""What the thread-based Client and the asyncio AsyncClient share besides the decisions in
replikv.client.core: the constructor (options, connection pool settings), the tables of
per-member redis-py clients, and the pipeline's queue. Nothing here does I/O; the subclasses
(replikv.client.sync, replikv.client.aio) connect, send, receive and sleep, each in its own way.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from redis.backoff import NoBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.connection import Encoder
from redis.exceptions import ResponseError
from redis.retry import Retry

from replikv.client.core import ClientCore, CommandPlan, build_options
from replikv.client.errors import Failure, UnsupportedCommand, classify
from replikv.client.routing import PUBSUB_REFUSED, Kind, Route, command_name, route
from replikv.client.topology import split_address

TOPOLOGY_TIMEOUT_S = 2.0
PROBE_CONNECTIONS_MAX = 4

Queued = tuple[tuple, dict, Route]  # a pipelined command: its arguments, options and route


def connection_settings(*, socket_timeout: float | None, socket_connect_timeout: float | None,
                        protocol: int | None, decode_responses: bool,
                        max_connections: int | None, extra: dict | None,
                        password: str | None = None) -> dict:
    """Keyword arguments for every member's redis-py connection pool."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout,
        "decode_responses": decode_responses,
        # Retrying is this client's job: redis-py must never resend a command on its own.
        "retry": Retry(NoBackoff(), 0),
    }
    if protocol is not None:
        kwargs["protocol"] = protocol
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    if password is not None:  # every connection authenticates as it opens (AUTH / HELLO AUTH)
        kwargs["password"] = password
    kwargs.update(extra or {})
    return kwargs


class ClientBase:
    """The constructor and the I/O-free parts of Client and AsyncClient (see Client for the
    arguments). A subclass sets `_refresh_lock_class` and makes the redis-py client of one
    member in `_new_member`."""

    _refresh_lock_class: Any  # threading.Lock or asyncio.Lock: one topology refresh at a time

    def __init__(self, seeds: Any = "127.0.0.1:6379", *, read_preference: str = "primary",
                 read_consistency: str | None = None, max_staleness_ms: int | None = None,
                 write_concern: str | int | None = None, wtimeout_ms: int | None = None,
                 retry_writes: bool = True, max_retries: int = 30,
                 retry_deadline_s: float = 30.0, socket_timeout: float | None = 10.0,
                 socket_connect_timeout: float | None = 1.0, topology_refresh_s: float = 10.0,
                 backoff_base_s: float = 0.05, backoff_max_s: float = 1.0,
                 protocol: int | None = None, decode_responses: bool = False,
                 max_connections: int | None = None, password: str | None = None,
                 ssl: bool = False, ssl_ca_certs: str | None = None,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 ssl_check_hostname: bool = False,
                 connection_kwargs: dict | None = None) -> None:
        self.options = build_options(
            seeds, read_preference=read_preference, read_consistency=read_consistency,
            max_staleness_ms=max_staleness_ms, write_concern=write_concern,
            wtimeout_ms=wtimeout_ms, retry_writes=retry_writes, max_retries=max_retries,
            retry_deadline_s=retry_deadline_s, topology_refresh_s=topology_refresh_s,
            backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s)
        self._core = ClientCore(self.options)
        self._pool_kwargs = connection_settings(
            socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout,
            protocol=protocol, decode_responses=decode_responses,
            max_connections=max_connections, password=password,
            extra={**({"ssl": True, "ssl_ca_certs": ssl_ca_certs, "ssl_certfile": ssl_certfile,
                       "ssl_keyfile": ssl_keyfile, "ssl_cert_reqs": "required",
                       "ssl_check_hostname": ssl_check_hostname} if ssl else {}),
                   **(connection_kwargs or {})})
        self._encoder = Encoder(self._pool_kwargs.get("encoding", "utf-8"),
                                self._pool_kwargs.get("encoding_errors", "strict"),
                                decode_responses)
        # address -> redis-py client with its own pool; probes: the topology probes' pools
        self._members: dict[str, Any] = {}
        self._probes: dict[str, Any] = {}
        # Guards the two tables. AsyncClient never waits on it: no await happens under it.
        self._members_lock = threading.Lock()
        self._refresh_lock = self._refresh_lock_class()

    def pubsub(self, **_kwargs: Any) -> None:
        """redis-py's pub/sub object: refused (UnsupportedCommand), as are its commands."""
        raise UnsupportedCommand(f"pubsub() is not available in replikv.Client: {PUBSUB_REFUSED}")

    def monitor(self) -> None:
        """redis-py's MONITOR: refused (UnsupportedCommand)."""
        raise UnsupportedCommand("monitor() is not available in replikv.Client: MONITOR is not "
                                 "supported by replikv")

    def get_encoder(self) -> Encoder:
        return self._encoder

    # -- members ----------------------------------------------------------------------------------

    def _member(self, address: str, *, probe: bool = False) -> Any:
        """The redis-py client of `address`, made on first use (no connection yet); `probe`:
        the small pool with a short timeout that topology probes use."""
        table = self._probes if probe else self._members
        member = table.get(address)
        if member is not None:
            return member
        with self._members_lock:
            member = table.get(address)
            if member is None:
                host, port = split_address(address)
                member = table[address] = self._new_member(host, port, self._pool_settings(probe))
            return member

    def _new_member(self, host: str, port: int, settings: dict) -> Any:
        """A redis-py client of host:port whose connection pool is made with `settings`."""
        raise NotImplementedError

    def _pool_settings(self, probe: bool) -> dict:
        kwargs = dict(self._pool_kwargs)
        if probe:
            kwargs["socket_timeout"] = TOPOLOGY_TIMEOUT_S
            kwargs["max_connections"] = PROBE_CONNECTIONS_MAX
            if kwargs.get("client_name"):  # tell probes apart in CLIENT LIST
                kwargs["client_name"] = f"{kwargs['client_name']}-topology"
        return kwargs

    def _drop_members(self, keep: set[str] | None = None) -> list:
        """Take the members (and probes) whose address is not in `keep` (all if None) out of
        the tables, for the caller to disconnect."""
        with self._members_lock:
            gone = [(table, address) for table in (self._members, self._probes)
                    for address in table if keep is None or address not in keep]
            return [table.pop(address) for table, address in gone]

    def _drop_departed(self) -> list:
        """_drop_members for addresses that are neither seeds nor members any more."""
        return self._drop_members(keep=self._core.known_addresses())

    def _probe_members(self) -> list:
        with self._members_lock:
            return list(self._probes.values())

    # -- pipelines --------------------------------------------------------------------------------

    @staticmethod
    def _reads_only(queued: list[Queued]) -> bool:
        """Whether a pipeline can go as one batch of reads (see Pipeline)."""
        return bool(queued) and all(r.kind is Kind.READ for _, _, r in queued)

    def _read_batch_plan(self, queued: list[Queued]) -> tuple[list[tuple], CommandPlan]:
        """What to send for a batch of reads, and the plan that retries it as a whole."""
        wires = [self._core.wire(r) for _, _, r in queued]
        plan = CommandPlan(self._core, ("pipeline",), time.monotonic(),
                           routed=Route(Kind.READ, "pipeline", ()))
        return wires, plan

    @staticmethod
    def _check_read_batch(results: list) -> list:
        """`results`, unless one is a member error (not a command's own error): then raise it,
        and the whole batch goes elsewhere."""
        for r in results:
            if isinstance(r, ResponseError) and classify(r, sent=True) is not Failure.COMMAND:
                raise r
        return results

    def _transaction_plan(self, queued: list[Queued]) -> tuple[list[tuple], CommandPlan]:
        """What to send for a transaction before its EXEC (MULTI and the commands), and the plan
        that sends and retries it as one write: its attempts' wire is the EXEC, with this
        client's write concern and, with retry_writes, the one sequence number that makes a
        resent transaction apply once."""
        for _, _, r in queued:
            if r.kind is not Kind.WRITE and r.kind is not Kind.READ:
                raise UnsupportedCommand(f"{r.name.upper()} cannot be inside a transaction: "
                                         "only data commands can")
        plan = CommandPlan(self._core, ("EXEC",), time.monotonic(),
                           routed=Route(Kind.WRITE, "exec", ("EXEC",)))
        return [("MULTI",), *(r.args for _, _, r in queued)], plan

    @staticmethod
    def _transaction_results(member: Any, queued: list[Queued], queue_errors: list,
                             replies: object) -> list:
        """EXEC's replies passed through redis-py's response callbacks, each by its command
        (an error stays an error in its slot); or the first error a command got when queued."""
        if queue_errors:
            raise queue_errors[0]  # what made EXEC answer EXECABORT
        if isinstance(replies, ResponseError):
            raise replies
        if not isinstance(replies, list) or len(replies) != len(queued):
            raise ResponseError(f"unexpected reply to EXEC: {replies!r:.200}")
        results = []
        for (args, options, _), reply in zip(queued, replies):
            callback = member.response_callbacks.get(command_name(args))
            if callback is None or isinstance(reply, ResponseError):
                results.append(reply)
                continue
            # As redis-py's parse_response: these options are for the reading, not the callback.
            kwargs = {k: v for k, v in options.items()
                      if k not in ("keys", EMPTY_RESPONSE, NEVER_DECODE)}
            results.append(callback(reply, **kwargs))
        return results

    @staticmethod
    def _pipeline_results(results: list, raise_on_error: bool) -> list:
        """`results`, or with raise_on_error the first command error among them raised."""
        if raise_on_error:
            for r in results:
                if isinstance(r, ResponseError):
                    raise r
        return results


class PipelineQueue:
    """The queue of Pipeline and AsyncPipeline: commands are queued without I/O (also in the
    asyncio one: no await), and `execute()` hands them to the client."""

    def __init__(self, client: Any, transaction: bool = False) -> None:
        self._client = client
        self._transaction = transaction
        self._queue: list[Queued] = []

    def execute_command(self, *args: Any, **options: Any) -> Self:
        self._queue.append((args, options, route(args)))
        return self

    def reset(self) -> None:
        self._queue = []

    def get_encoder(self) -> Encoder:
        return self._client.get_encoder()

    def _take(self) -> list[Queued]:
        """The queued commands, leaving the queue empty."""
        queued, self._queue = self._queue, []
        return queued

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return True


__all__ = ["PROBE_CONNECTIONS_MAX", "TOPOLOGY_TIMEOUT_S", "ClientBase", "PipelineQueue",
           "Queued", "connection_settings"]
