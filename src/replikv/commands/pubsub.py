"""PUBLISH and SPUBLISH: the pub/sub commands that go through the log.

PUBLISH is ordered with the writes (the leader runs it, the entry is replicated, and every node
delivers the message to its own subscribers when the entry commits: see `replikv.node` and
`replikv.pubsub`), but it changes no key: running it only hands the message to the state's
outbox (`KVState.publish`), which in passive mode is also the entry's one effect. Its reply is
the number of subscribers on the node that runs it (the leader), as Redis Cluster counts a
node's own receivers. The subscribe commands belong to a connection and are the connection's
(`replikv.server.resp_server`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replikv.state import KVState

# The commands that put a message in the log (what the disk refusal refuses, as it refuses the
# writes that add data, although Redis does not flag them denyoom).
PUBLISHING = frozenset({"publish", "spublish"})


def parse_publish(argv: list[bytes]) -> tuple[bytes, bytes]:
    return argv[1], argv[2]


def run_publish(state: KVState, parsed: tuple[bytes, bytes], time_ms: int) -> int:
    channel, message = parsed
    return state.publish(channel, message, sharded=False)


def run_spublish(state: KVState, parsed: tuple[bytes, bytes], time_ms: int) -> int:
    channel, message = parsed
    return state.publish(channel, message, sharded=True)
