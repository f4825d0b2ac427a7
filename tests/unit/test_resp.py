"""Tests for replikv.resp: the server-side RESP codec.

The parser is checked the way h11 checks its own: the same bytes fed whole, one byte at a
time and in random chunks must give the same commands and the same error. Error texts are
compared exactly because clients and people read them. The encoder is checked twice: by exact
bytes, and by handing its output to the parsers real clients use (hiredis and redis-py).
"""

from __future__ import annotations

import math
import socket
import tracemalloc
from decimal import Decimal

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis._parsers import _RESP2Parser, _RESP3Parser
from redis._parsers.encoders import Encoder
from redis.exceptions import ResponseError

from replikv.invariants import InvariantViolation
from replikv.limits import Limits
from replikv.replies import OK, ErrorReply, NullArray, Status
from replikv.resp import (
    MAX_HEADER_LINE_BYTES,
    ProtocolError,
    RequestParser,
    encode_command,
    encode_replies,
    encode_reply,
    format_double,
    split_inline_args,
)

# -- helpers ------------------------------------------------------------------------------


def drain(parser: RequestParser) -> list[list[bytes]]:
    commands = []
    while (command := parser.get_command()) is not None:
        commands.append(command)
    return commands


def parse_in_chunks(
    data: bytes, sizes: list[int] | None = None, limits: Limits | None = None, fast: bool = True
) -> tuple[list[list[bytes]], str | None]:
    """Feed `data` in chunks of the given sizes (the rest in one piece); return what came out.

    Returns the commands and the ProtocolError message, if any. Commands are drained after
    every chunk, as the server does after every read.
    """
    parser = RequestParser(limits) if limits else RequestParser()
    parser._fast_path = fast
    commands: list[list[bytes]] = []
    pos = 0
    chunks = []
    for size in sizes or []:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.get_command()) is not None:
                commands.append(command)
    except ProtocolError as error:
        return commands, error.message
    return commands, None


def parse_whole(data: bytes, **kwargs) -> tuple[list[list[bytes]], str | None]:
    return parse_in_chunks(data, [], **kwargs)


def parse_bytewise(data: bytes, **kwargs) -> tuple[list[list[bytes]], str | None]:
    return parse_in_chunks(data, [1] * len(data), **kwargs)


def error_of(data: bytes, limits: Limits | None = None) -> str:
    """The ProtocolError message for `data`, checking it is the same however it arrives."""
    whole = parse_whole(data, limits=limits)
    bytewise = parse_bytewise(data, limits=limits)
    assert whole == bytewise
    commands, message = whole
    assert message is not None, f"no error, commands {commands}"
    return message


# -- request parsing: errors --------------------------------------------------------------

SMALL = Limits(max_bulk_bytes=10, max_command_args=5, max_inline_bytes=16)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*+3\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"* 3\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*3 \r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1_0\r\n", "ERR Protocol error: invalid multibulk length"),  # int() would take it
        (b"*-0\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*03\r\n", "ERR Protocol error: invalid multibulk length"),  # string2ll: no zeros
        (b"*9223372036854775808\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*6\r\n", "ERR Protocol error: invalid multibulk length"),  # over max_command_args
        (encode_command(*[b"a"] * 6), "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\nx", "ERR Protocol error: expected '$', got 'x'"),
        (b"*2\r\n$1\r\na\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*1\r\n\x00", "ERR Protocol error: expected '$', got '\\x00'"),
        (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$+1\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$01\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$11\r\n", "ERR Protocol error: invalid bulk length"),  # over max_bulk_bytes
        (encode_command(b"x" * 11), "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$3\r\nabcXY", "ERR Protocol error: expected CRLF after bulk data"),
        (b"*1\r\n$3\r\nabc\rX", "ERR Protocol error: expected CRLF after bulk data"),
        (b"*1\r\n$3\r\nabcd\r\n", "ERR Protocol error: expected CRLF after bulk data"),
        (b"x" * 17, "ERR Protocol error: too big inline request"),
        (b"x" * 17 + b"\n", "ERR Protocol error: too big inline request"),
        (b'set k "abc\n', "ERR Protocol error: unbalanced quotes in request"),
        (b"set k 'abc\n", "ERR Protocol error: unbalanced quotes in request"),
        (b'set k "a"b\n', "ERR Protocol error: unbalanced quotes in request"),
    ],
)
def test_protocol_errors_have_redis_messages(data: bytes, message: str) -> None:
    assert error_of(data, SMALL) == message


