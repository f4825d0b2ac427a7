"""Lua scripts (EVAL and its family): conversions, errors, the sandbox, determinism, limits,
the node's script cache, and both replication modes through the node harness."""

from __future__ import annotations

import time

import pytest

from replikv.commands.scripts import ScriptCache, ScriptContext
from replikv.limits import Limits
from replikv.node import NodeConfig
from replikv.replies import ErrorReply, Status
from replikv.scripting import ScriptBudget, sha1hex
from replikv.state import KVState

from .node_harness import Cluster

T0 = 1_000_000
SMALL = ScriptBudget(max_instructions=5_000_000, max_memory_bytes=4 << 20)


def ev(state: KVState, body: str, *keys_then_args: str, numkeys: int = 0, seed: int = 7,
       budget: ScriptBudget | None = None) -> object:
    argv = [b"EVAL", body.encode(), b"%d" % numkeys, *(a.encode() for a in keys_then_args)]
    if budget is None:
        return state.apply_command(argv, T0, seed)
    state.script_context = ScriptContext(budget)
    try:
        return state.execute_recorded(argv, T0, seed)
    finally:
        state.script_context = None


def err(reply: object) -> str:
    assert type(reply) is ErrorReply, reply
    return reply.message


# ---- conversions --------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ("return 1", 1),
    ("return 3.99", 3),
    ("return -3.99", -3),
    ("return 1e20", -(1 << 63)),  # C's cast, as Redis on x86
    ("return 'a\\0b'", b"a\x00b"),
    ("return true", 1),
    ("return false", None),
    ("return nil", None),
    ("return {1, 2, 3.7, 'x', nil, 4}", [1, 2, 3, b"x"]),
    ("return {1, {2, {3, 'x'}}, redis.status_reply('OK')}", [1, [2, [3, b"x"]], Status("OK")]),
    ("return {err = 'My Err'}", ErrorReply("My Err")),
    ("return {err = 3}", []),  # err is not a string: an array (empty)
    ("return {ok = 'a\\r\\nb'}", Status("a  b")),
    ("return redis.error_reply('-MYERR x')", ErrorReply("MYERR x")),
    ("return {double = 3.5}", 3.5),
    ("return {map = {a = 1}}", {b"a": 1}),
])
def test_lua_to_reply(body: str, expected: object) -> None:
    assert ev(KVState(), body) == expected


def test_reply_to_lua() -> None:
    state = KVState()
    state.apply_command([b"HSET", b"h", b"a", b"1"], T0)
    state.apply_command([b"ZADD", b"z", b"1.5", b"m"], T0)
    body = ("return {redis.call('set', 'k', 'v'), redis.call('get', 'k'), "
            "type(redis.call('get', 'nokey')), redis.call('hgetall', 'h'), "
            "redis.call('zscore', 'z', 'm'), redis.call('incr', 'n'), "
            "type(redis.call('set', 'k', 'v').ok)}")
    assert ev(state, body) == [Status("OK"), b"v", b"boolean", [b"a", b"1"], b"1.5", 1,
                               b"string"]
    resp3 = ("redis.setresp(3); return {type(redis.call('get', 'nokey')), "
             "redis.call('zscore', 'z', 'm').double, redis.call('hgetall', 'h').map.a}")
    assert ev(state, resp3) == [b"nil", 1, b"1"]  # the double 1.5, truncated in the reply


def test_numbers_as_command_arguments_use_17_digits() -> None:
    state = KVState()
    ev(state, "redis.call('set', 'a', 0.1); redis.call('set', 'b', 2^53); "
              "redis.call('set', 'c', 1/0)")
    assert [state.get(k, T0) for k in (b"a", b"b", b"c")] == [
        b"0.10000000000000001", b"9007199254740992", b"inf"]


def test_keys_and_argv() -> None:
    assert ev(KVState(), "return {KEYS[1], KEYS[2], ARGV[1], #KEYS, #ARGV}", "k1", "k2", "a",
              numkeys=2) == [b"k1", b"k2", b"a", 2, 1]


# ---- errors -------------------------------------------------------------------------------


