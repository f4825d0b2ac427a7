"""The command table: lookup, arity, unknown-command errors, key specs, flags."""

from __future__ import annotations

import pytest

from replikv.commands import (
    COMMANDS,
    CommandSpec,
    grows_log,
    grows_memory,
    keys_of,
    lookup,
    parse_command,
)
from replikv.replies import CommandError, wrong_arity

EXPECTED_COMMANDS = {
    # strings
    "get", "set", "setnx", "setex", "psetex", "getset", "getdel", "getex", "mget", "mset",
    "msetnx", "incr", "decr", "incrby", "decrby", "incrbyfloat", "append", "strlen", "getrange",
    "setrange",
    # keys
    "del", "unlink", "exists", "touch", "type", "ttl", "pttl", "expiretime", "pexpiretime",
    "expire", "pexpire", "expireat", "pexpireat", "persist", "keys", "scan", "dbsize",
    "randomkey", "flushall", "flushdb", "rename", "renamenx", "copy",
    # SORT (commands/sort.py): a write even without STORE; SORT_RO the read
    "sort", "sort_ro",
    # sets
    "sadd", "srem", "scard", "sismember", "smismember", "smembers", "spop", "srandmember",
    "smove", "sinter", "sunion", "sdiff", "sinterstore", "sunionstore", "sdiffstore",
    "sintercard", "sscan",
    # hashes
    "hset", "hmset", "hsetnx", "hget", "hmget", "hdel", "hexists", "hlen", "hstrlen", "hkeys",
    "hvals", "hgetall", "hincrby", "hincrbyfloat", "hrandfield", "hscan",
    # lists, and their blocking forms (one attempt each: commands/blocking.py)
    "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "llen", "lindex", "lrange", "lset",
    "lrem", "ltrim", "linsert", "lpos", "lmove", "rpoplpush", "lmpop",
    "blpop", "brpop", "blmove", "brpoplpush", "blmpop",
    # sorted sets, and their blocking forms
    "bzpopmin", "bzpopmax", "bzmpop",
    "zadd", "zincrby", "zrem", "zcard", "zscore", "zmscore", "zcount", "zlexcount", "zrange",
    "zrangebyscore", "zrevrangebyscore", "zrangebylex", "zrevrangebylex", "zrevrange",
    "zrangestore", "zrank", "zrevrank", "zpopmin", "zpopmax", "zmpop", "zremrangebyrank",
    "zremrangebyscore", "zremrangebylex", "zrandmember", "zscan", "zunion", "zinter", "zdiff",
    "zintercard", "zunionstore", "zinterstore", "zdiffstore",
    # geo: sorted sets of geohashes (commands/geo.py)
    "geoadd", "geopos", "geohash", "geodist", "geosearch", "geosearchstore", "georadius",
    "georadiusbymember", "georadius_ro", "georadiusbymember_ro",
    # HyperLogLog (commands/hyperloglog.py; PFDEBUG and PFSELFTEST are refused by name)
    "pfadd", "pfcount", "pfmerge",
    # streams (XREAD and XREADGROUP's BLOCK answers at once for now: commands/streams.py)
    "xadd", "xlen", "xrange", "xrevrange", "xdel", "xtrim", "xsetid", "xread", "xreadgroup",
    "xack", "xpending", "xclaim", "xautoclaim", "xgroup", "xinfo",
    # introspection: containers of key subcommands (OBJECT ENCODING key, MEMORY USAGE key)
    "object", "memory",
    # pub/sub: ordered with the writes through the log (commands/pubsub.py)
    "publish", "spublish",
    # transactions: the internal form of MULTI ... EXEC, and of a pipeline's reads
    # (commands/transactions.py)
    "exec", "exec-reads", "watch-point",
    # scripts (commands/scripts.py; SCRIPT is the node core's)
    "eval", "evalsha", "eval_ro", "evalsha_ro",
    # functions (commands/functions.py): libraries of Lua functions, replicated state
    "function", "fcall", "fcall_ro",
}  # fmt: skip


def test_table_has_every_command() -> None:
    assert set(COMMANDS) == EXPECTED_COMMANDS


