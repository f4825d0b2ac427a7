"""Stream commands: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XSETID, XREAD, XREADGROUP,
XACK, XPENDING, XCLAIM, XAUTOCLAIM, XGROUP and XINFO.

Same two-step shape as the other families: `parse_*` checks what Redis checks before it looks
at the key, without state or clock; `run_*` executes at a given time and raises CommandError
before changing anything. Where Redis checks an argument only after finding the key (XDEL's
ids, XREAD's ids after each key's type), the parse keeps the error and the run raises it at
Redis's point. Semantics, error texts and the order of checks follow Redis 7.0 (t_stream.c).

Determinism. An auto id's milliseconds are the log entry's time (`time_ms`, fixed by the
leader), never a local clock, so every replica assigns the same id: max(last id's ms, time),
with the sequence counting up within a millisecond, so ids never go backwards even if the
leader's clock does. Every time a stream keeps (a pending entry's delivery time, a consumer's
seen and active times) is the entry's time too; a read (XPENDING, XINFO) computes idle times
against its own clock. Approximate trimming (`~`) trims exactly as `=` does, but no more than
LIMIT entries (10,000 when not given, Redis's default): Redis trims whole radix-tree nodes
only, a layout replikv does not have. XINFO's radix-tree-keys and radix-tree-nodes describe
that layout too: replikv answers the nodes a stream of its length would fill (100 entries
each) and that plus one.

BLOCK. XREAD and XREADGROUP parse BLOCK and, for now, answer at once, as Redis answers when
the timeout expires (a nil array if no stream had anything): the node's connection layer is
where a client would wait. A waiting XREAD must retry with the ids its first attempt resolved
`$` to (`resolve_last_ids`); a waiting XREADGROUP with `>` needs nothing resolved (the group
keeps its last id), but each retry is a write, through the log.

Size limit. A stream holds at most STREAM_ENTRIES_MAX entries and STREAM_BYTES_MAX bytes of
fields and values, its groups at most STREAM_PENDING_MAX pending entries in all, and at most
STREAM_GROUPS_CONSUMERS_MAX groups and consumers and STREAM_NAME_BYTES_MAX bytes of their
names: so a stream's image, which RENAME and COPY ship in one log entry in passive
replication, fits the default 80 MiB entry limit, and so does any reply (XRANGE without COUNT
answers at most the whole stream).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands.strings import INT64_MAX, int64_arg, parse_int64
from replikv.limits import MIB
from replikv.replies import (
    OK,
    SYNTAX,
    CommandError,
    KeyedArrays,
    NullArray,
    Status,
    wrong_arity,
)
from replikv.stream_value import (
    ENTRIES_READ_UNKNOWN,
    ID_MAX,
    NEVER_ACTIVE,
    SEQ_BITS,
    SEQ_MASK,
    U64_MAX,
    id_of,
    id_text,
)

if TYPE_CHECKING:
    from replikv.state import KVState
    from replikv.stream_value import StreamGroup, StreamValue

STREAM_ENTRIES_MAX = 500_000
STREAM_BYTES_MAX = 32 * MIB  # the sum of the entries' fields' and values' lengths
STREAM_PENDING_MAX = 500_000  # pending entries, over all of a stream's groups
STREAM_GROUPS_CONSUMERS_MAX = 10_000  # groups plus consumers of one stream
STREAM_NAME_BYTES_MAX = MIB  # the lengths of a stream's group and consumer names
STREAM_TOO_BIG = (
    f"ERR stream would exceed the maximum size ({STREAM_ENTRIES_MAX} entries, "
    f"{STREAM_BYTES_MAX} bytes of fields and values)")
STREAM_GROUPS_TOO_BIG = (
    f"ERR stream groups would exceed the maximum size ({STREAM_PENDING_MAX} pending entries, "
    f"{STREAM_GROUPS_CONSUMERS_MAX} groups and consumers, {STREAM_NAME_BYTES_MAX} bytes of "
    "their names)")
# Redis's default LIMIT for approximate trimming: 100 * stream-node-max-entries.
APPROX_TRIM_LIMIT_DEFAULT = 10_000
# XINFO's radix-tree-keys: the nodes of this many entries a Redis stream of that length fills.
NODE_ENTRIES = 100
XINFO_FULL_COUNT_DEFAULT = 10
XAUTOCLAIM_COUNT_DEFAULT = 100
_XAUTOCLAIM_COUNT_MAX = INT64_MAX // 16  # Redis: LONG_MAX / sizeof(streamID)

INVALID_ID = "ERR Invalid stream ID specified as stream command argument"
ERR_XADD_ZERO = "ERR The ID specified in XADD must be greater than 0-0"
ERR_XADD_SMALL = "ERR The ID specified in XADD is equal or smaller than the target stream top item"
ERR_EXHAUSTED = ("ERR The stream has exhausted the last possible ID, unable to add more "
                 "items")
ERR_START = "ERR invalid start ID for the interval"
ERR_END = "ERR invalid end ID for the interval"
ERR_NO_SUCH_KEY = "ERR no such key"
ERR_XGROUP_KEY = ("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE "
                  "you may want to use the MKSTREAM option to create an empty stream "
                  "automatically.")

# Commands a script may not call while the cluster is below STREAM_LEVEL (replikv.features):
# a replica of an older replikv would not know them (see KVState.run_for_script).
STREAM_COMMANDS = frozenset({
    b"xadd", b"xlen", b"xrange", b"xrevrange", b"xdel", b"xtrim", b"xsetid", b"xread",
    b"xreadgroup", b"xack", b"xpending", b"xclaim", b"xautoclaim", b"xgroup", b"xinfo"})

XGROUP_SUBCOMMANDS: dict[str, int] = {"create": -5, "setid": -5, "destroy": 4,
                                      "createconsumer": 5, "delconsumer": 5, "help": 2}
XINFO_SUBCOMMANDS: dict[str, int] = {"stream": -3, "groups": 3, "consumers": 4, "help": 2}

XGROUP_HELP = (
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
)
XINFO_HELP = (
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
)


def _subcommand_syntax(argv: list[bytes]) -> CommandError:
    return CommandError(
        "ERR unknown subcommand or wrong number of arguments for "
        f"'{argv[1][:128].decode('utf-8', 'replace')}'. Try "
        f"{argv[0].decode('utf-8', 'replace').upper()} HELP.")


def _nogroup(key: bytes, group: bytes, suffix: str = "") -> CommandError:
    return CommandError(f"NOGROUP No such key '{_c_text(key)}' or consumer group "
                        f"'{_c_text(group)}'{suffix}")


def _c_text(data: bytes) -> str:
    """What Redis's %s prints of an argument: up to its first NUL."""
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


