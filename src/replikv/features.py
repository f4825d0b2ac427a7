"""Feature levels: a cluster of mixed versions never logs an entry one of its members cannot apply.

Every replica applies every committed entry, so a rolling upgrade (one node at a time, the
others serving) has a window in which a newer leader could log what an older member cannot
read: that member would stop on it, and with a second one lost the cluster with it. MongoDB
has its featureCompatibilityVersion and etcd its cluster version for this; replikv has a
feature level, one integer that grows whenever a release adds a kind of log entry or effect.

- Each node advertises the level it can apply, FEATURE_LEVEL, in its peer handshake
  (HANDSHAKE_KEY in the handshake's info map; a node from before feature levels sends none and
  is taken to be at FEATURE_LEVEL_LEGACY).
- The cluster's level is replicated state (`KVState.feature_level`, carried by snapshots): it
  starts at FEATURE_LEVEL_LEGACY and only ever rises, by a log entry the leader proposes
  (`ENTRY_FEATURES` in replikv.entries).
- A write that needs a higher level than the cluster's (`needed_level`) makes the leader raise
  the level first, in the same log, but only when every member (voters and standbys) has told
  it, since it started, that it can apply that level. Otherwise the write is refused with an
  error that names the member holding it back and what to do. Once raised, the level stays,
  so a member that is merely down does not hold the feature back again.
- A node that reads a level above its own (in its log or in a snapshot) stops and says to run
  a newer replikv on it: applying on would make it diverge.

What each level adds is said beside its constant below, and the README's "Upgrading" section tells operators what
to expect. The rule for a release: a new kind of log entry or of effect gets a new level and
its commands go in COMMAND_LEVELS. In active replication the log holds commands, so there a
new command, or a new option of one, is a new kind of entry too.
"""

from __future__ import annotations

from replikv.commands.transactions import is_pipeline, split_exec
from replikv.replies import ErrorReply

# What a node that advertises no level can apply: everything replikv logged before feature
# levels existed (strings, sets, hashes, lists, sorted sets, transactions, pipeline batches).
FEATURE_LEVEL_LEGACY = 1
FEATURE_LEVEL = 8  # what this replikv can apply
FEATURE_LEVEL_MAX = 1 << 16  # a level read from a peer or a file above this is garbage
HANDSHAKE_KEY = "features"  # the peer handshake's info key (its values are strings)

# What each level brings (the README's table says the same). Level 1: strings, sets, hashes,
# lists, sorted sets, transactions and pipeline batches.
PUBLISH_LEVEL = 2  # pub/sub: entries carrying PUBLISH and SPUBLISH messages (a script's too)
SCRIPT_LEVEL = 3  # scripts in active replication: entries carrying EVAL, which replicas run
# The blocking list and sorted set commands in active replication: entries carrying BLPOP,
# BZPOPMIN and the others (each an attempt to pop; in passive mode their effects are LPOP's).
BLOCKING_LEVEL = 4
# HyperLogLog: PFADD and PFMERGE, whose passive entries carry string splices
# (EFFECT_STRING_SPLICE: the few bytes of a 12 KB HLL a PFADD changed) and whose active entries
# are commands older replikv does not know; PFCOUNT too in active mode (the log holds it only
# inside a transaction or a script).
HLL_LEVEL = 5

# Streams: a new kind of value (in snapshots too) and of effect (EFFECT_STREAM_*), and, in
# active replication, the stream commands that write. A script may call no stream command
# below this level (KVState.run_for_script), since an older replica would not know it.
STREAM_LEVEL = 6
_STREAM_WRITES = (b"xadd", b"xdel", b"xtrim", b"xsetid", b"xreadgroup", b"xack", b"xclaim",
                  b"xautoclaim", b"xgroup")

# SORT and SORT_RO in active replication: entries carrying them, which every replica runs (in
# passive mode a SORT's entry holds a list's replace or a delete, of level 1); SORT_RO reaches
# the log inside a transaction or a script. A script may call neither below this level
# (script_call_level).
SORT_LEVEL = 7
# Geo: sorted sets of geohashes (commands/geo.py). In passive replication GEOADD's and the STORE
# forms' effects are ZADD's and ZRANGESTORE's, of level 1; but the commands that answer
# coordinates answer a new kind of reply value (DoubleText, GEOPOS's 17-decimal text), which a
# session's entry carries (GEORADIUS writes; the others inside a transaction) and an older
# replikv cannot decode: those need this level in both modes. In active replication every geo
# command is a command older replikv does not know (the reads reach the log inside a
# transaction or a script, as PFCOUNT does), so a script may call none below this level
# (script_call_level: the call is answered as unknown and the leader raises the level).
GEO_LEVEL = 7
_GEO_REPLYING_COORDINATES = (b"geopos", b"georadius", b"georadiusbymember", b"georadius_ro",
                             b"georadiusbymember_ro", b"geosearch")
_GEO_COMMANDS = (*_GEO_REPLYING_COORDINATES, b"geoadd", b"geohash", b"geodist",
                 b"geosearchstore")

# Functions (commands/functions.py): libraries as replicated state, a new kind of effect
# (EFFECT_LIBRARY_*) and of snapshot item (ITEM_LIBRARY), so FUNCTION needs this level in both
# modes; in active replication FCALL and FCALL_RO are commands older replikv does not know (in
# passive mode FCALL's entry holds its writes' effects, of older kinds, and a function exists
# only once a FUNCTION LOAD raised the level). A script may call neither (NOT_IN_SCRIPT).
FUNCTION_LEVEL = 8

