"""Commands answered by the node itself, without the log: connection handshakes and introspection.

These are what redis-cli and redis-py send when they connect (HELLO, CLIENT SETNAME / SETINFO,
SELECT 0), plus PING, ECHO, INFO, ROLE, COMMAND, CONFIG GET, TIME, LASTSAVE, QUIT, RESET and
REPLIKV. They touch only the connection's own state or report the node's state; none of them
changes data, so none of them goes through consensus. Their arity is checked as Redis checks a
command's (`check_local_arity`, from LOCAL_ARITY), before a handler runs, so `TIME x` is
refused with Redis's text; the connection checks the transaction commands' arity the same way.

`REPLIKV TOPOLOGY` describes the members for smart clients (replikv.client): the node reports
what it knows through `NodeView.topology()`, built with `member_views` from its membership,
its raft state and the addresses peers advertised in their handshakes.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from replikv import __version__
from replikv.commands import COMMANDS, lookup
from replikv.commands.glob import compile_glob
from replikv.commands.strings import parse_int64
from replikv.concerns import (
    DEFAULT_OPTIONS,
    OPTION_NAMES,
    RequestOptions,
    apply_option,
    interned,
    parse_session_arg,
)
from replikv.config import (
    MAXMEMORY_POLICY,
    ConfigError,
    check_maxmemory_policy,
    parse_memory,
)
from replikv.pubsub import Subscriptions
from replikv.replies import OK, PONG, CommandError, ErrorReply, Status, wrong_arity
from replikv.server.slowlog import SlowLog

# The Redis version we present to clients: the command set and reply formats we follow.
REDIS_COMPAT_VERSION = "7.4.0"


@dataclass(slots=True)
class ConnectionState:
    client_id: int
    protocol: int = 2
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    closing: bool = False  # QUIT: close once the reply is written
    addr: str = ""
    created_s: float = field(default_factory=time.time)
    # Write concern, read preference and consistency for this connection's commands.
    options: RequestOptions = DEFAULT_OPTIONS
    default_options: RequestOptions = DEFAULT_OPTIONS  # the node's defaults, for RESET
    # False until the client gives the node's password (AUTH, HELLO ... AUTH) on a node with
    # one; nothing but AUTH, HELLO, QUIT and RESET runs before (see NO_AUTH_COMMANDS).
    authenticated: bool = True


MEMBER_ROLES = ("leader", "follower", "candidate", "standby", "unknown")


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as a node sees it, for REPLIKV TOPOLOGY."""

    id: str
    role: str  # one of MEMBER_ROLES
    voter: bool
    client: str | None  # "host:port" clients connect to; None if not known here (yet)
    admin: str | None = None  # the admin HTTP "host:port", if it has one and it is known
    is_self: bool = False  # the node answering
    term: int | None = None  # the answering node's term (is_self only)
    applied_index: int | None = None  # the answering node's applied index (is_self only)

    def as_reply(self) -> dict:
        out = {"id": self.id, "role": self.role, "voter": int(self.voter), "client": self.client,
               "admin": self.admin, "self": int(self.is_self)}
        if self.is_self:
            out["term"] = self.term
            out["applied_index"] = self.applied_index
        return out


def member_views(*, self_id: str, self_role: str, term: int, applied_index: int,
                 leader_id: str | None, members: Iterable[str], voters: Collection[str],
                 addresses: Mapping[str, Mapping[str, str]]) -> list[MemberView]:
    """The members in the order given, as this node sees them.

    `self_role` is this node's raft role ("pre-candidate" counts as "candidate");
    `addresses[id]` holds the member's "client" and "admin" addresses where known (for peers:
    what they advertised in their handshake). Another member's role is "leader" if it is the
    leader this node follows, otherwise "follower" (or "standby" for a non-voter) while a leader
    is known, and "unknown" when none is."""
    out = []
    for member in members:
        voter = member in voters
        if member == self_id:
            role = "candidate" if self_role in ("candidate", "pre-candidate") else self_role
            if role not in MEMBER_ROLES:
                role = "unknown"
            if role == "follower" and not voter:
                role = "standby"
        elif member == leader_id:
            role = "leader"
        elif leader_id is not None:
            role = "follower" if voter else "standby"
        else:
            role = "unknown"
        known = addresses.get(member, {})
        is_self = member == self_id
        out.append(MemberView(member, role, voter, known.get("client"), known.get("admin"),
                              is_self, term if is_self else None,
                              applied_index if is_self else None))
    return out