# ---- ids ----

_SPACES = b" \t\n\v\f\r"


def _u64(text: bytes) -> int | None:
    """Redis's string2ull: a canonical int64 that is not negative, or else what C's strtoull
    takes whole (leading spaces, a sign, leading zeros; a minus wraps around), below 2**64."""
    number = parse_int64(text)
    if number is not None:
        return number if number >= 0 else None
    body = text.lstrip(_SPACES)
    negative = body[:1] == b"-"
    if body[:1] in (b"+", b"-"):
        body = body[1:]
    if not body or not body.isdigit():
        return None
    value = int(body)
    if value > U64_MAX:
        return None
    return (-value) & U64_MAX if negative else value


def _id_parts(arg: bytes, strict: bool, seq_star: bool) -> tuple[int, int | None] | None:
    """Redis's streamGenericParseIDOrReply: (ms, seq, or None for `<ms>-*` when `seq_star`),
    None if invalid. A missing seq is None with ms alone (the caller fills it in); "-" is
    (0, 0) and "+" the largest id, unless `strict`."""
    if len(arg) > 127:
        return None
    text = arg.split(b"\0", 1)[0]
    if text in (b"-", b"+"):
        if strict:
            return None
        return (0, 0) if text == b"-" else (U64_MAX, U64_MAX)
    ms_text, dash, seq_text = text.partition(b"-")
    ms = _u64(ms_text)
    if ms is None:
        return None
    if not dash:
        return ms, -1
    if seq_star and seq_text == b"*":
        return ms, None
    seq = _u64(seq_text)
    if seq is None:
        return None
    return ms, seq


def parse_id(arg: bytes, missing_seq: int = 0, strict: bool = True) -> int:
    """An id argument (strict: "-" and "+" refused), a missing seq taken as `missing_seq`."""
    parts = _id_parts(arg, strict, False)
    if parts is None:
        raise CommandError(INVALID_ID)
    ms, seq = parts
    return id_of(ms, missing_seq if seq == -1 else seq)  # type: ignore[arg-type]


def _interval_id(arg: bytes, missing_seq: int) -> tuple[int, bool]:
    """Redis's streamParseIntervalIDOrReply: (id, exclusive)."""
    if len(arg) > 1 and arg[:1] == b"(":
        return parse_id(arg[1:], missing_seq, strict=True), True
    return parse_id(arg, missing_seq, strict=False), False


def _incr(stream_id: int) -> int | None:
    return None if stream_id == ID_MAX else stream_id + 1


def _decr(stream_id: int) -> int | None:
    return None if stream_id == 0 else stream_id - 1


def _range_start(arg: bytes) -> int:
    start, exclusive = _interval_id(arg, 0)
    if exclusive:
        start = _incr(start)  # type: ignore[assignment]
        if start is None:
            raise CommandError(ERR_START)
    return start


def _range_end(arg: bytes) -> int:
    end, exclusive = _interval_id(arg, U64_MAX)
    if exclusive:
        end = _decr(end)  # type: ignore[assignment]
        if end is None:
            raise CommandError(ERR_END)
    return end


def _entry(stream_id: int, fields: tuple[bytes, ...]) -> list[object]:
    return [id_text(stream_id), list(fields)]


def _entries(stream: StreamValue, ids: Iterable[int]) -> list[object]:
    return [_entry(stream_id, stream.get(stream_id)) for stream_id in ids]  # type: ignore[arg-type]


# ---- size limits ----


def _check_room(stream: StreamValue | None, fields: list[bytes], trimmed: int,
                trimmed_bytes: int) -> None:
    entries = (0 if stream is None else len(stream)) + 1 - trimmed
    total = (0 if stream is None else stream.data_bytes) + sum(map(len, fields)) - trimmed_bytes
    if entries > STREAM_ENTRIES_MAX or total > STREAM_BYTES_MAX:
        raise CommandError(STREAM_TOO_BIG)


def _check_group_room(stream: StreamValue, new_pending: int = 0, new_names: Iterable[bytes] = ()
                      ) -> None:
    names = list(new_names)
    if (stream.pending_count + new_pending > STREAM_PENDING_MAX
            or len(stream.groups) + stream.consumer_count + len(names)
            > STREAM_GROUPS_CONSUMERS_MAX
            or stream.name_bytes + sum(map(len, names)) > STREAM_NAME_BYTES_MAX):
        raise CommandError(STREAM_GROUPS_TOO_BIG)


# ---- XADD, XTRIM ----


@dataclass(frozen=True, slots=True)
class TrimArgs:
    strategy: str | None  # "maxlen", "minid" or None
    threshold: int  # the MAXLEN, or the MINID id
    limit: int  # at most this many entries go (0: no limit)


@dataclass(frozen=True, slots=True)
class XaddArgs:
    key: bytes
    trim: TrimArgs
    no_mkstream: bool
    id_ms: int | None  # None: "*"
    id_seq: int | None  # None: "<ms>-*" (or "*")
    fields: list[bytes]


def _parse_add_or_trim(argv: list[bytes], xadd: bool) -> tuple[TrimArgs, bool, int,
                                                               tuple[int, int | None] | None]:
    """Redis's streamParseAddOrTrimArgsOrReply: (trim, NOMKSTREAM, the index of XADD's id
    argument (or len(argv)), the id's (ms, seq) or None for "*")."""
    strategy: str | None = None
    threshold = 0
    approx = False
    limit = 0
    limit_given = False
    no_mkstream = False
    given_id: tuple[int, int | None] | None = None
    i = 2
    while i < len(argv):
        more = len(argv) - 1 - i
        opt = argv[i]
        lowered = opt.lower()
        if xadd and opt == b"*":
            break
        if lowered in (b"maxlen", b"minid") and more:
            if strategy is not None:
                raise CommandError("ERR syntax error, MAXLEN and MINID options at the same "
                                   "time are not compatible")
            approx = False
            following = argv[i + 1]
            if more >= 2 and following in (b"~", b"="):
                approx = following == b"~"
                i += 1
            if lowered == b"maxlen":
                threshold = int64_arg(argv[i + 1])
                if threshold < 0:
                    raise CommandError("ERR The MAXLEN argument must be >= 0.")
            else:
                threshold = parse_id(argv[i + 1])
            strategy = lowered.decode()
            i += 2
        elif lowered == b"limit" and more:
            limit = int64_arg(argv[i + 1])
            if limit < 0:
                raise CommandError("ERR The LIMIT argument must be >= 0.")
            limit_given = True
            i += 2
        elif xadd and lowered == b"nomkstream":
            no_mkstream = True
            i += 1
        elif xadd:
            parts = _id_parts(opt, True, True)
            if parts is None:
                raise CommandError(INVALID_ID)
            ms, seq = parts
            given_id = (ms, 0 if seq == -1 else seq)
            break
        else:
            raise CommandError(SYNTAX)
    if limit and strategy is None:
        raise CommandError("ERR syntax error, LIMIT cannot be used without specifying a "
                           "trimming strategy")
    if not xadd and strategy is None:
        raise CommandError("ERR syntax error, XTRIM must be called with a trimming strategy")
    if limit_given:
        if not approx:
            raise CommandError("ERR syntax error, LIMIT cannot be used without the special ~ "
                               "option")
    elif approx:
        limit = APPROX_TRIM_LIMIT_DEFAULT
    return TrimArgs(strategy, threshold, limit), no_mkstream, i, given_id