def test_error_texts_are_redis_7s() -> None:
    state = KVState()
    state.apply_command([b"SET", b"s", b"x"], T0)
    body = "error('boom')"
    assert err(ev(state, body)) == (
        f"ERR user_script:1: boom script: {sha1hex(body.encode())}, on @user_script:1.")
    body = "\nredis.call('incr', 's')"
    assert err(ev(state, body)) == (
        "ERR value is not an integer or out of range script: "
        f"{sha1hex(body.encode())}, on @user_script:2.")
    assert err(ev(state, "return redis.pcall('incr', 's')")) == (
        "ERR value is not an integer or out of range")
    assert ev(state, "local ok, e = pcall(redis.call, 'nosuch'); return {tostring(ok), e}") == [
        b"false", b"ERR Unknown Redis command called from script"]
    assert err(ev(state, "return 'x' end")) == (
        "ERR Error compiling script (new function): user_script:1: '<eof>' expected near 'end'")
    assert err(ev(state, "return redis.call('set', 'k')")).startswith(
        "ERR Wrong number of args calling Redis command from script script: ")
    for name in ("multi", "exec", "eval", "script", "subscribe", "blpop", "wait", "client"):
        assert err(ev(state, f"return redis.pcall('{name}', 'x')")) == (
            "ERR This Redis command is not allowed from script"), name
    assert err(ev(state, "return redis.call({})")).startswith(
        "ERR Lua redis lib command arguments must be strings or integers script: ")


def test_a_failed_script_keeps_the_writes_before_its_error() -> None:
    state = KVState()
    reply = ev(state, "redis.call('set', 'a', '1'); error('late')")
    assert err(reply).startswith("ERR user_script:1: late")
    assert state.get(b"a", T0) == b"1"  # as in Redis: a script has no rollback


def test_numkeys_errors() -> None:
    state = KVState()
    for numkeys, message in [(b"-1", "ERR Number of keys can't be negative"),
                             (b"2", "ERR Number of keys can't be greater than number of args"),
                             (b"x", "ERR value is not an integer or out of range"),
                             (b"01", "ERR value is not an integer or out of range")]:
        assert state.apply_command([b"EVAL", b"return 1", numkeys, b"k"], T0) == (
            ErrorReply(message))


# ---- the sandbox ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["os", "io", "require", "package", "debug", "loadfile",
                                  "dofile", "print", "setfenv", "getfenv", "module", "python"])
def test_the_sandbox_has_no(name: str) -> None:
    assert f"Script attempted to access nonexistent global variable '{name}'" in err(
        ev(KVState(), f"return {name}"))


def test_globals_cannot_be_created() -> None:
    body = "x = 1"
    assert err(ev(KVState(), body)) == (
        "ERR user_script:1: Attempt to modify a readonly table script: "
        f"{sha1hex(body.encode())}, on @user_script:1.")


def test_nothing_a_script_does_to_the_interpreter_reaches_the_next() -> None:
    state = KVState()
    ev(state, "string.upper = nil")
    assert ev(state, "return string.upper('a')") == b"A"


def test_libraries_redis_bundles() -> None:
    state = KVState()
    assert ev(state, "return cjson.encode({1, 2, 'x/y'})") == b'[1,2,"x\\/y"]'
    assert ev(state, "return cjson.decode('{\"a\": [1, 2]}').a[2]") == 2
    assert ev(state, "return {bit.band(7, 3), bit.tohex(255), bit.bnot(0)}") == [
        3, b"000000ff", -1]
    assert ev(state, "return redis.sha1hex('')") == b"da39a3ee5e6b4b0d3255bfef95601890afd80709"
    assert ev(state, "return redis.REDIS_VERSION") == b"7.0.15"


# ---- determinism ---------------------------------------------------------------------------


def test_math_random_follows_the_commands_seed() -> None:
    body = "return {math.random(1000000), math.random(1000000), tostring({})}"
    first = ev(KVState(), body, seed=11)
    assert ev(KVState(), body, seed=11) == first  # every replica draws alike
    assert ev(KVState(), body, seed=12) != first
    assert first[2] == b"table: 0x00000001"  # not an address, which differs between processes
    assert ev(KVState(), "math.randomseed(5); return math.random(100)", seed=1) == ev(
        KVState(), "math.randomseed(5); return math.random(100)", seed=2)


# ---- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "redis.call('set', 'a', 'x'); while true do end",
    "redis.call('set', 'a', 'x'); while true do pcall(function() while true do end end) end",
    "redis.call('set', 'a', 'x'); while true do redis.pcall('incr', 'n') end",
    "redis.call('set', 'a', 'x'); local t = {} for i = 1, 1e8 do t[i] = i end",
    ("redis.call('set', 'a', 'x'); pcall(function() local t = {} "
     "for i = 1, 1e8 do t[i] = i end end); return 1"),
])
def test_a_script_past_its_limits_is_stopped_and_undone(body: str) -> None:
    state = KVState()
    state.apply_command([b"SET", b"keep", b"1"], T0)
    before = state.digest()
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        ev(state, body, budget=SMALL)
    assert time.monotonic() - started < 5
    assert type(raised.value).__name__ == "ScriptAborted"
    assert raised.value.reply.message.startswith("ERR script stopped")  # type: ignore[attr-defined]
    assert state.digest() == before and state.get(b"a", T0) is None


