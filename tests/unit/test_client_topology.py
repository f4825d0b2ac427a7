"""REPLIKV TOPOLOGY: what a node reports (member_views, the local command, RESP2 and RESP3),
how the client reads it, which answer discovery keeps, and how commands are routed."""

from __future__ import annotations

import pytest

from replikv.client.core import ClientCore, ClientOptions, Discovery
from replikv.client.routing import Kind, route, wire_args
from replikv.client.topology import (
    Member,
    Topology,
    TopologyError,
    parse_address,
    parse_seeds,
    parse_topology,
)
from replikv.replies import ErrorReply
from replikv.resp import encode_reply
from replikv.server.local_commands import (
    LOCAL_COMMANDS,
    ConnectionState,
    MemberView,
    NodeView,
    member_views,
    run_local,
)

ADDRESSES = {"n1": {"client": "10.0.0.1:7001", "admin": "10.0.0.1:7201"},
             "n2": {"client": "10.0.0.2:7002"}}


def views(**kwargs: object) -> dict[str, MemberView]:
    args: dict = {"self_id": "n2", "self_role": "follower", "term": 4, "applied_index": 17,
                  "leader_id": "n1", "members": ["n1", "n2", "n3"],
                  "voters": {"n1", "n2", "n3"}, "addresses": ADDRESSES}
    args.update(kwargs)
    return {m.id: m for m in member_views(**args)}


def test_member_views_say_what_this_node_knows():
    v = views()
    assert v["n1"] == MemberView("n1", "leader", True, "10.0.0.1:7001", "10.0.0.1:7201")
    assert v["n2"] == MemberView("n2", "follower", True, "10.0.0.2:7002", None, True, 4, 17)
    assert v["n3"] == MemberView("n3", "follower", True, None, None)  # address not heard yet
    assert list(v) == ["n1", "n2", "n3"]


def test_member_roles_without_a_leader_and_for_candidates_and_standbys():
    v = views(leader_id=None, self_role="pre-candidate")
    assert (v["n1"].role, v["n2"].role, v["n3"].role) == ("unknown", "candidate", "unknown")
    v = views(voters={"n1", "n2"})
    assert (v["n3"].role, v["n3"].voter) == ("standby", False)
    v = views(self_id="n1", self_role="leader", voters={"n1", "n2"})
    assert (v["n1"].role, v["n2"].role, v["n3"].role) == ("leader", "follower", "standby")


class FakeView(NodeView):
    node_id = "n2"

    def topology(self) -> list[MemberView]:
        return list(views().values())


def topology_command(node: NodeView, protocol: int = 3) -> object:
    conn = ConnectionState(client_id=1, protocol=protocol)
    return run_local(LOCAL_COMMANDS[b"replikv"], conn, node, [b"REPLIKV", b"TOPOLOGY"])


def test_replikv_topology_answers_an_array_of_maps():
    reply = topology_command(FakeView())
    assert reply[1] == {"id": "n2", "role": "follower", "voter": 1, "client": "10.0.0.2:7002",
                        "admin": None, "self": 1, "term": 4, "applied_index": 17}
    assert reply[2] == {"id": "n3", "role": "follower", "voter": 1, "client": None,
                        "admin": None, "self": 0}
    # RESP3: maps; RESP2: flat arrays, as every map reply.
    assert encode_reply(reply, 3).startswith(b"*3\r\n%6\r\n")
    assert encode_reply(reply, 2).startswith(b"*3\r\n*12\r\n")
    assert isinstance(topology_command(NodeView()), ErrorReply)  # a runtime without it


def test_the_client_reads_resp3_resp2_and_decoded_answers_alike():
    reply = topology_command(FakeView())
    resp3 = [{k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in m.items()}
             for m in reply]
    resp2 = [[x for k, v in m.items() for x in (k, v)] for m in resp3]
    decoded = reply
    parsed = {parse_topology(r, "10.0.0.2:7002") for r in (resp3, resp2, decoded)}
    assert len(parsed) == 1
    topo = parsed.pop()
    assert topo.self_id == "n2" and topo.term == 4 and not topo.answered_by_leader
    assert topo.leader == Member("n1", "leader", True, "10.0.0.1:7001", "10.0.0.1:7201")
    assert topo.addresses() == ["10.0.0.1:7001", "10.0.0.2:7002"]
    assert [m.id for m in topo.followers] == ["n2", "n3"]


