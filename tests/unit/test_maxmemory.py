"""maxmemory (policy noeviction): the leader refuses writes that can add data while the keyspace
is over the limit, with Redis's OOM error, and lets everything that frees memory through."""

from __future__ import annotations

import pytest
from redis.exceptions import OutOfMemoryError, ResponseError

from replikv.client.errors import Failure, classify
from replikv.commands import COMMANDS, grows_memory
from replikv.commands.transactions import encode_exec
from replikv.concerns import RequestOptions
from replikv.node import ERR_OOM
from replikv.replies import OK, ErrorReply

from .node_harness import Cluster

# Each write Redis 7.4 flags "denyoom" (COMMAND INFO <name>): those can add data.
REDIS_DENYOOM = {
    "append", "copy", "decr", "decrby", "getset", "hincrby", "hincrbyfloat", "hmset", "hset",
    "hsetnx", "incr", "incrby", "incrbyfloat", "linsert", "lmove", "lpush", "lpushx", "lset",
    "mset", "msetnx", "psetex", "rpoplpush", "rpush", "rpushx", "sadd", "sdiffstore", "set",
    "setex", "setnx", "setrange", "sinterstore", "sunionstore", "zadd", "zdiffstore",
    "zincrby", "zinterstore", "zrangestore", "zunionstore",
    "blmove", "brpoplpush", "pfadd", "pfmerge", "xadd", "xsetid",  # Redis 7.0 flags them too
    "sort",  # even without STORE, in Redis 7.0 as here
    "geoadd", "georadius", "georadiusbymember", "geosearchstore",
}


def test_the_commands_refused_are_exactly_redis_denyoom_writes():
    refused = {name for name in COMMANDS if grows_memory([name.encode()])}
    assert refused == REDIS_DENYOOM
    assert not grows_memory([b"del", b"k"]) and not grows_memory([b"nosuchcommand"])
    # FUNCTION is a container: Redis flags its LOAD and RESTORE denyoom, not the others.
    refused_subcommands = {sub for sub in ("load", "delete", "flush", "list", "dump",
                                           "restore", "stats", "kill", "help")
                           if grows_memory([b"FUNCTION", sub.upper().encode(), b"x"])}
    assert refused_subcommands == {"load", "restore"}


def limited(replication: str = "passive") -> tuple[Cluster, str]:
    c = Cluster(replication=replication)
    leader = c.elect()
    return c, leader


def set_limit(c: Cluster, limit: int) -> None:
    for node in c.nodes.values():
        node.maxmemory = limit


def fill_past(c: Cluster, leader: str, limit: int) -> int:
    """SETs until the keyspace holds more than `limit`; returns how many keys."""
    n = 0
    while c.nodes[leader].state.used_bytes() <= limit:
        assert c.call(leader, "SET", f"k{n}", "x" * 100) == OK
        n += 1
    return n


