"""FUNCTION and FCALL: Redis 7.0 functions, libraries of named Lua functions kept by the server.

A library is replicated state, unlike the script cache: FUNCTION LOAD, DELETE, FLUSH and
RESTORE are writes through the log, so every replica holds the same libraries, snapshots carry
them (an ITEM_LIBRARY record each) and the state digest covers them. FLUSHALL and FLUSHDB leave
them, as in Redis. In passive replication the leader runs the library's code (to learn the
functions it registers) and the entry carries the result, the library's name, code and
functions (EFFECT_LIBRARY_LOAD in replikv.state): a replica applying it runs no Lua. In active
replication the entry carries the command and every replica runs the code, deterministic as a
script is (replikv.scripting).

FCALL runs a function as EVAL runs a script (replikv.commands.scripts): in a Lua state of its
own, made for the call, in which the library's code runs again to register its functions and
then the one called; the same limits, the same script context, the same conversions. FCALL is a
write (through the log, even for a no-writes function, as EVAL of a `#!lua flags=no-writes`
script is); FCALL_RO is a read, and runs only no-writes functions.

Every bound is a constant here, not a node's setting: a replica applying a FUNCTION LOAD must
reach the verdict the leader reached. The libraries' code together fits one log entry, so a
FUNCTION RESTORE ... FLUSH of all of them, or a FUNCTION DUMP, does too, and its checksum is
computed in a fraction of an election timeout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replikv.commands.glob import compile_glob
from replikv.commands.scripts import script_dispatch
from replikv.commands.strings import parse_int64
from replikv.replies import CommandError, ErrorReply, Status
from replikv.resp import ProtocolError, split_inline_args
from replikv.scripting import FUNCTION_FLAGS, FunctionInfo, load_library, run_function

if TYPE_CHECKING:
    from replikv.state import KVState

# One library's code, and all libraries' code together. Well above what libraries hold (Redis's
# users write kilobytes), and small enough that a FUNCTION DUMP or RESTORE of them all, whose
# payload's CRC-64 is computed here in Python (about 0.11 s a MiB), holds a node's event loop
# for a fraction of an election timeout; and a RESTORE of them all fits one log entry.
LIBRARY_CODE_BYTES_MAX = 1024 * 1024
LIBRARIES_CODE_BYTES_MAX = 2 * 1024 * 1024
# A FUNCTION RESTORE payload: the libraries' code and the RDB framing of each (a few bytes).
DUMP_PAYLOAD_BYTES_MAX = LIBRARIES_CODE_BYTES_MAX + 64 * 1024
LIBRARIES_MAX = 1000
FUNCTIONS_MAX = 10_000  # functions of all libraries together
ENGINE = b"LUA"

ERR_NOT_FOUND = "ERR Function not found"
ERR_BAD_NAME = ("ERR Library names can only contain letters, numbers, or underscores(_) and "
                "must be at least one character long")
ERR_RESTORE_PAYLOAD = "ERR DUMP payload version or checksum are wrong"
FUNCTION_SUBCOMMANDS: dict[str, int] = {
    "load": -3, "delete": 3, "flush": -2, "list": -2, "dump": 2, "restore": -3, "stats": 2,
    "kill": 2, "help": 2,
}
FUNCTION_HELP = (
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    ("    It also possible to get only function that matches a pattern using LIBRARYNAME "
     "argument."),
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    ("    Return a serialized payload representing the current libraries, can be restored "
     "using FUNCTION RESTORE command"),
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    ("    Restore the libraries represented by the given payload, it is possible to give a "
     "restore policy to"),
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    ("    * APPEND: appends the restored libraries to the existing libraries. On collision, "
     "abort."),
    ("    * REPLACE: appends the restored libraries to the existing libraries, On collision, "
     "replace the old"),
    ("      libraries with the new libraries (notice that even on this option there is a "
     "chance of failure"),
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
)


@dataclass(frozen=True, slots=True)
class Library:
    """A loaded library: its name, its code (shebang included, as FUNCTION LIST WITHCODE
    shows it) and the functions its code registered, in registration order."""

    name: bytes
    code: bytes
    functions: tuple[FunctionInfo, ...]

    def to_record(self) -> list:
        """The library as an effect and a snapshot item carry it (msgpack-ready)."""
        return [self.name, self.code, [[f.name, list(f.flags), f.description]
                                       for f in self.functions]]


def valid_name(name: bytes) -> bool:
    """Redis's rule for library and function names: letters, digits and underscores."""
    return bool(name) and all(c == 95 or 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
                              for c in name)


