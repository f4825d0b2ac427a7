"""A stream's contents (Redis's stream type): entries, ids, consumer groups with their pending
entries lists (PELs) and consumers, as one value every replica builds alike.

Shaped for the two jobs a replicated stream has. Commands read it (`replikv.commands.streams`);
`replikv.state.KVState` changes it through the underscore methods, each of which returns an
undo record that `_undo` takes back exactly, in O(size of the change): a leader that applied
ahead and lost its leadership reverts its writes that way. Nothing here reads a clock: every
time stored (a delivery's time, a consumer's seen and active times) is the log entry's.

An id is one int, `ms << 64 | seq`, so ids compare and sort as ints. Entries live in a
SortedDict (id -> the fields and values as a tuple, field, value, field, value, ...): XADD at
the end and XRANGE from any id are O(log n). A group's PEL is a SortedDict id -> NACK, a NACK
the tuple (consumer name, delivery time in ms, delivery count); each consumer keeps the ids of
its pending entries in a SortedSet, so XPENDING for one consumer and XREADGROUP's history reads
are ranges too. Groups and consumers sit in dicts and are listed sorted by name, the order of
Redis's radix trees.

The image (`image()`, `StreamImage`, `from_image`) is what a snapshot item, the digest and the
post-image effect (RENAME, COPY) carry: msgpack-ready lists of ints and bytes, in a canonical
order (groups and consumers by name, entries and pending ids ascending), so two replicas with
the same stream produce the same bytes:

    meta    = [last_ms, last_seq, entries_added, max_deleted_ms, max_deleted_seq, groups]
    groups  = [[name, last_ms, last_seq, entries_read (-1: unknown), consumers], ...]
    consumers = [[name, seen_time_ms, active_time_ms (-1: never), pending], ...]
    pending = [ms, seq, delivery_time_ms, delivery_count, ms, seq, ...]
    entries = [[ms, seq, field, value, field, value, ...], ...]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sortedcontainers import SortedDict, SortedSet

from replikv.invariants import invariant

SEQ_BITS = 64
SEQ_MASK = (1 << SEQ_BITS) - 1
U64_MAX = SEQ_MASK
ID_MAX = (1 << 128) - 1  # "+": the largest id, UINT64_MAX-UINT64_MAX
ENTRIES_READ_UNKNOWN = -1  # Redis's SCG_INVALID_ENTRIES_READ: a group's read counter is lost
NEVER_ACTIVE = -1  # a consumer that was never delivered anything (XINFO CONSUMERS "inactive")

# What a stream costs in KVState.used_bytes() beyond its key and its fields' and values' bytes.
# Rough estimates from CPython's object sizes, not measured as the other types' are: the
# StreamValue with its SortedDict; per entry its int id (twice: the dict and the sorted key
# list), its tuple and the SortedDict slots; per field or value its bytes-object header; per
# pending entry the NACK tuple, the group's SortedDict slots and the consumer's SortedSet
# slots; per group or consumer its object, dict slot and sorted containers.
STREAM_OVERHEAD_BYTES = 1100
STREAM_ENTRY_OVERHEAD_BYTES = 170
STREAM_ITEM_OVERHEAD_BYTES = 41
STREAM_PENDING_OVERHEAD_BYTES = 220
STREAM_GROUP_OVERHEAD_BYTES = 1200


def id_of(ms: int, seq: int) -> int:
    return (ms << SEQ_BITS) | seq


def id_text(stream_id: int) -> bytes:
    """The id as Redis writes it: b"<ms>-<seq>"."""
    return b"%d-%d" % (stream_id >> SEQ_BITS, stream_id & SEQ_MASK)


def id_from_text(text: object) -> int | None:
    """An id as effects carry it (canonical b"<ms>-<seq>", each part a u64), or None."""
    if type(text) is not bytes or len(text) > 41:
        return None
    ms, dash, seq = text.partition(b"-")
    if not dash or not ms.isdigit() or not seq.isdigit():
        return None
    if (len(ms) > 1 and ms[0:1] == b"0") or (len(seq) > 1 and seq[0:1] == b"0"):
        return None
    ms_value, seq_value = int(ms), int(seq)
    if ms_value > U64_MAX or seq_value > U64_MAX:
        return None
    return id_of(ms_value, seq_value)


class StreamConsumer:
    """A consumer of a group: when it was last seen (any XREADGROUP or claim naming it) and
    last active (delivered or claimed something), and the ids it has pending."""

    __slots__ = ("active_time", "pending", "seen_time")

    def __init__(self, seen_time: int, active_time: int) -> None:
        self.seen_time = seen_time
        self.active_time = active_time
        self.pending: SortedSet = SortedSet()


class StreamGroup:
    """A consumer group: its last delivered id, its logical read counter (entries_read, or
    ENTRIES_READ_UNKNOWN), its PEL (id -> (consumer, delivery time, delivery count)) and its
    consumers by name."""

    __slots__ = ("consumers", "entries_read", "last_id", "pel")

    def __init__(self, last_id: int, entries_read: int) -> None:
        self.last_id = last_id
        self.entries_read = entries_read
        self.pel: SortedDict = SortedDict()
        self.consumers: dict[bytes, StreamConsumer] = {}

    def consumer_names(self) -> list[bytes]:
        return sorted(self.consumers)


Nack = tuple[bytes, int, int]  # (consumer name, delivery time ms, delivery count)


class StreamValue:
    """A stream (see the module docstring). Only KVState mutates it, through the underscore
    methods, because every change must also reach the counters, the effects and the undo log;
    commands use the read methods and attributes."""

    __slots__ = ("_entries", "consumer_count", "data_bytes", "entries_added", "groups",
                 "item_count", "last_id", "max_deleted_id", "name_bytes", "pending_count")

    def __init__(self) -> None:
        self._entries: SortedDict = SortedDict()
        self.last_id = 0
        self.entries_added = 0
        self.max_deleted_id = 0
        self.groups: dict[bytes, StreamGroup] = {}
        self.data_bytes = 0  # the sum of the entries' fields' and values' lengths
        self.item_count = 0  # fields and values in all entries
        self.pending_count = 0  # NACKs in all groups
        self.consumer_count = 0  # consumers in all groups
        self.name_bytes = 0  # the lengths of the groups' and consumers' names

    # ---- reading ----

    def __len__(self) -> int:
        return len(self._entries)

    def first_id(self) -> int:
        """The first entry's id, 0 (0-0) when empty (XINFO's recorded-first-entry-id)."""
        return self._entries.peekitem(0)[0] if self._entries else 0

    def first_entry(self) -> tuple[int, tuple[bytes, ...]] | None:
        return self._entries.peekitem(0) if self._entries else None  # type: ignore[no-any-return]

    def last_entry(self) -> tuple[int, tuple[bytes, ...]] | None:
        return self._entries.peekitem(-1) if self._entries else None  # type: ignore[no-any-return]

    def get(self, stream_id: int) -> tuple[bytes, ...] | None:
        return self._entries.get(stream_id)  # type: ignore[no-any-return]

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._entries

    def ids_between(self, start: int, end: int, reverse: bool = False) -> Iterator[int]:
        """The ids from start to end inclusive, ascending (or descending with `reverse`)."""
        if start > end:
            return iter(())
        return self._entries.irange(start, end, reverse=reverse)  # type: ignore[no-any-return]

    def count_before(self, stream_id: int) -> int:
        """How many entries have an id below `stream_id`."""
        return self._entries.bisect_left(stream_id)  # type: ignore[no-any-return]

    def ids_from_head(self, count: int) -> list[int]:
        return list(self._entries.islice(0, count))

    def overhead_bytes(self) -> int:
        """What the stream adds to used_bytes() beyond its fields' and values' bytes."""
        return (STREAM_OVERHEAD_BYTES + len(self._entries) * STREAM_ENTRY_OVERHEAD_BYTES
                + self.item_count * STREAM_ITEM_OVERHEAD_BYTES
                + self.pending_count * STREAM_PENDING_OVERHEAD_BYTES
                + (len(self.groups) + self.consumer_count) * STREAM_GROUP_OVERHEAD_BYTES
                + self.name_bytes)

    def has_tombstones_from(self, start: int) -> bool:
        """Redis's streamRangeHasTombstones(s, start, NULL): whether an XDEL left a hole at or
        after `start` that the group read counters cannot see past."""
        if not self._entries or self.max_deleted_id == 0:
            return False
        if self.first_id() > self.max_deleted_id:
            return False
        return start <= self.max_deleted_id

    def estimate_entries_read(self, stream_id: int) -> int:
        """Redis's streamEstimateDistanceFromFirstEverEntry: the logical read counter of an
        id, or ENTRIES_READ_UNKNOWN when it cannot be known."""
        if not self.entries_added:
            return 0
        if not self._entries and stream_id <= self.last_id:
            return self.entries_added
        if stream_id == self.last_id:
            return self.entries_added
        if stream_id > self.last_id:
            return ENTRIES_READ_UNKNOWN
        first = self.first_id()
        if self.max_deleted_id == 0 or self.max_deleted_id < first:
            if stream_id < first:
                return self.entries_added - len(self._entries)
            if stream_id == first:
                return self.entries_added - len(self._entries) + 1
        return ENTRIES_READ_UNKNOWN

    def group_lag(self, group: StreamGroup) -> int | None:
        """Redis's lag of a group: entries not yet delivered to it, or None when unknown."""
        if not self.entries_added:
            return 0
        if (group.entries_read != ENTRIES_READ_UNKNOWN
                and not self.has_tombstones_from(group.last_id)):
            return self.entries_added - group.entries_read
        entries_read = self.estimate_entries_read(group.last_id)
        if entries_read != ENTRIES_READ_UNKNOWN:
            return self.entries_added - entries_read
        return None

    def image(self) -> StreamImage:
        """The stream as plain lists (see the module docstring): a copy sharing only bytes."""
        groups = []
        for name in sorted(self.groups):
            group = self.groups[name]
            consumers = []
            for consumer_name in group.consumer_names():
                consumer = group.consumers[consumer_name]
                pending: list[int] = []
                for stream_id in consumer.pending:
                    _, delivery_time, delivery_count = group.pel[stream_id]
                    pending += (stream_id >> SEQ_BITS, stream_id & SEQ_MASK, delivery_time,
                                delivery_count)
                consumers.append([consumer_name, consumer.seen_time, consumer.active_time,
                                  pending])
            groups.append([name, group.last_id >> SEQ_BITS, group.last_id & SEQ_MASK,
                           group.entries_read, consumers])
        meta = [self.last_id >> SEQ_BITS, self.last_id & SEQ_MASK, self.entries_added,
                self.max_deleted_id >> SEQ_BITS, self.max_deleted_id & SEQ_MASK, groups]
        entries = [[stream_id >> SEQ_BITS, stream_id & SEQ_MASK, *fields]
                   for stream_id, fields in self._entries.items()]
        return StreamImage(meta, entries)

    # ---- changes, for KVState only; each returns its undo record ----

    def _add(self, stream_id: int, fields: tuple[bytes, ...]) -> tuple:
        invariant(stream_id > self.last_id, "a stream entry added at or below the last id")
        undo = ("add", stream_id, self.last_id)
        self._entries[stream_id] = fields
        self._counted(fields, 1)
        self.last_id = stream_id
        self.entries_added += 1
        return undo

    def _delete(self, ids: list[int]) -> tuple:
        removed = [(stream_id, self._entries.pop(stream_id)) for stream_id in ids]
        for _, fields in removed:
            self._counted(fields, -1)
        undo = ("delete", removed, self.max_deleted_id)
        self.max_deleted_id = max(self.max_deleted_id, *ids)
        return undo

    def _trim(self, count: int) -> tuple:
        invariant(1 <= count <= len(self._entries), "a stream trimmed past its length")
        removed = [self._entries.popitem(0) for _ in range(count)]
        for _, fields in removed:
            self._counted(fields, -1)
        return ("trim", removed)

    def _set_ids(self, last_id: int, entries_added: int, max_deleted_id: int) -> tuple:
        undo = ("ids", self.last_id, self.entries_added, self.max_deleted_id)
        self.last_id = last_id
        self.entries_added = entries_added
        self.max_deleted_id = max_deleted_id
        return undo

    def _group_set(self, name: bytes, last_id: int, entries_read: int) -> tuple:
        group = self.groups.get(name)
        if group is None:
            self.groups[name] = StreamGroup(last_id, entries_read)
            self.name_bytes += len(name)
            return ("group-set", name, None)
        undo = ("group-set", name, (group.last_id, group.entries_read))
        group.last_id = last_id
        group.entries_read = entries_read
        return undo

    def _group_destroy(self, name: bytes) -> tuple:
        group = self.groups.pop(name)
        self._group_counted(name, group, -1)
        return ("group-destroy", name, group)

    def _consumer_set(self, group_name: bytes, name: bytes, seen_time: int,
                      active_time: int) -> tuple:
        group = self.groups[group_name]
        consumer = group.consumers.get(name)
        if consumer is None:
            group.consumers[name] = StreamConsumer(seen_time, active_time)
            self.consumer_count += 1
            self.name_bytes += len(name)
            return ("consumer-set", group_name, name, None)
        undo = ("consumer-set", group_name, name, (consumer.seen_time, consumer.active_time))
        consumer.seen_time = seen_time
        consumer.active_time = active_time
        return undo

    def _consumer_delete(self, group_name: bytes, name: bytes) -> tuple:
        group = self.groups[group_name]
        consumer = group.consumers.pop(name)
        nacks = [(stream_id, group.pel.pop(stream_id)) for stream_id in consumer.pending]
        self.pending_count -= len(nacks)
        self.consumer_count -= 1
        self.name_bytes -= len(name)
        return ("consumer-delete", group_name, name, consumer, nacks)

    def _deliver(self, group_name: bytes, consumer_name: bytes, delivery_time: int,
                 deliveries: Iterable[tuple[int, int]]) -> tuple:
        """Each (id, count): the id's NACK becomes (consumer, delivery_time, count), moved
        from the consumer that had it, if any."""
        group = self.groups[group_name]
        consumer = group.consumers[consumer_name]
        old_nacks: list[tuple[int, Nack | None]] = []
        for stream_id, count in deliveries:
            old = group.pel.get(stream_id)
            old_nacks.append((stream_id, old))
            if old is None:
                self.pending_count += 1
            else:
                group.consumers[old[0]].pending.remove(stream_id)
            group.pel[stream_id] = (consumer_name, delivery_time, count)
            consumer.pending.add(stream_id)
        return ("deliver", group_name, old_nacks)

    def _ack(self, group_name: bytes, ids: list[int]) -> tuple:
        group = self.groups[group_name]
        nacks = []
        for stream_id in ids:
            nack = group.pel.pop(stream_id)
            group.consumers[nack[0]].pending.remove(stream_id)
            nacks.append((stream_id, nack))
        self.pending_count -= len(nacks)
        return ("ack", group_name, nacks)

    def _undo(self, record: tuple) -> None:
        """Take back one change (the most recent not yet taken back)."""
        tag = record[0]
        if tag == "add":
            _, stream_id, old_last = record
            self._counted(self._entries.pop(stream_id), -1)
            self.last_id = old_last
            self.entries_added -= 1
        elif tag == "delete" or tag == "trim":
            for stream_id, fields in record[1]:
                self._entries[stream_id] = fields
                self._counted(fields, 1)
            if tag == "delete":
                self.max_deleted_id = record[2]
        elif tag == "ids":
            _, self.last_id, self.entries_added, self.max_deleted_id = record
        elif tag == "group-set":
            _, name, old = record
            if old is None:
                group = self.groups.pop(name)
                invariant(not group.consumers and not group.pel, "undo of a group out of order")
                self.name_bytes -= len(name)
            else:
                group = self.groups[name]
                group.last_id, group.entries_read = old
        elif tag == "group-destroy":
            _, name, group = record
            self.groups[name] = group
            self._group_counted(name, group, 1)
        elif tag == "consumer-set":
            _, group_name, name, old = record
            group = self.groups[group_name]
            if old is None:
                consumer = group.consumers.pop(name)
                invariant(not consumer.pending, "undo of a consumer out of order")
                self.consumer_count -= 1
                self.name_bytes -= len(name)
            else:
                consumer = group.consumers[name]
                consumer.seen_time, consumer.active_time = old
        elif tag == "consumer-delete":
            _, group_name, name, consumer, nacks = record
            group = self.groups[group_name]
            group.consumers[name] = consumer
            for stream_id, nack in nacks:
                group.pel[stream_id] = nack
            self.pending_count += len(nacks)
            self.consumer_count += 1
            self.name_bytes += len(name)
        elif tag == "deliver":
            _, group_name, old_nacks = record
            group = self.groups[group_name]
            for stream_id, old in reversed(old_nacks):
                now = group.pel[stream_id]
                group.consumers[now[0]].pending.remove(stream_id)
                if old is None:
                    del group.pel[stream_id]
                    self.pending_count -= 1
                else:
                    group.pel[stream_id] = old
                    group.consumers[old[0]].pending.add(stream_id)
        else:
            invariant(tag == "ack", f"unknown stream undo record {tag!r}")
            _, group_name, nacks = record
            group = self.groups[group_name]
            for stream_id, nack in nacks:
                group.pel[stream_id] = nack
                group.consumers[nack[0]].pending.add(stream_id)
            self.pending_count += len(nacks)

    def _counted(self, fields: tuple[bytes, ...], sign: int) -> None:
        self.data_bytes += sign * sum(map(len, fields))
        self.item_count += sign * len(fields)

    def _group_counted(self, name: bytes, group: StreamGroup, sign: int) -> None:
        self.name_bytes += sign * (len(name) + sum(map(len, group.consumers)))
        self.consumer_count += sign * len(group.consumers)
        self.pending_count += sign * len(group.pel)

    def _append_image_entries(self, entries: list[Any]) -> None:
        """Restore entries from an image (a snapshot), after those already here and at or
        below the last id; checked, since they come from a file."""
        for entry in entries:
            invariant(type(entry) is list and len(entry) >= 4 and len(entry) % 2 == 0,
                      "a stream entry is [ms, seq, field, value, ...]")
            stream_id = _checked_id(entry[0], entry[1])
            invariant(stream_id <= self.last_id and (not self._entries
                                                      or stream_id > self._entries.peekitem(-1)[0]),
                      "stream entries out of order or past the last id")
            fields = tuple(entry[2:])
            invariant(all(type(item) is bytes for item in fields),
                      "stream fields and values must be bytes")
            self._entries[stream_id] = fields
            self._counted(fields, 1)

    def _copy(self) -> StreamValue:
        image = self.image()
        return StreamValue.from_image(image.meta, image.entries)

    @classmethod
    def from_image(cls, meta: object, entries: list[Any]) -> StreamValue:
        """A stream from its image, checked (it may come from a snapshot file)."""
        invariant(type(meta) is list and len(meta) == 6, "a stream's meta is not a 6-list")
        fields: list[Any] = meta  # type: ignore[assignment]
        last_ms, last_seq, entries_added, deleted_ms, deleted_seq, groups = fields
        value = cls()
        value.last_id = _checked_id(last_ms, last_seq)
        value.max_deleted_id = _checked_id(deleted_ms, deleted_seq)
        invariant(type(entries_added) is int and 0 <= entries_added <= U64_MAX,
                  "a stream's entries_added")
        value.entries_added = entries_added
        invariant(type(groups) is list, "a stream's groups are not a list")
        for group_image in groups:
            invariant(type(group_image) is list and len(group_image) == 5,
                      "a stream group is not a 5-list")
            name, group_ms, group_seq, entries_read, consumers = group_image
            invariant(type(name) is bytes and name not in value.groups,
                      "a stream group's name is not bytes, or repeats")
            invariant(type(entries_read) is int and ENTRIES_READ_UNKNOWN <= entries_read <= U64_MAX,
                      "a stream group's entries_read")
            value._group_set(name, _checked_id(group_ms, group_seq), entries_read)
            invariant(type(consumers) is list, "a stream group's consumers are not a list")
            for consumer_image in consumers:
                invariant(type(consumer_image) is list and len(consumer_image) == 4,
                          "a stream consumer is not a 4-list")
                consumer_name, seen, active, pending = consumer_image
                invariant(type(consumer_name) is bytes
                          and consumer_name not in value.groups[name].consumers,
                          "a stream consumer's name is not bytes, or repeats")
                invariant(type(seen) is int and type(active) is int,
                          "a stream consumer's times are not ints")
                value._consumer_set(name, consumer_name, seen, active)
                invariant(type(pending) is list and len(pending) % 4 == 0,
                          "a stream consumer's pending entries are not [ms, seq, time, count]s")
                deliveries: dict[int, list[tuple[int, int]]] = {}
                for i in range(0, len(pending), 4):
                    stream_id = _checked_id(pending[i], pending[i + 1])
                    delivery_time, count = pending[i + 2], pending[i + 3]
                    invariant(type(delivery_time) is int and type(count) is int and count >= 0,
                              "a pending entry's time and count")
                    invariant(stream_id not in value.groups[name].pel,
                              "a pending entry repeats in a group")
                    deliveries.setdefault(delivery_time, []).append((stream_id, count))
                for delivery_time, batch in deliveries.items():
                    value._deliver(name, consumer_name, delivery_time, batch)
        value._append_image_entries(entries)
        return value


def _checked_id(ms: object, seq: object) -> int:
    invariant(type(ms) is int and type(seq) is int and 0 <= ms <= U64_MAX  # type: ignore[operator]
              and 0 <= seq <= U64_MAX, "a stream id's parts are not u64s")  # type: ignore[operator]
    return id_of(ms, seq)  # type: ignore[arg-type]


class StreamImage:
    """A stream as a snapshot cursor keeps it and `KVState.items` yields it (see the module
    docstring): its meta and its entries."""

    __slots__ = ("entries", "meta")

    def __init__(self, meta: list[Any], entries: list[Any]) -> None:
        self.meta = meta
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return (type(other) is StreamImage and other.meta == self.meta
                and other.entries == self.entries)

    def __hash__(self) -> int:
        return hash(len(self.entries))

    def __repr__(self) -> str:
        return f"StreamImage({self.meta!r}, {self.entries!r})"
