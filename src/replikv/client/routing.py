"""Which member a command goes to, and what is sent for it.

The command table the nodes use (replikv.commands) says which commands are writes and which are
reads, so the client and the cluster never disagree about it:

- a write goes to the leader, as `REPLIKV WITH [W w [WTIMEOUT ms]] [SEQ n] <command>`; SEQ makes
  it a retryable write (replikv.sessions);
- a read goes where the read preference allows, as `REPLIKV WITH READPREF p [CONSISTENCY c]
  [MAXSTALENESS ms] <command>`, so the member serving it enforces the same semantics (a node
  that became the leader refuses a `secondary` read with NOTSECONDARY instead of serving it);
- node-local informational commands (PING, INFO, TIME, ...) go to the leader and may be retried;
- anything else (a command this client's table does not know) goes to the leader as it is and is
  treated like a write without a session: not resent once it may have been received.

Commands whose effect is tied to one connection are refused (UnsupportedCommand): the client
sends every command on whichever pooled connection is free. So are the subscribe commands (a
subscriber uses redis-py's `pubsub()` on a connection to any node); PUBLISH is a write. The blocking list and sorted set commands (BLPOP, BZPOPMIN and the
others) go to the leader as they are, like an unknown command: the node makes a write of each
attempt to pop (replikv.commands.blocking), so a session's sequence number, which names one
write, cannot go with them, and one that may have popped is never resent (OutcomeUnknown). A
wait longer than the client's socket_timeout ends in that error too: give those commands a
timeout below it, or the client a longer socket_timeout. EVAL and EVALSHA are writes (to the
leader), EVAL_RO and EVALSHA_RO reads, as the command table says; SCRIPT LOAD goes to the
leader, whose script cache EVALSHA then finds. FUNCTION (every subcommand, LIST too: the
command table makes FUNCTION a write) and FCALL go to the leader, FCALL_RO is a read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from replikv.client.errors import UnsupportedCommand
from replikv.commands import COMMANDS

_NAME_BYTES_MAX = 32


class Kind(Enum):
    WRITE = "write"
    READ = "read"
    INFO = "info"  # answered by the node itself, changes nothing: PING, INFO, TIME, ...
    OTHER = "other"  # unknown here: to the leader, never resent after it may have arrived


# Node-local commands that change nothing and do not depend on the connection.
_INFO_COMMANDS = frozenset({"ping", "echo", "info", "time", "role", "command"})
_INFO_SUBCOMMANDS = {
    "replikv": frozenset({"topology", "options", "help"}),
    "config": frozenset({"get"}),
    "client": frozenset({"id", "info", "list", "getname"}),
    # The node's own script cache: SCRIPT LOAD and EXISTS go to the leader (where EVALSHA,
    # a write, goes too) and may be resent (loading a script twice is loading it once).
    "script": frozenset({"load", "exists"}),
}
# PUBLISH and SPUBLISH are writes (the command table says so): routed to the leader, retried
# like any write. Subscriptions belong to one connection to one node.
PUBSUB_REFUSED = ("subscriptions belong to one connection to one node: subscribe with "
                  "redis.Redis(host, port).pubsub() against any member (every member delivers "
                  "every committed message, in the same order)")
_REFUSED = {
    "select": "the client has one database (0)",
    "wait": "WAIT counts the copies of one connection's last write; use write_concern='all'",
    "hello": "the client negotiates the protocol itself (protocol=...)",
    "reset": "it would reset one pooled connection",
    "quit": "use close()",
    "auth": "the client authenticates every connection itself (password=...)",
    "multi": "use pipeline(transaction=True), which sends MULTI ... EXEC on one connection",
    "exec": "use pipeline(transaction=True), which sends MULTI ... EXEC on one connection",
    "discard": "use pipeline(transaction=True), which sends MULTI ... EXEC on one connection",
    "watch": "WATCH belongs to one connection (use a redis.Redis connection's pipeline(), "
             "or SET key value IFEQ old for a compare-and-set)",
    "unwatch": "WATCH belongs to one connection",
    "subscribe": PUBSUB_REFUSED,
    "psubscribe": PUBSUB_REFUSED,
    "ssubscribe": PUBSUB_REFUSED,
    "unsubscribe": PUBSUB_REFUSED,
    "punsubscribe": PUBSUB_REFUSED,
    "sunsubscribe": PUBSUB_REFUSED,
    "pubsub": "PUBSUB answers one node's subscriptions: ask that node with redis.Redis",
    "monitor": "MONITOR is not supported by replikv",
}
_REFUSED_REPLIKV = {
    "session": "the client manages sessions itself (retry_writes=True)",
    "with": "the client adds REPLIKV WITH itself from its options",
    "writeconcern": "set write_concern on the client",
    "readpref": "set read_preference on the client",
    "consistency": "set read_consistency on the client",
}


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    name: str  # the command's name, lower case
    args: tuple  # the command's arguments, its name split into words


def command_name(args: tuple) -> str:
    """The command's first argument as redis-py's response callbacks are keyed ("SET",
    "CLIENT LIST")."""
    head = args[0] if args else ""
    return head.decode("latin-1") if isinstance(head, bytes) else str(head)


def _word(value: object) -> str:
    if isinstance(value, bytes):
        return value[:_NAME_BYTES_MAX].decode("latin-1").lower()
    return str(value)[:_NAME_BYTES_MAX].lower()


def route(args: tuple) -> Route:
    """How to send the command `args` (as given to execute_command); UnsupportedCommand for
    commands the client refuses."""
    if not args:
        raise UnsupportedCommand("empty command")
    head = args[0]
    # redis-py passes some commands as one string: "CLIENT SETNAME", "CONFIG GET".
    words = head.split() if isinstance(head, str | bytes) else [head]
    full = (*words, *args[1:]) if words else tuple(args)
    name = _word(full[0])
    sub = _word(full[1]) if len(full) > 1 else ""
    if name in _REFUSED:
        raise UnsupportedCommand(f"{name.upper()} is not sent by replikv.Client: {_REFUSED[name]}")
    if name == "replikv" and sub in _REFUSED_REPLIKV:
        raise UnsupportedCommand(f"REPLIKV {sub.upper()} is not sent by replikv.Client: "
                                 f"{_REFUSED_REPLIKV[sub]}")
    spec = COMMANDS.get(name)
    if spec is not None and "blocking" in spec.flags and (
            name not in ("xread", "xreadgroup") or any(_word(a) == "block" for a in full)):
        return Route(Kind.OTHER, name, full)
    if spec is not None:
        return Route(Kind.WRITE if spec.kind == "write" else Kind.READ, name, full)
    if name in _INFO_COMMANDS or sub in _INFO_SUBCOMMANDS.get(name, ()):
        return Route(Kind.INFO, name, full)
    return Route(Kind.OTHER, name, full)


def wire_args(r: Route, *, seq: int | None = None, write_concern: str | None = None,
              wtimeout_ms: int | None = None, read_preference: str = "primary",
              read_consistency: str | None = None,
              max_staleness_ms: int | None = None) -> tuple:
    """The arguments to send for the command routed as `r`."""
    if r.kind is Kind.WRITE:
        options: list = []
        if write_concern is not None:
            options += ["W", write_concern]
            if wtimeout_ms:
                options += ["WTIMEOUT", wtimeout_ms]
        if seq is not None:
            options += ["SEQ", seq]
        return ("REPLIKV", "WITH", *options, *r.args) if options else r.args
    if r.kind is Kind.READ:
        options = ["READPREF", read_preference]
        if read_consistency is not None:
            options += ["CONSISTENCY", read_consistency]
        if max_staleness_ms:
            options += ["MAXSTALENESS", max_staleness_ms]
        return ("REPLIKV", "WITH", *options, *r.args)
    return r.args


__all__ = ["Kind", "Route", "command_name", "route", "wire_args"]