def test_oversized_bulk_is_rejected_from_its_header_alone() -> None:
    parser = RequestParser(Limits(max_bulk_bytes=1000))
    parser.feed(b"*2\r\n$3\r\nSET\r\n$1001\r\n")  # the payload is never sent
    with pytest.raises(ProtocolError) as caught:
        parser.get_command()
    assert caught.value.message == "ERR Protocol error: invalid bulk length"


def test_bulk_at_the_limit_is_accepted() -> None:
    data = encode_command(b"x" * 10)
    assert parse_whole(data, limits=SMALL) == ([[b"x" * 10]], None)
    assert parse_whole(encode_command(*[b"a"] * 5), limits=SMALL) == ([[b"a"] * 5], None)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (b"*", "ERR Protocol error: too big mbulk count string"),
        (b"*1\r\n$", "ERR Protocol error: too big bulk count string"),
    ],
)
def test_header_without_crlf_is_rejected_after_64_kib(prefix: bytes, message: str) -> None:
    # A header line is at most MAX_HEADER_LINE_BYTES + 2 bytes with its CRLF. Until that many
    # have arrived without a CRLF the line might still end well (here with "\r\n", after a
    # number too long to be valid, but that is a different error).
    parser = RequestParser()
    parser.feed(prefix)
    parser.feed(b"1" * MAX_HEADER_LINE_BYTES)
    assert parser.get_command() is None
    parser.feed(b"1")
    with pytest.raises(ProtocolError) as caught:
        parser.get_command()
    assert caught.value.message == message
    assert error_of(prefix + b"1" * 70_000) == message


def test_inline_line_limit_counts_the_bytes_before_the_newline() -> None:
    # Like Redis, the limit applies to everything buffered before the LF, a CR included.
    for parse in (parse_whole, parse_bytewise):
        assert parse(b"x" * 16, limits=SMALL) == ([], None)  # may still end in time
        assert parse(b"x" * 16 + b"\n", limits=SMALL) == ([[b"x" * 16]], None)
        assert parse(b"x" * 15 + b"\r\n", limits=SMALL) == ([[b"x" * 15]], None)
        assert parse(b"x" * 16 + b"\r\n", limits=SMALL) == (
            [],
            "ERR Protocol error: too big inline request",
        )


def test_commands_before_a_protocol_error_are_returned_first_and_the_error_sticks() -> None:
    parser = RequestParser()
    parser.feed(encode_command(b"PING") + b"ECHO hi\r\n" + b"*1\r\n$x\r\n" + encode_command(b"A"))
    assert parser.get_command() == [b"PING"]
    assert parser.get_command() == [b"ECHO", b"hi"]
    for _ in range(2):
        with pytest.raises(ProtocolError) as caught:
            parser.get_command()
        assert caught.value.message == "ERR Protocol error: invalid bulk length"
    assert caught.value.reply() == ErrorReply("ERR Protocol error: invalid bulk length")


# -- request parsing: what is skipped, memory ---------------------------------------------


def test_empty_requests_and_blank_lines_are_skipped() -> None:
    data = b"*0\r\n*-1\r\n\r\n\n   \r\n \t \n" + encode_command(b"GET", b"k") + b"*0\r\n"
    expected = ([[b"GET", b"k"]], None)
    assert parse_whole(data) == expected
    assert parse_bytewise(data) == expected


def test_huge_declared_count_allocates_nothing_up_front() -> None:
    parser = RequestParser(Limits(max_command_args=2_000_000_000))
    tracemalloc.start()
    try:
        parser.feed(b"*1000000000\r\n")
        assert parser.get_command() is None
        parser.feed(b"$1\r\na\r\n")
        assert parser.get_command() is None
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 64 * 1024  # a preallocated list would be 8 GB
    assert parser._args == [b"a"]


