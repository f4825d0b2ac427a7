"""MULTI ... EXEC without a cluster: the internal EXEC form, what the state does with it (in
both replication modes), how the tools read it back, and how a client connection queues.

The real-process tests (redis-py's transactional pipeline, atomicity under concurrency, both
modes) are in tests/integration/test_transactions.py.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import msgpack
import pytest

from replikv import node as node_module
from replikv.commands.transactions import (
    PIPELINE_BATCH_BYTES,
    PIPELINE_BATCH_COMMANDS,
    PIPELINE_BATCHABLE,
    WATCH_POINT_NAME,
    changes_any,
    encode_exec,
    is_pipeline,
    split_exec,
    split_watch,
)
from replikv.concerns import DEFAULT_OPTIONS, RequestOptions
from replikv.entries import apply_entry, entry_keys
from replikv.limits import DEFAULT_LIMITS
from replikv.node import encode_command_entry, encode_effects_entry
from replikv.pitr import _removes
from replikv.replies import OK, CommandError, ErrorReply, NullArray, Status, wrong_arity
from replikv.resp import encode_reply
from replikv.server.local_commands import NodeView
from replikv.server.resp_server import ClientConnection
from replikv.server.slowlog import SlowLog
from replikv.sessions import SessionTable
from replikv.state import KVState
from replikv.storage.rollback import describe_entry

from .node_harness import Cluster

T0 = 1_700_000_000_000
OK_REPLY = Status("OK")
TX = [[b"SET", b"a", b"1"], [b"INCR", b"a"], [b"SADD", b"a", b"x"], [b"GET", b"a"],
      [b"SET", b"b", b"2", b"EX", b"zz"], [b"SADD", b"s", b"1", b"2", b"3", b"4", b"5"],
      [b"SPOP", b"s", b"2"], [b"DEL", b"gone"]]


def test_the_internal_form_round_trips_and_refuses_what_is_not_one() -> None:
    rng = random.Random(5)
    for _ in range(200):
        commands = [[rng.randbytes(rng.randrange(1, 4)) or b"x"
                     for _ in range(rng.randrange(1, 5))] for _ in range(rng.randrange(1, 6))]
        for c in commands:
            c[0] = b"get"
        assert split_exec(encode_exec(commands)) == commands
    for bad in ([b"EXEC"], [b"EXEC", b"1"], [b"EXEC", b"-1"], [b"EXEC", b"x"],
                [b"EXEC", b"1", b"2", b"GET"], [b"EXEC", b"0", b"extra"],
                [b"EXEC", b"1", b"0"], [b"EXEC", b"1", b"1", b"EXEC"],
                [b"EXEC", b"1", b"1", b"multi"], [b"EXEC", b"99999999999"],
                [b"EXEC", b"1", b"2", b"EXEC-READS", b"0"]):
        with pytest.raises(CommandError, match="malformed transaction|wrong number"):
            split_exec(bad)
    state = KVState()
    assert state.apply_command([b"EXEC", b"1", b"2", b"NOSUCH", b"k"], T0) == ErrorReply(
        "ERR malformed transaction")
    assert state.key_count() == 0


def test_exec_runs_every_command_in_order_and_a_failing_one_changes_nothing() -> None:
    state = KVState()
    reply, effects, undo = state.execute_recorded(encode_exec(TX), T0, seed=77)
    assert reply[:4] == [reply[0], 2, reply[2], b"2"] and str(reply[0]) == "OK"
    assert isinstance(reply[2], ErrorReply) and "WRONGTYPE" in reply[2].message
    assert isinstance(reply[4], ErrorReply) and "not an integer" in reply[4].message
    assert reply[5] == 5 and len(reply[6]) == 2 and reply[7] == 0
    assert state.execute_read([b"SCARD", b"s"], T0) == 3 and state.key_count() == 2
    # One recording: one Undo reverts the whole transaction.
    state.undo(undo)
    assert state.key_count() == 0
    # Both replication modes reach the leader's state: the effects (passive), or the internal
    # EXEC itself run again with the entry's seed (active).
    leader = KVState()
    leader.execute_recorded(encode_exec(TX), T0, seed=77)
    passive, active = KVState(), KVState()
    for replica, data in ((passive, encode_effects_entry(effects, T0, None)),
                          (active, encode_command_entry(encode_exec(TX), T0, 77, None))):
        apply_entry(replica, SessionTable(), data, 1, 0)
        assert replica.digest() == leader.digest()


def test_an_empty_or_read_only_transaction_changes_nothing() -> None:
    state = KVState()
    state.apply_command([b"SET", b"k", b"v"], T0)
    reply, effects, _undo = state.execute_recorded(
        encode_exec([[b"GET", b"k"], [b"EXISTS", b"k", b"j"]]), T0, 1)
    assert reply == [b"v", 1] and effects == []


def test_the_tools_read_a_transaction_entry() -> None:
    data = encode_command_entry(encode_exec([[b"SET", b"a", b"1"], [b"DEL", b"b", b"a"],
                                             [b"GET", b"c"]]), T0, 5, None)
    assert entry_keys(data) == [b"a", b"b"]  # the GET's key is read, not changed
    assert describe_entry(data)["text"] == 'MULTI; SET "a" "1"; DEL "b" "a"; GET "c"; EXEC'
    flush = encode_command_entry(encode_exec([[b"SET", b"a", b"1"], [b"FLUSHALL"]]), T0, 5,
                                 None)
    assert entry_keys(flush) == [b"*"]
    # `archive find` in active mode (no backup): a DEL inside a transaction removes the key.
    assert _removes(data, b"b") and not _removes(data, b"c") and _removes(flush, None)
    assert not _removes(msgpack.packb([1, T0, [b"EXEC", b"oops"], 0]), b"b")


# ---- WATCH ----


def test_the_watch_part_rides_along_and_never_reaches_the_state() -> None:
    tx = encode_exec([[b"SET", b"a", b"1"]], (123456789012345, [b"a", b"b"]))
    assert split_watch(tx) == ((123456789012345, [b"a", b"b"]),
                               encode_exec([[b"SET", b"a", b"1"]]))
    assert split_exec(tx) == [[b"SET", b"a", b"1"]]
    assert split_watch(encode_exec([[b"GET", b"a"]])) == (None, encode_exec([[b"GET", b"a"]]))
    for bad in ([b"EXEC", b"WATCH"], [b"EXEC", b"WATCH", b"-1", b"0", b"0"],
                [b"EXEC", b"WATCH", b"1", b"5", b"a", b"0"]):
        with pytest.raises(CommandError, match="malformed"):
            split_exec(bad)


def test_which_entries_change_a_watched_key() -> None:
    def command(*argv: bytes) -> bytes:
        return encode_command_entry(list(argv), T0, 0, None)

    assert changes_any([command(b"SET", b"a", b"1")], [b"a"])
    assert not changes_any([command(b"SET", b"z", b"1"), b"", command(b"GET", b"a")], [b"a"])
    assert changes_any([command(b"RENAME", b"x", b"a")], [b"a"])
    assert changes_any([command(b"FLUSHALL")], [b"a"])
    assert changes_any([command(*encode_exec([[b"GET", b"z"], [b"DEL", b"a"]]))], [b"a"])
    assert not changes_any([command(*encode_exec([[b"GET", b"a"], [b"DEL", b"z"]]))], [b"a"])
    _, effects, _ = KVState().execute_recorded([b"SET", b"a", b"v"], T0)
    assert changes_any([encode_effects_entry(effects, T0, None)], [b"a"])
    assert not changes_any([encode_effects_entry(effects, T0, None)], [b"b"])


@pytest.mark.parametrize("replication", ["passive", "active"])
def test_a_watched_transaction_runs_only_if_nothing_changed_its_keys(
        replication: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(replication=replication)
    leader = c.elect()
    follower = next(i for i in c.ids if i != leader)
    c.call(leader, "SET", "k", "1")
    c.deliver()
    index = c.nodes[follower].watch_index()
    # The leader's own watch index stays below what it applied ahead of its commit.
    c.submit(leader, "SET", "ahead", "1")
    assert c.nodes[leader].watch_index() == c.nodes[leader].raft.commit_index
    assert c.nodes[leader].applied_index > c.nodes[leader].watch_index()
    c.deliver()
    tx = encode_exec([[b"INCR", b"k"]], (index, [b"k"]))
    assert c.call(follower, *tx) == [2]  # unchanged since: it runs (forwarded)
    c.deliver()
    # Changed since the WATCH (by the transaction itself, here): nil, and nothing proposed.
    last = c.nodes[leader].raft.log.last_index
    assert c.call(follower, *tx) is NullArray
    assert c.nodes[leader].raft.log.last_index == last
    assert c.call(leader, "GET", "k") == b"2"
    # Another key changed: still runs.
    index = c.nodes[leader].applied_index
    c.call(leader, "SET", "other", "x")
    assert c.call(leader, *encode_exec([[b"INCR", b"k"]], (index, [b"k"]))) == [3]
    # What the log cannot tell aborts: an index beyond it, or too far back.
    last = c.nodes[leader].raft.log.last_index
    assert c.call(leader, *encode_exec([[b"INCR", b"k"]], (last + 5, [b"k"]))) is NullArray
    monkeypatch.setattr(node_module, "WATCH_SCAN_MAX", 2)
    for i in range(3):
        c.call(leader, "SET", f"other{i}", "x")  # none of them touches k
    assert c.call(leader, *encode_exec([[b"INCR", b"k"]], (last, [b"k"]))) is NullArray
    index = c.nodes[leader].raft.log.last_index
    c.call(leader, "SET", "other", "y")
    assert c.call(leader, *encode_exec([[b"INCR", b"k"]], (index, [b"k"]))) == [4]
    assert c.call(leader, "GET", "k") == b"4"


@pytest.mark.parametrize("replication", ["passive", "active"])
def test_a_watch_point_on_a_lagging_follower_comes_after_every_acknowledged_write(
        replication: str) -> None:
    """WATCH on a follower that has not yet applied a write acknowledged to another client:
    its own applied index would count that write as a change after the WATCH (EXEC nil every
    time, where Redis runs it). The watch point is a linearizable read: it is past the write."""
    c = Cluster(replication=replication)
    leader = c.elect()
    lagging, other = (i for i in c.ids if i != leader)
    c.partition({leader, other}, {lagging})
    assert c.call(leader, "SET", "k", "1") == OK  # acknowledged; the lagging node lacks it
    written = c.nodes[leader].raft.commit_index
    c.heal()
    stale = c.nodes[lagging].watch_index()
    assert stale < written
    index = c.call(lagging, WATCH_POINT_NAME)
    assert type(index) is int and index >= written
    tx = encode_exec([[b"INCR", b"k"]], (index, [b"k"]))
    assert c.call(lagging, *tx) == [2]  # nothing changed k after the WATCH: it runs
    assert c.call(lagging, *encode_exec([[b"INCR", b"k"]], (stale, [b"k"]))) is NullArray
    # A local read's watch point is the node's own state, as that read would see it.
    local = RequestOptions(read_preference="nearest", read_consistency="local")
    assert c.call(other, WATCH_POINT_NAME, options=local) == c.nodes[other].watch_index()


# ---- a client connection queueing between MULTI and EXEC ----


class FakeServer:
    """What ClientConnection asks of its NodeServer; `submitted` records what reached the
    node core."""

    def __init__(self, requirepass: bytes = b"", **limits: int) -> None:
        self.passwords = (requirepass,) if requirepass else ()  # NodeView: AUTH's passwords
        self.auth_failures = 0
        self.settings = SimpleNamespace(limits=DEFAULT_LIMITS.__class__(**{
            **{f: getattr(DEFAULT_LIMITS, f) for f in DEFAULT_LIMITS.__dataclass_fields__},
            **limits}))
        self.default_options = DEFAULT_OPTIONS
        self.batches: list[int] = []
        self.read_batches: list[int] = []
        self.metrics = SimpleNamespace(count_command=lambda name, ok, usec=0.0: None,
                                       count_error=lambda code: None,
                                       count_pipeline_batch=lambda n, kind: (
                                           self.batches.append(n) if kind == "write" else
                                           self.read_batches.append(n)))
        self.node = SimpleNamespace(watch_index=lambda: 42)
        self.slowlog = SlowLog()
        self.submitted: list[list[bytes]] = []

    requirepass = NodeView.requirepass
    password_accepted = NodeView.password_accepted

    def next_client_id(self) -> int:
        return 1

    def register_client(self, conn: ClientConnection) -> bool:
        return True

    def unregister_client(self, conn: ClientConnection) -> None:
        pass

    def end_session(self, client_id: int) -> None:
        pass

    def submit(self, conn: ClientConnection, argv: list[bytes], options: object) -> int:
        self.submitted.append(argv)
        return len(self.submitted)

    def submit_writes(self, conn: ClientConnection, commands: list[list[bytes]], size: int,
                      options: object) -> int:
        assert size == sum(sum(map(len, c)) for c in commands)
        # As the runtime submits them when no other connection's writes join them.
        return self.submit(conn, commands[0] if len(commands) == 1
                           else encode_exec(commands, pipeline=True), options)


class FakeTransport:
    def __init__(self) -> None:
        self.out = b""

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1)

    def write(self, data: bytes) -> None:
        self.out += data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def connection(requirepass: bytes = b"",
               **limits: int) -> tuple[ClientConnection, FakeServer, FakeTransport]:
    server = FakeServer(requirepass, **limits)
    conn = ClientConnection(server)  # type: ignore[arg-type]
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, server, transport


def send(conn: ClientConnection, *commands: list[bytes]) -> None:
    conn.data_received(b"".join(encode_reply(c) for c in commands))


def test_queued_commands_reach_the_core_as_one_internal_exec() -> None:
    conn, server, transport = connection()
    send(conn, [b"MULTI"], [b"SET", b"a", b"1"], [b"get", b"a"], [b"EXEC"])
    assert transport.out == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n"
    assert server.submitted == [encode_exec([[b"SET", b"a", b"1"], [b"get", b"a"]])]
    conn.on_reply(1, [b"OK", b"1"])
    assert transport.out.endswith(b"*2\r\n$2\r\nOK\r\n$1\r\n1\r\n")


def test_an_exec_held_behind_a_read_in_flight_is_still_the_transaction() -> None:
    # EXEC (a write) waits for the GET (a read) in flight before it: when it resumes, it must
    # be submitted as the transaction, not taken for an EXEC without MULTI.
    conn, server, transport = connection()
    send(conn, [b"GET", b"x"], [b"MULTI"], [b"INCR", b"n"], [b"EXEC"])
    assert server.submitted == [[b"GET", b"x"]]
    conn.on_reply(1, None)
    assert server.submitted[1] == encode_exec([[b"INCR", b"n"]])
    conn.on_reply(2, [1])
    assert transport.out == b"$-1\r\n+OK\r\n+QUEUED\r\n*1\r\n:1\r\n"


def test_a_transaction_over_the_entry_limit_is_refused_when_queued() -> None:
    conn, server, transport = connection(max_entry_bytes=1000)
    send(conn, [b"MULTI"], [b"SET", b"a", b"x" * 600], [b"SET", b"b", b"x" * 600], [b"EXEC"])
    assert b"-ERR transaction too large for one log entry" in transport.out
    assert transport.out.endswith(
        b"-EXECABORT Transaction discarded because of previous errors.\r\n")
    assert server.submitted == []
    # The connection is usable afterwards, and a transaction that fits goes through.
    send(conn, [b"MULTI"], [b"SET", b"a", b"x" * 600], [b"EXEC"])
    assert len(server.submitted) == 1


def test_a_transaction_over_the_argument_limit_is_refused_when_queued() -> None:
    conn, server, transport = connection(max_command_args=10)
    send(conn, [b"MULTI"], [b"MSET", b"a", b"1", b"b", b"2"], [b"MSET", b"c", b"3"],
         [b"EXEC"])
    assert b"-ERR transaction too large" in transport.out and server.submitted == []


def watched(conn: ClientConnection, server: FakeServer, index: int) -> None:
    """Answer the WATCH-POINT read the connection's first WATCH just submitted."""
    assert server.submitted[-1] == [WATCH_POINT_NAME]
    conn.on_reply(len(server.submitted), index)