@pytest.mark.parametrize("replication", ["passive", "active"])
def test_writes_that_add_data_are_refused_over_the_limit_and_deletes_free_room(replication):
    c, leader = limited(replication)
    follower = next(i for i in c.ids if i != leader)
    set_limit(c, 2000)
    n = fill_past(c, leader, 2000)
    used, last = c.nodes[leader].state.used_bytes(), c.nodes[leader].raft.log.last_index
    assert c.call(leader, "SET", "more", "x") == ERR_OOM
    assert c.call(follower, "SET", "more", "x") == ERR_OOM  # forwarded: the leader decides
    assert c.call(leader, "SADD", "s", "m") == ERR_OOM
    assert c.call(leader, "INCR", "k0") == ERR_OOM  # Redis refuses INCR too (denyoom)
    assert c.nodes[leader].oom_rejections == 4
    assert c.nodes[leader].state.used_bytes() == used  # nothing ran, nothing was proposed
    assert c.nodes[leader].raft.log.last_index == last
    # Reads, and writes that free memory, still run.
    assert c.call(leader, "GET", "k0") == b"x" * 100
    assert c.call(leader, "EXPIRE", "k0", "100") == 1
    assert c.call(leader, "DEL", *[f"k{i}" for i in range(n // 2)]) == n // 2
    assert c.nodes[leader].state.used_bytes() < 2000
    assert c.call(leader, "SET", "more", "x") == OK  # room again
    c.tick(2)
    digests = {c.nodes[i].digest() for i in c.ids}
    assert len(digests) == 1  # every replica applied the same writes


def test_a_write_that_starts_under_the_limit_runs_whole_as_in_redis():
    c, leader = limited()
    set_limit(c, 1000)
    # One SET takes the keyspace from empty to well past the limit: the check comes before.
    assert c.call(leader, "SET", "big", "x" * 5000) == OK
    assert c.nodes[leader].state.used_bytes() > 1000
    assert c.call(leader, "SET", "small", "x") == ERR_OOM


def test_a_transaction_with_a_write_that_adds_data_is_refused_whole():
    c, leader = limited()
    set_limit(c, 2000)
    fill_past(c, leader, 2000)
    refused = c.call(leader, *encode_exec([[b"DEL", b"k0"], [b"SET", b"k1", b"v"]]))
    assert refused == ERR_OOM
    assert c.call(leader, "EXISTS", "k0") == 1  # the DEL inside did not run either
    assert c.call(leader, *encode_exec([[b"DEL", b"k0"], [b"DEL", b"k1"]])) == [1, 1]


@pytest.mark.parametrize("replication", ["passive", "active"])
def test_a_pipeline_batch_runs_its_other_commands_and_answers_oom_in_the_refused_slots(
        replication):
    c, leader = limited(replication)
    follower = next(i for i in c.ids if i != leader)
    set_limit(c, 2000)
    fill_past(c, leader, 2000)
    batch = encode_exec([[b"DEL", b"k0"], [b"SET", b"new", b"v"], [b"DEL", b"k1"],
                         [b"RPUSH", b"l", b"a"], [b"GETDEL", b"k2"]], pipeline=True)
    replies = c.call(follower, *batch)
    assert replies == [1, ERR_OOM, 1, ERR_OOM, b"x" * 100]
    assert c.call(leader, "EXISTS", "k0", "k1", "k2", "new", "l") == 0
    # Every command refused: the batch's one error answers each (the connection spreads it).
    fill_past(c, leader, 2000)
    assert c.call(leader, *encode_exec([[b"SET", b"a", b"1"], [b"SET", b"b", b"2"]],
                                       pipeline=True)) == ERR_OOM
    c.tick(2)
    assert len({c.nodes[i].digest() for i in c.ids}) == 1


def test_no_limit_by_default_and_a_retried_write_gets_its_first_answer():
    c, leader = limited()
    assert c.nodes[leader].maxmemory == 0
    for i in range(50):
        assert c.call(leader, "SET", f"k{i}", "x" * 100) == OK
    assert c.nodes[leader].oom_rejections == 0
    # A retryable write applied before the keyspace went over the limit is answered as it was
    # the first time when it is retried (the session table answers before the limit is
    # judged), not refused: it adds nothing.
    first = RequestOptions(session=b"client-1", seq=1)
    assert c.call(leader, "INCR", "counter", options=first) == 1
    set_limit(c, 2000)
    assert c.nodes[leader].state.used_bytes() > 2000
    assert c.call(leader, "INCR", "counter", options=first) == 1  # the same write, retried
    assert c.call(leader, "INCR", "counter",
                  options=RequestOptions(session=b"client-1", seq=2)) == ERR_OOM
    assert c.nodes[leader].oom_rejections == 1


def test_the_oom_error_is_redis_s_text():
    assert isinstance(ERR_OOM, ErrorReply)
    assert ERR_OOM.message == "OOM command not allowed when used memory > 'maxmemory'."


def test_a_nearly_full_disk_refuses_the_same_writes_with_its_own_error():
    c, leader = limited()
    follower = next(i for i in c.ids if i != leader)
    assert c.call(leader, "SET", "k0", "v") == OK
    misconf = ErrorReply("MISCONF the disk of the leader is nearly full")
    c.nodes[leader].disk_refusal = misconf  # what the driver sets below disk_min_free_bytes
    assert c.call(follower, "SET", "k1", "v") == misconf
    assert c.call(leader, "GET", "k0") == b"v"
    batch = encode_exec([[b"SET", b"k2", b"v"], [b"DEL", b"k0"]], pipeline=True)
    assert c.call(leader, *batch) == [misconf, 1]
    node = c.nodes[leader]
    assert (node.disk_rejections, node.oom_rejections) == (2, 0)
    node.disk_refusal = None
    assert c.call(follower, "SET", "k1", "v") == OK


@pytest.mark.parametrize("error", [
    OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),  # redis-py's OOM
    ResponseError("MISCONF the disk of the leader n1 is nearly full ..."),
])
def test_the_smart_client_does_not_retry_a_refusal(error):
    # Every member would refuse the same way until room is made: the caller's to handle.
    for sent in (False, True):
        assert classify(error, sent=sent) is Failure.COMMAND
