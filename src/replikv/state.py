"""The replicated key-value state machine: deterministic apply, recorded execution with effects
and undo, local reads, expiry, checksum.

Every replica applies the same log entries in the same order and must end in the same state with
the same replies. Two replication modes share this class:

- active: the entry carries the command; every replica runs it through `apply_command` (with the
  leader's clock and random seed fixed inside the entry) and `apply_expire`.
- passive: the leader runs the command through `execute_recorded` (or `expire_recorded`) when it
  proposes it, and the entry carries the resulting EFFECTS; backups replay them through
  `apply_effects` and never run a command.

In both modes the leader executes before the entry commits, so every recorded execution also
returns an UNDO record; `undo` reverts the most recent one exactly (digest, counters, expiry
listing, SCAN order, set member positions) in time proportional to the change, not the state.

So nothing here reads a clock, draws from the global random generator, or iterates a Python set
of bytes (bytes hashes change with PYTHONHASHSEED between processes). SPOP, SRANDMEMBER,
HRANDFIELD and ZRANDMEMBER draw from `random_generator()`, a generator seeded with the `seed`
the caller passes per command.

Reads (`execute_read`) run against local state with the node's own clock and never change
anything, not even to drop an expired key: deletion only happens through the log, so replicas
stay identical. A key whose expiry time is <= the time of the operation is treated as absent.

Layout, chosen for memory and for SCAN: keys live in SHARD_COUNT plain dicts (key -> value), the
shard picked by crc32 (stable across processes, unlike hash()). A value is `bytes` (a string), a
`SetValue`, a `HashValue`, a `ListValue` or a `ZSetValue` (a sorted set). SCAN's cursor is a
shard number, so a key present for the whole scan is returned at
least once no matter how the dicts resize. Every walk over a shard (SCAN, KEYS, RANDOMKEY, items,
digest) visits its keys in sorted order, so a shard dict's insertion order is never observable
and undo may put a key back at the end of its dict. Expiry times sit in one separate dict holding
only keys that have one, plus a heap of (expire_at_ms, key) with lazy invalidation, so
`expired_keys` finds due keys without a sweep.

Effects format (stored in log entries, so it is part of the on-disk format; opcodes are never
renumbered). `effects` is a list of operations applied in order; each is a list starting with an
int opcode, holding only ints, bytes, None and lists (msgpack-ready):

    [1, key, value, expire_at_ms|None]    EFFECT_SET_STRING: key := the string `value` with that
                                          absolute expiry (or none), whatever the key held
    [2, key]                              EFFECT_DELETE: key := absent (no-op if absent)
    [3, key, [member, ...]]               EFFECT_SET_ADD: the members are in the set at key (those
                                          already there are skipped); an absent key becomes a new
                                          set without expiry
    [4, key, [member, ...]]               EFFECT_SET_REMOVE: the members are not in the set at key;
                                          a set left empty is deleted; no-op if key is absent
    [5, key, [member, ...], expire|None]  EFFECT_SET_REPLACE: key := a set of exactly these
                                          members with that absolute expiry (or none)
    [6, key, expire_at_ms|None]           EFFECT_EXPIRE: the key's absolute expiry (None: no
                                          expiry); no-op if the key is absent
    [7]                                   EFFECT_FLUSH: every key removed
    [8, key, [field, value, ...]]         EFFECT_HASH_SET: each field holds its value in the
                                          hash at key (a field already there keeps its position,
                                          a new one is appended); an absent key becomes a new
                                          hash without expiry
    [9, key, [field, ...]]                EFFECT_HASH_DELETE: the fields are not in the hash at
                                          key; a hash left empty is deleted; no-op if absent
    [10, key, [field, value, ...], exp]   EFFECT_HASH_REPLACE: key := a hash of exactly these
                                          fields and values with that absolute expiry (or none)
    [11, key, [element, ...]]             EFFECT_LIST_PUSH_HEAD: the elements are pushed at the
                                          head one after the other (LPUSH's order); an absent key
                                          becomes a new list without expiry
    [12, key, [element, ...]]             EFFECT_LIST_PUSH_TAIL: likewise at the tail (RPUSH)
    [13, key, count]                      EFFECT_LIST_POP_HEAD: count (>= 1, at most the list's
                                          length) elements leave the head; a list left empty is
                                          deleted
    [14, key, count]                      EFFECT_LIST_POP_TAIL: likewise from the tail
    [15, key, index, element]             EFFECT_LIST_SET: the element at index (0 <= index <
                                          length) is replaced
    [16, key, index, element]             EFFECT_LIST_INSERT: element is inserted at index (0 <=
                                          index <= length)
    [17, key, [index, ...]]               EFFECT_LIST_REMOVE: the elements at these indexes
                                          (strictly ascending, each < length) are removed
    [18, key, [element, ...], exp]        EFFECT_LIST_REPLACE: key := a list of exactly these
                                          elements with that absolute expiry (or none)
    [19, key, [member, score, ...]]       EFFECT_ZSET_ADD: each member has this score (a float,
                                          never NaN) in the sorted set at key, added if absent;
                                          an absent key becomes a new sorted set without expiry
    [20, key, [member, ...]]              EFFECT_ZSET_REMOVE: these members (each present, not
                                          all of them) leave the sorted set at key
    [21, key, rank, count]                EFFECT_ZSET_REMOVE_RANGE: the count (>= 1) members
                                          from that rank on (lowest score first; not all of
                                          them) leave the sorted set at key
    [22, key, [member, score, ...], exp]  EFFECT_ZSET_REPLACE: key := a sorted set of exactly
                                          these members and scores with that absolute expiry
    [23, channel, message]                EFFECT_PUBLISH: no key changes; the message goes to
                                          the state's outbox (`published`), which the node core
                                          delivers to its subscribers once the entry commits
    [24, channel, message]                EFFECT_SPUBLISH: the same for a shard channel
    [25, key, [offset, removed, inserted, ...]]
                                          EFFECT_STRING_SPLICE: the string at key (a stored
                                          string) has, for each triple, its `removed` bytes
                                          from `offset` replaced by the bytes `inserted`; the
                                          offsets are those of the string before the effect,
                                          ascending, the stretches apart and within it; the
                                          key's expiry stays (PFADD and PFMERGE: a few bytes
                                          of a 12 KB HyperLogLog rather than all of it)

Stream effects (replikv.stream_value holds the stream; an id is written b"<ms>-<seq>", a
group's entries_read is an int, -1 when unknown; a time is the entry's, in ms):

    [25, key, id, [field, value, ...]]    EFFECT_STREAM_ADD: the entry id (above the stream's
                                          last id) is appended, becoming the last id, and
                                          entries_added grows by one; an absent key becomes a
                                          new stream without expiry
    [26, key, [id, ...]]                  EFFECT_STREAM_DELETE: these entries (each present,
                                          no repeats) are deleted (XDEL); max_deleted_id rises
                                          to the highest of them
    [27, key, count]                      EFFECT_STREAM_TRIM: the first count (>= 1, at most
                                          the length) entries are deleted (XTRIM, XADD's
                                          MAXLEN/MINID); a stream left empty stays
    [28, key, last_id, added, max_del]    EFFECT_STREAM_IDS: the stream's last id,
                                          entries_added and max_deleted_id (XSETID); an absent
                                          key becomes a new empty stream (XGROUP CREATE ...
                                          MKSTREAM)
    [29, key, group, last_id, read]       EFFECT_STREAM_GROUP: the group's last delivered id
                                          and entries_read, the group created if absent
    [30, key, group]                      EFFECT_STREAM_GROUP_DESTROY: the group (present) goes
    [31, key, group, consumer, seen, act] EFFECT_STREAM_CONSUMER: the consumer's seen and
                                          active times (-1: never active), created if absent
    [32, key, group, consumer]            EFFECT_STREAM_CONSUMER_DELETE: the consumer
                                          (present) goes, with its pending entries
    [33, key, group, consumer, time, [id, count, ...]]
                                          EFFECT_STREAM_DELIVER: each id's pending entry
                                          becomes (consumer, time, count), taken from the
                                          consumer that had it if any (XREADGROUP, XCLAIM,
                                          XAUTOCLAIM); the consumer is present
    [34, key, group, [id, ...]]           EFFECT_STREAM_ACK: these pending entries (each
                                          present, no repeats) leave the group's PEL
    [35, key, [meta, entries], exp]       EFFECT_STREAM_REPLACE: key := the stream of that
                                          image (replikv.stream_value) with that expiry
                                          (RENAME, COPY)

Function library effects (replikv.commands.functions; a library is no key: FLUSHALL leaves it):

    [37, name, code, [[function, [flag, ...], description|None], ...]]
                                          EFFECT_LIBRARY_LOAD: the library `name` := this code
                                          and these functions (registration order), replacing
                                          one of that name; no other library holds a function
                                          of these names
    [38, name]                            EFFECT_LIBRARY_DELETE: the library (present) goes
    [39, 0]                               EFFECT_LIBRARY_FLUSH: every library goes (the 0
                                          keeps it apart from EFFECT_FLUSH's one-item form)

Like the list effects they are deltas, applied exactly once in log order: an XADD ships its id
and fields, a trim its count, an XREADGROUP the ids it delivered with their counts, never the
stream.

The string, set and hash operations state a result, never a delta that depends on a count or a
clock, so applying such a list twice leaves the state it leaves applied once. The list
operations but SET and REPLACE are deltas on purpose: a push or a pop on a long list ships the
elements pushed or the count popped, not the list (LTRIM is one or two pops, LREM the removed
positions; only RENAME and COPY ship a whole list). So are the sorted set removals: ZREM names
the members it removed, and a pop or a ZREMRANGEBY* names the ranks it removed (however many
members, one small effect), while ZADD and ZINCRBY state the members' final scores; only
RENAME, COPY and the STORE commands ship a whole sorted set. A string splice is a delta too
(an HLL's registers only ever rise, but a sparse HLL's code moves). Like every entry they are applied
exactly once, in log order, to the state the leader executed against; one that does not fit
that state (popping more than the list holds, an index past its end, removing a member or a
rank the sorted set does not hold, or all of its members) is an InvariantViolation. Member
lists are non-empty, without repeats, in the order the leader added or removed them; replaying
them performs the same appends and swap-removes, so a backup's set keeps its members at the
leader's positions. Field lists are the same (a field at most once per list), with each field
followed by its value in the SET and REPLACE forms, so a backup's hash keeps its fields at the
leader's positions too; a sorted set's order is its contents' own. An error reply has no
effects beyond the expired keys dropped before the command ran (which are [2, key]).

Snapshots (for log compaction, catching up a follower, backups). `begin_snapshot` returns a
cursor over the logical state at that instant, and `next_batch` hands it out a bounded batch at
a time as item records (the item shapes of `replikv.storage.snapshot`), so a million keys never
stall the event loop. Nothing is copied up front: copy-on-write works per shard. Before anything
changes a shard (a binding, an expiry, a set member or hash field, an undo of any of those) that the cursor has
not captured yet, the state hands the shard's current contents to the cursor, which keeps them
until it emits them; a shard is captured at most once. With no snapshot running that hook costs
one attribute test. FLUSHALL copies nothing: it swaps in new shard dicts and leaves the old ones
untouched, so the cursor keeps reading the old ones and stops watching the state until an undo of
that flush swaps its shards back in (see `_follow_snapshot_source`). Items come out in digest
order (shard by shard, keys sorted), so the cursor also computes the digest of the state it
describes, for the restoring side to check, and two replicas with the same state write the same
items. `restore_records` (or `from_records`) rebuilds a state from them: same digest, same set
member and hash field positions, same expiry listing; only a set's, hash's or sorted set's
bucket count (which SSCAN's, HSCAN's and ZSCAN's paging follows) is the one its size implies
rather than whatever its history left, which their guarantees allow. Function libraries
(replikv.commands.functions) come first, one ITEM_LIBRARY record each, as they were at begin
(the state replaces its library dict on every change, so the cursor keeps the old one); the
digest takes them after the keys.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, Self

import msgpack
from sortedcontainers import SortedList

from replikv.commands import keys_of, parse_command
from replikv.commands.functions import Library, library_from_record
from replikv.commands.scripts import ScriptContext
from replikv.commands.streams import STREAM_COMMANDS
from replikv.commands.transactions import Queued
from replikv.commands.zsets import LISTPACK_ENTRIES_MAX, LISTPACK_MEMBER_BYTES_MAX
from replikv.features import FEATURE_LEVEL_LEGACY, STREAM_LEVEL
from replikv.invariants import InvariantViolation, invariant
from replikv.replies import WRONG_TYPE, CommandError, ErrorReply
from replikv.scripting import ScriptAborted
from replikv.storage.snapshot import (
    BATCH_BYTES_TARGET,
    CONTINUATION_KINDS,
    ITEM_HASH,
    ITEM_HASH_MORE,
    ITEM_LIBRARY,
    ITEM_LIST,
    ITEM_LIST_MORE,
    ITEM_SET,
    ITEM_SET_CHUNK_BYTES_MAX,
    ITEM_SET_MORE,
    ITEM_STREAM,
    ITEM_STREAM_MORE,
    ITEM_STRING,
    ITEM_ZSET,
    ITEM_ZSET_MORE,
)
from replikv.stream_value import (
    ENTRIES_READ_UNKNOWN,
    StreamImage,
    StreamValue,
    id_from_text,
    id_text,
)

SHARD_COUNT = 4096  # a power of two: the shard is crc32(key) & (SHARD_COUNT - 1)

# Stale heap entries (expiry changed or removed) are dropped lazily; once they outnumber the
# live ones by this factor (plus a floor, so small states never bother) the heap is rebuilt.
EXPIRY_HEAP_SLACK_FACTOR = 2
EXPIRY_HEAP_SLACK_ENTRIES_MIN = 1024

# used_bytes() estimates CPython's cost per key beyond the key and value bytes themselves
# (two bytes-object headers rounded up by the allocator, a share of the shard dict's table) and
# per expiry (an int, an entry in the expiry dict, a heap tuple). Measured by
# benchmarks/memory.py's breakdown on 1,000,000 keys of 13 bytes with 100-byte values: 35 + 44
# bytes of object headers and padding and 38 of shard dict slots; allocator slack about 3. Per
# expiry 156 (its heap tuple, list slot and heap slack included).
KEY_OVERHEAD_BYTES = 117
EXPIRY_OVERHEAD_BYTES = 156
# A set adds its SetValue, member list, bucket list and first bucket dict (SET_OVERHEAD_BYTES) and
# per member, beyond the member's own bytes: its bytes-object header, a list slot, a bucket dict
# entry and the int position (SET_MEMBER_OVERHEAD_BYTES). A rough estimate, measured with
# tracemalloc on sets of 16-byte members: right for 1 and for 200,000 members, up to twice the
# real cost for sets of tens of members (whose first dict is preallocated), 25% high at 1,000.
SET_OVERHEAD_BYTES = 380
SET_MEMBER_OVERHEAD_BYTES = 68
# A hash likewise (its HashValue, field and value lists, bucket list and first bucket dict), and
# per field, beyond the field's and the value's bytes: two bytes-object headers, two list slots,
# a bucket dict entry and the int position. Measured with tracemalloc against sets: a hash of
# 16-byte fields and 16-byte values costs about 86 bytes more than a set of 16-byte members,
# and 41 more per field than the set per member (the value's object and list slot), from 1 to
# 200,000 of them; so the same rough estimate as the set's, with those differences added.
HASH_OVERHEAD_BYTES = 466
HASH_FIELD_OVERHEAD_BYTES = 109
# A list: its ListValue and its deque (whose first block of 64 slots is allocated with it), and
# per element, beyond its bytes: the bytes-object header rounded up by the allocator and a deque
# slot. Measured with tracemalloc on lists of 16-byte elements: 41 per element from 100 to
# 200,000 of them, about 650 for the list itself.
LIST_OVERHEAD_BYTES = 650
LIST_ELEMENT_OVERHEAD_BYTES = 41
# A sorted set: its ZSetValue, its SortedList and first bucket dict (ZSET_OVERHEAD_BYTES), and
# per member, beyond the member's bytes: its bytes-object header, a bucket dict entry, the
# (score, member) tuple, the score's float object and a slot in the SortedList
# (ZSET_MEMBER_OVERHEAD_BYTES). Measured with tracemalloc on sorted sets of 16-byte members
# built by ZADDs of 1,000 pairs: 120 per member at 200,000 members (102 at 10,000, 111 at
# 1,000, as the dicts and the SortedList's lists grow in steps), about 960 for the sorted set
# itself; so right for 1 and for 200,000 members, up to 15% high in between.
ZSET_OVERHEAD_BYTES = 960
ZSET_MEMBER_OVERHEAD_BYTES = 120

# A set's members are indexed by SET_BUCKETS (a power of two, member -> position dicts chosen by
# crc32), which is what SSCAN's cursor walks. A set grows to twice the buckets when it holds more
# than SET_BUCKET_MEMBERS_MAX per bucket and halves them below SET_BUCKET_MEMBERS_MIN per bucket;
# the gap makes a rebuild cost O(1) amortized per change. Sets of up to 128 members have a single
# bucket, so SSCAN returns them whole in one call, as Redis does for its small encodings. Hashes
# index their fields the same way, with the same bounds.
SET_BUCKET_MEMBERS_MAX = 128
SET_BUCKET_MEMBERS_MIN = 16

DIGEST_FORMAT = b"replikv-state-v2"

# Effect opcodes (see the module docstring).
EFFECT_SET_STRING = 1
EFFECT_DELETE = 2
EFFECT_SET_ADD = 3
EFFECT_SET_REMOVE = 4
EFFECT_SET_REPLACE = 5
EFFECT_EXPIRE = 6
EFFECT_FLUSH = 7
EFFECT_HASH_SET = 8
EFFECT_HASH_DELETE = 9
EFFECT_HASH_REPLACE = 10
EFFECT_LIST_PUSH_HEAD = 11
EFFECT_LIST_PUSH_TAIL = 12
EFFECT_LIST_POP_HEAD = 13
EFFECT_LIST_POP_TAIL = 14
EFFECT_LIST_SET = 15
EFFECT_LIST_INSERT = 16
EFFECT_LIST_REMOVE = 17
EFFECT_LIST_REPLACE = 18
EFFECT_ZSET_ADD = 19
EFFECT_ZSET_REMOVE = 20
EFFECT_ZSET_REMOVE_RANGE = 21
EFFECT_ZSET_REPLACE = 22
EFFECT_PUBLISH = 23
EFFECT_SPUBLISH = 24
EFFECT_STRING_SPLICE = 25
EFFECT_STREAM_ADD = 26
EFFECT_STREAM_DELETE = 27
EFFECT_STREAM_TRIM = 28
EFFECT_STREAM_IDS = 29
EFFECT_STREAM_GROUP = 30
EFFECT_STREAM_GROUP_DESTROY = 31
EFFECT_STREAM_CONSUMER = 32
EFFECT_STREAM_CONSUMER_DELETE = 33
EFFECT_STREAM_DELIVER = 34
EFFECT_STREAM_ACK = 35
EFFECT_STREAM_REPLACE = 36
EFFECT_LIBRARY_LOAD = 37
EFFECT_LIBRARY_DELETE = 38
EFFECT_LIBRARY_FLUSH = 39
_EFFECT_LENGTHS = {
    EFFECT_SET_STRING: 4,
    EFFECT_DELETE: 2,
    EFFECT_SET_ADD: 3,
    EFFECT_SET_REMOVE: 3,
    EFFECT_SET_REPLACE: 4,
    EFFECT_EXPIRE: 3,
    EFFECT_FLUSH: 1,
    EFFECT_HASH_SET: 3,
    EFFECT_HASH_DELETE: 3,
    EFFECT_HASH_REPLACE: 4,
    EFFECT_LIST_PUSH_HEAD: 3,
    EFFECT_LIST_PUSH_TAIL: 3,
    EFFECT_LIST_POP_HEAD: 3,
    EFFECT_LIST_POP_TAIL: 3,
    EFFECT_LIST_SET: 4,
    EFFECT_LIST_INSERT: 4,
    EFFECT_LIST_REMOVE: 3,
    EFFECT_LIST_REPLACE: 4,
    EFFECT_ZSET_ADD: 3,
    EFFECT_ZSET_REMOVE: 3,
    EFFECT_ZSET_REMOVE_RANGE: 4,
    EFFECT_ZSET_REPLACE: 4,
    EFFECT_PUBLISH: 3,
    EFFECT_SPUBLISH: 3,
    EFFECT_STRING_SPLICE: 3,
    EFFECT_STREAM_ADD: 4,
    EFFECT_STREAM_DELETE: 3,
    EFFECT_STREAM_TRIM: 3,
    EFFECT_STREAM_IDS: 5,
    EFFECT_STREAM_GROUP: 5,
    EFFECT_STREAM_GROUP_DESTROY: 3,
    EFFECT_STREAM_CONSUMER: 6,
    EFFECT_STREAM_CONSUMER_DELETE: 4,
    EFFECT_STREAM_DELIVER: 6,
    EFFECT_STREAM_ACK: 4,
    EFFECT_STREAM_REPLACE: 4,
    EFFECT_LIBRARY_LOAD: 4,
    EFFECT_LIBRARY_DELETE: 2,
    EFFECT_LIBRARY_FLUSH: 2,
}
# A splice's framing in an entry (msgpack ints and a bin header), to weigh it against the
# whole string.
_SPLICE_OVERHEAD_BYTES = 8

# Undo log entry tags. An entry is a tuple; undo applies a log's entries in reverse.
_UNDO_BIND = 0  # (tag, key, value or None, expire_at_ms or None): the key's whole binding
_UNDO_EXPIRE = 1  # (tag, key, expire_at_ms or None): the expiry of a key that stays bound
_UNDO_APPEND = 2  # (tag, key, set, member): the member was appended to the set bound to key
_UNDO_REMOVE = 3  # (tag, key, set, member, position): swap-removed from the set bound to key
_UNDO_REBUCKET = 4  # (tag, set, buckets, mask): the set's bucket index was rebuilt
_UNDO_FLUSH = 5  # (tag, shards, expires, heap, key_count, data_bytes, set_count, member_count,
#                   hash_count, field_count, list_count, element_count, zset_count,
#                   zset_member_count, stream_overhead_bytes)
_UNDO_FIELD_APPEND = 6  # (tag, key, hash, field): the field was appended to the hash bound to key
_UNDO_FIELD_REMOVE = 7  # (tag, key, hash, field, value, position): swap-removed from that hash
_UNDO_FIELD_UPDATE = 8  # (tag, key, hash, position, old value): a field's value was replaced
_UNDO_LIST_PUSH = 9  # (tag, key, list, head, count): count elements were pushed at one end
_UNDO_LIST_POP = 10  # (tag, key, list, head, elements): popped from one end, in that order
_UNDO_LIST_SET = 11  # (tag, key, list, index, old element): an element was replaced
_UNDO_LIST_INSERT = 12  # (tag, key, list, index): an element was inserted at index
_UNDO_LIST_ITEMS = 13  # (tag, key, list, old deque, old data_bytes): the elements were swapped
_UNDO_ZSET_PUT = 14  # (tag, key, zset, member, old score or None): a member was given a score
_UNDO_ZSET_DELETE = 15  # (tag, key, zset, [(score, member), ...]): these members were removed
_UNDO_LEVEL = 16  # (tag, level): the cluster's feature level before a features entry raised it
_UNDO_STREAM = 17  # (tag, key, stream, record): a change StreamValue._undo takes back
_UNDO_LIBRARIES = 18  # (tag, libraries, functions): the function libraries before a change

_U64 = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# What a snapshot item costs in a batch beyond its key and value bytes (msgpack headers, the
# kind, the expiry), and what each set member adds beyond its bytes: for batch sizing only.
_ITEM_OVERHEAD_BYTES = 16
_MEMBER_OVERHEAD_BYTES = 5
_SCORE_BYTES = 9  # a msgpack float64

_pack_digest_header = struct.Struct(">BQQ").pack
_pack_digest_length = struct.Struct(">Q").pack
_pack_digest_expiry = struct.Struct(">Bq").pack
_pack_digest_score = struct.Struct(">d").pack


def _after_prefix(prefix: bytes) -> bytes | None:
    """The least bytes string above every string that starts with `prefix` (None if there is
    none: the prefix is all 0xff bytes)."""
    stem = prefix.rstrip(b"\xff")
    return stem[:-1] + bytes([stem[-1] + 1]) if stem else None


def shard_of(key: bytes) -> int:
    return zlib.crc32(key) & (SHARD_COUNT - 1)


def _new_digest(key_count: int) -> hashlib.blake2b:
    checksum = hashlib.blake2b(DIGEST_FORMAT, digest_size=16)
    checksum.update(_pack_digest_length(key_count))
    return checksum


def _string_digest_parts(key: bytes, value: bytes,
                         expire_at_ms: int | None) -> tuple[bytes, bytes, bytes, bytes]:
    """What a string key's binding feeds the digest, in order (see `_digest_key`)."""
    return (_pack_digest_header(1, len(key), len(value)), key, value,
            b"\x00" if expire_at_ms is None else _pack_digest_expiry(1, expire_at_ms))


