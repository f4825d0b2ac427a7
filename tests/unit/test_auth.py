"""The cluster password (`requirepass`): AUTH and HELLO ... AUTH as Redis answers them, the
parser's limits before a client has authenticated, the peers' handshake proof, the admin API's
Basic authentication, where the setting comes from, and how the smart client sorts the errors.
Real processes: tests/integration/test_auth.py."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError

from replikv.client.credentials import authorization_headers, basic_authorization
from replikv.client.errors import Failure, auth_problem, classify
from replikv.config import ConfigError, load_settings
from replikv.replies import OK, ErrorReply, Status
from replikv.resp import (
    UNAUTHENTICATED_BULK_BYTES_MAX,
    ProtocolError,
    RequestParser,
    encode_command,
)
from replikv.server.admin_http import AdminServer
from replikv.server.local_commands import LOCAL_COMMANDS, ConnectionState, NodeView, run_local
from replikv.server.peer_transport import check_handshake_proof, handshake_proof

PASSWORD = b"s3cret pass"
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


class Node(NodeView):
    node_id = "n1"
    started_s = 0.0

    def __init__(self, password: bytes = PASSWORD) -> None:
        self.passwords = (password,) if password else ()

    def info_sections(self) -> dict[str, list[tuple[str, object]]]:
        return {}

    def role_reply(self) -> list:
        return ["master", 0, []]

    def topology(self) -> list:
        return []


def run(node: Node, conn: ConnectionState, *argv: bytes) -> object:
    return run_local(LOCAL_COMMANDS[argv[0].lower()], conn, node, list(argv))


def message(reply: object) -> str:
    assert isinstance(reply, ErrorReply), reply
    return reply.message


def unauthenticated() -> ConnectionState:
    return ConnectionState(client_id=1, authenticated=False)


# -- AUTH and HELLO --------------------------------------------------------------------------


def test_auth_with_the_password_authenticates_and_a_wrong_one_is_counted() -> None:
    node, conn = Node(), unauthenticated()
    assert message(run(node, conn, b"AUTH", b"guess")) == WRONGPASS
    assert message(run(node, conn, b"AUTH", b"s3cret")) == WRONGPASS  # a prefix is no match
    assert message(run(node, conn, b"AUTH", b"admin", PASSWORD)) == WRONGPASS  # only `default`
    assert not conn.authenticated
    assert node.auth_failures == 3
    assert run(node, conn, b"AUTH", PASSWORD) == OK
    assert conn.authenticated
    other = unauthenticated()
    assert run(node, other, b"AUTH", b"default", PASSWORD) == OK
    assert other.authenticated
    assert node.auth_failures == 3


def test_a_failed_auth_leaves_an_authenticated_connection_authenticated() -> None:
    node, conn = Node(), ConnectionState(client_id=1)  # authenticated
    assert message(run(node, conn, b"AUTH", b"wrong")) == WRONGPASS
    assert conn.authenticated  # as in Redis: a failure changes nothing


def test_hello_needs_auth_first_and_a_refused_hello_changes_nothing() -> None:
    node, conn = Node(), unauthenticated()
    assert message(run(node, conn, b"HELLO", b"3")).startswith(
        "NOAUTH HELLO must be called with the client already authenticated")
    assert message(run(node, conn, b"HELLO", b"3", b"SETNAME", b"app", b"AUTH", b"default",
                       b"wrong")) == WRONGPASS
    assert (conn.protocol, conn.name, conn.authenticated) == (2, b"", False)
    reply = run(node, conn, b"HELLO", b"3", b"AUTH", b"default", PASSWORD, b"SETNAME", b"app")
    assert isinstance(reply, dict) and reply["proto"] == 3
    assert (conn.protocol, conn.name, conn.authenticated) == (3, b"app", True)
    # Authenticated: a plain HELLO works again.
    assert isinstance(run(node, conn, b"HELLO", b"2"), dict) and conn.protocol == 2


def test_reset_ends_the_authentication_on_a_node_with_a_password_only() -> None:
    node, conn = Node(), ConnectionState(client_id=1)
    assert run(node, conn, b"RESET") == Status("RESET")
    assert not conn.authenticated
    open_node, conn = Node(b""), ConnectionState(client_id=1)
    assert run(open_node, conn, b"RESET") == Status("RESET")
    assert conn.authenticated


def test_without_a_password_auth_behaves_as_on_a_redis_without_one() -> None:
    node, conn = Node(b""), ConnectionState(client_id=1)
    assert "without any password configured" in message(run(node, conn, b"AUTH", b"x"))
    assert run(node, conn, b"AUTH", b"default", b"anything") == OK
    assert message(run(node, conn, b"AUTH", b"someone", b"x")) == WRONGPASS


# -- the parser before AUTH ------------------------------------------------------------------


def parser(authenticated: bool) -> RequestParser:
    p = RequestParser()
    p.set_authenticated(authenticated)
    return p


def protocol_error(p: RequestParser) -> str:
    with pytest.raises(ProtocolError) as caught:
        while p.get_command() is not None:
            pass
    return caught.value.message


def test_unauthenticated_requests_get_redis_s_smaller_limits() -> None:
    p = parser(False)
    p.feed(b"*11\r\n")
    assert protocol_error(p) == "ERR Protocol error: unauthenticated multibulk length"
    p = parser(False)
    p.feed(b"*1\r\n$%d\r\n" % (UNAUTHENTICATED_BULK_BYTES_MAX + 1))
    assert protocol_error(p) == "ERR Protocol error: unauthenticated bulk length"
    p = parser(False)  # over the limit for everyone: the usual text, as in Redis
    p.feed(b"*20000000\r\n")
    assert protocol_error(p) == "ERR Protocol error: invalid multibulk length"
    p = parser(False)  # what AUTH and HELLO need passes
    p.feed(encode_command(b"HELLO", b"3", b"AUTH", b"default", b"x" * 512, b"SETNAME", b"a"))
    assert p.get_command() is not None


def test_the_commands_after_a_pipelined_auth_are_parsed_with_the_limits_auth_gives() -> None:
    big = b"v" * (UNAUTHENTICATED_BULK_BYTES_MAX * 2)
    for split in (False, True):
        p = parser(False)
        data = encode_command(b"AUTH", PASSWORD) + encode_command(b"SET", b"k", big) + \
            b"PING\r\n"
        if split:  # the large argument arrives in pieces
            for i in range(0, len(data), 1000):
                p.feed(data[i:i + 1000])
        else:
            p.feed(data)
        assert p.get_command() == [b"AUTH", PASSWORD]
        p.set_authenticated(True)  # what the connection does once AUTH succeeded
        assert p.get_command() == [b"SET", b"k", big]
        assert p.get_command() == [b"PING"]


def test_unauthenticated_commands_are_parsed_one_at_a_time_also_inline() -> None:
    p = parser(False)
    p.feed(b"AUTH x\r\nSET k v\r\n" + encode_command(b"GET", b"k"))
    assert p.get_command() == [b"AUTH", b"x"]
    assert p._ready == type(p._ready)()  # nothing parsed ahead under the old limits
    assert p.get_command() == [b"SET", b"k", b"v"]
    assert p.get_command() == [b"GET", b"k"]
    assert p.get_command() is None


# -- peers -------------------------------------------------------------------------------------


def test_a_handshake_proof_holds_only_for_its_password_and_its_link() -> None:
    proof = handshake_proof(PASSWORD, "cluster-a", "n1", "n2")
    assert check_handshake_proof(PASSWORD, proof, "cluster-a", "n1", "n2")
    assert not check_handshake_proof(b"other", proof, "cluster-a", "n1", "n2")
    assert not check_handshake_proof(PASSWORD, proof, "cluster-b", "n1", "n2")
    assert not check_handshake_proof(PASSWORD, proof, "cluster-a", "n3", "n2")  # another sender
    assert not check_handshake_proof(PASSWORD, proof, "cluster-a", "n1", "n3")
    nonce, _, mac = proof.partition(":")
    assert PASSWORD.hex() not in proof and len(bytes.fromhex(nonce)) == 16
    tampered = f"{nonce}:{mac[:-2]}{'00' if mac[-2:] != '00' else '11'}"
    for bad in ("", "zz", ":", f"{nonce}:", f":{mac}", f"{nonce[:-2]}:{mac}", tampered,
                f"{nonce}:{mac}:x"):
        assert not check_handshake_proof(PASSWORD, bad, "cluster-a", "n1", "n2"), bad
    assert handshake_proof(PASSWORD, "c", "n1", "n2") != handshake_proof(PASSWORD, "c", "n1",
                                                                         "n2")  # fresh nonces


# -- the admin API -------------------------------------------------------------------------------


class AdminNode:
    requirepass = NodeView.requirepass
    password_accepted = NodeView.password_accepted

    def __init__(self, password: bytes) -> None:
        self.passwords = (password,) if password else ()
        self.auth_failures = 0


def head(*headers: str) -> bytes:
    return ("POST /switchover HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers)
            + "\r\n").encode()


def test_the_admin_api_takes_the_password_as_http_basic_for_user_default() -> None:
    admin = AdminServer(AdminNode(PASSWORD))  # type: ignore[arg-type]
    good = basic_authorization(PASSWORD.decode())
    assert admin._authorized(head(f"Authorization: {good}"))
    assert admin._authorized(head(f"authorization:   {good}  "))
    wrong_user = "Basic " + base64.b64encode(b"admin:" + PASSWORD).decode()
    wrong_pass = "Basic " + base64.b64encode(b"default:nope").decode()
    for bad in ((), ("Authorization: Bearer s3cret pass",), (f"Authorization: {wrong_user}",),
                (f"Authorization: {wrong_pass}",), ("Authorization: Basic !!!",),
                ("Authorization: Basic " + base64.b64encode(b"default").decode(),),
                (f"X-Authorization: {good}",)):
        assert not admin._authorized(head(*bad)), bad
    assert AdminServer(AdminNode(b""))._authorized(head())  # type: ignore[arg-type]


def test_authorization_headers_come_from_the_argument_else_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLIKV_PASSWORD", raising=False)
    assert authorization_headers() == {}
    monkeypatch.setenv("REPLIKV_PASSWORD", "from-env")
    assert authorization_headers() == {"Authorization": basic_authorization("from-env")}
    assert authorization_headers("given") == {"Authorization": basic_authorization("given")}


async def _post_without_password(admin: AdminServer) -> bytes:
    server = await asyncio.start_server(admin._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /members/n9/remove HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer
    finally:
        server.close()


def test_a_guarded_endpoint_without_the_password_is_401_and_runs_nothing() -> None:
    node = AdminNode(PASSWORD)  # it has no run_admin: reaching the handler would fail
    answer = asyncio.run(_post_without_password(AdminServer(node)))  # type: ignore[arg-type]
    assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b'WWW-Authenticate: Basic realm="replikv"' in answer
    assert b"REPLIKV_PASSWORD" in answer
    assert node.auth_failures == 1


# -- settings ----------------------------------------------------------------------------------


def settings(tmp_path: Path, toml: str = "", **overrides: object):
    config = tmp_path / "n1.toml"
    config.write_text('id = "n1"\ndata_dir = "d"\nlisten = "127.0.0.1:7001"\n'
                      'peer_listen = "127.0.0.1:7101"\npeers = "n1=127.0.0.1:7101"\n' + toml)
    return load_settings(config, overrides)


def test_the_password_comes_from_the_config_or_a_file_and_is_never_in_a_repr(
        tmp_path: Path) -> None:
    assert settings(tmp_path).requirepass == ""
    assert settings(tmp_path, 'requirepass = "abc def"\n').requirepass == "abc def"
    secret = tmp_path / "secret"
    secret.write_text("from file\n")
    from_file = settings(tmp_path, f'requirepass_file = "{secret}"\n')
    assert from_file.requirepass == "from file"
    assert "from file" not in repr(from_file)
    # The flag (an override) wins over the config file's password.
    assert settings(tmp_path, 'requirepass = "toml"\n',
                    requirepass_file=secret).requirepass == "from file"


@pytest.mark.parametrize("toml, text, expected", [
    ('requirepass = "a"\nrequirepass_file = "{secret}"\n', "b", "both given"),
    ('requirepass_file = "{secret}"\n', "\n", "is empty"),
    ('requirepass_file = "{secret}"\n', "two\0parts\n", "NUL byte"),
    ('requirepass_file = "{secret}"\n', " padded\n", "white space"),
    ('requirepass_file = "{missing}"\n', "x", "does not exist"),
    ('requirepass = "{long}"\n', "x", "at most 512 bytes"),
    ("requirepass = 5\n", "x", "expected a string"),
])
def test_a_bad_password_setting_is_refused_with_a_reason(tmp_path: Path, toml: str, text: str,
                                                         expected: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(text)
    toml = toml.format(secret=secret, missing=tmp_path / "nope", long="x" * 513)
    with pytest.raises(ConfigError, match=expected):
        settings(tmp_path, toml)


# -- the smart client and replikv's commands -----------------------------------------------------


def test_an_authentication_error_is_the_caller_s_to_fix_not_to_retry() -> None:
    for sent in (False, True):
        assert classify(AuthenticationError("NOAUTH Authentication required."),
                        sent=sent) is Failure.COMMAND
    # As servers send them, and as redis-py raises them (without the code).
    hello = ("HELLO must be called with the client already authenticated, otherwise the "
             "HELLO <proto> AUTH <user> <pass> option can be used")
    for none_given in ("NOAUTH Authentication required.", "Authentication required.", hello):
        assert "none was given" in auth_problem(none_given), none_given
    for wrong in (WRONGPASS, WRONGPASS.removeprefix("WRONGPASS ")):
        assert "refused the password" in auth_problem(wrong), wrong
    assert "no password" in auth_problem("AUTH <password> called without any password "
                                         "configured for the default user.")


# -- a client connection -----------------------------------------------------------------------


def test_a_connection_runs_nothing_but_auth_before_it_has_authenticated() -> None:
    from .test_transactions import connection, send

    conn, server, transport = connection(PASSWORD)
    big = b"v" * (UNAUTHENTICATED_BULK_BYTES_MAX * 2)
    # One read: refused commands, a wrong and a right AUTH, then commands with a large
    # argument, which the limits before AUTH would have refused.
    send(conn, [b"SET", b"k", b"1"], [b"GET", b"k"], [b"MULTI"], [b"AUTH", b"nope"],
         [b"REPLIKV", b"WITH", b"W", b"1", b"SET", b"k", b"1"], [b"AUTH", PASSWORD],
         [b"SET", b"k", big])
    noauth = b"-NOAUTH Authentication required.\r\n"
    assert transport.out == noauth * 3 + b"-" + WRONGPASS.encode() + b"\r\n" + noauth + \
        b"+OK\r\n"
    assert server.submitted == [[b"SET", b"k", big]]  # only what came after the AUTH
    assert server.auth_failures == 1
    # RESET ends it: the next command is refused again, and the small limits are back.
    conn.on_reply(1, OK)
    send(conn, [b"RESET"], [b"GET", b"k"])
    assert transport.out.endswith(b"+OK\r\n+RESET\r\n" + noauth)
    send(conn, [b"SET", b"k", big])
    assert transport.out.endswith(b"-ERR Protocol error: unauthenticated bulk length\r\n")
    assert len(server.submitted) == 1


def test_a_connection_to_a_node_without_a_password_needs_no_auth() -> None:
    from .test_transactions import connection, send

    conn, server, transport = connection()
    send(conn, [b"GET", b"k"])
    assert server.submitted == [[b"GET", b"k"]] and transport.out == b""


# -- more than one password: rolling a new one out ----------------------------------------------


def test_a_password_file_holds_the_password_then_earlier_ones_still_accepted(
        tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("new one\nold one\n")
    s = settings(tmp_path, f'requirepass_file = "{secret}"\n')
    assert (s.requirepass, s.requirepass_previous, s.requirepass_file) == (
        "new one", ("old one",), secret)
    assert "old one" not in repr(s)
    for text, expected in (("a\n\nb\n", "line 2 .* is empty"), ("x\n" * 9, "at most 8"),
                           ("a\n b\n", "line 2.*white space")):
        secret.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            settings(tmp_path, f'requirepass_file = "{secret}"\n')


def test_clients_and_peers_may_give_any_accepted_password_and_peers_are_given_the_first(
        ) -> None:
    node = Node(b"new")
    node.passwords = (b"new", b"old")
    for given in (b"new", b"old"):
        conn = unauthenticated()
        assert run(node, conn, b"AUTH", given) == OK and conn.authenticated
    assert message(run(node, unauthenticated(), b"AUTH", b"older")) == WRONGPASS
    assert node.password_accepted(b"old") and not node.password_accepted(b"ol")
    assert not Node(b"").password_accepted(b"")  # no password: nothing to match
