"""replikv.Client: a redis-py client for a replikv cluster that finds the leader itself, spreads
reads by read preference and retries writes exactly once across failovers.

It keeps one redis-py connection pool per member (and a small one per member for topology
probes, with a shorter timeout, whose connections are closed after each refresh), and sends
each command on a pooled connection of the member the routing picks (replikv.client.core).
redis-py never retries on its own here (its Retry is set to none): that is this client's job.
A retryable write needs `REPLIKV SESSION <id>` on the connection it travels on: each
connection remembers which session its server side has
(`ReplikvConnection.replikv_session`, forgotten whenever the connection drops) and, when the
write's session differs, the client sends `REPLIKV SESSION <id>` in the same packet as the
write. Sessions are per write rather than per connection because a retry after a failover
travels on another connection, to another node, and must carry the same session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self, cast

import redis
from redis.commands import CoreCommands
from redis.exceptions import RedisError, ResponseError

from replikv.client.base import ClientBase, PipelineQueue, Queued
from replikv.client.core import Attempt, ClientSession, CommandPlan, Discovery
from replikv.client.errors import NotSent
from replikv.client.routing import Route, command_name
from replikv.client.topology import Topology


class _Session:
    """Mixed into a redis-py connection class: remembers the replikv session set on its server
    side, forgotten when the connection is (a new connection starts without one)."""

    replikv_session: bytes | None = None

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.replikv_session = None
        super().disconnect(*args, **kwargs)  # type: ignore[misc]


class ReplikvConnection(_Session, redis.Connection):
    """A redis-py connection that remembers the replikv session set on its server side."""


class ReplikvSSLConnection(_Session, redis.SSLConnection):
    """ReplikvConnection over TLS (a Client made with ssl=True)."""


class Client(ClientBase, CoreCommands):
    """A replikv cluster client with redis-py's command methods (`set`, `get`, `incr`, ...).

    seeds: where to start: "host:port,host:port" or a list of "host:port" / (host, port); any
        reachable member will do, the others are discovered with REPLIKV TOPOLOGY.
    read_preference: "primary" (the leader), "primaryPreferred", "secondary" (followers, round
        robin), "secondaryPreferred" (followers, else the leader), "nearest" (the members with
        the lowest measured round trip, round robin). Every read is sent with REPLIKV WITH
        READPREF, so the serving member enforces it.
    read_consistency: None (the node's default, linearizable unless configured otherwise),
        "linearizable", "lease" or "local"; max_staleness_ms bounds a replica's lag.
    write_concern: None (the node's default), "1", "majority" or "all"; wtimeout_ms for "all".
    retry_writes: send writes as retryable writes (a session and a sequence number), so that a
        write retried after a failure is applied exactly once. With False, a write whose
        connection failed after it was sent raises OutcomeUnknown.
    max_retries, retry_deadline_s: a command is tried at most 1 + max_retries times and not
        after its deadline; pauses between tries grow exponentially from backoff_base_s to
        backoff_max_s, with jitter.
    socket_timeout, socket_connect_timeout: per connection, as in redis-py. Keep socket_timeout
        above the nodes' request_timeout_ms (5 s by default).
    topology_refresh_s: how often the topology is asked for again (also after any failure).
    protocol, decode_responses, max_connections: as in redis-py, for every member's pool;
        connection_kwargs: anything else for redis-py's ConnectionPool.
    password: the cluster's password (its members' requirepass), given by every connection
        as it opens, topology probes included; None for a cluster without one.
    ssl, ssl_ca_certs, ssl_certfile, ssl_keyfile: TLS, as in redis-py: ssl=True and the
        cluster's CA certificate (a node's certificate is checked against it, not against the
        address dialled; ssl_check_hostname=True turns that on too).

    Thread-safe: share one Client between threads. No I/O happens until the first command.
    """

    _refresh_lock_class = threading.Lock

    # -- public -----------------------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command to the member its kind and the read preference call for, retrying
        as described in replikv.client.errors."""
        return self._execute_one(args, options)

    def topology(self, refresh: bool = False) -> Topology | None:
        """The members as last discovered (asking first if never asked, or if `refresh`)."""
        if refresh or self._core.topology is None:
            self._refresh(force=True)
        return self._core.topology

    def pipeline(self, transaction: bool = False, shard_hint: None = None) -> Pipeline:
        """Queue commands and run them with execute(); see Pipeline for what it does. With
        transaction=True they run as one MULTI ... EXEC."""
        # redis-py's command mixins declare an _event_dispatcher (CommandsProtocol) they never use.
        return Pipeline(self, transaction)  # type: ignore[abstract]

    def close(self) -> None:
        """Close every connection. The client can be used again (it reconnects)."""
        _disconnect(self._drop_members())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<replikv.Client seeds={','.join(self.options.seeds)}>"

    # -- the retry loop ---------------------------------------------------------------------------

    def _execute_one(self, args: tuple, options: dict, routed: Route | None = None) -> Any:
        plan = CommandPlan(self._core, args, time.monotonic(), routed=routed)
        name = command_name(args)
        try:
            return self._execute(plan, lambda a: self._run(a, name, options))
        finally:
            plan.close()

    def _execute(self, plan: CommandPlan, run: Any) -> Any:
        while True:
            if self._core.refresh_due(time.monotonic()):
                self._refresh()
            attempt = plan.next_attempt(time.monotonic())
            if attempt is None:
                delay = plan.on_no_member(time.monotonic())
            else:
                started = time.monotonic()
                try:
                    result = run(attempt)
                except (NotSent, RedisError, OSError) as e:
                    delay = plan.on_attempt_error(e, address=attempt.address,
                                                  now=time.monotonic())
                else:
                    plan.on_success(attempt.address, time.monotonic() - started)
                    return result
            time.sleep(delay)

    def _run(self, attempt: Attempt, name: str, options: dict) -> Any:
        member = self._member(attempt.address)
        with self._connection(member) as conn:
            self._send(conn, [attempt.wire], attempt.session)
            return member.parse_response(conn, name, **dict(options))

    @contextmanager
    def _connection(self, member: redis.Redis) -> Iterator[ReplikvConnection]:
        """A pooled connection of `member` (NotSent if none can be had), given back after use.
        If anything but an error reply interrupts its use, it is closed: replies may still
        be on their way and would answer the next command."""
        try:
            # The pool makes ReplikvConnections (connection_class); redis-py types it by the base.
            conn = cast(ReplikvConnection, member.connection_pool.get_connection())
        except (RedisError, OSError) as e:
            raise NotSent(e) from e
        try:
            yield conn
        except ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            conn.disconnect()
            raise
        finally:
            member.connection_pool.release(conn)

    def _send(self, conn: ReplikvConnection, commands: list[tuple],
              session: ClientSession | None) -> None:
        """Send `commands` in one packet, preceded by REPLIKV SESSION if the connection's
        session is not `session`."""
        if session is not None and conn.replikv_session != session.id:
            conn.send_packed_command(conn.pack_commands(
                [("REPLIKV", "SESSION", session.id), *commands]))
            try:
                conn.read_response()
            except ResponseError:
                conn.disconnect()  # the replies to `commands` are still on their way
                raise
            conn.replikv_session = session.id
        elif len(commands) == 1:
            conn.send_command(*commands[0])
        else:
            conn.send_packed_command(conn.pack_commands(commands))

    def _new_member(self, host: str, port: int, settings: dict) -> redis.Redis:
        tls = settings.pop("ssl", False)
        pool = redis.ConnectionPool(
            connection_class=ReplikvSSLConnection if tls else ReplikvConnection, host=host,
            port=port, **settings)
        return redis.Redis(connection_pool=pool)

    # -- topology ---------------------------------------------------------------------------------

    def _refresh(self, force: bool = False) -> None:
        generation = self._core.generation
        with self._refresh_lock:
            if not force and self._core.generation != generation:
                return  # another thread refreshed while this one waited
            discovery = Discovery(self._core, time.monotonic())
            while (address := discovery.next_address()) is not None:
                try:
                    reply = self._probe(address)
                except (NotSent, RedisError, OSError) as e:
                    discovery.on_error(address, e)
                else:
                    discovery.on_reply(address, reply)
            if discovery.finish(time.monotonic()) is not None:
                _disconnect(self._drop_departed())
            # Probes are rare (every topology_refresh_s, and after failures): hold no idle
            # connections for them.
            _disconnect(self._probe_members())

    def _probe(self, address: str) -> Any:
        with self._connection(self._member(address, probe=True)) as conn:
            conn.send_command("REPLIKV", "TOPOLOGY")
            return conn.read_response()

    # -- pipelines --------------------------------------------------------------------------------

    def _execute_pipeline(self, queued: list[Queued], raise_on_error: bool) -> list:
        if self._reads_only(queued):
            results = self._execute_read_batch(queued)
        else:
            results = []
            for args, options, routed in queued:
                try:
                    results.append(self._execute_one(args, options, routed))
                except ResponseError as e:
                    results.append(e)
        return self._pipeline_results(results, raise_on_error)

    def _execute_transaction(self, queued: list[Queued], raise_on_error: bool) -> list:
        commands, plan = self._transaction_plan(queued)

        def run(attempt: Attempt) -> list:
            member = self._member(attempt.address)
            with self._connection(member) as conn:
                self._send(conn, [*commands, attempt.wire], attempt.session)
                conn.read_response()  # MULTI's OK
                queue_errors = []
                for _ in queued:
                    try:
                        conn.read_response()  # QUEUED
                    except ResponseError as e:
                        queue_errors.append(e)
                try:
                    replies: object = conn.read_response()  # EXEC's
                except ResponseError as e:  # EXECABORT after queue errors
                    replies = e
            return self._transaction_results(member, queued, queue_errors, replies)

        try:
            results = self._execute(plan, run)
        finally:
            plan.close()
        return self._pipeline_results(results, raise_on_error)

    def _execute_read_batch(self, queued: list[Queued]) -> list:
        """Reads only: all in one round trip to one member, retried together elsewhere if a
        member error (not a command's own error) hits any of them."""
        wires, batch = self._read_batch_plan(queued)

        def run(attempt: Attempt) -> list:
            member = self._member(attempt.address)
            with self._connection(member) as conn:
                self._send(conn, wires, None)
                results: list = []
                for args, options, _ in queued:
                    try:
                        results.append(member.parse_response(conn, command_name(args),
                                                             **dict(options)))
                    except ResponseError as e:
                        results.append(e)
            return self._check_read_batch(results)

        return self._execute(batch, run)


