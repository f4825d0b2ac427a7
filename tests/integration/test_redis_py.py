"""redis-py as a user would use it, against a real 3-node cluster, over RESP2 and RESP3.

Every test runs twice: protocol=2 and protocol=3 (redis-py 8's default, negotiated with
HELLO 3). Clients connect to arbitrary nodes: a follower must behave exactly like the leader
(it forwards writes and serves linearizable reads), so most checks read through a node other
than the one written to. Tests share one cluster per module and keep to their own key prefix;
the ones that count keys FLUSHALL first.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import redis

from .cluster import Cluster, wait_until

PROTOCOLS = [pytest.param(2, id="resp2"), pytest.param(3, id="resp3")]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def connect(shared_cluster: Cluster, protocol: int) -> Callable[..., redis.Redis]:
    """connect(node_id) -> a decode_responses client speaking the test's protocol."""

    def make(node_id: str, **kwargs: object) -> redis.Redis:
        kwargs.setdefault("decode_responses", True)
        return shared_cluster.client(node_id, protocol=protocol, **kwargs)

    return make


def other_nodes(cluster: Cluster, node_id: str) -> list[str]:
    return [i for i in cluster.ids if i != node_id]


def test_protocol_is_what_the_client_asked_for(shared_cluster, connect, protocol):
    r = connect("n1")
    assert r.ping() is True
    line = r.client_info()
    assert int(line["resp"]) == protocol, line