def test_watch_takes_its_nodes_watch_point_by_a_read_and_exec_carries_it() -> None:
    conn, server, transport = connection()
    send(conn, [b"WATCH", b"a"], [b"WATCH", b"b"], [b"MULTI"], [b"WATCH", b"c"],
         [b"SET", b"a", b"1"], [b"EXEC"])
    # The first WATCH is a read of the node's watch point; nothing after it is taken before
    # its answer (a MULTI ... EXEC pipelined behind it must carry the index).
    assert server.submitted == [[WATCH_POINT_NAME]] and transport.out == b""
    watched(conn, server, 7)
    assert transport.out == (b"+OK\r\n+OK\r\n+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n"
                             b"+QUEUED\r\n")
    assert server.submitted[1:] == [encode_exec([[b"SET", b"a", b"1"]], (7, [b"a", b"b"]))]
    conn.on_reply(2, NullArray)
    assert transport.out.endswith(b"*-1\r\n")
    # EXEC ended the WATCH; UNWATCH and DISCARD end it too; an empty transaction still goes
    # to the leader when something is watched (nil if it changed, else an empty array).
    send(conn, [b"MULTI"], [b"EXEC"])
    assert transport.out.endswith(b"+OK\r\n*0\r\n") and len(server.submitted) == 2
    send(conn, [b"WATCH", b"a"], [b"UNWATCH"], [b"MULTI"], [b"EXEC"])
    watched(conn, server, 8)
    assert len(server.submitted) == 3 and transport.out.endswith(b"+OK\r\n+OK\r\n+OK\r\n*0\r\n")
    send(conn, [b"WATCH", b"a"], [b"MULTI"], [b"DISCARD"], [b"MULTI"], [b"EXEC"])
    watched(conn, server, 9)
    assert len(server.submitted) == 4
    send(conn, [b"WATCH", b"a"], [b"MULTI"], [b"EXEC"])
    watched(conn, server, 10)
    assert server.submitted[-1] == encode_exec([], (10, [b"a"]))


