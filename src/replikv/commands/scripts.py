"""EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT: Lua scripts, as Redis 7.0 runs them.

A script runs inside the command that carries it, so it is a command like any other to the
rest of replikv: EVAL is a write (the leader runs it when it proposes it, inside the state's
recorded execution, so every write of its redis.calls is in the effects and the undo record,
and nothing else runs between its commands); EVAL_RO is a read, and refuses writes. The Lua
side (sandbox, conversions, limits) is `replikv.scripting`; here is what a script may call and
how its calls reach the state.

The script cache is node-local, as in Redis 7 (not replicated, not persisted): `ScriptCache`
holds the scripts SCRIPT LOAD and EVAL gave the node, by SHA1, and the node resolves EVALSHA
into EVAL of the body before it routes the command, so a follower forwards the body and the
leader needs no cache entry. The log never holds EVALSHA: a replica that never saw the script
applies it all the same.

In active replication every replica runs the script (EVAL with the leader's time and seed is
the entry); `replikv.scripting` makes that deterministic. A script may write keys it did not
declare in KEYS, as in Redis; so the entry of an active-mode EVAL counts as changing every key
for the leader's WATCH check (replikv.entries).

Functions (FCALL: replikv.commands.functions) call commands through the same `script_dispatch`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands.strings import parse_int64
from replikv.replies import CommandError, ErrorReply, Status, wrong_arity
from replikv.scripting import ScriptBudget, run_script, sha1hex

if TYPE_CHECKING:
    from replikv.state import KVState

ERR_NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."
ERR_NOT_ALLOWED = "ERR This Redis command is not allowed from script"
ERR_UNKNOWN_IN_SCRIPT = "ERR Unknown Redis command called from script"
ERR_ARGS_IN_SCRIPT = "ERR Wrong number of args calling Redis command from script"
ERR_READ_ONLY = "ERR Write commands are not allowed from read-only scripts."
EVAL_NAMES = frozenset({b"eval", b"evalsha", b"eval_ro", b"evalsha_ro"})
# Commands Redis refuses inside a script (flagged noscript, or that block, or that change the
# connection), and replikv's own: redis.call answers ERR_NOT_ALLOWED for them. The internal
# forms (a transaction's EXEC, EXEC-READS, WATCH-POINT) are among them.
NOT_IN_SCRIPT = frozenset({
    b"multi", b"exec", b"discard", b"watch", b"unwatch", b"exec-reads", b"watch-point",
    *EVAL_NAMES, b"script", b"fcall", b"fcall_ro", b"function",
    b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"ssubscribe",
    b"sunsubscribe", b"monitor", b"sync", b"psync", b"wait", b"waitaof",
    b"blpop", b"brpop", b"blmove", b"brpoplpush", b"blmpop", b"bzpopmin", b"bzpopmax",
    b"bzmpop", b"xread", b"xreadgroup",
    b"hello", b"auth", b"client", b"config", b"info", b"role", b"command", b"quit", b"reset",
    b"lastsave", b"replikv", b"shutdown", b"save", b"bgsave", b"debug",
})
SHEBANG_FLAGS = frozenset({b"no-writes", b"allow-oom", b"allow-stale", b"no-cluster",
                           b"allow-cross-slot-keys"})
SCRIPT_SUBCOMMANDS = {"load": 3, "exists": -3, "flush": -2, "kill": 2, "help": 2, "debug": 3}
SCRIPT_HELP = (
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache (this node's: the cache is not replicated).",
    "KILL",
    "    Kill the currently executing Lua script (replikv: scripts are bounded by",
    "    script_max_instructions, so none is ever running when this is read).",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
)


@dataclass(frozen=True, slots=True)
class EvalArgs:
    body: bytes
    keys: list[bytes]
    args: list[bytes]
    read_only: bool  # EVAL_RO, or a `#!lua flags=no-writes` script


@dataclass(frozen=True, slots=True)
class ScriptContext:
    """Set on the state (KVState.script_context) only by the node that decides a script's
    outcome: the leader proposing it, or a node serving EVAL_RO. `refusal` says why a command
    Redis flags denyoom is refused now (maxmemory, a nearly full disk), or None;
    `disk_refusal` the same for a nearly full disk alone (what an allow-oom function obeys)."""

    budget: ScriptBudget
    refusal: Callable[[], ErrorReply | None] | None = None
    disk_refusal: Callable[[], ErrorReply | None] | None = None


def _numkeys(argv: list[bytes]) -> int:
    numkeys = parse_int64(argv[2])
    if numkeys is None:
        raise CommandError("ERR value is not an integer or out of range")
    if numkeys < 0:
        raise CommandError("ERR Number of keys can't be negative")
    if numkeys > len(argv) - 3:
        raise CommandError("ERR Number of keys can't be greater than number of args")
    return numkeys


def _shebang_read_only(body: bytes) -> bool:
    """Whether a `#!lua` first line declares the script no-writes; CommandError, with Redis's
    texts, for a first line it does not accept. A body without a shebang: False."""
    if not body.startswith(b"#!"):
        return False
    end = body.find(b"\n")
    if end < 0:
        raise CommandError("ERR Invalid script shebang")
    parts = body[:end].split(b" ")
    if parts[0] != b"#!lua":
        raise CommandError("ERR Unexpected engine in script shebang: "
                           + parts[0].decode("utf-8", "replace"))
    flags: set[bytes] = set()
    for part in parts[1:]:
        if not part:
            continue
        if not part.startswith(b"flags="):
            raise CommandError("ERR Unknown lua shebang option: "
                               + part.decode("utf-8", "replace"))
        for flag in part[6:].split(b","):
            if flag and flag not in SHEBANG_FLAGS:
                raise CommandError("ERR Unexpected flag in script shebang: "
                                   + flag.decode("utf-8", "replace"))
            flags.add(flag)
    return b"no-writes" in flags


def parse_eval(argv: list[bytes]) -> EvalArgs:
    numkeys = _numkeys(argv)
    read_only = argv[0].lower().endswith(b"_ro")
    if _shebang_read_only(argv[1]):
        read_only = True
    return EvalArgs(argv[1], argv[3:3 + numkeys], argv[3 + numkeys:], read_only)


def parse_evalsha(argv: list[bytes]) -> EvalArgs:
    """EVALSHA reaches the state only if no node resolved it (the node core resolves it into
    EVAL of the body before routing): it then answers NOSCRIPT when run."""
    numkeys = _numkeys(argv)
    return EvalArgs(b"", argv[3:3 + numkeys], argv[3 + numkeys:], True)


def eval_keys(argv: list[bytes]) -> list[bytes]:
    numkeys = parse_int64(argv[2]) if len(argv) > 2 else None
    if numkeys is None or numkeys < 1:
        return []
    return argv[3:3 + numkeys]


def run_evalsha(state: KVState, args: EvalArgs, time_ms: int) -> object:
    raise CommandError(ERR_NOSCRIPT)


def run_eval(state: KVState, args: EvalArgs, time_ms: int) -> object:
    """Run the script against `state` at `time_ms`: its redis.calls are commands run as the
    state runs any (inside the caller's recorded execution, if any), the n-th with the
    command's seed + n. ScriptAborted (replikv.scripting) if a limit stopped it."""
    context = state.script_context
    return run_script(args.body, args.keys, args.args,
                      script_dispatch(state, args.read_only, time_ms), seed=state.command_seed,
                      sha=sha1hex(args.body),
                      budget=context.budget if context is not None else None)


def script_dispatch(state: KVState, read_only: bool, time_ms: int, allow_oom: bool = False
                    ) -> Callable[[list[bytes]], object]:
    """What a script's (or a function's: replikv.commands.functions) redis.call does: the
    command checked as Redis checks a script's call, then run against `state` at `time_ms`,
    the n-th with the command's seed + n. `read_only`: a script that may not write;
    `allow_oom`: a function flagged allow-oom, whose calls maxmemory does not refuse (Redis's
    flag; a nearly full disk still does)."""
    context = state.script_context
    refusal = None if context is None else (context.disk_refusal if allow_oom
                                            else context.refusal)
    seed = state.command_seed
    calls = 0

    def dispatch(argv: list[bytes]) -> object:
        nonlocal calls
        from replikv.commands import check_arity, lookup  # the table imports this module

        name = argv[0].lower()
        if name in NOT_IN_SCRIPT:
            return ErrorReply(ERR_NOT_ALLOWED)
        spec = lookup(argv[0])
        if spec is None:
            return _script_local(name, argv, time_ms)
        try:
            check_arity(spec, argv)
        except CommandError as e:
            if e.message.startswith("ERR wrong number of arguments"):
                return ErrorReply(ERR_ARGS_IN_SCRIPT)
            return ErrorReply(ERR_UNKNOWN_IN_SCRIPT)
        if spec.kind == "write" and read_only:
            return ErrorReply(ERR_READ_ONLY)
        from replikv.features import script_call_level  # (it imports the command table)

        level = script_call_level(argv)
        if level > state.feature_level:
            # Answered as a replikv that does not know the command answers, on every replica
            # alike (the cluster's level is replicated state); the leader raises the level
            # and runs the script again when it can (NodeCore, script_level_wanted).
            if level > state.script_level_wanted[0]:
                state.script_level_wanted = (level, argv[0])
            return ErrorReply(ERR_UNKNOWN_IN_SCRIPT)
        if refusal is not None and "denyoom" in spec.flags:
            refused = refusal()
            if refused is not None:
                return refused
        calls += 1
        return state.run_for_script(argv, time_ms, seed + calls if seed else 0)

    return dispatch


def _script_local(name: bytes, argv: list[bytes], time_ms: int) -> object:
    """The connection and server commands a script may call, answered from the command's
    time (TIME is the entry's time, the same on every replica); any other name is unknown."""
    if name == b"ping" and len(argv) <= 2:
        return argv[1] if len(argv) == 2 else Status("PONG")
    if name == b"echo" and len(argv) == 2:
        return argv[1]
    if name == b"time" and len(argv) == 1:
        return [b"%d" % (time_ms // 1000), b"%d" % (time_ms % 1000 * 1000)]
    if name == b"select" and len(argv) == 2:
        return Status("OK") if argv[1] == b"0" else ErrorReply(
            "ERR DB index is out of range (replikv has one database, 0)")
    if name in (b"ping", b"echo", b"time", b"select"):
        return ErrorReply(ERR_ARGS_IN_SCRIPT)
    return ErrorReply(ERR_UNKNOWN_IN_SCRIPT)


class ScriptCache:
    """A node's scripts by SHA1 (lowercase hex), least recently used first, bounded by count
    and by source bytes: past either bound the least recently used go (a client then gets
    NOSCRIPT and loads it again, as redis-py's Script does). Not replicated, not persisted."""

    def __init__(self, max_scripts: int, max_bytes: int, max_body_bytes: int) -> None:
        self.max_scripts = max_scripts
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes
        self._scripts: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._scripts)

    def too_large(self, body: bytes) -> ErrorReply | None:
        if len(body) > self.max_body_bytes:
            return ErrorReply(f"ERR script too large (limit script_max_body_bytes, "
                              f"{self.max_body_bytes} bytes)")
        return None

    def add(self, body: bytes) -> bytes:
        """Cache `body` (the caller checked its size); its SHA1 hex."""
        sha = sha1hex(body).encode()
        scripts = self._scripts
        if sha in scripts:
            scripts.move_to_end(sha)
            return sha
        scripts[sha] = body
        self._bytes += len(body)
        while len(scripts) > self.max_scripts or self._bytes > self.max_bytes:
            _old, gone = scripts.popitem(last=False)
            self._bytes -= len(gone)
            self.evicted += 1
        return sha

    def get(self, sha: bytes) -> bytes | None:
        sha = sha.lower()
        body = self._scripts.get(sha)
        if body is not None:
            self._scripts.move_to_end(sha)
        return body

    def resolve(self, argv: list[bytes]) -> list[bytes] | ErrorReply:
        """EVALSHA / EVALSHA_RO as EVAL / EVAL_RO of the cached body, or NOSCRIPT."""
        if len(argv) < 3:
            return ErrorReply(wrong_arity(argv[0].lower().decode("latin-1")))
        body = self.get(argv[1]) if len(argv[1]) == 40 else None
        if body is None:
            return ErrorReply(ERR_NOSCRIPT)
        name = b"EVAL_RO" if argv[0].lower() == b"evalsha_ro" else b"EVAL"
        return [name, body, *argv[2:]]

    def command(self, argv: list[bytes]) -> object:
        """SCRIPT <subcommand> ... on this node's cache: the reply."""
        if len(argv) < 2:
            return ErrorReply(wrong_arity("script"))
        sub = argv[1].lower().decode("latin-1") if len(argv[1]) <= 16 else ""
        arity = SCRIPT_SUBCOMMANDS.get(sub)
        if arity is None:
            quoted = argv[1][:128].decode("utf-8", "replace")
            return ErrorReply(f"ERR unknown subcommand '{quoted}'. Try SCRIPT HELP."
                              .replace("\r", " ").replace("\n", " "))
        if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
            return ErrorReply(wrong_arity(f"script|{sub}"))
        if sub == "load":
            return self.too_large(argv[2]) or self.add(argv[2])
        if sub == "exists":
            return [int(len(sha) == 40 and sha.lower() in self._scripts) for sha in argv[2:]]
        if sub == "flush":
            if len(argv) > 3 or (len(argv) == 3 and argv[2].upper() not in (b"SYNC", b"ASYNC")):
                return ErrorReply("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
            self._scripts.clear()
            self._bytes = 0
            return Status("OK")
        if sub == "kill":
            return ErrorReply("NOTBUSY No scripts in execution right now.")
        if sub == "debug":
            return ErrorReply("ERR SCRIPT DEBUG is not supported by replikv (no Lua debugger)")
        return [Status(line) for line in SCRIPT_HELP]
