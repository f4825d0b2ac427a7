"""FUNCTION and FCALL, differentially: the same commands go to a real redis-server (7.0) and to a
replikv state, and every reply must be the same bytes, in RESP2 and in RESP3.

Loading (good libraries and every error Redis gives for one), listing, FCALL and FCALL_RO of
reads and writes, errors raised in functions, flags, DELETE, FLUSH, FLUSHALL (which keeps the
libraries), STATS, KILL, HELP and RESTORE of a payload redis-server dumped. Left out, as
documented differences: the order of several libraries in FUNCTION LIST, of several functions
in one library, and of several flags of one function (Redis's hash order; replikv lists
libraries by name, functions in registration order): each listing here shows one library of
one function, or one flag. FUNCTION DUMP's bytes differ too (Redis compresses code with LZF,
replikv writes it plain), so a replikv dump is checked by restoring it into redis-server.
"""

from __future__ import annotations

import pytest

from replikv.state import KVState

from .test_hashes_against_redis import (  # noqa: F401  (fixtures, used by name)
    RawConnection,
    _redis_server_installed,
    redis_port,
)
from .test_scripts_against_redis import _send, run_both

T0 = 1_000_000


def _load(code: str, *options: str) -> list[bytes]:
    return [b"FUNCTION", b"LOAD", *(o.encode() for o in options), code.encode()]


def _c(*argv: str) -> list[bytes]:
    return [a.encode() for a in argv]


def _reg(name: str, body: str, lib: str | None = None) -> str:
    return f"#!lua name={lib or 'l_' + name}\nredis.register_function('{name}', {body})"


LIB1 = """#!lua name=lib1
local function setit(keys, args) return redis.call('set', keys[1], args[1]) end
redis.register_function('setit', setit)
redis.register_function{function_name='getit', callback=function(keys)
  return redis.call('get', keys[1]) end, flags={'no-writes'}, description='gets a key'}
redis.register_function('boom', function() error('bad') end)
redis.register_function('boom2', function() return redis.call('nosuch') end)
redis.register_function('boom3', function(keys) return redis.call('incr', keys[1]) end)
redis.register_function('pboom', function(keys) return redis.pcall('incr', keys[1]) end)
redis.register_function('types', function()
  return {1, 3.7, 'x', {ok = 'fine'}, false, {2, {3}}, type(string), type(cjson)} end)
redis.register_function('echo', function(keys, args) return {#keys, #args, keys, args} end)
redis.register_function('keysglobal', function() return KEYS end)
redis.register_function('setglobal', function() x = 1 end)
redis.register_function{function_name='ro_set', callback=function(keys)
  return redis.call('set', keys[1], 'x') end, flags={'no-writes'}}
redis.register_function('errreply', function() return redis.error_reply('MY custom') end)
redis.register_function('status', function() return redis.status_reply('FINE') end)
redis.register_function('resp3', function()
  redis.setresp(3); return redis.call('hgetall', 'h') end)
redis.register_function('register_late', function()
  redis.register_function('x', function() end) end)
redis.register_function('version', function() return redis.REDIS_VERSION end)
redis.register_function('sha', function() return redis.sha1hex('x') end)
"""