def test_a_node_listening_on_a_wildcard_address_is_reached_where_the_client_found_it():
    reply = [{"id": "n1", "role": "leader", "voter": 1, "client": "0.0.0.0:7001", "self": 1,
              "term": 2}]
    topo = parse_topology(reply, "db1.example:7001")
    assert topo.members[0].address == "db1.example:7001"
    assert topo.answered_by_leader


@pytest.mark.parametrize("bad", [None, [], b"OK", [{"role": "leader"}], [[b"id"]],
                                 [{"id": "n1", "self": 0}], ErrorReply("ERR x")])
def test_unreadable_answers_are_topology_errors(bad):
    with pytest.raises(TopologyError):
        parse_topology(bad, "h:1")


def test_addresses_and_seeds_are_parsed():
    assert parse_address("h:1") == "h:1" and parse_address(("h", 2)) == "h:2"
    assert parse_address("::1:6379") == "::1:6379"
    for bad in ("h", "h:0", "h:99999", ":1", ("h",), "h:x"):
        with pytest.raises(ValueError):
            parse_address(bad)
    assert parse_seeds(" a:1, b:2 ,a:1") == ["a:1", "b:2"]
    with pytest.raises(ValueError):
        parse_seeds(",")


# -- discovery ---------------------------------------------------------------------------------------

def topo(answered_by: str, self_id: str, leader: str | None, term: int = 3,
         addresses: dict[str, str | None] | None = None) -> Topology:
    addresses = addresses or {"n1": "a:1", "n2": "a:2", "n3": "a:3"}
    members = tuple(Member(i, "leader" if i == leader else "follower", True, a)
                    for i, a in addresses.items())
    return Topology(members, answered_by, self_id, term)


def test_discovery_asks_the_leader_a_follower_names_and_keeps_its_answer():
    core = ClientCore(ClientOptions(seeds=("a:2",)))
    d = Discovery(core, 0.0)
    assert d.next_address() == "a:2"
    d.on_view(topo("a:2", "n2", "n1", addresses={"n1": "a:1", "n2": "a:2", "n3": None}))
    assert d.next_address() == "a:1"  # the leader next
    d.on_view(topo("a:1", "n1", "n1"))
    assert d.next_address() is None
    result = d.finish(1.0)
    assert result.answered_by == "a:1" and core.topology is result
    assert core.discovery_order(2.0)[:1] == ["a:1"]


def test_discovery_without_a_reachable_leader_keeps_the_newest_view_and_asks_everyone():
    core = ClientCore(ClientOptions(seeds=("a:2",)))
    d = Discovery(core, 0.0)
    d.next_address()
    d.on_view(topo("a:2", "n2", "n1", term=3))
    assert d.next_address() == "a:1"
    d.on_error("a:1", ConnectionError("refused"))
    assert d.next_address() == "a:3"
    d.on_view(topo("a:3", "n3", None, term=4))  # an election under way: newer term
    assert d.next_address() is None
    assert d.finish(1.0).answered_by == "a:3"
    # The member that failed goes last for a while.
    assert core.candidates(Kind.WRITE, 0.5)[-1] == "a:1"
    assert core.candidates(Kind.WRITE, 1.5)[0] == "a:1"  # and is tried first again later


def test_a_discovery_where_nobody_answers_keeps_the_old_topology_and_stays_stale():
    core = ClientCore(ClientOptions(seeds=("a:1",)))
    core.accept(topo("a:1", "n1", "n1"), 0.0)
    assert not core.refresh_due(1.0)
    d = Discovery(core, 2.0)
    while (address := d.next_address()) is not None:
        d.on_error(address, OSError())
    assert d.finish(2.0) is None
    assert core.topology.answered_by == "a:1" and core.refresh_due(2.0)


# -- routing -----------------------------------------------------------------------------------------