def library_from_record(name: object, code: object, functions: object) -> Library | None:
    """A library from its record (an effect's or a snapshot item's), or None if the record is
    not one: the caller decides whose fault that is."""
    if type(name) is not bytes or not valid_name(name) or type(code) is not bytes:
        return None
    if type(functions) is not list or not functions or len(functions) > FUNCTIONS_MAX:
        return None
    infos: list[FunctionInfo] = []
    seen: set[bytes] = set()
    for item in functions:
        if type(item) is not list or len(item) != 3:
            return None
        fname, flags, description = item
        if type(fname) is not bytes or not valid_name(fname) or fname in seen:
            return None
        if type(flags) is not list or any(f not in FUNCTION_FLAGS for f in flags):
            return None
        if description is not None and type(description) is not bytes:
            return None
        seen.add(fname)
        infos.append(FunctionInfo(fname, tuple(f for f in FUNCTION_FLAGS if f in flags),
                                  description))
    return Library(name, code, tuple(infos))


def split_args(line: bytes) -> list[bytes] | None:
    """Redis's sdssplitargs, as inline requests are split (replikv.resp); None for what it
    cannot split (unbalanced quotes, a closing quote not ending its word)."""
    try:
        return split_inline_args(line)
    except ProtocolError:
        return None


def library_metadata(code: bytes) -> bytes:
    """The library name a code's `#!lua name=<name>` first line gives; CommandError with
    Redis's texts for a first line it does not accept."""
    if not code.startswith(b"#!"):
        raise CommandError("ERR Missing library metadata")
    end = code.find(b"\n")
    if end < 0:
        raise CommandError("ERR Invalid library metadata")
    parts = split_args(code[:end])
    if not parts:
        raise CommandError("ERR Invalid library metadata")
    engine = parts[0][2:]
    name: bytes | None = None
    for part in parts[1:]:
        if part[:5].lower() == b"name=":
            if name is not None:
                raise CommandError("ERR Invalid metadata value, name argument was given "
                                   "multiple times")
            name = part[5:]
            continue
        raise CommandError("ERR Invalid metadata value given: "
                           + part.decode("utf-8", "replace"))
    if name is None:
        raise CommandError("ERR Library name was not given")
    if not valid_name(name):
        raise CommandError(ERR_BAD_NAME)
    if engine.upper() != ENGINE:
        raise CommandError(f"ERR Engine '{engine.decode('utf-8', 'replace')}' not found")
    return name


def _check_code_size(code: bytes) -> None:
    if len(code) > LIBRARY_CODE_BYTES_MAX:
        raise CommandError(f"ERR library code too large ({len(code)} bytes; replikv's limit "
                           f"is {LIBRARY_CODE_BYTES_MAX} bytes a library)")


def _load_args(argv: list[bytes]) -> tuple[bool, bytes]:
    replace = False
    position = 2
    while position < len(argv) - 1:
        option = argv[position]
        position += 1
        if option.lower() == b"replace":
            replace = True
            continue
        raise CommandError("ERR Unknown option given: " + option.decode("utf-8", "replace"))
    return replace, argv[position]


def _list_args(argv: list[bytes]) -> tuple[bool, bytes | None]:
    with_code = False
    pattern: bytes | None = None
    i = 2
    while i < len(argv):
        arg = argv[i]
        if not with_code and arg.lower() == b"withcode":
            with_code = True
        elif pattern is None and arg.lower() == b"libraryname":
            if i >= len(argv) - 1:
                raise CommandError("ERR library name argument was not given")
            i += 1
            pattern = argv[i]
        else:
            raise CommandError("ERR Unknown argument " + arg.decode("utf-8", "replace"))
        i += 1
    return with_code, pattern


_RESTORE_POLICIES = (b"append", b"replace", b"flush")


def _restore_args(argv: list[bytes]) -> tuple[list[bytes], bytes]:
    """FUNCTION RESTORE's libraries (their code) and policy; CommandError with Redis's texts
    (and replikv's for a payload past DUMP_PAYLOAD_BYTES_MAX, whose checksum is not read)."""
    policy = b"append"
    if len(argv) > 4:
        raise _syntax_error(argv)
    if len(argv) == 4:
        policy = argv[3].lower()
        if policy not in _RESTORE_POLICIES:
            raise CommandError("ERR Wrong restore policy given, value should be either FLUSH, "
                               "APPEND or REPLACE.")
    if len(argv[2]) > DUMP_PAYLOAD_BYTES_MAX:
        raise CommandError(f"ERR DUMP payload too large ({len(argv[2])} bytes; replikv's "
                           f"limit is {DUMP_PAYLOAD_BYTES_MAX} bytes)")
    codes = decode_dump(argv[2])
    if codes is None:
        raise CommandError(ERR_RESTORE_PAYLOAD)
    return codes, policy