def _digest_key(
    update: Callable[[bytes], None],
    key: bytes,
    value: Value | _Image,
    expire_at_ms: int | None,
) -> None:
    """Feed one key's binding to a digest: shared by `KVState.digest` and the snapshot cursor,
    which must produce the very same byte stream. A set's members go in sorted, whatever their
    positions, so that two replicas that built it in different orders agree; a hash's fields
    likewise, each followed by its value. (A hash is a HashValue, or the tuple of its fields and
    values, alternating, that a snapshot cursor captured; a set a SetValue or a member list.) A
    list's elements go in in their order, which is part of the list; a sorted set's members in
    its order (lowest score first, which its contents alone decide), each with the 8 bytes of
    its score, so -0.0 and 0.0 differ."""
    if type(value) is bytes:
        update(b"".join(_string_digest_parts(key, value, expire_at_ms)))
        return
    if type(value) is StreamValue or type(value) is StreamImage:
        stream_image: StreamImage = (
            value.image() if type(value) is StreamValue else value)  # type: ignore[assignment, union-attr]
        packed = msgpack.packb([stream_image.meta, stream_image.entries], use_bin_type=True)
        update(_pack_digest_header(6, len(key), len(stream_image)))
        update(key)
        update(_pack_digest_length(len(packed)))
        update(packed)
    elif type(value) is ZSetValue or type(value) is ZSetImage:
        if type(value) is ZSetValue:
            ranked: Iterable[tuple[float, bytes]] = iter(value)  # type: ignore[arg-type]
        else:
            image = value.pairs  # type: ignore[union-attr]
            ranked = zip(image[1::2], image[0::2], strict=True)  # type: ignore[arg-type]
        update(_pack_digest_header(5, len(key), len(value)))  # type: ignore[arg-type]
        update(key)
        update(b"".join([part for score, member in ranked
                         for part in (_pack_digest_length(len(member)), member,
                                      _pack_digest_score(score))]))
    elif type(value) is ListValue or type(value) is _ListImage:
        elements: Iterable[bytes] = (
            value._items if type(value) is ListValue else value.elements)  # type: ignore[union-attr]
        update(_pack_digest_header(4, len(key), len(value)))  # type: ignore[arg-type]
        update(key)
        update(b"".join([part for element in elements
                         for part in (_pack_digest_length(len(element)), element)]))
    elif type(value) is HashValue or type(value) is tuple:
        flat = value if type(value) is tuple else value.pair_list()  # type: ignore[union-attr]
        pairs = sorted(zip(flat[0::2], flat[1::2], strict=True))  # type: ignore[index]
        update(_pack_digest_header(3, len(key), len(pairs)))
        update(key)
        for field, field_value in pairs:
            update(_pack_digest_length(len(field)))
            update(field)
            update(_pack_digest_length(len(field_value)))
            update(field_value)
    else:
        update(_pack_digest_header(2, len(key), len(value)))  # type: ignore[arg-type]
        update(key)
        members: list[bytes] = sorted(value)  # type: ignore[type-var, arg-type]
        for member in members:
            update(_pack_digest_length(len(member)))
            update(member)
    if expire_at_ms is None:
        update(b"\x00")
    else:
        update(_pack_digest_expiry(1, expire_at_ms))


def _reverse_bits64(value: int) -> int:
    return int(format(value, "064b")[::-1], 2)


def _next_scan_cursor(cursor: int, mask: int) -> int:
    """Redis's reverse-binary cursor increment: visiting buckets in this order returns every
    member present for the whole scan at least once even if the bucket count changes between
    calls (the high bits of a cursor from a bigger table select a superset of buckets)."""
    cursor |= _U64 ^ mask
    return _reverse_bits64((_reverse_bits64(cursor) + 1) & _U64)


def _scan_buckets(buckets: list[dict[bytes, Any]], mask: int, cursor: int, count: int,
                  seen: Callable[[dict[bytes, Any]], list[Any]]) -> tuple[int, list[Any]]:
    """One SSCAN, HSCAN or ZSCAN step over a bucket index: whole buckets from `cursor` on until
    at least `count` entries were visited. Returns (next cursor or 0 when done, what `seen`
    makes of each bucket visited, in order)."""
    found: list[Any] = []
    visited = 0
    while True:
        bucket = buckets[cursor & mask]
        if bucket:
            found.extend(seen(bucket))
            visited += len(bucket)
        cursor = _next_scan_cursor(cursor, mask)
        if cursor == 0 or visited >= count:
            return cursor, found


def _bucket_index(bucket_count: int, entries: Iterable[tuple[bytes, Any]]
                  ) -> tuple[list[dict[bytes, Any]], int]:
    """A bucket index (buckets, mask) of `bucket_count` (a power of two) buckets holding the
    (key, value) entries, each in the bucket crc32 of its key picks."""
    mask = bucket_count - 1
    buckets: list[dict[bytes, Any]] = [{} for _ in range(bucket_count)]
    crc32 = zlib.crc32
    for key, value in entries:
        buckets[crc32(key) & mask][key] = value
    return buckets, mask


class _BucketIndex:
    """A member (field) -> value index split into buckets by crc32 of the key, which SSCAN,
    HSCAN and ZSCAN walk (see _scan_buckets): a SetValue's and a HashValue's map to positions,
    a ZSetValue's to scores. The owner grows and shrinks it (_rebucket, _fit_buckets) and logs
    the old index for undo (_UNDO_REBUCKET, which _restore_buckets takes back)."""

    __slots__ = ("_buckets", "_mask")

    def __init__(self) -> None:
        self._buckets: list[dict[bytes, Any]] = [{}]
        self._mask = 0

    def _bucket_of(self, key: bytes) -> dict[bytes, Any]:
        mask = self._mask
        return self._buckets[zlib.crc32(key) & mask] if mask else self._buckets[0]

    def _restore_buckets(self, buckets: list[dict[bytes, Any]], mask: int) -> None:
        self._buckets = buckets
        self._mask = mask

    def _copy_index_to(self, clone: _BucketIndex) -> None:
        clone._buckets = [dict(bucket) for bucket in self._buckets]
        clone._mask = self._mask


class SetValue(_BucketIndex):
    """A set's members, in an order every replica reproduces.

    Members sit in a list (their positions), which gives O(1) random picks: SPOP swaps the last
    member into the hole, so removal is O(1) too. A member -> position index, split into buckets
    by crc32 of the member, answers membership and is what SSCAN walks. Iteration order is the
    list order, a function of the history of adds and removes, never of hash seeds.

    Only KVState mutates a SetValue (through the underscore methods), because every change must
    also reach the counters, the effects and the undo log; commands use the read methods."""

    __slots__ = ("_members", "member_bytes")

    def __init__(self, members: Iterable[bytes] = ()) -> None:
        super().__init__()
        self._members: list[bytes] = []
        self.member_bytes = 0  # the sum of len(member)
        for member in members:
            if member not in self:
                self._append(member)

    # ---- reading ----

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._bucket_of(member)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._members)

    def member_list(self) -> list[bytes]:
        """The members in position order (a copy)."""
        return list(self._members)

    def member_at(self, position: int) -> bytes:
        return self._members[position]

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SSCAN step: whole buckets from `cursor` on until at least `count` members were
        visited. Returns (next cursor or 0 when done, the members seen). Members of a bucket come
        sorted, so the reply does not depend on the order a bucket dict was filled in."""
        return _scan_buckets(self._buckets, self._mask, cursor, count, sorted)

    # ---- changes, for KVState only ----

    def _append(self, member: bytes) -> tuple[list[dict[bytes, int]], int] | None:
        """Add a member that is not present; returns the old index if it was rebuilt."""
        members = self._members
        self._bucket_of(member)[member] = len(members)
        members.append(member)
        self.member_bytes += len(member)
        if len(members) > SET_BUCKET_MEMBERS_MAX * len(self._buckets):
            return self._rebucket(2 * len(self._buckets))
        return None

    def _remove(self, member: bytes) -> tuple[int, tuple[list[dict[bytes, int]], int] | None]:
        """Remove a present member, moving the last one into its place. Returns the member's
        position and the old index if it was rebuilt."""
        position = self._bucket_of(member).pop(member)
        members = self._members
        last = members.pop()
        if position < len(members):
            members[position] = last
            self._bucket_of(last)[last] = position
        self.member_bytes -= len(member)
        bucket_count = len(self._buckets)
        if bucket_count > 1 and len(members) < SET_BUCKET_MEMBERS_MIN * bucket_count:
            return position, self._rebucket(bucket_count // 2)
        return position, None

    def _rebucket(self, bucket_count: int) -> tuple[list[dict[bytes, int]], int]:
        old = (self._buckets, self._mask)
        self._buckets, self._mask = _bucket_index(
            bucket_count, zip(self._members, range(len(self._members))))
        return old

    def _undo_append(self, member: bytes) -> None:
        members = self._members
        invariant(bool(members) and members[-1] == member, "undo of an append out of order")
        members.pop()
        del self._bucket_of(member)[member]
        self.member_bytes -= len(member)

    def _undo_remove(self, member: bytes, position: int) -> None:
        members = self._members
        invariant(0 <= position <= len(members), "undo of a removal out of order")
        if position < len(members):
            moved = members[position]
            self._bucket_of(moved)[moved] = len(members)
            members.append(moved)
            members[position] = member
        else:
            members.append(member)
        self._bucket_of(member)[member] = position
        self.member_bytes += len(member)

    def _copy(self) -> SetValue:
        clone = SetValue()
        clone._members = list(self._members)
        self._copy_index_to(clone)
        clone.member_bytes = self.member_bytes
        return clone


class HashValue(_BucketIndex):
    """A hash's fields and their values, in an order every replica reproduces.

    The layout of SetValue: the fields sit in a list (their positions) with their values in a
    parallel list, so HRANDFIELD picks in O(1) and removing a field moves the last one into its
    place, O(1) too. A field -> position index, split into buckets by crc32 of the field,
    answers HGET and is what HSCAN walks. Iteration order (HGETALL, HKEYS, HVALS) is the
    position order: insertion order until a field is deleted, then the last field takes the
    deleted one's place. A function of the history of changes, never of hash seeds.

    Only KVState mutates a HashValue (through the underscore methods), because every change must
    also reach the counters, the effects and the undo log; commands use the read methods."""

    __slots__ = ("_fields", "_values", "data_bytes")

    def __init__(self, pairs: Sequence[bytes] = ()) -> None:
        """From field, value, field, value, ... (a field given twice keeps its first value:
        callers that must not repeat one compare `len` with half the pairs' length)."""
        super().__init__()
        self._fields: list[bytes] = []
        self._values: list[bytes] = []
        self.data_bytes = 0  # the sum of len(field) + len(value)
        for i in range(0, len(pairs) - 1, 2):
            field = pairs[i]
            if field not in self._bucket_of(field):
                self._append(field, pairs[i + 1])

    # ---- reading ----

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, field: object) -> bool:
        return field in self._bucket_of(field)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._fields)

    def get(self, field: bytes) -> bytes | None:
        position = self._bucket_of(field).get(field)
        return None if position is None else self._values[position]

    def position_of(self, field: bytes) -> int | None:
        return self._bucket_of(field).get(field)

    def field_list(self) -> list[bytes]:
        """The fields in position order (a copy)."""
        return list(self._fields)

    def value_list(self) -> list[bytes]:
        """The values in position order (a copy)."""
        return list(self._values)

    def pair_list(self) -> list[bytes]:
        """field, value, field, value, ... in position order (a new list): the shape of the
        effects and of the snapshot items."""
        flat: list[bytes] = [b""] * (2 * len(self._fields))
        flat[0::2] = self._fields
        flat[1::2] = self._values
        return flat

    def as_dict(self) -> dict[bytes, bytes]:
        """field -> value, in position order (a new dict)."""
        return dict(zip(self._fields, self._values, strict=True))

    def field_at(self, position: int) -> bytes:
        return self._fields[position]

    def value_at(self, position: int) -> bytes:
        return self._values[position]

    def scan(self, cursor: int, count: int) -> tuple[int, list[int]]:
        """One HSCAN step, as SetValue.scan: whole buckets from `cursor` on until at least
        `count` fields were visited. Returns (next cursor or 0 when done, the positions of the
        fields seen). A bucket's fields come in position order, which every replica has too,
        so a hash small enough for one bucket comes whole in HGETALL's order."""
        return _scan_buckets(self._buckets, self._mask, cursor, count,
                             lambda bucket: sorted(bucket.values()))

    # ---- changes, for KVState only ----

    def _append(self, field: bytes, value: bytes) -> tuple[list[dict[bytes, int]], int] | None:
        """Add a field that is not present; returns the old index if it was rebuilt."""
        fields = self._fields
        self._bucket_of(field)[field] = len(fields)
        fields.append(field)
        self._values.append(value)
        self.data_bytes += len(field) + len(value)
        if len(fields) > SET_BUCKET_MEMBERS_MAX * len(self._buckets):
            return self._rebucket(2 * len(self._buckets))
        return None

    def _update(self, position: int, value: bytes) -> bytes:
        """Replace the value at `position`; returns the old one."""
        old = self._values[position]
        self._values[position] = value
        self.data_bytes += len(value) - len(old)
        return old

    def _remove(
        self, field: bytes
    ) -> tuple[int, bytes, tuple[list[dict[bytes, int]], int] | None]:
        """Remove a present field, moving the last one into its place. Returns the field's
        position, its value, and the old index if it was rebuilt."""
        position = self._bucket_of(field).pop(field)
        fields = self._fields
        values = self._values
        value = values[position]
        last_field = fields.pop()
        last_value = values.pop()
        if position < len(fields):
            fields[position] = last_field
            values[position] = last_value
            self._bucket_of(last_field)[last_field] = position
        self.data_bytes -= len(field) + len(value)
        bucket_count = len(self._buckets)
        if bucket_count > 1 and len(fields) < SET_BUCKET_MEMBERS_MIN * bucket_count:
            return position, value, self._rebucket(bucket_count // 2)
        return position, value, None

    def _rebucket(self, bucket_count: int) -> tuple[list[dict[bytes, int]], int]:
        old = (self._buckets, self._mask)
        self._buckets, self._mask = _bucket_index(
            bucket_count, zip(self._fields, range(len(self._fields))))
        return old

    def _undo_append(self, field: bytes) -> None:
        fields = self._fields
        invariant(bool(fields) and fields[-1] == field, "undo of a field append out of order")
        fields.pop()
        value = self._values.pop()
        del self._bucket_of(field)[field]
        self.data_bytes -= len(field) + len(value)

    def _undo_remove(self, field: bytes, value: bytes, position: int) -> None:
        fields = self._fields
        values = self._values
        invariant(0 <= position <= len(fields), "undo of a field removal out of order")
        if position < len(fields):
            moved = fields[position]
            self._bucket_of(moved)[moved] = len(fields)
            fields.append(moved)
            values.append(values[position])
            fields[position] = field
            values[position] = value
        else:
            fields.append(field)
            values.append(value)
        self._bucket_of(field)[field] = position
        self.data_bytes += len(field) + len(value)

    def _copy(self) -> HashValue:
        clone = HashValue()
        clone._fields = list(self._fields)
        clone._values = list(self._values)
        self._copy_index_to(clone)
        clone.data_bytes = self.data_bytes
        return clone


class ListValue:
    """A list's elements, in order (the only order a list has, so every replica has it too).

    A deque: O(1) pushes and pops at both ends (LPUSH, RPOP, LMOVE, the capped-list pattern of
    LPUSH then LTRIM 0 n), and index access that walks blocks of 64 from the nearer end, O(n/64)
    (LINDEX, LSET, LINSERT). `data_bytes` is the sum of the elements' lengths.

    Only KVState mutates a ListValue (through the underscore methods), because every change must
    also reach the counters, the effects and the undo log; commands use the read methods."""

    __slots__ = ("_items", "data_bytes")

    def __init__(self, elements: Iterable[bytes] = ()) -> None:
        self._items: deque[bytes] = deque(elements)
        self.data_bytes = sum(map(len, self._items))

    # ---- reading ----

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._items)

    def at(self, index: int) -> bytes:
        """The element at `index` (0 <= index < len)."""
        return self._items[index]

    def element_list(self) -> list[bytes]:
        """The elements in order (a new list): the shape of the effects and snapshot items."""
        return list(self._items)

    def range(self, start: int, stop: int) -> list[bytes]:
        """The elements at start..stop inclusive (0 <= start <= stop < len), walking from the
        nearer end, so the last few of a long list are as quick as the first few."""
        items = self._items
        if start > len(items) - 1 - stop:
            tail = list(itertools.islice(reversed(items), len(items) - 1 - stop,
                                         len(items) - start))
            tail.reverse()
            return tail
        return list(itertools.islice(items, start, stop + 1))

    def reversed_range(self, count: int) -> list[bytes]:
        """The last `count` elements, last first (what RPOP with a count answers)."""
        return list(itertools.islice(reversed(self._items), count))

    # ---- changes, for KVState only ----

    def _push(self, head: bool, elements: list[bytes]) -> None:
        if head:
            self._items.extendleft(elements)
        else:
            self._items.extend(elements)
        self.data_bytes += sum(map(len, elements))

    def _pop(self, head: bool, count: int) -> list[bytes]:
        """Remove `count` elements from one end; returns them in the order they left."""
        pop = self._items.popleft if head else self._items.pop
        popped = [pop() for _ in range(count)]
        self.data_bytes -= sum(map(len, popped))
        return popped

    def _set(self, index: int, element: bytes) -> bytes:
        """Replace the element at `index`; returns the old one."""
        old = self._items[index]
        self._items[index] = element
        self.data_bytes += len(element) - len(old)
        return old

    def _insert(self, index: int, element: bytes) -> None:
        self._items.insert(index, element)
        self.data_bytes += len(element)

    def _delete_at(self, index: int) -> bytes:
        element = self._items[index]
        del self._items[index]
        self.data_bytes -= len(element)
        return element

    def _swap_items(self, items: deque[bytes], data_bytes: int) -> tuple[deque[bytes], int]:
        """Put `items` in place of the elements; returns the old ones (for undo)."""
        old = (self._items, self.data_bytes)
        self._items = items
        self.data_bytes = data_bytes
        return old

    def _copy(self) -> ListValue:
        return ListValue(self._items)


