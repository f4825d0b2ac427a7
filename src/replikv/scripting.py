"""Lua scripts (EVAL): the Lua 5.1 interpreter Redis embeds, through lupa, behind a typed facade.

This is the only module that imports lupa (which ships no type stubs). `run_script` runs one
script in a Lua state of its own, made for that call and dropped after it (creating one costs
about 40 us here), so nothing a script does to the interpreter (a library function replaced, a
metatable changed) can reach the next script: every replica that runs the same script on the
same state gets the same result, which active replication needs, and a node that restarted or
installed a snapshot is no different from one that did not.

The sandbox is Redis 7.0's: no `os`, `io`, `debug`, `require`, `package`, `loadfile`, `dofile`,
`print`, `module`, `setfenv`, `getfenv` or `newproxy`; reading a global that does not exist
and creating one are errors with Redis's texts. `math.random` and `math.randomseed` are
Redis's (the 48-bit generator of its rand.c), seeded with the command's seed, which the leader
fixes, so every replica draws alike. `tostring` of a table, function or coroutine names it by
the order it was first printed rather than by its address, which differs between processes.

Limits: the script's Lua heap is bounded (lupa's `max_memory`), and a count hook, installed
before `debug` leaves the sandbox, stops it once it has run `max_instructions` (each redis.call
counts as CALL_COST_INSTRUCTIONS as well). A script stopped either way raises ScriptAborted,
even when it caught the error with pcall: the caller undoes whatever it wrote, so nothing of it
is applied or logged. The budget is applied only by the node that decides the outcome (the
leader proposing the script, a node serving EVAL_RO); a replica applying a committed script
runs it without one, as the leader ran it to its end.

Functions (FUNCTION LOAD, FCALL; replikv.commands.functions) run in the same prelude: its last
argument names the mode. `load_library` runs a library's code with only Redis 7.0's load API in
sight (redis.register_function, redis.log, the LOG_* and version constants: the chunk's globals
are looked up in a table the prelude swaps) and returns the functions it registered;
`run_function` runs the code again in a fresh state, then calls one function with (keys, args),
its globals by then the script sandbox's. Errors name the chunk `user_function` and, for a call,
the function where a script's name its SHA1.

Conversions follow Redis 7.0 (RESP2 by default, RESP3 after `redis.setresp(3)`); error replies
of a failed script read as redis-server 7.0 prints them: `ERR user_script:1: boom script:
<sha>, on @user_script:1.`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lupa.lua51 as _lua

from replikv.replies import DoubleText, ErrorReply, KeyedArrays, NullArray, PairArray, Status

log = logging.getLogger("replikv.scripts")

# Each redis.call costs this many instructions of the budget (counted apart from the Lua
# instructions): a script looping over calls, each a Python command far dearer than a Lua
# instruction, is bounded too.
CALL_COST_INSTRUCTIONS = 1000
HOOK_EVERY_INSTRUCTIONS = 1000  # the count hook runs once per this many instructions
# Nesting of a script's reply (or a cjson value) beyond which it is an error, as Redis's
# "reached lua stack limit": a table that holds itself must not recurse forever.
REPLY_DEPTH_MAX = 512
INT64_MIN = -(1 << 63)
LOG_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING}
REDIS_VERSION = "7.0.15"  # what redis.REDIS_VERSION says: the scripting this module follows
REDIS_VERSION_NUM = 0x07000F
_LRAND48_MAX = 0x7FFFFFFF

ERR_STOPPED = ("ERR script stopped: it ran past script_max_instructions ({limit} Lua "
               "instructions, each redis.call counting {call}); nothing it wrote was applied")
ERR_HEAP = ("ERR script stopped: its Lua heap would grow past script_max_memory_bytes "
            "({limit} bytes); nothing it wrote was applied")


class ScriptError(Exception):
    """Raised into Lua by redis.call and the redis.* functions: the error reply `message`,
    which the script sees as Redis's error table {err = message}."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ScriptStop(Exception):
    """Raised into Lua when the script must stop whatever it catches (a limit, our own bug)."""


class ScriptAborted(Exception):
    """The script was stopped by a limit. The caller undoes what it wrote and answers
    `reply`: nothing of the script is applied anywhere."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class ScriptBudget:
    """What the node deciding a script's outcome bounds it by (replikv.limits)."""

    max_instructions: int
    max_memory_bytes: int


# One redis.call: (argv, read_only, resp) -> the command's reply (replikv.replies values) or
# an ErrorReply; the caller decides what a script may run.
Dispatch = Callable[[list[bytes]], object]


