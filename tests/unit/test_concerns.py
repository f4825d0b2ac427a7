"""Write concern, read preference and consistency options: parsing, the REPLIKV command, and
their trip over the peer wire."""

from __future__ import annotations

import msgpack
import pytest

from replikv.concerns import DEFAULT_OPTIONS, RequestOptions, apply_option, options_from_fields
from replikv.replies import OK, CommandError, ErrorReply
from replikv.server.local_commands import (
    LOCAL_COMMANDS,
    ConnectionState,
    NodeView,
    describe_options,
    parse_replikv_with,
    run_local,
)
from replikv.wire import FRAME_HEADER, PeerProtocolError, decode_message


def replikv(conn: ConnectionState, *args: str) -> object:
    argv = [b"REPLIKV", *(a.encode() for a in args)]
    return run_local(LOCAL_COMMANDS[b"replikv"], conn, None, argv)


def test_options_are_case_insensitive_and_validated():
    o = apply_option(DEFAULT_OPTIONS, b"w", b"ALL")
    o = apply_option(o, b"READPREF", b"secondarypreferred")
    o = apply_option(o, b"consistency", b"Lease")
    assert (o.w, o.read_preference, o.read_consistency) == ("all", "secondaryPreferred", "lease")
    with pytest.raises(CommandError, match="unknown write concern '2'"):
        apply_option(o, b"W", b"2")
    with pytest.raises(CommandError, match="milliseconds"):
        apply_option(o, b"WTIMEOUT", b"-5")
    with pytest.raises(CommandError, match="unknown option"):
        apply_option(o, b"J", b"1")


def test_replikv_sets_the_connection_options_and_reset_restores_the_defaults():
    conn = ConnectionState(client_id=1)
    assert replikv(conn, "WRITECONCERN", "1") == OK
    assert replikv(conn, "READPREF", "nearest", "MAXSTALENESS", "800") == OK
    assert replikv(conn, "CONSISTENCY", "local") == OK
    assert describe_options(conn.options) == {
        "w": "1", "wtimeout_ms": 0, "readpref": "nearest", "maxstaleness_ms": 800,
        "consistency": "local"}
    assert replikv(conn, "OPTIONS") == describe_options(conn.options)
    bad = replikv(conn, "WRITECONCERN", "three")
    assert isinstance(bad, ErrorReply) and "unknown write concern" in bad.message
    assert conn.options.w == "1"  # a refused change changes nothing
    run_local(LOCAL_COMMANDS[b"reset"], conn, NodeView(), [b"RESET"])  # a node, no password
    assert conn.options == DEFAULT_OPTIONS
    assert isinstance(replikv(conn, "NOPE"), ErrorReply)
    assert "WRITECONCERN" in " ".join(replikv(conn, "HELP"))


def test_connections_with_the_same_settings_share_one_options_object(monkeypatch):
    # The runtime joins the plain writes of connections whose options are one object into one
    # log entry (NodeServer._submit_gathered): 64 clients that each say REPLIKV WRITECONCERN
    # majority must end up sharing, or none of their writes is ever joined.
    from replikv import concerns

    monkeypatch.setattr(concerns, "_interned", {DEFAULT_OPTIONS: DEFAULT_OPTIONS})
    a, b, c = (ConnectionState(client_id=i) for i in range(3))
    for conn in (a, b):
        assert replikv(conn, "WRITECONCERN", "majority") == OK
        assert replikv(conn, "CONSISTENCY", "linearizable") == OK
    assert a.options is b.options is DEFAULT_OPTIONS  # those are the defaults' values
    replikv(a, "WRITECONCERN", "1")
    replikv(b, "WRITECONCERN", "1")
    replikv(c, "WRITECONCERN", "all")
    assert a.options is b.options and a.options == RequestOptions(w="1")
    assert c.options is not a.options
    # A session is one client's: its options are not kept for sharing.
    replikv(a, "SESSION", "s1")
    assert a.options.session == b"s1" and a.options not in concerns._interned
    # Bounded: past INTERNED_OPTIONS_MAX values an options object stays the connection's own.
    monkeypatch.setattr(concerns, "INTERNED_OPTIONS_MAX", len(concerns._interned))
    replikv(c, "WRITECONCERN", "all", "WTIMEOUT", "77")
    assert c.options.wtimeout_ms == 77 and c.options not in concerns._interned


def test_a_nodes_own_defaults_are_the_object_clients_setting_the_same_get(tmp_path):
    # A node started with other defaults (here w=1): clients that never set options start with
    # the node's defaults, and those that set the same values must get that very object, or
    # the two kinds of clients would never be joined.
    from replikv.config import load_settings
    from replikv.server.runtime import NodeServer

    settings = load_settings(None, {
        "id": "n1", "data_dir": tmp_path / "n1", "listen": "127.0.0.1:7001",
        "peer_listen": "127.0.0.1:7101", "write_concern": "1",
        "peers": "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"})
    srv = NodeServer(settings)
    try:
        assert srv.default_options.w == "1"
        conn = ConnectionState(client_id=1)
        assert replikv(conn, "WRITECONCERN", "1") == OK
        assert conn.options is srv.default_options
    finally:
        srv._disk.shutdown()


def test_replikv_with_changes_one_command_only():
    conn = ConnectionState(client_id=1)
    options, argv = parse_replikv_with(conn.options, [b"REPLIKV", b"WITH", b"W", b"all",
                                                      b"WTIMEOUT", b"250", b"SET", b"k", b"v"])
    assert options == RequestOptions(w="all", wtimeout_ms=250)
    assert argv == [b"SET", b"k", b"v"]
    assert conn.options == DEFAULT_OPTIONS
    for bad in ([b"REPLIKV", b"WITH", b"W"], [b"REPLIKV", b"WITH", b"W", b"1"],
                [b"REPLIKV", b"WITH", b"PING"]):
        with pytest.raises(CommandError):
            parse_replikv_with(conn.options, bad)


@pytest.mark.parametrize("fields", [
    ["2", None, "primary", "linearizable", None],
    ["1", -1, "primary", "linearizable", None],
    ["1", None, "anywhere", "linearizable", None],
    ["1", None, "primary", "eventual", None],
    ["1", None, "primary", "linearizable", "5"],
    ["1", None, "primary"],
])
def test_a_peer_cannot_send_invalid_options(fields):
    with pytest.raises(ValueError):
        options_from_fields(fields)
    body = msgpack.packb([20, "n2", 1, [b"GET", b"k"], fields, True], use_bin_type=True)
    frame = FRAME_HEADER.pack(len(body)) + body
    with pytest.raises(PeerProtocolError):
        decode_message(frame[4:])
