"""MULTI ... EXEC: a transaction is one log entry.

A connection queues the commands it is sent between MULTI and EXEC (the client connection,
`replikv.server.resp_server`, answers each with QUEUED). EXEC hands them to the node core as one
command in an internal form, `EXEC <n> <argc> <arg>... <argc> <arg>...` (a client's own EXEC
never reaches the command table: the connection takes it), which is a write like any other: the
leader executes it and proposes it as one entry, a follower forwards it. Every replica therefore
applies the whole transaction at one position of the log, with nothing in between, or none of
it. In passive mode the entry carries the effects of all its commands; in active mode the
internal EXEC itself, and each replica runs its commands in order, the i-th with the entry's
seed + i.

As in Redis, a command that fails when it runs (WRONGTYPE, a bad argument) answers its error in
its slot of EXEC's reply and changes nothing, and the others still run: there is no rollback.

WATCH makes a transaction conditional. The connection notes the node's watch index when WATCH is
sent (the last entry it applied that is certainly committed: a leader's applied-ahead entries
may still be replaced by another leader's), and EXEC carries it with the watched keys: `EXEC WATCH <index> <nkeys> <key>... <n>
...`. The leader, before it runs the transaction, looks at every entry of its log after that
index (its own not yet committed ones too, which come before the transaction): if one changes a
watched key, EXEC answers nil and nothing is proposed, as in Redis. What the leader cannot tell
(the index is no longer in its log after a snapshot, is beyond it, or is more than
WATCH_SCAN_MAX entries back) also answers nil: a spurious abort, which a client retries, never a
missed change. The WATCH part never reaches the log: the leader proposes the transaction
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replikv.replies import CommandError, ErrorReply

if TYPE_CHECKING:
    from replikv.state import KVState

EXEC_NAME = b"EXEC"
# Commands that cannot be inside a transaction's internal form (the connection refuses them
# first; a form from elsewhere that holds one is malformed).
NOT_IN_TRANSACTION = frozenset({b"exec", b"multi", b"discard", b"watch", b"unwatch"})
ERR_MALFORMED = "ERR malformed transaction"
WATCH_MARK = b"WATCH"
# Entries the leader looks through for changes to watched keys; a WATCH further back aborts.
WATCH_SCAN_MAX = 100_000

# One queued command as EXEC runs it: (argv, (spec, parsed) or None, the ErrorReply it answers
# without running, or None).
Queued = tuple[list[bytes], tuple | None, ErrorReply | None]


def encode_exec(commands: list[list[bytes]],
                watch: tuple[int, list[bytes]] | None = None) -> list[bytes]:
    """The internal EXEC of `commands` (each an argv), conditional on `watch` (the node's watch
    index when WATCH was sent, and the keys) if given."""
    out = [EXEC_NAME]
    if watch is not None:
        index, keys = watch
        out += [WATCH_MARK, b"%d" % index, b"%d" % len(keys), *keys]
    out.append(b"%d" % len(commands))
    for argv in commands:
        out.append(b"%d" % len(argv))
        out.extend(argv)
    return out


def _count(arg: bytes, at_most: int) -> int:
    if not arg.isdigit() or len(arg) > 10 or int(arg) > at_most:
        raise CommandError(ERR_MALFORMED)
    return int(arg)


def split_watch(argv: list[bytes]) -> tuple[tuple[int, list[bytes]] | None, list[bytes]]:
    """An internal EXEC's WATCH part (index, keys), or None, and the EXEC without it;
    CommandError if the part is malformed."""
    if len(argv) < 2 or argv[1] != WATCH_MARK:
        return None, argv
    if len(argv) < 4 or not argv[2].isdigit() or len(argv[2]) > 19:
        raise CommandError(ERR_MALFORMED)
    nkeys = _count(argv[3], len(argv) - 4)
    return (int(argv[2]), argv[4:4 + nkeys]), [argv[0], *argv[4 + nkeys:]]


def changes_any(entries: list[bytes], keys: list[bytes]) -> bool:
    """Whether any of these log entries (their data) changes one of `keys`: a FLUSHALL
    changes them all."""
    from replikv.entries import ALL_KEYS, entry_keys  # entries imports this module

    watched = set(keys)
    for data in entries:
        changed = entry_keys(data)
        if ALL_KEYS in changed or not watched.isdisjoint(changed):
            return True
    return False


def split_exec(argv: list[bytes]) -> list[list[bytes]]:
    """The commands of an internal EXEC (its WATCH part, if any, left out); CommandError if it
    is not one."""
    argv = split_watch(argv)[1]
    if len(argv) < 2:
        raise CommandError(ERR_MALFORMED)
    n = _count(argv[1], len(argv))
    commands: list[list[bytes]] = []
    at = 2
    for _ in range(n):
        if at >= len(argv):
            raise CommandError(ERR_MALFORMED)
        argc = _count(argv[at], len(argv) - at - 1)
        if argc == 0 or argv[at + 1].lower() in NOT_IN_TRANSACTION:
            raise CommandError(ERR_MALFORMED)
        commands.append(argv[at + 1:at + 1 + argc])
        at += 1 + argc
    if at != len(argv):
        raise CommandError(ERR_MALFORMED)
    return commands


def parse_exec(argv: list[bytes]) -> list[Queued]:
    """Each command of the transaction parsed; one that does not parse answers its error when
    EXEC runs (as Redis answers a command that fails inside EXEC). An unknown command is a
    malformed transaction: the connection refuses those when they are queued."""
    from replikv.commands import lookup, parse_command

    out: list[Queued] = []
    for command in split_exec(argv):
        if lookup(command[0]) is None:
            raise CommandError(ERR_MALFORMED)
        try:
            out.append((command, parse_command(command), None))
        except CommandError as e:
            out.append((command, None, e.reply()))
    return out


def run_exec(state: KVState, parsed: list[Queued], time_ms: int) -> list[object]:
    return state.run_transaction(parsed, time_ms)