def test_huge_declared_count_over_the_limit_is_rejected() -> None:
    parser = RequestParser()  # max_command_args is about a million
    parser.feed(b"*1000000000\r\n")
    with pytest.raises(ProtocolError) as caught:
        parser.get_command()
    assert caught.value.message == "ERR Protocol error: invalid multibulk length"


def test_large_declared_bulk_allocates_nothing_before_its_payload() -> None:
    parser = RequestParser()
    tracemalloc.start()
    try:
        parser.feed(b"*1\r\n$60000000\r\n")
        assert parser.get_command() is None
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 64 * 1024


def test_waiting_for_a_large_payload_does_not_reparse_on_every_feed() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, with CR and LF inside
    data = encode_command(b"SET", b"k", payload)
    parser = RequestParser()
    passes = 0
    parse_data = parser._parse_data

    def counting_parse_data(data: bytes) -> int:
        nonlocal passes
        passes += 1
        return parse_data(data)

    parser._parse_data = counting_parse_data  # type: ignore[method-assign]
    commands = []
    for i in range(0, len(data), 1000):
        parser.feed(data[i : i + 1000])
        commands.extend(drain(parser))
    assert commands == [[b"SET", b"k", payload]]
    assert passes <= 3  # the header pass and nothing until the payload was all there


def test_long_inline_line_fed_bytewise_is_searched_once() -> None:
    line = b"SET k " + b"v" * 60_000 + b"\r\n"
    parser = RequestParser()
    passes = 0
    parse_data = parser._parse_data

    def counting_parse_data(data: bytes) -> int:
        nonlocal passes
        passes += 1
        return parse_data(data)

    parser._parse_data = counting_parse_data  # type: ignore[method-assign]
    commands = []
    for i in range(len(line)):
        parser.feed(line[i : i + 1])
        commands.extend(drain(parser))
    assert commands == [[b"SET", b"k", b"v" * 60_000]]
    assert passes <= 2


def test_buffered_bytes_counts_input_of_unfinished_commands() -> None:
    parser = RequestParser()
    assert parser.buffered_bytes() == 0
    parser.feed(b"*2\r\n$5\r\nhello\r\n$10\r\nwor")
    assert parser.get_command() is None
    # "hello" was taken into the unfinished command; "wor" waits for the rest of its bulk.
    assert parser.buffered_bytes() == 5 + 3
    parser.feed(b"ld12345\r\n")
    assert parser.get_command() == [b"hello", b"world12345"]
    assert parser.buffered_bytes() == 0
    # The same when an argument is completed by a later feed.
    parser.feed(b"*3\r\n$5\r\nhel")
    assert parser.get_command() is None
    assert parser.buffered_bytes() == 3
    parser.feed(b"lo\r\n$1\r\n")
    assert parser.get_command() is None
    assert parser.buffered_bytes() == 5
    parser.feed(b"a\r\n$0\r\n\r\n")
    assert parser.get_command() == [b"hello", b"a", b""]
    assert parser.buffered_bytes() == 0


# -- request parsing: pipelines and chunking ----------------------------------------------

MIXED_PIPELINE = (
    encode_command(b"SET", b"key", b"a\r\nb")
    + b"PING\r\n"
    + encode_command(b"GET", b"")
    + b"set k \"a b\" 'c d'\n"
    + b"*0\r\n"
    + encode_command(b"x" * 20_000, b"y")  # too big for one fast-path window
    + b"\r\n"
    + encode_command(b"DEL", b"k1", b"k2", b"k3")
    + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n"
    + b"z" * 2000
    + b"\r\n"
    + b"incr counter\r\n"
)
MIXED_COMMANDS = [
    [b"SET", b"key", b"a\r\nb"],
    [b"PING"],
    [b"GET", b""],
    [b"set", b"k", b"a b", b"c d"],
    [b"x" * 20_000, b"y"],
    [b"DEL", b"k1", b"k2", b"k3"],
    [b"SET", b"k", b"z" * 2000],
    [b"incr", b"counter"],
]


def test_mixed_pipeline_whole_and_bytewise() -> None:
    assert parse_whole(MIXED_PIPELINE) == (MIXED_COMMANDS, None)
    assert parse_bytewise(MIXED_PIPELINE) == (MIXED_COMMANDS, None)
    assert parse_whole(MIXED_PIPELINE, fast=False) == (MIXED_COMMANDS, None)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=60))