def test_a_watch_waits_for_the_connections_writes_and_fails_as_its_read_would() -> None:
    conn, server, transport = connection()
    # Taken after the connection's own write has its effect: the watch point comes after it.
    send(conn, [b"SET", b"k", b"1"], [b"WATCH", b"k"], [b"GET", b"k"])
    assert server.submitted == [[b"SET", b"k", b"1"]]
    conn.on_reply(1, OK)
    assert server.submitted[1] == [WATCH_POINT_NAME]
    watched(conn, server, 5)
    assert server.submitted[2] == [b"GET", b"k"] and transport.out == b"+OK\r\n+OK\r\n"
    # A watch point the node could not give (no leader, say) is the WATCH's error; nothing
    # is watched, so a following EXEC is unconditional.
    conn, server, transport = connection()
    send(conn, [b"WATCH", b"k"], [b"MULTI"], [b"EXEC"])
    conn.on_reply(1, ErrorReply("TRYAGAIN no leader"))
    assert transport.out == b"-TRYAGAIN no leader\r\n+OK\r\n*0\r\n"
    # Clients cannot send the internal form.
    conn, server, transport = connection()
    send(conn, [WATCH_POINT_NAME])
    assert transport.out.startswith(b"-ERR unknown command") and server.submitted == []


def arity_error(name: str) -> bytes:
    return b"-" + wrong_arity(name).encode() + b"\r\n"