@pytest.mark.parametrize("spec", list(COMMANDS.values()), ids=lambda spec: spec.name)
def test_spec_is_consistent(spec: CommandSpec) -> None:
    assert spec.name == spec.name.lower()
    assert spec.arity != 0
    assert spec.kind in ("read", "write")
    if spec.name in ("publish", "spublish"):
        # Through the log, though Redis flags them neither write nor readonly (no key
        # changes); not denyoom (maxmemory does not refuse them; a nearly full disk does).
        assert spec.kind == "write"
        assert set(spec.flags) == {"pubsub", "loading", "stale", "fast", "may_replicate"}
        assert not grows_memory([spec.name.encode(), b"c", b"m"])
        assert grows_log([spec.name.encode(), b"c", b"m"])
        return
    if spec.name in ("eval", "evalsha", "fcall"):  # Redis: may_replicate; here they are writes
        assert spec.kind == "write" and "may_replicate" in spec.flags
    else:
        assert ("write" in spec.flags) == (spec.kind == "write")
    assert ("readonly" in spec.flags) == (spec.kind == "read")
    assert ("movablekeys" in spec.flags) == (spec.find_keys is not None)
    if spec.first_key == 0:
        assert (spec.last_key, spec.key_step) == (0, 0)
    else:
        assert spec.first_key >= 1 and spec.key_step >= 1


@pytest.mark.parametrize("name", [b"get", b"GET", b"GeT"])
def test_lookup_is_case_insensitive(name: bytes) -> None:
    assert lookup(name) is COMMANDS["get"]


@pytest.mark.parametrize("name", [b"nosuch", b"", b"g\xc3\xa9t", b"get" * 100])
def test_lookup_unknown(name: bytes) -> None:
    assert lookup(name) is None


def test_unknown_command_error_text() -> None:
    with pytest.raises(CommandError) as raised:
        parse_command([b"foo", b"a", b"b"])
    assert raised.value.message == "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    with pytest.raises(CommandError) as raised:
        parse_command([b"foo"])
    assert raised.value.message == "ERR unknown command 'foo', with args beginning with: "


def test_unknown_command_error_is_bounded_and_one_line() -> None:
    with pytest.raises(CommandError) as raised:
        parse_command([b"x" * 1000, b"a\r\nb", b"y" * 1000, b"more"])
    message = raised.value.message
    assert "\r" not in message and "\n" not in message
    assert message.startswith("ERR unknown command '" + "x" * 128 + "', ")
    assert "'a  b' " in message
    assert "more" not in message
    assert len(message) < 400


def test_empty_command() -> None:
    with pytest.raises(CommandError):
        parse_command([])


@pytest.mark.parametrize("spec", list(COMMANDS.values()), ids=lambda spec: spec.name)
def test_arity_is_enforced(spec: CommandSpec) -> None:
    name = spec.name.upper().encode()
    if abs(spec.arity) > 1:  # the name alone is always enough for arity 1 and -1
        with pytest.raises(CommandError) as raised:
            parse_command([name] + [b"0"] * (abs(spec.arity) - 2))
        assert raised.value.message == wrong_arity(spec.name)
    if spec.arity > 0:
        with pytest.raises(CommandError) as raised:
            parse_command([name] + [b"0"] * spec.arity)
        assert raised.value.message == wrong_arity(spec.name)


