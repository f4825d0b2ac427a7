"""replikv.Client: a redis-py client for a replikv cluster that finds the leader itself, spreads
reads by read preference and retries writes exactly once across failovers.

It keeps one redis-py connection pool per member (and a small one per member for topology
probes, with a shorter timeout, whose connections are closed after each refresh), and sends
each command on a pooled connection of the member the routing picks (replikv.client.core).
redis-py never retries on its own here (its Retry is set to none): that is this client's job. A retryable write needs `REPLIKV SESSION <id>` on the
connection it travels on: each connection remembers which session its server side has
(`ReplikvConnection.replikv_session`, forgotten whenever the connection drops) and, when the
write's session differs, the client sends `REPLIKV SESSION <id>` in the same packet as the
write. Sessions are per write rather than per connection because a retry after a failover
travels on another connection, to another node, and must carry the same session.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.commands import CoreCommands
from redis.connection import Encoder
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from replikv.client.core import (
    Attempt,
    ClientCore,
    ClientSession,
    CommandPlan,
    Discovery,
    build_options,
)
from replikv.client.errors import Failure, NotSent, UnsupportedCommand, classify
from replikv.client.routing import Kind, Route, command_name, route
from replikv.client.topology import Topology, TopologyError, parse_topology, split_address

TOPOLOGY_TIMEOUT_S = 2.0
PROBE_CONNECTIONS_MAX = 4


class ReplikvConnection(redis.Connection):
    """A redis-py connection that remembers the replikv session set on its server side."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.replikv_session: bytes | None = None
        super().__init__(*args, **kwargs)

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.replikv_session = None  # a new connection starts without a session
        super().disconnect(*args, **kwargs)


def connection_settings(*, socket_timeout: float | None, socket_connect_timeout: float | None,
                        protocol: int | None, decode_responses: bool,
                        max_connections: int | None, extra: dict | None) -> dict:
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
    kwargs.update(extra or {})
    return kwargs


