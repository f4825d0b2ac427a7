"""The commands a node answers itself (PING, HELLO, CLIENT, CONFIG, AUTH, ...): no arguments a
client sends make one raise (an uncaught error closed the connection: `CONFIG` alone did), and
what Redis answers to the same, for the cases a Redis client meets."""

from __future__ import annotations

import itertools

import pytest

from replikv.replies import OK, ErrorReply, Status, wrong_arity
from replikv.server.local_commands import LOCAL_COMMANDS, ConnectionState, NodeView, run_local

STARTED_S = 1_700_000_000.75


class FakeNode(NodeView):
    node_id = "n1"
    started_s = STARTED_S

    def info_sections(self) -> dict[str, list[tuple[str, object]]]:
        return {"server": [("redis_version", "7.4.0")], "replication": [("role", "master")]}

    def role_reply(self) -> list:
        return ["master", 0, []]

    def topology(self) -> list:
        return []


ARGS = [b"", b"get", b"set", b"list", b"info", b"id", b"setname", b"getname", b"auth",
        b"default", b"x y", b"3", b"-1", b"\xff", b"*"]


def test_no_arguments_make_a_local_command_raise() -> None:
    node = FakeNode()
    for name, handler in LOCAL_COMMANDS.items():
        for count in range(4):
            for args in itertools.product(ARGS, repeat=count):
                if count == 3 and len(set(args)) < 3:
                    continue  # enough variety: keep the product small
                conn = ConnectionState(client_id=1)
                # run_local turns a CommandError into its reply; anything else would escape.
                run_local(handler, conn, node, [name.upper(), *args])


def call(conn: ConnectionState, *argv: bytes) -> object:
    return run_local(LOCAL_COMMANDS[argv[0].lower()], conn, FakeNode(), list(argv))


def error(reply: object) -> str:
    assert isinstance(reply, ErrorReply), reply
    return reply.message


def test_config_alone_is_an_arity_error() -> None:
    assert "wrong number of arguments for 'config'" in error(call(ConnectionState(1), b"CONFIG"))


def test_auth_as_a_redis_without_a_password() -> None:
    conn = ConnectionState(client_id=1)
    assert call(conn, b"AUTH", b"default", b"anything") == OK  # redis-py's username="default"
    assert error(call(conn, b"AUTH", b"bob", b"pw")).startswith("WRONGPASS")
    assert "without any password configured" in error(call(conn, b"AUTH", b"pw"))
    assert "wrong number of arguments" in error(call(conn, b"AUTH"))
    assert error(call(conn, b"AUTH", b"a", b"b", b"c")) == "ERR syntax error"
    hello = call(conn, b"HELLO", b"3", b"AUTH", b"default", b"pw", b"SETNAME", b"app")
    assert isinstance(hello, dict) and hello["proto"] == 3 and conn.name == b"app"
    assert error(call(conn, b"HELLO", b"3", b"AUTH", b"bob", b"pw")).startswith("WRONGPASS")


def test_hello_setname_checks_the_name_as_client_setname_does() -> None:
    conn = ConnectionState(client_id=1)
    assert "cannot contain spaces" in error(call(conn, b"HELLO", b"2", b"SETNAME", b"a b"))
    assert "cannot contain spaces" in error(call(conn, b"CLIENT", b"SETNAME", b"a b"))
    assert conn.name == b""


@pytest.mark.parametrize("name", [b"TIME", b"ROLE", b"RESET", b"LASTSAVE", b"time"])
def test_commands_without_arguments_refuse_one_as_redis_does(name: bytes) -> None:
    conn = ConnectionState(client_id=1, name=b"app", protocol=3)
    reply = call(conn, name, b"x")
    assert error(reply) == wrong_arity(name.decode().lower())  # e.g. Redis's
    # "ERR wrong number of arguments for 'time' command"
    assert (conn.name, conn.protocol) == (b"app", 3)  # a refused RESET resets nothing
    assert type(call(conn, name)) is not ErrorReply


def test_reset_alone_still_resets() -> None:
    conn = ConnectionState(client_id=1, name=b"app", protocol=3)
    assert call(conn, b"RESET") == Status("RESET")
    assert (conn.name, conn.protocol) == (b"", 2)