def parse_xadd(argv: list[bytes]) -> XaddArgs:
    """XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value
    [field value ...]."""
    trim, no_mkstream, id_index, given_id = _parse_add_or_trim(argv, True)
    fields = argv[id_index + 1:]
    if len(fields) < 2 or len(fields) % 2:
        raise CommandError(wrong_arity("xadd"))
    if given_id is None:
        return XaddArgs(argv[1], trim, no_mkstream, None, None, fields)
    if given_id == (0, 0):
        raise CommandError(ERR_XADD_ZERO)
    return XaddArgs(argv[1], trim, no_mkstream, given_id[0], given_id[1], fields)


def _trim_count(stream: StreamValue, trim: TrimArgs, extra: int = 0) -> int:
    """How many entries from the head trimming removes; `extra`: entries about to be added
    (counted for MAXLEN; the size check before an XADD uses it)."""
    if trim.strategy == "maxlen":
        count = max(0, len(stream) + extra - trim.threshold)
    else:
        count = stream.count_before(trim.threshold)
    if trim.limit:
        count = min(count, trim.limit)
    return count


def _trimmed_bytes(stream: StreamValue, count: int) -> int:
    return sum(sum(map(len, stream.get(i) or ())) for i in stream.ids_from_head(count))


def _new_id(stream: StreamValue | None, args: XaddArgs, time_ms: int) -> int:
    last = 0 if stream is None else stream.last_id
    last_ms, last_seq = last >> SEQ_BITS, last & SEQ_MASK
    if args.id_ms is None:
        now_ms = max(time_ms, 0)
        if now_ms > last_ms:
            return id_of(now_ms, 0)
        return last + 1  # never backwards: seq + 1 (the next ms when seq is full)
    if args.id_seq is None:
        if last_ms == args.id_ms:
            if last_seq == U64_MAX:
                raise CommandError(ERR_XADD_SMALL)
            return last + 1
        new = id_of(args.id_ms, 0)
    else:
        new = id_of(args.id_ms, args.id_seq)
    if new <= last:
        raise CommandError(ERR_XADD_SMALL)
    return new


def run_xadd(state: KVState, args: XaddArgs, time_ms: int) -> bytes | None:
    stream = state.get_stream(args.key, time_ms)
    if stream is None and args.no_mkstream:
        return None
    if stream is not None and stream.last_id == ID_MAX:
        raise CommandError(ERR_EXHAUSTED)
    new = _new_id(stream, args, time_ms)
    trimmed = 0
    trimmed_bytes = 0
    if stream is not None and args.trim.strategy is not None:
        trimmed = _trim_count(stream, args.trim, 1)
        if args.trim.strategy == "maxlen":
            trimmed = min(trimmed, len(stream))
        trimmed_bytes = _trimmed_bytes(stream, trimmed)
    _check_room(stream, args.fields, trimmed, trimmed_bytes)
    state.stream_add(args.key, new, args.fields)
    if args.trim.strategy is not None:
        added = state.get_stream(args.key, time_ms)
        count = _trim_count(added, args.trim)  # type: ignore[arg-type]
        if count:
            state.stream_trim(args.key, count)
    return id_text(new)


def parse_xtrim(argv: list[bytes]) -> tuple[bytes, TrimArgs]:
    """XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count]."""
    return argv[1], _parse_add_or_trim(argv, False)[0]


def run_xtrim(state: KVState, args: tuple[bytes, TrimArgs], time_ms: int) -> int:
    key, trim = args
    stream = state.get_stream(key, time_ms)
    if stream is None:
        return 0
    count = _trim_count(stream, trim)
    if count:
        state.stream_trim(key, count)
    return count


# ---- XLEN, XRANGE, XREVRANGE ----


def run_xlen(state: KVState, key: bytes, time_ms: int) -> int:
    stream = state.get_stream(key, time_ms)
    return 0 if stream is None else len(stream)


@dataclass(frozen=True, slots=True)
class XrangeArgs:
    key: bytes
    start: int
    end: int
    count: int  # -1: no COUNT
    reverse: bool


def _parse_range(argv: list[bytes], reverse: bool) -> XrangeArgs:
    start = _range_start(argv[3] if reverse else argv[2])
    end = _range_end(argv[2] if reverse else argv[3])
    count = -1
    i = 4
    while i < len(argv):
        if argv[i].lower() == b"count" and i + 1 < len(argv):
            count = max(0, int64_arg(argv[i + 1]))
            i += 2
        else:
            raise CommandError(SYNTAX)
    return XrangeArgs(argv[1], start, end, count, reverse)


def parse_xrange(argv: list[bytes]) -> XrangeArgs:
    """XRANGE key start end [COUNT count]."""
    return _parse_range(argv, False)


def parse_xrevrange(argv: list[bytes]) -> XrangeArgs:
    """XREVRANGE key end start [COUNT count]."""
    return _parse_range(argv, True)


def run_xrange(state: KVState, args: XrangeArgs, time_ms: int) -> object:
    stream = state.get_stream(args.key, time_ms)
    if stream is None:
        return []
    if args.count == 0:
        return NullArray
    ids = stream.ids_between(args.start, args.end, args.reverse)
    if args.count > 0:
        ids = (i for _, i in zip(range(args.count), ids, strict=False))
    return _entries(stream, ids)


# ---- XDEL, XSETID ----


def parse_xdel(argv: list[bytes]) -> tuple[bytes, list[int] | None]:
    """XDEL key id [id ...]: the ids, or None if one is invalid (Redis looks at the key
    first)."""
    try:
        return argv[1], [parse_id(arg) for arg in argv[2:]]
    except CommandError:
        return argv[1], None


def run_xdel(state: KVState, args: tuple[bytes, list[int] | None], time_ms: int) -> int:
    key, ids = args
    stream = state.get_stream(key, time_ms)
    if stream is None:
        return 0
    if ids is None:
        raise CommandError(INVALID_ID)
    present = [i for i in dict.fromkeys(ids) if i in stream]
    if present:
        state.stream_delete(key, present)
    return len(present)