@pytest.mark.parametrize(
    ("argv", "keys"),
    [
        ([b"GET", b"k"], [b"k"]),
        ([b"SET", b"k", b"v", b"EX", b"10"], [b"k"]),
        ([b"MGET", b"a", b"b", b"c"], [b"a", b"b", b"c"]),
        ([b"MSET", b"a", b"1", b"b", b"2"], [b"a", b"b"]),
        ([b"DEL", b"a", b"b"], [b"a", b"b"]),
        ([b"RENAME", b"a", b"b"], [b"a", b"b"]),
        ([b"COPY", b"a", b"b", b"REPLACE"], [b"a", b"b"]),
        ([b"SCAN", b"0", b"MATCH", b"*"], []),
        ([b"FLUSHALL"], []),
        ([b"EXPIRE", b"k", b"10", b"NX"], [b"k"]),
        ([b"SADD", b"s", b"a", b"b"], [b"s"]),
        ([b"SMOVE", b"a", b"b", b"m"], [b"a", b"b"]),
        ([b"SINTERSTORE", b"d", b"a", b"b"], [b"d", b"a", b"b"]),
        ([b"SINTERCARD", b"2", b"a", b"b", b"LIMIT", b"3"], [b"a", b"b"]),
        ([b"SINTERCARD", b"1", b"LIMIT"], [b"LIMIT"]),
        ([b"SSCAN", b"s", b"0", b"COUNT", b"5"], [b"s"]),
        ([b"ZADD", b"z", b"1", b"m"], [b"z"]),
        ([b"ZRANGESTORE", b"d", b"z", b"0", b"-1"], [b"d", b"z"]),
        ([b"ZUNIONSTORE", b"d", b"2", b"a", b"b", b"WEIGHTS", b"1", b"2"], [b"d", b"a", b"b"]),
        ([b"ZINTERCARD", b"2", b"a", b"b", b"LIMIT", b"1"], [b"a", b"b"]),
        ([b"ZUNION", b"1", b"a", b"WITHSCORES"], [b"a"]),
        ([b"ZMPOP", b"2", b"a", b"b", b"MIN"], [b"a", b"b"]),
        # SORT: the sorted key and STORE's destination (the last one, as Redis takes it);
        # the keys BY and GET read are found as it runs.
        ([b"SORT", b"k", b"BY", b"w_*", b"GET", b"#"], [b"k"]),
        ([b"SORT", b"k", b"STORE", b"d", b"LIMIT", b"0", b"1", b"store", b"e"], [b"k", b"e"]),
        ([b"SORT", b"k", b"GET", b"store", b"STORE", b"d"], [b"k", b"d"]),
        ([b"SORT_RO", b"k", b"BY", b"nosort"], [b"k"]),
        # As in Redis's table, the container has no key range (its subcommands have); reads
        # never need one.
        ([b"OBJECT", b"ENCODING", b"k"], []),
        ([b"MEMORY", b"USAGE", b"k", b"SAMPLES", b"0"], []),
    ],
)
def test_keys_of(argv: list[bytes], keys: list[bytes]) -> None:
    spec, _ = parse_command(argv)
    assert keys_of(spec, argv) == keys


def test_parse_is_pure_and_reusable() -> None:
    argv = [b"SET", b"k", b"v", b"PX", b"100"]
    first = parse_command(argv)
    assert parse_command(argv) == first
    assert argv == [b"SET", b"k", b"v", b"PX", b"100"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # Redis 7's texts: the subcommand's arity names it "object|encoding".
        ([b"OBJECT"], "ERR wrong number of arguments for 'object' command"),
        ([b"OBJECT", b"ENCODING"], "ERR wrong number of arguments for 'object|encoding' command"),
        ([b"object", b"encoding", b"a", b"b"],
         "ERR wrong number of arguments for 'object|encoding' command"),
        ([b"OBJECT", b"HELP", b"x"], "ERR wrong number of arguments for 'object|help' command"),
        ([b"OBJECT", b"FOO"], "ERR unknown subcommand 'FOO'. Try OBJECT HELP."),
        ([b"object", b"foo", b"k"], "ERR unknown subcommand 'foo'. Try OBJECT HELP."),
        ([b"MEMORY"], "ERR wrong number of arguments for 'memory' command"),
        ([b"MEMORY", b"USAGE"], "ERR wrong number of arguments for 'memory|usage' command"),
        ([b"MEMORY", b"HELP", b"x"], "ERR wrong number of arguments for 'memory|help' command"),
        ([b"MEMORY", b"DOCTOR"], "ERR unknown subcommand 'DOCTOR'. Try MEMORY HELP."),
        ([b"MEMORY", b"a\r\nb" + b"x" * 200],
         "ERR unknown subcommand 'a  b" + "x" * 124 + "'. Try MEMORY HELP."),
    ],
)
def test_a_subcommand_is_checked_with_the_arity(argv: list[bytes], message: str) -> None:
    # Refused before `parse`, like an arity error: so between MULTI and EXEC when queued.
    with pytest.raises(CommandError) as raised:
        parse_command(argv)
    assert raised.value.message == message


