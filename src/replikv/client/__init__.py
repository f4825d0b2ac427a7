"""replikv's smart client, built on redis-py: `Client` (threads) and `AsyncClient` (asyncio).

    from replikv import Client

    with Client("127.0.0.1:7001,127.0.0.1:7002", read_preference="secondaryPreferred") as kv:
        kv.set("greeting", "hello")     # to the leader, as a retryable write
        kv.incr("visits")               # applied exactly once, even across a failover
        kv.get("greeting")              # from a follower, enforced by the follower

It discovers the members from any seed (`REPLIKV TOPOLOGY`), sends writes to the leader and
reads where the read preference allows, and retries what is safe to retry; see
replikv.client.sync for the details and replikv.client.errors for what is retried.
"""

from replikv.client.aio import AsyncClient, AsyncPipeline
from replikv.client.errors import NoMemberAvailable, OutcomeUnknown, UnsupportedCommand
from replikv.client.sync import Client, Pipeline
from replikv.client.topology import Member, Topology

__all__ = ["AsyncClient", "AsyncPipeline", "Client", "Member", "NoMemberAvailable",
           "OutcomeUnknown", "Pipeline", "Topology", "UnsupportedCommand"]
