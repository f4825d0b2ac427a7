"""Clients blocked in BLPOP, BZPOPMIN and the others: who waits for which key, and whom a
change wakes.

A blocking command is an ordinary write that pops what is there or answers nil
(replikv.commands.blocking). Its connection (replikv.server.resp_server) makes the waiting out of
attempts: it registers a `Blocked` here for the command's keys, and tries, except that when the
node's state holds none of the keys and none of them is busy (`Waiters.busy`: it held something
to pop after a change while clients waited on it, in the last BUSY_S) its first look is a linearizable read (EXISTS), and
the attempt follows only if that finds one: the waiters of an idle queue write nothing, a
lagging follower still sees what the leader committed, and a busy queue, whose elements a
lagging node's state may not show yet, is not made to pay a read's round before each attempt.
An attempt after the first is made only when the node's own state holds one of the keys, of the type the
command pops (`probe`: a local look, no round trip and no log entry, so a client waiting on an
empty queue costs nothing while it waits); each goes to the leader like any write. An attempt that finds nothing (another client was first) leaves the
call waiting.

The node's runtime tells `Waiters` which keys each committed entry changed (`wake`); a change
wakes the longest-waiting idle calls on that key, as Redis serves its blocked clients first
come first served, as many as the key holds elements in the node's state (every one waiting
on a stream), and marks every call whose attempt is under way `dirty`: that attempt may have
run before the change, so if it finds nothing it tries again at once. A call whose attempt popped
something wakes the next one waiting on its keys (`served`): there may be more. Every change
after a call registered is thus followed by an attempt made after it, by that call or by one
before it in line, which is what keeps a pushed element from waiting while a client waits for
it. When the node cannot say which keys changed (it loaded a snapshot, or undid entries it had
applied ahead of their commit) every key counts as changed.

Wake-ups follow this node's committed entries, and the probe reads this node's state: on a
follower both lag the leader by the same entries, so a follower's client is woken when its node
has the element, never on a state that cannot show it yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from replikv.entries import ALL_KEYS


@dataclass(eq=False, slots=True)
class Blocked:
    """One blocked command of one connection, from its first attempt to its reply."""

    keys: tuple[bytes, ...]
    wake: Callable[[], None]  # make an attempt now (the connection's)
    trying: bool = False  # an attempt is under way
    dirty: bool = False  # a key changed while it was: if it finds nothing, try again


# A key that changed while clients waited on it and held something to pop (`changed`'s room),
# less than this long ago, is busy (`busy`).
BUSY_S = 1.0
BUSY_KEYS_MAX = 10_000  # busy keys remembered; past it, those no longer busy are forgotten


class Waiters:
    """The blocked calls of one node, by key, each key's in the order they blocked; and when
    each key last held something to pop after a change while calls waited on it (`clock`'s
    seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_key: dict[bytes, dict[Blocked, None]] = {}
        self.calls = 0
        self._clock = clock
        self._changed_at: dict[bytes, float] = {}

    def __bool__(self) -> bool:
        return self.calls > 0

    def add(self, call: Blocked) -> None:
        for key in call.keys:
            self._by_key.setdefault(key, {})[call] = None
        self.calls += 1

    def remove(self, call: Blocked) -> None:
        for key in call.keys:
            queue = self._by_key.get(key)
            if queue is not None and queue.pop(call, False) is not False and not queue:
                del self._by_key[key]
        self.calls -= 1

    def changed(self, keys: Iterable[bytes], room: Callable[[bytes], int]) -> list[Blocked]:
        """`keys` changed (ALL_KEYS among them: every key): the calls to wake, for each key the
        longest-waiting idle ones, as many as `room(key)` says the key may serve now (a list's
        or a sorted set's length: one element for each; every call for a stream, whose readers
        all read the same entries); calls trying are marked dirty."""
        keys = list(keys)
        if ALL_KEYS in keys:
            keys = list(self._by_key)
        woken: list[Blocked] = []
        now: float | None = None
        for key in keys:
            queue = self._by_key.get(key)
            if not queue:
                continue
            wanted = room(key)
            if wanted > 0:
                if now is None:
                    now = self._clock()
                self._note_changed(key, now)
            for call in queue:
                if call.trying:
                    call.dirty = True
                elif wanted > 0 and call not in woken:
                    woken.append(call)
                    wanted -= 1
        return woken

    def _note_changed(self, key: bytes, now: float) -> None:
        changed_at = self._changed_at
        if len(changed_at) >= BUSY_KEYS_MAX and key not in changed_at:
            since = now - BUSY_S
            changed_at = self._changed_at = {k: t for k, t in changed_at.items() if t > since}
            if len(changed_at) >= BUSY_KEYS_MAX:
                changed_at.clear()  # all busy: a call on one of them reads first, no more
        changed_at[key] = now

    def busy(self, keys: Iterable[bytes]) -> bool:
        """Whether one of `keys` held something to pop after a change while calls waited on it,
        in the last BUSY_S: its queue is in use, and this node's state may just not show its
        next element yet. (A change that left nothing, as an attempt that popped nothing, does
        not count: an idle queue's own attempts never make it busy.)"""
        since = self._clock() - BUSY_S
        changed_at = self._changed_at
        return any(changed_at.get(key, since) > since for key in keys)

    def served(self, call: Blocked) -> list[Blocked]:
        """`call` popped something: the next idle call on each of its keys, to wake."""
        woken: list[Blocked] = []
        for key in call.keys:
            for other in self._by_key.get(key, ()):
                if other is not call and not other.trying:
                    if other not in woken:
                        woken.append(other)
                    break
        return woken


def probe(type_of: Callable[[bytes], bytes | None], keys: Iterable[bytes], wanted: bytes) -> bool:
    """Whether an attempt may find something: the node's state holds one of `keys` with a
    value of the `wanted` type (b"list", b"zset"). A key of another type does not count: as
    in Redis, a blocked client waits on while its key holds a string, and only its first
    attempt answers WRONGTYPE."""
    return any(type_of(key) == wanted for key in keys)