class _Top:
    """Above every bytes string: (score, _TOP) sorts after every member with that score."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return 0

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return other is not self


_TOP = _Top()


class ZSetValue(_BucketIndex):
    """A sorted set: members with a score each, in the order of (score, member), which is the
    same on every replica because it is a function of the contents alone.

    Two indexes, like Redis's dict and skiplist. A member -> score index split into buckets by
    crc32 of the member, as a SetValue's (ZSCAN walks them with SSCAN's cursor), answers ZSCORE
    in O(1). A SortedList of (score, member) pairs (sortedcontainers: a list of sorted lists
    with a positional index) answers a rank, a score bound or the member at a rank in
    O(log n), and hands out k members from a rank in O(log n + k). Python orders those pairs
    as Redis orders a zset: by score (-0.0 equal to 0.0), then by member bytes (memcmp, then
    the shorter first). A score is a float, never NaN (the commands refuse one).

    `data_bytes` is the sum of the members' lengths; `long_members` counts members longer than
    a Redis listpack holds (64 bytes), so whether this zset would be a listpack in Redis is
    known in O(1).

    Only KVState mutates a ZSetValue (through the underscore methods), because every change
    must also reach the counters, the effects and the undo log; commands use the read
    methods."""

    __slots__ = ("_order", "data_bytes", "long_members")

    def __init__(self, pairs: Sequence[object] = ()) -> None:
        """From member, score, member, score, ... (a member given twice keeps its first score:
        callers that must not repeat one compare `len` with half the pairs' length)."""
        super().__init__()
        self.data_bytes = 0
        self.long_members = 0
        scores: dict[bytes, float] = {}
        for i in range(0, len(pairs) - 1, 2):
            scores.setdefault(pairs[i], pairs[i + 1])  # type: ignore[arg-type]
        self._order = SortedList((score, member) for member, score in scores.items())
        for member in scores:
            self._counted(member, 1)
        buckets = 1
        while len(scores) > SET_BUCKET_MEMBERS_MAX * buckets:
            buckets *= 2
        if buckets == 1:
            self._buckets = [scores]
        else:
            self._buckets, self._mask = _bucket_index(buckets, scores.items())

    # ---- reading ----

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, member: object) -> bool:
        return member in self._bucket_of(member)  # type: ignore[arg-type]

    def score(self, member: bytes) -> float | None:
        return self._bucket_of(member).get(member)

    def rank(self, member: bytes) -> int | None:
        """The member's position from the lowest score (0-based), or None if absent."""
        score = self._bucket_of(member).get(member)
        return None if score is None else self._order.bisect_left((score, member))

    def at(self, position: int) -> tuple[float, bytes]:
        """(score, member) at a position from the lowest (0 <= position < len)."""
        return self._order[position]  # type: ignore[no-any-return]

    def slice(self, start: int, stop: int, reverse: bool = False) -> list[tuple[float, bytes]]:
        """(score, member) at positions start..stop-1 (0 <= start <= stop <= len), lowest
        first, or highest first with `reverse`; O(log n + k)."""
        return list(self._order.islice(start, stop, reverse=reverse))

    def score_position(self, score: float, after: bool) -> int:
        """The position of the first member whose score is >= `score` (or > it, `after`)."""
        if after:
            return self._order.bisect_right((score, _TOP))  # type: ignore[no-any-return]
        return self._order.bisect_left((score,))  # type: ignore[no-any-return]

    def uniform(self) -> bool:
        """Whether every member has the same score (so members are in byte order)."""
        order = self._order
        return not order or order[0][0] == order[-1][0]

    def fits_listpack(self) -> bool:
        """Whether Redis would keep this zset as a listpack (zset-max-listpack-entries 128,
        zset-max-listpack-value 64), had it been written in one go."""
        return len(self._order) <= LISTPACK_ENTRIES_MAX and not self.long_members

    def pair_list(self) -> list[object]:
        """member, score, member, score, ... from the lowest (a new list): the shape of the
        effects and of the snapshot items."""
        flat: list[object] = [None] * (2 * len(self._order))
        flat[0::2] = [member for _, member in self._order]
        flat[1::2] = [score for score, _ in self._order]
        return flat

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        """(score, member) from the lowest."""
        return iter(self._order)

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One ZSCAN step, as SetValue.scan: whole buckets from `cursor` on until at least
        `count` members were visited. Returns (next cursor or 0 when done, the members seen).
        A zset of one bucket (at most 128 members) comes whole, lowest score first, as Redis
        answers a listpack; a bucket of a bigger one comes in byte order."""
        if self._mask == 0:
            return 0, [member for _, member in self._order]
        return _scan_buckets(self._buckets, self._mask, cursor, count, sorted)

    # ---- changes, for KVState only ----

    def _counted(self, member: bytes, sign: int) -> None:
        self.data_bytes += sign * len(member)
        if len(member) > LISTPACK_MEMBER_BYTES_MAX:
            self.long_members += sign

    def _put(self, member: bytes, score: float
             ) -> tuple[float | None, tuple[list[dict[bytes, float]], int] | None]:
        """Give `member` this score, adding it if absent. Returns its old score (None if it
        was added) and the old bucket index if it was rebuilt."""
        bucket = self._bucket_of(member)
        old = bucket.get(member)
        if old is not None:
            self._order.remove((old, member))
            self._order.add((score, member))
            bucket[member] = score
            return old, None
        bucket[member] = score
        self._order.add((score, member))
        self._counted(member, 1)
        return None, self._fit_buckets()

    def _delete(self, member: bytes) -> tuple[float, tuple[list[dict[bytes, float]], int] | None]:
        """Remove a present member. Returns its score and the old index if it was rebuilt."""
        score = self._bucket_of(member).pop(member)
        self._order.remove((score, member))
        self._counted(member, -1)
        return score, self._fit_buckets()

    def _delete_positions(
        self, start: int, stop: int
    ) -> tuple[list[tuple[float, bytes]], tuple[list[dict[bytes, float]], int] | None]:
        """Remove the members at positions start..stop-1; returns them (lowest first) and the
        old index if it was rebuilt."""
        removed = list(self._order.islice(start, stop))
        del self._order[start:stop]
        for _, member in removed:
            del self._bucket_of(member)[member]
            self._counted(member, -1)
        return removed, self._fit_buckets()

    def _fit_buckets(self) -> tuple[list[dict[bytes, float]], int] | None:
        """Grow or shrink the bucket index to fit the members (as a SetValue's: at most 128
        and at least 16 per bucket); the old index if it was rebuilt."""
        count = len(self._buckets)
        size = len(self._order)
        target = count
        while size > SET_BUCKET_MEMBERS_MAX * target:
            target *= 2
        while target > 1 and size < SET_BUCKET_MEMBERS_MIN * target:
            target //= 2
        if target == count:
            return None
        old = (self._buckets, self._mask)
        self._buckets, self._mask = _bucket_index(
            target, ((member, score) for score, member in self._order))
        return old

    def _undo_put(self, member: bytes, old: float | None) -> None:
        """Take back a _put: the member's old score, or its absence."""
        bucket = self._bucket_of(member)
        score = bucket[member]
        self._order.remove((score, member))
        if old is None:
            del bucket[member]
            self._counted(member, -1)
        else:
            bucket[member] = old
            self._order.add((old, member))

    def _undo_delete(self, removed: list[tuple[float, bytes]]) -> None:
        """Put back members a _delete or _delete_positions took."""
        for score, member in removed:
            self._bucket_of(member)[member] = score
            self._counted(member, 1)
        self._order.update(removed)

    def _copy(self) -> ZSetValue:
        clone = ZSetValue()
        clone._order = SortedList(self._order)
        self._copy_index_to(clone)
        clone.data_bytes = self.data_bytes
        clone.long_members = self.long_members
        return clone


class ZSetImage:
    """A zset's contents as a snapshot cursor keeps it and `KVState.items` yields it: member,
    score, member, score, ... from the lowest."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[object]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs) // 2

    def __eq__(self, other: object) -> bool:
        return type(other) is ZSetImage and other.pairs == self.pairs

    def __hash__(self) -> int:
        return hash(tuple(self.pairs))

    def __repr__(self) -> str:
        return f"ZSetImage({self.pairs!r})"


# What a key may be bound to: a string, a set, a hash, a list, a sorted set or a stream.
Value = bytes | SetValue | HashValue | ListValue | ZSetValue | StreamValue
# A value as `KVState.items` yields it (see there).
Item = bytes | list[bytes] | dict[bytes, bytes] | tuple[bytes, ...] | ZSetImage | StreamImage


class Undo:
    """What `undo` needs to revert one recorded execution. Opaque to callers: it holds
    references to the replaced values (a deleted set is kept whole, not copied) and to the old
    shards after a FLUSHALL, so it costs O(size of the change) to build and to apply."""

    __slots__ = ("_change_after", "_change_before", "_done", "_log")

    def __init__(self, log: list[tuple], change_before: int, change_after: int) -> None:
        self._log = log
        self._change_before = change_before
        self._change_after = change_after
        self._done = False


class _ReceiverCount(Protocol):
    """What PUBLISH asks of a node's subscriptions (replikv.pubsub.Subscriptions)."""

    def receivers(self, channel: bytes) -> int: ...

    def shard_receivers(self, channel: bytes) -> int: ...


class _Recording:
    __slots__ = ("effects", "log")

    def __init__(self) -> None:
        self.effects: list[list] = []
        self.log: list[tuple] = []


def _is_expiry(value: object) -> bool:
    return value is None or (type(value) is int and _INT64_MIN <= value <= _INT64_MAX)


def _check_hash_item(key: bytes, value: object) -> None:
    """A snapshot hash item's fields and values (restore_records's own check)."""
    invariant(type(value) is list and value and len(value) % 2 == 0,
              f"the snapshot hash {key!r} is not fields with values")
    invariant(all(type(item) is bytes for item in value),  # type: ignore[attr-defined]
              "hash fields and values must be bytes")


def _checked_zset(key: bytes, pairs: object) -> ZSetValue:
    """A snapshot sorted set item's members and scores as a ZSetValue (restore_records's own
    check)."""
    invariant(type(pairs) is list and pairs and len(pairs) % 2 == 0,
              f"the snapshot sorted set {key!r} is not members with scores")
    invariant(all(type(m) is bytes for m in pairs[0::2]),  # type: ignore[index]
              "sorted set members must be bytes")
    invariant(all(type(score) is float and not math.isnan(score)
                  for score in pairs[1::2]),  # type: ignore[index]
              "sorted set scores must be floats, not NaN")
    value = ZSetValue(pairs)  # type: ignore[arg-type]
    invariant(2 * len(value) == len(pairs), f"the snapshot sorted set {key!r} repeats members")  # type: ignore[arg-type]
    return value


def _check_effects(effects: Any) -> None:
    invariant(type(effects) is list, "effects must be a list")
    for index, effect in enumerate(effects):
        _check_effect(index, effect)


def _check_effect(index: int, effect: object) -> None:
    if (type(effect) is list and len(effect) == 4 and type(effect[0]) is int
            and effect[0] == EFFECT_SET_STRING
            and type(effect[1]) is bytes and type(effect[2]) is bytes
            and (effect[3] is None or type(effect[3]) is int and _INT64_MIN <= effect[3]
                 <= _INT64_MAX)):
        return  # the common case, checked without building any message
    where = "effect %d"
    invariant(type(effect) is list and len(effect) >= 1, where + ": not a non-empty list", index)
    opcode = effect[0]  # type: ignore[index]
    invariant(type(opcode) is int and opcode in _EFFECT_LENGTHS,
              where + ": unknown opcode %r", index, opcode)
    invariant(len(effect) == _EFFECT_LENGTHS[opcode],  # type: ignore[arg-type]
              where + ": wrong length for %r", index, opcode)
    if opcode == EFFECT_FLUSH:
        return
    if opcode >= EFFECT_LIBRARY_LOAD:
        _check_library_effect(index, opcode, effect)  # type: ignore[arg-type]
        return
    invariant(type(effect[1]) is bytes, where + ": the key is not bytes", index)  # type: ignore[index]
    if opcode == EFFECT_PUBLISH or opcode == EFFECT_SPUBLISH:
        invariant(type(effect[2]) is bytes, where + ": the message is not bytes", index)  # type: ignore[index]
        return
    if opcode >= EFFECT_STREAM_ADD:
        _check_stream_effect(index, opcode, effect)  # type: ignore[arg-type]
        return
    if opcode == EFFECT_SET_STRING:
        invariant(type(effect[2]) is bytes, where + ": the value is not bytes", index)  # type: ignore[index]
        invariant(_is_expiry(effect[3]), where + ": bad expiry", index)  # type: ignore[index]
    elif opcode == EFFECT_EXPIRE:
        invariant(_is_expiry(effect[2]), where + ": bad expiry", index)  # type: ignore[index]
    elif opcode in (EFFECT_SET_ADD, EFFECT_SET_REMOVE, EFFECT_SET_REPLACE):
        members = effect[2]  # type: ignore[index]
        invariant(type(members) is list and members,
                  where + ": members not a non-empty list", index)
        invariant(all(type(m) is bytes for m in members), where + ": a member is not bytes",
                  index)
        # A set used for membership only, never iterated.
        invariant(len(set(members)) == len(members), where + ": repeated members", index)
        if opcode == EFFECT_SET_REPLACE:
            invariant(_is_expiry(effect[3]), where + ": bad expiry", index)  # type: ignore[index]
    elif opcode in (EFFECT_HASH_SET, EFFECT_HASH_DELETE, EFFECT_HASH_REPLACE):
        items = effect[2]  # type: ignore[index]
        invariant(type(items) is list and items, where + ": fields not a non-empty list", index)
        invariant(all(type(item) is bytes for item in items),
                  where + ": a field or value is not bytes", index)
        fields = items if opcode == EFFECT_HASH_DELETE else items[0::2]
        invariant(opcode == EFFECT_HASH_DELETE or len(items) % 2 == 0,
                  where + ": a field without its value", index)
        # A set used for membership only, never iterated.
        invariant(len(set(fields)) == len(fields), where + ": repeated fields", index)
        if opcode == EFFECT_HASH_REPLACE:
            invariant(_is_expiry(effect[3]), where + ": bad expiry", index)  # type: ignore[index]
    elif opcode in (EFFECT_LIST_PUSH_HEAD, EFFECT_LIST_PUSH_TAIL, EFFECT_LIST_REPLACE):
        elements = effect[2]  # type: ignore[index]
        invariant(type(elements) is list and elements,
                  where + ": elements not a non-empty list", index)
        invariant(all(type(e) is bytes for e in elements), where + ": an element is not bytes",
                  index)
        if opcode == EFFECT_LIST_REPLACE:
            invariant(_is_expiry(effect[3]), where + ": bad expiry", index)  # type: ignore[index]
    elif opcode in (EFFECT_LIST_POP_HEAD, EFFECT_LIST_POP_TAIL):
        count = effect[2]  # type: ignore[index]
        invariant(type(count) is int and 1 <= count <= _INT64_MAX, where + ": bad count", index)
    elif opcode in (EFFECT_LIST_SET, EFFECT_LIST_INSERT):
        position = effect[2]  # type: ignore[index]
        invariant(type(position) is int and 0 <= position <= _INT64_MAX,
                  where + ": bad index", index)
        invariant(type(effect[3]) is bytes, where + ": the element is not bytes", index)  # type: ignore[index]
    elif opcode == EFFECT_LIST_REMOVE:
        positions = effect[2]  # type: ignore[index]
        invariant(type(positions) is list and positions,
                  where + ": indexes not a non-empty list", index)
        invariant(all(type(p) is int for p in positions), where + ": an index is not an int",
                  index)
        # Strictly ascending from 0 up: each index once, in the list's order.
        invariant(positions[0] >= 0 and all(a < b for a, b in itertools.pairwise(positions)),
                  where + ": indexes not strictly ascending from 0", index)
    elif opcode in (EFFECT_ZSET_ADD, EFFECT_ZSET_REPLACE):
        items = effect[2]  # type: ignore[index]
        invariant(type(items) is list and items and len(items) % 2 == 0,
                  where + ": members not a non-empty list of members with scores", index)
        members = items[0::2]
        invariant(all(type(m) is bytes for m in members), where + ": a member is not bytes",
                  index)
        invariant(all(type(score) is float and not math.isnan(score) for score in items[1::2]),
                  where + ": a score is not a float, or is NaN", index)
        # A set used for membership only, never iterated.
        invariant(len(set(members)) == len(members), where + ": repeated members", index)
        if opcode == EFFECT_ZSET_REPLACE:
            invariant(_is_expiry(effect[3]), where + ": bad expiry", index)  # type: ignore[index]
    elif opcode == EFFECT_ZSET_REMOVE:
        members = effect[2]  # type: ignore[index]
        invariant(type(members) is list and members,
                  where + ": members not a non-empty list", index)
        invariant(all(type(m) is bytes for m in members), where + ": a member is not bytes",
                  index)
        # A set used for membership only, never iterated.
        invariant(len(set(members)) == len(members), where + ": repeated members", index)
    elif opcode == EFFECT_STRING_SPLICE:
        splices = effect[2]  # type: ignore[index]
        invariant(type(splices) is list and splices and len(splices) % 3 == 0,
                  where + ": splices not a non-empty list of triples", index)
        reached = 0
        for at in range(0, len(splices), 3):
            offset, removed, inserted = splices[at:at + 3]
            invariant(type(offset) is int and type(removed) is int and type(inserted) is bytes
                      and reached <= offset <= _INT64_MAX and 0 <= removed <= _INT64_MAX,
                      where + ": a splice is not ascending [offset, removed, bytes]", index)
            reached = offset + removed
    elif opcode == EFFECT_ZSET_REMOVE_RANGE:
        start, count = effect[2], effect[3]  # type: ignore[index]
        invariant(type(start) is int and 0 <= start <= _INT64_MAX
                  and type(count) is int and 1 <= count <= _INT64_MAX,
                  where + ": bad rank or count", index)