# Commands whose log entries need a level above FEATURE_LEVEL_LEGACY: lowercase name -> level.
COMMAND_LEVELS: dict[bytes, int] = {b"publish": PUBLISH_LEVEL, b"spublish": PUBLISH_LEVEL,
                                    b"pfadd": HLL_LEVEL, b"pfmerge": HLL_LEVEL,
                                    **dict.fromkeys(_STREAM_WRITES, STREAM_LEVEL),
                                    **dict.fromkeys(_GEO_REPLYING_COORDINATES, GEO_LEVEL),
                                    b"function": FUNCTION_LEVEL}
# Commands whose entries need a level only in active replication, where the log holds the
# command itself (in passive mode a script's entry holds its writes' effects, of older kinds;
# the node core checks a script that published after it ran).
ACTIVE_COMMAND_LEVELS: dict[bytes, int] = {
    b"eval": SCRIPT_LEVEL, b"evalsha": SCRIPT_LEVEL, b"pfcount": HLL_LEVEL,
    b"sort": SORT_LEVEL, b"sort_ro": SORT_LEVEL,
    b"fcall": FUNCTION_LEVEL, b"fcall_ro": FUNCTION_LEVEL,
    **dict.fromkeys((b"blpop", b"brpop", b"blmove", b"brpoplpush", b"blmpop", b"bzpopmin",
                     b"bzpopmax", b"bzmpop"), BLOCKING_LEVEL),
    **dict.fromkeys(_GEO_COMMANDS, GEO_LEVEL),
}


def command_level(argv: list[bytes] | tuple[bytes, ...], active: bool = False) -> int:
    """The level a member needs to apply the entry of this one command (not an EXEC form), in
    active replication if `active`."""
    name = argv[0].lower()
    level = COMMAND_LEVELS.get(name, FEATURE_LEVEL_LEGACY)
    if active:
        level = max(level, ACTIVE_COMMAND_LEVELS.get(name, FEATURE_LEVEL_LEGACY))
    return level


def script_call_level(argv: list[bytes]) -> int:
    """The level the cluster must be at for a script's redis.call of `argv` to run it, in
    either mode: a command of a level above SCRIPT_LEVEL is one a member that runs scripts may
    not know (in active replication every replica runs the script), or whose effects it may
    not apply (in passive). Below that, EVAL's own level and the published-message check of
    the node core cover it. FEATURE_LEVEL_LEGACY: nothing needed. PFCOUNT and every geo
    command, reads too, are in ACTIVE_COMMAND_LEVELS, so a script's call of one is judged here
    whatever the mode (stream reads by KVState.run_for_script)."""
    level = command_level(argv, active=True)
    return level if level > SCRIPT_LEVEL else FEATURE_LEVEL_LEGACY


def needed_level(argv: list[bytes], active: bool = False) -> tuple[int, bytes]:
    """The level a member needs to apply the entry of `argv`, a client write or a transaction
    (its highest command's), in active replication if `active`, and the name of the command
    that needs it. A pipeline batch is not looked into: it holds only PIPELINE_BATCHABLE
    commands, of which only PUBLISH and SPUBLISH need a level, and the node core judges those
    by the messages the batch published once it ran (splitting every batch here would cost
    the hot path about half a microsecond per command). Raises CommandError for a malformed
    transaction."""
    if argv[0].lower() != b"exec":
        return command_level(argv, active), argv[0]
    if is_pipeline(argv):
        return FEATURE_LEVEL_LEGACY, argv[0]
    return max(((command_level(c, active), c[0]) for c in split_exec(argv)),
               key=lambda pair: pair[0], default=(FEATURE_LEVEL_LEGACY, argv[0]))


def parse_advertised(info: dict[str, str]) -> int:
    """The level a peer's handshake info advertises; FEATURE_LEVEL_LEGACY when it says
    nothing (a node from before feature levels). ValueError for a value that is not a level."""
    raw = info.get(HANDSHAKE_KEY)
    if raw is None:
        return FEATURE_LEVEL_LEGACY
    if not raw.isdigit() or len(raw) > 6:
        raise ValueError(f"bad feature level {raw[:16]!r}")
    level = int(raw)
    if not FEATURE_LEVEL_LEGACY <= level <= FEATURE_LEVEL_MAX:
        raise ValueError(f"feature level {level} out of range")
    return level


def level_check(level: object, where: str) -> int:
    """A cluster level read from the log or a snapshot, checked: an int this replikv can
    apply. ValueError (saying what to do) otherwise."""
    if type(level) is not int or not FEATURE_LEVEL_LEGACY <= level <= FEATURE_LEVEL_MAX:
        raise ValueError(f"{where}: {level!r} is not a feature level")
    if level > FEATURE_LEVEL:
        raise ValueError(f"{where}: the cluster is at feature level {level}, and this replikv "
                         f"can apply only up to level {FEATURE_LEVEL}: run a newer replikv on "
                         "this node (never an older one than the rest of the cluster)")
    return level


def level_error(command: bytes, needed: int, member: str, advertised: int | None
                ) -> ErrorReply:
    """The error for a write that needs `needed` while `member` is behind or unknown."""
    name = command.decode("utf-8", "replace").upper()[:64]
    if advertised is None:
        why = (f"{member} has no link to this leader, so its level is unknown: retry once "
               f"{member} is up, or remove it (replikv member remove)")
    else:
        why = (f"{member} runs a replikv at level {advertised}: upgrade it first (replikv "
               "status shows each member's level)")
    return ErrorReply(f"ERR {name} needs every member of the cluster at feature level "
                      f"{needed} or later, and {why}")