EXEC_ARITY_ABORT = (b"-EXECABORT Transaction discarded because of: wrong number of arguments "
                    b"for 'exec' command\r\n")
PREVIOUS_ERRORS_ABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"


def test_transaction_commands_outside_multi_check_their_arity_as_redis_does() -> None:
    conn, server, transport = connection()
    send(conn, [b"WATCH", b"k"])
    watched(conn, server, 7)
    # Refused, and nothing else happens: UNWATCH x keeps the WATCH.
    send(conn, [b"UNWATCH", b"x"], [b"DISCARD", b"x"], [b"MULTI", b"x"], [b"WATCH"],
         [b"MULTI"], [b"EXEC"])
    assert transport.out == (b"+OK\r\n" + arity_error("unwatch") + arity_error("discard")
                             + arity_error("multi") + arity_error("watch") + b"+OK\r\n")
    assert server.submitted[-1] == encode_exec([], (7, [b"k"]))
    conn.on_reply(2, [])
    # EXEC x is Redis's EXECABORT with the reason, and it ends the WATCH: the next empty
    # transaction watches nothing, so it is answered without the node.
    transport.out = b""
    send(conn, [b"WATCH", b"k"])
    watched(conn, server, 8)
    send(conn, [b"EXEC", b"x"], [b"MULTI"], [b"EXEC"])
    assert transport.out == b"+OK\r\n" + EXEC_ARITY_ABORT + b"+OK\r\n*0\r\n"
    assert len(server.submitted) == 3