def _check_library_effect(index: int, opcode: int, effect: list) -> None:
    if opcode == EFFECT_LIBRARY_LOAD:
        invariant(library_from_record(effect[1], effect[2], effect[3]) is not None,
                  "effect %d: not a library", index)
    elif opcode == EFFECT_LIBRARY_DELETE:
        invariant(type(effect[1]) is bytes, "effect %d: the library name is not bytes", index)
    else:
        invariant(effect[1] == 0 and type(effect[1]) is int, "effect %d: bad flush", index)


def _digest_libraries(update: Callable[[bytes], None], libraries: dict[bytes, Library]) -> None:
    """What the function libraries add to the digest, after the keys (nothing when there are
    none, so a state without libraries digests as it always did): each library's name and
    code, by name (its functions follow from its code)."""
    if not libraries:
        return
    update(b"\xfflibraries" + _pack_digest_length(len(libraries)))
    for name in sorted(libraries):
        code = libraries[name].code
        update(_pack_digest_length(len(name)))
        update(name)
        update(_pack_digest_length(len(code)))
        update(code)


def _function_index(libraries: dict[bytes, Library]) -> dict[bytes, tuple[Library, Any]]:
    """The functions by lowercase name: Redis looks a function up case-insensitively (one
    library may register two names differing only in case: the first registered is found)."""
    index: dict[bytes, tuple[Library, Any]] = {}
    for name in sorted(libraries):
        library = libraries[name]
        for info in library.functions:
            index.setdefault(info.name.lower(), (library, info))
    return index


def _is_id_list(ids: object) -> bool:
    """A non-empty list of stream ids (as effects write them), none twice."""
    return (type(ids) is list and bool(ids)
            and all(id_from_text(i) is not None for i in ids)
            and len(set(ids)) == len(ids))  # a set used for membership only, never iterated


def _check_stream_effect(index: int, opcode: int, effect: list) -> None:
    where = "effect %d"
    if opcode == EFFECT_STREAM_ADD:
        fields = effect[3]
        invariant(id_from_text(effect[2]) is not None, where + ": a bad stream id", index)
        invariant(type(fields) is list and fields and len(fields) % 2 == 0
                  and all(type(item) is bytes for item in fields),
                  where + ": fields not a non-empty list of fields with values", index)
    elif opcode == EFFECT_STREAM_DELETE:
        invariant(_is_id_list(effect[2]), where + ": ids not a non-empty list of ids", index)
    elif opcode == EFFECT_STREAM_TRIM:
        count = effect[2]
        invariant(type(count) is int and 1 <= count <= _INT64_MAX, where + ": bad count", index)
    elif opcode == EFFECT_STREAM_IDS:
        invariant(id_from_text(effect[2]) is not None and id_from_text(effect[4]) is not None
                  and type(effect[3]) is int and 0 <= effect[3] <= _U64,
                  where + ": bad stream ids or count", index)
    elif opcode == EFFECT_STREAM_REPLACE:
        image = effect[2]
        invariant(type(image) is list and len(image) == 2 and type(image[1]) is list,
                  where + ": a stream image is not [meta, entries]", index)
        invariant(_is_expiry(effect[3]), where + ": bad expiry", index)
    else:
        invariant(type(effect[2]) is bytes, where + ": the group is not bytes", index)
        if opcode == EFFECT_STREAM_GROUP:
            invariant(id_from_text(effect[3]) is not None and type(effect[4]) is int
                      and ENTRIES_READ_UNKNOWN <= effect[4] <= _U64,
                      where + ": bad group id or entries read", index)
        elif opcode == EFFECT_STREAM_ACK:
            invariant(_is_id_list(effect[3]), where + ": ids not a non-empty list of ids", index)
        elif opcode != EFFECT_STREAM_GROUP_DESTROY:
            invariant(type(effect[3]) is bytes, where + ": the consumer is not bytes", index)
            if opcode == EFFECT_STREAM_CONSUMER:
                invariant(type(effect[4]) is int and type(effect[5]) is int
                          and _INT64_MIN <= effect[4] <= _INT64_MAX
                          and _INT64_MIN <= effect[5] <= _INT64_MAX,
                          where + ": bad consumer times", index)
            elif opcode == EFFECT_STREAM_DELIVER:
                pairs = effect[5]
                invariant(type(effect[4]) is int and _INT64_MIN <= effect[4] <= _INT64_MAX,
                          where + ": bad delivery time", index)
                invariant(type(pairs) is list and pairs and len(pairs) % 2 == 0
                          and _is_id_list(pairs[0::2])
                          and all(type(c) is int and 0 <= c <= _INT64_MAX for c in pairs[1::2]),
                          where + ": deliveries not ids each with a count", index)


