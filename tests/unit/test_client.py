"""replikv.Client and AsyncClient against a fake cluster: real redis-py connections to small
in-process RESP servers that play three nodes sharing one state.

The fake nodes answer HELLO, REPLIKV TOPOLOGY / SESSION / WITH like real ones and keep a real
SessionTable, so retryable writes are exactly-once here too; each node records every data
command it received (with its options) so tests can see where the client sent what, and takes
scripted faults: close the connection before or after applying a command, answer TRYAGAIN,
UNKNOWN, STALE, WTIMEOUT; or go down entirely (connections refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator

import hiredis
import pytest
import redis

from replikv import AsyncClient, Client, OutcomeUnknown
from replikv.client import NoMemberAvailable, UnsupportedCommand
from replikv.client.core import ClientCore, ClientOptions
from replikv.commands import lookup
from replikv.concerns import RequestOptions
from replikv.replies import CommandError, ErrorReply, Status
from replikv.resp import encode_reply
from replikv.server.local_commands import parse_replikv_with
from replikv.sessions import SessionTable, Verdict
from replikv.state import KVState

pytestmark = pytest.mark.timeout(60)

CLOSE = object()  # a handler result: close the connection without answering
T0 = 1_700_000_000_000


class FakeCluster:
    def __init__(self, size: int = 3, leader: str | None = "n1") -> None:
        self.lock = threading.RLock()
        self.state = KVState()
        self.sessions = SessionTable()
        self.time_ms = T0
        self.leader = leader
        self.nodes = {f"n{i + 1}": FakeNode(self, f"n{i + 1}") for i in range(size)}
        # Members whose client address a node does not know (as a real follower may not).
        self.unknown_to: dict[str, set[str]] = {}

    def address(self, node_id: str) -> str:
        return f"127.0.0.1:{self.nodes[node_id].port}"

    def topology_for(self, me: str) -> list[dict]:
        out = []
        for node_id in self.nodes:
            role = "leader" if node_id == self.leader else (
                "follower" if self.leader else "unknown")
            known = node_id == me or node_id not in self.unknown_to.get(me, set())
            member = {"id": node_id, "role": role, "voter": 1,
                      "client": self.address(node_id) if known else None, "admin": None,
                      "self": int(node_id == me)}
            if node_id == me:
                member.update(term=3, applied_index=10)
            out.append(member)
        return out

    def execute(self, node: FakeNode, argv: list[bytes], options: RequestOptions) -> object:
        spec = lookup(argv[0])
        with self.lock:
            self.time_ms += 1
            if spec is not None and spec.kind == "read":
                if options.read_preference == "secondary" and node.id == self.leader:
                    return ErrorReply("NOTSECONDARY this node is the primary")
                return self.state.execute_read(argv, self.time_ms)
            if options.seq is not None:
                check = self.sessions.lookup(options.session, options.seq, self.time_ms)
                if check.verdict is not Verdict.NEW:
                    return check.reply
            reply, _effects, _undo = self.state.execute_recorded(argv, self.time_ms)
            if options.seq is not None and not isinstance(reply, ErrorReply):
                self.sessions.record(options.session, options.seq, reply, self.time_ms)
            return reply

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()


class FakeNode:
    def __init__(self, cluster: FakeCluster, node_id: str) -> None:
        self.cluster = cluster
        self.id = node_id
        self.port = 0
        self.received: list[tuple[tuple[bytes, ...], RequestOptions]] = []
        self.faults: deque[str] = deque()
        self.session_commands = 0
        self.topology_requests = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self.start()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def kill(self) -> None:
        """Like kill -9: stop listening and drop every connection."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def data_commands(self) -> list[tuple[bytes, ...]]:
        return [argv for argv, _ in self.received]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        state = {"protocol": 2, "session": None}
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                reader.feed(data)
                while (request := reader.gets()) is not False:
                    out = self._handle(state, request)
                    if out is CLOSE:
                        return
                    conn.sendall(encode_reply(out, state["protocol"]))
        except OSError:
            return
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _handle(self, state: dict, argv: list[bytes]) -> object:
        name = argv[0].lower()
        if name == b"hello":
            state["protocol"] = int(argv[1]) if len(argv) > 1 else state["protocol"]
            return {"server": "replikv", "version": "7.4.0", "proto": state["protocol"],
                    "id": 1, "mode": "standalone", "role": "master", "modules": []}
        if name == b"client":
            return Status("OK")
        if name == b"ping":
            return Status("PONG")
        options = RequestOptions(session=state["session"])
        if name == b"replikv":
            sub = argv[1].upper()
            if sub == b"TOPOLOGY":
                self.topology_requests += 1
                return self.cluster.topology_for(self.id)
            if sub == b"SESSION":
                self.session_commands += 1
                state["session"] = argv[2] if len(argv) > 2 else None
                return Status("OK")
            try:
                options, argv = parse_replikv_with(options, argv)
            except CommandError as e:
                return e.reply()
        self.received.append((tuple(argv), options))
        fault = self.faults.popleft() if self.faults else None
        if fault == "drop_before":
            return CLOSE
        if fault == "tryagain":
            return ErrorReply("TRYAGAIN no leader is available; the command was not applied")
        if fault == "stale":
            return ErrorReply("STALE this replica is 900 ms behind the primary")
        reply = self.cluster.execute(self, argv, options)
        if fault == "drop_after":
            return CLOSE
        if fault == "unknown":
            return ErrorReply("UNKNOWN the leader was lost before the write was confirmed")
        if fault == "wtimeout":
            return ErrorReply("WTIMEOUT the write is committed on a majority, not on all")
        return reply


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    c = FakeCluster()
    try:
        yield c
    finally:
        c.close()