def test_set_options_and_compare_and_set(shared_cluster, connect, protocol):
    p = f"set{protocol}:"
    w, r = connect("n1"), connect("n2")
    assert w.set(p + "a", "1") is True
    assert r.get(p + "a") == "1"
    # NX / XX
    assert w.set(p + "a", "2", nx=True) is None
    assert w.set(p + "missing", "x", xx=True) is None
    assert r.exists(p + "missing") == 0
    assert w.set(p + "a", "2", xx=True) is True
    assert w.set(p + "b", "first", nx=True) is True
    # GET returns the old value, and still sets.
    assert w.set(p + "a", "3", get=True) == "2"
    assert w.set(p + "new", "v", get=True) is None
    assert r.mget(p + "a", p + "new") == ["3", "v"]
    # EX / PX
    assert w.set(p + "ex", "v", ex=100) is True
    assert 99 <= r.ttl(p + "ex") <= 100
    assert w.set(p + "px", "v", px=50_000) is True
    assert 40_000 < r.pttl(p + "px") <= 50_000
    # Plain SET removes the expiry; KEEPTTL keeps it.
    assert w.set(p + "ex", "v2", keepttl=True) is True
    assert 99 <= r.ttl(p + "ex") <= 100
    assert w.set(p + "ex", "v3") is True
    assert r.ttl(p + "ex") == -1
    # Compare-and-set: SET k new IFEQ old.
    assert w.execute_command("SET", p + "cas", "v1") in (True, "OK")
    assert w.execute_command("SET", p + "cas", "v2", "IFEQ", "v1") in (True, "OK")
    assert w.execute_command("SET", p + "cas", "v3", "IFEQ", "v1") is None
    assert r.get(p + "cas") == "v2"
    assert w.execute_command("SET", p + "cas-missing", "v", "IFEQ", "x") is None
    assert r.exists(p + "cas-missing") == 0
    # Bad option combinations are refused and change nothing.
    with pytest.raises(redis.ResponseError, match="syntax error"):
        w.execute_command("SET", p + "a", "z", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        w.set(p + "a", "z", ex=0)
    assert r.get(p + "a") == "3"


def test_counters_multi_key_append_and_delete(shared_cluster, connect, protocol):
    p = f"ctr{protocol}:"
    w, r = connect("n2"), connect("n3")
    assert w.incr(p + "c") == 1
    assert w.incrby(p + "c", 41) == 42
    assert w.decr(p + "c") == 41
    assert w.decrby(p + "c", 50) == -9
    assert r.get(p + "c") == "-9"
    w.set(p + "s", "abc")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        w.incr(p + "s")
    assert r.get(p + "s") == "abc"
    assert w.mset({p + "m1": "x", p + "m2": "y", p + "m3": "z"}) is True
    assert r.mget(p + "m1", p + "nope", p + "m3") == ["x", None, "z"]
    assert w.append(p + "s", "def") == 6
    assert w.append(p + "fresh", "12") == 2
    assert r.strlen(p + "s") == 6
    assert r.get(p + "s") == "abcdef"
    assert r.strlen(p + "nope") == 0
    assert r.exists(p + "m1", p + "m2", p + "nope", p + "m1") == 3
    assert w.delete(p + "m1", p + "m2", p + "nope") == 2
    assert r.exists(p + "m1", p + "m2", p + "m3") == 1
    assert r.get(p + "m1") is None


def test_expiry_is_seen_and_applied_on_every_node(shared_cluster, connect, protocol):
    p = f"exp{protocol}:"
    ids = shared_cluster.ids
    clients = {i: connect(i) for i in ids}
    w = clients["n3"]
    assert w.flushall() is True
    assert w.set(p + "stays", "v") is True
    assert w.set(p + "goes", "v", px=700) is True
    assert w.set(p + "later", "v") is True
    assert w.expire(p + "later", 1) is True
    assert w.expire(p + "nothing-here", 10) is False
    for i in ids:
        assert 0 < clients[i].pttl(p + "goes") <= 700, i
        assert clients[i].ttl(p + "later") in (0, 1), i
        assert clients[i].ttl(p + "stays") == -1, i
        assert clients[i].ttl(p + "nothing-here") == -2, i
        assert clients[i].dbsize() == 3, i
    # Gone for readers on every node once its time has passed ...
    for i in ids:
        wait_until(lambda i=i: clients[i].get(p + "goes") is None, timeout_s=3,
                   what=f"{p}goes to read as absent on {i}")
    # ... and deleted for real (through the log) on every node: DBSIZE counts expired keys
    # that were not deleted yet, as Redis does.
    for i in ids:
        wait_until(lambda i=i: clients[i].dbsize() == 1, timeout_s=5,
                   what=f"both expired keys to be deleted on {i}")
        assert clients[i].exists(p + "goes", p + "later", p + "stays") == 1
        assert clients[i].pttl(p + "goes") == -2


def test_persist_removes_expiry_everywhere(shared_cluster, connect, protocol):
    p = f"persist{protocol}:"
    w = connect("n1")
    w.set(p + "k", "v", ex=1)
    assert w.persist(p + "k") is True
    for i in shared_cluster.ids:
        assert connect(i).ttl(p + "k") == -1


def test_scan_visits_all_500_keys_on_every_node_and_dbsize_agrees(shared_cluster, connect,
                                                                  protocol):
    p = f"scan{protocol}:"
    w = connect("n1")
    assert w.flushall() is True
    expected = {f"{p}{i}" for i in range(500)}
    assert w.mset({k: "v" for k in expected}) is True
    for i in shared_cluster.ids:
        r = connect(i)
        assert r.dbsize() == 500, i
        seen = list(r.scan_iter(count=37))
        assert set(seen) == expected, f"{i}: missing {sorted(expected - set(seen))[:5]}"
        matched = set(r.scan_iter(match=f"{p}1*", count=100))
        assert matched == {k for k in expected if k.startswith(f"{p}1")}, i


def _random_pipeline(rng: random.Random, p: str, size: int) -> tuple[list, list]:
    """Commands and the replies a correct server gives, from a tiny model of the keyspace."""
    model: dict[str, str] = {}
    commands: list[tuple] = []
    expected: list[object] = []

    def run(cmd: tuple, reply: object) -> None:
        commands.append(cmd)
        expected.append(reply)

    text_keys = [f"{p}s{i}" for i in range(6)]
    counter_keys = [f"{p}n{i}" for i in range(3)]
    while len(commands) < size:
        op = rng.randrange(10)
        k = rng.choice(text_keys)
        c = rng.choice(counter_keys)
        if op == 0:  # a GET right after a SET of the same key: must see the new value
            v = f"v{len(commands)}"
            model[k] = v
            run(("set", k, v), True)
            run(("get", k), v)
        elif op == 1:
            run(("get", k), model.get(k))
        elif op == 2:
            v = f"w{len(commands)}"
            model[k] = v
            run(("set", k, v), True)
        elif op == 3:
            suffix = f"+{len(commands)}"
            model[k] = model.get(k, "") + suffix
            run(("append", k, suffix), len(model[k]))
        elif op == 4:
            run(("strlen", k), len(model.get(k, "")))
        elif op == 5:
            run(("delete", k), 1 if model.pop(k, None) is not None else 0)
        elif op == 6:
            run(("exists", k), 1 if k in model else 0)
        elif op == 7:
            value = int(model.get(c, "0")) + 1
            model[c] = str(value)
            run(("incr", c), value)
        elif op == 8:
            keys = rng.sample(text_keys, 3)
            run(("mget", *keys), [model.get(x) for x in keys])
        else:
            run(("get", c), model.get(c))
    return commands[:size], expected[:size]


def test_pipeline_of_1000_mixed_commands_is_answered_in_order(shared_cluster, connect,
                                                              protocol):
    p = f"pipe{protocol}:"
    commands, expected = _random_pipeline(random.Random(7 + protocol), p, 1000)
    for node in ("n1", "n2"):
        r = connect(node)
        r.delete(*{c[1] for c in commands})
        pipe = r.pipeline(transaction=False)
        for name, *args in commands:
            getattr(pipe, name)(*args)
        got = pipe.execute()
        assert len(got) == len(expected)
        wrong = [(i, commands[i], expected[i], got[i]) for i in range(len(got))
                 if got[i] != expected[i]]
        assert not wrong, f"through {node}, first mismatches: {wrong[:5]}"


def test_pipeline_error_stays_in_its_place(shared_cluster, connect, protocol):
    p = f"pipeerr{protocol}:"
    pipe = connect("n3").pipeline(transaction=False)
    pipe.set(p + "s", "text").incr(p + "s").set(p + "n", "5").incr(p + "n").get(p + "s")
    got = pipe.execute(raise_on_error=False)
    assert got[0] is True and got[2] is True
    assert isinstance(got[1], redis.ResponseError) and "not an integer" in str(got[1])
    assert got[3] == 6 and got[4] == "text"


def test_read_your_writes_through_a_different_node(shared_cluster, connect, protocol):
    p = f"ryw{protocol}:"
    rng = random.Random(11 + protocol)
    clients = {i: connect(i) for i in shared_cluster.ids}
    for n in range(150):
        a, b = rng.sample(shared_cluster.ids, 2)
        key = f"{p}{n % 7}"
        value = f"{n}"
        assert clients[a].set(key, value) is True
        assert clients[b].get(key) == value, f"wrote {key}={value} via {a}, read via {b}"
        count = clients[a].incr(p + "counter")
        assert clients[b].get(p + "counter") == str(count)


def test_connection_commands(shared_cluster, connect, protocol):
    r = connect("n2")
    assert r.client_setname("integration-test") is True
    assert r.client_getname() == "integration-test"
    assert r.execute_command("SELECT", 0) in (True, "OK")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)
    assert r.ping() is True
    assert r.echo("hello world") == "hello world"
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("NO-SUCH-COMMAND", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    assert r.ping() is True  # errors do not break the connection
    other = connect("n2")
    assert other.client_setname("the-other-one") is True
    names = {c["name"] for c in r.client_list()}  # every connection to n2, as in Redis
    assert {"integration-test", "the-other-one"} <= names
    assert [c["name"] for c in r.client_list(client_id=[r.client_id()])] == ["integration-test"]


def test_info_and_role_match_the_raft_roles(shared_cluster, connect, protocol):
    leader = shared_cluster.leader()
    leader_port = shared_cluster.port(leader)
    followers = other_nodes(shared_cluster, leader)
    info = connect(leader).info()
    assert info["raft_role"] == "leader" and info["role"] == "master"
    assert info["process_id"] == shared_cluster.nodes[leader].pid
    assert info["tcp_port"] == leader_port
    for f in followers:
        finfo = connect(f).info("replication")
        assert finfo["raft_role"] == "follower" and finfo["role"] == "slave"
        assert finfo["leader_id"] == leader
        assert int(finfo["master_port"]) == leader_port
    # ROLE in Redis's format.
    role = connect(leader).role()
    assert role[0] == "master"
    assert isinstance(role[1], int)
    replicas = sorted((host, int(port)) for host, port, _offset in role[2])
    assert replicas == sorted(("127.0.0.1", shared_cluster.port(f)) for f in followers)
    for f in followers:
        frole = connect(f).role()
        assert frole[:4] == ["slave", "127.0.0.1", leader_port, "connected"], frole
        assert isinstance(frole[4], int)


def test_hashes(shared_cluster, connect, protocol):
    p = f"hash{protocol}:"
    w, r = connect("n1"), connect("n2")
    assert w.hset(p + "h", mapping={"b": "1", "a": "2"}) == 2
    assert w.hset(p + "h", "c", "3") == 1
    assert w.hset(p + "h", "a", "20") == 0
    assert r.hget(p + "h", "a") == "20"
    assert r.hget(p + "h", "missing") is None
    # A dict in both protocols (a flat array in RESP2, a map in RESP3), in insertion order.
    assert r.hgetall(p + "h") == {"b": "1", "a": "20", "c": "3"}
    assert list(r.hgetall(p + "h")) == ["b", "a", "c"]
    assert r.hgetall(p + "missing") == {}
    assert r.hkeys(p + "h") == ["b", "a", "c"] and r.hvals(p + "h") == ["1", "20", "3"]
    assert r.hlen(p + "h") == 3 and r.hstrlen(p + "h", "a") == 2
    assert r.hexists(p + "h", "b") == 1 and r.hexists(p + "h", "z") == 0  # bools or ints
    assert r.hmget(p + "h", ["a", "z", "b"]) == ["20", None, "1"]
    assert w.hsetnx(p + "h", "a", "x") == 0 and w.hsetnx(p + "h", "d", "4") == 1
    assert w.hincrby(p + "h", "n", 5) == 5 and w.hincrby(p + "h", "n", -7) == -2
    assert w.hincrbyfloat(p + "h", "f", 10.5) == 10.5
    assert w.hincrbyfloat(p + "h", "f", 0.1) == 10.6  # decimal arithmetic, as INCRBYFLOAT
    assert w.hdel(p + "h", "d", "nope") == 1
    assert r.type(p + "h") == "hash"
    assert w.hset(p + "h", "text", "x") == 1
    with pytest.raises(redis.exceptions.ResponseError, match="hash value is not an integer"):
        w.hincrby(p + "h", "text", 1)
    w.set(p + "s", "v")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        w.hset(p + "s", "f", "v")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        r.get(p + "h")
    # HRANDFIELD, with values as redis-py expects them per protocol.
    assert r.hrandfield(p + "h") in r.hkeys(p + "h")
    picks = r.hrandfield(p + "h", -5, withvalues=True)
    assert len(picks) == (10 if protocol == 2 else 5)
    if protocol == 3:
        assert all(isinstance(pair, list) and len(pair) == 2 for pair in picks)
        assert all(r.hget(p + "h", f) == v for f, v in picks)
    else:
        assert all(r.hget(p + "h", f) == v for f, v in zip(picks[0::2], picks[1::2]))
    # HSCAN, whole and in steps, with MATCH and NOVALUES.
    big = {f"field:{i}": f"value:{i}" for i in range(1500)}
    assert w.hset(p + "big", mapping=big) == 1500
    assert dict(r.hscan_iter(p + "big", count=50)) == big
    assert sorted(r.hscan_iter(p + "big", match="field:1??", no_values=True)) == sorted(
        f for f in big if len(f) == 9 and f.startswith("field:1"))
    cursor, page = r.hscan(p + "big", 0, count=10)
    assert cursor != 0 and 10 <= len(page) < 1500
    assert r.execute_command("OBJECT", "ENCODING", p + "big") == "hashtable"
    assert r.execute_command("OBJECT", "ENCODING", p + "h") == "listpack"
    assert w.delete(p + "big", p + "h") == 2
    assert r.exists(p + "big", p + "h") == 0


def test_a_pipeline_of_hash_commands_is_answered_in_order(shared_cluster, connect, protocol):
    p = f"hashpipe{protocol}:"
    pipe = connect("n3").pipeline(transaction=False)
    for i in range(200):
        pipe.hset(p + "h", f"f{i % 20}", i)
        pipe.hincrby(p + "counters", f"c{i % 5}", 1)
        pipe.hget(p + "h", f"f{i % 20}")
    replies = pipe.execute()
    assert replies[0::3] == [1] * 20 + [0] * 180
    assert replies[1::3] == [i // 5 + 1 for i in range(200)]
    assert replies[2::3] == [str(i) for i in range(200)]
    assert connect("n1").hgetall(p + "counters") == {f"c{i}": "40" for i in range(5)}


def test_lists(shared_cluster, connect, protocol):
    p = f"list{protocol}:"
    w, r = connect("n1"), connect("n2")
    assert w.rpush(p + "l", "a", "b", "c") == 3
    assert w.lpush(p + "l", "z") == 4
    assert r.lrange(p + "l", 0, -1) == ["z", "a", "b", "c"]
    assert r.llen(p + "l") == 4 and r.lindex(p + "l", -1) == "c"
    assert w.lpop(p + "l") == "z" and w.rpop(p + "l", 2) == ["c", "b"]
    assert w.lpop(p + "missing", 2) is None  # a null array
    assert w.linsert(p + "l", "AFTER", "a", "x") == 2
    assert w.lset(p + "l", 0, "first") is True
    assert r.lpos(p + "l", "x") == 1 and r.lpos(p + "l", "x", count=0) == [1]
    assert w.lmove(p + "l", p + "m", "LEFT", "RIGHT") == "first"
    assert w.rpoplpush(p + "l", p + "m") == "x"
    assert r.exists(p + "l") == 0 and r.lrange(p + "m", 0, -1) == ["x", "first"]
    assert w.lmpop(2, p + "l", p + "m", direction="RIGHT", count=5) == [p + "m", ["first", "x"]]
    assert w.lmpop(1, p + "m", direction="LEFT") is None
    assert w.rpush(p + "q", *range(10)) == 10
    assert w.ltrim(p + "q", 2, 4) is True and w.lrem(p + "q", 0, "3") == 1
    assert r.lrange(p + "q", 0, -1) == ["2", "4"] and r.type(p + "q") == "list"
    assert r.execute_command("OBJECT", "ENCODING", p + "q") == "listpack"
    with pytest.raises(redis.exceptions.ResponseError, match="no such key"):
        w.lset(p + "none", 0, "x")
    assert list(w.blpop([p + "none", p + "q"], 1)) == [p + "q", "2"]
    assert w.brpop([p + "none"], 0.05) is None  # its timeout passed
    w.set(p + "s", "v")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        w.rpush(p + "s", "x")
    pipe = connect("n3").pipeline(transaction=False)
    for i in range(100):
        pipe.rpush(p + "pipe", i)
        pipe.lpop(p + "pipe") if i % 2 else pipe.llen(p + "pipe")
    replies = pipe.execute()
    assert replies[1::2][:4] == [1, "0", 2, "1"]
    assert r.llen(p + "pipe") == 50


def test_sorted_sets(shared_cluster, connect, protocol):
    p = f"zset{protocol}:"
    w, r = connect("n1"), connect("n2")
    assert w.zadd(p + "z", {"a": 1, "b": 2.5, "c": -1}) == 3
    assert w.zadd(p + "z", {"a": 5, "d": 0}, nx=True) == 1
    assert w.zadd(p + "z", {"a": 3}, xx=True, ch=True) == 1
    assert w.zadd(p + "z", {"a": 1}, gt=True, ch=True) == 0
    assert w.zincrby(p + "z", 0.5, "b") == 3.0
    assert w.zadd(p + "z", {"b": 1}, incr=True) == 4.0
    assert r.zscore(p + "z", "b") == 4.0 and r.zscore(p + "z", "nope") is None
    assert r.zmscore(p + "z", ["a", "x", "c"]) == [3.0, None, -1.0]
    assert r.zcard(p + "z") == 4 and r.type(p + "z") == "zset"
    assert r.zrange(p + "z", 0, -1) == ["c", "d", "a", "b"]
    assert [tuple(x) for x in r.zrange(p + "z", 0, 1, withscores=True)] == [("c", -1.0),
                                                                            ("d", 0.0)]
    assert r.zrangebyscore(p + "z", "(0", "+inf") == ["a", "b"]
    assert r.zrevrangebyscore(p + "z", 3, "-inf", start=0, num=2) == ["a", "d"]
    assert r.zrange(p + "z", 4, 0, byscore=True, desc=True) == ["b", "a", "d"]
    assert r.zcount(p + "z", 0, 3) == 2 and r.zrank(p + "z", "a") == 2
    assert r.zrevrank(p + "z", "a") == 1
    assert r.zrank(p + "z", "a", withscore=True) == [2, 3.0]
    assert w.zadd(p + "lex", {m: 0 for m in "abcde"}) == 5
    assert r.zrangebylex(p + "lex", "[b", "(e") == ["b", "c", "d"]
    assert r.zlexcount(p + "lex", "-", "+") == 5
    assert w.zremrangebylex(p + "lex", "-", "[b") == 2
    # Without a count RESP3 answers one flat pair, as Redis does (redis-py leaves it so).
    popped = w.zpopmin(p + "z")
    assert popped == (["c", -1.0] if protocol == 3 else [("c", -1.0)])
    assert [tuple(x) for x in w.zpopmax(p + "z", 2)] == [("b", 4.0), ("a", 3.0)]
    assert w.zpopmin(p + "missing") == []
    assert w.zadd(p + "y", {"a": 1, "b": 2}) == 2
    assert w.zunionstore(p + "u", [p + "y", p + "lex"]) == 5
    assert w.zinterstore(p + "i", {p + "y": 2, p + "u": 1}) == 2
    assert r.zrange(p + "i", 0, -1, withscores=True)[-1][1] == 6.0  # b: 2*2 + 2
    assert r.zunion([p + "y", p + "d"], withscores=True)[0][0] == "a"
    assert r.zintercard(2, [p + "y", p + "u"]) == 2
    assert w.zrangestore(p + "s", p + "u", 0, 1) == 2
    assert w.zremrangebyrank(p + "u", 0, 0) == 1 and w.zremrangebyscore(p + "u", 1, 2) == 2
    assert w.zrem(p + "u", "d", "nope") == 1 and r.zrange(p + "u", 0, -1) == ["e"]
    picks = r.zrandmember(p + "y", -5)
    assert len(picks) == 5 and set(picks) <= {"a", "b"}
    assert dict(r.zscan_iter(p + "y")) == {"a": 1.0, "b": 2.0}
    assert r.execute_command("OBJECT", "ENCODING", p + "y") == "listpack"
    assert w.zmpop(2, [p + "none", p + "y"], min=True, count=5)[0] == p + "y"
    assert r.exists(p + "y") == 0
    assert list(w.bzpopmin(p + "z", 1)) == [p + "z", "d", 0.0]
    w.set(p + "s", "v")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        w.zadd(p + "s", {"x": 1})
    with pytest.raises(redis.exceptions.ResponseError, match="not a valid float"):
        w.execute_command("ZADD", p + "z", "nan", "m")
    pipe = connect("n3").pipeline(transaction=False)
    for i in range(100):
        pipe.zadd(p + "pipe", {f"m{i}": i})
        pipe.zincrby(p + "pipe", 1, "m0") if i % 2 else pipe.zcard(p + "pipe")
    replies = pipe.execute()
    assert replies[1::2][:4] == [1, 1.0, 3, 2.0]
    assert r.zscore(p + "pipe", "m0") == 50.0 and r.zcard(p + "pipe") == 100
