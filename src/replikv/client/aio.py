"""replikv.AsyncClient: the asyncio twin of replikv.Client (see replikv.client.sync), on
redis.asyncio. The decisions are the same objects (replikv.client.core); only the I/O differs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

import redis.asyncio as aioredis
from redis.commands import AsyncCoreCommands
from redis.connection import Encoder
from redis.exceptions import RedisError, ResponseError

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
from replikv.client.sync import PROBE_CONNECTIONS_MAX, TOPOLOGY_TIMEOUT_S, connection_settings
from replikv.client.topology import Topology, TopologyError, parse_topology, split_address


class AsyncReplikvConnection(aioredis.Connection):
    """A redis.asyncio connection that remembers the replikv session set on its server side."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.replikv_session: bytes | None = None
        super().__init__(*args, **kwargs)

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.replikv_session = None
        await super().disconnect(*args, **kwargs)


class AsyncClient(AsyncCoreCommands):
    """replikv.Client for asyncio: the same arguments and behaviour, with `await` on every
    command (`await client.incr("k")`), `await client.aclose()` and `async with`.

    Safe to share between the tasks of one event loop."""

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
        self._members: dict[str, aioredis.Redis] = {}
        self._probes: dict[str, aioredis.Redis] = {}
        self._refresh_lock: asyncio.Lock | None = None

    # -- public -----------------------------------------------------------------------------------

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        plan = CommandPlan(self._core, args, time.monotonic())
        name = command_name(args)
        try:
            return await self._execute(plan, lambda a: self._run(a, name, options))
        finally:
            plan.close()

    async def topology(self, refresh: bool = False) -> Topology | None:
        if refresh or self._core.topology is None:
            await self._refresh(force=True)
        return self._core.topology

    def pipeline(self, transaction: bool = False, shard_hint: None = None) -> AsyncPipeline:
        if transaction:
            raise UnsupportedCommand("replikv has no transactions (MULTI/EXEC): use "
                                     "pipeline(transaction=False)")
        return AsyncPipeline(self)

    def get_encoder(self) -> Encoder:
        return self._encoder

    async def aclose(self) -> None:
        pools = [*self._members.values(), *self._probes.values()]
        self._members.clear()
        self._probes.clear()
        for member in pools:
            await member.connection_pool.disconnect()

    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<replikv.AsyncClient seeds={','.join(self.options.seeds)}>"

    # -- the retry loop ---------------------------------------------------------------------------

    async def _execute(self, plan: CommandPlan, run: Any) -> Any:
        while True:
            if self._core.refresh_due(time.monotonic()):
                await self._refresh()
            attempt = plan.next_attempt(time.monotonic())
            if attempt is None:
                delay = plan.on_failure(plan.no_member_error(), sent=False, address=None,
                                        now=time.monotonic())
            else:
                started = time.monotonic()
                try:
                    result = await run(attempt)
                except NotSent as e:
                    delay = plan.on_failure(e.cause, sent=False, address=attempt.address,
                                            now=time.monotonic())
                except (RedisError, OSError) as e:
                    delay = plan.on_failure(e, sent=True, address=attempt.address,
                                            now=time.monotonic())
                else:
                    plan.on_success(attempt.address, time.monotonic() - started)
                    return result
            await asyncio.sleep(delay)

    async def _run(self, attempt: Attempt, name: str, options: dict) -> Any:
        member = self._member(attempt.address)
        conn = await self._connect(member)
        try:
            await self._send(conn, [attempt.wire], attempt.session)
            return await member.parse_response(conn, name, **dict(options))
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await member.connection_pool.release(conn)

    async def _connect(self, member: aioredis.Redis) -> AsyncReplikvConnection:
        try:
            return await member.connection_pool.get_connection()
        except (RedisError, OSError) as e:
            raise NotSent(e) from e

    async def _send(self, conn: AsyncReplikvConnection, commands: list[tuple],
                    session: ClientSession | None) -> None:
        if session is not None and conn.replikv_session != session.id:
            await conn.send_packed_command(conn.pack_commands(
                [("REPLIKV", "SESSION", session.id), *commands]))
            try:
                await conn.read_response()
            except ResponseError:
                await conn.disconnect()
                raise
            conn.replikv_session = session.id
        elif len(commands) == 1:
            await conn.send_command(*commands[0])
        else:
            await conn.send_packed_command(conn.pack_commands(commands))

    # -- members ----------------------------------------------------------------------------------

    def _member(self, address: str, *, probe: bool = False) -> aioredis.Redis:
        table = self._probes if probe else self._members
        member = table.get(address)
        if member is None:
            host, port = split_address(address)
            kwargs = dict(self._pool_kwargs)
            if probe:
                kwargs["socket_timeout"] = TOPOLOGY_TIMEOUT_S
                kwargs["max_connections"] = PROBE_CONNECTIONS_MAX
                if kwargs.get("client_name"):  # tell probes apart in CLIENT LIST
                    kwargs["client_name"] = f"{kwargs['client_name']}-topology"
            pool = aioredis.ConnectionPool(connection_class=AsyncReplikvConnection, host=host,
                                           port=port, **kwargs)
            member = table[address] = aioredis.Redis(connection_pool=pool)
        return member

    async def _forget_departed(self) -> None:
        keep = self._core.known_addresses()
        closing = []
        for table in (self._members, self._probes):
            for address in [a for a in table if a not in keep]:
                closing.append(table.pop(address))
        for member in closing:
            await member.connection_pool.disconnect()

    # -- topology ---------------------------------------------------------------------------------

    async def _refresh(self, force: bool = False) -> None:
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        generation = self._core.generation
        async with self._refresh_lock:
            if not force and self._core.generation != generation:
                return
            discovery = Discovery(self._core, time.monotonic())
            while (address := discovery.next_address()) is not None:
                try:
                    reply = await self._probe(address)
                    view = parse_topology(reply, address)
                except (NotSent, RedisError, OSError, TopologyError) as e:
                    discovery.on_error(address, e)
                    continue
                discovery.on_view(view)
            if discovery.finish(time.monotonic()) is not None:
                await self._forget_departed()
            for member in list(self._probes.values()):  # hold no idle probe connections
                await member.connection_pool.disconnect()

    async def _probe(self, address: str) -> Any:
        member = self._member(address, probe=True)
        conn = await self._connect(member)
        try:
            await conn.send_command("REPLIKV", "TOPOLOGY")
            return await conn.read_response()
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await member.connection_pool.release(conn)

    # -- pipelines --------------------------------------------------------------------------------

    async def _execute_pipeline(self, queued: list[tuple[tuple, dict, Route]],
                                raise_on_error: bool) -> list:
        if queued and all(r.kind is Kind.READ for _, _, r in queued):
            results = await self._execute_read_batch(queued)
        else:
            results = []
            for args, options, routed in queued:
                plan = CommandPlan(self._core, args, time.monotonic(), routed=routed)
                name = command_name(args)
                try:
                    results.append(await self._execute(
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

    async def _execute_read_batch(self, queued: list[tuple[tuple, dict, Route]]) -> list:
        wires = [self._core.wire(r) for _, _, r in queued]
        batch = CommandPlan(self._core, ("pipeline",), time.monotonic(),
                            routed=Route(Kind.READ, "pipeline", ()))

        async def run(attempt: Attempt) -> list:
            member = self._member(attempt.address)
            conn = await self._connect(member)
            try:
                await self._send(conn, wires, None)
                results: list = []
                for args, options, _ in queued:
                    try:
                        results.append(await member.parse_response(
                            conn, command_name(args), **dict(options)))
                    except ResponseError as e:
                        results.append(e)
            except ResponseError:
                raise
            except BaseException:
                await conn.disconnect()
                raise
            finally:
                await member.connection_pool.release(conn)
            for r in results:
                if isinstance(r, ResponseError) and \
                        classify(r, sent=True) is not Failure.COMMAND:
                    raise r
            return results

        return await self._execute(batch, run)


class AsyncPipeline(AsyncCoreCommands):
    """replikv.client.sync.Pipeline for AsyncClient: queue with the usual methods (no await),
    then `await pipe.execute()`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._queue: list[tuple[tuple, dict, Route]] = []

    def execute_command(self, *args: Any, **options: Any) -> AsyncPipeline:  # type: ignore[override]
        self._queue.append((args, options, route(args)))
        return self

    async def execute(self, raise_on_error: bool = True) -> list:
        queued, self._queue = self._queue, []
        if not queued:
            return []
        return await self._client._execute_pipeline(queued, raise_on_error)

    def reset(self) -> None:
        self._queue = []

    def get_encoder(self) -> Encoder:
        return self._client.get_encoder()

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reset()


__all__ = ["AsyncClient", "AsyncPipeline", "AsyncReplikvConnection"]