@dataclass(frozen=True, slots=True)
class FunctionArgs:
    """FUNCTION's arguments, and for RESTORE its payload decoded (once: its checksum costs)."""

    argv: list[bytes]
    restore: tuple[list[bytes], bytes] | None = None


def parse_function(argv: list[bytes]) -> FunctionArgs:
    """FUNCTION <subcommand> ...: what can be checked without the state (the table checked
    the subcommand and its arity), so that a malformed one never reaches the log."""
    sub = argv[1].lower()
    if sub == b"load":
        _replace, code = _load_args(argv)
        library_metadata(code)
        _check_code_size(code)
    elif sub == b"flush":
        _flush_args(argv)
    elif sub == b"list":
        _list_args(argv)
    elif sub == b"restore":
        return FunctionArgs(argv, _restore_args(argv))
    return FunctionArgs(argv)


def _syntax_error(argv: list[bytes]) -> CommandError:
    """Redis's addReplySubcommandSyntaxError: the subcommand as the client wrote it."""
    return CommandError("ERR unknown subcommand or wrong number of arguments for '"
                        + argv[1][:128].decode("utf-8", "replace") + "'. Try FUNCTION HELP.")


def _flush_args(argv: list[bytes]) -> None:
    if len(argv) > 3:
        raise _syntax_error(argv)
    if len(argv) == 3 and argv[2].lower() not in (b"sync", b"async"):
        raise CommandError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")


def run_function_command(state: KVState, args: FunctionArgs, time_ms: int) -> object:
    argv = args.argv
    sub = argv[1].lower()
    if sub == b"load":
        replace, code = _load_args(argv)
        return _load(state, code, replace)
    if sub == b"delete":
        if argv[2] not in state.libraries:
            raise CommandError("ERR Library not found")
        state.delete_library(argv[2])
        return Status("OK")
    if sub == b"flush":
        _flush_args(argv)
        state.flush_libraries()
        return Status("OK")
    if sub == b"list":
        return _list(state, *_list_args(argv))
    if sub == b"stats":
        libraries = state.libraries
        return {b"running_script": None, b"engines": {ENGINE: {
            b"libraries_count": len(libraries),
            b"functions_count": sum(len(lib.functions) for lib in libraries.values())}}}
    if sub == b"kill":
        raise CommandError("NOTBUSY No scripts in execution right now.")
    if sub == b"dump":
        return encode_dump([state.libraries[name].code for name in sorted(state.libraries)])
    if sub == b"restore":
        codes, policy = args.restore if args.restore is not None else _restore_args(argv)
        return _restore(state, codes, policy)
    return [Status(line) for line in FUNCTION_HELP]


def _compile(state: KVState, code: bytes) -> Library:
    """The library `code` defines, its code run within the script context's limits (none on
    a replica applying a committed load); CommandError with Redis's text if it fails."""
    name = library_metadata(code)
    _check_code_size(code)
    context = state.script_context
    functions = load_library(code, context.budget if context is not None else None)
    if isinstance(functions, ErrorReply):
        raise CommandError(functions.message)
    return Library(name, code, functions)


def _check_room(state: KVState, adding: list[Library], dropping: set[bytes]) -> None:
    """CommandError unless the libraries, less `dropping` and with `adding`, stay within the
    bounds: their count, their functions' count and their code's bytes."""
    kept = [lib for name, lib in state.libraries.items() if name not in dropping]
    libraries = kept + adding
    if len(libraries) > LIBRARIES_MAX:
        raise CommandError(f"ERR too many libraries (replikv's limit is {LIBRARIES_MAX})")
    if sum(len(lib.functions) for lib in libraries) > FUNCTIONS_MAX:
        raise CommandError(f"ERR too many functions (replikv's limit is {FUNCTIONS_MAX} in "
                           "all libraries)")
    if sum(len(lib.code) for lib in libraries) > LIBRARIES_CODE_BYTES_MAX:
        raise CommandError(f"ERR libraries too large (replikv's limit is "
                           f"{LIBRARIES_CODE_BYTES_MAX} bytes of code in all)")