def test_the_default_instruction_budget_is_well_under_an_election_timeout() -> None:
    # What README's Limits says: script_max_instructions (100,000,000) is about 0.3 s here.
    budget = ScriptBudget(Limits().script_max_instructions // 10, 64 << 20)
    started = time.process_time()
    with pytest.raises(Exception, match="script stopped"):
        ev(KVState(), "while true do end", budget=budget)
    spent = (time.process_time() - started) * 10
    print(f"script_max_instructions {Limits().script_max_instructions:,}: about {spent:.2f} s")
    assert spent < 3.0


def test_eval_ro_refuses_writes() -> None:
    state = KVState()
    reply = state.execute_read([b"EVAL_RO", b"return redis.call('set', 'a', 'b')", b"0"], T0)
    assert err(reply).startswith(
        "ERR Write commands are not allowed from read-only scripts. script: ")
    shebang = b"#!lua flags=no-writes\nreturn redis.call('set', 'a', 'b')"
    assert err(state.apply_command([b"EVAL", shebang, b"0"], T0)).startswith(
        "ERR Write commands are not allowed from read-only scripts.")
    assert state.key_count() == 0


# ---- the script cache and SCRIPT -----------------------------------------------------------


def test_script_cache_commands() -> None:
    cache = ScriptCache(max_scripts=2, max_bytes=1 << 20, max_body_bytes=100)
    sha = cache.command([b"SCRIPT", b"LOAD", b"return 1"])
    assert sha == b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
    assert cache.command([b"SCRIPT", b"EXISTS", sha.upper(), b"abc"]) == [1, 0]
    assert cache.resolve([b"EVALSHA", sha.upper(), b"0"]) == [b"EVAL", b"return 1", b"0"]
    assert cache.resolve([b"EVALSHA_RO", b"0" * 40, b"0"]) == ErrorReply(
        "NOSCRIPT No matching script. Please use EVAL.")
    assert cache.command([b"SCRIPT", b"KILL"]) == ErrorReply(
        "NOTBUSY No scripts in execution right now.")
    assert cache.command([b"SCRIPT", b"FLUSH", b"x"]) == ErrorReply(
        "ERR SCRIPT FLUSH only support SYNC|ASYNC option")
    assert cache.command([b"SCRIPT", b"LOAD"]) == ErrorReply(
        "ERR wrong number of arguments for 'script|load' command")
    assert cache.command([b"SCRIPT", b"FOO"]) == ErrorReply(
        "ERR unknown subcommand 'FOO'. Try SCRIPT HELP.")
    assert type(cache.command([b"SCRIPT", b"LOAD", b"x" * 101])) is ErrorReply
    for body in (b"return 2", b"return 3"):  # bounded: the least recently used goes
        cache.add(body)
    assert len(cache) == 2 and cache.get(sha) is None and cache.evicted == 1
    assert cache.command([b"SCRIPT", b"FLUSH", b"ASYNC"]) == Status("OK") and len(cache) == 0


# ---- through the node core, both modes -----------------------------------------------------


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_scripts_replicate_and_every_replica_agrees(mode: str) -> None:
    c = Cluster(replication=mode)
    leader = c.elect()
    follower = next(i for i in c.ids if i != leader)
    body = ("local v = redis.call('incr', KEYS[1]); redis.call('sadd', 's', math.random(1000));"
            "redis.call('set', 'time', redis.call('time')[1]); return v")
    for i in range(3):
        assert c.call(follower, "EVAL", body, "1", "n") == i + 1
    sha = c.call(follower, "SCRIPT", "LOAD", body)
    assert c.call(follower, "EVALSHA", sha, "1", "n") == 4  # the follower forwards the body
    assert c.call(leader, "SCRIPT", "EXISTS", sha) == [0]  # the cache is the follower's
    assert c.call(follower, "EVALSHA", "0" * 40, "0") == ErrorReply(
        "NOSCRIPT No matching script. Please use EVAL.")
    assert c.call(follower, "EVALSHA_RO", sha, "1", "n") == ErrorReply(
        f"ERR Write commands are not allowed from read-only scripts. script: {sha.decode()}, "
        "on @user_script:1.")
    assert c.call(follower, "EVAL_RO", "return redis.call('get', KEYS[1])", "1", "n") == b"4"
    c.tick(5)
    assert len({c.nodes[i].digest() for i in c.ids}) == 1
    executed = [c.nodes[i].commands_executed for i in c.ids if i != leader]
    assert executed == ([0, 0] if mode == "passive" else [4, 4])  # backups never run Lua


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_a_stopped_script_is_undone_and_not_logged(mode: str) -> None:
    c = Cluster(replication=mode)
    leader = c.elect()
    c.call(leader, "SET", "keep", "1")
    # (In active mode the first EVAL also raises the cluster's feature level, an entry of its
    # own: done here, so that what follows counts only the stopped script's.)
    assert c.call(leader, "EVAL", "return 1", "0") == 1
    c.tick(2)
    node = c.nodes[leader]
    last, digest = node.raft.log.last_index, node.digest()
    reply = c.call(leader, "EVAL", "redis.call('set', 'a', 'x') while true do end", "0")
    assert err(reply).startswith("ERR script stopped: it ran past script_max_instructions")
    assert node.raft.log.last_index == last and node.digest() == digest
    assert node.scripts_stopped == 1


def test_a_script_inside_multi_and_evalsha_resolved_at_exec() -> None:
    from replikv.commands.transactions import encode_exec

    c = Cluster()
    leader = c.elect()
    sha = c.call(leader, "SCRIPT", "LOAD", "return redis.call('incr', KEYS[1])")
    exec_argv = encode_exec([[b"EVALSHA", sha, b"1", b"n"], [b"EVALSHA", b"0" * 40, b"0"],
                             [b"INCR", b"n"]])
    assert c.call(leader, *exec_argv) == [
        1, ErrorReply("NOSCRIPT No matching script. Please use EVAL."), 2]


def test_a_leader_that_loses_office_undoes_a_scripts_writes() -> None:
    c = Cluster()
    leader = c.elect()
    c.call(leader, "SET", "keep", "1")
    c.tick(2)
    before = c.nodes[leader].digest()
    others = {i for i in c.ids if i != leader}
    c.partition({leader}, others)
    c.submit(leader, "EVAL", "redis.call('set', 'a', 'x'); redis.call('del', 'keep')", "0")
    assert c.nodes[leader].state.get(b"a", c.now_ms) == b"x"  # applied ahead of its commit
    c.tick(60)  # the others elect a leader; the old one steps down
    assert not c.nodes[leader].raft.is_leader
    assert c.nodes[leader].digest() == before


def test_oom_inside_a_script_is_raised_per_command() -> None:
    c = Cluster()
    leader = c.elect()
    c.call(leader, "SET", "big", "x" * 1000)
    c.nodes[leader].maxmemory = 100
    reply = c.call(leader, "EVAL", "redis.call('del', 'big'); return redis.call('set', 'a', 'b')",
                   "0")
    assert reply == Status("OK")  # DEL made room before the SET was judged
    c.nodes[leader].maxmemory = 0
    c.call(leader, "SET", "big", "x" * 1000)
    c.nodes[leader].maxmemory = 100
    reply = c.call(leader, "EVAL", "return redis.call('set', 'a', 'c')", "0")
    assert err(reply).startswith(
        "OOM command not allowed when used memory > 'maxmemory'. script: ")
    assert c.call(leader, "EVAL", "return redis.pcall('del', 'a')", "0") == 1


def test_node_config_limits_reach_the_cache() -> None:
    limits = Limits(script_cache_max_scripts=3, script_max_body_bytes=10)
    c = Cluster()
    node = c.nodes["n1"]
    assert node.scripts.max_scripts == 10_000  # the default
    from replikv.node import NodeCore

    core = NodeCore(NodeConfig(node_id="n1", limits=limits), node.raft, KVState())
    assert core.scripts.max_scripts == 3
    assert core._scripts_on_submit([b"EVAL", b"x" * 11, b"0"]) == (None, ErrorReply(
        "ERR script too large (limit script_max_body_bytes, 10 bytes)"))


def test_the_smart_client_routes_scripts() -> None:
    from replikv.client.routing import Kind, route

    assert route(("EVAL", "return 1", 0)).kind is Kind.WRITE
    assert route(("EVALSHA", "a" * 40, 0)).kind is Kind.WRITE
    assert route(("EVAL_RO", "return 1", 0)).kind is Kind.READ
    assert route(("SCRIPT LOAD", "return 1")).kind is Kind.INFO
    assert route(("FCALL", "f", 0)).kind is Kind.WRITE
    assert route(("FCALL_RO", "f", 0)).kind is Kind.READ
    assert route(("FUNCTION", "LOAD", "#!lua name=x\n")).kind is Kind.WRITE
    assert route(("FUNCTION LIST",)).kind is Kind.WRITE  # FUNCTION is a write, LIST too
