"""Applying one committed log entry to the replicated state: the one code path every replica,
and point-in-time recovery, runs.

The entry format is described in `replikv.node` (which builds entries): msgpack
`[kind, time_ms, payload, seed?, session?]`, b"" for a leader's no-op, or a membership change
(raft's config entry). Applying an entry is a pure function of the state, the session table,
the entry and the state's time, so it lives here, below the node core: the node core applies
what commits, and `replikv.pitr` replays archived entries on top of a backup with exactly the
same rules (time never goes back, a session's duplicate is skipped, commands run with the
leader's seed), and so reaches exactly the state every replica reached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from replikv.commands import keys_of, lookup
from replikv.commands.transactions import split_exec
from replikv.features import level_check
from replikv.invariants import InvariantViolation, invariant
from replikv.raft.membership import is_config_entry
from replikv.replies import CommandError

if TYPE_CHECKING:  # imported at run time they would make a cycle: state -> storage -> here
    from replikv.sessions import SessionTable
    from replikv.state import KVState

ENTRY_COMMAND = 1  # payload: argv; 4th field: the leader's random seed (0: none)
ENTRY_EXPIRE = 2  # payload: keys whose time to live ran out (active mode)
ENTRY_EFFECTS = 3  # payload: effects as KVState.apply_effects takes them (passive mode)
# payload: the cluster's new feature level (replikv.features), proposed by a leader once every
# member can apply it; a node that cannot (an older replikv) stops here rather than diverge.
ENTRY_FEATURES = 4


class AppliedEntry(NamedTuple):
    """What applying one entry did. `time_ms` is the state's time afterwards (unchanged by a
    no-op or a config entry). `kind` is the ENTRY_* kind that changed the state, None if the
    entry changed no key (a no-op, a config entry, or a write its session had already
    applied). `undo` and `session_undo` are set only when applied with `recorded`."""

    time_ms: int
    kind: int | None
    undo: Any
    session_undo: Any


def apply_entry(state: KVState, sessions: SessionTable, data: bytes, index: int,
                state_time_ms: int, *, recorded: bool = False) -> AppliedEntry:
    """Apply the log entry `data` at `index` to `state` (and its session record to
    `sessions`), in place. The time applied is max(entry time, `state_time_ms`), so expiry
    stays monotonic and identical everywhere. With `recorded`, return the undo records."""
    if not data or is_config_entry(data):
        return AppliedEntry(state_time_ms, None, None, None)  # raft's business, not the state's
    kind, time_ms, payload, *rest = msgpack.unpackb(data, use_list=True)
    t = max(time_ms, state_time_ms)
    session_undo = None
    if len(rest) > 1 and rest[1]:
        session, seq, packed = rest[1]
        if not sessions.lookup(session, seq, t).is_new:
            # A write its session already applied: every replica skips it alike (the leader
            # does not propose such entries; this keeps replay exactly-once).
            return AppliedEntry(t, None, None, None)
        session_undo = sessions.record_packed(session, seq, packed, t, index)
    undo = None
    if kind == ENTRY_COMMAND:
        seed = rest[0] if rest else 0
        if recorded:
            undo = state.execute_recorded(payload, t, seed)[2]
        else:
            state.apply_command(payload, t, seed)
    elif kind == ENTRY_EFFECTS:
        if recorded:
            undo = state.apply_effects_recorded(payload)
        else:
            state.apply_effects(payload)
    elif kind == ENTRY_EXPIRE:
        if recorded:
            undo = state.expire_recorded(payload, t)[2]
        else:
            state.apply_expire(payload, t)
    elif kind == ENTRY_FEATURES:
        try:
            level = level_check(payload, f"log entry {index}")
        except ValueError as e:
            raise InvariantViolation(str(e)) from None
        if recorded:
            undo = state.raise_feature_level_recorded(level)
        else:
            state.raise_feature_level(level)
    else:
        invariant(False, f"unknown entry kind {kind} at index {index}")
    return AppliedEntry(t, kind, undo, session_undo)


def entry_time_ms(data: bytes) -> int | None:
    """The leader's clock in an entry, in ms; None for a no-op, a config entry, or bytes that
    are not an entry of ours (they carry no time)."""
    if not data or is_config_entry(data):
        return None
    try:
        decoded = msgpack.unpackb(data, use_list=True)
    except (ValueError, msgpack.UnpackException):
        return None
    if (isinstance(decoded, list) and len(decoded) >= 3 and type(decoded[0]) is int
            and type(decoded[1]) is int):
        return decoded[1]
    return None


ALL_KEYS = b"*"  # what entry_keys names for a FLUSHALL
# EFFECT_PUBLISH and EFFECT_SPUBLISH (replikv.state; a module that imports this one): a channel,
# not a key.
_PUBLISH_EFFECTS = (23, 24)
# EFFECT_LIBRARY_LOAD, _DELETE and _FLUSH: a function library, not a key.
_LIBRARY_EFFECTS = (37, 38, 39)


def _command_keys(argv: list[bytes]) -> list[bytes]:
    """The keys of one command as a log entry carries it (a transaction's: all its commands')."""
    spec = lookup(argv[0]) if argv else None
    if spec is None:
        return argv[1:2]
    if spec.kind == "read":
        return []  # a read ordered through the log changes nothing
    if spec.name in ("flushall", "flushdb"):
        return [ALL_KEYS]
    if spec.name in ("eval", "fcall"):  # a script may write keys it does not declare
        return [ALL_KEYS]
    if spec.name == "exec":
        try:
            commands = split_exec(argv)
        except CommandError:
            return []
        keys: list[bytes] = []
        for command in commands:
            for key in _command_keys(command):
                if key == ALL_KEYS:
                    return [ALL_KEYS]
                if key not in keys:
                    keys.append(key)
        return keys
    try:
        return list(keys_of(spec, argv))
    except (IndexError, ValueError):
        return argv[1:2]


def entry_keys(data: bytes) -> list[bytes]:
    """The keys a log entry changes (ALL_KEYS for a flush), for `replikv rollback report` and
    the leader's WATCH check; [] for a no-op, a membership entry or bytes that do not decode."""
    if not data or is_config_entry(data):
        return []
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return []
    if not (isinstance(decoded, list) and len(decoded) >= 3):
        return []
    kind, payload = decoded[0], decoded[2]
    if kind == ENTRY_COMMAND:
        return _command_keys(as_bytes_list(payload) or [])
    if kind == ENTRY_EXPIRE:
        return as_bytes_list(payload) or []
    if kind == ENTRY_EFFECTS and isinstance(payload, list):
        keys: list[bytes] = []
        for op in payload:
            if isinstance(op, list) and len(op) == 1:
                return [ALL_KEYS]  # the flush effect
            if isinstance(op, list) and op and (op[0] in _PUBLISH_EFFECTS
                                                or op[0] in _LIBRARY_EFFECTS):
                continue  # a message or a library, not a key
            if (isinstance(op, list) and len(op) > 1 and isinstance(op[1], bytes)
                    and op[1] not in keys):
                keys.append(op[1])
        return keys
    return []