def make_client(cluster: FakeCluster, seed: str = "n2", **kwargs: object) -> Client:
    kwargs.setdefault("backoff_base_s", 0.001)
    kwargs.setdefault("backoff_max_s", 0.01)
    kwargs.setdefault("retry_deadline_s", 5.0)
    kwargs.setdefault("socket_timeout", 5.0)
    return Client(cluster.address(seed), **kwargs)


# -- discovery and routing -------------------------------------------------------------------------

def test_discovers_every_member_from_one_follower_seed_by_asking_the_leader(cluster):
    cluster.unknown_to["n2"] = {"n3"}  # the seed does not know n3's address
    with make_client(cluster) as kv:
        topo = kv.topology()
        assert topo.answered_by == cluster.address("n1")  # the leader's view was taken
        assert {m.id: m.address for m in topo.members} == {
            n: cluster.address(n) for n in ("n1", "n2", "n3")}
        assert topo.leader.id == "n1"


def test_writes_go_to_the_leader_as_retryable_writes_with_increasing_seq(cluster):
    with make_client(cluster) as kv:
        assert kv.set("k", "v") is True
        assert kv.incr("n") == 1
        assert kv.incr("n") == 2
    n1 = cluster.nodes["n1"]
    assert n1.data_commands() == [(b"SET", b"k", b"v"), (b"INCRBY", b"n", b"1"),
                                  (b"INCRBY", b"n", b"1")]
    assert not cluster.nodes["n2"].received and not cluster.nodes["n3"].received
    options = [o for _, o in n1.received]
    assert len({o.session for o in options}) == 1 and options[0].session is not None
    assert len(options[0].session) == 32  # 16 random bytes in hex
    assert [o.seq for o in options] == [1, 2, 3]
    assert n1.session_commands == 1  # set once on the pooled connection, not per write


def test_without_retry_writes_writes_carry_no_session(cluster):
    with make_client(cluster, retry_writes=False, write_concern="all", wtimeout_ms=250) as kv:
        kv.set("k", "v")
    (_argv, options), = cluster.nodes["n1"].received
    assert options.session is None and options.seq is None
    assert (options.w, options.wtimeout_ms) == ("all", 250)


@pytest.mark.parametrize(("preference", "expected"), [
    ("primary", ["n1", "n1", "n1", "n1"]),
    ("primaryPreferred", ["n1", "n1", "n1", "n1"]),
    ("secondary", ["n2", "n3", "n2", "n3"]),
    ("secondaryPreferred", ["n2", "n3", "n2", "n3"]),
])
def test_reads_are_spread_by_read_preference_and_sent_with_it(cluster, preference, expected):
    with make_client(cluster, read_preference=preference, read_consistency="lease") as kv:
        kv.topology()
        for _ in range(4):
            kv.get("k")
    served = []
    for node_id, node in cluster.nodes.items():
        for _argv, options in node.received:
            assert (options.read_preference, options.read_consistency) == (preference, "lease")
            served.append(node_id)
    assert sorted(served) == sorted(expected)