@pytest.mark.parametrize("bad", [[b"DISCARD", b"x"], [b"UNWATCH", b"x"], [b"MULTI", b"x"],
                                 [b"WATCH"], [b"RESET", b"x"], [b"TIME", b"x"],
                                 [b"ROLE", b"x"], [b"LASTSAVE", b"x"], [b"WAIT", b"1"]])
def test_an_arity_error_inside_multi_makes_exec_abort(bad: list[bytes]) -> None:
    conn, server, transport = connection()
    send(conn, [b"MULTI"], [b"SET", b"a", b"1"], bad, [b"EXEC"])
    assert transport.out == (b"+OK\r\n+QUEUED\r\n" + arity_error(bad[0].decode().lower())
                             + PREVIOUS_ERRORS_ABORT)
    assert server.submitted == []


def test_exec_with_arguments_inside_multi_discards_the_transaction_and_the_watch() -> None:
    conn, server, transport = connection()
    send(conn, [b"WATCH", b"k"])
    watched(conn, server, 9)
    send(conn, [b"MULTI"], [b"SET", b"a", b"1"], [b"EXEC", b"x"], [b"EXEC"], [b"MULTI"],
         [b"EXEC"])
    assert transport.out == (b"+OK\r\n+OK\r\n+QUEUED\r\n" + EXEC_ARITY_ABORT
                             + b"-ERR EXEC without MULTI\r\n+OK\r\n*0\r\n")
    assert len(server.submitted) == 1  # the watch point only


def test_command_describes_the_transaction_commands_as_clients_send_them() -> None:
    from replikv.server.local_commands import _command

    info = _command(None, None, [b"COMMAND", b"INFO", b"multi", b"exec", b"watch", b"get"])
    assert [(e[0], e[1]) for e in info] == [("multi", 1), ("exec", 1), ("watch", -2),
                                            ("get", 2)]
    assert {"multi", "exec", "discard", "watch", "unwatch", "ping"} <= set(
        _command(None, None, [b"COMMAND", b"LIST"]))



# ---- a pipeline's writes, batched ----


def test_a_pipeline_batch_is_marked_and_described_as_its_commands() -> None:
    commands = [[b"SET", b"a", b"1"], [b"INCR", b"n"], [b"DEL", b"b"]]
    batch = encode_exec(commands, pipeline=True)
    assert is_pipeline(batch) and not is_pipeline(encode_exec(commands))
    assert split_exec(batch) == commands
    data = encode_command_entry(batch, T0, 0, None)
    assert describe_entry(data)["text"] == 'SET "a" "1"; INCR "n"; DEL "b"'
    assert entry_keys(data) == [b"a", b"n", b"b"] and _removes(data, b"b")
    for bad in ([b"EXEC", b"PIPELINE"], [b"EXEC", b"PIPELINE", b"2", b"1", b"PING"]):
        with pytest.raises(CommandError, match="malformed"):
            split_exec(bad)
    # Run on a state, it answers each command in its place, as the commands alone would.
    alone, batched = KVState(), KVState()
    replies = [alone.apply_command(c, T0) for c in commands]
    assert batched.apply_command(batch, T0) == replies
    assert batched.digest() == alone.digest()


