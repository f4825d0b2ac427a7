"""The command table: every data command's name, arity, kind, flags, key positions and code.

A command is split in two so that bad input never reaches the replicated log: `parse` checks
the syntax and decodes the arguments (no state, no clock), and `run` executes against the state
at a given time. The leader calls `parse_command` before proposing a write; every replica calls
`run` with the entry's time; reads call both locally. Anything `parse` rejects raises
CommandError with Redis's own error text, so clients that match on errors keep working.

The table is written out in one place, like Redis's command table, so its shape can be read at a
glance; the code for each family lives in `strings`, `keys`, `sets`, `hashes`, `lists`,
`zsets`, `geo` (GEOADD, GEOSEARCH and the others: sorted sets of geohashes), `blocking`
(BLPOP, BZPOPMIN and the others: one attempt each; the connection waits), `hyperloglog` (PFADD,
PFCOUNT, PFMERGE), `sort` (SORT, SORT_RO), `streams`, `pubsub` (PUBLISH, SPUBLISH), `introspection`
(OBJECT, MEMORY), `transactions` and
`scripts` (EVAL and its family; SCRIPT is answered by the node core, whose script cache it is)
and `functions` (FUNCTION, FCALL, FCALL_RO: libraries of Lua functions, replicated state).
Arity and key positions follow Redis's COMMAND conventions: arity counts the name, negative
means "at least"; keys are argv[first_key..last_key] stepping by key_step, a negative last_key
counting from the end. A command whose keys move with a count argument (SINTERCARD numkeys
key ...) has the "movablekeys" flag, (0, 0, 0) as its range like in Redis, and a `find_keys`
function instead. A command with subcommands (OBJECT ENCODING key) is checked as Redis checks
it before it runs: an unknown subcommand, or a subcommand with the wrong number of arguments,
is refused like a wrong arity (so between MULTI and EXEC it is refused when queued).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands import (
    blocking,
    functions,
    geo,
    hashes,
    hyperloglog,
    introspection,
    keys,
    lists,
    pubsub,
    scripts,
    sets,
    sort,
    streams,
    strings,
    transactions,
    zsets,
)
from replikv.replies import CommandError, wrong_arity

if TYPE_CHECKING:
    from replikv.state import KVState

# No command name is longer; a longer argv[0] is unknown without decoding all of it.
COMMAND_NAME_BYTES_MAX = 32
# Redis quotes at most this much of an unknown command and its arguments in the error.
UNKNOWN_COMMAND_QUOTE_CHARS_MAX = 128


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str  # lowercase
    arity: int  # counts the name: 2 = exactly 2 args, -3 = at least 3
    kind: str  # "write" (through the log) | "read" (local state)
    flags: tuple[str, ...]  # Redis COMMAND flags
    first_key: int
    last_key: int
    key_step: int
    parse: Callable[[list[bytes]], object]  # argv -> parsed args; raises CommandError
    run: Callable[[KVState, object, int], object]  # (state, parsed, time_ms) -> reply
    # For "movablekeys" commands: argv (already parsed without error) -> its keys.
    find_keys: Callable[[list[bytes]], list[bytes]] | None = None
    # For a container command (OBJECT, MEMORY): its subcommands' lowercase names -> arity,
    # which counts the command and the subcommand ("object|encoding" takes a key: 3).
    subcommands: Mapping[str, int] | None = None


_W = ("write",)
_W_FAST = ("write", "fast")
_W_DENYOOM = ("write", "denyoom")
_W_DENYOOM_FAST = ("write", "denyoom", "fast")
_R = ("readonly",)
_R_FAST = ("readonly", "fast")
_R_MOVABLE = ("readonly", "movablekeys")
_R_MAY_REPLICATE = ("readonly", "may_replicate")  # PFCOUNT, whose cache Redis may write
_W_MOVABLE = ("write", "movablekeys")
_W_DENYOOM_MOVABLE = ("write", "denyoom", "movablekeys")
_W_BLOCKING = ("write", "blocking")
_W_DENYOOM_BLOCKING = ("write", "denyoom", "blocking")
_W_BLOCKING_MOVABLE = ("write", "blocking", "movablekeys")
# Redis flags OBJECT and MEMORY themselves with nothing (their subcommands are readonly); here
# every command is a read or a write, and these read.
_R_CONTAINER = ("readonly",)
# XGROUP's subcommands all write (HELP too goes through the log: harmless, and rare); their key
# (argv[2]) is found like a movable one, so that an expired key is dropped first and WATCH
# sees the change (Redis flags the container with nothing and keys its subcommands).
_W_CONTAINER = ("write", "movablekeys")
# XREAD and XREADGROUP: Redis flags them blocking (BLOCK) with keys after STREAMS.
_R_BLOCKING_MOVABLE = ("readonly", "blocking", "movablekeys")
# Redis's flags for PUBLISH and SPUBLISH: not "write" (no key changes), not "denyoom".
_PUBLISH = ("pubsub", "loading", "stale", "fast", "may_replicate")

_EVAL_FLAGS = ("noscript", "skip_monitor", "may_replicate", "no_mandatory_keys", "stale",
               "movablekeys")
_EVAL_RO_FLAGS = ("noscript", "skip_monitor", "no_mandatory_keys", "stale", "readonly",
                  "movablekeys")

_ONE_KEY = (1, 1, 1)
_ALL_KEYS = (1, -1, 1)
_PAIRS = (1, -1, 2)  # key value key value ...
_TWO_KEYS = (1, 2, 1)
_KEYS_THEN_TIMEOUT = (1, -2, 1)
_NO_KEYS = (0, 0, 0)


def _command(
    name: str,
    arity: int,
    flags: tuple[str, ...],
    key_spec: tuple[int, int, int],
    parse: Callable[[list[bytes]], object],
    run: Callable[..., object],
    find_keys: Callable[[list[bytes]], list[bytes]] | None = None,
    subcommands: Mapping[str, int] | None = None,
    kind: str | None = None,
) -> CommandSpec:
    # A command goes through the log exactly when Redis flags it as a write, or when it says
    # so (PUBLISH: ordered with the writes, though it changes no key).
    if kind is None:
        kind = "write" if "write" in flags else "read"
    return CommandSpec(name, arity, kind, flags, *key_spec, parse, run, find_keys, subcommands)


def _script_command(name: str, kind: str, parse: Callable[[list[bytes]], object],
                    run: Callable[..., object]) -> CommandSpec:
    """EVAL and its family, FCALL and FCALL_RO, with Redis's flags (see the table)."""
    flags = _EVAL_FLAGS if kind == "write" else _EVAL_RO_FLAGS
    return CommandSpec(name, -3, kind, flags, 0, 0, 0, parse, run, scripts.eval_keys)