def test_nearest_reads_use_every_member(cluster):
    with make_client(cluster, read_preference="nearest") as kv:
        for _ in range(30):
            kv.get("k")
    assert all(node.received for node in cluster.nodes.values())


def test_secondary_preferred_falls_back_to_the_leader_when_followers_are_down(cluster):
    cluster.nodes["n2"].kill()
    cluster.nodes["n3"].kill()
    with Client(cluster.address("n1"), read_preference="secondaryPreferred",
                backoff_base_s=0.001) as kv:
        kv.set("k", "v")
        assert kv.get("k") == b"v"
    assert [a for a, _ in cluster.nodes["n1"].received][-1] == (b"GET", b"k")


def test_a_read_refused_by_a_stale_follower_goes_to_another(cluster):
    with make_client(cluster, read_preference="secondary", max_staleness_ms=500) as kv:
        kv.topology()
        cluster.nodes["n2"].faults.append("stale")
        cluster.nodes["n3"].faults.append("stale")
        assert kv.get("k") is None
    reads = len(cluster.nodes["n2"].received) + len(cluster.nodes["n3"].received)
    assert reads == 3
    assert all(o.max_staleness_ms == 500 for n in ("n2", "n3")
               for _, o in cluster.nodes[n].received)


def test_local_informational_commands_and_unknown_ones_go_to_the_leader(cluster):
    with make_client(cluster) as kv:
        assert kv.ping() is True
        with pytest.raises(redis.ResponseError, match="unknown command"):
            kv.execute_command("NOSUCHCOMMAND", "x")
    assert cluster.nodes["n1"].data_commands() == [(b"NOSUCHCOMMAND", b"x")]


def test_commands_bound_to_one_connection_are_refused():
    kv = Client("127.0.0.1:1")
    for args in (("SELECT", 1), ("WAIT", 1, 0), ("MULTI",), ("REPLIKV", "SESSION", "x"),
                 ("REPLIKV", "WITH", "W", "1", "SET", "k", "v"), ("HELLO", 3)):
        with pytest.raises(UnsupportedCommand):
            kv.execute_command(*args)
    # Subscriptions belong to one connection (PUBLISH is a write: routed, below).
    for args in (("SUBSCRIBE", "ch"), ("UNSUBSCRIBE",), ("PSUBSCRIBE", "c*"),
                 ("PUNSUBSCRIBE",), ("SSUBSCRIBE", "ch"), ("SUNSUBSCRIBE",)):
        with pytest.raises(UnsupportedCommand, match=r"redis.Redis\(host, port\).pubsub\(\)"):
            kv.execute_command(*args)
    with pytest.raises(UnsupportedCommand, match="one node's subscriptions"):
        kv.execute_command("PUBSUB", "CHANNELS")
    with pytest.raises(UnsupportedCommand, match=r"pubsub\(\) is not available"):
        kv.pubsub()
    for call in (lambda: kv.execute_command("MONITOR"), kv.monitor):
        with pytest.raises(UnsupportedCommand, match="not supported by replikv"):
            call()
    # A transaction is sent as MULTI ... EXEC on one connection by pipeline(transaction=True);
    # anything but data commands inside one is refused before anything is sent.
    with pytest.raises(UnsupportedCommand, match="cannot be inside a transaction"):
        kv.pipeline(transaction=True).set("k", "v").ping().execute()
    with pytest.raises(UnsupportedCommand, match="WATCH"):
        kv.execute_command("WATCH", "k")


def test_options_are_validated():
    for kwargs in ({"read_preference": "anywhere"}, {"write_concern": 2},
                   {"read_consistency": "eventual"}, {"wtimeout_ms": 10},
                   {"max_staleness_ms": -1}, {"max_retries": -1}):
        with pytest.raises(ValueError):
            Client("127.0.0.1:1", **kwargs)
    with pytest.raises(ValueError):
        Client("no-port")
    with pytest.raises(ValueError):
        Client([])
    kv = Client(["127.0.0.1:1", ("127.0.0.1", 2)], write_concern=1, read_preference="NEAREST")
    assert kv.options.seeds == ("127.0.0.1:1", "127.0.0.1:2")
    assert (kv.options.write_concern, kv.options.read_preference) == ("1", "nearest")


# -- retries and outcomes --------------------------------------------------------------------------