def test_mixed_pipeline_in_random_chunks(sizes: list[int]) -> None:
    assert parse_in_chunks(MIXED_PIPELINE, sizes) == (MIXED_COMMANDS, None)


arguments = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"", b"\r\n", b"\r", b"\n", b"$3\r\n", b"*1\r\n", b"\r\n\r\n"]),
        st.binary(min_size=1000, max_size=3000),
    ),
    min_size=1,
    max_size=8,
)


@given(st.lists(arguments, min_size=1, max_size=20), st.lists(st.integers(1, 300), max_size=40))
def test_encode_command_round_trips_through_the_parser(
    commands: list[list[bytes]], sizes: list[int]
) -> None:
    data = b"".join(encode_command(*command) for command in commands)
    assert parse_whole(data) == (commands, None)
    assert parse_in_chunks(data, sizes) == (commands, None)
    assert parse_in_chunks(data, sizes, fast=False) == (commands, None)


# Streams that are mostly valid with some damage, to exercise the error paths as well.
@st.composite
def damaged_streams(draw: st.DrawFn) -> bytes:
    pieces = draw(
        st.lists(
            st.one_of(
                arguments.map(lambda args: encode_command(*args)),
                st.sampled_from(
                    [b"*0\r\n", b"*-1\r\n", b"\r\n", b"PING\r\n", b"*2\r\n$1\r\n", b"$-1\r\n"]
                ),
                st.binary(max_size=6),
            ),
            max_size=12,
        )
    )
    data = bytearray(b"".join(pieces))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.sampled_from(b"*$\r\n0123-+x "))
    return bytes(data)


@settings(max_examples=300)
@given(damaged_streams(), st.lists(st.integers(1, 50), max_size=30))
def test_any_stream_parses_the_same_however_it_is_chunked(data: bytes, sizes: list[int]) -> None:
    limits = Limits(max_bulk_bytes=2000, max_command_args=6, max_inline_bytes=200)
    reference = parse_whole(data, limits=limits, fast=False)
    assert parse_whole(data, limits=limits) == reference
    assert parse_in_chunks(data, sizes, limits=limits) == reference
    assert parse_bytewise(data, limits=limits) == reference


# -- inline commands ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"set k v", [b"set", b"k", b"v"]),
        (b"  set \t k   v  ", [b"set", b"k", b"v"]),
        (b'set k "a b"', [b"set", b"k", b"a b"]),
        (b'set k "\\x41\\x4a\\x6b"', [b"set", b"k", b"AJk"]),
        (b'"\\xzz"', [b"xzz"]),  # not two hex digits: \x is just x
        (b'"\\n\\r\\t\\b\\a\\\\\\"\\q"', [b'\n\r\t\b\a\\"q']),
        (b"'it\\'s' 'a\\nb'", [b"it's", b"a\\nb"]),  # single quotes: only \' is an escape
        (b"'\"' \"'\"", [b'"', b"'"]),
        (b'k"a b"', [b"ka b"]),  # a quote may open inside a word
        (b"\"\" ''", [b"", b""]),
        (b'"a"\t"b"', [b"a", b"b"]),
        (b"a\vb \fc", [b"a\vb", b"c"]),  # \v and \f separate only between arguments
        (b"a\x00b", [b"a\x00b"]),
        (b"", []),
    ],
)
def test_inline_splitting(line: bytes, args: list[bytes]) -> None:
    assert split_inline_args(line) == args