# A sample of each batchable command, run against BIG_STATE below.
BIG = b"x" * 100_000
BATCHABLE_SAMPLES = {
    b"set": [b"SET", b"big", b"v"], b"setnx": [b"SETNX", b"new", b"v"],
    b"setex": [b"SETEX", b"big", b"100", b"v"], b"psetex": [b"PSETEX", b"big", b"100000", b"v"],
    b"getset": [b"GETSET", b"big", b"v"], b"getdel": [b"GETDEL", b"big"],
    b"mset": [b"MSET", b"big", b"v", b"n", b"1"], b"msetnx": [b"MSETNX", b"new", b"v"],
    b"del": [b"DEL", b"big", b"members"], b"unlink": [b"UNLINK", b"big", b"members"],
    b"incr": [b"INCR", b"n"], b"decr": [b"DECR", b"n"], b"incrby": [b"INCRBY", b"n", b"7"],
    b"decrby": [b"DECRBY", b"n", b"7"], b"incrbyfloat": [b"INCRBYFLOAT", b"n", b"1.5"],
    b"expire": [b"EXPIRE", b"big", b"100"], b"pexpire": [b"PEXPIRE", b"members", b"100"],
    b"expireat": [b"EXPIREAT", b"big", b"%d" % (T0 // 1000 + 100)],
    b"pexpireat": [b"PEXPIREAT", b"members", b"%d" % (T0 + 100)],
    b"persist": [b"PERSIST", b"timed"], b"sadd": [b"SADD", b"members", b"new", b"m1"],
    b"srem": [b"SREM", b"members", b"m1", b"m2"],
    b"hset": [b"HSET", b"fields", b"new", b"v", b"f1", b"v"],
    b"hmset": [b"HMSET", b"fields", b"f2", b"v"], b"hsetnx": [b"HSETNX", b"fields", b"new", b"v"],
    b"hdel": [b"HDEL", b"fields", b"f1", b"f2"], b"hincrby": [b"HINCRBY", b"fields", b"f3", b"7"],
    b"hincrbyfloat": [b"HINCRBYFLOAT", b"fields", b"f4", b"1.5"],
    b"lpush": [b"LPUSH", b"elements", b"v"], b"rpush": [b"RPUSH", b"elements", b"v", b"w"],
    b"lpushx": [b"LPUSHX", b"elements", b"v"], b"rpushx": [b"RPUSHX", b"elements", b"v"],
    b"lpop": [b"LPOP", b"elements", b"5000"], b"rpop": [b"RPOP", b"elements"],
    b"lset": [b"LSET", b"elements", b"5000", b"v"],
    b"linsert": [b"LINSERT", b"elements", b"BEFORE", b"e9000", b"v"],
    b"ltrim": [b"LTRIM", b"elements", b"1", b"100"],
    b"zadd": [b"ZADD", b"scores", b"1.5", b"new", b"2", b"s1"],
    b"zrem": [b"ZREM", b"scores", b"s1", b"s2"],
    b"zincrby": [b"ZINCRBY", b"scores", b"0.25", b"s3"],
    b"publish": [b"PUBLISH", b"news", b"hello"], b"spublish": [b"SPUBLISH", b"news", b"hi"],
}


def big_state() -> KVState:
    state = KVState()
    state.apply_command([b"SET", b"big", BIG], T0)
    state.apply_command([b"SET", b"n", b"10"], T0)
    state.apply_command([b"SET", b"timed", BIG, b"EX", b"100"], T0)
    state.apply_command([b"SADD", b"members", *[b"m%d" % i for i in range(10_000)]], T0)
    state.apply_command([b"HSET", b"fields", *[b"%s%d" % (p, i) for i in range(10_000)
                                               for p in (b"f", b"")]], T0)
    state.apply_command([b"RPUSH", b"elements", *[b"e%d" % i for i in range(10_000)]], T0)
    state.apply_command([b"ZADD", b"scores", *[x for i in range(10_000)
                                               for x in (b"%d" % i, b"s%d" % i)]], T0)
    return state


def effects_size(argv: list[bytes]) -> int:
    _reply, effects, _undo = big_state().execute_recorded(argv, T0 + 1)
    return len(msgpack.packb(effects))


def test_batchable_writes_have_effects_no_larger_than_their_arguments() -> None:
    # What keeps a batch from ever being refused as too large where its commands alone would
    # not be: each batchable command's effects are about its arguments' size, whatever the
    # keys held before (here a 100 KB string and a set of 10,000 members).
    assert set(BATCHABLE_SAMPLES) == PIPELINE_BATCHABLE  # a new batchable command needs a sample
    for name, argv in BATCHABLE_SAMPLES.items():
        assert effects_size(argv) <= sum(map(len, argv)) + 64, name
    # The test can fail: these carry a whole value or set, which is why they are not batched.
    for argv in ([b"APPEND", b"big", b"y"], [b"SETRANGE", b"big", b"0", b"y"],
                 [b"RENAME", b"big", b"other"], [b"SUNIONSTORE", b"copy", b"members"],
                 [b"COPY", b"fields", b"copy"], [b"COPY", b"elements", b"copy"],
                 [b"ZUNIONSTORE", b"copy", b"1", b"scores"], [b"COPY", b"scores", b"copy"]):
        assert argv[0].lower() not in PIPELINE_BATCHABLE
        assert effects_size(argv) > 10_000, argv[0]


def test_a_pipelines_writes_reach_the_core_as_one_batch_answered_in_their_slots() -> None:
    conn, server, transport = connection()
    send(conn, [b"SET", b"a", b"1"], [b"INCR", b"a"], [b"sadd", b"a", b"x"], [b"GET", b"a"],
         [b"DEL", b"a"], [b"SET", b"b", b"2"])
    batch = [[b"SET", b"a", b"1"], [b"INCR", b"a"], [b"sadd", b"a", b"x"]]
    # The GET waits for the writes before it (a read sees the connection's own writes).
    assert server.submitted == [encode_exec(batch, pipeline=True)] and server.batches == [3]
    conn.on_reply(1, [OK_REPLY, 2, ErrorReply("WRONGTYPE Operation against a key holding the "
                                              "wrong kind of value")])
    assert transport.out == b"+OK\r\n:2\r\n-WRONGTYPE Operation against a key holding the " \
                            b"wrong kind of value\r\n"
    assert server.submitted[1] == [b"GET", b"a"]
    conn.on_reply(2, b"2")
    assert server.submitted[2] == encode_exec([[b"DEL", b"a"], [b"SET", b"b", b"2"]],
                                              pipeline=True)
    # A batch refused as a whole answers the same error in each of its slots.
    conn.on_reply(3, ErrorReply("NOLEADER no leader"))
    assert transport.out.endswith(b"$1\r\n2\r\n-NOLEADER no leader\r\n-NOLEADER no leader\r\n")
    assert conn.inflight == 0 and not conn.slots


def test_a_single_write_and_writes_that_cannot_batch_go_alone() -> None:
    conn, server, _transport = connection()
    send(conn, [b"SET", b"a", b"1"])  # nothing follows it in what was read
    assert server.submitted == [[b"SET", b"a", b"1"]]
    # APPEND's effects carry the whole value: never batched, and it ends a batch.
    send(conn, [b"SET", b"b", b"1"], [b"APPEND", b"b", b"2"], [b"SET", b"c", b"1"],
         [b"SET", b"d", b"1"])
    assert server.submitted[1:] == [[b"SET", b"b", b"1"], [b"APPEND", b"b", b"2"],
                                    encode_exec([[b"SET", b"c", b"1"], [b"SET", b"d", b"1"]],
                                                pipeline=True)]
    # REPLIKV WITH gives its own options to one command: it goes alone.
    conn2, server2, _ = connection()
    send(conn2, [b"REPLIKV", b"WITH", b"W", b"1", b"SET", b"a", b"1"], [b"SET", b"b", b"1"])
    assert server2.submitted == [[b"SET", b"a", b"1"], [b"SET", b"b", b"1"]]
    # Inside MULTI the commands are queued as ever.
    conn3, server3, _ = connection()
    send(conn3, [b"MULTI"], [b"SET", b"a", b"1"], [b"SET", b"b", b"1"], [b"EXEC"])
    assert server3.submitted == [encode_exec([[b"SET", b"a", b"1"], [b"SET", b"b", b"1"]])]


def test_a_batch_is_bounded_in_commands_bytes_and_commands_in_flight() -> None:
    conn, server, _ = connection()
    send(conn, *[[b"SET", b"k%d" % i, b"v"] for i in range(PIPELINE_BATCH_COMMANDS + 5)])
    assert [len(split_exec(s)) for s in server.submitted] == [PIPELINE_BATCH_COMMANDS, 5]
    conn, server, _ = connection()
    value = b"v" * (PIPELINE_BATCH_BYTES // 3)
    send(conn, *[[b"SET", b"k%d" % i, value] for i in range(4)])
    assert [len(split_exec(s)) for s in server.submitted] == [2, 2]
    conn, server, _ = connection(max_pipeline_commands=3)
    send(conn, *[[b"SET", b"k%d" % i, b"v"] for i in range(5)])
    assert [len(split_exec(s)) for s in server.submitted] == [3]  # the rest waits
    conn.on_reply(1, [OK_REPLY] * 3)
    assert [len(split_exec(s)) for s in server.submitted] == [3, 2]


def test_writes_before_a_protocol_error_are_batched_and_answered_first() -> None:
    conn, server, transport = connection()
    conn.data_received(encode_reply([b"SET", b"a", b"1"]) + encode_reply([b"SET", b"b", b"2"])
                       + b"*1\r\n$x\r\n")
    assert server.submitted == [encode_exec([[b"SET", b"a", b"1"], [b"SET", b"b", b"2"]],
                                            pipeline=True)]
    assert transport.out == b""
    conn.on_reply(1, [OK_REPLY, OK_REPLY])
    assert transport.out.startswith(b"+OK\r\n+OK\r\n-ERR Protocol error")


class RecordingNode:
    def __init__(self) -> None:
        self.submitted: list[tuple[int, list[bytes], object, object]] = []

    def submit(self, req_id: int, argv: list[bytes], now_ms: int, options: object,
               session: object) -> None:
        self.submitted.append((req_id, argv, options, session))


class JoinCounter:
    """The runtime's metrics, as far as _submit_gathered uses them."""

    def __init__(self) -> None:
        self.batches = self.requests = 0

    def count_joined_batch(self, requests: int) -> None:
        self.batches += 1
        self.requests += requests


class Conn:
    def __init__(self) -> None:
        self.replies: list[tuple[int, object]] = []

    def on_reply(self, req_id: int, value: object) -> None:
        self.replies.append((req_id, value))


def test_writes_of_several_connections_gathered_in_one_cycle_go_as_one_entry() -> None:
    from replikv.server import runtime

    server = SimpleNamespace(_gathered=[], _next_req_id=100, _reply_targets={},
                             node=RecordingNode(), metrics=JoinCounter())
    a, b, c = Conn(), Conn(), Conn()
    w1 = RequestOptions(w="1")
    plan = [(a, [[b"SET", b"x", b"1"]], DEFAULT_OPTIONS),
            (b, [[b"INCR", b"n"], [b"SET", b"y", b"2"]], DEFAULT_OPTIONS),  # b's own batch
            (c, [[b"DEL", b"x"]], DEFAULT_OPTIONS),
            (a, [[b"SET", b"z", b"3"]], w1)]  # other options: a request of its own
    ids = []
    for conn, commands, options in plan:
        server._next_req_id += 1
        ids.append(server._next_req_id)
        server._reply_targets[server._next_req_id] = conn
        server._gathered.append((server._next_req_id, commands, 10, options, id(conn)))
    runtime.NodeServer._submit_gathered(server)  # type: ignore[arg-type]
    (batch_id, argv, options, sessions), alone = server.node.submitted
    assert argv == encode_exec([[b"SET", b"x", b"1"], [b"INCR", b"n"], [b"SET", b"y", b"2"],
                                [b"DEL", b"x"]], pipeline=True)
    assert options is DEFAULT_OPTIONS and sessions == (id(a), id(b), id(c))
    assert alone == (ids[3], [b"SET", b"z", b"3"], w1, id(a)) and server._gathered == []
    assert (server.metrics.batches, server.metrics.requests) == (1, 3)
    # Each request gets its share of the batch's replies; several commands get a list.
    server._reply_targets.pop(batch_id).on_reply(batch_id, [OK_REPLY, 1, OK_REPLY, 1])
    assert a.replies == [(ids[0], OK_REPLY)] and c.replies == [(ids[2], 1)]
    assert b.replies == [(ids[1], [1, OK_REPLY])]
    assert ids[3] in server._reply_targets and len(server._reply_targets) == 1
    # A refusal of the whole batch reaches every request.
    server._gathered = [(201, [[b"SET", b"p", b"1"]], 5, DEFAULT_OPTIONS, 1),
                        (202, [[b"SET", b"q", b"1"]], 5, DEFAULT_OPTIONS, 2)]
    server._reply_targets.update({201: a, 202: b})
    runtime.NodeServer._submit_gathered(server)  # type: ignore[arg-type]
    batch_id = server.node.submitted[-1][0]
    server._reply_targets.pop(batch_id).on_reply(batch_id, ErrorReply("NOLEADER x"))
    assert a.replies[-1] == (201, ErrorReply("NOLEADER x"))
    assert b.replies[-1] == (202, ErrorReply("NOLEADER x"))


def test_a_gathered_batch_is_bounded() -> None:
    from replikv.server import runtime

    server = SimpleNamespace(_gathered=[], _next_req_id=0, _reply_targets={},
                             node=RecordingNode(), metrics=JoinCounter())
    for i in range(runtime.CROSS_BATCH_COMMANDS + 10):
        server._gathered.append((i, [[b"SET", b"k", b"v"]], 5, DEFAULT_OPTIONS, i))
    runtime.NodeServer._submit_gathered(server)  # type: ignore[arg-type]
    assert [len(split_exec(s[1])) for s in server.node.submitted] == [
        runtime.CROSS_BATCH_COMMANDS, 10]


# ---- a pipeline's reads, batched ----


def test_a_pipelines_reads_reach_the_core_as_one_read_answered_in_their_slots() -> None:
    from replikv.commands.transactions import encode_reads

    conn, server, transport = connection()
    send(conn, [b"GET", b"a"], [b"mget", b"a", b"b"], [b"EXISTS", b"a"], [b"SET", b"a", b"1"],
         [b"GET", b"a"])
    assert server.submitted == [encode_reads([[b"GET", b"a"], [b"mget", b"a", b"b"],
                                              [b"EXISTS", b"a"]])]
    assert server.read_batches == [3] and server.batches == []
    conn.on_reply(1, [None, [None, b"2"], 0])
    assert transport.out == b"$-1\r\n*2\r\n$-1\r\n$1\r\n2\r\n:0\r\n"
    assert server.submitted[1:] == [[b"SET", b"a", b"1"]]  # the write waited for the reads
    # The internal form is not a client's command, inside MULTI neither.
    conn2, server2, transport2 = connection()
    send(conn2, encode_reads([[b"GET", b"a"]]), [b"MULTI"],
         [b"exec-reads", b"1", b"2", b"GET", b"a"], [b"EXEC"])
    assert server2.submitted == []
    assert transport2.out.startswith(b"-ERR unknown command 'EXEC-READS'")
    assert transport2.out.endswith(b"-EXECABORT Transaction discarded because of previous "
                                   b"errors.\r\n")


def test_the_internal_reads_run_each_read_and_refuse_anything_else() -> None:
    from replikv.commands import lookup
    from replikv.commands.transactions import PIPELINE_READS, encode_reads
    from replikv.server.local_commands import _command

    assert all(lookup(n) is not None and lookup(n).kind == "read"  # type: ignore[union-attr]
               for n in PIPELINE_READS)
    state = KVState()
    state.apply_command([b"SET", b"s", b"v"], T0)
    state.apply_command([b"SADD", b"set", b"m"], T0)
    reads = encode_reads([[b"GET", b"s"], [b"GET", b"set"], [b"STRLEN", b"s", b"x"],
                          [b"SISMEMBER", b"set", b"m"]])
    got = state.execute_read(reads, T0)
    assert got[0] == b"v" and got[3] == 1
    assert "WRONGTYPE" in got[1].message and "wrong number of arguments" in got[2].message
    for bad in (encode_reads([[b"SET", b"s", b"v"]]), encode_reads([[b"KEYS", b"*"]]),
                [b"EXEC-READS", b"2", b"2", b"GET", b"s"]):
        assert state.execute_read(bad, T0) == ErrorReply("ERR malformed transaction")
    assert state.execute_read([b"GET", b"s"], T0) == b"v"  # nothing changed
    assert "exec-reads" not in _command(None, None, [b"COMMAND", b"LIST"])