def test_a_write_whose_connection_broke_after_it_was_applied_is_retried_exactly_once(cluster):
    with make_client(cluster) as kv:
        kv.incr("n")
        cluster.nodes["n1"].faults.append("drop_after")
        cluster.nodes["n2"].faults.append("drop_after")  # the retry's member fails too
        assert kv.incr("n") == 2  # applied on the first try; the retries answered from the table
        assert kv.get("n") == b"2"
    # The same seq every time (after a broken connection the retry may go to a follower,
    # which forwards it).
    incrs = [o.seq for node in cluster.nodes.values() for a, o in node.received
             if a[0] == b"INCRBY"]
    assert sorted(incrs) == [1, 2, 2, 2]


def test_a_retry_after_unknown_or_tryagain_uses_the_same_seq(cluster):
    with make_client(cluster) as kv:
        cluster.nodes["n1"].faults.extend(["tryagain", "unknown"])
        assert kv.incr("n") == 1
    assert [o.seq for _, o in cluster.nodes["n1"].received] == [1, 1, 1]


def test_without_retry_writes_a_write_cut_off_after_sending_is_outcome_unknown(cluster):
    with make_client(cluster, retry_writes=False) as kv:
        kv.topology()
        cluster.nodes["n1"].faults.append("drop_after")
        with pytest.raises(OutcomeUnknown) as caught:
            kv.incr("n")
        assert caught.value.command == ("INCRBY", "n", 1)
        assert isinstance(caught.value, redis.exceptions.ConnectionError)
        assert kv.get("n") == b"1"  # it was applied, once: no blind resend
        cluster.nodes["n1"].faults.append("unknown")
        with pytest.raises(OutcomeUnknown):
            kv.incr("n")
    assert len([a for a, _ in cluster.nodes["n1"].received if a[0] == b"INCRBY"]) == 2


def test_without_retry_writes_a_write_that_was_certainly_not_sent_is_retried(cluster):
    with make_client(cluster, retry_writes=False) as kv:
        kv.topology()
        cluster.nodes["n1"].kill()  # connections refused: nothing can have been sent
        cluster.leader = "n2"
        assert kv.incr("n") == 1
        cluster.nodes["n2"].faults.append("tryagain")  # answered "not applied": retried
        assert kv.incr("n") == 2
    assert cluster.nodes["n2"].data_commands() == [(b"INCRBY", b"n", b"1")] * 3


def test_command_errors_and_wtimeout_are_raised_at_once(cluster):
    with make_client(cluster) as kv:
        kv.sadd("set", "m")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            kv.incr("set")
        cluster.nodes["n1"].faults.append("wtimeout")
        with pytest.raises(redis.ResponseError, match="WTIMEOUT"):
            kv.set("k", "v")
    assert [a[0] for a in cluster.nodes["n1"].data_commands()] == [b"SADD", b"INCRBY", b"SET"]


def test_a_failover_is_followed_and_writes_reach_the_new_leader(cluster):
    with make_client(cluster) as kv:
        kv.set("a", "1")
        cluster.nodes["n1"].kill()
        cluster.leader = "n3"
        assert kv.incr("n") == 1
        assert kv.topology().leader.id == "n3"
    assert cluster.nodes["n3"].data_commands() == [(b"INCRBY", b"n", b"1")]


def test_a_leader_killed_mid_write_gives_exactly_once_on_the_next_leader(cluster):
    with make_client(cluster) as kv:
        kv.topology()
        # n1 applies the INCR (into the shared state and session table, as a committed entry
        # would be) and dies before answering; n2 takes over.
        def die_after_apply() -> None:
            cluster.nodes["n1"].faults.append("drop_after")
        die_after_apply()
        original = cluster.nodes["n1"]._handle

        def handle(state: dict, argv: list[bytes]) -> object:
            out = original(state, argv)
            if out is CLOSE:
                cluster.nodes["n1"].kill()
                cluster.leader = "n2"
            return out

        cluster.nodes["n1"]._handle = handle
        assert kv.incr("n") == 1
        assert kv.get("n") == b"1"
    assert cluster.nodes["n2"].received[0][1].seq == cluster.nodes["n1"].received[0][1].seq


def test_when_no_member_answers_the_command_fails_by_its_deadline(cluster):
    cluster.close()
    kv = make_client(cluster, retry_deadline_s=0.3)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError) as caught:
        kv.get("k")
    assert not isinstance(caught.value, OutcomeUnknown)  # nothing was ever sent
    assert time.monotonic() - started < 3
    with pytest.raises(redis.exceptions.ConnectionError):
        kv.set("k", "v")