class NodeView:
    """What local commands need to know about the node; the runtime implements it."""

    node_id: str
    started_s: float  # when the node started (time.time())
    # Every password a client may give (UTF-8): the node's `requirepass` first, then earlier
    # ones still accepted while a new one is rolled out; () when there is none.
    passwords: tuple[bytes, ...] = ()
    auth_failures: int = 0  # AUTH and HELLO ... AUTH refused for a wrong password or user
    # The node's memory limit in bytes (0: none); CONFIG SET maxmemory changes it (the runtime
    # hands it to the node core, whose leader enforces it).
    maxmemory: int = 0
    _slowlog: SlowLog | None = None

    @property
    def slowlog(self) -> SlowLog:
        """SLOWLOG, and its two CONFIG settings: the node's own."""
        if self._slowlog is None:
            self._slowlog = SlowLog()
        return self._slowlog

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT: INFO commandstats and errorstats count from now (a view without
        them has nothing to reset)."""

    def info_sections(self) -> dict[str, list[tuple[str, object]]]:
        raise NotImplementedError

    def role_reply(self) -> list:
        raise NotImplementedError

    def topology(self) -> list[MemberView]:
        """Every member, this node included (see `member_views`)."""
        raise NotImplementedError

    @property
    def requirepass(self) -> bytes:
        """The node's password (empty when it has none): the one it gives peers."""
        return self.passwords[0] if self.passwords else b""

    def password_accepted(self, given: bytes) -> bool:
        """Whether `given` is one of the node's passwords (compare_digest: the time taken
        does not tell how much of a guess was right)."""
        return any(hmac.compare_digest(given, p) for p in self.passwords)

    def client_states(self) -> list[ConnectionState]:
        """CLIENT LIST: every open client connection's state ([]: only the caller's is known,
        as in a test's view)."""
        return []

    def pubsub_subscriptions(self) -> Subscriptions:
        """PUBSUB: this node's subscriptions (the runtime's; none in a test's view)."""
        return Subscriptions()

    def unblock_client(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: end the blocking command connection `client_id` waits in (as if
        its timeout passed, or with an UNBLOCKED error); whether it was waiting in one."""
        return False

    def last_save_s(self) -> int:
        """LASTSAVE: the Unix time in seconds of this node's last save. Redis counts its own
        start as a save until it writes one; the runtime does not yet tell local commands when
        it last wrote a snapshot, so here it is the node's start until a view that knows
        overrides this."""
        return int(self.started_s)


# Commands that change how later replies on the connection look, or end it: they wait until
# every earlier command on the connection has been answered.
BARRIER_COMMANDS = frozenset({b"hello", b"reset", b"quit", b"select", b"client", b"replikv"})

# What a connection may run before it has authenticated on a node with a password (the
# commands Redis flags NO_AUTH); anything else is answered NOAUTH without being looked at.
NO_AUTH_COMMANDS = frozenset({b"auth", b"hello", b"quit", b"reset"})
NOAUTH = ErrorReply("NOAUTH Authentication required.")
_WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."

LocalHandler = Callable[[ConnectionState, NodeView, list[bytes]], object]


def _ping(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) > 2:
        raise CommandError(wrong_arity("ping"))
    return argv[1] if len(argv) == 2 else PONG


def _echo(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) != 2:
        raise CommandError(wrong_arity("echo"))
    return argv[1]


def _hello(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    protocol = conn.protocol
    i = 1
    if len(argv) > 1:
        try:
            protocol = int(argv[1])
        except ValueError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        i = 2
    # As Redis: every option is checked first, then the credentials, and only then does
    # anything change, so a refused HELLO leaves the connection as it was.
    credentials: tuple[bytes, bytes] | None = None
    name: bytes | None = None
    while i < len(argv):
        opt = argv[i].lower()
        if opt == b"auth" and i + 2 < len(argv):
            credentials = (argv[i + 1], argv[i + 2])
            i += 3
            continue
        if opt == b"setname" and i + 1 < len(argv):
            name = argv[i + 1]
            i += 2
            continue
        raise CommandError(f"ERR Syntax error in HELLO option '{argv[i].decode(errors='replace')}'")
    if credentials is not None:
        _authenticate(conn, node, *credentials)
    elif not conn.authenticated:
        raise CommandError("NOAUTH HELLO must be called with the client already authenticated, "
                           "otherwise the HELLO <proto> AUTH <user> <pass> option can be used "
                           "to authenticate the client and select the RESP protocol version "
                           "at the same time")
    if name is not None:
        conn.name = _client_name(name)
    conn.protocol = protocol
    role = node.role_reply()[0]
    return {
        "server": "replikv",
        "version": REDIS_COMPAT_VERSION,
        "proto": protocol,
        "id": conn.client_id,
        "mode": "standalone",
        "role": role,
        "modules": [],
    }


def _client(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) < 2:
        raise CommandError(wrong_arity("client"))
    sub = argv[1].lower()
    if sub == b"setname" and len(argv) == 3:
        conn.name = _client_name(argv[2])
        return OK
    if sub == b"getname" and len(argv) == 2:
        return conn.name or None
    if sub == b"setinfo" and len(argv) == 4:
        attr = argv[2].lower()
        if attr == b"lib-name":
            conn.lib_name = argv[3]
        elif attr == b"lib-ver":
            conn.lib_ver = argv[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{argv[2].decode(errors='replace')}'")
        return OK
    if sub == b"id" and len(argv) == 2:
        return conn.client_id
    if sub == b"info" and len(argv) == 2:
        return _client_line(conn)
    if sub == b"list":
        states = node.client_states() or [conn]
        args = [a.lower() for a in argv[2:]]
        if args[:1] == [b"type"] and len(args) == 2:
            if args[1] not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{argv[3].decode(errors='replace')}'")
            states = states if args[1] == b"normal" else []  # every client here is normal
        elif args[:1] == [b"id"] and len(args) > 1:
            try:
                wanted = {int(a) for a in args[1:]}
            except ValueError:
                raise CommandError("ERR Invalid client ID") from None
            states = [c for c in states if c.client_id in wanted]
        elif args:
            raise CommandError("ERR syntax error")
        return "".join(_client_line(c) for c in sorted(states, key=lambda c: c.client_id))
    if sub in (b"no-evict", b"no-touch") and len(argv) == 3:
        return OK
    if sub == b"unblock" and len(argv) in (3, 4):
        client_id = parse_int64(argv[2])
        if client_id is None:
            raise CommandError("ERR value is not an integer or out of range")
        reason = argv[3].upper() if len(argv) == 4 else b"TIMEOUT"
        if reason not in (b"TIMEOUT", b"ERROR"):
            raise CommandError("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
        return int(node.unblock_client(client_id, reason == b"ERROR"))
    raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                       f"'{argv[1].decode(errors='replace')}'. Try CLIENT HELP.")


def _client_line(conn: ConnectionState) -> str:
    """One line of CLIENT LIST / CLIENT INFO, with the fields Redis has that replikv knows."""
    return (f"id={conn.client_id} addr={conn.addr} name={conn.name.decode(errors='replace')} "
            f"age={int(time.time() - conn.created_s)} db=0 resp={conn.protocol} "
            f"lib-name={conn.lib_name.decode(errors='replace')} "
            f"lib-ver={conn.lib_ver.decode(errors='replace')}\n")


def _select(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) != 2:
        raise CommandError(wrong_arity("select"))
    if argv[1] != b"0":
        raise CommandError("ERR DB index is out of range (replikv has one database, 0)")
    return OK


def _command(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    sub = argv[1].lower() if len(argv) > 1 else b""
    if sub == b"":
        return [_command_entry(name) for name in sorted(_all_command_names())]
    if sub == b"count":
        return len(_all_command_names())
    if sub == b"info":
        names = [a.decode(errors="replace").lower() for a in argv[2:]] or sorted(
            _all_command_names())
        return [_command_entry(n) if n in _all_command_names() else None for n in names]
    if sub == b"docs":
        return {}
    if sub == b"list":
        return sorted(_all_command_names())
    raise CommandError(f"ERR unknown subcommand '{argv[1].decode(errors='replace')}'. "
                       f"Try COMMAND HELP.")


def _all_command_names() -> set[str]:
    return ((set(COMMANDS) - {"exec-reads", "watch-point"}) | {n.decode() for n in LOCAL_COMMANDS}
            | set(LOCAL_ARITY))


# Commands the node answers itself, and the transaction commands the connection takes (EXEC's
# table entry is its internal form: a client sends it bare). Arity as in Redis's command table:
# it counts the name; negative means "at least".
LOCAL_ARITY = {"ping": -1, "echo": 2, "hello": -1, "client": -2, "select": 2, "command": -1,
               "info": -1, "role": 1, "quit": -1, "reset": 1, "time": 1, "lastsave": 1,
               "config": -2, "auth": -2, "replikv": -2, "wait": 3, "slowlog": -2,
               "multi": 1, "exec": 1, "discard": 1, "watch": -2, "unwatch": 1,
               "pubsub": -2, "subscribe": -2, "unsubscribe": -1, "psubscribe": -2,
               "punsubscribe": -1, "ssubscribe": -2, "sunsubscribe": -1,
               # SCRIPT is answered by the node core (its script cache); listed for COMMAND.
               "script": -2}
# COMMAND's flags for the connection's pub/sub commands, as Redis 7 lists them (the others
# local commands answer show "fast").
_LOCAL_FLAGS: dict[str, tuple[str, ...]] = {
    name: ("pubsub", "noscript", "loading", "stale")
    for name in ("subscribe", "unsubscribe", "psubscribe", "punsubscribe",
                 "ssubscribe", "sunsubscribe")}
_LOCAL_FLAGS["pubsub"] = ("loading", "stale")


def check_local_arity(argv: list[bytes]) -> None:
    """CommandError, with Redis's text, if a command in LOCAL_ARITY has the wrong number of
    arguments; nothing for any other command."""
    name = argv[0].lower().decode("latin-1")
    arity = LOCAL_ARITY.get(name)
    if arity is not None and ((arity > 0 and len(argv) != arity) or len(argv) < -arity):
        raise CommandError(wrong_arity(name))


def _command_entry(name: str) -> list:
    spec = COMMANDS.get(name)
    if spec is None or name in LOCAL_ARITY:
        flags = _LOCAL_FLAGS.get(name, ("fast",))
        return [name, LOCAL_ARITY.get(name, -1), [Status(f) for f in flags], 0, 0, 0, [], [], [],
                []]
    return [name, spec.arity, [Status(f) for f in spec.flags], spec.first_key, spec.last_key,
            spec.key_step, [], [], [], []]


# INFO sections that INFO and INFO default leave out, as Redis does (ask for them by name, or
# INFO all / everything).
NOT_DEFAULT_INFO = frozenset({"commandstats"})


def _info(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    sections = node.info_sections()
    wanted = [a.decode(errors="replace").lower() for a in argv[1:]]
    if any(w in ("all", "everything") for w in wanted):
        names = list(sections)
    elif not wanted or "default" in wanted:
        names = [name for name in sections if name not in NOT_DEFAULT_INFO]
    else:
        names = [w for w in wanted if w in sections]
    out = []
    for name in names:
        out.append(f"# {name.capitalize()}\r\n")
        for key, value in sections[name]:
            out.append(f"{key}:{value}\r\n")
        out.append("\r\n")
    return "".join(out).rstrip("\r\n") + "\r\n" if out else ""


def _role(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    return node.role_reply()


def _quit(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    conn.closing = True
    return OK


def _reset(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    conn.protocol = 2
    conn.name = b""
    conn.options = conn.default_options
    conn.authenticated = not node.requirepass  # RESET also ends the authentication, as in Redis
    return Status("RESET")


def _config_int(name: bytes, raw: bytes, lowest: int) -> int:
    """A CONFIG SET integer from `lowest` up, with Redis's errors."""
    try:
        value = int(raw)
    except ValueError:
        value = None
    text = name.decode()
    if value is None or not -(1 << 63) <= value < (1 << 63):
        raise CommandError(f"ERR CONFIG SET failed (possibly related to argument '{text}') - "
                           "argument couldn't be parsed into an integer")
    if value < lowest:
        raise CommandError(f"ERR CONFIG SET failed (possibly related to argument '{text}') - "
                           f"argument must be between {lowest} and 9223372036854775807 "
                           "inclusive")
    return value


SLOWLOG_HELP = (
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
)


def _slowlog(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    """SLOWLOG GET [count] | LEN | RESET | HELP: this node's (replikv.server.slowlog)."""
    sub = argv[1].lower()
    if sub == b"get" and len(argv) <= 3:
        count = 10
        if len(argv) == 3:
            try:
                count = int(argv[2])
            except ValueError:
                count = -2
            if count < -1:
                raise CommandError("ERR count should be greater than or equal to -1")
        return node.slowlog.newest(count)
    if sub in (b"len", b"reset", b"help"):
        if len(argv) != 2:
            raise CommandError(wrong_arity(f"slowlog|{sub.decode()}"))
        if sub == b"len":
            return len(node.slowlog)
        if sub == b"reset":
            node.slowlog.reset()
            return OK
        return [Status(line) for line in SLOWLOG_HELP]
    if sub == b"get":
        raise CommandError("ERR unknown subcommand or wrong number of arguments for 'GET'. "
                           "Try SLOWLOG HELP.")
    raise CommandError(f"ERR unknown subcommand '{argv[1].decode(errors='replace')[:128]}'. "
                       "Try SLOWLOG HELP.")


def _time(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    now_us = time.time_ns() // 1000
    return [str(now_us // 1_000_000).encode(), str(now_us % 1_000_000).encode()]


def _lastsave(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    return node.last_save_s()


def _config(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) < 2:
        raise CommandError(wrong_arity("config"))
    sub = argv[1].lower()
    if sub == b"get":
        if len(argv) < 3:
            raise CommandError(wrong_arity("config|get"))
        # redis-benchmark, RedisInsight and other tools read these; answer with what is true
        # here. Parameters are glob patterns, as in Redis 7 (CONFIG GET maxmemory*).
        known = {b"save": b"", b"appendonly": b"yes", b"databases": b"1",
                 b"maxmemory": str(node.maxmemory).encode(),
                 b"maxmemory-policy": MAXMEMORY_POLICY.encode(),
                 b"slowlog-log-slower-than": str(node.slowlog.slower_than_us).encode(),
                 b"slowlog-max-len": str(node.slowlog.max_len).encode()}
        found: dict[bytes, bytes] = {}
        for pattern in argv[2:]:
            matches = compile_glob(pattern.lower())
            found.update((name, value) for name, value in known.items() if matches(name))
        return found
    if sub == b"set":
        if len(argv) < 4 or len(argv) % 2:
            raise CommandError(wrong_arity("config|set"))
        pairs = [(argv[i].lower(), argv[i + 1]) for i in range(2, len(argv), 2)]
        limit = node.maxmemory
        slower_than, max_len = node.slowlog.slower_than_us, node.slowlog.max_len
        for name, value in pairs:  # all checked before any is set, as in Redis
            if name == b"maxmemory":
                try:
                    limit = parse_memory(value.decode("utf-8", "replace"), "maxmemory")
                except ConfigError as e:
                    raise CommandError(f"ERR CONFIG SET failed (possibly related to argument "
                                       f"'maxmemory') - {e}") from None
            elif name == b"maxmemory-policy":
                try:
                    check_maxmemory_policy(value.decode("utf-8", "replace"))
                except ConfigError as e:
                    raise CommandError(f"ERR CONFIG SET failed (possibly related to argument "
                                       f"'maxmemory-policy') - {e}") from None
            elif name == b"slowlog-log-slower-than":
                slower_than = _config_int(name, value, -1)
            elif name == b"slowlog-max-len":
                max_len = _config_int(name, value, 0)
            else:
                raise CommandError(
                    f"ERR CONFIG SET is not supported for '{name.decode(errors='replace')}': "
                    "replikv takes only maxmemory, maxmemory-policy, slowlog-log-slower-than "
                    "and slowlog-max-len at run time; other settings are given to `replikv "
                    "node` (flags or --config)")
        node.maxmemory = limit
        node.slowlog.slower_than_us = slower_than
        node.slowlog.set_max_len(max_len)
        return OK
    if sub == b"resetstat":
        if len(argv) != 2:
            raise CommandError(wrong_arity("config|resetstat"))
        node.reset_stats()
        return OK
    if sub == b"rewrite":
        raise CommandError("ERR CONFIG REWRITE is not supported: replikv settings are given "
                           "to `replikv node` (flags or --config)")
    raise CommandError(f"ERR unknown subcommand '{argv[1].decode(errors='replace')}'.")


def _client_name(name: bytes) -> bytes:
    if any(c <= 32 or c > 126 for c in name):
        raise CommandError("ERR Client names cannot contain spaces, newlines or special "
                           "characters.")
    return name


def _authenticate(conn: ConnectionState, node: NodeView, username: bytes,
                  password: bytes) -> None:
    """Authenticate `conn` as Redis's one user, `default`: with the node's password, or, on a
    node without one, with any password (as a Redis with no password set). A refusal leaves
    the connection as it was (authenticated or not) and is counted."""
    if username != b"default" or (node.requirepass and not node.password_accepted(password)):
        node.auth_failures += 1
        raise CommandError(_WRONGPASS)
    conn.authenticated = True


def _auth(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) == 3:  # AUTH username password
        _authenticate(conn, node, argv[1], argv[2])
        return OK
    if len(argv) == 2:
        if node.requirepass:
            _authenticate(conn, node, b"default", argv[1])
            return OK
        return ErrorReply("ERR AUTH <password> called without any password configured for the "
                          "default user. Are you sure your configuration is correct?")
    if len(argv) < 2:
        raise CommandError(wrong_arity("auth"))
    raise CommandError("ERR syntax error")


REPLIKV_HELP = [
    "REPLIKV <subcommand> [<arg> ...]. Subcommands are:",
    "WRITECONCERN 1|majority|all [WTIMEOUT <ms>]",
    "    When this connection's writes are acknowledged: durable on the primary (1),",
    "    committed on a majority (majority, the default) or durable on every voter (all).",
    "READPREF primary|primaryPreferred|secondary|secondaryPreferred|nearest [MAXSTALENESS <ms>]",
    "    Which node executes this connection's reads; MAXSTALENESS bounds a replica's lag.",
    "CONSISTENCY linearizable|lease|local",
    "    What a read waits for: a quorum round (linearizable), the leader's lease (lease),",
    "    nothing: this node's applied state, possibly stale (local).",
    "SESSION [<id>|OFF]",
    "    Set this connection's session id (1 to 64 bytes) for retryable writes; without an",
    "    id, or with OFF, clear it.",
    "OPTIONS",
    "    The connection's current settings.",
    "WITH <option> <value> [<option> <value> ...] <command> [<arg> ...]",
    "    Run one command with W, WTIMEOUT, READPREF, MAXSTALENESS or CONSISTENCY changed,",
    "    or a write with SEQ <n>: its sequence number in the connection's session. A write",
    "    retried with the same session and SEQ is applied once; a retry gets the first reply.",
    "TOPOLOGY",
    "    The members: id, role, voter, client and admin address; term and applied index of",
    "    the node answering.",
    "MEMBER ADD <id> PEER <host:port> [CLIENT <host:port>] [ADMIN <host:port>]",
    "MEMBER PROMOTE|DEMOTE|REMOVE <id>",
    "    Change the membership (one change at a time, answered once committed): add a",
    "    standby, make a standby a voter or a voter a standby, remove a member.",
    "SWITCHOVER [<id>]",
    "    Hand leadership to a voter (default: the most up to date) once it has caught up.",
    "HELP",
    "    Print this help.",
]


def _replikv(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    if len(argv) < 2:
        raise CommandError(wrong_arity("replikv"))
    sub = argv[1].upper()
    args = argv[2:]
    options = conn.options
    if sub == b"WRITECONCERN" and len(args) in (1, 3):
        options = apply_option(options, b"W", args[0])
        if len(args) == 3:
            if args[1].upper() != b"WTIMEOUT":
                raise CommandError("ERR syntax error, expected WTIMEOUT <ms>")
            options = apply_option(options, b"WTIMEOUT", args[2])
    elif sub == b"READPREF" and len(args) in (1, 3):
        options = apply_option(options, b"READPREF", args[0])
        staleness = b"0"
        if len(args) == 3:
            if args[1].upper() != b"MAXSTALENESS":
                raise CommandError("ERR syntax error, expected MAXSTALENESS <ms>")
            staleness = args[2]
        options = apply_option(options, b"MAXSTALENESS", staleness)
    elif sub == b"CONSISTENCY" and len(args) == 1:
        options = apply_option(options, b"CONSISTENCY", args[0])
    elif sub == b"SESSION" and len(args) <= 1:
        if not args or args[0].upper() == b"OFF":
            options = replace(options, session=None)
        else:
            options = replace(options, session=parse_session_arg(args[0]))
    elif sub == b"TOPOLOGY" and not args:
        try:
            members = node.topology()
        except NotImplementedError:
            raise CommandError("ERR REPLIKV TOPOLOGY is not available on this node") from None
        return [m.as_reply() for m in members]
    elif sub == b"OPTIONS" and not args:
        return describe_options(conn.options)
    elif sub == b"HELP" and not args:
        return [Status(line) for line in REPLIKV_HELP]
    elif sub == b"WITH":
        raise CommandError("ERR REPLIKV WITH needs options and a command, e.g. "
                           "REPLIKV WITH W 1 SET key value")
    else:
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{argv[1].decode(errors='replace')[:32]}'. Try REPLIKV HELP.")
    conn.options = interned(options)  # shared with connections of the same settings
    return OK


def describe_options(options: RequestOptions) -> dict:
    """REPLIKV OPTIONS: the connection's settings; "session" only while one is set."""
    out: dict = {
        "w": options.w,
        "wtimeout_ms": options.wtimeout_ms or 0,
        "readpref": options.read_preference,
        "maxstaleness_ms": options.max_staleness_ms or 0,
        "consistency": options.read_consistency,
    }
    if options.session is not None:
        out["session"] = options.session
    return out


def parse_replikv_with(options: RequestOptions, argv: list[bytes]) -> tuple[RequestOptions,
                                                                             list[bytes]]:
    """`REPLIKV WITH <option> <value> ... <command ...>` -> (options for that command, the
    command). Raises CommandError on a bad option or a missing command."""
    i = 2
    while i < len(argv) and argv[i].upper() in OPTION_NAMES:
        if i + 1 >= len(argv):
            raise CommandError(f"ERR option {argv[i].decode(errors='replace')} needs a value")
        options = apply_option(options, argv[i], argv[i + 1])
        i += 2
    if i >= len(argv):
        raise CommandError("ERR REPLIKV WITH needs a command after its options, e.g. "
                           "REPLIKV WITH W 1 SET key value")
    if argv[i].lower() in LOCAL_COMMANDS:
        raise CommandError(f"ERR REPLIKV WITH applies to data commands and WAIT, not to "
                           f"'{argv[i].decode(errors='replace')[:32]}'")
    if options.seq is not None:
        if options.session is None:
            raise CommandError("ERR SEQ needs a session: send REPLIKV SESSION <id> on this "
                               "connection first")
        spec = lookup(argv[i])
        # An unknown command keeps its own error (unknown command) from the node core.
        if (spec is not None and spec.kind != "write") or argv[i].lower() == b"wait":
            raise CommandError(f"ERR SEQ applies to writes only, and "
                               f"'{argv[i].decode(errors='replace')[:32]}' is not a write")
    return options, argv[i:]


PUBSUB_HELP = [
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
]


def _pubsub(conn: ConnectionState, node: NodeView, argv: list[bytes]) -> object:
    """PUBSUB: this node's subscriptions, as Redis Cluster answers for one node (a
    subscriber is a connection to one node; subscriptions are not replicated)."""
    sub = argv[1].lower()
    subs = node.pubsub_subscriptions()
    if sub == b"help" and len(argv) == 2:
        return [Status(line) for line in PUBSUB_HELP]
    if sub in (b"channels", b"shardchannels") and len(argv) <= 3:
        return subs.channel_names(argv[2] if len(argv) == 3 else None,
                                  sharded=sub == b"shardchannels")
    if sub in (b"numsub", b"shardnumsub"):
        out: list[object] = []
        for channel in argv[2:]:
            out += [channel, subs.numsub(channel, sharded=sub == b"shardnumsub")]
        return out
    if sub == b"numpat" and len(argv) == 2:
        return subs.numpat()
    if sub in (b"help", b"channels", b"shardchannels", b"numpat"):
        raise CommandError(wrong_arity(f"pubsub|{sub.decode()}"))
    raise CommandError(f"ERR unknown subcommand '{argv[1].decode(errors='replace')[:128]}'. "
                       "Try PUBSUB HELP.")


LOCAL_COMMANDS: dict[bytes, LocalHandler] = {
    b"ping": _ping, b"echo": _echo, b"hello": _hello, b"client": _client, b"select": _select,
    b"command": _command, b"info": _info, b"role": _role, b"quit": _quit, b"reset": _reset,
    b"time": _time, b"lastsave": _lastsave, b"config": _config, b"auth": _auth,
    b"replikv": _replikv, b"pubsub": _pubsub, b"slowlog": _slowlog,
}


def run_local(handler: LocalHandler, conn: ConnectionState, node: NodeView,
              argv: list[bytes]) -> object:
    """The reply of the local command `argv` (its arity checked first), errors included."""
    try:
        check_local_arity(argv)
        return handler(conn, node, argv)
    except CommandError as e:
        return e.reply()


__all__ = [
    "BARRIER_COMMANDS",
    "LOCAL_ARITY",
    "LOCAL_COMMANDS",
    "MEMBER_ROLES",
    "NOAUTH",
    "NO_AUTH_COMMANDS",
    "REDIS_COMPAT_VERSION",
    "ConnectionState",
    "MemberView",
    "NodeView",
    "__version__",
    "check_local_arity",
    "describe_options",
    "member_views",
    "parse_replikv_with",
    "run_local",
]