@dataclass(frozen=True, slots=True)
class XsetidArgs:
    key: bytes
    last_id: int
    entries_added: int  # -1: not given
    max_deleted_id: int  # 0: not given


def parse_xsetid(argv: list[bytes]) -> XsetidArgs:
    """XSETID key last-id [ENTRIESADDED entries-added] [MAXDELETEDID max-deleted-id]."""
    last_id = parse_id(argv[2])
    entries_added = -1
    max_deleted = 0
    i = 3
    while i < len(argv):
        more = len(argv) - 1 - i
        opt = argv[i].lower()
        if opt == b"entriesadded" and more:
            entries_added = int64_arg(argv[i + 1])
            if entries_added < 0:
                raise CommandError("ERR entries_added must be positive")
        elif opt == b"maxdeletedid" and more:
            max_deleted = parse_id(argv[i + 1])
            if last_id < max_deleted:
                raise CommandError("ERR The ID specified in XSETID is smaller than the "
                                   "provided max_deleted_entry_id")
        else:
            raise CommandError(SYNTAX)
        i += 2
    return XsetidArgs(argv[1], last_id, entries_added, max_deleted)


def run_xsetid(state: KVState, args: XsetidArgs, time_ms: int) -> Status:
    stream = state.get_stream(args.key, time_ms)
    if stream is None:
        raise CommandError(ERR_NO_SUCH_KEY)
    if len(stream):
        if args.last_id < stream.last_entry()[0]:  # type: ignore[index]
            raise CommandError("ERR The ID specified in XSETID is smaller than the target "
                               "stream top item")
        if args.entries_added != -1 and len(stream) > args.entries_added:
            raise CommandError("ERR The entries_added specified in XSETID is smaller than "
                               "the target stream length")
    if args.last_id < stream.max_deleted_id:
        raise CommandError("ERR The ID specified in XSETID is smaller than current "
                           "max_deleted_entry_id")
    state.stream_set_ids(
        args.key, args.last_id,
        stream.entries_added if args.entries_added == -1 else args.entries_added,
        args.max_deleted_id if args.max_deleted_id else stream.max_deleted_id)
    return OK


# ---- XREAD, XREADGROUP ----

_DOLLAR = -1  # "$": the stream's last id when the command runs
_NEW = -2  # ">": entries never delivered to the group


@dataclass(frozen=True, slots=True)
class XreadArgs:
    count: int  # 0: no limit
    block_ms: int | None  # None: no BLOCK
    group: bytes | None
    consumer: bytes | None
    noack: bool
    keys: list[bytes]
    ids: list[int | str]  # an id, _DOLLAR, _NEW, or the error its argument meets


def _streams_index(argv: list[bytes], group_allowed: bool) -> int | None:
    """Where XREAD's or XREADGROUP's keys start (after STREAMS), or None (find_keys's)."""
    i = 1
    while i < len(argv):
        more = len(argv) - i - 1
        opt = argv[i].lower()
        if opt in (b"block", b"count") and more:
            i += 2
        elif opt == b"streams" and more:
            return i + 1
        elif opt == b"group" and more >= 2 and group_allowed:
            i += 3
        else:
            i += 1
    return None


def xread_keys(argv: list[bytes]) -> list[bytes]:
    """The keys of a well-formed XREAD or XREADGROUP: the first half after STREAMS."""
    start = _streams_index(argv, argv[0].lower() == b"xreadgroup")
    if start is None:
        return []
    count = (len(argv) - start) // 2
    return argv[start:start + count]


def _parse_read(argv: list[bytes], group_read: bool) -> XreadArgs:
    count = 0
    block_ms: int | None = None
    group = consumer = None
    noack = False
    streams_at = 0
    i = 1
    while i < len(argv):
        more = len(argv) - i - 1
        opt = argv[i].lower()
        if opt == b"block" and more:
            i += 1
            number = parse_int64(argv[i])
            if number is None:
                raise CommandError("ERR timeout is not an integer or out of range")
            if number < 0:
                raise CommandError("ERR timeout is negative")
            block_ms = number
        elif opt == b"count" and more:
            i += 1
            count = max(0, int64_arg(argv[i]))
        elif opt == b"streams" and more:
            streams_at = i + 1
            if (len(argv) - streams_at) % 2:
                raise CommandError("ERR Unbalanced XREAD list of streams: for each stream key "
                                   "an ID or '$' must be specified.")
            break
        elif opt == b"group" and more >= 2:
            if not group_read:
                raise CommandError("ERR The GROUP option is only supported by XREADGROUP. You "
                                   "called XREAD instead.")
            group, consumer = argv[i + 1], argv[i + 2]
            i += 2
        elif opt == b"noack":
            if not group_read:
                raise CommandError("ERR The NOACK option is only supported by XREADGROUP. You "
                                   "called XREAD instead.")
            noack = True
        else:
            raise CommandError(SYNTAX)
        i += 1
    if not streams_at:
        raise CommandError(SYNTAX)
    if group_read and group is None:
        raise CommandError("ERR Missing GROUP option for XREADGROUP")
    half = (len(argv) - streams_at) // 2
    keys = argv[streams_at:streams_at + half]
    ids: list[int | str] = []
    for arg in argv[streams_at + half:]:
        if arg == b"$":
            ids.append("ERR The $ ID is meaningless in the context of XREADGROUP: you want to "
                       "read the history of this consumer by specifying a proper ID, or use "
                       "the > ID to get new messages. The $ ID would just return an empty "
                       "result set." if group_read else _DOLLAR)
        elif arg == b">":
            ids.append(_NEW if group_read else
                       "ERR The > ID can be specified only when calling XREADGROUP using the "
                       "GROUP <group> <consumer> option.")
        else:
            try:
                given = parse_id(arg)
            except CommandError as e:
                ids.append(e.message)
                continue
            # The largest id is how Redis marks ">" inside: XREADGROUP takes it as ">".
            ids.append(_NEW if group_read and given == ID_MAX else given)
    return XreadArgs(count, block_ms, group, consumer, noack, keys, ids)


def parse_xread(argv: list[bytes]) -> XreadArgs:
    """XREAD [COUNT count] [BLOCK milliseconds] STREAMS key [key ...] id [id ...]."""
    return _parse_read(argv, False)


def parse_xreadgroup(argv: list[bytes]) -> XreadArgs:
    """XREADGROUP GROUP group consumer [COUNT count] [BLOCK milliseconds] [NOACK] STREAMS key
    [key ...] id [id ...]."""
    return _parse_read(argv, True)


