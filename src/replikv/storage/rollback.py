"""Rollback files: log entries a deposed leader had to discard, kept for the operator.

When a new leader overwrites entries that this node wrote but that never committed, Raft is
right to drop them, but a client may have been told "OK" for some of them (write concern w=1).
Like MongoDB's rollback directory, the node first saves them here, so such a write is never lost
silently: an operator can list what was rolled back and decide what to re-apply.

One event, one file, `<data_dir>/rollback/rollback-<UTC time>-i<first>-<last>.rkvrb`, so `ls`
lists them oldest first. A file is written whole and atomically (tmp, fsync, rename, fsync the
directory) before the replacing entries are persisted, and framed like the other small state
files: magic b"RKVRB", a version byte, CRC32 of the body, then the body, msgpack
{node_id, wall_time_ms, new_term, new_leader,
 entries: [[index, term, data, acknowledged, maybe_committed], ...]}.
Version 1 files (written before maybe_committed existed) have four fields per entry and are
still read, every entry then not maybe_committed. A file that fails those checks raises
CorruptRollbackFileError naming it; nothing is guessed.

`maybe_committed` marks an entry that an installed snapshot replaced on a follower that had
restarted: the follower no longer knows how far its log had committed, and the snapshot does
not say which terms its entries had, so the entry may be the very one the cluster committed at
that index (see raft.core.classify_replaced). It is saved, since it may also be a write that
was lost, but it is not counted as rolled back.

`describe_entry` turns a log entry's bytes into something an operator can read; it mirrors the
entry format of the node core (`replikv.node`) without importing it, since storage sits below it.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

import msgpack

from replikv.entries import (
    ENTRY_COMMAND,
    ENTRY_EFFECTS,
    ENTRY_EXPIRE,
    ENTRY_FEATURES,
    as_bytes_list,
)
from replikv.invariants import invariant
from replikv.raft.membership import Membership, MembershipError, is_config_entry
from replikv.storage.errors import CorruptRollbackFileError, CorruptStateError
from replikv.storage.files import (
    create_directory,
    decode_checksummed,
    encode_checksummed,
    write_file_atomically,
)

ROLLBACK_DIR_NAME = "rollback"
ROLLBACK_SUFFIX = ".rkvrb"
ROLLBACK_MAGIC = b"RKVRB"
ROLLBACK_VERSION = 2
_ROLLBACK_VERSIONS_READ = (1, 2)


# Bounds the search for a free name when two events share a millisecond and an index range.
_NAME_ATTEMPTS_MAX = 1000
_NAME = re.compile(
    r"^rollback-(?P<stamp>\d{8}T\d{6})\.(?P<ms>\d{3})Z-i(?P<first>\d+)-(?P<last>\d+)"
    r"(?:-(?P<seq>\d+))?" + re.escape(ROLLBACK_SUFFIX) + "$"
)
_WORD = re.compile(rb"^[A-Za-z][A-Za-z0-9_.|-]*$")
_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r",
            ord("\t"): "\\t", 7: "\\a", 8: "\\b"}
_UNKNOWN_PREVIEW_BYTES = 64


@dataclass(frozen=True, slots=True)
class RollbackRecord:
    """One discarded log entry. `acknowledged`: True if a client was told the write succeeded
    (w=1), False if it never was, None if unknown (for instance, the node restarted since).
    `maybe_committed`: replaced by a snapshot, and possibly the committed entry at its index
    (not counted as rolled back)."""

    index: int
    term: int
    data: bytes
    acknowledged: bool | None
    maybe_committed: bool = False


@dataclass(frozen=True, slots=True)
class RollbackFile:
    path: Path
    node_id: str
    wall_time_ms: int  # when the entries were discarded, by this node's clock
    new_term: int  # the term of the leader whose entries replaced them
    new_leader: str | None
    records: tuple[RollbackRecord, ...]

    @property
    def first_index(self) -> int:
        return self.records[0].index

    @property
    def last_index(self) -> int:
        return self.records[-1].index

    @property
    def acknowledged_count(self) -> int:
        return sum(1 for r in self.records if r.acknowledged is True and not r.maybe_committed)

    @property
    def unknown_count(self) -> int:
        return sum(1 for r in self.records if r.acknowledged is None and not r.maybe_committed)

    @property
    def maybe_committed_count(self) -> int:
        return sum(1 for r in self.records if r.maybe_committed)


@dataclass(frozen=True, slots=True)
class RollbackFileInfo:
    """One line of `list_rollback_files`. For a damaged file `error` says what is wrong and the
    fields are what its name tells (wall time, index range), the others None."""

    path: Path
    wall_time_ms: int | None
    node_id: str | None
    first_index: int | None
    last_index: int | None
    entry_count: int | None
    acknowledged_count: int | None
    unknown_count: int | None
    new_term: int | None
    new_leader: str | None
    error: str | None = None
    maybe_committed_count: int | None = None


def rollback_directory(data_dir: Path) -> Path:
    return data_dir / ROLLBACK_DIR_NAME


def write_rollback_file(data_dir: Path, node_id: str, records: list[RollbackRecord], *,
                        wall_time_ms: int, new_term: int, new_leader: str | None,
                        fsync: bool = True) -> Path:
    """Save `records` (contiguous, ascending) as a new rollback file; return its path.

    Returns once the file is durable (unless `fsync=False`, for a node running without fsync).
    """
    invariant(records, "a rollback file needs at least one record")
    invariant(isinstance(node_id, str) and node_id, f"node_id {node_id!r} must be non-empty")
    invariant(type(wall_time_ms) is int and wall_time_ms >= 0,
              f"wall_time_ms {wall_time_ms!r} must be an integer >= 0")
    invariant(type(new_term) is int and new_term >= 0, f"new_term {new_term!r} invalid")
    invariant(new_leader is None or isinstance(new_leader, str),
              f"new_leader {new_leader!r} is neither a node id nor None")
    entries = []
    for position, r in enumerate(records):
        invariant(type(r.index) is int and r.index >= 1, f"record index {r.index!r} invalid")
        invariant(position == 0 or r.index == records[position - 1].index + 1,
                  f"rollback records are not contiguous: {r.index} follows "
                  f"{records[position - 1].index if position else None}")
        invariant(type(r.term) is int and r.term >= 0, f"record {r.index} term {r.term!r}")
        invariant(type(r.data) is bytes, f"record {r.index} data is {type(r.data).__name__}")
        invariant(r.acknowledged is None or type(r.acknowledged) is bool,
                  f"record {r.index} acknowledged {r.acknowledged!r} is not True/False/None")
        invariant(type(r.maybe_committed) is bool,
                  f"record {r.index} maybe_committed {r.maybe_committed!r} is not a bool")
        entries.append([r.index, r.term, r.data, r.acknowledged, r.maybe_committed])
    body = msgpack.packb({"node_id": node_id, "wall_time_ms": wall_time_ms,
                          "new_term": new_term, "new_leader": new_leader, "entries": entries},
                         use_bin_type=True)
    directory = rollback_directory(data_dir)
    if fsync:
        create_directory(directory)
    else:
        directory.mkdir(parents=True, exist_ok=True)
    path = _free_name(directory, wall_time_ms, records[0].index, records[-1].index)
    write_file_atomically(path, encode_checksummed(ROLLBACK_MAGIC, ROLLBACK_VERSION, body),
                          fsync=fsync)
    return path


def write_rollback_files(data_dir: Path, node_id: str, records: list[RollbackRecord], *,
                         wall_time_ms: int, new_term: int, new_leader: str | None,
                         fsync: bool = True) -> list[Path]:
    """Save `records` (ascending) as rollback files, one per run of consecutive indexes (an
    index dropped twice between two saves, once from each of two leaders, starts a new run);
    return their paths."""
    runs: list[list[RollbackRecord]] = []
    for record in records:
        if runs and record.index == runs[-1][-1].index + 1:
            runs[-1].append(record)
        else:
            runs.append([record])
    return [write_rollback_file(data_dir, node_id, run, wall_time_ms=wall_time_ms,
                                new_term=new_term, new_leader=new_leader, fsync=fsync)
            for run in runs]


def read_rollback_file(path: Path) -> RollbackFile:
    """Read and check one rollback file; raises CorruptRollbackFileError naming it."""
    path = Path(path)
    data = path.read_bytes()
    version = (data[len(ROLLBACK_MAGIC)] if len(data) > len(ROLLBACK_MAGIC)
               and data[len(ROLLBACK_MAGIC)] in _ROLLBACK_VERSIONS_READ else ROLLBACK_VERSION)
    try:
        body = decode_checksummed(path, data, ROLLBACK_MAGIC, version)
    except CorruptStateError as e:
        raise CorruptRollbackFileError(path, e.reason) from None
    try:
        decoded = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptRollbackFileError(path, f"body is not valid msgpack ({exc})") from None
    if not isinstance(decoded, dict):
        raise CorruptRollbackFileError(path, f"body is a {type(decoded).__name__}, not a map")
    missing = {"node_id", "wall_time_ms", "new_term", "new_leader", "entries"} - set(decoded)
    if missing:
        raise CorruptRollbackFileError(path, f"body lacks {', '.join(sorted(missing))}")
    node_id, wall_time_ms = decoded["node_id"], decoded["wall_time_ms"]
    new_term, new_leader = decoded["new_term"], decoded["new_leader"]
    if not isinstance(node_id, str) or not node_id:
        raise CorruptRollbackFileError(path, f"node_id {node_id!r} is not a node id")
    if type(wall_time_ms) is not int or wall_time_ms < 0:
        raise CorruptRollbackFileError(path, f"wall_time_ms {wall_time_ms!r} is not a time")
    if type(new_term) is not int or new_term < 0:
        raise CorruptRollbackFileError(path, f"new_term {new_term!r} is not a term")
    if new_leader is not None and not isinstance(new_leader, str):
        raise CorruptRollbackFileError(path, f"new_leader {new_leader!r} is not a node id")
    raw_entries = decoded["entries"]
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CorruptRollbackFileError(path, "entries is not a non-empty list")
    records: list = []
    for position, entry in enumerate(raw_entries):
        fields = 4 if version == 1 else 5
        if not (isinstance(entry, list) and len(entry) == fields):
            raise CorruptRollbackFileError(
                path, f"entry {position} is not [index, term, data, acknowledged"
                      + ("]" if version == 1 else ", maybe_committed]"))
        index, term, entry_data, acknowledged = entry[:4]
        maybe_committed = entry[4] if version > 1 else False
        if type(index) is not int or index < 1 or type(term) is not int or term < 0:
            raise CorruptRollbackFileError(
                path, f"entry {position} has index {index!r} and term {term!r}")
        if position and index != records[-1].index + 1:
            raise CorruptRollbackFileError(
                path, f"entry {position} has index {index} after {records[-1].index}")
        if type(entry_data) is not bytes:
            raise CorruptRollbackFileError(path, f"entry {index} data is not bytes")
        if acknowledged is not None and type(acknowledged) is not bool:
            raise CorruptRollbackFileError(
                path, f"entry {index} acknowledged {acknowledged!r} is not true/false/nil")
        if type(maybe_committed) is not bool:
            raise CorruptRollbackFileError(
                path, f"entry {index} maybe_committed {maybe_committed!r} is not true/false")
        records.append(RollbackRecord(index, term, entry_data, acknowledged, maybe_committed))
    return RollbackFile(path=path, node_id=node_id, wall_time_ms=wall_time_ms,
                        new_term=new_term, new_leader=new_leader, records=tuple(records))


def list_rollback_files(data_dir: Path) -> list[RollbackFileInfo]:
    """Every rollback file of the node whose data dir is `data_dir`, oldest first.

    A damaged file is listed with `error` set rather than hiding the others.
    """
    directory = rollback_directory(Path(data_dir))
    if not directory.is_dir():
        return []
    infos = []
    for path in directory.glob("*" + ROLLBACK_SUFFIX):
        if not path.is_file():
            continue
        try:
            rb = read_rollback_file(path)
        except (CorruptRollbackFileError, OSError) as e:
            name = _NAME.match(path.name)
            infos.append(RollbackFileInfo(
                path=path, wall_time_ms=_name_wall_time_ms(name), node_id=None,
                first_index=int(name["first"]) if name else None,
                last_index=int(name["last"]) if name else None, entry_count=None,
                acknowledged_count=None, unknown_count=None, new_term=None, new_leader=None,
                error=str(e)))
            continue
        infos.append(RollbackFileInfo(
            path=path, wall_time_ms=rb.wall_time_ms, node_id=rb.node_id,
            first_index=rb.first_index, last_index=rb.last_index, entry_count=len(rb.records),
            acknowledged_count=rb.acknowledged_count, unknown_count=rb.unknown_count,
            new_term=rb.new_term, new_leader=rb.new_leader,
            maybe_committed_count=rb.maybe_committed_count))

    def order(info: RollbackFileInfo) -> tuple[int, int, str]:
        name = _NAME.match(info.path.name)
        return (info.wall_time_ms if info.wall_time_ms is not None else -1,
                int(name["seq"] or 1) if name else 0, info.path.name)

    return sorted(infos, key=order)


def _free_name(directory: Path, wall_time_ms: int, first: int, last: int) -> Path:
    seconds, ms = divmod(wall_time_ms, 1000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{ms:03d}Z"
    base = f"rollback-{stamp}-i{first}-{last}"
    for attempt in range(1, _NAME_ATTEMPTS_MAX + 1):
        path = directory / f"{base}{'' if attempt == 1 else f'-{attempt}'}{ROLLBACK_SUFFIX}"
        if not path.exists():
            return path
    invariant(False, f"{_NAME_ATTEMPTS_MAX} rollback files named {base}* already exist")
    raise AssertionError("unreachable")


def _name_wall_time_ms(name: re.Match[str] | None) -> int | None:
    if name is None:
        return None
    try:
        struct_time = time.strptime(name["stamp"], "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    return calendar.timegm(struct_time) * 1000 + int(name["ms"])


# -- showing log entries ---------------------------------------------------------------------


class EntryDescription(TypedDict):
    """What `describe_entry` says of a log entry."""

    kind: str
    time_ms: int | None
    text: str
    seed: NotRequired[int]


def describe_entry(data: bytes, *, max_arg_bytes: int | None = None) -> EntryDescription:
    """What a log entry does, for people: {"kind", "time_ms", "text"} (plus "seed" for a
    command that carries one). `kind` is "command", "expire", "effects", "features", "membership", "noop" or
    "unknown";
    `text` reads like a redis-cli line, `SET "k" "v"`, with unprintable bytes escaped.
    `max_arg_bytes` cuts each argument shown to that many bytes (None: show everything)."""
    if data == b"":
        return {"kind": "noop", "time_ms": None,
                "text": "(no-op: a new leader's first entry of its term)"}
    if is_config_entry(data):
        try:
            m = Membership.decode(data)
        except MembershipError:
            pass
        else:
            return {"kind": "membership", "time_ms": None,
                    "text": f"(membership: voters {', '.join(m.voters)}; standbys "
                            f"{', '.join(m.learners) or 'none'})"}
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        decoded = None
    described = None
    if (isinstance(decoded, list) and len(decoded) >= 3 and type(decoded[0]) is int
            and type(decoded[1]) is int):
        described = _describe_known(decoded, max_arg_bytes)
    if described is None:
        preview = data[:_UNKNOWN_PREVIEW_BYTES]
        more = f" (+{len(data) - len(preview)} bytes)" if len(data) > len(preview) else ""
        return {"kind": "unknown", "time_ms": None,
                "text": f"{len(data)} bytes: {_quote(preview)}{more}"}
    return described


def _command_text(argv: list[bytes], max_arg_bytes: int | None) -> str:
    """A command as a person reads it; a transaction as MULTI; its commands; EXEC; a batch of a
    pipeline's writes as its commands."""
    from replikv.commands.transactions import is_pipeline, split_exec
    from replikv.replies import CommandError

    if argv[0].lower() == b"exec":
        try:
            commands = split_exec(argv)
        except CommandError:
            pass
        else:
            texts = [_command_text(c, max_arg_bytes) for c in commands]
            if is_pipeline(argv):
                return "; ".join(texts)
            return "; ".join(["MULTI", *texts, "EXEC"])
    name = argv[0]
    words = [name.decode().upper() if _WORD.match(name) else _quote(name, max_arg_bytes)]
    words += [_quote(a, max_arg_bytes) for a in argv[1:]]
    return " ".join(words)


