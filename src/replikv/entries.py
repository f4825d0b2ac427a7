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

from typing import Any, NamedTuple

import msgpack

from replikv.invariants import invariant
from replikv.raft.membership import is_config_entry
from replikv.sessions import SessionTable
from replikv.state import KVState

ENTRY_COMMAND = 1  # payload: argv; 4th field: the leader's random seed (0: none)
ENTRY_EXPIRE = 2  # payload: keys whose time to live ran out (active mode)
ENTRY_EFFECTS = 3  # payload: effects as KVState.apply_effects takes them (passive mode)


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