class KVState:
    """The whole keyspace of one replica. Commands reach it through the primitives below
    (`get`, `write`, `delete`, `set_add`, ...), which keep the shards, the expiry dict, the heap,
    the counters, and (during a recorded execution) the effects and the undo log consistent;
    only this class touches those structures."""

    __slots__ = (
        "_change_id",
        "_changes_made",
        "_data_bytes",
        "_expires",
        "_expiry_heap",
        "_functions",
        "_hash_count",
        "_hash_field_count",
        "_key_count",
        "_libraries",
        "_list_count",
        "_list_element_count",
        "_recording",
        "_rng",
        "_seed",
        "_set_count",
        "_set_member_count",
        "_shards",
        "_snapshot",
        "_snapshot_cursor",
        "_stream_overhead_bytes",
        "_zset_count",
        "_zset_member_count",
        "feature_level",
        "in_script_call",
        "published",
        "pubsub",
        "script_context",
        "script_level_wanted",
    )

    def __init__(self) -> None:
        self._shards: list[dict[bytes, Value]] = [{} for _ in range(SHARD_COUNT)]
        self._expires: dict[bytes, int] = {}
        self._expiry_heap: list[tuple[int, bytes]] = []
        self._key_count = 0
        # The sum over keys of len(key) plus len(value) for a string, member_bytes for a set,
        # data_bytes for a hash, a list or a sorted set.
        self._data_bytes = 0
        self._set_count = 0
        self._set_member_count = 0
        self._hash_count = 0
        self._hash_field_count = 0
        self._list_count = 0
        self._list_element_count = 0
        self._zset_count = 0
        self._zset_member_count = 0
        # The sum over streams of StreamValue.overhead_bytes() (their data_bytes are in
        # _data_bytes, like the other types').
        self._stream_overhead_bytes = 0
        # Function libraries by name (replikv.commands.functions), and their functions by
        # name. Replaced, never changed in place, by each change: an undo puts the old dicts
        # back, and a snapshot cursor keeps the dict of its begin.
        self._libraries: dict[bytes, Library] = {}
        self._functions: dict[bytes, tuple[Library, Any]] = {}
        # The cluster's feature level (replikv.features): which kinds of entry every member can
        # apply. Replicated like the keyspace (raised by a log entry, carried by snapshots) but
        # no part of it: FLUSHALL leaves it, and digests do not cover it.
        self.feature_level = FEATURE_LEVEL_LEGACY
        self._recording: _Recording | None = None
        # Set by the node deciding a script's outcome (replikv.commands.scripts): its limits.
        # None while applying the log: a committed script runs to its end, as it did there.
        self.script_context: ScriptContext | None = None
        # Set by a script's redis.call of a command the cluster's feature level does not allow
        # yet (replikv.features.script_call_level): (that level, the command's name), for the
        # leader to raise the level and run the script again (NodeCore takes and clears it).
        self.script_level_wanted: tuple[int, bytes] = (0, b"")
        # True while a script's redis.call runs (run_for_script), on every replica alike: SORT
        # of a set BY nosort sorts it there, as Redis does for a script.
        self.in_script_call = False
        self._seed = 0
        self._rng: random.Random | None = None
        # Each top-level change (a log entry applied, a recorded execution) gets a new id, so
        # `undo` can insist it reverts the change in effect and nothing newer.
        self._changes_made = 0
        self._change_id = 0
        # The open snapshot cursor, if any, and the same cursor only while it is watching this
        # state's shards (None while a FLUSHALL has swapped them out): every change tests
        # `_snapshot` first, so with no snapshot running copy-on-write costs one attribute test.
        self._snapshot_cursor: StateSnapshotCursor | None = None
        self._snapshot: StateSnapshotCursor | None = None
        # Pub/sub, not replicated state (no digest, no snapshot): the messages PUBLISH and
        # SPUBLISH ran or applied here, as (sharded, channel, message), for the node core to
        # take after each entry (None: not collected, as in point-in-time recovery); and the
        # node's subscriptions (replikv.pubsub.Subscriptions), which PUBLISH's reply counts.
        self.published: list[tuple[bool, bytes, bytes]] | None = None
        self.pubsub: _ReceiverCount | None = None

    # ---- the replicated and local entry points ----

    def apply_command(self, argv: list[bytes], time_ms: int, seed: int = 0) -> object:
        """Apply one command from the log at the leader's time `time_ms`; return its reply.

        `seed` seeds the generator SPOP and SRANDMEMBER draw from; the leader chooses it and
        puts it in the entry so every replica picks alike. A client mistake becomes an
        ErrorReply and leaves the logical state unchanged (keys the command named that had
        already expired at `time_ms` may have been dropped first, which every replica does
        alike). Read commands are accepted too, so a node may order reads through the log."""
        self._new_change()
        return self._run(argv, time_ms, seed)

    def execute_recorded(
        self, argv: list[bytes], time_ms: int, seed: int = 0, parsed: tuple | None = None
    ) -> tuple[object, list[list], Undo]:
        """Run a command as `apply_command` does (same state change, same reply) and also return
        its effects (see the module docstring) and an Undo that reverts it exactly. `parsed`:
        what `parse_command(argv)` returned, if the caller has it already."""
        return self._recorded(lambda: self._run(argv, time_ms, seed, parsed))

    def run_transaction(self, commands: list[Queued], time_ms: int) -> list[object]:
        """EXEC's body (replikv.commands.transactions): run each (argv, parsed, error) in order,
        each as one command runs (one that fails answers its error and changes nothing; one
        with an `error` already is not run), the i-th with the seed + i when the transaction
        has a seed. Returns their replies. Nothing else runs in between: this is one call."""
        base = self._seed
        replies: list[object] = []
        for i, (argv, parsed, error) in enumerate(commands):
            if error is not None:
                replies.append(error)
                continue
            replies.append(self._run(argv, time_ms, base + i if base else 0, parsed))
        return replies

    @property
    def command_seed(self) -> int:
        """The seed of the command being run (0: none), for a script's math.random."""
        return self._seed

    def run_for_script(self, argv: list[bytes], time_ms: int, seed: int) -> object:
        """One redis.call of a running script: the command run as any command runs (inside
        the script's recorded execution, if any), its reply or error reply. The script's
        caller has checked the command may run there (replikv.commands.scripts). Below
        STREAM_LEVEL a script may call no stream command: a replica of an older replikv (in
        active replication, where replicas run the script) would not know it, and would go
        on where this one stopped, or stop where this one went on."""
        if (self.feature_level < STREAM_LEVEL and argv
                and argv[0].lower() in STREAM_COMMANDS):
            return ErrorReply(f"ERR {argv[0].decode('latin-1').upper()[:32]} needs the "
                              f"cluster at feature level {STREAM_LEVEL} (streams): upgrade "
                              "every member, then write to a stream once from a client")
        self.in_script_call = True
        try:
            return self._run(argv, time_ms, seed)
        finally:
            self.in_script_call = False

    def raise_feature_level(self, level: int) -> None:
        """Apply a features entry (replikv.features): the cluster's level becomes `level`, which
        the caller has checked this replikv can apply. It never falls: a lower one changes
        nothing (an entry proposed by a leader that did not know of a higher one)."""
        if level > self.feature_level:
            if self._recording is not None:
                self._recording.log.append((_UNDO_LEVEL, self.feature_level))
            self.feature_level = level

    def raise_feature_level_recorded(self, level: int) -> Undo:
        """`raise_feature_level` with an Undo, for a leader applying ahead."""
        return self._recorded(lambda: self.raise_feature_level(level))[2]

    def expire_recorded(self, keys: Iterable[bytes], time_ms: int) -> tuple[int, list[list], Undo]:
        """`apply_expire` recorded: (keys deleted, effects, undo)."""
        return self._recorded(lambda: self._expire(keys, time_ms))  # type: ignore[return-value]

    def apply_effects(self, effects: Any) -> None:
        """Replay the effects of a recorded execution (a backup in passive mode). Never parses
        or runs a command. The whole list is checked before anything changes; malformed input or
        effects that contradict this state (adding members to a string) are an
        InvariantViolation: the log is corrupt or the replicas diverged."""
        _check_effects(effects)
        self._new_change()
        for effect in effects:
            self._apply_effect(effect)

    def apply_effects_recorded(self, effects: list[list]) -> Undo:
        """`apply_effects` that can be undone: for a node that applies an entry it may later
        have to discard (an uncommitted entry of an earlier leader)."""
        _check_effects(effects)

        def apply_all() -> None:
            for effect in effects:
                self._apply_effect(effect)

        return self._recorded(apply_all)[2]

    def undo(self, undo: Undo) -> None:
        """Revert one recorded execution. Recorded executions must be undone most recent first,
        with no other change applied since; anything else is a bug and stops loudly."""
        invariant(type(undo) is Undo, "undo given something that is not an Undo")
        invariant(not undo._done, "this execution was already undone")
        invariant(
            self._change_id == undo._change_after,
            "undo out of order: the state changed after this execution",
        )
        self._rollback(undo._log)
        self._change_id = undo._change_before
        undo._done = True

    def execute_read(self, argv: list[bytes], now_ms: int, seed: int = 0) -> object:
        """Serve a read command from local state at the local time `now_ms`; never mutates.
        `seed` seeds SRANDMEMBER's picks."""
        try:
            spec, parsed = parse_command(argv)
        except CommandError as error:
            return error.reply()
        invariant(spec.kind == "read", f"execute_read given the write command {spec.name!r}")
        self._seed, self._rng = seed, None
        try:
            return spec.run(self, parsed, now_ms)
        except CommandError as error:
            return error.reply()
        except ScriptAborted as stopped:  # EVAL_RO past its limits: it changed nothing
            return stopped.reply
        finally:
            self._rng = None

    def publish(self, channel: bytes, message: bytes, *, sharded: bool) -> int:
        """PUBLISH (SPUBLISH with `sharded`): no key changes; the message goes to the outbox
        and, in a recorded execution, is the effect the entry carries. Returns the number of
        local receivers (PUBLISH's reply on the leader; every replica computes it alike from
        its own subscriptions, and only the leader's is answered)."""
        recording = self._recording
        if recording is not None:
            recording.effects.append(
                [EFFECT_SPUBLISH if sharded else EFFECT_PUBLISH, channel, message])
        if self.published is not None:
            self.published.append((sharded, channel, message))
        view = self.pubsub
        if view is None:
            return 0
        return view.shard_receivers(channel) if sharded else view.receivers(channel)

    def take_published(self) -> list[tuple[bool, bytes, bytes]]:
        """The outbox's messages, oldest first, and an empty outbox."""
        published = self.published
        if not published:
            return []
        self.published = []
        return published

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
        self._new_change()
        return self._expire(keys, time_ms)

    # ---- observation ----

    def key_count(self) -> int:
        """Keys stored, including expired ones not yet deleted through the log (as Redis's
        DBSIZE counts them): equal on every replica at the same log index."""
        return self._key_count

    def expires_count(self) -> int:
        return len(self._expires)

    def used_bytes(self) -> int:
        """An estimate of the memory the keyspace holds (see KEY_OVERHEAD_BYTES,
        SET_MEMBER_OVERHEAD_BYTES, HASH_FIELD_OVERHEAD_BYTES, LIST_ELEMENT_OVERHEAD_BYTES and
        ZSET_MEMBER_OVERHEAD_BYTES)."""
        return (
            self._data_bytes
            + self._key_count * KEY_OVERHEAD_BYTES
            + len(self._expires) * EXPIRY_OVERHEAD_BYTES
            + self._set_count * SET_OVERHEAD_BYTES
            + self._set_member_count * SET_MEMBER_OVERHEAD_BYTES
            + self._hash_count * HASH_OVERHEAD_BYTES
            + self._hash_field_count * HASH_FIELD_OVERHEAD_BYTES
            + self._list_count * LIST_OVERHEAD_BYTES
            + self._list_element_count * LIST_ELEMENT_OVERHEAD_BYTES
            + self._zset_count * ZSET_OVERHEAD_BYTES
            + self._zset_member_count * ZSET_MEMBER_OVERHEAD_BYTES
            + self._stream_overhead_bytes
        )

    def digest(self) -> str:
        """A checksum of the whole state (keys, types, values, set members, hash fields and
        values, expiry times) as hex.

        Independent of insertion order: shards are visited in order, each shard's keys in sorted
        order and each set's members and hash's fields sorted, and a key's shard depends only on
        the key. So two
        replicas that built the same set in different orders agree. Every field is
        length-prefixed and typed so no two different states produce the same byte stream."""
        checksum = _new_digest(self._key_count)
        update = checksum.update
        expires = self._expires
        for shard in self._shards:
            if not shard:
                continue
            for key in sorted(shard):
                _digest_key(update, key, shard[key], expires.get(key))
        _digest_libraries(update, self._libraries)
        return checksum.hexdigest()

    def items(self) -> Iterator[tuple[bytes, Item, int | None]]:
        """Every (key, value, expire_at_ms or None) in a deterministic order, for snapshots. A
        string's value is bytes; a set's is the list of its members in position order, a hash's
        a dict of its fields in position order, so a restored replica picks as the original
        does; a list's the tuple of its elements; a sorted set's a ZSetImage. Includes expired
        keys not yet deleted through the log, so a restore is exact."""
        expires = self._expires
        for shard in self._shards:
            if not shard:
                continue
            for key in sorted(shard):
                value = shard[key]
                item: Item
                if type(value) is bytes:
                    item = value
                elif type(value) is SetValue:
                    item = value.member_list()
                elif type(value) is ListValue:
                    item = tuple(value._items)
                elif type(value) is ZSetValue:
                    item = ZSetImage(value.pair_list())
                elif type(value) is StreamValue:
                    item = value.image()
                else:
                    item = value.as_dict()  # type: ignore[union-attr]
                yield key, item, expires.get(key)

    def restore_item(self, key: bytes, value: Item, expire_at_ms: int | None) -> None:
        """Load one item of `items()` from a snapshot into a state being rebuilt."""
        self._new_change()
        if type(value) is bytes:
            self.write(key, value, expire_at_ms)
            return
        if type(value) is ZSetImage:
            self._replace(key, _checked_zset(key, value.pairs), expire_at_ms)
            return
        if type(value) is StreamImage:
            self._replace(key, StreamValue.from_image(value.meta, value.entries), expire_at_ms)
            return
        if type(value) is tuple:
            invariant(bool(value), "a list item must not be empty")
            invariant(all(type(e) is bytes for e in value), "list elements must be bytes")
            self._replace(key, ListValue(value), expire_at_ms)  # type: ignore[arg-type]
            return
        if type(value) is dict:
            invariant(bool(value), "a hash item must not be empty")
            invariant(all(type(f) is bytes and type(v) is bytes for f, v in value.items()),
                      "hash fields and values must be bytes")
            pairs = [item for pair in value.items() for item in pair]
            self._replace(key, HashValue(pairs), expire_at_ms)
            return
        invariant(type(value) is list and value, "a set item must be a non-empty list")
        invariant(all(type(m) is bytes for m in value), "set members must be bytes")  # type: ignore[union-attr]
        invariant(len(set(value)) == len(value), "a set item repeats a member")  # type: ignore[arg-type]
        self._replace(key, SetValue(value), expire_at_ms)  # type: ignore[arg-type]  # a list

    # ---- snapshots ----

    def begin_snapshot(self) -> StateSnapshotCursor:
        """Start handing out the state as it is now, in batches (see the module docstring and
        StateSnapshotCursor). One at a time: close the previous cursor (or run it to the end)
        first. Nothing is copied here."""
        invariant(self._snapshot_cursor is None, "a snapshot of this state is already running")
        invariant(self._recording is None, "a snapshot cannot begin inside a recorded execution")
        cursor = StateSnapshotCursor(self)
        self._snapshot_cursor = cursor
        self._snapshot = cursor
        return cursor

    def snapshot_running(self) -> bool:
        return self._snapshot_cursor is not None

    def restore_records(self, records: Iterable[list]) -> None:
        """Load item records (as StateSnapshotCursor.next_batch returns them, possibly read back
        from a snapshot file) into this state, which must not hold their keys yet: a fresh
        state, fed batch after batch. The records were checked where they entered (the file
        reader), so a bad one here is a bug and stops loudly."""
        self._new_change()
        shards = self._shards
        for record in records:
            invariant(type(record) is list and len(record) == 4, "a snapshot record's shape")
            key, kind, value, expire_at_ms = record
            invariant(type(key) is bytes, "a snapshot record's key is not bytes")
            invariant(_is_expiry(expire_at_ms), "a snapshot record's expiry")
            if kind == ITEM_LIBRARY:
                library = library_from_record(key, value[0], value[1])
                invariant(library is not None and key not in self._libraries,
                          f"the snapshot's library {key!r} is not one, or repeats")
                self.put_library(library)  # type: ignore[arg-type]
                continue
            bound = shards[shard_of(key)].get(key)
            if kind == ITEM_STRING:
                invariant(type(value) is bytes, "a snapshot string is not bytes")
                invariant(bound is None, f"the snapshot repeats the key {key!r}")
                self._replace(key, value, expire_at_ms)
            elif kind == ITEM_SET:
                invariant(type(value) is list and value, "a snapshot set has no members")
                invariant(all(type(m) is bytes for m in value), "set members must be bytes")
                invariant(bound is None, f"the snapshot repeats the key {key!r}")
                created = SetValue(value)
                invariant(len(created) == len(value), f"the snapshot set {key!r} repeats members")
                self._replace(key, created, expire_at_ms)
            elif kind == ITEM_SET_MORE:
                invariant(type(bound) is SetValue, f"the snapshot continues no set at {key!r}")
                invariant(expire_at_ms is None, "a set continuation carries an expiry")
                invariant(type(value) is list and value, "a snapshot set has no members")
                for member in value:
                    invariant(type(member) is bytes, "set members must be bytes")
                    invariant(member not in bound, f"the snapshot set {key!r} repeats members")  # type: ignore[operator]
                    self._append_member(key, bound, member)  # type: ignore[arg-type]
            elif kind == ITEM_LIST:
                invariant(type(value) is list and value, "a snapshot list has no elements")
                invariant(all(type(e) is bytes for e in value), "list elements must be bytes")
                invariant(bound is None, f"the snapshot repeats the key {key!r}")
                self._replace(key, ListValue(value), expire_at_ms)
            elif kind == ITEM_LIST_MORE:
                invariant(type(bound) is ListValue, f"the snapshot continues no list at {key!r}")
                invariant(expire_at_ms is None, "a list continuation carries an expiry")
                invariant(type(value) is list and value, "a snapshot list has no elements")
                invariant(all(type(e) is bytes for e in value), "list elements must be bytes")
                self._list_push(key, bound, False, value)  # type: ignore[arg-type]
            elif kind == ITEM_ZSET:
                invariant(bound is None, f"the snapshot repeats the key {key!r}")
                self._replace(key, _checked_zset(key, value), expire_at_ms)
            elif kind == ITEM_ZSET_MORE:
                invariant(type(bound) is ZSetValue,
                          f"the snapshot continues no sorted set at {key!r}")
                invariant(expire_at_ms is None, "a sorted set continuation carries an expiry")
                more = _checked_zset(key, value)
                for score, member in more:
                    invariant(member not in bound,  # type: ignore[operator]
                              f"the snapshot sorted set {key!r} repeats members")
                    self._zset_put(key, bound, member, score)  # type: ignore[arg-type]
            elif kind == ITEM_STREAM:
                invariant(bound is None, f"the snapshot repeats the key {key!r}")
                invariant(type(value) is list and len(value) == 2 and type(value[1]) is list,
                          "a snapshot stream is not [meta, entries]")
                self._replace(key, StreamValue.from_image(value[0], value[1]), expire_at_ms)
            elif kind == ITEM_STREAM_MORE:
                invariant(type(bound) is StreamValue, f"the snapshot continues no stream at {key!r}")
                invariant(expire_at_ms is None, "a stream continuation carries an expiry")
                invariant(type(value) is list and value, "a snapshot stream has no entries")
                self._stream_changed(key, bound,  # type: ignore[arg-type]
                                     bound._append_image_entries, value)  # type: ignore[union-attr]
            elif kind == ITEM_HASH:
                _check_hash_item(key, value)
                invariant(bound is None, f"the snapshot repeats the key {key!r}")
                hashed = HashValue(value)
                invariant(2 * len(hashed) == len(value),
                          f"the snapshot hash {key!r} repeats fields")
                self._replace(key, hashed, expire_at_ms)
            else:
                invariant(kind == ITEM_HASH_MORE, f"unknown snapshot record kind {kind!r}")
                invariant(type(bound) is HashValue, f"the snapshot continues no hash at {key!r}")
                invariant(expire_at_ms is None, "a hash continuation carries an expiry")
                _check_hash_item(key, value)
                for i in range(0, len(value), 2):
                    field = value[i]
                    invariant(field not in bound, f"the snapshot hash {key!r} repeats fields")  # type: ignore[operator]
                    self._append_field(key, bound, field, value[i + 1])  # type: ignore[arg-type]

    @classmethod
    def from_records(cls, records: Iterable[list]) -> KVState:
        """A new state holding exactly the item records (see restore_records)."""
        state = cls()
        state.restore_records(records)
        return state

    # ---- primitives for the command implementations: reading ----

    def lookup(self, key: bytes, time_ms: int) -> Value | None:
        """The value of `key` at `time_ms` whatever its type, or None if absent or expired."""
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            return None
        if self._expires:
            expire_at_ms = self._expires.get(key)
            if expire_at_ms is not None and expire_at_ms <= time_ms:
                return None
        return value

    def get(self, key: bytes, time_ms: int) -> bytes | None:
        """The string value of `key` at `time_ms`, or None if it is absent or expired. A key
        holding another type raises CommandError(WRONGTYPE), as Redis's string lookups do."""
        value = self.lookup(key, time_ms)
        if value is None or type(value) is bytes:
            return value  # type: ignore[return-value]
        raise CommandError(WRONG_TYPE)

    def get_set(self, key: bytes, time_ms: int) -> SetValue | None:
        """The set at `key`, or None if absent or expired; a string raises WRONGTYPE. The
        SetValue is for reading: changes go through set_add, set_remove, ..."""
        value = self.lookup(key, time_ms)
        if value is None or type(value) is SetValue:
            return value  # type: ignore[return-value]
        raise CommandError(WRONG_TYPE)

    def get_hash(self, key: bytes, time_ms: int) -> HashValue | None:
        """The hash at `key`, or None if absent or expired; another type raises WRONGTYPE. The
        HashValue is for reading: changes go through hash_set and hash_delete."""
        value = self.lookup(key, time_ms)
        if value is None or type(value) is HashValue:
            return value  # type: ignore[return-value]
        raise CommandError(WRONG_TYPE)

    def get_zset(self, key: bytes, time_ms: int) -> ZSetValue | None:
        """The sorted set at `key`, or None if absent or expired; another type raises
        WRONGTYPE. The ZSetValue is for reading: changes go through zset_add, zset_remove,
        ..."""
        value = self.lookup(key, time_ms)
        if value is None or type(value) is ZSetValue:
            return value  # type: ignore[return-value]
        raise CommandError(WRONG_TYPE)

    def get_stream(self, key: bytes, time_ms: int) -> StreamValue | None:
        """The stream at `key`, or None if absent or expired; another type raises WRONGTYPE.
        The StreamValue is for reading: changes go through stream_add, stream_trim, ..."""
        value = self.lookup(key, time_ms)
        if value is None or type(value) is StreamValue:
            return value  # type: ignore[return-value]
        raise CommandError(WRONG_TYPE)

    def get_list(self, key: bytes, time_ms: int) -> ListValue | None:
        """The list at `key`, or None if absent or expired; another type raises WRONGTYPE. The
        ListValue is for reading: changes go through list_push, list_pop, ..."""
        value = self.lookup(key, time_ms)
        if value is None or type(value) is ListValue:
            return value  # type: ignore[return-value]
        raise CommandError(WRONG_TYPE)

    def exists(self, key: bytes, time_ms: int) -> bool:
        return self.lookup(key, time_ms) is not None

    def holds(self, key: bytes) -> bool:
        """Whether `key` is stored, expired or not: an expired key stays until the entry that
        expires it is applied."""
        return key in self._shards[shard_of(key)]

    def type_name(self, key: bytes, time_ms: int) -> bytes | None:
        """b"string", b"set", b"hash", b"list", b"zset" or b"stream" (Redis's TYPE names), or
        None if the key is absent."""
        value = self.lookup(key, time_ms)
        if value is None:
            return None
        if type(value) is bytes:
            return b"string"
        if type(value) is ListValue:
            return b"list"
        if type(value) is ZSetValue:
            return b"zset"
        if type(value) is StreamValue:
            return b"stream"
        return b"set" if type(value) is SetValue else b"hash"

    def expire_at_ms(self, key: bytes) -> int | None:
        """The absolute expiry time of a stored key, or None if it has none."""
        return self._expires.get(key)

    def random_generator(self) -> random.Random:
        """The generator of the command being run, seeded with the seed its caller passed, so
        every replica given the same seed draws the same numbers. Never the global `random`."""
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def keys_matching(self, time_ms: int, matches: Callable[[bytes], bool] | None = None, *,
                      prefix: bytes | None = None) -> list[bytes]:
        """Every key not expired at `time_ms` that `matches` accepts (all if None), in shard
        order, sorted within a shard (the same order on every replica): KEYS. Built shard by
        shard with C-level sorts, filters and extends, so that a million keys hold the event
        loop for about 0.1 s. With `prefix`, only keys starting with it (`matches` is then not
        used): a range of each sorted shard, found by bisection."""
        expires = self._expires
        out: list[bytes] = []
        end = _after_prefix(prefix) if prefix is not None else None
        for shard in self._shards:
            if not shard:
                continue
            keys = sorted(shard)
            if prefix is not None:
                keys = keys[bisect.bisect_left(keys, prefix):
                            bisect.bisect_left(keys, end) if end is not None else len(keys)]
            if expires:
                keys = [k for k in keys if (at := expires.get(k)) is None or at > time_ms]
            out.extend(keys if matches is None else filter(matches, keys))
        return out

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
            shard_index += 1
            if not shard:
                continue
            visited += len(shard)
            for key in sorted(shard):
                expire_at_ms = expires.get(key) if expires else None
                if expire_at_ms is None or expire_at_ms > time_ms:
                    found.append(key)
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
            keys = sorted(shard)
            first = (time_ms // SHARD_COUNT) % len(keys)
            for offset in range(len(keys)):
                key = keys[(first + offset) % len(keys)]
                expire_at_ms = expires.get(key) if expires else None
                if expire_at_ms is None or expire_at_ms > time_ms:
                    return key
        return None

    # ---- primitives for the command implementations: changing ----

    def write(
        self,
        key: bytes,
        value: bytes,
        expire_at_ms: int | None = None,
        *,
        keep_ttl: bool = False,
    ) -> None:
        """Store the string `value` under `key`, replacing whatever it held. With keep_ttl the
        key's current expiry (if any) stays; otherwise the expiry becomes `expire_at_ms` (None:
        no expiry)."""
        invariant(type(value) is bytes, "values are stored as bytes")
        if keep_ttl:
            invariant(expire_at_ms is None, "keep_ttl and an expiry time together")
            expire_at_ms = self._expires.get(key)
        self._replace(key, value, expire_at_ms)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_SET_STRING, key, value, expire_at_ms])

    def splice_string(self, key: bytes, splices: list) -> None:
        """Replace stretches of the string stored at `key`, keeping its expiry: `splices` is
        [offset, removed, inserted, ...] as EFFECT_STRING_SPLICE has it (offsets into the
        current value, ascending, apart). The effect is the splices, or the whole new value
        when that is no larger (a sparse HLL's change can span most of it)."""
        value = self._shards[shard_of(key)].get(key)
        invariant(type(value) is bytes, "splice_string on a key not holding a string")
        parts: list[bytes] = []
        reached = 0
        spliced_bytes = 0
        for at in range(0, len(splices), 3):
            offset, removed, inserted = splices[at], splices[at + 1], splices[at + 2]
            invariant(reached <= offset and offset + removed <= len(value),  # type: ignore[arg-type]
                      "a string splice outside the string, or out of order")
            parts.append(value[reached:offset])  # type: ignore[index]
            parts.append(inserted)
            reached = offset + removed
            spliced_bytes += len(inserted) + _SPLICE_OVERHEAD_BYTES
        parts.append(value[reached:])  # type: ignore[index]
        new = b"".join(parts)
        expire_at_ms = self._expires.get(key)
        self._replace(key, new, expire_at_ms)
        if self._recording is not None:
            if spliced_bytes < len(new):
                self._recording.effects.append([EFFECT_STRING_SPLICE, key, splices])
            else:
                self._recording.effects.append([EFFECT_SET_STRING, key, new, expire_at_ms])

    def write_set(self, key: bytes, members: list[bytes], expire_at_ms: int | None = None) -> None:
        """Store a new set of exactly `members` (non-empty, no repeats, in this order) under
        `key`, replacing whatever it held, with that expiry (None: no expiry)."""
        invariant(bool(members), "an empty set is never stored")
        value = SetValue(members)
        invariant(len(value) == len(members), "write_set given repeated members")
        self._replace(key, value, expire_at_ms)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_SET_REPLACE, key, list(members), expire_at_ms])

    def delete(self, key: bytes) -> bool:
        """Remove `key` (expired or not, any type); True if it was stored."""
        index = shard_of(key)
        shard = self._shards[index]
        value = shard.get(key)
        if value is None:
            return False
        if self._snapshot is not None:
            self._snapshot._preserve(index)
        self._journal_binding(key)
        del shard[key]
        self._count(key, value, -1)
        # The heap entry, if any, goes stale and is dropped lazily.
        self._expires.pop(key, None)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_DELETE, key])
        return True

    def set_expire(self, key: bytes, expire_at_ms: int) -> None:
        invariant(key in self._shards[shard_of(key)], "set_expire on a key that is not stored")
        old = self._expires.get(key)
        if old == expire_at_ms:
            return
        if self._recording is not None:
            self._recording.log.append((_UNDO_EXPIRE, key, old))
            self._recording.effects.append([EFFECT_EXPIRE, key, expire_at_ms])
        self._set_expire_stored(key, expire_at_ms)

    def persist(self, key: bytes) -> bool:
        """Remove the expiry of `key`; True if it had one."""
        if key not in self._expires:
            return False
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        old = self._expires.pop(key)
        if self._recording is not None:
            self._recording.log.append((_UNDO_EXPIRE, key, old))
            self._recording.effects.append([EFFECT_EXPIRE, key, None])
        return True

    def rename(self, source: bytes, target: bytes) -> None:
        """Move the value of the stored key `source` (any type, with its expiry) to `target`,
        replacing whatever `target` held. O(1) even for a big set: the object moves."""
        shard = self._shards[shard_of(source)]
        invariant(source in shard, "rename of a key that is not stored")
        if source == target:
            return
        value = shard[source]
        expire_at_ms = self._expires.get(source)
        self.delete(source)
        self._replace(target, value, expire_at_ms)
        self._record_post_image(target, value, expire_at_ms)

    def copy(self, source: bytes, target: bytes) -> None:
        """Copy the value of the stored key `source` (any type, with its expiry) to `target`,
        replacing whatever `target` held."""
        invariant(source != target, "copy of a key onto itself")
        value = self._shards[shard_of(source)][source]
        duplicate = value if type(value) is bytes else value._copy()  # type: ignore[union-attr]
        expire_at_ms = self._expires.get(source)
        self._replace(target, duplicate, expire_at_ms)
        self._record_post_image(target, duplicate, expire_at_ms)

    def set_add(self, key: bytes, members: Iterable[bytes]) -> int:
        """Add the members to the set at `key` (those present are skipped), creating a set
        without expiry if the key is absent. Returns how many were added. The key must not hold
        a string (the command checks that first)."""
        shard = self._shards[shard_of(key)]
        value = shard.get(key)
        if value is None:
            created = SetValue(members)
            if not created:
                return 0
            self._replace(key, created, None)
            added = created.member_list()
        else:
            invariant(type(value) is SetValue, "set_add on a key holding another type")
            added = []
            for member in members:
                if member not in value:  # type: ignore[operator]
                    self._append_member(key, value, member)  # type: ignore[arg-type]
                    added.append(member)
        if added and self._recording is not None:
            self._recording.effects.append([EFFECT_SET_ADD, key, added])
        return len(added)

    def set_remove(self, key: bytes, members: Iterable[bytes]) -> int:
        """Remove the members from the set at `key` (absent ones are skipped); a set left empty
        is deleted. Returns how many were removed; 0 if the key is absent."""
        return self._remove_items(key, members, SetValue, EFFECT_SET_REMOVE)

    def set_pop(self, key: bytes, count: int, rng: random.Random) -> list[bytes]:
        """Remove up to `count` (>= 1) members of the set at `key` chosen with `rng`, each pick
        O(1); all of them (in position order, deleting the key) if count >= the set's size."""
        value = self._shards[shard_of(key)][key]
        invariant(type(value) is SetValue and count >= 1, "set_pop needs a set and a count")
        if count >= len(value):  # type: ignore[arg-type]
            popped = value.member_list()  # type: ignore[union-attr]
            self.delete(key)
            return popped
        popped = []
        for _ in range(count):
            member = value.member_at(rng.randrange(len(value)))  # type: ignore[union-attr, arg-type]
            self._remove_member(key, value, member)  # type: ignore[arg-type]
            popped.append(member)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_SET_REMOVE, key, popped])
        return popped

    def write_hash(
        self, key: bytes, pairs: list[bytes], expire_at_ms: int | None = None
    ) -> None:
        """Store a new hash of exactly `pairs` (field, value, field, value, ...: non-empty, no
        field twice, in this order) under `key`, replacing whatever it held, with that expiry
        (None: no expiry)."""
        invariant(bool(pairs), "an empty hash is never stored")
        value = HashValue(pairs)
        invariant(2 * len(value) == len(pairs), "write_hash given repeated fields")
        self._replace(key, value, expire_at_ms)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_HASH_REPLACE, key, list(pairs), expire_at_ms])

    def hash_set(self, key: bytes, pairs: list[bytes]) -> int:
        """Give each field of `pairs` (field, value, field, value, ...; no field twice) its
        value in the hash at `key`: a field present keeps its position, a new one is appended;
        an absent key becomes a hash without expiry. Returns how many fields were new. The key
        must hold no other type (the command checks that first)."""
        invariant(bool(pairs) and len(pairs) % 2 == 0, "hash_set needs fields with values")
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            created = HashValue(pairs)
            invariant(2 * len(created) == len(pairs), "hash_set given repeated fields")
            self._replace(key, created, None)
            added = len(created)
        else:
            invariant(type(value) is HashValue, "hash_set on a key holding another type")
            added = 0
            for i in range(0, len(pairs), 2):
                field = pairs[i]
                position = value.position_of(field)  # type: ignore[union-attr]
                if position is None:
                    self._append_field(key, value, field, pairs[i + 1])  # type: ignore[arg-type]
                    added += 1
                else:
                    self._update_field(key, value, position, pairs[i + 1])  # type: ignore[arg-type]
        if self._recording is not None:
            self._recording.effects.append([EFFECT_HASH_SET, key, list(pairs)])
        return added

    def hash_delete(self, key: bytes, fields: Iterable[bytes]) -> int:
        """Remove the fields from the hash at `key` (absent ones are skipped); a hash left
        empty is deleted. Returns how many were removed; 0 if the key is absent."""
        return self._remove_items(key, fields, HashValue, EFFECT_HASH_DELETE)

    def _remove_items(self, key: bytes, items: Iterable[bytes], kind: type,
                      opcode: int) -> int:
        """SREM's, HDEL's and ZREM's work: remove these members (fields) from the set (hash,
        sorted set) at `key`, one EFFECT_SET_REMOVE (EFFECT_HASH_DELETE, EFFECT_ZSET_REMOVE)
        for those that were there."""
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            return 0
        invariant(type(value) is kind, "removing %s items from a key holding another type",
                  kind.__name__)
        # Keep the first of any repeat, in order: a dict iterates in insertion order.
        present = [m for m in dict.fromkeys(items) if m in value]  # type: ignore[operator]
        if not present:
            return 0
        if len(present) == len(value):  # type: ignore[arg-type]
            # Removing everything is a delete: one effect, and undo keeps the value whole.
            self.delete(key)
            return len(present)
        for item in present:
            if kind is SetValue:
                self._remove_member(key, value, item)  # type: ignore[arg-type]
            elif kind is ZSetValue:
                self._zset_delete(key, value, item)  # type: ignore[arg-type]
            else:
                self._remove_field(key, value, item)  # type: ignore[arg-type]
        if self._recording is not None:
            self._recording.effects.append([opcode, key, present])
        return len(present)

    def write_list(
        self, key: bytes, elements: list[bytes], expire_at_ms: int | None = None
    ) -> None:
        """Store a new list of exactly `elements` (non-empty, in this order) under `key`,
        replacing whatever it held, with that expiry (None: no expiry)."""
        invariant(bool(elements), "an empty list is never stored")
        self._replace(key, ListValue(elements), expire_at_ms)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_LIST_REPLACE, key, list(elements),
                                            expire_at_ms])

    def list_push(self, key: bytes, head: bool, elements: list[bytes]) -> int:
        """Push the elements one after the other at the head (LPUSH: the last one given ends up
        first) or at the tail of the list at `key`; an absent key becomes a list without
        expiry. Returns the new length. The key must hold no other type (the command checks
        that first)."""
        invariant(bool(elements), "list_push needs elements")
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            value = ListValue(elements[::-1] if head else elements)
            self._replace(key, value, None)
        else:
            invariant(type(value) is ListValue, "list_push on a key holding another type")
            self._list_push(key, value, head, elements)  # type: ignore[arg-type]
        if self._recording is not None:
            self._recording.effects.append(
                [EFFECT_LIST_PUSH_HEAD if head else EFFECT_LIST_PUSH_TAIL, key, list(elements)])
        return len(value)  # type: ignore[arg-type]

    def list_pop(self, key: bytes, head: bool, count: int) -> list[bytes]:
        """Remove up to `count` (>= 1) elements from the head or the tail of the list at `key`;
        returns them in the order they left. A list left empty is deleted."""
        value = self._shards[shard_of(key)][key]
        invariant(type(value) is ListValue and count >= 1, "list_pop needs a list and a count")
        if count >= len(value):  # type: ignore[arg-type]
            popped = value.element_list()  # type: ignore[union-attr]
            if not head:
                popped.reverse()
            self.delete(key)  # one effect, and undo keeps the list object whole
            return popped
        popped = self._list_pop(key, value, head, count)  # type: ignore[arg-type]
        if self._recording is not None:
            self._recording.effects.append(
                [EFFECT_LIST_POP_HEAD if head else EFFECT_LIST_POP_TAIL, key, count])
        return popped

    def list_set(self, key: bytes, index: int, element: bytes) -> None:
        """Replace the element at `index` (0 <= index < length) of the list at `key`."""
        value = self._shards[shard_of(key)][key]
        invariant(type(value) is ListValue and 0 <= index < len(value),  # type: ignore[arg-type]
                  "list_set needs a list and an index in it")
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        old = value._set(index, element)  # type: ignore[union-attr]
        self._data_bytes += len(element) - len(old)
        recording = self._recording
        if recording is not None:
            recording.log.append((_UNDO_LIST_SET, key, value, index, old))
            recording.effects.append([EFFECT_LIST_SET, key, index, element])

    def list_insert(self, key: bytes, index: int, element: bytes) -> int:
        """Insert `element` at `index` (0 <= index <= length: before the element there, or
        at the end) of the list at `key`; returns the new length."""
        value = self._shards[shard_of(key)][key]
        invariant(type(value) is ListValue and 0 <= index <= len(value),  # type: ignore[arg-type]
                  "list_insert needs a list and an index in it or just past it")
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        value._insert(index, element)  # type: ignore[union-attr]
        self._data_bytes += len(element)
        self._list_element_count += 1
        recording = self._recording
        if recording is not None:
            recording.log.append((_UNDO_LIST_INSERT, key, value, index))
            recording.effects.append([EFFECT_LIST_INSERT, key, index, element])
        return len(value)  # type: ignore[arg-type]

    def list_remove_at(self, key: bytes, positions: list[int]) -> None:
        """Remove the elements at `positions` (strictly ascending, each in the list) from the
        list at `key`, in one pass; a list left empty is deleted. O(length): the elements move
        to a new deque, and undo puts the old one back."""
        value = self._shards[shard_of(key)][key]
        invariant(type(value) is ListValue and bool(positions) and positions[-1] < len(value),  # type: ignore[arg-type]
                  "list_remove_at needs a list and positions in it")
        if len(positions) == len(value):  # type: ignore[arg-type]
            self.delete(key)
            return
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        gone = set(positions)  # membership only, never iterated
        kept: deque[bytes] = deque(
            e for i, e in enumerate(value._items) if i not in gone)  # type: ignore[union-attr]
        kept_bytes = sum(map(len, kept))
        old_items, old_bytes = value._swap_items(kept, kept_bytes)  # type: ignore[union-attr]
        self._data_bytes += kept_bytes - old_bytes
        self._list_element_count -= len(positions)
        recording = self._recording
        if recording is not None:
            recording.log.append((_UNDO_LIST_ITEMS, key, value, old_items, old_bytes))
            recording.effects.append([EFFECT_LIST_REMOVE, key, list(positions)])

    def write_zset(self, key: bytes, pairs: list[object],
                   expire_at_ms: int | None = None) -> None:
        """Store a new sorted set of exactly `pairs` (member, score, member, score, ...:
        non-empty, no member twice, scores floats, not NaN) under `key`, replacing whatever it
        held, with that expiry (None: no expiry)."""
        invariant(bool(pairs), "an empty sorted set is never stored")
        value = ZSetValue(pairs)
        invariant(2 * len(value) == len(pairs), "write_zset given repeated members")
        self._replace(key, value, expire_at_ms)
        if self._recording is not None:
            self._recording.effects.append([EFFECT_ZSET_REPLACE, key, list(pairs), expire_at_ms])

    def zset_add(self, key: bytes, pairs: list[object]) -> None:
        """Give each member of `pairs` (member, score, member, score, ...; no member twice;
        scores floats, not NaN) that score in the sorted set at `key`, adding the members that
        are absent; an absent key becomes a sorted set without expiry. A member whose score is
        already that one (-0.0 equals 0.0 here, as in Redis) is left as it is. The key must
        hold no other type (the command checks that first)."""
        invariant(bool(pairs) and len(pairs) % 2 == 0, "zset_add needs members with scores")
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            created = ZSetValue(pairs)
            invariant(2 * len(created) == len(pairs), "zset_add given repeated members")
            self._replace(key, created, None)
            changed = pairs
        else:
            invariant(type(value) is ZSetValue, "zset_add on a key holding another type")
            changed = []
            for i in range(0, len(pairs), 2):
                member, score = pairs[i], pairs[i + 1]
                if value.score(member) != score:  # type: ignore[union-attr, arg-type]
                    self._zset_put(key, value, member, score)  # type: ignore[arg-type]
                    changed += (member, score)
        if changed and self._recording is not None:
            self._recording.effects.append([EFFECT_ZSET_ADD, key, list(changed)])

    def zset_remove(self, key: bytes, members: Iterable[bytes]) -> int:
        """Remove the members from the sorted set at `key` (absent ones are skipped); a sorted
        set left empty is deleted. Returns how many were removed; 0 if the key is absent."""
        return self._remove_items(key, members, ZSetValue, EFFECT_ZSET_REMOVE)

    def zset_remove_range(self, key: bytes, start: int, count: int) -> list[tuple[float, bytes]]:
        """Remove the `count` (>= 1) members from rank `start` on (lowest score first) of the
        sorted set at `key`, all of which it must hold; returns them as (score, member), lowest
        first. A sorted set left empty is deleted. One small effect, whatever the count."""
        value = self._shards[shard_of(key)][key]
        invariant(type(value) is ZSetValue and count >= 1 and start >= 0
                  and start + count <= len(value),  # type: ignore[arg-type]
                  "zset_remove_range needs a sorted set and ranks in it")
        if count == len(value):  # type: ignore[arg-type]
            removed = value.slice(0, count)  # type: ignore[union-attr]
            self.delete(key)  # one effect, and undo keeps the sorted set object whole
            return removed
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        removed, rebuilt = value._delete_positions(start, start + count)  # type: ignore[union-attr]
        self._data_bytes -= sum(len(member) for _, member in removed)
        self._zset_member_count -= count
        if self._recording is not None:
            self._log_change((_UNDO_ZSET_DELETE, key, value, removed), rebuilt)
            self._recording.effects.append([EFFECT_ZSET_REMOVE_RANGE, key, start, count])
        return removed

    # ---- streams (replikv.stream_value; the commands check types and bounds first) ----

    def _stream_at(self, key: bytes) -> StreamValue:
        value = self._shards[shard_of(key)].get(key)
        invariant(type(value) is StreamValue, "a stream change on a key holding no stream")
        return value  # type: ignore[return-value]

    def _stream_changed(self, key: bytes, value: StreamValue, change: Callable[..., object],
                        *args: Any) -> None:
        """Make one change to the stream bound to `key` (call `change(*args)`, one of its
        underscore methods), keeping the counters, a running snapshot and the undo log in
        step."""
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        data_before, overhead_before = value.data_bytes, value.overhead_bytes()
        record = change(*args)
        self._data_bytes += value.data_bytes - data_before
        self._stream_overhead_bytes += value.overhead_bytes() - overhead_before
        if self._recording is not None and record is not None:
            self._recording.log.append((_UNDO_STREAM, key, value, record))

    def _stream_effect(self, effect: list) -> None:
        if self._recording is not None:
            self._recording.effects.append(effect)

    def stream_create(self, key: bytes) -> StreamValue:
        """Bind an absent `key` to a new empty stream without expiry (XGROUP ... MKSTREAM)."""
        invariant(key not in self._shards[shard_of(key)], "stream_create on a stored key")
        value = StreamValue()
        self._replace(key, value, None)
        self._stream_effect([EFFECT_STREAM_IDS, key, b"0-0", 0, b"0-0"])
        return value

    def stream_add(self, key: bytes, stream_id: int, fields: list[bytes]) -> None:
        """Append the entry `stream_id` (above the stream's last id) with these fields and
        values to the stream at `key`; an absent key becomes a stream without expiry."""
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            value = StreamValue()
            self._replace(key, value, None)
        invariant(type(value) is StreamValue, "stream_add on a key holding another type")
        entry = tuple(fields)
        self._stream_changed(key, value, value._add, stream_id, entry)  # type: ignore[arg-type, union-attr]
        self._stream_effect([EFFECT_STREAM_ADD, key, id_text(stream_id), list(fields)])

    def stream_delete(self, key: bytes, ids: list[int]) -> None:
        """Delete these entries (present, no repeats) of the stream at `key` (XDEL)."""
        value = self._stream_at(key)
        invariant(bool(ids) and all(i in value for i in ids) and len(set(ids)) == len(ids),
                  "stream_delete needs entries of the stream")
        self._stream_changed(key, value, value._delete, ids)
        self._stream_effect([EFFECT_STREAM_DELETE, key, [id_text(i) for i in ids]])

    def stream_trim(self, key: bytes, count: int) -> None:
        """Delete the first `count` (>= 1) entries of the stream at `key`."""
        value = self._stream_at(key)
        invariant(1 <= count <= len(value), "stream_trim past the stream's length")
        self._stream_changed(key, value, value._trim, count)
        self._stream_effect([EFFECT_STREAM_TRIM, key, count])

    def stream_set_ids(self, key: bytes, last_id: int, entries_added: int,
                       max_deleted_id: int) -> None:
        """Set the stream's last id, entries_added and max_deleted_id (XSETID); an absent
        key becomes an empty stream."""
        value = self._shards[shard_of(key)].get(key)
        if value is None:
            value = StreamValue()
            self._replace(key, value, None)
        invariant(type(value) is StreamValue, "stream_set_ids on a key holding another type")
        self._stream_changed(key, value, value._set_ids,  # type: ignore[arg-type, union-attr]
                             last_id, entries_added, max_deleted_id)
        self._stream_effect([EFFECT_STREAM_IDS, key, id_text(last_id), entries_added,
                             id_text(max_deleted_id)])

    def stream_group_set(self, key: bytes, group: bytes, last_id: int,
                         entries_read: int) -> None:
        """The group's last delivered id and read counter; the group created if absent."""
        value = self._stream_at(key)
        self._stream_changed(key, value, value._group_set, group, last_id, entries_read)
        self._stream_effect([EFFECT_STREAM_GROUP, key, group, id_text(last_id), entries_read])

    def stream_group_destroy(self, key: bytes, group: bytes) -> None:
        value = self._stream_at(key)
        invariant(group in value.groups, "stream_group_destroy of a group that is not there")
        self._stream_changed(key, value, value._group_destroy, group)
        self._stream_effect([EFFECT_STREAM_GROUP_DESTROY, key, group])

    def stream_consumer_set(self, key: bytes, group: bytes, consumer: bytes, seen_time: int,
                            active_time: int) -> None:
        """A consumer's seen and active times; the consumer created if absent."""
        value = self._stream_at(key)
        invariant(group in value.groups, "stream_consumer_set in a group that is not there")
        self._stream_changed(key, value, value._consumer_set, group, consumer, seen_time,
                             active_time)
        self._stream_effect([EFFECT_STREAM_CONSUMER, key, group, consumer, seen_time,
                             active_time])

    def stream_consumer_delete(self, key: bytes, group: bytes, consumer: bytes) -> None:
        value = self._stream_at(key)
        invariant(group in value.groups and consumer in value.groups[group].consumers,
                  "stream_consumer_delete of a consumer that is not there")
        self._stream_changed(key, value, value._consumer_delete, group, consumer)
        self._stream_effect([EFFECT_STREAM_CONSUMER_DELETE, key, group, consumer])

    def stream_deliver(self, key: bytes, group: bytes, consumer: bytes, delivery_time: int,
                       deliveries: list[tuple[int, int]]) -> None:
        """Each (id, count) of `deliveries` (ids not repeated): its pending entry becomes
        (consumer, delivery_time, count), taken from whichever consumer had it."""
        value = self._stream_at(key)
        invariant(bool(deliveries) and group in value.groups
                  and consumer in value.groups[group].consumers,
                  "stream_deliver needs deliveries and a consumer of a group")
        self._stream_changed(key, value, value._deliver, group, consumer, delivery_time,
                             deliveries)
        self._stream_effect([EFFECT_STREAM_DELIVER, key, group, consumer, delivery_time,
                             [x for stream_id, count in deliveries
                              for x in (id_text(stream_id), count)]])

    def stream_ack(self, key: bytes, group: bytes, ids: list[int]) -> None:
        """These pending entries (present, no repeats) leave the group's PEL."""
        value = self._stream_at(key)
        invariant(bool(ids) and group in value.groups
                  and all(i in value.groups[group].pel for i in ids),
                  "stream_ack needs pending entries of a group")
        self._stream_changed(key, value, value._ack, group, ids)
        self._stream_effect([EFFECT_STREAM_ACK, key, group, [id_text(i) for i in ids]])

    def write_stream(self, key: bytes, image: list, expire_at_ms: int | None = None) -> None:
        """Store the stream of `image` ([meta, entries]) under `key`, replacing whatever it
        held, with that expiry."""
        value = StreamValue.from_image(image[0], image[1])
        self._replace(key, value, expire_at_ms)
        self._stream_effect([EFFECT_STREAM_REPLACE, key, image, expire_at_ms])

    def _apply_stream_effect(self, opcode: int, key: bytes, effect: list) -> None:
        if opcode == EFFECT_STREAM_REPLACE:
            self.write_stream(key, effect[2], effect[3])
            return
        if opcode == EFFECT_STREAM_ADD:
            self.stream_add(key, id_from_text(effect[2]), effect[3])  # type: ignore[arg-type]
            return
        if opcode == EFFECT_STREAM_IDS:
            self.stream_set_ids(key, id_from_text(effect[2]), effect[3],  # type: ignore[arg-type]
                                id_from_text(effect[4]))  # type: ignore[arg-type]
            return
        value = self._stream_at(key)
        if opcode == EFFECT_STREAM_DELETE:
            self.stream_delete(key, [id_from_text(i) for i in effect[2]])  # type: ignore[misc]
        elif opcode == EFFECT_STREAM_TRIM:
            self.stream_trim(key, effect[2])
        elif opcode == EFFECT_STREAM_GROUP:
            self.stream_group_set(key, effect[2], id_from_text(effect[3]), effect[4])  # type: ignore[arg-type]
        else:
            invariant(effect[2] in value.groups, "effects name a stream group that is not there")
            if opcode == EFFECT_STREAM_GROUP_DESTROY:
                self.stream_group_destroy(key, effect[2])
            elif opcode == EFFECT_STREAM_CONSUMER:
                self.stream_consumer_set(key, effect[2], effect[3], effect[4], effect[5])
            elif opcode == EFFECT_STREAM_CONSUMER_DELETE:
                self.stream_consumer_delete(key, effect[2], effect[3])
            elif opcode == EFFECT_STREAM_DELIVER:
                pairs = effect[5]
                self.stream_deliver(key, effect[2], effect[3], effect[4],
                                    [(id_from_text(pairs[i]), pairs[i + 1])  # type: ignore[misc]
                                     for i in range(0, len(pairs), 2)])
            else:
                invariant(opcode == EFFECT_STREAM_ACK, f"unknown stream effect {opcode}")
                self.stream_ack(key, effect[2], [id_from_text(i) for i in effect[3]])  # type: ignore[misc]

    # ---- function libraries (replikv.commands.functions) ----

    @property
    def libraries(self) -> dict[bytes, Library]:
        """The function libraries by name: for reading (changes go through put_library,
        delete_library and flush_libraries)."""
        return self._libraries

    def function_named(self, name: bytes) -> tuple[Library, Any] | None:
        """The library holding the function `name` (case-insensitively, as Redis finds it),
        and the function's FunctionInfo."""
        return self._functions.get(name.lower())

    def _set_libraries(self, libraries: dict[bytes, Library]) -> None:
        if self._recording is not None:
            self._recording.log.append((_UNDO_LIBRARIES, self._libraries, self._functions))
        self._libraries = libraries
        self._functions = _function_index(libraries)

    def put_library(self, library: Library) -> None:
        """The library of that name := `library` (the caller checked that no other library
        holds a function of its functions' names)."""
        for info in library.functions:
            owner = self._functions.get(info.name.lower())
            invariant(owner is None or owner[0].name == library.name,
                      f"function {info.name!r} is in two libraries")
        if self._recording is not None:
            self._recording.effects.append([EFFECT_LIBRARY_LOAD, *library.to_record()])
        libraries = dict(self._libraries)
        libraries[library.name] = library
        self._set_libraries(libraries)

    def delete_library(self, name: bytes) -> None:
        invariant(name in self._libraries, f"no library {name!r} to delete")
        if self._recording is not None:
            self._recording.effects.append([EFFECT_LIBRARY_DELETE, name])
        libraries = dict(self._libraries)
        del libraries[name]
        self._set_libraries(libraries)

    def flush_libraries(self) -> None:
        if self._recording is not None:
            self._recording.effects.append([EFFECT_LIBRARY_FLUSH, 0])
        self._set_libraries({})

    def flush(self) -> None:
        if self._recording is not None:
            self._recording.log.append(
                (
                    _UNDO_FLUSH,
                    self._shards,
                    self._expires,
                    self._expiry_heap,
                    self._key_count,
                    self._data_bytes,
                    self._set_count,
                    self._set_member_count,
                    self._hash_count,
                    self._hash_field_count,
                    self._list_count,
                    self._list_element_count,
                    self._zset_count,
                    self._zset_member_count,
                    self._stream_overhead_bytes,
                )
            )
            self._recording.effects.append([EFFECT_FLUSH])
        # New dicts, not cleared ones: the old shards stay as they were, for the undo above and
        # for a running snapshot cursor, which keeps reading them (nothing is copied here).
        self._shards = [{} for _ in range(SHARD_COUNT)]
        self._expires = {}
        self._expiry_heap = []
        self._key_count = 0
        self._data_bytes = 0
        self._set_count = 0
        self._set_member_count = 0
        self._hash_count = 0
        self._hash_field_count = 0
        self._list_count = 0
        self._list_element_count = 0
        self._zset_count = 0
        self._zset_member_count = 0
        self._stream_overhead_bytes = 0
        self._follow_snapshot_source()

    # ---- internals: running and recording ----

    def _new_change(self) -> None:
        self._changes_made += 1
        self._change_id = self._changes_made

    def _run(self, argv: list[bytes], time_ms: int, seed: int,
             parsed_command: tuple | None = None) -> object:
        if parsed_command is not None:
            spec, parsed = parsed_command
        else:
            try:
                spec, parsed = parse_command(argv)
            except CommandError as error:
                return error.reply()
        if spec.kind == "write" and self._expires:
            # Drop the keys this command names that are already expired at the entry's time, so
            # the command sees them absent, and an INCR or KEEPTTL cannot revive an old expiry.
            # (No key has an expiry: none can be expired.)
            for key in keys_of(spec, argv):
                self._drop_if_expired(key, time_ms)
        recording = self._recording
        changes_before_run = -1 if recording is None else len(recording.log)
        self._seed, self._rng = seed, None
        try:
            return spec.run(self, parsed, time_ms)
        except CommandError as error:
            invariant(
                recording is None or len(recording.log) == changes_before_run,
                f"{spec.name} changed the state and then replied an error",
            )
            return error.reply()
        finally:
            self._rng = None

    def _expire(self, keys: Iterable[bytes], time_ms: int) -> int:
        deleted = 0
        for key in keys:
            if self._drop_if_expired(key, time_ms):
                deleted += 1
        return deleted

    def _recorded(self, execute: Callable[[], object]) -> tuple[object, list[list], Undo]:
        invariant(self._recording is None, "recorded executions do not nest")
        change_before = self._change_id
        self._new_change()
        recording = _Recording()
        self._recording = recording
        try:
            result = execute()
        except BaseException:
            # Our own bug (client mistakes are replies): leave the state as it was, then stop.
            self._recording = None
            self._rollback(recording.log)
            self._change_id = change_before
            raise
        self._recording = None
        return result, recording.effects, Undo(recording.log, change_before, self._change_id)

    def _apply_effect(self, effect: list) -> None:
        opcode = effect[0]
        if opcode == EFFECT_FLUSH:
            self.flush()
            return
        if opcode >= EFFECT_LIBRARY_LOAD:
            if opcode == EFFECT_LIBRARY_LOAD:
                library = library_from_record(effect[1], effect[2], effect[3])
                invariant(library is not None, "a library effect that is not one")
                self.put_library(library)  # type: ignore[arg-type]
            elif opcode == EFFECT_LIBRARY_DELETE:
                self.delete_library(effect[1])
            else:
                self.flush_libraries()
            return
        if opcode == EFFECT_PUBLISH or opcode == EFFECT_SPUBLISH:
            if self.published is not None:
                self.published.append((opcode == EFFECT_SPUBLISH, effect[1], effect[2]))
            return
        key = effect[1]
        if opcode == EFFECT_SET_STRING:
            self.write(key, effect[2], effect[3])
            return
        if opcode == EFFECT_DELETE:
            self.delete(key)
            return
        if opcode == EFFECT_SET_REPLACE:
            self.write_set(key, effect[2], effect[3])
            return
        if opcode == EFFECT_HASH_REPLACE:
            self.write_hash(key, effect[2], effect[3])
            return
        if opcode == EFFECT_LIST_REPLACE:
            self.write_list(key, effect[2], effect[3])
            return
        if opcode == EFFECT_ZSET_REPLACE:
            self.write_zset(key, effect[2], effect[3])
            return
        if opcode >= EFFECT_STREAM_ADD:
            current = self._shards[shard_of(key)].get(key)
            invariant(current is None or type(current) is StreamValue
                      or opcode == EFFECT_STREAM_REPLACE,
                      "stream effects on a key holding another type")
            self._apply_stream_effect(opcode, key, effect)
            return
        value = self._shards[shard_of(key)].get(key)  # (the string case above is the hot one)
        if opcode == EFFECT_SET_ADD:
            invariant(value is None or type(value) is SetValue,
                      "effects add set members to a key holding another type")
            self.set_add(key, effect[2])
        elif opcode == EFFECT_SET_REMOVE:
            invariant(value is None or type(value) is SetValue,
                      "effects remove set members from a key holding another type")
            self.set_remove(key, effect[2])
        elif opcode == EFFECT_HASH_SET:
            invariant(value is None or type(value) is HashValue,
                      "effects set hash fields in a key holding another type")
            self.hash_set(key, effect[2])
        elif opcode == EFFECT_HASH_DELETE:
            invariant(value is None or type(value) is HashValue,
                      "effects delete hash fields from a key holding another type")
            self.hash_delete(key, effect[2])
        elif opcode == EFFECT_LIST_PUSH_HEAD or opcode == EFFECT_LIST_PUSH_TAIL:
            invariant(value is None or type(value) is ListValue,
                      "effects push list elements to a key holding another type")
            self.list_push(key, opcode == EFFECT_LIST_PUSH_HEAD, effect[2])
        elif opcode == EFFECT_LIST_POP_HEAD or opcode == EFFECT_LIST_POP_TAIL:
            invariant(type(value) is ListValue and effect[2] <= len(value),  # type: ignore[arg-type]
                      "effects pop more elements than the key holds in a list")
            self.list_pop(key, opcode == EFFECT_LIST_POP_HEAD, effect[2])
        elif opcode == EFFECT_LIST_SET:
            invariant(type(value) is ListValue and effect[2] < len(value),  # type: ignore[arg-type]
                      "effects set a list element the key does not hold")
            self.list_set(key, effect[2], effect[3])
        elif opcode == EFFECT_LIST_INSERT:
            invariant(type(value) is ListValue and effect[2] <= len(value),  # type: ignore[arg-type]
                      "effects insert a list element past the end of the key's list")
            self.list_insert(key, effect[2], effect[3])
        elif opcode == EFFECT_LIST_REMOVE:
            invariant(type(value) is ListValue and effect[2][-1] < len(value),  # type: ignore[arg-type]
                      "effects remove list elements the key does not hold")
            self.list_remove_at(key, effect[2])
        elif opcode == EFFECT_ZSET_ADD:
            invariant(value is None or type(value) is ZSetValue,
                      "effects add sorted set members to a key holding another type")
            self.zset_add(key, effect[2])
        elif opcode == EFFECT_ZSET_REMOVE:
            invariant(type(value) is ZSetValue and len(effect[2]) < len(value)  # type: ignore[arg-type]
                      and all(member in value for member in effect[2]),  # type: ignore[operator]
                      "effects remove sorted set members the key does not hold (or all of them)")
            self.zset_remove(key, effect[2])
        elif opcode == EFFECT_ZSET_REMOVE_RANGE:
            invariant(type(value) is ZSetValue
                      and effect[2] + effect[3] <= len(value)  # type: ignore[arg-type]
                      and effect[3] < len(value),  # type: ignore[arg-type]
                      "effects remove sorted set ranks the key does not hold (or all of them)")
            self.zset_remove_range(key, effect[2], effect[3])
        elif opcode == EFFECT_STRING_SPLICE:
            splices = effect[2]
            invariant(type(value) is bytes
                      and splices[-3] + splices[-2] <= len(value),  # type: ignore[arg-type]
                      "effects splice a string the key does not hold, or past its end")
            self.splice_string(key, splices)
        elif opcode == EFFECT_EXPIRE:
            if value is None:
                return
            if effect[2] is None:
                self.persist(key)
            else:
                self.set_expire(key, effect[2])

    def _rollback(self, log: list[tuple]) -> None:
        for entry in log[::-1]:  # (reversed() here trips mypyc 2.x, for the compiled trial)
            tag = entry[0]
            if tag == _UNDO_BIND:
                _, key, value, expire_at_ms = entry
                index = shard_of(key)
                if self._snapshot is not None:
                    self._snapshot._preserve(index)
                shard = self._shards[index]
                current = shard.get(key)
                if current is not None:
                    self._count(key, current, -1)
                if value is None:
                    shard.pop(key, None)
                    self._expires.pop(key, None)
                    continue
                shard[key] = value
                self._count(key, value, 1)
                if expire_at_ms is None:
                    self._expires.pop(key, None)
                else:
                    self._set_expire_stored(key, expire_at_ms)
            elif tag == _UNDO_EXPIRE:
                _, key, expire_at_ms = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                if expire_at_ms is None:
                    self._expires.pop(key, None)
                else:
                    self._set_expire_stored(key, expire_at_ms)
            elif tag == _UNDO_APPEND:
                # Undo runs newest first, so the set is bound to `key` again, as it was then.
                _, key, value, member = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                value._undo_append(member)
                self._data_bytes -= len(member)
                self._set_member_count -= 1
            elif tag == _UNDO_REMOVE:
                _, key, value, member, position = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                value._undo_remove(member, position)
                self._data_bytes += len(member)
                self._set_member_count += 1
            elif tag == _UNDO_REBUCKET:
                # Only the member -> position index changes, never the members or their order,
                # so no snapshot item changes: nothing to preserve.
                _, value, buckets, mask = entry
                value._restore_buckets(buckets, mask)
            elif tag == _UNDO_FIELD_APPEND:
                _, key, value, field = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                before = value.data_bytes
                value._undo_append(field)
                self._data_bytes += value.data_bytes - before
                self._hash_field_count -= 1
            elif tag == _UNDO_FIELD_REMOVE:
                _, key, value, field, field_value, position = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                value._undo_remove(field, field_value, position)
                self._data_bytes += len(field) + len(field_value)
                self._hash_field_count += 1
            elif tag == _UNDO_FIELD_UPDATE:
                _, key, value, position, old_value = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                replaced = value._update(position, old_value)
                self._data_bytes += len(old_value) - len(replaced)
            elif tag == _UNDO_LIST_PUSH:
                _, key, value, head, count = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                popped = value._pop(head, count)
                self._data_bytes -= sum(map(len, popped))
                self._list_element_count -= count
            elif tag == _UNDO_LIST_POP:
                _, key, value, head, popped = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                value._push(head, popped[::-1])
                self._data_bytes += sum(map(len, popped))
                self._list_element_count += len(popped)
            elif tag == _UNDO_LIST_SET:
                _, key, value, index, old_element = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                replaced = value._set(index, old_element)
                self._data_bytes += len(old_element) - len(replaced)
            elif tag == _UNDO_LIST_INSERT:
                _, key, value, index = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                self._data_bytes -= len(value._delete_at(index))
                self._list_element_count -= 1
            elif tag == _UNDO_LIST_ITEMS:
                _, key, value, old_items, old_bytes = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                count_before, bytes_before = len(value), value.data_bytes
                value._swap_items(old_items, old_bytes)
                self._data_bytes += old_bytes - bytes_before
                self._list_element_count += len(value) - count_before
            elif tag == _UNDO_ZSET_PUT:
                _, key, value, member, old = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                value._undo_put(member, old)
                if old is None:
                    self._data_bytes -= len(member)
                    self._zset_member_count -= 1
            elif tag == _UNDO_ZSET_DELETE:
                _, key, value, removed = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                value._undo_delete(removed)
                self._data_bytes += sum(len(member) for _, member in removed)
                self._zset_member_count += len(removed)
            elif tag == _UNDO_STREAM:
                _, key, value, record = entry
                if self._snapshot is not None:
                    self._snapshot._preserve(shard_of(key))
                data_before, overhead_before = value.data_bytes, value.overhead_bytes()
                value._undo(record)
                self._data_bytes += value.data_bytes - data_before
                self._stream_overhead_bytes += value.overhead_bytes() - overhead_before
            elif tag == _UNDO_LEVEL:
                self.feature_level = entry[1]
            elif tag == _UNDO_LIBRARIES:
                _, self._libraries, self._functions = entry
            else:
                invariant(tag == _UNDO_FLUSH, f"unknown undo entry {tag!r}")
                (
                    _,
                    self._shards,
                    self._expires,
                    self._expiry_heap,
                    self._key_count,
                    self._data_bytes,
                    self._set_count,
                    self._set_member_count,
                    self._hash_count,
                    self._hash_field_count,
                    self._list_count,
                    self._list_element_count,
                    self._zset_count,
                    self._zset_member_count,
                    self._stream_overhead_bytes,
                ) = entry
                self._follow_snapshot_source()

    # ---- internals: bindings, counters, expiry ----

    def _journal_binding(self, key: bytes) -> None:
        """Before a key's value is replaced or removed: remember the old binding for undo."""
        if self._recording is not None:
            old = self._shards[shard_of(key)].get(key)
            self._recording.log.append((_UNDO_BIND, key, old, self._expires.get(key)))

    def _replace(self, key: bytes, value: Value, expire_at_ms: int | None) -> None:
        """Bind `key` to `value` (any type) with that expiry, whatever it held. (The journal
        entry and the counting of `_journal_binding` and `_count` are written out here: every
        write of every replica comes through.)"""
        index = shard_of(key)
        if self._snapshot is not None:
            self._snapshot._preserve(index)
        shard = self._shards[index]
        old = shard.get(key)
        if self._recording is not None:
            self._recording.log.append((_UNDO_BIND, key, old, self._expires.get(key)))
        if old is None:
            self._key_count += 1
        elif type(old) is bytes:
            self._data_bytes -= len(key) + len(old)
        else:
            self._count(key, old, -1)
            self._key_count += 1
        shard[key] = value
        if type(value) is bytes:
            self._data_bytes += len(key) + len(value)
        else:
            self._count(key, value, 1)
            self._key_count -= 1
        if expire_at_ms is None:
            self._expires.pop(key, None)
        else:
            self._set_expire_stored(key, expire_at_ms)

    def _record_post_image(
        self, key: bytes, value: Value, expire_at_ms: int | None
    ) -> None:
        if self._recording is None:
            return
        if type(value) is bytes:
            effect = [EFFECT_SET_STRING, key, value, expire_at_ms]
        elif type(value) is SetValue:
            effect = [EFFECT_SET_REPLACE, key, value.member_list(), expire_at_ms]
        elif type(value) is ListValue:
            effect = [EFFECT_LIST_REPLACE, key, value.element_list(), expire_at_ms]
        elif type(value) is ZSetValue:
            effect = [EFFECT_ZSET_REPLACE, key, value.pair_list(), expire_at_ms]
        elif type(value) is StreamValue:
            image = value.image()
            effect = [EFFECT_STREAM_REPLACE, key, [image.meta, image.entries], expire_at_ms]
        else:
            effect = [EFFECT_HASH_REPLACE, key, value.pair_list(), expire_at_ms]  # type: ignore[union-attr]
        self._recording.effects.append(effect)

    def _count(self, key: bytes, value: Value, sign: int) -> None:
        self._key_count += sign
        if type(value) is bytes:
            self._data_bytes += sign * (len(key) + len(value))
        elif type(value) is SetValue:
            self._data_bytes += sign * (len(key) + value.member_bytes)
            self._set_count += sign
            self._set_member_count += sign * len(value)
        elif type(value) is ListValue:
            self._data_bytes += sign * (len(key) + value.data_bytes)
            self._list_count += sign
            self._list_element_count += sign * len(value)
        elif type(value) is ZSetValue:
            self._data_bytes += sign * (len(key) + value.data_bytes)
            self._zset_count += sign
            self._zset_member_count += sign * len(value)
        elif type(value) is StreamValue:
            self._data_bytes += sign * (len(key) + value.data_bytes)
            self._stream_overhead_bytes += sign * value.overhead_bytes()
        else:
            self._data_bytes += sign * (len(key) + value.data_bytes)  # type: ignore[union-attr]
            self._hash_count += sign
            self._hash_field_count += sign * len(value)  # type: ignore[arg-type]

    def _append_member(self, key: bytes, value: SetValue, member: bytes) -> None:
        """Add a member to the set bound to `key` (so the counters include it)."""
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        rebuilt = value._append(member)
        self._data_bytes += len(member)
        self._set_member_count += 1
        if self._recording is not None:
            self._log_change((_UNDO_APPEND, key, value, member), rebuilt)

    def _remove_member(self, key: bytes, value: SetValue, member: bytes) -> None:
        """Remove a member from the set bound to `key`; it must keep at least one member."""
        invariant(len(value) > 1, "the last member leaves through delete")
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        position, rebuilt = value._remove(member)
        self._data_bytes -= len(member)
        self._set_member_count -= 1
        if self._recording is not None:
            self._log_change((_UNDO_REMOVE, key, value, member, position), rebuilt)

    def _append_field(self, key: bytes, value: HashValue, field: bytes, field_value: bytes) -> None:
        """Add a field to the hash bound to `key` (so the counters include it)."""
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        rebuilt = value._append(field, field_value)
        self._data_bytes += len(field) + len(field_value)
        self._hash_field_count += 1
        if self._recording is not None:
            self._log_change((_UNDO_FIELD_APPEND, key, value, field), rebuilt)

    def _update_field(self, key: bytes, value: HashValue, position: int,
                      field_value: bytes) -> None:
        """Replace the value of the field at `position` of the hash bound to `key`."""
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        old = value._update(position, field_value)
        self._data_bytes += len(field_value) - len(old)
        if self._recording is not None:
            self._recording.log.append((_UNDO_FIELD_UPDATE, key, value, position, old))

    def _remove_field(self, key: bytes, value: HashValue, field: bytes) -> None:
        """Remove a field from the hash bound to `key`; it must keep at least one field."""
        invariant(len(value) > 1, "the last field leaves through delete")
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        position, field_value, rebuilt = value._remove(field)
        self._data_bytes -= len(field) + len(field_value)
        self._hash_field_count -= 1
        if self._recording is not None:
            self._log_change((_UNDO_FIELD_REMOVE, key, value, field, field_value, position),
                             rebuilt)

    def _list_push(self, key: bytes, value: ListValue, head: bool,
                   elements: list[bytes]) -> None:
        """Push elements at one end of the list bound to `key` (so the counters include
        them)."""
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        value._push(head, elements)
        self._data_bytes += sum(map(len, elements))
        self._list_element_count += len(elements)
        if self._recording is not None:
            self._recording.log.append((_UNDO_LIST_PUSH, key, value, head, len(elements)))

    def _list_pop(self, key: bytes, value: ListValue, head: bool, count: int) -> list[bytes]:
        """Pop `count` elements from one end of the list bound to `key`, which must keep at
        least one."""
        invariant(len(value) > count, "the last element leaves through delete")
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        popped = value._pop(head, count)
        self._data_bytes -= sum(map(len, popped))
        self._list_element_count -= count
        if self._recording is not None:
            self._recording.log.append((_UNDO_LIST_POP, key, value, head, popped))
        return popped

    def _log_change(self, entry: tuple, rebuilt: tuple[list, int] | None) -> None:
        """Log a change to a set, hash or sorted set (entry[2]) for undo, and then the rebuild
        of its bucket index the change caused, if any (undone first)."""
        log = self._recording.log  # type: ignore[union-attr]
        log.append(entry)
        if rebuilt is not None:
            log.append((_UNDO_REBUCKET, entry[2], *rebuilt))

    def _zset_put(self, key: bytes, value: ZSetValue, member: bytes, score: float) -> None:
        """Give a member of the sorted set bound to `key` a score, adding it if absent (so the
        counters include it)."""
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        old, rebuilt = value._put(member, score)
        if old is None:
            self._data_bytes += len(member)
            self._zset_member_count += 1
        if self._recording is not None:
            self._log_change((_UNDO_ZSET_PUT, key, value, member, old), rebuilt)

    def _zset_delete(self, key: bytes, value: ZSetValue, member: bytes) -> None:
        """Remove a member from the sorted set bound to `key`; it must keep at least one."""
        invariant(len(value) > 1, "the last member leaves through delete")
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        score, rebuilt = value._delete(member)
        self._data_bytes -= len(member)
        self._zset_member_count -= 1
        if self._recording is not None:
            self._log_change((_UNDO_ZSET_DELETE, key, value, [(score, member)]), rebuilt)

    def _set_expire_stored(self, key: bytes, expire_at_ms: int) -> None:
        if self._expires.get(key) == expire_at_ms:
            return  # its heap entry is already there
        if self._snapshot is not None:
            self._snapshot._preserve(shard_of(key))
        self._expires[key] = expire_at_ms
        heapq.heappush(self._expiry_heap, (expire_at_ms, key))
        slack = EXPIRY_HEAP_SLACK_FACTOR * len(self._expires) + EXPIRY_HEAP_SLACK_ENTRIES_MIN
        if len(self._expiry_heap) > slack:
            self._expiry_heap = [(at_ms, k) for k, at_ms in self._expires.items()]
            heapq.heapify(self._expiry_heap)

    def _follow_snapshot_source(self) -> None:
        """After the shard list was swapped (FLUSHALL, or an undo of one): a running snapshot
        cursor watches this state only while the state's shards are the cursor's own, i.e. the
        list of the begin instant. Swapped out, that list is no longer changed by anyone (only
        undoing the flush could bring it back, and that calls here again), so the cursor reads
        it at leisure; swapped back in, every change must be preserved again."""
        cursor = self._snapshot_cursor
        if cursor is None:
            return
        if cursor._shards is self._shards:
            invariant(cursor._expires is self._expires, "shards and expiry dict swap together")
            self._snapshot = cursor
        else:
            self._snapshot = None

    def _drop_if_expired(self, key: bytes, time_ms: int) -> bool:
        expire_at_ms = self._expires.get(key)
        if expire_at_ms is None or expire_at_ms > time_ms:
            return False
        return self.delete(key)