# FUNCTION's subcommands that Redis flags denyoom (they add a library).
_FUNCTION_DENYOOM = (b"load", b"restore")


_TABLE = (
    # Strings.
    _command("get", 2, _R_FAST, _ONE_KEY, strings.parse_key, strings.run_get),
    _command("set", -3, _W_DENYOOM, _ONE_KEY, strings.parse_set, strings.run_set),
    _command("setnx", 3, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_key_value, strings.run_setnx),
    _command("setex", 4, _W_DENYOOM, _ONE_KEY, strings.parse_setex, strings.run_setex),
    _command("psetex", 4, _W_DENYOOM, _ONE_KEY, strings.parse_psetex, strings.run_setex),
    _command("getset", 3, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_key_value, strings.run_getset),
    _command("getdel", 2, _W_FAST, _ONE_KEY, strings.parse_key, strings.run_getdel),
    _command("getex", -2, _W_FAST, _ONE_KEY, strings.parse_getex, strings.run_getex),
    _command("mget", -2, _R_FAST, _ALL_KEYS, strings.parse_keys, strings.run_mget),
    _command("mset", -3, _W_DENYOOM, _PAIRS, strings.parse_mset, strings.run_mset),
    _command("msetnx", -3, _W_DENYOOM, _PAIRS, strings.parse_msetnx, strings.run_msetnx),
    _command("incr", 2, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_incr, strings.run_incrby),
    _command("decr", 2, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_decr, strings.run_incrby),
    _command("incrby", 3, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_incrby, strings.run_incrby),
    _command("decrby", 3, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_decrby, strings.run_incrby),
    _command(
        "incrbyfloat",
        3,
        _W_DENYOOM_FAST,
        _ONE_KEY,
        strings.parse_incrbyfloat,
        strings.run_incrbyfloat,
    ),
    _command("append", 3, _W_DENYOOM_FAST, _ONE_KEY, strings.parse_key_value, strings.run_append),
    _command("strlen", 2, _R_FAST, _ONE_KEY, strings.parse_key, strings.run_strlen),
    _command("getrange", 4, _R, _ONE_KEY, strings.parse_getrange, strings.run_getrange),
    _command("setrange", 4, _W_DENYOOM, _ONE_KEY, strings.parse_setrange, strings.run_setrange),
    # Keys.
    _command("del", -2, _W, _ALL_KEYS, strings.parse_keys, keys.run_del),
    _command("unlink", -2, _W_FAST, _ALL_KEYS, strings.parse_keys, keys.run_del),
    _command("exists", -2, _R_FAST, _ALL_KEYS, strings.parse_keys, keys.run_exists),
    _command("touch", -2, _R_FAST, _ALL_KEYS, strings.parse_keys, keys.run_exists),
    _command("type", 2, _R_FAST, _ONE_KEY, strings.parse_key, keys.run_type),
    _command("ttl", 2, _R_FAST, _ONE_KEY, strings.parse_key, keys.run_ttl),
    _command("pttl", 2, _R_FAST, _ONE_KEY, strings.parse_key, keys.run_pttl),
    _command("expiretime", 2, _R_FAST, _ONE_KEY, strings.parse_key, keys.run_expiretime),
    _command("pexpiretime", 2, _R_FAST, _ONE_KEY, strings.parse_key, keys.run_pexpiretime),
    _command("expire", -3, _W_FAST, _ONE_KEY, keys.parse_expire, keys.run_expire),
    _command("pexpire", -3, _W_FAST, _ONE_KEY, keys.parse_pexpire, keys.run_expire),
    _command("expireat", -3, _W_FAST, _ONE_KEY, keys.parse_expireat, keys.run_expire),
    _command("pexpireat", -3, _W_FAST, _ONE_KEY, keys.parse_pexpireat, keys.run_expire),
    _command("persist", 2, _W_FAST, _ONE_KEY, strings.parse_key, keys.run_persist),
    _command("keys", 2, _R, _NO_KEYS, keys.parse_keys_pattern, keys.run_keys),
    _command("scan", -2, _R, _NO_KEYS, keys.parse_scan, keys.run_scan),
    _command("dbsize", 1, _R_FAST, _NO_KEYS, keys.parse_nothing, keys.run_dbsize),
    _command("randomkey", 1, _R, _NO_KEYS, keys.parse_nothing, keys.run_randomkey),
    _command("flushall", -1, _W, _NO_KEYS, keys.parse_flush, keys.run_flush),
    _command("flushdb", -1, _W, _NO_KEYS, keys.parse_flush, keys.run_flush),
    _command("rename", 3, _W, _TWO_KEYS, keys.parse_rename, keys.run_rename),
    _command("renamenx", 3, _W_FAST, _TWO_KEYS, keys.parse_rename, keys.run_renamenx),
    _command("copy", -3, _W_DENYOOM, _TWO_KEYS, keys.parse_copy, keys.run_copy),
    # SORT over a list, a set or a sorted set (sort.py). Redis flags SORT a write even without
    # STORE, and a command's kind is fixed here: SORT goes through the log, SORT_RO is the read.
    # Their key range is Redis's (1, 1, 1); `find_keys` adds STORE's destination (BY and GET
    # read keys found only as the command runs).
    _command("sort", -2, _W_DENYOOM_MOVABLE, _ONE_KEY, sort.parse_sort, sort.run_sort,
             sort.sort_keys),
    _command("sort_ro", -2, _R_MOVABLE, _ONE_KEY, sort.parse_sort_ro, sort.run_sort,
             sort.sort_ro_keys),
    # Sets.
    _command("sadd", -3, _W_DENYOOM_FAST, _ONE_KEY, sets.parse_key_members, sets.run_sadd),
    _command("srem", -3, _W_FAST, _ONE_KEY, sets.parse_key_members, sets.run_srem),
    _command("scard", 2, _R_FAST, _ONE_KEY, strings.parse_key, sets.run_scard),
    _command("sismember", 3, _R_FAST, _ONE_KEY, strings.parse_key_value, sets.run_sismember),
    _command("smismember", -3, _R_FAST, _ONE_KEY, sets.parse_key_members, sets.run_smismember),
    _command("smembers", 2, _R, _ONE_KEY, strings.parse_key, sets.run_smembers),
    _command("spop", -2, _W_FAST, _ONE_KEY, sets.parse_spop, sets.run_spop),
    _command("srandmember", -2, _R, _ONE_KEY, sets.parse_srandmember, sets.run_srandmember),
    _command("smove", 4, _W_FAST, _TWO_KEYS, sets.parse_smove, sets.run_smove),
    _command("sinter", -2, _R, _ALL_KEYS, strings.parse_keys, sets.run_sinter),
    _command("sunion", -2, _R, _ALL_KEYS, strings.parse_keys, sets.run_sunion),
    _command("sdiff", -2, _R, _ALL_KEYS, strings.parse_keys, sets.run_sdiff),
    _command("sinterstore", -3, _W_DENYOOM, _ALL_KEYS, sets.parse_store, sets.run_sinterstore),
    _command("sunionstore", -3, _W_DENYOOM, _ALL_KEYS, sets.parse_store, sets.run_sunionstore),
    _command("sdiffstore", -3, _W_DENYOOM, _ALL_KEYS, sets.parse_store, sets.run_sdiffstore),
    _command(
        "sintercard",
        -3,
        _R_MOVABLE,
        _NO_KEYS,
        sets.parse_sintercard,
        sets.run_sintercard,
        sets.numkeys_keys,
    ),
    _command("sscan", -3, _R, _ONE_KEY, sets.parse_sscan, sets.run_sscan),
    # Hashes.
    _command("hset", -4, _W_DENYOOM_FAST, _ONE_KEY, hashes.parse_hset, hashes.run_hset),
    _command("hmset", -4, _W_DENYOOM_FAST, _ONE_KEY, hashes.parse_hmset, hashes.run_hmset),
    _command("hsetnx", 4, _W_DENYOOM_FAST, _ONE_KEY, hashes.parse_hsetnx, hashes.run_hsetnx),
    _command("hget", 3, _R_FAST, _ONE_KEY, hashes.parse_key_field, hashes.run_hget),
    _command("hmget", -3, _R_FAST, _ONE_KEY, hashes.parse_key_fields, hashes.run_hmget),
    _command("hdel", -3, _W_FAST, _ONE_KEY, hashes.parse_key_fields, hashes.run_hdel),
    _command("hexists", 3, _R_FAST, _ONE_KEY, hashes.parse_key_field, hashes.run_hexists),
    _command("hlen", 2, _R_FAST, _ONE_KEY, strings.parse_key, hashes.run_hlen),
    _command("hstrlen", 3, _R_FAST, _ONE_KEY, hashes.parse_key_field, hashes.run_hstrlen),
    _command("hkeys", 2, _R, _ONE_KEY, strings.parse_key, hashes.run_hkeys),
    _command("hvals", 2, _R, _ONE_KEY, strings.parse_key, hashes.run_hvals),
    _command("hgetall", 2, _R, _ONE_KEY, strings.parse_key, hashes.run_hgetall),
    _command("hincrby", 4, _W_DENYOOM_FAST, _ONE_KEY, hashes.parse_hincrby, hashes.run_hincrby),
    _command(
        "hincrbyfloat",
        4,
        _W_DENYOOM_FAST,
        _ONE_KEY,
        hashes.parse_hincrbyfloat,
        hashes.run_hincrbyfloat,
    ),
    _command("hrandfield", -2, _R, _ONE_KEY, hashes.parse_hrandfield, hashes.run_hrandfield),
    _command("hscan", -3, _R, _ONE_KEY, hashes.parse_hscan, hashes.run_hscan),
    # Lists.
    _command("lpush", -3, _W_DENYOOM_FAST, _ONE_KEY, lists.parse_key_elements, lists.run_lpush),
    _command("rpush", -3, _W_DENYOOM_FAST, _ONE_KEY, lists.parse_key_elements, lists.run_rpush),
    _command("lpushx", -3, _W_DENYOOM_FAST, _ONE_KEY, lists.parse_key_elements,
             lists.run_lpushx),
    _command("rpushx", -3, _W_DENYOOM_FAST, _ONE_KEY, lists.parse_key_elements,
             lists.run_rpushx),
    _command("lpop", -2, _W_FAST, _ONE_KEY, lists.parse_lpop, lists.run_lpop),
    _command("rpop", -2, _W_FAST, _ONE_KEY, lists.parse_rpop, lists.run_rpop),
    _command("llen", 2, _R_FAST, _ONE_KEY, strings.parse_key, lists.run_llen),
    _command("lindex", 3, _R, _ONE_KEY, lists.parse_key_raw, lists.run_lindex),
    _command("lrange", 4, _R, _ONE_KEY, lists.parse_key_start_stop, lists.run_lrange),
    _command("lset", 4, _W_DENYOOM, _ONE_KEY, lists.parse_lset, lists.run_lset),
    _command("linsert", 5, _W_DENYOOM, _ONE_KEY, lists.parse_linsert, lists.run_linsert),
    _command("lrem", 4, _W, _ONE_KEY, lists.parse_lrem, lists.run_lrem),
    _command("ltrim", 4, _W, _ONE_KEY, lists.parse_key_start_stop, lists.run_ltrim),
    _command("lpos", -3, _R, _ONE_KEY, lists.parse_lpos, lists.run_lpos),
    _command("lmove", 5, _W_DENYOOM, _TWO_KEYS, lists.parse_lmove, lists.run_lmove),
    _command("rpoplpush", 3, _W_DENYOOM, _TWO_KEYS, lists.parse_rpoplpush, lists.run_lmove),
    _command("lmpop", -4, _W_MOVABLE, _NO_KEYS, lists.parse_lmpop, lists.run_lmpop,
             sets.numkeys_keys),
    # The blocking forms: one attempt each (blocking.py); the client's connection waits.
    _command("blpop", -3, _W_BLOCKING, _KEYS_THEN_TIMEOUT, blocking.parse_blpop,
             blocking.run_blpop),
    _command("brpop", -3, _W_BLOCKING, _KEYS_THEN_TIMEOUT, blocking.parse_brpop,
             blocking.run_brpop),
    _command("blmove", 6, _W_DENYOOM_BLOCKING, _TWO_KEYS, blocking.parse_blmove,
             blocking.run_blmove),
    _command("brpoplpush", 4, _W_DENYOOM_BLOCKING, _TWO_KEYS, blocking.parse_brpoplpush,
             blocking.run_blmove),
    _command("blmpop", -5, _W_BLOCKING_MOVABLE, _NO_KEYS, blocking.parse_blmpop,
             blocking.run_blmpop, blocking.mpop_keys),
    # Sorted sets.
    _command("zadd", -4, _W_DENYOOM_FAST, _ONE_KEY, zsets.parse_zadd, zsets.run_zadd),
    _command("zincrby", 4, _W_DENYOOM_FAST, _ONE_KEY, zsets.parse_zincrby, zsets.run_zadd),
    _command("zrem", -3, _W_FAST, _ONE_KEY, sets.parse_key_members, zsets.run_zrem),
    _command("zcard", 2, _R_FAST, _ONE_KEY, strings.parse_key, zsets.run_zcard),
    _command("zscore", 3, _R_FAST, _ONE_KEY, strings.parse_key_value, zsets.run_zscore),
    _command("zmscore", -3, _R_FAST, _ONE_KEY, sets.parse_key_members, zsets.run_zmscore),
    _command("zcount", 4, _R_FAST, _ONE_KEY, zsets.parse_zcount, zsets.run_zcount),
    _command("zlexcount", 4, _R_FAST, _ONE_KEY, zsets.parse_zlexcount, zsets.run_zlexcount),
    _command("zrange", -4, _R, _ONE_KEY, zsets.parse_zrange, zsets.run_zrange),
    _command("zrangebyscore", -4, _R, _ONE_KEY, zsets.parse_zrangebyscore, zsets.run_zrange),
    _command("zrevrangebyscore", -4, _R, _ONE_KEY, zsets.parse_zrevrangebyscore,
             zsets.run_zrange),
    _command("zrangebylex", -4, _R, _ONE_KEY, zsets.parse_zrangebylex, zsets.run_zrange),
    _command("zrevrangebylex", -4, _R, _ONE_KEY, zsets.parse_zrevrangebylex,
             zsets.run_zrange),
    _command("zrevrange", -4, _R, _ONE_KEY, zsets.parse_zrevrange, zsets.run_zrange),
    _command("zrangestore", -5, _W_DENYOOM, _TWO_KEYS, zsets.parse_zrangestore,
             zsets.run_zrangestore),
    _command("zrank", -3, _R_FAST, _ONE_KEY, zsets.parse_zrank, zsets.run_zrank),
    _command("zrevrank", -3, _R_FAST, _ONE_KEY, zsets.parse_zrevrank, zsets.run_zrevrank),
    _command("zpopmin", -2, _W_FAST, _ONE_KEY, zsets.parse_zpopmin, zsets.run_zpopmin),
    _command("zpopmax", -2, _W_FAST, _ONE_KEY, zsets.parse_zpopmax, zsets.run_zpopmax),
    _command("zmpop", -4, _W_MOVABLE, _NO_KEYS, zsets.parse_zmpop, zsets.run_zmpop,
             sets.numkeys_keys),
    _command("bzpopmin", -3, _W_BLOCKING, _KEYS_THEN_TIMEOUT, blocking.parse_bzpopmin,
             blocking.run_bzpopmin),
    _command("bzpopmax", -3, _W_BLOCKING, _KEYS_THEN_TIMEOUT, blocking.parse_bzpopmax,
             blocking.run_bzpopmax),
    _command("bzmpop", -5, _W_BLOCKING_MOVABLE, _NO_KEYS, blocking.parse_bzmpop,
             blocking.run_bzmpop, blocking.mpop_keys),
    _command("zremrangebyrank", 4, _W, _ONE_KEY, zsets.parse_zremrangebyrank,
             zsets.run_zremrangebyrank),
    _command("zremrangebyscore", 4, _W, _ONE_KEY, zsets.parse_zcount,
             zsets.run_zremrangebyscore),
    _command("zremrangebylex", 4, _W, _ONE_KEY, zsets.parse_zlexcount,
             zsets.run_zremrangebylex),
    _command("zrandmember", -2, _R, _ONE_KEY, zsets.parse_zrandmember, zsets.run_zrandmember),
    _command("zscan", -3, _R, _ONE_KEY, sets.parse_sscan, zsets.run_zscan),
    _command("zunion", -3, _R_MOVABLE, _NO_KEYS, zsets.parse_zunion, zsets.run_zunion,
             sets.numkeys_keys),
    _command("zinter", -3, _R_MOVABLE, _NO_KEYS, zsets.parse_zinter, zsets.run_zinter,
             sets.numkeys_keys),
    _command("zdiff", -3, _R_MOVABLE, _NO_KEYS, zsets.parse_zdiff, zsets.run_zdiff,
             sets.numkeys_keys),
    _command("zintercard", -3, _R_MOVABLE, _NO_KEYS, zsets.parse_zintercard,
             zsets.run_zintercard, sets.numkeys_keys),
    _command("zunionstore", -4, _W_DENYOOM_MOVABLE, _NO_KEYS, zsets.parse_zunionstore,
             zsets.run_zunion, zsets.store_keys),
    _command("zinterstore", -4, _W_DENYOOM_MOVABLE, _NO_KEYS, zsets.parse_zinterstore,
             zsets.run_zinter, zsets.store_keys),
    _command("zdiffstore", -4, _W_DENYOOM_MOVABLE, _NO_KEYS, zsets.parse_zdiffstore,
             zsets.run_zdiff, zsets.store_keys),
    # Geo (geo.py): sorted sets whose scores are geohashes; GEOADD is ZADD with those scores.
    # GEORADIUS and GEORADIUSBYMEMBER write (STORE, STOREDIST), as Redis flags them, their
    # keys the source and the STORE key (1 1 1 and movablekeys in Redis's COMMAND too).
    _command("geoadd", -5, _W_DENYOOM, _ONE_KEY, geo.parse_geoadd, zsets.run_zadd),
    _command("geopos", -2, _R, _ONE_KEY, geo.parse_geopos, geo.run_geopos),
    _command("geohash", -2, _R, _ONE_KEY, geo.parse_geopos, geo.run_geohash),
    _command("geodist", -4, _R, _ONE_KEY, geo.parse_geodist, geo.run_geodist),
    _command("geosearch", -7, _R, _ONE_KEY, geo.parse_geosearch, geo.run_geosearch),
    _command("geosearchstore", -8, _W_DENYOOM, _TWO_KEYS, geo.parse_geosearchstore,
             geo.run_geosearch),
    _command("georadius", -6, _W_DENYOOM_MOVABLE, _ONE_KEY, geo.parse_georadius,
             geo.run_geosearch, geo.radius_keys),
    _command("georadiusbymember", -5, _W_DENYOOM_MOVABLE, _ONE_KEY,
             geo.parse_georadiusbymember, geo.run_geosearch, geo.radius_keys),
    _command("georadius_ro", -6, _R, _ONE_KEY, geo.parse_georadius_ro, geo.run_geosearch),
    _command("georadiusbymember_ro", -5, _R, _ONE_KEY, geo.parse_georadiusbymember_ro,
             geo.run_geosearch),
    # HyperLogLog (hyperloglog.py): strings in Redis's encoding. PFCOUNT is a read here: it
    # does not write the cardinality it computed into the HLL's header as Redis's does.
    _command("pfadd", -2, _W_DENYOOM_FAST, _ONE_KEY, hyperloglog.parse_pfadd,
             hyperloglog.run_pfadd),
    _command("pfcount", -2, _R_MAY_REPLICATE, _ALL_KEYS, strings.parse_keys,
             hyperloglog.run_pfcount),
    _command("pfmerge", -2, _W_DENYOOM, _ALL_KEYS, strings.parse_keys, hyperloglog.run_pfmerge),
    # Streams (streams.py). XREAD reads; XREADGROUP writes (it changes the group's pending
    # entries and last id). XGROUP and XINFO have subcommands, whose key is argv[2] (XINFO,
    # a read, like OBJECT's).
    _command("xadd", -5, _W_DENYOOM_FAST, _ONE_KEY, streams.parse_xadd, streams.run_xadd),
    _command("xlen", 2, _R_FAST, _ONE_KEY, strings.parse_key, streams.run_xlen),
    _command("xrange", -4, _R, _ONE_KEY, streams.parse_xrange, streams.run_xrange),
    _command("xrevrange", -4, _R, _ONE_KEY, streams.parse_xrevrange, streams.run_xrange),
    _command("xdel", -3, _W_FAST, _ONE_KEY, streams.parse_xdel, streams.run_xdel),
    _command("xtrim", -4, _W, _ONE_KEY, streams.parse_xtrim, streams.run_xtrim),
    _command("xsetid", -3, _W_DENYOOM_FAST, _ONE_KEY, streams.parse_xsetid, streams.run_xsetid),
    _command("xread", -4, _R_BLOCKING_MOVABLE, _NO_KEYS, streams.parse_xread, streams.run_xread,
             streams.xread_keys),
    _command("xreadgroup", -7, _W_BLOCKING_MOVABLE, _NO_KEYS, streams.parse_xreadgroup,
             streams.run_xreadgroup, streams.xread_keys),
    _command("xack", -4, _W_FAST, _ONE_KEY, streams.parse_xack, streams.run_xack),
    _command("xpending", -3, _R, _ONE_KEY, streams.parse_xpending, streams.run_xpending),
    _command("xclaim", -6, _W_FAST, _ONE_KEY, streams.parse_xclaim, streams.run_xclaim),
    _command("xautoclaim", -6, _W_FAST, _ONE_KEY, streams.parse_xautoclaim,
             streams.run_xautoclaim),
    _command("xgroup", -2, _W_CONTAINER, _NO_KEYS, streams.parse_xgroup, streams.run_xgroup,
             streams.subcommand_key, streams.XGROUP_SUBCOMMANDS),
    _command("xinfo", -2, _R_CONTAINER, _NO_KEYS, streams.parse_xinfo, streams.run_xinfo,
             subcommands=streams.XINFO_SUBCOMMANDS),
    # Pub/sub: through the log, delivered on commit (pubsub.py; the subscribe commands are the
    # connection's). SPUBLISH's channel is not a key here (no key changes; one shard).
    _command("publish", 3, _PUBLISH, _NO_KEYS, pubsub.parse_publish, pubsub.run_publish,
             kind="write"),
    _command("spublish", 3, _PUBLISH, _NO_KEYS, pubsub.parse_publish, pubsub.run_spublish,
             kind="write"),
    # Introspection: reads of one key (argv[2]) like TYPE, at the connection's consistency. As
    # in Redis's COMMAND table the key is the subcommands', not the container's.
    _command("object", -2, _R_CONTAINER, _NO_KEYS, introspection.parse_object,
             introspection.run_object, subcommands=introspection.OBJECT_SUBCOMMANDS),
    _command("memory", -2, _R_CONTAINER, _NO_KEYS, introspection.parse_memory,
             introspection.run_memory, subcommands=introspection.MEMORY_SUBCOMMANDS),
    # Scripts (scripts.py). Redis flags EVAL may-replicate, not write, nor denyoom (each
    # redis.call is judged); here a command is a read or a write, and EVAL is a write: it goes
    # through the log even when it writes nothing. The node core resolves EVALSHA into EVAL of
    # the body before it routes it (the script cache is the node's): EVALSHA is here for its
    # arity, its keys and COMMAND.
    _script_command("eval", "write", scripts.parse_eval, scripts.run_eval),
    _script_command("evalsha", "write", scripts.parse_evalsha, scripts.run_evalsha),
    _script_command("eval_ro", "read", scripts.parse_eval, scripts.run_eval),
    _script_command("evalsha_ro", "read", scripts.parse_evalsha, scripts.run_evalsha),
    # Functions (functions.py). FCALL is a write as EVAL is (a no-writes function too), FCALL_RO
    # the read. FUNCTION's subcommands go through the log, LIST, STATS and DUMP too (as XGROUP
    # HELP does): a command's kind is fixed here, and these are rare and administrative. Redis
    # flags the container with nothing and LOAD and RESTORE denyoom (grows_memory).
    _script_command("fcall", "write", functions.parse_fcall, functions.run_fcall),
    _script_command("fcall_ro", "read", functions.parse_fcall, functions.run_fcall_ro),
    _command("function", -2, ("write", "noscript"), _NO_KEYS, functions.parse_function,
             functions.run_function_command, subcommands=functions.FUNCTION_SUBCOMMANDS),
    # Transactions: the internal form of MULTI ... EXEC (see transactions.py); a client's EXEC
    # is taken by its connection and never looked up here.
    _command("exec", -2, _W, _NO_KEYS, transactions.parse_exec, transactions.run_exec),
    # A pipeline's reads as one read (transactions.py); refused from clients, never listed.
    _command("exec-reads", -2, _R, _NO_KEYS, transactions.parse_reads, transactions.run_reads),
    # Where a connection's WATCH starts (transactions.py); refused from clients, never listed.
    _command("watch-point", 1, _R, _NO_KEYS, transactions.parse_watch_point,
             transactions.run_watch_point),
)