def _describe_known(decoded: list, max_arg_bytes: int | None) -> EntryDescription | None:
    kind, time_ms, payload = decoded[0], decoded[1], decoded[2]
    if kind == ENTRY_COMMAND:
        argv = as_bytes_list(payload)
        if not argv:
            return None
        out: EntryDescription = {"kind": "command", "time_ms": time_ms,
                                 "text": _command_text(argv, max_arg_bytes)}
        if len(decoded) >= 4 and decoded[3] is not None:
            out["seed"] = decoded[3]
        return out
    if kind == ENTRY_EXPIRE:
        keys = as_bytes_list(payload)
        if keys is None:
            return None
        text = "expired: " + " ".join(_quote(k, max_arg_bytes) for k in keys)
        return {"kind": "expire", "time_ms": time_ms, "text": text}
    if kind == ENTRY_EFFECTS:
        if not isinstance(payload, list):
            return None
        text = "; ".join(_render_operation(op, max_arg_bytes) for op in payload)
        return {"kind": "effects", "time_ms": time_ms, "text": text or "(no effects)"}
    if kind == ENTRY_FEATURES and type(payload) is int:
        return {"kind": "features", "time_ms": time_ms,
                "text": f"(feature level {payload}: every member can apply its entries)"}
    return None


# The effect operation codes of the passive log format (state.py's EFFECT_* constants, which a
# unit test keeps in step with this table), shown as the Redis-like operation they perform.
EFFECT_NAMES = {1: "set", 2: "del", 3: "sadd", 4: "srem", 5: "set-members", 6: "expire",
                7: "flushall", 8: "hset", 9: "hdel", 10: "hash-fields", 11: "lpush",
                12: "rpush", 13: "lpop", 14: "rpop", 15: "lset", 16: "list-insert",
                17: "list-remove-at", 18: "list-elements", 19: "zadd", 20: "zrem",
                21: "zrem-ranks", 22: "zset-members", 23: "publish", 24: "spublish",
                25: "string-splice",
                26: "xadd", 27: "xdel", 28: "xtrim-head", 29: "xsetid", 30: "xgroup-setid",
                31: "xgroup-destroy", 32: "xgroup-consumer", 33: "xgroup-delconsumer",
                34: "xdeliver", 35: "xack", 36: "stream-image",
                37: "function-load", 38: "function-delete", 39: "function-flush"}