LOAD_ERRORS = [
    _c("FUNCTION", "LOAD", "return 1"),
    _c("FUNCTION", "LOAD", "#!lua"),
    _c("FUNCTION", "LOAD", "#!lua name=x"),
    _load("#!lua\nredis.register_function('a', function() end)"),
    _load("#!lua name=\nredis.register_function('a', function() end)"),
    _load("#!lua name=a-b\nredis.register_function('a', function() end)"),
    _load("#!lua name=x foo=bar\nredis.register_function('a', function() end)"),
    _load("#!lua name=x name=y\nredis.register_function('a', function() end)"),
    _load("#!js name=x\nredis.register_function('a', function() end)"),
    _load("#!lua name=x\nreturn 1"),
    _load("#!lua name=x\n"),
    _load("#!lua name=x\nlocal x = ("),
    _load("#!lua name=x\nlocal x = nil + 1"),
    _load("#!lua name=x\nredis.call('set', 'a', 'b')"),
    _load("#!lua name=x\nredis.pcall('set', 'a', 'b')"),
    _load("#!lua name=x\nlocal s = string.rep('a', 3)"),
    _load("#!lua name=x\nlocal t = table"),
    _load("#!lua name=x\nerror('at load')"),
    _load("#!lua name=x\nx = 1"),
    _load("#!lua name=x\nredis.register_function('a b', function() end)"),
    _load("#!lua name=x\nredis.register_function('', function() end)"),
    _load("#!lua name=x\nredis.register_function('a')"),
    _load("#!lua name=x\nredis.register_function()"),
    _load("#!lua name=x\nredis.register_function('a', function() end, 3)"),
    _load("#!lua name=x\nredis.register_function(1, 2)"),
    _load("#!lua name=x\nredis.register_function({}, function() end)"),
    _load("#!lua name=x\nredis.register_function('a', function() end)\n"
          "redis.register_function('a', function() end)"),
    _load("#!lua name=x\nredis.register_function{function_name='a', callback=function() end,"
          " flags={'no-writes', 'bad'}}"),
    _load("#!lua name=x\nredis.register_function{function_name='a', callback=function() end,"
          " flags='no-writes'}"),
    _load("#!lua name=x\nredis.register_function{function_name='a', callback=function() end,"
          " other=1}"),
    _load("#!lua name=x\nredis.register_function{callback=function() end}"),
    _load("#!lua name=x\nredis.register_function{function_name='a'}"),
    _load("#!lua name=x\nredis.register_function{function_name='a', callback=5}"),
    _load("#!lua name=x\nredis.register_function{function_name={}, callback=function() end}"),
    _load("#!lua name=x\nredis.register_function{function_name='a', callback=function() end,"
          " description={}}"),
    _load("#!lua name=x\nredis.register_function{function_name='a', callback=function() end,"
          " flags={1}}"),
    # The first line is split as Redis splits arguments (sdssplitargs): quotes and escapes.
    _load("#!lua name=\"q1\"\nredis.register_function('fq1', function() return 1 end)"),
    _load("#!lua \"name=q2\"\nredis.register_function('fq2', function() return 1 end)"),
    _load("#!lua name='q3'x\nredis.register_function('fq3', function() return 1 end)"),
    _load("#!lua name=\"q4\nredis.register_function('fq4', function() return 1 end)"),
    _load("#!lua name=\"a\\x62c\"\nredis.register_function('fq5', function() return 1 end)"),
    _load("#!lua name='q\\'6'\nredis.register_function('fq6', function() return 1 end)"),
    _load("#!\"lua\" name=q7\nredis.register_function('fq7', function() return 1 end)"),
    _load("#!lua\tname=q8\r\nredis.register_function('fq8', function() return 1 end)"),
    _load("#!lua NAME=q9\nredis.register_function('fq9', function() return 1 end)"),
    _load("#!LuA name=q10\nredis.register_function('fq10', function() return 1 end)"),
    _c("FCALL", "fq5", "0"),
    # What the load API holds, and what it does not (one library each, deleted after).
    *[step for probe in ("redis.REDIS_VERSION_NUM", "redis.LOG_WARNING", "redis.breakpoint",
                         "redis.set_repl", "redis.REPL_ALL", "redis.sha1hex", "redis.setresp",
                         "redis.error_reply", "redis.status_reply", "redis.pcall", "math",
                         "pcall", "type", "redis.log(redis.LOG_WARNING, 'loading')")
      for step in (_load(f"#!lua name=probe\nlocal x = {probe}\n"
                         "redis.register_function('probe', function() return 1 end)"),
                   _c("FUNCTION", "DELETE", "probe"))],
    _load("#!lua name=x\nredis.foo = 1"),
    _c("FUNCTION", "LOAD", "x", "y"),
    _c("FUNCTION", "LOAD", "REPLACE", "x", "y"),
    _c("FUNCTION", "LOAD"),
    _c("FUNCTION", "NOSUCH"),
    _c("FUNCTION"),
]