@pytest.mark.parametrize(
    "line",
    [b'"abc', b"'abc", b'"a"b', b"'a'b", b'"a""b"', b'"abc\\"', b'"\\', b'"\\x4', b"a 'b"],
)
def test_inline_unbalanced_quotes(line: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        split_inline_args(line)
    assert caught.value.message == "ERR Protocol error: unbalanced quotes in request"


def quote_like_redis_cli(arg: bytes) -> bytes:
    """The argument in double quotes, escaped as redis-cli's sdscatrepr writes it."""
    escapes = {0x5C: b"\\\\", 0x22: b'\\"', 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}
    escapes |= {0x07: b"\\a", 0x08: b"\\b"}
    out = bytearray(b'"')
    for byte in arg:
        if byte in escapes:
            out += escapes[byte]
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    return bytes(out + b'"')


@given(st.lists(st.binary(max_size=20), max_size=6), st.sampled_from([b" ", b"\t", b"  "]))
def test_inline_quoted_arguments_round_trip(args: list[bytes], separator: bytes) -> None:
    line = separator.join(quote_like_redis_cli(arg) for arg in args)
    assert split_inline_args(line) == args
    assert parse_bytewise(line + b"\r\n") == (([args], None) if args else ([], None))


@given(st.binary(max_size=30))
def test_inline_splitting_of_any_line_fails_only_with_protocol_error(line: bytes) -> None:
    try:
        args = split_inline_args(line)
    except ProtocolError as error:
        assert error.message == "ERR Protocol error: unbalanced quotes in request"
    else:
        if not any(quote in line for quote in (b'"', b"'", b"\v", b"\f")):
            assert all(args)
            assert b"".join(args) == bytes(b for b in line if b not in b" \t\r\n")
            # A quoted argument sends the line down the general path instead of bytes.split();
            # both must split the rest the same way.
            assert split_inline_args(line + b' ""') == args + [b""]


def test_inline_line_ends() -> None:
    assert parse_whole(b"GET k\r\n") == ([[b"GET", b"k"]], None)
    assert parse_whole(b"GET 'k\r'\r\n") == ([[b"GET", b"k\r"]], None)


# -- reply encoding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "resp2", "resp3"),
    [
        (b"hello", b"$5\r\nhello\r\n", b"$5\r\nhello\r\n"),
        (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (b"a\r\nb", b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
        (bytearray(b"ab"), b"$2\r\nab\r\n", b"$2\r\nab\r\n"),
        (memoryview(b"abc")[1:], b"$2\r\nbc\r\n", b"$2\r\nbc\r\n"),
        ("h\u00e9", b"$3\r\nh\xc3\xa9\r\n", b"$3\r\nh\xc3\xa9\r\n"),
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (Status("FULLRESYNC x"), b"+FULLRESYNC x\r\n", b"+FULLRESYNC x\r\n"),
        (ErrorReply("ERR bad"), b"-ERR bad\r\n", b"-ERR bad\r\n"),
        (ErrorReply("ERR a\r\nb\nc"), b"-ERR a  b c\r\n", b"-ERR a  b c\r\n"),
        (0, b":0\r\n", b":0\r\n"),
        (-7, b":-7\r\n", b":-7\r\n"),
        (1023, b":1023\r\n", b":1023\r\n"),
        (1024, b":1024\r\n", b":1024\r\n"),
        (2**63 - 1, b":9223372036854775807\r\n", b":9223372036854775807\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (False, b":0\r\n", b"#f\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (3.0, b"$1\r\n3\r\n", b",3\r\n"),
        (float("inf"), b"$3\r\ninf\r\n", b",inf\r\n"),
        (float("-inf"), b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (float("nan"), b"$3\r\nnan\r\n", b",nan\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (NullArray, b"*-1\r\n", b"_\r\n"),
        ([], b"*0\r\n", b"*0\r\n"),
        ([b"a", 1], b"*2\r\n$1\r\na\r\n:1\r\n", b"*2\r\n$1\r\na\r\n:1\r\n"),
        ((b"a",), b"*1\r\n$1\r\na\r\n", b"*1\r\n$1\r\na\r\n"),
        (
            [[b"a", None], [], ErrorReply("ERR x")],
            b"*3\r\n*2\r\n$1\r\na\r\n$-1\r\n*0\r\n-ERR x\r\n",
            b"*3\r\n*2\r\n$1\r\na\r\n_\r\n*0\r\n-ERR x\r\n",
        ),
        (
            {b"k": 1, "n": [True]},
            b"*4\r\n$1\r\nk\r\n:1\r\n$1\r\nn\r\n*1\r\n:1\r\n",
            b"%2\r\n$1\r\nk\r\n:1\r\n$1\r\nn\r\n*1\r\n#t\r\n",
        ),
        ({}, b"*0\r\n", b"%0\r\n"),
        ({b"m"}, b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (frozenset(), b"*0\r\n", b"~0\r\n"),
    ],
)
def test_encode_reply_exact_bytes(value: object, resp2: bytes, resp3: bytes) -> None:
    assert encode_reply(value) == resp2
    assert encode_reply(value, 2) == resp2
    assert encode_reply(value, 3) == resp3
    assert encode_replies([value, value], 2) == resp2 * 2
    assert encode_replies([value], 3) == resp3


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3"),
        (-2.0, "-2"),
        (0.0, "0"),
        (-0.0, "-0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (1 / 3, "0.3333333333333333"),
        (1e16, "10000000000000000"),
        (99999999999999984.0, "99999999999999984"),
        # Integral doubles up to 2^62 are written as integers (Redis 7.2+'s double2ll).
        (1e17, "100000000000000000"),
        (-1e17, "-100000000000000000"),
        (2.0**62, "4611686018427387904"),
        (-(2.0**62), "-4611686018427387904"),
        (9007199254740993.0, "9007199254740992"),  # 2^53 + 1 reads as 2^53
        # Beyond, and for fractions, fpconv_dtoa's layout of the shortest digits: plain while
        # the exponent is small, else scientific with as few exponent digits as it takes.
        (2.0**63, "9223372036854776000"),
        (1.2345678901234567e19, "12345678901234567000"),
        (1e20, "1e+20"),
        (-1e22, "-1e+22"),
        (1.5e300, "1.5e+300"),
        (1e-05, "0.00001"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (-1.5e-7, "-1.5e-7"),
        (0.0001234, "1.234e-4"),
        (1.2345e-06, "1.2345e-6"),
        (123.456, "123.456"),
        (1234567.5, "1234567.5"),
        (0.30000000000000004, "0.30000000000000004"),
        (1e-105, "1e-105"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (float("nan"), "nan"),
    ],
)
def test_doubles_are_formatted_like_redis(value: float, text: str) -> None:
    assert format_double(value) == text
    assert math.isnan(value) or float(text) == value


def test_status_with_cr_or_lf_is_our_bug() -> None:
    for text in ("a\r\nb", "a\nb", "a\rb"):
        with pytest.raises(InvariantViolation):
            encode_reply(Status(text))
        with pytest.raises(InvariantViolation):
            encode_reply([Status(text)], 3)


@pytest.mark.parametrize("value", [object(), Decimal("1.5"), 1j, [b"ok", object()], {b"k": ...}])
def test_unknown_reply_types_are_rejected(value: object) -> None:
    with pytest.raises(TypeError):
        encode_reply(value)
    with pytest.raises(TypeError):
        encode_reply(value, 3)


def test_encode_command() -> None:
    assert encode_command("SET", b"k\r\n", 12) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n"
    assert encode_command() == b"*0\r\n"
    for bad in (1.5, True, None):
        with pytest.raises(TypeError):
            encode_command(b"SET", bad)  # type: ignore[arg-type]


# -- real clients read what we write ------------------------------------------------------

statuses = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=10).map(Status)
errors = st.text(max_size=20).map(lambda text: ErrorReply("ERR " + text))
leaves = st.one_of(
    st.binary(max_size=20),
    st.text(max_size=10),
    statuses,
    errors,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(),
    st.none(),
    st.just(NullArray),
)
reply_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.binary(max_size=6), children, max_size=4),
        st.frozensets(st.binary(max_size=6), max_size=4),
    ),
    max_leaves=20,
)


def as_a_client_sees_it(value: object, protocol: int) -> object:
    """What hiredis and redis-py (without decoding) should return for a reply value."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()  # Status included: simple strings arrive as bytes
    if isinstance(value, ErrorReply):
        return ("error", value.message.replace("\r", " ").replace("\n", " "))
    if isinstance(value, bool):
        return value if protocol == 3 else int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return ("float", value) if protocol == 3 else ("float-text", value)
    if value is None or value is NullArray:
        return None
    if isinstance(value, list | tuple | frozenset | set):
        return [as_a_client_sees_it(item, protocol) for item in value]
    if isinstance(value, dict):
        if protocol == 3:
            return {key: as_a_client_sees_it(item, protocol) for key, item in value.items()}
        flat: list[object] = []
        for key, item in value.items():
            flat += [key, as_a_client_sees_it(item, protocol)]
        return flat
    raise AssertionError(f"unexpected {value!r}")


def matches(got: object, expected: object) -> bool:
    if isinstance(expected, tuple) and expected[0] == "error":
        return isinstance(got, Exception) and str(got) == expected[1]
    if isinstance(expected, tuple) and expected[0] in ("float", "float-text"):
        if expected[0] == "float-text":
            if not isinstance(got, bytes):
                return False
            got = float(got)
        return isinstance(got, float) and (
            got == expected[1] or (math.isnan(got) and math.isnan(expected[1]))
        )
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(matches(g, e) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and list(got) == list(expected)
            and all(matches(got[key], expected[key]) for key in expected)
        )
    return type(got) is type(expected) and got == expected


@settings(max_examples=300)
@given(reply_values, st.sampled_from([2, 3]))
def test_hiredis_reads_what_we_write(value: object, protocol: int) -> None:
    reader = hiredis.Reader()
    data = encode_reply(value, protocol)
    for i in range(len(data)):  # byte at a time: the framing must be self-delimiting
        reader.feed(data[i : i + 1])
    got = reader.gets()
    assert matches(got, as_a_client_sees_it(value, protocol)), (got, value)
    assert reader.gets() is False  # nothing left over


class _SocketConnection:
    """The three attributes redis-py's pure-Python parsers take from a connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.socket_timeout = 5
        self.encoder = Encoder("utf-8", "strict", False)


@pytest.fixture
def redis_py_parsers():
    ours, theirs = socket.socketpair()
    resp2 = _RESP2Parser(65536)
    resp2.on_connect(_SocketConnection(theirs))
    resp3 = _RESP3Parser(65536)
    resp3.on_connect(_SocketConnection(theirs))
    yield ours, {2: resp2, 3: resp3}
    ours.close()
    theirs.close()


def test_redis_py_reads_what_we_write(redis_py_parsers) -> None:
    ours, parsers = redis_py_parsers
    values = [
        OK,
        b"bulk\r\n",
        42,
        True,
        2.5,
        float("inf"),
        None,
        NullArray,
        [b"a", [1, None], ErrorReply("ERR inner")],
        {b"field": [b"x", False], b"n": 1.0},
        frozenset({b"member"}),
    ]
    for protocol, parser in parsers.items():
        ours.sendall(encode_replies(values, protocol))
        got = [parser.read_response() for _ in values]
        for value, item in zip(values, got, strict=True):
            expected = as_a_client_sees_it(value, protocol)
            if isinstance(value, list):  # redis-py's ResponseError prints differently
                assert isinstance(item[2], ResponseError)
                item = item[:2]
                expected = expected[:2]  # type: ignore[index]
            assert matches(item, expected), (protocol, value, item)


def _item_by_item(values: list, protocol: int) -> bytes:
    out = [b"*%d\r\n" % len(values)]
    out += [encode_reply(v, protocol) for v in values]
    return b"".join(out)


@pytest.mark.parametrize("protocol", [2, 3])
def test_long_arrays_encode_as_item_by_item(protocol: int) -> None:
    """Arrays of 64+ plain bulk strings take a faster path; the bytes must not change, and an
    array with anything else in it (a nil, an int, a bytearray) takes the general path."""
    keys = [b"key:%d" % i for i in range(100)] + [b"", b"\r\n$-1"]
    assert encode_reply(keys, protocol) == _item_by_item(keys, protocol)
    for odd in (None, 7, bytearray(b"ba"), Status("OK")):
        mixed = [*keys[:50], odd, *keys[50:]]
        assert encode_reply(mixed, protocol) == _item_by_item(mixed, protocol)
    nested = [b"0", keys]
    assert encode_reply(nested, protocol) == (b"*2\r\n$1\r\n0\r\n"
                                              + _item_by_item(keys, protocol))


def _map_item_by_item(pairs: dict, protocol: int) -> bytes:
    out = [b"*%d\r\n" % (2 * len(pairs)) if protocol == 2 else b"%%%d\r\n" % len(pairs)]
    for key, value in pairs.items():
        out += [encode_reply(key, protocol), encode_reply(value, protocol)]
    return b"".join(out)


@pytest.mark.parametrize("protocol", [2, 3])
def test_long_maps_and_pair_arrays_encode_as_item_by_item(protocol: int) -> None:
    """HGETALL's map and HRANDFIELD's pairs of 64+ bulk strings take a faster path too; the
    bytes must not change, whatever the items hold, in the map's own order."""
    from replikv.replies import PairArray

    fields = {b"f:%d" % i: b"v" * (i % 7) for i in range(100)} | {b"": b"\r\n$-1"}
    reversed_fields = dict(reversed(fields.items()))
    assert encode_reply(fields, protocol) == _map_item_by_item(fields, protocol)
    assert encode_reply(reversed_fields, protocol) == _map_item_by_item(reversed_fields, protocol)
    for odd in (None, 7, bytearray(b"ba"), Status("OK")):
        mixed = {**fields, b"odd": odd}
        assert encode_reply(mixed, protocol) == _map_item_by_item(mixed, protocol)
    pairs = PairArray(x for pair in fields.items() for x in pair)
    if protocol == 2:
        expected = _item_by_item(list(pairs), 2)
    else:
        expected = b"*%d\r\n" % len(fields) + b"".join(
            _item_by_item(list(pair), 3) for pair in fields.items())
    assert encode_reply(pairs, protocol) == expected
    pairs.insert(3, None)
    pairs.insert(3, 5)
    assert encode_reply(pairs, protocol).startswith(b"*%d\r\n" % (
        len(pairs) if protocol == 2 else len(pairs) // 2))


def test_only_large_arrays_are_copied_for_the_reply_thread() -> None:
    from replikv.server.resp_server import LARGE_REPLY_ITEMS, large_reply_copy

    big = [b"k%d" % i for i in range(LARGE_REPLY_ITEMS + 1)]
    copied = large_reply_copy(big)
    assert copied == big and copied is not big
    scan = [b"17", big]
    copied = large_reply_copy(scan)
    assert copied == scan and copied[1] is not big  # the inner list too
    for small in ([b"k"] * LARGE_REPLY_ITEMS, [b"0", [b"k"] * 10], b"x" * 10**6, 5, None,
                  [[b"k"] * (LARGE_REPLY_ITEMS + 1)] * 17):  # too many items to look into
        assert large_reply_copy(small) is None
    # HGETALL's map counts its fields and values; HRANDFIELD's pairs keep their type.
    from replikv.replies import PairArray

    hgetall = {b"f%d" % i: b"v" for i in range(LARGE_REPLY_ITEMS // 2 + 1)}
    copied = large_reply_copy(hgetall)
    assert copied == hgetall and copied is not hgetall and type(copied) is dict
    assert large_reply_copy({b"f%d" % i: b"v" for i in range(LARGE_REPLY_ITEMS // 2)}) is None
    pairs = PairArray([b"f", b"v"] * (LARGE_REPLY_ITEMS // 2 + 1))
    copied = large_reply_copy(pairs)
    assert copied == pairs and copied is not pairs and type(copied) is PairArray
    assert large_reply_copy(PairArray([b"f", b"v"])) is None


def test_peek_shows_the_next_command_and_leaves_it() -> None:
    p = RequestParser()
    p.feed(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\n*1\r\n$4\r\nPI")
    assert p.peek_command() == [b"GET", b"a"] and p.peek_command() == [b"GET", b"a"]
    assert p.get_command() == [b"GET", b"a"]
    assert p.peek_command() == [b"PING"] and p.get_command() == [b"PING"]
    assert p.peek_command() is None  # incomplete: more bytes are needed
    p.feed(b"NG\r\n*x\r\n")
    assert p.peek_command() == [b"PING"] and p.get_command() == [b"PING"]
    # Bad bytes: peek says nothing more is there; get_command raises, as it always did.
    assert p.peek_command() is None
    with pytest.raises(ProtocolError):
        p.get_command()