# Redis 7.4's command table (src/commands/*.json) for the sorted set commands: arity and flags
# (movablekeys is what Redis's COMMAND reports for a key spec found by a key count).
REDIS_SORTED_SET_COMMANDS = {
    "zadd": (-4, {"write", "denyoom", "fast"}), "zincrby": (4, {"write", "denyoom", "fast"}),
    "zrem": (-3, {"write", "fast"}), "zcard": (2, {"readonly", "fast"}),
    "zscore": (3, {"readonly", "fast"}), "zmscore": (-3, {"readonly", "fast"}),
    "zcount": (4, {"readonly", "fast"}), "zlexcount": (4, {"readonly", "fast"}),
    "zrange": (-4, {"readonly"}), "zrangebyscore": (-4, {"readonly"}),
    "zrevrangebyscore": (-4, {"readonly"}), "zrangebylex": (-4, {"readonly"}),
    "zrevrangebylex": (-4, {"readonly"}), "zrevrange": (-4, {"readonly"}),
    "zrangestore": (-5, {"write", "denyoom"}), "zrank": (-3, {"readonly", "fast"}),
    "zrevrank": (-3, {"readonly", "fast"}), "zpopmin": (-2, {"write", "fast"}),
    "zpopmax": (-2, {"write", "fast"}), "zmpop": (-4, {"write", "movablekeys"}),
    "zremrangebyrank": (4, {"write"}), "zremrangebyscore": (4, {"write"}),
    "zremrangebylex": (4, {"write"}), "zrandmember": (-2, {"readonly"}),
    "zscan": (-3, {"readonly"}), "zunion": (-3, {"readonly", "movablekeys"}),
    "zinter": (-3, {"readonly", "movablekeys"}), "zdiff": (-3, {"readonly", "movablekeys"}),
    "zintercard": (-3, {"readonly", "movablekeys"}),
    "zunionstore": (-4, {"write", "denyoom", "movablekeys"}),
    "zinterstore": (-4, {"write", "denyoom", "movablekeys"}),
    "zdiffstore": (-4, {"write", "denyoom", "movablekeys"}),
}  # fmt: skip


def test_sort_has_redis_arity_flags_and_key_range() -> None:
    # Redis 7.0's COMMAND INFO: both -2, movablekeys, keys 1 1 1.
    assert (COMMANDS["sort"].arity, set(COMMANDS["sort"].flags)) == (
        -2, {"write", "denyoom", "movablekeys"})
    assert (COMMANDS["sort_ro"].arity, set(COMMANDS["sort_ro"].flags)) == (
        -2, {"readonly", "movablekeys"})
    for name in ("sort", "sort_ro"):
        spec = COMMANDS[name]
        assert (spec.first_key, spec.last_key, spec.key_step) == (1, 1, 1)
    assert COMMANDS["sort"].kind == "write" and COMMANDS["sort_ro"].kind == "read"


@pytest.mark.parametrize("name", sorted(REDIS_SORTED_SET_COMMANDS))
def test_sorted_set_commands_have_redis_arity_and_flags(name: str) -> None:
    arity, flags = REDIS_SORTED_SET_COMMANDS[name]
    assert (COMMANDS[name].arity, set(COMMANDS[name].flags)) == (arity, flags)


@pytest.mark.parametrize(("argv", "keys"), [
    ([b"BLPOP", b"a", b"b", b"0"], [b"a", b"b"]), ([b"BZPOPMAX", b"z", b"1"], [b"z"]),
    ([b"BLMOVE", b"s", b"d", b"LEFT", b"LEFT", b"0"], [b"s", b"d"]),
    ([b"BRPOPLPUSH", b"s", b"d", b"0"], [b"s", b"d"]),
    ([b"BLMPOP", b"0", b"2", b"a", b"b", b"LEFT"], [b"a", b"b"]),
    ([b"BZMPOP", b"1.5", b"1", b"z", b"MIN", b"COUNT", b"2"], [b"z"]),
])  # fmt: skip
def test_blocking_commands_are_writes_flagged_blocking_with_their_keys(argv: list[bytes],
                                                                       keys: list[bytes]) -> None:
    spec, parsed = parse_command(argv)
    assert spec.kind == "write" and "blocking" in spec.flags
    assert keys_of(spec, argv) == keys
    # The keys whose change wakes the call: the sources (BLMOVE's destination does not).
    assert list(parsed.keys) == (keys[:1] if spec.name in ("blmove", "brpoplpush") else keys)
