"""Functions (FUNCTION, FCALL, FCALL_RO) as replicated state: both replication modes through the
node harness, snapshots, the digest, undo, limits and feature levels. What Redis answers is
tests/unit/test_functions_against_redis.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from replikv.commands import functions
from replikv.commands.scripts import ScriptContext
from replikv.entries import entry_keys
from replikv.features import FUNCTION_LEVEL, needed_level
from replikv.invariants import InvariantViolation
from replikv.replies import ErrorReply, Status
from replikv.scripting import ScriptBudget
from replikv.state import (
    EFFECT_LIBRARY_DELETE,
    EFFECT_LIBRARY_FLUSH,
    EFFECT_LIBRARY_LOAD,
    KVState,
    RecordDigest,
)
from replikv.storage.snapshot import ITEM_LIBRARY

from .node_harness import Cluster
from .test_storage_snapshot import restore, write_snapshot

T0 = 1_000_000
SMALL = ScriptBudget(max_instructions=5_000_000, max_memory_bytes=4 << 20)
COUNTER = """#!lua name=counter
redis.register_function('bump', function(keys, args)
  local v = redis.call('incr', keys[1])
  redis.call('sadd', 'drawn', math.random(1000))
  redis.call('set', 'time', redis.call('time')[1])
  return v
end)
redis.register_function{function_name='peek', flags={'no-writes'},
  callback=function(keys) return redis.call('get', keys[1]) end}
"""


def load(code: str, *options: str) -> list[bytes]:
    return [b"FUNCTION", b"LOAD", *(o.encode() for o in options), code.encode()]


def lib(name: str, function: str, returns: str = "1") -> str:
    return (f"#!lua name={name}\n"
            f"redis.register_function('{function}', function() return {returns} end)")


def recorded(state: KVState, *argv: str | bytes, budget: ScriptBudget | None = SMALL):
    command = [a.encode() if isinstance(a, str) else a for a in argv]
    state.script_context = ScriptContext(budget) if budget is not None else None
    try:
        return state.execute_recorded(command, T0, 5)
    finally:
        state.script_context = None


# ---- through the node core, both modes ------------------------------------------------------


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_functions_replicate_and_every_replica_agrees(mode: str) -> None:
    c = Cluster(replication=mode)
    leader = c.elect()
    follower = next(i for i in c.ids if i != leader)
    assert c.call(follower, *load(COUNTER)) == b"counter"  # forwarded to the leader
    for i in range(3):
        assert c.call(follower, "FCALL", "bump", "1", "n") == i + 1
    assert c.call(follower, "FCALL_RO", "peek", "1", "n") == b"3"
    assert c.call(follower, "FCALL_RO", "bump", "1", "n") == ErrorReply(
        "ERR Can not execute a script with write flag using *_ro command.")
    assert c.call(follower, "FCALL", "peek", "1", "n") == b"3"  # a no-writes function by FCALL
    assert c.call(leader, *load(lib("other", "f2", "'two'"))) == b"other"
    assert c.call(follower, "FUNCTION", "DELETE", "other") == Status("OK")
    assert c.call(follower, "FCALL", "f2", "0") == ErrorReply("ERR Function not found")
    assert c.call(follower, "FLUSHALL") == Status("OK")  # keys go, libraries stay
    assert c.call(follower, "FCALL", "bump", "1", "n") == 1
    listed = c.call(follower, "FUNCTION", "LIST", "LIBRARYNAME", "count*")  # through the log
    assert listed == [{b"library_name": b"counter", b"engine": b"LUA", b"functions": [
        {b"name": b"bump", b"description": None, b"flags": frozenset()},
        {b"name": b"peek", b"description": None, b"flags": frozenset({"no-writes"})}]}]
    c.tick(5)
    assert len({c.nodes[i].digest() for i in c.ids}) == 1
    for i in c.ids:
        assert set(c.nodes[i].state.libraries) == {b"counter"}
        assert c.nodes[i].state.feature_level == FUNCTION_LEVEL
    executed = [c.nodes[i].commands_executed for i in c.ids if i != leader]
    if mode == "passive":
        assert executed == [0, 0]  # backups never run Lua, the library's code neither
    else:
        assert min(executed) >= 8  # every replica ran each FUNCTION and FCALL


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_libraries_survive_a_restart_from_the_log(mode: str) -> None:
    c = Cluster(replication=mode)
    leader = c.elect()
    assert c.call(leader, *load(COUNTER)) == b"counter"
    assert c.call(leader, "FCALL", "bump", "1", "n") == 1
    c.tick(5)
    follower = next(i for i in c.ids if i != leader)
    digest = c.nodes[follower].digest()
    c.crash(follower)
    c.start(follower)
    c.tick(10)
    assert c.nodes[follower].digest() == digest
    assert b"counter" in c.nodes[follower].state.libraries


def test_a_load_stopped_by_its_limits_is_not_logged() -> None:
    c = Cluster()
    leader = c.elect()
    assert c.call(leader, *load(lib("first", "f"))) == b"first"  # raises the level first
    c.tick(2)
    node = c.nodes[leader]
    last, digest = node.raft.log.last_index, node.digest()
    reply = c.call(leader, *load("#!lua name=forever\nwhile true do end"))
    assert isinstance(reply, ErrorReply)
    assert reply.message.startswith("ERR script stopped: it ran past script_max_instructions")
    assert node.raft.log.last_index == last and node.digest() == digest


def test_a_leader_that_loses_office_undoes_a_function_load() -> None:
    c = Cluster()
    leader = c.elect()
    assert c.call(leader, *load(lib("first", "f"))) == b"first"
    c.tick(2)
    before = c.nodes[leader].digest()
    others = {i for i in c.ids if i != leader}
    c.partition({leader}, others)
    c.submit(leader, *load(lib("second", "g")))
    c.submit(leader, "FUNCTION", "DELETE", "first")
    assert set(c.nodes[leader].state.libraries) == {b"second"}  # applied ahead of its commit
    c.tick(60)
    assert not c.nodes[leader].raft.is_leader
    assert c.nodes[leader].digest() == before
    assert set(c.nodes[leader].state.libraries) == {b"first"}


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_a_member_below_the_functions_level_holds_them_back(mode: str) -> None:
    c = Cluster(replication=mode, levels={"n3": FUNCTION_LEVEL - 1})
    leader = c.elect()
    assert leader != "n3", "the harness's seed elects n1 or n2"
    last = c.nodes[leader].raft.log.last_index
    reply = c.call(leader, *load(lib("a", "f")))
    assert reply == ErrorReply(
        f"ERR FUNCTION needs every member of the cluster at feature level {FUNCTION_LEVEL} or "
        f"later, and n3 runs a replikv at level {FUNCTION_LEVEL - 1}: upgrade it first "
        "(replikv status shows each member's level)")
    assert c.nodes[leader].raft.log.last_index == last  # nothing proposed
    reply = c.call(leader, "FCALL", "f", "0")
    if mode == "active":  # FCALL is a command older replikv does not know
        assert isinstance(reply, ErrorReply) and "feature level" in reply.message
    else:  # its entry would hold effects; here there is no function
        assert reply == ErrorReply("ERR Function not found")
    for i in c.ids:
        if i != "n3":
            c.nodes[i].peer_features("n3", FUNCTION_LEVEL)
    assert c.call(leader, *load(lib("a", "f"))) == b"a"
    c.tick(2)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {FUNCTION_LEVEL}


def test_over_maxmemory_a_function_that_may_write_is_refused_whole_as_in_redis() -> None:
    c = Cluster()
    leader = c.elect()
    code = """#!lua name=oom
