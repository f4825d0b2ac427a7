"""RESP for the server side: request bytes in, argument lists out; reply values in, bytes out.

This module does no I/O (in the manner of h11): the connection code feeds whatever it read
from the socket into a `RequestParser` and takes out complete commands, and turns each reply
value (see `replikv.replies`) into RESP2 or RESP3 bytes with `encode_reply`. Keeping the codec
free of sockets lets us test it byte by byte and lets the simulator drive it directly.

Parsing follows Redis's networking.c (processMultibulkBuffer and processInlineBuffer) so that
redis-cli, redis-py, redis-benchmark and people typing into telnet all work unchanged, and the
error texts are the ones Redis sends. A ProtocolError is the client's fault; the caller replies
with its message and closes the connection, because a byte stream that failed to parse cannot
be resynchronized.

Shape, for speed and for memory safety:

- Every count and length the client declares is checked against `Limits` before we act on it,
  and nothing is allocated from a declared count: an argument list grows as arguments arrive,
  and a bulk payload is buffered only after its declared length has been accepted.
- Received bytes collect in a bytearray. When a pass can make progress we copy the unparsed
  bytes once into an immutable `bytes` and parse every complete command in it, because slicing
  `bytes` yields each argument with a single copy and `bytes.find` / `int` do the scanning in C.
  The commands of one pass wait in a queue that `get_command` hands out one at a time.
- Most commands are "plain": canonical headers and no CRLF inside an argument. For those a
  fast path splits a window of input on CRLF in one C call and checks each piece against the
  length its header declared, about twice as fast as walking header by header. Anything else
  goes to the general code, which accepts a superset and owns every error message.
- A pass that cannot make progress is avoided rather than repeated: while a bulk payload is
  incomplete we remember how many bytes it still needs, and while a line is incomplete we
  remember how far it has been searched, so feeding a large request in small pieces stays
  linear.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from replikv.invariants import invariant
from replikv.limits import DEFAULT_LIMITS, KIB, Limits
from replikv.replies import DoubleText, ErrorReply, KeyedArrays, NullArray, PairArray, Status

__all__ = [
    "ProtocolError",
    "RequestParser",
    "encode_command",
    "encode_replies",
    "encode_reply",
    "format_double",
    "split_inline_args",
]

# Redis's PROTO_INLINE_MAX_SIZE, which it also applies to the `*<n>` and `$<len>` header lines:
# a header is a few digits, so 64 KiB without a CRLF is a client speaking something else.
MAX_HEADER_LINE_BYTES = 64 * KIB

# string2ll accepts the range of a signed 64-bit integer.
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)

# Header numbers are almost always small; looking them up skips validation and int() on the
# hot path. Only canonical spellings are keys, so the lookup accepts nothing string2ll rejects.
_SMALL_NUMBERS: dict[bytes, int] = {b"%d" % i: i for i in range(1024)}
# The same, spelled as whole header lines, for the fast path (`*0` is not a plain command).
_PLAIN_COUNTS: dict[bytes, int] = {b"*%d" % i: i for i in range(1, 1024)}
_PLAIN_LENGTHS: dict[bytes, int] = {b"$%d" % i: i for i in range(1024)}
# How much input the fast path splits at a time: enough for a hundred typical commands, small
# enough that a failed attempt (a command larger than this) costs little.
_FAST_WINDOW_BYTES = 16 * KIB

_MSG_MBULK_LENGTH = "ERR Protocol error: invalid multibulk length"
_MSG_BULK_LENGTH = "ERR Protocol error: invalid bulk length"
_MSG_MBULK_TOO_BIG = "ERR Protocol error: too big mbulk count string"
_MSG_BULK_TOO_BIG = "ERR Protocol error: too big bulk count string"
_MSG_NO_CRLF = "ERR Protocol error: expected CRLF after bulk data"
_MSG_INLINE_TOO_BIG = "ERR Protocol error: too big inline request"
_MSG_UNBALANCED = "ERR Protocol error: unbalanced quotes in request"
_MSG_UNAUTH_MBULK = "ERR Protocol error: unauthenticated multibulk length"
_MSG_UNAUTH_BULK = "ERR Protocol error: unauthenticated bulk length"

# Before a client has authenticated on a node with a password, its requests are held to these
# (Redis's own limits for the same case), so that a client without the password cannot make a
# node buffer large arguments: AUTH and HELLO need no more.
UNAUTHENTICATED_ARGS_MAX = 10
UNAUTHENTICATED_BULK_BYTES_MAX = 16 * KIB


class ProtocolError(Exception):
    """The client sent bytes that are not a valid request; the connection must be closed.

    `message` is the complete error text, code included, ready to send as an error reply
    before closing (as Redis does), e.g. "ERR Protocol error: invalid bulk length".
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def reply(self) -> ErrorReply:
        return ErrorReply(self.message)


