"""OBJECT and MEMORY USAGE: how a key's value is stored, for tools made for Redis.

redis-cli --bigkeys and --memkeys, RedisInsight and migration scripts ask these of a key; they
are reads of the key (nil when it is absent or expired) and run like TYPE, at the connection's
read consistency.

replikv keeps a string as bytes, a set as a SetValue, a hash as a HashValue, a list as a
ListValue and a sorted set as a ZSetValue, never in Redis's encodings, so OBJECT ENCODING answers
the encoding Redis 7.4 would give the same value, found from the value alone: a string as SET
would store it ("int", "embstr", "raw"), a set by its members ("intset", "listpack",
"hashtable"), a hash by its fields and values ("listpack", "hashtable"), a list by the size of
its listpack ("listpack" up to 8 KiB, else "quicklist"), a sorted set by its members
("listpack" for at most 128 of at most 64 bytes, else "skiplist"), a stream as "stream"
(Redis's only encoding for one), with Redis's default thresholds. Redis also remembers how a
value was written (APPEND and SETRANGE leave "raw" strings, as PFADD and PFMERGE do: a string
starting "HYLL" is "raw" here, a set or sorted set never shrinks back to a smaller encoding, a ZADD of more than 128
pairs makes a skiplist whatever it adds, a quicklist goes back to a listpack only below half
the limit, and a push judges the limit from the elements' raw lengths); replikv does not. Access is not tracked: OBJECT IDLETIME is 0, and OBJECT FREQ
answers Redis's error for a server without an LFU eviction policy (replikv never evicts).

MEMORY USAGE is this key's share of INFO memory's used_memory: its key and value bytes plus the
per-key, per-expiry, per-set, per-member, per-hash, per-field, per-list, per-element, per-zset
and per-zset-member overheads replikv.state
measured for CPython (and a stream's estimated ones, replikv.stream_value). The
sum over every key is used_memory. It is exact for that model, so SAMPLES (how many members
Redis looks at) is checked but changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from replikv.commands.strings import int64_arg, parse_int64
from replikv.invariants import invariant
from replikv.replies import SYNTAX, CommandError, Status

if TYPE_CHECKING:
    from replikv.state import KVState
    from replikv.state import Value as StoredValue

# Subcommands -> arity (counting the command and the subcommand), as in Redis's command table.
OBJECT_SUBCOMMANDS: dict[str, int] = {"encoding": 3, "refcount": 3, "idletime": 3, "freq": 3, "help": 2}
MEMORY_SUBCOMMANDS: dict[str, int] = {"usage": -3, "help": 2}

# Redis's defaults: a string of up to 44 bytes is embedded in its object header (embstr); sets
# of integers up to set-max-intset-entries are intsets; sets of up to set-max-listpack-entries
# members of at most set-max-listpack-value bytes are listpacks.
EMBSTR_BYTES_MAX = 44
SET_MAX_INTSET_ENTRIES = 512
SET_MAX_LISTPACK_ENTRIES = 128
SET_MAX_LISTPACK_VALUE_BYTES = 64
# Hashes of up to hash-max-listpack-entries fields whose fields and values are all of at most
# hash-max-listpack-value bytes are listpacks.
HASH_MAX_LISTPACK_ENTRIES = 128
HASH_MAX_LISTPACK_VALUE_BYTES = 64
# A list is one listpack while that listpack takes at most 8 KiB (list-max-listpack-size -2),
# a quicklist beyond. A listpack is a 6-byte header, its entries and an end byte; an entry is
# an integer (an element that is a canonical int64: 2 to 10 bytes by its size) or a string
# (a 1, 2 or 5 byte header, the bytes, and a 1 to 5 byte back-length).
LIST_MAX_LISTPACK_BYTES = 8 * 1024
_LISTPACK_OVERHEAD_BYTES = 7
_LISTPACK_INT_ENTRY_BYTES = ((127, 0, 2), (4095, -4096, 3), (32767, -32768, 4),
                             (8388607, -8388608, 5), (2147483647, -2147483648, 6))
# Redis shares one object for each integer below this (when no LRU/LFU policy is set, as
# here), and reports its reference count as INT_MAX.
SHARED_INTEGERS = 10_000
SHARED_REFCOUNT = 2_147_483_647

ERR_FREQ_NOT_TRACKED = (
    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
    "that when switching between policies at runtime LRU and LFU data will take some time to "
    "adjust."
)

OBJECT_HELP = (
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. Not tracked by replikv: an",
    "    error, as on a Redis without an LFU maxmemory policy.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>. Not tracked by replikv: always 0.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
)

MEMORY_HELP = (
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value: its share of INFO's",
    "    used_memory estimate. SAMPLES is accepted and changes nothing (exact).",
    "HELP",
    "    Prints this help.",
)


# ---- OBJECT ----


def parse_object(argv: list[bytes]) -> tuple[str, bytes | None]:
    """(subcommand, key or None for HELP); the table checked the subcommand and its arity."""
    return argv[1].lower().decode("latin-1"), argv[2] if len(argv) > 2 else None


def run_object(state: KVState, args: tuple[str, bytes | None], time_ms: int) -> object:
    sub, key = args
    if key is None:
        return [Status(line) for line in OBJECT_HELP]
    value = state.lookup(key, time_ms)
    if value is None:
        return None  # every subcommand, FREQ too, answers nil for a missing key first
    if sub == "encoding":
        return encoding_of(value)
    if sub == "refcount":
        return refcount_of(value)
    if sub == "idletime":
        return 0
    invariant(sub == "freq", "OBJECT %r reached run_object: the table checks subcommands", sub)
    raise CommandError(ERR_FREQ_NOT_TRACKED)


def encoding_of(value: StoredValue) -> bytes:
    """The encoding Redis 7.4 gives this value (see the module docstring)."""
    from replikv.state import HashValue, ListValue, StreamValue, ZSetValue  # (see usage_bytes)

    if isinstance(value, bytes):
        if parse_int64(value) is not None:  # Redis's string2ll: canonical, at most 20 chars
            return b"int"
        if len(value) > EMBSTR_BYTES_MAX or value.startswith(b"HYLL"):
            return b"raw"  # (PFADD and PFMERGE store an HLL raw, however short)
        return b"embstr"
    if isinstance(value, HashValue):
        if len(value) <= HASH_MAX_LISTPACK_ENTRIES and all(
                len(f) <= HASH_MAX_LISTPACK_VALUE_BYTES for f in value) and all(
                len(v) <= HASH_MAX_LISTPACK_VALUE_BYTES for v in value.value_list()):
            return b"listpack"
        return b"hashtable"
    if isinstance(value, ListValue):
        return b"listpack" if _fits_listpack(value) else b"quicklist"
    if isinstance(value, ZSetValue):
        return b"listpack" if value.fits_listpack() else b"skiplist"
    if isinstance(value, StreamValue):
        return b"stream"
    count = len(value)
    # At most 512 members are looked at: a larger set is a hashtable whatever they hold.
    if count <= SET_MAX_INTSET_ENTRIES and all(parse_int64(m) is not None for m in value):
        return b"intset"
    if count <= SET_MAX_LISTPACK_ENTRIES and all(
            len(m) <= SET_MAX_LISTPACK_VALUE_BYTES for m in value):
        return b"listpack"
    return b"hashtable"


def listpack_entry_bytes(element: bytes) -> int:
    """What one list element takes in a Redis 7 listpack (lpEncodeBacklen's sizes)."""
    number = parse_int64(element)
    if number is not None:
        for high, low, size in _LISTPACK_INT_ENTRY_BYTES:
            if low <= number <= high:
                return size
        return 10
    length = len(element)
    encoded = length + (1 if length < 64 else 2 if length < 4096 else 5)
    if encoded <= 127:
        return encoded + 1
    if encoded < 16383:
        return encoded + 2
    if encoded < 2097151:
        return encoded + 3
    return encoded + (4 if encoded < 268435455 else 5)


def _fits_listpack(value: Iterable[bytes]) -> bool:
    total = _LISTPACK_OVERHEAD_BYTES
    for element in value:
        total += listpack_entry_bytes(element)
        if total > LIST_MAX_LISTPACK_BYTES:
            return False
    return True


def refcount_of(value: StoredValue) -> int:
    if isinstance(value, bytes):
        number = parse_int64(value)
        if number is not None and 0 <= number < SHARED_INTEGERS:
            return SHARED_REFCOUNT
    return 1


# ---- MEMORY ----


def parse_memory(argv: list[bytes]) -> tuple[str, bytes | None]:
    """(subcommand, key or None for HELP). USAGE's options are checked as Redis checks them:
    SAMPLES <count> (any number of times), count an integer >= 0; anything else a syntax
    error."""
    sub = argv[1].lower().decode("latin-1")
    if sub == "help":
        return sub, None
    i = 3
    while i < len(argv):
        if argv[i].lower() != b"samples" or i + 1 >= len(argv):
            raise CommandError(SYNTAX)
        if int64_arg(argv[i + 1]) < 0:
            raise CommandError(SYNTAX)
        i += 2
    return sub, argv[2]


def run_memory(state: KVState, args: tuple[str, bytes | None], time_ms: int) -> object:
    _sub, key = args
    if key is None:
        return [Status(line) for line in MEMORY_HELP]
    value = state.lookup(key, time_ms)
    if value is None:
        return None
    return usage_bytes(key, value, state.expire_at_ms(key) is not None)


def usage_bytes(key: bytes, value: StoredValue, has_expiry: bool) -> int:
    """What `key` adds to KVState.used_bytes(): the same model, for one key."""
    # replikv.state imports the command table, so its cost model is imported once it is loaded
    # (as transactions._parse_each imports the table).
    from replikv.state import (
        EXPIRY_OVERHEAD_BYTES,
        HASH_FIELD_OVERHEAD_BYTES,
        HASH_OVERHEAD_BYTES,
        KEY_OVERHEAD_BYTES,
        LIST_ELEMENT_OVERHEAD_BYTES,
        LIST_OVERHEAD_BYTES,
        SET_MEMBER_OVERHEAD_BYTES,
        SET_OVERHEAD_BYTES,
        ZSET_MEMBER_OVERHEAD_BYTES,
        ZSET_OVERHEAD_BYTES,
        HashValue,
        ListValue,
        StreamValue,
        ZSetValue,
    )

    total = len(key) + KEY_OVERHEAD_BYTES + (EXPIRY_OVERHEAD_BYTES if has_expiry else 0)
    if isinstance(value, bytes):
        return total + len(value)
    if isinstance(value, HashValue):
        return (total + HASH_OVERHEAD_BYTES + value.data_bytes
                + len(value) * HASH_FIELD_OVERHEAD_BYTES)
    if isinstance(value, ListValue):
        return (total + LIST_OVERHEAD_BYTES + value.data_bytes
                + len(value) * LIST_ELEMENT_OVERHEAD_BYTES)
    if isinstance(value, ZSetValue):
        return (total + ZSET_OVERHEAD_BYTES + value.data_bytes
                + len(value) * ZSET_MEMBER_OVERHEAD_BYTES)
    if isinstance(value, StreamValue):
        return total + value.data_bytes + value.overhead_bytes()
    return total + SET_OVERHEAD_BYTES + value.member_bytes + len(value) * SET_MEMBER_OVERHEAD_BYTES
