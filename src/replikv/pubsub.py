"""Pub/sub: one node's subscriptions, and the frames a subscriber is sent.

PUBLISH goes through the log like a write (see `replikv.node`): every node, when the entry
commits, hands the message to its own subscribers, so the subscribers of every node see the
committed messages in one order. Subscriptions themselves are local to a node and never
replicated: a subscriber connects to one node, as a Redis Cluster client does, and PUBSUB
CHANNELS / NUMSUB / NUMPAT answer that node's view.

`Subscriptions` is pure data, with no I/O: the runtime's connections subscribe and unsubscribe
through it, and the node core reads it (`receivers`, what PUBLISH answers on the leader that
runs it) without calling into the runtime, so the simulator can drive the core with one of its
own. A subscriber is any hashable object (a connection in the runtime). Its dicts keep
insertion order, so delivery order (channel subscribers first, then each matching pattern's, as
Redis's pubsubPublishMessage does) never depends on a hash seed.

Sharded pub/sub (SSUBSCRIBE, SPUBLISH) is a separate namespace with the same machinery, as in
Redis: a shard channel's messages reach only its shard subscribers, and no pattern matches it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import NamedTuple

from replikv.commands.glob import compile_glob
from replikv.resp import encode_reply

# The three namespaces a connection can subscribe in, by the name of their subscribe command.
CHANNEL, PATTERN, SHARD = "subscribe", "psubscribe", "ssubscribe"


class Published(NamedTuple):
    """A message delivered on commit: the log index of the entry that published it, the
    channel, the message, and whether it was SPUBLISH (a shard channel)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as NamedTuple allows
    channel: bytes
    message: bytes
    sharded: bool = False


class Subscriptions:
    """Who is subscribed to what on one node."""

    __slots__ = ("_channels", "_patterns", "_shard_channels")

    def __init__(self) -> None:
        self._channels: dict[bytes, dict[Hashable, None]] = {}
        # pattern -> (its matcher, its subscribers)
        self._patterns: dict[bytes, tuple[Callable[[bytes], bool], dict[Hashable, None]]] = {}
        self._shard_channels: dict[bytes, dict[Hashable, None]] = {}

    # -- what the node core reads ---------------------------------------------------------------

    def receivers(self, channel: bytes) -> int:
        """How many receive a PUBLISH to `channel` here: its subscribers plus, for each pattern
        that matches it, that pattern's subscribers (a client subscribed to the channel and to
        a matching pattern counts twice, as in Redis)."""
        count = len(self._channels.get(channel, ()))
        for matches, subscribers in self._patterns.values():
            if matches(channel):
                count += len(subscribers)
        return count

    def shard_receivers(self, channel: bytes) -> int:
        return len(self._shard_channels.get(channel, ()))

    # -- subscribing ------------------------------------------------------------------------------

    def add(self, namespace: str, name: bytes, subscriber: Hashable) -> bool:
        """Subscribe; False if it already was."""
        if namespace == PATTERN:
            entry = self._patterns.get(name)
            if entry is None:
                entry = self._patterns[name] = (compile_glob(name), {})
            subscribers = entry[1]
        else:
            table = self._channels if namespace == CHANNEL else self._shard_channels
            subscribers = table.setdefault(name, {})
        if subscriber in subscribers:
            return False
        subscribers[subscriber] = None
        return True

    def remove(self, namespace: str, name: bytes, subscriber: Hashable) -> bool:
        """Unsubscribe; False if it was not subscribed. A name left without subscribers goes."""
        if namespace == PATTERN:
            entry = self._patterns.get(name)
            if entry is None or subscriber not in entry[1]:
                return False
            del entry[1][subscriber]
            if not entry[1]:
                del self._patterns[name]
            return True
        table = self._channels if namespace == CHANNEL else self._shard_channels
        subscribers = table.get(name)
        if subscribers is None or subscriber not in subscribers:
            return False
        del subscribers[subscriber]
        if not subscribers:
            del table[name]
        return True

    # -- delivering -------------------------------------------------------------------------------

    def targets(self, channel: bytes, sharded: bool
                ) -> Iterator[tuple[Hashable, bytes | None]]:
        """Everyone a message on `channel` goes to, in Redis's order: (subscriber, None) for a
        channel (or shard channel) subscription, (subscriber, pattern) for each matching
        pattern subscription."""
        if sharded:
            for subscriber in list(self._shard_channels.get(channel, ())):
                yield subscriber, None
            return
        for subscriber in list(self._channels.get(channel, ())):
            yield subscriber, None
        for pattern, (matches, subscribers) in list(self._patterns.items()):
            if matches(channel):
                for subscriber in list(subscribers):
                    yield subscriber, pattern

    # -- PUBSUB -----------------------------------------------------------------------------------

    def channel_names(self, pattern: bytes | None, sharded: bool = False) -> list[bytes]:
        """PUBSUB CHANNELS [pattern] / SHARDCHANNELS [pattern]: channels with a subscriber."""
        table = self._shard_channels if sharded else self._channels
        if pattern is None:
            return list(table)
        matches = compile_glob(pattern)
        return [name for name in table if matches(name)]

    def numsub(self, channel: bytes, sharded: bool = False) -> int:
        table = self._shard_channels if sharded else self._channels
        return len(table.get(channel, ()))

    def numpat(self) -> int:
        """Distinct patterns with a subscriber, as Redis 7 counts PUBSUB NUMPAT."""
        return len(self._patterns)

    def counts(self) -> tuple[int, int, int]:
        """(channels, patterns, shard channels) with at least one subscriber: INFO stats."""
        return len(self._channels), len(self._patterns), len(self._shard_channels)


# -- the frames subscribers are sent (Redis 7's, byte for byte) ----------------------------------


def push_frame(items: list[object], protocol: int) -> bytes:
    """An array of bulk strings, integers and nils: a RESP2 array, or a RESP3 push (`>`)."""
    body = encode_reply(items, protocol)
    return b">" + body[1:] if protocol == 3 else body


def message_frame(channel: bytes, message: bytes, pattern: bytes | None, sharded: bool,
                  protocol: int) -> bytes:
    if pattern is not None:
        return push_frame([b"pmessage", pattern, channel, message], protocol)
    return push_frame([b"smessage" if sharded else b"message", channel, message], protocol)
