"""The replicated key-value state machine: deterministic apply, local reads, expiry, checksum.

Every replica applies the same log entries in the same order through `apply_command` (a write,
with the leader's clock fixed inside the entry) and `apply_expire` (a batch of expired keys the
leader proposed), and must end in the same state with the same replies. So nothing here reads a
clock, draws a random number, or iterates a Python set of keys (bytes hashes change with
PYTHONHASHSEED between processes); dict insertion order is deterministic and is what we iterate.

Reads (`execute_read`) run against local state with the node's own clock and never change
anything, not even to drop an expired key: deletion only happens through the log, so replicas
stay identical. A key whose expiry time is <= the time of the operation is treated as absent.

Layout, chosen for memory and for SCAN: keys live in SHARD_COUNT plain dicts (key -> value
bytes), the shard picked by crc32 (stable across processes, unlike hash()). SCAN's cursor is a
shard number, so a key present for the whole scan is returned at least once no matter how the
dicts resize. Expiry times sit in one separate dict holding only keys that have one, plus a heap
of (expire_at_ms, key) with lazy invalidation, so `expired_keys` finds due keys without a sweep.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
import zlib
from collections.abc import Iterable, Iterator

from replikv.commands import keys_of, parse_command
from replikv.invariants import invariant
from replikv.replies import CommandError

SHARD_COUNT = 4096  # a power of two: the shard is crc32(key) & (SHARD_COUNT - 1)

# Stale heap entries (expiry changed or removed) are dropped lazily; once they outnumber the
# live ones by this factor (plus a floor, so small states never bother) the heap is rebuilt.
EXPIRY_HEAP_SLACK_FACTOR = 2
EXPIRY_HEAP_SLACK_ENTRIES_MIN = 1024

# used_bytes() estimates CPython's cost per key beyond the key and value bytes themselves
# (two bytes-object headers rounded up by the allocator, a share of the shard dict's table) and
# per expiry (an int, an entry in the expiry dict, a heap tuple). Measured with tracemalloc on
# 1,000,000 keys of 16 bytes with 100-byte values; RSS adds about 30 bytes/key of allocator slack.
KEY_OVERHEAD_BYTES = 104
EXPIRY_OVERHEAD_BYTES = 138

DIGEST_FORMAT = b"replikv-state-v1"


def shard_of(key: bytes) -> int:
    return zlib.crc32(key) & (SHARD_COUNT - 1)


class KVState:
    """The whole keyspace of one replica. Commands reach it through the primitives below
    (`get`, `write`, `delete`, ...), which keep the shards, the expiry dict, the heap and the
    counters consistent; only this class touches those structures."""

    __slots__ = ("_data_bytes", "_expires", "_expiry_heap", "_key_count", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[bytes, bytes]] = [{} for _ in range(SHARD_COUNT)]
        self._expires: dict[bytes, int] = {}
        self._expiry_heap: list[tuple[int, bytes]] = []
        self._key_count = 0
        self._data_bytes = 0  # sum of len(key) + len(value) over all keys

    # ---- the replicated and local entry points ----

    def apply_command(self, argv: list[bytes], time_ms: int) -> object:
        """Apply one command from the log at the leader's time `time_ms`; return its reply.

        A client mistake becomes an ErrorReply and leaves the logical state unchanged (keys the
        command named that had already expired at `time_ms` may have been dropped first, which
        every replica does alike). Read commands are accepted too, so a node may order reads
        through the log."""
        try:
            spec, parsed = parse_command(argv)
        except CommandError as error:
            return error.reply()
        if spec.kind == "write":
            # Drop the keys this command names that are already expired at the entry's time, so
            # the command sees them absent, and an INCR or KEEPTTL cannot revive an old expiry.
            for key in keys_of(spec, argv):
                self._drop_if_expired(key, time_ms)
        try:
            return spec.run(self, parsed, time_ms)
        except CommandError as error:
            return error.reply()

    def execute_read(self, argv: list[bytes], now_ms: int) -> object:
        """Serve a read command from local state at the local time `now_ms`; never mutates."""
        try:
            spec, parsed = parse_command(argv)
        except CommandError as error:
            return error.reply()
        invariant(spec.kind == "read", f"execute_read given the write command {spec.name!r}")
        try:
            return spec.run(self, parsed, now_ms)
        except CommandError as error:
            return error.reply()

    def expired_keys(self, now_ms: int, limit: int) -> list[bytes]:
        """Keys whose expiry is <= now_ms, soonest first, at most `limit` of them. For the
        leader to propose as an expiry entry; the keys stay until `apply_expire` runs."""
        heap = self._expiry_heap
        found: list[bytes] = []
        due: list[tuple[int, bytes]] = []
        seen: set[bytes] = set()  # membership only, never iterated
        while heap and len(found) < limit:
            expire_at_ms, key = heap[0]
            if expire_at_ms > now_ms:
                break
            heapq.heappop(heap)
            if self._expires.get(key) != expire_at_ms or key in seen:
                continue  # stale (expiry changed, removed, or key deleted) or a duplicate
            seen.add(key)
            found.append(key)
            due.append((expire_at_ms, key))
        # The due keys are still in the state until the expiry entry applies; keep their entries.
        for entry in due:
            heapq.heappush(heap, entry)
        return found

    def apply_expire(self, keys: Iterable[bytes], time_ms: int) -> int:
        """Apply an expiry entry: delete each key that still has an expiry <= time_ms (a write
        since the leader listed it may have changed or removed it). Returns how many went."""
        deleted = 0
        for key in keys:
            if self._drop_if_expired(key, time_ms):
                deleted += 1
        return deleted

    # ---- observation ----

    def key_count(self) -> int:
        """Keys stored, including expired ones not yet deleted through the log (as Redis's
        DBSIZE counts them): equal on every replica at the same log index."""
        return self._key_count

    def expires_count(self) -> int:
        return len(self._expires)

    def used_bytes(self) -> int:
        """An estimate of the memory the keyspace holds (see KEY_OVERHEAD_BYTES)."""
        return (
            self._data_bytes
            + self._key_count * KEY_OVERHEAD_BYTES
            + len(self._expires) * EXPIRY_OVERHEAD_BYTES
        )

    def digest(self) -> str:
        """A checksum of the whole state (keys, values, expiry times) as hex.

        Independent of insertion order: shards are visited in order and each shard's keys in
        sorted order, and a key's shard depends only on the key. Every field is length-prefixed
        so no two different states produce the same byte stream."""
        checksum = hashlib.blake2b(DIGEST_FORMAT, digest_size=16)
        checksum.update(struct.pack(">Q", self._key_count))
        update = checksum.update
        pack_lengths = struct.Struct(">QQ").pack
        pack_expiry = struct.Struct(">Bq").pack
        expires = self._expires
        for shard in self._shards:
            for key in sorted(shard):
                value = shard[key]
                expire_at_ms = expires.get(key)
                update(pack_lengths(len(key), len(value)))
                update(key)
                update(value)
                if expire_at_ms is None:
                    update(b"\x00")
                else:
                    update(pack_expiry(1, expire_at_ms))
        return checksum.hexdigest()

    def items(self) -> Iterator[tuple[bytes, bytes, int | None]]:
        """Every (key, value, expire_at_ms or None) in a deterministic order, for snapshots.
        Includes expired keys not yet deleted through the log, so a restore is exact."""
        expires = self._expires
        for shard in self._shards:
            for key, value in shard.items():
                yield key, value, expires.get(key)

    def restore_item(self, key: bytes, value: bytes, expire_at_ms: int | None) -> None:
        """Load one item from a snapshot into a state being rebuilt."""
        self.write(key, value, expire_at_ms)

    # ---- primitives for the command implementations ----

    def get(self, key: bytes, time_ms: int) -> bytes | None:
        """The value of `key` at `time_ms`, or None if it is absent or expired."""
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            return None
        if self._expires:
            expire_at_ms = self._expires.get(key)
            if expire_at_ms is not None and expire_at_ms <= time_ms:
                return None
        return value

    def expire_at_ms(self, key: bytes) -> int | None:
        """The absolute expiry time of a stored key, or None if it has none."""
        return self._expires.get(key)

    def write(
        self,
        key: bytes,
        value: bytes,
        expire_at_ms: int | None = None,
        *,
        keep_ttl: bool = False,
    ) -> None:
        """Store `value` under `key`. With keep_ttl the key's current expiry (if any) stays;
        otherwise the expiry becomes `expire_at_ms` (None: no expiry)."""
        invariant(type(value) is bytes, "values are stored as bytes")
        shard = self._shards[shard_of(key)]
        old = shard.get(key)
        if old is None:
            self._key_count += 1
            self._data_bytes += len(key) + len(value)
        else:
            self._data_bytes += len(value) - len(old)
        shard[key] = value
        if keep_ttl:
            invariant(expire_at_ms is None, "keep_ttl and an expiry time together")
            return
        if expire_at_ms is None:
            self._expires.pop(key, None)
        else:
            self._set_expire_stored(key, expire_at_ms)

    def delete(self, key: bytes) -> bool:
        """Remove `key` (expired or not); True if it was stored."""
        value = self._shards[shard_of(key)].pop(key, None)
        if value is None:
            return False
        self._key_count -= 1
        self._data_bytes -= len(key) + len(value)
        # The heap entry, if any, goes stale and is dropped lazily.
        self._expires.pop(key, None)
        return True

    def set_expire(self, key: bytes, expire_at_ms: int) -> None:
        invariant(key in self._shards[shard_of(key)], "set_expire on a key that is not stored")
        self._set_expire_stored(key, expire_at_ms)

    def persist(self, key: bytes) -> bool:
        """Remove the expiry of `key`; True if it had one."""
        return self._expires.pop(key, None) is not None

    def flush(self) -> None:
        self._shards = [{} for _ in range(SHARD_COUNT)]
        self._expires = {}
        self._expiry_heap = []
        self._key_count = 0
        self._data_bytes = 0

    def live_keys(self, time_ms: int) -> Iterator[bytes]:
        """Every key not expired at `time_ms`, in shard order."""
        expires = self._expires
        for shard in self._shards:
            for key in shard:
                expire_at_ms = expires.get(key) if expires else None
                if expire_at_ms is None or expire_at_ms > time_ms:
                    yield key

    def scan(self, cursor: int, count: int, time_ms: int) -> tuple[int, list[bytes]]:
        """One SCAN step: whole shards from `cursor` on until at least `count` keys were
        visited. Returns (next cursor or 0 when done, live keys of the visited shards)."""
        if cursor < 0 or cursor >= SHARD_COUNT:
            return 0, []
        expires = self._expires
        found: list[bytes] = []
        visited = 0
        shard_index = cursor
        while shard_index < SHARD_COUNT and visited < count:
            shard = self._shards[shard_index]
            visited += len(shard)
            for key in shard:
                expire_at_ms = expires.get(key) if expires else None
                if expire_at_ms is None or expire_at_ms > time_ms:
                    found.append(key)
            shard_index += 1
        return (shard_index if shard_index < SHARD_COUNT else 0), found

    def random_key(self, time_ms: int) -> bytes | None:
        """A live key chosen from `time_ms` (deterministic: no random generator here), or None.
        Not uniform: a key in a small shard is likelier, which RANDOMKEY users tolerate."""
        if self._key_count == 0:
            return None
        # Knuth's multiplicative hash spreads consecutive milliseconds over the shards.
        start = (time_ms * 2654435761) & (SHARD_COUNT - 1)
        expires = self._expires
        for step in range(SHARD_COUNT):
            shard = self._shards[(start + step) & (SHARD_COUNT - 1)]
            if not shard:
                continue
            keys = list(shard)
            first = (time_ms // SHARD_COUNT) % len(keys)
            for offset in range(len(keys)):
                key = keys[(first + offset) % len(keys)]
                expire_at_ms = expires.get(key) if expires else None
                if expire_at_ms is None or expire_at_ms > time_ms:
                    return key
        return None

    # ---- internals ----

    def _set_expire_stored(self, key: bytes, expire_at_ms: int) -> None:
        if self._expires.get(key) == expire_at_ms:
            return  # its heap entry is already there
        self._expires[key] = expire_at_ms
        heapq.heappush(self._expiry_heap, (expire_at_ms, key))
        slack = EXPIRY_HEAP_SLACK_FACTOR * len(self._expires) + EXPIRY_HEAP_SLACK_ENTRIES_MIN
        if len(self._expiry_heap) > slack:
            self._expiry_heap = [(at_ms, k) for k, at_ms in self._expires.items()]
            heapq.heapify(self._expiry_heap)

    def _drop_if_expired(self, key: bytes, time_ms: int) -> bool:
        expire_at_ms = self._expires.get(key)
        if expire_at_ms is None or expire_at_ms > time_ms:
            return False
        return self.delete(key)