class _ListImage:
    """A copy of a list's elements as a snapshot cursor holds it (a type of its own, since a
    set's image is a plain list)."""

    __slots__ = ("elements",)

    def __init__(self, elements: list[bytes]) -> None:
        self.elements = elements

    def __len__(self) -> int:
        return len(self.elements)


# A value as a snapshot cursor holds it: a string's bytes, a copy of a set's member list, a
# tuple of a hash's fields and values (alternating), both in position order, a list's copied
# elements, or a sorted set's members and scores.
_Image = bytes | list[bytes] | tuple[bytes, ...] | _ListImage | ZSetImage | StreamImage
# One key's binding as a snapshot cursor holds it: (key, its image, expire_at_ms or None).
_Captured = tuple[bytes, _Image, int | None]
# A shard preserved before the walk reached it: a copy of its bindings (as images) and the
# expiry times of those of its keys that had one (None: none had).
_ShardCopy = tuple[dict[bytes, _Image], dict[bytes, int] | None]
_BYTES_ONLY = frozenset({bytes})
_LIVE_COLLECTIONS = frozenset({SetValue, HashValue, ListValue, ZSetValue, StreamValue})


def _image(value: Value) -> _Image:
    """What a snapshot cursor keeps of a live value: nothing the state may change later."""
    if type(value) is bytes:
        return value
    if type(value) is SetValue:
        return value.member_list()
    if type(value) is ListValue:
        return _ListImage(value.element_list())
    if type(value) is ZSetValue:
        return ZSetImage(value.pair_list())
    if type(value) is StreamValue:
        return value.image()
    return tuple(value.pair_list())  # type: ignore[union-attr, arg-type]