def _load(state: KVState, code: bytes, replace: bool) -> bytes:
    name = library_metadata(code)
    if name in state.libraries and not replace:
        raise CommandError(f"ERR Library '{name.decode('utf-8', 'replace')}' already exists")
    library = _compile(state, code)
    for info in library.functions:
        owner = state.function_named(info.name)
        if owner is not None and owner[0].name != name:
            raise CommandError(f"ERR Function {info.name.decode('utf-8', 'replace')} already "
                               "exists")
    _check_room(state, [library], {name})
    state.put_library(library)
    return name


def _restore(state: KVState, codes: list[bytes], policy: bytes) -> Status:
    """FUNCTION RESTORE: every library of the payload compiled and checked first, so one that
    fails changes nothing (Redis's text for each failure)."""
    libraries: list[Library] = []
    names: set[bytes] = set()
    for code in codes:
        library = _compile(state, code)
        if library.name in names:
            raise CommandError(f"ERR Library '{library.name.decode('utf-8', 'replace')}' "
                               "already exists")
        names.add(library.name)
        libraries.append(library)
    existing = {} if policy == b"flush" else state.libraries
    dropping = set(existing) if policy == b"flush" else (
        names & set(existing) if policy == b"replace" else set())
    owners: dict[bytes, bytes] = {}
    for lib_name, lib in existing.items():
        if lib_name not in dropping:
            for info in lib.functions:
                owners[info.name.lower()] = lib_name
    for library in libraries:
        if policy == b"append" and library.name in existing:
            raise CommandError(f"ERR Library {library.name.decode('utf-8', 'replace')} "
                               "already exists")
        for info in library.functions:
            if info.name.lower() in owners:
                raise CommandError(f"ERR Function {info.name.decode('utf-8', 'replace')} "
                                   "already exists")
            owners[info.name.lower()] = library.name
    _check_room(state, libraries, set(state.libraries) if policy == b"flush" else dropping)
    if policy == b"flush":
        state.flush_libraries()
    for library in libraries:
        state.put_library(library)
    return Status("OK")


def _list(state: KVState, with_code: bool, pattern: bytes | None) -> list[object]:
    matches = compile_glob(pattern.lower()) if pattern is not None else None
    out: list[object] = []
    libraries = state.libraries
    for name in sorted(libraries):
        if matches is not None and not matches(name.lower()):
            continue
        library = libraries[name]
        entry: dict[bytes, object] = {
            b"library_name": name, b"engine": ENGINE,
            b"functions": [{b"name": f.name, b"description": f.description,
                            b"flags": frozenset(Status(flag.decode()) for flag in f.flags)}
                           for f in library.functions]}
        if with_code:
            entry[b"library_code"] = library.code
        out.append(entry)
    return out


# -- FCALL ---------------------------------------------------------------------------------------

def parse_fcall(argv: list[bytes]) -> list[bytes]:
    """FCALL and FCALL_RO are checked when run: Redis looks the function up first."""
    return argv


def _fcall(state: KVState, argv: list[bytes], time_ms: int, ro: bool) -> object:
    found = state.function_named(argv[1])
    if found is None:
        raise CommandError(ERR_NOT_FOUND)
    library, info = found
    numkeys = parse_int64(argv[2])
    if numkeys is None:
        raise CommandError("ERR Bad number of keys provided")
    if numkeys > len(argv) - 3:
        raise CommandError("ERR Number of keys can't be greater than number of args")
    if numkeys < 0:
        raise CommandError("ERR Number of keys can't be negative")
    read_only = b"no-writes" in info.flags
    if ro and not read_only:
        raise CommandError("ERR Can not execute a script with write flag using *_ro command.")
    context = state.script_context
    allow_oom = b"allow-oom" in info.flags
    if context is not None and not read_only:
        # As Redis refuses a function that may write whole over maxmemory, unless it is flagged
        # allow-oom; and here with the disk nearly full, whatever its flags.
        refusal = context.disk_refusal if allow_oom else context.refusal
        refused = refusal() if refusal is not None else None
        if refused is not None:
            raise CommandError(refused.message)
    return run_function(library.code, info.name, argv[3:3 + numkeys], argv[3 + numkeys:],
                        script_dispatch(state, read_only, time_ms, allow_oom),
                        seed=state.command_seed,
                        budget=context.budget if context is not None else None)


def run_fcall(state: KVState, argv: list[bytes], time_ms: int) -> object:
    return _fcall(state, argv, time_ms, False)


def run_fcall_ro(state: KVState, argv: list[bytes], time_ms: int) -> object:
    return _fcall(state, argv, time_ms, True)


