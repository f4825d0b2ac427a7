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

A pipeline's writes travel the same way. When a client's read holds several plain writes in a
row (say 16 SETs sent with pipelining), the connection submits them as one internal EXEC marked
`EXEC PIPELINE <n> ...`, so that they cost one request, one log entry and one round of
replication instead of n, and answers each in its own slot. That is allowed because nothing in
a pipeline waits for a reply: each command may take effect at any moment between the client
sending it and its reply, and running them one after the other at one position of the log is
such a moment. Only commands whose effects are no larger than their arguments are batched
(PIPELINE_BATCHABLE), and a batch's arguments are bounded, so a batch can never fail as too
large where its commands alone would not. The mark only changes how the entry is described
(`replikv rollback`, the log's `describe`): a pipeline is not a MULTI. The node's runtime
(replikv.server.runtime) also joins the plain writes of several connections that arrive in one
turn of its event loop into one such batch: the same argument holds for each of them.

A pipeline's plain reads are batched the same way, as `EXEC-READS <n> <argc> <arg>...`: an
internal read (never in the log, refused from clients) that runs its reads one after the other
at the point a read runs (after its ReadIndex round, on the node that serves it), so one request
replaces n. Only quick reads with small replies batch (PIPELINE_READS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replikv.replies import CommandError, ErrorReply

if TYPE_CHECKING:
    from replikv.state import KVState

EXEC_NAME = b"EXEC"
# Commands that cannot be inside a transaction's internal form (the connection refuses them
# first; a form from elsewhere that holds one is malformed).
NOT_IN_TRANSACTION = frozenset({b"exec", b"multi", b"discard", b"watch", b"unwatch",
                                b"exec-reads", b"watch-point"})
ERR_MALFORMED = "ERR malformed transaction"
WATCH_MARK = b"WATCH"
PIPELINE_MARK = b"PIPELINE"
# The writes a connection may batch from one pipeline: effects no larger than the arguments
# (strings set, incremented or deleted, set members and hash fields added or removed, list
# elements pushed, set or inserted, pops and trims, which name a count, sorted set members
# added or removed, each with at most its 8-byte score, expiries), no randomness. APPEND,
# SETRANGE, RENAME and the set stores are not here: their effects carry a whole value; nor
# LMOVE and RPOPLPUSH (their effects carry the element moved, from the state), LREM (its effect
# names every position it removed), LMPOP and ZMPOP (keys named by a count), or ZPOPMIN,
# ZPOPMAX and the ZREMRANGE commands (small effects, but not among the commands a pipeline
# batches so far). PUBLISH and SPUBLISH batch: their one effect is their arguments.
PIPELINE_BATCHABLE = frozenset({
    b"set", b"setnx", b"setex", b"psetex", b"getset", b"getdel", b"mset", b"msetnx",
    b"del", b"unlink", b"incr", b"decr", b"incrby", b"decrby", b"incrbyfloat",
    b"expire", b"pexpire", b"expireat", b"pexpireat", b"persist", b"sadd", b"srem",
    b"hset", b"hmset", b"hsetnx", b"hdel", b"hincrby", b"hincrbyfloat",
    b"lpush", b"rpush", b"lpushx", b"rpushx", b"lpop", b"rpop", b"lset", b"linsert", b"ltrim",
    b"zadd", b"zrem", b"zincrby", b"publish", b"spublish",
})
# Reads a connection may batch from one pipeline: quick (ZCOUNT and the ranks are O(log n)),
# small replies, no randomness, no keyspace scan.
PIPELINE_READS = frozenset({
    b"get", b"mget", b"exists", b"strlen", b"getrange", b"type", b"ttl", b"pttl",
    b"expiretime", b"pexpiretime", b"scard", b"sismember", b"smismember",
    b"hget", b"hmget", b"hexists", b"hlen", b"hstrlen", b"llen", b"lindex",
    b"zscore", b"zmscore", b"zcard", b"zrank", b"zrevrank", b"zcount",
})
READS_NAME = b"EXEC-READS"
READS_NAME_LOWER = READS_NAME.lower()
# A connection's first WATCH asks its node for the log index it starts from, as a read of the
# connection's read preference and consistency (linearizable by default): the index of the
# state that read would see, so that every write acknowledged before the WATCH comes at or
# before it. The node answers it (NodeCore); clients cannot send it.
WATCH_POINT_NAME = b"WATCH-POINT"
WATCH_POINT_NAME_LOWER = WATCH_POINT_NAME.lower()
INTERNAL_READS = frozenset({READS_NAME_LOWER, WATCH_POINT_NAME_LOWER})
# A batch holds at most this many commands and this many argument bytes. Large commands gain
# nothing from sharing an entry (an MSET of 500 keys is 60 KB): they keep an entry each.
PIPELINE_BATCH_COMMANDS = 64
PIPELINE_BATCH_BYTES = 64 * 1024
# Entries the leader looks through for changes to watched keys; a WATCH further back aborts.
WATCH_SCAN_MAX = 100_000

# One queued command as EXEC runs it: (argv, (spec, parsed) or None, the ErrorReply it answers
# without running, or None).
Queued = tuple[list[bytes], tuple | None, ErrorReply | None]


def encode_exec(commands: list[list[bytes]],
                watch: tuple[int, list[bytes]] | None = None,
                pipeline: bool = False) -> list[bytes]:
    """The internal EXEC of `commands` (each an argv), conditional on `watch` (the node's watch
    index when WATCH was sent, and the keys) if given; `pipeline`: a batch of a pipeline's
    writes, not a client's MULTI (it cannot be conditional)."""
    out = [EXEC_NAME]
    if pipeline:
        out.append(PIPELINE_MARK)
    elif watch is not None:
        index, keys = watch
        out += [WATCH_MARK, b"%d" % index, b"%d" % len(keys), *keys]
    return _append_commands(out, commands)


def _append_commands(out: list[bytes], commands: list[list[bytes]]) -> list[bytes]:
    """`out` followed by `<n> <argc> <arg>... <argc> <arg>...` (what _split_commands reads)."""
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


def is_pipeline(argv: list[bytes]) -> bool:
    """Whether this internal EXEC is a batch of a pipeline's writes."""
    return len(argv) > 1 and argv[1] == PIPELINE_MARK


def split_exec(argv: list[bytes]) -> list[list[bytes]]:
    """The commands of an internal EXEC (its WATCH part or PIPELINE mark, if any, left out);
    CommandError if it is not one."""
    if is_pipeline(argv):
        at = 2
    else:
        argv, at = split_watch(argv)[1], 1
    return _split_commands(argv, at)


def _split_commands(argv: list[bytes], at: int) -> list[list[bytes]]:
    """`<n> <argc> <arg>... <argc> <arg>...` from argv[at]: the n commands."""
    end = len(argv)
    if at >= end:
        raise CommandError(ERR_MALFORMED)
    n = _count(argv[at], end)
    at += 1
    commands: list[list[bytes]] = []
    append = commands.append
    for _ in range(n):
        if at >= end:
            raise CommandError(ERR_MALFORMED)
        arg = argv[at]
        if not arg.isdigit() or len(arg) > 10:
            raise CommandError(ERR_MALFORMED)
        following = at + 1 + int(arg)
        if following == at + 1 or following > end or argv[at + 1].lower() in NOT_IN_TRANSACTION:
            raise CommandError(ERR_MALFORMED)
        append(argv[at + 1:following])
        at = following
    if at != end:
        raise CommandError(ERR_MALFORMED)
    return commands


def parse_exec(argv: list[bytes]) -> list[Queued]:
    """Each command of the transaction parsed; one that does not parse answers its error when
    EXEC runs (as Redis answers a command that fails inside EXEC). An unknown command is a
    malformed transaction: the connection refuses those when they are queued."""
    return _parse_each(split_exec(argv))


def _parse_each(commands: list[list[bytes]],
                allowed: frozenset[bytes] | None = None) -> list[Queued]:
    """parse_exec's and parse_reads's: each command parsed, or the error it answers; an
    unknown command, or one not in `allowed` if given, makes the whole form malformed."""
    from replikv.commands import check_arity, lookup

    out: list[Queued] = []
    append = out.append
    for command in commands:
        if allowed is not None and command[0].lower() not in allowed:
            raise CommandError(ERR_MALFORMED)
        spec = lookup(command[0])
        if spec is None:
            raise CommandError(ERR_MALFORMED)
        try:
            check_arity(spec, command)
            append((command, (spec, spec.parse(command)), None))
        except CommandError as e:
            append((command, None, e.reply()))
    return out


def run_exec(state: KVState, parsed: list[Queued], time_ms: int) -> list[object]:
    return state.run_transaction(parsed, time_ms)


def encode_reads(commands: list[list[bytes]]) -> list[bytes]:
    """The internal EXEC-READS of a pipeline's reads (each in PIPELINE_READS)."""
    return _append_commands([READS_NAME], commands)


def parse_reads(argv: list[bytes]) -> list[Queued]:
    """Each read of an EXEC-READS parsed, or the error it answers; CommandError if the form is
    malformed or holds anything but PIPELINE_READS."""
    return _parse_each(_split_commands(argv, 1), PIPELINE_READS)


def parse_watch_point(argv: list[bytes]) -> None:
    return None


def run_watch_point(state: KVState, parsed: None, time_ms: int) -> object:
    raise CommandError("ERR WATCH-POINT is answered by the node, not the state")


def run_reads(state: KVState, parsed: list[Queued], time_ms: int) -> list[object]:
    """The replies of an EXEC-READS's reads, run one after the other at `time_ms`."""
    replies: list[object] = []
    for _argv, command, error in parsed:
        if command is None:
            replies.append(error)
            continue
        spec, args = command
        try:
            replies.append(spec.run(state, args, time_ms))
        except CommandError as e:
            replies.append(e.reply())
    return replies