def entry_publishes(data: bytes) -> list[tuple[bool, bytes, bytes]]:
    """The messages a log entry publishes, (sharded, channel, message) in order: its publish
    effects (passive), or its PUBLISH and SPUBLISH commands, alone or in a transaction or a
    pipeline's batch (active). For checks and tools: a node takes what it delivers from the
    state's outbox as it applies (a write its session already applied publishes nothing)."""
    if not data or is_config_entry(data):
        return []
    try:
        decoded = msgpack.unpackb(data, use_list=True)
    except (ValueError, msgpack.UnpackException):
        return []
    if not (isinstance(decoded, list) and len(decoded) >= 3):
        return []
    kind, payload = decoded[0], decoded[2]
    out: list[tuple[bool, bytes, bytes]] = []
    if kind == ENTRY_EFFECTS and isinstance(payload, list):
        for op in payload:
            if isinstance(op, list) and len(op) == 3 and op[0] in _PUBLISH_EFFECTS:
                out.append((op[0] == _PUBLISH_EFFECTS[1], op[1], op[2]))
    elif kind == ENTRY_COMMAND:
        argv = as_bytes_list(payload) or []
        commands = [argv]
        if argv and argv[0].lower() == b"exec":
            try:
                commands = split_exec(argv)
            except CommandError:
                return []
        for command in commands:
            name = command[0].lower() if command else b""
            if name in (b"publish", b"spublish") and len(command) == 3:
                out.append((name == b"spublish", command[1], command[2]))
    return out


def as_bytes_list(value: object) -> list[bytes] | None:
    """A decoded list of byte strings (str items encoded), or None if it is not one."""
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes):
            return None
        out.append(item)
    return out