STEPS = [
    _c("FUNCTION", "LIST"),
    _c("FUNCTION", "STATS"),
    *LOAD_ERRORS,
    _load(LIB1),
    _load(LIB1),  # already exists
    _load(_reg("setit", "function() return 2 end", "other")),  # a function of lib1's name
    _c("SET", "s", "str"), _c("HSET", "h", "a", "1"),
    _c("FCALL", "setit", "1", "k", "v"),
    _c("FCALL", "getit", "1", "k"),
    _c("FCALL_RO", "getit", "1", "k"),
    _c("FCALL_RO", "setit", "1", "k", "v"),
    _c("FCALL", "ro_set", "1", "k"),
    _c("FCALL_RO", "ro_set", "1", "k"),
    _c("FCALL", "boom", "0"),
    _c("FCALL", "boom2", "0"),
    _c("FCALL", "boom3", "1", "s"),
    _c("FCALL", "pboom", "1", "s"),
    _c("FCALL", "types", "0"),
    _c("FCALL", "echo", "2", "a", "b", "c"),
    _c("FCALL", "echo", "0"),
    _c("FCALL", "keysglobal", "0"),
    _c("FCALL", "setglobal", "0"),
    _c("FCALL", "errreply", "0"),
    _c("FCALL", "status", "0"),
    _c("FCALL", "resp3", "0"),
    _c("FCALL", "register_late", "0"),
    _c("FCALL", "version", "0"),
    _c("FCALL", "sha", "0"),
    _c("FCALL", "nosuch", "0"),
    _c("FCALL", "SETIT", "0"),
    _c("FCALL_RO", "nosuch", "0"),
    _c("FCALL", "setit", "x"),
    _c("FCALL", "setit", "5", "a"),
    _c("FCALL", "setit", "-1"),
    _c("FCALL", "setit"),
    _c("FCALL_RO", "getit"),
    _c("FCALL"),
    _c("FUNCTION", "STATS"),
    _c("FUNCTION", "KILL"),
    _c("FUNCTION", "HELP"),
    _c("FUNCTION", "LIST", "LIBRARYNAME"),
    _c("FUNCTION", "LIST", "foo"),
    _c("FUNCTION", "LIST", "WITHCODE", "WITHCODE"),
    _c("FUNCTION", "LIST", "LIBRARYNAME", "a", "LIBRARYNAME", "b"),
    _c("FUNCTION", "LIST", "LIBRARYNAME", "nomatch*"),
    # Listing: one library of one function at a time (see the module docstring).
    _load("#!lua name=listed\nredis.register_function{function_name='lf', "
          "callback=function() return 1 end, flags={'NO-WRITES'}, description='listed one'}"),
    _c("FUNCTION", "LIST", "LIBRARYNAME", "listed"),
    _c("FUNCTION", "LIST", "LIBRARYNAME", "LIST*", "WITHCODE"),
    _c("FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "list?d"),
    _load("#!lua name=listed\nredis.register_function{function_name='lf', "
          "callback=function() return 2 end, flags={'allow-oom'}, description=5}", "REPLACE"),
    _c("FUNCTION", "LIST", "LIBRARYNAME", "listed"),
    _c("FCALL", "lf", "0"),
    _load("#!lua  name=listed\nredis.register_function('lf2', function() return 3 end)",
          "replace"),
    _c("FCALL", "lf", "0"),
    _c("FCALL", "lf2", "0"),
    _c("FUNCTION", "LIST", "LIBRARYNAME", "listed", "WITHCODE"),
    # FLUSHALL and FLUSHDB leave the libraries.
    _c("FLUSHALL"), _c("FLUSHDB"),
    _c("FCALL", "setit", "1", "k", "after"), _c("FCALL_RO", "getit", "1", "k"),
    _c("FUNCTION", "STATS"),
    _c("FUNCTION", "DELETE", "nolib"),
    _c("FUNCTION", "DELETE", "LIB1"),
    _c("FUNCTION", "DELETE"),
    _c("FUNCTION", "DELETE", "lib1"),
    _c("FCALL", "setit", "1", "k", "v"),
    _c("FUNCTION", "STATS"),
    _load(_reg("setit", "function() return 'moved' end", "other")),
    _c("FCALL", "setit", "0"),
    _c("FUNCTION", "FLUSH", "bad"),
    _c("FUNCTION", "FLUSH", "SYNC", "ASYNC"),
    _c("FUNCTION", "FLUSH", "async"),
    _c("FUNCTION", "LIST"),
    _c("FCALL", "setit", "0"),
    _load(_reg("f1", "function() return 1 end")),
    _c("FUNCTION", "FLUSH"),
    _c("FUNCTION", "STATS"),
    _c("FUNCTION", "RESTORE", "bad"),
    _c("FUNCTION", "RESTORE", ""),
    _c("FUNCTION", "RESTORE", "bad", "NOSUCH"),
    _c("FUNCTION", "RESTORE", "bad", "FLUSH", "x"),
]


def _redis_dump(port: int, libraries: list[str]) -> bytes:
    """FUNCTION DUMP of these libraries, from redis-server (which is left with none)."""
    redis = RawConnection(port, 2)
    try:
        redis.command([b"FUNCTION", b"FLUSH"])
        for code in libraries:
            assert redis.command(_load(code)) == code.split("name=")[1].split("\n")[0].encode()
        payload = redis.command([b"FUNCTION", b"DUMP"])
        redis.command([b"FUNCTION", b"FLUSH"])
    finally:
        redis.close()
    assert isinstance(payload, bytes)
    return payload


def _restore_steps(port: int) -> list[list[bytes]]:
    long_code = _reg("rf", "function() return 'restored ' .. string.rep('y', 3) end", "rlib")
    payload = _redis_dump(port, [long_code + " -- long enough for Redis to compress it",
                                 _reg("rg", "function() return 7 end", "rlib2")])
    clash = _redis_dump(port, [_reg("rf", "function() return 'other' end", "elsewhere")])
    return [
        [b"FUNCTION", b"RESTORE", payload],
        _c("FCALL", "rf", "0"), _c("FCALL", "rg", "0"),
        # APPEND: a library exists (one only: which of two Redis names is its hash order's)
        _c("FUNCTION", "DELETE", "rlib2"),
        [b"FUNCTION", b"RESTORE", payload],
        [b"FUNCTION", b"RESTORE", payload, b"APPEND"],
        _c("FCALL", "rg", "0"),
        [b"FUNCTION", b"RESTORE", payload, b"REPLACE"],
        [b"FUNCTION", b"RESTORE", clash],  # a function of another library's name
        [b"FUNCTION", b"RESTORE", clash, b"REPLACE"],
        [b"FUNCTION", b"RESTORE", payload[:-1] + bytes([payload[-1] ^ 1])],  # checksum
        _c("FUNCTION", "STATS"),
        [b"FUNCTION", b"RESTORE", clash, b"flush"],
        _c("FUNCTION", "STATS"),
        _c("FCALL", "rf", "0"), _c("FCALL", "rg", "0"),
    ]


@pytest.mark.parametrize("protocol", [2, 3])
def test_function_replies_are_redis_bytes(redis_port: int, protocol: int) -> None:  # noqa: F811
    import socket

    restore_steps = _restore_steps(redis_port)
    state = KVState()
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as sock:
        _send(sock, [b"FLUSHALL"])
        _send(sock, [b"FUNCTION", b"FLUSH"])
        if protocol == 3:
            _send(sock, [b"HELLO", b"3"])
        mismatches = run_both(sock, state, STEPS, protocol)
        mismatches += run_both(sock, state, restore_steps, protocol, len(STEPS))
    assert not mismatches, "\n".join(f"{a!r}\n  replikv: {o!r}\n  redis:   {e!r}"
                                     for a, o, e in mismatches)


def test_a_replikv_dump_restores_into_redis_and_back(redis_port: int) -> None:  # noqa: F811
    state = KVState()
    codes = [_reg("d1", "function() return 'one' end"),
             _reg("d2", "function(keys) return redis.call('get', keys[1]) end") + " -- " + "z" * 99]
    for code, name in zip(codes, (b"l_d1", b"l_d2"), strict=True):
        assert state.apply_command(_load(code), T0) == name
    payload = state.apply_command(_c("FUNCTION", "DUMP"), T0)
    assert isinstance(payload, bytes)
    redis = RawConnection(redis_port, 2)
    try:
        redis.command([b"FUNCTION", b"FLUSH"])
        assert redis.command([b"FUNCTION", b"RESTORE", payload]) == b"OK"
        assert redis.command(_c("FCALL", "d1", "0")) == b"one"
        back = redis.command([b"FUNCTION", b"DUMP"])
        redis.command([b"FUNCTION", b"FLUSH"])
    finally:
        redis.close()
    other = KVState()
    assert other.apply_command([b"FUNCTION", b"RESTORE", back], T0) == "OK"
    assert other.digest() == state.digest()