def test_no_member_for_the_read_preference_is_reported():
    single = FakeCluster(size=1)
    try:
        kv = make_client(single, seed="n1", read_preference="secondary", retry_deadline_s=0.2)
        with pytest.raises(NoMemberAvailable, match="secondary"):
            kv.get("k")
        assert isinstance(NoMemberAvailable("x"), redis.exceptions.ConnectionError)
        kv.close()
    finally:
        single.close()


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap():
    core = ClientCore(ClientOptions(seeds=("h:1",), backoff_base_s=0.1, backoff_max_s=1.0))
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)):
        delays = [core.backoff_s(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered


# -- concurrency and pipelines --------------------------------------------------------------------

def test_threads_share_a_client_and_each_write_is_counted_once(cluster):
    with make_client(cluster, max_connections=64) as kv:
        def work() -> None:
            for _ in range(50):
                kv.incr("n")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert kv.get("n") == b"400"
    options = [o for a, o in cluster.nodes["n1"].received if a[0] == b"INCRBY"]
    # A session carries one write at a time, so seqs of a session arrive in order.
    by_session: dict[bytes, list[int]] = {}
    for o in options:
        by_session.setdefault(o.session, []).append(o.seq)
    assert all(seqs == sorted(seqs) for seqs in by_session.values())
    assert 1 < len(by_session) <= 8


def test_a_pipeline_of_reads_is_one_round_trip_and_writes_run_in_order(cluster):
    with make_client(cluster, read_preference="secondary") as kv:
        with kv.pipeline() as pipe:
            pipe.set("a", "1").incr("n").get("a")
            assert len(pipe) == 3
            assert pipe.execute() == [True, 1, b"1"]
        kv.sadd("s", "x")
        pipe = kv.pipeline()
        pipe.get("a")
        pipe.get("n")
        pipe.incr("s")  # a write: the pipeline runs command by command
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            pipe.execute()
        pipe.get("a")
        pipe.get("s")
        pipe.smembers("s")
        results = pipe.execute(raise_on_error=False)
        assert results[0] == b"1"
        assert isinstance(results[1], redis.ResponseError)
        assert results[2] == {b"x"}
    batch = [(b"GET", b"a"), (b"GET", b"s"), (b"SMEMBERS", b"s")]
    assert any(cluster.nodes[n].data_commands()[-3:] == batch for n in ("n2", "n3"))
    assert (b"GET", b"a") not in cluster.nodes["n1"].data_commands()


# -- asyncio ------------------------------------------------------------------------------------------

def test_async_client_routes_and_retries_like_the_sync_one(cluster):
    cluster.unknown_to["n2"] = {"n3"}

    async def scenario() -> None:
        async with AsyncClient(cluster.address("n2"), read_preference="secondary",
                               backoff_base_s=0.001, backoff_max_s=0.01) as kv:
            topo = await kv.topology()
            assert len(topo.addresses()) == 3
            assert await kv.set("k", "v") is True
            cluster.nodes["n1"].faults.extend(["drop_after", "unknown"])
            assert await kv.incr("n") == 1
            assert await kv.get("n") == b"1"
            pipe = kv.pipeline()
            pipe.get("k").get("n")
            assert await pipe.execute() == [b"v", b"1"]
            results = await asyncio.gather(*(kv.incr("m") for _ in range(20)))
            assert sorted(results) == list(range(1, 21))
            cluster.nodes["n1"].kill()
            cluster.leader = "n3"
            assert await kv.incr("n") == 2

    asyncio.run(scenario())
    attempts = [(o.session, o.seq) for node in cluster.nodes.values()
                for a, o in node.received if a == (b"INCRBY", b"n", b"1")]
    assert len(attempts) == 3 and len(set(attempts)) == 2  # one retried write, one more
    assert not [a for a in cluster.nodes["n1"].data_commands() if a[0] == b"GET"]


def test_async_client_without_retry_writes_raises_outcome_unknown(cluster):
    async def scenario() -> None:
        kv = AsyncClient(cluster.address("n1"), retry_writes=False)
        await kv.topology()
        cluster.nodes["n1"].faults.append("drop_after")
        with pytest.raises(OutcomeUnknown):
            await kv.incr("n")
        await kv.aclose()

    asyncio.run(scenario())