def _sorted_bindings(bindings: dict[bytes, _Image] | dict[bytes, Value],
                     expiries: dict[bytes, int] | None) -> list[_Captured]:
    """A shard's bindings as snapshot items, in key order; sets and hashes as (copied)
    images."""
    get_expiry = expiries.get if expiries else None
    out: list[_Captured] = []
    for key in sorted(bindings):
        value = bindings[key]
        if type(value) is not bytes and type(value) in _LIVE_COLLECTIONS:
            value = _image(value)  # type: ignore[arg-type]
        out.append((key, value, get_expiry(key) if get_expiry else None))  # type: ignore[arg-type]
    return out


class StateSnapshotCursor:
    """The state as it was at `KVState.begin_snapshot`, handed out in batches of item records
    (see the module docstring and `replikv.storage.snapshot`) while the state keeps changing.

    Shards are emitted in order. A shard is "captured" either when the walk reaches it (its
    bindings, read in key order), or earlier, by the state, just before it first changes that
    shard: then `_pending` keeps a copy of its dict (references to the immutable keys and
    strings, a copy of each set's member list) and of its keys' expiry times. `dumped[shard]`
    says it was captured, so it is captured once. The copy is a dict, not a list of tuples: a
    dict of bytes alone is not tracked by the garbage collector, and copying one is a memcpy.
    Under writes spread over a large keyspace nearly every shard is preserved early, and a
    million tuples in lists made each full collection visit them all, tens of ms, for as long
    as the snapshot was being written. Until then the shard's dict,
    its keys' expiry times and its sets are exactly what they were at begin, so reading them
    late is reading the past. The cursor holds the shard list and expiry dict of the begin
    instant (`_shards`, `_expires`), which after a FLUSHALL are no longer the state's own (see
    `KVState._follow_snapshot_source`).

    Memory: at worst (every shard changed before the walk got to it) the pending captures
    reference every key, like a fork's copy-on-write pages; the bytes themselves are shared.
    """

    __slots__ = (
        "_current",
        "_current_position",
        "_digest",
        "_expires",
        "_finished_digest",
        "_keys_emitted",
        "_libraries",
        "_library_records",
        "_member_offset",
        "_next_shard",
        "_pending",
        "_shards",
        "_state",
        "dumped",
        "key_count",
        "shards_preserved",
    )

    def __init__(self, state: KVState) -> None:
        self._state: KVState | None = state
        self._shards: list[dict[bytes, Value]] | None = state._shards
        self._expires: dict[bytes, int] | None = state._expires
        self.key_count = state._key_count  # keys at begin: the items this cursor will emit
        self.dumped = bytearray(SHARD_COUNT)  # 1: the shard's begin-time contents are captured
        self.shards_preserved = 0  # shards captured early because the state was changing them
        self._pending: dict[int, _ShardCopy] = {}  # captured early, not yet emitted
        self._next_shard = 0  # the walk: the next shard to emit
        self._current: list[_Captured] = []  # the captured shard being emitted
        self._current_position = 0
        self._member_offset = 0  # members of the current set already emitted
        self._keys_emitted = 0
        self._digest = _new_digest(self.key_count)
        self._finished_digest: str | None = None
        # The function libraries at begin (the state replaces its dict, never changes it),
        # emitted first, ITEM_LIBRARY records; the digest takes them after the keys.
        self._libraries = state._libraries
        self._library_records: list[list] = [
            [name, ITEM_LIBRARY, state._libraries[name].to_record()[1:], None]
            for name in sorted(state._libraries)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def next_batch(
        self, max_items: int, max_bytes: int = BATCH_BYTES_TARGET
    ) -> list[list] | None:
        """The next batch of at most `max_items` item records (fewer once they reach about
        `max_bytes`), or None when every item was returned (the cursor then detaches itself
        from the state). A set or hash too big for one item continues in ITEM_SET_MORE or
        ITEM_HASH_MORE items. Each record is [key, kind, value, expire_at_ms], msgpack-ready, sharing nothing mutable with
        the state."""
        invariant(max_items >= 1 and max_bytes >= 1, "a snapshot batch needs room for an item")
        if self._finished_digest is not None:
            return None
        invariant(self._shards is not None, "next_batch on a closed snapshot cursor")
        batch: list[list] = []
        batch_bytes = 0
        while self._library_records and len(batch) < max_items and batch_bytes < max_bytes:
            record = self._library_records.pop(0)
            batch.append(record)
            batch_bytes += len(record[0]) + len(record[2][0]) + _ITEM_OVERHEAD_BYTES
        while len(batch) < max_items and batch_bytes < max_bytes:
            if self._current_position == len(self._current):
                if not self._advance_shard():
                    break
                continue
            key, value, expire_at_ms = self._current[self._current_position]
            if type(value) is bytes:
                batch_bytes = self._string_run(batch, max_items, max_bytes, batch_bytes)
                continue
            if type(value) is tuple:
                record, record_bytes = self._chunk_record(
                    key, value, expire_at_ms, ITEM_HASH, ITEM_HASH_MORE, 2)
            elif type(value) is _ListImage:
                record, record_bytes = self._chunk_record(
                    key, value.elements, expire_at_ms, ITEM_LIST, ITEM_LIST_MORE, 1, value)
            elif type(value) is ZSetImage:
                record, record_bytes = self._chunk_record(
                    key, value.pairs, expire_at_ms, ITEM_ZSET, ITEM_ZSET_MORE, 2, value)
            elif type(value) is StreamImage:
                record, record_bytes = self._stream_record(key, value, expire_at_ms)
            else:
                record, record_bytes = self._chunk_record(
                    key, value, expire_at_ms, ITEM_SET, ITEM_SET_MORE, 1)  # type: ignore[arg-type]
            batch.append(record)
            batch_bytes += record_bytes
        if batch:
            return batch
        self._finish()
        return None

    def state_digest(self) -> str:
        """`KVState.digest()` of the state at begin; known once next_batch has returned None."""
        invariant(self._finished_digest is not None, "the snapshot is not complete yet")
        return self._finished_digest  # type: ignore[return-value]

    def close(self) -> None:
        """Stop: detach from the state (which may then begin another snapshot) and drop what
        was captured. Idempotent; the cursor is done after next_batch returned None anyway."""
        state = self._state
        if state is not None and state._snapshot_cursor is self:
            state._snapshot_cursor = None
            state._snapshot = None
        self._state = None
        self._shards = None
        self._expires = None
        self._pending = {}
        self._current = []

    # ---- internals ----

    def _preserve(self, shard_index: int) -> None:
        """Called by the state before it changes shard `shard_index` of the cursor's source."""
        if not self.dumped[shard_index]:
            shard = self._shards[shard_index]  # type: ignore[index]
            bindings: dict[bytes, _Image]
            if set(map(type, shard.values())) <= _BYTES_ONLY:
                bindings = shard.copy()  # type: ignore[assignment]
            else:
                bindings = {key: value if type(value) is bytes else _image(value)
                            for key, value in shard.items()}
            expires = self._expires
            expiries = ({key: expires[key] for key in shard.keys() & expires.keys()}
                        if expires else None)
            self._pending[shard_index] = (bindings, expiries or None)
            self.dumped[shard_index] = 1
            self.shards_preserved += 1

    def _capture(self, shard_index: int) -> list[_Captured]:
        """The shard's begin-time bindings in key order: from its preserved copy, or read from
        the shard itself, unchanged since begin."""
        copy = self._pending.pop(shard_index, None)
        if copy is None:
            invariant(not self.dumped[shard_index], "a captured shard went missing")
            self.dumped[shard_index] = 1
            return _sorted_bindings(self._shards[shard_index], self._expires)  # type: ignore[index]
        return _sorted_bindings(*copy)

    def _pending_items(self, shard_index: int) -> list[_Captured]:
        """What a preserved shard will emit (for tests); it stays preserved."""
        return _sorted_bindings(*self._pending[shard_index])

    def _advance_shard(self) -> bool:
        """Make the next non-empty shard the current one; False when none is left."""
        while self._next_shard < SHARD_COUNT:
            shard_index = self._next_shard
            self._next_shard += 1
            captured = self._capture(shard_index)
            if captured:
                self._current = captured
                self._current_position = 0
                return True
        self._current = []
        self._current_position = 0
        return False

    def _string_run(self, batch: list[list], max_items: int, max_bytes: int,
                    batch_bytes: int) -> int:
        """Emit the current shard's strings from the current position on, until a set, the
        shard's end or the batch's limits; returns the batch's bytes. The digest gets their
        bytes (`_string_digest_parts`, as `_digest_key` gives them) in one update: per key, a
        snapshot of a large keyspace is this loop, on the event loop."""
        current, position = self._current, self._current_position
        parts: list[bytes] = []
        add_parts, add_item, digest_parts = parts.extend, batch.append, _string_digest_parts
        end = min(len(current), position + max_items - len(batch))
        while position < end and batch_bytes < max_bytes:
            key, value, expire_at_ms = current[position]
            if type(value) is not bytes:
                break
            add_item([key, ITEM_STRING, value, expire_at_ms])
            batch_bytes += len(key) + len(value) + _ITEM_OVERHEAD_BYTES
            add_parts(digest_parts(key, value, expire_at_ms))
            position += 1
        self._digest.update(b"".join(parts))
        self._keys_emitted += position - self._current_position
        self._current_position = position
        return batch_bytes

    def _chunk_record(
        self, key: bytes, members: list[Any] | tuple[Any, ...], expire_at_ms: int | None,
        kind: int, more_kind: int, step: int, image: _Image | None = None
    ) -> tuple[list, int]:
        """The next item of the current set or list (step 1: members or elements), hash (step
        2: a field and its value) or sorted set (step 2: a member and its score, a float): all
        of it, or the next chunk of at most ITEM_SET_CHUNK_BYTES_MAX bytes (at least one
        member, element or field). `image`: what the digest gets, if not `members` (a list's or
        a sorted set's image). (`members` holds bytes, and floats for a sorted set's scores:
        typed Any, so that compiled code checks no item's type.)"""
        start = self._member_offset
        if start == 0:
            self._digest_and_count(key, members if image is None else image,  # type: ignore[arg-type]
                                   expire_at_ms)
        end = start
        chunk_bytes = 0
        while end < len(members):
            member_bytes = len(members[end]) + _MEMBER_OVERHEAD_BYTES
            if step == 2:
                second = members[end + 1]
                member_bytes += (len(second) if type(second) is bytes
                                 else _SCORE_BYTES) + _MEMBER_OVERHEAD_BYTES
            if end > start and chunk_bytes + member_bytes > ITEM_SET_CHUNK_BYTES_MAX:
                break
            chunk_bytes += member_bytes
            end += step
        chunk: list[Any] | tuple[Any, ...] = (
            members if start == 0 and end == len(members) else members[start:end])
        if type(chunk) is tuple:
            chunk = list(chunk)
        if start == 0:
            record = [key, kind, chunk, expire_at_ms]
        else:
            record = [key, more_kind, chunk, None]
        if end == len(members):
            self._member_offset = 0
            self._current_position += 1
        else:
            self._member_offset = end
        return record, len(key) + chunk_bytes + _ITEM_OVERHEAD_BYTES

    def _stream_record(self, key: bytes, image: StreamImage, expire_at_ms: int | None
                       ) -> tuple[list, int]:
        """The next item of the current stream: its meta with its first entries, or the next
        entries, at most ITEM_SET_CHUNK_BYTES_MAX bytes of them (at least one entry)."""
        start = self._member_offset
        entries = image.entries
        if start == 0:
            self._digest_and_count(key, image, expire_at_ms)
        end = start
        chunk_bytes = 0
        while end < len(entries):
            entry = entries[end]
            entry_bytes = 24 + sum(len(item) + _MEMBER_OVERHEAD_BYTES for item in entry[2:])
            if end > start and chunk_bytes + entry_bytes > ITEM_SET_CHUNK_BYTES_MAX:
                break
            chunk_bytes += entry_bytes
            end += 1
        chunk = entries[start:end]
        if start == 0:
            record = [key, ITEM_STREAM, [image.meta, chunk], expire_at_ms]
        else:
            record = [key, ITEM_STREAM_MORE, chunk, None]
        if end == len(entries):
            self._member_offset = 0
            self._current_position += 1
        else:
            self._member_offset = end
        return record, len(key) + chunk_bytes + _ITEM_OVERHEAD_BYTES

    def _digest_and_count(
        self, key: bytes, value: _Image, expire_at_ms: int | None
    ) -> None:
        _digest_key(self._digest.update, key, value, expire_at_ms)
        self._keys_emitted += 1

    def _finish(self) -> None:
        # A check that stays on: copy-on-write missed nothing and captured nothing twice.
        invariant(
            self._keys_emitted == self.key_count and not self._pending,
            f"snapshot cursor emitted {self._keys_emitted} keys, the state held "
            f"{self.key_count} at begin",
        )
        _digest_libraries(self._digest.update, self._libraries)
        self._finished_digest = self._digest.hexdigest()
        self.close()


class RecordDigest:
    """`KVState.digest()` of the state a stream of snapshot item records would rebuild,
    computed as the records pass by, without rebuilding it: a backup can be checked (and
    rewritten) in memory bounded by one batch and one set's members (or one hash's fields and
    values), not by the state.

    It relies on the order the snapshot cursor writes (shard by shard, a shard's keys sorted),
    which is the digest's own order. Records in another order still describe a valid state,
    but this cannot digest them: `hexdigest()` then answers None (only rebuilding can tell).
    `key_count` is the number of keys the records hold (a snapshot's trailer says it); the
    digest starts with it."""

    __slots__ = ("_digest", "_in_order", "_key_count", "_keys_seen", "_last", "_libraries",
                 "_open_set")

    def __init__(self, key_count: int) -> None:
        invariant(type(key_count) is int and key_count >= 0, "a key count is an int >= 0")
        self._key_count = key_count
        self._digest = _new_digest(key_count)
        self._keys_seen = 0
        self._last: tuple[int, bytes] | None = None  # (shard, key) of the last key seen
        # The set or hash whose items are still coming: (key, its kind's continuation kind,
        # members or alternating fields and values so far, expiry).
        # (Members hold floats too, a sorted set's scores: typed Any for compiled code.)
        self._open_set: tuple[bytes, int, list[Any], int | None] | None = None
        self._in_order = True
        self._libraries: dict[bytes, Library] = {}  # ITEM_LIBRARY records: digested last

    def update(self, records: Iterable[list]) -> None:
        """Feed the next records ([key, kind, value, expire_at_ms], checked where they were
        read: a snapshot file's reader checks every item's shape)."""
        for key, kind, value, expire_at_ms in records:
            if kind == ITEM_LIBRARY:
                library = library_from_record(key, value[0], value[1])
                if library is None or key in self._libraries:
                    raise InvariantViolation("a library record that is not one, or repeats")
                self._libraries[key] = library
                continue
            if kind in CONTINUATION_KINDS:
                open_set = self._open_set
                if open_set is None or open_set[0] != key or open_set[1] != kind:
                    raise InvariantViolation(
                        "a set, hash, list or sorted set continuation without its start")
                open_set[2].extend(value)
                continue
            self._close_set()
            self._keys_seen += 1
            position = (shard_of(key), key)
            if self._last is not None and position <= self._last:
                self._in_order = False
            self._last = position
            if kind == ITEM_STRING:
                _digest_key(self._digest.update, key, value, expire_at_ms)
            elif kind == ITEM_SET:
                self._open_set = (key, ITEM_SET_MORE, list(value), expire_at_ms)
            elif kind == ITEM_LIST:
                self._open_set = (key, ITEM_LIST_MORE, list(value), expire_at_ms)
            elif kind == ITEM_ZSET:
                self._open_set = (key, ITEM_ZSET_MORE, list(value), expire_at_ms)
            elif kind == ITEM_STREAM:
                self._open_set = (key, ITEM_STREAM_MORE, [value[0], *value[1]], expire_at_ms)
            else:
                invariant(kind == ITEM_HASH, f"unknown snapshot record kind {kind!r}")
                self._open_set = (key, ITEM_HASH_MORE, list(value), expire_at_ms)

    def hexdigest(self) -> str | None:
        """The digest, or None if the records were not in digest order or did not hold
        `key_count` keys. Call once, after the last record."""
        self._close_set()
        if not self._in_order or self._keys_seen != self._key_count:
            return None
        _digest_libraries(self._digest.update, self._libraries)
        return self._digest.hexdigest()

    def _close_set(self) -> None:
        if self._open_set is not None:
            key, more_kind, members, expire_at_ms = self._open_set
            self._open_set = None
            image: _Image
            if more_kind == ITEM_SET_MORE:
                image = members
            elif more_kind == ITEM_LIST_MORE:
                image = _ListImage(members)
            elif more_kind == ITEM_STREAM_MORE:
                image = StreamImage(members[0], members[1:])
            elif more_kind == ITEM_ZSET_MORE:
                # Records in rank order (as the cursor writes them) or not: the digest takes the
                # members in the sorted set's own order.
                ranked = sorted(zip(members[1::2], members[0::2], strict=True))
                image = ZSetImage([x for score, member in ranked for x in (member, score)])
            else:
                image = tuple(members)
            _digest_key(self._digest.update, key, image, expire_at_ms)