COMMANDS: dict[str, CommandSpec] = {spec.name: spec for spec in _TABLE}


def lookup(name: bytes) -> CommandSpec | None:
    """The spec for a command name, case-insensitively; None if unknown."""
    if len(name) > COMMAND_NAME_BYTES_MAX:
        return None
    # bytes.lower() folds ASCII only, so a non-ASCII name simply matches nothing.
    return COMMANDS.get(name.lower().decode("latin-1"))


def grows_memory(argv: list[bytes]) -> bool:
    """Whether Redis flags the command "denyoom" (it can add data): what a node over its
    maxmemory refuses. For FUNCTION, its LOAD and RESTORE subcommands."""
    spec = lookup(argv[0])
    if spec is not None and spec.name == "function":
        return len(argv) > 1 and argv[1].lower() in _FUNCTION_DENYOOM
    return spec is not None and "denyoom" in spec.flags


def grows_log(argv: list[bytes]) -> bool:
    """Whether the command can add data that takes room on disk: what a leader whose disk is
    nearly full refuses. The "denyoom" writes, and PUBLISH and SPUBLISH, which Redis does not
    flag denyoom (they add no key) but which each append their message to the log."""
    spec = lookup(argv[0])
    return spec is not None and (grows_memory(argv) or spec.name in pubsub.PUBLISHING)