# Effects whose last argument is an expiry; effects that list members each followed by a
# score, shown score first as ZADD takes them.
_EXPIRY_LAST = (1, 5, 6, 10, 18, 22, 35)
_SCORED = (19, 22)


def _render_effect(op: list, max_arg_bytes: int | None) -> str:
    name = EFFECT_NAMES[op[0]]
    args = list(op[1:])
    if op[0] == 37:
        args = args[:2]  # a library's name and code (its functions follow from the code)
    elif op[0] == 39:
        args = []
    expiry = None
    if op[0] in _EXPIRY_LAST and args:
        expiry = args.pop()  # the absolute expiry time in ms, or None (none / persist)
    parts = [name]
    for arg in args:
        if isinstance(arg, list):
            if op[0] in _SCORED:
                arg = [x for pair in zip(arg[1::2], arg[0::2], strict=False) for x in pair]
            parts.extend(_render(v, max_arg_bytes) for v in arg)
        else:
            parts.append(_render(arg, max_arg_bytes))
    if op[0] == 6:
        parts.append(f"PXAT {expiry}" if expiry is not None else "PERSIST")
    elif expiry is not None:
        parts.append(f"PXAT {expiry}")
    return " ".join(parts)


def _render_operation(op: object, max_arg_bytes: int | None) -> str:
    if isinstance(op, list) and op and type(op[0]) is int and op[0] in EFFECT_NAMES:
        return _render_effect(op, max_arg_bytes)
    # Otherwise an operation that starts with its name: show that bare.
    if isinstance(op, list) and op and isinstance(op[0], bytes | str):
        name = op[0].encode() if isinstance(op[0], str) else op[0]
        if _WORD.match(name):
            return " ".join([name.decode(), *(_render(v, max_arg_bytes) for v in op[1:])])
    return _render(op, max_arg_bytes)


def _render(value: object, max_arg_bytes: int | None) -> str:
    if isinstance(value, bytes):
        return _quote(value, max_arg_bytes)
    if isinstance(value, str):
        return _quote(value.encode(), max_arg_bytes)
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(_render(v, max_arg_bytes) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render(k, max_arg_bytes)}: {_render(v, max_arg_bytes)}"
                               for k, v in value.items()) + "}"
    return repr(value)


def _quote(data: bytes, max_bytes: int | None = None) -> str:
    """`data` as redis-cli prints a bulk string: in double quotes, unprintables escaped."""
    shown = data if max_bytes is None else data[:max_bytes]
    out = ['"']
    for byte in shown:
        escape = _ESCAPES.get(byte)
        if escape is not None:
            out.append(escape)
        elif 32 <= byte < 127:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    out.append('"')
    if len(shown) < len(data):
        out.append(f"...(+{len(data) - len(shown)} bytes)")
    return "".join(out)
