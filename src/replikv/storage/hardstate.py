"""The Raft hard state (current term and vote) in one small, atomically replaced file.

Raft's safety rests on a node never voting twice in a term and never going back in term, so
both must be on disk before any message that depends on them leaves. The file is rewritten
whole on each change (write tmp, fsync, rename, fsync dir) rather than appended to: it is tiny,
and a crash then leaves either the old state or the new one, never a mix.

Format: magic b"RKVHS", a version byte, CRC32 of the body, body = msgpack [term, voted_for].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgpack

from replikv.invariants import invariant
from replikv.storage.errors import CorruptStateError
from replikv.storage.files import decode_checksummed, encode_checksummed, write_file_atomically

HARD_STATE_MAGIC = b"RKVHS"
HARD_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class HardState:
    term: int
    voted_for: str | None


def save_hard_state(path: Path, state: HardState, *, fsync: bool = True) -> None:
    """Durably replace the hard state at `path`; returns only once it is on disk.

    `fsync=False` (a node running with fsync = "never") keeps the atomic replacement but skips
    the fsyncs, so the new state survives a process crash but not necessarily a power loss.
    """
    invariant(
        type(state.term) is int and state.term >= 0, f"hard state term {state.term!r} invalid"
    )
    invariant(
        state.voted_for is None or isinstance(state.voted_for, str),
        f"hard state voted_for {state.voted_for!r} is neither a node id nor None",
    )
    body = msgpack.packb([state.term, state.voted_for], use_bin_type=True)
    write_file_atomically(
        path, encode_checksummed(HARD_STATE_MAGIC, HARD_STATE_VERSION, body), fsync=fsync
    )


def load_hard_state(path: Path) -> HardState | None:
    """Read the hard state, or None if it was never saved (a brand new node).

    Raises CorruptStateError naming the file and the problem. A stale `<name>.tmp` beside it is
    the remains of a save that crashed before its rename, so it is ignored.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    body = decode_checksummed(path, data, HARD_STATE_MAGIC, HARD_STATE_VERSION)
    try:
        decoded = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptStateError(path, f"body is not valid msgpack ({exc})") from exc
    if not isinstance(decoded, list) or len(decoded) != 2:
        raise CorruptStateError(path, f"wrong types: body {decoded!r} is not [term, voted_for]")
    term, voted_for = decoded
    if type(term) is not int or term < 0:
        raise CorruptStateError(path, f"wrong types: term {term!r} is not an integer >= 0")
    if voted_for is not None and not isinstance(voted_for, str):
        raise CorruptStateError(path, f"wrong types: voted_for {voted_for!r} is not a string")
    return HardState(term=term, voted_for=voted_for)