def unknown_command(argv: list[bytes]) -> CommandError:
    """The error for a command not in the table: Redis's unknown-command text, or the reason a
    command Redis has is refused here (PFDEBUG and PFSELFTEST)."""
    if len(argv[0]) <= COMMAND_NAME_BYTES_MAX:
        name_lower = argv[0].lower().decode("latin-1")
        if name_lower in hyperloglog.DEBUG_REFUSED:
            return CommandError(hyperloglog.debug_refusal(name_lower))
    # Redis's text: the name cut to 128 chars, then quoted arguments until 128 chars are used.
    # CR and LF would break a RESP error line, so they become spaces as Redis makes them.
    quote_max = UNKNOWN_COMMAND_QUOTE_CHARS_MAX
    name = argv[0][:quote_max].decode("utf-8", "replace")
    quoted = ""
    for arg in argv[1:]:
        if len(quoted) >= quote_max:
            break
        room = quote_max - len(quoted)
        quoted += "'" + arg[:room].decode("utf-8", "replace")[:room] + "' "
    message = f"ERR unknown command '{name}', with args beginning with: {quoted}"
    return CommandError(message.replace("\r", " ").replace("\n", " "))


def parse_command(argv: list[bytes]) -> tuple[CommandSpec, object]:
    """Look the command up, check its arity and parse its arguments; raise CommandError."""
    if not argv:
        raise CommandError("ERR empty command")
    spec = lookup(argv[0])
    if spec is None:
        raise unknown_command(argv)
    check_arity(spec, argv)
    return spec, spec.parse(argv)