def sha1hex(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()


def sanitize(text: str) -> str:
    """An error or status line as Redis writes it: CR and LF become spaces."""
    return text.replace("\r", " ").replace("\n", " ")


_PRELUDE = rb"""
local body, keys, argv, budget, hook_every, py, fname = ...
local dbg, getinfo, rawpcall, rawxpcall = debug, debug.getinfo, pcall, xpcall
local rawsetfenv, rawpairs, rawselect, rawget_, G = setfenv, pairs, select, rawget, _G
local lower, find = string.lower, string.find
local rawtostring, rawtype, rawerror, co = tostring, type, error, coroutine
local MEM = 'not enough memory'
local stopped, heap = false, false
local error_of = py.error_of

-- An error as the script sees it: what a redis.call raised (Python's ScriptError) becomes
-- Redis's error table; a stopped or out-of-memory script stays stopped, whatever catches it.
local function check(e)
  if rawtype(e) == 'userdata' then
    local kind, message = error_of(e)
    if kind == 'reply' then e = {err = message}
    elseif kind == 'stop' then stopped = true
    elseif kind == 'heap' then heap = true end
  end
  if e == MEM then heap = true end
  if stopped then rawerror('script stopped', 0) end
  if heap then rawerror(MEM, 0) end
  return e
end

-- Redis 7.0's pcall: an error table's `err` is what the script sees.
local function unwrap(ok, ...)
  if ok then return true, ... end
  local e = check((...))
  if rawtype(e) == 'table' then
    local inner = e.err
    if rawtype(inner) == 'string' or rawtype(inner) == 'number' then e = inner end
  end
  return false, e
end
pcall = function(f, ...) return unwrap(rawpcall(f, ...)) end
xpcall = function(f, h)
  return rawxpcall(f, function(e) return h(check(e)) end)
end
local resume = co.resume
co.resume = function(...)
  local r = {resume(...)}
  if not r[1] then r[2] = check(r[2]) end
  return unpack(r)
end

local ids, last_id = setmetatable({}, {__mode = 'k'}), 0
tostring = function(v)
  local t = rawtype(v)
  if t == 'table' or t == 'function' or t == 'thread' or t == 'userdata' then
    local mt = getmetatable(v)
    if rawtype(mt) == 'table' and mt.__tostring then return rawtostring(v) end
    local id = ids[v]
    if not id then last_id = last_id + 1; id = last_id; ids[v] = id end
    return string.format('%s: 0x%08x', t, id)
  end
  return rawtostring(v)
end

local redis = {}
local rand, seed = py.rand, py.seed
redis.call = py.call
redis.pcall = py.pcall
local ARGS = {err = 'ERR wrong number or type of arguments'}
redis.error_reply = function(e)
  if rawtype(e) ~= 'string' then return ARGS end
  if string.sub(e, 1, 1) == '-' then e = string.sub(e, 2) end
  return {err = e}
end
redis.status_reply = function(s)
  if rawtype(s) ~= 'string' then return ARGS end
  return {ok = s}
end
redis.sha1hex = py.sha1hex
redis.log = py.log
redis.setresp = py.setresp
redis.replicate_commands = function() return true end
redis.set_repl = py.set_repl
redis.breakpoint = function() return false end
redis.debug = function() end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL =
  0, 1, 2, 2, 3
redis.REDIS_VERSION, redis.REDIS_VERSION_NUM = py.version, py.version_num

-- Redis's math.random: its rand.c generator (py.rand), seeded per command.
local floor = math.floor
math.random = function(...)
  local r = rand()
  local n = select('#', ...)
  if n == 0 then return r end
  if n == 1 then
    local u = floor(assert(tonumber((...)), "bad argument #1 to 'random' (number expected)"))
    if u < 1 then rawerror("bad argument #1 to 'random' (interval is empty)", 2) end
    return floor(r * u) + 1
  end
  if n == 2 then
    local l, u = ...
    l, u = floor(tonumber(l)), floor(tonumber(u))
    if l > u then rawerror("bad argument #2 to 'random' (interval is empty)", 2) end
    return floor(r * (u - l + 1)) + l
  end
  rawerror('wrong number of arguments', 2)
end
math.randomseed = function(s) seed(floor(tonumber(s) or 0)) end

_G.redis = redis
_G.cjson = py.cjson
_G.bit = py.bit
for _, name in ipairs({'os', 'io', 'debug', 'require', 'package', 'loadfile', 'dofile',
                       'print', 'module', 'setfenv', 'getfenv', 'newproxy', 'python'}) do
  _G[name] = nil
end
local source = fname and '@user_function' or '@user_script'
local shown = string.sub(body, 1, 2) == '#!' and '--' .. string.sub(body, 3) or body
local f, message = loadstring(shown, source)
if not f then return 'compile', message end
local NOGLOBAL = "Script attempted to access nonexistent global variable '"
local main = f
if fname then
  -- A library (FUNCTION LOAD, FCALL): its code runs with only the load API in sight (the
  -- `redis` table below), as in Redis 7.0, and registers its functions; FCALL then calls one
  -- of them, whose globals are by then the script sandbox's (the chunk's environment looks
  -- names up in `api`, which the call swaps).
  local registered, order, loading = {}, {}, true
  local function fail(text) rawerror({err = text}, 0) end
  local FLAGS = {['no-writes'] = true, ['allow-oom'] = true, ['allow-stale'] = true,
                 ['no-cluster'] = true, ['allow-cross-slot-keys'] = true}
  local function is_text(v) return rawtype(v) == 'string' or rawtype(v) == 'number' end
  local function read_flags(t)
    local out, i = {}, 1
    while true do
      local v = t[i]
      if v == nil then return out end
      if rawtype(v) ~= 'string' or not FLAGS[lower(v)] then return nil end
      out[#out + 1] = lower(v)
      i = i + 1
    end
  end
  local function register(...)
    if not loading then
      fail('ERR redis.register_function can only be called on FUNCTION LOAD command')
    end
    local n = rawselect('#', ...)
    if n < 1 or n > 2 then fail('ERR wrong number of arguments to redis.register_function') end
    local name, callback, flags, desc
    if n == 1 then
      local t = ...
      if rawtype(t) ~= 'table' then
        fail('ERR calling redis.register_function with a single argument is only applicable '
             .. 'to Lua table (representing named arguments).')
      end
      for k, v in rawpairs(t) do
        if not is_text(k) then
          fail('ERR named argument key given to redis.register_function is not a string')
        end
        local key = lower(rawtostring(k))
        if key == 'function_name' then
          if not is_text(v) then
            fail('ERR function_name argument given to redis.register_function must be a string')
          end
          name = rawtostring(v)
        elseif key == 'description' then
          if not is_text(v) then
            fail('ERR description argument given to redis.register_function must be a string')
          end
          desc = rawtostring(v)
        elseif key == 'callback' then
          if rawtype(v) ~= 'function' then
            fail('ERR callback argument given to redis.register_function must be a function')
          end
          callback = v
        elseif key == 'flags' then
          if rawtype(v) ~= 'table' then
            fail('ERR flags argument to redis.register_function must be a table representing '
                 .. 'function flags')
          end
          flags = read_flags(v)
          if not flags then fail('ERR unknown flag given') end
        else
          fail('ERR unknown argument given to redis.register_function')
        end
      end
      if not name then fail('ERR redis.register_function must get a function name argument') end
      if not callback then fail('ERR redis.register_function must get a callback argument') end
    else
      local a, b = ...
      if not is_text(a) then
        fail('ERR first argument to redis.register_function must be a string')
      end
      name = rawtostring(a)
      if rawtype(b) ~= 'function' then
        fail('ERR second argument to redis.register_function must be a function')
      end
      callback = b
    end
    if name == '' or find(name, '[^%w_]') then
      fail('ERR Library names can only contain letters, numbers, or underscores(_) and must '
           .. 'be at least one character long')
    end
    if registered[name] then fail('ERR Function already exists in the library') end
    registered[name] = callback
    order[#order + 1] = {name, flags or {}, desc or false}
  end
  local function noglobal(_, k) rawerror(NOGLOBAL .. rawtostring(k) .. "'", 2) end
  local load_redis = setmetatable({
    register_function = register, log = redis.log, LOG_DEBUG = 0, LOG_VERBOSE = 1,
    LOG_NOTICE = 2, LOG_WARNING = 3, REDIS_VERSION = redis.REDIS_VERSION,
    REDIS_VERSION_NUM = redis.REDIS_VERSION_NUM,
  }, {__index = noglobal, __metatable = false,
      __newindex = function() rawerror('Attempt to modify a readonly table', 2) end})
  local api = {redis = load_redis}
  rawsetfenv(f, setmetatable({}, {
    __index = function(_, k)
      local v = rawget_(api, k)
      if v == nil then rawerror(NOGLOBAL .. rawtostring(k) .. "'", 2) end
      return v
    end,
    __newindex = function() rawerror('Attempt to modify a readonly table', 2) end,
    __metatable = false,
  }))
  main = function()
    f()
    loading = false
    if fname == '' then return order end
    api = G
    local callback = registered[fname]
    if not callback then fail('ERR Function not found') end
    return callback(keys, argv)
  end
else
  rawset(_G, 'KEYS', keys)
  rawset(_G, 'ARGV', argv)
end
setmetatable(_G, {
  __index = function(_, k)
    rawerror("Script attempted to access nonexistent global variable '" .. rawtostring(k) .. "'", 2)
  end,
  __newindex = function() rawerror('Attempt to modify a readonly table', 2) end,
  __metatable = false,
})

-- Where an error was raised: the innermost frame of the script itself (not of this prelude,
-- nor of a C function such as error), as Redis's __redis__err__handler finds it.
local function handler(e)
  e = check(e)
  local level, info = 2, getinfo(2, 'Sl')
  while info and info.source ~= source do
    level = level + 1
    info = getinfo(level, 'Sl')
  end
  local err
  if rawtype(e) == 'table' and (rawtype(e.err) == 'string' or rawtype(e.err) == 'number') then
    err = e.err
  else
    err = 'ERR ' .. tostring(e)
  end
  if info then return {err = err, source = info.source, line = info.currentline} end
  return {err = err}
end

if budget > 0 then
  local spent = 0
  dbg.sethook(function()
    spent = spent + hook_every
    if spent > budget then stopped = true; rawerror('script stopped', 0) end
  end, '', hook_every)
end
local ok, result = rawxpcall(main, handler)
dbg.sethook()
if not ok and result == MEM then heap = true end  -- Lua calls no handler for this one
-- lupa looks up `debug` when Python reads the result: the script is over, lift the sandbox.
dbg.setmetatable(_G, nil)
rawset(_G, 'debug', dbg)
if stopped then return 'stopped' end
if heap then return 'heap' end
return ok and 'ok' or 'error', result
"""


class _Lrand48:
    """Redis's rand.c (the 48-bit linear congruential generator of drand48)."""

    __slots__ = ("x",)

    def __init__(self, seed: int) -> None:
        self.x = 0
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.x = ((seed & 0xFFFFFFFF) << 16) | 0x330E

    def next_float(self) -> float:
        self.x = (0x5DEECE66D * self.x + 0xB) & 0xFFFFFFFFFFFF
        return ((self.x >> 17) % _LRAND48_MAX) / _LRAND48_MAX


def format_number(value: float) -> bytes:
    """A Lua number as redis.call passes it to a command: C's %.17g, as Redis 7.0 writes it."""
    if math.isnan(value):
        return b"nan"
    return b"%.17g" % value


def lua_integer(value: float) -> int:
    """A Lua number returned by a script as Redis replies it: truncated to a 64-bit integer
    (C's cast; what x86 gives for NaN or a value out of range is INT64_MIN)."""
    if math.isnan(value) or not -9.223372036854775808e18 <= value < 9.223372036854775808e18:
        return INT64_MIN
    return int(value)


class _Run:
    """One script's run: the Lua state, the generator, the RESP version it asked for."""

    def __init__(self, dispatch: Dispatch, seed: int, budget: ScriptBudget | None) -> None:
        self.dispatch = dispatch
        self.rng = _Lrand48(seed)
        self.resp = 2
        self.failure: BaseException | None = None  # our own bug inside a redis.call
        self.heap = False
        self.budget = budget
        self.calls = 0
        max_memory = budget.max_memory_bytes if budget is not None else 0
        self.lua: Any = _lua.LuaRuntime(encoding=None, unpack_returned_tuples=True,
                                        register_eval=False, register_builtins=False,
                                        max_memory=max_memory or None)

    # -- what Lua calls ------------------------------------------------------------------------

    def call(self, *args: Any) -> object:
        """redis.call: the reply as Lua sees it; an error reply is raised (ScriptError)."""
        reply = self._command(args)
        if type(reply) is ErrorReply:
            raise ScriptError(reply.message)
        return self.to_lua(reply, 0)

    def pcall(self, *args: Any) -> object:
        """redis.pcall: the reply as Lua sees it, an error reply as Redis's error table."""
        reply = self._command(args)
        if type(reply) is ErrorReply:
            return self._error_table(reply)
        return self.to_lua(reply, 0)

    def _command(self, args: tuple[Any, ...]) -> object:
        if self.budget is not None:
            self.calls += 1
            if self.calls * CALL_COST_INSTRUCTIONS > self.budget.max_instructions:
                raise ScriptStop()
        if not args:
            return ErrorReply("ERR Please specify at least one argument for this redis lib call")
        argv: list[bytes] = []
        for arg in args:
            kind = type(arg)
            if kind is bytes:
                argv.append(arg)
            elif kind is int or kind is float:
                argv.append(format_number(float(arg)))
            else:
                return ErrorReply("ERR Lua redis lib command arguments must be strings or "
                                  "integers")
        try:
            return self.dispatch(argv)
        except Exception as e:  # our own bug: end the script, then stop the caller loudly
            self.failure = e
            raise ScriptStop() from e

    def error_of(self, error: Any) -> tuple[bytes | None, bytes | None]:
        """What an error a Python function raised into Lua means to the script."""
        if isinstance(error, ScriptError):
            return b"reply", error.message.encode()
        if isinstance(error, ScriptStop):
            return b"stop", None
        if isinstance(error, _lua.LuaMemoryError | MemoryError):
            self.heap = True
            return b"heap", None
        if isinstance(error, BaseException):
            self.failure = self.failure or error
            return b"stop", None
        return None, None

    def _error_table(self, error: ErrorReply) -> object:
        return self.lua.table_from({b"err": error.message.encode()})

    def sha1hex(self, *args: Any) -> bytes:
        if len(args) != 1:
            raise ScriptError("ERR wrong number of arguments")
        value = args[0]
        if type(value) in (int, float):
            value = format_number(float(value))
        if type(value) is not bytes:
            raise ScriptError("ERR wrong number of arguments")
        return sha1hex(value).encode()

    def log(self, *args: Any) -> None:
        if len(args) < 2:
            raise ScriptError("ERR redis.log() requires two arguments or more.")
        level = args[0]
        if type(level) not in (int, float) or level not in LOG_LEVELS:
            raise ScriptError("ERR Invalid debug level.")
        parts = [a.decode("utf-8", "replace") if type(a) is bytes else str(a) for a in args[1:]]
        log.log(LOG_LEVELS[int(level)], "script: %s", " ".join(parts))

    def setresp(self, *args: Any) -> None:
        if len(args) != 1:
            raise ScriptError("ERR redis.setresp() requires one argument.")
        if args[0] not in (2, 3):
            raise ScriptError("ERR RESP version must be 2 or 3.")
        self.resp = int(args[0])

    def set_repl(self, *args: Any) -> None:
        if len(args) != 1:
            raise ScriptError("ERR redis.set_repl() requires one argument.")
        if type(args[0]) not in (int, float) or args[0] not in (0, 1, 2, 3):
            raise ScriptError("ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, "
                              "REPL_ALL or REPL_NONE.")

    def reseed(self, seed: Any) -> None:
        self.rng.seed(int(seed))

    # -- conversions ---------------------------------------------------------------------------

    def to_lua(self, value: Any, depth: int) -> object:
        """A command's reply as a script sees it (Redis 7.0's RESP to Lua conversion)."""
        kind = type(value)
        if kind is bytes or kind is int:
            return value
        if kind is bool:
            return value if self.resp == 3 else int(value)
        if kind is str:
            return value.encode()
        if kind is Status:
            return self.lua.table_from({b"ok": str(value).encode()})
        if kind is ErrorReply:
            return self._error_table(value)
        if value is None or value is NullArray:
            return None if self.resp == 3 else False
        if kind is DoubleText:  # GEOPOS's coordinates: a double in RESP3, its text in RESP2
            if self.resp == 3:
                return self.lua.table_from({b"double": float(value)})
            return bytes(value)
        if kind is float:
            if self.resp == 3:
                return self.lua.table_from({b"double": value})
            from replikv.resp import format_double  # resp imports replies only: no cycle
            return format_double(value).encode()
        if kind is dict:
            items = value.items()
            if self.resp == 3:
                return self.lua.table_from({b"map": self.lua.table_from(
                    {self.to_lua(k, depth + 1): self.to_lua(v, depth + 1) for k, v in items})})
            flat: list[object] = []
            for k, v in items:
                flat += [self.to_lua(k, depth + 1), self.to_lua(v, depth + 1)]
            return self.lua.table_from(flat)
        if kind is KeyedArrays:  # XREAD: a map in RESP3, [key, entries] arrays in RESP2
            pairs = list(zip(value[0::2], value[1::2], strict=True))
            if self.resp == 3:
                return self.lua.table_from({b"map": self.lua.table_from(
                    {self.to_lua(k, depth + 1): self.to_lua(v, depth + 1) for k, v in pairs})})
            return self.lua.table_from([self.lua.table_from(
                [self.to_lua(k, depth + 1), self.to_lua(v, depth + 1)]) for k, v in pairs])
        if kind is set or kind is frozenset:
            members = sorted(value)
            if self.resp == 3:
                return self.lua.table_from({b"set": self.lua.table_from(
                    {self.to_lua(m, depth + 1): True for m in members})})
            return self.lua.table_from([self.to_lua(m, depth + 1) for m in members])
        if kind is list or kind is tuple or kind is PairArray:
            return self.lua.table_from([self.to_lua(v, depth + 1)
                                        for v in value])
        raise TypeError(f"no Lua form for a reply of type {kind.__name__}")

    def to_reply(self, value: Any, depth: int) -> object:
        """What a script returned, as the client's reply (Redis 7.0's Lua to RESP)."""
        if depth > REPLY_DEPTH_MAX:
            return ErrorReply("ERR reached lua stack limit")
        kind = type(value)
        if kind is bytes:
            return value
        if kind is int or kind is float:
            return lua_integer(float(value))
        if kind is bool:
            return 1 if value else None
        if value is None:
            return None
        if _lua.lua_type(value) != "table":
            return None  # a function, a coroutine or userdata: Redis answers nil
        err = value[b"err"]
        if type(err) is bytes:
            return ErrorReply(sanitize(err.decode("utf-8", "replace")))
        ok = value[b"ok"]
        if type(ok) is bytes:
            return Status(sanitize(ok.decode("utf-8", "replace")))
        double = value[b"double"]
        if type(double) in (int, float):
            return float(double)
        mapping = value[b"map"]
        if _lua.lua_type(mapping) == "table":
            return {self.to_reply(k, depth + 1): self.to_reply(v, depth + 1)
                    for k, v in mapping.items()}
        out: list[object] = []
        i = 1
        while True:
            item = value[i]
            if item is None:
                return out
            out.append(self.to_reply(item, depth + 1))
            i += 1


_PRELUDE_BYTECODE: list[bytes] = []


def _prelude_bytecode() -> bytes:
    """The prelude compiled by this process's Lua (string.dump), once."""
    if not _PRELUDE_BYTECODE:
        lua = _lua.LuaRuntime(encoding=None, register_eval=False)
        _PRELUDE_BYTECODE.append(lua.globals().string.dump(lua.compile(_PRELUDE)))
    return _PRELUDE_BYTECODE[0]


def run_script(body: bytes, keys: list[bytes], args: list[bytes], dispatch: Dispatch, *,
               seed: int, sha: str, budget: ScriptBudget | None) -> object:
    """Run the script `body` with KEYS and ARGV; each redis.call goes to `dispatch`. Returns
    the script's reply (replikv.replies values: an ErrorReply if it failed, with Redis's
    text). Raises ScriptAborted if `budget` stopped it (the caller undoes its writes)."""
    run = _Run(dispatch, seed, budget)
    try:
        return _run(run, body, keys, args, sha, budget, None)
    finally:
        # The Lua state holds the run's callbacks, which hold the run: without this the
        # state (up to script_max_memory_bytes) would wait for the garbage collector.
        run.lua = None


# Redis 7.0's script flags, in the order FUNCTION LIST names them.
FUNCTION_FLAGS = (b"no-writes", b"allow-oom", b"allow-stale", b"no-cluster",
                  b"allow-cross-slot-keys")


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """One function a library registered: its name, its flags (in FUNCTION_FLAGS order) and
    its description (None: none given)."""

    name: bytes
    flags: tuple[bytes, ...]
    description: bytes | None


def _refuse_calls(argv: list[bytes]) -> object:
    raise ScriptStop()  # a library's load code cannot reach redis.call (it is not in sight)


def load_library(code: bytes, budget: ScriptBudget | None) -> tuple[FunctionInfo, ...] | ErrorReply:
    """Run a library's code (FUNCTION LOAD) in a Lua state of its own, with only the load API
    (redis.register_function, redis.log, the LOG_* and version constants) in sight, as Redis
    7.0 does: the functions it registered, in registration order, or the error reply Redis
    gives (compile errors, errors raised by the code or by register_function). Raises
    ScriptAborted if `budget` stopped it. The caller checked the shebang."""
    run = _Run(_refuse_calls, 0, budget)
    try:
        return _run(run, code, [], [], "", budget, b"")  # type: ignore[return-value]
    finally:
        run.lua = None


def run_function(code: bytes, name: bytes, keys: list[bytes], args: list[bytes],
                 dispatch: Dispatch, *, seed: int, budget: ScriptBudget | None) -> object:
    """FCALL: load the library `code` in a Lua state of its own, then call its function
    `name` with (keys, args), as run_script runs a script (same sandbox, conversions and
    limits; errors name the function where a script's name its SHA1)."""
    run = _Run(dispatch, seed, budget)
    try:
        return _run(run, code, keys, args, name.decode("utf-8", "replace"), budget, name)
    finally:
        run.lua = None


def _library_functions(order: Any) -> tuple[FunctionInfo, ...]:
    """The load run's registrations ({name, flags, description|false} tables) as Python."""
    found: list[FunctionInfo] = []
    for i in range(1, len(order) + 1):
        entry = order[i]
        given = set(entry[2].values())
        description = entry[3]
        found.append(FunctionInfo(entry[1], tuple(f for f in FUNCTION_FLAGS if f in given),
                                  description if type(description) is bytes else None))
    return tuple(found)


def _run(run: _Run, body: bytes, keys: list[bytes], args: list[bytes], sha: str,
         budget: ScriptBudget | None, fname: bytes | None) -> object:
    lua = run.lua
    py = lua.table_from({
        b"call": run.call, b"pcall": run.pcall, b"error_of": run.error_of, b"log": run.log,
        b"setresp": run.setresp, b"set_repl": run.set_repl, b"seed": run.reseed,
        b"rand": run.rng.next_float, b"sha1hex": run.sha1hex,
        b"version": REDIS_VERSION.encode(), b"version_num": REDIS_VERSION_NUM,
        b"cjson": _cjson(lua, run), b"bit": _bit(lua),
    })
    instructions = budget.max_instructions if budget is not None else 0
    try:
        # The prelude is loaded as bytecode compiled once (loading its 5 KB of source in every
        # new state cost about 90 us a script; the bytecode loads in about 25).
        prelude = lua.globals().loadstring(_prelude_bytecode())
        outcome = prelude(body, lua.table_from(keys), lua.table_from(args), instructions,
                          HOOK_EVERY_INSTRUCTIONS, py, fname)
    except _lua.LuaMemoryError:
        outcome = (b"heap",)
    if run.failure is not None:
        raise run.failure
    kind = outcome[0] if isinstance(outcome, tuple) else outcome
    if kind == b"stopped":
        raise ScriptAborted(ErrorReply(ERR_STOPPED.format(limit=instructions,
                                                          call=CALL_COST_INSTRUCTIONS)))
    if kind == b"heap" or run.heap:
        if budget is None:  # a committed script the leader ran to its end within its limits
            raise MemoryError("a committed script ran out of memory without a limit")
        raise ScriptAborted(ErrorReply(ERR_HEAP.format(limit=budget.max_memory_bytes)))
    result: Any = outcome[1] if isinstance(outcome, tuple) and len(outcome) > 1 else None
    if fname == b"":  # a library's load
        return _load_outcome(kind, result)
    if kind == b"compile":
        message = result.decode("utf-8", "replace") if type(result) is bytes else "?"
        return ErrorReply(sanitize(f"ERR Error compiling script (new function): {message}"))
    if kind == b"error" and _lua.lua_type(result) != "table":  # an error in the handler
        text = result.decode("utf-8", "replace") if type(result) is bytes else "?"
        return ErrorReply(sanitize(f"ERR {text} script: {sha}"))
    if kind == b"error":
        err = result[b"err"]
        text = (err.decode("utf-8", "replace") if type(err) is bytes
                else format_number(float(err)).decode())
        source, line = result[b"source"], result[b"line"]
        if source is not None and line is not None:
            text += f" script: {sha}, on {source.decode('utf-8', 'replace')}:{int(line)}."
        else:
            text += f" script: {sha}"
        return ErrorReply(sanitize(text))
    return run.to_reply(result, 0)


def _load_outcome(kind: object, result: Any) -> tuple[FunctionInfo, ...] | ErrorReply:
    if kind == b"ok":
        functions = _library_functions(result)
        return functions if functions else ErrorReply("ERR No functions registered")
    if kind == b"compile":
        message = result.decode("utf-8", "replace") if type(result) is bytes else "?"
        return ErrorReply(sanitize(f"ERR Error compiling function: {message}"))
    err = result[b"err"] if _lua.lua_type(result) == "table" else result
    text = (err.decode("utf-8", "replace") if type(err) is bytes
            else format_number(float(err)).decode() if type(err) in (int, float) else "?")
    return ErrorReply(sanitize(f"ERR Error registering functions: {text}"))


# -- cjson and bit: the parts of the libraries Redis bundles that scripts commonly use --------

def _cjson(lua: Any, run: _Run) -> object:
    import json

    def encode(value: object) -> bytes:
        return json.dumps(_json_value(value, 0), separators=(",", ":"),
                          ensure_ascii=False).replace("/", "\\/").encode()

    def decode(text: object) -> object:
        if type(text) is not bytes:
            raise ValueError("bad argument #1 to 'decode' (string expected)")
        return _to_lua_json(run.lua, json.loads(text), 0)  # not `lua`: no cycle through it

    return lua.table_from({b"encode": encode, b"decode": decode})


def _json_value(value: Any, depth: int) -> object:
    if depth > REPLY_DEPTH_MAX:
        raise ValueError("Cannot serialise, excessive nesting")
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is bytes:
        return value.decode("utf-8", "surrogateescape")
    if kind is int:
        return value
    if kind is float:
        return int(value) if float(value).is_integer() and abs(value) < 1e15 else value
    if _lua.lua_type(value) != "table":
        raise ValueError(f"Cannot serialise {_lua.lua_type(value)}: type not supported")
    items = list(value.items())
    n = len(items)
    if n and all(type(k) is int and 1 <= k <= n for k, _ in items):
        out: list[object] = [None] * n
        for k, v in items:
            out[k - 1] = _json_value(v, depth + 1)
        return out
    obj: dict[str, object] = {}
    for k, v in items:
        name = k.decode("utf-8", "surrogateescape") if type(k) is bytes else (
            str(int(k)) if type(k) in (int, float) else None)
        if name is None:
            raise ValueError("Cannot serialise table: table key must be a number or string")
        obj[name] = _json_value(v, depth + 1)
    return obj


def _to_lua_json(lua: Any, value: object, depth: int) -> object:
    if depth > REPLY_DEPTH_MAX:
        raise ValueError("Found too many nested data structures")
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return lua.table_from([_to_lua_json(lua, v, depth + 1) for v in value])
    if isinstance(value, dict):
        return lua.table_from({k.encode(): _to_lua_json(lua, v, depth + 1)
                               for k, v in value.items()})
    return value


def _tobit(value: Any) -> int:
    return ((int(value) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


def _bit(lua: Any) -> object:
    """LuaBitOp's functions (32-bit, signed results), as Redis bundles them."""
    def band(*xs: Any) -> int:
        out = -1
        for x in xs:
            out &= _tobit(x)
        return _tobit(out)

    def bor(*xs: Any) -> int:
        out = 0
        for x in xs:
            out |= _tobit(x)
        return _tobit(out)

    def bxor(*xs: Any) -> int:
        out = 0
        for x in xs:
            out ^= _tobit(x)
        return _tobit(out)

    def shift(x: Any, n: Any) -> tuple[int, int]:
        return _tobit(x) & 0xFFFFFFFF, int(n) & 31

    def lshift(x: Any, n: Any) -> int:
        v, s = shift(x, n)
        return _tobit(v << s)

    def rshift(x: Any, n: Any) -> int:
        v, s = shift(x, n)
        return _tobit(v >> s)

    def arshift(x: Any, n: Any) -> int:
        return _tobit(_tobit(x) >> (int(n) & 31))

    def rol(x: Any, n: Any) -> int:
        v, s = shift(x, n)
        return _tobit((v << s) | (v >> (32 - s)))

    def ror(x: Any, n: Any) -> int:
        v, s = shift(x, n)
        return _tobit((v >> s) | (v << (32 - s)))

    def tohex(x: Any, n: Any = 8) -> bytes:
        digits = int(n)
        text = "%08x" % (_tobit(x) & 0xFFFFFFFF)
        text = text[-abs(digits):] if digits else ""
        return (text.upper() if digits < 0 else text).encode()

    return lua.table_from({
        b"tobit": _tobit, b"bnot": lambda x: _tobit(~_tobit(x)), b"band": band, b"bor": bor,
        b"bxor": bxor, b"lshift": lshift, b"rshift": rshift, b"arshift": arshift,
        b"rol": rol, b"ror": ror, b"bswap": lambda x: _tobit(int.from_bytes(
            (_tobit(x) & 0xFFFFFFFF).to_bytes(4, "little"), "big")), b"tohex": tohex,
    })