def _disconnect(members: list[redis.Redis]) -> None:
    for member in members:
        member.connection_pool.disconnect()


# reset() empties the queue, as redis-py's Pipeline.reset does, and so shadows the RESET command.
class Pipeline(PipelineQueue, CoreCommands):  # type: ignore[misc]
    """Commands queued with the usual methods (`pipe.set(...)`, `pipe.get(...)`) and run by
    `execute()`, which returns their results in order.

    A pipeline of reads only goes to one member in one round trip (retried as a whole on a
    member error). A pipeline with writes runs its commands one after another, each routed and
    retried on its own exactly like a single command: each retryable write needs its own
    sequence number answered before the next is sent, so such a pipeline saves no round trips.
    With transaction=True the commands run as one transaction instead (MULTI, the commands,
    EXEC, in one round trip to the leader): applied together as one log entry, with nothing in
    between, and with retry_writes resent under one sequence number if the answer was lost, so
    applied once. Reads inside it see the state at its place in the log.

    With raise_on_error (the default) the first command error (WRONGTYPE, ...) is raised after
    all commands ran; errors that end a command without an answer (OutcomeUnknown, no member
    reachable) are raised at once, and the commands after it are not sent.
    """

    def execute(self, raise_on_error: bool = True) -> list:
        queued = self._take()
        if not queued:
            return []
        if self._transaction:
            return self._client._execute_transaction(queued, raise_on_error)
        return self._client._execute_pipeline(queued, raise_on_error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()


__all__ = ["Client", "Pipeline", "ReplikvConnection"]