def test_lastsave_is_the_nodes_start_in_unix_seconds() -> None:
    # The runtime does not tell local commands when it wrote its last snapshot; a Redis counts
    # its start as a save too, so LASTSAVE is the start until someone saves.
    assert call(ConnectionState(1), b"LASTSAVE") == int(STARTED_S)
    assert call(ConnectionState(1), b"lastsave") == 1_700_000_000


class ManyClients(FakeNode):
    def __init__(self, states: list[ConnectionState]) -> None:
        self.states = states

    def client_states(self) -> list[ConnectionState]:
        return self.states


def test_client_list_shows_every_connection_and_filters_as_redis_does() -> None:
    me = ConnectionState(client_id=7, name=b"me", addr="127.0.0.1:5007")
    other = ConnectionState(client_id=3, name=b"worker", addr="127.0.0.1:5003")
    node = ManyClients([me, other])
    handler = LOCAL_COMMANDS[b"client"]

    def lines(*args: bytes) -> list[str]:
        reply = run_local(handler, me, node, [b"CLIENT", *args])
        assert isinstance(reply, str), reply
        return [line.split()[0] for line in reply.splitlines()]

    assert lines(b"LIST") == ["id=3", "id=7"]  # every client, by id
    assert lines(b"list", b"TYPE", b"normal") == ["id=3", "id=7"]
    assert lines(b"LIST", b"TYPE", b"pubsub") == []
    assert lines(b"LIST", b"ID", b"7", b"99") == ["id=7"]
    assert lines(b"INFO") == ["id=7"]  # the caller alone
    assert "Invalid client ID" in error(run_local(handler, me, node,
                                                  [b"CLIENT", b"LIST", b"ID", b"x"]))
    assert "Unknown client type 'x'" in error(run_local(handler, me, node,
                                                        [b"CLIENT", b"LIST", b"TYPE", b"x"]))
    assert "syntax error" in error(run_local(handler, me, node, [b"CLIENT", b"LIST", b"x"]))
    # A view that does not know the others: the caller.
    assert call(me, b"CLIENT", b"LIST").startswith("id=7 ")  # type: ignore[union-attr]


def test_config_get_answers_maxmemory_and_its_policy_by_glob_pattern() -> None:
    node, conn = FakeNode(), ConnectionState(1)
    node.maxmemory = 100 * 1024 * 1024
    assert run_local(LOCAL_COMMANDS[b"config"], conn, node, [b"CONFIG", b"GET", b"maxmemory*"]) \
        == {b"maxmemory": b"104857600", b"maxmemory-policy": b"noeviction"}
    assert run_local(LOCAL_COMMANDS[b"config"], conn, node,
                     [b"CONFIG", b"GET", b"MAXMEMORY", b"save"]) == {
        b"maxmemory": b"104857600", b"save": b""}
    assert run_local(LOCAL_COMMANDS[b"config"], conn, node,
                     [b"CONFIG", b"GET", b"nothing-like-it"]) == {}


def test_config_set_changes_maxmemory_with_redis_units_and_refuses_the_rest() -> None:
    node, conn = FakeNode(), ConnectionState(1)

    def config(*args: bytes) -> object:
        return run_local(LOCAL_COMMANDS[b"config"], conn, node, [b"CONFIG", *args])

    assert config(b"SET", b"maxmemory", b"100mb") == OK and node.maxmemory == 100 * 1024 ** 2
    assert config(b"SET", b"maxmemory", b"2g", b"maxmemory-policy", b"noeviction") == OK
    assert node.maxmemory == 2 * 1000 ** 3
    assert config(b"SET", b"maxmemory", b"0") == OK and node.maxmemory == 0
    # Nothing is set unless every pair is valid, as in Redis.
    assert "argument 'maxmemory'" in error(config(b"SET", b"maxmemory", b"lots"))
    refused = error(config(b"SET", b"maxmemory", b"1mb", b"maxmemory-policy", b"allkeys-lru"))
    assert "never evicts" in refused and node.maxmemory == 0
    assert "only maxmemory" in error(config(b"SET", b"appendonly", b"no"))
    assert "wrong number of arguments" in error(config(b"SET", b"maxmemory"))
    assert "not supported" in error(config(b"REWRITE"))