def waits(args: XreadArgs) -> bool:
    """Whether XREAD or XREADGROUP may make its client wait: it has BLOCK and, for
    XREADGROUP, asks for new entries (`>`) of some stream (one that reads a consumer's
    history answers at once, as in Redis)."""
    if args.block_ms is None:
        return False
    return args.group is None or any(given == _NEW for given in args.ids)


def resolve_last_ids(state: KVState, argv: list[bytes], time_ms: int) -> list[bytes]:
    """XREAD's argv with each `$` made the id it means now: the stream's last id (0-0 for a
    missing key). For a BLOCK that waits and retries: a retry must read after the ids the
    first attempt saw, not after the last id at the retry (which would skip what arrived
    meanwhile). Raises CommandError (WRONGTYPE) as XREAD would; other argvs come back as
    they are."""
    if argv[0].lower() != b"xread":
        return argv
    start = _streams_index(argv, False)
    if start is None:
        return argv
    half = (len(argv) - start) // 2
    out = list(argv)
    for i in range(start + half, len(argv)):
        if argv[i] == b"$":
            stream = state.get_stream(argv[i - half], time_ms)
            out[i] = id_text(0 if stream is None else stream.last_id)
    return out


def reads_only_new(argv: list[bytes]) -> bool:
    """Whether XREAD's argv asks every stream for what comes after `$` (once resolve_last_ids
    has made those ids, an attempt made before any of the streams changes finds nothing)."""
    if argv[0].lower() != b"xread":
        return False
    start = _streams_index(argv, False)
    if start is None:
        return False
    return all(arg == b"$" for arg in argv[start + (len(argv) - start) // 2:])


def _limited(ids: Iterable[int], count: int) -> list[int]:
    if not count:
        return list(ids)
    out = []
    for stream_id in ids:
        out.append(stream_id)
        if len(out) == count:
            break
    return out


def run_xread(state: KVState, args: XreadArgs, time_ms: int) -> object:
    # Every key's type and id first, in order, as Redis checks them before serving any.
    starts: list[int | None] = []
    for key, given in zip(args.keys, args.ids, strict=True):
        stream = state.get_stream(key, time_ms)
        if isinstance(given, str):
            raise CommandError(given)
        if given == _DOLLAR:
            starts.append(None if stream is None else stream.last_id)
        else:
            starts.append(given)  # type: ignore[arg-type]
    reply = KeyedArrays()
    for key, after in zip(args.keys, starts, strict=True):
        stream = state.get_stream(key, time_ms)
        if stream is None or not len(stream):
            continue
        after = 0 if after is None else after
        if stream.last_entry()[0] <= after:  # type: ignore[index]
            continue
        start = _incr(after)
        ids = _limited(stream.ids_between(start, ID_MAX), args.count)  # type: ignore[arg-type]
        reply += (key, _entries(stream, ids))
    # With BLOCK, what Redis answers once the timeout expires (the connection layer is where
    # a client would wait): nothing arrived.
    return reply if reply else NullArray


def run_xreadgroup(state: KVState, args: XreadArgs, time_ms: int) -> object:
    group_name: bytes = args.group  # type: ignore[assignment]
    consumer_name: bytes = args.consumer  # type: ignore[assignment]
    found: list[tuple[StreamValue, StreamGroup]] = []
    for key, given in zip(args.keys, args.ids, strict=True):
        stream = state.get_stream(key, time_ms)
        group = None if stream is None else stream.groups.get(group_name)
        if group is None:
            raise _nogroup(key, group_name, " in XREADGROUP with GROUP option")
        if isinstance(given, str):
            raise CommandError(given)
        found.append((stream, group))  # type: ignore[arg-type]
    # The limits, checked before anything changes (a command changes all or nothing): at most
    # what each key's read could deliver as if it came first, so a key named twice counts
    # twice.
    new_pending: dict[int, int] = {}
    for given, (stream, group) in zip(args.ids, found, strict=True):
        if given == _NEW and not args.noack:
            candidates = _limited(stream.ids_between(group.last_id + 1, ID_MAX), args.count)
            new_pending[id(stream)] = new_pending.get(id(stream), 0) + len(candidates)
    for stream, group in found:  # (a stream named twice is checked twice: alike)
        _check_group_room(stream, new_pending.get(id(stream), 0),
                          [] if consumer_name in group.consumers else [consumer_name])
    # Then each key in turn, as Redis serves them: a key named twice sees the first read's
    # changes.
    reply = KeyedArrays()
    for key, given in zip(args.keys, args.ids, strict=True):
        current: StreamValue = state.get_stream(key, time_ms)  # type: ignore[assignment]
        group = current.groups[group_name]
        if given == _NEW:
            entries = _read_new(state, key, current, group, consumer_name, args, time_ms)
        else:
            entries = _read_history(state, key, current, group, group_name, consumer_name,
                                    given, args.count, time_ms)  # type: ignore[arg-type]
        if entries is not None:
            reply += (key, entries)
    return reply if reply else NullArray


def _consumer_seen(state: KVState, key: bytes, group: StreamGroup, group_name: bytes,
                   consumer_name: bytes, time_ms: int, active: bool) -> None:
    """The consumer (created if new) was seen now, and active now if it got entries."""
    consumer = group.consumers.get(consumer_name)
    active_time = NEVER_ACTIVE if consumer is None else consumer.active_time
    state.stream_consumer_set(key, group_name, consumer_name, time_ms,
                              time_ms if active else active_time)


def _read_new(state: KVState, key: bytes, stream: StreamValue, group: StreamGroup,
              consumer_name: bytes, args: XreadArgs, time_ms: int) -> list[object] | None:
    """XREADGROUP's ">": entries after the group's last id, or None (the key is left out of
    the reply) when there are none."""
    last_entry = stream.last_entry()
    if last_entry is None or last_entry[0] <= group.last_id:
        return None
    group_name: bytes = args.group  # type: ignore[assignment]
    ids = _limited(stream.ids_between(group.last_id + 1, ID_MAX), args.count)
    entries_read = group.entries_read
    for stream_id in ids:
        if entries_read != ENTRIES_READ_UNKNOWN and not stream.has_tombstones_from(stream_id):
            entries_read += 1
        elif stream.entries_added:
            entries_read = stream.estimate_entries_read(stream_id)
    entries = _entries(stream, ids)
    _consumer_seen(state, key, group, group_name, consumer_name, time_ms, True)
    if not args.noack:
        state.stream_deliver(key, group_name, consumer_name, time_ms,
                             [(stream_id, 1) for stream_id in ids])
    state.stream_group_set(key, group_name, ids[-1], entries_read)
    return entries


def _read_history(state: KVState, key: bytes, stream: StreamValue, group: StreamGroup,
                  group_name: bytes, consumer_name: bytes, after: int, count: int,
                  time_ms: int) -> list[object]:
    """XREADGROUP with an id: the consumer's own pending entries after it (Redis wraps the
    largest id round to 0-0); a deleted entry comes as [id, nil] and keeps its count."""
    consumer = group.consumers.get(consumer_name)
    start = _incr(after)
    ids = [] if consumer is None else _limited(
        consumer.pending.irange(0 if start is None else start, ID_MAX), count)
    entries: list[object] = []
    delivered: list[tuple[int, int]] = []
    for stream_id in ids:
        fields = stream.get(stream_id)
        if fields is None:
            entries.append([id_text(stream_id), NullArray])
            continue
        entries.append(_entry(stream_id, fields))
        delivered.append((stream_id, group.pel[stream_id][2] + 1))
    _consumer_seen(state, key, group, group_name, consumer_name, time_ms, bool(delivered))
    if delivered:
        state.stream_deliver(key, group_name, consumer_name, time_ms, delivered)
    return entries


# ---- XACK, XPENDING ----


def parse_xack(argv: list[bytes]) -> tuple[bytes, bytes, list[int] | None]:
    """XACK key group id [id ...] (an invalid id is only an error once the group is found)."""
    try:
        return argv[1], argv[2], [parse_id(arg) for arg in argv[3:]]
    except CommandError:
        return argv[1], argv[2], None


def run_xack(state: KVState, args: tuple[bytes, bytes, list[int] | None], time_ms: int) -> int:
    key, group_name, ids = args
    stream = state.get_stream(key, time_ms)
    group = None if stream is None else stream.groups.get(group_name)
    if group is None:
        return 0
    if ids is None:
        raise CommandError(INVALID_ID)
    pending = [i for i in dict.fromkeys(ids) if i in group.pel]
    if pending:
        state.stream_ack(key, group_name, pending)
    return len(pending)


@dataclass(frozen=True, slots=True)
class XpendingArgs:
    key: bytes
    group: bytes
    extended: bool
    min_idle: int
    start: int
    end: int
    count: int
    consumer: bytes | None


def parse_xpending(argv: list[bytes]) -> XpendingArgs:
    """XPENDING key group [[IDLE min-idle-time] start end count [consumer]]."""
    if len(argv) != 3 and not 6 <= len(argv) <= 9:
        raise CommandError(SYNTAX)
    if len(argv) == 3:
        return XpendingArgs(argv[1], argv[2], False, 0, 0, 0, 0, None)
    at = 3
    min_idle = 0
    if argv[3].lower() == b"idle":
        min_idle = int64_arg(argv[4])
        if len(argv) < 8:
            raise CommandError(SYNTAX)
        at = 5
    count = max(0, int64_arg(argv[at + 2]))
    start = _range_start(argv[at])
    end = _range_end(argv[at + 1])
    consumer = argv[at + 3] if at + 3 < len(argv) else None
    return XpendingArgs(argv[1], argv[2], True, min_idle, start, end, count, consumer)


def run_xpending(state: KVState, args: XpendingArgs, time_ms: int) -> object:
    stream = state.get_stream(args.key, time_ms)
    group = None if stream is None else stream.groups.get(args.group)
    if group is None:
        raise _nogroup(args.key, args.group)
    if not args.extended:
        if not group.pel:
            return [0, None, None, NullArray]
        owners = [[name, b"%d" % len(group.consumers[name].pending)]
                  for name in group.consumer_names() if group.consumers[name].pending]
        return [len(group.pel), id_text(group.pel.peekitem(0)[0]),
                id_text(group.pel.peekitem(-1)[0]), owners]
    if args.consumer is not None:
        consumer = group.consumers.get(args.consumer)
        if consumer is None:
            return []
        ids: Iterable[int] = consumer.pending.irange(args.start, args.end)
    else:
        ids = group.pel.irange(args.start, args.end)
    out: list[object] = []
    if args.start > args.end:
        return out
    for stream_id in ids:
        if len(out) >= args.count:
            break
        owner, delivery_time, delivery_count = group.pel[stream_id]
        if args.min_idle and time_ms - delivery_time < args.min_idle:
            continue
        out.append([id_text(stream_id), owner, max(0, time_ms - delivery_time),
                    delivery_count])
    return out


# ---- XCLAIM, XAUTOCLAIM ----


@dataclass(frozen=True, slots=True)
class XclaimArgs:
    key: bytes
    group: bytes
    consumer: bytes
    min_idle: int | str  # or the error its argument meets (raised once the group is found)
    ids: list[int]
    options: list[bytes]  # from the first argument that is not an id on


def parse_xclaim(argv: list[bytes]) -> XclaimArgs:
    """XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms] [TIME ms-unix-time]
    [RETRYCOUNT count] [FORCE] [JUSTID] [LASTID lastid]: what can be parsed before the key is
    looked at (Redis looks at it first)."""
    try:
        min_idle: int | str = max(0, int64_arg(argv[4]))
    except CommandError:
        min_idle = "ERR Invalid min-idle-time argument for XCLAIM"
    ids: list[int] = []
    j = 5
    while j < len(argv):
        parts = _id_parts(argv[j], True, False)
        if parts is None:
            break
        ids.append(id_of(parts[0], 0 if parts[1] == -1 else parts[1]))  # type: ignore[arg-type]
        j += 1
    return XclaimArgs(argv[1], argv[2], argv[3], min_idle, ids, argv[j:])


def _claim_options(options: list[bytes], time_ms: int
                   ) -> tuple[int, int, bool, bool, int]:
    """(delivery time, retry count or -1, FORCE, JUSTID, LASTID or 0)."""
    delivery_time = -1
    retry_count = -1
    force = justid = False
    last_id = 0
    j = 0
    while j < len(options):
        more = len(options) - 1 - j
        opt = options[j]
        lowered = opt.lower()
        if lowered == b"force":
            force = True
        elif lowered == b"justid":
            justid = True
        elif lowered in (b"idle", b"time", b"retrycount") and more:
            j += 1
            number = parse_int64(options[j])
            if number is None:
                raise CommandError(f"ERR Invalid {lowered.decode().upper()} option argument "
                                   "for XCLAIM")
            if lowered == b"idle":
                delivery_time = time_ms - number
            elif lowered == b"time":
                delivery_time = number
            else:
                retry_count = number
        elif lowered == b"lastid" and more:
            j += 1
            last_id = parse_id(options[j])
        else:
            raise CommandError(f"ERR Unrecognized XCLAIM option '{_c_text(opt)}'")
        j += 1
    if delivery_time == -1 or delivery_time < 0 or delivery_time > time_ms:
        delivery_time = time_ms
    return delivery_time, retry_count, force, justid, last_id


def _claim(state: KVState, key: bytes, stream: StreamValue, group_name: bytes,
           consumer_name: bytes, delivery_time: int, claims: dict[int, int],
           gone: list[int], time_ms: int) -> None:
    """Apply a claim: the deleted entries' pending entries go, the claimed ones move to the
    consumer (created if needed) with their counts."""
    group = stream.groups[group_name]
    if gone:
        state.stream_ack(key, group_name, gone)
    if claims:
        consumer = group.consumers.get(consumer_name)
        if consumer is None:
            _check_group_room(stream, sum(1 for i in claims if i not in group.pel),
                              [consumer_name])
        else:
            _check_group_room(stream, sum(1 for i in claims if i not in group.pel))
        state.stream_consumer_set(key, group_name, consumer_name, time_ms, time_ms)
        state.stream_deliver(key, group_name, consumer_name, delivery_time,
                             list(claims.items()))


def run_xclaim(state: KVState, args: XclaimArgs, time_ms: int) -> list[object]:
    stream = state.get_stream(args.key, time_ms)
    group = None if stream is None else stream.groups.get(args.group)
    if group is None:
        raise _nogroup(args.key, args.group)
    if isinstance(args.min_idle, str):
        raise CommandError(args.min_idle)
    delivery_time, retry_count, force, justid, last_id = _claim_options(args.options, time_ms)
    # All or nothing: every check above; nothing below raises (but the group limits, which
    # _claim checks before it changes anything).
    claims: dict[int, int] = {}  # id -> its new delivery count, in the order first claimed
    gone: list[int] = []
    reply: list[object] = []
    counts: dict[int, int] = {}
    for stream_id in args.ids:
        nack = group.pel.get(stream_id)
        known = stream_id in claims or stream_id in counts
        if stream.get(stream_id) is None:  # type: ignore[union-attr]
            if (nack is not None or stream_id in claims) and stream_id not in gone:
                gone.append(stream_id)
                claims.pop(stream_id, None)
            continue
        if nack is None and not known:
            if not force:
                continue
            counts[stream_id] = 1  # a NACK FORCE creates, delivered once
        elif not known:
            if args.min_idle and time_ms - nack[1] < args.min_idle:  # type: ignore[index]
                continue
            counts[stream_id] = nack[2]  # type: ignore[index]
        if retry_count >= 0:
            counts[stream_id] = retry_count
        elif not justid:
            counts[stream_id] += 1
        claims[stream_id] = counts[stream_id]
        if justid:
            reply.append(id_text(stream_id))
        else:
            reply.append(_entry(stream_id, stream.get(stream_id)))  # type: ignore[union-attr, arg-type]
    _claim(state, args.key, stream, args.group, args.consumer, delivery_time,  # type: ignore[arg-type]
           {i: c for i, c in claims.items() if i not in gone}, gone, time_ms)
    if last_id > group.last_id:
        state.stream_group_set(args.key, args.group, last_id, group.entries_read)
    return reply


@dataclass(frozen=True, slots=True)
class XautoclaimArgs:
    key: bytes
    group: bytes
    consumer: bytes
    min_idle: int
    start: int
    count: int
    justid: bool


def parse_xautoclaim(argv: list[bytes]) -> XautoclaimArgs:
    """XAUTOCLAIM key group consumer min-idle-time start [COUNT count] [JUSTID]."""
    min_idle = parse_int64(argv[4])
    if min_idle is None:
        raise CommandError("ERR Invalid min-idle-time argument for XAUTOCLAIM")
    start = _range_start(argv[5])
    count = XAUTOCLAIM_COUNT_DEFAULT
    justid = False
    j = 6
    while j < len(argv):
        more = len(argv) - 1 - j
        opt = argv[j].lower()
        if opt == b"count" and more:
            number = parse_int64(argv[j + 1])
            if number is None or not 1 <= number <= _XAUTOCLAIM_COUNT_MAX:
                raise CommandError("ERR COUNT must be > 0")
            count = number
            j += 1
        elif opt == b"justid":
            justid = True
        else:
            raise CommandError(SYNTAX)
        j += 1
    return XautoclaimArgs(argv[1], argv[2], argv[3], max(0, min_idle), start, count, justid)


def run_xautoclaim(state: KVState, args: XautoclaimArgs, time_ms: int) -> list[object]:
    stream = state.get_stream(args.key, time_ms)
    group = None if stream is None else stream.groups.get(args.group)
    if group is None:
        raise _nogroup(args.key, args.group)
    attempts = args.count * 10
    count = args.count
    claims: dict[int, int] = {}
    gone: list[int] = []
    claimed: list[object] = []
    cursor = 0
    pel_ids = group.pel.irange(args.start, ID_MAX)
    for stream_id in pel_ids:
        if not attempts or not count:
            cursor = stream_id
            break
        attempts -= 1
        nack = group.pel[stream_id]
        if stream.get(stream_id) is None:  # type: ignore[union-attr]
            gone.append(stream_id)
            count -= 1
            continue
        if args.min_idle and time_ms - nack[1] < args.min_idle:
            continue
        claims[stream_id] = nack[2] if args.justid else nack[2] + 1
        claimed.append(id_text(stream_id) if args.justid
                       else _entry(stream_id, stream.get(stream_id)))  # type: ignore[union-attr, arg-type]
        count -= 1
    _claim(state, args.key, stream, args.group, args.consumer, time_ms, claims, gone,  # type: ignore[arg-type]
           time_ms)
    return [id_text(cursor), claimed, [id_text(i) for i in gone]]


# ---- XGROUP ----


def parse_xgroup(argv: list[bytes]) -> list[bytes]:
    """XGROUP CREATE|SETID|DESTROY|CREATECONSUMER|DELCONSUMER|HELP ...: checked when run,
    since Redis checks most of it against the key (the table checked the subcommand and its
    arity)."""
    return argv


def subcommand_key(argv: list[bytes]) -> list[bytes]:
    """XGROUP's and XINFO's key: argv[2] (none for HELP)."""
    return argv[2:3] if len(argv) > 2 and argv[1].lower() != b"help" else []


def run_xgroup(state: KVState, argv: list[bytes], time_ms: int) -> object:
    sub = argv[1].lower()
    if sub == b"help":
        return [Status(line) for line in XGROUP_HELP]
    key, group_name = argv[2], argv[3]
    mkstream = False
    entries_read = ENTRIES_READ_UNKNOWN
    if len(argv) > 5 and sub in (b"create", b"setid"):
        i = 5
        while i < len(argv):
            opt = argv[i].lower()
            if opt == b"mkstream" and sub == b"create":
                mkstream = True
                i += 1
            elif opt == b"entriesread" and i + 1 < len(argv):
                entries_read = int64_arg(argv[i + 1])
                if entries_read < 0 and entries_read != ENTRIES_READ_UNKNOWN:
                    raise CommandError("ERR value for ENTRIESREAD must be positive or -1")
                i += 2
            else:
                raise _subcommand_syntax(argv)
    stream = state.get_stream(key, time_ms)
    if stream is None and not (sub == b"create" and mkstream):
        raise CommandError(ERR_XGROUP_KEY)
    group = None if stream is None else stream.groups.get(group_name)
    if group is None and sub in (b"setid", b"createconsumer", b"delconsumer"):
        raise CommandError(f"NOGROUP No such consumer group '{_c_text(group_name)}' for key "
                           f"name '{_c_text(key)}'")
    if sub == b"create" and len(argv) <= 8:
        if argv[4] == b"$":
            last_id = 0 if stream is None else stream.last_id
        else:
            last_id = parse_id(argv[4])
        if group is not None:
            raise CommandError("BUSYGROUP Consumer Group name already exists")
        if stream is None:
            state.stream_create(key)
        else:
            _check_group_room(stream, 0, [group_name])
        state.stream_group_set(key, group_name, last_id, entries_read)
        return OK
    if sub == b"setid" and len(argv) in (5, 7):
        if argv[4] == b"$":
            last_id = stream.last_id  # type: ignore[union-attr]
        else:
            last_id = parse_id(argv[4], strict=False)
        state.stream_group_set(key, group_name, last_id, entries_read)
        return OK
    if sub == b"destroy" and len(argv) == 4:
        if group is None:
            return 0
        state.stream_group_destroy(key, group_name)
        return 1
    if sub == b"createconsumer" and len(argv) == 5:
        if argv[4] in group.consumers:  # type: ignore[union-attr]
            return 0
        _check_group_room(stream, 0, [argv[4]])  # type: ignore[arg-type]
        state.stream_consumer_set(key, group_name, argv[4], time_ms, NEVER_ACTIVE)
        return 1
    if sub == b"delconsumer" and len(argv) == 5:
        consumer = group.consumers.get(argv[4])  # type: ignore[union-attr]
        if consumer is None:
            return 0
        pending = len(consumer.pending)
        state.stream_consumer_delete(key, group_name, argv[4])
        return pending
    raise _subcommand_syntax(argv)


# ---- XINFO ----


def parse_xinfo(argv: list[bytes]) -> list[bytes]:
    """XINFO STREAM|GROUPS|CONSUMERS|HELP ... (the table checked the subcommand and its
    arity; the rest is checked against the key, as Redis does)."""
    return argv


def _group_info(stream: StreamValue, name: bytes, group: StreamGroup) -> dict[bytes, object]:
    return {
        b"name": name,
        b"consumers": len(group.consumers),
        b"pending": len(group.pel),
        b"last-delivered-id": id_text(group.last_id),
        b"entries-read": None if group.entries_read == ENTRIES_READ_UNKNOWN
        else group.entries_read,
        b"lag": stream.group_lag(group),
    }


def _stream_info(stream: StreamValue, argv: list[bytes]) -> dict[bytes, object]:
    full = len(argv) > 3
    count = XINFO_FULL_COUNT_DEFAULT
    if full:
        if argv[3].lower() != b"full" or len(argv) not in (4, 6):
            raise _subcommand_syntax(argv)
        if len(argv) == 6:
            if argv[4].lower() != b"count":
                raise _subcommand_syntax(argv)
            count = max(0, int64_arg(argv[5]))
    nodes = (len(stream) + NODE_ENTRIES - 1) // NODE_ENTRIES
    info: dict[bytes, object] = {
        b"length": len(stream),
        b"radix-tree-keys": nodes,
        b"radix-tree-nodes": nodes + 1,
        b"last-generated-id": id_text(stream.last_id),
        b"max-deleted-entry-id": id_text(stream.max_deleted_id),
        b"entries-added": stream.entries_added,
        b"recorded-first-entry-id": id_text(stream.first_id()),
    }
    if not full:
        first, last = stream.first_entry(), stream.last_entry()
        info[b"groups"] = len(stream.groups)
        info[b"first-entry"] = None if first is None else _entry(*first)
        info[b"last-entry"] = None if last is None else _entry(*last)
        return info
    info[b"entries"] = _entries(stream, _limited(stream.ids_between(0, ID_MAX), count))
    return info


def _full_groups(stream: StreamValue, count: int) -> list[object]:
    groups: list[object] = []
    for name in sorted(stream.groups):
        group = stream.groups[name]
        pel_ids = _limited(iter(group.pel), count)
        consumers: list[object] = []
        for consumer_name in group.consumer_names():
            consumer = group.consumers[consumer_name]
            consumers.append({
                b"name": consumer_name,
                b"seen-time": consumer.seen_time,
                b"active-time": consumer.active_time,
                b"pel-count": len(consumer.pending),
                b"pending": [[id_text(i), group.pel[i][1], group.pel[i][2]]
                             for i in _limited(iter(consumer.pending), count)],
            })
        info = _group_info(stream, name, group)
        groups.append({
            b"name": name,
            b"last-delivered-id": info[b"last-delivered-id"],
            b"entries-read": info[b"entries-read"],
            b"lag": info[b"lag"],
            b"pel-count": len(group.pel),
            b"pending": [[id_text(i), *group.pel[i]] for i in pel_ids],
            b"consumers": consumers,
        })
    return groups


def run_xinfo(state: KVState, argv: list[bytes], time_ms: int) -> object:
    sub = argv[1].lower()
    if sub == b"help":
        return [Status(line) for line in XINFO_HELP]
    stream = state.get_stream(argv[2], time_ms)
    if stream is None:
        raise CommandError(ERR_NO_SUCH_KEY)
    if sub == b"consumers":
        group = stream.groups.get(argv[3])
        if group is None:
            raise CommandError(f"NOGROUP No such consumer group '{_c_text(argv[3])}' for key "
                               f"name '{_c_text(argv[2])}'")
        out: list[object] = []
        for name in group.consumer_names():
            consumer = group.consumers[name]
            out.append({
                b"name": name,
                b"pending": len(consumer.pending),
                b"idle": max(0, time_ms - consumer.seen_time),
                b"inactive": -1 if consumer.active_time == NEVER_ACTIVE
                else max(0, time_ms - consumer.active_time),
            })
        return out
    if sub == b"groups":
        return [_group_info(stream, name, stream.groups[name]) for name in sorted(stream.groups)]
    info = _stream_info(stream, argv)
    if b"entries" in info:
        count = XINFO_FULL_COUNT_DEFAULT if len(argv) < 6 else max(0, int64_arg(argv[5]))
        info[b"groups"] = _full_groups(stream, count)
    return info