# -- FUNCTION DUMP and RESTORE: Redis 7.0's payload ----------------------------------------------
#
# What redis-server 7.0 writes and reads: for each library the RDB opcode FUNCTION2 (245) and
# its code as an RDB string, then the RDB version (2 bytes, little-endian; 10 for 7.0) and the
# CRC-64 (Jones, reflected, as Redis's crc64.c) of everything before it, little-endian. A DUMP
# from either restores on the other. Strings are written plain; read, the RDB's length forms
# and LZF-compressed strings (Redis compresses code longer than 20 bytes) are accepted.

_RDB_OPCODE_FUNCTION2 = 245
_RDB_VERSION = 10
_RDB_ENC_LZF = 3
_CRC64_POLY = 0x95AC9329AC4BC9B5


def _crc64_table() -> list[int]:
    table: list[int] = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def crc64(data: bytes) -> int:
    crc = 0
    table = _CRC64_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _rdb_length(length: int) -> bytes:
    if length < 64:
        return bytes((length,))
    if length < 16384:
        return bytes((0x40 | (length >> 8), length & 0xFF))
    if length <= 0xFFFFFFFF:
        return b"\x80" + struct.pack(">I", length)
    return b"\x81" + struct.pack(">Q", length)


def encode_dump(codes: list[bytes]) -> bytes:
    """FUNCTION DUMP's payload for these libraries' code."""
    body = b"".join(bytes((_RDB_OPCODE_FUNCTION2,)) + _rdb_length(len(code)) + code
                    for code in codes)
    body += struct.pack("<H", _RDB_VERSION)
    return body + struct.pack("<Q", crc64(body))


class _Reader:
    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.position + count > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def length(self) -> tuple[int, bool]:
        """An RDB length, and whether it is a special encoding instead."""
        first = self.take(1)[0]
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.take(1)[0], False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return struct.unpack(">I", self.take(4))[0], False
        if first == 0x81:
            return struct.unpack(">Q", self.take(8))[0], False
        raise ValueError("bad length")

    def string(self) -> bytes:
        length, special = self.length()
        if not special:
            return self.take(length)
        if length == 0:
            return str(struct.unpack("<b", self.take(1))[0]).encode()
        if length == 1:
            return str(struct.unpack("<h", self.take(2))[0]).encode()
        if length == 2:
            return str(struct.unpack("<i", self.take(4))[0]).encode()
        if length == _RDB_ENC_LZF:
            compressed_length, special_c = self.length()
            plain_length, special_p = self.length()
            if special_c or special_p or plain_length > LIBRARY_CODE_BYTES_MAX:
                raise ValueError("bad LZF string")
            return lzf_decompress(self.take(compressed_length), plain_length)
        raise ValueError("bad string encoding")


def lzf_decompress(data: bytes, plain_length: int) -> bytes:
    """liblzf's lzf_decompress, whose output must be exactly `plain_length` bytes."""
    out = bytearray()
    i = 0
    while i < len(data):
        control = data[i]
        i += 1
        if control < 32:
            run = control + 1
            if i + run > len(data):
                raise ValueError("LZF literal past the input")
            out += data[i:i + run]
            i += run
        else:
            length = control >> 5
            if length == 7:
                if i >= len(data):
                    raise ValueError("LZF back reference past the input")
                length += data[i]
                i += 1
            if i >= len(data):
                raise ValueError("LZF back reference past the input")
            offset = ((control & 0x1F) << 8) + data[i] + 1
            i += 1
            start = len(out) - offset
            if start < 0:
                raise ValueError("LZF back reference before the output")
            for j in range(length + 2):
                out.append(out[start + j])
        if len(out) > plain_length:
            raise ValueError("LZF output too long")
    if len(out) != plain_length:
        raise ValueError("LZF output length")
    return bytes(out)


def decode_dump(payload: bytes) -> list[bytes] | None:
    """The libraries' code in a FUNCTION DUMP payload, or None if it is not one (a bad
    version or checksum, or a body that does not parse)."""
    if len(payload) < 10:
        return None
    body, footer = payload[:-8], payload[-8:]
    version = struct.unpack("<H", payload[-10:-8])[0]
    if version > _RDB_VERSION or struct.unpack("<Q", footer)[0] != crc64(body):
        return None
    reader = _Reader(payload[:-10])
    codes: list[bytes] = []
    try:
        while reader.position < len(reader.data):
            if reader.take(1)[0] != _RDB_OPCODE_FUNCTION2:
                return None
            codes.append(reader.string())
            if len(codes) > LIBRARIES_MAX:
                return None
    except (ValueError, struct.error):
        return None
    return codes