redis.register_function('w', function() return redis.call('set', 'a', 'b') end)
redis.register_function('d', function() return redis.call('del', 'big') end)
redis.register_function{function_name='ao', flags={'allow-oom'},
  callback=function() return redis.call('set', 'a', 'c') end}
redis.register_function{function_name='ro', flags={'no-writes'},
  callback=function() return redis.call('get', 'a') end}
"""
    assert c.call(leader, *load(code)) == b"oom"
    c.call(leader, "SET", "big", "x" * 1000)
    c.nodes[leader].maxmemory = 100
    oom = ErrorReply("OOM command not allowed when used memory > 'maxmemory'.")
    assert c.call(leader, "FCALL", "w", "0") == oom
    assert c.call(leader, "FCALL", "d", "0") == oom  # whole, though it would free memory
    assert c.call(leader, *load(lib("more", "m"))) == oom  # FUNCTION LOAD is denyoom
    assert c.call(leader, "FCALL", "ao", "0") == Status("OK")  # allow-oom: not even its SET
    assert c.call(leader, "FCALL", "ro", "0") == b"c"
    assert c.call(leader, "FCALL_RO", "ro", "0") == b"c"
    c.nodes[leader].maxmemory = 0
    misconf = ErrorReply("MISCONF the disk of the leader is nearly full")
    c.nodes[leader].disk_refusal = misconf  # allow-oom does not get past a full disk
    assert c.call(leader, "FCALL", "ao", "0") == misconf
    assert c.call(leader, "FCALL", "w", "0") == misconf
    assert c.call(leader, "FCALL", "ro", "0") == b"c"
    c.nodes[leader].disk_refusal = None
    assert c.call(leader, "FCALL", "d", "0") == 1


def test_feature_levels() -> None:
    code = load(lib("x", "f"))
    assert needed_level(code) == (FUNCTION_LEVEL, b"FUNCTION")
    assert needed_level(code, active=True)[0] == FUNCTION_LEVEL
    assert needed_level([b"FCALL", b"f", b"0"], active=True)[0] == FUNCTION_LEVEL
    assert needed_level([b"FCALL", b"f", b"0"])[0] == 1  # passive: its writes' effects


# ---- the state: effects, undo, digest, snapshots ------------------------------------------


def test_effects_rebuild_the_same_libraries_and_digest() -> None:
    leader, backup = KVState(), KVState()
    empty = leader.digest()
    steps = [load(COUNTER), load(lib("other", "f2")), [b"FCALL", b"bump", b"1", b"n"],
             [b"FUNCTION", b"DELETE", b"other"], load(lib("third", "f3")),
             load(lib("third", "f4"), "REPLACE"), [b"FLUSHALL"]]
    for argv in steps:
        reply, effects, _undo = recorded(leader, *argv)
        assert not isinstance(reply, ErrorReply), (argv, reply)
        backup.apply_effects(effects)
        assert backup.digest() == leader.digest()
    assert set(backup.libraries) == {b"counter", b"third"}
    assert backup.function_named(b"f4") is not None and backup.function_named(b"f3") is None
    assert backup.function_named(b"BUMP") is not None  # looked up case-insensitively
    assert leader.digest() != empty
    _reply, effects, _undo = recorded(leader, "FUNCTION", "FLUSH")
    assert effects == [[EFFECT_LIBRARY_FLUSH, 0]]
    assert leader.digest() == empty  # no keys, no libraries


@pytest.mark.parametrize("argv", [
    load(lib("b", "g")), ["FUNCTION", "DELETE", "a"], ["FUNCTION", "FLUSH"],
    load(lib("a", "h"), "REPLACE"), ["FCALL", "f", "0"],
])
def test_undo_restores_the_libraries(argv: list) -> None:
    state = KVState()
    state.apply_command(load(lib("a", "f", "redis.call('set', 'k', 'v')")), T0)
    before, libraries = state.digest(), dict(state.libraries)
    _reply, effects, undo = recorded(state, *argv)
    assert effects
    state.undo(undo)
    assert state.digest() == before and state.libraries == libraries
    assert state.function_named(b"f") is not None


def test_a_failed_load_or_restore_changes_nothing() -> None:
    state = KVState()
    state.apply_command(load(lib("a", "f")), T0)
    before = state.digest()
    for argv in [load(lib("a", "f")), load(lib("b", "f")), load("#!lua name=c\nlocal x = ("),
                 [b"FUNCTION", b"RESTORE", b"not a payload"],
                 [b"FUNCTION", b"RESTORE", functions.encode_dump(
                     [lib("d", "ok").encode(), b"#!lua name=e\nx = 1"]), b"FLUSH"],
                 [b"FUNCTION", b"RESTORE", functions.encode_dump([lib("a", "g").encode()])]]:
        reply, effects, _undo = recorded(state, *argv)
        assert isinstance(reply, ErrorReply), argv
        assert effects == [] and state.digest() == before
    reply, _effects, _undo = recorded(state, "FUNCTION", "RESTORE", functions.encode_dump(
        [lib("d", "ok").encode()]), "FLUSH")
    assert reply == Status("OK") and set(state.libraries) == {b"d"}


def test_a_snapshot_keeps_the_libraries(tmp_path: Path) -> None:
    state = KVState()
    for i in range(30):
        state.apply_command([b"SET", b"k%d" % i, b"v"], T0)
    state.apply_command(load(COUNTER), T0)
    state.apply_command(load(lib("second", "f2", "'two'")), T0)
    info = write_snapshot(tmp_path, state, max_items=7)
    restored, _sections, end = restore(info.path)
    assert restored.digest() == state.digest() == end.state_digest
    assert restored.key_count() == 30
    assert set(restored.libraries) == {b"counter", b"second"}
    assert restored.apply_command([b"FCALL", b"f2", b"0"], T0) == b"two"
    # A backup's check digests the records without rebuilding the state.
    cursor = state.begin_snapshot()
    records: list[list] = []
    while (batch := cursor.next_batch(5)) is not None:
        records += batch
    assert [r[0] for r in records if r[1] == ITEM_LIBRARY] == [b"counter", b"second"]
    digest = RecordDigest(state.key_count())
    digest.update(records)
    assert digest.hexdigest() == state.digest()


def test_a_snapshot_is_the_libraries_of_its_begin() -> None:
    state = KVState()
    state.apply_command(load(lib("a", "f")), T0)
    cursor = state.begin_snapshot()
    state.apply_command([b"FUNCTION", b"FLUSH"], T0)
    state.apply_command(load(lib("b", "g")), T0)
    records: list[list] = []
    while (batch := cursor.next_batch(10)) is not None:
        records += batch
    assert [r[0] for r in records] == [b"a"]
    assert KVState.from_records(records).function_named(b"f") is not None


@pytest.mark.parametrize("effect", [
    [EFFECT_LIBRARY_LOAD, b"bad-name", b"code", [[b"f", [], None]]],
    [EFFECT_LIBRARY_LOAD, b"a", b"code", []],
    [EFFECT_LIBRARY_LOAD, b"a", b"code", [[b"f", [b"no-such-flag"], None]]],
    [EFFECT_LIBRARY_LOAD, b"a", b"code", [[b"f", [], None], [b"f", [], None]]],
    [EFFECT_LIBRARY_DELETE, b"absent"],
    [EFFECT_LIBRARY_FLUSH, b"x"],
])
def test_malformed_library_effects_stop_loudly(effect: list) -> None:
    state = KVState()
    with pytest.raises(InvariantViolation):
        state.apply_effects([effect])
    assert state.libraries == {}


def test_a_function_in_two_libraries_stops_loudly() -> None:
    state = KVState()
    state.apply_command(load(lib("a", "f")), T0)
    with pytest.raises(InvariantViolation):
        state.apply_effects([[EFFECT_LIBRARY_LOAD, b"b", b"code", [[b"F", [], None]]]])


def test_library_effects_name_no_key() -> None:
    from replikv.node import encode_effects_entry

    state = KVState()
    _reply, effects, _undo = recorded(state, *load(lib("a", "f")))
    assert entry_keys(encode_effects_entry(effects, T0, None)) == []
    _reply, effects, _undo = recorded(state, "FUNCTION", "FLUSH")
    assert entry_keys(encode_effects_entry(effects, T0, None)) == []  # not FLUSHALL's


# ---- limits -------------------------------------------------------------------------------


def test_library_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    state = KVState()
    monkeypatch.setattr(functions, "LIBRARIES_MAX", 2)
    assert state.apply_command(load(lib("a", "f")), T0) == b"a"
    assert state.apply_command(load(lib("b", "g")), T0) == b"b"
    reply = state.apply_command(load(lib("c", "h")), T0)
    assert reply == ErrorReply("ERR too many libraries (replikv's limit is 2)")
    assert state.apply_command(load(lib("b", "g2"), "REPLACE"), T0) == b"b"  # a replacement
    monkeypatch.setattr(functions, "FUNCTIONS_MAX", 2)
    many = "#!lua name=b\n" + "\n".join(
        f"redis.register_function('m{i}', function() end)" for i in range(2))
    assert state.apply_command(load(many, "REPLACE"), T0) == ErrorReply(
        "ERR too many functions (replikv's limit is 2 in all libraries)")
    monkeypatch.setattr(functions, "LIBRARY_CODE_BYTES_MAX", 100)
    big = lib("a", "f") + " -- " + "x" * 100
    reply = state.apply_command(load(big, "REPLACE"), T0)
    assert isinstance(reply, ErrorReply) and "library code too large" in reply.message
    assert set(state.libraries) == {b"a", b"b"}


def test_a_restore_payload_past_its_bound_is_refused_unread(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(functions, "DUMP_PAYLOAD_BYTES_MAX", 50)
    payload = functions.encode_dump([lib("a", "f").encode()])
    reply = KVState().apply_command([b"FUNCTION", b"RESTORE", payload], T0)
    assert reply == ErrorReply(f"ERR DUMP payload too large ({len(payload)} bytes; replikv's "
                               "limit is 50 bytes)")


def test_crc64_is_redis_s() -> None:
    assert functions.crc64(b"123456789") == 0xE9C6D914C4B8D9CA  # Redis's crc64.c test vector


def test_dump_payload_round_trip_and_damage() -> None:
    codes = [lib("a", "f").encode(), (lib("b", "g") + " -- " + "y" * 20000).encode()]
    payload = functions.encode_dump(codes)
    assert functions.decode_dump(payload) == codes
    for damaged in (payload[:-1], payload[:5], b"", payload[:3] + b"\x00" + payload[4:],
                    b"\x00" + payload[1:]):
        assert functions.decode_dump(damaged) is None