def check_arity(spec: CommandSpec, argv: list[bytes]) -> None:
    """CommandError, with Redis's text, if `argv` has the wrong number of arguments, or names a
    subcommand `spec` does not have or gives it the wrong number of arguments."""
    arity = spec.arity
    if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
        raise CommandError(wrong_arity(spec.name))
    if spec.subcommands is not None:
        _check_subcommand(spec.name, spec.subcommands, argv)


def _check_subcommand(name: str, subcommands: Mapping[str, int], argv: list[bytes]) -> None:
    if len(argv[1]) > COMMAND_NAME_BYTES_MAX:  # no subcommand is longer: not worth lowering
        raise unknown_subcommand(argv)
    sub = argv[1].lower().decode("latin-1")
    arity = subcommands.get(sub)
    if arity is None:
        raise unknown_subcommand(argv)
    if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
        raise CommandError(wrong_arity(f"{name}|{sub}"))


def unknown_subcommand(argv: list[bytes]) -> CommandError:
    """Redis's text: the subcommand cut to 128 bytes, CR and LF made spaces."""
    sub = argv[1][:UNKNOWN_COMMAND_QUOTE_CHARS_MAX].decode("utf-8", "replace")
    name = argv[0].decode("latin-1").upper()
    message = f"ERR unknown subcommand '{sub}'. Try {name} HELP."
    return CommandError(message.replace("\r", " ").replace("\n", " "))


def keys_of(spec: CommandSpec, argv: list[bytes]) -> list[bytes]:
    """The keys a (well-formed) command touches, from its key spec."""
    if spec.find_keys is not None:
        return spec.find_keys(argv)
    if spec.first_key == 0:
        return []
    last_key = spec.last_key if spec.last_key >= 0 else len(argv) + spec.last_key
    return argv[spec.first_key : last_key + 1 : spec.key_step]