def _parse_number(text: bytes) -> int | None:
    """The value of `text` under Redis's string2ll rules, or None if it is not a number.

    string2ll accepts an optional '-' and decimal digits without leading zeros, within 64
    bits; int() alone would also take '+', spaces and underscores, which Redis rejects.
    """
    if text.isdigit():  # bytes.isdigit is ASCII only and False for b""
        if (text[0] == 0x30 and len(text) > 1) or len(text) > 19:
            return None
        value = int(text)
        return value if value <= _INT64_MAX else None
    if text[:1] == b"-":
        digits = text[1:]
        if not digits.isdigit() or digits[0] == 0x30 or len(digits) > 19:
            return None
        value = -int(digits)
        return value if value >= _INT64_MIN else None
    return None


def _byte_for_message(byte: int) -> str:
    # Redis prints the raw byte with %c; we keep messages printable ASCII so that an error
    # reply never carries a control character or an invalid UTF-8 sequence.
    if 0x20 <= byte < 0x7F:
        return chr(byte)
    return f"\\x{byte:02x}"


# The characters C's isspace() accepts, which sdssplitargs skips between arguments.
_C_SPACE = frozenset(b" \t\n\r\v\f")
# The characters that end an unquoted argument in sdssplitargs (it also stops at NUL, the end
# of a C string; we have explicit lengths, so NUL is an ordinary byte here).
_WORD_END = frozenset(b" \t\n\r")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = {ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09, ord("b"): 0x08, ord("a"): 0x07}
_BACKSLASH = 0x5C
_DOUBLE_QUOTE = 0x22
_SINGLE_QUOTE = 0x27


def split_inline_args(line: bytes) -> list[bytes]:
    """Split an inline request line into arguments as Redis's sdssplitargs does.

    Whitespace separates arguments. Inside "double quotes" the escapes \\n \\r \\t \\b \\a and
    \\xHH are decoded and a backslash before any other character yields that character; inside
    'single quotes' only \\' is an escape. A closing quote must be followed by whitespace or
    the end of the line. Raises ProtocolError on unbalanced quotes (or a closing quote
    followed by something else, which Redis reports the same way).
    """
    # Lines without quotes (nearly all of them) split exactly like bytes.split() as long as
    # they hold no \v or \f, which sdssplitargs skips between words but keeps inside one.
    if b'"' not in line and b"'" not in line and b"\v" not in line and b"\f" not in line:
        return line.split()
    args: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in _C_SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            c = line[i] if i < n else -1  # -1 stands for the end of the line
            if in_double:
                if (
                    c == _BACKSLASH
                    and i + 3 < n
                    and line[i + 1] == 0x78  # 'x'
                    and line[i + 2] in _HEX_DIGITS
                    and line[i + 3] in _HEX_DIGITS
                ):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == _BACKSLASH and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == _DOUBLE_QUOTE:
                    if i + 1 < n and line[i + 1] not in _C_SPACE:
                        raise ProtocolError(_MSG_UNBALANCED)
                    i += 1
                    break
                elif c == -1:
                    raise ProtocolError(_MSG_UNBALANCED)
                else:
                    current.append(c)
            elif in_single:
                if c == _BACKSLASH and i + 1 < n and line[i + 1] == _SINGLE_QUOTE:
                    i += 1
                    current.append(_SINGLE_QUOTE)
                elif c == _SINGLE_QUOTE:
                    if i + 1 < n and line[i + 1] not in _C_SPACE:
                        raise ProtocolError(_MSG_UNBALANCED)
                    i += 1
                    break
                elif c == -1:
                    raise ProtocolError(_MSG_UNBALANCED)
                else:
                    current.append(c)
            elif c == -1 or c in _WORD_END:
                break
            elif c == _DOUBLE_QUOTE:
                in_double = True
            elif c == _SINGLE_QUOTE:
                in_single = True
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))