def test_commands_are_routed_by_the_nodes_command_table():
    assert route(("SET", "k", "v")).kind is Kind.WRITE
    assert route((b"incrby", b"k", 1)).kind is Kind.WRITE
    assert route(("GET", "k")).kind is Kind.READ
    assert route(("SMEMBERS", "k")).kind is Kind.READ
    assert route(("PING",)).kind is Kind.INFO
    assert route(("CONFIG GET", "save")).kind is Kind.INFO
    assert route(("REPLIKV", "TOPOLOGY")).kind is Kind.INFO
    assert route(("LPUSH", "k", "v")).kind is Kind.WRITE
    assert route(("LRANGE", "k", 0, -1)).kind is Kind.READ
    assert route(("ZADD", "k", 1, "m")).kind is Kind.WRITE
    assert route(("ZRANGE", "k", 0, -1)).kind is Kind.READ
    assert route(("ZUNIONSTORE", "d", 2, "a", "b")).kind is Kind.WRITE
    # PUBLISH goes through the log like a write: to the leader, retried with its session.
    assert route(("PUBLISH", "ch", "m")).kind is Kind.WRITE
    assert route(("SPUBLISH", "ch", "m")).kind is Kind.WRITE
    assert route(("LATENCY", "LATEST")).kind is Kind.OTHER  # not known here: sent as it is
    assert route(("GEOADD", "k", 0, 0, "m")).kind is Kind.WRITE
    assert route(("XADD", "k", "*", "f", "v")).kind is Kind.WRITE
    assert route(("XREAD", "STREAMS", "k", "0")).kind is Kind.READ
    assert route(("FCALL", "f", 1, "k")).kind is Kind.WRITE  # functions: no longer refused
    assert route(("FCALL_RO", "f", 1, "k")).kind is Kind.READ
    assert route(("FUNCTION", "DELETE", "lib")).kind is Kind.WRITE
    # Blocking: each attempt is a write of its own, so no session; never resent once sent.
    assert route(("XREAD", "BLOCK", 0, "STREAMS", "k", "$")).kind is Kind.OTHER
    assert route(("BLPOP", "q", 0)).kind is Kind.OTHER
    assert route(("CLIENT SETNAME", "x")).args == ("CLIENT", "SETNAME", "x")


def test_wire_arguments_carry_the_options():
    write, read = route(("SET", "k", "v")), route(("GET", "k"))
    assert wire_args(write) == ("SET", "k", "v")
    assert wire_args(write, seq=9, write_concern="all", wtimeout_ms=100) == (
        "REPLIKV", "WITH", "W", "all", "WTIMEOUT", 100, "SEQ", 9, "SET", "k", "v")
    assert wire_args(read, read_preference="nearest", read_consistency="local",
                     max_staleness_ms=800) == (
        "REPLIKV", "WITH", "READPREF", "nearest", "CONSISTENCY", "local", "MAXSTALENESS", 800,
        "GET", "k")
    assert wire_args(route(("PING",))) == ("PING",)


def test_candidates_follow_the_read_preference():
    def order(preference: str, kind: Kind = Kind.READ) -> list[str]:
        core = ClientCore(ClientOptions(seeds=("s:9",), read_preference=preference))
        core.accept(topo("a:1", "n1", "n1"), 0.0)
        return core.candidates(kind, 0.0)

    assert order("primary") == ["a:1", "a:2", "a:3", "s:9"]
    assert order("primary", Kind.WRITE) == ["a:1", "a:2", "a:3", "s:9"]
    assert set(order("secondary")) == {"a:2", "a:3"}
    assert order("secondaryPreferred")[-1] == "a:1"
    assert set(order("nearest")) == {"a:1", "a:2", "a:3"}


def test_nearest_prefers_members_within_the_latency_window():
    core = ClientCore(ClientOptions(seeds=("s:9",), read_preference="nearest"))
    core.accept(topo("a:1", "n1", "n1"), 0.0)
    core.note_success("a:1", 0.050)
    core.note_success("a:2", 0.001)
    core.note_success("a:3", 0.010)
    for _ in range(10):
        assert core.candidates(Kind.READ, 0.0)[-1] == "a:1"
        assert set(core.candidates(Kind.READ, 0.0)[:2]) == {"a:2", "a:3"}
