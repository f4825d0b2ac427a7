"""replikv.AsyncClient: the asyncio twin of replikv.Client (see replikv.client.sync), on
redis.asyncio. The decisions are the same objects (replikv.client.core), and so are the
constructor and the member tables (replikv.client.base); only the I/O differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import redis.asyncio as aioredis
from redis.commands import AsyncCoreCommands
from redis.exceptions import RedisError, ResponseError

from replikv.client.base import ClientBase, PipelineQueue, Queued
from replikv.client.core import Attempt, ClientSession, CommandPlan, Discovery
from replikv.client.errors import NotSent
from replikv.client.routing import Route, command_name
from replikv.client.topology import Topology


class _AsyncSession:
    """Mixed into a redis.asyncio connection class: remembers the replikv session set on its
    server side, forgotten when the connection is."""

    replikv_session: bytes | None = None

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.replikv_session = None
        await super().disconnect(*args, **kwargs)  # type: ignore[misc]


class AsyncReplikvConnection(_AsyncSession, aioredis.Connection):
    """A redis.asyncio connection that remembers the replikv session set on its server side."""


class AsyncReplikvSSLConnection(_AsyncSession, aioredis.SSLConnection):
    """AsyncReplikvConnection over TLS (a Client made with ssl=True)."""


# redis-py's own async command mixins disagree on command_info's signature.
class AsyncClient(ClientBase, AsyncCoreCommands):  # type: ignore[misc]
    """replikv.Client for asyncio: the same arguments and behaviour, with `await` on every
    command (`await client.incr("k")`), `await client.aclose()` and `async with`.

    Safe to share between the tasks of one event loop."""

    _refresh_lock_class = asyncio.Lock

    # -- public -----------------------------------------------------------------------------------

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self._execute_one(args, options)

    async def topology(self, refresh: bool = False) -> Topology | None:
        if refresh or self._core.topology is None:
            await self._refresh(force=True)
        return self._core.topology

    def pipeline(self, transaction: bool = False, shard_hint: None = None) -> AsyncPipeline:
        # redis-py's command mixins declare an _event_dispatcher (CommandsProtocol) they never use.
        return AsyncPipeline(self, transaction)  # type: ignore[abstract]

    async def aclose(self) -> None:
        await _disconnect(self._drop_members())

    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<replikv.AsyncClient seeds={','.join(self.options.seeds)}>"

    # -- the retry loop ---------------------------------------------------------------------------

    async def _execute_one(self, args: tuple, options: dict, routed: Route | None = None) -> Any:
        plan = CommandPlan(self._core, args, time.monotonic(), routed=routed)
        name = command_name(args)
        try:
            return await self._execute(plan, lambda a: self._run(a, name, options))
        finally:
            plan.close()

    async def _execute(self, plan: CommandPlan, run: Any) -> Any:
        while True:
            if self._core.refresh_due(time.monotonic()):
                await self._refresh()
            attempt = plan.next_attempt(time.monotonic())
            if attempt is None:
                delay = plan.on_no_member(time.monotonic())
            else:
                started = time.monotonic()
                try:
                    result = await run(attempt)
                except (NotSent, RedisError, OSError) as e:
                    delay = plan.on_attempt_error(e, address=attempt.address,
                                                  now=time.monotonic())
                else:
                    plan.on_success(attempt.address, time.monotonic() - started)
                    return result
            await asyncio.sleep(delay)

    async def _run(self, attempt: Attempt, name: str, options: dict) -> Any:
        member = self._member(attempt.address)
        async with self._connection(member) as conn:
            await self._send(conn, [attempt.wire], attempt.session)
            return await member.parse_response(conn, name, **dict(options))

    @asynccontextmanager
    async def _connection(self, member: aioredis.Redis) -> AsyncIterator[AsyncReplikvConnection]:
        """replikv.client.sync.Client._connection, awaited."""
        try:
            conn = await member.connection_pool.get_connection()
        except (RedisError, OSError) as e:
            raise NotSent(e) from e
        try:
            yield conn
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await member.connection_pool.release(conn)

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

    def _new_member(self, host: str, port: int, settings: dict) -> aioredis.Redis:
        tls = settings.pop("ssl", False)
        pool = aioredis.ConnectionPool(
            connection_class=AsyncReplikvSSLConnection if tls else AsyncReplikvConnection,
            host=host, port=port, **settings)
        return aioredis.Redis(connection_pool=pool)

    # -- topology ---------------------------------------------------------------------------------

    async def _refresh(self, force: bool = False) -> None:
        generation = self._core.generation
        async with self._refresh_lock:
            if not force and self._core.generation != generation:
                return
            discovery = Discovery(self._core, time.monotonic())
            while (address := discovery.next_address()) is not None:
                try:
                    reply = await self._probe(address)
                except (NotSent, RedisError, OSError) as e:
                    discovery.on_error(address, e)
                else:
                    discovery.on_reply(address, reply)
            if discovery.finish(time.monotonic()) is not None:
                await _disconnect(self._drop_departed())
            await _disconnect(self._probe_members())  # hold no idle probe connections

    async def _probe(self, address: str) -> Any:
        async with self._connection(self._member(address, probe=True)) as conn:
            await conn.send_command("REPLIKV", "TOPOLOGY")
            return await conn.read_response()

    # -- pipelines --------------------------------------------------------------------------------

    async def _execute_pipeline(self, queued: list[Queued], raise_on_error: bool) -> list:
        if self._reads_only(queued):
            results = await self._execute_read_batch(queued)
        else:
            results = []
            for args, options, routed in queued:
                try:
                    results.append(await self._execute_one(args, options, routed))
                except ResponseError as e:
                    results.append(e)
        return self._pipeline_results(results, raise_on_error)

    async def _execute_transaction(self, queued: list[Queued], raise_on_error: bool) -> list:
        commands, plan = self._transaction_plan(queued)

        async def run(attempt: Attempt) -> list:
            member = self._member(attempt.address)
            async with self._connection(member) as conn:
                await self._send(conn, [*commands, attempt.wire], attempt.session)
                await conn.read_response()  # MULTI's OK
                queue_errors = []
                for _ in queued:
                    try:
                        await conn.read_response()  # QUEUED
                    except ResponseError as e:
                        queue_errors.append(e)
                try:
                    replies: object = await conn.read_response()  # EXEC's
                except ResponseError as e:  # EXECABORT after queue errors
                    replies = e
            return self._transaction_results(member, queued, queue_errors, replies)

        try:
            results = await self._execute(plan, run)
        finally:
            plan.close()
        return self._pipeline_results(results, raise_on_error)

    async def _execute_read_batch(self, queued: list[Queued]) -> list:
        wires, batch = self._read_batch_plan(queued)

        async def run(attempt: Attempt) -> list:
            member = self._member(attempt.address)
            async with self._connection(member) as conn:
                await self._send(conn, wires, None)
                results: list = []
                for args, options, _ in queued:
                    try:
                        results.append(await member.parse_response(
                            conn, command_name(args), **dict(options)))
                    except ResponseError as e:
                        results.append(e)
            return self._check_read_batch(results)

        return await self._execute(batch, run)


async def _disconnect(members: list[aioredis.Redis]) -> None:
    for member in members:
        await member.connection_pool.disconnect()


# As AsyncClient's, and reset() empties the queue (see Pipeline), shadowing the RESET command.
class AsyncPipeline(PipelineQueue, AsyncCoreCommands):  # type: ignore[misc]
    """replikv.client.sync.Pipeline for AsyncClient: queue with the usual methods (no await),
    then `await pipe.execute()`."""

    async def execute(self, raise_on_error: bool = True) -> list:
        queued = self._take()
        if not queued:
            return []
        if self._transaction:
            return await self._client._execute_transaction(queued, raise_on_error)
        return await self._client._execute_pipeline(queued, raise_on_error)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reset()


__all__ = ["AsyncClient", "AsyncPipeline", "AsyncReplikvConnection"]