class RequestParser:
    """Turns the bytes a client sends into commands (lists of byte-string arguments).

    Call `feed` with each chunk read from the connection, then `get_command` until it returns
    None. A ProtocolError from `get_command` means the connection must be closed; the parser
    stays broken and raises the same error again. Commands that were complete before the bad
    bytes are still returned first, so a pipeline's good commands run before the error is
    sent, as in Redis.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._max_bulk_bytes = limits.max_bulk_bytes
        self._max_command_args = limits.max_command_args
        self._max_inline_bytes = limits.max_inline_bytes
        self._buf = bytearray()  # received, not yet parsed; parsing starts at index 0
        self._ready: deque[list[bytes]] = deque()  # parsed, not yet handed out
        self._error: ProtocolError | None = None  # raised once `_ready` is drained
        # A multibulk request in progress: the arguments so far and how many are still due.
        self._args: list[bytes] = []
        self._args_due = 0
        self._args_bytes = 0  # payload bytes held in `_args`
        # The length of the bulk payload that `_buf` starts with once its header was read;
        # -1 when not inside a payload.
        self._bulk_len = -1
        # `get_command` does nothing until `_buf` holds at least this many bytes.
        self._need_bytes = 1
        # An incomplete line at the start of `_buf` was searched up to here for its
        # terminator (b"\r\n" for headers, b"\n" for inline); 0 when there is none.
        self._line_scanned = 0
        self._line_end = b"\n"
        self._fast_path = True  # tests turn it off to compare with the general code
        # Unauthenticated (see `set_authenticated`): one command per pass, smaller limits.
        self._unauthenticated = False
        self._limits = limits

    def set_authenticated(self, authenticated: bool) -> None:
        """Whether the client has authenticated (only on a node with a password).

        Until it has, the parser holds requests to UNAUTHENTICATED_ARGS_MAX arguments of at
        most UNAUTHENTICATED_BULK_BYTES_MAX bytes (Redis's texts for the errors), and parses
        one command at a time, so that the commands after a pipelined `AUTH` are parsed with
        the limits that apply once it has run.
        """
        self._unauthenticated = not authenticated
        limits = self._limits
        if authenticated:
            self._max_bulk_bytes = limits.max_bulk_bytes
            self._max_command_args = limits.max_command_args
            self._fast_path = True
        else:
            self._max_bulk_bytes = min(limits.max_bulk_bytes, UNAUTHENTICATED_BULK_BYTES_MAX)
            self._max_command_args = min(limits.max_command_args, UNAUTHENTICATED_ARGS_MAX)
            self._fast_path = False

    def feed(self, data: bytes) -> None:
        """Add bytes received from the client. Never parses, so never raises."""
        self._buf += data

    def buffered_bytes(self) -> int:
        """Bytes received that belong to commands not yet complete.

        Counts unparsed input and the payload of arguments already taken from an unfinished
        command; parsed commands waiting in the queue are not counted.
        """
        return len(self._buf) + self._args_bytes

    def get_command(self) -> list[bytes] | None:
        """The next complete command, or None if more bytes are needed.

        Empty requests (`*0`, `*-1`, blank inline lines) are skipped. Raises ProtocolError if
        the client sent something we cannot parse.
        """
        ready = self._ready
        if ready:
            return ready.popleft()
        if self._error is not None:
            raise self._error
        if len(self._buf) < self._need_bytes:
            return None
        try:
            self._parse()
        except ProtocolError as error:
            self._error = error
        if ready:
            return ready.popleft()
        if self._error is not None:
            raise self._error
        return None

    def peek_command(self) -> list[bytes] | None:
        """The command `get_command` would return next, left in place; None if more bytes are
        needed or the client sent something we cannot parse (`get_command` raises it)."""
        ready = self._ready
        if not ready and self._error is None and len(self._buf) >= self._need_bytes:
            try:
                self._parse()
            except ProtocolError as error:
                self._error = error
        return ready[0] if ready else None

    # -- parsing -------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        if self._bulk_len >= 0:
            self._finish_bulk()
            if self._unauthenticated and self._ready:
                return  # one command at a time (see set_authenticated)
        elif self._line_scanned:
            # The buffer starts with an incomplete line. Look only at the new bytes for its
            # end; if there is none yet and the line may still grow, there is nothing to do.
            end = self._line_end
            window = self._max_inline_bytes + 1 if end == b"\n" else MAX_HEADER_LINE_BYTES + 2
            if buf.find(end, self._line_scanned, window) < 0 and len(buf) < window:
                self._wait_for_line(len(buf), end)
                return
            self._line_scanned = 0
        if not buf:
            return
        data = bytes(buf)
        consumed = 0
        try:
            consumed = self._parse_data(data)
        finally:
            del buf[:consumed]

    def _too_many_args_message(self, count: int) -> str:
        if self._unauthenticated and count <= self._limits.max_command_args:
            return _MSG_UNAUTH_MBULK
        return _MSG_MBULK_LENGTH

    def _too_long_message(self, length: int) -> str:
        if self._unauthenticated and length <= self._limits.max_bulk_bytes:
            return _MSG_UNAUTH_BULK
        return _MSG_BULK_LENGTH

    def _finish_bulk(self) -> None:
        """Take the bulk payload at the start of the buffer, now that it has fully arrived."""
        buf = self._buf
        length = self._bulk_len
        invariant(len(buf) >= length + 2, "bulk payload taken before it arrived")
        if buf[length] != 0x0D or buf[length + 1] != 0x0A:
            raise ProtocolError(_MSG_NO_CRLF)
        with memoryview(buf) as view:
            arg = view[:length].tobytes()  # one copy, however large the payload
        del buf[: length + 2]
        self._bulk_len = -1
        self._need_bytes = 1
        self._add_arg(arg)

    def _add_arg(self, arg: bytes) -> None:
        self._args.append(arg)
        self._args_due -= 1
        if self._args_due:
            self._args_bytes += len(arg)
        else:
            self._ready.append(self._args)
            self._args = []
            self._args_bytes = 0

    def _parse_data(self, data: bytes) -> int:
        """Parse complete commands from `data` into the queue; return the bytes consumed.

        On return the parser's fields describe where the unconsumed rest of `data` begins: a
        new request, a bulk header, a bulk payload (`_bulk_len`) or an incomplete line. On a
        ProtocolError the consumed count is lost, which is fine: the parser is broken for good.
        """
        # Everything used per argument is a local: this loop is most of the server's parsing
        # time. Literals stand in for named constants for the same reason: 42 is '*', 36 is
        # '$', 13 and 10 are CR and LF.
        ready_append = self._ready.append
        find = data.find
        end = len(data)
        small_numbers_get = _SMALL_NUMBERS.get
        max_bulk_bytes = self._max_bulk_bytes
        max_command_args = self._max_command_args
        header_window = MAX_HEADER_LINE_BYTES + 2
        fast_path = self._fast_path
        one_at_a_time = self._unauthenticated
        args = self._args
        args_due = self._args_due
        args_bytes = self._args_bytes
        pos = 0
        try:
            while True:
                if not args_due:
                    # -- the start of a request --
                    if pos >= end:
                        self._need_bytes = 1
                        return pos
                    if data[pos] != 42:
                        pos = self._parse_inline(data, pos)
                        if pos < 0:
                            return -pos - 1
                        if one_at_a_time and self._ready:
                            self._need_bytes = 1
                            return pos
                        continue
                    if fast_path:
                        parsed_to = self._parse_plain_commands(data, pos)
                        if parsed_to != pos:
                            pos = parsed_to
                            continue
                        # The next command is not plain (or not all here): parse it below,
                        # then try the fast path again.
                    newline = find(b"\r\n", pos + 1, pos + header_window)
                    if newline < 0:
                        if end - pos >= header_window:
                            raise ProtocolError(_MSG_MBULK_TOO_BIG)
                        self._wait_for_line(end - pos, b"\r\n")
                        return pos
                    text = data[pos + 1 : newline]
                    count = small_numbers_get(text)
                    if count is None:
                        count = _parse_number(text)
                        if count is None:
                            raise ProtocolError(_MSG_MBULK_LENGTH)
                    pos = newline + 2
                    if count <= 0:
                        continue  # an empty request, which Redis ignores
                    if count > max_command_args:
                        raise ProtocolError(self._too_many_args_message(count))
                    args_due = count
                    args = []
                    args_bytes = 0
                args_append = args.append
                # -- the arguments, one bulk string each --
                while True:
                    if pos >= end:
                        self._need_bytes = 1
                        return pos
                    if data[pos] != 36:
                        got = _byte_for_message(data[pos])
                        raise ProtocolError(f"ERR Protocol error: expected '$', got '{got}'")
                    newline = find(b"\r\n", pos + 1, pos + header_window)
                    if newline < 0:
                        if end - pos >= header_window:
                            raise ProtocolError(_MSG_BULK_TOO_BIG)
                        self._wait_for_line(end - pos, b"\r\n")
                        return pos
                    text = data[pos + 1 : newline]
                    length = small_numbers_get(text)
                    if length is None:
                        length = _parse_number(text)
                        if length is None or length < 0:
                            raise ProtocolError(_MSG_BULK_LENGTH)
                    if length > max_bulk_bytes:
                        raise ProtocolError(self._too_long_message(length))
                    start = newline + 2
                    pos = start + length
                    if pos + 2 > end:
                        # The payload has not all arrived: consume the header and wait for the
                        # exact number of bytes still missing instead of reparsing each feed.
                        self._bulk_len = length
                        self._need_bytes = length + 2
                        return start
                    if data[pos] != 13 or data[pos + 1] != 10:
                        raise ProtocolError(_MSG_NO_CRLF)
                    args_append(data[start:pos])
                    pos += 2
                    args_due -= 1
                    if not args_due:
                        ready_append(args)
                        if one_at_a_time:
                            self._need_bytes = 1
                            return pos
                        break
                    args_bytes += length
        finally:
            self._args = args if args_due else []
            self._args_due = args_due
            self._args_bytes = args_bytes if args_due else 0

    def _parse_plain_commands(self, data: bytes, pos: int) -> int:
        """Parse the plain multibulk commands that start at `pos`; return where they end.

        The fast path. A command is plain when its headers are spelled canonically and no
        argument contains CRLF, which is nearly every command real clients send. Splitting a
        window of the input on CRLF in C then leaves one list item per header and argument,
        so each argument costs a dict lookup and a length check. The first command that is
        not plain, or not wholly inside the window, stops it; `_parse_data` parses that one
        with the general code, which accepts a superset and reports the errors. Everything
        accepted here is accepted identically there (a test checks this).
        """
        window = data[pos : pos + _FAST_WINDOW_BYTES]
        parts = window.split(b"\r\n")
        # The last part is not followed by CRLF inside the window, so it may be incomplete.
        last = len(parts) - 1
        counts_get = _PLAIN_COUNTS.get
        lengths_get = _PLAIN_LENGTHS.get
        max_bulk_bytes = self._max_bulk_bytes
        max_command_args = self._max_command_args
        ready_append = self._ready.append
        i = 0
        while i < last:
            head = parts[i]
            count = counts_get(head)
            if count is None or count > max_command_args or i + 2 * count >= last:
                break
            size = len(head) + 2
            args: list[bytes] = []
            args_append = args.append
            first = i + 1
            i = first + 2 * count  # where the next command starts
            for j in range(first, i, 2):
                header = parts[j]
                length = lengths_get(header)
                if length is None:
                    # Longer arguments: still plain if the header is canonical.
                    if header[:1] != b"$":
                        return pos
                    length = _parse_number(header[1:])
                    if length is None:  # (a negative one matches no payload below)
                        return pos
                if length > max_bulk_bytes:
                    return pos
                payload = parts[j + 1]
                if len(payload) != length:  # CRLF inside the argument
                    return pos
                args_append(payload)
                size += len(header) + length + 4
            ready_append(args)
            pos += size
        return pos

    def _parse_inline(self, data: bytes, pos: int) -> int:
        """Parse the inline request at `pos`; return where the next request starts.

        Returns -(pos + 1) when the line is incomplete and parsing must stop at `pos`.
        """
        limit = self._max_inline_bytes
        newline = data.find(b"\n", pos, pos + limit + 1)
        if newline < 0:
            if len(data) - pos > limit:
                raise ProtocolError(_MSG_INLINE_TOO_BIG)
            self._wait_for_line(len(data) - pos, b"\n")
            return -pos - 1
        stop = newline
        if stop > pos and data[stop - 1] == 0x0D:
            stop -= 1
        args = split_inline_args(data[pos:stop])
        if args:
            self._ready.append(args)
        return newline + 1

    def _wait_for_line(self, have_bytes: int, line_end: bytes) -> None:
        # The next search can start where this one stopped, less one byte for a CR whose
        # LF has not arrived yet.
        self._line_end = line_end
        self._line_scanned = max(1, have_bytes - len(line_end) + 1)
        self._need_bytes = have_bytes + 1


# -- reply encoding -----------------------------------------------------------------------

_NULL_BULK = b"$-1\r\n"
_NULL_ARRAY = b"*-1\r\n"
_NULL_RESP3 = b"_\r\n"
_CRLF = b"\r\n"
_STATUS_CACHE: dict[str, bytes] = {}
_SMALL_INT_REPLIES = [b":%d\r\n" % i for i in range(1024)]


def format_double(value: float) -> str:
    """A double as Redis 7.2 and later write it (util.c's d2string, which ZSCORE, ZRANGE ...
    WITHSCORES and every RESP3 double go through): "nan", "inf", "-inf", "0" or "-0"; an
    integral value of magnitude at most 2^62 as an integer ("3", "100000000000000000");
    anything else as the shortest digits that read back as the same double, laid out as
    fpconv_dtoa lays them out: plainly while the decimal exponent is small ("0.1", "0.00001",
    "123.456", "9223372036854776000"), in scientific notation with an exponent of as few
    digits as it takes otherwise ("1e-7", "1.5e+300", "1e+20").

    Redis finds its digits with Grisu2, which for a small share of doubles (well under one
    in a hundred) gives one digit more than the shortest; Python's repr always gives the
    shortest, so those few print differently (both read back as the same double).
    """
    if math.isnan(value):
        return "nan"
    if value == math.inf:
        return "inf"
    if value == -math.inf:
        return "-inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if -_DOUBLE_AS_INT_MAX <= value <= _DOUBLE_AS_INT_MAX and value.is_integer():
        return str(int(value))  # exact: an integral double is an integer
    negative = value < 0
    digits, exponent = _shortest_digits(-value if negative else value)
    sign = "-" if negative else ""
    count = len(digits)
    scientific = abs(exponent + count - 1)  # the exponent of d.ddd
    if exponent >= 0 and scientific < count + 7:
        return sign + digits + "0" * exponent
    if exponent < 0 and (exponent > -7 or scientific < 4):
        point = count + exponent  # digits before the decimal point
        if point <= 0:
            return sign + "0." + "0" * -point + digits
        return sign + digits[:point] + "." + digits[point:]
    mantissa = digits[0] + ("." + digits[1:] if count > 1 else "")
    return f"{sign}{mantissa}e{'-' if exponent + count - 1 < 0 else '+'}{scientific}"


# Redis prints a double as an integer when it is integral and within +-(LLONG_MAX / 2) (its
# double2ll): 2^62 as a double.
_DOUBLE_AS_INT_MAX = float((1 << 63) // 2)


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits of a positive finite double and their exponent:
    value == int(digits) * 10 ** exponent, digits without leading or trailing zeros."""
    text = repr(value)
    mantissa, _, power = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    exponent = (int(power) if power else 0) - len(fraction)
    stripped = digits.rstrip("0")
    return stripped, exponent + len(digits) - len(stripped)


def _status_bytes(value: str) -> bytes:
    encoded = _STATUS_CACHE.get(value)
    if encoded is None:
        invariant(
            "\r" not in value and "\n" not in value,
            f"status reply contains CR or LF: {value!r}",
        )
        encoded = b"+" + value.encode() + _CRLF
        if len(_STATUS_CACHE) < 256:  # statuses are a handful of constants; bound it anyway
            _STATUS_CACHE[value] = encoded
    return encoded


def _encode_into(value: object, protocol: int, out: list[bytes]) -> None:
    """Append the RESP encoding of `value` to `out`, recursing into containers."""
    append = out.append
    kind = type(value)
    if kind is bytes:
        append(b"$%d\r\n" % len(value))  # type: ignore[arg-type]
        append(value)  # type: ignore[arg-type]
        append(_CRLF)
    elif kind is Status:
        append(_status_bytes(value))  # type: ignore[arg-type]
    elif kind is int:
        append(b":%d\r\n" % value)  # type: ignore[str-format]
    elif value is None:
        append(_NULL_BULK if protocol == 2 else _NULL_RESP3)
    elif kind is list or kind is tuple:
        append(b"*%d\r\n" % len(value))  # type: ignore[arg-type]
        if len(value) >= _BULK_ARRAY_FAST_MIN:  # type: ignore[arg-type]
            # KEYS, SMEMBERS, MGET: an array of bulk strings and nils, framed in one
            # comprehension (twice as fast as an item at a time). Any other item becomes None
            # there, and then the general path below does the work.
            null = _NULL_BULK if protocol == 2 else _NULL_RESP3
            bulks = [b"$%d\r\n%b\r\n" % (len(item), item) if type(item) is bytes
                     else null if item is None else None
                     for item in value]  # type: ignore[attr-defined]
            if None not in bulks:
                out.extend(bulks)  # type: ignore[arg-type]
                return
        for item in value:  # type: ignore[attr-defined]
            _encode_into(item, protocol, out)
    elif kind is DoubleText:  # before bytes: it is one
        text = bytes(value)  # type: ignore[call-overload]
        if protocol == 2:
            append(b"$%d\r\n" % len(text))
            append(text)
            append(_CRLF)
        else:
            append(b"," + text + _CRLF)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = value.tobytes() if isinstance(value, memoryview) else bytes(value)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(_CRLF)
    elif isinstance(value, Status):
        append(_status_bytes(value))
    elif isinstance(value, str):
        data = value.encode()
        append(b"$%d\r\n" % len(data))
        append(data)
        append(_CRLF)
    elif isinstance(value, ErrorReply):
        # An error reply is one line; a message that spans lines (say, one quoting the
        # client's input) must not break the framing, so Redis flattens it and so do we.
        message = value.message.replace("\r", " ").replace("\n", " ")
        append(b"-" + message.encode() + _CRLF)
    elif isinstance(value, bool):  # before int: bool is an int
        if protocol == 2:
            append(b":1\r\n" if value else b":0\r\n")
        else:
            append(b"#t\r\n" if value else b"#f\r\n")
    elif isinstance(value, int):
        append(b":%d\r\n" % value)
    elif isinstance(value, float):
        data = format_double(value).encode()
        if protocol == 2:
            append(b"$%d\r\n" % len(data))
            append(data)
            append(_CRLF)
        else:
            append(b"," + data + _CRLF)
    elif value is NullArray:
        append(_NULL_ARRAY if protocol == 2 else _NULL_RESP3)
    elif isinstance(value, KeyedArrays):  # before list: it is one
        append((b"*%d\r\n" if protocol == 2 else b"%%%d\r\n") % (len(value) // 2))
        for i in range(0, len(value) - 1, 2):
            if protocol == 2:
                append(b"*2\r\n")
            _encode_into(value[i], protocol, out)
            _encode_into(value[i + 1], protocol, out)
    elif isinstance(value, PairArray):  # before list: it is one
        if protocol == 2:
            _encode_into(list(value), protocol, out)
            return
        append(b"*%d\r\n" % (len(value) // 2))
        if len(value) >= _BULK_ARRAY_FAST_MIN and all(type(item) is bytes for item in value):
            # HRANDFIELD ... WITHVALUES: [field, value] pairs of bulk strings, framed at once.
            out.extend(b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b)
                       for a, b in zip(value[0::2], value[1::2], strict=True))
            return
        for i in range(0, len(value) - 1, 2):
            append(b"*2\r\n")
            _encode_into(value[i], protocol, out)
            _encode_into(value[i + 1], protocol, out)
    elif isinstance(value, list | tuple):
        append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, protocol, out)
    elif isinstance(value, dict):
        if protocol == 2:
            append(b"*%d\r\n" % (2 * len(value)))
        else:
            append(b"%%%d\r\n" % len(value))
        if len(value) >= _BULK_ARRAY_FAST_MIN:
            # HGETALL: bulk strings to bulk strings, framed in one comprehension (as arrays
            # of bulk strings are above); anything else takes the general path below.
            pairs = [b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(item), item)
                     if type(key) is bytes and type(item) is bytes else None
                     for key, item in value.items()]  # type: ignore[attr-defined]
            if None not in pairs:
                out.extend(pairs)  # type: ignore[arg-type]
                return
        for key, item in value.items():
            _encode_into(key, protocol, out)
            _encode_into(item, protocol, out)
    elif isinstance(value, set | frozenset):
        append((b"*%d\r\n" if protocol == 2 else b"~%d\r\n") % len(value))
        for item in value:
            _encode_into(item, protocol, out)
    else:
        # Commands return only the types listed in replikv.replies; anything else is a bug
        # in replikv, not in the client.
        raise TypeError(f"cannot encode {kind.__name__} as a RESP reply: {value!r}")


_BULK_ARRAY_FAST_MIN = 64  # arrays shorter than this take the general path


def encode_reply(value: object, protocol: int = 2) -> bytes:
    """The RESP2 (protocol=2) or RESP3 (protocol=3) bytes for one reply value.

    Raises TypeError for a value of a type not listed in `replikv.replies` (a replikv bug).
    """
    invariant(protocol == 2 or protocol == 3, f"unknown RESP protocol version {protocol!r}")
    # The replies of nearly every command, without building a list. (One type() call: mypy
    # does not narrow `value` through `kind`, hence the ignores.)
    kind = type(value)
    if kind is bytes:
        return b"$%d\r\n%b\r\n" % (len(value), value)  # type: ignore[arg-type, str-format]
    if kind is Status:
        return _status_bytes(value)  # type: ignore[arg-type]
    if kind is int:
        if 0 <= value < 1024:  # type: ignore[operator]
            return _SMALL_INT_REPLIES[value]  # type: ignore[index, call-overload]
        return b":%d\r\n" % value  # type: ignore[str-format]
    if value is None:
        return _NULL_BULK if protocol == 2 else _NULL_RESP3
    out: list[bytes] = []
    _encode_into(value, protocol, out)
    return b"".join(out)


def encode_replies(values: Iterable[object], protocol: int) -> bytes:
    """The replies to a pipeline, encoded and joined in order."""
    invariant(protocol == 2 or protocol == 3, f"unknown RESP protocol version {protocol!r}")
    out: list[bytes] = []
    for value in values:
        _encode_into(value, protocol, out)
    return b"".join(out)


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as a client sends it (a multibulk array of bulk strings); for tests and tools.

    str arguments are UTF-8 encoded and ints written in decimal, as redis-py does.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes | bytearray | memoryview):
            data = bytes(arg)
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"cannot send {type(arg).__name__} as a command argument: {arg!r}")
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(_CRLF)
    return b"".join(out)