class Client(CoreCommands):
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

    Thread-safe: share one Client between threads. No I/O happens until the first command.
    """

    def __init__(self, seeds: Any = "127.0.0.1:6379", *, read_preference: str = "primary",
                 read_consistency: str | None = None, max_staleness_ms: int | None = None,
                 write_concern: str | int | None = None, wtimeout_ms: int | None = None,
                 retry_writes: bool = True, max_retries: int = 30,
                 retry_deadline_s: float = 30.0, socket_timeout: float | None = 10.0,
                 socket_connect_timeout: float | None = 1.0, topology_refresh_s: float = 10.0,
                 backoff_base_s: float = 0.05, backoff_max_s: float = 1.0,
                 protocol: int | None = None, decode_responses: bool = False,
                 max_connections: int | None = None,
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
            max_connections=max_connections, extra=connection_kwargs)
        self._encoder = Encoder(self._pool_kwargs.get("encoding", "utf-8"),
                                self._pool_kwargs.get("encoding_errors", "strict"),
                                decode_responses)
        self._members: dict[str, redis.Redis] = {}
        self._probes: dict[str, redis.Redis] = {}
        self._members_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._closed = False

    # -- public -----------------------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command to the member its kind and the read preference call for, retrying
        as described in replikv.client.errors."""
        plan = CommandPlan(self._core, args, time.monotonic())
        name = command_name(args)
        try:
            return self._execute(plan, lambda a: self._run(a, name, options))
        finally:
            plan.close()

    def topology(self, refresh: bool = False) -> Topology | None:
        """The members as last discovered (asking first if never asked, or if `refresh`)."""
        if refresh or self._core.topology is None:
            self._refresh(force=True)
        return self._core.topology

    def pipeline(self, transaction: bool = False, shard_hint: None = None) -> Pipeline:
        """Queue commands and run them with execute(); see Pipeline for what it does."""
        if transaction:
            raise UnsupportedCommand("replikv has no transactions (MULTI/EXEC): use "
                                     "pipeline(transaction=False)")
        return Pipeline(self)

    def get_encoder(self) -> Encoder:
        return self._encoder

    def close(self) -> None:
        """Close every connection. The client can be used again (it reconnects)."""
        with self._members_lock:
            pools = [*self._members.values(), *self._probes.values()]
            self._members.clear()
            self._probes.clear()
        for member in pools:
            member.connection_pool.disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<replikv.Client seeds={','.join(self.options.seeds)}>"

    # -- the retry loop ---------------------------------------------------------------------------

    def _execute(self, plan: CommandPlan, run: Any) -> Any:
        while True:
            now = time.monotonic()
            if self._core.refresh_due(now):
                self._refresh()
            attempt = plan.next_attempt(time.monotonic())
            if attempt is None:
                delay = plan.on_failure(plan.no_member_error(), sent=False, address=None,
                                        now=time.monotonic())
            else:
                started = time.monotonic()
                try:
                    result = run(attempt)
                except NotSent as e:
                    delay = plan.on_failure(e.cause, sent=False, address=attempt.address,
                                            now=time.monotonic())
                except (RedisError, OSError) as e:
                    delay = plan.on_failure(e, sent=True, address=attempt.address,
                                            now=time.monotonic())
                else:
                    plan.on_success(attempt.address, time.monotonic() - started)
                    return result
            time.sleep(delay)

    def _run(self, attempt: Attempt, name: str, options: dict) -> Any:
        member = self._member(attempt.address)
        conn = self._connect(member)
        try:
            self._send(conn, [attempt.wire], attempt.session)
            return member.parse_response(conn, name, **dict(options))
        except ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            conn.disconnect()
            raise
        finally:
            member.connection_pool.release(conn)

    def _connect(self, member: redis.Redis) -> ReplikvConnection:
        try:
            return member.connection_pool.get_connection()
        except (RedisError, OSError) as e:
            raise NotSent(e) from e

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

    # -- members ----------------------------------------------------------------------------------

    def _member(self, address: str, *, probe: bool = False) -> redis.Redis:
        table = self._probes if probe else self._members
        member = table.get(address)
        if member is not None:
            return member
        with self._members_lock:
            member = table.get(address)
            if member is None:
                host, port = split_address(address)
                kwargs = dict(self._pool_kwargs)
                if probe:
                    kwargs["socket_timeout"] = TOPOLOGY_TIMEOUT_S
                    kwargs["max_connections"] = PROBE_CONNECTIONS_MAX
                    if kwargs.get("client_name"):  # tell probes apart in CLIENT LIST
                        kwargs["client_name"] = f"{kwargs['client_name']}-topology"
                pool = redis.ConnectionPool(connection_class=ReplikvConnection, host=host,
                                            port=port, **kwargs)
                member = redis.Redis(connection_pool=pool)
                table[address] = member
            return member

    def _forget_departed(self) -> None:
        """Close the pools of addresses that are neither seeds nor members any more."""
        keep = self._core.known_addresses()
        with self._members_lock:
            gone = [(t, a) for t in (self._members, self._probes) for a in t if a not in keep]
            closing = [t.pop(a) for t, a in gone]
        for member in closing:
            member.connection_pool.disconnect()

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
                    view = parse_topology(reply, address)
                except (NotSent, RedisError, OSError, TopologyError) as e:
                    discovery.on_error(address, e)
                    continue
                discovery.on_view(view)
            if discovery.finish(time.monotonic()) is not None:
                self._forget_departed()
            # Probes are rare (every topology_refresh_s, and after failures): hold no idle
            # connections for them.
            with self._members_lock:
                probes = list(self._probes.values())
            for member in probes:
                member.connection_pool.disconnect()

    def _probe(self, address: str) -> Any:
        member = self._member(address, probe=True)
        conn = self._connect(member)
        try:
            conn.send_command("REPLIKV", "TOPOLOGY")
            return conn.read_response()
        except ResponseError:
            raise
        except BaseException:
            conn.disconnect()
            raise
        finally:
            member.connection_pool.release(conn)

    # -- pipelines --------------------------------------------------------------------------------

    def _execute_pipeline(self, queued: list[tuple[tuple, dict, Route]],
                          raise_on_error: bool) -> list:
        if queued and all(r.kind is Kind.READ for _, _, r in queued):
            results = self._execute_read_batch(queued)
        else:
            results = []
            for args, options, routed in queued:
                plan = CommandPlan(self._core, args, time.monotonic(), routed=routed)
                name = command_name(args)
                try:
                    results.append(self._execute(
                        plan, lambda a, n=name, o=options: self._run(a, n, o)))
                except ResponseError as e:
                    results.append(e)
                finally:
                    plan.close()
        if raise_on_error:
            for r in results:
                if isinstance(r, ResponseError):
                    raise r
        return results

    def _execute_read_batch(self, queued: list[tuple[tuple, dict, Route]]) -> list:
        """Reads only: all in one round trip to one member, retried together elsewhere if a
        member error (not a command's own error) hits any of them."""
        wires = [self._core.wire(r) for _, _, r in queued]
        batch = CommandPlan(self._core, ("pipeline",), time.monotonic(),
                            routed=Route(Kind.READ, "pipeline", ()))

        def run(attempt: Attempt) -> list:
            member = self._member(attempt.address)
            conn = self._connect(member)
            try:
                self._send(conn, wires, None)
                results: list = []
                for args, options, _ in queued:
                    try:
                        results.append(member.parse_response(conn, command_name(args),
                                                             **dict(options)))
                    except ResponseError as e:
                        results.append(e)
            except ResponseError:
                raise
            except BaseException:
                conn.disconnect()
                raise
            finally:
                member.connection_pool.release(conn)
            for r in results:
                if isinstance(r, ResponseError) and \
                        classify(r, sent=True) is not Failure.COMMAND:
                    raise r  # a member error: the whole batch goes elsewhere
            return results

        return self._execute(batch, run)


class Pipeline(CoreCommands):
    """Commands queued with the usual methods (`pipe.set(...)`, `pipe.get(...)`) and run by
    `execute()`, which returns their results in order.

    A pipeline of reads only goes to one member in one round trip (retried as a whole on a
    member error). A pipeline with writes runs its commands one after another, each routed and
    retried on its own exactly like a single command: each retryable write needs its own
    sequence number answered before the next is sent, so such a pipeline saves no round trips.
    There are no transactions (MULTI/EXEC). With raise_on_error (the default) the first
    command error (WRONGTYPE, ...) is raised after all commands ran; errors that end a command
    without an answer (OutcomeUnknown, no member reachable) are raised at once, and the
    commands after it are not sent.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue: list[tuple[tuple, dict, Route]] = []

    def execute_command(self, *args: Any, **options: Any) -> Pipeline:
        self._queue.append((args, options, route(args)))
        return self

    def execute(self, raise_on_error: bool = True) -> list:
        queued, self._queue = self._queue, []
        if not queued:
            return []
        return self._client._execute_pipeline(queued, raise_on_error)

    def reset(self) -> None:
        self._queue = []

    def get_encoder(self) -> Encoder:
        return self._client.get_encoder()

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()


__all__ = ["Client", "Pipeline", "ReplikvConnection"]
